/*
 * job.c - see job.h.
 *
 * The children are watched from the server loop's tick (every 100 ms while
 * any runs): their pipes are non-blocking and drained, and each is reaped
 * by its own pid (waitpid(pid, WNOHANG): the EC2 worker and the watchdog
 * are reaped by theirs elsewhere).  While a snapshot operation waits for
 * EC2 the tick does not run; a child that fills its pipe meanwhile waits.
 */
#include "job.h"
#include "log.h"

#include <errno.h>
#include <fnmatch.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#define MAX_CHILDREN 12
/*
 * Lifecycle jobs (list, wait, prune, copy, lock...: they only talk to EC2)
 * at once, clients' and automatic ones together; [drill] max_jobs counts
 * drills only, so a wait from SQL never keeps a drill from running.
 */
#define MAX_LIFECYCLE_JOBS 6
/* The steps of an automatic copy and lock after a backup (job.h). */
#define MAX_AUTO_STEPS (2 + 2 * CONFIG_MAX_LIST)
#define ERR_TAIL 2048
/* A cleanup that found a drill running (exit 3) is tried again after this long. */
#define CLEANUP_RETRY_USEC (30 * 1000000LL)

enum child_role { ROLE_JOB, ROLE_CLEANUP, ROLE_AUTO };

struct child {
	enum child_role role;
	pid_t pid;
	int out_fd, err_fd;
	struct conn *owner; /* NULL: nobody waits (cleanup, or the client went away) */
	char request_id[AMSP_MAX_ID_LEN + 1];
	char kind[17];
	struct strbuf out;
	bool truncated;
	char err_tail[ERR_TAIL]; /* the last bytes of stderr */
	size_t err_len;
	char line[1024]; /* stderr's current line, for the log */
	size_t line_len;
	long long started_us, term_sent_us;
	bool term_sent, kill_sent;
	/* ROLE_AUTO: the steps still to run, each an argv (job_argv's), in order. */
	char **steps[MAX_AUTO_STEPS];
	size_t nsteps, step;
	char step_kind[MAX_AUTO_STEPS][17];
};

struct jobs {
	const struct helper_config *cfg;
	const char *config_path;
	char command[PATH_MAX + 16];
	struct child *kids[MAX_CHILDREN];
	bool cleanup_wanted;
	long long cleanup_next_us;
	bool stopping; /* jobs_shutdown(): no next automatic step */
};

static void find_command(struct jobs *js)
{
	char self[PATH_MAX];
	ssize_t n;
	char *slash;

	if (js->cfg->drill_command) {
		snprintf(js->command, sizeof(js->command), "%s", js->cfg->drill_command);
		return;
	}
	/* Beside the helper's own binary: installed together (make install, the package). */
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n <= 0) {
		snprintf(js->command, sizeof(js->command), "/usr/sbin/ami-snapshot");
		return;
	}
	self[n] = '\0';
	slash = strrchr(self, '/');
	if (slash)
		*slash = '\0';
	snprintf(js->command, sizeof(js->command), "%s/ami-snapshot", self);
}

struct jobs *jobs_new(const struct helper_config *cfg, const char *config_path)
{
	struct jobs *js = xcalloc(1, sizeof(*js));

	js->cfg = cfg;
	js->config_path = config_path;
	find_command(js);
	return js;
}

void jobs_cleanup_soon(struct jobs *js)
{
	js->cleanup_wanted = true;
	js->cleanup_next_us = 0;
}

static void child_free(struct child *k)
{
	size_t i;

	for (i = 0; i < k->nsteps; i++)
		if (k->steps[i]) {
			job_argv_free(k->steps[i]);
			free(k->steps[i]);
		}
	if (k->out_fd >= 0)
		close(k->out_fd);
	if (k->err_fd >= 0)
		close(k->err_fd);
	sb_free(&k->out);
	free(k);
}

void jobs_free(struct jobs *js)
{
	size_t i;

	if (!js)
		return;
	for (i = 0; i < MAX_CHILDREN; i++)
		if (js->kids[i])
			child_free(js->kids[i]);
	free(js);
}

size_t jobs_running(const struct jobs *js)
{
	size_t i, n = 0;

	for (i = 0; i < MAX_CHILDREN; i++)
		if (js->kids[i] && js->kids[i]->role != ROLE_CLEANUP)
			n++;
	return n;
}

