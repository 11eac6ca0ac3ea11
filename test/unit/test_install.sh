#!/bin/bash
# test_install.sh - what make install lays out, and the system install (TAP).
#
# 1. make install DESTDIR=<scratch dir> must produce exactly the layout the
#    systemd unit and doc/install.md use: the helper at the unit's ExecStart
#    path, the configuration at the path the unit passes with -c (and the
#    helper's compiled-in default), the example next to it, the unit, the
#    docs at its Documentation=, the extension under pg_config's
#    directories; nothing else, and nothing in PGXS's sysconfdir.  A second
#    install keeps an edited configuration; what an earlier make install
#    left in PGXS's sysconfdir is removed if unchanged, reported otherwise.
# 2. The system install (test/run-all.sh runs make install first): nothing
#    in PGXS's sysconfdir, and the unit's own ExecStartPre
#    (ami-snapshot-helper -c CONFIG --check-config) accepts the installed
#    configuration.  That loads and checks the file, its users and the
#    worker user; it contacts neither IMDS nor EC2 (credentials and the IAM
#    permission are checked by the DryRun of each PREPARE).
#
# Needs root (the configuration is 0640 root).  Writes only under its own
# scratch directory, removed on exit however it exits, and reads the system.

set -u

here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)

# The layout doc/install.md documents.
UNIT=/lib/systemd/system/ami-snapshot-helper.service

n=0
failed=0
tmp=""

ok() { # ok COND-STATUS DESCRIPTION
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		failed=$((failed + 1))
		echo "not ok $n - $2"
	fi
}

bail() {
	n=$((n + 1))
	failed=$((failed + 1))
	echo "not ok $n - $1"
	echo "Bail out! $1"
	exit 1
}

diag() { sed 's/^/# /'; }

cleanup() {
	[ -n "$tmp" ] && rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

finish() {
	echo "1..$n"
	[ "$failed" -eq 0 ]
	exit $?
}

# make install into DESTDIR $1; output in $tmp/install.log.
install_into() {
	make -C "$top" --no-print-directory install DESTDIR="$1" >"$tmp/install.log" 2>&1
}

# The value of key $2 (first occurrence) in INI file $1, or nothing.
ini_value() {
	sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" | head -1 | sed 's/[[:space:]]*$//'
}

# Octal mode of $1.
mode() { stat -c %a "$1" 2>/dev/null; }

# ---- prerequisites: fail, do not skip ----

[ "$(id -u)" = 0 ] || bail "test_install.sh must run as root (the installed configuration is 0640 root)"
for tool in make pg_config install sed cmp getent; do
	command -v "$tool" >/dev/null || bail "$tool not found"
done
pkglibdir=$(pg_config --pkglibdir) && sharedir=$(pg_config --sharedir) &&
	pg_sysconfdir=$(pg_config --sysconfdir) || bail "pg_config failed"

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_install.XXXXXX") || bail "mktemp failed"
D="$tmp/root"

# ---- 1. make install DESTDIR=... ----

install_into "$D"
rc=$?
[ $rc -ne 0 ] && tail -30 "$tmp/install.log" | diag
ok $rc "make install DESTDIR=<scratch> succeeds"

[ -f "$D$UNIT" ] || bail "no unit at $UNIT in DESTDIR"
ok 0 "the unit is at $UNIT"
[ "$(mode "$D$UNIT")" = 644 ]
ok $? "the unit is 0644"

# The commands of the unit: binary and configuration, each the same in all three.
read -r -a start <<<"$(sed -n 's/^ExecStart=//p' "$D$UNIT")"
read -r -a pre <<<"$(sed -n 's/^ExecStartPre=//p' "$D$UNIT")"
read -r -a post <<<"$(sed -n 's/^ExecStopPost=//p' "$D$UNIT")"
exe=${start[0]:-}
conf=${start[2]:-}
echo "unit: ExecStart=${start[*]}" | diag
[ "${#start[@]}" -eq 3 ] && [ "${start[1]}" = -c ] && [ "${exe:0:1}" = / ] && [ "${conf:0:1}" = / ]
ok $? "ExecStart is BINARY -c CONFIG, both absolute ($exe, $conf)"
[ "${pre[*]:-}" = "$exe -c $conf --check-config" ]
ok $? "ExecStartPre checks that same configuration with that same binary"
[ "${post[*]:-}" = "$exe -c $conf --recover-only" ]
ok $? "ExecStopPost recovers with that same binary and configuration"
confdir=$(dirname "$conf")

[ -x "$D$exe" ] && [ "$(mode "$D$exe")" = 755 ]
ok $? "the helper is installed at the unit's ExecStart path, 0755"
"$D$exe" --help >"$tmp/help.out" 2>&1
grep -qF "(default $conf)" "$tmp/help.out"
ok $? "the helper's compiled-in default configuration is the unit's $conf"
grep 'default' "$tmp/help.out" | diag

[ -f "$D$conf" ] && [ "$(mode "$D$conf")" = 640 ] && [ "$(stat -c %U "$D$conf")" = root ]
ok $? "the configuration is at the path the unit passes with -c, 0640 root"
[ -f "$D$confdir/helper.conf.example" ] && [ "$(mode "$D$confdir/helper.conf.example")" = 644 ]
ok $? "the example configuration is next to it ($confdir/helper.conf.example)"
cmp -s "$D$conf" "$D$confdir/helper.conf.example"
ok $? "a first install's configuration is the example"
[ "$(head -1 "$D$conf")" = "# $conf - configuration of ami-snapshot-helper." ]
ok $? "the example names its own path"
"$D$exe" -c "$D$conf" --check-config 2>&1 | diag
[ "${PIPESTATUS[0]}" -eq 0 ]
ok $? "the installed helper accepts the installed configuration (--check-config)"

# Documentation=: every URI is a file installed under DESTDIR; README among them.
docs=$(sed -n 's/^Documentation=//p' "$D$UNIT")
docs_ok=0
readme=""
for uri in $docs; do
	case "$uri" in
	file://*) p=${uri#file://} ;;
	*) continue ;;
	esac
	if [ -f "$D$p" ] && [ "$(mode "$D$p")" = 644 ]; then
		echo "Documentation= $p: installed" | diag
	else
		echo "Documentation= $p: missing" | diag
		docs_ok=1
	fi
	[ "$(basename "$p")" = README.md ] && readme=$p
