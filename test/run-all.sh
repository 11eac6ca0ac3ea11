#!/bin/bash
# test/run-all.sh - builds (warnings are errors), installs, and runs every
# test: C unit tests (also built with ASan+UBSan), the fuzzers for a short
# while, the emulator's tests, the SQL regression tests, the end-to-end
# tests on loop filesystems, and the extension on PostgreSQL 17 and 18 from
# Debian chroots (doc/platforms.md), and the Debian packages built, installed
# on a clean Debian 12 chroot and purged.  Needs root and loop devices; fails
# loudly without them.  Prints "N passed, N failed" at the end.
#
# As root:
#   test/run-all.sh                 everything
#   test/run-all.sh unit sql        some suites (unit unit-san fuzz emulator sql e2e
#                                   pgversions packages)
#   FUZZ_SECONDS=300 test/run-all.sh fuzz   fuzz longer (default 20 s a target)
set -u
cd "$(dirname "$0")/.."
TOP=$(pwd)

if [ "$(id -u)" != 0 ]; then
	echo "FAIL: the tests need root (loop devices, mount, FIFREEZE); run $0 as root" >&2
	exit 1
fi
if ! losetup -f >/dev/null 2>&1; then
	echo "FAIL: no free loop device (losetup -f); the end-to-end tests need one" >&2
	exit 1
fi

scripts/install-deps.sh || { echo "FAIL: installing dependencies" >&2; exit 1; }

