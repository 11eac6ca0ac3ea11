/*
 * rs_devices.c - where an attached EBS volume appears, device names, mount
 * points (see restore.h).
 *
 * An EBS volume on a Nitro instance is an NVMe namespace whose controller
 * model is "Amazon Elastic Block Store" and serial the volume id without its
 * dash; udev links it as /dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_
 * vol0123...  On Xen, /dev/sdf appears as /dev/xvdf ("Amazon EBS and NVMe on
 * Linux instances"; the helper reads the same serials: root/volumes.c).
 */
#include "restore.h"

#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define EBS_BY_ID_PREFIX "nvme-Amazon_Elastic_Block_Store_"
#define EBS_NVME_MODEL "Amazon Elastic Block Store"

const struct rs_dev_paths rs_dev_paths_default = {
    .by_id_dir = "/dev/disk/by-id",
    .sysfs = "/sys",
    .devroot = "/dev",
};

/* "vol-0123..." -> "vol0123..." */
static void serial_of(const char *volume_id, char *out, size_t sz)
{
	snprintf(out, sz, "vol%s", volume_id + (strncmp(volume_id, "vol-", 4) == 0 ? 4 : 3));
}

/* The first line of a sysfs attribute, trailing blanks removed. */
static int read_attr(const char *path, char *buf, size_t sz)
{
	FILE *f = fopen(path, "r");
	size_t n;

	if (!f)
		return -1;
	if (!fgets(buf, (int)sz, f)) {
		fclose(f);
		return -1;
	}
	fclose(f);
	n = strlen(buf);
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
		buf[--n] = '\0';
	return 0;
}

void rs_partition_name(const char *disk, int partition, char *out, size_t outsz)
{
	size_t n = strlen(disk);

	if (partition <= 0)
		snprintf(out, outsz, "%s", disk);
	else if (n && disk[n - 1] >= '0' && disk[n - 1] <= '9')
		snprintf(out, outsz, "%sp%d", disk, partition);
	else
		snprintf(out, outsz, "%s%d", disk, partition);
}

