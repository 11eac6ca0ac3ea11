/*
 * test_operation.c - the snapshot operation (helper/root/operation.c,
 * prepare.c, freeze_cycle.c, tagging.c) without root: the freeze, the
 * marker, the watchdog, the path -> volume mapping and the EC2 worker are
 * replaced by the fakes below (link seams: these definitions come before
 * libamis.a, so the real freeze.o, marker.o, watchdog.o, volumes.o and
 * worker_client.o are never linked in).  Requests go through op_dispatch()
 * on real sockets, as the server hands them over.
 *
 * Checked: the whole protocol; every request refused where the state
 * machine says so; and on every failure path (EC2 error, lost answer,
 * failing freeze, failing thaw, a wrong snapshot set, a failing DryRun,
 * the client gone) that nothing is left frozen, the answer says why, and
 * the helper takes the next request.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "check.h"
#include "config.h"
#include "freeze.h"
#include "inflight.h"
#include "op_internal.h"
#include "marker.h"
#include "operation.h"
#include "protocol.h"
#include "server.h"
#include "tap.h"
#include "volumes.h"
#include "watchdog.h"
#include "worker_client.h"

#define NVOL 3

/* ---- The fakes' script and what they saw. ---- */

static struct {
	enum amis_code freeze_err;  /* freeze_plan_freeze fails with it */
	int thaw_failures;          /* so many thaws fail before one works */
	enum amis_code call_err;    /* the real CreateSnapshots fails with it */
	int call_err_count;         /* ... so many times (then succeeds) */
	enum amis_code dry_run_err; /* a DryRun fails with it */
	int dry_run_skip;           /* ... after so many DryRuns worked */
	bool foreign_volume;        /* the answer lists a volume not asked for */
	bool call_makes_snapshots;  /* EC2 made them although the call failed */
	int frozen;                 /* filesystems frozen now */
	int frozen_during_call;     /* frozen when the real call was made */
	int creates, dry_runs, tag_calls, finds, freezes;
	int describes, describes_with_dry_run; /* DescribeInstances, and with a DryRun along */
	long idle_ms;                          /* worker_ec2_idle_ms() */
	size_t item_tags;                      /* tags of one snapshot each */
	bool volume_attached;                  /* the mapping lists one more volume */
	size_t last_nexclude;                  /* ExcludeDataVolumeId of the last request */
	char last_tag_state[32];
	/* The AMI methods. */
	bool billing;           /* the instance's usage operation is RHEL's */
	bool register_fails;    /* RegisterImage fails */
	bool image_never_ready; /* DescribeImages never shows the image's snapshots */
	bool name_taken;        /* an image of the name exists */
	int registers, image_creates, image_frozen, deregisters, image_polls;
	char last_image_state_tag[32];
	bool boot_in_set; /* the last CreateSnapshots included the root volume */
	/* The inflight entries (inflight.h), in memory; what a dead helper left. */
	char inflight[8][65];
	int ninflight, inflight_adds;
	bool inflight_add_fails;
	time_t inflight_since;
	bool leftover_started; /* DescribeSnapshots by request id + started finds a set */
	bool leftover_image;   /* DescribeImages by request id finds ami-0000dead */
	char last_tag_id[32];  /* CreateTags: the first resource of the last call */
	int recorded_tags;     /* inflight_write_tags: how many */
	char recorded_state[16];
	int tags_fail; /* so many CreateTags fail */
	int leftover_finds;
	/* The preflight check. */
	int all_dry_runs;          /* every CreateSnapshots DryRun */
	const char *denied_action; /* W_CHECK answers UnauthorizedOperation for it */
	int checks;                /* W_CHECK calls */
	int frozen_during_check;   /* filesystems frozen when W_CHECK was made */
	char check_volume[65];     /* the volume W_CHECK was given */
	char check_actions[512];   /* the actions W_CHECK was asked for, space-separated */
	/* A standby's set: the CreateSnapshots tags, "key=value;" each. */
	char standby_tags[512];
} fx;

static void fx_reset(void)
{
	memset(&fx, 0, sizeof(fx));
	fx.frozen_during_call = -1;
	fx.inflight_since = time(NULL);
	fx.idle_ms = -1; /* a cold connection: the DryRun before the freeze is made */
}

int inflight_add(const char *state_dir, const char *request_id, struct amis_err *err)
{
	if (fx.inflight_add_fails)
		return err_set(err, AMIS_E_STATE_DIR, "test: state_dir is full");
	fx.inflight_adds++;
	if (fx.ninflight < 8)
		snprintf(fx.inflight[fx.ninflight++], 65, "%s", request_id);
	return 0;
}

void inflight_remove(const char *state_dir, const char *request_id)
{
	int i;

	for (i = 0; i < fx.ninflight; i++)
		if (!strcmp(fx.inflight[i], request_id)) {
			memmove(fx.inflight[i], fx.inflight[i + 1],
			        (size_t)(fx.ninflight - i - 1) * 65);
			fx.ninflight--;
			return;
		}
}

int inflight_write_tags(const char *state_dir, const char *request_id,
                        const struct inflight_tag *tags, size_t n, struct amis_err *err)
{
	size_t i;

	fx.recorded_tags = (int)n;
	for (i = 0; i < n; i++)
		if (!strcmp(tags[i].key, "ami-snapshot:backup-state"))
			snprintf(fx.recorded_state, sizeof(fx.recorded_state), "%s", tags[i].value);
	return 0;
}

int inflight_read_tags(const char *state_dir, const char *request_id, struct inflight_tag **out,
                       size_t *n)
{
	*out = NULL;
	*n = 0;
	if (fx.recorded_tags) {
		*out = calloc(1, sizeof(**out));
		snprintf((*out)->resource, sizeof((*out)->resource), "snap-0000000000000000a");
		snprintf((*out)->key, sizeof((*out)->key), "ami-snapshot:backup-state");
		snprintf((*out)->value, sizeof((*out)->value), "%s", fx.recorded_state);
		*n = 1;
	}
	return 0;
}

size_t inflight_list(const char *state_dir, struct inflight_entry *out, size_t max)
{
	size_t i;

	for (i = 0; i < (size_t)fx.ninflight && i < max; i++) {
		snprintf(out[i].request_id, sizeof(out[i].request_id), "%s", fx.inflight[i]);
		out[i].since = fx.inflight_since;
	}
	return i;
}

const struct sys_paths volumes_sys_paths_default;

int volumes_resolve_path(const struct sys_paths *sp, const char *path,
                         const struct volume_override *ov, size_t nov, struct fs_target *out,
                         struct amis_err *err)
{
	static int next;

	snprintf(out->path, sizeof(out->path), "%s", path);
	snprintf(out->real_path, sizeof(out->real_path), "%s", path);
	snprintf(out->mount_point, sizeof(out->mount_point), "%s", path);
	snprintf(out->fstype, sizeof(out->fstype), "ext4");
	out->dev_major = 7;
	out->dev_minor = (unsigned)(next++ % NVOL);
	out->ndisks = 1;
	return 0;
}

bool volumes_path_allowed(const char *mount_point, const char *const *allowed_prefixes, size_t n,
                          bool allow_root_fs)
{
	return strncmp(mount_point, "/forbidden", 10) != 0;
}

int freeze_plan_build(const struct fs_target *t, size_t n, struct freeze_plan *plan,
                      struct amis_err *err)
{
	size_t i;

	memset(plan, 0, sizeof(*plan));
	for (i = 0; i < n; i++) {
		snprintf(plan->fs[i].mount_point, sizeof(plan->fs[i].mount_point), "%s",
		         t[i].mount_point);
		plan->fs[i].fd = -1;
		snprintf(plan->volume_ids[i], sizeof(plan->volume_ids[i]), "vol-%08zx", i + 1);
	}
	plan->nfs = n;
	plan->nvolumes = n;
	return 0;
}

int freeze_plan_set_device_volume(struct freeze_plan *plan, const char *mapping_name,
                                  const char *volume_id, struct amis_err *err)
{
	return 0;
}

size_t freeze_plan_unresolved_disks(const struct freeze_plan *plan)
{
	return 0;
}

