/*
 * imds.c - see imds.h.
 *
 * The protocol is the one described in "Use the Instance Metadata Service
 * to access instance metadata" (EC2 User Guide), IMDSv2 section:
 *   PUT /latest/api/token         X-aws-ec2-metadata-token-ttl-seconds: N
 *   GET /latest/...               X-aws-ec2-metadata-token: <token>
 * A GET answered 401 means the token expired or was not accepted: get a new
 * one and try once more.  A PUT answered 403 means IMDS is turned off for
 * this instance.
 */
#include "imds.h"
#include "http.h"
#include "log.h"

#include <ctype.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define IMDS_TOKEN_PATH "/latest/api/token"
#define IMDS_IDENTITY_PATH "/latest/dynamic/instance-identity/document"
#define IMDS_ROLE_PATH "/latest/meta-data/iam/security-credentials/"
#define IMDS_MAX_TOKEN 512
#define IMDS_MAX_DOCUMENT (64 * 1024)

struct imds_client {
	struct http_client *http;
	char endpoint[256];
	char endpoint_error[320]; /* non-empty: endpoint unusable, say why on use */
	bool disabled;            /* AWS_EC2_METADATA_DISABLED=true */
	long connect_timeout_ms;
	long timeout_ms;
	int token_ttl_s;
	char token[IMDS_MAX_TOKEN]; /* empty: none */
	long long token_renew_us;   /* mono_usec() after which we get a new one */
};

static const char *process_getenv(void *ctx, const char *name)
{
	return getenv(name);
}

const char *amis_env_get(const struct amis_env *env, const char *name)
{
	const char *v = env ? env->get(env->ctx, name) : process_getenv(NULL, name);

	return v && *v ? v : NULL;
}

/* "http://host[:port]" with no whitespace, control characters or path. */
static int set_endpoint(struct imds_client *c, const char *ep, const char *origin)
{
	size_t n = strlen(ep);
	const char *host;

	while (n > 0 && ep[n - 1] == '/')
		n--;
	if (strncmp(ep, "http://", 7) == 0)
		host = ep + 7;
	else if (strncmp(ep, "https://", 8) == 0)
		host = ep + 8;
	else
		host = NULL;
	if (!host || (size_t)(host - ep) >= n || n >= sizeof(c->endpoint))
		goto bad;
	for (const char *p = ep; p < ep + n; p++) {
		if (!isgraph((unsigned char)*p) || (p >= host && (*p == '/' || *p == '?')))
			goto bad;
	}
	memcpy(c->endpoint, ep, n);
	c->endpoint[n] = '\0';
	return 0;
bad:
	snprintf(
	    c->endpoint_error, sizeof(c->endpoint_error),
	    "invalid IMDS endpoint from %s: expected http://host[:port] (at most %zu characters)",
	    origin, sizeof(c->endpoint) - 1);
	snprintf(c->endpoint, sizeof(c->endpoint), "%s", IMDS_DEFAULT_ENDPOINT);
	return -1;
}

struct imds_client *imds_client_new_env(const char *endpoint, const struct amis_env *env)
{
	struct imds_client *c = xcalloc(1, sizeof(*c));
	const char *v;

	c->http = http_client_new();
	if (!c->http) {
		free(c);
		return NULL;
	}
	c->connect_timeout_ms = IMDS_DEFAULT_CONNECT_TIMEOUT_MS;
	c->timeout_ms = IMDS_DEFAULT_TIMEOUT_MS;
	c->token_ttl_s = IMDS_DEFAULT_TOKEN_TTL_S;

	/* As in botocore: the value "true", in any case, disables IMDS. */
	v = amis_env_get(env, "AWS_EC2_METADATA_DISABLED");
	c->disabled = v && strcasecmp(v, "true") == 0;

