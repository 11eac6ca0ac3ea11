"""A scripted fake EC2 endpoint for test_ec2_http.c (not a test itself).

Listens on 127.0.0.1 on an ephemeral port, prints "PORT <n>" on stdout, and
exits when its stdin closes (the test died or finished) or after 120 s.
Every request's SigV4 signature is checked with the emulator's sigv4 module
(test/emulator/ec2emu/sigv4.py, botocore underneath; region us-east-1,
service ec2, the example key): the Authorization header must be the one
botocore would write, signing host, content-type, x-amz-date and any
x-amz-security-token.  A bad one gets the SignatureDoesNotMatch error EC2
would send.  The form's Action picks the
behaviour; "LastRequest" returns the previous request as XML so the test can
check what the typed operations sent, and Echo's "seen" member counts the
requests received for the action named by its Value.

Run with /usr/bin/python3 (Debian's python3-botocore).
"""

import datetime
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl
from xml.sax.saxutils import escape

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir,
                                "emulator"))
from ec2emu import sigv4  # noqa: E402

AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
REGION = "us-east-1"
NS = 'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"'

last_request = {"pairs": [], "headers": {}}
seen = {}  # requests received per action (Echo's "seen" member reports them)
lock = threading.Lock()


def expected_authorization(method, path, headers, body):
    """The Authorization header botocore's SigV4Auth would send for this
    request at its x-amz-date."""
    amz_date = headers.get("X-Amz-Date", "")
    datetime.datetime.strptime(amz_date, sigv4.SIGV4_TIMESTAMP)  # ValueError: a bad request
    token = headers.get("X-Amz-Security-Token")
    signed = ["host", "x-amz-date"]
    if headers.get("Content-Type") is not None:
        signed.append("content-type")
    if token:
        signed.append("x-amz-security-token")
    signature, _, _ = sigv4.sigv4_signature(
        method, "http://%s%s" % (headers.get("Host"), path), list(headers.items()), signed,
        body, SECRET, REGION, "ec2", amz_date, AKID, token or None)
    return sigv4.authorization_header(AKID, amz_date, REGION, "ec2", signed, signature)


