"""Copying a volume's bytes at the point in time: a FICLONE reflink, else a
sparse SEEK_DATA/SEEK_HOLE copy (copy_file_range where it works)."""

import ctypes
import errno
import fcntl
import os
import struct
import threading
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.fallocate.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64)

FICLONE = 0x40049409          # _IOW(0x94, 9, int)


def copy_volume(src, dst):
    """Copy src to dst: FICLONE reflink if possible, else sparse copy.

    Returns {"method", "ms", "bytes", "size"}.  Works for regular files and
    block devices (no SEEK_DATA there: full copy).
    """
    t0 = time.monotonic()
    method, copied, size = _into_place(dst, lambda tmp: _copy_into(src, tmp))
    return {"method": method, "ms": round((time.monotonic() - t0) * 1000, 3),
            "bytes": copied, "size": size}


def _into_place(dst, fill):
    """fill(tmp) writes dst's bytes into a temporary file, which then becomes
    dst (or is removed when fill fails).  Returns what fill returns."""
    tmp = dst + ".part"
    try:
        result = fill(tmp)
        os.replace(tmp, dst)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return result


def _copy_into(src, tmp):
    copied = 0
    with open(src, "rb") as fs, open(tmp, "wb") as fd:
        sfd, dfd = fs.fileno(), fd.fileno()
        size = os.lseek(sfd, 0, os.SEEK_END)
        method = None
        try:
            with clone_lock:
                fcntl.ioctl(dfd, FICLONE, sfd)
            method = "reflink"
            copied = size
        except OSError:
            pass
        if method is None:
            method = "sparse"
            use_cfr = hasattr(os, "copy_file_range")
            for start, end in _data_extents(sfd, size):
                pos = start
                while pos < end:
                    n = min(end - pos, 64 << 20)
                    done = 0
                    if use_cfr:
                        try:
                            done = os.copy_file_range(sfd, dfd, n, pos, pos)
                        except OSError:
                            use_cfr = False
                    if not use_cfr or done == 0:
                        buf = os.pread(sfd, min(n, 4 << 20), pos)
                        if not buf:
                            end = pos
                            break
                        os.pwrite(dfd, buf, pos)
                        done = len(buf)
                    pos += done
                    copied += done
            if use_cfr:
                method = "sparse+copy_file_range"
            os.ftruncate(dfd, size)
    return method, copied, size


def _data_extents(fd, size):
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:       # only a hole left
                return
            yield (pos, size)                # SEEK_DATA unsupported: copy all
            return
        try:
            end = os.lseek(fd, start, os.SEEK_HOLE)
        except OSError:
            end = size
        yield (start, min(end, size))
        pos = end


# A set of volumes at one instant: the store's filesystem frozen.
FIFREEZE = 0xC0045877         # _IOWR('X', 119, int)
FITHAW = 0xC0045878           # _IOWR('X', 120, int)
FS_IOC_FIEMAP = 0xC020660B    # _IOWR('f', 11, struct fiemap)
FIEMAP_EXTENT_LAST = 0x1
FIEMAP_EXTENT_UNWRITTEN = 0x800
FIEMAP_EXTENT_SHARED = 0x2000
FALLOC_FL_KEEP_SIZE, FALLOC_FL_PUNCH_HOLE = 0x1, 0x2

# Held from a set's reflinks to the end of its frozen reads, and by every
# reflink of a backing file: a block of a backing file written after the
# set's reflink is unshared until another reflink of that file shares it,
# and copy_set_frozen reads exactly the unshared blocks.
clone_lock = threading.Lock()


def same_filesystem(path, mount):
    """Whether path lies on the filesystem mounted at mount."""
    return os.stat(path).st_dev == os.stat(mount).st_dev


def copy_set_frozen(store_mount, pairs):
    """Copy several backing files at one instant, as EBS's multi-volume
    CreateSnapshots does.

    1. Each backing file is reflinked to its copy (one after another: not
       one instant yet, but O(extents)).
    2. The store (the filesystem holding the backing files, one the
       sandbox made for them alone) is frozen (FIFREEZE, which first
       writes back what the loop devices wrote).  From here the loop
       driver cannot complete a write to any backing file: every write to
       the volumes' own filesystems waits in the loop queue, none of them
       frozen.  Each backing file's extents are read with FIEMAP: a block
       written since its reflink was copied on write, so it is not
       FIEMAP_EXTENT_SHARED; those blocks are read into memory.
    3. The store is thawed; the blocks read are written into the copies,
       and what became a hole since the reflink is punched in them.

    Each copy is then its backing file as it was at the freeze, none later
    than another.  Without reflinks or FIEMAP's shared flag (another
    filesystem), every data extent is read while frozen.

    pairs: [(src, dst)], every src on store_mount.  Returns
    ([{"method", "ms", "bytes", "size"}] per pair, frozen_ms).
    """
    for src, _ in pairs:
        if not same_filesystem(src, store_mount):
            raise OSError(errno.EXDEV, "%s is not on the store %s" % (src, store_mount))
    t0 = time.monotonic()
    tmps = [dst + ".part" for _, dst in pairs]
    try:
        with clone_lock:
            cloned = [_try_clone(src, tmp) for (src, _), tmp in zip(pairs, tmps)]
            images, frozen_ms = _read_frozen(store_mount, [src for src, _ in pairs], cloned)
        infos = []
        for (_, dst), tmp, clone, (size, extents, holes) in zip(pairs, tmps, cloned, images):
            _patch(tmp, size, extents, holes if clone else [])
            os.replace(tmp, dst)
            infos.append({"method": "reflink+frozen-delta" if clone else "frozen-read",
                          "ms": round((time.monotonic() - t0) * 1000, 3),
                          "bytes": sum(len(b) for _, b in extents), "size": size})
        return infos, frozen_ms
    except BaseException:
        for tmp in tmps:
            try:
                os.unlink(tmp)
            except OSError:
                pass
        raise


