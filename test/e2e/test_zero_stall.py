#!/usr/bin/python3
"""
Zero-stall backups, proven: snapshot sets taken with freeze => false and
with the freeze, alternately, under heavy mixed writes (pgbench, a bulk
COPY, CREATE INDEX, VACUUM, CHECKPOINT: test/lib/zerostall.py), in two
sandboxes whose data directory, pg_wal and tablespace are on separate
filesystems of both kinds (ext4/XFS/ext4, then XFS/ext4/XFS).  The emulator
takes each set at one instant, as EBS does (its store frozen while it reads
the images).  Every set is restored: PostgreSQL starts by crash recovery,
every marker row committed before the call is there, pgbench's invariant
holds, every bulk COPY is whole, amcheck is clean.  A file written outside
WAL without fsync just before each call must be in every set taken with the
freeze; how many sets without it hold it is reported (that is what the
freeze is still for: doc/design.md).

The negative control proves the checks can fail: sets copied non-atomically
(the emulator's set_copy = nonatomic: the pg_wal volume first, a pause
under writes, then the data and tablespace volumes) must be caught in at
least one run.  That order is the one a crash can never produce and
recovery cannot repair: the data directory (pg_control, pg_xact, pages)
is later than the WAL, so it can point at a checkpoint, or hold
transactions, the WAL does not have.  (The other order, data first, is a
base backup without its label: recovery would replay the later WAL over
it and mostly succeed, proving nothing.)

AMIS_ZS_SETS (default 6) sets of each kind in all, AMIS_ZS_CONTROL (default
2) control sets per sandbox; make torture runs 50 + 50 and 5 + 5.
"""

import os
import statistics
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import World  # noqa: E402
import zerostall as zs  # noqa: E402

SETS = int(os.environ.get("AMIS_ZS_SETS", "6"))
CONTROL = int(os.environ.get("AMIS_ZS_CONTROL", "2"))
CONTROL_PAUSE_MS = int(os.environ.get("AMIS_ZS_CONTROL_PAUSE_MS", "3000"))
LAYOUTS = [[("data", "ext4"), ("wal", "xfs"), ("ts1", "ext4")],
           [("data", "xfs"), ("wal", "ext4"), ("ts1", "xfs")]]

results = {"normal": [], "control": []}


def run_world(layout, n_sets):
    kinds = "/".join(fs for _, fs in layout)
    w = World(layout=layout)
    workload = None
    try:
        zs.setup(w)
        if layout == LAYOUTS[0]:
            check_default_setting(w)
        workload = zs.Workload(w)
        deadline = time.time() + 60
        while not workload.running() and time.time() < deadline:
            time.sleep(0.5)
        ok(workload.running(), "%s: every writer is running" % kinds, workload.rounds)
        sets = []
        for i in range(n_sets):
            for freeze in (False, True):
                sets.append(zs.take_set(w, "zs %s %s %03d" % (kinds.replace("/", "-"),
                                                               "frozen" if freeze else "live", i),
                                        freeze))
                time.sleep(0.3)
        # The negative control, under the same writes.
        wal = w.volume("wal").vol_id
        w.emulator_control({"set_copy": "nonatomic", "nonatomic_first": [wal],
                            "nonatomic_pause_ms": CONTROL_PAUSE_MS})
        controls = []
        try:
            for i in range(CONTROL):
                controls.append(zs.take_set(w, "zs control %03d" % i, False))
                time.sleep(0.3)
        finally:
            w.emulator_control({"set_copy": "instant"})
        workload.stop()
        diag("%s: writers' rounds %s; errors %s" % (
            kinds, workload.rounds, {k: len(v) for k, v in workload.errors.items()}))
        for name, errs in workload.errors.items():
            for e in errs[:3]:
                diag("  %s: %s" % (name, e))
        ok(all(r > 1 for r in workload.rounds.values()),
           "%s: the writers ran throughout" % kinds)
        ok(w.frozen_mounts() == [], "%s: nothing left frozen" % kinds)

        for n, s in enumerate(sets):
            rec = zs.request_record(w, s)
            t0 = time.time()
            problems, started = zs.check_set(w, s, "r%d" % n)
            s.update(problems=problems, restore_s=started, check_s=time.time() - t0,
                     set_copy=rec.get("set_copy"), store_frozen_ms=rec.get("frozen_ms"),
                     layout=kinds)
            results["normal"].append(s)
            if s["freeze"]:
                ok(s["outside_wal_intact"], "%s: %s: the file written outside WAL without "
                   "fsync just before the call is in the set" % (kinds, s["name"]))
            ok(not problems and rec.get("set_copy") == "instant",
               "%s: %s (set at one instant, %d marks before): restored clean"
               % (kinds, s["name"], s["before"]),
               "\n".join(problems + ["set_copy %s" % rec.get("set_copy")]))
            zs.delete_set(w, s)
        for n, s in enumerate(controls):
            rec = zs.request_record(w, s)
            problems, started = zs.check_set(w, s, "c%d" % n)
            s.update(problems=problems, set_copy=rec.get("set_copy"), layout=kinds)
            results["control"].append(s)
            is_(rec.get("set_copy"), "nonatomic", "%s: %s copied non-atomically"
                % (kinds, s["name"]))
            diag("%s: %s: %s" % (kinds, s["name"], "; ".join(p.splitlines()[0] for p in problems)
                                 if problems else "not caught"))
            zs.delete_set(w, s)
    finally:
        if workload:
            workload.stop()
        w.close()