int freeze_plan_open(struct freeze_plan *plan, struct amis_err *err)
{
	return 0;
}

int freeze_plan_freeze(struct freeze_plan *plan, struct amis_err *err)
{
	size_t i;

	fx.freezes++;
	if (fx.freeze_err)
		return err_set(err, fx.freeze_err, "fake: FIFREEZE failed; rolled back");
	for (i = 0; i < plan->nfs; i++) {
		plan->fs[i].frozen = true;
		plan->fs[i].frozen_at_usec = mono_usec();
		plan->fs[i].freeze_returned_usec = plan->fs[i].frozen_at_usec;
		fx.frozen++;
	}
	return 0;
}

int freeze_plan_thaw(struct freeze_plan *plan, struct amis_err *err)
{
	size_t i;

	if (!freeze_plan_any_frozen(plan))
		return 0;
	if (fx.thaw_failures > 0) {
		fx.thaw_failures--;
		return err_set(err, AMIS_E_THAW_FAILED, "fake: FITHAW failed");
	}
	for (i = 0; i < plan->nfs; i++) {
		if (plan->fs[i].frozen) {
			plan->fs[i].frozen = false;
			plan->fs[i].thawed_at_usec = mono_usec();
			fx.frozen--;
		}
	}
	return 0;
}

bool freeze_plan_any_frozen(const struct freeze_plan *plan)
{
	size_t i;

	for (i = 0; i < plan->nfs; i++)
		if (plan->fs[i].frozen)
			return true;
	return false;
}

long long freeze_plan_window_usec(const struct freeze_plan *plan)
{
	long long first = 0, last = 0;
	size_t i;

	for (i = 0; i < plan->nfs; i++) {
		if (plan->fs[i].frozen)
			return -1;
		if (!plan->fs[i].frozen_at_usec)
			continue;
		if (!first || plan->fs[i].frozen_at_usec < first)
			first = plan->fs[i].frozen_at_usec;
		if (plan->fs[i].thawed_at_usec > last)
			last = plan->fs[i].thawed_at_usec;
	}
	return first ? last - first : -1;
}

void freeze_plan_close(struct freeze_plan *plan)
{
}

int marker_check_dir(const char *state_dir, const struct freeze_plan *plan, struct amis_err *err)
{
	return 0;
}

int marker_write(const struct sys_paths *sp, const char *state_dir, struct freeze_plan *plan,
                 const char *request_id, struct amis_err *err)
{
	return 0;
}

int marker_remove(const char *state_dir, struct amis_err *err)
{
	return 0;
}

int watchdog_start(struct watchdog *wd, const struct freeze_plan *plan, const char *state_dir,
                   long long deadline_usec, struct amis_err *err)
{
	return 0;
}

bool watchdog_stop(struct watchdog *wd)
{
	return false;
}

void watchdog_abandon(struct watchdog *wd)
{
}

/* The worker: one instance with a root volume and NVOL data volumes. */
static int fake_worker;

struct worker *worker_new(const struct helper_config *cfg, const char *config_path)
{
	return (struct worker *)&fake_worker;
}

void worker_free(struct worker *w)
{
}

void worker_set_waiter(struct worker *w, const struct worker_waiter *waiter)
{
}

void worker_set_abort_fd(struct worker *w, int fd)
{
}

int worker_start(struct worker *w, struct amis_err *err)
{
	return 0;
}

bool worker_running(struct worker *w)
{
	return true;
}

int worker_ready(struct worker *w, struct amis_err *err)
{
	return 0;
}

const char *worker_instance_id(const struct worker *w)
{
	return "i-0123456789abcdef0";
}

const char *worker_region(const struct worker *w)
{
	return "eu-west-1";
}

int worker_describe_instance(struct worker *w, long timeout_ms, struct ec2_instance_info *out,
                             struct amis_err *err)
{
	size_t i;

	fx.describes++;
	memset(out, 0, sizeof(*out));
	snprintf(out->instance_id, sizeof(out->instance_id), "%s", worker_instance_id(w));
	snprintf(out->root_device_name, sizeof(out->root_device_name), "/dev/xvda");
	snprintf(out->volumes[0].device_name, sizeof(out->volumes[0].device_name), "/dev/xvda");
	snprintf(out->volumes[0].volume_id, sizeof(out->volumes[0].volume_id), "vol-000000ff");
	for (i = 1; i <= NVOL; i++) {
		snprintf(out->volumes[i].device_name, sizeof(out->volumes[i].device_name),
		         "/dev/sd%c", (char)('e' + i));
		snprintf(out->volumes[i].volume_id, sizeof(out->volumes[i].volume_id), "vol-%08zx",
		         i);
	}
	out->nvolumes = NVOL + 1;
	if (fx.volume_attached) {
		snprintf(out->volumes[out->nvolumes].device_name,
		         sizeof(out->volumes[0].device_name), "/dev/sdz");
		snprintf(out->volumes[out->nvolumes].volume_id, sizeof(out->volumes[0].volume_id),
		         "vol-000000ee");
		out->nvolumes++;
	}
	snprintf(out->architecture, sizeof(out->architecture), "x86_64");
	snprintf(out->image_id, sizeof(out->image_id), "ami-0000000a");
	snprintf(out->usage_operation, sizeof(out->usage_operation), "%s",
	         fx.billing ? "RunInstances:0010" : "RunInstances");
	out->ena_support = true;
	return 0;
}

static void make_set(struct ec2_snapshot_set *out)
{
	size_t i;

	out->n = NVOL + (fx.boot_in_set ? 1 : 0);
	out->items = calloc(out->n, sizeof(*out->items));
	if (fx.boot_in_set) {
		snprintf(out->items[NVOL].snapshot_id, sizeof(out->items[NVOL].snapshot_id),
		         "snap-000000ff");
		snprintf(out->items[NVOL].volume_id, sizeof(out->items[NVOL].volume_id),
		         "vol-000000ff");
		snprintf(out->items[NVOL].state, sizeof(out->items[NVOL].state), "pending");
	}
	for (i = 0; i < NVOL; i++) {
		snprintf(out->items[i].snapshot_id, sizeof(out->items[i].snapshot_id), "snap-%08zx",
		         i + 1);
		snprintf(out->items[i].volume_id, sizeof(out->items[i].volume_id), "vol-%08zx",
		         fx.foreign_volume && i == 0 ? (size_t)0xee : i + 1);
		snprintf(out->items[i].state, sizeof(out->items[i].state), "pending");
	}
}

int worker_create_snapshots(struct worker *w, const struct ec2_create_snapshots_req *r,
                            long timeout_ms, long wait_ms, bool hold_log,
                            struct ec2_snapshot_set *out, struct amis_err *err)
{
	out->n = 0;
	out->items = NULL;
	fx.last_nexclude = r->n_exclude;
	if (r->dry_run) {
		fx.all_dry_runs++;
		if (fx.dry_run_err && fx.dry_runs++ >= fx.dry_run_skip)
			return err_set(err, fx.dry_run_err, "fake: the DryRun failed");
		return 0;
	}
	fx.creates++;
	fx.frozen_during_call = fx.frozen;
	fx.standby_tags[0] = '\0';
	for (size_t i = 0; i < r->ntags; i++)
		if (strstr(r->tags[i].key, "taken-from") ||
		    strstr(r->tags[i].key, "primary-host") || strstr(r->tags[i].key, "sync-state"))
			snprintf(fx.standby_tags + strlen(fx.standby_tags),
			         sizeof(fx.standby_tags) - strlen(fx.standby_tags), "%s=%s;",
			         r->tags[i].key, r->tags[i].value);
	fx.boot_in_set = !r->exclude_boot_volume;
	if (fx.call_err && fx.call_err_count > 0) {
		fx.call_err_count--;
		return err_set(err, fx.call_err, "fake: CreateSnapshots failed");
	}
	make_set(out);
	return 0;
}

int worker_create_tags(struct worker *w, const char *const *ids, size_t nids,
                       const struct ec2_tag *tags, size_t ntags, long timeout_ms,
                       struct amis_err *err)
{
	size_t i;

