"""EC2 actions through botocore: Describe*, snapshots (their bytes at the
point in time), images."""

import datetime
import json
import os
import time

from . import support
from .support import (ACCOUNT, COMPLETE_AFTER, DATA_VOL, INSTANCE, MIB, REGION, ROOT_VOL, WAL_VOL,
                      Base, err_code, pattern, raw_ec2, read, write_at)

TMP = E = None          # the main emulator and its directory (support.start_world)


def setUpModule():
    global TMP, E
    TMP, E = support.start_world()


# --------------------------------------------------------------------------
# EC2 actions via botocore
# --------------------------------------------------------------------------

class TestDescribe(Base):
    def test_port_file_and_health(self):
        st, body, _ = E.http("GET", "/_emulator/health")
        self.assertEqual((st, json.loads(body)["ok"]), (200, True))

    def test_describe_instances(self):
        r = E.client().describe_instances(InstanceIds=[INSTANCE])
        res = r["Reservations"]
        self.assertEqual(len(res), 1)
        self.assertEqual(res[0]["OwnerId"], ACCOUNT)
        i = res[0]["Instances"][0]
        self.assertEqual(i["InstanceId"], INSTANCE)
        self.assertEqual(i["ImageId"], "ami-0fedcba9876543210")
        self.assertEqual(i["InstanceType"], "m7g.large")
        self.assertEqual(i["Architecture"], "arm64")
        self.assertEqual(i["RootDeviceName"], "/dev/xvda")
        self.assertEqual(i["RootDeviceType"], "ebs")
        self.assertEqual(i["VirtualizationType"], "hvm")
        self.assertIs(i["EnaSupport"], True)
        self.assertEqual(i["BootMode"], "uefi")
        self.assertEqual(i["Placement"]["AvailabilityZone"], REGION + "b")
        self.assertEqual(i["State"]["Name"], "running")
        self.assertEqual(i["ProductCodes"], [{"ProductCodeId": "prodcode123",
                                              "ProductCodeType": "marketplace"}])
        self.assertEqual(i["Tags"], [{"Key": "Name", "Value": "db-primary"}])
        bdm = {m["DeviceName"]: m["Ebs"] for m in i["BlockDeviceMappings"]}
        self.assertEqual(set(bdm), {"/dev/xvda", "/dev/sdf", "/dev/sdg"})
        self.assertEqual(bdm["/dev/sdf"]["VolumeId"], DATA_VOL)
        self.assertEqual(bdm["/dev/sdf"]["Status"], "attached")
        self.assertIs(bdm["/dev/xvda"]["DeleteOnTermination"], True)
        self.assertIs(bdm["/dev/sdg"]["DeleteOnTermination"], False)
        self.assertIsInstance(bdm["/dev/xvda"]["AttachTime"], datetime.datetime)
        # all instances, and filters
        self.assertEqual(len(E.client().describe_instances()["Reservations"]), 1)
        f = E.client().describe_instances(Filters=[{"Name": "tag:Name", "Values": ["db-*"]}])
        self.assertEqual(len(f["Reservations"]), 1)
        f = E.client().describe_instances(Filters=[{"Name": "tag:Name", "Values": ["web"]}])
        self.assertEqual(f["Reservations"], [])

    def test_describe_instances_unknown(self):
        self.assertClientError(E.client().describe_instances, "InvalidInstanceID.NotFound", 400,
                               InstanceIds=["i-0123456789abcdef9"])
        self.assertClientError(E.client().describe_instances, "InvalidInstanceID.Malformed", 400,
                               InstanceIds=["i-xyz"])
        self.assertClientError(E.client().describe_instances, "InvalidParameterValue", 400,
                               Filters=[{"Name": "no-such-filter", "Values": ["x"]}])

    def test_describe_volumes(self):
        v = E.client().describe_volumes()["Volumes"]
        self.assertEqual([x["VolumeId"] for x in v], [ROOT_VOL, DATA_VOL, WAL_VOL])
        d = E.client().describe_volumes(VolumeIds=[DATA_VOL])["Volumes"][0]
        self.assertEqual(d["Size"], 1)
        self.assertEqual(d["State"], "in-use")
        self.assertEqual(d["Attachments"][0]["InstanceId"], INSTANCE)
        self.assertEqual(d["Attachments"][0]["Device"], "/dev/sdf")
        self.assertIn({"Key": "Name", "Value": "pgdata"}, d["Tags"])
        f = E.client().describe_volumes(Filters=[{"Name": "attachment.device",
                                                  "Values": ["/dev/sdg"]}])["Volumes"]
        self.assertEqual([x["VolumeId"] for x in f], [WAL_VOL])
        self.assertClientError(E.client().describe_volumes, "InvalidVolume.NotFound",
                               VolumeIds=["vol-0123456789abcdeff"])
        page = E.client().describe_volumes(MaxResults=5)
        self.assertEqual(len(page["Volumes"]), 3)
        self.assertNotIn("NextToken", page)

    def test_unknown_action(self):
        st, data, _ = raw_ec2(E, [("Action", "FlyToTheMoon")])
        self.assertEqual((st, err_code(data)), (400, "InvalidAction"))

    def test_dry_run_on_describe(self):
        self.assertClientError(E.client().describe_instances, "DryRunOperation", 412, DryRun=True)


