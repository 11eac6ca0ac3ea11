/*
 * restore.h - `ami-snapshot restore`: bring a database back from a snapshot
 * set or an AMI (doc/restore.md).
 *
 * The command is a one-shot program run by root on the instance that
 * restores (doc/design.md, "The restore command").  Its parts, each tested
 * on its own (test/unit/test_restore_*.c):
 *
 *   rs_ec2.c     the EC2 calls it makes beyond the helper's: DescribeSnapshots
 *                with tags, DescribeImages, CreateVolume, DescribeVolumes,
 *                AttachVolume, DetachVolume, DeleteVolume;
 *   rs_set.c     the snapshots' tags, grouping them into sets, choosing one,
 *                and the checks that refuse a set (exit codes below);
 *   rs_devices.c where an attached volume appears (by-id link, NVMe serial,
 *                Xen name), and mounting;
 *   rs_pgdata.c  preparing the data directory: crash recovery or PITR files,
 *                symlinks moved under --root, the configuration files
 *                captured at backup time put back;
 *   restore.c    the command: options, the steps, the cleanup on failure.
 */
#ifndef AMIS_RESTORE_H
#define AMIS_RESTORE_H

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stddef.h>
#include <sys/types.h>

#include "util.h"

/* Exit codes of `ami-snapshot restore` (doc/restore.md, "Exit codes"). */
enum rs_exit {
	RS_EXIT_OK = 0,
	RS_EXIT_ERROR = 1,           /* anything else: EC2, IMDS, the system */
	RS_EXIT_USAGE = 2,           /* bad options */
	RS_EXIT_NOT_FOUND = 3,       /* no set (or image) matches */
	RS_EXIT_AMBIGUOUS = 4,       /* several sets match and none is preferred */
	RS_EXIT_TAGS = 5,            /* tags missing or inconsistent */
	RS_EXIT_INCOMPLETE = 6,      /* fewer snapshots than ami-snapshot:volume-count */
	RS_EXIT_BACKUP_STATE = 7,    /* backup-state is not stopped (and no --force) */
	RS_EXIT_NOT_COMPLETED = 8,   /* snapshots not completed (and no --wait) */
	RS_EXIT_PG_VERSION = 9,      /* the PostgreSQL major here differs */
	RS_EXIT_MOUNT_BUSY = 10,     /* a mount point is in use or not empty */
	RS_EXIT_DEVICE_TIMEOUT = 11, /* an attached volume's device never appeared */
	RS_EXIT_DATA_DIR = 12,       /* the data directory could not be prepared */
	RS_EXIT_ASSEMBLE = 13,       /* attached; LVM/md to assemble, then --attached */
};

/* ---- Snapshots and their tags (rs_set.c). ---- */

#define RS_TAG_PREFIX "ami-snapshot:"
#define RS_MAX_TAGS 64
#define RS_TAG_KEY_MAX 128
#define RS_TAG_VALUE_MAX 256

struct rs_tag {
	char key[RS_TAG_KEY_MAX + 1];
	char value[RS_TAG_VALUE_MAX + 1];
};

struct rs_snapshot {
	char snapshot_id[32];
	char volume_id[32];
	char state[16]; /* pending | completed | error; "" unknown */
	char start_time[40];
	long long size_gib; /* -1 unknown */
	size_t ntags;
	struct rs_tag tags[RS_MAX_TAGS];
};

struct rs_snapshot_list {
	size_t n, cap;
	struct rs_snapshot *items;
};

void rs_list_init(struct rs_snapshot_list *l);
void rs_list_free(struct rs_snapshot_list *l);
/* A new zeroed entry at the end. */
struct rs_snapshot *rs_list_add(struct rs_snapshot_list *l);

/* The value of tag key (the full key, "ami-snapshot:name"), or NULL. */
const char *rs_tag(const struct rs_snapshot *s, const char *key);
/* The same with RS_TAG_PREFIX prepended: rs_atag(s, "name"). */
const char *rs_atag(const struct rs_snapshot *s, const char *name);

/*
 * Decodes the base64 chunks "<prefix>1", "<prefix>2", ... (each chunk its
 * own base64 text, as the helper writes them) and concatenates them into
 * out (reset first): byte for byte what pg_backup_stop returned.  No chunk
 * is success with an empty out and *found = false.  A gap in the numbers or
 * invalid base64 fails.
 */
int rs_decode_chunks(const struct rs_snapshot *s, const char *prefix, struct strbuf *out,
                     bool *found, struct amis_err *err);
