/*
 * standby.c - what ami_snapshot() needs to know on a hot standby.
 *
 * Freezing a standby's filesystems stops its WAL receiver from writing
 * (and replay from applying) for the length of the freeze; the primary does
 * not notice, unless it waits for this standby to confirm its commits
 * (synchronous replication: the standby's application_name in the
 * primary's synchronous_standby_names, pg_stat_replication.sync_state
 * "sync" or "quorum").  Then every commit on the primary waits while the
 * standby is frozen.  The standby cannot see the primary's settings, so it
 * asks the primary, with primary_conninfo: first an ordinary connection to
 * the "postgres" database, for pg_stat_replication.sync_state (visible
 * with pg_read_all_stats or pg_monitor); failing that a replication
 * connection, which every replication user may open, for
 * synchronous_standby_names alone (SHOW is a replication command).
 *
 * Both use libpq without blocking the backend: connection and query wait
 * with WaitLatchOrSocket, as the WAL receiver's libpqwalreceiver does, and
 * the connection is always closed (PG_FINALLY).  Nothing of
 * primary_conninfo but its host and port is ever shown.
 */
#include "postgres.h"

#include "lib/stringinfo.h"
#include "libpq-fe.h"
#include "miscadmin.h"
#include "postmaster/postmaster.h"
#include "storage/fd.h"
#include "storage/latch.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "standby.h"

bool		allow_synchronous_standby = false;

/* How long the primary may take to answer, in all. */
#define PRIMARY_TIMEOUT_MS 5000

void
standby_define_gucs(void)
{
	DefineCustomBoolVariable("ami_snapshot.allow_synchronous_standby",
							 "Freeze a hot standby even when the primary waits on it (synchronous replication).",
							 "Off: ami_snapshot() refuses to freeze a standby whose primary waits for it to "
							 "confirm commits, because every commit on the primary would wait while the "
							 "standby is frozen.",
							 &allow_synchronous_standby,
							 false,
							 PGC_USERSET,
							 0,
							 NULL, NULL, NULL);
}

bool
standby_names_include(const char *s, const char *appname)
{
	const char *p = s;

	/*
	 * [FIRST | ANY] n ( name [, ...] ) or name [, ...]; a name may be a
	 * double-quoted identifier.  PostgreSQL compares names without regard
	 * to case, quoted or not (syncrep.c), and "*" matches every standby.
	 */
	while (*p)
	{
		StringInfoData tok;
		bool		quoted = false;

		if (strchr(" \t\r\n,()", *p))
		{
			p++;
			continue;
		}
		initStringInfo(&tok);
		if (*p == '"')
		{
			quoted = true;
			for (p++; *p; p++)
			{
				if (*p == '"' && p[1] == '"')
					appendStringInfoChar(&tok, *p++);
				else if (*p == '"')
				{
					p++;
					break;
				}
				else
					appendStringInfoChar(&tok, *p);
			}
		}
		else
			while (*p && !strchr(" \t\r\n,()", *p))
				appendStringInfoChar(&tok, *p++);
		if (!quoted && (pg_strcasecmp(tok.data, "FIRST") == 0 ||
						pg_strcasecmp(tok.data, "ANY") == 0 ||
						strspn(tok.data, "0123456789") == (size_t) tok.len))
			continue;
		if (strcmp(tok.data, "*") == 0 || pg_strcasecmp(tok.data, appname) == 0)
			return true;
	}
	return false;
}

/* Milliseconds left until deadline, at least 1; ERROR-free. */
static long
ms_left(TimestampTz deadline)
{
	long		ms = (long) ((deadline - GetCurrentTimestamp()) / 1000);

	return ms > 0 ? ms : 0;
}

/* Waits for the connection's socket; false on timeout. */
static bool
wait_socket(PGconn *conn, int event, TimestampTz deadline)
{
	for (;;)
	{
		long		left = ms_left(deadline);
		int			rc;

		if (left <= 0)
			return false;
		rc = WaitLatchOrSocket(MyLatch,
							   WL_LATCH_SET | event | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							   PQsocket(conn), left, PG_WAIT_EXTENSION);
		if (rc & WL_LATCH_SET)
		{
			ResetLatch(MyLatch);
			CHECK_FOR_INTERRUPTS();
		}
		if (rc & event)
			return true;
	}
}

/*
 * One query to the primary.  Returns the first row's columns (palloc'd,
 * NULL for SQL NULL) in values, or NULL with *err set.  replication: a
 * physical replication connection, for SHOW.
 */
