#!/bin/bash
# test/pgversions/run.sh [MAJOR...] - ami_snapshot against the PostgreSQL
# majors the host does not have (default: 17 18), each from Debian's own
# packages in a chroot made by chroot.sh.  For each major:
#
#   1. the chroot (made the first time, cached afterwards);
#   2. the extension built inside from a copy of this tree
#      (make WITH_HELPER=0 PG_CONFIG=... WERROR=1) and installed there;
#   3. the SQL regression tests (test/sql-regress.sh) on that major;
#   4. the main end-to-end test (test/e2e/test_snapshot.py): the host's
#      helper, loop filesystems and emulator, PostgreSQL from the chroot,
#      a snapshot under pgbench load, then crash recovery on the restored
#      bytes, the committed rows, pgbench's invariant and pg_amcheck;
#   5. the end-to-end tests of the failure paths (test/e2e/test_failures.py:
#      cancel, statement_timeout, pg_terminate_backend, a client gone, EC2
#      errors: the backup is aborted and the history written on each
#      major); with AMIS_PGVERSIONS_E2E=all every other end-to-end test
#      too, about four minutes per major.
#
# Prints TAP, one test per step.  A chroot that cannot be made fails its
# steps.  Needs root, loop devices and the helper built on the host (made
# here when missing).  Logs go to $AMIS_LOGDIR (default a new directory
# under /var/tmp).  One run at a time per chroot: a run waits for another
# that installs into or tests the same chroot.
set -u
cd "$(dirname "$0")/../.." || exit 1
TOP=$(pwd)

majors=("$@")
[ ${#majors[@]} -gt 0 ] || majors=(17 18)
more_e2e=()
case "${AMIS_PGVERSIONS_E2E:-default}" in
default) more_e2e=(test/e2e/test_failures.py) ;;
all)
	for t in test/e2e/test_*.py; do
		[ "$t" = test/e2e/test_snapshot.py ] || more_e2e+=("$t")
	done
	;;
*)
	echo "AMIS_PGVERSIONS_E2E is default or all, not ${AMIS_PGVERSIONS_E2E}" >&2
	exit 2
	;;
esac
e2e_steps=("end-to-end snapshot and restore" "end-to-end: ${more_e2e[*]##*/}")
logdir=${AMIS_LOGDIR:-$(mktemp -d /var/tmp/amis-pgversions-logs.XXXXXX)}
mkdir -p "$logdir"

n=0
nfailed=0
result() { # ok|not-ok description [log]
	n=$((n + 1))
	if [ "$1" = ok ]; then
		echo "ok $n - $2"
	else
		nfailed=$((nfailed + 1))
		echo "not ok $n - $2"
		if [ -n "${3:-}" ] && [ -f "$3" ]; then
			tail -40 "$3" | sed 's/^/#   /'
		fi
	fi
}
skip_rest() { # major steps...
	local m=$1 s
	shift
	for s in "$@"; do
		result not-ok "PostgreSQL $m: $s (not run: an earlier step failed)"
	done
}

if [ "$(id -u)" != 0 ]; then
	echo "1..1"
	echo "not ok 1 - the PostgreSQL version tests need root (chroot, mount, loop devices)"
	exit 1
fi
if [ ! -x helper/ami-snapshot-helper ]; then
	make -C helper WERROR=1 >"$logdir/helper-build.log" 2>&1 || {
		echo "1..1"
		echo "not ok 1 - building the helper (log: $logdir/helper-build.log)"
		exit 1
	}
fi

work=$(mktemp -d /var/tmp/amis-pgversions.XXXXXX)
trap 'rm -rf "$work"' EXIT

