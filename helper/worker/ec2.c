/*
 * ec2.c - see ec2.h.
 *
 * Request and response shapes follow the Amazon EC2 API Reference (API
 * version 2016-11-15) and botocore's EC2 service model: CreateSnapshots
 * (InstanceSpecification.*, TagSpecification.N.*, CopyTagsFromSource;
 * response snapshotSet/item with <state>), DescribeSnapshots (SnapshotId.N;
 * Filter.N.Name/Value.N, Owner.N; snapshotSet/item with <status>), CreateTags (ResourceId.N,
 * Tag.N.Key/Value; response <return>), DescribeInstances (InstanceId.N; reservationSet/item/
 * instancesSet/item).
 */
#include "ec2.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"
#include "sigv4.h"
#include "xml.h"

struct ec2_client {
	struct http_client *http;
	char url[600];  /* what libcurl connects to */
	char host[300]; /* Host header, signed */
	char path[256]; /* canonical URI, "/" usually */
	char region[64];
};

/* ---- Parameters and form encoding. ---- */

void ec2_params_init(struct ec2_params *p)
{
	p->items = NULL;
	p->n = 0;
	p->cap = 0;
}

static void free_wiped(char *s)
{
	if (s) {
		secure_zero(s, strlen(s));
		free(s);
	}
}

void ec2_params_free(struct ec2_params *p)
{
	size_t i;

	for (i = 0; i < p->n; i++) {
		free_wiped(p->items[i].name);
		free_wiped(p->items[i].value);
	}
	free(p->items);
	ec2_params_init(p);
}

static void params_push(struct ec2_params *p, char *name, const char *value)
{
	if (p->n == p->cap) {
		p->cap = p->cap ? p->cap * 2 : 16;
		p->items = xrealloc(p->items, p->cap * sizeof(*p->items));
	}
	p->items[p->n].name = name;
	p->items[p->n].value = xstrdup(value ? value : "");
	p->n++;
}

void ec2_params_add(struct ec2_params *p, const char *name, const char *value)
{
	params_push(p, xstrdup(name), value);
}

void ec2_params_addf(struct ec2_params *p, const char *value, const char *name_fmt, ...)
{
	struct strbuf name;
	va_list ap;

	sb_init(&name);
	va_start(ap, name_fmt);
	sb_vappendf(&name, name_fmt, ap);
	va_end(ap);
	params_push(p, xstrdup(sb_str(&name)), value);
	sb_free(&name);
}

void ec2_params_set(struct ec2_params *p, const char *name, const char *value)
{
	size_t i;

	for (i = 0; i < p->n; i++) {
		if (strcmp(p->items[i].name, name) == 0) {
			free_wiped(p->items[i].value);
			p->items[i].value = xstrdup(value ? value : "");
			return;
		}
	}
	ec2_params_add(p, name, value);
}

const char *ec2_params_get(const struct ec2_params *p, const char *name)
{
	size_t i;

	for (i = 0; p && i < p->n; i++) {
		if (strcmp(p->items[i].name, name) == 0)
			return p->items[i].value;
	}
	return NULL;
}

void ec2_params_tag_spec(struct ec2_params *p, size_t spec, const char *type,
                         const struct ec2_tag *tags, size_t ntags)
{
	size_t i;

	if (!ntags)
		return;
	ec2_params_addf(p, type, "TagSpecification.%zu.ResourceType", spec);
	for (i = 0; i < ntags; i++) {
		ec2_params_addf(p, tags[i].key, "TagSpecification.%zu.Tag.%zu.Key", spec, i + 1);
		ec2_params_addf(p, tags[i].value ? tags[i].value : "",
		                "TagSpecification.%zu.Tag.%zu.Value", spec, i + 1);
	}
}

static void percent_encode(struct strbuf *out, const char *s, bool space_plus)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == ' ' && space_plus) {
			sb_append(out, "+", 1);
		} else if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
			sb_append(out, s, 1);
		} else {
			char enc[3] = {'%', hex[ch >> 4], hex[ch & 0xf]};

			sb_append(out, enc, 3);
		}
	}
}

void ec2_uri_encode(struct strbuf *out, const char *s)
{
	percent_encode(out, s, false);
}

/*
 * The body is application/x-www-form-urlencoded, where a space is '+': what
 * botocore and the AWS CLI send, so what every EC2-compatible service is
 * tested with.  (AWS takes %20 as well; moto checks the signature over a
 * body it re-encodes with '+', and refuses a %20 body as AuthFailure.)
 */
void ec2_form_encode(const char *action, const struct ec2_params *p, struct strbuf *out)
{
	size_t i;

	sb_appends(out, "Action=");
	percent_encode(out, action, true);
	sb_appends(out, "&Version=" EC2_API_VERSION);
	for (i = 0; p && i < p->n; i++) {
		sb_append(out, "&", 1);
		percent_encode(out, p->items[i].name, true);
		sb_append(out, "=", 1);
		percent_encode(out, p->items[i].value, true);
	}
}

/* ---- The client. ---- */

static bool unreserved_or_slash(char ch)
{
	return isalnum((unsigned char)ch) || strchr("-_.~/", ch);
}

int ec2_endpoint_check(const char *endpoint_url, char *host, size_t hostsz, struct amis_err *err)
{
	char name[256], port_s[8] = "";
	const char *p, *auth_end, *h_end;
	bool https;
	size_t n, i;
	long port = 0;

	if (hostsz)
		host[0] = '\0';
	if (!endpoint_url)
		return err_set(err, AMIS_E_INVALID_ENDPOINT, "no EC2 endpoint URL");
	if (strncasecmp(endpoint_url, "https://", 8) == 0) {
		https = true;
		p = endpoint_url + 8;
	} else if (strncasecmp(endpoint_url, "http://", 7) == 0) {
		https = false;
		p = endpoint_url + 7;
	} else {
		return err_set(err, AMIS_E_INVALID_ENDPOINT,
		               "EC2 endpoint URL \"%.200s\" must start with https:// or http://",
		               endpoint_url);
	}
	auth_end = p + strcspn(p, "/");
	if (strpbrk(p, "?#"))
		return err_set(err, AMIS_E_INVALID_ENDPOINT,
		               "EC2 endpoint URL \"%.200s\" must not have a query or fragment",
		               endpoint_url);
	if (memchr(p, '@', (size_t)(auth_end - p)))
		return err_set(err, AMIS_E_INVALID_ENDPOINT,
		               "EC2 endpoint URL must not contain user information");
	for (i = 0; auth_end[i]; i++) {
		if (!unreserved_or_slash(auth_end[i]))
			return err_set(err, AMIS_E_INVALID_ENDPOINT,
			               "EC2 endpoint URL \"%.200s\" has an unsupported path",
			               endpoint_url);
	}

	/* host, [v6 address] or host:port */
	if (*p == '[') {
		h_end = memchr(p, ']', (size_t)(auth_end - p));
		if (!h_end)
			goto bad_host;
		h_end++;
	} else {
		h_end = p + strcspn(p, ":/");
		if (h_end > auth_end)
			h_end = auth_end;
	}
	n = (size_t)(h_end - p);
	if (n == 0 || n >= sizeof(name))
		goto bad_host;
	for (i = 0; i < n; i++) {
		char ch = (char)tolower((unsigned char)p[i]);

		if (!isalnum((unsigned char)ch) && !strchr(p[0] == '[' ? "[]:." : "-.", ch))
			goto bad_host;
		name[i] = ch;
	}
	name[n] = '\0';
	if (h_end < auth_end) {
		char *end;

		if (*h_end != ':' || auth_end - h_end < 2 || auth_end - h_end > 6)
			goto bad_host;
		memcpy(port_s, h_end + 1, (size_t)(auth_end - h_end - 1));
		port_s[auth_end - h_end - 1] = '\0';
		port = strtol(port_s, &end, 10);
		if (*end || !isdigit((unsigned char)port_s[0]) || port < 1 || port > 65535)
			goto bad_host;
	}
	/* Like botocore's _host_from_url: lower case, no default port. */
	if (port && port != (https ? 443 : 80))
		n = (size_t)snprintf(host, hostsz, "%s:%ld", name, port);
	else
		n = (size_t)snprintf(host, hostsz, "%s", name);
	if (n >= hostsz)
		goto bad_host;
	return 0;
bad_host:
	if (hostsz)
		host[0] = '\0';
	return err_set(err, AMIS_E_INVALID_ENDPOINT,
	               "EC2 endpoint URL \"%.200s\" has an invalid host", endpoint_url);
}

