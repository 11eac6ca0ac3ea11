/*
 * test_volumes.c - volumes.c against fixture sysfs/mountinfo/dev trees.
 *
 * The fixture is built at run time in a mkdtemp() directory (sysfs needs
 * symlinks, and building it from this description keeps it next to the
 * assertions) and removed at the end.  Its layout follows a real Nitro
 * instance: /sys/dev/block/MAJ:MIN -> ../../devices/..., NVMe namespaces
 * under their controller with device -> ../../nvmeN, partitions inside
 * their disk's directory, dm/md under devices/virtual/block with slaves/.
 */
#include "tap.h"
#include "volumes.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Short, so that paths built from it fit PATH_MAX buffers. */
static char root[512];

/* ---- building the fixture ---- */

static void die(const char *what, const char *path)
{
	printf("Bail out! %s %s: %s\n", what, path, strerror(errno));
	exit(255);
}

static void mkdirs(const char *rel)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", root, rel);
	for (char *p = path + strlen(root) + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0755) < 0 && errno != EEXIST)
			die("mkdir", path);
		*p = '/';
	}
	if (mkdir(path, 0755) < 0 && errno != EEXIST)
		die("mkdir", path);
}

static void parent_dirs(const char *rel)
{
	char dir[PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", rel);
	slash = strrchr(dir, '/');
	if (slash) {
		*slash = '\0';
		mkdirs(dir);
	}
}

static void put_file(const char *rel, const char *content)
{
	char path[PATH_MAX];
	FILE *f;

	parent_dirs(rel);
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	f = fopen(path, "w");
	if (!f || fputs(content, f) < 0 || fclose(f) != 0)
		die("write", path);
}

static void put_link(const char *rel, const char *target)
{
	char path[PATH_MAX];

	parent_dirs(rel);
	snprintf(path, sizeof(path), "%s/%s", root, rel);
	if (symlink(target, path) < 0)
		die("symlink", path);
}

/* A block device at sys/devices/<devpath>, reachable as /sys/dev/block/M:m. */
static void block_dev(const char *devpath, const char *majmin)
{
	char rel[PATH_MAX], target[PATH_MAX], content[32];

	snprintf(rel, sizeof(rel), "sys/devices/%s/dev", devpath);
	snprintf(content, sizeof(content), "%s\n", majmin);
	put_file(rel, content);
	snprintf(rel, sizeof(rel), "sys/devices/%s/slaves", devpath);
	mkdirs(rel);
	snprintf(rel, sizeof(rel), "sys/dev/block/%s", majmin);
	snprintf(target, sizeof(target), "../../devices/%s", devpath);
	put_link(rel, target);
}

#define PCI "pci0000:00/0000:00:1f.0"

/* An NVMe controller nvme<ctrl> with namespace nvme<ctrl>n1 (whole disk). */
static void nvme_disk(int ctrl, const char *model, const char *serial, const char *majmin)
{
	char dev[256], rel[PATH_MAX];

	snprintf(rel, sizeof(rel), "sys/devices/" PCI "/nvme/nvme%d/model", ctrl);
	put_file(rel, model);
	snprintf(rel, sizeof(rel), "sys/devices/" PCI "/nvme/nvme%d/serial", ctrl);
	put_file(rel, serial);
	snprintf(dev, sizeof(dev), PCI "/nvme/nvme%d/nvme%dn1", ctrl, ctrl);
	block_dev(dev, majmin);
	snprintf(rel, sizeof(rel), "sys/devices/%s/device", dev);
	snprintf(dev, sizeof(dev), "../../nvme%d", ctrl);
	put_link(rel, dev);
}

static void nvme_part(int ctrl, int part, const char *majmin)
{
	char dev[256], rel[PATH_MAX], num[16];

	snprintf(dev, sizeof(dev), PCI "/nvme/nvme%d/nvme%dn1/nvme%dn1p%d", ctrl, ctrl, ctrl, part);
	block_dev(dev, majmin);
	snprintf(rel, sizeof(rel), "sys/devices/%s/partition", dev);
	snprintf(num, sizeof(num), "%d\n", part);
	put_file(rel, num);
}

/* dm-N or mdN over slaves given as paths below sys/devices. */
static void virtual_dev(const char *name, const char *majmin, const char *const *slaves)
{
	char dev[256], rel[PATH_MAX], target[PATH_MAX];

	snprintf(dev, sizeof(dev), "virtual/block/%s", name);
	block_dev(dev, majmin);
	for (; *slaves; slaves++) {
		snprintf(rel, sizeof(rel), "sys/devices/%s/slaves/%s", dev,
		         strrchr(*slaves, '/') + 1);
		snprintf(target, sizeof(target), "../../../../%s", *slaves);
		put_link(rel, target);
	}
}

#define EBS "Amazon Elastic Block Store              \n"
#define NVME_DISK(c) PCI "/nvme/nvme" #c "/nvme" #c "n1"

static const char mountinfo[] =
    "21 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,discard\n"
    "22 21 0:5 / /dev rw,nosuid shared:2 - devtmpfs devtmpfs rw,size=4k\n"
    "23 21 259:2 / /boot rw,relatime shared:3 - ext4 /dev/nvme0n1p2 rw\n"
    "24 21 0:40 / /run rw,nosuid,nodev shared:4 - tmpfs tmpfs rw,mode=755\n"
    /* a bind mount of the WAL filesystem, listed before the real mount */
    "29 21 253:0 /sub /srv/bindfirst rw shared:9 - ext4 /dev/mapper/vg-wal rw\n"
    "30 21 259:3 / /var/lib/postgresql rw,noatime shared:10 master:7 - xfs /dev/nvme1n1 rw\n"
    "31 30 253:0 / /var/lib/postgresql/15/main/pg_wal rw shared:11 - ext4 "
    "/dev/mapper/vg-wal rw\n"
    "32 21 9:0 / /srv/raid rw - ext4 /dev/md0 rw\n"
    "33 21 259:9 / /mnt/ephemeral rw - ext4 /dev/nvme6n1 rw\n"
    "34 21 7:3 / /mnt/my\\040data rw - ext4 /dev/loop3 rw\n"
    "35 21 202:80 / /data/xen rw - ext4 /dev/xvdf rw\n"
    "36 21 259:3 /pg/tblspc /mnt/tblspc rw - xfs /dev/nvme1n1 rw\n"
    "37 21 254:0 / /mnt/virtio rw - ext4 /dev/vda rw\n"
    "38 21 253:1 / /srv/crypt rw - ext4 /dev/mapper/crypt rw\n"
    "39 21 259:10 / /mnt/badserial rw - ext4 /dev/nvme7n1 rw\n"
    "40 21 9:1 / /srv/md1 rw - ext4 /dev/md1 rw\n"
    "41 21 259:99 / /mnt/gone rw - ext4 /dev/nvme9n1 rw\n"
    "42 21 259:3 / /mnt/stack rw - xfs /dev/nvme1n1 rw\n"
    "43 21 7:3 / /mnt/stack rw - ext4 /dev/loop3 rw\n"
    "44 21 202:1 / /data/xenroot rw - ext4 /dev/xvda1 rw\n"
    "45 21 0:41 / /mnt/btrfs rw - btrfs /dev/nowhere rw\n";

static void build_fixture(void)
{
	static const char *const dm0[] = {NVME_DISK(2), NVME_DISK(3), NULL};
	static const char *const dm1[] = {"virtual/block/dm-0", NULL};
	static const char *const md0[] = {NVME_DISK(4) "/nvme4n1p1", NVME_DISK(5), NULL};
	static const char *const md1[] = {NVME_DISK(8) "/nvme8n1p1", NVME_DISK(8) "/nvme8n1p2",
	                                  NULL};

	/* Root disk, partitioned; 17-digit volume id filling the 20-byte serial. */
	nvme_disk(0, EBS, "vol0123456789abcdef0\n", "259:0");
	nvme_part(0, 1, "259:1");
	nvme_part(0, 2, "259:2");
	/* Data disk without partitions; an old 8-digit id, space padded. */
	nvme_disk(1, EBS, "vol1234abcd         \n", "259:3");
	/* LVM over two EBS disks, and dm-crypt over that. */
	nvme_disk(2, EBS, "vol0aaaaaaaaaaaaaaa2\n", "259:4");
	nvme_disk(3, EBS, "vol0aaaaaaaaaaaaaaa3\n", "259:5");
	virtual_dev("dm-0", "253:0", dm0);
	virtual_dev("dm-1", "253:1", dm1);
	/* md RAID0 over a partition of one disk and the whole of another. */
	nvme_disk(4, EBS, "vol0bbbbbbbbbbbbbbb4\n", "259:6");
	nvme_part(4, 1, "259:7");
	nvme_disk(5, EBS, "vol0bbbbbbbbbbbbbbb5\n", "259:8");
	virtual_dev("md0", "9:0", md0);
	/* md over two partitions of the same disk. */
	nvme_disk(8, EBS, "vol0ccccccccccccccc8\n", "259:11");
	nvme_part(8, 1, "259:12");
	nvme_part(8, 2, "259:13");
	virtual_dev("md1", "9:1", md1);
	/* Instance store, and an EBS model with a serial we cannot read. */
	nvme_disk(6, "Amazon EC2 NVMe Instance Storage        \n", "AWS1A2B3C4D5E6F7G8H9\n",
	          "259:9");
	nvme_disk(7, EBS, "AWS12345            \n", "259:10");
	/* loop, virtio, Xen. */
	block_dev("virtual/block/loop3", "7:3");
	block_dev("pci0000:00/0000:00:02.0/virtio1/block/vda", "254:0");
	block_dev("vbd-51792/block/xvdf", "202:80");
	block_dev("vbd-51712/block/xvda", "202:0");
	block_dev("vbd-51712/block/xvda/xvda1", "202:1");
	put_file("sys/devices/vbd-51712/block/xvda/xvda1/partition", "1\n");

	put_file("dev/loop3", "");
	put_link("dev/disk/by-id/virtio-backup", "../../loop3");
	put_file("proc/mountinfo", mountinfo);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	return remove(path);
}

static void remove_fixture(void)
{
	if (root[0])
		nftw(root, rm_entry, 32, FTW_DEPTH | FTW_PHYS);
}

/* ---- helpers ---- */

static struct sys_paths sp;
static char sysfs_dir[PATH_MAX], mountinfo_path[PATH_MAX], dev_dir[PATH_MAX];

static int resolve(const char *path, const struct volume_override *ov, size_t nov,
                   struct fs_target *t, struct amis_err *err)
{
	err_clear(err);
	return volumes_resolve_path(&sp, path, ov, nov, t, err);
}

static bool contains(const char *haystack, const char *needle)
{
	return strstr(haystack, needle) != NULL;
}

/* ---- tests ---- */

static void test_nvme(void)
{
	struct fs_target t;
	struct amis_err err;

	is_int(resolve("/", NULL, 0, &t, &err), 0, "root resolves: %s", err.msg);
	is_str(t.mount_point, "/", "root mount point");
	is_str(t.fstype, "ext4", "root fstype");
	is_str(t.source, "/dev/nvme0n1p1", "root source");
	ok(t.dev_major == 259 && t.dev_minor == 1, "root is 259:1");
	is_int(t.mount_id, 21, "root mount id");
	is_int(t.ndisks, 1, "root: one disk");
	is_str(t.disks[0].name, "nvme0n1", "partition nvme0n1p1 -> disk nvme0n1");
	is_str(t.disks[0].volume_id, "vol-0123456789abcdef0", "root volume id from the serial");
	is_int(t.disks[0].id_source, FS_DISK_ID_NVME, "id from NVMe");
	is_str(t.disks[0].ec2_device_name, "", "no Xen device name");

	is_int(resolve("/var/lib/postgresql/15/main", NULL, 0, &t, &err), 0, "data dir: %s",
	       err.msg);
	is_str(t.mount_point, "/var/lib/postgresql", "data dir on its own mount");
	is_str(t.real_path, "/var/lib/postgresql/15/main", "literal real path");
	is_str(t.fstype, "xfs", "data fstype");
	is_int(t.ndisks, 1, "data: one disk");
	is_str(t.disks[0].name, "nvme1n1", "data disk without partitions");
	is_str(t.disks[0].volume_id, "vol-1234abcd", "8-digit id, padding trimmed");

	is_int(resolve("/var/lib/postgresqlx/data", NULL, 0, &t, &err), 0, "sibling name");
	is_str(t.mount_point, "/", "prefix matching is by component");

	is_int(resolve("//var//lib/postgresql/", NULL, 0, &t, &err), 0, "untidy path");
	is_str(t.real_path, "/var/lib/postgresql", "slashes tidied");
	is_str(t.mount_point, "/var/lib/postgresql", "untidy path finds its mount");
	is_str(t.path, "//var//lib/postgresql/", "path kept as given");

	is_int(resolve("/mnt/ephemeral/x", NULL, 0, &t, &err), -1, "instance store refused");
	is_str(err.code, "VolumeNotEbs", "instance store code");
	ok(contains(err.msg, "nvme6n1") &&
	       contains(err.msg, "is an instance store volume, not EBS, and cannot be "
	                         "snapshotted"),
	   "instance store message: %s", err.msg);

	is_int(resolve("/mnt/badserial", NULL, 0, &t, &err), -1, "unreadable serial");
	is_str(err.code, "SysfsError", "unreadable serial code");
	ok(contains(err.msg, "AWS12345") && contains(err.msg, VOLUMES_OVERRIDE_SECTION),
	   "unreadable serial message: %s", err.msg);
}

static void test_stacked_devices(void)
{
	struct fs_target t;
	struct amis_err err;

	is_int(resolve("/var/lib/postgresql/15/main/pg_wal/000000010000000000000001", NULL, 0, &t,
	               &err),
	       0, "pg_wal: %s", err.msg);
	is_str(t.mount_point, "/var/lib/postgresql/15/main/pg_wal", "nested mount wins");
	ok(t.dev_major == 253 && t.dev_minor == 0, "pg_wal on dm-0");
	is_int(t.ndisks, 2, "LVM over two disks");
	is_str(t.disks[0].name, "nvme2n1", "LVM slave 1");
	is_str(t.disks[0].volume_id, "vol-0aaaaaaaaaaaaaaa2", "LVM slave 1 id");
	is_str(t.disks[1].name, "nvme3n1", "LVM slave 2");
	is_str(t.disks[1].volume_id, "vol-0aaaaaaaaaaaaaaa3", "LVM slave 2 id");

	is_int(resolve("/srv/crypt/a", NULL, 0, &t, &err), 0, "dm over dm: %s", err.msg);
	is_int(t.ndisks, 2, "dm-1 -> dm-0 -> two disks");
	ok(t.ndisks == 2 && strcmp(t.disks[0].name, "nvme2n1") == 0 &&
	       strcmp(t.disks[1].name, "nvme3n1") == 0,
	   "recursion reaches the disks");

	is_int(resolve("/srv/raid/x", NULL, 0, &t, &err), 0, "md0: %s", err.msg);
	is_int(t.ndisks, 2, "md0 over two disks");
	is_str(t.disks[0].name, "nvme4n1", "md slave partition -> its disk");
	is_str(t.disks[0].volume_id, "vol-0bbbbbbbbbbbbbbb4", "md disk 1 id");
	is_str(t.disks[1].name, "nvme5n1", "md whole-disk slave");
	is_str(t.disks[1].volume_id, "vol-0bbbbbbbbbbbbbbb5", "md disk 2 id");

	is_int(resolve("/srv/md1", NULL, 0, &t, &err), 0, "md1: %s", err.msg);
	is_int(t.ndisks, 1, "two partitions of one disk: the disk once");
	is_str(t.disks[0].volume_id, "vol-0ccccccccccccccc8", "md1 disk id");
}

static void test_overrides(void)
{
	const struct volume_override by_name[] = {{"nvme9n9", "vol-0fffffffffffffff9"},
	                                          {"loop3", "vol-0ddddddddddddddd3"}};
	const struct volume_override by_dev[] = {{"/dev/loop3", "vol-0ddddddddddddddd3"}};
	const struct volume_override by_link[] = {
	    {"/dev/disk/by-id/virtio-backup", "vol-0ddddddddddddddd3"}};
	const struct volume_override bad[] = {{"loop3", "vol-xyz"}};
	const struct volume_override other[] = {{"loop4", "vol-0ddddddddddddddd4"}};
	const struct volume_override nvme[] = {{"nvme1n1", "vol-0eeeeeeeeeeeeeee1"}};
	struct fs_target t;
	struct amis_err err;

	is_int(resolve("/mnt/my data/f", NULL, 0, &t, &err), -1, "loop without override");
	is_str(t.mount_point, "/mnt/my data", "\\040 in mountinfo decoded");
	is_str(err.code, "VolumeUnknown", "loop without override code");
	ok(contains(err.msg, "loop3") && contains(err.msg, VOLUMES_OVERRIDE_SECTION),
	   "message names the device and the key: %s", err.msg);

	is_int(resolve("/mnt/my data/f", by_name, 2, &t, &err), 0, "override by name: %s", err.msg);
	is_str(t.disks[0].volume_id, "vol-0ddddddddddddddd3", "override id");
	is_int(t.disks[0].id_source, FS_DISK_ID_OVERRIDE, "id from override");
	is_int(resolve("/mnt/my data", by_dev, 1, &t, &err), 0, "override by /dev name");
	is_str(t.disks[0].volume_id, "vol-0ddddddddddddddd3", "override by /dev name id");
	is_int(resolve("/mnt/my data", by_link, 1, &t, &err), 0, "override by /dev symlink: %s",
	       err.msg);
	is_str(t.disks[0].volume_id, "vol-0ddddddddddddddd3", "override by symlink id");
	is_int(resolve("/mnt/my data", other, 1, &t, &err), -1, "other device's override");
	is_int(resolve("/mnt/my data", bad, 1, &t, &err), -1, "malformed override refused");
	is_str(err.code, "HelperConfig", "malformed override code");
	is_int(resolve("/var/lib/postgresql", nvme, 1, &t, &err), 0, "override beats NVMe");
	is_str(t.disks[0].volume_id, "vol-0eeeeeeeeeeeeeee1", "override wins over serial");

	is_int(resolve("/mnt/stack/a", by_name, 2, &t, &err), 0, "stacked mounts: %s", err.msg);
	ok(t.dev_major == 7 && t.dev_minor == 3, "the last stacked mount wins");
	is_int(t.mount_id, 43, "stacked: mount id of the top");

	is_int(resolve("/mnt/virtio/x", NULL, 0, &t, &err), -1, "virtio refused");
	is_str(err.code, "VolumeUnknown", "virtio code");
	ok(contains(err.msg, "vda") && contains(err.msg, VOLUMES_OVERRIDE_SECTION),
	   "virtio message: %s", err.msg);
}

static void test_xen_and_others(void)
{
	struct fs_target t;
	struct amis_err err;

	is_int(resolve("/data/xen/base", NULL, 0, &t, &err), 0, "Xen disk: %s", err.msg);
	is_str(t.disks[0].name, "xvdf", "Xen disk name");
	is_str(t.disks[0].volume_id, "", "Xen: volume id left for DescribeInstances");
	is_str(t.disks[0].ec2_device_name, "/dev/sdf", "xvdf is mapping /dev/sdf");
	is_int(t.disks[0].id_source, FS_DISK_ID_XEN, "id source Xen");

	is_int(resolve("/data/xenroot", NULL, 0, &t, &err), 0, "Xen partition: %s", err.msg);
	is_str(t.disks[0].name, "xvda", "xvda1 -> xvda");
	is_str(t.disks[0].ec2_device_name, "/dev/sda", "xvda is /dev/sda");

	is_int(resolve("/mnt/tblspc/16384", NULL, 0, &t, &err), 0, "bind mount: %s", err.msg);
	is_str(t.mount_point, "/mnt/tblspc", "bind mount point");
	is_str(t.mount_root, "/pg/tblspc", "bind mount root");
	ok(t.dev_major == 259 && t.dev_minor == 3, "bind mount device");

	is_int(resolve("/run/x", NULL, 0, &t, &err), -1, "tmpfs refused");
	is_str(err.code, "NotBlockDevice", "tmpfs code");
	ok(contains(err.msg, "tmpfs"), "tmpfs message: %s", err.msg);
	is_int(resolve("/mnt/btrfs", NULL, 0, &t, &err), -1, "anonymous device, no node");
	is_str(err.code, "NotBlockDevice", "anonymous device code");
	is_int(resolve("/mnt/gone", NULL, 0, &t, &err), -1, "device missing from sysfs");
	is_str(err.code, "SysfsError", "missing sysfs entry code");
	is_int(resolve("var/lib", NULL, 0, &t, &err), -1, "relative path refused");
	is_str(err.code, "InvalidArgument", "relative path code");
	is_int(resolve("", NULL, 0, &t, &err), -1, "empty path refused");

	sp.mountinfo = "/nonexistent/mountinfo";
	is_int(resolve("/", NULL, 0, &t, &err), -1, "missing mountinfo");
	is_str(err.code, "SysfsError", "missing mountinfo code");
	sp.mountinfo = mountinfo_path;
}

/* Not literal: realpath() follows symlinks on the real filesystem. */
static void test_real_paths(void)
{
	const char *rel = "proc/mountinfo-real";
	char path[PATH_MAX], want[PATH_MAX], mi[PATH_MAX * 2], mi_path[PATH_MAX];
	struct fs_target t;
	struct amis_err err;
	struct sys_paths real = sp;

	real.literal_path = false;
	snprintf(mi, sizeof(mi),
	         "21 1 259:1 / / rw - ext4 /dev/nvme0n1p1 rw\n"
	         "50 21 259:3 / %s/pgdata rw - xfs /dev/nvme1n1 rw\n",
	         root);
	put_file(rel, mi);
	snprintf(mi_path, sizeof(mi_path), "%s/%s", root, rel);
	real.mountinfo = mi_path;
	mkdirs("pgdata/15/main");
	mkdirs("waldisk/pg_wal");
	put_link("pgdata/15/main/pg_wal", "../../../waldisk/pg_wal");

	snprintf(want, sizeof(want), "%s/pgdata/15/main", root);
	err_clear(&err);
	is_int(volumes_resolve_path(&real, want, NULL, 0, &t, &err), 0, "real path: %s", err.msg);
	snprintf(want, sizeof(want), "%s/pgdata", root);
	is_str(t.mount_point, want, "real path mount");
	is_str(t.disks[0].volume_id, "vol-1234abcd", "real path volume");

	snprintf(path, sizeof(path), "%s/pgdata/15/main/pg_wal", root);
	is_int(volumes_resolve_path(&real, path, NULL, 0, &t, &err), 0, "pg_wal symlink: %s",
	       err.msg);
	snprintf(want, sizeof(want), "%s/waldisk/pg_wal", root);
	is_str(t.real_path, want, "symlink followed");
	is_str(t.mount_point, "/", "symlink target's mount");

	snprintf(path, sizeof(path), "%s/pgdata/nonexistent", root);
	is_int(volumes_resolve_path(&real, path, NULL, 0, &t, &err), -1, "missing path");
	is_str(err.code, "PathNotFound", "missing path code");

	real.mountinfo = root; /* a directory: opens, cannot be read */
	is_int(volumes_resolve_path(&real, want, NULL, 0, &t, &err), -1, "unreadable mountinfo");
	is_str(err.code, "SysfsError", "unreadable mountinfo code");
}

static const struct fs_target *find_target(const struct fs_target *t, size_t n, const char *mp)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(t[i].mount_point, mp) == 0)
			return &t[i];
	return NULL;
}

