/*
 * inflight.c - see inflight.h.
 */
#include "inflight.h"
#include "log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static void fsync_path(const char *path)
{
	int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (fd >= 0) {
		(void)fsync(fd);
		close(fd);
	}
}

int inflight_add(const char *state_dir, const char *request_id, struct amis_err *err)
{
	char dir[PATH_MAX], path[PATH_MAX + 80];
	int fd;

	if (!request_id_valid(request_id))
		return err_set(err, AMIS_E_INVALID_REQUEST, "invalid request id");
	snprintf(dir, sizeof(dir), "%s/%s", state_dir, INFLIGHT_DIR);
	if (mkdir(state_dir, 0700) != 0 && errno != EEXIST)
		return err_set(err, AMIS_E_STATE_DIR, "could not create state_dir %s: %s",
		               state_dir, strerror(errno));
	if (mkdir(dir, 0700) == 0)
		fsync_path(state_dir);
	else if (errno != EEXIST)
		return err_set(err, AMIS_E_STATE_DIR, "could not create %s: %s", dir,
		               strerror(errno));
	snprintf(path, sizeof(path), "%s/%s", dir, request_id);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return err_set(err, AMIS_E_STATE_DIR, "could not create %s: %s", path,
		               strerror(errno));
	close(fd);
	/* The entry must outlive a crash of the machine too. */
	fsync_path(dir);
	return 0;
}

void inflight_remove(const char *state_dir, const char *request_id)
{
	char path[PATH_MAX + 80];

	if (!request_id_valid(request_id))
		return;
	snprintf(path, sizeof(path), "%s/%s/%s", state_dir, INFLIGHT_DIR, request_id);
	if (unlink(path) != 0 && errno != ENOENT)
		log_warn("request %s: could not remove %s: %s", request_id, path, strerror(errno));
}

size_t inflight_list(const char *state_dir, struct inflight_entry *out, size_t max)
{
	char dir[PATH_MAX], path[PATH_MAX + 300];
	struct dirent *de;
	struct stat st;
	size_t n = 0;
	DIR *d;

	snprintf(dir, sizeof(dir), "%s/%s", state_dir, INFLIGHT_DIR);
	d = opendir(dir);
	if (!d) {
		if (errno != ENOENT)
			log_warn("could not read %s: %s", dir, strerror(errno));
		return 0;
	}
	while ((de = readdir(d)) != NULL && n < max) {
		if (de->d_name[0] == '.')
			continue;
		if (!request_id_valid(de->d_name) ||
		    strlen(de->d_name) >= sizeof(out[n].request_id)) {
			log_warn("%s: ignoring %s: not a request id", dir, de->d_name);
			continue;
		}
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (lstat(path, &st) != 0 || !S_ISREG(st.st_mode))
			continue;
		snprintf(out[n].request_id, sizeof(out[n].request_id), "%s", de->d_name);
		out[n].since = st.st_mtime;
		n++;
	}
	closedir(d);
	return n;
}
