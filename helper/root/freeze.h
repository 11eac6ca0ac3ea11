/*
 * freeze.h - the root-only part: freeze and thaw filesystems.
 *
 * FIFREEZE/FITHAW act on a superblock, through any open directory of it
 * (ioctl_fifreeze(2) is undocumented; see fs/ioctl.c and fsfreeze(8)).  The
 * kernel never thaws by itself (doc/design.md, "Freezing"): whoever calls
 * freeze_plan_freeze() must make sure freeze_plan_thaw() follows, and a
 * watchdog must thaw if this process dies.
 *
 * Nothing here logs between freeze and thaw: a write to a frozen
 * filesystem would block, so reporting is the caller's job, after the
 * thaw (the timestamps in struct freeze_fs give the freeze window).  Only
 * freeze_plan_open(), before anything is frozen, may log a warning.
 */
#ifndef AMIS_FREEZE_H
#define AMIS_FREEZE_H

#include "util.h"
#include "volumes.h"

#include <stdbool.h>

/*
 * Freezes the filesystem mounted at mount_point.  err->code on failure:
 * AlreadyFrozen (EBUSY), FreezeNotSupported (EOPNOTSUPP), PermissionDenied
 * (EPERM, EACCES), FreezeFailed (anything else, or cannot open).
 */
int fs_freeze(const char *mount_point, struct amis_err *err);

/*
 * Thaws it.  A filesystem that is not frozen (EINVAL) counts as success;
 * *was_not_frozen (may be NULL) tells that case apart.  err->code on
 * failure: PermissionDenied, ThawFailed.
 */
int fs_thaw(const char *mount_point, bool *was_not_frozen, struct amis_err *err);

/* The same on an open directory of the filesystem; label names it in errors. */
int fs_thaw_fd(int fd, const char *label, bool *was_not_frozen, struct amis_err *err);

/*
 * The first half of freeze_plan_freeze(), for callers that must do
 * something between opening and freezing (fork the watchdog, which inherits
 * the open directories and the claims): maps the claims (see below), opens
 * and checks every mount point as described below and prepares the
 * filesystems: syncfs() each, and on ext4 checkpoint its journal
 * (EXT4_IOC_CHECKPOINT, Linux >= 5.13), so that FIFREEZE, which does both
 * again with writes blocked, has little left to do.  The filesystems are
 * prepared in parallel, one thread each, joined before returning.  Neither
 * step failing is an error (FIFREEZE syncs anyway); a checkpoint failing
 * otherwise than "not available" is logged as a warning.  Nothing is
 * frozen; freeze_plan_close() undoes it.
 */
int freeze_plan_open(struct freeze_plan *plan, struct amis_err *err);

/*
 * Freezes the plan's filesystems, opening them first unless
 * freeze_plan_open() did already.  They are frozen in parallel, level by
 * level: a filesystem mounted below another one of the plan is frozen
 * (FIFREEZE returned) before that one starts; without nested mounts, all
 * at once.  The threads doing it are started here, after any fork between
 * freeze_plan_open() and this (a watchdog's), and before the first
 * FIFREEZE; they are stopped once everything is thawed, or by
 * freeze_plan_close().  Every
 * mount point is opened and checked first, before anything is frozen: no
 * path lookup happens while a filesystem is frozen, and a mount point that
 * is no longer the mount that was resolved (mount id, via statx) is refused
 * ("MountChanged": someone could have swapped a directory on the way for a
 * symlink to /).  The directories stay open until the thaw, so the thaw
 * reaches the same superblocks whatever happens to the paths meanwhile.
 *
 * If one filesystem fails to freeze, the ones frozen (before it, or beside
 * it in its level) are thawed (children last) and -1 is returned with the
 * freeze error; if such a thaw fails too, the message says so and those
 * entries stay frozen = true (the caller must freeze_plan_thaw() again, and
 * its watchdog stands by).
 */
int freeze_plan_freeze(struct freeze_plan *plan, struct amis_err *err);

