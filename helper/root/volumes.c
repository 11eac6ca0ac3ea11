/*
 * volumes.c - see volumes.h.
 *
 * Sources: proc(5) "/proc/pid/mountinfo"; the kernel's sysfs block layout
 * (/sys/dev/block/MAJ:MIN -> /sys/devices/.../DISK[/PART], "partition" in a
 * partition's directory, "slaves/" of device-mapper and md devices); AWS
 * "Amazon EBS and NVMe on Linux instances" (the NVMe serial is the volume
 * id without its dash; the model tells EBS from instance store).
 */
#include "volumes.h"
#include "mountinfo.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

const struct sys_paths volumes_sys_paths_default = {
    .sysfs = "/sys",
    .mountinfo = "/proc/self/mountinfo",
    .devroot = "/dev",
    .boot_id = "/proc/sys/kernel/random/boot_id",
    .literal_path = false,
};

/* dm on md on partitions is three levels; anything much deeper is a loop. */
#define WALK_MAX_DEPTH 16

#define EBS_NVME_MODEL "Amazon Elastic Block Store"
#define INSTANCE_STORE_NVME_MODEL "Amazon EC2 NVMe Instance Storage"

/* ---- paths ---- */

/* Whether path is prefix or below it, by component; prefix may end in '/'. */
static bool path_under(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);

	while (n > 1 && prefix[n - 1] == '/')
		n--;
	if (n == 1 && prefix[0] == '/')
		return path[0] == '/';
	if (n == 0 || strncmp(path, prefix, n) != 0)
		return false;
	return path[n] == '\0' || path[n] == '/';
}

static size_t path_depth(const char *p)
{
	size_t depth = 0;

	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		depth++;
		while (*p && *p != '/')
			p++;
	}
	return depth;
}

static bool has_dot_component(const char *p)
{
	while (*p) {
		const char *c;
		size_t len;

		while (*p == '/')
			p++;
		c = p;
		while (*p && *p != '/')
			p++;
		len = (size_t)(p - c);
		if ((len == 1 && c[0] == '.') || (len == 2 && c[0] == '.' && c[1] == '.'))
			return true;
	}
	return false;
}

/* Fixture mode: squeeze "//" and drop a trailing '/'; no symlinks, no "..". */
static int tidy_path(const char *in, char *out, size_t outsz)
{
	size_t o = 0;

	if (in[0] != '/')
		return -1;
	for (const char *p = in; *p; p++) {
		if (*p == '/' && o > 0 && out[o - 1] == '/')
			continue;
		if (o + 1 >= outsz)
			return -1;
		out[o++] = *p;
	}
	while (o > 1 && out[o - 1] == '/')
		o--;
	out[o] = '\0';
	return 0;
}

