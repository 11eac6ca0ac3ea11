#!/usr/bin/python3
"""
verify_drill.py - what a restore drill (`ami-snapshot verify`) costs: its
duration by phase, and the production server's pgbench latency during a
drill against the same run without one; and the same drill asked from SQL
(ami_snapshot_verify(), run by the helper as a job): its wall time in the
backend against the drill's own phases (the job's cost).

In the sandbox (ext4 data + XFS pg_wal, the emulator's volumes as loop
devices): pgbench -i at --scale, one ami_snapshot(); then --runs times,
alternating: pgbench (8 clients, --seconds) alone, with a drill of the set
started after 2 s by the command, and with one from SQL.  Markdown on stdout.

    test/bench/verify_drill.py [--runs 3] [--seconds 20] [--scale 10]   (as root)
"""

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from benchlib import pct, pgbench_cmd, pgbench_failed, read_pgbench_logs  # noqa: E402
from world import PGBIN, ROOT, World  # noqa: E402
from e2e import drill_conf, restart_helper  # noqa: E402

CLI = os.environ.get("AMIS_CLI") or os.path.join(ROOT, "helper", "ami-snapshot")


def bench_run(w, seconds, tag, request_id=None, sql=False):
    """pgbench for seconds; with request_id, a drill of it from t+2 s.
    Latencies of the transactions that ended while the drill ran (or, alone,
    in the same window), the drill's report."""
    logdir = os.path.join(w.pgrun, "pgb-" + tag)
    os.makedirs(logdir)
    os.chown(logdir, w.pg_uid, w.pg_gid)
    bench = subprocess.Popen(pgbench_cmd(w, ["-c", "8", "-j", "2", "-T", str(seconds), "--log",
                                             "--log-prefix", os.path.join(logdir, "tx")]),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2)
    t0 = time.time()
    report = None
    if request_id and sql:
        report = json.loads(w.psql("SELECT detail FROM ami_snapshot_verify(request_id => '%s')"
                                   % request_id))
        report["sql_ms"] = (time.time() - t0) * 1000
    elif request_id:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        r = subprocess.run([CLI, "verify", "-c", w.helper_conf, "--device-dir",
                            w.device_link_dir, "--drill-dir", w.path("drill"),
                            "--request-id", request_id, "--json"],
                           capture_output=True, text=True, env=env, timeout=600)
        report = json.loads(r.stdout)
        report["exit"] = r.returncode
    t1 = time.time() if request_id else t0 + 6.0
    out, _ = bench.communicate(timeout=seconds + 120)
    failed, aborted = pgbench_failed(out)
    tx = read_pgbench_logs(os.path.join(logdir, "tx"))
    window = [lat for _, end, lat in tx if t0 <= end <= t1 + 0.5 and lat is not None]
    return {"failed": failed + (1 if aborted else 0), "window_s": t1 - t0,
            "tps": len(window) / max(t1 - t0, 0.001), "avg": sum(window) / max(len(window), 1),
            "p99": pct(window, 99), "max": max(window) if window else 0.0, "report": report}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=20)
    ap.add_argument("--scale", type=int, default=10)
    a = ap.parse_args()
    w = World(layout=[("data", "ext4"), ("wal", "xfs")])
    try:
        w.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port), "-i",
                       "-s", str(a.scale), "-q", "bench"])
        req = w.psql("SELECT request_id FROM ami_snapshot('bench verify')")
        os.makedirs(w.path("drill"), exist_ok=True)
        restart_helper(w, drill_conf(w, w.path("drill")))
        alone, drilled, from_sql = [], [], []
        for i in range(a.runs):
            alone.append(bench_run(w, a.seconds, "alone%d" % i))
            drilled.append(bench_run(w, a.seconds, "drill%d" % i, req))
            from_sql.append(bench_run(w, a.seconds, "sql%d" % i, req, sql=True))
        phases = {}
        for d in drilled:
            for k, v in d["report"]["phases_ms"].items():
                phases.setdefault(k, []).append(v)
        totals = [sum(d["report"]["phases_ms"].values()) for d in drilled]
        print("## A restore drill: its phases and what production feels\n")
        print("pgbench -i -s %d (about %d MB), 8 clients; %d drill(s), outcome(s): %s.\n"
              % (a.scale, a.scale * 15, a.runs,
                 ", ".join(sorted({d["report"]["outcome"] for d in drilled}))))
        print("| phase | median ms | max ms |")
        print("|---|---:|---:|")
        for k, v in phases.items():
            print("| %s | %.0f | %.0f |" % (k, pct(v, 50), max(v)))
        print("| **total** | %.0f | %.0f |\n" % (pct(totals, 50), max(totals)))
        print("| production pgbench | tps | avg ms | p99 ms | max ms | failed tx |")
        print("|---|---:|---:|---:|---:|---:|")
        for name, rows in (("without a drill", alone), ("during a drill", drilled),
                           ("during a drill from SQL", from_sql)):
            print("| %s | %.0f | %.2f | %.2f | %.1f | %d |"
                  % (name, pct([r["tps"] for r in rows], 50), pct([r["avg"] for r in rows], 50),
                     pct([r["p99"] for r in rows], 50), max(r["max"] for r in rows),
                     sum(r["failed"] for r in rows)))
        sql_ms = [d["report"]["sql_ms"] for d in from_sql]
        job_ms = [d["report"]["sql_ms"] - sum(d["report"]["phases_ms"].values())
                  for d in from_sql]
        print("\n| ami_snapshot_verify() from SQL | median ms | max ms |")
        print("|---|---:|---:|")
        print("| the call's wall time | %.0f | %.0f |" % (pct(sql_ms, 50), max(sql_ms)))
        print("| beyond the drill's phases (the job: start, report, history rows) "
              "| %.0f | %.0f |" % (pct(job_ms, 50), max(job_ms)))
        bad = [d["report"]["outcome"] for d in drilled + from_sql
               if d["report"]["outcome"] != "passed"]
        if bad:
            print("\nnot every drill passed: %s" % bad)
            sys.exit(1)
    finally:
        w.close()


if __name__ == "__main__":
    main()
