#!/bin/bash
# test/packages/run.sh - the Debian packages (debian/), built and installed
# on a clean Debian 12 (TAP).
#
#   1. dpkg-buildpackage -us -uc -b on a copy of this tree (its tracked and
#      untracked, not ignored files) in a scratch directory; the tree itself
#      is left as it was;
#   2. lintian on the .changes: no error or warning that debian/ does not
#      override;
#   3. a copy of a bookworm chroot with PostgreSQL 15 and nothing else
#      (test/pgversions/chroot.sh, AMIS_CHROOT_FLAVOUR=runtime; cached);
#      in it, apt install of ami-snapshot-helper and postgresql-15-ami-snapshot
#      (their dependencies from Debian's archive);
#   4. the files where the unit and doc/install.md say, the system user, the
#      conffile, the unit neither enabled nor started, --help and
#      --check-config of the packaged configuration, CREATE EXTENSION in a
#      throw-away cluster (initdb and pg_ctl as postgres: no service manager);
#      the main end-to-end test (test/e2e/test_snapshot.py: a snapshot under
#      load, restored and checked) with the packaged helper and extension
#      (AMIS_PACKAGES_E2E=0 leaves it out); an edited configuration kept
#      when the package is installed again;
#   5. apt-get purge of both: none of their files left, /etc/ami-snapshot
#      gone, the system user kept (Debian's practice).
#
# Needs root, loop devices (the end-to-end test), dpkg-dev, debhelper, postgresql-server-dev-all, lintian (the
# build dependencies: scripts/install-deps.sh does not install them) and
# mmdebstrap; fails, does not skip, when one is missing or the archive cannot
# be reached.  Everything happens under one scratch directory in /var/tmp,
# removed on exit (AMIS_KEEP=1 keeps it); commands in the chroot run through
# test/pgversions/in-chroot.sh, whose mounts live in a mount namespace of
# their own: nothing is mounted on the host.
set -u
cd "$(dirname "$0")/../.." || exit 1
TOP=$(pwd)

MAJOR=15
HELPER=ami-snapshot-helper
EXT=postgresql-$MAJOR-ami-snapshot
CONF=/etc/ami-snapshot/helper.conf
UNIT=/lib/systemd/system/ami-snapshot-helper.service
DOCDIR=/usr/share/doc/$HELPER

