#!/bin/bash
# test_freeze.sh - freeze.c and volumes.c on real filesystems (TAP, for prove).
#
# Needs root and loop devices; without them it FAILS (a freeze test that
# silently skips proves nothing).  It freezes only filesystems it creates
# on its own loop devices under its own temporary directory, and the
# driver refuses any mount point outside that directory.  On exit, however
# it exits, it thaws, unmounts and detaches everything it set up.
#
# Environment: CC (default cc), FREEZE_TEST_CFLAGS (e.g. -fsanitize=address,undefined).

set -u

here=$(cd "$(dirname "$0")" && pwd)
helper=$(cd "$here/../../helper" && pwd)

n=0
failed=0
tmp=""
loops=()
mounts=() # in mount order; cleanup goes in reverse
writers=()

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
	local i mp pid
	set +e
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		mp=${mounts[i]}
		# only a mounted test filesystem: fsfreeze -u on a bare directory
		# would address the filesystem holding it
		mountpoint -q "$mp" && fsfreeze -u "$mp" 2>/dev/null
	done
	for pid in "${writers[@]}"; do
		for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		kill -0 "$pid" 2>/dev/null && echo "# writer $pid still blocked" >&2
		wait "$pid" 2>/dev/null
	done
	for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
		mp=${mounts[i]}
		# twice: mount-swap may leave a tmpfs stacked on top
		mountpoint -q "$mp" && { umount "$mp" || echo "# could not unmount $mp" >&2; }
		mountpoint -q "$mp" && { umount "$mp" || echo "# could not unmount $mp" >&2; }
	done
	for dev in "${loops[@]}"; do
		losetup -d "$dev" || echo "# could not detach $dev" >&2
	done
	[ -n "$tmp" ] && rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

finish() {
	echo "1..$n"
	[ "$failed" -eq 0 ]
	exit $?
}

# ---- prerequisites: fail, do not skip ----

[ "$(id -u)" = 0 ] || bail "test_freeze.sh must run as root (FIFREEZE needs CAP_SYS_ADMIN)"
for tool in losetup mkfs.ext4 mkfs.xfs mount umount mountpoint fsfreeze "${CC:-cc}"; do
	command -v "$tool" >/dev/null || bail "$tool not found"
done

tmp=$(mktemp -d "${TMPDIR:-/tmp}/test_freeze.XXXXXX") || bail "mktemp failed"
driver="$tmp/freeze-driver"
# shellcheck disable=SC2086
if ! "${CC:-cc}" -std=gnu11 -Wall -Wextra -D_GNU_SOURCE -pthread ${FREEZE_TEST_CFLAGS:-} -I"$helper/common" \
	-I"$helper/root" "$helper/common/util.c" "$helper/common/log.c" "$helper/common/errcodes.c" \
	"$helper/root/volumes.c" \
	"$helper/root/freeze.c" "$helper/root/watchdog.c" "$helper/root/marker.c" \
	"$helper/root/mountinfo.c" \
	"$here/freeze-driver.c" -Wl,--wrap=ioctl \
	-o "$driver" 2>"$tmp/cc.log"; then
	diag <"$tmp/cc.log"
	bail "could not compile freeze-driver.c"
fi
ok 0 "freeze-driver compiled"

# ---- filesystems: ext4 at mnt1, xfs nested at mnt1/sub, ext4 at mnt3 ----

truncate -s 64M "$tmp/ext4.img" && mkfs.ext4 -q -F "$tmp/ext4.img" || bail "mkfs.ext4 failed"
# xfsprogs >= 5.19 refuses filesystems under 300 MB; the file is sparse
truncate -s 320M "$tmp/xfs.img" && mkfs.xfs -q -f "$tmp/xfs.img" || bail "mkfs.xfs failed"
truncate -s 64M "$tmp/ext4b.img" && mkfs.ext4 -q -F "$tmp/ext4b.img" || bail "mkfs.ext4 failed"

# Attaches image $1 to a free loop device, named in $attached.
attach() {
	attached=$(losetup -f --show "$1") || bail "losetup -f $1 failed (no free loop device?)"
	loops+=("$attached")
	[ -b "$attached" ] || bail "$attached is not a block device"
}
attach "$tmp/ext4.img"
loop1=$attached
attach "$tmp/xfs.img"
loop2=$attached
attach "$tmp/ext4b.img"
loop3=$attached

