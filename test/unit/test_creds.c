/*
 * test_creds.c - the credential chain's pure parts: IMDS credentials JSON,
 * ISO 8601 expirations and the refresh decision, the shared credentials
 * file, the chain order under a fake environment, region and endpoint
 * resolution, and the identity document parser.  No network: the IMDS
 * side runs against a fake server in test_imds.py.
 */
#include "creds.h"
#include "imds.h"
#include "log.h"
#include "tap.h"

#include <ini.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Distinctive secrets: no error message may ever contain them. */
#define SECRET "wJalrXUtnFEMI/K7MDENG/bPxRfiCYSECRETKEY"
#define TOKEN "IQoJb3JpZ2luX2VjTOKENVALUEFORTESTS"
#define KEYID "ASIAEXAMPLEKEYID0001"

#define EXP_2026 1795696496 /* 2026-11-26T12:34:56Z */

static int leaks;

/* Counts error messages that contain a secret we fed in. */
static void check_no_secret(const struct amis_err *err)
{
	if (strstr(err->msg, SECRET) || strstr(err->msg, TOKEN) || strstr(err->code, SECRET) ||
	    strstr(err->code, TOKEN) || strstr(err->msg, "wJalrXUtnFEMI") ||
	    strstr(err->msg, "IQoJb3JpZ2lu")) {
		leaks++;
		printf("# secret leaked into error: %s: %s\n", err->code, err->msg);
	}
}

static bool all_zero(const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++) {
		if (b[i])
			return false;
	}
	return true;
}

/* A fake environment: NULL-terminated name/value pairs. */
struct fake_env {
	const char *kv[32][2];
};

static const char *fake_get(void *ctx, const char *name)
{
	struct fake_env *fe = ctx;

	for (int i = 0; i < 32 && fe->kv[i][0]; i++) {
		if (strcmp(fe->kv[i][0], name) == 0)
			return fe->kv[i][1];
	}
	return NULL;
}

static void fake_set(struct fake_env *fe, const char *name, const char *value)
{
	int i;

	for (i = 0; i < 31 && fe->kv[i][0]; i++) {
		if (strcmp(fe->kv[i][0], name) == 0)
			break;
	}
	fe->kv[i][0] = name;
	fe->kv[i][1] = value;
}

static const char *const members[] = {
    "\"Code\" : \"Success\"",
    "\"LastUpdated\" : \"2026-11-26T06:20:00Z\"",
    "\"Type\" : \"AWS-HMAC\"",
    "\"AccessKeyId\" : \"" KEYID "\"",
    "\"SecretAccessKey\" : \"" SECRET "\"",
    "\"Token\" : \"" TOKEN "\"",
    "\"Expiration\" : \"2026-11-26T12:34:56Z\"",
};

/*
 * The IMDS document with the member named field replaced by line (NULL:
 * removed; field NULL: unchanged).  Caller frees.
 */
static char *json_with(const char *field, const char *line)
{
	struct strbuf sb;
	char quoted[64];
	const char *sep = "{\n  ";

	sb_init(&sb);
	snprintf(quoted, sizeof(quoted), "\"%s\"", field ? field : "");
	for (size_t i = 0; i < sizeof(members) / sizeof(members[0]); i++) {
		const char *m = members[i];

		if (field && strncmp(m, quoted, strlen(quoted)) == 0)
			m = line;
		if (!m)
			continue;
		sb_appendf(&sb, "%s%s", sep, m);
		sep = ",\n  ";
	}
	sb_appends(&sb, "\n}\n");
	return sb.data;
}

/* Parses json expecting failure with code; message must mention want_in_msg. */
static void json_fails(const char *json, const char *code, const char *want_in_msg,
                       const char *what)
{
	struct aws_credentials c;
	struct amis_err err;
	int rc;

	err_clear(&err);
	memset(&c, 0xAA, sizeof(c));
	rc = creds_parse_imds_json(json, strlen(json), &c, &err);
	ok(rc == -1 && strcmp(err.code, code) == 0 &&
	       (!want_in_msg || strstr(err.msg, want_in_msg)) && all_zero(&c, sizeof(c)),
	   "json %s -> %s", what, code);
	if (rc != -1 || strcmp(err.code, code) != 0 ||
	    (want_in_msg && !strstr(err.msg, want_in_msg)))
		printf("#   got rc=%d %s: %s\n", rc, err.code, err.msg);
	check_no_secret(&err);
}