void jobs_put_status(const struct jobs *js, struct amsp_writer *w)
{
	long long now = mono_usec();
	size_t i, n = 0;

	for (i = 0; i < MAX_CHILDREN && n < AMSP_MAX_STATUS_JOBS; i++) {
		const struct child *k = js->kids[i];

		if (!k)
			continue;
		amsp_put_str(w, AMSP_T_JOB_ID, k->request_id[0] ? k->request_id : "-");
		amsp_put_str(w, AMSP_T_JOB_KIND, k->kind); /* an automatic job's: its step's */
		amsp_put_u32(w, AMSP_T_JOB_PID, (uint32_t)k->pid);
		amsp_put_u64(w, AMSP_T_JOB_USEC, (uint64_t)(now - k->started_us));
		n++;
	}
}

/* Drills (verify jobs): what [drill] max_jobs and the cleanup count. */
static size_t drills_running(const struct jobs *js)
{
	size_t i, n = 0;

	for (i = 0; i < MAX_CHILDREN; i++)
		if (js->kids[i] && js->kids[i]->role == ROLE_JOB &&
		    !job_kind_is_lifecycle(js->kids[i]->kind))
			n++;
	return n;
}

static size_t lifecycle_running(const struct jobs *js)
{
	return jobs_running(js) - drills_running(js);
}

static bool cleanup_running(const struct jobs *js)
{
	size_t i;

	for (i = 0; i < MAX_CHILDREN; i++)
		if (js->kids[i] && js->kids[i]->role == ROLE_CLEANUP)
			return true;
	return false;
}

bool jobs_active(const struct jobs *js)
{
	size_t i;

	for (i = 0; i < MAX_CHILDREN; i++)
		if (js->kids[i])
			return true;
	return js->cleanup_wanted;
}

/* Forks and execs argv with its stdout and stderr on pipes; -1 with err. */
static int spawn(struct child *k, char **argv, struct amis_err *err)
{
	static char *const envp[] = {"PATH=/usr/sbin:/usr/bin:/sbin:/bin", "LC_ALL=C", NULL};
	int out[2], errp[2];
	pid_t pid;

	if (pipe2(out, O_CLOEXEC) != 0)
		return err_set(err, AMIS_E_JOB_START_FAILED, "pipe: %s", strerror(errno));
	if (pipe2(errp, O_CLOEXEC) != 0) {
		close(out[0]);
		close(out[1]);
		return err_set(err, AMIS_E_JOB_START_FAILED, "pipe: %s", strerror(errno));
	}
	pid = fork();
	if (pid < 0) {
		close(out[0]);
		close(out[1]);
		close(errp[0]);
		close(errp[1]);
		return err_set(err, AMIS_E_JOB_START_FAILED, "fork: %s", strerror(errno));
	}
	if (pid == 0) {
		sigset_t none;
		int devnull = open("/dev/null", O_RDONLY);

		/*
		 * A session of its own (no terminal's signals), and SIGTERM (the
		 * drill's own cleanup) if the helper dies without ending it.
		 */
		setsid();
		prctl(PR_SET_PDEATHSIG, SIGTERM);
		/*
		 * Not the helper's OOM protection (the unit's OOMScoreAdjust=-1000,
		 * which is for a helper holding filesystems frozen): under memory
		 * pressure a drill and its server go before production.
		 */
		{
			int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);

			if (fd >= 0) {
				if (write(fd, "500", 3) != 3) {
					/* Best effort: a kernel without it changes nothing else. */
				}
				close(fd);
			}
		}
		signal(SIGPIPE, SIG_DFL);
		signal(SIGHUP, SIG_DFL);
		signal(SIGTERM, SIG_DFL);
		signal(SIGINT, SIG_DFL);
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		if (devnull < 0 || dup2(devnull, 0) < 0 || dup2(out[1], 1) < 0 ||
		    dup2(errp[1], 2) < 0)
			_exit(127);
		execve(argv[0], argv, envp);
		dprintf(2, "cannot execute %s: %s\n", argv[0], strerror(errno));
		_exit(127);
	}
	close(out[1]);
	close(errp[1]);
	fcntl(out[0], F_SETFL, O_NONBLOCK);
	fcntl(errp[0], F_SETFL, O_NONBLOCK);
	k->pid = pid;
	k->out_fd = out[0];
	k->err_fd = errp[0];
	k->started_us = mono_usec();
	return 0;
}

