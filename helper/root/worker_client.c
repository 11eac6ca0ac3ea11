/*
 * worker_client.c - see worker_client.h: the root process's side of the
 * channel to the EC2 worker (worker/worker_main.c is the other side).
 */
#include "worker_client.h"
#include "check.h"
#include "log.h"
#include "protocol.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define FRAME_MAX (AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD)
/* Beyond the EC2 timeout: the worker may first refresh credentials (IMDS). */
#define WAIT_MARGIN_MS 15000L
#define MAX_TAGS 64

struct worker {
	const struct helper_config *cfg;
	char *config_path;
	pid_t pid;    /* 0: not running */
	int fd;       /* -1: not running */
	pid_t zombie; /* killed, not reaped yet (never waited for while frozen) */
	bool in_call; /* a call is in flight: no other may start (nested pump) */
	uint32_t seq;
	int abort_fd; /* -1: none */
	char instance_id[65];
	char region[65];
	long long ec2_answer_usec; /* mono_usec of the last EC2 answer, from ec2_answer_pid */
	pid_t ec2_answer_pid;
	struct worker_waiter waiter;
	unsigned char buf[FRAME_MAX];
	struct amsp_msgview reply; /* views into buf */
};

struct worker *worker_new(const struct helper_config *cfg, const char *config_path)
{
	struct worker *w = xcalloc(1, sizeof(*w));

	w->cfg = cfg;
	w->config_path = xstrdup(config_path);
	w->fd = -1;
	w->abort_fd = -1;
	return w;
}

void worker_set_abort_fd(struct worker *w, int fd)
{
	w->abort_fd = fd;
}

pid_t worker_pid(const struct worker *w)
{
	return w->pid;
}

void worker_attach_for_test(struct worker *w, int fd, pid_t pid)
{
	w->fd = fd;
	w->pid = pid;
	w->instance_id[0] = w->region[0] = '\0';
}

void worker_set_waiter(struct worker *w, const struct worker_waiter *waiter)
{
	w->waiter = *waiter;
}

static void describe_status(int status, char *buf, size_t sz)
{
	if (WIFEXITED(status))
		snprintf(buf, sz, "exited with status %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, sz, "was killed by signal %d (%s)", WTERMSIG(status),
		         strsignal(WTERMSIG(status)));
	else
		snprintf(buf, sz, "ended");
}

static pid_t waitpid_eintr(pid_t pid, int *status, int flags)
{
	pid_t r;

	do
		r = waitpid(pid, status, flags);
	while (r < 0 && errno == EINTR);
	return r;
}

/* Reaps a worker killed earlier, if it is gone by now. */
static void reap_zombie(struct worker *w)
{
	int status;

	if (w->zombie && waitpid_eintr(w->zombie, &status, WNOHANG) != 0)
		w->zombie = 0;
}

/*
 * Ends the worker: closes the socketpair and SIGKILLs it, waiting at most
 * STOP_WAIT_MS for it to be reapable (this may run while filesystems are
 * frozen: a worker stuck in D state is reaped later).  Fills how it ended
 * into how.
 */
#define STOP_WAIT_MS 20
static void stop_worker(struct worker *w, char *how, size_t howsz)
{
	int status = 0, i;
	pid_t r = 0;

	if (how && howsz)
		snprintf(how, howsz, "was stopped");
	if (w->fd >= 0)
		close(w->fd);
	w->fd = -1;
	if (!w->pid)
		return;
	/* Gone already (it closed the socketpair)?  Then its status tells why. */
	for (i = 0; i < STOP_WAIT_MS && (r = waitpid_eintr(w->pid, &status, WNOHANG)) == 0; i++) {
		if (i == 0)
			kill(w->pid, SIGKILL);
		poll(NULL, 0, 1);
	}
	if (r == w->pid && how)
		describe_status(status, how, howsz);
	else if (r == 0)
		w->zombie = w->pid; /* reaped later */
	if (r == w->pid && WIFEXITED(status) && WEXITSTATUS(status) == 127 && how)
		snprintf(how, howsz, "could not be started (exec of /proc/self/exe failed)");
	w->pid = 0;
}

void worker_free(struct worker *w)
{
	int status;

	if (!w)
		return;
	/* At exit: end of file lets it exit on its own; then SIGKILL. */
	if (w->fd >= 0) {
		close(w->fd);
		w->fd = -1;
		if (w->pid)
			poll(NULL, 0, 50);
	}
	stop_worker(w, NULL, 0);
	if (w->zombie)
		waitpid_eintr(w->zombie, &status, 0);
	free(w->config_path);
	free(w);
}

