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
#include <fnmatch.h>
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
	A_BACKUP,     /* a request id, an ami-... or a snap-... id (the lifecycle's ID) */
	A_SYSID,      /* a system identifier: 1 to 20 decimal digits */
	A_REGION,     /* config_region_valid() */
	A_POLICY,     /* a retention policy: 1 to 1024 printable ASCII characters */
	A_ACCOUNT,    /* an AWS account id: 12 digits */
	A_KMS,        /* a KMS key id, alias or ARN: [A-Za-z0-9:/_.-], 1 to 2048 */
	A_MODE,       /* governance | compliance */
	A_DATE,       /* an ISO 8601 date: [0-9TZ:.+-], 10 to 40 */
};

struct arg_rule {
	const char *key;
	enum arg_type type;
	const char *option; /* "--time-budget"; "" for the positional ID (after "--") */
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

/*
 * The lifecycle commands (doc/lifecycle.md): a client names the backup,
 * this cluster's system identifier and the options each command takes;
 * the helper adds --config and --json.  system_id is required, so that a
 * job only ever sees and touches the caller's cluster's backups.
 */
#define LC_COMMON                                                                                  \
	{"system_id", A_SYSID, "--system-id", 0, 0, 1},                                            \
	{                                                                                          \
		"region", A_REGION, "--region", 0, 0, 1                                            \
	}

static const struct arg_rule list_rules[] = {
    LC_COMMON,
    {"name", A_NAME, "--name", 0, 0, 1},
};

static const struct arg_rule show_rules[] = {
    LC_COMMON,
    {"id", A_BACKUP, "", 0, 0, 1},
};

static const struct arg_rule wait_rules[] = {
    LC_COMMON,
    {"id", A_BACKUP, "", 0, 0, 1},
    {"timeout", A_SECONDS, "--timeout", 0, 86400, 1},
    {"interval", A_SECONDS, "--interval", 1, 3600, 1},
};

static const struct arg_rule prune_rules[] = {
    LC_COMMON,
    {"policy", A_POLICY, "--policy", 0, 0, 16},
    {"dry_run", A_BOOL, "--dry-run", 0, 0, 1},
};

static const struct arg_rule copy_rules[] = {
    LC_COMMON,
    {"id", A_BACKUP, "", 0, 0, 1},
    {"to_region", A_REGION, "--to-region", 0, 0, 1},
    {"kms_key_id", A_KMS, "--kms-key-id", 0, 0, 1},
    {"share", A_ACCOUNT, "--share", 0, 0, 8},
};

static const struct arg_rule lock_rules[] = {
    LC_COMMON,
    {"id", A_BACKUP, "", 0, 0, 1},
    {"mode", A_MODE, "--mode", 0, 0, 1},
    {"days", A_SECONDS, "--days", 1, 36500, 1},
    {"until", A_DATE, "--until", 0, 0, 1},
    {"cool_off_hours", A_SECONDS, "--cool-off-hours", 0, 72, 1},
};

static const struct arg_rule unlock_rules[] = {
    LC_COMMON,
    {"id", A_BACKUP, "", 0, 0, 1},
};

#define RULES(r) r, sizeof(r) / sizeof(r[0])

static const struct job_kind {
	const char *name;
	const struct arg_rule *rules;
	size_t nrules;
	bool needs_id; /* the positional ID is required */
} kinds[] = {
    {"verify", RULES(verify_rules), false}, {"list", RULES(list_rules), false},
    {"show", RULES(show_rules), true},      {"wait", RULES(wait_rules), true},
    {"prune", RULES(prune_rules), false},   {"copy", RULES(copy_rules), true},
    {"lock", RULES(lock_rules), true},      {"unlock", RULES(unlock_rules), true},
};

#define MAX_RULES 16

static const struct job_kind *find_kind(const char *name)
{
	size_t i;

	for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (!strcmp(kinds[i].name, name))
			return &kinds[i];
	return NULL;
}

bool job_kind_is_lifecycle(const char *kind)
{
	return find_kind(kind) && strcmp(kind, "verify") != 0;
}

static bool all_of(const char *s, size_t min, size_t max, const char *extra, bool digits,
                   bool alpha)
{
	size_t n = strlen(s), i;

	if (n < min || n > max)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if ((digits && isdigit(ch)) || (alpha && isalpha(ch)) || (ch && strchr(extra, ch)))
			continue;
		return false;
	}
	return true;
}

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
	case A_BACKUP:
		/* Never one that looks like an option (it comes after "--" anyway). */
		if (v[0] == '-')
			break;
		if (request_id_valid(v) || image_id_valid(v) ||
		    (!strncmp(v, "snap-", 5) && all_of(v + 5, 8, 17, "abcdef", true, false)))
			return true;
		break;
	case A_SYSID:
		if (all_of(v, 1, 20, "", true, false))
			return true;
		break;
	case A_REGION:
		if (config_region_valid(v))
			return true;
		break;
	case A_POLICY:
		for (i = 0; i < n; i++)
			if (v[i] < 0x20 || v[i] > 0x7e)
				break;
		if (n >= 1 && n <= 1024 && i == n && v[0] != '-')
			return true;
		break;
	case A_ACCOUNT:
		if (all_of(v, 12, 12, "", true, false))
			return true;
		break;
	case A_KMS:
		if (all_of(v, 1, 2048, ":/_.-", true, true) && v[0] != '-')
			return true;
		break;
	case A_MODE:
		if (!strcmp(v, "governance") || !strcmp(v, "compliance"))
			return true;
		break;
	case A_DATE:
		if (all_of(v, 10, 40, "TZ:.+-", true, false) && isdigit((unsigned char)v[0]))
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

