/*
 * lifecycle.c - `ami-snapshot list | show | wait | prune | copy | lock |
 * unlock | share` (doc/lifecycle.md; see lifecycle.h).
 *
 * Each subcommand reads the configuration and opens what needs root (the
 * credentials file, the data directory's pg_control) first, then, when run
 * as root, becomes the configuration's worker_user for good, as the
 * helper's EC2 worker does: everything after that only talks to EC2 and
 * parses what it answers, and needs no privilege.
 */
#include "lifecycle.h"

#include "config.h"
#include "status.h"
#include "log.h"
#include "worker_main.h"

#include <fnmatch.h>
#include <getopt.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_POLICIES CONFIG_MAX_LIST
#define MAX_REGIONS 16
#define MAX_ACCOUNTS 16

struct lc_opts {
	const char *cmd;
	const char *config;
	const char *id;
	const char *system_id;
	const char *pgdata;
	const char *name;
	bool all, json, dry_run, remove;
	const char *regions[MAX_REGIONS]; /* list: also these; others: where the backup is */
	size_t nregions;
	const char *to_region;
	const char *kms_key_id;
	const char *accounts[MAX_ACCOUNTS];
	size_t naccounts;
	char *policies[MAX_POLICIES];
	size_t npolicies;
	long timeout_s, interval_s;
	const char *mode;
	long days, cool_off_hours;
	const char *until;
	const char *db, *pg_user, *psql; /* status: how to read the history */
	long last;
	bool no_db;
};

struct lc_ctx {
	struct lc_opts o;
	struct helper_config cfg;
	struct lc_aws *aws;
	const struct ec2_transport *t;
	char system_id[32];
	bool have_system_id;
	time_t now;
};

/* ---- Errors and output. ---- */

/* The one way a subcommand fails: a line on stderr, or a JSON document. */
static int fail(struct lc_ctx *c, int code, const char *ec2code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int fail(struct lc_ctx *c, int code, const char *ec2code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (c->o.json) {
		json_object *o = json_object_new_object(), *e = json_object_new_object();

		json_object_object_add(e, "code",
		                       json_object_new_string(ec2code ? ec2code : "Error"));
		json_object_object_add(e, "message", json_object_new_string(msg));
		json_object_object_add(o, "error", e);
		json_object_object_add(o, "exit_code", json_object_new_int(code));
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
		json_object_put(o);
	}
	fprintf(stderr, "ami-snapshot %s: %s\n", c->o.cmd, msg);
	return code;
}

static int fail_err(struct lc_ctx *c, int code, const struct amis_err *err)
{
	return fail(c, code, err->code, "%s", err->msg);
}

static void print_json(json_object *o)
{
	printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
	                                                     JSON_C_TO_STRING_SPACED));
	json_object_put(o);
}

static void jstr(json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, v && v[0] ? json_object_new_string(v) : NULL);
}

/*
 * One action that failed among others (exit 7): {"id", "code", "message"}
 * in errors, a line on stderr; returns 1 to count it.
 */
static size_t add_error(const struct lc_ctx *c, json_object *errors, const char *id,
                        const struct amis_err *err)
{
	json_object *e = json_object_new_object();

	jstr(e, "id", id);
	jstr(e, "code", err->code);
	jstr(e, "message", err->msg);
	json_object_array_add(errors, e);
	fprintf(stderr, "ami-snapshot %s: %s\n", c->o.cmd, err->msg);
	return 1;
}

static void iso_time(time_t t, char *buf, size_t sz)
{
	struct tm tm;

	if (!gmtime_r(&t, &tm) || !strftime(buf, sz, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, sz, "?");
}

/* ---- Options. ---- */

static void usage(FILE *f, const char *cmd)
{
	fprintf(f, "usage: ami-snapshot [-c FILE] %s ", cmd);
	if (!strcmp(cmd, "list"))
		fprintf(f, "[--name NAME] [--region R]...");
	else if (!strcmp(cmd, "show"))
		fprintf(f, "ID [--region R]");
	else if (!strcmp(cmd, "wait"))
		fprintf(f, "ID [--region R] [--timeout S] [--interval S]");
	else if (!strcmp(cmd, "prune"))
		fprintf(f, "[--policy PATTERN:RULE,...]... [--dry-run] [--region R]...");
	else if (!strcmp(cmd, "copy"))
		fprintf(f, "ID --to-region R [--kms-key-id K] [--share ACCOUNT]...");
	else if (!strcmp(cmd, "lock"))
		fprintf(f, "ID [--mode governance|compliance] (--days N | --until DATE) "
		           "[--cool-off-hours H]");
	else if (!strcmp(cmd, "unlock"))
		fprintf(f, "ID [--region R]");
	else if (!strcmp(cmd, "share"))
		fprintf(f, "ID --account A [--remove] [--region R]");
	else if (!strcmp(cmd, "status"))
		fprintf(f, "[--last N] [--db CONNINFO] [--pg-user USER] [--psql PATH] [--no-db]");
	fprintf(f, "\n       [--json] [--system-id ID | --pgdata DIR | --all]\n"
	           "  ID is a request id, an ami-... or a snap-... id; see ami-snapshot(8) and "
	           "doc/lifecycle.md\n");
}

static int parse_opts(int argc, char **argv, const char *default_config, struct lc_opts *o)
{
	enum {
		O_JSON = 256,
		O_SYSID,
		O_PGDATA,
		O_ALL,
		O_NAME,
		O_REGION,
		O_TO_REGION,
		O_KMS,
		O_SHARE,
		O_ACCOUNT,
		O_REMOVE,
		O_POLICY,
		O_DRY,
		O_TIMEOUT,
		O_INTERVAL,
		O_MODE,
		O_DAYS,
		O_UNTIL,
		O_COOL,
		O_DB,
		O_PGUSER,
		O_PSQL,
		O_LAST,
		O_NODB,
	};
	static const struct option lo[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"help", no_argument, NULL, 'h'},
	    {"json", no_argument, NULL, O_JSON},
	    {"system-id", required_argument, NULL, O_SYSID},
	    {"pgdata", required_argument, NULL, O_PGDATA},
	    {"all", no_argument, NULL, O_ALL},
	    {"name", required_argument, NULL, O_NAME},
	    {"region", required_argument, NULL, O_REGION},
	    {"to-region", required_argument, NULL, O_TO_REGION},
	    {"kms-key-id", required_argument, NULL, O_KMS},
	    {"share", required_argument, NULL, O_SHARE},
	    {"account", required_argument, NULL, O_ACCOUNT},
	    {"remove", no_argument, NULL, O_REMOVE},
	    {"policy", required_argument, NULL, O_POLICY},
	    {"dry-run", no_argument, NULL, O_DRY},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"interval", required_argument, NULL, O_INTERVAL},
	    {"mode", required_argument, NULL, O_MODE},
	    {"days", required_argument, NULL, O_DAYS},
	    {"until", required_argument, NULL, O_UNTIL},
	    {"cool-off-hours", required_argument, NULL, O_COOL},
	    {"db", required_argument, NULL, O_DB},
	    {"pg-user", required_argument, NULL, O_PGUSER},
	    {"psql", required_argument, NULL, O_PSQL},
	    {"last", required_argument, NULL, O_LAST},
	    {"no-db", no_argument, NULL, O_NODB},
	    {NULL, 0, NULL, 0},
	};
	const char *cmd = o->cmd;
	char *end;
	int opt;

	o->config = default_config;
	o->pg_user = "postgres";
	o->last = 10;
	o->timeout_s = 3600;
	o->interval_s = 15;
	optind = 1;
	opterr = 1;
	while ((opt = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'c':
			o->config = optarg;
			break;
		case 'h':
			usage(stdout, cmd);
			exit(0);
		case O_JSON:
			o->json = true;
			break;
		case O_SYSID:
			o->system_id = optarg;
			break;
		case O_PGDATA:
			o->pgdata = optarg;
			break;
		case O_ALL:
			o->all = true;
			break;
		case O_NAME:
			o->name = optarg;
			break;
		case O_REGION:
			if (o->nregions == MAX_REGIONS || !config_region_valid(optarg))
				goto bad;
			o->regions[o->nregions++] = optarg;
			break;
		case O_TO_REGION:
			if (!config_region_valid(optarg))
				goto bad;
			o->to_region = optarg;
			break;
		case O_KMS:
			o->kms_key_id = optarg;
			break;
		case O_SHARE:
		case O_ACCOUNT:
			if (o->naccounts == MAX_ACCOUNTS || !ec2_account_id_valid(optarg)) {
				fprintf(stderr,
				        "ami-snapshot %s: \"%s\" is not a 12-digit account id\n",
				        cmd, optarg);
				return -1;
			}
			o->accounts[o->naccounts++] = optarg;
			break;
		case O_REMOVE:
			o->remove = true;
			break;
		case O_POLICY:
			if (o->npolicies == MAX_POLICIES)
				goto bad;
			o->policies[o->npolicies++] = optarg;
			break;
		case O_DRY:
			o->dry_run = true;
			break;
		case O_TIMEOUT:
		case O_INTERVAL:
		case O_DAYS:
		case O_COOL: {
			long v = strtol(optarg, &end, 10);

			if (*end || end == optarg || v < 0 || v > 100L * 365 * 86400)
				goto bad;
			if (opt == O_TIMEOUT)
				o->timeout_s = v;
			else if (opt == O_INTERVAL)
				o->interval_s = v < 1 ? 1 : v;
			else if (opt == O_DAYS)
				o->days = v;
			else
				o->cool_off_hours = v;
			break;
		}
		case O_MODE:
			o->mode = optarg;
			break;
		case O_UNTIL:
			o->until = optarg;
			break;
		case O_DB:
			o->db = optarg;
			break;
		case O_PGUSER:
			o->pg_user = optarg;
			break;
		case O_PSQL:
			o->psql = optarg;
			break;
		case O_NODB:
			o->no_db = true;
			break;
		case O_LAST: {
			long v = strtol(optarg, &end, 10);

			if (*end || end == optarg || v < 1 || v > 1000)
				goto bad;
			o->last = v;
			break;
		}
		default:
			usage(stderr, cmd);
			return -1;
		}
	}
	if (optind < argc)
		o->id = argv[optind++];
	if (optind < argc) {
		fprintf(stderr, "ami-snapshot %s: unexpected argument \"%s\"\n", cmd, argv[optind]);
		return -1;
	}
	return 0;
