# ami_snapshot: the PostgreSQL extension (PGXS) and the helper daemon.
#
#   make                  build both
#   make WITH_HELPER=0    the extension only (e.g. for another PostgreSQL
#                         major with PG_CONFIG=...; see doc/platforms.md)
#   make install          (as root) install the extension, the helper, its
#                         systemd unit, the restore command (ami-snapshot),
#                         the pre-migration wrapper (ami-snapshot-before), an
#                         example configuration, the manual pages and the docs;
#                         DESTDIR=dir stages everything under dir
#   test/run-all.sh       (as root) all tests (see doc/testing.md: loop devices)
#   make bench            benchmarks (see doc/performance.md)
#   make bench-ami        the freeze window of a snapshot set vs the AMI
#                         methods (the last step of make bench)
#   make bench-verify     a restore drill's phases and production's pgbench
#                         latency during one (also a step of make bench)
#   make bench-standby    the primary's pgbench latency while its hot standby
#                         is snapshotted (also a step of make bench)
#   make torture          (as root) zero-stall backups proven: TORTURE_SETS sets
#                         with freeze => false and as many with the freeze
#                         under heavy writes, each restored and checked, and
#                         a negative control (test/e2e/test_zero_stall.py)
#   make bench-zerostall  pgbench's latency with no snapshot, with freeze =>
#                         false and with the freeze; the restore times
#   make chaos            (as root) a randomized fault campaign: SEED=, RUNS=,
#                         RESTORE_EVERY= (test/chaos/, doc/testing.md)
#   make soak             (as root) SOAK_CALLS consecutive calls, memory and
#                         descriptors of the helper and its worker sampled
#   make fuzz             build the libFuzzer targets (clang) and run each
#                         for FUZZ_SECONDS (default 300); see test/fuzz/

MODULE_big = ami_snapshot
OBJS = extension/ami_snapshot.o extension/check.o extension/config_capture.o \
       extension/helper_client.o extension/history.o extension/lifecycle.o \
       extension/protocol.o extension/standby.o extension/verify.o
EXTENSION = ami_snapshot
DATA = $(wildcard sql/ami_snapshot--*.sql)
PGFILEDESC = "ami_snapshot - consistent EBS snapshots of a running PostgreSQL"

REGRESS = ami_snapshot_sql ami_snapshot_verify ami_snapshot_lifecycle ami_snapshot_check \
          ami_snapshot_upgrade
REGRESS_OPTS = --inputdir=test --outputdir=test/results --load-extension=ami_snapshot

# The extension's version (ami_snapshot.control) for the library's magic
# block (PostgreSQL 18: pg_get_loaded_modules()).
EXTVERSION := $(shell sed -n "s/^default_version = '\(.*\)'$$/\1/p" ami_snapshot.control)
PG_CPPFLAGS = -Ihelper/common -I$(libpq_srcdir) -DAMIS_EXTVERSION='"$(EXTVERSION)"'
# libpq: on a hot standby, the primary is asked whether it waits on it
# (extension/standby.c), as contrib/dblink links it.
SHLIB_LINK_INTERNAL = $(libpq)
# -Wextra on top of the server's warning flags, without the classes that
# PostgreSQL's own headers trip.
PG_CFLAGS = -Wextra -Wno-unused-parameter -Wno-sign-compare -Wno-missing-field-initializers
ifeq ($(WERROR),1)
PG_CFLAGS += -Werror
endif

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

# The protocol code is shared with the helper but built with the server's flags.
extension/protocol.o: helper/common/protocol.c helper/common/protocol.h
	$(CC) $(CFLAGS) $(CPPFLAGS) -c -o $@ $<
extension/protocol.bc: helper/common/protocol.c helper/common/protocol.h
	$(COMPILE.c.bc) -o $@ $<

extension/ami_snapshot.o extension/check.o extension/config_capture.o extension/helper_client.o \
extension/history.o extension/verify.o extension/lifecycle.o extension/standby.o: \
	helper/common/protocol.h extension/ami_snapshot.h extension/standby.h extension/config_capture.h extension/helper_client.h \
	extension/history.h extension/job.h

