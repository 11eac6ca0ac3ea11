"""e2e.py - helpers shared by the end-to-end tests (test/e2e/)."""

import base64
import json
import os
import re
import subprocess
import time

from tap import diag, is_, ok
from world import PGBIN, ROOT

# Run after a failed call in the same psql session: proves the session's
# backup was stopped or aborted (pg_backup_start refuses a second one).
SAME_SESSION_CHECK = ["-c", "SELECT pg_backup_start('check', true) IS NOT NULL AS started",
                      "-c", "SELECT lsn IS NOT NULL AS stopped FROM pg_backup_stop(false)"]


# A table of numbered rows committed one by one while a snapshot is taken:
# every row committed before the call must be in the restore.
MARK_PROC = """
CREATE TABLE marks (id bigint PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());
CREATE PROCEDURE write_marks(seconds float8) LANGUAGE plpgsql AS $$
DECLARE
    i bigint := coalesce((SELECT max(id) FROM marks), 0);
    stop timestamptz := clock_timestamp() + make_interval(secs => seconds);
BEGIN
    WHILE clock_timestamp() < stop LOOP
        i := i + 1;
        INSERT INTO marks (id) VALUES (i);
        COMMIT;
    END LOOP;
END $$;
"""


def wait_for(pred, timeout, step=0.5):
    """pred() until it is true or timeout seconds passed; its last value."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def pgbench_cmd(w, seconds, clients=4, vacuum=True):
    """vacuum=False (-n): pgbench_history is not truncated at the start, so
    the invariant check_restore checks holds across several runs."""
    return w.pg_cmd([os.path.join(PGBIN, "pgbench"),
                     "-h", w.pgrun, "-p", str(w.port), "-c", str(clients), "-j", "2",
                     "-T", str(seconds), "-P", "1", "-r"] + ([] if vacuum else ["-n"]) +
                    ["bench"])


def parse_pgbench(out):
    failed = re.search(r"number of failed transactions: (\d+)", out)
    processed = re.search(r"number of transactions actually processed: (\d+)", out)
    return (int(failed.group(1)) if failed else None,
            int(processed.group(1)) if processed else None)


def label_from_tags(tags):
    """The backup label the helper split into ami-snapshot:backup-label-N tags."""
    chunks = [tags[k] for k in sorted((k for k in tags if k.startswith("ami-snapshot:backup-label-")),
                                      key=lambda k: int(k.rsplit("-", 1)[1]))]
    return b"".join(base64.b64decode(c) for c in chunks).decode() if chunks else ""


def check_restore(w, restored, before):
    """Start PostgreSQL on a restored snapshot set of a World loaded by
    pgbench (database bench) and the marker writer, and check it: crash
    recovery, every marker row committed before the call (ids <= before),
    pgbench's balances, amcheck."""
    ok(not restored.has_backup_label(), "the snapshot has no backup_label (crash-recovery path)")
    restored.start()
    ok("database system was not properly shut down; automatic recovery in progress"
       in restored.log_text() or "redo done" in restored.log_text(),
       "the restored cluster started by crash recovery")
    got = restored.psql("SELECT count(*) FILTER (WHERE id <= %d), max(id) FROM marks" % before,
                        db="bench").split("|")
    is_(int(got[0]), before,
        "all %d marker rows committed before the call are in the restore" % before)
    diag("restored marks: max id %s (%d committed before the call)" % (got[1], before))
    inv = restored.psql(
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts), "
        "(SELECT sum(tbalance) FROM pgbench_tellers), "
        "(SELECT sum(bbalance) FROM pgbench_branches), "
        "(SELECT coalesce(sum(delta), 0) FROM pgbench_history), "
        "(SELECT count(*) FROM pgbench_history)", db="bench").split("|")
    diag("restored balances: accounts %s tellers %s branches %s history %s (%s rows)" % tuple(inv))
    ok(inv[0] == inv[1] == inv[2] == inv[3], "pgbench invariant holds in the restore")
    ok(int(inv[4]) > 0, "the restore contains pgbench history rows")
    am = subprocess.run(w.pg_cmd([os.path.join(PGBIN, "pg_amcheck"),
                                  "-h", w.pgrun, "-p", str(restored.port), "--all",
                                  "--heapallindexed", "--install-missing", "--progress"]),
                        capture_output=True, text=True)
    is_(am.returncode, 0, "amcheck (pg_amcheck --all --heapallindexed) finds no corruption")
    if am.returncode:
        diag(am.stdout[-2000:] + am.stderr[-2000:])


