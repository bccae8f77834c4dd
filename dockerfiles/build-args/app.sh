#!/bin/sh
# Reports the version it was built as (ENV), its channel, and the revision baked into a file; then keeps running.
set -eu
revision=$(sed -n 's/^revision=//p' /etc/app/build-info)
echo "KILN-COMPAT-OK build-args: version $APP_VERSION, channel $APP_CHANNEL, revision $revision"
exec sleep infinity
