/*
 * creds.c - see creds.h.
 *
 * Secrets pass through here in three shapes: environment strings (not
 * ours to zero), file contents and JSON documents (zeroed before they are
 * freed) and struct aws_credentials (zeroed by creds_clear()).  Messages
 * name variables, keys and fields, never their values.
 */
#include "creds.h"
#include "log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <json-c/json.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define CREDS_MAX_JSON (64 * 1024)
#define CREDS_MAX_FILE (1024 * 1024)

enum creds_source { SRC_NONE, SRC_CONFIG, SRC_ENV, SRC_PROFILE, SRC_IMDS };

struct creds_provider {
	char *static_key;
	char *static_secret;
	char *static_token;
	char *profile;
	char *file;
	struct amis_env env;
	bool have_env;
	struct imds_client *imds;
	bool own_imds;
	bool no_imds;
	/* creds_provider_pin_file(): the file opened in advance (-1: missing). */
	bool pinned;
	int pinned_fd;
	char *pinned_path;

	struct aws_credentials cached;
	enum creds_source src; /* SRC_NONE: nothing cached */
	time_t next_refresh;   /* for expiring credentials */
};

void creds_clear(struct aws_credentials *c)
{
	secure_zero(c, sizeof(*c));
}

static void free_secret(char *s)
{
	if (s) {
		secure_zero(s, strlen(s));
		free(s);
	}
}

/*
 * Copies one credential field after checking it: non-empty, fits, printable
 * without blanks.  name is how the user knows the field ("AWS_SESSION_TOKEN",
 * "\"Token\""); the value never appears in the message.
 */
static int copy_field(char *dst, size_t dstsz, const char *src, size_t len, enum amis_code code,
                      const char *name, struct amis_err *err)
{
	if (len == 0)
		return err_set(err, code, "%s is empty", name);
	if (len >= dstsz)
		return err_set(err, code, "%s is too long (%zu bytes, at most %zu)", name, len,
		               dstsz - 1);
	for (size_t i = 0; i < len; i++) {
		if (!isgraph((unsigned char)src[i]))
			return err_set(err, code, "%s contains blanks or control characters", name);
	}
	memcpy(dst, src, len);
	dst[len] = '\0';
	return 0;
}

/* Fills out from three strings (token may be NULL); out is cleared on failure. */
static int fill_creds(struct aws_credentials *out, const char *key, const char *key_name,
                      const char *secret, const char *secret_name, const char *token,
                      const char *token_name, const char *source, struct amis_err *err)
{
	creds_clear(out);
	if (copy_field(out->access_key_id, sizeof(out->access_key_id), key, strlen(key),
	               AMIS_E_MALFORMED_CREDENTIALS, key_name, err) < 0 ||
	    copy_field(out->secret_access_key, sizeof(out->secret_access_key), secret,
	               strlen(secret), AMIS_E_MALFORMED_CREDENTIALS, secret_name, err) < 0 ||
	    (token && *token &&
	     copy_field(out->session_token, sizeof(out->session_token), token, strlen(token),
	                AMIS_E_MALFORMED_CREDENTIALS, token_name, err) < 0)) {
		creds_clear(out);
		return -1;
	}
	snprintf(out->source, sizeof(out->source), "%s", source);
	return 0;
}

bool creds_need_refresh(const struct aws_credentials *c, time_t now)
{
	return c->expiration != 0 && now >= c->expiration - CREDS_REFRESH_WINDOW_S;
}

/* Exactly n decimal digits at *p; advances *p. */
static int digits(const char **p, int n, int *out)
{
	int v = 0;

	for (int i = 0; i < n; i++) {
		if (!isdigit((unsigned char)(*p)[i]))
			return -1;
		v = v * 10 + ((*p)[i] - '0');
	}
	*p += n;
	*out = v;
	return 0;
}

static int expect(const char **p, char c)
{
	if (**p != c)
		return -1;
	(*p)++;
	return 0;
}

static int days_in_month(int y, int mo)
{
	static const int days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;

	return mo == 2 && leap ? 29 : days[mo - 1];
}

