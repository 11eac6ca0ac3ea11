#!/usr/bin/python3
"""
chaos.py - a randomized fault campaign against the real helper, PostgreSQL
and the EC2 emulator, checked against the guarantees after every run.

    test/chaos/chaos.py [--seed S] [--runs N] [--restore-every K] [--soak N]

Each run is one ami_snapshot() call (a snapshot set, 1 in 10 with freeze =>
false, or an AMI), or about one in DRILL_EVERY a drill of the newest good set
(ami_snapshot_verify()), while pgbench writes, with one fault (two, 1 run in 5) drawn from
FAULTS. A signal fault is injected at a step of the call drawn from STEPS,
found in the helper's own log or --status; an EC2 or IMDS fault is armed in
the emulator before the call, at the request it names. The seed fixes every
choice: the same seed replays the same campaign (the timing within a step
is the machine's).

After every run: no filesystem was frozen longer than freeze_timeout + 1 s
(a writer on every filesystem of the world measures how long its writes
wait), nothing is frozen now, the database serves, a restarted helper
answers --status within 2 s, and pgbench lost no transaction unless the run
restarted PostgreSQL. Every --restore-every runs, and at the end, after a
clean call: no history row is 'running', every snapshot the campaign made
carries a final backup-state (stopped, failed or aborted), and the newest
successful set restores (crash recovery, pgbench's invariant, amcheck).

The first violation stops the campaign: it prints the seed, the run, its
choices and a timeline. TAP output; the last line is "N passed, N failed".

--soak N: N calls without faults instead, with the helper's and its
worker's resident memory and open descriptors sampled every 50 calls; it
fails if either grows beyond a small allowance after the first 100 calls.
The soak deletes its older snapshots at each sample: each one pins the
blocks its volumes change afterwards in the sandbox's store.
"""

import argparse
import os
import random
import re
import signal
import subprocess
import sys
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, ok  # noqa: E402
from world import HELPER, PGBIN, World  # noqa: E402
from e2e import check_restore, MARK_PROC  # noqa: E402
import ioctl_shim  # noqa: E402
from restore import Restored  # noqa: E402
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "e2e"))
from test_verify import leftovers, loop_count  # noqa: E402
from e2e import drill_conf  # noqa: E402

FREEZE_TIMEOUT_S = 3
# The helper runs with test/lib/ioctl_shim.py's LD_PRELOAD shim: FITHAW
# failing for a while, and the pauses after the first FIFREEZE / FITHAW.
# Where a signal fault lands: the helper's steps, as its log and --status show them.
STEPS = ["connect", "prepared", "freeze1", "frozen", "thaw1", "pending", "tagging", "done"]
WATCHDOG_STEPS = ["freeze1", "frozen", "thaw1"]
SIGNAL_FAULTS = ["helper_kill", "helper_term", "helper_stopcont", "watchdog_kill",
                 "watchdog_term", "watchdog_stopcont", "worker_kill", "worker_term",
                 "worker_stopcont", "backend_terminate", "backend_cancel", "client_disconnect",
                 "pg_immediate", "thaw_fails", "statedir_full"]
# A drill (ami_snapshot_verify() of the newest good set) is the call of
# about one run in DRILL_EVERY once a set exists; its faults are signal
# faults, at the connection or some time into the helper's job.
DRILL_EVERY = 12
DRILL_STEPS = ["connect", "job"]
# Two faults that together take away both thawers are not a single failure
# the helper can survive by design: the watchdog stopped while the helper
# itself is killed or stopped (each alone is covered).
EXCLUSIVE = [{"watchdog_stopcont", "helper_kill"}, {"watchdog_stopcont", "helper_stopcont"},
             {"watchdog_kill", "helper_kill"}, {"watchdog_kill", "helper_stopcont"}]
EC2_FAULTS = ["ec2_internal", "ec2_throttle", "ec2_timeout", "ec2_lost", "ec2_garbage",
              "ec2_slow", "tags_fail", "imds_down", "statement_timeout"]
FAULTS = SIGNAL_FAULTS + EC2_FAULTS
FINAL_STATES = {"stopped", "failed", "aborted"}


class Violation(Exception):
    pass


