/*
 * operation.c - see operation.h.
 *
 * The consistency protocol (doc/design.md), helper side.  Between freeze and
 * thaw the only work is one CreateSnapshots request on an already-warm
 * connection: no logging (log_hold), no disk writes, no retries.
 *
 * A thaw that fails is the one thing worse than a failed snapshot: every
 * writer on the filesystem hangs until it is thawed.  Such a plan is never
 * closed (its open directories are what reaches the frozen superblocks); the
 * operation moves to h->stuck, op_tick() retries the thaw on every poll tick
 * and logs each failure at error level (at most once a second), and no new
 * PREPARE is accepted ("ThawPending") until everything is thawed.
 */
#include "operation.h"
#include "opstate.h"
#include "channel.h"
#include "freeze.h"
#include "log.h"
#include "marker.h"
#include "server.h"
#include "volumes.h"
#include "watchdog.h"
#include "worker_client.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

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
	struct ec2_snapshot_set snaps;
	struct watchdog wd; /* while frozen (and until reaped) */
	bool marker;        /* the frozen marker was written and not removed yet */

	/* Only on h->stuck: a plan whose thaw failed. */
	struct operation *next_stuck;
	struct amis_err thaw_err; /* the last failure */
	unsigned int thaw_retries;
	bool tag_failed_after_thaw; /* failed while frozen: tag its snapshots once thawed */
	long long thaw_next_try_usec;
	long long thaw_logged_usec;
};

struct helper {
	struct helper_config *cfg;
	struct worker *worker; /* the unprivileged EC2 worker */
	struct operation *active;
	bool thaw_requested;         /* THAW while frozen: abandon the call made while frozen */
	struct operation *stuck;     /* still frozen: thaw retried by op_tick() */
	volatile sig_atomic_t *stop; /* set by SIGTERM/SIGINT: no new freeze */
};

/* Moves op to state to; a move the state machine does not allow is a bug, logged. */
static void op_move(struct operation *op, enum op_state to)
{
	if (op->state == to)
		return;
	if (!opstate_may_move(op->state, to))
		log_error("request %s: BUG: state %s -> %s is not allowed", op->request_id,
		          opstate_name(op->state), opstate_name(to));
	else
		log_debug("request %s: %s -> %s", op->request_id, opstate_name(op->state),
		          opstate_name(to));
	op->state = to;
}

/* The helper's state: its active operation's, THAW_PENDING while only a stuck one exists. */
static enum op_state helper_state(const struct helper *h)
{
	if (h->active)
		return h->active->state;
	return h->stuck ? OPS_THAW_PENDING : OPS_IDLE;
}

static int wait_poll(void *arg, struct pollfd *fds, nfds_t n, int timeout_ms)
{
	(void)arg;
	return server_poll(fds, n, timeout_ms);
}

/* While frozen, an administrator's THAW abandons the call. */
static const char *wait_abandon(void *arg)
{
	struct helper *h = arg;

	if (!h->thaw_requested)
		return NULL;
	h->thaw_requested = false;
	return "ThawRequested";
}

struct helper *helper_new(struct helper_config *cfg, const char *config_path,
                          volatile sig_atomic_t *stop)
{
	struct helper *h = xcalloc(1, sizeof(*h));
	struct worker_waiter waiter = {wait_poll, wait_abandon, h};
	struct amis_err err;

	h->cfg = cfg;
	h->stop = stop;
	h->worker = worker_new(cfg, config_path);
	worker_set_waiter(h->worker, &waiter);
	srandom((unsigned int)(mono_usec() ^ getpid())); /* back-off jitter */
	err_clear(&err);
	if (worker_start(h->worker, &err) != 0)
		log_error("%s (retried on the next request)", err.msg);
	return h;
}

static void op_free(struct operation *op);

void helper_free(struct helper *h)
{
	if (!h)
		return;
	/* After op_shutdown(): closing a directory does not thaw, nor need to. */
	while (h->stuck) {
		struct operation *op = h->stuck;

		h->stuck = op->next_stuck;
		op_free(op);
	}
	worker_free(h->worker);
	free(h);
}

static void op_free(struct operation *op)
{
	size_t i;

	if (!op)
		return;
	free(op->targets);
	/* Still frozen (exiting with a failed thaw): the watchdog tries on its own. */
	if (freeze_plan_any_frozen(&op->plan))
		watchdog_abandon(&op->wd);
	else
		watchdog_stop(&op->wd);
	freeze_plan_close(&op->plan);
	for (i = 0; i < op->nvolumes; i++)
		free(op->volume_ids[i]);
	for (i = 0; i < op->nexclude; i++)
		free(op->exclude_ids[i]);
	ec2_snapshot_set_free(&op->snaps);
	free(op);
}

/* When the first filesystem still frozen was frozen (mono_usec), or 0. */
static long long frozen_since(const struct freeze_plan *plan)
{
	long long first = 0;
	size_t i;

	for (i = 0; i < plan->nfs; i++)
		if (plan->fs[i].frozen && (!first || plan->fs[i].frozen_at_usec < first))
			first = plan->fs[i].frozen_at_usec;
	return first;
}

static void frozen_mounts(const struct freeze_plan *plan, struct strbuf *sb)
{
	size_t i, n = 0;

	for (i = 0; i < plan->nfs; i++)
		if (plan->fs[i].frozen)
			sb_appendf(sb, "%s%s", n++ ? " " : "", plan->fs[i].mount_point);
}

/* FITHAW found a filesystem not frozen: something else thawed it in the window. */
static void warn_thawed_by_others(const struct operation *op)
{
	size_t i;

	for (i = 0; i < op->plan.nfs; i++)
		if (op->plan.fs[i].thaw_found_thawed)
			log_warn("request %s: %s was no longer frozen when the helper thawed it: "
			         "something else thawed it while the snapshot was taken",
			         op->request_id, op->plan.fs[i].mount_point);
}

/*
 * Everything of op's plan is thawed: reaps the watchdog and removes the
 * frozen marker.  Returns true if the watchdog had thawed before the helper
 * did (its deadline passed: the helper was stopped or stuck).
 */
static bool plan_thawed(struct helper *h, struct operation *op)
{
	struct amis_err err;
	bool wd_thawed = watchdog_stop(&op->wd);

	if (op->marker) {
		err_clear(&err);
		if (marker_remove(h->cfg->state_dir, &err) < 0)
			log_warn("request %s: %s", op->request_id, err.msg);
		op->marker = false;
	}
	if (wd_thawed)
		log_error("request %s: the watchdog thawed the filesystems: the helper had not "
		          "thawed them within freeze_timeout",
		          op->request_id);
	return wd_thawed;
}

static void tag_backup_state(struct helper *h, struct operation *op, const char *state);
static void log_snapshot_ids(const struct operation *op, const char *what);

/*
 * Retries the thaw of every stuck plan (at most every THAW_RETRY_USEC) and
 * frees the operations whose filesystems are all thawed now.
 */
static void retry_stuck_thaws(struct helper *h)
{
	struct operation **pp = &h->stuck;

	while (*pp) {
		struct operation *op = *pp;
		long long now = mono_usec();
		struct amis_err err;

		if (now < op->thaw_next_try_usec) {
			pp = &op->next_stuck;
			continue;
		}
		op->thaw_retries++;
		op->thaw_next_try_usec = now + THAW_RETRY_USEC;
		err_clear(&err);
		if (freeze_plan_thaw(&op->plan, &err) == 0) {
			log_warn(
			    "request %s: filesystems thawed at last, at retry %u (%.1f s after "
			    "the freeze)",
			    op->request_id, op->thaw_retries,
			    freeze_plan_window_usec(&op->plan) / 1e6);
			warn_thawed_by_others(op);
			plan_thawed(h, op);
			op_move(op, OPS_IDLE);
			*pp = op->next_stuck;
			/* An EC2 call only when nothing else is frozen either. */
			if (op->tag_failed_after_thaw && !h->stuck)
				tag_backup_state(h, op, "failed");
			else if (op->tag_failed_after_thaw)
				log_snapshot_ids(op, "not tagged failed (other filesystems still "
				                     "frozen)");
			op_free(op);
			continue;
		}
		op->thaw_err = err;
		if (now - op->thaw_logged_usec >= THAW_LOG_USEC) {
			struct strbuf mounts;

			sb_init(&mounts);
			frozen_mounts(&op->plan, &mounts);
			log_error(
			    "request %s: FILESYSTEMS STILL FROZEN for %.1f s (%s): thaw retry %u "
			    "failed: %s: %s",
			    op->request_id, (now - frozen_since(&op->plan)) / 1e6, sb_str(&mounts),
			    op->thaw_retries, err.code, err.msg);
			sb_free(&mounts);
			op->thaw_logged_usec = now;
		}
		pp = &op->next_stuck;
	}
}