	fx.tag_calls++;
	if (nids)
		snprintf(fx.last_tag_id, sizeof(fx.last_tag_id), "%s", ids[0]);
	if (fx.tags_fail > 0) {
		fx.tags_fail--;
		return err_set(err, AMIS_E_INTERNAL_ERROR, "fake: CreateTags failed");
	}
	for (i = 0; i < ntags; i++) {
		if (!strcmp(tags[i].key, "ami-snapshot:backup-state"))
			snprintf(fx.last_tag_state, sizeof(fx.last_tag_state), "%s", tags[i].value);
		if (!strcmp(tags[i].key, "ami-snapshot:image-state"))
			snprintf(fx.last_image_state_tag, sizeof(fx.last_image_state_tag), "%s",
			         tags[i].value);
	}
	return 0;
}

/* The AMI methods' calls. */
int worker_describe_instance_dry(struct worker *w, long timeout_ms,
                                 const struct ec2_create_snapshots_req *dry,
                                 struct ec2_instance_info *out, struct amis_err *dry_err,
                                 struct amis_err *err)
{
	struct ec2_snapshot_set none = {0};

	err_clear(dry_err);
	fx.describes_with_dry_run += dry != NULL;
	if (worker_describe_instance(w, timeout_ms, out, err) != 0)
		return -1;
	if (dry)
		worker_create_snapshots(w, dry, timeout_ms, timeout_ms, false, &none, dry_err);
	ec2_snapshot_set_free(&none);
	return 0;
}

long worker_ec2_idle_ms(const struct worker *w)
{
	return fx.idle_ms;
}

int worker_create_tags_items(struct worker *w, const char *const *ids, size_t nids,
                             const struct ec2_tag *tags, size_t ntags,
                             const struct worker_item_tag *items, size_t nitems, long timeout_ms,
                             struct amis_err *err)
{
	fx.item_tags += nitems;
	if (!ntags) {
		fx.tag_calls++;
		return 0;
	}
	return worker_create_tags(w, ids, nids, tags, ntags, timeout_ms, err);
}

int worker_describe_image(struct worker *w, const struct ec2_image_query *q, long timeout_ms,
                          struct ec2_image_info *out, struct amis_err *err)
{
	size_t i;

	memset(out, 0, sizeof(*out));
	if (q->tag_key && fx.leftover_image) {
		snprintf(out->image_id, sizeof(out->image_id), "ami-0000dead");
		return 0;
	}
	if (q->name) {
		if (fx.name_taken)
			snprintf(out->image_id, sizeof(out->image_id), "ami-0000000b");
		return 0;
	}
	if (q->image_id && !strcmp(q->image_id, "ami-0000000a")) {
		snprintf(out->image_id, sizeof(out->image_id), "ami-0000000a");
		snprintf(out->sriov_net_support, sizeof(out->sriov_net_support), "simple");
		return 0;
	}
	if (q->image_id && !strcmp(q->image_id, "ami-000000c1")) {
		fx.image_polls++;
		snprintf(out->image_id, sizeof(out->image_id), "ami-000000c1");
		snprintf(out->state, sizeof(out->state), "pending");
		out->nmappings = NVOL + 1;
		for (i = 0; i <= NVOL; i++) {
			snprintf(out->mappings[i].device_name, sizeof(out->mappings[i].device_name),
			         "/dev/sd%c", (char)('e' + i));
			if (!fx.image_never_ready && fx.image_polls > 1)
				snprintf(out->mappings[i].snapshot_id,
				         sizeof(out->mappings[i].snapshot_id), "snap-%08zx",
				         i == NVOL ? (size_t)0xff : i + 1);
		}
		return 0;
	}
	return 0;
}

int worker_describe_volumes(struct worker *w, const char *const *ids, size_t n, long timeout_ms,
                            struct ec2_volume_set *out, struct amis_err *err)
{
	size_t i;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < n; i++) {
		snprintf(out->items[i].volume_id, sizeof(out->items[i].volume_id), "%s", ids[i]);
		snprintf(out->items[i].volume_type, sizeof(out->items[i].volume_type), "gp3");
		out->items[i].size_gib = 8;
	}
	out->n = n;
	return 0;
}

int worker_register_image(struct worker *w, const struct ec2_register_image_req *r, long timeout_ms,
                          char *image_id, struct amis_err *err)
{
	image_id[0] = '\0';
	if (r->dry_run)
		return 0;
	fx.registers++;
	if (fx.register_fails)
		return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE, "fake: RegisterImage failed");
	snprintf(image_id, 32, "ami-000000a1");
	return 0;
}

int worker_create_image(struct worker *w, const struct ec2_create_image_req *r, long timeout_ms,
                        long wait_ms, bool hold_log, char *image_id, struct amis_err *err)
{
	image_id[0] = '\0';
	if (r->dry_run)
		return 0;
	fx.image_creates++;
	fx.image_frozen = fx.frozen;
	fx.image_polls = 0;
	fx.boot_in_set = true;
	snprintf(image_id, 32, "ami-000000c1");
	return 0;
}

int worker_deregister_image(struct worker *w, const char *image_id, long timeout_ms,
                            struct amis_err *err)
{
	fx.deregisters++;
	return 0;
}

int worker_find_snapshots(struct worker *w, const char *key, const char *value, long timeout_ms,
                          struct ec2_snapshot_set *out, struct amis_err *err)
{
	fx.finds++;
	ec2_snapshot_set_free(out);
	out->n = 0;
	out->items = NULL;
	if (fx.call_makes_snapshots || (fx.image_creates && !fx.image_never_ready))
		make_set(out);
	return 0;
}

int worker_find_snapshots_tags(struct worker *w, const char *const *keys, const char *const *values,
                               size_t n, long timeout_ms, struct ec2_snapshot_set *out,
                               struct amis_err *err)
{
	fx.leftover_finds++;
	out->n = 0;
	out->items = NULL;
	if (n == 2 && !strcmp(values[1], "started") && fx.leftover_started)
		make_set(out);
	return 0;
}

/* W_CHECK: the worker's rows as worker_main.c words them, one per action. */
int worker_check(struct worker *w, const char *const *actions, size_t n, const char *volume_id,
                 long timeout_ms, struct check_rows *rows, struct amis_err *err)
{
	size_t i;

	fx.checks++;
	fx.frozen_during_check = fx.frozen;
	snprintf(fx.check_volume, sizeof(fx.check_volume), "%s", volume_id);
	fx.check_actions[0] = '\0';
	check_add(rows, "imds", "ok", NULL, "reachable");
	check_add(rows, "credentials", "ok", NULL, "found: from imds:role (never shown)");
	check_add(rows, "instance and region", "ok", NULL, "eu-west-1: instance i-0fake");
	for (i = 0; i < n; i++) {
		char name[64];

		snprintf(fx.check_actions + strlen(fx.check_actions),
		         sizeof(fx.check_actions) - strlen(fx.check_actions), "%s ", actions[i]);
		snprintf(name, sizeof(name), "ec2:%s", actions[i]);
		if (fx.denied_action && !strcmp(actions[i], fx.denied_action))
			check_add(rows, name, "failed", "allow the IAM action ec2:X", "denied");
		else
			check_add(rows, name, "ok", NULL, "allowed");
	}
	return 0;
}

/* ---- A client: a socketpair, frames in, answers out. ---- */

struct client {
	struct conn c; /* the helper's end */
	int fd;        /* ours */
	unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
	struct amsp_msgview m;
};

static struct client *client_new(uid_t uid)
{
	struct client *cl = calloc(1, sizeof(*cl));
	int sv[2];

	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0)
		abort();
	cl->c.fd = sv[0];
	cl->c.uid = uid;
	cl->c.pid = 4242;
	cl->fd = sv[1];
	return cl;
}

static void client_free(struct client *cl)
{
	close(cl->c.fd);
	close(cl->fd);
	free(cl);
}

