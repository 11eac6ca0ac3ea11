#!/usr/bin/python3
"""
End to end: the EC2 round trips one ami_snapshot() pays (issue 16,
doc/performance.md), counted in the emulator's request log (counts and the
order of arrivals and answers, never durations), with 200 ms of latency on
every EC2 request so that requests made at once visibly overlap.

- The first call after the helper starts: DescribeInstances, then the
  preflight DryRun CreateSnapshots (one after the other: no mapping is
  kept yet), no DryRun before the freeze (EC2 answered moments ago: the
  connection is warm), the one CreateSnapshots, and one CreateTags for the
  set plus one per snapshot (its device and layout), all made at once.
- The second call: the same requests, but DescribeInstances and the DryRun
  made at once (each received before the other was answered); the set and
  its tags as before.
- A volume attached to the instance since (CreateVolume, AttachVolume): the
  next call notices the changed mapping from DescribeInstances, plans
  again, makes a DryRun of the new request, and its CreateSnapshots
  excludes the new volume: the set holds exactly the database's volumes,
  tagged with their devices.  The call after keeps the new mapping: one
  DryRun, made with DescribeInstances.
"""

import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import World  # noqa: E402
from e2e import log_pos, log_since, round_trips, wait_for  # noqa: E402

LATENCY_MS = 200


def log_lines(w):
    with open(os.path.join(w.emu_state_dir, "requests.jsonl")) as f:
        return sum(1 for _ in f)


def requests_since(w, n):
    """The EC2 requests (records of the emulator's log) from line n on."""
    with open(os.path.join(w.emu_state_dir, "requests.jsonl")) as f:
        recs = [json.loads(x) for x in f.readlines()[n:]]
    return [r for r in recs if r.get("kind") == "ec2" and r.get("action")]


def is_dry(r):
    return r.get("params", {}).get("DryRun") == "true"


def at_once(a, b):
    """Each received before the other was answered: made at the same time."""
    return a["received_at"] < b["responded_at"] and b["received_at"] < a["responded_at"]


def one_call(w, name):
    """ami_snapshot(name): its EC2 requests by kind, and its history row."""
    n = log_lines(w)
    w.psql("SELECT ami_snapshot('%s')" % name)
    reqs = requests_since(w, n)
    row = w.psql("SELECT status, array_to_string(volume_ids, ','), "
                 "array_to_string(snapshot_ids, ',') FROM ami_snapshot_history "
                 "WHERE name = '%s'" % name).split("|")
    return {
        "all": reqs,
        "describe": [r for r in reqs if r["action"] == "DescribeInstances"],
        "dry": [r for r in reqs if r["action"] == "CreateSnapshots" and is_dry(r)],
        "create": [r for r in reqs if r["action"] == "CreateSnapshots" and not is_dry(r)],
        "tags": [r for r in reqs if r["action"] == "CreateTags"],
        "row": row,
    }


def excluded(r):
    p = r.get("params", {})
    return sorted(v for k, v in p.items()
                  if k.startswith("InstanceSpecification.ExcludeDataVolumeId."))


def snapshot_devices(w, ids):
    """{volume id: ami-snapshot:device tag} of the set's snapshots."""
    out = {}
    for sid in ids:
        root = w.ec2_call("DescribeSnapshots", **{"SnapshotId.1": sid})
        vol = root.findtext(".//volumeId")
        for t in root.iter("item"):
            if t.findtext("key") == "ami-snapshot:device":
                out[vol] = t.findtext("value")
    return out


