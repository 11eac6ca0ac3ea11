"""
moto_backend.py - moto's server as the EC2 of a World (World(ec2="moto")).

moto's server (python3 -m moto.server, unmodified) lives in some other Python than the tests
(/usr/bin/python3 has botocore, not moto): find_moto_python() looks for it.
moto starts with INITIAL_NO_AUTH_ACTION_COUNT = the length of a fixed setup
sequence, made here unauthenticated with botocore:

  IAM  CreateUser, CreateAccessKey, PutUserPolicy    the helper's user (HELPER_ACTIONS)
  IAM  CreateUser, CreateAccessKey, PutUserPolicy    a user without ec2:CreateSnapshots
  EC2  RunInstances                                   from one of moto's own AMIs
  EC2  CreateVolume, AttachVolume                     for each database volume

From the next request on, moto checks every request's access key and SigV4
signature and enforces the IAM policy.  auth_probe() proves it right after
the setup, before anything else talks to moto.  moto_front.py stands in
front of moto for IMDS, snapshot bytes and the faults moto cannot play.

Secret keys stay in memory and in the World's root-only credentials file;
they are never logged.
"""

import glob
import json
import os
import re
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET

import botocore.session
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
FRONT = os.path.join(ROOT, "test", "emulator", "moto_front.py")

# The EC2 actions the helper makes, and nothing else.
HELPER_ACTIONS = ["ec2:DescribeInstances", "ec2:CreateSnapshots", "ec2:DescribeSnapshots",
                  "ec2:CreateTags",
                  # the AMI methods (doc/install.md, "For AMIs")
                  "ec2:DescribeImages", "ec2:DescribeVolumes", "ec2:RegisterImage",
                  "ec2:CreateImage", "ec2:DeregisterImage"]
# One of moto's built-in images, with the root device moto attaches its root
# volume at (/dev/sda1): ExcludeBootVolume then leaves that volume out.
AMI = "ami-785db401"
ROOT_DEVICE = "/dev/sda1"
INSTANCE_TYPE = "m6i.large"
ACCOUNT_ID = "123456789012"   # moto's default account
SETUP_FIXED_CALLS = 7        # 2 x (CreateUser, CreateAccessKey, PutUserPolicy) + RunInstances


class MotoNotFound(RuntimeError):
    pass


def find_moto_python():
    """(interpreter, moto version): $MOTO_PYTHON, python3 on PATH, then pyenv's."""
    candidates = [os.environ.get("MOTO_PYTHON"), shutil.which("python3")]
    candidates += sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/*/bin/python3")))
    candidates += sorted(glob.glob("/root/.pyenv/versions/*/bin/python3"))
    tried = []
    for py in candidates:
        if not py or py in tried:
            continue
        tried.append(py)
        try:
            r = subprocess.run([py, "-c", "import sys, moto; print(sys.executable, moto.__version__)"],
                               capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.TimeoutExpired):
            continue
        if r.returncode == 0 and r.stdout.strip():
            exe, version = r.stdout.split()[:2]
            return exe, version
    raise MotoNotFound("moto is not installed in any Python found (tried: %s); install it "
                       "(pip install 'moto[server]') or set MOTO_PYTHON" % ", ".join(tried))


def error_code(body):
    try:
        for el in ET.fromstring(body).iter():
            if el.tag.rsplit("}", 1)[-1] == "Code":
                return el.text
    except ET.ParseError:
        pass
    return None