/*
 * Ends the connection's operation.  A plan that is still frozen is never
 * closed: the operation is kept on h->stuck until a retry thaws it.
 */
static void op_end(struct helper *h, struct conn *c)
{
	struct operation *op = c->op;

	if (h->active == op)
		h->active = NULL;
	c->op = NULL;
	op->owner = NULL;
	if (!freeze_plan_any_frozen(&op->plan)) {
		op_move(op, OPS_IDLE);
		op_free(op);
		return;
	}
	op_move(op, OPS_THAW_PENDING);
	op->next_stuck = h->stuck;
	h->stuck = op;
	retry_stuck_thaws(h);
}

bool op_thaw_pending(const struct helper *h)
{
	return h->stuck != NULL;
}

void op_tick(struct helper *h)
{
	if (h->stuck)
		retry_stuck_thaws(h);
}

int op_shutdown(struct helper *h, long timeout_ms)
{
	long long deadline = mono_usec() + timeout_ms * 1000LL;
	struct operation *op;

	while (h->stuck && mono_usec() < deadline) {
		retry_stuck_thaws(h);
		if (h->stuck)
			poll(NULL, 0, (int)(THAW_RETRY_USEC / 1000));
	}
	for (op = h->stuck; op; op = op->next_stuck) {
		struct strbuf mounts;

		sb_init(&mounts);
		frozen_mounts(&op->plan, &mounts);
		log_error("request %s: exiting with filesystems STILL FROZEN: %s (%s); thaw them "
		          "by hand: fsfreeze -u MOUNT_POINT",
		          op->request_id, sb_str(&mounts), op->thaw_err.msg);
		sb_free(&mounts);
	}
	return h->stuck ? -1 : 0;
}

bool op_client_may_idle(const struct conn *c)
{
	/* PENDING: the backend waits in pg_backup_stop(), maybe for WAL archiving. */
	return c->op && c->op->state == OPS_PENDING;
}

/* An ERROR frame small enough to always fit, when the real answer does not. */
static int send_short_error(struct conn *c, const char *stage, const char *code, const char *msg)
{
	unsigned char buf[1024];
	struct amsp_writer w;
	size_t len;

	amsp_begin(&w, buf, sizeof(buf), AMSP_ERROR);
	amsp_put_str(&w, AMSP_T_ERROR_CODE, code);
	amsp_put_str(&w, AMSP_T_ERROR_MESSAGE, msg);
	amsp_put_str(&w, AMSP_T_ERROR_STAGE, stage);
	len = amsp_end(&w);
	return len ? conn_send(c, buf, len) : -1;
}

/*
 * An ERROR frame with everything known of the failed operation (op may be
 * NULL): the instance and region, the volumes, the snapshots EC2 created
 * anyway with their volumes, and how long writes were frozen, so that the
 * history row of a failed attempt keeps every fact the helper had.
 */
static int send_error(struct helper *h, struct conn *c, const char *stage,
                      const struct amis_err *err, const struct operation *op)
{
	unsigned char buf[8192];
	struct amsp_writer w;
	size_t len, i;

	amsp_begin(&w, buf, sizeof(buf), AMSP_ERROR);
	amsp_put_str(&w, AMSP_T_ERROR_CODE, err->code[0] ? err->code : "HelperError");
	amsp_put_str(&w, AMSP_T_ERROR_MESSAGE, err->msg);
	amsp_put_str(&w, AMSP_T_ERROR_STAGE, stage);
	if (op && op->instance_id[0]) {
		amsp_put_str(&w, AMSP_T_INSTANCE_ID, op->instance_id);
		if (worker_region(h->worker)[0])
			amsp_put_str(&w, AMSP_T_REGION, worker_region(h->worker));
	}
	for (i = 0; op && i < op->nvolumes; i++)
		amsp_put_str(&w, AMSP_T_VOLUME_ID, op->volume_ids[i]);
	for (i = 0; op && i < op->snaps.n && i < AMSP_MAX_VOLUMES; i++) {
		amsp_put_str(&w, AMSP_T_SNAPSHOT_ID, op->snaps.items[i].snapshot_id);
		amsp_put_str(&w, AMSP_T_SNAPSHOT_VOLUME, op->snaps.items[i].volume_id);
	}
	if (op && op->freeze && freeze_plan_window_usec(&op->plan) >= 0)
		amsp_put_u64(&w, AMSP_T_FREEZE_USEC, (uint64_t)freeze_plan_window_usec(&op->plan));
	len = amsp_end(&w);
	if (!len)
		return send_short_error(
		    c, stage, "ResponseTooLarge",
		    "the helper's error report did not fit in a protocol frame; "
		    "see the helper's log");
	return conn_send(c, buf, len);
}

/* The same rules as the extension: EC2 AMI names, a subset of tag values. */
static bool valid_name(const char *s)
{
	size_t n = strlen(s), i;

	if (n < 3 || n > 128)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (!isalnum(ch) && !strchr("()[] ./-'@_", ch))
			return false;
	}
	return true;
}

static bool valid_request_id(const char *s)
{
	size_t n = strlen(s), i;

	if (n < 1 || n > 64)
		return false;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-')
			return false;
	return true;
}

static int resolve_one(struct helper *h, struct operation *op, const struct amsp_field *f,
                       const char *what, struct amis_err *err)
{
	const struct helper_config *cfg = h->cfg;
	struct volume_override ov[CONFIG_MAX_LIST];
	const struct sys_paths *sp = &volumes_sys_paths_default;
	char path[4096];
	struct fs_target *t;
	size_t i;

	if (op->ntargets >= MAX_TARGETS)
		return err_set(err, AMIS_E_TOO_MANY_PATHS, "too many paths in the request");
	if (amsp_copy_str(f, path, sizeof(path)) != 0 || path[0] != '/')
		return err_set(err, AMIS_E_INVALID_PATH, "%s path is not absolute", what);
	for (i = 0; i < cfg->n_volume_map; i++) {
		ov[i].device = cfg->volume_map[i].key;
		ov[i].volume_id = cfg->volume_map[i].value;
	}
	/* Grown one at a time: an entry is 25 KB, MAX_TARGETS of them 0.9 MB to zero. */
	op->targets = xrealloc(op->targets, (op->ntargets + 1) * sizeof(*op->targets));
	t = &op->targets[op->ntargets];
	memset(t, 0, sizeof(*t));
	if (volumes_resolve_path(sp, path, ov, cfg->n_volume_map, t, err) != 0)
		return err_prefix(err, "%s \"%s\"", what, path);
	if (!volumes_path_allowed(t->mount_point, (const char *const *)cfg->allow, cfg->n_allow,
	                          cfg->allow_root_filesystem))
		return err_set(
		    err, AMIS_E_PATH_NOT_ALLOWED,
		    "%s \"%s\" is on filesystem \"%s\", which is not allowed by the "
		    "helper's configuration ([filesystems] allow%s)",
		    what, path, t->mount_point,
		    (!strcmp(t->mount_point, "/") || !strncmp(t->mount_point, "/boot", 5))
		        ? ", allow_root_filesystem"
		        : "");
	op->ntargets++;
	return 0;
}

static bool in_list(char *const *list, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(list[i], s))
			return true;
	return false;
}

