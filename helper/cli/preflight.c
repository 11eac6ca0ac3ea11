/*
 * preflight.c - see preflight.h.
 *
 * The database's paths come from --pgdata (the data directory, its pg_wal
 * and every tablespace link under pg_tblspc, resolved as PostgreSQL
 * follows them) or --paths (the first the data directory, the others as
 * tablespaces); without either, everything but the paths is checked.
 */
#include "preflight.h"
#include "client.h"
#include "config.h"
#include "protocol.h"
#include "util.h"

#include <dirent.h>
#include <getopt.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define CK_MAX_PATHS (2 + AMSP_MAX_VOLUMES)

struct ck_row {
	char name[65];
	char result[9];
	char detail[AMSP_CHECK_TEXT + 1];
	char hint[AMSP_CHECK_TEXT + 1];
};

struct ck_state {
	struct ck_row rows[AMSP_MAX_CHECKS + 4];
	size_t n;
	char version[33];
};

static void add_row(struct ck_state *st, const char *name, const char *result, const char *detail,
                    const char *hint)
{
	struct ck_row *r;

	if (st->n >= sizeof(st->rows) / sizeof(st->rows[0]))
		return;
	r = &st->rows[st->n++];
	snprintf(r->name, sizeof(r->name), "%s", name);
	snprintf(r->result, sizeof(r->result), "%s", result);
	snprintf(r->detail, sizeof(r->detail), "%s", detail);
	snprintf(r->hint, sizeof(r->hint), "%s", hint ? hint : "");
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ami-snapshot check [--pgdata DIR | --paths DATADIR [PATH...]] [--json]\n"
	           "                          [--image register|create] [--socket PATH]\n"
	           "                          [--timeout SECONDS]\n"
	           "  Asks the running helper whether a snapshot would work: its configuration,\n"
	           "  the callers allowed, each database path resolved to an EBS volume, the\n"
	           "  allow-list, state_dir, IMDS, the credentials (their source only), the\n"
	           "  region, and EC2's permissions by DryRun (--image: that AMI method's\n"
	           "  too).  Nothing is frozen or made.\n"
	           "  Exit: 0 all ok, 1 some check failed, 2 usage, 3 the helper could not\n"
	           "  be asked (doc/operations.md, Preflight check).\n");
}

/* A link or directory as PostgreSQL follows it; "" when it does not resolve. */
static void real_path_of(const char *path, char *out, size_t sz)
{
	char buf[PATH_MAX];

	out[0] = '\0';
	if (realpath(path, buf))
		snprintf(out, sz, "%s", buf);
}

/* --pgdata: the data directory, pg_wal, and the tablespaces' locations. */
static int paths_of_pgdata(const char *pgdata, char paths[][PATH_MAX], size_t *n, const char **wal)
{
	char p[PATH_MAX * 2];
	struct dirent *de;
	DIR *d;

	real_path_of(pgdata, paths[0], PATH_MAX);
	if (!paths[0][0]) {
		fprintf(stderr, "ami-snapshot check: --pgdata %s: no such directory\n", pgdata);
		return -1;
	}
	*n = 1;
	snprintf(p, sizeof(p), "%s/pg_wal", paths[0]);
	real_path_of(p, paths[1], PATH_MAX);
	if (paths[1][0]) {
		*wal = paths[1];
		*n = 2;
	}
	snprintf(p, sizeof(p), "%s/pg_tblspc", paths[0]);
	d = opendir(p);
	while (d && (de = readdir(d)) && *n < CK_MAX_PATHS) {
		char link[PATH_MAX * 2 + 300];

		if (de->d_name[0] == '.')
			continue;
		snprintf(link, sizeof(link), "%s/%s", p, de->d_name);
		real_path_of(link, paths[*n], PATH_MAX);
		if (paths[*n][0])
			(*n)++;
	}
	if (d)
		closedir(d);
	return 0;
}

static void json_row(json_object *arr, const struct ck_row *r)
{
	json_object *o = json_object_new_object();

	json_object_object_add(o, "name", json_object_new_string(r->name));
	json_object_object_add(o, "ok",
	                       !strcmp(r->result, "skipped")
	                           ? NULL
	                           : json_object_new_boolean(!strcmp(r->result, "ok")));
	json_object_object_add(o, "result", json_object_new_string(r->result));
	json_object_object_add(o, "detail", json_object_new_string(r->detail));
	json_object_object_add(o, "hint", r->hint[0] ? json_object_new_string(r->hint) : NULL);
	json_object_array_add(arr, o);
}

