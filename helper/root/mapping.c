/*
 * mapping.c - see mapping.h.
 */
#include "mapping.h"
#include "errcodes.h"

#include <string.h>

bool mapping_usable(const struct ec2_instance_info *kept, const char *instance_id)
{
	return kept && instance_id && instance_id[0] && !strcmp(kept->instance_id, instance_id);
}

static bool has_volume(const struct ec2_instance_info *m, const struct ec2_block_device *bd)
{
	size_t i;

	for (i = 0; i < m->nvolumes; i++)
		if (!strcmp(m->volumes[i].volume_id, bd->volume_id) &&
		    !strcmp(m->volumes[i].device_name, bd->device_name))
			return true;
	return false;
}

bool mapping_same(const struct ec2_instance_info *a, const struct ec2_instance_info *b)
{
	size_t i;

	if (strcmp(a->instance_id, b->instance_id) != 0 ||
	    strcmp(a->root_device_name, b->root_device_name) != 0 || a->nvolumes != b->nvolumes)
		return false;
	/* Same count, each of a's in b: the same set (ids are unique in a mapping). */
	for (i = 0; i < a->nvolumes; i++)
		if (!has_volume(b, &a->volumes[i]))
			return false;
	return true;
}

bool mapping_error_invalidates(const struct amis_err *err)
{
	/* EC2's codes ("Error codes for the Amazon EC2 API") and the helper's own. */
	static const char *const prefixes[] = {
	    "InvalidInstanceID",      "InvalidVolume",     "IncorrectState",
	    "IncorrectInstanceState", "VolumeNotAttached", "VolumeNotFound",
	    "UnexpectedSnapshotSet",
	};
	size_t i;

	for (i = 0; i < sizeof(prefixes) / sizeof(prefixes[0]); i++)
		if (!strncmp(err->code, prefixes[i], strlen(prefixes[i])))
			return true;
	return false;
}