mnt1="$tmp/mnt1"
mnt2="$mnt1/sub"
mnt3="$tmp/mnt 3" # a space, escaped as \040 in mountinfo
mkdir "$mnt1" "$mnt3" || bail "mkdir failed"
mount "$loop1" "$mnt1" || bail "mount $loop1 failed"
mounts+=("$mnt1")
mkdir "$mnt2" || bail "mkdir $mnt2 failed"
mount "$loop2" "$mnt2" || bail "mount $loop2 failed"
mounts+=("$mnt2")
mount "$loop3" "$mnt3" || bail "mount $loop3 failed"
mounts+=("$mnt3")
for mp in "$mnt1" "$mnt2" "$mnt3"; do
	mountpoint -q "$mp" || bail "$mp is not a mount point"
done
mkdir "$mnt1/data" "$mnt2/wal" || bail "mkdir failed"
ln -s "$mnt2/wal" "$mnt1/data/pg_wal"
ok 0 "ext4 at mnt1, xfs at mnt1/sub, ext4 at 'mnt 3' on $loop1 $loop2 $loop3"

vol1=vol-0123456789abcdef1
vol2=vol-0123456789abcdef2
vol3=vol-0123456789abcdef3
overrides=(-o "$(basename "$loop1")=$vol1" -o "$loop2=$vol2" -o "$(basename "$loop3")=$vol3")
export FREEZE_DRIVER_ALLOW="$tmp"

drv() { "$driver" "${overrides[@]}" "$@"; }

# Starts a writer creating $1 in the background; "blocked" if still running after 1 s.
write_blocks() {
	sh -c "echo x > '$1'" &
	local pid=$!
	sleep 1
	if kill -0 "$pid" 2>/dev/null; then
		writers+=("$pid")
		last_writer=$pid
		return 0
	fi
	wait "$pid"
	return 1
}

# Whether a write completes within 5 s (never hangs the test).
write_completes() {
	sh -c "echo y > '$1' && sync '$1'" &
	local pid=$!
	for _ in $(seq 50); do
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid"
			return $?
		fi
		sleep 0.1
	done
	writers+=("$pid")
	return 1
}

# Whether the writer started by write_blocks finishes within 5 s.
writer_finishes() {
	for _ in $(seq 50); do
		kill -0 "$1" 2>/dev/null || return 0
		sleep 0.1
	done
	return 1
}

# ---- resolving on the real /sys and /proc/self/mountinfo ----

out=$(drv resolve "$mnt1/data" "$mnt1/data/pg_wal" "$mnt3")
ok $? "resolve three paths"
echo "$out" | diag
line1=$(sed -n 1p <<<"$out")
line2=$(sed -n 2p <<<"$out")
line3=$(sed -n 3p <<<"$out")
[[ "$line1" == "mount=$mnt1 fstype=ext4 "*"volumes=$(basename "$loop1"):$vol1" ]]
ok $? "data dir on mnt1, $loop1 -> $vol1 (override by name)"
[[ "$line2" == "mount=$mnt2 fstype=xfs "*"volumes=$(basename "$loop2"):$vol2" ]]
ok $? "pg_wal symlink followed to the xfs mount, $loop2 -> $vol2 (override by /dev path)"
[[ "$line3" == "mount=$mnt3 fstype=ext4 "*"volumes=$(basename "$loop3"):$vol3" ]]
ok $? "mount point with a space resolved"
majmin=$(lsblk -dno MAJ:MIN "$loop1" | tr -d ' ')
[[ "$line1" == *" dev=$majmin "* ]]
ok $? "device number $majmin from mountinfo"

out=$("$driver" resolve "$mnt1/data")
rc=$?
[ $rc -ne 0 ] && [[ "$out" == "error VolumeUnknown "*"[volumes] $loop1 = vol-"* ]]
ok $? "loop device without override: VolumeUnknown naming the device and the key"
echo "$out" | diag

