#!/usr/bin/python3
"""
End to end: the recipe of doc/sql.md run by pg_cron (a fresh session, here
a background worker, per run; snapshot nightly, verify the latest an hour later),
with minutes for hours: the snapshot job at one minute, the verify job
(ami_snapshot_verify(name => ...), run by the helper) at the next, both
succeeded, the verification's row passed.

pg_cron 1.4 (Debian 12) schedules by the minute (in GMT), so this test
waits for minute boundaries (at most about 2.5 minutes in all).
"""

import datetime
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import World  # noqa: E402
from e2e import drill_conf, final_drill_cleanup, restart_helper  # noqa: E402
from restore_cmd import CLI  # noqa: E402


def wait_run(w, job, timeout):
    """The job's first finished run: "status: message", or "" after timeout."""
    deadline = time.time() + timeout
    status = ""
    while time.time() < deadline:
        status = w.psql("SELECT coalesce(string_agg(status || ': ' || coalesce(return_message, ''), '; '), '') "
                        "FROM cron.job_run_details WHERE jobid = %s "
                        "AND status NOT IN ('starting', 'running')" % job)
        if status:
            break
        time.sleep(1)
    return status


def main():
    w = World(layout=[("data", "ext4"), ("wal", "xfs")],
              pg_conf_extra="shared_preload_libraries = 'pg_cron'\n"
                            "cron.database_name = 'postgres'\n"
                            "cron.use_background_workers = on\n"
                            "max_worker_processes = 16\n")
    drill_dir = w.path("drill")
    try:
        w.psql("CREATE EXTENSION pg_cron")
        # The recipe: snapshot, then verify the latest of that name a minute later.
        restart_helper(w, drill_conf(w, drill_dir))
        now = datetime.datetime.now(datetime.timezone.utc)
        first = now + datetime.timedelta(minutes=1 if now.second < 45 else 2)
        m1, m2 = first.minute, (first.minute + 1) % 60
        snap_job = w.psql("SELECT cron.schedule('nightly-snapshot', '%d * * * *', "
                          "$$SELECT snapshot_ids FROM ami_snapshot('nightly')$$)" % m1)
        verify_job = w.psql("SELECT cron.schedule('nightly-verify', '%d * * * *', "
                            "$$SELECT outcome FROM ami_snapshot_verify(name => 'nightly')$$)"
                            % m2)
        ok(snap_job.isdigit() and verify_job.isdigit(),
           "the recipe's two jobs scheduled (minutes %d and %d)" % (m1, m2))
        status = wait_run(w, snap_job, 200)
        diag("pg_cron snapshot run: %s" % status)
        ok(status.startswith("succeeded"), "the snapshot job succeeded", status)
        h = w.psql("SELECT status, array_length(snapshot_ids, 1), username "
                   "FROM ami_snapshot_history WHERE name = 'nightly' ORDER BY id LIMIT 1")
        is_(h, "succeeded|2|postgres", "the run is in the history with its two snapshots")
        ok(w.frozen_mounts() == [], "nothing left frozen")
        status = wait_run(w, verify_job, 200)
        w.psql("SELECT cron.unschedule(%s), cron.unschedule(%s)" % (snap_job, verify_job))
        diag("pg_cron verify run: %s" % status)
        ok(status.startswith("succeeded"), "the verify job succeeded", status)
        v = w.psql("SELECT v.status, v.backup_id = h.id, v.username, v.recovered_lsn IS NOT NULL "
                   "FROM ami_snapshot_verification v, ami_snapshot_history h "
                   "WHERE h.name = 'nightly' ORDER BY v.id DESC LIMIT 1")
        is_(v, "passed|t|postgres|t",
            "the verification of the latest 'nightly' passed and is recorded")
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        final_drill_cleanup(w, drill_dir, CLI)
        w.close()
    done()


if __name__ == "__main__":
    main()
