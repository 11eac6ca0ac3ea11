#!/usr/bin/env python3
"""Writes the seed corpora under test/fuzz/corpus/ from the unit tests.

The XML and JSON bodies are the string literals of test/unit/test_ec2.c,
test_xml.c and test_creds.c (so the seeds follow the tests); protocol frames
are built here.  Run from anywhere; it replaces corpus/<target>/ wholesale.
Seeds only: libFuzzer's findings are not written back here.
"""
import hashlib
import os
import re
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
UNIT = os.path.join(HERE, "..", "unit")
MACROS = {
    "NS": b'xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"',
    "SECRET": b"wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY",
    "TOKEN": b"IQoJb3JpZ2luX2VjTOKENVALUEFORTESTS",
    "KEYID": b"ASIAEXAMPLEKEYID0001",
}
TOKEN_RE = re.compile(r'"(?:[^"\\\n]|\\.)*"|\b(?:%s)\b' % "|".join(MACROS))
ESCAPES = {"n": b"\n", "t": b"\t", "r": b"\r", '"': b'"', "\\": b"\\", "'": b"'"}


def unescape(lit):
    out, i = b"", 0
    while i < len(lit):
        ch = lit[i]
        if ch == "\\":
            out += ESCAPES.get(lit[i + 1], lit[i + 1].encode())
            i += 2
        else:
            out += ch.encode()
            i += 1
    return out


def literals(path):
    """Each run of adjacent string literals (and macros) in a C file, joined."""
    text = open(path, encoding="utf-8").read()
    runs, cur, end = [], b"", None
    for m in TOKEN_RE.finditer(text):
        if end is not None and text[end:m.start()].strip() != "":
            runs.append(cur)
            cur = b""
        tok = m.group(0)
        cur += MACROS[tok] if tok in MACROS else unescape(tok[1:-1])
        end = m.end()
    runs.append(cur)
    return runs


def reset(target):
    d = os.path.join(HERE, "corpus", target)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    return d


def put(d, data, name):
    h = hashlib.sha1(data).hexdigest()[:8]
    with open(os.path.join(d, "%s-%s" % (name, h)), "wb") as f:
        f.write(data)


def ec2_corpus():
    d = reset("fuzz_ec2_xml")
    # Selector byte: see fuzz_ec2_xml.c.  Status index 2 = 400 (bits 5-7).
    bodies = set()
    for f in ("test_ec2.c", "test_xml.c"):
        bodies.update(b for b in literals(os.path.join(UNIT, f)) if b.startswith(b"<") and len(b) > 12)
    for b in sorted(bodies):
        if b"CreateSnapshotsResponse" in b:
            put(d, b"\x00" + b, "create-snapshots")
            put(d, bytes([3 | 0 << 2]) + b, "response-create-snapshots")
        elif b"DescribeSnapshotsResponse" in b:
            put(d, b"\x01" + b, "describe-snapshots")
            put(d, bytes([3 | 1 << 2]) + b, "response-describe-snapshots")
        elif b"DescribeInstancesResponse" in b:
            put(d, b"\x02" + b, "describe-instances")
            put(d, bytes([3 | 2 << 2]) + b, "response-describe-instances")
        elif b"CreateTagsResponse" in b:
            put(d, bytes([3 | 3 << 2]) + b, "response-create-tags")
        elif b"Error" in b:
            put(d, bytes([3 | 2 << 5]) + b, "response-error")
            put(d, bytes([3 | 1 << 4 | 4 << 5]) + b, "response-error-dryrun")
        else:
            put(d, b"\x03" + b, "xml")


def json_corpus():
    d = reset("fuzz_imds_json")
    n = 0
    for b in literals(os.path.join(UNIT, "test_creds.c")):
        if b.lstrip().startswith((b"{", b"<")) or b'"Code"' in b or b"instanceId" in b:
            put(d, b, "creds-test")
            n += 1
    creds = (b'{\n  "Code" : "Success",\n  "LastUpdated" : "2026-11-26T06:20:00Z",\n'
             b'  "Type" : "AWS-HMAC",\n  "AccessKeyId" : "%s",\n  "SecretAccessKey" : "%s",\n'
             b'  "Token" : "%s",\n  "Expiration" : "2026-11-26T12:34:56Z"\n}\n'
             % (MACROS["KEYID"], MACROS["SECRET"], MACROS["TOKEN"]))
    put(d, creds, "role-credentials")
    put(d, creds.replace(b"Success", b"Failure"), "role-credentials-failure")


