#!/usr/bin/python3
"""
End to end: a backup's life from SQL (extension 1.3, doc/sql.md), the
helper's lifecycle jobs and its automatic lock and copy, against the
emulator with two regions (eu-west-1 home, eu-central-1 for copies).

  * ami_snapshot_wait() follows a pending backup to completed (the helper
    logs its progress) while another session's ami_snapshot() succeeds;
    the history row records the completion; the job's row is in
    ami_snapshot_jobs;
  * a week of nightly sets and weekly AMIs, their creation times set in
    the emulator; one nightly locked from SQL, one used by an AMI that is
    not ours; ami_snapshot_prune() with a policy: the dry run (the
    default) changes nothing and says what would go; the real one leaves
    exactly the backups the policy names, skips the locked one and the one
    in use with their reasons, deregisters the pruned AMI and deletes its
    snapshots; ami_snapshot_prune_log has every decision of both;
  * ami_snapshot_copy() of a set to eu-central-1: the copy is tagged as its
    source, ami_snapshot_wait(region =>) follows it, the view
    ami_snapshot_backups lists it as a copy, and PostgreSQL starts on the
    copy's bytes (every committed row, pgbench's invariant, amcheck);
  * ami_snapshot_copy() of an AMI: the image and each snapshot copied, each
    copied snapshot tagged with its source's own device and mount point;
  * a permission missing for one action (denied_actions): the SQL error
    names the IAM action (SQLSTATE 42501);
  * a role without EXECUTE is refused; a role granted EXECUTE may prune,
    and the job's row names it;
  * the automatic lock and copy after a backup whose name matches [lock]
    names and [copy] names: the source's snapshots locked, a copy in
    eu-central-1, locked and tagged, listed by the view; a backup of
    another name gets neither;
  * the pg_cron recipe of doc/sql.md, its statements run as they are.

Diagnostics (not asserted): how long the prune of the week took and how
many EC2 requests it made.
"""

import datetime
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import PGBIN, World  # noqa: E402
from e2e import MARK_PROC, check_restore, pgbench_cmd, session, wait_for  # noqa: E402
from restore import Restored  # noqa: E402

HOME = "eu-west-1"
DR = "eu-central-1"
POLICY = "nightly:daily=3;weekly-*:within=7d,delete-newest"
# doc/sql.md's pg_cron recipe: the SQL of each job, run here as it is.
RECIPE = {
    "nightly-snapshot": "SELECT snapshot_ids FROM ami_snapshot('nightly')",
    "weekly-ami": "SELECT image_id FROM ami_snapshot('weekly-' || to_char(now(), 'YYYY-MM-DD'), "
                  "image => 'register')",
    "nightly-prune": "SELECT action, count(*) FROM ami_snapshot_prune(dry_run => false) "
                     "GROUP BY action",
}
HELPER_EXTRA = f"""
[retention]
policy = nightly:daily=3
policy = weekly-*:within=7d,delete-newest

[copy]
regions = {DR}
names = auto-*

[lock]
mode = governance
days = 1
names = auto-*
"""


