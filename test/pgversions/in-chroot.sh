#!/bin/bash
# test/pgversions/in-chroot.sh ROOT DIRS COMMAND... - runs COMMAND inside the
# chroot ROOT (made by chroot.sh), with each directory of DIRS (a
# colon-separated list of host directories under /var/tmp) visible at the
# same path inside.
#
# Every call gets a mount namespace of its own: /proc, a fresh /dev/shm and
# /var/tmp (tmpfs) and the bind mounts of DIRS (recursive: the loop
# filesystems mounted under them come along) exist only there, and the
# kernel removes them when the last process of the namespace exits, also
# when the caller dies.  Nothing is mounted on the host and nothing in
# ROOT changes.  Loop devices, host mounts and FIFREEZE stay outside: this
# only lets the chroot's binaries see the same files.  A mount made on the
# host after the call started is not seen by it (the host's / is private);
# a PostgreSQL server started by pg_ctl lives in the namespace of that
# pg_ctl call.
#
# Needs root.  To run as postgres, COMMAND is "runuser -u postgres -- ...".
set -eu

if [ $# -lt 3 ]; then
	echo "usage: $0 ROOT DIR[:DIR...] COMMAND..." >&2
	exit 2
fi
root=$1
dirs=$2
shift 2
if [ ! -x "$root/bin/sh" ]; then
	echo "in-chroot: $root is not a chroot" >&2
	exit 2
fi
IFS=: read -r -a dirlist <<<"$dirs"
for d in "${dirlist[@]}"; do
	case "$d" in
	/var/tmp/?*) ;;
	*)
		echo "in-chroot: $d: only directories under /var/tmp can be shared" >&2
		exit 2
		;;
	esac
	[ -d "$d" ] || {
		echo "in-chroot: $d is not a directory" >&2
		exit 2
	}
done

# shellcheck disable=SC2016
exec unshare --mount --propagation private -- /bin/bash -c '
set -e
root=$1
shift
mount -t proc proc "$root/proc"
mkdir -p "$root/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/dev/shm"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$root/var/tmp"
while [ "$1" != -- ]; do
	mkdir -p "$root$1"
	mount --rbind "$1" "$root$1"
	shift
done
shift
exec chroot "$root" "$@"
' in-chroot "$root" "${dirlist[@]}" -- "$@"