static struct child *child_new(enum child_role role)
{
	struct child *k = xcalloc(1, sizeof(*k));

	k->role = role;
	k->out_fd = k->err_fd = -1;
	sb_init(&k->out);
	return k;
}

static int add_child(struct jobs *js, struct child *k)
{
	size_t i;

	for (i = 0; i < MAX_CHILDREN; i++)
		if (!js->kids[i]) {
			js->kids[i] = k;
			return 0;
		}
	return -1;
}

static void start_cleanup(struct jobs *js)
{
	char *argv[JOB_MAX_ARGV];
	struct child *k = child_new(ROLE_CLEANUP);
	struct amis_err err;

	js->cleanup_wanted = false;
	/*
	 * A drill makes drill_dir before anything else (its lock is there):
	 * without it no drill ever ran here and there is nothing to clean, nor
	 * a reason to ask EC2.
	 */
	if (access(js->cfg->drill_dir, F_OK) != 0 && errno == ENOENT) {
		log_debug("cleanup of dead drills: no %s, no drill ever ran here",
		          js->cfg->drill_dir);
		child_free(k);
		return;
	}
	job_cleanup_argv(js->cfg, js->config_path, js->command, argv);
	snprintf(k->kind, sizeof(k->kind), "cleanup");
	snprintf(k->request_id, sizeof(k->request_id), "cleanup");
	err_clear(&err);
	if (spawn(k, argv, &err) != 0 || add_child(js, k) != 0) {
		log_error("could not start %s verify --cleanup: %s", js->command,
		          err.msg[0] ? err.msg : "too many children");
		if (k->pid > 0)
			kill(k->pid, SIGKILL), waitpid(k->pid, NULL, 0);
		child_free(k);
		js->cleanup_wanted = true;
		js->cleanup_next_us = mono_usec() + CLEANUP_RETRY_USEC;
	} else {
		log_info("cleanup of dead drills started (%s verify --cleanup, pid %ld)",
		         js->command, (long)k->pid);
	}
	job_argv_free(argv);
}

static int send_job_error(struct conn *c, enum amis_code code, const char *msg)
{
	unsigned char buf[4096];
	struct amsp_writer w;
	size_t len;

	amsp_begin(&w, buf, sizeof(buf), AMSP_ERROR);
	amsp_put_str(&w, AMSP_T_ERROR_CODE, amis_code_str(code));
	amsp_put_str(&w, AMSP_T_ERROR_MESSAGE, msg);
	amsp_put_str(&w, AMSP_T_ERROR_STAGE, "job");
	len = amsp_end(&w);
	return len ? conn_send(c, buf, len) : -1;
}

