/*
 * test_watchdog.c - the watchdog closes what it does not need, with
 * close_range() and with its fallback for kernels without it (forced by
 * watchdog_test_no_close_range()).  Touches no filesystem state: the plan's
 * one directory is never claimed (nothing is frozen), so the watchdog would
 * not thaw it even if it fired, and it is stopped long before its deadline.
 */
#include "freeze.h"
#include "tap.h"
#include "watchdog.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define MAX_FDS 64

/* The descriptors open in process pid, sorted; their number, or -1. */
static int list_fds(pid_t pid, int *fds, int max)
{
	char path[64];
	struct dirent *e;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%ld/fd", (long)pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((e = readdir(d)) && n < max)
		if (e->d_name[0] != '.')
			fds[n++] = atoi(e->d_name);
	closedir(d);
	for (int i = 1; i < n; i++)
		for (int j = i; j > 0 && fds[j - 1] > fds[j]; j--) {
			int t = fds[j];

			fds[j] = fds[j - 1];
			fds[j - 1] = t;
		}
	return n;
}

static bool has(const int *fds, int n, int fd)
{
	for (int i = 0; i < n; i++)
		if (fds[i] == fd)
			return true;
	return false;
}

/* Starts a watchdog; checks what it kept of 0-2, the plan's fd and the strays. */
static void check_closing(const char *how, int plan_fd, const int *strays, int nstrays)
{
	struct freeze_plan *plan = calloc(1, sizeof(*plan));
	struct watchdog wd;
	struct amis_err err;
	int fds[MAX_FDS], n = -1, nstray_open = 0;

	if (!plan) {
		ok(0, "%s: calloc", how);
		return;
	}
	err_clear(&err);
	/* An empty plan maps the claims; then one directory, never claimed. */
	ok(freeze_plan_open(plan, &err) == 0, "%s: plan opened (%s)", how, err.msg);
	plan->nfs = 1;
	snprintf(plan->fs[0].mount_point, sizeof(plan->fs[0].mount_point), "/tmp");
	plan->fs[0].fd = plan_fd;
	ok(!freeze_plan_claimed(plan, 0), "%s: nothing claimed", how);
	ok(watchdog_start(&wd, plan, NULL, mono_usec() + 60 * 1000000LL, &err) == 0,
	   "%s: watchdog started (%s)", how, err.msg);
	/* It closes right after the fork: wait until the strays are gone. */
	for (int tries = 0; tries < 200; tries++) {
		struct timespec ts = {0, 10 * 1000000L};

		n = list_fds(wd.pid, fds, MAX_FDS);
		nstray_open = 0;
		for (int i = 0; i < nstrays; i++)
			nstray_open += has(fds, n, strays[i]);
		if (n >= 0 && nstray_open == 0)
			break;
		nanosleep(&ts, NULL);
	}
	printf("# %s: watchdog %ld has %d descriptors:", how, (long)wd.pid, n);
	for (int i = 0; i < n; i++)
		printf(" %d", fds[i]);
	printf("\n");
	is_int(nstray_open, 0, "%s: every stray descriptor closed", how);
	ok(has(fds, n, 0) && has(fds, n, 1) && has(fds, n, 2), "%s: stdio kept", how);
	ok(has(fds, n, plan_fd), "%s: the plan's directory kept", how);
	/* stdio, the plan's directory and the pipe's read end: five. */
	is_int(n, 5, "%s: nothing else but the pipe", how);
	ok(!watchdog_stop(&wd), "%s: stopped; it did not thaw", how);
	plan->fs[0].fd = -1;
	plan->nfs = 0;
	freeze_plan_close(plan);
	ok(plan->claimed == NULL, "%s: claims unmapped", how);
	free(plan);
}

int main(void)
{
	struct freeze_plan *plan = calloc(1, sizeof(*plan));
	struct watchdog wd;
	struct amis_err err;
	struct rlimit rl;
	int strays[4], nstrays = 0, dir, plan_fd, null_fd;
	int want[] = {40, 150, 700};

	setvbuf(stdout, NULL, _IOLBF, 0);
	/* Without the plan's claims, no watchdog: it could not tell ours apart. */
	err_clear(&err);
	ok(plan && watchdog_start(&wd, plan, NULL, mono_usec() + 1000000LL, &err) < 0 &&
	       strcmp(err.code, "WatchdogFailed") == 0,
	   "no watchdog for a plan that is not open (%s)", err.msg);
	free(plan);

	/* The strays, and the plan's directory between them. */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < 1024) {
		rl.rlim_cur = rl.rlim_max < 1024 ? rl.rlim_max : 1024;
		setrlimit(RLIMIT_NOFILE, &rl);
	}
	null_fd = open("/dev/null", O_RDONLY); /* no O_CLOEXEC: a fork closes nothing itself */
	dir = open("/tmp", O_RDONLY | O_DIRECTORY);
	ok(null_fd >= 0 && dir >= 0, "opened /dev/null and /tmp");
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		if (dup2(null_fd, want[i]) == want[i])
			strays[nstrays++] = want[i];
	strays[nstrays++] = null_fd;
	plan_fd = dup2(dir, 300);
	close(dir);
	ok(nstrays == 4 && plan_fd == 300, "strays at %d, 40, 150, 700; the plan's at 300",
	   null_fd);

	check_closing("close_range", plan_fd, strays, nstrays);
	watchdog_test_no_close_range(true);
	check_closing("close() fallback", plan_fd, strays, nstrays);
	watchdog_test_no_close_range(false);

	for (int i = 0; i < nstrays; i++)
		close(strays[i]);
	close(plan_fd);
	return done_testing();
}