/* Sends one request through op_dispatch(); its return value. */
static int ask(struct helper *h, struct client *cl, struct amsp_writer *w)
{
	static struct amsp_msgview req;
	size_t len = amsp_end(w);
	const char *why = NULL;
	int rc;

	if (!len || amsp_decode(w->buf, len, &req, &why) != 0) {
		printf("# bad request: %s\n", why ? why : "too large");
		return -99;
	}
	rc = op_dispatch(h, &cl->c, &req);
	/* As the server does: -1 closes the connection, which ends its operation. */
	if (rc != 0 && cl->c.op)
		op_client_gone(h, &cl->c, "conversation ended");
	return rc;
}

/* The answer waiting on the client's socket: its type, or -1 if none. */
static int answer(struct client *cl)
{
	ssize_t n = recv(cl->fd, cl->buf, sizeof(cl->buf), MSG_DONTWAIT);
	const char *why;

	if (n <= 0 || amsp_decode(cl->buf, (size_t)n, &cl->m, &why) != 0)
		return -1;
	return cl->m.type;
}

static const char *answer_str(struct client *cl, enum amsp_tag tag)
{
	static char s[2048];

	s[0] = '\0';
	amsp_copy_str(amsp_get(&cl->m, tag), s, sizeof(s));
	return s;
}

static unsigned char frame[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];
static int reqno;
/* The next PREPAREs' standby fields (test_standby): the flag, host, sync state. */
static int standby_flag = -1;
static const char *standby_host, *standby_sync;

/* A PREPARE for the three paths; method: NULL, or an image method. */
static int prepare_with(struct helper *h, struct client *cl, const char *name, bool freeze,
                        const char *method, bool allow_loss)
{
	struct amsp_writer w;
	char id[64];

	snprintf(id, sizeof(id), "0b5e0000-0000-4000-8000-%012d", ++reqno);
	amsp_begin(&w, frame, sizeof(frame), AMSP_PREPARE);
	amsp_put_str(&w, AMSP_T_REQUEST_ID, id);
	amsp_put_str(&w, AMSP_T_NAME, name);
	amsp_put_u8(&w, AMSP_T_FREEZE, freeze ? 1 : 0);
	amsp_put_str(&w, AMSP_T_PATH_DATA, "/mnt/data");
	amsp_put_str(&w, AMSP_T_PATH_WAL, "/mnt/wal");
	amsp_put_str(&w, AMSP_T_PATH_TABLESPACE, "/mnt/ts1");
	amsp_put_str(&w, AMSP_T_SYSTEM_ID, "7300000000000000001");
	amsp_put_str(&w, AMSP_T_PG_VERSION, "150000");
	if (method)
		amsp_put_str(&w, AMSP_T_IMAGE_METHOD, method);
	if (allow_loss)
		amsp_put_u8(&w, AMSP_T_ALLOW_PRODUCT_CODE_LOSS, 1);
	if (standby_flag >= 0)
		amsp_put_u8(&w, AMSP_T_STANDBY, (uint8_t)standby_flag);
	if (standby_host)
		amsp_put_str(&w, AMSP_T_PRIMARY_HOST, standby_host);
	if (standby_sync)
		amsp_put_str(&w, AMSP_T_SYNC_STATE, standby_sync);
	return ask(h, cl, &w);
}

static int prepare(struct helper *h, struct client *cl, const char *name, bool freeze)
{
	return prepare_with(h, cl, name, freeze, NULL, false);
}

static int prepare_image(struct helper *h, struct client *cl, const char *name, const char *method,
                         bool allow_loss)
{
	return prepare_with(h, cl, name, true, method, allow_loss);
}

static int snapshot(struct helper *h, struct client *cl)
{
	struct amsp_writer w;

	amsp_begin(&w, frame, sizeof(frame), AMSP_SNAPSHOT);
	amsp_put_str(&w, AMSP_T_START_LSN, "0/5000028");
	amsp_put_u32(&w, AMSP_T_TIMELINE, 1);
	return ask(h, cl, &w);
}

static int finish(struct helper *h, struct client *cl)
{
	struct amsp_writer w;

	amsp_begin(&w, frame, sizeof(frame), AMSP_FINISH);
	amsp_put_str(&w, AMSP_T_STOP_LSN, "0/5000100");
	amsp_put_u32(&w, AMSP_T_TIMELINE, 1);
	amsp_put_str(&w, AMSP_T_BACKUP_LABEL, "START WAL LOCATION: 0/5000028\nLABEL: t\n");
	return ask(h, cl, &w);
}

static int simple(struct helper *h, struct client *cl, enum amsp_msg type)
{
	struct amsp_writer w;

	amsp_begin(&w, frame, sizeof(frame), type);
	return ask(h, cl, &w);
}

/* STATUS from another client: the state word. */
static const char *status_of(struct helper *h)
{
	static char state[64];
	struct client *o = client_new(0);

	state[0] = '\0';
	if (simple(h, o, AMSP_STATUS) == 0 && answer(o) == AMSP_STATUS_REPLY)
		snprintf(state, sizeof(state), "%s", answer_str(o, AMSP_T_STATE));
	client_free(o);
	return state;
}

/* A failure's checks: the ERROR's code, nothing frozen, the helper idle. */
static void check_failed(struct helper *h, struct client *cl, int rc, const char *code,
                         const char *what)
{
	int type = answer(cl);

	is_int(rc, -1, "%s: the request fails (the connection is closed)", what);
	is_int(type, AMSP_ERROR, "%s: an ERROR answers it", what);
	if (type == AMSP_ERROR)
		is_str(answer_str(cl, AMSP_T_ERROR_CODE), code, "%s: code (%s)", what,
		       answer_str(cl, AMSP_T_ERROR_MESSAGE));
	is_int(fx.frozen, 0, "%s: nothing is left frozen", what);
	is_str(status_of(h), "idle", "%s: the helper is idle again", what);
}

static struct helper_config cfg;

static void free_helper(struct helper *h)
{
	helper_free(h);
	config_free(&cfg);
}

static struct helper *new_helper(int retries)
{
	static volatile sig_atomic_t stop;
	struct amis_err err;
	char text[1024];

	config_init(&cfg);
	snprintf(text, sizeof(text),
	         "[helper]\nallowed_users = root\nstate_dir = /nonexistent\n"
	         "retries = %d\nretry_backoff = 10ms\n[filesystems]\nallow = /mnt\n",
	         retries);
	if (config_load_string(&cfg, text, &err) != 0) {
		printf("# config: %s\n", err.msg);
		exit(1);
	}
	return helper_new(&cfg, "/nonexistent", &stop);
}

static void test_whole_call(struct helper *h)
{
	struct client *cl = client_new(0), *other = client_new(0);

	fx_reset();
	is_str(status_of(h), "idle", "a new helper is idle");
	is_int(snapshot(h, cl), -1, "SNAPSHOT before PREPARE is refused");

	cl = (client_free(cl), client_new(0));
	is_int(prepare(h, cl, "nightly", true), 0, "PREPARE");
	is_int(answer(cl), AMSP_PREPARED, "PREPARED");
	is_int(amsp_count(&cl->m, AMSP_T_VOLUME_ID), NVOL, "PREPARED lists the three volumes");
	is_str(status_of(h), "busy", "after PREPARE: busy");
	is_int(prepare(h, other, "second", true), -1, "a second PREPARE meanwhile is refused");
	is_int(answer(other), AMSP_ERROR, "... with an ERROR");
	is_str(answer_str(other, AMSP_T_ERROR_CODE), "Busy", "... Busy");
	is_int(finish(h, cl), -1, "FINISH in PREPARED is out of order");

	cl = (client_free(cl), client_new(0));
	is_int(prepare(h, cl, "nightly", true), 0, "PREPARE again");
	answer(cl);
	is_int(snapshot(h, cl), 0, "SNAPSHOT");
	is_int(answer(cl), AMSP_PENDING, "PENDING");
	is_int(fx.frozen_during_call, NVOL, "all three filesystems frozen during the call");
	is_int(fx.frozen, 0, "thawed once the snapshots are pending");
	is_int(fx.creates, 1, "exactly one CreateSnapshots");
	is_int(amsp_count(&cl->m, AMSP_T_SNAPSHOT_ID), NVOL, "three snapshots pending");
	is_int(snapshot(h, cl), -1, "a second SNAPSHOT is out of order");

	cl = (client_free(cl), client_new(0));
	prepare(h, cl, "nightly", true);
	answer(cl);
	snapshot(h, cl);
	answer(cl);
	is_int(finish(h, cl), -1, "FINISH: the conversation ends");
	is_int(answer(cl), AMSP_DONE, "with DONE");
	is_str(fx.last_tag_state, "stopped", "tagged backup-state=stopped");
	is_str(status_of(h), "idle", "idle after DONE");
	client_free(cl);
	client_free(other);

	/* freeze => false: nothing frozen, the same protocol. */
	fx_reset();
	cl = client_new(0);
	prepare(h, cl, "no freeze", false);
	answer(cl);
	is_int(snapshot(h, cl), 0, "freeze => false: SNAPSHOT");
	is_int(answer(cl), AMSP_PENDING, "freeze => false: PENDING");
	is_int(fx.freezes, 0, "freeze => false: nothing frozen");
	is_int(simple(h, cl, AMSP_ABORT), -1, "ABORT in PENDING ends the operation");
	is_str(fx.last_tag_state, "aborted", "ABORT: snapshots tagged aborted");
	is_str(status_of(h), "idle", "ABORT: idle");
	client_free(cl);
}

