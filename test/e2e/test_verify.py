#!/usr/bin/python3
"""
End to end: `ami-snapshot verify`, the restore drill, against the
emulator's volumes (real loop devices behind by-id links).

PostgreSQL on ext4 (data) + XFS (pg_wal).  Under pgbench load ami_snapshot()
takes a set; then:

  * a drill of it, while pgbench runs on the production server: passed,
    every check ok (recovery, connect, system identifier, timeline,
    recovered LSN, databases, amcheck in each, a --check-sql), a pg_dump
    of each database and the globals in --dump-dir owned by its owner, the
    snapshots tagged ami-snapshot:verified; nothing left (no drill volume in
    the emulator, no loop device, no mount, no process, no scratch
    directory); pgbench saw no failed transaction;
  * a damaged set: bytes flipped in a table's page inside the emulator's
    copy of a snapshot: failed (exit 4), the message names the relation,
    the snapshots tagged ami-snapshot:verify-failed, nothing left;
  * a drill SIGKILLed after its volumes were attached, and one after its
    PostgreSQL started: leftovers, which `verify --cleanup` removes
    completely (and a second --cleanup finds nothing);
  * SIGTERM during a drill: exit 6, nothing left; --timeout: exit 5,
    nothing left;
  * an AMI registered from the set's snapshots plus a root snapshot: the
    snapshot drill by --image passes and tags the AMI; the AMI drill
    (--launch) passes (running, both status checks ok) and, with the
    emulator's impair switch on the image, fails; the instance terminated
    both times; a killed AMI drill's instance is terminated by --cleanup;
  * a --check-sql returning false: failed; --dump-db dumps that database only;
    --time-budget 0: amcheck reaches nothing and lists what it did not reach;
  * refusals: an unknown name (exit 3), bad options (exit 2).
"""

import json
import os
import pwd
import signal
import subprocess
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, diag, done, is_, ok  # noqa: E402
from world import PGBIN, World, log, run  # noqa: E402
from e2e import damage_snapshot, drill_database, parse_pgbench, pgbench_cmd  # noqa: E402
from restore_cmd import CLI  # noqa: E402


def verify_cmd(w, drill_dir, *args):
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    return ([CLI, "verify", "-c", w.helper_conf, "--device-dir", w.device_link_dir,
             "--device-timeout", "30", "--drill-dir", drill_dir] + list(args), env)


def verify(w, drill_dir, *args, timeout=600):
    cmd, env = verify_cmd(w, drill_dir, *args)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    diag("$ ami-snapshot verify %s -> %d" % (" ".join(args), r.returncode))
    for line in (r.stdout + r.stderr).splitlines()[-30:]:
        diag("  " + line)
    return r


def drill_volumes(w):
    out = []
    for it in w.ec2_call("DescribeVolumes", **{"Filter.1.Name": "tag-key",
                                               "Filter.1.Value.1": "ami-snapshot:drill"}
                         ).findall("./volumeSet/item"):
        out.append(it.findtext("volumeId"))
    return out


def procs_under(prefix):
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cwd = os.readlink("/proc/%s/cwd" % pid)
        except OSError:
            continue
        if cwd == prefix or cwd.startswith(prefix + "/"):
            found.append(int(pid))
    return found


def mounts_under(prefix):
    out = run(["findmnt", "-rn", "-o", "TARGET"]).stdout.split()
    return [m for m in out if m.startswith(prefix + "/")]


def loop_count(w):
    """Loop devices backed by this World's files (other tests may run beside)."""
    return len([ln for ln in run(["losetup", "-a"]).stdout.splitlines() if w.work in ln])


def leftovers(w, drill_dir):
    """What a drill may leave: volumes, mounts, processes, scratch directories."""
    scratch = [e for e in os.listdir(drill_dir) if e.startswith("drill-")] \
        if os.path.isdir(drill_dir) else []
    return {"volumes": drill_volumes(w), "mounts": mounts_under(drill_dir),
            "processes": procs_under(drill_dir), "scratch": scratch}


def nothing_left(w, drill_dir, loops_before, what):
    left = leftovers(w, drill_dir)
    ok(not any(left.values()), "%s: nothing left (volumes, mounts, processes, scratch)" % what,
       left)
    is_(loop_count(w), loops_before, "%s: no loop device left" % what)
    is_(w.ec2_state()["loop_devices"], {}, "%s: the emulator holds no loop device" % what)


def snapshot_tags(w, request_id):
    root = w.ec2_call("DescribeSnapshots", **{"Owner.1": "self",
                                              "Filter.1.Name": "tag:ami-snapshot:request-id",
                                              "Filter.1.Value.1": request_id})
    out = {}
    for it in root.findall("./snapshotSet/item"):
        out[it.findtext("snapshotId")] = {t.findtext("key"): t.findtext("value")
                                          for t in it.findall("./tagSet/item")}
    return out


