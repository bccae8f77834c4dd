#!/bin/sh
# Start-up check in the background, then the server in the foreground, exec'd so that signals reach nginx.
set -e
(
  for _ in $(seq 1 60); do
    # The page must come from the nginx exec'd below: it keeps this shell's pid ($$) and writes it to its pid file.
    if page=$(curl -fsS http://127.0.0.1:8080/ 2>/dev/null) && [ "$(cat /run/nginx.pid 2>/dev/null)" = "$$" ]; then
      echo "KILN-COMPAT-OK nginx-static: served $(echo "$page" | grep -o '<title>[^<]*</title>') by the exec'd nginx"
      exit 0
    fi
    sleep 1
  done
  echo "nginx-static: the exec'd nginx served nothing on :8080 within 60 s (pid file: $(cat /run/nginx.pid 2>/dev/null))" >&2
) &
exec "$@"