bad:
	fprintf(stderr, "ami-snapshot %s: invalid option value \"%s\"\n", cmd, optarg);
	return -1;
}

/* ---- Set-up: configuration, cluster, privileges, AWS. ---- */

static int setup(struct lc_ctx *c, int argc, char **argv, const char *default_config, bool need_id,
                 bool need_cluster)
{
	struct amis_err err;
	enum log_level level;
	const char *pgdata;

	err_clear(&err);
	config_init(&c->cfg);
	c->now = time(NULL);
	if (parse_opts(argc, argv, default_config, &c->o) < 0)
		return LC_EXIT_USAGE;
	if (need_id && !c->o.id)
		return fail(c, LC_EXIT_USAGE, "Usage",
		            "which backup? give its request id or an id");
	if (config_load_file(&c->cfg, c->o.config, &err) != 0)
		return fail(c, LC_EXIT_USAGE, err.code, "configuration: %s", err.msg);
	log_set_ident("ami-snapshot");
	log_set_level(LOG_LVL_WARNING);
	if (log_level_parse(c->cfg.log_level, &level) && level > LOG_LVL_INFO)
		log_set_level(level);

	/* Which cluster: --system-id, the data directory's pg_control, or --all. */
	pgdata = c->o.pgdata ? c->o.pgdata : getenv("PGDATA");
	if (c->o.system_id) {
		size_t i;

		for (i = 0; c->o.system_id[i]; i++) {
			if (c->o.system_id[i] < '0' || c->o.system_id[i] > '9')
				return fail(c, LC_EXIT_USAGE, "Usage",
				            "--system-id is a decimal system identifier");
		}
		snprintf(c->system_id, sizeof(c->system_id), "%s", c->o.system_id);
		c->have_system_id = true;
	} else if (!c->o.all && pgdata && pgdata[0]) {
		if (lc_read_system_id(pgdata, c->system_id, sizeof(c->system_id), &err) < 0)
			return fail(c, LC_EXIT_USAGE, err.code, "%s", err.msg);
		c->have_system_id = true;
	} else if (need_cluster && !c->o.all) {
		return fail(c, LC_EXIT_USAGE, "Usage",
		            "which cluster? give --system-id, --pgdata (or PGDATA), or --all");
	}

	c->aws = lc_aws_new(&c->cfg);
	if (lc_aws_pin(c->aws, &err) != 0)
		return fail_err(c, LC_EXIT_ERROR, &err);
	/* Nothing below needs root: become worker_user for good (see the top). */
	if (geteuid() == 0 && worker_drop_privileges(c->cfg.worker_user, &err) != 0)
		return fail_err(c, LC_EXIT_ERROR, &err);
	if (lc_aws_ready(c->aws, &err) != 0)
		return fail_err(c, LC_EXIT_ERROR, &err);
	c->t = lc_aws_transport(c->aws);
	return LC_EXIT_OK;
}

static void teardown(struct lc_ctx *c)
{
	lc_aws_free(c->aws);
	config_free(&c->cfg);
}

/* ---- Finding backups. ---- */

static int inventory(struct lc_ctx *c, const char *region, const struct lc_scope *scope,
                     struct lc_inventory *inv, struct amis_err *err)
{
	const char *key_vals[1] = {LC_TAG("request-id")};
	const char *sys_vals[1], *name_vals[1], *rid_vals[1];
	struct ec2_filter f[4];
	char sys_name[64], name_name[64], rid_name[64];
	size_t nf = 0;

	memset(inv, 0, sizeof(*inv));
	snprintf(inv->region, sizeof(inv->region), "%s", region);
	f[nf++] = (struct ec2_filter){"tag-key", key_vals, 1};
	if (scope->system_id) {
		snprintf(sys_name, sizeof(sys_name), "tag:%s", LC_TAG("system-identifier"));
		sys_vals[0] = scope->system_id;
		f[nf++] = (struct ec2_filter){sys_name, sys_vals, 1};
	}
	if (scope->name) {
		if (strpbrk(scope->name, "*?"))
			return err_set(
			    err, AMIS_E_INVALID_ARGUMENT,
			    "\"%s\" contains * or ?, which EC2 filters take as wildcards",
			    scope->name);
		snprintf(name_name, sizeof(name_name), "tag:%s", LC_TAG("name"));
		name_vals[0] = scope->name;
		f[nf++] = (struct ec2_filter){name_name, name_vals, 1};
	}
	if (scope->request_id) {
		snprintf(rid_name, sizeof(rid_name), "tag:%s", LC_TAG("request-id"));
		rid_vals[0] = scope->request_id;
		f[nf++] = (struct ec2_filter){rid_name, rid_vals, 1};
	}
	if (ec2_lc_describe_snapshots(c->t, region, f, nf, &inv->snaps, err) < 0 ||
	    ec2_lc_describe_images(c->t, region, f, nf, &inv->images, err) < 0)
		return -1;
	lc_group(inv, scope, c->now);
	return 0;
}

/* The locks of every snapshot of the inventory's backups (DescribeLockedSnapshots). */
static int fill_locks(struct lc_ctx *c, struct lc_inventory *inv, struct amis_err *err)
{
	size_t i, j, k;

	for (i = 0; i < inv->n; i++) {
		struct lc_backup *b = &inv->items[i];
		const char *ids[LC_MAX_SNAPSHOTS];
		struct lc_lock locks[LC_MAX_SNAPSHOTS];
		size_t n = lc_backup_snapshot_ids(b, ids, LC_MAX_SNAPSHOTS), got = 0;

		memset(&b->lock, 0, sizeof(b->lock));
		if (!n)
			continue;
		if (ec2_describe_locked_snapshots(c->t, inv->region, ids, n, locks,
		                                  LC_MAX_SNAPSHOTS, &got, err) < 0)
			return -1;
		for (j = 0; j < got; j++) {
			for (k = 0; k < n; k++) {
				if (strcmp(ids[k], locks[j].snapshot_id) == 0)
					b->locks[k] = locks[j];
			}
			if (!strcmp(locks[j].lock_state, "expired") || !locks[j].lock_state[0])
				continue;
			b->lock.nlocked++;
			/* The backup is protected until its first lock ends. */
			if (!b->lock.state[0] ||
			    lc_parse_time(locks[j].lock_expires_on) < b->lock.expires) {
				snprintf(b->lock.state, sizeof(b->lock.state), "%s",
				         locks[j].lock_state);
				snprintf(b->lock.expires_on, sizeof(b->lock.expires_on), "%s",
				         locks[j].lock_expires_on);
				b->lock.expires = lc_parse_time(locks[j].lock_expires_on);
			}
		}
	}
	return 0;
}

