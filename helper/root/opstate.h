/*
 * opstate.h - the snapshot operation's states, the transitions between
 * them, and the one table of which request is answered how in which state
 * (as qemu-ga's allow-list while frozen).  Pure: no I/O, unit-tested alone
 * (test/unit/test_opstate.c).
 *
 *   IDLE --PREPARE--> PREPARING --> PREPARED --SNAPSHOT--> FREEZING --FIFREEZE--> FROZEN
 *                        |                      |                     |
 *                        |                      +----(not frozen)-----+--thaw--> PENDING
 *                        |                                            |             |
 *                        |                        thaw failed --> THAW_PENDING     FINISH
 *                        |                                            |             v
 *                        +--ABORT/error--> (ended)  <--thawed---------+         TAGGING --> (ended)
 *
 * A freeze cycle that fails goes back to PREPARED for a retry (or ends the
 * operation).  "Ended" is not a state: the operation is freed, and the
 * helper is IDLE again, or THAW_PENDING while a failed thaw is retried.
 */
#ifndef AMIS_OPSTATE_H
#define AMIS_OPSTATE_H

#include <stdbool.h>

#include "protocol.h"

enum op_state {
	OPS_IDLE,         /* no operation */
	OPS_PREPARING,    /* PREPARE: resolving paths and volumes, the preflight DryRun */
	OPS_PREPARED,     /* paths resolved, permission checked; nothing frozen */
	OPS_FREEZING,     /* the freeze cycle runs: re-warm, marker, watchdog, FIFREEZE */
	OPS_FROZEN,       /* writes blocked; the CreateSnapshots call is in flight */
	OPS_THAW_PENDING, /* a thaw failed and is retried; nothing new may start */
	OPS_PENDING,      /* thawed, snapshots pending; waiting for the backup's stop */
	OPS_TAGGING,      /* tagging the snapshots with the backup's metadata */
	OPS_COUNT
};

/* What to do with a request. */
enum op_verdict {
	OPV_HANDLE,       /* the operation's next step */
	OPV_STATUS,       /* answer with the helper's state */
	OPV_THAW,         /* an administrator's thaw (root or the owner only) */
	OPV_BUSY,         /* refuse: another operation runs (Busy) */
	OPV_THAW_PENDING, /* refuse: a failed thaw is being retried (ThawPending) */
	OPV_OUT_OF_ORDER, /* a protocol error: the connection is closed */
	OPV_JOB,          /* a job: the job table decides (job.h) */
};

const char *opstate_name(enum op_state s);

/* Whether an operation may go from one state to another. */
bool opstate_may_move(enum op_state from, enum op_state to);

/*
 * How request type is answered.  state: the helper's (the active
 * operation's, THAW_PENDING when only a stuck one exists, else IDLE);
 * own: the request comes from the client that owns the active operation.
 */
enum op_verdict opstate_verdict(enum op_state state, bool own, enum amsp_msg type);

#endif
