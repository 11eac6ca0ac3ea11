/*
 * server.c - see server.h.
 *
 * Single-threaded: one poll() loop, signal handlers only set flags.  The
 * connection slots are shared as server.h says (root has its own; a
 * connection with nothing in progress has a short deadline and is the first
 * to go when the slots are full); a peer whose uid is not in allowed_users
 * (nor root) is closed before a single byte of it is read.  A malformed
 * frame closes the connection with a logged reason.
 *
 * While an operation waits for the EC2 worker, server_poll() keeps serving
 * the other clients: the operation's state table (opstate.h) gives them
 * status, thaw, and an immediate Busy for a second PREPARE.
 */
#include "server.h"
#include "client.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

/* The one server of the process (server_run), for server_poll(). */
static struct {
	const struct server_handlers *hs;
	int lfd;
	struct conn *conns[SERVER_SLOTS];
	bool running;
} srv;

int conn_send(struct conn *c, const unsigned char *frame, size_t len)
{
	/*
	 * Answers given from the nested pump (server_poll) may run while
	 * filesystems are frozen: never block on a client that does not read.
	 */
	int flags = MSG_NOSIGNAL | (c->nonblocking ? MSG_DONTWAIT : 0);

	while (len > 0) {
		ssize_t n = send(c->fd, frame, len, flags);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		frame += n;
		len -= (size_t)n;
	}
	return 0;
}

/*
 * The socket's directory.  One the helper creates itself gets root:socket_group
 * 0750 (0755 without a group).  An existing one is never chowned or chmodded
 * (it could be /tmp or /run): it must be owned by the helper's uid and not
 * writable by others, nor by its group unless that is socket_group, or anyone
 * could replace the socket.
 */
static int make_socket_dir(const char *dir, gid_t gid, bool have_gid, struct amis_err *err)
{
	struct stat st;

	if (mkdir(dir, 0700) == 0) {
		if (have_gid && chown(dir, geteuid(), gid) != 0)
			return err_set(err, AMIS_E_HELPER_SOCKET, "cannot chown %s: %s", dir,
			               strerror(errno));
		if (chmod(dir, have_gid ? 0750 : 0755) != 0)
			return err_set(err, AMIS_E_HELPER_SOCKET, "cannot chmod %s: %s", dir,
			               strerror(errno));
		return 0;
	}
	if (errno != EEXIST)
		return err_set(err, AMIS_E_HELPER_SOCKET, "cannot create socket directory %s: %s",
		               dir, strerror(errno));
	if (lstat(dir, &st) != 0 || !S_ISDIR(st.st_mode))
		return err_set(err, AMIS_E_HELPER_SOCKET, "socket directory %s is not a directory",
		               dir);
	if (st.st_uid != geteuid())
		return err_set(
		    err, AMIS_E_HELPER_SOCKET,
		    "socket directory %s is owned by uid %u, not by the helper (uid %u); "
		    "refusing to use it",
		    dir, (unsigned)st.st_uid, (unsigned)geteuid());
	if (st.st_mode & S_IWOTH)
		return err_set(
		    err, AMIS_E_HELPER_SOCKET,
		    "socket directory %s is writable by others (mode %04o): anyone could "
		    "replace the socket; use a directory of its own, such as "
		    "/run/ami-snapshot",
		    dir, (unsigned)(st.st_mode & 07777));
	if ((st.st_mode & S_IWGRP) && !(have_gid && st.st_gid == gid))
		return err_set(err, AMIS_E_HELPER_SOCKET,
		               "socket directory %s is writable by group %u, which is not "
		               "socket_group (mode %04o); refusing to use it",
		               dir, (unsigned)st.st_gid, (unsigned)(st.st_mode & 07777));
	return 0;
}

