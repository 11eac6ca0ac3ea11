/*
 * check.c - see check.h: the rows, the actions to test, the answer.
 * handle_check() (the conversation) is in check_op.c.
 */
#include "check.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

void check_add(struct check_rows *r, const char *name, const char *result, const char *hint,
               const char *fmt, ...)
{
	struct check_row *row;
	va_list ap;

	if (r->n >= AMSP_MAX_CHECKS)
		return;
	row = &r->row[r->n++];
	snprintf(row->name, sizeof(row->name), "%s", name);
	snprintf(row->result, sizeof(row->result), "%s", result);
	snprintf(row->hint, sizeof(row->hint), "%s", hint ? hint : "");
	va_start(ap, fmt);
	vsnprintf(row->detail, sizeof(row->detail), fmt, ap);
	va_end(ap);
}

static void add(const char **out, size_t *n, size_t max, const char *action)
{
	size_t i;

	for (i = 0; i < *n; i++)
		if (!strcmp(out[i], action))
			return;
	if (*n < max)
		out[(*n)++] = action;
}

size_t check_ec2_actions(const struct helper_config *cfg, const char *image, const char **out,
                         size_t max)
{
	/* PREPARE and FINISH (doc/design.md; install.md's minimal policy). */
	static const char *const sets[] = {"DescribeInstances", "CreateTags"};
	/* The AMI methods (doc/design.md, "AMIs"; install.md, "For AMIs"). */
	static const char *const images[] = {"DescribeImages", "DescribeVolumes",
	                                     "DescribeSnapshots", "DeregisterImage"};
	/* `ami-snapshot verify` (doc/verify.md): the sets, volumes; with --launch, an instance. */
	static const char *const drill[] = {
	    "DescribeSnapshots",  "DescribeVolumes",       "CreateVolume",   "AttachVolume",
	    "DetachVolume",       "DeleteVolume",          "DescribeImages", "RunInstances",
	    "TerminateInstances", "DescribeInstanceStatus"};
	size_t n = 0, i;

	for (i = 0; i < sizeof(sets) / sizeof(sets[0]); i++)
		add(out, &n, max, sets[i]);
	if (image && (!strcmp(image, "register") || !strcmp(image, "create"))) {
		for (i = 0; i < sizeof(images) / sizeof(images[0]); i++)
			add(out, &n, max, images[i]);
		add(out, &n, max, !strcmp(image, "register") ? "RegisterImage" : "CreateImage");
	}
	if (cfg->drill_section)
		for (i = 0; i < sizeof(drill) / sizeof(drill[0]); i++)
			add(out, &n, max, drill[i]);
	if (cfg->n_copy_regions || cfg->n_copy_share_accounts) {
		add(out, &n, max, "DescribeSnapshots");
		add(out, &n, max, "CopySnapshot");
		add(out, &n, max, "CopyImage");
	}
	if (cfg->lock_mode) {
		add(out, &n, max, "LockSnapshot");
		add(out, &n, max, "UnlockSnapshot");
	}
	if (cfg->n_retention_policies) {
		add(out, &n, max, "DescribeSnapshots");
		add(out, &n, max, "DescribeImages");
		add(out, &n, max, "DeleteSnapshot");
		add(out, &n, max, "DeregisterImage");
	}
	return n;
}

size_t check_reply_build(const struct check_rows *r, const char *version, unsigned char *buf,
                         size_t cap)
{
	struct amsp_writer w;
	size_t i;

	amsp_begin(&w, buf, cap, AMSP_CHECK_REPLY);
	amsp_put_str(&w, AMSP_T_HELPER_VERSION, version);
	for (i = 0; i < r->n; i++) {
		amsp_put_str(&w, AMSP_T_CHECK_NAME, r->row[i].name);
		amsp_put_str(&w, AMSP_T_CHECK_RESULT, r->row[i].result);
		amsp_put_str(&w, AMSP_T_CHECK_DETAIL, r->row[i].detail);
		amsp_put_str(&w, AMSP_T_CHECK_HINT, r->row[i].hint);
	}
	return amsp_end(&w);
}
