"""e2e.py - helpers shared by the end-to-end tests (test/e2e/)."""

import json
import os
import subprocess
import time

from tap import is_, ok

# Run after a failed call in the same psql session: proves the session's
# backup was stopped or aborted (pg_backup_start refuses a second one).
SAME_SESSION_CHECK = ["-c", "SELECT pg_backup_start('check', true) IS NOT NULL AS started",
                      "-c", "SELECT lsn IS NOT NULL AS stopped FROM pg_backup_stop(false)"]


def session(w, sql_cmds, background=False):
    """psql running several commands in one session, continuing after errors."""
    cmd = ["runuser", "-u", "postgres", "--"] + [
        x for x in w.psql_cmd() if x not in ("-v", "ON_ERROR_STOP=1")]
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


def log_pos(w):
    return os.path.getsize(w.helper_log)


def log_since(w, pos):
    with open(w.helper_log) as f:
        f.seek(pos)
        return f.read()


def real_calls(w):
    """CreateSnapshots calls that were not DryRuns, as the emulator counted them."""
    n = 0
    with open(os.path.join(w.store, "emu-state", "requests.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("action") == "CreateSnapshots" and "DryRun" not in rec.get("params", {}):
                n += 1
    return n
