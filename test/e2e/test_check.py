#!/usr/bin/python3
"""
End to end: the preflight check, ami_snapshot_check() and `ami-snapshot
check` (doc/operations.md, "Preflight check"), against the real helper, its
EC2 worker and the emulator.

- On the sandbox every check passes: the helper, the caller, the
  configuration, each path resolved to its EBS volume, the allow-list,
  state_dir, IMDS, the credentials (their source), the region, and every
  EC2 action by DryRun (CreateTags on a snapshot of ours); with image =>
  'create' CreateImage's too; RegisterImage says why it is not tested.  The
  command line says the same (table and --json, exit 0).
- Nothing is frozen and no backup is started: the emulator's request log
  shows only DryRuns and Describe calls, no snapshot was made, PostgreSQL
  logged no backup's checkpoint, the history has no new row, the helper
  logged no freeze and is idle afterwards.
- A denied action (the emulator's denied_actions, also for DryRun) is a
  failed row naming the IAM action to add; CreateSnapshots' too; the
  command exits 1.
- With [drill], the drill's calls are tested too.
- A path outside the allow-list, a caller not in allowed_users, a stopped
  helper, a helper too old for CHECK: each a row saying so, never an
  exception.
- The access key, the secret and the session token appear in no row, no
  output of the command, and nowhere in the helper's log.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import HELPER, World  # noqa: E402
from e2e import drill_conf, log_pos, log_since, restart_helper  # noqa: E402
from restore_cmd import CLI  # noqa: E402


def check_rows(w, db="postgres", settings="", args=""):
    """ami_snapshot_check()'s rows as {name: (ok, detail, hint)}, and their order."""
    out = w.psql(settings + "SELECT coalesce(json_agg(c), '[]') FROM ami_snapshot_check(%s) c"
                 % args, db=db)
    rows = json.loads(out)
    return {r["name"]: (r["ok"], r["detail"], r["hint"]) for r in rows}, [r["name"] for r in rows]


def cli(w, *args):
    return subprocess.run([CLI, "-c", w.helper_conf, "check"] + list(args), capture_output=True,
                          text=True, timeout=300)


def requests_since(w, n):
    """The emulator's EC2 requests from line n of its log on: (action, params)
    of each (IMDS's requests, without an action, left out)."""
    with open(os.path.join(w.emu_state_dir, "requests.jsonl")) as f:
        lines = f.readlines()
    recs = [json.loads(x) for x in lines[n:]]
    return [(r["action"], r.get("params", {})) for r in recs if r.get("action")], len(lines)


def imds_secrets(w):
    """The instance role's key, secret and token (the helper's), and every
    key the emulator's IMDS handed out."""
    c = w.imds_credentials()
    keys = [c["AccessKeyId"], c["SecretAccessKey"], c["Token"]]
    keys += [x["access_key_id"] for x in w.emulator_state()["imds"]["credentials"]]
    return keys


class OldHelper:
    """A helper from before the check on a socket of its own: answers
    STATUS, refuses anything else by closing the connection (an unknown
    message type is malformed: doc/protocol.md)."""

    def __init__(self, path):
        self.path = path
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.bind(path)
        os.chmod(path, 0o666)
        self.s.listen(4)
        self.stop = False
        self.t = threading.Thread(target=self.serve, daemon=True)
        self.t.start()

    @staticmethod
    def frame(mtype, fields):
        payload = b"".join(struct.pack(">HH", tag, len(v)) + v for tag, v in fields)
        return b"AMSP" + struct.pack(">HHI", 1, mtype, len(payload)) + payload

    def serve(self):
        self.s.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.s.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            with c:
                c.settimeout(5)
                try:
                    while True:
                        hdr = c.recv(12, socket.MSG_WAITALL)
                        if len(hdr) < 12:
                            break
                        mtype, plen = struct.unpack(">HI", hdr[6:12])
                        if plen:
                            c.recv(plen, socket.MSG_WAITALL)
                        if mtype != 9:          # not STATUS: malformed to it
                            break
                        c.sendall(self.frame(10, [(80, b"idle")]))
                except OSError:
                    pass

    def close(self):
        self.stop = True
        self.s.close()
        self.t.join(5)
        if os.path.exists(self.path):
            os.unlink(self.path)


