/*
 * marker.c - see marker.h.
 */
#include "marker.h"
#include "mountinfo.h"
#include "freeze.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#ifndef STATX_MNT_ID
#define STATX_MNT_ID 0x00001000U
#endif

/* This boot's id (one line, no spaces); 0, or -1 if it cannot be read. */
static int read_boot_id(const struct sys_paths *sp, char *buf, size_t sz)
{
	ssize_t n;
	int fd;

	fd = open(sp->boot_id, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sz - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	buf[strcspn(buf, " \t\n")] = '\0';
	return buf[0] ? 0 : -1;
}

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
		return err_set(err, AMIS_E_STATE_DIR, "state_dir %s is not a directory", state_dir);
	}
	return err_set(err, AMIS_E_STATE_DIR, "could not create state_dir %s: %s", state_dir,
	               strerror(errno));
}

int marker_check_dir(const char *state_dir, const struct freeze_plan *plan, struct amis_err *err)
{
	struct statx stx;

	if (ensure_dir(state_dir, err) < 0)
		return -1;
	if (statx(AT_FDCWD, state_dir, 0, STATX_MNT_ID, &stx) != 0)
		return err_set(err, AMIS_E_STATE_DIR, "could not statx state_dir %s: %s", state_dir,
		               strerror(errno));
	for (size_t i = 0; i < plan->nfs; i++) {
		const struct freeze_fs *fs = &plan->fs[i];

		/* A freeze is per superblock: the device decides, whatever the mount. */
		if ((stx.stx_dev_major == fs->dev_major && stx.stx_dev_minor == fs->dev_minor) ||
		    ((stx.stx_mask & STATX_MNT_ID) &&
		     stx.stx_mnt_id == (unsigned long long)fs->mount_id))
			return err_set(err, AMIS_E_STATE_DIR_FROZEN,
			               "the helper's state_dir %s is on %s, a filesystem this "
			               "request would freeze; the frozen marker could not be "
			               "written or removed: set [helper] state_dir elsewhere "
			               "(default /run/ami-snapshot)",
			               state_dir, fs->mount_point);
	}
	return 0;
}

/*
 * The claims file's header (freeze.h, FREEZE_CLAIMS_HDR_OFF): ties it to
 * one marker.  boot_id "-" when unknown.
 */
static void claims_header(char *buf, size_t sz, const char *boot_id, const char *token, size_t nfs)
{
	snprintf(buf, sz, "ami-snapshot-helper claims 1\nboot_id %s\ntoken %s\nentries %zu\n",
	         boot_id[0] ? boot_id : "-", token, nfs);
}

/* A token naming this marker and its claims file: random, else pid and time. */
static void make_token(char *buf, size_t sz)
{
	unsigned char r[12];
	struct timespec ts;
	size_t off = 0;

	if (getrandom(r, sizeof(r), GRND_NONBLOCK) == (ssize_t)sizeof(r)) {
		for (size_t i = 0; i < sizeof(r) && off + 3 <= sz; i++)
			off += (size_t)snprintf(buf + off, sz - off, "%02x", r[i]);
		return;
	}
	clock_gettime(CLOCK_REALTIME, &ts);
	snprintf(buf, sz, "%ld-%lld-%ld-%lld", (long)getpid(), (long long)ts.tv_sec, ts.tv_nsec,
	         mono_usec());
}

/*
 * Backs plan's claims with state_dir/CLAIMS_FILE (freeze_plan_claims_file());
 * 0, or -1 after a warning, with no claims file left (recovery then thaws all
 * the marker lists) and the plan without claims (freeze_plan_open() maps
 * anonymous ones).
 */
static int claims_create(const char *state_dir, struct freeze_plan *plan, const char *header)
{
	struct amis_err err;
	int dirfd, rc;

	err_clear(&err);
	dirfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0) {
		log_warn("could not open state_dir %s for the freeze claims file: %s; keeping "
		         "the claims in memory only: should the helper and its watchdog both die "
		         "while frozen, recovery would thaw everything the marker lists",
		         state_dir, strerror(errno));
		return -1;
	}
	rc = freeze_plan_claims_file(plan, dirfd, CLAIMS_FILE, CLAIMS_FILE ".tmp", header, &err);
	if (rc < 0) {
		/* A stale one must not pass for this marker's (its token would not match). */
		(void)unlinkat(dirfd, CLAIMS_FILE, 0);
		log_warn("could not set up the freeze claims file in %s: %s; keeping the claims "
		         "in memory only: should the helper and its watchdog both die while "
		         "frozen, recovery would thaw everything the marker lists",
		         state_dir, err.msg);
	}
	close(dirfd);
	return rc;
}

