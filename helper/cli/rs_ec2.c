/*
 * rs_ec2.c - the restore command's EC2 calls (see restore.h).
 *
 * Request and response shapes follow the Amazon EC2 API Reference (API
 * version 2016-11-15): DescribeSnapshots (Owner.N, Filter.N.Name/Value.N,
 * NextToken; snapshotSet/item with tagSet/item key/value), DescribeImages
 * (ImageId.N; imagesSet/item/blockDeviceMapping/item/ebs/snapshotId),
 * CreateVolume (SnapshotId, AvailabilityZone, VolumeType, Iops, Throughput,
 * Size, ClientToken, TagSpecification.N; <volumeId>), DescribeVolumes
 * (VolumeId.N; volumeSet/item/status, attachmentSet/item), AttachVolume
 * (VolumeId, InstanceId, Device), DetachVolume, DeleteVolume.  The parsing
 * rule is doc/ec2-parsing.md's: a member is required only when the command
 * cannot do without it.
 *
 * The command runs as root (doc/design.md, "The restore command"): it is
 * an administrator's one-shot tool, as the AWS CLI run by root would be.
 */
#include "restore.h"

#include "aws.h"
#include "config.h"
#include "creds.h"
#include "ec2.h"
#include "imds.h"
#include "log.h"
#include "xml.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define RS_EC2_TIMEOUT_MS 30000L
#define RS_EC2_ATTEMPTS 5

struct rs_aws {
	struct aws_ctx *ctx;          /* the helper's: region, instance, credentials */
	struct ec2_client *ec2;       /* ctx's, or the tests' own */
	struct aws_credentials fixed; /* tests */
	bool has_fixed;
	char instance_id[32];
	char zone[40];
};

struct rs_aws *rs_aws_new(const struct helper_config *cfg)
{
	struct rs_aws *a = xcalloc(1, sizeof(*a));

	a->ctx = aws_ctx_new(cfg);
	return a;
}

struct rs_aws *rs_aws_new_static(const char *endpoint, const char *region, const char *akid,
                                 const char *secret, const char *instance_id, const char *zone)
{
	struct rs_aws *a = xcalloc(1, sizeof(*a));

	a->ec2 = ec2_client_new(endpoint, region);
	if (!a->ec2) {
		free(a);
		return NULL;
	}
	snprintf(a->instance_id, sizeof(a->instance_id), "%s", instance_id ? instance_id : "");
	snprintf(a->zone, sizeof(a->zone), "%s", zone ? zone : "");
	snprintf(a->fixed.access_key_id, sizeof(a->fixed.access_key_id), "%s", akid);
	snprintf(a->fixed.secret_access_key, sizeof(a->fixed.secret_access_key), "%s", secret);
	snprintf(a->fixed.source, sizeof(a->fixed.source), "test");
	a->has_fixed = true;
	return a;
}

void rs_aws_free(struct rs_aws *a)
{
	if (!a)
		return;
	if (a->ctx)
		aws_ctx_free(a->ctx); /* frees its client */
	else
		ec2_client_free(a->ec2);
	secure_zero(&a->fixed, sizeof(a->fixed));
	free(a);
}

int rs_aws_ready(struct rs_aws *a, bool need_zone, struct amis_err *err)
{
	struct imds_identity id;

	if (a->has_fixed)
		return 0;
	if (aws_ctx_ready(a->ctx, err) != 0)
		return -1;
	a->ec2 = aws_ctx_ec2(a->ctx);
	snprintf(a->instance_id, sizeof(a->instance_id), "%s", aws_ctx_instance_id(a->ctx));
	if (!need_zone)
		return 0;
	/* The zone comes from IMDS only: the volumes are made where we are. */
	if (imds_get_identity(aws_ctx_imds(a->ctx), &id, err) != 0)
		return err_prefix(err, "cannot ask IMDS for this instance's availability zone");
	snprintf(a->zone, sizeof(a->zone), "%s", id.availability_zone);
	if (!a->zone[0])
		return err_set(err, AMIS_E_IMDS_ERROR,
		               "IMDS did not say this instance's availability zone");
	return 0;
}

const char *rs_aws_instance_id(const struct rs_aws *a)
{
	return a->instance_id;
}

const char *rs_aws_zone(const struct rs_aws *a)
{
	return a->zone;
}

