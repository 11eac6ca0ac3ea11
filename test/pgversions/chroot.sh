#!/bin/bash
# test/pgversions/chroot.sh MAJOR - makes (or reuses) a Debian chroot with
# PostgreSQL MAJOR from Debian's own packages, for building and testing
# ami_snapshot against it; prints the chroot's path on stdout.
#
#   15  Debian 12 "bookworm" (the host's own; for test/packages/run.sh)
#   17  Debian 13 "trixie"
#   18  Debian "forky" (testing)
#
# AMIS_CHROOT_FLAVOUR=runtime makes one with PostgreSQL's server and client
# only (no compiler, no headers), cached as <suite>-pg<MAJOR>-runtime: a
# clean system to install the Debian packages on (test/packages/run.sh).
#
# The chroot is cached in $AMIS_CHROOT_CACHE (default
# /var/cache/ami-snapshot/chroots) as <suite>-pg<MAJOR>/, with a stamp file
# <suite>-pg<MAJOR>.stamp recording the suite, mirror and package list it was
# made with.  It is remade when it is missing or when the stamp differs.
# Idempotent; concurrent calls wait for each other (flock).  Needs root and
# mmdebstrap (installed with apt-get when missing).
#
# The postgres user and group get the host's uid and gid before PostgreSQL
# is installed, so that files the tests make on the host and in the chroot
# belong to the same user.  No cluster is created and no service started
# in the chroot (policy-rc.d, createcluster.d).
#
#   AMIS_MIRROR   Debian archive (default http://deb.debian.org/debian)
#   AMIS_SECURITY_MIRROR  its security archive, for bookworm (default
#                 http://deb.debian.org/debian-security)
#   AMIS_SUITE    override the suite for MAJOR
set -eu

major=${1:-}
case "$major" in
15) suite=bookworm ;;
17) suite=trixie ;;
18) suite=forky ;;
*)
	echo "usage: $0 15|17|18" >&2
	exit 2
	;;
esac
suite=${AMIS_SUITE:-$suite}
mirror=${AMIS_MIRROR:-http://deb.debian.org/debian}
# A stable release comes with its updates and security suites, as on an
# installed system (Debian's extension packages built on such a system
# depend on its PostgreSQL minor version).
sources=("$mirror")
if [ "$suite" = bookworm ]; then
	security=${AMIS_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
	sources+=("deb $mirror $suite-updates main" "deb $security $suite-security main")
fi
cache=${AMIS_CHROOT_CACHE:-/var/cache/ami-snapshot/chroots}
flavour=${AMIS_CHROOT_FLAVOUR:-build}
case "$flavour" in
build) name=$suite-pg$major ;;
runtime) name=$suite-pg$major-runtime ;;
*)
	echo "AMIS_CHROOT_FLAVOUR is build or runtime, not $flavour" >&2
	exit 2
	;;
esac
root=$cache/$name
stamp=$cache/$name.stamp

if [ "$(id -u)" != 0 ]; then
	echo "FAIL: making a chroot needs root" >&2
	exit 1
fi
if ! getent passwd postgres >/dev/null; then
	echo "FAIL: the host has no postgres user (install postgresql-15 first)" >&2
	exit 1
fi
pg_uid=$(id -u postgres)
pg_gid=$(id -g postgres)

# What the build and the tests need inside: PostgreSQL and its server
# headers (PGXS; they pull in clang and llvm for the JIT bitcode), a C
# compiler and make; pg_cron for test_pg_cron.py.  The helper is built on
# the host only.
packages=(
	"postgresql-$major" "postgresql-client-$major" "postgresql-server-dev-$major"
	"postgresql-$major-cron" gcc make libc6-dev
)
[ "$flavour" = build ] || packages=("postgresql-$major" "postgresql-client-$major")

# Everything that decides the chroot's contents; a change remakes it.
# Bump format when the way it is made (the hook below) changes.
want="format=1
suite=$suite
mirror=${sources[*]}
postgres=$pg_uid:$pg_gid
packages=${packages[*]}"

