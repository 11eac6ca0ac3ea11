/*
 * test_restore_devices.c - where an attached volume appears
 * (helper/cli/rs_devices.c), on fixture directories: the by-id link, the
 * NVMe serial in sysfs, the Xen name, partitions; device names; mount
 * points in a mountinfo fixture; empty and non-empty directories.
 *
 * The fixture's block devices are device nodes made with mknod (root).
 */
#include "restore.h"
#include "tap.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#ifndef __clang__
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

static char top[256];

static void mk(const char *rel)
{
	char path[PATH_MAX];
	struct amis_err err;

	snprintf(path, sizeof(path), "%s/%s", top, rel);
	if (rs_mkdirs(path, &err) < 0) {
		printf("Bail out! %s\n", err.msg);
		exit(255);
	}
}

static void blk(const char *rel, unsigned minor)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", top, rel);
	if (mknod(path, S_IFBLK | 0600, makedev(7, 200 + minor)) < 0) {
		printf("Bail out! mknod %s: %s (the test needs root)\n", path, strerror(errno));
		exit(255);
	}
}

static void file(const char *rel, const char *text)
{
	char path[PATH_MAX];
	struct amis_err err;

	snprintf(path, sizeof(path), "%s/%s", top, rel);
	rs_write_file(path, text, strlen(text), 0644, 0, 0, &err);
}

