#!/usr/bin/python3
"""
standby_pgbench.py - what the primary's clients feel while a hot standby
is snapshotted (doc/performance.md, "A snapshot of a hot standby").

A primary in a plain directory and the World's cluster as its streaming
standby (test/lib/standby.py): the standby's data directory and pg_wal are
on the World's loop filesystems, the primary on none of them.  pgbench
(tpcb-like, 8 clients) runs on the primary for --seconds; in the middle,
one of:

  none      nothing (the baseline);
  standby   ami_snapshot() on the standby, asynchronous replication;
  sync      the same with the standby synchronous (synchronous_standby_names
            names it) and ami_snapshot.allow_synchronous_standby = on: what
            the refusal protects the primary from.

Each mode --runs times, alternating.  From pgbench's per-transaction log:
tps, failed transactions, p99 and max latency overall, and max latency of
the transactions that ended during the call or within 1 s after it (for
the baseline: the same window, 2 s from the middle).

    test/bench/standby_pgbench.py [--runs 3] [--seconds 20] [--scale 8] [--latency-ms 100]
                                                                         (as root)
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from world import PGBIN, World  # noqa: E402
from standby import APPNAME, StandbyPair  # noqa: E402
from benchlib import read_pgbench_logs  # noqa: E402

MODES = ("none", "standby", "sync")


def run_one(w, pair, mode, seconds, tag):
    logdir = os.path.join(w.pgrun, "pgbench-" + tag)
    os.makedirs(logdir)
    os.chown(logdir, w.pg_uid, w.pg_gid)
    if mode == "sync":
        pair.set_sync(APPNAME)
        pair.wait_sync_state("sync")
    bench = subprocess.Popen(
        w.pg_cmd([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(pair.port),
                  "-c", "8", "-j", "2", "-T", str(seconds), "--log",
                  "--log-prefix", os.path.join(logdir, "tx"), "bench"]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(seconds / 2.0)
    t0 = time.time()
    frozen_ms = None
    if mode == "none":
        window = (t0, t0 + 2.0)
    else:
        r = w.as_postgres(w.psql_cmd() + ["-c", "SET ami_snapshot.allow_synchronous_standby = on",
                                          "-c", "SELECT frozen_ms FROM ami_snapshot('bench %s')"
                                          % tag], check=False)
        if r.returncode != 0:
            raise RuntimeError("ami_snapshot() on the standby failed: " + r.stderr)
        frozen_ms = float(r.stdout.strip())
        window = (t0, time.time() + 1.0)
    try:
        out, _ = bench.communicate(timeout=seconds * 4 + 60)
    except subprocess.TimeoutExpired:
        # A stuck synchronous standby holds every commit: release them.
        pair.set_sync("")
        bench.kill()
        bench.communicate()
        raise RuntimeError("pgbench did not end (%s)" % mode)
    if mode == "sync":
        pair.set_sync("")
        pair.wait_sync_state("async")
    tx = read_pgbench_logs(os.path.join(logdir, "tx"))
    lat = [x[2] for x in tx if x[2] is not None]
    during = [x[2] for x in tx if x[2] is not None and window[0] <= x[1] <= window[1]]
    tps = [line.split()[2] for line in out.splitlines() if line.startswith("tps")]
    return {"mode": mode, "tps": float(tps[0]) if tps else 0.0,
            "failed": sum(1 for x in tx if x[2] is None),
            "p99_ms": sorted(lat)[int(0.99 * (len(lat) - 1))], "max_ms": max(lat),
            "max_during_ms": max(during) if during else 0.0, "frozen_ms": frozen_ms}


def med(rows, key):
    vals = [r[key] for r in rows if r[key] is not None]
    return statistics.median(vals) if vals else None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--scale", type=int, default=8)
    ap.add_argument("--latency-ms", type=int, default=100,
                    help="the emulator's latency per EC2 call (EC2's CreateSnapshots takes "
                         "hundreds of ms)")
    args = ap.parse_args()
    w = World(layout=[("data", "ext4"), ("wal", "xfs")])
    pair = None
    results = []
    try:
        pair = StandbyPair(w)
        pair.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(pair.port),
                       "-i", "-s", str(args.scale), "-q", "bench"])
        pair.wait_replayed()
        w.emulator_control({"latency_ms": args.latency_ms})
        for i in range(args.runs):
            for mode in MODES:
                res = run_one(w, pair, mode, args.seconds, "%s-%d" % (mode, i))
                print("# run %d %s: %s" % (i + 1, mode, res), flush=True)
                results.append(res)
    finally:
        if pair:
            pair.close()
        w.close()
    names = {"none": "no snapshot (baseline)", "standby": "a snapshot of the async standby",
             "sync": "a snapshot of the sync standby (allowed)"}
    print("pgbench tpcb-like on the primary, 8 clients, %d s, scale %d; one call in the "
          "middle; EC2 latency %d ms; medians of %d runs, max of the maxima"
          % (args.seconds, args.scale, args.latency_ms, args.runs))
    print("| primary's pgbench | tps | failed tx | p99 ms | max ms | max ms during the call (+1 s)"
          " | standby frozen ms |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode in MODES:
        rows = [r for r in results if r["mode"] == mode]
        fz = med(rows, "frozen_ms")
        print("| %s | %.0f | %d | %.1f | %.1f (max %.1f) | %.1f (max %.1f) | %s |" % (
            names[mode], med(rows, "tps"), sum(r["failed"] for r in rows), med(rows, "p99_ms"),
            med(rows, "max_ms"), max(r["max_ms"] for r in rows), med(rows, "max_during_ms"),
            max(r["max_during_ms"] for r in rows), "-" if fz is None else "%.1f" % fz))


if __name__ == "__main__":
    main()