struct ec2_client *ec2_client_new(const char *endpoint_url, const char *region)
{
	struct ec2_client *c;
	struct amis_err err;
	const char *p, *path;
	int n;

	c = xcalloc(1, sizeof(*c));
	if (ec2_endpoint_check(endpoint_url, c->host, sizeof(c->host), &err) < 0 || !region ||
	    !region[0] || strlcpy_checked(c->region, region, sizeof(c->region)) < 0)
		goto fail;
	p = strstr(endpoint_url, "://") + 3;
	path = p + strcspn(p, "/");
	if (strlcpy_checked(c->path, *path ? path : "/", sizeof(c->path)) < 0)
		goto fail;
	n = snprintf(c->url, sizeof(c->url), "%s://%s%s",
	             strncasecmp(endpoint_url, "https", 5) == 0 ? "https" : "http", c->host,
	             c->path);
	if (n < 0 || (size_t)n >= sizeof(c->url))
		goto fail;
	c->http = http_client_new();
	if (!c->http)
		goto fail;
	return c;
fail:
	free(c);
	return NULL;
}

void ec2_client_set_abort_fd(struct ec2_client *c, int fd)
{
	http_client_set_abort_fd(c->http, fd);
}

void ec2_client_set_max_idle(struct ec2_client *c, long seconds)
{
	http_client_set_max_idle(c->http, seconds);
}

void ec2_client_free(struct ec2_client *c)
{
	if (!c)
		return;
	http_client_free(c->http);
	free(c);
}

const char *ec2_client_host(const struct ec2_client *c)
{
	return c->host;
}

/* ---- Errors. ---- */

/* Copies text into dst, control characters replaced by spaces. */
static void printable_copy(char *dst, size_t dstsz, const char *src)
{
	size_t i;

	for (i = 0; src[i] && i + 1 < dstsz; i++) {
		unsigned char ch = (unsigned char)src[i];

		dst[i] = (ch < 0x20 || ch == 0x7f) ? ' ' : (char)ch;
	}
	if (dstsz)
		dst[i] = '\0';
}

/* err = code, "<message> (request id <id>)", the tail never cut off. */
static int set_api_error(struct amis_err *err, const char *code, const char *message,
                         const char *request_id)
{
	char tail[160], idbuf[100], clean[sizeof(err->msg)];
	size_t room, mlen, i, o = 0;

	printable_copy(idbuf, sizeof(idbuf), request_id ? request_id : "");
	if (idbuf[0])
		snprintf(tail, sizeof(tail), " (request id %s)", idbuf);
	else
		snprintf(tail, sizeof(tail), " (no request id)");
	printable_copy(clean, sizeof(clean), message && message[0] ? message : "(no message)");
	room = sizeof(err->msg) - strlen(tail) - 1;
	mlen = strlen(clean);
	if (mlen > room) {
		mlen = room;
		/* Do not cut a UTF-8 sequence in half. */
		while (mlen > 0 && ((unsigned char)clean[mlen] & 0xc0) == 0x80)
			mlen--;
	}
	/* Codes are identifiers such as "InvalidInstanceID.NotFound". */
	for (i = 0; code[i] && o + 1 < sizeof(err->code); i++) {
		if (isalnum((unsigned char)code[i]) || strchr("._-", code[i]))
			err->code[o++] = code[i];
	}
	err->code[o] = '\0';
	if (!o)
		snprintf(err->code, sizeof(err->code), "UnknownError");
	snprintf(err->msg, sizeof(err->msg), "%.*s%s", (int)mlen, clean, tail);
	return -1;
}

/* A response that is not an EC2 document: a proxy, a load balancer, a crash. */
static int http_status_error(long status, const char *what, const char *body, size_t len,
                             const char *request_id, struct amis_err *err)
{
	char code[32], excerpt[XML_EXCERPT_MAX + 4], msg[400];

	if (status == 500)
		snprintf(code, sizeof(code), "InternalError");
	else if (status == 503)
		snprintf(code, sizeof(code), "ServiceUnavailable");
	else
		snprintf(code, sizeof(code), "HttpError%ld", status);
	xml_excerpt(body, len, excerpt, sizeof(excerpt));
	snprintf(msg, sizeof(msg), "HTTP status %ld with %s: \"%s\"", status, what, excerpt);
	return set_api_error(err, code, msg, request_id);
}

/* <Response><Errors><Error>... or <ErrorResponse><Error>... */
static int api_error(xmlNodePtr root, const char *hdr_request_id, bool dry_run,
                     struct amis_err *err)
{
	xmlNodePtr e = xml_child(xml_child(root, "Errors"), "Error");
	char code[64], request_id[100];
	char *message;

	if (!e)
		e = xml_child(root, "Error");
	if (!e)
		return err_set(err, AMIS_E_MALFORMED_RESPONSE,
		               "EC2 error response without <Error>");
	if (xml_child_text(e, "Code", code, sizeof(code), err) < 0)
		return -1;
	if (dry_run && amis_code_of(code) == AMIS_E_DRY_RUN_OPERATION)
		return 0;
	if (xml_child_text_opt(root, "RequestID", request_id, sizeof(request_id), err) < 0 ||
	    (!request_id[0] &&
	     xml_child_text_opt(root, "RequestId", request_id, sizeof(request_id), err) < 0))
		return -1;
	message = xml_text_dup(xml_child(e, "Message"));
	set_api_error(err, code, message, request_id[0] ? request_id : hdr_request_id);
	free(message);
	return -1;
}

int ec2_parse_response(const char *action, long status, const char *body, size_t len,
                       const char *hdr_request_id, bool dry_run, xmlDocPtr *out_doc,
                       struct amis_err *err)
{
	bool ok_status = status >= 200 && status < 300;
	char expected[128];
	xmlDocPtr doc;
	xmlNodePtr root;
	int rc;