/* Which volumes to snapshot, which to exclude, from the instance's mapping. */
static int plan_volumes(struct helper *h, struct operation *op, struct amis_err *err)
{
	struct ec2_instance_info *inst = xcalloc(1, sizeof(*inst));
	size_t i, j;
	int rc = -1;

	if (worker_describe_instance(h->worker, h->cfg->ec2_timeout_ms, inst, err) != 0)
		goto out; /* "EC2 DescribeInstances: ..." */
	/* Xen: disks known by device name only; the mapping gives the volume. */
	if (freeze_plan_unresolved_disks(&op->plan) > 0) {
		for (j = 0; j < inst->nvolumes; j++)
			if (freeze_plan_set_device_volume(&op->plan, inst->volumes[j].device_name,
			                                  inst->volumes[j].volume_id, err) < 0)
				goto out;
		if (freeze_plan_unresolved_disks(&op->plan) > 0) {
			err_set(
			    err, AMIS_E_VOLUME_NOT_FOUND,
			    "a disk holding database files is not in instance %s's block device "
			    "mapping; map it in the helper's [volumes] section",
			    worker_instance_id(h->worker));
			goto out;
		}
	}
	for (i = 0; i < op->plan.nvolumes; i++) {
		if (op->nvolumes >= MAX_VOLUMES) {
			err_set(err, AMIS_E_TOO_MANY_VOLUMES, "more than %d EBS volumes",
			        MAX_VOLUMES);
			goto out;
		}
		op->volume_ids[op->nvolumes++] = xstrdup(op->plan.volume_ids[i]);
	}
	for (i = 0; i < op->nvolumes; i++) {
		bool found = false;

		for (j = 0; j < inst->nvolumes; j++) {
			if (!strcmp(inst->volumes[j].volume_id, op->volume_ids[i])) {
				found = true;
				snprintf(op->device_names[i], sizeof(op->device_names[i]), "%s",
				         inst->volumes[j].device_name);
			}
		}
		if (!found) {
			err_set(err, AMIS_E_VOLUME_NOT_ATTACHED,
			        "volume %s holds database files but is not attached to instance %s",
			        op->volume_ids[i], worker_instance_id(h->worker));
			goto out;
		}
	}
	op->exclude_boot = true;
	for (j = 0; j < inst->nvolumes; j++) {
		const struct ec2_block_device *bd = &inst->volumes[j];
		bool is_root = !strcmp(bd->device_name, inst->root_device_name);

		if (in_list(op->volume_ids, op->nvolumes, bd->volume_id)) {
			if (is_root)
				op->exclude_boot = false;
			continue;
		}
		if (is_root)
			continue; /* ExcludeBootVolume, not ExcludeDataVolumeId */
		if (op->nexclude < sizeof(op->exclude_ids) / sizeof(op->exclude_ids[0]))
			op->exclude_ids[op->nexclude++] = xstrdup(bd->volume_id);
	}
	rc = 0;
out:
	free(inst);
	return rc;
}

static void add_tag(struct ec2_tag *tags, size_t *n, size_t max, const char *k, const char *v)
{
	if (*n < max) {
		tags[*n].key = k;
		tags[*n].value = v;
		(*n)++;
	}
}

static void fill_request(struct helper *h, struct operation *op, struct ec2_create_snapshots_req *r,
                         struct ec2_tag *tags, size_t maxtags, char *desc, size_t descsz,
                         char *tlbuf, size_t tlsz)
{
	size_t i;

	memset(r, 0, sizeof(*r));
	snprintf(desc, descsz, "ami_snapshot %s (request %s)", op->name, op->request_id);
	snprintf(tlbuf, tlsz, "%u", op->timeline);
	r->instance_id = op->instance_id;
	r->description = desc;
	r->exclude_boot_volume = op->exclude_boot;
	r->exclude_volume_ids = (const char *const *)op->exclude_ids;
	r->n_exclude = op->nexclude;
	r->tags = tags;
	add_tag(tags, &r->ntags, maxtags, "Name", op->name);
	add_tag(tags, &r->ntags, maxtags, "ami-snapshot:name", op->name);
	add_tag(tags, &r->ntags, maxtags, "ami-snapshot:tool", TOOL_TAG_VALUE);
	add_tag(tags, &r->ntags, maxtags, "ami-snapshot:request-id", op->request_id);
	add_tag(tags, &r->ntags, maxtags, "ami-snapshot:backup-state", "started");
	if (op->start_lsn[0])
		add_tag(tags, &r->ntags, maxtags, "ami-snapshot:start-lsn", op->start_lsn);
	if (op->timeline)
		add_tag(tags, &r->ntags, maxtags, "ami-snapshot:timeline", tlbuf);
	if (op->system_id[0])
		add_tag(tags, &r->ntags, maxtags, "ami-snapshot:system-identifier", op->system_id);
	if (op->pg_version[0])
		add_tag(tags, &r->ntags, maxtags, "ami-snapshot:pg-version", op->pg_version);
	for (i = 0; i < h->cfg->n_tags; i++)
		add_tag(tags, &r->ntags, maxtags, h->cfg->tags[i].key, h->cfg->tags[i].value);
}

/*
 * A DryRun CreateSnapshots: checks the IAM permission and the request, and
 * leaves a warm connection (DNS, TCP, TLS) for the call made while frozen.
 */
static int dry_run_create(struct helper *h, struct ec2_create_snapshots_req *r,
                          struct amis_err *err)
{
	struct ec2_snapshot_set none = {0};
	int rc;

	r->dry_run = true;
	rc = worker_create_snapshots(h->worker, r, h->cfg->ec2_timeout_ms,
	                             h->cfg->ec2_timeout_ms + 15000L, false, &none, err);
	r->dry_run = false;
	ec2_snapshot_set_free(&none);
	return rc;
}

/* A PREPARE while another operation is active: Busy, at once. */
static int refuse_busy(struct helper *h, struct conn *c)
{
	struct amis_err err;

	err_clear(&err);
	err_set(&err, AMIS_E_BUSY,
	        "another snapshot operation (request %s) is in progress; only one runs at a time",
	        h->active ? h->active->request_id : "?");
	send_error(h, c, "prepare", &err, NULL);
	log_warn("pid %ld: refused PREPARE: %s", (long)c->pid, err.msg);
	return -1;
}

/* A PREPARE while a failed thaw is retried: ThawPending, at once. */
static int refuse_thaw_pending(struct helper *h, struct conn *c)
{
	struct amis_err err;
	struct strbuf mounts;

	err_clear(&err);
	sb_init(&mounts);
	frozen_mounts(&h->stuck->plan, &mounts);
	err_set(&err, AMIS_E_THAW_PENDING,
	        "filesystems frozen by request %s are still frozen (%s) and the helper keeps "
	        "retrying the thaw; no new snapshot until they are thawed: %s",
	        h->stuck->request_id, sb_str(&mounts), h->stuck->thaw_err.msg);
	sb_free(&mounts);
	send_error(h, c, "prepare", &err, NULL);
	log_error("pid %ld: refused PREPARE: %s", (long)c->pid, err.msg);
	return -1;
}

