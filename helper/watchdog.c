/*
 * watchdog.c - see watchdog.h.
 *
 * The child runs in a copy of the helper that may have had other threads
 * (libcurl's resolver): it calls only async-signal-safe functions (poll,
 * read, ioctl, write, close, _exit) plus snprintf into a stack buffer, and
 * never returns into the helper's code.
 */
#include "watchdog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#define WD_DONE 'D'
/* The child's exit status when it thawed because its deadline passed. */
#define WD_EXIT_THAWED 3
#define WD_EXIT_STILL_FROZEN 4
/* After the trigger, a failing thaw is retried this often, this long. */
#define WD_RETRY_MS 100
#define WD_GIVE_UP_MS 10000
/* Descriptors above this are not looked at when the child closes the rest. */
#define WD_MAX_FD 65536

static volatile sig_atomic_t wd_terminated;

static void wd_on_term(int sig)
{
	(void)sig;
	wd_terminated = 1;
}

static void wd_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void wd_log(const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n > sizeof(line) - 2)
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	(void)!write(STDERR_FILENO, line, (size_t)n);
}

/* Keeps stdio, the pipe and the plan's directories; closes the rest. */
static void wd_close_others(const struct freeze_plan *plan, int rfd)
{
	struct rlimit rl;
	long max = WD_MAX_FD;
	int fd;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (long)rl.rlim_cur < max)
		max = (long)rl.rlim_cur;
	for (fd = 3; fd < max; fd++) {
		bool keep = fd == rfd;

		for (size_t i = 0; !keep && i < plan->nfs; i++)
			keep = plan->fs[i].fd == fd;
		if (!keep)
			close(fd);
	}
}

/* FITHAW on every directory, children last; counts the outcomes. */
static void wd_thaw_all(const struct freeze_plan *plan, int *thawed, int *not_frozen, int *failed,
                        int *first_errno)
{
	*thawed = *not_frozen = *failed = 0;
	*first_errno = 0;
	for (size_t i = plan->nfs; i-- > 0;) {
		if (plan->fs[i].fd < 0)
			continue;
		if (ioctl(plan->fs[i].fd, FITHAW, 0) == 0)
			(*thawed)++;
		else if (errno == EINVAL) /* not frozen */
			(*not_frozen)++;
		else {
			if (!*first_errno)
				*first_errno = errno;
			(*failed)++;
		}
	}
}

static void __attribute__((noreturn))
wd_main(const struct freeze_plan *plan, int rfd, long long deadline_usec, const char *mounts)
{
	struct sigaction sa;
	const char *why = NULL;
	long long give_up = 0;
	bool parent_alive = true, logged_failure = false;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = wd_on_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	/* Ctrl-C reaches the whole process group: the helper handles it. */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	wd_close_others(plan, rfd);

	for (;;) {
		struct pollfd p = {.fd = rfd, .events = POLLIN};
		long long now = mono_usec();
		long long wait_ms;
		int n;

		if (!why && wd_terminated)
			why = "it was sent SIGTERM";
		if (!why && now >= deadline_usec)
			why = "the helper did not thaw within freeze_timeout";
		if (why) {
			int thawed, not_frozen, failed, e;

			wd_thaw_all(plan, &thawed, &not_frozen, &failed, &e);
			if (!failed) {
				wd_log("<3>error: watchdog (pid %ld): thawed %s because %s (%d "
				       "thawed, %d already thawed)",
				       (long)getpid(), mounts, why, thawed, not_frozen);
				_exit(WD_EXIT_THAWED);
			}
			if (!logged_failure)
				wd_log("<3>error: watchdog (pid %ld): could not thaw %d of %s "
				       "(%s) although %s; retrying for %d s",
				       (long)getpid(), failed, mounts, strerror(e), why,
				       WD_GIVE_UP_MS / 1000);
			logged_failure = true;
			if (!give_up)
				give_up = now + WD_GIVE_UP_MS * 1000LL;
			if (now >= give_up) {
				wd_log("<3>error: watchdog (pid %ld): giving up: %s STILL FROZEN; "
				       "a restarted helper thaws them from its frozen marker, "
				       "or run fsfreeze -u MOUNT_POINT",
				       (long)getpid(), mounts);
				_exit(WD_EXIT_STILL_FROZEN);
			}
			wait_ms = WD_RETRY_MS;
		} else {
			wait_ms = (deadline_usec - now + 999) / 1000;
			if (wait_ms > INT_MAX)
				wait_ms = INT_MAX;
		}
		if (!parent_alive) {
			poll(NULL, 0, (int)wait_ms);
			continue;
		}
		n = poll(&p, 1, (int)wait_ms);
		if (n < 0 && errno != EINTR && !why)
			why = "it could not watch the helper";
		if (n <= 0)
			continue;
		{
			char b;
			ssize_t r = read(rfd, &b, 1);

			if (r == 1 && b == WD_DONE)
				_exit(0); /* the helper thawed */
			if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
				parent_alive = false;
				if (!why)
					why = "the helper died while they were frozen";
			}
		}
	}
}

int watchdog_start(struct watchdog *wd, const struct freeze_plan *plan, long long deadline_usec,
                   struct amis_err *err)
{
	char mounts[2048];
	size_t off = 0;
	int p[2];
	pid_t pid;

	*wd = WATCHDOG_NONE;
	mounts[0] = '\0';
	/* Formatted here: the child does as little as it can. */
	for (size_t i = 0; i < plan->nfs && off < sizeof(mounts); i++) {
		int n = snprintf(mounts + off, sizeof(mounts) - off, "%s%s", i ? " " : "",
		                 plan->fs[i].mount_point);

		if (n > 0)
			off += (size_t)n;
	}
	if (pipe2(p, O_CLOEXEC) != 0)
		return err_set(err, "WatchdogFailed", "could not create the watchdog's pipe: %s",
		               strerror(errno));
	pid = fork();
	if (pid < 0) {
		err_set(err, "WatchdogFailed", "could not fork the watchdog: %s", strerror(errno));
		close(p[0]);
		close(p[1]);
		return -1;
	}
	if (pid == 0) {
		close(p[1]);
		wd_main(plan, p[0], deadline_usec, mounts);
	}
	close(p[0]);
	wd->pid = pid;
	wd->pipe_fd = p[1];
	return 0;
}

bool watchdog_stop(struct watchdog *wd)
{
	const char done = WD_DONE;
	int status = 0;
	pid_t r;

	if (wd->pipe_fd >= 0) {
		/* EPIPE when it has exited already: SIGPIPE is ignored. */
		(void)!write(wd->pipe_fd, &done, 1);
		close(wd->pipe_fd);
		wd->pipe_fd = -1;
	}
	if (wd->pid <= 0)
		return false;
	do
		r = waitpid(wd->pid, &status, 0);
	while (r < 0 && errno == EINTR);
	wd->pid = 0;
	return r > 0 && WIFEXITED(status) && WEXITSTATUS(status) == WD_EXIT_THAWED;
}

void watchdog_abandon(struct watchdog *wd)
{
	if (wd->pipe_fd >= 0)
		close(wd->pipe_fd);
	*wd = WATCHDOG_NONE;
}