static void test_imds_json(void)
{
	struct aws_credentials c;
	struct amis_err err;
	char *valid_json = json_with(NULL, NULL);
	char *j;
	/* What signing and refreshing need; Code, LastUpdated and Type are optional. */
	static const char *const required[] = {"AccessKeyId", "SecretAccessKey", "Token",
	                                       "Expiration"};
	static const char minimal[] =
	    "{\"Expiration\":\"2026-11-26T12:34:56Z\",\"Token\":\"" TOKEN
	    "\",\"SecretAccessKey\":\"" SECRET "\",\"AccessKeyId\":\"" KEYID "\"}";
	static const char extra[] =
	    "{\"Future\":{\"x\":[1,2]},\"Code\":\"Success\",\"Type\":7,"
	    "\"AccessKeyId\":\"" KEYID "\",\"SecretAccessKey\":\"" SECRET "\",\"Token\":\"" TOKEN
	    "\",\"Expiration\":\"2026-11-26T12:34:56Z\","
	    "\"LastUpdated\":null}";

	err_clear(&err);
	is_int(creds_parse_imds_json(valid_json, strlen(valid_json), &c, &err), 0,
	       "valid credentials JSON parses");
	is_str(c.access_key_id, KEYID, "AccessKeyId");
	is_str(c.secret_access_key, SECRET, "SecretAccessKey");
	is_str(c.session_token, TOKEN, "Token");
	is_int(c.expiration, EXP_2026, "Expiration as epoch seconds");
	is_str(c.source, "imds", "source");
	creds_clear(&c);
	ok(all_zero(&c, sizeof(c)), "creds_clear zeroes everything");

	/* Only the required members, in another order; extra and odd optional ones. */
	err_clear(&err);
	is_int(creds_parse_imds_json(minimal, strlen(minimal), &c, &err), 0,
	       "minimal credentials JSON (no Code, LastUpdated, Type) parses (%s)", err.msg);
	is_str(c.access_key_id, KEYID, "minimal: AccessKeyId");
	is_int(c.expiration, EXP_2026, "minimal: Expiration");
	creds_clear(&c);
	err_clear(&err);
	is_int(creds_parse_imds_json(extra, strlen(extra), &c, &err), 0,
	       "credentials JSON with unknown members parses (%s)", err.msg);
	is_str(c.session_token, TOKEN, "extra members: Token");
	creds_clear(&c);

	/* Missing fields: the message names the field. */
	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		j = json_with(required[i], NULL);
		json_fails(j, "MalformedCredentials", required[i], "missing field");
		free(j);
	}
	/* Null counts as missing. */
	j = json_with("Token", "\"Token\": null");
	json_fails(j, "MalformedCredentials", "Token", "null Token");
	free(j);

	/* Wrong types. */
	j = json_with("AccessKeyId", "\"AccessKeyId\": 12345");
	json_fails(j, "MalformedCredentials", "AccessKeyId", "numeric AccessKeyId");
	free(j);
	j = json_with("Token", "\"Token\": {\"v\": \"" TOKEN "\"}");
	json_fails(j, "MalformedCredentials", "Token", "object Token");
	free(j);
	j = json_with("SecretAccessKey", "\"SecretAccessKey\": [\"" SECRET "\"]");
	json_fails(j, "MalformedCredentials", "SecretAccessKey", "array SecretAccessKey");
	free(j);
	j = json_with("Expiration", "\"Expiration\": 1795696496");
	json_fails(j, "MalformedCredentials", "Expiration", "numeric Expiration");
	free(j);
	j = json_with("Code", "\"Code\": true");
	json_fails(j, "MalformedCredentials", "Code", "boolean Code");
	free(j);

	/* Bad values. */
	j = json_with("Expiration", "\"Expiration\": \"tomorrow\"");
	json_fails(j, "MalformedCredentials", "Expiration", "unparsable Expiration");
	free(j);
	j = json_with("SecretAccessKey", "\"SecretAccessKey\": \"\"");
	json_fails(j, "MalformedCredentials", "SecretAccessKey", "empty SecretAccessKey");
	free(j);
	j = json_with("SecretAccessKey", "\"SecretAccessKey\": \"" SECRET " x\"");
	json_fails(j, "MalformedCredentials", "SecretAccessKey", "SecretAccessKey with a blank");
	free(j);
	j = json_with("Token", "\"Token\": \"" TOKEN "\\u0000tail\"");
	json_fails(j, "MalformedCredentials", "Token", "Token with an embedded NUL");
	free(j);

	/* Code other than Success: IMDS reports a problem. */
	j = json_with("Code", "\"Code\": \"AssumeRoleUnauthorizedAccess\"");
	json_fails(j, "ImdsError", "AssumeRoleUnauthorizedAccess", "Code != Success");
	free(j);
	j = json_with("Code", "\"Code\": \"" SECRET "\"");
	json_fails(j, "ImdsError", "not shown", "odd Code value is not echoed");
	free(j);

	/* Not a credentials document at all. */
	json_fails("", "MalformedCredentials", "truncated", "empty input");
	json_fails("not json", "MalformedCredentials", "not valid JSON", "garbage");
	json_fails("[\"" SECRET "\"]", "MalformedCredentials", "single JSON object", "array");
	json_fails("\"" TOKEN "\"", "MalformedCredentials", "single JSON object", "string");
	json_fails("{\"Code\":\"Success\"} trailing", "MalformedCredentials", NULL,
	           "trailing garbage");
	json_fails("{\"Code\":\"Success\"}{}", "MalformedCredentials", NULL, "two objects");
	json_fails("{\"Code\":\"Success\",}", "MalformedCredentials", "not valid JSON",
	           "trailing comma (strict)");
	json_fails("{'Code':'Success'}", "MalformedCredentials", "not valid JSON",
	           "single quotes (strict)");

	/* Every proper prefix of a valid document is rejected. */
	{
		size_t n = strlen(valid_json), bad = 0;

		/* The final "}\n" is complete after n-1 bytes; stop before the "}". */
		for (size_t len = 0; len < n - 2; len++) {
			err_clear(&err);
			if (creds_parse_imds_json(valid_json, len, &c, &err) == 0 ||
			    strcmp(err.code, "MalformedCredentials") != 0 ||
			    !all_zero(&c, sizeof(c)))
				bad++;
			check_no_secret(&err);
		}
		is_int(bad, 0, "all %zu truncations of the document are rejected", n - 2);
	}

	/* Huge inputs. */
	{
		size_t n = 200 * 1024;
		char *big = xmalloc(n + 1);

		memset(big, ' ', n);
		memcpy(big, valid_json, strlen(valid_json));
		big[n] = '\0';
		json_fails(big, "MalformedCredentials", "too large", "200 KiB document");
		free(big);

		big = xmalloc(6000);
		memset(big, 'T', 5000);
		big[5000] = '\0';
		{
			struct strbuf line;

			sb_init(&line);
			sb_appendf(&line, "\"Token\": \"%s\"", big);
			j = json_with("Token", line.data);
			sb_free(&line);
		}
		json_fails(j, "MalformedCredentials", "too long", "5000-byte Token");
		free(j);
		free(big);

		/* Deep nesting is refused by the depth limit, not the stack. */
		big = xmalloc(10001);
		memset(big, '[', 10000);
		big[10000] = '\0';
		json_fails(big, "MalformedCredentials", "not valid JSON", "deeply nested arrays");
		free(big);
	}

	/* Unknown extra members are ignored. */
	j = json_with("Type", "\"Type\": \"AWS-HMAC\", \"Future\": {\"x\": [1, 2]}");
	err_clear(&err);
	is_int(creds_parse_imds_json(j, strlen(j), &c, &err), 0, "unknown members are ignored");
	free(j);
	free(valid_json);
	creds_clear(&c);
}

