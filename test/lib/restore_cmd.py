"""
restore_cmd.py - restore through the restore command, `ami-snapshot restore`,
in the sandbox: run it with the World's configuration (its [aws] names the
emulator, whose AttachVolume makes loop devices linked under the World's
dev/disk/by-id), and start, query and remove what it restored
(test/e2e/test_restore_cmd.py, the demo).
"""

import os
import subprocess
import time

from tap import diag
from world import IN_CHROOT, PG_CHROOT, PGBIN, ROOT, log, run

# The command built in this tree, or another binary of it (AMIS_CLI).
CLI = os.environ.get("AMIS_CLI") or os.path.join(ROOT, "helper", "ami-snapshot")


def pg_bindir(w):
    """--pg-bindir for the command: the host's PostgreSQL (none: the command
    finds it), or, for a PostgreSQL in a chroot (test/pgversions/), a
    directory whose postgres runs the chroot's."""
    if not PG_CHROOT:
        return []
    d = w.path("chroot-pgbin")
    if not os.path.isdir(d):
        os.makedirs(d)
        with open(os.path.join(d, "postgres"), "w") as f:
            f.write("#!/bin/sh\nexec %s %s %s %s/postgres \"$@\"\n"
                    % (IN_CHROOT, PG_CHROOT, w.work, PGBIN))
        os.chmod(os.path.join(d, "postgres"), 0o755)
    return ["--pg-bindir", d]


def restore_cmd(w, *args, verbose=True):
    """ami-snapshot restore with the World's configuration (its [aws] names
    the emulator) and device directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    cmd = [CLI, "restore", "-c", w.helper_conf, "--device-dir", w.device_link_dir,
           "--device-timeout", "30"] + pg_bindir(w) + list(args)
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    if verbose:
        diag("$ %s -> %d" % (" ".join(cmd[1:]), r.returncode))
        for line in (r.stdout + r.stderr).splitlines()[-40:]:
            diag("  " + line)
    return r


def snapshot_ids(w, name):
    """The ids of the snapshots tagged ami-snapshot:name = name."""
    root = w.ec2_call("DescribeSnapshots", **{"Owner.1": "self",
                                              "Filter.1.Name": "tag:ami-snapshot:name",
                                              "Filter.1.Value.1": name})
    return [i.findtext("snapshotId") for i in root.findall("./snapshotSet/item")]


def restored_volumes(w):
    """(volume id, status, attached) of every volume a restore made."""
    out = []
    for it in w.ec2_call("DescribeVolumes").findall("./volumeSet/item"):
        if "ami-snapshot:restored-from" in [t.findtext("key") for t in it.findall("./tagSet/item")]:
            out.append((it.findtext("volumeId"), it.findtext("status"),
                        bool(it.findall("./attachmentSet/item"))))
    return out


def created_volumes(w):
    return [v for v, _, _ in restored_volumes(w)]


def release_volumes(w):
    """Detach and delete every volume a restore made (after unmounting)."""
    mine = restored_volumes(w)
    for vid, _, attached in mine:
        if attached:
            try:
                w.ec2_call("DetachVolume", VolumeId=vid)
            except RuntimeError as e:
                log("detach %s: %s" % (vid, e))
    deadline = time.time() + 60
    for vid, _, _ in mine:
        while time.time() < deadline:
            st = w.ec2_call("DescribeVolumes", **{"VolumeId.1": vid}).findtext(
                "./volumeSet/item/status")
            if st == "available":
                break
            time.sleep(0.2)
        try:
            w.ec2_call("DeleteVolume", VolumeId=vid)
        except RuntimeError as e:
            log("delete %s: %s" % (vid, e))


class CmdRestored:
    """A data directory the command restored under root: start, query, stop,
    unmount (check_restore's interface)."""

    def __init__(self, w, root):
        self.world = w
        self.root = root
        self.port = w._free_pg_port()
        self.pgdata = root + w.pgdata
        self.started = False
        self.logfile = os.path.join(w.pgrun, "%s-postgres.log" % os.path.basename(root))

    def has_backup_label(self):
        return os.path.exists(os.path.join(self.pgdata, "backup_label"))

    def start(self):
        # Not archiving into the original's archive, nor asking its helper.
        r = self.world.as_postgres(
            [os.path.join(PGBIN, "pg_ctl"), "-D", self.pgdata, "-w", "-t", "120", "-l",
             self.logfile, "-o", "-p %d -c ami_snapshot.helper_socket=/nonexistent "
             "-c archive_mode=off" % self.port, "start"], check=False)
        if r.returncode != 0:
            raise RuntimeError("restored cluster did not start:\n" + self.log_text())
        self.started = True

    def log_text(self):
        try:
            return open(self.logfile).read()
        except OSError:
            return ""

    def psql(self, sql, db="postgres", check=True):
        return self.world.psql(sql, db=db, port=self.port, check=check)

    def mounts(self):
        out = run(["findmnt", "-rn", "-o", "TARGET"]).stdout.split()
        return [m.replace("\\x20", " ") for m in out if m == self.root or
                m.startswith(self.root + "/")]

    def close(self):
        if self.started:
            self.world.as_postgres([os.path.join(PGBIN, "pg_ctl"), "-D", self.pgdata, "-w",
                                    "-m", "immediate", "stop"], check=False)
            self.started = False
        for m in sorted(self.mounts(), reverse=True):
            r = subprocess.run(["umount", m], capture_output=True, text=True)
            if r.returncode:
                log("cannot unmount %s: %s" % (m, r.stderr.strip()))
        release_volumes(self.world)


def close_restores(restores):
    """close() each CmdRestored of a test, whatever happens to the others."""
    for rs in restores:
        try:
            rs.close()
        except Exception as e:  # noqa: BLE001
            log("closing a restore: %s" % e)