int marker_write(const struct sys_paths *sp, const char *state_dir, struct freeze_plan *plan,
                 const char *request_id, struct amis_err *err)
{
	char tmp[PATH_MAX + 16], path[PATH_MAX + 16], boot_id[64], token[64];
	char header[FREEZE_CLAIMS_SIZE - FREEZE_CLAIMS_HDR_OFF];
	struct strbuf sb;
	bool claims;
	int fd, rc = -1;
	ssize_t n;

	if (ensure_dir(state_dir, err) < 0)
		return -1;
	for (size_t i = 0; i < plan->nfs; i++)
		if (strchr(plan->fs[i].mount_point, '\n'))
			return err_set(err, AMIS_E_STATE_DIR,
			               "mount point with a newline: cannot record it");
	if (read_boot_id(sp, boot_id, sizeof(boot_id)) != 0)
		boot_id[0] = '\0';
	make_token(token, sizeof(token));
	claims_header(header, sizeof(header), boot_id, token, plan->nfs);
	/* Before the marker: a marker naming claims always has its file. */
	claims = claims_create(state_dir, plan, header) == 0;
	sb_init(&sb);
	sb_appendf(&sb, "# ami-snapshot-helper: request %s froze these (pid %ld)\n", request_id,
	           (long)getpid());
	if (boot_id[0])
		sb_appendf(&sb, "boot_id %s\n", boot_id);
	if (claims)
		sb_appendf(&sb, "claims %s\n", token);
	/* In plan order: line k is claim byte k. */
	for (size_t i = 0; i < plan->nfs; i++) {
		const struct freeze_fs *fs = &plan->fs[i];

		sb_appendf(&sb, "%d %u:%u %s\n", fs->mount_id, fs->dev_major, fs->dev_minor,
		           fs->mount_point);
	}
	marker_path(tmp, sizeof(tmp), state_dir, MARKER_FILE ".tmp");
	marker_path(path, sizeof(path), state_dir, MARKER_FILE);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		err_set(err, AMIS_E_STATE_DIR, "could not create %s: %s", tmp, strerror(errno));
		goto out;
	}
	n = write(fd, sb.data, sb.len);
	if (n != (ssize_t)sb.len || fsync(fd) != 0) {
		err_set(err, AMIS_E_STATE_DIR, "could not write %s: %s", tmp,
		        n < 0 || n == (ssize_t)sb.len ? strerror(errno) : "short write");
		close(fd);
		unlink(tmp);
		goto out;
	}
	close(fd);
	if (rename(tmp, path) != 0) {
		err_set(err, AMIS_E_STATE_DIR, "could not rename %s to %s: %s", tmp, path,
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
	if (rc < 0 && claims) {
		marker_path(path, sizeof(path), state_dir, CLAIMS_FILE);
		(void)unlink(path);
	}
	return rc;
}

int marker_remove(const char *state_dir, struct amis_err *err)
{
	char path[PATH_MAX + 16];

	/* The marker first: a claims file without its marker means nothing. */
	marker_path(path, sizeof(path), state_dir, MARKER_FILE);
	if (unlink(path) != 0 && errno != ENOENT)
		return err_set(err, AMIS_E_STATE_DIR, "could not remove %s: %s", path,
		               strerror(errno));
	marker_path(path, sizeof(path), state_dir, CLAIMS_FILE);
	if (unlink(path) != 0 && errno != ENOENT)
		log_warn("could not remove %s: %s", path, strerror(errno));
	return 0;
}

/* Opens dir if it is a directory of device major:minor; the fd, or -1. */
static int open_on_device(const char *dir, unsigned int major, unsigned int minor)
{
	struct statx stx;
	int fd;

	/* A lookup does not write: it does not block on a frozen filesystem. */
	fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	if (statx(fd, "", AT_EMPTY_PATH, 0, &stx) != 0 || stx.stx_dev_major != major ||
	    stx.stx_dev_minor != minor) {
		close(fd);
		errno = EXDEV;
		return -1;
	}
	return fd;
}

/*
 * Looks for any mount of major:minor in mountinfo (the freeze belongs to the
 * superblock, not to a mount); an open directory of it and its mount point
 * in found, or -1.
 */
static int find_device_mount(const struct sys_paths *sp, unsigned int major, unsigned int minor,
                             char *found, size_t sz)
{
	struct mount_entry me;
	char *line = NULL;
	size_t cap = 0;
	int fd = -1;
	FILE *f;

	f = fopen(sp->mountinfo, "re");
	if (!f) {
		log_error("frozen marker: cannot read %s: %s", sp->mountinfo, strerror(errno));
		return -1;
	}
	while (fd < 0 && getline(&line, &cap, f) >= 0) {
		if (mountinfo_parse_line(line, &me) != 0 || me.major != major ||
		    me.minor != minor || me.mount_point[0] != '/')
			continue;
		fd = open_on_device(me.mount_point, major, minor);
		if (fd >= 0 && strlcpy_checked(found, me.mount_point, sz) != 0) {
			close(fd);
			fd = -1;
		}
	}
	free(line);
	fclose(f);
	return fd;
}

/*
 * Thaws one marker line's filesystem, identified by its device (a restarted
 * helper may be in another mount namespace: mount ids say nothing then).
 * 0 once it is thawed (or was not frozen), -1 if it could not be found or
 * thawed.
 */
static int recover_line(const struct sys_paths *sp, const char *line)
{
	char mount_point[PATH_MAX], where[PATH_MAX];
	unsigned int major, minor;
	struct amis_err err;
	bool not_frozen;
	int mount_id, fd, n = 0, rc;

	if (sscanf(line, "%d %u:%u %n", &mount_id, &major, &minor, &n) != 3 || n == 0 ||
	    strlcpy_checked(mount_point, line + n, sizeof(mount_point)) != 0 ||
	    mount_point[0] != '/') {
		log_error("frozen marker: unreadable line \"%s\"", line);
		return -1;
	}
	fd = open_on_device(mount_point, major, minor);
	if (fd >= 0) {
		snprintf(where, sizeof(where), "%s", mount_point);
	} else {
		log_warn("frozen marker: %s is not device %u:%u here (%s); looking for another "
		         "mount of it",
		         mount_point, major, minor, strerror(errno));
		fd = find_device_mount(sp, major, minor, where, sizeof(where));
	}
	if (fd < 0) {
		log_error("frozen marker: no mount of device %u:%u (listed as %s) found; it may "
		          "still be frozen",
		          major, minor, mount_point);
		return -1;
	}
	err_clear(&err);
	rc = fs_thaw_fd(fd, where, &not_frozen, &err);
	close(fd);
	if (rc < 0) {
		log_error("frozen marker: %s (device %u:%u) IS STILL FROZEN: %s: %s", where, major,
		          minor, err.code, err.msg);
		return -1;
	}
	if (not_frozen)
		log_warn("frozen marker: %s (device %u:%u) was not frozen any more", where, major,
		         minor);
	else
		log_error("frozen marker: THAWED %s (device %u:%u), left frozen by a helper that "
		          "died",
		          where, major, minor);
	return 0;
}

/*
 * What the marker f says about itself: its boot id and claims token ("" if
 * absent) and how many filesystems it lists.  Rewinds f.
 */
struct marker_head {
	char boot_id[64], token[64];
	size_t nfs;
};

static void read_head(FILE *f, struct marker_head *h)
{
	char line[PATH_MAX + 64];

	memset(h, 0, sizeof(*h));
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (!strncmp(line, "boot_id ", 8) && !h->boot_id[0])
			snprintf(h->boot_id, sizeof(h->boot_id), "%.63s", line + 8);
		else if (!strncmp(line, "claims ", 7) && !h->token[0])
			snprintf(h->token, sizeof(h->token), "%.63s", line + 7);
		else if (line[0] && line[0] != '#')
			h->nfs++;
	}
	rewind(f);
}

