/*
 * worker_main.c - see worker_main.h: the EC2 worker process, the other side
 * of root/worker_client.c's channel.  It reads the configuration, pins the
 * credentials file, drops root for good, then answers one request at a time.
 */
#include "worker_main.h"
#include "aws.h"
#include "dryrun.h"
#include "ec2.h"
#include "http.h"
#include "imds.h"
#include "xml.h"
#include "channel.h"
#include "log.h"
#include "protocol.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

#define FRAME_MAX (AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD)
#define MAX_TAGS 64

struct wstate {
	struct helper_config cfg;
	struct aws_ctx *aws;
	int fd;
	unsigned char in[FRAME_MAX];
	unsigned char out[FRAME_MAX];
	struct amsp_msgview m;
};

int worker_drop_privileges(const char *user, struct amis_err *err)
{
	struct passwd *pw = getpwnam(user);
	uid_t uid;
	gid_t gid;

	if (!pw)
		return err_set(err, AMIS_E_WORKER_FAILED, "worker_user: no such user \"%s\"", user);
	uid = pw->pw_uid;
	gid = pw->pw_gid;
	if (uid == 0)
		return err_set(err, AMIS_E_WORKER_FAILED, "worker_user \"%s\" is root", user);
	if (setgroups(0, NULL) != 0 || setresgid(gid, gid, gid) != 0 ||
	    setresuid(uid, uid, uid) != 0)
		return err_set(err, AMIS_E_WORKER_FAILED, "cannot become user %s: %s", user,
		               strerror(errno));
	/* There is no way back. */
	if (setuid(0) == 0 || seteuid(0) == 0)
		return err_set(err, AMIS_E_WORKER_FAILED, "could regain root after dropping it");
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 || prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0)
		return err_set(err, AMIS_E_WORKER_FAILED, "prctl: %s", strerror(errno));
	return 0;
}

static int send_reply(struct wstate *ws, struct amsp_writer *aw)
{
	size_t len = amsp_end(aw);

	if (!len) {
		log_error("an answer does not fit in one frame");
		return -1;
	}
	return send(ws->fd, ws->out, len, MSG_NOSIGNAL) == (ssize_t)len ? 0 : -1;
}

static int send_error(struct wstate *ws, uint32_t seq, const struct amis_err *err)
{
	struct amsp_writer aw;

	amsp_begin(&aw, ws->out, sizeof(ws->out), AMSP_W_ERROR);
	amsp_put_u32(&aw, AMSP_T_SEQ, seq);
	amsp_put_str(&aw, AMSP_T_ERROR_CODE, err->code[0] ? err->code : "WorkerError");
	amsp_put_str(&aw, AMSP_T_ERROR_MESSAGE, err->msg);
	return send_reply(ws, &aw);
}

static void put_snapshots(struct amsp_writer *aw, const struct ec2_snapshot_set *s)
{
	size_t i;

	for (i = 0; i < s->n; i++) {
		amsp_put_str(aw, AMSP_T_SNAPSHOT_ID, s->items[i].snapshot_id);
		amsp_put_str(aw, AMSP_T_SNAPSHOT_VOLUME, s->items[i].volume_id);
		amsp_put_str(aw, AMSP_T_SNAPSHOT_STATE, s->items[i].state);
	}
}

/* Copies string field f of ws->m into a malloc'd string (NULL if absent). */
static char *field_dup(const struct amsp_field *f)
{
	char *s;

	if (!f)
		return NULL;
	s = xmalloc((size_t)f->len + 1);
	memcpy(s, f->value, f->len);
	s[f->len] = '\0';
	return s;
}

/* The repeated string field tag of ws->m as a malloc'd array of n strings. */
static char **fields_dup(const struct amsp_msgview *m, enum amsp_tag tag, size_t *n)
{
	char **v;
	size_t i;

	*n = amsp_count(m, tag);
	v = xcalloc(*n + 1, sizeof(*v));
	for (i = 0; i < *n; i++)
		v[i] = field_dup(amsp_get_nth(m, tag, i));
	return v;
}

