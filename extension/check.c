/*
 * check.c - ami_snapshot_check(): the preflight check (doc/sql.md,
 * doc/operations.md "Preflight check").  One row per check: name, ok,
 * detail, hint.  Nothing is frozen and no backup is started: the backend
 * only asks the helper (doc/protocol.md, "Check").
 *
 * image => 'register' | 'create' tests that AMI method's EC2 calls too.
 *
 * ami_snapshot_status() (at the end): the helper's live state, as
 * `ami-snapshot-helper --status` shows it, for another session.
 *
 * The rows the backend adds itself come first: the extension's version,
 * whether the helper answers, and whether it lets this user in (STATUS is
 * answered, or the connection closed unread: not in allowed_users).  A
 * helper that cannot be asked is a row, not an error, so that a check run
 * from a monitoring query always returns its verdict; cancel and
 * termination still end the call.
 */
#include "postgres.h"

#include <unistd.h>

#include "executor/spi.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "access/htup_details.h"
#include "catalog/pg_type.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/elog.h"
#include "utils/memutils.h"

#include "access/xlog.h"

#include "ami_snapshot.h"
#include "helper_client.h"
#include "standby.h"

PG_FUNCTION_INFO_V1(ami_snapshot_check);
PG_FUNCTION_INFO_V1(ami_snapshot_status);

static unsigned char check_frame[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];

typedef struct CheckOut
{
	Tuplestorestate *ts;
	TupleDesc	desc;
	int			nfailed;
} CheckOut;

/* One row; ok: "ok" true, "failed" false, "skipped" NULL. */
static void
add_row(CheckOut *out, const char *name, const char *result, const char *detail,
		const char *hint)
{
	Datum		values[4];
	bool		nulls[4] = {false, false, false, false};

	values[0] = CStringGetTextDatum(name);
	if (strcmp(result, "ok") == 0)
		values[1] = BoolGetDatum(true);
	else if (strcmp(result, "failed") == 0)
	{
		values[1] = BoolGetDatum(false);
		out->nfailed++;
	}
	else
	{
		values[1] = (Datum) 0;
		nulls[1] = true;
	}
	values[2] = CStringGetTextDatum(detail ? detail : "");
	if (hint && hint[0])
		values[3] = CStringGetTextDatum(hint);
	else
	{
		values[3] = (Datum) 0;
		nulls[3] = true;
	}
	tuplestore_putvalues(out->ts, out->desc, values, nulls);
}

/* The version of the extension installed in this database, or NULL. */
static char *
installed_version(void)
{
	char	   *v = NULL;

	if (SPI_connect() != SPI_OK_CONNECT)
		return NULL;
	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'ami_snapshot'",
					true, 1) == SPI_OK_SELECT && SPI_processed == 1)
	{
		char	   *s = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);

		if (s)
			v = MemoryContextStrdup(TopTransactionContext, s);
	}
	SPI_finish();
	return v;
}

/*
 * The error being handled, as text for a row, with cxt the current memory
 * context again; NULL when it must end the call (cancel, termination: the
 * caller re-throws).  The caught error
 * touched no shared state (a socket of our own), so carrying on is safe.
 */
static char *
caught_error(MemoryContext cxt)
{
	ErrorData  *e;
	MemoryContext old = MemoryContextSwitchTo(cxt);
	char	   *text;

	e = CopyErrorData();
	MemoryContextSwitchTo(old);
	if (e->sqlerrcode == ERRCODE_QUERY_CANCELED || e->sqlerrcode == ERRCODE_ADMIN_SHUTDOWN ||
		ProcDiePending || QueryCancelPending)
		return NULL;
	FlushErrorState();
	/* Left in cxt: the caller goes on allocating there, not in ErrorContext. */
	MemoryContextSwitchTo(cxt);
	text = e->detail ? psprintf("%s: %s", e->message, e->detail) : pstrdup(e->message);
	return text;
}

/* The rows of a CHECK_REPLY. */
static void
add_reply_rows(CheckOut *out, const struct amsp_msgview *m)
{
	size_t		n = amsp_count(m, AMSP_T_CHECK_NAME);
	size_t		i;

	for (i = 0; i < n; i++)
	{
		char		name[65],
					result[9],
					detail[AMSP_CHECK_TEXT + 1],
					hint[AMSP_CHECK_TEXT + 1];

		amsp_copy_str(amsp_get_nth(m, AMSP_T_CHECK_NAME, i), name, sizeof(name));
		amsp_copy_str(amsp_get_nth(m, AMSP_T_CHECK_RESULT, i), result, sizeof(result));
		amsp_copy_str(amsp_get_nth(m, AMSP_T_CHECK_DETAIL, i), detail, sizeof(detail));
		amsp_copy_str(amsp_get_nth(m, AMSP_T_CHECK_HINT, i), hint, sizeof(hint));
		add_row(out, name, result, detail, hint);
	}
}