/* Regions other than home to look in: [copy] regions and --region. */
static size_t other_regions(struct lc_ctx *c, const char **out, size_t max)
{
	const char *home = lc_aws_region(c->aws);
	size_t n = 0, i, j;

	for (i = 0; i < c->cfg.n_copy_regions + c->o.nregions; i++) {
		const char *r = i < c->cfg.n_copy_regions ? c->cfg.copy_regions[i]
		                                          : c->o.regions[i - c->cfg.n_copy_regions];
		bool dup = !strcmp(r, home);

		for (j = 0; j < n && !dup; j++)
			dup = !strcmp(out[j], r);
		if (!dup && n < max)
			out[n++] = r;
	}
	return n;
}

/* Marks on each backup of home the regions holding a copy of it. */
static void link_copies(struct lc_inventory *home, const struct lc_inventory *other)
{
	size_t i, j;

	for (i = 0; i < home->n; i++) {
		struct lc_backup *b = &home->items[i];

		for (j = 0; j < other->n; j++) {
			const struct lc_backup *x = &other->items[j];

			if (strcmp(x->request_id, b->request_id) != 0 ||
			    b->ncopies == LC_MAX_COPIES)
				continue;
			snprintf(b->copies[b->ncopies].region, sizeof(b->copies[0].region), "%s",
			         x->region);
			snprintf(b->copies[b->ncopies].state, sizeof(b->copies[0].state), "%s",
			         x->state);
			b->ncopies++;
		}
	}
}

static struct lc_scope cluster_scope(const struct lc_ctx *c)
{
	struct lc_scope s = {c->have_system_id ? c->system_id : NULL, c->o.name, NULL};

	return s;
}

/* ID (a request id, ami-..., snap-...) to a request id, via the resource's tag. */
static int resolve_id(struct lc_ctx *c, const char *region, char *rid, size_t sz,
                      struct amis_err *err)
{
	const char *id = c->o.id;
	const char *v = NULL;

	if (!strncmp(id, "ami-", 4)) {
		struct lc_image_list l = {0};

		if (ec2_lc_describe_image_ids(c->t, region, &id, 1, &l, err) < 0)
			return -1;
		if (l.n)
			v = lc_tags_get(&l.items[0].tags, LC_TAG("request-id"));
		snprintf(rid, sz, "%s", v ? v : "");
		lc_image_list_free(&l);
	} else if (!strncmp(id, "snap-", 5)) {
		struct lc_snapshot_list l = {0};

		if (ec2_lc_describe_snapshot_ids(c->t, region, &id, 1, &l, err) < 0)
			return -1;
		if (l.n)
			v = lc_tags_get(&l.items[0].tags, LC_TAG("request-id"));
		snprintf(rid, sz, "%s", v ? v : "");
		lc_snapshot_list_free(&l);
	} else {
		if (strpbrk(id, "*?") || strlen(id) >= sz)
			return err_set(err, AMIS_E_INVALID_ARGUMENT, "\"%s\" is not a request id",
			               id);
		snprintf(rid, sz, "%s", id);
	}
	return 0;
}

/*
 * The one backup ID names, in region (first --region, else home), checked
 * to be this cluster's.  Returns an lc_exit code; 0 with *b.
 */
static int find_backup(struct lc_ctx *c, struct lc_inventory *inv, struct lc_backup **b)
{
	const char *region = c->o.nregions ? c->o.regions[0] : lc_aws_region(c->aws);
	struct lc_scope scope = {NULL, NULL, NULL};
	struct amis_err err;
	char rid[80];

	err_clear(&err);
	*b = NULL;
	if (resolve_id(c, region, rid, sizeof(rid), &err) < 0)
		return fail_err(
		    c, strstr(err.code, ".NotFound") ? LC_EXIT_NOT_FOUND : LC_EXIT_ERROR, &err);
	if (!rid[0])
		return fail(c, LC_EXIT_NOT_FOUND, "NotFound",
		            "%s carries no ami-snapshot:request-id tag: not a backup of ours",
		            c->o.id);
	scope.request_id = rid;
	if (inventory(c, region, &scope, inv, &err) < 0 || fill_locks(c, inv, &err) < 0)
		return fail_err(c, LC_EXIT_ERROR, &err);
	if (!inv->n)
		return fail(c, LC_EXIT_NOT_FOUND, "NotFound", "no backup %s in %s", rid, region);
	*b = &inv->items[0];
	if (c->have_system_id && strcmp((*b)->system_id, c->system_id) != 0)
		return fail(c, LC_EXIT_NOT_OURS, "NotThisCluster",
		            "backup %s is of the cluster with system identifier %s, not %s", rid,
		            (*b)->system_id[0] ? (*b)->system_id : "(none)", c->system_id);
	return LC_EXIT_OK;
}

/* ---- list, show. ---- */

int lc_list_main(int argc, char **argv, const char *default_config)
{
	struct lc_ctx c = {.o.cmd = "list"};
	struct lc_inventory home, others[MAX_REGIONS];
	const char *regions[MAX_REGIONS];
	const struct lc_backup **rows = NULL;
	struct lc_scope scope;
	struct amis_err err;
	size_t nother = 0, i, j, nrows = 0, total;
	int rc;

	memset(&home, 0, sizeof(home));
	rc = setup(&c, argc, argv, default_config, false, true);
	if (rc)
		goto out;
	scope = cluster_scope(&c);
	if (inventory(&c, lc_aws_region(c.aws), &scope, &home, &err) < 0 ||
	    fill_locks(&c, &home, &err) < 0) {
		rc = fail_err(&c, LC_EXIT_ERROR, &err);
		goto out;
	}
	nother = other_regions(&c, regions, MAX_REGIONS);
	for (i = 0; i < nother; i++) {
		if (inventory(&c, regions[i], &scope, &others[i], &err) < 0 ||
		    fill_locks(&c, &others[i], &err) < 0) {
			nother = i + 1;
			rc = fail_err(&c, LC_EXIT_ERROR, &err);
			goto out;
		}
		link_copies(&home, &others[i]);
	}
	total = home.n;
	for (i = 0; i < nother; i++)
		total += others[i].n;
	rows = xcalloc(total ? total : 1, sizeof(*rows));
	for (i = 0; i < home.n; i++)
		rows[nrows++] = &home.items[i];
	for (i = 0; i < nother; i++) {
		for (j = 0; j < others[i].n; j++)
			rows[nrows++] = &others[i].items[j];
	}
	if (c.o.json) {
		json_object *o = json_object_new_object(), *a = json_object_new_array();

		json_object_object_add(o, "region", json_object_new_string(lc_aws_region(c.aws)));
		jstr(o, "system_identifier", c.have_system_id ? c.system_id : NULL);
		for (i = 0; i < nrows; i++)
			json_object_array_add(a, lc_backup_json(rows[i], c.now));
		json_object_object_add(o, "backups", a);
		print_json(o);
	} else {
		lc_print_table(stdout, rows, nrows, c.now);
	}
out:
	free(rows);
	lc_inventory_free(&home);
	for (i = 0; i < nother; i++)
		lc_inventory_free(&others[i]);
	teardown(&c);
	return rc;
}