	*out_doc = NULL;
	if (xml_parse(body, len, &doc, err) < 0) {
		if (ok_status)
			return -1; /* MalformedResponse, with an excerpt */
		return http_status_error(status, "a body that is not XML", body, len,
		                         hdr_request_id, err);
	}
	root = xml_root(doc);
	if (xml_is(root, "Response") || xml_is(root, "ErrorResponse")) {
		rc = api_error(root, hdr_request_id, dry_run, err);
		xml_free(doc);
		return rc;
	}
	if (!ok_status) {
		rc = http_status_error(status, "an XML body that is not an EC2 error", body, len,
		                       hdr_request_id, err);
		xml_free(doc);
		return rc;
	}
	snprintf(expected, sizeof(expected), "%sResponse", action);
	if (!xml_is(root, expected)) {
		err_set(err, AMIS_E_MALFORMED_RESPONSE, "expected <%s>, got <%.64s>", expected,
		        (const char *)root->name);
		xml_free(doc);
		return -1;
	}
	*out_doc = doc;
	return 0;
}

/*
 * An error text must not quote a secret, even one echoed by a server: cut the
 * message where any recognisable piece of one starts.
 */
static void redact(struct amis_err *err, const char *secret)
{
	char probe[17];
	size_t n = strlen(secret);
	char *hit;

	if (n < 8)
		return;
	if (n > 16)
		n = 16;
	memcpy(probe, secret, n);
	probe[n] = '\0';
	hit = strstr(err->msg, probe);
	if (hit)
		snprintf(hit, sizeof(err->msg) - (size_t)(hit - err->msg), "[redacted]");
	if (strstr(err->code, probe))
		snprintf(err->code, sizeof(err->code), "UnknownError");
	secure_zero(probe, sizeof(probe));
}

/*
 * Whether libcurl may send a request again after a reused connection closed
 * without an answer (http.h, no_resend).  Not a call that creates something:
 * EC2 may have executed the first one, and a CreateSnapshots sent twice makes
 * two snapshot sets, the first one orphaned.  Reads, tags and DryRuns are
 * safe to repeat.
 */
static bool may_resend(const char *action, bool dry_run)
{
	return dry_run || strncmp(action, "Describe", 8) == 0 ||
	       strcmp(action, "CreateTags") == 0 || strcmp(action, "DeleteTags") == 0;
}

static bool action_ok(const char *action)
{
	if (!action || !*action || strlen(action) > 64)
		return false;
	for (; *action; action++) {
		if (!isalnum((unsigned char)*action))
			return false;
	}
	return true;
}

/* One call of ec2_call_many on its way: its signed request, then its answer. */
struct signed_call {
	struct sigv4_result sig;
	struct http_header hdrs[5];
	struct strbuf body;
	bool dry;
};

/* Signs call k into sc and hreq; -1 with k->err set (prefixed by the caller). */
static int sign_call(struct ec2_client *c, const struct aws_credentials *creds,
                     struct ec2_batch_call *k, time_t now, struct signed_call *sc,
                     struct http_request *hreq)
{
	struct sigv4_request sreq;
	const char *dry;
	size_t nh = 0;

	if (!action_ok(k->action))
		return err_set(k->err, AMIS_E_INVALID_REQUEST, "invalid EC2 action name");
	ec2_form_encode(k->action, k->params, &sc->body);
	dry = ec2_params_get(k->params, "DryRun");
	sc->dry = dry && strcmp(dry, "true") == 0;
	sreq = (struct sigv4_request){
	    .method = "POST",
	    .host = c->host,
	    .path = c->path,
	    .query = NULL,
	    .content_type = EC2_CONTENT_TYPE,
	    .body = sc->body.data,
	    .body_len = sc->body.len,
	    .region = c->region,
	    .service = "ec2",
	    .now = now,
	};
	if (sigv4_sign(&sreq, creds, &sc->sig, NULL, k->err) < 0)
		return -1;
	sc->hdrs[nh++] = (struct http_header){"Host", c->host};
	sc->hdrs[nh++] = (struct http_header){"Content-Type", EC2_CONTENT_TYPE};
	sc->hdrs[nh++] = (struct http_header){"X-Amz-Date", sc->sig.amz_date};
	sc->hdrs[nh++] = (struct http_header){"Authorization", sc->sig.authorization};
	if (sc->sig.security_token)
		sc->hdrs[nh++] =
		    (struct http_header){"X-Amz-Security-Token", sc->sig.security_token};
	*hreq = (struct http_request){
	    .method = "POST",
	    .url = c->url,
	    .headers = sc->hdrs,
	    .nheaders = nh,
	    .body = sc->body.data,
	    .body_len = sc->body.len,
	    .timeout_ms = k->timeout_ms,
	    .no_resend = !may_resend(k->action, sc->dry),
	};
	return 0;
}

int ec2_call_many(struct ec2_client *c, const struct aws_credentials *creds,
                  struct ec2_batch_call *calls, size_t n, time_t now_or_0)
{
	struct signed_call sc[HTTP_MAX_PARALLEL];
	struct http_request hreq[HTTP_MAX_PARALLEL];
	struct http_response resp[HTTP_MAX_PARALLEL];
	struct amis_err herr[HTTP_MAX_PARALLEL];
	int hrc[HTTP_MAX_PARALLEL];
	size_t map[HTTP_MAX_PARALLEL], i, nh = 0;
	time_t now = now_or_0 ? now_or_0 : time(NULL);
	int failed = 0;

	for (i = 0; i < n; i++) {
		calls[i].doc = NULL;
		calls[i].rc = -1;
	}
	if (!c || n > HTTP_MAX_PARALLEL) {
		for (i = 0; i < n; i++)
			err_set(calls[i].err, AMIS_E_INVALID_REQUEST,
			        c ? "too many EC2 calls at once" : "no EC2 client");
		return -1;
	}
	memset(sc, 0, sizeof(sc));
	for (i = 0; i < n; i++) {
		sb_init(&sc[i].body);
		http_response_init(&resp[i]);
		if (sign_call(c, creds, &calls[i], now, &sc[i], &hreq[nh]) == 0)
			map[nh++] = i;
	}
	for (i = 0; i < nh; i++)
		err_clear(&herr[i]);
	if (nh)
		http_perform_many(c->http, hreq, resp, herr, hrc, nh);
	for (i = 0; i < nh; i++) {
		struct ec2_batch_call *k = &calls[map[i]];

		if (hrc[i] < 0) {
			*k->err = herr[i];
			continue;
		}
		k->rc = ec2_parse_response(k->action, resp[i].status, resp[i].body.data,
		                           resp[i].body.len, resp[i].request_id, sc[map[i]].dry,
		                           &k->doc, k->err);
	}
	for (i = 0; i < n; i++) {
		struct ec2_batch_call *k = &calls[i];

		/* Every failure names the action once; callers add no "CreateSnapshots: " of their
		 * own. */
		if (k->rc < 0) {
			const char *sig = strstr(sc[i].sig.authorization, "Signature=");

			failed = -1;
			err_prefix(k->err, "EC2 %s", action_ok(k->action) ? k->action : "call");
			if (creds) {
				redact(k->err, creds->secret_access_key);
				redact(k->err, creds->session_token);
				if (sig)
					redact(k->err, sig + strlen("Signature="));
			}
		}
		secure_zero(&sc[i].sig, sizeof(sc[i].sig));
		sb_free(&sc[i].body);
		http_response_free(&resp[i]);
	}
	return failed;
}

