"""
standby.py - a primary and a streaming hot standby in the sandbox.

The World's own cluster becomes the standby: its data directory and pg_wal
stay on the World's loop filesystems (the ones the helper freezes and
snapshots), refilled by pg_basebackup from a primary that lives in a plain
directory under the World's work directory, on no filesystem of the World:
it is never frozen.  The standby streams over the Unix socket
(primary_conninfo names the socket directory), as application_name
"standby1".

Use as a context manager, or call close() before the World's close(): it
stops the primary (the World stops the standby).
"""

import os
import shutil
import time

from world import PGBIN, log

APPNAME = "standby1"


def lsn_int(text):
    hi, lo = text.split("/")
    return (int(hi, 16) << 32) | int(lo, 16)


def wal_segment(lsn_text, tli, seg_size=16 << 20, prev=False):
    """The WAL file name holding lsn on timeline tli (pg_walfile_name's,
    which a standby cannot run).  prev: the file holding the byte before lsn
    (XLByteToPrevSeg), the one pg_backup_stop() waits for: a stop LSN
    exactly at a segment's start (a standby's replay position after a WAL
    switch) is the end of the previous file."""
    lsn = lsn_int(lsn_text)
    seg = (lsn - 1 if prev else lsn) // seg_size
    per_id = (1 << 32) // seg_size
    return "%08X%08X%08X" % (tli, seg // per_id, seg % per_id)


class StandbyPair:
    def __init__(self, w, primary_conf="", standby_conf=""):
        self.w = w
        self.port = w._free_pg_port()
        self.dir = w.path("primary")
        self.pgdata = os.path.join(self.dir, "pgdata")
        self.logfile = os.path.join(w.pgrun, "primary.log")
        self.started = False
        os.makedirs(self.dir)
        os.chown(self.dir, w.pg_uid, w.pg_gid)
        try:
            self._primary(primary_conf)
            self._standby(standby_conf)
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------ the primary
    def _primary(self, extra):
        w = self.w
        w.as_postgres([os.path.join(PGBIN, "initdb"), "-D", self.pgdata, "-A", "trust",
                       "-U", "postgres", "--no-sync"])
        with open(os.path.join(self.pgdata, "postgresql.conf"), "a") as f:
            f.write(w.server_conf(self.port) + f"""wal_level = replica
max_wal_senders = 10
wal_keep_size = '256MB'
{extra}
""")
        self.start()
        self.psql("CREATE EXTENSION ami_snapshot")

    def start(self):
        self.w.as_postgres([os.path.join(PGBIN, "pg_ctl"), "-D", self.pgdata, "-w", "-t", "60",
                            "-l", self.logfile, "start"])
        self.started = True

    def psql(self, sql, db="postgres", check=True, timeout=300):
        return self.w.psql(sql, db=db, check=check, port=self.port, timeout=timeout)

    # ------------------------------------------------------------ the standby
    def conninfo(self, appname=APPNAME, user="postgres"):
        return "host=%s port=%d user=%s application_name=%s" % (
            self.w.pgrun, self.port, user, appname)

    def hba_first(self, lines):
        """lines (pg_hba.conf entries) before the primary's own, reloaded;
        [] restores its own."""
        path = os.path.join(self.pgdata, "pg_hba.conf")
        if not hasattr(self, "_hba"):
            with open(path) as f:
                self._hba = f.read()
        with open(path, "w") as f:
            f.write("".join(line + "\n" for line in lines) + self._hba)
        self.psql("SELECT pg_reload_conf()")

    def follow(self, conninfo):
        """The standby's primary_conninfo changed (a reload: its WAL
        receiver reconnects with it)."""
        with open(os.path.join(self.w.pgdata, "postgresql.conf"), "a") as f:
            f.write("primary_conninfo = '%s'\n" % conninfo)
        self.w.psql("SELECT pg_reload_conf()")

    def _standby(self, extra):
        """The World's cluster, replaced by a base backup of the primary on
        the same filesystems (data directory and pg_wal)."""
        w = self.w
        w.stop_postgres()
        waldir = os.path.join(w.volume("wal").mount, "pg_wal")
        shutil.rmtree(w.pgdata)
        shutil.rmtree(waldir, ignore_errors=True)
        w.as_postgres([os.path.join(PGBIN, "pg_basebackup"), "-h", w.pgrun, "-p", str(self.port),
                       "-U", "postgres", "-D", w.pgdata, "--waldir", waldir, "-X", "stream",
                       "-c", "fast", "--no-sync"])
        with open(os.path.join(w.pgdata, "postgresql.conf"), "a") as f:
            f.write(f"""
# The standby (test/lib/standby.py)
port = {w.port}
primary_conninfo = '{self.conninfo()}'
hot_standby = on
# The primary keeps WAL for restored standbys; this one's 512 MB pg_wal
# volume must not (a standby applies wal_keep_size at restartpoints too).
wal_keep_size = 0
{extra}
""")
        signal = os.path.join(w.pgdata, "standby.signal")
        open(signal, "w").close()
        os.chown(signal, w.pg_uid, w.pg_gid)
        w.start_postgres()
        self.wait_streaming()

    def wait_streaming(self, appname=APPNAME, timeout=60):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.psql("SELECT count(*) FROM pg_stat_replication WHERE application_name = '%s'"
                         " AND state = 'streaming'" % appname) == "1":
                return
            time.sleep(0.2)
        raise RuntimeError("standby %s is not streaming after %d s" % (appname, timeout))

    def wait_replayed(self, port=None, timeout=60):
        """Until the standby (or another one on port) replayed everything
        the primary has written so far."""
        target = lsn_int(self.psql("SELECT pg_current_wal_lsn()"))
        deadline = time.time() + timeout
        while time.time() < deadline:
            got = self.w.psql("SELECT pg_last_wal_replay_lsn()", port=port)
            if got and lsn_int(got) >= target:
                return
            time.sleep(0.1)
        raise RuntimeError("the standby did not replay up to the primary's %X/%X" %
                           (target >> 32, target & 0xffffffff))

    def set_sync(self, names):
        """synchronous_standby_names on the primary, reloaded."""
        self.psql("ALTER SYSTEM SET synchronous_standby_names = '%s'" % names)
        self.psql("SELECT pg_reload_conf()")

    def wait_sync_state(self, state, timeout=30):
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.psql("SELECT sync_state FROM pg_stat_replication WHERE application_name = "
                         "'%s'" % APPNAME) == state:
                return
            time.sleep(0.1)
        raise RuntimeError("sync_state never became %s" % state)

    def close(self):
        if self.started:
            self.w.as_postgres([os.path.join(PGBIN, "pg_ctl"), "-D", self.pgdata, "-w",
                                "-m", "immediate", "stop"], check=False)
            self.started = False
            log("primary stopped")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
