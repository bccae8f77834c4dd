#!/usr/bin/env bash
# Starts a Docker engine if none answers. Flags follow PLATFORM.md: no bridge, no iptables (builds use host or
# none networking). The daemon denies the network.host build entitlement; Kiln picks the build network itself.
set -euo pipefail
if docker info >/dev/null 2>&1; then exit 0; fi
log=${KILN_DOCKERD_LOG:-/var/log/kiln-dockerd.log}
echo "ensure-dockerd: starting dockerd (log: $log)"
setsid dockerd --storage-driver=overlay2 --iptables=false --bridge=none >"$log" 2>&1 < /dev/null &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then exit 0; fi
  sleep 1
done
echo "ensure-dockerd: dockerd did not answer within 60 s; see $log" >&2
exit 1
