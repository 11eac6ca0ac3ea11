/*
 * test_opstate.c - the operation's state machine (helper/root/opstate.c):
 * every move between states allowed or refused, and what every request
 * gets in every state, from the operation's own client and from another.
 * The expected tables are written out here, independently of opstate.c.
 */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "opstate.h"
#include "tap.h"

/* Allowed moves, "from>to" (everything else is refused). */
static const char *const allowed_moves[] = {
    "idle>preparing",        "preparing>prepared",  "preparing>idle",    "prepared>freezing",
    "prepared>idle",         "freezing>frozen",     "freezing>pending",  "freezing>prepared",
    "freezing>thaw-pending", "freezing>idle",       "frozen>pending",    "frozen>prepared",
    "frozen>idle",           "frozen>thaw-pending", "thaw-pending>idle", "pending>tagging",
    "pending>idle",          "tagging>idle",
};

static bool move_allowed(enum op_state a, enum op_state b)
{
	char key[64];
	size_t i;

	snprintf(key, sizeof(key), "%s>%s", opstate_name(a), opstate_name(b));
	for (i = 0; i < sizeof(allowed_moves) / sizeof(allowed_moves[0]); i++)
		if (!strcmp(allowed_moves[i], key))
			return true;
	return false;
}

static const enum amsp_msg requests[] = {AMSP_PREPARE,  AMSP_SNAPSHOT, AMSP_FINISH,
                                         AMSP_ABORT,    AMSP_STATUS,   AMSP_THAW,
                                         AMSP_PREPARED, AMSP_W_READY,  AMSP_JOB};

static const char *verdict_name(enum op_verdict v)
{
	switch (v) {
	case OPV_HANDLE:
		return "handle";
	case OPV_STATUS:
		return "status";
	case OPV_THAW:
		return "thaw";
	case OPV_BUSY:
		return "busy";
	case OPV_THAW_PENDING:
		return "thaw-pending";
	case OPV_OUT_OF_ORDER:
		return "refused";
	case OPV_JOB:
		return "job";
	}
	return "?";
}

/* The specification: what each request gets. */
static enum op_verdict expected(enum op_state s, bool own, enum amsp_msg r)
{
	switch (r) {
	case AMSP_STATUS:
		return OPV_STATUS; /* always, also while frozen */
	case AMSP_THAW:
		return OPV_THAW; /* always; who may is checked by the handler */
	case AMSP_PREPARE:
		if (own)
			return OPV_OUT_OF_ORDER;
		if (s == OPS_IDLE)
			return OPV_HANDLE;
		return s == OPS_THAW_PENDING ? OPV_THAW_PENDING : OPV_BUSY;
	case AMSP_JOB:
		/* Beside a snapshot, but never forked while anything is frozen. */
		if (own)
			return OPV_OUT_OF_ORDER;
		if (s == OPS_FREEZING || s == OPS_FROZEN)
			return OPV_BUSY;
		return s == OPS_THAW_PENDING ? OPV_THAW_PENDING : OPV_JOB;
	case AMSP_SNAPSHOT:
		return own && s == OPS_PREPARED ? OPV_HANDLE : OPV_OUT_OF_ORDER;
	case AMSP_FINISH:
		return own && s == OPS_PENDING ? OPV_HANDLE : OPV_OUT_OF_ORDER;
	case AMSP_ABORT:
		return own && (s == OPS_PREPARED || s == OPS_PENDING) ? OPV_HANDLE
		                                                      : OPV_OUT_OF_ORDER;
	default:
		return OPV_OUT_OF_ORDER;
	}
}

int main(void)
{
	int a, b, own;
	size_t i, nmoves = 0;

	for (a = 0; a < OPS_COUNT; a++) {
		ok(strcmp(opstate_name((enum op_state)a), "?") != 0, "state %d has a name (%s)", a,
		   opstate_name((enum op_state)a));
		for (b = 0; b < OPS_COUNT; b++) {
			bool want = move_allowed((enum op_state)a, (enum op_state)b);

			nmoves += want;
			is_int(opstate_may_move((enum op_state)a, (enum op_state)b), want,
			       "%s -> %s %s", opstate_name((enum op_state)a),
			       opstate_name((enum op_state)b), want ? "allowed" : "refused");
		}
	}
	is_int(nmoves, sizeof(allowed_moves) / sizeof(allowed_moves[0]),
	       "every allowed move of the specification names real states");
	ok(!opstate_may_move(OPS_COUNT, OPS_IDLE) && !opstate_may_move(OPS_IDLE, OPS_COUNT),
	   "out-of-range states are refused");

	/* While writes are blocked, only STATUS and THAW are answered, and PREPARE is Busy. */
	for (a = 0; a < OPS_COUNT; a++) {
		for (own = 0; own < 2; own++) {
			for (i = 0; i < sizeof(requests) / sizeof(requests[0]); i++) {
				enum op_verdict got =
				    opstate_verdict((enum op_state)a, own, requests[i]);
				enum op_verdict want = expected((enum op_state)a, own, requests[i]);

				is_str(verdict_name(got), verdict_name(want),
				       "%s in %s from %s client", amsp_msg_name(requests[i]),
				       opstate_name((enum op_state)a), own ? "its own" : "another");
			}
		}
	}
	for (own = 0; own < 2; own++)
		for (i = 0; i < sizeof(requests) / sizeof(requests[0]); i++)
			ok(opstate_verdict(OPS_FROZEN, own, requests[i]) != OPV_HANDLE,
			   "frozen: %s from %s client does not start a step",
			   amsp_msg_name(requests[i]), own ? "its own" : "another");
	return done_testing();
}
