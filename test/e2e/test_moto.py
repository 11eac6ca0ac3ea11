#!/usr/bin/python3
"""
End to end against a second, independent EC2: moto's server, with
test/emulator/moto_front.py in front of it for IMDS, the snapshots' bytes
and the faults moto cannot play (World(ec2="moto"), test/lib/moto_backend.py).

moto checks every request of the helper: the IAM access key, the SigV4
signature, the IAM policy (the helper's user may make exactly the EC2 calls
the helper makes).  Cases:
  * auth is on after the setup: unsigned, wrongly signed and altered
    requests are refused;
  * pgbench load, ami_snapshot('nightly') on data (ext4) and pg_wal (XFS),
    the snapshots' tags in moto, a restore with every committed row;
  * writes stay frozen while the CreateSnapshots call is in flight (delay);
  * failures through the real helper: an IAM user without
    ec2:CreateSnapshots, a wrong secret, an instance moto does not know, a
    throttled call retried, a lost answer (moto made the snapshots);
  * an AMI by register: moto takes the helper's DescribeImages,
    DescribeVolumes, CreateSnapshots of every volume (its root's too) and
    RegisterImage, signed and allowed by the policy.  (moto 5 keeps neither
    RegisterImage's block device mapping nor its tags, and its CreateImage
    fails with a 500 on this instance: the images' shape and create are
    proven against the emulator, test_ami.py.)
After each failure: nothing frozen, no backup left running, the database
takes writes, the history row failed with the code.  No secret key appears
in any log or output.

Fails (not ok) when no Python with moto is found: install moto, or set
MOTO_PYTHON.
"""

import os
import re
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import PGBIN, REGION, World  # noqa: E402
from restore import Restored  # noqa: E402
from moto_backend import MotoNotFound  # noqa: E402
from e2e import (MARK_PROC, SAME_SESSION_CHECK, check_failed, check_restore,  # noqa: E402
                 label_from_tags, log_pos, log_since, parse_pgbench, pgbench_cmd,
                 restart_helper, session)

UNKNOWN_INSTANCE = "i-0123456789abcdef0"
OUTPUTS = []   # everything the helper and PostgreSQL said to the client


def call(w, name):
    """ami_snapshot(name) in a session that then checks its backup ended."""
    r = session(w, ["SELECT * FROM ami_snapshot('%s')" % name] + [SAME_SESSION_CHECK])
    OUTPUTS.extend([r.stdout, r.stderr])
    return r


def real_calls(w, since=0):
    """The CreateSnapshots calls (not DryRuns) the front passed or faulted."""
    reqs = w.moto.front_state()["requests"][since:]
    return [q for q in reqs if q["action"] == "CreateSnapshots" and not q["dry_run"]]


def moto_snapshots(w, ids=(), filters=None):
    """Snapshots in moto, by a signed DescribeSnapshots of ids or with
    filters ({name: value}): {id: (volume id, tags)}."""
    kw = {"SnapshotIds": list(ids)} if ids else {}
    kw["Filters"] = [{"Name": k, "Values": [v]} for k, v in (filters or {}).items()]
    out = w.moto.ec2("helper").describe_snapshots(**kw)["Snapshots"]
    return {s["SnapshotId"]: (s["VolumeId"], {t["Key"]: t["Value"] for t in s.get("Tags", [])})
            for s in out}


def case_auth_is_on(w):
    p = w.moto.auth_probe
    diag("moto auth probe after %d setup calls: %s" % (w.moto.setup_calls, p))
    ok(p["unsigned"][0] >= 400, "auth on: an unsigned request is refused", p["unsigned"])
    is_(p["wrong secret"], (401, "AuthFailure"), "auth on: a wrong signature gets AuthFailure")
    is_(p["unknown key"], (401, "AuthFailure"), "auth on: an unknown key gets AuthFailure")
    is_(p["body changed"], (401, "AuthFailure"),
        "auth on: a body changed after signing gets AuthFailure")
    is_(p["signed"], (200, None), "auth on: a correctly signed request (a space as +, as the helper sends it) is served")
    body = "Action=DescribeInstances&Version=2016-11-15"
    is_(w.moto.raw_call(body, w.moto.keys["limited"]), (200, None),
        "IAM: the limited user may DescribeInstances")
    is_(w.moto.raw_call("Action=DescribeVpcs&Version=2016-11-15", w.moto.keys["helper"]),
        (403, "AccessDenied"), "IAM: the helper's user may not make calls the helper does not")