static const char *base_name(const char *p)
{
	const char *s = strrchr(p, '/');

	return s ? s + 1 : p;
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/*
 * The mount holding real_path: the longest mount point that is a prefix of
 * it by component, the last listed winning among stacked mounts.  When the
 * path's st_dev is known, mounts of that device are preferred: a mount
 * hidden under a later one over its parent still appears in mountinfo
 * (btrfs subvolumes have their own st_dev, hence only a preference).
 */
static int find_mount(const struct sys_paths *sp, const char *real_path, bool have_dev, dev_t dev,
                      struct fs_target *out, struct amis_err *err)
{
	FILE *f;
	char *line = NULL, *best[2] = {NULL, NULL};
	size_t cap = 0, best_len[2] = {0, 0};
	struct mount_entry me;
	int rc = -1;

	f = fopen(sp->mountinfo, "re");
	if (!f)
		return err_set(err, AMIS_E_SYSFS_ERROR, "could not open %s: %s", sp->mountinfo,
		               strerror(errno));
	while (getline(&line, &cap, f) >= 0) {
		char *copy = xstrdup(line);
		size_t len;

		if (mountinfo_parse_line(copy, &me) < 0 || !path_under(real_path, me.mount_point)) {
			free(copy);
			continue;
		}
		len = strlen(me.mount_point);
		free(copy);
		for (int k = 0; k < 2; k++) {
			if (k == 1 && !(have_dev && makedev(me.major, me.minor) == dev))
				continue;
			if (!best[k] || len >= best_len[k]) {
				free(best[k]);
				best[k] = xstrdup(line);
				best_len[k] = len;
			}
		}
	}
	if (ferror(f)) {
		err_set(err, AMIS_E_SYSFS_ERROR, "could not read %s", sp->mountinfo);
		goto out;
	}
	if (!best[0]) {
		err_set(err, AMIS_E_MOUNT_NOT_FOUND, "no mount in %s contains \"%s\"",
		        sp->mountinfo, real_path);
		goto out;
	}
	if (mountinfo_parse_line(best[1] ? best[1] : best[0], &me) < 0)
		goto out; /* cannot happen: it parsed above */
	if (strlcpy_checked(out->mount_point, me.mount_point, sizeof(out->mount_point)) < 0 ||
	    strlcpy_checked(out->mount_root, me.root, sizeof(out->mount_root)) < 0 ||
	    strlcpy_checked(out->fstype, me.fstype, sizeof(out->fstype)) < 0 ||
	    strlcpy_checked(out->source, me.source, sizeof(out->source)) < 0) {
		err_set(err, AMIS_E_SYSFS_ERROR, "mount entry for \"%s\" in %s is too long",
		        real_path, sp->mountinfo);
		goto out;
	}
	out->mount_id = me.mount_id;
	out->dev_major = me.major;
	out->dev_minor = me.minor;
	rc = 0;
out:
	free(line);
	free(best[0]);
	free(best[1]);
	fclose(f);
	return rc;
}

/* ---- sysfs ---- */

/* Reads a small sysfs attribute, trimmed of surrounding white space. */
static int read_attr(const char *path, char *buf, size_t bufsz)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;
	size_t start = 0, end;

	if (fd < 0)
		return -1;
	n = read(fd, buf, bufsz - 1);
	close(fd);
	if (n < 0)
		return -1;
	end = (size_t)n;
	while (end > 0 && isspace((unsigned char)buf[end - 1]))
		end--;
	while (start < end && isspace((unsigned char)buf[start]))
		start++;
	memmove(buf, buf + start, end - start);
	buf[end - start] = '\0';
	return 0;
}

static bool file_exists(const char *dir, const char *name)
{
	char path[PATH_MAX];

	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >= (int)sizeof(path))
		return false;
	return access(path, F_OK) == 0;
}

static int skip_dots(const struct dirent *d)
{
	return strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0;
}

struct walk {
	const struct sys_paths *sp;
	const struct volume_override *ov;
	size_t nov;
	struct fs_target *out;
	struct amis_err *err;
};

/* Whether override key names the disk: "nvme1n1", "/dev/nvme1n1" or a /dev symlink to it. */
static bool override_matches(const struct sys_paths *sp, const char *key, const char *name)
{
	char path[PATH_MAX], real[PATH_MAX];

	if (strcmp(key, name) == 0)
		return true;
	if (!starts_with(key, "/dev/"))
		return false;
	if (strcmp(key + 5, name) == 0)
		return true;
	if (snprintf(path, sizeof(path), "%s%s", sp->devroot, key + 4) >= (int)sizeof(path))
		return false;
	if (!realpath(path, real))
		return false;
	return strcmp(base_name(real), name) == 0;
}

/* "vol0123456789abcdef0" (NVMe serial, trimmed) -> "vol-0123456789abcdef0". */
static int volume_id_from_serial(const char *serial, char *out, size_t outsz)
{
	const char *hex;

	if (starts_with(serial, "vol-"))
		hex = serial + 4;
	else if (starts_with(serial, "vol"))
		hex = serial + 3;
	else
		return -1;
	if ((size_t)snprintf(out, outsz, "vol-%s", hex) >= outsz)
		return -1;
	return volumes_valid_volume_id(out) ? 0 : -1;
}

