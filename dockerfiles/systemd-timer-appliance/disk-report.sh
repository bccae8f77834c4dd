#!/bin/sh
# A periodic job: counts its runs in its StateDirectory and reports the root filesystem's use.
set -eu
state="$STATE_DIRECTORY/runs"
runs=$(( $(cat "$state" 2>/dev/null || echo 0) + 1 ))
echo "$runs" > "$state"
# DynamicUser= picks a uid in systemd's dynamic range (61184-65519) when the service starts.
uid=$(id -u)
who="uid $uid"
if [ "$uid" -ge 61184 ] && [ "$uid" -le 65519 ]; then who="a dynamic user"; fi
echo "KILN-COMPAT-OK systemd-timer-appliance: disk-report run $runs as $who, state in $STATE_DIRECTORY (root $(df --output=pcent / | tail -n 1 | tr -d ' ') used)"
