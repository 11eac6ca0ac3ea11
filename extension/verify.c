/*
 * verify.c - SELECT * FROM ami_snapshot_verify(42)
 *
 * A restore drill of a backup (doc/verify.md), asked of the helper as a
 * job (doc/protocol.md, "Jobs"): the helper runs its own `ami-snapshot
 * verify --json` as root and answers with the report when it ends.  The
 * backend waits with WaitLatchOrSocket() and CHECK_FOR_INTERRUPTS(), so a
 * cancel, statement_timeout or pg_terminate_backend closes the connection,
 * and the helper stops the drill (which cleans up after itself) at once.
 *
 * Every call leaves a row in ami_snapshot_verification, written by the
 * history's background worker (history.h) so that it survives the ERROR a
 * failed verification raises; a backend that exits mid-drill has it marked
 * interrupted by the exit callback.
 */
#include "postgres.h"

#include <limits.h>
#include <math.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/datetime.h"
#include "utils/datum.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "ami_snapshot.h"
#include "helper_client.h"
#include "history.h"
#include "job.h"

PG_FUNCTION_INFO_V1(ami_snapshot_verify);

/* The helper's bounds (doc/protocol.md, "Jobs"; helper/root/job_args.c). */
#define MAX_CHECK_SQL 8192
#define MAX_DUMP_DBS 32
#define MAX_SECONDS 86400
/* The drill's own timeout ends it; this only guards against a helper that hangs. */
#define JOB_WAIT_MS (MAX_SECONDS * 1000 + 3600 * 1000)

void
add_arg(JobArgs *a, const char *key, const char *value)
{
	a->keys = lappend(a->keys, pstrdup(key));
	a->values = lappend(a->values, pstrdup(value));
}

/* A database name for check_db and dump_db: what the helper takes. */
static void
validate_dbname(const char *what, const char *s)
{
	size_t		n = strlen(s);
	const char *p;

	if (n < 1 || n > NAMEDATALEN - 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a database name of 1 to %d bytes", what, NAMEDATALEN - 1)));
	for (p = s; *p; p++)
		if ((unsigned char) *p < 0x20 || *p == 0x7f)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("%s must not contain control characters", what)));
}

/* An interval as whole seconds in [min, MAX_SECONDS]; its fraction rounds up. */
static long
interval_seconds(const char *what, Interval *iv, long min)
{
	double		secs;

	if (iv->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must not be given in months or years", what)));
	secs = (double) iv->day * SECS_PER_DAY + (double) iv->time / USECS_PER_SEC;
	if (secs < min || secs > MAX_SECONDS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between %ld seconds and 24 hours", what, min)));
	return (long) ceil(secs);
}

/* A request id as the helper takes it: 1 to 64 of [A-Za-z0-9-]. */
static void
validate_request_id(const char *s)
{
	size_t		n = strlen(s);
	const char *p;

	for (p = s; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			  (*p >= '0' && *p <= '9') || *p == '-'))
			break;
	if (n < 1 || n > 64 || *p)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("request_id must be 1 to 64 letters, digits and hyphens")));
}

/* The backup to drill, from the history. */
typedef struct Backup
{
	bool		found;
	int64		id;
	char	   *request_id;
	char	   *image_id;
	char	   *name;
	char	   *status;
} Backup;

/*
 * Looks the backup up in ami_snapshot_history, as the extension's owner:
 * the caller needs EXECUTE on this function, not SELECT on the history.
 * by: 0 id, 1 request id, 2 name (the latest succeeded of that name).
 */