static int add_disk(struct walk *w, const struct fs_disk *d)
{
	if (w->out->ndisks >= FS_TARGET_MAX_DISKS)
		return err_set(w->err, AMIS_E_TOO_MANY_DISKS, "\"%s\" spans more than %d disks",
		               w->out->mount_point, FS_TARGET_MAX_DISKS);
	w->out->disks[w->out->ndisks++] = *d;
	return 0;
}

/* A whole disk: find its EBS volume id. */
static int identify_disk(struct walk *w, const char *dir, const char *partition)
{
	const char *name = base_name(dir);
	const char *mp = w->out->mount_point;
	char path[PATH_MAX], attr[256];
	struct fs_disk d;

	for (size_t i = 0; i < w->out->ndisks; i++)
		if (strcmp(w->out->disks[i].name, name) == 0)
			return 0; /* md/dm over two partitions of one disk */
	memset(&d, 0, sizeof(d));
	if (strlcpy_checked(d.name, name, sizeof(d.name)) < 0)
		return err_set(w->err, AMIS_E_SYSFS_ERROR, "block device name \"%s\" is too long",
		               name);

	for (size_t i = 0; i < w->nov; i++) {
		const struct volume_override *o = &w->ov[i];

		if (!o->device || !o->volume_id)
			continue;
		if (!override_matches(w->sp, o->device, name) &&
		    !(partition && override_matches(w->sp, o->device, partition)))
			continue;
		if (!volumes_valid_volume_id(o->volume_id))
			return err_set(w->err, AMIS_E_HELPER_CONFIG,
			               "%s %s: \"%s\" is not an EBS volume id "
			               "(vol- and 8 or 17 hex digits)",
			               VOLUMES_OVERRIDE_SECTION, o->device, o->volume_id);
		snprintf(d.volume_id, sizeof(d.volume_id), "%s", o->volume_id);
		d.id_source = FS_DISK_ID_OVERRIDE;
		return add_disk(w, &d);
	}

	/* Nitro: the NVMe controller's model and serial. */
	snprintf(path, sizeof(path), "%s/device/model", dir);
	if (read_attr(path, attr, sizeof(attr)) == 0) {
		if (strcmp(attr, EBS_NVME_MODEL) == 0) {
			snprintf(path, sizeof(path), "%s/device/serial", dir);
			if (read_attr(path, attr, sizeof(attr)) < 0)
				return err_set(w->err, AMIS_E_SYSFS_ERROR,
				               "EBS NVMe device %s has no readable serial (%s): %s",
				               name, path, strerror(errno));
			if (volume_id_from_serial(attr, d.volume_id, sizeof(d.volume_id)) < 0)
				return err_set(w->err, AMIS_E_SYSFS_ERROR,
				               "EBS NVMe device %s has serial \"%s\", which does "
				               "not carry a volume id; map it in the helper "
				               "configuration: %s /dev/%s = vol-...",
				               name, attr, VOLUMES_OVERRIDE_SECTION, name);
			d.id_source = FS_DISK_ID_NVME;
			return add_disk(w, &d);
		}
		if (strcmp(attr, INSTANCE_STORE_NVME_MODEL) == 0)
			return err_set(w->err, AMIS_E_VOLUME_NOT_EBS,
			               "device %s under %s is an instance store volume, not EBS, "
			               "and cannot be snapshotted",
			               name, mp);
	}

	/*
	 * Xen (pre-Nitro): blkfront disk xvdX is block device mapping /dev/sdX;
	 * only DescribeInstances knows the volume behind it.
	 */
	if (starts_with(name, "xvd") || strstr(dir, "/vbd-") || strstr(dir, "/xen/")) {
		const char *letters = starts_with(name, "xvd")  ? name + 3
		                      : starts_with(name, "sd") ? name + 2
		                                                : NULL;

		if (letters && *letters) {
			snprintf(d.ec2_device_name, sizeof(d.ec2_device_name), "/dev/sd%s",
			         letters);
			d.id_source = FS_DISK_ID_XEN;
			return add_disk(w, &d);
		}
	}

	return err_set(w->err, AMIS_E_VOLUME_UNKNOWN,
	               "cannot tell which EBS volume device %s under %s is (not an EBS NVMe "
	               "device on Nitro, nor a Xen disk); if it is an EBS volume, map it in "
	               "the helper configuration: %s /dev/%s = vol-...",
	               name, mp, VOLUMES_OVERRIDE_SECTION, name);
}