int jobs_start(struct jobs *js, struct conn *c, const struct amsp_msgview *m)
{
	const char *keys[AMSP_JOB_MAX_ARGS], *values[AMSP_JOB_MAX_ARGS];
	char *argv[JOB_MAX_ARGV];
	struct child *k;
	struct amis_err err;
	size_t n = amsp_count(m, AMSP_T_JOB_ARG_KEY), i;
	int rc = -1;

	k = child_new(ROLE_JOB);
	amsp_copy_str(amsp_get(m, AMSP_T_REQUEST_ID), k->request_id, sizeof(k->request_id));
	amsp_copy_str(amsp_get(m, AMSP_T_JOB_KIND), k->kind, sizeof(k->kind));
	err_clear(&err);
	memset(keys, 0, sizeof(keys));
	memset(values, 0, sizeof(values));
	if (n != amsp_count(m, AMSP_T_JOB_ARG_VALUE)) {
		err_set(&err, AMIS_E_INVALID_REQUEST, "job arguments and values do not pair up");
		goto refuse;
	}
	if (!request_id_valid(k->request_id)) {
		err_set(&err, AMIS_E_INVALID_REQUEST, "invalid request id");
		goto refuse;
	}
	for (i = 0; i < n; i++) {
		const struct amsp_field *kf = amsp_get_nth(m, AMSP_T_JOB_ARG_KEY, i);
		const struct amsp_field *vf = amsp_get_nth(m, AMSP_T_JOB_ARG_VALUE, i);
		char *kbuf = xmalloc((size_t)kf->len + 1), *vbuf = xmalloc((size_t)vf->len + 1);

		amsp_copy_str(kf, kbuf, (size_t)kf->len + 1);
		amsp_copy_str(vf, vbuf, (size_t)vf->len + 1);
		keys[i] = kbuf;
		values[i] = vbuf;
	}
	if (job_argv(js->cfg, js->config_path, js->command, k->kind, keys, values, n, argv, &err) <
	    0)
		goto refuse;
	if (job_kind_is_lifecycle(k->kind) && lifecycle_running(js) >= MAX_LIFECYCLE_JOBS) {
		err_set(&err, AMIS_E_BUSY,
		        "%zu lifecycle job(s) running already (at most %d); try again later",
		        lifecycle_running(js), MAX_LIFECYCLE_JOBS);
		job_argv_free(argv);
		goto refuse;
	}
	if (!job_kind_is_lifecycle(k->kind) && drills_running(js) >= (size_t)js->cfg->max_jobs) {
		err_set(&err, AMIS_E_BUSY,
		        "%zu job(s) running already, and [drill] max_jobs is %ld; try again later",
		        drills_running(js), js->cfg->max_jobs);
		job_argv_free(argv);
		goto refuse;
	}
	if (!job_kind_is_lifecycle(k->kind) && cleanup_running(js)) {
		err_set(&err, AMIS_E_BUSY,
		        "the helper is cleaning up after earlier drills (verify --cleanup); try "
		        "again in a moment");
		job_argv_free(argv);
		goto refuse;
	}
	if (spawn(k, argv, &err) != 0 || add_child(js, k) != 0) {
		if (k->pid > 0) {
			kill(k->pid, SIGKILL);
			waitpid(k->pid, NULL, 0);
			k->pid = 0;
			err_set(&err, AMIS_E_BUSY, "too many children");
		}
		job_argv_free(argv);
		goto refuse;
	}
	k->owner = c;
	c->job = k;
	{
		unsigned char buf[256];
		struct amsp_writer w;
		size_t len;

		amsp_begin(&w, buf, sizeof(buf), AMSP_JOB_STARTED);
		amsp_put_str(&w, AMSP_T_REQUEST_ID, k->request_id);
		len = amsp_end(&w);
		/* A client gone already is noticed by the server loop: SIGTERM then. */
		if (!len || conn_send(c, buf, len) != 0)
			log_warn("request %s: could not tell pid %ld that its job started",
			         k->request_id, (long)c->pid);
	}
	log_info("request %s: pid %ld uid %u started a %s job (pid %ld)", k->request_id,
	         (long)c->pid, (unsigned)c->uid, k->kind, (long)k->pid);
	job_argv_free(argv);
	rc = 0;
	goto out;
refuse:
	log_warn("pid %ld: refused a %s job: %s: %s", (long)c->pid,
	         job_argv_ok_kind(k->kind) ? k->kind : "?", err.code, err.msg);
	send_job_error(c, amis_code_of(err.code), err.msg);
	child_free(k);
	rc = -1;
out:
	for (i = 0; i < n; i++) {
		free((char *)keys[i]);
		free((char *)values[i]);
	}
	return rc;
}

static void terminate(struct child *k, const char *why)
{
	if (k->term_sent)
		return;
	log_warn("request %s: %s; stopping its %s job (SIGTERM to pid %ld)", k->request_id, why,
	         k->kind, (long)k->pid);
	kill(k->pid, SIGTERM);
	k->term_sent = true;
	k->term_sent_us = mono_usec();
}

void jobs_abort(struct jobs *js, struct conn *c, const char *why)
{
	struct child *k = c->job;

	(void)js;
	if (!k)
		return;
	c->job = NULL;
	k->owner = NULL;
	terminate(k, why);
}

/* Logs one line of a child's stderr. */
static void log_line(const struct child *k, const char *line)
{
	if (k->role == ROLE_CLEANUP)
		log_info("cleanup: %s", line);
	else
		log_info("request %s: %s: %s", k->request_id, k->kind, line);
}

