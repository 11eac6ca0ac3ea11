/*
 * status.c - the parts of `ami-snapshot status` that need no EC2 (see
 * status.h): the helper's live state over its socket, and the history
 * read through PostgreSQL by psql run as the database's owner.
 */
#include "status.h"

#include "client.h"
#include "protocol.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void set_str(json_object *o, const char *key, const struct amsp_msgview *m, uint16_t tag,
                    size_t cap)
{
	char *buf;

	if (!amsp_get(m, tag))
		return;
	buf = xmalloc(cap);
	amsp_copy_str(amsp_get(m, tag), buf, cap);
	json_object_object_add(o, key, json_object_new_string(buf));
	free(buf);
}

json_object *st_helper_json(const struct amsp_msgview *m)
{
	json_object *o = json_object_new_object(), *mounts = json_object_new_array(), *jobs;
	char mp[4096];
	size_t i;

	set_str(o, "state", m, AMSP_T_STATE, 33);
	set_str(o, "request_id", m, AMSP_T_REQUEST_ID, 65);
	set_str(o, "name", m, AMSP_T_NAME, 257);
	set_str(o, "step", m, AMSP_T_STEP, 33);
	if (amsp_get(m, AMSP_T_FROZEN_USEC))
		json_object_object_add(
		    o, "frozen_seconds",
		    json_object_new_double(amsp_u64(amsp_get(m, AMSP_T_FROZEN_USEC)) / 1e6));
	for (i = 0; i < amsp_count(m, AMSP_T_MOUNT_POINT); i++) {
		amsp_copy_str(amsp_get_nth(m, AMSP_T_MOUNT_POINT, i), mp, sizeof(mp));
		json_object_array_add(mounts, json_object_new_string(mp));
	}
	json_object_object_add(o, "frozen_mounts", mounts);
	set_str(o, "note", m, AMSP_T_REASON, 2049);
	jobs = json_object_new_array();
	for (i = 0; i < amsp_count(m, AMSP_T_JOB_ID); i++) {
		json_object *j = json_object_new_object();
		char id[AMSP_MAX_ID_LEN + 1] = "", kind[17] = "";

		amsp_copy_str(amsp_get_nth(m, AMSP_T_JOB_ID, i), id, sizeof(id));
		amsp_copy_str(amsp_get_nth(m, AMSP_T_JOB_KIND, i), kind, sizeof(kind));
		json_object_object_add(j, "request_id", json_object_new_string(id));
		json_object_object_add(j, "kind", json_object_new_string(kind));
		if (amsp_get_nth(m, AMSP_T_JOB_PID, i))
			json_object_object_add(
			    j, "pid",
			    json_object_new_int64(amsp_u32(amsp_get_nth(m, AMSP_T_JOB_PID, i))));
		if (amsp_get_nth(m, AMSP_T_JOB_USEC, i))
			json_object_object_add(
			    j, "running_seconds",
			    json_object_new_double(amsp_u64(amsp_get_nth(m, AMSP_T_JOB_USEC, i)) /
			                           1e6));
		json_object_array_add(jobs, j);
	}
	json_object_object_add(o, "jobs", jobs);
	return o;
}

/* One STATUS exchange; list_jobs asks for the running jobs too (a newer helper's). */
static json_object *ask_status(const char *socket_path, bool list_jobs, char *err, size_t errsz)
{
	static unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
	struct amsp_msgview m;
	struct amsp_writer w;
	struct amis_err e;
	const char *why = "";
	size_t len;
	int fd, rc;

	err_clear(&e);
	fd = amsp_client_connect(socket_path, &e);
	if (fd < 0) {
		snprintf(err, errsz, "%s", e.msg);
		return NULL;
	}
	amsp_begin(&w, buf, sizeof(buf), AMSP_STATUS);
	if (list_jobs)
		amsp_put_u8(&w, AMSP_T_LIST_JOBS, 1);
	len = amsp_end(&w);
	rc = amsp_client_send(fd, buf, len) == 0
	         ? amsp_client_recv(fd, buf, sizeof(buf), 10000, &m, &why)
	         : -1;
	close(fd);
	if (rc != 0) {
		snprintf(err, errsz, "no answer from the helper (%s)", why[0] ? why : "closed");
		return NULL;
	}
	if (m.type == AMSP_ERROR) {
		char msg[1025] = "";

		amsp_copy_str(amsp_get(&m, AMSP_T_ERROR_MESSAGE), msg, sizeof(msg));
		snprintf(err, errsz, "the helper refused: %s", msg);
		return NULL;
	}
	if (m.type != AMSP_STATUS_REPLY) {
		snprintf(err, errsz, "unexpected %s answer from the helper", amsp_msg_name(m.type));
		return NULL;
	}
	return st_helper_json(&m);
}