# The directory holding the test is on this machine's own filesystem: the
# driver must refuse it.  Name its disk's volume so that resolving succeeds
# and the allow-list is what refuses (where the disk cannot be named at all,
# resolving fails, which refuses too).  "resolve" goes through the same
# check as "freeze" without ever reaching a freeze.
outer=$(readlink -f "/sys/dev/block/$(findmnt -no MAJ:MIN -T "$tmp" | tr -d ' ')" 2>/dev/null)
out=$(drv -o "$(basename "${outer:-none}")=vol-0fffffffffffffff0" resolve "$tmp")
rc=$?
echo "$out" | diag
[ $rc -ne 0 ] && [[ "$out" != *frozen* ]] && [[ "$out" == refused:* || "$out" == error* ]]
ok $? "driver refuses the filesystem holding the test directory"

# ---- plan order ----

out=$(drv order "$mnt1/data" "$mnt3" "$mnt2/wal" "$mnt1/data/pg_wal" "$mnt1")
ok $? "plan builds"
echo "$out" | diag
fs_lines=$(grep '^fs ' <<<"$out" | cut -c4-)
[ "$(wc -l <<<"$fs_lines")" -eq 3 ]
ok $? "three filesystems, each once"
[ "$(sed -n 1p <<<"$fs_lines")" = "$mnt2" ]
ok $? "nested mount first"
grep -nx "$mnt2" <<<"$fs_lines" | cut -d: -f1 >"$tmp/i2"
grep -nx "$mnt1" <<<"$fs_lines" | cut -d: -f1 >"$tmp/i1"
[ "$(cat "$tmp/i2")" -lt "$(cat "$tmp/i1")" ]
ok $? "child before parent"
[ "$(grep -c '^volume ' <<<"$out")" -eq 3 ]
ok $? "three unique volumes"

# ---- freeze, blocked writes, double freeze, thaw ----

out=$(drv freeze "$mnt1/data" "$mnt2")
ok $? "freeze mnt1 and its nested mount"
echo "$out" | diag
[ "$(sed -n 1p <<<"$out")" = "frozen $mnt2" ] && [ "$(sed -n 2p <<<"$out")" = "frozen $mnt1" ]
ok $? "frozen child first"

write_blocks "$mnt1/blocked1"
ok $? "a write to frozen mnt1 blocks"
w1=${last_writer:-}
write_blocks "$mnt2/blocked2"
ok $? "a write to frozen nested xfs blocks"
w2=${last_writer:-}
write_completes "$mnt3/free"
ok $? "a write to the unfrozen filesystem completes"

out=$(drv freeze-one "$mnt1")
[ $? -ne 0 ] && [[ "$out" == "error AlreadyFrozen "* ]]
ok $? "second freeze: AlreadyFrozen"
echo "$out" | diag
out=$(drv freeze "$mnt2")
[ $? -ne 0 ] && [[ "$out" == *"error AlreadyFrozen "* ]]
ok $? "plan freeze of a frozen filesystem: AlreadyFrozen"

out=$(drv thaw "$mnt1" "$mnt2")
ok $? "thaw both"
[ "$out" = "thawed $mnt1"$'\n'"thawed $mnt2" ]
ok $? "both were frozen"
[ -n "$w1" ] && writer_finishes "$w1"
ok $? "the blocked writer on mnt1 finished after the thaw"
[ -n "$w2" ] && writer_finishes "$w2"
ok $? "the blocked writer on the nested mount finished after the thaw"
[ -f "$mnt1/blocked1" ] && [ -f "$mnt2/blocked2" ]
ok $? "the blocked writes landed"
write_completes "$mnt1/after" && write_completes "$mnt2/after"
ok $? "writes succeed after the thaw"

out=$(drv thaw "$mnt1")
[ $? -eq 0 ] && [ "$out" = "notfrozen $mnt1" ]
ok $? "thawing a thawed filesystem: success, reported as not frozen"

# ---- freeze and thaw in one process ----

out=$(drv cycle "$mnt1/cycle" "$mnt1" "$mnt2")
ok $? "freeze/thaw cycle in one process"
echo "$out" | diag
grep -qx "writer blocked while frozen" <<<"$out" && grep -qx "writer completed after thaw" <<<"$out"
ok $? "writer blocked while frozen, completed after the thaw"
[ "$(grep -c 'frozen_at>0=1 thawed_after=1 still_frozen=0' <<<"$out")" -eq 2 ]
ok $? "per-filesystem timestamps recorded"
grep -qx "window_usec_ok=1" <<<"$out" && grep -qx "any_frozen=0" <<<"$out"
ok $? "freeze window covers the blocked second"