def main():
    w = World()
    old = None
    try:
        secrets = imds_secrets(w)
        outputs = []

        # ---- Everything ok on the sandbox, and nothing frozen or started.
        # One backup first: the check names one of its snapshots where an
        # action works on a snapshot (CreateTags).
        is_(w.psql("SELECT status FROM ami_snapshot('before the check')"), "succeeded",
            "a snapshot before the check")
        snaps = len(w.emulator_state()["snapshots"])
        hist = w.psql("SELECT count(*) FROM ami_snapshot_history")
        pglog = os.path.join(w.pgrun, "postgres.log")
        pglog_pos = os.path.getsize(pglog)
        _, reqpos = requests_since(w, 0)
        pos = log_pos(w)
        t0 = time.time()
        rows, order = check_rows(w)
        diag("ami_snapshot_check() took %.3f s (measured, not asserted)" % (time.time() - t0))
        outputs.append(json.dumps(rows))
        diag("\n".join("%-24s %-5s %s" % (n, rows[n][0], rows[n][1]) for n in order))
        failed = [n for n in order if rows[n][0] is False]
        is_(failed, [], "the sandbox: no check fails")
        for name in ["extension", "helper reachable", "caller allowed", "helper version",
                     "configuration", "allowed_users", "caller", "allow-list",
                     "path: data directory", "path: pg_wal", "path: tablespace 1", "filesystems",
                     "state_dir", "imds", "credentials", "instance and region",
                     "volumes attached", "ec2:CreateSnapshots", "ec2:CreateTags",
                     "ec2:DescribeInstances"]:
            is_(rows.get(name, (None,))[0], True, "row %s: ok" % name)
        ok(rows["credentials"][1].startswith("found: from imds:"),
           "the credentials row names their source, the instance role", rows["credentials"][1])
        ok(not any(n in order for n in ("ec2:CreateImage", "ec2:RegisterImage")),
           "without image =>, no AMI call is tested")
        ok(w.volume("data").vol_id in rows["path: data directory"][1],
           "the data directory's row names its EBS volume", rows["path: data directory"][1])
        ok(w.volume("wal").vol_id in rows["path: pg_wal"][1], "pg_wal's row names its volume")
        ok(not any(n.startswith("ec2:CreateVolume") for n in order),
           "without [drill], the drill's calls are not tested")

        reqs, reqpos = requests_since(w, reqpos)
        actions = sorted(set(a for a, _ in reqs))
        diag("EC2 requests of the check: %s" % ", ".join(actions))
        bad = [a for a, p in reqs if not a.startswith("Describe") and "DryRun" not in p]
        is_(bad, [], "the check made only DryRuns and Describe calls")
        ok("CreateSnapshots" in actions and "CreateTags" in actions,
           "... among them CreateSnapshots and CreateTags as DryRuns")
        is_(len(w.emulator_state()["snapshots"]), snaps, "no snapshot was made")
        is_(w.psql("SELECT count(*) FROM ami_snapshot_history"), hist,
            "no history row: no snapshot was started")
        with open(pglog) as f:
            f.seek(pglog_pos)
            pl = f.read()
        ok("checkpoint starting: immediate" not in pl and "backup" not in pl.lower(),
           "PostgreSQL logged no backup and no checkpoint during the check", pl[-2000:])
        hl = log_since(w, pos)
        ok("preflight check" in hl, "the helper logged the check")
        ok("frozen" not in hl.replace("frozen marker", "") and "FIFREEZE" not in hl,
           "the helper froze nothing", hl[-3000:])
        st = subprocess.run([HELPER, "-c", w.helper_conf, "--status"],
                            capture_output=True, text=True, timeout=30)
        ok(st.returncode == 0 and "state: idle" in st.stdout, "the helper is idle afterwards",
           st.stdout + st.stderr)
        ok(w.frozen_mounts() == [], "no filesystem is frozen")

        # ---- An AMI method's calls.
        rows, _ = check_rows(w, args="image => 'create'")
        outputs.append(json.dumps(rows))
        for name in ("ec2:CreateImage", "ec2:DescribeImages", "ec2:DescribeVolumes",
                     "ec2:DescribeSnapshots"):
            is_(rows.get(name, (None,))[0], True, "image => 'create': %s ok" % name)
        ok("ec2:DeregisterImage" in rows and rows["ec2:DeregisterImage"][0] is not False,
           "... DeregisterImage (the cleanup) tested, not denied", rows.get("ec2:DeregisterImage"))
        rows, _ = check_rows(w, args="image => 'register'")
        is_(rows["ec2:RegisterImage"][0], None, "image => 'register': RegisterImage NULL")
        ok("needs existing" in rows["ec2:RegisterImage"][1], "... and the row says why",
           rows["ec2:RegisterImage"][1])
        reqs, reqpos = requests_since(w, reqpos)
        is_([a for a, p in reqs if not a.startswith("Describe") and "DryRun" not in p], [],
            "the AMI checks too made only DryRuns and Describe calls")

        # ---- The command line: a table, and JSON.
        r = cli(w, "--pgdata", w.pgdata)
        outputs.append(r.stdout + r.stderr)
        is_(r.returncode, 0, "ami-snapshot check --pgdata: exit 0")
        lines = r.stdout.splitlines()
        ok(lines and lines[0].split() == ["CHECK", "RESULT", "DETAIL"], "a table with a header",
           r.stdout)
        col = lines[0].index("RESULT") if lines else -1
        ok(all(len(x) > col and x[col - 2:col] == "  " for x in lines[1:-1] if x.strip()),
           "aligned: every row's result starts in the header's column", r.stdout)
        ok(any(x.startswith("ec2:CreateSnapshots") and " ok " in x for x in lines),
           "the table has the CreateSnapshots DryRun, ok")
        ok(any(x.startswith("path: tablespace 1") and " ok " in x for x in lines),
           "--pgdata found the tablespace through pg_tblspc")
        r = cli(w, "--paths", w.pgdata, "--json")
        outputs.append(r.stdout + r.stderr)
        is_(r.returncode, 0, "--paths DIR --json: exit 0")
        doc = json.loads(r.stdout)
        is_(doc["ok"], True, "JSON: ok true")
        names = [c["name"] for c in doc["checks"]]
        ok("path: data directory" in names and "path: pg_wal" not in names,
           "--paths: only the paths given")
        r = cli(w, "--image", "register", "--json")
        doc = json.loads(r.stdout)
        is_([c["ok"] for c in doc["checks"] if c["name"] == "ec2:RegisterImage"], [None],
            "JSON, --image register: a skipped check's ok is null")

        # ---- A denied action: the row names the IAM action; CreateSnapshots too.
        w.emulator_control({"denied_actions": ["CreateTags", "CreateSnapshots"]})
        rows, _ = check_rows(w)
        outputs.append(json.dumps(rows))
        is_(rows["ec2:CreateTags"][0], False, "denied CreateTags: ok false")
        ok("ec2:CreateTags" in (rows["ec2:CreateTags"][2] or ""),
           "... the hint names the IAM action ec2:CreateTags", rows["ec2:CreateTags"])
        is_(rows["ec2:CreateSnapshots"][0], False, "denied CreateSnapshots: ok false")
        ok("ec2:CreateSnapshots" in (rows["ec2:CreateSnapshots"][2] or ""),
           "... the hint names ec2:CreateSnapshots", rows["ec2:CreateSnapshots"])
        is_(rows["ec2:DescribeInstances"][0], True, "the other actions still ok")
        r = cli(w)
        outputs.append(r.stdout + r.stderr)
        is_(r.returncode, 1, "the command exits 1 when a check fails")
        ok("hint: allow the IAM action ec2:CreateTags" in r.stdout, "... printing the hint",
           r.stdout)
        w.emulator_control({"denied_actions": []})

        # ---- With [drill]: its calls are tested too.
        restart_helper(w, drill_conf(w, w.path("drill")))
        rows, order = check_rows(w)
        outputs.append(json.dumps(rows))
        is_(rows.get("ec2:CreateVolume", (None,))[0], True, "[drill]: CreateVolume's DryRun ok")
        ok(all(rows.get("ec2:" + a, (False,))[0] is not False
               for a in ("AttachVolume", "DetachVolume", "DeleteVolume", "RunInstances",
                         "TerminateInstances")),
           "[drill]: the drill's other calls are not denied (ok, or not provable)",
           {a: rows.get("ec2:" + a) for a in ("AttachVolume", "RunInstances")})

        # ---- A path outside the allow-list.
        text = w.helper_config_text().replace("allow = %s" % w.path("mnt"),
                                              "allow = %s" % w.volume("data").mount)
        w.stop_helper()
        with open(w.helper_conf, "w") as f:
            f.write(text)
        w.start_helper()
        rows, _ = check_rows(w)
        is_(rows["path: pg_wal"][0], False, "pg_wal outside the allow-list: ok false")
        ok("[filesystems] allow" in (rows["path: pg_wal"][2] or ""),
           "... the hint names [filesystems] allow", rows["path: pg_wal"])
        is_(rows["path: data directory"][0], True, "... the data directory still ok")
        ok("ec2:CreateSnapshots" in rows, "... and EC2 still checked")

        # ---- A caller not in allowed_users: a row, not an exception.
        w.stop_helper()
        with open(w.helper_conf, "w") as f:
            f.write(w.helper_config_text().replace("allowed_users = postgres",
                                                   "allowed_users = root"))
        w.start_helper()
        rows, order = check_rows(w)
        is_(rows["caller allowed"][0], False, "a caller not allowed: ok false")
        ok("allowed_users" in (rows["caller allowed"][2] or ""),
           "... the hint names allowed_users", rows["caller allowed"])
        restart_helper(w)

        # ---- The helper stopped.
        w.stop_helper()
        rows, order = check_rows(w)
        is_(rows["helper reachable"][0], False, "the helper stopped: 'helper reachable' false")
        ok(rows["helper reachable"][2] and "ami-snapshot-helper" in rows["helper reachable"][2],
           "... the hint says to start it", rows["helper reachable"])
        r = cli(w)
        is_(r.returncode, 3, "the command exits 3 when the helper cannot be asked")
        w.start_helper()

        # ---- A helper too old for CHECK.
        old = OldHelper(w.path("run", "old.sock"))
        rows, order = check_rows(w, settings="SET ami_snapshot.helper_socket = '%s'; "
                                 % old.path)
        is_(rows["caller allowed"][0], True, "an old helper: it answers STATUS (allowed)")
        is_(rows["helper version"][0], False, "... 'helper version' false")
        ok("HelperTooOld" in rows["helper version"][1], "... HelperTooOld", rows["helper version"])
        r = cli(w, "--socket", old.path)
        is_(r.returncode, 3, "the command: exit 3 for a helper too old")
        ok("HelperTooOld" in r.stdout, "... and says HelperTooOld", r.stdout)

        # ---- No secret anywhere.
        with open(w.helper_log, errors="replace") as f:
            outputs.append(f.read())
        leaks = [s for s in secrets if any(s in o for o in outputs)]
        is_(leaks, [], "no access key, secret or token in any row, output or the helper's log")
        ok(len(secrets) >= 3, "(the keys looked for: %d)" % len(secrets))
    except Exception as e:  # noqa: BLE001
        bail(e, [w.helper_log])
    finally:
        if old:
            old.close()
        w.close()
    done()


if __name__ == "__main__":
    main()
