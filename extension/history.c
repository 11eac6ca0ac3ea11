/*
 * history.c - see history.h.
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/pg_authid.h"
#include "catalog/pg_extension.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "storage/dsm.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/pmsignal.h"
#include "storage/proc.h"
#include "storage/procarray.h"
#include "tcop/tcopprot.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/fmgroids.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/snapmgr.h"

#include "history.h"

/* Layout of the shared memory segment handed to the worker. */
typedef struct HistoryShared
{
	uint32		magic;			/* HISTORY_MAGIC: this layout */
	Oid			dboid;
	Oid			roleoid;
	/*
	 * A deferred write (history_write_defer()): the worker connects, then
	 * waits for go; the backend fills the row and sets go to HW_GO, or to
	 * HW_CANCEL.  worker_procno: the waiting worker's, for its latch.
	 */
	bool		deferred;
	int			backend_pid;
	int			max_wait_ms;	/* a deferred worker's wait for go, at most */
	Size		capacity;		/* bytes of data[] */
	pg_atomic_uint32 go;
	pg_atomic_uint32 worker_procno;
	int			done;			/* set to 1 by the worker on commit */
	int64		id;				/* the row's id, set by the worker */
	int			table;			/* HistoryTable */
	int			ncolumns;		/* the table's: HC_NCOLUMNS_1_0 or HC_NCOLUMNS, or VC_NCOLUMNS */
	char		error[512];		/* the worker's error message, if any */
	int32		lens[HISTORY_MAX_COLUMNS];	/* -1 = NULL */
	char		data[FLEXIBLE_ARRAY_MEMBER];
} HistoryShared;

/* bgw_extra for the fire-and-forget "interrupted" worker. */
typedef struct InterruptedArgs
{
	char		request_id[40];
	Oid			dboid;
	Oid			roleoid;
	int			phase;			/* HistoryPhase */
	int			table;			/* HistoryTable */
} InterruptedArgs;

/* Armed by history_arm_exit(), read by the exit callback. */
static InterruptedArgs exit_args;
static bool exit_callback_registered = false;

/*
 * The worker of a row begun and not yet ended (its segment, to cancel a
 * deferred one), and how long an exit waits for it.
 */
static BackgroundWorkerHandle *inflight = NULL;
static HistoryShared *inflight_sh = NULL;
#define INFLIGHT_EXIT_WAIT_MS (HISTORY_LOCK_TIMEOUT_MS + 2000)

/*
 * go: WAIT, then GO (the row is in data[]) or CANCEL from the backend; the
 * worker turns GO into TAKEN (compare-and-swap) before it writes, so that a
 * backend whose worker died before that writes the row itself.
 */
#define HW_WAIT 0
#define HW_GO 1
#define HW_CANCEL 2
#define HW_TAKEN 3
#define HISTORY_MAGIC 0x414d4831	/* "AMH1" */
#define CANCEL_WAIT_MS 1000
/* How long an exiting backend waits for an unfinished row: lock_timeout + margin. */
#define HISTORY_LOCK_TIMEOUT_MS 5000
#define NO_PROCNO PG_UINT32_MAX

static const char *const column_names[HC_NCOLUMNS] = {
	"id", "request_id", "name", "status", "with_freeze", "started_at", "finished_at",
	"instance_id", "region", "volume_ids", "snapshot_ids", "start_lsn", "stop_lsn",
	"timeline", "frozen_ms", "backup_label", "tablespace_map", "error_code",
	"error_message", "backend_pid", "username", "image_id", "image_method"
};

/* Schema-qualified: the worker runs as the extension's owner. */
static const char *const column_types[HC_NCOLUMNS] = {
	"pg_catalog.int8", "pg_catalog.text", "pg_catalog.text", "pg_catalog.text",
	"pg_catalog.bool", "pg_catalog.timestamptz", "pg_catalog.timestamptz",
	"pg_catalog.text", "pg_catalog.text", "pg_catalog.text[]", "pg_catalog.text[]",
	"pg_catalog.pg_lsn", "pg_catalog.pg_lsn", "pg_catalog.int4", "pg_catalog.float8",
	"pg_catalog.text", "pg_catalog.text", "pg_catalog.text", "pg_catalog.text",
	"pg_catalog.int4", "pg_catalog.text", "pg_catalog.text", "pg_catalog.text"
};

