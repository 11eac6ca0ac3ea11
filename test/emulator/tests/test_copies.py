"""Regions and copies: the credential scope picks the region, resources
live in one, CopySnapshot and CopyImage (called in the destination region)
make copies with their own ids, real bytes, and a pre-signed URL check."""

import os
import time

import botocore.auth
import botocore.awsrequest
import botocore.credentials

from . import support
from .support import (ACCOUNT, DATA_VOL, INSTANCE, REGION, REGION2, ROOT_VOL, STATIC_AKID,
                      STATIC_SECRET, Base, ec2emu, err_code, raw_ec2, read, xml_tree)

TMP = E = None


def setUpModule():
    global TMP, E
    TMP, E = support.start_world()


def presigned_url(src_region, sid, dest_region, region=None, akid=STATIC_AKID,
                  secret=STATIC_SECRET, expires=3600, action="CopySnapshot"):
    """A CopySnapshot pre-signed URL as botocore's SigV4QueryAuth makes it."""
    req = botocore.awsrequest.AWSRequest(
        method="GET", url=E.url + "/",
        params={"Action": action, "Version": ec2emu.API_VERSION, "SourceRegion": src_region,
                "SourceSnapshotId": sid, "DestinationRegion": dest_region})
    botocore.auth.SigV4QueryAuth(botocore.credentials.Credentials(akid, secret), "ec2",
                                 region or src_region, expires=expires).add_auth(req)
    return req.url


