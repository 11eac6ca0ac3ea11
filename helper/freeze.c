/*
 * freeze.c - see freeze.h.
 */
#include "freeze.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif

static int open_dir(const char *mount_point, struct amis_err *err)
{
	int fd = open(mount_point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd < 0)
		err_set(err,
		        errno == EACCES || errno == EPERM ? "PermissionDenied" : "FreezeFailed",
		        "could not open %s: %s", mount_point, strerror(errno));
	return fd;
}

int fs_freeze_fd(int fd, const char *label, struct amis_err *err)
{
	if (ioctl(fd, FIFREEZE, 0) == 0)
		return 0;
	switch (errno) {
	case EBUSY:
		return err_set(err, "AlreadyFrozen", "%s is already frozen", label);
	case EOPNOTSUPP:
		return err_set(err, "FreezeNotSupported",
		               "the filesystem at %s does not support freezing", label);
	case EPERM:
	case EACCES:
		return err_set(err, "PermissionDenied",
		               "not allowed to freeze %s (needs CAP_SYS_ADMIN): %s", label,
		               strerror(errno));
	default:
		return err_set(err, "FreezeFailed", "could not freeze %s: %s", label,
		               strerror(errno));
	}
}

int fs_thaw_fd(int fd, const char *label, bool *was_not_frozen, struct amis_err *err)
{
	if (was_not_frozen)
		*was_not_frozen = false;
	if (ioctl(fd, FITHAW, 0) == 0)
		return 0;
	switch (errno) {
	case EINVAL: /* thaw_super(): not frozen */
		if (was_not_frozen)
			*was_not_frozen = true;
		return 0;
	case EPERM:
	case EACCES:
		return err_set(err, "PermissionDenied",
		               "not allowed to thaw %s (needs CAP_SYS_ADMIN): %s", label,
		               strerror(errno));
	default:
		return err_set(err, "ThawFailed", "could not thaw %s: %s", label, strerror(errno));
	}
}

int fs_freeze(const char *mount_point, struct amis_err *err)
{
	int fd = open_dir(mount_point, err);
	int rc;

	if (fd < 0)
		return -1;
	rc = fs_freeze_fd(fd, mount_point, err);
	close(fd);
	return rc;
}

int fs_thaw(const char *mount_point, bool *was_not_frozen, struct amis_err *err)
{
	int fd = open(mount_point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	int rc;

	if (was_not_frozen)
		*was_not_frozen = false;
	if (fd < 0)
		return err_set(
		    err, errno == EACCES || errno == EPERM ? "PermissionDenied" : "ThawFailed",
		    "could not open %s: %s", mount_point, strerror(errno));
	rc = fs_thaw_fd(fd, mount_point, was_not_frozen, err);
	close(fd);
	return rc;
}

/* Opens fs's mount point and checks it is still the mount that was resolved. */
static int open_checked(struct freeze_fs *fs, struct amis_err *err)
{
	struct statx stx;
	int fd = open_dir(fs->mount_point, err);

	if (fd < 0)
		return -1;
	if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) < 0) {
		err_set(err, "FreezeFailed", "could not statx %s: %s", fs->mount_point,
		        strerror(errno));
		close(fd);
		return -1;
	}
	if (fs->mount_id > 0 && (stx.stx_mask & STATX_MNT_ID) &&
	    stx.stx_mnt_id != (unsigned long long)fs->mount_id) {
		err_set(err, "MountChanged",
		        "%s is mount %llu now, not mount %d as resolved; refusing to touch it",
		        fs->mount_point, (unsigned long long)stx.stx_mnt_id, fs->mount_id);
		close(fd);
		return -1;
	}
	/* Kernels before 5.8 have no mount id: at least the device must match. */
	if (fs->mount_id > 0 && !(stx.stx_mask & STATX_MNT_ID) &&
	    (stx.stx_dev_major != fs->dev_major || stx.stx_dev_minor != fs->dev_minor)) {
		err_set(err, "MountChanged",
		        "%s is on device %u:%u now, not %u:%u as resolved; refusing to touch it",
		        fs->mount_point, stx.stx_dev_major, stx.stx_dev_minor, fs->dev_major,
		        fs->dev_minor);
		close(fd);
		return -1;
	}
	fs->fd = fd;
	return 0;
}

void freeze_plan_close(struct freeze_plan *plan)
{
	for (size_t i = 0; i < plan->nfs; i++) {
		if (plan->fs[i].fd >= 0)
			close(plan->fs[i].fd);
		plan->fs[i].fd = -1;
	}
}

