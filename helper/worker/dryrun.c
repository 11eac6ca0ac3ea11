/*
 * dryrun.c - see dryrun.h.
 */
#include "dryrun.h"
#include "errcodes.h"

#include <stdio.h>
#include <string.h>

/* Ids that cannot name anything of the account: shaped right, all zeros. */
#define NO_SNAPSHOT "snap-00000000000000000"
#define NO_VOLUME "vol-00000000000000000"
#define NO_IMAGE "ami-00000000000000000"
#define NO_INSTANCE "i-00000000000000000"

static const char *const known[] = {
    "CreateSnapshots",   "CreateTags",         "DescribeInstances",
    "DescribeSnapshots", "DescribeVolumes",    "DescribeImages",
    "CreateImage",       "RegisterImage",      "CreateVolume",
    "AttachVolume",      "DetachVolume",       "DeleteVolume",
    "RunInstances",      "TerminateInstances", "DescribeInstanceStatus",
    "CopySnapshot",      "CopyImage",          "LockSnapshot",
    "UnlockSnapshot",    "DeleteSnapshot",     "DeregisterImage",
};

bool dryrun_known(const char *action)
{
	size_t i;

	for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
		if (!strcmp(known[i], action))
			return true;
	return false;
}

bool dryrun_possible(const char *action, const char **why)
{
	*why = NULL;
	if (!strcmp(action, "RegisterImage")) {
		*why = "not tested: RegisterImage's DryRun needs existing, completed snapshots, "
		       "and the check makes none";
		return false;
	}
	return true;
}

bool dryrun_wants_snapshot(const char *action)
{
	return !strcmp(action, "CreateTags") || !strcmp(action, "DeleteSnapshot") ||
	       !strcmp(action, "LockSnapshot") || !strcmp(action, "UnlockSnapshot") ||
	       !strcmp(action, "CopySnapshot");
}

void dryrun_find_snapshot_params(struct ec2_params *p)
{
	ec2_params_add(p, "Owner.1", "self");
	ec2_params_add(p, "Filter.1.Name", "tag-key");
	ec2_params_add(p, "Filter.1.Value.1", "ami-snapshot:request-id");
	ec2_params_add(p, "MaxResults", "5");
}

int dryrun_params(const char *action, const struct dryrun_ctx *c, struct ec2_params *p)
{
	const char *vol = c->volume_id && c->volume_id[0] ? c->volume_id : NULL;
	const char *snap = c->snapshot_id && c->snapshot_id[0] ? c->snapshot_id : NO_SNAPSHOT;

	if (!dryrun_known(action))
		return -1;
	ec2_params_add(p, "DryRun", "true");
	if (!strcmp(action, "CreateSnapshots")) {
		ec2_params_add(p, "InstanceSpecification.InstanceId", c->instance_id);
		ec2_params_add(p, "InstanceSpecification.ExcludeBootVolume", "true");
	} else if (!strcmp(action, "CreateTags")) {
		/* Our tags go on snapshots (and images): install.md's policy allows those. */
		ec2_params_add(p, "ResourceId.1", snap);
		ec2_params_add(p, "Tag.1.Key", "ami-snapshot:check");
		ec2_params_add(p, "Tag.1.Value", "dry-run");
	} else if (!strcmp(action, "DescribeInstances") ||
	           !strcmp(action, "DescribeInstanceStatus")) {
		ec2_params_add(p, "InstanceId.1", c->instance_id);
	} else if (!strcmp(action, "DescribeSnapshots") || !strcmp(action, "DescribeImages")) {
		ec2_params_add(p, "Owner.1", "self");
	} else if (!strcmp(action, "DescribeVolumes")) {
		if (vol)
			ec2_params_add(p, "VolumeId.1", vol);
	} else if (!strcmp(action, "CreateImage")) {
		ec2_params_add(p, "InstanceId", c->instance_id);
		ec2_params_add(p, "Name", "ami-snapshot preflight check");
		ec2_params_add(p, "NoReboot", "true");
	} else if (!strcmp(action, "CreateVolume")) {
		ec2_params_add(p, "AvailabilityZone",
		               c->availability_zone && c->availability_zone[0]
		                   ? c->availability_zone
		                   : c->region);
		ec2_params_add(p, "Size", "1");
		ec2_params_add(p, "VolumeType", "gp3");
	} else if (!strcmp(action, "AttachVolume")) {
		ec2_params_add(p, "VolumeId", NO_VOLUME);
		ec2_params_add(p, "InstanceId", c->instance_id);
		ec2_params_add(p, "Device", "/dev/sdz");
	} else if (!strcmp(action, "DetachVolume") || !strcmp(action, "DeleteVolume")) {
		ec2_params_add(p, "VolumeId", NO_VOLUME);
	} else if (!strcmp(action, "RunInstances")) {
		ec2_params_add(p, "ImageId", NO_IMAGE);
		ec2_params_add(p, "InstanceType", "t3.micro");
		ec2_params_add(p, "MinCount", "1");
		ec2_params_add(p, "MaxCount", "1");
	} else if (!strcmp(action, "TerminateInstances")) {
		ec2_params_add(p, "InstanceId.1", NO_INSTANCE);
	} else if (!strcmp(action, "CopySnapshot")) {
		ec2_params_add(p, "SourceRegion", c->region);
		ec2_params_add(p, "SourceSnapshotId", snap);
	} else if (!strcmp(action, "CopyImage")) {
		ec2_params_add(p, "SourceRegion", c->region);
		ec2_params_add(p, "SourceImageId", NO_IMAGE);
		ec2_params_add(p, "Name", "ami-snapshot preflight check");
	} else if (!strcmp(action, "LockSnapshot")) {
		ec2_params_add(p, "SnapshotId", snap);
		ec2_params_add(p, "LockMode", "governance");
		ec2_params_add(p, "LockDuration", "1");
	} else if (!strcmp(action, "UnlockSnapshot") || !strcmp(action, "DeleteSnapshot")) {
		ec2_params_add(p, "SnapshotId", snap);
	} else if (!strcmp(action, "DeregisterImage")) {
		ec2_params_add(p, "ImageId", NO_IMAGE);
	}
	return 0;
}

