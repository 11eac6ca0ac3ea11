#!/usr/bin/python3
"""
End to end: nothing stays frozen when the process holding the freeze cannot
thaw, and retryable EC2 errors are retried, never while frozen.

Cases: (a) SIGKILL of the helper while frozen: its watchdog thaws at once;
(b) SIGSTOP of the helper while frozen: the watchdog thaws at the deadline,
and the helper, continued, fails the request cleanly; (c) SIGKILL of the
helper and of its watchdog: the frozen marker makes the restarted helper
thaw; (d) a throttled CreateSnapshots is retried in a new freeze cycle, and
when every attempt fails the error lists them.

The CreateSnapshots call is kept in flight with the emulator's "slow" fault
(only the call made while frozen, after the two DryRuns), not latency_ms,
which would slow every call of the preparation as well.
"""

import os
import re
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import HELPER, World  # noqa: E402
from e2e import log_since, real_calls, restart_helper, wait_history  # noqa: E402

# Writers blocked on a frozen filesystem: they finish after the thaw.
STRAGGLERS = []


def probe_frozen(w, secs=1.0):
    """Our mounts where a write does not finish within secs (never blocks longer)."""
    procs = {}
    for v in w.volumes:
        probe = os.path.join(v.mount, ".wdprobe")
        procs[v.mount] = subprocess.Popen(["sh", "-c", "echo x > %s" % probe])
    deadline = time.time() + secs
    while time.time() < deadline and any(p.poll() is None for p in procs.values()):
        time.sleep(0.05)
    frozen = sorted(m for m, p in procs.items() if p.poll() is None)
    STRAGGLERS.extend(p for p in procs.values() if p.poll() is None)
    return frozen


def wait_frozen(w, timeout=30):
    """Waits until all our mounts are frozen; True if they were within timeout."""
    marker = marker_path(w)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(marker) and len(probe_frozen(w, 0.3)) == len(w.volumes):
            return True
        time.sleep(0.05)
    return False


def wait_thawed(w, timeout):
    """Seconds until nothing of ours is frozen, or None after timeout."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if probe_frozen(w, 0.3) == []:
            return time.time() - t0
    return None


def marker_path(w):
    return w.path("state", "frozen")


def children(pid):
    """The helper's children but its EC2 worker (ami-snapshot-helper --worker)."""
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return []
    out = []
    for k in kids:
        try:
            with open("/proc/%d/cmdline" % k, "rb") as f:
                if b"--worker" in f.read().split(b"\0"):
                    continue
        except OSError:
            pass
        out.append(k)
    return out