class MotoBackend:
    def __init__(self, workdir, region, log):
        self.workdir = workdir
        self.region = region
        self.log = log
        self.procs = {}
        self.keys = {}          # "helper", "limited": (access key id, secret)
        self.setup_calls = 0
        os.makedirs(workdir, exist_ok=True)

    # ------------------------------------------------------------------ moto
    def start(self, devices):
        """moto with auth on after the setup; the instance with one volume
        attached per device name.  Sets instance_id, root_volume_id,
        volume_ids (in the order of devices)."""
        self.python, self.version = find_moto_python()
        self.expected_setup_calls = SETUP_FIXED_CALLS + 2 * len(devices)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = str(self.expected_setup_calls)
        self.moto_log = os.path.join(self.workdir, "moto.log")
        logf = open(self.moto_log, "w")
        self.procs["moto"] = subprocess.Popen(
            [self.python, "-m", "moto.server", "-H", "127.0.0.1", "-p", "0"],
            stdout=logf, stderr=subprocess.STDOUT, env=env)
        deadline = time.time() + 60
        port = None
        while port is None:
            m = re.search(r"Running on http://127\.0\.0\.1:(\d+)", open(self.moto_log).read())
            if m:
                port = int(m.group(1))
            elif self.procs["moto"].poll() is not None or time.time() > deadline:
                raise RuntimeError("moto did not start; see " + self.moto_log)
            else:
                time.sleep(0.05)
        self.url = "http://127.0.0.1:%d" % port
        self.log("moto %s (%s) on %s; auth on after %d setup calls"
                 % (self.version, self.python, self.url, self.expected_setup_calls))
        self._setup(devices)
        if self.setup_calls != self.expected_setup_calls:
            raise RuntimeError("moto setup made %d calls, expected %d"
                               % (self.setup_calls, self.expected_setup_calls))
        self.auth_probe = self._auth_probe()

    def _client(self, service, key=("AKIASETUPNOAUTH00000", "setup-no-auth"), url=None):
        return botocore.session.get_session().create_client(
            service, region_name=self.region, endpoint_url=url or self.url,
            aws_access_key_id=key[0], aws_secret_access_key=key[1],
            config=Config(retries={"total_max_attempts": 1}))

    def _call(self, client, op, **kw):
        self.setup_calls += 1
        return getattr(client, op)(**kw)

    def _user(self, iam, name, actions):
        self._call(iam, "create_user", UserName=name)
        k = self._call(iam, "create_access_key", UserName=name)["AccessKey"]
        policy = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
        self._call(iam, "put_user_policy", UserName=name, PolicyName="ami-snapshot",
                   PolicyDocument=json.dumps(policy))
        return k["AccessKeyId"], k["SecretAccessKey"]

    def _setup(self, devices):
        iam, ec2 = self._client("iam"), self._client("ec2")
        self.keys["helper"] = self._user(iam, "ami-snapshot-helper", HELPER_ACTIONS)
        self.keys["limited"] = self._user(iam, "ami-snapshot-no-create",
                                          [a for a in HELPER_ACTIONS
                                           if a != "ec2:CreateSnapshots"])
        self.zone = self.region + "a"
        inst = self._call(ec2, "run_instances", ImageId=AMI, MinCount=1, MaxCount=1,
                          InstanceType=INSTANCE_TYPE,
                          Placement={"AvailabilityZone": self.zone})["Instances"][0]
        self.instance_id = inst["InstanceId"]
        roots = [b["Ebs"]["VolumeId"] for b in inst.get("BlockDeviceMappings", [])
                 if b["DeviceName"] == ROOT_DEVICE]
        if len(roots) != 1 or inst.get("RootDeviceName") != ROOT_DEVICE:
            raise RuntimeError("moto's instance has no root volume at %s: %r"
                               % (ROOT_DEVICE, inst.get("BlockDeviceMappings")))
        self.root_volume_id = roots[0]
        self.volume_ids = []
        for dev in devices:
            vol = self._call(ec2, "create_volume", Size=1, AvailabilityZone=self.zone,
                             VolumeType="gp3")["VolumeId"]
            self._call(ec2, "attach_volume", VolumeId=vol, InstanceId=self.instance_id,
                       Device=dev)
            self.volume_ids.append(vol)

    def raw_call(self, body, key=None, url=None, sent=None):
        """POST an EC2 Query body, SigV4-signed with key unless None (sending
        sent instead of the body signed, when given): (HTTP status, EC2 error
        code or None)."""
        url = url or self.url
        req = AWSRequest(method="POST", url=url + "/", data=body,
                         headers={"Content-Type":
                                  "application/x-www-form-urlencoded; charset=utf-8"})
        if key:
            SigV4Auth(Credentials(*key), "ec2", self.region).add_auth(req)
        p = req.prepare()
        r = urllib.request.Request(p.url, data=(sent or body).encode(), headers=dict(p.headers),
                                   method="POST")
        try:
            with urllib.request.urlopen(r, timeout=30) as resp:
                return resp.status, None
        except urllib.error.HTTPError as e:
            return e.code, error_code(e.read())

    def _auth_probe(self):
        """Right after the setup: does moto check keys and signatures now?"""
        body = "Action=DescribeSnapshots&Version=2016-11-15&Filter.1.Name=description&" \
               "Filter.1.Value.1=ami_snapshot+probe"
        key = self.keys["helper"]
        return {"unsigned": self.raw_call(body),
                "wrong secret": self.raw_call(body, (key[0], key[1][::-1])),
                "unknown key": self.raw_call(body, ("AKIAUNKNOWNKEY000000", key[1])),
                "body changed": self.raw_call(body, key, sent=body.replace("probe", "probf")),
                "signed": self.raw_call(body, key)}

    def ec2(self, key="helper"):
        """A botocore EC2 client of moto, signing with one of the IAM keys."""
        return self._client("ec2", self.keys[key])

    # ----------------------------------------------------------------- front
    def start_front(self, python, workdir, state_dir, volumes):
        """moto_front.py: IMDS of the instance, moto's EC2 through it, the
        snapshot bytes of volumes ({volume id: backing file})."""
        self.identity = {"instanceId": self.instance_id, "region": self.region,
                         "availabilityZone": self.zone, "accountId": ACCOUNT_ID,
                         "architecture": "x86_64", "imageId": AMI,
                         "instanceType": INSTANCE_TYPE}
        cfg = os.path.join(workdir, "front.json")
        with open(cfg, "w") as f:
            json.dump({"identity": self.identity, "volumes": volumes}, f, indent=2)
        portfile = os.path.join(workdir, "front.port")
        self.front_log = os.path.join(workdir, "front.log")
        logf = open(self.front_log, "w")
        self.procs["front"] = subprocess.Popen(
            [python, FRONT, "--moto", self.url, "--config", cfg, "--state-dir", state_dir,
             "--port", "0", "--port-file", portfile], stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not os.path.exists(portfile):
            if self.procs["front"].poll() is not None or time.time() > deadline:
                raise RuntimeError("moto_front did not start; see " + self.front_log)
            time.sleep(0.05)
        self.front_url = "http://127.0.0.1:%d" % int(open(portfile).read())
        return self.front_url

    def front_control(self, body):
        req = urllib.request.Request(self.front_url + "/_front/control",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    def front_state(self):
        with urllib.request.urlopen(self.front_url + "/_front/state", timeout=10) as r:
            return json.loads(r.read())

    def close(self):
        for name in ("front", "moto"):
            p = self.procs.pop(name, None)
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
