/*
 * ec2_lifecycle.c - see ec2_lifecycle.h.
 *
 * Shapes from the Amazon EC2 API Reference (2016-11-15) and botocore's EC2
 * model: DescribeSnapshots (Owner.N, Filter.N, SnapshotId.N, MaxResults,
 * NextToken; snapshotSet/item: snapshotId, volumeId, status, statusMessage,
 * progress, startTime, volumeSize, ownerId, description, encrypted,
 * kmsKeyId, tagSet), DescribeImages (Owner.N, Filter.N, ImageId.N,
 * MaxResults, NextToken; imagesSet/item: imageId, imageState, stateReason/
 * message, creationDate, name, blockDeviceMapping/item/ebs/snapshotId,
 * tagSet), CopySnapshot (SourceRegion, SourceSnapshotId, DestinationRegion,
 * PresignedUrl, Encrypted, KmsKeyId, Description, TagSpecification.N;
 * <snapshotId>), CopyImage (SourceRegion, SourceImageId, Name, Description,
 * Encrypted, KmsKeyId, ClientToken, TagSpecification.N; <imageId>),
 * LockSnapshot (SnapshotId, LockMode, LockDuration | ExpirationDate,
 * CoolOffPeriod; snapshotId, lockState, lockDuration, coolOffPeriod,
 * coolOffPeriodExpiresOn, lockCreatedOn, lockExpiresOn,
 * lockDurationStartTime), UnlockSnapshot (SnapshotId), DescribeLockedSnapshots
 * (SnapshotId.N; snapshotSet/item as LockSnapshot's), DeleteSnapshot
 * (SnapshotId), DeregisterImage (ImageId), ModifySnapshotAttribute
 * (SnapshotId, Attribute=createVolumePermission, OperationType, UserId.N),
 * ModifyImageAttribute (ImageId, LaunchPermission.Add|Remove.N.UserId).
 */
#include "ec2_lifecycle.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xml.h"

#define LC_MAX_PAGES 1000

const char *lc_tags_get(const struct lc_tags *t, const char *key)
{
	size_t i;

	for (i = 0; t && i < t->n; i++) {
		if (strcmp(t->items[i].key, key) == 0)
			return t->items[i].value;
	}
	return NULL;
}

void lc_tags_free(struct lc_tags *t)
{
	free(t->items);
	t->items = NULL;
	t->n = 0;
}

void lc_snapshot_list_free(struct lc_snapshot_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		lc_tags_free(&l->items[i].tags);
	free(l->items);
	memset(l, 0, sizeof(*l));
}

void lc_image_list_free(struct lc_image_list *l)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		lc_tags_free(&l->items[i].tags);
	free(l->items);
	memset(l, 0, sizeof(*l));
}

bool ec2_account_id_valid(const char *s)
{
	size_t i;

	for (i = 0; s && s[i]; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
	}
	return s && i == 12;
}

void ec2_filter_params(struct ec2_params *p, const struct ec2_filter *f, size_t nf)
{
	size_t i, j;

	for (i = 0; i < nf; i++) {
		ec2_params_addf(p, f[i].name, "Filter.%zu.Name", i + 1);
		for (j = 0; j < f[i].nvalues; j++)
			ec2_params_addf(p, f[i].values[j], "Filter.%zu.Value.%zu", i + 1, j + 1);
	}
}

/* ---- Parsing. ---- */

/* tagSet/item key/value; a tag we cannot read is a tag we do not have. */
static void parse_tags(const xmlNode *node, struct lc_tags *out)
{
	size_t n = xml_items_count(node, "tagSet");
	xmlNodePtr t;

	out->n = 0;
	out->items = n ? xcalloc(n, sizeof(*out->items)) : NULL;
	for (t = xml_items_first(node, "tagSet"); t && out->n < n; t = xml_items_next(t)) {
		struct lc_tag *tag = &out->items[out->n];
		struct amis_err ignored;

		if (xml_child_text(t, "key", tag->key, sizeof(tag->key), &ignored) < 0 ||
		    xml_child_text_opt(t, "value", tag->value, sizeof(tag->value), &ignored) < 0)
			continue;
		out->n++;
	}
}

static long long ll_member(const xmlNode *node, const char *name, long long dflt)
{
	struct amis_err ignored;
	long long v;

	if (xml_child_ll_opt(node, name, dflt, &v, &ignored) < 0)
		return dflt;
	return v;
}

