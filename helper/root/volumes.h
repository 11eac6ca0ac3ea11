/*
 * volumes.h - map database paths to filesystems, block devices and EBS
 * volume ids, and build the freeze plan.
 *
 * Nothing here needs root or touches a filesystem's state: it only reads
 * mountinfo and sysfs, through a struct sys_paths so that unit tests can
 * point it at fixture trees.  The root-only part (FIFREEZE/FITHAW) is
 * freeze.c.
 *
 * How a volume id is found (doc/design.md, "Finding the volumes"):
 *   1. a user override from the helper configuration (VOLUMES_OVERRIDE_SECTION),
 *      matched against the kernel name of the disk ("loop3"), "/dev/loop3",
 *      or any /dev symlink resolving to it ("/dev/disk/by-id/...");
 *   2. Nitro: an EBS volume is an NVMe namespace whose controller model is
 *      "Amazon Elastic Block Store" and whose serial is the volume id without
 *      its dash ("vol0123456789abcdef0", space padded);
 *   3. Xen: xvdX is the block device mapping name /dev/sdX; the volume id is
 *      left empty and ec2_device_name is filled, for the caller to look up in
 *      DescribeInstances' blockDeviceMapping (freeze_plan_set_device_volume).
 * Anything else (instance store, loop, virtio, ...) is a clear error.
 */
#ifndef AMIS_VOLUMES_H
#define AMIS_VOLUMES_H

#include "util.h"

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>

/*
 * Where users name a device's volume id in the helper configuration
 * (packaging/helper.conf.example: "/dev/xvdf = vol-..." lines).
 */
#define VOLUMES_OVERRIDE_SECTION "[volumes]"

#define FS_TARGET_MAX_DISKS 32
#define FREEZE_PLAN_MAX_FS 32
#define FREEZE_PLAN_MAX_DISKS 64

/*
 * Where the system views live; tests point these into fixture trees.  The
 * one style of the helper's test hooks for the system it reads: a struct
 * sys_paths parameter (volumes.c, marker.c), the real one being
 * volumes_sys_paths_default.
 */
struct sys_paths {
	const char *sysfs;     /* "/sys" */
	const char *mountinfo; /* "/proc/self/mountinfo" */
	const char *devroot;   /* "/dev" */
	const char *boot_id;   /* "/proc/sys/kernel/random/boot_id" (the frozen marker) */
	/*
	 * Fixture mode: take the path literally (it must be absolute; "//" and
	 * a trailing "/" are tidied) instead of realpath() and stat() on the
	 * real filesystem.
	 */
	bool literal_path;
};

/* The real system. */
extern const struct sys_paths volumes_sys_paths_default;

enum fs_disk_id_source {
	FS_DISK_ID_NONE = 0,
	FS_DISK_ID_OVERRIDE, /* from the configuration */
	FS_DISK_ID_NVME,     /* Nitro NVMe serial */
	FS_DISK_ID_XEN,      /* volume_id empty; match ec2_device_name */
};

struct fs_disk {
	char name[64];            /* kernel name of the whole disk: "nvme1n1" */
	char volume_id[32];       /* "vol-0123456789abcdef0", or "" (Xen) */
	char ec2_device_name[64]; /* Xen: "/dev/sdf"; "" otherwise */
	enum fs_disk_id_source id_source;
};

struct fs_target {
	char path[PATH_MAX];        /* as given */
	char real_path[PATH_MAX];   /* symlinks resolved */
	char mount_point[PATH_MAX]; /* of the mount containing real_path */
	char mount_root[PATH_MAX];  /* mountinfo "root": "/" unless a bind mount */
	char fstype[32];
	char source[PATH_MAX];
	int mount_id;                      /* mountinfo field 1; statx() STATX_MNT_ID */
	unsigned int dev_major, dev_minor; /* of the superblock (mountinfo) */
	size_t ndisks;
	struct fs_disk disks[FS_TARGET_MAX_DISKS];
};

struct volume_override {
	const char *device;    /* "loop3", "/dev/loop3", "/dev/disk/by-id/..." */
	const char *volume_id; /* "vol-..." */
};