static size_t plan_index(const struct freeze_plan *p, const char *mp)
{
	for (size_t i = 0; i < p->nfs; i++)
		if (strcmp(p->fs[i].mount_point, mp) == 0)
			return i;
	return (size_t)-1;
}

static bool children_first(const struct freeze_plan *p)
{
	for (size_t i = 0; i < p->nfs; i++)
		for (size_t j = i + 1; j < p->nfs; j++) {
			const char *a = p->fs[i].mount_point, *b = p->fs[j].mount_point;

			/* a (earlier) must not be a parent of b (later) */
			if (strcmp(a, "/") == 0 ||
			    (strncmp(b, a, strlen(a)) == 0 && b[strlen(a)] == '/'))
				return false;
		}
	return true;
}

static bool has_volume(const struct freeze_plan *p, const char *id)
{
	for (size_t i = 0; i < p->nvolumes; i++)
		if (strcmp(p->volume_ids[i], id) == 0)
			return true;
	return false;
}

static void test_plan(void)
{
	static const char *const paths[] = {"/var/lib/postgresql/15/main",
	                                    "/var/lib/postgresql/15/main/pg_wal",
	                                    "/mnt/tblspc/16384",
	                                    "/",
	                                    "/var/lib/postgresql/15/main/base",
	                                    "/srv/crypt",
	                                    "/srv/raid"};
	static struct fs_target t[8];
	static struct freeze_plan plan;
	struct amis_err err;
	size_t n = 0;
	bool all_ok = true;

	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
		if (resolve(paths[i], NULL, 0, &t[n++], &err) < 0)
			all_ok = false;
	ok(all_ok, "plan targets resolve");
	ok(find_target(t, n, "/mnt/tblspc") != NULL, "a bind mount among the targets");

	err_clear(&err);
	is_int(freeze_plan_build(t, n, &plan, &err), 0, "plan builds: %s", err.msg);
	is_int(plan.nfs, 5, "bind mount and repeats folded: 5 superblocks");
	is_str(plan.fs[0].mount_point, "/var/lib/postgresql/15/main/pg_wal", "deepest first");
	ok(plan_index(&plan, "/var/lib/postgresql") != (size_t)-1,
	   "bind mount folded into the mount of its root");
	is_int(plan_index(&plan, "/mnt/tblspc"), (size_t)-1, "bind mount point not frozen");
	is_int(plan_index(&plan, "/"), plan.nfs - 1, "/ last");
	ok(plan_index(&plan, "/var/lib/postgresql/15/main/pg_wal") <
	       plan_index(&plan, "/var/lib/postgresql"),
	   "child before parent");
	ok(children_first(&plan), "no parent before any of its children");
	is_int(plan.nvolumes, 6, "unique volumes (dm-1 shares dm-0's disks)");
	ok(has_volume(&plan, "vol-0123456789abcdef0") && has_volume(&plan, "vol-1234abcd") &&
	       has_volume(&plan, "vol-0aaaaaaaaaaaaaaa2") &&
	       has_volume(&plan, "vol-0aaaaaaaaaaaaaaa3") &&
	       has_volume(&plan, "vol-0bbbbbbbbbbbbbbb4") &&
	       has_volume(&plan, "vol-0bbbbbbbbbbbbbbb5"),
	   "every volume listed");
	is_int(plan.ndisks, 6, "unique disks");
	ok(plan.fs[0].fd == -1 && !plan.fs[0].frozen && plan.fs[0].frozen_at_usec == 0,
	   "fresh freeze state");
	is_int(plan.fs[0].mount_id, 31, "plan keeps the mount id");
	is_int(freeze_plan_unresolved_disks(&plan), 0, "no unresolved disks");

	/* A bind mount listed before the real mount: still freeze through the root's mount. */
	n = 0;
	resolve("/srv/bindfirst/x", NULL, 0, &t[n++], &err);
	resolve("/var/lib/postgresql/15/main/pg_wal", NULL, 0, &t[n++], &err);
	is_int(freeze_plan_build(t, n, &plan, &err), 0, "bind-first plan");
	is_int(plan.nfs, 1, "one superblock");
	is_str(plan.fs[0].mount_point, "/var/lib/postgresql/15/main/pg_wal",
	       "the mount of the filesystem root is used");
	is_int(plan.fs[0].mount_id, 31, "and its mount id");
	n = 0;
	resolve("/srv/bindfirst/x", NULL, 0, &t[n++], &err);
	is_int(freeze_plan_build(t, n, &plan, &err), 0, "bind mount alone");
	is_str(plan.fs[0].mount_point, "/srv/bindfirst", "a bind mount alone is frozen through it");

	is_int(freeze_plan_build(t, 0, &plan, &err), 0, "empty plan");
	is_int(plan.nfs, 0, "empty plan has no filesystems");
}

