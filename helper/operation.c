/*
 * operation.c - see operation.h.
 *
 * The consistency protocol of DESIGN.md, helper side.  Between freeze and
 * thaw the only work is one CreateSnapshots request on an already-warm
 * connection: no logging (log_hold), no disk writes, no retries.
 */
#include "operation.h"
#include "aws.h"
#include "ec2.h"
#include "freeze.h"
#include "log.h"
#include "server.h"
#include "volumes.h"

#include <ctype.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define TOOL_TAG_VALUE "ami_snapshot " AMIS_VERSION
#define MAX_TARGETS 34 /* data, wal, up to 32 tablespaces */
#define MAX_VOLUMES 32
#define TAG_VALUE_MAX 256

#ifndef AMIS_VERSION
#define AMIS_VERSION "dev"
#endif

enum op_state { OP_PREPARED, OP_PENDING };

struct operation {
	enum op_state state;
	struct conn *owner;
	char request_id[65];
	char name[257];
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
	struct ec2_snapshot_set snaps;
};

struct helper {
	struct helper_config *cfg;
	struct aws_ctx *aws;
	struct operation *active;
};

struct helper *helper_new(struct helper_config *cfg)
{
	struct helper *h = xcalloc(1, sizeof(*h));

	h->cfg = cfg;
	h->aws = aws_ctx_new(cfg);
	return h;
}

void helper_free(struct helper *h)
{
	if (!h)
		return;
	aws_ctx_free(h->aws);
	free(h);
}

const struct helper_config *op_config(const struct helper *h)
{
	return h->cfg;
}

static void op_free(struct operation *op)
{
	size_t i;

	if (!op)
		return;
	free(op->targets);
	freeze_plan_close(&op->plan);
	for (i = 0; i < op->nvolumes; i++)
		free(op->volume_ids[i]);
	for (i = 0; i < op->nexclude; i++)
		free(op->exclude_ids[i]);
	ec2_snapshot_set_free(&op->snaps);
	free(op);
}

static void op_end(struct helper *h, struct conn *c)
{
	struct operation *op = c->op;

	if (h->active == op)
		h->active = NULL;
	c->op = NULL;
	op_free(op);
}