# ---- a failing freeze rolls back what it froze ----

fsfreeze -f "$mnt1" || bail "fsfreeze -f $mnt1 failed"
out=$(drv freeze "$mnt2" "$mnt1")
rc=$?
echo "$out" | diag
[ $rc -ne 0 ] && [[ "$out" == *"error AlreadyFrozen "* ]]
ok $? "freezing a plan whose parent is frozen elsewhere fails"
grep -qx "after-rollback $mnt2 released" <<<"$out" && grep -qx "after-rollback $mnt1 released" <<<"$out"
ok $? "the child it froze was thawed again, the parent not claimed"
write_completes "$mnt2/rolled-back"
ok $? "the child accepts writes"
write_blocks "$mnt1/still-frozen"
ok $? "the parent frozen by someone else stays frozen"
w3=${last_writer:-}
fsfreeze -u "$mnt1"
[ -n "$w3" ] && writer_finishes "$w3"
ok $? "its writer finishes after our fsfreeze -u"

# ---- parallel freezing ----

# The line "ts FROZEN_AT RETURNED THAWED STILL_FROZEN" of mount point $2 in $1.
ts_of() { grep "^ts " <<<"$1" | while read -r _ a b c d mp; do [ "$mp" = "$2" ] && echo "$a $b $c $d"; done; }

# Two siblings: one step, the second FIFREEZE on a thread of the pool.
out=$(drv timeline "$mnt1" "$mnt3")
ok $? "timeline of two sibling filesystems"
echo "$out" | diag
read -r t1a t1b t1c t1d <<<"$(ts_of "$out" "$mnt1")"
read -r t3a t3b t3c t3d <<<"$(ts_of "$out" "$mnt3")"
[ -n "${t1d:-}" ] && [ -n "${t3d:-}" ] && [ "$t1d" = 0 ] && [ "$t3d" = 0 ] &&
	[ "$t1c" -ge "$t1b" ] && [ "$t3c" -ge "$t3b" ]
ok $? "both frozen, both thawed"
read -r tb tf ta <<<"$(sed -n 's/^threads before=\([0-9]*\) frozen=\([0-9]*\) after=\([0-9]*\)$/\1 \2 \3/p' <<<"$out")"
# Compared with "after", not "before": a sanitizer may start a thread of its own.
[ -n "${ta:-}" ] && [ "$tf" -eq $((ta + 1)) ] && [ "$ta" -ge "$tb" ] &&
	grep -qx "threads closed=$ta" <<<"$out"
ok $? "one pool thread while frozen, none once thawed"
if [ -n "${t3b:-}" ] && [ "$t3a" -lt "$t1b" ] && [ "$t1a" -lt "$t3b" ]; then
	echo "# the two FIFREEZE calls overlapped"
else
	echo "# the two FIFREEZE calls did not overlap this time (scheduling)"
fi

out=$(drv cycle "$mnt3/cycle-sibling" "$mnt1" "$mnt3")
ok $? "cycle of two siblings"
echo "$out" | diag
grep -qx "writer blocked while frozen" <<<"$out" && grep -qx "writer completed after thaw" <<<"$out" &&
	[ "$(grep -c 'frozen_at>0=1 thawed_after=1 still_frozen=0' <<<"$out")" -eq 2 ]
ok $? "a write to the second sibling blocked while frozen, completed after"
out=$(drv cycle "$mnt1/cycle-sibling" "$mnt1" "$mnt3")
grep -qx "writer blocked while frozen" <<<"$out" && grep -qx "writer completed after thaw" <<<"$out"
ok $? "a write to the first sibling blocked while frozen, completed after"