static void strv_free(char **v, size_t n)
{
	size_t i;

	for (i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

/* Tag pairs of ws->m; keys and values point into the strings returned. */
static size_t get_tags(const struct amsp_msgview *m, struct ec2_tag *tags, char ***keys,
                       char ***values)
{
	size_t nk, nv, i;

	*keys = fields_dup(m, AMSP_T_TAG_KEY, &nk);
	*values = fields_dup(m, AMSP_T_TAG_VALUE, &nv);
	if (nv < nk)
		nk = nv;
	for (i = 0; i < nk && i < MAX_TAGS; i++) {
		tags[i].key = (*keys)[i];
		tags[i].value = (*values)[i];
	}
	return i;
}

/*
 * The one way the worker calls EC2: every action goes through ec2_call_retrying().
 *
 * - The deadline: timeout_ms for the whole call, retries included; each
 *   attempt gets what is left.
 * - Credentials EC2 refuses (AMIS_F_CREDS: expired, rotated) are fetched
 *   again once, and the attempt made again at once.
 * - Throttling, 5xx and transport failures (AMIS_F_RETRY) are retried after
 *   the jittered back-off of channel.h, up to the configuration's retries,
 *   only when the call may be repeated: never the call made while frozen
 *   (the root process thaws first and runs a whole new freeze cycle), and
 *   never a call that may have created something (CreateSnapshots,
 *   CreateImage) unless EC2's answer says it was not carried out
 *   (repeat_if_refused: RegisterImage, after the backup).  A message from
 *   the root process (W_ABANDON) ends the back-off at once.
 * - When more than one attempt failed, the error says what each one met.
 */
struct ec2_action {
	const char *name; /* for the log */
	bool may_repeat;
	int (*run)(struct wstate *ws, const struct aws_credentials *cr, long timeout_ms, void *arg,
	           struct amis_err *err);
	void *arg;
	/*
	 * A call that may create something, but is repeated after an answer
	 * that says EC2 did not carry it out (throttling, a 5xx error document:
	 * AMIS_F_RETRY without AMIS_F_MAYBE_DONE).  Never for a call made while
	 * frozen.
	 */
	bool repeat_if_refused;
};

/* Sleeps ms unless the root process says something first: 0, or -1 if it did. */
static int backoff_sleep(struct wstate *ws, long ms)
{
	struct pollfd p = {.fd = ws->fd, .events = POLLIN};
	long long deadline = mono_usec() + ms * 1000LL;
	long long left;

	while ((left = (deadline - mono_usec()) / 1000) > 0) {
		int n = poll(&p, 1, left > INT_MAX ? INT_MAX : (int)left);

		if (n > 0)
			return -1;
		if (n < 0 && errno != EINTR)
			return -1;
	}
	return 0;
}

static int ec2_call_retrying(struct wstate *ws, long timeout_ms, const struct ec2_action *a,
                             struct amis_err *err)
{
	long long deadline = mono_usec() + timeout_ms * 1000LL;
	struct aws_credentials cr;
	struct strbuf attempts;
	bool creds_refetched = false;
	int attempt, rc = -1;

	sb_init(&attempts);
	for (attempt = 1;; attempt++) {
		long left = (long)((deadline - mono_usec()) / 1000);
		long wait;

		if (left < 1)
			left = 1;
		rc = aws_ctx_credentials(ws->aws, &cr, err);
		if (rc == 0)
			rc = a->run(ws, &cr, left, a->arg, err);
		secure_zero(&cr, sizeof(cr));
		if (rc == 0)
			break;
		if (!creds_refetched && aws_ctx_credentials_refused(ws->aws, err)) {
			creds_refetched = true;
			attempt--;
			continue;
		}
		sb_appendf(&attempts, "%s%s", attempt > 1 ? ", " : "", err->code);
		if (!(a->may_repeat ||
		      (a->repeat_if_refused && !(err_flags(err) & AMIS_F_MAYBE_DONE))) ||
		    !(err_flags(err) & AMIS_F_RETRY) || attempt > ws->cfg.retries)
			break;
		wait = retry_backoff_ms(ws->cfg.retry_backoff_ms, attempt + 1, err);
		if (mono_usec() + wait * 1000LL >= deadline)
			break;
		log_warn("EC2 %s: attempt %d of %ld failed: %s; retrying in %.1f s", a->name,
		         attempt, ws->cfg.retries + 1, err->code, wait / 1000.0);
		if (backoff_sleep(ws, wait) != 0)
			break;
	}
	if (rc != 0 && attempt > 1)
		err_prefix(err, "%d attempts failed (%s)", attempt, sb_str(&attempts));
	sb_free(&attempts);
	return rc;
}

/*
 * Independent calls made at once (ec2_call_many, one round trip for all),
 * through ec2_call_retrying like every other call: each attempt makes the
 * calls not settled yet.  A call settles when it succeeds or fails in a way
 * a retry would not change; the first failure a retry might change is the
 * attempt's.  Only for calls that may be repeated (reads, DryRuns, tags).
 */
#define BATCH_MAX 72 /* CreateTags: the set's, and one per snapshot (W_MAXVOL) */

struct batch {
	size_t n;
	const char *action[BATCH_MAX];
	struct ec2_params params[BATCH_MAX];
	struct amis_err err[BATCH_MAX];
	xmlDocPtr doc[BATCH_MAX]; /* a settled success's answer (NULL for a DryRun) */
	int rc[BATCH_MAX];        /* settled: 0 or -1; unsettled: 1 */
};

static struct ec2_params *batch_add(struct batch *b, const char *action)
{
	size_t i = b->n++;

	b->action[i] = action;
	ec2_params_init(&b->params[i]);
	err_clear(&b->err[i]);
	b->doc[i] = NULL;
	b->rc[i] = 1;
	return &b->params[i];
}

static void batch_free(struct batch *b)
{
	size_t i;

	for (i = 0; i < b->n; i++) {
		ec2_params_free(&b->params[i]);
		xml_free(b->doc[i]);
	}
	b->n = 0;
}

static int run_batch(struct wstate *ws, const struct aws_credentials *cr, long timeout_ms,
                     void *arg, struct amis_err *err)
{
	struct batch *b = arg;
	struct ec2_batch_call calls[HTTP_MAX_PARALLEL];
	size_t idx[HTTP_MAX_PARALLEL], i = 0, k, n;
	int rc = 0;

	while (i < b->n) {
		for (n = 0; i < b->n && n < HTTP_MAX_PARALLEL; i++) {
			if (b->rc[i] != 1)
				continue;
			err_clear(&b->err[i]);
			calls[n] = (struct ec2_batch_call){
			    b->action[i], &b->params[i], timeout_ms, NULL, -1, &b->err[i]};
			idx[n++] = i;
		}
		if (n)
			ec2_call_many(aws_ctx_ec2(ws->aws), cr, calls, n, 0);
		for (k = 0; k < n; k++) {
			const struct amis_err *e = &b->err[idx[k]];

			if (calls[k].rc == 0) {
				b->doc[idx[k]] = calls[k].doc;
				b->rc[idx[k]] = 0;
			} else if (!(err_flags(e) & (AMIS_F_RETRY | AMIS_F_CREDS))) {
				b->rc[idx[k]] = -1;
			} else if (rc == 0) {
				*err = *e; /* an attempt's failure: retried if it may be */
				rc = -1;
			}
		}
	}
	return rc;
}

/* Makes b's calls; afterwards an unsettled call failed with its last error. */
static void batch_run(struct wstate *ws, const char *name, struct batch *b, long timeout_ms)
{
	struct ec2_action a = {name, true, run_batch, b, false};
	struct amis_err err;
	size_t i;

	err_clear(&err);
	ec2_call_retrying(ws, timeout_ms, &a, &err);
	for (i = 0; i < b->n; i++)
		if (b->rc[i] == 1) {
			b->rc[i] = -1;
			if (!b->err[i].code[0])
				b->err[i] = err; /* no credentials: nothing was sent */
		}
}

static int w_ready(struct wstate *ws, uint32_t seq, struct amis_err *err)
{
	struct amsp_writer aw;

	if (aws_ctx_ready(ws->aws, err) != 0)
		return send_error(ws, seq, err);
	amsp_begin(&aw, ws->out, sizeof(ws->out), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, seq);
	amsp_put_str(&aw, AMSP_T_INSTANCE_ID, aws_ctx_instance_id(ws->aws));
	amsp_put_str(&aw, AMSP_T_REGION, aws_ctx_region(ws->aws));
	return send_reply(ws, &aw);
}

static void put_product_codes(struct amsp_writer *aw, const struct ec2_product_code *pc, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		amsp_put_str(aw, AMSP_T_PRODUCT_CODE, pc[i].code);
		amsp_put_str(aw, AMSP_T_PRODUCT_CODE_TYPE, pc[i].type);
	}
}

/*
 * The request a W_CREATE_SNAPSHOTS or W_DESCRIBE_INSTANCE frame describes;
 * its strings point into *keep, freed by create_req_free.
 */
struct create_req_strings {
	char **keys, **values, **excl, *instance_id, *desc;
	size_t nkeys, nvalues, nexcl;
	struct ec2_tag tags[MAX_TAGS];
};

static void create_req_get(const struct amsp_msgview *m, struct ec2_create_snapshots_req *r,
                           struct create_req_strings *keep)
{
	memset(r, 0, sizeof(*r));
	keep->nkeys = amsp_count(m, AMSP_T_TAG_KEY);
	keep->nvalues = amsp_count(m, AMSP_T_TAG_VALUE);
	keep->instance_id = field_dup(amsp_get(m, AMSP_T_INSTANCE_ID));
	keep->desc = field_dup(amsp_get(m, AMSP_T_DESCRIPTION));
	r->instance_id = keep->instance_id;
	r->description = keep->desc;
	r->dry_run = amsp_get(m, AMSP_T_DRY_RUN) && amsp_u8(amsp_get(m, AMSP_T_DRY_RUN)) != 0;
	r->exclude_boot_volume =
	    amsp_get(m, AMSP_T_EXCLUDE_BOOT) && amsp_u8(amsp_get(m, AMSP_T_EXCLUDE_BOOT)) != 0;
	keep->excl = fields_dup(m, AMSP_T_EXCLUDE_VOLUME, &keep->nexcl);
	r->exclude_volume_ids = (const char *const *)keep->excl;
	r->n_exclude = keep->nexcl;
	r->tags = keep->tags;
	r->ntags = get_tags(m, keep->tags, &keep->keys, &keep->values);
}

static void create_req_free(struct create_req_strings *keep)
{
	strv_free(keep->keys, keep->nkeys);
	strv_free(keep->values, keep->nvalues);
	strv_free(keep->excl, keep->nexcl);
	free(keep->instance_id);
	free(keep->desc);
}

/*
 * DescribeInstances; with DRY_RUN, a DryRun CreateSnapshots of the request
 * the frame carries at the same time (PREPARE with the mapping the helper
 * kept: one round trip for both).  The DryRun's failure comes back in the
 * W_OK (ERROR_CODE, ERROR_MESSAGE): the helper decides, with the mapping.
 */
static int w_describe_instance(struct wstate *ws, uint32_t seq, long timeout_ms,
                               struct amis_err *err)
{
	struct ec2_instance_info *inst = xcalloc(1, sizeof(*inst));
	struct batch *b = xcalloc(1, sizeof(*b));
	struct ec2_create_snapshots_req r;
	struct create_req_strings keep;
	struct amsp_writer aw;
	char id[65];
	size_t i;
	int rc = -1;

	amsp_copy_str(amsp_get(&ws->m, AMSP_T_INSTANCE_ID), id, sizeof(id));
	create_req_get(&ws->m, &r, &keep);
	ec2_params_add(batch_add(b, "DescribeInstances"), "InstanceId.1", id);
	if (r.dry_run &&
	    ec2_create_snapshots_params(batch_add(b, "CreateSnapshots"), &r, &b->err[1]) != 0)
		b->rc[1] = -1;
	batch_run(ws,
	          b->n > 1 ? "DescribeInstances and a DryRun CreateSnapshots" : "DescribeInstances",
	          b, timeout_ms);
	if (b->rc[0] == 0 && ec2_parse_instance(b->doc[0], id, inst, &b->err[0]) < 0) {
		err_prefix(&b->err[0], "EC2 DescribeInstances");
		b->rc[0] = -1;
	}
	if (b->rc[0] != 0) {
		*err = b->err[0];
		rc = send_error(ws, seq, err);
		goto out;
	}
	amsp_begin(&aw, ws->out, sizeof(ws->out), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, seq);
	if (inst->root_device_name[0])
		amsp_put_str(&aw, AMSP_T_ROOT_DEVICE, inst->root_device_name);
	for (i = 0; i < inst->nvolumes; i++) {
		amsp_put_str(&aw, AMSP_T_DEVICE_NAME, inst->volumes[i].device_name);
		amsp_put_str(&aw, AMSP_T_VOLUME_ID, inst->volumes[i].volume_id);
		amsp_put_u8(&aw, AMSP_T_DELETE_ON_TERM, inst->volumes[i].delete_on_termination);
	}
	/* What an image of the instance needs (the AMI methods). */
	amsp_put_str_if(&aw, AMSP_T_ARCHITECTURE, inst->architecture);
	amsp_put_str_if(&aw, AMSP_T_VIRT_TYPE, inst->virtualization_type);
	amsp_put_u8(&aw, AMSP_T_ENA, inst->ena_support);
	amsp_put_str_if(&aw, AMSP_T_BOOT_MODE, inst->boot_mode);
	amsp_put_str_if(&aw, AMSP_T_IMAGE_ID, inst->image_id);
	amsp_put_str_if(&aw, AMSP_T_PLATFORM, inst->platform_details);
	amsp_put_str_if(&aw, AMSP_T_USAGE_OPERATION, inst->usage_operation);
	put_product_codes(&aw, inst->product_codes, inst->nproduct_codes);
	if (b->n > 1 && b->rc[1] != 0) {
		amsp_put_str(&aw, AMSP_T_ERROR_CODE,
		             b->err[1].code[0] ? b->err[1].code : "WorkerError");
		amsp_put_str(&aw, AMSP_T_ERROR_MESSAGE, b->err[1].msg);
	}
	rc = send_reply(ws, &aw);
out:
	create_req_free(&keep);
	batch_free(b);
	free(b);
	free(inst);
	return rc;
}

struct create_snapshots_arg {
	const struct ec2_create_snapshots_req *req;
	struct ec2_snapshot_set *out;
};

static int run_create_snapshots(struct wstate *ws, const struct aws_credentials *cr,
                                long timeout_ms, void *arg, struct amis_err *err)
{
	struct create_snapshots_arg *c = arg;

	ec2_snapshot_set_free(c->out);
	return ec2_create_snapshots(aws_ctx_ec2(ws->aws), cr, c->req, timeout_ms, c->out, err);
}

static int w_create_snapshots(struct wstate *ws, uint32_t seq, long timeout_ms,
                              struct amis_err *err)
{
	const struct amsp_msgview *m = &ws->m;
	struct ec2_create_snapshots_req r;
	struct ec2_snapshot_set snaps = {0};
	struct ec2_tag tags[MAX_TAGS];
	struct create_snapshots_arg arg = {&r, &snaps};
	struct ec2_action a = {"CreateSnapshots", false, run_create_snapshots, &arg, false};
	struct amsp_writer aw;
	char **keys, **values, **excl;
	char *instance_id = field_dup(amsp_get(m, AMSP_T_INSTANCE_ID));
	char *desc = field_dup(amsp_get(m, AMSP_T_DESCRIPTION));
	bool hold = amsp_u8(amsp_get(m, AMSP_T_HOLD_LOG)) != 0;
	size_t nexcl, nkeys = amsp_count(m, AMSP_T_TAG_KEY),
	              nvalues = amsp_count(m, AMSP_T_TAG_VALUE);
	int rc;

	memset(&r, 0, sizeof(r));
	r.instance_id = instance_id;
	r.description = desc;
	r.dry_run = amsp_u8(amsp_get(m, AMSP_T_DRY_RUN)) != 0;
	r.exclude_boot_volume = amsp_u8(amsp_get(m, AMSP_T_EXCLUDE_BOOT)) != 0;
	excl = fields_dup(m, AMSP_T_EXCLUDE_VOLUME, &nexcl);
	r.exclude_volume_ids = (const char *const *)excl;
	r.n_exclude = nexcl;
	r.tags = tags;
	r.ntags = get_tags(m, tags, &keys, &values);

	if (hold)
		log_hold();
	/*
	 * Only a DryRun made while nothing is frozen may be repeated: the real
	 * call may have created snapshots, and the one made while frozen must
	 * end quickly (the root process thaws, then runs a new cycle).
	 */
	a.may_repeat = r.dry_run && !hold;
	/* A W_ABANDON (or the helper's death) ends the call at once. */
	ec2_client_set_abort_fd(aws_ctx_ec2(ws->aws), ws->fd);
	rc = ec2_call_retrying(ws, timeout_ms, &a, err);
	ec2_client_set_abort_fd(aws_ctx_ec2(ws->aws), -1);
	if (rc == 0) {
		amsp_begin(&aw, ws->out, sizeof(ws->out), AMSP_W_OK);
		amsp_put_u32(&aw, AMSP_T_SEQ, seq);
		put_snapshots(&aw, &snaps);
		rc = send_reply(ws, &aw);
	} else {
		rc = send_error(ws, seq, err);
	}
	if (hold)
		log_release();
	ec2_snapshot_set_free(&snaps);
	strv_free(keys, nkeys);
	strv_free(values, nvalues);
	strv_free(excl, nexcl);
	free(instance_id);
	free(desc);
	return rc;
}

/*
 * CreateTags: TAG_* on every RESOURCE_ID (one call), and each resource's
 * own ITEM_* tags (one call per resource), all at once: one round trip.
 * Tagging again with the same tags changes nothing: every call may be
 * repeated.  W_OK when every call succeeded; otherwise the first failure.
 */
static int w_create_tags(struct wstate *ws, uint32_t seq, long timeout_ms, struct amis_err *err)
{
	const struct amsp_msgview *m = &ws->m;
	struct ec2_tag tags[MAX_TAGS], *own;
	struct batch *b = xcalloc(1, sizeof(*b));
	struct amsp_writer aw;
	char **ids, **keys, **values, **ikeys, **ivalues;
	size_t nids, ntags, nik, niv, nitems = amsp_count(m, AMSP_T_ITEM_RESOURCE), i, j, nown,
	                              nkeys = amsp_count(m, AMSP_T_TAG_KEY),
	                              nvalues = amsp_count(m, AMSP_T_TAG_VALUE);
	int rc = 0;

	ids = fields_dup(m, AMSP_T_RESOURCE_ID, &nids);
	ntags = get_tags(m, tags, &keys, &values);
	ikeys = fields_dup(m, AMSP_T_ITEM_TAG_KEY, &nik);
	ivalues = fields_dup(m, AMSP_T_ITEM_TAG_VALUE, &niv);
	own = xcalloc(nitems + 1, sizeof(*own));
	if (nik != nitems || niv != nitems)
		rc = err_set(err, AMIS_E_INVALID_REQUEST, "CreateTags: unpaired resource tags");
	for (i = 0; rc == 0 && i < nitems; i++)
		if (amsp_u32(amsp_get_nth(m, AMSP_T_ITEM_RESOURCE, i)) >= nids)
			rc = err_set(err, AMIS_E_INVALID_REQUEST,
			             "CreateTags: a resource tag names no resource");
	if (rc == 0 && ntags &&
	    ec2_create_tags_params(batch_add(b, "CreateTags"), (const char *const *)ids, nids, tags,
	                           ntags, err) != 0)
		rc = -1;
	for (j = 0; rc == 0 && j < nids && b->n < BATCH_MAX; j++) {
		for (i = 0, nown = 0; i < nitems; i++)
			if (amsp_u32(amsp_get_nth(m, AMSP_T_ITEM_RESOURCE, i)) == j)
				own[nown++] = (struct ec2_tag){ikeys[i], ivalues[i]};
		if (nown &&
		    ec2_create_tags_params(batch_add(b, "CreateTags"), (const char *const *)&ids[j],
		                           1, own, nown, err) != 0)
			rc = -1;
	}
	if (rc == 0 && !b->n)
		rc = err_set(err, AMIS_E_INVALID_PARAMETER_VALUE, "CreateTags needs a tag");
	if (rc == 0) {
		batch_run(ws, "CreateTags", b, timeout_ms);
		for (i = 0; i < b->n && rc == 0; i++)
			if (b->rc[i] != 0 || ec2_parse_create_tags(b->doc[i], &b->err[i]) < 0) {
				*err = b->err[i];
				if (b->rc[i] == 0)
					err_prefix(err, "EC2 CreateTags");
				rc = -1;
			}
	}
	if (rc == 0) {
		amsp_begin(&aw, ws->out, sizeof(ws->out), AMSP_W_OK);
		amsp_put_u32(&aw, AMSP_T_SEQ, seq);
		rc = send_reply(ws, &aw);
	} else {
		rc = send_error(ws, seq, err);
	}
	batch_free(b);
	free(b);
	free(own);
	strv_free(ids, nids);
	strv_free(keys, nkeys);
	strv_free(values, nvalues);
	strv_free(ikeys, nik);
	strv_free(ivalues, niv);
	return rc;
}

struct find_snapshots_arg {
	const char *keys[2];
	const char *values[2];
	size_t n;
	struct ec2_snapshot_set *out;
};

static int run_find_snapshots(struct wstate *ws, const struct aws_credentials *cr, long timeout_ms,
                              void *arg, struct amis_err *err)
{
	struct find_snapshots_arg *f = arg;

	ec2_snapshot_set_free(f->out);
	return ec2_describe_snapshots_by_tags(aws_ctx_ec2(ws->aws), cr, f->keys, f->values, f->n,
	                                      timeout_ms, f->out, err);
}

static int w_find_snapshots(struct wstate *ws, uint32_t seq, long timeout_ms, struct amis_err *err)
{
	struct ec2_snapshot_set found = {0};
	struct find_snapshots_arg f = {{NULL, NULL}, {NULL, NULL}, 0, &found};
	struct ec2_action a = {"DescribeSnapshots", true, run_find_snapshots, &f, false};
	struct amsp_writer aw;
	size_t i;
	int rc;

	/* The rules allow one or two of each; a key without its value is refused below. */
	f.n = amsp_count(&ws->m, AMSP_T_TAG_KEY);
	for (i = 0; i < f.n && i < 2; i++) {
		f.keys[i] = field_dup(amsp_get_nth(&ws->m, AMSP_T_TAG_KEY, i));
		f.values[i] = field_dup(amsp_get_nth(&ws->m, AMSP_T_TAG_VALUE, i));
	}
	rc = ec2_call_retrying(ws, timeout_ms, &a, err);
	for (i = 0; i < 2; i++) {
		free((char *)f.keys[i]);
		free((char *)f.values[i]);
	}
	if (rc != 0) {
		ec2_snapshot_set_free(&found);
		return send_error(ws, seq, err);
	}
	amsp_begin(&aw, ws->out, sizeof(ws->out), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, seq);
	put_snapshots(&aw, &found);
	ec2_snapshot_set_free(&found);
	return send_reply(ws, &aw);
}

/* ---- Images and volumes (the AMI methods). ---- */

static char *str_field(const struct amsp_msgview *m, enum amsp_tag tag, char *buf, size_t sz)
{
	buf[0] = '\0';
	if (amsp_get(m, tag))
		amsp_copy_str(amsp_get(m, tag), buf, sz);
	return buf[0] ? buf : NULL;
}

struct describe_image_arg {
	struct ec2_image_query q;
	struct ec2_image_info *out;
};

static int run_describe_image(struct wstate *ws, const struct aws_credentials *cr, long timeout_ms,
                              void *arg, struct amis_err *err)
{
	struct describe_image_arg *d = arg;

	return ec2_describe_image(aws_ctx_ec2(ws->aws), cr, &d->q, timeout_ms, d->out, err);
}

static int w_describe_image(struct wstate *ws, uint32_t seq, long timeout_ms, struct amis_err *err)
{
	struct ec2_image_info *img = xcalloc(1, sizeof(*img));
	struct describe_image_arg d = {{0}, img};
	struct ec2_action a = {"DescribeImages", true, run_describe_image, &d, false};
	char id[65], key[513], value[1025], name[257];
	struct amsp_writer aw;

	d.q.image_id = str_field(&ws->m, AMSP_T_IMAGE_ID, id, sizeof(id));
	d.q.tag_key = str_field(&ws->m, AMSP_T_TAG_KEY, key, sizeof(key));
	d.q.tag_value = str_field(&ws->m, AMSP_T_TAG_VALUE, value, sizeof(value));
	d.q.name = str_field(&ws->m, AMSP_T_NAME, name, sizeof(name));
	if (ec2_call_retrying(ws, timeout_ms, &a, err) != 0) {
		free(img);
		return send_error(ws, seq, err);
	}
	amsp_begin(&aw, ws->out, sizeof(ws->out), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, seq);
	amsp_put_str_if(&aw, AMSP_T_IMAGE_ID, img->image_id);
	amsp_put_str_if(&aw, AMSP_T_IMAGE_STATE, img->state);
	amsp_put_str_if(&aw, AMSP_T_NAME, img->name);
	amsp_put_str_if(&aw, AMSP_T_PLATFORM, img->platform_details);
	amsp_put_str_if(&aw, AMSP_T_USAGE_OPERATION, img->usage_operation);
	put_product_codes(&aw, img->product_codes, img->nproduct_codes);
	channel_put_image(&aw, img);
	free(img);
	return send_reply(ws, &aw);
}

struct describe_volumes_arg {
	const char *const *ids;
	size_t n;
	struct ec2_volume_set *out;
};

static int run_describe_volumes(struct wstate *ws, const struct aws_credentials *cr,
                                long timeout_ms, void *arg, struct amis_err *err)
{
	struct describe_volumes_arg *d = arg;

	return ec2_describe_volumes(aws_ctx_ec2(ws->aws), cr, d->ids, d->n, timeout_ms, d->out,
	                            err);
}

static int w_describe_volumes(struct wstate *ws, uint32_t seq, long timeout_ms,
                              struct amis_err *err)
{
	struct ec2_volume_set *vs = xcalloc(1, sizeof(*vs));
	size_t nids, i;
	char **ids = fields_dup(&ws->m, AMSP_T_VOLUME_ID, &nids);
	struct describe_volumes_arg d = {(const char *const *)ids, nids, vs};
	struct ec2_action a = {"DescribeVolumes", true, run_describe_volumes, &d, false};
	struct amsp_writer aw;
	int rc = ec2_call_retrying(ws, timeout_ms, &a, err);

	strv_free(ids, nids);
	if (rc != 0) {
		free(vs);
		return send_error(ws, seq, err);
	}
	amsp_begin(&aw, ws->out, sizeof(ws->out), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, seq);
	for (i = 0; i < vs->n; i++) {
		amsp_put_str(&aw, AMSP_T_VOLUME_ID, vs->items[i].volume_id);
		amsp_put_str(&aw, AMSP_T_VOLUME_TYPE, vs->items[i].volume_type);
		amsp_put_u32(&aw, AMSP_T_VOLUME_SIZE, amsp_u32_of(vs->items[i].size_gib));
		amsp_put_u32(&aw, AMSP_T_IOPS, amsp_u32_of(vs->items[i].iops));
		amsp_put_u32(&aw, AMSP_T_THROUGHPUT, amsp_u32_of(vs->items[i].throughput));
	}
	free(vs);
	return send_reply(ws, &aw);
}

/* A W_REGISTER_IMAGE's name, attributes and mapping into info. */
static int image_from_msg(const struct amsp_msgview *m, struct ec2_image_info *info,
                          struct amis_err *err)
{
	str_field(m, AMSP_T_NAME, info->name, sizeof(info->name));
	if (channel_get_image(m, info) != 0)
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "RegisterImage: the block device mapping's fields do not pair up");
	return 0;
}