int ec2_call(struct ec2_client *c, const struct aws_credentials *creds, const char *action,
             const struct ec2_params *params, long timeout_ms, time_t now_or_0, xmlDocPtr *out_doc,
             struct amis_err *err)
{
	struct ec2_batch_call k = {
	    .action = action, .params = params, .timeout_ms = timeout_ms, .err = err};

	*out_doc = NULL;
	if (!c)
		return err_set(err, AMIS_E_INVALID_REQUEST, "no EC2 client");
	if (!action_ok(action))
		return err_set(err, AMIS_E_INVALID_REQUEST, "invalid EC2 action name");
	ec2_call_many(c, creds, &k, 1, now_or_0);
	*out_doc = k.doc;
	return k.rc;
}

int ec2_presign(struct ec2_client *c, const struct aws_credentials *creds, const char *action,
                const struct ec2_params *params, long expires_s, time_t now_or_0,
                struct strbuf *url, struct amis_err *err)
{
	struct sigv4_presign_request req;
	const char **names, **values;
	size_t i, n = 0, np = params ? params->n : 0;
	int rc;

	if (!c)
		return err_set(err, AMIS_E_INVALID_REQUEST, "no EC2 client");
	if (!action_ok(action))
		return err_set(err, AMIS_E_INVALID_REQUEST, "invalid EC2 action name");
	names = xcalloc(np + 2, sizeof(*names));
	values = xcalloc(np + 2, sizeof(*values));
	names[n] = "Action";
	values[n++] = action;
	names[n] = "Version";
	values[n++] = EC2_API_VERSION;
	for (i = 0; i < np; i++) {
		names[n] = params->items[i].name;
		values[n++] = params->items[i].value;
	}
	req = (struct sigv4_presign_request){
	    .host = c->host,
	    .path = c->path,
	    .names = names,
	    .values = values,
	    .nparams = n,
	    .region = c->region,
	    .service = "ec2",
	    .now = now_or_0 ? now_or_0 : time(NULL),
	    .expires_s = expires_s,
	};
	/* c->url is scheme://host/path: the query follows. */
	sb_appendf(url, "%s?", c->url);
	rc = sigv4_presign(&req, creds, url, NULL, err);
	free(names);
	free(values);
	return rc;
}

/* ---- Typed operations. ---- */

/*
 * What the parsers below require of EC2's answers, and why (the table in
 * doc/ec2-parsing.md says the same).  The API reference marks nearly every
 * member of Snapshot, SnapshotInfo, Instance and InstanceBlockDeviceMapping
 * "Required: No", and EC2-compatible services differ in what they send, so a
 * member is required only when the operation cannot do without it: the ids
 * that say which snapshot belongs to which volume, and the volume ids of the
 * instance's mapping.  Those are also checked for shape, because they are
 * sent back to EC2, written into tags, logs and the history.  Members we
 * only report (sizes, times, progress) are taken when they are well formed
 * and otherwise left empty; unknown members are ignored; order and
 * namespaces do not matter (xml.h).
 */

/* Copies an informational member when present and fitting; else leaves "". */
static void text_if_fits(const xmlNode *node, const char *name, char *buf, size_t bufsz)
{
	struct amis_err ignored;

	if (xml_child_text_opt(node, name, buf, bufsz, &ignored) < 0)
		buf[0] = '\0';
}

/* A required id member of the given prefix ("snap", "vol", "i"). */
static int id_member(const xmlNode *node, const char *name, const char *prefix, char *buf,
                     size_t bufsz, struct amis_err *err)
{
	char path[256];

	if (xml_child_text(node, name, buf, bufsz, err) < 0)
		return -1;
	if (!aws_resource_id_valid(buf, prefix)) {
		xml_path(xml_child(node, name), path, sizeof(path));
		err_set(err, AMIS_E_MALFORMED_RESPONSE, "element %s is \"%.64s\", not a %s-... id",
		        path, buf, prefix);
		buf[0] = '\0';
		return -1;
	}
	return 0;
}

/*
 * A snapshot's state: a lower-case word.  CreateSnapshots items carry
 * <state> and DescribeSnapshots items <status>; either is taken.
 */
static int state_member(const xmlNode *item, const char *absent_state, char *buf, size_t bufsz,
                        struct amis_err *err)
{
	xmlNodePtr c = xml_child(item, "state");
	char path[256];
	size_t i;

	if (!c)
		c = xml_child(item, "status");
	if (xml_text(c, buf, bufsz, err) < 0)
		return -1;
	if (!buf[0]) {
		snprintf(buf, bufsz, "%s", absent_state);
		return 0;
	}
	for (i = 0; buf[i]; i++) {
		if (!(buf[i] >= 'a' && buf[i] <= 'z') && buf[i] != '-') {
			xml_path(c, path, sizeof(path));
			err_set(err, AMIS_E_MALFORMED_RESPONSE,
			        "element %s is \"%.32s\", not a state", path, buf);
			buf[0] = '\0';
			return -1;
		}
	}
	return 0;
}

int ec2_member_id(const xmlNode *node, const char *name, const char *prefix, char *buf,
                  size_t bufsz, struct amis_err *err)
{
	return id_member(node, name, prefix, buf, bufsz, err);
}

void ec2_member_text(const xmlNode *node, const char *name, char *buf, size_t bufsz)
{
	text_if_fits(node, name, buf, bufsz);
}

int ec2_parse_snapshot_set(xmlDocPtr doc, const char *absent_state, struct ec2_snapshot_set *out,
                           struct amis_err *err)
{
	xmlNodePtr root = xml_root(doc), it;
	size_t i = 0;

	out->n = 0;
	out->items = NULL;
	/* No <snapshotSet> is an empty set: the caller checks what it asked for. */
	out->n = xml_items_count(root, "snapshotSet");
	out->items = out->n ? xcalloc(out->n, sizeof(*out->items)) : NULL;
	for (it = xml_items_first(root, "snapshotSet"); it; it = xml_items_next(it), i++) {
		struct ec2_snapshot_info *s = &out->items[i];
		struct amis_err ignored;

		if (id_member(it, "snapshotId", "snap", s->snapshot_id, sizeof(s->snapshot_id),
		              err) < 0 ||
		    id_member(it, "volumeId", "vol", s->volume_id, sizeof(s->volume_id), err) < 0 ||
		    state_member(it, absent_state, s->state, sizeof(s->state), err) < 0) {
			ec2_snapshot_set_free(out);
			return -1;
		}
		if (xml_child_ll_opt(it, "volumeSize", -1, &s->volume_size_gib, &ignored) < 0)
			s->volume_size_gib = -1;
		text_if_fits(it, "startTime", s->start_time, sizeof(s->start_time));
		text_if_fits(it, "progress", s->progress, sizeof(s->progress));
	}
	return 0;
}

