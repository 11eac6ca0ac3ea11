/*
 * client.h - a client's side of the helper's socket (doc/protocol.md), for
 * the helper's own --status and --thaw and for `ami-snapshot check`:
 * blocking, with a deadline per answer.  (The extension has its own, on
 * the backend's latch: extension/helper_client.c.)
 */
#ifndef AMIS_CLIENT_H
#define AMIS_CLIENT_H

#include "protocol.h"
#include "util.h"

#include <stdbool.h>
#include <stddef.h>

/* A connected socket, or -1 with err ("HelperSocket": the path and errno). */
int amsp_client_connect(const char *socket_path, struct amis_err *err);
/* Sends one whole frame; -1 if the helper is gone. */
int amsp_client_send(int fd, const unsigned char *frame, size_t len);
/*
 * Receives one frame into buf[cap] and decodes it into m: 0; or -1 with
 * *why ("closed": the helper closed the connection before answering,
 * "timeout", or what was malformed).
 */
int amsp_client_recv(int fd, unsigned char *buf, size_t cap, int timeout_ms, struct amsp_msgview *m,
                     const char **why);

#endif
