/*
 * layout.h - the tags that tell a restore where each volume belonged: the
 * mount point and filesystem type of the filesystem on it, the partition
 * holding it, and (set-wide) the data directory and how many volumes the set
 * has.  doc/restore.md, "What each snapshot carries", lists them; the
 * restore command (ami-snapshot restore) reads them.
 */
#ifndef AMIS_LAYOUT_H
#define AMIS_LAYOUT_H

#include "channel.h"
#include "volumes.h"

#include <stddef.h>

#define LAYOUT_TAG_VALUE_MAX 256 /* EC2's limit for a tag value */
#define LAYOUT_MAX_VOLUME_TAGS 5

/* The per-volume tags of one snapshot; keys are literals, values in here. */
struct layout_tags {
	size_t n;
	struct ec2_tag tags[LAYOUT_MAX_VOLUME_TAGS];
	char mount_point[LAYOUT_TAG_VALUE_MAX + 1];
	char fstype[32];
	char partition[16];
	char fs_volumes[16];
	char fs_source[LAYOUT_TAG_VALUE_MAX + 1];
};

/*
 * The tags of the snapshot of volume_id: the first of targets (data
 * directory first) whose filesystem is on it.  A Xen disk has no volume id
 * in the target; plan's disks (whose ids DescribeInstances filled in) give
 * it by disk name.  A volume under no target gets no tags (n = 0).  Values
 * longer than EC2 allows are left out (the restore then needs --root and
 * says so).
 */
void layout_volume_tags(const struct fs_target *targets, size_t ntargets,
                        const struct freeze_plan *plan, const char *volume_id,
                        struct layout_tags *out);

/*
 * The partition number of source on disk ("/dev/nvme1n1p2" on "nvme1n1" ->
 * "2", "/dev/xvdf1" on "xvdf" -> "1"), "" for the whole disk, NULL when
 * source is neither (device-mapper, md).
 */
const char *layout_partition(const char *source, const char *disk, char *buf, size_t bufsz);

#endif