int ec2_parse_lc_snapshots(xmlDocPtr doc, struct lc_snapshot_list *out, char *next_token,
                           size_t ntsz, struct amis_err *err)
{
	xmlNodePtr root = xml_root(doc), it;

	if (next_token && ntsz)
		ec2_member_text(root, "nextToken", next_token, ntsz);
	for (it = xml_items_first(root, "snapshotSet"); it; it = xml_items_next(it)) {
		struct lc_snapshot *s;
		struct amis_err ignored;

		if (out->n == out->cap) {
			out->cap = out->cap ? out->cap * 2 : 16;
			out->items = xrealloc(out->items, out->cap * sizeof(*out->items));
		}
		s = &out->items[out->n];
		memset(s, 0, sizeof(*s));
		/* The id is what is waited for, copied, locked, deleted: required. */
		if (ec2_member_id(it, "snapshotId", "snap", s->snapshot_id, sizeof(s->snapshot_id),
		                  err) < 0)
			return -1;
		ec2_member_text(it, "volumeId", s->volume_id, sizeof(s->volume_id));
		ec2_member_text(it, "status", s->state, sizeof(s->state));
		if (!s->state[0])
			ec2_member_text(it, "state", s->state, sizeof(s->state));
		ec2_member_text(it, "statusMessage", s->state_message, sizeof(s->state_message));
		ec2_member_text(it, "progress", s->progress, sizeof(s->progress));
		ec2_member_text(it, "startTime", s->start_time, sizeof(s->start_time));
		ec2_member_text(it, "ownerId", s->owner_id, sizeof(s->owner_id));
		ec2_member_text(it, "description", s->description, sizeof(s->description));
		ec2_member_text(it, "kmsKeyId", s->kms_key_id, sizeof(s->kms_key_id));
		if (xml_child_bool_opt(it, "encrypted", false, &s->encrypted, &ignored) < 0)
			s->encrypted = false;
		s->volume_size_gib = ll_member(it, "volumeSize", -1);
		parse_tags(it, &s->tags);
		out->n++;
	}
	return 0;
}

int ec2_parse_lc_images(xmlDocPtr doc, struct lc_image_list *out, char *next_token, size_t ntsz,
                        struct amis_err *err)
{
	xmlNodePtr root = xml_root(doc), it, m;

	if (next_token && ntsz)
		ec2_member_text(root, "nextToken", next_token, ntsz);
	for (it = xml_items_first(root, "imagesSet"); it; it = xml_items_next(it)) {
		struct lc_image *img;

		if (out->n == out->cap) {
			out->cap = out->cap ? out->cap * 2 : 8;
			out->items = xrealloc(out->items, out->cap * sizeof(*out->items));
		}
		img = &out->items[out->n];
		memset(img, 0, sizeof(*img));
		if (ec2_member_id(it, "imageId", "ami", img->image_id, sizeof(img->image_id), err) <
		    0)
			return -1;
		ec2_member_text(it, "imageState", img->state, sizeof(img->state));
		ec2_member_text(xml_child(it, "stateReason"), "message", img->state_reason,
		                sizeof(img->state_reason));
		ec2_member_text(it, "creationDate", img->creation_date, sizeof(img->creation_date));
		ec2_member_text(it, "name", img->name, sizeof(img->name));
		for (m = xml_items_first(it, "blockDeviceMapping"); m; m = xml_items_next(m)) {
			xmlNodePtr ebs = xml_child(m, "ebs");

			if (!ebs || !xml_child(ebs, "snapshotId"))
				continue;
			if (img->nsnapshots == LC_MAX_IMAGE_SNAPSHOTS)
				return err_set(err, AMIS_E_TOO_MANY_VOLUMES,
				               "image %s has more than %d snapshots", img->image_id,
				               LC_MAX_IMAGE_SNAPSHOTS);
			/* Deleted after the image is deregistered: required, checked. */
			if (ec2_member_id(ebs, "snapshotId", "snap",
			                  img->snapshot_ids[img->nsnapshots],
			                  sizeof(img->snapshot_ids[0]), err) < 0)
				return -1;
			img->nsnapshots++;
		}
		parse_tags(it, &img->tags);
		out->n++;
	}
	return 0;
}