static const char *const verification_names[VC_NCOLUMNS] = {
	"id", "request_id", "backup_id", "backup_request_id", "image_id", "launch", "status",
	"started_at", "finished_at", "duration_ms", "drill_id", "recovered_lsn",
	"checks_failed", "detail", "error_code", "error_message", "backend_pid", "username"
};

static const char *const verification_types[VC_NCOLUMNS] = {
	"pg_catalog.int8", "pg_catalog.text", "pg_catalog.int8", "pg_catalog.text",
	"pg_catalog.text", "pg_catalog.bool", "pg_catalog.text", "pg_catalog.timestamptz",
	"pg_catalog.timestamptz", "pg_catalog.float8", "pg_catalog.text", "pg_catalog.pg_lsn",
	"pg_catalog.int4", "pg_catalog.jsonb", "pg_catalog.text", "pg_catalog.text",
	"pg_catalog.int4", "pg_catalog.text"
};

static const char *const job_names[JC_NCOLUMNS] = {
	"id", "request_id", "kind", "backup", "args", "status", "started_at", "finished_at",
	"duration_ms", "exit_code", "detail", "error_code", "error_message", "backend_pid",
	"username"
};

static const char *const job_types[JC_NCOLUMNS] = {
	"pg_catalog.int8", "pg_catalog.text", "pg_catalog.text", "pg_catalog.text",
	"pg_catalog.text[]", "pg_catalog.text", "pg_catalog.timestamptz",
	"pg_catalog.timestamptz", "pg_catalog.float8", "pg_catalog.int4", "pg_catalog.jsonb",
	"pg_catalog.text", "pg_catalog.text", "pg_catalog.int4", "pg_catalog.text"
};

static const char *const completion_names[CC_NCOLUMNS] = {
	"id", "request_id", "completion_state", "completed_at", "completion_reason"
};

static const char *const completion_types[CC_NCOLUMNS] = {
	"pg_catalog.int8", "pg_catalog.text", "pg_catalog.text", "pg_catalog.timestamptz",
	"pg_catalog.text"
};

/* A table's name, columns and their types; the upsert's key and started_at. */
typedef struct TableInfo
{
	const char *name;
	const char *const *columns;
	const char *const *types;
	int			ncolumns;
	int			key;			/* request_id */
	int			started_at;		/* kept from the first write */
	int			status;
	const char *gone_status;	/* what a row whose backend vanished becomes */
	const char *gone_message;
} TableInfo;

static const TableInfo tables[] = {
	[HT_SNAPSHOTS] = {"ami_snapshot_history", column_names, column_types, HC_NCOLUMNS,
		HC_REQUEST_ID, HC_STARTED_AT, HC_STATUS, "failed",
		"the backend running ami_snapshot() ended without a word (a crash, or an immediate "
		"shutdown of the server: no exit callback ran); the helper ended the operation when "
		"the connection closed, and tagged any snapshots it made "
		"ami-snapshot:backup-state=aborted or failed"},
	[HT_VERIFICATIONS] = {"ami_snapshot_verification", verification_names, verification_types,
		VC_NCOLUMNS, VC_REQUEST_ID, VC_STARTED_AT, VC_STATUS, "interrupted",
		"the backend running ami_snapshot_verify() ended without a word (a crash, or an "
		"immediate shutdown of the server: no exit callback ran); the helper stopped the "
		"drill when the connection closed and cleaned up after it"},
	/* No settling (status -1): these rows are not left running by a vanished backend. */
	[HT_JOBS] = {"ami_snapshot_jobs", job_names, job_types, JC_NCOLUMNS, JC_REQUEST_ID,
		JC_STARTED_AT, -1, NULL, NULL},
	[HT_COMPLETION] = {"ami_snapshot_history", completion_names, completion_types,
		CC_NCOLUMNS, CC_REQUEST_ID, -1, -1, NULL, NULL},
};

/* A table number from shared memory, bounded. */
static HistoryTable
table_of(int t)
{
	return t >= HT_SNAPSHOTS && t <= HT_COMPLETION ? (HistoryTable) t : HT_SNAPSHOTS;
}

void
history_set(HistoryRow *row, int col, const char *value)
{
	row->values[col] = value ? pstrdup(value) : NULL;
}

/*
 * The extension's schema and owner, from pg_extension (get_extension_schema()
 * is not exported before PostgreSQL 16).
 */