struct new_image_arg {
	const struct ec2_register_image_req *reg; /* or */
	const struct ec2_create_image_req *create;
	char image_id[32];
};

static int run_new_image(struct wstate *ws, const struct aws_credentials *cr, long timeout_ms,
                         void *arg, struct amis_err *err)
{
	struct new_image_arg *n = arg;

	if (n->reg)
		return ec2_register_image(aws_ctx_ec2(ws->aws), cr, n->reg, timeout_ms, n->image_id,
		                          sizeof(n->image_id), err);
	return ec2_create_image(aws_ctx_ec2(ws->aws), cr, n->create, timeout_ms, n->image_id,
	                        sizeof(n->image_id), err);
}

/*
 * RegisterImage and CreateImage: never repeated (each may have made an
 * image; neither is sent with a ClientToken), except a DryRun made while
 * nothing is frozen.  A lost answer is found again by the request-id tag.
 */
static int w_new_image(struct wstate *ws, uint32_t seq, long timeout_ms, struct amis_err *err)
{
	const struct amsp_msgview *m = &ws->m;
	bool create = m->type == AMSP_W_CREATE_IMAGE;
	bool dry = amsp_u8(amsp_get(m, AMSP_T_DRY_RUN)) != 0;
	bool hold = create && amsp_u8(amsp_get(m, AMSP_T_HOLD_LOG)) != 0;
	struct ec2_image_info *info = xcalloc(1, sizeof(*info));
	struct ec2_register_image_req rr;
	struct ec2_create_image_req cr;
	struct new_image_arg n;
	struct ec2_action a = {create ? "CreateImage" : "RegisterImage", dry && !hold,
	                       run_new_image, &n, false};
	struct ec2_tag tags[MAX_TAGS];
	char **keys, **values;
	size_t nkeys = amsp_count(m, AMSP_T_TAG_KEY), nvalues = amsp_count(m, AMSP_T_TAG_VALUE);
	char *desc = field_dup(amsp_get(m, AMSP_T_DESCRIPTION));
	char *name = field_dup(amsp_get(m, AMSP_T_NAME));
	char *inst = field_dup(amsp_get(m, AMSP_T_INSTANCE_ID));
	struct amsp_writer aw;
	int rc = 0;

	memset(&n, 0, sizeof(n));
	memset(&rr, 0, sizeof(rr));
	memset(&cr, 0, sizeof(cr));
	size_t ntags = get_tags(m, tags, &keys, &values);
	if (create) {
		cr = (struct ec2_create_image_req){inst, name, desc, tags, ntags, dry};
		n.create = &cr;
	} else {
		rc = image_from_msg(m, info, err);
		rr = (struct ec2_register_image_req){info, desc, tags, ntags, dry};
		n.reg = &rr;
	}
	/* RegisterImage, after the backup: again when EC2 refused it (throttled...). */
	a.repeat_if_refused = !create && !dry;
	if (hold)
		log_hold();
	if (rc == 0) {
		ec2_client_set_abort_fd(aws_ctx_ec2(ws->aws), ws->fd);
		rc = ec2_call_retrying(ws, timeout_ms, &a, err);
		ec2_client_set_abort_fd(aws_ctx_ec2(ws->aws), -1);
	}
	if (rc == 0) {
		amsp_begin(&aw, ws->out, sizeof(ws->out), AMSP_W_OK);
		amsp_put_u32(&aw, AMSP_T_SEQ, seq);
		amsp_put_str_if(&aw, AMSP_T_IMAGE_ID, n.image_id);
		rc = send_reply(ws, &aw);
	} else {
		rc = send_error(ws, seq, err);
	}
	if (hold)
		log_release();
	strv_free(keys, nkeys);
	strv_free(values, nvalues);
	free(desc);
	free(name);
	free(inst);
	free(info);
	return rc;
}