int worker_start(struct worker *w, struct amis_err *err)
{
	int sv[2];
	pid_t pid;

	if (w->fd >= 0)
		return 0;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0)
		return err_set(err, AMIS_E_WORKER_FAILED, "socketpair: %s", strerror(errno));
	pid = fork();
	if (pid < 0) {
		close(sv[0]);
		close(sv[1]);
		return err_set(err, AMIS_E_WORKER_FAILED, "cannot start the EC2 worker: fork: %s",
		               strerror(errno));
	}
	if (pid == 0) {
		/* Only async-signal-safe calls until exec. */
		if (sv[1] == WORKER_FD) {
			if (fcntl(WORKER_FD, F_SETFD, 0) != 0)
				_exit(127);
		} else if (dup2(sv[1], WORKER_FD) != WORKER_FD) {
			_exit(127);
		}
		execl("/proc/self/exe", "ami-snapshot-helper", "--worker", "-c", w->config_path,
		      (char *)NULL);
		_exit(127);
	}
	close(sv[1]);
	w->fd = sv[0];
	w->pid = pid;
	w->instance_id[0] = w->region[0] = '\0';
	log_info("EC2 worker started (pid %ld, user %s)", (long)pid, w->cfg->worker_user);
	return 0;
}

/* The worker is gone or broken: reap it and say so in err. */
static int worker_lost(struct worker *w, const char *what, struct amis_err *err)
{
	char how[96];
	pid_t pid = w->pid;

	stop_worker(w, how, sizeof(how));
	log_error("EC2 worker (pid %ld) %s: %s", (long)pid, how, what);
	return err_set(err, AMIS_E_WORKER_DIED,
	               "the EC2 worker (pid %ld) %s (%s; see the helper's log); an EC2 call "
	               "in flight may have been made; a new worker is started for the next call",
	               (long)pid, how, what);
}

/*
 * What the worker says is untrusted: an error code outside [A-Za-z0-9._-]
 * becomes WorkerError, control characters in the message become spaces.
 */
static void sanitize_error(struct amis_err *err)
{
	size_t i;

	for (i = 0; err->code[i]; i++)
		if (!isalnum((unsigned char)err->code[i]) && !strchr("._-", err->code[i]))
			break;
	if (err->code[i] || !err->code[0])
		snprintf(err->code, sizeof(err->code), "WorkerError");
	for (i = 0; err->msg[i]; i++)
		if ((unsigned char)err->msg[i] < 0x20 || err->msg[i] == 0x7f)
			err->msg[i] = ' ';
}