n=0
failed=0
S=""
ok() { # ok STATUS DESCRIPTION
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		failed=$((failed + 1))
		echo "not ok $n - $2"
	fi
}
diag() { sed 's/^/# /'; }
bail() {
	ok 1 "$1"
	[ -n "${2:-}" ] && [ -f "$2" ] && tail -40 "$2" | diag
	echo "Bail out! $1"
	exit 1
}
cleanup() {
	[ -n "$S" ] || return 0
	if [ "${AMIS_KEEP:-0}" = 1 ]; then
		echo "# kept $S"
		return 0
	fi
	# in-chroot.sh mounts nothing on the host; refuse to remove anything
	# that is mounted all the same.
	if findmnt -rn -o TARGET | grep -qF "$S/"; then
		echo "# not removing $S: something is mounted in it" >&2
		return 0
	fi
	rm -rf --one-file-system "$S"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# ---- prerequisites: fail, do not skip ----
[ "$(id -u)" = 0 ] || bail "test/packages/run.sh must run as root"
for tool in dpkg-buildpackage dh pg_buildext lintian mmdebstrap unshare git; do
	command -v "$tool" >/dev/null || bail "$tool not found (apt-get install dpkg-dev debhelper postgresql-server-dev-all lintian mmdebstrap)"
done
S=$(mktemp -d /var/tmp/amis-packages.XXXXXX) || bail "mktemp failed"
chmod 755 "$S"
t0=$(date +%s)

# ---- 1. build from a copy ----
before=$(git status --porcelain --ignored 2>&1)
mkdir "$S/src" "$S/debs"
# The packages' version (debian/changelog) and the extension's (its control file).
DEBVER=$(dpkg-parsechangelog -l "$TOP/debian/changelog" -S Version)
EXTVER=$(sed -n "s/^default_version = '\(.*\)'$/\1/p" "$TOP/ami_snapshot.control")
git ls-files -z --cached --others --exclude-standard |
	xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' |
	tar --null -T - -cf - | tar -xf - -C "$S/src" || bail "could not copy the tree to $S/src"
(cd "$S/src" && dpkg-buildpackage -us -uc -b) >"$S/build.log" 2>&1
rc=$?
ok $rc "dpkg-buildpackage -us -uc -b builds (WERROR=1; log tail on failure)"
[ $rc -eq 0 ] || bail "the packages do not build" "$S/build.log"
mv "$S"/*.deb "$S"/*.changes "$S"/*.buildinfo "$S/debs/"
find "$S/debs" -type f -printf "%f\n" | sort | diag
[ -f "$S/debs/${HELPER}_${DEBVER}_amd64.deb" ] && [ -f "$S/debs/${EXT}_${DEBVER}_amd64.deb" ]
ok $? "$HELPER and $EXT were built"
[ "$(git status --porcelain --ignored 2>&1)" = "$before" ]
ok $? "the source tree is as it was"
echo "# build: $(($(date +%s) - t0)) s"

# ---- 2. lintian ----
lintian --fail-on error,warning "$S"/debs/*.changes >"$S/lintian.log" 2>&1
rc=$?
grep -v '^running with root privileges' "$S/lintian.log" | diag
ok $rc "lintian: no error or warning left (overrides in debian/*.lintian-overrides*)"

# ---- 3. a clean bookworm with PostgreSQL 15; install ----
cached=$(AMIS_CHROOT_FLAVOUR=runtime test/pgversions/chroot.sh "$MAJOR" 2>"$S/chroot.log")
rc=$?
ok $rc "a bookworm chroot with PostgreSQL $MAJOR only (cached: ${cached:-none})"
[ $rc -eq 0 ] || bail "no chroot: mmdebstrap or the archive is unavailable" "$S/chroot.log"
R=$S/root
cp -a "$cached" "$R" || bail "could not copy $cached"
inside() { "$TOP/test/pgversions/in-chroot.sh" "$R" "$S/debs" "$@"; }
# The chroot has no service manager; policy-rc.d (chroot.sh) refuses
# invoke-rc.d in any case.
inside /bin/sh -c "apt-get update -qq && cd '$S/debs' &&
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
		./${HELPER}_${DEBVER}_amd64.deb ./${EXT}_${DEBVER}_amd64.deb" >"$S/install.log" 2>&1
rc=$?
ok $rc "apt install ./${HELPER}_*.deb ./${EXT}_*.deb in the chroot"
[ $rc -eq 0 ] || bail "the packages do not install" "$S/install.log"
echo "# built and installed: $(($(date +%s) - t0)) s"

# ---- 4. what is installed ----
for p in $HELPER $EXT; do
	chroot "$R" dpkg-query -L "$p" >"$S/$p.files" 2>&1 || bail "dpkg-query -L $p"
done
[ -x "$R/usr/sbin/ami-snapshot-helper" ] && grep -qx /usr/sbin/ami-snapshot-helper "$S/$HELPER.files"
ok $? "$HELPER: /usr/sbin/ami-snapshot-helper"
[ -x "$R/usr/sbin/ami-snapshot" ] && grep -qx /usr/sbin/ami-snapshot "$S/$HELPER.files" &&
	grep -qx /usr/share/man/man8/ami-snapshot.8.gz "$S/$HELPER.files"
ok $? "$HELPER: the restore command /usr/sbin/ami-snapshot and its manual page"
[ -f "$R$UNIT" ] && grep -qx "$UNIT" "$S/$HELPER.files"
ok $? "$HELPER: the unit at $UNIT"
grep -q "^ExecStart=/usr/sbin/ami-snapshot-helper -c $CONF\$" "$R$UNIT"
ok $? "the unit runs /usr/sbin/ami-snapshot-helper -c $CONF"
[ -f "$R$CONF" ] && [ "$(stat -c %a:%U "$R$CONF")" = 640:root ]
ok $? "$CONF is installed, 0640 root"
[ "$(head -1 "$R$CONF")" = "# $CONF - configuration of ami-snapshot-helper." ]
ok $? "it is the example configuration"
# shellcheck disable=SC2016 # dpkg-query's own ${Conffiles}
chroot "$R" dpkg-query -W -f='${Conffiles}\n' $HELPER >"$S/conffiles" 2>&1
diag <"$S/conffiles"
[ "$(awk 'NF {print $1}' "$S/conffiles")" = "$CONF" ]
ok $? "$CONF is the package's one conffile"
docs_ok=0
docs=$(sed -n 's/^Documentation=//p' "$R$UNIT")
for uri in $docs; do
	case "$uri" in
	man:*)
		# man:NAME(SECTION): the page, compressed as Debian installs it.
		p=${uri#man:}
		sec=${p##*(}
		sec=${sec%)}
		p=/usr/share/man/man$sec/${p%(*}.$sec.gz
		[ -f "$R$p" ] || docs_ok=1
		;;
	file://"$DOCDIR"/*)
		p=${uri#file://}
		[ -f "$R$p" ] || docs_ok=1
		;;
	*) p=$uri docs_ok=1 ;;
	esac
	echo "Documentation= $uri: $p" | diag
done
[ -n "$docs" ] && [ $docs_ok -eq 0 ]
ok $? "every Documentation= of the unit is installed: files in $DOCDIR, manual pages"
docs_ok=0
for f in "$TOP"/doc/*.md "$TOP"/doc/*.png "$TOP"/README.md; do
	g=${f#"$TOP"/}
	cmp -s "$f" "$R$DOCDIR/$g" || { echo "missing $DOCDIR/$g" | diag; docs_ok=1; }
done
ok $docs_ok "README.md and doc/ are in $DOCDIR, uncompressed"
[ -f "$R$DOCDIR/examples/helper.conf.example" ] && [ ! -e "$R/etc/ami-snapshot/helper.conf.example" ]
ok $? "the example is in $DOCDIR/examples/, not a second conffile"
ext_ok=0
for f in /usr/lib/postgresql/$MAJOR/lib/ami_snapshot.so \
	/usr/share/postgresql/$MAJOR/extension/ami_snapshot.control \
	/usr/share/postgresql/$MAJOR/extension/ami_snapshot--1.0.sql \
	/usr/share/postgresql/$MAJOR/extension/ami_snapshot--1.1.sql \
	/usr/share/postgresql/$MAJOR/extension/ami_snapshot--1.0--1.1.sql \
	/usr/share/postgresql/$MAJOR/extension/ami_snapshot--1.1--1.2.sql \
	/usr/share/postgresql/$MAJOR/extension/ami_snapshot--1.2--1.3.sql \
	/usr/share/postgresql/$MAJOR/extension/ami_snapshot--1.3--1.4.sql; do
	[ -f "$R$f" ] && grep -qx "$f" "$S/$EXT.files" || { echo "missing $f" | diag; ext_ok=1; }
done
ok $ext_ok "$EXT: the library, control file and SQL scripts (1.0, 1.1, the upgrades to 1.1, 1.2, 1.3 and 1.4) of PostgreSQL $MAJOR"
! grep -Eq '^/(etc|usr/sbin|lib/systemd)/' "$S/$EXT.files"
ok $? "$EXT: none of the helper's files"

# The system user.
pw=$(chroot "$R" getent passwd ami-snapshot)
echo "$pw" | diag
IFS=: read -r _ _ uid gid _ home shell <<<"$pw"
[ -n "$pw" ] && [ "$uid" -lt 1000 ] && [ "$home" = /nonexistent ] && [ "$shell" = /usr/sbin/nologin ] &&
	[ "$(chroot "$R" getent group "$gid" | cut -d: -f1)" = ami-snapshot ] && [ ! -e "$R/nonexistent" ]
ok $? "the system user and group ami-snapshot (home /nonexistent, not made; nologin)"
inside /bin/sh -c "dpkg-reconfigure -fnoninteractive $HELPER" >"$S/reconf.log" 2>&1
rc=$?
[ $rc -ne 0 ] && diag <"$S/reconf.log"
[ $rc -eq 0 ] && [ "$(chroot "$R" getent passwd ami-snapshot)" = "$pw" ]
ok $? "postinst again (dpkg-reconfigure): succeeds, the user unchanged"

# The unit: neither enabled nor started.
! ls "$R"/etc/systemd/system/*.wants/ami-snapshot-helper.service >/dev/null 2>&1
ok $? "the unit is not enabled"
running=0
for e in /proc/[0-9]*/exe; do
	[ "$(readlink "$e" 2>/dev/null)" = "$R/usr/sbin/ami-snapshot-helper" ] && running=1
done
ok $running "the helper is not running"

inside /usr/sbin/ami-snapshot-helper --help >"$S/help.out" 2>&1
rc=$?
head -5 "$S/help.out" | diag
[ $rc -eq 0 ] && grep -qF "(default $CONF)" "$S/help.out"
ok $? "ami-snapshot-helper --help runs and names $CONF as the default"
inside /usr/sbin/ami-snapshot-helper -c "$CONF" --check-config >"$S/check.out" 2>&1
rc=$?
diag <"$S/check.out"
ok $rc "the unit's ExecStartPre (--check-config) accepts the packaged configuration"

# CREATE EXTENSION in a throw-away cluster (the namespace's own /var/tmp).
inside /bin/bash -c "set -e
d=/var/tmp/pg; mkdir -p \$d; chown postgres: \$d
bin=/usr/lib/postgresql/$MAJOR/bin
runuser -u postgres -- \$bin/initdb -D \$d/data -A trust >\$d/initdb.log 2>&1 || { cat \$d/initdb.log; exit 1; }
runuser -u postgres -- \$bin/pg_ctl -D \$d/data -l \$d/log -w -o \"-k \$d -c listen_addresses=''\" start >/dev/null
rc=0
runuser -u postgres -- \$bin/psql -h \$d -X -At -v ON_ERROR_STOP=1 -d postgres \
	-c 'CREATE EXTENSION ami_snapshot' \
	-c \"SELECT extname || ' ' || extversion FROM pg_extension WHERE extname = 'ami_snapshot'\" \
	-c \"SELECT count(*) FROM pg_proc WHERE proname = 'ami_snapshot'\" || rc=\$?
runuser -u postgres -- \$bin/pg_ctl -D \$d/data -m fast -w stop >/dev/null || true
[ \$rc -eq 0 ] || cat \$d/log
exit \$rc" >"$S/sql.out" 2>&1
rc=$?
diag <"$S/sql.out"
[ $rc -eq 0 ] && grep -qx "ami_snapshot $EXTVER" "$S/sql.out" && grep -qx 1 "$S/sql.out"
ok $? "CREATE EXTENSION ami_snapshot in a PostgreSQL $MAJOR cluster: version $EXTVER, ami_snapshot()"

# The main end-to-end test through the packages: the packaged helper (run
# on the host, like the tree's in the other suites: the chroot is the same
# Debian 12), PostgreSQL 15 and the packaged extension in the chroot, loop
# filesystems and the emulator on the host (test/lib/world.py).
if [ "${AMIS_PACKAGES_E2E:-1}" = 1 ]; then
	t1=$(date +%s)
	AMIS_PG_CHROOT=$R AMIS_PG_MAJOR=$MAJOR AMIS_HELPER=$R/usr/sbin/ami-snapshot-helper \
		/usr/bin/python3 test/e2e/test_snapshot.py >"$S/e2e.log" 2>&1
	rc=$?
	p=$(grep -cE '^ok [0-9]+' "$S/e2e.log")
	f=$(grep -cE '^not ok [0-9]+' "$S/e2e.log")
	[ $rc -ne 0 ] && grep -E '^(not ok|#)' "$S/e2e.log" | tail -30 | diag
	[ $rc -eq 0 ] && [ "$f" = 0 ] && [ "$p" -gt 0 ] && grep -q "^1\.\.$p\$" "$S/e2e.log"
	ok $? "end-to-end snapshot and restore with the packaged helper and extension: $p checks, $f failed ($(($(date +%s) - t1)) s)"
else
	echo "# AMIS_PACKAGES_E2E=0: the end-to-end test through the packages is not run"
fi

# An edited configuration survives installing the package again.
echo "# edited by test/packages/run.sh" >>"$R$CONF"
inside /bin/sh -c "DEBIAN_FRONTEND=noninteractive dpkg -i --force-confold '$S/debs/${HELPER}_${DEBVER}_amd64.deb'" >"$S/reinstall.log" 2>&1
rc=$?
[ $rc -ne 0 ] && tail -20 "$S/reinstall.log" | diag
[ $rc -eq 0 ] && tail -1 "$R$CONF" | grep -qx "# edited by test/packages/run.sh"
ok $? "installing $HELPER again keeps an edited $CONF"

# ---- 5. purge ----
inside /bin/sh -c "DEBIAN_FRONTEND=noninteractive apt-get purge -y $HELPER $EXT" >"$S/purge.log" 2>&1
rc=$?
[ $rc -ne 0 ] && tail -20 "$S/purge.log" | diag
ok $rc "apt-get purge $HELPER $EXT"
for p in $HELPER $EXT; do
	# shellcheck disable=SC2016
	st=$(chroot "$R" dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)
	[ -z "$st" ] || [ "$st" = not-installed ]
	ok $? "$p is not installed any more (${st:-unknown to dpkg})"
done
left=""
for p in $HELPER $EXT; do
	while read -r f; do
		[ -n "$f" ] && [ "$f" != /. ] || continue
		# Directories shared with other packages stay.
		[ -d "$R$f" ] && chroot "$R" dpkg-query -S "$f" >/dev/null 2>&1 && continue
		[ -e "$R$f" ] || [ -L "$R$f" ] && left="$left $f"
	done <"$S/$p.files"
done
[ -n "$left" ] && echo "left:$left" | diag
[ -z "$left" ]
ok $? "nothing the packages installed is left"
[ ! -e "$R/etc/ami-snapshot" ]
ok $? "/etc/ami-snapshot is gone"
chroot "$R" getent passwd ami-snapshot >/dev/null
ok $? "the system user ami-snapshot is kept (Debian does not remove system users on purge)"

echo "# total: $(($(date +%s) - t0)) s"
echo "1..$n"
[ "$failed" -eq 0 ]