/* The conversation: connect, STATUS, CHECK; every outcome a row. */
static void
ask_helper(CheckOut *out, MemoryContext cxt, const char *image)
{
	struct amsp_msgview *msg = palloc(sizeof(struct amsp_msgview));
	HelperConn *volatile hc = NULL;
	volatile int step = 0;
	List	   *tblspcs = tablespace_paths();
	char	   *walpath = wal_path();
	const char *user = GetUserNameFromId(GetUserId(), false);
	char	   *volatile problem = NULL;
	char		code[65] = "";
	struct amsp_writer w;
	ListCell   *lc;

	PG_TRY();
	{
		hc = helper_connect(helper_socket, request_timeout_ms);
		step = 1;
		amsp_begin(&w, check_frame, sizeof(check_frame), AMSP_STATUS);
		helper_send(hc, check_frame, amsp_end(&w), request_timeout_ms);
		helper_receive(hc, msg, AMSP_STATUS_REPLY, "status", request_timeout_ms);
		step = 2;
		amsp_begin(&w, check_frame, sizeof(check_frame), AMSP_CHECK);
		amsp_put_str(&w, AMSP_T_REQUEST_ID, make_request_id());
		amsp_put_str(&w, AMSP_T_PATH_DATA, DataDir);
		amsp_put_str(&w, AMSP_T_PATH_WAL, walpath);
		foreach(lc, tblspcs)
			amsp_put_str(&w, AMSP_T_PATH_TABLESPACE, lfirst(lc));
		if (image)
			amsp_put_str(&w, AMSP_T_IMAGE_METHOD, image);
		helper_set_check_asked(hc);
		helper_send(hc, check_frame, amsp_end(&w), request_timeout_ms);
		helper_receive(hc, msg, AMSP_CHECK_REPLY, "check", request_timeout_ms);
		step = 3;
	}
	PG_CATCH();
	{
		problem = caught_error(cxt);
		if (!problem)
		{
			helper_close(hc);
			PG_RE_THROW();
		}
		if (hc && helper_last_error_code(hc))
			strlcpy(code, helper_last_error_code(hc), sizeof(code));
		if (strcmp(code, "HelperTooOld") == 0)
			step = 4;
	}
	PG_END_TRY();
	helper_close(hc);

	if (step == 0)
	{
		add_row(out, "helper reachable", "failed", problem,
				psprintf("Start ami-snapshot-helper (systemctl start ami-snapshot-helper); ami_snapshot.helper_socket is \"%s\".",
						 helper_socket));
		return;
	}
	add_row(out, "helper reachable", "ok",
			psprintf("the helper answers at \"%s\"", helper_socket), NULL);
	if (step == 1)
	{
		add_row(out, "caller allowed", "failed",
				psprintf("the helper closed the connection before answering: the server's operating system user (uid %u) is not in its allowed_users (%s)",
						 (unsigned) geteuid(), problem),
				"Add the user PostgreSQL runs as to [helper] allowed_users in the helper's configuration and restart the helper.");
		return;
	}
	add_row(out, "caller allowed", "ok",
			psprintf("the helper accepts the server's operating system user (uid %u); database role \"%s\"",
					 (unsigned) geteuid(), user), NULL);
	if (step == 4)
	{
		add_row(out, "helper version", "failed", problem,
				"Upgrade ami-snapshot-helper to the version of the extension.");
		return;
	}
	if (step == 2)
	{
		add_row(out, "helper", "failed", problem,
				strcmp(code, "Busy") == 0 ?
				"Run the check again when the snapshot (or the other check) has ended." :
				"See the helper's log (journalctl -u ami-snapshot-helper).");
		return;
	}
	{
		char		version[33] = "";

		amsp_copy_str(amsp_get(msg, AMSP_T_HELPER_VERSION), version, sizeof(version));
		add_row(out, "helper version", "ok",
				psprintf("ami-snapshot-helper %s, extension library %s", version, AMIS_EXTVERSION),
				NULL);
	}
	add_reply_rows(out, msg);
}

/*
 * On a hot standby: would ami_snapshot() freeze it?  The primary is asked
 * as the call asks it (standby.c); nothing is reported but the row.
 */
