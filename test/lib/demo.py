#!/usr/bin/python3
"""demo.py - the sandbox demo (see test/sandbox-demo.sh).

Ends with a summary of what it proved, one PASS or FAIL line per check, and
exits non-zero if any check failed:
  - ami_snapshot() succeeded with one CreateSnapshots call, and how long
    writes were frozen;
  - `ami-snapshot restore` made a volume of each snapshot, attached and
    mounted them, and prepared the data directory;
  - every marker row committed before the call is in the restored cluster;
  - pgbench's balances add up in the restored cluster;
  - pg_amcheck finds no corruption;
  - the snapshot has no backup_label, and the restored server's log shows
    crash recovery.
"""

import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from world import PGBIN, World  # noqa: E402
from restore_cmd import CmdRestored, restore_cmd  # noqa: E402
from e2e import MARK_PROC  # noqa: E402  (numbered rows, each committed on its own)

# What the restored server logs when it starts by crash recovery.
RECOVERY_LINES = ("database system was not properly shut down; automatic recovery in progress",
                  "redo starts at", "redo done at")


def say(msg):
    print("\n\033[1m==> %s\033[0m" % msg, flush=True)


class Checks:
    def __init__(self):
        self.items = []  # (passed, text, detail lines)

    def add(self, passed, text, details=()):
        self.items.append((bool(passed), text, list(details)))
        return bool(passed)

    def all_passed(self):
        return bool(self.items) and all(p for p, _, _ in self.items)

    def summary(self):
        say("Summary: what the demo proved")
        for passed, text, details in self.items:
            print("  %s  %s" % ("\033[32mPASS\033[0m" if passed else "\033[31mFAIL\033[0m", text))
            for d in details:
                print("          " + d)


def recovery_log_lines(text):
    """The restored server's crash-recovery lines, from "LOG:" on."""
    out = []
    for line in text.splitlines():
        if any(k in line for k in RECOVERY_LINES):
            out.append(line[line.find("LOG:"):] if "LOG:" in line else line)
    return out