static int run_deregister(struct wstate *ws, const struct aws_credentials *cr, long timeout_ms,
                          void *arg, struct amis_err *err)
{
	return ec2_deregister_image(aws_ctx_ec2(ws->aws), cr, arg, timeout_ms, err);
}

static int w_deregister_image(struct wstate *ws, uint32_t seq, long timeout_ms,
                              struct amis_err *err)
{
	char id[65];
	struct ec2_action a = {"DeregisterImage", true, run_deregister, id, false};
	struct amsp_writer aw;

	str_field(&ws->m, AMSP_T_IMAGE_ID, id, sizeof(id));
	if (ec2_call_retrying(ws, timeout_ms, &a, err) != 0)
		return send_error(ws, seq, err);
	amsp_begin(&aw, ws->out, sizeof(ws->out), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, seq);
	return send_reply(ws, &aw);
}

/* ---- The preflight check (doc/protocol.md, "Check"). ---- */

static void put_row(struct amsp_writer *aw, const char *name, const char *result,
                    const char *detail, const char *hint)
{
	amsp_put_str(aw, AMSP_T_CHECK_NAME, name);
	amsp_put_str(aw, AMSP_T_CHECK_RESULT, result);
	amsp_put_str(aw, AMSP_T_CHECK_DETAIL, detail);
	amsp_put_str(aw, AMSP_T_CHECK_HINT, hint);
}