int ec2_parse_lock(const xmlNode *node, struct lc_lock *out, struct amis_err *err)
{
	long long v;

	memset(out, 0, sizeof(*out));
	if (ec2_member_id(node, "snapshotId", "snap", out->snapshot_id, sizeof(out->snapshot_id),
	                  err) < 0)
		return -1;
	ec2_member_text(node, "lockState", out->lock_state, sizeof(out->lock_state));
	v = ll_member(node, "lockDuration", 0);
	out->lock_duration_days = v > 0 && v <= 36500 ? (long)v : 0;
	v = ll_member(node, "coolOffPeriod", 0);
	out->cool_off_hours = v > 0 && v <= 72 ? (long)v : 0;
	ec2_member_text(node, "coolOffPeriodExpiresOn", out->cool_off_expires_on,
	                sizeof(out->cool_off_expires_on));
	ec2_member_text(node, "lockCreatedOn", out->lock_created_on, sizeof(out->lock_created_on));
	ec2_member_text(node, "lockExpiresOn", out->lock_expires_on, sizeof(out->lock_expires_on));
	ec2_member_text(node, "lockDurationStartTime", out->lock_duration_start_time,
	                sizeof(out->lock_duration_start_time));
	return 0;
}

int ec2_parse_new_id(xmlDocPtr doc, const char *member, const char *prefix, char *id, size_t idsz,
                     struct amis_err *err)
{
	return ec2_member_id(xml_root(doc), member, prefix, id, idsz, err);
}

/* ---- Calls. ---- */

static int call(const struct ec2_transport *t, const char *region, const char *action,
                const struct ec2_params *p, bool idempotent, xmlDocPtr *doc, struct amis_err *err)
{
	*doc = NULL;
	if (!t || !t->call)
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "no EC2 transport");
	if (!region || !region[0])
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "EC2 %s: no region", action);
	return t->call(t->ctx, region, action, p, idempotent, doc, err);
}

typedef int (*page_parser)(xmlDocPtr doc, void *out, char *token, size_t tsz, struct amis_err *err);

static int snapshots_page(xmlDocPtr doc, void *out, char *token, size_t tsz, struct amis_err *err)
{
	return ec2_parse_lc_snapshots(doc, out, token, tsz, err);
}

static int images_page(xmlDocPtr doc, void *out, char *token, size_t tsz, struct amis_err *err)
{
	return ec2_parse_lc_images(doc, out, token, tsz, err);
}

/* Every page of a Describe call. */
static int paged(const struct ec2_transport *t, const char *region, const char *action,
                 struct ec2_params *p, page_parser parse, void *out, struct amis_err *err)
{
	char token[1024] = "";
	int pages;

	for (pages = 0; pages < LC_MAX_PAGES; pages++) {
		xmlDocPtr doc = NULL;
		int rc;

		if (token[0])
			ec2_params_set(p, "NextToken", token);
		rc = call(t, region, action, p, true, &doc, err);
		token[0] = '\0';
		if (rc == 0 && doc && parse(doc, out, token, sizeof(token), err) < 0)
			rc = err_prefix(err, "EC2 %s", action);
		xml_free(doc);
		if (rc < 0)
			return -1;
		if (!token[0])
			return 0;
	}
	return err_set(err, AMIS_E_MALFORMED_RESPONSE, "EC2 %s: more than %d pages", action,
	               LC_MAX_PAGES);
}

/*
 * One Describe call, every page: of ids (id_param.N) when n > 0, else of
 * our own (Owner.1=self) matching the filters, 1000 a page.
 */
static int describe(const struct ec2_transport *t, const char *region, const char *action,
                    const char *id_param, const char *const *ids, size_t n,
                    const struct ec2_filter *f, size_t nf, page_parser parse, void *out,
                    struct amis_err *err)
{
	struct ec2_params p;
	size_t i;
	int rc;

	ec2_params_init(&p);
	if (n) {
		for (i = 0; i < n; i++)
			ec2_params_addf(&p, ids[i], "%s.%zu", id_param, i + 1);
	} else {
		/* Only our own: a public snapshot or image could carry the same tags. */
		ec2_params_add(&p, "Owner.1", "self");
		ec2_filter_params(&p, f, nf);
		/* EC2 refuses MaxResults with ids. */
		ec2_params_add(&p, "MaxResults", "1000");
	}
	rc = paged(t, region, action, &p, parse, out, err);
	ec2_params_free(&p);
	return rc;
}

int ec2_lc_describe_snapshots(const struct ec2_transport *t, const char *region,
                              const struct ec2_filter *f, size_t nf, struct lc_snapshot_list *out,
                              struct amis_err *err)
{
	return describe(t, region, "DescribeSnapshots", NULL, NULL, 0, f, nf, snapshots_page, out,
	                err);
}

