#!/bin/sh
# Reads its settings relative to the app directory, reports, then idles like a scheduler would.
set -eu
. ./config/app.env
echo "KILN-COMPAT-OK workdir-relative: ./run.sh in $(pwd), config/app.env says mode=$APP_MODE"
exec sleep infinity
