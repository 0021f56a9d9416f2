#!/usr/bin/env bash
# Starts a throwaway PostgreSQL cluster from Debian's packages on 127.0.0.1 and prints its DATABASE_URL.
# Usage: .ci/start-postgres.sh [port] [dir]   (defaults: 55432, /tmp/countersign-pg)
set -euo pipefail
port="${1:-55432}"
dir="${2:-/tmp/countersign-pg}"
bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$bindir" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq postgresql >&2
  bindir="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)"
fi
run_as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
if [ -f "$dir/data/postmaster.pid" ] && run_as_postgres "$bindir/pg_ctl" -D "$dir/data" status >/dev/null 2>&1; then
  echo "postgres://countersign@127.0.0.1:${port}/countersign"
  exit 0
fi
rm -rf "$dir"
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
run_as_postgres "$bindir/initdb" -D "$dir/data" -U countersign --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1
run_as_postgres "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
  -o "-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" start >&2
run_as_postgres "$bindir/createdb" -h 127.0.0.1 -p "$port" -U countersign countersign
echo "postgres://countersign@127.0.0.1:${port}/countersign"