# Where the helper's files go.  These are names of our own: PGXS (included
# above) sets sysconfdir, docdir, bindir and the like from pg_config for
# PostgreSQL's files (on Debian, sysconfdir is /etc/postgresql-common), so a
# "sysconfdir ?= /etc" here would never apply.  The systemd unit is
# installed with these paths written into it, and the helper is built with
# $(helper_confdir)/helper.conf as its default configuration: unit, helper
# and files agree (test/unit/test_install.sh checks it).
prefix_sbin ?= /usr/sbin
# The pre-migration wrapper: run by whoever deploys, not root.
hook_bindir ?= /usr/bin
helper_confdir ?= /etc/ami-snapshot
helper_docdir ?= /usr/share/doc/ami-snapshot
systemdunitdir ?= /lib/systemd/system
helper_mandir ?= /usr/share/man
HELPER_MAKE = $(MAKE) -C helper WERROR=$(WERROR) HELPER_CONFIG=$(helper_confdir)/helper.conf
# packaging/ names the default paths; installed files name the real ones.
INSTALL_PATHS_SED = sed -e 's|/usr/sbin/ami-snapshot-helper|$(prefix_sbin)/ami-snapshot-helper|g' \
	-e 's|/etc/ami-snapshot/|$(helper_confdir)/|g' -e 's|/usr/share/doc/ami-snapshot/|$(helper_docdir)/|g'

# Where make install put the configuration before helper_confdir existed
# (PGXS's sysconfdir); nothing reads it.
old_confdir = $(sysconfdir)/ami-snapshot

WITH_HELPER ?= 1
ifeq ($(WITH_HELPER),1)
all: helper-all
install: install-helper
clean: helper-clean
endif

helper-all:
	$(HELPER_MAKE)

