#!/usr/bin/python3
"""
freeze_window.py - how long ami_snapshot() blocks writes, against the
emulator's round-trip latency L.

For each L, N calls of ami_snapshot() while pgbench (4 clients) writes; the
freeze window (first FIFREEZE started -> last FITHAW returned, measured by
the helper) is reported with its overhead over L.  The emulator's own
service time for the CreateSnapshots call (SigV4 verification with
botocore, reflink copies of the volumes) is read from its request log and
reported too, since on EC2 that part is AWS's.

    test/bench/freeze_window.py [--latencies 0,50,200] [--runs 20] [--csv FILE]   (as root)
"""

import argparse
import json
import os
import re
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


def emulator_service_ms(w, since_line):
    """CreateSnapshots service times (ms) from the emulator's request log."""
    out = []
    path = os.path.join(w.store, "emu-state", "requests.jsonl")
    with open(path) as f:
        lines = f.readlines()[since_line:]
    for line in lines:
        r = json.loads(line)
        if r.get("action") == "CreateSnapshots" and r.get("status") == 200:
            out.append(float(r.get("duration_ms", 0)))
    return out, since_line + len(lines)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--latencies", default="0,50,200")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--csv")
    ap.add_argument("--layout", default="data:ext4,wal:xfs,ts1:ext4")
    args = ap.parse_args()
    layout = [tuple(x.split(":")) for x in args.layout.split(",")]
    rows = []
    w = World(layout=layout)
    try:
        w.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port), "-i",
                       "-s", "4", "-q", "bench"])
        log_pos = 0
        for lat in [int(x) for x in args.latencies.split(",")]:
            w.emulator_control({"latency_ms": lat})
            bench = subprocess.Popen(["runuser", "-u", "postgres", "--",
                                      os.path.join(PGBIN, "pgbench"), "-h", w.pgrun,
                                      "-p", str(w.port), "-c", "4", "-j", "2", "-T", "3600",
                                      "bench"], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
            frozen = []
            try:
                time.sleep(1)
                for i in range(args.runs):
                    r = w.psql("SELECT frozen_ms FROM ami_snapshot('bench L%d run %d')" % (lat, i))
                    frozen.append(float(r))
            finally:
                bench.terminate()
                bench.wait()
            _, log_pos = emulator_service_ms(w, 0)  # skip dry runs etc. below
            service, _ = emulator_service_ms(w, 0)
            service = service[-args.runs:]
            over = [f - lat for f in frozen]
            over_net = [f - s for f, s in zip(frozen, service)]
            row = {"latency_ms": lat, "runs": len(frozen),
                   "frozen_median": statistics.median(frozen), "frozen_p95": pct(frozen, 95),
                   "frozen_max": max(frozen),
                   "overhead_median": statistics.median(over), "overhead_max": max(over),
                   "emulator_service_median": statistics.median(service) if service else None,
                   "overhead_net_median": statistics.median(over_net) if service else None,
                   "overhead_net_max": max(over_net) if service else None}
            rows.append(row)
        helper_lines = [l for l in open(w.helper_log) if "FIFREEZE took" in l]
        call_lines = [l for l in open(w.helper_log) if "writes frozen for" in l]
    finally:
        w.close()

    print("| L (ms) | runs | frozen median | p95 | max | overhead over L: median | max "
          "| emulator service median | overhead net of service: median | max |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print("| %d | %d | %.2f | %.2f | %.2f | %.2f | %.2f | %s | %s | %s |" % (
            r["latency_ms"], r["runs"], r["frozen_median"], r["frozen_p95"], r["frozen_max"],
            r["overhead_median"], r["overhead_max"],
            "%.2f" % r["emulator_service_median"] if r["emulator_service_median"] is not None else "-",
            "%.2f" % r["overhead_net_median"] if r["overhead_net_median"] is not None else "-",
            "%.2f" % r["overhead_net_max"] if r["overhead_net_max"] is not None else "-"))
    fif = [float(m.group(1)) for l in helper_lines
           for m in [re.search(r"FIFREEZE took ([\d.]+) ms", l)] if m]
    if fif:
        print("\nFIFREEZE duration per filesystem: median %.2f ms, p95 %.2f, max %.2f (n=%d)" %
              (statistics.median(fif), pct(fif, 95), max(fif), len(fif)))
    calls = [(float(m.group(1)), float(m.group(2))) for l in call_lines
             for m in [re.search(r"frozen for ([\d.]+) ms \(CreateSnapshots ([\d.]+) ms", l)] if m]
    if calls:
        outside = [a - b for a, b in calls]
        print("Frozen but not in the CreateSnapshots call (freeze + thaw ioctls): median %.2f ms, "
              "p95 %.2f, max %.2f" % (statistics.median(outside), pct(outside, 95), max(outside)))
    if args.csv:
        with open(args.csv, "w") as f:
            keys = list(rows[0].keys())
            f.write(",".join(keys) + "\n")
            for r in rows:
                f.write(",".join("" if r[k] is None else str(r[k]) for k in keys) + "\n")


if __name__ == "__main__":
    main()