/* One whole conversation; the DONE's type. */
static int whole_call(struct helper *h, const char *name)
{
	struct client *cl = client_new(0);
	int type;

	prepare(h, cl, name, true);
	answer(cl);
	snapshot(h, cl);
	answer(cl);
	finish(h, cl);
	type = answer(cl);
	client_free(cl);
	return type;
}

/*
 * The round trips a call pays (issue 16): the mapping kept between calls,
 * checked by a DescribeInstances made with the DryRun; no DryRun before the
 * freeze while the connection is warm; the snapshots' own tags with the
 * set's.
 */
static void test_round_trips(void)
{
	struct helper *h = new_helper(0);

	fx_reset();
	is_int(whole_call(h, "first call"), AMSP_DONE, "first call: DONE");
	is_int(fx.describes, 1, "first call: one DescribeInstances");
	is_int(fx.describes_with_dry_run, 0,
	       "first call: no mapping kept yet, so not with the DryRun");
	is_int(fx.all_dry_runs, 2,
	       "first call: the preflight DryRun, and one before the freeze "
	       "(the connection is cold)");
	is_int(fx.creates, 1, "first call: one CreateSnapshots");
	is_int(fx.tag_calls, 1, "first call: one tagging request for the whole set");
	is_int((int)fx.item_tags, NVOL, "first call: with each snapshot's device tag in it");

	fx_reset();
	fx.idle_ms = 50; /* EC2 answered 50 ms ago: a short checkpoint */
	is_int(whole_call(h, "second call"), AMSP_DONE, "second call: DONE");
	is_int(fx.describes_with_dry_run, 1,
	       "second call: DescribeInstances made at once with the preflight DryRun");
	is_int(fx.all_dry_runs, 1, "second call: no DryRun before the freeze (warm)");
	is_int((int)fx.last_nexclude, 0,
	       "second call: nothing excluded (the root is the boot "
	       "volume)");
	is_int(fx.creates, 1, "second call: one CreateSnapshots");

	fx_reset();
	fx.idle_ms = 10000; /* rewarm_after's default: no longer warm */
	is_int(whole_call(h, "slow checkpoint"), AMSP_DONE, "a long checkpoint: DONE");
	is_int(fx.all_dry_runs, 2, "a long checkpoint: the DryRun before the freeze is made");

	fx_reset();
	fx.idle_ms = 50;
	fx.volume_attached = true;
	is_int(whole_call(h, "volume attached"), AMSP_DONE, "a volume attached since: DONE");
	is_int(fx.describes_with_dry_run, 1,
	       "a volume attached: the fresh mapping came with the "
	       "DryRun");
	is_int(fx.all_dry_runs, 2,
	       "a volume attached: the request planned again, and its own "
	       "DryRun made");
	is_int((int)fx.last_nexclude, 1, "a volume attached: the call excludes it");

	fx_reset();
	fx.idle_ms = 50;
	fx.volume_attached = true;
	is_int(whole_call(h, "mapping kept again"), AMSP_DONE, "the next call: DONE");
	is_int(fx.all_dry_runs, 1, "the next call: the new mapping was kept (one DryRun)");
	is_int((int)fx.last_nexclude, 1, "the next call: still excludes it");

	fx_reset();
	fx.idle_ms = 50;
	fx.dry_run_err = AMIS_E_UNAUTHORIZED_OPERATION;
	{
		struct client *cl = client_new(0);

		check_failed(h, cl, prepare(h, cl, "kept mapping denied", true),
		             "UnauthorizedOperation", "a kept mapping, the DryRun refused");
		is_int(fx.describes_with_dry_run, 1, "... the refusal came with the mapping");
		client_free(cl);
	}
	free_helper(h);
}

static void test_failures(struct helper *h)
{
	struct client *cl;

	fx_reset();
	fx.call_err = AMIS_E_INTERNAL_ERROR;
	fx.call_err_count = 1;
	cl = client_new(0);
	prepare(h, cl, "ec2 error", true);
	answer(cl);
	check_failed(h, cl, snapshot(h, cl), "InternalError", "EC2 error while frozen");
	is_int(fx.frozen_during_call, NVOL, "EC2 error: the call was made while frozen");
	client_free(cl);

	fx_reset();
	fx.call_err = AMIS_E_TIMEOUT;
	fx.call_err_count = 1;
	fx.call_makes_snapshots = true;
	cl = client_new(0);
	prepare(h, cl, "lost answer", true);
	answer(cl);
	check_failed(h, cl, snapshot(h, cl), "Timeout", "lost answer");
	is_int(fx.finds, 1, "lost answer: EC2 asked for the snapshots by tag");
	is_int(amsp_count(&cl->m, AMSP_T_SNAPSHOT_ID), NVOL, "lost answer: they are reported");
	is_str(fx.last_tag_state, "failed", "lost answer: and tagged failed");
	is_int(fx.creates, 1, "lost answer: never sent again");
	client_free(cl);

	fx_reset();
	fx.freeze_err = AMIS_E_FREEZE_FAILED;
	cl = client_new(0);
	prepare(h, cl, "freeze fails", true);
	answer(cl);
	check_failed(h, cl, snapshot(h, cl), "FreezeFailed", "a failing freeze");
	is_int(fx.creates, 0, "a failing freeze: no snapshot asked for");
	client_free(cl);

	fx_reset();
	fx.foreign_volume = true;
	fx.call_makes_snapshots = true;
	cl = client_new(0);
	prepare(h, cl, "wrong set", true);
	answer(cl);
	check_failed(h, cl, snapshot(h, cl), "UnexpectedSnapshotSet", "a wrong snapshot set");
	is_int(fx.finds, 1, "a wrong set: EC2 asked by tag what it made");
	is_int(amsp_count(&cl->m, AMSP_T_SNAPSHOT_ID), NVOL,
	       "a wrong set: the answer's and the tag's snapshots, each once");
	is_str(fx.last_tag_state, "failed", "a wrong set: tagged failed");
	client_free(cl);

	fx_reset();
	fx.dry_run_err = AMIS_E_UNAUTHORIZED_OPERATION;
	fx.dry_run_skip = 1; /* the preflight works, the re-warm before the freeze fails */
	cl = client_new(0);
	prepare(h, cl, "rewarm fails", true);
	answer(cl);
	check_failed(h, cl, snapshot(h, cl), "UnauthorizedOperation", "a failing re-warm");
	is_int(fx.freezes, 0, "a failing re-warm: nothing was frozen");
	client_free(cl);

	fx_reset();
	fx.dry_run_err = AMIS_E_UNAUTHORIZED_OPERATION;
	cl = client_new(0);
	check_failed(h, cl, prepare(h, cl, "no permission", true), "UnauthorizedOperation",
	             "a failing preflight");
	client_free(cl);

	fx_reset();
	cl = client_new(0);
	prepare(h, cl, "client gone", true);
	answer(cl);
	op_client_gone(h, &cl->c, "test: the client went away");
	is_str(status_of(h), "idle", "client gone in PREPARED: idle again");
	client_free(cl);
}