static void test_iso8601(void)
{
	time_t t = 0;
	static const char *const bad[] = {
	    "",
	    "2026-11-26",
	    "2026-11-26T12:34:56",
	    "2026-11-26 12:34:56Z",
	    "2026-11-26T12:34:56Zjunk",
	    "2026-11-26T12:34Z",
	    "2026-13-01T00:00:00Z",
	    "2026-00-01T00:00:00Z",
	    "2026-02-29T00:00:00Z",
	    "2026-04-31T00:00:00Z",
	    "2026-11-26T24:00:00Z",
	    "2026-11-26T12:60:00Z",
	    "2026-11-26T12:34:61Z",
	    "2026-11-26T12:34:56.Z",
	    "2026-11-26T12:34:56+0100",
	    "1969-12-31T23:59:59Z",
	    "+2026-11-26T12:34:56Z",
	    "2026-1-26T12:34:56Z",
	};

	ok(creds_parse_iso8601("2026-11-26T12:34:56Z", &t) == 0 && t == EXP_2026, "basic UTC");
	ok(creds_parse_iso8601("2026-11-26T12:34:56.789Z", &t) == 0 && t == EXP_2026,
	   "fractional seconds");
	ok(creds_parse_iso8601("2026-11-26T13:34:56+01:00", &t) == 0 && t == EXP_2026,
	   "positive offset");
	ok(creds_parse_iso8601("2026-11-26T07:34:56-05:00", &t) == 0 && t == EXP_2026,
	   "negative offset");
	ok(creds_parse_iso8601("2024-02-29T00:00:00Z", &t) == 0 && t == 1709164800,
	   "leap day in a leap year");
	ok(creds_parse_iso8601("2030-01-01T00:00:00Z", &t) == 0 && t == 1893456000, "2030-01-01");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		t = 42;
		ok(creds_parse_iso8601(bad[i], &t) == -1 && t == 42, "rejects \"%s\"", bad[i]);
	}
}

static void test_refresh_decision(void)
{
	struct aws_credentials c = {0};

	ok(!creds_need_refresh(&c, EXP_2026), "non-expiring credentials never need a refresh");
	c.expiration = EXP_2026;
	ok(!creds_need_refresh(&c, EXP_2026 - 3600), "an hour before: no refresh");
	ok(!creds_need_refresh(&c, EXP_2026 - 301), "301 s before: no refresh");
	ok(creds_need_refresh(&c, EXP_2026 - 300), "300 s before: refresh");
	ok(creds_need_refresh(&c, EXP_2026 - 1), "1 s before: refresh");
	ok(creds_need_refresh(&c, EXP_2026 + 10), "after expiry: refresh");
}

static char long_token[1501];