int server_listen(const struct helper_config *cfg, int *out_fd, struct amis_err *err)
{
	struct sockaddr_un sa;
	char dir[sizeof(sa.sun_path)];
	char *slash;
	gid_t gid = 0;
	bool have_gid = false;
	mode_t old_umask;
	int fd, rc;

	if (strlen(cfg->socket_path) >= sizeof(sa.sun_path))
		return err_set(err, AMIS_E_HELPER_SOCKET, "socket path too long: %s",
		               cfg->socket_path);
	if (cfg->socket_group) {
		struct group *gr = getgrnam(cfg->socket_group);

		if (!gr)
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "socket_group: no such group \"%s\"", cfg->socket_group);
		gid = gr->gr_gid;
		have_gid = true;
	} else {
		log_warn("socket_group is not set: %s will be mode 0600 root:root and only root "
		         "can connect; set socket_group to the group PostgreSQL runs as",
		         cfg->socket_path);
	}
	snprintf(dir, sizeof(dir), "%s", cfg->socket_path);
	slash = strrchr(dir, '/');
	if (slash && slash != dir) {
		*slash = '\0';
		if (make_socket_dir(dir, gid, have_gid, err) != 0)
			return -1;
	}

	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return err_set(err, AMIS_E_HELPER_SOCKET, "socket: %s", strerror(errno));
	memset(&sa, 0, sizeof(sa));
	sa.sun_family = AF_UNIX;
	memcpy(sa.sun_path, cfg->socket_path, strlen(cfg->socket_path) + 1);
	/* A stale socket from a previous run: only ever remove a socket. */
	{
		struct stat st;

		if (lstat(cfg->socket_path, &st) == 0) {
			if (!S_ISSOCK(st.st_mode)) {
				close(fd);
				return err_set(
				    err, AMIS_E_HELPER_SOCKET,
				    "%s exists and is not a socket; refusing to remove it",
				    cfg->socket_path);
			}
			unlink(cfg->socket_path);
		}
	}
	/* No moment at which the socket is more open than intended. */
	old_umask = umask(0177);
	rc = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old_umask);
	if (rc != 0) {
		err_set(err, AMIS_E_HELPER_SOCKET, "bind %s: %s", cfg->socket_path,
		        strerror(errno));
		close(fd);
		return -1;
	}
	/*
	 * 0660 root:socket_group.  Without socket_group, 0600: only root can
	 * connect.  Never 0666: SO_PEERCRED filters peers, but an open socket is
	 * one mistake in allowed_users away from anybody freezing filesystems.
	 */
	if ((have_gid && chown(cfg->socket_path, geteuid(), gid) != 0) ||
	    chmod(cfg->socket_path, have_gid ? 0660 : 0600) != 0) {
		err_set(err, AMIS_E_HELPER_SOCKET, "cannot set owner/mode of %s: %s",
		        cfg->socket_path, strerror(errno));
		close(fd);
		return -1;
	}
	if (listen(fd, 16) != 0) {
		err_set(err, AMIS_E_HELPER_SOCKET, "listen: %s", strerror(errno));
		close(fd);
		return -1;
	}
	*out_fd = fd;
	return 0;
}

static bool uid_allowed(const struct helper_config *cfg, uid_t uid)
{
	size_t i;

	/* Root can always ask (--status, --thaw): it could do anything anyway. */
	if (uid == 0)
		return true;
	for (i = 0; i < cfg->n_allowed_uids; i++)
		if (cfg->allowed_uids[i] == uid)
			return true;
	return false;
}

static void conn_close(const struct server_handlers *hs, struct conn **slot, const char *why)
{
	struct conn *c = *slot;

	if (c->op || c->job)
		hs->client_gone(hs->ctx, c, why);
	log_info("connection from pid %ld uid %u closed: %s", (long)c->pid, (unsigned)c->uid, why);
	close(c->fd);
	free(c);
	*slot = NULL;
}

/* Whether c has nothing in progress: no operation, no job. */
static bool conn_idle(const struct conn *c)
{
	return !c->op && !c->job;
}