int ec2_lc_describe_snapshot_ids(const struct ec2_transport *t, const char *region,
                                 const char *const *ids, size_t n, struct lc_snapshot_list *out,
                                 struct amis_err *err)
{
	if (n == 0)
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "DescribeSnapshots needs ids");
	return describe(t, region, "DescribeSnapshots", "SnapshotId", ids, n, NULL, 0,
	                snapshots_page, out, err);
}

int ec2_lc_describe_images(const struct ec2_transport *t, const char *region,
                           const struct ec2_filter *f, size_t nf, struct lc_image_list *out,
                           struct amis_err *err)
{
	return describe(t, region, "DescribeImages", NULL, NULL, 0, f, nf, images_page, out, err);
}

int ec2_lc_describe_image_ids(const struct ec2_transport *t, const char *region,
                              const char *const *ids, size_t n, struct lc_image_list *out,
                              struct amis_err *err)
{
	if (n == 0)
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "DescribeImages needs ids");
	return describe(t, region, "DescribeImages", "ImageId", ids, n, NULL, 0, images_page, out,
	                err);
}

static void add_if(struct ec2_params *p, const char *name, const char *value)
{
	if (value && value[0])
		ec2_params_add(p, name, value);
}

void ec2_copy_snapshot_params(struct ec2_params *p, const struct lc_copy_snapshot_req *r)
{
	ec2_params_add(p, "SourceRegion", r->source_region);
	ec2_params_add(p, "SourceSnapshotId", r->snapshot_id);
	/* botocore sends it too; the pre-signed URL must carry it. */
	ec2_params_add(p, "DestinationRegion", r->dest_region);
	add_if(p, "Description", r->description);
	if (r->encrypted || (r->kms_key_id && r->kms_key_id[0]))
		ec2_params_add(p, "Encrypted", "true");
	add_if(p, "KmsKeyId", r->kms_key_id);
	ec2_params_tag_spec(p, 1, "snapshot", r->tags, r->ntags);
	if (r->dry_run)
		ec2_params_add(p, "DryRun", "true");
}

/* One call that creates something and has no ClientToken: never sent twice after a lost answer. */
static int new_resource(const struct ec2_transport *t, const char *region, const char *action,
                        struct ec2_params *p, bool idempotent, const char *member,
                        const char *prefix, char *id, size_t idsz, struct amis_err *err)
{
	xmlDocPtr doc = NULL;
	int rc;

	id[0] = '\0';
	rc = call(t, region, action, p, idempotent, &doc, err);
	if (rc == 0 && doc && ec2_parse_new_id(doc, member, prefix, id, idsz, err) < 0)
		rc = err_prefix(err, "EC2 %s", action);
	xml_free(doc);
	return rc;
}

int ec2_copy_snapshot(const struct ec2_transport *t, const struct lc_copy_snapshot_req *r,
                      char *new_id, size_t idsz, struct amis_err *err)
{
	struct ec2_params p;
	struct strbuf url;
	int rc = -1;

	new_id[0] = '\0';
	if (!r || !aws_resource_id_valid(r->snapshot_id, "snap") || !r->source_region ||
	    !r->source_region[0] || !r->dest_region || !r->dest_region[0])
		return err_set(err, AMIS_E_INVALID_ARGUMENT,
		               "CopySnapshot needs a snapshot id and both regions");
	ec2_params_init(&p);
	sb_init(&url);
	ec2_copy_snapshot_params(&p, r);
	if (r->encrypted || (r->kms_key_id && r->kms_key_id[0])) {
		/*
		 * "PresignedUrl: When you copy an encrypted source snapshot using
		 * the Amazon EC2 Query API, you must supply a pre-signed URL."
		 * The same request, GET, signed for the source region.
		 */
		if (!t || !t->presign) {
			err_set(err, AMIS_E_INVALID_ARGUMENT, "no pre-signer for CopySnapshot");
			goto out;
		}
		if (t->presign(t->ctx, r->source_region, "CopySnapshot", &p, &url, err) < 0) {
			err_prefix(err, "cannot pre-sign CopySnapshot for %s", r->source_region);
			goto out;
		}
		ec2_params_add(&p, "PresignedUrl", sb_str(&url));
	}
	rc = new_resource(t, r->dest_region, "CopySnapshot", &p, false, "snapshotId", "snap",
	                  new_id, idsz, err);
out:
	if (url.data)
		secure_zero(url.data, url.len);
	sb_free(&url);
	ec2_params_free(&p);
	return rc;
}