def case_snapshot(w):
    w.psql("CREATE DATABASE bench")
    w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port),
                   "-i", "-s", "2", "-q", "bench"])
    w.psql(MARK_PROC, db="bench")
    bench = subprocess.Popen(pgbench_cmd(w, 6), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    marker = threading.Thread(target=w.psql, args=("CALL write_marks(5)",),
                              kwargs={"db": "bench"})
    marker.start()
    time.sleep(2)
    before = int(w.psql("SELECT max(id) FROM marks", db="bench"))
    ok(before > 0, "marker rows are being committed (%d so far)" % before)
    row = w.psql("SELECT id, request_id, instance_id, array_to_string(volume_ids, ','), "
                 "array_to_string(snapshot_ids, ','), start_lsn, stop_lsn, status "
                 "FROM ami_snapshot('nightly')")
    diag("ami_snapshot(): " + row)
    f = row.split("|")
    is_(f[7], "succeeded", "ami_snapshot('nightly') succeeded against moto")
    is_(f[2], w.instance_id, "the instance id moto assigned, from the front's IMDS")
    vols = f[3].split(",")
    is_(sorted(vols), sorted(v.vol_id for v in w.volumes), "one snapshot per volume: data, wal")
    snaps = f[4].split(",")
    ok(len(snaps) == 2 and all(re.fullmatch(r"snap-[0-9a-f]{17}", s) for s in snaps),
       "two snapshot ids as moto makes them", snaps)
    start_lsn, stop_lsn = f[5], f[6]
    marker.join()
    out, _ = bench.communicate(timeout=120)
    failed, processed = parse_pgbench(out)
    is_(failed, 0, "pgbench: no failed transactions during the snapshot")
    ok(processed and processed > 0, "pgbench processed %s transactions" % processed)
    is_(w.psql("SELECT status, error_code IS NULL, array_to_string(snapshot_ids, ',') "
               "FROM ami_snapshot_history WHERE id = %s" % f[0]),
        "succeeded|t|" + f[4], "the history row is succeeded, with the snapshots")

    # What moto holds: the snapshots, with the helper's tags.
    in_moto = moto_snapshots(w, ids=snaps)
    is_(sorted(in_moto), sorted(snaps), "DescribeSnapshots: moto has both snapshots")
    is_(sorted(v[0] for v in in_moto.values()), sorted(vols),
        "DescribeSnapshots: of the data and wal volumes")
    for sid, (vol, tags) in sorted(in_moto.items()):
        is_((tags.get("ami-snapshot:name"), tags.get("ami-snapshot:request-id"),
             tags.get("ami-snapshot:backup-state"), tags.get("ami-snapshot:start-lsn"),
             tags.get("ami-snapshot:stop-lsn")),
            ("nightly", f[1], "stopped", start_lsn, stop_lsn),
            "%s: tags name, request-id, backup-state=stopped, start and stop LSN" % sid)
    label = label_from_tags(in_moto[snaps[0]][1]) if snaps[0] in in_moto else ""
    hist_label = w.psql("SELECT backup_label FROM ami_snapshot_history WHERE id = %s" % f[0])
    ok("START WAL LOCATION" in label and label.strip() == hist_label.strip(),
       "the backup label travels in the tags", label)
    # moto ignores ExcludeDataVolumeId: only ExcludeBootVolume keeps the
    # instance's root volume out.
    is_(sorted(moto_snapshots(w, filters={"tag:ami-snapshot:request-id": f[1]})), sorted(snaps),
        "moto made these two snapshots and no other (the boot volume was excluded)")

    restored = Restored(w, snaps)
    try:
        check_restore(w, restored, before)
    finally:
        restored.close()


def case_frozen_in_flight(w):
    """The delayed call is made while the filesystems are frozen."""
    mark = len(w.moto.front_state()["requests"])
    w.moto.front_control({"action": "CreateSnapshots", "fault": "delay", "delay_ms": 2000})
    p = session(w, ["SELECT status FROM ami_snapshot('in flight')"], background=True)
    mounts = sorted(v.mount for v in w.volumes)
    frozen = []
    deadline = time.time() + 20
    while frozen != mounts and p.poll() is None and time.time() < deadline:
        frozen = sorted(w.frozen_mounts(wait=0.3))
    out, err = p.communicate(timeout=60)
    OUTPUTS.extend([out, err])
    is_(frozen, mounts, "delay: both filesystems frozen while CreateSnapshots is in flight")
    is_(out.strip(), "succeeded", "delay: the call succeeds")
    is_([(q["status"], q["fault"]) for q in real_calls(w, mark)], [(200, "delay")],
        "delay: one CreateSnapshots, delayed by the front, served by moto")


def case_no_permission(w):
    w.set_aws_key("limited")
    restart_helper(w)
    pos, mark = log_pos(w), len(w.moto.front_state()["requests"])
    r = call(w, "no permission")
    check_failed(w, r, "no permission", "AccessDenied", "no IAM permission")
    ok("ec2:CreateSnapshots" in r.stderr and "prepare" in r.stderr,
       "no IAM permission: the error names the action, in prepare", r.stderr)
    ok("writes frozen for" not in log_since(w, pos) and not real_calls(w, mark),
       "no IAM permission: nothing was frozen, no snapshot asked for")


def case_bad_signature(w):
    w.set_aws_key("helper", secret=w.moto.keys["helper"][1][::-1])
    restart_helper(w)
    pos, mark = log_pos(w), len(w.moto.front_state()["requests"])
    r = call(w, "bad signature")
    check_failed(w, r, "bad signature", "AuthFailure", "wrong secret")
    ok("writes frozen for" not in log_since(w, pos) and not real_calls(w, mark),
       "wrong secret: nothing was frozen, no snapshot asked for")


def case_unknown_instance(w):
    w.set_aws_key("helper")
    w.moto.front_control({"identity": {"instanceId": UNKNOWN_INSTANCE}})
    restart_helper(w)
    pos, mark = log_pos(w), len(w.moto.front_state()["requests"])
    r = call(w, "unknown instance")
    check_failed(w, r, "unknown instance", "InvalidInstanceID.NotFound", "unknown instance")
    ok(UNKNOWN_INSTANCE in r.stderr, "unknown instance: the error names it", r.stderr)
    ok("writes frozen for" not in log_since(w, pos) and not real_calls(w, mark),
       "unknown instance: nothing was frozen, no snapshot asked for")
    w.moto.front_control({"clear": True})


def case_throttled_retry(w):
    restart_helper(w, "[helper]\nretries = 1\nretry_backoff = 100ms\n")
    pos, mark = log_pos(w), len(w.moto.front_state()["requests"])
    w.moto.front_control({"action": "CreateSnapshots", "fault": "throttle", "count": 1})
    r = w.psql("SELECT status, array_to_string(snapshot_ids, ',') FROM ami_snapshot('throttled')",
               check=False)
    OUTPUTS.extend([r.stdout, r.stderr])
    status, _, ids = r.stdout.strip().partition("|")
    ok(status == "succeeded", "throttled: succeeds at the retry", r.stderr)
    is_([(q["status"], q["fault"]) for q in real_calls(w, mark)],
        [(503, "throttle"), (200, None)], "throttled: a 503, then the retry moto served")
    log = log_since(w, pos)
    ok("attempt 1 of 2 failed: RequestLimitExceeded" in log, "throttled: the retry is logged")
    is_(log.count("writes frozen for"), 2, "throttled: two freeze windows")
    tags = [t for _, t in moto_snapshots(w, ids=ids.split(",")).values()]
    is_([t.get("ami-snapshot:backup-state") for t in tags], ["stopped", "stopped"],
        "throttled: moto holds the retry's two snapshots, tagged stopped")
    ok(w.frozen_mounts() == [], "throttled: no filesystem left frozen")
    restart_helper(w)


def case_lost_answer(w):
    mark = len(w.moto.front_state()["requests"])
    w.moto.front_control({"action": "CreateSnapshots", "fault": "drop", "count": 1})
    r = call(w, "lost answer")
    h = check_failed(w, r, "lost answer", "ConnectionError", "lost answer")
    is_([(q["status"], q["fault"]) for q in real_calls(w, mark)], [(200, "drop")],
        "lost answer: one CreateSnapshots, served by moto, its answer dropped")
    made = moto_snapshots(w, filters={"tag:ami-snapshot:request-id": h[4]})
    is_(len(made), 2, "lost answer: moto made a snapshot of each volume")
    is_(sorted(t.get("ami-snapshot:backup-state") for _, t in made.values()),
        ["failed", "failed"], "lost answer: the helper found them and tagged them failed")
    row = w.psql("SELECT array_to_string(volume_ids, ','), array_to_string(snapshot_ids, ','), "
                 "instance_id, region FROM ami_snapshot_history "
                 "WHERE request_id = '%s'" % h[4]).split("|")
    by_vol = {vol: sid for sid, (vol, _) in made.items()}
    vols = row[0].split(",")
    ok(sorted(vols) == sorted(v.vol_id for v in w.volumes)
       and row[1].split(",") == [by_vol.get(v) for v in vols],
       "lost answer: the history row lists the snapshots moto made, with their volumes", row)
    is_(row[2:], [w.instance_id, REGION], "lost answer: the history row has the instance, region")


def case_ami_register(w):
    r = w.psql("SELECT status, image_id, array_to_string(snapshot_ids, ','), "
               "array_to_string(volume_ids, ',') FROM ami_snapshot('moto ami', "
               "image => 'register')", check=False)
    OUTPUTS.extend([r.stdout, r.stderr])
    f = r.stdout.strip().split("|")
    ok(len(f) == 4 and f[0] == "succeeded" and f[1].startswith("ami-"),
       "AMI (register): succeeds against moto", r.stderr)
    if len(f) != 4:
        return
    is_(sorted(f[3].split(",")), sorted([w.moto.root_volume_id] + w.moto.volume_ids),
        "AMI (register): one snapshot of every volume, moto's root volume too")
    imgs = w.moto.ec2("helper").describe_images(ImageIds=[f[1]])["Images"]
    is_([(i["Name"], i["State"]) for i in imgs], [("moto ami", "available")],
        "AMI (register): moto holds the image by its name")
    tags = [t for _, t in moto_snapshots(w, ids=f[2].split(",")).values()]
    ok(len(tags) == 3 and all(t.get("ami-snapshot:backup-state") == "stopped" and
                              t.get("ami-snapshot:image-id") == f[1] for t in tags),
       "AMI (register): every snapshot tagged stopped, with the image id", tags)
    ok(w.frozen_mounts() == [], "AMI (register): no filesystem left frozen")


def check_no_secrets(w):
    secrets = [k[1] for k in w.moto.keys.values()]
    secrets.append(w.moto.keys["helper"][1][::-1])
    logs = [w.helper_log, w.moto.moto_log, w.moto.front_log,
            os.path.join(w.pgrun, "postgres.log")]
    texts = [open(p, errors="replace").read() for p in logs] + OUTPUTS
    ok(all(s not in t for s in secrets for t in texts),
       "no secret key in the helper's, moto's, the front's or PostgreSQL's log, or in any output")


def main():
    w = None
    try:
        w = World(layout=[("data", "ext4"), ("wal", "xfs")], ec2="moto")
    except MotoNotFound as e:
        ok(False, "moto is installed (a Python that can import moto)", str(e))
        done()
    except Exception as e:
        bail(e)
        done()
    try:
        diag("moto %s, instance %s, volumes %s" % (w.moto.version, w.instance_id,
                                                     [v.vol_id for v in w.volumes]))
        case_auth_is_on(w)
        case_snapshot(w)
        case_frozen_in_flight(w)
        case_no_permission(w)
        case_bad_signature(w)
        case_unknown_instance(w)
        case_throttled_retry(w)
        case_lost_answer(w)
        case_ami_register(w)
        check_no_secrets(w)
    except Exception as e:
        bail(e, [w.helper_log, w.moto.front_log, w.moto.moto_log])
    finally:
        w.close()
    done()


if __name__ == "__main__":
    main()
