"""Volumes: CreateVolume, AttachVolume, DetachVolume, DeleteVolume and
DescribeVolumes, as a model (the main emulator) and as real loop devices
linked under device_link_dir (an emulator of their own, root only)."""

import json
import os
import shutil
import signal
import subprocess
import time
import unittest

from . import support
from .support import (DATA_VOL, INSTANCE, MIB, REGION, ROOT_VOL, WAL_VOL, Base, Emu, base_config,
                      err_code, raw_ec2, read)

TMP = E = None
ZONE = REGION + "b"          # the main emulator's zone (support.base_config)


def setUpModule():
    global TMP, E
    TMP, E = support.start_world()


def wait_for(fn, timeout=5, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        r = fn()
        if r:
            return r
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


class VolumeBase(Base):
    def setUp(self):
        super().setUp()
        E.control({"volume_create_delay_s": 0.3, "volume_attach_delay_s": 0.3,
                   "volume_detach_delay_s": 0.3})
        self.c = E.client()

    def completed_snapshot(self, vol=DATA_VOL):
        sid = self.c.create_snapshot(VolumeId=vol)["SnapshotId"]
        self.wait_completed(self.c, [sid])
        return sid

    def volume(self, vid):
        return self.c.describe_volumes(VolumeIds=[vid])["Volumes"][0]

    def wait_state(self, vid, state):
        return wait_for(lambda: self.volume(vid)["State"] == state and self.volume(vid),
                        what="%s %s" % (vid, state))

    def wait_attachment(self, vid, state):
        def check():
            a = self.volume(vid)["Attachments"]
            return a and a[0]["State"] == state and a[0]
        return wait_for(check, what="%s attachment %s" % (vid, state))

    def new_volume(self, **kw):
        kw.setdefault("AvailabilityZone", ZONE)
        vid = self.c.create_volume(**kw)["VolumeId"]
        self.addCleanup(self._cleanup_volume, vid)
        return vid

    def _cleanup_volume(self, vid):
        try:
            v = self.volume(vid)
        except Exception:
            return
        if v["Attachments"]:
            self.c.detach_volume(VolumeId=vid, Force=True)
            wait_for(lambda: not self.volume(vid)["Attachments"], what="detach of " + vid)
        wait_for(lambda: self.volume(vid)["State"] == "available", what=vid)
        self.c.delete_volume(VolumeId=vid)


class TestCreateVolume(VolumeBase):
    def test_from_snapshot_bytes_size_and_states(self):
        sid = self.completed_snapshot()
        r = self.c.create_volume(SnapshotId=sid, AvailabilityZone=ZONE, VolumeType="gp3",
                                 Size=2, TagSpecifications=[{"ResourceType": "volume", "Tags": [
                                     {"Key": "restore", "Value": "yes"}]}])
        vid = r["VolumeId"]
        self.addCleanup(self._cleanup_volume, vid)
        self.assertRegex(vid, r"^vol-[0-9a-f]{17}$")
        self.assertEqual((r["State"], r["Size"], r["SnapshotId"], r["AvailabilityZone"]),
                         ("creating", 2, sid, ZONE))
        self.assertEqual((r["VolumeType"], r["Iops"], r["Throughput"], r["Encrypted"]),
                         ("gp3", 3000, 125, False))
        self.assertEqual(r["Tags"], [{"Key": "restore", "Value": "yes"}])
        self.assertIn("CreateTime", r)
        f = os.path.join(E.state_dir, "volumes", vid + ".img")
        self.assertEqual(os.path.getsize(f), 2 << 30)
        snap = read(self.snap_file(sid))
        with open(f, "rb") as fh:
            self.assertEqual(fh.read(len(snap)), snap)
        self.assertEqual(self.volume(vid)["State"], "creating")
        self.wait_state(vid, "available")
        st = [v for v in E.state()["volumes"] if v["volumeId"] == vid][0]
        self.assertEqual(st["file"], f)

    def test_defaults_gp2_and_snapshot_size(self):
        sid = self.completed_snapshot(WAL_VOL)
        vid = self.new_volume(SnapshotId=sid)
        v = self.volume(vid)
        self.assertEqual((v["VolumeType"], v["Size"], v["Iops"]), ("gp2", 1, 100))
        self.assertNotIn("Throughput", v)
        vid = self.new_volume(Size=200, VolumeType="gp2")      # no snapshot: empty
        self.assertEqual(self.volume(vid)["Iops"], 600)
        self.assertEqual(self.volume(vid)["SnapshotId"], "")
        vid = self.new_volume(Size=10, VolumeType="io2", Iops=5000, Encrypted=True)
        v = self.volume(vid)
        self.assertEqual((v["Iops"], v["Encrypted"]), (5000, True))

    def test_errors(self):
        c = self.c
        sid = self.completed_snapshot()
        E.control({"complete_after": 30})
        pending = c.create_snapshot(VolumeId=DATA_VOL)["SnapshotId"]
        err = self.assertClientError(c.create_volume, "IncorrectState", 400,
                                     SnapshotId=pending, AvailabilityZone=ZONE)
        self.assertEqual(err["Error"]["Message"], "Snapshot is in invalid state - pending")
        self.assertClientError(c.create_volume, "InvalidSnapshot.NotFound",
                               SnapshotId="snap-0123456789abcdef0", AvailabilityZone=ZONE)
        self.assertClientError(c.create_volume, "InvalidSnapshotID.Malformed",
                               SnapshotId="snap-x", AvailabilityZone=ZONE)
        self.assertClientError(c.create_volume, "InvalidParameterValue", SnapshotId=sid,
                               Size=0, AvailabilityZone=ZONE)
        # the snapshot is of a 1 GiB volume; a 1 GiB io1 is below io1's 4 GiB
        self.assertClientError(c.create_volume, "InvalidParameterValue", SnapshotId=sid,
                               VolumeType="io1", Iops=100, AvailabilityZone=ZONE)
        self.assertClientError(c.create_volume, "InvalidParameterValue", Size=1,
                               VolumeType="gp4", AvailabilityZone=ZONE)
        self.assertClientError(c.create_volume, "InvalidParameterCombination", Size=1,
                               VolumeType="gp2", Iops=3000, AvailabilityZone=ZONE)
        self.assertClientError(c.create_volume, "InvalidParameterCombination", Size=10,
                               VolumeType="io1", Iops=3000, Throughput=200,
                               AvailabilityZone=ZONE)
        self.assertClientError(c.create_volume, "MissingParameter", Size=10, VolumeType="io2",
                               AvailabilityZone=ZONE)
        self.assertClientError(c.create_volume, "InvalidParameterValue", Size=10,
                               VolumeType="gp3", Iops=20000, AvailabilityZone=ZONE)
        self.assertClientError(c.create_volume, "InvalidParameterValue", Size=10,
                               VolumeType="st1", AvailabilityZone=ZONE)
        self.assertClientError(c.create_volume, "MissingParameter", AvailabilityZone=ZONE)
        self.assertClientError(c.create_volume, "InvalidZone.NotFound", Size=1,
                               AvailabilityZone="us-east-1a")
        self.assertClientError(c.create_volume, "InvalidParameterValue", Size=1,
                               AvailabilityZone=ZONE, TagSpecifications=[
                                   {"ResourceType": "snapshot", "Tags": [{"Key": "a",
                                                                          "Value": "b"}]}])
        self.assertClientError(c.create_volume, "DryRunOperation", 412, Size=1,
                               AvailabilityZone=ZONE, DryRun=True)
        st, data, _ = raw_ec2(E, [("Action", "CreateVolume"), ("Size", "1"),
                                  ("AvailabilityZone", ZONE), ("Bogus", "1")])
        self.assertEqual((st, err_code(data)), (400, "UnknownParameter"))
        self.assertEqual([v for v in E.state()["volumes"]], [])


class TestAttachDetach(VolumeBase):
    def test_attach_detach_delete_lifecycle(self):
        c = self.c
        sid = self.completed_snapshot()
        vid = self.new_volume(SnapshotId=sid)
        self.assertClientError(c.attach_volume, "IncorrectState", VolumeId=vid,
                               InstanceId=INSTANCE, Device="/dev/sdh")
        self.wait_state(vid, "available")
        r = c.attach_volume(VolumeId=vid, InstanceId=INSTANCE, Device="/dev/sdh")
        self.assertEqual((r["State"], r["Device"], r["InstanceId"], r["VolumeId"]),
                         ("attaching", "/dev/sdh", INSTANCE, vid))
        self.assertEqual(self.volume(vid)["State"], "in-use")
        self.assertEqual(self.volume(vid)["Attachments"][0]["State"], "attaching")
        self.wait_attachment(vid, "attached")
        # DescribeInstances' mapping has it
        i = c.describe_instances()["Reservations"][0]["Instances"][0]
        bdm = {m["DeviceName"]: m["Ebs"] for m in i["BlockDeviceMappings"]}
        self.assertEqual(bdm["/dev/sdh"]["VolumeId"], vid)
        self.assertEqual(bdm["/dev/sdh"]["Status"], "attached")
        self.assertIs(bdm["/dev/sdh"]["DeleteOnTermination"], False)
        self.assertIn("AttachTime", bdm["/dev/sdh"])
        # filters
        got = c.describe_volumes(Filters=[{"Name": "attachment.device",
                                           "Values": ["/dev/sdh"]}])["Volumes"]
        self.assertEqual([v["VolumeId"] for v in got], [vid])
        got = c.describe_volumes(Filters=[{"Name": "attachment.instance-id",
                                           "Values": [INSTANCE]}])["Volumes"]
        self.assertEqual(len(got), 4)
        # attached: no second attach, no delete
        self.assertClientError(c.attach_volume, "VolumeInUse", VolumeId=vid,
                               InstanceId=INSTANCE, Device="/dev/sdi")
        self.assertClientError(c.delete_volume, "VolumeInUse", VolumeId=vid)
        self.assertClientError(c.detach_volume, "InvalidAttachment.NotFound", VolumeId=vid,
                               InstanceId="i-0123456789abcdef9")
        self.assertClientError(c.detach_volume, "InvalidAttachment.NotFound", VolumeId=vid,
                               Device="/dev/sdz")
        r = c.detach_volume(VolumeId=vid, InstanceId=INSTANCE, Device="/dev/sdh")
        self.assertEqual(r["State"], "detaching")
        self.assertEqual(self.volume(vid)["Attachments"][0]["State"], "detaching")
        self.wait_state(vid, "available")
        self.assertEqual(self.volume(vid)["Attachments"], [])
        err = self.assertClientError(c.detach_volume, "IncorrectState", VolumeId=vid)
        self.assertEqual(err["Error"]["Message"], "Volume '%s' is in the 'available' state." % vid)
        c.delete_volume(VolumeId=vid)
        self.assertFalse(os.path.exists(os.path.join(E.state_dir, "volumes", vid + ".img")))
        self.assertClientError(c.describe_volumes, "InvalidVolume.NotFound", VolumeIds=[vid])
        self.assertClientError(c.delete_volume, "InvalidVolume.NotFound", VolumeId=vid)

    def test_attach_errors(self):
        c = self.c
        vid = self.new_volume(Size=1)
        self.wait_state(vid, "available")
        err = self.assertClientError(c.attach_volume, "InvalidParameterValue", VolumeId=vid,
                                     InstanceId=INSTANCE, Device="/dev/sdf")
        self.assertIn("Attachment point /dev/sdf is already in use", err["Error"]["Message"])
        self.assertClientError(c.attach_volume, "InvalidParameterValue", VolumeId=vid,
                               InstanceId=INSTANCE, Device="/dev/xvda")
        self.assertClientError(c.attach_volume, "InvalidParameterValue", VolumeId=vid,
                               InstanceId=INSTANCE, Device="/dev/nvme1n1")
        self.assertClientError(c.attach_volume, "InvalidInstanceID.NotFound", VolumeId=vid,
                               InstanceId="i-0123456789abcdef9", Device="/dev/sdh")
        self.assertClientError(c.attach_volume, "InvalidVolume.NotFound",
                               VolumeId="vol-0123456789abcdeff", InstanceId=INSTANCE,
                               Device="/dev/sdh")
        self.assertClientError(c.attach_volume, "VolumeInUse", VolumeId=DATA_VOL,
                               InstanceId=INSTANCE, Device="/dev/sdh")
        other = self.new_volume(Size=1, AvailabilityZone=REGION + "c")
        self.wait_state(other, "available")
        self.assertClientError(c.attach_volume, "InvalidVolume.ZoneMismatch", VolumeId=other,
                               InstanceId=INSTANCE, Device="/dev/sdh")
        self.assertClientError(c.attach_volume, "DryRunOperation", 412, VolumeId=vid,
                               InstanceId=INSTANCE, Device="/dev/sdh", DryRun=True)
        self.assertEqual(self.volume(vid)["State"], "available")

    def test_configured_volumes_are_protected(self):
        c = self.c
        err = self.assertClientError(c.detach_volume, "IncorrectState", VolumeId=ROOT_VOL,
                                     Force=True)
        self.assertEqual(err["Error"]["Message"], "Unable to detach root volume '%s' from "
                         "instance '%s'" % (ROOT_VOL, INSTANCE))
        self.assertClientError(c.detach_volume, "OperationNotPermitted", VolumeId=WAL_VOL)
        self.assertClientError(c.delete_volume, "VolumeInUse", VolumeId=WAL_VOL)
        self.assertEqual(self.volume(WAL_VOL)["State"], "in-use")
        # with Force, a model detachment: no longer part of the instance
        c.detach_volume(VolumeId=WAL_VOL, Force=True)
        try:
            self.wait_state(WAL_VOL, "available")
            r = c.create_snapshots(InstanceSpecification={"InstanceId": INSTANCE})
            self.assertNotIn(WAL_VOL, [s["VolumeId"] for s in r["Snapshots"]])
            self.assertClientError(c.delete_volume, "OperationNotPermitted", VolumeId=WAL_VOL)
        finally:
            c.attach_volume(VolumeId=WAL_VOL, InstanceId=INSTANCE, Device="/dev/sdg")
            self.wait_attachment(WAL_VOL, "attached")

    def test_created_volume_is_snapshotted_with_the_instance(self):
        c = self.c
        vid = self.new_volume(Size=1)
        self.wait_state(vid, "available")
        c.attach_volume(VolumeId=vid, InstanceId=INSTANCE, Device="/dev/sdj")
        self.wait_attachment(vid, "attached")
        r = c.create_snapshots(InstanceSpecification={"InstanceId": INSTANCE,
                                                      "ExcludeBootVolume": True})
        self.assertIn(vid, [s["VolumeId"] for s in r["Snapshots"]])
        c.create_tags(Resources=[vid], Tags=[{"Key": "k", "Value": "v"}])
        got = c.describe_volumes(Filters=[{"Name": "tag:k", "Values": ["v"]},
                                          {"Name": "status", "Values": ["in-use"]}])
        self.assertEqual([v["VolumeId"] for v in got["Volumes"]], [vid])

    def test_describe_pages_and_faults(self):
        c = self.c
        ids = [self.new_volume(Size=1) for _ in range(3)]
        seen = self.all_pages(c.describe_volumes, "Volumes", "VolumeId")
        self.assertEqual(seen[:3], [ROOT_VOL, DATA_VOL, WAL_VOL])
        self.assertEqual(seen[3:], ids)
        got = c.describe_volumes(Filters=[{"Name": "status", "Values": ["creating"]}])
        self.assertEqual(sorted(v["VolumeId"] for v in got["Volumes"]), sorted(ids))
        E.control({"action": "AttachVolume", "fault": "throttle"})
        self.assertClientError(c.attach_volume, "RequestLimitExceeded", 503, VolumeId=ids[0],
                               InstanceId=INSTANCE, Device="/dev/sdh")
        E.control({"action": "CreateVolume", "fault": "internal"})
        self.assertClientError(c.create_volume, "InternalError", 500, Size=1,
                               AvailabilityZone=ZONE)
        log = [json.loads(line) for line in
               open(os.path.join(E.state_dir, "requests.jsonl")) if line.strip()]
        self.assertIn("CreateVolume", [r.get("action") for r in log])
        self.assertEqual(E.state()["request_counts"]["AttachVolume"] >= 1, True)


# --------------------------------------------------------------------------
# real devices: loop devices and their links (root)
# --------------------------------------------------------------------------

def _mkfs_file(path, size):
    with open(path, "wb") as f:
        f.truncate(size)
    subprocess.run(["mkfs.ext4", "-q", "-F", path], check=True, capture_output=True)


class TestDevices(unittest.TestCase):
    """An emulator with device_link_dir: attached volumes are loop devices.
    They need root and losetup: without them these tests fail, never skip."""

    def setUp(self):
        if os.geteuid() != 0 or not shutil.which("losetup"):
            self.fail("loop devices need root and losetup (run the emulator tests as root)")
        self.root = os.path.join(TMP, "dev-%d" % time.time_ns())
        os.makedirs(self.root)
        self.links = os.path.join(self.root, "by-id")
        self.fs = os.path.join(self.root, "fs.img")
        _mkfs_file(self.fs, 8 * MIB)
        cfg = base_config(TMP)
        cfg["volumes"][DATA_VOL]["backing_file"] = self.fs
        cfg.update(device_link_dir=self.links, volume_create_delay_s=0.2,
                   volume_attach_delay_s=0.2, volume_detach_delay_s=0.2)
        self.mnt = os.path.join(self.root, "mnt")
        os.makedirs(self.mnt)
        self.emu = Emu(self.root, "emu", ["--complete-after", "0.2"], cfg)
        self.c = self.emu.client()
        self.addCleanup(self._cleanup)

    def _cleanup(self):
        subprocess.run(["umount", self.mnt], capture_output=True)
        if self.emu.proc.poll() is None:
            self.emu.stop()
        support.release_devices(self.emu.state_dir)
        left = [l for l in subprocess.run(["losetup", "-a"], capture_output=True,
                                          text=True).stdout.splitlines() if self.root in l]
        self.assertEqual(left, [], "loop devices left behind")

    def volume(self, vid):
        return self.c.describe_volumes(VolumeIds=[vid])["Volumes"][0]

    def attached_volume(self, device="/dev/sdh"):
        sid = self.c.create_snapshot(VolumeId=DATA_VOL)["SnapshotId"]
        wait_for(lambda: self.c.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["State"]
                 == "completed", what="snapshot")
        vid = self.c.create_volume(SnapshotId=sid, AvailabilityZone=ZONE)["VolumeId"]
        wait_for(lambda: self.volume(vid)["State"] == "available", what="available")
        self.c.attach_volume(VolumeId=vid, InstanceId=INSTANCE, Device=device)
        link = os.path.join(self.links, "nvme-Amazon_Elastic_Block_Store_" + vid.replace("-", ""))
        self.assertFalse(os.path.lexists(link))
        wait_for(lambda: self.volume(vid)["Attachments"][0]["State"] == "attached",
                 what="attached")
        self.assertTrue(os.path.islink(link), link)
        return vid, link, os.readlink(link)

    def detached(self, vid):
        return not self.volume(vid)["Attachments"]

    def test_attach_makes_a_linked_loop_device_and_detach_removes_it(self):
        vid, link, loop = self.attached_volume()
        self.assertRegex(loop, r"^/dev/loop\d+$")
        vfile = os.path.join(self.emu.state_dir, "volumes", vid + ".img")
        with open("/sys/block/%s/loop/backing_file" % os.path.basename(loop)) as f:
            self.assertEqual(f.read().strip(), os.path.realpath(vfile))
        with open(loop, "rb") as dev, open(self.fs, "rb") as src:
            self.assertEqual(dev.read(MIB), src.read(MIB))
        st = json.load(open(os.path.join(self.emu.state_dir, "state.json")))
        self.assertEqual(st["loop_devices"][loop]["volume_id"], vid)
        self.assertEqual(st["volumes"][vid]["attachment"]["loop"], loop)
        self.c.detach_volume(VolumeId=vid)
        wait_for(lambda: self.detached(vid), what="detached")
        self.assertFalse(os.path.lexists(link))
        self.assertNotEqual(loop_file(loop), os.path.realpath(vfile))
        self.c.delete_volume(VolumeId=vid)

    def test_detach_waits_while_mounted_busy(self):
        vid, link, loop = self.attached_volume()
        subprocess.run(["mount", loop, self.mnt], check=True, capture_output=True)
        self.c.detach_volume(VolumeId=vid)
        time.sleep(0.6)
        a = self.volume(vid)["Attachments"][0]
        self.assertEqual(a["State"], "busy")
        i = self.c.describe_instances()["Reservations"][0]["Instances"][0]
        self.assertIn(("/dev/sdh", "detaching"), [(m["DeviceName"], m["Ebs"]["Status"])
                                                  for m in i["BlockDeviceMappings"]])
        self.assertTrue(os.path.islink(link))
        subprocess.run(["umount", self.mnt], check=True)
        wait_for(lambda: self.detached(vid), what="detached after umount")
        self.assertFalse(os.path.lexists(link))

    def test_force_detach_while_mounted(self):
        vid, link, loop = self.attached_volume()
        subprocess.run(["mount", loop, self.mnt], check=True, capture_output=True)
        self.c.detach_volume(VolumeId=vid, Force=True)
        wait_for(lambda: self.detached(vid), what="forced detach")
        self.assertFalse(os.path.lexists(link))
        subprocess.run(["umount", self.mnt], check=True)
        wait_for(lambda: loop_file(loop) is None, what="loop autoclear")

    def test_sigterm_releases_and_restart_plugs_again(self):
        vid, link, loop = self.attached_volume()
        self.assertEqual(self.emu.stop(), 0)
        self.assertFalse(os.path.lexists(link))
        self.assertIsNone(loop_file(loop))
        self.emu.start()
        self.c = self.emu.client()
        wait_for(lambda: os.path.islink(link), what="link after restart")
        self.assertEqual(self.volume(vid)["Attachments"][0]["State"], "attached")

    def test_sigkill_leaves_what_release_devices_cleans(self):
        vid, link, loop = self.attached_volume()
        subprocess.run(["mount", os.readlink(link), self.mnt], check=True, capture_output=True)
        self.emu.stop(signal.SIGKILL)
        self.assertTrue(os.path.islink(link))
        out = support.release_devices(self.emu.state_dir)
        self.assertIn("umount %s: ok" % self.mnt, out)
        self.assertFalse(os.path.ismount(self.mnt))
        self.assertFalse(os.path.lexists(link))
        self.assertIsNone(loop_file(loop))


def loop_file(loop):
    try:
        with open("/sys/block/%s/loop/backing_file" % os.path.basename(loop)) as f:
            return f.read().strip()
    except OSError:
        return None