def wait_line(proc, needle, timeout=120):
    """Reads proc's stdout until a line containing needle; the lines read."""
    lines = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if needle in line:
            return lines
    raise RuntimeError("never saw %r:\n%s" % (needle, "\n".join(lines)))


def main():
    w = World(layout=[("data", "ext4"), ("wal", "xfs")])
    drill_dir = w.path("drill")
    try:
        victim = drill_database(w)

        # A set under load.
        bench = subprocess.Popen(pgbench_cmd(w, 6), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        time.sleep(2)
        row = w.psql("SELECT status, request_id FROM ami_snapshot('verify good')").split("|")
        is_(row[0], "succeeded", "ami_snapshot() under load succeeded")
        good = row[1]
        out, _ = bench.communicate(timeout=120)
        is_(parse_pgbench(out)[0], 0, "pgbench around the snapshot: no failed transaction")
        loops_before = loop_count(w)

        # ---- a good backup verifies, while pgbench runs on production ----
        dump_dir = w.path("dumps")
        os.makedirs(dump_dir)
        os.chown(dump_dir, w.pg_uid, w.pg_gid)
        bench = subprocess.Popen(pgbench_cmd(w, 25), stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True)
        r = verify(w, drill_dir, "--request-id", good, "--json", "--dump-dir", dump_dir,
                   "--dump-globals", "--check-sql",
                   "SELECT count(*) = 200000 FROM pgbench_accounts", "--check-db", "bench")
        out, _ = bench.communicate(timeout=180)
        failed, processed = parse_pgbench(out)
        is_(failed, 0, "production pgbench during the drill: no failed transaction")
        ok(processed and processed > 0, "production pgbench made progress (%s)" % processed)
        is_(r.returncode, 0, "verify of a good set: exit 0")
        rep = json.loads(r.stdout)
        is_(rep["outcome"], "passed", "outcome passed")
        is_(rep["request_id"], good, "the report names the set")
        names = [c["name"] for c in rep["checks"]]
        for want in ("recovery", "connect", "system-identifier", "timeline", "recovered-lsn",
                     "databases", "amcheck:bench", "amcheck:postgres", "check-sql",
                     "dump:bench", "dump:(globals)"):
            ok(want in names, "check %s ran" % want, names)
        bad = [c for c in rep["checks"] if not c["ok"]]
        ok(not bad, "every check ok", bad)
        ok(all(isinstance(c["ms"], (int, float)) for c in rep["checks"]), "each check timed")
        ok(rep["recovered_lsn"] and "/" in rep["recovered_lsn"],
           "the recovered LSN (%s)" % rep["recovered_lsn"])
        for ph in ("select", "volumes", "prepare", "recovery", "checks", "dump", "cleanup"):
            ok(ph in rep["phases_ms"], "phase %s timed (%s ms)" % (ph, rep["phases_ms"].get(ph)))
        diag("phases: %s" % rep["phases_ms"])
        am = [c for c in rep["checks"] if c["name"] == "amcheck:bench"][0]
        ok("drill_victim" not in am["detail"] and "clean" in am["detail"],
           "amcheck of bench: %s" % am["detail"])
        is_(rep["amcheck_not_reached"], [], "amcheck reached everything")
        dumps = sorted(os.listdir(dump_dir))
        ok("%s_bench.dump" % good in dumps and "%s_globals.sql" % good in dumps,
           "dumps named by request id and database", dumps)
        st = os.stat(os.path.join(dump_dir, "%s_bench.dump" % good))
        is_((st.st_uid, st.st_gid), (w.pg_uid, w.pg_gid), "dumps owned by the dump dir's owner")
        lst = w.as_postgres([os.path.join(PGBIN, "pg_restore"), "-l",
                             os.path.join(dump_dir, "%s_bench.dump" % good)], check=False)
        ok(lst.returncode == 0 and "pgbench_accounts" in lst.stdout,
           "the dump is a readable custom-format archive with the tables")
        tags = snapshot_tags(w, good)
        ok(tags and all(t.get("ami-snapshot:verified", "").endswith(rep["drill_id"])
                        for t in tags.values()),
           "every snapshot of the set tagged ami-snapshot:verified", tags)
        nothing_left(w, drill_dir, loops_before, "passed drill")
        is_(w.ec2_state()["volumes"], [], "the emulator holds no volume besides the originals")

        # ---- a damaged set fails, naming the relation ----
        row = w.psql("SELECT status, request_id FROM ami_snapshot('verify bad')").split("|")
        is_(row[0], "succeeded", "a second set")
        badreq = row[1]
        damage_snapshot(w, badreq, victim)
        r = verify(w, drill_dir, "--request-id", badreq)
        is_(r.returncode, 4, "verify of a damaged set: exit 4 (failed)")
        ok("drill_victim" in r.stdout and "FAIL" in r.stdout,
           "the failure names the relation", r.stdout[-2000:])
        tags = snapshot_tags(w, badreq)
        ok(tags and all("ami-snapshot:verify-failed" in t and "ami-snapshot:verified" not in t
                        for t in tags.values()),
           "the damaged set's snapshots tagged ami-snapshot:verify-failed")
        nothing_left(w, drill_dir, loops_before, "failed drill")

        # ---- killed half-way: --cleanup removes what is left ----
        for when, needle in (("after the volumes were attached", "attached volume"),
                             ("after PostgreSQL started", "started PostgreSQL")):
            cmd, env = verify_cmd(w, drill_dir, "--request-id", good)
            p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                 text=True, env=env)
            try:
                wait_line(p, needle)
                if needle == "attached volume":
                    time.sleep(1)
            finally:
                p.kill()
                p.wait()
            left = leftovers(w, drill_dir)
            ok(left["volumes"] and left["scratch"],
               "SIGKILL %s: a volume and a scratch directory left" % when, left)
            if needle == "started PostgreSQL":
                ok(left["processes"] and left["mounts"],
                   "SIGKILL %s: its PostgreSQL and mounts left" % when, left)
                # Isolation, seen on the server left running: no TCP socket, niced.
                ss = run(["ss", "-ltnpH"]).stdout
                ok(not any("pid=%d," % pid in ss for pid in left["processes"]),
                   "the drill's PostgreSQL listens on no TCP socket", ss)
                nices = [int(open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()[16])
                         for pid in left["processes"]]
                ok(nices and all(n == 10 for n in nices),
                   "the drill's PostgreSQL processes run at nice 10 (%s)" % nices)
            r = verify(w, drill_dir, "--cleanup")
            is_(r.returncode, 0, "verify --cleanup after SIGKILL %s: exit 0" % when)
            nothing_left(w, drill_dir, loops_before, "cleanup after SIGKILL %s" % when)
            r = verify(w, drill_dir, "--cleanup")
            ok(r.returncode == 0 and "0 removed, 0 left" in r.stdout,
               "a second --cleanup finds nothing")

        # ---- SIGTERM: cleans up, exit 6 ----
        cmd, env = verify_cmd(w, drill_dir, "--request-id", good)
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env)
        wait_line(p, "started PostgreSQL")
        p.send_signal(signal.SIGTERM)
        rest, _ = p.communicate(timeout=300)
        is_(p.returncode, 6, "SIGTERM during a drill: exit 6 (interrupted)")
        ok("interrupted" in rest, "it says interrupted", rest[-1500:])
        nothing_left(w, drill_dir, loops_before, "SIGTERM")

        # ---- --timeout ----
        r = verify(w, drill_dir, "--request-id", good, "--timeout", "5", "--json",
                   "--check-sql", "SELECT pg_sleep(60) IS NOT NULL")
        is_(r.returncode, 5, "--timeout 5 with a check that takes 60 s: exit 5 (timed out)")
        ok(r.stdout and json.loads(r.stdout)["outcome"] == "timed_out", "outcome timed_out")
        nothing_left(w, drill_dir, loops_before, "timed out")

        # ---- an AMI of the set: the snapshot drill by --image, and the AMI drill ----
        root_snap = w.ec2_call("CreateSnapshot", VolumeId=w.root_volume.vol_id).findtext(
            "snapshotId")
        snaps = list(snapshot_tags(w, good))
        params = {"Name": "verify-e2e-image", "Architecture": "x86_64",
                  "VirtualizationType": "hvm", "RootDeviceName": "/dev/xvda",
                  "EnaSupport": "true",
                  "BlockDeviceMapping.1.DeviceName": "/dev/xvda",
                  "BlockDeviceMapping.1.Ebs.SnapshotId": root_snap}
        for i, sid in enumerate(snaps):
            params["BlockDeviceMapping.%d.DeviceName" % (i + 2)] = "/dev/sd" + "fg"[i]
            params["BlockDeviceMapping.%d.Ebs.SnapshotId" % (i + 2)] = sid
        image = w.ec2_call("RegisterImage", **params).findtext("imageId")
        deadline = time.time() + 60
        while time.time() < deadline and w.ec2_call(
                "DescribeImages", **{"ImageId.1": image}).findtext(
                "./imagesSet/item/imageState") != "available":
            time.sleep(0.5)
        ok(image and image.startswith("ami-"), "an AMI of the set plus a root snapshot (%s)"
           % image)
        r = verify(w, drill_dir, "--image", image, "--json")
        is_(r.returncode, 0, "verify --image (snapshot drill of the AMI's set): exit 0")
        tags = {t.findtext("key"): t.findtext("value") for t in w.ec2_call(
            "DescribeImages", **{"ImageId.1": image}).findall("./imagesSet/item/tagSet/item")}
        ok("ami-snapshot:verified" in tags, "the AMI tagged ami-snapshot:verified", tags)
        nothing_left(w, drill_dir, loops_before, "--image drill")

        def instance_states():
            return {i["instanceId"]: i["instanceState"]["name"]
                    for i in w.ec2_state()["instances"]}

        r = verify(w, drill_dir, "--image", image, "--launch", "--json", "--timeout", "120",
                   "--instance-type", "t3.micro")
        is_(r.returncode, 0, "AMI drill: exit 0 (passed)")
        rep = json.loads(r.stdout) if r.stdout.strip() else {}
        is_([c["name"] for c in rep.get("checks", []) if c["ok"]],
            ["launch", "running", "status-checks"], "AMI drill: launched, running, checks ok")
        iid = rep.get("instance_id")
        is_(instance_states().get(iid, "terminated"), "terminated",
            "AMI drill: the instance %s is terminated" % iid)
        ok(rep.get("tagged", "").startswith("ami-snapshot:verified="), "AMI drill: AMI tagged")
        w.emulator_control({"impair": image})
        r = verify(w, drill_dir, "--image", image, "--launch", "--json", "--timeout", "120")
        w.emulator_control({"unimpair": image})
        is_(r.returncode, 4, "AMI drill of an impaired image: exit 4 (failed)")
        rep = json.loads(r.stdout) if r.stdout.strip() else {}
        bad = [c for c in rep.get("checks", []) if not c["ok"]]
        ok(bad and bad[0]["name"] == "status-checks" and "impaired" in bad[0]["detail"],
           "AMI drill: the status checks are impaired", bad)
        is_(instance_states().get(rep.get("instance_id"), "terminated"), "terminated",
            "AMI drill failed: the instance is terminated")
        # Killed before it terminates: --cleanup terminates the instance.
        cmd, env = verify_cmd(w, drill_dir, "--image", image, "--launch")
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             env=env)
        lines = wait_line(p, "launched instance")
        p.kill()
        p.wait()
        iid = lines[-1].split()[-1]
        is_(instance_states().get(iid), "pending" if instance_states().get(iid) == "pending"
            else "running", "AMI drill SIGKILLed: its instance %s still there" % iid)
        r = verify(w, drill_dir, "--cleanup")
        is_(r.returncode, 0, "--cleanup after a killed AMI drill: exit 0")
        deadline = time.time() + 30
        while time.time() < deadline and instance_states().get(iid, "terminated") != "terminated":
            time.sleep(0.5)
        is_(instance_states().get(iid, "terminated"), "terminated",
            "--cleanup terminated the drill's instance")

        # ---- a --check-sql that returns false fails the drill; --dump-db ----
        dump2 = w.path("dumps2")
        os.makedirs(dump2)
        r = verify(w, drill_dir, "--request-id", good, "--check-sql",
                   "SELECT count(*) = 0 FROM pgbench_accounts", "--check-db", "bench",
                   "--dump-dir", dump2, "--dump-db", "bench", "--time-budget", "0", "--json")
        is_(r.returncode, 4, "a --check-sql returning false: exit 4 (failed)")
        rep = json.loads(r.stdout)
        bad = [c["name"] for c in rep["checks"] if not c["ok"]]
        is_(bad, ["check-sql"], "only the check-sql check failed")
        ok(rep["amcheck_not_reached_count"] > 200 and len(rep["amcheck_not_reached"]) == 64,
           "--time-budget 0: amcheck reached nothing and says so (%d not reached)"
           % rep["amcheck_not_reached_count"])
        is_(sorted(os.listdir(dump2)), ["%s_bench.dump" % good],
            "--dump-db bench: that database only, no .partial left")
        nothing_left(w, drill_dir, loops_before, "check-sql drill")

        # ---- refusals ----
        r = verify(w, drill_dir, "--name", "no such set")
        is_(r.returncode, 3, "an unknown name: exit 3 (refused)")
        r = verify(w, drill_dir, "--request-id", good, "--name", "x")
        is_(r.returncode, 2, "two selectors: exit 2 (usage)")
        nothing_left(w, drill_dir, loops_before, "refusals")
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        try:
            cmd, env = verify_cmd(w, drill_dir, "--cleanup")
            subprocess.run(cmd, env=env, capture_output=True, timeout=300)
        except Exception as e:  # noqa: BLE001
            log("final cleanup: %s" % e)
        w.close()
    done()


if __name__ == "__main__":
    main()