# Nested: mnt2 (child) and mnt3 together, then mnt1 (parent); thawed the other way.
out=$(drv timeline "$mnt1" "$mnt2" "$mnt3")
ok $? "timeline of a nested pair and a sibling"
echo "$out" | diag
read -r t1a t1b t1c t1d <<<"$(ts_of "$out" "$mnt1")"
read -r t2a t2b t2c t2d <<<"$(ts_of "$out" "$mnt2")"
[ -n "${t1d:-}" ] && [ -n "${t2d:-}" ] && [ "$t2b" -le "$t1a" ]
ok $? "child's FIFREEZE returned before the parent's started ($t2b <= $t1a)"
[ -n "${t1d:-}" ] && [ -n "${t2d:-}" ] && [ "$t1c" -le "$t2c" ]
ok $? "child thawed after the parent ($t1c <= $t2c)"
read -r tb tf ta <<<"$(sed -n 's/^threads before=\([0-9]*\) frozen=\([0-9]*\) after=\([0-9]*\)$/\1 \2 \3/p' <<<"$out")"
[ -n "${ta:-}" ] && [ "$tf" -eq $((ta + 1)) ] && [ "$ta" -ge "$tb" ]
ok $? "one pool thread for the widest level (two), none once thawed"

# One of two parallel freezes fails: the other is thawed again.
fsfreeze -f "$mnt3" || bail "fsfreeze -f $mnt3 failed"
out=$(drv freeze "$mnt1" "$mnt3")
rc=$?
echo "$out" | diag
[ $rc -ne 0 ] && [[ "$out" == *"error AlreadyFrozen "* ]]
ok $? "a failing freeze beside a successful one fails"
grep -qx "after-rollback $mnt1 released" <<<"$out" && grep -qx "after-rollback $mnt3 released" <<<"$out" &&
	grep -qx "rollback-ts frozen_at>0=1 thawed_at>0=1 $mnt1" <<<"$out" &&
	grep -qx "rollback-ts frozen_at>0=0 thawed_at>0=0 $mnt3" <<<"$out"
ok $? "the sibling it froze was thawed again, the other not claimed"
write_completes "$mnt1/parallel-rolled-back"
ok $? "the sibling accepts writes"
write_blocks "$mnt3/still-frozen"
ok $? "the filesystem frozen by someone else stays frozen"
w4=${last_writer:-}
fsfreeze -u "$mnt3"
[ -n "$w4" ] && writer_finishes "$w4"
ok $? "its writer finishes after our fsfreeze -u"

# ---- thaw attempts every filesystem even when one fails ----

out=$(drv thaw-partial "$mnt1" "$mnt2" "$mnt3")
rc=$?
echo "$out" | diag
grep -q "^thaw rc=-1 code=ThawFailed$" <<<"$out"
ok $? "thaw reports the failure"
[ "$(grep -c '^state .* thawed$' <<<"$out")" -eq 2 ] && [ "$(grep -c '^state .* frozen$' <<<"$out")" -eq 1 ]
ok $? "the other two were thawed anyway"
[ $rc -eq 0 ] && grep -qx "retry rc=0 any_frozen=0" <<<"$out"
ok $? "a second thaw gets the last one"
write_completes "$mnt1/p1" && write_completes "$mnt2/p2" && write_completes "$mnt3/p3"
ok $? "all three accept writes"

# ---- the watchdog thaws only what we froze ----

# Waits up to 15 s for process $1 to go away (a watchdog reparented to init).
gone() {
	for _ in $(seq 150); do
		[ -e "/proc/$1" ] || return 0
		[ "$(cut -d' ' -f3 "/proc/$1/stat" 2>/dev/null)" = Z ] && return 0 # not reaped yet
		sleep 0.1
	done
	return 1
}

# The normal case: a helper stuck while frozen, then one that dies.
out=$(drv watchdog deadline none "$mnt1" "$mnt3" 2>&1)
rc=$?
echo "$out" | diag
[ $rc -eq 0 ] && grep -qx "freeze rc=0 code=-" <<<"$out" &&
	[ "$(grep -c '^after-freeze .* frozen claimed=1$' <<<"$out")" -eq 2 ]
ok $? "watchdog, stuck helper: both frozen and claimed"
[ "$(grep -c '^after-thaw .* found_thawed=1 claimed=0$' <<<"$out")" -eq 2 ] &&
	grep -qx "watchdog_thawed=1" <<<"$out" && grep -q "(2 thawed, 0 already thawed, 0 left alone" <<<"$out"
ok $? "the watchdog thawed both at its deadline"
write_completes "$mnt1/wd1" && write_completes "$mnt3/wd3"
ok $? "both accept writes"