int lc_show_main(int argc, char **argv, const char *default_config)
{
	struct lc_ctx c = {.o.cmd = "show"};
	struct lc_inventory inv, others[MAX_REGIONS];
	const char *regions[MAX_REGIONS];
	struct lc_backup *b;
	struct lc_scope scope = {NULL, NULL, NULL};
	struct amis_err err;
	size_t i, nother = 0;
	int rc;

	memset(&inv, 0, sizeof(inv));
	rc = setup(&c, argc, argv, default_config, true, false);
	if (rc || (rc = find_backup(&c, &inv, &b)))
		goto out;
	/* Its copies elsewhere (a copy shows where it came from instead). */
	if (!b->copy_of_region[0]) {
		scope.request_id = b->request_id;
		nother = other_regions(&c, regions, MAX_REGIONS);
		for (i = 0; i < nother; i++) {
			if (!strcmp(regions[i], inv.region)) {
				memset(&others[i], 0, sizeof(others[i]));
				continue;
			}
			if (inventory(&c, regions[i], &scope, &others[i], &err) < 0) {
				nother = i + 1;
				rc = fail_err(&c, LC_EXIT_ERROR, &err);
				goto out;
			}
			link_copies(&inv, &others[i]);
		}
	}
	if (c.o.json)
		print_json(lc_backup_json(b, c.now));
	else
		lc_print_backup(stdout, b, c.now);
out:
	lc_inventory_free(&inv);
	for (i = 0; i < nother; i++)
		lc_inventory_free(&others[i]);
	teardown(&c);
	return rc;
}

/* ---- wait. ---- */

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

int lc_wait_main(int argc, char **argv, const char *default_config)
{
	struct lc_ctx c = {.o.cmd = "wait"};
	struct lc_inventory inv;
	struct lc_backup *b;
	struct amis_err err;
	char last[LC_MAX_SNAPSHOTS + 1][48], rid[80], region[32], when[32];
	long long start;
	const char *outcome;
	FILE *progress;
	int rc;
	size_t i;

	memset(&inv, 0, sizeof(inv));
	memset(last, 0, sizeof(last));
	rc = setup(&c, argc, argv, default_config, true, false);
	if (rc || (rc = find_backup(&c, &inv, &b)))
		goto out;
	signal(SIGINT, on_signal);
	signal(SIGTERM, on_signal);
	/* With --json, stdout is the one document: progress lines go to stderr. */
	progress = c.o.json ? stderr : stdout;
	snprintf(rid, sizeof(rid), "%s", b->request_id);
	snprintf(region, sizeof(region), "%s", inv.region);
	start = mono_usec();
	for (;;) {
		struct lc_scope scope = {NULL, NULL, rid};
		long waited = (long)((mono_usec() - start) / 1000000);

		/* A line per snapshot (and the image) whose state or progress changed. */
		for (i = 0; i <= b->nsnaps; i++) {
			char now_text[48];
			const char *id;

			if (i < b->nsnaps) {
				id = b->snaps[i]->snapshot_id;
				snprintf(now_text, sizeof(now_text), "%s %s", b->snaps[i]->state,
				         b->snaps[i]->progress);
			} else if (b->ami) {
				id = b->image_id;
				snprintf(now_text, sizeof(now_text), "%s",
				         b->image ? b->image->state : "gone");
			} else {
				break;
			}
			if (strcmp(last[i], now_text) != 0) {
				iso_time(time(NULL), when, sizeof(when));
				fprintf(progress, "%s %s %s\n", when, id, now_text);
				fflush(progress);
				snprintf(last[i], sizeof(last[0]), "%s", now_text);
			}
		}
		if (!strcmp(b->state, "completed")) {
			outcome = "completed";
			rc = LC_EXIT_OK;
			break;
		}
		if (!strcmp(b->state, "failed")) {
			outcome = "failed";
			rc = LC_EXIT_FAILED;
			break;
		}
		if (waited >= c.o.timeout_s || interrupted) {
			outcome = "timeout";
			rc = LC_EXIT_TIMEOUT;
			break;
		}
		for (i = 0; i < (size_t)c.o.interval_s * 10 && !interrupted; i++)
			usleep(100000);
		c.now = time(NULL);
		lc_inventory_free(&inv);
		if (inventory(&c, region, &scope, &inv, &err) < 0) {
			rc = fail_err(&c, LC_EXIT_ERROR, &err);
			goto out;
		}
		if (!inv.n) {
			rc = fail(&c, LC_EXIT_NOT_FOUND, "NotFound", "backup %s is gone from %s",
			          rid, region);
			goto out;
		}
		b = &inv.items[0];
	}
	if (c.o.json) {
		json_object *o = json_object_new_object();

		jstr(o, "request_id", rid);
		jstr(o, "region", region);
		json_object_object_add(o, "outcome", json_object_new_string(outcome));
		json_object_object_add(o, "waited_seconds",
		                       json_object_new_int64((mono_usec() - start) / 1000000));
		jstr(o, "reason", b->reason);
		json_object_object_add(o, "exit_code", json_object_new_int(rc));
		json_object_object_add(o, "backup", lc_backup_json(b, c.now));
		print_json(o);
	} else if (rc == LC_EXIT_OK) {
		printf("backup %s is completed\n", rid);
	} else if (rc == LC_EXIT_FAILED) {
		fprintf(stderr, "ami-snapshot wait: backup %s failed: %s\n", rid, b->reason);
	} else {
		fprintf(stderr, "ami-snapshot wait: backup %s is still %s (%d%%) after %ld s\n",
		        rid, b->state, b->progress, c.o.timeout_s);
	}
out:
	lc_inventory_free(&inv);
	teardown(&c);
	return rc;
}

/* ---- prune. ---- */

struct prune_row {
	const struct lc_backup *b;
	struct ret_decision d;
	bool done;
	json_object *deleted; /* ids */
	char error_code[64];
	char error[512];
};

/* Whether an image of the inventory other than b's own maps one of b's snapshots. */
static bool snapshot_in_use(const struct lc_inventory *inv, const struct lc_backup *b)
{
	size_t i, j, k;

	for (i = 0; i < inv->images.n; i++) {
		const struct lc_image *img = &inv->images.items[i];

		if (b->image == img)
			continue;
		for (j = 0; j < img->nsnapshots; j++) {
			for (k = 0; k < b->nsnaps; k++) {
				if (!strcmp(img->snapshot_ids[j], b->snaps[k]->snapshot_id))
					return true;
			}
		}
	}
	return false;
}

static bool gone(const struct amis_err *err)
{
	return !strcmp(err->code, "InvalidSnapshot.NotFound") ||
	       !strcmp(err->code, "InvalidAMIID.NotFound") ||
	       !strcmp(err->code, "InvalidAMIID.Unavailable");
}

/*
 * Deregisters b's image, then deletes its snapshots.  An image or snapshot
 * already gone counts as done; InUse and a lock turn the row into a skip.
 */