/* Whether the marker was written in another boot (then it means nothing). */
static bool from_other_boot(const struct sys_paths *sp, const struct marker_head *h)
{
	char ours[64];

	return h->boot_id[0] && read_boot_id(sp, ours, sizeof(ours)) == 0 &&
	       strcmp(ours, h->boot_id) != 0;
}

/*
 * Reads the claims file of the marker h into claims (FREEZE_PLAN_MAX_FS
 * bytes): 0 if it is there, of the right size and its header names the same
 * boot, token and number of entries; else -1 and why.
 */
static int read_claims(const char *state_dir, const struct marker_head *h, unsigned char *claims,
                       const char **why)
{
	char path[PATH_MAX + 16], want[FREEZE_CLAIMS_SIZE - FREEZE_CLAIMS_HDR_OFF];
	static char page[FREEZE_CLAIMS_SIZE + 1];
	struct stat st;
	ssize_t n;
	int fd;

	if (!h->token[0]) {
		*why = "the marker names no claims file (the helper could not create one, or is "
		       "older)";
		return -1;
	}
	if (h->nfs > FREEZE_PLAN_MAX_FS) {
		*why = "the marker lists more filesystems than claims can name";
		return -1;
	}
	marker_path(path, sizeof(path), state_dir, CLAIMS_FILE);
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		*why = errno == ENOENT ? "the claims file " CLAIMS_FILE " is missing"
		                       : "the claims file " CLAIMS_FILE " cannot be opened";
		return -1;
	}
	if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_size != FREEZE_CLAIMS_SIZE) {
		close(fd);
		*why = "the claims file " CLAIMS_FILE " is not a file of the right size";
		return -1;
	}
	n = pread(fd, page, FREEZE_CLAIMS_SIZE, 0);
	close(fd);
	if (n != FREEZE_CLAIMS_SIZE) {
		*why = "the claims file " CLAIMS_FILE " cannot be read";
		return -1;
	}
	page[FREEZE_CLAIMS_SIZE] = '\0';
	claims_header(want, sizeof(want), h->boot_id, h->token, h->nfs);
	if (strcmp(page + FREEZE_CLAIMS_HDR_OFF, want) != 0) {
		*why = "the claims file " CLAIMS_FILE " belongs to another marker";
		return -1;
	}
	memcpy(claims, page, FREEZE_PLAN_MAX_FS);
	return 0;
}

