#!/bin/bash
# test/sql-regress.sh - runs the pg_regress tests against a throw-away
# cluster (no helper needed: they test the SQL surface).
set -eu
cd "$(dirname "$0")/.."
PGBIN=$(pg_config --bindir)
dir=$(mktemp -d /var/tmp/amis-regress.XXXXXX)
chmod 755 "$dir"
chown postgres: "$dir"
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
	runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
runuser -u postgres -- "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
CONF
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/data" -w -l "$dir/log" start >/dev/null
rm -rf test/results
mkdir -p test/results
chown postgres: test/results
make installcheck PGHOST="$dir" PGPORT="$port" PGUSER=postgres
