/*
 * server.h - the helper's socket server: listening socket, peer
 * authentication, framing, and the poll() loop.  The operation logic lives
 * in operation.c; this file only moves authenticated, well-formed frames.
 */
#ifndef AMIS_SERVER_H
#define AMIS_SERVER_H

#include "config.h"
#include "protocol.h"

#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <sys/types.h>

/*
 * Connection slots.  Callers other than root share SERVER_MAX_CONNS, one uid
 * at most SERVER_MAX_CONNS_PER_UID of them; SERVER_ROOT_CONNS more are
 * root's only, so that --status and --thaw always get an answer.  A
 * connection that owns no operation and no job must send a complete request
 * within SERVER_REQUEST_DEADLINE_MS of connecting (or of its last answer);
 * when the slots are full, the one silent longest (at least
 * SERVER_EVICT_AFTER_MS) without an operation or a job is closed to make room.
 */
#define SERVER_MAX_CONNS 8
#define SERVER_MAX_CONNS_PER_UID 6
#define SERVER_ROOT_CONNS 2
#define SERVER_SLOTS (SERVER_MAX_CONNS + SERVER_ROOT_CONNS)
#define SERVER_REQUEST_DEADLINE_MS 10000
#define SERVER_EVICT_AFTER_MS 1000

struct operation;
struct child;

struct conn {
	int fd;
	uid_t uid;
	pid_t pid;
	unsigned char in[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
	size_t inlen;
	long long last_activity_us;
	struct operation *op; /* the operation this client owns, if any */
	struct child *job;    /* the job this client waits for, if any (job.h) */
	bool nonblocking;     /* answering from the nested pump: never block */
};

/* Sends one frame (blocking, bounded by the socket's send timeout). */
/*
 * What the server calls: the operation layer (operation.c fills it in with
 * op_server_handlers()).  The server knows nothing else of operations, so
 * the two do not depend on each other both ways.
 */
struct server_handlers {
	const struct helper_config *cfg;
	void *ctx;
	/* One decoded message; 0 keeps the connection, -1 closes it. */
	int (*dispatch)(void *ctx, struct conn *c, const struct amsp_msgview *m);
	/* c's client vanished or timed out while it owned an operation or a job. */
	void (*client_gone)(void *ctx, struct conn *c, const char *why);
	/* Whether c may stay silent beyond client_timeout. */
	bool (*may_idle)(const struct conn *c);
	/* Every turn of the loop; and whether it should turn faster (100 ms, not 1 s). */
	void (*tick)(void *ctx);
	bool (*fast_tick)(const void *ctx);
};

int conn_send(struct conn *c, const unsigned char *frame, size_t len);

/*
 * Creates the socket (0660 root:socket_group; 0600 without a group) and its
 * directory if missing (an existing one must be root's and not writable by
 * others); -1 with err on failure.
 */
int server_listen(const struct helper_config *cfg, int *out_fd, struct amis_err *err);

/*
 * Runs until *stop is set (by a signal handler).  The caller then calls
 * op_shutdown() so that nothing is left frozen.
 */
int server_run(const struct server_handlers *hs, int listen_fd, volatile sig_atomic_t *stop);

/*
 * poll(2) on the caller's fds (at most 7) that meanwhile serves the other
 * clients of the running server (hs->dispatch): used while an operation
 * waits for the EC2 worker.  Returns how many of the caller's fds have
 * events, 0 on timeout, -1 on error.  Outside server_run(): plain poll().
 */
int server_poll(struct pollfd *fds, nfds_t nfds, int timeout_ms);

/*
 * --status / --thaw: asks the running helper and prints the answer.  Exit
 * status: 0 nothing frozen (after THAW: thawed), 1 frozen, 2 no answer.
 */
int server_ask(const struct helper_config *cfg, int type);

#endif