/*
 * Codes that say EC2 could not be asked, or refused who asked: no verdict
 * on the action.  The helper's own codes (registered without AMIS_F_EC2)
 * are about the network or the credentials; EC2's codes the helper does
 * not know (InvalidSnapshot.NotFound) are EC2's answer about the request.
 */
static bool cannot_ask(const struct amis_err *err)
{
	unsigned f = amis_code_flags(err->code);

	if (f & (AMIS_F_RETRY | AMIS_F_CREDS))
		return true;
	if (amis_code_of(err->code) != AMIS_E_NONE && !(f & AMIS_F_EC2))
		return true;
	return !strcmp(err->code, "MissingCredentials") ||
	       !strcmp(err->code, "SignatureDoesNotMatch") || !strcmp(err->code, "OptInRequired");
}

enum dryrun_result dryrun_verdict(const char *action, int rc, const struct amis_err *err,
                                  char *detail, size_t detailsz, char *hint, size_t hintsz)
{
	hint[0] = '\0';
	if (rc == 0) {
		snprintf(detail, detailsz, "allowed: the DryRun answered DryRunOperation");
		return DRYRUN_ALLOWED;
	}
	if (err_is(err, AMIS_E_UNAUTHORIZED_OPERATION)) {
		snprintf(detail, detailsz, "denied: %s", err->msg);
		snprintf(hint, hintsz,
		         "allow the IAM action ec2:%s in the policy of the helper's credentials "
		         "(doc/install.md, IAM policy)",
		         action);
		return DRYRUN_DENIED;
	}
	if (cannot_ask(err)) {
		snprintf(detail, detailsz, "could not ask EC2: %s: %s", err->code, err->msg);
		snprintf(hint, hintsz, "see the credentials, region and EC2 rows above");
		return DRYRUN_FAILED;
	}
	snprintf(detail, detailsz,
	         "not proven: EC2 answered %s before it checked the permission (the check has no "
	         "resource of its own to name); make sure ec2:%s is allowed",
	         err->code, action);
	return DRYRUN_INCONCLUSIVE;
}

const char *dryrun_result_name(enum dryrun_result r)
{
	switch (r) {
	case DRYRUN_ALLOWED:
		return "ok";
	case DRYRUN_DENIED:
	case DRYRUN_FAILED:
		return "failed";
	case DRYRUN_INCONCLUSIVE:
		break;
	}
	return "skipped";
}
