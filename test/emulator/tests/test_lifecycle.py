"""A backup's life after it is taken: completion over time (progress, the
fault switch, settable times and clock), DeleteSnapshot and DeregisterImage
rules, snapshot locks, sharing attributes, and IAM-style refusals.

Debian's botocore predates LockSnapshot and DeleteAssociatedSnapshots: those
calls are signed by hand (raw_ec2) and their XML read with xml_tree."""

import json
import time

from . import support
from .support import (ACCOUNT, DATA_VOL, INSTANCE, ROOT_VOL, Base, err_code, raw_ec2,
                      xml_tree)
from ec2emu.util import iso_ms, parse_iso

TMP = E = None
DAY = 86400


def setUpModule():
    global TMP, E
    TMP, E = support.start_world()


def ec2(action, **params):
    """(status, error code or None, the response as plain data)."""
    st, data, _ = raw_ec2(E, [("Action", action)] + [(k, str(v)) for k, v in params.items()])
    return st, err_code(data) if st != 200 else None, xml_tree(data)


class LifeBase(Base):
    def setUp(self):
        super().setUp()
        self.c = E.client()

    def snapshot(self, vol=DATA_VOL, wait=True):
        sid = self.c.create_snapshot(VolumeId=vol)["SnapshotId"]
        if wait:
            self.wait_completed(self.c, [sid])
        return sid

    def describe(self, sid):
        return self.c.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]

    def register(self, *sids):
        devs = ["/dev/xvda", "/dev/sdf", "/dev/sdg"]
        return self.c.register_image(
            Name="life-%d" % time.time_ns(), RootDeviceName="/dev/xvda",
            BlockDeviceMappings=[{"DeviceName": d, "Ebs": {"SnapshotId": s}}
                                 for d, s in zip(devs, sids)])["ImageId"]


class TestCompletion(LifeBase):
    def test_progress_rises_to_completed(self):
        E.control({"complete_after": 1.5})
        sid = self.snapshot(wait=False)
        seen = []
        deadline = time.time() + 5
        while time.time() < deadline:
            s = self.describe(sid)
            seen.append((s["State"], int(s["Progress"].rstrip("%"))))
            if s["State"] == "completed":
                break
            time.sleep(0.1)
        self.assertEqual(seen[0][0], "pending")
        self.assertLess(seen[0][1], 50)
        self.assertEqual(seen[-1], ("completed", 100))
        self.assertEqual([p for _, p in seen], sorted(p for _, p in seen))
        self.assertTrue(any(0 < p < 100 for _, p in seen), seen)

    def test_fail_switch(self):
        E.control({"complete_after": 0.8})
        sid = self.snapshot(ROOT_VOL, wait=False)
        ami = self.register(sid)
        E.control({"fail_snapshot": sid, "state_message": "Copy of the volume failed"})
        self.assertEqual(self.describe(sid)["State"], "pending")
        time.sleep(1.0)
        s = self.describe(sid)
        self.assertEqual((s["State"], s["StateMessage"]), ("error", "Copy of the volume failed"))
        self.assertEqual(self.c.describe_images(ImageIds=[ami])["Images"][0]["State"], "failed")
        # only a pending snapshot can be made to fail; a bad request changes nothing
        E.control({"fail_snapshot": sid}, expect=400)
        E.control({"fail_snapshot": "snap-0123456789abcdef0"}, expect=400)
        E.control({"state_message": "x"}, expect=400)
        self.assertEqual(self.describe(sid)["StateMessage"], "Copy of the volume failed")

    def test_set_times(self):
        sid = self.snapshot()
        ami = self.register(self.snapshot(ROOT_VOL))
        week_ago = iso_ms(time.time() - 7 * DAY)
        E.control({"set_times": {sid: week_ago, ami: week_ago}})
        self.assertEqual(iso_ms(self.describe(sid)["StartTime"].timestamp()), week_ago)
        self.assertEqual(self.c.describe_images(ImageIds=[ami])["Images"][0]["CreationDate"],
                         week_ago)
        st = {s["id"]: s for s in E.state()["snapshots"]}
        self.assertEqual(st[sid]["created"], week_ago)
        E.control({"set_times": {sid: "yesterday"}}, expect=400)
        E.control({"set_times": {"snap-0123456789abcdef0": week_ago}}, expect=400)

    def test_clock_offset(self):
        E.control({"clock_offset_s": 3 * DAY})
        sid = self.snapshot()
        t = self.describe(sid)["StartTime"].timestamp()
        self.assertAlmostEqual(t, time.time() + 3 * DAY, delta=60)
        self.assertAlmostEqual(parse_iso(E.state()["clock"]), time.time() + 3 * DAY, delta=60)
        E.control({"clock_offset_s": -1}, expect=400)


