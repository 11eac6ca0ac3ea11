/*
 * http.c - see http.h.
 *
 * Secrets travel in request headers (Authorization, X-Amz-Security-Token,
 * the IMDS token): they are never copied into an error message, and the
 * header lines built for libcurl are wiped before they are freed.
 */
#include "http.h"

#include <ctype.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

#define HTTP_MAX_BODY (8u * 1024 * 1024)
#define HTTP_DEFAULT_TIMEOUT_MS 30000L
#define HTTP_MAX_CONNECT_TIMEOUT_MS 5000L
#define HTTP_USER_AGENT "ami-snapshot-helper"

/*
 * Never through a proxy: the loopback (test emulators) and the instance
 * metadata service (IPv4 and IPv6 addresses).  Appended to NO_PROXY.
 */
#define HTTP_NO_PROXY_ALWAYS "127.0.0.1,localhost,::1,169.254.169.254,fd00:ec2::254"

struct http_client {
	CURL *curl;
	/*
	 * Transfers run through a multi handle, so that a wait can also watch
	 * another descriptor (abort_fd).  The multi handle owns the connection
	 * cache: a connection warmed by one request is reused by the next.
	 */
	CURLM *multi;
	/* Transfers 2..HTTP_MAX_PARALLEL of http_perform_many, made when first needed. */
	CURL *extra[HTTP_MAX_PARALLEL - 1];
	int abort_fd;    /* -1: none */
	long max_idle_s; /* 0: libcurl's default (118 s) */
};

struct body_sink {
	struct strbuf *sb;
	bool too_large;
};

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_rc = CURLE_FAILED_INIT;

static void curl_init_once(void)
{
	curl_init_rc = curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct http_client *http_client_new(void)
{
	struct http_client *c;

	pthread_once(&curl_once, curl_init_once);
	if (curl_init_rc != CURLE_OK)
		return NULL;
	c = xcalloc(1, sizeof(*c));
	c->abort_fd = -1;
	c->curl = curl_easy_init();
	c->multi = curl_multi_init();
	if (!c->curl || !c->multi) {
		if (c->curl)
			curl_easy_cleanup(c->curl);
		if (c->multi)
			curl_multi_cleanup(c->multi);
		free(c);
		return NULL;
	}
	return c;
}

void http_client_set_abort_fd(struct http_client *c, int fd)
{
	c->abort_fd = fd;
}

void http_client_set_max_idle(struct http_client *c, long seconds)
{
	c->max_idle_s = seconds;
}

void http_client_free(struct http_client *c)
{
	size_t i;

	if (!c)
		return;
	curl_multi_cleanup(c->multi);
	curl_easy_cleanup(c->curl);
	for (i = 0; i < HTTP_MAX_PARALLEL - 1; i++)
		if (c->extra[i])
			curl_easy_cleanup(c->extra[i]);
	free(c);
}

void http_response_init(struct http_response *r)
{
	r->status = 0;
	sb_init(&r->body);
	r->request_id[0] = '\0';
}

void http_response_free(struct http_response *r)
{
	sb_free(&r->body);
	r->status = 0;
	r->request_id[0] = '\0';
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct body_sink *sink = userdata;
	size_t n = size * nmemb;

	if (n > HTTP_MAX_BODY || sink->sb->len + n > HTTP_MAX_BODY) {
		sink->too_large = true;
		return 0; /* makes libcurl fail with CURLE_WRITE_ERROR */
	}
	sb_append(sink->sb, ptr, n);
	return n;
}

/* The body of a no_resend request: readable once, never rewound. */
struct body_source {
	const char *data;
	size_t len, pos;
	bool rewind_refused;
};

static size_t on_read(char *buf, size_t size, size_t nitems, void *userdata)
{
	struct body_source *src = userdata;
	size_t n = size * nitems;

	if (n > src->len - src->pos)
		n = src->len - src->pos;
	memcpy(buf, src->data + src->pos, n);
	src->pos += n;
	return n;
}

/*
 * libcurl rewinds the body to send the request again (after a reused
 * connection closed without an answer).  Fine while none of it was handed
 * over; after that, the server may have the request: refuse.
 */
static int on_seek(void *userdata, curl_off_t offset, int origin)
{
	struct body_source *src = userdata;

	if (origin == SEEK_SET && offset == 0 && src->pos == 0)
		return CURL_SEEKFUNC_OK;
	src->rewind_refused = true;
	return CURL_SEEKFUNC_FAIL;
}

static bool header_is(const char *line, size_t n, const char *name)
{
	size_t len = strlen(name);

	return n > len && line[len] == ':' && strncasecmp(line, name, len) == 0;
}

static size_t on_header(char *line, size_t size, size_t nitems, void *userdata)
{
	struct http_response *r = userdata;
	size_t n = size * nitems;
	size_t i, o = 0, start;

	/* A new status line (100 Continue, or a new response): forget the old id. */
	if (n >= 5 && memcmp(line, "HTTP/", 5) == 0) {
		r->request_id[0] = '\0';
		return n;
	}
	if (!header_is(line, n, "x-amzn-requestid") && !header_is(line, n, "x-amz-request-id"))
		return n;
	start = (size_t)((const char *)memchr(line, ':', n) - line) + 1;
	for (i = start; i < n && o + 1 < sizeof(r->request_id); i++) {
		unsigned char ch = (unsigned char)line[i];

		if (ch > 0x20 && ch < 0x7f)
			r->request_id[o++] = (char)ch;
	}
	r->request_id[o] = '\0';
	return n;
}

/* RFC 9110 token characters. */
static bool header_name_ok(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++) {
		if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s))
			return false;
	}
	return true;
}

