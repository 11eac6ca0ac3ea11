#!/usr/bin/python3
"""
zero_stall.py - what pgbench feels, side by side in one sandbox: no
snapshot, ami_snapshot(freeze => false) every INTERVAL seconds, and
ami_snapshot() with the freeze as often; then the restore time of sets of
both kinds (restore.Restored to a started PostgreSQL, crash recovery; and
the whole check of test_zero_stall.py).

Each phase is one pgbench run (4 clients, per-transaction log) of SECONDS;
the phases run in turn, ROUNDS times, so that the machine's noise spreads
over all three.  Latency: mean, p50, p99, max over every transaction of the
phase, and the max over the transactions that overlapped a call.

    test/bench/zero_stall.py [--seconds 30] [--interval 3] [--rounds 1]
                             [--restores 3] [--csv FILE]          (as root)
"""

import argparse
import os
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from benchlib import pct, pgbench_args, read_pgbench_logs  # noqa: E402
from world import World  # noqa: E402
import zerostall as zs  # noqa: E402

PHASES = (("none", None), ("freeze => false", False), ("freeze", True))


def phase(w, label, freeze, seconds, interval, tag):
    """One pgbench run, with ami_snapshot() calls every interval seconds
    unless freeze is None.  Returns (transactions, call windows, sets)."""
    prefix = os.path.join(w.pgrun, "zs-%s" % tag)
    bench = subprocess.Popen(
        w.pg_cmd(pgbench_args(w, ["-n", "-c", "4", "-j", "2", "-T", str(seconds), "--log",
                                  "--log-prefix=" + prefix])),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    calls, sets = [], []
    if freeze is not None:
        time.sleep(min(2.0, interval))
        end = time.time() + seconds - 4
        n = 0
        while time.time() < end:
            t0 = time.time()
            s = zs.take_set(w, "bench %s %d" % (tag, n), freeze)
            calls.append((t0, time.time()))
            sets.append(s)
            n += 1
            time.sleep(max(0.0, interval - (time.time() - t0)))
    out, _ = bench.communicate(timeout=seconds + 120)
    if bench.returncode != 0:
        raise RuntimeError("pgbench failed: %s" % out[-2000:])
    return read_pgbench_logs(prefix), calls, sets


def latency_row(label, txs, calls, sets, seconds):
    lat = [t[2] for t in txs if t[2] is not None]
    during = [t[2] for t in txs if t[2] is not None
              and any(t[0] <= c1 and t[1] >= c0 for c0, c1 in calls)]
    return {"phase": label, "tx": len(lat), "tps": len(lat) / float(seconds),
            "failed": sum(1 for t in txs if t[2] is None),
            "mean": statistics.mean(lat), "p50": pct(lat, 50), "p99": pct(lat, 99),
            "max": max(lat), "max_during_call": max(during) if during else None,
            "calls": len(calls),
            "frozen_ms": statistics.median([s["frozen_ms"] for s in sets]) if sets else None,
            "store_ms": max([s["store_ms"] for s in sets if s.get("store_ms") is not None],
                            default=None)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=30)
    ap.add_argument("--interval", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--restores", type=int, default=3)
    ap.add_argument("--csv")
    args = ap.parse_args()
    w = World()
    rows, restores = [], []
    try:
        zs.setup(w)
        sets = {False: [], True: []}
        per_phase = {label: ([], [], []) for label, _ in PHASES}
        for r in range(args.rounds):
            for i, (label, freeze) in enumerate(PHASES):
                txs, calls, got = phase(w, label, freeze, args.seconds, args.interval,
                                        "%d-%d" % (r, i))
                per_phase[label][0].extend(txs)
                per_phase[label][1].extend(calls)
                per_phase[label][2].extend(got)
                if freeze is not None:
                    sets[freeze].extend(got)
        for label, _ in PHASES:
            txs, calls, got = per_phase[label]
            for s in got:
                s["store_ms"] = zs.request_record(w, s).get("frozen_ms")
            rows.append(latency_row(label, txs, calls, got, args.seconds * args.rounds))
        for freeze in (False, True):
            for n, s in enumerate(sets[freeze][:args.restores]):
                t0 = time.time()
                problems, started = zs.check_set(w, s, "bench-r%d-%d" % (freeze, n))
                restores.append({"kind": "freeze" if freeze else "freeze => false",
                                 "started_s": started, "check_s": time.time() - t0,
                                 "clean": not problems})
                if problems:
                    print("# %s: %s" % (s["name"], problems))
    finally:
        w.close()

    print("pgbench, 4 clients, %d s x %d round(s) per phase; a call every %.0f s"
          % (args.seconds, args.rounds, args.interval))
    print()
    print("| phase | calls | tps | mean ms | p50 ms | p99 ms | max ms | max ms during a call "
          "| frozen_ms (median) | the emulator's store frozen, max ms | failed tx |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print("| %s | %d | %.0f | %.2f | %.2f | %.2f | %.1f | %s | %s | %s | %d |" % (
            r["phase"], r["calls"], r["tps"], r["mean"], r["p50"], r["p99"], r["max"],
            "%.1f" % r["max_during_call"] if r["max_during_call"] is not None else "-",
            "%.1f" % r["frozen_ms"] if r["frozen_ms"] is not None else "-",
            "%.0f" % r["store_ms"] if r["store_ms"] is not None else "-", r["failed"]))
    print()
    print("| set | restored | to a started server (median, max) | whole check (median) |")
    print("|---|---|---|---|")
    for kind in ("freeze => false", "freeze"):
        got = [x for x in restores if x["kind"] == kind]
        st = [x["started_s"] for x in got if x["started_s"] is not None]
        if got:
            print("| %s | %d (%d clean) | %.2f s, %.2f s | %.1f s |" % (
                kind, len(got), sum(1 for x in got if x["clean"]),
                statistics.median(st) if st else -1, max(st) if st else -1,
                statistics.median(x["check_s"] for x in got)))
    if args.csv:
        with open(args.csv, "w") as f:
            f.write("phase,calls,tps,mean_ms,p50_ms,p99_ms,max_ms,max_during_call_ms,frozen_ms\n")
            for r in rows:
                f.write("%s,%d,%.1f,%.3f,%.3f,%.3f,%.3f,%s,%s\n" % (
                    r["phase"], r["calls"], r["tps"], r["mean"], r["p50"], r["p99"], r["max"],
                    r["max_during_call"], r["frozen_ms"]))
    bad = [x for x in restores if not x["clean"]]
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
