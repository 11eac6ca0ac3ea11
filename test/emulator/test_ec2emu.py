#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Tests for ec2emu.py (the EC2 + IMDS emulator).

Run:  /usr/bin/python3 test/emulator/test_ec2emu.py [-v] [-k PATTERN]
Prints a final "N passed, N failed" line; exit status 0 only if all passed.

Every test talks to a real emulator subprocess on an ephemeral port with a
temporary state dir and small sparse backing files.  Positive EC2 paths go
through a real botocore client (botocore signs -> positive SigV4 check,
botocore parses -> XML compatibility); negative auth paths use raw HTTP.
"""

import base64
import datetime
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
EMU = os.path.join(HERE, "ec2emu.py")
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
sys.path.insert(0, HERE)

import botocore.session  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

import ec2emu  # noqa: E402

REGION = "eu-central-1"
ACCOUNT = "210987654321"
INSTANCE = "i-0a1b2c3d4e5f60718"
ROOT_VOL = "vol-0000000000000000a"
DATA_VOL = "vol-0000000000000000b"
WAL_VOL = "vol-0000000000000000c"
STATIC_AKID, STATIC_SECRET = "AKIDSTATICEXAMPLE01", "static/secret+key=1"
TOKEN_AKID, TOKEN_SECRET, TOKEN_TOKEN = "ASIASTATICTOKEN0001", "token-secret-2", "static-session-tok/en+=="
EXPIRED_AKID, EXPIRED_SECRET = "ASIAEXPIREDEXAMPLE1", "expired-secret-3"
EXPIRED_TOKEN = "expired-session-token"
SECRETS = [STATIC_SECRET, TOKEN_SECRET, TOKEN_TOKEN, EXPIRED_SECRET, EXPIRED_TOKEN]
COMPLETE_AFTER = 0.6
MIB = 1 << 20

_procs = []           # every emulator started, killed at exit no matter what
_clients = {}


def kill_all():
    for p in _procs:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(5)
            except Exception:
                pass


def watchdog(seconds):
    def fire():
        sys.stderr.write("test_ec2emu: global timeout after %ds, killing emulators\n" % seconds)
        kill_all()
        sys.stdout.write("0 passed, 1 failed\n")
        sys.stdout.flush()
        os._exit(1)
    t = threading.Timer(seconds, fire)
    t.daemon = True
    t.start()


def write_at(path, offset, data):
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(data)


def pattern(tag, n):
    unit = ("<%s>" % tag).encode()
    return (unit * (n // len(unit) + 1))[:n]


def read(path):
    with open(path, "rb") as f:
        return f.read()


class Emu:
    """One emulator subprocess."""

    def __init__(self, root, name="main", args=(), config=None, imds_port=False, state_dir=None):
        self.root = root
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir, exist_ok=True)
        self.state_dir = state_dir or os.path.join(self.dir, "state")
        self.port_file = os.path.join(self.dir, "port")
        self.imds_port_file = os.path.join(self.dir, "imds_port") if imds_port else None
        self.config_path = os.path.join(self.dir, "config.json")
        self.stderr_path = os.path.join(self.dir, "stderr.log")
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=1)
        self.args = list(args)
        self.start()

    def start(self):
        for pf in (self.port_file, self.imds_port_file):
            if pf and os.path.exists(pf):
                os.unlink(pf)
        cmd = [PY, EMU, "--config", self.config_path, "--port", "0", "--port-file",
               self.port_file, "--state-dir", self.state_dir] + self.args
        if self.imds_port_file:
            cmd += ["--imds-port", "0", "--imds-port-file", self.imds_port_file]
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     stdin=subprocess.DEVNULL)
        _procs.append(self.proc)
        deadline = time.time() + 15
        while time.time() < deadline:
            if os.path.exists(self.port_file):
                self.port = int(read(self.port_file))
                if self.imds_port_file:
                    self.imds_port = int(read(self.imds_port_file))
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise RuntimeError("emulator did not start:\n" + read(self.stderr_path).decode()[-3000:])

    def stop(self, sig=signal.SIGTERM):
        rc = None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                rc = self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        else:
            rc = self.proc.returncode
        self.stderr.close()
        return rc

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def http(self, method, path, body=None, headers=None, port=None, timeout=10):
        conn = http.client.HTTPConnection("127.0.0.1", port or self.port, timeout=timeout)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            conn.close()

    def control(self, body, expect=200):
        st, data, _ = self.http("POST", "/_emulator/control", json.dumps(body),
                                {"Content-Type": "application/json"})
        if expect is not None and st != expect:
            raise AssertionError("control %r -> %d %s" % (body, st, data))
        return json.loads(data)

    def reset(self, everything=False):
        st, data, _ = self.http("POST", "/_emulator/reset", json.dumps({"all": everything}))
        assert st == 200, data

    def state(self):
        st, data, _ = self.http("GET", "/_emulator/state")
        assert st == 200, data
        return json.loads(data)

    def client(self, akid=STATIC_AKID, secret=STATIC_SECRET, token=None, region=REGION):
        key = (self.port, akid, secret, token, region)
        if key not in _clients:
            s = botocore.session.get_session()
            _clients[key] = s.create_client(
                "ec2", region_name=region, endpoint_url=self.url, aws_access_key_id=akid,
                aws_secret_access_key=secret, aws_session_token=token,
                config=Config(retries={"total_max_attempts": 1}, connect_timeout=5,
                              read_timeout=10))
        return _clients[key]

    # IMDS
    def imds_token(self, ttl=60, port=None):
        st, tok, hdr = self.http("PUT", "/latest/api/token", headers={
            "X-aws-ec2-metadata-token-ttl-seconds": str(ttl)}, port=port)
        assert st == 200, (st, tok)
        return tok.decode()

    def imds(self, path, token=None, port=None):
        h = {"X-aws-ec2-metadata-token": token} if token else {}
        st, body, _ = self.http("GET", path, headers=h, port=port)
        return st, body.decode("utf-8", "replace")

    def imds_credentials(self, port=None):
        tok = self.imds_token(port=port)
        st, role = self.imds("/latest/meta-data/iam/security-credentials/", tok, port)
        assert st == 200, (st, role)
        st, body = self.imds("/latest/meta-data/iam/security-credentials/" + role.strip(), tok, port)
        assert st == 200, (st, body)
        return json.loads(body)


def raw_ec2(emu, params=None, body=None, akid=STATIC_AKID, secret=STATIC_SECRET, token=None,
            region=REGION, service="ec2", when=None, scope_date=None, send_token=True,
            sign_token=True, tamper_sig=False, tamper_body=None, content_type=None,
            extra_signed=None, extra_unsigned=None, authorization=None, timeout=10):
    """Build and send a SigV4-signed EC2 Query request by hand."""
    if body is None:
        p = [("Version", ec2emu.API_VERSION)] + list(params or [])
        body = urllib.parse.urlencode(p).encode()
    when = when or time.time()
    amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
    host = "127.0.0.1:%d" % emu.port
    headers = [("Host", host), ("X-Amz-Date", amz_date),
               ("Content-Type", content_type or "application/x-www-form-urlencoded; charset=utf-8")]
    if token and send_token and sign_token:
        headers.append(("X-Amz-Security-Token", token))
    headers += list(extra_signed or [])
    signed = sorted(h.lower() for h, _ in headers)
    sig, _, _ = ec2emu.sigv4_signature("POST", "http://%s/" % host, headers, signed, body,
                                       secret, region, service, amz_date, akid)
    if tamper_sig:
        sig = sig[:-1] + ("0" if sig[-1] != "0" else "1")
    auth = "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s" % (
        akid, scope_date or amz_date[:8], region, service, ";".join(signed), sig)
    hd = dict(headers)
    if authorization is not False:
        hd["Authorization"] = authorization or auth
    if token and send_token and not sign_token:
        hd["X-Amz-Security-Token"] = token
    hd.update(dict(extra_unsigned or []))
    return emu.http("POST", "/", body=tamper_body if tamper_body is not None else body,
                    headers=hd, timeout=timeout)


def err_code(data):
    m = re.search(rb"<Code>([^<]*)</Code>", data)
    return m.group(1).decode() if m else None


ERROR_RE = re.compile(r'^<\?xml version="1\.0" encoding="UTF-8"\?>\n<Response><Errors><Error>'
                      r'<Code>[A-Za-z.]+</Code><Message>[^<]*</Message></Error></Errors>'
                      r'<RequestID>[0-9a-f-]{36}</RequestID></Response>$')


# --------------------------------------------------------------------------
# world set-up
# --------------------------------------------------------------------------

TMP = None
E = None          # the main emulator


def base_config(tmp):
    return {
        "instance_id": INSTANCE, "region": REGION, "account_id": ACCOUNT,
        "availability_zone": REGION + "b", "architecture": "arm64",
        "image_id": "ami-0fedcba9876543210", "instance_type": "m7g.large",
        "boot_mode": "uefi", "ena_support": True,
        "product_codes": [{"id": "prodcode123", "type": "marketplace"}],
        "tags": {"Name": "db-primary"},
        "imds": {"role_name": "ami-snapshot-role"},
        "credentials": {
            STATIC_AKID: STATIC_SECRET,
            TOKEN_AKID: {"secret_access_key": TOKEN_SECRET, "session_token": TOKEN_TOKEN},
            EXPIRED_AKID: {"secret_access_key": EXPIRED_SECRET, "session_token": EXPIRED_TOKEN,
                           "expiration": "2001-01-01T00:00:00Z"},
        },
        "volumes": {
            ROOT_VOL: {"device_name": "/dev/xvda", "root": True, "size_gib": 8,
                       "backing_file": None},
            DATA_VOL: {"device_name": "/dev/sdf", "size_gib": 1,
                       "backing_file": os.path.join(tmp, "data.img"),
                       "tags": {"Name": "pgdata", "role": "data"}},
            WAL_VOL: {"device_name": "/dev/sdg", "size_gib": 1,
                      "backing_file": os.path.join(tmp, "wal.img")},
        },
    }


def make_backing(tmp):
    data = os.path.join(tmp, "data.img")
    wal = os.path.join(tmp, "wal.img")
    for p, size in ((data, 4 * MIB), (wal, 2 * MIB)):
        with open(p, "wb") as f:
            f.truncate(size)
    write_at(data, 0, pattern("data-v1", 64 * 1024))
    write_at(data, 3 * MIB, pattern("tail-v1", 4096))
    write_at(wal, 0, pattern("wal-v1", 2 * MIB))


def setUpModule():
    global TMP, E
    TMP = tempfile.mkdtemp(prefix="ec2emu-test-")
    make_backing(TMP)
    E = Emu(TMP, "main", ["--complete-after", str(COMPLETE_AFTER)], base_config(TMP))


def tearDownModule():
    try:
        if E is not None:
            E.stop()
    finally:
        kill_all()
        if TMP and not os.environ.get("EC2EMU_KEEP_TMP"):
            shutil.rmtree(TMP, ignore_errors=True)


class Base(unittest.TestCase):
    def setUp(self):
        E.reset()

    def assertClientError(self, fn, code, status=None, **kw):
        with self.assertRaises(ClientError) as cm:
            fn(**kw)
        err = cm.exception.response
        self.assertEqual(err["Error"]["Code"], code, err)
        if status is not None:
            self.assertEqual(err["ResponseMetadata"]["HTTPStatusCode"], status)
        return err

    def snap_file(self, sid):
        return os.path.join(E.state_dir, "snapshots", sid + ".img")

    def wait_completed(self, client, ids, timeout=5):
        deadline = time.time() + timeout
        while time.time() < deadline:
            snaps = client.describe_snapshots(SnapshotIds=ids)["Snapshots"]
            if all(s["State"] == "completed" for s in snaps):
                return snaps
            time.sleep(0.1)
        self.fail("snapshots %s not completed" % ids)


# --------------------------------------------------------------------------
# SigV4 reference vectors (in-process)
# --------------------------------------------------------------------------

class TestSigV4Vectors(unittest.TestCase):
    SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
    HDR = [("Host", "example.amazonaws.com"), ("X-Amz-Date", "20150830T123600Z")]

    def sign(self, method, url, headers, body=b""):
        signed = [h.lower() for h, _ in headers]
        return ec2emu.sigv4_signature(method, url, headers, signed, body, self.SECRET,
                                      "us-east-1", "service", "20150830T123600Z",
                                      "AKIDEXAMPLE")[0]

    def test_get_vanilla(self):
        self.assertEqual(self.sign("GET", "https://example.amazonaws.com/", self.HDR),
                         "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")

    def test_get_vanilla_query_order_key_case(self):
        self.assertEqual(
            self.sign("GET", "https://example.amazonaws.com/?Param2=value2&Param1=value1", self.HDR),
            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500")

    def test_post_x_www_form_urlencoded(self):
        hdr = [("Content-Type", "application/x-www-form-urlencoded")] + self.HDR
        self.assertEqual(
            self.sign("POST", "https://example.amazonaws.com/", hdr, b"Param1=value1"),
            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a")

    def test_parse_authorization(self):
        a = ec2emu.parse_authorization(
            "AWS4-HMAC-SHA256 Credential=AK/20200101/us-east-1/ec2/aws4_request, "
            "SignedHeaders=host;x-amz-date, Signature=" + "a" * 64)
        self.assertEqual((a["akid"], a["region"], a["service"], a["signed"]),
                         ("AK", "us-east-1", "ec2", ["host", "x-amz-date"]))
        for bad in ("Bearer xyz", "AWS4-HMAC-SHA256 Credential=AK/x, SignedHeaders=host, "
                    "Signature=" + "a" * 64, "AWS4-HMAC-SHA256 SignedHeaders=host"):
            with self.assertRaises(ec2emu.EC2Error):
                ec2emu.parse_authorization(bad)

    def test_query_unflatten_and_validate(self):
        pairs = [("TagSpecification.2.ResourceType", "snapshot"),
                 ("TagSpecification.1.Tag.10.Key", "k10"), ("TagSpecification.1.Tag.2.Key", "k2"),
                 ("TagSpecification.1.ResourceType", "snapshot"), ("DryRun", "TRUE")]
        v = ec2emu._validate(ec2emu.unflatten(pairs), ec2emu.SPECS["CreateSnapshots"], [])
        self.assertEqual(v["TagSpecification"][0]["Tag"], [{"Key": "k2"}, {"Key": "k10"}])
        self.assertIs(v["DryRun"], True)
        for bad, code in (([("Bogus", "1")], "UnknownParameter"),
                          ([("DryRun", "maybe")], "InvalidParameterValue"),
                          ([("TagSpecification.x.ResourceType", "a")], "UnknownParameter"),
                          ([("Description", "a"), ("Description.1", "b")], "InvalidParameterValue")):
            with self.assertRaises(ec2emu.EC2Error) as cm:
                ec2emu._validate(ec2emu.unflatten(bad), ec2emu.SPECS["CreateSnapshots"], [])
            self.assertEqual(cm.exception.code, code)

    def test_sparse_copy(self):
        d = tempfile.mkdtemp(prefix="ec2emu-copy-")
        try:
            src = os.path.join(d, "src")
            with open(src, "wb") as f:
                f.truncate(8 * MIB)
            write_at(src, 5 * MIB, b"x" * 10000)
            info = ec2emu.copy_volume(src, os.path.join(d, "dst"))
            self.assertEqual(read(src), read(os.path.join(d, "dst")))
            self.assertIn(info["method"], ("reflink", "sparse", "sparse+copy_file_range"))
            self.assertLess(os.stat(os.path.join(d, "dst")).st_blocks * 512, 1 * MIB)
        finally:
            shutil.rmtree(d)


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
        seen, token = [], None
        while True:
            kw = {"MaxResults": 5, "Filters": [{"Name": "owner-id", "Values": [ACCOUNT]}]}
            if token:
                kw["NextToken"] = token
            page = c.describe_snapshots(**kw)
            seen += [s["SnapshotId"] for s in page["Snapshots"]]
            token = page.get("NextToken")
            if not token:
                break
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


# --------------------------------------------------------------------------
# authentication
# --------------------------------------------------------------------------

class TestAuth(Base):
    P = [("Action", "DescribeInstances")]

    def check(self, result, code, status):
        st, data, _ = result
        self.assertEqual(err_code(data), code, data)
        self.assertEqual(st, status)
        self.assertRegex(data.decode(), ERROR_RE)

    def test_raw_request_ok(self):
        st, data, hdr = raw_ec2(E, self.P)
        self.assertEqual(st, 200, data)
        self.assertIn(b'<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/">',
                      data)
        self.assertRegex(data.decode(), r"<requestId>[0-9a-f-]{36}</requestId>")

    def test_tampered_signature(self):
        self.check(raw_ec2(E, self.P, tamper_sig=True), "SignatureDoesNotMatch", 403)

    def test_tampered_body(self):
        body = urllib.parse.urlencode([("Version", "2016-11-15")] + self.P).encode()
        self.check(raw_ec2(E, body=body, tamper_body=body.replace(b"Instances", b"Volumes")),
                   "SignatureDoesNotMatch", 403)

    def test_wrong_secret(self):
        self.check(raw_ec2(E, self.P, secret="not-the-secret"), "SignatureDoesNotMatch", 403)

    def test_unknown_access_key(self):
        self.check(raw_ec2(E, self.P, akid="AKIDUNKNOWNKEY00000"), "AuthFailure", 401)

    def test_session_token(self):
        st, data, _ = raw_ec2(E, self.P, akid=TOKEN_AKID, secret=TOKEN_SECRET, token=TOKEN_TOKEN)
        self.assertEqual(st, 200, data)
        # token added after signing (allowed by AWS)
        st, data, _ = raw_ec2(E, self.P, akid=TOKEN_AKID, secret=TOKEN_SECRET, token=TOKEN_TOKEN,
                              sign_token=False)
        self.assertEqual(st, 200, data)
        self.check(raw_ec2(E, self.P, akid=TOKEN_AKID, secret=TOKEN_SECRET, token=TOKEN_TOKEN,
                           send_token=False), "AuthFailure", 401)
        self.check(raw_ec2(E, self.P, akid=TOKEN_AKID, secret=TOKEN_SECRET, token="wrong-token"),
                   "AuthFailure", 401)
        self.check(raw_ec2(E, self.P, token="unexpected"), "AuthFailure", 401)
        # botocore signs the token too
        r = E.client(TOKEN_AKID, TOKEN_SECRET, TOKEN_TOKEN).describe_volumes()
        self.assertEqual(len(r["Volumes"]), 3)

    def test_expired_credentials(self):
        self.check(raw_ec2(E, self.P, akid=EXPIRED_AKID, secret=EXPIRED_SECRET, token=EXPIRED_TOKEN),
                   "RequestExpired", 400)
        E.control({"expired_credentials_code": "ExpiredToken"})
        self.check(raw_ec2(E, self.P, akid=EXPIRED_AKID, secret=EXPIRED_SECRET, token=EXPIRED_TOKEN),
                   "ExpiredToken", 400)

    def test_wrong_region(self):
        self.check(raw_ec2(E, self.P, region="us-west-2"), "AuthFailure", 401)
        self.assertClientError(E.client(region="us-west-2").describe_instances, "AuthFailure", 401)

    def test_wrong_service(self):
        self.check(raw_ec2(E, self.P, service="s3"), "SignatureDoesNotMatch", 403)

    def test_request_time(self):
        self.check(raw_ec2(E, self.P, when=time.time() - 16 * 60), "RequestExpired", 400)
        self.check(raw_ec2(E, self.P, when=time.time() + 16 * 60), "RequestExpired", 400)
        st, _, _ = raw_ec2(E, self.P, when=time.time() - 10 * 60)
        self.assertEqual(st, 200)
        E.control({"clock_skew_s": 3600})
        self.check(raw_ec2(E, self.P), "RequestExpired", 400)

    def test_scope_date_mismatch(self):
        self.check(raw_ec2(E, self.P, scope_date="20000101"), "SignatureDoesNotMatch", 403)

    def test_missing_or_garbage_authorization(self):
        self.check(raw_ec2(E, self.P, authorization=False), "MissingAuthenticationToken", 403)
        self.check(raw_ec2(E, self.P, authorization="Bearer abc"), "IncompleteSignature", 400)
        self.check(raw_ec2(E, self.P, authorization="AWS4-HMAC-SHA256 Credential=x"),
                   "IncompleteSignature", 400)

    def test_content_sha256_header(self):
        body = urllib.parse.urlencode([("Version", "2016-11-15")] + self.P).encode()
        good = hashlib.sha256(body).hexdigest()
        st, data, _ = raw_ec2(E, body=body, extra_signed=[("X-Amz-Content-SHA256", good)])
        self.assertEqual(st, 200, data)
        self.check(raw_ec2(E, body=body, extra_signed=[("X-Amz-Content-SHA256", "0" * 64)]),
                   "SignatureDoesNotMatch", 403)

    def test_extra_signed_headers(self):
        st, data, _ = raw_ec2(E, self.P, extra_signed=[("User-Agent", "ami_snapshot/1.0"),
                                                       ("X-Custom", "  a   b  ")])
        self.assertEqual(st, 200, data)

    def test_get_query_api(self):
        # EC2 also accepts GET with the parameters in the query string
        q = urllib.parse.urlencode([("Action", "DescribeVolumes"), ("Version", "2016-11-15"),
                                    ("VolumeId.1", DATA_VOL)])
        amz = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        host = "127.0.0.1:%d" % E.port
        hdr = [("Host", host), ("X-Amz-Date", amz)]
        sig = ec2emu.sigv4_signature("GET", "http://%s/?%s" % (host, q), hdr, ["host", "x-amz-date"],
                                     b"", STATIC_SECRET, REGION, "ec2", amz)[0]
        h = dict(hdr)
        h["Authorization"] = ("AWS4-HMAC-SHA256 Credential=%s/%s/%s/ec2/aws4_request, "
                              "SignedHeaders=host;x-amz-date, Signature=%s"
                              % (STATIC_AKID, amz[:8], REGION, sig))
        st, data, _ = E.http("GET", "/?" + q, headers=h)
        self.assertEqual(st, 200, data)
        self.assertIn(DATA_VOL.encode(), data)


class TestQueryErrors(Base):
    def test_malformed_and_unknown_parameters(self):
        cases = [
            (b"Action=DescribeInstances&Version=2016-11-15&&&", "MalformedQueryString"),
            (b"Action=DescribeInstances&Version=2016-11-15&Bogus=1", "UnknownParameter"),
            (b"Action=DescribeInstances&Version=2016-11-15&InstanceId.x=1", "UnknownParameter"),
            (b"Action=DescribeInstances&Version=2016-11-15&DryRun=perhaps", "InvalidParameterValue"),
            (b"Action=DescribeInstances&Version=2016-11-15&InstanceId=i-1&InstanceId.1=i-2",
             "InvalidParameterValue"),
            (b"Action=DescribeInstances", "MissingParameter"),
            (b"Version=2016-11-15", "MissingParameter"),
            (b"Action=DescribeInstances&Version=2016-11-15&Filter.1.Value.1=\xff\xfe",
             "MalformedQueryString"),
            (b"Action=CreateSnapshots&Version=2016-11-15", "MissingParameter"),
            (b"Action=CreateSnapshot&Version=2016-11-15&VolumeId=vol-zz", "InvalidVolumeID.Malformed"),
        ]
        for body, code in cases:
            st, data, _ = raw_ec2(E, body=body)
            self.assertEqual((err_code(data), st), (code, 400), body)
            self.assertRegex(data.decode(), ERROR_RE)
        st, data, _ = raw_ec2(E, body=b'{"Action": "DescribeInstances"}',
                              content_type="application/json")
        self.assertEqual(err_code(data), "MalformedQueryString")

    def test_garbage_http_does_not_kill_server(self):
        for junk in (b"GARBAGE\r\n\r\n", b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
                     b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999\r\n\r\nxx",
                     b"\x00\x01\x02" * 100, b"POST / HTTP/1.1\r\nHost: x\r\n\r\n"):
            s = socket.create_connection(("127.0.0.1", E.port), timeout=5)
            try:
                s.sendall(junk)
                s.shutdown(socket.SHUT_WR)
                while s.recv(65536):
                    pass
            except OSError:
                pass
            finally:
                s.close()
        st, data, _ = raw_ec2(E, [("Action", "DescribeVolumes")])
        self.assertEqual(st, 200, data)
        # unsupported paths and methods
        st, data, _ = E.http("DELETE", "/")
        self.assertEqual(st, 405)
        st, data, _ = E.http("GET", "/nothing")
        self.assertEqual(st, 404)


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


# --------------------------------------------------------------------------
# faults and latency
# --------------------------------------------------------------------------

class TestFaults(Base):
    def client(self):
        return E.client()

    def test_error_faults(self):
        c = self.client()
        for kind, code, status in (("throttle", "RequestLimitExceeded", 503),
                                   ("snapshot_rate", "SnapshotCreationPerVolumeRateExceeded", 400),
                                   ("concurrent_limit", "ConcurrentSnapshotLimitExceeded", 400),
                                   ("internal", "InternalError", 500),
                                   ("unavailable_503", "Unavailable", 503),
                                   ("expired_credentials", "RequestExpired", 400),
                                   ("auth_failure", "AuthFailure", 401),
                                   ("unauthorized", "UnauthorizedOperation", 403)):
            n = len(E.state()["snapshots"])
            E.control({"action": "CreateSnapshots", "fault": kind, "count": 1})
            self.assertClientError(c.create_snapshots, code, status,
                                   InstanceSpecification={"InstanceId": INSTANCE})
            self.assertEqual(len(E.state()["snapshots"]), n, kind)   # nothing was copied
            r = c.create_snapshots(InstanceSpecification={"InstanceId": INSTANCE,
                                                          "ExcludeBootVolume": True})
            self.assertEqual(len(r["Snapshots"]), 2, kind)            # one-shot: used up

    def test_raw_throttle_xml(self):
        E.control({"action": "DescribeInstances", "fault": "throttle"})
        st, data, _ = raw_ec2(E, [("Action", "DescribeInstances")])
        self.assertEqual((st, err_code(data)), (503, "RequestLimitExceeded"))
        self.assertRegex(data.decode(), ERROR_RE)

    def test_custom_error_skip_persistent_and_wildcard(self):
        c = self.client()
        E.control({"action": "DescribeVolumes", "fault": "error", "code": "Custom.Thing",
                   "status": 409, "message": "custom message", "skip": 1, "count": 2})
        c.describe_volumes()                                             # skipped
        for _ in range(2):
            err = self.assertClientError(c.describe_volumes, "Custom.Thing", 409)
            self.assertEqual(err["Error"]["Message"], "custom message")
        c.describe_volumes()                                             # used up
        E.control({"action": "*", "fault": "throttle", "count": -1})
        for _ in range(3):
            self.assertClientError(c.describe_volumes, "RequestLimitExceeded", 503)
            self.assertClientError(c.describe_instances, "RequestLimitExceeded", 503)
        E.control({"clear_faults": True})
        c.describe_volumes()

    def test_slow(self):
        c = self.client()
        E.control({"action": "DescribeVolumes", "fault": "slow", "delay_ms": 400})
        t0 = time.monotonic()
        c.describe_volumes()
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        t0 = time.monotonic()
        c.describe_volumes()
        self.assertLess(time.monotonic() - t0, 0.35)

    def test_drop_without_executing(self):
        n = len(E.state()["snapshots"])
        E.control({"action": "CreateSnapshot", "fault": "drop"})
        with self.assertRaises(http.client.RemoteDisconnected):
            raw_ec2(E, [("Action", "CreateSnapshot"), ("VolumeId", DATA_VOL)])
        self.assertEqual(len(E.state()["snapshots"]), n)
        self.assertEqual(raw_ec2(E, [("Action", "CreateSnapshot"), ("VolumeId", DATA_VOL)])[0], 200)

    def test_drop_after_executing(self):
        n = len(E.state()["snapshots"])
        E.control({"action": "CreateSnapshot", "fault": "drop", "execute": True, "delay_ms": 100})
        t0 = time.monotonic()
        with self.assertRaises(http.client.RemoteDisconnected):
            raw_ec2(E, [("Action", "CreateSnapshot"), ("VolumeId", DATA_VOL)])
        self.assertGreaterEqual(time.monotonic() - t0, 0.1)
        self.assertEqual(len(E.state()["snapshots"]), n + 1)     # orphan snapshot exists

    def test_reset(self):
        E.control({"action": "DescribeVolumes", "fault": "reset"})
        with self.assertRaises(ConnectionResetError) as cm:
            raw_ec2(E, [("Action", "DescribeVolumes")])
        self.assertNotIsInstance(cm.exception, http.client.RemoteDisconnected)

    def test_malformed_variants(self):
        c = self.client()
        E.control({"action": "DescribeVolumes", "fault": "malformed"})
        with self.assertRaises(Exception) as cm:
            c.describe_volumes()
        self.assertNotIsInstance(cm.exception, ClientError)
        E.control({"action": "DescribeVolumes", "fault": "malformed", "variant": "truncated"})
        st, data, _ = raw_ec2(E, [("Action", "DescribeVolumes")])
        self.assertEqual(st, 200)
        self.assertTrue(data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeVolumesResponse'))
        self.assertNotIn(b"</DescribeVolumesResponse>", data)
        E.control({"action": "DescribeVolumes", "fault": "malformed", "variant": "garbage"})
        st, data, _ = raw_ec2(E, [("Action", "DescribeVolumes")])
        self.assertEqual(st, 200)
        self.assertNotIn(b"<?xml", data)
        E.control({"action": "DescribeVolumes", "fault": "malformed", "variant": "html"})
        st, data, hdr = raw_ec2(E, [("Action", "DescribeVolumes")])
        self.assertEqual((st, hdr["Content-Type"]), (502, "text/html"))
        E.control({"action": "DescribeVolumes", "fault": "malformed", "variant": "empty"})
        self.assertEqual(raw_ec2(E, [("Action", "DescribeVolumes")])[:2], (200, b""))
        E.control({"action": "DescribeVolumes", "fault": "malformed", "variant": "short"})
        with self.assertRaises(http.client.IncompleteRead):
            raw_ec2(E, [("Action", "DescribeVolumes")])
        # malformed CreateSnapshots still executes (the response is what is lost)
        n = len(E.state()["snapshots"])
        E.control({"action": "CreateSnapshots", "fault": "malformed"})
        raw_ec2(E, [("Action", "CreateSnapshots"), ("InstanceSpecification.InstanceId", INSTANCE)])
        self.assertEqual(len(E.state()["snapshots"]), n + 3)

    def test_latency_after_point_in_time(self):
        """latency_ms: bytes are fixed when the call arrives, the answer comes later."""
        data = os.path.join(TMP, "data.img")
        old = read(data)
        E.control({"latency_ms": 600})
        out = {}

        def call():
            t0 = time.monotonic()
            out["r"] = E.client().create_snapshot(VolumeId=DATA_VOL)
            out["t"] = time.monotonic() - t0
        th = threading.Thread(target=call)
        th.start()
        time.sleep(0.3)
        write_at(data, 0, pattern("during-latency", 4096))
        th.join(10)
        self.assertGreaterEqual(out["t"], 0.6)
        self.assertEqual(read(self.snap_file(out["r"]["SnapshotId"])), old)
        write_at(data, 0, old[:4096])

    def test_latency_before_point_in_time(self):
        """latency_before_ms: the point in time is after the delay."""
        data = os.path.join(TMP, "data.img")
        old = read(data)
        E.control({"latency_before_ms": 600})
        out = {}

        def call():
            out["r"] = E.client().create_snapshot(VolumeId=DATA_VOL)
        th = threading.Thread(target=call)
        th.start()
        time.sleep(0.3)
        write_at(data, 0, pattern("before-pit", 4096))
        new = read(data)
        th.join(10)
        self.assertEqual(read(self.snap_file(out["r"]["SnapshotId"])), new)
        write_at(data, 0, old[:4096])

    def test_reset_clears_faults_and_latency(self):
        E.control([{"latency_ms": 500}, {"action": "*", "fault": "internal", "count": -1}])
        self.assertEqual(len(E.state()["faults"]), 1)
        E.reset()
        t0 = time.monotonic()
        E.client().describe_volumes()
        self.assertLess(time.monotonic() - t0, 0.4)
        self.assertEqual(E.state()["faults"], [])

    def test_control_validation(self):
        for bad in ({"action": "X", "fault": "nope"}, {"fault": "throttle"},
                    {"latency_ms": -1}, {"no_such_knob": 1}, {"imds": "sideways"},
                    {"action": "X", "fault": "slow"}, {"action": "X", "fault": "throttle", "count": 0},
                    {"action": "X", "fault": "malformed", "variant": "weird"}, [1]):
            self.assertIn("error", E.control(bad, expect=400), bad)
        st, data, _ = E.http("POST", "/_emulator/control", b"{not json")
        self.assertEqual(st, 400)
        self.assertEqual(E.state()["faults"], [])


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


# --------------------------------------------------------------------------

def main(argv):
    verbose = "-v" in argv
    patterns = [argv[i + 1] for i, a in enumerate(argv) if a == "-k" and i + 1 < len(argv)]
    watchdog(int(os.environ.get("EC2EMU_TEST_TIMEOUT", "110")))
    loader = unittest.TestLoader()
    if patterns:
        loader.testNamePatterns = ["*%s*" % p for p in patterns]
    suite = loader.loadTestsFromModule(sys.modules[__name__])
    t0 = time.monotonic()
    try:
        res = unittest.TextTestRunner(stream=sys.stdout, verbosity=2 if verbose else 1).run(suite)
    finally:
        kill_all()
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    passed = res.testsRun - failed - len(res.skipped)
    sys.stdout.write("time %.1fs\n" % (time.monotonic() - t0))
    sys.stdout.write("%d passed, %d failed\n" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