/* Reads what is there; returns true at EOF or error. */
static bool drain(struct child *k, int fd, bool is_out)
{
	char buf[8192];

	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		ssize_t i;

		if (n == 0)
			return true;
		if (n < 0)
			return errno != EAGAIN && errno != EINTR;
		if (is_out) {
			size_t room = AMSP_JOB_MAX_OUTPUT - k->out.len;

			if ((size_t)n > room) {
				k->truncated = true;
				n = (ssize_t)room;
			}
			sb_append(&k->out, buf, (size_t)n);
			continue;
		}
		for (i = 0; i < n; i++) {
			/* The tail, for the result's message. */
			if (k->err_len == ERR_TAIL) {
				memmove(k->err_tail, k->err_tail + ERR_TAIL / 2, ERR_TAIL / 2);
				k->err_len = ERR_TAIL / 2;
			}
			k->err_tail[k->err_len++] = buf[i];
			if (buf[i] == '\n' || k->line_len == sizeof(k->line) - 1) {
				k->line[k->line_len] = '\0';
				log_line(k, k->line);
				k->line_len = 0;
			} else {
				k->line[k->line_len++] = buf[i];
			}
		}
	}
}

static void drain_all(struct child *k)
{
	if (k->out_fd >= 0 && drain(k, k->out_fd, true)) {
		close(k->out_fd);
		k->out_fd = -1;
	}
	if (k->err_fd >= 0 && drain(k, k->err_fd, false)) {
		close(k->err_fd);
		k->err_fd = -1;
		if (k->line_len) {
			k->line[k->line_len] = '\0';
			log_line(k, k->line);
			k->line_len = 0;
		}
	}
}

/* The last line of stderr that says something, for JOB_RESULT's message. */
static void err_summary(const struct child *k, char *out, size_t outsz)
{
	char tail[ERR_TAIL + 1];
	char *end, *start;

	memcpy(tail, k->err_tail, k->err_len);
	tail[k->err_len] = '\0';
	end = tail + k->err_len;
	while (end > tail && (end[-1] == '\n' || end[-1] == ' '))
		*--end = '\0';
	start = strrchr(tail, '\n');
	snprintf(out, outsz, "%s", start ? start + 1 : tail);
}

static void send_result(struct child *k, int status, long long usec)
{
	static unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
	bool signaled = WIFSIGNALED(status);
	int code = signaled ? WTERMSIG(status) : WEXITSTATUS(status);
	struct conn *c = k->owner;
	struct amsp_writer w;
	char msg[ERR_TAIL + 1];
	size_t off, len;

	for (off = 0; off < k->out.len; off += AMSP_JOB_CHUNK) {
		size_t piece =
		    k->out.len - off < AMSP_JOB_CHUNK ? k->out.len - off : AMSP_JOB_CHUNK;
		char *s = xmalloc(piece + 1);

		memcpy(s, k->out.data + off, piece);
		s[piece] = '\0';
		/* The report is text; a NUL (never written by the command) ends it. */
		amsp_begin(&w, buf, sizeof(buf), AMSP_JOB_OUTPUT);
		amsp_put_str(&w, AMSP_T_JOB_OUTPUT, s);
		free(s);
		len = amsp_end(&w);
		if (!len || conn_send(c, buf, len) != 0)
			goto broken;
	}
	amsp_begin(&w, buf, sizeof(buf), AMSP_JOB_RESULT);
	amsp_put_u32(&w, signaled ? AMSP_T_JOB_SIGNAL : AMSP_T_JOB_EXIT, (uint32_t)code);
	amsp_put_str(&w, AMSP_T_JOB_OUTCOME, job_outcome(k->kind, signaled, code));
	amsp_put_u64(&w, AMSP_T_JOB_USEC, (uint64_t)usec);
	if (k->truncated)
		amsp_put_u8(&w, AMSP_T_JOB_TRUNCATED, 1);
	err_summary(k, msg, sizeof(msg));
	amsp_put_str_if(&w, AMSP_T_ERROR_MESSAGE, msg);
	len = amsp_end(&w);
	if (len && conn_send(c, buf, len) == 0)
		return;
broken:
	log_warn("request %s: could not send the %s job's result to pid %ld", k->request_id,
	         k->kind, (long)c->pid);
}