static void prune_one(struct lc_ctx *c, const char *region, struct prune_row *r)
{
	const struct lc_backup *b = r->b;
	struct amis_err err;
	size_t i;

	err_clear(&err);
	r->deleted = json_object_new_array();
	/* This cluster's, by its own tags, once more: never trust a filter alone. */
	for (i = 0; i < b->nsnaps; i++) {
		const char *sys = lc_tags_get(&b->snaps[i]->tags, LC_TAG("system-identifier"));

		if (!sys || strcmp(sys, c->system_id) != 0) {
			r->d.action = RET_SKIP;
			snprintf(r->d.reason, sizeof(r->d.reason),
			         "snapshot %s is not tagged with this cluster's system identifier",
			         b->snaps[i]->snapshot_id);
			return;
		}
	}
	/*
	 * Nothing is deleted while an image this prune does not delete still
	 * maps one of the snapshots: EC2 would refuse that one (InUse) after
	 * the others were gone, and the set would no longer restore.  Only
	 * images of this account show here (one shared with us is not ours).
	 */
	if (b->nsnaps) {
		const char *ids[LC_MAX_SNAPSHOTS];
		struct ec2_filter f;
		struct lc_image_list users = {0};
		size_t k, n = 0;

		for (i = 0; i < b->nsnaps && n < LC_MAX_SNAPSHOTS; i++)
			ids[n++] = b->snaps[i]->snapshot_id;
		f = (struct ec2_filter){"block-device-mapping.snapshot-id", ids, n};
		if (ec2_lc_describe_images(c->t, region, &f, 1, &users, &err) < 0)
			goto failed;
		for (k = 0; k < users.n; k++) {
			if (b->ami && b->image && !strcmp(users.items[k].image_id, b->image_id))
				continue;
			r->d.action = RET_SKIP;
			snprintf(r->d.reason, sizeof(r->d.reason),
			         "in use: image %s maps its snapshots (nothing deleted)",
			         users.items[k].image_id);
			snprintf(r->error_code, sizeof(r->error_code), "InvalidSnapshot.InUse");
			lc_image_list_free(&users);
			return;
		}
		lc_image_list_free(&users);
	}
	if (b->ami && b->image) {
		if (ec2_lc_deregister_image(c->t, region, b->image_id, &err) < 0 && !gone(&err))
			goto failed;
		json_object_array_add(r->deleted, json_object_new_string(b->image_id));
	}
	for (i = 0; i < b->nsnaps; i++) {
		const char *id = b->snaps[i]->snapshot_id;

		if (ec2_delete_snapshot(c->t, region, id, &err) < 0 && !gone(&err)) {
			if (!strcmp(err.code, "InvalidSnapshot.InUse") ||
			    strstr(err.code, "Lock")) {
				r->d.action = RET_SKIP;
				snprintf(r->d.reason, sizeof(r->d.reason), "%s: %.140s",
				         strstr(err.code, "Lock") ? "locked" : "in use", err.msg);
				snprintf(r->error_code, sizeof(r->error_code), "%s", err.code);
				return;
			}
			goto failed;
		}
		json_object_array_add(r->deleted, json_object_new_string(id));
	}
	r->done = true;
	return;
failed:
	snprintf(r->error_code, sizeof(r->error_code), "%s", err.code);
	snprintf(r->error, sizeof(r->error), "%.500s", err.msg);
}

static int load_policies(struct lc_ctx *c, struct ret_policy *pol, char **texts, size_t *n)
{
	char why[256];
	size_t i, count = c->o.npolicies ? c->o.npolicies : c->cfg.n_retention_policies;

	*n = 0;
	if (!count)
		return fail(c, LC_EXIT_USAGE, "Usage",
		            "no retention policy: give --policy PATTERN:RULE,... or [retention] "
		            "policy in the configuration");
	for (i = 0; i < count; i++) {
		texts[i] =
		    xstrdup(c->o.npolicies ? c->o.policies[i] : c->cfg.retention_policies[i]);
		(*n)++;
		if (ret_parse_policy(texts[i], &pol[i], why, sizeof(why)) < 0)
			return fail(c, LC_EXIT_USAGE, "Usage", "policy %zu: %s", i + 1, why);
	}
	return 0;
}

/* Prunes one region's backups of this cluster; rows appended to a. */
static int prune_region(struct lc_ctx *c, const char *region, const struct ret_policy *pol,
                        size_t npol, json_object *a, size_t counts[4], struct amis_err *err)
{
	struct lc_scope scope = {c->system_id, NULL, NULL};
	struct lc_inventory inv;
	struct ret_backup *rb = NULL;
	struct ret_decision *d = NULL;
	struct prune_row *rows = NULL;
	size_t i;
	int rc = -1;

	if (inventory(c, region, &scope, &inv, err) < 0 || fill_locks(c, &inv, err) < 0)
		goto out;
	rb = xcalloc(inv.n ? inv.n : 1, sizeof(*rb));
	d = xcalloc(inv.n ? inv.n : 1, sizeof(*d));
	rows = xcalloc(inv.n ? inv.n : 1, sizeof(*rows));
	for (i = 0; i < inv.n; i++) {
		const struct lc_backup *b = &inv.items[i];

		rb[i] = (struct ret_backup){
		    .id = b->request_id,
		    .name = b->name,
		    .kind = b->ami ? RET_AMI : RET_SET,
		    .created = b->created_t,
		    .state = lc_retention_state(b),
		    .locked_until = b->lock.nlocked ? b->lock.expires : 0,
		    .in_use = snapshot_in_use(&inv, b),
		};
		/* A lock with no known end (no date, an odd one) protects all the same. */
		if (b->lock.nlocked && !b->lock.expires)
			rb[i].locked_until = c->now + 100L * 365 * 86400;
	}
	ret_decide(rb, inv.n, pol, npol, c->now, d);
	for (i = 0; i < inv.n; i++) {
		struct prune_row *r = &rows[i];
		json_object *o = json_object_new_object();

		r->b = &inv.items[i];
		r->d = d[i];
		if (r->d.action == RET_DELETE && !c->o.dry_run)
			prune_one(c, region, r);
		jstr(o, "request_id", r->b->request_id);
		jstr(o, "name", r->b->name);
		json_object_object_add(o, "kind",
		                       json_object_new_string(r->b->ami ? "ami" : "set"));
		jstr(o, "region", region);
		jstr(o, "created", r->b->created);
		jstr(o, "state", r->b->state);
		json_object_object_add(o, "action",
		                       json_object_new_string(ret_action_name(r->d.action)));
		jstr(o, "reason", r->d.reason);
		jstr(o, "policy", r->d.policy ? r->d.policy->pattern : NULL);
		json_object_object_add(o, "done", json_object_new_boolean(r->done));
		json_object_object_add(o, "deleted",
		                       r->deleted ? r->deleted : json_object_new_array());
		if (r->error[0]) {
			json_object *e = json_object_new_object();

			jstr(e, "code", r->error_code);
			jstr(e, "message", r->error);
			json_object_object_add(o, "error", e);
			counts[3]++;
		} else {
			json_object_object_add(o, "error", NULL);
		}
		counts[r->d.action]++;
		json_object_array_add(a, o);
		if (!c->o.json) {
			char age[32];

			lc_age_text(r->b->created_t ? (long)(c->now - r->b->created_t) : 0, age,
			            sizeof(age));
			printf("%-6s %-12s %-20s %-3s %-7s %-10s %s%s%s%s\n",
			       r->error[0] ? "FAILED"
			       : c->o.dry_run && r->d.action == RET_DELETE
			           ? "would"
			           : ret_action_name(r->d.action),
			       region, r->b->name, r->b->ami ? "ami" : "set", age, r->b->state,
			       r->b->request_id, r->d.reason[0] ? "  (" : "", r->d.reason,
			       r->d.reason[0] ? ")" : "");
			if (r->error[0])
				printf("       %s\n", r->error);
		}
	}
	rc = 0;
out:
	free(rb);
	free(d);
	free(rows);
	lc_inventory_free(&inv);
	return rc;
}

