#!/usr/bin/python3
"""
End to end: what a call shows while it runs, and the pre-migration wrapper.

- ami_snapshot() reports each step as a NOTICE, in order: prepared,
  backup started, frozen with the snapshots pending, thawed in N ms, backup
  stopped, tagged; with ami_snapshot.progress = off, none.
- Meanwhile `ami-snapshot-helper --status` and ami_snapshot_status() in
  another session show the live step of the operation (the call made while
  frozen is slowed down to be seen).
- ami-snapshot-before (README.md, Recipes): the snapshot succeeds, then the
  migration runs and its exit status is the wrapper's (0, and 7); the
  snapshot fails (CreateSnapshots denied), then the migration does not run
  and the wrapper exits 75; a name with a quote is taken as data; bad usage exits 64.
- The configuration outside the data directory is copied into it at each
  call, and written again only when a file or its mode changed.
"""

import os
import re
import shutil
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import HELPER, PGBIN, ROOT, World  # noqa: E402
from e2e import session  # noqa: E402

HOOK = os.path.join(ROOT, "packaging", "ami-snapshot-before")
STEPS = [r"prepared: instance i-\w+, volumes vol-\w+", r"backup started at [0-9A-F]+/[0-9A-F]+",
         r"frozen; snapshots pending: snap-\w+", r"thawed in [0-9.]+ ms",
         r"backup stopped at [0-9A-F]+/[0-9A-F]+", r"tagged 3 snapshot\(s\)"]


def notices(stderr):
    return [m.group(1) for m in re.finditer(r"NOTICE:\s+ami_snapshot: (.*)", stderr)]


def status(w):
    return subprocess.run([HELPER, "-c", w.helper_conf, "--status"], capture_output=True,
                          text=True, timeout=30).stdout


def hook(w, *args, env_extra=None):
    """The wrapper as the postgres user, connecting to the sandbox's server."""
    env = ["env", "PGHOST=" + w.pgrun, "PGPORT=%d" % w.port, "PGUSER=postgres",
           "PSQL=" + os.path.join(PGBIN, "psql")] + (env_extra or [])
    copy = w.path("ami-snapshot-before")      # where the postgres user may run it
    if not os.path.exists(copy):
        shutil.copy(HOOK, copy)
        os.chmod(copy, 0o755)
    return subprocess.run(w.pg_cmd(env + [copy] + list(args)), capture_output=True, text=True,
                          timeout=300)


def test_progress(w):
    r = session(w, ["SELECT status FROM ami_snapshot('progress on')"])
    is_(r.stdout.strip(), "succeeded", "a snapshot with progress (the default)")
    got = notices(r.stderr)
    diag("\n".join(got))
    is_(len(got), len(STEPS), "one NOTICE per step")
    ok(all(re.match(p, g) for p, g in zip(STEPS, got)),
       "the steps in order: prepared, backup started, frozen and pending, thawed in N ms, "
       "backup stopped, tagged", "\n".join(got))
    time.sleep(1.2)                     # one snapshot per volume a second, at EC2
    r = session(w, ["SET ami_snapshot.progress = off",
                    "SELECT status FROM ami_snapshot('progress off')"])
    is_(r.stdout.strip(), "succeeded", "a snapshot with ami_snapshot.progress = off")
    is_(notices(r.stderr), [], "... shows no NOTICE")


def test_live_status(w):
    time.sleep(1.2)
    # The call made while frozen takes 3 s (the two DryRuns before it are fast).
    w.emulator_control({"action": "CreateSnapshots", "fault": "slow", "delay_ms": 3000,
                        "count": 1, "dry_run": False})
    # Another session, connected before the freeze: after a second it asks
    # ami_snapshot_status() (it writes nothing, so the freeze does not stop it).
    watcher = session(w, ["SELECT pg_sleep(1.0)",
                          "SELECT state || '|' || coalesce(step, '') || '|' || coalesce(name, '') "
                          "|| '|' || (frozen_ms > 0) || '|' || array_length(frozen_mounts, 1) "
                          "FROM ami_snapshot_status()"], background=True)
    time.sleep(0.3)
    bg = session(w, ["SELECT status FROM ami_snapshot('live status')"], background=True)
    seen = []
    try:
        deadline = time.time() + 30
        while time.time() < deadline and bg.poll() is None:
            m = re.search(r"^step: (\S+)", status(w), re.M)
            if m and (not seen or seen[-1] != m.group(1)):
                seen.append(m.group(1))
            time.sleep(0.1)
        out, err = bg.communicate(timeout=120)
    finally:
        if bg.poll() is None:
            bg.kill()
    wout, werr = watcher.communicate(timeout=120)
    diag("ami_snapshot_status() in another session: %s" % wout.strip())
    is_(wout.strip().splitlines()[-1:], ["frozen|frozen|live status|true|3"],
        "ami_snapshot_status() in another session: frozen, the step, the name, for how long, "
        "the three mounts")
    diag("steps seen by --status: %s" % seen)
    ok("frozen" in seen, "--status showed the live step 'frozen' during the slow call", seen)
    ok(set(seen) <= {"preparing", "prepared", "freezing", "frozen", "pending", "tagging"},
       "... and only steps of the operation", seen)
    is_(out.strip(), "succeeded", "the slowed call succeeded")
    ok("step:" not in status(w), "idle: no step")
    is_(w.psql("SELECT state, step IS NULL, frozen_mounts FROM ami_snapshot_status()"),
        "idle|t|{}", "ami_snapshot_status() when idle")