class TestDeleteRules(LifeBase):
    def test_in_use_then_gone(self):
        root, data = self.snapshot(ROOT_VOL), self.snapshot()
        ami = self.register(root, data)
        err = self.assertClientError(self.c.delete_snapshot, "InvalidSnapshot.InUse", 400,
                                     SnapshotId=data)
        self.assertEqual(err["Error"]["Message"],
                         "The snapshot %s is currently in use by %s" % (data, ami))
        self.assertEqual(self.c.deregister_image(ImageId=ami)["ResponseMetadata"]
                         ["HTTPStatusCode"], 200)
        self.assertClientError(self.c.deregister_image, "InvalidAMIID.NotFound", ImageId=ami)
        self.c.delete_snapshot(SnapshotId=data)     # deregistering left it, as EC2 does
        err = self.assertClientError(self.c.delete_snapshot, "InvalidSnapshot.NotFound", 400,
                                     SnapshotId=data)
        self.assertEqual(err["Error"]["Message"], "The snapshot '%s' does not exist." % data)
        self.describe(root)

    def test_deregister_with_snapshots(self):
        root, data, shared = self.snapshot(ROOT_VOL), self.snapshot(), self.snapshot()
        ami = self.register(root, data, shared)
        other = self.register(self.snapshot(ROOT_VOL), shared)
        st, code, r = ec2("LockSnapshot", SnapshotId=data, LockMode="governance",
                          LockDuration=1)
        self.assertEqual(st, 200, r)
        st, code, r = ec2("DeregisterImage", ImageId=ami, DeleteAssociatedSnapshots="true")
        self.assertEqual(st, 200, r)
        self.assertEqual(r["return"], "true")
        self.assertEqual(sorted((x["snapshotId"], x["returnCode"])
                                for x in r["deleteSnapshotResultSet"]),
                         sorted([(root, "success"), (data, "client-error"),
                                 (shared, "skipped")]))
        self.assertClientError(self.c.describe_snapshots, "InvalidSnapshot.NotFound",
                               SnapshotIds=[root])
        self.describe(data)
        self.describe(shared)
        self.c.describe_images(ImageIds=[other])
        # without it, the snapshots stay and the answer has no result set
        st, code, r = ec2("DeregisterImage", ImageId=other)
        self.assertEqual((st, r), (200, {"requestId": r["requestId"], "return": "true"}))


