#!/bin/sh
# Writes into the shared, group-owned directory (only members of media may), then reports who it is.
set -eu
echo "uploaded by $(id -un)" > /srv/media/upload.txt
echo "KILN-COMPAT-OK user-groups: $(id) HOME=$HOME wrote /srv/media/upload.txt as $(stat -c %U:%G /srv/media/upload.txt)"
exec sleep infinity
