#!/usr/bin/python3
"""
End to end: the helper's own fault handling.

Cases: the CreateSnapshots answer is lost after EC2 made the snapshots
(emulator "drop" with "execute": true) and the helper finds them by their
request-id tag, reports them and tags them failed; the DryRun made just
before the freeze fails (nothing is frozen); an EC2 error on the call made
while frozen; something else thaws a filesystem during the call (the helper
warns); the socket directory is left as it was and a world-writable one is
refused; a client waiting in pg_backup_stop() (slow WAL archiving) for longer
than client_timeout is not dropped; a thaw that fails (FITHAW made to fail by
an LD_PRELOAD shim, driving the helper with a raw protocol client on a
filesystem PostgreSQL does not write to) is reported, retried until it works,
refuses new requests meanwhile (ThawPending) and is retried on SIGTERM.
"""

import os
import stat
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import INSTANCE_ID, REGION, World  # noqa: E402
import ioctl_shim  # noqa: E402
from e2e import (SAME_SESSION_CHECK, check_after, last_history, log_since,  # noqa: E402
                 real_calls, session)

# The archiver runs in the data directory: the file switches slow archiving on.
SLOW_ARCHIVE_FILE = "slow-archive"
PG_CONF = ("archive_mode = on\n"
           "archive_command = 'test ! -f %s || sleep 6'\n" % SLOW_ARCHIVE_FILE)



# A bare protocol client (helper/common/protocol.h), run as the postgres OS user.
RAW_CLIENT = r"""
import socket, struct, sys
sock_path, what, path = sys.argv[1:4]
def frame(t, fields):
    p = b"".join(struct.pack(">HH", tag, len(v)) + v for tag, v in fields)
    return b"AMSP" + struct.pack(">HHI", 1, t, len(p)) + p
def recv_exact(s, n):
    b = b""
    while len(b) < n:
        c = s.recv(n - len(b))
        if not c:
            raise EOFError("helper closed the connection")
        b += c
    return b
def answer(s):
    _, _, t, n = struct.unpack(">4sHHI", recv_exact(s, 12))
    p, f = recv_exact(s, n), {}
    while p:
        tag, ln = struct.unpack(">HH", p[:4])
        f.setdefault(tag, []).append(p[4:4 + ln].decode())
        p = p[4 + ln:]
    return t, f
s = socket.socket(socket.AF_UNIX)
s.connect(sock_path)
s.sendall(frame(1, [(1, b"raw-" + what.encode()), (2, b"raw client"), (3, b""),
                    (4, path.encode())]))
t, f = answer(s)
if t == 2 and what == "snapshot":
    s.sendall(frame(3, [(30, b"0/0"), (31, struct.pack(">I", 1))]))
    t, f = answer(s)
if t == 2 or t == 4:
    s.sendall(frame(7, [(73, b"test done")]))
print({2: "PREPARED", 4: "PENDING", 8: "ERROR"}.get(t, t), f.get(70, [""])[0],
      f.get(71, [""])[0], sep="|")
"""


def raw_client(w, what, path):
    r = subprocess.run(["runuser", "-u", "postgres", "--", "/usr/bin/python3", "-c", RAW_CLIENT,
                        w.path("run", "helper.sock"), what, path],
                       capture_output=True, text=True, timeout=60)
    return (r.stdout.strip() or r.stderr.strip()).split("|", 2) + ["", ""]


