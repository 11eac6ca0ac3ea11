/*
 * sigv4.h - AWS Signature Version 4 for header-signed requests.
 *
 * A pure function, in the spirit of pgBackRest's S3 signer: the request, the
 * credentials and the time are all parameters, so tests can assert exact
 * signatures for AWS's published example key and date.
 *
 * Implements "Create a signed AWS API request" (IAM User Guide,
 * https://docs.aws.amazon.com/IAM/latest/UserGuide/create-signed-request.html):
 * canonical request -> string to sign -> derived signing key -> signature.
 *
 * Exactly these headers are signed (sorted): content-type (when given), host,
 * x-amz-date and x-amz-security-token (when the credentials carry a session
 * token).  The caller must send exactly those header values, plus the
 * Authorization header this function computes.  The payload hash is the hex
 * SHA-256 of the body.
 */
#ifndef AMIS_SIGV4_H
#define AMIS_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "credentials.h"
#include "util.h"

struct sigv4_request {
	const char *method;       /* "GET", "POST", ... */
	const char *host;         /* Host header value; ":port" only when non-default */
	const char *path;         /* canonical URI, already URI-encoded; NULL or "" means "/" */
	const char *query;        /* canonical query string (sorted, encoded); NULL or "" = none */
	const char *content_type; /* NULL: no Content-Type header is sent, none is signed */
	const void *body;         /* may be NULL when body_len is 0 */
	size_t body_len;
	const char *region;  /* "eu-west-1" */
	const char *service; /* "ec2" */
	time_t now;          /* signing time (UTC seconds) */
};

/* The header values to send with the request. */
struct sigv4_result {
	char authorization[512]; /* Authorization: secret-derived, never log it */
	char amz_date[17];       /* X-Amz-Date: YYYYMMDDTHHMMSSZ */
	/* X-Amz-Security-Token: NULL, or points at creds->session_token */
	const char *security_token;
};

/*
 * Optional intermediate values, for tests and for comparing with another
 * signer.  The canonical request contains the session token: never log it.
 */
struct sigv4_debug {
	struct strbuf canonical_request;
	struct strbuf string_to_sign;
	char signed_headers[64];
};

void sigv4_debug_init(struct sigv4_debug *d);
void sigv4_debug_free(struct sigv4_debug *d);

/*
 * Signs req with creds.  debug may be NULL.  Returns 0, or -1 with err set
 * ("MissingCredentials" for empty credentials, "InvalidRequest" for a request
 * that cannot be signed, "CryptoError").  Never puts a secret in err.
 */
int sigv4_sign(const struct sigv4_request *req, const struct aws_credentials *creds,
               struct sigv4_result *out, struct sigv4_debug *debug, struct amis_err *err);

/* Lower-case hex SHA-256 of data; returns 0, -1 only if OpenSSL fails. */
int sigv4_sha256_hex(const void *data, size_t len, char out[65]);

/*
 * A query-string pre-signed GET request ("Authenticating Requests: Using
 * Query Parameters (AWS Signature Version 4)"), as botocore's SigV4QueryAuth
 * makes them, e.g. the PresignedUrl of an encrypted CopySnapshot: the
 * operation's parameters (names and values not yet encoded, no X-Amz-*) plus
 * X-Amz-Algorithm, X-Amz-Credential, X-Amz-Date, X-Amz-Expires,
 * X-Amz-SignedHeaders=host and X-Amz-Security-Token (with a session token),
 * sorted and URI-encoded, are the canonical query; only host is signed; the
 * payload hash is that of an empty body unless payload_hash says otherwise.  query_out gets that
 * query with
 * "&X-Amz-Signature=<hex>" appended (no leading '?').  It holds the session
 * token and a signature: never log it.  Same errors as sigv4_sign.
 */
struct sigv4_presign_request {
	const char *host; /* the Host of the URL; ":port" only when non-default */
	const char *path; /* canonical URI, already encoded; NULL or "" means "/" */
	const char *const *names;
	const char *const *values;
	size_t nparams;
	const char *region;
	const char *service;
	time_t now;
	long expires_s; /* X-Amz-Expires, 1..604800 */
	/* NULL: the SHA-256 of an empty body (EC2, as botocore); S3 uses "UNSIGNED-PAYLOAD" */
	const char *payload_hash;
};

int sigv4_presign(const struct sigv4_presign_request *req, const struct aws_credentials *creds,
                  struct strbuf *query_out, struct sigv4_debug *debug, struct amis_err *err);

#endif
