#!/usr/bin/python3
"""
End to end: ami_snapshot_verify() from SQL, run by the helper as a job
(its own `ami-snapshot verify --json` as a child), against the emulator's
volumes (real loop devices behind by-id links).

PostgreSQL on ext4 (data) + XFS (pg_wal), the helper with a [drill]
section.  Under pgbench load ami_snapshot() takes a set; then:

  * ami_snapshot_verify(id) while pgbench runs on production: passed, the
    row in ami_snapshot_verification says so (checks, recovered LSN,
    durations, the report); pgbench saw no failed transaction; meanwhile
    the helper answers STATUS, takes a snapshot, and refuses a second
    drill with Busy (max_jobs 1); nothing is left;
  * an AMI (register) of the database: the AMI drill from SQL with
    tcp_port, the emulator's launched instance at 127.0.0.1: a port the
    test listens on passes, the same port closed times out; the instance
    terminated both times;
  * a damaged set (bytes flipped in a table's page in the emulator's copy
    of a snapshot): the SQL error names the relation, and so does its row
    (failed); error_on_failure => false returns the failed row instead;
  * statement_timeout, pg_cancel_backend and pg_terminate_backend during a
    drill: the helper stops the drill, the row says interrupted, nothing is
    left;
  * a role without EXECUTE is refused, and a role with EXECUTE only (no
    SELECT on the history) may verify;
  * a helper from before jobs: HelperTooOld, in the error and the row;
  * the helper and its drill SIGKILLed half-way: leftovers, which the
    restarted helper's start-up cleanup removes (no volume in the
    emulator, loop device, mount, process or scratch directory).
"""

import os
import signal
import socket
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import HELPER, World, run  # noqa: E402
from e2e import (damage_snapshot, drill_conf, drill_database, final_drill_cleanup,  # noqa: E402
                 parse_pgbench, pgbench_cmd, restart_helper, session, wait_for)
from restore_cmd import CLI  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_verify import leftovers, loop_count, nothing_left  # noqa: E402
from test_ami import old_helper  # noqa: E402
import world as world_mod  # noqa: E402

VERIFY_COLS = "outcome, drill_id IS NOT NULL, recovered_lsn IS NOT NULL, checks_failed"


def wait_nothing_left(w, drill_dir, loops_before, timeout=180):
    """The helper stops and cleans up in the background: wait until it has."""
    wait_for(lambda: not any(leftovers(w, drill_dir).values())
             and loop_count(w) == loops_before, timeout)


def drill_pid(w):
    """The verify child of the helper, if it runs."""
    hp = w.procs["helper"].pid
    out = run(["ps", "-o", "pid=,args=", "--ppid", str(hp)], check=False).stdout
    for line in out.splitlines():
        pid, args = line.strip().split(None, 1)
        if " verify " in args and "--cleanup" not in args:
            return int(pid)
    return None


def wait_drill_phase(w, pos, needle, timeout=120):
    """The helper logs its drill's progress lines: wait for one after pos."""
    def seen():
        with open(w.helper_log, errors="replace") as f:
            f.seek(pos)
            return needle in f.read()
    return wait_for(seen, timeout, 0.2)


def last_verification(w):
    return w.psql("SELECT status, coalesce(error_code, ''), "
                  "replace(coalesce(error_message, ''), '|', '/'), backup_id "
                  "FROM ami_snapshot_verification ORDER BY id DESC LIMIT 1").split("|")


