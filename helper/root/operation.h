/*
 * operation.h - one snapshot operation, as a state machine driven by the
 * client's messages:
 *
 *	(none) --PREPARE--> PREPARED --SNAPSHOT--> PENDING --FINISH--> done
 *
 * PREPARE does everything that can be slow (path resolution, IMDS,
 * credentials, DescribeInstances, a DryRun call that also warms the
 * connection) before the database has started its backup.  SNAPSHOT
 * freezes, makes exactly one CreateSnapshots call and thaws.  FINISH tags
 * the snapshots with the backup's metadata.  ABORT or a vanished client at
 * any point ends the operation.  One operation at a time: a second PREPARE
 * while one is active gets a Busy error.
 *
 * If a thaw fails, the filesystems stay frozen and every writer on them
 * hangs: the operation ends for its client (ERROR "ThawFailed"), but its
 * freeze plan is kept and op_tick() retries the thaw until it succeeds;
 * meanwhile PREPARE gets "ThawPending".
 */
#ifndef AMIS_OPERATION_H
#define AMIS_OPERATION_H

#include "config.h"
#include "protocol.h"
#include "server.h"

#include <signal.h>
#include <stdbool.h>

struct helper;
struct conn;

/*
 * stop: the daemon's stop flag (set by SIGTERM/SIGINT; may be NULL): once
 * set, no freeze cycle starts and a retry back-off ends.
 */
struct helper *helper_new(struct helper_config *cfg, const char *config_path,
                          volatile sig_atomic_t *stop);
void helper_free(struct helper *h);

/* The server's handlers (server.h), for h. */
void op_server_handlers(struct helper *h, struct server_handlers *out);

/* Handles one decoded message; returns 0 to keep the connection, -1 to close it. */
int op_dispatch(struct helper *h, struct conn *c, const struct amsp_msgview *m);
/* The client of c vanished (or timed out) while it owned an operation. */
void op_client_gone(struct helper *h, struct conn *c, const char *why);
/*
 * Whether c's client may stay silent beyond client_timeout: between PENDING
 * and FINISH the backend waits in pg_backup_stop() (WAL archiving), for as
 * long as it takes; a closed socket is still noticed.
 */
bool op_client_may_idle(const struct conn *c);

/* Whether a failed thaw is being retried (poll more often then). */
bool op_thaw_pending(const struct helper *h);
/* Called on every turn of the server loop: retries pending thaws, watches jobs. */
void op_tick(struct helper *h);
/* At start-up: `verify --cleanup` of what drills killed earlier left (job.h). */
void op_start_cleanup(struct helper *h);
/* At exit: stops the jobs (SIGTERM, SIGKILL after timeout_ms). */
void op_stop_jobs(struct helper *h, long timeout_ms);
/*
 * At exit: retries pending thaws for up to timeout_ms.  Returns 0 when
 * nothing is frozen, -1 (logged, with the mount points) otherwise.
 */
int op_shutdown(struct helper *h, long timeout_ms);

#endif