class TestLocks(LifeBase):
    def lock(self, sid, want=None, **kw):
        st, code, r = ec2("LockSnapshot", SnapshotId=sid, **kw)
        if want:
            self.assertEqual((st, code), (400, want), r)
        else:
            self.assertEqual(st, 200, r)
        return r

    def test_governance(self):
        sid = self.snapshot()
        r = self.lock(sid, LockMode="governance", LockDuration=2)
        self.assertEqual((r["snapshotId"], r["lockState"], r["lockDuration"]),
                         (sid, "governance", "2"))
        done = self.describe(sid)["StartTime"].timestamp() + support.COMPLETE_AFTER
        self.assertAlmostEqual(parse_iso(r["lockExpiresOn"]), done + 2 * DAY, delta=2)
        self.assertNotIn("coolOffPeriod", r)
        st, data, _ = raw_ec2(E, [("Action", "DeleteSnapshot"), ("SnapshotId", sid)])
        self.assertEqual((st, err_code(data)), (400, "SnapshotLocked"))
        self.assertIn(sid, data.decode())
        r = self.lock(sid, LockMode="compliance", LockDuration=3, CoolOffPeriod=1)  # modify
        self.assertEqual(r["lockState"], "compliance-cooloff")
        self.assertEqual(ec2("UnlockSnapshot", SnapshotId=sid)[2]["snapshotId"], sid)
        self.assertEqual(ec2("UnlockSnapshot", SnapshotId=sid)[1], "IncorrectState")
        self.c.delete_snapshot(SnapshotId=sid)

    def test_compliance(self):
        sid = self.snapshot()
        r = self.lock(sid, LockMode="compliance", LockDuration=5)
        self.assertEqual(r["lockState"], "compliance")
        self.assertEqual(ec2("UnlockSnapshot", SnapshotId=sid)[1], "IncorrectState")
        self.assertEqual(ec2("DeleteSnapshot", SnapshotId=sid)[1], "SnapshotLocked")
        self.lock(sid, "IncorrectState", LockMode="compliance", LockDuration=4)   # shorter
        self.lock(sid, "IncorrectState", LockMode="governance", LockDuration=9)
        r = self.lock(sid, LockMode="compliance", LockDuration=9)                # longer
        self.assertEqual((r["lockState"], r["lockDuration"]), ("compliance", "9"))

    def test_cool_off_ends_on_the_clock(self):
        sid = self.snapshot()
        r = self.lock(sid, LockMode="compliance", LockDuration=1, CoolOffPeriod=2)
        self.assertEqual((r["lockState"], r["coolOffPeriod"]), ("compliance-cooloff", "2"))
        self.assertAlmostEqual(parse_iso(r["coolOffPeriodExpiresOn"]), time.time() + 7200,
                               delta=5)
        E.control({"clock_offset_s": 3 * 3600})
        st, code, r = ec2("DescribeLockedSnapshots", **{"SnapshotId.1": sid})
        self.assertEqual(r["snapshotSet"][0]["lockState"], "compliance")
        self.assertEqual(ec2("UnlockSnapshot", SnapshotId=sid)[1], "IncorrectState")
        E.control({"clock_offset_s": 2 * DAY})
        st, code, r = ec2("DescribeLockedSnapshots", **{"SnapshotId.1": sid})
        self.assertEqual(r["snapshotSet"][0]["lockState"], "expired")
        self.c.delete_snapshot(SnapshotId=sid)

    def test_expiration_date(self):
        sid = self.snapshot()
        when = iso_ms(time.time() + 10 * DAY)
        r = self.lock(sid, LockMode="governance", ExpirationDate=when)
        self.assertEqual(r["lockExpiresOn"], when)
        self.assertNotIn("lockDuration", r)

    def test_validity(self):
        sid = self.snapshot()
        soon = iso_ms(time.time() + DAY)
        for code, kw in (
                ("MissingParameter", {"LockDuration": 1}),
                ("InvalidParameterValue", {"LockMode": "strict", "LockDuration": 1}),
                ("MissingParameter", {"LockMode": "governance"}),
                ("InvalidParameterCombination", {"LockMode": "governance", "LockDuration": 1,
                                                 "ExpirationDate": soon}),
                ("InvalidParameterValue", {"LockMode": "governance", "LockDuration": 0}),
                ("InvalidParameterValue", {"LockMode": "governance", "LockDuration": 36501}),
                ("InvalidParameterCombination", {"LockMode": "governance", "LockDuration": 1,
                                                 "CoolOffPeriod": 1}),
                ("InvalidParameterValue", {"LockMode": "compliance", "LockDuration": 1,
                                           "CoolOffPeriod": 73}),
                ("InvalidParameterValue", {"LockMode": "governance",
                                           "ExpirationDate": iso_ms(time.time() - 60)}),
                ("InvalidParameterValue", {"LockMode": "governance", "ExpirationDate": "soon"})):
            self.lock(sid, code, **kw)
        st, code, _ = ec2("LockSnapshot", SnapshotId="snap-0123456789abcdef0",
                          LockMode="governance", LockDuration=1)
        self.assertEqual(code, "InvalidSnapshot.NotFound")
        self.assertEqual(ec2("DescribeLockedSnapshots", **{"SnapshotId.1": sid})[2]
                         ["snapshotSet"], "")                   # never locked: empty set
        self.lock(sid, LockMode="governance", LockDuration=36500)   # the bounds hold
        self.lock(sid, LockMode="compliance", LockDuration=1, CoolOffPeriod=72)

    def test_describe_filters_and_pages(self):
        a, b, c = self.snapshot(), self.snapshot(), self.snapshot()
        self.lock(a, LockMode="governance", LockDuration=1)
        self.lock(b, LockMode="compliance", LockDuration=1, CoolOffPeriod=1)
        self.lock(c, LockMode="compliance", LockDuration=1)
        f = {"Filter.1.Name": "lock-state", "Filter.1.Value.1": "governance",
             "Filter.1.Value.2": "compliance-cooloff"}
        r = ec2("DescribeLockedSnapshots", **f)[2]
        ids = [x["snapshotId"] for x in r["snapshotSet"]]
        self.assertIn(a, ids)
        self.assertIn(b, ids)
        self.assertNotIn(c, ids)
        item = [x for x in r["snapshotSet"] if x["snapshotId"] == a][0]
        self.assertEqual(item["ownerId"], ACCOUNT)
        self.assertEqual(ec2("DescribeLockedSnapshots", **{"Filter.1.Name": "lock-state",
                                                           "Filter.1.Value.1": "frozen"})[1],
                         "InvalidParameterValue")
        seen, token = [], None
        while True:
            kw = {"MaxResults": 5}
            if token:
                kw["NextToken"] = token
            r = ec2("DescribeLockedSnapshots", **kw)[2]
            seen += [x["snapshotId"] for x in r["snapshotSet"] or []]
            token = r.get("nextToken")
            if not token:
                break
        self.assertEqual(len(seen), len(set(seen)))
        self.assertTrue({a, b, c} <= set(seen))

    def test_pending_snapshot_lock_starts_at_completion(self):
        E.control({"complete_after": 2})
        sid = self.snapshot(wait=False)
        r = self.lock(sid, LockMode="governance", LockDuration=1)
        start = self.describe(sid)["StartTime"].timestamp() + 2
        self.assertAlmostEqual(parse_iso(r["lockDurationStartTime"]), start, delta=0.01)
        self.assertLess(parse_iso(r["lockCreatedOn"]), start)


