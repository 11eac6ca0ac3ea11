/*
 * lifecycle.h - `ami-snapshot list | show | wait | prune | copy | lock |
 * unlock | share`: a backup's life after it was taken (doc/lifecycle.md).
 *
 *   lc_aws.c     the command's EC2 transport: the helper's region,
 *                endpoint and credentials (worker/aws.h), one client per
 *                region, signed for it; retries; pre-signed URLs;
 *   lc_backup.c  backups from EC2's snapshots and images (grouped by
 *                request id, this cluster's by system identifier), their
 *                state, and their JSON and table forms;
 *   lifecycle.c  the subcommands.
 *
 * Every subcommand prints an aligned table (or lines) by default and one
 * JSON document with --json; the JSON shapes are documented in
 * doc/lifecycle.md and are what the SQL functions pass through.
 */
#ifndef AMIS_LIFECYCLE_H
#define AMIS_LIFECYCLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <json-c/json.h>

#include "ec2_lifecycle.h"
#include "retention.h"
#include "util.h"

/* Exit codes of the lifecycle subcommands (doc/lifecycle.md, "Exit codes"). */
enum lc_exit {
	LC_EXIT_OK = 0,
	LC_EXIT_ERROR = 1,     /* EC2, credentials, the system */
	LC_EXIT_USAGE = 2,     /* bad options, or no way to tell this cluster */
	LC_EXIT_NOT_FOUND = 3, /* no backup with that id */
	LC_EXIT_NOT_OURS = 4,  /* the backup is another cluster's (system identifier) */
	LC_EXIT_FAILED = 5,    /* wait: a snapshot or the image failed (EC2's reason) */
	LC_EXIT_TIMEOUT = 6,   /* wait: not completed within --timeout */
	LC_EXIT_PARTIAL = 7,   /* prune, copy, lock, unlock, share: some actions failed */
	LC_EXIT_FROZEN = 8,    /* status: the helper has filesystems frozen now */
	LC_EXIT_NO_HELPER = 9, /* status: the helper did not answer */
};

#define LC_TAG(x) "ami-snapshot:" x
#define LC_MAX_SNAPSHOTS 64
#define LC_MAX_COPIES 32

/* The lock of a backup: its snapshots' locks, the one that ends first. */
struct lc_backup_lock {
	char state[24]; /* governance | compliance | compliance-cooloff | expired | "" none */
	char expires_on[40];
	time_t expires; /* 0 unknown */
	size_t nlocked; /* snapshots with a lock that has not expired */
};

struct lc_copy_ref {
	char region[32];
	char state[16];
};

/* One backup: a snapshot set, or an AMI with its snapshots, in one region. */
struct lc_backup {
	char request_id[80];
	char name[LC_TAG_VALUE_MAX + 1];
	bool ami;
	char region[32];
	char system_id[32];
	char backup_state[16]; /* the tag: started | stopped | failed | aborted */
	char pg_version[16];
	char start_lsn[32], stop_lsn[32];
	char taken_from[16];                     /* ami-snapshot:taken-from: "" a primary */
	char primary_host[LC_TAG_VALUE_MAX + 1]; /* a standby's set: its primary's host:port */
	char standby_sync_state[16];             /* ... and what the primary said of it */
	char created[40]; /* the earliest snapshot's start time, or the image's creation date */
	time_t created_t;
	char state[16];   /* completed | pending | started | failed: see lc_backup_state() */
	char reason[300]; /* EC2's reason when failed */
	int progress;     /* 0..100: the least advanced snapshot */
	long long size_gib;
	char verified[128]; /* ami-snapshot:verified, "" never */
	char image_id[32];
	char image_state[24];
	char copy_of_region[32]; /* a copy: where it came from ("" original) */
	char copy_of_id[80];     /* ... and the source snapshot or image id */
	size_t nsnaps;
	const struct lc_snapshot *snaps[LC_MAX_SNAPSHOTS];
	const struct lc_image *image;
	struct lc_backup_lock lock;
	struct lc_lock
	    locks[LC_MAX_SNAPSHOTS]; /* per snapshot, by position ("" snapshot_id: none) */
	size_t ncopies;
	struct lc_copy_ref copies[LC_MAX_COPIES];
};

