/*
 * test_layout.c - the restore-layout tags of each snapshot (root/layout.c):
 * mount point, filesystem type, partition, and the volumes of an LVM or md
 * filesystem.
 */
#include "layout.h"
#include "tap.h"

#include <stdio.h>
#include <string.h>

static const char *tag(const struct layout_tags *lt, const char *key)
{
	size_t i;

	for (i = 0; i < lt->n; i++)
		if (!strcmp(lt->tags[i].key, key))
			return lt->tags[i].value;
	return NULL;
}

static void target(struct fs_target *t, const char *mnt, const char *fstype, const char *source)
{
	memset(t, 0, sizeof(*t));
	snprintf(t->path, sizeof(t->path), "%s/x", mnt);
	snprintf(t->mount_point, sizeof(t->mount_point), "%s", mnt);
	snprintf(t->fstype, sizeof(t->fstype), "%s", fstype);
	snprintf(t->source, sizeof(t->source), "%s", source);
}

static void disk(struct fs_target *t, const char *name, const char *vol)
{
	struct fs_disk *d = &t->disks[t->ndisks++];

	snprintf(d->name, sizeof(d->name), "%s", name);
	snprintf(d->volume_id, sizeof(d->volume_id), "%s", vol);
}

int main(void)
{
	static struct fs_target t[4];
	static struct freeze_plan plan;
	struct layout_tags lt;
	char buf[16];
	char longpath[400];

	is_str(layout_partition("/dev/nvme1n1", "nvme1n1", buf, sizeof(buf)), "",
	       "whole NVMe disk: no partition");
	is_str(layout_partition("/dev/nvme1n1p2", "nvme1n1", buf, sizeof(buf)), "2",
	       "nvme1n1p2 is partition 2");
	is_str(layout_partition("/dev/xvdf1", "xvdf", buf, sizeof(buf)), "1",
	       "xvdf1 is partition 1");
	is_str(layout_partition("/dev/loop3", "loop3", buf, sizeof(buf)), "", "loop3: whole disk");
	ok(layout_partition("/dev/mapper/vg-data", "nvme1n1", buf, sizeof(buf)) == NULL,
	   "device-mapper: not a partition");
	ok(layout_partition("/dev/nvme1n1x", "nvme1n1", buf, sizeof(buf)) == NULL,
	   "a suffix that is not a number: not a partition");
	ok(layout_partition("/dev/xvdfp1", "xvdf", buf, sizeof(buf)) == NULL,
	   "\"p\" only after a disk name ending in a digit");

	target(&t[0], "/var/lib/postgresql", "ext4", "/dev/nvme1n1p1");
	disk(&t[0], "nvme1n1", "vol-0123456789abcdef0");
	target(&t[1], "/pg_wal", "xfs", "/dev/nvme2n1");
	disk(&t[1], "nvme2n1", "vol-0123456789abcdef1");
	target(&t[2], "/ts", "xfs", "/dev/mapper/vg-ts");
	disk(&t[2], "nvme3n1", "vol-0123456789abcdef2");
	disk(&t[2], "nvme4n1", "vol-0123456789abcdef3");
	target(&t[3], "/xen", "ext4", "/dev/xvdg");
	disk(&t[3], "xvdg", "");
	plan.ndisks = 1;
	snprintf(plan.disks[0].name, sizeof(plan.disks[0].name), "xvdg");
	snprintf(plan.disks[0].volume_id, sizeof(plan.disks[0].volume_id), "vol-0123456789abcdef9");

	layout_volume_tags(t, 4, &plan, "vol-0123456789abcdef0", &lt);
	is_int(lt.n, 3, "data volume on a partition: three tags");
	is_str(tag(&lt, "ami-snapshot:mount-point"), "/var/lib/postgresql", "its mount point");
	is_str(tag(&lt, "ami-snapshot:fstype"), "ext4", "its filesystem type");
	is_str(tag(&lt, "ami-snapshot:partition"), "1", "its partition");

	layout_volume_tags(t, 4, &plan, "vol-0123456789abcdef1", &lt);
	is_int(lt.n, 2, "whole-disk volume: mount point and type only");
	is_str(tag(&lt, "ami-snapshot:mount-point"), "/pg_wal", "the WAL filesystem's mount point");
	ok(tag(&lt, "ami-snapshot:partition") == NULL, "no partition tag for a whole disk");

	layout_volume_tags(t, 4, &plan, "vol-0123456789abcdef3", &lt);
	is_str(tag(&lt, "ami-snapshot:fs-volumes"), "2", "LVM over two volumes: fs-volumes 2");
	is_str(tag(&lt, "ami-snapshot:fs-source"), "/dev/mapper/vg-ts",
	       "and the device to assemble");
	is_str(tag(&lt, "ami-snapshot:mount-point"), "/ts", "mount point on each of its volumes");

	layout_volume_tags(t, 4, &plan, "vol-0123456789abcdef9", &lt);
	is_str(tag(&lt, "ami-snapshot:mount-point"), "/xen",
	       "a Xen disk: its volume id from the plan (DescribeInstances)");

	layout_volume_tags(t, 4, &plan, "vol-0000000000000000a", &lt);
	is_int(lt.n, 0, "a volume under no database path (an AMI's root): no tags");

	memset(longpath, 'a', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	target(&t[0], longpath, "ext4", "/dev/nvme1n1");
	disk(&t[0], "nvme1n1", "vol-0123456789abcdef0");
	layout_volume_tags(t, 1, &plan, "vol-0123456789abcdef0", &lt);
	ok(tag(&lt, "ami-snapshot:mount-point") == NULL,
	   "a mount point longer than a tag value is left out");
	is_str(tag(&lt, "ami-snapshot:fstype"), "ext4", "the other tags stay");
	return done_testing();
}
