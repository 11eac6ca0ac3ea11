/*
 * config.c - see config.h.
 */
#include "config.h"
#include "log.h"
#include "retention.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_SOCKET "/run/ami-snapshot/helper.sock"
#define DEFAULT_STATE_DIR "/run/ami-snapshot"

void config_init(struct helper_config *c)
{
	memset(c, 0, sizeof(*c));
	c->socket_path = xstrdup(DEFAULT_SOCKET);
	c->freeze_timeout_ms = 10000;
	c->client_timeout_ms = 600000;
	c->ec2_timeout_ms = 30000;
	c->state_dir = xstrdup(DEFAULT_STATE_DIR);
	c->retries = 2;
	c->retry_backoff_ms = 1000;
	c->log_level = xstrdup("info");
	c->worker_user = xstrdup("nobody");
	c->drill_dir = xstrdup(DEFAULT_DRILL_DIR);
	c->drill_time_budget_ms = 600000;
	c->drill_timeout_ms = 3600000;
	c->max_jobs = 1;
	c->job_kill_grace_ms = 60000;
	c->preflight_dry_run = true;
	c->rewarm_after_ms = 10000;
}

static void free_kv(struct config_kv *kv, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		free(kv[i].key);
		free(kv[i].value);
	}
}

void config_free(struct helper_config *c)
{
	size_t i;

	free(c->socket_path);
	free(c->socket_group);
	free(c->state_dir);
	free(c->log_level);
	free(c->worker_user);
	for (i = 0; i < c->n_allow; i++)
		free(c->allow[i]);
	free_kv(c->volume_map, c->n_volume_map);
	free_kv(c->tags, c->n_tags);
	free(c->region);
	free(c->instance_id);
	free(c->ec2_endpoint);
	free(c->imds_endpoint);
	free(c->profile);
	free(c->credentials_file);
	free(c->drill_dir);
	free(c->drill_instance_type);
	free(c->drill_subnet);
	free(c->drill_security_group);
	free(c->drill_key_name);
	free(c->drill_command);
	free(c->drill_device_dir);
	free(c->drill_dump_dir);
	for (i = 0; i < c->n_retention_policies; i++)
		free(c->retention_policies[i]);
	for (i = 0; i < c->n_copy_regions; i++)
		free(c->copy_regions[i]);
	for (i = 0; i < c->n_copy_share_accounts; i++)
		free(c->copy_share_accounts[i]);
	free(c->copy_kms_key_id);
	free(c->copy_names);
	free(c->lock_mode);
	free(c->lock_names);
	memset(c, 0, sizeof(*c));
}

struct parse_ctx {
	struct helper_config *c;
	struct amis_err *err;
	bool failed;
};

static void set_str(char **dst, const char *v)
{
	free(*dst);
	*dst = *v ? xstrdup(v) : NULL;
}

static int parse_bool(const char *v, bool *out)
{
	if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "on") || !strcmp(v, "1")) {
		*out = true;
		return 0;
	}
	if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "off") || !strcmp(v, "0")) {
		*out = false;
		return 0;
	}
	return -1;
}

/* A duration: a number with an optional unit ms, s or min (default: s). */
static int parse_duration_ms(const char *v, long *out)
{
	const long max_ms = 24L * 3600 * 1000;
	char *end;
	long n, unit;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || n < 0)
		return -1;
	while (isspace((unsigned char)*end))
		end++;
	if (!strcmp(end, "ms"))
		unit = 1;
	else if (!*end || !strcmp(end, "s"))
		unit = 1000;
	else if (!strcmp(end, "min"))
		unit = 60000;
	else
		return -1;
	/* Compare before multiplying: no overflow (found by fuzz_config). */
	if (n > max_ms / unit)
		return -1;
	*out = n * unit;
	return 0;
}

/* Splits a comma- or space-separated list, calling fn for each item. */
static int for_each_item(const char *v, int (*fn)(struct parse_ctx *, const char *),
                         struct parse_ctx *pc)
{
	char *copy = xstrdup(v), *save = NULL, *tok;
	int rc = 0;

	for (tok = strtok_r(copy, ", \t", &save); tok && rc == 0;
	     tok = strtok_r(NULL, ", \t", &save))
		rc = fn(pc, tok);
	free(copy);
	return rc;
}

