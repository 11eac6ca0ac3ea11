"""Copying a volume's bytes at the point in time: a FICLONE reflink, else a
sparse SEEK_DATA/SEEK_HOLE copy (copy_file_range where it works)."""

import errno
import fcntl
import os
import time

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


def same_filesystem(path, mount):
    """Whether path lies on the filesystem mounted at mount."""
    return os.stat(path).st_dev == os.stat(mount).st_dev


def copy_set_frozen(store_mount, pairs):
    """Copy several backing files at one instant, as EBS's multi-volume
    CreateSnapshots does: FIFREEZE the store (the filesystem holding the
    backing files, one the sandbox made for them), read every image's data
    extents into memory, FITHAW, then write the copies.  While the store is
    frozen, the loop driver cannot complete a write to any backing file, so
    every write to the volumes' own filesystems waits in the loop queue:
    what is read is the volumes as they were at the freeze, none of them
    later than another.  Reflinks are impossible on a frozen filesystem
    (a clone writes metadata), hence the reads; the copies are written
    after the thaw, so the writers wait for the reads only.

    pairs: [(src, dst)], every src on store_mount, every dst outside a
    frozen filesystem's reach only after the thaw (dst may be on the store).
    Returns ([{"method", "ms", "bytes", "size"}] per pair, frozen_ms).
    """
    for src, _ in pairs:
        if not same_filesystem(src, store_mount):
            raise OSError(errno.EXDEV, "%s is not on the store %s" % (src, store_mount))
    srcs = [os.open(src, os.O_RDONLY) for src, _ in pairs]
    images = []
    try:
        mfd = os.open(store_mount, os.O_RDONLY)
        try:
            t0 = time.monotonic()
            fcntl.ioctl(mfd, FIFREEZE, 0)
            try:
                for sfd in srcs:
                    size = os.lseek(sfd, 0, os.SEEK_END)
                    extents = []
                    for start, end in _data_extents(sfd, size):
                        pos = start
                        while pos < end:
                            buf = os.pread(sfd, min(end - pos, 16 << 20), pos)
                            if not buf:
                                break
                            extents.append((pos, buf))
                            pos += len(buf)
                    images.append((size, extents))
            finally:
                fcntl.ioctl(mfd, FITHAW, 0)
            frozen_ms = round((time.monotonic() - t0) * 1000, 3)
        finally:
            os.close(mfd)
    finally:
        for sfd in srcs:
            os.close(sfd)
    infos = []
    for (_, dst), (size, extents) in zip(pairs, images):
        t1 = time.monotonic()
        _into_place(dst, lambda tmp: _write_image(tmp, size, extents))
        infos.append({"method": "frozen-store-read",
                      "ms": round((time.monotonic() - t1) * 1000 + frozen_ms, 3),
                      "bytes": sum(len(b) for _, b in extents), "size": size})
    return infos, frozen_ms


def _write_image(path, size, extents):
    with open(path, "wb") as f:
        for pos, buf in extents:
            os.pwrite(f.fileno(), buf, pos)
        os.ftruncate(f.fileno(), size)