static bool header_value_ok(const char *s)
{
	for (; *s; s++) {
		if (*s == '\r' || *s == '\n')
			return false;
	}
	return true;
}

static void wipe_headers(struct curl_slist *list)
{
	struct curl_slist *l;

	for (l = list; l; l = l->next)
		secure_zero(l->data, strlen(l->data));
	curl_slist_free_all(list);
}

static bool has_header(const struct http_request *req, const char *name)
{
	size_t i;

	for (i = 0; i < req->nheaders; i++) {
		if (strcasecmp(req->headers[i].name, name) == 0)
			return true;
	}
	return false;
}

/*
 * Builds libcurl's header list.  Returns -1 (err set, no value quoted) for a
 * header that would split the request.
 */
static int build_headers(const struct http_request *req, bool sends_body, struct curl_slist **out,
                         struct amis_err *err)
{
	struct curl_slist *list = NULL, *l;
	struct strbuf line;
	size_t i;

	*out = NULL;
	sb_init(&line);
	for (i = 0; i < req->nheaders; i++) {
		const struct http_header *h = &req->headers[i];

		if (!h->name || !header_name_ok(h->name)) {
			err_set(err, AMIS_E_INVALID_REQUEST, "invalid HTTP header name");
			goto fail;
		}
		if (!h->value || !header_value_ok(h->value)) {
			err_set(err, AMIS_E_INVALID_REQUEST, "HTTP header %s has an invalid value",
			        h->name);
			goto fail;
		}
		sb_reset(&line);
		/* "Name;" is libcurl's syntax for a header with an empty value. */
		if (h->value[0])
			sb_appendf(&line, "%s: %s", h->name, h->value);
		else
			sb_appendf(&line, "%s;", h->name);
		l = curl_slist_append(list, line.data);
		if (!l) {
			err_set(err, AMIS_E_OUT_OF_MEMORY, "cannot build HTTP headers");
			goto fail;
		}
		list = l;
	}
	sb_free(&line); /* wipes the last line, which may hold a secret */