static int handle_prepare(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	struct operation *op;
	struct amis_err err;
	unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
	struct amsp_writer w;
	size_t i, len;

	err_clear(&err);
	op = xcalloc(1, sizeof(*op));
	op->owner = c;
	op->wd = WATCHDOG_NONE;
	amsp_copy_str(amsp_get(m, AMSP_T_REQUEST_ID), op->request_id, sizeof(op->request_id));
	amsp_copy_str(amsp_get(m, AMSP_T_NAME), op->name, sizeof(op->name));
	amsp_copy_str(amsp_get(m, AMSP_T_SYSTEM_ID), op->system_id, sizeof(op->system_id));
	amsp_copy_str(amsp_get(m, AMSP_T_PG_VERSION), op->pg_version, sizeof(op->pg_version));
	op->freeze = amsp_u8(amsp_get(m, AMSP_T_FREEZE)) != 0;
	c->op = op;
	h->active = op;
	op_move(op, OPS_PREPARING);

	if (!valid_request_id(op->request_id)) {
		err_set(&err, AMIS_E_INVALID_REQUEST, "invalid request id");
		goto fail;
	}
	if (!valid_name(op->name)) {
		err_set(&err, AMIS_E_INVALID_NAME,
		        "snapshot name must be 3 to 128 characters of letters, digits, spaces and "
		        "( ) [ ] . / - ' @ _");
		goto fail;
	}
	log_info("request %s from pid %ld: prepare \"%s\" (freeze=%s)", op->request_id,
	         (long)c->pid, op->name, op->freeze ? "on" : "off");

	if (resolve_one(h, op, amsp_get(m, AMSP_T_PATH_DATA), "data directory", &err) != 0)
		goto fail;
	if (amsp_get(m, AMSP_T_PATH_WAL) &&
	    resolve_one(h, op, amsp_get(m, AMSP_T_PATH_WAL), "WAL directory", &err) != 0)
		goto fail;
	for (i = 0; i < amsp_count(m, AMSP_T_PATH_TABLESPACE); i++)
		if (resolve_one(h, op, amsp_get_nth(m, AMSP_T_PATH_TABLESPACE, i), "tablespace",
		                &err) != 0)
			goto fail;
	if (freeze_plan_build(op->targets, op->ntargets, &op->plan, &err) != 0)
		goto fail;
	if (op->freeze && marker_check_dir(h->cfg->state_dir, &op->plan, &err) != 0)
		goto fail;
	/* A client that goes away ends the wait for EC2 at once. */
	worker_set_abort_fd(h->worker, c->fd);
	if (worker_ready(h->worker, &err) != 0)
		goto fail;
	snprintf(op->instance_id, sizeof(op->instance_id), "%s", worker_instance_id(h->worker));
	if (plan_volumes(h, op, &err) != 0)
		goto fail;

	if (h->cfg->preflight_dry_run) {
		struct ec2_create_snapshots_req r;
		struct ec2_tag tags[MAX_CREATE_TAGS];
		char desc[512], tl[16];

		fill_request(h, op, &r, tags, MAX_CREATE_TAGS, desc, sizeof(desc), tl, sizeof(tl));
		if (dry_run_create(h, &r, &err) != 0) {
			err_prefix(&err, "preflight (DryRun)");
			goto fail;
		}
	}

	worker_set_abort_fd(h->worker, -1);
	amsp_begin(&w, buf, sizeof(buf), AMSP_PREPARED);
	amsp_put_str(&w, AMSP_T_INSTANCE_ID, worker_instance_id(h->worker));
	amsp_put_str(&w, AMSP_T_REGION, worker_region(h->worker));
	for (i = 0; i < op->nvolumes; i++)
		amsp_put_str(&w, AMSP_T_VOLUME_ID, op->volume_ids[i]);
	for (i = 0; i < op->plan.nfs; i++)
		amsp_put_str(&w, AMSP_T_MOUNT_POINT, op->plan.fs[i].mount_point);
	len = amsp_end(&w);
	if (!len) {
		err_set(&err, AMIS_E_RESPONSE_TOO_LARGE,
		        "the answer (%zu volumes, %zu filesystems to freeze) does not fit in one "
		        "protocol frame: mount point paths too long",
		        op->nvolumes, op->plan.nfs);
		goto fail;
	}
	if (conn_send(c, buf, len) != 0) {
		log_warn("request %s: could not send PREPARED", op->request_id);
		op_end(h, c);
		return -1;
	}
	op_move(op, OPS_PREPARED);
	{
		struct strbuf vols;

		sb_init(&vols);
		for (i = 0; i < op->nvolumes; i++)
			sb_appendf(&vols, "%s%s", i ? "," : "", op->volume_ids[i]);
		log_info("request %s: prepared: instance %s, volumes %s, %zu filesystem(s)",
		         op->request_id, worker_instance_id(h->worker), sb_str(&vols),
		         op->plan.nfs);
		sb_free(&vols);
	}
	return 0;

fail:
	worker_set_abort_fd(h->worker, -1);
	log_warn("request %s: prepare failed: %s: %s", op->request_id, err.code, err.msg);
	send_error(h, c, "prepare", &err, op);
	op_end(h, c);
	return -1;
}

/* Marks snapshots of an operation that did not complete; after the thaw only. */
static void tag_backup_state(struct helper *h, struct operation *op, const char *state)
{
	struct ec2_tag tag = {"ami-snapshot:backup-state", state};
	const char *ids[MAX_VOLUMES];
	struct amis_err err;
	size_t i;

	if (!op->snaps.n)
		return;
	for (i = 0; i < op->snaps.n && i < MAX_VOLUMES; i++)
		ids[i] = op->snaps.items[i].snapshot_id;
	err_clear(&err);
	if (worker_create_tags(h->worker, ids, i, &tag, 1, h->cfg->ec2_timeout_ms, &err) != 0)
		log_warn("request %s: could not tag snapshots as %s: %s: %s", op->request_id, state,
		         err.code, err.msg);
}

/* Logs op's snapshot ids (what a later tag is about). */
static void log_snapshot_ids(const struct operation *op, const char *what)
{
	struct strbuf ids;
	size_t i;

	if (!op->snaps.n)
		return;
	sb_init(&ids);
	for (i = 0; i < op->snaps.n; i++)
		sb_appendf(&ids, "%s%s", i ? "," : "", op->snaps.items[i].snapshot_id);
	log_warn("request %s: snapshots %s: %s", op->request_id, what, sb_str(&ids));
	sb_free(&ids);
}

/*
 * After a Timeout, ConnectionError, broken body or a call abandoned for a
 * vanished client, the call may have succeeded on EC2's side
 * (AMIS_F_MAYBE_DONE in errcodes.h).
 */
static bool answer_lost(const struct amis_err *err)
{
	return (err_flags(err) & AMIS_F_MAYBE_DONE) != 0;
}

/* Sleeps ms while the server keeps answering other clients (status, Busy). */
static void sleep_serving(long ms)
{
	long long deadline = mono_usec() + ms * 1000LL;
	long long left;

	while ((left = (deadline - mono_usec()) / 1000) > 0)
		server_poll(NULL, 0, left > 1000 ? 1000 : (int)left);
}

/*
 * The snapshots carrying op's request-id tag, looked for twice
 * (DescribeSnapshots is eventually consistent) unless found at once.
 */
static int lookup_by_request_tag(struct helper *h, struct operation *op,
                                 struct ec2_snapshot_set *found, struct amis_err *derr)
{
	int attempt, rc = -1;

	err_clear(derr);
	for (attempt = 0; attempt < 2; attempt++) {
		if (attempt) {
			/* Not while a thaw is pending: its retries must not wait for this. */
			if (freeze_plan_any_frozen(&op->plan))
				break;
			sleep_serving(LOST_SNAPSHOTS_RECHECK_MS);
		}
		rc = worker_find_snapshots(h->worker, REQUEST_ID_TAG, op->request_id,
		                           h->cfg->ec2_timeout_ms, found, derr);
		if (rc != 0 || found->n > 0)
			break;
	}
	return rc;
}

/* Appends to into the snapshots of from that it does not hold yet; frees from. */
static void merge_snapshots(struct ec2_snapshot_set *into, struct ec2_snapshot_set *from)
{
	size_t i, j;

	into->items = xrealloc(into->items, (into->n + from->n) * sizeof(*into->items));
	for (i = 0; i < from->n; i++) {
		for (j = 0; j < into->n; j++)
			if (!strcmp(into->items[j].snapshot_id, from->items[i].snapshot_id))
				break;
		if (j == into->n)
			into->items[into->n++] = from->items[i];
	}
	ec2_snapshot_set_free(from);
}

/*
 * Finds the snapshots a CreateSnapshots whose answer was lost created anyway,
 * by the request-id tag the call itself set, so that they are reported to the
 * client and tagged failed instead of being left as unexplained orphans.
 * After the thaw only.  Adds what it found (or could not find out) to err.
 */