class TestSnapshots(Base):
    def test_create_snapshots_copies_at_call_time(self):
        data_before = read(os.path.join(TMP, "data.img"))
        wal_before = read(os.path.join(TMP, "wal.img"))
        c = E.client()
        r = c.create_snapshots(
            InstanceSpecification={"InstanceId": INSTANCE, "ExcludeBootVolume": True},
            Description="nightly", CopyTagsFromSource="volume",
            TagSpecifications=[{"ResourceType": "snapshot",
                                "Tags": [{"Key": "ami_snapshot:label", "Value": "nightly"},
                                         {"Key": "role", "Value": "override"}]}])
        snaps = {s["VolumeId"]: s for s in r["Snapshots"]}
        self.assertEqual(set(snaps), {DATA_VOL, WAL_VOL})
        for s in snaps.values():
            self.assertRegex(s["SnapshotId"], r"^snap-[0-9a-f]{17}$")
            self.assertEqual(s["State"], "pending")
            self.assertEqual(s["OwnerId"], ACCOUNT)
            self.assertEqual(s["Description"], "nightly")
            self.assertIs(s["Encrypted"], False)
            self.assertEqual(s["VolumeSize"], 1)
            self.assertTrue(s["Progress"].endswith("%"))
            self.assertIsInstance(s["StartTime"], datetime.datetime)
        tags = {t["Key"]: t["Value"] for t in snaps[DATA_VOL]["Tags"]}
        self.assertEqual(tags, {"Name": "pgdata", "role": "override",
                                "ami_snapshot:label": "nightly"})
        # writes after the call must not reach the snapshot
        write_at(os.path.join(TMP, "data.img"), 0, pattern("data-v2", 64 * 1024))
        write_at(os.path.join(TMP, "wal.img"), MIB, pattern("wal-v2", 4096))
        dfile = self.snap_file(snaps[DATA_VOL]["SnapshotId"])
        self.assertEqual(read(dfile), data_before)
        self.assertEqual(read(self.snap_file(snaps[WAL_VOL]["SnapshotId"])), wal_before)
        self.assertNotEqual(read(os.path.join(TMP, "data.img")), data_before)
        self.assertLess(os.stat(dfile).st_blocks * 512, 2 * MIB, "sparse copy expected")
        st = {s["id"]: s for s in E.state()["snapshots"]}
        info = st[snaps[DATA_VOL]["SnapshotId"]]
        self.assertEqual(info["file"], dfile)
        self.assertIn(info["copy_method"], ("reflink", "sparse", "sparse+copy_file_range"))
        self.assertGreaterEqual(info["copy_ms"], 0)
        # pending -> completed
        done = self.wait_completed(c, [s["SnapshotId"] for s in snaps.values()])
        self.assertTrue(all(s["Progress"] == "100%" for s in done))
        # restore the original data for other tests
        write_at(os.path.join(TMP, "data.img"), 0, data_before[:64 * 1024])

    def test_create_snapshots_all_volumes_and_exclusions(self):
        c = E.client()
        r = c.create_snapshots(InstanceSpecification={"InstanceId": INSTANCE})
        vols = sorted(s["VolumeId"] for s in r["Snapshots"])
        self.assertEqual(vols, [ROOT_VOL, DATA_VOL, WAL_VOL])
        root = [s for s in r["Snapshots"] if s["VolumeId"] == ROOT_VOL][0]
        self.assertEqual(root["VolumeSize"], 8)
        self.assertFalse(os.path.exists(self.snap_file(root["SnapshotId"])))  # no backing file
        r = c.create_snapshots(InstanceSpecification={
            "InstanceId": INSTANCE, "ExcludeBootVolume": True, "ExcludeDataVolumeIds": [WAL_VOL]})
        self.assertEqual([s["VolumeId"] for s in r["Snapshots"]], [DATA_VOL])
        self.assertEqual(r["Snapshots"][0]["Tags"], [])

    def test_create_snapshots_errors(self):
        c = E.client()
        self.assertClientError(c.create_snapshots, "InvalidInstanceID.NotFound", 400,
                               InstanceSpecification={"InstanceId": "i-0123456789abcdef9"})
        self.assertClientError(c.create_snapshots, "InvalidVolume.NotFound", 400,
                               InstanceSpecification={"InstanceId": INSTANCE,
                                                      "ExcludeDataVolumeIds": ["vol-0123456789abcdeff"]})
        self.assertClientError(c.create_snapshots, "InvalidVolumeID.Malformed", 400,
                               InstanceSpecification={"InstanceId": INSTANCE,
                                                      "ExcludeDataVolumeIds": ["volume-1"]})
        self.assertClientError(c.create_snapshots, "InvalidParameterValue", 400,
                               InstanceSpecification={"InstanceId": INSTANCE},
                               TagSpecifications=[{"ResourceType": "instance",
                                                   "Tags": [{"Key": "a", "Value": "b"}]}])
        self.assertClientError(c.create_snapshots, "InvalidParameterValue", 400,
                               InstanceSpecification={"InstanceId": INSTANCE},
                               TagSpecifications=[{"ResourceType": "snapshot",
                                                   "Tags": [{"Key": "k", "Value": "v" * 257}]}])
        self.assertClientError(c.create_snapshots, "InvalidParameterValue", 400,
                               InstanceSpecification={"InstanceId": INSTANCE},
                               TagSpecifications=[{"ResourceType": "snapshot",
                                                   "Tags": [{"Key": "aws:x", "Value": "v"}]}])

    def test_dry_run_copies_nothing(self):
        before = set(os.listdir(os.path.join(E.state_dir, "snapshots")))
        n = len(E.state()["snapshots"])
        err = self.assertClientError(E.client().create_snapshots, "DryRunOperation", 412,
                                     InstanceSpecification={"InstanceId": INSTANCE}, DryRun=True)
        self.assertEqual(err["Error"]["Message"],
                         "Request would have succeeded, but DryRun flag is set.")
        self.assertEqual(set(os.listdir(os.path.join(E.state_dir, "snapshots"))), before)
        self.assertEqual(len(E.state()["snapshots"]), n)
        # DryRun still validates first
        self.assertClientError(E.client().create_snapshots, "InvalidInstanceID.NotFound",
                               InstanceSpecification={"InstanceId": "i-0123456789abcdef9"},
                               DryRun=True)

    def test_create_snapshot_single(self):
        c = E.client()
        before = read(os.path.join(TMP, "wal.img"))
        r = c.create_snapshot(VolumeId=WAL_VOL, Description="one",
                              TagSpecifications=[{"ResourceType": "snapshot",
                                                  "Tags": [{"Key": "k", "Value": "v"}]}])
        self.assertEqual(r["State"], "pending")
        self.assertEqual(r["VolumeId"], WAL_VOL)
        self.assertEqual(r["Tags"], [{"Key": "k", "Value": "v"}])
        self.assertEqual(read(self.snap_file(r["SnapshotId"])), before)
        self.assertClientError(c.create_snapshot, "InvalidVolume.NotFound",
                               VolumeId="vol-0123456789abcdeff")
        self.assertClientError(c.create_snapshot, "DryRunOperation", 412, VolumeId=WAL_VOL,
                               DryRun=True)

    def test_describe_snapshots_filters_and_pagination(self):
        c = E.client()
        mark = "run-%d" % time.time_ns()
        ids = []
        for i in range(3):
            r = c.create_snapshot(VolumeId=DATA_VOL, TagSpecifications=[{
                "ResourceType": "snapshot", "Tags": [{"Key": "batch", "Value": mark},
                                                     {"Key": "n", "Value": str(i)}]}])
            ids.append(r["SnapshotId"])
        got = c.describe_snapshots(Filters=[{"Name": "tag:batch", "Values": [mark]}])["Snapshots"]
        self.assertEqual(sorted(s["SnapshotId"] for s in got), sorted(ids))
        self.assertTrue(all(s["State"] in ("pending", "completed") for s in got))
        got = c.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:batch", "Values": [mark]}, {"Name": "tag:n", "Values": ["1", "2"]}])
        self.assertEqual(len(got["Snapshots"]), 2)
        got = c.describe_snapshots(SnapshotIds=[ids[0]])["Snapshots"]
        self.assertEqual([s["SnapshotId"] for s in got], [ids[0]])
        got = c.describe_snapshots(Filters=[{"Name": "tag-key", "Values": ["batch"]},
                                            {"Name": "tag-value", "Values": [mark]},
                                            {"Name": "volume-id", "Values": [DATA_VOL]}])
        self.assertEqual(len(got["Snapshots"]), 3)
        # pagination
        seen = self.all_pages(c.describe_snapshots, "Snapshots", "SnapshotId",
                              Filters=[{"Name": "owner-id", "Values": [ACCOUNT]}])
        self.assertEqual(len(seen), len(set(seen)))
        self.assertTrue(set(ids) <= set(seen))
        self.assertEqual(len(seen), len(E.state()["snapshots"]))
        # status changes
        self.wait_completed(c, ids)
        got = c.describe_snapshots(Filters=[{"Name": "tag:batch", "Values": [mark]},
                                            {"Name": "status", "Values": ["completed"]}])
        self.assertEqual(len(got["Snapshots"]), 3)
        self.assertClientError(c.describe_snapshots, "InvalidSnapshot.NotFound", 400,
                               SnapshotIds=["snap-0123456789abcdef0"])
        self.assertClientError(c.describe_snapshots, "InvalidSnapshotID.Malformed", 400,
                               SnapshotIds=["snap-nothex"])

    def test_tags_create_delete_describe(self):
        c = E.client()
        sid = c.create_snapshot(VolumeId=WAL_VOL)["SnapshotId"]
        c.create_tags(Resources=[sid], Tags=[{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"},
                                             {"Key": "c", "Value": ""}])
        tags = c.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]["Tags"]
        self.assertEqual({t["Key"]: t["Value"] for t in tags}, {"a": "1", "b": "2", "c": ""})
        c.delete_tags(Resources=[sid], Tags=[{"Key": "a"}, {"Key": "b", "Value": "wrong"}])
        got = c.describe_tags(Filters=[{"Name": "resource-id", "Values": [sid]}])["Tags"]
        self.assertEqual(sorted((t["Key"], t["Value"], t["ResourceType"]) for t in got),
                         [("b", "2", "snapshot"), ("c", "", "snapshot")])
        got = c.describe_tags(Filters=[{"Name": "resource-type", "Values": ["instance"]}])["Tags"]
        self.assertEqual([(t["ResourceId"], t["Key"]) for t in got], [(INSTANCE, "Name")])
        self.assertClientError(c.create_tags, "InvalidSnapshot.NotFound",
                               Resources=["snap-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])
        self.assertClientError(c.create_tags, "InvalidID",
                               Resources=["bucket-1"], Tags=[{"Key": "a", "Value": "b"}])
        self.assertClientError(c.create_tags, "InvalidParameterValue",
                               Resources=[sid], Tags=[{"Key": "big", "Value": "x" * 257}])
        self.assertClientError(c.create_tags, "TagLimitExceeded", Resources=[sid],
                               Tags=[{"Key": "k%d" % i, "Value": "v"} for i in range(49)])
        self.assertClientError(c.create_tags, "DryRunOperation", 412, Resources=[sid],
                               Tags=[{"Key": "a", "Value": "b"}], DryRun=True)

    def test_delete_snapshot(self):
        c = E.client()
        sid = c.create_snapshot(VolumeId=DATA_VOL)["SnapshotId"]
        f = self.snap_file(sid)
        self.assertTrue(os.path.exists(f))
        c.delete_snapshot(SnapshotId=sid)
        self.assertFalse(os.path.exists(f))
        self.assertClientError(c.describe_snapshots, "InvalidSnapshot.NotFound", SnapshotIds=[sid])
        self.assertClientError(c.delete_snapshot, "InvalidSnapshot.NotFound", SnapshotId=sid)

    def test_snapshot_rate_and_pending_limits(self):
        c = E.client()
        c.create_snapshot(VolumeId=WAL_VOL)
        E.control({"per_volume_min_interval_s": 30})
        self.assertClientError(c.create_snapshot, "SnapshotCreationPerVolumeRateExceeded", 400,
                               VolumeId=WAL_VOL)
        E.reset()
        E.control({"max_pending_per_volume": 1, "complete_after": 30})
        c.create_snapshot(VolumeId=DATA_VOL)
        self.assertClientError(c.create_snapshots, "ConcurrentSnapshotLimitExceeded", 400,
                               InstanceSpecification={"InstanceId": INSTANCE})

    def test_snapshot_error_state(self):
        E.control({"action": "CreateSnapshot", "fault": "snapshot_error"})
        c = E.client()
        sid = c.create_snapshot(VolumeId=DATA_VOL)["SnapshotId"]
        time.sleep(COMPLETE_AFTER + 0.1)
        s = c.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        self.assertEqual(s["State"], "error")
        self.assertIn("StateMessage", s)


class TestImages(Base):
    def test_register_describe_deregister(self):
        c = E.client()
        r = c.create_snapshots(InstanceSpecification={"InstanceId": INSTANCE})
        by_vol = {s["VolumeId"]: s["SnapshotId"] for s in r["Snapshots"]}
        name = "ami-snapshot-test-%d" % time.time_ns()
        img = c.register_image(
            Name=name, Architecture="arm64", VirtualizationType="hvm", EnaSupport=True,
            BootMode="uefi", RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": by_vol[ROOT_VOL],
                                                    "VolumeType": "gp3",
                                                    "DeleteOnTermination": True}},
                {"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": by_vol[DATA_VOL], "VolumeSize": 2}},
                {"DeviceName": "/dev/sdh", "NoDevice": ""}])
        iid = img["ImageId"]
        self.assertRegex(iid, r"^ami-[0-9a-f]{17}$")
        d = c.describe_images(ImageIds=[iid])["Images"][0]
        self.assertEqual(d["State"], "pending")
        self.assertEqual(d["Name"], name)
        self.assertEqual(d["Architecture"], "arm64")
        self.assertEqual(d["VirtualizationType"], "hvm")
        self.assertEqual(d["BootMode"], "uefi")
        self.assertIs(d["EnaSupport"], True)
        self.assertEqual(d["RootDeviceName"], "/dev/xvda")
        self.assertEqual(d["OwnerId"], ACCOUNT)
        bdm = {m["DeviceName"]: m for m in d["BlockDeviceMappings"]}
        self.assertEqual(bdm["/dev/xvda"]["Ebs"]["SnapshotId"], by_vol[ROOT_VOL])
        self.assertEqual(bdm["/dev/xvda"]["Ebs"]["VolumeSize"], 8)
        self.assertEqual(bdm["/dev/sdf"]["Ebs"]["VolumeSize"], 2)
        self.assertEqual(bdm["/dev/sdh"]["NoDevice"], "")
        self.wait_completed(c, list(by_vol.values()))
        self.assertEqual(c.describe_images(ImageIds=[iid])["Images"][0]["State"], "available")
        mine = c.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [name]}])
        self.assertEqual([i["ImageId"] for i in mine["Images"]], [iid])
        self.assertClientError(c.register_image, "InvalidAMIName.Duplicate", Name=name,
                               RootDeviceName="/dev/xvda", BlockDeviceMappings=[
                                   {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": by_vol[ROOT_VOL]}}])
        self.assertClientError(c.delete_snapshot, "InvalidSnapshot.InUse",
                               SnapshotId=by_vol[ROOT_VOL])
        c.create_tags(Resources=[iid], Tags=[{"Key": "t", "Value": "1"}])
        self.assertEqual(c.describe_images(ImageIds=[iid])["Images"][0]["Tags"],
                         [{"Key": "t", "Value": "1"}])
        c.deregister_image(ImageId=iid)
        self.assertClientError(c.describe_images, "InvalidAMIID.NotFound", ImageIds=[iid])
        c.delete_snapshot(SnapshotId=by_vol[ROOT_VOL])

    def test_register_image_dangerous_defaults_and_errors(self):
        c = E.client()
        sid = c.create_snapshot(VolumeId=ROOT_VOL)["SnapshotId"]
        iid = c.register_image(Name="defaults-%d" % time.time_ns(), RootDeviceName="/dev/xvda",
                               BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                                     "Ebs": {"SnapshotId": sid}}])["ImageId"]
        d = c.describe_images(ImageIds=[iid])["Images"][0]
        self.assertEqual((d["Architecture"], d["VirtualizationType"]), ("i386", "paravirtual"))
        self.assertNotIn("BootMode", d)
        self.assertClientError(c.register_image, "InvalidBlockDeviceMapping", Name="noroot-x",
                               RootDeviceName="/dev/sda1", BlockDeviceMappings=[
                                   {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])
        self.assertClientError(c.register_image, "InvalidBlockDeviceMapping", Name="small-x",
                               RootDeviceName="/dev/xvda", BlockDeviceMappings=[
                                   {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid,
                                                                      "VolumeSize": 4}}])
        self.assertClientError(c.register_image, "InvalidSnapshot.NotFound", Name="nosnap-x",
                               RootDeviceName="/dev/xvda", BlockDeviceMappings=[
                                   {"DeviceName": "/dev/xvda",
                                    "Ebs": {"SnapshotId": "snap-0123456789abcdef0"}}])
        self.assertClientError(c.register_image, "InvalidAMIName.Malformed", Name="bad*name!",
                               RootDeviceName="/dev/xvda", BlockDeviceMappings=[
                                   {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])
        self.assertClientError(c.register_image, "DryRunOperation", 412, Name="dry-run-x",
                               RootDeviceName="/dev/xvda", DryRun=True, BlockDeviceMappings=[
                                   {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])
        # the instance's launch AMI is visible, owned by amazon
        d = c.describe_images(ImageIds=["ami-0fedcba9876543210"])["Images"][0]
        self.assertEqual(d["ImageOwnerAlias"], "amazon")
        self.assertEqual(d["ProductCodes"][0]["ProductCodeId"], "prodcode123")

    def test_create_image_snapshots_fixed_after_the_call(self):
        c = E.client()
        E.control({"create_image_snapshot_delay_ms": 400})
        wal = os.path.join(TMP, "wal.img")
        old = read(wal)
        name = "create-image-%d" % time.time_ns()
        iid = c.create_image(InstanceId=INSTANCE, Name=name, NoReboot=True,
                             BlockDeviceMappings=[{"DeviceName": "/dev/sdf", "NoDevice": ""}],
                             TagSpecifications=[{"ResourceType": "image",
                                                 "Tags": [{"Key": "kind", "Value": "ami"}]},
                                                {"ResourceType": "snapshot",
                                                 "Tags": [{"Key": "kind", "Value": "ami-snap"}]}])["ImageId"]
        d = c.describe_images(ImageIds=[iid])["Images"][0]
        self.assertEqual(d["State"], "pending")
        self.assertTrue(all("SnapshotId" not in m.get("Ebs", {}) for m in d["BlockDeviceMappings"]))
        # written after the call but before the snapshots are fixed -> included
        write_at(wal, 0, pattern("wal-after-createimage", 4096))
        new = read(wal)
        deadline = time.time() + 5
        while time.time() < deadline:
            d = c.describe_images(ImageIds=[iid])["Images"][0]
            if all("SnapshotId" in m.get("Ebs", {}) for m in d["BlockDeviceMappings"]):
                break
            time.sleep(0.05)
        bdm = {m["DeviceName"]: m["Ebs"] for m in d["BlockDeviceMappings"]}
        self.assertEqual(set(bdm), {"/dev/xvda", "/dev/sdg"})
        self.assertEqual(d["Tags"], [{"Key": "kind", "Value": "ami"}])
        snap = c.describe_snapshots(SnapshotIds=[bdm["/dev/sdg"]["SnapshotId"]])["Snapshots"][0]
        self.assertIn("Created by CreateImage(%s) for %s" % (INSTANCE, iid), snap["Description"])
        self.assertEqual(snap["Tags"], [{"Key": "kind", "Value": "ami-snap"}])
        self.assertEqual(read(self.snap_file(snap["SnapshotId"])), new)
        self.assertNotEqual(new, old)
        self.wait_completed(c, [m["SnapshotId"] for m in bdm.values()])
        self.assertEqual(c.describe_images(ImageIds=[iid])["Images"][0]["State"], "available")
        self.assertEqual(E.state()["reboots"], 0)
        self.assertClientError(c.create_image, "InvalidInstanceID.NotFound",
                               InstanceId="i-0123456789abcdef9", Name="whatever")
        write_at(wal, 0, old[:4096])
