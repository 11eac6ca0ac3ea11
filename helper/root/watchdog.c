/*
 * watchdog.c - see watchdog.h.
 *
 * The child runs in a copy of the helper that may have had other threads
 * (libcurl's resolver): it calls only async-signal-safe functions (ppoll,
 * read, ioctl, write, send, fstat, close_range or close, unlinkat,
 * sigaction, pthread_sigmask, _exit) plus snprintf into a stack buffer and
 * atomic loads and stores of the plan's claims, and never returns into the
 * helper's code.  SIGTERM is blocked across the fork and
 * in the child but while it waits in ppoll().
 */
#include "watchdog.h"
#include "freeze.h"
#include "log.h"
#include "marker.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/fs.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define WD_DONE 'D'
/* The child's exit status when it thawed because its deadline passed. */
#define WD_EXIT_THAWED 3
#define WD_EXIT_STILL_FROZEN 4
/* After the trigger, a thaw is repeated this often; a failing one this long. */
#define WD_RETRY_MS 100
#define WD_GIVE_UP_MS 10000
/* How long watchdog_stop() waits for the child before SIGKILL. */
#define WD_STOP_WAIT_MS 1000
#define WD_MAX_KEEP (FREEZE_PLAN_MAX_FS + 2)

static volatile sig_atomic_t wd_terminated;
static bool wd_stderr_socket;
/* The close() fallback's bound, read before the fork (getrlimit). */
static unsigned int wd_fd_limit = 1024;
/* Tests: behave as if close_range() did not exist (watchdog.h). */
static bool wd_no_close_range;

void watchdog_test_no_close_range(bool on)
{
	wd_no_close_range = on;
}

static void wd_on_term(int sig)
{
	(void)sig;
	wd_terminated = 1;
}

/* One line to stderr, never blocking (a full journal socket drops it). */
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
	if (wd_stderr_socket)
		(void)!send(STDERR_FILENO, line, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
	else
		(void)!write(STDERR_FILENO, line, (size_t)n);
}

/*
 * Closes first..last.  close_range() needs Linux >= 5.9 (ENOSYS before;
 * EINVAL from a kernel or seccomp filter that rejects it): then close()
 * each, up to the RLIMIT_NOFILE soft limit read before the fork, since
 * reading /proc/self/fd needs opendir() (malloc), which is not safe in a
 * forked copy of a threaded process.  A descriptor at or above that limit
 * (opened before the limit was lowered) would stay open: harmless, the
 * watchdog only holds on to it.
 */
static void wd_close_range(unsigned int first, unsigned int last)
{
#ifdef SYS_close_range
	if (!wd_no_close_range) {
		if (syscall(SYS_close_range, first, last, 0) == 0)
			return;
		if (errno != ENOSYS && errno != EINVAL)
			return;
	}
#endif
	if (last >= wd_fd_limit)
		last = wd_fd_limit - 1;
	for (unsigned int fd = first; fd <= last; fd++)
		(void)close((int)fd);
}

/* RLIMIT_NOFILE's soft limit, bounded; for the fallback above. */
static unsigned int wd_read_fd_limit(void)
{
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur < 1024)
		return 1024;
	if (rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > (1U << 20)) /* fs.nr_open's maximum */
		return 1U << 20;
	return (unsigned int)rl.rlim_cur;
}

/* Keeps stdio, the pipe, state_dir and the plan's directories; closes the rest. */
static void wd_close_others(const struct freeze_plan *plan, int rfd, int dirfd)
{
	int keep[WD_MAX_KEEP];
	size_t n = 0, i, j;
	unsigned int next = 3;

	keep[n++] = rfd;
	if (dirfd >= 0)
		keep[n++] = dirfd;
	for (i = 0; i < plan->nfs && n < WD_MAX_KEEP; i++)
		if (plan->fs[i].fd >= 3)
			keep[n++] = plan->fs[i].fd;
	/* Insertion sort: a handful of descriptors. */
	for (i = 1; i < n; i++)
		for (j = i; j > 0 && keep[j - 1] > keep[j]; j--) {
			int t = keep[j];

			keep[j] = keep[j - 1];
			keep[j - 1] = t;
		}
	for (i = 0; i < n; i++) {
		if ((unsigned int)keep[i] > next)
			wd_close_range(next, (unsigned int)keep[i] - 1);
		if ((unsigned int)keep[i] >= next)
			next = (unsigned int)keep[i] + 1;
	}
	wd_close_range(next, ~0U);
}

/* ppoll() for ms milliseconds with mask (SIGTERM unblocked) while waiting. */
static int wd_wait(struct pollfd *p, int ms, const sigset_t *mask)
{
	struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};

	return ppoll(p, p ? 1 : 0, &ts, mask);
}

