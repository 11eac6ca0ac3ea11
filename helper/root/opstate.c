/*
 * opstate.c - see opstate.h.
 */
#include "opstate.h"

static const char *const names[OPS_COUNT] = {
    [OPS_IDLE] = "idle",         [OPS_PREPARING] = "preparing", [OPS_PREPARED] = "prepared",
    [OPS_FREEZING] = "freezing", [OPS_FROZEN] = "frozen",       [OPS_THAW_PENDING] = "thaw-pending",
    [OPS_PENDING] = "pending",   [OPS_TAGGING] = "tagging",
};

const char *opstate_name(enum op_state s)
{
	return s >= 0 && s < OPS_COUNT ? names[s] : "?";
}

/* moves[from] has bit (1 << to) set when the move is allowed. */
#define TO(s) (1u << (s))
static const unsigned moves[OPS_COUNT] = {
    [OPS_IDLE] = TO(OPS_PREPARING),
    [OPS_PREPARING] = TO(OPS_PREPARED) | TO(OPS_IDLE),
    [OPS_PREPARED] = TO(OPS_FREEZING) | TO(OPS_IDLE),
    /* FIFREEZE worked; or the cycle failed before anything was frozen. */
    /* With freeze => false the call is made from here, and it goes to PENDING. */
    [OPS_FREEZING] =
        TO(OPS_FROZEN) | TO(OPS_PENDING) | TO(OPS_PREPARED) | TO(OPS_THAW_PENDING) | TO(OPS_IDLE),
    /* Thawed: pending, or back for a retry, or ended; or the thaw failed. */
    [OPS_FROZEN] = TO(OPS_PENDING) | TO(OPS_PREPARED) | TO(OPS_IDLE) | TO(OPS_THAW_PENDING),
    [OPS_THAW_PENDING] = TO(OPS_IDLE),
    [OPS_PENDING] = TO(OPS_TAGGING) | TO(OPS_IDLE),
    [OPS_TAGGING] = TO(OPS_IDLE),
};

bool opstate_may_move(enum op_state from, enum op_state to)
{
	if (from < 0 || from >= OPS_COUNT || to < 0 || to >= OPS_COUNT)
		return false;
	return (moves[from] & TO(to)) != 0;
}

enum op_verdict opstate_verdict(enum op_state state, bool own, enum amsp_msg type)
{
	switch (type) {
	case AMSP_STATUS:
		return OPV_STATUS;
	case AMSP_THAW:
		return OPV_THAW;
	case AMSP_PREPARE:
	case AMSP_CHECK: /* an operation too: it needs the EC2 worker to itself */
		if (own)
			return OPV_OUT_OF_ORDER; /* one operation a connection */
		if (state == OPS_IDLE)
			return OPV_HANDLE;
		return state == OPS_THAW_PENDING ? OPV_THAW_PENDING : OPV_BUSY;
	case AMSP_JOB:
		/* One conversation a connection; no fork while anything is frozen. */
		if (own)
			return OPV_OUT_OF_ORDER;
		if (state == OPS_THAW_PENDING)
			return OPV_THAW_PENDING;
		return state == OPS_FREEZING || state == OPS_FROZEN ? OPV_BUSY : OPV_JOB;
	case AMSP_SNAPSHOT:
		return own && state == OPS_PREPARED ? OPV_HANDLE : OPV_OUT_OF_ORDER;
	case AMSP_FINISH:
		return own && state == OPS_PENDING ? OPV_HANDLE : OPV_OUT_OF_ORDER;
	case AMSP_ABORT:
		return own && (state == OPS_PREPARED || state == OPS_PENDING) ? OPV_HANDLE
		                                                              : OPV_OUT_OF_ORDER;
	default:
		return OPV_OUT_OF_ORDER; /* answers, and the worker's messages */
	}
}