static char **
ask_primary(const char *conninfo, bool replication, const char *sql, int ncols,
			TimestampTz deadline, char **err)
{
	const char *keys[6];
	const char *vals[6];
	int			n = 0;
	PGconn	   *volatile conn = NULL;
	char	  **volatile result = NULL;

	*err = NULL;
	if (!AcquireExternalFD())
	{
		*err = pstrdup("no file descriptor left for a connection");
		return NULL;
	}
	/* primary_conninfo, then what this check needs on top of it. */
	keys[n] = "dbname", vals[n++] = conninfo;
	if (replication)
		keys[n] = "replication", vals[n++] = "true";
	else
		keys[n] = "dbname", vals[n++] = "postgres";
	keys[n] = "fallback_application_name", vals[n++] = "ami_snapshot";
	keys[n] = "connect_timeout", vals[n++] = "5";
	keys[n] = NULL, vals[n] = NULL;

	PG_TRY();
	{
		PostgresPollingStatusType st = PGRES_POLLING_WRITING;
		PGresult   *res;

		conn = PQconnectStartParams(keys, vals, 1);
		if (conn == NULL || PQstatus(conn) == CONNECTION_BAD)
			st = PGRES_POLLING_FAILED;
		while (st != PGRES_POLLING_OK && st != PGRES_POLLING_FAILED)
		{
			if (!wait_socket(conn, st == PGRES_POLLING_READING ? WL_SOCKET_READABLE :
							 WL_SOCKET_WRITEABLE, deadline))
			{
				*err = pstrdup("no answer within 5 s");
				break;
			}
			st = PQconnectPoll(conn);
		}
		if (!*err && st != PGRES_POLLING_OK)
			*err = pchomp(conn ? PQerrorMessage(conn) : "out of memory");
		if (!*err && !PQsendQuery(conn, sql))
			*err = pchomp(PQerrorMessage(conn));
		while (!*err && PQisBusy(conn))
		{
			if (!wait_socket(conn, WL_SOCKET_READABLE, deadline))
				*err = pstrdup("no answer within 5 s");
			else if (!PQconsumeInput(conn))
				*err = pchomp(PQerrorMessage(conn));
		}
		while (!*err && (res = PQgetResult(conn)) != NULL)
		{
			if (PQresultStatus(res) != PGRES_TUPLES_OK)
				*err = pchomp(PQresultErrorMessage(res));
			else if (result == NULL && PQntuples(res) >= 1 && PQnfields(res) >= ncols)
			{
				int			i;

				result = palloc0(sizeof(char *) * ncols);
				for (i = 0; i < ncols; i++)
					result[i] = PQgetisnull(res, 0, i) ? NULL : pstrdup(PQgetvalue(res, 0, i));
			}
			PQclear(res);
		}
		if (!*err && result == NULL)
			*err = pstrdup("the primary's answer had no row");
	}
	PG_FINALLY();
	{
		if (conn)
			PQfinish(conn);
		ReleaseExternalFD();
	}
	PG_END_TRY();
	return *err ? NULL : result;
}

/* host:port of primary_conninfo, never anything else of it. */
static void
parse_conninfo(StandbyInfo *si, const char *conninfo)
{
	char	   *errmsg = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &errmsg);
	const char *host = NULL;
	const char *port = NULL;
	PQconninfoOption *o;

	if (opts == NULL)
	{
		/* The message may quote the string: not shown. */
		if (errmsg)
			PQfreemem(errmsg);
		return;
	}
	for (o = opts; o->keyword; o++)
	{
		if (o->val == NULL || o->val[0] == '\0')
			continue;
		if (strcmp(o->keyword, "host") == 0 ||
			(strcmp(o->keyword, "hostaddr") == 0 && host == NULL))
			host = o->val;
		else if (strcmp(o->keyword, "port") == 0)
			port = o->val;
		else if (strcmp(o->keyword, "application_name") == 0)
			si->application_name = pstrdup(o->val);
	}
	si->primary_host = psprintf("%s:%s", host ? host : "localhost", port ? port : "5432");
	if (strlen(si->primary_host) > 255)
		si->primary_host[255] = '\0';
	PQconninfoFree(opts);
}