int creds_parse_iso8601(const char *s, time_t *out)
{
	struct tm tm = {0};
	int y, mo, d, h, mi, sec, oh = 0, om = 0, sign = 0;
	const char *p = s;
	time_t t;

	/*
	 * By hand rather than with strptime(): glibc's %z accepts and ignores
	 * things we want to reject, and "Z" handling differs between libcs.
	 */
	if (digits(&p, 4, &y) || expect(&p, '-') || digits(&p, 2, &mo) || expect(&p, '-') ||
	    digits(&p, 2, &d) || expect(&p, 'T') || digits(&p, 2, &h) || expect(&p, ':') ||
	    digits(&p, 2, &mi) || expect(&p, ':') || digits(&p, 2, &sec))
		return -1;
	if (*p == '.') {
		p++;
		if (!isdigit((unsigned char)*p))
			return -1;
		while (isdigit((unsigned char)*p))
			p++;
	}
	if (*p == 'Z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		sign = *p++ == '+' ? 1 : -1;
		if (digits(&p, 2, &oh) || expect(&p, ':') || digits(&p, 2, &om) || oh > 23 ||
		    om > 59)
			return -1;
	} else {
		return -1;
	}
	if (*p != '\0')
		return -1;
	/* 60: a leap second, which timegm() folds into the next minute. */
	if (y < 1970 || mo < 1 || mo > 12 || d < 1 || d > days_in_month(y, mo) || h > 23 ||
	    mi > 59 || sec > 60)
		return -1;
	tm.tm_year = y - 1900;
	tm.tm_mon = mo - 1;
	tm.tm_mday = d;
	tm.tm_hour = h;
	tm.tm_min = mi;
	tm.tm_sec = sec;
	t = timegm(&tm);
	if (t == (time_t)-1)
		return -1;
	t -= sign * (oh * 3600 + om * 60);
	if (t <= 0)
		return -1;
	*out = t;
	return 0;
}

/*
 * Looks up a string member of the credentials document, checking type and
 * size; the message names the field only.
 */
static int json_field(struct json_object *o, const char *key, struct json_object **m,
                      struct amis_err *err)
{
	if (!json_object_object_get_ex(o, key, m) || json_object_is_type(*m, json_type_null))
		return err_set(err, AMIS_E_MALFORMED_CREDENTIALS,
		               "IMDS credentials document has no \"%s\"", key);
	if (!json_object_is_type(*m, json_type_string))
		return err_set(err, AMIS_E_MALFORMED_CREDENTIALS,
		               "IMDS credentials document: \"%s\" is not a string", key);
	if ((size_t)json_object_get_string_len(*m) != strlen(json_object_get_string(*m)))
		return err_set(err, AMIS_E_MALFORMED_CREDENTIALS,
		               "IMDS credentials document: \"%s\" contains NUL", key);
	return 0;
}

static int copy_json_field(struct json_object *o, const char *key, char *dst, size_t dstsz,
                           struct amis_err *err)
{
	struct json_object *m;
	char name[64];

	if (json_field(o, key, &m, err) < 0)
		return -1;
	snprintf(name, sizeof(name), "IMDS credentials document: \"%s\"", key);
	return copy_field(dst, dstsz, json_object_get_string(m),
	                  (size_t)json_object_get_string_len(m), AMIS_E_MALFORMED_CREDENTIALS, name,
	                  err);
}

/*
 * json-c frees its strings without clearing them.  Clear the secret ones
 * ourselves (the storage is ours to write: json-c hands out a pointer into
 * the object).  The tokener's scratch buffer is freed uncleared; the
 * document itself is zeroed by the caller.
 */
static void zero_json_member(struct json_object *o, const char *key)
{
	struct json_object *m;

	if (json_object_object_get_ex(o, key, &m) && json_object_is_type(m, json_type_string))
		secure_zero((char *)json_object_get_string(m),
		            (size_t)json_object_get_string_len(m));
}

int creds_parse_imds_json(const char *json, size_t len, struct aws_credentials *out,
                          struct amis_err *err)
{
	struct json_tokener *tok;
	struct json_object *o, *m;
	enum json_tokener_error jerr;
	const char *code;
	size_t end;
	int rc = -1;