/* Outcomes of one wd_thaw_all(). */
struct wd_count {
	int thawed, not_frozen, failed, first_errno;
	int not_ours; /* not claimed: FIFREEZE failed (someone else's freeze), or thawed */
};

/*
 * FITHAW on every directory the helper claims (freeze.h, "Claims"), children
 * last; counts the outcomes.  One thawed here is unclaimed: should someone
 * else freeze it again, the repeated thaws leave that alone.  One "not
 * frozen" stays claimed: the helper may still be inside its FIFREEZE.
 */
static void wd_thaw_all(const struct freeze_plan *plan, struct wd_count *c)
{
	memset(c, 0, sizeof(*c));
	for (size_t i = plan->nfs; i-- > 0;) {
		if (plan->fs[i].fd < 0)
			continue;
		if (!freeze_plan_claimed(plan, i)) {
			c->not_ours++;
			continue;
		}
		if (ioctl(plan->fs[i].fd, FITHAW, 0) == 0) {
			freeze_plan_unclaim(plan, i);
			c->thawed++;
		} else if (errno == EINVAL) { /* not frozen */
			c->not_frozen++;
		} else {
			if (!c->first_errno)
				c->first_errno = errno;
			c->failed++;
		}
	}
}

/*
 * Once triggered, the watchdog thaws, removes the marker (everything it
 * lists is thawed), and then, while the helper is alive, thaws again every
 * WD_RETRY_MS until the helper says "done": the helper may still have been
 * inside FIFREEZE when the deadline passed.  At end of file it thaws once
 * more and exits.
 */
static void __attribute__((noreturn)) wd_main(const struct freeze_plan *plan, int rfd, int dirfd,
                                              long long deadline_usec, const char *mounts)
{
	struct sigaction sa;
	sigset_t waitmask;
	struct stat st;
	const char *why = NULL;
	long long give_up = 0;
	bool parent_alive = true, logged_failure = false, thawed_once = false;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = wd_on_term;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	/*
	 * SIGTERM stays blocked (it was across the fork) but while waiting in
	 * ppoll(): one arriving between the check and the wait is not lost.
	 */
	pthread_sigmask(SIG_BLOCK, NULL, &waitmask);
	sigdelset(&waitmask, SIGTERM);
	/* Ctrl-C reaches the whole process group: the helper handles it. */
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	wd_stderr_socket = fstat(STDERR_FILENO, &st) == 0 && S_ISSOCK(st.st_mode);
	wd_close_others(plan, rfd, dirfd);

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
			struct wd_count c;

			wd_thaw_all(plan, &c);
			if (!c.failed) {
				give_up = 0;
				if (!thawed_once) {
					/* What it lists is thawed, or frozen by someone else. */
					if (dirfd >= 0) {
						(void)unlinkat(dirfd, MARKER_FILE, 0);
						(void)unlinkat(dirfd, CLAIMS_FILE, 0);
					}
					wd_log(
					    "<3>error: watchdog (pid %ld): thawed what the helper "
					    "froze of %s because %s (%d thawed, %d already "
					    "thawed, %d left alone: not frozen by the helper)",
					    (long)getpid(), mounts, why, c.thawed, c.not_frozen,
					    c.not_ours);
				} else if (c.thawed) {
					wd_log(
					    "<3>error: watchdog (pid %ld): thawed %d of %s again "
					    "(frozen after its first thaw)",
					    (long)getpid(), c.thawed, mounts);
				}
				thawed_once = true;
				if (!parent_alive)
					_exit(WD_EXIT_THAWED);
			} else {
				if (!logged_failure)
					wd_log("<3>error: watchdog (pid %ld): could not thaw %d of "
					       "%s (errno %d) although %s; retrying for %d s",
					       (long)getpid(), c.failed, mounts, c.first_errno, why,
					       WD_GIVE_UP_MS / 1000);
				logged_failure = true;
				if (!give_up)
					give_up = now + WD_GIVE_UP_MS * 1000LL;
				if (now >= give_up) {
					wd_log("<3>error: watchdog (pid %ld): giving up: %s STILL "
					       "FROZEN; a restarted helper thaws them from its "
					       "frozen marker, or run fsfreeze -u MOUNT_POINT",
					       (long)getpid(), mounts);
					_exit(WD_EXIT_STILL_FROZEN);
				}
			}
			wait_ms = WD_RETRY_MS;
		} else {
			wait_ms = (deadline_usec - now + 999) / 1000;
			if (wait_ms > INT_MAX)
				wait_ms = INT_MAX;
		}
		if (!parent_alive) {
			wd_wait(NULL, (int)wait_ms, &waitmask);
			continue;
		}
		n = wd_wait(&p, (int)wait_ms, &waitmask);
		if (n < 0 && errno != EINTR && !why)
			why = "it could not watch the helper";
		if (n <= 0)
			continue;
		{
			char b;
			ssize_t r = read(rfd, &b, 1);

			if (r == 1 && b == WD_DONE)
				_exit(thawed_once ? WD_EXIT_THAWED : 0); /* the helper thawed */
			if (r == 0 || (r < 0 && errno != EINTR && errno != EAGAIN)) {
				parent_alive = false;
				if (!why)
					why = "the helper died while they were frozen";
			}
		}
	}
}

