#!/usr/bin/python3
"""
pgbench_snapshot.py - what the database's clients feel during one snapshot.

pgbench (tpcb-like, 8 clients) runs for --seconds; in the middle one
ami_snapshot() is taken (or none, for the baseline, or with freeze =>
false).  From pgbench's per-transaction log: transactions, failed
transactions, max latency overall and in the second that contains the
freeze, p99.

    test/bench/pgbench_snapshot.py [--seconds 30] [--latency-ms 50]   (as root)
"""

import argparse
import glob
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from world import PGBIN, World  # noqa: E402


def run_one(w, mode, seconds, tag):
    logdir = os.path.join(w.pgrun, "pgbench-" + tag)
    os.makedirs(logdir)
    os.chown(logdir, w.pg_uid, w.pg_gid)
    bench = subprocess.Popen(
        ["runuser", "-u", "postgres", "--", os.path.join(PGBIN, "pgbench"), "-h", w.pgrun,
         "-p", str(w.port), "-c", "8", "-j", "2", "-T", str(seconds), "--log",
         "--log-prefix", os.path.join(logdir, "tx"), "bench"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    snap_at = None
    frozen_ms = 0.0
    time.sleep(seconds / 2.0)
    if mode != "none":
        t0 = time.time()
        r = w.psql("SELECT frozen_ms FROM ami_snapshot('pgbench %s', freeze => %s)" %
                   (tag, "true" if mode == "freeze" else "false"))
        snap_at = (t0, time.time())
        frozen_ms = float(r)
    out, _ = bench.communicate()
    lat = []      # (end time s, latency ms)
    failed = 0
    for f in glob.glob(os.path.join(logdir, "tx*")):
        for line in open(f):
            p = line.split()
            # client_id transaction_no time script_no time_epoch time_us [...]
            if p[2] in ("failed", "skipped"):
                failed += 1
                continue
            end = int(p[4]) + int(p[5]) / 1e6
            lat.append((end, int(p[2]) / 1000.0))
    all_ms = [x[1] for x in lat]
    res = {"mode": mode, "tx": len(lat), "failed": failed,
           "max_ms": max(all_ms), "p99_ms": sorted(all_ms)[int(0.99 * (len(all_ms) - 1))],
           "frozen_ms": frozen_ms}
    if snap_at:
        # Transactions that ended during the call or within 1 s after it.
        window = [ms for end, ms in lat if snap_at[0] <= end <= snap_at[1] + 1.0]
        res["max_during_ms"] = max(window) if window else 0.0
        res["p99_during_ms"] = sorted(window)[int(0.99 * (len(window) - 1))] if window else 0.0
    tps_line = [l for l in out.splitlines() if l.startswith("tps")]
    res["tps"] = tps_line[0].split()[2] if tps_line else "?"
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--latency-ms", type=int, default=0)
    args = ap.parse_args()
    w = World()
    results = []
    try:
        w.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port), "-i",
                       "-s", "8", "--tablespace=ts1", "-q", "bench"])
        w.emulator_control({"latency_ms": args.latency_ms})
        for mode in ("none", "freeze", "nofreeze"):
            results.append(run_one(w, mode, args.seconds, mode))
    finally:
        w.close()
    print("pgbench tpcb-like, 8 clients, %d s, one snapshot in the middle; EC2 latency %d ms"
          % (args.seconds, args.latency_ms))
    print("| snapshot | tps | transactions | failed | p99 ms | max ms | frozen ms "
          "| max ms during the call (+1 s) | p99 during |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    names = {"none": "none (baseline)", "freeze": "ami_snapshot()",
             "nofreeze": "ami_snapshot(freeze => false)"}
    for r in results:
        print("| %s | %s | %d | %d | %.1f | %.1f | %.1f | %s | %s |" % (
            names[r["mode"]], r["tps"], r["tx"], r["failed"], r["p99_ms"], r["max_ms"],
            r["frozen_ms"],
            "%.1f" % r["max_during_ms"] if "max_during_ms" in r else "-",
            "%.1f" % r["p99_during_ms"] if "p99_during_ms" in r else "-"))


if __name__ == "__main__":
    main()
