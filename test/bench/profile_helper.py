#!/usr/bin/python3
"""
profile_helper.py - where the helper and its EC2 worker spend CPU during
snapshots: `perf record` (DWARF call graphs) of both processes over N calls
of ami_snapshot() in the sandbox, then the top symbols per process.

    test/bench/profile_helper.py [--runs 20] [--out /var/tmp/amis-profile]   (as root)

Needs perf (Debian: linux-perf).  A benchmark aid, not a test.
"""

import argparse
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from world import World  # noqa: E402

HZ = os.sysconf("SC_CLK_TCK")


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(x) for x in f.read().split()]


def cpu_ms(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000.0 / HZ


def comm(pid):
    with open("/proc/%d/comm" % pid) as f:
        return f.read().strip()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--out", default="/var/tmp/amis-profile")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    data = os.path.join(args.out, "perf.data")
    w = World()
    try:
        w.psql("SELECT status FROM ami_snapshot('warm-up')")
        pids = [w.procs["helper"].pid] + children(w.procs["helper"].pid)
        before = {p: cpu_ms(p) for p in pids}
        perf = subprocess.Popen(["perf", "record", "-F", "4999", "--call-graph", "dwarf,16384",
                                 "-o", data, "-p", ",".join(map(str, pids))],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        for i in range(args.runs):
            w.psql("SELECT status FROM ami_snapshot('profile-%d')" % i)
        perf.send_signal(2)
        perf.wait()
        print("| process | CPU ms per snapshot |\n|---|---:|")
        for p in pids:
            print("| %s | %.1f |" % (comm(p), (cpu_ms(p) - before[p]) / args.runs))
        print("\nmedian frozen_ms: %s" % w.psql(
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY frozen_ms) "
            "FROM ami_snapshot_history WHERE name LIKE 'profile-%'"))
    finally:
        w.close()
    for p in ("ami-snapshot-he", "amis-ec2-worker"):
        print("\n## %s: top symbols (self)\n" % p)
        r = subprocess.run(["perf", "report", "-i", data, "--no-children", "--comm", p,
                            "--sort", "sym", "--stdio", "-g", "none"],
                           capture_output=True, text=True)
        lines = [x for x in r.stdout.splitlines() if x.strip() and not x.startswith("#")]
        print("\n".join(lines[:15]))
    print("\nperf data: %s (perf report -i %s --comm ami-snapshot-he -G)" % (data, data))


if __name__ == "__main__":
    main()
