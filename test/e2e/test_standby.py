#!/usr/bin/python3
"""
End to end: ami_snapshot() on a hot standby (doc/design.md, "On a hot
standby").

A primary in a plain directory (never frozen) and the World's cluster made
its streaming standby, data directory on ext4 and pg_wal on XFS, both on
the World's loop filesystems (test/lib/standby.py).  Then:

  * a helper from before standbys: HelperTooOld, and the error says why;
  * ami_snapshot_check()'s standby row: ok when asynchronous, failed when
    synchronous;
  * synchronous replication: with the standby in the primary's
    synchronous_standby_names (sync_state sync) the call is refused before
    anything is frozen or made, naming the setting and the override; with
    ami_snapshot.allow_synchronous_standby on it warns and succeeds; with a
    replication user that pg_hba.conf lets in for replication only, the
    replication connection's synchronous_standby_names refuses it too; with
    no way in at all, a WARNING and it goes on (tagged unknown);
  * under pgbench and the marker writer on the primary, a snapshot of the
    standby (archive_mode = on there: the stop does not wait, and says so):
    no history row (the id is NULL), the set tagged taken-from standby with
    the primary's host, the sync state, the primary's system identifier,
    timeline and LSNs;
  * `ami-snapshot restore` brings the set back as a new primary (crash
    recovery; not in recovery; every marker row the standby had replayed,
    pgbench's invariant, amcheck) and as a standby (--as-standby
    --primary-conninfo: it streams from the primary, and a row written on
    the primary after the restore arrives);
  * a restore drill (`ami-snapshot verify`) of the set passes: its
    scratch copy starts as a new primary;
  * archive_mode = always on the standby: the stop waits until the stop
    LSN's segment is archived by the standby (the primary switches
    segments meanwhile), and it is.

No timing is asserted: the primary's pgbench latency during a standby's
snapshot is measured by test/bench/standby_pgbench.py.
"""

import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, done, is_, ok  # noqa: E402
from world import PGBIN, World  # noqa: E402
from e2e import (MARK_PROC, check_restore, final_drill_cleanup, helper_at,  # noqa: E402
                 parse_pgbench)
from restore_cmd import CLI, CmdRestored, close_restores, restore_cmd  # noqa: E402
from standby import APPNAME, StandbyPair, wal_segment  # noqa: E402


def snapshot_tags(w, name):
    """[{key: value}] of the snapshots tagged ami-snapshot:name = name."""
    root = w.ec2_call("DescribeSnapshots", **{"Owner.1": "self",
                                              "Filter.1.Name": "tag:ami-snapshot:name",
                                              "Filter.1.Value.1": name})
    return [{t.findtext("key"): t.findtext("value") for t in it.findall("./tagSet/item")}
            for it in root.findall("./snapshotSet/item")]


def call(w, sql, settings=()):
    """psql on the standby: (exit code, stdout, stderr with the NOTICEs)."""
    cmd = w.psql_cmd()
    for s in settings:
        cmd += ["-c", s]
    r = w.as_postgres(cmd + ["-c", sql], check=False, timeout=300)
    return r.returncode, r.stdout.strip(), r.stderr


# The last commit of main before snapshots of a standby.
BEFORE_STANDBYS = "4c340ca25e1ca5a2f54109c44eb2c9292cb96ecc"

SNAP = ("SELECT coalesce(id::text, 'null'), status, request_id, start_lsn, stop_lsn, timeline "
        "FROM ami_snapshot('%s')")