static int parse_block_devices(xmlNodePtr inst, struct ec2_instance_info *out, struct amis_err *err)
{
	xmlNodePtr it, ebs;

	for (it = xml_items_first(inst, "blockDeviceMapping"); it; it = xml_items_next(it)) {
		struct ec2_block_device *bd;
		struct amis_err ignored;

		ebs = xml_child(it, "ebs");
		if (!ebs)
			continue;
		if (out->nvolumes == EC2_MAX_INSTANCE_VOLUMES)
			return err_set(err, AMIS_E_TOO_MANY_VOLUMES,
			               "instance %s has more than %d EBS volumes", out->instance_id,
			               EC2_MAX_INSTANCE_VOLUMES);
		bd = &out->volumes[out->nvolumes];
		/* The volume id decides what is snapshotted and what is excluded. */
		if (id_member(ebs, "volumeId", "vol", bd->volume_id, sizeof(bd->volume_id), err) <
		    0)
			return -1;
		/* Device names map Xen disks and tell the root volume; "" if absent. */
		text_if_fits(it, "deviceName", bd->device_name, sizeof(bd->device_name));
		if (xml_child_bool_opt(ebs, "deleteOnTermination", false,
		                       &bd->delete_on_termination, &ignored) < 0)
			bd->delete_on_termination = false;
		out->nvolumes++;
	}
	return 0;
}

/*
 * productCodes/item: productCode and type (devpay | marketplace).  Decides
 * whether RegisterImage would lose billing codes, so an item that is there
 * counts even when its members are odd (its type is then "unknown").
 */
static size_t parse_product_codes(const xmlNode *node, struct ec2_product_code *pc, size_t max)
{
	xmlNodePtr it;
	size_t n = 0;

	for (it = xml_items_first(node, "productCodes"); it && n < max; it = xml_items_next(it)) {
		text_if_fits(it, "productCode", pc[n].code, sizeof(pc[n].code));
		text_if_fits(it, "type", pc[n].type, sizeof(pc[n].type));
		if (!pc[n].type[0])
			snprintf(pc[n].type, sizeof(pc[n].type), "unknown");
		n++;
	}
	return n;
}

static int parse_instance_node(xmlNodePtr inst, struct ec2_instance_info *out, struct amis_err *err)
{
	struct amis_err ignored;

	memset(out, 0, sizeof(*out));
	if (id_member(inst, "instanceId", "i", out->instance_id, sizeof(out->instance_id), err) <
	        0 ||
	    parse_block_devices(inst, out, err) < 0) {
		memset(out, 0, sizeof(*out));
		return -1;
	}
	/* Informational today (the AMI methods will need them): "" if absent or odd. */
	text_if_fits(inst, "architecture", out->architecture, sizeof(out->architecture));
	text_if_fits(inst, "rootDeviceType", out->root_device_type, sizeof(out->root_device_type));
	text_if_fits(inst, "virtualizationType", out->virtualization_type,
	             sizeof(out->virtualization_type));
	text_if_fits(inst, "rootDeviceName", out->root_device_name, sizeof(out->root_device_name));
	text_if_fits(inst, "imageId", out->image_id, sizeof(out->image_id));
	text_if_fits(inst, "bootMode", out->boot_mode, sizeof(out->boot_mode));
	if (xml_child_bool_opt(inst, "enaSupport", false, &out->ena_support, &ignored) < 0)
		out->ena_support = false;
	text_if_fits(inst, "platformDetails", out->platform_details, sizeof(out->platform_details));
	text_if_fits(inst, "usageOperation", out->usage_operation, sizeof(out->usage_operation));
	out->nproduct_codes = parse_product_codes(inst, out->product_codes, EC2_MAX_PRODUCT_CODES);
	return 0;
}

int ec2_parse_instance(xmlDocPtr doc, const char *instance_id, struct ec2_instance_info *out,
                       struct amis_err *err)
{
	xmlNodePtr root = xml_root(doc), res, inst;
	char id[64];

	memset(out, 0, sizeof(*out));
	/* No <reservationSet>: no instance, as with an empty one. */
	for (res = xml_items_first(root, "reservationSet"); res; res = xml_items_next(res)) {
		for (inst = xml_items_first(res, "instancesSet"); inst;
		     inst = xml_items_next(inst)) {
			struct amis_err ignored;

			/* An item we cannot identify is not the one we asked for. */
			if (xml_child_text(inst, "instanceId", id, sizeof(id), &ignored) < 0)
				continue;
			if (!instance_id || strcmp(id, instance_id) == 0)
				return parse_instance_node(inst, out, err);
		}
	}
	return err_set(err, AMIS_E_INVALID_INSTANCE_ID_NOT_FOUND,
	               "instance %.64s is not in the DescribeInstances response",
	               instance_id ? instance_id : "(any)");
}

int ec2_parse_create_tags(xmlDocPtr doc, struct amis_err *err)
{
	char ret[16];

	if (xml_child_text_opt(xml_root(doc), "return", ret, sizeof(ret), err) < 0)
		return -1;
	if (ret[0] && strcmp(ret, "true") != 0)
		return err_set(err, AMIS_E_CREATE_TAGS_FAILED, "CreateTags returned \"%s\"", ret);
	return 0;
}

/* Parses a 200 body of action and hands the document to parse. */
static int parse_body(const char *action, const char *body, size_t len, xmlDocPtr *doc,
                      struct amis_err *err)
{
	return ec2_parse_response(action, 200, body, len, NULL, false, doc, err);
}

/* A 200 body of action whose items are snapshots. */
static int parse_snapshot_body(const char *action, const char *absent_state, const char *body,
                               size_t len, struct ec2_snapshot_set *out, struct amis_err *err)
{
	xmlDocPtr doc;
	int rc;

	out->n = 0;
	out->items = NULL;
	if (parse_body(action, body, len, &doc, err) < 0)
		return -1;
	rc = ec2_parse_snapshot_set(doc, absent_state, out, err);
	xml_free(doc);
	return rc;
}

/*
 * A CreateSnapshots answer of 200 means the snapshots exist and their point
 * in time is fixed: an item without a state is pending.  A DescribeSnapshots
 * item without one is of unknown state ("").
 */
int ec2_parse_create_snapshots(const char *body, size_t len, struct ec2_snapshot_set *out,
                               struct amis_err *err)
{
	return parse_snapshot_body("CreateSnapshots", EC2_CREATED_STATE, body, len, out, err);
}

int ec2_parse_describe_snapshots(const char *body, size_t len, struct ec2_snapshot_set *out,
                                 struct amis_err *err)
{
	return parse_snapshot_body("DescribeSnapshots", "", body, len, out, err);
}

int ec2_parse_describe_instance(const char *body, size_t len, const char *instance_id,
                                struct ec2_instance_info *out, struct amis_err *err)
{
	xmlDocPtr doc;
	int rc;

	memset(out, 0, sizeof(*out));
	if (parse_body("DescribeInstances", body, len, &doc, err) < 0)
		return -1;
	rc = ec2_parse_instance(doc, instance_id, out, err);
	xml_free(doc);
	return rc;
}

int ec2_create_snapshots_params(struct ec2_params *p, const struct ec2_create_snapshots_req *req,
                                struct amis_err *err)
{
	size_t i;