struct dryrun_arg {
	const char *action;
	const struct ec2_params *params;
};

static int run_dryrun(struct wstate *ws, const struct aws_credentials *cr, long timeout_ms,
                      void *arg, struct amis_err *err)
{
	struct dryrun_arg *d = arg;
	xmlDocPtr doc = NULL;
	int rc = ec2_call(aws_ctx_ec2(ws->aws), cr, d->action, d->params, timeout_ms, 0, &doc, err);

	if (doc)
		xml_free(doc);
	return rc;
}

/*
 * A snapshot of ours for the actions that work on one (dryrun.h), "" when
 * none is found or DescribeSnapshots is not allowed (its own row says so).
 */
static void find_own_snapshot(struct wstate *ws, long timeout_ms, char *id, size_t idsz)
{
	struct ec2_snapshot_set set = {0};
	struct ec2_params p;
	struct amis_err err;
	xmlDocPtr doc = NULL;
	struct aws_credentials cr;
	size_t i, n = amsp_count(&ws->m, AMSP_T_CHECK_ACTION);
	bool wanted = false;
	char action[33];

	id[0] = '\0';
	for (i = 0; i < n; i++) {
		amsp_copy_str(amsp_get_nth(&ws->m, AMSP_T_CHECK_ACTION, i), action, sizeof(action));
		wanted = wanted || dryrun_wants_snapshot(action);
	}
	if (!wanted)
		return;
	err_clear(&err);
	ec2_params_init(&p);
	dryrun_find_snapshot_params(&p);
	if (aws_ctx_credentials(ws->aws, &cr, &err) == 0 &&
	    ec2_call(aws_ctx_ec2(ws->aws), &cr, "DescribeSnapshots", &p, timeout_ms, 0, &doc,
	             &err) == 0 &&
	    doc && ec2_parse_snapshot_set(doc, "", &set, &err) == 0 && set.n > 0)
		snprintf(id, idsz, "%s", set.items[0].snapshot_id);
	else
		log_debug("check: no snapshot of ours to name: %s",
		          err.code[0] ? err.code : "none");
	secure_zero(&cr, sizeof(cr));
	if (doc)
		xml_free(doc);
	ec2_snapshot_set_free(&set);
	ec2_params_free(&p);
}

