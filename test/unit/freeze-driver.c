/*
 * freeze-driver.c - drives volumes.c and freeze.c for test_freeze.sh on
 * real loop-mounted filesystems.  Not a TAP producer: the script checks
 * its output and exit status.
 *
 * Safety: every command resolves its paths first and refuses (exit 2) to
 * act on any mount point outside $FREEZE_DRIVER_ALLOW (the test's own
 * temporary directory), checked with volumes_path_allowed() without
 * allow_root_fs.  A path whose loop mount failed resolves to the
 * filesystem holding the temporary directory, which is therefore refused.
 *
 * Usage: freeze-driver [-o DEVICE=VOLUME_ID]... COMMAND PATH...
 *   resolve PATH...     print mount point, device and volumes of each path
 *   order PATH...       print the freeze plan, one mount point a line
 *   freeze PATH...      freeze the plan and exit, leaving it frozen
 *   freeze-one PATH     fs_freeze() the mount of PATH
 *   thaw PATH...        fs_thaw() the mount of each PATH
 *   cycle FILE PATH...  freeze, check that writing FILE blocks, thaw, check it completed
 *   thaw-partial PATH... freeze, make the first thaw fail, check the others still thaw
 *   mount-swap PATH     plan, mount a tmpfs over the mount point, freeze: refused
 *   timeline PATH...    open the plan, dirty each filesystem, freeze, thaw; print the
 *                       threads of the process before, while frozen and after, and each
 *                       entry's timestamps relative to the first FIFREEZE
 *   watchdog HOW FOREIGN PATH...
 *                       open the plan, start a watchdog (deadline in 1 s), freeze; then
 *                       HOW = "deadline": wait 2 s (the watchdog fires), thaw, stop the
 *                       watchdog; HOW = "death": SIGKILL ourselves (the watchdog sees
 *                       end of file).  FOREIGN = "foreign": the last PATH was frozen
 *                       beforehand by someone else (FIFREEZE: EBUSY) and every FITHAW of
 *                       ours fails (EIO, injected), so the rollback leaves the others
 *                       frozen; "none": a plain freeze
 *   marker-death STATE_DIR FOREIGN PATH...
 *                       write the frozen marker (and its claims file) in STATE_DIR, open
 *                       the plan, start a watchdog (deadline in 60 s), freeze (FOREIGN as
 *                       above: "foreign" leaves ours frozen after the failed rollback);
 *                       then SIGKILL the watchdog and ourselves: nothing is left to thaw
 *                       but a later marker_recover()
 *   recover STATE_DIR   marker_recover(STATE_DIR), as a restarted helper does; prints
 *                       "recover rc=N"
 *
 * It is linked with -Wl,--wrap=ioctl: __wrap_ioctl() below makes FITHAW
 * fail while thaw_fails is set, in this process only (a watchdog forked
 * before that keeps its own copy of the flag, clear).
 */
#include "freeze.h"
#include "marker.h"
#include "volumes.h"
#include "watchdog.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 8
#define MAX_OVERRIDES 8

static struct volume_override overrides[MAX_OVERRIDES];
static size_t noverrides;
static struct fs_target targets[MAX_TARGETS];
static struct freeze_plan plan;
static volatile int thaw_fails;

int __real_ioctl(int fd, unsigned long req, ...);
int __wrap_ioctl(int fd, unsigned long req, ...);

int __wrap_ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	if (req == FITHAW && thaw_fails) {
		errno = EIO;
		return -1;
	}
	return __real_ioctl(fd, req, arg);
}

static int fail(const struct amis_err *err)
{
	printf("error %s %s\n", err->code, err->msg);
	return 1;
}

static int resolve_all(char **paths, int n)
{
	const char *allow = getenv("FREEZE_DRIVER_ALLOW");
	struct amis_err err;

	if (!allow || allow[0] != '/') {
		printf("refused: FREEZE_DRIVER_ALLOW must name the test's directory\n");
		return 2;
	}
	if (n < 1 || n > MAX_TARGETS) {
		printf("usage: 1 to %d paths\n", MAX_TARGETS);
		return 2;
	}
	for (int i = 0; i < n; i++) {
		err_clear(&err);
		if (volumes_resolve_path(&volumes_sys_paths_default, paths[i], overrides,
		                         noverrides, &targets[i], &err) < 0)
			return fail(&err);
		if (!volumes_path_allowed(targets[i].mount_point, &allow, 1, false)) {
			printf("refused: %s is on %s, outside %s\n", paths[i],
			       targets[i].mount_point, allow);
			return 2;
		}
	}
	return 0;
}