	if (!req || !req->instance_id || !req->instance_id[0])
		return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE,
		               "CreateSnapshots needs an instance id");
	ec2_params_add(p, "InstanceSpecification.InstanceId", req->instance_id);
	if (req->exclude_boot_volume)
		ec2_params_add(p, "InstanceSpecification.ExcludeBootVolume", "true");
	for (i = 0; i < req->n_exclude; i++)
		ec2_params_addf(p, req->exclude_volume_ids[i],
		                "InstanceSpecification.ExcludeDataVolumeId.%zu", i + 1);
	if (req->description)
		ec2_params_add(p, "Description", req->description);
	ec2_params_tag_spec(p, 1, "snapshot", req->tags, req->ntags);
	if (req->copy_tags_from_source)
		ec2_params_add(p, "CopyTagsFromSource", "volume");
	if (req->dry_run)
		ec2_params_add(p, "DryRun", "true");
	return 0;
}

int ec2_create_snapshots(struct ec2_client *c, const struct aws_credentials *creds,
                         const struct ec2_create_snapshots_req *req, long timeout_ms,
                         struct ec2_snapshot_set *out, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	out->n = 0;
	out->items = NULL;
	ec2_params_init(&p);
	rc = ec2_create_snapshots_params(&p, req, err);
	if (rc == 0)
		rc = ec2_call(c, creds, "CreateSnapshots", &p, timeout_ms, 0, &doc, err);
	if (rc == 0 && doc && ec2_parse_snapshot_set(doc, EC2_CREATED_STATE, out, err) < 0)
		rc = err_prefix(err, "EC2 CreateSnapshots");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int ec2_describe_snapshots(struct ec2_client *c, const struct aws_credentials *creds,
                           const char *const *snapshot_ids, size_t n, long timeout_ms,
                           struct ec2_snapshot_set *out, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	size_t i;
	int rc;

	out->n = 0;
	out->items = NULL;
	/* Without ids, DescribeSnapshots would list every snapshot we can see. */
	if (n == 0)
		return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE,
		               "DescribeSnapshots needs snapshot ids");
	ec2_params_init(&p);
	for (i = 0; i < n; i++)
		ec2_params_addf(&p, snapshot_ids[i], "SnapshotId.%zu", i + 1);
	rc = ec2_call(c, creds, "DescribeSnapshots", &p, timeout_ms, 0, &doc, err);
	if (rc == 0 && ec2_parse_snapshot_set(doc, "", out, err) < 0)
		rc = err_prefix(err, "EC2 DescribeSnapshots");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

void ec2_describe_snapshots_by_tags_params(struct ec2_params *p, const char *const *keys,
                                           const char *const *values, size_t n)
{
	struct strbuf name;
	size_t i;

	for (i = 0; i < n; i++) {
		sb_init(&name);
		sb_appendf(&name, "tag:%s", keys[i]);
		ec2_params_addf(p, sb_str(&name), "Filter.%zu.Name", i + 1);
		ec2_params_addf(p, values[i], "Filter.%zu.Value.1", i + 1);
		sb_free(&name);
	}
	/* Only our own snapshots: without it, public snapshots could match too. */
	ec2_params_add(p, "Owner.1", "self");
}

void ec2_describe_snapshots_by_tag_params(struct ec2_params *p, const char *key, const char *value)
{
	ec2_describe_snapshots_by_tags_params(p, &key, &value, 1);
}

int ec2_describe_snapshots_by_tags(struct ec2_client *c, const struct aws_credentials *creds,
                                   const char *const *keys, const char *const *values, size_t n,
                                   long timeout_ms, struct ec2_snapshot_set *out,
                                   struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	size_t i;
	int rc;

	out->n = 0;
	out->items = NULL;
	if (n == 0)
		return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE,
		               "DescribeSnapshots by tag needs a tag key and a value");
	for (i = 0; i < n; i++)
		if (!keys[i] || !keys[i][0] || !values[i])
			return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE,
			               "DescribeSnapshots by tag needs a tag key and a value");
	ec2_params_init(&p);
	ec2_describe_snapshots_by_tags_params(&p, keys, values, n);
	rc = ec2_call(c, creds, "DescribeSnapshots", &p, timeout_ms, 0, &doc, err);
	if (rc == 0 && ec2_parse_snapshot_set(doc, "", out, err) < 0)
		rc = err_prefix(err, "EC2 DescribeSnapshots");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int ec2_describe_snapshots_by_tag(struct ec2_client *c, const struct aws_credentials *creds,
                                  const char *key, const char *value, long timeout_ms,
                                  struct ec2_snapshot_set *out, struct amis_err *err)
{
	return ec2_describe_snapshots_by_tags(c, creds, &key, &value, 1, timeout_ms, out, err);
}

int ec2_create_tags_params(struct ec2_params *p, const char *const *resource_ids, size_t nres,
                           const struct ec2_tag *tags, size_t ntags, struct amis_err *err)
{
	size_t i;

	if (nres == 0 || ntags == 0)
		return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE,
		               "CreateTags needs at least one resource and one tag");
	for (i = 0; i < nres; i++)
		ec2_params_addf(p, resource_ids[i], "ResourceId.%zu", i + 1);
	for (i = 0; i < ntags; i++) {
		ec2_params_addf(p, tags[i].key, "Tag.%zu.Key", i + 1);
		/* "specify the parameter with no value, and we set the value to an empty string" */
		ec2_params_addf(p, tags[i].value ? tags[i].value : "", "Tag.%zu.Value", i + 1);
	}
	return 0;
}

int ec2_create_tags(struct ec2_client *c, const struct aws_credentials *creds,
                    const char *const *resource_ids, size_t nres, const struct ec2_tag *tags,
                    size_t ntags, long timeout_ms, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	ec2_params_init(&p);
	rc = ec2_create_tags_params(&p, resource_ids, nres, tags, ntags, err);
	if (rc == 0)
		rc = ec2_call(c, creds, "CreateTags", &p, timeout_ms, 0, &doc, err);
	if (rc == 0 && ec2_parse_create_tags(doc, err) < 0)
		rc = err_prefix(err, "EC2 CreateTags");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int ec2_describe_instance(struct ec2_client *c, const struct aws_credentials *creds,
                          const char *instance_id, long timeout_ms, struct ec2_instance_info *out,
                          struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!instance_id || !instance_id[0])
		return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE,
		               "DescribeInstances needs an instance id");
	ec2_params_init(&p);
	ec2_params_add(&p, "InstanceId.1", instance_id);
	rc = ec2_call(c, creds, "DescribeInstances", &p, timeout_ms, 0, &doc, err);
	if (rc == 0 && ec2_parse_instance(doc, instance_id, out, err) < 0)
		rc = err_prefix(err, "EC2 DescribeInstances");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

/* ---- Images and volumes (the AMI methods). ---- */

/* An informational positive integer member; 0 when absent or odd. */
static long long_if_fits(const xmlNode *node, const char *name)
{
	struct amis_err ignored;
	long long v;

	if (xml_child_ll_opt(node, name, 0, &v, &ignored) < 0 || v < 0 || v > 1000000000LL)
		return 0;
	return (long)v;
}

