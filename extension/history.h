/*
 * history.h - the ami_snapshot_history table, written autonomously.
 *
 * A failed ami_snapshot() call raises an error, which rolls back everything
 * its transaction wrote.  The history must survive that, so rows are written
 * by a short-lived dynamic background worker in its own transaction (an
 * "autonomous transaction"), and the caller waits for it.  If the backend
 * itself exits mid-operation (pg_terminate_backend, lost connection), a
 * shared-memory exit callback launches a worker that marks the row failed
 * without waiting for it.
 */
#ifndef AMI_SNAPSHOT_HISTORY_H
#define AMI_SNAPSHOT_HISTORY_H

#include "access/xlogdefs.h"
#include "datatype/timestamp.h"

typedef enum HistoryColumn
{
	HC_ID = 0,
	HC_REQUEST_ID,
	HC_NAME,
	HC_STATUS,
	HC_FREEZE,
	HC_STARTED_AT,
	HC_FINISHED_AT,
	HC_INSTANCE_ID,
	HC_REGION,
	HC_VOLUME_IDS,
	HC_SNAPSHOT_IDS,
	HC_START_LSN,
	HC_STOP_LSN,
	HC_TIMELINE,
	HC_FROZEN_MS,
	HC_BACKUP_LABEL,
	HC_TABLESPACE_MAP,
	HC_ERROR_CODE,
	HC_ERROR_MESSAGE,
	HC_BACKEND_PID,
	HC_USERNAME,
	/* Version 1.1 on (the history of a 1.0 database has none of these). */
	HC_IMAGE_ID,
	HC_IMAGE_METHOD,
	HC_NCOLUMNS
} HistoryColumn;

/* The columns of version 1.0's table. */
#define HC_NCOLUMNS_1_0 HC_IMAGE_ID

/* ami_snapshot_verification (1.2 on): one row per ami_snapshot_verify() call. */
typedef enum VerificationColumn
{
	VC_ID = 0,
	VC_REQUEST_ID,				/* the drill's own request id */
	VC_BACKUP_ID,				/* ami_snapshot_history.id of the backup, if known */
	VC_BACKUP_REQUEST_ID,
	VC_IMAGE_ID,
	VC_LAUNCH,
	VC_STATUS,
	VC_STARTED_AT,
	VC_FINISHED_AT,
	VC_DURATION_MS,
	VC_DRILL_ID,
	VC_RECOVERED_LSN,
	VC_CHECKS_FAILED,
	VC_DETAIL,
	VC_ERROR_CODE,
	VC_ERROR_MESSAGE,
	VC_BACKEND_PID,
	VC_USERNAME,
	VC_NCOLUMNS
} VerificationColumn;

/* ami_snapshot_jobs (1.3 on): one row per lifecycle job asked from SQL. */
typedef enum JobColumn
{
	JC_ID = 0,
	JC_REQUEST_ID,				/* the job's own request id */
	JC_KIND,					/* wait, prune, copy, lock, unlock */
	JC_BACKUP,					/* the ID the job was given, if any */
	JC_ARGS,					/* its arguments, text[] of key=value */
	JC_STATUS,
	JC_STARTED_AT,
	JC_FINISHED_AT,
	JC_DURATION_MS,
	JC_EXIT_CODE,
	JC_DETAIL,					/* the command's --json document */
	JC_ERROR_CODE,
	JC_ERROR_MESSAGE,
	JC_BACKEND_PID,
	JC_USERNAME,
	JC_NCOLUMNS
} JobColumn;

/*
 * A backup's completion as a wait job saw it (1.3 on): an UPDATE of the
 * history row of request_id, never an insert.
 */
typedef enum CompletionColumn
{
	CC_ID = 0,
	CC_REQUEST_ID,
	CC_STATE,					/* completed | failed */
	CC_AT,
	CC_REASON,
	CC_NCOLUMNS
} CompletionColumn;

/* Which table a row goes to. */
typedef enum HistoryTable
{
	HT_SNAPSHOTS = 0,			/* ami_snapshot_history, HistoryColumn */
	HT_VERIFICATIONS,			/* ami_snapshot_verification, VerificationColumn */
	HT_JOBS,					/* ami_snapshot_jobs, JobColumn */
	HT_COMPLETION				/* ami_snapshot_history's completion, CompletionColumn */
} HistoryTable;