/*
 * dir is a device's real sysfs directory.  A partition stands for its
 * disk (its parent directory); a device with slaves (device-mapper, md)
 * for all of theirs, recursively; otherwise it is a disk.
 */
static int walk_device(struct walk *w, const char *dir, const char *partition, int depth)
{
	char path[PATH_MAX], real[PATH_MAX];
	struct dirent **ents = NULL;
	int n, rc = 0;

	if (depth > WALK_MAX_DEPTH)
		return err_set(w->err, AMIS_E_SYSFS_ERROR,
		               "block devices under %s are stacked more than %d deep at %s",
		               w->out->mount_point, WALK_MAX_DEPTH, dir);
	if (file_exists(dir, "partition")) {
		char parent[PATH_MAX];
		char *slash;

		snprintf(parent, sizeof(parent), "%s", dir);
		slash = strrchr(parent, '/');
		if (!slash || slash == parent)
			return err_set(w->err, AMIS_E_SYSFS_ERROR,
			               "partition %s has no parent disk", dir);
		*slash = '\0';
		return walk_device(w, parent, base_name(dir), depth + 1);
	}

	if (snprintf(path, sizeof(path), "%s/slaves", dir) >= (int)sizeof(path))
		return err_set(w->err, AMIS_E_SYSFS_ERROR, "sysfs path too long: %s", dir);
	n = scandir(path, &ents, skip_dots, alphasort);
	if (n <= 0) {
		free(ents);
		return identify_disk(w, dir, partition);
	}
	for (int i = 0; i < n; i++) {
		if (rc == 0) {
			if (snprintf(path, sizeof(path), "%s/slaves/%s", dir, ents[i]->d_name) >=
			        (int)sizeof(path) ||
			    !realpath(path, real))
				rc = err_set(w->err, AMIS_E_SYSFS_ERROR, "could not follow %s: %s",
				             path, strerror(errno));
			else
				rc = walk_device(w, real, NULL, depth + 1);
		}
		free(ents[i]);
	}
	free(ents);
	return rc;
}

/* The sysfs directory of the block device under the mount. */
static int block_device_dir(const struct sys_paths *sp, const struct fs_target *t, char *real,
                            struct amis_err *err)
{
	char path[PATH_MAX];
	unsigned int major = t->dev_major, minor = t->dev_minor;
	struct stat st;

	/*
	 * Major 0 is an anonymous device: no block device (tmpfs, NFS,
	 * overlay) or btrfs, whose source names one of its devices.
	 */
	if (major == 0) {
		if (!starts_with(t->source, "/dev/") ||
		    snprintf(path, sizeof(path), "%s%s", sp->devroot, t->source + 4) >=
		        (int)sizeof(path) ||
		    stat(path, &st) < 0 || !S_ISBLK(st.st_mode))
			return err_set(
			    err, AMIS_E_NOT_BLOCK_DEVICE,
			    "%s is a %s filesystem (source \"%s\", device %u:%u) that is "
			    "not on a block device, so no EBS volume holds it",
			    t->mount_point, t->fstype, t->source, t->dev_major, t->dev_minor);
		major = major(st.st_rdev);
		minor = minor(st.st_rdev);
	}
	snprintf(path, sizeof(path), "%s/dev/block/%u:%u", sp->sysfs, major, minor);
	if (!realpath(path, real))
		return err_set(err, AMIS_E_SYSFS_ERROR,
		               "block device %u:%u of %s (%s) is not in sysfs (%s): %s", major,
		               minor, t->mount_point, t->source, path, strerror(errno));
	return 0;
}

int volumes_resolve_path(const struct sys_paths *sp, const char *path,
                         const struct volume_override *ov, size_t nov, struct fs_target *out,
                         struct amis_err *err)
{
	struct walk w = {.sp = sp, .ov = ov, .nov = nov, .out = out, .err = err};
	char devdir[PATH_MAX];
	struct stat st;
	bool have_dev = false;

