#!/usr/bin/python3
"""
End to end: privilege separation, and the helper serving while it waits.

- The EC2 worker is a child of the helper running as `nobody` (no groups,
  no capabilities, no_new_privs, not dumpable, oom_score_adj 0, no leaked
  descriptors); after a snapshot the worker holds the TCP
  connection to EC2 and the root helper holds none.
- A shared credentials file only root can read works (the worker opens it
  before dropping root).
- A second ami_snapshot() while the first waits for EC2 gets Busy at once;
  `--status` names the request (busy, then frozen with the mounts); a
  PREPARE while frozen gets Busy while the freeze lasts.
- `--thaw` while frozen abandons the call: the first call fails with
  ThawRequested, the filesystems are writable at once, and the snapshots
  EC2 made are found by tag and tagged failed.
- A worker that cannot start fails PREPARE with WorkerDied and the reason in
  the log, without a respawn loop.
- The worker killed while idle is replaced on the next call; the worker
  killed during the call made while frozen: the call fails with WorkerDied,
  everything is thawed, the history says so, and the next call works.
"""

import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import HELPER, World  # noqa: E402
from e2e import (SAME_SESSION_CHECK, check_after, last_history, log_pos,  # noqa: E402
                 log_since, session)

AKID = "AKIDPRIVSEPTEST01"
CRED_FILE = [None]
SECRET = "privsep-test-secret-not-logged-0123456789"


class CredFileWorld(World):
    """The emulator also accepts a static key, used through a root-only file."""

    def _emulator_config(self):
        cfg = super()._emulator_config()
        cfg["credentials"] = {AKID: {"secret_access_key": SECRET}}
        return cfg


def children(pid):
    with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
        return [int(x) for x in f.read().split()]


def status_fields(pid):
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.split()
    return out


def tcp_socket_inodes():
    inodes = set()
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(name) as f:
            for line in f.readlines()[1:]:
                inodes.add(line.split()[9])
    return inodes


def tcp_fds(pid):
    """How many of pid's descriptors are TCP sockets."""
    tcp = tcp_socket_inodes()
    n = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        m = re.match(r"socket:\[(\d+)\]", target)
        if m and m.group(1) in tcp:
            n += 1
    return n


def worker_of(w):
    """The helper's EC2 worker pid (its only long-lived child besides watchdogs)."""
    for pid in children(w.procs["helper"].pid):
        try:
            with open("/proc/%d/cmdline" % pid, "rb") as f:
                if b"--worker" in f.read():
                    return pid
        except OSError:
            pass
    return None


def ask(w, what):
    return subprocess.run([HELPER, "-c", w.helper_conf, "--" + what], capture_output=True,
                          text=True, timeout=30)


def wait_state(w, state, timeout=15):
    deadline = time.time() + timeout
    r = None
    while time.time() < deadline:
        r = ask(w, "status")
        if ("state: %s" % state) in r.stdout:
            return r
        time.sleep(0.05)
    return r