static Backup
find_backup(int by, int64 id, const char *key)
{
	Backup		b;
	Oid			nsp;
	Oid			owner;
	Oid			save_userid;
	int			save_sec;
	const char *where[] = {
		"id OPERATOR(pg_catalog.=) $1",
		"request_id OPERATOR(pg_catalog.=) $2",
		"name OPERATOR(pg_catalog.=) $2 AND status OPERATOR(pg_catalog.=) 'succeeded'"
	};
	Oid			types[2] = {INT8OID, TEXTOID};
	Datum		values[2];
	char		nulls[2] = {' ', ' '};
	char	   *sql;

	memset(&b, 0, sizeof(b));
	history_extension_info(&nsp, &owner);
	sql = psprintf("SELECT id, request_id, image_id, name, status FROM %s.ami_snapshot_history "
				   "WHERE %s ORDER BY id DESC LIMIT 1",
				   quote_identifier(get_namespace_name(nsp)), where[by]);
	values[0] = Int64GetDatum(id);
	values[1] = key ? CStringGetTextDatum(key) : (Datum) 0;
	if (!key)
		nulls[1] = 'n';

	GetUserIdAndSecContext(&save_userid, &save_sec);
	SetUserIdAndSecContext(owner, save_sec | SECURITY_LOCAL_USERID_CHANGE);
	PG_TRY();
	{
		SPI_connect();
		if (SPI_execute_with_args(sql, 2, types, values, nulls, true, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not read ami_snapshot_history");
		if (SPI_processed == 1)
		{
			HeapTuple	t = SPI_tuptable->vals[0];
			TupleDesc	d = SPI_tuptable->tupdesc;
			bool		isnull;
			MemoryContext spi = MemoryContextSwitchTo(TopTransactionContext);

			b.found = true;
			b.id = DatumGetInt64(SPI_getbinval(t, d, 1, &isnull));
			MemoryContextSwitchTo(spi);
			b.request_id = SPI_getvalue(t, d, 2);
			b.image_id = SPI_getvalue(t, d, 3);
			b.name = SPI_getvalue(t, d, 4);
			b.status = SPI_getvalue(t, d, 5);
			/* Out of SPI's memory, into the caller's. */
			b.request_id = b.request_id ? MemoryContextStrdup(TopTransactionContext, b.request_id) : NULL;
			b.image_id = b.image_id ? MemoryContextStrdup(TopTransactionContext, b.image_id) : NULL;
			b.name = b.name ? MemoryContextStrdup(TopTransactionContext, b.name) : NULL;
			b.status = b.status ? MemoryContextStrdup(TopTransactionContext, b.status) : NULL;
		}
		SPI_finish();
	}
	PG_FINALLY();
	{
		SetUserIdAndSecContext(save_userid, save_sec);
	}
	PG_END_TRY();
	return b;
}

static unsigned char frame[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];

/* Sends the JOB and waits for its end; ERROR (helper's, cancel...) leaves hc to the caller. */
void
run_helper_job(HelperConn *hc, const char *request_id, const char *kind, JobArgs *args,
			   JobResult *res, int wait_ms)
{
	struct amsp_msgview *msg = palloc(sizeof(struct amsp_msgview));
	struct amsp_writer w;
	ListCell   *k;
	ListCell   *v;
	size_t		len;

	amsp_begin(&w, frame, sizeof(frame), AMSP_JOB);
	amsp_put_str(&w, AMSP_T_REQUEST_ID, request_id);
	amsp_put_str(&w, AMSP_T_JOB_KIND, kind);
	forboth(k, args->keys, v, args->values)
	{
		amsp_put_str(&w, AMSP_T_JOB_ARG_KEY, lfirst(k));
		amsp_put_str(&w, AMSP_T_JOB_ARG_VALUE, lfirst(v));
	}
	len = amsp_end(&w);
	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("ami_snapshot %s job request does not fit in a protocol frame", kind)));
	helper_set_job_asked(hc);
	helper_send(hc, frame, len, request_timeout_ms);
	/* JOB_STARTED (a helper without jobs closes the connection: HelperTooOld). */
	helper_receive(hc, msg, AMSP_JOB_STARTED, "job", request_timeout_ms);
	for (;;)
	{
		helper_receive(hc, msg, 0, strcmp(kind, "verify") == 0 ? "drill" : kind, wait_ms);
		if (msg->type == AMSP_JOB_OUTPUT)
		{
			const struct amsp_field *f = amsp_get(msg, AMSP_T_JOB_OUTPUT);

			appendBinaryStringInfo(&res->report, (const char *) f->value, f->len);
			continue;
		}
		if (msg->type != AMSP_JOB_RESULT)
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("unexpected %s message from ami_snapshot helper during the %s job",
							amsp_msg_name(msg->type), kind)));
		amsp_copy_str(amsp_get(msg, AMSP_T_JOB_OUTCOME), res->outcome, sizeof(res->outcome));
		if (amsp_get(msg, AMSP_T_ERROR_MESSAGE))
			amsp_copy_str(amsp_get(msg, AMSP_T_ERROR_MESSAGE), res->message,
						  sizeof(res->message));
		res->ms = amsp_u64(amsp_get(msg, AMSP_T_JOB_USEC)) / 1000.0;
		res->exit_code = amsp_get(msg, AMSP_T_JOB_EXIT) ?
			(int) amsp_u32(amsp_get(msg, AMSP_T_JOB_EXIT)) : -1;
		res->truncated = amsp_get(msg, AMSP_T_JOB_TRUNCATED) != NULL;
		return;
	}
}

