/*
 * http.h - a thin libcurl wrapper for IMDS and EC2.
 *
 * One struct http_client keeps its connections (one per request made at
 * once, see http_perform_many), so that consecutive requests to the same
 * endpoint reuse the TCP/TLS connection: the helper
 * warms the connection (DryRun call) before freezing, and the one call made
 * while frozen then costs a single round trip.
 */
#ifndef AMIS_HTTP_H
#define AMIS_HTTP_H

#include "util.h"

#include <stdbool.h>

struct http_header {
	const char *name;
	const char *value;
};

struct http_request {
	const char *method; /* "GET", "PUT", "POST" */
	const char *url;
	const struct http_header *headers;
	size_t nheaders;
	const char *body; /* may be NULL */
	size_t body_len;
	long timeout_ms;         /* whole request; 0 = library default (30 s) */
	long connect_timeout_ms; /* 0 = min(timeout_ms, 5 s) */
	/*
	 * POST only.  libcurl silently sends a request again on a new
	 * connection when a reused one closed without an answer; but the
	 * server may have executed the first one.  With no_resend that retry
	 * fails instead ("ConnectionError"): for calls that create something.
	 */
	bool no_resend;
};

struct http_response {
	long status;         /* HTTP status, 0 if none was received */
	struct strbuf body;  /* response body */
	char request_id[96]; /* x-amzn-requestid header if present */
};

struct http_client;

struct http_client *http_client_new(void);
/*
 * From now on, abandon any transfer as soon as fd becomes readable or hangs
 * up (the client we work for went away); -1 turns it off.  Such a transfer
 * fails with code "ClientGone".
 */
void http_client_set_abort_fd(struct http_client *c, int fd);
/*
 * Connections idle longer than this are not reused (CURLOPT_MAXAGE_CONN):
 * several stay in the pool between calls (http_perform_many), and one left
 * idle for long may have been dropped on the way without a word.  0:
 * libcurl's default, 118 s.
 */
void http_client_set_max_idle(struct http_client *c, long seconds);
void http_client_free(struct http_client *c);

void http_response_init(struct http_response *r);
void http_response_free(struct http_response *r);

/*
 * Performs one request.  Returns 0 when an HTTP response was received (any
 * status; the caller interprets it), -1 on transport failure: err->code is
 * "Timeout" for a timeout, "ConnectionError" otherwise.  Never puts header
 * values in err (they may carry credentials).  Bodies larger than 8 MiB are
 * refused.
 */
int http_perform(struct http_client *c, const struct http_request *req, struct http_response *resp,
                 struct amis_err *err);

/*
 * Up to HTTP_MAX_PARALLEL requests at once, each on its own connection of
 * the client's pool (kept for later requests, so that the next batch finds
 * them warm): one round trip for all of them where one after the other
 * would pay one each.  rcs[i] and errs[i] are request i's outcome, as
 * http_perform() gives it; returns 0 if every request got an answer.  A
 * transfer abandoned for abort_fd fails with "ClientGone", every other with
 * it.
 */
#define HTTP_MAX_PARALLEL 16
int http_perform_many(struct http_client *c, const struct http_request *reqs,
                      struct http_response *resps, struct amis_err *errs, int *rcs, size_t n);

#endif