/* One <ebs> of a mapping or one DescribeVolumes item's shape (type, size, IOPS, throughput). */
static void volume_shape(const xmlNode *node, const char *size_member, struct ec2_volume_info *v)
{
	struct amis_err ignored;

	text_if_fits(node, "volumeType", v->volume_type, sizeof(v->volume_type));
	v->size_gib = long_if_fits(node, size_member);
	v->iops = long_if_fits(node, "iops");
	v->throughput = long_if_fits(node, "throughput");
	if (xml_child_bool_opt(node, "deleteOnTermination", false, &v->delete_on_termination,
	                       &ignored) < 0)
		v->delete_on_termination = false;
}

int ec2_parse_image(xmlDocPtr doc, struct ec2_image_info *out, struct amis_err *err)
{
	xmlNodePtr it = xml_items_first(xml_root(doc), "imagesSet"), m;
	struct amis_err ignored;

	memset(out, 0, sizeof(*out));
	if (!it)
		return 0;
	/* The id is what the helper deregisters, tags and reports: required. */
	if (id_member(it, "imageId", "ami", out->image_id, sizeof(out->image_id), err) < 0)
		return -1;
	text_if_fits(it, "imageState", out->state, sizeof(out->state));
	text_if_fits(it, "name", out->name, sizeof(out->name));
	text_if_fits(it, "architecture", out->architecture, sizeof(out->architecture));
	text_if_fits(it, "virtualizationType", out->virtualization_type,
	             sizeof(out->virtualization_type));
	text_if_fits(it, "rootDeviceName", out->root_device_name, sizeof(out->root_device_name));
	if (xml_child_bool_opt(it, "enaSupport", false, &out->ena_support, &ignored) < 0)
		out->ena_support = false;
	text_if_fits(it, "sriovNetSupport", out->sriov_net_support, sizeof(out->sriov_net_support));
	text_if_fits(it, "bootMode", out->boot_mode, sizeof(out->boot_mode));
	text_if_fits(it, "tpmSupport", out->tpm_support, sizeof(out->tpm_support));
	text_if_fits(it, "imdsSupport", out->imds_support, sizeof(out->imds_support));
	text_if_fits(it, "platformDetails", out->platform_details, sizeof(out->platform_details));
	text_if_fits(it, "usageOperation", out->usage_operation, sizeof(out->usage_operation));
	out->nproduct_codes = parse_product_codes(it, out->product_codes, EC2_MAX_PRODUCT_CODES);
	for (m = xml_items_first(it, "blockDeviceMapping"); m; m = xml_items_next(m)) {
		xmlNodePtr ebs = xml_child(m, "ebs");
		struct ec2_volume_info *v;
		char path[256];

		if (!ebs)
			continue; /* instance store, NoDevice */
		if (out->nmappings == EC2_MAX_INSTANCE_VOLUMES)
			return err_set(err, AMIS_E_TOO_MANY_VOLUMES,
			               "image %s maps more than %d EBS volumes", out->image_id,
			               EC2_MAX_INSTANCE_VOLUMES);
		v = &out->mappings[out->nmappings];
		/* Which snapshot is which device: what the create method waits for. */
		if (xml_child_text(m, "deviceName", v->device_name, sizeof(v->device_name), err) <
		    0)
			return -1;
		if (xml_child_text_opt(ebs, "snapshotId", v->snapshot_id, sizeof(v->snapshot_id),
		                       err) < 0)
			return -1;
		if (v->snapshot_id[0] && !aws_resource_id_valid(v->snapshot_id, "snap")) {
			xml_path(xml_child(ebs, "snapshotId"), path, sizeof(path));
			return err_set(err, AMIS_E_MALFORMED_RESPONSE,
			               "element %s is \"%.64s\", not a snap-... id", path,
			               v->snapshot_id);
		}
		volume_shape(ebs, "volumeSize", v);
		out->nmappings++;
	}
	return 0;
}

int ec2_parse_volumes(xmlDocPtr doc, struct ec2_volume_set *out, struct amis_err *err)
{
	xmlNodePtr it;

	memset(out, 0, sizeof(*out));
	for (it = xml_items_first(xml_root(doc), "volumeSet"); it; it = xml_items_next(it)) {
		struct ec2_volume_info *v;

		if (out->n == EC2_MAX_INSTANCE_VOLUMES)
			return err_set(err, AMIS_E_TOO_MANY_VOLUMES,
			               "DescribeVolumes listed more than %d volumes",
			               EC2_MAX_INSTANCE_VOLUMES);
		v = &out->items[out->n];
		if (id_member(it, "volumeId", "vol", v->volume_id, sizeof(v->volume_id), err) < 0)
			return -1;
		volume_shape(it, "size", v);
		out->n++;
	}
	return 0;
}

int ec2_parse_image_id(xmlDocPtr doc, char *image_id, size_t idsz, struct amis_err *err)
{
	return id_member(xml_root(doc), "imageId", "ami", image_id, idsz, err);
}

int ec2_parse_describe_images(const char *body, size_t len, struct ec2_image_info *out,
                              struct amis_err *err)
{
	xmlDocPtr doc;
	int rc;

	memset(out, 0, sizeof(*out));
	if (parse_body("DescribeImages", body, len, &doc, err) < 0)
		return -1;
	rc = ec2_parse_image(doc, out, err);
	xml_free(doc);
	return rc;
}

int ec2_parse_describe_volumes(const char *body, size_t len, struct ec2_volume_set *out,
                               struct amis_err *err)
{
	xmlDocPtr doc;
	int rc;

	memset(out, 0, sizeof(*out));
	if (parse_body("DescribeVolumes", body, len, &doc, err) < 0)
		return -1;
	rc = ec2_parse_volumes(doc, out, err);
	xml_free(doc);
	return rc;
}

int ec2_parse_new_image(const char *action, const char *body, size_t len, char *image_id,
                        size_t idsz, struct amis_err *err)
{
	xmlDocPtr doc;
	int rc;

	image_id[0] = '\0';
	if (parse_body(action, body, len, &doc, err) < 0)
		return -1;
	rc = ec2_parse_image_id(doc, image_id, idsz, err);
	xml_free(doc);
	return rc;
}

int ec2_describe_image_params(struct ec2_params *p, const struct ec2_image_query *q,
                              struct amis_err *err)
{
	struct strbuf name;

	if (q->image_id && q->image_id[0]) {
		ec2_params_add(p, "ImageId.1", q->image_id);
		return 0;
	}
	if (q->tag_key && q->tag_key[0] && q->tag_value) {
		sb_init(&name);
		sb_appendf(&name, "tag:%s", q->tag_key);
		ec2_params_add(p, "Filter.1.Name", sb_str(&name));
		ec2_params_add(p, "Filter.1.Value.1", q->tag_value);
		sb_free(&name);
	} else if (q->name && q->name[0]) {
		ec2_params_add(p, "Filter.1.Name", "name");
		ec2_params_add(p, "Filter.1.Value.1", q->name);
	} else {
		return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE,
		               "DescribeImages needs an image id, a tag or a name");
	}
	/* Only our own images: a public one could carry the same tag or name. */
	ec2_params_add(p, "Owner.1", "self");
	return 0;
}