def error_xml(code, message, request_id):
    return ("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error><Code>%s</Code>"
            "<Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>"
            % (escape(code), escape(message), escape(request_id)))


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, so connection reuse is visible

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body, ctype="text/xml;charset=UTF-8", request_id=None):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        if request_id:
            self.send_header("x-amzn-RequestId", request_id)
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        try:
            pairs = parse_qsl(body.decode("ascii"), keep_blank_values=True, strict_parsing=True)
        except (UnicodeDecodeError, ValueError) as e:
            return self.reply(400, error_xml("MalformedQueryString", str(e), "mq-1"))
        form = dict(pairs)
        action = form.get("Action", "")
        headers = {k: v for k, v in self.headers.items()}
        with lock:
            seen[action] = seen.get(action, 0) + 1
        if action != "LastRequest":
            with lock:
                last_request["pairs"] = pairs
                last_request["headers"] = headers
                last_request["method"] = self.command
                last_request["path"] = self.path
        try:
            want = expected_authorization(self.command, self.path, self.headers, body)
        except Exception as e:  # noqa: BLE001 - any failure is a bad request
            return self.reply(400, error_xml("IncompleteSignature", repr(e), "sig-0"))
        if self.headers.get("Authorization") != want:
            return self.reply(403, error_xml(
                "SignatureDoesNotMatch",
                "The request signature we calculated does not match the signature you "
                "provided.", "sig-1"))
        getattr(self, "act_" + action, self.act_unknown)(form)

    def act_unknown(self, form):
        self.reply(400, error_xml("InvalidAction", "The action %s is not valid for this "
                                  "web service." % form.get("Action"), "inv-1"))

    def act_Echo(self, form):
        h = self.headers
        xml = ["<EchoResponse %s><requestId>echo-body-id</requestId>" % NS]
        for name, value in [("method", self.command), ("path", self.path),
                            ("host", h.get("Host", "")),
                            ("contentType", h.get("Content-Type", "")),
                            ("expect", h.get("Expect", "(none)")),
                            ("token", h.get("X-Amz-Security-Token", "(none)")),
                            ("clientPort", str(self.client_address[1])),
                            ("value", form.get("Value", "")),
                            ("seen", str(seen.get(form.get("Value", ""), 0)))]:
            xml.append("<%s>%s</%s>" % (name, escape(value), name))
        xml.append("</EchoResponse>")
        self.reply(200, "".join(xml), request_id="echo-hdr-id")

    def act_LastRequest(self, form):
        with lock:
            pairs = list(last_request["pairs"])
        items = "".join("<item><name>%s</name><value>%s</value></item>"
                        % (escape(k), escape(v)) for k, v in pairs)
        self.reply(200, "<LastRequestResponse %s><pairSet>%s</pairSet></LastRequestResponse>"
                   % (NS, items))

    def act_Sleep(self, form):
        time.sleep(float(form.get("Seconds", "2")))
        try:
            self.reply(200, "<SleepResponse %s/>" % NS)
        except OSError:
            pass

    def act_Throttle(self, form):
        self.reply(503, error_xml("RequestLimitExceeded", "Request limit exceeded.",
                                  "throttle-1"))

    def act_BadGateway(self, form):
        self.reply(502, "<html><body><h1>502 Bad Gateway</h1></body></html>",
                   ctype="text/html", request_id="lb-7")

    def act_Leak(self, form):
        # A server that quotes what it received, secrets included.
        self.reply(400, error_xml(
            "SignatureDoesNotMatch",
            "Canonical request had x-amz-security-token:%s and %s"
            % (self.headers.get("X-Amz-Security-Token", ""), self.headers.get("Authorization")),
            "leak-1"))

    def act_Huge(self, form):
        size = 9 * 1024 * 1024
        self.send_response(200)
        self.send_header("Content-Type", "text/xml")
        self.send_header("Content-Length", str(size))
        self.end_headers()
        chunk = b"x" * 65536
        try:
            for _ in range(size // len(chunk)):
                self.wfile.write(chunk)
        except OSError:
            pass

    def act_Close(self, form):
        self.close_connection = True  # no response at all

    act_DescribeClose = act_Close  # the same, for an action libcurl may send again

    def act_CreateSnapshots(self, form):
        if form.get("DryRun") == "true":
            return self.reply(412, error_xml(
                "DryRunOperation", "Request would have succeeded, but DryRun flag is set.",
                "dry-1"))
        items = ""
        for i, vol in enumerate(["vol-0aaaaaaaaaaaaaaa1", "vol-0aaaaaaaaaaaaaaa2"]):
            items += ("<item><description>%s</description><encrypted>false</encrypted>"
                      "<ownerId>123456789012</ownerId><progress></progress>"
                      "<snapshotId>snap-0bbbbbbbbbbbbbbb%d</snapshotId>"
                      "<startTime>2024-05-01T10:00:00.000Z</startTime><state>pending</state>"
                      "<volumeId>%s</volumeId><volumeSize>%d</volumeSize></item>"
                      % (escape(form.get("Description", "")), i + 1, vol, 8 * (i + 1)))
        self.reply(200, "<CreateSnapshotsResponse %s><requestId>cs-1</requestId>"
                   "<snapshotSet>%s</snapshotSet></CreateSnapshotsResponse>" % (NS, items))

    def act_DescribeSnapshots(self, form):
        if form.get("Filter.1.Name", "").startswith("tag:") and \
                form.get("Filter.1.Value.1") == "restore-test":
            return self.restore_snapshots(form)
        items = ""
        i = 1
        while "SnapshotId.%d" % i in form:
            items += ("<item><snapshotId>%s</snapshotId><volumeId>vol-%017x</volumeId>"
                      "<status>completed</status><progress>100%%</progress>"
                      "<volumeSize>8</volumeSize></item>"
                      % (escape(form["SnapshotId.%d" % i]), i))
            i += 1
        self.reply(200, "<DescribeSnapshotsResponse %s><requestId>ds-1</requestId>"
                   "<snapshotSet>%s</snapshotSet></DescribeSnapshotsResponse>" % (NS, items))

    # ---- The restore command's calls (test_restore_ec2.c). ----
    def restore_snapshots(self, form):
        """Two pages of tagged snapshots: a set of two and a stray one."""
        page2 = form.get("NextToken") == "page-2"
        if form.get("NextToken") not in (None, "page-2"):
            return self.reply(400, error_xml("InvalidParameterValue", "bad token", "nt-1"))
        tags = lambda rid, mp: ("<tagSet><item><key>ami-snapshot:request-id</key><value>%s"
                                "</value></item><item><key>ami-snapshot:mount-point</key>"
                                "<value>%s</value></item><item><key>Name</key><value>a &amp; b"
                                "</value></item><item><key>empty</key></item></tagSet>"
                                % (rid, mp))
        if not page2:
            items = ("<item><snapshotId>snap-00000000000000001</snapshotId><volumeId>"
                     "vol-00000000000000001</volumeId><status>completed</status><startTime>"
                     "2026-12-02T10:00:00.000Z</startTime><volumeSize>8</volumeSize>%s</item>"
                     % tags("r-1", "/var/lib/postgresql"))
            nxt = "<nextToken>page-2</nextToken>"
        else:
            items = ("<item><snapshotId>snap-00000000000000002</snapshotId><status>pending"
                     "</status><unknownMember>x</unknownMember>%s</item>"
                     "<item><snapshotId>snap-00000000000000003</snapshotId></item>"
                     % tags("r-1", "/wal"))
            nxt = ""
        self.reply(200, "<DescribeSnapshotsResponse %s><requestId>rs-1</requestId>"
                   "<snapshotSet>%s</snapshotSet>%s</DescribeSnapshotsResponse>"
                   % (NS, items, nxt))

    def act_CreateVolume(self, form):
        if form.get("ClientToken") == "throttle-once" and seen.get("CreateVolume") == 1:
            return self.reply(503, error_xml("RequestLimitExceeded", "Request limit exceeded.",
                                             "cv-throttle"))
        if form.get("SnapshotId") == "snap-0000000000000dead":
            return self.reply(400, error_xml("InvalidSnapshot.NotFound", "The snapshot "
                                             "'snap-0000000000000dead' does not exist.", "cv-2"))
        self.reply(200, "<CreateVolumeResponse %s><requestId>cv-1</requestId><volumeId>"
                   "vol-0cccccccccccccccc</volumeId><size>8</size><snapshotId>%s</snapshotId>"
                   "<availabilityZone>%s</availabilityZone><status>creating</status>"
                   "</CreateVolumeResponse>" % (NS, escape(form.get("SnapshotId", "")),
                                                escape(form.get("AvailabilityZone", ""))))

    def act_AttachVolume(self, form):
        self.reply(200, "<AttachVolumeResponse %s><requestId>av-1</requestId><volumeId>%s"
                   "</volumeId><instanceId>%s</instanceId><device>%s</device><status>attaching"
                   "</status></AttachVolumeResponse>"
                   % (NS, escape(form.get("VolumeId", "")), escape(form.get("InstanceId", "")),
                      escape(form.get("Device", ""))))

    def act_DetachVolume(self, form):
        self.reply(200, "<DetachVolumeResponse %s><requestId>dt-1</requestId><volumeId>%s"
                   "</volumeId><status>detaching</status></DetachVolumeResponse>"
                   % (NS, escape(form.get("VolumeId", ""))))

    def act_DeleteVolume(self, form):
        self.reply(200, "<DeleteVolumeResponse %s><requestId>dl-1</requestId><return>true"
                   "</return></DeleteVolumeResponse>" % NS)

    def act_CreateTags(self, form):
        self.reply(200, "<CreateTagsResponse %s><requestId>ct-1</requestId>"
                   "<return>true</return></CreateTagsResponse>" % NS)

    def act_DescribeInstances(self, form):
        iid = form.get("InstanceId.1", "")
        if iid == "i-0000000000000dead":
            return self.reply(400, error_xml(
                "InvalidInstanceID.NotFound",
                "The instance ID '%s' does not exist" % iid, "di-404"))
        self.reply(200, (
            "<DescribeInstancesResponse %s><requestId>di-1</requestId><reservationSet><item>"
            "<reservationId>r-1</reservationId><instancesSet><item>"
            "<instanceId>%s</instanceId><imageId>ami-0123456789abcdef0</imageId>"
            "<architecture>x86_64</architecture><rootDeviceType>ebs</rootDeviceType>"
            "<rootDeviceName>/dev/xvda</rootDeviceName><virtualizationType>hvm"
            "</virtualizationType><enaSupport>true</enaSupport><bootMode>uefi-preferred"
            "</bootMode><blockDeviceMapping><item><deviceName>/dev/xvda</deviceName><ebs>"
            "<volumeId>vol-0aaaaaaaaaaaaaaa1</volumeId><deleteOnTermination>true"
            "</deleteOnTermination></ebs></item></blockDeviceMapping></item></instancesSet>"
            "</item></reservationSet></DescribeInstancesResponse>") % (NS, escape(iid)))

    def dry_run(self, form):
        if form.get("DryRun") == "true":
            self.reply(412, error_xml(
                "DryRunOperation", "Request would have succeeded, but DryRun flag is set.",
                "dry-1"))
            return True
        return False

    def act_RegisterImage(self, form):
        if not self.dry_run(form):
            self.reply(200, "<RegisterImageResponse %s><requestId>ri-1</requestId>"
                       "<imageId>ami-0ddddddddddddddd1</imageId></RegisterImageResponse>" % NS)

    def act_CreateImage(self, form):
        if not self.dry_run(form):
            self.reply(200, "<CreateImageResponse %s><requestId>ci-1</requestId>"
                       "<imageId>ami-0ddddddddddddddd2</imageId></CreateImageResponse>" % NS)

    def act_DeregisterImage(self, form):
        self.reply(200, "<DeregisterImageResponse %s><requestId>dr-1</requestId>"
                   "<return>true</return></DeregisterImageResponse>" % NS)

    def act_DescribeImages(self, form):
        """One answer per caller: the helper's images (test_ec2_http.c), or
        the restore command's image of a set (test_restore_ec2.c,
        ami-0123456789abcdef0; other ami-0... ids are unknown)."""
        if form.get("Filter.1.Name"):  # ours by tag or name: none
            return self.reply(200, "<DescribeImagesResponse %s><requestId>dim-0</requestId>"
                              "<imagesSet/></DescribeImagesResponse>" % NS)
        image = form.get("ImageId.1", "")
        if image == "ami-0123456789abcdef0":
            return self.reply(200, (
                "<DescribeImagesResponse %s><requestId>im-1</requestId><imagesSet><item>"
                "<imageId>ami-0123456789abcdef0</imageId><imageState>available</imageState>"
                "<blockDeviceMapping><item><deviceName>/dev/xvda</deviceName><ebs><snapshotId>"
                "snap-0000000000000000a</snapshotId><volumeSize>8</volumeSize></ebs></item>"
                "<item><deviceName>/dev/sdb</deviceName><virtualName>ephemeral0</virtualName>"
                "</item><item><deviceName>/dev/sdf</deviceName><ebs><snapshotId>"
                "snap-0000000000000000b</snapshotId></ebs></item></blockDeviceMapping>"
                "</item></imagesSet></DescribeImagesResponse>") % NS)
        if image.startswith("ami-0") and not image.startswith("ami-0d"):
            return self.reply(400, error_xml("InvalidAMIID.NotFound", "The image id '[%s]' "
                                             "does not exist" % image, "di-1"))
        self.reply(200, (
            "<DescribeImagesResponse %s><requestId>dim-1</requestId><imagesSet><item>"
            "<imageId>%s</imageId><imageState>pending</imageState><architecture>arm64"
            "</architecture><rootDeviceName>/dev/xvda</rootDeviceName><blockDeviceMapping>"
            "<item><deviceName>/dev/xvda</deviceName><ebs><snapshotId>snap-0bbbbbbbbbbbbbbb1"
            "</snapshotId><volumeSize>8</volumeSize><volumeType>gp3</volumeType></ebs></item>"
            "<item><deviceName>/dev/sdf</deviceName><ebs><volumeSize>16</volumeSize></ebs>"
            "</item></blockDeviceMapping></item></imagesSet></DescribeImagesResponse>")
            % (NS, escape(form.get("ImageId.1", ""))))

    def act_DescribeVolumes(self, form):
        """The first volume asked for is in use as /dev/sdf on our instance,
        the second available; each with a size, type and performance.  Filtered
        on ami-snapshot:drill-instance (verify --cleanup): one volume a drill
        left, attached to that instance."""
        items = ""
        if form.get("Filter.1.Name") == "tag:ami-snapshot:drill-instance":
            items = ("<item><volumeId>vol-0dddddddddddddddd</volumeId><status>in-use</status>"
                     "<attachmentSet><item><instanceId>%s</instanceId><device>/dev/sdh</device>"
                     "<status>attached</status></item></attachmentSet></item>"
                     % escape(form.get("Filter.1.Value.1", "")))
        i = 1
        while "VolumeId.%d" % i in form:
            vid = escape(form["VolumeId.%d" % i])
            if i == 1:
                state, att = "in-use", (
                    "<item><volumeId>%s</volumeId><instanceId>i-0a1b2c3d4e5f60718</instanceId>"
                    "<device>/dev/sdf</device><status>attached</status></item>" % vid)
            else:
                state, att = "available", ""
            items += ("<item><volumeId>%s</volumeId><size>%d</size><volumeType>gp3</volumeType>"
                      "<iops>3000</iops><throughput>125</throughput><status>%s</status>"
                      "<attachmentSet>%s</attachmentSet></item>" % (vid, 8 * i, state, att))
            i += 1
        self.reply(200, "<DescribeVolumesResponse %s><requestId>dv-1</requestId>"
                   "<volumeSet>%s</volumeSet></DescribeVolumesResponse>" % (NS, items))


class QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        pass  # clients that hang up on purpose (timeouts, oversized bodies)


def watch_stdin():
    sys.stdin.read()
    os._exit(0)


def main():
    server = QuietServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=watch_stdin, daemon=True).start()
    deadline = threading.Timer(120, lambda: os._exit(3))
    deadline.daemon = True
    deadline.start()
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
