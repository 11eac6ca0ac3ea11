/*
 * helper_client.h - talking to ami-snapshot-helper from a backend.
 *
 * Every wait is WaitLatchOrSocket() with CHECK_FOR_INTERRUPTS(), so cancel,
 * statement_timeout and pg_terminate_backend work at any point; the socket
 * is an external FD (AcquireExternalFD) and is closed by helper_close(),
 * which callers run in PG_FINALLY/PG_CATCH, or by process exit.
 */
#ifndef AMI_SNAPSHOT_HELPER_CLIENT_H
#define AMI_SNAPSHOT_HELPER_CLIENT_H

#include "protocol.h"

typedef struct HelperConn HelperConn;

extern HelperConn *helper_connect(const char *path, int timeout_ms);
extern void helper_send(HelperConn *hc, const unsigned char *frame, size_t len,
						int timeout_ms);

/*
 * Receives one message into *msg (views into hc's buffer, valid until the
 * next receive).  An ERROR message from the helper is turned into an
 * ereport(ERROR) with the helper's code and message as detail; any other
 * type than expected_type too, unless expected_type is 0 (any).
 */
extern void helper_receive(HelperConn *hc, struct amsp_msgview *msg,
						   uint16 expected_type, const char *what,
						   int timeout_ms);
extern void helper_close(HelperConn *hc);

/*
 * The PREPARE asks for an image: a connection closed before its answer
 * means a helper too old for images (error code HelperTooOld).
 */
extern void helper_set_image_asked(HelperConn *hc, bool asked);
/* The PREPARE carried a standby's fields: a closed connection is HelperTooOld. */
extern void helper_set_standby_asked(HelperConn *hc);

/*
 * A JOB was sent: a connection closed before its first answer (during
 * "job") means a helper too old for jobs (HelperTooOld).
 */
extern void helper_set_job_asked(HelperConn *hc);

/*
 * A CHECK was sent: a connection closed before its answer (during "check")
 * means a helper too old for the preflight check (HelperTooOld).
 */
extern void helper_set_check_asked(HelperConn *hc);

/*
 * Best effort, never waits or throws: tells the helper the client gives up
 * (for its log); usable in PG_CATCH.
 */
extern void helper_send_abort(HelperConn *hc, const char *reason);

/* The code of the last ERROR message received from the helper, or NULL. */
extern const char *helper_last_error_code(HelperConn *hc);

/*
 * The last message received if it was an ERROR, or NULL: the instance,
 * region, volumes, snapshots created anyway and freeze time the helper
 * reported with it (doc/protocol.md).  Valid until the next receive.
 */
extern const struct amsp_msgview *helper_last_error(HelperConn *hc);

#endif