def restart_helper(w, extra=""):
    """The helper again, with extra appended to its configuration."""
    w.stop_helper()
    with open(w.helper_conf, "w") as f:
        f.write(w.helper_config_text() + extra)
    w.start_helper()


def drill_database(w):
    """The drills' database: pgbench's tables in bench, and drill_victim,
    the relation the damage tests corrupt (written once, frozen, never
    touched again).  Returns drill_victim's file path under PGDATA."""
    w.psql("CREATE DATABASE bench")
    w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port),
                   "-i", "-s", "2", "-q", "bench"])
    w.psql("CREATE TABLE drill_victim AS SELECT g AS id, md5(g::text) AS v "
           "FROM generate_series(1, 5000) g", db="bench")
    w.psql("CREATE INDEX ON drill_victim (id)", db="bench")
    w.psql("VACUUM FREEZE drill_victim", db="bench")
    w.psql("CHECKPOINT")
    return w.psql("SELECT pg_relation_filepath('drill_victim')", db="bench")


def damage_snapshot(w, request_id, victim):
    """Flips bytes in the header of block 0 of victim (a path under PGDATA)
    inside the emulator's copy of the data volume's snapshot of request_id."""
    data_vol = w.volume("data")
    snap = [s for s in w.ec2_state()["snapshots"]
            if s["volume_id"] == data_vol.vol_id
            and s["tags"].get("ami-snapshot:request-id") == request_id][0]
    mnt = w.path("corrupt-mnt")
    os.makedirs(mnt, exist_ok=True)
    subprocess.run(["mount", "-o", "loop", snap["file"], mnt], check=True)
    try:
        rel = os.path.join(mnt, os.path.relpath(w.pgdata, data_vol.mount), victim)
        with open(rel, "r+b") as f:
            f.seek(8)           # pd_lower, pd_upper, pd_special, version of block 0
            f.write(b"\xff" * 16)
    finally:
        subprocess.run(["umount", mnt], check=True)


def final_drill_cleanup(w, drill_dir, cli):
    """At a test's end, whatever happened: verify --cleanup of its drill directory."""
    try:
        subprocess.run([cli, "verify", "-c", w.helper_conf, "--device-dir", w.device_link_dir,
                        "--drill-dir", drill_dir, "--cleanup"], capture_output=True, timeout=300)
    except Exception as e:  # noqa: BLE001
        diag("final cleanup: %s" % e)


def drill_conf(w, drill_dir):
    """A [drill] section for the helper's drills from SQL: its scratch
    directory, the emulator's by-id links, short waits, one job at a time."""
    return f"""
[drill]
drill_dir = {drill_dir}
device_dir = {w.device_link_dir}
device_timeout = 30s
kill_grace = 20s
max_jobs = 1
"""


def session(w, sql_cmds, background=False):
    """psql running several commands in one session, continuing after errors."""
    cmd = w.pg_cmd([x for x in w.psql_cmd() if x not in ("-v", "ON_ERROR_STOP=1")])
    for c in sql_cmds:
        cmd += c if isinstance(c, list) else ["-c", c]
    if background:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