class FreezeWatch:
    """A writer per filesystem of the world: write + fsync every 50 ms and
    keep the longest wait, which is at least how long it stayed frozen."""

    def __init__(self, mounts):
        self.mounts = mounts
        self.longest = {m: 0.0 for m in mounts}
        self.stop = False
        self.threads = [threading.Thread(target=self._run, args=(m,), daemon=True)
                        for m in mounts]
        for t in self.threads:
            t.start()

    def _run(self, mount):
        path = os.path.join(mount, ".chaos-watch")
        while not self.stop:
            t0 = time.monotonic()
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                os.write(fd, b"x")
                os.fsync(fd)
                os.close(fd)
            except OSError:
                pass
            took = time.monotonic() - t0
            if took > self.longest[mount]:
                self.longest[mount] = took
            time.sleep(0.05)

    def take(self):
        """The longest wait since the last take(), per mount."""
        got, self.longest = self.longest, {m: 0.0 for m in self.mounts}
        return got

    def close(self):
        self.stop = True


class Campaign:
    def __init__(self, seed, runs, restore_every):
        self.seed = seed
        self.rng = random.Random(seed)
        self.runs = runs
        self.restore_every = restore_every
        self.timeline = []
        self.t0 = time.monotonic()
        self.good = []          # (run, snapshot ids, marks committed before the call)
        self.pg_restarts = 0
        self.w = World(pg_conf_extra="client_connection_check_interval = 200ms\n",
                       helper_conf_extra="[helper]\nfreeze_timeout = %ds\nretries = 1\n"
                                         "retry_backoff = 200ms\nec2_timeout = 5s\n"
                                         % FREEZE_TIMEOUT_S)
        self.watch = None
        self.termed = False
        self.state_tmpfs = None
        self.tally = {}     # fault@step (or EC2 fault) -> runs it was injected in

    # ---- the world ----

    def event(self, what):
        line = "%8.3f %s" % (time.monotonic() - self.t0, what)
        self.timeline.append(line)

    def setup(self):
        w = self.w
        shim = ioctl_shim.build(w)
        self.fail_thaw_flag = w.path("fail-thaw")
        self.pause_dir = w.path("pause")
        os.makedirs(self.pause_dir)
        self.helper_env = {"LD_PRELOAD": shim, "AMIS_TEST_FAIL_THAW": self.fail_thaw_flag,
                           "AMIS_TEST_PAUSE_DIR": self.pause_dir}
        w.stop_helper()
        # state_dir on a small tmpfs of its own, which a fault fills.
        state = w.path("state")
        keep = w.path("state.before")
        if os.path.isdir(state):
            os.rename(state, keep)
        os.makedirs(state)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "chaos-state", state],
                       check=True)
        self.state_tmpfs = state
        if os.path.isdir(keep):
            subprocess.run(["cp", "-a", keep + "/.", state], check=True)
        # Drills from SQL, run by the helper as jobs.
        self.drill_dir = w.path("drill")
        os.makedirs(self.drill_dir)
        w.helper_conf_extra += drill_conf(w, self.drill_dir)
        with open(w.helper_conf, "w") as f:
            f.write(w.helper_config_text())
        w.start_helper(env_extra=self.helper_env)
        w.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port), "-i",
                       "-s", "2", "--tablespace=ts1", "-q", "bench"])
        w.psql(MARK_PROC, db="bench")
        self.watch = FreezeWatch([v.mount for v in w.volumes])
        self.loops = loop_count(w)
        # Every request pays a little: the steps last long enough to be hit.
        w.emulator_control({"latency_ms": 60})

    def helper_pid(self):
        p = self.w.procs.get("helper")
        return p.pid if p and p.poll() is None else None

    def children(self, pid):
        try:
            with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return []

    def child_by_uid(self, uid_wanted):
        """The worker (uid nobody), or the watchdog (root, a fork of the helper:
        not the jobs, which run ami-snapshot)."""
        pid = self.helper_pid()
        for c in self.children(pid) if pid else []:
            try:
                with open("/proc/%d/status" % c) as f:
                    uid = int(re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1))
                with open("/proc/%d/comm" % c) as f:
                    comm = f.read().strip()
            except (OSError, AttributeError):
                continue
            if uid == uid_wanted and (uid != 0 or comm.startswith("ami-snapshot-he")):
                return c
        return None

    def status(self):
        r = subprocess.run([HELPER, "-c", self.w.helper_conf, "--status"], capture_output=True,
                           text=True, timeout=15)
        return r.stdout

    def ensure_helper(self, run):
        """Restarts a helper that is gone; it must answer --status within 2 s."""
        p = self.w.procs.get("helper")
        if p and self.termed:
            try:   # told to stop: it thaws, tags and ends its jobs first
                p.wait(60)
            except subprocess.TimeoutExpired:
                self.check(False, run, "the helper exits within 60 s of SIGTERM")
        self.termed = False
        if p and p.poll() is None:
            return
        self.w.procs.pop("helper", None)
        t0 = time.monotonic()
        self.w.start_helper(env_extra=self.helper_env)
        while time.monotonic() - t0 < 10:
            if self.status().startswith("state:"):
                break
            time.sleep(0.05)
        took = time.monotonic() - t0
        self.event("helper restarted, serving after %.2f s" % took)
        self.check(took <= 2.0, run, "the restarted helper serves within 2 s (%.2f s)" % took)

    def ensure_postgres(self):
        if self.w.psql("SELECT 1", check=False).returncode != 0:
            self.w.start_postgres()
            self.event("PostgreSQL started again")

    # ---- one run ----

    def choose(self, i):
        nfaults = 2 if self.rng.random() < 0.2 else 1
        drill = self.good and self.rng.random() < 1.0 / DRILL_EVERY
        while True:
            faults = self.rng.sample(SIGNAL_FAULTS if drill else FAULTS, nfaults)
            if set(faults) not in EXCLUSIVE:
                break
        kind = self.rng.random()
        if drill:
            return {"run": i, "name": "drill of run %d" % self.good[-1][0], "drill": self.good[-1],
                    "freeze": False, "image": None,
                    "faults": [(f, self.rng.choice(DRILL_STEPS), self.rng.random())
                               for f in faults]}
        # The watchdog lives while filesystems are frozen, and only then.
        steps = {f: self.rng.choice(WATCHDOG_STEPS if f.startswith("watchdog_") else STEPS)
                 for f in faults if f in SIGNAL_FAULTS}
        return {"run": i, "name": "chaos-%d-%d" % (self.seed, i), "drill": None,
                "freeze": not 0.70 <= kind < 0.80,
                "image": "register" if 0.80 <= kind < 0.93 else "create" if kind >= 0.93 else None,
                "faults": [(f, steps.get(f), self.rng.random()) for f in faults]}

    def arm(self, fault, x):
        """EC2/IMDS faults, set in the emulator before the call. x in [0, 1)."""
        w = self.w
        real = {"action": "CreateSnapshots", "count": 1, "dry_run": False}   # the call made while frozen
        if fault == "ec2_internal":
            w.emulator_control(dict(real, fault="internal"))
        elif fault == "ec2_throttle":
            w.emulator_control(dict(real, fault="throttle", count=1 + int(x * 3)))
        elif fault == "ec2_timeout":
            w.emulator_control(dict(real, fault="slow", delay_ms=(FREEZE_TIMEOUT_S + 2) * 1000))
        elif fault == "ec2_lost":
            w.emulator_control(dict(real, fault="drop", execute=True))
        elif fault == "ec2_garbage":
            w.emulator_control(dict(real, fault="malformed", variant="garbage"))
        elif fault == "ec2_slow":
            w.emulator_control(dict(real, fault="slow", delay_ms=int(300 + x * 1500)))
        elif fault == "tags_fail":
            w.emulator_control({"action": "CreateTags", "fault": "internal",
                                "count": 1 + int(x * 2)})
        elif fault == "imds_down":
            w.emulator_control({"imds": "down", "mode": "close", "count": 1 + int(x * 4)})

    def wait_step(self, step, call, deadline):
        """True once the call reached step (False if it ended first)."""
        pos0 = self.log_pos
        if step in ("freeze1", "thaw1"):
            at = os.path.join(self.pause_dir, "pause-%s.at" % step[:-1])
            while time.monotonic() < deadline and call.poll() is None:
                if os.path.exists(at):
                    return True
                time.sleep(0.005)
            return False
        marks = {"prepared": "prepared: instance", "pending": "snapshots pending",
                 "done": "done (stop lsn", "job": "started a verify job"}
        while time.monotonic() < deadline and call.poll() is None:
            if step == "connect":
                return True
            if step == "frozen":
                if "state: frozen" in self.status():
                    return True
                continue
            try:
                with open(self.w.helper_log, errors="replace") as f:
                    f.seek(pos0)
                    text = f.read()
            except OSError:
                text = ""
            if step == "tagging":
                if "snapshots pending" in text:
                    time.sleep(0.05)
                    return True
            elif marks[step] in text:
                return True
            time.sleep(0.01)
        return False

    def backend_pid(self):
        r = self.w.psql("SELECT pid FROM pg_stat_activity "
                        "WHERE query ~ 'ami_snapshot(_verify)?\\(' "
                        "AND pid <> pg_backend_pid() AND state = 'active'", check=False)
        return int(r.stdout.split()[0]) if r.returncode == 0 and r.stdout.strip() else None

    def inject(self, fault, x, call):
        w = self.w
        hp = self.helper_pid()
        if fault == "helper_kill" and hp:
            os.kill(hp, signal.SIGKILL)
        elif fault == "helper_term" and hp:
            os.kill(hp, signal.SIGTERM)
            self.termed = True
        elif fault == "helper_stopcont" and hp:
            os.kill(hp, signal.SIGSTOP)
            time.sleep(0.2 + x * (FREEZE_TIMEOUT_S + 1.5))
            os.kill(hp, signal.SIGCONT)
        elif fault.startswith(("watchdog_", "worker_")):
            pid = self.child_by_uid(0 if fault.startswith("watchdog_") else 65534)
            if not pid:
                self.event("%s: no such process now (not injected)" % fault)
                return
            if fault.endswith("_stopcont"):
                os.kill(pid, signal.SIGSTOP)
                self.event("SIGSTOP to the %s" % fault.split("_")[0])
                time.sleep(0.2 + x * (FREEZE_TIMEOUT_S + 1.5))
                try:
                    os.kill(pid, signal.SIGCONT)
                except ProcessLookupError:
                    pass
            else:
                os.kill(pid, signal.SIGKILL if fault.endswith("_kill") else signal.SIGTERM)
        elif fault == "statedir_full":
            self.fill_state_dir()
        elif fault in ("backend_terminate", "backend_cancel"):
            pid = self.backend_pid()
            if pid:
                w.psql("SELECT pg_%s_backend(%d)" % (
                    "terminate" if fault == "backend_terminate" else "cancel", pid), check=False)
        elif fault == "client_disconnect":
            c = self.current
            subprocess.run(["pkill", "-KILL", "-f",
                            "ami_snapshot_verify\\(%d," % c["drill"][3] if c["drill"]
                            else "ami_snapshot\\('%s'" % c["name"]])
            call.send_signal(signal.SIGKILL)
        elif fault == "thaw_fails":
            # FITHAW fails (EIO, the helper's LD_PRELOAD shim) for a while:
            # the helper and its watchdog retry until it works.
            open(self.fail_thaw_flag, "w").close()
            threading.Timer(0.3 + x * (FREEZE_TIMEOUT_S - 1),
                            lambda: os.path.exists(self.fail_thaw_flag)
                            and os.unlink(self.fail_thaw_flag)).start()
        elif fault == "pg_immediate":
            w.stop_postgres(mode="immediate")
            self.pg_restarts += 1
            w.start_postgres()
        self.event("injected %s" % fault)

    def one_run(self, i):
        w = self.w
        c = self.choose(i)
        self.current = c
        self.timeline = []
        self.event("run %d: %s, freeze=%s, image=%s, faults %s" % (
            i, c["name"], c["freeze"], c["image"],
            ", ".join("%s@%s" % (f, s) if s else f for f, s, _ in c["faults"])))
        for f, s, x in c["faults"]:
            if f in EC2_FAULTS:
                self.arm(f, x)
                self.tally[f] = self.tally.get(f, 0) + 1
            if s in ("freeze1", "thaw1"):   # the shim pauses after the first one
                open(os.path.join(self.pause_dir, "pause-%s" % s[:-1]), "w").close()
        restarts = any(f in ("pg_immediate",) for f, _, _ in c["faults"])
        stmt = [f for f, _, _ in c["faults"] if f == "statement_timeout"]
        self.log_pos = os.path.getsize(w.helper_log)
        bench = subprocess.Popen(
            w.pg_cmd([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port),
                      "-c", "4", "-j", "2", "-T", "6", "-n", "bench"]),
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        marks = threading.Thread(target=w.psql, args=("CALL write_marks(6)",),
                                 kwargs={"db": "bench", "check": False}, daemon=True)
        marks.start()
        time.sleep(0.5)
        before = int(w.psql("SELECT coalesce(max(id), 0) FROM marks", db="bench"))
        sql = []
        if stmt:
            sql += ["-c", "SET statement_timeout = %d" % int(300 + c["faults"][0][2] * 2000)]
        if c["drill"]:
            sql += ["-c", "SELECT outcome, coalesce(checks_failed::text, '') FROM "
                          "ami_snapshot_verify(%d, error_on_failure => false)" % c["drill"][3]]
        else:
            sql += ["-c", "SELECT status, array_to_string(snapshot_ids, ','), id FROM "
                          "ami_snapshot('%s', freeze => %s%s)"
                          % (c["name"], "true" if c["freeze"] else "false",
                             ", image => '%s'" % c["image"] if c["image"] else "")]
        cmd = w.pg_cmd([x for x in w.psql_cmd() if x not in ("-v", "ON_ERROR_STOP=1")] + sql)
        call = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 40
        injected = 0
        for f, s, x in c["faults"]:
            if s is None:
                continue
            if self.wait_step(s, call, deadline):
                # Into a drill (about 3 s long) anywhere; a snapshot's steps are short.
                time.sleep(x * (3.0 if s == "job" else 0.05))
                self.inject(f, x, call)
                injected += 1
                key = "%s@%s" % (f, s)
                self.tally[key] = self.tally.get(key, 0) + 1
            else:
                self.event("the call ended before step %s: %s not injected" % (s, f))
        try:
            out, err = call.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            call.kill()
            out, err = call.communicate()
            err += "\n(the call did not end within 90 s)"
        self.event("call ended (%s): %s %s" % (call.returncode, out.strip()[:200],
                                               err.strip().replace("\n", " / ")[:300]))
        bout, _ = bench.communicate(timeout=120)
        marks.join(60)
        # Recover what the faults took down, then clear them.
        self.unfill_state_dir()
        for f in os.listdir(self.pause_dir):
            os.unlink(os.path.join(self.pause_dir, f))
        deadline = time.monotonic() + FREEZE_TIMEOUT_S + 2
        while os.path.exists(self.fail_thaw_flag) and time.monotonic() < deadline:
            time.sleep(0.1)
        self.ensure_postgres()
        self.ensure_helper(i)
        w.emulator_control({"clear_faults": True, "clear_imds": True})
        # The invariants of the run.
        longest = self.watch.take()
        worst = max(longest.values())
        self.event("longest write wait %.2f s" % worst)
        self.check(worst <= FREEZE_TIMEOUT_S + 1.0, i,
                   "no filesystem frozen longer than freeze_timeout + 1 s (%.2f s)" % worst)
        self.check(w.frozen_mounts(wait=1.0) == [], i, "nothing is frozen after the run")
        self.check(w.psql("SELECT 1", check=False).returncode == 0, i, "the database serves")
        failed = re.search(r"number of failed transactions: (\d+)", bout)
        aborted = "aborted" in bout or bench.returncode not in (0,)
        if not restarts:
            self.check(failed is not None and failed.group(1) == "0" and not aborted, i,
                       "pgbench: no transaction refused", bout[-800:])
        if c["drill"]:
            self.check_drill(i, c, out, injected)
        # A set to restore later (an AMI's also holds the root volume, not the database's).
        elif call.returncode == 0 and "succeeded" in out and not c["image"]:
            fields = out.strip().split("|")
            self.good.append((i, fields[1].split(","), before, int(fields[2])))

    def check_drill(self, i, c, out, injected):
        """A drill leaves nothing (volumes, mounts, processes, scratch, loop
        devices), also when it was killed: the helper (or the restarted one)
        cleans up; unharmed, it passed."""
        w = self.w
        if not injected:
            self.check(out.strip().startswith("passed|"), i,
                       "a drill with no fault injected passed", out)
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            left = leftovers(w, self.drill_dir)
            if not any(left.values()) and not w.ec2_state()["loop_devices"] \
                    and loop_count(w) == self.loops:
                break
            time.sleep(0.5)
        self.event("drill: nothing left after %.1f s" % (180 - (deadline - time.monotonic())))
        self.check(not any(left.values()), i, "the drill left nothing", str(left))
        self.check(not w.ec2_state()["loop_devices"], i,
                   "the drill's volumes are gone (the emulator holds no loop device)")
        self.check(loop_count(w) == self.loops, i, "no loop device left by the drill")

    def fill_state_dir(self):
        """state_dir's filesystem (a small tmpfs of the campaign's) full."""
        try:
            with open(os.path.join(self.w.path("state"), "chaos-fill"), "wb") as f:
                while True:
                    f.write(b"\0" * 65536)
                    f.flush()
        except OSError:
            pass

    def unfill_state_dir(self):
        try:
            os.unlink(os.path.join(self.w.path("state"), "chaos-fill"))
            self.event("state_dir has room again")
        except FileNotFoundError:
            pass

    def check(self, cond, run, what, detail=None):
        if not cond:
            raise Violation("run %d: %s%s" % (run, what, ("\n" + detail) if detail else ""))

    # ---- the campaign's invariants ----

    def settle_and_check(self, final):
        """A clean call settles what the runs left; then history and EC2 must agree."""
        w = self.w
        self.event("clean call")
        r = w.psql("SELECT status FROM ami_snapshot('chaos-%d-clean')" % self.seed, check=False)
        if r.returncode != 0:     # the helper may still be ending an abandoned call: once more
            time.sleep(2)
            r = w.psql("SELECT status FROM ami_snapshot('chaos-%d-clean')" % self.seed,
                       check=False)
        self.check(r.returncode == 0, -1, "a clean call after the runs succeeds", r.stderr)
        running = w.psql("SELECT name FROM ami_snapshot_history WHERE status = 'running'")
        self.check(running == "", -1, "no history row is left 'running'", running)
        running = w.psql("SELECT id FROM ami_snapshot_verification WHERE status = 'running'")
        self.check(running == "", -1, "no verification row is left 'running'", running)
        snaps = [s for s in w.emulator_state()["snapshots"]
                 if s["tags"].get("ami-snapshot:name", "").startswith("chaos")]
        bad = ["%s %s (%s)" % (s["snapshot_id"] if "snapshot_id" in s else s.get("id"),
                              s["tags"].get("ami-snapshot:name"),
                              s["tags"].get("ami-snapshot:backup-state"))
               for s in snaps if s["tags"].get("ami-snapshot:backup-state") not in FINAL_STATES]
        images = [im for im in w.emulator_state().get("images", [])
                  if im.get("tags", {}).get("ami-snapshot:name", "").startswith("chaos")]
        bad += ["%s %s (%s)" % (im.get("image_id", im.get("id")), im["tags"].get("ami-snapshot:name"),
                               im["tags"].get("ami-snapshot:backup-state"))
                for im in images if im.get("state") != "deregistered"
                and im["tags"].get("ami-snapshot:backup-state") not in FINAL_STATES | {None}]
        self.check(not bad, -1, "every snapshot and image the campaign made has a final "
                   "backup-state", "\n".join(bad))
        ok(True, "after %d runs: no row running, %d snapshots and %d images all in a final state"
           % (self.done_runs, len(snaps), len(images)))
        if self.good:
            i, ids, before, _ = self.good[-1]
            restored = Restored(w, ids)
            try:
                diag("restoring the set of run %d" % i)
                check_restore(w, restored, before)
            finally:
                restored.close()
        if not final:
            self.forget_snapshots()

    def forget_snapshots(self):
        """Checked: the older snapshots go (each pins the blocks its volumes
        change later in the sandbox's store); the newest good set stays."""
        w = self.w
        keep = set(self.good[-1][1]) if self.good else set()
        gone = 0
        for im in w.emulator_state().get("images", []):
            if im.get("tags", {}).get("ami-snapshot:name", "").startswith("chaos"):
                try:
                    w.ec2_call("DeregisterImage", ImageId=im["id"])
                except RuntimeError:
                    pass
        for sn in w.emulator_state()["snapshots"]:
            if sn["tags"].get("ami-snapshot:name", "").startswith("chaos") and \
                    sn["id"] not in keep:
                try:
                    w.ec2_call("DeleteSnapshot", SnapshotId=sn["id"])
                    gone += 1
                except RuntimeError as e:
                    diag("could not delete %s: %s" % (sn["id"], e))
        diag("deleted %d checked snapshots of earlier runs" % gone)

    def run(self):
        self.setup()
        self.done_runs = 0
        for i in range(self.runs):
            try:
                self.one_run(i)
            except Violation as v:
                ok(False, "seed %d: %s" % (self.seed, v),
                   "replay: test/chaos/chaos.py --seed %d --runs %d\n%s"
                   % (self.seed, i + 1, "\n".join(self.timeline)))
                return False
            self.done_runs += 1
            c = self.current
            ok(True, "run %d (%s%s): %s: the guarantees hold" % (
                i, c["name"] if c["drill"] else "freeze" if c["freeze"] else "no freeze",
                ", image %s" % c["image"] if c["image"] else "",
                ", ".join("%s@%s" % (f, s) if s else f for f, s, _ in c["faults"])))
            diag("\n".join(self.timeline[1:]))
            if self.restore_every and (i + 1) % self.restore_every == 0 and i + 1 < self.runs:
                try:
                    self.settle_and_check(False)
                except Violation as v:
                    ok(False, "seed %d: %s" % (self.seed, v), "\n".join(self.timeline))
                    return False
        try:
            self.settle_and_check(True)
        except Violation as v:
            ok(False, "seed %d: %s" % (self.seed, v), "\n".join(self.timeline))
            return False
        diag("faults injected (signal faults at their step; EC2 faults armed), by count:\n" +
             "\n".join("%5d %s" % (n, k) for k, n in
                       sorted(self.tally.items(), key=lambda kv: (-kv[1], kv[0]))))
        return True

    def soak(self, calls):
        """calls consecutive snapshots with no fault: memory and descriptors stay flat."""
        self.setup()
        w = self.w
        w.emulator_control({"latency_ms": 0})
        samples = []
        for i in range(calls):
            r = w.psql("SELECT status FROM ami_snapshot('soak-%d')" % i, check=False)
            if r.returncode != 0 or "succeeded" not in r.stdout:
                ok(False, "soak call %d succeeds" % i, r.stderr)
                return False
            if i % 50 == 0 or i == calls - 1:
                # Each snapshot pins the blocks its volumes change later in the
                # sandbox's store (copy-on-write): keep the last call's only.
                keep = "soak-%d" % i
                for sn in w.emulator_state()["snapshots"]:
                    if sn["tags"].get("ami-snapshot:name", keep) != keep:
                        w.ec2_call("DeleteSnapshot", SnapshotId=sn["id"])
                hp = self.helper_pid()
                wk = self.child_by_uid(65534)
                samples.append((i, rss_kb(hp), nfds(hp), rss_kb(wk), nfds(wk)))
                diag("after %d calls: helper %d kB, %d fds; worker %d kB, %d fds" % samples[-1])
        base = [s for s in samples if s[0] >= 100] or samples
        first, last = base[0], base[-1]
        ok(last[1] <= first[1] + 1024, "soak: the helper's memory is flat (%d -> %d kB)"
           % (first[1], last[1]))
        ok(last[2] <= first[2], "soak: the helper's descriptors are flat (%d -> %d)"
           % (first[2], last[2]))
        ok(last[3] <= first[3] + 2048, "soak: the worker's memory is flat (%d -> %d kB)"
           % (first[3], last[3]))
        ok(last[4] <= first[4] + 2, "soak: the worker's descriptors are flat (%d -> %d)"
           % (first[4], last[4]))
        return True

    def close(self):
        if self.watch:
            self.watch.close()
        if self.state_tmpfs:
            self.w.stop_helper()
            if subprocess.run(["umount", self.state_tmpfs]).returncode != 0:
                subprocess.run(["umount", "-l", self.state_tmpfs])
        self.w.close()


def rss_kb(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            return int(re.search(r"^VmRSS:\s+(\d+)", f.read(), re.M).group(1))
    except (OSError, AttributeError, TypeError):
        return -1


def nfds(pid):
    try:
        return len(os.listdir("/proc/%d/fd" % pid))
    except (OSError, TypeError):
        return -1


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=int(time.time()) % 100000)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--restore-every", type=int, default=0)
    ap.add_argument("--soak", type=int, default=0)
    a = ap.parse_args()
    if os.geteuid() != 0:
        print("not ok 1 - the chaos campaign needs root (loop devices, FIFREEZE)")
        print("1..1")
        sys.exit(1)
    # SIGTERM (a timeout, an impatient operator) ends like an error: the
    # sandbox is taken down (World.close), nothing left mounted or running.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    diag("seed %d (replay: test/chaos/chaos.py --seed %d --runs %d)" % (a.seed, a.seed, a.runs))
    c = None
    try:
        c = Campaign(a.seed, a.runs, a.restore_every)
        if a.soak:
            c.soak(a.soak)
        else:
            c.run()
    except Exception as e:
        bail(e, [c.w.helper_log] if c else [])
    finally:
        if c:
            c.close()
    done()


if __name__ == "__main__":
    main()