	/*
	 * No "Expect: 100-continue" round trip for larger bodies: the one call
	 * made while a filesystem is frozen must cost a single round trip.  And
	 * no default form Content-Type on bodies the caller did not type.
	 */
	if (!has_header(req, "Expect")) {
		l = curl_slist_append(list, "Expect:");
		if (!l)
			goto oom;
		list = l;
	}
	if (sends_body && !has_header(req, "Content-Type")) {
		l = curl_slist_append(list, "Content-Type:");
		if (!l)
			goto oom;
		list = l;
	}
	*out = list;
	return 0;
oom:
	err_set(err, AMIS_E_OUT_OF_MEMORY, "cannot build HTTP headers");
fail:
	sb_free(&line);
	wipe_headers(list);
	return -1;
}

static void set_no_proxy(CURL *h)
{
	const char *env = getenv("NO_PROXY");
	struct strbuf sb;

	if (!env || !*env)
		env = getenv("no_proxy");
	sb_init(&sb);
	if (env && *env)
		sb_appendf(&sb, "%s,", env);
	sb_appends(&sb, HTTP_NO_PROXY_ALWAYS);
	curl_easy_setopt(h, CURLOPT_NOPROXY, sb.data); /* libcurl copies it */
	sb_free(&sb);
}

/*
 * Runs the transfers of hs[0..n) together on the client's multi handle, each
 * on its own connection (the multi handle's cache keeps them warm for the
 * next requests).  rcs[i] gets curl's result for hs[i]; *aborted is set (and
 * every transfer dropped) when abort_fd became readable or hung up first:
 * the party we work for has gone away.
 */
static void perform_multi(struct http_client *c, CURL **hs, size_t n, CURLcode *rcs, bool *aborted)
{
	CURLMsg *msg;
	int running = 1, queued;
	size_t i, added = 0;

	*aborted = false;
	for (i = 0; i < n; i++)
		rcs[i] = CURLE_FAILED_INIT;
	/* Abandoned before it was even sent: do not send it. */
	if (c->abort_fd >= 0) {
		struct pollfd p = {.fd = c->abort_fd, .events = POLLIN};

		if (poll(&p, 1, 0) > 0) {
			*aborted = true;
			for (i = 0; i < n; i++)
				rcs[i] = CURLE_ABORTED_BY_CALLBACK;
			return;
		}
	}
	for (added = 0; added < n; added++)
		if (curl_multi_add_handle(c->multi, hs[added]) != CURLM_OK)
			goto out;
	for (;;) {
		struct curl_waitfd wfd = {.fd = c->abort_fd, .events = CURL_WAIT_POLLIN};

		if (curl_multi_perform(c->multi, &running) != CURLM_OK)
			break;
		while ((msg = curl_multi_info_read(c->multi, &queued)))
			for (i = 0; i < n; i++)
				if (msg->msg == CURLMSG_DONE && msg->easy_handle == hs[i])
					rcs[i] = msg->data.result;
		if (!running)
			break;
		if (curl_multi_poll(c->multi, c->abort_fd >= 0 ? &wfd : NULL,
		                    c->abort_fd >= 0 ? 1 : 0, 1000, NULL) != CURLM_OK)
			break;
		if (c->abort_fd >= 0 && wfd.revents) {
			*aborted = true;
			for (i = 0; i < n; i++)
				if (rcs[i] == CURLE_FAILED_INIT)
					rcs[i] = CURLE_ABORTED_BY_CALLBACK;
			break;
		}
	}
out:
	for (i = 0; i < added; i++)
		curl_multi_remove_handle(c->multi, hs[i]);
}

/* Length of url without its query string, for messages. */
static int url_shown_len(const char *url)
{
	size_t n = strcspn(url, "?#");

	return n > 200 ? 200 : (int)n;
}