int lc_prune_main(int argc, char **argv, const char *default_config)
{
	struct lc_ctx c = {.o.cmd = "prune"};
	struct ret_policy pol[MAX_POLICIES];
	char *texts[MAX_POLICIES];
	const char *regions[MAX_REGIONS + 1];
	json_object *a = NULL, *region_errors = NULL;
	struct amis_err err;
	size_t counts[4] = {0, 0, 0, 0}, npol = 0, nreg, i, region_failed = 0;
	char when[32];
	int rc;

	rc = setup(&c, argc, argv, default_config, false, true);
	if (rc)
		goto out;
	/* Prune never works on all clusters at once. */
	if (!c.have_system_id) {
		rc = fail(&c, LC_EXIT_USAGE, "Usage",
		          "prune needs this cluster's system identifier: --system-id or --pgdata");
		goto out;
	}
	rc = load_policies(&c, pol, texts, &npol);
	if (rc)
		goto out;
	regions[0] = lc_aws_region(c.aws);
	nreg = 1 + other_regions(&c, regions + 1, MAX_REGIONS);
	a = json_object_new_array();
	if (!c.o.json)
		printf("%sbackups of system identifier %s, policies:",
		       c.o.dry_run ? "dry run: " : "", c.system_id);
	for (i = 0; i < npol && !c.o.json; i++)
		printf(" %s%s", i ? "; " : "",
		       c.o.npolicies ? c.o.policies[i] : c.cfg.retention_policies[i]);
	if (!c.o.json)
		printf("\n");
	region_errors = json_object_new_array();
	for (i = 0; i < nreg; i++) {
		if (prune_region(&c, regions[i], pol, npol, a, counts, &err) == 0)
			continue;
		/* Nothing was done yet: the error is the answer. */
		if (i == 0) {
			rc = fail_err(&c, LC_EXIT_ERROR, &err);
			goto out;
		}
		/* The home region was pruned: say so, and what another region refused. */
		region_failed += add_error(&c, region_errors, regions[i], &err);
		if (!c.o.json)
			printf("FAILED %-12s %s\n", regions[i], err.msg);
	}
	rc = counts[3] || region_failed ? LC_EXIT_PARTIAL : LC_EXIT_OK;
	if (c.o.json) {
		json_object *o = json_object_new_object(), *p = json_object_new_array();

		json_object_object_add(o, "dry_run", json_object_new_boolean(c.o.dry_run));
		iso_time(c.now, when, sizeof(when));
		jstr(o, "now", when);
		jstr(o, "system_identifier", c.system_id);
		for (i = 0; i < npol; i++)
			json_object_array_add(
			    p, json_object_new_string(c.o.npolicies ? c.o.policies[i]
			                                            : c.cfg.retention_policies[i]));
		json_object_object_add(o, "policies", p);
		json_object_object_add(o, "decisions", a);
		json_object_object_add(o, "region_errors", region_errors);
		a = region_errors = NULL;
		json_object_object_add(o, "kept", json_object_new_int64((int64_t)counts[RET_KEEP]));
		json_object_object_add(
		    o, c.o.dry_run ? "would_delete" : "deleted",
		    json_object_new_int64((int64_t)(counts[RET_DELETE] - counts[3])));
		json_object_object_add(o, "skipped",
		                       json_object_new_int64((int64_t)counts[RET_SKIP]));
		json_object_object_add(o, "failed", json_object_new_int64((int64_t)counts[3]));
		json_object_object_add(o, "exit_code", json_object_new_int(rc));
		print_json(o);
	} else {
		printf("%zu kept, %zu %s, %zu skipped, %zu failed\n", counts[RET_KEEP],
		       counts[RET_DELETE] - counts[3], c.o.dry_run ? "would be deleted" : "deleted",
		       counts[RET_SKIP], counts[3]);
	}
out:
	if (a)
		json_object_put(a);
	if (region_errors)
		json_object_put(region_errors);
	for (i = 0; i < npol; i++)
		free(texts[i]);
	teardown(&c);
	return rc;
}

/* ---- copy. ---- */

/* The tags a copy carries: the source's (not aws:*) plus where it came from. */
static size_t copy_tags(const struct lc_tags *src, const char *source_id, const char *source_region,
                        struct ec2_tag *out, size_t max)
{
	size_t i, n = 0;

	for (i = 0; i < src->n && n + 2 < max; i++) {
		const char *k = src->items[i].key;

		if (!strncmp(k, "aws:", 4) || !strcmp(k, LC_TAG("copy-of")) ||
		    !strcmp(k, LC_TAG("copy-source-region")))
			continue;
		out[n++] = (struct ec2_tag){k, src->items[i].value};
	}
	out[n++] = (struct ec2_tag){LC_TAG("copy-of"), source_id};
	out[n++] = (struct ec2_tag){LC_TAG("copy-source-region"), source_region};
	return n;
}

/* A copy made: {"source_id", "copy_id"} in copies, a line unless --json. */
static void add_copy(const struct lc_ctx *c, json_object *copies, const char *source_id,
                     const char *copy_id)
{
	json_object *x = json_object_new_object();

	jstr(x, "source_id", source_id);
	jstr(x, "copy_id", copy_id);
	json_object_array_add(copies, x);
	if (!c->o.json)
		printf("%s -> %s %s\n", source_id, c->o.to_region, copy_id);
}

/* EC2 allows 50 tags per resource. */
#define EC2_MAX_TAGS 50

/*
 * A copied AMI's snapshots get their sources' own tags (mount point,
 * device, layout): CopyImage's TagSpecification gives each only the
 * image's, and a restore of the copy as a set needs each volume's.  The
 * copy's snapshots are matched to the source's by their position in the
 * images' block device mappings (CopyImage keeps the mapping).  EC2 fills
 * in the copy's mapping once the snapshot copies have started: asked up to
 * MAPPING_TRIES times, MAPPING_PAUSE_S apart.  Returns how many failed.
 */
#define MAPPING_TRIES 30
#define MAPPING_PAUSE_S 2

static size_t tag_copied_snapshots(struct lc_ctx *c, const struct lc_backup *b,
                                   const char *src_region, const char *copy_id, json_object *pairs,
                                   json_object *errors)
{
	const struct lc_image *src = b->image;
	struct lc_image_list l;
	struct amis_err err;
	size_t i, j, failed = 0;
	int tries;

	for (tries = 0;; tries++) {
		memset(&l, 0, sizeof(l));
		err_clear(&err);
		if (ec2_lc_describe_image_ids(c->t, c->o.to_region, &copy_id, 1, &l, &err) < 0) {
			lc_image_list_free(&l);
			return add_error(c, errors, copy_id, &err);
		}
		if (l.n == 1 && l.items[0].nsnapshots == src->nsnapshots) {
			for (i = 0; i < src->nsnapshots && l.items[0].snapshot_ids[i][0]; i++)
				;
			if (i == src->nsnapshots)
				break;
		}
		lc_image_list_free(&l);
		if (tries + 1 == MAPPING_TRIES) {
			err_set(
			    &err, AMIS_E_INVALID_ARGUMENT,
			    "the copy's snapshots are not known yet; run the same copy again later "
			    "to tag them (the copy itself is made once)");
			return add_error(c, errors, copy_id, &err);
		}
		sleep(MAPPING_PAUSE_S);
	}
	for (i = 0; i < src->nsnapshots; i++) {
		const struct lc_snapshot *s = NULL;
		struct ec2_tag tags[EC2_MAX_TAGS];
		size_t ntags;

		for (j = 0; j < b->nsnaps && !s; j++)
			if (!strcmp(b->snaps[j]->snapshot_id, src->snapshot_ids[i]))
				s = b->snaps[j];
		if (!s)
			continue; /* not one of the backup's (not tagged with its request id) */
		ntags = copy_tags(&s->tags, s->snapshot_id, src_region, tags, EC2_MAX_TAGS);
		err_clear(&err);
		if (ec2_lc_create_tags(c->t, c->o.to_region, l.items[0].snapshot_ids[i], tags,
		                       ntags, &err) < 0)
			failed += add_error(c, errors, l.items[0].snapshot_ids[i], &err);
		else
			add_copy(c, pairs, s->snapshot_id, l.items[0].snapshot_ids[i]);
	}
	lc_image_list_free(&l);
	return failed;
}

