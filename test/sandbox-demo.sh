#!/bin/bash
# test/sandbox-demo.sh - the main job in the built-in local sandbox.
#
# Installs the dependencies, builds and installs ami_snapshot, then builds a
# throw-away "EC2 instance" on this machine (loop-device filesystems, a real
# PostgreSQL 15, the real helper daemon, the local EC2/IMDS emulator), runs
#
#     SELECT * FROM ami_snapshot('nightly');
#
# while pgbench and a marker writer commit, restores the snapshot set with
# `ami-snapshot restore` (new volumes from the emulator, loop devices,
# mounted under the sandbox), starts PostgreSQL on it (crash recovery) and
# checks the data.  It ends with a summary, one PASS or FAIL per check, and exits
# non-zero if any failed.  Everything is removed at the end.  Needs root.
set -eu
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run $0 as root" >&2; exit 1; }
scripts/install-deps.sh
make WERROR=1 >/dev/null
make install >/dev/null
exec /usr/bin/python3 test/lib/demo.py "$@"