/* command <kind> -c config --json: a lifecycle command's head. */
static int lifecycle_head(const char *config_path, const char *command, const char *kind,
                          char **argv)
{
	int a = 0;

	argv[a++] = xstrdup(command);
	argv[a++] = xstrdup(kind);
	argv[a++] = opt_value("--config", config_path);
	argv[a++] = xstrdup("--json");
	return a;
}

/* What goes with what in a verify job (the command checks the rest). */
static int verify_checks(const struct helper_config *cfg, const char *const *keys,
                         const char *const *values, const struct arg_rule **rule, size_t n,
                         bool *dump, struct amis_err *err)
{
	bool dump_more = false;
	size_t i, selectors = 0;

	*dump = false;
	for (i = 0; i < n; i++) {
		if (rule[i]->type == A_REQUEST_ID || rule[i]->type == A_NAME ||
		    rule[i]->type == A_IMAGE)
			selectors++;
		if (!strcmp(keys[i], "dump"))
			*dump = !strcmp(values[i], "true");
		else if (!strcmp(keys[i], "dump_db") ||
		         (!strcmp(keys[i], "dump_globals") && !strcmp(values[i], "true")))
			dump_more = true;
	}
	if (selectors != 1)
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "a verify job needs exactly one of request_id, name, image");
	if (dump_more && !*dump)
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "dump_db and dump_globals go with dump");
	if (*dump && !cfg->drill_dump_dir)
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "dumps were asked for but the helper's configuration has no [drill] "
		               "dump_dir");
	return 0;
}