def wait_for_call(w, timeout=10):
    """pid of the backend running ami_snapshot(), once it is in the call."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        pid = w.psql("SELECT pid FROM pg_stat_activity WHERE query LIKE 'SELECT%ami_snapshot(%' "
                     "AND pid <> pg_backend_pid() AND state = 'active'")
        if pid:
            return int(pid.splitlines()[0])
        time.sleep(0.05)
    raise RuntimeError("ami_snapshot() call not seen in pg_stat_activity")


def last_history(w):
    """name, status, error_code, error_message, request_id of the newest row."""
    return w.psql("SELECT name, status, coalesce(error_code, ''), "
                  "replace(coalesce(error_message, ''), '|', '/'), request_id "
                  "FROM ami_snapshot_history ORDER BY id DESC LIMIT 1").split("|")


def wait_history(w, name, status, timeout=30):
    """The newest history row once it is (name, status), or whatever it is then."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        h = last_history(w)
        if h[0] == name and h[1] == status:
            return h
        time.sleep(0.1)
    return last_history(w)


def check_after(w, what):
    ok(w.frozen_mounts() == [], "%s: no filesystem left frozen" % what)
    is_(w.psql("SELECT 1"), "1", "%s: the database serves" % what)
    bugs = [line for line in open(w.helper_log, errors="replace") if "BUG: state" in line]
    ok(not bugs, "%s: every change of the operation's state was one the machine allows" % what,
       "".join(bugs[-5:]))


def check_failed(w, r, name, code, what):
    """After ami_snapshot(name) failed in a session r that ran
    SAME_SESSION_CHECK next: the error names code, the session's backup was
    aborted, the history row is failed with code, nothing is frozen, and the
    database takes writes.  Returns the history row (last_history)."""
    ok(code in r.stderr, "%s: the error names %s" % (what, code), r.stderr)
    is_(r.stdout.split(), ["t", "t"], "%s: the session's backup was aborted" % what)
    h = wait_history(w, name, "failed")
    is_(h[:3], [name, "failed", code], "%s: history row failed, with %s" % (what, code))
    check_after(w, what)
    is_(w.psql("CREATE TABLE IF NOT EXISTS e2e_writes (at timestamptz); "
               "INSERT INTO e2e_writes VALUES (now()) RETURNING true"), "t",
        "%s: the database takes writes" % what)
    return h


def log_pos(w):
    return os.path.getsize(w.helper_log)


def log_since(w, pos):
    with open(w.helper_log) as f:
        f.seek(pos)
        return f.read()


def round_trips(reqs):
    """How many round trips one after the other the emulator's request
    records reqs took: requests whose times overlap (made at once) count
    once.  An order of arrivals and answers, not a duration."""
    waves, end = 0, None
    for r in sorted(reqs, key=lambda r: r["received_at"]):
        if end is None or r["received_at"] > end:
            waves += 1
            end = r["responded_at"]
        else:
            end = max(end, r["responded_at"])
    return waves


def real_calls(w):
    """CreateSnapshots calls that were not DryRuns, as the emulator counted them."""
    n = 0
    with open(os.path.join(w.store, "emu-state", "requests.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("action") == "CreateSnapshots" and "DryRun" not in rec.get("params", {}):
                n += 1
    return n


def helper_at(commit, newer_than):
    """The helper as it was at commit, built from git's history (cached under
    /var/tmp), for the "helper too old" tests; None when the history lacks
    the commit, or when its protocol.h already has newer_than (the feature's
    tag): that helper would not be old."""
    base = subprocess.run(["git", "-C", ROOT, "rev-parse", "--verify", "-q",
                           commit + "^{commit}"],
                          capture_output=True, text=True).stdout.strip()
    if not base:
        return None
    d = "/var/tmp/amis-old-helper-%s" % base[:12]
    binary = os.path.join(d, "helper", "ami-snapshot-helper")
    if not os.access(binary, os.X_OK):
        os.makedirs(d, exist_ok=True)
        subprocess.run("git -C %s archive %s helper | tar -x -C %s" % (ROOT, base, d),
                       shell=True, check=True)
        subprocess.run(["make", "-s", "-C", os.path.join(d, "helper"), "ami-snapshot-helper"],
                       check=True, capture_output=True)
    with open(os.path.join(d, "helper", "common", "protocol.h")) as f:
        if newer_than in f.read():
            return None
    return binary