static void test_plan_order(void)
{
	static const char *const mps[] = {"/a", "/z", "/a/b/c", "/", "/a/b", "/ab/c/d/e"};
	static struct fs_target t[FREEZE_PLAN_MAX_FS + 1];
	static struct freeze_plan plan;
	struct amis_err err;
	size_t n = sizeof(mps) / sizeof(mps[0]);

	memset(t, 0, sizeof(t));
	for (size_t i = 0; i < n; i++) {
		snprintf(t[i].mount_point, sizeof(t[i].mount_point), "%s", mps[i]);
		snprintf(t[i].mount_root, sizeof(t[i].mount_root), "/");
		t[i].dev_major = 8;
		t[i].dev_minor = (unsigned int)i;
	}
	is_int(freeze_plan_build(t, n, &plan, &err), 0, "order plan");
	ok(children_first(&plan), "children before parents");
	is_str(plan.fs[0].mount_point, "/ab/c/d/e", "deepest first");
	ok(plan_index(&plan, "/a/b/c") < plan_index(&plan, "/a/b") &&
	       plan_index(&plan, "/a/b") < plan_index(&plan, "/a") &&
	       plan_index(&plan, "/a") < plan_index(&plan, "/"),
	   "chain /a/b/c, /a/b, /a, /");
	is_str(plan.fs[n - 1].mount_point, "/", "/ last");

	for (size_t i = 0; i < FREEZE_PLAN_MAX_FS + 1; i++) {
		snprintf(t[i].mount_point, sizeof(t[i].mount_point), "/m%zu", i);
		snprintf(t[i].mount_root, sizeof(t[i].mount_root), "/");
		t[i].dev_major = 8;
		t[i].dev_minor = (unsigned int)i;
	}
	err_clear(&err);
	is_int(freeze_plan_build(t, FREEZE_PLAN_MAX_FS + 1, &plan, &err), -1, "too many");
	is_str(err.code, "TooManyFilesystems", "too many code");
	t[0].mount_point[0] = '\0';
	is_int(freeze_plan_build(t, 1, &plan, &err), -1, "unresolved target refused");
}

