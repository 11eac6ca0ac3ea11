#!/usr/bin/python3
"""
End to end: one SQL call makes a consistent EBS snapshot set, proven by a
restore.

PostgreSQL (the host's 15, or 17 or 18 from a chroot: test/pgversions/)
with its data directory on ext4, pg_wal on XFS and a tablespace on ext4
(three loop devices, three "EBS volumes"), the real helper on its socket,
the EC2/IMDS emulator.  pgbench writes (tables in the
tablespace, indexes in the data directory) and a marker writer commits
numbered rows while ami_snapshot() runs.  Then the snapshot's bytes are
attached as new loop devices, PostgreSQL starts on them by crash recovery
(no backup_label), and we check that every row committed before the call
is there, that pgbench's balances add up, and that amcheck finds nothing.
"""

import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import PG_CHROOT, PGBIN, World  # noqa: E402
from restore import Restored  # noqa: E402
from e2e import (MARK_PROC, check_restore, label_from_tags, parse_pgbench,  # noqa: E402
                 pgbench_cmd, session, wait_for_call)


def snapshot_tags(state, sid):
    for s in state["snapshots"]:
        if s["id"] == sid:
            return s.get("tags", {})
    return None


def main():
    w = World(layout=[("data", "ext4"), ("wal", "xfs"), ("ts1", "ext4")])
    restored = None
    try:
        # A configuration file outside the data directory, as Debian keeps
        # them: the snapshot must carry a copy (extension/config_capture.c).
        # In the World's directory, which a PostgreSQL in a chroot sees too.
        extra_conf = w.path("etc", "extra settings.conf")
        os.makedirs(os.path.dirname(extra_conf))
        os.chmod(os.path.dirname(extra_conf), 0o755)
        with open(extra_conf, "w") as f:
            f.write("work_mem = '5MB'  # e2e: outside the data directory\n")
        os.chown(extra_conf, w.pg_uid, w.pg_gid)
        os.chmod(extra_conf, 0o640)
        with open(os.path.join(w.pgdata, "postgresql.conf"), "a") as f:
            f.write("include '%s'\n" % extra_conf)
        w.psql("SELECT pg_reload_conf()")
        is_(w.psql("SELECT setting FROM pg_file_settings WHERE name = 'work_mem' "
                   "AND sourcefile = '%s'" % extra_conf), "5MB",
            "the server reads a configuration file outside the data directory")
        diag("PostgreSQL %s (%s)" % (w.psql("SHOW server_version"),
                                     "chroot " + PG_CHROOT if PG_CHROOT else "host"))
        w.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port),
                       "-i", "-s", "4", "--tablespace=ts1", "-q", "bench"])
        w.psql(MARK_PROC, db="bench")

        # Writers: pgbench for 10 s, the marker writer for 8 s.
        bench = subprocess.Popen(pgbench_cmd(w, 10), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        marker = threading.Thread(target=w.psql, args=("CALL write_marks(8)",),
                                  kwargs={"db": "bench"})
        marker.start()
        time.sleep(3)

        before = int(w.psql("SELECT max(id) FROM marks", db="bench"))
        ok(before > 0, "marker rows are being committed (%d so far)" % before)
        t0 = time.time()
        row = w.psql("SELECT id, request_id, snapshot_name, instance_id, "
                     "array_to_string(volume_ids, ','), array_to_string(snapshot_ids, ','), "
                     "start_lsn, stop_lsn, timeline, frozen_ms, status "
                     "FROM ami_snapshot('e2e nightly')")
        elapsed = time.time() - t0
        f = row.split("|")
        diag("ami_snapshot() took %.3f s: %s" % (elapsed, row))
        is_(len(f), 11, "ami_snapshot() returns one row of 11 columns")
        is_(f[10], "succeeded", "status is succeeded")
        is_(f[2], "e2e nightly", "the name is returned")
        is_(f[3], "i-0a1b2c3d4e5f60718", "instance id from IMDS")
        vols = sorted(f[4].split(","))
        is_(vols, sorted(v.vol_id for v in w.volumes),
            "one volume per filesystem holding database state (data, wal, tablespace)")
        snaps = f[5].split(",")
        is_(len(snaps), 3, "three snapshots")
        ok(all(re.fullmatch(r"snap-[0-9a-f]{17}", s) for s in snaps), "snapshot ids look like EC2's")
        start_lsn, stop_lsn = f[6], f[7]
        ok(w.psql("SELECT '%s'::pg_lsn < '%s'::pg_lsn" % (start_lsn, stop_lsn)) == "t",
           "start LSN %s < stop LSN %s" % (start_lsn, stop_lsn))
        is_(f[8], "1", "timeline 1")
        frozen_ms = float(f[9])
        ok(0 < frozen_ms < 10000, "writes were frozen for %.3f ms" % frozen_ms)

        marker.join()
        out, _ = bench.communicate(timeout=120)
        failed, processed = parse_pgbench(out)
        is_(failed, 0, "pgbench: no failed transactions during the snapshot")
        ok(processed and processed > 0, "pgbench processed %s transactions" % processed)
        diag("pgbench: " + " ".join(l for l in out.splitlines() if "latency" in l or "tps" in l))

        # The history row.
        h = w.psql("SELECT status, array_length(snapshot_ids, 1), start_lsn, stop_lsn, "
                   "frozen_ms IS NOT NULL, backup_label ~ 'LABEL: e2e nightly', error_code IS NULL "
                   "FROM ami_snapshot_history WHERE id = %s" % f[0])
        is_(h, "succeeded|3|%s|%s|t|t|t" % (start_lsn, stop_lsn),
            "the history row records the snapshot and the backup label")
        is_(w.psql("SELECT count(*) FROM pg_stat_activity WHERE backend_type = "
                   "'ami_snapshot history writer'"), "0", "no history writer left running")

        # What the emulator saw.
        state = w.emulator_state()
        counts = state.get("request_counts", {})
        diag("emulator request counts: %s" % counts)
        tags = snapshot_tags(state, snaps[0])
        ok(tags is not None, "snapshot %s exists in the emulator" % snaps[0])
        tags = tags or {}
        is_(tags.get("ami-snapshot:name"), "e2e nightly", "tag ami-snapshot:name")
        is_(tags.get("ami-snapshot:request-id"), f[1], "tag ami-snapshot:request-id")
        ok((tags.get("ami-snapshot:tool") or "").startswith("ami_snapshot"), "tag ami-snapshot:tool")
        is_(tags.get("ami-snapshot:backup-state"), "stopped", "tag ami-snapshot:backup-state")
        is_(tags.get("ami-snapshot:start-lsn"), start_lsn, "tag ami-snapshot:start-lsn")
        is_(tags.get("ami-snapshot:stop-lsn"), stop_lsn, "tag ami-snapshot:stop-lsn")
        label = label_from_tags(tags)
        hist_label = w.psql("SELECT backup_label FROM ami_snapshot_history WHERE id = %s" % f[0])
        ok(label.strip() == hist_label.strip() and "START WAL LOCATION" in label,
           "the backup label travels in the tags", "tags: %r\nhistory: %r" % (label, hist_label))
        # Where each volume belonged, for the restore command (doc/restore.md).
        by_vol = {v.vol_id: v for v in w.volumes}
        layout_ok = []
        for sid in snaps:
            st = [s for s in state["snapshots"] if s["id"] == sid][0]
            t, v = st.get("tags", {}), by_vol.get(st["volume_id"])
            layout_ok.append(v is not None
                             and t.get("ami-snapshot:mount-point") == v.mount
                             and t.get("ami-snapshot:fstype") == v.fstype
                             and "ami-snapshot:partition" not in t
                             and t.get("ami-snapshot:device") == v.device_name
                             and t.get("ami-snapshot:data-directory") == w.pgdata
                             and t.get("ami-snapshot:volume-count") == "3")
        ok(all(layout_ok), "each snapshot names its mount point, filesystem type, device, "
           "the data directory and the set's size", repr(state["snapshots"]))
        all_snap_vols = sorted(s["volume_id"] for s in state["snapshots"])
        ok(w.root_volume.vol_id not in all_snap_vols, "the boot volume was excluded")

        # A clean image: the frozen ext4 needed no journal replay.
        data_snap = [s for s in state["snapshots"]
                     if s["id"] in snaps and s["volume_id"] == w.volume("data").vol_id][0]
        feat = subprocess.run(["dumpe2fs", "-h", data_snap["file"]], capture_output=True,
                              text=True).stdout
        ok("Filesystem features" in feat and "needs_recovery" not in feat,
           "the ext4 snapshot is clean (frozen: no journal replay needed)")

        # The live database keeps serving, and the session's backup ended.
        is_(w.psql("SELECT pg_backup_start('check', true) IS NOT NULL; SELECT count(*) > 0 FROM pg_backup_stop(false)"),
            "t\nt", "no backup left in progress in the session")
        is_(w.psql("SELECT count(*) FROM marks", db="bench") != "", True, "the database serves")

        # Restore and verify.
        restored = Restored(w, snaps)
        check_restore(w, restored, before)
        ts = restored.psql("SELECT count(*) FROM pgbench_accounts", db="bench")
        is_(ts, "400000", "the tablespace's tables are complete in the restore")

        # The configuration outside the data directory came along.
        cap = os.path.join(restored.pgdata, "ami_snapshot", "config")
        manifest = open(os.path.join(cap, "manifest")).read().splitlines()
        is_(manifest, ["0640\tpostgres\tpostgres\t" + extra_conf],
            "the snapshot's manifest lists the one configuration file outside the data directory")
        is_(open(os.path.join(cap, "files", extra_conf.lstrip("/"))).read(),
            open(extra_conf).read(), "and carries its bytes")

        # PostgreSQL 18 on: the library names itself and its version.
        if int(w.psql("SHOW server_version_num")) >= 180000:
            is_(w.psql("LOAD 'ami_snapshot'; SELECT module_name, version "
                       "FROM pg_get_loaded_modules() WHERE file_name = 'ami_snapshot.so'"),
                "ami_snapshot|" + w.psql("SELECT default_version FROM pg_available_extensions "
                                         "WHERE name = 'ami_snapshot'"),
                "pg_get_loaded_modules() names ami_snapshot and its version")

        # A backend waiting for the helper says so in pg_stat_activity: with
        # a wait event of its own from PostgreSQL 17 on.  EC2 answers the
        # first CreateTags late, so that the call waits long enough to see.
        want = ("Extension/AmiSnapshotHelper" if int(w.psql("SHOW server_version_num")) >= 170000
                else "Extension/Extension")
        w.emulator_control({"action": "CreateTags", "fault": "slow", "delay_ms": 2000, "count": 1})
        call = session(w, ["SELECT status FROM ami_snapshot('wait event')"], background=True)
        pid = wait_for_call(w)
        seen = set()
        deadline = time.time() + 10
        while time.time() < deadline and want not in seen and call.poll() is None:
            seen.add(w.psql("SELECT coalesce(wait_event_type, '') || '/' || coalesce(wait_event, '') "
                            "FROM pg_stat_activity WHERE pid = %d" % pid))
            time.sleep(0.05)
        out, err = call.communicate(timeout=60)
        ok(want in seen, "while it waits for the helper the backend shows wait event %s" % want,
           "seen: %s" % sorted(seen))
        is_(out.strip(), "succeeded", "the call with a slow CreateTags succeeded")
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        if restored:
            restored.close()
        w.close()
    done()


if __name__ == "__main__":
    main()
