#!/bin/bash
# test/sql-regress.sh - runs the pg_regress tests against a throw-away
# cluster (no helper needed: they test the SQL surface).
#
# With AMIS_PG_CHROOT and AMIS_PG_MAJOR (see test/pgversions/run.sh) the
# cluster and pg_regress are those of PostgreSQL AMIS_PG_MAJOR in that
# chroot, where ami_snapshot must already be installed; the source tree must
# then be under /var/tmp (it is shown to the chroot at the same path).
set -eu
cd "$(dirname "$0")/.."
TOP=$(pwd)
dir=$(mktemp -d /var/tmp/amis-regress.XXXXXX)
chmod 755 "$dir"
chown postgres: "$dir"
if [ -n "${AMIS_PG_CHROOT:-}" ]; then
	[ -n "${AMIS_PG_MAJOR:-}" ] || {
		echo "AMIS_PG_CHROOT needs AMIS_PG_MAJOR" >&2
		exit 1
	}
	PGBIN=/usr/lib/postgresql/$AMIS_PG_MAJOR/bin
	inside() { "$TOP/test/pgversions/in-chroot.sh" "$AMIS_PG_CHROOT" "$dir:$TOP" "$@"; }
	makeflags=(PG_CONFIG="$PGBIN/pg_config" WITH_HELPER=0)
else
	PGBIN=$(pg_config --bindir)
	inside() { "$@"; }
	makeflags=()
fi
port=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cleanup() {
	inside runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
	rm -rf "$dir"
}
trap cleanup EXIT
inside runuser -u postgres -- "$PGBIN/initdb" -D "$dir/data" -A trust -U postgres --no-sync >/dev/null
cat >>"$dir/data/postgresql.conf" <<CONF
port = $port
listen_addresses = ''
unix_socket_directories = '$dir'
CONF
inside runuser -u postgres -- "$PGBIN/pg_ctl" -D "$dir/data" -w -l "$dir/log" start >/dev/null
inside "$PGBIN/postgres" --version
rm -rf test/results
mkdir -p test/results
chown postgres: test/results
inside make -C "$TOP" "${makeflags[@]}" installcheck PGHOST="$dir" PGPORT="$port" PGUSER=postgres
