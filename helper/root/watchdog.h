/*
 * watchdog.h - a second process that thaws if the freezer cannot.
 *
 * The kernel never thaws by itself (doc/design.md, "Freezing"; the watchdog
 * is rule 4 of "Never leaving anything frozen"): if the helper is killed
 * (even by SIGKILL), stopped, or stuck while filesystems are frozen, every
 * writer on them hangs.  Just before freezing, the helper
 * forks a watchdog that inherits the plan's open directories, its claims
 * (freeze.h: which filesystems the helper froze, in shared memory) and the
 * read end of a pipe.  The watchdog thaws every claimed one (FITHAW; "not
 * frozen" is fine), never one that someone else froze (FIFREEZE: EBUSY),
 * when
 *   - the pipe reaches end of file: the helper died, whatever killed it;
 *   - the deadline passes: freeze_timeout plus a margin, while the helper
 *     itself, alive but stopped or stuck, did not thaw;
 *   - it gets SIGTERM;
 * then logs one line to stderr (after the thaw), removes the frozen marker
 * (through a descriptor of state_dir it keeps) and, while the helper lives,
 * thaws again every 100 ms (the helper may still have been inside FIFREEZE)
 * until the helper says "done" or dies (then a last thaw).  When the helper
 * has thawed, it sends "done" and the watchdog exits quietly.
 *
 * The fork happens before the freeze; while frozen the helper does nothing
 * for the watchdog, and after the thaw one write and one waitpid().
 */
#ifndef AMIS_WATCHDOG_H
#define AMIS_WATCHDOG_H

#include "util.h"
#include "volumes.h"

#include <stdbool.h>
#include <sys/types.h>

/* Past the helper's own deadline, so that normally the helper thaws first. */
#define WATCHDOG_MARGIN_MS 500

struct watchdog {
	pid_t pid;   /* 0: none */
	int pipe_fd; /* write end, -1: none */
};

#define WATCHDOG_NONE ((struct watchdog){0, -1})

/*
 * Forks the watchdog for plan, whose directories and claims
 * freeze_plan_open() has opened (else "WatchdogFailed").  state_dir (may be NULL) holds the frozen
 * marker, which the watchdog removes after a thaw of its own.  deadline_usec is on the mono_usec()
 * clock.  -1 with err
 * ("WatchdogFailed") if it cannot: then nothing must be frozen.
 */
int watchdog_start(struct watchdog *wd, const struct freeze_plan *plan, const char *state_dir,
                   long long deadline_usec, struct amis_err *err);

/*
 * After the helper's thaw: tells the watchdog to stand down and reaps it
 * (waiting up to a second, then SIGKILL).  Returns true if the watchdog had thawed on its own
 * before that (its deadline passed), false otherwise.
 */
bool watchdog_stop(struct watchdog *wd);

/*
 * The helper cannot thaw (a failed thaw still pending at exit): lets the
 * watchdog see end of file and try to thaw on its own, without waiting
 * for it.
 */
void watchdog_abandon(struct watchdog *wd);

/*
 * For tests: watchdogs started from now on close their inherited
 * descriptors as on a kernel without close_range() (before 5.9): one
 * close() at a time.
 */
void watchdog_test_no_close_range(bool on);

#endif