static int build(char **paths, int n)
{
	struct amis_err err;
	int rc = resolve_all(paths, n);

	if (rc)
		return rc;
	err_clear(&err);
	if (freeze_plan_build(targets, (size_t)n, &plan, &err) < 0)
		return fail(&err);
	return 0;
}

static int cmd_resolve(char **paths, int n)
{
	int rc = resolve_all(paths, n);

	if (rc)
		return rc;
	for (int i = 0; i < n; i++) {
		const struct fs_target *t = &targets[i];

		printf("mount=%s fstype=%s dev=%u:%u volumes=", t->mount_point, t->fstype,
		       t->dev_major, t->dev_minor);
		for (size_t k = 0; k < t->ndisks; k++)
			printf("%s%s:%s", k ? "," : "", t->disks[k].name, t->disks[k].volume_id);
		printf("\n");
	}
	return 0;
}

static int cmd_order(char **paths, int n)
{
	int rc = build(paths, n);

	if (rc)
		return rc;
	for (size_t i = 0; i < plan.nfs; i++)
		printf("fs %s\n", plan.fs[i].mount_point);
	for (size_t i = 0; i < plan.nvolumes; i++)
		printf("volume %s\n", plan.volume_ids[i]);
	return 0;
}

static int cmd_freeze(char **paths, int n)
{
	struct amis_err err;
	int rc = build(paths, n);

	if (rc)
		return rc;
	err_clear(&err);
	if (freeze_plan_freeze(&plan, &err) < 0) {
		for (size_t i = 0; i < plan.nfs; i++)
			printf("after-rollback %s %s\n", plan.fs[i].mount_point,
			       plan.fs[i].frozen ? "frozen" : "released");
		/* Which ones were frozen (and thawed again) at all. */
		for (size_t i = 0; i < plan.nfs; i++)
			printf("rollback-ts frozen_at>0=%d thawed_at>0=%d %s\n",
			       plan.fs[i].frozen_at_usec > 0, plan.fs[i].thawed_at_usec > 0,
			       plan.fs[i].mount_point);
		return fail(&err);
	}
	/* Exiting closes the directories; the kernel keeps them frozen. */
	for (size_t i = 0; i < plan.nfs; i++)
		printf("frozen %s\n", plan.fs[i].mount_point);
	return 0;
}

static int cmd_freeze_one(char **paths, int n)
{
	struct amis_err err;
	int rc = resolve_all(paths, n);

	if (rc)
		return rc;
	err_clear(&err);
	if (fs_freeze(targets[0].mount_point, &err) < 0)
		return fail(&err);
	printf("frozen %s\n", targets[0].mount_point);
	return 0;
}

static int cmd_thaw(char **paths, int n)
{
	struct amis_err err;
	int rc = resolve_all(paths, n);

	if (rc)
		return rc;
	for (int i = 0; i < n; i++) {
		bool not_frozen = false;

		err_clear(&err);
		if (fs_thaw(targets[i].mount_point, &not_frozen, &err) < 0)
			rc = fail(&err);
		else
			printf("%s %s\n", not_frozen ? "notfrozen" : "thawed",
			       targets[i].mount_point);
	}
	return rc;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

	nanosleep(&ts, NULL);
}

/* Whether pid exits within ms milliseconds; *status gets its wait status. */
static bool exits_within(pid_t pid, long ms, int *status)
{
	for (long waited = 0; waited <= ms; waited += 50) {
		if (waitpid(pid, status, WNOHANG) == pid)
			return true;
		sleep_ms(50);
	}
	return false;
}

