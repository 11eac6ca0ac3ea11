/*
 * job_args.c - a JOB's kind and arguments -> the argv of the helper's own
 * command (see job.h).  Pure: no I/O; test/unit/test_job.c.
 *
 * Each kind has a table of the arguments a client may give, each with a
 * type that bounds and checks its value, and the option it becomes.
 * Everything else in the argv comes from the helper's configuration: a
 * client chooses no path, no device directory, no configuration file.
 */
#include "job.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum arg_type {
	A_REQUEST_ID, /* request_id_valid() */
	A_NAME,       /* snapshot_name_valid() */
	A_IMAGE,      /* ami- and 8 or 17 hex digits */
	A_SECONDS,    /* decimal, from min to max */
	A_SQL,        /* any text (the frame has no NUL), 1 to AMSP_JOB_MAX_ARG_LEN bytes */
	A_DBNAME,     /* 1-63 bytes, no control characters */
	A_BOOL,       /* true | false; true adds the option without a value */
};

struct arg_rule {
	const char *key;
	enum arg_type type;
	const char *option; /* "--time-budget" */
	long min, max;      /* A_SECONDS */
	size_t max_count;
};

static const struct arg_rule verify_rules[] = {
    {"request_id", A_REQUEST_ID, "--request-id", 0, 0, 1},
    {"name", A_NAME, "--name", 0, 0, 1},
    {"image", A_IMAGE, "--image", 0, 0, 1},
    {"time_budget", A_SECONDS, "--time-budget", 0, 86400, 1},
    {"timeout", A_SECONDS, "--timeout", 1, 86400, 1},
    {"check_sql", A_SQL, "--check-sql", 0, 0, 1},
    {"check_db", A_DBNAME, "--check-db", 0, 0, 1},
    {"dump", A_BOOL, NULL, 0, 0, 1}, /* --dump-dir=[drill] dump_dir */
    {"dump_db", A_DBNAME, "--dump-db", 0, 0, 32},
    {"dump_globals", A_BOOL, "--dump-globals", 0, 0, 1},
    {"launch", A_BOOL, "--launch", 0, 0, 1},
    {"tcp_port", A_SECONDS, "--tcp-port", 1, 65535, 1},
};

static bool image_id_valid(const char *s)
{
	size_t n = strlen(s), i;

	if (strncmp(s, "ami-", 4) != 0 || (n != 12 && n != 21))
		return false;
	for (i = 4; i < n; i++)
		if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i]))
			return false;
	return true;
}

static bool value_valid(const struct arg_rule *r, const char *v, struct amis_err *err)
{
	size_t n = strlen(v), i;
	char *end;
	long x;

	switch (r->type) {
	case A_REQUEST_ID:
		if (request_id_valid(v))
			return true;
		break;
	case A_NAME:
		if (snapshot_name_valid(v))
			return true;
		break;
	case A_IMAGE:
		if (image_id_valid(v))
			return true;
		break;
	case A_SECONDS:
		errno = 0;
		x = strtol(v, &end, 10);
		if (n && n <= 6 && isdigit((unsigned char)v[0]) && !*end && !errno && x >= r->min &&
		    x <= r->max)
			return true;
		err_set(err, AMIS_E_INVALID_REQUEST,
		        "job argument %s must be a whole number from %ld to %ld", r->key, r->min,
		        r->max);
		return false;
	case A_SQL:
		if (n >= 1 && n <= AMSP_JOB_MAX_ARG_LEN)
			return true;
		break;
	case A_DBNAME:
		if (n < 1 || n > 63)
			break;
		for (i = 0; i < n; i++)
			if (iscntrl((unsigned char)v[i]))
				break;
		if (i == n)
			return true;
		break;
	case A_BOOL:
		if (!strcmp(v, "true") || !strcmp(v, "false"))
			return true;
		break;
	}
	err_set(err, AMIS_E_INVALID_REQUEST, "job argument %s has an invalid value", r->key);
	return false;
}

/* Whether a client's name may be echoed in a message (and so in the log): [a-z0-9_]. */
static bool printable_name(const char *s)
{
	for (; *s; s++)
		if (!islower((unsigned char)*s) && !isdigit((unsigned char)*s) && *s != '_')
			return false;
	return true;
}

static char *opt_value(const char *option, const char *value)
{
	size_t n = strlen(option) + 1 + strlen(value) + 1;
	char *s = xmalloc(n);

	snprintf(s, n, "%s=%s", option, value);
	return s;
}

void job_argv_free(char **argv)
{
	size_t i;

	for (i = 0; argv && argv[i]; i++) {
		free(argv[i]);
		argv[i] = NULL;
	}
}

