/*
 * job.h - long jobs the helper runs for its clients as child processes
 * (doc/protocol.md, "Jobs"; doc/design.md, "Jobs").
 *
 * A JOB request names a kind and carries typed, bounded arguments.  The
 * helper turns them into a fixed argv for its own command (`ami-snapshot
 * verify --json ...`: never a shell, only the kind's whitelisted options,
 * every value validated: job_args.c) and runs it as a child in a session
 * of its own.  The server loop keeps serving STATUS, THAW and snapshots
 * meanwhile: jobs_tick() reads the child's pipes and reaps it.  When it
 * exits, its report (stdout, at most AMSP_JOB_MAX_OUTPUT) goes back in
 * JOB_OUTPUT frames and a JOB_RESULT.  The client going away or sending
 * ABORT: SIGTERM to the child (which cleans up after itself), SIGKILL to
 * its process group after [drill] kill_grace, then `verify --cleanup`.
 *
 * `verify --cleanup` also runs at start-up (as a child: start-up does not
 * wait for it) and after every job that ended abnormally; never while a
 * drill of the helper runs.  Meanwhile a verify JOB gets Busy.
 */
#ifndef AMIS_JOB_H
#define AMIS_JOB_H

#include "config.h"
#include "protocol.h"
#include "server.h"
#include "util.h"

#include <stdbool.h>
#include <stddef.h>

#define JOB_MAX_ARGV (2 * AMSP_JOB_MAX_ARGS + 24)

/*
 * The argv of a job of kind (job_args.c; pure, unit-tested): the command,
 * the kind's subcommand, -c config_path, the fixed options the helper's
 * configuration gives, then one option per argument.  keys/values: the
 * JOB's arguments, paired.  Options are passed as "--option=value", so
 * no value can be taken for an option.  Returns the argc (argv[argc] =
 * NULL, every string allocated: job_argv_free()), or -1 with err
 * (InvalidRequest: an unknown kind or argument, a bad value, a missing or
 * conflicting one) and nothing allocated.
 */
int job_argv(const struct helper_config *cfg, const char *config_path, const char *command,
             const char *kind, const char *const *keys, const char *const *values, size_t n,
             char **argv, struct amis_err *err);

/* The argv of the cleanup of dead drills (`verify --cleanup --json`). */
int job_cleanup_argv(const struct helper_config *cfg, const char *config_path, const char *command,
                     char **argv);
void job_argv_free(char **argv);

/*
 * The steps of the automatic lock and copy after a backup named name
 * (jobs_after_backup()): lock (if [lock] mode is set and name matches
 * [lock] names), then, if [copy] regions are set and name matches [copy]
 * names, wait, and per region copy (with kms_key_id, share_accounts) and
 * lock the copy.  Each an argv of job_argv() into steps[i], its kind into
 * kinds[i].  Returns how many (0: none applies), or -1 with err and
 * nothing allocated.  Pure; test/unit/test_job.c.
 */
int job_auto_steps(const struct helper_config *cfg, const char *config_path, const char *command,
                   const char *request_id, const char *name, const char *system_id, char **steps[],
                   char kinds[][17], size_t max, struct amis_err *err);
void job_auto_steps_free(char **steps[], size_t n);

/* Whether kind is a lifecycle command (list, show, wait, prune, copy, lock, unlock). */
bool job_kind_is_lifecycle(const char *kind);

/* Whether kind is one the helper runs (and so may be logged as it is). */
bool job_argv_ok_kind(const char *kind);

/* The outcome a kind's exit status names (verify: doc/verify.md "Exit codes"). */
const char *job_outcome(const char *kind, bool signaled, int code);

struct jobs;

/* command: the command's path ([drill] command, or beside the helper). */
struct jobs *jobs_new(const struct helper_config *cfg, const char *config_path);
void jobs_free(struct jobs *js);
/*
 * Runs `verify --cleanup` as soon as no drill of the helper runs (at
 * start-up: what drills killed with an earlier helper left).
 */
void jobs_cleanup_soon(struct jobs *js);

/*
 * A JOB from c: validated and started, or refused with an ERROR (Busy,
 * InvalidRequest, JobStartFailed).  Returns 0 to keep the connection, -1
 * to close it.
 */
int jobs_start(struct jobs *js, struct conn *c, const struct amsp_msgview *m);
/*
 * A backup of this name was made and tagged: the automatic lock ([lock]
 * mode, for the names matching [lock] names) and copy ([copy] regions,
 * for [copy] names) as one job of the helper's own, nobody waiting for it:
 * lock, then wait for completion, then per region copy (and lock the
 * copy).  Each step's outcome goes to the log; a failed wait ends it.
 */
void jobs_after_backup(struct jobs *js, const char *request_id, const char *name,
                       const char *system_id);
/* c's client sent ABORT or went away: its job is stopped (SIGTERM, then SIGKILL). */
void jobs_abort(struct jobs *js, struct conn *c, const char *why);
/* Every turn of the server loop: output, exits, kills after the grace, cleanups. */
void jobs_tick(struct jobs *js);
/* Whether children run (the loop turns faster then). */
bool jobs_active(const struct jobs *js);
/* How many jobs run (cleanups not counted). */
size_t jobs_running(const struct jobs *js);
/* Into a STATUS_REPLY: each child running (JOB_ID, JOB_KIND, JOB_PID, JOB_USEC). */
void jobs_put_status(const struct jobs *js, struct amsp_writer *w);
/*
 * At exit: SIGTERM to every child, SIGKILL to what is left after
 * timeout_ms; reaps them.
 */
void jobs_shutdown(struct jobs *js, long timeout_ms);

#endif
