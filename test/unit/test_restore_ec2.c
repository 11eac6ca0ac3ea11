/*
 * test_restore_ec2.c - the restore command's EC2 calls (helper/cli/rs_ec2.c)
 * over real HTTP against ec2_fake_server.py, which checks every signature
 * with botocore: DescribeSnapshots by tag with its tags and two pages,
 * DescribeImages' snapshots, CreateVolume (its parameters, tags, a
 * throttled call retried with its idempotency token, EC2's refusal),
 * DescribeVolumes, AttachVolume, DetachVolume, DeleteVolume; and the
 * parsers on odd answers.
 */
#include <signal.h>

#include "ec2.h"
#include "fake_ec2.h"
#include "restore.h"
#include "tap.h"
#include "xml.h"

static struct ec2_client *probe;
static struct aws_credentials probe_creds;

/* What the fake server received last, as "name=value\n" lines. */
static char *last_sent(void)
{
	return last_request(probe, &probe_creds);
}

static int parse(const char *action, const char *body, xmlDocPtr *doc)
{
	struct amis_err err;

	return ec2_parse_response(action, 200, body, strlen(body), NULL, false, doc, &err);
}

static void test_parsers(void)
{
	struct rs_snapshot_list l;
	struct rs_volume_state v[2];
	struct rs_image img;
	struct amis_err err;
	xmlDocPtr doc;
	char tok[64], id[32];
	size_t n;

	rs_list_init(&l);
	parse("DescribeSnapshots",
	      "<DescribeSnapshotsResponse xmlns='urn:other'><snapshotSet><item><snapshotId>bad"
	      "</snapshotId></item></snapshotSet></DescribeSnapshotsResponse>",
	      &doc);
	ok(rs_parse_snapshots(doc, &l, tok, sizeof(tok), &err) < 0 &&
	       !strcmp(err.code, "MalformedResponse"),
	   "parse: a snapshot id of the wrong shape is refused");
	xml_free(doc);
	rs_list_free(&l);
	parse("DescribeSnapshots",
	      "<DescribeSnapshotsResponse><snapshotSet><item><snapshotId>snap-00000001</snapshotId>"
	      "<tagSet><item><value>no key</value></item><item><key>k</key><value>v</value></item>"
	      "</tagSet></item></snapshotSet></DescribeSnapshotsResponse>",
	      &doc);
	ok(rs_parse_snapshots(doc, &l, tok, sizeof(tok), &err) == 0 && l.n == 1 &&
	       l.items[0].ntags == 1 && !strcmp(rs_tag(&l.items[0], "k"), "v") &&
	       l.items[0].size_gib == -1 && !tok[0],
	   "parse: minimal snapshot (8-digit id), a tag without a key left out, no token");
	xml_free(doc);
	rs_list_free(&l);
	parse("DescribeSnapshots", "<DescribeSnapshotsResponse/>", &doc);
	ok(rs_parse_snapshots(doc, &l, tok, sizeof(tok), &err) == 0 && l.n == 0,
	   "parse: no snapshotSet is none");
	xml_free(doc);
	rs_list_free(&l);

	parse("DescribeImages",
	      "<DescribeImagesResponse><imagesSet><item><imageId>ami-00000001</imageId>"
	      "</item></imagesSet></DescribeImagesResponse>",
	      &doc);
	ok(rs_parse_image(doc, "ami-00000002", &img, &err) < 0, "parse: another image: not found");
	ok(rs_parse_image(doc, "ami-00000001", &img, &err) == 0 && img.n == 0,
	   "parse: an image without mapping has no snapshots");
	xml_free(doc);

	parse("CreateVolume",
	      "<CreateVolumeResponse><volumeId>vol-x</volumeId></CreateVolumeResponse>", &doc);
	ok(rs_parse_volume_id(doc, id, sizeof(id), &err) < 0,
	   "parse: CreateVolume's odd volume id");
	xml_free(doc);

	parse("DescribeVolumes",
	      "<DescribeVolumesResponse><volumeSet><item><volumeId>vol-00000001</volumeId>"
	      "</item></volumeSet></DescribeVolumesResponse>",
	      &doc);
	ok(rs_parse_volumes(doc, v, 2, &n, &err) < 0, "parse: a volume without status is refused");
	xml_free(doc);
	parse("DescribeVolumes",
	      "<DescribeVolumesResponse><volumeSet><item><volumeId>vol-00000001</volumeId><status>"
	      "available</status></item><item><volumeId>vol-00000002</volumeId><status>available"
	      "</status></item></volumeSet></DescribeVolumesResponse>",
	      &doc);
	ok(rs_parse_volumes(doc, v, 1, &n, &err) < 0,
	   "parse: more volumes than asked for are refused");
	xml_free(doc);
}

