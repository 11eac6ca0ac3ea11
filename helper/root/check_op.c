/*
 * check_op.c - CHECK, the preflight check (check.h; doc/protocol.md,
 * "Check").  It runs as an operation of its own, so that the state table
 * keeps everything else out meanwhile (a PREPARE is Busy, STATUS says
 * "busy" with the step "check"), but it never leaves PREPARING: nothing is
 * frozen, no marker written, no snapshot made, and it ends with its answer.
 */
#include "op_internal.h"

#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CHECK_MAX_ACTIONS 32

static const char *user_name(uid_t uid, char *buf, size_t sz)
{
	struct passwd *pw = getpwuid(uid);

	if (pw)
		snprintf(buf, sz, "%s", pw->pw_name);
	else
		snprintf(buf, sz, "uid %u", (unsigned)uid);
	return buf;
}

/* The helper, its configuration file as it is now, who may ask. */
static void check_helper(struct helper *h, struct conn *c, struct check_rows *rows)
{
	struct helper_config now;
	struct amis_err err;
	struct strbuf users;
	char name[64];
	size_t i;

	check_add(rows, "helper", "ok", NULL, "ami-snapshot-helper %s (pid %ld), configuration %s",
	          AMIS_VERSION, (long)getpid(), h->config_path);
	config_init(&now);
	err_clear(&err);
	if (config_load_file(&now, h->config_path, &err) == 0)
		check_add(rows, "configuration", "ok", NULL, "%s is valid", h->config_path);
	else
		check_add(rows, "configuration", "failed",
		          "fix the file; the running helper keeps the configuration it read at "
		          "start-up until it is restarted",
		          "%s", err.msg);
	config_free(&now);
	sb_init(&users);
	for (i = 0; i < h->cfg->n_allowed_uids; i++)
		sb_appendf(&users, "%s%s", i ? ", " : "",
		           user_name(h->cfg->allowed_uids[i], name, sizeof(name)));
	if (h->cfg->n_allowed_uids)
		check_add(rows, "allowed_users", "ok", NULL, "%s (and root)", sb_str(&users));
	else
		check_add(rows, "allowed_users", "failed",
		          "set [helper] allowed_users to the user PostgreSQL runs as",
		          "empty: only root may ask the helper");
	sb_free(&users);
	check_add(rows, "caller", "ok", NULL, "%s is allowed%s",
	          user_name(c->uid, name, sizeof(name)),
	          c->uid == 0 ? " (root always is)" : " (allowed_users)");
	if (h->cfg->n_allow || h->cfg->allow_root_filesystem)
		check_add(rows, "allow-list", "ok", NULL, "[filesystems] allow: %zu entr%s%s",
		          h->cfg->n_allow, h->cfg->n_allow == 1 ? "y" : "ies",
		          h->cfg->allow_root_filesystem ? ", and the root filesystem" : "");
	else
		check_add(
		    rows, "allow-list", "failed",
		    "list the mount points of the database's filesystems under [filesystems] allow",
		    "[filesystems] allow is empty: no filesystem may be frozen");
}

/* A hint for a path that failed, by its error code. */
static const char *path_hint(const struct amis_err *err)
{
	if (err_is(err, AMIS_E_PATH_NOT_ALLOWED))
		return "add the filesystem's mount point to [filesystems] allow, if it may be "
		       "frozen";
	if (err_is(err, AMIS_E_VOLUME_UNKNOWN) || err_is(err, AMIS_E_VOLUME_NOT_EBS))
		return "map the device to its EBS volume in the helper's [volumes] section";
	if (err_is(err, AMIS_E_PATH_NOT_FOUND) || err_is(err, AMIS_E_INVALID_PATH))
		return "give the path as PostgreSQL uses it (data_directory, pg_wal, the "
		       "tablespaces)";
	return "see doc/errors.md for the code";
}

/* One path: its filesystem and volumes; appended to op->targets when it resolves. */
static void check_path(struct helper *h, struct operation *op, const struct amsp_field *f,
                       const char *what, struct check_rows *rows)
{
	char name[64], vols[256] = "";
	struct amis_err err;
	struct fs_target *t;
	size_t i;

	snprintf(name, sizeof(name), "path: %s", what);
	err_clear(&err);
	if (resolve_one(h, op, f, what, &err) != 0) {
		check_add(rows, name, "failed", path_hint(&err), "%s: %s", err.code, err.msg);
		return;
	}
	t = &op->targets[op->ntargets - 1];
	for (i = 0; i < t->ndisks; i++)
		snprintf(vols + strlen(vols), sizeof(vols) - strlen(vols), "%s%s", i ? ", " : "",
		         t->disks[i].volume_id[0] ? t->disks[i].volume_id : t->disks[i].name);
	check_add(rows, name, "ok", NULL, "%s on %s (%s), allowed; volume %s", t->path,
	          t->mount_point, t->fstype, vols);
}