def test_config_capture(w):
    """The configuration outside the data directory is copied into it at
    each call, and written only when it changed (a fresh copy costs an
    fsync per file, on the call's way to the backup)."""
    etc = w.path("etc", "capture")
    os.makedirs(etc)
    extra = os.path.join(etc, "outside.conf")
    with open(extra, "w") as f:
        f.write("# outside the data directory\nmaintenance_work_mem = '65MB'\n")
    os.chown(extra, w.pg_uid, w.pg_gid)
    conf = os.path.join(w.pgdata, "postgresql.conf")
    original = open(conf).read()
    copy_dir = os.path.join(w.pgdata, "ami_snapshot", "config")
    copied = os.path.join(copy_dir, "files" + extra)

    def manifest_id():
        st = os.stat(os.path.join(copy_dir, "manifest"))
        return st.st_ino, st.st_mtime_ns

    try:
        with open(conf, "a") as f:
            f.write("include_if_exists = '%s'\n" % extra)
        w.psql("SELECT pg_reload_conf()")
        is_(w.psql("SELECT status FROM ami_snapshot('capture one')"), "succeeded",
            "capture: a call with a file outside the data directory")
        is_(open(copied).read(), open(extra).read(), "capture: the file is copied into PGDATA")
        first = manifest_id()
        is_(w.psql("SELECT status FROM ami_snapshot('capture two')"), "succeeded",
            "capture: a second call, nothing changed")
        is_(manifest_id(), first, "capture: unchanged, the copy is not written again")
        with open(extra, "a") as f:
            f.write("# changed\n")
        is_(w.psql("SELECT status FROM ami_snapshot('capture three')"), "succeeded",
            "capture: a call after the file changed")
        ok(manifest_id() != first, "capture: changed, the copy is written again")
        is_(open(copied).read(), open(extra).read(), "capture: the copy has the change")
        os.chmod(extra, 0o600)
        second = manifest_id()
        is_(w.psql("SELECT status FROM ami_snapshot('capture four')"), "succeeded",
            "capture: a call after the file's mode changed")
        ok(manifest_id() != second, "capture: a new mode alone writes the copy again")
        ok("0600\t" in open(os.path.join(copy_dir, "manifest")).read(),
           "capture: the manifest has the new mode")
    finally:
        with open(conf, "w") as f:
            f.write(original)
        w.psql("SELECT pg_reload_conf()")


def test_hook(w):
    d = w.path("migrations")                   # the migration runs as postgres
    os.makedirs(d)
    os.chown(d, w.pg_uid, w.pg_gid)
    marker = os.path.join(d, "migrated")
    time.sleep(1.2)
    r = hook(w, "-n", "before it's (migration)", "--", "sh", "-c", "touch %s; exit 0" % marker)
    is_(r.returncode, 0, "the wrapper: snapshot ok, migration ran: its exit 0", )
    ok(os.path.exists(marker), "... the migration ran", r.stderr)
    is_(w.psql("SELECT status FROM ami_snapshot_history WHERE name = 'before it''s (migration)'"),
        "succeeded", "... after the snapshot, taken by its name (a quote as data)")
    os.unlink(marker)

    time.sleep(1.2)
    r = hook(w, "sh", "-c", "touch %s; exit 7" % marker)
    is_(r.returncode, 7, "the migration's exit status 7 passes through")
    ok(os.path.exists(marker), "... it ran after the snapshot (default name)", r.stderr)
    ok(w.psql("SELECT count(*) FROM ami_snapshot_history WHERE name LIKE 'before-migration %' "
              "AND status = 'succeeded'") == "1", "... the default name before-migration <time>")
    os.unlink(marker)

    w.emulator_control({"denied_actions": ["CreateSnapshots"]})
    try:
        r = hook(w, "--", "sh", "-c", "touch %s; exit 0" % marker)
    finally:
        w.emulator_control({"denied_actions": []})
    is_(r.returncode, 75, "the snapshot fails: the wrapper exits 75")
    ok(not os.path.exists(marker), "... and the migration did not run")
    ok("not running sh" in r.stderr, "... saying so", r.stderr)

    r = hook(w, "--image")
    is_(r.returncode, 64, "bad usage: exit 64")
    r = hook(w)
    is_(r.returncode, 64, "no command: exit 64")


def main():
    w = World()
    try:
        test_progress(w)
        test_live_status(w)
        test_config_capture(w)
        test_hook(w)
        ok(w.frozen_mounts() == [], "nothing left frozen")
    except Exception as e:  # noqa: BLE001
        bail(e, [w.helper_log])
    finally:
        w.close()
    done()


if __name__ == "__main__":
    main()
