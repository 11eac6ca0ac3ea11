/*
 * freeze_cycle.c - SNAPSHOT (see op_internal.h): the freeze cycle and its
 * retries.  Between freeze and thaw the only work is one CreateSnapshots
 * request on an already-warm connection: no logging (log_hold), no disk
 * writes, no retries; a retry thaws first and runs a whole new cycle.
 */
#include "op_internal.h"
#include "inflight.h"

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
	long timeout_ms, idle_ms;
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
	 * trip and not DNS + TCP + TLS.  Not when EC2 answered the worker less
	 * than rewarm_after ago (a short checkpoint): the connection is warm, the
	 * round trip would buy nothing.  The default, 10 s, is well under
	 * libcurl's 118 s for reusing an idle connection and the idle timeouts
	 * of HTTP servers and load balancers (60 s and more).  A failed call
	 * since makes it cold (worker_client.c).
	 */
	idle_ms = worker_ec2_idle_ms(h->worker);
	if (h->cfg->preflight_dry_run && idle_ms >= 0 && idle_ms < h->cfg->rewarm_after_ms)
		log_debug("request %s: EC2 answered %ld ms ago: the connection is warm, no DryRun "
		          "before the freeze",
		          op->request_id, idle_ms);
	else if (h->cfg->preflight_dry_run &&
	         (op->image == IMAGE_CREATE
	              ? image_dry_run(h, op, (struct ec2_tag *)r->tags, r->ntags, err) != 0
	              : dry_run_create(h, r, err) != 0)) {
		err_prefix(err, "the DryRun made just before freezing failed; nothing was frozen");
		return CYCLE_NOT_FROZEN;
	}
	timeout_ms = op->freeze ? h->cfg->freeze_timeout_ms : h->cfg->ec2_timeout_ms;
	if (op->freeze) {
		if (marker_write(h->sys, h->cfg->state_dir, &op->plan, op->request_id, err) != 0)
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
	if (op->image == IMAGE_CREATE)
		/* create: CreateImage, frozen until every snapshot of the image exists. */
		rc = image_create_while_frozen(h, op, r->tags, r->ntags, timeout_ms,
		                               t_call0 + timeout_ms * 1000LL, call_err);
	else
		rc = worker_create_snapshots(h->worker, r, timeout_ms,
		                             timeout_ms + WORKER_WAIT_SLACK_MS, op->freeze,
		                             &op->snaps, call_err);
	t_call1 = mono_usec();
	if (op->freeze)
		thaw_rc = freeze_plan_thaw(&op->plan, &thaw_err);
	log_release();
	*call_usec = t_call1 - t_call0;

	if (op->freeze && thaw_rc == 0) {
		broken = plan_thawed(h, op);
		log_info("request %s: writes frozen for %.3f ms (%s %.3f ms)", op->request_id,
		         freeze_plan_window_usec(&op->plan) / 1000.0,
		         op->image == IMAGE_CREATE ? "CreateImage and its snapshots"
		                                   : "CreateSnapshots",
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

/*
 * Whether op->snaps is one pending (or completed) snapshot of each volume
 * of op: the database's, or every volume of the instance for an image.
 */
static int check_snapshot_set(const struct operation *op, struct amis_err *err)
{
	size_t i, j, seen, nwant;
	char *const *want = op_want_ids(op, &nwant);
	const char *call = op->image == IMAGE_CREATE ? "CreateImage" : "CreateSnapshots";

	if (op->snaps.n != nwant)
		return err_set(err, AMIS_E_UNEXPECTED_SNAPSHOT_SET,
		               "%s made %zu snapshots for %zu volumes", call, op->snaps.n, nwant);
	for (i = 0; i < op->snaps.n; i++) {
		const struct ec2_snapshot_info *s = &op->snaps.items[i];

		if (!in_list(want, nwant, s->volume_id))
			return err_set(err, AMIS_E_UNEXPECTED_SNAPSHOT_SET,
			               "%s made a snapshot of volume %s, which %s", call,
			               s->volume_id,
			               op->image ? "is not attached to the instance"
			                         : "holds no database files");
	}
	for (i = 0; i < nwant; i++) {
		for (j = 0, seen = 0; j < op->snaps.n; j++)
			if (!strcmp(op->snaps.items[j].volume_id, want[i]))
				seen++;
		if (seen != 1)
			return err_set(err, AMIS_E_UNEXPECTED_SNAPSHOT_SET,
			               "%s made %zu snapshots of volume %s", call, seen, want[i]);
	}
	for (i = 0; i < op->snaps.n; i++) {
		const struct ec2_snapshot_info *s = &op->snaps.items[i];

		for (j = 0; j < i; j++)
			if (!strcmp(op->snaps.items[j].snapshot_id, s->snapshot_id))
				return err_set(err, AMIS_E_UNEXPECTED_SNAPSHOT_SET,
				               "%s returned snapshot %s twice", call,
				               s->snapshot_id);
		if (strcmp(s->state, "pending") && strcmp(s->state, "completed"))
			return err_set(err, AMIS_E_SNAPSHOT_FAILED,
			               "snapshot %s of volume %s is in state %s", s->snapshot_id,
			               s->volume_id, s->state);
	}
	return 0;
}

int handle_snapshot(struct helper *h, struct conn *c, const struct amsp_msgview *m)
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
	 * Recorded before any call that can make snapshots: if this helper dies
	 * before they carry their final state, the next one tags them failed.
	 */
	if (inflight_add(h->cfg->state_dir, op->request_id, &err) != 0) {
		err_prefix(&err, "nothing was frozen");
		sb_init(&attempts);
		goto fail;
	}
	op->inflight = true;

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
	if (op->image_id[0])
		amsp_put_str(&w, AMSP_T_IMAGE_ID, op->image_id);
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
	/* create: a half-made image is deregistered; what it made is looked for by tag. */
	if (op->image == IMAGE_CREATE && !freeze_plan_any_frozen(&op->plan)) {
		if (op->image_id[0] || answer_lost(&err))
			lost = true;
		image_cleanup_failed(h, op, &err);
	}
	if (lost) {
		op->answer_lost = true;
		find_lost_snapshots(h, op, &err);
	}
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
