/*
 * sigv4.c - see sigv4.h.
 *
 * Reference: "Elements of an AWS API request signature" and "Create a signed
 * AWS API request" in the IAM User Guide.  Checked against the published
 * Signature Version 4 test suite and against botocore's SigV4Auth
 * (test/unit/test_sigv4.c, test/unit/test_sigv4_botocore.py).
 */
#include "sigv4.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#define SIGV4_ALGORITHM "AWS4-HMAC-SHA256"
#define SHA256_LEN 32

void sigv4_debug_init(struct sigv4_debug *d)
{
	sb_init(&d->canonical_request);
	sb_init(&d->string_to_sign);
	d->signed_headers[0] = '\0';
}

void sigv4_debug_free(struct sigv4_debug *d)
{
	sb_free(&d->canonical_request);
	sb_free(&d->string_to_sign);
	d->signed_headers[0] = '\0';
}

static void hex_encode(const unsigned char *in, size_t len, char *out)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 0xf];
	}
	out[2 * len] = '\0';
}

int sigv4_sha256_hex(const void *data, size_t len, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(len ? data : "", len, md, &mdlen, EVP_sha256(), NULL) ||
	    mdlen != SHA256_LEN) {
		out[0] = '\0';
		return -1;
	}
	hex_encode(md, mdlen, out);
	return 0;
}

static int hmac_sha256(const void *key, size_t keylen, const void *data, size_t len,
                       unsigned char out[SHA256_LEN])
{
	unsigned int outlen = 0;

	if (keylen > 0x7fffffff)
		return -1;
	if (!HMAC(EVP_sha256(), key, (int)keylen, data, len, out, &outlen) || outlen != SHA256_LEN)
		return -1;
	return 0;
}

/* A header value may not carry line breaks or other control characters. */
static bool printable(const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch < 0x20 && ch != '\t') || ch == 0x7f)
			return false;
	}
	return true;
}

/* No spaces either: the host, a path, a query, a credential id. */
static bool printable_nospace(const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch <= 0x20 || ch == 0x7f)
			return false;
	}
	return true;
}

/* Region and service names end up in the credential scope: [a-z0-9-]. */
static bool scope_name_ok(const char *s)
{
	size_t n = strlen(s);

	if (n == 0 || n > 63)
		return false;
	for (; *s; s++) {
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-'))
			return false;
	}
	return true;
}

static bool method_ok(const char *s)
{
	if (!*s || strlen(s) > 16)
		return false;
	for (; *s; s++) {
		if (*s < 'A' || *s > 'Z')
			return false;
	}
	return true;
}

/*
 * Appends "name:value\n" with the value trimmed and inner runs of blanks
 * collapsed to one space ("Trimall" in the SigV4 specification).
 */
static void append_canonical_header(struct strbuf *sb, const char *name, const char *value)
{
	const char *p = value;
	bool pending_space = false;

	sb_appends(sb, name);
	sb_append(sb, ":", 1);
	while (*p == ' ' || *p == '\t')
		p++;
	for (; *p; p++) {
		if (*p == ' ' || *p == '\t') {
			pending_space = true;
			continue;
		}
		if (pending_space)
			sb_append(sb, " ", 1);
		pending_space = false;
		sb_append(sb, p, 1);
	}
	sb_append(sb, "\n", 1);
}

static int check_request(const struct sigv4_request *req, const struct aws_credentials *creds,
                         struct amis_err *err)
{
	if (!creds || !creds->access_key_id[0] || !creds->secret_access_key[0])
		return err_set(err, AMIS_E_MISSING_CREDENTIALS, "no AWS credentials to sign with");
	if (!printable_nospace(creds->access_key_id))
		return err_set(err, AMIS_E_MISSING_CREDENTIALS,
		               "the access key id contains spaces or control characters");
	if (!printable(creds->session_token))
		return err_set(err, AMIS_E_MISSING_CREDENTIALS,
		               "the session token contains control characters");
	if (!req->method || !method_ok(req->method))
		return err_set(err, AMIS_E_INVALID_REQUEST, "invalid HTTP method for signing");
	if (!req->host || !req->host[0] || !printable_nospace(req->host))
		return err_set(err, AMIS_E_INVALID_REQUEST, "invalid host for signing");
	if (req->path && req->path[0] && (req->path[0] != '/' || !printable_nospace(req->path)))
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "the canonical URI must start with '/' and be URI-encoded");
	if (req->query && !printable_nospace(req->query))
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "the canonical query string must be encoded");
	if (req->content_type && !printable(req->content_type))
		return err_set(err, AMIS_E_INVALID_REQUEST, "invalid content type for signing");
	if (!req->region || !scope_name_ok(req->region))
		return err_set(err, AMIS_E_INVALID_REQUEST, "invalid region name \"%.64s\"",
		               req->region ? req->region : "");
	if (!req->service || !scope_name_ok(req->service))
		return err_set(err, AMIS_E_INVALID_REQUEST, "invalid service name \"%.64s\"",
		               req->service ? req->service : "");
	if (!req->body && req->body_len)
		return err_set(err, AMIS_E_INVALID_REQUEST, "body length without a body");
	return 0;
}