def config_corpus():
    d = reset("fuzz_config")
    put(d, b"[helper]\nsocket = /run/x/h.sock\nallowed_users = root, 70\n"
           b"freeze_timeout = 2500ms\nclient_timeout = 2min\n[filesystems]\n"
           b"allow = /var/lib/postgresql, /srv/wal\nallow = /srv/ts\n"
           b"allow_root_filesystem = no\n[volumes]\n/dev/xvdf = vol-0123456789abcdef0\n"
           b"[aws]\nregion = eu-west-1\npreflight_dry_run = off\n[tags]\n"
           b"Environment = production\n", "helper-conf")
    example = os.path.join(HERE, "..", "..", "packaging", "helper.conf.example")
    if os.path.exists(example):
        put(d, open(example, "rb").read(), "helper-conf-example")
    put(d, b"# a comment\n; another comment\n[default]\naws_access_key_id=AKIADEFAULT\n"
           b"aws_secret_access_key=%s\n\n[ prod ]\r\n  AWS_Access_Key_ID   =   AKIAPROD   \r\n"
           b"\taws_secret_access_key = %s ; inline comment\r\n  aws_session_token = %s\r\n"
           b"region = eu-west-1\r\n[onlykey]\naws_access_key_id = AKIAONLY\n"
           % (MACROS["SECRET"], MACROS["SECRET"], MACROS["TOKEN"]), "credentials-file")
    put(d, b"[default]\naws_access_key_id = A\nthis is not ini\n", "credentials-bad")
    # Found by fuzz_config: a signed overflow in parse_duration_ms (config.c).
    d_name = os.path.join(d, "regress-duration-overflow")
    with open(d_name, "wb") as f:
        f.write(b"[helper]\nfreeze_timeout = 391993311566327972min\n")


def frame(msg_type, fields):
    payload = b""
    for tag, value in fields:
        if isinstance(value, str):
            value = value.encode()
        payload += struct.pack(">HH", tag, len(value)) + value
    return b"AMSP" + struct.pack(">HHI", 1, msg_type, len(payload)) + payload