static int cmd_cycle(const char *file, char **paths, int n)
{
	struct amis_err err;
	int rc = build(paths, n), status = 0;
	bool blocked;
	pid_t pid;

	if (rc)
		return rc;
	err_clear(&err);
	if (freeze_plan_freeze(&plan, &err) < 0)
		return fail(&err);
	pid = fork();
	if (pid == 0) {
		int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);

		_exit(fd >= 0 && write(fd, "x\n", 2) == 2 && fsync(fd) == 0 ? 0 : 1);
	}
	blocked = pid > 0 && !exits_within(pid, 1000, &status);
	err_clear(&err);
	rc = freeze_plan_thaw(&plan, &err);
	/* Report only now: stdout may be on a frozen filesystem. */
	printf("writer %s while frozen\n", blocked ? "blocked" : "NOT blocked");
	if (rc < 0)
		return fail(&err);
	if (pid > 0 && blocked) {
		bool done = exits_within(pid, 5000, &status);

		printf("writer %s after thaw\n",
		       done && WIFEXITED(status) && WEXITSTATUS(status) == 0 ? "completed"
		                                                             : "FAILED");
	}
	for (size_t i = 0; i < plan.nfs; i++) {
		const struct freeze_fs *fs = &plan.fs[i];

		printf("fs %s frozen_at>0=%d thawed_after=%d still_frozen=%d\n", fs->mount_point,
		       fs->frozen_at_usec > 0, fs->thawed_at_usec >= fs->frozen_at_usec,
		       fs->frozen);
	}
	printf("window_usec_ok=%d\n", freeze_plan_window_usec(&plan) >= 900000);
	printf("any_frozen=%d\n", freeze_plan_any_frozen(&plan));
	return blocked ? 0 : 1;
}

static int cmd_thaw_partial(char **paths, int n)
{
	struct amis_err err;
	struct freeze_fs *first;
	int rc = build(paths, n);

	if (rc)
		return rc;
	if (plan.nfs < 2) {
		printf("usage: needs two filesystems\n");
		return 2;
	}
	err_clear(&err);
	if (freeze_plan_freeze(&plan, &err) < 0)
		return fail(&err);
	/*
	 * The first to thaw is the last in the plan: close its descriptor
	 * behind the plan's back, so that its FITHAW fails (EBADF).  Not
	 * /dev/null: FITHAW on it would address devtmpfs, not fail.
	 */
	first = &plan.fs[plan.nfs - 1];
	close(first->fd);
	err_clear(&err);
	rc = freeze_plan_thaw(&plan, &err);
	printf("thaw rc=%d code=%s\n", rc, err.code);
	for (size_t i = 0; i < plan.nfs; i++)
		printf("state %s %s\n", plan.fs[i].mount_point,
		       plan.fs[i].frozen ? "frozen" : "thawed");
	printf("any_frozen=%d window=%lld\n", freeze_plan_any_frozen(&plan),
	       freeze_plan_window_usec(&plan));
	/* Retry: through the path this time. */
	first->fd = -1;
	err_clear(&err);
	rc = freeze_plan_thaw(&plan, &err);
	printf("retry rc=%d any_frozen=%d\n", rc, freeze_plan_any_frozen(&plan));
	return rc < 0 ? fail(&err) : 0;
}

/*
 * Builds the plan, then mounts a tmpfs over the (test's own) mount point
 * before freezing: the freeze must refuse the mount it did not resolve.
 */
static int cmd_mount_swap(char **paths, int n)
{
	struct amis_err err;
	const char *mp;
	int rc = build(paths, n), frc;

	if (rc)
		return rc;
	mp = plan.fs[0].mount_point;
	if (mount("freeze-driver", mp, "tmpfs", 0, "size=1m") < 0) {
		printf("setup failed: mount tmpfs on %s: %s\n", mp, strerror(errno));
		return 2;
	}
	err_clear(&err);
	frc = freeze_plan_freeze(&plan, &err);
	if (frc == 0) {
		printf("frozen despite the swap\n");
		freeze_plan_thaw(&plan, &err);
	}
	if (umount2(mp, 0) < 0)
		printf("could not unmount tmpfs from %s: %s\n", mp, strerror(errno));
	printf("any_frozen=%d\n", freeze_plan_any_frozen(&plan));
	return frc == 0 ? 1 : fail(&err);
}

/* How many threads this process has. */
static int count_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	struct dirent *e;
	int n = 0;

	if (!d)
		return -1;
	while ((e = readdir(d)))
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

/* Writes 4 MiB to a file on the filesystem at mp, without syncing it. */
static int dirty(const char *mp)
{
	static char buf[1 << 20];
	char path[PATH_MAX + 32];
	int fd, rc = 0;

	memset(buf, 'd', sizeof(buf));
	snprintf(path, sizeof(path), "%s/.timeline-dirty", mp);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return -1;
	for (int i = 0; i < 4 && rc == 0; i++)
		rc = write(fd, buf, sizeof(buf)) == (ssize_t)sizeof(buf) ? 0 : -1;
	close(fd);
	return rc;
}