/* One row per action of the request: its DryRun's verdict. */
static void check_actions(struct wstate *ws, struct amsp_writer *aw, const struct dryrun_ctx *dc,
                          long timeout_ms)
{
	char action[33], name[64], detail[AMSP_CHECK_TEXT], hint[AMSP_CHECK_TEXT];
	size_t i, n = amsp_count(&ws->m, AMSP_T_CHECK_ACTION);

	for (i = 0; i < n; i++) {
		struct ec2_params p;
		struct dryrun_arg d = {action, &p};
		struct ec2_action a = {action, true, run_dryrun, &d, false};
		struct amis_err err;
		const char *why;
		int rc;

		amsp_copy_str(amsp_get_nth(&ws->m, AMSP_T_CHECK_ACTION, i), action, sizeof(action));
		snprintf(name, sizeof(name), "ec2:%s", action);
		if (!dryrun_known(action)) {
			put_row(aw, name, "failed", "the check does not know this action", "");
			continue;
		}
		if (!dryrun_possible(action, &why)) {
			snprintf(hint, sizeof(hint), "make sure ec2:%s is allowed", action);
			put_row(aw, name, "skipped", why, hint);
			continue;
		}
		err_clear(&err);
		ec2_params_init(&p);
		dryrun_params(action, dc, &p);
		rc = ec2_call_retrying(ws, timeout_ms, &a, &err);
		ec2_params_free(&p);
		put_row(aw, name,
		        dryrun_result_name(dryrun_verdict(action, rc, &err, detail, sizeof(detail),
		                                          hint, sizeof(hint))),
		        detail, hint);
		log_info("check: %s: %s", name, detail);
	}
}