def iso(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


def tags_of(res):
    t = res.get("tags") or {}
    if isinstance(t, list):
        return {x["Key"]: x["Value"] for x in t}
    return t


def rows(w, sql, check=True):
    out = w.psql(sql, check=check)
    return [line.split("|") for line in out.splitlines()] if out else []


def backup(w, name, image=False):
    """A backup from SQL: (request id, [snapshot ids], image id or '')."""
    r = w.psql("SELECT request_id, array_to_string(snapshot_ids, ','), coalesce(image_id, ''), "
               "status FROM ami_snapshot('%s'%s)"
               % (name, ", image => 'register'" if image else "")).split("|")
    if r[3] != "succeeded":
        raise RuntimeError("backup %s: %s" % (name, r))
    return r[0], r[1].split(","), r[2]


def sql_error(w, sql, role=None):
    """Runs sql expecting an error: (SQLSTATE, message) from psql's VERBOSE output."""
    pre = ["\\set VERBOSITY verbose"] + (["SET ROLE %s" % role] if role else [])
    p = session(w, pre + [sql])
    err = p.stderr
    failed = 1 if "ERROR:" in err else 0
    state = ""
    for line in err.splitlines():
        if line.startswith("ERROR:"):
            state = line.split()[1].rstrip(":")
            break
    return failed, state, err


def state_index(w):
    st = w.emulator_state()
    return ({s["id"]: s for s in st["snapshots"]}, {i["id"]: i for i in st["images"]}, st)


def main():
    w = World(layout=[("data", "ext4"), ("wal", "xfs")],
              helper_conf_extra=HELPER_EXTRA,
              emulator_config_extra={"regions": [HOME, DR]})
    restored = None
    try:
        w.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port),
                       "-i", "-s", "2", "-q", "bench"])
        w.psql(MARK_PROC, db="bench")
        w.psql("CALL write_marks(1)", db="bench")

        # ---- wait from SQL while another session takes a snapshot ----
        w.emulator_control({"complete_after": 12})
        rid, snaps, _ = backup(w, "waited")
        pos = os.path.getsize(w.helper_log)
        waiter = session(w, ["SELECT outcome, state, progress, snapshot_state, "
                             "snapshot_progress, job_request_id IS NOT NULL "
                             "FROM ami_snapshot_wait('%s', poll => '1 s')" % rid],
                         background=True)
        time.sleep(2)
        other = w.psql("SELECT status FROM ami_snapshot('during the wait')")
        is_(other, "succeeded", "ami_snapshot() from another session while the wait runs")
        out, err = waiter.communicate(timeout=120)
        got = [line.split("|") for line in out.split()]
        ok(got and all(g[0] == "completed" and g[1] == "completed" and g[2] == "100"
                       and g[3] == "completed" and g[4] == "100" and g[5] == "t" for g in got)
           and len(got) == len(snaps),
           "ami_snapshot_wait(): completed, one row per snapshot at 100%", out + err)
        log = open(w.helper_log, errors="replace").read()[pos:]
        lines = [line for line in log.splitlines() if ": wait: " in line]
        ok(any(" pending " in line for line in lines) and
           any("backup %s is completed" % rid in line or " completed 100%" in line
               for line in lines),
           "the helper logged the wait's progress (pending, then completed)", "\n".join(lines))
        is_(w.psql("SELECT completion_state, completed_at IS NOT NULL FROM ami_snapshot_history "
                   "WHERE request_id = '%s'" % rid), "completed|t",
            "the history row records the completion")
        is_(w.psql("SELECT status, exit_code, detail->>'outcome', username FROM ami_snapshot_jobs "
                   "WHERE kind = 'wait' AND backup = '%s'" % rid),
            "done|0|completed|postgres", "ami_snapshot_jobs has the wait, its document and caller")
        w.emulator_control({"complete_after": 1})

        # ---- a week of nightly sets and weekly AMIs ----
        # Creation times k days back, all on distinct UTC days, none in the future.
        now = time.time()
        base = max(now - 600, now - now % 86400 + 1)
        nightly = []
        for k in range(7):
            nightly.append(backup(w, "nightly"))
        weekly_new = backup(w, "weekly-new", image=True)
        weekly_old = backup(w, "weekly-old", image=True)
        times = {}
        for k, (r, ss, _) in enumerate(nightly):
            for s in ss:
                times[s] = iso(base - k * 86400)
        for (r, ss, img), age in ((weekly_new, 1), (weekly_old, 8)):
            for s in ss:
                times[s] = iso(base - age * 86400)
            times[img] = iso(base - age * 86400)
        w.emulator_control({"set_times": times})
        # every backup completes (complete_after 1 s)
        wait_for(lambda: all(s["state"] == "completed" for s in w.emulator_state()["snapshots"]),
                 60)
        # nightly[5] locked from SQL; nightly[4] used by an AMI that is not ours
        lk = rows(w, "SELECT snapshot_id, lock_state, expires_on > now() "
                     "FROM ami_snapshot_lock('%s', mode => 'governance', days => 30)"
                  % nightly[5][0])
        ok(len(lk) == len(nightly[5][1]) and all(x[1] == "governance" and x[2] == "t" for x in lk),
           "ami_snapshot_lock(): each snapshot of the set locked (governance, 30 days)", lk)
        # (All of its snapshots: prune deletes a set's snapshots one by one
        # and stops at the first InUse, so one in use among others would
        # leave the set half deleted; see doc/lifecycle.md, Limits.)
        data_vol = w.volume("data").vol_id
        snapidx, _, _ = state_index(w)
        inuse = sorted(nightly[4][1], key=lambda s: snapidx[s]["volume_id"] != data_vol)
        mapping = {}
        for n, sid in enumerate(inuse, 1):
            mapping["BlockDeviceMapping.%d.DeviceName" % n] = ("/dev/xvda" if n == 1
                                                              else "/dev/sd%s" % "fghij"[n - 2])
            mapping["BlockDeviceMapping.%d.Ebs.SnapshotId" % n] = sid
        foreign = w.ec2_call("RegisterImage", Name="not-ours", RootDeviceName="/dev/xvda",
                             Architecture="x86_64", VirtualizationType="hvm",
                             **mapping).findtext("imageId")
        ok(foreign and foreign.startswith("ami-"), "an AMI that is not ours uses the snapshots "
           "of nightly[4] (%s)" % foreign)

        before_snaps = sorted(snapidx)
        view = rows(w, "SELECT request_id, name, kind, region, state, restorable "
                       "FROM ami_snapshot_backups")
        ours = {r for r, _, _ in nightly} | {weekly_new[0], weekly_old[0]}
        ok(ours <= {v[0] for v in view},
           "the view lists every backup of the week (%d rows)" % len(view))
        is_(sorted(v[2] for v in view if v[0] in (weekly_new[0], weekly_old[0])), ["ami", "ami"],
            "the weekly backups are AMIs in the view")

        # ---- prune: the dry run (the default) changes nothing ----
        dry = rows(w, "SELECT request_id, action, done, reason FROM ami_snapshot_prune('%s')"
                   % POLICY)
        act = {d[0]: d for d in dry}
        would = {r for r, d in act.items() if d[1] == "delete"}
        want_gone = {nightly[3][0], nightly[4][0], nightly[6][0], weekly_old[0]}
        is_(sorted(would), sorted(want_gone),
            "dry run: would delete nightly 3, 4, 6 and the 8-day-old AMI")
        ok(all(d[2] == "f" for d in dry), "dry run: nothing done")
        is_(act.get(nightly[5][0], ["", ""])[1], "skip", "dry run: the locked nightly is skipped")
        ok("lock" in act.get(nightly[5][0], ["", "", "", ""])[3].lower(),
           "... with its reason (%s)" % act.get(nightly[5][0], ["", "", "", ""])[3])
        snapidx2, imgidx2, _ = state_index(w)
        is_(sorted(snapidx2), before_snaps, "dry run: every snapshot is still there")

        # ---- prune for real ----
        counts0 = w.emulator_state()["request_counts"]
        t0 = time.time()
        real = rows(w, "SELECT request_id, action, done, reason, array_to_string(deleted, ',') "
                       "FROM ami_snapshot_prune('%s', dry_run => false)" % POLICY)
        took = time.time() - t0
        counts1 = w.emulator_state()["request_counts"]
        reqs = {a: counts1.get(a, 0) - counts0.get(a, 0) for a in counts1
                if counts1.get(a, 0) != counts0.get(a, 0)}
        diag("prune of the simulated week (%d backups, 2 regions): %.2f s, %d EC2 requests %s"
             % (len(real), took, sum(reqs.values()), reqs))
        act = {d[0]: d for d in real}
        is_(sorted(r for r, d in act.items() if d[1] == "delete" and d[2] == "t"),
            sorted({nightly[3][0], nightly[6][0], weekly_old[0]}),
            "prune: nightly 3, 6 and the old AMI deleted")
        is_(act.get(nightly[4][0], [""] * 4)[1], "skip",
            "prune: the nightly whose snapshot an AMI not ours uses is skipped")
        ok("use" in act.get(nightly[4][0], [""] * 4)[3].lower(),
           "... with its reason (%s)" % act.get(nightly[4][0], [""] * 4)[3])
        is_(act.get(nightly[5][0], [""] * 4)[1], "skip", "prune: the locked nightly is skipped")
        snapidx3, imgidx3, _ = state_index(w)
        gone = set(before_snaps) - set(snapidx3)
        want_snaps_gone = set(nightly[3][1]) | set(nightly[6][1]) | set(weekly_old[1])
        is_(sorted(gone), sorted(want_snaps_gone),
            "exactly the snapshots of the deleted backups are gone")
        ok(weekly_old[2] not in imgidx3 or imgidx3[weekly_old[2]]["state"] == "deregistered",
           "the old AMI is deregistered")
        ok(weekly_new[2] in imgidx3, "the newer AMI is kept")
        survivors = {v[0] for v in rows(w, "SELECT request_id FROM ami_snapshot_backups "
                                          "WHERE region = '%s'" % HOME)} & ours
        is_(sorted(survivors),
            sorted({nightly[0][0], nightly[1][0], nightly[2][0], nightly[4][0], nightly[5][0],
                    weekly_new[0]}),
            "the survivors are those the policy keeps, the locked one and the one in use")
        is_(w.psql("SELECT count(*) FILTER (WHERE dry_run), count(*) FILTER (WHERE NOT dry_run), "
                   "count(*) FILTER (WHERE NOT dry_run AND action = 'delete' AND done) "
                   "FROM ami_snapshot_prune_log"),
            "%d|%d|3" % (len(dry), len(real)),
            "ami_snapshot_prune_log has every decision of the dry run and of the real one")
        # The same prune (a dry run) with 50 ms per EC2 request, nearer EC2's latency.
        w.emulator_control({"latency_ms": 50})
        t0 = time.time()
        n = len(rows(w, "SELECT 1 FROM ami_snapshot_prune('%s')" % POLICY))
        diag("a dry-run prune of the %d remaining backups at 50 ms per EC2 request: %.2f s"
             % (n, time.time() - t0))
        w.emulator_control({"latency_ms": 0})

        # ---- copy to a second region, restore from the copy ----
        w.psql("CALL write_marks(2)", db="bench")
        before = int(w.psql("SELECT max(id) FROM marks", db="bench"))
        bench = subprocess.Popen(pgbench_cmd(w, 6, vacuum=False), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        marker = threading.Thread(target=w.psql, args=("CALL write_marks(4)",),
                                  kwargs={"db": "bench"})
        marker.start()
        time.sleep(1)
        before = int(w.psql("SELECT max(id) FROM marks", db="bench"))
        src = backup(w, "to-copy")
        marker.join()
        bench.communicate(timeout=60)
        w.psql("SELECT * FROM ami_snapshot_wait('%s', poll => '1 s')" % src[0])
        cp = rows(w, "SELECT source_id, copy_id, copy_region FROM ami_snapshot_copy('%s', '%s')"
                  % (src[0], DR))
        is_(sorted(c[0] for c in cp), sorted(src[1]), "ami_snapshot_copy(): one copy per snapshot")
        ok(all(c[2] == DR and c[1].startswith("snap-") for c in cp), "the copies are in " + DR)
        waited = rows(w, "SELECT outcome, backup_region FROM ami_snapshot_wait('%s', region => '%s', "
                         "poll => '1 s')" % (src[0], DR))
        ok(waited and all(x == ["completed", DR] for x in waited),
           "ami_snapshot_wait(region =>) follows the copy to completed", waited)
        snapidx4, _, _ = state_index(w)
        copies = {c[1]: snapidx4[c[1]] for c in cp}
        ok(all(s["region"] == DR and tags_of(s).get("ami-snapshot:request-id") == src[0]
               and tags_of(s).get("ami-snapshot:copy-of") in src[1] for s in copies.values()),
           "each copy is tagged: the request id, copy-of its source")
        v = rows(w, "SELECT region, state, copy_of IS NOT NULL, restorable FROM ami_snapshot_backups "
                    "WHERE request_id = '%s' ORDER BY region" % src[0])
        is_(v, [[DR, "completed", "t", "t"], [HOME, "completed", "f", "t"]],
            "the view: the backup at home and its restorable copy in " + DR)
        volume_of = {cid: snapidx4[tags_of(s)["ami-snapshot:copy-of"]]["volume_id"]
                     for cid, s in copies.items()}
        restored = Restored(w, list(copies), name="restore-copy", volume_of=volume_of)
        check_restore(w, restored, before)
        restored.close()
        restored = None

        # ---- an AMI copied: its snapshots tagged as their sources ----
        acp = rows(w, "SELECT source_id, copy_id FROM ami_snapshot_copy('%s', '%s')"
                   % (weekly_new[0], DR))
        is_(sorted(a[0] for a in acp), sorted([weekly_new[2]] + weekly_new[1]),
            "ami_snapshot_copy() of an AMI: the image and each of its snapshots")
        si, ii, _ = state_index(w)
        acopies = [si[a[1]] for a in acp if a[1] in si]
        ok(acopies and all(
            tags_of(c).get("ami-snapshot:request-id") == weekly_new[0] and c["region"] == DR and
            all(tags_of(c).get(k) == tags_of(si[a[0]]).get(k)
                for k in ("ami-snapshot:device", "ami-snapshot:mount-point"))
            for a, c in zip([a for a in acp if a[1] in si], acopies)),
           "each copied snapshot of the AMI carries its source's device and mount point")
        ok(ii.get([a[1] for a in acp if a[0] == weekly_new[2]][0], {}).get("region") == DR,
           "the AMI's copy is in " + DR)

        # ---- a permission missing for one action ----
        w.emulator_control({"denied_actions": ["LockSnapshot"]})
        rc, state, err = sql_error(w, "SELECT * FROM ami_snapshot_lock('%s', mode => 'governance', "
                                      "days => 1)" % src[0])
        ok(rc != 0 and "ec2:LockSnapshot" in err, "a denied LockSnapshot: the SQL error names "
           "the IAM action", err)
        is_(state, "42501", "... with SQLSTATE 42501 (insufficient_privilege)")
        is_(w.psql("SELECT error_code FROM ami_snapshot_jobs WHERE kind = 'lock' "
                   "ORDER BY id DESC LIMIT 1"), "UnauthorizedOperation",
            "the job's row survives the error, with EC2's code")
        w.emulator_control({"denied_actions": []})

        # ---- privileges ----
        w.psql("CREATE ROLE amis_nobody; CREATE ROLE amis_operator")
        rc, state, err = sql_error(w, "SELECT * FROM ami_snapshot_prune()", role="amis_nobody")
        ok(rc != 0 and state == "42501" and "permission denied" in err,
           "a role without EXECUTE is refused", err)
        rc, state, err = sql_error(w, "SELECT * FROM ami_snapshot_backups", role="amis_nobody")
        ok(rc != 0 and "permission denied" in err, "and may not read the view", err)
        w.psql("GRANT EXECUTE ON FUNCTION ami_snapshot_prune(text, boolean, text, boolean) "
               "TO amis_operator")
        is_(w.psql("SET ROLE amis_operator; SELECT count(*) > 0 FROM ami_snapshot_prune()"), "t",
            "a role granted EXECUTE may prune (a dry run with the configuration's policy)")
        is_(w.psql("SELECT username, args FROM ami_snapshot_jobs ORDER BY id DESC LIMIT 1"),
            "amis_operator|{dry_run=true}", "the job's row names the operator")

        # ---- the automatic lock and copy after a backup ----
        pos = os.path.getsize(w.helper_log)
        auto = backup(w, "auto-nightly")
        plain = backup(w, "plain-nightly")

        def auto_done():
            si, _, _ = state_index(w)
            cps = [s for s in si.values() if s["region"] == DR
                   and tags_of(s).get("ami-snapshot:request-id") == auto[0]]
            return (len(cps) == len(auto[1]) and all(s["state"] == "completed" and s.get("lock")
                                                    for s in cps) and cps)
        cps = wait_for(auto_done, 120, 1)
        ok(cps, "the automatic copy of auto-nightly is in %s, completed and locked" % DR)
        si, _, _ = state_index(w)
        ok(all((si[s].get("lock") or {}).get("lockState") == "governance" for s in auto[1]),
           "the source's snapshots are locked (governance)")
        ok(not any(tags_of(s).get("ami-snapshot:request-id") == plain[0] and s["region"] == DR
                   for s in si.values()) and not any(si[s].get("lock") for s in plain[1]),
           "a backup whose name [copy] and [lock] do not match gets neither")
        log = open(w.helper_log, errors="replace").read()[pos:]
        i_done = log.find("request %s: done" % auto[0])
        i_auto = log.find("request %s: automatic lock started" % auto[0])
        ok(0 <= i_done < i_auto, "the automatic job starts after the backup's answer")
        ok("request %s: automatic copy done" % auto[0] in log, "the helper logged the copy's outcome")
        v = rows(w, "SELECT region, lock_state, copy_of IS NOT NULL FROM ami_snapshot_backups "
                    "WHERE request_id = '%s' ORDER BY region" % auto[0])
        is_(v, [[DR, "governance", "t"], [HOME, "governance", "f"]],
            "the view: auto-nightly and its copy, both locked")

        # ---- the pg_cron recipe of doc/sql.md ----
        for job, sql in RECIPE.items():
            r = w.psql(sql, check=False)
            ok(r.returncode == 0, "recipe %s: %s" % (job, sql), r.stderr)
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        if restored:
            restored.close()
        w.close()
    done()


if __name__ == "__main__":
    main()
