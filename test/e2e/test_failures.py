#!/usr/bin/python3
"""
End to end: a backup that was started is always stopped or aborted, and a
failure leaves the database serving, nothing frozen, and a history row.

Cases: an EC2 error after the backup started, query cancel,
statement_timeout, pg_terminate_backend, the client vanishing (backend exit
via client_connection_check_interval), a second concurrent call (Busy), a
path outside the helper's allow-list, freeze => false, an immediate
shutdown of the server during a call (its row settled by the next call),
and the history writers that run while the helper waits for EC2 (a backend
exiting during PREPARE or the tagging).
"""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, done, is_, ok  # noqa: E402
from world import World  # noqa: E402
from e2e import (SAME_SESSION_CHECK, check_after, last_history, session,  # noqa: E402
                 wait_for_call, wait_history)

WRITERS = ("SELECT count(*) FROM pg_stat_activity "
           "WHERE backend_type = 'ami_snapshot history writer'")


def wait_sql(w, sql, want, timeout=15):
    deadline = time.time() + timeout
    got = None
    while time.time() < deadline:
        got = w.psql(sql)
        if got == want:
            break
        time.sleep(0.05)
    return got


def wait_idle_helper(w):
    """Until a call gets through (the helper may still be ending an abandoned one)."""
    deadline = time.time() + 60
    while time.time() < deadline and w.psql(
            "SELECT 1 FROM ami_snapshot('helper idle')", check=False).returncode != 0:
        time.sleep(0.5)