int lc_copy_main(int argc, char **argv, const char *default_config)
{
	struct lc_ctx c = {.o.cmd = "copy"};
	struct lc_inventory inv;
	struct lc_backup *b;
	struct amis_err err;
	json_object *o = NULL, *copies = NULL, *shared = NULL, *errors = NULL, *snap_copies = NULL;
	const char *src_region;
	char new_id[64];
	size_t i, j, failed = 0;
	int rc;

	memset(&inv, 0, sizeof(inv));
	rc = setup(&c, argc, argv, default_config, true, false);
	if (rc)
		goto out;
	if (!c.o.to_region) {
		rc = fail(&c, LC_EXIT_USAGE, "Usage", "copy needs --to-region");
		goto out;
	}
	if ((rc = find_backup(&c, &inv, &b)))
		goto out;
	src_region = inv.region;
	if (!strcmp(src_region, c.o.to_region)) {
		rc = fail(&c, LC_EXIT_USAGE, "Usage", "the backup is in %s already", src_region);
		goto out;
	}
	if (strcmp(b->state, "completed") != 0) {
		rc = fail(
		    &c, LC_EXIT_ERROR, "IncorrectState",
		    "backup %s is %s%s%s: only a completed backup is copied (ami-snapshot wait "
		    "%s)",
		    b->request_id, b->state, b->reason[0] ? ": " : "", b->reason, b->request_id);
		goto out;
	}
	copies = json_object_new_array();
	shared = json_object_new_array();
	errors = json_object_new_array();
	snap_copies = json_object_new_array();
	if (b->ami) {
		struct ec2_tag tags[EC2_MAX_TAGS];
		char token[65];
		struct lc_copy_image_req r;

		/* One image per source and destination, however often this is run. */
		snprintf(token, sizeof(token), "amis-%s-%s", b->image_id, c.o.to_region);
		r = (struct lc_copy_image_req){
		    .source_region = src_region,
		    .dest_region = c.o.to_region,
		    .image_id = b->image_id,
		    .name = b->image && b->image->name[0] ? b->image->name : b->request_id,
		    .description = "ami-snapshot copy",
		    .encrypted = c.o.kms_key_id != NULL,
		    .kms_key_id = c.o.kms_key_id,
		    .client_token = token,
		    .tags = tags,
		    .ntags =
		        copy_tags(&b->image->tags, b->image_id, src_region, tags, EC2_MAX_TAGS),
		};
		if (ec2_copy_image(c.t, &r, new_id, sizeof(new_id), &err) < 0) {
			rc = fail_err(&c, LC_EXIT_ERROR, &err);
			goto out;
		}
		add_copy(&c, copies, b->image_id, new_id);
		failed += tag_copied_snapshots(&c, b, src_region, new_id, snap_copies, errors);
		for (j = 0; j < c.o.naccounts; j++) {
			if (ec2_share_image(c.t, c.o.to_region, new_id, c.o.accounts[j], false,
			                    &err) < 0) {
				failed += add_error(&c, errors, new_id, &err);
			} else {
				json_object_array_add(shared,
				                      json_object_new_string(c.o.accounts[j]));
			}
		}
	} else {
		for (i = 0; i < b->nsnaps; i++) {
			const struct lc_snapshot *s = b->snaps[i];
			struct ec2_tag tags[EC2_MAX_TAGS];
			struct lc_copy_snapshot_req r = {
			    .source_region = src_region,
			    .dest_region = c.o.to_region,
			    .snapshot_id = s->snapshot_id,
			    .description = s->description[0] ? s->description : NULL,
			    .encrypted = s->encrypted || c.o.kms_key_id,
			    .kms_key_id = c.o.kms_key_id,
			    .tags = tags,
			    .ntags =
			        copy_tags(&s->tags, s->snapshot_id, src_region, tags, EC2_MAX_TAGS),
			};
			if (ec2_copy_snapshot(c.t, &r, new_id, sizeof(new_id), &err) < 0) {
				failed += add_error(&c, errors, s->snapshot_id, &err);
				continue;
			}
			add_copy(&c, copies, s->snapshot_id, new_id);
			for (j = 0; j < c.o.naccounts; j++) {
				if (ec2_share_snapshot(c.t, c.o.to_region, new_id, c.o.accounts[j],
				                       false, &err) < 0) {
					failed += add_error(&c, errors, new_id, &err);
				} else if (i == 0) {
					json_object_array_add(
					    shared, json_object_new_string(c.o.accounts[j]));
				}
			}
		}
	}
	rc = failed ? LC_EXIT_PARTIAL : LC_EXIT_OK;
	if (c.o.json) {
		o = json_object_new_object();
		jstr(o, "request_id", b->request_id);
		json_object_object_add(o, "kind", json_object_new_string(b->ami ? "ami" : "set"));
		jstr(o, "source_region", src_region);
		jstr(o, "region", c.o.to_region);
		json_object_object_add(o, "copies", copies);
		/* An AMI's: each copied snapshot, tagged as its source (empty for a set). */
		json_object_object_add(o, "snapshot_copies", snap_copies);
		json_object_object_add(o, "shared_with", shared);
		json_object_object_add(o, "errors", errors);
		json_object_object_add(o, "exit_code", json_object_new_int(rc));
		copies = shared = errors = snap_copies = NULL;
		print_json(o);
	} else {
		printf("copying to %s; follow it with: ami-snapshot wait %s --region %s\n",
		       c.o.to_region, b->request_id, c.o.to_region);
	}
out:
	if (copies)
		json_object_put(copies);
	if (shared)
		json_object_put(shared);
	if (errors)
		json_object_put(errors);
	if (snap_copies)
		json_object_put(snap_copies);
	lc_inventory_free(&inv);
	teardown(&c);
	return rc;
}

/* ---- lock, unlock, share: one action per snapshot (and the image). ---- */

enum per_kind { PER_LOCK, PER_UNLOCK, PER_SHARE };

static int per_snapshot(int argc, char **argv, const char *default_config, const char *cmd,
                        enum per_kind kind)
{
	struct lc_ctx c = {.o.cmd = cmd};
	struct lc_inventory inv;
	struct lc_backup *b;
	struct amis_err err;
	struct lc_lock_req lr;
	json_object *done = NULL, *errors = NULL, *o;
	size_t i, failed = 0;
	int rc;

	memset(&inv, 0, sizeof(inv));
	memset(&lr, 0, sizeof(lr));
	rc = setup(&c, argc, argv, default_config, true, false);
	if (rc)
		goto out;
	if (kind == PER_LOCK) {
		/* The command line, else [lock]. */
		lr.mode = c.o.mode ? c.o.mode : c.cfg.lock_mode;
		lr.duration_days = c.o.days ? c.o.days : (c.o.until ? 0 : c.cfg.lock_days);
		lr.expiration_date = c.o.until;
		lr.cool_off_hours = c.o.cool_off_hours ? c.o.cool_off_hours
		                                       : (c.o.mode ? 0 : c.cfg.lock_cool_off_hours);
		if (!lr.mode) {
			rc = fail(&c, LC_EXIT_USAGE, "Usage",
			          "lock needs --mode governance|compliance (or [lock] mode)");
			goto out;
		}
		if (c.o.until && lc_parse_time(c.o.until) <= c.now) {
			rc = fail(&c, LC_EXIT_USAGE, "Usage",
			          "--until is a future time in UTC: 2027-01-31T00:00:00Z");
			goto out;
		}
		{
			struct ec2_params p;

			lr.snapshot_id = "snap-00000000";
			ec2_params_init(&p);
			rc = ec2_lock_snapshot_params(&p, &lr, &err);
			ec2_params_free(&p);
			if (rc < 0) {
				rc = fail(&c, LC_EXIT_USAGE, "Usage", "%s", err.msg);
				goto out;
			}
		}
	}
	if (kind == PER_SHARE && c.o.naccounts != 1) {
		rc = fail(&c, LC_EXIT_USAGE, "Usage", "share needs one --account");
		goto out;
	}
	if ((rc = find_backup(&c, &inv, &b)))
		goto out;
	done = json_object_new_array();
	errors = json_object_new_array();
	if (kind == PER_SHARE && b->ami) {
		if (ec2_share_image(c.t, inv.region, b->image_id, c.o.accounts[0], c.o.remove,
		                    &err) < 0)
			goto image_failed;
		json_object_array_add(done, json_object_new_string(b->image_id));
		if (!c.o.json)
			printf("%s %s %s\n", b->image_id,
			       c.o.remove ? "no longer shared with" : "shared with",
			       c.o.accounts[0]);
	}
	if (0) {
	image_failed:
		failed += add_error(&c, errors, b->image_id, &err);
	}
	for (i = 0; i < b->nsnaps; i++) {
		const char *id = b->snaps[i]->snapshot_id;
		struct lc_lock lock;
		int r;

		if (kind == PER_LOCK) {
			lr.snapshot_id = id;
			r = ec2_lock_snapshot(c.t, inv.region, &lr, &lock, &err);
		} else if (kind == PER_UNLOCK) {
			r = ec2_unlock_snapshot(c.t, inv.region, id, &err);
		} else {
			r = ec2_share_snapshot(c.t, inv.region, id, c.o.accounts[0], c.o.remove,
			                       &err);
		}
		if (r < 0) {
			failed += add_error(&c, errors, id, &err);
			continue;
		}
		if (kind == PER_LOCK) {
			o = json_object_new_object();
			jstr(o, "snapshot_id", id);
			jstr(o, "state", lock.lock_state);
			jstr(o, "expires_on", lock.lock_expires_on);
			jstr(o, "cool_off_expires_on", lock.cool_off_expires_on);
			json_object_array_add(done, o);
			if (!c.o.json)
				printf("%s locked (%s) until %s\n", id,
				       lock.lock_state[0] ? lock.lock_state : lr.mode,
				       lock.lock_expires_on[0] ? lock.lock_expires_on : "?");
		} else {
			json_object_array_add(done, json_object_new_string(id));
			if (!c.o.json)
				printf("%s %s\n", id,
				       kind == PER_UNLOCK ? "unlocked"
				       : c.o.remove       ? "no longer shared"
				                          : "shared");
		}
	}
	rc = failed ? LC_EXIT_PARTIAL : LC_EXIT_OK;
	if (c.o.json) {
		o = json_object_new_object();
		jstr(o, "request_id", b->request_id);
		json_object_object_add(o, "kind", json_object_new_string(b->ami ? "ami" : "set"));
		jstr(o, "region", inv.region);
		if (kind == PER_LOCK) {
			jstr(o, "mode", lr.mode);
			json_object_object_add(o, "locks", done);
		} else if (kind == PER_UNLOCK) {
			json_object_object_add(o, "unlocked", done);
		} else {
			jstr(o, "account", c.o.accounts[0]);
			json_object_object_add(o, "removed", json_object_new_boolean(c.o.remove));
			json_object_object_add(o, "resources", done);
		}
		json_object_object_add(o, "errors", errors);
		json_object_object_add(o, "exit_code", json_object_new_int(rc));
		done = errors = NULL;
		print_json(o);
	}
out:
	if (done)
		json_object_put(done);
	if (errors)
		json_object_put(errors);
	lc_inventory_free(&inv);
	teardown(&c);
	return rc;
}