/* A child exited: its result to its client, or its outcome to the log. */
static void finished(struct jobs *js, struct child *k, int status)
{
	long long usec = mono_usec() - k->started_us;
	bool signaled = WIFSIGNALED(status);
	int code = signaled ? WTERMSIG(status) : WEXITSTATUS(status);

	drain_all(k);
	if (k->role == ROLE_CLEANUP) {
		const char *report = sb_str(&k->out);
		size_t rl = strcspn(report, "\n");

		if (!signaled && code == 0)
			log_info("cleanup of dead drills: done in %.1f s: %.*s", usec / 1e6,
			         (int)rl, report);
		else if (!signaled && code == 3) {
			/* A drill runs (an administrator's): not ours to touch; later. */
			log_info(
			    "cleanup of dead drills: a drill is running; tried again in %lld s",
			    CLEANUP_RETRY_USEC / 1000000);
			js->cleanup_wanted = true;
			js->cleanup_next_us = mono_usec() + CLEANUP_RETRY_USEC;
		} else
			log_warn("cleanup of dead drills: %s %d after %.1f s, things may be left "
			         "(run ami-snapshot verify --cleanup): %.*s",
			         signaled ? "killed by signal" : "exit status", code, usec / 1e6,
			         (int)rl, report);
		return;
	}
	log_info("request %s: %s job (pid %ld) ended: %s (%s %d) after %.1f s", k->request_id,
	         k->kind, (long)k->pid, job_outcome(k->kind, signaled, code),
	         signaled ? "signal" : "exit", code, usec / 1e6);
	if (k->owner) {
		send_result(k, status, usec);
		k->owner->job = NULL;
	}
	/*
	 * Killed, interrupted, or an error that may have left things (exit 1,
	 * or 127: never started): the cleanup, once no drill of ours runs.
	 */
	if (!job_kind_is_lifecycle(k->kind) &&
	    (signaled || k->kill_sent || code == 1 || code == 6 || code > 6))
		js->cleanup_wanted = true;
}

/* Starts k's next step (k->step); false when none is left or it could not start. */
static bool start_step(struct jobs *js, struct child *k)
{
	struct amis_err err;

	while (k->step < k->nsteps) {
		size_t i = k->step++;

		snprintf(k->kind, sizeof(k->kind), "%s", k->step_kind[i]);
		err_clear(&err);
		if (spawn(k, k->steps[i], &err) == 0) {
			log_info("request %s: automatic %s started (pid %ld)", k->request_id,
			         k->kind, (long)k->pid);
			return true;
		}
		log_error("request %s: could not start the automatic %s: %s", k->request_id,
		          k->kind, err.msg);
	}
	return false;
}

void jobs_after_backup(struct jobs *js, const char *request_id, const char *name,
                       const char *system_id)
{
	struct child *k = child_new(ROLE_AUTO);
	struct amis_err err;
	int n;

	err_clear(&err);
	snprintf(k->request_id, sizeof(k->request_id), "%s", request_id);
	n = job_auto_steps(js->cfg, js->config_path, js->command, request_id, name, system_id,
	                   k->steps, k->step_kind, MAX_AUTO_STEPS, &err);
	if (n <= 0) {
		if (n < 0)
			log_error("request %s: no automatic copy or lock: %s", request_id, err.msg);
		child_free(k);
		return;
	}
	k->nsteps = (size_t)n;
	if (lifecycle_running(js) >= MAX_LIFECYCLE_JOBS)
		log_warn("request %s: %zu lifecycle jobs run; the automatic copy and lock starts "
		         "anyway",
		         request_id, lifecycle_running(js));
	if (!start_step(js, k) || add_child(js, k) != 0) {
		log_error("request %s: the automatic copy and lock did not start; run ami-snapshot "
		          "copy/lock by hand",
		          request_id);
		if (k->pid > 0)
			kill(k->pid, SIGKILL), waitpid(k->pid, NULL, 0);
		child_free(k);
	}
}

/* An automatic step ended: its outcome to the log, and the next step. */
static struct child *auto_next(struct jobs *js, struct child *k, int status)
{
	bool signaled = WIFSIGNALED(status);
	int code = signaled ? WTERMSIG(status) : WEXITSTATUS(status);
	const char *report = sb_str(&k->out);
	struct child *next;
	size_t i;