static int cmd_timeline(char **paths, int n)
{
	struct amis_err err;
	int rc = build(paths, n), before, during, after;
	long long base = 0;

	if (rc)
		return rc;
	before = count_threads();
	err_clear(&err);
	if (freeze_plan_open(&plan, &err) < 0)
		return fail(&err);
	/* After the open's syncfs(): each FIFREEZE has some writeback to do. */
	for (size_t i = 0; i < plan.nfs; i++)
		if (dirty(plan.fs[i].mount_point) < 0) {
			printf("setup failed: could not write to %s\n", plan.fs[i].mount_point);
			freeze_plan_close(&plan);
			return 2;
		}
	if (freeze_plan_freeze(&plan, &err) < 0)
		return fail(&err);
	during = count_threads();
	err_clear(&err);
	rc = freeze_plan_thaw(&plan, &err);
	after = count_threads();
	/* Report only now: stdout may be on a frozen filesystem. */
	printf("threads before=%d frozen=%d after=%d\n", before, during, after);
	if (rc < 0)
		return fail(&err);
	for (size_t i = 0; i < plan.nfs; i++)
		if (!base || plan.fs[i].frozen_at_usec < base)
			base = plan.fs[i].frozen_at_usec;
	/* ts FROZEN_AT RETURNED THAWED STILL_FROZEN MOUNT_POINT (usec since the first) */
	for (size_t i = 0; i < plan.nfs; i++) {
		const struct freeze_fs *fs = &plan.fs[i];

		printf("ts %lld %lld %lld %d %s\n", fs->frozen_at_usec - base,
		       fs->freeze_returned_usec - base, fs->thawed_at_usec - base, fs->frozen,
		       fs->mount_point);
	}
	printf("window_usec=%lld\n", freeze_plan_window_usec(&plan));
	freeze_plan_close(&plan);
	printf("threads closed=%d\n", count_threads());
	return 0;
}

static int cmd_watchdog(const char *how, const char *foreign, char **paths, int n)
{
	struct watchdog wd;
	struct amis_err err;
	bool death = strcmp(how, "death") == 0, is_foreign = strcmp(foreign, "foreign") == 0;
	int rc = build(paths, n), frc;

	if (rc)
		return rc;
	if ((!death && strcmp(how, "deadline") != 0) ||
	    (!is_foreign && strcmp(foreign, "none") != 0)) {
		printf("usage: watchdog deadline|death foreign|none PATH...\n");
		return 2;
	}
	err_clear(&err);
	if (freeze_plan_open(&plan, &err) < 0)
		return fail(&err);
	if (watchdog_start(&wd, &plan, NULL, mono_usec() + 1000000LL, &err) < 0) {
		freeze_plan_close(&plan);
		return fail(&err);
	}
	printf("watchdog pid %ld\n", (long)wd.pid);
	thaw_fails = is_foreign; /* from here on: in this process, not the watchdog */
	frc = freeze_plan_freeze(&plan, &err);
	/* Report only now: stdout may be on a frozen filesystem (not in these tests). */
	printf("freeze rc=%d code=%s\n", frc, frc < 0 ? err.code : "-");
	for (size_t i = 0; i < plan.nfs; i++)
		printf("after-freeze %s %s claimed=%d\n", plan.fs[i].mount_point,
		       plan.fs[i].frozen ? "frozen" : "released", freeze_plan_claimed(&plan, i));
	if (death) {
		printf("dying\n");
		fflush(stdout);
		raise(SIGKILL);
	}
	sleep_ms(2000);
	thaw_fails = 0;
	err_clear(&err);
	rc = freeze_plan_thaw(&plan, &err);
	for (size_t i = 0; i < plan.nfs; i++)
		printf("after-thaw %s found_thawed=%d claimed=%d\n", plan.fs[i].mount_point,
		       plan.fs[i].thaw_found_thawed, freeze_plan_claimed(&plan, i));
	printf("watchdog_thawed=%d\n", watchdog_stop(&wd));
	freeze_plan_close(&plan);
	return rc < 0 ? fail(&err) : 0;
}

