#!/usr/bin/python3
"""
End to end, the sandbox's contract for volumes made through EC2: a volume
created from a snapshot and attached with AttachVolume is a block device
(World.volume_device, the by-id link the emulator makes) holding the
snapshot's filesystem; it mounts; DetachVolume waits (busy) while it is
mounted; and World.close() cleans up after an emulator that was killed with
a volume attached and mounted.
"""

import os
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, done, is_, ok  # noqa: E402
from world import World  # noqa: E402


def wait(fn, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = fn()
        if r:
            return r
        time.sleep(0.1)
    return None


def volume_field(w, vid, path):
    return w.ec2_call("DescribeVolumes", **{"VolumeId.1": vid}).findtext(path)


def main():
    w = World(layout=[("data", "ext4")])
    mnt = w.path("restored")
    loop = None
    try:
        data = w.volume("data")
        with open(os.path.join(data.mount, "marker"), "w") as f:
            f.write("before the snapshot\n")
        subprocess.run(["sync", "-f", data.mount], check=True)
        sid = w.ec2_call("CreateSnapshot", VolumeId=data.vol_id).findtext("snapshotId")
        ok(wait(lambda: w.ec2_call("DescribeSnapshots", **{"SnapshotId.1": sid})
                .findtext(".//status") == "completed"), "snapshot %s completed" % sid)
        zone = w.ec2_call("DescribeInstances").findtext(".//placement/availabilityZone")
        vid = w.ec2_call("CreateVolume", SnapshotId=sid, AvailabilityZone=zone,
                         VolumeType="gp3").findtext("volumeId")
        ok(wait(lambda: volume_field(w, vid, ".//status") == "available"),
           "volume %s available" % vid)
        is_(w.volume_device(vid), None, "no device before AttachVolume")
        w.ec2_call("AttachVolume", VolumeId=vid, InstanceId=w.instance_id, Device="/dev/sdz")
        loop = w.volume_device(vid, timeout=20)
        ok(loop and loop.startswith("/dev/loop"), "attached: a loop device (%s)" % loop)
        is_(os.path.basename(os.readlink(os.path.join(
            w.device_link_dir, "nvme-Amazon_Elastic_Block_Store_" + vid.replace("-", "")))),
            os.path.basename(loop), "linked as nvme-Amazon_Elastic_Block_Store_<id>")
        os.makedirs(mnt)
        subprocess.run(["mount", loop, mnt], check=True, capture_output=True)
        with open(os.path.join(mnt, "marker")) as f:
            is_(f.read(), "before the snapshot\n", "the snapshot's file is on the new volume")
        w.ec2_call("DetachVolume", VolumeId=vid)
        time.sleep(1.5)
        is_(volume_field(w, vid, ".//attachmentSet/item/status"), "busy",
            "DetachVolume while mounted: busy")
        # The emulator dies with the volume attached and mounted: close() cleans up.
        w.procs["emulator"].send_signal(signal.SIGKILL)
        w.procs["emulator"].wait()
    except Exception as e:
        bail(e)
    finally:
        w.close()
    ok(not os.path.ismount(mnt), "close(): the volume is unmounted")
    if loop:
        ok(not os.path.exists("/sys/block/%s/loop/backing_file" % os.path.basename(loop)),
           "close(): its loop device is detached")
    ok(not os.path.exists(w.work), "close(): the world is gone")
    done()


if __name__ == "__main__":
    main()
