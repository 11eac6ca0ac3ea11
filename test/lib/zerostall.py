"""zerostall.py - heavy mixed writes, snapshot sets taken under them, and
each set restored and checked (test/e2e/test_zero_stall.py, make torture,
test/bench/zero_stall.py).

The workload, in the database bench of a World:

  * pgbench (4 clients, no vacuum: its invariant holds across runs), with
    pgbench_accounts in the tablespace ts1 and the other tables in the data
    directory: a transaction touches the data, tablespace and pg_wal
    filesystems;
  * the marker writer: numbered rows in marks, one transaction each (e2e's
    write_marks): every id committed before a call must be in its set;
  * a bulk COPY of BATCH rows into bulk (in ts1), one transaction each, the
    table truncated now and then: a restore holds a multiple of BATCH;
  * CREATE INDEX on bulk and DROP INDEX, VACUUM of pgbench_accounts and
    bulk, and a CHECKPOINT, in a loop.

check_set() restores a set with restore.Restored (the snapshots' bytes, as
CreateVolume would give them), starts PostgreSQL on it by crash recovery
and returns what is wrong: no problems is a good set.
"""

import json
import os
import subprocess
import threading
import time

from e2e import MARK_PROC
from restore import Restored
from world import PGBIN

BATCH = 20000
SCALE = 4


def setup(w):
    """The bench database: pgbench's tables (accounts in ts1), marks, bulk."""
    w.psql("CREATE DATABASE bench")
    w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port), "-i",
                   "-s", str(SCALE), "-q", "bench"])
    w.psql("ALTER TABLE pgbench_accounts SET TABLESPACE ts1", db="bench")
    w.psql(MARK_PROC, db="bench")
    w.psql("CREATE TABLE bulk (id integer NOT NULL, filler text NOT NULL "
           "DEFAULT repeat('z', 60)) TABLESPACE ts1", db="bench")
    w.psql("CHECKPOINT")
    # The sandbox's initdb runs with --no-sync and the World appends to
    # postgresql.conf without fsync: on a real server both are on disk.  A
    # crash-consistent set holds what the filesystems had written to the
    # volumes, not what was still in the page cache (see OUTSIDE_WAL).
    for v in w.volumes:
        subprocess.run(["sync", "-f", v.mount], check=True)


# A file written outside WAL and without fsync just before each call, as an
# application or an administrator's editor might write one: a set taken with
# the freeze holds it (FIFREEZE writes back the page cache first); a set
# taken without may not (only what the filesystem wrote to the volume is in
# it), and a real crash would lose it the same way.
OUTSIDE_WAL = "zs_outside_wal"


def write_outside_wal(w, name):
    with open(os.path.join(w.pgdata, OUTSIDE_WAL), "w") as f:
        f.write((name + "\n") * 2048)


def outside_wal_intact(restored, name):
    try:
        with open(os.path.join(restored.pgdata, OUTSIDE_WAL)) as f:
            return f.read() == (name + "\n") * 2048
    except OSError:
        return False


class Workload:
    """The writers, each a thread running its statement in a loop until
    stop(); errors are counted, not fatal (a check of a set decides)."""

    def __init__(self, w, clients=4, pgbench_seconds=10):
        self.w = w
        self.stop_flag = threading.Event()
        self.rounds = {}
        self.errors = {}
        pgbench = w.pg_cmd([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port),
                            "-n", "-c", str(clients), "-j", "2", "-T", str(pgbench_seconds),
                            "bench"])
        sql = w.pg_cmd(w.psql_cmd("bench"))
        self.loops = {
            "pgbench": [pgbench],
            "marks": [sql + ["-c", "CALL write_marks(5)"]],
            "copy": [sql + ["-c", "COPY bulk (id) FROM PROGRAM 'seq 1 %d'" % BATCH],
                     sql + ["-c", "COPY bulk (id) FROM PROGRAM 'seq 1 %d'" % BATCH],
                     sql + ["-c", "COPY bulk (id) FROM PROGRAM 'seq 1 %d'" % BATCH],
                     sql + ["-c", "TRUNCATE bulk"]],
            "ddl": [sql + ["-c", "CREATE INDEX bulk_id_idx ON bulk (id)"],
                    sql + ["-c", "VACUUM pgbench_accounts"],
                    sql + ["-c", "DROP INDEX bulk_id_idx"],
                    sql + ["-c", "VACUUM bulk"],
                    sql + ["-c", "CHECKPOINT"]],
        }
        self.threads = [threading.Thread(target=self._loop, args=(name, cmds), daemon=True)
                        for name, cmds in self.loops.items()]
        for t in self.threads:
            t.start()

    def _loop(self, name, cmds):
        self.rounds[name] = 0
        self.errors[name] = []
        while not self.stop_flag.is_set():
            for cmd in cmds:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if r.returncode != 0:
                    self.errors[name].append(r.stderr.strip()[-300:])
                if self.stop_flag.is_set():
                    break
            self.rounds[name] += 1

    def running(self):
        """Whether every writer has done at least one round."""
        return all(self.rounds.get(n, 0) > 0 for n in self.loops)

    def stop(self):
        self.stop_flag.set()
        for t in self.threads:
            t.join(700)