/*
 * Refuses a connection that gets no slot with an ERROR its client reads as
 * the answer to its first request (the extension: an SQL error with the
 * code, not a connection reset).  Never blocks.
 */
static void refuse(int fd, const char *msg)
{
	unsigned char buf[512];
	struct amsp_writer w;
	size_t len;

	/*
	 * What the client sent already is read first: closing a socket with
	 * unread data would make the client's next read a reset, not our answer.
	 */
	for (int i = 0; i < 256 && recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0; i++)
		;
	amsp_begin(&w, buf, sizeof(buf), AMSP_ERROR);
	amsp_put_str(&w, AMSP_T_ERROR_CODE, amis_code_str(AMIS_E_TOO_MANY_CONNECTIONS));
	amsp_put_str(&w, AMSP_T_ERROR_MESSAGE, msg);
	amsp_put_str(&w, AMSP_T_ERROR_STAGE, "connect");
	len = amsp_end(&w);
	if (len && send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		log_debug("could not tell a refused client why: %s", strerror(errno));
	close(fd);
}

/*
 * The slot for a new connection of uid, or -1.  Root takes any free slot;
 * the others at most SERVER_MAX_CONNS in all and SERVER_MAX_CONNS_PER_UID
 * each.  When a limit is reached, the connection silent longest (at least
 * SERVER_EVICT_AFTER_MS) that has nothing in progress and counts against
 * that limit is closed to make room.
 */
static int find_slot(const struct server_handlers *hs, struct conn **conns, uid_t uid,
                     long long now)
{
	int i, free_slot = -1, others = 0, mine = 0, victim = -1;
	bool full;

	for (i = 0; i < SERVER_SLOTS; i++) {
		if (!conns[i]) {
			if (free_slot < 0)
				free_slot = i;
			continue;
		}
		if (conns[i]->uid != 0)
			others++;
		if (conns[i]->uid == uid)
			mine++;
	}
	if (uid == 0)
		full = free_slot < 0;
	else
		full =
		    free_slot < 0 || others >= SERVER_MAX_CONNS || mine >= SERVER_MAX_CONNS_PER_UID;
	if (!full)
		return free_slot;
	for (i = 0; i < SERVER_SLOTS; i++) {
		struct conn *c = conns[i];

		if (!c || !conn_idle(c) ||
		    now - c->last_activity_us < SERVER_EVICT_AFTER_MS * 1000LL)
			continue;
		/* Room only comes from a connection counted against the limit reached. */
		if (uid != 0 && free_slot >= 0 && others < SERVER_MAX_CONNS && c->uid != uid)
			continue;
		if (uid != 0 && c->uid == 0)
			continue;
		if (victim < 0 || c->last_activity_us < conns[victim]->last_activity_us)
			victim = i;
	}
	if (victim < 0)
		return -1;
	log_warn("connection slots full: closing the connection of pid %ld uid %u, silent for "
	         "%.1f s with no request in progress, for a new one of uid %u",
	         (long)conns[victim]->pid, (unsigned)conns[victim]->uid,
	         (now - conns[victim]->last_activity_us) / 1e6, (unsigned)uid);
	conn_close(hs, &conns[victim], "closed to make room (connection slots full)");
	return free_slot >= 0 ? free_slot : victim;
}

static void accept_one(const struct server_handlers *hs, int lfd, struct conn **conns)
{
	const struct helper_config *cfg = hs->cfg;
	struct ucred cred;
	socklen_t len = sizeof(cred);
	struct timeval tv = {5, 0};
	struct conn *c;
	long long now;
	int fd, i;

	fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
	if (fd < 0) {
		if (errno != EAGAIN && errno != EINTR)
			log_warn("accept: %s", strerror(errno));
		return;
	}
	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
		log_warn("rejected connection: SO_PEERCRED failed: %s", strerror(errno));
		close(fd);
		return;
	}
	if (!uid_allowed(cfg, cred.uid)) {
		log_warn("rejected connection from pid %ld: uid %u is not in allowed_users",
		         (long)cred.pid, (unsigned)cred.uid);
		close(fd);
		return;
	}
	now = mono_usec();
	i = find_slot(hs, conns, cred.uid, now);
	if (i < 0) {
		log_warn(
		    "rejected connection from pid %ld uid %u: every connection slot it may use "
		    "has a call in progress",
		    (long)cred.pid, (unsigned)cred.uid);
		refuse(fd, "every connection slot of the helper has a call in progress; try again");
		return;
	}
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	c = xcalloc(1, sizeof(*c));
	c->fd = fd;
	c->uid = cred.uid;
	c->pid = cred.pid;
	c->last_activity_us = now;
	conns[i] = c;
	log_debug("connection from pid %ld uid %u", (long)c->pid, (unsigned)c->uid);
}