static int add_user(struct parse_ctx *pc, const char *name)
{
	struct helper_config *c = pc->c;
	struct passwd *pw;
	char *end;
	unsigned long uid;

	if (c->n_allowed_uids >= CONFIG_MAX_LIST)
		return err_set(pc->err, AMIS_E_HELPER_CONFIG, "too many allowed_users");
	uid = strtoul(name, &end, 10);
	if (*name && !*end) {
		c->allowed_uids[c->n_allowed_uids++] = (uid_t)uid;
		return 0;
	}
	pw = getpwnam(name);
	if (!pw)
		return err_set(pc->err, AMIS_E_HELPER_CONFIG, "allowed_users: no such user \"%s\"",
		               name);
	c->allowed_uids[c->n_allowed_uids++] = pw->pw_uid;
	return 0;
}

static int add_allow(struct parse_ctx *pc, const char *path)
{
	struct helper_config *c = pc->c;

	if (path[0] != '/')
		return err_set(pc->err, AMIS_E_HELPER_CONFIG,
		               "filesystems.allow: \"%s\" is not an absolute path", path);
	if (c->n_allow >= CONFIG_MAX_LIST)
		return err_set(pc->err, AMIS_E_HELPER_CONFIG, "too many filesystems.allow entries");
	c->allow[c->n_allow++] = xstrdup(path);
	return 0;
}

static int add_kv(struct config_kv *kv, size_t *n, const char *k, const char *v,
                  struct amis_err *err, const char *what)
{
	if (*n >= CONFIG_MAX_LIST)
		return err_set(err, AMIS_E_HELPER_CONFIG, "too many entries in [%s]", what);
	kv[*n].key = xstrdup(k);
	kv[*n].value = xstrdup(v);
	(*n)++;
	return 0;
}

/* An AWS region name: "eu-west-1", "us-gov-west-1", "cn-north-1". */
bool config_region_valid(const char *r)
{
	size_t i, n = r ? strlen(r) : 0, dashes = 0;

	if (n < 4 || n > 32 || !isalpha((unsigned char)r[0]) || !isdigit((unsigned char)r[n - 1]))
		return false;
	for (i = 0; i < n; i++) {
		if (r[i] == '-')
			dashes++;
		else if (!islower((unsigned char)r[i]) && !isdigit((unsigned char)r[i]))
			return false;
	}
	return dashes >= 2 && !strstr(r, "--");
}

static int add_region(struct parse_ctx *pc, const char *r)
{
	struct helper_config *c = pc->c;

	if (!config_region_valid(r))
		return err_set(pc->err, AMIS_E_HELPER_CONFIG,
		               "[copy] regions: \"%s\" is not a region name (eu-west-1)", r);
	if (c->n_copy_regions >= CONFIG_MAX_LIST)
		return err_set(pc->err, AMIS_E_HELPER_CONFIG, "too many [copy] regions");
	c->copy_regions[c->n_copy_regions++] = xstrdup(r);
	return 0;
}

static int add_account(struct parse_ctx *pc, const char *a)
{
	struct helper_config *c = pc->c;
	size_t i;

	for (i = 0; a[i]; i++) {
		if (!isdigit((unsigned char)a[i]))
			break;
	}
	if (a[i] || i != 12)
		return err_set(pc->err, AMIS_E_HELPER_CONFIG,
		               "[copy] share_accounts: \"%s\" is not a 12-digit account id", a);
	if (c->n_copy_share_accounts >= CONFIG_MAX_LIST)
		return err_set(pc->err, AMIS_E_HELPER_CONFIG, "too many [copy] share_accounts");
	c->copy_share_accounts[c->n_copy_share_accounts++] = xstrdup(a);
	return 0;
}

static int add_policy(struct parse_ctx *pc, const char *v)
{
	struct helper_config *c = pc->c;
	struct ret_policy pol;
	char why[256];
	char *copy = xstrdup(v);
	int rc;

	/* Checked now, parsed again by prune: the text is kept as written. */
	rc = ret_parse_policy(copy, &pol, why, sizeof(why));
	free(copy);
	if (rc < 0)
		return err_set(pc->err, AMIS_E_HELPER_CONFIG, "[retention] policy: %s", why);
	if (c->n_retention_policies >= CONFIG_MAX_LIST)
		return err_set(pc->err, AMIS_E_HELPER_CONFIG, "too many [retention] policies");
	c->retention_policies[c->n_retention_policies++] = xstrdup(v);
	return 0;
}