def test_identity(w):
    helper = w.procs["helper"].pid
    wpid = worker_of(w)
    ok(wpid is not None, "the helper has an EC2 worker child")
    if wpid is None:
        return
    st = status_fields(wpid)
    nobody = 65534
    is_(st["Uid"], [str(nobody)] * 4, "worker: real, effective, saved and fs uid are nobody")
    is_(st["Gid"], [str(nobody)] * 4, "worker: real, effective, saved and fs gid are nobody's")
    is_(st.get("Groups", []), [], "worker: no supplementary groups")
    is_(st["NoNewPrivs"], ["1"], "worker: no_new_privs")
    for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
        is_(st[cap], ["0000000000000000"], "worker: %s empty" % cap)
    is_(status_fields(helper)["Uid"][1], "0", "the helper itself runs as root")
    st_proc = os.stat("/proc/%d/environ" % wpid)
    is_(st_proc.st_uid, 0, "worker: not dumpable (its /proc files belong to root)")
    with open("/proc/%d/oom_score_adj" % wpid) as f:
        is_(f.read().strip(), "0", "worker: oom_score_adj reset to 0")
    # Only stdio, the socketpair (3), the pinned credentials file and sockets.
    leaked = []
    for fd in os.listdir("/proc/%d/fd" % wpid):
        target = os.readlink("/proc/%d/fd/%s" % (wpid, fd))
        if int(fd) <= 3 or target.startswith("socket:") or target == CRED_FILE[0]:
            continue
        leaked.append("%s -> %s" % (fd, target))
    is_(leaked, [], "worker: no descriptor of the root helper leaked into it")

    r = session(w, ["SELECT status FROM ami_snapshot('privsep-identity')"])
    ok("succeeded" in r.stdout, "a snapshot through the worker succeeds")
    is_(tcp_fds(helper), 0, "the root helper holds no TCP socket after the snapshot")
    ok(tcp_fds(wpid) >= 1, "the worker holds the (keep-alive) connection to EC2")
    log = open(w.helper_log).read()
    ok("credentials from profile:privsep" in log,
       "credentials came from the root-only shared credentials file")
    ok(SECRET not in log, "the secret key is not in the helper's log")


def raw_prepare(w):
    """A PREPARE straight on the helper's socket (as root): the answer's type and text."""
    def field(tag, v):
        return struct.pack(">HH", tag, len(v)) + v
    payload = (field(1, b"raw-prepare-1") + field(2, b"raw prepare") + field(3, b"\x01") +
               field(4, w.volume("data").mount.encode()))
    frame = b"AMSP" + struct.pack(">HHI", 1, 1, len(payload)) + payload
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(10)
    try:
        s.connect(w.path("run", "helper.sock"))
        s.sendall(frame)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    mtype = struct.unpack(">H", data[6:8])[0] if len(data) >= 12 else None
    return mtype, data[12:].decode("utf-8", "replace")


def slow_call_bg(w, name, latency_ms):
    """ami_snapshot(name) in the background, every EC2 call taking latency_ms."""
    w.emulator_control({"latency_ms": latency_ms})
    return session(w, ["SELECT status FROM ami_snapshot('%s')" % name] + [SAME_SESSION_CHECK],
                   background=True)


def slow_frozen_call_bg(w, name, delay_ms):
    """ami_snapshot(name) whose call made while frozen takes delay_ms (the two
    DryRuns before it are fast)."""
    w.emulator_control({"action": "CreateSnapshots", "fault": "slow", "delay_ms": delay_ms,
                        "count": 1, "dry_run": False})
    return session(w, ["SELECT status FROM ami_snapshot('%s')" % name] + [SAME_SESSION_CHECK],
                   background=True)


def test_busy_while_waiting(w):
    # Every EC2 call takes 4 s: the first call's PREPARE waits for EC2 while
    # a second call comes; the helper answers it Busy then, not 4 s later.
    first = slow_call_bg(w, "privsep-busy", 4000)
    try:
        st = wait_state(w, "busy")
        ok(st is not None and "privsep-busy" in st.stdout, "--status: busy, naming the request")
        t0 = time.time()
        second = session(w, ["SELECT status FROM ami_snapshot('privsep-second')"])
        took = time.time() - t0
        ok("Busy" in second.stderr, "a second call while an EC2 call is in flight gets Busy",
           second.stderr)
        # An ordering, not a speed: the answer came before the first call's
        # EC2 answer could have (delayed 4 s), so it did not wait for it.
        ok(took < 4.0, "... after %.2f s, before the first call's EC2 answer (delayed 4 s)"
           % took)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    w.emulator_control({"latency_ms": 0})
    ok("succeeded" in out, "the first call is not disturbed", err)