/*
 * Reads what is available.  Returns 1 when a whole frame is buffered, 0 when
 * more is needed, -1 (with *why) when the connection must be closed.
 */
static int read_frame(struct conn *c, const char **why)
{
	size_t want = AMSP_HEADER_LEN;
	ssize_t n;

	if (c->inlen >= AMSP_HEADER_LEN) {
		long plen = amsp_header_payload_len(c->in, why);

		if (plen < 0)
			return -1;
		want = AMSP_HEADER_LEN + (size_t)plen;
	}
	n = recv(c->fd, c->in + c->inlen, want - c->inlen, MSG_DONTWAIT);
	if (n == 0) {
		*why = c->inlen ? "client closed the connection mid-frame"
		                : "client closed the connection";
		return -1;
	}
	if (n < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return 0;
		*why = "receive error";
		return -1;
	}
	c->inlen += (size_t)n;
	c->last_activity_us = mono_usec();
	if (c->inlen == AMSP_HEADER_LEN) {
		long plen = amsp_header_payload_len(c->in, why);

		if (plen < 0)
			return -1;
		return plen == 0 ? 1 : 0;
	}
	return c->inlen == want && want > AMSP_HEADER_LEN ? 1 : 0;
}

static void handle_readable(const struct server_handlers *hs, struct conn **slot, bool busy)
{
	struct conn *c = *slot;
	struct amsp_msgview *m;
	const char *why = NULL;
	int rc;

	rc = read_frame(c, &why);
	if (rc < 0) {
		if (c->op || c->job || c->inlen)
			log_warn("pid %ld: %s", (long)c->pid, why);
		conn_close(hs, slot, why);
		return;
	}
	if (rc == 0)
		return;
	m = xmalloc(sizeof(*m));
	if (amsp_decode(c->in, c->inlen, m, &why) != 0) {
		char reason[128];

		snprintf(reason, sizeof(reason), "malformed request: %s", why);
		log_warn("pid %ld: %s", (long)c->pid, reason);
		free(m);
		conn_close(hs, slot, reason);
		return;
	}
	c->inlen = 0;
	c->nonblocking = busy;
	rc = hs->dispatch(hs->ctx, c, m);
	c->nonblocking = false;
	free(m);
	if (rc != 0) {
		conn_close(hs, slot, "conversation ended");
		return;
	}
	/* The client's silence starts now, not when its request arrived. */
	c->last_activity_us = mono_usec();
}