static int parse_long_range(const char *v, long lo, long hi, long *out)
{
	char *end;
	long n;

	errno = 0;
	n = strtol(v, &end, 10);
	if (errno || end == v || *end || n < lo || n > hi)
		return -1;
	*out = n;
	return 0;
}

static int handle(struct parse_ctx *pc, const char *s, const char *k, const char *v)
{
	struct helper_config *c = pc->c;
	struct amis_err *err = pc->err;

#define IS(sec, key) (!strcmp(s, sec) && !strcmp(k, key))
	if (IS("helper", "socket")) {
		if (v[0] != '/')
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "socket must be an absolute path");
		set_str(&c->socket_path, v);
	} else if (IS("helper", "socket_group")) {
		set_str(&c->socket_group, v);
	} else if (IS("helper", "allowed_users")) {
		c->n_allowed_uids = 0;
		return for_each_item(v, add_user, pc);
	} else if (IS("helper", "freeze_timeout")) {
		if (parse_duration_ms(v, &c->freeze_timeout_ms) || c->freeze_timeout_ms < 100 ||
		    c->freeze_timeout_ms > 600000)
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "freeze_timeout must be between 100ms and 10min");
	} else if (IS("helper", "client_timeout")) {
		if (parse_duration_ms(v, &c->client_timeout_ms) || c->client_timeout_ms < 1000)
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "client_timeout must be at least 1s");
	} else if (IS("helper", "ec2_timeout")) {
		if (parse_duration_ms(v, &c->ec2_timeout_ms) || c->ec2_timeout_ms < 100)
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "ec2_timeout must be at least 100ms");
	} else if (IS("helper", "state_dir")) {
		if (v[0] != '/')
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "state_dir must be an absolute path");
		set_str(&c->state_dir, v);
	} else if (IS("helper", "retries")) {
		char *end;

		errno = 0;
		c->retries = strtol(v, &end, 10);
		if (errno || end == v || *end || c->retries < 0 || c->retries > 10)
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "retries must be between 0 and 10");
	} else if (IS("helper", "retry_backoff")) {
		if (parse_duration_ms(v, &c->retry_backoff_ms) || c->retry_backoff_ms > 20000)
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "retry_backoff must be between 0 and 20s");
	} else if (IS("helper", "worker_user")) {
		if (!getpwnam(v))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "worker_user: no such user \"%s\"", v);
		if (!strcmp(v, "root") || getpwnam(v)->pw_uid == 0)
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "worker_user must not be root: the EC2 worker parses what "
			               "the network sends");
		set_str(&c->worker_user, v);
	} else if (IS("helper", "log_level")) {
		enum log_level level;

		if (!log_level_parse(v, &level))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "log_level must be debug, info, warning or error");
		set_str(&c->log_level, v);
	} else if (IS("filesystems", "allow")) {
		return for_each_item(v, add_allow, pc);
	} else if (IS("filesystems", "allow_root_filesystem")) {
		if (parse_bool(v, &c->allow_root_filesystem))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "allow_root_filesystem must be a boolean");
	} else if (!strcmp(s, "volumes")) {
		if (!aws_resource_id_valid(v, "vol"))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "[volumes] %s: \"%s\" is not an EBS volume id (vol-...)", k,
			               v);
		return add_kv(c->volume_map, &c->n_volume_map, k, v, err, "volumes");
	} else if (IS("aws", "region")) {
		set_str(&c->region, v);
	} else if (IS("aws", "instance_id")) {
		set_str(&c->instance_id, v);
	} else if (IS("aws", "ec2_endpoint")) {
		set_str(&c->ec2_endpoint, v);
	} else if (IS("aws", "imds_endpoint")) {
		set_str(&c->imds_endpoint, v);
	} else if (IS("aws", "profile")) {
		set_str(&c->profile, v);
	} else if (IS("aws", "credentials_file")) {
		set_str(&c->credentials_file, v);
	} else if (IS("aws", "preflight_dry_run")) {
		if (parse_bool(v, &c->preflight_dry_run))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "preflight_dry_run must be a boolean");
	} else if (IS("aws", "rewarm_after")) {
		/* Under libcurl's 118 s for reusing an idle connection. */
		if (parse_duration_ms(v, &c->rewarm_after_ms) || c->rewarm_after_ms > 60000)
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "rewarm_after must be between 0 and 60s");
	} else if (IS("drill", "drill_dir")) {
		if (v[0] != '/' || !strcmp(v, "/"))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "drill_dir must be an absolute path other than /");
		set_str(&c->drill_dir, v);
	} else if (IS("drill", "time_budget")) {
		if (parse_duration_ms(v, &c->drill_time_budget_ms) || c->drill_time_budget_ms < 0)
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "time_budget must be a duration (10min, 90s)");
	} else if (IS("drill", "timeout")) {
		if (parse_duration_ms(v, &c->drill_timeout_ms) || c->drill_timeout_ms < 1000)
			return err_set(err, AMIS_E_HELPER_CONFIG, "timeout must be at least 1s");
	} else if (IS("drill", "instance_type")) {
		set_str(&c->drill_instance_type, v);
	} else if (IS("drill", "subnet")) {
		set_str(&c->drill_subnet, v);
	} else if (IS("drill", "security_group")) {
		set_str(&c->drill_security_group, v);
	} else if (IS("drill", "key_name")) {
		set_str(&c->drill_key_name, v);
	} else if (IS("drill", "command") || IS("drill", "device_dir") || IS("drill", "dump_dir")) {
		if (v[0] != '/')
			return err_set(err, AMIS_E_HELPER_CONFIG, "%s must be an absolute path", k);
		set_str(!strcmp(k, "command")      ? &c->drill_command
		        : !strcmp(k, "device_dir") ? &c->drill_device_dir
		                                   : &c->drill_dump_dir,
		        v);
	} else if (IS("drill", "device_timeout")) {
		if (parse_duration_ms(v, &c->drill_device_timeout_ms) ||
		    c->drill_device_timeout_ms < 1000 || c->drill_device_timeout_ms > 3600000)
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "device_timeout must be from 1s to 1h");
	} else if (IS("drill", "max_jobs")) {
		char *end;

		c->max_jobs = strtol(v, &end, 10);
		if (!*v || *end || c->max_jobs < 1 || c->max_jobs > 4)
			return err_set(err, AMIS_E_HELPER_CONFIG, "max_jobs must be from 1 to 4");
	} else if (IS("drill", "kill_grace")) {
		if (parse_duration_ms(v, &c->job_kill_grace_ms) || c->job_kill_grace_ms < 1000)
			return err_set(err, AMIS_E_HELPER_CONFIG, "kill_grace must be at least 1s");
	} else if (IS("retention", "policy")) {
		return add_policy(pc, v);
	} else if (IS("copy", "regions")) {
		return for_each_item(v, add_region, pc);
	} else if (IS("copy", "kms_key_id")) {
		set_str(&c->copy_kms_key_id, v);
	} else if (IS("copy", "share_accounts")) {
		return for_each_item(v, add_account, pc);
	} else if (IS("copy", "names")) {
		set_str(&c->copy_names, v);
	} else if (IS("lock", "mode")) {
		if (strcmp(v, "governance") && strcmp(v, "compliance"))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "[lock] mode must be governance or compliance");
		set_str(&c->lock_mode, v);
	} else if (IS("lock", "days")) {
		if (parse_long_range(v, 1, 36500, &c->lock_days))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "[lock] days must be between 1 and 36500");
	} else if (IS("lock", "cool_off_hours")) {
		if (parse_long_range(v, 0, 72, &c->lock_cool_off_hours))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "[lock] cool_off_hours must be between 0 and 72");
	} else if (IS("lock", "names")) {
		set_str(&c->lock_names, v);
	} else if (!strcmp(s, "tags")) {
		if (strlen(k) > 128 || strlen(v) > 256 || !strncmp(k, "aws:", 4))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "[tags] %s: keys are at most 128 characters and may not "
			               "start with aws:, values at most 256",
			               k);
		return add_kv(c->tags, &c->n_tags, k, v, err, "tags");
	} else {
		return err_set(err, AMIS_E_HELPER_CONFIG, "unknown key \"%s\" in section [%s]", k,
		               s);
	}
