/*
 * lifecycle.c - the lifecycle jobs from SQL (doc/sql.md, doc/lifecycle.md)
 *
 * ami_snapshot_job_run(kind, args, backup) asks the helper for a job of a
 * lifecycle kind (list, show, wait, prune, copy, lock, unlock): the helper
 * runs its own `ami-snapshot KIND --json --system-id=...` as a child
 * (doc/protocol.md, "Jobs") while it keeps serving snapshots, and answers
 * with the command's JSON document.  The system identifier is always this
 * cluster's (GetSystemIdentifier()), never the caller's: a job only sees
 * and touches this cluster's backups.
 *
 * It is the one C entry of the lifecycle functions, which are SQL
 * functions over it (sql/ami_snapshot--1.2--1.3.sql); nobody but the
 * extension's owner may execute it.  Every job that changes something
 * (all but list and show) leaves a row in ami_snapshot_jobs, written by
 * the history's background worker (history.h) so that it survives the
 * ERROR its SQL function raises on failure; a wait that saw its backup
 * complete or fail records that in the backup's ami_snapshot_history row
 * the same way.
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datum.h"
#include "utils/guc.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "ami_snapshot.h"
#include "helper_client.h"
#include "history.h"
#include "job.h"

PG_FUNCTION_INFO_V1(ami_snapshot_job_run);

/* A wait may last its own 24 h timeout; this only guards against a helper that hangs. */
#define LIFECYCLE_WAIT_MS (86400 * 1000 + 3600 * 1000)
#define MAX_ARGS 40

static const char *const lifecycle_kinds[] = {
	"list", "show", "wait", "prune", "copy", "lock", "unlock"
};

/* What the document says, for the row and the caller. */
typedef struct Report
{
	bool		valid;			/* the output is JSON */
	Datum		doc;			/* jsonb */
	char	   *error_code;		/* the first error the document names */
	char	   *error_message;
	char	   *outcome;		/* wait: completed, failed, timeout */
	char	   *request_id;		/* the backup's */
	char	   *reason;			/* wait: EC2's reason */
} Report;

static char *
copy_text(HeapTuple t, TupleDesc d, int col)
{
	char	   *s = SPI_getvalue(t, d, col);

	return s ? MemoryContextStrdup(TopTransactionContext, s) : NULL;
}

static Report
read_doc(const char *text)
{
	Report		r;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	int			save_nestlevel;

	memset(&r, 0, sizeof(r));
	values[0] = CStringGetTextDatum(text);
	/* pg_catalog's operators and functions, whatever the caller's search_path. */
	save_nestlevel = NewGUCNestLevel();
	(void) set_config_option("search_path", "pg_catalog, pg_temp", PGC_USERSET, PGC_S_SESSION,
							 GUC_ACTION_SAVE, true, 0, false);
	SPI_connect();
	if (SPI_execute_with_args(
			"WITH r(j) AS (SELECT CAST($1 AS jsonb)), "
			"e(code, message) AS ("
			"  SELECT j->'error'->>'code', j->'error'->>'message' FROM r "
			"   WHERE jsonb_typeof(j->'error') = 'object' "
			"  UNION ALL SELECT x->>'code', x->>'message' FROM r, "
			"   jsonb_array_elements(CASE jsonb_typeof(j->'errors') WHEN 'array' "
			"     THEN j->'errors' ELSE '[]' END) x "
			"  UNION ALL SELECT x->>'code', x->>'message' FROM r, "
			"   jsonb_array_elements(CASE jsonb_typeof(j->'region_errors') WHEN 'array' "
			"     THEN j->'region_errors' ELSE '[]' END) x "
			"  UNION ALL SELECT x->'error'->>'code', x->'error'->>'message' FROM r, "
			"   jsonb_array_elements(CASE jsonb_typeof(j->'decisions') WHEN 'array' "
			"     THEN j->'decisions' ELSE '[]' END) x "
			"   WHERE jsonb_typeof(x->'error') = 'object') "
			"SELECT j, (SELECT code FROM e LIMIT 1), (SELECT message FROM e LIMIT 1), "
			"j->>'outcome', j->>'request_id', j->>'reason' FROM r",
			1, types, values, NULL, true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		HeapTuple	t = SPI_tuptable->vals[0];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext spi = MemoryContextSwitchTo(TopTransactionContext);

		r.valid = true;
		r.doc = datumCopy(SPI_getbinval(t, d, 1, &isnull), false, -1);
		MemoryContextSwitchTo(spi);
		r.error_code = copy_text(t, d, 2);
		r.error_message = copy_text(t, d, 3);
		r.outcome = copy_text(t, d, 4);
		r.request_id = copy_text(t, d, 5);
		r.reason = copy_text(t, d, 6);
	}
	SPI_finish();
	AtEOXact_GUC(false, save_nestlevel);
	return r;
}

/* The document as jsonb, or an invalid one when it is not JSON. */
static Report
read_doc_safely(const char *text)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	Report		r;

	memset(&r, 0, sizeof(r));
	if (!text[0])
		return r;
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		r = read_doc(text);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		memset(&r, 0, sizeof(r));
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return r;
}

