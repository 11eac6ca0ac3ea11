/*
 * test_lifecycle.c - the lifecycle's EC2 calls (worker/ec2_lifecycle.c),
 * its transport (cli/lc_aws.c) and backups made of what EC2 lists
 * (cli/lc_backup.c): every parser on good, truncated and error answers,
 * then each call against the fake EC2 (test/unit/ec2_fake_server.py), which
 * checks every signature for the region of its scope and recomputes the
 * PresignedUrl of an encrypted CopySnapshot from the SigV4 specification.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fake_ec2.h"
#include "lifecycle.h"
#include "tap.h"

#define AKID "AKIDEXAMPLE"
#define SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define SYSID "7000000000000000001"
#define NS "xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\""

static xmlDocPtr parse200(const char *action, const char *body, struct amis_err *err)
{
	xmlDocPtr doc = NULL;

	if (ec2_parse_response(action, 200, body, strlen(body), NULL, false, &doc, err) < 0)
		return NULL;
	return doc;
}

static void test_parse_snapshots(void)
{
	static const char good[] =
	    "<DescribeSnapshotsResponse " NS "><requestId>r</requestId><snapshotSet>"
	    "<item><snapshotId>snap-0123456789abcdef0</snapshotId><volumeId>vol-0aaaaaaaaaaaaaaa1"
	    "</volumeId><status>error</status><statusMessage>The volume was detached"
	    "</statusMessage><progress>12%</progress><startTime>2026-12-02T01:00:00.000Z"
	    "</startTime><volumeSize>100</volumeSize><encrypted>true</encrypted><kmsKeyId>arn:k"
	    "</kmsKeyId><ownerId>123456789012</ownerId><tagSet><item><key>ami-snapshot:name</key>"
	    "<value>nightly</value></item><item><key>empty</key></item><item><value>no key"
	    "</value></item></tagSet><newMember>x</newMember></item>"
	    "<item><snapshotId>snap-0123456789abcdef1</snapshotId></item>"
	    "</snapshotSet><nextToken>tok-2</nextToken></DescribeSnapshotsResponse>";
	struct lc_snapshot_list l = {0};
	struct amis_err err;
	char token[64];
	xmlDocPtr doc = parse200("DescribeSnapshots", good, &err);

	ok(doc && ec2_parse_lc_snapshots(doc, &l, token, sizeof(token), &err) == 0,
	   "a page of snapshots parses");
	is_int((long)l.n, 2L, "two snapshots");
	is_str(token, "tok-2", "the next page's token");
	is_str(l.items[0].state, "error", "status");
	is_str(l.items[0].state_message, "The volume was detached", "statusMessage");
	is_str(l.items[0].progress, "12%", "progress");
	is_str(l.items[0].start_time, "2026-12-02T01:00:00.000Z", "startTime");
	is_int((long)l.items[0].volume_size_gib, 100L, "volumeSize");
	ok(l.items[0].encrypted, "encrypted");
	is_str(l.items[0].kms_key_id, "arn:k", "kmsKeyId");
	is_int((long)l.items[0].tags.n, 2L, "two readable tags (a tag without a key is dropped)");
	is_str(lc_tags_get(&l.items[0].tags, "ami-snapshot:name"), "nightly", "a tag's value");
	is_str(lc_tags_get(&l.items[0].tags, "empty"), "", "a tag without a value is empty");
	ok(!lc_tags_get(&l.items[0].tags, "nope"), "a missing tag is NULL");
	ok(!l.items[1].state[0] && l.items[1].volume_size_gib == -1 && !l.items[1].encrypted &&
	       l.items[1].tags.n == 0,
	   "a bare item: only its id, the rest unknown");
	lc_snapshot_list_free(&l);
	xml_free(doc);

	doc =
	    parse200("DescribeSnapshots",
	             "<DescribeSnapshotsResponse><snapshotSet><item><snapshotId>vol-1</snapshotId>"
	             "</item></snapshotSet></DescribeSnapshotsResponse>",
	             &err);
	ok(doc && ec2_parse_lc_snapshots(doc, &l, NULL, 0, &err) < 0 &&
	       !strcmp(err.code, "MalformedResponse") && strstr(err.msg, "snap-"),
	   "a snapshot id of the wrong shape is refused: %s", err.msg);
	lc_snapshot_list_free(&l);
	xml_free(doc);
	doc = parse200("DescribeSnapshots",
	               "<DescribeSnapshotsResponse><snapshotSet><item><status>completed</status>"
	               "</item></snapshotSet></DescribeSnapshotsResponse>",
	               &err);
	ok(doc && ec2_parse_lc_snapshots(doc, &l, NULL, 0, &err) < 0,
	   "an item without a snapshotId is refused: %s", err.msg);
	lc_snapshot_list_free(&l);
	xml_free(doc);
	ok(!parse200("DescribeSnapshots", "<DescribeSnapshotsResponse><snapshotSet><item>", &err) &&
	       !strcmp(err.code, "MalformedResponse"),
	   "a truncated answer is MalformedResponse");
	{
		xmlDocPtr d = NULL;
		static const char e[] =
		    "<Response><Errors><Error><Code>UnauthorizedOperation</Code>"
		    "<Message>You are not authorized to perform: "
		    "ec2:DescribeSnapshots</Message></Error></Errors><RequestID>"
		    "x-1</RequestID></Response>";

		ok(ec2_parse_response("DescribeSnapshots", 403, e, strlen(e), NULL, false, &d,
		                      &err) < 0 &&
		       !strcmp(err.code, "UnauthorizedOperation") &&
		       strstr(err.msg, "ec2:DescribeSnapshots"),
		   "an error answer keeps EC2's code and names the IAM action: %s", err.msg);
	}
	doc = parse200("DescribeSnapshots", "<DescribeSnapshotsResponse/>", &err);
	ok(doc && ec2_parse_lc_snapshots(doc, &l, token, sizeof(token), &err) == 0 && l.n == 0 &&
	       !token[0],
	   "no snapshotSet: none, last page");
	lc_snapshot_list_free(&l);
	xml_free(doc);
}

static void test_parse_images_and_locks(void)
{
	static const char good[] =
	    "<DescribeImagesResponse " NS "><imagesSet><item><imageId>ami-0123456789abcdef0"
	    "</imageId><imageState>failed</imageState><stateReason><code>x</code><message>"
	    "snapshot gone</message></stateReason><creationDate>2026-11-29T03:05:00.000Z"
	    "</creationDate><name>weekly</name><blockDeviceMapping><item><deviceName>/dev/xvda"
	    "</deviceName><ebs><snapshotId>snap-0123456789abcdef0</snapshotId></ebs></item><item>"
	    "<deviceName>/dev/sdb</deviceName><virtualName>ephemeral0</virtualName></item><item>"
	    "<deviceName>/dev/sdc</deviceName><ebs><volumeSize>8</volumeSize></ebs></item>"
	    "</blockDeviceMapping><tagSet><item><key>k</key><value>v</value></item></tagSet></item>"
	    "</imagesSet></DescribeImagesResponse>";
	static const char lock[] =
	    "<LockSnapshotResponse " NS "><snapshotId>snap-0123456789abcdef0</snapshotId>"
	    "<lockState>compliance-cooloff</lockState><lockDuration>30</lockDuration>"
	    "<coolOffPeriod>24</coolOffPeriod><coolOffPeriodExpiresOn>2026-12-04T00:00:00.000Z"
	    "</coolOffPeriodExpiresOn><lockCreatedOn>2026-12-03T00:00:00.000Z</lockCreatedOn>"
	    "<lockExpiresOn>2027-01-02T00:00:00.000Z</lockExpiresOn></LockSnapshotResponse>";
	struct lc_image_list l = {0};
	struct lc_lock lk;
	struct amis_err err;
	char id[32];
	xmlDocPtr doc = parse200("DescribeImages", good, &err);

	ok(doc && ec2_parse_lc_images(doc, &l, NULL, 0, &err) == 0 && l.n == 1, "an image parses");
	is_str(l.items[0].state, "failed", "imageState");
	is_str(l.items[0].state_reason, "snapshot gone", "stateReason/message");
	is_str(l.items[0].creation_date, "2026-11-29T03:05:00.000Z", "creationDate");
	is_int((long)l.items[0].nsnapshots, 1L, "only EBS mappings with a snapshot count");
	is_str(l.items[0].snapshot_ids[0], "snap-0123456789abcdef0", "the mapping's snapshot");
	is_str(lc_tags_get(&l.items[0].tags, "k"), "v", "the image's tags");
	lc_image_list_free(&l);
	xml_free(doc);
	doc = parse200("DescribeImages",
	               "<DescribeImagesResponse><imagesSet><item><imageId>ami-0123456789abcdef0"
	               "</imageId><blockDeviceMapping><item><ebs><snapshotId>vol-1</snapshotId>"
	               "</ebs></item></blockDeviceMapping></item></imagesSet>"
	               "</DescribeImagesResponse>",
	               &err);
	ok(doc && ec2_parse_lc_images(doc, &l, NULL, 0, &err) < 0,
	   "a mapping's snapshot id of the wrong shape is refused: %s", err.msg);
	lc_image_list_free(&l);
	xml_free(doc);

	doc = parse200("LockSnapshot", lock, &err);
	ok(doc && ec2_parse_lock(xml_root(doc), &lk, &err) == 0, "a lock parses");
	is_str(lk.lock_state, "compliance-cooloff", "lockState");
	is_int(lk.lock_duration_days, 30L, "lockDuration");
	is_int(lk.cool_off_hours, 24L, "coolOffPeriod");
	is_str(lk.lock_expires_on, "2027-01-02T00:00:00.000Z", "lockExpiresOn");
	is_str(lk.cool_off_expires_on, "2026-12-04T00:00:00.000Z", "coolOffPeriodExpiresOn");
	xml_free(doc);
	doc = parse200("CopySnapshot",
	               "<CopySnapshotResponse><snapshotId>snap-0123456789abcdef0</snapshotId>"
	               "</CopySnapshotResponse>",
	               &err);
	ok(doc && ec2_parse_new_id(doc, "snapshotId", "snap", id, sizeof(id), &err) == 0 &&
	       !strcmp(id, "snap-0123456789abcdef0"),
	   "a copy's id");
	xml_free(doc);
	doc = parse200("CopyImage",
	               "<CopyImageResponse><requestId>x</requestId></CopyImageResponse>", &err);
	ok(doc && ec2_parse_new_id(doc, "imageId", "ami", id, sizeof(id), &err) < 0,
	   "a copy answer without the id fails: %s", err.msg);
	xml_free(doc);
}

static void test_params(void)
{
	struct ec2_params p;
	struct amis_err err;
	struct lc_lock_req r = {"snap-0123456789abcdef0", "compliance", 30, NULL, 24, false};
	struct ec2_tag tags[2] = {{"ami-snapshot:name", "n"}, {"empty", NULL}};
	struct lc_copy_snapshot_req cs = {"us-east-1", "eu-west-1", "snap-0123456789abcdef0",
	                                  NULL,        false,       "arn:k",
	                                  tags,        2,           false};

	ec2_params_init(&p);
	ok(ec2_lock_snapshot_params(&p, &r, &err) == 0, "a compliance lock with a cool-off");
	is_str(ec2_params_get(&p, "LockMode"), "compliance", "LockMode");
	is_str(ec2_params_get(&p, "LockDuration"), "30", "LockDuration");
	is_str(ec2_params_get(&p, "CoolOffPeriod"), "24", "CoolOffPeriod");
	ok(!ec2_params_get(&p, "ExpirationDate"), "no ExpirationDate with a duration");
	ec2_params_free(&p);
	r.mode = "governance";
	ok(ec2_lock_snapshot_params(&p, &r, &err) < 0, "no cool-off in governance mode: %s",
	   err.msg);
	ec2_params_free(&p);
	r.cool_off_hours = 0;
	r.expiration_date = "2027-01-01T00:00:00Z";
	ok(ec2_lock_snapshot_params(&p, &r, &err) < 0, "a duration and a date: %s", err.msg);
	ec2_params_free(&p);
	r.duration_days = 0;
	ok(ec2_lock_snapshot_params(&p, &r, &err) == 0 &&
	       !strcmp(ec2_params_get(&p, "ExpirationDate"), "2027-01-01T00:00:00Z"),
	   "a lock until a date");
	ec2_params_free(&p);
	r.mode = "forever";
	ok(ec2_lock_snapshot_params(&p, &r, &err) < 0, "an unknown mode: %s", err.msg);
	ec2_params_free(&p);

	ec2_copy_snapshot_params(&p, &cs);
	is_str(ec2_params_get(&p, "SourceRegion"), "us-east-1", "SourceRegion");
	is_str(ec2_params_get(&p, "DestinationRegion"), "eu-west-1", "DestinationRegion");
	is_str(ec2_params_get(&p, "Encrypted"), "true", "a KmsKeyId makes the copy encrypted");
	is_str(ec2_params_get(&p, "TagSpecification.1.ResourceType"), "snapshot", "tags");
	is_str(ec2_params_get(&p, "TagSpecification.1.Tag.2.Value"), "", "a NULL value is empty");
	ok(!ec2_params_get(&p, "PresignedUrl"), "the URL is added by the call, not here");
	ec2_params_free(&p);
	ok(ec2_account_id_valid("123456789012") && !ec2_account_id_valid("12345678901") &&
	       !ec2_account_id_valid("12345678901x") && !ec2_account_id_valid(NULL),
	   "account ids");
}

/* The fake's world as "region id state lock shared|" lines, and one id's tags. */
static char *world(struct ec2_client *c, const struct aws_credentials *cr, const char *id,
                   const char *tag)
{
	struct ec2_params p;
	struct amis_err err;
	struct strbuf sb;
	xmlDocPtr doc = NULL;
	xmlNodePtr it, t;
	char *out;

	sb_init(&sb);
	ec2_params_init(&p);
	if (ec2_call(c, cr, "LcState", &p, 5000, 0, &doc, &err) == 0) {
		for (it = xml_items_first(xml_root(doc), "itemSet"); it; it = xml_items_next(it)) {
			char *i = xml_text_dup(xml_child(it, "id"));

			if (!id || !strcmp(i, id)) {
				char *r = xml_text_dup(xml_child(it, "region"));
				char *s = xml_text_dup(xml_child(it, "state"));
				char *l = xml_text_dup(xml_child(it, "lock"));
				char *sh = xml_text_dup(xml_child(it, "shared"));

				if (tag) {
					for (t = xml_items_first(it, "tagSet"); t;
					     t = xml_items_next(t)) {
						char *k = xml_text_dup(xml_child(t, "key"));
						char *v = xml_text_dup(xml_child(t, "value"));

						if (!strcmp(k, tag))
							sb_appendf(&sb, "%s", v);
						free(k);
						free(v);
					}
				} else {
					sb_appendf(&sb, "%s %s %s %s %s|", r, i, s, l, sh);
				}
				free(r);
				free(s);
				free(l);
				free(sh);
			}
			free(i);
		}
	}
	xml_free(doc);
	ec2_params_free(&p);
	out = xstrdup(sb_str(&sb));
	sb_free(&sb);
	return out;
}