/* One transfer of http_perform_many: its request, buffers and outcome. */
struct transfer {
	CURL *h;
	const struct http_request *req;
	struct http_response *resp;
	struct amis_err *err;
	struct body_sink sink;
	struct body_source src;
	struct curl_slist *headers;
	long timeout_ms;
	long max_idle_s;
	char errbuf[CURL_ERROR_SIZE];
	bool ready; /* options set: to be performed */
};

/* Checks req and sets t->h's options for it; -1 with t->err set. */
static int transfer_setup(struct transfer *t)
{
	const struct http_request *req = t->req;
	struct http_response *resp = t->resp;
	CURL *h = t->h;
	long connect_ms;
	bool sends_body;

	resp->status = 0;
	resp->request_id[0] = '\0';
	sb_reset(&resp->body);
	t->sink = (struct body_sink){.sb = &resp->body, .too_large = false};
	t->src = (struct body_source){
	    .data = req ? req->body : NULL, .len = req ? req->body_len : 0, .pos = 0};
	if (!req || !req->method || !req->url)
		return err_set(t->err, AMIS_E_INVALID_REQUEST, "incomplete HTTP request");
	if (req->body_len && !req->body)
		return err_set(t->err, AMIS_E_INVALID_REQUEST, "HTTP body length without a body");
	if (req->body_len > HTTP_MAX_BODY)
		return err_set(t->err, AMIS_E_INVALID_REQUEST,
		               "HTTP request body is larger than 8 MiB");
	if (req->no_resend && strcmp(req->method, "POST") != 0)
		return err_set(t->err, AMIS_E_INVALID_REQUEST, "no_resend is for POST requests");

	t->timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : HTTP_DEFAULT_TIMEOUT_MS;
	connect_ms = req->connect_timeout_ms > 0 ? req->connect_timeout_ms
	                                         : (t->timeout_ms < HTTP_MAX_CONNECT_TIMEOUT_MS
	                                                ? t->timeout_ms
	                                                : HTTP_MAX_CONNECT_TIMEOUT_MS);
	sends_body = strcmp(req->method, "POST") == 0 || strcmp(req->method, "PUT") == 0 ||
	             req->body_len > 0;
	if (build_headers(req, sends_body, &t->headers, t->err) < 0)
		return -1;

	/* Resetting options keeps the handle's live connections for reuse. */
	curl_easy_reset(h);
	t->errbuf[0] = '\0';
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, t->errbuf);
	curl_easy_setopt(h, CURLOPT_URL, req->url);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, t->timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms);
	curl_easy_setopt(h, CURLOPT_TCP_KEEPALIVE, 1L);
	if (t->max_idle_s > 0)
		curl_easy_setopt(h, CURLOPT_MAXAGE_CONN, t->max_idle_s);
	curl_easy_setopt(h, CURLOPT_USERAGENT, HTTP_USER_AGENT);
	set_no_proxy(h);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &t->sink);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, resp);

	if (strcmp(req->method, "GET") == 0 && !req->body_len) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	} else if (strcmp(req->method, "HEAD") == 0) {
		curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else {
		if (strcmp(req->method, "POST") != 0)
			curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
		if (sends_body && req->no_resend) {
			/* A read callback without a way back: see on_seek(). */
			curl_easy_setopt(h, CURLOPT_POST, 1L);
			curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
			curl_easy_setopt(h, CURLOPT_READFUNCTION, on_read);
			curl_easy_setopt(h, CURLOPT_READDATA, &t->src);
			curl_easy_setopt(h, CURLOPT_SEEKFUNCTION, on_seek);
			curl_easy_setopt(h, CURLOPT_SEEKDATA, &t->src);
		} else if (sends_body) {
			curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body_len);
			curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body ? req->body : "");
		}
	}
	t->ready = true;
	return 0;
}