void
history_extension_info(Oid *nsp, Oid *owner)
{
	Oid			ext = get_extension_oid("ami_snapshot", false);
	Relation	rel;
	ScanKeyData key;
	SysScanDesc scan;
	HeapTuple	tup;

	rel = table_open(ExtensionRelationId, AccessShareLock);
	ScanKeyInit(&key, Anum_pg_extension_oid, BTEqualStrategyNumber, F_OIDEQ,
				ObjectIdGetDatum(ext));
	scan = systable_beginscan(rel, ExtensionOidIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (!HeapTupleIsValid(tup))
		elog(ERROR, "could not find extension ami_snapshot");
	*nsp = ((Form_pg_extension) GETSTRUCT(tup))->extnamespace;
	*owner = ((Form_pg_extension) GETSTRUCT(tup))->extowner;
	systable_endscan(scan);
	table_close(rel, AccessShareLock);
}

/* The role the worker connects as: the extension's owner. */
static Oid
history_owner(void)
{
	Oid			nsp;
	Oid			owner;

	history_extension_info(&nsp, &owner);
	return owner;
}

static void
fill_worker(BackgroundWorker *w, const char *function)
{
	memset(w, 0, sizeof(*w));
	w->bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	w->bgw_start_time = BgWorkerStart_RecoveryFinished;
	w->bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(w->bgw_library_name, BGW_MAXLEN, "ami_snapshot");
	snprintf(w->bgw_function_name, BGW_MAXLEN, "%s", function);
	snprintf(w->bgw_name, BGW_MAXLEN, "ami_snapshot history writer");
	snprintf(w->bgw_type, BGW_MAXLEN, "ami_snapshot history writer");
}

Size
history_row_size(const HistoryRow *row)
{
	Size		size = 0;

	for (int i = 0; i < HISTORY_MAX_COLUMNS; i++)
		if (row->values[i])
			size += strlen(row->values[i]);
	return size;
}

/* Copies row's values into sh, which has room for them. */
static void
fill_shared(HistoryShared *sh, const HistoryRow *row)
{
	char	   *p = sh->data;

	sh->table = row->table;
	sh->ncolumns = row->ncolumns > 0 ? row->ncolumns : tables[row->table].ncolumns;
	for (int i = 0; i < HISTORY_MAX_COLUMNS; i++)
	{
		if (!row->values[i])
		{
			sh->lens[i] = -1;
			continue;
		}
		sh->lens[i] = strlen(row->values[i]);
		memcpy(p, row->values[i], sh->lens[i]);
		p += sh->lens[i];
	}
}

/*
 * A worker for a row of table with capacity bytes of values: row now, or
 * (deferred, row NULL) once history_write_go() gives it.
 */
static bool
launch(HistoryTable table, const HistoryRow *row, Size capacity, bool deferred,
	   int max_wait_ms, int elevel, HistoryWrite *hw)
{
	dsm_segment *seg;
	HistoryShared *sh;
	BackgroundWorker worker;
	BackgroundWorkerHandle *handle;
	MemoryContext oldcxt;
	Oid			owner;
	bool		registered;

	memset(hw, 0, sizeof(*hw));
	/* Before the segment: what may fail does so with nothing to undo. */
	owner = history_owner();
	seg = dsm_create(offsetof(HistoryShared, data) + capacity, DSM_CREATE_NULL_IF_MAXSEGMENTS);
	if (seg == NULL)
	{
		ereport(elevel,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not record the row in %s: too many dynamic shared memory segments",
						tables[table].name)));
		return false;
	}
	/*
	 * Pinned, so the worker can still attach if we stop waiting; it unpins
	 * the segment once it has attached.  The mapping outlives the
	 * (sub)transaction: history_write_end() or _cancel() detaches it.
	 */
	dsm_pin_segment(seg);
	dsm_pin_mapping(seg);
	sh = dsm_segment_address(seg);
	sh->magic = HISTORY_MAGIC;
	sh->dboid = MyDatabaseId;
	sh->roleoid = owner;
	sh->deferred = deferred;
	sh->backend_pid = MyProcPid;
	sh->max_wait_ms = max_wait_ms;
	sh->capacity = capacity;
	pg_atomic_init_u32(&sh->go, HW_WAIT);
	pg_atomic_init_u32(&sh->worker_procno, NO_PROCNO);
	sh->done = 0;
	sh->table = table;
	sh->ncolumns = tables[table].ncolumns;
	sh->error[0] = '\0';
	if (row)
		fill_shared(sh, row);

	fill_worker(&worker, "ami_snapshot_history_worker");
	worker.bgw_main_arg = UInt32GetDatum(dsm_segment_handle(seg));
	worker.bgw_notify_pid = MyProcPid;
	/* In TopMemoryContext: the exit callback may look at it (inflight). */
	oldcxt = MemoryContextSwitchTo(TopMemoryContext);
	registered = RegisterDynamicBackgroundWorker(&worker, &handle);
	MemoryContextSwitchTo(oldcxt);
	if (!registered)
	{
		dsm_unpin_segment(dsm_segment_handle(seg));
		dsm_detach(seg);
		ereport(elevel,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("could not record the row in %s: no background worker slot free", tables[table].name),
				 errhint("Raise max_worker_processes.")));
		return false;
	}
	hw->seg = seg;
	hw->handle = handle;
	hw->table = table;
	hw->active = true;
	hw->deferred = deferred;
	inflight = handle;
	inflight_sh = sh;
	return true;
}