/* state_dir: usable, and not on a filesystem the plan would freeze. */
static void check_state_dir(struct helper *h, const struct operation *op, bool have_plan,
                            struct check_rows *rows)
{
	struct freeze_plan *none = NULL;
	struct amis_err err;
	int rc;

	err_clear(&err);
	if (!have_plan)
		none = xcalloc(1, sizeof(*none));
	rc = marker_check_dir(h->cfg->state_dir, have_plan ? &op->plan : none, &err);
	free(none);
	if (rc != 0)
		check_add(
		    rows, "state_dir", "failed",
		    "set [helper] state_dir to a directory on a filesystem that is never frozen "
		    "(default /run/ami-snapshot)",
		    "%s", err.msg);
	else
		check_add(rows, "state_dir", "ok", NULL, "%s%s", h->cfg->state_dir,
		          have_plan ? ": not on a filesystem the snapshot freezes"
		                    : " (no database path given: its placement is not checked)");
}

/* The paths given, the filesystems they make; whether a plan was built. */
static bool check_paths(struct helper *h, struct operation *op, const struct amsp_msgview *m,
                        struct check_rows *rows)
{
	struct amis_err err;
	struct strbuf fs;
	size_t i, given = 0, nts = amsp_count(m, AMSP_T_PATH_TABLESPACE);
	bool failed = false;

	if (amsp_get(m, AMSP_T_PATH_DATA)) {
		given++;
		check_path(h, op, amsp_get(m, AMSP_T_PATH_DATA), "data directory", rows);
	}
	if (amsp_get(m, AMSP_T_PATH_WAL)) {
		given++;
		check_path(h, op, amsp_get(m, AMSP_T_PATH_WAL), "pg_wal", rows);
	}
	for (i = 0; i < nts; i++) {
		char what[32];

		given++;
		snprintf(what, sizeof(what), "tablespace %zu", i + 1);
		check_path(h, op, amsp_get_nth(m, AMSP_T_PATH_TABLESPACE, i), what, rows);
	}
	if (!given) {
		check_add(rows, "paths", "skipped",
		          "give the data directory (ami-snapshot check --pgdata DIR), or run "
		          "ami_snapshot_check() in the database",
		          "no database path given: nothing resolved to volumes");
		return false;
	}
	if (op->ntargets != given)
		failed = true;
	if (failed || !op->ntargets)
		return false;
	err_clear(&err);
	if (freeze_plan_build(op->targets, op->ntargets, &op->plan, &err) != 0) {
		check_add(rows, "filesystems", "failed", "see doc/errors.md for the code", "%s: %s",
		          err.code, err.msg);
		return false;
	}
	sb_init(&fs);
	for (i = 0; i < op->plan.nfs; i++)
		sb_appendf(&fs, "%s%s (%s)", i ? ", " : "", op->plan.fs[i].mount_point,
		           op->plan.fs[i].fstype);
	check_add(rows, "filesystems", "ok", NULL, "%zu to freeze: %s; %zu EBS volume%s",
	          op->plan.nfs, sb_str(&fs), op->plan.nvolumes, op->plan.nvolumes == 1 ? "" : "s");
	sb_free(&fs);
	return true;
}

/* DescribeInstances and the CreateSnapshots DryRun PREPARE would make. */
static void check_snapshot_call(struct helper *h, struct operation *op, bool have_plan,
                                struct check_rows *rows)
{
	struct ec2_create_snapshots_req r;
	struct ec2_tag tags[MAX_CREATE_TAGS];
	char desc[512], tl[16];
	struct amis_err err;