/* The outcome of a performed transfer: 0, or -1 with t->err set. */
static int transfer_finish(struct transfer *t, CURLcode rc, bool aborted)
{
	const struct http_request *req = t->req;
	long status = 0;

	curl_easy_getinfo(t->h, CURLINFO_RESPONSE_CODE, &status);
	t->resp->status = status;
	/* Drop every pointer to our buffers (headers, body) from the handle. */
	curl_easy_reset(t->h);
	wipe_headers(t->headers);
	t->headers = NULL;

	if (rc == CURLE_OK)
		return 0;
	if (aborted)
		return err_set(t->err, AMIS_E_CLIENT_GONE,
		               "%s %.*s: abandoned because the client went away; the request may "
		               "have been executed",
		               req->method, url_shown_len(req->url), req->url);
	if (t->src.rewind_refused)
		return err_set(t->err, AMIS_E_CONNECTION_ERROR,
		               "%s %.*s: the connection closed without an answer after the request "
		               "was sent; not sent again, as it may have been executed",
		               req->method, url_shown_len(req->url), req->url);
	if (t->sink.too_large)
		return err_set(t->err, AMIS_E_CONNECTION_ERROR,
		               "%s %.*s: response body is larger than 8 MiB", req->method,
		               url_shown_len(req->url), req->url);
	if (rc == CURLE_OPERATION_TIMEDOUT)
		return err_set(t->err, AMIS_E_TIMEOUT, "%s %.*s timed out after %ld ms (%s)",
		               req->method, url_shown_len(req->url), req->url, t->timeout_ms,
		               t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
	return err_set(t->err, AMIS_E_CONNECTION_ERROR, "%s %.*s failed: %s", req->method,
	               url_shown_len(req->url), req->url,
	               t->errbuf[0] ? t->errbuf : curl_easy_strerror(rc));
}

/* The easy handle of transfer i: the client's own first, then its extra ones. */
static CURL *handle_for(struct http_client *c, size_t i)
{
	if (i == 0)
		return c->curl;
	if (!c->extra[i - 1])
		c->extra[i - 1] = curl_easy_init();
	return c->extra[i - 1];
}

int http_perform_many(struct http_client *c, const struct http_request *reqs,
                      struct http_response *resps, struct amis_err *errs, int *rcs, size_t n)
{
	struct transfer t[HTTP_MAX_PARALLEL];
	CURL *hs[HTTP_MAX_PARALLEL];
	CURLcode cc[HTTP_MAX_PARALLEL];
	size_t i, nready = 0, k;
	bool aborted = false;
	int failed = 0;

	if (n > HTTP_MAX_PARALLEL) {
		for (i = 0; i < n; i++)
			rcs[i] = err_set(&errs[i], AMIS_E_INVALID_REQUEST,
			                 "more than %d HTTP requests at once", HTTP_MAX_PARALLEL);
		return -1;
	}
	memset(t, 0, sizeof(t));
	for (i = 0; i < n; i++) {
		t[i].req = &reqs[i];
		t[i].resp = &resps[i];
		t[i].err = &errs[i];
		rcs[i] = -1;
		if (!c) {
			err_set(&errs[i], AMIS_E_INVALID_REQUEST, "incomplete HTTP request");
			continue;
		}
		t[i].h = handle_for(c, i);
		t[i].max_idle_s = c->max_idle_s;
		if (!t[i].h) {
			err_set(&errs[i], AMIS_E_OUT_OF_MEMORY, "cannot create an HTTP handle");
			continue;
		}
		if (transfer_setup(&t[i]) == 0)
			hs[nready++] = t[i].h;
	}
	if (nready)
		perform_multi(c, hs, nready, cc, &aborted);
	for (i = 0, k = 0; i < n; i++) {
		if (t[i].ready)
			rcs[i] = transfer_finish(&t[i], cc[k++], aborted);
		if (rcs[i] != 0)
			failed = -1;
	}
	return failed;
}

int http_perform(struct http_client *c, const struct http_request *req, struct http_response *resp,
                 struct amis_err *err)
{
	int rc;

	http_perform_many(c, req, resp, err, &rc, 1);
	return rc;
}