def protocol_corpus():
    d = reset("fuzz_protocol")
    rid = "84c34e1a-43a5-452a-a195-c31b0eb45c92"
    frames = {
        "prepare": frame(1, [(1, rid), (2, "nightly"), (3, b"\x01"), (4, "/var/lib/postgresql/16/main"),
                             (5, "/srv/wal/pg_wal"), (6, "/srv/ts1"), (6, "/srv/ts2"),
                             (7, "7301234567890123456"), (8, "160004")]),
        "prepared": frame(2, [(20, "i-0a1b2c3d4e5f60718"), (21, "eu-west-1"),
                              (22, "vol-000abc00000000001"), (22, "vol-000abc00000000002"),
                              (23, "/var/lib/postgresql"), (23, "/srv/wal")]),
        "snapshot": frame(3, [(30, "0/50004C8"), (31, struct.pack(">I", 1))]),
        "pending": frame(4, [(40, "snap-07a35da2447b30aae"), (41, "vol-000abc00000000001"),
                             (42, struct.pack(">Q", 37007)), (43, struct.pack(">Q", 120000))]),
        "finish": frame(5, [(50, "0/57948A0"), (31, struct.pack(">I", 1)),
                            (51, "START WAL LOCATION: 0/50004C8 (file 000000010000000000000005)\n"),
                            (52, "16384 /srv/ts1\n")]),
        "done": frame(6, [(60, "tagging was slow")]),
        "done-empty": frame(6, []),
        "abort": frame(7, [(73, "statement timeout")]),
        "error": frame(8, [(70, "RequestLimitExceeded"), (71, "Request limit exceeded."),
                           (72, "snapshot"), (40, "snap-07a35da2447b30aae")]),
        "bad-version": b"AMSP" + struct.pack(">HHI", 2, 1, 0),
        "status": frame(9, []),
        "thaw": frame(11, [(73, "on call")]),
        "status-reply": frame(10, [(80, "frozen"), (1, rid), (2, "nightly"),
                                   (23, "/var/lib/postgresql"), (81, struct.pack(">Q", 1234567)),
                                   (73, "the call made while frozen is being abandoned")]),
        "w-ready": frame(101, [(100, struct.pack(">I", 1))]),
        "w-describe-instance": frame(103, [(100, struct.pack(">I", 2)),
                                           (101, struct.pack(">I", 30000)),
                                           (20, "i-0a1b2c3d4e5f60718")]),
        "w-create-snapshots": frame(105, [(100, struct.pack(">I", 3)),
                                          (101, struct.pack(">I", 9950)), (102, b"\x00"),
                                          (103, b"\x01"), (20, "i-0a1b2c3d4e5f60718"),
                                          (104, "ami_snapshot nightly"), (105, b"\x01"),
                                          (106, "vol-000abc00000000009"), (107, "Name"),
                                          (108, "nightly"), (107, "ami-snapshot:request-id"),
                                          (108, rid)]),
        "w-create-tags": frame(107, [(100, struct.pack(">I", 4)), (101, struct.pack(">I", 30000)),
                                     (109, "snap-07a35da2447b30aae"),
                                     (107, "ami-snapshot:backup-state"), (108, "failed")]),
        "w-find-snapshots": frame(109, [(100, struct.pack(">I", 5)),
                                        (101, struct.pack(">I", 30000)),
                                        (107, "ami-snapshot:request-id"), (108, rid)]),
        "w-abandon": frame(111, [(100, struct.pack(">I", 3))]),
        "w-ok-ready": frame(100, [(100, struct.pack(">I", 1)), (20, "i-0a1b2c3d4e5f60718"),
                                  (21, "eu-west-1")]),
        "w-ok-instance": frame(100, [(100, struct.pack(">I", 2)), (110, "/dev/xvda"),
                                     (111, "/dev/xvda"), (22, "vol-000abc00000000009"),
                                     (111, "/dev/sdf"), (22, "vol-000abc00000000001")]),
        "w-ok-snapshots": frame(100, [(100, struct.pack(">I", 3)),
                                      (40, "snap-07a35da2447b30aae"),
                                      (41, "vol-000abc00000000001"), (112, "pending")]),
        "prepare-image": frame(1, [(1, rid), (2, "nightly"), (3, b"\x01"), (4, "/srv/pg"),
                                   (90, "register"), (91, b"\x01")]),
        "pending-image": frame(4, [(40, "snap-07a35da2447b30aae"), (41, "vol-000abc00000000001"),
                                   (42, struct.pack(">Q", 37007)), (43, struct.pack(">Q", 9)),
                                   (92, "ami-0123456789abcdef0")]),
        "w-describe-image": frame(113, [(100, struct.pack(">I", 6)), (101, struct.pack(">I", 30000)),
                                        (107, "ami-snapshot:request-id"), (108, rid)]),
        "w-describe-volumes": frame(115, [(100, struct.pack(">I", 7)),
                                          (101, struct.pack(">I", 30000)),
                                          (22, "vol-000abc00000000001")]),
        "w-register-image": frame(117, [(100, struct.pack(">I", 8)), (101, struct.pack(">I", 30000)),
                                        (102, b"\x00"), (2, "nightly"), (113, "x86_64"),
                                        (114, "hvm"), (115, b"\x01"), (116, "uefi"),
                                        (110, "/dev/xvda"), (111, "/dev/xvda"),
                                        (40, "snap-07a35da2447b30aae"), (125, "gp3"),
                                        (126, struct.pack(">I", 8)), (127, struct.pack(">I", 3000)),
                                        (128, struct.pack(">I", 125)), (124, b"\x01")]),
        "w-create-image": frame(119, [(100, struct.pack(">I", 9)), (101, struct.pack(">I", 9950)),
                                      (102, b"\x00"), (103, b"\x01"), (20, "i-0a1b2c3d4e5f60718"),
                                      (2, "nightly")]),
        "w-deregister-image": frame(121, [(100, struct.pack(">I", 10)),
                                          (101, struct.pack(">I", 30000)),
                                          (92, "ami-0123456789abcdef0")]),
        "w-ok-image": frame(100, [(100, struct.pack(">I", 6)), (92, "ami-0123456789abcdef0"),
                                  (129, "pending"), (113, "x86_64"), (122, "abc"),
                                  (123, "marketplace"), (111, "/dev/xvda"), (40, ""),
                                  (125, "gp3"), (126, struct.pack(">I", 8)),
                                  (127, struct.pack(">I", 0)), (128, struct.pack(">I", 0)),
                                  (124, b"\x01")]),
        "w-error": frame(102, [(100, struct.pack(">I", 3)), (70, "RequestLimitExceeded"),
                               (71, "EC2 CreateSnapshots: Request limit exceeded.")]),
    }
    for name, f in frames.items():
        put(d, f, name)