static void test_shared_file(void)
{
	struct aws_credentials c;
	struct amis_err err;
	struct strbuf text;
	int max_line = ini_max_line;
	bool use_stack = ini_use_stack, multiline = ini_allow_multiline;

	memset(long_token, 'L', 1500);
	long_token[1500] = '\0';
	sb_init(&text);
	sb_appendf(&text,
	           "# a comment\n"
	           "; another comment\n"
	           "[default]\n"
	           "aws_access_key_id=AKIADEFAULT\n"
	           "aws_secret_access_key=" SECRET "\n"
	           "\n"
	           "[ prod ]\r\n"
	           "  AWS_Access_Key_ID   =   AKIAPROD   \r\n"
	           "\taws_secret_access_key = " SECRET " ; inline comment\r\n"
	           "  aws_session_token = %s\r\n"
	           "region = eu-west-1\r\n"
	           "[onlykey]\n"
	           "aws_access_key_id = AKIAONLY\n"
	           "[rolearn]\n"
	           "role_arn = arn:aws:iam::123456789012:role/x\n"
	           "source_profile = default\n"
	           "[dup]\n"
	           "aws_access_key_id = A\n"
	           "aws_secret_access_key = " SECRET "\n"
	           "aws_secret_access_key = " SECRET "2\n"
	           "[badtoken]\n"
	           "aws_access_key_id = AKIABAD\n"
	           "aws_secret_access_key = " SECRET "\n"
	           "aws_session_token = " TOKEN " spaced\n",
	           long_token);

	err_clear(&err);
	is_int(creds_parse_shared_file(text.data, "default", "creds", &c, &err), 0,
	       "default profile found");
	is_str(c.access_key_id, "AKIADEFAULT", "default: access key");
	is_str(c.secret_access_key, SECRET, "default: secret");
	is_str(c.session_token, "", "default: no token");
	is_int(c.expiration, 0, "default: does not expire");
	is_str(c.source, "profile:default", "default: source");

	err_clear(&err);
	is_int(creds_parse_shared_file(text.data, "prod", "creds", &c, &err), 0,
	       "prod profile: blanks, CRLF, indentation, case, inline comment");
	if (err.code[0])
		printf("#   %s: %s\n", err.code, err.msg);
	is_str(c.access_key_id, "AKIAPROD", "prod: access key trimmed, key name case-insensitive");
	is_str(c.secret_access_key, SECRET, "prod: inline comment stripped");
	ok(strcmp(c.session_token, long_token) == 0,
	   "prod: a 1500-byte session token survives libinih's line limit");
	is_str(c.source, "profile:prod", "prod: source");
	is_int(ini_max_line, max_line, "libinih's line limit is restored");
	ok(ini_use_stack == use_stack && ini_allow_multiline == multiline,
	   "libinih's other settings are restored");

	err_clear(&err);
	is_int(creds_parse_shared_file(text.data, "nosuch", "creds", &c, &err), -1,
	       "unknown profile fails");
	is_str(err.code, "ProfileNotFound", "unknown profile: ProfileNotFound");
	ok(strstr(err.msg, "nosuch") && strstr(err.msg, "creds"), "names profile and file: %s",
	   err.msg);

	err_clear(&err);
	creds_parse_shared_file(text.data, "onlykey", "creds", &c, &err);
	is_str(err.code, "PartialCredentials", "access key without secret: PartialCredentials");
	ok(strstr(err.msg, "aws_secret_access_key") != NULL, "names the missing key");

	err_clear(&err);
	creds_parse_shared_file(text.data, "rolearn", "creds", &c, &err);
	is_str(err.code, "ProfileNotFound", "role_arn profile: no aws_access_key_id");
	ok(strstr(err.msg, "aws_access_key_id") != NULL, "says what is missing: %s", err.msg);

	err_clear(&err);
	creds_parse_shared_file(text.data, "dup", "creds", &c, &err);
	is_str(err.code, "CredentialsFile", "duplicate key in a profile is an error");
	check_no_secret(&err);

	err_clear(&err);
	creds_parse_shared_file(text.data, "badtoken", "creds", &c, &err);
	is_str(err.code, "MalformedCredentials", "token with a blank is rejected");
	ok(strstr(err.msg, "aws_session_token") && all_zero(&c, sizeof(c)),
	   "names the key and leaves no half result: %s", err.msg);
	check_no_secret(&err);

	err_clear(&err);
	is_int(creds_parse_shared_file("[default]\naws_access_key_id = A\nthis is not ini\n"
	                               "aws_secret_access_key = " SECRET "\n",
	                               "default", "f", &c, &err),
	       -1, "syntax error fails");
	is_str(err.code, "CredentialsFile", "syntax error: CredentialsFile");
	ok(strstr(err.msg, "line 3") != NULL, "syntax error names the line: %s", err.msg);

	err_clear(&err);
	is_int(creds_parse_shared_file("", "default", "f", &c, &err), -1, "empty file");
	is_str(err.code, "ProfileNotFound", "empty file: ProfileNotFound");

	sb_free(&text);
	creds_clear(&c);
}

/* Writes text to dir/name (creating dir/.aws if asked). */
static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
}