/* kSigning = HMAC(HMAC(HMAC(HMAC("AWS4" + secret, date), region), service), "aws4_request") */
static int derive_signing_key(const struct aws_credentials *creds, const char *date8,
                              const char *region, const char *service,
                              unsigned char key[SHA256_LEN])
{
	char ksecret[4 + sizeof(creds->secret_access_key)];
	unsigned char k1[SHA256_LEN], k2[SHA256_LEN], k3[SHA256_LEN];
	int rc = -1;
	int n;

	n = snprintf(ksecret, sizeof(ksecret), "AWS4%s", creds->secret_access_key);
	if (n < 0 || (size_t)n >= sizeof(ksecret))
		goto out;
	if (hmac_sha256(ksecret, (size_t)n, date8, strlen(date8), k1) < 0 ||
	    hmac_sha256(k1, sizeof(k1), region, strlen(region), k2) < 0 ||
	    hmac_sha256(k2, sizeof(k2), service, strlen(service), k3) < 0 ||
	    hmac_sha256(k3, sizeof(k3), "aws4_request", strlen("aws4_request"), key) < 0)
		goto out;
	rc = 0;
out:
	secure_zero(ksecret, sizeof(ksecret));
	secure_zero(k1, sizeof(k1));
	secure_zero(k2, sizeof(k2));
	secure_zero(k3, sizeof(k3));
	return rc;
}

/*
 * The last steps of both ways of signing: the string to sign (into sts) of
 * a canonical request made at amz_date, and its hex signature.
 */
static int sign_canonical(const struct strbuf *creq, const struct aws_credentials *creds,
                          const char *amz_date, const char *region, const char *service,
                          struct strbuf *sts, char signature[65], struct amis_err *err)
{
	unsigned char key[SHA256_LEN], sig[SHA256_LEN];
	char creq_hash[65], date8[9];
	int rc = -1;

	memcpy(date8, amz_date, 8);
	date8[8] = '\0';
	if (sigv4_sha256_hex(creq->data, creq->len, creq_hash) < 0)
		return err_set(err, AMIS_E_CRYPTO_ERROR, "SHA-256 of the canonical request failed");
	sb_appendf(sts, SIGV4_ALGORITHM "\n%s\n%s/%s/%s/aws4_request\n%s", amz_date, date8, region,
	           service, creq_hash);
	if (derive_signing_key(creds, date8, region, service, key) < 0 ||
	    hmac_sha256(key, sizeof(key), sts->data, sts->len, sig) < 0) {
		err_set(err, AMIS_E_CRYPTO_ERROR, "HMAC-SHA256 failed");
		goto out;
	}
	hex_encode(sig, sizeof(sig), signature);
	rc = 0;
out:
	secure_zero(key, sizeof(key));
	secure_zero(sig, sizeof(sig));
	return rc;
}

int sigv4_sign(const struct sigv4_request *req, const struct aws_credentials *creds,
               struct sigv4_result *out, struct sigv4_debug *debug, struct amis_err *err)
{
	struct strbuf creq, sts;
	char payload_hash[65], signature[65];
	char date8[9], signed_headers[64];
	bool has_token;
	struct tm tm;
	int n, rc = -1;

	memset(out, 0, sizeof(*out));
	if (check_request(req, creds, err) < 0)
		return -1;
	has_token = creds->session_token[0] != '\0';