# Removes a chroot tree, unless something is mounted in it (a run that
# died inside mmdebstrap): then it says so and fails.
remove_tree() {
	local m
	m=$(findmnt -rn -o TARGET | grep -F "$1/" || true)
	if [ -n "$m" ]; then
		echo "FAIL: not removing $1: mounted in it: $m" >&2
		exit 1
	fi
	rm -rf --one-file-system "$1"
}

mkdir -p "$cache"
exec 9>"$cache/$name.lock"
flock 9

if [ -f "$stamp" ] && [ -x "$root/usr/lib/postgresql/$major/bin/postgres" ] &&
	[ "$(sed -n '/^installed=/q;p' "$stamp")" = "$want" ]; then
	echo "$root"
	exit 0
fi

if ! command -v mmdebstrap >/dev/null; then
	echo "installing mmdebstrap" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
		mmdebstrap >/dev/null || {
		echo "FAIL: could not install mmdebstrap" >&2
		exit 1
	}
fi

echo "making the $suite chroot for PostgreSQL $major in $root (a few minutes)" >&2
rm -f "$stamp"
remove_tree "$root.new"

# Runs after the Essential packages are in, before the rest: the postgres
# user with the host's ids, no cluster, no services.
setup_hook="set -e
grep -q '^postgres:' \"\$1/etc/group\" || echo 'postgres:x:$pg_gid:' >>\"\$1/etc/group\"
grep -q '^postgres:' \"\$1/etc/passwd\" ||
	echo 'postgres:x:$pg_uid:$pg_gid:PostgreSQL administrator:/var/lib/postgresql:/bin/bash' >>\"\$1/etc/passwd\"
grep -q '^postgres:' \"\$1/etc/shadow\" || echo 'postgres:*:19000:0:99999:7:::' >>\"\$1/etc/shadow\"
mkdir -p \"\$1/etc/postgresql-common/createcluster.d\"
echo 'create_main_cluster = false' >\"\$1/etc/postgresql-common/createcluster.d/ami-snapshot.conf\"
printf '#!/bin/sh\nexit 101\n' >\"\$1/usr/sbin/policy-rc.d\"
chmod 755 \"\$1/usr/sbin/policy-rc.d\""

log=$(mktemp /var/tmp/amis-chroot-log.XXXXXX)
# The testing suite's Release file can be past its Valid-Until when the
# archive is a frozen copy: do not let that stop a test chroot.
if ! mmdebstrap --mode=root --variant=apt --format=directory \
	--aptopt='Acquire::Check-Valid-Until "false"' \
	--aptopt='APT::Install-Recommends "false"' \
	--essential-hook="$setup_hook" \
	--include="$(
		IFS=,
		echo "${packages[*]}"
	)" \
	"$suite" "$root.new" "${sources[@]}" >"$log" 2>&1; then
	tail -40 "$log" >&2
	echo "FAIL: mmdebstrap $suite with ${packages[*]} from ${sources[*]} (log: $log)" >&2
	remove_tree "$root.new"
	exit 1
fi
rm -f "$log"

# The ids must have survived the installation.
got=$(chroot "$root.new" id -u postgres):$(chroot "$root.new" id -g postgres)
if [ "$got" != "$pg_uid:$pg_gid" ]; then
	echo "FAIL: postgres is $got in the chroot, $pg_uid:$pg_gid on the host" >&2
	remove_tree "$root.new"
	exit 1
fi
if [ ! -x "$root.new/usr/lib/postgresql/$major/bin/postgres" ]; then
	echo "FAIL: no postgres for PostgreSQL $major in the $suite chroot" >&2
	remove_tree "$root.new"
	exit 1
fi

remove_tree "$root"
mv "$root.new" "$root"
# shellcheck disable=SC2016 # dpkg-query's own ${Version}
{
	echo "$want"
	echo "installed=$(chroot "$root" dpkg-query -W -f='${Version}' "postgresql-$major")"
	echo "made=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
} >"$stamp"
echo "$root"
