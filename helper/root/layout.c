/*
 * layout.c - where each volume of a snapshot set belonged (see layout.h).
 */
#include "layout.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

const char *layout_partition(const char *source, const char *disk, char *buf, size_t bufsz)
{
	const char *base = strrchr(source, '/');
	size_t n = strlen(disk);
	const char *p;

	base = base ? base + 1 : source;
	if (strncmp(base, disk, n))
		return NULL;
	p = base + n;
	if (!*p) {
		buf[0] = '\0';
		return buf;
	}
	/* nvme1n1p2, mmcblk0p1: a "p" when the disk name ends in a digit. */
	if (*p == 'p' && n && isdigit((unsigned char)disk[n - 1]))
		p++;
	if (!*p || strspn(p, "0123456789") != strlen(p) || strlen(p) >= bufsz)
		return NULL;
	snprintf(buf, bufsz, "%s", p);
	return buf;
}

/* The volume id of disk d of a target: its own, or the plan's for a Xen disk. */
static const char *disk_volume_id(const struct fs_disk *d, const struct freeze_plan *plan)
{
	size_t i;

	if (d->volume_id[0])
		return d->volume_id;
	for (i = 0; plan && i < plan->ndisks; i++)
		if (!strcmp(plan->disks[i].name, d->name))
			return plan->disks[i].volume_id;
	return "";
}

/* Copies src into dst (dstsz bytes) if it fits; else leaves dst empty. */
static void copy_if_fits(char *dst, size_t dstsz, const char *src)
{
	size_t n = strlen(src);

	dst[0] = '\0';
	if (n < dstsz)
		memcpy(dst, src, n + 1);
}

static void add(struct layout_tags *out, const char *key, const char *value)
{
	if (out->n < LAYOUT_MAX_VOLUME_TAGS && value[0] && strlen(value) <= LAYOUT_TAG_VALUE_MAX)
		out->tags[out->n++] = (struct ec2_tag){key, value};
}

void layout_volume_tags(const struct fs_target *targets, size_t ntargets,
                        const struct freeze_plan *plan, const char *volume_id,
                        struct layout_tags *out)
{
	const struct fs_target *t = NULL;
	const struct fs_disk *disk = NULL;
	size_t i, j;

	memset(out, 0, sizeof(*out));
	for (i = 0; i < ntargets && !t; i++)
		for (j = 0; j < targets[i].ndisks; j++)
			if (!strcmp(disk_volume_id(&targets[i].disks[j], plan), volume_id)) {
				t = &targets[i];
				disk = &t->disks[j];
				break;
			}
	if (!t)
		return;
	copy_if_fits(out->mount_point, sizeof(out->mount_point), t->mount_point);
	copy_if_fits(out->fstype, sizeof(out->fstype), t->fstype);
	add(out, "ami-snapshot:mount-point", out->mount_point);
	add(out, "ami-snapshot:fstype", out->fstype);
	if (t->ndisks == 1 &&
	    layout_partition(t->source, disk->name, out->partition, sizeof(out->partition))) {
		add(out, "ami-snapshot:partition", out->partition);
		return;
	}
	/* LVM, md: the operator assembles the filesystem from all its volumes. */
	snprintf(out->fs_volumes, sizeof(out->fs_volumes), "%zu", t->ndisks);
	add(out, "ami-snapshot:fs-volumes", out->fs_volumes);
	copy_if_fits(out->fs_source, sizeof(out->fs_source), t->source);
	add(out, "ami-snapshot:fs-source", out->fs_source);
}