/* The NVMe namespace under sysfs whose serial is the volume's, as devroot/nvmeXnY. */
static int find_by_serial(const struct rs_dev_paths *p, const char *serial, char *dev, size_t sz)
{
	char path[PATH_MAX], attr[128];
	struct dirent *de;
	DIR *d;
	int rc = -1;

	snprintf(path, sizeof(path), "%s/block", p->sysfs);
	d = opendir(path);
	if (!d)
		return -1;
	while (rc < 0 && (de = readdir(d))) {
		if (strncmp(de->d_name, "nvme", 4) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/block/%s/device/model", p->sysfs, de->d_name);
		if (read_attr(path, attr, sizeof(attr)) < 0 || strcmp(attr, EBS_NVME_MODEL) != 0)
			continue;
		snprintf(path, sizeof(path), "%s/block/%s/device/serial", p->sysfs, de->d_name);
		if (read_attr(path, attr, sizeof(attr)) < 0)
			continue;
		if (strcmp(attr, serial) == 0 ||
		    (strncmp(attr, "vol-", 4) == 0 && strcmp(attr + 4, serial + 3) == 0)) {
			snprintf(dev, sz, "%s/%s", p->devroot, de->d_name);
			rc = 0;
		}
	}
	closedir(d);
	return rc;
}

int rs_find_device(const struct rs_dev_paths *p, const char *volume_id, const char *ec2_device,
                   int partition, char *dev, size_t devsz)
{
	char serial[40], link[PATH_MAX], disk[PATH_MAX], real[PATH_MAX];
	struct stat st;

	serial_of(volume_id, serial, sizeof(serial));
	disk[0] = '\0';
	/* 1. udev's link (or the emulator's). */
	snprintf(link, sizeof(link), "%s/" EBS_BY_ID_PREFIX "%s", p->by_id_dir, serial);
	if (realpath(link, real) && stat(real, &st) == 0 && S_ISBLK(st.st_mode))
		snprintf(disk, sizeof(disk), "%s", real);
	/* 2. The NVMe serial in sysfs. */
	if (!disk[0] && find_by_serial(p, serial, real, sizeof(real)) == 0 &&
	    stat(real, &st) == 0 && S_ISBLK(st.st_mode))
		snprintf(disk, sizeof(disk), "%s", real);
	/* 3. Xen: /dev/sdf is xvdf. */
	if (!disk[0] && ec2_device && strncmp(ec2_device, "/dev/sd", 7) == 0) {
		snprintf(real, sizeof(real), "%s/xvd%s", p->devroot, ec2_device + 7);
		if (stat(real, &st) == 0 && S_ISBLK(st.st_mode))
			snprintf(disk, sizeof(disk), "%s", real);
	}
	if (!disk[0])
		return -1;
	if (partition > 0) {
		rs_partition_name(disk, partition, real, sizeof(real));
		if (stat(real, &st) != 0 || !S_ISBLK(st.st_mode))
			return -1; /* not yet: udev and the partition table scan */
		snprintf(dev, devsz, "%s", real);
		return 0;
	}
	snprintf(dev, devsz, "%s", disk);
	return 0;
}

bool rs_device_name_used(const char *used, const char *sd_name)
{
	char sd[16], xvd[16];
	const char *u = used;

	if (strncmp(sd_name, "/dev/sd", 7) != 0 || !sd_name[7])
		return true;
	snprintf(sd, sizeof(sd), "/dev/sd%c", sd_name[7]);
	snprintf(xvd, sizeof(xvd), "/dev/xvd%c", sd_name[7]);
	while (u && *u) {
		size_t len = strcspn(u, "\n");

		/* "/dev/sdf" and "/dev/sdf1" both take sdf; so does xvdf (and "sdf"). */
		if ((len >= strlen(sd) && strncmp(u, sd, strlen(sd)) == 0) ||
		    (len >= strlen(xvd) && strncmp(u, xvd, strlen(xvd)) == 0) ||
		    (len >= 3 && strncmp(u, sd + 5, 3) == 0))
			return true;
		u += len;
		if (*u == '\n')
			u++;
	}
	return false;
}

int rs_free_device_name(const char *used, char *out, size_t outsz)
{
	char c;

	for (c = 'f'; c <= 'p'; c++) {
		char sd[16];

		snprintf(sd, sizeof(sd), "/dev/sd%c", c);
		if (!rs_device_name_used(used, sd)) {
			snprintf(out, outsz, "%s", sd);
			return 0;
		}
	}
	return -1;
}

/* Unescapes mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

bool rs_is_mount_point(const char *mountinfo, const char *path)
{
	char line[8192], want[PATH_MAX];
	bool found = false;
	FILE *f;

	/* Compare with the real path when there is one; else as given. */
	if (!realpath(path, want))
		snprintf(want, sizeof(want), "%s", path);
	f = fopen(mountinfo, "r");
	if (!f)
		return false;
	while (!found && fgets(line, sizeof(line), f)) {
		char *save = NULL, *tok;
		int field = 0;

		for (tok = strtok_r(line, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
			if (++field == 5) {
				unescape(tok);
				found = strcmp(tok, want) == 0;
				break;
			}
		}
	}
	fclose(f);
	return found;
}

bool rs_dir_nonempty(const char *dir)
{
	struct dirent *de;
	bool any = false;
	DIR *d = opendir(dir);

	if (!d)
		return false;
	while (!any && (de = readdir(d))) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			any = true;
	}
	closedir(d);
	return any;
}

int rs_mkdirs(const char *dir, struct amis_err *err)
{
	char tmp[PATH_MAX];
	size_t i;

	if (strlcpy_checked(tmp, dir, sizeof(tmp)) < 0)
		return err_set(err, AMIS_E_INVALID_PATH, "path too long: %.100s", dir);
	for (i = 1; tmp[i]; i++) {
		if (tmp[i] != '/')
			continue;
		tmp[i] = '\0';
		if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
			return err_set(err, AMIS_E_INVALID_PATH, "cannot create %s: %s", tmp,
			               strerror(errno));
		tmp[i] = '/';
	}
	if (mkdir(tmp, 0755) < 0 && errno != EEXIST)
		return err_set(err, AMIS_E_INVALID_PATH, "cannot create %s: %s", tmp,
		               strerror(errno));
	return 0;
}
