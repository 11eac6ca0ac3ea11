"""Authentication (SigV4, keys, tokens, clocks) and malformed queries."""

import hashlib
import socket
import time
import urllib.parse

from . import support
from .support import (DATA_VOL, ERROR_RE, EXPIRED_AKID, EXPIRED_SECRET, EXPIRED_TOKEN, REGION,
                      STATIC_AKID, STATIC_SECRET, TOKEN_AKID, TOKEN_SECRET, TOKEN_TOKEN, Base,
                      ec2emu, err_code, raw_ec2)

E = None                # the main emulator (support.start_world)


def setUpModule():
    global E
    _, E = support.start_world()


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
