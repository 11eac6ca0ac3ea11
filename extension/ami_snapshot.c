/*
 * ami_snapshot.c - SELECT * FROM ami_snapshot('nightly')
 *
 * The extension side of the consistency protocol (doc/design.md, "The
 * consistency protocol"; the messages are in doc/protocol.md):
 *
 *  1. PREPARE: the helper resolves instance, credentials and the volumes
 *     under the data directory, pg_wal and every tablespace.
 *  2. A non-exclusive backup starts with a fast checkpoint.  From here on
 *     it is always stopped or aborted, as in basebackup.c's
 *     perform_base_backup(): PG_ENSURE_ERROR_CLEANUP covers ERROR (cancel,
 *     statement_timeout, helper failure) and backend exit.
 *  3. SNAPSHOT: the helper freezes, calls CreateSnapshots once, thaws, and
 *     answers once the snapshots are pending.
 *  4. The backup stops; FINISH hands the backup label to the helper, which
 *     tags the snapshots with it.
 *
 * Every attempt leaves a row in ami_snapshot_history (see history.h for why
 * it is written by a background worker).
 */
#include "postgres.h"

#include <sys/stat.h>
#include <unistd.h>

#include "access/htup_details.h"
#include "access/xact.h"
#include "access/xlog.h"
#if PG_VERSION_NUM >= 160000
#include "access/xlogbackup.h"
#endif
#include "catalog/pg_type.h"
#include "commands/extension.h"
#include "common/string.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "storage/ipc.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/lsyscache.h"
#include "utils/pg_lsn.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "ami_snapshot.h"
#include "config_capture.h"
#include "helper_client.h"
#include "history.h"
#include "standby.h"

#ifdef PG_MODULE_MAGIC_EXT
/* PostgreSQL 18 on: name and version in pg_get_loaded_modules(). */
PG_MODULE_MAGIC_EXT(.name = "ami_snapshot", .version = AMIS_EXTVERSION);
#else
PG_MODULE_MAGIC;
#endif

#define DEFAULT_SOCKET "/run/ami-snapshot/helper.sock"
#define MAX_TABLESPACES 32

char	   *helper_socket = NULL;
int			request_timeout_ms = 120000;
static bool wait_for_archive = true;
static bool progress = true;
static bool default_freeze = true;

PG_FUNCTION_INFO_V1(ami_snapshot);

void		_PG_init(void);

void
_PG_init(void)
{
	DefineCustomStringVariable("ami_snapshot.helper_socket",
							   "Path of the ami-snapshot-helper UNIX socket.",
							   NULL,
							   &helper_socket,
							   DEFAULT_SOCKET,
							   PGC_SUSET,
							   0,
							   NULL, NULL, NULL);
	DefineCustomIntVariable("ami_snapshot.request_timeout",
							"How long to wait for each answer of the helper.",
							"Covers path resolution and the preflight call, the "
							"snapshot call (the helper thaws after its own, shorter "
							"freeze_timeout) and tagging.",
							&request_timeout_ms,
							120000, 1000, INT_MAX,
							PGC_USERSET,
							GUC_UNIT_MS,
							NULL, NULL, NULL);
	DefineCustomBoolVariable("ami_snapshot.wait_for_archive",
							 "Wait until the backup's WAL is archived when archiving is on.",
							 "Needed for point-in-time recovery from the snapshot.",
							 &wait_for_archive,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("ami_snapshot.progress",
							 "Report each step of ami_snapshot() as a NOTICE.",
							 "Prepared, backup started, frozen and snapshots pending, thawed, backup stopped, tagged; sent between the helper's steps, never while filesystems are frozen.",
							 &progress,
							 true,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
	standby_define_gucs();
	DefineCustomBoolVariable("ami_snapshot.default_freeze",
							 "Freeze the filesystems when ami_snapshot() is called without freeze.",
							 "Off: a crash-consistent set taken with no write stalled; see the documentation for when the freeze still matters.",
							 &default_freeze,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
	DefineCustomBoolVariable("ami_snapshot.capture_config",
							 "Copy the configuration files outside the data directory into it before each backup.",
							 "They travel with the snapshot set, and the restore command puts them back.",
							 &capture_config,
							 true,
							 PGC_SUSET,
							 0,
							 NULL, NULL, NULL);
#if PG_VERSION_NUM >= 150000
	MarkGUCPrefixReserved("ami_snapshot");
#else
	EmitWarningsOnPlaceholders("ami_snapshot");
#endif
}

/*
 * Names become the Name tag now and AMI names later, so they follow EC2's
 * AMI name rules, which are stricter than the tag value rules: 3 to 128
 * characters of letters, digits, spaces and ( ) [ ] . / - ' @ _
 */
void
validate_name(const char *name)
{
	size_t		len = strlen(name);
	const char *p;

	if (len < 3 || len > 128)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("snapshot name must be between 3 and 128 characters long"),
				 errdetail("The name \"%s\" has %zu characters.", name, len)));
	for (p = name; *p; p++)
	{
		unsigned char c = (unsigned char) *p;

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			  (c >= '0' && c <= '9') || strchr("()[] ./-'@_", c)))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("snapshot name contains an invalid character at position %d",
							(int) (p - name) + 1),
					 errdetail("Names may contain letters, digits, spaces and ( ) [ ] . / - ' @ _ (EC2's rules for AMI names).")));
	}
}