def main():
    w = World(layout=[("data", "ext4"), ("wal", "xfs")])
    drill_dir = w.path("drill")
    pair = None
    restores = []
    try:
        archive = w.path("standby-archive")
        os.makedirs(archive)
        os.chown(archive, w.pg_uid, w.pg_gid)
        pair = StandbyPair(
            w, standby_conf="archive_mode = on\n"
                            "archive_command = 'test ! -f %s/%%f && cp %%p %s/%%f'\n"
                            % (archive, archive))
        is_(w.psql("SELECT pg_is_in_recovery()"), "t", "the World's cluster is a hot standby")
        sysid = pair.psql("SELECT system_identifier FROM pg_control_system()")
        is_(w.psql("SELECT system_identifier FROM pg_control_system()"), sysid,
            "it has the primary's system identifier")

        pair.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(pair.port),
                       "-i", "-s", "2", "-q", "bench"])
        pair.psql(MARK_PROC, db="bench")
        pair.wait_replayed()

        # ---- a helper too old for a standby's fields ----
        binary = helper_at(BEFORE_STANDBYS, "AMSP_T_STANDBY")
        ok(binary is not None, "a helper from before standbys was built")
        if binary:
            with w.helper_binary(binary):
                rc, out, err = call(w, SNAP % "standby old helper")
                ok(rc != 0 and "HelperTooOld" in err and "too old for snapshots of a hot standby"
                   in err, "old helper: HelperTooOld, saying why", err)

        # ---- the preflight check's standby row ----
        row = w.psql("SELECT ok, detail FROM ami_snapshot_check() WHERE name = 'standby'")
        ok(row.startswith("t|") and "sync_state async" in row,
           "ami_snapshot_check() on the async standby: its standby row ok", row)

        # ---- synchronous replication: refused, then allowed with a warning ----
        pair.set_sync(APPNAME)
        pair.wait_sync_state("sync")
        row = w.psql("SELECT ok, detail FROM ami_snapshot_check() WHERE name = 'standby'")
        ok(row.startswith("f|") and "sync_state sync" in row,
           "ami_snapshot_check() on the sync standby: its standby row failed", row)
        nsnaps = len(w.ec2_call("DescribeSnapshots", **{"Owner.1": "self"})
                     .findall("./snapshotSet/item"))
        rc, out, err = call(w, SNAP % "standby sync")
        ok(rc != 0 and "the primary waits on this standby" in err,
           "sync standby: refused", err)
        ok("sync_state sync" in err and "allow_synchronous_standby" in err,
           "sync standby: the error says what was found and names the override", err)
        ok("password" not in err.lower(), "sync standby: nothing of primary_conninfo but host:port")
        is_(len(w.ec2_call("DescribeSnapshots", **{"Owner.1": "self"})
                .findall("./snapshotSet/item")), nsnaps, "sync standby: no snapshot was made")
        ok(w.frozen_mounts(wait=1.0) == [], "sync standby: nothing frozen")
        rc, out, err = call(w, SNAP % "standby sync allowed",
                            ["SET ami_snapshot.allow_synchronous_standby = on"])
        ok(rc == 0 and out.split("|")[1] == "succeeded",
           "sync standby with allow_synchronous_standby: succeeded", err)
        ok("commits stall while the standby is frozen" in err,
           "sync standby allowed: a WARNING says the primary's commits stall", err)
        tags = snapshot_tags(w, "standby sync allowed")
        ok(tags and all(t.get("ami-snapshot:standby-sync-state") == "sync" for t in tags),
           "sync standby allowed: tagged standby-sync-state=sync")

        # A replication-only user: the standby asks over a replication connection.
        pair.psql("CREATE ROLE replicator LOGIN REPLICATION")
        pair.hba_first(["local all replicator reject"])
        pair.follow(pair.conninfo(user="replicator"))
        pair.wait_streaming()
        rc, out, err = call(w, SNAP % "standby sync replication user")
        ok(rc != 0 and "the primary waits on this standby" in err and
           "synchronous_standby_names" in err and 'names application_name "standby1"' in err,
           "replication-only user: synchronous_standby_names read, refused", err)
        pair.set_sync("")
        pair.wait_sync_state("async")

        # No way in: the primary cannot be asked; a WARNING, and the call goes on.
        pair.hba_first(["local all replicator reject", "local replication replicator reject"])
        pair.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_replication")
        rc, out, err = call(w, SNAP % "standby unreachable primary")
        ok(rc == 0 and out.split("|")[1] == "succeeded" and
           "could not find out whether the primary waits on this standby" in err,
           "primary not reachable: a WARNING, and the snapshot is taken", err)
        tags = snapshot_tags(w, "standby unreachable primary")
        ok(tags and all(t.get("ami-snapshot:standby-sync-state") == "unknown" for t in tags),
           "primary not reachable: tagged standby-sync-state=unknown")
        pair.hba_first(["local all replicator reject"])
        pair.wait_streaming()

        # ---- a snapshot of the standby under load on the primary ----
        bench = subprocess.Popen(
            w.pg_cmd([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(pair.port),
                      "-c", "4", "-j", "2", "-T", "8", "-P", "1", "bench"]),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        marker = threading.Thread(target=pair.psql, args=("CALL write_marks(6)",),
                                  kwargs={"db": "bench"})
        marker.start()
        time.sleep(2)
        before = int(pair.psql("SELECT max(id) FROM marks", db="bench"))
        pair.wait_replayed()
        rc, out, err = call(w, SNAP % "standby e2e")
        row = out.split("|")
        ok(rc == 0 and row[1] == "succeeded", "ami_snapshot() on the standby succeeded", err)
        marker.join()
        bout, _ = bench.communicate(timeout=120)
        is_(parse_pgbench(bout)[0], 0, "pgbench on the primary: no failed transactions")
        is_(row[0], "null", "on a standby: no history row, the id is NULL")
        ok("on a standby of %s:%d" % (w.pgrun, pair.port) in err and "sync_state async" in err,
           "a NOTICE says it runs on a standby of the primary, asynchronous", err)
        ok("backup stopped at %s (the standby's replay position)" % row[4] in err,
           "the NOTICE says the stop LSN is the standby's replay position", err)
        ok('archive_mode is "on" on this standby' in err,
           "archive_mode = on: the NOTICE says the stop does not wait", err)
        request_id, start_lsn, stop_lsn, tli = row[2], row[3], row[4], row[5]
        tags = snapshot_tags(w, "standby e2e")
        is_(len(tags), 2, "two snapshots (data, pg_wal)")
        want = {"ami-snapshot:taken-from": "standby",
                "ami-snapshot:primary-host": "%s:%d" % (w.pgrun, pair.port),
                "ami-snapshot:standby-sync-state": "async",
                "ami-snapshot:system-identifier": sysid,
                "ami-snapshot:timeline": tli,
                "ami-snapshot:start-lsn": start_lsn,
                "ami-snapshot:stop-lsn": stop_lsn,
                "ami-snapshot:backup-state": "stopped"}
        for k, v in want.items():
            ok(all(t.get(k) == v for t in tags), "tag %s = %s" % (k, v),
               [t.get(k) for t in tags])
        ok(w.psql("SELECT count(*) FROM ami_snapshot_history") == "0",
           "the standby's history (the primary's table) has no row of it")

        # ---- restored as a new primary ----
        root = w.path("restore-primary")
        r = restore_cmd(w, "--name", "standby e2e", "--root", root)
        is_(r.returncode, 0, "restore as a new primary: exit 0")
        ok("standby.signal" in r.stdout and "new primary" in r.stdout,
           "restore: standby.signal removed, and said so")
        rs = CmdRestored(w, root)
        restores.append(rs)
        check_restore(w, rs, before)
        is_(rs.psql("SELECT pg_is_in_recovery()"), "f", "the restore is a primary")
        rs.psql("CREATE TABLE after_restore (id int)", db="bench")
        ok(True, "the restored primary takes writes")
        rs.close()

        # ---- restored as a standby of the primary ----
        root = w.path("restore-standby")
        r = restore_cmd(w, "--name", "standby e2e", "--root", root, "--as-standby",
                        "--primary-conninfo", pair.conninfo("restored1"))
        is_(r.returncode, 0, "restore --as-standby: exit 0")
        ok("primary_conninfo" in r.stdout and "application_name=restored1" not in r.stdout,
           "restore --as-standby: says it wrote primary_conninfo, without its value")
        rs = CmdRestored(w, root)
        restores.append(rs)
        rs.start()
        is_(rs.psql("SELECT pg_is_in_recovery()"), "t", "the restore is a standby")
        pair.wait_streaming("restored1")
        ok(True, "the restored standby streams from the primary")
        pair.psql("CREATE TABLE after_standby_restore AS SELECT 42 AS v", db="bench")
        pair.wait_replayed(port=rs.port)
        is_(rs.psql("SELECT v FROM after_standby_restore", db="bench"), "42",
            "a row written on the primary after the restore arrives on the restored standby")
        rs.close()

        # ---- a restore drill of the standby's set: a new primary in scratch ----
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        r = subprocess.run([CLI, "verify", "-c", w.helper_conf, "--device-dir",
                            w.device_link_dir, "--device-timeout", "30", "--drill-dir", drill_dir,
                            "--request-id", request_id, "--json"],
                           capture_output=True, text=True, env=env, timeout=600)
        is_(r.returncode, 0, "verify of the standby's set: exit 0")
        try:
            rep = json.loads(r.stdout)
        except ValueError:
            rep = {"outcome": None, "checks": [], "stderr": r.stderr[-2000:]}
        is_(rep["outcome"], "passed", "the drill passed")
        bad = [c for c in rep["checks"] if not c["ok"]]
        ok(rep["checks"] and not bad, "every check of the drill ok", bad or rep)

        # ---- archive_mode = always: the stop waits for the standby's archive ----
        with open(os.path.join(w.pgdata, "postgresql.conf"), "a") as f:
            f.write("archive_mode = always\n")
        w.stop_postgres()
        w.start_postgres()
        pair.wait_streaming()
        is_(w.psql("SHOW archive_mode"), "always", "the standby archives (archive_mode = always)")
        stop = threading.Event()

        def switcher():
            # A standby cannot switch segments; the primary does, as
            # archive_timeout would.
            while not stop.is_set():
                pair.psql("CREATE TEMP TABLE t AS SELECT 1; SELECT pg_switch_wal()")
                stop.wait(0.5)
        t = threading.Thread(target=switcher)
        t.start()
        try:
            rc, out, err = call(w, SNAP % "standby always")
        finally:
            stop.set()
            t.join()
        row = out.split("|")
        ok(rc == 0 and row[1] == "succeeded", "archive_mode = always: succeeded", err)
        ok("its WAL archived" in err, "archive_mode = always: the stop waited for the archive",
           err)
        if rc == 0:
            # The file pg_backup_stop() waits for: the one holding the byte
            # before the stop LSN.
            seg = wal_segment(row[4], int(row[5]), prev=True)
            ok(os.path.exists(os.path.join(archive, seg)),
               "the stop LSN's segment %s (stop %s) is in the standby's archive"
               % (seg, row[4]))
    except Exception as e:
        bail(e, [w.helper_log, os.path.join(w.pgrun, "postgres.log"),
                 os.path.join(w.pgrun, "primary.log")])
    finally:
        close_restores(restores)
        final_drill_cleanup(w, drill_dir, CLI)
        if pair:
            pair.close()
        w.close()
    done()


if __name__ == "__main__":
    main()
