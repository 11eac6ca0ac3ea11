"""Instances launched from images: RunInstances (what it refuses, the
mapping's overrides, ClientToken), DescribeInstances and
DescribeInstanceStatus over their states, the bootability rule and the
impair switch, TerminateInstances (and its guard on the configured
instance), faults, the request log and state.json.  They run on an emulator
of their own, so the main one keeps a single instance."""

import base64
import json
import os
import subprocess
import time
import unittest

from . import support
from .support import (ACCOUNT, DATA_VOL, INSTANCE, REGION, ROOT_VOL, WAL_VOL, Emu, base_config,
                      ec2emu, err_code, raw_ec2)

TMP = R = None
LAUNCH_AMI = "ami-0fedcba9876543210"        # the configured instance's image: arm64, uefi, ENA
SUBNET = "subnet-0a1b2c3d4e5f60718"
SG = "sg-0a1b2c3d4e5f60718"
KEY = "drill-key"
LAUNCH_S, STATUS_S, TERMINATE_S = 0.3, 0.4, 0.3


def config(tmp):
    cfg = base_config(tmp)
    cfg.update(subnets=[SUBNET, "subnet-0123456789abcdef0"], security_groups=[SG],
               key_names=[KEY], instance_launch_delay_s=LAUNCH_S,
               instance_status_delay_s=STATUS_S, instance_terminate_delay_s=TERMINATE_S)
    return cfg


def setUpModule():
    global TMP, R
    TMP, _ = support.start_world()
    R = Emu(TMP, "run", ["--complete-after", "0.2"], config(TMP))


def tearDownModule():
    if R is not None:
        R.stop()


def name(tag):
    return "%s-%d" % (tag, time.time_ns())


