#!/usr/bin/python3
"""
ami_methods.py - the freeze window of a snapshot set against the two AMI
methods, at the same emulator latency L.

For each L, while pgbench (4 clients) writes, N calls of each:

  set       ami_snapshot(name)                       one CreateSnapshots
  register  ami_snapshot(name, image => 'register')  one CreateSnapshots (root too),
                                                     RegisterImage after the thaw
  create    ami_snapshot(name, image => 'create')    CreateImage, then DescribeImages
                                                     and DescribeSnapshots until every
                                                     snapshot exists, all while frozen

create is also measured with the emulator's CreateImage snapshot delay at 0
(its default, 200 ms, stands for the time EC2 takes to fix the snapshots'
point in time, which AWS does not document).  frozen_ms is the helper's
measure (first FIFREEZE -> last FITHAW); "call" is the whole SQL call.

    test/bench/ami_methods.py [--latencies 0,50] [--runs 10] [--csv FILE]   (as root)
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from world import PGBIN, World  # noqa: E402


def pct(values, p):
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


METHODS = [("set", ""), ("register", ", image => 'register'"), ("create", ", image => 'create'")]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latencies", default="0,50")
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--create-delays", default="200,0",
                    help="the emulator's CreateImage snapshot delays (ms) to measure create at")
    ap.add_argument("--csv")
    args = ap.parse_args()
    rows = []
    w = World(layout=[("data", "ext4"), ("wal", "xfs"), ("ts1", "ext4")])
    try:
        w.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port), "-i",
                       "-s", "4", "-q", "bench"])
        bench = subprocess.Popen(["runuser", "-u", "postgres", "--",
                                  os.path.join(PGBIN, "pgbench"), "-h", w.pgrun,
                                  "-p", str(w.port), "-c", "4", "-j", "2", "-T", "3600", "-n",
                                  "bench"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            time.sleep(1)
            n = 0
            for lat in [int(x) for x in args.latencies.split(",")]:
                w.emulator_control({"latency_ms": lat})
                cells = []
                for method, arg in METHODS:
                    delays = ([int(d) for d in args.create_delays.split(",")]
                              if method == "create" else [None])
                    for delay in delays:
                        cells.append((method, arg, delay))
                for method, arg, delay in cells:
                    if delay is not None:
                        w.emulator_control({"create_image_snapshot_delay_ms": delay})
                    frozen, calls = [], []
                    for i in range(args.runs):
                        n += 1
                        t0 = time.time()
                        r = w.psql("SELECT frozen_ms FROM ami_snapshot('bench %s L%d %d'%s)"
                                   % (method, lat, n, arg))
                        calls.append((time.time() - t0) * 1000.0)
                        frozen.append(float(r))
                    rows.append({"latency_ms": lat, "method": method,
                                 "create_delay_ms": "" if delay is None else delay,
                                 "runs": len(frozen),
                                 "frozen_median": statistics.median(frozen),
                                 "frozen_p95": pct(frozen, 95), "frozen_max": max(frozen),
                                 "call_median": statistics.median(calls)})
                    print("# L=%d ms %s%s: frozen median %.1f ms" % (
                        lat, method, "" if delay is None else " (delay %d ms)" % delay,
                        rows[-1]["frozen_median"]), file=sys.stderr, flush=True)
        finally:
            bench.terminate()
            bench.wait()
    finally:
        w.close()

    print("| L (ms) | method | CreateImage snapshot delay (ms) | runs | frozen median (ms) | p95 "
          "| max | whole call median (ms) |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| %d | %s | %s | %d | %.1f | %.1f | %.1f | %.0f |" % (
            r["latency_ms"], r["method"], r["create_delay_ms"] if r["create_delay_ms"] != ""
            else "-", r["runs"], r["frozen_median"], r["frozen_p95"], r["frozen_max"],
            r["call_median"]))
    if args.csv:
        with open(args.csv, "w") as f:
            keys = list(rows[0].keys())
            f.write(",".join(keys) + "\n")
            for r in rows:
                f.write(",".join(str(r[k]) for k in keys) + "\n")


if __name__ == "__main__":
    main()
