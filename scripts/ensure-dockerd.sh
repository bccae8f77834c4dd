#!/usr/bin/env bash
# Starts a Docker engine if none answers, then puts the engine guard around it (every run; idempotent).
#
# Engine flags follow PLATFORM.md: no bridge, no iptables; Kiln picks each build's network itself (src/sdk/egress.ts).
#
# The guard (src/sdk/README.md, "The engine guard"): a build's RUN steps are filtered on Kiln's build network, but
# the engine's own fetches (a remote `ADD <url>`, pulling a missing `FROM`/`COPY --from` image, a git context) leave
# from dockerd itself, on this host's network. So dockerd and its children (the managed containerd) run in a cgroup
# v2 group of their own, and iptables refuses every packet a socket of that group sends, loopback and LAN included,
# except DNS to the host's resolvers: with a loopback resolver the engine's embedded DNS forwards the containers'
# queries from its own process (with any other it does so inside the container's network namespace). Containers
# are not in the group (runc gives each its own cgroup), so RUN steps keep their network. The SDK checks the guard
# before every build (sdk.engineGuard=verify) and refuses to build without it.
#
# Settings (environment): KILN_DOCKERD_LOG; KILN_DOCKERD_PIDFILE (the engine's pidfile, default dockerd's own);
# KILN_ENGINE_CGROUP, the group's path under the cgroup2 root (default kiln-engine; on a host where systemd runs
# dockerd, system.slice/docker.service guards the unit in place). DOCKER_HOST selects the engine as for `docker`.
set -euo pipefail
log=${KILN_DOCKERD_LOG:-/var/log/kiln-dockerd.log}
pidfile=${KILN_DOCKERD_PIDFILE:-/var/run/docker.pid}
group=${KILN_ENGINE_CGROUP:-kiln-engine}
group=${group#/}
chain=KILN-ENGINE

here=$(cd "$(dirname "$0")" && pwd)

die() { echo "ensure-dockerd: $*" >&2; exit 1; }

# The cgroup2 hierarchy: the whole tree on a pure v2 host, /sys/fs/cgroup/unified on a hybrid one.
if [ -e /sys/fs/cgroup/cgroup.controllers ]; then cg2=/sys/fs/cgroup
elif [ -e /sys/fs/cgroup/unified/cgroup.controllers ]; then cg2=/sys/fs/cgroup/unified
else die "no cgroup2 hierarchy is mounted (/sys/fs/cgroup or /sys/fs/cgroup/unified): the engine guard needs one"
fi
mkdir -p "$cg2/$group"

if ! docker info >/dev/null 2>&1; then
  echo "ensure-dockerd: starting dockerd in cgroup /$group (log: $log)"
  # The subshell joins the group first, so dockerd and everything it starts are in it from their first socket.
  # with-clean-signals: containers inherit the signal mask dockerd starts with (see that script).
  ( echo "$BASHPID" > "$cg2/$group/cgroup.procs"
    exec setsid "$here/with-clean-signals" dockerd --storage-driver=overlay2 --iptables=false --bridge=none --pidfile "$pidfile" >"$log" 2>&1 < /dev/null ) &
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then break; fi
    sleep 1
  done
  docker info >/dev/null 2>&1 || die "dockerd did not answer within 60 s; see $log"
fi

# An engine that was already running (or restarted by someone else) joins the group now: sockets are tagged when
# they are made, so every fetch from here on is filtered. Only that engine and its direct children (its containerd).
pid=$(cat "$pidfile" 2>/dev/null) || die "no pidfile $pidfile for the running engine (set KILN_DOCKERD_PIDFILE)"
[[ "$pid" =~ ^[0-9]+$ ]] && [ -d "/proc/$pid" ] || die "the pidfile $pidfile names no running process"
# An engine someone else started from a shell that ignores a signal hands that on to every container (see
# with-clean-signals); say so, since only a restart mends it.
ignored=$(sed -n 's/^SigIgn:[[:space:]]*//p' "/proc/$pid/status")
[ "$ignored" = 0000000000000000 ] ||
  echo "ensure-dockerd: warning: the running engine ignores signals (SigIgn $ignored) and its containers will too; stop it and run this script again" >&2
for p in "$pid" $(pgrep -P "$pid" || true); do
  current=$(sed -n 's/^0:://p' "/proc/$p/cgroup")
  case "$current/" in "/$group/"*) ;; *) echo "$p" > "$cg2/$group/cgroup.procs" ;; esac
done

# Resolvers the embedded DNS forwards to (as src/sdk/egress.ts reads them), IPv4 only.
resolvers=$({ cat /etc/resolv.conf /run/systemd/resolve/resolv.conf 2>/dev/null || true; } |
  sed -n 's/^[[:space:]]*nameserver[[:space:]]\{1,\}\([0-9]\{1,3\}\(\.[0-9]\{1,3\}\)\{3\}\)[[:space:]]*$/\1/p' | sort -u)
v4="*filter
:$chain - [0:0]
"
for r in $resolvers; do
  v4+="-A $chain -d $r/32 -p udp -m udp --dport 53 -j ACCEPT
-A $chain -d $r/32 -p tcp -m tcp --dport 53 -j ACCEPT
"
done
# A TCP reset fails the engine's connect at once; an ICMP error may be rate-limited, and TCP would retry after 1 s.
v4+="-A $chain -p tcp -j REJECT --reject-with tcp-reset
-A $chain -j REJECT --reject-with icmp-admin-prohibited
COMMIT
"
v6="*filter
:$chain - [0:0]
-A $chain -p tcp -j REJECT --reject-with tcp-reset
-A $chain -j REJECT --reject-with icmp6-adm-prohibited
COMMIT
"
# Declaring the chain replaces its rules whole (atomic); the jump is added once, first in OUTPUT.
iptables-restore --noflush <<<"$v4" || die "iptables-restore failed (root and iptables with the cgroup match are needed)"
ip6tables-restore --noflush <<<"$v6" || die "ip6tables-restore failed"
for cmd in iptables ip6tables; do
  if ! "$cmd" -w 10 -C OUTPUT -m cgroup --path "$group" -j "$chain" 2>/dev/null; then
    "$cmd" -w 10 -I OUTPUT 1 -m cgroup --path "$group" -j "$chain" || die "$cmd could not add the engine guard's jump"
  fi
done
echo "ensure-dockerd: engine guard in place (cgroup /$group, chain $chain; DNS allowed to: ${resolvers//$'\n'/ })"