	creds_clear(out);
	if (len > CREDS_MAX_JSON)
		return err_set(err, AMIS_E_MALFORMED_CREDENTIALS,
		               "IMDS credentials document is too large (%zu bytes)", len);
	tok = json_tokener_new_ex(16);
	if (!tok)
		return err_set(err, AMIS_E_MALFORMED_CREDENTIALS,
		               "out of memory parsing credentials");
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
	o = json_tokener_parse_ex(tok, json, (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (!o)
		return err_set(err, AMIS_E_MALFORMED_CREDENTIALS,
		               "IMDS credentials document is not valid JSON: %s",
		               jerr == json_tokener_continue ? "truncated"
		                                             : json_tokener_error_desc(jerr));
	while (end < len && isspace((unsigned char)json[end]))
		end++;
	if (end < len || !json_object_is_type(o, json_type_object)) {
		err_set(err, AMIS_E_MALFORMED_CREDENTIALS,
		        "IMDS credentials document is not a single JSON object");
		goto out;
	}

	/*
	 * Code is documented but not needed: the four members below are (as in
	 * botocore's fetcher).  When it is there, it must say Success.
	 */
	if (json_object_object_get_ex(o, "Code", &m) && !json_object_is_type(m, json_type_null)) {
		if (json_field(o, "Code", &m, err) < 0)
			goto out;
		code = json_object_get_string(m);
	} else {
		code = "Success";
	}
	if (strcmp(code, "Success") != 0) {
		/* Code is a status word, not a secret; quote it only if it looks like one. */
		bool word = strlen(code) <= 40 &&
		            strspn(code, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		                         "abcdefghijklmnopqrstuvwxyz") == strlen(code);
		err_set(err, AMIS_E_IMDS_ERROR, "IMDS did not return credentials: Code is \"%s\"",
		        word ? code : "(not shown)");
		goto out;
	}
	if (copy_json_field(o, "AccessKeyId", out->access_key_id, sizeof(out->access_key_id),
	                    err) ||
	    copy_json_field(o, "SecretAccessKey", out->secret_access_key,
	                    sizeof(out->secret_access_key), err) ||
	    copy_json_field(o, "Token", out->session_token, sizeof(out->session_token), err) ||
	    json_field(o, "Expiration", &m, err))
		goto out;
	if (creds_parse_iso8601(json_object_get_string(m), &out->expiration) < 0) {
		err_set(err, AMIS_E_MALFORMED_CREDENTIALS,
		        "IMDS credentials document: \"Expiration\" is not an ISO 8601 UTC time");
		goto out;
	}
	snprintf(out->source, sizeof(out->source), "imds");
	rc = 0;
out:
	zero_json_member(o, "SecretAccessKey");
	zero_json_member(o, "Token");
	json_object_put(o);
	if (rc < 0)
		creds_clear(out);
	return rc;
}

/* State of one shared credentials file parse. */
struct ini_state {
	const char *profile;
	bool section_seen; /* the profile has at least one key */
	bool dup;          /* a key of ours appeared twice in the profile */
	const char *dup_key;
	char key[sizeof(((struct aws_credentials *)0)->access_key_id) + 1];
	char secret[sizeof(((struct aws_credentials *)0)->secret_access_key) + 1];
	char token[sizeof(((struct aws_credentials *)0)->session_token) + 1];
	bool has_key, has_secret, has_token;
};

/* Whether section, ignoring surrounding blanks, is name. */
static bool section_is(const char *section, const char *name)
{
	size_t n = strlen(name);

	while (isspace((unsigned char)*section))
		section++;
	if (strncmp(section, name, n) != 0)
		return false;
	for (section += n; *section; section++) {
		if (!isspace((unsigned char)*section))
			return false;
	}
	return true;
}

static void ini_take(struct ini_state *st, const char *name, char *dst, size_t dstsz, bool *has,
                     const char *value)
{
	if (*has) {
		st->dup = true;
		st->dup_key = name;
	}
	/* One byte larger than the credential fields: too long is caught later. */
	snprintf(dst, dstsz, "%s", value);
	*has = true;
}

static int ini_handler_cb(void *user, const char *section, const char *name, const char *value)
{
	struct ini_state *st = user;

	if (!section_is(section, st->profile))
		return 1;
	st->section_seen = true;
	if (strcasecmp(name, "aws_access_key_id") == 0)
		ini_take(st, "aws_access_key_id", st->key, sizeof(st->key), &st->has_key, value);
	else if (strcasecmp(name, "aws_secret_access_key") == 0)
		ini_take(st, "aws_secret_access_key", st->secret, sizeof(st->secret),
		         &st->has_secret, value);
	else if (strcasecmp(name, "aws_session_token") == 0)
		ini_take(st, "aws_session_token", st->token, sizeof(st->token), &st->has_token,
		         value);
	return 1;
}

/*
 * Debian's libinih reads lines into a 200-byte stack buffer by default and
 * silently splits longer ones, which session tokens (about 1 kB) are.  It
 * exposes its compile-time settings as variables: use a heap buffer that
 * fits any line for our parse, then put the defaults back for other users
 * of the library (config.c).  The helper is single-threaded.
 * Continuation lines are turned off too: credentials never span lines, and
 * this way indented keys are keys rather than parts of the previous value.
 */
static int ini_parse_long_lines(const char *text, struct ini_state *st)
{
	bool use_stack = ini_use_stack, allow_realloc = ini_allow_realloc;
	bool multiline = ini_allow_multiline;
	int max_line = ini_max_line, initial_alloc = ini_initial_alloc;
	size_t len = strlen(text);
	int rc;

	ini_use_stack = false;
	ini_allow_realloc = true;
	ini_max_line = len + 3 > (size_t)max_line ? (int)(len + 3) : max_line;
	ini_initial_alloc = initial_alloc;
	ini_allow_multiline = false;
	rc = ini_parse_string(text, ini_handler_cb, st);
	ini_allow_multiline = multiline;
	ini_use_stack = use_stack;
	ini_allow_realloc = allow_realloc;
	ini_max_line = max_line;
	ini_initial_alloc = initial_alloc;
	return rc;
}

int creds_parse_shared_file(const char *text, const char *profile, const char *origin,
                            struct aws_credentials *out, struct amis_err *err)
{
	struct ini_state *st = xcalloc(1, sizeof(*st));
	char source[sizeof(out->source)];
	int line, rc = -1;

	creds_clear(out);
	if (strlen(text) > CREDS_MAX_FILE) {
		err_set(err, AMIS_E_CREDENTIALS_FILE, "%s is too large", origin);
		goto out;
	}
	st->profile = profile;
	line = ini_parse_long_lines(text, st);
	if (line != 0) {
		err_set(err, AMIS_E_CREDENTIALS_FILE, "%s: syntax error at line %d", origin, line);
		goto out;
	}
	if (st->dup) {
		err_set(err, AMIS_E_CREDENTIALS_FILE, "%s: profile \"%s\" sets %s more than once",
		        origin, profile, st->dup_key);
		goto out;
	}
	if (!st->section_seen) {
		err_set(err, AMIS_E_PROFILE_NOT_FOUND, "profile \"%s\" not found in %s", profile,
		        origin);
		goto out;
	}
	if (!st->has_key || !st->key[0]) {
		err_set(err, AMIS_E_PROFILE_NOT_FOUND,
		        "profile \"%s\" in %s has no aws_access_key_id (role_arn, sso and "
		        "credential_process profiles are not supported)",
		        profile, origin);
		goto out;
	}
	if (!st->has_secret || !st->secret[0]) {
		err_set(err, AMIS_E_PARTIAL_CREDENTIALS,
		        "profile \"%s\" in %s has aws_access_key_id but no aws_secret_access_key",
		        profile, origin);
		goto out;
	}
	snprintf(source, sizeof(source), "profile:%s", profile);
	rc = fill_creds(out, st->key, "aws_access_key_id", st->secret, "aws_secret_access_key",
	                st->token, "aws_session_token", source, err);
	if (rc < 0)
		err_prefix(err, "%s, profile \"%s\"", origin, profile);
out:
	secure_zero(st, sizeof(*st));
	free(st);
	return rc;
}

/* Reads a whole (small, regular) open file, from its start, into sb. */
static int read_secret_fd(int fd, const char *path, struct strbuf *sb, struct amis_err *err)
{
	char buf[4096];
	struct stat st;
	off_t off = 0;
	ssize_t n;

	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size > CREDS_MAX_FILE)
		return err_set(err, AMIS_E_CREDENTIALS_FILE,
		               "%s is not a regular file of at most %d bytes", path,
		               CREDS_MAX_FILE);
	while ((n = pread(fd, buf, sizeof(buf), off)) != 0) {
		if (n < 0) {
			if (errno == EINTR)
				continue;
			err_set(err, AMIS_E_CREDENTIALS_FILE, "could not read %s: %s", path,
			        strerror(errno));
			secure_zero(buf, sizeof(buf));
			return -1;
		}
		if (sb->len + (size_t)n > CREDS_MAX_FILE) {
			secure_zero(buf, sizeof(buf));
			return err_set(err, AMIS_E_CREDENTIALS_FILE, "%s is too large", path);
		}
		sb_append(sb, buf, (size_t)n);
		off += n;
	}
	secure_zero(buf, sizeof(buf));
	if (memchr(sb_str(sb), '\0', sb->len))
		return err_set(err, AMIS_E_CREDENTIALS_FILE, "%s contains NUL bytes", path);
	return 0;
}

/* Opens path; *missing tells ENOENT apart from other failures. */
static int open_secret_file(const char *path, bool *missing, struct amis_err *err)
{
	int fd;

	*missing = false;
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd >= 0)
		return fd;
	if (errno == ENOENT || errno == ENOTDIR) {
		*missing = true;
		return err_set(err, AMIS_E_CREDENTIALS_FILE, "%s does not exist", path);
	}
	return err_set(err, AMIS_E_CREDENTIALS_FILE, "could not open %s: %s", path,
	               strerror(errno));
}