for m in "${majors[@]}"; do
	t0=$(date +%s)
	if ! root=$(test/pgversions/chroot.sh "$m" 2>"$logdir/chroot-$m.log"); then
		result not-ok "PostgreSQL $m: the chroot could not be made (log: $logdir/chroot-$m.log)" \
			"$logdir/chroot-$m.log"
		skip_rest "$m" build install "SQL regression tests" "${e2e_steps[@]}"
		continue
	fi
	result ok "PostgreSQL $m: chroot $root ($(($(date +%s) - t0)) s)"

	# Build, install and test with the chroot to ourselves.
	exec 8>"$root.lock"
	if ! flock -w 1800 8; then
		result not-ok "PostgreSQL $m: another run kept $root.lock for 30 minutes"
		skip_rest "$m" build install "SQL regression tests" "${e2e_steps[@]}"
		continue
	fi
	pgconfig=/usr/lib/postgresql/$m/bin/pg_config
	src=$work/src-$m
	mkdir -p "$src"
	tar -C "$TOP" --exclude=./.git --exclude='*.o' --exclude='*.so' --exclude='*.bc' \
		--exclude=./build --exclude=./test/results -cf - . | tar -C "$src" -xf -

	t0=$(date +%s)
	if test/pgversions/in-chroot.sh "$root" "$src" \
		make -C "$src" WITH_HELPER=0 PG_CONFIG="$pgconfig" WERROR=1 \
		>"$logdir/build-$m.log" 2>&1; then
		result ok "PostgreSQL $m: build with WERROR=1 ($(($(date +%s) - t0)) s)"
	else
		result not-ok "PostgreSQL $m: build with WERROR=1 (log: $logdir/build-$m.log)" \
			"$logdir/build-$m.log"
		skip_rest "$m" install "SQL regression tests" "${e2e_steps[@]}"
		flock -u 8
		continue
	fi
	if test/pgversions/in-chroot.sh "$root" "$src" \
		make -C "$src" WITH_HELPER=0 PG_CONFIG="$pgconfig" install \
		>"$logdir/install-$m.log" 2>&1; then
		result ok "PostgreSQL $m: install into the chroot"
	else
		result not-ok "PostgreSQL $m: install into the chroot (log: $logdir/install-$m.log)" \
			"$logdir/install-$m.log"
		skip_rest "$m" "SQL regression tests" "${e2e_steps[@]}"
		flock -u 8
		continue
	fi

	t0=$(date +%s)
	if AMIS_PG_CHROOT=$root AMIS_PG_MAJOR=$m "$src/test/sql-regress.sh" \
		>"$logdir/sql-$m.log" 2>&1; then
		result ok "PostgreSQL $m: SQL regression tests ($(($(date +%s) - t0)) s)"
	else
		cat "$src/test/results/regression.diffs" >>"$logdir/sql-$m.log" 2>/dev/null
		result not-ok "PostgreSQL $m: SQL regression tests (log: $logdir/sql-$m.log)" \
			"$logdir/sql-$m.log"
	fi

	t0=$(date +%s)
	AMIS_PG_CHROOT=$root AMIS_PG_MAJOR=$m /usr/bin/python3 test/e2e/test_snapshot.py \
		>"$logdir/e2e-$m.log" 2>&1
	rc=$?
	p=$(grep -cE '^ok [0-9]+' "$logdir/e2e-$m.log")
	f=$(grep -cE '^not ok [0-9]+' "$logdir/e2e-$m.log")
	version=$(sed -n 's/^# PostgreSQL \([^ ]*\) .*/\1/p' "$logdir/e2e-$m.log" | head -1)
	if [ "$rc" = 0 ] && [ "$f" = 0 ] && [ "$p" -gt 0 ] && grep -q "^1\.\.$p\$" "$logdir/e2e-$m.log"; then
		result ok "PostgreSQL $m: end-to-end snapshot and restore on ${version:-?}, $p checks ($(($(date +%s) - t0)) s)"
	else
		result not-ok "PostgreSQL $m: end-to-end snapshot and restore: $p passed, $f failed, exit $rc (log: $logdir/e2e-$m.log)" \
			"$logdir/e2e-$m.log"
	fi

	t0=$(date +%s)
	AMIS_PG_CHROOT=$root AMIS_PG_MAJOR=$m prove -v "${more_e2e[@]}" \
		>"$logdir/e2e-more-$m.log" 2>&1
	rc=$?
	p=$(grep -cE '^ok [0-9]+' "$logdir/e2e-more-$m.log")
	f=$(grep -cE '^not ok [0-9]+' "$logdir/e2e-more-$m.log")
	if [ "$rc" = 0 ] && [ "$f" = 0 ] && [ "$p" -gt 0 ]; then
		result ok "PostgreSQL $m: ${e2e_steps[1]}, $p checks ($(($(date +%s) - t0)) s)"
	else
		grep -E '^(not ok|#   |Failed|Result)' "$logdir/e2e-more-$m.log" \
			>"$logdir/e2e-more-$m.failures"
		result not-ok "PostgreSQL $m: ${e2e_steps[1]}: $p passed, $f failed, exit $rc (log: $logdir/e2e-more-$m.log)" \
			"$logdir/e2e-more-$m.failures"
	fi
	flock -u 8
done

echo "1..$n"
echo "# logs: $logdir"
[ "$nfailed" = 0 ]
