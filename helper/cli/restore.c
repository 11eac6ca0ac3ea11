/*
 * restore.c - `ami-snapshot restore` (see restore.h and doc/restore.md).
 *
 * The steps: find the set (by request id, name or image) and check it;
 * create a volume from each of its snapshots in this instance's zone, attach
 * it, wait for its device and mount it where the tags say (under --root
 * when given); then prepare the data directory for crash recovery (default)
 * or point-in-time recovery, and put back the configuration captured at
 * backup time.  What this run created is listed on any failure and, unless
 * --no-cleanup-on-failure, unmounted, detached and deleted.
 */
#include "restore.h"

#include "config.h"
#include "log.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void usage(FILE *f)
{
	fprintf(f,
	        "usage: ami-snapshot restore [-c CONFIG] (--request-id ID | --name NAME | --image "
	        "AMI)\n"
	        "           [--root DIR | --attached] [--pitr --restore-command CMD\n"
	        "           [--target-time T | --target-lsn LSN | --target-name NAME |\n"
	        "            --target-immediate] [--target-action pause|promote|shutdown]]\n"
	        "           [--force] [--wait [--wait-timeout SEC]] [--list]\n"
	        "           [--volume-type TYPE] [--iops N] [--throughput MIBS] [--size GIB]\n"
	        "           [--device-dir DIR] [--device-timeout SEC] [--allow-nonempty]\n"
	        "           [--config-root DIR | --no-config] [--pg-bindir DIR]\n"
	        "           [--no-cleanup-on-failure]\n"
	        "           [--as-standby [--primary-conninfo CONNINFO]]\n"
	        "Restores a snapshot set (or an AMI's) onto new volumes of this instance and\n"
	        "prepares its data directory for crash recovery, or point-in-time recovery with\n"
	        "--pitr, or to start as a standby with --as-standby.  doc/restore.md describes\n"
	        "each step, option and exit code.\n");
}

static long parse_long(const char *s, const char *what, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || !*s || v < min || v > max) {
		fprintf(stderr, "ami-snapshot restore: %s must be a number from %ld to %ld\n", what,
		        min, max);
		exit(RS_EXIT_USAGE);
	}
	return v;
}