static void test_chain(const char *home)
{
	struct fake_env fe = {0};
	struct amis_env env = {fake_get, &fe};
	struct creds_config cfg = {0};
	struct creds_provider *p;
	struct aws_credentials c;
	struct amis_err err;
	char path[512], other[512];

	snprintf(path, sizeof(path), "%s/.aws", home);
	mkdir(path, 0700);
	snprintf(path, sizeof(path), "%s/.aws/credentials", home);
	write_file(path, "[default]\naws_access_key_id = AKIAFILEDEFAULT\n"
	                 "aws_secret_access_key = " SECRET "\n"
	                 "[prod]\naws_access_key_id = AKIAFILEPROD\n"
	                 "aws_secret_access_key = " SECRET "\n");
	snprintf(other, sizeof(other), "%s/other-credentials", home);
	write_file(other, "[default]\naws_access_key_id = AKIAOTHERFILE\n"
	                  "aws_secret_access_key = " SECRET "\n");

	cfg.env = &env;
	cfg.no_imds = true;
	fake_set(&fe, "HOME", home);

	/* Environment beats the file. */
	fake_set(&fe, "AWS_ACCESS_KEY_ID", "AKIAENV");
	fake_set(&fe, "AWS_SECRET_ACCESS_KEY", SECRET);
	fake_set(&fe, "AWS_SESSION_TOKEN", TOKEN);
	p = creds_provider_new(&cfg);
	err_clear(&err);
	is_int(creds_get(p, EXP_2026, &c, &err), 0, "environment credentials");
	is_str(c.source, "environment", "source environment");
	is_str(c.access_key_id, "AKIAENV", "key from AWS_ACCESS_KEY_ID");
	is_str(c.session_token, TOKEN, "token from AWS_SESSION_TOKEN");
	is_int(c.expiration, 0, "environment credentials do not expire");

	/* Cached: a changed environment is not seen until invalidated. */
	fake_set(&fe, "AWS_ACCESS_KEY_ID", "AKIAENV2");
	creds_get(p, EXP_2026 + 86400, &c, &err);
	is_str(c.access_key_id, "AKIAENV", "result is cached");
	creds_invalidate(p);
	creds_get(p, EXP_2026, &c, &err);
	is_str(c.access_key_id, "AKIAENV2", "creds_invalidate walks the chain again");
	creds_provider_free(p);

	/* Configured static credentials beat the environment. */
	cfg.access_key_id = "AKIACONFIG";
	cfg.secret_access_key = SECRET;
	p = creds_provider_new(&cfg);
	creds_get(p, EXP_2026, &c, &err);
	ok(strcmp(c.source, "config") == 0 && strcmp(c.access_key_id, "AKIACONFIG") == 0 &&
	       c.session_token[0] == '\0',
	   "configured credentials come first");
	creds_provider_free(p);
	cfg.access_key_id = NULL;
	cfg.secret_access_key = NULL;

	/* Half-set environment is an error, not a fall-through. */
	fake_set(&fe, "AWS_SECRET_ACCESS_KEY", "");
	p = creds_provider_new(&cfg);
	err_clear(&err);
	is_int(creds_get(p, EXP_2026, &c, &err), -1, "AWS_ACCESS_KEY_ID without secret fails");
	is_str(err.code, "PartialCredentials", "... with PartialCredentials");
	check_no_secret(&err);
	creds_provider_free(p);

	/* No environment: the default profile of $HOME/.aws/credentials. */
	fake_set(&fe, "AWS_ACCESS_KEY_ID", "");
	fake_set(&fe, "AWS_SESSION_TOKEN", "");
	p = creds_provider_new(&cfg);
	err_clear(&err);
	is_int(creds_get(p, EXP_2026, &c, &err), 0, "shared credentials file");
	is_str(c.source, "profile:default", "default profile from $HOME/.aws/credentials");
	is_str(c.access_key_id, "AKIAFILEDEFAULT", "its key");
	creds_provider_free(p);

	/* AWS_PROFILE selects another profile. */
	fake_set(&fe, "AWS_PROFILE", "prod");
	p = creds_provider_new(&cfg);
	creds_get(p, EXP_2026, &c, &err);
	is_str(c.access_key_id, "AKIAFILEPROD", "AWS_PROFILE=prod");
	creds_provider_free(p);

	/* The configured profile beats AWS_PROFILE. */
	cfg.profile = "default";
	p = creds_provider_new(&cfg);
	creds_get(p, EXP_2026, &c, &err);
	is_str(c.access_key_id, "AKIAFILEDEFAULT", "configured profile beats AWS_PROFILE");
	creds_provider_free(p);
	cfg.profile = NULL;

	/* An explicitly requested profile must exist. */
	fake_set(&fe, "AWS_PROFILE", "typo");
	p = creds_provider_new(&cfg);
	err_clear(&err);
	is_int(creds_get(p, EXP_2026, &c, &err), -1, "unknown AWS_PROFILE fails");
	is_str(err.code, "ProfileNotFound", "... with ProfileNotFound");
	creds_provider_free(p);
	fake_set(&fe, "AWS_PROFILE", "");

	/* AWS_SHARED_CREDENTIALS_FILE, with ~ expansion. */
	fake_set(&fe, "AWS_SHARED_CREDENTIALS_FILE", "~/other-credentials");
	p = creds_provider_new(&cfg);
	creds_get(p, EXP_2026, &c, &err);
	is_str(c.access_key_id, "AKIAOTHERFILE", "AWS_SHARED_CREDENTIALS_FILE with ~/");
	creds_provider_free(p);

	/* The configured file path beats the variable. */
	cfg.shared_credentials_file = path;
	p = creds_provider_new(&cfg);
	creds_get(p, EXP_2026, &c, &err);
	is_str(c.access_key_id, "AKIAFILEDEFAULT", "configured file path");
	creds_provider_free(p);
	cfg.shared_credentials_file = NULL;

	/*
	 * Pinned (the EC2 worker, before dropping root): resolved and opened
	 * now, read through the descriptor later, even once the path is gone.
	 */
	cfg.shared_credentials_file = other;
	p = creds_provider_new(&cfg);
	err_clear(&err);
	is_int(creds_provider_pin_file(p, &err), 0, "pin the credentials file");
	rename(other, path);
	write_file(other, "[default]\naws_access_key_id = AKIAREPLACED\n"
	                  "aws_secret_access_key = " SECRET "\n");
	creds_get(p, EXP_2026, &c, &err);
	is_str(c.access_key_id, "AKIAOTHERFILE", "a pinned file is read through its descriptor");
	creds_provider_free(p);
	rename(path, other);
	write_file(path, "[default]\naws_access_key_id = AKIAFILEDEFAULT\n"
	                 "aws_secret_access_key = " SECRET "\n"
	                 "[prod]\naws_access_key_id = AKIAFILEPROD\n"
	                 "aws_secret_access_key = " SECRET "\n");
	cfg.shared_credentials_file = "/nonexistent/credentials";
	cfg.profile = "prod";
	p = creds_provider_new(&cfg);
	is_int(creds_provider_pin_file(p, &err), 0, "pinning a missing file is not an error");
	err_clear(&err);
	is_int(creds_get(p, EXP_2026, &c, &err), -1, "... but a requested profile in it fails");
	is_str(err.code, "ProfileNotFound", "... with ProfileNotFound");
	creds_provider_free(p);
	cfg.shared_credentials_file = NULL;
	cfg.profile = NULL;

	/* Missing file, default profile: fall through to "nothing found". */
	fake_set(&fe, "AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/credentials");
	p = creds_provider_new(&cfg);
	err_clear(&err);
	is_int(creds_get(p, EXP_2026, &c, &err), -1, "nothing anywhere fails");
	is_str(err.code, "NoCredentials", "... with NoCredentials");
	ok(strstr(err.msg, "AWS_ACCESS_KEY_ID") && strstr(err.msg, "/nonexistent/credentials"),
	   "the message says what was tried: %s", err.msg);
	creds_provider_free(p);

	/* Same, with AWS_PROFILE set: ProfileNotFound. */
	fake_set(&fe, "AWS_PROFILE", "prod");
	p = creds_provider_new(&cfg);
	err_clear(&err);
	creds_get(p, EXP_2026, &c, &err);
	is_str(err.code, "ProfileNotFound", "missing file with AWS_PROFILE: ProfileNotFound");
	creds_provider_free(p);
	fake_set(&fe, "AWS_PROFILE", "");

	/* IMDS step with IMDS disabled: the fake environment reaches the IMDS client. */
	cfg.no_imds = false;
	fake_set(&fe, "AWS_EC2_METADATA_DISABLED", "TRUE");
	p = creds_provider_new(&cfg);
	err_clear(&err);
	is_int(creds_get(p, EXP_2026, &c, &err), -1, "IMDS disabled: no credentials");
	ok(strcmp(err.code, "NoCredentials") == 0 && strstr(err.msg, "AWS_EC2_METADATA_DISABLED"),
	   "... and the message says IMDS is disabled: %s", err.msg);
	creds_provider_free(p);
	fake_set(&fe, "AWS_EC2_METADATA_DISABLED", "");

	unlink(path);
	unlink(other);
	snprintf(path, sizeof(path), "%s/.aws", home);
	rmdir(path);
	creds_clear(&c);
}