char *
error_text(const ErrorData *edata)
{
	StringInfoData msg;

	initStringInfo(&msg);
	appendStringInfoString(&msg, edata->message);
	if (edata->detail)
		appendStringInfo(&msg, "\nDETAIL: %s", edata->detail);
	if (edata->hint)
		appendStringInfo(&msg, "\nHINT: %s", edata->hint);
	return msg.data;
}

char *
make_request_id(void)
{
	uint8		b[16];
	char	   *s = palloc(37);

	if (!pg_strong_random(b, sizeof(b)))
		ereport(ERROR,
				(errcode(ERRCODE_INTERNAL_ERROR),
				 errmsg("could not generate a request id")));
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(s, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x",
			 b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9],
			 b[10], b[11], b[12], b[13], b[14], b[15]);
	return s;
}

/* Real path of pg_wal (it may be a symlink to another filesystem). */
char *
wal_path(void)
{
	char		path[MAXPGPATH];
	char	   *real;

	snprintf(path, sizeof(path), "%s/pg_wal", DataDir);
	real = realpath(path, NULL);
	if (!real)
		ereport(ERROR,
				(errcode_for_file_access(),
				 errmsg("could not resolve \"%s\": %m", path)));
	strlcpy(path, real, sizeof(path));
	free(real);
	return pstrdup(path);
}

/*
 * Locations of all tablespaces, from the symlinks in pg_tblspc.  Not
 * inlined into run_snapshot(): its locals need not survive a longjmp.
 */
pg_noinline List *
tablespace_paths(void)
{
	List	   *result = NIL;
	DIR		   *dir;
	struct dirent *de;
	char		base[MAXPGPATH];

	snprintf(base, sizeof(base), "%s/pg_tblspc", DataDir);
	dir = AllocateDir(base);
	while ((de = ReadDir(dir, base)) != NULL)
	{
		char		link[MAXPGPATH];
		char		target[MAXPGPATH];
		ssize_t		n;

		if (de->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%s", base, de->d_name);
		n = readlink(link, target, sizeof(target) - 1);
		if (n < 0)
			continue;			/* in-place tablespace: inside the data directory */
		target[n] = '\0';
		result = lappend(result, pstrdup(target));
	}
	FreeDir(dir);
	if (list_length(result) > MAX_TABLESPACES)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("ami_snapshot supports at most %d tablespaces", MAX_TABLESPACES)));
	return result;
}

static char *
lsn_text(XLogRecPtr lsn)
{
	return psprintf("%X/%X", LSN_FORMAT_ARGS(lsn));
}

/*
 * One step of the call as a NOTICE (ami_snapshot.progress).  Only ever
 * between two of the helper's answers: while the helper freezes, the
 * backend waits for PENDING, so a client slow to read notices delays the
 * backend, never a thaw.
 */
static void
report_step(const char *fmt,...) pg_attribute_printf(1, 2);

static void
report_step(const char *fmt,...)
{
	char		buf[1024];
	va_list		ap;

	if (!progress)
		return;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	ereport(NOTICE,
			(errcode(ERRCODE_SUCCESSFUL_COMPLETION),
			 errmsg("ami_snapshot: %s", buf)));
}

/* "a, b, c" of a list of strings. */
static char *
joined(List *items)
{
	StringInfoData s;
	ListCell   *lc;

	initStringInfo(&s);
	foreach(lc, items)
		appendStringInfo(&s, "%s%s", s.len ? ", " : "", (char *) lfirst(lc));
	return s.data;
}

/* A text[] literal from a list of C strings (NULL pointers are NULLs). */
static char *
text_array_literal(List *items)
{
	StringInfoData s;
	ListCell   *lc;

	initStringInfo(&s);
	appendStringInfoChar(&s, '{');
	foreach(lc, items)
	{
		const char *p;

		if (foreach_current_index(lc) > 0)
			appendStringInfoChar(&s, ',');
		if (lfirst(lc) == NULL)
		{
			appendStringInfoString(&s, "NULL");
			continue;
		}
		appendStringInfoChar(&s, '"');
		for (p = lfirst(lc); *p; p++)
		{
			if (*p == '"' || *p == '\\')
				appendStringInfoChar(&s, '\\');
			appendStringInfoChar(&s, *p);
		}
		appendStringInfoChar(&s, '"');
	}
	appendStringInfoChar(&s, '}');
	return s.data;
}