static int print_rows(const struct ck_state *st, bool json)
{
	size_t i, w = 5, nfailed = 0, nskipped = 0;

	for (i = 0; i < st->n; i++) {
		if (!strcmp(st->rows[i].result, "failed"))
			nfailed++;
		else if (!strcmp(st->rows[i].result, "skipped"))
			nskipped++;
		if (strlen(st->rows[i].name) > w)
			w = strlen(st->rows[i].name);
	}
	if (json) {
		json_object *o = json_object_new_object(), *arr = json_object_new_array();

		json_object_object_add(o, "helper_version",
		                       st->version[0] ? json_object_new_string(st->version) : NULL);
		json_object_object_add(o, "ok", json_object_new_boolean(nfailed == 0));
		for (i = 0; i < st->n; i++)
			json_row(arr, &st->rows[i]);
		json_object_object_add(o, "checks", arr);
		printf("%s\n", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PRETTY |
		                                                     JSON_C_TO_STRING_SPACED));
		json_object_put(o);
	} else {
		printf("%-*s  %-7s  %s\n", (int)w, "CHECK", "RESULT", "DETAIL");
		for (i = 0; i < st->n; i++) {
			const struct ck_row *r = &st->rows[i];

			printf("%-*s  %-7s  %s\n", (int)w, r->name,
			       !strcmp(r->result, "failed") ? "FAILED" : r->result, r->detail);
			if (r->hint[0] && strcmp(r->result, "ok"))
				printf("%-*s  %-7s  hint: %s\n", (int)w, "", "", r->hint);
		}
		printf("%zu checks: %zu ok, %zu failed, %zu skipped\n", st->n,
		       st->n - nfailed - nskipped, nfailed, nskipped);
	}
	return nfailed ? CK_EXIT_FAILED : CK_EXIT_OK;
}

/* The rows of a CHECK_REPLY into st. */
static void take_reply(struct ck_state *st, const struct amsp_msgview *m)
{
	size_t i, n = amsp_count(m, AMSP_T_CHECK_NAME);

	amsp_copy_str(amsp_get(m, AMSP_T_HELPER_VERSION), st->version, sizeof(st->version));
	for (i = 0; i < n; i++) {
		struct ck_row r;

		memset(&r, 0, sizeof(r));
		amsp_copy_str(amsp_get_nth(m, AMSP_T_CHECK_NAME, i), r.name, sizeof(r.name));
		amsp_copy_str(amsp_get_nth(m, AMSP_T_CHECK_RESULT, i), r.result, sizeof(r.result));
		amsp_copy_str(amsp_get_nth(m, AMSP_T_CHECK_DETAIL, i), r.detail, sizeof(r.detail));
		amsp_copy_str(amsp_get_nth(m, AMSP_T_CHECK_HINT, i), r.hint, sizeof(r.hint));
		add_row(st, r.name, r.result, r.detail, r.hint);
	}
}

/* The conversation: STATUS (reachable, allowed), then CHECK. */
static int ask(struct ck_state *st, const char *socket_path, char paths[][PATH_MAX], size_t npaths,
               const char *wal, const char *image, int timeout_ms)
{
	static unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
	static struct amsp_msgview m;
	struct amsp_writer w;
	struct amis_err err;
	const char *why = "";
	char id[64], detail[512];
	size_t i;
	int fd;

	err_clear(&err);
	fd = amsp_client_connect(socket_path, &err);
	if (fd < 0) {
		add_row(
		    st, "helper reachable", "failed", err.msg,
		    "start the helper (systemctl start ami-snapshot-helper), or give its socket "
		    "with --socket");
		return CK_EXIT_NO_HELPER;
	}
	amsp_begin(&w, buf, sizeof(buf), AMSP_STATUS);
	if (amsp_client_send(fd, buf, amsp_end(&w)) != 0 ||
	    amsp_client_recv(fd, buf, sizeof(buf), 10000, &m, &why) != 0 ||
	    m.type != AMSP_STATUS_REPLY) {
		close(fd);
		add_row(
		    st, "helper reachable", "failed",
		    "the helper closed the connection without answering STATUS",
		    "this user may not ask it: see [helper] allowed_users and the helper's log");
		return CK_EXIT_NO_HELPER;
	}
	snprintf(detail, sizeof(detail), "%s answers", socket_path);
	add_row(st, "helper reachable", "ok", detail, NULL);
	snprintf(id, sizeof(id), "check-%ld-%ld", (long)getpid(), (long)time(NULL));
	amsp_begin(&w, buf, sizeof(buf), AMSP_CHECK);
	amsp_put_str(&w, AMSP_T_REQUEST_ID, id);
	if (npaths > 0)
		amsp_put_str(&w, AMSP_T_PATH_DATA, paths[0]);
	for (i = 1; i < npaths; i++) {
		if (paths[i] == wal)
			amsp_put_str(&w, AMSP_T_PATH_WAL, paths[i]);
		else
			amsp_put_str(&w, AMSP_T_PATH_TABLESPACE, paths[i]);
	}
	if (image)
		amsp_put_str(&w, AMSP_T_IMAGE_METHOD, image);
	if (amsp_client_send(fd, buf, amsp_end(&w)) != 0 ||
	    amsp_client_recv(fd, buf, sizeof(buf), timeout_ms, &m, &why) != 0) {
		close(fd);
		if (!strcmp(why, "closed")) {
			add_row(
			    st, "helper version", "failed",
			    "HelperTooOld: the helper closed the connection when asked for a check "
			    "(a helper without the check refuses CHECK as malformed)",
			    "upgrade and restart ami-snapshot-helper");
		} else {
			snprintf(detail, sizeof(detail), "no answer to the check: %s", why);
			add_row(st, "helper version", "failed", detail, "see the helper's log");
		}
		return CK_EXIT_NO_HELPER;
	}
	close(fd);
	if (m.type == AMSP_ERROR) {
		char code[65] = "", msg[2049] = "";

		amsp_copy_str(amsp_get(&m, AMSP_T_ERROR_CODE), code, sizeof(code));
		amsp_copy_str(amsp_get(&m, AMSP_T_ERROR_MESSAGE), msg, sizeof(msg));
		snprintf(detail, sizeof(detail), "%s: %.400s", code, msg);
		add_row(st, "helper", "failed", detail,
		        !strcmp(code, "Busy") ? "try again when the snapshot (or check) has ended"
		                              : "see the helper's log");
		return CK_EXIT_NO_HELPER;
	}
	if (m.type != AMSP_CHECK_REPLY) {
		add_row(st, "helper", "failed", "an unexpected answer to CHECK",
		        "see the helper's log");
		return CK_EXIT_NO_HELPER;
	}
	take_reply(st, &m);
	return CK_EXIT_OK;
}