int lc_lock_main(int argc, char **argv, const char *default_config)
{
	return per_snapshot(argc, argv, default_config, "lock", PER_LOCK);
}

int lc_unlock_main(int argc, char **argv, const char *default_config)
{
	return per_snapshot(argc, argv, default_config, "unlock", PER_UNLOCK);
}

int lc_share_main(int argc, char **argv, const char *default_config)
{
	return per_snapshot(argc, argv, default_config, "share", PER_SHARE);
}

/* ---- status: the helper now, the newest calls (status.h). ---- */

/*
 * Where the data directory's server listens, from its postmaster.pid
 * (line 4 the port, line 5 the first socket directory): a conninfo for its
 * postgres database; "" when it is not running.
 */
static void pgdata_conninfo(const char *pgdata, char *buf, size_t sz)
{
	char path[4096], line[4096], port[16] = "", sock[4096] = "";
	FILE *f;
	int n = 0;

	buf[0] = '\0';
	snprintf(path, sizeof(path), "%s/postmaster.pid", pgdata);
	f = fopen(path, "r");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f) && ++n <= 5) {
		line[strcspn(line, "\n")] = '\0';
		if (n == 4)
			snprintf(port, sizeof(port), "%.15s", line);
		else if (n == 5)
			snprintf(sock, sizeof(sock), "%.4095s", line);
	}
	fclose(f);
	if (port[0] && sock[0] && !strpbrk(sock, " '\\"))
		snprintf(buf, sz, "host=%s port=%s dbname=postgres", sock, port);
}

/* psql of the data directory's major version when installed, else psql on PATH. */
static void default_psql(const char *pgdata, char *buf, size_t sz)
{
	char path[4096], ver[16] = "";
	FILE *f;

	snprintf(buf, sz, "psql");
	if (!pgdata)
		return;
	snprintf(path, sizeof(path), "%s/PG_VERSION", pgdata);
	f = fopen(path, "r");
	if (!f)
		return;
	if (fgets(ver, sizeof(ver), f))
		ver[strcspn(ver, "\n")] = '\0';
	fclose(f);
	snprintf(path, sizeof(path), "/usr/lib/postgresql/%s/bin/psql", ver);
	if (ver[0] && access(path, X_OK) == 0)
		snprintf(buf, sz, "%s", path);
}

int lc_status_main(int argc, char **argv, const char *default_config)
{
	struct lc_ctx c = {.o.cmd = "status"};
	struct helper_config cfg;
	struct lc_inventory home;
	struct lc_scope scope;
	struct amis_err err;
	json_object *helper = NULL, *rows = NULL, *o;
	char herr[1024] = "", perr[1024] = "", conninfo[4200], psql[4096];
	const char *pgdata;
	int rc;
	size_t i;

	memset(&home, 0, sizeof(home));
	err_clear(&err);
	if (parse_opts(argc, argv, default_config, &c.o) < 0)
		return LC_EXIT_USAGE;
	if (c.o.id) {
		fprintf(stderr, "ami-snapshot status: unexpected argument \"%s\"\n", c.o.id);
		return LC_EXIT_USAGE;
	}
	config_init(&cfg);
	if (config_load_file(&cfg, c.o.config, &err) != 0) {
		fprintf(stderr, "ami-snapshot status: configuration: %s\n", err.msg);
		config_free(&cfg);
		return LC_EXIT_USAGE;
	}
	/* The helper answers root (or an allowed user): asked before dropping root. */
	helper = st_helper_status(cfg.socket_path, herr, sizeof(herr));
	config_free(&cfg);
	pgdata = c.o.pgdata ? c.o.pgdata : getenv("PGDATA");
	if (pgdata && !pgdata[0])
		pgdata = NULL;
	if (!c.o.no_db) {
		struct st_pg pg = {psql, c.o.pg_user, conninfo};

		if (c.o.psql)
			snprintf(psql, sizeof(psql), "%s", c.o.psql);
		else
			default_psql(pgdata, psql, sizeof(psql));
		if (c.o.db)
			snprintf(conninfo, sizeof(conninfo), "%s", c.o.db);
		else if (pgdata)
			pgdata_conninfo(pgdata, conninfo, sizeof(conninfo));
		else
			snprintf(conninfo, sizeof(conninfo), "dbname=postgres");
		if (!conninfo[0])
			snprintf(perr, sizeof(perr),
			         "the server of %s is not running (no postmaster.pid)", pgdata);
		else
			rows = st_history(&pg, (int)c.o.last, perr, sizeof(perr));
	} else {
		snprintf(perr, sizeof(perr), "not asked (--no-db)");
	}
	rc = helper ? (st_helper_frozen(helper) ? LC_EXIT_FROZEN : LC_EXIT_OK) : LC_EXIT_NO_HELPER;
	if (!rows) {
		/* The database may be gone: the backups EC2's tags describe. */
		int src = setup(&c, argc, argv, default_config, false, false);

		if (src != LC_EXIT_OK) {
			rc = src;
			goto out;
		}
		scope = cluster_scope(&c);
		if (inventory(&c, lc_aws_region(c.aws), &scope, &home, &err) < 0) {
			rc = fail_err(&c, LC_EXIT_ERROR, &err);
			teardown(&c);
			goto out;
		}
		if (home.n > (size_t)c.o.last)
			home.n = (size_t)c.o.last;
	}
	if (c.o.json) {
		o = json_object_new_object();
		json_object_object_add(o, "helper", helper ? json_object_get(helper) : NULL);
		jstr(o, "helper_error", helper ? NULL : herr);
		jstr(o, "history_source", rows ? "postgresql" : "ec2");
		jstr(o, "postgresql_error", rows ? NULL : perr);
		if (rows) {
			json_object_object_add(o, "history", json_object_get(rows));
		} else {
			json_object *a = json_object_new_array();

			for (i = 0; i < home.n; i++)
				json_object_array_add(a, lc_backup_json(&home.items[i], c.now));
			json_object_object_add(o, "backups", a);
		}
		print_json(o);
	} else {
		st_print_helper(stdout, helper, herr);
		if (rows) {
			printf("history (PostgreSQL), newest first:\n");
			st_print_history(stdout, rows);
		} else {
			const struct lc_backup **list = xcalloc(home.n + 1, sizeof(*list));

			printf("history: PostgreSQL not read (%s); the newest backups from EC2's "
			       "tags:\n",
			       perr);
			for (i = 0; i < home.n; i++)
				list[i] = &home.items[i];
			lc_print_table(stdout, list, home.n, c.now);
			free(list);
		}
	}
	if (!rows)
		teardown(&c);
out:
	lc_inventory_free(&home);
	json_object_put(helper);
	json_object_put(rows);
	return rc;
}
