/*
 * standby.h - ami_snapshot() on a hot standby (see standby.c and
 * doc/design.md, "On a hot standby").
 */
#ifndef AMIS_STANDBY_H
#define AMIS_STANDBY_H

/* ami_snapshot.allow_synchronous_standby */
extern bool allow_synchronous_standby;

typedef struct StandbyInfo
{
	/* "host:port" (or "socket-directory:port") of primary_conninfo; NULL if none */
	char	   *primary_host;
	/* The application_name this standby gives its primary */
	char	   *application_name;
	/* async, potential, sync, quorum or unknown; NULL when not asked */
	char	   *sync_state;
	/* How sync_state was found, a sentence for messages */
	char	   *how;
	/* The primary waits on this standby (or, by its settings, may) */
	bool		primary_waits;
	/* The primary could not be asked */
	bool		unknown;
} StandbyInfo;

extern void standby_define_gucs(void);

/*
 * Fills si from primary_conninfo and, when ask is true, from the primary
 * itself (its pg_stat_replication, or its synchronous_standby_names).
 * Reports nothing.
 */
extern void standby_inspect(StandbyInfo *si, bool ask);

/*
 * What ami_snapshot() does with it before freezing: ERROR when the primary
 * waits on this standby and ami_snapshot.allow_synchronous_standby is off,
 * WARNING when it is on, WARNING when the primary could not be asked.
 */
extern void standby_enforce(const StandbyInfo *si);

/*
 * Whether the synchronous_standby_names value s names appname (or is "*").
 * Exported for its regression test through the SQL-callable wrapper only.
 */
extern bool standby_names_include(const char *s, const char *appname);

#endif
