#!/usr/bin/python3
"""Compare our SigV4 signer and EC2 form encoder with botocore (TAP output).

botocore's SigV4Auth is the reference the EC2 emulator verifies requests
with; this test signs tricky inputs with both and asserts identical canonical
requests, strings to sign and Authorization headers.  It compiles
test/unit/sigv4-vector.c against the helper's sources itself, and fails
(Bail out!) rather than skip when cc, the libraries or botocore are missing.

Run with Debian's /usr/bin/python3, which has python3-botocore.
"""

import datetime
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from unittest import mock
from urllib.parse import parse_qsl, urlencode, urlsplit

HERE = os.path.dirname(os.path.abspath(__file__))
HELPER = os.path.normpath(os.path.join(HERE, "..", "..", "helper"))
SOURCES = ["common/util.c", "common/errcodes.c", "common/channel.c", "common/protocol.c",
           "worker/sigv4.c", "worker/xml.c", "worker/http.c", "worker/ec2.c"]

AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
TOKEN = (
    "AQoDYXdzEPT//////////wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAe"
    "MicRXmxfpSPfIeoIYRqTflfKD8YUuwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZa"
    "mpKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7"
    "ZD0u0iPPkUL64lIZbqBAz+scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oL"
    "xBA=="
)
EC2_CT = "application/x-www-form-urlencoded; charset=utf-8"

tests_run = 0
tests_failed = 0


def ok(cond, name, *diag):
    global tests_run, tests_failed
    tests_run += 1
    if not cond:
        tests_failed += 1
    print("%sok %d - %s" % ("" if cond else "not ", tests_run, name))
    if not cond:
        for d in diag:
            for line in str(d).splitlines():
                print("#   " + line)
    sys.stdout.flush()


def is_eq(got, want, name):
    ok(got == want, name, "got:  %r" % (got,), "want: %r" % (want,))


def bail(msg):
    print("Bail out! " + msg)
    sys.exit(255)


try:
    import botocore
    import botocore.auth
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
except ImportError as e:
    bail("botocore is not importable by %s: %s (install python3-botocore)" % (sys.executable, e))


class CapturingSigV4Auth(SigV4Auth):
    """SigV4Auth that keeps its canonical request and string to sign."""

    def canonical_request(self, request):
        self.captured_creq = super().canonical_request(request)
        return self.captured_creq

    def string_to_sign(self, request, canonical_request):
        self.captured_sts = super().string_to_sign(request, canonical_request)
        return self.captured_sts


def frozen_clock(when):
    """Make SigV4Auth.add_auth see `when` as the current time.

    botocore 1.29 (Debian 12) calls datetime.datetime.utcnow() in
    botocore.auth; later versions call botocore.auth.get_current_datetime().
    """
    if hasattr(botocore.auth, "get_current_datetime"):
        return mock.patch("botocore.auth.get_current_datetime", return_value=when)
    fake = mock.MagicMock()
    fake.datetime.utcnow.return_value = when
    return mock.patch("botocore.auth.datetime", fake)


def build(tmp):
    cc = os.environ.get("CC", "cc")
    if not shutil.which(cc):
        bail("no C compiler (%s)" % cc)
    try:
        pkg = subprocess.run(
            ["pkg-config", "--cflags", "--libs", "libcurl", "libxml-2.0", "libcrypto"],
            check=True, capture_output=True, text=True).stdout.split()
    except (OSError, subprocess.CalledProcessError) as e:
        bail("pkg-config failed: %s" % e)
    exe = os.path.join(tmp, "sigv4-vector")
    # CFLAGS/LDFLAGS let a sanitizer build cover this binary too.
    cmd = ([cc, "-std=gnu11", "-D_GNU_SOURCE", "-I", os.path.join(HELPER, "common"),
            "-I", os.path.join(HELPER, "worker"), "-o", exe]
           + shlex.split(os.environ.get("CFLAGS", ""))
           + [os.path.join(HELPER, s) for s in SOURCES]
           + [os.path.join(HERE, "sigv4-vector.c")] + pkg
           + shlex.split(os.environ.get("LDFLAGS", "")))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        bail("cannot build sigv4-vector: %s\n%s" % (" ".join(map(shlex.quote, cmd)),
                                                     r.stderr[-2000:]))
    return exe


def ours(exe, method, host, path, query, ctype, region, service, when, body, token):
    env = dict(os.environ, AMIS_TEST_AKID=AKID, AMIS_TEST_SECRET=SECRET)
    env.pop("AMIS_TEST_TOKEN", None)
    if token:
        env["AMIS_TEST_TOKEN"] = token
    epoch = int(when.replace(tzinfo=datetime.timezone.utc).timestamp())
    r = subprocess.run([exe, "sign", method, host, path, query, ctype or "-", region, service,
                        str(epoch)], input=body, capture_output=True, env=env)
    if r.returncode != 0:
        return None, r.stderr.decode(errors="replace")
    out = {}
    for line in r.stdout.decode().splitlines():
        k, _, v = line.partition("\t")
        out[k] = v
    out["canonical-request"] = bytes.fromhex(out.pop("canonical-request-hex")).decode()
    out["string-to-sign"] = bytes.fromhex(out.pop("string-to-sign-hex")).decode()
    return out, None