done
[ -n "$docs" ] && [ $docs_ok -eq 0 ] && [ -n "$readme" ]
ok $? "every file the unit's Documentation= names is installed, README.md among them"
docdir=$(dirname "${readme:-/nonexistent/README.md}")
cmp -s "$D$docdir/README.md" "$top/README.md"
ok $? "README.md is this tree's"
docs_ok=0
for f in "$top"/doc/*.md "$top"/doc/*.png; do
	cmp -s "$f" "$D$docdir/doc/$(basename "$f")" || {
		echo "doc/$(basename "$f") not installed at $docdir/doc/" | diag
		docs_ok=1
	}
done
ok $docs_ok "doc/*.md and doc/*.png are in $docdir/doc/ (README's relative links work)"

# The manual pages, where man finds them, rendering without a warning.
mandir=/usr/share/man
for name in ami-snapshot-helper ami-snapshot; do
	page="$D$mandir/man8/$name.8"
	[ -f "$page" ] && [ "$(mode "$page")" = 644 ] &&
		[ -z "$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$page" 2>&1 >/dev/null)" ]
	ok $? "the manual page is $mandir/man8/$name.8 and man renders it without a warning"
done

# The restore command, next to the helper, with the same default configuration.
cli="$(dirname "$exe")/ami-snapshot"
[ -x "$D$cli" ] && [ "$(mode "$D$cli")" = 755 ]
ok $? "the restore command is installed at $cli, 0755"
"$D$cli" --help >"$tmp/cli-help.out" 2>&1
grep -qF "(default $conf)" "$tmp/cli-help.out"
ok $? "ami-snapshot's compiled-in default configuration is the unit's $conf"

# The pre-migration wrapper (README.md, Recipes), for any user, with its page.
[ -x "$D/usr/bin/ami-snapshot-before" ] && [ "$(mode "$D/usr/bin/ami-snapshot-before")" = 755 ] &&
	cmp -s "$top/packaging/ami-snapshot-before" "$D/usr/bin/ami-snapshot-before" &&
	[ -z "$(LC_ALL=C.UTF-8 MANWIDTH=80 man --warnings -l "$D$mandir/man1/ami-snapshot-before.1" 2>&1 >/dev/null)" ]
ok $? "the pre-migration wrapper is /usr/bin/ami-snapshot-before, 0755, with its manual page"

# doc/install.md documents the same paths.
install_doc=doc/install.md
layout_ok=0
for p in "$UNIT" "$conf" "$(dirname "$exe")"; do
	grep -qF "\`$p\`" "$top/$install_doc" || {
		echo "$install_doc does not name \`$p\`" | diag
		layout_ok=1
	}
done
ok $layout_ok "$install_doc names the unit, the configuration and the helper's directory as installed"

# The extension, under pg_config's directories.
ext_ok=0
for f in "$pkglibdir/ami_snapshot.so" "$sharedir/extension/ami_snapshot.control"; do
	[ -f "$D$f" ] || { echo "missing $f" | diag; ext_ok=1; }
done
for f in "$top"/sql/*.sql; do
	[ -f "$D$sharedir/extension/$(basename "$f")" ] || {
		echo "missing $sharedir/extension/$(basename "$f")" | diag
		ext_ok=1
	}
done
ok $ext_ok "the extension's .so, control file and SQL scripts are under pg_config's pkglibdir and sharedir"

# Exactly these files (LLVM bitcode, if PostgreSQL has JIT, under pkglibdir/bitcode).
{
	echo "$exe"
	echo "$conf"
	echo "$confdir/helper.conf.example"
	echo "$UNIT"
	echo "$docdir/README.md"
	echo "$mandir/man8/ami-snapshot-helper.8"
	echo "$cli"
	echo "$mandir/man8/ami-snapshot.8"
	echo "/usr/bin/ami-snapshot-before"
	echo "$mandir/man1/ami-snapshot-before.1"
	for f in "$top"/doc/*.md "$top"/doc/*.png; do echo "$docdir/doc/$(basename "$f")"; done
	echo "$pkglibdir/ami_snapshot.so"
	echo "$sharedir/extension/ami_snapshot.control"
	for f in "$top"/sql/*.sql; do echo "$sharedir/extension/$(basename "$f")"; done
} | sort >"$tmp/expected"
(cd "$D" && find . ! -type d | sed 's|^\.||' | grep -v "^$pkglibdir/bitcode/" | sort) >"$tmp/got"
diff "$tmp/expected" "$tmp/got" >"$tmp/layout.diff"
rc=$?
diag <"$tmp/layout.diff"
ok $rc "nothing else is installed"
[ -z "$(find "$D" -type d -empty)" ]
ok $? "no empty directory is left behind"
[ ! -e "$D$pg_sysconfdir" ]
ok $? "nothing under PGXS's sysconfdir ($pg_sysconfdir)"

# A second install keeps an edited configuration.
echo "# edited by test_install.sh" >>"$D$conf"
install_into "$D"
rc=$?
[ $rc -ne 0 ] && tail -30 "$tmp/install.log" | diag
[ $rc -eq 0 ] && grep -qx "# edited by test_install.sh" "$D$conf"
ok $? "a second make install keeps an edited configuration"

# What an earlier make install put in PGXS's sysconfdir: unchanged, removed.
old="$pg_sysconfdir/ami-snapshot"
D2="$tmp/old-unchanged"
mkdir -p "$D2$old" && cp "$top/packaging/helper.conf.example" "$D2$old/helper.conf" &&
	cp "$top/packaging/helper.conf.example" "$D2$old/" || bail "could not set up $D2$old"
install_into "$D2"
rc=$?
[ $rc -ne 0 ] && tail -30 "$tmp/install.log" | diag
[ $rc -eq 0 ] && [ ! -e "$D2$old" ] && [ -f "$D2$conf" ] && grep -q "^removed .*$old" "$tmp/install.log"
ok $? "an unchanged configuration an earlier install left in $old is removed"

# Edited: kept, and reported.
D3="$tmp/old-edited"
mkdir -p "$D3$old" && cp "$top/packaging/helper.conf.example" "$D3$old/helper.conf" &&
	echo "allow = /srv/db" >>"$D3$old/helper.conf" || bail "could not set up $D3$old"
install_into "$D3"
rc=$?
grep WARNING "$tmp/install.log" | diag
[ $rc -eq 0 ] && grep -qx "allow = /srv/db" "$D3$old/helper.conf" &&
	grep -q "WARNING: .*$old was left by an earlier make install.*$conf" "$tmp/install.log"
ok $? "an edited one is kept, with a warning naming $conf"

# ---- 2. the system install (test/run-all.sh runs make install first) ----

# Both fail when a make install from another tree (an older Makefile) ran
# after this tree's: the system install is shared.
[ ! -e "$old" ]
rc=$?
[ $rc -ne 0 ] && ls -l "$old" 2>&1 | diag
ok $rc "nothing in $old on this system"
cmp -s "$UNIT" "$D$UNIT"
rc=$?
[ $rc -ne 0 ] && diff "$D$UNIT" "$UNIT" 2>&1 | head -20 | diag
ok $rc "the system's $UNIT is this tree's (make install ran from here)"
[ -x "$exe" ] && [ -f "$conf" ] && [ -f "$confdir/helper.conf.example" ] && [ -f "$docdir/README.md" ]
ok $? "helper, configuration, example and README are where the unit says"
# The unit's own ExecStartPre, word for word.
"${pre[@]}" >"$tmp/check.out" 2>&1
rc=$?
diag <"$tmp/check.out"
[ $rc -eq 0 ] && grep -qx "configuration $conf is valid" "$tmp/check.out"
ok $? "the unit's ExecStartPre (${pre[*]}) accepts the system's configuration"
# What the helper checks only when it starts listening: socket_group exists.
group=$(ini_value "$conf" socket_group)
[ -z "$group" ] || getent group "$group" >/dev/null
ok $? "socket_group (${group:-unset}) exists"
wuser=$(ini_value "$conf" worker_user)
[ -n "$wuser" ] && getent passwd "$wuser" >/dev/null
ok $? "worker_user (${wuser:-unset}) exists (make install creates ami-snapshot)"
if command -v systemd-analyze >/dev/null; then
	systemd-analyze verify "$UNIT" >"$tmp/verify.out" 2>&1
	rc=$?
	diag <"$tmp/verify.out"
	ok $rc "systemd-analyze verify $UNIT"
else
	echo "# systemd-analyze not found: the unit's syntax is not verified"
fi
echo "# not checked here (needs EC2): IMDS, credentials, the IAM permission (the DryRun of"
echo "# each PREPARE), and that [filesystems] allow names mounted EBS filesystems"

finish