static int cmd_marker_death(const char *state_dir, const char *foreign, char **paths, int n)
{
	struct watchdog wd;
	struct amis_err err;
	bool is_foreign = strcmp(foreign, "foreign") == 0;
	int rc = build(paths, n), frc;

	if (rc)
		return rc;
	if (!is_foreign && strcmp(foreign, "none") != 0) {
		printf("usage: marker-death STATE_DIR foreign|none PATH...\n");
		return 2;
	}
	err_clear(&err);
	if (marker_check_dir(state_dir, &plan, &err) < 0 ||
	    marker_write(&volumes_sys_paths_default, state_dir, &plan, "req-death", &err) < 0)
		return fail(&err);
	if (freeze_plan_open(&plan, &err) < 0)
		return fail(&err);
	if (watchdog_start(&wd, &plan, state_dir, mono_usec() + 60000000LL, &err) < 0) {
		freeze_plan_close(&plan);
		return fail(&err);
	}
	printf("watchdog pid %ld\n", (long)wd.pid);
	thaw_fails = is_foreign;
	frc = freeze_plan_freeze(&plan, &err);
	printf("freeze rc=%d code=%s\n", frc, frc < 0 ? err.code : "-");
	for (size_t i = 0; i < plan.nfs; i++)
		printf("after-freeze %s %s claimed=%d\n", plan.fs[i].mount_point,
		       plan.fs[i].frozen ? "frozen" : "released", freeze_plan_claimed(&plan, i));
	/* The watchdog first: it would thaw at once on our death. */
	kill(wd.pid, SIGKILL);
	while (waitpid(wd.pid, NULL, 0) < 0 && errno == EINTR)
		;
	printf("watchdog killed; dying\n");
	fflush(stdout);
	raise(SIGKILL);
	return 1;
}

static int cmd_recover(const char *state_dir)
{
	int rc = marker_recover(&volumes_sys_paths_default, state_dir);

	printf("recover rc=%d\n", rc);
	return rc < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	int opt;
	const char *cmd;

	while ((opt = getopt(argc, argv, "+o:")) != -1) {
		char *eq;

		if (opt != 'o' || noverrides >= MAX_OVERRIDES || !(eq = strchr(optarg, '='))) {
			fprintf(stderr, "usage: freeze-driver [-o DEV=VOL]... COMMAND PATH...\n");
			return 2;
		}
		*eq = '\0';
		overrides[noverrides].device = optarg;
		overrides[noverrides++].volume_id = eq + 1;
	}
	if (optind >= argc) {
		fprintf(stderr, "usage: freeze-driver [-o DEV=VOL]... COMMAND PATH...\n");
		return 2;
	}
	/* Line-buffered output so nothing is pending in stdio across a freeze. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	cmd = argv[optind++];
	argv += optind;
	argc -= optind;
	if (strcmp(cmd, "resolve") == 0)
		return cmd_resolve(argv, argc);
	if (strcmp(cmd, "order") == 0)
		return cmd_order(argv, argc);
	if (strcmp(cmd, "freeze") == 0)
		return cmd_freeze(argv, argc);
	if (strcmp(cmd, "freeze-one") == 0)
		return cmd_freeze_one(argv, argc);
	if (strcmp(cmd, "thaw") == 0)
		return cmd_thaw(argv, argc);
	if (strcmp(cmd, "cycle") == 0 && argc >= 2)
		return cmd_cycle(argv[0], argv + 1, argc - 1);
	if (strcmp(cmd, "thaw-partial") == 0)
		return cmd_thaw_partial(argv, argc);
	if (strcmp(cmd, "mount-swap") == 0)
		return cmd_mount_swap(argv, argc);
	if (strcmp(cmd, "timeline") == 0)
		return cmd_timeline(argv, argc);
	if (strcmp(cmd, "watchdog") == 0 && argc >= 3)
		return cmd_watchdog(argv[0], argv[1], argv + 2, argc - 2);
	if (strcmp(cmd, "marker-death") == 0 && argc >= 3)
		return cmd_marker_death(argv[0], argv[1], argv + 2, argc - 2);
	if (strcmp(cmd, "recover") == 0 && argc == 1)
		return cmd_recover(argv[0]);
	fprintf(stderr, "freeze-driver: unknown command %s\n", cmd);
	return 2;
}
