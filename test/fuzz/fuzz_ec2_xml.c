/*
 * fuzz_ec2_xml.c - libFuzzer target for the EC2 response parsers
 * (helper/ec2.h, helper/worker/xml.h): what the helper reads from the network.
 *
 * Input: one selector byte, then the HTTP body.  Selector bits 0-1 choose
 * the parser (for 2, bits 2-3 choose DescribeInstances or one of the
 * image answers: DescribeImages, DescribeVolumes, RegisterImage/CreateImage); for
 * ec2_parse_response, bits 2-3 the action, bit 4 dry_run, bits 5-7 the HTTP status (bit 5 also adds
 * an x-amzn-requestid header); a parsed document then also goes through the typed parser of that
 * action. Everything returned is freed, so LeakSanitizer checks the error paths too.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ec2.h"
#include "xml.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

#define INSTANCE_ID "i-0123456789abcdef0"

static void check_err(int rc, const struct amis_err *err)
{
	/* Every failure says what it is; messages are bounded C strings. */
	if (rc != 0 && (err->code[0] == '\0' || memchr(err->msg, '\0', sizeof(err->msg)) == NULL)) {
		fprintf(stderr, "fuzz_ec2_xml: failure without a code\n");
		abort();
	}
}

static void parse_response(unsigned char sel, const char *body, size_t len)
{
	static const char *const actions[] = {"CreateSnapshots", "DescribeSnapshots",
	                                      "DescribeInstances", "CreateTags"};
	static const long statuses[] = {200, 200, 400, 403, 412, 500, 503, 302};
	const char *action = actions[(sel >> 2) & 3];
	bool dry_run = (sel >> 4) & 1;
	long status = statuses[(sel >> 5) & 7];
	static struct ec2_instance_info inst;
	struct ec2_snapshot_set set;
	struct amis_err err;
	xmlDocPtr doc = NULL;
	int rc;

	err_clear(&err);
	rc = ec2_parse_response(action, status, body, len, (sel & 0x20) ? "hdr-req-1" : NULL,
	                        dry_run, &doc, &err);
	check_err(rc, &err);
	if (rc != 0 || !doc)
		return;
	err_clear(&err);
	switch ((sel >> 2) & 3) {
	case 0:
		rc = ec2_parse_snapshot_set(doc, EC2_CREATED_STATE, &set, &err);
		if (rc == 0)
			ec2_snapshot_set_free(&set);
		break;
	case 1:
		rc = ec2_parse_snapshot_set(doc, "", &set, &err);
		if (rc == 0)
			ec2_snapshot_set_free(&set);
		break;
	case 2:
		rc = ec2_parse_instance(doc, INSTANCE_ID, &inst, &err);
		break;
	default:
		rc = ec2_parse_create_tags(doc, &err);
		break;
	}
	check_err(rc, &err);
	xml_free(doc);
}

/* DescribeInstances, and the answers the AMI methods read. */
static int parse_other(unsigned char sel, const char *body, size_t size, struct amis_err *err)
{
	static struct ec2_instance_info inst; /* ~7 KB */
	static struct ec2_image_info img;
	static struct ec2_volume_set vs;
	char id[32];
	int rc;

	switch ((sel >> 2) & 3) {
	case 0:
		rc = ec2_parse_describe_instance(body, size, INSTANCE_ID, &inst, err);
		if (rc == 0 && inst.nvolumes > EC2_MAX_INSTANCE_VOLUMES)
			abort();
		return rc;
	case 1:
		rc = ec2_parse_describe_images(body, size, &img, err);
		if (rc == 0 && (img.nmappings > EC2_MAX_INSTANCE_VOLUMES ||
		                img.nproduct_codes > EC2_MAX_PRODUCT_CODES))
			abort();
		return rc;
	case 2:
		rc = ec2_parse_describe_volumes(body, size, &vs, err);
		if (rc == 0 && vs.n > EC2_MAX_INSTANCE_VOLUMES)
			abort();
		return rc;
	default:
		rc = ec2_parse_new_image((sel & 0x10) ? "CreateImage" : "RegisterImage", body, size,
		                         id, sizeof(id), err);
		if (rc == 0 && !aws_resource_id_valid(id, "ami"))
			abort();
		return rc;
	}
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	struct ec2_snapshot_set set;
	struct amis_err err;
	const char *body;
	unsigned char sel;
	int rc;

	if (size < 1)
		return 0;
	sel = data[0];
	body = (const char *)data + 1;
	size--;
	err_clear(&err);
	switch (sel & 3) {
	case 0:
		rc = ec2_parse_create_snapshots(body, size, &set, &err);
		if (rc == 0)
			ec2_snapshot_set_free(&set);
		break;
	case 1:
		rc = ec2_parse_describe_snapshots(body, size, &set, &err);
		if (rc == 0)
			ec2_snapshot_set_free(&set);
		break;
	case 2:
		rc = parse_other(sel, body, size, &err);
		break;
	default:
		parse_response(sel, body, size);
		return 0;
	}
	check_err(rc, &err);
	return 0;
}