void
standby_inspect(StandbyInfo *si, bool ask)
{
	const char *conninfo = GetConfigOption("primary_conninfo", true, false);
	const char *cluster = GetConfigOption("cluster_name", true, false);
	TimestampTz deadline;
	char	  **row;
	char	   *err = NULL;
	char	   *err2 = NULL;

	memset(si, 0, sizeof(*si));
	if (conninfo == NULL || conninfo[0] == '\0')
	{
		/* Recovery from an archive only: no primary can wait on it. */
		si->how = pstrdup("this standby has no primary_conninfo: it does not stream");
		return;
	}
	parse_conninfo(si, conninfo);
	/* The WAL receiver's own fallback (walreceiver.c). */
	if (si->application_name == NULL)
		si->application_name = pstrdup(cluster && cluster[0] ? cluster : "walreceiver");
	if (!ask)
	{
		si->how = pstrdup("not asked: nothing is frozen");
		return;
	}

	deadline = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), PRIMARY_TIMEOUT_MS);
	row = ask_primary(conninfo, false,
					  psprintf("SELECT (SELECT r.sync_state FROM pg_catalog.pg_stat_replication r "
							   "WHERE r.application_name = %s AND r.sync_state IS NOT NULL "
							   "ORDER BY r.sync_state IN ('sync', 'quorum') DESC LIMIT 1), "
							   "pg_catalog.current_setting('synchronous_standby_names'), "
							   "pg_catalog.pg_is_in_recovery()",
							   quote_literal_cstr(si->application_name)),
					  3, deadline, &err);
	if (row && strcmp(row[2], "t") == 0)
	{
		/* Cascading: a standby never waits for the standbys it feeds. */
		si->sync_state = pstrdup("async");
		si->how = pstrdup("its upstream server is itself a standby (cascading replication), which never waits on it");
	}
	else if (row && row[0])
	{
		si->sync_state = pstrdup(row[0]);
		si->how = psprintf("the primary's pg_stat_replication says sync_state %s for application_name \"%s\"",
						   row[0], si->application_name);
	}
	else
	{
		/* Not visible (no pg_read_all_stats) or not connected now: the setting. */
		if (row == NULL)
		{
			char	  **shown = ask_primary(conninfo, true, "SHOW synchronous_standby_names",
											1, deadline, &err2);

			if (shown)
			{
				row = palloc0(sizeof(char *) * 3);
				row[1] = shown[0];
			}
		}
		if (row && row[1] && standby_names_include(row[1], si->application_name))
		{
			si->sync_state = pstrdup("unknown");
			si->how = psprintf("the primary's synchronous_standby_names (\"%s\") names application_name \"%s\"",
							   row[1], si->application_name);
			si->primary_waits = true;
		}
		else if (row)
		{
			si->sync_state = pstrdup("async");
			si->how = psprintf("the primary's synchronous_standby_names (\"%s\") does not name application_name \"%s\"",
							   row[1] ? row[1] : "", si->application_name);
		}
		else
		{
			si->sync_state = pstrdup("unknown");
			si->how = psprintf("could not ask the primary at %s: %s%s%s",
							   si->primary_host ? si->primary_host : "(primary_conninfo)",
							   err ? err : "", err2 ? "; as a replication connection: " : "",
							   err2 ? err2 : "");
			si->unknown = true;
			return;
		}
	}
	if (si->sync_state && (strcmp(si->sync_state, "sync") == 0 ||
						   strcmp(si->sync_state, "quorum") == 0))
		si->primary_waits = true;
}

void
standby_enforce(const StandbyInfo *si)
{
	if (si->unknown)
		ereport(WARNING,
				(errcode(ERRCODE_WARNING),
				 errmsg("ami_snapshot: could not find out whether the primary waits on this standby"),
				 errdetail("%s.", si->how),
				 errhint("If the primary's synchronous_standby_names names \"%s\", its commits wait while this standby is frozen.",
						 si->application_name)));
	if (!si->primary_waits)
		return;
	if (!allow_synchronous_standby)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("the primary waits on this standby to confirm its commits (synchronous replication)"),
				 errdetail("%s; freezing this standby would stall every commit on the primary for as long as it is frozen.",
						   si->how),
				 errhint("Take the snapshot from an asynchronous standby, or with freeze => false, or SET ami_snapshot.allow_synchronous_standby = on to accept the stall.")));
	ereport(WARNING,
			(errcode(ERRCODE_WARNING),
			 errmsg("ami_snapshot: the primary waits on this standby; its commits stall while the standby is frozen"),
			 errdetail("%s; ami_snapshot.allow_synchronous_standby is on.", si->how)));
}