static void find_lost_snapshots(struct helper *h, struct operation *op, struct amis_err *err)
{
	struct ec2_snapshot_set found = {0};
	struct amis_err derr;
	struct strbuf ids;
	size_t i;
	int rc;

	rc = lookup_by_request_tag(h, op, &found, &derr);
	if (rc != 0) {
		log_warn("request %s: could not look for snapshots created despite the failure: "
		         "%s: %s",
		         op->request_id, derr.code, derr.msg);
		err_append(
		    err,
		    "EC2 may have created snapshots anyway; they carry the tag %s=%s (looking "
		    "for them failed: %s)",
		    REQUEST_ID_TAG, op->request_id, derr.code);
		return;
	}
	if (!found.n && !op->snaps.n) {
		log_info("request %s: no snapshot with %s=%s: EC2 created none", op->request_id,
		         REQUEST_ID_TAG, op->request_id);
		return;
	}
	/* What the answer listed (if anything) and what the tag finds, once each. */
	merge_snapshots(&op->snaps, &found);
	sb_init(&ids);
	for (i = 0; i < op->snaps.n; i++)
		sb_appendf(&ids, "%s%s", i ? "," : "", op->snaps.items[i].snapshot_id);
	log_warn("request %s: EC2 created %zu snapshot(s) despite the failure: %s", op->request_id,
	         op->snaps.n, sb_str(&ids));
	err_append(err, "EC2 created %zu snapshot(s) anyway (%s), tagged %s=failed", op->snaps.n,
	           sb_str(&ids), "ami-snapshot:backup-state");
	sb_free(&ids);
}

enum cycle_outcome {
	CYCLE_OK,            /* CreateSnapshots succeeded, everything thawed */
	CYCLE_NOT_FROZEN,    /* failed before anything was frozen: err */
	CYCLE_CALL_FAILED,   /* CreateSnapshots failed: call_err; everything thawed */
	CYCLE_THAW_FAILED,   /* err is ThawFailed: filesystems may still be frozen */
	CYCLE_FREEZE_BROKEN, /* call succeeded but a thaw came before: err; op->snaps */
};

/*
 * One freeze cycle: re-warm the connection, write the frozen marker, open
 * the plan, fork the watchdog, freeze, make the CreateSnapshots call, thaw,
 * reap the watchdog, remove the marker.  Between freeze and thaw: the call
 * only (log_hold).  *call_usec: how long the call took.
 */
static enum cycle_outcome freeze_cycle_inner(struct helper *h, struct operation *op,
                                             struct ec2_create_snapshots_req *r,
                                             struct amis_err *err, struct amis_err *call_err,
                                             long long *call_usec)
{
	struct amis_err thaw_err;
	long long t_call0, t_call1;
	long timeout_ms;
	int rc, thaw_rc = 0;
	bool broken = false;
	size_t i;

	err_clear(&thaw_err);
	ec2_snapshot_set_free(&op->snaps);
	memset(&op->snaps, 0, sizeof(op->snaps));
	op_move(op, OPS_FREEZING);
	/* Everything that may be slow happens before the freeze. */
	if (worker_ready(h->worker, err) != 0)
		return CYCLE_NOT_FROZEN;
	/*
	 * The preflight DryRun was made before the checkpoint, maybe minutes ago:
	 * the keep-alive connection may be gone.  Re-open it now, with the very
	 * request about to be made, so the call made while frozen costs one round
	 * trip and not DNS + TCP + TLS.
	 */
	if (h->cfg->preflight_dry_run && dry_run_create(h, r, err) != 0) {
		err_prefix(err, "the DryRun made just before freezing failed; nothing was frozen");
		return CYCLE_NOT_FROZEN;
	}
	timeout_ms = op->freeze ? h->cfg->freeze_timeout_ms : h->cfg->ec2_timeout_ms;
	if (op->freeze) {
		if (marker_write(h->cfg->state_dir, &op->plan, op->request_id, err) != 0)
			return CYCLE_NOT_FROZEN;
		op->marker = true;
		/*
		 * The watchdog inherits the open directories: it thaws the very
		 * superblocks frozen, and its fork is paid before the freeze.  Its
		 * deadline counts from now, just before the first FIFREEZE.
		 */
		if (freeze_plan_open(&op->plan, err) != 0 ||
		    watchdog_start(&op->wd, &op->plan, h->cfg->state_dir,
		                   mono_usec() + (timeout_ms + WATCHDOG_MARGIN_MS) * 1000LL,
		                   err) != 0) {
			freeze_plan_close(&op->plan);
			plan_thawed(h, op);
			return CYCLE_NOT_FROZEN;
		}
	}

	log_hold();
	h->thaw_requested = false;
	if (op->freeze) {
		if (freeze_plan_freeze(&op->plan, err) != 0) {
			log_release();
			if (freeze_plan_any_frozen(&op->plan)) {
				/* The rollback's thaw failed too: that is the news. */
				thaw_err = *err;
				err_set(err, AMIS_E_THAW_FAILED,
				        "%s: filesystems may still be frozen; retrying",
				        thaw_err.msg);
				return CYCLE_THAW_FAILED;
			}
			plan_thawed(h, op);
			return CYCLE_NOT_FROZEN;
		}
		op_move(op, OPS_FROZEN);
		/* The deadline counts from the first freeze. */
		timeout_ms -= (long)((mono_usec() - op->plan.fs[0].frozen_at_usec) / 1000);
		if (timeout_ms < 1)
			timeout_ms = 1;
	}
	t_call0 = mono_usec();
	/*
	 * A client that goes away (cancel, timeout, exit), a THAW from an
	 * administrator, or a worker that does not answer in time end the wait
	 * at once; the worker's EC2 timeout is the same deadline.
	 */
	rc = worker_create_snapshots(h->worker, r, timeout_ms, timeout_ms + WORKER_WAIT_SLACK_MS,
	                             op->freeze, &op->snaps, call_err);
	t_call1 = mono_usec();
	if (op->freeze)
		thaw_rc = freeze_plan_thaw(&op->plan, &thaw_err);
	log_release();
	*call_usec = t_call1 - t_call0;

	if (op->freeze && thaw_rc == 0) {
		broken = plan_thawed(h, op);
		log_info("request %s: writes frozen for %.3f ms (CreateSnapshots %.3f ms)",
		         op->request_id, freeze_plan_window_usec(&op->plan) / 1000.0,
		         (t_call1 - t_call0) / 1000.0);
		for (i = 0; i < op->plan.nfs; i++) {
			const struct freeze_fs *fs = &op->plan.fs[i];

			log_debug("request %s: %s: FIFREEZE took %.3f ms, frozen %.3f ms",
			          op->request_id, fs->mount_point,
			          (fs->freeze_returned_usec - fs->frozen_at_usec) / 1000.0,
			          (fs->thawed_at_usec - fs->frozen_at_usec) / 1000.0);
		}
	}
	if (op->freeze) {
		warn_thawed_by_others(op);
		for (i = 0; i < op->plan.nfs; i++)
			if (op->plan.fs[i].thaw_found_thawed)
				broken = true;
	}
	if (thaw_rc != 0) {
		log_error("request %s: THAW FAILED: %s: %s", op->request_id, thaw_err.code,
		          thaw_err.msg);
		err_set(err, AMIS_E_THAW_FAILED, "%s: filesystems may still be frozen; retrying",
		        thaw_err.msg);
		if (rc != 0)
			err_append(err, "and the snapshot failed too: %s: %s", call_err->code,
			           call_err->msg);
		return CYCLE_THAW_FAILED;
	}
	if (rc == 0 && broken) {
		/* Writes resumed before EC2 answered: not a consistent snapshot. */
		err_set(err, AMIS_E_FREEZE_BROKEN,
		        "the filesystems were thawed before EC2 answered (by the watchdog at its "
		        "deadline, or by someone else); the snapshot cannot be trusted as "
		        "consistent");
		return CYCLE_FREEZE_BROKEN;
	}
	return rc == 0 ? CYCLE_OK : CYCLE_CALL_FAILED;
}

/* A client that goes away ends every wait for EC2 of the cycle at once. */
static enum cycle_outcome freeze_cycle(struct helper *h, struct operation *op,
                                       struct ec2_create_snapshots_req *r, struct amis_err *err,
                                       struct amis_err *call_err, long long *call_usec)
{
	enum cycle_outcome out;

	worker_set_abort_fd(h->worker, op->owner ? op->owner->fd : -1);
	out = freeze_cycle_inner(h, op, r, err, call_err, call_usec);
	worker_set_abort_fd(h->worker, -1);
	return out;
}

