/*
 * op_internal.h - what the files of the snapshot operation share: the
 * operation and helper structures, the limits, and the steps one file
 * hands to another.  Not for use outside root/operation*.c, prepare.c,
 * freeze_cycle.c and tagging.c.
 *
 *   operation.c     the helper's lifetime, the one dispatcher (opstate.h's
 *                   table), errors and refusals, STATUS and THAW, ABORT,
 *                   the end of an operation and the retried thaws
 *   prepare.c       PREPARE: paths -> volumes, the instance's mapping, the
 *                   CreateSnapshots request and its preflight DryRun
 *   freeze_cycle.c  SNAPSHOT: the freeze cycle (marker, watchdog, FIFREEZE,
 *                   the call made while frozen, FITHAW) and its retries
 *   tagging.c       FINISH: the backup's metadata as tags; the backup-state
 *                   tag of failed sets; snapshots of lost answers found
 */
#ifndef AMIS_OP_INTERNAL_H
#define AMIS_OP_INTERNAL_H

#include "operation.h"
#include "channel.h"
#include "check.h"
#include "freeze.h"
#include "job.h"
#include "layout.h"
#include "mapping.h"
#include "log.h"
#include "marker.h"
#include "opstate.h"
#include "server.h"
#include "volumes.h"
#include "watchdog.h"
#include "worker_client.h"

#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TOOL_TAG_VALUE "ami_snapshot " AMIS_VERSION
#define MAX_TARGETS (2 + AMSP_MAX_VOLUMES) /* data, wal, the tablespaces */
#define MAX_VOLUMES AMSP_MAX_VOLUMES
#define MAX_CREATE_TAGS 64
#define TAG_VALUE_MAX 256
/* Base64 chunks of the backup label and of the tablespace map, each. */
#define TAG_CHUNKS_MAX 16
/* "Each resource can have a maximum of 50 user created tags" (EC2 User Guide, Tag restrictions). */
#define EC2_MAX_TAGS_PER_RESOURCE 50
#define REQUEST_ID_TAG "ami-snapshot:request-id"
/* A stuck thaw: retried at most this often, and logged at most once a second. */
#define THAW_RETRY_USEC 50000LL
#define THAW_LOG_USEC 1000000LL
/* DescribeSnapshots is eventually consistent: one more look after this pause. */
#define LOST_SNAPSHOTS_RECHECK_MS 2000
/* While frozen, the helper waits this much beyond the worker's own EC2 timeout. */
#define WORKER_WAIT_SLACK_MS 200L

#ifndef AMIS_VERSION
#define AMIS_VERSION "dev"
#endif

/* What an operation makes (doc/design.md, "AMIs"). */
enum image_method {
	IMAGE_NONE,     /* a snapshot set of the database volumes */
	IMAGE_REGISTER, /* one CreateSnapshots of every volume, then RegisterImage */
	IMAGE_CREATE,   /* CreateImage (NoReboot) while the database is frozen */
};

/* How often the create method asks whether the image's snapshots exist, while frozen. */
#define IMAGE_POLL_MS 25L

struct operation {
	enum op_state state;
	struct conn *owner;
	char request_id[65];
	char name[257];
	char instance_id[65]; /* a copy: the worker's is gone if it is replaced */
	bool freeze;
	char system_id[33];
	char pg_version[17];
	char start_lsn[33];
	uint32_t timeline;
	/* Taken on a hot standby: tagged taken-from, primary-host, standby-sync-state. */
	bool standby;
	char primary_host[257];
	char sync_state[17];
	struct fs_target *targets;
	size_t ntargets;
	struct freeze_plan plan;
	char *volume_ids[MAX_VOLUMES];
	size_t nvolumes;
	char *exclude_ids[64];
	size_t nexclude;
	bool exclude_boot;
	char device_names[MAX_VOLUMES][64]; /* EC2 device name per volume_ids[i] */
	size_t ncreate_tags;                /* tags set by CreateSnapshots: count toward 50 */
	char volume_count[16];              /* the ami-snapshot:volume-count tag */
	struct ec2_snapshot_set snaps;
	/* The AMI methods. */
	enum image_method image;
	bool allow_product_code_loss;
	char *all_ids[MAX_VOLUMES];        /* every EBS volume of the instance (image only) */
	char all_devices[MAX_VOLUMES][64]; /* their device names */
	size_t nall;
	struct ec2_image_info *image_info; /* register: RegisterImage's attributes and mapping */
	char image_id[32];                 /* the image made, or half made */
	bool image_found_by_tag;           /* a lost answer's image, found again */
	struct watchdog wd;                /* while frozen (and until reaped) */
	bool marker;                       /* the frozen marker was written and not removed yet */
	bool check;                        /* a preflight check (check_op.c), not a snapshot */