/*
 * Reads a whole (small, regular) file into sb.  *missing tells ENOENT apart
 * from other failures, which are errors.
 */
static int read_secret_file(const char *path, struct strbuf *sb, bool *missing,
                            struct amis_err *err)
{
	int fd = open_secret_file(path, missing, err), rc;

	if (fd < 0)
		return -1;
	rc = read_secret_fd(fd, path, sb, err);
	close(fd);
	return rc;
}

struct creds_provider *creds_provider_new(const struct creds_config *cfg)
{
	struct creds_provider *p = xcalloc(1, sizeof(*p));

	if (cfg->access_key_id)
		p->static_key = xstrdup(cfg->access_key_id);
	if (cfg->secret_access_key)
		p->static_secret = xstrdup(cfg->secret_access_key);
	if (cfg->session_token)
		p->static_token = xstrdup(cfg->session_token);
	if (cfg->profile)
		p->profile = xstrdup(cfg->profile);
	if (cfg->shared_credentials_file)
		p->file = xstrdup(cfg->shared_credentials_file);
	if (cfg->env) {
		p->env = *cfg->env;
		p->have_env = true;
	}
	p->imds = cfg->imds;
	p->no_imds = cfg->no_imds;
	p->pinned_fd = -1;
	return p;
}

void creds_provider_free(struct creds_provider *p)
{
	if (!p)
		return;
	free_secret(p->static_key);
	free_secret(p->static_secret);
	free_secret(p->static_token);
	free(p->profile);
	free(p->file);
	free(p->pinned_path);
	if (p->pinned_fd >= 0)
		close(p->pinned_fd);
	if (p->own_imds)
		imds_client_free(p->imds);
	creds_clear(&p->cached);
	free(p);
}