#undef IS
	return 0;
}

static int ini_cb(void *user, const char *section, const char *name, const char *value)
{
	struct parse_ctx *pc = user;

	if (pc->failed)
		return 0;
	/* The preflight check tests the drill's EC2 calls when [drill] is there. */
	if (section && !strcmp(section, "drill"))
		pc->c->drill_section = true;
	if (!name) /* section header only */
		return 1;
	if (handle(pc, section, name, value ? value : "") != 0) {
		pc->failed = true;
		return 0;
	}
	return 1;
}

/*
 * The EC2 worker parses what the network sends: its user must not be able to
 * do what the helper guards.  Not root's group, not a user allowed to
 * connect, not in socket_group (it could connect and freeze).
 */
static int check_worker_user(const struct helper_config *c, struct amis_err *err)
{
	struct passwd *pw = getpwnam(c->worker_user);
	struct group *gr = c->socket_group ? getgrnam(c->socket_group) : NULL;
	size_t i;

	if (!pw)
		return err_set(err, AMIS_E_HELPER_CONFIG, "worker_user: no such user \"%s\"",
		               c->worker_user);
	if (pw->pw_uid == 0 || pw->pw_gid == 0)
		return err_set(err, AMIS_E_HELPER_CONFIG,
		               "worker_user \"%s\" has root's uid or group: the EC2 worker parses "
		               "what the network sends",
		               c->worker_user);
	for (i = 0; i < c->n_allowed_uids; i++)
		if (c->allowed_uids[i] == pw->pw_uid)
			return err_set(
			    err, AMIS_E_HELPER_CONFIG,
			    "worker_user \"%s\" is in allowed_users: the EC2 worker must "
			    "not be able to ask the helper to freeze",
			    c->worker_user);
	if (gr && gr->gr_gid == pw->pw_gid)
		return err_set(err, AMIS_E_HELPER_CONFIG,
		               "worker_user \"%s\"'s group is socket_group: the EC2 worker must "
		               "not be able to connect to the helper",
		               c->worker_user);
	for (i = 0; gr && gr->gr_mem && gr->gr_mem[i]; i++)
		if (!strcmp(gr->gr_mem[i], c->worker_user))
			return err_set(err, AMIS_E_HELPER_CONFIG,
			               "worker_user \"%s\" is a member of socket_group: the EC2 "
			               "worker must not be able to connect to the helper",
			               c->worker_user);
	return 0;
}