/* The arguments: key, value, key, value...; system_id is ours to give. */
static void
read_args(ArrayType *arr, JobArgs *args, StringInfo as_array)
{
	Datum	   *elems;
	bool	   *enulls;
	int			n;
	int			i;

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("args must be a one-dimensional array")));
	deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &n);
	if (n % 2 != 0 || n > 2 * MAX_ARGS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("args must be pairs of a name and a value, at most %d of them", MAX_ARGS)));
	appendStringInfoChar(as_array, '{');
	for (i = 0; i < n; i += 2)
	{
		char	   *key;
		char	   *value;

		if (enulls[i] || enulls[i + 1])
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("args must not contain nulls")));
		key = TextDatumGetCString(elems[i]);
		value = TextDatumGetCString(elems[i + 1]);
		if (strcmp(key, "system_id") == 0)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("system_id is always this cluster's"),
					 errdetail("Lifecycle jobs from SQL only see and touch the backups of the cluster they run in.")));
		add_arg(args, key, value);
		if (i > 0)
			appendStringInfoChar(as_array, ',');
		/* An array literal: each element quoted, " and \ escaped. */
		appendStringInfoChar(as_array, '"');
		for (const char *p = key; *p; p++)
		{
			if (*p == '"' || *p == '\\')
				appendStringInfoChar(as_array, '\\');
			appendStringInfoChar(as_array, *p);
		}
		appendStringInfoChar(as_array, '=');
		for (const char *p = value; *p; p++)
		{
			if (*p == '"' || *p == '\\')
				appendStringInfoChar(as_array, '\\');
			appendStringInfoChar(as_array, *p);
		}
		appendStringInfoChar(as_array, '"');
	}
	appendStringInfoChar(as_array, '}');
}