def _try_clone(src, tmp):
    """tmp as a reflink of src; False (tmp empty) where reflinks fail."""
    with open(src, "rb") as fs, open(tmp, "wb") as fd:
        try:
            fcntl.ioctl(fd.fileno(), FICLONE, fs.fileno())
            return True
        except OSError:
            return False


def _read_frozen(store_mount, srcs, cloned):
    """With the store frozen: per src (size, [(offset, bytes)] to write,
    [(start, end)] holes), and how long the store was frozen (ms)."""
    fds = [os.open(src, os.O_RDONLY) for src in srcs]
    images = []
    try:
        mfd = os.open(store_mount, os.O_RDONLY)
        try:
            t0 = time.monotonic()
            fcntl.ioctl(mfd, FIFREEZE, 0)
            try:
                for fd, clone in zip(fds, cloned):
                    size = os.lseek(fd, 0, os.SEEK_END)
                    ranges, holes = None, []
                    if clone:
                        ranges, holes = _unshared_ranges(fd, size)
                    if ranges is None:          # no FIEMAP: every data extent
                        ranges, holes = list(_data_extents(fd, size)), []
                    extents = []
                    for start, end in ranges:
                        pos = start
                        while pos < end:
                            buf = os.pread(fd, min(end - pos, 16 << 20), pos)
                            if not buf:
                                break
                            extents.append((pos, buf))
                            pos += len(buf)
                    images.append((size, extents, holes))
            finally:
                fcntl.ioctl(mfd, FITHAW, 0)
            frozen_ms = round((time.monotonic() - t0) * 1000, 3)
        finally:
            os.close(mfd)
    finally:
        for fd in fds:
            os.close(fd)
    return images, frozen_ms


def _unshared_ranges(fd, size):
    """([(start, end)] of fd's extents not shared with another file,
    [(start, end)] of its holes), by FIEMAP; (None, None) if FIEMAP fails.

    An unwritten (preallocated) extent reads as zeros and is never shared
    (a reflink leaves a hole for it): it counts as a hole, punched in the
    copy, not read.  The loop driver makes them (REQ_OP_WRITE_ZEROES is a
    fallocate of the backing file): an XFS volume's backing file had 61 of
    its 128 MB written so, which were read and written whole at every set."""
    data, holes, pos, last = [], [], 0, False
    count = 256
    while not last and pos < size:
        # A mutable buffer: ioctl() copies an immutable one into 1024 bytes.
        res = bytearray(struct.pack("=QQLLLL", pos, size - pos, 0, 0, count, 0) + b"\0" * (56 * count))
        try:
            fcntl.ioctl(fd, FS_IOC_FIEMAP, res, True)
        except OSError:
            return None, None
        mapped = struct.unpack_from("=L", res, 20)[0]
        if mapped == 0:
            break
        for i in range(mapped):
            logical, _, length = struct.unpack_from("=QQQ", res, 32 + 56 * i)
            flags = struct.unpack_from("=L", res, 32 + 56 * i + 40)[0]
            start, end = max(logical, pos), min(logical + length, size)
            if start > pos:
                holes.append((pos, start))
            if end > start and flags & FIEMAP_EXTENT_UNWRITTEN:
                holes.append((start, end))
            elif end > start and not flags & FIEMAP_EXTENT_SHARED:
                data.append((start, end))
            pos = max(pos, end)
            last = bool(flags & FIEMAP_EXTENT_LAST)
    if pos < size:
        holes.append((pos, size))
    return data, holes


def _patch(path, size, extents, holes):
    """Write extents into path, punch holes, and give it size."""
    fd = os.open(path, os.O_WRONLY)
    try:
        for start, end in holes:
            if libc.fallocate(fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                              ctypes.c_int64(start), ctypes.c_int64(end - start)) != 0:
                err = ctypes.get_errno()
                raise OSError(err, "fallocate(PUNCH_HOLE) of %s: %s" % (path, os.strerror(err)))
        for pos, buf in extents:
            os.pwrite(fd, buf, pos)
        os.ftruncate(fd, size)
    finally:
        os.close(fd)