class TestAttributes(LifeBase):
    def test_create_volume_permission(self):
        sid = self.snapshot()
        other = "111122223333"
        self.c.modify_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission",
                                         OperationType="add", UserIds=[other])
        self.c.modify_snapshot_attribute(
            SnapshotId=sid, CreateVolumePermission={"Add": [{"Group": "all"}]})
        r = self.c.describe_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
        self.assertEqual(r["CreateVolumePermissions"], [{"UserId": other}, {"Group": "all"}])
        self.assertIn(sid, [s["SnapshotId"] for s in self.c.describe_snapshots(
            RestorableByUserIds=["444455556666"])["Snapshots"]])
        self.c.modify_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission",
                                         OperationType="remove", GroupNames=["all"])
        r = self.c.describe_snapshot_attribute(SnapshotId=sid, Attribute="createVolumePermission")
        self.assertEqual(r["CreateVolumePermissions"], [{"UserId": other}])
        self.assertNotIn(sid, [s["SnapshotId"] for s in self.c.describe_snapshots(
            RestorableByUserIds=["444455556666"])["Snapshots"]])
        self.assertIn(sid, [s["SnapshotId"] for s in self.c.describe_snapshots(
            RestorableByUserIds=[other])["Snapshots"]])
        self.assertClientError(self.c.modify_snapshot_attribute, "InvalidUserID.Malformed",
                               SnapshotId=sid, Attribute="createVolumePermission",
                               OperationType="add", UserIds=["12345"])
        self.assertClientError(self.c.modify_snapshot_attribute, "MissingParameter",
                               SnapshotId=sid, Attribute="createVolumePermission",
                               UserIds=[other])
        self.assertClientError(self.c.describe_snapshot_attribute, "InvalidSnapshot.NotFound",
                               SnapshotId="snap-0123456789abcdef0",
                               Attribute="createVolumePermission")

    def test_launch_permission(self):
        ami = self.register(self.snapshot(ROOT_VOL))
        other = "111122223333"
        self.c.modify_image_attribute(ImageId=ami, Attribute="launchPermission",
                                      OperationType="add", UserIds=[other])
        r = self.c.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
        self.assertEqual(r["LaunchPermissions"], [{"UserId": other}])
        self.assertIn(ami, [i["ImageId"] for i in self.c.describe_images(
            ExecutableUsers=[other])["Images"]])
        self.c.modify_image_attribute(ImageId=ami, LaunchPermission={
            "Add": [{"Group": "all"}], "Remove": [{"UserId": other}]})
        r = self.c.describe_image_attribute(ImageId=ami, Attribute="launchPermission")
        self.assertEqual(r["LaunchPermissions"], [{"Group": "all"}])
        self.assertTrue(self.c.describe_images(ImageIds=[ami])["Images"][0]["Public"])
        self.c.modify_image_attribute(ImageId=ami, Description={"Value": "shared"})
        self.assertEqual(self.c.describe_image_attribute(ImageId=ami, Attribute="description")
                         ["Description"]["Value"], "shared")
        self.assertClientError(self.c.modify_image_attribute, "InvalidUserID.Malformed",
                               ImageId=ami, Attribute="launchPermission",
                               OperationType="add", UserIds=["me"])