ErrorData *
run_job_caught(const char *request_id, const char *kind, JobArgs *args, JobResult *res,
			   int wait_ms)
{
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;
	HelperConn *volatile hc = NULL;
	ErrorData  *volatile edata = NULL;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		hc = helper_connect(helper_socket, request_timeout_ms);
		run_helper_job(hc, request_id, kind, args, res, wait_ms);
		helper_close(hc);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		const char *code = hc ? helper_last_error_code(hc) : NULL;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		if (code)
			strlcpy(res->helper_error_code, code, sizeof(res->helper_error_code));
		/* The helper stops the job (SIGTERM: a drill cleans up after itself). */
		if (hc)
			helper_send_abort(hc, edata->message ? edata->message : "error");
		helper_close(hc);
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_END_TRY();
	return edata;
}

/* What the report says: drill id, recovered LSN, error, checks, failed checks. */
typedef struct ReportFields
{
	bool		valid;			/* the report is JSON */
	Datum		detail;			/* jsonb */
	char	   *drill_id;
	char	   *recovered_lsn;
	char	   *error;
	Datum		checks;			/* jsonb */
	bool		checks_null;
	int			checks_failed;
	char	   *first_failed;	/* "name: detail" */
} ReportFields;

static ReportFields
read_report(const char *report)
{
	ReportFields r;
	Oid			types[1] = {TEXTOID};
	Datum		values[1];
	int			rc;

	memset(&r, 0, sizeof(r));
	r.checks_null = true;
	if (!report[0])
		return r;
	values[0] = CStringGetTextDatum(report);
	/* Not JSON (a usage error, a command that never started): an ERROR the caller catches. */
	SPI_connect();
	/* Operators and functions from pg_catalog, whatever search_path says. */
	rc = SPI_execute_with_args(
			"WITH r(j) AS (SELECT CAST($1 AS pg_catalog.jsonb)) "
			"SELECT j, j OPERATOR(pg_catalog.->>) 'drill_id', "
			"j OPERATOR(pg_catalog.->>) 'recovered_lsn', j OPERATOR(pg_catalog.->>) 'error', "
			"j OPERATOR(pg_catalog.->) 'checks', "
			"(SELECT pg_catalog.count(*) FROM pg_catalog.jsonb_array_elements("
			"  COALESCE(j OPERATOR(pg_catalog.->) 'checks', CAST('[]' AS pg_catalog.jsonb))) c "
			"  WHERE c OPERATOR(pg_catalog.->>) 'ok' OPERATOR(pg_catalog.=) 'false')::pg_catalog.int4, "
			"(SELECT (c OPERATOR(pg_catalog.->>) 'name') OPERATOR(pg_catalog.||) ': ' "
			"  OPERATOR(pg_catalog.||) COALESCE(c OPERATOR(pg_catalog.->>) 'detail', '') "
			"  FROM pg_catalog.jsonb_array_elements("
			"  COALESCE(j OPERATOR(pg_catalog.->) 'checks', CAST('[]' AS pg_catalog.jsonb))) c "
			"  WHERE c OPERATOR(pg_catalog.->>) 'ok' OPERATOR(pg_catalog.=) 'false' LIMIT 1) "
			"FROM r",
			1, types, values, NULL, true, 1);
	if (rc == SPI_OK_SELECT && SPI_processed == 1)
	{
		HeapTuple	t = SPI_tuptable->vals[0];
		TupleDesc	d = SPI_tuptable->tupdesc;
		bool		isnull;
		MemoryContext spi = MemoryContextSwitchTo(TopTransactionContext);
		Datum		j = SPI_getbinval(t, d, 1, &isnull);
		Datum		c;

		r.valid = true;
		r.detail = datumCopy(j, false, -1);
		c = SPI_getbinval(t, d, 5, &isnull);
		r.checks_null = isnull;
		if (!isnull)
			r.checks = datumCopy(c, false, -1);
		r.checks_failed = DatumGetInt32(SPI_getbinval(t, d, 6, &isnull));
		MemoryContextSwitchTo(spi);
#define COPY_TEXT(field, col) \
		do { char *s_ = SPI_getvalue(t, d, col); \
			 r.field = s_ ? MemoryContextStrdup(TopTransactionContext, s_) : NULL; } while (0)
		COPY_TEXT(drill_id, 2);
		COPY_TEXT(recovered_lsn, 3);
		COPY_TEXT(error, 4);
		COPY_TEXT(first_failed, 7);
#undef COPY_TEXT
	}
	SPI_finish();
	return r;
}