static Datum
text_array_datum(List *items)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(list_length(items), 1));
	ListCell   *lc;
	int			i = 0;

	foreach(lc, items)
		elems[i++] = CStringGetTextDatum(lfirst(lc));
	return PointerGetDatum(construct_array(elems, i, TEXTOID, -1, false, TYPALIGN_INT));
}

static List *
strings_of(const struct amsp_msgview *m, enum amsp_tag tag)
{
	List	   *result = NIL;
	size_t		i;

	for (i = 0; i < amsp_count(m, tag); i++)
	{
		const struct amsp_field *f = amsp_get_nth(m, tag, i);

		result = lappend(result, pnstrdup((const char *) f->value, f->len));
	}
	return result;
}

static void
send_or_error(HelperConn *hc, struct amsp_writer *w)
{
	size_t		len = amsp_end(w);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("ami_snapshot request does not fit in a protocol frame")));
	helper_send(hc, w->buf, len, request_timeout_ms);
}

/* Bytes of the final row's values beyond those known when FINISH goes. */
#define FINAL_ROW_SLACK 1024

/* State kept across the operation for the history and the result row. */
typedef struct SnapshotRun
{
	HistoryRow	row;
	char	   *instance_id;
	List	   *volume_ids;
	List	   *snapshot_ids;
	XLogRecPtr	start_lsn;
	XLogRecPtr	stop_lsn;
	TimeLineID	tli;
	double		frozen_ms;
	bool		freeze;			/* the filesystems are frozen for the call */
	bool		have_snapshots;
	char		helper_error_code[65];	/* the helper's/EC2's code, if it failed */
	/* What the helper's ERROR reported: snapshots EC2 made anyway, with volumes */
	List	   *failed_snapshot_ids;
	List	   *failed_snapshot_volumes;
	bool		have_frozen_ms;
	/* An AMI: the method asked for, and the image made (or half made) */
	const char *image_method;
	bool		allow_product_code_loss;
	char	   *image_id;
	/* On a hot standby: no history row (read-only), the primary inspected */
	bool		standby;
	StandbyInfo standby_info;
	/* The start row, written while the helper prepares; its id */
	HistoryWrite start_write;
	/* The final row's worker, connecting while the helper tags */
	HistoryWrite final_write;
	int64		history_id;
	bool		history_lost;	/* the start row could not be written */
} SnapshotRun;

/* The history's exit phase, on a primary only (a standby's is read-only). */
static void
set_phase(const SnapshotRun *run, HistoryPhase phase)
{
	if (!run->standby)
		history_set_phase(phase);
}

/* The image id a message carries, copied into run (or nothing). */
static void
remember_image(SnapshotRun *run, const struct amsp_msgview *m, MemoryContext cxt)
{
	const struct amsp_field *f = amsp_get(m, AMSP_T_IMAGE_ID);

	if (f)
		run->image_id = MemoryContextStrdup(cxt, pnstrdup((const char *) f->value, f->len));
}

/*
 * Keeps what the helper's ERROR said about the failed operation, for the
 * history row: instance, region, volumes, the snapshots EC2 created anyway
 * and how long writes were frozen.  In PG_CATCH: copies into cxt.
 */
static void
remember_failure(SnapshotRun *run, const struct amsp_msgview *e, MemoryContext cxt)
{
	MemoryContext old;

	if (!e)
		return;
	old = MemoryContextSwitchTo(cxt);
	if (amsp_get(e, AMSP_T_INSTANCE_ID))
	{
		char		buf[65];

		amsp_copy_str(amsp_get(e, AMSP_T_INSTANCE_ID), buf, sizeof(buf));
		history_set(&run->row, HC_INSTANCE_ID, buf);
		if (!run->instance_id)
			run->instance_id = pstrdup(buf);
		if (amsp_get(e, AMSP_T_REGION))
		{
			amsp_copy_str(amsp_get(e, AMSP_T_REGION), buf, sizeof(buf));
			history_set(&run->row, HC_REGION, buf);
		}
	}
	if (amsp_count(e, AMSP_T_VOLUME_ID) > 0)
		run->volume_ids = strings_of(e, AMSP_T_VOLUME_ID);
	if (amsp_count(e, AMSP_T_SNAPSHOT_ID) > 0 &&
		amsp_count(e, AMSP_T_SNAPSHOT_ID) == amsp_count(e, AMSP_T_SNAPSHOT_VOLUME))
	{
		run->failed_snapshot_ids = strings_of(e, AMSP_T_SNAPSHOT_ID);
		run->failed_snapshot_volumes = strings_of(e, AMSP_T_SNAPSHOT_VOLUME);
	}
	if (amsp_get(e, AMSP_T_FREEZE_USEC))
	{
		run->frozen_ms = amsp_u64(amsp_get(e, AMSP_T_FREEZE_USEC)) / 1000.0;
		run->have_frozen_ms = true;
	}
	remember_image(run, e, cxt);
	MemoryContextSwitchTo(old);
}

