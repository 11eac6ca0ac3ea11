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
#include "inflight.h"
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

/* Moves op to state to; a move the state machine does not allow is a bug, logged. */
void op_move(struct operation *op, enum op_state to)
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

/*
 * While frozen, an administrator's THAW abandons the call, and so does a
 * request to stop (SIGTERM: systemctl stop, a shutdown): the filesystems
 * are thawed at once, not when EC2 answers, and the client is told why.
 */
static const char *wait_abandon(void *arg)
{
	struct helper *h = arg;

	if (h->stop && *h->stop && h->active && freeze_plan_any_frozen(&h->active->plan))
		return amis_code_str(AMIS_E_STOP_REQUESTED);
	if (!h->thaw_requested)
		return NULL;
	h->thaw_requested = false;
	return amis_code_str(AMIS_E_THAW_REQUESTED);
}

struct helper *helper_new(struct helper_config *cfg, const char *config_path,
                          volatile sig_atomic_t *stop)
{
	struct helper *h = xcalloc(1, sizeof(*h));
	struct worker_waiter waiter = {wait_poll, wait_abandon, h};
	struct amis_err err;

	h->cfg = cfg;
	h->config_path = config_path;
	h->sys = &volumes_sys_paths_default;
	h->stop = stop;
	h->worker = worker_new(cfg, config_path);
	worker_set_waiter(h->worker, &waiter);
	h->jobs = jobs_new(cfg, config_path);
	srandom((unsigned int)(mono_usec() ^ getpid())); /* back-off jitter */
	err_clear(&err);
	if (worker_start(h->worker, &err) != 0)
		log_error("%s (retried on the next request)", err.msg);
	/* What a helper that died left unfinished: settled once idle, not before serving. */
	inflight_schedule(h, INFLIGHT_START_DELAY_US);
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
	jobs_free(h->jobs);
	free(h->mapping);
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
	for (i = 0; i < op->nall; i++)
		free(op->all_ids[i]);
	free(op->image_info);
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
void warn_thawed_by_others(const struct operation *op)
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
bool plan_thawed(struct helper *h, struct operation *op)
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
void op_end(struct helper *h, struct conn *c)
{
	struct operation *op = c->op;

	if (h->active == op)
		h->active = NULL;
	c->op = NULL;
	op->owner = NULL;
	/* An entry this call left (EC2's answer lost) is settled later, when idle. */
	inflight_schedule(h, INFLIGHT_RETRY_US);
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
	jobs_tick(h->jobs);
	/*
	 * Between calls, entries a dead helper left are settled without waiting
	 * for the next PREPARE (a helper never called again would keep them).
	 * The EC2 requests are made with the server still answering others
	 * (server_poll); PREPARE and CHECK meanwhile are told Busy.
	 */
	if (h->resolve_at_us && !h->active && !h->stuck && !*h->stop &&
	    mono_usec() >= h->resolve_at_us) {
		h->resolving = true;
		inflight_resolve(h);
		h->resolving = false;
		h->resolve_at_us = 0;
		inflight_schedule(h, INFLIGHT_RETRY_US);
	}
}

void op_start_cleanup(struct helper *h)
{
	jobs_cleanup_soon(h->jobs);
}

void op_stop_jobs(struct helper *h, long timeout_ms)
{
	jobs_shutdown(h->jobs, timeout_ms);
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
	/*
	 * PENDING: the backend waits in pg_backup_stop(), maybe for WAL
	 * archiving; a job's client waits for the job's end, however long.
	 */
	return c->job || (c->op && c->op->state == OPS_PENDING);
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
int send_error(struct helper *h, struct conn *c, const char *stage, const struct amis_err *err,
               const struct operation *op)
{
	unsigned char buf[8192];
	struct amsp_writer w;
	size_t len, i;

	mapping_note_error(h, err);
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
	if (op && op->image_id[0])
		amsp_put_str(&w, AMSP_T_IMAGE_ID, op->image_id);
	len = amsp_end(&w);
	if (!len)
		return send_short_error(
		    c, stage, "ResponseTooLarge",
		    "the helper's error report did not fit in a protocol frame; "
		    "see the helper's log");
	return conn_send(c, buf, len);
}

/* The stage an ERROR refusing a request names. */
static const char *refusal_stage(uint16_t type)
{
	return type == AMSP_JOB ? "job" : type == AMSP_CHECK ? "check" : "prepare";
}

/* A PREPARE while another operation is active, a JOB while frozen: Busy, at once. */
static int refuse_busy(struct helper *h, struct conn *c, uint16_t type)
{
	struct amis_err err;

	err_clear(&err);
	if (type == AMSP_JOB)
		err_set(&err, AMIS_E_BUSY,
		        "filesystems are being frozen for a snapshot (request %s); no job starts "
		        "meanwhile",
		        h->active ? h->active->request_id : "?");
	else
		err_set(&err, AMIS_E_BUSY,
		        "another %s (request %s) is in progress; only one runs at a time",
		        h->active && h->active->check ? "preflight check" : "snapshot operation",
		        h->active ? h->active->request_id : "?");
	send_error(h, c, refusal_stage(type), &err, NULL);
	log_warn("pid %ld: refused %s: %s", (long)c->pid, amsp_msg_name(type), err.msg);
	return -1;
}

/* A PREPARE or JOB while a failed thaw is retried: ThawPending, at once. */
static int refuse_thaw_pending(struct helper *h, struct conn *c, uint16_t type)
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
	send_error(h, c, refusal_stage(type), &err, NULL);
	log_error("pid %ld: refused %s: %s", (long)c->pid, amsp_msg_name(type), err.msg);
	return -1;
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
static int send_status(struct helper *h, struct conn *c, const char *reason, bool list_jobs)
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
		amsp_put_str(&w, AMSP_T_STEP, opstate_name(op->state));
	} else if (h->active) {
		amsp_put_str(&w, AMSP_T_STATE, "busy");
		amsp_put_str(&w, AMSP_T_REQUEST_ID, h->active->request_id);
		amsp_put_str(&w, AMSP_T_NAME, h->active->name);
		/* The live step: the operation's state (opstate.h), or the check. */
		amsp_put_str(&w, AMSP_T_STEP,
		             h->active->check ? "check" : opstate_name(h->active->state));
	} else {
		amsp_put_str(&w, AMSP_T_STATE, "idle");
	}
	if (reason)
		amsp_put_str(&w, AMSP_T_REASON, reason);
	if (list_jobs)
		jobs_put_status(h->jobs, &w);
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
		return send_status(h, c, "nothing is frozen", false);
	/* Root, or the client whose own operation it is. */
	if (c->uid != 0 && !(op->owner && op->owner->uid == c->uid))
		return send_status(
		    h, c, "THAW refused: only root or the operation's own user may ask", false);
	log_warn("pid %ld uid %u asked for a thaw of request %s's filesystems", (long)c->pid,
	         (unsigned)c->uid, op->request_id);
	if (op == h->stuck) {
		h->stuck->thaw_next_try_usec = 0;
		retry_stuck_thaws(h);
		return send_status(h, c, h->stuck ? "thaw retried; still frozen" : "thawed", false);
	}
	h->thaw_requested = true;
	return send_status(h, c, "the call made while frozen is being abandoned; thawing", false);
}