/* The report as jsonb, or an invalid one when it is not JSON. */
static ReportFields
read_report_safely(const char *report)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	ReportFields r;

	memset(&r, 0, sizeof(r));
	r.checks_null = true;
	BeginInternalSubTransaction(NULL);
	PG_TRY();
	{
		r = read_report(report);
		ReleaseCurrentSubTransaction();
	}
	PG_CATCH();
	{
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		memset(&r, 0, sizeof(r));
		r.checks_null = true;
	}
	PG_END_TRY();
	MemoryContextSwitchTo(cxt);
	CurrentResourceOwner = owner;
	return r;
}

/* The verification's status from the job's outcome (a usage error or a kill is an error). */
static const char *
status_of(const char *outcome)
{
	static const char *const known[] = {"passed", "failed", "timed_out", "interrupted",
	"refused", "error"};
	int			i;

	for (i = 0; i < lengthof(known); i++)
		if (strcmp(outcome, known[i]) == 0)
			return known[i];
	return "error";
}

Datum
ami_snapshot_verify(PG_FUNCTION_ARGS)
{
	int			by = -1;
	int64		id = 0;
	char	   *key = NULL;
	JobArgs		args = {NIL, NIL};
	bool		dump = false;
	bool		launch = false;
	bool		error_on_failure;
	Backup		backup;
	char	   *request_id;
	HistoryRow	row;
	int64		vid = 0;
	JobResult  *res;
	ErrorData  *edata;
	ReportFields rep;
	const char *status;
	TupleDesc	tupdesc;
	Datum		values[10];
	bool		nulls[10];
	const char *what;

	/* Which backup: exactly one of id, request_id, name. */
	if (!PG_ARGISNULL(0))
	{
		by = 0;
		id = PG_GETARG_INT64(0);
	}
	if (!PG_ARGISNULL(1))
	{
		if (by >= 0)
			by = 99;
		else
			by = 1;
		key = text_to_cstring(PG_GETARG_TEXT_PP(1));
		if (by == 1)
			validate_request_id(key);
	}
	if (!PG_ARGISNULL(2))
	{
		by = by >= 0 ? 99 : 2;
		key = text_to_cstring(PG_GETARG_TEXT_PP(2));
		if (by == 2)
			validate_name(key);
	}
	if (by < 0 || by == 99)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("give exactly one of id, request_id and name"),
				 errdetail("id and request_id name a backup of ami_snapshot_history; name takes the latest succeeded backup of that name.")));

	/* The options, each checked before anything runs. */
	if (!PG_ARGISNULL(3))
	{
		char	   *sql = text_to_cstring(PG_GETARG_TEXT_PP(3));

		if (strlen(sql) < 1 || strlen(sql) > MAX_CHECK_SQL)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("check_sql must be 1 to %d bytes long", MAX_CHECK_SQL)));
		add_arg(&args, "check_sql", sql);
	}
	if (!PG_ARGISNULL(4))
	{
		char	   *db = text_to_cstring(PG_GETARG_TEXT_PP(4));

		if (PG_ARGISNULL(3))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("check_db goes with check_sql")));
		validate_dbname("check_db", db);
		add_arg(&args, "check_db", db);
	}
	if (!PG_ARGISNULL(5))
		add_arg(&args, "time_budget",
				psprintf("%ld", interval_seconds("time_budget", PG_GETARG_INTERVAL_P(5), 0)));
	if (!PG_ARGISNULL(6))
		add_arg(&args, "timeout",
				psprintf("%ld", interval_seconds("timeout", PG_GETARG_INTERVAL_P(6), 1)));
	if (PG_ARGISNULL(7) || PG_ARGISNULL(9) || PG_ARGISNULL(10) || PG_ARGISNULL(12))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("dump, dump_globals, launch and error_on_failure must not be null")));
	dump = PG_GETARG_BOOL(7);
	if (dump)
		add_arg(&args, "dump", "true");
	if (!PG_ARGISNULL(8))
	{
		ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(8);
		Datum	   *elems;
		bool	   *enulls;
		int			n;
		int			i;

		if (!dump)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("dump_db goes with dump => true")));
		if (ARR_NDIM(arr) > 1)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("dump_db must be a one-dimensional array")));
		deconstruct_array(arr, TEXTOID, -1, false, TYPALIGN_INT, &elems, &enulls, &n);
		if (n > MAX_DUMP_DBS)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("dump_db names at most %d databases", MAX_DUMP_DBS)));
		for (i = 0; i < n; i++)
		{
			char	   *db;

			if (enulls[i])
				ereport(ERROR,
						(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
						 errmsg("dump_db must not contain nulls")));
			db = TextDatumGetCString(elems[i]);
			validate_dbname("dump_db", db);
			add_arg(&args, "dump_db", db);
		}
	}
	if (PG_GETARG_BOOL(9))
	{
		if (!dump)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("dump_globals goes with dump => true")));
		add_arg(&args, "dump_globals", "true");
	}
	launch = PG_GETARG_BOOL(10);
	if (launch && (!PG_ARGISNULL(3) || dump))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("check_sql and dump are for the snapshot drill, not launch => true"),
				 errdetail("The AMI drill boots an instance from the AMI; it checks its status and optionally a TCP port.")));
	if (!PG_ARGISNULL(11))
	{
		int32		port = PG_GETARG_INT32(11);

		if (!launch)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("tcp_port goes with launch => true")));
		if (port < 1 || port > 65535)
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("tcp_port must be between 1 and 65535")));
		add_arg(&args, "tcp_port", psprintf("%d", port));
	}
	error_on_failure = PG_GETARG_BOOL(12);
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	/* The backup. */
	backup = find_backup(by, id, key);
	if (!backup.found && by == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("no backup with id " INT64_FORMAT " in ami_snapshot_history", id)));
	if (!backup.found && by == 2)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("no succeeded backup named \"%s\" in ami_snapshot_history", key)));
	if (backup.found && strcmp(backup.status, "succeeded") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("backup " INT64_FORMAT " did not succeed (status %s); there is nothing to verify",
						backup.id, backup.status)));
	if (!backup.found)
	{
		/* A request id of a set taken elsewhere: the helper finds it by its tags. */
		backup.request_id = key;
	}
	if (launch && !backup.image_id)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("launch => true needs a backup that is an AMI"),
				 errdetail("Backup %s is a snapshot set.", backup.request_id)));
	if (launch)
		add_arg(&args, "launch", "true");
	/* The selector first, for the helper's log. */
	if (backup.image_id)
	{
		args.keys = lcons(pstrdup("image"), args.keys);
		args.values = lcons(pstrdup(backup.image_id), args.values);
		what = psprintf("AMI %s", backup.image_id);
	}
	else
	{
		args.keys = lcons(pstrdup("request_id"), args.keys);
		args.values = lcons(pstrdup(backup.request_id), args.values);
		what = psprintf("backup %s", backup.request_id);
	}

	/* The verification's row, running, before anything starts. */
	request_id = make_request_id();
	memset(&row, 0, sizeof(row));
	row.table = HT_VERIFICATIONS;
	history_set(&row, VC_REQUEST_ID, request_id);
	if (backup.found)
		history_set(&row, VC_BACKUP_ID, psprintf(INT64_FORMAT, backup.id));
	history_set(&row, VC_BACKUP_REQUEST_ID, backup.request_id);
	history_set(&row, VC_IMAGE_ID, backup.image_id);
	history_set(&row, VC_LAUNCH, launch ? "true" : "false");
	history_set(&row, VC_STATUS, "running");
	history_set(&row, VC_STARTED_AT, timestamptz_to_str(GetCurrentTimestamp()));
	history_set(&row, VC_BACKEND_PID, psprintf("%d", MyProcPid));
	history_set(&row, VC_USERNAME, GetUserNameFromId(GetUserId(), false));
	history_arm_exit(HT_VERIFICATIONS, request_id);
	history_set_phase(HP_VERIFYING);
	if (!history_write(&row, WARNING, &vid))
	{
		history_set_phase(HP_IDLE);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("ami_snapshot_verify() did not start because its row could not be recorded")));
	}

	res = palloc0(sizeof(JobResult));
	initStringInfo(&res->report);
	edata = run_job_caught(request_id, "verify", &args, res, JOB_WAIT_MS);
	if (edata)
	{
		history_set(&row, VC_STATUS,
					edata->sqlerrcode == ERRCODE_QUERY_CANCELED ? "interrupted" : "error");
		history_set(&row, VC_FINISHED_AT, timestamptz_to_str(GetCurrentTimestamp()));
		history_set(&row, VC_ERROR_CODE,
					res->helper_error_code[0] ? res->helper_error_code :
					unpack_sql_state(edata->sqlerrcode));
		history_set(&row, VC_ERROR_MESSAGE, error_text(edata));
		(void) history_write(&row, WARNING, NULL);
		history_set_phase(HP_IDLE);
		ReThrowError(edata);
	}

	/* The verdict, into the row. */
	rep = read_report_safely(res->report.data);
	status = status_of(res->outcome);
	history_set(&row, VC_STATUS, status);
	history_set(&row, VC_FINISHED_AT, timestamptz_to_str(GetCurrentTimestamp()));
	history_set(&row, VC_DURATION_MS, psprintf("%.3f", res->ms));
	history_set(&row, VC_DRILL_ID, rep.drill_id);
	history_set(&row, VC_RECOVERED_LSN, rep.recovered_lsn);
	if (rep.valid)
	{
		history_set(&row, VC_CHECKS_FAILED, psprintf("%d", rep.checks_failed));
		history_set(&row, VC_DETAIL, res->report.data);
	}
	if (strcmp(status, "passed") != 0)
	{
		const char *why = rep.first_failed ? rep.first_failed :
			rep.error ? rep.error : res->message[0] ? res->message : res->outcome;

		history_set(&row, VC_ERROR_CODE,
					strcmp(status, "failed") == 0 ? "VerifyFailed" :
					strcmp(status, "timed_out") == 0 ? "VerifyTimedOut" :
					strcmp(status, "refused") == 0 ? "VerifyRefused" :
					strcmp(status, "interrupted") == 0 ? "VerifyInterrupted" : "VerifyError");
		history_set(&row, VC_ERROR_MESSAGE, rep.error ? rep.error : why);
	}
	(void) history_write(&row, WARNING, NULL);
	history_set_phase(HP_IDLE);

	if (strcmp(status, "passed") != 0 && error_on_failure)
	{
		const char *why = rep.first_failed ? rep.first_failed :
			rep.error ? rep.error : res->message[0] ? res->message : res->outcome;

		ereport(ERROR,
				(errcode(strcmp(status, "failed") == 0 ? ERRCODE_DATA_CORRUPTED :
						 ERRCODE_EXTERNAL_ROUTINE_EXCEPTION),
				 errmsg("verification of %s %s: %s", what,
						strcmp(status, "failed") == 0 ? "failed" :
						strcmp(status, "timed_out") == 0 ? "timed out" :
						strcmp(status, "refused") == 0 ? "was refused" :
						strcmp(status, "interrupted") == 0 ? "was interrupted" :
						"could not run", why),
				 errdetail("Drill %s; ami_snapshot_verification id " INT64_FORMAT " has every check.",
						   rep.drill_id ? rep.drill_id : "(none)", vid),
				 errhint("error_on_failure => false returns the row instead of raising an error.")));
	}

	memset(nulls, 0, sizeof(nulls));
	values[0] = Int64GetDatum(vid);
	values[1] = CStringGetTextDatum(request_id);
	values[2] = Int64GetDatum(backup.id);
	nulls[2] = !backup.found;
	values[3] = CStringGetTextDatum(status);
	values[4] = rep.drill_id ? CStringGetTextDatum(rep.drill_id) : (Datum) 0;
	nulls[4] = rep.drill_id == NULL;
	nulls[5] = true;
	if (rep.recovered_lsn)
	{
		/* "X/X", as pg_lsn's input (whose C entry differs between majors). */
		uint32		hi;
		uint32		lo;
		char		rest;

		if (sscanf(rep.recovered_lsn, "%X/%X%c", &hi, &lo, &rest) == 2)
		{
			values[5] = LSNGetDatum(((uint64) hi << 32) | lo);
			nulls[5] = false;
		}
	}
	values[6] = Float8GetDatum(res->ms);
	values[7] = Int32GetDatum(rep.checks_failed);
	nulls[7] = !rep.valid;
	values[8] = rep.checks;
	nulls[8] = rep.checks_null;
	values[9] = rep.detail;
	nulls[9] = !rep.valid;
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
