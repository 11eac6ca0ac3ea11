"""Images as the AMI code needs them: what RegisterImage refuses, what
DescribeImages returns to copy from a source image, what DescribeInstances
and DescribeVolumes say about the instance, and the config keys behind it."""

import json
import os
import time

from . import support
from .support import (DATA_VOL, INSTANCE, ROOT_VOL, WAL_VOL, Base, ec2emu, err_code, raw_ec2)

TMP = E = None


def setUpModule():
    global TMP, E
    TMP, E = support.start_world()


def name(tag):
    return "%s-%d" % (tag, time.time_ns())


class TestRegisterImageRules(Base):
    def setUp(self):
        super().setUp()
        self.c = E.client()
        r = self.c.create_snapshots(InstanceSpecification={"InstanceId": INSTANCE})
        self.snaps = {s["VolumeId"]: s["SnapshotId"] for s in r["Snapshots"]}
        self.wait_completed(self.c, list(self.snaps.values()))

    def register(self, code=None, **kw):
        kw.setdefault("Name", name("rule"))
        kw.setdefault("RootDeviceName", "/dev/xvda")
        kw.setdefault("BlockDeviceMappings", [
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": self.snaps[ROOT_VOL]}}])
        if code:
            return self.assertClientError(self.c.register_image, code, **kw)
        return self.c.register_image(**kw)["ImageId"]

    def test_bad_values(self):
        for k, v in (("Architecture", "amd64"), ("BootMode", "bios"), ("TpmSupport", "v1.2"),
                     ("ImdsSupport", "v1.0"), ("SriovNetSupport", "fast"),
                     ("VirtualizationType", "pv")):
            err = self.register("InvalidParameterValue", **{k: v})
            self.assertIn(v, err["Error"]["Message"])
        self.register("InvalidParameterCombination", TpmSupport="v2.0", BootMode="legacy-bios",
                      Architecture="x86_64", VirtualizationType="hvm")
        self.register("InvalidParameterCombination", Architecture="arm64",
                      BootMode="legacy-bios", VirtualizationType="hvm")
        self.register("InvalidParameterCombination", EnaSupport=True)   # paravirtual default

    def test_mapping_and_snapshots(self):
        err = self.register("InvalidBlockDeviceMapping", RootDeviceName="/dev/sda1")
        self.assertIn("/dev/sda1", err["Error"]["Message"])
        self.register("InvalidBlockDeviceMapping", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": self.snaps[ROOT_VOL],
                                                "VolumeType": "io1"}}])   # io1 needs Iops
        self.register("InvalidBlockDeviceMapping", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": self.snaps[ROOT_VOL],
                                                "VolumeType": "gp2", "Throughput": 200}}])
        self.register("InvalidParameterValue", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": self.snaps[ROOT_VOL],
                                                "VolumeType": "gp9"}}])
        self.register("InvalidSnapshot.NotFound", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}])
        # a snapshot in error is refused; a pending one by default is not
        E.control({"action": "CreateSnapshot", "fault": "snapshot_error"})
        bad = self.c.create_snapshot(VolumeId=ROOT_VOL)["SnapshotId"]
        time.sleep(support.COMPLETE_AFTER + 0.1)
        err = self.register("IncorrectState", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": bad}}])
        self.assertEqual(err["Error"]["Message"], "Snapshot %s is in invalid state - error" % bad)
        pending = self.c.create_snapshot(VolumeId=ROOT_VOL)["SnapshotId"]
        iid = self.register(BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": pending}}])
        self.assertEqual(self.c.describe_images(ImageIds=[iid])["Images"][0]["State"], "pending")
        E.control({"register_pending_snapshots": False})
        pending = self.c.create_snapshot(VolumeId=ROOT_VOL)["SnapshotId"]
        self.register("IncorrectState", BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": pending}}])

    def test_names(self):
        n = name("dup")
        self.register(Name=n)
        self.register("InvalidAMIName.Duplicate", Name=n)
        for bad in ("ab", "x" * 129, "semi;colon", "star*"):
            self.register("InvalidAMIName.Malformed", Name=bad)
        st, data, _ = raw_ec2(E, [("Action", "RegisterImage"), ("RootDeviceName", "/dev/xvda"),
                                  ("BlockDeviceMapping.1.DeviceName", "/dev/xvda"),
                                  ("BlockDeviceMapping.1.Ebs.SnapshotId", self.snaps[ROOT_VOL])])
        self.assertEqual((st, err_code(data)), (400, "MissingParameter"))

    def test_everything_the_copy_needs_round_trips(self):
        n = name("full")
        iid = self.register(
            Name=n, Architecture="arm64", VirtualizationType="hvm", EnaSupport=True,
            SriovNetSupport="simple", BootMode="uefi", TpmSupport="v2.0", ImdsSupport="v2.0",
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": self.snaps[ROOT_VOL],
                                                    "VolumeType": "gp3", "Iops": 4000,
                                                    "Throughput": 250, "VolumeSize": 10,
                                                    "DeleteOnTermination": True}},
                {"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": self.snaps[DATA_VOL],
                                                   "VolumeType": "io2", "Iops": 1000,
                                                   "DeleteOnTermination": False}},
                {"DeviceName": "/dev/sdg", "Ebs": {"SnapshotId": self.snaps[WAL_VOL],
                                                   "VolumeType": "gp2"}}])
        d = self.c.describe_images(ImageIds=[iid])["Images"][0]
        self.assertEqual((d["Architecture"], d["VirtualizationType"], d["RootDeviceName"],
                          d["EnaSupport"], d["SriovNetSupport"], d["BootMode"], d["TpmSupport"],
                          d["ImdsSupport"], d["State"]),
                         ("arm64", "hvm", "/dev/xvda", True, "simple", "uefi", "v2.0", "v2.0",
                          "available"))
        bdm = {m["DeviceName"]: m["Ebs"] for m in d["BlockDeviceMappings"]}
        self.assertEqual(bdm["/dev/xvda"], {
            "SnapshotId": self.snaps[ROOT_VOL], "VolumeSize": 10, "VolumeType": "gp3",
            "Iops": 4000, "Throughput": 250, "DeleteOnTermination": True, "Encrypted": False})
        self.assertEqual(bdm["/dev/sdf"], {
            "SnapshotId": self.snaps[DATA_VOL], "VolumeSize": 1, "VolumeType": "io2",
            "Iops": 1000, "DeleteOnTermination": False, "Encrypted": False})
        self.assertEqual(bdm["/dev/sdg"]["VolumeType"], "gp2")
        self.assertNotIn("Iops", bdm["/dev/sdg"])
        # deregistering leaves the snapshots, which can then be deleted
        self.c.deregister_image(ImageId=iid)
        got = self.c.describe_snapshots(SnapshotIds=list(self.snaps.values()))["Snapshots"]
        self.assertEqual(len(got), 3)
        self.c.delete_snapshot(SnapshotId=self.snaps[DATA_VOL])
        self.assertClientError(self.c.deregister_image, "InvalidAMIID.NotFound", ImageId=iid)