void creds_invalidate(struct creds_provider *p)
{
	creds_clear(&p->cached);
	p->src = SRC_NONE;
	p->next_refresh = 0;
}

static const struct amis_env *penv(const struct creds_provider *p)
{
	return p->have_env ? &p->env : NULL;
}

/* The shared credentials file path; malloc'd. */
static char *credentials_path(const struct creds_provider *p)
{
	const char *f = p->file ? p->file : amis_env_get(penv(p), "AWS_SHARED_CREDENTIALS_FILE");
	const char *home = amis_env_get(penv(p), "HOME");
	struct strbuf sb;

	if (!home) {
		struct passwd *pw = getpwuid(geteuid());

		home = pw && pw->pw_dir ? pw->pw_dir : "/";
	}
	sb_init(&sb);
	if (f && strncmp(f, "~/", 2) == 0)
		sb_appendf(&sb, "%s%s", home, f + 1);
	else if (f)
		sb_appends(&sb, f);
	else
		sb_appendf(&sb, "%s/.aws/credentials", home);
	return sb.data;
}

int creds_provider_pin_file(struct creds_provider *p, struct amis_err *err)
{
	bool missing;

	if (p->pinned)
		return 0;
	p->pinned_path = credentials_path(p);
	p->pinned_fd = open_secret_file(p->pinned_path, &missing, err);
	if (p->pinned_fd < 0 && !missing) {
		free(p->pinned_path);
		p->pinned_path = NULL;
		return -1;
	}
	err_clear(err);
	p->pinned = true;
	return 0;
}

