/*
 * test_marker.c - the persisted "frozen" marker and its claims file.  Touches no filesystem
 * state: the recovery cases use devices that are not mounted, except one
 * that FITHAWs the temporary directory's filesystem, which is not frozen
 * (a no-op: "not frozen", or EPERM when not root).
 */
#include "freeze.h"
#include "marker.h"
#include "tap.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (f) {
		fputs(text, f);
		fclose(f);
	}
}

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

/* The fixtures marker.c reads instead of /proc's files. */
static struct sys_paths sys_fixture;
static const struct sys_paths *sp = &sys_fixture;

int main(void)
{
	char dir[] = "/tmp/amis-marker.XXXXXX", state[128], path[160], text[2048];
	char boot[160], mountinfo[160], sub[160], cpath[160], tmpc[176];
	struct freeze_plan plan;
	struct amis_err err;
	struct stat st;

	if (!mkdtemp(dir)) {
		perror("mkdtemp");
		return 1;
	}
	snprintf(state, sizeof(state), "%s/state", dir);
	snprintf(path, sizeof(path), "%s/" MARKER_FILE, state);
	snprintf(boot, sizeof(boot), "%s/boot_id", dir);
	snprintf(mountinfo, sizeof(mountinfo), "%s/mountinfo", dir);
	snprintf(sub, sizeof(sub), "%s/mnt dir", dir);
	write_file(boot, "11111111-2222-3333-4444-555555555555\n");
	write_file(mountinfo, "");
	sys_fixture = volumes_sys_paths_default;
	sys_fixture.mountinfo = mountinfo;
	sys_fixture.boot_id = boot;
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

	ok(marker_write(sp, state, &plan, "req-1", &err) == 0, "marker written: %s", err.msg);
	read_file(path, text, sizeof(text));
	ok(strstr(text, "# ami-snapshot-helper: request req-1") == text,
	   "a comment names the request");
	ok(strstr(text, "\n987654 4095:1 /nonexistent/a b\n") != NULL,
	   "a line: mount id, device, mount point with a space");
	ok(strstr(text, "\nboot_id 11111111-2222-3333-4444-555555555555\n") != NULL,
	   "the boot id is recorded");
	snprintf(path, sizeof(path), "%s/" MARKER_FILE ".tmp", state);
	ok(access(path, F_OK) != 0, "no temporary file left");
	snprintf(path, sizeof(path), "%s/" MARKER_FILE, state);

	/* The claims file, named by the marker, mapped as the plan's claims. */
	snprintf(cpath, sizeof(cpath), "%s/" CLAIMS_FILE, state);
	ok(stat(cpath, &st) == 0 && S_ISREG(st.st_mode) && st.st_size == FREEZE_CLAIMS_SIZE &&
	       (st.st_mode & 0777) == 0600,
	   "a claims file of one page, 0600");
	ok(plan.claimed != NULL && !freeze_plan_claimed(&plan, 0) && !freeze_plan_claimed(&plan, 1),
	   "mapped as the plan's claims, all clear");
	{
		const char *c = strstr(text, "\nclaims ");
		char want[96], page[FREEZE_CLAIMS_SIZE];
		int fd = open(cpath, O_RDONLY);

		snprintf(want, sizeof(want), "token %.*s\nentries 2\n",
		         c ? (int)strcspn(c + 8, "\n") : 0, c ? c + 8 : "");
		ok(c && fd >= 0 && pread(fd, page, sizeof(page), 0) == (ssize_t)sizeof(page) &&
		       strstr(page + FREEZE_CLAIMS_HDR_OFF, want) != NULL,
		   "the marker's claims token is in the claims file's header");
		/* A store through the mapping is the file's content: no write(). */
		plan.claimed[1] = 1;
		ok(freeze_plan_claimed(&plan, 1) && pread(fd, page, 2, 0) == 2 && page[0] == 0 &&
		       page[1] == 1,
		   "a claim set in memory is in the file");
		plan.claimed[1] = 0;
		if (fd >= 0)
			close(fd);
	}
	snprintf(path, sizeof(path), "%s/" CLAIMS_FILE ".tmp", state);
	ok(access(path, F_OK) != 0, "no temporary claims file left");
	snprintf(path, sizeof(path), "%s/" MARKER_FILE, state);

	/* Nothing claimed: nothing touched (not even looked for), marker removed. */
	ok(marker_recover(sp, state) == 0, "recovery with nothing claimed leaves all alone");
	ok(access(path, F_OK) != 0 && access(cpath, F_OK) != 0, "marker and claims removed");

	/* Entry 1 claimed, but not found: the marker is kept. */
	ok(marker_write(sp, state, &plan, "req-1", &err) == 0, "marker written again: %s", err.msg);
	plan.claimed[1] = 1;
	ok(marker_recover(sp, state) == -1, "recovery with an unresolved claimed entry fails");
	ok(access(path, F_OK) == 0 && access(cpath, F_OK) == 0, "marker and claims kept");
	plan.claimed[1] = 0;

	/* Claims file missing: everything listed is thawed (looked for). */
	ok(marker_write(sp, state, &plan, "req-1", &err) == 0, "marker written again: %s", err.msg);
	unlink(cpath);
	ok(marker_recover(sp, state) == -1,
	   "no claims file: every entry is looked for (unresolved)");
	/* Claims file of the wrong size: the same. */
	ok(marker_write(sp, state, &plan, "req-1", &err) == 0, "marker written again: %s", err.msg);
	ok(truncate(cpath, 100) == 0 && marker_recover(sp, state) == -1,
	   "a claims file of the wrong size counts as none");

	/* state_dir cannot host the claims file: anonymous claims, the marker without. */
	snprintf(tmpc, sizeof(tmpc), "%s/" CLAIMS_FILE ".tmp", state);
	unlink(cpath);
	ok(mkdir(tmpc, 0700) == 0, "a directory in the way of the claims file");
	ok(marker_write(sp, state, &plan, "req-3", &err) == 0, "marker written anyway: %s",
	   err.msg);
	read_file(path, text, sizeof(text));
	ok(plan.claimed == NULL && strstr(text, "\nclaims ") == NULL && access(cpath, F_OK) != 0,
	   "no claims file: the marker names none, the plan maps its own later");
	rmdir(tmpc);
	ok(marker_recover(sp, state) == -1, "recovery without claims looks for every entry");

	/* Nothing listed is found: nothing touched, the marker is kept. */
	ok(marker_recover(sp, state) == -1, "recovery with unresolved entries fails");
	ok(access(path, F_OK) == 0, "an unresolved marker is kept");
	ok(marker_recover(sp, state) == -1, "and stays so at the next start");

	/* Written in another boot: removed without touching anything. */
	write_file(boot, "99999999-2222-3333-4444-555555555555\n");
	ok(marker_recover(sp, state) == 0, "a marker from another boot is ignored");
	ok(access(path, F_OK) != 0, "and removed");
	ok(marker_recover(sp, state) == 0, "no marker: nothing to do");

	/*
	 * Device-based resolution: the listed path is gone, but mountinfo
	 * shows the device mounted elsewhere (an escaped space in its path).
	 */
	ok(mkdir(sub, 0700) == 0 && stat(sub, &st) == 0, "a directory standing for a mount");
	write_file(path, "# test\nboot_id 99999999-2222-3333-4444-555555555555\n");
	{
		FILE *f = fopen(path, "a");
		FILE *m = fopen(mountinfo, "w");

		if (f) {
			fprintf(f, "1 %u:%u /nonexistent/gone\n", major(st.st_dev),
			        minor(st.st_dev));
			fclose(f);
		}
		if (m) {
			fprintf(m, "20 1 4095:7 / /elsewhere rw - ext4 /dev/x rw\n");
			fprintf(m, "21 1 %u:%u / %s/mnt\\040dir rw - ext4 /dev/y rw\n",
			        major(st.st_dev), minor(st.st_dev), dir);
			fclose(m);
		}
	}
	if (geteuid() == 0) {
		ok(marker_recover(sp, state) == 0, "a path gone but the device mounted elsewhere: "
		                                   "thawed there (it was not frozen)");
		ok(access(path, F_OK) != 0, "and the marker removed");
	} else {
		ok(marker_recover(sp, state) == -1, "found through mountinfo; FITHAW refused (not "
		                                    "root)");
		ok(access(path, F_OK) == 0, "and the marker kept");
	}
	/* The same device no longer mounted anywhere: kept. */
	write_file(mountinfo, "20 1 4095:7 / /elsewhere rw - ext4 /dev/x rw\n");
	write_file(path, "# test\n1 4095:9 /nonexistent/gone\n");
	ok(marker_recover(sp, state) == -1, "a device mounted nowhere: recovery fails");
	ok(access(path, F_OK) == 0, "and the marker is kept");
	unlink(path);
	rmdir(sub);
	ok(marker_remove(state, &err) == 0, "removing a missing marker is fine");

	/* state_dir on a filesystem of the plan: refused. */
	ok(stat(state, &st) == 0, "stat state_dir");
	plan.fs[1].dev_major = major(st.st_dev);
	plan.fs[1].dev_minor = minor(st.st_dev);
	ok(marker_check_dir(state, &plan, &err) == -1 && !strcmp(err.code, "StateDirFrozen") &&
	       strstr(err.msg, dir) != NULL,
	   "state_dir on a filesystem to freeze is refused: %s", err.msg);

	snprintf(plan.fs[0].mount_point, sizeof(plan.fs[0].mount_point), "/x\ny");
	ok(marker_write(sp, state, &plan, "req-2", &err) == -1,
	   "a newline in a mount point refused");

	if (plan.claimed)
		munmap((void *)plan.claimed, FREEZE_CLAIMS_SIZE);
	unlink(boot);
	unlink(mountinfo);
	rmdir(state);
	rmdir(dir);
	return done_testing();
}
