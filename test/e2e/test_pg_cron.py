#!/usr/bin/python3
"""
End to end: ami_snapshot() scheduled with pg_cron (a fresh session, here a
background worker, per run) takes its snapshot and records it.

pg_cron 1.4 (Debian 12) schedules by the minute, so this test waits for
the next minute boundary (at most about 70 s).
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import World  # noqa: E402


def main():
    w = World(layout=[("data", "ext4"), ("wal", "xfs")],
              pg_conf_extra="shared_preload_libraries = 'pg_cron'\n"
                            "cron.database_name = 'postgres'\n"
                            "cron.use_background_workers = on\n"
                            "max_worker_processes = 16\n")
    try:
        w.psql("CREATE EXTENSION pg_cron")
        job = w.psql("SELECT cron.schedule('ebs-every-minute', '* * * * *', "
                     "$$SELECT snapshot_ids FROM ami_snapshot('cron run')$$)")
        ok(job.isdigit(), "job scheduled (%s)" % job)
        deadline = time.time() + 80
        status = ""
        while time.time() < deadline:
            status = w.psql("SELECT coalesce(string_agg(status || ': ' || coalesce(return_message, ''), '; '), '') "
                            "FROM cron.job_run_details WHERE jobid = %s "
                            "AND status NOT IN ('starting', 'running')" % job)
            if status:
                break
            time.sleep(1)
        w.psql("SELECT cron.unschedule(%s)" % job)
        diag("pg_cron run: %s" % status)
        ok(status.startswith("succeeded"), "the pg_cron run succeeded", status)
        h = w.psql("SELECT status, array_length(snapshot_ids, 1), username "
                   "FROM ami_snapshot_history WHERE name = 'cron run' ORDER BY id LIMIT 1")
        is_(h, "succeeded|2|postgres", "the run is in the history with its two snapshots")
        ok(w.frozen_mounts() == [], "nothing left frozen")
    except Exception as e:
        bail(e)
    finally:
        w.close()
    done()


if __name__ == "__main__":
    main()