def main():
    w = World(layout=[("data", "ext4"), ("wal", "xfs")])
    drill_dir = w.path("drill")
    try:
        # A drill has run here once (its directory is there): the start-up
        # cleanup runs (without it, it does nothing and asks EC2 nothing).
        os.makedirs(drill_dir)
        restart_helper(w, drill_conf(w, drill_dir))
        ok(wait_for(lambda: "cleanup of dead drills: done" in open(w.helper_log).read(), 60),
           "the helper ran verify --cleanup at start-up, without waiting for it")
        victim = drill_database(w)

        bench = subprocess.Popen(pgbench_cmd(w, 5), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        time.sleep(1)
        row = w.psql("SELECT status, id FROM ami_snapshot('sql verify good')").split("|")
        is_(row[0], "succeeded", "ami_snapshot() under load succeeded")
        good = int(row[1])
        bench.communicate(timeout=120)
        loops_before = loop_count(w)

        # ---- a good backup verifies from SQL while production runs pgbench ----
        bench = subprocess.Popen(pgbench_cmd(w, 30), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        pos = os.path.getsize(w.helper_log)
        drill = session(w, ["SELECT %s, duration_ms > 0, jsonb_array_length(checks) > 5 "
                            "FROM ami_snapshot_verify(%d, check_sql => "
                            "'SELECT count(*) = 200000 FROM pgbench_accounts', "
                            "check_db => 'bench')" % (VERIFY_COLS, good)],
                        background=True)
        ok(wait_drill_phase(w, pos, "started PostgreSQL"),
           "the helper runs the drill and logs its progress")
        st = subprocess.run([HELPER, "-c", w.helper_conf, "--status"], capture_output=True,
                            text=True, timeout=10)
        ok(st.returncode == 0 and "state: idle" in st.stdout,
           "STATUS while the drill runs: answered at once (%s)" % st.stdout.strip())
        busy = session(w, ["SELECT * FROM ami_snapshot_verify(%d)" % good])
        ok("Busy" in busy.stderr and "max_jobs" in busy.stderr,
           "a second drill while one runs: Busy", busy.stderr)
        snap = w.psql("SELECT status FROM ami_snapshot('taken during a drill')")
        is_(snap, "succeeded", "a snapshot while the drill runs succeeds")
        out, err = drill.communicate(timeout=600)
        is_(out.split(), ["passed|t|t|0|t|t"], "ami_snapshot_verify(id): passed, with its "
            "drill id, recovered LSN, no failed check, a duration and the checks")
        if err:
            diag(err)
        out, _ = bench.communicate(timeout=180)
        failed, processed = parse_pgbench(out)
        is_(failed, 0, "production pgbench during the SQL drill: no failed transaction")
        ok(processed and processed > 0, "production pgbench made progress (%s)" % processed)
        v = w.psql("SELECT status, backup_id, recovered_lsn IS NOT NULL, duration_ms > 0, "
                   "detail->>'outcome', detail->'phases_ms' ? 'recovery', "
                   "(SELECT count(*) FROM jsonb_array_elements(detail->'checks') c "
                   " WHERE c->>'name' = 'amcheck:bench' AND (c->>'ok')::bool), "
                   "finished_at >= started_at "
                   "FROM ami_snapshot_verification WHERE status <> 'error' "
                   "ORDER BY id DESC LIMIT 1").split("|")
        is_(v, ["passed", str(good), "t", "t", "passed", "t", "1", "t"],
            "the verification row: passed, the backup's id, the recovered LSN, durations, "
            "the report with amcheck of bench ok")
        is_(w.psql("SELECT status, error_code FROM ami_snapshot_verification "
                   "WHERE status = 'error'"), "error|Busy",
            "the refused second drill left its row too (error, Busy)")
        wait_nothing_left(w, drill_dir, loops_before)
        nothing_left(w, drill_dir, loops_before, "passed SQL drill")

        # ---- by name: the latest succeeded backup of that name ----
        out = w.psql("SELECT outcome, backup_id FROM ami_snapshot_verify("
                     "name => 'sql verify good', time_budget => '0')")
        is_(out, "passed|%d" % good, "by name: the latest succeeded backup of the name")

        # ---- the AMI drill with a TCP check: the instance's IP is this host ----
        row = w.psql("SELECT status, id, image_id FROM ami_snapshot('sql verify ami', "
                     "image => 'register')").split("|")
        is_(row[0], "succeeded", "an AMI (register) for the AMI drill (%s)" % row[2])
        ami_id = int(row[1])
        ok(wait_for(lambda: w.ec2_call("DescribeImages", **{"ImageId.1": row[2]}).findtext(
            "./imagesSet/item/imageState") == "available", 60), "the AMI is available")
        w.emulator_control({"launched_private_ip": "127.0.0.1"})
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        try:
            out = w.psql("SELECT outcome, (SELECT string_agg(c->>'name', ',') "
                         "FROM jsonb_array_elements(checks) c WHERE (c->>'ok')::bool) "
                         "FROM ami_snapshot_verify(%d, launch => true, tcp_port => %d, "
                         "timeout => '120 s')" % (ami_id, port))
        finally:
            listener.close()
        is_(out, "passed|launch,running,status-checks,tcp:%d" % port,
            "AMI drill from SQL with tcp_port open on the instance's IP: passed, tcp checked")
        # Nobody listens on that port now: the drill waits for it until its timeout.
        out = w.psql("SELECT outcome, detail->>'instance_id' FROM ami_snapshot_verify("
                     "%d, launch => true, tcp_port => %d, timeout => '15 s', "
                     "error_on_failure => false)" % (ami_id, port)).split("|")
        is_(out[0], "timed_out", "AMI drill with tcp_port closed: timed_out")
        states = {i["instanceId"]: i["instanceState"]["name"]
                  for i in w.ec2_state()["instances"]}
        ok(out[1] and states.get(out[1], "terminated") == "terminated",
           "its instance %s is terminated" % out[1])
        w.emulator_control({"launched_private_ip": None})
        v = last_verification(w)
        ok(v[0] == "timed_out" and v[1] == "VerifyTimedOut", "its row: timed_out", v)
        wait_nothing_left(w, drill_dir, loops_before)
        nothing_left(w, drill_dir, loops_before, "AMI drills")

        # ---- a damaged set fails, naming the relation, in SQL and in its row ----
        row = w.psql("SELECT status, id, request_id FROM ami_snapshot('sql verify bad')"
                     ).split("|")
        bad_id, badreq = int(row[1]), row[2]
        damage_snapshot(w, badreq, victim)
        r = session(w, ["SELECT * FROM ami_snapshot_verify(%d)" % bad_id])
        ok("verification of backup %s failed" % badreq in r.stderr
           and "drill_victim" in r.stderr,
           "a damaged set: the SQL error names the relation", r.stderr)
        v = last_verification(w)
        ok(v[0] == "failed" and v[1] == "VerifyFailed" and "drill_victim" in v[2]
           and v[3] == str(bad_id),
           "its row: failed, VerifyFailed, the message names the relation", v)
        out = w.psql("SELECT outcome, checks_failed > 0, "
                     "(SELECT string_agg(c->>'name', ',') FROM jsonb_array_elements(checks) c "
                     " WHERE NOT (c->>'ok')::bool) "
                     "FROM ami_snapshot_verify(%d, error_on_failure => false)" % bad_id)
        is_(out, "failed|t|amcheck:bench",
            "error_on_failure => false: the failed row, amcheck of bench failed")
        wait_nothing_left(w, drill_dir, loops_before)
        nothing_left(w, drill_dir, loops_before, "failed SQL drills")

        # ---- cancel, statement_timeout, terminate: the drill stops, nothing left ----
        slow = ("SELECT * FROM ami_snapshot_verify(%d, check_sql => "
                "'SELECT pg_sleep(300) IS NOT NULL')" % good)
        for how in ("statement_timeout", "pg_cancel_backend", "pg_terminate_backend"):
            pos = os.path.getsize(w.helper_log)
            if how == "statement_timeout":
                p = session(w, ["SET statement_timeout = '25s'", slow], background=True)
            else:
                p = session(w, [slow], background=True)
                ok(wait_drill_phase(w, pos, "started PostgreSQL"),
                   "%s: the drill got as far as its PostgreSQL" % how)
                pid = w.psql("SELECT pid FROM pg_stat_activity WHERE query LIKE "
                             "'SELECT * FROM ami_snapshot_verify(%' AND pid <> "
                             "pg_backend_pid()")
                w.psql("SELECT %s(%s)" % (how, pid))
            _, err = p.communicate(timeout=300)
            want = {"statement_timeout": "statement timeout",
                    "pg_cancel_backend": "canceling statement due to user request",
                    "pg_terminate_backend": "terminat"}[how]
            ok(want in err, "%s: the call ends (%s)" % (how, err.strip().splitlines()[:1]))
            v = wait_for(lambda: last_verification(w)[0] != "running" and last_verification(w),
                         30)
            is_(v[0], "interrupted", "%s: the row says interrupted (%s)" % (how, v[1]))
            ok(wait_for(lambda: "stopping its verify job" in
                        open(w.helper_log).read()[pos:], 10),
               "%s: the helper stopped the drill (SIGTERM)" % how)
            wait_nothing_left(w, drill_dir, loops_before)
            nothing_left(w, drill_dir, loops_before, how)
            is_(drill_pid(w), None, "%s: no drill process left" % how)

        # ---- privileges ----
        w.psql("CREATE ROLE amis_e2e_nobody LOGIN")
        r = session(w, ["SET ROLE amis_e2e_nobody",
                        "SELECT * FROM ami_snapshot_verify(%d)" % good])
        ok("permission denied for function ami_snapshot_verify" in r.stderr,
           "a role without EXECUTE is refused", r.stderr)
        w.psql("CREATE ROLE amis_e2e_verifier LOGIN")
        w.psql("GRANT EXECUTE ON FUNCTION ami_snapshot_verify(bigint, text, text, text, text, "
               "interval, interval, boolean, text[], boolean, boolean, integer, boolean) "
               "TO amis_e2e_verifier")
        r = session(w, ["SET ROLE amis_e2e_verifier",
                        "SELECT outcome FROM ami_snapshot_verify(%d, time_budget => '0')"
                        % good])
        is_(r.stdout.split() + r.stderr.split()[:8], ["passed"],
            "a role with EXECUTE only verifies")
        wait_nothing_left(w, drill_dir, loops_before)

        # ---- a helper from before jobs: HelperTooOld, and its row says so ----
        binary = old_helper()
        ok(binary is not None, "a helper from before jobs (and images) was built")
        if binary:
            saved = world_mod.HELPER
            try:
                restart_helper(w)             # its configuration: no [drill] yet
                w.stop_helper()
                world_mod.HELPER = binary
                w.start_helper()
                r = session(w, ["SELECT * FROM ami_snapshot_verify(%d)" % good])
                ok("HelperTooOld" in r.stderr and "too old for jobs" in r.stderr,
                   "a helper from before jobs: HelperTooOld, and the error says so", r.stderr)
                v = last_verification(w)
                is_(v[:2], ["error", "HelperTooOld"], "its row: error, HelperTooOld")
            finally:
                w.stop_helper()
                world_mod.HELPER = saved
                pos = os.path.getsize(w.helper_log)
                restart_helper(w, drill_conf(w, drill_dir))
                wait_for(lambda: "cleanup of dead drills:" in open(w.helper_log).read()[pos:],
                         60)

        # ---- the helper and its drill SIGKILLed half-way: the restart cleans up ----
        pos = os.path.getsize(w.helper_log)
        p = session(w, [slow], background=True)
        ok(wait_drill_phase(w, pos, "started PostgreSQL"), "a drill under way")
        child = drill_pid(w)
        ok(child, "the drill is the helper's child (pid %s)" % child)
        drill_procs = leftovers(w, drill_dir)["processes"]
        adj = sorted({open("/proc/%d/oom_score_adj" % pid).read().strip()
                      for pid in [child] + drill_procs})
        is_(adj, ["500"], "the drill and its server: oom_score_adj 500, not the helper's")
        ok(open("/proc/%d/stat" % child).read().rsplit(")", 1)[1].split()[3] == str(child),
           "the drill runs in a session of its own")
        os.kill(child, signal.SIGKILL)
        w.procs["helper"].send_signal(signal.SIGKILL)
        w.procs["helper"].wait()
        w.procs.pop("helper")
        p.communicate(timeout=60)
        left = leftovers(w, drill_dir)
        ok(left["volumes"] and left["processes"] and left["mounts"],
           "SIGKILL of helper and drill: volumes, processes and mounts left", left)
        v = last_verification(w)
        is_(v[0], "error", "the caller's row: error (the helper went away) %s" % v[1:3])
        pos = os.path.getsize(w.helper_log)
        w.start_helper()
        ok(wait_for(lambda: "cleanup of dead drills: done" in
                    open(w.helper_log).read()[pos:], 180),
           "the restarted helper cleaned up the dead drill at start-up")
        nothing_left(w, drill_dir, loops_before, "restart after SIGKILL")
        is_(w.ec2_state()["volumes"], [], "the emulator holds no volume besides the originals")
        r = session(w, ["SELECT outcome FROM ami_snapshot_verify(%d, time_budget => '0')"
                        % good])
        is_(r.stdout.split() + r.stderr.split()[:8], ["passed"],
            "the restarted helper verifies again")
        wait_nothing_left(w, drill_dir, loops_before)
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        final_drill_cleanup(w, drill_dir, CLI)
        for role in ("amis_e2e_nobody", "amis_e2e_verifier"):
            w.psql("REVOKE ALL ON FUNCTION ami_snapshot_verify(bigint, text, text, text, "
                   "text, interval, interval, boolean, text[], boolean, boolean, integer, "
                   "boolean) FROM %s; DROP ROLE IF EXISTS %s" % (role, role), check=False)
        w.close()
    done()


if __name__ == "__main__":
    main()