	drain_all(k);
	report = sb_str(&k->out);
	if (!signaled && code == 0)
		log_info("request %s: automatic %s done: %.*s", k->request_id, k->kind,
		         (int)strcspn(report, "\n"), report);
	else
		log_error("request %s: automatic %s failed (%s %d, %s): %.*s", k->request_id,
		          k->kind, signaled ? "signal" : "exit", code,
		          job_outcome(k->kind, signaled, code), (int)strcspn(report, "\n"), report);
	if (k->step >= k->nsteps || js->stopping)
		return NULL;
	/* Without a completed backup there is nothing to copy. */
	if (!strcmp(k->kind, "wait") && (signaled || code != 0)) {
		log_error("request %s: the backup did not complete: no automatic copy",
		          k->request_id);
		return NULL;
	}
	next = child_new(ROLE_AUTO);
	snprintf(next->request_id, sizeof(next->request_id), "%s", k->request_id);
	for (i = 0; i < k->nsteps; i++) {
		next->steps[i] = k->steps[i];
		k->steps[i] = NULL;
		memcpy(next->step_kind[i], k->step_kind[i], sizeof(next->step_kind[i]));
	}
	next->nsteps = k->nsteps;
	next->step = k->step;
	if (!start_step(js, next)) {
		child_free(next);
		return NULL;
	}
	return next;
}

void jobs_tick(struct jobs *js)
{
	long long now = mono_usec();
	size_t i;

	for (i = 0; i < MAX_CHILDREN; i++) {
		struct child *k = js->kids[i];
		int status;
		pid_t r;

		if (!k)
			continue;
		drain_all(k);
		if (k->term_sent && !k->kill_sent &&
		    now - k->term_sent_us > js->cfg->job_kill_grace_ms * 1000LL) {
			log_error(
			    "request %s: the %s job (pid %ld) did not end within kill_grace after "
			    "SIGTERM: SIGKILL to its process group",
			    k->request_id, k->kind, (long)k->pid);
			kill(-k->pid, SIGKILL);
			kill(k->pid, SIGKILL);
			k->kill_sent = true;
		}
		do
			r = waitpid(k->pid, &status, WNOHANG);
		while (r < 0 && errno == EINTR);
		if (r == k->pid || (r < 0 && errno == ECHILD)) {
			if (r < 0)
				status = 0x7f00; /* lost: exit 127 */
			js->kids[i] = NULL;
			if (k->role == ROLE_AUTO)
				js->kids[i] = auto_next(js, k, status);
			else
				finished(js, k, status);
			child_free(k);
		}
	}
	if (js->cleanup_wanted && now >= js->cleanup_next_us && drills_running(js) == 0 &&
	    !cleanup_running(js))
		start_cleanup(js);
}

void jobs_shutdown(struct jobs *js, long timeout_ms)
{
	long long deadline = mono_usec() + timeout_ms * 1000LL;
	size_t i, left;

	js->cleanup_wanted = false;
	js->stopping = true;
	for (i = 0; i < MAX_CHILDREN; i++)
		if (js->kids[i]) {
			if (js->kids[i]->owner) {
				js->kids[i]->owner->job = NULL;
				js->kids[i]->owner = NULL;
			}
			terminate(js->kids[i], "the helper is stopping");
		}
	for (;;) {
		jobs_tick(js);
		js->cleanup_wanted = false;
		for (i = 0, left = 0; i < MAX_CHILDREN; i++)
			left += js->kids[i] != NULL;
		if (!left)
			return;
		if (mono_usec() >= deadline) {
			for (i = 0; i < MAX_CHILDREN; i++)
				if (js->kids[i]) {
					log_error("request %s: the %s job (pid %ld) is still "
					          "running at exit: "
					          "SIGKILL; run ami-snapshot verify --cleanup",
					          js->kids[i]->request_id, js->kids[i]->kind,
					          (long)js->kids[i]->pid);
					kill(-js->kids[i]->pid, SIGKILL);
					kill(js->kids[i]->pid, SIGKILL);
					waitpid(js->kids[i]->pid, NULL, 0);
					child_free(js->kids[i]);
					js->kids[i] = NULL;
				}
			return;
		}
		usleep(100000);
	}
}