class RunBase(unittest.TestCase):
    def setUp(self):
        R.reset(everything=True)           # no instance of another test in the way
        self.c = R.client()

    def err(self, fn, code, **kw):
        with self.assertRaises(support.ClientError) as cm:
            fn(**kw)
        e = cm.exception.response["Error"]
        self.assertEqual(e["Code"], code, e)
        return e["Message"]

    def run_one(self, **kw):
        kw.setdefault("ImageId", LAUNCH_AMI)
        kw.setdefault("InstanceType", "m7g.large")
        kw.setdefault("MinCount", 1)
        kw.setdefault("MaxCount", 1)
        return self.c.run_instances(**kw)

    def instance(self, iid):
        (r,) = self.c.describe_instances(InstanceIds=[iid])["Reservations"]
        (i,) = r["Instances"]
        return i

    def wait_state(self, iid, state, timeout=5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            i = self.instance(iid)
            if i["State"]["Name"] == state:
                return i
            time.sleep(0.05)
        self.fail("%s not %s: %s" % (iid, state, self.instance(iid)["State"]))

    def status(self, iid, **kw):
        rows = self.c.describe_instance_status(InstanceIds=[iid], **kw)["InstanceStatuses"]
        return rows[0] if rows else None

    def wait_checks(self, iid, timeout=5):
        """The instance status once it is no longer initializing."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            s = self.status(iid)
            if s and s["InstanceStatus"]["Status"] != "initializing":
                return s
            time.sleep(0.05)
        self.fail("%s: checks still initializing" % iid)

    def own_snapshots(self):
        r = self.c.create_snapshots(InstanceSpecification={"InstanceId": INSTANCE})
        snaps = {s["VolumeId"]: s["SnapshotId"] for s in r["Snapshots"]}
        deadline = time.time() + 5
        while time.time() < deadline:
            got = self.c.describe_snapshots(SnapshotIds=list(snaps.values()))["Snapshots"]
            if all(s["State"] == "completed" for s in got):
                return snaps
            time.sleep(0.05)
        self.fail("snapshots not completed")

    def register(self, snaps, **kw):
        kw.setdefault("Name", name("img"))
        kw.setdefault("RootDeviceName", "/dev/xvda")
        kw.setdefault("BlockDeviceMappings", [
            {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": snaps[ROOT_VOL]}},
            {"DeviceName": "/dev/sdf", "Ebs": {"SnapshotId": snaps[DATA_VOL],
                                               "DeleteOnTermination": False}},
            {"DeviceName": "/dev/sdg", "Ebs": {"SnapshotId": snaps[WAL_VOL]}}])
        return self.c.register_image(**kw)["ImageId"]


class TestLifecycle(RunBase):
    def test_run_describe_status_terminate(self):
        snaps = self.own_snapshots()
        ami = self.register(snaps, Architecture="arm64", VirtualizationType="hvm",
                            EnaSupport=True, BootMode="uefi")
        user_data = base64.b64encode(b"#!/bin/sh\necho drill\n").decode()
        r = self.run_one(ImageId=ami, SubnetId=SUBNET, SecurityGroupIds=[SG], KeyName=KEY,
                         UserData=user_data, TagSpecifications=[
                             {"ResourceType": "instance",
                              "Tags": [{"Key": "Name", "Value": "drill"},
                                       {"Key": "ami-snapshot:drill", "Value": ami}]},
                             {"ResourceType": "volume",
                              "Tags": [{"Key": "ami-snapshot:drill", "Value": ami}]}])
        self.assertRegex(r["ReservationId"], r"^r-[0-9a-f]{17}$")
        self.assertEqual(r["OwnerId"], ACCOUNT)
        (i,) = r["Instances"]
        iid = i["InstanceId"]
        self.assertRegex(iid, r"^i-[0-9a-f]{17}$")
        self.assertNotEqual(iid, INSTANCE)
        self.assertEqual(i["State"], {"Code": 0, "Name": "pending"})
        self.assertEqual((i["ImageId"], i["InstanceType"], i["Architecture"], i["SubnetId"],
                          i["KeyName"], i["BootMode"], i["RootDeviceName"],
                          i["VirtualizationType"], i["EnaSupport"]),
                         (ami, "m7g.large", "arm64", SUBNET, KEY, "uefi", "/dev/xvda", "hvm",
                          True))
        st, data, _ = raw_ec2(R, [("Action", "DescribeInstances"), ("InstanceId.1", i["InstanceId"])])
        self.assertIn(b"<currentInstanceBootMode>uefi</currentInstanceBootMode>", data)
        self.assertEqual(i["Placement"]["AvailabilityZone"], REGION + "b")
        self.assertEqual([g["GroupId"] for g in i["SecurityGroups"]], [SG])
        self.assertEqual({t["Key"]: t["Value"] for t in i["Tags"]},
                         {"Name": "drill", "ami-snapshot:drill": ami})
        self.assertLess(abs(i["LaunchTime"].timestamp() - time.time()), 5)
        bdm = {m["DeviceName"]: m["Ebs"] for m in i["BlockDeviceMappings"]}
        self.assertEqual(sorted(bdm), ["/dev/sdf", "/dev/sdg", "/dev/xvda"])
        self.assertEqual((bdm["/dev/xvda"]["DeleteOnTermination"],
                          bdm["/dev/sdf"]["DeleteOnTermination"]), (True, False))
        vids = {d: e["VolumeId"] for d, e in bdm.items()}
        self.assertEqual(len(set(vids.values()) & {ROOT_VOL, DATA_VOL, WAL_VOL}), 0)
        # the volumes: made from the image's snapshots, attached, tagged
        vols = {v["VolumeId"]: v for v in self.c.describe_volumes(Filters=[
            {"Name": "attachment.instance-id", "Values": [iid]}])["Volumes"]}
        self.assertEqual(set(vols), set(vids.values()))
        root = vols[vids["/dev/xvda"]]
        self.assertEqual((root["SnapshotId"], root["State"], root["Attachments"][0]["Device"],
                          root["Attachments"][0]["State"]),
                         (snaps[ROOT_VOL], "in-use", "/dev/xvda", "attached"))
        self.assertEqual({t["Key"]: t["Value"] for t in root["Tags"]}, {"ami-snapshot:drill": ami})
        # DescribeInstances: the filters; the configured instance is still there
        for f in ({"Name": "instance-id", "Values": [iid]},
                  {"Name": "tag:Name", "Values": ["drill"]},
                  {"Name": "image-id", "Values": [ami]},
                  {"Name": "instance-state-name", "Values": ["pending"]}):
            res = self.c.describe_instances(Filters=[f])["Reservations"]
            self.assertEqual([x["InstanceId"] for r in res for x in r["Instances"]], [iid], f)
        all_ids = [x["InstanceId"] for r in self.c.describe_instances()["Reservations"]
                   for x in r["Instances"]]
        self.assertEqual(all_ids[0], INSTANCE)
        self.assertIn(iid, all_ids)
        res = self.c.describe_instances(Filters=[{"Name": "tag:Name", "Values": ["db-primary"]}])
        self.assertEqual([x["InstanceId"] for r in res["Reservations"] for x in r["Instances"]],
                         [INSTANCE])
        # DescribeInstanceStatus: nothing until running (unless all), then
        # initializing, then ok
        self.assertIsNone(self.status(iid))
        s = self.status(iid, IncludeAllInstances=True)
        self.assertEqual((s["InstanceState"]["Name"], s["InstanceStatus"]["Status"],
                          s["SystemStatus"]["Status"]), ("pending", "not-applicable",
                                                         "not-applicable"))
        self.wait_state(iid, "running")
        s = self.status(iid)
        self.assertEqual((s["InstanceStatus"]["Status"], s["SystemStatus"]["Status"]),
                         ("initializing", "initializing"))
        self.assertEqual(s["InstanceStatus"]["Details"],
                         [{"Name": "reachability", "Status": "initializing"}])
        s = self.wait_checks(iid)
        self.assertEqual((s["InstanceStatus"]["Status"], s["SystemStatus"]["Status"]),
                         ("ok", "ok"))
        self.assertEqual(s["InstanceStatus"]["Details"],
                         [{"Name": "reachability", "Status": "passed"}])
        self.assertEqual(s["AvailabilityZone"], REGION + "b")
        # the waiters the helper's peers would use
        self.c.get_waiter("instance_running").wait(InstanceIds=[iid],
                                                   WaiterConfig={"Delay": 0.1, "MaxAttempts": 5})
        self.c.get_waiter("instance_status_ok").wait(
            InstanceIds=[iid], WaiterConfig={"Delay": 0.1, "MaxAttempts": 5})
        # tags on a launched instance
        self.c.create_tags(Resources=[iid], Tags=[{"Key": "outcome", "Value": "passed"}])
        tags = self.c.describe_tags(Filters=[{"Name": "resource-id", "Values": [iid]}])["Tags"]
        self.assertEqual(sorted(t["Key"] for t in tags), ["Name", "ami-snapshot:drill", "outcome"])
        # TerminateInstances: shutting-down, then terminated; volumes by DeleteOnTermination
        t = self.c.terminate_instances(InstanceIds=[iid])["TerminatingInstances"]
        self.assertEqual(t, [{"InstanceId": iid, "CurrentState": {"Code": 32, "Name": "shutting-down"},
                              "PreviousState": {"Code": 16, "Name": "running"}}])
        self.assertEqual(self.instance(iid)["State"]["Name"], "shutting-down")
        i = self.wait_state(iid, "terminated")
        self.assertEqual(i["BlockDeviceMappings"], [])
        self.assertEqual(i["StateReason"]["Code"], "Client.UserInitiatedShutdown")
        left = {v["VolumeId"]: v for v in self.c.describe_volumes()["Volumes"]}
        self.assertNotIn(vids["/dev/xvda"], left)
        self.assertNotIn(vids["/dev/sdg"], left)
        self.assertEqual((left[vids["/dev/sdf"]]["State"], left[vids["/dev/sdf"]]["Attachments"]),
                         ("available", []))
        self.c.delete_volume(VolumeId=vids["/dev/sdf"])
        # terminated: still described, terminating again succeeds
        s = self.status(iid, IncludeAllInstances=True)
        self.assertEqual((s["InstanceState"]["Name"], s["InstanceStatus"]["Status"]),
                         ("terminated", "not-applicable"))
        self.assertIsNone(self.status(iid))
        t = self.c.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
        self.assertEqual((t["PreviousState"]["Name"], t["CurrentState"]["Name"]),
                         ("terminated", "terminated"))
        self.c.get_waiter("instance_terminated").wait(
            InstanceIds=[iid], WaiterConfig={"Delay": 0.1, "MaxAttempts": 5})

    def test_terminate_while_pending_and_ttl(self):
        R.control({"instance_launch_delay_s": 5, "terminated_instance_ttl_s": 0.5})
        iid = self.run_one()["Instances"][0]["InstanceId"]
        t = self.c.terminate_instances(InstanceIds=[iid])["TerminatingInstances"][0]
        self.assertEqual((t["PreviousState"]["Name"], t["CurrentState"]["Name"]),
                         ("pending", "shutting-down"))
        self.wait_state(iid, "terminated")
        time.sleep(0.6)
        self.err(self.c.describe_instances, "InvalidInstanceID.NotFound", InstanceIds=[iid])
        self.err(self.c.terminate_instances, "InvalidInstanceID.NotFound", InstanceIds=[iid])

    def test_configured_instance(self):
        s = self.status(INSTANCE)
        self.assertEqual((s["InstanceState"]["Name"], s["InstanceStatus"]["Status"],
                          s["SystemStatus"]["Status"]), ("running", "ok", "ok"))
        msg = self.err(self.c.terminate_instances, "OperationNotPermitted",
                       InstanceIds=[INSTANCE])
        self.assertIn(INSTANCE, msg)
        iid = self.run_one()["Instances"][0]["InstanceId"]
        # one refused id refuses the whole call
        self.err(self.c.terminate_instances, "OperationNotPermitted", InstanceIds=[iid, INSTANCE])
        self.err(self.c.terminate_instances, "InvalidInstanceID.NotFound",
                 InstanceIds=[iid, "i-0123456789abcdef9"])
        self.assertEqual(self.instance(iid)["State"]["Name"], "pending")
        self.err(self.c.terminate_instances, "InvalidInstanceID.Malformed", InstanceIds=["i-xyz"])
        self.err(self.c.terminate_instances, "DryRunOperation", InstanceIds=[iid], DryRun=True)
        self.assertEqual(self.instance(iid)["State"]["Name"], "pending")
        st, data, _ = raw_ec2(R, [("Action", "TerminateInstances")])
        self.assertEqual((st, err_code(data)), (400, "MissingParameter"))
        # termination protection
        pid = self.run_one(DisableApiTermination=True)["Instances"][0]["InstanceId"]
        msg = self.err(self.c.terminate_instances, "OperationNotPermitted", InstanceIds=[pid])
        self.assertIn("disableApiTermination", msg)
        self.c.terminate_instances(InstanceIds=[iid])
        # the configured instance's mapping has only its own volumes
        own = self.instance(INSTANCE)
        self.assertEqual(sorted(m["Ebs"]["VolumeId"] for m in own["BlockDeviceMappings"]),
                         sorted([ROOT_VOL, DATA_VOL, WAL_VOL]))


class TestRunRefusals(RunBase):
    def test_image_and_type(self):
        self.err(self.run_one, "InvalidAMIID.NotFound", ImageId="ami-0123456789abcdef9")
        self.err(self.run_one, "InvalidAMIID.Malformed", ImageId="ami-nope")
        # an image whose snapshots are still pending is not available
        R.control({"complete_after": 30})
        r = self.c.create_snapshots(InstanceSpecification={"InstanceId": INSTANCE})
        root = [s["SnapshotId"] for s in r["Snapshots"] if s["VolumeId"] == ROOT_VOL][0]
        ami = self.c.register_image(
            Name=name("pending"), RootDeviceName="/dev/xvda", Architecture="arm64",
            VirtualizationType="hvm", BlockDeviceMappings=[
                {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": root}}])["ImageId"]
        self.err(self.run_one, "InvalidAMIID.Unavailable", ImageId=ami)
        msg = self.err(self.run_one, "InvalidParameterValue", InstanceType="m9z.huge")
        self.assertEqual(msg, "Invalid value 'm9z.huge' for InstanceType.")
        msg = self.err(self.run_one, "InvalidParameterValue", InstanceType="m6i.large")
        self.assertTrue(msg.startswith(
            "The architecture 'x86_64' of the specified instance type does not match the "
            "architecture 'arm64' of the specified AMI."), msg)

    def test_network_and_key(self):
        self.err(self.run_one, "InvalidSubnetID.Malformed", SubnetId="subnet-xyz")
        self.err(self.run_one, "InvalidSubnetID.NotFound", SubnetId="subnet-0123456789abcdef9")
        self.err(self.run_one, "InvalidGroupId.Malformed", SecurityGroupIds=["sg-xyz"])
        self.err(self.run_one, "InvalidGroup.NotFound", SecurityGroupIds=["sg-0123456789abcdef9"])
        self.err(self.run_one, "InvalidGroup.NotFound", SecurityGroups=["web"])
        self.err(self.run_one, "InvalidKeyPair.NotFound", KeyName="nobody")
        self.err(self.run_one, "InvalidParameterValue",
                 Placement={"AvailabilityZone": REGION + "c"})
        i = self.run_one(SecurityGroups=["default"])["Instances"][0]
        self.assertEqual(i["SubnetId"], SUBNET)           # the first configured subnet
        self.assertNotIn("KeyName", i)

    def test_counts_user_data_tags_dry_run(self):
        before = len(R.state()["instances"])
        msg = self.err(self.run_one, "InvalidParameterValue", MinCount=2, MaxCount=2)
        self.assertIn("one instance", msg)
        self.err(self.run_one, "InvalidParameterValue", MaxCount=3)
        self.err(self.run_one, "InvalidParameterValue", MinCount=0)
        self.err(self.run_one, "InvalidParameterValue", MinCount=2, MaxCount=1)
        st, data, _ = raw_ec2(R, [("Action", "RunInstances"), ("ImageId", LAUNCH_AMI),
                                  ("MaxCount", "1")])
        self.assertEqual((st, err_code(data)), (400, "MissingParameter"))
        st, data, _ = raw_ec2(R, [("Action", "RunInstances"), ("ImageId", LAUNCH_AMI),
                                  ("MinCount", "1"), ("MaxCount", "1"), ("Bogus", "1")])
        self.assertEqual((st, err_code(data)), (400, "UnknownParameter"))
        st, data, _ = raw_ec2(R, [("Action", "RunInstances"), ("ImageId", LAUNCH_AMI),
                                  ("MinCount", "one"), ("MaxCount", "1")])
        self.assertEqual((st, err_code(data)), (400, "InvalidParameterValue"))
        st, data, _ = raw_ec2(R, [("Action", "RunInstances"), ("ImageId", LAUNCH_AMI),
                                  ("InstanceType", "m7g.large"), ("MinCount", "1"),
                                  ("MaxCount", "1"), ("UserData", "not base64!")])
        self.assertEqual((st, err_code(data)), (400, "InvalidParameterValue"))
        self.err(self.run_one, "InvalidParameterValue", TagSpecifications=[
            {"ResourceType": "image", "Tags": [{"Key": "a", "Value": "b"}]}])
        self.err(self.run_one, "InvalidParameterValue", TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "aws:x", "Value": "b"}]}])
        self.err(self.run_one, "DryRunOperation", DryRun=True)
        self.assertEqual(len(R.state()["instances"]), before)

    def test_block_device_mapping_overrides(self):
        snaps = self.own_snapshots()
        ami = self.register(snaps, Architecture="arm64", VirtualizationType="hvm",
                            EnaSupport=True, BootMode="uefi")
        self.err(self.run_one, "InvalidBlockDeviceMapping", ImageId=ami, BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "NoDevice": ""}])
        self.err(self.run_one, "InvalidBlockDeviceMapping", ImageId=ami, BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 4}}])           # < snapshot's 8
        self.err(self.run_one, "InvalidBlockDeviceMapping", ImageId=ami, BlockDeviceMappings=[
            {"DeviceName": "/dev/sdf", "Ebs": {"VolumeType": "io1"}}])         # io1 needs Iops
        self.err(self.run_one, "InvalidBlockDeviceMapping", ImageId=ami, BlockDeviceMappings=[
            {"DeviceName": "/dev/sdh", "Ebs": {"VolumeType": "gp3"}}])         # no size
        i = self.run_one(ImageId=ami, BlockDeviceMappings=[
            {"DeviceName": "/dev/xvda", "Ebs": {"VolumeSize": 20, "VolumeType": "io2",
                                                "Iops": 500}},
            {"DeviceName": "/dev/sdf", "Ebs": {"DeleteOnTermination": True}},
            {"DeviceName": "/dev/sdg", "NoDevice": ""},
            {"DeviceName": "/dev/sdh", "Ebs": {"VolumeSize": 5, "DeleteOnTermination": False}}],
        )["Instances"][0]
        bdm = {m["DeviceName"]: m["Ebs"] for m in i["BlockDeviceMappings"]}
        self.assertEqual(sorted(bdm), ["/dev/sdf", "/dev/sdh", "/dev/xvda"])
        self.assertEqual([bdm[d]["DeleteOnTermination"] for d in ("/dev/xvda", "/dev/sdf",
                                                                   "/dev/sdh")],
                         [True, True, False])
        vols = {v["VolumeId"]: v for v in self.c.describe_volumes(
            VolumeIds=[e["VolumeId"] for e in bdm.values()])["Volumes"]}
        root, sdh = vols[bdm["/dev/xvda"]["VolumeId"]], vols[bdm["/dev/sdh"]["VolumeId"]]
        self.assertEqual((root["Size"], root["VolumeType"], root["Iops"], root["SnapshotId"]),
                         (20, "io2", 500, snaps[ROOT_VOL]))
        self.assertEqual((sdh["Size"], sdh["VolumeType"], sdh["SnapshotId"]), (5, "gp2", ""))

    def test_client_token(self):
        kw = dict(ClientToken=name("tok"), TagSpecifications=[
            {"ResourceType": "instance", "Tags": [{"Key": "k", "Value": "v"}]}])
        a = self.run_one(**kw)
        b = self.run_one(**kw)
        self.assertEqual(a["ReservationId"], b["ReservationId"])
        self.assertEqual(a["Instances"][0]["InstanceId"], b["Instances"][0]["InstanceId"])
        self.assertEqual(b["Instances"][0]["ClientToken"], kw["ClientToken"])
        res = self.c.describe_instances(Filters=[{"Name": "client-token",
                                                  "Values": [kw["ClientToken"]]}])
        self.assertEqual(len([x for r in res["Reservations"] for x in r["Instances"]]), 1)
        self.err(self.run_one, "IdempotentParameterMismatch", ClientToken=kw["ClientToken"],
                 InstanceType="t4g.micro")
        self.assertNotEqual(self.run_one()["ReservationId"], a["ReservationId"])


class TestBootability(RunBase):
    """The bootability rule (README): hvm, the root device on a snapshot that
    still exists, a boot mode the type boots, ENA when the type needs it."""

    def launch_checks(self, ami, itype):
        iid = self.run_one(ImageId=ami, InstanceType=itype)["Instances"][0]["InstanceId"]
        return iid, self.wait_checks(iid)

    def assert_checks(self, ami, itype, expect):
        iid, s = self.launch_checks(ami, itype)
        self.assertEqual((s["InstanceStatus"]["Status"], s["SystemStatus"]["Status"]),
                         (expect, "ok"), (ami, itype))
        if expect == "impaired":
            (d,) = s["InstanceStatus"]["Details"]
            self.assertEqual((d["Name"], d["Status"]), ("reachability", "failed"))
            self.assertIn("ImpairedSince", d)
            rows = self.c.describe_instance_status(Filters=[
                {"Name": "instance-status.status", "Values": ["impaired"]}])["InstanceStatuses"]
            self.assertIn(iid, [r["InstanceId"] for r in rows])
        self.c.terminate_instances(InstanceIds=[iid])
        return iid

    def test_image_shapes(self):
        snaps = self.own_snapshots()
        x86 = dict(Architecture="x86_64", VirtualizationType="hvm")
        pv = self.register(snaps, Architecture="x86_64")        # AWS's default: paravirtual
        no_ena = self.register(snaps, **x86)                      # no EnaSupport, no BootMode
        uefi_ena = self.register(snaps, EnaSupport=True, BootMode="uefi", **x86)
        bios_ena = self.register(snaps, EnaSupport=True, BootMode="legacy-bios", **x86)
        pref = self.register(snaps, BootMode="uefi-preferred", **x86)
        self.assert_checks(pv, "t2.micro", "impaired")
        self.assert_checks(no_ena, "m6i.large", "impaired")      # a Nitro type needs ENA
        self.assert_checks(no_ena, "t2.micro", "ok")             # legacy-bios by default
        self.assert_checks(uefi_ena, "t2.micro", "impaired")     # t2 boots legacy-bios only
        self.assert_checks(uefi_ena, "m6i.large", "ok")
        self.assert_checks(bios_ena, "t3.micro", "ok")
        self.assert_checks(pref, "t2.micro", "ok")               # falls back to legacy-bios
        arm = self.register(snaps, Architecture="arm64", VirtualizationType="hvm",
                            EnaSupport=True)                     # no BootMode: uefi on arm64
        self.assert_checks(arm, "t4g.micro", "ok")
        self.assert_checks(LAUNCH_AMI, "m7g.large", "ok")
        st = R.state()
        reasons = {i["instanceId"]: i["impairedReason"] for i in st["instances"]}
        self.assertTrue(any(r and "paravirtual" in r for r in reasons.values()), reasons)

    def test_root_snapshot_gone(self):
        R.control({"instance_status_delay_s": 1.0})
        snaps = self.own_snapshots()
        ami = self.register(snaps, Architecture="arm64", VirtualizationType="hvm",
                            EnaSupport=True, BootMode="uefi")
        iid = self.run_one(ImageId=ami)["Instances"][0]["InstanceId"]
        self.c.deregister_image(ImageId=ami)
        self.c.delete_snapshot(SnapshotId=snaps[ROOT_VOL])
        s = self.wait_checks(iid)
        self.assertEqual(s["InstanceStatus"]["Status"], "impaired")
        reason = [i for i in R.state()["instances"] if i["instanceId"] == iid][0]["impairedReason"]
        self.assertIn(snaps[ROOT_VOL], reason)

    def test_impair_switch(self):
        iid = self.run_one()["Instances"][0]["InstanceId"]
        out = R.control({"impair": LAUNCH_AMI})
        self.assertEqual(out["impaired"], [LAUNCH_AMI])
        self.assertEqual(self.wait_checks(iid)["InstanceStatus"]["Status"], "impaired")
        R.control({"unimpair": LAUNCH_AMI})
        self.assertEqual(self.status(iid)["InstanceStatus"]["Status"], "ok")
        R.control({"impair": [iid]})
        self.assertEqual(self.status(iid)["InstanceStatus"]["Status"], "impaired")
        other = self.run_one()["Instances"][0]["InstanceId"]
        self.assertEqual(self.wait_checks(other)["InstanceStatus"]["Status"], "ok")
        R.reset()                                    # clears the switch like the faults
        self.assertEqual(self.status(iid)["InstanceStatus"]["Status"], "ok")
        R.control({"impair": "vol-0123456789abcdef0"}, expect=400)
        R.control({"impair": ["nope"]}, expect=400)
        # the configured instance is never impaired: it is the one the tests run on
        R.control({"impair": INSTANCE})
        self.assertEqual(self.status(INSTANCE)["InstanceStatus"]["Status"], "ok")


class TestLaunchedPrivateIp(RunBase):
    def test_setting(self):
        first = self.run_one()["Instances"][0]
        self.assertTrue(first["PrivateIpAddress"].startswith("10.0."))
        R.control({"launched_private_ip": "127.0.0.1"})
        iid = self.run_one()["Instances"][0]["InstanceId"]
        inst = self.c.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
        self.assertEqual(inst["PrivateIpAddress"], "127.0.0.1")
        R.control({"launched_private_ip": "not an ip"}, expect=400)
        R.control({"launched_private_ip": None})
        self.assertTrue(self.run_one()["Instances"][0]["PrivateIpAddress"].startswith("10.0."))


class TestStatusFilters(RunBase):
    def test_filters_and_pages(self):
        R.control({"instance_launch_delay_s": 0, "instance_status_delay_s": 30})
        iid = self.run_one()["Instances"][0]["InstanceId"]
        rows = self.c.describe_instance_status(Filters=[
            {"Name": "instance-status.status", "Values": ["initializing"]},
            {"Name": "instance-state-name", "Values": ["running"]}])["InstanceStatuses"]
        self.assertEqual([r["InstanceId"] for r in rows], [iid])
        rows = self.c.describe_instance_status(Filters=[
            {"Name": "system-status.status", "Values": ["ok"]}])["InstanceStatuses"]
        self.assertIn(INSTANCE, [r["InstanceId"] for r in rows])
        self.assertNotIn(iid, [r["InstanceId"] for r in rows])
        self.err(self.c.describe_instance_status, "InvalidParameterValue",
                 Filters=[{"Name": "bogus", "Values": ["x"]}])
        self.err(self.c.describe_instance_status, "InvalidInstanceID.NotFound",
                 InstanceIds=["i-0123456789abcdef9"])
        for _ in range(5):
            self.run_one()
        seen = []
        token = None
        while True:
            page = self.c.describe_instance_status(IncludeAllInstances=True, MaxResults=5,
                                                   **({"NextToken": token} if token else {}))
            seen += [r["InstanceId"] for r in page["InstanceStatuses"]]
            token = page.get("NextToken")
            if not token:
                break
        self.assertEqual(len(seen), len(set(seen)))
        self.assertIn(iid, seen)


class TestFaultsLogState(RunBase):
    def test_fault_log_and_restart(self):
        R.control({"action": "RunInstances", "fault": "throttle"})
        before = len(R.state()["instances"])
        self.err(self.run_one, "RequestLimitExceeded")
        self.assertEqual(len(R.state()["instances"]), before)
        R.control({"action": "DescribeInstanceStatus", "fault": "internal"})
        self.err(self.c.describe_instance_status, "InternalError")
        R.control({"action": "TerminateInstances", "fault": "drop", "execute": True})
        iid = self.run_one(ClientToken=name("log"))["Instances"][0]["InstanceId"]
        with self.assertRaises(Exception):
            self.c.terminate_instances(InstanceIds=[iid])
        self.assertEqual(self.instance(iid)["State"]["Name"], "shutting-down")   # it ran
        lines = [json.loads(x) for x in open(os.path.join(R.state_dir, "requests.jsonl"))]
        run = [x for x in lines if x.get("action") == "RunInstances" and x.get("code") == "OK"]
        self.assertEqual(run[-1]["instance_id"], iid)
        self.assertEqual(len(run[-1]["volume_ids"]), 1)
        self.assertTrue(any(x.get("action") == "RunInstances"
                            and x.get("code") == "RequestLimitExceeded" for x in lines))
        self.assertTrue(any(x.get("action") == "TerminateInstances"
                            and x.get("instance_ids") == [iid] for x in lines))
        # state.json keeps the instances across a restart
        with open(os.path.join(R.state_dir, "state.json")) as f:
            self.assertIn(iid, json.load(f)["instances"])
        keep = self.run_one()["Instances"][0]["InstanceId"]
        R.stop()
        R.start()
        self.c = R.client()
        self.assertEqual(self.instance(keep)["InstanceType"], "m7g.large")
        self.assertEqual(self.wait_checks(keep)["InstanceStatus"]["Status"], "ok")
        self.wait_state(iid, "terminated")


class TestSignedAndCli(RunBase):
    def test_sigv4_and_ctl(self):
        before = len(R.state()["instances"])
        params = [("Action", "RunInstances"), ("ImageId", LAUNCH_AMI),
                  ("InstanceType", "m7g.large"), ("MinCount", "1"), ("MaxCount", "1")]
        st, data, _ = raw_ec2(R, params, tamper_sig=True)
        self.assertEqual((st, err_code(data)), (403, "SignatureDoesNotMatch"))
        st, data, _ = raw_ec2(R, [("Action", "TerminateInstances"),
                                  ("InstanceId.1", INSTANCE)], authorization=False)
        self.assertEqual((st, err_code(data)), (403, "MissingAuthenticationToken"))
        self.assertEqual(len(R.state()["instances"]), before)
        st, data, _ = raw_ec2(R, params)
        self.assertEqual(st, 200, data)
        iid = self.c.describe_instances(Filters=[{"Name": "instance-state-name",
                                                  "Values": ["pending", "running"]},
                                                 {"Name": "image-id", "Values": [LAUNCH_AMI]}])
        iid = [x["InstanceId"] for r in iid["Reservations"] for x in r["Instances"]
               if x["InstanceId"] != INSTANCE][0]
        p = subprocess.run([support.PY, support.EMU, "ctl", "--port-file", R.port_file,
                            "impair", iid], capture_output=True, text=True, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(json.loads(p.stdout)["impaired"], [iid])
        self.assertEqual(self.wait_checks(iid)["InstanceStatus"]["Status"], "impaired")
        p = subprocess.run([support.PY, support.EMU, "ctl", "--port-file", R.port_file,
                            "unimpair", iid], capture_output=True, text=True, timeout=20)
        self.assertEqual(json.loads(p.stdout)["impaired"], [])


class TestConfigKeys(unittest.TestCase):
    def load(self, **kw):
        path = os.path.join(TMP, "run-cfg-%d.json" % time.time_ns())
        cfg = base_config(TMP)
        cfg.update(kw)
        with open(path, "w") as f:
            json.dump(cfg, f)
        return ec2emu.load_config(path, time.time())

    def test_keys(self):
        cfg = self.load()
        self.assertEqual((cfg["subnets"], cfg["security_groups"], cfg["key_names"]),
                         (["subnet-0123456789abcdef0"], ["sg-0123456789abcdef0"],
                          ["ami-snapshot-test"]))
        self.assertEqual(self.load(instance_status_delay_s=0.5)["instance_status_delay_s"], 0.5)
        for bad in ({"subnets": ["subnet-xyz"]}, {"subnets": "subnet-0123456789abcdef0"},
                    {"security_groups": ["default"]}, {"key_names": [""]},
                    {"instance_launch_delay_s": -1}, {"terminated_instance_ttl_s": "x"}):
            with self.assertRaises(ec2emu.ConfigError, msg=bad):
                self.load(**bad)