	if (endpoint) {
		set_endpoint(c, endpoint, "the configuration");
	} else if ((v = amis_env_get(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT"))) {
		set_endpoint(c, v, "AWS_EC2_METADATA_SERVICE_ENDPOINT");
	} else {
		v = amis_env_get(env, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE");
		set_endpoint(c,
		             v && strcasecmp(v, "IPv6") == 0 ? IMDS_DEFAULT_ENDPOINT_IPV6
		                                             : IMDS_DEFAULT_ENDPOINT,
		             "the default");
	}
	return c;
}

struct imds_client *imds_client_new(const char *endpoint)
{
	return imds_client_new_env(endpoint, NULL);
}

void imds_client_free(struct imds_client *c)
{
	if (!c)
		return;
	http_client_free(c->http);
	secure_zero(c->token, sizeof(c->token));
	free(c);
}

const char *imds_endpoint(const struct imds_client *c)
{
	return c->endpoint;
}

void imds_set_timeouts(struct imds_client *c, long connect_timeout_ms, long timeout_ms)
{
	if (connect_timeout_ms > 0)
		c->connect_timeout_ms = connect_timeout_ms;
	if (timeout_ms > 0)
		c->timeout_ms = timeout_ms;
}

void imds_set_token_ttl(struct imds_client *c, int seconds)
{
	if (seconds >= 1 && seconds <= IMDS_DEFAULT_TOKEN_TTL_S)
		c->token_ttl_s = seconds;
}

static void drop_token(struct imds_client *c)
{
	secure_zero(c->token, sizeof(c->token));
	c->token_renew_us = 0;
}

/* Milliseconds left before deadline (mono usec), at least 1. */
static long remaining_ms(long long deadline_us)
{
	long long left = (deadline_us - mono_usec()) / 1000;

	return left < 1 ? 1 : (long)left;
}

/*
 * One HTTP exchange with IMDS.  Transport failures become ImdsUnavailable;
 * the message names the endpoint and path but never header values.
 */
static int imds_http(struct imds_client *c, const char *method, const char *path,
                     const struct http_header *hdrs, size_t nhdrs, long long deadline_us,
                     struct http_response *resp, struct amis_err *err)
{
	char url[512];
	struct http_request req = {0};
	long left = remaining_ms(deadline_us);

	snprintf(url, sizeof(url), "%s%s", c->endpoint, path);
	req.method = method;
	req.url = url;
	req.headers = hdrs;
	req.nheaders = nhdrs;
	req.timeout_ms = left;
	req.connect_timeout_ms = c->connect_timeout_ms < left ? c->connect_timeout_ms : left;
	if (http_perform(c->http, &req, resp, err) == 0)
		return 0;
	if (err_is(err, AMIS_E_TIMEOUT))
		return err_set(err, AMIS_E_IMDS_UNAVAILABLE,
		               "IMDS at %s timed out (%s %s, %ld ms): %s", c->endpoint, method,
		               path, left, err->msg);
	return err_set(err, AMIS_E_IMDS_UNAVAILABLE, "IMDS at %s is unreachable (%s %s): %s",
	               c->endpoint, method, path, err->msg);
}

static int fetch_token(struct imds_client *c, long long deadline_us, struct amis_err *err)
{
	char ttl[16];
	struct http_header h = {"X-aws-ec2-metadata-token-ttl-seconds", ttl};
	struct http_response resp;
	long long started = mono_usec();
	long long margin_us;
	size_t n;
	int rc = -1;

	drop_token(c);
	snprintf(ttl, sizeof(ttl), "%d", c->token_ttl_s);
	http_response_init(&resp);
	if (imds_http(c, "PUT", IMDS_TOKEN_PATH, &h, 1, deadline_us, &resp, err) < 0) {
		err_prefix(err, "could not get an IMDSv2 session token");
		goto out;
	}
	if (resp.status == 403) {
		err_set(err, AMIS_E_IMDS_UNAVAILABLE,
		        "IMDS at %s refused a session token (HTTP 403): the instance metadata "
		        "service is turned off for this instance",
		        c->endpoint);
		goto out;
	}
	if (resp.status != 200) {
		err_set(err, AMIS_E_IMDS_ERROR, "IMDS at %s answered PUT %s with HTTP %ld",
		        c->endpoint, IMDS_TOKEN_PATH, resp.status);
		goto out;
	}
	n = resp.body.len;
	while (n > 0 && isspace((unsigned char)resp.body.data[n - 1]))
		n--;
	if (n == 0 || n >= sizeof(c->token)) {
		err_set(err, AMIS_E_IMDS_ERROR, "IMDS at %s returned a session token of %zu bytes",
		        c->endpoint, n);
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		if (!isgraph((unsigned char)resp.body.data[i])) {
			err_set(err, AMIS_E_IMDS_ERROR,
			        "IMDS at %s returned a session token with invalid characters",
			        c->endpoint);
			goto out;
		}
	}
	memcpy(c->token, resp.body.data, n);
	c->token[n] = '\0';
	/* Renew a little before IMDS would: a tenth of the TTL, at most a minute. */
	margin_us = (long long)c->token_ttl_s * 100000LL;
	if (margin_us > 60000000LL)
		margin_us = 60000000LL;
	c->token_renew_us = started + (long long)c->token_ttl_s * 1000000LL - margin_us;
	log_debug("got an IMDSv2 session token from %s (ttl %d s)", c->endpoint, c->token_ttl_s);
	rc = 0;
out:
	http_response_free(&resp);
	return rc;
}

/*
 * GET path with a valid token; returns 0 with *status set for any HTTP
 * answer but 401 (after one renewal), -1 on failure.
 */
static int imds_request(struct imds_client *c, const char *path, long timeout_ms,
                        struct strbuf *out, long *status, struct amis_err *err)
{
	long long deadline_us;
	struct http_response resp;
	struct http_header h = {"X-aws-ec2-metadata-token", c->token};

	if (c->endpoint_error[0])
		return err_set(err, AMIS_E_IMDS_ERROR, "%s", c->endpoint_error);
	if (c->disabled)
		return err_set(err, AMIS_E_IMDS_UNAVAILABLE,
		               "IMDS is disabled by AWS_EC2_METADATA_DISABLED=true");
	if (!path || path[0] != '/')
		return err_set(err, AMIS_E_IMDS_ERROR, "IMDS path must start with '/'");
	deadline_us = mono_usec() + (timeout_ms > 0 ? timeout_ms : c->timeout_ms) * 1000LL;

	for (int attempt = 0; attempt < 2; attempt++) {
		if (!c->token[0] || mono_usec() >= c->token_renew_us) {
			if (fetch_token(c, deadline_us, err) < 0)
				return -1;
		}
		http_response_init(&resp);
		if (imds_http(c, "GET", path, &h, 1, deadline_us, &resp, err) < 0) {
			http_response_free(&resp);
			return -1;
		}
		if (resp.status == 401) {
			/* Expired or revoked session token: one new one, one retry. */
			log_debug("IMDS answered GET %s with 401, renewing the session token",
			          path);
			http_response_free(&resp);
			drop_token(c);
			continue;
		}
		*status = resp.status;
		sb_reset(out);
		sb_append(out, sb_str(&resp.body), resp.body.len);
		http_response_free(&resp);
		return 0;
	}
	return err_set(err, AMIS_E_IMDS_ERROR,
	               "IMDS at %s rejected a freshly issued session token (HTTP 401 for GET %s)",
	               c->endpoint, path);
}

int imds_get(struct imds_client *c, const char *path, long timeout_ms, struct strbuf *out,
             struct amis_err *err)
{
	long status = 0;

	if (imds_request(c, path, timeout_ms, out, &status, err) < 0)
		return -1;
	if (status != 200) {
		sb_reset(out);
		return err_set(err, AMIS_E_IMDS_ERROR, "IMDS at %s answered GET %s with HTTP %ld",
		               c->endpoint, path, status);
	}
	return 0;
}

bool imds_valid_region(const char *s)
{
	size_t n = strlen(s);

	/* us-east-1, eu-central-2, us-gov-west-1, cn-north-1, ap-southeast-4 */
	if (n < 4 || n >= sizeof(((struct imds_identity *)0)->region))
		return false;
	if (!islower((unsigned char)s[0]) || !isdigit((unsigned char)s[n - 1]))
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!(islower((unsigned char)s[i]) || isdigit((unsigned char)s[i]) || s[i] == '-'))
			return false;
		if (s[i] == '-' && s[i + 1] == '-')
			return false;
	}
	return strchr(s, '-') != NULL;
}

bool imds_valid_instance_id(const char *s)
{
	size_t n;

	/* i- followed by 8 (old) or 17 hex digits. */
	if (strncmp(s, "i-", 2) != 0)
		return false;
	n = strspn(s + 2, "0123456789abcdef");
	return s[2 + n] == '\0' && (n == 8 || n == 17);
}

bool imds_valid_role_name(const char *s)
{
	size_t n = strlen(s);

	/* IAM role names: 1..64 of [A-Za-z0-9+=,.@_-]. */
	if (n == 0 || n > 64)
		return false;
	return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+=,.@_-") ==
	       n;
}

/* Parses a JSON object with no trailing garbage; *obj owned by the caller. */
static int parse_json_object(const char *json, size_t len, const char *what,
                             struct json_object **obj, struct amis_err *err)
{
	struct json_tokener *tok;
	enum json_tokener_error jerr;
	size_t end;