static int send_error(struct conn *c, const char *stage, const struct amis_err *err,
		      const struct ec2_snapshot_set *snaps)
{
	unsigned char buf[8192];
	struct amsp_writer w;
	size_t len, i;

	amsp_begin(&w, buf, sizeof(buf), AMSP_ERROR);
	amsp_put_str(&w, AMSP_T_ERROR_CODE, err->code[0] ? err->code : "HelperError");
	amsp_put_str(&w, AMSP_T_ERROR_MESSAGE, err->msg);
	amsp_put_str(&w, AMSP_T_ERROR_STAGE, stage);
	for (i = 0; snaps && i < snaps->n; i++)
		amsp_put_str(&w, AMSP_T_SNAPSHOT_ID, snaps->items[i].snapshot_id);
	len = amsp_end(&w);
	return len ? conn_send(c, buf, len) : -1;
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
		return err_set(err, "TooManyPaths", "too many paths in the request");
	if (amsp_copy_str(f, path, sizeof(path)) != 0 || path[0] != '/')
		return err_set(err, "InvalidPath", "%s path is not absolute", what);
	for (i = 0; i < cfg->n_volume_map; i++) {
		ov[i].device = cfg->volume_map[i].key;
		ov[i].volume_id = cfg->volume_map[i].value;
	}
	t = &op->targets[op->ntargets];
	if (volumes_resolve_path(sp, path, ov, cfg->n_volume_map, t, err) != 0)
		return err_prefix(err, "%s \"%s\"", what, path);
	if (!volumes_path_allowed(t->mount_point, (const char *const *)cfg->allow, cfg->n_allow,
				  cfg->allow_root_filesystem))
		return err_set(err, "PathNotAllowed",
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
	struct aws_credentials cr;
	size_t i, j;
	int rc = -1;

	if (aws_ctx_credentials(h->aws, &cr, err) != 0)
		goto out;
	if (ec2_describe_instance(aws_ctx_ec2(h->aws), &cr, aws_ctx_instance_id(h->aws),
				  h->cfg->ec2_timeout_ms, inst, err) != 0) {
		err_prefix(err, "DescribeInstances");
		goto out;
	}
	/* Xen: disks known by device name only; the mapping gives the volume. */
	if (freeze_plan_unresolved_disks(&op->plan) > 0) {
		for (j = 0; j < inst->nvolumes; j++)
			if (freeze_plan_set_device_volume(&op->plan, inst->volumes[j].device_name,
							  inst->volumes[j].volume_id, err) < 0)
				goto out;
		if (freeze_plan_unresolved_disks(&op->plan) > 0) {
			err_set(err, "VolumeNotFound",
				"a disk holding database files is not in instance %s's block device "
				"mapping; map it in the helper's [volumes] section",
				aws_ctx_instance_id(h->aws));
			goto out;
		}
	}
	for (i = 0; i < op->plan.nvolumes; i++) {
		if (op->nvolumes >= MAX_VOLUMES) {
			err_set(err, "TooManyVolumes", "more than %d EBS volumes", MAX_VOLUMES);
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
			err_set(err, "VolumeNotAttached",
				"volume %s holds database files but is not attached to instance %s",
				op->volume_ids[i], aws_ctx_instance_id(h->aws));
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
	secure_zero(&cr, sizeof(cr));
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
	r->instance_id = aws_ctx_instance_id(h->aws);
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

static int handle_prepare(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	struct operation *op;
	struct amis_err err;
	unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
	struct amsp_writer w;
	size_t i, len;

	err_clear(&err);
	if (c->op) {
		log_warn("pid %ld: PREPARE on a connection that already has an operation",
			 (long)c->pid);
		return -1;
	}
	if (h->active) {
		err_set(&err, "Busy",
			"another snapshot operation (request %s) is in progress; only one runs at "
			"a time",
			h->active->request_id);
		send_error(c, "prepare", &err, NULL);
		log_warn("pid %ld: refused PREPARE: %s", (long)c->pid, err.msg);
		return -1;
	}

	op = xcalloc(1, sizeof(*op));
	op->targets = xcalloc(MAX_TARGETS, sizeof(*op->targets));
	op->owner = c;
	amsp_copy_str(amsp_get(m, AMSP_T_REQUEST_ID), op->request_id, sizeof(op->request_id));
	amsp_copy_str(amsp_get(m, AMSP_T_NAME), op->name, sizeof(op->name));
	amsp_copy_str(amsp_get(m, AMSP_T_SYSTEM_ID), op->system_id, sizeof(op->system_id));
	amsp_copy_str(amsp_get(m, AMSP_T_PG_VERSION), op->pg_version, sizeof(op->pg_version));
	op->freeze = amsp_u8(amsp_get(m, AMSP_T_FREEZE)) != 0;
	c->op = op;
	h->active = op;

	if (!valid_request_id(op->request_id)) {
		err_set(&err, "InvalidRequest", "invalid request id");
		goto fail;
	}
	if (!valid_name(op->name)) {
		err_set(&err, "InvalidName",
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
	if (aws_ctx_ready(h->aws, &err) != 0)
		goto fail;
	if (plan_volumes(h, op, &err) != 0)
		goto fail;

	if (h->cfg->preflight_dry_run) {
		/*
		 * Checks the IAM permission and the request, and leaves a warm
		 * connection (DNS, TCP, TLS) for the call made while frozen.
		 */
		struct ec2_create_snapshots_req r;
		struct ec2_tag tags[64];
		struct ec2_snapshot_set none = {0};
		struct aws_credentials cr;
		char desc[512], tl[16];
		int rc;

		fill_request(h, op, &r, tags, 64, desc, sizeof(desc), tl, sizeof(tl));
		r.dry_run = true;
		if (aws_ctx_credentials(h->aws, &cr, &err) != 0)
			goto fail;
		rc = ec2_create_snapshots(aws_ctx_ec2(h->aws), &cr, &r, h->cfg->ec2_timeout_ms,
					  &none, &err);
		secure_zero(&cr, sizeof(cr));
		ec2_snapshot_set_free(&none);
		if (rc != 0) {
			err_prefix(&err, "CreateSnapshots preflight (DryRun)");
			goto fail;
		}
	}

	amsp_begin(&w, buf, sizeof(buf), AMSP_PREPARED);
	amsp_put_str(&w, AMSP_T_INSTANCE_ID, aws_ctx_instance_id(h->aws));
	amsp_put_str(&w, AMSP_T_REGION, aws_ctx_region(h->aws));
	for (i = 0; i < op->nvolumes; i++)
		amsp_put_str(&w, AMSP_T_VOLUME_ID, op->volume_ids[i]);
	for (i = 0; i < op->plan.nfs; i++)
		amsp_put_str(&w, AMSP_T_MOUNT_POINT, op->plan.fs[i].mount_point);
	len = amsp_end(&w);
	if (!len || conn_send(c, buf, len) != 0) {
		log_warn("request %s: could not send PREPARED", op->request_id);
		op_end(h, c);
		return -1;
	}
	op->state = OP_PREPARED;
	{
		struct strbuf vols;

		sb_init(&vols);
		for (i = 0; i < op->nvolumes; i++)
			sb_appendf(&vols, "%s%s", i ? "," : "", op->volume_ids[i]);
		log_info("request %s: prepared: instance %s, volumes %s, %zu filesystem(s)",
			 op->request_id, aws_ctx_instance_id(h->aws), sb_str(&vols), op->plan.nfs);
		sb_free(&vols);
	}
	return 0;

fail:
	log_warn("request %s: prepare failed: %s: %s", op->request_id, err.code, err.msg);
	send_error(c, "prepare", &err, NULL);
	op_end(h, c);
	return -1;
}

/* Marks snapshots of an operation that did not complete; after the thaw only. */
static void tag_backup_state(struct helper *h, struct operation *op, const char *state)
{
	struct ec2_tag tag = {"ami-snapshot:backup-state", state};
	const char *ids[MAX_VOLUMES];
	struct aws_credentials cr;
	struct amis_err err;
	size_t i;

	if (!op->snaps.n)
		return;
	for (i = 0; i < op->snaps.n && i < MAX_VOLUMES; i++)
		ids[i] = op->snaps.items[i].snapshot_id;
	if (aws_ctx_credentials(h->aws, &cr, &err) != 0 ||
	    ec2_create_tags(aws_ctx_ec2(h->aws), &cr, ids, i, &tag, 1, h->cfg->ec2_timeout_ms,
			    &err) != 0)
		log_warn("request %s: could not tag snapshots as %s: %s: %s", op->request_id,
			 state, err.code, err.msg);
	secure_zero(&cr, sizeof(cr));
}

static int handle_snapshot(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	struct operation *op = c->op;
	struct ec2_create_snapshots_req r;
	struct ec2_tag tags[64];
	struct aws_credentials cr;
	struct amis_err err, thaw_err;
	char desc[512], tl[16];
	long long t_freeze = 0, t_thaw = 0, t_call0, t_call1;
	long timeout_ms;
	unsigned char buf[8192];
	struct amsp_writer w;
	size_t i, j, len;
	int rc, thaw_rc = 0;

	err_clear(&err);
	err_clear(&thaw_err);
	if (!op || op->state != OP_PREPARED) {
		log_warn("pid %ld: SNAPSHOT out of order", (long)c->pid);
		return -1;
	}
	amsp_copy_str(amsp_get(m, AMSP_T_START_LSN), op->start_lsn, sizeof(op->start_lsn));
	op->timeline = amsp_u32(amsp_get(m, AMSP_T_TIMELINE));

	/* Everything that may be slow happens before the freeze. */
	if (aws_ctx_credentials(h->aws, &cr, &err) != 0)
		goto fail;
	fill_request(h, op, &r, tags, 64, desc, sizeof(desc), tl, sizeof(tl));
	timeout_ms = op->freeze ? h->cfg->freeze_timeout_ms : h->cfg->ec2_timeout_ms;

	log_hold();
	if (op->freeze) {
		if (freeze_plan_freeze(&op->plan, &err) != 0) {
			log_release();
			secure_zero(&cr, sizeof(cr));
			goto fail;
		}
		t_freeze = mono_usec();
		/* The deadline counts from the first freeze. */
		timeout_ms -= (long)((t_freeze - op->plan.fs[0].frozen_at_usec) / 1000);
		if (timeout_ms < 1)
			timeout_ms = 1;
	}
	t_call0 = mono_usec();
	rc = ec2_create_snapshots(aws_ctx_ec2(h->aws), &cr, &r, timeout_ms, &op->snaps, &err);
	t_call1 = mono_usec();
	if (op->freeze) {
		thaw_rc = freeze_plan_thaw(&op->plan, &thaw_err);
		t_thaw = mono_usec();
	}
	log_release();
	secure_zero(&cr, sizeof(cr));

	if (op->freeze) {
		long long window = freeze_plan_window_usec(&op->plan);

		(void)t_freeze;
		(void)t_thaw;
		log_info("request %s: writes frozen for %.3f ms (CreateSnapshots %.3f ms)",
			 op->request_id, window / 1000.0, (t_call1 - t_call0) / 1000.0);
		for (i = 0; i < op->plan.nfs; i++) {
			const struct freeze_fs *fs = &op->plan.fs[i];

			log_debug("request %s: %s: FIFREEZE took %.3f ms, frozen %.3f ms",
				  op->request_id, fs->mount_point,
				  (fs->freeze_returned_usec - fs->frozen_at_usec) / 1000.0,
				  (fs->thawed_at_usec - fs->frozen_at_usec) / 1000.0);
		}
	}
	if (thaw_rc != 0) {
		log_error("request %s: THAW FAILED: %s: %s", op->request_id, thaw_err.code,
			  thaw_err.msg);
		if (rc == 0)
			err = thaw_err;
		rc = -1;
	}
	if (rc != 0) {
		if (!strcmp(err.code, "Timeout"))
			err_prefix(&err, "CreateSnapshots did not answer within the freeze "
					 "deadline; filesystems were thawed");
		else
			err_prefix(&err, "CreateSnapshots");
		goto fail;
	}
	/* The snapshot set must be exactly the volumes we asked for, pending. */
	if (op->snaps.n != op->nvolumes) {
		err_set(&err, "UnexpectedSnapshotSet",
			"CreateSnapshots returned %zu snapshots for %zu volumes", op->snaps.n,
			op->nvolumes);
		goto fail;
	}
	for (i = 0; i < op->snaps.n; i++) {
		const struct ec2_snapshot_info *s = &op->snaps.items[i];

		if (!in_list(op->volume_ids, op->nvolumes, s->volume_id)) {
			err_set(&err, "UnexpectedSnapshotSet",
				"CreateSnapshots returned a snapshot of volume %s, which holds no "
				"database files",
				s->volume_id);
			goto fail;
		}
		if (strcmp(s->state, "pending") && strcmp(s->state, "completed")) {
			err_set(&err, "SnapshotFailed", "snapshot %s of volume %s is in state %s",
				s->snapshot_id, s->volume_id, s->state);
			goto fail;
		}
	}

	amsp_begin(&w, buf, sizeof(buf), AMSP_PENDING);
	for (i = 0; i < op->snaps.n; i++)
		amsp_put_str(&w, AMSP_T_SNAPSHOT_ID, op->snaps.items[i].snapshot_id);
	for (i = 0; i < op->snaps.n; i++)
		amsp_put_str(&w, AMSP_T_SNAPSHOT_VOLUME, op->snaps.items[i].volume_id);
	amsp_put_u64(&w, AMSP_T_FREEZE_USEC,
		     op->freeze ? (uint64_t)freeze_plan_window_usec(&op->plan) : 0);
	amsp_put_u64(&w, AMSP_T_SNAPSHOT_USEC, (uint64_t)(t_call1 - t_call0));
	len = amsp_end(&w);
	if (!len || conn_send(c, buf, len) != 0) {
		log_warn("request %s: client gone before PENDING could be sent", op->request_id);
		tag_backup_state(h, op, "aborted");
		op_end(h, c);
		return -1;
	}
	op->state = OP_PENDING;
	{
		struct strbuf ids;

		sb_init(&ids);
		for (j = 0; j < op->snaps.n; j++)
			sb_appendf(&ids, "%s%s", j ? "," : "", op->snaps.items[j].snapshot_id);
		log_info("request %s: snapshots pending: %s", op->request_id, sb_str(&ids));
		sb_free(&ids);
	}
	return 0;

fail:
	log_warn("request %s: snapshot failed: %s: %s", op->request_id, err.code, err.msg);
	send_error(c, "snapshot", &err, &op->snaps);
	tag_backup_state(h, op, "failed");
	op_end(h, c);
	return -1;
}

/* Splits text into base64 chunks of at most TAG_VALUE_MAX characters. */
static size_t b64_chunks(const char *text, char chunks[][TAG_VALUE_MAX + 1], size_t max)
{
	size_t len = strlen(text), raw = TAG_VALUE_MAX / 4 * 3, n = 0, off;

	for (off = 0; off < len && n < max; off += raw, n++) {
		size_t take = len - off < raw ? len - off : raw;

		EVP_EncodeBlock((unsigned char *)chunks[n], (const unsigned char *)text + off,
				(int)take);
	}
	return off >= len ? n : 0;
}

static int handle_finish(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	struct operation *op = c->op;
	static char label[8193];
	static char chunks[16][TAG_VALUE_MAX + 1];
	static char keys[16][48];
	char stop_lsn[33];
	struct ec2_tag tags[24];
	const char *ids[MAX_VOLUMES];
	struct aws_credentials cr;
	struct amis_err err;
	unsigned char buf[4096];
	struct amsp_writer w;
	size_t ntags = 0, nchunks, i, len;
	bool warned = false;

	err_clear(&err);
	if (!op || op->state != OP_PENDING) {
		log_warn("pid %ld: FINISH out of order", (long)c->pid);
		return -1;
	}
	amsp_copy_str(amsp_get(m, AMSP_T_STOP_LSN), stop_lsn, sizeof(stop_lsn));
	amsp_copy_str(amsp_get(m, AMSP_T_BACKUP_LABEL), label, sizeof(label));

	/*
	 * The backup label travels with the snapshots (the database may be gone
	 * at restore time): base64 in tags of at most 256 characters each.
	 */
	tags[ntags++] = (struct ec2_tag){"ami-snapshot:backup-state", "stopped"};
	tags[ntags++] = (struct ec2_tag){"ami-snapshot:stop-lsn", stop_lsn};
	nchunks = b64_chunks(label, chunks, 16);
	for (i = 0; i < nchunks; i++) {
		snprintf(keys[i], sizeof(keys[i]), "ami-snapshot:backup-label-%zu", i + 1);
		tags[ntags++] = (struct ec2_tag){keys[i], chunks[i]};
	}
	for (i = 0; i < op->snaps.n; i++)
		ids[i] = op->snaps.items[i].snapshot_id;

	amsp_begin(&w, buf, sizeof(buf), AMSP_DONE);
	if (aws_ctx_credentials(h->aws, &cr, &err) != 0 ||
	    ec2_create_tags(aws_ctx_ec2(h->aws), &cr, ids, op->snaps.n, tags, ntags,
			    h->cfg->ec2_timeout_ms, &err) != 0) {
		char wbuf[1024];

		snprintf(wbuf, sizeof(wbuf), "could not tag the snapshots with the backup metadata: %s: %s",
			 err.code, err.msg);
		amsp_put_str(&w, AMSP_T_WARNING, wbuf);
		log_warn("request %s: %s", op->request_id, wbuf);
		warned = true;
	}
	/* Per volume: which EC2 device it was, for the restore tooling. */
	for (i = 0; !warned && i < op->snaps.n; i++) {
		struct ec2_tag dtag = {"ami-snapshot:device", ""};
		size_t k;

		for (k = 0; k < op->nvolumes; k++)
			if (!strcmp(op->volume_ids[k], op->snaps.items[i].volume_id))
				dtag.value = op->device_names[k];
		if (!dtag.value[0])
			continue;
		if (ec2_create_tags(aws_ctx_ec2(h->aws), &cr, &ids[i], 1, &dtag, 1,
				    h->cfg->ec2_timeout_ms, &err) != 0) {
			char wbuf[1024];

			snprintf(wbuf, sizeof(wbuf), "could not tag snapshot %s: %s: %s", ids[i],
				 err.code, err.msg);
			amsp_put_str(&w, AMSP_T_WARNING, wbuf);
			log_warn("request %s: %s", op->request_id, wbuf);
			warned = true;
		}
	}
	secure_zero(&cr, sizeof(cr));
	len = amsp_end(&w);
	if (len)
		conn_send(c, buf, len);
	log_info("request %s: done (stop lsn %s)%s", op->request_id, stop_lsn,
		 warned ? " with warnings" : "");
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

int op_dispatch(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
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
		log_warn("pid %ld: unexpected %s message from a client", (long)c->pid,
			 amsp_msg_name(m->type));
		return -1;
	}
}

void op_client_gone(struct helper *h, struct conn *c, const char *why)
{
	struct operation *op = c->op;

	if (!op)
		return;
	log_warn("request %s: client went away (%s); operation abandoned", op->request_id, why);
	if (op->state == OP_PENDING)
		tag_backup_state(h, op, "aborted");
	op_end(h, c);
}