def main():
    w = World()
    try:
        db_vols = sorted(v.vol_id for v in w.volumes)
        nvol = len(db_vols)
        w.emulator_control({"latency_ms": LATENCY_MS})

        c = one_call(w, "round trips first")
        is_(c["row"][0], "succeeded", "first call: succeeded")
        is_(len(c["describe"]), 1, "first call: one DescribeInstances")
        is_(len(c["dry"]), 1, "first call: one DryRun (the preflight; none before the freeze: "
                              "the connection is warm)")
        ok(c["describe"] and c["dry"] and
           c["describe"][0]["responded_at"] <= c["dry"][0]["received_at"],
           "first call: DescribeInstances answered before the DryRun (no mapping kept yet)")
        is_(len(c["create"]), 1, "first call: one CreateSnapshots")
        is_(len(c["tags"]), 1 + nvol, "first call: CreateTags for the set and one per snapshot")
        ok(all(at_once(a, b) for a in c["tags"] for b in c["tags"] if a is not b),
           "first call: the CreateTags made at once")
        is_(len(c["all"]), 3 + 1 + nvol, "first call: %d EC2 requests in all" % (4 + nvol))
        is_(round_trips(c["all"]), 4, "first call: 4 round trips one after the other")

        c = one_call(w, "round trips second")
        is_(c["row"][0], "succeeded", "second call: succeeded")
        is_((len(c["describe"]), len(c["dry"]), len(c["create"]), len(c["tags"])),
            (1, 1, 1, 1 + nvol), "second call: the same requests")
        ok(c["describe"] and c["dry"] and at_once(c["describe"][0], c["dry"][0]),
           "second call: DescribeInstances and the DryRun made at once (kept mapping)")
        is_(round_trips(c["all"]), 3, "second call: 3 round trips one after the other, one "
                                      "fewer than the first")
        is_(excluded(c["create"][0]), excluded(c["dry"][0]),
            "second call: the call is the request the DryRun checked")
        is_(sorted(c["row"][1].split(",")), db_vols, "second call: the database's volumes")

        # The instance's mapping changes: a volume holding nothing of the database.
        zone = w.ec2_call("DescribeInstances").findtext(".//placement/availabilityZone")
        extra = w.ec2_call("CreateVolume", Size="1", AvailabilityZone=zone,
                           VolumeType="gp3").findtext("volumeId")
        ok(wait_for(lambda: w.ec2_call("DescribeVolumes", **{"VolumeId.1": extra})
                    .findtext(".//status") == "available", 20, 0.1),
           "volume %s available" % extra)
        w.ec2_call("AttachVolume", VolumeId=extra, InstanceId=w.instance_id, Device="/dev/sdy")
        ok(wait_for(lambda: w.ec2_call("DescribeVolumes", **{"VolumeId.1": extra})
                    .findtext(".//attachmentSet/item/status") == "attached", 20, 0.1),
           "volume %s attached as /dev/sdy" % extra)

        pos = log_pos(w)
        c = one_call(w, "round trips attached")
        is_(c["row"][0], "succeeded", "mapping changed: succeeded")
        ok("block device mapping changed" in log_since(w, pos),
           "mapping changed: the helper noticed and planned again")
        is_(len(c["describe"]), 1, "mapping changed: one DescribeInstances")
        is_(len(c["dry"]), 2, "mapping changed: the kept mapping's DryRun, then the new "
                              "request's own")
        ok(extra not in excluded(c["dry"][0]) and extra in excluded(c["dry"][-1]),
           "mapping changed: the new request excludes the new volume, the first did not")
        ok(c["create"] and extra in excluded(c["create"][0]),
           "mapping changed: CreateSnapshots excludes %s" % extra)
        ids = c["row"][2].split(",")
        is_(sorted(c["row"][1].split(",")), db_vols,
            "mapping changed: the set is exactly the database's volumes")
        devs = snapshot_devices(w, ids)
        is_(sorted(devs), db_vols, "mapping changed: each snapshot tagged with its device")
        ok(extra not in devs, "mapping changed: no snapshot of %s" % extra)

        c = one_call(w, "round trips kept again")
        is_(c["row"][0], "succeeded", "the call after: succeeded")
        is_(len(c["dry"]), 1, "the call after: the new mapping was kept (one DryRun)")
        ok(c["describe"] and c["dry"] and at_once(c["describe"][0], c["dry"][0]),
           "the call after: made at once with DescribeInstances")
        ok(c["create"] and extra in excluded(c["create"][0]),
           "the call after: still excludes %s" % extra)
        diag("EC2 requests per call: %d (%d volumes)" % (len(c["all"]), nvol))
    except Exception as e:
        bail(e)
    finally:
        w.close()
    done()


if __name__ == "__main__":
    main()