	err_clear(&err);
	if (worker_ready(h->worker, &err) != 0) {
		check_add(
		    rows, "ec2:CreateSnapshots", "skipped", NULL,
		    "not tested: the helper has no instance, region or credentials (rows above)");
		return;
	}
	snprintf(op->instance_id, sizeof(op->instance_id), "%s", worker_instance_id(h->worker));
	if (have_plan) {
		if (plan_volumes(h, op, &err) != 0) {
			check_add(rows, "volumes attached", "failed",
			          "see doc/errors.md for the code", "%s: %s", err.code, err.msg);
			return;
		}
		check_add(rows, "volumes attached", "ok", NULL,
		          "%zu database volume%s attached to %s; %zu other volume%s excluded",
		          op->nvolumes, op->nvolumes == 1 ? "" : "s", op->instance_id, op->nexclude,
		          op->nexclude == 1 ? "" : "s");
	} else {
		op->exclude_boot = true;
	}
	fill_request(h, op, &r, tags, MAX_CREATE_TAGS, desc, sizeof(desc), tl, sizeof(tl));
	if (dry_run_create(h, &r, &err) == 0)
		check_add(
		    rows, "ec2:CreateSnapshots", "ok", NULL,
		    "allowed: the DryRun of the snapshot's own request answered DryRunOperation");
	else if (err_is(&err, AMIS_E_UNAUTHORIZED_OPERATION))
		check_add(rows, "ec2:CreateSnapshots", "failed",
		          "allow the IAM action ec2:CreateSnapshots in the policy of the helper's "
		          "credentials (doc/install.md, IAM policy)",
		          "denied: %s", err.msg);
	else
		check_add(rows, "ec2:CreateSnapshots", "failed", "see doc/errors.md for the code",
		          "%s: %s", err.code, err.msg);
}

int handle_check(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	struct check_rows *rows = xcalloc(1, sizeof(*rows));
	unsigned char *buf = xmalloc(AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD);
	const char *actions[CHECK_MAX_ACTIONS];
	struct operation *op;
	struct amis_err err;
	size_t nactions, len, i, nfailed = 0;
	char image[17] = "";
	bool have_plan;
	int rc = -1;

	op = xcalloc(1, sizeof(*op));
	op->owner = c;
	op->wd = WATCHDOG_NONE;
	amsp_copy_str(amsp_get(m, AMSP_T_REQUEST_ID), op->request_id, sizeof(op->request_id));
	snprintf(op->name, sizeof(op->name), "preflight check");
	op->check = true;
	c->op = op;
	h->active = op;
	op_move(op, OPS_PREPARING);
	if (amsp_get(m, AMSP_T_IMAGE_METHOD))
		amsp_copy_str(amsp_get(m, AMSP_T_IMAGE_METHOD), image, sizeof(image));
	if (!request_id_valid(op->request_id) ||
	    (image[0] && strcmp(image, "register") && strcmp(image, "create"))) {
		err_clear(&err);
		err_set(&err, AMIS_E_INVALID_REQUEST, "invalid request id or image method");
		send_error(h, c, "check", &err, NULL);
		goto out;
	}
	log_info("request %s from pid %ld uid %u: preflight check%s%s", op->request_id,
	         (long)c->pid, (unsigned)c->uid, image[0] ? ", image=" : "", image);

	check_helper(h, c, rows);
	have_plan = check_paths(h, op, m, rows);
	check_state_dir(h, op, have_plan, rows);

	/* A client that goes away ends the wait for EC2 at once. */
	worker_set_abort_fd(h->worker, c->fd);
	nactions = check_ec2_actions(h->cfg, image[0] ? image : NULL, actions, CHECK_MAX_ACTIONS);
	err_clear(&err);
	if (worker_check(h->worker, actions, nactions,
	                 have_plan && op->plan.nvolumes ? op->plan.volume_ids[0] : "",
	                 h->cfg->ec2_timeout_ms, rows, &err) != 0)
		check_add(rows, "ec2 worker", "failed", "see the helper's log", "%s: %s", err.code,
		          err.msg);
	else
		check_snapshot_call(h, op, have_plan, rows);
	worker_set_abort_fd(h->worker, -1);

	for (i = 0; i < rows->n; i++)
		if (!strcmp(rows->row[i].result, "failed"))
			nfailed++;
	len = check_reply_build(rows, AMIS_VERSION, buf, AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD);
	if (!len) {
		err_clear(&err);
		err_set(&err, AMIS_E_RESPONSE_TOO_LARGE,
		        "the check's %zu rows do not fit in one protocol frame", rows->n);
		send_error(h, c, "check", &err, NULL);
		goto out;
	}
	if (conn_send(c, buf, len) != 0)
		log_warn("request %s: could not send the check's answer", op->request_id);
	log_info("request %s: preflight check: %zu checks, %zu failed", op->request_id, rows->n,
	         nfailed);
	rc = -1; /* one check a connection: the answer ends the conversation */
out:
	op_end(h, c);
	free(rows);
	free(buf);
	return rc;
}