class CopyBase(Base):
    def setUp(self):
        super().setUp()
        self.home = E.client()
        self.dest = E.client(region=REGION2)

    def data_snapshot(self):
        sid = self.home.create_snapshot(VolumeId=DATA_VOL)["SnapshotId"]
        self.wait_completed(self.home, [sid])
        return sid

    def wait_for(self, describe, want, timeout=5):
        """describe() until its State is want; returns the last answer."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = describe()
            if r["State"] == want:
                return r
            time.sleep(0.05)
        self.fail("not %s: %s" % (want, r))

    def wait_state(self, client, sid, want):
        return self.wait_for(lambda: client.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0],
                             want)

    def raw_copy(self, sid, **extra):
        params = [("Action", "CopySnapshot"), ("SourceRegion", REGION),
                  ("SourceSnapshotId", sid)] + list(extra.items())
        return raw_ec2(E, params, region=REGION2)


class TestRegions(CopyBase):
    def test_resources_stay_in_their_region(self):
        sid = self.data_snapshot()
        self.assertNotIn(sid, [s["SnapshotId"] for s in
                               self.dest.describe_snapshots(OwnerIds=["self"])["Snapshots"]])
        self.assertClientError(self.dest.describe_snapshots, "InvalidSnapshot.NotFound",
                               SnapshotIds=[sid])
        self.assertClientError(self.dest.delete_snapshot, "InvalidSnapshot.NotFound",
                               SnapshotId=sid)
        self.assertClientError(self.dest.create_tags, "InvalidSnapshot.NotFound",
                               Resources=[sid], Tags=[{"Key": "k", "Value": "v"}])
        # the instance, its volumes and the launch image are the home region's
        self.assertEqual(self.dest.describe_instances()["Reservations"], [])
        self.assertEqual(self.dest.describe_volumes()["Volumes"], [])
        launch = "ami-0fedcba9876543210"
        self.assertEqual(self.dest.describe_images(Owners=["amazon"])["Images"], [])
        self.assertClientError(self.dest.describe_images, "InvalidAMIID.NotFound",
                               ImageIds=[launch])
        self.assertEqual(len(self.home.describe_images(ImageIds=[launch])["Images"]), 1)
        self.assertClientError(self.dest.describe_instances, "InvalidInstanceID.NotFound",
                               InstanceIds=[INSTANCE])
        self.assertClientError(self.dest.create_snapshots, "InvalidInstanceID.NotFound",
                               InstanceSpecification={"InstanceId": INSTANCE})
        self.assertClientError(self.dest.create_snapshot, "InvalidVolume.NotFound",
                               VolumeId=DATA_VOL)
        err = self.assertClientError(self.dest.create_volume, "InvalidParameterValue",
                                     AvailabilityZone=REGION2 + "a", SnapshotId=sid)
        self.assertIn("home region", err["Error"]["Message"])
        tags = self.dest.describe_tags()["Tags"]
        self.assertEqual([t for t in tags if t["ResourceType"] in ("instance", "volume")], [])
        self.assertEqual(self.home.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
                         ["SnapshotId"], sid)
        st = {s["id"]: s for s in E.state()["snapshots"]}
        self.assertEqual(st[sid]["region"], REGION)
        self.assertEqual(E.state()["regions"], [REGION, REGION2])

    def test_unknown_region_refused(self):
        st, data, _ = raw_ec2(E, [("Action", "DescribeSnapshots")], region="ap-south-1")
        self.assertEqual((st, err_code(data)), (401, "AuthFailure"))
        self.assertIn("ap-south-1", data.decode())


class TestCopySnapshot(CopyBase):
    def test_copy_to_another_region(self):
        sid = self.data_snapshot()
        # botocore adds a PresignedUrl signed for the source region, as the SDKs do
        r = self.dest.copy_snapshot(SourceRegion=REGION, SourceSnapshotId=sid,
                                    Description="dr copy", TagSpecifications=[
                                        {"ResourceType": "snapshot",
                                         "Tags": [{"Key": "copy", "Value": "yes"}]}])
        cid = r["SnapshotId"]
        self.assertNotEqual(cid, sid)
        c = self.dest.describe_snapshots(SnapshotIds=[cid])["Snapshots"][0]
        self.assertEqual(c["State"], "pending")
        self.assertEqual(c["Description"], "dr copy")
        self.assertEqual(c["VolumeId"], "vol-ffffffff")
        self.assertEqual(c["OwnerId"], ACCOUNT)
        self.assertEqual(c["Tags"], [{"Key": "copy", "Value": "yes"}])
        self.assertClientError(self.home.describe_snapshots, "InvalidSnapshot.NotFound",
                               SnapshotIds=[cid])
        c = self.wait_state(self.dest, cid, "completed")
        self.assertEqual(c["Progress"], "100%")
        self.assertFalse(c["Encrypted"])
        st = {s["id"]: s for s in E.state()["snapshots"]}
        self.assertEqual(st[cid]["region"], REGION2)
        self.assertEqual(st[cid]["copied_from"], {"region": REGION, "snapshot_id": sid})
        self.assertEqual(read(st[cid]["file"]), read(st[sid]["file"]))
        self.assertNotEqual(st[cid]["file"], st[sid]["file"])
        # a copy is no volume source in the home region: it is not there
        self.assertClientError(self.home.create_volume, "InvalidSnapshot.NotFound",
                               AvailabilityZone=REGION + "a", SnapshotId=cid)

    def test_copy_within_the_region(self):
        sid = self.data_snapshot()
        cid = self.home.copy_snapshot(SourceRegion=REGION, SourceSnapshotId=sid)["SnapshotId"]
        self.wait_state(self.home, cid, "completed")

    def test_source_rules(self):
        E.control({"complete_after": 30})
        pending = self.home.create_snapshot(VolumeId=DATA_VOL)["SnapshotId"]
        err = self.assertClientError(self.dest.copy_snapshot, "IncorrectState",
                                     SourceRegion=REGION, SourceSnapshotId=pending)
        self.assertIn("pending", err["Error"]["Message"])
        self.assertClientError(self.dest.copy_snapshot, "InvalidSnapshot.NotFound",
                               SourceRegion=REGION2, SourceSnapshotId=pending)
        self.assertClientError(self.dest.copy_snapshot, "InvalidSnapshotID.Malformed",
                               SourceRegion=REGION, SourceSnapshotId="snap-xyz")
        st, data, _ = self.raw_copy(pending, SourceRegion="sa-east-1")
        self.assertEqual((st, err_code(data)), (400, "InvalidParameterValue"))
        st, data, _ = raw_ec2(E, [("Action", "CopySnapshot"), ("SourceSnapshotId", pending)],
                              region=REGION2)
        self.assertEqual((st, err_code(data)), (400, "MissingParameter"))

    def test_encryption_rules(self):
        sid = self.data_snapshot()
        st, data, _ = self.raw_copy(sid, KmsKeyId="alias/dr")
        self.assertEqual((st, err_code(data)), (400, "InvalidParameterDependency"))
        # across regions, an encrypted copy through the Query API needs a pre-signed URL
        st, data, _ = self.raw_copy(sid, Encrypted="true", KmsKeyId="alias/dr")
        self.assertEqual((st, err_code(data)), (400, "MissingParameter"))
        self.assertIn("PresignedUrl", data.decode())
        cid = self.dest.copy_snapshot(SourceRegion=REGION, SourceSnapshotId=sid,
                                      Encrypted=True, KmsKeyId="alias/dr")["SnapshotId"]
        c = self.wait_state(self.dest, cid, "completed")
        self.assertTrue(c["Encrypted"])
        self.assertEqual(c["KmsKeyId"], "alias/dr")
        # a copy of an encrypted snapshot stays encrypted, and needs the URL too
        st, data, _ = raw_ec2(E, [("Action", "CopySnapshot"), ("SourceRegion", REGION2),
                                  ("SourceSnapshotId", cid)], region=REGION)
        self.assertEqual((st, err_code(data)), (400, "MissingParameter"))
        back = self.home.copy_snapshot(SourceRegion=REGION2, SourceSnapshotId=cid)["SnapshotId"]
        b = self.wait_state(self.home, back, "completed")
        self.assertTrue(b["Encrypted"])
        self.assertEqual(b["KmsKeyId"], "alias/dr")

    def test_presigned_url_checked(self):
        sid = self.data_snapshot()
        good = presigned_url(REGION, sid, REGION2)
        st, data, _ = self.raw_copy(sid, Encrypted="true", PresignedUrl=good)
        self.assertEqual(st, 200, data)
        self.wait_state(self.dest, xml_tree(data)["snapshotId"], "completed")
        sig = good.rsplit("X-Amz-Signature=", 1)[1]
        log = read(os.path.join(E.state_dir, "requests.jsonl")).decode()
        self.assertIn("<redacted>", log)
        self.assertNotIn(sig, log)                # a pre-signed URL is a credential
        # the instance role's credentials: the URL carries its session token
        cred = E.imds_credentials()
        role = E.client(akid=cred["AccessKeyId"], secret=cred["SecretAccessKey"],
                        token=cred["Token"], region=REGION2)
        cid = role.copy_snapshot(SourceRegion=REGION, SourceSnapshotId=sid,
                                 Encrypted=True)["SnapshotId"]
        self.wait_state(self.dest, cid, "completed")
        for secret in (cred["Token"], cred["SecretAccessKey"]):
            self.assertNotIn(secret, read(os.path.join(E.state_dir, "requests.jsonl")).decode())
            self.assertNotIn(secret, read(E.stderr_path).decode("utf-8", "replace"))
        bad = {
            "no session token": presigned_url(REGION, sid, REGION2, akid=cred["AccessKeyId"],
                                               secret=cred["SecretAccessKey"]),
            "signed for the destination region": presigned_url(REGION, sid, REGION2,
                                                               region=REGION2),
            "tampered": good[:-1] + ("0" if good[-1] != "0" else "1"),
            "another snapshot": presigned_url(REGION, "snap-0123456789abcdef0", REGION2),
            "another destination": presigned_url(REGION, sid, REGION),
            "another action": presigned_url(REGION, sid, REGION2, action="CopyImage"),
            "unknown key": presigned_url(REGION, sid, REGION2, akid="AKIDUNKNOWN000000000"),
            "wrong secret": presigned_url(REGION, sid, REGION2, secret="not-the-secret"),
            "not a URL": "ec2.example/CopySnapshot",
            "expired": presigned_url(REGION, sid, REGION2, expires=1),
        }
        time.sleep(1.1)
        for what, url in bad.items():
            st, data, _ = self.raw_copy(sid, Encrypted="true", PresignedUrl=url)
            self.assertEqual(st, 200, (what, data))     # EC2 accepts, then the copy fails
            cid = xml_tree(data)["snapshotId"]
            c = self.wait_state(self.dest, cid, "error")
            self.assertIn("pre-signed URL", c["StateMessage"], what)

    def test_copy_fault_and_dry_run(self):
        sid = self.data_snapshot()
        n = len(E.state()["snapshots"])
        self.assertClientError(self.dest.copy_snapshot, "DryRunOperation", 412,
                               SourceRegion=REGION, SourceSnapshotId=sid, DryRun=True)
        self.assertEqual(len(E.state()["snapshots"]), n)
        E.control({"action": "CopySnapshot", "fault": "snapshot_error"})
        cid = self.dest.copy_snapshot(SourceRegion=REGION, SourceSnapshotId=sid)["SnapshotId"]
        self.wait_state(self.dest, cid, "error")


class TestCopyImage(CopyBase):
    def image(self, name):
        r = self.home.create_snapshots(InstanceSpecification={"InstanceId": INSTANCE})
        snaps = {s["VolumeId"]: s["SnapshotId"] for s in r["Snapshots"]}
        self.wait_completed(self.home, list(snaps.values()))
        iid = self.home.register_image(
            Name=name, RootDeviceName="/dev/xvda", Architecture="arm64",
            VirtualizationType="hvm", BootMode="uefi", EnaSupport=True,
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda",
                                  "Ebs": {"SnapshotId": snaps[ROOT_VOL]}},
                                 {"DeviceName": "/dev/sdf",
                                  "Ebs": {"SnapshotId": snaps[DATA_VOL]}}])["ImageId"]
        self.home.create_tags(Resources=[iid], Tags=[{"Key": "kind", "Value": "nightly"}])
        return iid, snaps

    def wait_image(self, client, iid, want):
        return self.wait_for(lambda: client.describe_images(ImageIds=[iid])["Images"][0], want)

    def test_copy_image(self):
        name = "copy-src-%d" % time.time_ns()
        iid, snaps = self.image(name)
        new = self.dest.copy_image(SourceRegion=REGION, SourceImageId=iid, Name=name,
                                   Description="dr", CopyImageTags=True,
                                   ClientToken="tok-%d" % time.time_ns())["ImageId"]
        self.assertNotEqual(new, iid)
        img = self.dest.describe_images(ImageIds=[new])["Images"][0]
        self.assertEqual(img["State"], "pending")
        self.assertEqual((img["Name"], img["Description"]), (name, "dr"))
        self.assertEqual(img["Tags"], [{"Key": "kind", "Value": "nightly"}])
        self.assertEqual((img["Architecture"], img["BootMode"], img["EnaSupport"]),
                         ("arm64", "uefi", True))
        copies = {m["DeviceName"]: m["Ebs"]["SnapshotId"] for m in img["BlockDeviceMappings"]}
        self.assertEqual(sorted(copies), ["/dev/sdf", "/dev/xvda"])
        self.assertFalse(set(copies.values()) & set(snaps.values()))
        for dev, vid in (("/dev/xvda", ROOT_VOL), ("/dev/sdf", DATA_VOL)):
            c = self.dest.describe_snapshots(SnapshotIds=[copies[dev]])["Snapshots"][0]
            self.assertRegex(c["Description"],
                             r"^Copied for DestinationAmi %s from SourceAmi %s for SourceSnapshot "
                             r"%s\. Task created on \d+\.$" % (new, iid, snaps[vid]))
        self.wait_image(self.dest, new, "available")
        st = {s["id"]: s for s in E.state()["snapshots"]}
        self.assertEqual(read(st[copies["/dev/sdf"]]["file"]), read(st[snaps[DATA_VOL]]["file"]))
        imgs = {i["id"]: i for i in E.state()["images"]}
        self.assertEqual(imgs[new]["region"], REGION2)
        self.assertEqual(imgs[new]["copied_from"], {"region": REGION, "image_id": iid})
        self.assertClientError(self.home.describe_images, "InvalidAMIID.NotFound",
                               ImageIds=[new])
        # the same name in the destination region again: taken
        self.assertClientError(self.dest.copy_image, "InvalidAMIName.Duplicate",
                               SourceRegion=REGION, SourceImageId=iid, Name=name)

    def test_client_token(self):
        iid, _ = self.image("copy-tok-%d" % time.time_ns())
        tok = "tok-%d" % time.time_ns()
        a = self.dest.copy_image(SourceRegion=REGION, SourceImageId=iid, Name="a-" + tok,
                                 ClientToken=tok)["ImageId"]
        b = self.dest.copy_image(SourceRegion=REGION, SourceImageId=iid, Name="a-" + tok,
                                 ClientToken=tok)["ImageId"]
        self.assertEqual(a, b)
        self.assertClientError(self.dest.copy_image, "IdempotentParameterMismatch",
                               SourceRegion=REGION, SourceImageId=iid, Name="b-" + tok,
                               ClientToken=tok)

    def test_source_rules(self):
        iid, _ = self.image("copy-rules-%d" % time.time_ns())
        self.assertClientError(self.dest.copy_image, "InvalidAMIID.NotFound",
                               SourceRegion=REGION2, SourceImageId=iid, Name="x-copy")
        st, data, _ = raw_ec2(E, [("Action", "CopyImage"), ("SourceRegion", REGION),
                                  ("SourceImageId", iid)], region=REGION2)
        self.assertEqual((st, err_code(data)), (400, "MissingParameter"))
        E.control({"complete_after": 30})
        pending = self.home.create_snapshot(VolumeId=ROOT_VOL)["SnapshotId"]
        p_img = self.home.register_image(
            Name="pending-%d" % time.time_ns(), RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": pending}}]
        )["ImageId"]
        self.assertClientError(self.dest.copy_image, "InvalidAMIID.Unavailable",
                               SourceRegion=REGION, SourceImageId=p_img, Name="p-copy")

    def test_copy_image_snapshot_fault(self):
        iid, _ = self.image("copy-fault-%d" % time.time_ns())
        E.control({"action": "CopyImage", "fault": "snapshot_error"})
        new = self.dest.copy_image(SourceRegion=REGION, SourceImageId=iid,
                                   Name="fault-%d" % time.time_ns())["ImageId"]
        img = self.wait_image(self.dest, new, "failed")
        self.assertEqual(img["StateReason"]["Code"], "Client.SnapshotError")