/*
 * Thaws every entry frozen by freeze_plan_freeze(), in parallel level by
 * level, the reverse of the freeze (children last), attempting all of them
 * even when one fails.  Returns -1 if any failed
 * (err: the first failure, later ones appended; those stay frozen = true,
 * so calling again retries just them).
 */
int freeze_plan_thaw(struct freeze_plan *plan, struct amis_err *err);

/* Whether any entry is still frozen by us. */
bool freeze_plan_any_frozen(const struct freeze_plan *plan);

/*
 * Claims: which entries this process may have frozen, for the watchdog.
 * The kernel does not say who froze a filesystem: FIFREEZE on one frozen by
 * someone else (an administrator's fsfreeze) fails with EBUSY, and a thaw
 * by anyone undoes any freeze.  So that the watchdog (a forked process)
 * thaws only what the helper froze, freeze_plan_open() maps one byte per
 * entry in a MAP_SHARED page, inherited by the watchdog.  An
 * entry's byte is
 *   - set just BEFORE its FIFREEZE: if the helper is killed the moment
 *     FIFREEZE returned, the watchdog still thaws it;
 *   - cleared when that FIFREEZE fails (EBUSY: not ours; EOPNOTSUPP...: not
 *     frozen), and after a FITHAW that succeeded or found it not frozen
 *     (by the helper, or by the watchdog).
 * The watchdog thaws only entries whose byte is set.  Bytes are read and
 * written with atomic operations, lock-free: async-signal-safe.
 *
 * What remains (tiny windows, a few microseconds each): between setting the
 * byte and the EBUSY FIFREEZE clearing it again, the watchdog could thaw
 * someone else's freeze if it fires just then (its deadline, or the helper
 * killed exactly there: the byte then stays set); and a thaw by anyone
 * between the watchdog's read of the byte and its FITHAW could be followed
 * by a new foreign freeze that this FITHAW undoes.  The kernel offers no
 * freeze owner to close them.
 *
 * The page is anonymous unless freeze_plan_claims_file() backed it with a
 * file first (marker_write() does, in state_dir): then a helper started
 * after this one and its watchdog both died can read which entries were
 * claimed (marker_recover()).  Layout: entry i's byte at offset i, a text
 * header (the caller's) at FREEZE_CLAIMS_HDR_OFF, zeros elsewhere.
 *
 * freeze_plan_claimed(): whether entry i is claimed (false without claims);
 * freeze_plan_unclaim(): clears it (the watchdog, after its own FITHAW).
 * Both async-signal-safe.
 */
#define FREEZE_CLAIMS_SIZE 4096
#define FREEZE_CLAIMS_HDR_OFF 1024

/*
 * Backs the claims with a new file: creates tmp_name in directory dirfd
 * (O_EXCL, 0600), sizes it to FREEZE_CLAIMS_SIZE, maps it MAP_SHARED,
 * writes every byte through the mapping (all claims clear, header at
 * FREEZE_CLAIMS_HDR_OFF) so that the page is faulted in for writing before
 * anything is frozen, mlock()s it (best effort) and renames it to name.
 * Replaces the plan's claims mapping (none may be frozen); freeze_plan_open()
 * then uses it instead of an anonymous one.  -1 with err ("StateDir",
 * "BadState"), the plan then without claims (freeze_plan_open() maps
 * anonymous ones) and no temporary file left.  Not for use while frozen.
 */
int freeze_plan_claims_file(struct freeze_plan *plan, int dirfd, const char *name,
                            const char *tmp_name, const char *header, struct amis_err *err);

bool freeze_plan_claimed(const struct freeze_plan *plan, size_t i);
void freeze_plan_unclaim(const struct freeze_plan *plan, size_t i);

/*
 * From the first freeze to the last thaw, in microseconds; -1 while
 * something is still frozen or when nothing was frozen.
 */
long long freeze_plan_window_usec(const struct freeze_plan *plan);

/*
 * Stops the plan's threads and closes its directories (does not thaw).  The
 * claims are unmapped too unless an entry is still frozen (then they stay
 * for a later freeze_plan_thaw(), and the watchdog keeps its own mapping).
 */
void freeze_plan_close(struct freeze_plan *plan);

#endif