#define HISTORY_MAX_COLUMNS ((int) HC_NCOLUMNS > (int) VC_NCOLUMNS ? (int) HC_NCOLUMNS : (int) VC_NCOLUMNS)

/*
 * One row, every column as text or NULL (the worker casts); column 0 (id)
 * is output only.  ncolumns: how many of the columns the installed
 * version's table has (snapshots: HC_NCOLUMNS_1_0 or HC_NCOLUMNS; 0: all).
 */
typedef struct HistoryRow
{
	HistoryTable table;
	char	   *values[HISTORY_MAX_COLUMNS];
	int			ncolumns;
} HistoryRow;

extern void history_set(HistoryRow *row, int col, const char *value);

/*
 * Inserts, or updates by request_id, the row in its own transaction and
 * waits for it, at most HISTORY_WAIT_MS, with interrupts held: a cancel may
 * not cut a history write short (that would leave a stale "running" row).
 * Returns true on success; otherwise reports at elevel and returns false.
 */
#define HISTORY_WAIT_MS 10000
extern bool history_write(const HistoryRow *row, int elevel, int64 *id_out);

/*
 * history_write() in two halves, so that the caller works while the
 * worker starts, connects and commits: begin() hands the row to a new
 * worker (false, reported at elevel, if none could be registered); end()
 * waits for it as history_write() does.  Every begun write must be ended
 * (a later write of the same request_id must not overtake it).
 */
typedef struct HistoryWrite
{
	struct dsm_segment *seg;
	struct BackgroundWorkerHandle *handle;
	HistoryTable table;
	bool		active;			/* begun, not ended */
	bool		deferred;		/* its row not given yet */
	bool		given;			/* a deferred write given its row */
	bool		untaken;		/* end(): its worker stopped before it took the row */
} HistoryWrite;

extern bool history_write_begin(const HistoryRow *row, int elevel, HistoryWrite *hw);
extern bool history_write_end(HistoryWrite *hw, int elevel, int64 *id_out);

/*
 * A write whose worker starts and connects now and writes later: defer()
 * (capacity: bytes of values the row may have; max_wait_ms: how long the
 * worker waits for it; false, reported at elevel, if no worker could be
 * had), then go() with the row (false if it does not fit: the write is
 * cancelled, use history_write()) and end(); if end() fails with untaken
 * set, the worker stopped before it took the row: use history_write().  Or
 * cancel(), after which the worker writes nothing (waited for until it
 * stopped, so that its slot is free).  A worker whose backend is gone, or
 * that waited max_wait_ms, writes nothing either.
 */
extern bool history_write_defer(HistoryTable table, Size capacity, int max_wait_ms, int elevel,
								HistoryWrite *hw);
extern bool history_write_go(HistoryWrite *hw, const HistoryRow *row);
extern void history_write_cancel(HistoryWrite *hw);
extern Size history_row_size(const HistoryRow *row);

/* What the backend was doing when it exited; chooses the recorded message. */
typedef enum HistoryPhase
{
	HP_IDLE = 0,				/* nothing to record */
	HP_PREPARING,				/* no backup started yet */
	HP_BACKUP_RUNNING,			/* backup started; aborted by the exit */
	HP_BACKUP_STOPPED,			/* snapshots taken, backup stopped */
	HP_VERIFYING,				/* a drill runs (ami_snapshot_verify) */
	HP_JOB						/* a lifecycle job runs (ami_snapshot_wait...) */
} HistoryPhase;

/*
 * Marks the row of request_id in table failed (a verification:
 * interrupted) if the backend exits while phase is not HP_IDLE.
 * Everything the exit callback needs (database, role) is looked up here,
 * so the callback itself does no catalog access.  The callback is
 * registered once per session.
 */
extern void history_arm_exit(HistoryTable table, const char *request_id);
extern void history_set_phase(HistoryPhase phase);

/* The extension's schema and owner (pg_extension). */
extern void history_extension_info(Oid *nsp, Oid *owner);

/* The worker's entry point (bgw_function_name). */
extern PGDLLEXPORT void ami_snapshot_history_worker(Datum main_arg);

#endif
