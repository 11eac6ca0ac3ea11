#!/usr/bin/python3
"""
End to end: AMIs of a running database, by both methods, proven by a restore.

PostgreSQL with its data directory on ext4, pg_wal on XFS and a tablespace on
ext4 (three "EBS volumes") plus the instance's root volume; pgbench and the
marker writer commit while ami_snapshot(image => ...) runs.

- register: one CreateSnapshots of every volume (the root's too), then
  RegisterImage after the backup stopped;
- create: CreateImage (NoReboot) while frozen, frozen until its snapshots
  exist.

For each: the image is made, bootable-shaped (root device in the mapping,
x86_64, hvm, boot mode, ENA, every volume with its device, type, size and
DeleteOnTermination), tagged like its snapshots (every one, the root's
included), in the history; the database's volumes restored from the image's
mapping start by crash recovery with every committed row, pgbench's
invariant and a clean amcheck.  Then the failures: a name in use, CreateImage's
snapshots too late (thawed, image deregistered, nothing frozen, no backup
left), RegisterImage failing after the backup (clear error, snapshots tagged,
the set restorable), lost answers of RegisterImage (found by tag: success)
and CreateImage (found by tag and deregistered), RegisterImage throttled
(sent again), billing product codes refused unless overridden, and a
helper too old for images.
"""

import json
import os
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import PGBIN, World  # noqa: E402
from restore import Restored  # noqa: E402
from e2e import (MARK_PROC, SAME_SESSION_CHECK, check_after, check_failed, helper_at,  # noqa: E402
                 check_restore, label_from_tags, parse_pgbench, pgbench_cmd, restart_helper,
                 session)

COLS = ("status, image_id, array_to_string(snapshot_ids, ','), "
        "array_to_string(volume_ids, ','), frozen_ms, request_id, start_lsn, stop_lsn")


def image_of(state, image_id):
    return next((i for i in state["images"] if i["id"] == image_id), None)


def snapshot_tags(state, sid):
    return next((s.get("tags", {}) for s in state["snapshots"] if s["id"] == sid), None)