class TestSourceOfTheCopy(Base):
    def test_launch_image(self):
        d = E.client().describe_images(ImageIds=["ami-0fedcba9876543210"])["Images"][0]
        self.assertEqual((d["Architecture"], d["VirtualizationType"], d["RootDeviceName"],
                          d["EnaSupport"], d["SriovNetSupport"], d["BootMode"]),
                         ("arm64", "hvm", "/dev/xvda", True, "simple", "uefi"))
        self.assertNotIn("TpmSupport", d)          # not configured
        self.assertNotIn("ImdsSupport", d)
        self.assertEqual(d["ProductCodes"], [{"ProductCodeId": "prodcode123",
                                              "ProductCodeType": "marketplace"}])
        (m,) = d["BlockDeviceMappings"]
        self.assertEqual(m["DeviceName"], "/dev/xvda")
        self.assertRegex(m["Ebs"].pop("SnapshotId"), r"^snap-[0-9a-f]{17}$")
        self.assertEqual(m["Ebs"], {"VolumeSize": 8, "VolumeType": "gp3", "Iops": 3000,
                                    "Throughput": 125, "DeleteOnTermination": True,
                                    "Encrypted": False})

    def test_instance_and_its_volumes(self):
        i = E.client().describe_instances()["Reservations"][0]["Instances"][0]
        self.assertEqual((i["SriovNetSupport"], i["EnaSupport"], i["BootMode"]),
                         ("simple", True, "uefi"))
        st, data, _ = raw_ec2(E, [("Action", "DescribeInstances")])
        self.assertIn(b"<currentInstanceBootMode>uefi</currentInstanceBootMode>", data)
        v = {x["VolumeId"]: x for x in E.client().describe_volumes()["Volumes"]}
        self.assertEqual((v[DATA_VOL]["VolumeType"], v[DATA_VOL]["Size"], v[DATA_VOL]["Iops"],
                          v[DATA_VOL]["Throughput"]), ("gp3", 1, 3000, 125))

    def test_create_image_carries_types_and_performance(self):
        c = E.client()
        iid = c.create_image(InstanceId=INSTANCE, Name=name("ci"), NoReboot=True)["ImageId"]
        d = c.describe_images(ImageIds=[iid])["Images"][0]
        bdm = {m["DeviceName"]: m["Ebs"] for m in d["BlockDeviceMappings"]}
        self.assertEqual((bdm["/dev/sdf"]["VolumeType"], bdm["/dev/sdf"]["Iops"],
                          bdm["/dev/sdf"]["Throughput"]), ("gp3", 3000, 125))
        self.assertEqual(d["SriovNetSupport"], "simple")


class TestConfigKeys(Base):
    def load(self, **kw):
        path = os.path.join(TMP, "cfg-%d.json" % time.time_ns())
        cfg = support.base_config(TMP)
        cfg.update(kw)
        with open(path, "w") as f:
            json.dump(cfg, f)
        return ec2emu.load_config(path, time.time())

    def test_volume_types_and_image_attributes(self):
        vols = support.base_config(TMP)["volumes"]
        vols[DATA_VOL].update(volume_type="gp2", size_gib=50)
        vols[WAL_VOL].update(volume_type="io2", iops=8000)
        cfg = self.load(volumes=vols, tpm_support="v2.0", imds_support="v2.0",
                        sriov_net_support=None, boot_mode="uefi-preferred")
        d, w = cfg["volumes"][DATA_VOL], cfg["volumes"][WAL_VOL]
        self.assertEqual((d["iops"], d["throughput"]), (150, None))
        self.assertEqual((w["iops"], w["throughput"]), (8000, None))
        for bad in ({"tpm_support": "v1"}, {"imds_support": "v1"},
                    {"sriov_net_support": "yes"}, {"boot_mode": "bios"},
                    {"device_link_dir": "relative/dir"}, {"volume_attach_delay_s": "x"},
                    {"volume_create_delay_s": -1}):
            with self.assertRaises(ec2emu.ConfigError, msg=bad):
                self.load(**bad)
        vols[WAL_VOL].pop("iops")                 # io2 needs its iops
        with self.assertRaises(ec2emu.ConfigError):
            self.load(volumes=vols)