/* Whether a failed CreateSnapshots is worth another freeze cycle. */
static bool call_retryable(struct helper *h, struct operation *op, const struct amis_err *call_err)
{
	/*
	 * The answer was lost (ClientGone: nobody is waiting either): the call
	 * may have worked, and DescribeSnapshots can miss snapshots that exist;
	 * a retry could make a second set, and freeze again.  Never retried:
	 * the failure path looks them up by tag and tags them failed.
	 */
	if (answer_lost(call_err))
		return false;
	return ec2_error_is_retryable(call_err);
}

/*
 * Waits ms while watching the client: 0 after the wait, -1 (with *why) as
 * soon as the client closes its end or says anything (it is waiting for
 * the answer to SNAPSHOT and has nothing to say but ABORT), or the helper
 * is asked to stop.
 */
static int wait_watching_client(struct helper *h, struct conn *c, long ms, const char **why)
{
	long long deadline = mono_usec() + ms * 1000LL;

	for (;;) {
		struct pollfd p = {.fd = c->fd, .events = POLLIN | POLLRDHUP};
		long long left = (deadline - mono_usec()) / 1000;
		int n;

		/* SIGTERM interrupts poll() (EINTR): checked on every turn. */
		if (h->stop && *h->stop) {
			*why = "helper stopping";
			return -1;
		}
		if (left <= 0)
			return 0;
		/* Other clients are served meanwhile (Busy, status). */
		n = server_poll(&p, 1, left > 1000 ? 1000 : (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			*why = "could not watch the client";
			return -1;
		}
		if (n == 0)
			continue;
		if (p.revents & (POLLHUP | POLLRDHUP | POLLERR)) {
			*why = "client closed the connection";
			return -1;
		}
		*why = "client sent a message during the retry back-off";
		return -1;
	}
}

/* Whether op->snaps is one pending (or completed) snapshot of each volume of op. */
static int check_snapshot_set(const struct operation *op, struct amis_err *err)
{
	size_t i, j, seen;

	if (op->snaps.n != op->nvolumes)
		return err_set(err, AMIS_E_UNEXPECTED_SNAPSHOT_SET,
		               "CreateSnapshots returned %zu snapshots for %zu volumes",
		               op->snaps.n, op->nvolumes);
	for (i = 0; i < op->snaps.n; i++) {
		const struct ec2_snapshot_info *s = &op->snaps.items[i];

		if (!in_list(op->volume_ids, op->nvolumes, s->volume_id))
			return err_set(
			    err, AMIS_E_UNEXPECTED_SNAPSHOT_SET,
			    "CreateSnapshots returned a snapshot of volume %s, which holds "
			    "no database files",
			    s->volume_id);
	}
	for (i = 0; i < op->nvolumes; i++) {
		for (j = 0, seen = 0; j < op->snaps.n; j++)
			if (!strcmp(op->snaps.items[j].volume_id, op->volume_ids[i]))
				seen++;
		if (seen != 1)
			return err_set(err, AMIS_E_UNEXPECTED_SNAPSHOT_SET,
			               "CreateSnapshots returned %zu snapshots of volume %s", seen,
			               op->volume_ids[i]);
	}
	for (i = 0; i < op->snaps.n; i++) {
		const struct ec2_snapshot_info *s = &op->snaps.items[i];

		for (j = 0; j < i; j++)
			if (!strcmp(op->snaps.items[j].snapshot_id, s->snapshot_id))
				return err_set(err, AMIS_E_UNEXPECTED_SNAPSHOT_SET,
				               "CreateSnapshots returned snapshot %s twice",
				               s->snapshot_id);
		if (strcmp(s->state, "pending") && strcmp(s->state, "completed"))
			return err_set(err, AMIS_E_SNAPSHOT_FAILED,
			               "snapshot %s of volume %s is in state %s", s->snapshot_id,
			               s->volume_id, s->state);
	}
	return 0;
}

static int handle_snapshot(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	struct operation *op = c->op;
	struct ec2_create_snapshots_req r;
	struct ec2_tag tags[MAX_CREATE_TAGS];
	struct amis_err err, call_err, thaw_err;
	struct strbuf attempts;
	char desc[512], tl[16];
	long long call_usec = 0;
	unsigned char buf[8192];
	struct amsp_writer w;
	size_t i, j, len;
	bool lost = false;
	int attempt;

	err_clear(&err);
	err_clear(&call_err);
	err_clear(&thaw_err);
	if (!op || op->state != OPS_PREPARED) {
		log_warn("pid %ld: SNAPSHOT out of order", (long)c->pid);
		return -1;
	}
	amsp_copy_str(amsp_get(m, AMSP_T_START_LSN), op->start_lsn, sizeof(op->start_lsn));
	op->timeline = amsp_u32(amsp_get(m, AMSP_T_TIMELINE));
	fill_request(h, op, &r, tags, MAX_CREATE_TAGS, desc, sizeof(desc), tl, sizeof(tl));
	op->ncreate_tags = r.ntags;

	/*
	 * A retryable failure of the call made while frozen: thaw (done), wait,
	 * and run the whole cycle again.  Never a retry while frozen.
	 */
	sb_init(&attempts);
	for (attempt = 1;; attempt++) {
		enum cycle_outcome out;
		const char *why = NULL;
		long wait;

		err_clear(&err);
		err_clear(&call_err);
		op_move(op, OPS_PREPARED);
		/* Never a freeze after a stop request. */
		if (h->stop && *h->stop) {
			err_set(&err, AMIS_E_HELPER_STOPPING,
			        "the helper is stopping; nothing was frozen for this attempt");
			if (attempt > 1)
				err_prefix(&err, "%d attempts failed (%s)", attempt - 1,
				           sb_str(&attempts));
			goto fail;
		}
		out = freeze_cycle(h, op, &r, &err, &call_err, &call_usec);
		if (out == CYCLE_OK)
			break;
		if (out == CYCLE_FREEZE_BROKEN) {
			sb_appendf(&attempts, "%s%s", attempt > 1 ? ", " : "", err.code);
			goto fail;
		}
		if (out == CYCLE_CALL_FAILED) {
			err = call_err;
			lost = answer_lost(&call_err);
			if (err_is(&err, AMIS_E_TIMEOUT))
				err_prefix(&err, op->freeze
				                     ? "no answer within the freeze deadline "
				                       "(freeze_timeout); filesystems were thawed"
				                     : "no answer within ec2_timeout");
		}
		sb_appendf(&attempts, "%s%s", attempt > 1 ? ", " : "",
		           out == CYCLE_CALL_FAILED ? call_err.code : err.code);
		/*
		 * Retried: the call made while frozen, and the DryRun just before
		 * (which creates nothing); never a failed thaw.
		 */
		if (out == CYCLE_THAW_FAILED || attempt > h->cfg->retries ||
		    (out == CYCLE_CALL_FAILED && !call_retryable(h, op, &call_err)) ||
		    (out == CYCLE_NOT_FROZEN && !ec2_error_is_retryable(&err))) {
			if (attempt > 1)
				err_prefix(&err, "all %d attempts failed (%s)", attempt,
				           sb_str(&attempts));
			goto fail;
		}
		if (out == CYCLE_NOT_FROZEN)
			call_err = err;
		lost = false; /* looked: EC2 created nothing */
		wait = retry_backoff_ms(h->cfg->retry_backoff_ms, attempt + 1, &call_err);
		log_warn("request %s: attempt %d of %ld failed: %s: %s; nothing is frozen, "
		         "retrying in %.1f s",
		         op->request_id, attempt, h->cfg->retries + 1, call_err.code, call_err.msg,
		         wait / 1000.0);
		if (wait_watching_client(h, c, wait, &why) != 0) {
			if (h->stop && *h->stop) {
				err_set(&err, AMIS_E_HELPER_STOPPING,
				        "the helper is stopping: no retry after attempt %d (%s)",
				        attempt, sb_str(&attempts));
				goto fail;
			}
			log_warn("request %s: %s; no retry, operation abandoned", op->request_id,
			         why);
			sb_free(&attempts);
			op_end(h, c);
			return -1;
		}
	}
	if (attempt > 1)
		log_info("request %s: CreateSnapshots succeeded at attempt %d (after %s)",
		         op->request_id, attempt, sb_str(&attempts));
	err_clear(&err);

	/*
	 * The snapshot set must be exactly the volumes we asked for, each once,
	 * pending.  Anything else is a broken promise of EC2's (or of something
	 * in between): the set is not used, and since the answer cannot be
	 * trusted to list everything the call made, EC2 is asked by tag too.
	 */
	if (check_snapshot_set(op, &err) != 0) {
		lost = !err_is(&err, AMIS_E_SNAPSHOT_FAILED);
		goto fail;
	}

	amsp_begin(&w, buf, sizeof(buf), AMSP_PENDING);
	for (i = 0; i < op->snaps.n; i++)
		amsp_put_str(&w, AMSP_T_SNAPSHOT_ID, op->snaps.items[i].snapshot_id);
	for (i = 0; i < op->snaps.n; i++)
		amsp_put_str(&w, AMSP_T_SNAPSHOT_VOLUME, op->snaps.items[i].volume_id);
	amsp_put_u64(&w, AMSP_T_FREEZE_USEC,
	             op->freeze ? (uint64_t)freeze_plan_window_usec(&op->plan) : 0);
	amsp_put_u64(&w, AMSP_T_SNAPSHOT_USEC, (uint64_t)call_usec);
	len = amsp_end(&w);
	if (!len || conn_send(c, buf, len) != 0) {
		log_warn("request %s: client gone before PENDING could be sent", op->request_id);
		sb_free(&attempts);
		tag_backup_state(h, op, "aborted");
		op_end(h, c);
		return -1;
	}
	op_move(op, OPS_PENDING);
	{
		struct strbuf ids;

		sb_init(&ids);
		for (j = 0; j < op->snaps.n; j++)
			sb_appendf(&ids, "%s%s", j ? "," : "", op->snaps.items[j].snapshot_id);
		log_info("request %s: snapshots pending: %s", op->request_id, sb_str(&ids));
		sb_free(&ids);
	}
	sb_free(&attempts);
	return 0;

fail:
	/* Before anything slow: a second attempt, right away (then op_tick's). */
	if (freeze_plan_any_frozen(&op->plan) && freeze_plan_thaw(&op->plan, &thaw_err) == 0) {
		plan_thawed(h, op);
		log_warn("request %s: the second attempt thawed the filesystems", op->request_id);
		err_append(&err, "the second attempt thawed them");
	}
	sb_free(&attempts);
	if (lost)
		find_lost_snapshots(h, op, &err);
	if (freeze_plan_any_frozen(&op->plan))
		log_error("request %s: snapshot failed: %s: %s", op->request_id, err.code, err.msg);
	else
		log_warn("request %s: snapshot failed: %s: %s", op->request_id, err.code, err.msg);
	/*
	 * Tagged before the answer: when ami_snapshot() returns, the helper is
	 * idle again, and a retry does not meet Busy.
	 */
	if (freeze_plan_any_frozen(&op->plan)) {
		/* No EC2 call while frozen: tagged once the stuck thaw works. */
		op->tag_failed_after_thaw = true;
		log_snapshot_ids(op, "to be tagged failed once thawed");
	} else {
		tag_backup_state(h, op, "failed");
	}
	send_error(h, c, "snapshot", &err, op);
	op_end(h, c);
	return -1;
}

/*
 * Splits text into base64 chunks of at most TAG_VALUE_MAX characters.
 * Returns how many (0 for an empty text), or -1 if more than max are needed.
 */
static long b64_chunks(const char *text, char chunks[][TAG_VALUE_MAX + 1], size_t max)
{
	size_t len = strlen(text), raw = TAG_VALUE_MAX / 4 * 3, n = 0, off;

	if ((len + raw - 1) / raw > max)
		return -1;
	for (off = 0; off < len; off += raw, n++) {
		size_t take = len - off < raw ? len - off : raw;

		EVP_EncodeBlock((unsigned char *)chunks[n], (const unsigned char *)text + off,
		                (int)take);
	}
	return (long)n;
}

/* A warning for the DONE frame (at most AMSP_MAX_WARNINGS; all are logged). */
static void done_warning(struct amsp_writer *w, size_t *n, const char *request_id, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));
static void done_warning(struct amsp_writer *w, size_t *n, const char *request_id, const char *fmt,
                         ...)
{
	char text[1024]; /* protocol.c: WARNING is at most 1024 bytes */
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	log_warn("request %s: %s", request_id, text);
	if (*n < AMSP_MAX_WARNINGS)
		amsp_put_str(w, AMSP_T_WARNING, text);
	(*n)++;
}