bool
history_write_begin(const HistoryRow *row, int elevel, HistoryWrite *hw)
{
	return launch(row->table, row, history_row_size(row), false, 0, elevel, hw);
}

bool
history_write_defer(HistoryTable table, Size capacity, int max_wait_ms, int elevel,
					HistoryWrite *hw)
{
	return launch(table, NULL, capacity, true, max_wait_ms, elevel, hw);
}

/* Wakes a deferred worker waiting for go (see wait_for_go()). */
static void
wake_worker(HistoryShared *sh)
{
	uint32		procno;

	pg_memory_barrier();
	procno = pg_atomic_read_u32(&sh->worker_procno);
	if (procno != NO_PROCNO)
		SetLatch(&GetPGProcByNumber(procno)->procLatch);
}

static void
forget(HistoryWrite *hw)
{
	if (inflight == hw->handle)
	{
		inflight = NULL;
		inflight_sh = NULL;
	}
	pfree(hw->handle);
	hw->handle = NULL;
	dsm_detach(hw->seg);
	hw->seg = NULL;
	hw->active = false;
	hw->given = false;
}

bool
history_write_go(HistoryWrite *hw, const HistoryRow *row)
{
	HistoryShared *sh;

	if (!hw->active || !hw->deferred)
		return false;
	sh = dsm_segment_address(hw->seg);
	if (history_row_size(row) > sh->capacity || row->table != hw->table)
	{
		history_write_cancel(hw);
		return false;
	}
	fill_shared(sh, row);
	pg_write_barrier();
	pg_atomic_write_u32(&sh->go, HW_GO);
	wake_worker(sh);
	hw->deferred = false;
	hw->given = true;
	return true;
}

/*
 * Until the worker has stopped (true), the postmaster is gone, or ms have
 * passed.  Interrupts are held by the callers or do not matter.
 */
static bool
wait_stopped(BackgroundWorkerHandle *handle, const HistoryShared *sh, int ms)
{
	TimestampTz deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), ms);

	for (;;)
	{
		pid_t		pid;

		if (GetBackgroundWorkerPid(handle, &pid) == BGWH_STOPPED)
			return true;
		/* A row written (or failed) is all an exit needs. */
		if (sh && (sh->done == 1 || sh->error[0] != '\0'))
			return true;
		if (!PostmasterIsAlive() || GetCurrentTimestamp() >= deadline)
			return false;
		pg_usleep(1000L);
	}
}

void
history_write_cancel(HistoryWrite *hw)
{
	HistoryShared *sh;

	if (!hw->active)
		return;
	sh = dsm_segment_address(hw->seg);
	if (hw->deferred)
	{
		pg_atomic_write_u32(&sh->go, HW_CANCEL);
		wake_worker(sh);
		/*
		 * Its slot is free only once it has stopped: a write that follows
		 * (the failed row) may need it.  It stops within milliseconds.
		 */
		(void) wait_stopped(hw->handle, NULL, CANCEL_WAIT_MS);
	}
	/* An undeferred write goes on; it is just not waited for. */
	forget(hw);
}

