#!/usr/bin/python3
"""
End to end: the whole nightly round of doc/sql.md run by pg_cron, its four
jobs read from that page and scheduled as written there but for the
minute (pg_cron runs each in a fresh session, here a background worker):
the snapshot set at one minute, the AMI at the next, the prune and the
restore drill of the latest set at the third; every job succeeded, the set
and the AMI in the history, the prune's decisions in ami_snapshot_prune_log
(a real run, not a dry run), the verification's row passed.

pg_cron 1.4 (Debian 12) schedules by the minute (in GMT), so this test
waits for minute boundaries (at most about 3.5 minutes in all).
"""

import datetime
import os
import re
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import ROOT, World  # noqa: E402
from e2e import drill_conf, final_drill_cleanup, restart_helper  # noqa: E402
from restore_cmd import CLI  # noqa: E402

# The retention policy the page describes next to the recipe.
RETENTION = """
[retention]
policy = nightly:last=7,daily=14
policy = weekly-*:series=pattern,last=4,monthly=12
"""


def recipe():
    """doc/sql.md's whole nightly round: [(job name, schedule, SQL)]."""
    with open(os.path.join(ROOT, "doc", "sql.md")) as f:
        text = f.read()
    block = text[text.index("The whole nightly round"):]
    block = block[:block.index("\n\n", block.index("cron.schedule('nightly-verify'"))]
    return re.findall(r"SELECT cron\.schedule\('([^']+)', '([^']+)',\s*\$\$(.*?)\$\$\);",
                      block, re.S)


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
        restart_helper(w, drill_conf(w, drill_dir) + RETENTION)
        jobs = recipe()
        is_([j[0] for j in jobs], ["nightly-snapshot", "weekly-ami", "nightly-prune",
                                   "nightly-verify"], "doc/sql.md's nightly round: four jobs")
        now = datetime.datetime.now(datetime.timezone.utc)
        first = now + datetime.timedelta(minutes=1 if now.second < 45 else 2)
        # The snapshot, then the AMI, then the prune and the drill together.
        minute = {"nightly-snapshot": 0, "weekly-ami": 1, "nightly-prune": 2,
                  "nightly-verify": 2}
        ids = {}
        for name, when, sql in jobs:
            m = (first.minute + minute[name]) % 60
            ids[name] = w.psql("SELECT cron.schedule($n$%s$n$, '%d * * * *', $$%s$$)"
                               % (name, m, sql))
            diag("%s (%s in the recipe) at minute %d: %s" % (name, when, m, " ".join(sql.split())))
        ok(all(v.isdigit() for v in ids.values()), "the recipe's jobs scheduled")
        got = {}
        for name, _, _ in jobs:
            got[name] = wait_run(w, ids[name], 300)
            diag("pg_cron %s run: %s" % (name, got[name]))
            ok(got[name].startswith("succeeded"), "the %s job succeeded" % name, got[name])
        w.psql("SELECT cron.unschedule(jobid) FROM cron.job")
        h = w.psql("SELECT status, array_length(snapshot_ids, 1), username "
                   "FROM ami_snapshot_history WHERE name = 'nightly' ORDER BY id LIMIT 1")
        is_(h, "succeeded|2|postgres", "the set is in the history with its two snapshots")
        a = w.psql("SELECT status, image_id LIKE 'ami-%', image_method FROM ami_snapshot_history "
                   "WHERE name = 'weekly-' || to_char(now(), 'YYYY-MM-DD')")
        is_(a, "succeeded|t|register", "the dated AMI is in the history with its image")
        p = w.psql("SELECT bool_and(NOT dry_run), count(*), count(*) FILTER (WHERE action = 'keep') "
                   "FROM ami_snapshot_prune_log")
        ok(re.fullmatch(r"t\|[1-9]\d*\|[1-9]\d*", p),
           "the prune ran for real, deciding on every backup (kept: nothing to delete yet)", p)
        ok(w.frozen_mounts() == [], "nothing left frozen")
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