def wait_log(w, pos, text, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if text in log_since(w, pos):
            return True
        time.sleep(0.1)
    return False


def restart_helper_with(w, conf_text):
    w.stop_helper()
    with open(w.helper_conf, "w") as f:
        f.write(conf_text)
    w.start_helper()


def main():
    w = World(pg_conf_extra=PG_CONF)
    try:
        w.psql("CREATE TABLE t (x int)")
        conf = open(w.helper_conf).read()

        # 1. The answer is lost, but EC2 made the snapshots (skip: the two DryRuns).
        calls = real_calls(w)
        w.emulator_control({"action": "CreateSnapshots", "fault": "drop", "count": 1,
                            "dry_run": False, "execute": True})
        r = session(w, ["SELECT * FROM ami_snapshot('lost answer')"] + [SAME_SESSION_CHECK])
        ok("failed during snapshot" in r.stderr, "lost answer: the request fails", r.stderr)
        is_(r.stdout.split(), ["t", "t"], "lost answer: the session's backup was aborted")
        is_(real_calls(w) - calls, 1, "lost answer: exactly one CreateSnapshots call was made")
        h = last_history(w)
        is_(h[:2], ["lost answer", "failed"], "lost answer: history row failed")
        state = w.emulator_state()
        made = [s for s in state["snapshots"]
                if s["tags"].get("ami-snapshot:request-id") == h[4]]
        is_(len(made), 3, "lost answer: EC2 made a snapshot of each of the three volumes")
        is_(sorted(s["tags"].get("ami-snapshot:backup-state") for s in made),
            ["failed"] * 3, "lost answer: the helper found them and tagged them failed")
        ok(made and all(s["id"] in r.stderr for s in made),
           "lost answer: their ids reach SQL", r.stderr)
        # The history row keeps every fact the helper knew: each volume with
        # the snapshot EC2 made of it, how long writes were frozen, where.
        row = w.psql("SELECT array_to_string(volume_ids, ','), "
                     "array_to_string(snapshot_ids, ','), frozen_ms > 0, instance_id, region, "
                     "error_code, start_lsn IS NOT NULL, timeline "
                     "FROM ami_snapshot_history WHERE request_id = '%s'" % h[4]).split("|")
        by_vol = {s["volume_id"]: s["id"] for s in made}
        vols = row[0].split(",")
        is_(sorted(vols), sorted(v.vol_id for v in w.volumes),
            "lost answer: history lists the volumes")
        is_(row[1].split(","), [by_vol.get(v) for v in vols],
            "lost answer: history lists the snapshots EC2 made, paired with their volumes")
        is_(row[2:5], ["t", INSTANCE_ID, REGION],
            "lost answer: history has frozen_ms, the instance and the region")
        is_(row[5:], ["ConnectionError", "t", "1"],
            "lost answer: history has the code, the start LSN and the timeline")
        check_after(w, "lost answer")
        w.emulator_reset()

        # 2. The DryRun just before the freeze fails (skip: the preflight).  It
        #    is made when the connection may be cold: always, with
        #    rewarm_after = 0 (the checkpoint here is much shorter than 10 s).
        restart_helper_with(w, conf + "\n[aws]\nrewarm_after = 0\n")
        calls = real_calls(w)
        log_pos = os.path.getsize(w.helper_log)
        w.emulator_control({"action": "CreateSnapshots", "fault": "unauthorized", "count": 1,
                            "dry_run": True, "skip": 1})
        r = session(w, ["SELECT * FROM ami_snapshot('rewarm fails')"] + [SAME_SESSION_CHECK])
        ok("UnauthorizedOperation" in r.stderr and "failed during snapshot" in r.stderr,
           "re-warm DryRun failure: clear error at the snapshot step", r.stderr)
        ok("nothing was frozen" in r.stderr, "re-warm DryRun failure: says nothing was frozen",
           r.stderr)
        is_(r.stdout.split(), ["t", "t"], "re-warm DryRun failure: the backup was aborted")
        is_(real_calls(w) - calls, 0, "re-warm DryRun failure: no CreateSnapshots call made")
        ok("writes frozen for" not in log_since(w, log_pos),
           "re-warm DryRun failure: nothing was frozen")
        check_after(w, "re-warm DryRun failure")
        w.emulator_reset()
        restart_helper_with(w, conf)

        # 3. An EC2 error on the call made while frozen (skip: the two DryRuns).
        w.emulator_control({"action": "CreateSnapshots", "fault": "internal", "count": 1,
                            "dry_run": False})
        r = session(w, ["SELECT * FROM ami_snapshot('frozen call fails')"] + [SAME_SESSION_CHECK])
        ok("InternalError" in r.stderr and "failed during snapshot" in r.stderr,
           "EC2 error while frozen: reaches SQL", r.stderr)
        ok("EC2 CreateSnapshots" in r.stderr and "CreateSnapshots: EC2 CreateSnapshots"
           not in r.stderr, "EC2 error while frozen: the action is named once", r.stderr)
        is_(r.stdout.split(), ["t", "t"], "EC2 error while frozen: the backup was aborted")
        check_after(w, "EC2 error while frozen")
        w.emulator_reset()

        # 4. Something else thaws a filesystem while the call is in flight.
        log_pos = os.path.getsize(w.helper_log)
        w.emulator_control({"action": "CreateSnapshots", "fault": "slow", "delay_ms": 1500,
                            "count": 1, "dry_run": False})
        p = session(w, ["SELECT status FROM ami_snapshot('thawed by others')"],
                    background=True)
        mnt = w.volume("data").mount
        thawed = False
        deadline = time.time() + 20
        while not thawed and p.poll() is None and time.time() < deadline:
            # Fails harmlessly ("Invalid argument") until the helper froze it.
            thawed = subprocess.run(["fsfreeze", "-u", mnt], capture_output=True).returncode == 0
            time.sleep(0.02)
        out, errout = p.communicate(timeout=60)
        ok(thawed, "thawed by others: the data filesystem was frozen and thawed by us")
        # Writes resumed before EC2 answered: not a consistent snapshot.
        ok(p.returncode != 0 and "FreezeBroken" in errout
           and "thawed before EC2 answered" in errout,
           "thawed by others: the snapshot fails with FreezeBroken", errout)
        log = log_since(w, log_pos)
        ok("%s was no longer frozen when the helper thawed it" % mnt in log,
           "thawed by others: the helper warns")
        ok("snapshot failed: FreezeBroken" in log, "thawed by others: the failure is logged")
        check_after(w, "thawed by others")
        w.emulator_reset()

        # 5. The socket directory: an existing one is left alone; /tmp-like ones refused.
        run_dir = w.path("run")
        st = os.stat(run_dir)
        is_((stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid), (0o755, 0, 0),
            "socket directory: the existing directory's owner and mode are unchanged")
        st = os.stat(os.path.join(run_dir, "helper.sock"))
        is_((stat.S_IMODE(st.st_mode), st.st_gid), (0o660, w.pg_gid),
            "socket: 0660, group socket_group")
        open_dir = tempfile.mkdtemp(prefix="amis-open.", dir="/var/tmp")
        try:
            os.chmod(open_dir, 0o1777)
            log_pos = os.path.getsize(w.helper_log)
            w.stop_helper()
            with open(w.helper_conf, "w") as f:
                f.write(conf.replace("socket = " + os.path.join(run_dir, "helper.sock"),
                                     "socket = " + os.path.join(open_dir, "helper.sock")))
            started = True
            try:
                w.start_helper()
            except RuntimeError:
                started = False
            ok(not started, "socket directory: a world-writable one is refused")
            ok("writable by others" in log_since(w, log_pos),
               "socket directory: with a clear error")
            is_(stat.S_IMODE(os.stat(open_dir).st_mode), 0o1777,
                "socket directory: the refused directory was not touched")
        finally:
            w.stop_helper()
            subprocess.run(["rm", "-rf", open_dir])
        restart_helper_with(w, conf)

        # 6. pg_backup_stop() waits for slow WAL archiving longer than client_timeout.
        restart_helper_with(w, conf.replace("client_timeout = 2min", "client_timeout = 2s"))
        slow = os.path.join(w.pgdata, SLOW_ARCHIVE_FILE)
        open(slow, "w").close()
        try:
            t0 = time.time()
            r = session(w, ["SELECT status FROM ami_snapshot('slow archive')"])
            took = time.time() - t0
        finally:
            os.unlink(slow)
        is_(r.stdout.strip(), "succeeded",
            "slow archiving: a client waiting in pg_backup_stop() is not timed out")
        ok(took > 4, "slow archiving: the call did wait for the archiver (%.1f s)" % took)
        if r.stdout.strip() != "succeeded":
            diag(r.stderr)
        restart_helper_with(w, conf)
        check_after(w, "slow archiving")

        # 7. A thaw that fails.  Only the tablespace's filesystem, which stays idle.
        shim = ioctl_shim.build(w)
        flag = w.path("fail-thaw")
        env = {"LD_PRELOAD": shim, "AMIS_TEST_FAIL_THAW": flag}
        w.stop_helper()
        w.start_helper(env_extra=env)
        ts_mount = w.volume("ts1").mount
        open(flag, "w").close()
        log_pos = os.path.getsize(w.helper_log)
        t0 = time.time()
        got = raw_client(w, "snapshot", ts_mount)
        is_(got[:2], ["ERROR", "ThawFailed"], "failed thaw: the request fails with ThawFailed")
        ok(got[2].startswith("could not thaw %s" % ts_mount)
           and "filesystems may still be frozen; retrying" in got[2],
           "failed thaw: its own message", got[2])
        got = raw_client(w, "prepare", ts_mount)
        is_(got[:2], ["ERROR", "ThawPending"], "failed thaw: a new request gets ThawPending")
        ok(ts_mount in got[2], "failed thaw: ThawPending names the frozen filesystem", got[2])
        time.sleep(2.5)
        nlog = log_since(w, log_pos).count("FILESYSTEMS STILL FROZEN")
        took = time.time() - t0
        ok(2 <= nlog <= took + 2,
           "failed thaw: retried and logged loudly, at most once a second (%d in %.1f s)"
           % (nlog, took))
        os.unlink(flag)
        ok(wait_log(w, log_pos, "filesystems thawed at last", 5),
           "failed thaw: thawed by a retry once FITHAW works")
        got = raw_client(w, "prepare", ts_mount)
        is_(got[0], "PREPARED", "failed thaw: new requests are accepted again", )
        check_after(w, "failed thaw")

        # 8. SIGTERM while a thaw is pending: the helper thaws before it exits.
        open(flag, "w").close()
        log_pos = os.path.getsize(w.helper_log)
        got = raw_client(w, "snapshot", ts_mount)
        is_(got[:2], ["ERROR", "ThawFailed"], "shutdown: a thaw is pending")
        helper = w.procs["helper"]
        helper.terminate()
        time.sleep(1)
        ok(helper.poll() is None, "shutdown: the helper keeps retrying instead of exiting")
        os.unlink(flag)
        try:
            rc = helper.wait(15)
        except subprocess.TimeoutExpired:
            rc = None
        is_(rc, 0, "shutdown: the helper thawed, then exited cleanly")
        ok("filesystems thawed at last" in log_since(w, log_pos),
           "shutdown: the thaw is logged")
        w.procs.pop("helper", None)
        w.start_helper()
        check_after(w, "shutdown with a pending thaw")
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        w.close()
    done()


if __name__ == "__main__":
    main()