	memset(out, 0, sizeof(*out));
	if (!sp)
		w.sp = sp = &volumes_sys_paths_default;
	if (!path || !*path || strlcpy_checked(out->path, path, sizeof(out->path)) < 0)
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "empty or overlong path");
	if (sp->literal_path) {
		if (tidy_path(path, out->real_path, sizeof(out->real_path)) < 0)
			return err_set(err, AMIS_E_INVALID_ARGUMENT,
			               "\"%s\" is not an absolute path", path);
	} else {
		if (!realpath(path, out->real_path))
			return err_set(err, AMIS_E_PATH_NOT_FOUND, "could not resolve \"%s\": %s",
			               path, strerror(errno));
		if (stat(out->real_path, &st) == 0)
			have_dev = true;
	}
	if (find_mount(sp, out->real_path, have_dev, have_dev ? st.st_dev : 0, out, err) < 0)
		return -1;
	if (block_device_dir(sp, out, devdir, err) < 0)
		return -1;
	/* Its messages name the device and the mount point; callers add the path. */
	if (walk_device(&w, devdir, NULL, 0) < 0)
		return -1;
	if (out->ndisks == 0)
		return err_set(err, AMIS_E_SYSFS_ERROR, "found no disk under %s", out->mount_point);
	return 0;
}

bool volumes_valid_volume_id(const char *s)
{
	return aws_resource_id_valid(s, "vol");
}

bool volumes_path_allowed(const char *mount_point, const char *const *allowed_prefixes, size_t n,
                          bool allow_root_fs)
{
	if (!mount_point || mount_point[0] != '/' || has_dot_component(mount_point))
		return false;
	if (strcmp(mount_point, "/") == 0 || path_under(mount_point, "/boot"))
		return allow_root_fs;
	for (size_t i = 0; i < n; i++) {
		const char *p = allowed_prefixes[i];

		if (p && p[0] == '/' && !has_dot_component(p) && path_under(mount_point, p))
			return true;
	}
	return false;
}

/* "/dev/xvdf" and "xvdf" -> "sdf". */
static void ec2_device_key(const char *s, char *buf, size_t bufsz)
{
	if (starts_with(s, "/dev/"))
		s += 5;
	if (starts_with(s, "xvd"))
		snprintf(buf, bufsz, "sd%s", s + 3);
	else
		snprintf(buf, bufsz, "%s", s);
}

bool volumes_ec2_device_name_matches(const char *disk_name, const char *mapping_name)
{
	char a[64], b[64];
	size_t la;

	if (!disk_name || !mapping_name || !*disk_name || !*mapping_name)
		return false;
	ec2_device_key(disk_name, a, sizeof(a));
	ec2_device_key(mapping_name, b, sizeof(b));
	if (strcmp(a, b) == 0)
		return true;
	la = strlen(a);
	if (strncmp(a, b, la) != 0 || !b[la])
		return false;
	for (const char *p = b + la; *p; p++)
		if (!isdigit((unsigned char)*p))
			return false;
	return true;
}

/* ---- the freeze plan ---- */

static int add_volume_id(struct freeze_plan *plan, const char *id, struct amis_err *err)
{
	if (!*id)
		return 0;
	for (size_t i = 0; i < plan->nvolumes; i++)
		if (strcmp(plan->volume_ids[i], id) == 0)
			return 0;
	if (plan->nvolumes >= FREEZE_PLAN_MAX_DISKS)
		return err_set(err, AMIS_E_TOO_MANY_DISKS, "more than %d volumes to snapshot",
		               FREEZE_PLAN_MAX_DISKS);
	snprintf(plan->volume_ids[plan->nvolumes++], sizeof(plan->volume_ids[0]), "%s", id);
	return 0;
}

static int add_plan_disk(struct freeze_plan *plan, const struct fs_disk *d, struct amis_err *err)
{
	for (size_t i = 0; i < plan->ndisks; i++)
		if (strcmp(plan->disks[i].name, d->name) == 0)
			return 0;
	if (plan->ndisks >= FREEZE_PLAN_MAX_DISKS)
		return err_set(err, AMIS_E_TOO_MANY_DISKS, "more than %d disks to snapshot",
		               FREEZE_PLAN_MAX_DISKS);
	plan->disks[plan->ndisks++] = *d;
	return add_volume_id(plan, d->volume_id, err);
}

