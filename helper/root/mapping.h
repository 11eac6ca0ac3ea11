/*
 * mapping.h - the instance's block device mapping kept between requests.
 *
 * PREPARE needs the mapping (DescribeInstances) to know which volumes to
 * exclude, and a DryRun CreateSnapshots of the exact request to check the
 * permission before any backup starts: two round trips one after the other.
 * With the mapping of the previous request kept, both go at once: the DryRun
 * of the request built from the kept mapping, and DescribeInstances, whose
 * fresh answer is compared with the kept one.  The same mapping: the DryRun
 * checked the very request.  A different one (a volume attached, detached or
 * moved): the kept mapping is replaced, the request rebuilt and checked by a
 * DryRun of its own.  So the kept mapping never decides what is snapshotted:
 * it only lets the permission check start one round trip earlier.
 */
#ifndef AMIS_MAPPING_H
#define AMIS_MAPPING_H

#include "channel.h"
#include "util.h"

#include <stdbool.h>

/* The kept mapping (NULL: none yet) is of instance_id. */
bool mapping_usable(const struct ec2_instance_info *kept, const char *instance_id);

/*
 * Whether two DescribeInstances answers plan the same snapshot set: the
 * instance, its root device, and the same EBS volumes on the same devices
 * (in any order).
 */
bool mapping_same(const struct ec2_instance_info *a, const struct ec2_instance_info *b);

/*
 * Whether an error says the instance or its volumes are not what the helper
 * believed (the instance or a volume gone, a volume in a state it cannot be
 * snapshotted in, a set that is not the volumes asked for): the kept
 * mapping is then forgotten.
 */
bool mapping_error_invalidates(const struct amis_err *err);

#endif