/* command verify -c config --json, and the configuration's fixed options. */
static int verify_head(const struct helper_config *cfg, const char *config_path,
                       const char *command, char **argv)
{
	int a = 0;

	argv[a++] = xstrdup(command);
	argv[a++] = xstrdup("verify");
	argv[a++] = opt_value("--config", config_path);
	argv[a++] = xstrdup("--json");
	if (cfg->drill_device_dir)
		argv[a++] = opt_value("--device-dir", cfg->drill_device_dir);
	if (cfg->drill_device_timeout_ms > 0) {
		char secs[32];

		snprintf(secs, sizeof(secs), "%ld", cfg->drill_device_timeout_ms / 1000);
		argv[a++] = opt_value("--device-timeout", secs);
	}
	return a;
}

int job_cleanup_argv(const struct helper_config *cfg, const char *config_path, const char *command,
                     char **argv)
{
	int a = verify_head(cfg, config_path, command, argv);

	argv[a++] = xstrdup("--cleanup");
	argv[a] = NULL;
	return a;
}

int job_argv(const struct helper_config *cfg, const char *config_path, const char *command,
             const char *kind, const char *const *keys, const char *const *values, size_t n,
             char **argv, struct amis_err *err)
{
	const size_t nrules = sizeof(verify_rules) / sizeof(verify_rules[0]);
	size_t counts[sizeof(verify_rules) / sizeof(verify_rules[0])] = {0};
	const struct arg_rule *rule[AMSP_JOB_MAX_ARGS];
	bool dump = false, launch = false, dump_more = false;
	size_t i, j, selectors = 0;
	int a;

	argv[0] = NULL;
	if (strcmp(kind, "verify") != 0)
		return err_set(err, AMIS_E_INVALID_REQUEST, "unknown job kind \"%.16s\"",
		               printable_name(kind) ? kind : "?");
	if (n > AMSP_JOB_MAX_ARGS)
		return err_set(err, AMIS_E_INVALID_REQUEST, "too many job arguments");
	for (i = 0; i < n; i++) {
		for (j = 0; j < nrules && strcmp(keys[i], verify_rules[j].key) != 0; j++)
			;
		if (j == nrules)
			return err_set(err, AMIS_E_INVALID_REQUEST,
			               "unknown argument \"%.32s\" for a verify job",
			               printable_name(keys[i]) ? keys[i] : "?");
		if (++counts[j] > verify_rules[j].max_count)
			return err_set(err, AMIS_E_INVALID_REQUEST,
			               "job argument %s given too often", keys[i]);
		if (!value_valid(&verify_rules[j], values[i], err))
			return -1;
		rule[i] = &verify_rules[j];
		if (rule[i]->type == A_REQUEST_ID || rule[i]->type == A_NAME ||
		    rule[i]->type == A_IMAGE)
			selectors++;
		if (!strcmp(keys[i], "dump"))
			dump = !strcmp(values[i], "true");
		else if (!strcmp(keys[i], "launch"))
			launch = !strcmp(values[i], "true");
		else if (!strcmp(keys[i], "dump_db") ||
		         (!strcmp(keys[i], "dump_globals") && !strcmp(values[i], "true")))
			dump_more = true;
	}
	if (selectors != 1)
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "a verify job needs exactly one of request_id, name, image");
	if (dump_more && !dump)
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "dump_db and dump_globals go with dump");
	if (dump && !cfg->drill_dump_dir)
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "dumps were asked for but the helper's configuration has no [drill] "
		               "dump_dir");
	(void)launch; /* the command checks what goes with --launch, as for its own users */

	a = verify_head(cfg, config_path, command, argv);
	if (dump)
		argv[a++] = opt_value("--dump-dir", cfg->drill_dump_dir);
	for (i = 0; i < n; i++) {
		if (rule[i]->type == A_BOOL) {
			if (rule[i]->option && !strcmp(values[i], "true"))
				argv[a++] = xstrdup(rule[i]->option);
			continue;
		}
		argv[a++] = opt_value(rule[i]->option, values[i]);
	}
	argv[a] = NULL;
	return a;
}

const char *job_outcome(const char *kind, bool signaled, int code)
{
	/* doc/verify.md, "Exit codes". */
	static const char *const verify_outcomes[] = {
	    "passed", "error", "usage", "refused", "failed", "timed_out", "interrupted",
	};

	if (signaled)
		return "killed";
	if (!strcmp(kind, "verify") && code >= 0 &&
	    code < (int)(sizeof(verify_outcomes) / sizeof(verify_outcomes[0])))
		return verify_outcomes[code];
	return "error";
}

bool job_argv_ok_kind(const char *kind)
{
	return strcmp(kind, "verify") == 0;
}