static void test_xen_plan(void)
{
	static struct fs_target t[2];
	static struct freeze_plan plan;
	struct amis_err err;

	resolve("/data/xen", NULL, 0, &t[0], &err);
	resolve("/data/xenroot", NULL, 0, &t[1], &err);
	is_int(freeze_plan_build(t, 2, &plan, &err), 0, "Xen plan");
	is_int(plan.nvolumes, 0, "no volume ids yet");
	is_int(freeze_plan_unresolved_disks(&plan), 2, "two disks to look up");
	is_int(freeze_plan_set_device_volume(&plan, "/dev/sdf", "vol-0fffffffffffffff1", &err), 1,
	       "/dev/sdf matched");
	is_int(freeze_plan_set_device_volume(&plan, "/dev/sdg", "vol-0fffffffffffffff2", &err), 0,
	       "/dev/sdg matches nothing");
	is_int(freeze_plan_set_device_volume(&plan, "/dev/sda1", "vol-0fffffffffffffff3", &err), 1,
	       "HVM root /dev/sda1 matches disk xvda");
	is_int(freeze_plan_set_device_volume(&plan, "/dev/sdf", "bogus", &err), -1,
	       "bad id refused");
	is_int(freeze_plan_unresolved_disks(&plan), 0, "all looked up");
	is_int(plan.nvolumes, 2, "two volume ids");
	ok(has_volume(&plan, "vol-0fffffffffffffff1") && has_volume(&plan, "vol-0fffffffffffffff3"),
	   "the looked-up ids");
}

