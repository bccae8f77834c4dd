#!/bin/sh
# A periodic job: counts its runs in its StateDirectory and reports the root filesystem's use.
set -eu
state="$STATE_DIRECTORY/runs"
runs=$(( $(cat "$state" 2>/dev/null || echo 0) + 1 ))
echo "$runs" > "$state"
echo "KILN-COMPAT-OK systemd-timer-appliance: disk-report run $runs as user $(id -un), state in $STATE_DIRECTORY (root $(df --output=pcent / | tail -n 1 | tr -d ' ') used)"