/* Strict base64 (RFC 4648, padding required) of src into out (appended). */
int rs_base64_decode(const char *src, struct strbuf *out);

/* One set: the snapshots sharing an ami-snapshot:request-id. */
struct rs_set {
	char request_id[80];
	char name[RS_TAG_VALUE_MAX + 1];
	char backup_state[16];
	char start_time[40]; /* the earliest snapshot's */
	size_t n;
	struct rs_snapshot **snaps; /* into the list they came from */
};

struct rs_sets {
	size_t n;
	struct rs_set *items;
};

/* Groups list by request id (snapshots without one are left out), newest set first. */
void rs_group(struct rs_snapshot_list *list, struct rs_sets *out);
void rs_sets_free(struct rs_sets *s);

/*
 * The set to restore among sets (all of one name, or of one request id):
 * the newest whose backup-state is "stopped"; with force, the newest of any
 * state.  None: RS_EXIT_NOT_FOUND (err says which sets exist and in what
 * state).  Returns an rs_exit code, 0 with *chosen set.
 */
int rs_choose(const struct rs_sets *sets, bool force, const struct rs_set **chosen,
              struct amis_err *err);

/* What the checks need to know about this machine and the options. */
struct rs_check_opts {
	bool force;         /* accept a backup-state other than stopped */
	bool need_layout;   /* mount-point, fstype needed (not --attached) */
	bool pitr;          /* backup-label tags needed */
	int local_pg_major; /* the PostgreSQL major here; 0 skips the check */
};

/*
 * The checks before anything is created: every snapshot tagged (request id,
 * backup state, pg version, system identifier, data directory, volume
 * count; the layout tags when mounting), tags that must agree do, the set
 * complete (volume-count snapshots), the backup state stopped (unless
 * force), the PostgreSQL major equal to the local one.  Snapshots without a
 * mount-point tag (an AMI's root volume) count toward completeness but are
 * not restored.  Returns an rs_exit code (0: fine); err says why.
 */
int rs_check_set(const struct rs_set *set, const struct rs_check_opts *o, struct amis_err *err);

/* Whether every snapshot of set that will be restored is completed; names the first that is not. */
bool rs_set_completed(const struct rs_set *set, char *not_completed, size_t sz);

/* PostgreSQL's major of a server_version_num (150014 -> 15, 90624 -> 9), or 0. */
int rs_pg_major(const char *version_num);
/* The major of "postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)", or 0. */
int rs_pg_major_of_version_output(const char *text);

/* ---- EC2 (rs_ec2.c). ---- */

struct rs_aws;

/* The image's snapshots, from DescribeImages' block device mapping. */
#define RS_MAX_IMAGE_SNAPSHOTS 64
struct rs_image {
	char image_id[32];
	char state[24];
	size_t n;
	char snapshot_ids[RS_MAX_IMAGE_SNAPSHOTS][32];
	char device_names[RS_MAX_IMAGE_SNAPSHOTS][64];
};

struct rs_create_volume_req {
	const char *snapshot_id;
	const char *availability_zone;
	const char *volume_type;    /* NULL: gp3 */
	long iops;                  /* 0: the type's default */
	long throughput;            /* MiB/s, 0: default */
	long long size_gib;         /* 0: the snapshot's size */
	const char *client_token;   /* idempotency: a retried call makes no second volume */
	const char *request_id;     /* tagged ami-snapshot:request-id */
	const char *name;           /* tagged Name */
	const char *drill_id;       /* verify: tagged ami-snapshot:drill */
	const char *drill_instance; /* verify: tagged ami-snapshot:drill-instance */
};

struct rs_volume_state {
	char volume_id[32];
	char status[24];       /* creating | available | in-use | deleting | error ... */
	char attach_state[24]; /* attaching | attached | detaching | detached | "" */
	char instance_id[32];  /* of the attachment */
	char device[64];       /* of the attachment */
};

/* The XML side, without HTTP (exposed for tests). */
struct _xmlDoc;
int rs_parse_snapshots(struct _xmlDoc *doc, struct rs_snapshot_list *out, char *next_token,
                       size_t ntsz, struct amis_err *err);
int rs_parse_image(struct _xmlDoc *doc, const char *image_id, struct rs_image *out,
                   struct amis_err *err);
int rs_parse_volume_id(struct _xmlDoc *doc, char *volume_id, size_t sz, struct amis_err *err);
int rs_parse_volumes(struct _xmlDoc *doc, struct rs_volume_state *out, size_t max, size_t *n,
                     struct amis_err *err);