def snapshot_and_restore(w, checks):
    w.psql("CREATE DATABASE bench")
    w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port),
                   "-i", "-s", "4", "--tablespace=ts1", "-q", "bench"])
    w.psql(MARK_PROC, db="bench")
    say("pgbench writes for 8 s and a marker writer commits numbered rows; after 3 s:  "
        "SELECT * FROM ami_snapshot('nightly');")
    bench = subprocess.Popen(w.pg_cmd([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun,
                                       "-p", str(w.port), "-c", "4", "-j", "2", "-T", "8",
                                       "bench"]),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    marker = threading.Thread(target=w.psql, args=("CALL write_marks(8)",),
                              kwargs={"db": "bench", "check": False})
    marker.start()
    try:
        time.sleep(3)
        # Every row up to this id was committed before the call started.
        before = int(w.psql("SELECT coalesce(max(id), 0) FROM marks", db="bench"))
        r = w.as_postgres(w.psql_cmd() + ["-x", "-c", "SELECT * FROM ami_snapshot('nightly')"],
                          check=False)
        print("  marker rows committed before the call: %d" % before)
        print("".join("  %s\n" % l.replace("|", " | ", 1) for l in r.stdout.splitlines()), end="")
    finally:
        marker.join()
        out, _ = bench.communicate()
    print("\n".join("  pgbench: " + l for l in out.splitlines()
                    if "failed" in l or "tps" in l or "latency" in l))
    say("Helper log")
    print("".join("  " + l for l in open(w.helper_log) if "request" in l), end="")

    row = dict(l.split("|", 1) for l in r.stdout.splitlines() if "|" in l)
    snaps = row.get("snapshot_ids", "{}").strip("{}").split(",") if row else []
    codes = w.emulator_state().get("response_codes", {})
    calls = codes.get("CreateSnapshots:OK", 0)
    dry_runs = codes.get("CreateSnapshots:DryRunOperation", 0)
    if not checks.add(r.returncode == 0 and row.get("status") == "succeeded"
                      and len(snaps) == len(w.volumes) and calls == 1,
                      "ami_snapshot('nightly') succeeded: %d snapshots (%s) from %d "
                      "CreateSnapshots call (and %d DryRuns); writes frozen for %s ms"
                      % (len(snaps), ", ".join(v.name for v in w.volumes), calls, dry_runs,
                         row.get("frozen_ms", "?")),
                      [l for l in r.stderr.splitlines()]):
        return

    root = w.path("restore")
    say("Restoring it with the restore command, next to the original, and starting "
        "PostgreSQL on it:  ami-snapshot restore --request-id %s --root %s"
        % (row.get("request_id", "?"), root))
    r = restore_cmd(w, "--request-id", row.get("request_id", "?"), "--root", root,
                    verbose=False)
    print("".join("  %s\n" % l for l in (r.stdout + r.stderr).splitlines()), end="")
    restored = CmdRestored(w, root)
    if not checks.add(r.returncode == 0 and len(restored.mounts()) == len(snaps),
                      "ami-snapshot restore made, attached and mounted %d volumes and "
                      "prepared the data directory" % len(restored.mounts()),
                      r.stderr.splitlines()[-20:]):
        restored.close()
        return
    try:
        label = restored.has_backup_label()
        print("  backup_label in the snapshot: %s" % label)
        restored.start()
        print("  restored cluster is up on port %d" % restored.port)

        got = restored.psql("SELECT count(*) FILTER (WHERE id <= %d), coalesce(max(id), 0) "
                            "FROM marks" % before, db="bench").split("|")
        checks.add(before > 0 and int(got[0]) == before,
                   "all %d marker rows committed before the call are in the restore "
                   "(it has rows up to id %s)" % (before, got[1]))

        inv = restored.psql(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
            "(SELECT sum(tbalance) FROM pgbench_tellers), "
            "(SELECT sum(bbalance) FROM pgbench_branches), "
            "(SELECT coalesce(sum(delta), 0) FROM pgbench_history), "
            "(SELECT count(*) FROM pgbench_history)", db="bench").split("|")
        checks.add(inv[0] == inv[1] == inv[2] == inv[3] and int(inv[4]) > 0,
                   "pgbench invariant holds in the restore: accounts = tellers = branches = "
                   "history deltas (%s / %s / %s / %s; %s transactions)" % tuple(inv))

        am = subprocess.run(w.pg_cmd([os.path.join(PGBIN, "pg_amcheck"), "-h", w.pgrun,
                                      "-p", str(restored.port), "--all", "--heapallindexed",
                                      "--install-missing"]), capture_output=True, text=True)
        checks.add(am.returncode == 0,
                   "pg_amcheck --all --heapallindexed on the restore: %s"
                   % ("no corruption" if am.returncode == 0 else "exit %d" % am.returncode),
                   (am.stdout + am.stderr).splitlines()[-20:] if am.returncode else ())

        checks.add(not label, "no backup_label in the snapshot: the restore is plain crash "
                   "recovery, from the snapshots alone")
        lines = recovery_log_lines(restored.log_text())
        checks.add(all(any(k in l for l in lines) for k in RECOVERY_LINES),
                   "the restored server's log shows crash recovery:", lines)
    finally:
        restored.close()


def main():
    say("Building the sandbox: loop filesystems (data: ext4, pg_wal: xfs, tablespace: ext4), "
        "EC2/IMDS emulator, ami-snapshot-helper, PostgreSQL 15")
    checks = Checks()
    w = World()
    try:
        for v in w.volumes:
            print("  %-5s %-4s %-12s %s  (%s)" % (v.name, v.fstype, v.loop, v.mount, v.vol_id))
        print("  emulator %s, helper socket %s, postgres port %d" %
              (w.emu_url, w.path("run", "helper.sock"), w.port))
        try:
            snapshot_and_restore(w, checks)
        except Exception as e:  # reported in the summary, and the demo fails
            checks.add(False, "the demo stopped: %s: %s" % (type(e).__name__,
                                                         str(e).splitlines()[0] if str(e) else ""),
                       str(e).splitlines()[1:21])
        checks.summary()
        ok = checks.all_passed()
        say("Demo %s (%d of %d checks passed); cleaning up"
            % ("succeeded" if ok else "FAILED", sum(p for p, _, _ in checks.items),
               len(checks.items)))
        return 0 if ok else 1
    finally:
        w.close()


if __name__ == "__main__":
    sys.exit(main())