/*
 * Each step returns 1 when it has nothing to offer (with a note for the
 * final "NoCredentials" message), 0 with credentials, -1 on a hard error.
 */
static int from_config(struct creds_provider *p, struct aws_credentials *out, struct strbuf *notes,
                       struct amis_err *err)
{
	if (!p->static_key && !p->static_secret) {
		sb_appends(notes, "configuration: none");
		return 1;
	}
	if (!p->static_key || !p->static_secret)
		return err_set(err, AMIS_E_PARTIAL_CREDENTIALS,
		               "the configuration sets only one of access_key_id and "
		               "secret_access_key");
	return fill_creds(out, p->static_key, "configured access_key_id", p->static_secret,
	                  "configured secret_access_key", p->static_token,
	                  "configured session_token", "config", err);
}

static int from_environment(struct creds_provider *p, struct aws_credentials *out,
                            struct strbuf *notes, struct amis_err *err)
{
	const char *key = amis_env_get(penv(p), "AWS_ACCESS_KEY_ID");
	const char *secret = amis_env_get(penv(p), "AWS_SECRET_ACCESS_KEY");

	if (!key && !secret) {
		sb_appends(notes, "; environment: AWS_ACCESS_KEY_ID not set");
		return 1;
	}
	if (!secret)
		return err_set(err, AMIS_E_PARTIAL_CREDENTIALS,
		               "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not");
	if (!key)
		return err_set(err, AMIS_E_PARTIAL_CREDENTIALS,
		               "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not");
	return fill_creds(out, key, "AWS_ACCESS_KEY_ID", secret, "AWS_SECRET_ACCESS_KEY",
	                  amis_env_get(penv(p), "AWS_SESSION_TOKEN"), "AWS_SESSION_TOKEN",
	                  "environment", err);
}

static int from_profile(struct creds_provider *p, struct aws_credentials *out, struct strbuf *notes,
                        struct amis_err *err)
{
	const char *env_profile = amis_env_get(penv(p), "AWS_PROFILE");
	const char *profile = p->profile ? p->profile : env_profile ? env_profile : "default";
	/* A profile someone asked for must exist: a typo should not fall through to IMDS. */
	bool requested = p->profile || env_profile;
	char *path = xstrdup(p->pinned ? p->pinned_path : "");
	struct strbuf text;
	bool missing = false;
	int rc;

	sb_init(&text);
	if (!p->pinned) {
		free(path);
		path = credentials_path(p);
		rc = read_secret_file(path, &text, &missing, err);
	} else if (p->pinned_fd < 0) {
		missing = true;
		rc = err_set(err, AMIS_E_CREDENTIALS_FILE, "%s does not exist", path);
	} else {
		rc = read_secret_fd(p->pinned_fd, path, &text, err);
	}
	if (rc < 0 && missing && !requested) {
		sb_appendf(notes, "; profile \"%s\": %s does not exist", profile, path);
		rc = 1;
		goto out;
	}
	if (rc < 0) {
		if (missing)
			err_set(err, AMIS_E_PROFILE_NOT_FOUND,
			        "profile \"%s\" not found: %s does not exist", profile, path);
		goto out;
	}
	rc = creds_parse_shared_file(sb_str(&text), profile, path, out, err);
	if (rc < 0 && !requested && err_is(err, AMIS_E_PROFILE_NOT_FOUND)) {
		sb_appendf(notes, "; profile: %s", err->msg);
		err_clear(err);
		rc = 1;
	}
out:
	sb_free(&text);
	free(path);
	return rc;
}

static struct imds_client *provider_imds(struct creds_provider *p)
{
	if (!p->imds) {
		p->imds = imds_client_new_env(NULL, penv(p));
		p->own_imds = p->imds != NULL;
	}
	return p->imds;
}

/*
 * Role credentials from IMDS.  *no_role tells "IMDS unreachable or no role
 * attached" (the chain goes on) from a role whose credentials are broken.
 */