/*
 * Adds "<key_prefix>1..N" tags carrying text in base64 if they fit in *budget
 * tags; otherwise warns.  what: "backup label", "tablespace map".
 */
static void add_chunk_tags(struct operation *op, const char *text, const char *what,
                           const char *key_prefix, char chunks[][TAG_VALUE_MAX + 1],
                           char keys[][48], struct ec2_tag *tags, size_t *ntags, long *budget,
                           struct amsp_writer *w, size_t *nwarn)
{
	long n = b64_chunks(text, chunks, TAG_CHUNKS_MAX), i;

	if (n < 0) {
		done_warning(w, nwarn, op->request_id,
		             "%s too long for tags; it is in ami_snapshot_history", what);
		return;
	}
	if (n > *budget) {
		done_warning(
		    w, nwarn, op->request_id,
		    "%s needs %ld tags but only %ld remain under EC2's limit of %d tags per "
		    "snapshot; it is in ami_snapshot_history",
		    what, n, *budget > 0 ? *budget : 0, EC2_MAX_TAGS_PER_RESOURCE);
		return;
	}
	for (i = 0; i < n; i++) {
		snprintf(keys[i], sizeof(keys[i]), "%s%ld", key_prefix, i + 1);
		tags[(*ntags)++] = (struct ec2_tag){keys[i], chunks[i]};
	}
	*budget -= n;
}

static int handle_finish(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	struct operation *op = c->op;
	/* Static: large, and the helper handles one message at a time. */
	static char label[8193], map[32769];
	static char label_chunks[TAG_CHUNKS_MAX][TAG_VALUE_MAX + 1];
	static char map_chunks[TAG_CHUNKS_MAX][TAG_VALUE_MAX + 1];
	static char label_keys[TAG_CHUNKS_MAX][48], map_keys[TAG_CHUNKS_MAX][48];
	static unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_WARNINGS * 1100];
	char stop_lsn[33];
	struct ec2_tag tags[2 + 2 * TAG_CHUNKS_MAX];
	const char *ids[MAX_VOLUMES];
	struct amis_err err;
	struct amsp_writer w;
	size_t ntags = 0, nwarn = 0, i, len;
	bool have_device = false, tag_failed = false;
	long budget;

	err_clear(&err);
	if (!op || op->state != OPS_PENDING) {
		log_warn("pid %ld: FINISH out of order", (long)c->pid);
		return -1;
	}
	op_move(op, OPS_TAGGING);
	amsp_copy_str(amsp_get(m, AMSP_T_STOP_LSN), stop_lsn, sizeof(stop_lsn));
	amsp_copy_str(amsp_get(m, AMSP_T_BACKUP_LABEL), label, sizeof(label));
	map[0] = '\0';
	if (amsp_get(m, AMSP_T_TABLESPACE_MAP))
		amsp_copy_str(amsp_get(m, AMSP_T_TABLESPACE_MAP), map, sizeof(map));
	for (i = 0; i < op->nvolumes; i++)
		if (op->device_names[i][0])
			have_device = true;

	amsp_begin(&w, buf, sizeof(buf), AMSP_DONE);
	/*
	 * The backup label (and tablespace map) travel with the snapshots (the
	 * database may be gone at restore time): base64 in tags of at most 256
	 * characters each.  EC2 allows 50 tags per snapshot, counting those set
	 * by CreateSnapshots; backup-state replaces one of those.
	 */
	tags[ntags++] = (struct ec2_tag){"ami-snapshot:backup-state", "stopped"};
	tags[ntags++] = (struct ec2_tag){"ami-snapshot:stop-lsn", stop_lsn};
	budget = EC2_MAX_TAGS_PER_RESOURCE - (long)op->ncreate_tags - 1 - (have_device ? 1 : 0);
	add_chunk_tags(op, label, "backup label", "ami-snapshot:backup-label-", label_chunks,
	               label_keys, tags, &ntags, &budget, &w, &nwarn);
	if (map[0])
		add_chunk_tags(op, map, "tablespace map", "ami-snapshot:tablespace-map-",
		               map_chunks, map_keys, tags, &ntags, &budget, &w, &nwarn);
	for (i = 0; i < op->snaps.n && i < MAX_VOLUMES; i++)
		ids[i] = op->snaps.items[i].snapshot_id;

	if (worker_create_tags(h->worker, ids, i, tags, ntags, h->cfg->ec2_timeout_ms, &err) != 0) {
		done_warning(&w, &nwarn, op->request_id,
		             "could not tag the snapshots with the backup metadata: %s: %s",
		             err.code, err.msg);
		tag_failed = true;
	}
	/* Per volume: which EC2 device it was, for the restore tooling. */
	for (i = 0; !tag_failed && i < op->snaps.n && i < MAX_VOLUMES; i++) {
		struct ec2_tag dtag = {"ami-snapshot:device", ""};
		size_t k;

		for (k = 0; k < op->nvolumes; k++)
			if (!strcmp(op->volume_ids[k], op->snaps.items[i].volume_id))
				dtag.value = op->device_names[k];
		if (!dtag.value[0])
			continue;
		if (worker_create_tags(h->worker, &ids[i], 1, &dtag, 1, h->cfg->ec2_timeout_ms,
		                       &err) != 0) {
			done_warning(&w, &nwarn, op->request_id,
			             "could not tag snapshot %s: %s: %s", ids[i], err.code,
			             err.msg);
			tag_failed = true;
		}
	}
	len = amsp_end(&w);
	if (!len) {
		/* Cannot happen with the bounds above; still, never answer nothing. */
		amsp_begin(&w, buf, sizeof(buf), AMSP_DONE);
		amsp_put_str(&w, AMSP_T_WARNING, "warnings too long to send; see the helper's log");
		len = amsp_end(&w);
	}
	if (len)
		conn_send(c, buf, len);
	log_info("request %s: done (stop lsn %s)%s", op->request_id, stop_lsn,
	         nwarn ? " with warnings" : "");
	op_end(h, c);
	return -1; /* the conversation is complete */
}

