/*
 * fuzz_lifecycle.c - libFuzzer target for what the lifecycle commands parse
 * (helper/worker/ec2_lifecycle.h, helper/cli/lifecycle.h,
 * helper/common/retention.h): DescribeSnapshots and DescribeImages pages
 * (then grouped into backups, their state derived and their JSON made),
 * LockSnapshot answers, copies' ids, EC2's times, and retention policies
 * (then applied to the backups of the same input).
 *
 * Input: one selector byte (its low 3 bits choose), then the body.
 * Everything returned is freed, so LeakSanitizer checks the error paths too.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lifecycle.h"
#include "xml.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void check_err(int rc, const struct amis_err *err)
{
	if (rc != 0 && (err->code[0] == '\0' || memchr(err->msg, '\0', sizeof(err->msg)) == NULL)) {
		fprintf(stderr, "fuzz_lifecycle: failure without a code\n");
		abort();
	}
}

static xmlDocPtr parse(const char *action, const char *body, size_t len)
{
	struct amis_err err;
	xmlDocPtr doc = NULL;
	int rc;

	err_clear(&err);
	rc = ec2_parse_response(action, 200, body, len, NULL, false, &doc, &err);
	check_err(rc, &err);
	return rc == 0 ? doc : NULL;
}

/* Backups of a page of snapshots (and images), each decided by a policy. */
static void backups(const char *body, size_t len, bool images)
{
	struct lc_inventory inv;
	struct lc_scope scope = {NULL, NULL, NULL};
	struct ret_policy pol = {.pattern = "*", .keep_last = 2, .keep_daily = 3};
	struct ret_backup *rb;
	struct ret_decision *d;
	struct amis_err err;
	char token[256];
	xmlDocPtr doc = parse(images ? "DescribeImages" : "DescribeSnapshots", body, len);
	size_t i;
	int rc;

	if (!doc)
		return;
	memset(&inv, 0, sizeof(inv));
	snprintf(inv.region, sizeof(inv.region), "us-east-1");
	err_clear(&err);
	rc = images ? ec2_parse_lc_images(doc, &inv.images, token, sizeof(token), &err)
	            : ec2_parse_lc_snapshots(doc, &inv.snaps, token, sizeof(token), &err);
	check_err(rc, &err);
	xml_free(doc);
	lc_group(&inv, &scope, 1796259600);
	rb = calloc(inv.n ? inv.n : 1, sizeof(*rb));
	d = calloc(inv.n ? inv.n : 1, sizeof(*d));
	if (!rb || !d)
		abort();
	for (i = 0; i < inv.n; i++) {
		json_object *o = lc_backup_json(&inv.items[i], 1796259600);

		json_object_put(o);
		if (inv.items[i].progress < 0 || inv.items[i].progress > 100 ||
		    inv.items[i].nsnaps > LC_MAX_SNAPSHOTS)
			abort();
		rb[i] = (struct ret_backup){inv.items[i].request_id,
		                            inv.items[i].name,
		                            inv.items[i].ami ? RET_AMI : RET_SET,
		                            inv.items[i].created_t,
		                            lc_retention_state(&inv.items[i]),
		                            0,
		                            false};
	}
	ret_decide(rb, inv.n, &pol, 1, 1796259600, d);
	free(rb);
	free(d);
	lc_inventory_free(&inv);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	const char *body;
	struct amis_err err;
	struct lc_lock lock;
	struct ret_policy pol;
	xmlDocPtr doc;
	char id[64], why[256], *text;
	unsigned char sel;

	if (size < 1)
		return 0;
	sel = data[0];
	body = (const char *)data + 1;
	size--;
	err_clear(&err);
	switch (sel & 7) {
	case 0:
		backups(body, size, false);
		break;
	case 1:
		backups(body, size, true);
		break;
	case 2:
		doc = parse("LockSnapshot", body, size);
		if (doc) {
			check_err(ec2_parse_lock(xml_root(doc), &lock, &err), &err);
			xml_free(doc);
		}
		break;
	case 3:
		doc = parse("CopySnapshot", body, size);
		if (doc) {
			if (ec2_parse_new_id(doc, "snapshotId", "snap", id, sizeof(id), &err) ==
			        0 &&
			    !aws_resource_id_valid(id, "snap"))
				abort();
			xml_free(doc);
		}
		break;
	case 4:
		text = malloc(size + 1);
		if (!text)
			abort();
		memcpy(text, body, size);
		text[size] = '\0';
		if (ret_parse_policy(text, &pol, why, sizeof(why)) == 0 && !pol.pattern)
			abort();
		free(text);
		break;
	default:
		text = malloc(size + 1);
		if (!text)
			abort();
		memcpy(text, body, size);
		text[size] = '\0';
		(void)lc_parse_time(text);
		(void)ret_parse_duration(text);
		free(text);
		break;
	}
	return 0;
}