int watchdog_start(struct watchdog *wd, const struct freeze_plan *plan, const char *state_dir,
                   long long deadline_usec, struct amis_err *err)
{
	char mounts[2048];
	size_t off = 0;
	int p[2], dirfd = -1;
	sigset_t term, saved;
	pid_t pid;

	*wd = WATCHDOG_NONE;
	if (!plan->claimed)
		return err_set(err, AMIS_E_WATCHDOG_FAILED,
		               "the plan is not open (no claims to share with the watchdog)");
	wd_fd_limit = wd_read_fd_limit();
	mounts[0] = '\0';
	/* Formatted here: the child does as little as it can. */
	for (size_t i = 0; i < plan->nfs && off < sizeof(mounts); i++) {
		int n = snprintf(mounts + off, sizeof(mounts) - off, "%s%s", i ? " " : "",
		                 plan->fs[i].mount_point);

		if (n > 0)
			off += (size_t)n;
	}
	if (state_dir) {
		dirfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dirfd < 0)
			return err_set(err, AMIS_E_WATCHDOG_FAILED,
			               "could not open state_dir %s: %s", state_dir,
			               strerror(errno));
	}
	if (pipe2(p, O_CLOEXEC) != 0) {
		err_set(err, AMIS_E_WATCHDOG_FAILED, "could not create the watchdog's pipe: %s",
		        strerror(errno));
		if (dirfd >= 0)
			close(dirfd);
		return -1;
	}
	/* The child must not miss (nor die of) a SIGTERM before its handler is set. */
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &term, &saved);
	pid = fork();
	if (pid != 0)
		pthread_sigmask(SIG_SETMASK, &saved, NULL);
	if (pid < 0) {
		err_set(err, AMIS_E_WATCHDOG_FAILED, "could not fork the watchdog: %s",
		        strerror(errno));
		close(p[0]);
		close(p[1]);
		if (dirfd >= 0)
			close(dirfd);
		return -1;
	}
	if (pid == 0) {
		close(p[1]);
		wd_main(plan, p[0], dirfd, deadline_usec, mounts);
	}
	close(p[0]);
	if (dirfd >= 0)
		close(dirfd);
	wd->pid = pid;
	wd->pipe_fd = p[1];
	return 0;
}

/* A pidfd of pid, or -1 (a kernel or headers without pidfd_open). */
static int pidfd_of(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

bool watchdog_stop(struct watchdog *wd)
{
	const char done = WD_DONE;
	long long give_up = mono_usec() + WD_STOP_WAIT_MS * 1000LL;
	int status = 0;
	int pidfd;
	pid_t r;

	if (wd->pipe_fd >= 0) {
		/* EPIPE when it has exited already: SIGPIPE is ignored. */
		(void)!write(wd->pipe_fd, &done, 1);
		close(wd->pipe_fd);
		wd->pipe_fd = -1;
	}
	if (wd->pid <= 0)
		return false;
	/*
	 * Its exit is waited for on a pidfd: it exits within a fraction of a
	 * millisecond of reading WD_DONE, and this wait is on the way to the
	 * PENDING answer.  Without pidfds (before Linux 5.3): 1 ms polls.
	 */
	pidfd = pidfd_of(wd->pid);
	for (;;) {
		long long left;

		r = waitpid(wd->pid, &status, WNOHANG);
		if (r != 0 && !(r < 0 && errno == EINTR))
			break;
		left = give_up - mono_usec();
		if (left <= 0) {
			log_error("the watchdog (pid %ld) did not exit within %d ms: killing it",
			          (long)wd->pid, WD_STOP_WAIT_MS);
			kill(wd->pid, SIGKILL);
			do
				r = waitpid(wd->pid, &status, 0);
			while (r < 0 && errno == EINTR);
			break;
		}
		if (pidfd >= 0) {
			struct pollfd pfd = {.fd = pidfd, .events = POLLIN};

			(void)poll(&pfd, 1, (int)(left / 1000) + 1);
		} else
			poll(NULL, 0, 1);
	}
	if (pidfd >= 0)
		close(pidfd);
	wd->pid = 0;
	return r > 0 && WIFEXITED(status) && WEXITSTATUS(status) == WD_EXIT_THAWED;
}

void watchdog_abandon(struct watchdog *wd)
{
	if (wd->pipe_fd >= 0)
		close(wd->pipe_fd);
	*wd = WATCHDOG_NONE;
}