/* Settings that only make sense together. */
static int check_lifecycle(const struct helper_config *c, struct amis_err *err)
{
	if (c->lock_mode && !c->lock_days)
		return err_set(err, AMIS_E_HELPER_CONFIG,
		               "[lock] mode needs days (how long a backup stays locked)");
	if (c->lock_cool_off_hours && (!c->lock_mode || strcmp(c->lock_mode, "compliance")))
		return err_set(err, AMIS_E_HELPER_CONFIG,
		               "[lock] cool_off_hours is for mode = compliance only");
	return 0;
}

static int finish(struct parse_ctx *pc, int rc, const char *where)
{
	if (!pc->failed && rc == 0 && check_lifecycle(pc->c, pc->err) < 0)
		return err_prefix(pc->err, "%s", where);
	if (pc->failed)
		return err_prefix(pc->err, "%s line %d", where, rc);
	if (rc < 0)
		return err_set(pc->err, AMIS_E_HELPER_CONFIG, "%s: cannot open: %s", where,
		               strerror(errno));
	if (rc > 0)
		return err_set(pc->err, AMIS_E_HELPER_CONFIG, "%s line %d: syntax error", where,
		               rc);
	return check_worker_user(pc->c, pc->err);
}

int config_load_file(struct helper_config *c, const char *path, struct amis_err *err)
{
	struct parse_ctx pc = {c, err, false};

	return finish(&pc, ini_parse(path, ini_cb, &pc), path);
}

int config_load_string(struct helper_config *c, const char *text, struct amis_err *err)
{
	struct parse_ctx pc = {c, err, false};

	return finish(&pc, ini_parse_string(text, ini_cb, &pc), "config");
}