/*
 * Every request goes through the one table of opstate.c: what a request
 * gets depends on the helper's state and on whether it comes from the
 * operation's own client, also from the nested pump while the operation
 * waits for EC2 (STATUS, THAW and an immediate Busy only).
 */
int op_dispatch(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	bool own = c->op != NULL || c->job != NULL;
	enum op_state st = c->op ? c->op->state : helper_state(h);

	/* A job's client: STATUS and THAW as anyone, ABORT stops its job. */
	if (c->job && m->type == AMSP_ABORT) {
		char reason[1025] = "";

		amsp_copy_str(amsp_get(m, AMSP_T_REASON), reason, sizeof(reason));
		jobs_abort(h->jobs, c, reason[0] ? reason : "aborted by the client");
		return -1;
	}
	if (h->resolving && (m->type == AMSP_PREPARE || m->type == AMSP_CHECK)) {
		struct amis_err err;

		err_set(&err, AMIS_E_BUSY,
		        "the helper is settling requests an earlier helper left unfinished "
		        "(%s/%s); try again in a few seconds",
		        h->cfg->state_dir, INFLIGHT_DIR);
		send_error(h, c, refusal_stage(m->type), &err, NULL);
		log_warn("pid %ld: refused %s: %s", (long)c->pid, amsp_msg_name(m->type), err.msg);
		return -1;
	}
	switch (opstate_verdict(st, own, (enum amsp_msg)m->type)) {
	case OPV_STATUS:
		return send_status(h, c, NULL,
		                   amsp_get(m, AMSP_T_LIST_JOBS) &&
		                       amsp_u8(amsp_get(m, AMSP_T_LIST_JOBS)));
	case OPV_THAW:
		return handle_thaw(h, c);
	case OPV_BUSY:
		return refuse_busy(h, c, m->type);
	case OPV_THAW_PENDING:
		return refuse_thaw_pending(h, c, m->type);
	case OPV_JOB:
		return jobs_start(h->jobs, c, m);
	case OPV_HANDLE:
		switch (m->type) {
		case AMSP_PREPARE:
			return handle_prepare(h, c, m);
		case AMSP_CHECK:
			return handle_check(h, c, m);
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

	if (c->job)
		jobs_abort(h->jobs, c, why);
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

static bool fast_tick_cb(const void *ctx)
{
	const struct helper *h = ctx;

	return op_thaw_pending(h) || jobs_active(h->jobs);
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
	    .fast_tick = fast_tick_cb,
	};
}