int main(void)
{
	struct rs_snapshot_list l;
	struct rs_volume_state vs[2];
	struct rs_image img;
	struct amis_err err;
	struct rs_aws *a;
	struct strbuf sb;
	char vol[32], *last;
	const char *ids[2];

	alarm(120);
	signal(SIGPIPE, SIG_IGN);
	test_parsers();
	start_server();
	probe = ec2_client_new(endpoint, "us-east-1");
	strcpy(probe_creds.access_key_id, "AKIDEXAMPLE");
	strcpy(probe_creds.secret_access_key, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
	a = rs_aws_new_static(endpoint, "us-east-1", "AKIDEXAMPLE",
	                      "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "i-0a1b2c3d4e5f60718",
	                      "us-east-1a");
	if (!a)
		bail("rs_aws_new_static failed");

	/* DescribeSnapshots by tag: two pages, tags. */
	rs_list_init(&l);
	ok(rs_describe_snapshots_by_tag(a, "ami-snapshot:name", "restore-test", &l, &err) == 0,
	   "DescribeSnapshots by tag: succeeds (%s)", err.msg);
	last = last_sent();
	ok(strstr(last, "Filter.1.Name=tag:ami-snapshot:name\n") &&
	       strstr(last, "Filter.1.Value.1=restore-test\n") && strstr(last, "Owner.1=self\n") &&
	       strstr(last, "NextToken=page-2\n"),
	   "DescribeSnapshots: the tag filter, Owner=self, and the second page's token");
	free(last);
	is_int(l.n, 3, "DescribeSnapshots: three snapshots over two pages");
	if (l.n == 3) {
		is_str(rs_atag(&l.items[0], "request-id"), "r-1", "tags: request id");
		is_str(rs_tag(&l.items[0], "Name"), "a & b", "tags: an XML entity decoded");
		is_str(rs_tag(&l.items[0], "empty"), "", "tags: a tag without a value is \"\"");
		is_str(l.items[0].state, "completed", "status");
		is_int(l.items[0].size_gib, 8, "volume size");
		is_str(l.items[0].start_time, "2026-12-02T10:00:00.000Z", "start time");
		is_str(l.items[1].state, "pending", "page 2: pending");
		is_str(l.items[1].volume_id, "", "page 2: no volume id is fine");
		is_int(l.items[2].ntags, 0, "page 2: a snapshot without tags");
	}
	rs_list_free(&l);
	ok(rs_describe_snapshots_by_tag(a, "ami-snapshot:name", "night*", &l, &err) < 0 &&
	       strstr(err.msg, "wildcard"),
	   "DescribeSnapshots: a name with a wildcard is refused before sending");

	/* By id. */
	ids[0] = "snap-00000000000000001";
	ids[1] = "snap-00000000000000002";
	ok(rs_describe_snapshots_by_id(a, ids, 2, &l, &err) == 0 && l.n == 2,
	   "DescribeSnapshots by id: two (%s)", err.msg);
	rs_list_free(&l);

	/* DescribeImages. */
	ok(rs_describe_image(a, "ami-0123456789abcdef0", &img, &err) == 0,
	   "DescribeImages: succeeds (%s)", err.msg);
	is_int(img.n, 2, "DescribeImages: two EBS snapshots (the ephemeral mapping left out)");
	is_str(img.snapshot_ids[1], "snap-0000000000000000b",
	       "DescribeImages: the second snapshot");
	is_str(img.device_names[0], "/dev/xvda", "DescribeImages: its device name");
	is_str(img.state, "available", "DescribeImages: state");
	ok(rs_describe_image(a, "ami-0000000000000dead", &img, &err) < 0 &&
	       !strcmp(err.code, "InvalidAMIID.NotFound"),
	   "DescribeImages: an unknown image is EC2's InvalidAMIID.NotFound");

	/* CreateVolume. */
	{
		struct rs_create_volume_req req = {
		    .snapshot_id = "snap-00000000000000001",
		    .availability_zone = "us-east-1a",
		    .volume_type = "io2",
		    .iops = 3000,
		    .throughput = 0,
		    .size_gib = 20,
		    .client_token = "tok-1",
		    .request_id = "r-1",
		    .name = "nightly",
		};

		ok(rs_create_volume(a, &req, vol, sizeof(vol), &err) == 0,
		   "CreateVolume: succeeds (%s)", err.msg);
		is_str(vol, "vol-0cccccccccccccccc", "CreateVolume: the new volume's id");
		last = last_sent();
		ok(strstr(last, "SnapshotId=snap-00000000000000001\n") &&
		       strstr(last, "AvailabilityZone=us-east-1a\n") &&
		       strstr(last, "VolumeType=io2\n") && strstr(last, "Iops=3000\n") &&
		       strstr(last, "Size=20\n") && !strstr(last, "Throughput") &&
		       strstr(last, "ClientToken=tok-1\n") &&
		       strstr(last, "TagSpecification.1.ResourceType=volume\n") &&
		       strstr(last, "TagSpecification.1.Tag.1.Key=ami-snapshot:restored-from\n") &&
		       strstr(last, "TagSpecification.1.Tag.1.Value=snap-00000000000000001\n") &&
		       strstr(last, "TagSpecification.1.Tag.2.Key=ami-snapshot:request-id\n") &&
		       strstr(last, "TagSpecification.1.Tag.3.Key=Name\n"),
		   "CreateVolume: its parameters and tags");
		if (!strstr(last, "Iops=3000"))
			printf("# %s", last);
		free(last);
		req.volume_type = NULL;
		req.iops = 0;
		req.size_gib = 0;
		req.client_token = "throttle-once";
		ok(rs_create_volume(a, &req, vol, sizeof(vol), &err) == 0,
		   "CreateVolume throttled once: retried with its token, succeeds (%s)", err.msg);
		last = last_sent();
		ok(strstr(last, "VolumeType=gp3\n") && !strstr(last, "Size=") &&
		       strstr(last, "ClientToken=throttle-once\n"),
		   "CreateVolume: gp3 by default, no size, the same token on the retry");
		free(last);
		req.snapshot_id = "snap-0000000000000dead";
		req.client_token = "tok-2";
		ok(rs_create_volume(a, &req, vol, sizeof(vol), &err) < 0 &&
		       !strcmp(err.code, "InvalidSnapshot.NotFound") &&
		       strstr(err.msg, "EC2 CreateVolume"),
		   "CreateVolume: EC2's refusal comes back with its code (%s)", err.msg);
	}

	/* DescribeVolumes: in the order asked, attachment read. */
	ids[0] = "vol-0cccccccccccccccc";
	ids[1] = "vol-0dddddddddddddddd";
	ok(rs_describe_volumes(a, ids, 2, vs, &err) == 0, "DescribeVolumes: succeeds (%s)",
	   err.msg);
	is_str(vs[0].status, "in-use", "DescribeVolumes: the first in use");
	is_str(vs[0].attach_state, "attached", "DescribeVolumes: attached");
	is_str(vs[0].device, "/dev/sdf", "DescribeVolumes: as /dev/sdf");
	is_str(vs[0].instance_id, "i-0a1b2c3d4e5f60718", "DescribeVolumes: to our instance");
	is_str(vs[1].status, "available", "DescribeVolumes: the second available");
	is_str(vs[1].attach_state, "", "DescribeVolumes: no attachment");

	/* Attach, detach, delete. */
	ok(rs_attach_volume(a, "vol-0cccccccccccccccc", "/dev/sdg", &err) == 0,
	   "AttachVolume: succeeds (%s)", err.msg);
	last = last_sent();
	ok(strstr(last, "Action=AttachVolume\n") &&
	       strstr(last, "VolumeId=vol-0cccccccccccccccc\n") &&
	       strstr(last, "InstanceId=i-0a1b2c3d4e5f60718\n") &&
	       strstr(last, "Device=/dev/sdg\n"),
	   "AttachVolume: volume, this instance, device");
	free(last);
	ok(rs_detach_volume(a, "vol-0cccccccccccccccc", &err) == 0, "DetachVolume: succeeds");
	last = last_sent();
	ok(strstr(last, "Action=DetachVolume\n") && !strstr(last, "InstanceId") &&
	       !strstr(last, "Force"),
	   "DetachVolume: the volume only, never Force");
	free(last);
	ok(rs_delete_volume(a, "vol-0cccccccccccccccc", &err) == 0, "DeleteVolume: succeeds");

	/* The devices in use (DescribeInstances). */
	sb_init(&sb);
	ok(rs_instance_devices(a, &sb, &err) == 0 && strstr(sb_str(&sb), "/dev/xvda\n"),
	   "DescribeInstances: the devices in use");
	sb_free(&sb);

	rs_aws_free(a);
	ec2_client_free(probe);
	stop_server();
	return done_testing();
}