Datum
ami_snapshot_job_run(PG_FUNCTION_ARGS)
{
	char	   *kind;
	char	   *backup = NULL;
	JobArgs		args = {NIL, NIL};
	StringInfoData args_text;
	char		sysid[32];
	bool		known = false;
	bool		record;
	char	   *request_id;
	HistoryRow	row;
	JobResult  *res;
	ErrorData  *edata;
	Report		rep;
	TupleDesc	tupdesc;
	Datum		values[6];
	bool		nulls[6];
	int			i;

	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("kind and args must not be null")));
	kind = text_to_cstring(PG_GETARG_TEXT_PP(0));
	for (i = 0; i < lengthof(lifecycle_kinds); i++)
		known |= strcmp(kind, lifecycle_kinds[i]) == 0;
	if (!known)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("unknown lifecycle job kind \"%s\"", kind),
				 errhint("The kinds are list, show, wait, prune, copy, lock and unlock.")));
	initStringInfo(&args_text);
	read_args(PG_GETARG_ARRAYTYPE_P(1), &args, &args_text);
	if (!PG_ARGISNULL(2))
		backup = text_to_cstring(PG_GETARG_TEXT_PP(2));
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	/* This cluster's, first: the helper's log names the cluster. */
	snprintf(sysid, sizeof(sysid), UINT64_FORMAT, GetSystemIdentifier());
	args.keys = lcons(pstrdup("system_id"), args.keys);
	args.values = lcons(pstrdup(sysid), args.values);
	if (backup)
		add_arg(&args, "id", backup);

	/* The job's row, running, before anything starts (list and show only read). */
	record = strcmp(kind, "list") != 0 && strcmp(kind, "show") != 0;
	request_id = make_request_id();
	memset(&row, 0, sizeof(row));
	row.table = HT_JOBS;
	if (record)
	{
		history_set(&row, JC_REQUEST_ID, request_id);
		history_set(&row, JC_KIND, kind);
		history_set(&row, JC_BACKUP, backup);
		history_set(&row, JC_ARGS, args_text.data);
		history_set(&row, JC_STATUS, "running");
		history_set(&row, JC_STARTED_AT, timestamptz_to_str(GetCurrentTimestamp()));
		history_set(&row, JC_BACKEND_PID, psprintf("%d", MyProcPid));
		/* The caller, not the owner the SECURITY DEFINER functions run as. */
		history_set(&row, JC_USERNAME, GetUserNameFromId(GetOuterUserId(), false));
		history_arm_exit(HT_JOBS, request_id);
		history_set_phase(HP_JOB);
		if (!history_write(&row, WARNING, NULL))
		{
			history_set_phase(HP_IDLE);
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
					 errmsg("the %s job did not start because its row could not be recorded",
							kind)));
		}
	}

	res = palloc0(sizeof(JobResult));
	initStringInfo(&res->report);
	edata = run_job_caught(request_id, kind, &args, res, LIFECYCLE_WAIT_MS);
	if (edata)
	{
		if (record)
		{
			history_set(&row, JC_STATUS,
						edata->sqlerrcode == ERRCODE_QUERY_CANCELED ? "interrupted" : "error");
			history_set(&row, JC_FINISHED_AT, timestamptz_to_str(GetCurrentTimestamp()));
			history_set(&row, JC_ERROR_CODE,
						res->helper_error_code[0] ? res->helper_error_code :
						unpack_sql_state(edata->sqlerrcode));
			history_set(&row, JC_ERROR_MESSAGE, error_text(edata));
			(void) history_write(&row, WARNING, NULL);
			history_set_phase(HP_IDLE);
		}
		ReThrowError(edata);
	}

	rep = read_doc_safely(res->report.data);
	if (record)
	{
		history_set(&row, JC_STATUS, res->outcome);
		history_set(&row, JC_FINISHED_AT, timestamptz_to_str(GetCurrentTimestamp()));
		history_set(&row, JC_DURATION_MS, psprintf("%.3f", res->ms));
		if (res->exit_code >= 0)
			history_set(&row, JC_EXIT_CODE, psprintf("%d", res->exit_code));
		if (rep.valid)
			history_set(&row, JC_DETAIL, res->report.data);
		if (res->exit_code != 0)
		{
			history_set(&row, JC_ERROR_CODE, rep.error_code ? rep.error_code :
						strcmp(kind, "wait") == 0 && rep.outcome ? rep.outcome : res->outcome);
			history_set(&row, JC_ERROR_MESSAGE, rep.error_message ? rep.error_message :
						rep.reason ? rep.reason : res->message);
		}
		(void) history_write(&row, WARNING, NULL);
		history_set_phase(HP_IDLE);
	}
	/* A wait that saw the end: the backup's history row says so. */
	if (strcmp(kind, "wait") == 0 && rep.valid && rep.request_id && rep.outcome &&
		(strcmp(rep.outcome, "completed") == 0 || strcmp(rep.outcome, "failed") == 0))
	{
		HistoryRow	done;

		memset(&done, 0, sizeof(done));
		done.table = HT_COMPLETION;
		history_set(&done, CC_REQUEST_ID, rep.request_id);
		history_set(&done, CC_STATE, rep.outcome);
		history_set(&done, CC_AT, timestamptz_to_str(GetCurrentTimestamp()));
		history_set(&done, CC_REASON, rep.reason);
		(void) history_write(&done, WARNING, NULL);
	}

	memset(nulls, 0, sizeof(nulls));
	values[0] = CStringGetTextDatum(request_id);
	values[1] = CStringGetTextDatum(res->outcome);
	values[2] = Int32GetDatum(res->exit_code);
	nulls[2] = res->exit_code < 0;
	values[3] = rep.doc;
	nulls[3] = !rep.valid;
	values[4] = CStringGetTextDatum(res->message);
	nulls[4] = res->message[0] == '\0';
	values[5] = Float8GetDatum(res->ms);
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