static void test_device_names(void)
{
	ok(volumes_ec2_device_name_matches("/dev/sdf", "/dev/sdf"), "same name");
	ok(volumes_ec2_device_name_matches("/dev/sdf", "/dev/xvdf"), "xvdf is sdf");
	ok(volumes_ec2_device_name_matches("xvdf", "sdf"), "without /dev/");
	ok(volumes_ec2_device_name_matches("/dev/sda", "/dev/sda1"),
	   "disk vs partition-style name");
	ok(!volumes_ec2_device_name_matches("/dev/sda", "/dev/sdab"), "sda is not sdab");
	ok(!volumes_ec2_device_name_matches("/dev/sdf", "/dev/sdg"), "sdf is not sdg");
	ok(!volumes_ec2_device_name_matches("/dev/sda1", "/dev/sda"), "sda1 is not sda");
	ok(!volumes_ec2_device_name_matches("", "/dev/sda"), "empty");

	ok(volumes_valid_volume_id("vol-0123456789abcdef0"), "17-digit id");
	ok(volumes_valid_volume_id("vol-1234abcd"), "8-digit id");
	ok(!volumes_valid_volume_id("vol-0123456789ABCDEF0"), "upper case refused");
	ok(!volumes_valid_volume_id("vol-123"), "short id refused");
	ok(!volumes_valid_volume_id("snap-1234abcd"), "other prefix refused");
	ok(!volumes_valid_volume_id(NULL), "NULL refused");
}