def history_writers_overlap(w):
    """11. The history rows are written while the helper waits for EC2: the
    start row's worker runs during PREPARE, the final row's worker connects
    during the tagging and gets the row at DONE.  A backend that exits
    meanwhile leaves neither a row stuck 'running' nor a late 'succeeded'."""
    w.emulator_reset()
    # a. Success: the final row's worker waits, connected, while EC2 tags.
    w.emulator_control({"action": "CreateTags", "fault": "slow", "delay_ms": 2500,
                        "count": -1})
    p = session(w, ["SELECT status FROM ami_snapshot('writer waits')"], background=True)
    waiting = wait_sql(w, WRITERS + " AND wait_event_type = 'Extension'", "1", timeout=20)
    is_(waiting, "1", "overlap: the final row's writer is connected and waiting while EC2 tags")
    is_(w.psql("SELECT status FROM ami_snapshot_history WHERE name = 'writer waits'"),
        "running", "overlap: meanwhile the row says running")
    out, errout = p.communicate(timeout=60)
    is_(out.strip(), "succeeded", "overlap: the call succeeds")
    is_(w.psql("SELECT status, coalesce(error_code, '') FROM ami_snapshot_history "
               "WHERE name = 'writer waits'"), "succeeded|",
        "overlap: the final row was written by the waiting writer")
    is_(wait_sql(w, WRITERS, "0"), "0", "overlap: no history writer is left")

    # a2. The waiting writer itself terminated: the call writes its row
    #     through a new one.
    p = session(w, ["SELECT status FROM ami_snapshot('writer terminated')"], background=True)
    waiting = wait_sql(w, WRITERS + " AND wait_event_type = 'Extension'", "1", timeout=20)
    is_(waiting, "1", "writer terminated: the final row's writer waits")
    w.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
           "WHERE backend_type = 'ami_snapshot history writer'")
    out, errout = p.communicate(timeout=60)
    is_(out.strip(), "succeeded", "writer terminated: the call succeeds")
    is_(w.psql("SELECT status FROM ami_snapshot_history WHERE name = 'writer terminated'"),
        "succeeded", "writer terminated: its row was written all the same")
    ok("could not record" not in errout, "writer terminated: no warning about the row", errout)

    # b. Terminated while EC2 tags: the waiting writer writes nothing; the
    #    exit callback marks the row.
    p = session(w, ["SELECT status FROM ami_snapshot('gone while tagging')"], background=True)
    waiting = wait_sql(w, WRITERS + " AND wait_event_type = 'Extension'", "1", timeout=20)
    is_(waiting, "1", "gone while tagging: the final row's writer waits")
    pid = wait_for_call(w)
    w.psql("SELECT pg_terminate_backend(%d)" % pid)
    p.communicate(timeout=60)
    h = wait_history(w, "gone while tagging", "failed")
    is_(h[:3], ["gone while tagging", "failed", "BackendExited"],
        "gone while tagging: the row is marked by the exit callback")
    ok("backup stopped" in h[3], "gone while tagging: its message says the backup had stopped",
       h[3])
    is_(wait_sql(w, WRITERS, "0"), "0", "gone while tagging: the waiting writer exited")
    time.sleep(3)   # past the tags' delay: nothing writes the row afterwards
    is_(w.psql("SELECT status FROM ami_snapshot_history WHERE name = 'gone while tagging'"),
        "failed", "gone while tagging: no late 'succeeded' overwrote it")
    w.emulator_reset()
    wait_idle_helper(w)
    check_after(w, "gone while tagging")

    # c. Terminated during PREPARE while its start row's writer waits for a
    #    lock: the exit callback lets that writer finish before marking the
    #    row, so the row ends failed, never 'running'.
    locker = subprocess.Popen(w.pg_cmd(w.psql_cmd()), stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        locker.stdin.write("BEGIN;\nLOCK TABLE ami_snapshot_history IN SHARE ROW EXCLUSIVE "
                           "MODE;\n")
        locker.stdin.flush()
        is_(wait_sql(w, "SELECT count(*) FROM pg_locks WHERE granted AND "
                        "relation = 'ami_snapshot_history'::regclass AND "
                        "mode = 'ShareRowExclusiveLock'", "1"), "1",
            "start row held: the history table is locked")
        w.emulator_control({"latency_ms": 3000})
        p = session(w, ["SELECT status FROM ami_snapshot('start row held')"], background=True)
        is_(wait_sql(w, WRITERS + " AND wait_event_type = 'Lock'", "1"), "1",
            "start row held: its writer waits for the lock while the helper prepares")
        pid = wait_for_call(w)
        w.psql("SELECT pg_terminate_backend(%d)" % pid)
        time.sleep(0.5)
        is_(w.psql("SELECT count(*) FROM ami_snapshot_history WHERE name = 'start row held'"),
            "0", "start row held: nothing is written while the lock is held")
        locker.stdin.write("COMMIT;\n")
        locker.stdin.close()
        locker.wait(timeout=30)
    finally:
        if locker.poll() is None:
            locker.kill()
            locker.wait()
    p.communicate(timeout=60)
    h = wait_history(w, "start row held", "failed")
    is_(h[:3], ["start row held", "failed", "BackendExited"],
        "start row held: the row ends failed (BackendExited), not running")
    is_(wait_sql(w, WRITERS, "0"), "0", "start row held: no history writer is left")
    w.emulator_reset()
    wait_idle_helper(w)
    check_after(w, "start row held")


def main():
    w = World(pg_conf_extra="client_connection_check_interval = 200ms\n")
    try:
        w.psql("CREATE TABLE t (x int)")

        # 1. An EC2 error after the backup started (skip the preflight DryRun
        #    and the re-warming DryRun before the freeze).
        w.emulator_control({"action": "CreateSnapshots", "fault": "internal", "count": 1,
                            "dry_run": False})
        r = session(w, ["SELECT * FROM ami_snapshot('ec2 error')"] + [SAME_SESSION_CHECK])
        ok("InternalError" in r.stderr, "EC2 InternalError reaches SQL", r.stderr)
        ok("ami_snapshot helper failed during snapshot" in r.stderr,
           "the error says which step failed", r.stderr)
        is_(r.stdout.split(), ["t", "t"], "ec2 error: the session's backup was aborted")
        h = last_history(w)
        is_(h[:3], ["ec2 error", "failed", "InternalError"],
            "ec2 error: history row failed, with the EC2 error code")
        ok("InternalError" in h[3], "ec2 error: history keeps the EC2 message", h[3])
        check_after(w, "ec2 error")
        w.emulator_reset()

        # 2. Throttling in PREPARE: nothing started at all.
        w.emulator_control({"action": "CreateSnapshots", "fault": "throttle", "count": 1})
        r = session(w, ["SELECT * FROM ami_snapshot('throttled')"])
        ok("RequestLimitExceeded" in r.stderr and "prepare" in r.stderr,
           "throttled preflight: clear error", r.stderr)
        w.emulator_reset()

        # 3..5: a call held in flight by latency, interrupted three ways.
        w.emulator_control({"latency_ms": 3000})
        p = session(w, ["SELECT * FROM ami_snapshot('cancelled')"] + [SAME_SESSION_CHECK],
                    background=True)
        pid = wait_for_call(w)
        time.sleep(0.8)
        w.psql("SELECT pg_cancel_backend(%d)" % pid)
        out, errout = p.communicate(timeout=60)
        ok("canceling statement due to user request" in errout, "cancel: statement cancelled",
           errout)
        is_(out.split(), ["t", "t"], "cancel: the session's backup was aborted")
        h = wait_history(w, "cancelled", "failed")
        is_(h[:3], ["cancelled", "failed", "57014"], "cancel: history row failed (57014)")
        check_after(w, "cancel")

        r = session(w, ["SET statement_timeout = '1s'", "SELECT * FROM ami_snapshot('timed out')"]
                    + [SAME_SESSION_CHECK])
        ok("canceling statement due to statement timeout" in r.stderr,
           "statement_timeout: statement cancelled", r.stderr)
        is_(r.stdout.split(), ["t", "t"], "statement_timeout: the session's backup was aborted")
        h = wait_history(w, "timed out", "failed")
        is_(h[:3], ["timed out", "failed", "57014"], "statement_timeout: history row failed")
        check_after(w, "statement_timeout")

        p = session(w, ["SELECT * FROM ami_snapshot('terminated')"], background=True)
        pid = wait_for_call(w)
        time.sleep(0.8)
        w.psql("SELECT pg_terminate_backend(%d)" % pid)
        out, errout = p.communicate(timeout=60)
        ok("terminating connection due to administrator command" in errout,
           "pg_terminate_backend: backend terminated", errout)
        h = wait_history(w, "terminated", "failed")
        is_(h[:3], ["terminated", "failed", "BackendExited"],
            "pg_terminate_backend: history row marked by the exit callback")
        is_(w.psql("SELECT count(*) FROM pg_stat_activity WHERE pid = %d" % pid), "0",
            "pg_terminate_backend: the backend is gone")
        check_after(w, "pg_terminate_backend")

        # 6. The client vanishes: the backend notices (client_connection_check_interval)
        #    and exits; the backup is aborted by the exit callback.
        p = session(w, ["SELECT * FROM ami_snapshot('client gone')"], background=True)
        pid = wait_for_call(w)
        time.sleep(0.5)
        # p is runuser; kill the psql under it too.
        subprocess.run(["pkill", "-KILL", "-f", "ami_snapshot\\('client gone'\\)"])
        p.send_signal(signal.SIGKILL)
        p.communicate(timeout=30)
        h = wait_history(w, "client gone", "failed", timeout=30)
        is_(h[:3], ["client gone", "failed", "BackendExited"],
            "client gone: history row marked by the exit callback")
        deadline = time.time() + 20
        while time.time() < deadline and w.psql(
                "SELECT count(*) FROM pg_stat_activity WHERE pid = %d" % pid) != "0":
            time.sleep(0.2)
        is_(w.psql("SELECT count(*) FROM pg_stat_activity WHERE pid = %d" % pid), "0",
            "client gone: the backend exited")
        check_after(w, "client gone")

        # 6b. Cancelled while the call made while frozen is in flight: the
        #     helper stops waiting for EC2 and thaws at once, not at the
        #     call's end or the freeze deadline.
        w.emulator_reset()
        # The abandoned operation of case 6 may still be finishing its calls;
        # the fault below must meet this operation's calls only.
        deadline = time.time() + 60
        while time.time() < deadline and w.psql(
                "SELECT 1 FROM ami_snapshot('helper idle')", check=False).returncode != 0:
            time.sleep(0.5)
        w.emulator_control({"action": "CreateSnapshots", "fault": "slow", "delay_ms": 8000,
                            "count": 1, "dry_run": False})
        pos = os.path.getsize(w.helper_log)
        p = session(w, ["SELECT * FROM ami_snapshot('cancel in flight')"] + [SAME_SESSION_CHECK],
                    background=True)
        pid = wait_for_call(w)
        deadline = time.time() + 15
        while time.time() < deadline and not w.frozen_mounts(wait=0.5):
            pass
        t_cancel = time.time()
        w.psql("SELECT pg_cancel_backend(%d)" % pid)
        while time.time() < t_cancel + 30 and w.frozen_mounts(wait=0.5):
            pass
        thawed_after = time.time() - t_cancel
        # An ordering: thawed before EC2's answer (delayed 8 s) could arrive.
        ok(not w.frozen_mounts() and thawed_after < 8,
           "cancel in flight: thawed %.1f s after the cancel, before EC2's answer (delayed 8 s)"
           % thawed_after)
        out, errout = p.communicate(timeout=60)
        is_(out.split(), ["t", "t"], "cancel in flight: the session's backup was aborted")
        deadline = time.time() + 15
        while time.time() < deadline and "ClientGone" not in open(w.helper_log).read()[pos:]:
            time.sleep(0.2)
        ok("ClientGone" in open(w.helper_log).read()[pos:],
           "cancel in flight: the helper abandoned the call (ClientGone)")
        check_after(w, "cancel in flight")
        w.emulator_reset()

        # 7. One operation at a time.
        w.emulator_control({"latency_ms": 2000})
        first = session(w, ["SELECT status FROM ami_snapshot('first')"], background=True)
        wait_for_call(w)
        time.sleep(0.3)
        r = session(w, ["SELECT * FROM ami_snapshot('second')"])
        ok("Busy" in r.stderr, "a concurrent call gets Busy", r.stderr)
        out, errout = first.communicate(timeout=60)
        is_(out.strip(), "succeeded", "the first call is not disturbed", )
        w.emulator_reset()
        w.emulator_control({"latency_ms": 0})

        # 8. A path outside the allow-list.
        w.stop_helper()
        conf = open(w.helper_conf).read()
        with open(w.helper_conf, "w") as f:
            f.write(conf.replace("allow = " + w.path("mnt"),
                                 "allow = " + w.volume("data").mount))
        w.start_helper()
        r = session(w, ["SELECT * FROM ami_snapshot('not allowed')"] + [SAME_SESSION_CHECK])
        ok("PathNotAllowed" in r.stderr and w.volume("wal").mount in r.stderr,
           "a filesystem outside the allow-list is refused, naming it", r.stderr)
        is_(r.stdout.split(), ["t", "t"], "not allowed: no backup left running")
        w.stop_helper()
        with open(w.helper_conf, "w") as f:
            f.write(conf)
        w.start_helper()

        # 9. freeze => false.
        r = w.psql("SELECT status, frozen_ms, array_length(snapshot_ids, 1) "
                   "FROM ami_snapshot('no freeze', freeze => false)")
        is_(r, "succeeded|0|3", "freeze => false: snapshots without freezing")
        check_after(w, "freeze => false")

        # 9b. EC2 refuses the final tags of a complete backup: the call
        #     succeeds with a warning, the tags are recorded and applied by
        #     the helper before its next request (never tagged failed).
        w.emulator_control({"action": "CreateTags", "fault": "internal", "count": 4})
        r = w.psql("SELECT status FROM ami_snapshot('tags refused')", check=False)
        ok(r.returncode == 0 and "succeeded" in r.stdout,
           "tags refused: the backup itself succeeds", r.stderr)
        ok("applied again before the helper's next request" in r.stderr,
           "tags refused: a warning says the tags will be applied again", r.stderr)
        w.emulator_reset()

        def tagged(name):
            return [s["tags"] for s in w.emulator_state()["snapshots"]
                    if s["tags"].get("ami-snapshot:name") == name]
        is_(sorted(set(t.get("ami-snapshot:backup-state") for t in tagged("tags refused"))),
            ["started"], "tags refused: meanwhile its snapshots still say started")
        is_(w.psql("SELECT status FROM ami_snapshot('after tags refused')"), "succeeded",
            "tags refused: the next call succeeds")
        got = tagged("tags refused")
        is_(sorted(set(t.get("ami-snapshot:backup-state") for t in got)), ["stopped"],
            "tags refused: the next call applied the recorded tags: stopped, not failed")
        ok(got and all("ami-snapshot:backup-label-1" in t and "ami-snapshot:stop-lsn" in t
                       for t in got),
           "tags refused: with the backup label and the stop LSN")
        check_after(w, "tags refused")

        # 10. An immediate shutdown during a call: no exit callback runs, the
        #     row stays 'running' until the next call settles it.
        w.emulator_control({"latency_ms": 3000})
        p = session(w, ["SELECT * FROM ami_snapshot('immediate')"], background=True)
        wait_for_call(w)
        time.sleep(0.8)
        w.stop_postgres(mode="immediate")
        p.communicate(timeout=60)
        w.start_postgres()
        w.emulator_control({"latency_ms": 0})
        row = "SELECT status, coalesce(error_code, '') FROM ami_snapshot_history " \
              "WHERE name = 'immediate'"
        is_(w.psql(row), "running|",
            "immediate shutdown: the row is left 'running' (no exit callback ran)")
        # A drill's row left the same way (its backend gone with the server):
        # the next call settles it too, whatever that call is.
        w.psql("INSERT INTO ami_snapshot_verification (request_id, status, started_at, "
               "backend_pid, username) VALUES ('vanished-drill', 'running', "
               "now() - interval '1 minute', 999999, 'postgres')")
        deadline = time.time() + 60
        r = None
        while time.time() < deadline:
            r = w.psql("SELECT status FROM ami_snapshot('after immediate')", check=False)
            if r.returncode == 0:
                break
            time.sleep(0.5)   # the helper may still be ending the vanished call: Busy
        ok(r is not None and r.returncode == 0 and "succeeded" in r.stdout,
           "immediate shutdown: the next call succeeds", r.stderr if r else None)
        is_(w.psql(row), "failed|BackendGone", "immediate shutdown: the next call settled the "
            "vanished call's row: failed, BackendGone")
        ok("immediate shutdown of the server" in w.psql(
            "SELECT error_message FROM ami_snapshot_history WHERE name = 'immediate'"),
           "immediate shutdown: its message says what happened")
        is_(w.psql("SELECT status, error_code FROM ami_snapshot_verification "
                   "WHERE request_id = 'vanished-drill'"), "interrupted|BackendGone",
            "immediate shutdown: the next snapshot settled a drill's row left running too")
        is_(w.psql("SELECT count(*) FROM ami_snapshot_history WHERE status = 'running'"), "0",
            "immediate shutdown: no row is left running")
        check_after(w, "immediate shutdown")
        history_writers_overlap(w)
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        w.close()
    done()


if __name__ == "__main__":
    main()