static int parse_opts(int argc, char **argv, const char *default_config, struct rs_opts *o)
{
	enum {
		O_REQ = 256,
		O_NAME,
		O_IMAGE,
		O_LATEST,
		O_ROOT,
		O_ATTACHED,
		O_PITR,
		O_RESTORE_CMD,
		O_TTIME,
		O_TLSN,
		O_TNAME,
		O_TIMM,
		O_TACTION,
		O_FORCE,
		O_WAIT,
		O_WAIT_TIMEOUT,
		O_LIST,
		O_VTYPE,
		O_IOPS,
		O_TPUT,
		O_SIZE,
		O_DEVDIR,
		O_DEVTIMEOUT,
		O_NONEMPTY,
		O_CONFROOT,
		O_NOCONF,
		O_BINDIR,
		O_NOCLEAN,
		O_MOUNTINFO,
		O_STANDBY,
		O_PRIMARY
	};
	static const struct option lo[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"request-id", required_argument, NULL, O_REQ},
	    {"name", required_argument, NULL, O_NAME},
	    {"image", required_argument, NULL, O_IMAGE},
	    {"latest", no_argument, NULL, O_LATEST},
	    {"root", required_argument, NULL, O_ROOT},
	    {"attached", no_argument, NULL, O_ATTACHED},
	    {"pitr", no_argument, NULL, O_PITR},
	    {"restore-command", required_argument, NULL, O_RESTORE_CMD},
	    {"target-time", required_argument, NULL, O_TTIME},
	    {"target-lsn", required_argument, NULL, O_TLSN},
	    {"target-name", required_argument, NULL, O_TNAME},
	    {"target-immediate", no_argument, NULL, O_TIMM},
	    {"target-action", required_argument, NULL, O_TACTION},
	    {"force", no_argument, NULL, O_FORCE},
	    {"wait", no_argument, NULL, O_WAIT},
	    {"wait-timeout", required_argument, NULL, O_WAIT_TIMEOUT},
	    {"list", no_argument, NULL, O_LIST},
	    {"volume-type", required_argument, NULL, O_VTYPE},
	    {"iops", required_argument, NULL, O_IOPS},
	    {"throughput", required_argument, NULL, O_TPUT},
	    {"size", required_argument, NULL, O_SIZE},
	    {"device-dir", required_argument, NULL, O_DEVDIR},
	    {"device-timeout", required_argument, NULL, O_DEVTIMEOUT},
	    {"allow-nonempty", no_argument, NULL, O_NONEMPTY},
	    {"config-root", required_argument, NULL, O_CONFROOT},
	    {"no-config", no_argument, NULL, O_NOCONF},
	    {"pg-bindir", required_argument, NULL, O_BINDIR},
	    {"no-cleanup-on-failure", no_argument, NULL, O_NOCLEAN},
	    {"as-standby", no_argument, NULL, O_STANDBY},
	    {"primary-conninfo", required_argument, NULL, O_PRIMARY},
	    {"mountinfo", required_argument, NULL, O_MOUNTINFO}, /* tests */
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0}};
	int opt, targets = 0, sel;

	memset(o, 0, sizeof(*o));
	o->config = default_config;
	o->cleanup = true;
	o->wait_timeout_s = 3600;
	o->device_timeout_s = 120;
	o->device_dir = rs_dev_paths_default.by_id_dir;
	o->mountinfo = "/proc/self/mountinfo";
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'c':
			o->config = optarg;
			break;
		case O_REQ:
			o->request_id = optarg;
			break;
		case O_NAME:
			o->name = optarg;
			break;
		case O_IMAGE:
			o->image = optarg;
			break;
		case O_LATEST:
			break; /* what --name does */
		case O_ROOT:
			o->root = optarg;
			break;
		case O_ATTACHED:
			o->attached = true;
			break;
		case O_PITR:
			o->pitr = true;
			break;
		case O_STANDBY:
			o->as_standby = true;
			break;
		case O_PRIMARY:
			o->primary_conninfo = optarg;
			break;
		case O_RESTORE_CMD:
			o->rec.restore_command = optarg;
			break;
		case O_TTIME:
			o->rec.target_time = optarg;
			targets++;
			break;
		case O_TLSN:
			o->rec.target_lsn = optarg;
			targets++;
			break;
		case O_TNAME:
			o->rec.target_name = optarg;
			targets++;
			break;
		case O_TIMM:
			o->rec.target_immediate = true;
			targets++;
			break;
		case O_TACTION:
			o->rec.target_action = optarg;
			break;
		case O_FORCE:
			o->force = true;
			break;
		case O_WAIT:
			o->wait = true;
			break;
		case O_WAIT_TIMEOUT:
			o->wait_timeout_s = parse_long(optarg, "--wait-timeout", 1, 86400);
			break;
		case O_LIST:
			o->list = true;
			break;
		case O_VTYPE:
			o->volume_type = optarg;
			break;
		case O_IOPS:
			o->iops = parse_long(optarg, "--iops", 100, 256000);
			break;
		case O_TPUT:
			o->throughput = parse_long(optarg, "--throughput", 125, 4000);
			break;
		case O_SIZE:
			o->size_gib = parse_long(optarg, "--size", 1, 65536);
			break;
		case O_DEVDIR:
			o->device_dir = optarg;
			break;
		case O_DEVTIMEOUT:
			o->device_timeout_s = parse_long(optarg, "--device-timeout", 1, 3600);
			break;
		case O_NONEMPTY:
			o->allow_nonempty = true;
			break;
		case O_CONFROOT:
			o->config_root = optarg;
			break;
		case O_NOCONF:
			o->no_config = true;
			break;
		case O_BINDIR:
			o->pg_bindir = optarg;
			break;
		case O_NOCLEAN:
			o->cleanup = false;
			break;
		case O_MOUNTINFO:
			o->mountinfo = optarg;
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	sel = !!o->request_id + !!o->name + !!o->image;
	if (optind != argc || sel != 1) {
		fprintf(stderr, "ami-snapshot restore: give exactly one of --request-id, --name, "
		                "--image\n");
		return -1;
	}
	if (o->root && (o->root[0] != '/' || strcmp(o->root, "/") == 0)) {
		fprintf(stderr, "ami-snapshot restore: --root must be an absolute directory other "
		                "than /\n");
		return -1;
	}
	if (o->primary_conninfo && !o->as_standby) {
		fprintf(stderr,
		        "ami-snapshot restore: --primary-conninfo goes with --as-standby\n");
		return -1;
	}
	if (o->as_standby && o->pitr) {
		fprintf(stderr, "ami-snapshot restore: --as-standby and --pitr exclude each other "
		                "(a standby follows its primary, not a recovery target)\n");
		return -1;
	}
	if (o->primary_conninfo && strpbrk(o->primary_conninfo, "\n\r")) {
		fprintf(stderr, "ami-snapshot restore: --primary-conninfo must be one line\n");
		return -1;
	}
	if (o->pitr && !o->rec.restore_command) {
		fprintf(stderr,
		        "ami-snapshot restore: --pitr needs --restore-command (how to fetch "
		        "WAL from the archive, e.g. 'cp /archive/%%f %%p')\n");
		return -1;
	}
	if (!o->pitr && (targets || o->rec.restore_command || o->rec.target_action)) {
		fprintf(stderr, "ami-snapshot restore: recovery targets and --restore-command go "
		                "with --pitr\n");
		return -1;
	}
	if (targets > 1) {
		fprintf(stderr, "ami-snapshot restore: give at most one recovery target\n");
		return -1;
	}
	if (o->rec.target_action && strcmp(o->rec.target_action, "pause") &&
	    strcmp(o->rec.target_action, "promote") && strcmp(o->rec.target_action, "shutdown")) {
		fprintf(stderr, "ami-snapshot restore: --target-action is pause, promote or "
		                "shutdown\n");
		return -1;
	}
	if (o->config_root && o->no_config) {
		fprintf(stderr, "ami-snapshot restore: --config-root and --no-config together?\n");
		return -1;
	}
	return 0;
}

/* ---- PostgreSQL here. ---- */