/*
 * For the history of a failed attempt: volume_ids[i] is a volume of the
 * operation and snapshot_ids[i] its snapshot, NULL if EC2 made none; a
 * snapshot of a volume the helper did not ask for comes last with its
 * volume.  Returns the two text[] literals.
 */
static void
pair_failed_snapshots(SnapshotRun *run, char **volumes, char **snapshots)
{
	List	   *vols = list_copy(run->volume_ids);
	List	   *snaps = NIL;
	int			nvol = list_length(vols);
	int			nsnap = list_length(run->failed_snapshot_ids);
	int			i;
	int			j;

	for (i = 0; i < nvol; i++)
	{
		char	   *found = NULL;

		for (j = 0; j < nsnap && !found; j++)
			if (strcmp(list_nth(run->failed_snapshot_volumes, j), list_nth(vols, i)) == 0)
				found = list_nth(run->failed_snapshot_ids, j);
		snaps = lappend(snaps, found);
	}
	for (j = 0; j < nsnap; j++)
	{
		if (list_member_ptr(snaps, list_nth(run->failed_snapshot_ids, j)))
			continue;
		vols = lappend(vols, list_nth(run->failed_snapshot_volumes, j));
		snaps = lappend(snaps, list_nth(run->failed_snapshot_ids, j));
	}
	*volumes = text_array_literal(vols);
	*snapshots = text_array_literal(snaps);
}

/* The requests to the helper are built here, one at a time. */
static unsigned char frame[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];

/*
 * Steps 2 to 4: the backup starts (fast checkpoint), the helper freezes,
 * snapshots and thaws, the backup stops.  Returns the backup label; the
 * tablespace map goes to tblspcmap.  A function of its own so that
 * PG_ENSURE_ERROR_CLEANUP's PG_TRY is not nested in run_snapshot()'s, whose
 * variables it would shadow (-Wshadow=compatible-local, PostgreSQL 16 on).
 */
static char *
backup_and_snapshot(SnapshotRun *run, HelperConn *hc, struct amsp_msgview *msg,
					const char *name, List *tblspcs, StringInfo tblspcmap)
{
	struct amsp_writer w;
	List	   *backup_tblspcs = NIL;
	TimeLineID	starttli;
	TimeLineID	stoptli;
	char	   *label_text;
	bool		waitforarchive;
#if PG_VERSION_NUM >= 160000
	BackupState *state = (BackupState *) palloc0(sizeof(BackupState));
#else
	StringInfo	labelfile = makeStringInfo();
#endif

	/* 2. Start the backup (fast checkpoint). */
#if PG_VERSION_NUM >= 160000
	do_pg_backup_start(name, true, &backup_tblspcs, state, tblspcmap);
	run->start_lsn = state->startpoint;
	starttli = state->starttli;
#else
	run->start_lsn = do_pg_backup_start(name, true, &starttli, labelfile,
										&backup_tblspcs, tblspcmap);
#endif
	report_step("backup started at %s (timeline %u)", lsn_text(run->start_lsn), starttli);
	/*
	 * Once the backup has started, any failure must abort it, including
	 * backend exit: see perform_base_backup() in basebackup.c.
	 */
	PG_ENSURE_ERROR_CLEANUP(do_pg_abort_backup, BoolGetDatum(false));
	{
		set_phase(run, HP_BACKUP_RUNNING);
		run->tli = starttli;
		if (list_length(backup_tblspcs) != list_length(tblspcs))
			ereport(ERROR,
					(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
					 errmsg("the set of tablespaces changed while the snapshot was being prepared"),
					 errhint("Run ami_snapshot() again.")));

		/* 3. SNAPSHOT: freeze, CreateSnapshots, thaw; pending. */
		amsp_begin(&w, frame, sizeof(frame), AMSP_SNAPSHOT);
		amsp_put_str(&w, AMSP_T_START_LSN, lsn_text(run->start_lsn));
		amsp_put_u32(&w, AMSP_T_TIMELINE, starttli);
		send_or_error(hc, &w);
		helper_receive(hc, msg, AMSP_PENDING, "snapshot", request_timeout_ms);
		run->snapshot_ids = strings_of(msg, AMSP_T_SNAPSHOT_ID);
		run->have_snapshots = true;
		run->frozen_ms = amsp_u64(amsp_get(msg, AMSP_T_FREEZE_USEC)) / 1000.0;
		if (run->freeze)
			report_step("frozen; snapshots pending: %s", joined(run->snapshot_ids));
		else
			report_step("not frozen (freeze => false); snapshots pending: %s",
						joined(run->snapshot_ids));
		if (run->freeze)
			report_step("thawed in %.1f ms", run->frozen_ms);
		if (amsp_count(msg, AMSP_T_SNAPSHOT_VOLUME) != list_length(run->snapshot_ids))
			ereport(ERROR,
					(errcode(ERRCODE_PROTOCOL_VIOLATION),
					 errmsg("invalid response from ami_snapshot helper: snapshot and volume counts differ")));
		run->volume_ids = strings_of(msg, AMSP_T_SNAPSHOT_VOLUME);
		remember_image(run, msg, CurrentMemoryContext);

		/*
		 * 4. Stop the backup.  PostgreSQL waits for the WAL to be archived
		 * on a primary with archiving on, and on a standby only with
		 * archive_mode = always (do_pg_backup_stop()): with "on", a
		 * standby archives nothing, the primary does.
		 */
		if (run->standby)
		{
			waitforarchive = wait_for_archive && XLogArchivingAlways();
			if (wait_for_archive && XLogArchivingActive() && !XLogArchivingAlways())
				report_step("archive_mode is \"on\" on this standby: the primary archives the WAL, the backup stop does not wait for it");
		}
		else
			waitforarchive = wait_for_archive && XLogArchivingActive();
#if PG_VERSION_NUM >= 160000
		do_pg_backup_stop(state, waitforarchive);
		run->stop_lsn = state->stoppoint;
		stoptli = state->stoptli;
		label_text = build_backup_content(state, false);
#else
		run->stop_lsn = do_pg_backup_stop(labelfile->data, waitforarchive, &stoptli);
		label_text = labelfile->data;
#endif
		report_step("backup stopped at %s%s%s", lsn_text(run->stop_lsn),
					run->standby ? " (the standby's replay position)" : "",
					waitforarchive ? ", its WAL archived" : "");
	}
	PG_END_ENSURE_ERROR_CLEANUP(do_pg_abort_backup, BoolGetDatum(false));
	set_phase(run, HP_BACKUP_STOPPED);
	(void) stoptli;
	return label_text;
}

