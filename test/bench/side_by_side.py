#!/usr/bin/python3
"""
side_by_side.py - how long the database is stalled by a snapshot:
ami_snapshot() against the two script baselines, on the same sandbox
(test/lib/world.py: real PostgreSQL 15 on loop filesystems, the real
helper, the EC2 emulator).  What `make bench` runs.

1. Freeze window, per volume count (1 = everything on one filesystem,
   2 = data + pg_wal, 4 and 8 = plus tablespaces) and EC2 latency L, while
   pgbench (4 clients) writes; the three methods interleaved run by run:
     ours          ami_snapshot(): frozen_ms, measured by the helper;
     cli-instance  CHECKPOINT; sync; fsfreeze -f each filesystem;
                   aws ec2 create-snapshots; fsfreeze -u each
                   (the AWS-documented pre/post scripts);
     cli-volume    the same with one aws ec2 create-snapshot per volume
                   (ec2-consistent-snapshot style);
   the baselines' window (first fsfreeze -f started to last fsfreeze -u
   returned) measured here.
2. ami_snapshot() split into phases (see benchlib.split_call), with the
   EC2 requests of each call and how many came one after the other, the
   issue-16 target (the whole call within the fast checkpoint + 3 L + 150 ms
   at L = 200), and the helper's memory (its whole process tree).
3. pgbench (tpcb-like, 8 clients) with one snapshot in the middle: none,
   ours, both baselines, and ami_snapshot(freeze => false).

Prints a Markdown report on stdout and writes it, CSV files and a PNG of
pgbench's latency over time into --out.

    test/bench/side_by_side.py [--runs 20] [--latencies 0,50,200]   (as root)
        [--volumes 1,2,4,8] [--pgbench-seconds 60] [--out test/bench/out]
"""

import argparse
import csv
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "lib"))
sys.path.insert(0, HERE)
from world import PGBIN, World  # noqa: E402
import benchlib as bl  # noqa: E402

FSTYPES = ("ext4", "xfs")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=20, help="snapshots per method, L and volumes")
    ap.add_argument("--latencies", default="0,50,200", help="EC2 latencies L (ms)")
    ap.add_argument("--volumes", default="1,2,4,8", help="volume counts")
    ap.add_argument("--baseline-runs", type=int,
                    help="snapshots per cell for the script baselines (default: --runs); "
                         "they are slow: the AWS CLI starts inside the freeze")
    ap.add_argument("--methods", default="ours,cli-instance,cli-volume")
    ap.add_argument("--latency-mode", choices=("floor", "added"), default="floor",
                    help="the emulator's latency model: floor (default: its own work, e.g. a "
                         "volume's reflink copy, within L, as EC2's service time is within the "
                         "round trip) or added (L slept after its work, as before issue 16)")
    ap.add_argument("--pgbench-seconds", type=int, default=60)
    ap.add_argument("--pgbench-latency", type=int, default=50, help="L for the pgbench runs")
    ap.add_argument("--pgbench-clients", type=int, default=8)
    ap.add_argument("--skip-freeze", action="store_true", help="no freeze-window matrix")
    ap.add_argument("--skip-pgbench", action="store_true", help="no pgbench runs")
    ap.add_argument("--out", default=os.path.join(HERE, "out"))
    ap.add_argument("--doc-png", help="also copy the PNG here (e.g. doc/bench-pgbench.png)")
    a = ap.parse_args()
    a.latencies = [int(x) for x in a.latencies.split(",")]
    a.volumes = [int(x) for x in a.volumes.split(",")]
    a.methods = a.methods.split(",")
    if a.baseline_runs is None:
        a.baseline_runs = a.runs
    for m in a.methods:
        if m not in bl.METHODS:
            ap.error("unknown method %s" % m)
    return a


def layout(n):
    """n volumes: data (with pg_wal when n == 1), wal, ts1...; ext4 and XFS
    alternating."""
    names = ["data"] + (["wal"] if n > 1 else []) + ["ts%d" % i for i in range(1, n - 1)]
    return [(name, FSTYPES[i % 2]) for i, name in enumerate(names)]