/* The inflight entries: recorded before the call, gone once the snapshots' state is final. */
static void test_inflight(struct helper *h)
{
	struct client *cl;

	fx_reset();
	cl = client_new(0);
	prepare(h, cl, "inflight ok", true);
	answer(cl);
	is_int(fx.ninflight, 0, "inflight: no entry after PREPARE (nothing can be made yet)");
	snapshot(h, cl);
	answer(cl);
	is_int(fx.ninflight, 1, "inflight: one entry once SNAPSHOT made its call");
	finish(h, cl);
	is_int(answer(cl), AMSP_DONE, "inflight: DONE");
	is_int(fx.ninflight, 0, "inflight: the entry is gone after DONE");
	client_free(cl);

	fx_reset();
	fx.call_err = AMIS_E_INTERNAL_ERROR;
	fx.call_err_count = 1;
	cl = client_new(0);
	prepare(h, cl, "inflight refused", true);
	answer(cl);
	check_failed(h, cl, snapshot(h, cl), "InternalError", "inflight: EC2 refused the call");
	is_int(fx.ninflight, 0, "inflight: a refused call (nothing made) leaves no entry");
	client_free(cl);

	fx_reset();
	fx.call_err = AMIS_E_TIMEOUT;
	fx.call_err_count = 1;
	cl = client_new(0);
	prepare(h, cl, "inflight lost", true);
	answer(cl);
	check_failed(h, cl, snapshot(h, cl), "Timeout", "inflight: a lost answer, nothing found");
	is_int(fx.ninflight, 1, "inflight: a lost answer with nothing found keeps its entry");
	client_free(cl);

	/* The next PREPARE looks: EC2 made them since, still saying started. */
	fx.leftover_started = true;
	fx.tag_calls = 0;
	fx.last_tag_state[0] = '\0';
	cl = client_new(0);
	prepare(h, cl, "inflight next", true);
	is_int(answer(cl), AMSP_PREPARED, "inflight: the next PREPARE works");
	is_int(fx.leftover_finds, 1, "inflight: it looked for the lost call's snapshots by tag");
	is_str(fx.last_tag_state, "failed", "inflight: and tagged them failed");
	is_int(fx.ninflight, 0, "inflight: the entry is gone");
	op_client_gone(h, &cl->c, "test: done");
	client_free(cl);

	/* What a helper that died left: nothing found yet, kept; too old, forgotten. */
	fx_reset();
	snprintf(fx.inflight[0], 65, "%s", "dead-helper-request-1");
	fx.ninflight = 1;
	cl = client_new(0);
	prepare(h, cl, "inflight young", true);
	answer(cl);
	is_int(fx.ninflight, 1, "inflight: an entry with nothing found yet is kept");
	op_client_gone(h, &cl->c, "test: done");
	client_free(cl);
	fx.inflight_since = time(NULL) - INFLIGHT_KEEP_S - 1;
	cl = client_new(0);
	prepare(h, cl, "inflight old", true);
	answer(cl);
	is_int(fx.ninflight, 0, "inflight: ... and forgotten once older than INFLIGHT_KEEP_S");
	op_client_gone(h, &cl->c, "test: done");
	client_free(cl);

	/* ... and settled between calls too, by the server's tick, once idle. */
	fx_reset();
	snprintf(fx.inflight[0], 65, "%s", "dead-helper-request-2");
	fx.ninflight = 1;
	fx.leftover_started = true;
	fx.leftover_image = true;
	h->resolve_at_us = 0;
	inflight_schedule(h, 0);
	ok(h->resolve_at_us != 0, "inflight: an entry on disk schedules settling when idle");
	op_tick(h);
	is_int(fx.leftover_finds, 1, "inflight: the idle tick looked for its snapshots by tag");
	is_str(fx.last_tag_state, "failed", "inflight: ... and tagged them failed");
	is_str(fx.last_tag_id, "ami-0000dead", "inflight: ... and the image it made too");
	is_int(fx.ninflight, 0, "inflight: ... and the entry is gone");
	is_int((int)(h->resolve_at_us != 0), 0, "inflight: nothing left: nothing scheduled");
	fx_reset();
	op_tick(h);
	is_int(fx.leftover_finds, 0, "inflight: no entry: the tick asks EC2 nothing");

	/* A complete backup whose tags EC2 refuses: recorded, applied before the next request. */
	fx_reset();
	fx.tags_fail = 1;
	cl = client_new(0);
	prepare(h, cl, "inflight tags", true);
	answer(cl);
	snapshot(h, cl);
	answer(cl);
	finish(h, cl);
	is_int(answer(cl), AMSP_DONE, "inflight: tags refused: the backup is still DONE");
	ok(amsp_count(&cl->m, AMSP_T_WARNING) >= 2, "inflight: ... with warnings saying so");
	is_str(fx.recorded_state, "stopped",
	       "inflight: the tags (backup-state=stopped) are recorded");
	is_int(fx.ninflight, 1, "inflight: the entry is kept");
	client_free(cl);
	fx.last_tag_state[0] = '\0';
	cl = client_new(0);
	prepare(h, cl, "inflight tags next", true);
	is_int(answer(cl), AMSP_PREPARED, "inflight: the next PREPARE works");
	is_str(fx.last_tag_state, "stopped",
	       "inflight: it applied the recorded tags (never failed)");
	is_int(fx.leftover_finds, 0, "inflight: and did not look for snapshots to tag failed");
	is_int(fx.ninflight, 0, "inflight: the entry is gone");
	op_client_gone(h, &cl->c, "test: done");
	client_free(cl);

	/* state_dir cannot record it: refused before anything is frozen or made. */
	fx_reset();
	fx.inflight_add_fails = true;
	cl = client_new(0);
	prepare(h, cl, "inflight full", true);
	answer(cl);
	check_failed(h, cl, snapshot(h, cl), "StateDir", "inflight: state_dir full");
	is_int(fx.freezes + fx.creates, 0,
	       "inflight: state_dir full: nothing frozen, nothing made");
	client_free(cl);
}

static void test_stuck_thaw(struct helper *h)
{
	struct client *cl = client_new(0), *other = client_new(0);
	int i;

	fx_reset();
	fx.thaw_failures = 3;
	prepare(h, cl, "thaw fails", true);
	answer(cl);
	is_int(snapshot(h, cl), -1, "a failing thaw: the request fails");
	is_int(answer(cl), AMSP_ERROR, "a failing thaw: ERROR");
	is_str(answer_str(cl, AMSP_T_ERROR_CODE), "ThawFailed", "a failing thaw: ThawFailed");
	is_str(status_of(h), "thaw-pending", "a failing thaw: thaw-pending");
	is_int(prepare(h, other, "meanwhile", true), -1, "thaw pending: PREPARE refused");
	answer(other);
	is_str(answer_str(other, AMSP_T_ERROR_CODE), "ThawPending", "... with ThawPending");
	for (i = 0; i < 100 && fx.frozen; i++) {
		usleep(60000);
		op_tick(h);
	}
	is_int(fx.frozen, 0, "the retried thaw worked");
	is_str(fx.last_tag_state, "failed", "once thawed, the snapshots are tagged failed");
	is_str(status_of(h), "idle", "idle once thawed");
	client_free(cl);
	client_free(other);
}

static void test_retry(void)
{
	struct helper *h = new_helper(1);
	struct client *cl = client_new(0);

	fx_reset();
	fx.call_err = AMIS_E_REQUEST_LIMIT_EXCEEDED;
	fx.call_err_count = 1;
	prepare(h, cl, "retried", true);
	answer(cl);
	is_int(snapshot(h, cl), 0, "throttled once, retries = 1: succeeds");
	is_int(answer(cl), AMSP_PENDING, "retry: PENDING");
	is_int(fx.freezes, 2, "retry: a second freeze cycle, after a thaw");
	is_int(fx.creates, 2, "retry: two calls");
	is_int(fx.frozen, 0, "retry: nothing frozen");
	is_int(simple(h, cl, AMSP_ABORT), -1, "retry: ABORT ends it");
	client_free(cl);
	free_helper(h);
}

