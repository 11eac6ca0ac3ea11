/*
 * inflight.c - see inflight.h.
 */
#include "inflight.h"
#include "log.h"

#include <dirent.h>
#include <stdlib.h>
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

int inflight_write_tags(const char *state_dir, const char *request_id,
                        const struct inflight_tag *tags, size_t n, struct amis_err *err)
{
	char dir[PATH_MAX], tmp[PATH_MAX + 90], path[PATH_MAX + 80];
	size_t i;
	FILE *f;
	int fd;

	if (!request_id_valid(request_id))
		return err_set(err, AMIS_E_INVALID_REQUEST, "invalid request id");
	for (i = 0; i < n; i++)
		if (strpbrk(tags[i].resource, "\t\n") || strpbrk(tags[i].key, "\t\n") ||
		    strpbrk(tags[i].value, "\t\n"))
			return err_set(err, AMIS_E_INVALID_ARGUMENT,
			               "tag %s of %s holds a tab or a newline: not recorded",
			               tags[i].key, tags[i].resource);
	snprintf(dir, sizeof(dir), "%s/%s", state_dir, INFLIGHT_DIR);
	snprintf(tmp, sizeof(tmp), "%s/.%s.tmp", dir, request_id);
	snprintf(path, sizeof(path), "%s/%s", dir, request_id);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || !(f = fdopen(fd, "w"))) {
		err_set(err, AMIS_E_STATE_DIR, "could not create %s: %s", tmp, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	for (i = 0; i < n; i++)
		fprintf(f, "tag\t%s\t%s\t%s\n", tags[i].resource, tags[i].key, tags[i].value);
	if (fflush(f) != 0 || fsync(fileno(f)) != 0) {
		err_set(err, AMIS_E_STATE_DIR, "could not write %s: %s", tmp, strerror(errno));
		fclose(f);
		unlink(tmp);
		return -1;
	}
	fclose(f);
	if (rename(tmp, path) != 0) {
		err_set(err, AMIS_E_STATE_DIR, "could not rename %s: %s", tmp, strerror(errno));
		unlink(tmp);
		return -1;
	}
	fsync_path(dir);
	return 0;
}

int inflight_read_tags(const char *state_dir, const char *request_id, struct inflight_tag **out,
                       size_t *n)
{
	char path[PATH_MAX + 80], line[1024];
	size_t cap = 0;
	FILE *f;

	*out = NULL;
	*n = 0;
	snprintf(path, sizeof(path), "%s/%s/%s", state_dir, INFLIGHT_DIR, request_id);
	f = fopen(path, "re");
	if (!f) {
		log_warn("could not read %s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		char *res, *key, *value, *nl = strchr(line, '\n');
		struct inflight_tag *t;

		if (nl)
			*nl = '\0';
		res = line + 4;
		key = nl ? strchr(res, '\t') : NULL;
		value = key ? strchr(key + 1, '\t') : NULL;
		if (!value || strncmp(line, "tag\t", 4) != 0 ||
		    (size_t)(key - res) >= sizeof((*out)->resource) ||
		    (size_t)(value - key - 1) >= sizeof((*out)->key) ||
		    strlen(value + 1) >= sizeof((*out)->value)) {
			log_warn("%s: malformed line: not applied", path);
			fclose(f);
			free(*out);
			*out = NULL;
			*n = 0;
			return -1;
		}
		*key++ = '\0';
		*value++ = '\0';
		if (*n == cap) {
			cap = cap ? 2 * cap : 64;
			*out = xrealloc(*out, cap * sizeof(**out));
		}
		t = &(*out)[(*n)++];
		memcpy(t->resource, res, strlen(res) + 1);
		memcpy(t->key, key, strlen(key) + 1);
		memcpy(t->value, value, strlen(value) + 1);
	}
	fclose(f);
	return 0;
}