/* A pre-signer whose URL is signed for the wrong region: the fake must refuse it. */
static const struct ec2_transport *real_transport;

static int wrong_region_presign(void *ctx, const char *region, const char *action,
                                const struct ec2_params *p, struct strbuf *url,
                                struct amis_err *err)
{
	(void)region;
	return real_transport->presign(ctx, "eu-central-1", action, p, url, err);
}

static int flipped_presign(void *ctx, const char *region, const char *action,
                           const struct ec2_params *p, struct strbuf *url, struct amis_err *err)
{
	int rc = real_transport->presign(ctx, region, action, p, url, err);

	if (rc == 0 && url->len)
		url->data[url->len - 1] = url->data[url->len - 1] == '0' ? '1' : '0';
	return rc;
}

static void test_calls(void)
{
	struct lc_aws *a = lc_aws_new_static(endpoint, "us-east-1", AKID, SECRET);
	const struct ec2_transport *t = lc_aws_transport(a);
	struct ec2_client *probe = ec2_client_new(endpoint, "us-east-1");
	struct aws_credentials cr;
	struct lc_inventory inv;
	struct lc_scope scope = {SYSID, NULL, NULL};
	const char *kv[] = {"ami-snapshot:request-id"};
	const char *sv[] = {SYSID};
	struct ec2_filter f[2] = {{"tag-key", kv, 1},
	                          {"tag:ami-snapshot:system-identifier", sv, 1}};
	struct amis_err err;
	struct lc_lock lk, locks[4];
	size_t n, i;
	char id[64], id2[64], *s;

	memset(&cr, 0, sizeof(cr));
	snprintf(cr.access_key_id, sizeof(cr.access_key_id), "%s", AKID);
	snprintf(cr.secret_access_key, sizeof(cr.secret_access_key), "%s", SECRET);

	memset(&inv, 0, sizeof(inv));
	snprintf(inv.region, sizeof(inv.region), "us-east-1");
	ok(ec2_lc_describe_snapshots(t, "us-east-1", f, 1, &inv.snaps, &err) == 0,
	   "DescribeSnapshots by tag key, every page (%s)", err.msg);
	is_int((long)inv.snaps.n, 9L, "nine tagged snapshots over four pages of three");
	lc_snapshot_list_free(&inv.snaps);
	ok(ec2_lc_describe_snapshots(t, "us-east-1", f, 2, &inv.snaps, &err) == 0 &&
	       inv.snaps.n == 8,
	   "with this cluster's system identifier: eight (%s)", err.msg);
	ok(ec2_lc_describe_images(t, "us-east-1", f, 2, &inv.images, &err) == 0 &&
	       inv.images.n == 1,
	   "DescribeImages by tags: this cluster's AMI only (%s)", err.msg);
	lc_group(&inv, &scope, 0);
	is_int((long)inv.n, 7L, "seven backups");
	is_str(inv.items[0].request_id, "r-pending", "newest first");
	is_str(inv.items[0].state, "pending", "a pending snapshot: pending");
	is_int(inv.items[0].progress, 40L, "... at 40 percent");
	for (i = 0; i < inv.n; i++) {
		const struct lc_backup *b = &inv.items[i];

		if (!strcmp(b->request_id, "r-night-1")) {
			ok(!b->ami && b->nsnaps == 2 && !strcmp(b->state, "completed") &&
			       b->size_gib == 16 && !strcmp(b->created, "2026-12-02T01:00:00.000Z"),
			   "r-night-1: a completed set of two, 16 GiB, created at its first "
			   "snapshot");
			ok(!strncmp(b->verified, "2026-12-02T05:00:00Z", 20), "... last verified");
			is_int((long)lc_retention_state(b), (long)RET_GOOD,
			       "... good for retention");
		} else if (!strcmp(b->request_id, "r-failed")) {
			is_str(b->state, "failed", "r-failed: failed");
			ok(strstr(b->reason, "The volume was detached") != NULL,
			   "... EC2's reason: %s", b->reason);
		} else if (!strcmp(b->request_id, "r-ami-1")) {
			ok(b->ami && b->image && !strcmp(b->image_id, "ami-10000000000000001") &&
			       !strcmp(b->state, "completed"),
			   "r-ami-1: an available AMI with its snapshot");
		}
	}
	{
		json_object *o =
		    lc_backup_json(&inv.items[0], lc_parse_time("2026-12-03T02:00:00Z"));
		const char *js = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);

		ok(strstr(js, "\"request_id\":\"r-pending\"") && strstr(js, "\"kind\":\"set\"") &&
		       strstr(js, "\"state\":\"pending\"") && strstr(js, "\"age_seconds\":3600") &&
		       strstr(js, "\"progress\":40") && strstr(js, "\"image\":null") &&
		       strstr(js, "\"lock\":null") && strstr(js, "\"copies\":[]"),
		   "a backup's JSON: %s", js);
		json_object_put(o);
	}
	lc_inventory_free(&inv);

	{
		const char *ids[] = {"snap-10000000000000003", "snap-10000000000000001"};
		const char *img[] = {"ami-10000000000000001"};
		const char *bad[] = {"snap-1000000000000dead"};
		struct lc_image_list il = {0};

		ok(ec2_lc_describe_snapshot_ids(t, "us-east-1", ids, 2, &inv.snaps, &err) == 0 &&
		       inv.snaps.n == 2,
		   "DescribeSnapshots by ids (%s)", err.msg);
		s = last_request(probe, &cr);
		ok(strstr(s, "SnapshotId.2=snap-10000000000000001") && !strstr(s, "MaxResults") &&
		       !strstr(s, "Owner.1"),
		   "ids: SnapshotId.N, without MaxResults or Owner (EC2 refuses MaxResults with "
		   "ids)");
		free(s);
		lc_snapshot_list_free(&inv.snaps);
		ok(ec2_lc_describe_snapshot_ids(t, "us-east-1", bad, 1, &inv.snaps, &err) < 0 &&
		       !strcmp(err.code, "InvalidSnapshot.NotFound"),
		   "an unknown id is EC2's error: %s", err.code);
		lc_snapshot_list_free(&inv.snaps);
		ok(ec2_lc_describe_image_ids(t, "us-east-1", img, 1, &il, &err) == 0 && il.n == 1 &&
		       il.items[0].nsnapshots == 1 &&
		       !strcmp(il.items[0].snapshot_ids[0], "snap-10000000000000005"),
		   "DescribeImages by id, with its mapping's snapshot (%s)", err.msg);
		lc_image_list_free(&il);
		ok(ec2_lc_describe_images(t, "us-east-1", NULL, 0, &il, &err) == 0 && il.n == 2,
		   "DescribeImages of all our images: two (%s)", err.msg);
		s = last_request(probe, &cr);
		ok(strstr(s, "Owner.1=self") && strstr(s, "MaxResults=1000"),
		   "Owner=self, MaxResults");
		free(s);
		lc_image_list_free(&il);
		ok(ec2_lc_describe_snapshot_ids(t, "us-east-1", ids, 0, &inv.snaps, &err) < 0,
		   "no ids: refused before any call (it would list everything)");
	}

	/* Another region: signed for it (the fake refuses a signature for the wrong one). */
	ok(ec2_lc_describe_snapshots(t, "eu-west-1", f, 1, &inv.snaps, &err) == 0 &&
	       inv.snaps.n == 1 &&
	       !strcmp(lc_tags_get(&inv.snaps.items[0].tags, "ami-snapshot:copy-source-region"),
	               "us-east-1"),
	   "eu-west-1 holds the copy (%s)", err.msg);
	lc_inventory_free(&inv);
	ok(ec2_lc_describe_snapshots(t, "not a region", f, 1, &inv.snaps, &err) < 0,
	   "a bad region name is refused before any call: %s", err.msg);

	/* Locks. */
	{
		struct lc_lock_req r = {"snap-10000000000000001", "governance", 7, NULL, 0, false};
		const char *ids[] = {"snap-10000000000000001", "snap-10000000000000003",
		                     "snap-10000000000000009"};

		ok(ec2_lock_snapshot(t, "us-east-1", &r, &lk, &err) == 0 &&
		       !strcmp(lk.lock_state, "governance") && lk.lock_duration_days == 7,
		   "LockSnapshot governance 7 days (%s)", err.msg);
		ok(ec2_describe_locked_snapshots(t, "us-east-1", ids, 3, locks, 4, &n, &err) == 0 &&
		       n == 2,
		   "DescribeLockedSnapshots: two of three are locked (%s)", err.msg);
		ok(ec2_unlock_snapshot(t, "us-east-1", "snap-10000000000000001", &err) == 0,
		   "UnlockSnapshot (%s)", err.msg);
		ok(ec2_unlock_snapshot(t, "us-east-1", "snap-10000000000000001", &err) < 0 &&
		       !strcmp(err.code, "SnapshotLockNotFound"),
		   "unlocking again: EC2's code %s", err.code);
	}

	/* Copies. */
	{
		struct ec2_tag tags[] = {{"ami-snapshot:request-id", "r-night-1"},
		                         {"ami-snapshot:copy-of", "snap-10000000000000001"}};
		struct lc_copy_snapshot_req r = {"us-east-1", "eu-west-1", "snap-10000000000000001",
		                                 NULL,        false,       NULL,
		                                 tags,        2,           false};
		struct lc_copy_image_req ri = {"us-east-1", "eu-west-1", "ami-10000000000000001",
		                               "weekly",    NULL,        false,
		                               NULL,        "tok-1",     tags,
		                               2,           false};

		ok(ec2_copy_snapshot(t, &r, id, sizeof(id), &err) == 0 && !strncmp(id, "snap-2", 6),
		   "CopySnapshot made in eu-west-1: %s (%s)", id, err.msg);
		s = world(probe, &cr, id, "ami-snapshot:copy-of");
		is_str(s, "snap-10000000000000001", "the copy carries its TagSpecification tags");
		free(s);
		r.snapshot_id = "snap-10000000000000002"; /* encrypted */
		ok(ec2_copy_snapshot(t, &r, id, sizeof(id), &err) < 0 &&
		       !strcmp(err.code, "MissingParameter"),
		   "an encrypted source copied as unencrypted: EC2 wants the PresignedUrl (%s)",
		   err.code);
		r.encrypted = true;
		ok(ec2_copy_snapshot(t, &r, id, sizeof(id), &err) == 0,
		   "an encrypted CopySnapshot with a PresignedUrl the fake verified (%s)", err.msg);
		{
			struct ec2_transport bad = *t;

			real_transport = t;
			bad.presign = wrong_region_presign;
			ok(ec2_copy_snapshot(&bad, &r, id2, sizeof(id2), &err) < 0 &&
			       strstr(err.msg, "PresignedUrl"),
			   "a URL signed for another region is refused: %s", err.msg);
			bad.presign = flipped_presign;
			ok(ec2_copy_snapshot(&bad, &r, id2, sizeof(id2), &err) < 0 &&
			       strstr(err.msg, "X-Amz-Signature does not match"),
			   "a URL with a wrong signature is refused: %s", err.msg);
		}
		{
			/* Without a pre-signer the encrypted copy cannot be asked for. */
			struct ec2_transport bare = *t;

			bare.presign = NULL;
			ok(ec2_copy_snapshot(&bare, &r, id2, sizeof(id2), &err) < 0,
			   "no pre-signer, no encrypted copy: %s", err.msg);
		}
		r.snapshot_id = "snap-1000000000000dead";
		ok(ec2_copy_snapshot(t, &r, id, sizeof(id), &err) < 0 &&
		       !strcmp(err.code, "InvalidSnapshot.NotFound"),
		   "copying what the source region lacks: %s", err.code);
		ok(ec2_copy_image(t, &ri, id, sizeof(id), &err) == 0 && !strncmp(id, "ami-2", 5),
		   "CopyImage: %s (%s)", id, err.msg);
		ok(ec2_copy_image(t, &ri, id2, sizeof(id2), &err) == 0 && !strcmp(id, id2),
		   "the same ClientToken: the same image, not a second one");
		ok(ec2_share_image(t, "eu-west-1", id, "210987654321", false, &err) == 0,
		   "ModifyImageAttribute launchPermission add (%s)", err.msg);
		s = world(probe, &cr, id, NULL);
		ok(strstr(s, "210987654321") != NULL, "the image is shared: %s", s);
		free(s);
		ok(ec2_share_image(t, "eu-west-1", id, "21098765432", false, &err) < 0,
		   "a bad account is refused before any call");
	}
	ok(ec2_share_snapshot(t, "us-east-1", "snap-10000000000000001", "123456789012", false,
	                      &err) == 0 &&
	       ec2_share_snapshot(t, "us-east-1", "snap-10000000000000001", "210987654321", false,
	                          &err) == 0 &&
	       ec2_share_snapshot(t, "us-east-1", "snap-10000000000000001", "123456789012", true,
	                          &err) == 0,
	   "ModifySnapshotAttribute add, add, remove (%s)", err.msg);
	s = world(probe, &cr, "snap-10000000000000001", NULL);
	ok(strstr(s, " 210987654321|") != NULL, "one account left: %s", s);
	free(s);

	/* Deletion and EC2's refusals. */
	ok(ec2_delete_snapshot(t, "us-east-1", "snap-10000000000000004", &err) < 0 &&
	       !strcmp(err.code, "InvalidSnapshot.InUse"),
	   "a snapshot an image uses: %s", err.code);
	ok(ec2_delete_snapshot(t, "us-east-1", "snap-10000000000000003", &err) < 0 &&
	       !strcmp(err.code, "SnapshotLocked"),
	   "a locked snapshot: %s", err.code);
	ok(ec2_delete_snapshot(t, "us-east-1", "snap-10000000000000009", &err) == 0,
	   "DeleteSnapshot (%s)", err.msg);
	ok(ec2_delete_snapshot(t, "us-east-1", "snap-10000000000000009", &err) < 0 &&
	       !strcmp(err.code, "InvalidSnapshot.NotFound"),
	   "deleting again: gone (%s)", err.code);
	ok(ec2_lc_deregister_image(t, "us-east-1", "ami-1000000000000000f", &err) == 0,
	   "DeregisterImage (%s)", err.msg);
	ok(ec2_delete_snapshot(t, "us-east-1", "snap-10000000000000004", &err) == 0,
	   "its snapshot is no longer in use (%s)", err.msg);
	ok(ec2_delete_snapshot(t, "us-east-1", "vol-0123", &err) < 0, "a non-snapshot id");
	s = last_request(probe, &cr);
	ok(strstr(s, "SnapshotId=snap-10000000000000004") != NULL,
	   "the non-snapshot id was never sent");
	free(s);
	ec2_client_free(probe);
	lc_aws_free(a);
}

static void test_times(void)
{
	is_int((long)lc_parse_time("2026-12-03T01:00:00.000Z"), 1796259600L, "ISO with millis");
	is_int((long)lc_parse_time("2026-12-03T01:00:00Z"), 1796259600L, "ISO");
	is_int((long)lc_parse_time("2026-12-03T01:00:00+00:00"), 1796259600L, "+00:00");
	is_int((long)lc_parse_time("2026-12-03T01:00:00+02:00"), 0L, "not UTC: unreadable");
	is_int((long)lc_parse_time("yesterday"), 0L, "junk");
	{
		char b[16];

		lc_age_text(93784, b, sizeof(b));
		is_str(b, "1d2h", "age in days");
		lc_age_text(125, b, sizeof(b));
		is_str(b, "2m", "age in minutes");
	}
}

int main(void)
{
	test_parse_snapshots();
	test_parse_images_and_locks();
	test_params();
	test_times();
	start_server();
	test_calls();
	return done_testing();
}
