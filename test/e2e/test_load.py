#!/usr/bin/python3
"""
Load: 20 consecutive ami_snapshot() calls while pgbench runs 8 clients.
Zero failed transactions, nothing left frozen, every call succeeded and is
in the history; a sample snapshot set is restored and verified (crash
recovery, pgbench's invariant, amcheck).
"""

import os
import re
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import PGBIN, World  # noqa: E402
from restore import Restored  # noqa: E402

RUNS = 20
# pgbench runs a fixed time (runuser does not pass signals on, and pgbench
# prints no summary when interrupted): long enough for the 20 calls.
LOAD_SECONDS = 45


def main():
    w = World()
    restored = None
    try:
        w.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port), "-i",
                       "-s", "4", "--tablespace=ts1", "-q", "bench"])
        bench = subprocess.Popen(
            w.pg_cmd([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun,
                      "-p", str(w.port), "-c", "8", "-j", "2", "-T", str(LOAD_SECONDS), "bench"]),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        results = []
        t0 = time.time()
        try:
            for i in range(RUNS):
                r = w.psql("SELECT status, array_to_string(snapshot_ids, ','), frozen_ms "
                           "FROM ami_snapshot('load run %02d')" % i, check=False)
                if r.returncode != 0:
                    results.append(("error", r.stderr.strip(), None))
                else:
                    st, snaps, frozen = r.stdout.strip().split("|")
                    results.append((st, snaps, float(frozen)))
                if w.frozen_mounts():
                    break
        finally:
            elapsed = time.time() - t0
            out, _ = bench.communicate(timeout=LOAD_SECONDS + 60)
        ok(elapsed < LOAD_SECONDS, "all %d calls ran while pgbench was writing (%.0f s)"
           % (RUNS, elapsed))
        good = [r for r in results if r[0] == "succeeded"]
        is_(len(good), RUNS, "%d consecutive snapshots under load all succeeded" % RUNS)
        for r in results:
            if r[0] != "succeeded":
                diag("failed: %s" % r[1])
        frozen = sorted(r[2] for r in good)
        if frozen:
            diag("frozen ms: median %.1f, max %.1f" % (frozen[len(frozen) // 2], frozen[-1]))
        ok(w.frozen_mounts() == [], "no filesystem left frozen")
        failed = re.search(r"number of failed transactions: (\d+)", out)
        processed = re.search(r"number of transactions actually processed: (\d+)", out)
        diag("pgbench: %s processed" % (processed.group(1) if processed else "?"))
        is_(failed.group(1) if failed else None, "0", "pgbench: zero failed transactions")
        is_(w.psql("SELECT count(*) FROM ami_snapshot_history WHERE name LIKE 'load run %' "
                   "AND status = 'succeeded'"), str(RUNS), "the history has every run")

        sample = good[RUNS // 2][1].split(",")
        restored = Restored(w, sample)
        restored.start()
        inv = restored.psql(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = "
            "(SELECT coalesce(sum(delta), 0) FROM pgbench_history) AND "
            "(SELECT sum(tbalance) FROM pgbench_tellers) = "
            "(SELECT sum(bbalance) FROM pgbench_branches)", db="bench")
        is_(inv, "t", "restored sample (run %d): pgbench's invariant holds" % (RUNS // 2))
        am = subprocess.run(w.pg_cmd([os.path.join(PGBIN, "pg_amcheck"), "-h", w.pgrun,
                                      "-p", str(restored.port), "--all", "--heapallindexed",
                                      "--install-missing"]), capture_output=True, text=True)
        is_(am.returncode, 0, "restored sample: amcheck finds no corruption")
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        if restored:
            restored.close()
        w.close()
    done()


if __name__ == "__main__":
    main()