	/* Only on h->stuck: a plan whose thaw failed. */
	struct operation *next_stuck;
	struct amis_err thaw_err; /* the last failure */
	unsigned int thaw_retries;
	bool tag_failed_after_thaw; /* failed while frozen: tag its snapshots once thawed */
	bool inflight;              /* recorded in state_dir/inflight (inflight.h) */
	bool answer_lost;           /* a creating call's answer was lost: EC2 may still make them */
	long long thaw_next_try_usec;
	long long thaw_logged_usec;
};

struct helper {
	struct helper_config *cfg;
	struct worker *worker;       /* the unprivileged EC2 worker */
	const struct sys_paths *sys; /* where /sys, /proc and /dev are (tests: fixtures) */
	struct operation *active;
	bool thaw_requested;         /* THAW while frozen: abandon the call made while frozen */
	struct operation *stuck;     /* still frozen: thaw retried by op_tick() */
	volatile sig_atomic_t *stop; /* set by SIGTERM/SIGINT: no new freeze */
	struct jobs *jobs;           /* jobs run as children (job.h) */
	const char *config_path;     /* the configuration file (the check reads it again) */
	long long resolve_at_us;     /* inflight entries to settle when idle at (0: none) */
	bool resolving;              /* settling them: no PREPARE or CHECK meanwhile */
	struct ec2_instance_info *mapping; /* the last DescribeInstances answer (mapping.h) */
};

/* operation.c */
void op_end(struct helper *h, struct conn *c);
void op_move(struct operation *op, enum op_state to);
bool plan_thawed(struct helper *h, struct operation *op);
int send_error(struct helper *h, struct conn *c, const char *stage, const struct amis_err *err,
               const struct operation *op);
void warn_thawed_by_others(const struct operation *op);

/* prepare.c */
int dry_run_create(struct helper *h, struct ec2_create_snapshots_req *r, struct amis_err *err);
void fill_request(struct helper *h, struct operation *op, struct ec2_create_snapshots_req *r,
                  struct ec2_tag *tags, size_t maxtags, char *desc, size_t descsz, char *tlbuf,
                  size_t tlsz);
int handle_prepare(struct helper *h, struct conn *c, const struct amsp_msgview *m);
/* One path of a PREPARE or CHECK into op->targets, checked against the allow-list. */
int resolve_one(struct helper *h, struct operation *op, const struct amsp_field *f,
                const char *what, struct amis_err *err);
/* The volumes to snapshot and to exclude, from DescribeInstances. */
int plan_volumes(struct helper *h, struct operation *op, struct amis_err *err);
/* A failed operation's error: forgets the kept mapping if it says to (mapping.h). */
void mapping_note_error(struct helper *h, const struct amis_err *err);

/* check_op.c: CHECK, the preflight check (check.h) */
int handle_check(struct helper *h, struct conn *c, const struct amsp_msgview *m);
bool in_list(char *const *list, size_t n, const char *s);

/* The volume ids a snapshot set of op must hold: every volume for an image. */
static inline char *const *op_want_ids(const struct operation *op, size_t *n)
{
	*n = op->image != IMAGE_NONE ? op->nall : op->nvolumes;
	return op->image != IMAGE_NONE ? op->all_ids : op->volume_ids;
}
/* "register", "create" or "" */
const char *image_method_name(enum image_method m);

/* image.c: the AMI methods */
int image_prepare(struct helper *h, struct operation *op, const struct ec2_instance_info *inst,
                  struct amis_err *err);
int image_dry_run(struct helper *h, struct operation *op, struct ec2_tag *tags, size_t ntags,
                  struct amis_err *err);
int image_create_while_frozen(struct helper *h, struct operation *op, const struct ec2_tag *tags,
                              size_t ntags, long timeout_ms, long long freeze_deadline_usec,
                              struct amis_err *err);
void image_cleanup_failed(struct helper *h, struct operation *op, struct amis_err *err);
int image_register(struct helper *h, struct operation *op, const struct ec2_tag *tags, size_t ntags,
                   struct amis_err *err);

/* freeze_cycle.c */
int handle_snapshot(struct helper *h, struct conn *c, const struct amsp_msgview *m);

/* tagging.c */
bool answer_lost(const struct amis_err *err);
void find_lost_snapshots(struct helper *h, struct operation *op, struct amis_err *err);
int handle_finish(struct helper *h, struct conn *c, const struct amsp_msgview *m);
void log_snapshot_ids(const struct operation *op, const char *what);
void tag_backup_state(struct helper *h, struct operation *op, const char *state);
/* The operation's snapshots carry their final backup-state: forget its inflight entry. */
void op_settled(struct helper *h, struct operation *op);
/* Tags failed what requests left unfinished by a helper that died made (inflight.h). */
void inflight_resolve(struct helper *h);
/* Entries left in state_dir/inflight: settle them when idle (op_tick), soon. */
void inflight_schedule(struct helper *h, long long delay_us);

#endif