json_object *st_helper_status(const char *socket_path, char *err, size_t errsz)
{
	json_object *o = ask_status(socket_path, true, err, errsz);

	/* A helper from before LIST_JOBS closes the connection: ask as it knows. */
	if (!o && strstr(err, "no answer from the helper (closed)")) {
		err[0] = '\0';
		o = ask_status(socket_path, false, err, errsz);
	}
	return o;
}

bool st_helper_frozen(json_object *helper)
{
	json_object *v;
	const char *s;

	if (!helper || !json_object_object_get_ex(helper, "state", &v))
		return false;
	s = json_object_get_string(v);
	return !strcmp(s, "frozen") || !strcmp(s, "thaw-pending");
}

/*
 * The script psql runs: the extension's schema (any), then the newest rows
 * as one JSON array on one line, without the label and map (long, and
 * `show` has them); NOEXT when the extension is not in that database.
 */
static char *history_script(int last)
{
	char *s;

	if (asprintf(&s,
	             "\\set ON_ERROR_STOP 1\n"
	             /* NULL unsets the variable: :{?amis_schema} is then false. */
	             "SELECT (SELECT quote_ident(n.nspname) FROM pg_catalog.pg_extension e "
	             "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace "
	             "WHERE e.extname = 'ami_snapshot') AS amis_schema \\gset\n"
	             "\\if :{?amis_schema}\n"
	             "SELECT coalesce(json_agg(to_jsonb(h) - 'backup_label' - 'tablespace_map' "
	             "ORDER BY h.id DESC), '[]') FROM (SELECT * FROM "
	             ":amis_schema.ami_snapshot_history ORDER BY id DESC LIMIT %d) h;\n"
	             "\\else\n"
	             "\\echo NOEXT\n"
	             "\\endif\n",
	             last) < 0)
		return NULL;
	return s;
}

/* The child: become user (when root), run psql reading the script on stdin. */
static void run_psql(const struct st_pg *pg, int in_fd, int out_fd)
{
	const struct passwd *pw = NULL;
	const char *argv[12];
	int n = 0;

	dup2(in_fd, 0);
	dup2(out_fd, 1);
	dup2(out_fd, 2);
	if (in_fd > 2)
		close(in_fd);
	if (out_fd > 2)
		close(out_fd);
	if (geteuid() == 0) {
		pw = getpwnam(pg->user);
		if (!pw) {
			printf("psql: no such user \"%s\" (--pg-user)\n", pg->user);
			_exit(127);
		}
		if (initgroups(pw->pw_name, pw->pw_gid) != 0 || setgid(pw->pw_gid) != 0 ||
		    setuid(pw->pw_uid) != 0) {
			printf("psql: cannot become \"%s\": %s\n", pg->user, strerror(errno));
			_exit(127);
		}
	}
	if (chdir("/") != 0)
		_exit(127);
	setenv("PGCONNECT_TIMEOUT", "5", 1);
	setenv("PGOPTIONS", "-c statement_timeout=10s", 1);
	setenv("PGTZ", "UTC", 1);
	setenv("PGAPPNAME", "ami-snapshot status", 1);
	unsetenv("PSQLRC");
	argv[n++] = pg->psql;
	argv[n++] = "-X";
	argv[n++] = "-q";
	argv[n++] = "-A";
	argv[n++] = "-t";
	argv[n++] = "-f";
	argv[n++] = "-";
	argv[n++] = "--";
	argv[n++] = pg->conninfo;
	argv[n] = NULL;
	execvp(pg->psql, (char *const *)argv);
	printf("psql: cannot run %s: %s\n", pg->psql, strerror(errno));
	_exit(127);
}