void ec2_copy_image_params(struct ec2_params *p, const struct lc_copy_image_req *r)
{
	ec2_params_add(p, "SourceRegion", r->source_region);
	ec2_params_add(p, "SourceImageId", r->image_id);
	ec2_params_add(p, "Name", r->name);
	add_if(p, "Description", r->description);
	if (r->encrypted || (r->kms_key_id && r->kms_key_id[0]))
		ec2_params_add(p, "Encrypted", "true");
	add_if(p, "KmsKeyId", r->kms_key_id);
	add_if(p, "ClientToken", r->client_token);
	ec2_params_tag_spec(p, 1, "image", r->tags, r->ntags);
	ec2_params_tag_spec(p, 2, "snapshot", r->tags, r->ntags);
	if (r->dry_run)
		ec2_params_add(p, "DryRun", "true");
}

int ec2_copy_image(const struct ec2_transport *t, const struct lc_copy_image_req *r, char *new_id,
                   size_t idsz, struct amis_err *err)
{
	struct ec2_params p;
	int rc;

	new_id[0] = '\0';
	if (!r || !aws_resource_id_valid(r->image_id, "ami") || !r->name || !r->name[0] ||
	    !r->source_region || !r->source_region[0] || !r->dest_region || !r->dest_region[0])
		return err_set(err, AMIS_E_INVALID_ARGUMENT,
		               "CopyImage needs an image id, a name and both regions");
	ec2_params_init(&p);
	ec2_copy_image_params(&p, r);
	rc = new_resource(t, r->dest_region, "CopyImage", &p, r->client_token != NULL, "imageId",
	                  "ami", new_id, idsz, err);
	ec2_params_free(&p);
	return rc;
}

int ec2_lock_snapshot_params(struct ec2_params *p, const struct lc_lock_req *r,
                             struct amis_err *err)
{
	char num[24];

	if (!r || !aws_resource_id_valid(r->snapshot_id, "snap"))
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "LockSnapshot needs a snapshot id");
	if (!r->mode || (strcmp(r->mode, "governance") && strcmp(r->mode, "compliance")))
		return err_set(err, AMIS_E_INVALID_ARGUMENT,
		               "the lock mode is governance or compliance");
	if ((r->duration_days > 0) == (r->expiration_date && r->expiration_date[0]))
		return err_set(err, AMIS_E_INVALID_ARGUMENT,
		               "a lock has either a duration in days or an expiration date");
	if (r->duration_days < 0 || r->duration_days > 36500)
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "a lock lasts 1 to 36500 days");
	if (r->cool_off_hours &&
	    (strcmp(r->mode, "compliance") || r->cool_off_hours < 1 || r->cool_off_hours > 72))
		return err_set(err, AMIS_E_INVALID_ARGUMENT,
		               "a cooling-off period is 1 to 72 hours, in compliance mode only");
	ec2_params_add(p, "SnapshotId", r->snapshot_id);
	ec2_params_add(p, "LockMode", r->mode);
	if (r->duration_days > 0) {
		snprintf(num, sizeof(num), "%ld", r->duration_days);
		ec2_params_add(p, "LockDuration", num);
	} else {
		ec2_params_add(p, "ExpirationDate", r->expiration_date);
	}
	if (r->cool_off_hours) {
		snprintf(num, sizeof(num), "%ld", r->cool_off_hours);
		ec2_params_add(p, "CoolOffPeriod", num);
	}
	if (r->dry_run)
		ec2_params_add(p, "DryRun", "true");
	return 0;
}