out=$(drv watchdog death none "$mnt1" "$mnt3" 2>&1)
rc=$?
echo "$out" | diag
wdpid=$(sed -n 's/^watchdog pid \([0-9]*\)$/\1/p' <<<"$out")
[ $rc -eq 137 ] && grep -qx dying <<<"$out" && [ -n "$wdpid" ] && gone "$wdpid" &&
	grep -q "because the helper died while they were frozen (2 thawed" <<<"$out"
ok $? "watchdog, helper killed while frozen: it thawed both and exited"
write_completes "$mnt1/wd1b" && write_completes "$mnt3/wd3b"
ok $? "both accept writes"

# Someone else froze mnt3 first: our FIFREEZE gets EBUSY, and the rollback's
# thaw of mnt1 fails (injected), so the watchdog has to step in.
fsfreeze -f "$mnt3" || bail "fsfreeze -f $mnt3 failed"
out=$(drv watchdog deadline foreign "$mnt1" "$mnt3" 2>&1)
rc=$?
echo "$out" | diag
grep -qx "freeze rc=-1 code=AlreadyFrozen" <<<"$out" &&
	grep -qx "after-freeze $mnt1 frozen claimed=1" <<<"$out" &&
	grep -qx "after-freeze $mnt3 released claimed=0" <<<"$out"
ok $? "foreign freeze: EBUSY not claimed, ours still frozen after the failed rollback"
grep -qx "watchdog_thawed=1" <<<"$out" && grep -q "(1 thawed, 0 already thawed, 1 left alone" <<<"$out"
ok $? "the watchdog thawed ours at its deadline and left the foreign one alone"
write_completes "$mnt1/wd-ours"
ok $? "ours accepts writes"
write_blocks "$mnt3/wd-foreign"
ok $? "the one frozen by someone else is still frozen"
w5=${last_writer:-}

out=$(drv watchdog death foreign "$mnt1" "$mnt3" 2>&1)
rc=$?
echo "$out" | diag
wdpid=$(sed -n 's/^watchdog pid \([0-9]*\)$/\1/p' <<<"$out")
[ $rc -eq 137 ] && grep -qx "after-freeze $mnt1 frozen claimed=1" <<<"$out" &&
	grep -qx "after-freeze $mnt3 released claimed=0" <<<"$out" && [ -n "$wdpid" ] &&
	gone "$wdpid" && grep -q "because the helper died while they were frozen (1 thawed, 0 already thawed, 1 left alone" <<<"$out"
ok $? "foreign freeze, helper killed: the watchdog thawed ours only"
write_completes "$mnt1/wd-ours2"
ok $? "ours accepts writes"
[ -n "$w5" ] && kill -0 "$w5" 2>/dev/null
ok $? "the one frozen by someone else is still frozen (its writer still blocked)"
fsfreeze -u "$mnt3"
[ -n "$w5" ] && writer_finishes "$w5"
ok $? "its writer finishes after our fsfreeze -u"

# ---- recovery from the frozen marker thaws only what we froze ----

# Helper and watchdog both SIGKILLed while frozen; someone else had frozen
# mnt3 first (our FIFREEZE: EBUSY).  state_dir on a tmpfs, as /run is.
state="$tmp/state"
mkdir "$state" || bail "mkdir $state failed"
mount -t tmpfs -o size=1m,mode=0700 amis-test-state "$state" || bail "tmpfs $state failed"
mounts+=("$state")
fsfreeze -f "$mnt3" || bail "fsfreeze -f $mnt3 failed"
out=$(drv marker-death "$state" foreign "$mnt1" "$mnt3" 2>&1)
rc=$?
echo "$out" | diag
[ $rc -eq 137 ] && grep -qx "after-freeze $mnt1 frozen claimed=1" <<<"$out" &&
	grep -qx "after-freeze $mnt3 released claimed=0" <<<"$out" && grep -qx "watchdog killed; dying" <<<"$out"
ok $? "marker: helper and watchdog killed, ours frozen and claimed, the foreign one not"
[ -f "$state/frozen" ] && [ "$(stat -c %s "$state/frozen.claims" 2>/dev/null)" = 4096 ] &&
	grep -q "^claims " "$state/frozen" && [ ! -e "$state/frozen.tmp" ] && [ ! -e "$state/frozen.claims.tmp" ]