bool
history_write_end(HistoryWrite *hw, int elevel, int64 *id_out)
{
	HistoryShared *sh;
	BgwHandleStatus status;
	TimestampTz deadline;
	bool		ok;

	hw->untaken = false;
	if (!hw->active)
		return false;
	if (hw->deferred)
	{
		/* Never given its row: nothing to wait for. */
		history_write_cancel(hw);
		return false;
	}
	sh = dsm_segment_address(hw->seg);

	/* A bounded wait that no cancel interrupts (see history.h). */
	HOLD_INTERRUPTS();
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), HISTORY_WAIT_MS);
	for (;;)
	{
		pid_t		pid;
		long		left;

		status = GetBackgroundWorkerPid(hw->handle, &pid);
		if (status == BGWH_STOPPED || status == BGWH_POSTMASTER_DIED)
			break;
		left = TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
		if (left <= 0)
			break;
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 Min(left, 100), PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	RESUME_INTERRUPTS();

	ok = (status == BGWH_STOPPED && sh->done == 1);
	if (ok && id_out)
		*id_out = sh->id;
	if (!ok && hw->given && status == BGWH_STOPPED)
	{
		uint32		expected = HW_GO;

		/* Gone before it took the row (terminated, failed to start): the caller writes it. */
		if (pg_atomic_compare_exchange_u32(&sh->go, &expected, HW_CANCEL))
		{
			hw->untaken = true;
			forget(hw);
			return false;
		}
	}
	if (!ok)
	{
		if (status == BGWH_STOPPED)
			ereport(elevel,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("could not record the row in %s", tables[hw->table].name),
					 sh->error[0] ? errdetail("%s", sh->error) : 0));
		else
			ereport(elevel,
					(errcode(ERRCODE_INTERNAL_ERROR),
					 errmsg("the %s writer did not finish within %d ms; it goes on in the background",
							tables[hw->table].name, HISTORY_WAIT_MS)));
	}
	forget(hw);
	return ok;
}

bool
history_write(const HistoryRow *row, int elevel, int64 *id_out)
{
	HistoryWrite hw;

	if (!history_write_begin(row, elevel, &hw))
		return false;
	return history_write_end(&hw, elevel, id_out);
}

/*
 * before_shmem_exit callback: no catalog access, no allocation that can
 * fail in a way we care about; just hand the prepared arguments to a new
 * worker and go.
 */
static void
history_on_exit(int code, Datum arg)
{
	BackgroundWorker worker;

	if (exit_args.phase == HP_IDLE)
		return;
	/*
	 * A row begun and not yet ended (history_write_begin()) would overtake
	 * the update below and leave "running": let its worker finish first.
	 */
	if (inflight && inflight_sh)
	{
		uint32		expected = HW_WAIT;

		if (inflight_sh->deferred &&
			pg_atomic_compare_exchange_u32(&inflight_sh->go, &expected, HW_CANCEL))
		{
			/* A deferred row never given writes nothing; its slot is freed soon. */
			wake_worker(inflight_sh);
			(void) wait_stopped(inflight, NULL, CANCEL_WAIT_MS);
		}
		else
		{
			/*
			 * A row begun and not yet ended would overtake the update below
			 * and leave "running": let it be written (or fail) first.  Its
			 * lock waits end at lock_timeout.
			 */
			(void) wait_stopped(inflight, inflight_sh, INFLIGHT_EXIT_WAIT_MS);
		}
		inflight = NULL;
		inflight_sh = NULL;
	}
	fill_worker(&worker, "ami_snapshot_history_worker");
	memcpy(worker.bgw_extra, &exit_args, sizeof(exit_args));
	worker.bgw_main_arg = UInt32GetDatum(DSM_HANDLE_INVALID);
	worker.bgw_notify_pid = 0;
	(void) RegisterDynamicBackgroundWorker(&worker, NULL);
}

void
history_arm_exit(HistoryTable table, const char *request_id)
{
	InterruptedArgs args;

	memset(&args, 0, sizeof(args));
	args.table = table;
	strlcpy(args.request_id, request_id, sizeof(args.request_id));
	args.dboid = MyDatabaseId;
	args.roleoid = history_owner();
	args.phase = HP_IDLE;
	exit_args = args;
	if (!exit_callback_registered)
	{
		before_shmem_exit(history_on_exit, (Datum) 0);
		exit_callback_registered = true;
	}
}

void
history_set_phase(HistoryPhase phase)
{
	exit_args.phase = phase;
}

/* Search path for the worker's SQL, whatever ALTER DATABASE/ROLE set. */
static void
set_safe_search_path(void)
{
	SetConfigOption("search_path", "pg_catalog, pg_temp", PGC_SUSET, PGC_S_OVERRIDE);
	SetConfigOption("lock_timeout", psprintf("%dms", HISTORY_LOCK_TIMEOUT_MS), PGC_SUSET,
					PGC_S_OVERRIDE);
}