/*
 * The AWS context of the command: the helper's (worker/aws.h: region,
 * instance id, endpoint and credentials from the configuration's [aws],
 * the environment and IMDS) and, when need_zone, the availability zone
 * from IMDS.
 */
struct helper_config;
struct rs_aws *rs_aws_new(const struct helper_config *cfg);
void rs_aws_free(struct rs_aws *a);
int rs_aws_ready(struct rs_aws *a, bool need_zone, struct amis_err *err);
const char *rs_aws_instance_id(const struct rs_aws *a);
const char *rs_aws_zone(const struct rs_aws *a);
/* A client on endpoint/region for tests, with fixed credentials. */
struct rs_aws *rs_aws_new_static(const char *endpoint, const char *region, const char *akid,
                                 const char *secret, const char *instance_id, const char *zone);

/* DescribeSnapshots, Owner=self, filtered on tag key = value (all pages). */
int rs_describe_snapshots_by_tag(struct rs_aws *a, const char *key, const char *value,
                                 struct rs_snapshot_list *out, struct amis_err *err);
/* DescribeSnapshots of ids (with tags). */
int rs_describe_snapshots_by_id(struct rs_aws *a, const char *const *ids, size_t n,
                                struct rs_snapshot_list *out, struct amis_err *err);
int rs_describe_image(struct rs_aws *a, const char *image_id, struct rs_image *out,
                      struct amis_err *err);
int rs_create_volume(struct rs_aws *a, const struct rs_create_volume_req *req, char *volume_id,
                     size_t sz, struct amis_err *err);
int rs_describe_volumes(struct rs_aws *a, const char *const *ids, size_t n,
                        struct rs_volume_state *out, struct amis_err *err);
int rs_attach_volume(struct rs_aws *a, const char *volume_id, const char *device,
                     struct amis_err *err);
int rs_detach_volume(struct rs_aws *a, const char *volume_id, struct amis_err *err);
int rs_delete_volume(struct rs_aws *a, const char *volume_id, struct amis_err *err);
/* The device names in use on this instance (DescribeInstances), one per line in out. */
int rs_instance_devices(struct rs_aws *a, struct strbuf *out, struct amis_err *err);

/* CreateTags: key = value on each of ids (snapshots, images). */
int rs_create_tags(struct rs_aws *a, const char *const *ids, size_t n, const char *key,
                   const char *value, struct amis_err *err);
/* DescribeVolumes filtered on tag key = value, at most max into out (*n of them). */
int rs_describe_volumes_by_tag(struct rs_aws *a, const char *key, const char *value,
                               struct rs_volume_state *out, size_t max, size_t *n,
                               struct amis_err *err);

/* The AMI drill (verify --launch): one instance from an image, tagged for the drill. */
struct rs_run_instance_req {
	const char *image_id;
	const char *instance_type;     /* NULL: t3.micro */
	const char *subnet_id;         /* NULL: EC2's default */
	const char *security_group_id; /* NULL: the default group */
	const char *key_name;          /* NULL: none */
	const char *client_token;
	const char *drill_id;       /* tagged ami-snapshot:drill and Name */
	const char *drill_instance; /* tagged ami-snapshot:drill-instance */
};
struct rs_instance {
	char instance_id[32];
	char state[24];           /* pending running shutting-down terminated ... */
	char instance_status[24]; /* ok impaired initializing insufficient-data ...; "" */
	char system_status[24];
	char private_ip[64];
};
int rs_run_instance(struct rs_aws *a, const struct rs_run_instance_req *r, char *instance_id,
                    size_t sz, struct amis_err *err);
/* DescribeInstances (state, private IP) and DescribeInstanceStatus (both checks). */
int rs_instance_status(struct rs_aws *a, const char *instance_id, struct rs_instance *out,
                       struct amis_err *err);
int rs_terminate_instance(struct rs_aws *a, const char *instance_id, struct amis_err *err);
/* DescribeInstances filtered on tag key = value: ids and states. */
int rs_instances_by_tag(struct rs_aws *a, const char *key, const char *value,
                        struct rs_instance *out, size_t max, size_t *n, struct amis_err *err);

/* ---- Devices and mounts (rs_devices.c). ---- */

struct rs_dev_paths {
	const char *by_id_dir; /* "/dev/disk/by-id" */
	const char *sysfs;     /* "/sys" */
	const char *devroot;   /* "/dev" */
};
extern const struct rs_dev_paths rs_dev_paths_default;