def boto(method, url, host, ctype, region, service, when, body, token):
    headers = {"Host": host}
    if ctype is not None:
        headers["Content-Type"] = ctype
    req = AWSRequest(method=method, url=url, data=body, headers=headers)
    auth = CapturingSigV4Auth(Credentials(AKID, SECRET, token), service, region)
    with frozen_clock(when):
        auth.add_auth(req)
    return {
        "authorization": req.headers["Authorization"],
        "x-amz-date": req.headers["X-Amz-Date"],
        "x-amz-security-token": req.headers.get("X-Amz-Security-Token"),
        "canonical-request": auth.captured_creq,
        "string-to-sign": auth.captured_sts,
    }


def compare(exe, name, method="POST", scheme="https", host="ec2.eu-west-1.amazonaws.com",
            path="/", query="", ctype=EC2_CT, region="eu-west-1", service="ec2",
            when=datetime.datetime(2015, 8, 30, 12, 36, 0), body=b"", token=None):
    url = "%s://%s%s%s" % (scheme, host, path, "?" + query if query else "")
    got, error = ours(exe, method, host, path, query, ctype, region, service, when, body, token)
    if got is None:
        ok(False, name + ": our signer ran", error)
        return
    want = boto(method, url, host, ctype, region, service, when, body, token)
    is_eq(got["canonical-request"], want["canonical-request"], name + ": canonical request")
    is_eq(got["string-to-sign"], want["string-to-sign"], name + ": string to sign")
    is_eq(got["authorization"], want["authorization"], name + ": Authorization")
    is_eq(got["x-amz-date"], want["x-amz-date"], name + ": X-Amz-Date")
    is_eq(got.get("x-amz-security-token"), want["x-amz-security-token"],
          name + ": X-Amz-Security-Token")


def form(exe, action, pairs):
    args = [exe, "form", action]
    for k, v in pairs:
        args += [k, v]
    r = subprocess.run(args, capture_output=True)
    if r.returncode != 0:
        bail("sigv4-vector form failed: %s" % r.stderr.decode(errors="replace"))
    return r.stdout


class Stop(Exception):
    """Raised by the capture hook: the request is never sent."""


def boto_presigned_copy(src, dest, params, when, token):
    """The PresignedUrl botocore's EC2 client puts into a CopySnapshot made
    in dest from src (handlers.inject_presigned_url_ec2)."""
    import botocore.session
    session = botocore.session.get_session()
    client = session.create_client("ec2", region_name=dest, aws_access_key_id=AKID,
                                   aws_secret_access_key=SECRET, aws_session_token=token)
    got = {}

    def capture(params, **kwargs):
        got["url"] = params["body"]["PresignedUrl"]
        got["body"] = dict(params["body"])
        raise Stop()

    client.meta.events.register_last("before-call.ec2.CopySnapshot", capture)
    with frozen_clock(when):
        try:
            client.copy_snapshot(SourceRegion=src, **params)
        except Stop:
            pass
    return got


def ours_presign(exe, host, region, when, pairs, token):
    env = dict(os.environ, AMIS_TEST_AKID=AKID, AMIS_TEST_SECRET=SECRET)
    env.pop("AMIS_TEST_TOKEN", None)
    if token:
        env["AMIS_TEST_TOKEN"] = token
    epoch = int(when.replace(tzinfo=datetime.timezone.utc).timestamp())
    args = [exe, "presign", host, region, "ec2", str(epoch), "3600"]
    for k, v in pairs:
        args += [k, v]
    r = subprocess.run(args, capture_output=True, env=env)
    if r.returncode != 0:
        return None, r.stderr.decode(errors="replace")
    return r.stdout.decode().strip(), None


def compare_presign(exe, name, params, token=None, src="us-east-1", dest="eu-west-1",
                    when=datetime.datetime(2026, 12, 3, 2, 40, 0)):
    want = boto_presigned_copy(src, dest, params, when, token)
    if "url" not in want:
        ok(False, name + ": botocore made a PresignedUrl")
        return
    url = urlsplit(want["url"])
    # What the URL signs: the body botocore sends, without the URL itself.
    pairs = [(k, str(v)) for k, v in want["body"].items() if k != "PresignedUrl"]
    # The presigner may read the clock its own way (botocore versions
    # differ): sign at the time botocore's URL says.
    signed_at = datetime.datetime.strptime(dict(parse_qsl(url.query))["X-Amz-Date"],
                                           "%Y%m%dT%H%M%SZ")
    got, error = ours_presign(exe, url.netloc, src, signed_at, pairs, token)
    if got is None:
        ok(False, name + ": our presigner ran", error)
        return
    is_eq(sorted(parse_qsl(got, keep_blank_values=True)),
          sorted(parse_qsl(url.query, keep_blank_values=True)),
          name + ": the same query, X-Amz-Signature included")
    is_eq(url.netloc, "ec2.%s.amazonaws.com" % src, name + ": botocore signs for the source")