/* What was found in one region, and the backups made of it. */
struct lc_inventory {
	char region[32];
	struct lc_snapshot_list snaps;
	struct lc_image_list images;
	size_t n;
	struct lc_backup *items; /* newest first */
};

void lc_inventory_free(struct lc_inventory *inv);

/* Which backups: this cluster's (system_id), all of ours, one name. */
struct lc_scope {
	const char *system_id;  /* NULL: all (--all) */
	const char *name;       /* NULL: every name */
	const char *request_id; /* NULL: every backup */
};

/*
 * Groups inv->snaps and inv->images into backups (by ami-snapshot:request-id;
 * snapshots and images without one are not ours) within scope, newest
 * first, and derives each one's state.  Pure (tests call it on parsed XML).
 */
void lc_group(struct lc_inventory *inv, const struct lc_scope *scope, time_t now);

/*
 * A backup's state from its tags, snapshots and image: failed (a snapshot
 * in error, the image failed/invalid/error/deregistered, backup-state failed
 * or aborted), started (backup-state not yet stopped), pending (a snapshot
 * pending or the image pending), completed.  reason gets EC2's words.
 */
void lc_backup_state(struct lc_backup *b);
/* The retention engine's view of the state. */
enum ret_state lc_retention_state(const struct lc_backup *b);

/* The backup's snapshot ids. */
size_t lc_backup_snapshot_ids(const struct lc_backup *b, const char **ids, size_t max);

/* The JSON object of a backup (doc/lifecycle.md, "JSON"). */
json_object *lc_backup_json(const struct lc_backup *b, time_t now);
/* "3d4h", "25m", "40s". */
void lc_age_text(long seconds, char *buf, size_t sz);
/* The table of backups (list) on f; JSON-free. */
void lc_print_table(FILE *f, const struct lc_backup *const *rows, size_t n, time_t now);
/* One backup in detail (show). */
void lc_print_backup(FILE *f, const struct lc_backup *b, time_t now);

/* ISO 8601 UTC ("2026-12-03T01:00:00.000Z", "...+00:00") -> time_t; 0 if unreadable. */
time_t lc_parse_time(const char *iso);

/*
 * The system identifier in datadir/global/pg_control (its first 8 bytes,
 * ControlFileData.system_identifier, in this machine's byte order), as
 * decimal text.
 */
int lc_read_system_id(const char *datadir, char *out, size_t sz, struct amis_err *err);

/* ---- The transport (lc_aws.c). ---- */

struct helper_config;
struct lc_aws;

struct lc_aws *lc_aws_new(const struct helper_config *cfg);
/* Tests: a fixed endpoint (every region's), fixed credentials. */
struct lc_aws *lc_aws_new_static(const char *endpoint, const char *home_region, const char *akid,
                                 const char *secret);
void lc_aws_free(struct lc_aws *a);
/* Opens what needs root (the credentials file) without network. */
int lc_aws_pin(struct lc_aws *a, struct amis_err *err);
/* Region, endpoint and credentials resolved. */
int lc_aws_ready(struct lc_aws *a, struct amis_err *err);
const char *lc_aws_region(const struct lc_aws *a);
/* The transport for ec2_lifecycle.h's calls. */
const struct ec2_transport *lc_aws_transport(struct lc_aws *a);

/* ---- The subcommands (lifecycle.c). ---- */

int lc_list_main(int argc, char **argv, const char *default_config);
int lc_status_main(int argc, char **argv, const char *default_config);
int lc_show_main(int argc, char **argv, const char *default_config);
int lc_wait_main(int argc, char **argv, const char *default_config);
int lc_prune_main(int argc, char **argv, const char *default_config);
int lc_copy_main(int argc, char **argv, const char *default_config);
int lc_lock_main(int argc, char **argv, const char *default_config);
int lc_unlock_main(int argc, char **argv, const char *default_config);
int lc_share_main(int argc, char **argv, const char *default_config);

#endif
