/*
 * prepare.c - PREPARE (see op_internal.h): the database's paths resolved to
 * filesystems and EBS volumes, checked against the allow-list and the
 * instance's block device mapping; the CreateSnapshots request built, and
 * its permission checked by a DryRun before any backup starts.
 */
#include "op_internal.h"

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

int resolve_one(struct helper *h, struct operation *op, const struct amsp_field *f,
                const char *what, struct amis_err *err)
{
	const struct helper_config *cfg = h->cfg;
	struct volume_override ov[CONFIG_MAX_LIST];
	const struct sys_paths *sp = h->sys;
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

bool in_list(char *const *list, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(list[i], s))
			return true;
	return false;
}

/* Keeps a copy of inst as the mapping of the next request (mapping.h). */
static void mapping_keep(struct helper *h, const struct ec2_instance_info *inst)
{
	if (!h->mapping)
		h->mapping = xcalloc(1, sizeof(*h->mapping));
	*h->mapping = *inst;
}

void mapping_note_error(struct helper *h, const struct amis_err *err)
{
	if (h->mapping && mapping_error_invalidates(err)) {
		log_info("the instance's block device mapping is looked up afresh at the next "
		         "request (%s)",
		         err->code);
		free(h->mapping);
		h->mapping = NULL;
	}
}

/* Forgets what plan_from() decided, to decide again from another mapping. */
static void plan_reset(struct operation *op)
{
	size_t i;

	for (i = 0; i < op->nvolumes; i++)
		free(op->volume_ids[i]);
	for (i = 0; i < op->nexclude; i++)
		free(op->exclude_ids[i]);
	op->nvolumes = op->nexclude = 0;
	memset(op->device_names, 0, sizeof(op->device_names));
	op->exclude_boot = false;
}

static int plan_from(struct helper *h, struct operation *op, const struct ec2_instance_info *inst,
                     struct amis_err *err);

/* Which volumes to snapshot, which to exclude, from the instance's mapping. */
int plan_volumes(struct helper *h, struct operation *op, struct amis_err *err)
{
	struct ec2_instance_info *inst = xcalloc(1, sizeof(*inst));
	int rc = -1;

	if (worker_describe_instance(h->worker, h->cfg->ec2_timeout_ms, inst, err) == 0) {
		mapping_keep(h, inst);
		rc = plan_from(h, op, inst, err);
	} /* else "EC2 DescribeInstances: ..." */
	free(inst);
	return rc;
}

static int plan_from(struct helper *h, struct operation *op, const struct ec2_instance_info *inst,
                     struct amis_err *err)
{
	size_t i, j;
	int rc = -1;

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
	/* An image: every volume of the instance, its attributes, the refusals. */
	if (op->image != IMAGE_NONE && image_prepare(h, op, inst, err) != 0)
		goto out;
	rc = 0;
out:
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

void fill_request(struct helper *h, struct operation *op, struct ec2_create_snapshots_req *r,
                  struct ec2_tag *tags, size_t maxtags, char *desc, size_t descsz, char *tlbuf,
                  size_t tlsz)
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
	/* A standby's set (doc/design.md, "On a hot standby"): the restore can tell. */
	if (op->standby) {
		add_tag(tags, &r->ntags, maxtags, "ami-snapshot:taken-from", "standby");
		if (op->primary_host[0])
			add_tag(tags, &r->ntags, maxtags, "ami-snapshot:primary-host",
			        op->primary_host);
		if (op->sync_state[0])
			add_tag(tags, &r->ntags, maxtags, "ami-snapshot:standby-sync-state",
			        op->sync_state);
	}
	/* For the restore: where the data directory was, and whether a set is whole. */
	if (op->ntargets && strlen(op->targets[0].path) <= TAG_VALUE_MAX)
		add_tag(tags, &r->ntags, maxtags, "ami-snapshot:data-directory",
		        op->targets[0].path);
	/* An image's set is every volume of the instance (op_want_ids). */
	snprintf(op->volume_count, sizeof(op->volume_count), "%zu",
	         op->image != IMAGE_NONE ? op->nall : op->nvolumes);
	add_tag(tags, &r->ntags, maxtags, "ami-snapshot:volume-count", op->volume_count);
	for (i = 0; i < h->cfg->n_tags; i++)
		add_tag(tags, &r->ntags, maxtags, h->cfg->tags[i].key, h->cfg->tags[i].value);
}