	*obj = NULL;
	if (len > IMDS_MAX_DOCUMENT)
		return err_set(err, AMIS_E_IMDS_ERROR, "%s is too large (%zu bytes)", what, len);
	tok = json_tokener_new_ex(16);
	if (!tok)
		return err_set(err, AMIS_E_IMDS_ERROR, "out of memory parsing %s", what);
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	*obj = json_tokener_parse_ex(tok, json, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!*obj) {
		return err_set(err, AMIS_E_IMDS_ERROR, "%s is not valid JSON: %s", what,
		               jerr == json_tokener_continue ? "truncated"
		                                             : json_tokener_error_desc(jerr));
	}
	while (end < len && isspace((unsigned char)json[end]))
		end++;
	if (end < len || !json_object_is_type(*obj, json_type_object)) {
		json_object_put(*obj);
		*obj = NULL;
		return err_set(err, AMIS_E_IMDS_ERROR, "%s is not a single JSON object", what);
	}
	return 0;
}

/* Copies an optional string member; -1 if present but not a fitting string. */
static int copy_member(struct json_object *o, const char *key, char *dst, size_t dstsz,
                       bool required, struct amis_err *err)
{
	struct json_object *m;
	const char *s;

	dst[0] = '\0';
	if (!json_object_object_get_ex(o, key, &m) || json_object_is_type(m, json_type_null)) {
		if (required)
			return err_set(err, AMIS_E_IMDS_ERROR,
			               "instance identity document has no \"%s\"", key);
		return 0;
	}
	if (!json_object_is_type(m, json_type_string))
		return err_set(err, AMIS_E_IMDS_ERROR,
		               "instance identity document: \"%s\" is not a string", key);
	s = json_object_get_string(m);
	if ((size_t)json_object_get_string_len(m) != strlen(s) ||
	    strlcpy_checked(dst, s, dstsz) < 0)
		return err_set(err, AMIS_E_IMDS_ERROR,
		               "instance identity document: \"%s\" is too long or contains NUL",
		               key);
	return 0;
}

int imds_parse_identity(const char *json, size_t len, struct imds_identity *id,
                        struct amis_err *err)
{
	struct json_object *o;
	int rc = -1;

