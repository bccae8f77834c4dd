#!/bin/sh
set -e
# `docker run image --flag` means flags for the server.
if [ "${1#-}" != "$1" ]; then
  set -- redis-server "$@"
fi
if [ "$1" = redis-server ]; then
  # Start-up check: the server that answers must be the one exec'd below (it keeps this shell's pid, $$).
  (
    for _ in $(seq 1 60); do
      if [ "$(redis-cli ping 2>/dev/null)" = PONG ]; then
        pid=$(redis-cli info server | tr -d '\r' | sed -n 's/^process_id://p')
        if [ "$pid" != "$$" ]; then
          echo "redis-entrypoint: another redis (pid $pid) answers on 6379, not this container's (pid $$)" >&2
          exit 1
        fi
        redis-cli set kiln:compat ok >/dev/null
        echo "KILN-COMPAT-OK redis-entrypoint: PING PONG from the exec'd server, GET kiln:compat = $(redis-cli get kiln:compat)"
        exit 0
      fi
      sleep 1
    done
    echo "redis-entrypoint: redis did not answer within 60 s" >&2
  ) &
fi
exec "$@"