/*
 * W_CHECK: IMDS, the credentials (their source only), the region and the
 * instance, then a DryRun of each CHECK_ACTION.  Always answered with
 * W_OK and rows: a failed check is a row, not an error.
 */
static int w_check(struct wstate *ws, uint32_t seq, long timeout_ms, struct amis_err *err)
{
	struct imds_client *imds = aws_ctx_imds(ws->aws);
	struct imds_identity id;
	struct dryrun_ctx dc;
	struct amsp_writer aw;
	char detail[AMSP_CHECK_TEXT], src[64], vol[65] = "", snap[65];
	bool imds_needed = !ws->cfg.instance_id || !ws->cfg.region;

	amsp_begin(&aw, ws->out, sizeof(ws->out), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, seq);
	memset(&id, 0, sizeof(id));
	err_clear(err);
	if (imds && imds_get_identity(imds, &id, err) == 0) {
		snprintf(detail, sizeof(detail), "reachable at %s: instance %s in %s",
		         imds_endpoint(imds), id.instance_id,
		         id.availability_zone[0] ? id.availability_zone : id.region);
		put_row(&aw, "imds", "ok", detail, "");
	} else {
		snprintf(detail, sizeof(detail), "not reachable%s: %s",
		         imds_needed ? "" : " (not needed: [aws] instance_id and region are set)",
		         imds ? err->msg : "no IMDS client");
		put_row(&aw, "imds", imds_needed ? "failed" : "skipped", detail,
		        imds_needed ? "the helper learns the instance id and region there: check "
		                      "[aws] imds_endpoint and the instance's metadata options "
		                      "(HttpEndpoint enabled, HttpPutResponseHopLimit)"
		                    : "");
	}
	err_clear(err);
	if (aws_ctx_credentials_source(ws->aws, src, sizeof(src), err) == 0) {
		snprintf(detail, sizeof(detail), "found: from %s (never shown)", src);
		put_row(&aw, "credentials", "ok", detail, "");
	} else {
		put_row(&aw, "credentials", "failed", err->msg,
		        "attach an instance profile role to the instance, or name a credentials "
		        "file and profile in [aws] (doc/configuration.md)");
	}
	err_clear(err);
	if (aws_ctx_ready(ws->aws, err) != 0) {
		put_row(&aw, "instance and region", "failed", err->msg,
		        "set [aws] region, or let the helper reach IMDS");
		put_row(&aw, "ec2 permissions", "skipped",
		        "not tested: the region, instance or credentials are missing (rows above)",
		        "");
		return send_reply(ws, &aw);
	}
	snprintf(detail, sizeof(detail), "%s: instance %s, EC2 endpoint %s",
	         aws_ctx_region(ws->aws), aws_ctx_instance_id(ws->aws),
	         ec2_client_host(aws_ctx_ec2(ws->aws)));
	put_row(&aw, "instance and region", "ok", detail, "");
	str_field(&ws->m, AMSP_T_VOLUME_ID, vol, sizeof(vol));
	find_own_snapshot(ws, timeout_ms, snap, sizeof(snap));
	dc = (struct dryrun_ctx){aws_ctx_instance_id(ws->aws), aws_ctx_region(ws->aws),
	                         id.availability_zone, vol, snap};
	check_actions(ws, &aw, &dc, timeout_ms);
	return send_reply(ws, &aw);
}

