/*
 * test_marker.c - the persisted "frozen" marker.  Touches no filesystem
 * state: the recovery cases use mount ids that do not match, so nothing is
 * ever thawed.
 */
#include "marker.h"
#include "tap.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static void read_file(const char *path, char *buf, size_t sz)
{
	FILE *f = fopen(path, "r");
	size_t n = 0;

	if (f) {
		n = fread(buf, 1, sz - 1, f);
		fclose(f);
	}
	buf[n] = '\0';
}

int main(void)
{
	char dir[] = "/tmp/amis-marker.XXXXXX", state[128], path[160], text[2048];
	struct freeze_plan plan;
	struct amis_err err;
	struct stat st;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(state, sizeof(state), "%s/state", dir);
	snprintf(path, sizeof(path), "%s/" MARKER_FILE, state);
	memset(&plan, 0, sizeof(plan));
	plan.nfs = 2;
	snprintf(plan.fs[0].mount_point, sizeof(plan.fs[0].mount_point), "/nonexistent/a b");
	plan.fs[0].mount_id = 987654;
	plan.fs[0].dev_major = 4095;
	plan.fs[0].dev_minor = 1;
	snprintf(plan.fs[1].mount_point, sizeof(plan.fs[1].mount_point), "%s", dir);
	plan.fs[1].mount_id = 987655;
	plan.fs[1].dev_major = 4095;
	plan.fs[1].dev_minor = 2;

	err_clear(&err);
	ok(marker_check_dir(state, &plan, &err) == 0, "state_dir off the plan is fine: %s",
	   err.msg);
	ok(stat(state, &st) == 0 && S_ISDIR(st.st_mode) && (st.st_mode & 0777) == 0700,
	   "state_dir created 0700");

	ok(marker_write(state, &plan, "req-1", &err) == 0, "marker written: %s", err.msg);
	read_file(path, text, sizeof(text));
	ok(strstr(text, "# ami-snapshot-helper: request req-1") == text,
	   "a comment names the request");
	ok(strstr(text, "\n987654 4095:1 /nonexistent/a b\n") != NULL,
	   "a line: mount id, device, mount point with a space");
	snprintf(path, sizeof(path), "%s/" MARKER_FILE ".tmp", state);
	ok(access(path, F_OK) != 0, "no temporary file left");
	snprintf(path, sizeof(path), "%s/" MARKER_FILE, state);

	/* Nothing listed matches a live mount: nothing touched, marker removed. */
	ok(marker_recover(state) == 0, "recovery with stale entries succeeds");
	ok(access(path, F_OK) != 0, "recovery removed the marker");
	ok(marker_recover(state) == 0, "no marker: nothing to do");
	ok(marker_remove(state, &err) == 0, "removing a missing marker is fine");

	/* state_dir on a filesystem of the plan: refused. */
	ok(stat(state, &st) == 0, "stat state_dir");
	plan.fs[1].dev_major = major(st.st_dev);
	plan.fs[1].dev_minor = minor(st.st_dev);
	ok(marker_check_dir(state, &plan, &err) == -1 && !strcmp(err.code, "StateDirFrozen") &&
	       strstr(err.msg, dir) != NULL,
	   "state_dir on a filesystem to freeze is refused: %s", err.msg);

	snprintf(plan.fs[0].mount_point, sizeof(plan.fs[0].mount_point), "/x\ny");
	ok(marker_write(state, &plan, "req-2", &err) == -1, "a newline in a mount point refused");

	rmdir(state);
	rmdir(dir);
	return done_testing();
}