def test_status_thaw(w):
    pos = log_pos(w)
    first = slow_frozen_call_bg(w, "privsep-thaw", 8000)
    try:
        st = wait_state(w, "frozen")
        ok(st is not None and "state: frozen" in st.stdout, "--status reports frozen")
        is_(st.returncode if st else None, 1, "--status exits 1 while frozen")
        ok(st is not None and "frozen: %s" % w.volume("data").mount in st.stdout,
           "--status names the frozen data filesystem")
        # While frozen a second backend's own writes would wait for the thaw:
        # ask the helper directly.
        mtype, text = raw_prepare(w)
        is_(mtype, 8, "a PREPARE while frozen gets an ERROR")
        ok("Busy" in text, "... Busy", text)
        ok("state: frozen" in ask(w, "status").stdout, "... while still frozen (at once)")
        t0 = time.time()
        t = ask(w, "thaw")
        took = time.time() - t0
        is_(t.returncode, 0, "--thaw exits 0 once nothing is frozen")
        ok("thawed" in t.stdout, "--thaw reports thawed")
        # An ordering: --thaw did not wait for EC2's answer (delayed 8 s).
        ok(took < 8.0, "--thaw returned after %.2f s, before EC2's answer (delayed 8 s)" % took)
        diag(t.stdout.strip())
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    ok("ThawRequested" in err, "the first call fails with ThawRequested", err)
    is_(out.split()[-2:], ["t", "t"],
        "the session's backup was stopped (a new one starts and stops)")
    h = last_history(w)
    if h[0] != "privsep-thaw":
        h = w.psql("SELECT name, status, error_code FROM ami_snapshot_history "
                   "WHERE name = 'privsep-thaw'").split("|")
    is_(h[1:3], ["failed", "ThawRequested"], "the history records ThawRequested")
    check_after(w, "after --thaw")
    w.emulator_reset()
    log = log_since(w, pos)
    ok("asked for a thaw" in log, "the helper logs who asked for the thaw")
    m = re.search(r"EC2 created (\d+) snapshot\(s\) despite the failure", log)
    ok(m is not None, "the snapshots made by the abandoned call were found by tag")
    state = w.emulator_state()
    failed = [s for s in state["snapshots"]
              if s["tags"].get("ami-snapshot:name") == "privsep-thaw"]
    ok(failed and all(s["tags"].get("ami-snapshot:backup-state") == "failed" for s in failed),
       "... and tagged backup-state=failed")
    is_(ask(w, "status").stdout.splitlines()[0], "state: idle", "--status: idle afterwards")


def test_stop_while_frozen(w):
    """SIGTERM while frozen: the call in flight is abandoned and the
    filesystems thawed at once, as --thaw does; the caller gets StopRequested."""
    pos = log_pos(w)
    first = slow_frozen_call_bg(w, "privsep-stop", 45000)
    try:
        st = wait_state(w, "frozen")
        ok(st is not None and "state: frozen" in st.stdout, "stop: the call is frozen")
        helper = w.procs["helper"]
        helper.terminate()
        try:
            rc = helper.wait(90)
        except subprocess.TimeoutExpired:
            rc = None
        is_(rc, 0, "stop: the helper exits cleanly")
        w.procs.pop("helper", None)
        is_(w.frozen_mounts(), [], "stop: nothing is frozen once the helper is gone")
        out, err = first.communicate(timeout=60)
    finally:
        if first.poll() is None:
            first.kill()
    ok("StopRequested" in err, "stop: the call fails with the helper's code StopRequested, "
       "not a broken connection", err)
    ok("08006" not in err and "closed the connection" not in err,
       "stop: ... and not as a lost connection", err)
    is_(out.split()[-2:], ["t", "t"], "stop: the session's backup was stopped")
    h = w.psql("SELECT name, status, error_code FROM ami_snapshot_history "
               "WHERE name = 'privsep-stop'").split("|")
    is_(h[1:3], ["failed", "StopRequested"], "stop: the history records StopRequested")
    log = log_since(w, pos)
    ok("told to stop while frozen" in log, "stop: the helper logs why the call was abandoned")
    ok(re.search(r"EC2 created (\d+) snapshot\(s\) despite the failure", log) is not None,
       "stop: the snapshots made by the abandoned call were found by tag")
    state = w.emulator_state()
    made = [s for s in state["snapshots"] if s["tags"].get("ami-snapshot:name") == "privsep-stop"]
    ok(made and all(s["tags"].get("ami-snapshot:backup-state") == "failed" for s in made),
       "stop: ... and tagged backup-state=failed before the helper exited")
    w.emulator_reset()
    w.start_helper()
    check_after(w, "after a stop while frozen")