	if (!gmtime_r(&req->now, &tm) || tm.tm_year + 1900 < 1970 || tm.tm_year + 1900 > 9999)
		return err_set(err, AMIS_E_INVALID_REQUEST, "signing time out of range");
	strftime(out->amz_date, sizeof(out->amz_date), "%Y%m%dT%H%M%SZ", &tm);
	memcpy(date8, out->amz_date, 8);
	date8[8] = '\0';

	if (sigv4_sha256_hex(req->body, req->body_len, payload_hash) < 0)
		return err_set(err, AMIS_E_CRYPTO_ERROR, "SHA-256 of the request body failed");

	snprintf(signed_headers, sizeof(signed_headers), "%shost;x-amz-date%s",
	         req->content_type ? "content-type;" : "",
	         has_token ? ";x-amz-security-token" : "");

	/* CanonicalRequest: method, URI, query, headers, signed headers, payload hash. */
	sb_init(&creq);
	sb_init(&sts);
	sb_appendf(&creq, "%s\n%s\n%s\n", req->method, req->path && req->path[0] ? req->path : "/",
	           req->query ? req->query : "");
	if (req->content_type)
		append_canonical_header(&creq, "content-type", req->content_type);
	append_canonical_header(&creq, "host", req->host);
	append_canonical_header(&creq, "x-amz-date", out->amz_date);
	if (has_token)
		append_canonical_header(&creq, "x-amz-security-token", creds->session_token);
	sb_appendf(&creq, "\n%s\n%s", signed_headers, payload_hash);

	if (sign_canonical(&creq, creds, out->amz_date, req->region, req->service, &sts, signature,
	                   err) < 0)
		goto out;

	n = snprintf(out->authorization, sizeof(out->authorization),
	             SIGV4_ALGORITHM " Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, "
	                             "Signature=%s",
	             creds->access_key_id, date8, req->region, req->service, signed_headers,
	             signature);
	if (n < 0 || (size_t)n >= sizeof(out->authorization)) {
		err_set(err, AMIS_E_INVALID_REQUEST, "the Authorization header would be too long");
		goto out;
	}
	out->security_token = has_token ? creds->session_token : NULL;
	if (debug) {
		sb_reset(&debug->canonical_request);
		sb_append(&debug->canonical_request, creq.data, creq.len);
		sb_reset(&debug->string_to_sign);
		sb_append(&debug->string_to_sign, sts.data, sts.len);
		snprintf(debug->signed_headers, sizeof(debug->signed_headers), "%s",
		         signed_headers);
	}
	rc = 0;
out:
	if (rc < 0)
		secure_zero(out->authorization, sizeof(out->authorization));
	secure_zero(signature, sizeof(signature));
	sb_free(&creq);
	sb_free(&sts);
	return rc;
}

/* ---- Query-string pre-signing. ---- */

/* RFC 3986 encoding as SigV4 wants it: all but A-Z a-z 0-9 - _ . ~ ("%20" for a space). */
static void uri_encode(struct strbuf *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') ||
		    (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			sb_append(out, s, 1);
		} else {
			char enc[3] = {'%', hex[ch >> 4], hex[ch & 0xf]};

			sb_append(out, enc, 3);
		}
	}
}

struct qpair {
	char *k, *v; /* encoded */
};

/* Sorted by encoded name, then value: "Task 2: Create a canonical request", step 3. */
static int qpair_cmp(const void *a, const void *b)
{
	const struct qpair *x = a, *y = b;
	int c = strcmp(x->k, y->k);

	return c ? c : strcmp(x->v, y->v);
}

static void qpair_set(struct qpair *q, const char *k, const char *v)
{
	struct strbuf sb;

	sb_init(&sb);
	uri_encode(&sb, k);
	q->k = xstrdup(sb_str(&sb));
	sb_reset(&sb);
	uri_encode(&sb, v ? v : "");
	q->v = xstrdup(sb_str(&sb));
	secure_zero(sb.data, sb.len);
	sb_free(&sb);
}

int sigv4_presign(const struct sigv4_presign_request *req, const struct aws_credentials *creds,
                  struct strbuf *query_out, struct sigv4_debug *debug, struct amis_err *err)
{
	struct sigv4_request hreq;
	struct strbuf creq, sts, cq;
	char amz_date[17], date8[9], scope[256], expires[24], signature[65];
	char empty_hash[65];
	struct qpair *q;
	struct tm tm;
	size_t i, n = 0;
	int rc = -1;