def restore_corpus():
    d = reset("fuzz_restore")
    # Selector byte: see fuzz_restore.c.
    tags = b"".join(b"<item><key>ami-snapshot:%s</key><value>%s</value></item>" % kv for kv in (
        (b"request-id", b"r-1"), (b"backup-state", b"stopped"), (b"pg-version", b"150014"),
        (b"system-identifier", b"7300000000000000001"),
        (b"data-directory", b"/var/lib/postgresql/15/main"), (b"volume-count", b"2"),
        (b"start-lsn", b"0/5000028"), (b"stop-lsn", b"0/5000100"), (b"timeline", b"1"),
        (b"backup-label-1", b"U1RBUlQgV0FMIExPQ0FUSU9OOiAwLzUwMDAwMjgK"),
        (b"backup-label-2", b"TEFCRUw6IG5pZ2h0bHkK")))
    items = b"".join(
        b"<item><snapshotId>snap-0000000000000000%d</snapshotId><volumeId>vol-0000000000000000%d"
        b"</volumeId><status>completed</status><startTime>2026-12-02T10:00:00.000Z</startTime>"
        b"<volumeSize>8</volumeSize><tagSet>%s<item><key>ami-snapshot:mount-point</key><value>%s"
        b"</value></item><item><key>ami-snapshot:fstype</key><value>ext4</value></item></tagSet>"
        b"</item>" % (i, i, tags, mp) for i, mp in ((1, b"/var/lib/postgresql"), (2, b"/srv/wal")))
    put(d, b"\x00<DescribeSnapshotsResponse><snapshotSet>%s</snapshotSet><nextToken>t</nextToken>"
           b"</DescribeSnapshotsResponse>" % items, "describe-snapshots")
    put(d, b"\x01<DescribeImagesResponse><imagesSet><item><imageId>ami-0123456789abcdef0</imageId>"
           b"<imageState>available</imageState><blockDeviceMapping><item><deviceName>/dev/xvda"
           b"</deviceName><ebs><snapshotId>snap-0000000000000000a</snapshotId></ebs></item><item>"
           b"<deviceName>/dev/sdb</deviceName><virtualName>ephemeral0</virtualName></item>"
           b"</blockDeviceMapping></item></imagesSet></DescribeImagesResponse>", "describe-images")
    put(d, b"\x02<DescribeVolumesResponse><volumeSet><item><volumeId>vol-0000000000000000c"
           b"</volumeId><status>in-use</status><attachmentSet><item><instanceId>i-0a1b2c3d4e5f60718"
           b"</instanceId><device>/dev/sdf</device><status>attached</status></item></attachmentSet>"
           b"</item></volumeSet></DescribeVolumesResponse>", "describe-volumes")
    put(d, b"\x03<CreateVolumeResponse><volumeId>vol-0000000000000000c</volumeId><status>creating"
           b"</status></CreateVolumeResponse>", "create-volume")
    put(d, b"\x04" + b"16400 /var/lib/postgresql/ts1\n16401 /srv/other place/ts2\n", "tablespace-map")
    put(d, b"\x05U1RBUlQgV0FMIExPQ0FUSU9OOiAwLzUwMDAwMjgK", "base64")
    put(d, b"\x06/etc/postgresql/15/main/../x", "path")


def lifecycle_corpus():
    d = reset("fuzz_lifecycle")
    # Selector byte: see fuzz_lifecycle.c.
    tags = (b"<tagSet><item><key>ami-snapshot:request-id</key><value>r-1</value></item>"
            b"<item><key>ami-snapshot:name</key><value>nightly</value></item><item><key>"
            b"ami-snapshot:backup-state</key><value>stopped</value></item></tagSet>")
    put(d, b"\x00<DescribeSnapshotsResponse><snapshotSet><item><snapshotId>"
           b"snap-0000000000000000a</snapshotId><status>error</status><statusMessage>gone"
           b"</statusMessage><progress>40%</progress><startTime>2026-12-02T01:00:00.000Z"
           b"</startTime><volumeSize>8</volumeSize>" + tags + b"</item></snapshotSet>"
           b"<nextToken>t</nextToken></DescribeSnapshotsResponse>", "describe-snapshots")
    put(d, b"\x01<DescribeImagesResponse><imagesSet><item><imageId>ami-0123456789abcdef0"
           b"</imageId><imageState>failed</imageState><stateReason><message>x</message>"
           b"</stateReason><creationDate>2026-11-29T03:05:00.000Z</creationDate>"
           b"<blockDeviceMapping><item><ebs><snapshotId>snap-0000000000000000a</snapshotId>"
           b"</ebs></item></blockDeviceMapping>" + tags + b"</item></imagesSet>"
           b"</DescribeImagesResponse>", "describe-images")
    put(d, b"\x02<LockSnapshotResponse><snapshotId>snap-0000000000000000a</snapshotId>"
           b"<lockState>governance</lockState><lockDuration>30</lockDuration><coolOffPeriod>2"
           b"</coolOffPeriod><lockExpiresOn>2027-01-01T00:00:00.000Z</lockExpiresOn>"
           b"</LockSnapshotResponse>", "lock")
    put(d, b"\x03<CopySnapshotResponse><snapshotId>snap-0000000000000000b</snapshotId>"
           b"</CopySnapshotResponse>", "copy")
    put(d, b"\x04nightly-*:last=7,within=2d,daily=7,weekly=4,monthly=12,grace=6h,keep-failed",
        "policy")
    put(d, b"\x052026-12-03T01:00:00.123Z", "time")


if __name__ == "__main__":
    lifecycle_corpus()
    restore_corpus()
    ec2_corpus()
    json_corpus()
    config_corpus()
    protocol_corpus()
    for t in sorted(os.listdir(os.path.join(HERE, "corpus"))):
        print("%s: %d seeds" % (t, len(os.listdir(os.path.join(HERE, "corpus", t)))))