def check_default_setting(w):
    """ami_snapshot() without freeze follows ami_snapshot.default_freeze:
    off by ALTER SYSTEM (nothing frozen), on again once reset."""
    for value, frozen in (("off", False), (None, True)):
        # ALTER SYSTEM knows the setting once the library is loaded in the
        # session (PostgreSQL 15 and 16 refuse an unknown one): LOAD first,
        # as doc/sql.md says.
        w.as_postgres(w.psql_cmd() + [
            "-c", "LOAD 'ami_snapshot'",
            "-c", "ALTER SYSTEM %s" % ("SET ami_snapshot.default_freeze = off" if value
                                       else "RESET ami_snapshot.default_freeze"),
            "-c", "SELECT pg_reload_conf()"])
        time.sleep(0.5)
        name = "zs default %s" % (value or "reset")
        got = w.psql("SELECT frozen_ms > 0, array_to_string(snapshot_ids, ',') "
                     "FROM ami_snapshot('%s')" % name).split("|")
        with_freeze = w.psql("SELECT with_freeze FROM ami_snapshot_history WHERE name = '%s'"
                             % name)
        is_([got[0], with_freeze], ["t" if frozen else "f"] * 2,
            "ami_snapshot() without freeze, default_freeze %s: %s" % (
                value or "reset (on)", "frozen" if frozen else "nothing frozen"))
        zs.delete_set(w, {"snapshots": got[1].split(",")})


def report():
    normal = results["normal"]
    for freeze in (False, True):
        got = [s for s in normal if s["freeze"] is freeze]
        if not got:
            continue
        restore = [s["restore_s"] for s in got if s["restore_s"] is not None]
        calls = [s["call_s"] for s in got]
        store = [s["store_frozen_ms"] for s in got if s["store_frozen_ms"] is not None]
        diag("freeze => %s: %d sets, %d clean; call median %.2f s max %.2f s; "
             "frozen_ms (PostgreSQL's filesystems) median %.1f; store frozen (the test's "
             "cost) median %.0f ms max %.0f ms; restore to a started server median %.1f s "
             "max %.1f s" % (
                 "true" if freeze else "false", len(got),
                 sum(1 for s in got if not s["problems"]), statistics.median(calls), max(calls),
                 statistics.median(s["frozen_ms"] for s in got),
                 statistics.median(store) if store else -1, max(store) if store else -1,
                 statistics.median(restore) if restore else -1,
                 max(restore) if restore else -1))
        if not freeze:
            diag("freeze => false: the file written outside WAL without fsync just before "
                 "the call intact in %d of %d sets" % (
                     sum(1 for s in got if s.get("outside_wal_intact")), len(got)))
    caught = [s for s in results["control"] if s["problems"]]
    diag("negative control: %d of %d non-atomic sets caught" % (len(caught),
                                                                  len(results["control"])))


def main():
    try:
        per_world = [SETS // len(LAYOUTS) + (1 if i < SETS % len(LAYOUTS) else 0)
                     for i in range(len(LAYOUTS))]
        for layout, n in zip(LAYOUTS, per_world):
            run_world(layout, n)
        is_(len(results["normal"]), 2 * SETS, "%d sets with freeze => false and %d with the "
            "freeze were taken and checked" % (SETS, SETS))
        caught = [s for s in results["control"] if s["problems"]]
        ok(len(caught) >= 1, "negative control: the checks caught %d of %d non-atomic sets"
           % (len(caught), len(results["control"])))
        report()
    except Exception as e:
        bail(e)
    done()


if __name__ == "__main__":
    main()