/* Runs one statement in its own transaction; returns the first column of a RETURNING row. */
static int64
run_sql(const char *sql, int nargs, Oid *types, Datum *values, const char *nulls)
{
	int			rc;
	int64		result = 0;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	SPI_connect();
	PushActiveSnapshot(GetTransactionSnapshot());
	pgstat_report_activity(STATE_RUNNING, "ami_snapshot history");
	rc = SPI_execute_with_args(sql, nargs, types, values, nulls, false, 0);
	/* No row returned: an upsert its WHERE kept from updating. */
	if (rc == SPI_OK_INSERT_RETURNING && SPI_processed == 1)
	{
		bool		isnull;

		result = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
											 SPI_tuptable->tupdesc, 1, &isnull));
	}
	else if (rc != SPI_OK_UPDATE && !(rc == SPI_OK_INSERT_RETURNING && SPI_processed == 0))
		elog(ERROR, "unexpected SPI result %d", rc);
	SPI_finish();
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_activity(STATE_IDLE, NULL);
	return result;
}

static char *
qualified_table(HistoryTable table)
{
	Oid			nsp;
	Oid			owner;
	char	   *result;

	StartTransactionCommand();
	history_extension_info(&nsp, &owner);
	result = psprintf("%s.%s", quote_identifier(get_namespace_name(nsp)),
					  tables[table].name);
	result = MemoryContextStrdup(TopMemoryContext, result);
	CommitTransactionCommand();
	return result;
}

/*
 * The schema-qualified name of table t, or NULL when the installed version
 * of the extension has no such table (the verifications came with 1.2).
 */
static char *
existing_table(HistoryTable t)
{
	Oid			nsp;
	Oid			owner;
	char	   *result = NULL;

	StartTransactionCommand();
	history_extension_info(&nsp, &owner);
	if (OidIsValid(get_relname_relid(tables[t].name, nsp)))
		result = MemoryContextStrdup(TopMemoryContext,
									 psprintf("%s.%s", quote_identifier(get_namespace_name(nsp)),
											  tables[t].name));
	CommitTransactionCommand();
	return result;
}

/*
 * A call starting settles the rows of calls whose backend vanished without
 * running its exit callback (a crash, an immediate shutdown, SIGKILL): rows
 * still 'running' that began before the server last started, or whose
 * backend_pid no longer belongs to a backend that was there when they began.
 * A backend this role may not see the start time of is left alone.
 */
static void
settle_vanished(const char *table, const TableInfo *ti, Datum request_id)
{
	Oid			types[2] = {TEXTOID, TEXTOID};
	Datum		values[2];

	values[0] = request_id;
	values[1] = CStringGetTextDatum(ti->gone_message);
	run_sql(psprintf("UPDATE %s AS h SET status = '%s', finished_at = pg_catalog.now(), "
					 "error_code = 'BackendGone', error_message = $2 "
					 "WHERE h.status OPERATOR(pg_catalog.=) 'running' "
					 "AND h.request_id OPERATOR(pg_catalog.<>) $1 "
					 "AND (h.started_at OPERATOR(pg_catalog.<) pg_catalog.pg_postmaster_start_time() "
					 "OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a "
					 "WHERE a.pid OPERATOR(pg_catalog.=) h.backend_pid "
					 "AND (a.backend_start IS NULL "
					 "OR a.backend_start OPERATOR(pg_catalog.<=) h.started_at)))",
					 table, ti->gone_status),
			2, types, values, NULL);
}

/*
 * A deferred write's worker, connected: waits until the backend gives the
 * row (true) or cancels, or is gone (false).  The procno is published
 * before go is read, and the backend sets go before it reads the procno
 * (each with a full barrier between): one of the two sees the other.
 */
static bool
wait_for_go(HistoryShared *sh)
{
	TimestampTz deadline;

#if PG_VERSION_NUM >= 170000
	pg_atomic_write_u32(&sh->worker_procno, (uint32) MyProcNumber);
#else
	pg_atomic_write_u32(&sh->worker_procno, (uint32) MyProc->pgprocno);
#endif
	pg_memory_barrier();
	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), sh->max_wait_ms);
	for (;;)
	{
		uint32		go;

		ResetLatch(MyLatch);
		go = pg_atomic_read_u32(&sh->go);
		if (go == HW_GO)
		{
			/* Taken: from here a backend that sees us gone does not write it. */
			if (!pg_atomic_compare_exchange_u32(&sh->go, &go, HW_TAKEN))
				continue;
			pg_read_barrier();
			return true;
		}
		if (go == HW_CANCEL || BackendPidGetProc(sh->backend_pid) == NULL)
			return false;
		if (sh->max_wait_ms > 0 && GetCurrentTimestamp() >= deadline)
		{
			/* Waited long enough: a go() after this finds us gone, and writes the row. */
			go = HW_WAIT;
			if (pg_atomic_compare_exchange_u32(&sh->go, &go, HW_CANCEL))
				return false;
			continue;
		}
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH, 100,
						 PG_WAIT_EXTENSION);
		CHECK_FOR_INTERRUPTS();
	}
}