	if (!req)
		return err_set(err, AMIS_E_INVALID_REQUEST, "no request to pre-sign");
	/* The checks of a header-signed GET to the same host. */
	hreq = (struct sigv4_request){.method = "GET",
	                              .host = req->host,
	                              .path = req->path,
	                              .region = req->region,
	                              .service = req->service,
	                              .now = req->now};
	if (check_request(&hreq, creds, err) < 0)
		return -1;
	if (req->expires_s < 1 || req->expires_s > 604800)
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "a pre-signed URL expires after 1 s to 7 days");
	if (req->payload_hash && !printable_nospace(req->payload_hash))
		return err_set(err, AMIS_E_INVALID_REQUEST, "invalid payload hash");
	if (req->nparams && (!req->names || !req->values))
		return err_set(err, AMIS_E_INVALID_REQUEST, "parameters without names or values");
	for (i = 0; i < req->nparams; i++) {
		if (!req->names[i] || !req->names[i][0] ||
		    strncasecmp(req->names[i], "X-Amz-", 6) == 0)
			return err_set(err, AMIS_E_INVALID_REQUEST,
			               "invalid parameter name to pre-sign");
	}
	if (!gmtime_r(&req->now, &tm) || tm.tm_year + 1900 < 1970 || tm.tm_year + 1900 > 9999)
		return err_set(err, AMIS_E_INVALID_REQUEST, "signing time out of range");
	strftime(amz_date, sizeof(amz_date), "%Y%m%dT%H%M%SZ", &tm);
	memcpy(date8, amz_date, 8);
	date8[8] = '\0';
	snprintf(scope, sizeof(scope), "%s/%s/%s/%s/aws4_request", creds->access_key_id, date8,
	         req->region, req->service);
	snprintf(expires, sizeof(expires), "%ld", req->expires_s);

	q = xcalloc(req->nparams + 6, sizeof(*q));
	for (i = 0; i < req->nparams; i++)
		qpair_set(&q[n++], req->names[i], req->values[i]);
	qpair_set(&q[n++], "X-Amz-Algorithm", SIGV4_ALGORITHM);
	qpair_set(&q[n++], "X-Amz-Credential", scope);
	qpair_set(&q[n++], "X-Amz-Date", amz_date);
	qpair_set(&q[n++], "X-Amz-Expires", expires);
	qpair_set(&q[n++], "X-Amz-SignedHeaders", "host");
	if (creds->session_token[0])
		qpair_set(&q[n++], "X-Amz-Security-Token", creds->session_token);
	qsort(q, n, sizeof(*q), qpair_cmp);

	sb_init(&cq);
	sb_init(&creq);
	sb_init(&sts);
	for (i = 0; i < n; i++)
		sb_appendf(&cq, "%s%s=%s", i ? "&" : "", q[i].k, q[i].v);
	if (sigv4_sha256_hex("", 0, empty_hash) < 0) {
		err_set(err, AMIS_E_CRYPTO_ERROR, "SHA-256 failed");
		goto out;
	}
	/* Only host is signed; the body is empty. */
	sb_appendf(&creq, "GET\n%s\n%s\n", req->path && req->path[0] ? req->path : "/",
	           sb_str(&cq));
	append_canonical_header(&creq, "host", req->host);
	sb_appendf(&creq, "\nhost\n%s", req->payload_hash ? req->payload_hash : empty_hash);
	if (sign_canonical(&creq, creds, amz_date, req->region, req->service, &sts, signature,
	                   err) < 0)
		goto out;
	sb_append(query_out, cq.data, cq.len);
	sb_appendf(query_out, "&X-Amz-Signature=%s", signature);
	if (debug) {
		sb_reset(&debug->canonical_request);
		sb_append(&debug->canonical_request, creq.data, creq.len);
		sb_reset(&debug->string_to_sign);
		sb_append(&debug->string_to_sign, sts.data, sts.len);
		snprintf(debug->signed_headers, sizeof(debug->signed_headers), "host");
	}
	rc = 0;
out:
	for (i = 0; i < n; i++) {
		secure_zero(q[i].v, strlen(q[i].v));
		free(q[i].k);
		free(q[i].v);
	}
	free(q);
	secure_zero(signature, sizeof(signature));
	if (cq.data)
		secure_zero(cq.data, cq.len);
	if (creq.data)
		secure_zero(creq.data, creq.len);
	sb_free(&cq);
	sb_free(&creq);
	sb_free(&sts);
	return rc;
}