/* The first line of psql's complaint, without its "psql: error: ". */
static void first_line(const char *out, char *err, size_t errsz)
{
	const char *p = out;
	size_t n;

	while (*p == '\n')
		p++;
	if (!strncmp(p, "psql: error: ", 13))
		p += 13;
	else if (!strncmp(p, "psql:<stdin>:", 13) && strstr(p, "ERROR:"))
		p = strstr(p, "ERROR:");
	n = strcspn(p, "\n");
	snprintf(err, errsz, "%.*s", (int)(n > 400 ? 400 : n), p[0] ? p : "psql failed");
}

json_object *st_history(const struct st_pg *pg, int last, char *err, size_t errsz)
{
	char *script = history_script(last), out[1 << 20];
	int in[2] = {-1, -1}, outp[2] = {-1, -1}, status = 0;
	size_t got = 0, sent = 0, slen;
	long long deadline;
	json_object *rows = NULL;
	pid_t pid;

	if (!script || pipe(in) != 0 || pipe(outp) != 0) {
		snprintf(err, errsz, "pipe: %s", strerror(errno));
		goto out;
	}
	pid = fork();
	if (pid < 0) {
		snprintf(err, errsz, "fork: %s", strerror(errno));
		goto out;
	}
	if (pid == 0) {
		close(in[1]);
		close(outp[0]);
		run_psql(pg, in[0], outp[1]);
	}
	close(in[0]);
	close(outp[1]);
	in[0] = outp[1] = -1;
	fcntl(in[1], F_SETFL, O_NONBLOCK);
	slen = strlen(script);
	deadline = mono_usec() + 20 * 1000000LL;
	for (;;) {
		struct pollfd p[2] = {{outp[0], POLLIN, 0}, {in[1], POLLOUT, 0}};
		int np = in[1] >= 0 ? 2 : 1;
		long long left = (deadline - mono_usec()) / 1000;
		ssize_t r;

		if (left <= 0) {
			kill(pid, SIGKILL);
			snprintf(err, errsz, "psql did not answer within 20 s");
			break;
		}
		if (poll(p, (nfds_t)np, (int)left) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (np == 2 && p[1].revents) {
			r = write(in[1], script + sent, slen - sent);
			if (r > 0)
				sent += (size_t)r;
			if (r < 0 || sent == slen) {
				close(in[1]);
				in[1] = -1;
			}
		}
		if (p[0].revents) {
			r = read(outp[0], out + got, sizeof(out) - 1 - got);
			if (r <= 0)
				break;
			got += (size_t)r;
			if (got == sizeof(out) - 1)
				break;
		}
	}
	out[got] = '\0';
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (err[0])
		goto out;
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		first_line(out, err, errsz);
		goto out;
	}
	if (!strncmp(out, "NOEXT", 5)) {
		snprintf(err, errsz,
		         "the ami_snapshot extension is not installed in that database");
		goto out;
	}
	rows = json_tokener_parse(out);
	if (!rows || !json_object_is_type(rows, json_type_array)) {
		json_object_put(rows);
		rows = NULL;
		snprintf(err, errsz, "psql answered something other than the history");
	}
out:
	if (in[1] >= 0)
		close(in[1]);
	if (outp[0] >= 0)
		close(outp[0]);
	free(script);
	return rows;
}

static const char *jget(json_object *o, const char *k)
{
	json_object *v;

	if (!json_object_object_get_ex(o, k, &v) || json_object_is_type(v, json_type_null))
		return "";
	return json_object_get_string(v);
}

