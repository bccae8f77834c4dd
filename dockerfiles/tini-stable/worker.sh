#!/bin/sh
# Runs N jobs in the background, waits for them, reports, then keeps running (tini reaps what it leaves behind).
set -eu
n=$1
i=0
while [ "$i" -lt "$n" ]; do
  i=$((i + 1))
  ( echo "job $i" > "job-$i.done" ) &
done
wait
echo "KILN-COMPAT-OK tini-stable: worker started by $(cat /proc/$PPID/comm), $(ls job-*.done | wc -l) jobs done"
exec sleep infinity