class TestDeny(LifeBase):
    def test_denied_action_names_the_iam_action(self):
        sid = self.snapshot()
        E.control({"denied_actions": ["CopySnapshot", "LockSnapshot"]})
        err = self.assertClientError(self.c.copy_snapshot, "UnauthorizedOperation", 403,
                                     SourceRegion=support.REGION, SourceSnapshotId=sid)
        msg = err["Error"]["Message"]
        self.assertIn("is not authorized to perform: ec2:CopySnapshot", msg)
        self.assertIn("arn:aws:iam::%s:user/" % ACCOUNT, msg)
        self.assertIn("Encoded authorization failure message: ", msg)
        self.assertEqual(ec2("LockSnapshot", SnapshotId=sid, LockMode="governance",
                             LockDuration=1)[1], "UnauthorizedOperation")
        self.describe(sid)                                 # other actions still work
        # with the instance role's credentials, the principal is the role's session
        cred = E.imds_credentials()
        role = E.client(akid=cred["AccessKeyId"], secret=cred["SecretAccessKey"],
                        token=cred["Token"])
        err = self.assertClientError(role.copy_snapshot, "UnauthorizedOperation",
                                     SourceRegion=support.REGION, SourceSnapshotId=sid)
        self.assertIn("arn:aws:sts::%s:assumed-role/ami-snapshot-role/%s is not authorized to "
                      "perform: ec2:CopySnapshot" % (ACCOUNT, INSTANCE), err["Error"]["Message"])
        E.control({"denied_actions": ["Copy-Snapshot"]}, expect=400)
        E.reset()
        self.c.copy_snapshot(SourceRegion=support.REGION, SourceSnapshotId=sid)

    def test_denied_applies_to_dry_run(self):
        """The preflight check's premise (doc/protocol.md, "Check"): a denied
        action's DryRun answers UnauthorizedOperation, as EC2 does for a
        missing permission, also when it names a resource that does not
        exist; an allowed one answers DryRunOperation; an allowed DryRun of
        a missing resource answers the lookup's error, which proves nothing."""
        E.control({"denied_actions": ["CreateTags", "DeleteSnapshot"]})
        try:
            err = self.assertClientError(self.c.create_tags, "UnauthorizedOperation", 403,
                                         Resources=[DATA_VOL], Tags=[{"Key": "k", "Value": "v"}],
                                         DryRun=True)
            self.assertIn("perform: ec2:CreateTags", err["Error"]["Message"])
            self.assertEqual(ec2("DeleteSnapshot", SnapshotId="snap-00000000000000000",
                                 DryRun="true")[1], "UnauthorizedOperation")
            self.assertClientError(self.c.describe_volumes, "DryRunOperation", 412,
                                   VolumeIds=[DATA_VOL], DryRun=True)
            self.assertEqual(ec2("DeregisterImage", ImageId="ami-00000000000000000",
                                 DryRun="true")[1], "InvalidAMIID.NotFound")
        finally:
            E.reset()
        self.assertClientError(self.c.create_tags, "DryRunOperation", 412, Resources=[DATA_VOL],
                               Tags=[{"Key": "k", "Value": "v"}], DryRun=True)

    def test_unauthorized_fault_names_the_action(self):
        E.control({"action": "DeleteSnapshot", "fault": "unauthorized"})
        err = self.assertClientError(self.c.delete_snapshot, "UnauthorizedOperation", 403,
                                     SnapshotId=self.snapshot())
        self.assertIn("ec2:DeleteSnapshot", err["Error"]["Message"])
        self.assertEqual(json.loads(json.dumps(E.state()["settings"]["denied_actions"])), [])