int ec2_describe_image(struct ec2_client *c, const struct aws_credentials *creds,
                       const struct ec2_image_query *q, long timeout_ms, struct ec2_image_info *out,
                       struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	ec2_params_init(&p);
	rc = ec2_describe_image_params(&p, q, err);
	if (rc == 0)
		rc = ec2_call(c, creds, "DescribeImages", &p, timeout_ms, 0, &doc, err);
	if (rc == 0 && ec2_parse_image(doc, out, err) < 0)
		rc = err_prefix(err, "EC2 DescribeImages");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int ec2_describe_volumes(struct ec2_client *c, const struct aws_credentials *creds,
                         const char *const *volume_ids, size_t n, long timeout_ms,
                         struct ec2_volume_set *out, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	size_t i;
	int rc;

	memset(out, 0, sizeof(*out));
	if (n == 0)
		return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE,
		               "DescribeVolumes needs volume ids");
	ec2_params_init(&p);
	for (i = 0; i < n; i++)
		ec2_params_addf(&p, volume_ids[i], "VolumeId.%zu", i + 1);
	rc = ec2_call(c, creds, "DescribeVolumes", &p, timeout_ms, 0, &doc, err);
	if (rc == 0 && ec2_parse_volumes(doc, out, err) < 0)
		rc = err_prefix(err, "EC2 DescribeVolumes");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

static void add_if(struct ec2_params *p, const char *name, const char *value)
{
	if (value && value[0])
		ec2_params_add(p, name, value);
}

/* BlockDeviceMapping.<i>.Ebs.<member> = v, when v > 0. */
static void add_long(struct ec2_params *p, long v, const char *member, size_t i)
{
	char num[24];

	if (v <= 0)
		return;
	snprintf(num, sizeof(num), "%ld", v);
	ec2_params_addf(p, num, "BlockDeviceMapping.%zu.Ebs.%s", i, member);
}

void ec2_register_image_params(struct ec2_params *p, const struct ec2_register_image_req *req)
{
	const struct ec2_image_info *in = req->info;
	size_t i;

	ec2_params_add(p, "Name", in->name);
	add_if(p, "Description", req->description);
	/* The API's defaults (i386, paravirtual) never boot a modern instance: always sent. */
	ec2_params_add(p, "Architecture", in->architecture);
	ec2_params_add(p, "VirtualizationType",
	               in->virtualization_type[0] ? in->virtualization_type : "hvm");
	ec2_params_add(p, "RootDeviceName", in->root_device_name);
	if (in->ena_support)
		ec2_params_add(p, "EnaSupport", "true");
	add_if(p, "SriovNetSupport", in->sriov_net_support);
	add_if(p, "BootMode", in->boot_mode);
	add_if(p, "TpmSupport", in->tpm_support);
	add_if(p, "ImdsSupport", in->imds_support);
	for (i = 0; i < in->nmappings; i++) {
		const struct ec2_volume_info *v = &in->mappings[i];

		ec2_params_addf(p, v->device_name, "BlockDeviceMapping.%zu.DeviceName", i + 1);
		ec2_params_addf(p, v->snapshot_id, "BlockDeviceMapping.%zu.Ebs.SnapshotId", i + 1);
		if (v->volume_type[0])
			ec2_params_addf(p, v->volume_type, "BlockDeviceMapping.%zu.Ebs.VolumeType",
			                i + 1);
		add_long(p, v->size_gib, "VolumeSize", i + 1);
		/* IOPS: io1, io2 and gp3 only; throughput: gp3 only (EC2 refuses them otherwise).
		 */
		if (!strcmp(v->volume_type, "io1") || !strcmp(v->volume_type, "io2") ||
		    !strcmp(v->volume_type, "gp3"))
			add_long(p, v->iops, "Iops", i + 1);
		if (!strcmp(v->volume_type, "gp3"))
			add_long(p, v->throughput, "Throughput", i + 1);
		ec2_params_addf(p, v->delete_on_termination ? "true" : "false",
		                "BlockDeviceMapping.%zu.Ebs.DeleteOnTermination", i + 1);
	}
	ec2_params_tag_spec(p, 1, "image", req->tags, req->ntags);
	if (req->dry_run)
		ec2_params_add(p, "DryRun", "true");
}

void ec2_create_image_params(struct ec2_params *p, const struct ec2_create_image_req *req)
{
	ec2_params_add(p, "InstanceId", req->instance_id);
	ec2_params_add(p, "Name", req->name);
	add_if(p, "Description", req->description);
	/* Never the reboot: the database filesystems are frozen instead. */
	ec2_params_add(p, "NoReboot", "true");
	ec2_params_tag_spec(p, 1, "image", req->tags, req->ntags);
	ec2_params_tag_spec(p, 2, "snapshot", req->tags, req->ntags);
	if (req->dry_run)
		ec2_params_add(p, "DryRun", "true");
}

/* RegisterImage or CreateImage: one call, never repeated (it may have made an image). */
static int new_image_call(struct ec2_client *c, const struct aws_credentials *creds,
                          const char *action, struct ec2_params *p, long timeout_ms, char *image_id,
                          size_t idsz, struct amis_err *err)
{
	xmlDocPtr doc = NULL;
	int rc;

	image_id[0] = '\0';
	rc = ec2_call(c, creds, action, p, timeout_ms, 0, &doc, err);
	if (rc == 0 && doc && ec2_parse_image_id(doc, image_id, idsz, err) < 0)
		rc = err_prefix(err, "EC2 %s", action);
	xml_free(doc);
	ec2_params_free(p);
	return rc;
}

int ec2_register_image(struct ec2_client *c, const struct aws_credentials *creds,
                       const struct ec2_register_image_req *req, long timeout_ms, char *image_id,
                       size_t idsz, struct amis_err *err)
{
	struct ec2_params p;

	image_id[0] = '\0';
	if (!req || !req->info || !req->info->name[0] || !req->info->root_device_name[0] ||
	    !req->info->architecture[0] || !req->info->nmappings)
		return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE,
		               "RegisterImage needs a name, an architecture, a root device and a "
		               "block device mapping");
	ec2_params_init(&p);
	ec2_register_image_params(&p, req);
	return new_image_call(c, creds, "RegisterImage", &p, timeout_ms, image_id, idsz, err);
}

int ec2_create_image(struct ec2_client *c, const struct aws_credentials *creds,
                     const struct ec2_create_image_req *req, long timeout_ms, char *image_id,
                     size_t idsz, struct amis_err *err)
{
	struct ec2_params p;

	image_id[0] = '\0';
	if (!req || !req->instance_id || !req->instance_id[0] || !req->name || !req->name[0])
		return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE,
		               "CreateImage needs an instance id and a name");
	ec2_params_init(&p);
	ec2_create_image_params(&p, req);
	return new_image_call(c, creds, "CreateImage", &p, timeout_ms, image_id, idsz, err);
}

int ec2_deregister_image(struct ec2_client *c, const struct aws_credentials *creds,
                         const char *image_id, long timeout_ms, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	if (!aws_resource_id_valid(image_id, "ami"))
		return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE,
		               "DeregisterImage needs an image id");
	ec2_params_init(&p);
	ec2_params_add(&p, "ImageId", image_id);
	rc = ec2_call(c, creds, "DeregisterImage", &p, timeout_ms, 0, &doc, err);
	if (rc == 0 && ec2_parse_create_tags(doc, err) < 0)
		rc = err_prefix(err, "EC2 DeregisterImage");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}