/*
 * The block device of an attached EBS volume, into dev: the by-id link
 * nvme-Amazon_Elastic_Block_Store_<vol without dash> resolved; else the
 * NVMe namespace whose serial is the volume id; else, if ec2_device is
 * "/dev/sdX", the Xen disk "/dev/xvdX" when it exists.  partition > 0 names
 * that partition of it.  Returns 0, or -1 when not (yet) there.
 */
int rs_find_device(const struct rs_dev_paths *p, const char *volume_id, const char *ec2_device,
                   int partition, char *dev, size_t devsz);

/* "/dev/nvme1n1" + 1 -> "/dev/nvme1n1p1"; "/dev/xvdf" + 1 -> "/dev/xvdf1". */
void rs_partition_name(const char *disk, int partition, char *out, size_t outsz);

/*
 * Whether /dev/sdX is taken by a name in used (one per line): /dev/sdX,
 * /dev/sdXN, /dev/xvdX or "sdX".
 */
bool rs_device_name_used(const char *used, const char *sd_name);
/* The first of /dev/sdf../dev/sdp that used does not take. */
int rs_free_device_name(const char *used, char *out, size_t outsz);

/* Whether path is a mount point (per mountinfo, which may be a fixture). */
bool rs_is_mount_point(const char *mountinfo, const char *path);
/* Whether dir exists and has anything in it. */
bool rs_dir_nonempty(const char *dir);
/* Creates dir and its missing parents (0755). */
int rs_mkdirs(const char *dir, struct amis_err *err);

/* ---- The data directory (rs_pgdata.c). ---- */

struct rs_relocation {
	const char *from; /* original mount point */
	const char *to;   /* where it is now */
};

struct rs_recovery {
	const char *restore_command;
	const char *target_time;
	const char *target_lsn;
	const char *target_name;
	bool target_immediate;
	const char *target_action; /* NULL: promote */
};

/* Moves original to a path under a relocation, into out; 0 if one applies, -1 otherwise. */
int rs_relocate(const struct rs_relocation *r, size_t n, const char *path, char *out, size_t outsz);

/*
 * Prepares pgdata for crash recovery as a new primary: removes
 * postmaster.pid, backup_label and tablespace_map (a snapshot has none; one
 * there would make PostgreSQL wait for an end-of-backup record that is not
 * in pg_wal), and standby.signal (a set taken on a standby comes back as a
 * primary).  Reports what it did on report (one line each).
 */
int rs_prepare_crash(const char *pgdata, struct strbuf *report, struct amis_err *err);

/*
 * Prepares pgdata to start as a standby (--as-standby): as for crash
 * recovery, but standby.signal is created (or kept) and, when conninfo is
 * given, primary_conninfo is appended to postgresql.auto.conf (the report
 * never shows its value: it may hold a password).  Without conninfo the
 * data directory's own primary_conninfo applies.  Files are owned by uid:gid.
 */
int rs_prepare_standby(const char *pgdata, const char *conninfo, uid_t uid, gid_t gid,
                       struct strbuf *report, struct amis_err *err);

/*
 * Prepares pgdata for point-in-time recovery: postmaster.pid removed,
 * backup_label = label (byte for byte), tablespace_map = map when given
 * (relocated through r when nrel > 0), recovery.signal, and the recovery
 * settings appended to postgresql.auto.conf.  Files are owned by uid:gid.
 */
int rs_prepare_pitr(const char *pgdata, const char *label, size_t label_len, const char *map,
                    size_t map_len, const struct rs_relocation *r, size_t nrel,
                    const struct rs_recovery *rec, uid_t uid, gid_t gid, struct strbuf *report,
                    struct amis_err *err);

/* The recovery settings block appended to postgresql.auto.conf (for tests). */
void rs_recovery_settings(const struct rs_recovery *rec, struct strbuf *out);
/* The tablespace map with its paths relocated (for tests). */
int rs_relocate_map(const char *map, size_t len, const struct rs_relocation *r, size_t n,
                    struct strbuf *out, struct amis_err *err);

/* Points pg_wal and the links in pg_tblspc of pgdata through the relocations. */
int rs_relink(const char *pgdata, const struct rs_relocation *r, size_t n, uid_t uid, gid_t gid,
              struct strbuf *report, struct amis_err *err);

