#!/usr/bin/env bash
# Starts the local PostgreSQL cluster for the store tests and makes a superuser role for them.
set -euo pipefail
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
pg_ctlcluster "$ver" main status >/dev/null 2>&1 || pg_ctlcluster "$ver" main start
for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 && break; sleep 1; done
su postgres -c "psql -qtAc \"SELECT 1 FROM pg_roles WHERE rolname='kiln'\"" | grep -q 1 ||
  su postgres -c "psql -qc \"CREATE ROLE kiln LOGIN SUPERUSER PASSWORD 'kiln'\""