# Run as the allowed user: opens 7 connections to the helper's socket at
# once (even ones silent, odd ones with half a frame header), reports which
# are still open after 0.5 s, then, on a line from stdin, waits until the
# helper closed every one (at most 20 s) and reports again.
SLOT_HOLDER = r"""
import json, socket, sys, time
socks = []
for i in range(7):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(sys.argv[1])
    if i % 2:
        s.send(b"AMSP\x00")
    socks.append(s)
def states():
    out = []
    for s in socks:
        s.setblocking(False)
        try:
            d = s.recv(65536)
            out.append("closed" if not d else "answer:" + d[12:].decode("utf-8", "replace"))
        except BlockingIOError:
            out.append("open")
        except OSError as e:
            out.append("closed")
    return out
time.sleep(0.5)
first = states()
print(json.dumps(first), flush=True)
sys.stdin.readline()
deadline = time.time() + 20
closed = [x != "open" for x in first]
while time.time() < deadline and not all(closed):
    for i, s in enumerate(socks):
        if not closed[i]:
            try:
                s.setblocking(False)
                d = s.recv(65536)
                closed[i] = True
            except BlockingIOError:
                pass
            except OSError:
                closed[i] = True
    time.sleep(0.1)
print(json.dumps(closed), flush=True)
"""