static int fetch_imds(struct creds_provider *p, struct aws_credentials *out, bool *no_role,
                      struct amis_err *err)
{
	struct imds_client *imds = provider_imds(p);
	char role[80];
	struct strbuf json;
	int rc;

	*no_role = true;
	if (!imds)
		return err_set(err, AMIS_E_IMDS_UNAVAILABLE,
		               "could not create an HTTP client for IMDS");
	if (imds_get_role_name(imds, role, sizeof(role), err) < 0)
		return -1;
	*no_role = false;
	sb_init(&json);
	rc = imds_get_role_credentials_json(imds, role, &json, err);
	if (rc == 0) {
		rc = creds_parse_imds_json(sb_str(&json), json.len, out, err);
		if (rc < 0)
			err_prefix(err, "IAM role %s", role);
	}
	sb_free(&json);
	if (rc == 0)
		snprintf(out->source, sizeof(out->source), "imds:%.26s", role);
	return rc;
}

static int from_imds(struct creds_provider *p, struct aws_credentials *out, struct strbuf *notes,
                     struct amis_err *err)
{
	bool no_role;

	if (p->no_imds) {
		sb_appends(notes, "; IMDS: not used");
		return 1;
	}
	if (fetch_imds(p, out, &no_role, err) == 0)
		return 0;
	if (!no_role)
		return -1;
	sb_appendf(notes, "; IMDS: %s", err->msg);
	err_clear(err);
	return 1;
}

static void remember(struct creds_provider *p, enum creds_source src,
                     const struct aws_credentials *c, time_t now)
{
	char when[32] = "";
	struct tm tm;

	p->cached = *c;
	p->src = src;
	if (!c->expiration)
		return;
	p->next_refresh = c->expiration - CREDS_REFRESH_WINDOW_S;
	if (p->next_refresh <= now) {
		/* IMDS may hand out near-expiry credentials while it is impaired. */
		if (gmtime_r(&c->expiration, &tm))
			strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
		log_warn("AWS credentials from %s expire at %s; trying again in %d s", c->source,
		         when, CREDS_MIN_REFRESH_INTERVAL_S);
		p->next_refresh = now + CREDS_MIN_REFRESH_INTERVAL_S;
	}
}

static int walk_chain(struct creds_provider *p, time_t now, struct aws_credentials *out,
                      struct amis_err *err)
{
	static const struct {
		enum creds_source src;
		int (*fn)(struct creds_provider *, struct aws_credentials *, struct strbuf *,
		          struct amis_err *);
	} steps[] = {
	    {SRC_CONFIG, from_config},
	    {SRC_ENV, from_environment},
	    {SRC_PROFILE, from_profile},
	    {SRC_IMDS, from_imds},
	};
	struct strbuf notes;
	struct aws_credentials c;
	int rc = 1;

	sb_init(&notes);
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		rc = steps[i].fn(p, &c, &notes, err);
		if (rc == 0) {
			remember(p, steps[i].src, &c, now);
			log_info("using AWS credentials from %s", c.source);
			*out = c;
			break;
		}
		if (rc < 0)
			break;
	}
	if (rc == 1)
		err_set(err, AMIS_E_NO_CREDENTIALS, "no AWS credentials found (%s)",
		        sb_str(&notes));
	sb_free(&notes);
	creds_clear(&c);
	return rc == 0 ? 0 : -1;
}

int creds_get(struct creds_provider *p, time_t now, struct aws_credentials *out,
              struct amis_err *err)
{
	struct aws_credentials fresh;
	bool no_role;
	int rc;

	if (p->src != SRC_NONE && (!p->cached.expiration || now < p->next_refresh)) {
		*out = p->cached;
		return 0;
	}
	if (p->src != SRC_IMDS)
		return walk_chain(p, now, out, err);

	/* Expiring role credentials: ask IMDS again. */
	rc = fetch_imds(p, &fresh, &no_role, err);
	if (rc == 0) {
		remember(p, SRC_IMDS, &fresh, now);
		log_debug("refreshed AWS credentials from %s", fresh.source);
		*out = fresh;
		creds_clear(&fresh);
		return 0;
	}
	if (now < p->cached.expiration) {
		log_warn("could not refresh AWS credentials, using the current ones until they "
		         "expire: %s",
		         err->msg);
		p->next_refresh = now + CREDS_MIN_REFRESH_INTERVAL_S;
		err_clear(err);
		*out = p->cached;
		return 0;
	}
	err_prefix(err, "AWS credentials from %s expired and could not be refreshed",
	           p->cached.source);
	/* The cause stays in the message; the code says what the caller faces. */
	snprintf(err->code, sizeof(err->code), "ExpiredCredentials");
	return -1;
}