/*
 * Resolves path to its mount (longest mount point prefix, by component; of
 * stacked mounts the last one) and the EBS volumes under it (partitions to
 * their disk, device-mapper and md to their slaves, recursively).
 * Returns 0 or -1 with err->code one of: InvalidArgument, PathNotFound,
 * MountNotFound, NotBlockDevice, SysfsError, TooManyDisks, HelperConfig
 * (bad override), VolumeNotEbs (instance store), VolumeUnknown (needs an
 * override).
 */
int volumes_resolve_path(const struct sys_paths *sp, const char *path,
                         const struct volume_override *ov, size_t nov, struct fs_target *out,
                         struct amis_err *err);

/* "vol-" followed by 8 or 17 lower-case hex digits. */
bool volumes_valid_volume_id(const char *s);

/*
 * Whether a mount point may be frozen: it must be equal to or below one of
 * allowed_prefixes, by component ("/data" allows "/data" and "/data/x", not
 * "/database").  "/" and "/boot" (and anything below /boot) are refused
 * unless allow_root_fs, which permits them by itself: it is the explicit
 * opt-in for them, and listing "/" as a prefix would allow every mount.
 */
bool volumes_path_allowed(const char *mount_point, const char *const *allowed_prefixes, size_t n,
                          bool allow_root_fs);

/*
 * Whether a Xen disk's ec2_device_name ("/dev/sda", from xvda) names the
 * same device as a blockDeviceMapping deviceName ("/dev/sda1",
 * "/dev/xvda"): equal once "/dev/" and the xvd/sd spelling are set aside,
 * or the mapping name is the disk name plus a partition number (HVM AMIs
 * call the root "/dev/sda1" while the kernel shows disk xvda).
 */
bool volumes_ec2_device_name_matches(const char *disk_name, const char *mapping_name);

/* One filesystem (superblock) of the plan, with its freeze state. */
struct freeze_fs {
	char mount_point[PATH_MAX];
	char fstype[32];
	int mount_id;
	unsigned int dev_major, dev_minor;
	/* Owned by freeze.c. */
	int fd;                   /* open on mount_point while frozen, else -1 */
	bool frozen;              /* frozen by us and not yet thawed */
	bool thaw_found_thawed;   /* FITHAW said "not frozen" (thawed by someone else) */
	long long frozen_at_usec; /* mono_usec(), 0 if never */
	long long thawed_at_usec;
	long long freeze_returned_usec; /* FIFREEZE returned (its sync is done) */
};

struct freeze_pool;

struct freeze_plan {
	size_t nfs;
	struct freeze_fs fs[FREEZE_PLAN_MAX_FS]; /* freeze order: children first */
	size_t ndisks;
	struct fs_disk disks[FREEZE_PLAN_MAX_DISKS]; /* unique by name */
	size_t nvolumes;
	char volume_ids[FREEZE_PLAN_MAX_DISKS][32]; /* unique, non-empty */
	/* Owned by freeze.c: threads that freeze/thaw in parallel, or NULL. */
	struct freeze_pool *pool;
	/*
	 * Owned by freeze.c: one byte per entry in a MAP_SHARED page that the
	 * watchdog shares (anonymous, or state_dir's claims file:
	 * freeze_plan_claims_file()), set while the entry may be frozen by us
	 * (freeze.h, "Claims"), or NULL.
	 */
	volatile unsigned char *claimed;
};

/*
 * Builds the plan from n resolved targets: each superblock (major:minor)
 * once, bind mounts of it folded into the mount of its root (or the one
 * with the shortest root), ordered deeper mount points first so that a
 * child is frozen before its parent and thawed after it; plus the unique
 * disks and volume ids.  n == 0 gives an empty plan.  The plan is large
 * (~150 KiB): allocate it rather than putting it on a small stack.
 */
int freeze_plan_build(const struct fs_target *t, size_t n, struct freeze_plan *plan,
                      struct amis_err *err);

/*
 * Fills in the volume id of every Xen disk of the plan whose
 * ec2_device_name matches mapping_name (see
 * volumes_ec2_device_name_matches) and adds it to volume_ids.  Returns the
 * number of disks filled (0 if none matched), or -1 for a bad volume id.
 */
int freeze_plan_set_device_volume(struct freeze_plan *plan, const char *mapping_name,
                                  const char *volume_id, struct amis_err *err);

/* The disks still without a volume id (Xen, before the lookup). */
size_t freeze_plan_unresolved_disks(const struct freeze_plan *plan);

#endif