static void test_allowed(void)
{
	const char *const pre[] = {"/var/lib/postgresql", "/data/", "/bootstrap"};
	const char *const slash[] = {"/"};
	const char *const odd[] = {"data", NULL, "/x/../var"};

	ok(!volumes_path_allowed("/", slash, 1, false), "/ refused even with prefix /");
	ok(volumes_path_allowed("/", NULL, 0, true), "/ allowed with allow_root_fs");
	ok(!volumes_path_allowed("/boot", slash, 1, false), "/boot refused");
	ok(!volumes_path_allowed("/boot/efi", slash, 1, false), "/boot/efi refused");
	ok(volumes_path_allowed("/boot/efi", NULL, 0, true), "/boot/efi with allow_root_fs");
	ok(volumes_path_allowed("/bootstrap", pre, 3, false), "/bootstrap is not /boot");
	ok(volumes_path_allowed("/srv", slash, 1, false), "prefix / allows other mounts");
	ok(volumes_path_allowed("/var/lib/postgresql", pre, 3, false), "equal to a prefix");
	ok(volumes_path_allowed("/var/lib/postgresql/15/main/pg_wal", pre, 3, false),
	   "below a prefix");
	ok(!volumes_path_allowed("/var/lib/postgresqlx", pre, 3, false), "component-wise");
	ok(volumes_path_allowed("/data", pre, 3, false), "prefix with trailing slash, equal");
	ok(volumes_path_allowed("/data/pg", pre, 3, false), "prefix with trailing slash, below");
	ok(!volumes_path_allowed("/database", pre, 3, false), "/data does not allow /database");
	ok(!volumes_path_allowed("/var/lib", pre, 3, false), "above a prefix");
	ok(!volumes_path_allowed("/srv", pre, 3, false), "elsewhere");
	ok(!volumes_path_allowed("/srv", NULL, 0, false), "no prefixes");
	ok(!volumes_path_allowed("data", pre, 3, false), "relative mount point");
	ok(!volumes_path_allowed(NULL, pre, 3, false), "NULL mount point");
	ok(!volumes_path_allowed("/data/../etc", pre, 3, false), "dot-dot mount point");
	ok(!volumes_path_allowed("/data", odd, 3, false), "relative/NULL prefixes ignored");
	ok(!volumes_path_allowed("/var", odd, 3, false), "dot-dot prefix ignored");
}

int main(void)
{
	const char *tmp = getenv("TMPDIR");
	int rc;

	snprintf(root, sizeof(root), "%s/test_volumes.XXXXXX", tmp && *tmp ? tmp : "/tmp");
	if (!mkdtemp(root)) {
		printf("Bail out! mkdtemp: %s\n", strerror(errno));
		return 255;
	}
	atexit(remove_fixture);
	build_fixture();
	snprintf(sysfs_dir, sizeof(sysfs_dir), "%s/sys", root);
	snprintf(mountinfo_path, sizeof(mountinfo_path), "%s/proc/mountinfo", root);
	snprintf(dev_dir, sizeof(dev_dir), "%s/dev", root);
	sp.sysfs = sysfs_dir;
	sp.mountinfo = mountinfo_path;
	sp.devroot = dev_dir;
	sp.literal_path = true;

	test_nvme();
	test_stacked_devices();
	test_overrides();
	test_xen_and_others();
	test_real_paths();
	test_plan();
	test_plan_order();
	test_xen_plan();
	test_device_names();
	test_allowed();
	rc = done_testing();
	return rc;
}
