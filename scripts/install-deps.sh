#!/bin/bash
# Installs the Debian 12 packages needed to build, test and benchmark
# ami_snapshot.  Idempotent: does nothing when everything is there.
set -eu

PACKAGES=(
	# build
	gcc make pkg-config
	postgresql-15 postgresql-client-15 postgresql-server-dev-15 postgresql-15-cron
	libcurl4-openssl-dev libssl-dev libxml2-dev libjson-c-dev libinih-dev
	# tests: loop filesystems, the emulator (botocore verifies SigV4)
	util-linux e2fsprogs xfsprogs python3 python3-botocore perl
	# tests on other PostgreSQL majors: Debian chroots (test/pgversions/)
	mmdebstrap
	# the Debian packages (debian/, test/packages/)
	dpkg-dev debhelper postgresql-server-dev-all lintian
	# fuzzing and sanitizers; the helper's style check
	clang libclang-rt-14-dev clang-format
	# benchmarks: the AWS CLI as a baseline, plots
	awscli python3-matplotlib
)

missing=()
for p in "${PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	echo "installing: ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