def requests(w, action):
    """The emulator's log of action's requests (params as sent), DryRuns left out."""
    out = []
    with open(os.path.join(w.store, "emu-state", "requests.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("action") == action and "DryRun" not in rec.get("params", {}):
                out.append(rec)
    return out


def load(w, seconds):
    """pgbench and the marker writer, for seconds; returns (bench, marker)."""
    bench = subprocess.Popen(pgbench_cmd(w, seconds, vacuum=False), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    marker = threading.Thread(target=w.psql, args=("CALL write_marks(%d)" % (seconds - 2),),
                              kwargs={"db": "bench"})
    marker.start()
    time.sleep(3)
    return bench, marker


def end_load(bench, marker, what):
    marker.join()
    out, _ = bench.communicate(timeout=120)
    failed, processed = parse_pgbench(out)
    is_(failed, 0, "%s: pgbench had no failed transactions" % what)
    ok(processed and processed > 0, "%s: pgbench processed %s transactions" % (what, processed))


def check_image(w, method, name, f):
    """The image of a successful call: shape, tags, history; returns (image, state)."""
    status, image_id, snaps, vols, frozen_ms = f[0], f[1], f[2].split(","), f[3].split(","), f[4]
    is_(status, "succeeded", "%s: status succeeded" % method)
    ok(image_id.startswith("ami-"), "%s: the result names the image (%s)" % (method, image_id))
    all_vols = sorted([w.root_volume.vol_id] + [v.vol_id for v in w.volumes])
    is_(sorted(vols), all_vols, "%s: one snapshot per volume of the instance, the root's too"
        % method)
    diag("%s: writes frozen for %s ms" % (method, frozen_ms))
    state = w.emulator_state()
    img = image_of(state, image_id)
    ok(img is not None, "%s: the image exists in EC2" % method)
    img = img or {"block_device_mappings": [], "tags": {}}
    is_(img.get("source"), "RegisterImage" if method == "register" else "CreateImage",
        "%s: made by %s" % (method, img.get("source")))
    is_(img.get("architecture"), "x86_64", "%s: architecture x86_64 (not the API's i386)" % method)
    is_(img.get("virtualization_type"), "hvm", "%s: hvm" % method)
    is_(img.get("root_device_name"), "/dev/xvda", "%s: root device /dev/xvda" % method)
    bdm = {m["deviceName"]: m.get("ebs") or {} for m in img["block_device_mappings"]}
    devices = sorted([w.root_volume.device_name] + [v.device_name for v in w.volumes])
    is_(sorted(bdm), devices, "%s: every volume in the mapping, by its device name" % method)
    ok("/dev/xvda" in bdm and bdm["/dev/xvda"].get("snapshotId"),
       "%s: the root device is mapped to a snapshot" % method)
    ok(all(m.get("volumeType") == "gp3" and m.get("volumeSize") == 1 for m in bdm.values()),
       "%s: each volume's type and size" % method, json.dumps(bdm))
    ok(bdm.get("/dev/xvda", {}).get("deleteOnTermination") is True and
       all(bdm[d.device_name].get("deleteOnTermination") is False for d in w.volumes),
       "%s: DeleteOnTermination as on the instance" % method, json.dumps(bdm))
    is_(sorted(m.get("snapshotId") for m in bdm.values()), sorted(snaps),
        "%s: the image maps exactly the snapshots returned" % method)
    if method == "register":
        reg = requests(w, "RegisterImage")
        p = reg[-1]["params"] if reg else {}
        is_((p.get("Architecture"), p.get("VirtualizationType"), p.get("BootMode"),
             p.get("EnaSupport")), ("x86_64", "hvm", "uefi", "true"),
            "register: RegisterImage got the instance's architecture, boot mode and ENA")
        is_(p.get("SriovNetSupport"), "simple", "register: SR-IOV support of the source image")
        cs = requests(w, "CreateSnapshots")
        cp = cs[-1]["params"] if cs else {}
        ok(not any(k.startswith("InstanceSpecification.Exclude") and v not in ("false", False)
                   for k, v in cp.items()),
           "register: one CreateSnapshots excluding nothing", json.dumps(cp))
    else:
        is_(img.get("no_reboot"), True, "create: NoReboot=true")
        is_(state.get("reboots"), 0, "create: no reboot")
    tags = img.get("tags") or {}
    is_(tags.get("ami-snapshot:backup-state"), "stopped", "%s: the image is tagged stopped" % method)
    is_(tags.get("ami-snapshot:request-id"), f[5], "%s: the image has the request id" % method)
    is_(tags.get("ami-snapshot:stop-lsn"), f[7], "%s: the image has the stop LSN" % method)
    ok("START WAL LOCATION" in label_from_tags(tags), "%s: the image carries the backup label"
       % method)
    bad = []
    for sid in snaps:
        t = snapshot_tags(state, sid) or {}
        if (t.get("ami-snapshot:backup-state") != "stopped" or
                t.get("ami-snapshot:request-id") != f[5] or
                t.get("ami-snapshot:image-id") != image_id or
                t.get("ami-snapshot:stop-lsn") != f[7] or not t.get("ami-snapshot:device") or
                t.get("ami-snapshot:volume-count") != str(len(all_vols))):
            bad.append((sid, t))
    ok(not bad, "%s: every snapshot (the root's too) is tagged stopped, with the request id, "
       "the image id, the stop LSN, its device and the set's size" % method,
       json.dumps(bad)[:2000])
    h = w.psql("SELECT status, image_id, image_method, array_length(snapshot_ids, 1) "
               "FROM ami_snapshot_history WHERE request_id = '%s'" % f[5])
    is_(h, "succeeded|%s|%s|%d" % (image_id, method, len(all_vols)),
        "%s: the history row has the image and the method" % method)
    return img, state


def restore_from_image(w, img, state, name):
    """The database's volumes from the image's mapping, as a launch would."""
    by_dev = {v.device_name: v.vol_id for v in w.volumes}
    snaps = [m["ebs"]["snapshotId"] for m in img["block_device_mappings"]
             if m["deviceName"] in by_dev]
    vol_of = {s["id"]: s["volume_id"] for s in state["snapshots"]}
    ok(all(vol_of.get(m["ebs"]["snapshotId"]) == by_dev[m["deviceName"]]
           for m in img["block_device_mappings"] if m["deviceName"] in by_dev),
       "%s: each device of the image holds the snapshot of the volume attached there" % name)
    return Restored(w, snaps, name=name)


# The last commit of main before images (the parent of their merge).
BEFORE_IMAGES = "3f8080b5e665be88c32fdb202ccb7bd6b5aad0ef"


def old_helper():
    """The helper as it was before images, built from git's history."""
    return helper_at(BEFORE_IMAGES, "AMSP_T_IMAGE_METHOD")


def main():
    w = World(layout=[("data", "ext4"), ("wal", "xfs"), ("ts1", "ext4")])
    restored = []
    try:
        w.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port),
                       "-i", "-s", "4", "--tablespace=ts1", "-q", "bench"])
        w.psql(MARK_PROC, db="bench")

        # 1. register, under load.
        bench, marker = load(w, 10)
        before = int(w.psql("SELECT max(id) FROM marks", db="bench"))
        f = w.psql("SELECT %s FROM ami_snapshot('e2e register', image => 'register')"
                   % COLS).split("|")
        end_load(bench, marker, "register")
        img, state = check_image(w, "register", "e2e register", f)
        r = restore_from_image(w, img, state, "restore-register")
        restored.append(r)
        check_restore(w, r, before)
        r.close()
        check_after(w, "register")

        # 2. create, under load.
        bench, marker = load(w, 10)
        before = int(w.psql("SELECT max(id) FROM marks", db="bench"))
        f = w.psql("SELECT %s FROM ami_snapshot('e2e create', image => 'create')"
                   % COLS).split("|")
        end_load(bench, marker, "create")
        img, state = check_image(w, "create", "e2e create", f)
        r = restore_from_image(w, img, state, "restore-create")
        restored.append(r)
        check_restore(w, r, before)
        r.close()
        check_after(w, "create")

        # 3. A name one of our images has already: refused before the backup.
        n_snaps = len(w.emulator_state()["snapshots"])
        r = session(w, ["SELECT * FROM ami_snapshot('e2e create', image => 'register')",
                        SAME_SESSION_CHECK])
        check_failed(w, r, "e2e create", "ImageNameInUse", "name in use")
        is_(len(w.emulator_state()["snapshots"]), n_snaps, "name in use: no snapshot made")

        # 4. create: the image's snapshots come too late: thawed at
        #    freeze_timeout (10 s), the image deregistered, nothing left.
        w.emulator_control({"create_image_snapshot_delay_ms": 30000})
        t0 = time.time()
        r = session(w, ["SELECT * FROM ami_snapshot('e2e create late', image => 'create')",
                        SAME_SESSION_CHECK])
        took = time.time() - t0
        h = check_failed(w, r, "e2e create late", "ImageTimeout", "create too late")
        ok("deregistered" in r.stderr, "create too late: the error says the image was "
           "deregistered", r.stderr)
        # An ordering: the call ended without waiting for the image's
        # snapshots (delayed 30 s).
        ok(took < 30, "create too late: the call ended after %.1f s, before the image's "
           "snapshots (delayed 30 s)" % took)
        hi = w.psql("SELECT image_id, image_method, frozen_ms FROM ami_snapshot_history "
                    "WHERE request_id = '%s'" % h[4]).split("|")
        ok(hi[0].startswith("ami-") and hi[1] == "create",
           "create too late: the history names the half-made image", hi)
        ok(hi[2] and 9000 <= float(hi[2]) < 11000,
           "create too late: writes were frozen for the whole freeze_timeout (%s ms)" % hi[2])
        state = w.emulator_state()
        ok(image_of(state, hi[0]) is None, "create too late: the image is gone from EC2")
        ok(not [s for s in state["snapshots"]
                if (s.get("tags") or {}).get("ami-snapshot:request-id") == h[4] and
                (s.get("tags") or {}).get("ami-snapshot:backup-state") != "failed"],
           "create too late: no snapshot of it left untagged")
        w.emulator_control({"create_image_snapshot_delay_ms": 200})
        time.sleep(1)

        # 5. register: RegisterImage fails after the backup stopped.
        w.emulator_control({"action": "RegisterImage", "fault": "error",
                            "code": "InvalidBlockDeviceMapping", "count": 1})
        before = int(w.psql("SELECT coalesce(max(id), 0) FROM marks", db="bench"))
        r = session(w, ["SELECT * FROM ami_snapshot('e2e register fails', image => 'register')",
                        SAME_SESSION_CHECK])
        ok("InvalidBlockDeviceMapping" in r.stderr and "restorable" in r.stderr,
           "RegisterImage fails: a clear error that says the snapshot set is restorable",
           r.stderr)
        is_(r.stdout.split(), ["t", "t"], "RegisterImage fails: no backup left in the session")
        check_after(w, "RegisterImage fails")
        hr = w.psql("SELECT status, error_code, stop_lsn IS NOT NULL, backup_label IS NOT NULL, "
                    "array_to_string(snapshot_ids, ','), image_id IS NULL, request_id "
                    "FROM ami_snapshot_history WHERE name = 'e2e register fails'").split("|")
        is_(hr[:4], ["failed", "InvalidBlockDeviceMapping", "t", "t"],
            "RegisterImage fails: the history row is failed, with the stop LSN and the label")
        snaps = hr[4].split(",")
        state = w.emulator_state()
        tagged = [snapshot_tags(state, s) or {} for s in snaps]
        ok(len(snaps) == 4 and all(t.get("ami-snapshot:backup-state") == "stopped" and
                                   t.get("ami-snapshot:image-state") == "failed"
                                   for t in tagged),
           "RegisterImage fails: every snapshot is tagged stopped and image-state=failed",
           json.dumps(tagged)[:1500])
        ok(not [i for i in state["images"] if i["name"] == "e2e register fails"],
           "RegisterImage fails: no image")
        vol_of = {s["id"]: s["volume_id"] for s in state["snapshots"]}
        db = [s for s in snaps if vol_of.get(s) in {v.vol_id for v in w.volumes}]
        r = Restored(w, db, name="restore-failed-register")
        restored.append(r)
        check_restore(w, r, before)
        r.close()

        # 5b. Lost answers.  RegisterImage's: sent once, the image found by its
        #     request-id tag, the call succeeds.
        n_reg = len(requests(w, "RegisterImage"))
        w.emulator_control({"action": "RegisterImage", "fault": "drop", "count": 1,
                            "execute": True})
        out = w.psql("SELECT status, image_id, request_id FROM ami_snapshot('e2e register lost', "
                     "image => 'register')").split("|")
        is_(out[0], "succeeded", "RegisterImage's answer lost: the call succeeds")
        is_(len(requests(w, "RegisterImage")) - n_reg, 1,
            "RegisterImage's answer lost: exactly one RegisterImage was sent")
        img = image_of(w.emulator_state(), out[1]) or {}
        is_((img.get("name"), (img.get("tags") or {}).get("ami-snapshot:request-id")),
            ("e2e register lost", out[2]),
            "RegisterImage's answer lost: the image it made was found by its request-id tag")
        ok("answer was lost" in open(w.helper_log).read(),
           "RegisterImage's answer lost: the helper's log says so")

        #     CreateImage's (made while frozen; the two DryRuns before it pass):
        #     thawed, the image it made found by tag and deregistered, its
        #     snapshots (if any yet) tagged failed.
        n_create = len(requests(w, "CreateImage"))
        w.emulator_control({"action": "CreateImage", "fault": "drop", "count": 1, "dry_run": False,
                            "execute": True})
        r = session(w, ["SELECT * FROM ami_snapshot('e2e create lost', image => 'create')",
                        SAME_SESSION_CHECK])
        h = check_failed(w, r, "e2e create lost", "ConnectionError", "CreateImage's answer lost")
        is_(len(requests(w, "CreateImage")) - n_create, 1,
            "CreateImage's answer lost: exactly one CreateImage was sent")
        ok("deregistered" in r.stderr, "CreateImage's answer lost: the image it made was found "
           "and deregistered", r.stderr)
        time.sleep(1)  # the emulator's CreateImage copies 200 ms after the call
        state = w.emulator_state()
        ok(not [i for i in state["images"] if i["name"] == "e2e create lost"],
           "CreateImage's answer lost: no image left")
        ok(not [s for s in state["snapshots"]
                if (s.get("tags") or {}).get("ami-snapshot:request-id") == h[4] and
                (s.get("tags") or {}).get("ami-snapshot:backup-state") != "failed"],
           "CreateImage's answer lost: no snapshot of it left untagged")

        # 5c. RegisterImage throttled (EC2 did not carry it out): with retries,
        #     sent again after the back-off, and the call succeeds.
        restart_helper(w, "[helper]\nretries = 1\nretry_backoff = 100ms\n")
        n_reg = len(requests(w, "RegisterImage"))
        w.emulator_control({"action": "RegisterImage", "fault": "throttle", "count": 1})
        out = w.psql("SELECT status, image_id IS NOT NULL FROM ami_snapshot("
                     "'e2e register throttled', image => 'register')")
        is_(out, "succeeded|t", "RegisterImage throttled once: retried, the call succeeds")
        is_(len(requests(w, "RegisterImage")) - n_reg, 2,
            "RegisterImage throttled once: sent twice (the first was refused)")

        # 6. A helper too old for images: a clear error; snapshot sets still work.
        binary = old_helper()
        ok(binary is not None, "a helper from before images was built")
        if binary:
            with w.helper_binary(binary):
                r = session(w, ["SELECT * FROM ami_snapshot('e2e old helper', image => "
                                "'register')", SAME_SESSION_CHECK])
                check_failed(w, r, "e2e old helper", "HelperTooOld", "old helper")
                ok("too old for images" in r.stderr, "old helper: the error says so", r.stderr)
                is_(w.psql("SELECT status, image_id IS NULL FROM ami_snapshot('e2e old helper "
                           "set')"), "succeeded|t", "old helper: a snapshot set still works")
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        for r in restored:
            r.close()
        w.close()

    # 7. Billing product codes: register refused unless overridden; create keeps them.
    w = World(layout=[("data", "ext4")],
              emulator_config_extra={"product_codes": [{"id": "3f8t6t8fp5m9xx18yzwriozxi",
                                                        "type": "marketplace"}],
                                     "usage_operation": "RunInstances:0010",
                                     "platform_details": "Red Hat Enterprise Linux"})
    try:
        r = session(w, ["SELECT * FROM ami_snapshot('e2e rhel', image => 'register')",
                        SAME_SESSION_CHECK])
        check_failed(w, r, "e2e rhel", "BillingProductCodes", "billing codes")
        ok("image => 'create'" in r.stderr and "allow_product_code_loss" in r.stderr,
           "billing codes: the error names the create method and the override", r.stderr)
        counts = w.emulator_state()["request_counts"]
        is_(counts.get("CreateSnapshots", 0), 0, "billing codes: refused before any snapshot")
        is_(w.psql("SELECT status FROM ami_snapshot('e2e rhel override', image => 'register', "
                   "allow_product_code_loss => true)"), "succeeded",
            "billing codes: allow_product_code_loss => true makes the image")
        is_(w.psql("SELECT status FROM ami_snapshot('e2e rhel create', image => 'create')"),
            "succeeded", "billing codes: image => 'create' makes the image")
        check_after(w, "billing codes")
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        w.close()
    done()


if __name__ == "__main__":
    main()