	memset(id, 0, sizeof(*id));
	if (parse_json_object(json, len, "instance identity document", &o, err) < 0)
		return -1;
	if (copy_member(o, "instanceId", id->instance_id, sizeof(id->instance_id), true, err) ||
	    copy_member(o, "region", id->region, sizeof(id->region), true, err) ||
	    copy_member(o, "availabilityZone", id->availability_zone, sizeof(id->availability_zone),
	                false, err) ||
	    copy_member(o, "accountId", id->account_id, sizeof(id->account_id), false, err) ||
	    copy_member(o, "architecture", id->architecture, sizeof(id->architecture), false,
	                err) ||
	    copy_member(o, "imageId", id->image_id, sizeof(id->image_id), false, err) ||
	    copy_member(o, "instanceType", id->instance_type, sizeof(id->instance_type), false,
	                err))
		goto out;
	if (!imds_valid_instance_id(id->instance_id)) {
		err_set(err, AMIS_E_IMDS_ERROR,
		        "instance identity document: \"instanceId\" is not an instance id");
		goto out;
	}
	if (!imds_valid_region(id->region)) {
		err_set(err, AMIS_E_IMDS_ERROR,
		        "instance identity document: \"region\" is not a region");
		goto out;
	}
	rc = 0;
out:
	json_object_put(o);
	if (rc < 0)
		memset(id, 0, sizeof(*id));
	return rc;
}

/* GET a one-line meta-data value, trimmed, into dst. */
static int get_line(struct imds_client *c, const char *path, char *dst, size_t dstsz,
                    struct amis_err *err)
{
	struct strbuf sb;
	char *s, *e;
	int rc = -1;