int ck_check_main(int argc, char **argv, const char *default_config)
{
	static const struct option lo[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"pgdata", required_argument, NULL, 'D'},
	    {"paths", no_argument, NULL, 'P'},
	    {"socket", required_argument, NULL, 's'},
	    {"json", no_argument, NULL, 'j'},
	    {"timeout", required_argument, NULL, 't'},
	    {"help", no_argument, NULL, 'h'},
	    {"image", required_argument, NULL, 'i'},
	    {NULL, 0, NULL, 0},
	};
	static char paths[CK_MAX_PATHS][PATH_MAX];
	static struct ck_state st;
	const char *config = default_config, *pgdata = NULL, *socket_path = NULL, *wal = NULL;
	const char *image = NULL;
	struct helper_config cfg;
	struct amis_err err;
	bool json = false, given_paths = false;
	long timeout_s = 600;
	size_t npaths = 0;
	int opt, rc;

	while ((opt = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config = optarg;
			break;
		case 'D':
			pgdata = optarg;
			break;
		case 'P':
			given_paths = true;
			break;
		case 's':
			socket_path = optarg;
			break;
		case 'j':
			json = true;
			break;
		case 'i':
			image = optarg;
			if (strcmp(image, "register") && strcmp(image, "create")) {
				fprintf(stderr,
				        "ami-snapshot check: --image: register or create\n");
				return CK_EXIT_USAGE;
			}
			break;
		case 't':
			timeout_s = strtol(optarg, NULL, 10);
			if (timeout_s < 1 || timeout_s > 86400) {
				fprintf(stderr,
				        "ami-snapshot check: --timeout: 1 to 86400 seconds\n");
				return CK_EXIT_USAGE;
			}
			break;
		case 'h':
			usage(stdout);
			return CK_EXIT_OK;
		default:
			usage(stderr);
			return CK_EXIT_USAGE;
		}
	}
	if ((pgdata && given_paths) || (given_paths && optind >= argc) ||
	    (!given_paths && optind < argc) || argc - optind > CK_MAX_PATHS) {
		usage(stderr);
		return CK_EXIT_USAGE;
	}
	for (; optind < argc; optind++) {
		if (argv[optind][0] != '/') {
			fprintf(stderr, "ami-snapshot check: %s: paths are absolute\n",
			        argv[optind]);
			return CK_EXIT_USAGE;
		}
		snprintf(paths[npaths++], PATH_MAX, "%s", argv[optind]);
	}
	if (pgdata && paths_of_pgdata(pgdata, paths, &npaths, &wal) != 0)
		return CK_EXIT_USAGE;
	config_init(&cfg);
	err_clear(&err);
	if (!socket_path) {
		if (config_load_file(&cfg, config, &err) != 0) {
			add_row(&st, "configuration", "failed", err.msg,
			        "fix the file, or give the helper's socket with --socket");
			print_rows(&st, json);
			config_free(&cfg);
			return CK_EXIT_NO_HELPER;
		}
		socket_path = cfg.socket_path;
	}
	rc = ask(&st, socket_path, paths, npaths, wal, image, (int)(timeout_s * 1000));
	config_free(&cfg);
	if (rc != CK_EXIT_OK) {
		print_rows(&st, json);
		return rc;
	}
	return print_rows(&st, json);
}
