# ami_snapshot: the PostgreSQL extension (PGXS) and the helper daemon.
#
#   make                  build both
#   sudo make install     install the extension, the helper, its systemd
#                         unit and an example configuration
#   sudo test/run-all.sh  all tests (see README: needs root, loop devices)
#   make bench            benchmarks (see README)
#   make fuzz             build the libFuzzer targets (clang) and run each
#                         for FUZZ_SECONDS (default 300); see test/fuzz/

MODULE_big = ami_snapshot
OBJS = extension/ami_snapshot.o extension/helper_client.o extension/history.o \
       extension/protocol.o
EXTENSION = ami_snapshot
DATA = sql/ami_snapshot--1.0.sql
PGFILEDESC = "ami_snapshot - consistent EBS snapshots of a running PostgreSQL"

REGRESS = ami_snapshot_sql
REGRESS_OPTS = --inputdir=test --outputdir=test/results --load-extension=ami_snapshot

PG_CPPFLAGS = -Ihelper
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
extension/protocol.o: helper/protocol.c helper/protocol.h
	$(CC) $(CFLAGS) $(CPPFLAGS) -c -o $@ $<
extension/protocol.bc: helper/protocol.c helper/protocol.h
	$(COMPILE.c.bc) -o $@ $<

extension/ami_snapshot.o extension/helper_client.o extension/history.o: \
	helper/protocol.h extension/helper_client.h extension/history.h

prefix_sbin ?= /usr/sbin
sysconfdir ?= /etc
systemdunitdir ?= /lib/systemd/system

all: helper-all
helper-all:
	$(MAKE) -C helper WERROR=$(WERROR)

install: install-helper
install-helper: helper-all
	install -d $(DESTDIR)$(prefix_sbin) $(DESTDIR)$(sysconfdir)/ami-snapshot \
		$(DESTDIR)$(systemdunitdir)
	install -m 0755 helper/ami-snapshot-helper $(DESTDIR)$(prefix_sbin)/
	install -m 0644 packaging/ami-snapshot-helper.service $(DESTDIR)$(systemdunitdir)/
	test -e $(DESTDIR)$(sysconfdir)/ami-snapshot/helper.conf || \
		install -m 0640 packaging/helper.conf.example \
			$(DESTDIR)$(sysconfdir)/ami-snapshot/helper.conf
	install -m 0644 packaging/helper.conf.example $(DESTDIR)$(sysconfdir)/ami-snapshot/
	# The EC2 worker's own system user (worker_user in the example config).
	test -n "$(DESTDIR)" || getent passwd ami-snapshot >/dev/null || \
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin ami-snapshot

clean: helper-clean
helper-clean:
	$(MAKE) -C helper clean
	rm -rf test/results

# Benchmarks (root, loop devices; see README "Performance"): the freeze
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

# Fuzzing (clang, libFuzzer + ASan/UBSan): the helper's parsers of what it
# reads from clients, EC2, IMDS and its files.  Builds into build/fuzz/.
FUZZ_SECONDS ?= 300
fuzz:
	$(MAKE) -C test/fuzz
	test/fuzz/run.sh $(FUZZ_SECONDS)

.PHONY: helper-all helper-clean install-helper bench fuzz