/*
 * The row as it ends (succeeded or failed): through the final row's worker
 * waiting since FINISH, if there is one and it takes it, else a new one.
 */
static void
write_final_row(SnapshotRun *run)
{
	if (history_write_go(&run->final_write, &run->row) &&
		(history_write_end(&run->final_write, WARNING, NULL) || !run->final_write.untaken))
		return;
	(void) history_write(&run->row, WARNING, NULL);
}

/*
 * Waits for the start row begun in ami_snapshot(); without it the call does
 * not go on (nothing is frozen or started yet: PREPARE only asked EC2).
 */
static void
end_start_row(SnapshotRun *run)
{
	if (!run->start_write.active)
		return;
	if (!history_write_end(&run->start_write, WARNING, &run->history_id))
	{
		run->history_lost = true;
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("ami_snapshot() did not start because its history could not be recorded")));
	}
}

static void
run_snapshot(SnapshotRun *run, const char *name, bool freeze, const char *request_id)
{
	struct amsp_msgview *msg = palloc(sizeof(struct amsp_msgview));
	struct amsp_writer w;
	HelperConn *volatile hc = NULL;
	List	   *tblspcs = tablespace_paths();
	char	   *walpath = wal_path();
	MemoryContext mcxt = CurrentMemoryContext;
	char		sysid[32];
	ListCell   *lc;

	snprintf(sysid, sizeof(sysid), UINT64_FORMAT, GetSystemIdentifier());
	run->freeze = freeze;

	PG_TRY();
	{
		StringInfo	tblspcmap = makeStringInfo();
		char	   *label_text;

		hc = helper_connect(helper_socket, request_timeout_ms);

		/* 1. PREPARE: nothing blocks the database yet. */
		amsp_begin(&w, frame, sizeof(frame), AMSP_PREPARE);
		amsp_put_str(&w, AMSP_T_REQUEST_ID, request_id);
		amsp_put_str(&w, AMSP_T_NAME, name);
		amsp_put_u8(&w, AMSP_T_FREEZE, freeze ? 1 : 0);
		amsp_put_str(&w, AMSP_T_PATH_DATA, DataDir);
		amsp_put_str(&w, AMSP_T_PATH_WAL, walpath);
		foreach(lc, tblspcs)
			amsp_put_str(&w, AMSP_T_PATH_TABLESPACE, lfirst(lc));
		amsp_put_str(&w, AMSP_T_SYSTEM_ID, sysid);
		amsp_put_str(&w, AMSP_T_PG_VERSION, psprintf("%d", PG_VERSION_NUM));
		/* Only on a standby: a helper older than standbys still takes the rest. */
		if (run->standby)
		{
			amsp_put_u8(&w, AMSP_T_STANDBY, 1);
			helper_set_standby_asked(hc);
			if (run->standby_info.primary_host)
				amsp_put_str(&w, AMSP_T_PRIMARY_HOST, run->standby_info.primary_host);
			if (run->standby_info.sync_state)
				amsp_put_str(&w, AMSP_T_SYNC_STATE, run->standby_info.sync_state);
		}
		/* Only for an image: a helper older than images still takes the rest. */
		if (run->image_method)
		{
			amsp_put_str(&w, AMSP_T_IMAGE_METHOD, run->image_method);
			if (run->allow_product_code_loss)
				amsp_put_u8(&w, AMSP_T_ALLOW_PRODUCT_CODE_LOSS, 1);
			helper_set_image_asked(hc, true);
		}
		send_or_error(hc, &w);
		/* The start row's worker runs while the helper prepares. */
		helper_receive(hc, msg, AMSP_PREPARED, "prepare", request_timeout_ms);
		end_start_row(run);
		{
			char		inst[65];

			amsp_copy_str(amsp_get(msg, AMSP_T_INSTANCE_ID), inst, sizeof(inst));
			run->instance_id = pstrdup(inst);
			run->volume_ids = strings_of(msg, AMSP_T_VOLUME_ID);
			history_set(&run->row, HC_INSTANCE_ID, run->instance_id);
			history_set(&run->row, HC_VOLUME_IDS, text_array_literal(run->volume_ids));
			amsp_copy_str(amsp_get(msg, AMSP_T_REGION), inst, sizeof(inst));
			history_set(&run->row, HC_REGION, inst);
			report_step("prepared: instance %s, volumes %s, %zu filesystem(s) to %s",
						run->instance_id, joined(run->volume_ids),
						amsp_count(msg, AMSP_T_MOUNT_POINT), freeze ? "freeze" : "snapshot");
		}

		/*
		 * The configuration outside the data directory, into it: before the
		 * backup starts, so that it is in the snapshot, and only once PREPARE
		 * made this call the helper's one operation (a call refused Busy
		 * must not touch the copy another call is snapshotting).  Written
		 * only when it changed.
		 */
		(void) capture_config_files();

		label_text = backup_and_snapshot(run, hc, msg, name, tblspcs, tblspcmap);

		history_set(&run->row, HC_BACKUP_LABEL, label_text);
		if (tblspcmap->len > 0)
			history_set(&run->row, HC_TABLESPACE_MAP, tblspcmap->data);

		/* 5. FINISH: tags with the backup's metadata, after the thaw. */
		amsp_begin(&w, frame, sizeof(frame), AMSP_FINISH);
		amsp_put_str(&w, AMSP_T_STOP_LSN, lsn_text(run->stop_lsn));
		amsp_put_u32(&w, AMSP_T_TIMELINE, run->tli);
		amsp_put_str(&w, AMSP_T_BACKUP_LABEL, label_text);
		if (tblspcmap->len > 0)
			amsp_put_str(&w, AMSP_T_TABLESPACE_MAP, tblspcmap->data);
		send_or_error(hc, &w);
		/*
		 * While the helper tags (an EC2 round trip), the final row's worker
		 * starts and connects; it gets the row when DONE has come.  Room for
		 * what the row has now and what it gets then (status, times, ids).
		 */
		if (!run->standby)
			(void) history_write_defer(HT_SNAPSHOTS,
									   history_row_size(&run->row) + FINAL_ROW_SLACK +
									   32 * (list_length(run->snapshot_ids) +
											 list_length(run->volume_ids)),
									   request_timeout_ms + HISTORY_WAIT_MS,
									   DEBUG1, &run->final_write);
		helper_receive(hc, msg, AMSP_DONE, "finish", request_timeout_ms);
		remember_image(run, msg, CurrentMemoryContext);
		report_step("tagged %d snapshot(s) with the backup's metadata%s%s",
					list_length(run->snapshot_ids), run->image_id ? "; image " : "",
					run->image_id ? run->image_id : "");
		{
			size_t		i;

			for (i = 0; i < amsp_count(msg, AMSP_T_WARNING); i++)
			{
				const struct amsp_field *f = amsp_get_nth(msg, AMSP_T_WARNING, i);

				ereport(WARNING,
						(errcode(ERRCODE_WARNING),
						 errmsg("%s", pnstrdup((const char *) f->value, f->len))));
			}
		}
	}
	PG_CATCH();
	{
		/*
		 * Tell the helper why, so that its log says so (it would notice the
		 * closed connection anyway), and keep its error code for the history.
		 */
		if (hc)
		{
			const char *code = helper_last_error_code(hc);

			MemoryContext ecxt = MemoryContextSwitchTo(mcxt);
			ErrorData  *e = CopyErrorData();

			MemoryContextSwitchTo(ecxt);
			if (code)
				strlcpy(run->helper_error_code, code, sizeof(run->helper_error_code));
			remember_failure(run, helper_last_error(hc), mcxt);
			helper_send_abort(hc, e->message ? e->message : "error");
		}
		helper_close(hc);
		PG_RE_THROW();
	}
	PG_END_TRY();
	helper_close(hc);
}