/* The helper's log, to look for moves the state machine refuses. */
static char logpath[] = "/tmp/test_operation.log.XXXXXX";

static void check_log(void)
{
	char line[2048];
	int bugs = 0;
	FILE *f;

	fflush(stderr);
	f = fopen(logpath, "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "BUG: state")) {
			printf("# %s", line);
			bugs++;
		}
	if (f)
		fclose(f);
	ok(f != NULL, "the helper's log was captured");
	is_int(bugs, 0, "every change of state was one the state machine allows");
	unlink(logpath);
}

static void test_images(struct helper *h)
{
	struct client *cl;

	/* register: every volume in one CreateSnapshots, the image after the stop. */
	fx_reset();
	cl = client_new(0);
	is_int(prepare_image(h, cl, "ami register", "register", false), 0, "register: PREPARE");
	is_int(answer(cl), AMSP_PREPARED, "register: PREPARED");
	is_int(snapshot(h, cl), 0, "register: SNAPSHOT");
	is_int(answer(cl), AMSP_PENDING, "register: PENDING");
	ok(fx.boot_in_set, "register: the root volume is in the CreateSnapshots call");
	is_int(amsp_count(&cl->m, AMSP_T_SNAPSHOT_ID), NVOL + 1,
	       "register: PENDING lists every volume's snapshot, the root's too");
	is_int(fx.registers, 0, "register: no image before the backup stopped");
	finish(h, cl);
	is_int(answer(cl), AMSP_DONE, "register: DONE");
	is_int(fx.registers, 1, "register: one RegisterImage after the stop");
	is_str(answer_str(cl, AMSP_T_IMAGE_ID), "ami-000000a1", "register: DONE names the image");
	is_str(status_of(h), "idle", "register: idle again");
	client_free(cl);

	/* register: RegisterImage fails after the stop. */
	fx_reset();
	fx.register_fails = true;
	cl = client_new(0);
	prepare_image(h, cl, "ami register fails", "register", false);
	answer(cl);
	snapshot(h, cl);
	answer(cl);
	check_failed(h, cl, finish(h, cl), "InvalidParameterValue",
	             "register: RegisterImage fails");
	ok(strstr(answer_str(cl, AMSP_T_ERROR_MESSAGE), "restorable") != NULL,
	   "register: the error says the snapshot set is restorable");
	is_int(amsp_count(&cl->m, AMSP_T_SNAPSHOT_ID), NVOL + 1,
	       "register: the error lists the snapshots");
	is_str(fx.last_tag_state, "stopped", "register: the snapshots' backup-state is stopped");
	is_str(fx.last_image_state_tag, "failed",
	       "register: the snapshots are tagged image-state=failed");
	client_free(cl);

	/* register: billing product codes are refused, unless allowed. */
	fx_reset();
	fx.billing = true;
	cl = client_new(0);
	check_failed(h, cl, prepare_image(h, cl, "ami rhel", "register", false),
	             "BillingProductCodes", "register: a RHEL instance is refused");
	ok(strstr(answer_str(cl, AMSP_T_ERROR_MESSAGE), "'create'") != NULL,
	   "register: the refusal names the create method");
	is_int(fx.creates, 0, "register: refused before any snapshot");
	client_free(cl);
	cl = client_new(0);
	is_int(prepare_image(h, cl, "ami rhel", "register", true), 0,
	       "register: allow_product_code_loss overrides the refusal");
	is_int(answer(cl), AMSP_PREPARED, "register: PREPARED with the override");
	op_client_gone(h, &cl->c, "test");
	client_free(cl);
	fx.billing = false;

	fx_reset();
	fx.name_taken = true;
	cl = client_new(0);
	check_failed(h, cl, prepare_image(h, cl, "ami taken", "create", false), "ImageNameInUse",
	             "an image name in use is refused at PREPARE");
	client_free(cl);

	/* create: CreateImage while frozen, frozen until its snapshots exist. */
	fx_reset();
	fx.billing = true; /* create keeps the billing codes: not refused */
	cl = client_new(0);
	is_int(prepare_image(h, cl, "ami create", "create", false), 0, "create: PREPARE");
	is_int(answer(cl), AMSP_PREPARED, "create: PREPARED (billing codes are kept)");
	is_int(snapshot(h, cl), 0, "create: SNAPSHOT");
	is_int(answer(cl), AMSP_PENDING, "create: PENDING");
	is_int(fx.image_creates, 1, "create: one CreateImage");
	is_int(fx.image_frozen, NVOL, "create: made while the filesystems were frozen");
	ok(fx.image_polls >= 2, "create: DescribeImages until the snapshots showed (%d)",
	   fx.image_polls);
	is_int(fx.creates, 0, "create: no CreateSnapshots");
	is_str(answer_str(cl, AMSP_T_IMAGE_ID), "ami-000000c1", "create: PENDING names the image");
	is_int(fx.frozen, 0, "create: thawed");
	finish(h, cl);
	is_int(answer(cl), AMSP_DONE, "create: DONE");
	client_free(cl);

	/* create: the snapshots never show up: thawed at the deadline, deregistered. */
	fx_reset();
	fx.image_never_ready = true;
	cfg.freeze_timeout_ms = 300;
	cl = client_new(0);
	prepare_image(h, cl, "ami create late", "create", false);
	answer(cl);
	check_failed(h, cl, snapshot(h, cl), "ImageTimeout", "create: the snapshots never show");
	is_int(fx.deregisters, 1, "create: the half-made image is deregistered");
	ok(strstr(answer_str(cl, AMSP_T_ERROR_MESSAGE), "deregistered") != NULL,
	   "create: the error says so");
	is_str(answer_str(cl, AMSP_T_IMAGE_ID), "ami-000000c1",
	       "create: the error names the image");
	cfg.freeze_timeout_ms = 10000;
	client_free(cl);
}

/* CHECK with paths (the three of prepare(), or these); its answer's type. */
static int check_req(struct helper *h, struct client *cl, const char *ts)
{
	struct amsp_writer w;
	char id[64];

	snprintf(id, sizeof(id), "0b5e0000-0000-4000-8000-%012d", ++reqno);
	amsp_begin(&w, frame, sizeof(frame), AMSP_CHECK);
	amsp_put_str(&w, AMSP_T_REQUEST_ID, id);
	amsp_put_str(&w, AMSP_T_PATH_DATA, "/mnt/data");
	amsp_put_str(&w, AMSP_T_PATH_WAL, "/mnt/wal");
	amsp_put_str(&w, AMSP_T_PATH_TABLESPACE, ts);
	is_int(ask(h, cl, &w), -1, "CHECK: answered, and the conversation ends");
	return answer(cl);
}

/* The row called name of the CHECK_REPLY in cl: its index, or -1. */
static int row_of(struct client *cl, const char *name)
{
	size_t i;
	char s[65];

	for (i = 0; i < amsp_count(&cl->m, AMSP_T_CHECK_NAME); i++) {
		amsp_copy_str(amsp_get_nth(&cl->m, AMSP_T_CHECK_NAME, i), s, sizeof(s));
		if (!strcmp(s, name))
			return (int)i;
	}
	return -1;
}

static const char *row_field(struct client *cl, const char *name, enum amsp_tag tag)
{
	static char s[AMSP_CHECK_TEXT + 1];
	int i = row_of(cl, name);

	s[0] = '\0';
	if (i >= 0)
		amsp_copy_str(amsp_get_nth(&cl->m, tag, (size_t)i), s, sizeof(s));
	return s;
}