int ec2_lock_snapshot(const struct ec2_transport *t, const char *region,
                      const struct lc_lock_req *r, struct lc_lock *out, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	memset(out, 0, sizeof(*out));
	ec2_params_init(&p);
	rc = ec2_lock_snapshot_params(&p, r, err);
	/* Locking again with the same settings is harmless: retried like a read. */
	if (rc == 0)
		rc = call(t, region, "LockSnapshot", &p, true, &doc, err);
	if (rc == 0 && doc && ec2_parse_lock(xml_root(doc), out, err) < 0)
		rc = err_prefix(err, "EC2 LockSnapshot");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

/* An action on one resource whose answer we only check for being one. */
static int simple(const struct ec2_transport *t, const char *region, const char *action,
                  const char *id_param, const char *id, const char *prefix, bool idempotent,
                  struct ec2_params *extra, struct amis_err *err)
{
	struct ec2_params own;
	struct ec2_params *p = extra ? extra : &own;
	xmlDocPtr doc = NULL;
	int rc;

	if (!extra)
		ec2_params_init(&own);
	if (!aws_resource_id_valid(id, prefix)) {
		rc = err_set(err, AMIS_E_INVALID_ARGUMENT, "%s needs a %s-... id", action, prefix);
	} else {
		ec2_params_add(p, id_param, id);
		rc = call(t, region, action, p, idempotent, &doc, err);
	}
	xml_free(doc);
	if (!extra)
		ec2_params_free(&own);
	return rc;
}

int ec2_unlock_snapshot(const struct ec2_transport *t, const char *region, const char *snapshot_id,
                        struct amis_err *err)
{
	return simple(t, region, "UnlockSnapshot", "SnapshotId", snapshot_id, "snap", true, NULL,
	              err);
}

int ec2_describe_locked_snapshots(const struct ec2_transport *t, const char *region,
                                  const char *const *ids, size_t nids, struct lc_lock *out,
                                  size_t max, size_t *n, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	xmlNodePtr it;
	size_t i;
	int rc;

	*n = 0;
	if (nids == 0)
		return 0;
	ec2_params_init(&p);
	for (i = 0; i < nids; i++)
		ec2_params_addf(&p, ids[i], "SnapshotId.%zu", i + 1);
	rc = call(t, region, "DescribeLockedSnapshots", &p, true, &doc, err);
	for (it = rc == 0 && doc ? xml_items_first(xml_root(doc), "snapshotSet") : NULL;
	     it && *n < max; it = xml_items_next(it)) {
		if (ec2_parse_lock(it, &out[*n], err) < 0) {
			rc = err_prefix(err, "EC2 DescribeLockedSnapshots");
			break;
		}
		(*n)++;
	}
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int ec2_lc_create_tags(const struct ec2_transport *t, const char *region, const char *resource_id,
                       const struct ec2_tag *tags, size_t ntags, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	size_t i;
	int rc;

	/* EC2 allows 50 tags per resource. */
	if (!resource_id || !resource_id[0] || !ntags || ntags > 50)
		return err_set(err, AMIS_E_INVALID_ARGUMENT,
		               "CreateTags needs a resource and 1 to 50 tags");
	ec2_params_init(&p);
	ec2_params_add(&p, "ResourceId.1", resource_id);
	for (i = 0; i < ntags; i++) {
		ec2_params_addf(&p, tags[i].key, "Tag.%zu.Key", i + 1);
		ec2_params_addf(&p, tags[i].value, "Tag.%zu.Value", i + 1);
	}
	/* Tagging twice sets the same values: safe to retry. */
	rc = call(t, region, "CreateTags", &p, true, &doc, err);
	if (rc < 0)
		err_prefix(err, "EC2 CreateTags");
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

int ec2_delete_snapshot(const struct ec2_transport *t, const char *region, const char *snapshot_id,
                        struct amis_err *err)
{
	/* Deleting twice: the second is InvalidSnapshot.NotFound, which callers take as gone. */
	return simple(t, region, "DeleteSnapshot", "SnapshotId", snapshot_id, "snap", true, NULL,
	              err);
}

int ec2_lc_deregister_image(const struct ec2_transport *t, const char *region, const char *image_id,
                            struct amis_err *err)
{
	return simple(t, region, "DeregisterImage", "ImageId", image_id, "ami", true, NULL, err);
}

int ec2_share_snapshot(const struct ec2_transport *t, const char *region, const char *snapshot_id,
                       const char *account, bool remove, struct amis_err *err)
{
	struct ec2_params p;
	int rc;

	if (!ec2_account_id_valid(account))
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "an AWS account id is 12 digits");
	ec2_params_init(&p);
	ec2_params_add(&p, "Attribute", "createVolumePermission");
	ec2_params_add(&p, "OperationType", remove ? "remove" : "add");
	ec2_params_add(&p, "UserId.1", account);
	rc = simple(t, region, "ModifySnapshotAttribute", "SnapshotId", snapshot_id, "snap", true,
	            &p, err);
	ec2_params_free(&p);
	return rc;
}

int ec2_share_image(const struct ec2_transport *t, const char *region, const char *image_id,
                    const char *account, bool remove, struct amis_err *err)
{
	struct ec2_params p;
	int rc;

	if (!ec2_account_id_valid(account))
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "an AWS account id is 12 digits");
	ec2_params_init(&p);
	ec2_params_addf(&p, account, "LaunchPermission.%s.1.UserId", remove ? "Remove" : "Add");
	rc = simple(t, region, "ModifyImageAttribute", "ImageId", image_id, "ami", true, &p, err);
	ec2_params_free(&p);
	return rc;
}