/* What a lifecycle job needs: the cluster, its ID, copy's region, lock's duration. */
static int lifecycle_checks(const struct job_kind *k, const char *const *keys,
                            const char *const *values, size_t n, struct amis_err *err)
{
	bool sysid = false, id = false, to = false, days = false, until = false;
	const char *mode = NULL;
	size_t i;

	for (i = 0; i < n; i++) {
		sysid |= !strcmp(keys[i], "system_id");
		id |= !strcmp(keys[i], "id");
		to |= !strcmp(keys[i], "to_region");
		days |= !strcmp(keys[i], "days");
		until |= !strcmp(keys[i], "until");
		if (!strcmp(keys[i], "mode"))
			mode = values[i];
	}
	if (!sysid)
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "a %s job needs system_id (only the cluster's own backups)",
		               k->name);
	if (k->needs_id && !id)
		return err_set(err, AMIS_E_INVALID_REQUEST, "a %s job needs id", k->name);
	if (!strcmp(k->name, "copy") && !to)
		return err_set(err, AMIS_E_INVALID_REQUEST, "a copy job needs to_region");
	if (days && until)
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "a lock job takes days or until, not both");
	if (mode && !days && !until)
		return err_set(err, AMIS_E_INVALID_REQUEST,
		               "a lock job with mode needs days or until");
	return 0;
}

int job_argv(const struct helper_config *cfg, const char *config_path, const char *command,
             const char *kind, const char *const *keys, const char *const *values, size_t n,
             char **argv, struct amis_err *err)
{
	const struct job_kind *k = find_kind(kind);
	size_t counts[MAX_RULES] = {0};
	const struct arg_rule *rule[AMSP_JOB_MAX_ARGS];
	const char *positional = NULL;
	bool dump = false;
	size_t i, j;
	int a;

	argv[0] = NULL;
	if (!k)
		return err_set(err, AMIS_E_INVALID_REQUEST, "unknown job kind \"%.16s\"",
		               printable_name(kind) ? kind : "?");
	if (n > AMSP_JOB_MAX_ARGS)
		return err_set(err, AMIS_E_INVALID_REQUEST, "too many job arguments");
	for (i = 0; i < n; i++) {
		for (j = 0; j < k->nrules && strcmp(keys[i], k->rules[j].key) != 0; j++)
			;
		if (j == k->nrules)
			return err_set(err, AMIS_E_INVALID_REQUEST,
			               "unknown argument \"%.32s\" for a %s job",
			               printable_name(keys[i]) ? keys[i] : "?", k->name);
		if (++counts[j] > k->rules[j].max_count)
			return err_set(err, AMIS_E_INVALID_REQUEST,
			               "job argument %s given too often", keys[i]);
		if (!value_valid(&k->rules[j], values[i], err))
			return -1;
		rule[i] = &k->rules[j];
	}
	if (!strcmp(k->name, "verify")) {
		if (verify_checks(cfg, keys, values, rule, n, &dump, err) != 0)
			return -1;
		a = verify_head(cfg, config_path, command, argv);
		if (dump)
			argv[a++] = opt_value("--dump-dir", cfg->drill_dump_dir);
	} else {
		if (lifecycle_checks(k, keys, values, n, err) != 0)
			return -1;
		a = lifecycle_head(config_path, command, k->name, argv);
	}
	for (i = 0; i < n; i++) {
		if (rule[i]->type == A_BOOL) {
			if (rule[i]->option && !strcmp(values[i], "true"))
				argv[a++] = xstrdup(rule[i]->option);
			continue;
		}
		if (!rule[i]->option[0]) {
			positional = values[i];
			continue;
		}
		argv[a++] = opt_value(rule[i]->option, values[i]);
	}
	/* The ID last, after "--": nothing it holds is taken for an option. */
	if (positional) {
		argv[a++] = xstrdup("--");
		argv[a++] = xstrdup(positional);
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

	/* doc/lifecycle.md, "Exit codes". */
	static const char *const lifecycle_outcomes[] = {
	    "done",   "error",     "usage",   "not_found", "not_this_cluster",
	    "failed", "timed_out", "partial",
	};

	if (signaled)
		return "killed";
	if (!strcmp(kind, "verify") && code >= 0 &&
	    code < (int)(sizeof(verify_outcomes) / sizeof(verify_outcomes[0])))
		return verify_outcomes[code];
	if (job_kind_is_lifecycle(kind) && code >= 0 &&
	    code < (int)(sizeof(lifecycle_outcomes) / sizeof(lifecycle_outcomes[0])))
		return lifecycle_outcomes[code];
	return "error";
}

bool job_argv_ok_kind(const char *kind)
{
	return find_kind(kind) != NULL;
}

/* One step: job_argv's argv for kind, allocated, appended to steps. */
static int auto_step(const struct helper_config *cfg, const char *config_path, const char *command,
                     const char *kind, const char *const *keys, const char *const *values, size_t n,
                     char **steps[], char step_kinds[][17], size_t *nsteps, size_t max,
                     struct amis_err *err)
{
	char **argv;

	if (*nsteps == max)
		return err_set(err, AMIS_E_INVALID_REQUEST, "too many automatic steps");
	argv = xcalloc(JOB_MAX_ARGV, sizeof(char *));
	if (job_argv(cfg, config_path, command, kind, keys, values, n, argv, err) < 0) {
		free(argv);
		return -1;
	}
	snprintf(step_kinds[*nsteps], 17, "%s", kind);
	steps[(*nsteps)++] = argv;
	return 0;
}

void job_auto_steps_free(char **steps[], size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		job_argv_free(steps[i]);
		free(steps[i]);
		steps[i] = NULL;
	}
}