/*
 * One call, retried after throttling and other retryable failures when
 * doing so cannot create anything twice: reads always, creations only with
 * an idempotency token (CreateVolume's ClientToken), the others only when
 * EC2 said no (not after a lost answer).
 */
static int call(struct rs_aws *a, const char *action, const struct ec2_params *p, bool idempotent,
                xmlDocPtr *doc, struct amis_err *err)
{
	return aws_call_retrying(a->ctx, a->has_fixed ? &a->fixed : NULL, a->ec2, action, p,
	                         idempotent, RS_EC2_TIMEOUT_MS, RS_EC2_ATTEMPTS, doc, err);
}

/* ---- Parsing. ---- */

int rs_parse_snapshots(xmlDocPtr doc, struct rs_snapshot_list *out, char *next_token, size_t ntsz,
                       struct amis_err *err)
{
	xmlNodePtr root = xml_root(doc), it, t;
	struct amis_err ignored;

	if (next_token && ntsz)
		ec2_member_text(root, "nextToken", next_token, ntsz);
	for (it = xml_items_first(root, "snapshotSet"); it; it = xml_items_next(it)) {
		struct rs_snapshot *s = rs_list_add(out);

		if (ec2_member_id(it, "snapshotId", "snap", s->snapshot_id, sizeof(s->snapshot_id),
		                  err) < 0)
			return -1;
		/* A snapshot of a deleted volume still says which it was; not needed. */
		ec2_member_text(it, "volumeId", s->volume_id, sizeof(s->volume_id));
		ec2_member_text(it, "status", s->state, sizeof(s->state));
		if (!s->state[0])
			ec2_member_text(it, "state", s->state, sizeof(s->state));
		ec2_member_text(it, "startTime", s->start_time, sizeof(s->start_time));
		if (xml_child_ll_opt(it, "volumeSize", -1, &s->size_gib, &ignored) < 0)
			s->size_gib = -1;
		for (t = xml_items_first(it, "tagSet"); t; t = xml_items_next(t)) {
			struct rs_tag *tag;

			if (s->ntags == RS_MAX_TAGS)
				return err_set(err, AMIS_E_MALFORMED_RESPONSE,
				               "snapshot %s has more than %d tags", s->snapshot_id,
				               RS_MAX_TAGS);
			tag = &s->tags[s->ntags];
			/* A tag we cannot read is a tag we do not have: the checks say so. */
			if (xml_child_text(t, "key", tag->key, sizeof(tag->key), &ignored) < 0)
				continue;
			if (xml_child_text_opt(t, "value", tag->value, sizeof(tag->value),
			                       &ignored) < 0)
				continue;
			s->ntags++;
		}
	}
	return 0;
}

int rs_parse_image(xmlDocPtr doc, const char *image_id, struct rs_image *out, struct amis_err *err)
{
	xmlNodePtr root = xml_root(doc), img, m;
	char id[32];

	memset(out, 0, sizeof(*out));
	for (img = xml_items_first(root, "imagesSet"); img; img = xml_items_next(img)) {
		struct amis_err ignored;

		if (xml_child_text(img, "imageId", id, sizeof(id), &ignored) < 0 ||
		    strcmp(id, image_id) != 0)
			continue;
		snprintf(out->image_id, sizeof(out->image_id), "%s", id);
		ec2_member_text(img, "imageState", out->state, sizeof(out->state));
		for (m = xml_items_first(img, "blockDeviceMapping"); m; m = xml_items_next(m)) {
			xmlNodePtr ebs = xml_child(m, "ebs");

			if (!ebs || !xml_child(ebs, "snapshotId"))
				continue; /* ephemeral, or no snapshot */
			if (out->n == RS_MAX_IMAGE_SNAPSHOTS)
				return err_set(err, AMIS_E_TOO_MANY_VOLUMES,
				               "image %s has more than %d snapshots", id,
				               RS_MAX_IMAGE_SNAPSHOTS);
			if (ec2_member_id(ebs, "snapshotId", "snap", out->snapshot_ids[out->n],
			                  sizeof(out->snapshot_ids[0]), err) < 0)
				return -1;
			ec2_member_text(m, "deviceName", out->device_names[out->n],
			                sizeof(out->device_names[0]));
			out->n++;
		}
		return 0;
	}
	return err_set(err, AMIS_E_INVALID_PARAMETER_VALUE, "image %.64s is not in the answer",
	               image_id);
}

