"""A set of volumes at one instant: with store_mount, CreateSnapshots copies
the set with the store frozen (set_copy "instant"); "nonatomic" (the
negative control of the zero-stall tests) copies one volume, pauses, then
the next.  A writer writes a counter n to the first volume's loop device,
then n to the second's, waiting for each write to complete: in a set taken
at one instant the first holds n or n+1 when the second holds n; a set
copied with a pause between the volumes breaks that.  Root only (loop
devices, a filesystem of its own to freeze): without root these tests fail,
never skip."""

import json
import mmap
import os
import shutil
import struct
import subprocess
import threading
import time
import unittest

from . import support
from .support import DATA_VOL, INSTANCE, MIB, WAL_VOL, Emu, base_config

BLOCK = 4096


def pattern_bytes(tag, n):
    return (tag + b"-") * (n // (len(tag) + 1)) + b"x" * (n % (len(tag) + 1))


def counter_of(path):
    with open(path, "rb") as f:
        return struct.unpack("<Q", f.read(8))[0]


class TestSetCopy(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0 or not shutil.which("losetup"):
            self.fail("the store needs root and losetup (run the emulator tests as root)")
        self.root = os.path.join(support.TMP or "/var/tmp", "sets-%d" % time.time_ns())
        os.makedirs(self.root)
        self.loops, self.emu, self.writer = [], None, None
        self.addCleanup(self._cleanup)
        img = os.path.join(self.root, "store.img")
        with open(img, "wb") as f:
            f.truncate(512 * MIB)
        subprocess.run(["mkfs.xfs", "-q", "-m", "reflink=1", img], check=True, capture_output=True)
        self.store = os.path.join(self.root, "store")
        os.makedirs(self.store)
        self.loops.append(self._losetup(img))
        subprocess.run(["mount", self.loops[0], self.store], check=True, capture_output=True)
        self.files = {}
        for vid in (DATA_VOL, WAL_VOL):
            p = os.path.join(self.store, vid + ".img")
            with open(p, "wb") as f:
                f.truncate(16 * MIB)
            self.files[vid] = p
        self.devs = {vid: self._losetup(p) for vid, p in self.files.items()}
        cfg = base_config(self.root)
        for vid, p in self.files.items():
            cfg["volumes"][vid]["backing_file"] = p
        cfg["store_mount"] = self.store
        # Its state (and the snapshots' files) on the store too, as in the
        # World: the copies start as reflinks.
        self.emu = Emu(self.root, "emu", ["--complete-after", "0.1"], cfg,
                       state_dir=os.path.join(self.store, "emu-state"))
        self.c = self.emu.client()

    def _losetup(self, path):
        dev = subprocess.run(["losetup", "--find", "--show", path], check=True,
                             capture_output=True, text=True).stdout.strip()
        self.loops.append(dev)
        return dev

    def _cleanup(self):
        # The store first: nothing may stay frozen.
        if os.path.ismount(getattr(self, "store", "")):
            subprocess.run(["fsfreeze", "-u", self.store], capture_output=True)
        self.stop_writer()
        if self.emu and self.emu.proc.poll() is None:
            self.emu.stop()
        for dev in reversed(self.loops[1:]):
            subprocess.run(["losetup", "-d", dev], capture_output=True)
        if os.path.ismount(getattr(self, "store", "")):
            subprocess.run(["umount", self.store], check=True, capture_output=True)
        if self.loops:
            subprocess.run(["losetup", "-d", self.loops[0]], capture_output=True)
        if not os.environ.get("EC2EMU_KEEP_TMP"):
            shutil.rmtree(self.root, ignore_errors=True)

    # The writer: n to the first volume, then n to the second, each write
    # completed by the loop driver (O_DIRECT: no page cache of the device in
    # between) before the next is issued.
    def start_writer(self):
        self.stop_flag = threading.Event()
        self.written = 0
        fds = [os.open(self.devs[v], os.O_WRONLY | os.O_DIRECT) for v in (DATA_VOL, WAL_VOL)]
        block = mmap.mmap(-1, BLOCK)         # page-aligned, as O_DIRECT wants

        def write():
            try:
                n = 0
                while not self.stop_flag.is_set():
                    n += 1
                    block[:8] = struct.pack("<Q", n)
                    for fd in fds:
                        os.pwrite(fd, block, 0)
                    self.written = n
            finally:
                for fd in fds:
                    os.close(fd)
        self.writer = threading.Thread(target=write, daemon=True)
        self.writer.start()
        self.wait_written(50)

    def wait_written(self, n, timeout=20):
        deadline = time.time() + timeout
        while self.written < n and time.time() < deadline:
            time.sleep(0.01)
        self.assertGreaterEqual(self.written, n, "the writer goes on")

    def stop_writer(self):
        if self.writer:
            self.stop_flag.set()
            self.writer.join(10)
            self.writer = None

    def snapshot_set(self):
        """(counter on the first volume, on the second) in a CreateSnapshots set."""
        snaps = self.c.create_snapshots(
            InstanceSpecification={"InstanceId": INSTANCE, "ExcludeBootVolume": True}
        )["Snapshots"]
        with open(os.path.join(self.emu.state_dir, "state.json")) as f:
            files = {s["volume_id"]: s["file"] for s in json.load(f)["snapshots"].values()
                     if s["id"] in {x["SnapshotId"] for x in snaps}}
        return counter_of(files[DATA_VOL]), counter_of(files[WAL_VOL])

    def last_request(self):
        with open(os.path.join(self.emu.state_dir, "requests.jsonl")) as f:
            return [json.loads(line) for line in f
                    if json.loads(line).get("action") == "CreateSnapshots"][-1]

    def test_instant_sets_are_one_instant_and_nonatomic_ones_are_not(self):
        self.start_writer()
        for i in range(8):
            first, second = self.snapshot_set()
            self.assertIn(first - second, (0, 1),
                          "set %d at one instant: first volume %d, second %d"
                          % (i, first, second))
            rec = self.last_request()
            self.assertEqual(rec.get("set_copy"), "instant")
            self.assertGreaterEqual(rec.get("frozen_ms"), 0)
        self.wait_written(second + 1)
        # The negative control: the first volume, a pause under writes, the
        # second: the second is later than the first, which no crash makes.
        self.emu.control({"set_copy": "nonatomic", "nonatomic_first": [DATA_VOL],
                          "nonatomic_pause_ms": 1000})
        for i in range(2):
            first, second = self.snapshot_set()
            self.assertGreater(second, first + 1,
                               "nonatomic set %d: the second volume copied later" % i)
            self.assertEqual(self.last_request().get("set_copy"), "nonatomic")
        self.stop_writer()
        # Idle, a set is its backing files byte for byte (the reflinks, the
        # blocks read while frozen, the holes).
        self.emu.control({"set_copy": "instant"})
        self.idle_set_is_byte_for_byte("idle", method="reflink+frozen-delta")
        # Nothing is left frozen: a write to the store finishes.
        with open(os.path.join(self.store, "probe"), "w") as f:
            f.write("x")
            f.flush()
            os.fsync(f.fileno())

    def idle_set_is_byte_for_byte(self, what, method=None):
        """A set taken now: each copy its backing file byte for byte (and
        copied by method, if given).  The request's log record."""
        snaps = self.c.create_snapshots(
            InstanceSpecification={"InstanceId": INSTANCE, "ExcludeBootVolume": True}
        )["Snapshots"]
        with open(os.path.join(self.emu.state_dir, "state.json")) as f:
            state = json.load(f)["snapshots"]
        for s in snaps:
            snap = state[s["SnapshotId"]]
            self.assertEqual(support.read(snap["file"]), support.read(self.files[s["VolumeId"]]),
                             "%s: the copy of %s" % (what, s["VolumeId"]))
            if method:
                self.assertEqual(snap["copy_method"], method)
        return self.last_request()

    def test_unwritten_extents_are_holes_not_reads(self):
        """Preallocated (unwritten) extents of a backing file read as zeros
        and are never shared: they are punched in the copy, not read while
        the store is frozen; the copy is still the file byte for byte, also
        after they are written, and after written data becomes unwritten."""
        path = self.files[DATA_VOL]
        with open(path, "r+b") as f:
            f.write(pattern_bytes(b"head", MIB))
            os.posix_fallocate(f.fileno(), 2 * MIB, 8 * MIB)   # unwritten
            f.seek(12 * MIB)
            f.write(pattern_bytes(b"tail", MIB))
            os.fsync(f.fileno())
        rec = self.idle_set_is_byte_for_byte("preallocated")
        self.assertLess(sum(c["bytes"] for c in rec["copies"]), 8 * MIB,
                        "the 8 MiB preallocated were not read: %s" % rec["copies"])
        # Written since: part of the preallocation becomes data.
        with open(self.devs[DATA_VOL], "r+b") as f:
            f.seek(4 * MIB)
            f.write(pattern_bytes(b"into-prealloc", MIB))
            f.flush()
            os.fsync(f.fileno())
        self.idle_set_is_byte_for_byte("written into the preallocation")
        # Data zeroed by a preallocation (the loop driver's WRITE_ZEROES).
        subprocess.run(["fallocate", "-z", "-o", str(12 * MIB), "-l", str(MIB), path],
                       check=True, capture_output=True)
        self.idle_set_is_byte_for_byte("data made unwritten")

    def test_settings_and_config_are_checked(self):
        for bad in ({"set_copy": "sometimes"}, {"nonatomic_first": ["disk-1"]},
                    {"nonatomic_first": "vol-0000000000000000b"}):
            with self.assertRaises(Exception, msg=str(bad)):
                self.emu.control(bad)
        cfg = base_config(self.root)
        cfg["store_mount"] = self.root        # not a mount point
        with self.assertRaises(RuntimeError):
            Emu(self.root, "bad1", [], cfg)
        cfg = base_config(self.root)           # backing files not on the store
        cfg["store_mount"] = self.store
        for vid in (DATA_VOL, WAL_VOL):
            with open(cfg["volumes"][vid]["backing_file"], "wb") as f:
                f.truncate(MIB)
        with self.assertRaises(RuntimeError):
            Emu(self.root, "bad2", [], cfg)


if __name__ == "__main__":
    unittest.main()