int job_auto_steps(const struct helper_config *cfg, const char *config_path, const char *command,
                   const char *request_id, const char *name, const char *system_id, char **steps[],
                   char step_kinds[][17], size_t max, struct amis_err *err)
{
	bool lock = cfg->lock_mode && !fnmatch(cfg->lock_names ? cfg->lock_names : "*", name, 0);
	bool copy =
	    cfg->n_copy_regions > 0 && !fnmatch(cfg->copy_names ? cfg->copy_names : "*", name, 0);
	const char *keys[AMSP_JOB_MAX_ARGS], *values[AMSP_JOB_MAX_ARGS];
	size_t i, j, n, nsteps = 0;

	if (!lock && !copy)
		return 0;
	if (!system_id || !system_id[0])
		return err_set(err, AMIS_E_INVALID_REQUEST, "the backup has no system identifier");
	keys[0] = "id", values[0] = request_id;
	keys[1] = "system_id", values[1] = system_id;
	/* The lock: at once (EC2 locks a pending snapshot; its duration counts from completion). */
	if (lock && auto_step(cfg, config_path, command, "lock", keys, values, 2, steps, step_kinds,
	                      &nsteps, max, err) < 0)
		goto failed;
	if (!copy)
		return (int)nsteps;
	/* A copy needs a completed backup: wait for it first (every 10 s, at most a day). */
	keys[2] = "timeout", values[2] = "86400";
	keys[3] = "interval", values[3] = "10";
	if (auto_step(cfg, config_path, command, "wait", keys, values, 4, steps, step_kinds,
	              &nsteps, max, err) < 0)
		goto failed;
	for (i = 0; i < cfg->n_copy_regions; i++) {
		n = 2;
		keys[n] = "to_region", values[n++] = cfg->copy_regions[i];
		if (cfg->copy_kms_key_id)
			keys[n] = "kms_key_id", values[n++] = cfg->copy_kms_key_id;
		for (j = 0; j < cfg->n_copy_share_accounts && j < 8; j++)
			keys[n] = "share", values[n++] = cfg->copy_share_accounts[j];
		if (auto_step(cfg, config_path, command, "copy", keys, values, n, steps, step_kinds,
		              &nsteps, max, err) < 0)
			goto failed;
		if (!lock)
			continue;
		/* The copy, locked as the source (the [lock] defaults, in its region). */
		keys[2] = "region", values[2] = cfg->copy_regions[i];
		if (auto_step(cfg, config_path, command, "lock", keys, values, 3, steps, step_kinds,
		              &nsteps, max, err) < 0)
			goto failed;
	}
	return (int)nsteps;
failed:
	job_auto_steps_free(steps, nsteps);
	return -1;
}