def emulator_forget_snapshots(w):
    """Delete the emulator's snapshots (and their image files): hundreds of
    point-in-time copies would fill the image store."""
    req = urllib.request.Request(w.emu_url + "/_emulator/reset", data=b'{"all": true}',
                                 method="POST", headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()


def init_pgbench(w, scale, tablespace=None):
    w.psql("CREATE DATABASE bench")
    w.as_postgres(bl.pgbench_args(w, ["-i", "-s", str(scale), "-q"] +
                                  (["--tablespace=" + tablespace] if tablespace else [])))


# ------------------------------------------------------- 1. freeze window
def freeze_matrix_world(args, n):
    """All L and methods on one World with n volumes: raw runs, splits of
    our calls, memory of the helper, FIFREEZE times."""
    runs, mem = [], {}
    w = World(layout=layout(n), helper_log_timestamps=True)
    sampler = None
    try:
        init_pgbench(w, 4)
        helper_pid = w.procs["helper"].pid
        time.sleep(1)
        mem["root"] = helper_pid
        mem["idle"] = bl.memory_now(helper_pid)
        mem["idle_pss"] = {pid: bl.pss_kb(pid) for pid in mem["idle"]}
        sampler = bl.MemorySampler(helper_pid)
        sampler.start()
        for lat in args.latencies:
            emulator_forget_snapshots(w)
            w.emulator_control({"latency_ms": lat, "latency_mode": args.latency_mode})
            runs += freeze_runs_at(args, w, n, lat)
        sampler.stop()
        mem["peak"] = sampler.peak
        mem["after"] = bl.memory_now(helper_pid)
        ev = bl.helper_events(w.helper_log)
        reqs = bl.emulator_requests(w)
        ckpts = bl.checkpoints(w)
        for r in runs:
            if r["method"] == "ours":
                r["split"] = bl.split_call(r, ev.get(r["request_id"], {}), reqs, ckpts)
        fifreeze = bl.helper_fifreeze_ms(w.helper_log)
    finally:
        if sampler and sampler.is_alive():
            sampler.stop()
        w.close()
    return runs, mem, fifreeze


def freeze_runs_at(args, w, n, lat):
    """args.runs rounds of every method at latency lat, under write load."""
    load = subprocess.Popen(bl.pgbench_cmd(w, ["-c", "4", "-j", "2", "-T", "36000"]),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out = []
    try:
        time.sleep(1)
        for i in range(max(args.runs, args.baseline_runs)):
            # Interleaved, so that the methods share the machine's noise.
            methods = [m for m in args.methods
                       if i < (args.runs if m == "ours" else args.baseline_runs)]
            for m in methods:
                r = bl.METHODS[m](w, "bench n%d L%d %s %d" % (n, lat, m, i))
                r.update(volumes=n, latency_ms=lat, run=i)
                out.append(r)
            bl_log("volumes %d, L %d ms: round %d: frozen ms: %s" % (
                n, lat, i + 1,
                ", ".join("%s %.1f" % (r["method"], r["frozen_ms"]) for r in out[-len(methods):])))
    finally:
        load.terminate()
        load.wait()
    return out


def bl_log(msg):
    print("# " + msg, file=sys.stderr, flush=True)


def freeze_summary(runs, methods):
    """One row per (volumes, L, method): window stats, overhead over L, ratio to ours."""
    rows = []
    keys = sorted({(r["volumes"], r["latency_ms"]) for r in runs})
    for n, lat in keys:
        ours = None
        for m in methods:
            fr = [r["frozen_ms"] for r in runs
                  if (r["volumes"], r["latency_ms"], r["method"]) == (n, lat, m)]
            s = bl.summary(fr)
            ov = bl.summary([f - lat for f in fr])
            if m == "ours":
                ours = s["median"]
            rows.append({"volumes": n, "latency_ms": lat, "method": m, "runs": s["n"],
                         "frozen_median": s["median"], "frozen_p95": s["p95"],
                         "frozen_max": s["max"], "overhead_median": ov["median"],
                         "overhead_p95": ov["p95"], "overhead_max": ov["max"],
                         "ratio_to_ours": (s["median"] / ours) if ours and s["median"] else None})
    return rows


def split_summary(runs):
    rows = []
    for n, lat in sorted({(r["volumes"], r["latency_ms"]) for r in runs if r.get("split")}):
        sp = [r["split"] for r in runs
              if r.get("split") and (r["volumes"], r["latency_ms"]) == (n, lat)]
        row = {"volumes": n, "latency_ms": lat, "runs": len(sp)}
        for k, _ in bl.SPLIT_PHASES:
            vals = [s[k] for s in sp if s.get(k) is not None]
            row[k] = statistics.median(vals) if vals else None
        rows.append(row)
    return rows


def memory_rows(n, mem):
    """The helper's process tree: per long-lived process idle VmRSS, peak
    VmRSS seen and VmHWM; children seen only while sampling (the watchdog
    forked for each freeze) collapsed into one row per name with the
    largest values."""
    rows, transient = [], {}
    for pid in sorted(set(mem["idle"]) | set(mem["peak"])):
        idle, peak = mem["idle"].get(pid), mem["peak"].get(pid)
        row = {"volumes": n, "pid": pid, "name": (idle or peak)[0],
               "role": "main" if pid == mem["root"] else "child",
               "idle_rss_kb": idle[1] if idle else None,
               "idle_pss_kb": mem["idle_pss"].get(pid),
               "peak_rss_kb": max(peak[1] if peak else 0, idle[1] if idle else 0),
               "hwm_kb": max(peak[2] if peak else 0, idle[2] if idle else 0), "count": 1}
        if idle:
            rows.append(row)
            continue
        t = transient.setdefault(row["name"], dict(row, pid="-", role="per-freeze child",
                                                   count=0))
        t["count"] += 1
        t["peak_rss_kb"] = max(t["peak_rss_kb"], row["peak_rss_kb"])
        t["hwm_kb"] = max(t["hwm_kb"], row["hwm_kb"])
    return rows + list(transient.values())


# --------------------------------------------------------------- 3. pgbench
PGBENCH_MODES = ["none", "ours", "cli-instance", "cli-volume", "nofreeze"]


def pgbench_phase(args):
    results = []
    w = World(helper_log_timestamps=True)
    try:
        init_pgbench(w, 8, "ts1")
        w.emulator_control({"latency_ms": args.pgbench_latency,
                            "latency_mode": args.latency_mode})
        for mode in PGBENCH_MODES:
            if mode in bl.METHODS and mode not in args.methods:
                continue
            r = pgbench_run(args, w, mode)
            if mode == "ours":  # the freeze window in wall-clock time, from the helper's log
                e = bl.helper_events(w.helper_log).get(r["request_id"], {})
                if "thawed" in e:
                    r["window"] = (e["thawed"] - e["frozen_ms"] / 1000.0, e["thawed"])
            pgbench_stats(r, args.pgbench_seconds)
            results.append(r)
            bl_log("pgbench %s: tps %.0f, failed %d, max %.1f ms" % (
                mode, r["tps"], r["failed"], r["max_ms"] or 0))
    finally:
        w.close()
    return results


def pgbench_run(args, w, mode):
    """pgbench for --pgbench-seconds with one snapshot (mode) in the middle."""
    w.psql("CHECKPOINT")
    time.sleep(1)
    logdir = os.path.join(w.pgrun, "pgbench-" + mode)
    os.makedirs(logdir)
    os.chown(logdir, w.pg_uid, w.pg_gid)
    prefix = os.path.join(logdir, "tx")
    secs = args.pgbench_seconds
    bench = subprocess.Popen(
        bl.pgbench_cmd(w, ["-c", str(args.pgbench_clients), "-j", "2", "-T", str(secs),
                           "--log", "--log-prefix", prefix]),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    res = {"mode": mode, "t_start": time.time(), "frozen_ms": 0.0}
    try:
        time.sleep(secs / 2.0)
        res["call"] = (time.time(), time.time() + 1.0)   # "none": the second at T/2
        if mode in ("ours", "nofreeze"):
            r = bl.snapshot_ours(w, "pgbench " + mode, freeze=(mode == "ours"))
            res.update(request_id=r["request_id"], frozen_ms=r["frozen_ms"], call=r["call"])
        elif mode in ("cli-instance", "cli-volume"):
            r = bl.METHODS[mode](w, "pgbench " + mode)
            res.update(frozen_ms=r["frozen_ms"], window=r["window"], call=r["window"])
        out, _ = bench.communicate(timeout=secs * 4 + 120)
    finally:
        if bench.poll() is None:
            bench.terminate()
            bench.wait()
    res["output"] = out
    res["tx"] = bl.read_pgbench_logs(prefix)
    return res


def pgbench_stats(r, secs):
    """TPS, failed, p99 and max: over the run, in the pgbench second that
    contains the freeze start (or the call start; T/2 for "none"), and the
    max latency of the transactions that overlap the freeze (or the call)."""
    tx = r["tx"]
    ok = [t for t in tx if t[2] is not None]
    lat = [t[2] for t in ok]
    failed, r["aborted"] = bl.pgbench_failed(r["output"])
    r["failed"] = max(failed, len(tx) - len(ok))
    tps = [l for l in r["output"].splitlines() if l.startswith("tps")]
    r["tps"] = float(tps[0].split()[2]) if tps else len(ok) / float(secs)
    r["p99_ms"], r["max_ms"] = (bl.pct(lat, 99), max(lat)) if lat else (None, None)
    t0 = min(t[0] for t in tx) if tx else r["t_start"]
    ws, we = r.get("window") or r["call"]
    sec = int(ws - t0)
    b0, b1 = t0 + sec, t0 + sec + 1
    in_sec = [t[2] for t in ok if b0 <= t[1] < b1]
    r["sec_index"] = sec
    r["sec_tps"] = len(in_sec)
    r["sec_p99_ms"] = bl.pct(in_sec, 99) if in_sec else None
    r["sec_max_ms"] = max(in_sec) if in_sec else None
    over = [t[2] for t in ok if t[0] < we and t[1] > ws]
    r["overlap_max_ms"] = max(over) if over else None
    r["t0"] = t0


# ----------------------------------------------------------------- output
def fmt(v, nd=1):
    if v is None:
        return "-"
    if isinstance(v, float):
        return "%.*f" % (nd, v)
    return str(v)


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |",
             "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def write_csv(path, rows):
    if not rows:
        return
    keys = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    with open(path, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=keys)
        wr.writeheader()
        wr.writerows(rows)


def report_freeze(summ, fif):
    rows = [[r["volumes"], r["latency_ms"], bl.METHOD_NAMES[r["method"]], r["runs"],
             r["frozen_median"], r["frozen_p95"], r["frozen_max"], r["overhead_median"],
             r["overhead_max"], fmt(r["ratio_to_ours"], 2) + "x" if r["ratio_to_ours"] else "-"]
            for r in summ]
    out = ["## Freeze window (ms): frozen -> thawed, while pgbench (4 clients) writes", "",
           md_table(["volumes", "L", "method", "runs", "median", "p95", "max",
                     "overhead over L: median", "max", "median / ours"], rows)]
    if fif:
        s = bl.summary(fif)
        out += ["", "ami_snapshot(): one FIFREEZE (per filesystem, helper's log): median "
                "%.1f ms, p95 %.1f, max %.1f (n=%d)" % (s["median"], s["p95"], s["max"], s["n"])]
    return "\n".join(out)


def report_split(rows):
    hdr = ["volumes", "L", "runs"] + [k for k, _ in bl.SPLIT_PHASES]
    out = ["## ami_snapshot() end to end, medians (ms) (the target of the split: "
           "benchlib.split_call)", "",
           md_table(hdr, [[r["volumes"], r["latency_ms"], r["runs"]] +
                          [r[k] for k, _ in bl.SPLIT_PHASES] for r in rows]), ""]
    out += ["- %s: %s" % (k, d) for k, d in bl.SPLIT_PHASES]
    return "\n".join(out)


def report_memory(rows):
    out = ["## The helper's memory (kB; its whole process tree, sampled every 10 ms)", "",
           md_table(["volumes", "pid", "process", "role", "processes", "idle VmRSS",
                     "idle Pss", "peak VmRSS seen", "VmHWM"],
                    [[r["volumes"], r["pid"], r["name"], r["role"], r["count"],
                      r["idle_rss_kb"], r["idle_pss_kb"], r["peak_rss_kb"], r["hwm_kb"]]
                     for r in rows]), ""]
    for n in sorted({r["volumes"] for r in rows}):
        rr = [r for r in rows if r["volumes"] == n]
        out.append("- %d volumes, sum over the tree: idle VmRSS %d kB; peak (sum of every "
                   "process's VmHWM, one per-freeze child) %d kB" % (
                       n, sum(r["idle_rss_kb"] or 0 for r in rr),
                       sum(r["hwm_kb"] or 0 for r in rr)))
    return "\n".join(out)


def report_pgbench(args, res):
    rows = [[bl.METHOD_NAMES[r["mode"]], r["tps"], r["failed"] + (1 if r["aborted"] else 0),
             r["p99_ms"], r["max_ms"], r["frozen_ms"] if r["mode"] != "none" else None,
             r["sec_tps"], r["sec_p99_ms"], r["sec_max_ms"], r["overlap_max_ms"]]
            for r in res]
    return "\n".join([
        "## pgbench (tpcb-like, %d clients, %d s, scale 8, tables in a tablespace), one "
        "snapshot in the middle, L = %d ms" % (args.pgbench_clients, args.pgbench_seconds,
                                               args.pgbench_latency), "",
        md_table(["snapshot", "tps", "failed", "p99 ms", "max ms", "frozen ms",
                  "tps in the freeze's second", "p99 there", "max there",
                  "max of tx overlapping the freeze (call)"], rows)])


def report_targets(args, summ, res, splits=()):
    out = ["## Targets", ""]
    for r in splits:
        if r["latency_ms"] != 200 or r.get("statement_minus_checkpoint") is None:
            continue
        # Per call: the checkpoint varies from call to call (x2 on a shared
        # machine); the median of statement - checkpoint against 3 L + 150.
        over = r["statement_minus_checkpoint"]
        out.append("- whole call at L = 200 ms, %d volume(s), within the fast checkpoint + 3 L "
                   "+ 150 ms: %s (the statement minus its checkpoint, median of the calls: "
                   "%.0f ms against 3 L + 150 = 750 ms; median statement %.0f ms, checkpoint "
                   "%.0f ms; %s EC2 requests, %s round trips one after the other)" % (
                       r["volumes"], "MET" if over <= 750 else "NOT MET", over,
                       r["statement"], r["checkpoint"],
                       fmt(r.get("ec2_requests"), 0), fmt(r.get("ec2_round_trips"), 0)))
    ours = [r for r in summ if r["method"] == "ours"]
    bad = [r for r in ours if r["overhead_median"] is None or r["overhead_median"] >= 5.0]
    if ours:
        out.append("- freeze-window overhead over L < 5 ms median at every L and volume "
                   "count: %s (worst median %.1f ms)" % (
                       "MET" if not bad else "NOT MET in %d of %d" % (len(bad), len(ours)),
                       max(r["overhead_median"] for r in ours)))
    if res:
        failed = sum(r["failed"] + (1 if r["aborted"] else 0) for r in res)
        out.append("- zero failed pgbench transactions in every run: %s (%d)" % (
            "MET" if failed == 0 else "NOT MET", failed))
        base = [r for r in res if r["mode"] == "none"]
        mine = [r for r in res if r["mode"] == "ours"]
        if base and mine and mine[0]["overlap_max_ms"] is not None:
            limit = base[0]["max_ms"] + args.pgbench_latency + 20
            out.append("- max latency during our snapshot (%.1f ms) within L + 20 ms of the "
                       "no-snapshot run's max (%.1f + %d + 20 = %.1f ms): %s" % (
                           mine[0]["overlap_max_ms"], base[0]["max_ms"],
                           args.pgbench_latency, limit,
                           "MET" if mine[0]["overlap_max_ms"] <= limit else "NOT MET"))
        nf = [r for r in res if r["mode"] == "nofreeze"]
        if base and nf:
            out.append("- freeze => false: max latency of transactions overlapping the call "
                       "%s ms against the no-snapshot run's max %.1f ms" % (
                           fmt(nf[0]["overlap_max_ms"]), base[0]["max_ms"]))
    return "\n".join(out)


def plot_pgbench(res, path, latency):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(len(res), 1, sharex=True, sharey=True, figsize=(10, 2.1 * len(res)))
    axes = axes if len(res) > 1 else [axes]
    for ax, r in zip(axes, res):
        ok = [t for t in r["tx"] if t[2] is not None]
        ax.scatter([t[1] - r["t0"] for t in ok], [t[2] for t in ok], s=1, alpha=0.4,
                   rasterized=True)
        if r.get("window"):
            ax.axvspan(r["window"][0] - r["t0"], r["window"][1] - r["t0"], color="red",
                       alpha=0.3, label="frozen %.0f ms" % r["frozen_ms"])
            ax.legend(loc="upper right", fontsize=8)
        elif r["mode"] == "nofreeze":
            ax.axvspan(r["call"][0] - r["t0"], r["call"][1] - r["t0"], color="orange",
                       alpha=0.3, label="ami_snapshot() call")
            ax.legend(loc="upper right", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("ms")
        ax.set_title(bl.METHOD_NAMES[r["mode"]], fontsize=9, loc="left")
    axes[-1].set_xlabel("seconds since pgbench started (transaction end)")
    fig.suptitle("pgbench latency per transaction, one snapshot in the middle, L = %d ms"
                 % latency, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def machine_line():
    mem_kb = int(open("/proc/meminfo").readline().split()[1])
    return "%s, kernel %s, %d vCPU, %.0f GiB RAM, PostgreSQL %s; loop devices on the VM disk" % (
        platform.freedesktop_os_release().get("PRETTY_NAME", "Linux"), platform.release(),
        os.cpu_count(), mem_kb / 1048576.0,
        subprocess.run([os.path.join(PGBIN, "postgres"), "--version"], capture_output=True,
                       text=True).stdout.split()[2])


def main():
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    args = parse_args()
    os.makedirs(args.out, exist_ok=True)
    t_begin = time.time()
    runs, mem_rows, fif, res = [], [], [], []
    if not args.skip_freeze:
        for n in args.volumes:
            r, mem, f = freeze_matrix_world(args, n)
            runs += r
            fif += f
            mem_rows += memory_rows(n, mem)
    failure = None
    if not args.skip_pgbench:
        try:
            res = pgbench_phase(args)
        except Exception as e:  # still report the freeze windows measured
            failure = "pgbench phase failed: %r" % e
            bl_log(failure)
    elapsed = time.time() - t_begin

    parts = ["# ami_snapshot benchmark", "",
             "Machine: " + machine_line() + ".  Runs per cell: %d (baselines %d); "
             "this run took %.1f min.  The emulator's latency model: %s." % (
                 args.runs, args.baseline_runs, elapsed / 60.0, args.latency_mode)]
    summ = freeze_summary(runs, args.methods) if runs else []
    if runs:
        splits = split_summary(runs)
        parts += ["", report_freeze(summ, fif), "", report_split(splits), "",
                  report_memory(mem_rows)]
        write_csv(os.path.join(args.out, "freeze-window.csv"), summ)
        write_csv(os.path.join(args.out, "freeze-runs.csv"),
                  [{k: v for k, v in r.items() if k not in ("split", "call", "window",
                                                              "snapshots")} for r in runs])
        write_csv(os.path.join(args.out, "split.csv"),
                  [dict(volumes=r["volumes"], latency_ms=r["latency_ms"], run=r["run"],
                        **r["split"]) for r in runs if r.get("split")])
        write_csv(os.path.join(args.out, "memory.csv"), mem_rows)
    if res:
        parts += ["", report_pgbench(args, res)]
        write_csv(os.path.join(args.out, "pgbench.csv"),
                  [{k: v for k, v in r.items() if k not in ("tx", "output", "call", "window")}
                   for r in res])
        png = os.path.join(args.out, "pgbench.png")
        plot_pgbench(res, png, args.pgbench_latency)
        if args.doc_png:
            shutil.copyfile(png, args.doc_png)
    parts += ["", report_targets(args, summ, res, split_summary(runs) if runs else [])]
    text = "\n".join(parts) + "\n"
    with open(os.path.join(args.out, "report.md"), "w") as f:
        f.write(text)
    sys.stdout.write(text)
    if failure:
        sys.exit(failure)


if __name__ == "__main__":
    main()