/*
 * Puts back the configuration files captured at backup time (the manifest
 * pgdata/ami_snapshot/config/manifest and the copies under .../files/):
 * each at config_root + its original path ("" or NULL: the original path),
 * mode, owner and group as recorded (an unknown user: the data directory's
 * owner).  An existing file that differs is kept as <file>.before-restore.
 * No manifest: nothing to do, *count = 0.  main_conf (may be NULL): where
 * the first file called postgresql.conf went, "" if none.
 */
int rs_restore_config(const char *pgdata, const char *config_root, uid_t fallback_uid,
                      gid_t fallback_gid, size_t *count, char *main_conf, size_t main_conf_sz,
                      struct strbuf *report, struct amis_err *err);

/*
 * Whether p is an absolute path without an empty, "." or ".." component
 * ("/" is one): paths from tags and from the manifest must not climb out of
 * --root or --config-root.
 */
bool rs_safe_abs_path(const char *p);

/* Writes len bytes to path (temporary file, fsync, rename), mode, owner. */
int rs_write_file(const char *path, const char *data, size_t len, mode_t mode, uid_t uid, gid_t gid,
                  struct amis_err *err);

/* ---- The command (restore.c), its steps shared with verify (verify.c). ---- */

/* The options of a restore; verify fills them itself. */
#define RS_MAX_VOLUMES 32

struct rs_opts {
	const char *config;
	const char *request_id, *name, *image;
	const char *root;
	bool attached, pitr, force, wait, list, allow_nonempty, no_config, cleanup;
	bool as_standby;              /* --as-standby: standby.signal, not a new primary */
	const char *primary_conninfo; /* --primary-conninfo (with --as-standby) */
	long wait_timeout_s, device_timeout_s;
	const char *volume_type;
	long iops, throughput;
	long long size_gib;
	const char *device_dir;
	const char *config_root;
	const char *pg_bindir;
	const char *mountinfo;
	struct rs_recovery rec;
	const char *drill_id;      /* verify: tagged ami-snapshot:drill (and drill-instance) */
	bool no_start_hint;        /* verify: rs_prepare prints no start command */
	bool (*should_stop)(void); /* verify: polled in the waits; true ends them (a timeout) */
};

/* One volume of the restore, and what this run did with it. */
struct rs_vol {
	struct rs_snapshot *snap;
	const char *mount_point; /* tagged */
	const char *fstype;
	int partition;
	int fs_volumes;
	char target[PATH_MAX]; /* where it is mounted */
	char volume_id[32];    /* created */
	char device_name[64];  /* attached at */
	char device[PATH_MAX]; /* the block device */
	bool created, attached, mounted;
};

struct rs_run {
	struct rs_opts o;
	struct rs_aws *aws;
	size_t n;
	struct rs_vol v[RS_MAX_VOLUMES];
	char pg_bindir[PATH_MAX];
	char pgdata[PATH_MAX]; /* rs_prepare: the data directory prepared */
};

/*
 * The steps, in order; each returns an rs_exit code (or -1 where noted) and
 * says why in err.  rs_select: find, choose and check the set, plan its
 * volumes (quiet: print nothing).  rs_materialize: create, attach, find the
 * devices, mount.  rs_prepare: the data directory (r->pgdata).  rs_release:
 * undo what r made (unmount, detach, delete), a line each on out; how many
 * things are left.
 */
int rs_select(struct rs_run *r, struct rs_snapshot_list *list, struct rs_sets *sets,
              const struct rs_set **chosen, bool quiet, struct amis_err *err);
int rs_materialize(struct rs_run *r, const struct rs_set *set, struct amis_err *err);
int rs_prepare(struct rs_run *r, const struct rs_set *set, struct amis_err *err);
int rs_release(struct rs_run *r, FILE *out);
/* The smaller steps, in case a caller needs one alone. */
int rs_find_set(struct rs_run *r, struct rs_snapshot_list *list, struct amis_err *err);
int rs_local_pg(struct rs_run *r, int tagged_major);
int rs_wait_completed(struct rs_run *r, const struct rs_set *set, struct amis_err *err);
int rs_plan(struct rs_run *r, const struct rs_set *set, struct amis_err *err);
int rs_check_target(struct rs_run *r, const struct rs_vol *v, struct amis_err *err);
int rs_create_volumes(struct rs_run *r, const struct rs_set *set, struct amis_err *err);
int rs_attach_volumes(struct rs_run *r, struct amis_err *err);
int rs_wait_devices(struct rs_run *r, struct amis_err *err);
int rs_mount_volumes(struct rs_run *r, struct amis_err *err);

int rs_restore_main(int argc, char **argv, const char *default_config);

#endif
