"""
restore.py - restore a snapshot set in the sandbox and start PostgreSQL on it.

What a restore on EC2 does (CreateVolume from each snapshot, attach, mount,
start PostgreSQL), done with the snapshot files of the World's EC2 side (the
emulator's, or moto_front.py's for moto): each snapshot's bytes are attached
as a new loop device, mounted, and PostgreSQL starts on the restored data
directory by crash recovery (no backup_label: see doc/design.md,
"Restoring").  pg_wal and tablespace symlinks are pointed at the
restored copies, as they would be by mounting at the original paths.
"""

import os

from world import PGBIN, run


class Restored:
    def __init__(self, world, snapshot_ids, name="restore", volume_of=None):
        """volume_of: {snapshot id: the volume id it is a snapshot of}, for
        snapshots whose own volume id says nothing (a copy's is
        vol-ffffffff, as EC2 documents): each restores onto that volume's
        mount point."""
        self.world = world
        self.port = world._free_pg_port()
        self.base = world.path(name)
        self.started = False
        state = world.ec2_state()
        snaps = {s["id"]: s for s in state["snapshots"]}
        by_vol = {v.vol_id: v for v in world.volumes}
        self.mounts = {}
        for sid in snapshot_ids:
            snap = snaps[sid]
            vol = by_vol[(volume_of or {}).get(sid, snap["volume_id"])]
            img = os.path.join(world.store, "%s-%s.img" % (name, sid))
            run(["cp", "--reflink=always", snap["file"], img])
            dev = world._losetup(img)
            mnt = os.path.join(self.base, vol.name)
            world._mount(dev, mnt)
            self.mounts[vol.name] = (vol, mnt, img)
        os.chmod(self.base, 0o755)
        self.pgdata = os.path.join(self.mounts["data"][1], "pgdata")
        self._relink()

    def _relink(self):
        """Point pg_wal and tablespace links at the restored filesystems."""
        def remap(target):
            for vol, mnt, _ in self.mounts.values():
                if target == vol.mount or target.startswith(vol.mount + "/"):
                    return mnt + target[len(vol.mount):]
            raise RuntimeError("no restored volume holds %s" % target)

        links = [os.path.join(self.pgdata, "pg_wal")]
        tbl = os.path.join(self.pgdata, "pg_tblspc")
        links += [os.path.join(tbl, e) for e in os.listdir(tbl)]
        for link in links:
            if os.path.islink(link):
                new = remap(os.readlink(link))
                os.unlink(link)
                os.symlink(new, link)
                os.lchown(link, self.world.pg_uid, self.world.pg_gid)
        # The snapshot was taken while the original server ran.
        pid = os.path.join(self.pgdata, "postmaster.pid")
        if os.path.exists(pid):
            os.unlink(pid)

    def has_backup_label(self):
        return os.path.exists(os.path.join(self.pgdata, "backup_label"))

    def start(self):
        self.logfile = os.path.join(self.world.pgrun, "%s-postgres.log" % os.path.basename(self.base))
        r = self.world.as_postgres(
            [os.path.join(PGBIN, "pg_ctl"), "-D", self.pgdata, "-w", "-t", "120",
             "-l", self.logfile, "-o",
             "-p %d -c ami_snapshot.helper_socket=/nonexistent" % self.port, "start"],
            check=False)
        if r.returncode != 0:
            raise RuntimeError("restored cluster did not start:\n" + open(self.logfile).read())
        self.started = True

    def log_text(self):
        return open(self.logfile).read()

    def psql(self, sql, db="postgres", check=True):
        return self.world.psql(sql, db=db, port=self.port, check=check)

    def close(self):
        if self.started:
            self.world.as_postgres([os.path.join(PGBIN, "pg_ctl"), "-D", self.pgdata, "-w",
                                    "-m", "immediate", "stop"], check=False)
            self.started = False
        for vol, mnt, img in self.mounts.values():
            for m, dev in list(self.world.mounted):
                if m == mnt:
                    self.world.unmount(m, dev)
            if os.path.exists(img):
                os.unlink(img)
        self.mounts = {}