int rs_parse_volume_id(xmlDocPtr doc, char *volume_id, size_t sz, struct amis_err *err)
{
	return ec2_member_id(xml_root(doc), "volumeId", "vol", volume_id, sz, err);
}

int rs_parse_volumes(xmlDocPtr doc, struct rs_volume_state *out, size_t max, size_t *n,
                     struct amis_err *err)
{
	xmlNodePtr it;

	*n = 0;
	for (it = xml_items_first(xml_root(doc), "volumeSet"); it; it = xml_items_next(it)) {
		struct rs_volume_state *v;
		xmlNodePtr at;

		if (*n == max)
			return err_set(err, AMIS_E_MALFORMED_RESPONSE,
			               "DescribeVolumes listed more volumes than asked for");
		v = &out[*n];
		memset(v, 0, sizeof(*v));
		if (ec2_member_id(it, "volumeId", "vol", v->volume_id, sizeof(v->volume_id), err) <
		    0)
			return -1;
		if (xml_child_text(it, "status", v->status, sizeof(v->status), err) < 0)
			return -1;
		at = xml_items_first(it, "attachmentSet");
		if (at) {
			ec2_member_text(at, "status", v->attach_state, sizeof(v->attach_state));
			ec2_member_text(at, "instanceId", v->instance_id, sizeof(v->instance_id));
			ec2_member_text(at, "device", v->device, sizeof(v->device));
		}
		(*n)++;
	}
	return 0;
}

/* ---- Calls. ---- */

static int describe_snapshots(struct rs_aws *a, struct ec2_params *p, struct rs_snapshot_list *out,
                              struct amis_err *err)
{
	char token[1024] = "";
	int pages;

	for (pages = 0; pages < 1000; pages++) {
		xmlDocPtr doc = NULL;
		int rc;

		/* Replace the previous page's token. */
		if (token[0])
			ec2_params_set(p, "NextToken", token);
		rc = call(a, "DescribeSnapshots", p, true, &doc, err);
		token[0] = '\0';
		if (rc == 0 && rs_parse_snapshots(doc, out, token, sizeof(token), err) < 0)
			rc = err_prefix(err, "EC2 DescribeSnapshots");
		xml_free(doc);
		if (rc < 0)
			return -1;
		if (!token[0])
			return 0;
	}
	return err_set(err, AMIS_E_MALFORMED_RESPONSE, "EC2 DescribeSnapshots: too many pages");
}

int rs_describe_snapshots_by_tag(struct rs_aws *a, const char *key, const char *value,
                                 struct rs_snapshot_list *out, struct amis_err *err)
{
	struct ec2_params p;
	int rc;

	if (strpbrk(value, "*?"))
		return err_set(err, AMIS_E_INVALID_ARGUMENT,
		               "\"%s\" contains * or ?, which EC2 filters take as wildcards",
		               value);
	ec2_params_init(&p);
	ec2_describe_snapshots_by_tag_params(&p, key, value);
	rc = describe_snapshots(a, &p, out, err);
	ec2_params_free(&p);
	return rc;
}

int rs_describe_snapshots_by_id(struct rs_aws *a, const char *const *ids, size_t n,
                                struct rs_snapshot_list *out, struct amis_err *err)
{
	struct ec2_params p;
	size_t i;
	int rc;

	if (n == 0)
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "DescribeSnapshots needs ids");
	ec2_params_init(&p);
	for (i = 0; i < n; i++)
		ec2_params_addf(&p, ids[i], "SnapshotId.%zu", i + 1);
	rc = describe_snapshots(a, &p, out, err);
	ec2_params_free(&p);
	return rc;
}

