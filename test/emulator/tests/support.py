"""What the emulator's tests share: the test world's constants, an emulator
subprocess (Emu), hand-signed EC2 requests (raw_ec2), the main emulator that
most tests talk to (start_world, stop_world), and their TestCase, Base."""

import atexit
import http.client
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))    # test/emulator
EMU = os.path.join(HERE, "ec2emu.py")
PY = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
sys.path.insert(0, HERE)

import botocore.session  # noqa: E402
from botocore.config import Config  # noqa: E402
from botocore.exceptions import ClientError  # noqa: E402

import ec2emu  # noqa: E402

REGION = "eu-central-1"
REGION2 = "eu-west-1"          # the second region: copies go there
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


def release_devices(state_dir):
    """ec2emu.py release-devices: what it did, a line each."""
    p = subprocess.run([PY, EMU, "release-devices", "--state-dir", state_dir],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return p.stdout.splitlines()


def xml_tree(data):
    """An EC2 response as plain data: an element of <item>s is a list, one
    of other elements a dict, a leaf its text (namespaces dropped)."""
    import xml.etree.ElementTree as ET

    def conv(el):
        kids = list(el)
        if not kids:
            return el.text or ""
        names = [k.tag.split("}")[-1] for k in kids]
        if all(n == "item" for n in names):
            return [conv(k) for k in kids]
        return {n: conv(k) for n, k in zip(names, kids)}
    return conv(ET.fromstring(data))


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
        "instance_id": INSTANCE, "region": REGION, "regions": [REGION, REGION2],
        "account_id": ACCOUNT,
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


def start_world():
    """Start the main emulator, once for all the test modules (their
    setUpModule calls this); returns (TMP, E)."""
    global TMP, E
    if TMP is None:
        TMP = tempfile.mkdtemp(prefix="ec2emu-test-")
        make_backing(TMP)
        atexit.register(stop_world)
    if E is None:
        E = Emu(TMP, "main", ["--complete-after", str(COMPLETE_AFTER)], base_config(TMP))
    return TMP, E


def stop_world():
    """Stop every emulator and remove TMP (test_ec2emu.py calls this at the end)."""
    global TMP, E
    try:
        if E is not None:
            E.stop()
    finally:
        kill_all()
        if TMP and not os.environ.get("EC2EMU_KEEP_TMP"):
            shutil.rmtree(TMP, ignore_errors=True)
        TMP = E = None


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

    def all_pages(self, describe, key, id_key, **kw):
        """Every id a Describe* call returns, following NextToken, 5 a page."""
        seen, token = [], None
        while True:
            page = describe(MaxResults=5, **dict(kw, **({"NextToken": token} if token else {})))
            seen += [item[id_key] for item in page[key]]
            token = page.get("NextToken")
            if not token:
                return seen

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