def proc_state(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return None


def snapshot_bg(w, name):
    cmd = w.pg_cmd(w.psql_cmd() + ["-c", "SELECT status FROM ami_snapshot('%s')" % name])
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(p, timeout=90):
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        err += "\n(killed after %d s)" % timeout
    return p.returncode, out.strip(), err.strip()


def slow_call(w, ms):
    """Only the CreateSnapshots made while frozen (after the two DryRuns) is slow."""
    w.emulator_control({"action": "CreateSnapshots", "fault": "slow", "delay_ms": ms,
                        "count": 1, "dry_run": False})


def case_sigkill(w):
    pos = os.path.getsize(w.helper_log)
    slow_call(w, 6000)
    p = snapshot_bg(w, "wd kill")
    ok(wait_frozen(w), "kill: the filesystems are frozen while the call is in flight")
    helper = w.procs["helper"]
    wd = children(helper.pid)
    is_(len(wd), 1, "kill: the helper has one child, the watchdog, while frozen")
    helper.send_signal(signal.SIGKILL)
    helper.wait(10)
    w.procs.pop("helper", None)
    took = wait_thawed(w, 5)
    ok(took is not None, "kill: thawed within a few seconds of the SIGKILL (%s s)"
       % (None if took is None else "%.2f" % took))
    rc, out, err = finish(p)
    ok(rc != 0 and "ERROR" in err, "kill: ami_snapshot() fails", err)
    diag("kill: " + err.splitlines()[0] if err else "kill: (no error text)")
    h = wait_history(w, "wd kill", "failed")
    is_(h[1], "failed", "kill: the history row is failed")
    is_(w.psql("SELECT 1"), "1", "kill: the database serves")
    ok("the helper died while they were frozen" in log_since(w, pos),
       "kill: the watchdog logged its thaw")
    ok(not os.path.exists(marker_path(w)), "kill: the watchdog removed the marker after its thaw")
    pos = os.path.getsize(w.helper_log)
    w.start_helper()
    ok("found the frozen marker" not in log_since(w, pos),
       "kill: the restarted helper found no marker to act on")

    def states():
        return sorted(set(sn["tags"].get("ami-snapshot:backup-state")
                          for sn in w.emulator_state()["snapshots"]
                          if sn["tags"].get("ami-snapshot:name") == "wd kill"))
    # No call needed: the idle helper settles what its predecessor left.
    t0 = time.monotonic()
    while states() != ["failed"] and time.monotonic() - t0 < 20:
        time.sleep(0.2)
    is_(states(), ["failed"], "kill: the restarted helper tagged the snapshots EC2 made for "
        "the killed call failed, with no call made (its state_dir/inflight entry)")
    ok(re.search(r"left unfinished by a helper that ended without finishing it .*still said "
                 r"backup-state=started: tagged failed", log_since(w, pos)),
       "kill: and logged it, naming the request and that they said started")
    r = w.psql("SELECT status FROM ami_snapshot('after kill')")
    is_(r, "succeeded", "kill: a new snapshot works after the restart")
    is_(os.listdir(os.path.join(w.path("state"), "inflight")) if os.path.isdir(
        os.path.join(w.path("state"), "inflight")) else [], [],
        "kill: no inflight entry is left")


def case_sigstop(w):
    restart_helper(w, "[helper]\nfreeze_timeout = 2s\n")
    pos = os.path.getsize(w.helper_log)
    slow_call(w, 4000)
    p = snapshot_bg(w, "wd stop")
    ok(wait_frozen(w), "stop: frozen while the call is in flight")
    helper = w.procs["helper"]
    wd = children(helper.pid)
    t0 = time.time()
    helper.send_signal(signal.SIGSTOP)
    try:
        took = wait_thawed(w, 10)
        ok(took is not None, "stop: the watchdog thawed though the helper is stopped (%s s)"
           % (None if took is None else "%.2f" % (time.time() - t0)))
        is_(proc_state(helper.pid), "T", "stop: the helper was still stopped then")
    finally:
        helper.send_signal(signal.SIGCONT)
    rc, out, err = finish(p)
    ok(rc != 0 and "freeze_timeout" in err, "stop: the request failed with the deadline", err)
    h = wait_history(w, "wd stop", "failed")
    is_(h[1], "failed", "stop: the history row is failed")
    log = log_since(w, pos)
    ok("the helper did not thaw within freeze_timeout" in log, "stop: the watchdog logged it")
    ok("the watchdog thawed the filesystems" in log, "stop: the helper learnt it from the watchdog")
    ok("was no longer frozen when the helper thawed it" in log,
       "stop: the helper's own thaw found them thawed")
    ok(helper.poll() is None, "stop: the helper lives on")
    time.sleep(0.5)
    ok(all(proc_state(pid) is None for pid in wd), "stop: the watchdog was reaped (no zombie)")
    ok(not os.path.exists(marker_path(w)), "stop: no marker left")
    ok(probe_frozen(w) == [], "stop: nothing frozen")
    r = w.psql("SELECT status FROM ami_snapshot('after stop')")
    is_(r, "succeeded", "stop: the next snapshot works")


def case_marker(w):
    restart_helper(w)
    slow_call(w, 8000)
    p = snapshot_bg(w, "wd marker")
    ok(wait_frozen(w), "marker: frozen while the call is in flight")
    helper = w.procs["helper"]
    wd = children(helper.pid)
    is_(len(wd), 1, "marker: the watchdog is there")
    for pid in wd:
        os.kill(pid, signal.SIGKILL)
    helper.send_signal(signal.SIGKILL)
    helper.wait(10)
    w.procs.pop("helper", None)
    ok(os.path.exists(marker_path(w)), "marker: the frozen marker exists")
    if os.path.exists(marker_path(w)):
        diag(open(marker_path(w)).read().rstrip())
    is_(len(probe_frozen(w, 1.5)), len(w.volumes),
        "marker: with helper and watchdog dead, the filesystems stay frozen")
    pos = os.path.getsize(w.helper_log)
    w.start_helper()
    took = wait_thawed(w, 10)
    ok(took is not None, "marker: the restarted helper thawed them")
    log = log_since(w, pos)
    ok("found the frozen marker" in log and "THAWED" in log, "marker: loudly logged")
    ok(not os.path.exists(marker_path(w)), "marker: removed")
    rc, out, err = finish(p)
    ok(rc != 0 and "ERROR" in err, "marker: ami_snapshot() failed", err)
    h = wait_history(w, "wd marker", "failed")
    is_(h[1], "failed", "marker: the history row is failed")
    is_(w.psql("SELECT 1"), "1", "marker: the database serves")


def kill_both_while_frozen(w, name):
    """SIGKILL the helper and its watchdog while frozen; the snapshot process."""
    slow_call(w, 8000)
    p = snapshot_bg(w, name)
    ok(wait_frozen(w), "%s: frozen while the call is in flight" % name)
    helper = w.procs["helper"]
    for pid in children(helper.pid):
        os.kill(pid, signal.SIGKILL)
    helper.send_signal(signal.SIGKILL)
    helper.wait(10)
    w.procs.pop("helper", None)
    return p


def recover_only(w):
    r = subprocess.run([HELPER, "-c", w.helper_conf, "--recover-only"],
                       capture_output=True, text=True, timeout=30)
    return r.returncode, r.stderr


def case_recover_only(w):
    """--recover-only (ExecStopPost), and a marker whose paths no longer match."""
    restart_helper(w)
    rc, err = recover_only(w)
    is_(rc, 0, "recover-only: no marker, nothing to do")
    p = kill_both_while_frozen(w, "wd moved")
    ok(os.path.exists(marker_path(w)), "moved: the frozen marker exists")
    # The mount points' paths are gone (another namespace, a move): only
    # the devices, still mounted elsewhere (here: where they were), tell.
    with open(marker_path(w)) as f:
        text = f.read()
    lines = []
    for line in text.splitlines():
        parts = line.split(" ", 2)
        if len(parts) == 3 and ":" in parts[1] and not line.startswith("#"):
            line = "%s %s /nonexistent/moved%s" % (parts[0], parts[1], parts[2])
        lines.append(line)
    with open(marker_path(w), "w") as f:
        f.write("\n".join(lines) + "\n")
    is_(len(probe_frozen(w, 1.5)), len(w.volumes), "moved: still frozen")
    rc, err = recover_only(w)
    if rc != 0:
        diag(err)
    is_(rc, 0, "moved: --recover-only thawed through another mount of each device")
    ok(wait_thawed(w, 5) is not None, "moved: nothing frozen")
    ok("looking for another mount" in err and "THAWED" in err, "moved: logged", err)
    ok(not os.path.exists(marker_path(w)), "moved: the marker removed")
    finish(p)
    wait_history(w, "wd moved", "failed")

    # A device mounted nowhere: the marker is kept, and the helper won't serve.
    with open(marker_path(w), "w") as f:
        f.write("# test\n1 4095:9 /nonexistent/gone\n")
    rc, err = recover_only(w)
    is_(rc, 1, "unresolved: --recover-only fails")
    ok(os.path.exists(marker_path(w)), "unresolved: the marker is kept")
    pos = os.path.getsize(w.helper_log)
    with open(w.helper_log, "a") as logf:
        r = subprocess.run([HELPER, "-c", w.helper_conf], stdout=logf,
                           stderr=subprocess.STDOUT, timeout=30)
    is_(r.returncode, 1, "unresolved: the helper exits instead of serving")
    ok("not serving" in log_since(w, pos), "unresolved: it says why")
    os.unlink(marker_path(w))
    w.start_helper()


def case_retries(w):
    restart_helper(w, "[helper]\nretries = 2\nretry_backoff = 200ms\n")
    pos = os.path.getsize(w.helper_log)
    calls = real_calls(w)
    w.emulator_control({"action": "CreateSnapshots", "fault": "throttle", "count": 1,
                        "dry_run": False})
    r = w.psql("SELECT status FROM ami_snapshot('wd retry')")
    is_(r, "succeeded", "retry: a throttled call succeeds at the second attempt")
    is_(real_calls(w) - calls, 2, "retry: the emulator saw two real CreateSnapshots calls")
    log = log_since(w, pos)
    is_(log.count("writes frozen for"), 2, "retry: two separate freeze windows, both logged")
    ok("attempt 1 of 3 failed: RequestLimitExceeded" in log, "retry: the retry is logged")
    ok(probe_frozen(w) == [], "retry: nothing frozen")

    restart_helper(w, "[helper]\nretries = 1\nretry_backoff = 200ms\n")
    w.emulator_control({"action": "CreateSnapshots", "fault": "throttle", "count": 5,
                        "dry_run": False})
    r = w.psql("SELECT * FROM ami_snapshot('wd retry fail')", check=False)
    ok(r.returncode != 0 and "all 2 attempts failed (RequestLimitExceeded, "
       "RequestLimitExceeded)" in r.stderr, "retry: the final error lists every attempt",
       r.stderr)
    h = wait_history(w, "wd retry fail", "failed")
    is_(h[1], "failed", "retry: the history row is failed")
    w.emulator_reset()
    ok(probe_frozen(w) == [], "retry: nothing frozen after the failure")


def case_worker_retries(w):
    """Every EC2 action goes through one retrying call: a throttled
    DescribeInstances and a throttled CreateTags are retried by the worker,
    the call made while frozen is not (the root process retries the cycle)."""
    restart_helper(w, "[helper]\nretries = 1\nretry_backoff = 100ms\n")
    pos = os.path.getsize(w.helper_log)
    calls = real_calls(w)
    w.emulator_control({"action": "DescribeInstances", "fault": "throttle", "count": 1})
    w.emulator_control({"action": "CreateTags", "fault": "unavailable_503", "count": 1})
    r = w.psql("SELECT status FROM ami_snapshot('worker retry')")
    is_(r, "succeeded", "worker retry: throttled DescribeInstances and a 503 on CreateTags")
    log = log_since(w, pos)
    ok("EC2 DescribeInstances: attempt 1 of 2 failed: RequestLimitExceeded" in log,
       "worker retry: DescribeInstances retried by the worker", log[-2000:])
    ok("EC2 CreateTags: attempt 1 of 2 failed: Unavailable" in log,
       "worker retry: CreateTags retried by the worker", log[-2000:])
    is_(real_calls(w) - calls, 1, "worker retry: one CreateSnapshots call, one freeze")
    h = w.psql("SELECT snapshot_ids FROM ami_snapshot_history WHERE name = 'worker retry'")
    made = [sn for sn in w.emulator_state()["snapshots"] if sn["id"] in h]
    is_(sorted(sn["tags"].get("ami-snapshot:backup-state") for sn in made),
        ["stopped"] * len(w.volumes), "worker retry: the retried tags are on every snapshot")

    # Never repeated: the call made while frozen, even with retries left.
    pos = os.path.getsize(w.helper_log)
    w.emulator_control({"action": "CreateSnapshots", "fault": "throttle", "count": 1,
                        "dry_run": False})
    r = w.psql("SELECT status FROM ami_snapshot('worker no repeat')")
    is_(r, "succeeded", "no repeat: succeeds by the root's second freeze cycle")
    log = log_since(w, pos)
    ok("EC2 CreateSnapshots: attempt" not in log,
       "no repeat: the worker did not repeat the call made while frozen")
    is_(log.count("writes frozen for"), 2, "no repeat: two freeze cycles instead")
    w.emulator_reset()
    ok(probe_frozen(w) == [], "worker retry: nothing frozen")


def case_stop_in_backoff(w):
    """SIGTERM during a retry back-off: no further freeze, a prompt exit."""
    restart_helper(w, "[helper]\nretries = 3\nretry_backoff = 20s\n")
    pos = os.path.getsize(w.helper_log)
    calls = real_calls(w)
    w.emulator_control({"action": "CreateSnapshots", "fault": "throttle", "count": 5,
                        "dry_run": False})
    p = snapshot_bg(w, "wd stop backoff")
    deadline = time.time() + 30
    while "retrying in" not in log_since(w, pos) and time.time() < deadline:
        time.sleep(0.05)
    ok("retrying in" in log_since(w, pos), "stop in back-off: the first attempt failed")
    helper = w.procs.pop("helper")
    t0 = time.time()
    helper.send_signal(signal.SIGTERM)
    try:
        helper.wait(10)
    except subprocess.TimeoutExpired:
        helper.kill()
        helper.wait()
    ok(time.time() - t0 < 5, "stop in back-off: the helper exited at once (%.1f s)"
       % (time.time() - t0))
    rc, out, err = finish(p)
    ok(rc != 0 and "HelperStopping" in err, "stop in back-off: the request failed so", err)
    is_(real_calls(w) - calls, 1, "stop in back-off: no second freeze cycle")
    ok(probe_frozen(w) == [], "stop in back-off: nothing frozen")
    w.emulator_reset()
    w.start_helper()


def main():
    w = World()
    try:
        w.psql("CREATE TABLE t (x int)")
        for case in (case_sigkill, case_sigstop, case_marker, case_recover_only,
                     case_retries, case_worker_retries, case_stop_in_backoff):
            case(w)
            if "helper" not in w.procs:
                w.start_helper()
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        w.close()
        for p in STRAGGLERS:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
    done()


if __name__ == "__main__":
    main()