int creds_resolve_region(const struct amis_env *env, const char *configured,
                         struct imds_client *imds, char *region, size_t regionsz,
                         struct amis_err *err)
{
	static const char *const vars[] = {"AWS_REGION", "AWS_DEFAULT_REGION"};
	struct imds_identity id;
	const char *v;

	if (configured) {
		if (!imds_valid_region(configured) || strlcpy_checked(region, configured, regionsz))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "the configured region is not a valid AWS region name");
		return 0;
	}
	for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
		v = amis_env_get(env, vars[i]);
		if (!v)
			continue;
		if (!imds_valid_region(v) || strlcpy_checked(region, v, regionsz))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "%s is not a valid AWS region name", vars[i]);
		return 0;
	}
	if (!imds)
		return err_set(err, AMIS_E_HELPER_CONFIG,
		               "no region configured and AWS_REGION is not set");
	if (imds_get_identity(imds, &id, err) < 0)
		return err_prefix(err, "no region configured, AWS_REGION not set, and IMDS failed");
	if (strlcpy_checked(region, id.region, regionsz))
		return err_set(err, AMIS_E_HELPER_CONFIG, "region buffer too small");
	return 0;
}

/* http(s)://..., printable, no trailing slash, fits. */
static int copy_endpoint(char *url, size_t urlsz, const char *v, const char *origin,
                         struct amis_err *err)
{
	size_t n = strlen(v), scheme;

	while (n > 0 && v[n - 1] == '/')
		n--;
	if (strncmp(v, "http://", 7) == 0)
		scheme = 7;
	else if (strncmp(v, "https://", 8) == 0)
		scheme = 8;
	else
		return err_set(err, AMIS_E_HELPER_CONFIG, "%s must start with http:// or https://",
		               origin);
	if (n <= scheme || n >= urlsz)
		return err_set(err, AMIS_E_HELPER_CONFIG, "%s is not a usable endpoint URL",
		               origin);
	for (size_t i = 0; i < n; i++) {
		if (!isgraph((unsigned char)v[i]))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "%s contains blanks or control characters", origin);
	}
	memcpy(url, v, n);
	url[n] = '\0';
	return 0;
}

int creds_resolve_ec2_endpoint(const struct amis_env *env, const char *configured,
                               const char *region, char *url, size_t urlsz, struct amis_err *err)
{
	static const char *const vars[] = {"AWS_ENDPOINT_URL_EC2", "AWS_ENDPOINT_URL"};
	const char *ignore = amis_env_get(env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS");
	const char *v, *suffix;
	int n;

	if (configured)
		return copy_endpoint(url, urlsz, configured, "the configured EC2 endpoint", err);
	/* "Service-specific endpoints" (SDKs and Tools Reference Guide). */
	if (!ignore || strcasecmp(ignore, "true") != 0) {
		for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++) {
			v = amis_env_get(env, vars[i]);
			if (v)
				return copy_endpoint(url, urlsz, v, vars[i], err);
		}
	}
	if (!region || !imds_valid_region(region))
		return err_set(err, AMIS_E_HELPER_CONFIG, "no valid region for the EC2 endpoint");
	/* DNS suffixes of the aws-cn, aws-iso and aws-iso-b partitions (botocore endpoints.json).
	 */
	if (strncmp(region, "cn-", 3) == 0)
		suffix = "amazonaws.com.cn";
	else if (strncmp(region, "us-isob-", 8) == 0)
		suffix = "sc2s.sgov.gov";
	else if (strncmp(region, "us-iso-", 7) == 0)
		suffix = "c2s.ic.gov";
	else
		suffix = "amazonaws.com";
	n = snprintf(url, urlsz, "https://ec2.%s.%s", region, suffix);
	if (n < 0 || (size_t)n >= urlsz)
		return err_set(err, AMIS_E_HELPER_CONFIG, "EC2 endpoint URL buffer too small");
	return 0;
}