static void test_region_endpoint(void)
{
	struct fake_env fe = {0};
	struct amis_env env = {fake_get, &fe};
	struct imds_client *imds;
	struct amis_err err;
	char region[32], url[256];

	err_clear(&err);
	is_int(creds_resolve_region(&env, "eu-west-3", NULL, region, sizeof(region), &err), 0,
	       "configured region");
	is_str(region, "eu-west-3", "... is used");
	is_int(creds_resolve_region(&env, "eu west", NULL, region, sizeof(region), &err), -1,
	       "invalid configured region fails");
	fake_set(&fe, "AWS_DEFAULT_REGION", "us-west-2");
	creds_resolve_region(&env, NULL, NULL, region, sizeof(region), &err);
	is_str(region, "us-west-2", "AWS_DEFAULT_REGION");
	fake_set(&fe, "AWS_REGION", "ap-southeast-4");
	creds_resolve_region(&env, NULL, NULL, region, sizeof(region), &err);
	is_str(region, "ap-southeast-4", "AWS_REGION beats AWS_DEFAULT_REGION");
	fake_set(&fe, "AWS_REGION", "us-east-1/../x");
	err_clear(&err);
	is_int(creds_resolve_region(&env, NULL, NULL, region, sizeof(region), &err), -1,
	       "invalid AWS_REGION fails");
	ok(strstr(err.msg, "AWS_REGION") != NULL, "... naming the variable: %s", err.msg);
	fake_set(&fe, "AWS_REGION", "");
	fake_set(&fe, "AWS_DEFAULT_REGION", "");
	err_clear(&err);
	is_int(creds_resolve_region(&env, NULL, NULL, region, sizeof(region), &err), -1,
	       "no region and no IMDS fails");
	fake_set(&fe, "AWS_EC2_METADATA_DISABLED", "true");
	imds = imds_client_new_env(NULL, &env);
	err_clear(&err);
	is_int(creds_resolve_region(&env, NULL, imds, region, sizeof(region), &err), -1,
	       "no region and IMDS disabled fails");
	is_str(err.code, "ImdsUnavailable", "... with ImdsUnavailable");
	imds_client_free(imds);
	fake_set(&fe, "AWS_EC2_METADATA_DISABLED", "");

	err_clear(&err);
	is_int(creds_resolve_ec2_endpoint(&env, NULL, "us-east-1", url, sizeof(url), &err), 0,
	       "default endpoint");
	is_str(url, "https://ec2.us-east-1.amazonaws.com", "regional endpoint");
	creds_resolve_ec2_endpoint(&env, NULL, "cn-north-1", url, sizeof(url), &err);
	is_str(url, "https://ec2.cn-north-1.amazonaws.com.cn", "China partition suffix");
	fake_set(&fe, "AWS_ENDPOINT_URL", "http://127.0.0.1:9000/");
	creds_resolve_ec2_endpoint(&env, NULL, "us-east-1", url, sizeof(url), &err);
	is_str(url, "http://127.0.0.1:9000", "AWS_ENDPOINT_URL, trailing slash dropped");
	fake_set(&fe, "AWS_ENDPOINT_URL_EC2", "http://127.0.0.1:9001");
	creds_resolve_ec2_endpoint(&env, NULL, "us-east-1", url, sizeof(url), &err);
	is_str(url, "http://127.0.0.1:9001", "AWS_ENDPOINT_URL_EC2 beats AWS_ENDPOINT_URL");
	creds_resolve_ec2_endpoint(&env, "https://vpce.example:443", "us-east-1", url, sizeof(url),
	                           &err);
	is_str(url, "https://vpce.example:443", "configured endpoint beats the environment");
	fake_set(&fe, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true");
	creds_resolve_ec2_endpoint(&env, NULL, "us-east-1", url, sizeof(url), &err);
	is_str(url, "https://ec2.us-east-1.amazonaws.com",
	       "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true ignores the variables");
	fake_set(&fe, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "");
	fake_set(&fe, "AWS_ENDPOINT_URL_EC2", "ftp://x");
	err_clear(&err);
	is_int(creds_resolve_ec2_endpoint(&env, NULL, "us-east-1", url, sizeof(url), &err), -1,
	       "non-http endpoint fails");
	ok(strstr(err.msg, "AWS_ENDPOINT_URL_EC2") != NULL, "... naming the variable: %s", err.msg);
	fake_set(&fe, "AWS_ENDPOINT_URL_EC2", "");
	fake_set(&fe, "AWS_ENDPOINT_URL", "");
	is_int(creds_resolve_ec2_endpoint(&env, NULL, NULL, url, sizeof(url), &err), -1,
	       "no region, no endpoint fails");
	is_int(creds_resolve_ec2_endpoint(&env, NULL, "us-east-1", url, 20, &err), -1,
	       "too small a buffer fails");
}

static void test_identity(void)
{
	struct imds_identity id;
	struct amis_err err;
	static const char doc[] = "{\n"
	                          "  \"accountId\" : \"123456789012\",\n"
	                          "  \"architecture\" : \"x86_64\",\n"
	                          "  \"availabilityZone\" : \"eu-central-1b\",\n"
	                          "  \"billingProducts\" : null,\n"
	                          "  \"devpayProductCodes\" : null,\n"
	                          "  \"marketplaceProductCodes\" : null,\n"
	                          "  \"imageId\" : \"ami-0abcdef1234567890\",\n"
	                          "  \"instanceId\" : \"i-0123456789abcdef0\",\n"
	                          "  \"instanceType\" : \"m6i.large\",\n"
	                          "  \"kernelId\" : null,\n"
	                          "  \"pendingTime\" : \"2026-11-20T09:00:00Z\",\n"
	                          "  \"privateIp\" : \"10.0.1.23\",\n"
	                          "  \"ramdiskId\" : null,\n"
	                          "  \"region\" : \"eu-central-1\",\n"
	                          "  \"version\" : \"2017-09-30\"\n"
	                          "}";
	static const struct {
		const char *json, *why;
	} bad[] = {
	    {"{\"instanceId\":\"i-0123456789abcdef0\"}", "no region"},
	    {"{\"region\":\"us-east-1\"}", "no instanceId"},
	    {"{\"instanceId\":\"i-0123456789abcdef0\",\"region\":5}", "numeric region"},
	    {"{\"instanceId\":\"i-xyz\",\"region\":\"us-east-1\"}", "bad instance id"},
	    {"{\"instanceId\":\"i-0123456789abcdef0\",\"region\":\"us-east-1/../\"}", "bad region"},
	    {"{\"instanceId\":\"i-0123456789abcdef0\",\"region\":\"us-east-1\","
	     "\"availabilityZone\":\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"}",
	     "overlong availabilityZone"},
	    {"{\"instanceId\":\"i-0123456789abcdef0\",\"region\":\"us-east-1\"", "truncated"},
	    {"<html>404</html>", "HTML"},
	};

	err_clear(&err);
	is_int(imds_parse_identity(doc, strlen(doc), &id, &err), 0, "identity document parses");
	is_str(id.instance_id, "i-0123456789abcdef0", "instanceId");
	is_str(id.region, "eu-central-1", "region");
	is_str(id.availability_zone, "eu-central-1b", "availabilityZone");
	is_str(id.account_id, "123456789012", "accountId");
	is_str(id.architecture, "x86_64", "architecture");
	is_str(id.image_id, "ami-0abcdef1234567890", "imageId");
	is_str(id.instance_type, "m6i.large", "instanceType");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err_clear(&err);
		ok(imds_parse_identity(bad[i].json, strlen(bad[i].json), &id, &err) == -1 &&
		       strcmp(err.code, "ImdsError") == 0 && id.instance_id[0] == '\0',
		   "identity document with %s is rejected (%s)", bad[i].why, err.msg);
	}

	/* Only what the helper needs (instanceId, region); members unknown and reordered. */
	{
		static const char minimal[] =
		    "{\"region\":\"eu-west-1\",\"instanceId\":\"i-1234abcd\"}";
		static const char extra[] =
		    "{\"marketplaceProductCodes\":null,\"devpayProductCodes\":[],"
		    "\"billingProducts\":null,\"version\":\"2017-09-30\",\"kernelId\":null,"
		    "\"future\":{\"nested\":[1,{\"a\":true}]},\"instanceId\":\"i-"
		    "0123456789abcdef0\","
		    "\"region\":\"eu-central-1\",\"pendingTime\":\"2026-11-01T00:00:00Z\"}";

		err_clear(&err);
		is_int(imds_parse_identity(minimal, strlen(minimal), &id, &err), 0,
		       "minimal identity document (instanceId, region) parses (%s)", err.msg);
		ok(!strcmp(id.instance_id, "i-1234abcd") && !strcmp(id.region, "eu-west-1") &&
		       id.availability_zone[0] == '\0' && id.account_id[0] == '\0',
		   "minimal identity document: ids, optional members empty");
		err_clear(&err);
		is_int(imds_parse_identity(extra, strlen(extra), &id, &err), 0,
		       "identity document with unknown and null members parses (%s)", err.msg);
		is_str(id.instance_id, "i-0123456789abcdef0", "extra members: instanceId");
	}

	ok(imds_valid_instance_id("i-1234abcd") && imds_valid_instance_id("i-0123456789abcdef0") &&
	       !imds_valid_instance_id("i-0123456789ABCDEF0") && !imds_valid_instance_id("i-123") &&
	       !imds_valid_instance_id("x-1234abcd"),
	   "instance id validation");
	ok(imds_valid_region("us-gov-west-1") && imds_valid_region("il-central-1") &&
	       !imds_valid_region("us-east-") && !imds_valid_region("US-EAST-1") &&
	       !imds_valid_region("us--east-1") && !imds_valid_region("useast1"),
	   "region validation");
	ok(imds_valid_role_name("my-role_1+=,.@") && !imds_valid_role_name("") &&
	       !imds_valid_role_name("../x") && !imds_valid_role_name("a b"),
	   "role name validation");
}