static int handle_abort(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	char reason[1025] = "";

	amsp_copy_str(amsp_get(m, AMSP_T_REASON), reason, sizeof(reason));
	if (c->op) {
		log_warn("request %s: aborted by the client: %s", c->op->request_id,
		         reason[0] ? reason : "(no reason given)");
		tag_backup_state(h, c->op, "aborted");
		op_end(h, c);
	}
	return -1;
}

/* The operation whose filesystems are frozen right now, if any. */
static const struct operation *frozen_op(const struct helper *h)
{
	if (h->active && freeze_plan_any_frozen(&h->active->plan))
		return h->active;
	return h->stuck;
}

/* STATUS (and the answer to THAW): what the helper is doing. */
static int send_status(struct helper *h, struct conn *c, const char *reason)
{
	unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
	const struct operation *op = frozen_op(h);
	struct amsp_writer w;
	size_t i, len;

	amsp_begin(&w, buf, sizeof(buf), AMSP_STATUS_REPLY);
	if (op) {
		amsp_put_str(&w, AMSP_T_STATE, op == h->stuck ? "thaw-pending" : "frozen");
		amsp_put_str(&w, AMSP_T_REQUEST_ID, op->request_id);
		amsp_put_str(&w, AMSP_T_NAME, op->name);
		for (i = 0; i < op->plan.nfs; i++)
			if (op->plan.fs[i].frozen)
				amsp_put_str(&w, AMSP_T_MOUNT_POINT, op->plan.fs[i].mount_point);
		amsp_put_u64(&w, AMSP_T_FROZEN_USEC,
		             (uint64_t)(mono_usec() - frozen_since(&op->plan)));
	} else if (h->active) {
		amsp_put_str(&w, AMSP_T_STATE, "busy");
		amsp_put_str(&w, AMSP_T_REQUEST_ID, h->active->request_id);
		amsp_put_str(&w, AMSP_T_NAME, h->active->name);
	} else {
		amsp_put_str(&w, AMSP_T_STATE, "idle");
	}
	if (reason)
		amsp_put_str(&w, AMSP_T_REASON, reason);
	len = amsp_end(&w);
	return len && conn_send(c, buf, len) == 0 ? 0 : -1;
}

/*
 * THAW: an administrator wants writes back now.  A call made while frozen is
 * abandoned (the operation fails with ThawRequested, and whatever EC2 made
 * is looked up and tagged failed); a failed thaw is retried at once.
 */
static int handle_thaw(struct helper *h, struct conn *c)
{
	const struct operation *op = frozen_op(h);

	if (!op)
		return send_status(h, c, "nothing is frozen");
	/* Root, or the client whose own operation it is. */
	if (c->uid != 0 && !(op->owner && op->owner->uid == c->uid))
		return send_status(h, c,
		                   "THAW refused: only root or the operation's own user may ask");
	log_warn("pid %ld uid %u asked for a thaw of request %s's filesystems", (long)c->pid,
	         (unsigned)c->uid, op->request_id);
	if (op == h->stuck) {
		h->stuck->thaw_next_try_usec = 0;
		retry_stuck_thaws(h);
		return send_status(h, c, h->stuck ? "thaw retried; still frozen" : "thawed");
	}
	h->thaw_requested = true;
	return send_status(h, c, "the call made while frozen is being abandoned; thawing");
}

/*
 * Every request goes through the one table of opstate.c: what a request
 * gets depends on the helper's state and on whether it comes from the
 * operation's own client, also from the nested pump while the operation
 * waits for EC2 (STATUS, THAW and an immediate Busy only).
 */
int op_dispatch(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	bool own = c->op != NULL;
	enum op_state st = own ? c->op->state : helper_state(h);

	switch (opstate_verdict(st, own, (enum amsp_msg)m->type)) {
	case OPV_STATUS:
		return send_status(h, c, NULL);
	case OPV_THAW:
		return handle_thaw(h, c);
	case OPV_BUSY:
		return refuse_busy(h, c);
	case OPV_THAW_PENDING:
		return refuse_thaw_pending(h, c);
	case OPV_HANDLE:
		switch (m->type) {
		case AMSP_PREPARE:
			return handle_prepare(h, c, m);
		case AMSP_SNAPSHOT:
			return handle_snapshot(h, c, m);
		case AMSP_FINISH:
			return handle_finish(h, c, m);
		case AMSP_ABORT:
			return handle_abort(h, c, m);
		default:
			break;
		}
		break;
	case OPV_OUT_OF_ORDER:
		break;
	}
	log_warn("pid %ld: %s out of order: refused in state %s%s", (long)c->pid,
	         amsp_msg_name(m->type), opstate_name(st),
	         own ? "" : " (not the operation's client)");
	return -1;
}

void op_client_gone(struct helper *h, struct conn *c, const char *why)
{
	struct operation *op = c->op;

	if (!op)
		return;
	log_warn("request %s: client went away (%s); operation abandoned", op->request_id, why);
	if (op->state == OPS_PENDING)
		tag_backup_state(h, op, "aborted");
	op_end(h, c);
}

static int dispatch_cb(void *ctx, struct conn *c, const struct amsp_msgview *m)
{
	return op_dispatch(ctx, c, m);
}

static void client_gone_cb(void *ctx, struct conn *c, const char *why)
{
	op_client_gone(ctx, c, why);
}

static void tick_cb(void *ctx)
{
	op_tick(ctx);
}

static bool thaw_pending_cb(const void *ctx)
{
	return op_thaw_pending(ctx);
}

void op_server_handlers(struct helper *h, struct server_handlers *out)
{
	*out = (struct server_handlers){
	    .cfg = h->cfg,
	    .ctx = h,
	    .dispatch = dispatch_cb,
	    .client_gone = client_gone_cb,
	    .may_idle = op_client_may_idle,
	    .tick = tick_cb,
	    .thaw_pending = thaw_pending_cb,
	};
}
