#!/usr/bin/python3
"""The lifecycle subcommands end to end against the fake EC2 (TAP output).

Runs helper/ami-snapshot list, show, wait, prune, copy, lock, unlock and
share against test/unit/ec2_fake_server.py (every request's signature is
checked for the region it was signed for; the encrypted copy's PresignedUrl
is recomputed) and checks their JSON documents, tables and exit codes
(doc/lifecycle.md).  No install, no root needed (run as root, the command
becomes worker_user after reading the configuration: that path is taken
too).  Fails (Bail out!) rather than skips when the binary or botocore is
missing.
"""

import datetime
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
# AMIS_CLI: another build of the command (the sanitizer build: build/san/ami-snapshot).
BIN = os.environ.get("AMIS_CLI") or os.path.normpath(os.path.join(HERE, "..", "..", "helper",
                                                                 "ami-snapshot"))
AKID = "AKIDEXAMPLE"
SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
SYSID = "7000000000000000001"

tests_run = 0
tests_failed = 0
outputs = []  # everything the command printed: no secret may be in it


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
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
except ImportError as e:
    bail("botocore is not importable: %s (install python3-botocore)" % e)


class Fake:
    def __init__(self):
        self.proc = subprocess.Popen(["/usr/bin/python3", os.path.join(HERE, "ec2_fake_server.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.match(r"PORT (\d+)", line)
        if not m:
            bail("the fake EC2 did not start: %r" % line)
        self.endpoint = "http://127.0.0.1:%s" % m.group(1)

    def call(self, action, region="us-east-1", **params):
        """A signed request of ours (botocore signs it), answer text."""
        import urllib.request
        body = "&".join(["Action=" + action, "Version=2016-11-15"]
                        + ["%s=%s" % (k, v) for k, v in params.items()])
        req = botocore.awsrequest.AWSRequest(
            method="POST", url=self.endpoint + "/", data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
        botocore.auth.SigV4Auth(botocore.credentials.Credentials(AKID, SECRET), "ec2",
                                region).add_auth(req)
        prepared = req.prepare()
        r = urllib.request.Request(prepared.url, data=body.encode(), method="POST",
                                   headers=dict(prepared.headers.items()))
        with urllib.request.urlopen(r, timeout=10) as resp:
            return resp.read().decode()

    def stop(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def run(tmp, args, env_extra=None):
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("AWS_") and k != "PGDATA"}
    env.update(AWS_ACCESS_KEY_ID=AKID, AWS_SECRET_ACCESS_KEY=SECRET,
               AWS_SHARED_CREDENTIALS_FILE=os.path.join(tmp, "none"), HOME=tmp)
    env.update(env_extra or {})
    r = subprocess.run([BIN, "-c", os.path.join(tmp, "helper.conf")] + args,
                       capture_output=True, text=True, env=env, timeout=120)
    outputs.append(r.stdout + r.stderr)
    return r


def js(r):
    try:
        return json.loads(r.stdout)
    except ValueError:
        return None


BACKUP_KEYS = {"request_id", "name", "kind", "region", "system_identifier", "pg_version",
               "backup_state", "state", "reason", "created", "age_seconds", "progress",
               "size_gib", "start_lsn", "stop_lsn", "image", "snapshots", "lock", "copy_of",
               "copies", "verified", "taken_from", "primary_host", "standby_sync_state"}


def test_list(tmp):
    r = run(tmp, ["list"])
    is_eq(r.returncode, 2, "list without a cluster: exit 2")
    ok("--system-id" in r.stderr, "... saying how to name one", r.stderr)

    r = run(tmp, ["list", "--json", "--system-id", SYSID])
    doc = js(r)
    is_eq(r.returncode, 0, "list --json: exit 0")
    ok(doc is not None, "... one JSON document", r.stdout, r.stderr)
    if not doc:
        return
    is_eq(doc["region"], "us-east-1", "home region")
    is_eq(doc["system_identifier"], SYSID, "the cluster")
    rows = {(b["region"], b["request_id"]): b for b in doc["backups"]}
    is_eq(sorted(rows), sorted([("us-east-1", x) for x in
                                ["r-pending", "r-night-1", "r-night-2", "r-failed", "r-ami-1",
                                 "r-night-old", "r-night-older"]] + [("eu-west-1", "r-night-1")]),
          "this cluster's backups in both regions, the other cluster's left out")
    is_eq(set(doc["backups"][0]), BACKUP_KEYS, "every backup has exactly the documented keys")
    b = rows[("us-east-1", "r-night-1")]
    is_eq([c["region"] for c in b["copies"]], ["eu-west-1"], "r-night-1's copy is seen")
    is_eq(b["kind"], "set", "kind set")
    is_eq(len(b["snapshots"]), 2, "two snapshots")
    ok(b["verified"].startswith("2026-12-02T05:00:00Z"), "last verification from the tag")
    c = rows[("eu-west-1", "r-night-1")]
    is_eq(c["copy_of"], {"region": "us-east-1", "id": "snap-10000000000000001"},
          "the copy says where it came from")
    is_eq(rows[("us-east-1", "r-night-2")]["lock"]["state"], "governance", "a lock is shown")
    is_eq([rows[("us-east-1", r)][k] for r in ("r-night-2", "r-night-1")
           for k in ("taken_from", "primary_host", "standby_sync_state")],
          ["standby", "db1:5432", "async", "primary", None, None],
          "a standby's set says so, with its primary; a primary's set too")
    is_eq(rows[("us-east-1", "r-ami-1")]["image"]["image_id"], "ami-10000000000000001",
          "an AMI's image")
    f = rows[("us-east-1", "r-failed")]
    ok(f["state"] == "failed" and "detached" in f["reason"], "a failed backup and EC2's reason",
       f)
    is_eq(rows[("us-east-1", "r-pending")]["progress"], 40, "progress of a pending one")

    # The same cluster from a data directory's pg_control.
    pgdata = os.path.join(tmp, "pgdata")
    os.makedirs(os.path.join(pgdata, "global"), exist_ok=True)
    with open(os.path.join(pgdata, "global", "pg_control"), "wb") as fh:
        fh.write(int(SYSID).to_bytes(8, sys.byteorder) + b"\0" * 8184)
    r2 = run(tmp, ["list", "--json", "--pgdata", pgdata])
    ok(r2.returncode == 0 and js(r2) and js(r2)["system_identifier"] == SYSID and
       len(js(r2)["backups"]) == len(doc["backups"]), "--pgdata reads pg_control's identifier",
       r2.stderr)
    r3 = run(tmp, ["list", "--json", "--all"])
    ok(r3.returncode == 0 and js(r3) and len(js(r3)["backups"]) == len(doc["backups"]) + 1,
       "--all adds the other cluster's backup", r3.stderr)

    r = run(tmp, ["list", "--system-id", SYSID])
    lines = r.stdout.splitlines()
    ok(r.returncode == 0 and lines and lines[0].startswith("NAME "), "a table with a header",
       r.stdout, r.stderr)
    starts = [m.start() for m in re.finditer(r"(?<=  )\S", lines[0])] if lines else []
    aligned = all(len(line) > starts[-1] and line[s - 1] == " " for line in lines[1:]
                  for s in starts) if starts else False
    ok(aligned and len(lines) == 9, "the columns are aligned, a row per backup", r.stdout)


def test_show_and_wait(tmp, fake):
    r = run(tmp, ["show", "r-night-1", "--json", "--system-id", SYSID])
    doc = js(r)
    ok(r.returncode == 0 and doc and doc["request_id"] == "r-night-1" and
       doc["copies"] == [{"region": "eu-west-1", "state": "completed"}],
       "show ID --json: the backup with its copies", r.stdout, r.stderr)
    r = run(tmp, ["show", "ami-10000000000000001", "--system-id", SYSID])
    ok(r.returncode == 0 and "r-ami-1" in r.stdout and "image:" in r.stdout,
       "show by image id, as text", r.stdout, r.stderr)
    r = run(tmp, ["show", "r-night-2", "--system-id", SYSID])
    ok(r.returncode == 0 and "taken from:        standby of db1:5432 (sync state async)"
       in r.stdout, "show: a standby's set names its primary", r.stdout, r.stderr)
    r = run(tmp, ["show", "r-other", "--system-id", SYSID, "--json"])
    is_eq(r.returncode, 4, "another cluster's backup: exit 4")
    ok(js(r) and js(r)["error"]["code"] == "NotThisCluster", "... as a JSON error", r.stdout)
    r = run(tmp, ["show", "r-nope", "--system-id", SYSID])
    is_eq(r.returncode, 3, "an unknown backup: exit 3")
    r = run(tmp, ["show", "snap-1000000000000dead", "--json"])
    ok(r.returncode == 3 and js(r) and js(r)["error"]["code"] == "InvalidSnapshot.NotFound",
       "an unknown snapshot id: exit 3 with EC2's code", r.stdout, r.stderr)

    r = run(tmp, ["wait", "r-night-1", "--json"])
    ok(r.returncode == 0 and js(r) and js(r)["outcome"] == "completed",
       "wait on a completed backup: exit 0", r.stdout, r.stderr)
    r = run(tmp, ["wait", "r-failed", "--json"])
    ok(r.returncode == 5 and js(r) and js(r)["outcome"] == "failed" and
       "detached" in js(r)["reason"], "wait on a failed backup: exit 5 with EC2's reason",
       r.stdout)
    r = run(tmp, ["wait", "r-pending", "--timeout", "0"])
    ok(r.returncode == 6 and "40%" in r.stdout, "wait --timeout 0 on a pending one: exit 6",
       r.stdout, r.stderr)

    # Progress over time: the fake's snapshot advances, then completes.
    def advance():
        time.sleep(1.5)
        fake.call("LcSet", Id="snap-10000000000000006", Progress="80%25")
        time.sleep(1.5)
        fake.call("LcSet", Id="snap-10000000000000006", State="completed", Progress="100%25")

    th = threading.Thread(target=advance)
    th.start()
    r = run(tmp, ["wait", "r-pending", "--interval", "1", "--timeout", "60"])
    th.join()
    lines = [line.split(" ", 1)[1] for line in r.stdout.splitlines() if line.startswith("20")]
    ok(r.returncode == 0 and lines[:3] == ["snap-10000000000000006 pending 40%",
                                           "snap-10000000000000006 pending 80%",
                                           "snap-10000000000000006 completed 100%"],
       "wait follows the progress to completed", r.stdout, r.stderr)


def state_of(fake, region="us-east-1"):
    """The fake's whole world (every region) as its XML text."""
    return fake.call("LcState", region=region)


def shared_of(st, rid):
    m = re.search(r"<id>%s</id><state>[^<]*</state><lock>[^<]*</lock><shared>([^<]*)</shared>"
                  % rid, st)
    return m.group(1) if m else None


def test_prune(tmp, fake):
    before = state_of(fake)
    # r-pending completed in test_show_and_wait: it is the newest good nightly now.
    args = ["prune", "--system-id", SYSID, "--policy", "nightly:last=2", "--policy",
            "weekly:last=1", "--json"]
    r = run(tmp, args + ["--dry-run"])
    doc = js(r)
    ok(r.returncode == 0 and doc and doc["dry_run"], "prune --dry-run --json", r.stdout,
       r.stderr)
    if not doc:
        return
    acts = {(d["region"], d["request_id"]): (d["action"], d["reason"])
            for d in doc["decisions"]}
    want = {("us-east-1", "r-pending"): "keep", ("us-east-1", "r-night-1"): "keep",
            ("us-east-1", "r-night-2"): "skip", ("us-east-1", "r-failed"): "delete",
            ("us-east-1", "r-night-old"): "delete", ("us-east-1", "r-night-older"): "delete",
            ("us-east-1", "r-ami-1"): "keep", ("eu-west-1", "r-night-1"): "keep"}
    is_eq({k: v[0] for k, v in acts.items()}, want, "every backup's decision, in both regions")
    ok("locked until 2027-01-01" in acts[("us-east-1", "r-night-2")][1], "a lock's reason",
       acts[("us-east-1", "r-night-2")])
    is_eq(state_of(fake), before, "a dry run changes nothing")

    r = run(tmp, args)
    doc = js(r)
    ok(r.returncode == 0 and doc and not doc["dry_run"], "prune: exit 0", r.stdout, r.stderr)
    if not doc:
        return
    acts = {d["request_id"]: d for d in doc["decisions"] if d["region"] == "us-east-1"}
    ok(acts["r-failed"]["done"] and acts["r-failed"]["deleted"] == ["snap-10000000000000007"],
       "the failed backup is deleted", acts["r-failed"])
    ok(acts["r-night-older"]["done"], "the old one is deleted")
    old = acts["r-night-old"]
    ok(old["action"] == "skip" and "in use" in old["reason"],
       "a snapshot another image uses: skipped, saying so", old)
    ok(old.get("deleted") == [] and "nothing deleted" in old["reason"],
       "... found before anything of it was deleted (the set still restores)", old)
    now = state_of(fake)
    ok("snap-10000000000000007" not in now and "snap-10000000000000009" not in now and
       "snap-10000000000000004" in now and "snap-10000000000000003" in now,
       "EC2 holds exactly what should remain")
    is_eq((doc["deleted"], doc["skipped"], doc["failed"]), (2, 2, 0), "the counts")
    r = run(tmp, ["prune", "--system-id", SYSID, "--policy", "*:last=1", "--dry-run",
                  "--region", "ap-south-2", "--json"])
    doc = js(r)
    ok(r.returncode == 7 and doc and doc["region_errors"][0]["id"] == "ap-south-2" and
       doc["region_errors"][0]["code"] == "UnauthorizedOperation" and
       "ec2:DescribeSnapshots" in doc["region_errors"][0]["message"] and
       any(d["region"] == "us-east-1" for d in doc["decisions"]),
       "a region the policy denies: its error names the IAM action, the others are pruned, "
       "exit 7", r.stdout, r.stderr)
    r = run(tmp, ["list", "--system-id", SYSID, "--region", "ap-south-2"])
    ok(r.returncode == 1 and "ec2:DescribeSnapshots" in r.stderr,
       "list: a denied action's message names it", r.stderr)
    r = run(tmp, ["prune", "--all", "--policy", "*:last=1"])
    is_eq(r.returncode, 2, "prune never runs on all clusters at once")
    r = run(tmp, ["prune", "--system-id", SYSID, "--policy", "nightly"])
    is_eq(r.returncode, 2, "a bad policy: exit 2")


def test_copy_lock_share(tmp, fake):
    r = run(tmp, ["copy", "r-night-1", "--to-region", "eu-west-1", "--json",
                  "--system-id", SYSID])
    doc = js(r)
    ok(r.returncode == 0 and doc and len(doc["copies"]) == 2,
       "copy a set with an encrypted snapshot (PresignedUrl verified by the fake)", r.stdout,
       r.stderr)
    eu = state_of(fake, "eu-west-1")
    ok(doc and all(c["copy_id"] in eu for c in doc.get("copies", [])),
       "the copies exist in eu-west-1")
    ok("<key>ami-snapshot:mount-point</key><value>/wal</value>" in eu and
       "<key>ami-snapshot:copy-source-region</key><value>us-east-1</value>" in eu,
       "each copy carries its source's tags and where it came from")
    r = run(tmp, ["copy", "r-ami-1", "--to-region", "eu-west-1", "--share", "210987654321",
                  "--json", "--system-id", SYSID])
    doc = js(r)
    ok(r.returncode == 0 and doc and doc["kind"] == "ami" and
       doc["shared_with"] == ["210987654321"], "copy an AMI and share the copy", r.stdout,
       r.stderr)
    pairs = (doc or {}).get("snapshot_copies") or []
    ok(len(pairs) == 1 and pairs[0]["source_id"] == "snap-10000000000000005",
       "the AMI copy's snapshot is matched to its source", doc)
    eu = state_of(fake, "eu-west-1")
    m = re.search(r"<id>%s</id>.*?</tagSet>" % (pairs[0]["copy_id"] if pairs else "none"), eu,
                  re.S)
    ok(m and "<key>ami-snapshot:device</key><value>/dev/xvda</value>" in m.group(0) and
       "<key>ami-snapshot:copy-of</key><value>snap-10000000000000005</value>" in m.group(0),
       "and tagged with the source snapshot's own tags (its device) and where it came from",
       m.group(0) if m else eu)
    r = run(tmp, ["copy", "r-failed", "--to-region", "eu-west-1"])
    is_eq(r.returncode, 3, "a pruned backup is gone")
    r = run(tmp, ["copy", "r-night-1"])
    is_eq(r.returncode, 2, "copy without --to-region: exit 2")

    r = run(tmp, ["lock", "r-night-1", "--mode", "compliance", "--days", "7",
                  "--cool-off-hours", "2", "--json"])
    doc = js(r)
    ok(r.returncode == 0 and doc and [x["state"] for x in doc["locks"]] ==
       ["compliance-cooloff"] * 2, "lock in compliance mode with a cool-off", r.stdout,
       r.stderr)
    r = run(tmp, ["lock", "r-night-1", "--mode", "governance", "--days", "7",
                  "--cool-off-hours", "2"])
    is_eq(r.returncode, 2, "a cool-off in governance mode: exit 2 before any call")
    r = run(tmp, ["lock", "r-night-1", "--mode", "governance", "--until", "2020-01-01T00:00:00Z"])
    is_eq(r.returncode, 2, "--until in the past: exit 2")
    r = run(tmp, ["lock", "r-night-1", "--mode", "governance", "--until", "next week"])
    is_eq(r.returncode, 2, "--until that is not a time: exit 2")
    r = run(tmp, ["lock", "r-night-2", "--mode", "governance", "--until", "2030-01-01T00:00:00Z",
                  "--json"])
    ok(r.returncode == 0 and js(r) and js(r)["locks"][0]["expires_on"] == "2030-01-01T00:00:00Z",
       "a governance lock until a date (an existing one changed)", r.stdout, r.stderr)
    r = run(tmp, ["unlock", "r-night-1", "--json"])
    ok(r.returncode == 0 and js(r) and len(js(r)["unlocked"]) == 2, "unlock within the cool-off",
       r.stdout, r.stderr)
    r = run(tmp, ["unlock", "r-night-1", "--json"])
    ok(r.returncode == 7 and js(r) and js(r)["errors"][0]["code"] == "SnapshotLockNotFound",
       "unlocking what is not locked: exit 7, EC2's code per snapshot", r.stdout)
    r = run(tmp, ["share", "r-night-1", "--account", "210987654321", "--json"])
    ok(r.returncode == 0 and js(r) and len(js(r)["resources"]) == 2, "share a set", r.stdout,
       r.stderr)
    st = state_of(fake)
    is_eq([shared_of(st, x) for x in ("snap-10000000000000001", "snap-10000000000000002")],
          ["210987654321"] * 2, "both snapshots shared")
    r = run(tmp, ["share", "r-night-1", "--account", "210987654321", "--remove"])
    st = state_of(fake)
    ok(r.returncode == 0 and
       [shared_of(st, x) for x in ("snap-10000000000000001", "snap-10000000000000002")] ==
       ["", ""], "and unshared", r.stdout, r.stderr)
    r = run(tmp, ["share", "r-night-1", "--account", "42"])
    is_eq(r.returncode, 2, "a bad account id: exit 2")


def main():
    if not os.access(BIN, os.X_OK):
        bail("%s is not built (make -C helper)" % BIN)
    tmp = tempfile.mkdtemp(prefix="test_lifecycle_cli.")
    fake = Fake()
    try:
        with open(os.path.join(tmp, "helper.conf"), "w") as fh:
            # No instance_id and an IMDS that does not answer: the lifecycle
            # commands need neither (they may run off EC2).
            fh.write("[aws]\nregion = us-east-1\nimds_endpoint = http://127.0.0.1:9\n"
                     "ec2_endpoint = %s\n[copy]\nregions = eu-west-1\n" % fake.endpoint)
        os.chmod(tmp, 0o755)
        os.chmod(os.path.join(tmp, "helper.conf"), 0o644)
        test_list(tmp)
        test_show_and_wait(tmp, fake)
        test_prune(tmp, fake)
        test_copy_lock_share(tmp, fake)
        ok(not any(SECRET in o or SECRET[:16] in o for o in outputs),
           "the secret key appears in no output")
        ok(not any("X-Amz-Signature" in o for o in outputs), "no pre-signed URL is printed")
    finally:
        fake.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("1..%d" % tests_run)
    return 1 if tests_failed else 0


if __name__ == "__main__":
    sys.exit(main())