def main():
    print("# botocore %s from %s" % (botocore.__version__, os.path.dirname(botocore.__file__)))
    tmp = tempfile.mkdtemp(prefix="test_sigv4_botocore.")
    try:
        exe = build(tmp)
        describe = b"Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0"

        compare(exe, "ec2 POST", body=describe)
        compare(exe, "ec2 POST with session token", body=describe, token=TOKEN)
        compare(exe, "empty body", body=b"")
        compare(exe, "empty body with session token", body=b"", token=TOKEN)
        for region in ["us-east-1", "eu-central-1", "ap-southeast-2", "cn-north-1",
                       "us-gov-west-1", "il-central-1"]:
            compare(exe, "region " + region, host="ec2.%s.amazonaws.com" % region,
                    region=region, body=describe)
        compare(exe, "local endpoint with a port", scheme="http", host="127.0.0.1:8773",
                region="us-east-1", body=describe, token=TOKEN)
        compare(exe, "IPv6 endpoint", scheme="http", host="[::1]:8773", region="us-east-1",
                body=describe)
        compare(exe, "IAM ListUsers GET with a query", method="GET", host="iam.amazonaws.com",
                query="Action=ListUsers&Version=2010-05-08", region="us-east-1",
                service="iam")
        compare(exe, "no content type", ctype=None, body=b"x=1")
        compare(exe, "content type with runs of spaces",
                ctype="application/x-www-form-urlencoded;   charset=utf-8 ", body=describe)
        compare(exe, "binary body", body=bytes(range(256)) * 3)
        compare(exe, "100 KiB body", body=b"a=" + b"x" * 102400)
        compare(exe, "token with +, / and =", body=describe,
                token="FwoGZXIvYXdzE+/abc/def+ghi==")
        compare(exe, "another date", body=describe,
                when=datetime.datetime(2031, 2, 28, 23, 59, 59))
        compare(exe, "end of year", body=describe,
                when=datetime.datetime(2024, 12, 31, 23, 59, 59), token=TOKEN)

        # Our form encoder: odd characters survive a round trip through the
        # form decoding servers do, the body is plain ASCII, and botocore
        # signs it the same.
        pairs = [
            ("InstanceSpecification.InstanceId", "i-0123456789abcdef0"),
            ("Description", "nightly backup: 2024-05-01 10:00 (PostgreSQL 15) ✓ é 日本"),
            ("TagSpecification.1.ResourceType", "snapshot"),
            ("TagSpecification.1.Tag.1.Key", "ami-snapshot:label"),
            ("TagSpecification.1.Tag.1.Value", "a b*c~d/e+f=g&h%i#j?k;l,m'n\"o<p>q\\r"),
            ("TagSpecification.1.Tag.2.Key", "empty"),
            ("TagSpecification.1.Tag.2.Value", ""),
            ("TagSpecification.1.Tag.3.Key", "ctl"),
            ("TagSpecification.1.Tag.3.Value", "line1\nline2\ttab"),
        ]
        body = form(exe, "CreateSnapshots", pairs)
        ok(re.fullmatch(rb"[A-Za-z0-9._~%&=+-]*", body) is not None,
           "form body uses only unreserved characters, %XX, +, & and =", body)
        ok(b"%20" not in body and b"+" in body and b"%2B" in body,
           "spaces are + (as the SDKs send), a literal + is %2B")
        is_eq(body.decode("ascii"),
              urlencode([("Action", "CreateSnapshots"), ("Version", "2016-11-15")] + pairs),
              "form body is byte for byte what urlencode() (botocore's encoder) makes")
        decoded = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        is_eq(decoded, [("Action", "CreateSnapshots"), ("Version", "2016-11-15")] + pairs,
              "form body decodes to the same pairs, in order")
        compare(exe, "signing our form body", body=body, token=TOKEN)

        # Query-string pre-signing: the PresignedUrl of an encrypted
        # CopySnapshot, as botocore's EC2 client makes it.
        compare_presign(exe, "presigned CopySnapshot",
                        {"SourceSnapshotId": "snap-0123456789abcdef0", "Encrypted": True,
                         "KmsKeyId": "arn:aws:kms:eu-west-1:123456789012:key/abcd-1234"})
        compare_presign(exe, "presigned CopySnapshot with a session token",
                        {"SourceSnapshotId": "snap-0123456789abcdef0", "Encrypted": True},
                        token=TOKEN)
        compare_presign(exe, "presigned CopySnapshot with a description and tags",
                        {"SourceSnapshotId": "snap-0123456789abcdef0",
                         "Description": "copy of nightly: a b/c+d=e",
                         "TagSpecifications": [{"ResourceType": "snapshot", "Tags": [
                             {"Key": "ami-snapshot:name", "Value": "nightly 1"},
                             {"Key": "empty", "Value": ""}]}]},
                        src="ap-southeast-2", dest="us-west-2")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("1..%d" % tests_run)
    return 1 if tests_failed else 0


if __name__ == "__main__":
    sys.exit(main())