void
ami_snapshot_history_worker(Datum main_arg)
{
	dsm_handle	h = DatumGetUInt32(main_arg);
	dsm_segment *seg = NULL;
	HistoryShared *sh = NULL;
	char	   *table;

	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();

	if (h == DSM_HANDLE_INVALID)
	{
		InterruptedArgs args;
		Oid			types2[2] = {TEXTOID, TEXTOID};
		Datum		values2[2];
		const char *message;

		memcpy(&args, MyBgworkerEntry->bgw_extra, sizeof(args));
		BackgroundWorkerInitializeConnectionByOid(args.dboid, args.roleoid, 0);
		set_safe_search_path();
		table = qualified_table(table_of(args.table));
		args.request_id[sizeof(args.request_id) - 1] = '\0';
		switch (args.phase)
		{
			case HP_JOB:
				message = "the backend running a lifecycle job (ami_snapshot_wait, ami_snapshot_prune, ...) exited (terminated, or the client connection was lost); the helper stopped the job";
				break;
			case HP_VERIFYING:
				message = "the backend running ami_snapshot_verify() exited (terminated, or the client connection was lost) while the drill ran; the helper stopped the drill and cleaned up after it";
				break;
			case HP_PREPARING:
				message = "the backend running ami_snapshot() exited (terminated, or the client connection was lost) before the backup started; no snapshot was taken";
				break;
			case HP_BACKUP_RUNNING:
				message = "the backend running ami_snapshot() exited (terminated, or the client connection was lost) while the backup was running; the backup was aborted and any snapshots are tagged ami-snapshot:backup-state=aborted";
				break;
			default:
				message = "the backend running ami_snapshot() exited (terminated, or the client connection was lost) after the snapshots were taken and the backup stopped; the backup-label tags may be missing";
				break;
		}
		values2[0] = CStringGetTextDatum(args.request_id);
		values2[1] = CStringGetTextDatum(message);
		run_sql(psprintf("UPDATE %s SET status = '%s', finished_at = pg_catalog.now(), "
						 "error_code = 'BackendExited', error_message = $2 "
						 "WHERE request_id OPERATOR(pg_catalog.=) $1 "
						 "AND status OPERATOR(pg_catalog.=) 'running'", table,
						 args.phase == HP_VERIFYING || args.phase == HP_JOB ?
						 "interrupted" : "failed"),
				2, types2, values2, NULL);
		proc_exit(0);
	}

	seg = dsm_attach(h);
	if (!seg)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("could not map the ami_snapshot history segment")));
	/* Attached: the segment lives as long as we need it now. */
	dsm_unpin_segment(h);
	sh = dsm_segment_address(seg);
	if (dsm_segment_map_length(seg) < offsetof(HistoryShared, data) ||
		sh->magic != HISTORY_MAGIC ||
		dsm_segment_map_length(seg) < offsetof(HistoryShared, data) + sh->capacity)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the ami_snapshot history segment is not of this version of the library"),
				 errhint("Reconnect: the backend that made it loaded another ami_snapshot.so.")));
	/* Cancelled already: no connection to make. */
	if (sh->deferred && pg_atomic_read_u32(&sh->go) == HW_CANCEL)
	{
		dsm_detach(seg);
		proc_exit(0);
	}
	BackgroundWorkerInitializeConnectionByOid(sh->dboid, sh->roleoid, 0);
	set_safe_search_path();
	if (sh->deferred && !wait_for_go(sh))
	{
		dsm_detach(seg);
		proc_exit(0);
	}
	{
		Size		total = 0;

		for (int i = 0; i < HISTORY_MAX_COLUMNS; i++)
			if (sh->lens[i] > 0)
				total += sh->lens[i];
		if (total > sh->capacity || sh->ncolumns < 1 || sh->ncolumns > HISTORY_MAX_COLUMNS)
			ereport(ERROR,
					(errcode(ERRCODE_DATA_CORRUPTED),
					 errmsg("the ami_snapshot history segment is inconsistent")));
	}

	PG_TRY();
	{
		StringInfoData sql;
		StringInfoData set;
		Oid			types[HISTORY_MAX_COLUMNS];
		Datum		values[HISTORY_MAX_COLUMNS];
		char		nulls[HISTORY_MAX_COLUMNS];
		char	   *p = sh->data;
		const TableInfo *ti = &tables[table_of(sh->table)];
		bool		starting = false;
		int			i;

		table = qualified_table(table_of(sh->table));
		initStringInfo(&sql);
		initStringInfo(&set);
		if (table_of(sh->table) == HT_COMPLETION)
		{
			/* An update of the backup's row, if this database has it. */
			appendStringInfo(&sql, "UPDATE %s SET ", table);
			for (i = CC_STATE; i < CC_NCOLUMNS; i++)
				appendStringInfo(&sql, "%s%s = $%d::%s", i > CC_STATE ? ", " : "",
								 completion_names[i], i, completion_types[i]);
			appendStringInfo(&sql, " WHERE request_id OPERATOR(pg_catalog.=) $%d::pg_catalog.text",
							 CC_REQUEST_ID);
			for (i = 1; i < CC_NCOLUMNS; i++)
			{
				types[i - 1] = TEXTOID;
				nulls[i - 1] = sh->lens[i] < 0 ? 'n' : ' ';
				values[i - 1] = sh->lens[i] < 0 ? (Datum) 0 :
					PointerGetDatum(cstring_to_text_with_len(p, sh->lens[i]));
				if (sh->lens[i] > 0)
					p += sh->lens[i];
			}
			sh->id = run_sql(sql.data, CC_NCOLUMNS - 1, types, values, nulls);
			sh->done = 1;
			goto written;
		}
		/* The id comes from the table's sequence; request_id is the key. */
		appendStringInfo(&sql, "INSERT INTO %s AS h (", table);
		for (i = 1; i < sh->ncolumns; i++)
			appendStringInfo(&sql, "%s%s", i > 1 ? ", " : "", ti->columns[i]);
		appendStringInfoString(&sql, ") VALUES (");
		for (i = 1; i < sh->ncolumns; i++)
		{
			appendStringInfo(&sql, "%s$%d::%s", i > 1 ? ", " : "", i, ti->types[i]);
			types[i - 1] = TEXTOID;
			if (sh->lens[i] < 0)
			{
				values[i - 1] = (Datum) 0;
				nulls[i - 1] = 'n';
			}
			else
			{
				values[i - 1] = PointerGetDatum(cstring_to_text_with_len(p, sh->lens[i]));
				nulls[i - 1] = ' ';
				if (i == ti->status && sh->lens[i] == 7 && memcmp(p, "running", 7) == 0)
					starting = true;
				p += sh->lens[i];
			}
			/* On update, keep what an earlier write recorded if this one has NULL. */
			if (i != ti->key && i != ti->started_at)
				appendStringInfo(&set, "%s%s = coalesce(EXCLUDED.%s, h.%s)",
								 set.len ? ", " : "", ti->columns[i],
								 ti->columns[i], ti->columns[i]);
		}
		appendStringInfo(&sql, ") ON CONFLICT (request_id) DO UPDATE SET %s", set.data);
		/* A finished row never turns back to running (a late start row). */
		if (ti->status > 0)
			appendStringInfo(&sql, " WHERE h.%s OPERATOR(pg_catalog.=) 'running' OR "
							 "EXCLUDED.%s OPERATOR(pg_catalog.<>) 'running'",
							 ti->columns[ti->status], ti->columns[ti->status]);
		appendStringInfoString(&sql, " RETURNING id");

		sh->id = run_sql(sql.data, sh->ncolumns - 1, types, values, nulls);
		sh->done = 1;
		/*
		 * After the row is recorded: a failure here (logged) loses nothing of
		 * it.  Every table's rows are settled, whatever this call is: the
		 * drill a crash interrupted is settled by the next snapshot too.
		 */
		if (starting)
		{
			int			t;

			for (t = HT_SNAPSHOTS; t <= HT_COMPLETION; t++)
			{
				char	   *other;

				if (!tables[t].gone_status)
					continue;
				other = t == table_of(sh->table) ? table : existing_table((HistoryTable) t);
				if (other)
					settle_vanished(other, &tables[t], values[ti->key - 1]);
			}
		}
written:
		;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(TopMemoryContext);
		edata = CopyErrorData();
		strlcpy(sh->error, edata->message ? edata->message : "unknown error",
				sizeof(sh->error));
		PG_RE_THROW();
	}
	PG_END_TRY();
	dsm_detach(seg);
	proc_exit(0);
}