static void
standby_row(CheckOut *out)
{
	StandbyInfo si;
	char	   *detail;

	standby_inspect(&si, true);
	detail = psprintf("a standby of %s (application_name \"%s\", sync_state %s): %s",
					  si.primary_host ? si.primary_host : "no primary",
					  si.application_name ? si.application_name : "",
					  si.sync_state ? si.sync_state : "not asked", si.how);
	if (si.unknown)
		add_row(out, "standby", "skipped", detail,
				"If the primary's synchronous_standby_names names this standby, its commits wait while the standby is frozen.");
	else if (si.primary_waits && !allow_synchronous_standby)
		add_row(out, "standby", "failed", detail,
				"ami_snapshot() refuses to freeze a standby the primary waits on: snapshot an asynchronous standby, use freeze => false, or SET ami_snapshot.allow_synchronous_standby = on.");
	else if (si.primary_waits)
		add_row(out, "standby", "ok",
				psprintf("%s; the primary's commits stall while it is frozen (ami_snapshot.allow_synchronous_standby is on)", detail),
				NULL);
	else
		add_row(out, "standby", "ok", detail, NULL);
}

Datum
ami_snapshot_check(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	CheckOut	out;
	char	   *installed;
	char	   *image = PG_ARGISNULL(0) ? NULL : text_to_cstring(PG_GETARG_TEXT_PP(0));

	if (image && strcmp(image, "register") != 0 && strcmp(image, "create") != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("image must be \"register\", \"create\" or NULL"),
				 errhint("With an image method, the check tests the calls of that AMI method too.")));
	InitMaterializedSRF(fcinfo, 0);
	out.ts = rsinfo->setResult;
	out.desc = rsinfo->setDesc;
	out.nfailed = 0;

	installed = installed_version();
	if (installed && strcmp(installed, AMIS_EXTVERSION) == 0)
		add_row(&out, "extension", "ok",
				psprintf("ami_snapshot %s (library and installed version)", installed), NULL);
	else
		add_row(&out, "extension", "failed",
				psprintf("the library is version %s, the extension installed in this database %s",
						 AMIS_EXTVERSION, installed ? installed : "(none)"),
				"Run ALTER EXTENSION ami_snapshot UPDATE.");
	if (RecoveryInProgress())
		standby_row(&out);
	ask_helper(&out, CurrentMemoryContext, image);
	return (Datum) 0;
}

/*
 * ami_snapshot_status(): one row, what the helper is doing now (STATUS,
 * doc/protocol.md): state (idle, busy, frozen, thaw-pending), the
 * operation's request id, name and step, how long it has kept writes
 * frozen so far, and the mount points frozen.  STATUS is answered at
 * once, also while frozen; this session writes nothing meanwhile.
 */
Datum
ami_snapshot_status(PG_FUNCTION_ARGS)
{
	struct amsp_msgview *msg = palloc(sizeof(struct amsp_msgview));
	HelperConn *volatile hc = NULL;
	TupleDesc	desc;
	Datum		values[6];
	bool		nulls[6] = {false, false, false, false, false, false};
	struct amsp_writer w;
	enum amsp_tag tags[4] = {AMSP_T_STATE, AMSP_T_REQUEST_ID, AMSP_T_NAME, AMSP_T_STEP};
	int			i;

	if (get_call_result_type(fcinfo, NULL, &desc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	PG_TRY();
	{
		hc = helper_connect(helper_socket, request_timeout_ms);
		amsp_begin(&w, check_frame, sizeof(check_frame), AMSP_STATUS);
		helper_send(hc, check_frame, amsp_end(&w), request_timeout_ms);
		helper_receive(hc, msg, AMSP_STATUS_REPLY, "status", request_timeout_ms);
		for (i = 0; i < 4; i++)
		{
			const struct amsp_field *f = amsp_get(msg, tags[i]);

			if (f)
				values[i] = PointerGetDatum(cstring_to_text_with_len((const char *) f->value,
																	 f->len));
			else
				nulls[i] = true;
		}
		if (amsp_get(msg, AMSP_T_FROZEN_USEC))
			values[4] = Float8GetDatum(amsp_u64(amsp_get(msg, AMSP_T_FROZEN_USEC)) / 1000.0);
		else
			nulls[4] = true;
		{
			size_t		n = amsp_count(msg, AMSP_T_MOUNT_POINT);
			Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));
			size_t		k;

			for (k = 0; k < n; k++)
			{
				const struct amsp_field *f = amsp_get_nth(msg, AMSP_T_MOUNT_POINT, k);

				elems[k] = PointerGetDatum(cstring_to_text_with_len((const char *) f->value,
																	f->len));
			}
			values[5] = PointerGetDatum(construct_array(elems, (int) n, TEXTOID, -1, false,
														TYPALIGN_INT));
		}
	}
	PG_FINALLY();
	{
		helper_close(hc);
	}
	PG_END_TRY();
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(BlessTupleDesc(desc), values, nulls)));
}
