"""The request log (and no secrets in it), the ctl and call commands, and
the emulator's life: SIGTERM, state kept across a restart, a bad config."""

import json
import os
import subprocess
import time
import unittest

from botocore.exceptions import ClientError

from . import support
from .support import (DATA_VOL, EMU, PY, REGION, REGION2, SECRETS, TOKEN_AKID, TOKEN_SECRET,
                      TOKEN_TOKEN, WAL_VOL, Base, Emu, base_config, err_code, raw_ec2, read)

TMP = E = None          # the main emulator and its directory (support.start_world)


def setUpModule():
    global TMP, E
    TMP, E = support.start_world()


# --------------------------------------------------------------------------
# logs, state, CLI
# --------------------------------------------------------------------------

class TestLogsAndCli(Base):
    def ctl(self, *args):
        p = subprocess.run([PY, EMU, "ctl", "--port-file", E.port_file] + list(args),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        return p.returncode, p.stdout.decode(), p.stderr.decode()

    def test_ctl_cli(self):
        rc, out, err = self.ctl("set", "latency_ms=0", "complete_after=0.6")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["settings"]["complete_after"], 0.6)
        rc, out, _ = self.ctl("fault", "DescribeVolumes", "throttle", "2")
        self.assertEqual(rc, 0)
        self.assertEqual(len(json.loads(out)["faults"]), 1)
        self.assertClientError(E.client().describe_volumes, "RequestLimitExceeded")
        rc, out, _ = self.ctl("fault", "DescribeVolumes", "slow", "persistent", "delay_ms=10")
        self.assertEqual(rc, 0)
        rc, out, _ = self.ctl("state")
        st = json.loads(out)
        self.assertEqual([f["fault"] for f in st["faults"]], ["throttle", "slow"])
        self.assertGreaterEqual(st["request_counts"]["DescribeVolumes"], 1)
        rc, out, _ = self.ctl("clear")
        self.assertEqual(json.loads(out)["faults"], [])
        rc, out, _ = self.ctl("imds", "down", "mode=500")
        self.assertEqual(rc, 0)
        rc, out, _ = self.ctl("imds", "ok")
        self.assertEqual(json.loads(out)["faults"], [])
        rc, out, _ = self.ctl("fault", "X", "bogus")
        self.assertEqual(rc, 1)
        p = subprocess.run([PY, EMU, "ctl", "--port-file", E.port_file, "--timeout", "3", "wait"],
                           timeout=20)
        self.assertEqual(p.returncode, 0)
        rc, out, _ = self.ctl("reset")
        self.assertEqual(rc, 0)

    def test_ctl_lifecycle_commands(self):
        c = E.client()
        E.control({"complete_after": 30})
        sid = c.create_snapshot(VolumeId=DATA_VOL)["SnapshotId"]
        rc, out, err = self.ctl("fail", sid, "disk", "on", "fire")
        self.assertEqual(rc, 0, out + err)
        rc, out, err = self.ctl("settime", sid + "=2026-01-02T03:04:05Z")
        self.assertEqual(rc, 0, out + err)
        got = c.describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
        self.assertEqual((got["State"], got["StateMessage"]), ("error", "disk on fire"))
        self.assertEqual(got["StartTime"].isoformat(), "2026-01-02T03:04:05+00:00")
        rc, out, _ = self.ctl("fail", sid)                  # no longer pending
        self.assertEqual(rc, 1)
        rc, out, _ = self.ctl("deny", "DescribeVolumes", "CopyImage")
        self.assertEqual(json.loads(out)["settings"]["denied_actions"],
                         ["DescribeVolumes", "CopyImage"])
        self.assertClientError(c.describe_volumes, "UnauthorizedOperation", 403)
        rc, out, _ = self.ctl("deny")
        self.assertEqual(json.loads(out)["settings"]["denied_actions"], [])
        c.describe_volumes()
        p = subprocess.run([PY, EMU, "call", "--port-file", E.port_file, "--config", E.config_path,
                            "--region", REGION2, "DescribeSnapshots", "SnapshotId.1=" + sid],
                           stdout=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"<Code>InvalidSnapshot.NotFound</Code>", p.stdout)

    def test_call_cli(self):
        p = subprocess.run([PY, EMU, "call", "--port-file", E.port_file, "--config", E.config_path,
                            "DescribeVolumes", "VolumeId.1=" + WAL_VOL],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn(b"<volumeId>%s</volumeId>" % WAL_VOL.encode(), p.stdout)
        p = subprocess.run([PY, EMU, "call", "--port-file", E.port_file, "--config", E.config_path,
                            "Nope"], stdout=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 1)
        self.assertIn(b"<Code>InvalidAction</Code>", p.stdout)

    def test_request_log_and_no_secrets(self):
        E.client().create_snapshot(VolumeId=WAL_VOL, Description="logged")
        raw_ec2(E, [("Action", "DescribeInstances")], tamper_sig=True)
        raw_ec2(E, [("Action", "DescribeInstances")], akid=TOKEN_AKID, secret=TOKEN_SECRET,
                token=TOKEN_TOKEN)
        cr = E.imds_credentials()
        E.client(cr["AccessKeyId"], cr["SecretAccessKey"], cr["Token"]).describe_volumes()
        time.sleep(0.1)
        log_text = read(os.path.join(E.state_dir, "requests.jsonl")).decode()
        recs = [json.loads(line) for line in log_text.splitlines()]
        snap = [r for r in recs if r.get("action") == "CreateSnapshot"
                and r.get("params", {}).get("Description") == "logged"][-1]
        self.assertEqual(snap["code"], "OK")
        self.assertEqual(snap["status"], 200)
        self.assertIn("duration_ms", snap)
        self.assertIn("copy_ms", snap)
        self.assertIn("point_in_time", snap)
        self.assertEqual(snap["copies"][0]["volume_id"], WAL_VOL)
        bad = [r for r in recs if r.get("code") == "SignatureDoesNotMatch"]
        self.assertTrue(bad and "canonical_request" in bad[-1])
        self.assertTrue(any(r.get("kind") == "imds" for r in recs))
        stderr_text = read(E.stderr_path).decode("utf-8", "replace")
        for s in SECRETS + [cr["SecretAccessKey"], cr["Token"]]:
            self.assertNotIn(s, log_text)
            self.assertNotIn(s, stderr_text)
            self.assertNotIn(s, json.dumps(E.state()))


class TestLifecycle(unittest.TestCase):
    def test_sigterm_and_state_persistence(self):
        state = os.path.join(TMP, "persist-state")
        cfg = base_config(TMP)
        cfg["volumes"]["vol-0000000000000000d"] = {"device_name": "/dev/sdh",
                                                   "backing_file": os.path.join(TMP, "missing.img")}
        e = Emu(TMP, "persist", ["--complete-after", "0.1", "--fault",
                                 '{"action": "DescribeVolumes", "fault": "throttle"}'],
                cfg, state_dir=state)
        try:
            c = e.client()
            # initial fault from the command line, one-shot
            self.assertRaises(ClientError, c.describe_volumes)
            self.assertEqual(len(c.describe_volumes()["Volumes"]), 4)
            # a backing file that cannot be read is a clean InternalError, not a crash
            with self.assertRaises(ClientError) as cm:
                c.create_snapshot(VolumeId="vol-0000000000000000d")
            self.assertEqual(cm.exception.response["Error"]["Code"], "InternalError")
            self.assertEqual(os.listdir(os.path.join(state, "snapshots")), [])
            sid = c.create_snapshot(VolumeId=DATA_VOL, TagSpecifications=[{
                "ResourceType": "snapshot", "Tags": [{"Key": "keep", "Value": "me"}]}])["SnapshotId"]
            time.sleep(0.2)
            cid = e.client(region=REGION2).copy_snapshot(SourceRegion=REGION,
                                                         SourceSnapshotId=sid)["SnapshotId"]
            st, data, _ = raw_ec2(e, [("Action", "LockSnapshot"), ("SnapshotId", cid),
                                      ("LockMode", "governance"), ("LockDuration", "3")],
                                  region=REGION2)
            self.assertEqual(st, 200, data)
            e.client(region=REGION2).copy_image(SourceRegion=REGION, SourceImageId=c.register_image(
                Name="persist", RootDeviceName="/dev/xvda", BlockDeviceMappings=[
                    {"DeviceName": "/dev/xvda", "Ebs": {"SnapshotId": sid}}])["ImageId"],
                Name="persist-copy", ClientToken="persist-token")
            t0 = time.monotonic()
            rc = e.stop()
            self.assertEqual(rc, 0)
            self.assertLess(time.monotonic() - t0, 3)
            self.assertFalse(os.path.exists(e.port_file))
            e.start()
            got = e.client().describe_snapshots(SnapshotIds=[sid])["Snapshots"][0]
            self.assertEqual(got["Tags"], [{"Key": "keep", "Value": "me"}])
            self.assertEqual(got["State"], "completed")
            self.assertTrue(os.path.exists(os.path.join(state, "snapshots", sid + ".img")))
            # regions, locks and client tokens survive too
            snaps = {x["id"]: x for x in e.state()["snapshots"]}
            self.assertEqual((snaps[cid]["region"], snaps[cid]["lock"]["lockState"]),
                             (REGION2, "governance"))
            st, data, _ = raw_ec2(e, [("Action", "DeleteSnapshot"), ("SnapshotId", cid)],
                                  region=REGION2)
            self.assertEqual(err_code(data), "SnapshotLocked")
            again = e.client(region=REGION2).copy_image(
                SourceRegion=REGION, SourceImageId=[i["id"] for i in e.state()["images"]
                                                    if i["name"] == "persist"][0],
                Name="persist-copy", ClientToken="persist-token")["ImageId"]
            self.assertEqual([i["name"] for i in e.state()["images"] if i["id"] == again],
                             ["persist-copy"])
        finally:
            e.stop()

    def test_bad_config_exits_nonzero(self):
        d = os.path.join(TMP, "badcfg")
        os.makedirs(d, exist_ok=True)
        cfg = os.path.join(d, "c.json")
        with open(cfg, "w") as f:
            json.dump({"volumes": {"vol-1": {"device_name": "/dev/sdf"}}, "typo_key": 1}, f)
        p = subprocess.run([PY, EMU, "--config", cfg, "--state-dir", os.path.join(d, "s")],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
        self.assertEqual(p.returncode, 2)
        self.assertIn(b"bad config", p.stderr)
        for regions, why in (([REGION2], b"home region"), (["Mars"], b"region names"),
                             ("eu-west-1", b"region names")):
            with open(cfg, "w") as f:
                json.dump({"region": REGION, "regions": regions}, f)
            p = subprocess.run([PY, EMU, "--config", cfg, "--state-dir", os.path.join(d, "s")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
            self.assertEqual(p.returncode, 2, regions)
            self.assertIn(why, p.stderr)