def test_connection_slots(w):
    """An allowed user holding connections with no request cannot starve root
    nor the database: a uid gets at most 6 slots, root always answers, an idle
    connection makes room for a real call, and a connection that sends no
    complete request is dropped after 10 s."""
    import json
    pos = log_pos(w)
    holder = subprocess.Popen(["runuser", "-u", "postgres", "--", sys.executable, "-c",
                               SLOT_HOLDER, w.path("run", "helper.sock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        first = json.loads(holder.stdout.readline())
        diag("the 7 connections after 0.5 s: %s" % first)
        is_(sum(1 for x in first if x == "open"), 6,
            "slots: one uid keeps at most 6 connections to the helper")
        refused = [x for x in first if x.startswith("answer:")]
        if refused:
            ok("TooManyConnections" in refused[0],
               "slots: the one refused is told TooManyConnections", refused[0])
        st = ask(w, "status")
        ok(st.stdout.startswith("state: idle"),
           "slots: root's --status is answered meanwhile", st.stdout + st.stderr)
        time.sleep(1.2)
        r = session(w, ["SELECT status FROM ami_snapshot('privsep-slots')"])
        ok("succeeded" in r.stdout, "slots: ami_snapshot() from the database succeeds meanwhile",
           r.stderr)
        holder.stdin.write("go\n")
        holder.stdin.flush()
        closed = json.loads(holder.stdout.readline())
        ok(all(closed), "slots: the helper closed every connection that sent no request", closed)
    finally:
        if holder.poll() is None:
            holder.kill()
        holder.wait()
    log = log_since(w, pos)
    ok("closed to make room" in log, "slots: an idle connection was closed to make room (log)")
    ok("no request within 10 s" in log and "no complete request within 10 s" in log,
       "slots: silent and half-sent connections are dropped after 10 s (log)")
    check_after(w, "after the connection slots")


def test_worker_killed(w):
    wpid = worker_of(w)
    os.kill(wpid, signal.SIGKILL)
    time.sleep(0.2)
    r = session(w, ["SELECT status FROM ami_snapshot('privsep-respawn')"])
    ok("succeeded" in r.stdout, "after the worker was killed while idle, the next call works",
       r.stderr)
    new = worker_of(w)
    ok(new is not None and new != wpid, "a new worker was started")

    pos = log_pos(w)
    first = slow_frozen_call_bg(w, "privsep-kill", 8000)
    try:
        st = wait_state(w, "frozen")
        ok(st is not None and "state: frozen" in st.stdout, "frozen before the kill")
        t0 = time.time()
        os.kill(worker_of(w), signal.SIGKILL)
        while w.frozen_mounts(wait=0.5) and time.time() - t0 < 10:
            pass
        thawed = time.time() - t0
        ok(thawed < 3, "writable again %.2f s after the worker was killed while frozen "
           "(the call takes 8 s)" % thawed)
        out, err = first.communicate(timeout=60)
        elapsed = time.time() - t0
    finally:
        if first.poll() is None:
            first.kill()
    diag("the call ended %.2f s after the worker was killed" % elapsed)
    ok("WorkerDied" in err, "the call fails with WorkerDied", err)
    is_(out.split()[-2:], ["t", "t"], "the session's backup was stopped")
    check_after(w, "after the worker was killed while frozen")
    h = w.psql("SELECT status, error_code FROM ami_snapshot_history "
               "WHERE name = 'privsep-kill'").split("|")
    is_(h, ["failed", "WorkerDied"], "the history records WorkerDied")
    ok("killed by signal 9" in log_since(w, pos), "the helper logs how the worker ended")
    w.emulator_reset()
    r = session(w, ["SELECT status FROM ami_snapshot('privsep-after')"])
    ok("succeeded" in r.stdout, "the next call works with a new worker", r.stderr)


def test_worker_cannot_start(w):
    """A worker that exits at start (here: its credentials file cannot be
    opened) fails PREPARE with a clear error, and is not respawned in a loop."""
    loop = w.path("creds-loop")
    os.symlink(loop, loop)  # open() fails with ELOOP: not "missing"
    conf = open(w.helper_conf).read()
    w.stop_helper()
    with open(w.helper_conf, "w") as f:
        f.write(conf.replace("credentials_file = %s" % CRED_FILE[0],
                             "credentials_file = %s" % loop))
    try:
        w.start_helper()
        time.sleep(0.5)  # the worker started with the helper has exited by now
        pos = log_pos(w)
        r = session(w, ["SELECT status FROM ami_snapshot('privsep-nostart')"] +
                    [SAME_SESSION_CHECK])
        ok("WorkerDied" in r.stderr and "exited with status 1" in r.stderr,
           "PREPARE fails with WorkerDied, saying how the worker ended", r.stderr)
        is_(r.stdout.split()[-2:], ["t", "t"], "no backup left running")
        log = log_since(w, pos)
        ok("could not open %s" % loop in log, "the helper's log has the worker's reason")
        time.sleep(1.0)
        starts = log_since(w, pos).count("EC2 worker started")
        ok(starts <= 1, "no respawn loop: %d worker start(s) for one request" % starts)
        is_(ask(w, "status").stdout.splitlines()[0], "state: idle", "the helper is idle")
        check_after(w, "worker cannot start")
    finally:
        w.stop_helper()
        with open(w.helper_conf, "w") as f:
            f.write(conf)
        os.unlink(loop)
        w.start_helper()


def main():
    cred_dir = tempfile.mkdtemp(prefix="amis-creds.", dir="/var/tmp")
    cred_file = os.path.join(cred_dir, "credentials")
    CRED_FILE[0] = cred_file
    fd = os.open(cred_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, ("[privsep]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                  % (AKID, SECRET)).encode())
    os.close(fd)
    extra = "profile = privsep\ncredentials_file = %s\n" % cred_file
    w = None
    try:
        w = CredFileWorld(helper_conf_extra=extra)
        test_identity(w)
        test_busy_while_waiting(w)
        test_status_thaw(w)
        test_stop_while_frozen(w)
        test_connection_slots(w)
        test_worker_killed(w)
        test_worker_cannot_start(w)
    except Exception as e:
        bail(e, [w.helper_log] if w else [])
    finally:
        if w:
            w.close()
        os.unlink(cred_file)
        os.rmdir(cred_dir)
    done()


if __name__ == "__main__":
    main()