suites=("$@")
[ ${#suites[@]} -gt 0 ] || suites=(unit unit-san fuzz emulator sql e2e chaos pgversions packages)

LOGDIR=$(mktemp -d /var/tmp/amis-test-logs.XXXXXX)
# Sandboxes of another run on this machine (another checkout) are not ours.
mounts_before=$(findmnt -rn -o TARGET | grep -E '^/var/tmp/amis-' || true)
passed=0
failed=0
failed_names=()

count_tap() { # name logfile rc
	local p f
	p=$(grep -cE '^\s*ok [0-9]+' "$2")
	f=$(grep -cE '^\s*not ok [0-9]+' "$2")
	if [ "$3" != 0 ] && [ "$f" = 0 ]; then
		f=1 # crashed or bad plan
	fi
	passed=$((passed + p))
	failed=$((failed + f))
	[ "$3" = 0 ] || failed_names+=("$1")
	echo "== $1: $p passed, $f failed (log: $2)"
}

echo "== build"
make WERROR=1 >"$LOGDIR/build.log" 2>&1 || {
	tail -50 "$LOGDIR/build.log"
	echo "0 passed, 1 failed"
	exit 1
}
make install >"$LOGDIR/install.log" 2>&1 || {
	tail -50 "$LOGDIR/install.log"
	echo "0 passed, 1 failed"
	exit 1
}

for s in "${suites[@]}"; do
	case "$s" in
	unit)
		echo "== unit tests"
		prove -v $(find test/unit -maxdepth 1 -name "test_*" -type f -perm -u+x | sort) \
			>"$LOGDIR/unit.log" 2>&1
		rc=$?
		grep -E '^(not ok|Failed|Result|Files=)' "$LOGDIR/unit.log"
		count_tap unit "$LOGDIR/unit.log" $rc
		;;
	unit-san)
		# The C unit tests again, built with clang into build/san/ with
		# ASan+UBSan (helper/Makefile BUILD=); any report fails the test.
		echo "== unit tests with AddressSanitizer and UndefinedBehaviorSanitizer"
		if ! make -C helper BUILD=../build/san CC=clang \
			SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all" \
			tests >"$LOGDIR/unit-san-build.log" 2>&1; then
			tail -30 "$LOGDIR/unit-san-build.log"
			echo "== unit-san: 0 passed, 1 failed (build; log: $LOGDIR/unit-san-build.log)"
			failed=$((failed + 1))
			failed_names+=(unit-san)
			continue
		fi
		ASAN_OPTIONS=detect_leaks=1 \
			UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
			prove -v $(find build/san -maxdepth 1 -name "test_*" -type f -perm -u+x | sort) \
			>"$LOGDIR/unit-san.log" 2>&1
		rc=$?
		grep -E '^(not ok|Failed|Result|Files=|==[0-9]+==ERROR|SUMMARY: )|runtime error:' \
			"$LOGDIR/unit-san.log" | head -40
		count_tap unit-san "$LOGDIR/unit-san.log" $rc
		;;
	fuzz)
		# Each libFuzzer target for FUZZ_SECONDS (default 20) from a copy of
		# its seed corpus; one result per target.
		echo "== fuzzing (${FUZZ_SECONDS:-20} s per target)"
		if ! make -C test/fuzz >"$LOGDIR/fuzz-build.log" 2>&1; then
			tail -30 "$LOGDIR/fuzz-build.log"
			echo "== fuzz: 0 passed, 1 failed (build; log: $LOGDIR/fuzz-build.log)"
			failed=$((failed + 1))
			failed_names+=(fuzz)
			continue
		fi
		FUZZ_LOGDIR="$LOGDIR/fuzz" test/fuzz/run.sh "${FUZZ_SECONDS:-20}" >"$LOGDIR/fuzz.log" 2>&1
		rc=$?
		grep -E '^(ok|not ok|#)' "$LOGDIR/fuzz.log"
		count_tap fuzz "$LOGDIR/fuzz.log" $rc
		;;
	emulator)
		echo "== emulator tests"
		/usr/bin/python3 test/emulator/test_ec2emu.py >"$LOGDIR/emulator.log" 2>&1
		rc=$?
		tail -3 "$LOGDIR/emulator.log"
		p=$(grep -oE '^[0-9]+ passed' "$LOGDIR/emulator.log" | tail -1 | cut -d' ' -f1)
		f=$(grep -oE '[0-9]+ failed' "$LOGDIR/emulator.log" | tail -1 | cut -d' ' -f1)
		[ -n "$p" ] || p=0
		[ -n "$f" ] || f=0
		[ "$rc" = 0 ] || [ "$f" != 0 ] || f=1
		passed=$((passed + p))
		failed=$((failed + f))
		[ "$rc" = 0 ] || failed_names+=(emulator)
		echo "== emulator: $p passed, $f failed"
		;;
	sql)
		echo "== SQL regression tests (pg_regress)"
		test/sql-regress.sh >"$LOGDIR/sql.log" 2>&1
		rc=$?
		grep -E '^(test|ok|not ok|     |All|\s+[0-9]+ of)' "$LOGDIR/sql.log" | head -20
		if [ $rc = 0 ]; then
			passed=$((passed + 1))
		else
			failed=$((failed + 1))
			failed_names+=(sql)
			cat test/results/regression.diffs 2>/dev/null | head -80
		fi
		;;
	e2e)
		echo "== end-to-end tests"
		prove -v --timer test/e2e/test_*.py >"$LOGDIR/e2e.log" 2>&1
		rc=$?
		grep -E '^(not ok|#   |Failed|Result|Files=)' "$LOGDIR/e2e.log" | head -60
		count_tap e2e "$LOGDIR/e2e.log" $rc
		;;
	chaos)
		# A short randomized fault campaign with a fixed seed (test/chaos/,
		# doc/testing.md "The fault campaign"): the same choices every run.
		echo "== fault campaign (seed ${AMIS_CHAOS_SEED:-20261203}, ${AMIS_CHAOS_RUNS:-12} runs)"
		test/chaos/chaos.py --seed "${AMIS_CHAOS_SEED:-20261203}" --runs "${AMIS_CHAOS_RUNS:-12}" \
			>"$LOGDIR/chaos.log" 2>&1
		rc=$?
		grep -E '^(ok|not ok|#   )' "$LOGDIR/chaos.log" | head -60
		count_tap chaos "$LOGDIR/chaos.log" $rc
		;;
	pgversions)
		# Build, SQL regression tests and the main end-to-end test on the
		# PostgreSQL majors the host does not have, each in a cached Debian
		# chroot (test/pgversions/; a few minutes the first time).
		echo "== PostgreSQL 17 and 18 (Debian chroots)"
		AMIS_LOGDIR="$LOGDIR/pgversions" test/pgversions/run.sh >"$LOGDIR/pgversions.log" 2>&1
		rc=$?
		grep -E '^(ok|not ok|#   )' "$LOGDIR/pgversions.log" | head -60
		count_tap pgversions "$LOGDIR/pgversions.log" $rc
		;;
	packages)
		# dpkg-buildpackage on a copy of the tree, lintian, apt install on a
		# cached Debian 12 chroot with PostgreSQL 15 only, the main
		# end-to-end test through them, apt-get purge (test/packages/;
		# about a minute, half a minute more the first time).
		echo "== Debian packages (build, lintian, install, purge)"
		test/packages/run.sh >"$LOGDIR/packages.log" 2>&1
		rc=$?
		grep -E '^(ok|not ok|#)' "$LOGDIR/packages.log" | grep -vE '^# (Documentation=|  )' | head -60
		count_tap packages "$LOGDIR/packages.log" $rc
		;;
	*)
		echo "unknown suite $s" >&2
		failed=$((failed + 1))
		;;
	esac
done

# Nothing of ours may be left frozen or mounted.
leftover=$(findmnt -rn -o TARGET | grep -E '^/var/tmp/amis-' |
	grep -vxF -f <(printf '%s\n' "$mounts_before") || true)
if [ -n "$leftover" ]; then
	echo "FAIL: test mounts left behind:"
	echo "$leftover"
	failed=$((failed + 1))
fi

echo "logs: $LOGDIR"
[ ${#failed_names[@]} -eq 0 ] || echo "failed suites: ${failed_names[*]}"
echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
