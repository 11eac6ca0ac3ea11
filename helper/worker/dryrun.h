/*
 * dryrun.h - the preflight check's EC2 permission tests (doc/protocol.md,
 * "Check"): which actions the worker can test with DryRun, the parameters
 * of each, and how an answer reads.  Pure: no I/O (test/unit/test_check.c).
 *
 * "DryRun: Checks whether you have the required permissions for the
 * action, without actually making the request, and provides an error
 * response.  If you have the required permissions, the error response is
 * DryRunOperation.  Otherwise, it is UnauthorizedOperation."  (Amazon EC2
 * API Reference, e.g. CreateSnapshots, Request Parameters.)
 *
 * Some actions work on a resource that must exist (DeleteSnapshot,
 * AttachVolume...): a snapshot of ours when DescribeSnapshots finds one,
 * else an id that cannot exist.  Where EC2 looks the resource up before the permission,
 * the answer (InvalidSnapshot.NotFound...) proves nothing either way: the
 * row says "skipped" and why, never "ok".  UnauthorizedOperation is proof
 * of a missing permission whatever the resource.  RegisterImage is never
 * sent: its DryRun needs snapshots that exist and are completed.
 */
#ifndef AMIS_DRYRUN_H
#define AMIS_DRYRUN_H

#include "ec2.h"
#include "util.h"

#include <stdbool.h>
#include <stddef.h>

/* What an action's DryRun needs to know of this instance. */
struct dryrun_ctx {
	const char *instance_id;
	const char *region;
	const char *availability_zone; /* "" when IMDS did not say */
	const char *volume_id;         /* a volume of the database, "" when none is known */
	const char *snapshot_id;       /* a snapshot of ours, "" when none was found */
};

/*
 * Whether action works on a snapshot: the check then names one of ours
 * (found by DescribeSnapshots, if allowed), so that EC2 checks the
 * permission on a real resource, as the real call would.
 */
bool dryrun_wants_snapshot(const char *action);
/* DescribeSnapshots of one of ours (by the request-id tag key): its parameters. */
void dryrun_find_snapshot_params(struct ec2_params *p);

enum dryrun_result {
	DRYRUN_ALLOWED,      /* DryRunOperation: the permission is there */
	DRYRUN_DENIED,       /* UnauthorizedOperation: the IAM action is missing */
	DRYRUN_INCONCLUSIVE, /* EC2 answered something else first; or no DryRun is possible */
	DRYRUN_FAILED,       /* EC2 could not be asked (network, credentials refused) */
};

/* Whether the check knows action (an EC2 action name, "CreateSnapshots"). */
bool dryrun_known(const char *action);
/*
 * Whether a DryRun of action can be sent at all (RegisterImage cannot: it
 * needs real snapshots); *why says why not.
 */
bool dryrun_possible(const char *action, const char **why);
/* action's parameters, DryRun=true included; -1 for an unknown action. */
int dryrun_params(const char *action, const struct dryrun_ctx *c, struct ec2_params *p);
/*
 * How ec2_call's outcome (rc, and err when rc != 0) reads for action;
 * detail and hint (possibly "") are written for the check's row.  Never a
 * secret: only err's code and message, which carry none (ec2.h).
 */
enum dryrun_result dryrun_verdict(const char *action, int rc, const struct amis_err *err,
                                  char *detail, size_t detailsz, char *hint, size_t hintsz);
/* "ok", "failed" or "skipped": the row's result. */
const char *dryrun_result_name(enum dryrun_result r);

#endif
