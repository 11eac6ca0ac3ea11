/*
 * job.h - a JOB asked of the helper from a backend (doc/protocol.md,
 * "Jobs"): ami_snapshot_verify() (verify.c) and the lifecycle functions
 * (lifecycle.c).
 */
#ifndef AMI_SNAPSHOT_JOB_H
#define AMI_SNAPSHOT_JOB_H

#include "lib/stringinfo.h"
#include "nodes/pg_list.h"

#include "helper_client.h"

/* A job's arguments, in order. */
typedef struct JobArgs
{
	List	   *keys;
	List	   *values;
} JobArgs;

/* What the job answered. */
typedef struct JobResult
{
	StringInfoData report;		/* the command's JSON document (JOB_OUTPUT) */
	char		outcome[33];	/* JOB_RESULT's */
	int			exit_code;		/* -1: killed by a signal */
	char		message[2049];	/* the last line of its stderr */
	double		ms;
	bool		truncated;
	char		helper_error_code[65];
} JobResult;

extern void add_arg(JobArgs *a, const char *key, const char *value);

/*
 * Sends the JOB of kind and waits for its end, at most wait_ms for each
 * message; an ERROR (the helper's, a cancel...) leaves hc to the caller.
 */
extern void run_helper_job(HelperConn *hc, const char *request_id, const char *kind,
						   JobArgs *args, JobResult *res, int wait_ms);

/*
 * Connects to the helper and runs the job in a subtransaction: NULL when it
 * ran to its end (whatever its outcome), else the error (a cancel, Busy,
 * no helper...), already caught and the job aborted, for the caller to
 * record and rethrow.
 */
extern ErrorData *run_job_caught(const char *request_id, const char *kind, JobArgs *args,
								 JobResult *res, int wait_ms);

#endif