	sb_init(&sb);
	if (imds_get(c, path, 0, &sb, err) < 0)
		goto out;
	s = sb.data ? sb.data : "";
	while (isspace((unsigned char)*s))
		s++;
	e = s + strcspn(s, "\r\n");
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	*e = '\0';
	if (strlcpy_checked(dst, s, dstsz) < 0) {
		err_set(err, AMIS_E_IMDS_ERROR, "IMDS value of %s is too long", path);
		goto out;
	}
	rc = 0;
out:
	sb_free(&sb);
	return rc;
}

static int identity_fallback(struct imds_client *c, struct imds_identity *id, struct amis_err *err)
{
	memset(id, 0, sizeof(*id));
	if (get_line(c, "/latest/meta-data/instance-id", id->instance_id, sizeof(id->instance_id),
	             err) ||
	    get_line(c, "/latest/meta-data/placement/region", id->region, sizeof(id->region), err))
		return -1;
	if (!imds_valid_instance_id(id->instance_id))
		return err_set(err, AMIS_E_IMDS_ERROR,
		               "IMDS meta-data/instance-id is not an instance id");
	if (!imds_valid_region(id->region))
		return err_set(err, AMIS_E_IMDS_ERROR,
		               "IMDS meta-data/placement/region is not a region");
	/* Informational only: do not fail the identity for it. */
	if (get_line(c, "/latest/meta-data/placement/availability-zone", id->availability_zone,
	             sizeof(id->availability_zone), err) < 0)
		id->availability_zone[0] = '\0';
	err_clear(err);
	return 0;
}

int imds_get_identity(struct imds_client *c, struct imds_identity *id, struct amis_err *err)
{
	struct strbuf sb;
	int rc;

	sb_init(&sb);
	rc = imds_get(c, IMDS_IDENTITY_PATH, 0, &sb, err);
	if (rc == 0)
		rc = imds_parse_identity(sb_str(&sb), sb.len, id, err);
	sb_free(&sb);
	if (rc == 0)
		return 0;
	if (err_is(err, AMIS_E_IMDS_UNAVAILABLE))
		return -1;
	log_warn("instance identity document unusable (%s), falling back to meta-data", err->msg);
	if (identity_fallback(c, id, err) < 0)
		return err_prefix(err, "could not determine the instance identity");
	return 0;
}

int imds_get_role_name(struct imds_client *c, char *role, size_t rolesz, struct amis_err *err)
{
	struct strbuf sb;
	long status = 0;
	int rc = -1;
	char *s, *e;

	sb_init(&sb);
	if (imds_request(c, IMDS_ROLE_PATH, 0, &sb, &status, err) < 0)
		goto out;
	if (status == 404) {
		err_set(err, AMIS_E_IMDS_ERROR,
		        "no IAM role is attached to this instance (IMDS %s answered 404)",
		        IMDS_ROLE_PATH);
		goto out;
	}
	if (status != 200) {
		err_set(err, AMIS_E_IMDS_ERROR, "IMDS at %s answered GET %s with HTTP %ld",
		        c->endpoint, IMDS_ROLE_PATH, status);
		goto out;
	}
	/* One role per line; an instance profile holds exactly one role. */
	s = sb.data ? sb.data : "";
	while (isspace((unsigned char)*s))
		s++;
	e = s + strcspn(s, "\r\n");
	while (e > s && isspace((unsigned char)e[-1]))
		e--;
	*e = '\0';
	if (!*s) {
		err_set(err, AMIS_E_IMDS_ERROR,
		        "no IAM role is attached to this instance (empty list)");
		goto out;
	}
	if (!imds_valid_role_name(s) || strlcpy_checked(role, s, rolesz) < 0) {
		err_set(err, AMIS_E_IMDS_ERROR, "IMDS returned an invalid IAM role name");
		goto out;
	}
	rc = 0;
out:
	sb_free(&sb);
	return rc;
}

int imds_get_role_credentials_json(struct imds_client *c, const char *role, struct strbuf *out,
                                   struct amis_err *err)
{
	char path[160];

	if (!imds_valid_role_name(role))
		return err_set(err, AMIS_E_IMDS_ERROR, "invalid IAM role name");
	snprintf(path, sizeof(path), "%s%s", IMDS_ROLE_PATH, role);
	if (imds_get(c, path, 0, out, err) < 0)
		return err_prefix(err, "could not get the credentials of role %s", role);
	return 0;
}