void st_print_helper(FILE *f, json_object *helper, const char *err)
{
	json_object *mounts;
	size_t i, n;

	if (!helper) {
		fprintf(f, "helper: not answering: %s\n", err);
		return;
	}
	fprintf(f, "helper: %s", jget(helper, "state"));
	if (jget(helper, "request_id")[0])
		fprintf(f, ", request %s (\"%s\")", jget(helper, "request_id"),
		        jget(helper, "name"));
	if (jget(helper, "step")[0])
		fprintf(f, ", step %s", jget(helper, "step"));
	if (jget(helper, "frozen_seconds")[0])
		fprintf(f, ", frozen for %.3f s",
		        json_object_get_double(json_object_object_get(helper, "frozen_seconds")));
	fprintf(f, "\n");
	if (json_object_object_get_ex(helper, "frozen_mounts", &mounts)) {
		n = json_object_array_length(mounts);
		for (i = 0; i < n; i++)
			fprintf(f, "  frozen: %s\n",
			        json_object_get_string(json_object_array_get_idx(mounts, i)));
	}
	if (jget(helper, "note")[0])
		fprintf(f, "  note: %s\n", jget(helper, "note"));
	if (json_object_object_get_ex(helper, "jobs", &mounts)) {
		n = json_object_array_length(mounts);
		for (i = 0; i < n; i++) {
			json_object *j = json_object_array_get_idx(mounts, i);

			fprintf(
			    f, "  job: %s (pid %s, request %s), running for %.1f s\n",
			    jget(j, "kind"), jget(j, "pid"), jget(j, "request_id"),
			    json_object_get_double(json_object_object_get(j, "running_seconds")));
		}
	}
}

/* "2026-12-03T09:12:01.123+00:00" -> "2026-12-03 09:12:01". */
static void short_time(const char *iso, char *buf, size_t sz)
{
	snprintf(buf, sz, "%.19s", iso);
	if (strlen(buf) > 10 && buf[10] == 'T')
		buf[10] = ' ';
}

void st_print_history(FILE *f, json_object *rows)
{
	static const char *const head[] = {"ID",     "NAME",      "STATUS", "STARTED (UTC)",
	                                   "FROZEN", "SNAPSHOTS", "IMAGE",  "ERROR"};
	enum { NCOL = 8 };
	size_t n = json_object_array_length(rows), i, c, w[NCOL];
	char **cell = xcalloc(n * NCOL + 1, sizeof(*cell));

	for (c = 0; c < NCOL; c++)
		w[c] = strlen(head[c]);
	for (i = 0; i < n; i++) {
		json_object *r = json_object_array_get_idx(rows, i), *snaps;
		char when[32], frozen[32] = "-";
		size_t nsnap = 0;

		short_time(jget(r, "started_at"), when, sizeof(when));
		if (jget(r, "frozen_ms")[0])
			snprintf(frozen, sizeof(frozen), "%.0f ms",
			         json_object_get_double(json_object_object_get(r, "frozen_ms")));
		if (json_object_object_get_ex(r, "snapshot_ids", &snaps) &&
		    json_object_is_type(snaps, json_type_array))
			nsnap = json_object_array_length(snaps);
		cell[i * NCOL + 0] = xstrdup(jget(r, "id"));
		cell[i * NCOL + 1] = xstrdup(jget(r, "name"));
		cell[i * NCOL + 2] = xstrdup(jget(r, "status"));
		cell[i * NCOL + 3] = xstrdup(when);
		cell[i * NCOL + 4] = xstrdup(frozen);
		if (asprintf(&cell[i * NCOL + 5], "%zu", nsnap) < 0)
			cell[i * NCOL + 5] = NULL;
		cell[i * NCOL + 6] = xstrdup(jget(r, "image_id")[0] ? jget(r, "image_id") : "-");
		cell[i * NCOL + 7] =
		    xstrdup(jget(r, "error_code")[0] ? jget(r, "error_code") : "-");
		for (c = 0; c < NCOL; c++) {
			if (!cell[i * NCOL + c])
				cell[i * NCOL + c] = xstrdup("?");
			if (strlen(cell[i * NCOL + c]) > w[c])
				w[c] = strlen(cell[i * NCOL + c]);
		}
	}
	for (c = 0; c < NCOL; c++)
		fprintf(f, "%-*s%s", c + 1 < NCOL ? (int)w[c] : 0, head[c],
		        c + 1 < NCOL ? "  " : "\n");
	for (i = 0; i < n; i++) {
		for (c = 0; c < NCOL; c++)
			fprintf(f, "%-*s%s", c + 1 < NCOL ? (int)w[c] : 0, cell[i * NCOL + c],
			        c + 1 < NCOL ? "  " : "\n");
	}
	for (i = 0; i < n * NCOL; i++)
		free(cell[i]);
	free(cell);
}
