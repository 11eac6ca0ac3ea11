/*
 * marker.c - see marker.h.
 */
#include "marker.h"
#include "freeze.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif

static void marker_path(char *buf, size_t sz, const char *state_dir, const char *name)
{
	snprintf(buf, sz, "%s/%s", state_dir, name);
}

/* Creates state_dir (0700) if missing; an existing one is used as it is. */
static int ensure_dir(const char *state_dir, struct amis_err *err)
{
	struct stat st;

	if (mkdir(state_dir, 0700) == 0 || errno == EEXIST) {
		if (stat(state_dir, &st) == 0 && S_ISDIR(st.st_mode))
			return 0;
		return err_set(err, "StateDir", "state_dir %s is not a directory", state_dir);
	}
	return err_set(err, "StateDir", "could not create state_dir %s: %s", state_dir,
	               strerror(errno));
}

int marker_check_dir(const char *state_dir, const struct freeze_plan *plan, struct amis_err *err)
{
	struct statx stx;

	if (ensure_dir(state_dir, err) < 0)
		return -1;
	if (statx(AT_FDCWD, state_dir, 0, STATX_MNT_ID, &stx) != 0)
		return err_set(err, "StateDir", "could not statx state_dir %s: %s", state_dir,
		               strerror(errno));
	for (size_t i = 0; i < plan->nfs; i++) {
		const struct freeze_fs *fs = &plan->fs[i];

		/* A freeze is per superblock: the device decides, whatever the mount. */
		if ((stx.stx_dev_major == fs->dev_major && stx.stx_dev_minor == fs->dev_minor) ||
		    ((stx.stx_mask & STATX_MNT_ID) &&
		     stx.stx_mnt_id == (unsigned long long)fs->mount_id))
			return err_set(err, "StateDirFrozen",
			               "the helper's state_dir %s is on %s, a filesystem this "
			               "request would freeze; the frozen marker could not be "
			               "written or removed: set [helper] state_dir elsewhere "
			               "(default /run/ami-snapshot)",
			               state_dir, fs->mount_point);
	}
	return 0;
}

int marker_write(const char *state_dir, const struct freeze_plan *plan, const char *request_id,
                 struct amis_err *err)
{
	char tmp[PATH_MAX + 16], path[PATH_MAX + 16];
	struct strbuf sb;
	int fd, rc = -1;
	ssize_t n;

	if (ensure_dir(state_dir, err) < 0)
		return -1;
	sb_init(&sb);
	sb_appendf(&sb, "# ami-snapshot-helper: request %s froze these (pid %ld)\n", request_id,
	           (long)getpid());
	for (size_t i = 0; i < plan->nfs; i++) {
		const struct freeze_fs *fs = &plan->fs[i];

		if (strchr(fs->mount_point, '\n')) {
			err_set(err, "StateDir", "mount point with a newline: cannot record it");
			goto out;
		}
		sb_appendf(&sb, "%d %u:%u %s\n", fs->mount_id, fs->dev_major, fs->dev_minor,
		           fs->mount_point);
	}
	marker_path(tmp, sizeof(tmp), state_dir, MARKER_FILE ".tmp");
	marker_path(path, sizeof(path), state_dir, MARKER_FILE);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		err_set(err, "StateDir", "could not create %s: %s", tmp, strerror(errno));
		goto out;
	}
	n = write(fd, sb.data, sb.len);
	if (n != (ssize_t)sb.len || fsync(fd) != 0) {
		err_set(err, "StateDir", "could not write %s: %s", tmp,
		        n < 0 || n == (ssize_t)sb.len ? strerror(errno) : "short write");
		close(fd);
		unlink(tmp);
		goto out;
	}
	close(fd);
	if (rename(tmp, path) != 0) {
		err_set(err, "StateDir", "could not rename %s to %s: %s", tmp, path,
		        strerror(errno));
		unlink(tmp);
		goto out;
	}
	/* The rename itself must survive a crash too. */
	fd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
	rc = 0;
out:
	sb_free(&sb);
	return rc;
}

int marker_remove(const char *state_dir, struct amis_err *err)
{
	char path[PATH_MAX + 16];

	marker_path(path, sizeof(path), state_dir, MARKER_FILE);
	if (unlink(path) != 0 && errno != ENOENT)
		return err_set(err, "StateDir", "could not remove %s: %s", path, strerror(errno));
	return 0;
}

/* Thaws one marker line's filesystem if it is still that mount; 0, or -1 on failure. */
static int recover_line(const char *line)
{
	char mount_point[PATH_MAX];
	unsigned int major, minor;
	struct amis_err err;
	struct statx stx;
	bool not_frozen;
	int mount_id, fd, n = 0, rc;

	if (sscanf(line, "%d %u:%u %n", &mount_id, &major, &minor, &n) != 3 || n == 0 ||
	    strlcpy_checked(mount_point, line + n, sizeof(mount_point)) != 0 ||
	    mount_point[0] != '/') {
		log_error("frozen marker: unreadable line \"%s\": ignored", line);
		return 0;
	}
	/* A lookup does not write: it does not block on a frozen filesystem. */
	fd = open(mount_point, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0) {
		log_error("frozen marker: %s: %s; not thawing it", mount_point, strerror(errno));
		return 0;
	}
	if (statx(fd, "", AT_EMPTY_PATH, STATX_MNT_ID, &stx) != 0 || stx.stx_dev_major != major ||
	    stx.stx_dev_minor != minor ||
	    ((stx.stx_mask & STATX_MNT_ID) && stx.stx_mnt_id != (unsigned long long)mount_id)) {
		log_error("frozen marker: %s is no longer mount %d on device %u:%u; not "
		          "touching it",
		          mount_point, mount_id, major, minor);
		close(fd);
		return 0;
	}
	err_clear(&err);
	rc = fs_thaw_fd(fd, mount_point, &not_frozen, &err);
	close(fd);
	if (rc < 0) {
		log_error("frozen marker: %s IS STILL FROZEN: %s: %s", mount_point, err.code,
		          err.msg);
		return -1;
	}
	if (not_frozen)
		log_warn("frozen marker: %s was not frozen any more", mount_point);
	else
		log_error("frozen marker: THAWED %s, left frozen by a helper that died",
		          mount_point);
	return 0;
}

int marker_recover(const char *state_dir)
{
	char path[PATH_MAX + 16], line[PATH_MAX + 64];
	int rc = 0;
	FILE *f;

	marker_path(path, sizeof(path), state_dir, MARKER_FILE);
	f = fopen(path, "re");
	if (!f) {
		if (errno != ENOENT)
			log_error("could not read the frozen marker %s: %s", path, strerror(errno));
		return errno == ENOENT ? 0 : -1;
	}
	log_error("found the frozen marker %s: a helper died while filesystems were frozen; "
	          "thawing what it lists",
	          path);
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '#') {
			log_info("frozen marker: %s", line + 1);
			continue;
		}
		if (line[0] && recover_line(line) < 0)
			rc = -1;
	}
	fclose(f);
	if (rc == 0) {
		struct amis_err err;

		if (marker_remove(state_dir, &err) < 0) {
			log_error("%s", err.msg);
			return -1;
		}
		log_warn("frozen marker %s handled and removed", path);
	} else {
		log_error("the frozen marker %s is kept: some of its filesystems could not be "
		          "thawed; thaw them by hand (fsfreeze -u MOUNT_POINT)",
		          path);
	}
	return rc;
}
