#!/bin/sh
# Prints the configuration it got from its environment, each value exactly as received, then keeps running.
printf 'KILN-COMPAT-OK env-config: DATABASE_URL=[%s] APP_OPTS=[%s] PS_HINT=[%s] MOTD=[%s] APP_CONFIG=[%s]\n' \
  "$DATABASE_URL" "$APP_OPTS" "$PS_HINT" "$MOTD" "$APP_CONFIG"
exec sleep infinity