int server_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms)
{
	struct pollfd pfd[SERVER_SLOTS + 8];
	int idx[SERVER_SLOTS + 8];
	nfds_t n = 0, i;
	int rc, mine = 0;

	if (!srv.running || nfds > 7)
		return poll(fds, nfds, timeout_ms);
	for (i = 0; i < nfds; i++) {
		pfd[n] = fds[i];
		idx[n++] = -2;
	}
	pfd[n].fd = srv.lfd;
	pfd[n].events = POLLIN;
	pfd[n].revents = 0;
	idx[n++] = -1;
	for (i = 0; i < SERVER_SLOTS; i++) {
		/* Not the operation's own client: its caller watches it. */
		if (!srv.conns[i] || srv.conns[i]->op)
			continue;
		pfd[n].fd = srv.conns[i]->fd;
		pfd[n].events = POLLIN;
		pfd[n].revents = 0;
		idx[n++] = (int)i;
	}
	rc = poll(pfd, n, timeout_ms);
	if (rc < 0)
		return rc;
	for (i = 0; i < nfds; i++) {
		fds[i].revents = pfd[i].revents;
		if (fds[i].revents)
			mine++;
	}
	for (i = nfds; rc > 0 && i < n; i++) {
		if (!pfd[i].revents)
			continue;
		if (idx[i] < 0)
			accept_one(srv.hs, srv.lfd, srv.conns);
		else if (srv.conns[idx[i]] && !srv.conns[idx[i]]->op)
			handle_readable(srv.hs, &srv.conns[idx[i]], true);
	}
	return mine;
}

int server_run(const struct server_handlers *hs, int lfd, volatile sig_atomic_t *stop)
{
	struct conn **conns = srv.conns;
	struct pollfd pfd[SERVER_SLOTS + 1];
	int idx[SERVER_SLOTS + 1];
	int i;

	srv.hs = hs;
	srv.lfd = lfd;
	srv.running = true;
	while (!*stop) {
		long client_timeout_us = hs->cfg->client_timeout_ms * 1000L;
		long long now;
		int n = 0, rc;

		pfd[n].fd = lfd;
		pfd[n].events = POLLIN;
		idx[n++] = -1;
		for (i = 0; i < SERVER_SLOTS; i++) {
			if (!conns[i])
				continue;
			pfd[n].fd = conns[i]->fd;
			pfd[n].events = POLLIN;
			idx[n++] = i;
		}
		/* A failed thaw is retried, and jobs are watched, on every tick: faster then. */
		rc = poll(pfd, (nfds_t)n, hs->fast_tick(hs->ctx) ? 100 : 1000);
		if (rc < 0 && errno != EINTR) {
			log_error("poll: %s", strerror(errno));
			break;
		}
		if (rc > 0) {
			for (i = 0; i < n; i++) {
				if (!pfd[i].revents)
					continue;
				if (idx[i] < 0)
					accept_one(hs, lfd, conns);
				else if (conns[idx[i]])
					handle_readable(hs, &conns[idx[i]], false);
			}
		}
		hs->tick(hs->ctx);
		now = mono_usec();
		for (i = 0; i < SERVER_SLOTS; i++) {
			if (!conns[i])
				continue;
			if (conn_idle(conns[i]) &&
			    now - conns[i]->last_activity_us > SERVER_REQUEST_DEADLINE_MS * 1000LL)
				conn_close(hs, &conns[i],
				           conns[i]->inlen ? "no complete request within 10 s"
				                           : "no request within 10 s");
			else if (!hs->may_idle(conns[i]) &&
			         now - conns[i]->last_activity_us > client_timeout_us)
				conn_close(hs, &conns[i], "client timed out (client_timeout)");
		}
	}
	/* No nested accepts while the last operations are being ended. */
	srv.running = false;
	for (i = 0; i < SERVER_SLOTS; i++)
		if (conns[i])
			conn_close(hs, &conns[i], "helper shutting down");
	return 0;
}

/* Whether a STATUS_REPLY says something is frozen. */
static bool reply_frozen(const struct amsp_msgview *m)
{
	char state[33] = "";

	amsp_copy_str(amsp_get(m, AMSP_T_STATE), state, sizeof(state));
	return !strcmp(state, "frozen") || !strcmp(state, "thaw-pending");
}