int marker_recover(const struct sys_paths *sp, const char *state_dir)
{
	char path[PATH_MAX + 16], line[PATH_MAX + 64];
	unsigned char claims[FREEZE_PLAN_MAX_FS];
	struct marker_head head;
	struct amis_err err;
	const char *why = NULL;
	bool use_claims;
	size_t k = 0;
	int rc = 0;
	FILE *f;

	marker_path(path, sizeof(path), state_dir, MARKER_FILE);
	f = fopen(path, "re");
	if (!f) {
		if (errno != ENOENT)
			log_error("could not read the frozen marker %s: %s", path, strerror(errno));
		return errno == ENOENT ? 0 : -1;
	}
	read_head(f, &head);
	if (from_other_boot(sp, &head)) {
		fclose(f);
		log_error("the frozen marker %s is from another boot (boot id %s): nothing it "
		          "lists can be frozen by that helper now; removing it",
		          path, head.boot_id);
		if (marker_remove(state_dir, &err) < 0) {
			log_error("%s", err.msg);
			return -1;
		}
		return 0;
	}
	log_error("found the frozen marker %s: a helper died while filesystems were frozen; "
	          "thawing what it froze",
	          path);
	use_claims = read_claims(state_dir, &head, claims, &why) == 0;
	if (!use_claims)
		log_warn("frozen marker: %s: thawing everything it lists, even a filesystem "
		         "someone else froze",
		         why);
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		if (line[0] == '#') {
			log_info("frozen marker: %s", line + 1);
			continue;
		}
		if (!strncmp(line, "boot_id ", 8) || !strncmp(line, "claims ", 7) || !line[0])
			continue;
		/* Line k is the plan's entry k, claim byte k (marker_write()). */
		if (use_claims && !claims[k++]) {
			log_warn(
			    "frozen marker: leaving \"%s\" alone: the helper had not frozen it "
			    "(its freeze failed, e.g. someone else's freeze, or it was "
			    "thawed already)",
			    line);
			continue;
		}
		if (recover_line(sp, line) < 0)
			rc = -1;
	}
	fclose(f);
	if (rc == 0) {
		if (marker_remove(state_dir, &err) < 0) {
			log_error("%s", err.msg);
			return -1;
		}
		log_warn("frozen marker %s handled and removed", path);
	} else {
		log_error("the frozen marker %s is kept: some of its filesystems could not be "
		          "found or thawed; thaw them by hand (fsfreeze -u MOUNT_POINT), then "
		          "remove it",
		          path);
	}
	return rc;
}