/* Tells the worker to drop call seq; its late answer is skipped. */
static void abandon(struct worker *w, uint32_t seq)
{
	unsigned char buf[64];
	struct amsp_writer aw;
	size_t len;

	amsp_begin(&aw, buf, sizeof(buf), AMSP_W_ABANDON);
	amsp_put_u32(&aw, AMSP_T_SEQ, seq);
	len = amsp_end(&aw);
	if (len && send(w->fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_warn("EC2 worker: could not abandon call %u: %s", seq, strerror(errno));
}

static int do_poll(struct worker *w, struct pollfd *fds, nfds_t n, int timeout_ms)
{
	if (w->waiter.poll)
		return w->waiter.poll(w->waiter.arg, fds, n, timeout_ms);
	return poll(fds, n, timeout_ms);
}

/*
 * Sends the request in w->buf[len] (its SEQ is w->seq) and waits for its
 * answer, decoded into w->reply.  Returns 0 for W_OK, -1 with err for
 * W_ERROR and for every way of not getting an answer.
 */
static int call_once(struct worker *w, size_t len, long wait_ms, struct amis_err *err)
{
	int abort_fd = w->abort_fd;
	uint32_t seq = w->seq;
	long long deadline = mono_usec() + wait_ms * 1000LL;
	const char *why;

	if (!len)
		return err_set(err, AMIS_E_REQUEST_TOO_LARGE,
		               "the EC2 request does not fit in one frame to the worker");
	if (send(w->fd, w->buf, len, MSG_NOSIGNAL) != (ssize_t)len)
		return worker_lost(w, "could not send it a request", err);
	for (;;) {
		struct pollfd fds[2] = {{w->fd, POLLIN, 0}, {abort_fd, POLLIN, 0}};
		long long left = deadline - mono_usec();
		const char *code;
		ssize_t n;
		int rc;

		if (left <= 0) {
			worker_lost(w, "it did not answer in time", err);
			return err_set(
			    err, AMIS_E_TIMEOUT,
			    "the EC2 worker did not answer within %ld ms and was killed; "
			    "the request may have been executed",
			    wait_ms);
		}
		rc = do_poll(w, fds, abort_fd >= 0 ? 2 : 1,
		             left > 1000000 ? 1000 : (int)(left / 1000) + 1);
		if (rc < 0 && errno != EINTR)
			return worker_lost(w, "poll failed", err);
		code = w->waiter.abandon ? w->waiter.abandon(w->waiter.arg) : NULL;
		if (code || (abort_fd >= 0 && fds[1].revents)) {
			abandon(w, seq);
			if (code)
				return err_set_code(err, code,
				                    "the EC2 call was abandoned: %s; the request "
				                    "may have been executed",
				                    amis_code_of(code) == AMIS_E_STOP_REQUESTED
				                        ? "the helper was told to stop while frozen"
				                        : "an administrator asked for a thaw");
			return err_set(err, AMIS_E_CLIENT_GONE,
			               "the EC2 call was abandoned because the client went away; "
			               "the request may have been executed");
		}
		if (rc <= 0 || !fds[0].revents)
			continue;
		n = recv(w->fd, w->buf, sizeof(w->buf), MSG_DONTWAIT | MSG_TRUNC);
		if (n < 0 && (errno == EAGAIN || errno == EINTR))
			continue;
		if (n > (ssize_t)sizeof(w->buf))
			return worker_lost(w, "it sent a frame larger than the protocol allows",
			                   err);
		if (n <= 0)
			return worker_lost(w, n == 0 ? "it closed the connection" : "receive error",
			                   err);
		if (amsp_decode(w->buf, (size_t)n, &w->reply, &why) != 0 ||
		    (w->reply.type != AMSP_W_OK && w->reply.type != AMSP_W_ERROR)) {
			char what[128];

			snprintf(what, sizeof(what), "it sent a malformed answer: %s",
			         w->reply.type != AMSP_W_OK && w->reply.type != AMSP_W_ERROR
			             ? "unexpected message type"
			             : why);
			return worker_lost(w, what, err);
		}
		if (amsp_u32(amsp_get(&w->reply, AMSP_T_SEQ)) != seq)
			continue; /* the late answer of an abandoned call */
		if (w->reply.type == AMSP_W_OK)
			return 0;
		{
			char ecode[sizeof(err->code)];

			amsp_copy_str(amsp_get(&w->reply, AMSP_T_ERROR_CODE), ecode, sizeof(ecode));
			err_set_code(err, ecode[0] ? ecode : "WorkerError", "%s", "");
			if (amsp_copy_str(amsp_get(&w->reply, AMSP_T_ERROR_MESSAGE), err->msg,
			                  sizeof(err->msg)) != 0)
				snprintf(err->msg, sizeof(err->msg), "(message too long)");
			sanitize_error(err);
		}
		return -1;
	}
}

/* One call at a time: a nested one (server_poll) is refused by begin(). */
static int call(struct worker *w, size_t len, long wait_ms, struct amis_err *err)
{
	int rc;

	w->in_call = true;
	rc = call_once(w, len, wait_ms, err);
	w->in_call = false;
	/* A failed call may have lost its connection: not warm any more. */
	if (rc != 0)
		w->ec2_answer_usec = 0;
	return rc;
}

/*
 * A worker that died while idle (killed, crashed) is noticed here, before a
 * request is lost on it: reaped, logged, and replaced.
 */
static void reap_if_gone(struct worker *w)
{
	struct pollfd p = {w->fd, 0, 0};
	char how[96];
	pid_t pid = w->pid;

	reap_zombie(w);
	if (w->fd < 0 || poll(&p, 1, 0) <= 0 || !(p.revents & (POLLHUP | POLLERR)))
		return;
	stop_worker(w, how, sizeof(how));
	log_error("EC2 worker (pid %ld) %s while idle; starting a new one", (long)pid, how);
}

bool worker_running(struct worker *w)
{
	reap_if_gone(w);
	return w->fd >= 0;
}

/* Starts a request of type: starts the worker if needed, puts the next SEQ. */
static int begin(struct worker *w, struct amsp_writer *aw, enum amsp_msg type, struct amis_err *err)
{
	if (w->in_call)
		return err_set(err, AMIS_E_WORKER_BUSY, "the EC2 worker is busy with another call");
	reap_if_gone(w);
	if (worker_start(w, err) != 0)
		return -1;
	amsp_begin(aw, w->buf, sizeof(w->buf), type);
	amsp_put_u32(aw, AMSP_T_SEQ, ++w->seq);
	return 0;
}

static uint32_t ms_u32(long ms)
{
	return ms < 1 ? 1 : ms > 86400000L ? 86400000U : (uint32_t)ms;
}

int worker_ready(struct worker *w, struct amis_err *err)
{
	struct amsp_writer aw;

	reap_if_gone(w);
	if (w->fd >= 0 && w->instance_id[0])
		return 0;
	if (begin(w, &aw, AMSP_W_READY, err) != 0)
		return -1;
	if (call(w, amsp_end(&aw), w->cfg->ec2_timeout_ms + WAIT_MARGIN_MS, err) != 0)
		return -1;
	if (amsp_copy_str(amsp_get(&w->reply, AMSP_T_INSTANCE_ID), w->instance_id,
	                  sizeof(w->instance_id)) != 0 ||
	    amsp_copy_str(amsp_get(&w->reply, AMSP_T_REGION), w->region, sizeof(w->region)) != 0 ||
	    !w->instance_id[0] || !w->region[0]) {
		w->instance_id[0] = '\0';
		return worker_lost(w, "its READY answer lacks the instance or region", err);
	}
	return 0;
}

const char *worker_instance_id(const struct worker *w)
{
	return w->instance_id;
}

const char *worker_region(const struct worker *w)
{
	return w->region;
}

/* An optional string of w->reply into buf ("" if absent or too long: informational). */
static void reply_str(struct worker *w, enum amsp_tag tag, char *buf, size_t sz)
{
	channel_opt_str(&w->reply, tag, buf, sz);
}

static size_t reply_product_codes(struct worker *w, struct ec2_product_code *pc)
{
	size_t n = amsp_count(&w->reply, AMSP_T_PRODUCT_CODE), i;

	if (n > EC2_MAX_PRODUCT_CODES)
		n = EC2_MAX_PRODUCT_CODES;
	for (i = 0; i < n; i++) {
		amsp_copy_str(amsp_get_nth(&w->reply, AMSP_T_PRODUCT_CODE, i), pc[i].code,
		              sizeof(pc[i].code));
		snprintf(pc[i].type, sizeof(pc[i].type), "unknown");
		if (amsp_get_nth(&w->reply, AMSP_T_PRODUCT_CODE_TYPE, i))
			amsp_copy_str(amsp_get_nth(&w->reply, AMSP_T_PRODUCT_CODE_TYPE, i),
			              pc[i].type, sizeof(pc[i].type));
	}
	return n;
}

/* A W_DESCRIBE_INSTANCE's answer into out. */
static int reply_instance(struct worker *w, struct ec2_instance_info *out, struct amis_err *err)
{
	size_t n, i;

	memset(out, 0, sizeof(*out));
	snprintf(out->instance_id, sizeof(out->instance_id), "%.31s", w->instance_id);
	n = amsp_count(&w->reply, AMSP_T_VOLUME_ID);
	if (n != amsp_count(&w->reply, AMSP_T_DEVICE_NAME) || n > EC2_MAX_INSTANCE_VOLUMES)
		return worker_lost(w, "its DescribeInstances answer is inconsistent", err);
	if (amsp_get(&w->reply, AMSP_T_ROOT_DEVICE) &&
	    amsp_copy_str(amsp_get(&w->reply, AMSP_T_ROOT_DEVICE), out->root_device_name,
	                  sizeof(out->root_device_name)) != 0)
		return worker_lost(w, "its root device name is too long", err);
	for (i = 0; i < n; i++) {
		struct ec2_block_device *bd = &out->volumes[i];

		if (amsp_copy_str(amsp_get_nth(&w->reply, AMSP_T_VOLUME_ID, i), bd->volume_id,
		                  sizeof(bd->volume_id)) != 0 ||
		    amsp_copy_str(amsp_get_nth(&w->reply, AMSP_T_DEVICE_NAME, i), bd->device_name,
		                  sizeof(bd->device_name)) != 0)
			return worker_lost(w, "a volume id or device name is too long", err);
		bd->delete_on_termination =
		    amsp_count(&w->reply, AMSP_T_DELETE_ON_TERM) == n &&
		    amsp_u8(amsp_get_nth(&w->reply, AMSP_T_DELETE_ON_TERM, i)) != 0;
	}
	out->nvolumes = n;
	reply_str(w, AMSP_T_ARCHITECTURE, out->architecture, sizeof(out->architecture));
	reply_str(w, AMSP_T_VIRT_TYPE, out->virtualization_type, sizeof(out->virtualization_type));
	reply_str(w, AMSP_T_BOOT_MODE, out->boot_mode, sizeof(out->boot_mode));
	reply_str(w, AMSP_T_IMAGE_ID, out->image_id, sizeof(out->image_id));
	reply_str(w, AMSP_T_PLATFORM, out->platform_details, sizeof(out->platform_details));
	reply_str(w, AMSP_T_USAGE_OPERATION, out->usage_operation, sizeof(out->usage_operation));
	out->ena_support =
	    amsp_get(&w->reply, AMSP_T_ENA) && amsp_u8(amsp_get(&w->reply, AMSP_T_ENA));
	out->nproduct_codes = reply_product_codes(w, out->product_codes);
	return 0;
}

static void put_create_request(struct amsp_writer *aw, const struct ec2_create_snapshots_req *r);

static void ec2_answered(struct worker *w)
{
	w->ec2_answer_usec = mono_usec();
	w->ec2_answer_pid = w->pid;
}

long worker_ec2_idle_ms(const struct worker *w)
{
	if (!w->ec2_answer_usec || w->fd < 0 || w->ec2_answer_pid != w->pid)
		return -1;
	return (long)((mono_usec() - w->ec2_answer_usec) / 1000);
}

int worker_describe_instance_dry(struct worker *w, long timeout_ms,
                                 const struct ec2_create_snapshots_req *dry,
                                 struct ec2_instance_info *out, struct amis_err *dry_err,
                                 struct amis_err *err)
{
	struct amsp_writer aw;

	err_clear(dry_err);
	if (worker_ready(w, err) != 0 || begin(w, &aw, AMSP_W_DESCRIBE_INSTANCE, err) != 0)
		return -1;
	amsp_put_u32(&aw, AMSP_T_TIMEOUT_MS, ms_u32(timeout_ms));
	amsp_put_str(&aw, AMSP_T_INSTANCE_ID, w->instance_id);
	if (dry) {
		amsp_put_u8(&aw, AMSP_T_DRY_RUN, 1);
		put_create_request(&aw, dry);
	}
	if (call(w, amsp_end(&aw), 2 * (timeout_ms + WAIT_MARGIN_MS), err) != 0)
		return -1;
	if (reply_instance(w, out, err) != 0)
		return -1;
	ec2_answered(w);
	if (dry && amsp_get(&w->reply, AMSP_T_ERROR_CODE)) {
		amsp_copy_str(amsp_get(&w->reply, AMSP_T_ERROR_CODE), dry_err->code,
		              sizeof(dry_err->code));
		if (!dry_err->code[0])
			snprintf(dry_err->code, sizeof(dry_err->code), "WorkerError");
		amsp_copy_str(amsp_get(&w->reply, AMSP_T_ERROR_MESSAGE), dry_err->msg,
		              sizeof(dry_err->msg));
	}
	return 0;
}

int worker_describe_instance(struct worker *w, long timeout_ms, struct ec2_instance_info *out,
                             struct amis_err *err)
{
	struct amis_err none;

	return worker_describe_instance_dry(w, timeout_ms, NULL, out, &none, err);
}

/* The snapshots of w->reply into out (replacing what it held). */
static int reply_snapshots(struct worker *w, struct ec2_snapshot_set *out, struct amis_err *err)
{
	size_t n = amsp_count(&w->reply, AMSP_T_SNAPSHOT_ID), i;

	ec2_snapshot_set_free(out);
	memset(out, 0, sizeof(*out));
	if (n != amsp_count(&w->reply, AMSP_T_SNAPSHOT_VOLUME) ||
	    n != amsp_count(&w->reply, AMSP_T_SNAPSHOT_STATE))
		return worker_lost(w, "its snapshot list is inconsistent", err);
	if (!n)
		return 0;
	out->items = xcalloc(n, sizeof(*out->items));
	for (i = 0; i < n; i++) {
		struct ec2_snapshot_info *s = &out->items[i];

		if (amsp_copy_str(amsp_get_nth(&w->reply, AMSP_T_SNAPSHOT_ID, i), s->snapshot_id,
		                  sizeof(s->snapshot_id)) != 0 ||
		    amsp_copy_str(amsp_get_nth(&w->reply, AMSP_T_SNAPSHOT_VOLUME, i), s->volume_id,
		                  sizeof(s->volume_id)) != 0 ||
		    amsp_copy_str(amsp_get_nth(&w->reply, AMSP_T_SNAPSHOT_STATE, i), s->state,
		                  sizeof(s->state)) != 0) {
			free(out->items);
			out->items = NULL;
			return worker_lost(w, "a snapshot id is too long", err);
		}
		s->volume_size_gib = -1;
	}
	out->n = n;
	return 0;
}

static void put_tags(struct amsp_writer *aw, const struct ec2_tag *tags, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		amsp_put_str(aw, AMSP_T_TAG_KEY, tags[i].key);
		amsp_put_str(aw, AMSP_T_TAG_VALUE, tags[i].value ? tags[i].value : "");
	}
}

/*
 * Starts a request that creates something (CreateSnapshots, CreateImage),
 * maybe made while frozen (hold_log): then never start a worker (fork,
 * exec, IMDS...): a worker that died since the DryRun just before fails the
 * call at once.
 */
static int begin_creating(struct worker *w, struct amsp_writer *aw, enum amsp_msg type,
                          long timeout_ms, bool dry_run, bool hold_log, const char *instance_id,
                          struct amis_err *err)
{
	if (hold_log && !worker_running(w))
		return err_set(
		    err, AMIS_E_WORKER_DIED,
		    "the EC2 worker died just before the freeze; nothing was sent to EC2");
	if (begin(w, aw, type, err) != 0)
		return -1;
	amsp_put_u32(aw, AMSP_T_TIMEOUT_MS, ms_u32(timeout_ms));
	amsp_put_u8(aw, AMSP_T_DRY_RUN, dry_run);
	amsp_put_u8(aw, AMSP_T_HOLD_LOG, hold_log);
	amsp_put_str(aw, AMSP_T_INSTANCE_ID, instance_id);
	return 0;
}

int worker_create_snapshots(struct worker *w, const struct ec2_create_snapshots_req *r,
                            long timeout_ms, long wait_ms, bool hold_log,
                            struct ec2_snapshot_set *out, struct amis_err *err)
{
	struct amsp_writer aw;

	if (begin_creating(w, &aw, AMSP_W_CREATE_SNAPSHOTS, timeout_ms, r->dry_run, hold_log,
	                   r->instance_id, err) != 0)
		return -1;
	put_create_request(&aw, r);
	if (call(w, amsp_end(&aw), wait_ms, err) != 0)
		return -1;
	ec2_answered(w);
	return reply_snapshots(w, out, err);
}

/* What a CreateSnapshots request says, but its instance, DryRun and timeout. */
static void put_create_request(struct amsp_writer *aw, const struct ec2_create_snapshots_req *r)
{
	size_t i;

	if (r->description)
		amsp_put_str(aw, AMSP_T_DESCRIPTION, r->description);
	amsp_put_u8(aw, AMSP_T_EXCLUDE_BOOT, r->exclude_boot_volume);
	for (i = 0; i < r->n_exclude; i++)
		amsp_put_str(aw, AMSP_T_EXCLUDE_VOLUME, r->exclude_volume_ids[i]);
	put_tags(aw, r->tags, r->ntags);
}

int worker_create_tags(struct worker *w, const char *const *ids, size_t nids,
                       const struct ec2_tag *tags, size_t ntags, long timeout_ms,
                       struct amis_err *err)
{
	return worker_create_tags_items(w, ids, nids, tags, ntags, NULL, 0, timeout_ms, err);
}

int worker_create_tags_items(struct worker *w, const char *const *ids, size_t nids,
                             const struct ec2_tag *tags, size_t ntags,
                             const struct worker_item_tag *items, size_t nitems, long timeout_ms,
                             struct amis_err *err)
{
	struct amsp_writer aw;
	size_t i;

	if (begin(w, &aw, AMSP_W_CREATE_TAGS, err) != 0)
		return -1;
	amsp_put_u32(&aw, AMSP_T_TIMEOUT_MS, ms_u32(timeout_ms));
	for (i = 0; i < nids; i++)
		amsp_put_str(&aw, AMSP_T_RESOURCE_ID, ids[i]);
	put_tags(&aw, tags, ntags);
	for (i = 0; i < nitems; i++) {
		amsp_put_u32(&aw, AMSP_T_ITEM_RESOURCE, (uint32_t)items[i].resource);
		amsp_put_str(&aw, AMSP_T_ITEM_TAG_KEY, items[i].tag.key);
		amsp_put_str(&aw, AMSP_T_ITEM_TAG_VALUE,
		             items[i].tag.value ? items[i].tag.value : "");
	}
	if (call(w, amsp_end(&aw), timeout_ms + WAIT_MARGIN_MS, err) != 0)
		return -1;
	ec2_answered(w);
	return 0;
}

int worker_find_snapshots_tags(struct worker *w, const char *const *keys, const char *const *values,
                               size_t n, long timeout_ms, struct ec2_snapshot_set *out,
                               struct amis_err *err)
{
	struct amsp_writer aw;
	size_t i;

	if (begin(w, &aw, AMSP_W_FIND_SNAPSHOTS, err) != 0)
		return -1;
	amsp_put_u32(&aw, AMSP_T_TIMEOUT_MS, ms_u32(timeout_ms));
	for (i = 0; i < n; i++) {
		amsp_put_str(&aw, AMSP_T_TAG_KEY, keys[i]);
		amsp_put_str(&aw, AMSP_T_TAG_VALUE, values[i]);
	}
	if (call(w, amsp_end(&aw), timeout_ms + WAIT_MARGIN_MS, err) != 0)
		return -1;
	return reply_snapshots(w, out, err);
}

int worker_find_snapshots(struct worker *w, const char *key, const char *value, long timeout_ms,
                          struct ec2_snapshot_set *out, struct amis_err *err)
{
	return worker_find_snapshots_tags(w, &key, &value, 1, timeout_ms, out, err);
}

/* ---- The AMI methods. ---- */

/* The image id of w->reply into image_id[32] ("" if none); a malformed one kills the worker. */
static int reply_image_id(struct worker *w, char *image_id, bool required, struct amis_err *err)
{
	image_id[0] = '\0';
	if (amsp_get(&w->reply, AMSP_T_IMAGE_ID) &&
	    (amsp_copy_str(amsp_get(&w->reply, AMSP_T_IMAGE_ID), image_id, 32) != 0 ||
	     !aws_resource_id_valid(image_id, "ami"))) {
		image_id[0] = '\0';
		return worker_lost(w, "it sent a malformed image id", err);
	}
	if (required && !image_id[0])
		return worker_lost(w, "its answer lacks the new image's id", err);
	return 0;
}

int worker_describe_image(struct worker *w, const struct ec2_image_query *q, long timeout_ms,
                          struct ec2_image_info *out, struct amis_err *err)
{
	struct amsp_writer aw;

	memset(out, 0, sizeof(*out));
	if (begin(w, &aw, AMSP_W_DESCRIBE_IMAGE, err) != 0)
		return -1;
	amsp_put_u32(&aw, AMSP_T_TIMEOUT_MS, ms_u32(timeout_ms));
	amsp_put_str_if(&aw, AMSP_T_IMAGE_ID, q->image_id);
	if (q->tag_key && q->tag_value) {
		amsp_put_str(&aw, AMSP_T_TAG_KEY, q->tag_key);
		amsp_put_str(&aw, AMSP_T_TAG_VALUE, q->tag_value);
	}
	amsp_put_str_if(&aw, AMSP_T_NAME, q->name);
	if (call(w, amsp_end(&aw), 2 * (timeout_ms + WAIT_MARGIN_MS), err) != 0)
		return -1;
	if (reply_image_id(w, out->image_id, false, err) != 0)
		return -1;
	reply_str(w, AMSP_T_IMAGE_STATE, out->state, sizeof(out->state));
	reply_str(w, AMSP_T_NAME, out->name, sizeof(out->name));
	reply_str(w, AMSP_T_PLATFORM, out->platform_details, sizeof(out->platform_details));
	reply_str(w, AMSP_T_USAGE_OPERATION, out->usage_operation, sizeof(out->usage_operation));
	out->nproduct_codes = reply_product_codes(w, out->product_codes);
	if (channel_get_image(&w->reply, out) != 0)
		return worker_lost(w, "its DescribeImages answer is inconsistent", err);
	return 0;
}

int worker_describe_volumes(struct worker *w, const char *const *ids, size_t n, long timeout_ms,
                            struct ec2_volume_set *out, struct amis_err *err)
{
	struct amsp_writer aw;
	size_t m, i;

	memset(out, 0, sizeof(*out));
	if (begin(w, &aw, AMSP_W_DESCRIBE_VOLUMES, err) != 0)
		return -1;
	amsp_put_u32(&aw, AMSP_T_TIMEOUT_MS, ms_u32(timeout_ms));
	for (i = 0; i < n; i++)
		amsp_put_str(&aw, AMSP_T_VOLUME_ID, ids[i]);
	if (call(w, amsp_end(&aw), 2 * (timeout_ms + WAIT_MARGIN_MS), err) != 0)
		return -1;
	m = amsp_count(&w->reply, AMSP_T_VOLUME_ID);
	if (m > EC2_MAX_INSTANCE_VOLUMES || amsp_count(&w->reply, AMSP_T_VOLUME_TYPE) != m ||
	    amsp_count(&w->reply, AMSP_T_VOLUME_SIZE) != m ||
	    amsp_count(&w->reply, AMSP_T_IOPS) != m ||
	    amsp_count(&w->reply, AMSP_T_THROUGHPUT) != m)
		return worker_lost(w, "its DescribeVolumes answer is inconsistent", err);
	for (i = 0; i < m; i++) {
		struct ec2_volume_info *v = &out->items[i];

		if (amsp_copy_str(amsp_get_nth(&w->reply, AMSP_T_VOLUME_ID, i), v->volume_id,
		                  sizeof(v->volume_id)) != 0 ||
		    amsp_copy_str(amsp_get_nth(&w->reply, AMSP_T_VOLUME_TYPE, i), v->volume_type,
		                  sizeof(v->volume_type)) != 0)
			return worker_lost(w, "a volume id or type is too long", err);
		v->size_gib = (long)amsp_u32(amsp_get_nth(&w->reply, AMSP_T_VOLUME_SIZE, i));
		v->iops = (long)amsp_u32(amsp_get_nth(&w->reply, AMSP_T_IOPS, i));
		v->throughput = (long)amsp_u32(amsp_get_nth(&w->reply, AMSP_T_THROUGHPUT, i));
	}
	out->n = m;
	return 0;
}

int worker_register_image(struct worker *w, const struct ec2_register_image_req *r, long timeout_ms,
                          char *image_id, struct amis_err *err)
{
	const struct ec2_image_info *in = r->info;
	struct amsp_writer aw;

	image_id[0] = '\0';
	if (begin(w, &aw, AMSP_W_REGISTER_IMAGE, err) != 0)
		return -1;
	amsp_put_u32(&aw, AMSP_T_TIMEOUT_MS, ms_u32(timeout_ms));
	amsp_put_u8(&aw, AMSP_T_DRY_RUN, r->dry_run);
	amsp_put_str(&aw, AMSP_T_NAME, in->name);
	amsp_put_str_if(&aw, AMSP_T_DESCRIPTION, r->description);
	put_tags(&aw, r->tags, r->ntags);
	channel_put_image(&aw, in);
	if (call(w, amsp_end(&aw), timeout_ms + WAIT_MARGIN_MS, err) != 0)
		return -1;
	return reply_image_id(w, image_id, !r->dry_run, err);
}

int worker_create_image(struct worker *w, const struct ec2_create_image_req *r, long timeout_ms,
                        long wait_ms, bool hold_log, char *image_id, struct amis_err *err)
{
	struct amsp_writer aw;

	image_id[0] = '\0';
	if (begin_creating(w, &aw, AMSP_W_CREATE_IMAGE, timeout_ms, r->dry_run, hold_log,
	                   r->instance_id, err) != 0)
		return -1;
	amsp_put_str(&aw, AMSP_T_NAME, r->name);
	amsp_put_str_if(&aw, AMSP_T_DESCRIPTION, r->description);
	put_tags(&aw, r->tags, r->ntags);
	if (call(w, amsp_end(&aw), wait_ms, err) != 0)
		return -1;
	return reply_image_id(w, image_id, !r->dry_run, err);
}

int worker_deregister_image(struct worker *w, const char *image_id, long timeout_ms,
                            struct amis_err *err)
{
	struct amsp_writer aw;

	if (begin(w, &aw, AMSP_W_DEREGISTER_IMAGE, err) != 0)
		return -1;
	amsp_put_u32(&aw, AMSP_T_TIMEOUT_MS, ms_u32(timeout_ms));
	amsp_put_str(&aw, AMSP_T_IMAGE_ID, image_id);
	return call(w, amsp_end(&aw), timeout_ms + WAIT_MARGIN_MS, err);
}

/* A row's text from the worker: bounded, control characters as spaces. */
static void reply_row_str(struct worker *w, enum amsp_tag tag, size_t i, char *buf, size_t sz)
{
	const struct amsp_field *f = amsp_get_nth(&w->reply, tag, i);
	size_t k;

	buf[0] = '\0';
	if (f)
		snprintf(buf, sz, "%.*s", (int)f->len, (const char *)f->value);
	for (k = 0; buf[k]; k++)
		if ((unsigned char)buf[k] < 0x20 || buf[k] == 0x7f)
			buf[k] = ' ';
}

int worker_check(struct worker *w, const char *const *actions, size_t n, const char *volume_id,
                 long timeout_ms, struct check_rows *rows, struct amis_err *err)
{
	struct amsp_writer aw;
	size_t m, i;

	if (begin(w, &aw, AMSP_W_CHECK, err) != 0)
		return -1;
	amsp_put_u32(&aw, AMSP_T_TIMEOUT_MS, ms_u32(timeout_ms));
	for (i = 0; i < n; i++)
		amsp_put_str(&aw, AMSP_T_CHECK_ACTION, actions[i]);
	if (volume_id && volume_id[0])
		amsp_put_str(&aw, AMSP_T_VOLUME_ID, volume_id);
	/* IMDS, the credentials, then one EC2 call per action, each within timeout_ms. */
	if (call(w, amsp_end(&aw), (long)(n + 3) * (timeout_ms + WAIT_MARGIN_MS), err) != 0)
		return -1;
	m = amsp_count(&w->reply, AMSP_T_CHECK_NAME);
	if (amsp_count(&w->reply, AMSP_T_CHECK_RESULT) != m ||
	    amsp_count(&w->reply, AMSP_T_CHECK_DETAIL) != m ||
	    amsp_count(&w->reply, AMSP_T_CHECK_HINT) != m)
		return worker_lost(w, "its check rows do not pair up", err);
	for (i = 0; i < m && rows->n < AMSP_MAX_CHECKS; i++) {
		struct check_row *r = &rows->row[rows->n];

		reply_row_str(w, AMSP_T_CHECK_NAME, i, r->name, sizeof(r->name));
		reply_row_str(w, AMSP_T_CHECK_RESULT, i, r->result, sizeof(r->result));
		reply_row_str(w, AMSP_T_CHECK_DETAIL, i, r->detail, sizeof(r->detail));
		reply_row_str(w, AMSP_T_CHECK_HINT, i, r->hint, sizeof(r->hint));
		if (strcmp(r->result, "ok") && strcmp(r->result, "failed") &&
		    strcmp(r->result, "skipped"))
			return worker_lost(w, "a check row's result is not ok, failed or skipped",
			                   err);
		rows->n++;
	}
	return 0;
}