def committed_marks(w):
    """The highest marker id committed now: every id up to it is committed."""
    return int(w.psql("SELECT coalesce(max(id), 0) FROM marks", db="bench"))


def take_set(w, name, freeze):
    """One ami_snapshot() call: (snapshot ids, frozen_ms, request id, the
    marker id committed before the call, the call's seconds)."""
    before = committed_marks(w)
    write_outside_wal(w, name)
    t0 = time.time()
    out = w.psql("SELECT array_to_string(snapshot_ids, ','), frozen_ms, request_id "
                 "FROM ami_snapshot('%s', freeze => %s)" % (name, "true" if freeze else "false"))
    secs = time.time() - t0
    ids, frozen, rid = out.split("|")
    return {"name": name, "freeze": freeze, "snapshots": ids.split(","),
            "frozen_ms": float(frozen or 0), "request_id": rid, "before": before,
            "call_s": secs}


def check_set(w, s, name):
    """Restore set s (take_set's) and check it; returns (problems, seconds
    to a started PostgreSQL)."""
    problems = []
    t0 = time.time()
    restored = Restored(w, s["snapshots"], name=name)
    try:
        if restored.has_backup_label():
            problems.append("backup_label in the set (not the crash-recovery path)")
        s["outside_wal_intact"] = outside_wal_intact(restored, s["name"])
        try:
            restored.start()
        except RuntimeError as e:
            why = [line for line in str(e).splitlines()
                   if any(k in line for k in ("PANIC", "FATAL", "ERROR"))]
            return problems + ["PostgreSQL did not start: %s"
                               % " / ".join(why[:3] or [str(e)[-600:]])], None
        started = time.time() - t0
        log = restored.log_text()
        if "redo done" not in log and "automatic recovery in progress" not in log:
            problems.append("no crash recovery in the log")
        r = restored.psql("SELECT count(*) FILTER (WHERE id <= %d) FROM marks" % s["before"],
                          db="bench", check=False)
        if r.returncode != 0 or r.stdout.strip() != str(s["before"]):
            problems.append("marker rows committed before the call: %s of %d"
                            % (r.stdout.strip() or r.stderr.strip()[-300:], s["before"]))
        r = restored.psql(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
            "(SELECT sum(tbalance) FROM pgbench_tellers), "
            "(SELECT sum(bbalance) FROM pgbench_branches), "
            "(SELECT coalesce(sum(delta), 0) FROM pgbench_history)", db="bench", check=False)
        sums = r.stdout.strip().split("|")
        if r.returncode != 0 or len(set(sums)) != 1:
            problems.append("pgbench invariant: accounts|tellers|branches|history = %s"
                            % (r.stdout.strip() or r.stderr.strip()[-300:]))
        r = restored.psql("SELECT count(*) %% %d FROM bulk" % BATCH, db="bench", check=False)
        if r.returncode != 0 or r.stdout.strip() != "0":
            problems.append("bulk COPY not whole: count %% %d = %s"
                            % (BATCH, r.stdout.strip() or r.stderr.strip()[-300:]))
        am = subprocess.run(w.pg_cmd([os.path.join(PGBIN, "pg_amcheck"), "-h", w.pgrun,
                                      "-p", str(restored.port), "--all", "--heapallindexed",
                                      "--install-missing"]), capture_output=True, text=True)
        if am.returncode != 0:
            problems.append("amcheck: %s" % (am.stdout + am.stderr).strip()[-600:])
        return problems, started
    finally:
        restored.close()


def delete_set(w, s):
    for sid in s["snapshots"]:
        w.ec2_call("DeleteSnapshot", SnapshotId=sid)


def request_record(w, s):
    """The emulator's log record of the CreateSnapshots call that made set
    s (its set_copy and frozen_ms)."""
    with open(os.path.join(w.store, "emu-state", "requests.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("action") == "CreateSnapshots" and \
                    sorted(rec.get("snapshot_ids") or []) == sorted(s["snapshots"]):
                return rec
    return {}
