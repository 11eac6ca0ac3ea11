/*
 * verify.h - `ami-snapshot verify`: the restore drill (doc/verify.md).
 *
 * A drill restores a backup (the restore command's steps, restore.h) under
 * a private scratch directory, starts a throw-away PostgreSQL on it, checks
 * it, optionally dumps it, and always removes everything it made.  Its
 * parts:
 *
 *   vf_report.c  the pure parts, unit tested (test/unit/test_verify.c):
 *                the checks and their outcome, the human and JSON output,
 *                the amcheck SQL and its answer, the time budget, dump file
 *                names, drill ids;
 *   verify.c     the command: options, the drill's phases, the throw-away
 *                server, the cleanup (also --cleanup of dead drills).
 */
#ifndef AMIS_VERIFY_H
#define AMIS_VERIFY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <time.h>

#include "util.h"

/* Exit codes of `ami-snapshot verify` (doc/verify.md, "Exit codes"). */
enum vf_exit {
	VF_EXIT_PASSED = 0,
	VF_EXIT_ERROR = 1,       /* the drill could not run to a verdict (EC2, IMDS, mount) */
	VF_EXIT_USAGE = 2,       /* bad options or configuration */
	VF_EXIT_REFUSED = 3,     /* the backup cannot be drilled (restore's refusals), or busy */
	VF_EXIT_FAILED = 4,      /* the backup did not restore, or a check failed */
	VF_EXIT_TIMED_OUT = 5,   /* --timeout reached */
	VF_EXIT_INTERRUPTED = 6, /* SIGTERM, SIGINT or SIGHUP */
};

enum vf_outcome {
	VF_PASSED,
	VF_FAILED,
	VF_TIMED_OUT,
	VF_INTERRUPTED,
	VF_ERROR,
	VF_REFUSED,
};

const char *vf_outcome_name(enum vf_outcome o);
int vf_outcome_exit(enum vf_outcome o);

#define VF_MAX_CHECKS 128
#define VF_MAX_PHASES 16
#define VF_MAX_LIST 64

struct vf_check {
	char name[96];
	bool ok;
	char *detail; /* owned */
	double ms;
};

struct vf_phase {
	char name[32];
	double ms;
};

/* What a drill did and found: everything the output says. */
struct vf_report {
	char drill_id[64];
	char request_id[80];
	char image_id[32];
	char instance_id[32]; /* AMI drill: the instance launched */
	enum vf_outcome outcome;
	char *error; /* owned: why, when not passed */
	char recovered_lsn[32];
	size_t nchecks;
	struct vf_check checks[VF_MAX_CHECKS];
	size_t nphases;
	struct vf_phase phases[VF_MAX_PHASES];
	size_t nunreached; /* relations amcheck did not reach (names: the first VF_MAX_LIST) */
	size_t nunreached_listed;
	char *unreached[VF_MAX_LIST];
	size_t ndumps;
	char *dumps[VF_MAX_LIST];
	char *tagged; /* the tag written, "key=value", or NULL */
	size_t left;  /* things the cleanup could not remove */
};

void vf_report_init(struct vf_report *r);
void vf_report_free(struct vf_report *r);
/* Adds a check (detail may be NULL); the outcome is the caller's. */
struct vf_check *vf_add_check(struct vf_report *r, const char *name, bool ok, double ms,
                              const char *fmt, ...) __attribute__((format(printf, 5, 6)));
void vf_add_phase(struct vf_report *r, const char *name, double ms);
void vf_add_unreached(struct vf_report *r, const char *rel);
void vf_add_dump(struct vf_report *r, const char *path);
void vf_set_error(struct vf_report *r, enum vf_outcome o, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Whether every check is ok (and there is at least one). */
bool vf_all_ok(const struct vf_report *r);
/* The first failed check, or NULL. */
const struct vf_check *vf_first_failed(const struct vf_report *r);

/* The report as one JSON object (json-c), into out; the human summary on f. */
void vf_report_json(const struct vf_report *r, struct strbuf *out);
void vf_report_print(const struct vf_report *r, FILE *f);

/*
 * The SQL of the amcheck step for one database, for psql -c: a function in
 * pg_temp that walks every btree index (bt_index_check, heapallindexed off)
 * and every table, materialized view and TOAST table (verify_heapam) in
 * order, each in its own subtransaction, and stops starting new ones once
 * budget_ms have passed: those are listed as skipped.  One row per
 * relation: kind, relation, status (ok, corrupt, skipped), detail, ms,
 * separated by VF_SEP.  amcheck is created first (CREATE EXTENSION IF NOT
 * EXISTS) and found in whatever schema it is in.
 */
#define VF_SEP "\x1f"
void vf_amcheck_sql(long budget_ms, struct strbuf *out);

/* What the amcheck rows of one database say. */
struct vf_amcheck_result {
	size_t indexes, tables; /* checked, ok or not */
	size_t corrupt;
	size_t skipped;
	double ms;
	struct strbuf problems; /* "relation: detail" lines, the first 20 */
};
void vf_amcheck_result_init(struct vf_amcheck_result *a);
void vf_amcheck_result_free(struct vf_amcheck_result *a);
/*
 * Parses psql's output of vf_amcheck_sql (one row a line); skipped
 * relations go into report's unreached list (named db.relation).  A line
 * that is not a row fails.
 */
int vf_amcheck_parse(const char *text, const char *db, struct vf_amcheck_result *a,
                     struct vf_report *report, struct amis_err *err);

/* The time budget: what is left of budget_ms since start_ms (never < 0). */
long vf_budget_left(long budget_ms, double start_ms, double now_ms);

/*
 * A dump file's name: "<request id>_<database>.dump" with every byte of
 * the database name outside [A-Za-z0-9._-] as %XX (so no / and no
 * leading dot); "<request id>_globals.sql" for db == NULL.
 */
void vf_dump_name(const char *request_id, const char *db, char *out, size_t outsz);

/* A drill id: "drill-YYYYmmddTHHMMSSZ-XXXXXXXX" (8 random hex digits). */
void vf_drill_id(time_t t, unsigned rnd, char *out, size_t outsz);
/* Whether s looks like one (the only names --cleanup removes under drill_dir). */
bool vf_drill_id_valid(const char *s);

/* The tag after a drill: "ami-snapshot:verified" or "ami-snapshot:verify-failed" and its value
 * "<ISO time> <drill id>"; false when the outcome sets no tag. */
bool vf_result_tag(enum vf_outcome o, time_t t, const char *drill_id, char *key, size_t ksz,
                   char *value, size_t vsz);

/* PostgreSQL's LSN text "X/Y" as a number; false if it is not one. */
bool vf_parse_lsn(const char *s, unsigned long long *out);

/* A monotonic clock in ms. */
double vf_now_ms(void);

int vf_verify_main(int argc, char **argv, const char *default_config);

#endif