int rs_describe_image(struct rs_aws *a, const char *image_id, struct rs_image *out,
                      struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	ec2_params_init(&p);
	ec2_params_add(&p, "ImageId.1", image_id);
	rc = call(a, "DescribeImages", &p, true, &doc, err);
	if (rc == 0 && rs_parse_image(doc, image_id, out, err) < 0)
		rc = err_prefix(err, "EC2 DescribeImages");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int rs_create_volume(struct rs_aws *a, const struct rs_create_volume_req *r, char *volume_id,
                     size_t sz, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	char num[32];
	int rc, t = 1;

	ec2_params_init(&p);
	ec2_params_add(&p, "SnapshotId", r->snapshot_id);
	ec2_params_add(&p, "AvailabilityZone", r->availability_zone);
	ec2_params_add(&p, "VolumeType", r->volume_type ? r->volume_type : "gp3");
	if (r->iops > 0) {
		snprintf(num, sizeof(num), "%ld", r->iops);
		ec2_params_add(&p, "Iops", num);
	}
	if (r->throughput > 0) {
		snprintf(num, sizeof(num), "%ld", r->throughput);
		ec2_params_add(&p, "Throughput", num);
	}
	if (r->size_gib > 0) {
		snprintf(num, sizeof(num), "%lld", r->size_gib);
		ec2_params_add(&p, "Size", num);
	}
	if (r->client_token)
		ec2_params_add(&p, "ClientToken", r->client_token);
	ec2_params_add(&p, "TagSpecification.1.ResourceType", "volume");
	ec2_params_addf(&p, RS_TAG_PREFIX "restored-from", "TagSpecification.1.Tag.%d.Key", t);
	ec2_params_addf(&p, r->snapshot_id, "TagSpecification.1.Tag.%d.Value", t++);
	if (r->request_id) {
		ec2_params_addf(&p, RS_TAG_PREFIX "request-id", "TagSpecification.1.Tag.%d.Key", t);
		ec2_params_addf(&p, r->request_id, "TagSpecification.1.Tag.%d.Value", t++);
	}
	if (r->name) {
		ec2_params_addf(&p, "Name", "TagSpecification.1.Tag.%d.Key", t);
		ec2_params_addf(&p, r->name, "TagSpecification.1.Tag.%d.Value", t++);
	}
	if (r->drill_id) {
		ec2_params_addf(&p, RS_TAG_PREFIX "drill", "TagSpecification.1.Tag.%d.Key", t);
		ec2_params_addf(&p, r->drill_id, "TagSpecification.1.Tag.%d.Value", t++);
	}
	if (r->drill_instance) {
		ec2_params_addf(&p, RS_TAG_PREFIX "drill-instance", "TagSpecification.1.Tag.%d.Key",
		                t);
		ec2_params_addf(&p, r->drill_instance, "TagSpecification.1.Tag.%d.Value", t++);
	}
	rc = call(a, "CreateVolume", &p, r->client_token != NULL, &doc, err);
	if (rc == 0 && rs_parse_volume_id(doc, volume_id, sz, err) < 0)
		rc = err_prefix(err, "EC2 CreateVolume");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int rs_describe_volumes(struct rs_aws *a, const char *const *ids, size_t n,
                        struct rs_volume_state *out, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	size_t i, got = 0, j;
	int rc;

	ec2_params_init(&p);
	for (i = 0; i < n; i++)
		ec2_params_addf(&p, ids[i], "VolumeId.%zu", i + 1);
	rc = call(a, "DescribeVolumes", &p, true, &doc, err);
	if (rc == 0) {
		struct rs_volume_state *tmp = xcalloc(n ? n : 1, sizeof(*tmp));

		if (rs_parse_volumes(doc, tmp, n, &got, err) < 0) {
			rc = err_prefix(err, "EC2 DescribeVolumes");
		} else {
			/* In the order asked; a volume not listed is "unknown". */
			for (i = 0; i < n; i++) {
				memset(&out[i], 0, sizeof(out[i]));
				snprintf(out[i].volume_id, sizeof(out[i].volume_id), "%s", ids[i]);
				snprintf(out[i].status, sizeof(out[i].status), "unknown");
				for (j = 0; j < got; j++) {
					if (strcmp(tmp[j].volume_id, ids[i]) == 0)
						out[i] = tmp[j];
				}
			}
		}
		free(tmp);
	}
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

static int volume_action(struct rs_aws *a, const char *action, const char *volume_id,
                         const char *device, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	ec2_params_init(&p);
	ec2_params_add(&p, "VolumeId", volume_id);
	if (device) {
		ec2_params_add(&p, "InstanceId", a->instance_id);
		ec2_params_add(&p, "Device", device);
	}
	rc = call(a, action, &p, false, &doc, err);
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int rs_attach_volume(struct rs_aws *a, const char *volume_id, const char *device,
                     struct amis_err *err)
{
	return volume_action(a, "AttachVolume", volume_id, device, err);
}

int rs_detach_volume(struct rs_aws *a, const char *volume_id, struct amis_err *err)
{
	return volume_action(a, "DetachVolume", volume_id, NULL, err);
}

int rs_delete_volume(struct rs_aws *a, const char *volume_id, struct amis_err *err)
{
	return volume_action(a, "DeleteVolume", volume_id, NULL, err);
}

int rs_instance_devices(struct rs_aws *a, struct strbuf *out, struct amis_err *err)
{
	struct ec2_instance_info *info = xcalloc(1, sizeof(*info));
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	size_t i;
	int rc;

	ec2_params_init(&p);
	ec2_params_add(&p, "InstanceId.1", a->instance_id);
	rc = call(a, "DescribeInstances", &p, true, &doc, err);
	if (rc == 0 && ec2_parse_instance(doc, a->instance_id, info, err) < 0)
		rc = err_prefix(err, "EC2 DescribeInstances");
	if (rc == 0) {
		if (info->root_device_name[0])
			sb_appendf(out, "%s\n", info->root_device_name);
		for (i = 0; i < info->nvolumes; i++)
			sb_appendf(out, "%s\n", info->volumes[i].device_name);
	}
	xml_free(doc);
	ec2_params_free(&p);
	free(info);
	return rc;
}

/* ---- For verify (verify.c). ---- */

int rs_create_tags(struct rs_aws *a, const char *const *ids, size_t n, const char *key,
                   const char *value, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	size_t i;
	int rc;

	ec2_params_init(&p);
	for (i = 0; i < n; i++)
		ec2_params_addf(&p, ids[i], "ResourceId.%zu", i + 1);
	ec2_params_add(&p, "Tag.1.Key", key);
	ec2_params_add(&p, "Tag.1.Value", value);
	/* Setting the same tag twice is harmless: retried like a read. */
	rc = call(a, "CreateTags", &p, true, &doc, err);
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int rs_describe_volumes_by_tag(struct rs_aws *a, const char *key, const char *value,
                               struct rs_volume_state *out, size_t max, size_t *n,
                               struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	ec2_params_init(&p);
	{
		char name[RS_TAG_KEY_MAX + 8];

		snprintf(name, sizeof(name), "tag:%s", key);
		ec2_params_add(&p, "Filter.1.Name", name);
		ec2_params_add(&p, "Filter.1.Value.1", value);
	}
	rc = call(a, "DescribeVolumes", &p, true, &doc, err);
	if (rc == 0 && rs_parse_volumes(doc, out, max, n, err) < 0)
		rc = err_prefix(err, "EC2 DescribeVolumes");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

/* ---- The AMI drill (verify --launch). ---- */

int rs_run_instance(struct rs_aws *a, const struct rs_run_instance_req *r, char *instance_id,
                    size_t sz, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	xmlNodePtr it;
	int rc, spec;

	ec2_params_init(&p);
	ec2_params_add(&p, "ImageId", r->image_id);
	ec2_params_add(&p, "InstanceType", r->instance_type ? r->instance_type : "t3.micro");
	ec2_params_add(&p, "MinCount", "1");
	ec2_params_add(&p, "MaxCount", "1");
	if (r->subnet_id)
		ec2_params_add(&p, "SubnetId", r->subnet_id);
	if (r->security_group_id)
		ec2_params_add(&p, "SecurityGroupId.1", r->security_group_id);
	if (r->key_name)
		ec2_params_add(&p, "KeyName", r->key_name);
	if (r->client_token)
		ec2_params_add(&p, "ClientToken", r->client_token);
	/* The instance and its volumes carry the drill's tags from their first moment. */
	for (spec = 1; spec <= 2; spec++) {
		ec2_params_addf(&p, spec == 1 ? "instance" : "volume",
		                "TagSpecification.%d.ResourceType", spec);
		ec2_params_addf(&p, RS_TAG_PREFIX "drill", "TagSpecification.%d.Tag.1.Key", spec);
		ec2_params_addf(&p, r->drill_id, "TagSpecification.%d.Tag.1.Value", spec);
		ec2_params_addf(&p, RS_TAG_PREFIX "drill-instance", "TagSpecification.%d.Tag.2.Key",
		                spec);
		ec2_params_addf(&p, r->drill_instance, "TagSpecification.%d.Tag.2.Value", spec);
		ec2_params_addf(&p, "Name", "TagSpecification.%d.Tag.3.Key", spec);
		ec2_params_addf(&p, r->drill_id, "TagSpecification.%d.Tag.3.Value", spec);
	}
	rc = call(a, "RunInstances", &p, r->client_token != NULL, &doc, err);
	if (rc == 0) {
		it = xml_items_first(xml_root(doc), "instancesSet");
		if (!it)
			rc = err_set(err, AMIS_E_MALFORMED_RESPONSE,
			             "EC2 RunInstances: no instance in the answer");
		else if (ec2_member_id(it, "instanceId", "i", instance_id, sz, err) < 0)
			rc = err_prefix(err, "EC2 RunInstances");
	}
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

/* <NAME><status>X</status></NAME> of item into buf ("" when absent). */
static void nested_status(xmlNodePtr item, const char *name, const char *member, char *buf,
                          size_t sz)
{
	xmlNodePtr n = xml_child(item, name);

	buf[0] = '\0';
	if (n)
		ec2_member_text(n, member, buf, sz);
}

int rs_instance_status(struct rs_aws *a, const char *instance_id, struct rs_instance *out,
                       struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	xmlNodePtr it;
	int rc;

	memset(out, 0, sizeof(*out));
	snprintf(out->instance_id, sizeof(out->instance_id), "%s", instance_id);
	ec2_params_init(&p);
	ec2_params_add(&p, "InstanceId.1", instance_id);
	rc = call(a, "DescribeInstances", &p, true, &doc, err);
	if (rc == 0) {
		xmlNodePtr res = xml_items_first(xml_root(doc), "reservationSet");

		it = res ? xml_items_first(res, "instancesSet") : NULL;
		if (it) {
			nested_status(it, "instanceState", "name", out->state, sizeof(out->state));
			ec2_member_text(it, "privateIpAddress", out->private_ip,
			                sizeof(out->private_ip));
		}
	}
	xml_free(doc);
	ec2_params_free(&p);
	if (rc)
		return rc;
	ec2_params_init(&p);
	ec2_params_add(&p, "InstanceId.1", instance_id);
	ec2_params_add(&p, "IncludeAllInstances", "true");
	rc = call(a, "DescribeInstanceStatus", &p, true, &doc, err);
	if (rc == 0) {
		it = xml_items_first(xml_root(doc), "instanceStatusSet");
		if (it) {
			nested_status(it, "instanceStatus", "status", out->instance_status,
			              sizeof(out->instance_status));
			nested_status(it, "systemStatus", "status", out->system_status,
			              sizeof(out->system_status));
			if (!out->state[0])
				nested_status(it, "instanceState", "name", out->state,
				              sizeof(out->state));
		}
	}
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int rs_terminate_instance(struct rs_aws *a, const char *instance_id, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	ec2_params_init(&p);
	ec2_params_add(&p, "InstanceId.1", instance_id);
	/* Terminating twice is harmless: retried like a read. */
	rc = call(a, "TerminateInstances", &p, true, &doc, err);
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int rs_instances_by_tag(struct rs_aws *a, const char *key, const char *value,
                        struct rs_instance *out, size_t max, size_t *n, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	xmlNodePtr res, it;
	char name[RS_TAG_KEY_MAX + 8];
	int rc;

	*n = 0;
	snprintf(name, sizeof(name), "tag:%s", key);
	ec2_params_init(&p);
	ec2_params_add(&p, "Filter.1.Name", name);
	ec2_params_add(&p, "Filter.1.Value.1", value);
	rc = call(a, "DescribeInstances", &p, true, &doc, err);
	for (res = rc == 0 ? xml_items_first(xml_root(doc), "reservationSet") : NULL; res;
	     res = xml_items_next(res)) {
		for (it = xml_items_first(res, "instancesSet"); it && *n < max;
		     it = xml_items_next(it)) {
			struct rs_instance *o = &out[*n];

			memset(o, 0, sizeof(*o));
			if (ec2_member_id(it, "instanceId", "i", o->instance_id,
			                  sizeof(o->instance_id), err) < 0) {
				rc = err_prefix(err, "EC2 DescribeInstances");
				goto out;
			}
			nested_status(it, "instanceState", "name", o->state, sizeof(o->state));
			(*n)++;
		}
	}
out:
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}
