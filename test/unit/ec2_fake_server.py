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
import hashlib
import hmac
import os
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, urlsplit
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


def scope_region(headers):
    """The region of the request's SigV4 credential scope: the one endpoint
    serves every region, told apart by what the request was signed for (as
    the emulator does).  The fixed REGION when the header has none."""
    m = re.search(r"Credential=[^/,]+/\d{8}/([a-z0-9-]+)/ec2/aws4_request",
                  headers.get("Authorization", ""))
    return m.group(1) if m else REGION


def expected_authorization(method, path, headers, body):
    """The Authorization header botocore's SigV4Auth would send for this
    request at its x-amz-date, in the region of its credential scope."""
    region = scope_region(headers)
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
        body, SECRET, region, "ec2", amz_date, AKID, token or None)
    return sigv4.authorization_header(AKID, amz_date, region, "ec2", signed, signature)


def presigned_url_problem(url, source_region, dest_region):
    """Why a CopySnapshot PresignedUrl is wrong, or None: recomputed from the
    SigV4 specification ("Authenticating Requests: Using Query Parameters"),
    independently of botocore and of the C signer."""
    parts = urlsplit(url)
    pairs = parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True)
    q = dict(pairs)
    for k, want in [("Action", "CopySnapshot"), ("SourceRegion", source_region),
                    ("DestinationRegion", dest_region), ("X-Amz-Algorithm", "AWS4-HMAC-SHA256"),
                    ("X-Amz-SignedHeaders", "host")]:
        if q.get(k) != want:
            return "%s is %r, not %r" % (k, q.get(k), want)
    cred = q.get("X-Amz-Credential", "").split("/")
    if len(cred) != 5 or cred[0] != AKID or cred[2] != source_region or cred[3] != "ec2":
        return "X-Amz-Credential %r is not signed for %s" % (q.get("X-Amz-Credential"),
                                                             source_region)
    enc = lambda s: quote(s, safe="-_.~")
    canonical_query = "&".join("%s=%s" % (enc(k), enc(v)) for k, v in
                               sorted(pairs) if k != "X-Amz-Signature")
    creq = "\n".join(["GET", parts.path or "/", canonical_query, "host:%s" % parts.netloc, "",
                      "host", hashlib.sha256(b"").hexdigest()])
    amz_date = q.get("X-Amz-Date", "")
    sts = "\n".join(["AWS4-HMAC-SHA256", amz_date, "/".join(cred[1:]),
                     hashlib.sha256(creq.encode()).hexdigest()])
    key = ("AWS4" + SECRET).encode()
    for part in (cred[1], cred[2], "ec2", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    if hmac.new(key, sts.encode(), hashlib.sha256).hexdigest() != q.get("X-Amz-Signature"):
        return "X-Amz-Signature does not match"
    return None


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
        if "MaxResults" in form or form.get("SnapshotId.1", "").startswith("snap-1"):
            return self.lc_describe_snapshots(form)
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
        # The lifecycle's world (an AMI copy's snapshots tagged as their
        # sources): tags set on the resources it has in the request's region.
        w = WORLD.get(scope_region(self.headers))
        i = 1
        while w is not None and "ResourceId.%d" % i in form:
            res = (w["snaps"].get(form["ResourceId.%d" % i]) or
                   w["images"].get(form["ResourceId.%d" % i]))
            j = 1
            while res is not None and "Tag.%d.Key" % j in form:
                res["tags"][form["Tag.%d.Key" % j]] = form.get("Tag.%d.Value" % j, "")
                j += 1
            i += 1
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
        if form.get("ImageId", "").startswith("ami-1"):
            return self.lc_deregister_image(form)
        self.reply(200, "<DeregisterImageResponse %s><requestId>dr-1</requestId>"
                   "<return>true</return></DeregisterImageResponse>" % NS)

    def act_DescribeImages(self, form):
        """One answer per caller: the helper's images (test_ec2_http.c), or
        the restore command's image of a set (test_restore_ec2.c,
        ami-0123456789abcdef0; other ami-0... ids are unknown), or the
        lifecycle's (MaxResults, or an ami-1... id, or a copy's ami-2...)."""
        if "MaxResults" in form or form.get("ImageId.1", "").startswith(("ami-1", "ami-2")):
            return self.lc_describe_images(form)
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


    # ---- The lifecycle's calls (test_lifecycle.c, test_lifecycle_cli.py). ----
    # A small stateful world per region (WORLD below): snapshots and images
    # with tags, listed through filters and pages of at most PAGE items,
    # locked, copied, shared and deleted.  A DryRun answers DryRunOperation.
    def lc_reply(self, action, inner):
        self.reply(200, "<%sResponse %s><requestId>lc-1</requestId>%s</%sResponse>"
                   % (action, NS, inner, action))

    def lc_error(self, code, message):
        self.reply(400, error_xml(code, message, "lc-err"))

    def lc_region(self):
        return WORLD.setdefault(scope_region(self.headers), {"snaps": {}, "images": {}})

    @staticmethod
    def lc_filters(form):
        out, i = [], 1
        while "Filter.%d.Name" % i in form:
            vals, j = [], 1
            while "Filter.%d.Value.%d" % (i, j) in form:
                vals.append(form["Filter.%d.Value.%d" % (i, j)])
                j += 1
            out.append((form["Filter.%d.Name" % i], vals))
            i += 1
        return out

    @staticmethod
    def lc_match(tags, filters, image=None):
        for name, vals in filters:
            if name == "block-device-mapping.snapshot-id" and image is not None:
                if not any(v in image["snaps"] for v in vals):
                    return False
            elif name == "tag-key":
                if not any(v in tags for v in vals):
                    return False
            elif name.startswith("tag:"):
                if tags.get(name[4:]) not in vals:
                    return False
            else:
                return False
        return True

    @staticmethod
    def lc_ids(form, prefix):
        out, i = [], 1
        while "%s.%d" % (prefix, i) in form:
            out.append(form["%s.%d" % (prefix, i)])
            i += 1
        return out

    @staticmethod
    def lc_tagset(tags):
        return "<tagSet>%s</tagSet>" % "".join(
            "<item><key>%s</key><value>%s</value></item>" % (escape(k), escape(v))
            for k, v in tags.items())

    def lc_page(self, form, items):
        """items: sorted list; a page of PAGE and a token (the next index)."""
        if "MaxResults" in form and not 5 <= int(form["MaxResults"]) <= 1000:
            return None, None
        start = int(form.get("NextToken", "lc-0")[3:])
        page = items[start:start + PAGE]
        nxt = "lc-%d" % (start + PAGE) if start + PAGE < len(items) else None
        return page, nxt

    def lc_describe_snapshots(self, form):
        if scope_region(self.headers) == DENIED_REGION:
            return self.reply(403, error_xml(
                "UnauthorizedOperation", "You are not authorized to perform this operation. "
                "User: arn:aws:iam::123456789012:user/x is not authorized to perform: "
                "ec2:DescribeSnapshots", "lc-403"))
        world = self.lc_region()
        if form.get("Owner.1", "self") != "self":
            return self.lc_error("InvalidParameterValue", "only self here")
        ids = self.lc_ids(form, "SnapshotId")
        for sid in ids:
            if sid not in world["snaps"]:
                return self.lc_error("InvalidSnapshot.NotFound",
                                     "The snapshot '%s' does not exist." % sid)
        filters = self.lc_filters(form)
        found = sorted(sid for sid, s in world["snaps"].items()
                       if (not ids or sid in ids) and self.lc_match(s["tags"], filters))
        page, nxt = self.lc_page(form, found)
        if page is None:
            return self.lc_error("InvalidParameterValue", "MaxResults out of range")
        items = ""
        for sid in page:
            s = world["snaps"][sid]
            items += ("<item><snapshotId>%s</snapshotId><volumeId>%s</volumeId><status>%s"
                      "</status><progress>%s</progress><startTime>%s</startTime><volumeSize>%d"
                      "</volumeSize><ownerId>123456789012</ownerId><encrypted>%s</encrypted>%s"
                      "%s<unknownMember>ignored</unknownMember></item>"
                      % (sid, s.get("volume", "vol-ffffffff"), s["state"], s["progress"],
                         s["start"], s["size"], "true" if s.get("encrypted") else "false",
                         "<statusMessage>%s</statusMessage>" % escape(s["message"])
                         if s.get("message") else "", self.lc_tagset(s["tags"])))
        self.lc_reply("DescribeSnapshots", "<snapshotSet>%s</snapshotSet>%s"
                      % (items, "<nextToken>%s</nextToken>" % nxt if nxt else ""))

    def lc_describe_images(self, form):
        world = self.lc_region()
        ids = self.lc_ids(form, "ImageId")
        filters = self.lc_filters(form)
        found = sorted(iid for iid, im in world["images"].items()
                       if (not ids or iid in ids) and self.lc_match(im["tags"], filters, im))
        page, nxt = self.lc_page(form, found)
        if page is None:
            return self.lc_error("InvalidParameterValue", "MaxResults out of range")
        items = ""
        for iid in page:
            im = world["images"][iid]
            bdm = "".join("<item><deviceName>/dev/sd%s</deviceName><ebs><snapshotId>%s"
                          "</snapshotId></ebs></item>" % (chr(ord("f") + k), sid)
                          for k, sid in enumerate(im["snaps"]))
            items += ("<item><imageId>%s</imageId><imageState>%s</imageState><name>%s</name>"
                      "<creationDate>%s</creationDate>%s<blockDeviceMapping><item><deviceName>"
                      "/dev/sdb</deviceName><virtualName>ephemeral0</virtualName></item>%s"
                      "</blockDeviceMapping>%s</item>"
                      % (iid, im["state"], escape(im["name"]), im["created"],
                         "<stateReason><code>x</code><message>%s</message></stateReason>"
                         % escape(im["reason"]) if im.get("reason") else "", bdm,
                         self.lc_tagset(im["tags"])))
        self.lc_reply("DescribeImages", "<imagesSet>%s</imagesSet>%s"
                      % (items, "<nextToken>%s</nextToken>" % nxt if nxt else ""))

    def lc_deregister_image(self, form):
        world = self.lc_region()
        if self.dry_run(form):
            return None
        if world["images"].pop(form["ImageId"], None) is None:
            return self.lc_error("InvalidAMIID.NotFound", "The image id '[%s]' does not exist"
                                 % form["ImageId"])
        self.lc_reply("DeregisterImage", "<return>true</return>")

    @staticmethod
    def lc_lock_xml(sid, lock):
        return ("<snapshotId>%s</snapshotId><lockState>%s</lockState><lockDuration>%d"
                "</lockDuration>%s<lockCreatedOn>2026-12-03T00:00:00.000Z</lockCreatedOn>"
                "<lockExpiresOn>%s</lockExpiresOn>"
                % (sid, lock["state"], lock.get("days", 0),
                   "<coolOffPeriod>%d</coolOffPeriod>" % lock["cool"] if lock.get("cool")
                   else "", lock["expires"]))

    def act_DeleteSnapshot(self, form):
        world = self.lc_region()
        sid = form.get("SnapshotId", "")
        if self.dry_run(form):
            return None
        s = world["snaps"].get(sid)
        if s is None:
            return self.lc_error("InvalidSnapshot.NotFound",
                                 "The snapshot '%s' does not exist." % sid)
        for iid, im in world["images"].items():
            if sid in im["snaps"]:
                return self.lc_error("InvalidSnapshot.InUse", "The snapshot %s is currently "
                                     "in use by %s" % (sid, iid))
        if s.get("lock") and s["lock"]["state"] != "expired":
            return self.lc_error("SnapshotLocked", "The snapshot %s is locked." % sid)
        if s.get("fail_delete"):
            return self.reply(403, error_xml("UnauthorizedOperation", "You are not authorized "
                                             "to perform: ec2:DeleteSnapshot", "lc-403"))
        del world["snaps"][sid]
        self.lc_reply("DeleteSnapshot", "<return>true</return>")

    def act_LockSnapshot(self, form):
        world = self.lc_region()
        sid = form.get("SnapshotId", "")
        mode = form.get("LockMode")
        if self.dry_run(form):
            return None
        if sid not in world["snaps"]:
            return self.lc_error("InvalidSnapshot.NotFound", "The snapshot '%s' does not "
                                 "exist." % sid)
        if mode not in ("governance", "compliance") or \
                ("LockDuration" in form) == ("ExpirationDate" in form) or \
                ("CoolOffPeriod" in form and mode != "compliance"):
            return self.lc_error("InvalidParameterCombination", "bad lock parameters")
        days = int(form.get("LockDuration", "0"))
        expires = form.get("ExpirationDate") or "2027-01-%02dT00:00:00.000Z" % min(days, 28)
        lock = {"state": "compliance-cooloff" if "CoolOffPeriod" in form else mode,
                "days": days, "expires": expires, "cool": int(form.get("CoolOffPeriod", "0"))}
        world["snaps"][sid]["lock"] = lock
        self.lc_reply("LockSnapshot", self.lc_lock_xml(sid, lock))

    def act_UnlockSnapshot(self, form):
        world = self.lc_region()
        sid = form.get("SnapshotId", "")
        s = world["snaps"].get(sid)
        if s is None or not s.get("lock"):
            return self.lc_error("SnapshotLockNotFound" if s else "InvalidSnapshot.NotFound",
                                 "no lock on %s" % sid)
        if s["lock"]["state"] == "compliance":
            return self.lc_error("IncorrectState", "a compliance lock cannot be removed")
        del s["lock"]
        self.lc_reply("UnlockSnapshot", "<snapshotId>%s</snapshotId>" % sid)

    def act_DescribeLockedSnapshots(self, form):
        world = self.lc_region()
        items = ""
        for sid in self.lc_ids(form, "SnapshotId"):
            s = world["snaps"].get(sid)
            if s and s.get("lock"):
                items += "<item><ownerId>123456789012</ownerId>%s</item>" % self.lc_lock_xml(
                    sid, s["lock"])
        self.lc_reply("DescribeLockedSnapshots", "<snapshotSet>%s</snapshotSet>" % items)

    @staticmethod
    def lc_spec_tags(form, rtype):
        i = 1
        while "TagSpecification.%d.ResourceType" % i in form:
            if form["TagSpecification.%d.ResourceType" % i] == rtype:
                tags, j = {}, 1
                while "TagSpecification.%d.Tag.%d.Key" % (i, j) in form:
                    tags[form["TagSpecification.%d.Tag.%d.Key" % (i, j)]] = \
                        form.get("TagSpecification.%d.Tag.%d.Value" % (i, j), "")
                    j += 1
                return tags
            i += 1
        return {}

    def act_CopySnapshot(self, form):
        dest = scope_region(self.headers)
        src = form.get("SourceRegion", "")
        if self.dry_run(form):
            return None
        source = WORLD.get(src, {"snaps": {}})["snaps"].get(form.get("SourceSnapshotId"))
        if source is None:
            return self.lc_error("InvalidSnapshot.NotFound", "The snapshot '%s' does not "
                                 "exist in %s." % (form.get("SourceSnapshotId"), src))
        if form.get("DestinationRegion") not in (None, dest):
            return self.lc_error("InvalidParameterValue", "DestinationRegion is not %s" % dest)
        encrypted = source.get("encrypted") or form.get("Encrypted") == "true"
        if encrypted:
            if "PresignedUrl" not in form:
                return self.lc_error("MissingParameter", "The request must contain the "
                                     "parameter PresignedUrl")
            problem = presigned_url_problem(form["PresignedUrl"], src, dest)
            if problem:
                return self.lc_error("InvalidParameterValue", "PresignedUrl: " + problem)
        world = self.lc_region()
        new = "snap-2%016x" % (len(world["snaps"]) + 1)
        world["snaps"][new] = {"state": "pending", "progress": "0%", "start": source["start"],
                               "size": source["size"], "encrypted": encrypted,
                               "tags": self.lc_spec_tags(form, "snapshot")}
        self.lc_reply("CopySnapshot", "<snapshotId>%s</snapshotId>" % new)

    def act_CopyImage(self, form):
        dest = scope_region(self.headers)
        src = form.get("SourceRegion", "")
        if self.dry_run(form):
            return None
        source = WORLD.get(src, {"images": {}})["images"].get(form.get("SourceImageId"))
        if source is None:
            return self.lc_error("InvalidAMIID.NotFound", "The image id '[%s]' does not exist"
                                 % form.get("SourceImageId"))
        if not form.get("Name"):
            return self.lc_error("MissingParameter", "Name")
        world = self.lc_region()
        token = form.get("ClientToken")
        for iid, im in world["images"].items():
            if token and im.get("token") == token:
                return self.lc_reply("CopyImage", "<imageId>%s</imageId>" % iid)
        new = "ami-2%016x" % (len(world["images"]) + 1)
        snaps = []
        for k, _ in enumerate(source["snaps"]):
            sid = "snap-3%016x" % (len(world["snaps"]) + 1 + k)
            world["snaps"][sid] = {"state": "pending", "progress": "0%", "start": source["created"],
                                   "size": 8, "tags": self.lc_spec_tags(form, "snapshot")}
            snaps.append(sid)
        world["images"][new] = {"state": "pending", "name": form["Name"], "token": token,
                                "created": source["created"], "snaps": snaps,
                                "tags": self.lc_spec_tags(form, "image")}
        self.lc_reply("CopyImage", "<imageId>%s</imageId>" % new)

    def act_ModifySnapshotAttribute(self, form):
        world = self.lc_region()
        sid = form.get("SnapshotId", "")
        if sid not in world["snaps"]:
            return self.lc_error("InvalidSnapshot.NotFound", "no %s" % sid)
        if form.get("Attribute") != "createVolumePermission" or \
                form.get("OperationType") not in ("add", "remove") or \
                not re.fullmatch(r"\d{12}", form.get("UserId.1", "")):
            return self.lc_error("InvalidParameterValue", "bad attribute change")
        shared = world["snaps"][sid].setdefault("shared", set())
        (shared.add if form["OperationType"] == "add" else shared.discard)(form["UserId.1"])
        self.lc_reply("ModifySnapshotAttribute", "<return>true</return>")

    def act_ModifyImageAttribute(self, form):
        world = self.lc_region()
        iid = form.get("ImageId", "")
        if iid not in world["images"]:
            return self.lc_error("InvalidAMIID.NotFound", "no %s" % iid)
        add = form.get("LaunchPermission.Add.1.UserId")
        rem = form.get("LaunchPermission.Remove.1.UserId")
        if bool(add) == bool(rem) or not re.fullmatch(r"\d{12}", add or rem):
            return self.lc_error("InvalidParameterValue", "bad launch permission")
        shared = world["images"][iid].setdefault("shared", set())
        (shared.add if add else shared.discard)(add or rem)
        self.lc_reply("ModifyImageAttribute", "<return>true</return>")

    def act_LcState(self, form):
        """Test control: what the world holds now (ids per region, locks, shares)."""
        items = ""
        for region, w in sorted(WORLD.items()):
            for kind in ("snaps", "images"):
                for rid, x in sorted(w[kind].items()):
                    items += ("<item><region>%s</region><id>%s</id><state>%s</state><lock>%s"
                              "</lock><shared>%s</shared>%s</item>"
                              % (region, rid, x["state"], x.get("lock", {}).get("state", ""),
                                 ",".join(sorted(x.get("shared", ()))), self.lc_tagset(x["tags"])))
        self.lc_reply("LcState", "<itemSet>%s</itemSet>" % items)

    def act_LcSet(self, form):
        """Test control: Id's state (and progress) changes, as time would change it."""
        w = self.lc_region()
        x = w["snaps"].get(form.get("Id")) or w["images"].get(form.get("Id"))
        if x is None:
            return self.lc_error("NotFound", form.get("Id", ""))
        x["state"] = form.get("State", x["state"])
        if "Progress" in form:
            x["progress"] = form["Progress"]
        self.lc_reply("LcSet", "<return>true</return>")


PAGE = 3  # items per page: the fixture spans pages, so NextToken is exercised
DENIED_REGION = "ap-south-2"  # where the policy does not allow DescribeSnapshots
SYSID = "7000000000000000001"


def _tags(rid, name, state="stopped", sysid=SYSID, **extra):
    t = {"ami-snapshot:request-id": rid, "ami-snapshot:name": name,
         "ami-snapshot:backup-state": state, "ami-snapshot:system-identifier": sysid,
         "ami-snapshot:pg-version": "150014", "Name": name}
    t.update(extra)
    return t


def _snap(start, rid, name, state="completed", progress="100%", bstate="stopped", **kw):
    tags = _tags(rid, name, bstate, **kw.pop("tags", {}))
    d = {"state": state, "progress": progress, "start": start, "size": 8, "tags": tags,
         "volume": "vol-0aaaaaaaaaaaaaaa1"}
    d.update(kw)
    return d


# The fixture: this cluster's (SYSID) sets and an AMI in us-east-1, a copy in
# eu-west-1, another cluster's set, an image of someone else's using one of
# our snapshots (InUse).
WORLD = {
    "us-east-1": {
        "snaps": {
            "snap-10000000000000001": _snap("2026-12-02T01:00:00.000Z", "r-night-1", "nightly",
                                            tags={"ami-snapshot:mount-point": "/var/lib/pg",
                                                  "ami-snapshot:verified": "2026-12-02T05:00:00Z"
                                                  " drill-1"}),
            "snap-10000000000000002": _snap("2026-12-02T01:00:00.500Z", "r-night-1", "nightly",
                                            encrypted=True,
                                            tags={"ami-snapshot:mount-point": "/wal"}),
            "snap-10000000000000003": _snap("2026-12-01T01:00:00.000Z", "r-night-2", "nightly",
                                            lock={"state": "governance", "days": 30,
                                                  "expires": "2027-01-01T00:00:00.000Z"},
                                            tags={"ami-snapshot:taken-from": "standby",
                                                  "ami-snapshot:primary-host": "db1:5432",
                                                  "ami-snapshot:standby-sync-state":
                                                  "async"}),
            "snap-10000000000000004": _snap("2026-10-01T01:00:00.000Z", "r-night-old",
                                            "nightly"),
            "snap-10000000000000005": _snap("2026-11-29T03:00:00.000Z", "r-ami-1", "weekly",
                                            tags={"ami-snapshot:image-id":
                                                  "ami-10000000000000001",
                                                  "ami-snapshot:device": "/dev/xvda"}),
            "snap-10000000000000006": _snap("2026-12-03T01:00:00.000Z", "r-pending", "nightly",
                                            state="pending", progress="40%"),
            "snap-10000000000000007": _snap("2026-11-30T01:00:00.000Z", "r-failed", "nightly",
                                            state="error", progress="0%", bstate="failed",
                                            message="The volume was detached"),
            "snap-10000000000000008": _snap("2026-11-28T01:00:00.000Z", "r-other", "nightly",
                                            tags={"ami-snapshot:system-identifier":
                                                  "7000000000000000002"}),
            "snap-10000000000000009": _snap("2026-09-01T01:00:00.000Z", "r-night-older",
                                            "nightly"),
        },
        "images": {
            "ami-10000000000000001": {"state": "available", "name": "weekly-20261129",
                                      "created": "2026-11-29T03:05:00.000Z",
                                      "snaps": ["snap-10000000000000005"],
                                      "tags": _tags("r-ami-1", "weekly")},
            "ami-1000000000000000f": {"state": "available", "name": "someone-elses",
                                      "created": "2026-11-01T00:00:00.000Z",
                                      "snaps": ["snap-10000000000000004"],
                                      "tags": {"Name": "not ours"}},
        },
    },
    "eu-west-1": {
        "snaps": {
            "snap-1000000000000000a": _snap("2026-12-02T01:00:00.000Z", "r-night-1", "nightly",
                                            tags={"ami-snapshot:copy-of":
                                                  "snap-10000000000000001",
                                                  "ami-snapshot:copy-source-region":
                                                  "us-east-1"}),
        },
        "images": {},
    },
}


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