install-helper: helper-all
	install -d $(DESTDIR)$(prefix_sbin) $(DESTDIR)$(helper_confdir) \
		$(DESTDIR)$(systemdunitdir) $(DESTDIR)$(helper_docdir)/doc $(DESTDIR)$(helper_mandir)/man8 \
		$(DESTDIR)$(hook_bindir) $(DESTDIR)$(helper_mandir)/man1
	install -m 0755 helper/ami-snapshot-helper helper/ami-snapshot $(DESTDIR)$(prefix_sbin)/
	install -m 0755 packaging/ami-snapshot-before $(DESTDIR)$(hook_bindir)/
	install -m 0644 packaging/man/ami-snapshot-before.1 $(DESTDIR)$(helper_mandir)/man1/
	$(INSTALL_PATHS_SED) packaging/ami-snapshot-helper.service \
		>$(DESTDIR)$(systemdunitdir)/ami-snapshot-helper.service
	chmod 0644 $(DESTDIR)$(systemdunitdir)/ami-snapshot-helper.service
	$(INSTALL_PATHS_SED) packaging/helper.conf.example >$(DESTDIR)$(helper_confdir)/helper.conf.example
	chmod 0644 $(DESTDIR)$(helper_confdir)/helper.conf.example
	test -e $(DESTDIR)$(helper_confdir)/helper.conf || \
		install -m 0640 $(DESTDIR)$(helper_confdir)/helper.conf.example \
			$(DESTDIR)$(helper_confdir)/helper.conf
	install -m 0644 README.md $(DESTDIR)$(helper_docdir)/
	install -m 0644 doc/*.md doc/*.png $(DESTDIR)$(helper_docdir)/doc/
	$(INSTALL_PATHS_SED) packaging/man/ami-snapshot-helper.8 >$(DESTDIR)$(helper_mandir)/man8/ami-snapshot-helper.8
	chmod 0644 $(DESTDIR)$(helper_mandir)/man8/ami-snapshot-helper.8
	$(INSTALL_PATHS_SED) packaging/man/ami-snapshot.8 >$(DESTDIR)$(helper_mandir)/man8/ami-snapshot.8
	chmod 0644 $(DESTDIR)$(helper_mandir)/man8/ami-snapshot.8
	# What an earlier make install left in $(old_confdir): removed if it is
	# the example unchanged, otherwise reported.
	@d='$(DESTDIR)$(old_confdir)'; \
	if [ '$(old_confdir)' != '$(helper_confdir)' ] && [ -d "$$d" ]; then \
		if [ -f "$$d/helper.conf" ] && { cmp -s "$$d/helper.conf" "$$d/helper.conf.example" || \
				cmp -s "$$d/helper.conf" packaging/helper.conf.example; }; then \
			rm -f "$$d/helper.conf"; \
		fi; \
		rm -f "$$d/helper.conf.example"; \
		if rmdir "$$d" 2>/dev/null; then \
			echo "removed $$d, left by an earlier make install"; \
		else \
			echo "WARNING: $$d was left by an earlier make install and nothing reads it;" \
				"the helper reads $(helper_confdir)/helper.conf: move your settings there" \
				"and remove $$d" >&2; \
		fi; \
	fi
	# The EC2 worker's own system user (worker_user in the example config).
	test -n "$(DESTDIR)" || getent passwd ami-snapshot >/dev/null || \
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin ami-snapshot

helper-clean:
	$(MAKE) -C helper clean
clean: clean-test-results
clean-test-results:
	rm -rf test/results

# Benchmarks (root, loop devices; see doc/performance.md): the freeze
# window of ami_snapshot() against the fsfreeze + AWS CLI scripts, per EC2
# latency and volume count, the phases of one call, the helper's memory, and
# what pgbench feels.  Markdown on stdout; CSV files and a PNG in BENCH_OUT,
# the PNG also in doc/.  BENCH_RUNS snapshots per cell for ami_snapshot(),
# BENCH_BASELINE_RUNS for each script baseline (the AWS CLI is slow).
BENCH_OUT ?= test/bench/out
BENCH_RUNS ?= 20
BENCH_BASELINE_RUNS ?= 5
BENCH_PGBENCH_SECONDS ?= 60
bench: all
	test/bench/side_by_side.py --runs $(BENCH_RUNS) --baseline-runs $(BENCH_BASELINE_RUNS) \
		--latencies 0,50,200 --volumes 1,2,4,8 --pgbench-seconds $(BENCH_PGBENCH_SECONDS) \
		--out $(BENCH_OUT) --doc-png doc/bench-pgbench.png
	$(MAKE) bench-ami
	$(MAKE) bench-verify
	$(MAKE) bench-standby

# A restore drill (ami-snapshot verify): its duration by phase, and the
# production pgbench latency during a drill against without one
# (doc/performance.md, "A restore drill").
BENCH_VERIFY_RUNS ?= 3
BENCH_VERIFY_SECONDS ?= 20
BENCH_VERIFY_SCALE ?= 10
bench-verify: all
	test/bench/verify_drill.py --runs $(BENCH_VERIFY_RUNS) --seconds $(BENCH_VERIFY_SECONDS) \
		--scale $(BENCH_VERIFY_SCALE)

# The primary's pgbench while a hot standby is snapshotted, against no
# snapshot and against a synchronous standby (doc/performance.md, "A
# snapshot of a hot standby"); also a step of make bench.
BENCH_STANDBY_RUNS ?= 3
BENCH_STANDBY_SECONDS ?= 20
bench-standby: all
	test/bench/standby_pgbench.py --runs $(BENCH_STANDBY_RUNS) --seconds $(BENCH_STANDBY_SECONDS)

# The freeze window of a snapshot set against the two AMI methods
# (doc/performance.md, "AMIs: the freeze window of each method"); also on
# its own.
BENCH_AMI_RUNS ?= 10
bench-ami: all
	@mkdir -p $(BENCH_OUT)
	test/bench/ami_methods.py --runs $(BENCH_AMI_RUNS) --latencies 0,50 \
		--csv $(BENCH_OUT)/ami_methods.csv

# Zero-stall backups (doc/testing.md, "The zero-stall torture"; doc/performance.md).
TORTURE_SETS ?= 50
TORTURE_CONTROL ?= 5
torture: all
	AMIS_ZS_SETS=$(TORTURE_SETS) AMIS_ZS_CONTROL=$(TORTURE_CONTROL) test/e2e/test_zero_stall.py
ZEROSTALL_SECONDS ?= 30
ZEROSTALL_RESTORES ?= 3
bench-zerostall: all
	test/bench/zero_stall.py --seconds $(ZEROSTALL_SECONDS) --restores $(ZEROSTALL_RESTORES)

# The fault campaign and the soak (test/chaos/chaos.py; doc/testing.md,
# "The fault campaign").  The same SEED replays the same choices.
SEED ?= $(shell date +%s)
RUNS ?= 100
RESTORE_EVERY ?= 25
SOAK_CALLS ?= 1000
chaos: all
	test/chaos/chaos.py --seed $(SEED) --runs $(RUNS) --restore-every $(RESTORE_EVERY)
soak: all
	test/chaos/chaos.py --soak $(SOAK_CALLS)

# Fuzzing (clang, libFuzzer + ASan/UBSan): the helper's parsers of what it
# reads from clients, EC2, IMDS and its files.  Builds into build/fuzz/.
FUZZ_SECONDS ?= 300
fuzz:
	$(MAKE) -C test/fuzz
	test/fuzz/run.sh $(FUZZ_SECONDS)

.PHONY: helper-all helper-clean install-helper clean-test-results bench bench-ami bench-verify bench-standby fuzz chaos soak \
	torture bench-zerostall
