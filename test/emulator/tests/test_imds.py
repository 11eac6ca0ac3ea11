"""IMDSv2 on the main port, and a second emulator with IMDS on a port of
its own and rotating role credentials."""

import http.client
import json
import time
import unittest

from . import support
from .support import (ACCOUNT, INSTANCE, REGION, Base, Emu, base_config, ec2emu, err_code,
                      raw_ec2)

TMP = E = None          # the main emulator and its directory (support.start_world)


def setUpModule():
    global TMP, E
    TMP, E = support.start_world()


# --------------------------------------------------------------------------
# IMDS
# --------------------------------------------------------------------------

class TestImds(Base):
    def test_token_flow(self):
        st, body = E.imds("/latest/meta-data/instance-id")
        self.assertEqual(st, 401)
        st, body = E.imds("/latest/meta-data/instance-id", token="bogus")
        self.assertEqual(st, 401)
        for ttl in ("0", "21601", "abc", None):
            h = {} if ttl is None else {"X-aws-ec2-metadata-token-ttl-seconds": ttl}
            st, _, _ = E.http("PUT", "/latest/api/token", headers=h)
            self.assertEqual(st, 400, ttl)
        st, _, _ = E.http("PUT", "/latest/api/token", headers={
            "X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "1.2.3.4"})
        self.assertEqual(st, 403)
        st, tok, hdr = E.http("PUT", "/latest/api/token", headers={
            "X-aws-ec2-metadata-token-ttl-seconds": "21600"})
        self.assertEqual(st, 200)
        self.assertEqual(hdr.get("X-aws-ec2-metadata-token-ttl-seconds"), "21600")
        tok = tok.decode()
        self.assertEqual(E.imds("/latest/meta-data/instance-id", tok), (200, INSTANCE))
        self.assertEqual(E.imds("/latest/meta-data/placement/region", tok), (200, REGION))
        self.assertEqual(E.imds("/latest/meta-data/placement/availability-zone", tok),
                         (200, REGION + "b"))
        self.assertEqual(E.imds("/latest/meta-data/ami-id", tok), (200, "ami-0fedcba9876543210"))
        st, listing = E.imds("/latest/meta-data/", tok)
        self.assertIn("instance-id", listing.split("\n"))
        self.assertIn("placement/", listing.split("\n"))
        st, bdm = E.imds("/latest/meta-data/block-device-mapping/", tok)
        self.assertEqual(bdm.split("\n"), ["ami", "root", "ebs1", "ebs2"])
        self.assertEqual(E.imds("/latest/meta-data/block-device-mapping/root", tok),
                         (200, "/dev/xvda"))
        self.assertEqual(E.imds("/latest/meta-data/block-device-mapping/ebs1", tok), (200, "sdf"))
        self.assertEqual(E.imds("/latest/meta-data/nothing-here", tok)[0], 404)
        st, doc = E.imds("/latest/dynamic/instance-identity/document", tok)
        doc = json.loads(doc)
        self.assertEqual((doc["instanceId"], doc["region"], doc["accountId"],
                          doc["availabilityZone"], doc["architecture"], doc["imageId"],
                          doc["instanceType"]),
                         (INSTANCE, REGION, ACCOUNT, REGION + "b", "arm64",
                          "ami-0fedcba9876543210", "m7g.large"))

    def test_token_expiry(self):
        tok = E.imds_token(ttl=1)
        self.assertEqual(E.imds("/latest/meta-data/instance-id", tok)[0], 200)
        time.sleep(1.1)
        self.assertEqual(E.imds("/latest/meta-data/instance-id", tok)[0], 401)

    def test_v1_allowed_knob(self):
        E.control({"imds_v1_allowed": True})
        self.assertEqual(E.imds("/latest/meta-data/instance-id"), (200, INSTANCE))

    def test_role_credentials_work_on_ec2(self):
        tok = E.imds_token()
        self.assertEqual(E.imds("/latest/meta-data/iam/security-credentials/", tok),
                         (200, "ami-snapshot-role"))
        st, info = E.imds("/latest/meta-data/iam/info", tok)
        self.assertIn("instance-profile/ami-snapshot-role", json.loads(info)["InstanceProfileArn"])
        cr = E.imds_credentials()
        self.assertEqual(cr["Code"], "Success")
        self.assertEqual(cr["Type"], "AWS-HMAC")
        self.assertRegex(cr["Expiration"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertRegex(cr["LastUpdated"], r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")
        self.assertTrue(cr["AccessKeyId"].startswith("ASIA"))
        self.assertGreater(len(cr["Token"]), 500)
        c = E.client(cr["AccessKeyId"], cr["SecretAccessKey"], cr["Token"])
        self.assertEqual(len(c.describe_instances()["Reservations"]), 1)
        self.check_no_token(cr)

    def check_no_token(self, cr):
        st, data, _ = raw_ec2(E, [("Action", "DescribeInstances")], akid=cr["AccessKeyId"],
                              secret=cr["SecretAccessKey"], token=cr["Token"], send_token=False)
        self.assertEqual((st, err_code(data)), (401, "AuthFailure"))

    def test_expire_and_rotate_via_control(self):
        cr = E.imds_credentials()
        E.control({"expire_imds_credentials": True})
        st, data, _ = raw_ec2(E, [("Action", "DescribeInstances")], akid=cr["AccessKeyId"],
                              secret=cr["SecretAccessKey"], token=cr["Token"])
        self.assertEqual((st, err_code(data)), (400, "RequestExpired"))
        self.assertEqual(E.imds_credentials()["AccessKeyId"], cr["AccessKeyId"])  # no TTL: stale
        E.control({"rotate_imds_credentials": True})
        new = E.imds_credentials()
        self.assertNotEqual(new["AccessKeyId"], cr["AccessKeyId"])
        self.assertNotEqual(new["Token"], cr["Token"])
        c = E.client(new["AccessKeyId"], new["SecretAccessKey"], new["Token"])
        self.assertEqual(len(c.describe_volumes()["Volumes"]), 3)

    def test_imds_faults(self):
        tok = E.imds_token()
        E.control({"imds": "down", "mode": "500"})
        self.assertEqual(E.imds("/latest/meta-data/instance-id", tok)[0], 500)
        E.control({"imds": "ok"})
        self.assertEqual(E.imds("/latest/meta-data/instance-id", tok)[0], 200)
        E.control({"imds": "down"})
        with self.assertRaises((ConnectionError, http.client.HTTPException)):
            E.imds("/latest/meta-data/instance-id", tok)
        E.control({"imds": "ok"})
        E.control({"imds": "slow", "delay_ms": 300, "count": 1})
        t0 = time.monotonic()
        self.assertEqual(E.imds("/latest/meta-data/instance-id", tok), (200, INSTANCE))
        self.assertGreaterEqual(time.monotonic() - t0, 0.3)
        t0 = time.monotonic()
        E.imds("/latest/meta-data/instance-id", tok)
        self.assertLess(time.monotonic() - t0, 0.25)        # count 1: used up
        E.control({"imds": "no_role"})
        self.assertEqual(E.imds("/latest/meta-data/iam/security-credentials/", tok)[0], 404)
        E.control({"imds": "ok"})
        E.control({"imds": "down", "mode": "500", "path": "meta-data/iam"})
        self.assertEqual(E.imds("/latest/meta-data/iam/security-credentials/", tok)[0], 500)
        self.assertEqual(E.imds("/latest/meta-data/instance-id", tok)[0], 200)
        # EC2 side unaffected by IMDS faults
        self.assertEqual(raw_ec2(E, [("Action", "DescribeVolumes")])[0], 200)
        # 'refuse' needs a separate IMDS port
        self.assertEqual(E.control({"imds": "down", "mode": "refuse"}, expect=400)["error"][:10],
                         "imds down ")


class TestSeparateImdsAndRotation(unittest.TestCase):
    """A second emulator: IMDS on its own port, rotating credentials (TTL 2 s)."""

    @classmethod
    def setUpClass(cls):
        cfg = base_config(TMP)
        cfg["imds"] = {"role_name": "rotating-role", "token_length": 1200}
        cls.emu = Emu(TMP, "rot", ["--imds-credential-ttl", "2", "--complete-after", "0.2"],
                      cfg, imds_port=True)

    @classmethod
    def tearDownClass(cls):
        cls.emu.stop()

    def test_rotation_and_expiry(self):
        e = self.emu
        a = e.imds_credentials(port=e.imds_port)
        self.assertEqual(len(a["Token"]), 1200)
        exp_a = ec2emu.parse_iso(a["Expiration"])
        time.sleep(max(0, exp_a - 0.8 - time.time()))
        b = e.imds_credentials(port=e.imds_port)
        self.assertNotEqual(a["AccessKeyId"], b["AccessKeyId"])
        self.assertNotEqual(a["SecretAccessKey"], b["SecretAccessKey"])
        self.assertGreater(ec2emu.parse_iso(b["Expiration"]), exp_a)
        p = [("Action", "DescribeInstances")]
        if time.time() < exp_a:       # old credentials are still good until they expire
            st, data, _ = raw_ec2(e, p, akid=a["AccessKeyId"], secret=a["SecretAccessKey"],
                                  token=a["Token"])
            self.assertEqual(st, 200, data)
        time.sleep(max(0, exp_a + 1.05 - time.time()))
        st, data, _ = raw_ec2(e, p, akid=a["AccessKeyId"], secret=a["SecretAccessKey"],
                              token=a["Token"])
        self.assertEqual((st, err_code(data)), (400, "RequestExpired"))
        c = e.imds_credentials(port=e.imds_port)
        st, data, _ = raw_ec2(e, p, akid=c["AccessKeyId"], secret=c["SecretAccessKey"],
                              token=c["Token"])
        self.assertEqual(st, 200, data)

    def test_imds_port_only_serves_imds_and_can_refuse(self):
        e = self.emu
        tok = e.imds_token(port=e.imds_port)
        self.assertEqual(e.imds("/latest/meta-data/instance-id", tok, port=e.imds_port),
                         (200, INSTANCE))
        st, _, _ = e.http("GET", "/_emulator/state", port=e.imds_port)
        self.assertEqual(st, 404)
        e.control({"imds": "down", "mode": "refuse"})
        time.sleep(0.3)
        with self.assertRaises(ConnectionRefusedError):
            e.imds_token(port=e.imds_port)
        e.control({"imds": "ok"})
        deadline = time.time() + 5
        while True:
            try:
                tok = e.imds_token(port=e.imds_port)
                break
            except ConnectionRefusedError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.assertEqual(e.imds("/latest/meta-data/instance-id", tok, port=e.imds_port)[0], 200)
