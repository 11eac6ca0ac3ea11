#!/bin/bash
# test/fuzz/run.sh - runs libFuzzer targets for a while each and reports in TAP.
#
#   test/fuzz/run.sh SECONDS [TARGET...]    (default: every fuzz_*.c here)
#
# Needs the binaries in build/fuzz/ (make -C test/fuzz).  Each target starts
# from a copy of corpus/TARGET in a scratch directory (the committed seeds do
# not grow), with its dictionary if there is one.  A crash, leak, timeout or
# sanitizer report fails the target; the input that caused it is kept and
# its path printed.  Runs FUZZ_JOBS targets at a time (default: CPU count).
# Logs, scratch corpora and crash inputs go to FUZZ_LOGDIR (default: a new
# /var/tmp/amis-fuzz.* directory).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
BIN=$HERE/../../build/fuzz
seconds=${1:?usage: $0 SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
	for f in "$HERE"/fuzz_*.c; do
		targets+=("$(basename "$f" .c)")
	done
fi
jobs=${FUZZ_JOBS:-$(nproc)}
out=${FUZZ_LOGDIR:-$(mktemp -d /var/tmp/amis-fuzz.XXXXXX)}
mkdir -p "$out"

dict_for() {
	case "$1" in
	fuzz_protocol) echo protocol.dict ;;
	fuzz_ec2_xml | fuzz_restore | fuzz_lifecycle) echo xml.dict ;;
	fuzz_imds_json) echo json.dict ;;
	fuzz_config) echo ini.dict ;;
	esac
}

run_one() { # target
	local t=$1 dict args=()
	rm -rf "$out/corpus-$t"
	mkdir -p "$out/corpus-$t"
	cp -r "$HERE/corpus/$t/." "$out/corpus-$t/" 2>/dev/null
	dict=$(dict_for "$t")
	[ -z "$dict" ] || args+=("-dict=$HERE/$dict")
	# -timeout: one input taking 10 s is a hang, and a failure.
	ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1} \
		UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1} \
		"$BIN/$t" -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
		-artifact_prefix="$out/$t-" "${args[@]}" "$out/corpus-$t" \
		>"$out/$t.log" 2>&1
	echo $? >"$out/$t.rc"
}

running=0
for t in "${targets[@]}"; do
	if [ ! -x "$BIN/$t" ]; then
		echo "missing $BIN/$t (make -C test/fuzz)" >"$out/$t.log"
		echo 1 >"$out/$t.rc"
		continue
	fi
	run_one "$t" &
	running=$((running + 1))
	if [ "$running" -ge "$jobs" ]; then
		wait -n
		running=$((running - 1))
	fi
done
wait

echo "1..${#targets[@]}"
n=0
status=0
for t in "${targets[@]}"; do
	n=$((n + 1))
	log=$out/$t.log
	rc=$(cat "$out/$t.rc")
	runs=$(grep -oE '^Done [0-9]+ runs in [0-9]+ second' "$log" | tail -1 | cut -d' ' -f2)
	if [ "$rc" = 0 ] && [ -n "$runs" ] &&
		! grep -qE '^==[0-9]+==ERROR|runtime error:|^SUMMARY: ' "$log"; then
		echo "ok $n - $t: $runs executions in ${seconds}s"
	else
		status=1
		echo "not ok $n - $t: exit status $rc after ${runs:-?} executions (log: $log)"
		grep -E '^==[0-9]+==ERROR|runtime error:|^SUMMARY: |^fuzz_[a-z_]+: ' "$log" | head -5 | sed 's/^/#   /'
		grep -oE 'Test unit written to .*' "$log" | sed 's/^Test unit written to /#   input: /'
	fi
done
echo "# logs, corpora and crash inputs: $out"
exit $status