ok $? "marker: the marker names its claims file, which is one page"
sed 's/^/# marker: /' "$state/frozen"
write_blocks "$mnt1/m-ours"
ok $? "marker: ours stays frozen with nobody left to thaw it"
w6=${last_writer:-}
out=$(drv recover "$state" 2>&1)
rc=$?
echo "$out" | diag
[ $rc -eq 0 ] && grep -qx "recover rc=0" <<<"$out" && grep -q "THAWED $mnt1 " <<<"$out" &&
	grep -q "leaving \".* $mnt3\" alone" <<<"$out" && ! grep -q "THAWED $mnt3 " <<<"$out"
ok $? "marker: recovery thawed ours and left the foreign freeze alone"
[ -n "$w6" ] && writer_finishes "$w6" && write_completes "$mnt1/m-ours2"
ok $? "marker: ours accepts writes again"
write_blocks "$mnt3/m-foreign"
ok $? "marker: the one frozen by someone else is still frozen"
w7=${last_writer:-}
[ ! -e "$state/frozen" ] && [ ! -e "$state/frozen.claims" ]
ok $? "marker: marker and claims file removed"
fsfreeze -u "$mnt3"
[ -n "$w7" ] && writer_finishes "$w7"
ok $? "marker: the foreign one's writer finishes after our fsfreeze -u"

# The same without the claims file (state_dir on a plain directory this
# time): recovery falls back to thawing everything the marker lists.
state2="$tmp/state2"
fsfreeze -f "$mnt3" || bail "fsfreeze -f $mnt3 failed"
out=$(drv marker-death "$state2" foreign "$mnt1" "$mnt3" 2>&1)
rc=$?
echo "$out" | diag
[ $rc -eq 137 ] && grep -qx "after-freeze $mnt1 frozen claimed=1" <<<"$out" && [ -f "$state2/frozen.claims" ]
ok $? "no claims: killed while frozen, claims file written"
rm -f "$state2/frozen.claims"
out=$(drv recover "$state2" 2>&1)
rc=$?
echo "$out" | diag
[ $rc -eq 0 ] && grep -q "frozen.claims is missing: thawing everything it lists" <<<"$out" &&
	grep -q "THAWED $mnt1 " <<<"$out" && grep -q "THAWED $mnt3 " <<<"$out"
ok $? "no claims: recovery thawed everything listed, the foreign one too (old behaviour)"
write_completes "$mnt1/m-nc1" && write_completes "$mnt3/m-nc3"
ok $? "no claims: both accept writes"
[ ! -e "$state2/frozen" ]
ok $? "no claims: the marker removed"

# A claims file of another marker (stale token) counts as none.
out=$(drv marker-death "$state2" none "$mnt1" "$mnt3" 2>&1)
rc=$?
echo "$out" | diag
[ $rc -eq 137 ] && [ "$(grep -c '^after-freeze .* frozen claimed=1$' <<<"$out")" -eq 2 ]
ok $? "wrong claims: killed with both frozen"
sed -i 's/^claims .*/claims 0123456789abcdef/' "$state2/frozen"
out=$(drv recover "$state2" 2>&1)
rc=$?
echo "$out" | diag
[ $rc -eq 0 ] && grep -q "belongs to another marker: thawing everything" <<<"$out" &&
	grep -q "THAWED $mnt1 " <<<"$out" && grep -q "THAWED $mnt3 " <<<"$out" &&
	[ ! -e "$state2/frozen" ] && [ ! -e "$state2/frozen.claims" ]
ok $? "wrong claims: recovery thawed both and removed marker and claims"
write_completes "$mnt1/m-wc1" && write_completes "$mnt3/m-wc3"
ok $? "wrong claims: both accept writes"

# ---- a mount point that changed after resolving is refused ----

out=$(drv mount-swap "$mnt3")
rc=$?
echo "$out" | diag
[ $rc -ne 0 ] && [[ "$out" == *"error MountChanged "* ]] && grep -qx "any_frozen=0" <<<"$out"
ok $? "a tmpfs mounted over the resolved mount point: MountChanged, nothing frozen"
[ "$(findmnt -no FSTYPE "$mnt3")" = ext4 ]
ok $? "the driver removed its tmpfs again"

finish