static void test_check(struct helper *h)
{
	struct client *cl = client_new(0), *other = client_new(0);
	int type;

	fx_reset();
	type = check_req(h, cl, "/mnt/ts1");
	is_int(type, AMSP_CHECK_REPLY, "CHECK: CHECK_REPLY");
	is_str(answer_str(cl, AMSP_T_HELPER_VERSION), AMIS_VERSION, "CHECK: the helper's version");
	is_str(row_field(cl, "path: data directory", AMSP_T_CHECK_RESULT), "ok",
	       "CHECK: the data directory resolves (%s)",
	       row_field(cl, "path: data directory", AMSP_T_CHECK_DETAIL));
	is_str(row_field(cl, "path: tablespace 1", AMSP_T_CHECK_RESULT), "ok",
	       "CHECK: the tablespace resolves");
	is_str(row_field(cl, "filesystems", AMSP_T_CHECK_RESULT), "ok", "CHECK: the freeze plan");
	is_str(row_field(cl, "state_dir", AMSP_T_CHECK_RESULT), "ok", "CHECK: state_dir");
	is_str(row_field(cl, "configuration", AMSP_T_CHECK_RESULT), "failed",
	       "CHECK: the configuration file is read again (/nonexistent: failed)");
	ok(strstr(row_field(cl, "configuration", AMSP_T_CHECK_DETAIL), "/nonexistent") != NULL,
	   "CHECK: ... naming the file");
	is_str(row_field(cl, "caller", AMSP_T_CHECK_RESULT), "ok", "CHECK: the caller");
	is_str(row_field(cl, "ec2:CreateSnapshots", AMSP_T_CHECK_RESULT), "ok",
	       "CHECK: the CreateSnapshots DryRun");
	is_str(row_field(cl, "volumes attached", AMSP_T_CHECK_RESULT), "ok",
	       "CHECK: DescribeInstances, the volumes attached");
	is_str(row_field(cl, "ec2:CreateTags", AMSP_T_CHECK_RESULT), "ok",
	       "CHECK: the worker's rows are in the answer");
	is_int(fx.checks, 1, "CHECK: one W_CHECK");
	is_str(fx.check_volume, "vol-00000001", "CHECK: W_CHECK names a database volume");
	ok(strstr(fx.check_actions, "CreateTags ") &&
	       strstr(fx.check_actions, "DescribeInstances ") &&
	       !strstr(fx.check_actions, "CreateImage ") &&
	       !strstr(fx.check_actions, "CreateVolume "),
	   "CHECK: the actions of snapshot sets, not an AMI's nor the drill's (%s)",
	   fx.check_actions);
	is_int(fx.all_dry_runs, 1, "CHECK: one CreateSnapshots DryRun");
	is_int(fx.creates + fx.freezes + fx.tag_calls, 0,
	       "CHECK: nothing frozen, no snapshot made, nothing tagged");
	is_int(fx.frozen_during_check, 0, "CHECK: nothing frozen during the worker's checks");
	is_str(status_of(h), "idle", "CHECK: idle afterwards");

	/* A path outside the allow-list: its row fails, the others still come. */
	cl = (client_free(cl), client_new(0));
	fx_reset();
	is_int(check_req(h, cl, "/forbidden/ts"), AMSP_CHECK_REPLY, "CHECK, a path not allowed");
	is_str(row_field(cl, "path: tablespace 1", AMSP_T_CHECK_RESULT), "failed",
	       "CHECK: the path outside the allow-list fails");
	ok(strstr(row_field(cl, "path: tablespace 1", AMSP_T_CHECK_HINT), "[filesystems] allow") !=
	       NULL,
	   "CHECK: ... its hint names [filesystems] allow");
	is_str(row_field(cl, "path: data directory", AMSP_T_CHECK_RESULT), "ok",
	       "CHECK: ... the other paths still checked");
	ok(row_of(cl, "ec2:CreateSnapshots") >= 0, "CHECK: ... and EC2 still checked");

	/* A denied permission, and the CreateSnapshots DryRun refused. */
	cl = (client_free(cl), client_new(0));
	fx_reset();
	fx.denied_action = "CreateTags";
	fx.dry_run_err = AMIS_E_UNAUTHORIZED_OPERATION;
	check_req(h, cl, "/mnt/ts1");
	is_str(row_field(cl, "ec2:CreateTags", AMSP_T_CHECK_RESULT), "failed",
	       "CHECK: a denied action fails");
	is_str(row_field(cl, "ec2:CreateSnapshots", AMSP_T_CHECK_RESULT), "failed",
	       "CHECK: CreateSnapshots' DryRun refused fails");
	ok(strstr(row_field(cl, "ec2:CreateSnapshots", AMSP_T_CHECK_HINT), "ec2:CreateSnapshots") !=
	       NULL,
	   "CHECK: ... its hint names the IAM action");
	is_str(status_of(h), "idle", "CHECK: idle after the failed checks");

	/* Refused while a snapshot operation runs; refused twice on one connection. */
	cl = (client_free(cl), client_new(0));
	fx_reset();
	prepare(h, other, "busy", true);
	answer(other);
	is_int(check_req(h, cl, "/mnt/ts1"), AMSP_ERROR, "CHECK during an operation: ERROR");
	is_str(answer_str(cl, AMSP_T_ERROR_CODE), "Busy", "... Busy");
	{
		struct client *o = client_new(0);

		simple(h, o, AMSP_STATUS);
		is_int(answer(o), AMSP_STATUS_REPLY, "STATUS during an operation");
		is_str(answer_str(o, AMSP_T_STEP), "prepared", "STATUS: the live step");
		client_free(o);
	}
	simple(h, other, AMSP_ABORT);
	is_str(status_of(h), "idle", "idle after the ABORT");
	is_int(fx.checks, 0, "no W_CHECK while busy");
	client_free(cl);
	client_free(other);
}

/* A set taken on a hot standby: its tags, and the fields refused. */
static void test_standby(struct helper *h)
{
	struct client *cl = client_new(0);

	fx_reset();
	standby_flag = 1, standby_host = "/run/postgresql:5433", standby_sync = "async";
	is_int(prepare(h, cl, "from a standby", true), 0, "standby: PREPARE");
	is_int(answer(cl), AMSP_PREPARED, "standby: PREPARED");
	snapshot(h, cl);
	is_int(answer(cl), AMSP_PENDING, "standby: PENDING");
	is_str(fx.standby_tags,
	       "ami-snapshot:taken-from=standby;ami-snapshot:primary-host=/run/postgresql:5433;"
	       "ami-snapshot:standby-sync-state=async;",
	       "standby: CreateSnapshots tags taken-from, primary-host and standby-sync-state");
	finish(h, cl);
	is_int(answer(cl), AMSP_DONE, "standby: DONE");

	cl = (client_free(cl), client_new(0));
	standby_flag = -1, standby_host = NULL, standby_sync = NULL;
	prepare(h, cl, "from a primary", true);
	answer(cl);
	snapshot(h, cl);
	answer(cl);
	is_str(fx.standby_tags, "", "a primary's set: no standby tag");
	finish(h, cl);
	answer(cl);

	cl = (client_free(cl), client_new(0));
	standby_flag = 1, standby_sync = "maybe";
	check_failed(h, cl, prepare(h, cl, "bad sync state", true), "InvalidRequest",
	             "standby: an unknown sync state");
	cl = (client_free(cl), client_new(0));
	standby_flag = -1, standby_host = "db1:5432", standby_sync = NULL;
	check_failed(h, cl, prepare(h, cl, "host without standby", true), "InvalidRequest",
	             "a primary host without STANDBY");
	cl = (client_free(cl), client_new(0));
	standby_flag = 1, standby_host = "db1\t:5432";
	check_failed(h, cl, prepare(h, cl, "host with a tab", true), "InvalidRequest",
	             "standby: a control character in the host");
	standby_flag = -1, standby_host = NULL, standby_sync = NULL;
	client_free(cl);
}

int main(void)
{
	struct helper *h;
	int fd = mkstemp(logpath);

	if (fd < 0 || dup2(fd, STDERR_FILENO) < 0)
		return 1;
	close(fd);
	h = new_helper(0);

	test_whole_call(h);
	test_failures(h);
	test_inflight(h);
	test_stuck_thaw(h);
	test_images(h);
	test_check(h);
	test_standby(h);
	free_helper(h);
	test_round_trips();
	test_retry();
	check_log();
	return done_testing();
}
