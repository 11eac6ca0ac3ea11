#!/bin/sh
# test/lib/private-pg.sh DIR - a private copy of the host's PostgreSQL under
# DIR with this tree's extension installed into it (make install
# DESTDIR=DIR), for a long run (the fault campaign) that must not share the
# system's extension with other runs installing theirs meanwhile.  Prints
# the line to export: AMIS_PGBIN=DIR/.../bin, which test/lib/world.py uses
# instead of pg_config's.  PostgreSQL finds its share and lib directories
# relative to its binaries, so the copy runs from anywhere.  Needs root for
# nothing; DIR is replaced.
set -eu
if [ $# -ne 1 ] || [ -z "$1" ] || [ "$1" = / ]; then
	echo "usage: $0 DIR" >&2
	exit 2
fi
dir=$1
top=$(cd "$(dirname "$0")/../.." && pwd)
bindir=$(pg_config --bindir)
sharedir=$(pg_config --sharedir)
pkgdir=$(dirname "$bindir")
rm -rf "$dir"
mkdir -p "$dir$(dirname "$pkgdir")" "$dir$(dirname "$sharedir")"
cp -a "$pkgdir" "$dir$(dirname "$pkgdir")/"
cp -a "$sharedir" "$dir$(dirname "$sharedir")/"
make -C "$top" -s install DESTDIR="$dir" >"$dir/install.log" 2>&1 || {
	tail -20 "$dir/install.log" >&2
	exit 1
}
test -f "$dir$sharedir/extension/ami_snapshot.control"
test "$("$dir$bindir/pg_config" --sharedir)" = "$dir$sharedir"
echo "AMIS_PGBIN=$dir$bindir"