/*
 * A DryRun CreateSnapshots: checks the IAM permission and the request, and
 * leaves a warm connection (DNS, TCP, TLS) for the call made while frozen.
 */
int dry_run_create(struct helper *h, struct ec2_create_snapshots_req *r, struct amis_err *err)
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

/*
 * The standby's fields become tag values: printable ASCII only, a known
 * sync state, and neither without the STANDBY flag.
 */
static bool standby_fields_valid(const struct operation *op)
{
	static const char *const states[] = {"async", "potential", "sync", "quorum", "unknown"};
	const char *p;
	size_t i;

	if (!op->standby)
		return !op->primary_host[0] && !op->sync_state[0];
	for (p = op->primary_host; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return false;
	if (!op->sync_state[0])
		return true;
	for (i = 0; i < sizeof(states) / sizeof(states[0]); i++)
		if (!strcmp(op->sync_state, states[i]))
			return true;
	return false;
}

/*
 * A snapshot set with the mapping of the previous request kept (mapping.h):
 * DescribeInstances and the DryRun of the request planned from the kept
 * mapping, at once.  1: the fresh mapping differs (kept now; the plan is
 * reset, to be made again); 0: checked (or -1: refused) in one round trip.
 */
static int plan_and_check_at_once(struct helper *h, struct operation *op, struct amis_err *err)
{
	struct ec2_instance_info *fresh = xcalloc(1, sizeof(*fresh));
	struct ec2_create_snapshots_req r;
	struct ec2_tag tags[MAX_CREATE_TAGS];
	struct amis_err dry_err;
	char desc[512], tl[16];
	int rc = -1;

	fill_request(h, op, &r, tags, MAX_CREATE_TAGS, desc, sizeof(desc), tl, sizeof(tl));
	r.dry_run = true;
	if (worker_describe_instance_dry(h->worker, h->cfg->ec2_timeout_ms, &r, fresh, &dry_err,
	                                 err) != 0)
		goto out;
	if (!mapping_same(h->mapping, fresh)) {
		log_info("request %s: instance %s's block device mapping changed since the last "
		         "request (%zu EBS volumes, %zu before): planning again",
		         op->request_id, op->instance_id, fresh->nvolumes, h->mapping->nvolumes);
		mapping_keep(h, fresh);
		plan_reset(op);
		rc = 1;
		goto out;
	}
	if (dry_err.code[0]) {
		*err = dry_err;
		err_prefix(err, "preflight (DryRun)");
		goto out;
	}
	rc = 0;
out:
	free(fresh);
	return rc;
}

/*
 * PREPARE's EC2 part: the volumes to snapshot and exclude from the
 * instance's mapping, and the DryRun of the request they make (the
 * permission checked before any backup starts).  Both at once when the
 * mapping of the previous request is kept and nothing else needs it first.
 */
static int plan_and_check(struct helper *h, struct operation *op, struct amis_err *err)
{
	struct ec2_create_snapshots_req r;
	struct ec2_tag tags[MAX_CREATE_TAGS];
	char desc[512], tl[16];

	/* Xen disks take their volume ids from the mapping: not from a kept one. */
	if (h->cfg->preflight_dry_run && op->image == IMAGE_NONE &&
	    mapping_usable(h->mapping, op->instance_id) &&
	    freeze_plan_unresolved_disks(&op->plan) == 0) {
		struct amis_err perr;
		int rc;

		err_clear(&perr);
		if (plan_from(h, op, h->mapping, &perr) == 0) {
			if ((rc = plan_and_check_at_once(h, op, err)) <= 0)
				return rc;
			/* The mapping changed: planned again from the fresh one. */
			if (plan_from(h, op, h->mapping, err) != 0)
				return -1;
		} else {
			/* A path's volume is not where the kept mapping says: ask EC2. */
			log_info("request %s: %s; looking the mapping up afresh", op->request_id,
			         perr.msg);
			plan_reset(op);
			if (plan_volumes(h, op, err) != 0)
				return -1;
		}
	} else if (plan_volumes(h, op, err) != 0) {
		return -1;
	}
	if (!h->cfg->preflight_dry_run)
		return 0;
	fill_request(h, op, &r, tags, MAX_CREATE_TAGS, desc, sizeof(desc), tl, sizeof(tl));
	if (op->image == IMAGE_CREATE ? image_dry_run(h, op, tags, r.ntags, err) != 0
	                              : dry_run_create(h, &r, err) != 0)
		return err_prefix(err, "preflight (DryRun)");
	return 0;
}

int handle_prepare(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	struct operation *op;
	struct amis_err err;
	unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
	struct amsp_writer w;
	size_t i, len;

	/* Before this request: what a helper that died left unfinished (inflight.h). */
	inflight_resolve(h);
	err_clear(&err);
	op = xcalloc(1, sizeof(*op));
	op->owner = c;
	op->wd = WATCHDOG_NONE;
	amsp_copy_str(amsp_get(m, AMSP_T_REQUEST_ID), op->request_id, sizeof(op->request_id));
	amsp_copy_str(amsp_get(m, AMSP_T_NAME), op->name, sizeof(op->name));
	amsp_copy_str(amsp_get(m, AMSP_T_SYSTEM_ID), op->system_id, sizeof(op->system_id));
	amsp_copy_str(amsp_get(m, AMSP_T_PG_VERSION), op->pg_version, sizeof(op->pg_version));
	op->freeze = amsp_u8(amsp_get(m, AMSP_T_FREEZE)) != 0;
	if (amsp_get(m, AMSP_T_IMAGE_METHOD)) {
		char method[17];

		amsp_copy_str(amsp_get(m, AMSP_T_IMAGE_METHOD), method, sizeof(method));
		op->image = !strcmp(method, "register") ? IMAGE_REGISTER
		            : !strcmp(method, "create") ? IMAGE_CREATE
		                                        : (enum image_method) - 1;
	}
	op->allow_product_code_loss = amsp_get(m, AMSP_T_ALLOW_PRODUCT_CODE_LOSS) &&
	                              amsp_u8(amsp_get(m, AMSP_T_ALLOW_PRODUCT_CODE_LOSS));
	op->standby = amsp_get(m, AMSP_T_STANDBY) && amsp_u8(amsp_get(m, AMSP_T_STANDBY));
	if (amsp_get(m, AMSP_T_PRIMARY_HOST))
		amsp_copy_str(amsp_get(m, AMSP_T_PRIMARY_HOST), op->primary_host,
		              sizeof(op->primary_host));
	if (amsp_get(m, AMSP_T_SYNC_STATE))
		amsp_copy_str(amsp_get(m, AMSP_T_SYNC_STATE), op->sync_state,
		              sizeof(op->sync_state));
	c->op = op;
	h->active = op;
	op_move(op, OPS_PREPARING);

	if (!request_id_valid(op->request_id)) {
		err_set(&err, AMIS_E_INVALID_REQUEST, "invalid request id");
		goto fail;
	}
	if (!snapshot_name_valid(op->name)) {
		err_set(&err, AMIS_E_INVALID_NAME,
		        "snapshot name must be 3 to 128 characters of letters, digits, spaces and "
		        "( ) [ ] . / - ' @ _");
		goto fail;
	}
	if ((int)op->image < 0) {
		op->image = IMAGE_NONE;
		err_set(&err, AMIS_E_INVALID_REQUEST, "image method must be register or create");
		goto fail;
	}
	if (!standby_fields_valid(op)) {
		err_set(
		    &err, AMIS_E_INVALID_REQUEST,
		    "invalid standby fields: the primary's host must be printable ASCII, the "
		    "sync state async, potential, sync, quorum or unknown, both only with STANDBY");
		goto fail;
	}
	log_info("request %s from pid %ld: prepare \"%s\" (freeze=%s%s%s%s)", op->request_id,
	         (long)c->pid, op->name, op->freeze ? "on" : "off", op->image ? ", image=" : "",
	         image_method_name(op->image), op->standby ? ", on a standby" : "");

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
	if (plan_and_check(h, op, &err) != 0)
		goto fail;

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
