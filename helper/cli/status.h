/*
 * status.h - `ami-snapshot status` (doc/lifecycle.md, "Status"): what the
 * helper is doing now, over its socket as its --status does, and the
 * newest calls from the history table, read through PostgreSQL (psql, run
 * as the database's owner) when it answers, else from EC2's tags (the
 * database may be gone; lifecycle.c).
 */
#ifndef AMIS_STATUS_H
#define AMIS_STATUS_H

#include "protocol.h"
#include "util.h"

#include <json-c/json.h>
#include <stdbool.h>
#include <stdio.h>

/* How to reach PostgreSQL: psql (a path, or a name on PATH), as user. */
struct st_pg {
	const char *psql;
	const char *user;     /* run as this user when root (the database's owner) */
	const char *conninfo; /* a libpq connection string or URI; never printed */
};

/* A STATUS_REPLY as JSON: state, request_id, name, step, frozen_seconds, frozen_mounts, note. */
json_object *st_helper_json(const struct amsp_msgview *m);
/* Asks the helper at socket_path; NULL with err (never blocks beyond 10 s). */
json_object *st_helper_status(const char *socket_path, char *err, size_t errsz);
/* Whether the state says filesystems are frozen (or a thaw is pending). */
bool st_helper_frozen(json_object *helper);
/*
 * The newest `last` rows of ami_snapshot_history (the extension's schema
 * found in pg_extension), newest first, as a JSON array of rows (the
 * table's columns but the label and map); NULL with err: psql's first
 * line, or what else went wrong.  Bounded: 5 s to connect, 20 s in all.
 */
json_object *st_history(const struct st_pg *pg, int last, char *err, size_t errsz);
void st_print_helper(FILE *f, json_object *helper, const char *err);
void st_print_history(FILE *f, json_object *rows);

#endif