static int dispatch(struct wstate *ws)
{
	uint32_t seq = amsp_u32(amsp_get(&ws->m, AMSP_T_SEQ));
	const struct amsp_field *t = amsp_get(&ws->m, AMSP_T_TIMEOUT_MS);
	long timeout_ms = t ? (long)amsp_u32(t) : 0;
	struct amis_err err;

	err_clear(&err);
	switch (ws->m.type) {
	case AMSP_W_READY:
		return w_ready(ws, seq, &err);
	case AMSP_W_DESCRIBE_INSTANCE:
		return w_describe_instance(ws, seq, timeout_ms, &err);
	case AMSP_W_CREATE_SNAPSHOTS:
		return w_create_snapshots(ws, seq, timeout_ms, &err);
	case AMSP_W_CREATE_TAGS:
		return w_create_tags(ws, seq, timeout_ms, &err);
	case AMSP_W_FIND_SNAPSHOTS:
		return w_find_snapshots(ws, seq, timeout_ms, &err);
	case AMSP_W_DESCRIBE_IMAGE:
		return w_describe_image(ws, seq, timeout_ms, &err);
	case AMSP_W_DESCRIBE_VOLUMES:
		return w_describe_volumes(ws, seq, timeout_ms, &err);
	case AMSP_W_REGISTER_IMAGE:
	case AMSP_W_CREATE_IMAGE:
		return w_new_image(ws, seq, timeout_ms, &err);
	case AMSP_W_DEREGISTER_IMAGE:
		return w_deregister_image(ws, seq, timeout_ms, &err);
	case AMSP_W_CHECK:
		return w_check(ws, seq, timeout_ms, &err);
	case AMSP_W_ABANDON:
		return 0; /* the call it names is over already */
	default:
		log_error("unexpected %s message from the helper", amsp_msg_name(ws->m.type));
		return -1;
	}
}

int worker_main(const char *config_path)
{
	struct wstate *ws = xcalloc(1, sizeof(*ws));
	pid_t parent = getppid();
	struct amis_err err;
	enum log_level level;
	const char *why;
	int rc = 1;

	log_set_ident("ec2-worker");
	/* exec of /proc/self/exe names it "exe": name it for ps and top. */
	prctl(PR_SET_NAME, "amis-ec2-worker", 0, 0, 0);
	ws->fd = WORKER_FD;
	if (fcntl(ws->fd, F_SETFD, FD_CLOEXEC) != 0) {
		log_error("descriptor %d is not the helper's socketpair", WORKER_FD);
		goto out;
	}
	config_init(&ws->cfg);
	err_clear(&err);
	if (config_load_file(&ws->cfg, config_path, &err) != 0) {
		log_error("configuration: %s", err.msg);
		goto out;
	}
	if (log_level_parse(ws->cfg.log_level, &level))
		log_set_level(level);
	ws->aws = aws_ctx_new(&ws->cfg);
	if (aws_ctx_pin_files(ws->aws, &err) != 0) {
		log_error("%s", err.msg);
		goto out;
	}
	/*
	 * The helper's OOMScoreAdjust=-1000 is not for the process that parses
	 * the network's input: the OOM killer may pick the worker like any other.
	 */
	if (geteuid() == 0) {
		int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);

		if (fd >= 0) {
			if (write(fd, "0", 1) != 1)
				log_warn("could not reset oom_score_adj: %s", strerror(errno));
			close(fd);
		}
	}
	if (geteuid() == 0) {
		if (worker_drop_privileges(ws->cfg.worker_user, &err) != 0) {
			log_error("%s", err.msg);
			goto out;
		}
	} else {
		log_warn("not started as root: running as uid %u", (unsigned)geteuid());
	}
	/* If the helper dies, so does the worker (also by end of file below). */
	prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0);
	if (getppid() != parent)
		goto out;
	if (chdir("/") != 0)
		goto out;

	for (;;) {
		ssize_t n = recv(ws->fd, ws->in, sizeof(ws->in), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n == 0 ? 0 : 1; /* end of file: the helper is done */
			break;
		}
		if (amsp_decode(ws->in, (size_t)n, &ws->m, &why) != 0) {
			log_error("malformed message from the helper: %s", why);
			break;
		}
		if (dispatch(ws) != 0) {
			log_error("cannot answer the helper: exiting");
			break;
		}
	}
out:
	if (ws->aws)
		aws_ctx_free(ws->aws);
	config_free(&ws->cfg);
	free(ws);
	return rc;
}