static void lnk(const char *target_rel, const char *rel)
{
	char path[PATH_MAX], target[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", top, rel);
	snprintf(target, sizeof(target), "%s/%s", top, target_rel);
	if (symlink(target, path) < 0)
		printf("# symlink %s: %s\n", path, strerror(errno));
}

int main(void)
{
	char byid[PATH_MAX], sys[PATH_MAX], dev[PATH_MAX], found[PATH_MAX], want[PATH_MAX];
	char path[PATH_MAX], out[64];
	struct rs_dev_paths p;
	struct amis_err err;

	snprintf(top, sizeof(top), "/tmp/test_restore_devices.XXXXXX");
	if (!mkdtemp(top)) {
		printf("Bail out! mkdtemp: %s\n", strerror(errno));
		return 255;
	}
	snprintf(byid, sizeof(byid), "%s/dev/disk/by-id", top);
	snprintf(sys, sizeof(sys), "%s/sys", top);
	snprintf(dev, sizeof(dev), "%s/dev", top);
	p = (struct rs_dev_paths){byid, sys, dev};
	mk("dev/disk/by-id");
	mk("sys/block");

	/* 1. udev's by-id link (here to a "loop" device, as the emulator makes). */
	blk("dev/loop7", 7);
	lnk("dev/loop7", "dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0123456789abcdef0");
	ok(rs_find_device(&p, "vol-0123456789abcdef0", "/dev/sdf", 0, found, sizeof(found)) == 0,
	   "by-id: found");
	snprintf(want, sizeof(want), "%s/dev/loop7", top);
	is_str(found, want, "by-id: the link resolved to the device");
	ok(rs_find_device(&p, "vol-0123456789abcdef0", NULL, 1, found, sizeof(found)) < 0,
	   "by-id: its partition 1 is not there (yet)");
	blk("dev/loop7p1", 8);
	ok(rs_find_device(&p, "vol-0123456789abcdef0", NULL, 1, found, sizeof(found)) == 0,
	   "by-id: partition 1 once it exists");
	snprintf(want, sizeof(want), "%s/dev/loop7p1", top);
	is_str(found, want, "by-id: partition 1 is loop7p1");

	/* A dangling link or one to a non-device is not the volume. */
	lnk("dev/nothing", "dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0aaaaaaaaaaaaaaa1");
	ok(rs_find_device(&p, "vol-0aaaaaaaaaaaaaaa1", NULL, 0, found, sizeof(found)) < 0,
	   "by-id: a dangling link is not a device");
	file("dev/plainfile", "x");
	lnk("dev/plainfile", "dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol0aaaaaaaaaaaaaaa2");
	ok(rs_find_device(&p, "vol-0aaaaaaaaaaaaaaa2", NULL, 0, found, sizeof(found)) < 0,
	   "by-id: a link to a regular file is not a device");

	/* 2. The NVMe serial in sysfs (no by-id link: udev not there yet). */
	mk("sys/block/nvme1n1/device");
	file("sys/block/nvme1n1/device/model", "Amazon Elastic Block Store              \n");
	file("sys/block/nvme1n1/device/serial", "vol0fedcba9876543210 \n");
	mk("sys/block/nvme2n1/device");
	file("sys/block/nvme2n1/device/model", "Amazon EC2 NVMe Instance Storage\n");
	file("sys/block/nvme2n1/device/serial", "AWS1234567890\n");
	mk("sys/block/nvme3n1/device");
	file("sys/block/nvme3n1/device/model", "Amazon Elastic Block Store\n");
	file("sys/block/nvme3n1/device/serial", "vol-0bbbbbbbbbbbbbbb3\n");
	blk("dev/nvme1n1", 11);
	blk("dev/nvme1n1p1", 12);
	blk("dev/nvme2n1", 21);
	blk("dev/nvme3n1", 31);
	ok(rs_find_device(&p, "vol-0fedcba9876543210", "/dev/sdg", 0, found, sizeof(found)) == 0,
	   "serial: found");
	snprintf(want, sizeof(want), "%s/dev/nvme1n1", top);
	is_str(found, want, "serial: the namespace whose serial is the volume id without its dash");
	ok(rs_find_device(&p, "vol-0fedcba9876543210", NULL, 1, found, sizeof(found)) == 0,
	   "serial: with partition 1");
	snprintf(want, sizeof(want), "%s/dev/nvme1n1p1", top);
	is_str(found, want, "serial: nvme1n1 partition 1 is nvme1n1p1");
	ok(rs_find_device(&p, "vol-0bbbbbbbbbbbbbbb3", NULL, 0, found, sizeof(found)) == 0,
	   "serial: a serial written with its dash is taken too");
	ok(rs_find_device(&p, "vol-0ccccccccccccccc4", NULL, 0, found, sizeof(found)) < 0,
	   "serial: an unknown volume is not found (instance store passed over)");

	/* 3. Xen: /dev/sdh appears as xvdh. */
	blk("dev/xvdh", 41);
	blk("dev/xvdh1", 42);
	ok(rs_find_device(&p, "vol-0ddddddddddddddd5", "/dev/sdh", 0, found, sizeof(found)) == 0,
	   "xen: /dev/sdh found as xvdh");
	snprintf(want, sizeof(want), "%s/dev/xvdh", top);
	is_str(found, want, "xen: xvdh");
	ok(rs_find_device(&p, "vol-0ddddddddddddddd5", "/dev/sdh", 1, found, sizeof(found)) == 0 &&
	       strstr(found, "/dev/xvdh1"),
	   "xen: partition 1 is xvdh1");
	ok(rs_find_device(&p, "vol-0ddddddddddddddd5", "/dev/sdi", 0, found, sizeof(found)) < 0,
	   "xen: /dev/sdi has no xvdi: not found");

	/* Partition names. */
	rs_partition_name("/dev/nvme1n1", 2, out, sizeof(out));
	is_str(out, "/dev/nvme1n1p2", "partition name: nvme");
	rs_partition_name("/dev/xvdf", 1, out, sizeof(out));
	is_str(out, "/dev/xvdf1", "partition name: xvd");
	rs_partition_name("/dev/loop3", 1, out, sizeof(out));
	is_str(out, "/dev/loop3p1", "partition name: loop");
	rs_partition_name("/dev/sdf", 0, out, sizeof(out));
	is_str(out, "/dev/sdf", "partition name: 0 is the disk");

	/* Device names. */
	ok(rs_free_device_name("/dev/xvda\n/dev/sdf\n", out, sizeof(out)) == 0 &&
	       !strcmp(out, "/dev/sdg"),
	   "device name: sdf taken, sdg is next");
	ok(rs_free_device_name("/dev/sda1\n/dev/xvdf\n/dev/sdg1\n", out, sizeof(out)) == 0 &&
	       !strcmp(out, "/dev/sdh"),
	   "device name: xvdf takes sdf, sdg1 takes sdg");
	ok(rs_free_device_name("", out, sizeof(out)) == 0 && !strcmp(out, "/dev/sdf"),
	   "device name: nothing used: sdf");
	ok(rs_free_device_name("/dev/sdf\n/dev/sdg\n/dev/sdh\n/dev/sdi\n/dev/sdj\n/dev/sdk\n"
	                       "/dev/sdl\n/dev/sdm\n/dev/sdn\n/dev/sdo\n/dev/sdp",
	                       out, sizeof(out)) < 0,
	   "device name: sdf..sdp all taken: none");
	ok(rs_device_name_used("sdk\n", "/dev/sdk"), "device name: a bare \"sdk\" takes it");
	ok(!rs_device_name_used("/dev/sdkk\n", "/dev/sdf"), "device name: another letter does not");

	/* Mount points in a mountinfo fixture; empty directories. */
	file("mountinfo", "22 1 259:1 / / rw - ext4 /dev/root rw\n"
	                  "40 22 7:3 / /var/lib/with\\040space rw - xfs /dev/loop3 rw\n"
	                  "41 22 7:4 / /srv/db rw - ext4 /dev/loop4 rw\n");
	snprintf(path, sizeof(path), "%s/mountinfo", top);
	ok(rs_is_mount_point(path, "/srv/db"), "mountinfo: /srv/db is a mount point");
	ok(rs_is_mount_point(path, "/var/lib/with space"), "mountinfo: an escaped space");
	ok(!rs_is_mount_point(path, "/srv/db2"), "mountinfo: /srv/db2 is not");
	ok(rs_is_mount_point("/proc/self/mountinfo", "/"),
	   "the real mountinfo: / is a mount point");
	mk("empty");
	snprintf(path, sizeof(path), "%s/empty", top);
	ok(!rs_dir_nonempty(path), "an empty directory");
	ok(rs_dir_nonempty(dev), "a non-empty directory");
	snprintf(path, sizeof(path), "%s/absent", top);
	ok(!rs_dir_nonempty(path), "a missing directory counts as empty");
	snprintf(path, sizeof(path), "%s/a/b/c", top);
	ok(rs_mkdirs(path, &err) == 0 && rs_mkdirs(path, &err) == 0, "mkdirs: twice");

	{
		char cmd[PATH_MAX];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
		if (system(cmd) != 0)
			printf("# could not remove %s\n", top);
	}
	return done_testing();
}
