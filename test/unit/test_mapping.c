/*
 * test_mapping.c - the block device mapping kept between requests
 * (root/mapping.c): when a kept mapping may be used, when a fresh one plans
 * the same set, and which errors make the helper forget it.
 */
#include "mapping.h"
#include "tap.h"

#include <stdio.h>
#include <string.h>

static void add(struct ec2_instance_info *m, const char *dev, const char *vol)
{
	struct ec2_block_device *bd = &m->volumes[m->nvolumes++];

	snprintf(bd->device_name, sizeof(bd->device_name), "%s", dev);
	snprintf(bd->volume_id, sizeof(bd->volume_id), "%s", vol);
}

static void base(struct ec2_instance_info *m)
{
	memset(m, 0, sizeof(*m));
	snprintf(m->instance_id, sizeof(m->instance_id), "i-0123456789abcdef0");
	snprintf(m->root_device_name, sizeof(m->root_device_name), "/dev/xvda");
	add(m, "/dev/xvda", "vol-00000000000000001");
	add(m, "/dev/sdf", "vol-00000000000000002");
	add(m, "/dev/sdg", "vol-00000000000000003");
}

static bool code_invalidates(const char *code)
{
	struct amis_err e;

	err_clear(&e);
	snprintf(e.code, sizeof(e.code), "%s", code);
	return mapping_error_invalidates(&e);
}

int main(void)
{
	struct ec2_instance_info a, b;

	base(&a);
	ok(!mapping_usable(NULL, "i-0123456789abcdef0"), "no kept mapping: not usable");
	ok(mapping_usable(&a, "i-0123456789abcdef0"), "the same instance's mapping is usable");
	ok(!mapping_usable(&a, "i-0fedcba9876543210"), "another instance's is not (a new worker "
	                                               "found another instance id)");
	ok(!mapping_usable(&a, ""), "no instance id: not usable");

	base(&b);
	ok(mapping_same(&a, &b), "the same answer: the same mapping");
	memset(&b.volumes, 0, sizeof(b.volumes));
	b.nvolumes = 0;
	add(&b, "/dev/sdg", "vol-00000000000000003");
	add(&b, "/dev/xvda", "vol-00000000000000001");
	add(&b, "/dev/sdf", "vol-00000000000000002");
	ok(mapping_same(&a, &b), "the same volumes listed in another order: the same");

	base(&b);
	add(&b, "/dev/sdh", "vol-00000000000000004");
	ok(!mapping_same(&a, &b), "a volume attached since: different (it must be excluded)");
	ok(!mapping_same(&b, &a), "a volume detached since: different");

	base(&b);
	snprintf(b.volumes[2].volume_id, sizeof(b.volumes[2].volume_id), "vol-00000000000000009");
	ok(!mapping_same(&a, &b), "another volume on the same device: different");

	base(&b);
	snprintf(b.volumes[1].device_name, sizeof(b.volumes[1].device_name), "/dev/sdk");
	ok(!mapping_same(&a, &b), "a volume on another device: different (its device tag)");

	base(&b);
	snprintf(b.root_device_name, sizeof(b.root_device_name), "/dev/sda1");
	ok(!mapping_same(&a, &b), "another root device: different (ExcludeBootVolume)");

	base(&b);
	snprintf(b.instance_id, sizeof(b.instance_id), "i-0fedcba9876543210");
	ok(!mapping_same(&a, &b), "another instance: different");

	ok(code_invalidates("InvalidInstanceID.NotFound"), "InvalidInstanceID.NotFound forgets it");
	ok(code_invalidates("InvalidInstanceID.Malformed"), "InvalidInstanceID.Malformed too");
	ok(code_invalidates("InvalidVolume.NotFound"), "InvalidVolume.NotFound too");
	ok(code_invalidates("IncorrectState"), "IncorrectState too");
	ok(code_invalidates("IncorrectInstanceState"), "IncorrectInstanceState too");
	ok(code_invalidates("VolumeNotAttached"), "the helper's VolumeNotAttached too");
	ok(code_invalidates("VolumeNotFound"), "the helper's VolumeNotFound too");
	ok(code_invalidates("UnexpectedSnapshotSet"),
	   "a set that is not the volumes asked for too");
	ok(!code_invalidates("UnauthorizedOperation"), "a missing permission does not");
	ok(!code_invalidates("RequestLimitExceeded"), "throttling does not");
	ok(!code_invalidates("Timeout"), "a timeout does not");
	ok(!code_invalidates(""), "no code does not");
	return done_testing();
}
