#!/usr/bin/python3
"""
End to end: `ami-snapshot status`, the operator's view (doc/lifecycle.md,
"Status"), against the real helper, PostgreSQL and the emulator.

  * With the database up: the helper idle, the newest calls from the
    history table through psql (a success and a failure with its code),
    newest first, as an aligned table and as JSON; --last.
  * During a slowed call: the helper frozen, its step, request, name and
    mounts, exit 8.
  * PostgreSQL stopped (the database may be gone): the history from EC2's
    tags instead, saying why; a wrong database and a database without the
    extension say so and fall back the same way.
  * The helper stopped: exit 9, the history still shown.
  * During a restore drill from SQL: the helper's job listed (kind, pid,
    request, running time).
  * Usage errors exit 2; no key, secret or token in any output.
"""

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import World  # noqa: E402
from e2e import drill_conf, final_drill_cleanup, restart_helper, session  # noqa: E402
from restore_cmd import CLI  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_check import imds_secrets  # noqa: E402
from test_watchdog import finish, slow_call, snapshot_bg, wait_frozen  # noqa: E402

OUTPUTS = []


def status(w, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    r = subprocess.run([CLI, "-c", w.helper_conf, "status"] + list(args), capture_output=True,
                       text=True, timeout=120, env=env)
    OUTPUTS.extend([r.stdout, r.stderr])
    return r


def status_json(w, *args):
    r = status(w, "--json", *args)
    try:
        return r.returncode, json.loads(r.stdout)
    except ValueError:
        return r.returncode, {"unparsed": r.stdout + r.stderr}


def main():
    w = World()
    drill_dir = w.path("drill")
    try:
        os.makedirs(drill_dir)
        restart_helper(w, drill_conf(w, drill_dir))
        secrets = imds_secrets(w)
        good = w.psql("SELECT status FROM ami_snapshot('status good')")
        is_(good, "succeeded", "a snapshot to show")
        w.emulator_control({"action": "CreateSnapshots", "fault": "internal", "count": 1,
                            "dry_run": False})
        r = w.psql("SELECT status FROM ami_snapshot('status bad')", check=False)
        ok(r.returncode != 0, "a call that fails (EC2 InternalError while frozen)")
        w.emulator_control({"clear_faults": True})

        # ---- the database up: the history through PostgreSQL
        r = status(w, "--pgdata", w.pgdata)
        is_(r.returncode, 0, "status: exit 0 (helper idle)")
        lines = r.stdout.splitlines()
        diag("\n".join(lines))
        is_(lines[0] if lines else "", "helper: idle", "status: the helper is idle")
        ok(any(x.startswith("history (PostgreSQL)") for x in lines),
           "status: the history read through PostgreSQL")
        head = [x for x in lines if x.startswith("ID ")]
        rows = [x for x in lines if "status good" in x or "status bad" in x]
        ok(head and len(rows) == 2, "status: a header and the two calls")
        if head and len(rows) == 2:
            ok("status bad" in rows[0] and "InternalError" in rows[0] and "failed" in rows[0],
               "status: newest first, the failure with its error code")
            ok("succeeded" in rows[1], "status: the success")
            col = head[0].index("STATUS")
            ok(all(x[col:].split()[0] in ("failed", "succeeded") for x in rows),
               "status: the columns are aligned under their header")
        rc, j = status_json(w, "--pgdata", w.pgdata)
        is_(rc, 0, "status --json: exit 0")
        is_(j.get("history_source"), "postgresql", "status --json: the history's source")
        is_((j.get("helper") or {}).get("state"), "idle", "status --json: helper.state")
        hist = j.get("history") or []
        is_([h.get("name") for h in hist][:2], ["status bad", "status good"],
            "status --json: the rows, newest first")
        ok(hist and hist[0].get("error_code") == "InternalError" and
           len(hist[1].get("snapshot_ids") or []) == len(w.volumes),
           "status --json: error code, snapshot ids")
        ok(hist and "backup_label" not in hist[0], "status --json: no backup label in the rows")
        rc, j = status_json(w, "--pgdata", w.pgdata, "--last", "1")
        is_(len(j.get("history") or []), 1, "status --last 1: one row")

        # ---- during a call: frozen, exit 8
        slow_call(w, 3000)
        p = snapshot_bg(w, "status frozen")
        ok(wait_frozen(w), "a slowed call is frozen")
        rc, j = status_json(w, "--no-db")
        h = j.get("helper") or {}
        is_(rc, 8, "status while frozen: exit 8")
        is_((h.get("state"), h.get("name")), ("frozen", "status frozen"),
            "status while frozen: the state and the call's name")
        ok(h.get("request_id") and h.get("step"), "status while frozen: request id and step")
        is_(sorted(h.get("frozen_mounts") or []), sorted(v.mount for v in w.volumes),
            "status while frozen: the frozen mounts")
        rc_, out, err = finish(p)
        is_(rc_, 0, "the slowed call then succeeds")
        w.emulator_control({"clear_faults": True})

        # ---- during a drill: the helper's job listed
        good_id = w.psql("SELECT id FROM ami_snapshot_history WHERE name = 'status good'")
        drill = session(w, ["SELECT outcome FROM ami_snapshot_verify(%s)" % good_id],
                        background=True)
        seen = None
        deadline = time.time() + 60
        while seen is None and time.time() < deadline and drill.poll() is None:
            rc, j = status_json(w, "--no-db")
            jobs = (j.get("helper") or {}).get("jobs") or []
            seen = next((x for x in jobs if x.get("kind") == "verify"), None)
            time.sleep(0.2)
        ok(seen and seen.get("pid", 0) > 0 and seen.get("request_id") and
           seen.get("running_seconds") is not None,
           "status during a drill: the verify job with its pid, request and time", seen)
        if seen:
            r = status(w, "--no-db")
            ok(("job: verify (pid %d" % seen["pid"]) in r.stdout,
               "status during a drill: the table's job line", r.stdout)
        out, err = drill.communicate(timeout=300)
        ok("passed" in out, "the drill passed", err)
        rc, j = status_json(w, "--no-db")
        is_((j.get("helper") or {}).get("jobs"), [], "status after the drill: no job")

        # ---- a wrong database, a database without the extension: EC2's tags
        rc, j = status_json(w, "--db", "host=%s port=%d dbname=nosuchdb" % (w.pgrun, w.port))
        is_(j.get("history_source"), "ec2", "status, no such database: the history from EC2")
        ok("nosuchdb" in (j.get("postgresql_error") or ""),
           "status, no such database: says why", j.get("postgresql_error"))
        w.psql("CREATE DATABASE plain")
        rc, j = status_json(w, "--db", "host=%s port=%d dbname=plain" % (w.pgrun, w.port),
                            "--pgdata", w.pgdata)
        ok("not installed" in (j.get("postgresql_error") or ""),
           "status, a database without the extension: says so", j.get("postgresql_error"))
        names = [b.get("name") for b in j.get("backups") or []]
        ok("status good" in names and "status frozen" in names,
           "status: the fallback lists this cluster's backups from EC2's tags", names)

        # ---- PostgreSQL stopped: EC2's tags, exit 0
        w.stop_postgres()
        r = status(w, "--pgdata", w.pgdata)
        diag(r.stdout)
        is_(r.returncode, 0, "status, PostgreSQL stopped: exit 0")
        ok("not running" in r.stdout and "from EC2's tags" in r.stdout,
           "status, PostgreSQL stopped: says so and reads EC2's tags")
        ok("status good" in r.stdout, "status, PostgreSQL stopped: the backups are listed")
        w.start_postgres()

        # ---- the helper stopped: exit 9, the history still read
        w.stop_helper()
        rc, j = status_json(w, "--pgdata", w.pgdata)
        is_(rc, 9, "status, helper stopped: exit 9")
        ok(j.get("helper") is None and j.get("helper_error"),
           "status, helper stopped: helper null, and why", j.get("helper_error"))
        is_(j.get("history_source"), "postgresql", "status, helper stopped: history still read")
        restart_helper(w, drill_conf(w, drill_dir))

        # ---- usage
        is_(status(w, "extra").returncode, 2, "status with an argument: exit 2")
        is_(status(w, "--last", "0").returncode, 2, "status --last 0: exit 2")

        leaks = [s for s in secrets if any(s in o for o in OUTPUTS)]
        is_(leaks, [], "no access key, secret or token in any output")
        ok(len(secrets) >= 3, "(the keys looked for: %d)" % len(secrets))
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        final_drill_cleanup(w, drill_dir, CLI)
        w.close()
    done()


if __name__ == "__main__":
    main()