/* Prints a STATUS_REPLY; returns whether something is frozen. */
static bool print_status(const struct amsp_msgview *m)
{
	char state[33] = "", rid[65] = "", name[257] = "", mp[4096], reason[2049] = "";
	size_t i;

	amsp_copy_str(amsp_get(m, AMSP_T_STATE), state, sizeof(state));
	printf("state: %s\n", state);
	if (amsp_get(m, AMSP_T_REQUEST_ID)) {
		amsp_copy_str(amsp_get(m, AMSP_T_REQUEST_ID), rid, sizeof(rid));
		amsp_copy_str(amsp_get(m, AMSP_T_NAME), name, sizeof(name));
		printf("request: %s (\"%s\")\n", rid, name);
	}
	if (amsp_get(m, AMSP_T_STEP)) {
		char step[33] = "";

		amsp_copy_str(amsp_get(m, AMSP_T_STEP), step, sizeof(step));
		printf("step: %s\n", step);
	}
	if (amsp_get(m, AMSP_T_FROZEN_USEC))
		printf("frozen for: %.3f s\n", amsp_u64(amsp_get(m, AMSP_T_FROZEN_USEC)) / 1e6);
	for (i = 0; i < amsp_count(m, AMSP_T_MOUNT_POINT); i++) {
		amsp_copy_str(amsp_get_nth(m, AMSP_T_MOUNT_POINT, i), mp, sizeof(mp));
		printf("frozen: %s\n", mp);
	}
	if (amsp_get(m, AMSP_T_REASON)) {
		amsp_copy_str(amsp_get(m, AMSP_T_REASON), reason, sizeof(reason));
		printf("note: %s\n", reason);
	}
	return reply_frozen(m);
}

/* One STATUS or THAW exchange with the running helper; the reply into m. */
static int ask_once(const struct helper_config *cfg, int type, unsigned char *buf, size_t cap,
                    struct amsp_msgview *m)
{
	struct amsp_writer w;
	struct amis_err err;
	const char *why = "";
	size_t len;
	int fd, rc;

	err_clear(&err);
	fd = amsp_client_connect(cfg->socket_path, &err);
	if (fd < 0) {
		fprintf(stderr, "%s\n", err.msg);
		return -1;
	}
	amsp_begin(&w, buf, cap, (enum amsp_msg)type);
	len = amsp_end(&w);
	rc = amsp_client_send(fd, buf, len) == 0 ? amsp_client_recv(fd, buf, cap, 10000, m, &why)
	                                         : -1;
	close(fd);
	if (rc == 0)
		return 0;
	if (!strcmp(why, "closed") || !why[0])
		fprintf(stderr, "the helper closed the connection without an answer\n");
	else
		fprintf(stderr, "no answer from the helper: %s\n", why);
	return -1;
}

int server_ask(const struct helper_config *cfg, int type)
{
	static unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
	static struct amsp_msgview m;
	int i;

	if (ask_once(cfg, type, buf, sizeof(buf), &m) != 0)
		return 2;
	if (m.type == AMSP_ERROR) {
		char msg[2049] = "";

		amsp_copy_str(amsp_get(&m, AMSP_T_ERROR_MESSAGE), msg, sizeof(msg));
		fprintf(stderr, "the helper refused: %s\n", msg);
		return 2;
	}
	if (m.type != AMSP_STATUS_REPLY) {
		fprintf(stderr, "unexpected %s answer from the helper\n", amsp_msg_name(m.type));
		return 2;
	}
	if (type == AMSP_STATUS)
		return print_status(&m) ? 1 : 0;
	print_status(&m);
	/* THAW: wait (up to 10 s) until nothing is frozen. */
	for (i = 0; i < 100; i++) {
		poll(NULL, 0, 100);
		if (ask_once(cfg, AMSP_STATUS, buf, sizeof(buf), &m) != 0 ||
		    m.type != AMSP_STATUS_REPLY)
			return 2;
		if (!reply_frozen(&m)) {
			printf("thawed\n");
			return 0;
		}
	}
	print_status(&m);
	fprintf(stderr, "still frozen after 10 s\n");
	return 1;
}