/* Thaws one entry we froze; on success closes its directory. */
static int thaw_entry(struct freeze_fs *fs, struct amis_err *err)
{
	bool not_frozen = false;

	/* A retry after a failed thaw: reopen, and only the mount we froze. */
	if (fs->fd < 0 && open_checked(fs, err) < 0) {
		if (err && strcmp(err->code, "FreezeFailed") == 0)
			snprintf(err->code, sizeof(err->code), "ThawFailed");
		return err_prefix(err, "could not thaw %s", fs->mount_point);
	}
	if (fs_thaw_fd(fs->fd, fs->mount_point, &not_frozen, err) < 0)
		return -1;
	fs->thawed_at_usec = mono_usec();
	fs->frozen = false;
	fs->thaw_found_thawed = not_frozen;
	close(fs->fd);
	fs->fd = -1;
	return 0;
}

int freeze_plan_open(struct freeze_plan *plan, struct amis_err *err)
{
	size_t i;

	for (i = 0; i < plan->nfs; i++)
		if (plan->fs[i].frozen || plan->fs[i].fd >= 0)
			return err_set(err, "BadState", "%s is already frozen by this plan",
			               plan->fs[i].mount_point);
	for (i = 0; i < plan->nfs; i++) {
		struct freeze_fs *fs = &plan->fs[i];

		fs->frozen = false;
		fs->thaw_found_thawed = false;
		fs->frozen_at_usec = 0;
		fs->thawed_at_usec = 0;
		if (open_checked(fs, err) < 0) {
			freeze_plan_close(plan);
			return -1;
		}
	}

	/*
	 * Write back dirty data while writers still run: FIFREEZE blocks new
	 * writes first and then syncs, so whatever is dirty at that moment is
	 * written with the database stalled.  A syncfs() just before makes that
	 * remainder small (errors here are not fatal: the freeze syncs again).
	 */
	for (i = 0; i < plan->nfs; i++)
		(void)syncfs(plan->fs[i].fd);
	return 0;
}

/* Opened by freeze_plan_open() and not frozen yet. */
static bool plan_is_open(const struct freeze_plan *plan)
{
	for (size_t i = 0; i < plan->nfs; i++)
		if (plan->fs[i].frozen || plan->fs[i].fd < 0)
			return false;
	return plan->nfs > 0;
}

int freeze_plan_freeze(struct freeze_plan *plan, struct amis_err *err)
{
	size_t i;

	if (!plan_is_open(plan) && freeze_plan_open(plan, err) < 0)
		return -1;

	/* From here until the thaw: no path lookups, no logging. */
	for (i = 0; i < plan->nfs; i++) {
		struct freeze_fs *fs = &plan->fs[i];
		/* Writes block from the moment FIFREEZE starts, not when it returns. */
		long long start = mono_usec();

		if (fs_freeze_fd(fs->fd, fs->mount_point, err) < 0)
			break;
		fs->frozen_at_usec = start;
		fs->freeze_returned_usec = mono_usec();
		fs->frozen = true;
	}
	if (i == plan->nfs)
		return 0;

	/* Roll back: thaw what we froze, children last. */
	while (i-- > 0) {
		struct amis_err terr;

		err_clear(&terr);
		if (thaw_entry(&plan->fs[i], &terr) < 0)
			err_append(err, "and could not thaw %s again, it is still frozen: %s",
			           plan->fs[i].mount_point, terr.msg);
	}
	for (i = 0; i < plan->nfs; i++)
		if (!plan->fs[i].frozen && plan->fs[i].fd >= 0) {
			close(plan->fs[i].fd);
			plan->fs[i].fd = -1;
		}
	return -1;
}

int freeze_plan_thaw(struct freeze_plan *plan, struct amis_err *err)
{
	int rc = 0;

	for (size_t i = plan->nfs; i-- > 0;) {
		struct freeze_fs *fs = &plan->fs[i];
		struct amis_err terr;

		if (!fs->frozen)
			continue;
		err_clear(&terr);
		if (thaw_entry(fs, &terr) == 0)
			continue;
		if (rc == 0 && err)
			*err = terr;
		else
			err_append(err, "%s", terr.msg);
		rc = -1;
	}
	return rc;
}

bool freeze_plan_any_frozen(const struct freeze_plan *plan)
{
	for (size_t i = 0; i < plan->nfs; i++)
		if (plan->fs[i].frozen)
			return true;
	return false;
}

long long freeze_plan_window_usec(const struct freeze_plan *plan)
{
	long long first = 0, last = 0;

	for (size_t i = 0; i < plan->nfs; i++) {
		const struct freeze_fs *fs = &plan->fs[i];

		if (fs->frozen)
			return -1;
		if (!fs->frozen_at_usec)
			continue;
		if (!first || fs->frozen_at_usec < first)
			first = fs->frozen_at_usec;
		if (fs->thawed_at_usec > last)
			last = fs->thawed_at_usec;
	}
	return first ? last - first : -1;
}
