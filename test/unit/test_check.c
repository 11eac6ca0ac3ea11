/*
 * test_check.c - the preflight check's pure parts: which EC2 actions the
 * configuration's features call (root/check.c), and how each DryRun is
 * made and read (worker/dryrun.c).  The conversation itself is in
 * test_operation.c (CHECK), end to end in test/e2e/test_check.py.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "config.h"
#include "dryrun.h"
#include "ec2.h"
#include "tap.h"

static bool has(const char **a, size_t n, const char *s)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (!strcmp(a[i], s))
			return true;
	return false;
}

static size_t actions_of(const char *text, const char *image, const char **out)
{
	struct helper_config cfg;
	struct amis_err err;
	size_t n;

	config_init(&cfg);
	if (config_load_string(&cfg, text, &err) != 0) {
		printf("# config: %s\n", err.msg);
		return 0;
	}
	n = check_ec2_actions(&cfg, image, out, 32);
	config_free(&cfg);
	return n;
}

static void test_actions(void)
{
	const char *a[32];
	size_t n, i, j;
	bool dup = false;

	n = actions_of("[helper]\nallowed_users = root\n", NULL, a);
	ok(has(a, n, "DescribeInstances") && has(a, n, "CreateTags"),
	   "snapshot sets: DescribeInstances, CreateTags");
	ok(!has(a, n, "CreateImage") && !has(a, n, "CreateVolume") && !has(a, n, "DeleteSnapshot"),
	   "... nothing of AMIs, the drill or retention");
	n = actions_of("[helper]\nallowed_users = root\n", "create", a);
	ok(has(a, n, "CreateImage") && !has(a, n, "RegisterImage") &&
	       has(a, n, "DeregisterImage") && has(a, n, "DescribeImages"),
	   "image create: CreateImage, DescribeImages, DeregisterImage (the cleanup)");
	n = actions_of("[helper]\nallowed_users = root\n", "register", a);
	ok(has(a, n, "RegisterImage") && !has(a, n, "CreateImage"),
	   "image register: RegisterImage");
	n = actions_of("[helper]\nallowed_users = root\n[drill]\nmax_jobs = 1\n", NULL, a);
	ok(has(a, n, "CreateVolume") && has(a, n, "AttachVolume") && has(a, n, "DeleteVolume") &&
	       has(a, n, "RunInstances") && has(a, n, "TerminateInstances"),
	   "[drill]: the drill's volumes and instance");
	n = actions_of("[helper]\nallowed_users = root\n[retention]\npolicy = nightly:last=7\n"
	               "[lock]\nmode = governance\ndays = 7\n[copy]\nregions = us-east-1\n",
	               "create", a);
	ok(has(a, n, "DeleteSnapshot") && has(a, n, "LockSnapshot") && has(a, n, "CopySnapshot") &&
	       has(a, n, "CopyImage"),
	   "[retention], [lock], [copy]: theirs (n=%zu)", n);
	for (i = 0; i < n; i++)
		for (j = i + 1; j < n; j++)
			dup = dup || !strcmp(a[i], a[j]);
	ok(!dup, "each action once");
	for (i = 0; i < n; i++)
		ok(dryrun_known(a[i]), "the worker knows %s", a[i]);
}

static const char *param(const char *action, const struct dryrun_ctx *c, const char *name)
{
	static char v[256];
	struct ec2_params p;
	const char *got;

	ec2_params_init(&p);
	if (dryrun_params(action, c, &p) != 0) {
		ec2_params_free(&p);
		return "(unknown action)";
	}
	got = ec2_params_get(&p, name);
	snprintf(v, sizeof(v), "%s", got ? got : "(none)");
	ec2_params_free(&p);
	return v;
}

static void test_params(void)
{
	struct dryrun_ctx c = {"i-0123456789abcdef0", "eu-west-1", "eu-west-1b", "vol-0abc", ""};
	const char *why;

	is_str(param("CreateSnapshots", &c, "DryRun"), "true", "every request is a DryRun");
	is_str(param("DeleteVolume", &c, "DryRun"), "true", "... DeleteVolume's too");
	is_str(param("CreateSnapshots", &c, "InstanceSpecification.InstanceId"),
	       "i-0123456789abcdef0", "CreateSnapshots names this instance");
	is_str(param("CreateTags", &c, "ResourceId.1"), "snap-00000000000000000",
	       "CreateTags: an id that cannot exist when no snapshot of ours is known");
	c.snapshot_id = "snap-0feedfacefeedface";
	is_str(param("CreateTags", &c, "ResourceId.1"), "snap-0feedfacefeedface",
	       "... a snapshot of ours when one was found");
	is_str(param("DeleteSnapshot", &c, "SnapshotId"), "snap-0feedfacefeedface",
	       "DeleteSnapshot: the same");
	is_str(param("CreateTags", &c, "Tag.1.Key"), "ami-snapshot:check",
	       "CreateTags: a key of ours (install.md's policy allows ami-snapshot:*)");
	is_str(param("CreateVolume", &c, "AvailabilityZone"), "eu-west-1b",
	       "CreateVolume in this instance's zone");
	is_str(param("DescribeVolumes", &c, "VolumeId.1"), "vol-0abc", "DescribeVolumes: ours");
	is_str(param("RebootInstances", &c, "DryRun"), "(unknown action)", "an unknown action: -1");
	ok(!dryrun_possible("RegisterImage", &why) && why && strstr(why, "snapshots"),
	   "RegisterImage is not sent, and why: %s", why ? why : "");
	ok(dryrun_possible("CreateImage", &why), "CreateImage is");
	ok(dryrun_wants_snapshot("LockSnapshot") && !dryrun_wants_snapshot("CreateVolume"),
	   "which actions work on a snapshot");
}

static enum dryrun_result verdict(const char *code, char *detail, char *hint)
{
	struct amis_err err;

	err_clear(&err);
	if (code)
		err_set_code(&err, code, "EC2 X: the message (request id r-1)");
	return dryrun_verdict("DeleteSnapshot", code ? -1 : 0, &err, detail, 512, hint, 512);
}

static void test_verdicts(void)
{
	char d[512], h[512];

	is_int(verdict(NULL, d, h), DRYRUN_ALLOWED, "DryRunOperation (ec2_call's 0): allowed");
	is_str(dryrun_result_name(DRYRUN_ALLOWED), "ok", "... the row says ok");
	is_int(verdict("UnauthorizedOperation", d, h), DRYRUN_DENIED,
	       "UnauthorizedOperation: denied");
	ok(strstr(h, "ec2:DeleteSnapshot") != NULL, "... the hint names the IAM action: %s", h);
	is_str(dryrun_result_name(DRYRUN_DENIED), "failed", "... the row says failed");
	is_int(verdict("InvalidSnapshot.NotFound", d, h), DRYRUN_INCONCLUSIVE,
	       "InvalidSnapshot.NotFound: proves nothing");
	ok(strstr(d, "InvalidSnapshot.NotFound") && strstr(d, "ec2:DeleteSnapshot"),
	   "... the detail says which code and which action: %s", d);
	is_str(dryrun_result_name(DRYRUN_INCONCLUSIVE), "skipped", "... the row says skipped");
	is_int(verdict("InvalidParameterValue", d, h), DRYRUN_INCONCLUSIVE,
	       "InvalidParameterValue: proves nothing either");
	is_int(verdict("Timeout", d, h), DRYRUN_FAILED, "Timeout: EC2 could not be asked");
	is_int(verdict("ConnectionError", d, h), DRYRUN_FAILED, "ConnectionError: the same");
	is_int(verdict("AuthFailure", d, h), DRYRUN_FAILED, "AuthFailure: the credentials refused");
	is_int(verdict("RequestLimitExceeded", d, h), DRYRUN_FAILED, "throttled: not a verdict");
	is_int(verdict("HttpError502", d, h), DRYRUN_FAILED, "a proxy's 502: not a verdict");
}

int main(void)
{
	test_actions();
	test_params();
	test_verdicts();
	return done_testing();
}