Datum
ami_snapshot(PG_FUNCTION_ARGS)
{
	char	   *name;
	bool		freeze;
	char	   *request_id;
	SnapshotRun *volatile run;
	TupleDesc	tupdesc;
	Datum		values[12];
	bool		nulls[12];
	const char *volatile image = NULL;
	volatile bool allow_loss = false;
	MemoryContext oldcxt = CurrentMemoryContext;
	ResourceOwner oldowner = CurrentResourceOwner;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("snapshot name must not be null")));
	name = text_to_cstring(PG_GETARG_TEXT_PP(0));
	/* NULL (1.4's default): the setting ami_snapshot.default_freeze. */
	freeze = PG_ARGISNULL(1) ? default_freeze : PG_GETARG_BOOL(1);
	validate_name(name);
	/* Version 1.1's arguments (1.0's function has two). */
	if (PG_NARGS() >= 4)
	{
		if (!PG_ARGISNULL(2))
		{
			image = text_to_cstring(PG_GETARG_TEXT_PP(2));
			if (strcmp(image, "register") != 0 && strcmp(image, "create") != 0)
				ereport(ERROR,
						(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
						 errmsg("image must be 'register', 'create' or NULL"),
						 errdetail("NULL makes a snapshot set; 'register' and 'create' make an AMI (see doc/sql.md).")));
		}
		if (PG_ARGISNULL(3))
			ereport(ERROR,
					(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
					 errmsg("allow_product_code_loss must not be null")));
		allow_loss = PG_GETARG_BOOL(3);
		if (allow_loss && (image == NULL || strcmp(image, "register") != 0))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("allow_product_code_loss applies to image => 'register' only")));
	}

	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");
	if (!XLogIsNeeded())
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("WAL level not sufficient for making an online backup"),
				 errhint("wal_level must be set to \"replica\" or \"logical\" at server start.")));
	if (get_backup_status() == SESSION_BACKUP_RUNNING)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("a backup is already in progress in this session"),
				 errhint("Finish it with pg_backup_stop() first.")));

	request_id = make_request_id();

	run = palloc0(sizeof(SnapshotRun));
	/*
	 * A hot standby (doc/design.md, "On a hot standby"): the backup runs
	 * there, its history cannot be written (the tags are the record), and
	 * the primary must not wait on it while it is frozen.
	 */
	run->standby = RecoveryInProgress();
	if (run->standby)
	{
		standby_inspect(&run->standby_info, freeze);
		standby_enforce(&run->standby_info);
		report_step("on a standby of %s (application_name \"%s\", sync_state %s): %s; no history row (read-only), the tags record the set",
					run->standby_info.primary_host ? run->standby_info.primary_host : "no primary",
					run->standby_info.application_name ? run->standby_info.application_name : "",
					run->standby_info.sync_state ? run->standby_info.sync_state : "not asked",
					run->standby_info.how);
	}
	run->image_method = image;
	run->allow_product_code_loss = allow_loss;
	/* A 1.0 database's history has no image columns. */
	run->row.ncolumns = PG_NARGS() >= 4 ? HC_NCOLUMNS : HC_NCOLUMNS_1_0;
	history_set(&run->row, HC_IMAGE_METHOD, image);
	history_set(&run->row, HC_REQUEST_ID, request_id);
	history_set(&run->row, HC_NAME, name);
	history_set(&run->row, HC_STATUS, "running");
	history_set(&run->row, HC_FREEZE, freeze ? "true" : "false");
	history_set(&run->row, HC_STARTED_AT, timestamptz_to_str(GetCurrentTimestamp()));
	history_set(&run->row, HC_BACKEND_PID, psprintf("%d", MyProcPid));
	history_set(&run->row, HC_USERNAME, GetUserNameFromId(GetUserId(), false));

	/* From the first write on, a backend exit marks the row. */
	if (!run->standby)
		history_arm_exit(HT_SNAPSHOTS, request_id);
	set_phase(run, HP_PREPARING);
	/* Ended once the helper has prepared (end_start_row()). */
	if (!run->standby && !history_write_begin(&run->row, WARNING, &run->start_write))
	{
		history_set_phase(HP_IDLE);
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_RESOURCES),
				 errmsg("ami_snapshot() did not start because its history could not be recorded")));
	}

	/*
	 * The operation runs in a subtransaction, so that after a failure the
	 * locks, buffers and resources it held are released before the failure
	 * is recorded (as PL/pgSQL's exception blocks do).
	 */
	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(oldcxt);
	PG_TRY();
	{
		run_snapshot(run, name, freeze, request_id);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(oldcxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(oldcxt);
		CurrentResourceOwner = oldowner;

		/* The start row first: the failure must not be overtaken by it. */
		if (run->start_write.active &&
			!history_write_end(&run->start_write, WARNING, &run->history_id))
			run->history_lost = true;

		history_set(&run->row, HC_STATUS, "failed");
		history_set(&run->row, HC_FINISHED_AT, timestamptz_to_str(GetCurrentTimestamp()));
		/* The helper's or EC2's code says more than a SQLSTATE. */
		history_set(&run->row, HC_ERROR_CODE,
					run->helper_error_code[0] ? run->helper_error_code :
					unpack_sql_state(edata->sqlerrcode));
		history_set(&run->row, HC_ERROR_MESSAGE, error_text(edata));
		if (run->have_snapshots)
		{
			/* Failed after PENDING: the set is complete, the stop did not happen. */
			history_set(&run->row, HC_SNAPSHOT_IDS, text_array_literal(run->snapshot_ids));
			history_set(&run->row, HC_VOLUME_IDS, text_array_literal(run->volume_ids));
		}
		else if (run->failed_snapshot_ids != NIL)
		{
			char	   *vols;
			char	   *snaps;

			pair_failed_snapshots(run, &vols, &snaps);
			history_set(&run->row, HC_VOLUME_IDS, vols);
			history_set(&run->row, HC_SNAPSHOT_IDS, snaps);
		}
		else if (run->volume_ids != NIL)
			history_set(&run->row, HC_VOLUME_IDS, text_array_literal(run->volume_ids));
		if (run->have_snapshots || run->have_frozen_ms)
			history_set(&run->row, HC_FROZEN_MS, psprintf("%.3f", run->frozen_ms));
		if (run->start_lsn != InvalidXLogRecPtr)
		{
			history_set(&run->row, HC_START_LSN, lsn_text(run->start_lsn));
			history_set(&run->row, HC_TIMELINE, psprintf("%u", run->tli));
		}
		/* Failed after the backup stopped (RegisterImage): it is complete. */
		if (run->stop_lsn != InvalidXLogRecPtr)
			history_set(&run->row, HC_STOP_LSN, lsn_text(run->stop_lsn));
		if (run->image_id)
			history_set(&run->row, HC_IMAGE_ID, run->image_id);
		if (!run->standby && !run->history_lost)
			write_final_row(run);
		else
			history_write_cancel(&run->final_write);
		set_phase(run, HP_IDLE);
		ReThrowError(edata);
	}
	PG_END_TRY();

	history_set(&run->row, HC_STATUS, "succeeded");
	history_set(&run->row, HC_FINISHED_AT, timestamptz_to_str(GetCurrentTimestamp()));
	history_set(&run->row, HC_SNAPSHOT_IDS, text_array_literal(run->snapshot_ids));
	history_set(&run->row, HC_VOLUME_IDS, text_array_literal(run->volume_ids));
	history_set(&run->row, HC_START_LSN, lsn_text(run->start_lsn));
	history_set(&run->row, HC_STOP_LSN, lsn_text(run->stop_lsn));
	history_set(&run->row, HC_TIMELINE, psprintf("%u", run->tli));
	history_set(&run->row, HC_FROZEN_MS, psprintf("%.3f", run->frozen_ms));
	history_set(&run->row, HC_IMAGE_ID, run->image_id);
	if (!run->standby)
		write_final_row(run);
	set_phase(run, HP_IDLE);

	if (image && !run->image_id)
		ereport(ERROR,
				(errcode(ERRCODE_PROTOCOL_VIOLATION),
				 errmsg("ami_snapshot helper reported success without an image id")));
	memset(nulls, 0, sizeof(nulls));
	/* On a standby no history row: no id. */
	values[0] = Int64GetDatum(run->history_id);
	nulls[0] = run->standby;
	values[1] = CStringGetTextDatum(request_id);
	values[2] = CStringGetTextDatum(name);
	values[3] = CStringGetTextDatum(run->instance_id);
	values[4] = text_array_datum(run->volume_ids);
	values[5] = text_array_datum(run->snapshot_ids);
	values[6] = LSNGetDatum(run->start_lsn);
	values[7] = LSNGetDatum(run->stop_lsn);
	values[8] = Int32GetDatum((int32) run->tli);
	values[9] = Float8GetDatum(run->frozen_ms);
	values[10] = CStringGetTextDatum("succeeded");
	/* 1.1's image_id; NULL for a snapshot set.  1.0's row has 11 columns. */
	values[11] = run->image_id ? CStringGetTextDatum(run->image_id) : (Datum) 0;
	nulls[11] = run->image_id == NULL;
	if (tupdesc->natts != 11 && tupdesc->natts != 12)
		elog(ERROR, "ami_snapshot() must return 11 or 12 columns, not %d", tupdesc->natts);
	tupdesc = BlessTupleDesc(tupdesc);
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}