/* Runs argv (argv[0] looked up in PATH), its output into out; the exit status, or -1. */
static int run_capture(char *const argv[], char *out, size_t outsz)
{
	int pfd[2], status;
	size_t got = 0;
	ssize_t r;
	pid_t pid;

	out[0] = '\0';
	if (pipe(pfd) < 0)
		return -1;
	pid = fork();
	if (pid < 0) {
		close(pfd[0]);
		close(pfd[1]);
		return -1;
	}
	if (pid == 0) {
		dup2(pfd[1], 1);
		close(pfd[0]);
		close(pfd[1]);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(pfd[1]);
	while (got + 1 < outsz && (r = read(pfd[0], out + got, outsz - 1 - got)) > 0)
		got += (size_t)r;
	out[got] = '\0';
	close(pfd[0]);
	if (waitpid(pid, &status, 0) < 0)
		return -1;
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* The major of DIR/postgres, or 0. */
static int bindir_major(const char *dir)
{
	char exe[PATH_MAX], out[256];
	char *argv[] = {exe, (char *)"--version", NULL};

	snprintf(exe, sizeof(exe), "%s/postgres", dir);
	if (access(exe, X_OK) < 0 || run_capture(argv, out, sizeof(out)) != 0)
		return 0;
	return rs_pg_major_of_version_output(out);
}

/*
 * The PostgreSQL to start the restore with: --pg-bindir, else Debian's
 * /usr/lib/postgresql/<tagged major>/bin, else pg_config's.  Its major, 0 if none.
 */
int rs_local_pg(struct rs_run *r, int tagged_major)
{
	char out[PATH_MAX];
	char *argv[] = {(char *)"pg_config", (char *)"--bindir", NULL};
	int m;

	if (r->o.pg_bindir) {
		snprintf(r->pg_bindir, sizeof(r->pg_bindir), "%s", r->o.pg_bindir);
		return bindir_major(r->pg_bindir);
	}
	snprintf(r->pg_bindir, sizeof(r->pg_bindir), "/usr/lib/postgresql/%d/bin", tagged_major);
	m = bindir_major(r->pg_bindir);
	if (m)
		return m;
	if (run_capture(argv, out, sizeof(out)) == 0) {
		out[strcspn(out, "\n")] = '\0';
		snprintf(r->pg_bindir, sizeof(r->pg_bindir), "%s", out);
		return bindir_major(r->pg_bindir);
	}
	return 0;
}

/* ---- Finding the set. ---- */

int rs_find_set(struct rs_run *r, struct rs_snapshot_list *list, struct amis_err *err)
{
	if (r->o.request_id)
		return rs_describe_snapshots_by_tag(r->aws, RS_TAG_PREFIX "request-id",
		                                    r->o.request_id, list, err);
	if (r->o.name)
		return rs_describe_snapshots_by_tag(r->aws, RS_TAG_PREFIX "name", r->o.name, list,
		                                    err);
	{
		struct rs_image img;
		const char *ids[RS_MAX_IMAGE_SNAPSHOTS];
		size_t i;

		if (rs_describe_image(r->aws, r->o.image, &img, err) < 0)
			return -1;
		if (img.n == 0)
			return err_set(err, AMIS_E_INVALID_ARGUMENT,
			               "image %s has no EBS snapshots", r->o.image);
		for (i = 0; i < img.n; i++)
			ids[i] = img.snapshot_ids[i];
		return rs_describe_snapshots_by_id(r->aws, ids, img.n, list, err);
	}
}

static void print_sets(const struct rs_sets *sets)
{
	size_t i, j;

	for (i = 0; i < sets->n; i++) {
		const struct rs_set *s = &sets->items[i];

		printf("%s  %s  %-8s  %zu snapshot(s)  \"%s\"\n", s->start_time, s->request_id,
		       s->backup_state[0] ? s->backup_state : "-", s->n, s->name);
		for (j = 0; j < s->n; j++) {
			const char *mp = rs_atag(s->snaps[j], "mount-point");

			printf("    %s  %-9s  %s\n", s->snaps[j]->snapshot_id, s->snaps[j]->state,
			       mp ? mp : "(not restored: no mount point)");
		}
	}
}

int rs_wait_completed(struct rs_run *r, const struct rs_set *set, struct amis_err *err)
{
	time_t deadline = time(NULL) + r->o.wait_timeout_s;
	char which[96];

	while (!rs_set_completed(set, which, sizeof(which))) {
		struct rs_snapshot_list fresh;
		const char *ids[RS_MAX_VOLUMES * 2];
		size_t i, j, n = 0;

		if (!r->o.wait) {
			err_set(err, AMIS_E_INVALID_ARGUMENT,
			        "snapshot %s is not completed yet: a volume made from it now would "
			        "be slow to read until it is (--wait waits for it)",
			        which);
			return RS_EXIT_NOT_COMPLETED;
		}
		if (time(NULL) > deadline || (r->o.should_stop && r->o.should_stop())) {
			err_set(err, AMIS_E_TIMEOUT,
			        "snapshot %s is still not completed after %ld s", which,
			        r->o.wait_timeout_s);
			return RS_EXIT_NOT_COMPLETED;
		}
		printf("waiting for snapshot %s to complete\n", which);
		fflush(stdout);
		sleep(5);
		for (i = 0; i < set->n && n < RS_MAX_VOLUMES * 2; i++)
			ids[n++] = set->snaps[i]->snapshot_id;
		rs_list_init(&fresh);
		if (rs_describe_snapshots_by_id(r->aws, ids, n, &fresh, err) < 0) {
			rs_list_free(&fresh);
			return RS_EXIT_ERROR;
		}
		for (i = 0; i < fresh.n; i++) {
			for (j = 0; j < set->n; j++) {
				if (strcmp(fresh.items[i].snapshot_id,
				           set->snaps[j]->snapshot_id) == 0)
					memcpy(set->snaps[j]->state, fresh.items[i].state,
					       sizeof(set->snaps[j]->state));
			}
		}
		rs_list_free(&fresh);
	}
	return RS_EXIT_OK;
}

/* ---- Volumes. ---- */

static int by_mount_point(const void *a, const void *b)
{
	const struct rs_vol *x = a, *y = b;

	return strcmp(x->mount_point, y->mount_point);
}

int rs_plan(struct rs_run *r, const struct rs_set *set, struct amis_err *err)
{
	size_t i;

	r->n = 0;
	for (i = 0; i < set->n; i++) {
		struct rs_snapshot *s = set->snaps[i];
		const char *mp = rs_atag(s, "mount-point");
		const char *part = rs_atag(s, "partition");
		const char *fsv = rs_atag(s, "fs-volumes");
		struct rs_vol *v;

		if (!mp)
			continue;
		if (r->n == RS_MAX_VOLUMES)
			return err_set(err, AMIS_E_TOO_MANY_VOLUMES, "more than %d volumes",
			               RS_MAX_VOLUMES);
		v = &r->v[r->n++];
		memset(v, 0, sizeof(*v));
		v->snap = s;
		v->mount_point = mp;
		v->fstype = rs_atag(s, "fstype");
		v->partition = part ? atoi(part) : 0;
		v->fs_volumes = fsv ? atoi(fsv) : 1;
		snprintf(v->target, sizeof(v->target), "%s%s", r->o.root ? r->o.root : "",
		         strcmp(mp, "/") == 0 && r->o.root ? "" : mp);
	}
	qsort(r->v, r->n, sizeof(r->v[0]), by_mount_point);
	return 0;
}

static bool needs_assembly(const struct rs_run *r)
{
	size_t i;

	for (i = 0; i < r->n; i++) {
		if (r->v[i].fs_volumes > 1)
			return true;
	}
	return false;
}

/* A target must not be a mount already, nor a directory with anything in it. */
int rs_check_target(struct rs_run *r, const struct rs_vol *v, struct amis_err *err)
{
	if (rs_is_mount_point(r->o.mountinfo, v->target)) {
		err_set(err, AMIS_E_INVALID_PATH,
		        "%s is a mount point already: unmount it, or restore under --root DIR",
		        v->target);
		return RS_EXIT_MOUNT_BUSY;
	}
	if (!r->o.allow_nonempty && rs_dir_nonempty(v->target)) {
		err_set(err, AMIS_E_INVALID_PATH,
		        "%s is not empty: the restored filesystem would hide what is there "
		        "(--allow-nonempty mounts over it anyway, or restore under --root DIR)",
		        v->target);
		return RS_EXIT_MOUNT_BUSY;
	}
	return RS_EXIT_OK;
}

static const char *const *volume_ids(const struct rs_run *r, const char **ids, bool only_created)
{
	size_t i, n = 0;

	for (i = 0; i < r->n; i++) {
		if (!only_created || r->v[i].created)
			ids[n++] = r->v[i].volume_id;
	}
	return ids;
}

/* Waits until every created volume is in state want (or attached, for "in-use"). */
static int wait_volumes(struct rs_run *r, const char *want, long timeout_s, struct amis_err *err)
{
	struct rs_volume_state st[RS_MAX_VOLUMES];
	const char *ids[RS_MAX_VOLUMES];
	time_t deadline = time(NULL) + timeout_s;
	useconds_t pause = 200000;
	size_t i;

	volume_ids(r, ids, false);
	for (;;) {
		const struct rs_volume_state *late = NULL;

		if (rs_describe_volumes(r->aws, ids, r->n, st, err) < 0) {
			/* EC2 is eventually consistent: a volume just made may not be known yet. */
			if (strcmp(err->code, "InvalidVolume.NotFound") != 0 ||
			    time(NULL) > deadline)
				return -1;
			usleep(pause);
			continue;
		}
		for (i = 0; i < r->n; i++) {
			if (strcmp(st[i].status, "error") == 0)
				return err_set(err, AMIS_E_INVALID_ARGUMENT,
				               "volume %s is in state error", st[i].volume_id);
			if (!late && (strcmp(st[i].status, want) != 0 ||
			              (strcmp(want, "in-use") == 0 &&
			               strcmp(st[i].attach_state, "attached") != 0)))
				late = &st[i];
		}
		if (!late)
			return 0;
		if (r->o.should_stop && r->o.should_stop())
			return err_set(err, AMIS_E_TIMEOUT, "stopped while waiting for %s",
			               late->volume_id);
		if (time(NULL) > deadline)
			return err_set(err, AMIS_E_TIMEOUT,
			               "the volumes are not %s after %ld s (%s is %s%s%s)", want,
			               timeout_s, late->volume_id, late->status,
			               late->attach_state[0] ? "/" : "", late->attach_state);
		usleep(pause);
		if (pause < 2000000)
			pause *= 2;
	}
}

int rs_create_volumes(struct rs_run *r, const struct rs_set *set, struct amis_err *err)
{
	size_t i;

	for (i = 0; i < r->n; i++) {
		struct rs_vol *v = &r->v[i];
		char token[128];
		struct rs_create_volume_req req = {
		    .snapshot_id = v->snap->snapshot_id,
		    .availability_zone = rs_aws_zone(r->aws),
		    .volume_type = r->o.volume_type,
		    .iops = r->o.iops,
		    .throughput = r->o.throughput,
		    .request_id = set->request_id,
		    .name = set->name[0] ? set->name : NULL,
		    .client_token = token,
		    .drill_id = r->o.drill_id,
		    .drill_instance = r->o.drill_id ? rs_aws_instance_id(r->aws) : NULL,
		};

		if (r->o.size_gib > 0 && r->o.size_gib > v->snap->size_gib)
			req.size_gib = r->o.size_gib;
		/* One token per snapshot and run: a retried call makes no second volume. */
		snprintf(token, sizeof(token), "amis-%s-%ld-%d", v->snap->snapshot_id,
		         (long)time(NULL), (int)getpid());
		if (rs_create_volume(r->aws, &req, v->volume_id, sizeof(v->volume_id), err) < 0)
			return err_prefix(err, "creating a volume from %s", v->snap->snapshot_id);
		v->created = true;
		printf("created volume %s from snapshot %s (%s) in %s\n", v->volume_id,
		       v->snap->snapshot_id, v->mount_point, rs_aws_zone(r->aws));
		fflush(stdout);
	}
	return wait_volumes(r, "available", 600, err);
}

int rs_attach_volumes(struct rs_run *r, struct amis_err *err)
{
	struct strbuf used;
	size_t i;
	int rc = -1;

	sb_init(&used);
	if (rs_instance_devices(r->aws, &used, err) < 0)
		goto out;
	for (i = 0; i < r->n; i++) {
		struct rs_vol *v = &r->v[i];
		const char *tagged = rs_atag(v->snap, "device");
		char one[64];

		/* The tagged device name if it is free here, else the next free one. */
		if (tagged && strlen(tagged) == 8 && strncmp(tagged, "/dev/sd", 7) == 0 &&
		    tagged[7] >= 'f' && tagged[7] <= 'p' &&
		    !rs_device_name_used(sb_str(&used), tagged))
			snprintf(one, sizeof(one), "%s", tagged);
		else if (rs_free_device_name(sb_str(&used), one, sizeof(one)) < 0) {
			err_set(err, AMIS_E_TOO_MANY_VOLUMES,
			        "no free device name left in /dev/sdf../dev/sdp");
			goto out;
		}
		snprintf(v->device_name, sizeof(v->device_name), "%s", one);
		sb_appendf(&used, "%s\n", one);
		if (rs_attach_volume(r->aws, v->volume_id, v->device_name, err) < 0) {
			err_prefix(err, "attaching %s", v->volume_id);
			goto out;
		}
		v->attached = true;
		printf("attached volume %s as %s\n", v->volume_id, v->device_name);
		fflush(stdout);
	}
	rc = wait_volumes(r, "in-use", 300, err);
out:
	sb_free(&used);
	return rc;
}

int rs_wait_devices(struct rs_run *r, struct amis_err *err)
{
	struct rs_dev_paths p = rs_dev_paths_default;
	time_t deadline = time(NULL) + r->o.device_timeout_s;
	size_t i;

	p.by_id_dir = r->o.device_dir;
	for (i = 0; i < r->n; i++) {
		struct rs_vol *v = &r->v[i];

		while (rs_find_device(&p, v->volume_id, v->device_name,
		                      v->fs_volumes > 1 ? 0 : v->partition, v->device,
		                      sizeof(v->device)) < 0) {
			if (time(NULL) > deadline || (r->o.should_stop && r->o.should_stop())) {
				err_set(
				    err, AMIS_E_TIMEOUT,
				    "volume %s (attached as %s) did not appear as a block device "
				    "within %ld s (looked for %s/nvme-Amazon_Elastic_Block_Store_"
				    "vol..., NVMe serials in /sys/block, and the Xen name)",
				    v->volume_id, v->device_name, r->o.device_timeout_s,
				    p.by_id_dir);
				return RS_EXIT_DEVICE_TIMEOUT;
			}
			usleep(100000);
		}
		printf("volume %s is %s\n", v->volume_id, v->device);
	}
	return RS_EXIT_OK;
}

int rs_mount_volumes(struct rs_run *r, struct amis_err *err)
{
	size_t i;
	int rc;

	for (i = 0; i < r->n; i++) {
		struct rs_vol *v = &r->v[i];
		const char *data = NULL;

		rc = rs_check_target(r, v, err);
		if (rc)
			return rc;
		if (rs_mkdirs(v->target, err) < 0)
			return RS_EXIT_ERROR;
		/* The clone has the UUID of the original, which may be mounted here. */
		if (strcmp(v->fstype, "xfs") == 0)
			data = "nouuid";
		if (mount(v->device, v->target, v->fstype, 0, data) < 0) {
			err_set(err, AMIS_E_INVALID_PATH, "mount -t %s %s%s %s: %s", v->fstype,
			        data ? "-o nouuid " : "", v->device, v->target, strerror(errno));
			return RS_EXIT_ERROR;
		}
		v->mounted = true;
		printf("mounted %s (%s) at %s\n", v->device, v->fstype, v->target);
		fflush(stdout);
	}
	return RS_EXIT_OK;
}

/*
 * Polls one volume: until its status is want (until_equal), or until its
 * attachment state is no longer want; at most timeout_s.
 */
static int wait_volume(struct rs_run *r, const char *id, const char *want, bool until_equal,
                       long timeout_s)
{
	time_t deadline = time(NULL) + timeout_s;
	struct rs_volume_state st;
	struct amis_err err;

	while (time(NULL) <= deadline) {
		if (rs_describe_volumes(r->aws, &id, 1, &st, &err) < 0)
			return -1;
		if (until_equal ? strcmp(st.status, want) == 0 : strcmp(st.attach_state, want) != 0)
			return 0;
		usleep(250000);
	}
	return -1;
}

/*
 * Undoes what this run made, deepest mount first: unmounts, detaches (once
 * an attachment in progress settles), waits for each volume to be
 * available and deletes it.  Each step is a line on out.  Returns how many
 * things could not be undone (0: nothing of this run is left).
 */
int rs_release(struct rs_run *r, FILE *out)
{
	struct amis_err err;
	size_t i;
	int left = 0;

	err_clear(&err);
	for (i = r->n; i-- > 0;) {
		struct rs_vol *v = &r->v[i];

		if (!v->mounted)
			continue;
		if (umount(v->target) == 0) {
			v->mounted = false;
			fprintf(out, "  unmounted %s\n", v->target);
		} else {
			fprintf(out, "  cannot unmount %s: %s\n", v->target, strerror(errno));
			left++;
		}
	}
	for (i = 0; i < r->n; i++) {
		struct rs_vol *v = &r->v[i];

		if (!v->attached || v->mounted)
			continue;
		/* An attachment still "attaching" cannot be detached yet. */
		err_clear(&err);
		if (wait_volume(r, v->volume_id, "attaching", false, 60) < 0 ||
		    rs_detach_volume(r->aws, v->volume_id, &err) < 0) {
			fprintf(out, "  cannot detach %s: %s\n", v->volume_id,
			        err.msg[0] ? err.msg : "still attaching after 60 s");
			left++;
			continue;
		}
		fprintf(out, "  detaching %s\n", v->volume_id);
	}
	/* A volume can be deleted once detached (available). */
	for (i = 0; i < r->n; i++) {
		struct rs_vol *v = &r->v[i];

		if (!v->created || v->mounted)
			continue;
		if (v->attached && wait_volume(r, v->volume_id, "available", true, 120) < 0)
			fprintf(out, "  %s: still not detached after 120 s\n", v->volume_id);
		err_clear(&err);
		if (rs_delete_volume(r->aws, v->volume_id, &err) == 0) {
			v->created = v->attached = false;
			fprintf(out, "  deleted %s\n", v->volume_id);
		} else {
			fprintf(out, "  cannot delete %s: %s\n", v->volume_id, err.msg);
			left++;
		}
	}
	return left;
}

/* What exists that this run made; with cleanup, undo it. */
static void on_failure(struct rs_run *r)
{
	size_t i;
	bool any = false;

	for (i = 0; i < r->n; i++)
		any = any || r->v[i].created;
	if (!any)
		return;
	fprintf(stderr, "this run made:\n");
	for (i = 0; i < r->n; i++) {
		const struct rs_vol *v = &r->v[i];

		if (!v->created)
			continue;
		fprintf(stderr, "  volume %s (from %s)%s%s%s%s\n", v->volume_id,
		        v->snap->snapshot_id, v->attached ? ", attached as " : "",
		        v->attached ? v->device_name : "", v->mounted ? ", mounted at " : "",
		        v->mounted ? v->target : "");
	}
	if (!r->o.cleanup) {
		fprintf(stderr, "left as it is (--no-cleanup-on-failure)\n");
		return;
	}
	fprintf(stderr, "cleaning up (--no-cleanup-on-failure keeps it):\n");
	rs_release(r, stderr);
}

/* ---- The data directory. ---- */

/*
 * How to start PostgreSQL on pgdata, as its owner: pg_ctl, with the
 * configuration put back from outside the data directory when that is where
 * postgresql.conf lives (Debian).
 */
static void print_start(const struct rs_run *r, const char *pgdata, const struct stat *st,
                        const char *main_conf)
{
	struct passwd *pw = getpwuid(st->st_uid);
	char conf[PATH_MAX + 32], as[96];
	unsigned ver;
	char cluster[64];

	if (pw)
		snprintf(as, sizeof(as), "runuser -u %s --", pw->pw_name);
	else
		snprintf(as, sizeof(as), "setpriv --reuid %u --regid %u --clear-groups",
		         (unsigned)st->st_uid, (unsigned)st->st_gid);
	snprintf(conf, sizeof(conf), "%s/postgresql.conf", pgdata);
	printf("start PostgreSQL with:\n");
	if (access(conf, F_OK) == 0 || !main_conf[0]) {
		printf("  %s %s/pg_ctl -D '%s' -l '%s/restore.log' start\n", as, r->pg_bindir,
		       pgdata, pgdata);
		return;
	}
	/* postgresql.conf is outside the data directory: name both. */
	printf("  %s %s/pg_ctl -D '%s' -l '%s/restore.log' -o \"-c config_file='%s'\" start\n", as,
	       r->pg_bindir, pgdata, pgdata, main_conf);
	if (!r->o.root && !r->o.config_root &&
	    sscanf(main_conf, "/etc/postgresql/%u/%63[^/]/postgresql.conf", &ver, cluster) == 2)
		printf("or, as Debian does: pg_ctlcluster %u %s start\n", ver, cluster);
	else
		printf("(%s names the original's data_directory, hba_file and ident_file: "
		       "check them)\n",
		       main_conf);
}

int rs_prepare(struct rs_run *r, const struct rs_set *set, struct amis_err *err)
{
	const char *datadir = rs_atag(set->snaps[0], "data-directory");
	struct rs_relocation rel[RS_MAX_VOLUMES];
	char pgdata[PATH_MAX];
	struct strbuf report, label, map;
	struct stat st;
	size_t i, nrel = 0, nconf = 0;
	char main_conf[PATH_MAX] = "";
	bool found;
	int rc = RS_EXIT_DATA_DIR;

	snprintf(pgdata, sizeof(pgdata), "%s%s", r->o.root ? r->o.root : "", datadir);
	if (stat(pgdata, &st) < 0 || !S_ISDIR(st.st_mode)) {
		err_set(err, AMIS_E_PATH_NOT_FOUND, "the data directory %s is not there (%s)",
		        pgdata, strerror(errno));
		return RS_EXIT_DATA_DIR;
	}
	if (r->o.root) {
		for (i = 0; i < r->n; i++) {
			rel[nrel].from = r->v[i].mount_point;
			rel[nrel].to = r->v[i].target;
			nrel++;
		}
	}
	sb_init(&report);
	sb_init(&label);
	sb_init(&map);
	if (nrel && rs_relink(pgdata, rel, nrel, st.st_uid, st.st_gid, &report, err) < 0)
		goto out;
	if (r->o.as_standby) {
		if (rs_prepare_standby(pgdata, r->o.primary_conninfo, st.st_uid, st.st_gid, &report,
		                       err) < 0)
			goto out;
	} else if (!r->o.pitr) {
		if (rs_prepare_crash(pgdata, &report, err) < 0)
			goto out;
	} else {
		for (i = 0, found = false; i < set->n && !found; i++) {
			if (rs_decode_chunks(set->snaps[i], RS_TAG_PREFIX "backup-label-", &label,
			                     &found, err) < 0)
				goto out;
		}
		for (i = 0, found = false; i < set->n && !found; i++) {
			if (rs_decode_chunks(set->snaps[i], RS_TAG_PREFIX "tablespace-map-", &map,
			                     &found, err) < 0)
				goto out;
		}
		if (rs_prepare_pitr(pgdata, sb_str(&label), label.len, sb_str(&map), map.len, rel,
		                    nrel, &r->o.rec, st.st_uid, st.st_gid, &report, err) < 0)
			goto out;
	}
	if (!r->o.no_config) {
		const char *croot = r->o.config_root ? r->o.config_root : r->o.root;

		if (rs_restore_config(pgdata, croot, st.st_uid, st.st_gid, &nconf, main_conf,
		                      sizeof(main_conf), &report, err) < 0)
			goto out;
	}
	snprintf(r->pgdata, sizeof(r->pgdata), "%s", pgdata);
	fputs(sb_str(&report), stdout);
	if (r->o.no_start_hint) {
		rc = RS_EXIT_OK;
		goto out;
	}
	printf("\nthe data directory %s is ready for %s.\n", pgdata,
	       r->o.as_standby ? "crash recovery as a standby"
	       : r->o.pitr     ? "point-in-time recovery"
	                       : "crash recovery");
	if (nconf && !r->o.no_config)
		printf("%zu configuration file(s) were put back under %s; check the paths they "
		       "name (data_directory, ...) before starting.\n",
		       nconf,
		       r->o.config_root ? r->o.config_root
		       : r->o.root      ? r->o.root
		                        : "/");
	print_start(r, pgdata, &st, main_conf);
	if (r->o.pitr)
		printf("it replays the archive to the target and %s; then remove the recovery "
		       "settings at the end of postgresql.auto.conf.\n",
		       r->o.rec.target_action && strcmp(r->o.rec.target_action, "promote")
		           ? r->o.rec.target_action
		           : "promotes");
	rc = RS_EXIT_OK;
out:
	sb_free(&report);
	sb_free(&label);
	sb_free(&map);
	return rc;
}

/* ---- The command. ---- */

static int fail(struct rs_run *r, int code, const struct amis_err *err)
{
	fprintf(stderr, "ami-snapshot restore: %s\n", err->msg);
	on_failure(r);
	return code;
}

/*
 * Steps 1 and 2 of a restore: finds the set of r->o (request id, name or
 * image) into list/sets, chooses and checks it, waits for its snapshots
 * (with r->o.wait) and plans its volumes.  Returns an rs_exit code; 0 with
 * *chosen.  Prints the set chosen unless quiet.
 */
int rs_select(struct rs_run *r, struct rs_snapshot_list *list, struct rs_sets *sets,
              const struct rs_set **chosen, bool quiet, struct amis_err *err)
{
	const struct rs_set *set = NULL;
	struct rs_check_opts co;
	int rc, tagged_major;

	*chosen = NULL;
	if (rs_find_set(r, list, err) < 0) {
		/* No such image: EC2's InvalidAMIID.NotFound (or .Malformed), or absent. */
		bool no_image = r->o.image && (strncmp(err->code, "InvalidAMIID.", 13) == 0 ||
		                               strstr(err->msg, "not in the answer"));

		return no_image ? RS_EXIT_NOT_FOUND : RS_EXIT_ERROR;
	}
	rs_group(list, sets);
	if (r->o.list) {
		print_sets(sets);
		return sets->n ? RS_EXIT_OK : RS_EXIT_NOT_FOUND;
	}
	if (sets->n == 0) {
		err_set(err, AMIS_E_INVALID_ARGUMENT, "no snapshot set %s %s%s",
		        r->o.request_id ? "with request id"
		        : r->o.name     ? "named"
		                        : "in image",
		        r->o.request_id ? r->o.request_id
		        : r->o.name     ? r->o.name
		                        : r->o.image,
		        list->n ? " (snapshots found, but without an ami-snapshot:request-id tag)"
		                : "");
		return RS_EXIT_NOT_FOUND;
	}
	if (r->o.image && sets->n > 1) {
		err_set(err, AMIS_E_INVALID_ARGUMENT,
		        "the snapshots of image %s belong to %zu sets", r->o.image, sets->n);
		return RS_EXIT_AMBIGUOUS;
	}
	rc = rs_choose(sets, r->o.force, &set, err);
	if (rc)
		return rc;
	if (!quiet) {
		printf("set %s \"%s\" of %s (%s, %zu snapshot(s))\n", set->request_id, set->name,
		       set->start_time, set->backup_state, set->n);
		if (sets->n > 1 && r->o.name) {
			size_t i;

			printf("(the newest of the %zu sets of that name%s; --list shows them "
			       "all)\n",
			       sets->n, r->o.force ? "" : " whose backup stopped");
			for (i = 0; &sets->items[i] != set; i++)
				printf("passed over the newer set %s of %s: its backup-state is "
				       "\"%s\"\n",
				       sets->items[i].request_id, sets->items[i].start_time,
				       sets->items[i].backup_state);
		}
	}

	/* 2. The checks. */
	tagged_major = rs_pg_major(rs_atag(set->snaps[0], "pg-version"));
	memset(&co, 0, sizeof(co));
	co.force = r->o.force;
	co.need_layout = !r->o.attached;
	co.pitr = r->o.pitr;
	co.local_pg_major = rs_local_pg(r, tagged_major);
	if (!co.local_pg_major) {
		err_set(err, AMIS_E_PATH_NOT_FOUND,
		        "no PostgreSQL found here (%s/postgres; --pg-bindir names another)",
		        r->pg_bindir);
		return RS_EXIT_PG_VERSION;
	}
	rc = rs_check_set(set, &co, err);
	if (rc)
		return rc;
	if (!r->o.attached) {
		rc = rs_wait_completed(r, set, err);
		if (rc)
			return rc;
	}
	if (rs_plan(r, set, err) < 0)
		return RS_EXIT_ERROR;
	*chosen = set;
	return RS_EXIT_OK;
}

/*
 * Step 3: checks the mount targets, creates and attaches the volumes, waits
 * for their devices and mounts them.  Returns an rs_exit code
 * (RS_EXIT_ASSEMBLE: attached, LVM or md to assemble by hand).
 */
int rs_materialize(struct rs_run *r, const struct rs_set *set, struct amis_err *err)
{
	size_t i;
	int rc;

	for (i = 0; i < r->n; i++) {
		/* Nested ones are checked when their parent is mounted. */
		rc = rs_check_target(r, &r->v[i], err);
		if (rc)
			return rc;
	}
	if (rs_create_volumes(r, set, err) < 0 || rs_attach_volumes(r, err) < 0)
		return RS_EXIT_ERROR;
	rc = rs_wait_devices(r, err);
	if (rc)
		return rc;
	if (needs_assembly(r))
		return RS_EXIT_ASSEMBLE;
	return rs_mount_volumes(r, err);
}

int rs_restore_main(int argc, char **argv, const char *default_config)
{
	struct helper_config cfg;
	struct rs_snapshot_list list;
	struct rs_sets sets = {0, NULL};
	const struct rs_set *set = NULL;
	struct amis_err err;
	enum log_level level;
	struct rs_run *r = xcalloc(1, sizeof(*r));
	int rc;

	err_clear(&err);
	rs_list_init(&list);
	config_init(&cfg);
	if (parse_opts(argc, argv, default_config, &r->o) < 0) {
		rc = RS_EXIT_USAGE;
		goto out_nocfg;
	}
	if (config_load_file(&cfg, r->o.config, &err) != 0) {
		fprintf(stderr, "ami-snapshot restore: configuration: %s\n", err.msg);
		rc = RS_EXIT_USAGE;
		goto out_nocfg;
	}
	log_set_ident("ami-snapshot");
	log_set_level(LOG_LVL_WARNING);
	if (log_level_parse(cfg.log_level, &level) && level > LOG_LVL_INFO)
		log_set_level(level);
	r->aws = rs_aws_new(&cfg);
	if (rs_aws_ready(r->aws, !r->o.list && !r->o.attached, &err) < 0) {
		rc = fail(r, RS_EXIT_ERROR, &err);
		goto out;
	}

	/* 1, 2. The set and its checks. */
	rc = rs_select(r, &list, &sets, &set, false, &err);
	if (rc || r->o.list) {
		if (rc)
			rc = fail(r, rc, &err);
		goto out;
	}

	/* 3. Volumes, devices, mounts. */
	if (!r->o.attached) {
		rc = rs_materialize(r, set, &err);
		if (rc == RS_EXIT_ASSEMBLE) {
			printf("\nsome filesystems span several volumes (LVM or md): assemble them "
			       "(vgchange -ay / mdadm --assemble --scan), mount each at %s<mount "
			       "point>, then run this command again with --attached.\n",
			       r->o.root ? r->o.root : "");
			goto out;
		}
		if (rc) {
			rc = fail(r, rc, &err);
			goto out;
		}
	}

	/* 4. The data directory. */
	rc = rs_prepare(r, set, &err);
	if (rc)
		rc = fail(r, rc, &err);
out:
	rs_sets_free(&sets);
	rs_list_free(&list);
	rs_aws_free(r->aws);
out_nocfg:
	config_free(&cfg);
	free(r);
	return rc;
}