static void test_imds_offline(void)
{
	struct fake_env fe = {0};
	struct amis_env env = {fake_get, &fe};
	struct imds_client *c;
	struct amis_err err;
	struct strbuf sb;
	long long t0;

	sb_init(&sb);
	c = imds_client_new_env(NULL, &env);
	is_str(imds_endpoint(c), "http://169.254.169.254", "default endpoint");
	imds_client_free(c);

	fake_set(&fe, "AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE", "IPv6");
	c = imds_client_new_env(NULL, &env);
	is_str(imds_endpoint(c), "http://[fd00:ec2::254]", "IPv6 endpoint mode");
	imds_client_free(c);

	fake_set(&fe, "AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:1338/");
	c = imds_client_new_env(NULL, &env);
	is_str(imds_endpoint(c), "http://127.0.0.1:1338",
	       "AWS_EC2_METADATA_SERVICE_ENDPOINT, trailing slash dropped");
	imds_client_free(c);
	c = imds_client_new_env("http://10.1.2.3", &env);
	is_str(imds_endpoint(c), "http://10.1.2.3", "explicit endpoint beats the variable");
	imds_client_free(c);

	c = imds_client_new_env("file:///etc/passwd", &env);
	err_clear(&err);
	is_int(imds_get(c, "/latest/meta-data/", 0, &sb, &err), -1, "invalid endpoint fails");
	ok(strcmp(err.code, "ImdsError") == 0 && strstr(err.msg, "invalid IMDS endpoint"),
	   "... on first use: %s", err.msg);
	imds_client_free(c);

	fake_set(&fe, "AWS_EC2_METADATA_DISABLED", "true");
	c = imds_client_new_env("http://127.0.0.1:9", &env);
	t0 = mono_usec();
	err_clear(&err);
	is_int(imds_get(c, "/latest/meta-data/", 0, &sb, &err), -1, "disabled IMDS fails");
	ok(strcmp(err.code, "ImdsUnavailable") == 0 && mono_usec() - t0 < 100000,
	   "... at once with ImdsUnavailable: %s", err.msg);
	imds_client_free(c);
	sb_free(&sb);
}

int main(void)
{
	char home[] = "/tmp/test_creds.XXXXXX";

	log_set_level(LOG_LVL_ERROR);
	if (!mkdtemp(home)) {
		perror("mkdtemp");
		return 2;
	}
	test_imds_json();
	test_iso8601();
	test_refresh_decision();
	test_shared_file();
	test_chain(home);
	test_region_endpoint();
	test_identity();
	test_imds_offline();
	rmdir(home);
	is_int(leaks, 0, "no error message contained a secret or token");
	return done_testing();
}