static void set_plan_mount(struct freeze_fs *fs, const struct fs_target *t)
{
	snprintf(fs->mount_point, sizeof(fs->mount_point), "%s", t->mount_point);
	fs->mount_id = t->mount_id;
}

/* Deeper mount points first: a child is frozen before its parent. */
static int cmp_freeze_order(const void *a, const void *b)
{
	const struct freeze_fs *x = a, *y = b;
	size_t dx = path_depth(x->mount_point), dy = path_depth(y->mount_point);

	if (dx != dy)
		return dx > dy ? -1 : 1;
	return strcmp(x->mount_point, y->mount_point);
}

int freeze_plan_build(const struct fs_target *t, size_t n, struct freeze_plan *plan,
                      struct amis_err *err)
{
	/* Root length of the mount chosen for each superblock. */
	size_t root_len[FREEZE_PLAN_MAX_FS];

	memset(plan, 0, sizeof(*plan));
	for (size_t i = 0; i < n; i++) {
		const struct fs_target *ti = &t[i];
		size_t j, rl = strlen(ti->mount_root);

		if (ti->mount_point[0] != '/')
			return err_set(err, AMIS_E_INVALID_ARGUMENT,
			               "target \"%s\" is not resolved", ti->path);
		for (j = 0; j < plan->nfs; j++)
			if (plan->fs[j].dev_major == ti->dev_major &&
			    plan->fs[j].dev_minor == ti->dev_minor)
				break;
		if (j < plan->nfs) {
			/*
			 * The same superblock through another (bind) mount: FIFREEZE
			 * acts on the superblock, so freeze it once, through the mount
			 * of its root when there is one.
			 */
			if (rl < root_len[j]) {
				set_plan_mount(&plan->fs[j], ti);
				root_len[j] = rl;
			}
		} else {
			struct freeze_fs *fs;

			if (plan->nfs >= FREEZE_PLAN_MAX_FS)
				return err_set(err, AMIS_E_TOO_MANY_FILESYSTEMS,
				               "more than %d filesystems to freeze",
				               FREEZE_PLAN_MAX_FS);
			fs = &plan->fs[plan->nfs];
			set_plan_mount(fs, ti);
			snprintf(fs->fstype, sizeof(fs->fstype), "%s", ti->fstype);
			fs->dev_major = ti->dev_major;
			fs->dev_minor = ti->dev_minor;
			fs->fd = -1;
			root_len[plan->nfs++] = rl;
		}
		for (size_t k = 0; k < ti->ndisks; k++)
			if (add_plan_disk(plan, &ti->disks[k], err) < 0)
				return -1;
	}
	qsort(plan->fs, plan->nfs, sizeof(plan->fs[0]), cmp_freeze_order);
	return 0;
}

int freeze_plan_set_device_volume(struct freeze_plan *plan, const char *mapping_name,
                                  const char *volume_id, struct amis_err *err)
{
	int filled = 0;

	if (!volumes_valid_volume_id(volume_id))
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "\"%s\" is not an EBS volume id",
		               volume_id ? volume_id : "");
	for (size_t i = 0; i < plan->ndisks; i++) {
		struct fs_disk *d = &plan->disks[i];

		if (d->id_source != FS_DISK_ID_XEN || d->volume_id[0] ||
		    !volumes_ec2_device_name_matches(d->ec2_device_name, mapping_name))
			continue;
		snprintf(d->volume_id, sizeof(d->volume_id), "%s", volume_id);
		if (add_volume_id(plan, volume_id, err) < 0)
			return -1;
		filled++;
	}
	return filled;
}

size_t freeze_plan_unresolved_disks(const struct freeze_plan *plan)
{
	size_t n = 0;

	for (size_t i = 0; i < plan->ndisks; i++)
		if (!plan->disks[i].volume_id[0])
			n++;
	return n;
}
