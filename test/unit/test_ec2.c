/*
 * test_ec2.c - the EC2 client without HTTP: form encoding, endpoints, and
 * response interpretation (success bodies of CreateSnapshots,
 * DescribeSnapshots, DescribeInstances, CreateTags; EC2 error documents;
 * non-XML error bodies; DryRunOperation), namespaced or not, reordered,
 * truncated or garbage.  test_ec2_http.c does the same over a real socket.
 */
#include <stdlib.h>
#include <string.h>

#include "ec2.h"
#include "tap.h"
#include "xml.h"

#define NS "xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\""

static void test_form_encoding(void)
{
	struct ec2_params p;
	struct strbuf sb;

	ec2_params_init(&p);
	sb_init(&sb);
	ec2_form_encode("DescribeRegions", &p, &sb);
	is_str(sb_str(&sb), "Action=DescribeRegions&Version=2016-11-15", "no parameters");

	ec2_params_add(&p, "ResourceId.1", "snap-0123456789abcdef0");
	ec2_params_addf(&p, "ami-snapshot:label", "Tag.%d.Key", 1);
	ec2_params_addf(&p, "a b*c~d/e+f=g&h\xc3\xa9-_.", "Tag.%d.Value", 1);
	ec2_params_addf(&p, NULL, "Tag.%d.Value", 2);
	ec2_params_add(&p, "Desc", "100%\n\"x'y'\"");
	sb_reset(&sb);
	ec2_form_encode("CreateTags", &p, &sb);
	is_str(sb_str(&sb),
	       "Action=CreateTags&Version=2016-11-15&ResourceId.1=snap-0123456789abcdef0"
	       "&Tag.1.Key=ami-snapshot%3Alabel"
	       "&Tag.1.Value=a+b%2Ac~d%2Fe%2Bf%3Dg%26h%C3%A9-_."
	       "&Tag.2.Value="
	       "&Desc=100%25%0A%22x%27y%27%22",
	       "RFC 3986 encoding of names and values, a space as '+', in order");
	is_str(ec2_params_get(&p, "Tag.1.Key"), "ami-snapshot:label", "params_get");
	ok(ec2_params_get(&p, "Nope") == NULL, "params_get: absent");
	is_int(p.n, 5, "five pairs");
	ec2_params_free(&p);
	is_int(p.n, 0, "freed");

	ec2_describe_snapshots_by_tag_params(&p, "ami-snapshot:request-id", "0b5e-Req-1");
	sb_reset(&sb);
	ec2_form_encode("DescribeSnapshots", &p, &sb);
	is_str(sb_str(&sb),
	       "Action=DescribeSnapshots&Version=2016-11-15"
	       "&Filter.1.Name=tag%3Aami-snapshot%3Arequest-id&Filter.1.Value.1=0b5e-Req-1"
	       "&Owner.1=self",
	       "DescribeSnapshots by tag: filter on the tag, own snapshots only");
	ec2_params_free(&p);

	{
		const char *keys[2] = {"ami-snapshot:request-id", "ami-snapshot:backup-state"};
		const char *values[2] = {"0b5e-Req-1", "started"};

		ec2_params_init(&p);
		ec2_describe_snapshots_by_tags_params(&p, keys, values, 2);
		sb_reset(&sb);
		ec2_form_encode("DescribeSnapshots", &p, &sb);
		is_str(sb_str(&sb),
		       "Action=DescribeSnapshots&Version=2016-11-15"
		       "&Filter.1.Name=tag%3Aami-snapshot%3Arequest-id&Filter.1.Value.1=0b5e-Req-1"
		       "&Filter.2.Name=tag%3Aami-snapshot%3Abackup-state&Filter.2.Value.1=started"
		       "&Owner.1=self",
		       "DescribeSnapshots by two tags: two filters (both must match), own only");
		ec2_params_free(&p);
	}

	sb_reset(&sb);
	ec2_uri_encode(&sb, "AZaz09-_.~ !\"#$%&'()*+,/:;<=>?@[\\]^`{|}\x7f");
	is_str(sb_str(&sb),
	       "AZaz09-_.~%20%21%22%23%24%25%26%27%28%29%2A%2B%2C%2F%3A%3B%3C%3D%3E%3F%40%5B%5C%5D%"
	       "5E%60%7B%7C%7D%7F",
	       "uri_encode: only unreserved characters stay");
	sb_free(&sb);
}

static void check_endpoint(const char *url, int want_rc, const char *want_host)
{
	struct amis_err err;
	char host[300], label[100];
	size_t i;
	int rc;

	/* The URL is printed in TAP output: one line. */
	snprintf(label, sizeof(label), "%s", url ? url : "(null)");
	for (i = 0; label[i]; i++) {
		if ((unsigned char)label[i] < 0x20)
			label[i] = '?';
	}
	err_clear(&err);
	rc = ec2_endpoint_check(url, host, sizeof(host), &err);
	is_int(rc, want_rc, "endpoint %s: %s", label, want_rc ? "refused" : "accepted");
	if (want_rc == 0)
		is_str(host, want_host, "endpoint %s: Host header", label);
	else
		is_str(err.code, "InvalidEndpoint", "endpoint %s: code", label);
}

static void test_endpoints(void)
{
	struct ec2_client *c;

	check_endpoint("https://ec2.eu-west-1.amazonaws.com", 0, "ec2.eu-west-1.amazonaws.com");
	check_endpoint("https://ec2.eu-west-1.amazonaws.com/", 0, "ec2.eu-west-1.amazonaws.com");
	check_endpoint("HTTPS://EC2.US-EAST-1.AmazonAWS.com:443", 0, "ec2.us-east-1.amazonaws.com");
	check_endpoint("https://ec2.us-east-1.amazonaws.com:8443", 0,
	               "ec2.us-east-1.amazonaws.com:8443");
	check_endpoint("http://127.0.0.1:8773", 0, "127.0.0.1:8773");
	check_endpoint("http://localhost:80/", 0, "localhost");
	check_endpoint("http://[::1]:8773/", 0, "[::1]:8773");
	check_endpoint("http://127.0.0.1:8773/ec2/", 0, "127.0.0.1:8773");
	check_endpoint("ftp://ec2.amazonaws.com", -1, NULL);
	check_endpoint("ec2.amazonaws.com", -1, NULL);
	check_endpoint("https://", -1, NULL);
	check_endpoint("https://:443", -1, NULL);
	check_endpoint("https://user:pw@ec2.amazonaws.com", -1, NULL);
	check_endpoint("https://ec2.amazonaws.com/?x=1", -1, NULL);
	check_endpoint("http://127.0.0.1:0", -1, NULL);
	check_endpoint("http://127.0.0.1:65536", -1, NULL);
	check_endpoint("http://127.0.0.1:80a", -1, NULL);
	check_endpoint("http://127.0.0.1:", -1, NULL);
	check_endpoint("http://ho st", -1, NULL);
	check_endpoint("http://host/a b", -1, NULL);
	check_endpoint("http://host\r\nX: y/", -1, NULL);
	check_endpoint(NULL, -1, NULL);

	c = ec2_client_new("http://127.0.0.1:8773/", "us-east-1");
	ok(c != NULL, "client for a local endpoint");
	is_str(c ? ec2_client_host(c) : "", "127.0.0.1:8773", "client Host");
	ec2_client_free(c);
	ok(ec2_client_new("gopher://x", "us-east-1") == NULL, "client: bad URL refused");
	ok(ec2_client_new("https://ec2.amazonaws.com", "") == NULL, "client: empty region refused");
	ok(ec2_client_new("https://ec2.amazonaws.com", NULL) == NULL, "client: no region refused");
}

static const char create_snapshots_ok[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<CreateSnapshotsResponse " NS ">\n"
    "    <requestId>59dbff89-35bd-4eac-99ed-be587EXAMPLE</requestId>\n"
    "    <snapshotSet>\n"
    "        <item>\n"
    "            <description>nightly</description>\n"
    "            <encrypted>false</encrypted>\n"
    "            <ownerId>123456789012</ownerId>\n"
    "            <progress></progress>\n"
    "            <snapshotId>snap-0a1b2c3d4e5f60001</snapshotId>\n"
    "            <startTime>2024-05-01T10:00:00.000Z</startTime>\n"
    "            <state>pending</state>\n"
    "            <volumeId>vol-0a1b2c3d4e5f60001</volumeId>\n"
    "            <volumeSize>8</volumeSize>\n"
    "            <tagSet><item><key>k</key><value>v</value></item></tagSet>\n"
    "        </item>\n"
    "        <item>\n"
    "            <volumeSize>100</volumeSize>\n"
    "            <state>pending</state>\n"
    "            <volumeId>vol-0a1b2c3d4e5f60002</volumeId>\n"
    "            <snapshotId>snap-0a1b2c3d4e5f60002</snapshotId>\n"
    "        </item>\n"
    "    </snapshotSet>\n"
    "</CreateSnapshotsResponse>\n";

/* What moto's server (5.x) answers: no <state>, members in its own order. */
static const char create_snapshots_moto[] =
    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n"
    "<CreateSnapshotsResponse xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15\"><snapshotSet>"
    "<item><description/><tagSet><item><key>a</key><value>b</value></item></tagSet>"
    "<encrypted>false</encrypted><volumeId>vol-bcfe009a8386dd7de</volumeId>"
    "<volumeSize>1</volumeSize><startTime>2026-12-02T16:27:18.000Z</startTime>"
    "<progress>100%</progress><ownerId>123456789012</ownerId>"
    "<snapshotId>snap-382c0e2ca5a319375</snapshotId></item></snapshotSet>"
    "<requestId>request-id</requestId></CreateSnapshotsResponse>";

/* Only what the contract needs: ids; no state, namespace or request id. */
static const char create_snapshots_minimal[] =
    "<CreateSnapshotsResponse><snapshotSet>"
    "<item><snapshotId>snap-0a1b2c3d</snapshotId><volumeId>vol-0a1b2c3d</volumeId></item>"
    "<item><volumeId>vol-0a1b2c3d4e5f60002</volumeId>"
    "<snapshotId>snap-0a1b2c3d4e5f60002</snapshotId></item>"
    "</snapshotSet></CreateSnapshotsResponse>";

/* Members EC2 may add one day, odd informational values, another namespace. */
static const char create_snapshots_extra[] =
    "<CreateSnapshotsResponse xmlns=\"http://ec2.amazonaws.com/doc/2099-01-01/\">"
    "<futureThing><item>x</item></futureThing><snapshotSet><item>"
    "<sseType>sse-ebs</sseType><volumeSize>lots</volumeSize>"
    "<startTime>a start time much longer than any that EC2 sends today</startTime>"
    "<progress>one hundred per cent</progress><outpostArn/>"
    "<status>completed</status><volumeId> vol-0a1b2c3d4e5f60003 </volumeId>"
    "<snapshotId>snap-0a1b2c3d4e5f60003</snapshotId><availabilityZone>z</availabilityZone>"
    "</item></snapshotSet></CreateSnapshotsResponse>";

#define EMPTY_SET "<CreateSnapshotsResponse><snapshotSet/></CreateSnapshotsResponse>"
#define NO_SET "<CreateSnapshotsResponse><requestId>r</requestId></CreateSnapshotsResponse>"
#define NO_RESERVATIONS "<DescribeInstancesResponse/>"

static void test_create_snapshots(void)
{
	struct ec2_snapshot_set set;
	struct amis_err err;
	const char *prefixed =
	    "<ec2:CreateSnapshotsResponse xmlns:ec2=\"urn:ec2\"><ec2:snapshotSet>"
	    "<ec2:item><ec2:state>pending</ec2:state>"
	    "<ec2:snapshotId>snap-00000001</ec2:snapshotId>"
	    "<ec2:volumeId>vol-00000001</ec2:volumeId></ec2:item></ec2:snapshotSet>"
	    "<ec2:requestId>r</ec2:requestId></ec2:CreateSnapshotsResponse>";
	/* Strict where it protects us: ids and their shape, the document. */
	const char *bodies[] = {
	    "<CreateSnapshotsResponse><snapshotSet><item><volumeId>vol-00000001</volumeId>"
	    "<state>pending</state></item></snapshotSet></CreateSnapshotsResponse>",
	    "<CreateSnapshotsResponse><snapshotSet><item><snapshotId>snap-00000001</snapshotId>"
	    "<state>pending</state></item></snapshotSet></CreateSnapshotsResponse>",
	    "<CreateSnapshotsResponse><snapshotSet><item><snapshotId>snap-1</snapshotId>"
	    "<volumeId>vol-00000001</volumeId></item></snapshotSet></CreateSnapshotsResponse>",
	    "<CreateSnapshotsResponse><snapshotSet><item><snapshotId>snap-00000001</snapshotId>"
	    "<volumeId>vol-0000000G</volumeId></item></snapshotSet></CreateSnapshotsResponse>",
	    "<CreateSnapshotsResponse><snapshotSet><item><snapshotId>snap-0A1B2C3D</snapshotId>"
	    "<volumeId>vol-00000001</volumeId></item></snapshotSet></CreateSnapshotsResponse>",
	    "<CreateSnapshotsResponse><snapshotSet><item><snapshotId>vol-00000001</snapshotId>"
	    "<volumeId>vol-00000001</volumeId></item></snapshotSet></CreateSnapshotsResponse>",
	    "<CreateSnapshotsResponse><snapshotSet><item><snapshotId>"
	    "snap-0123456789abcdef0123456789abcdef</snapshotId><volumeId>vol-00000001</volumeId>"
	    "</item></snapshotSet></CreateSnapshotsResponse>",
	    "<CreateSnapshotsResponse><snapshotSet><item><snapshotId>snap-00000001</snapshotId>"
	    "<volumeId>vol-00000001</volumeId><state>Pending!</state></item></snapshotSet>"
	    "</CreateSnapshotsResponse>",
	    "<DescribeSnapshotsResponse><snapshotSet/></DescribeSnapshotsResponse>",
	    "<CreateSnapshotsResponse><snapshotSet><item><snapshotId>snap-1</snap",
	};
	const char *why[] = {
	    "item without snapshotId",
	    "item without volumeId",
	    "snapshot id of the wrong shape (snap-1)",
	    "volume id with a non-hex digit",
	    "upper-case snapshot id",
	    "a volume id as snapshot id",
	    "snapshot id too long",
	    "state that is not a word",
	    "another action's response",
	    "truncated",
	};
	size_t i;

	err_clear(&err);
	is_int(ec2_parse_create_snapshots(create_snapshots_ok, strlen(create_snapshots_ok), &set,
	                                  &err),
	       0, "CreateSnapshots: parses (%s)", err.msg);
	is_int(set.n, 2, "CreateSnapshots: two snapshots");
	if (set.n == 2) {
		is_str(set.items[0].snapshot_id, "snap-0a1b2c3d4e5f60001", "item 0 snapshotId");
		is_str(set.items[0].volume_id, "vol-0a1b2c3d4e5f60001", "item 0 volumeId");
		is_str(set.items[0].state, "pending", "item 0 state");
		is_int(set.items[0].volume_size_gib, 8, "item 0 volumeSize");
		is_str(set.items[0].start_time, "2024-05-01T10:00:00.000Z", "item 0 startTime");
		is_str(set.items[0].progress, "", "item 0 empty progress");
		is_str(set.items[1].snapshot_id, "snap-0a1b2c3d4e5f60002", "item 1 (reordered)");
		is_str(set.items[1].volume_id, "vol-0a1b2c3d4e5f60002", "item 1 volumeId");
		is_int(set.items[1].volume_size_gib, 100, "item 1 volumeSize");
		is_str(set.items[1].start_time, "", "item 1 no startTime");
	}
	ec2_snapshot_set_free(&set);
	is_int(set.n, 0, "set freed");

	/* moto's answer, which has no <state>: the snapshot exists, so it is pending. */
	err_clear(&err);
	is_int(ec2_parse_create_snapshots(create_snapshots_moto, strlen(create_snapshots_moto),
	                                  &set, &err),
	       0, "moto's answer without <state>: parses (%s)", err.msg);
	is_int(set.n, 1, "moto's answer: one snapshot");
	if (set.n == 1) {
		is_str(set.items[0].snapshot_id, "snap-382c0e2ca5a319375", "moto: snapshotId last");
		is_str(set.items[0].volume_id, "vol-bcfe009a8386dd7de", "moto: volumeId");
		is_str(set.items[0].state, "pending", "moto: no state is pending");
		is_str(set.items[0].progress, "100%", "moto: progress");
	}
	ec2_snapshot_set_free(&set);

	err_clear(&err);
	is_int(ec2_parse_create_snapshots(create_snapshots_minimal,
	                                  strlen(create_snapshots_minimal), &set, &err),
	       0, "minimal answer (ids only): parses (%s)", err.msg);
	is_int(set.n, 2, "minimal answer: two snapshots");
	if (set.n == 2) {
		is_str(set.items[0].snapshot_id, "snap-0a1b2c3d", "minimal: 8-digit snapshot id");
		is_str(set.items[0].volume_id, "vol-0a1b2c3d", "minimal: 8-digit volume id");
		is_str(set.items[0].state, "pending", "minimal: pending");
		is_int(set.items[0].volume_size_gib, -1, "minimal: no size");
		is_str(set.items[1].snapshot_id, "snap-0a1b2c3d4e5f60002", "minimal: item 1");
		is_str(set.items[1].state, "pending", "minimal: item 1 pending");
	}
	ec2_snapshot_set_free(&set);

	err_clear(&err);
	is_int(ec2_parse_create_snapshots(create_snapshots_extra, strlen(create_snapshots_extra),
	                                  &set, &err),
	       0, "extra members, odd informational values: parses (%s)", err.msg);
	is_int(set.n, 1, "extra members: one snapshot");
	if (set.n == 1) {
		is_str(set.items[0].snapshot_id, "snap-0a1b2c3d4e5f60003", "extra: snapshotId");
		is_str(set.items[0].volume_id, "vol-0a1b2c3d4e5f60003", "extra: id trimmed");
		is_str(set.items[0].state, "completed", "extra: <status> taken as the state");
		is_int(set.items[0].volume_size_gib, -1, "extra: volumeSize 'lots' ignored");
		is_str(set.items[0].start_time, "", "extra: over-long startTime ignored");
		is_str(set.items[0].progress, "", "extra: over-long progress ignored");
	}
	ec2_snapshot_set_free(&set);

	is_int(ec2_parse_create_snapshots(prefixed, strlen(prefixed), &set, &err), 0,
	       "prefixed namespace: parses");
	is_int(set.n, 1, "prefixed namespace: one item");
	is_str(set.n ? set.items[0].snapshot_id : "", "snap-00000001", "prefixed namespace: id");
	ec2_snapshot_set_free(&set);

	/* No set, or an empty one: success with nothing; the caller checks the count. */
	is_int(ec2_parse_create_snapshots(EMPTY_SET, strlen(EMPTY_SET), &set, &err), 0,
	       "empty snapshotSet: parses");
	is_int(set.n, 0, "empty snapshotSet: no snapshot");
	ec2_snapshot_set_free(&set);
	is_int(ec2_parse_create_snapshots(NO_SET, strlen(NO_SET), &set, &err), 0,
	       "no snapshotSet: parses");
	ok(set.n == 0 && set.items == NULL, "no snapshotSet: no snapshot");

	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		err_clear(&err);
		is_int(ec2_parse_create_snapshots(bodies[i], strlen(bodies[i]), &set, &err), -1,
		       "CreateSnapshots %s: fails", why[i]);
		is_str(err.code, "MalformedResponse", "CreateSnapshots %s: code (%s)", why[i],
		       err.msg);
		ok(set.n == 0 && set.items == NULL, "CreateSnapshots %s: empty result", why[i]);
		ec2_snapshot_set_free(&set);
	}
	/* The missing or odd element is named. */
	ec2_parse_create_snapshots(bodies[0], strlen(bodies[0]), &set, &err);
	is_str(err.msg,
	       "response lacks element <snapshotId> in CreateSnapshotsResponse/snapshotSet/item",
	       "missing snapshotId: message");
	ec2_parse_create_snapshots(bodies[2], strlen(bodies[2]), &set, &err);
	is_str(err.msg,
	       "element CreateSnapshotsResponse/snapshotSet/item/snapshotId is \"snap-1\", not a "
	       "snap-... id",
	       "odd snapshot id: message");
}

static void test_describe_snapshots(void)
{
	static const char body[] =
	    "<DescribeSnapshotsResponse " NS ">"
	    "<requestId>r-1</requestId><snapshotSet>"
	    "<item><snapshotId>snap-00000001</snapshotId><volumeId>vol-00000001</volumeId>"
	    "<status>completed</status><startTime>2024-05-01T10:00:00.000Z</startTime>"
	    "<progress>100%</progress><ownerId>1</ownerId><volumeSize>8</volumeSize>"
	    "<description>x</description><encrypted>true</encrypted></item>"
	    "<item><progress>42%</progress><status>pending</status>"
	    "<volumeId>vol-00000002</volumeId><snapshotId>snap-00000002</snapshotId></item>"
	    "</snapshotSet><nextToken/></DescribeSnapshotsResponse>";
	static const char with_state[] =
	    "<DescribeSnapshotsResponse><snapshotSet><item><snapshotId>snap-00000001</snapshotId>"
	    "<volumeId>vol-00000001</volumeId><state>completed</state></item></snapshotSet>"
	    "</DescribeSnapshotsResponse>";
	static const char minimal[] =
	    "<DescribeSnapshotsResponse><snapshotSet><item><volumeId>vol-00000001</volumeId>"
	    "<snapshotId>snap-00000001</snapshotId></item></snapshotSet>"
	    "</DescribeSnapshotsResponse>";
	static const char none[] = "<DescribeSnapshotsResponse><requestId>r</requestId>"
	                           "</DescribeSnapshotsResponse>";
	static const char no_volume[] =
	    "<DescribeSnapshotsResponse><snapshotSet><item><snapshotId>snap-00000001</snapshotId>"
	    "<status>completed</status></item></snapshotSet></DescribeSnapshotsResponse>";
	struct ec2_snapshot_set set;
	struct amis_err err;

	is_int(ec2_parse_describe_snapshots(body, strlen(body), &set, &err), 0,
	       "DescribeSnapshots: parses");
	is_int(set.n, 2, "DescribeSnapshots: two items");
	if (set.n == 2) {
		is_str(set.items[0].state, "completed", "<status> mapped to state");
		is_str(set.items[0].progress, "100%", "progress");
		is_str(set.items[1].state, "pending", "item 1 state");
		is_str(set.items[1].progress, "42%", "item 1 progress");
		is_int(set.items[1].volume_size_gib, -1, "item 1: no volumeSize -> -1");
	}
	ec2_snapshot_set_free(&set);
	is_int(ec2_parse_describe_snapshots(with_state, strlen(with_state), &set, &err), 0,
	       "DescribeSnapshots: <state> is taken as well");
	is_str(set.n ? set.items[0].state : "", "completed", "DescribeSnapshots: <state> value");
	ec2_snapshot_set_free(&set);
	is_int(ec2_parse_describe_snapshots(minimal, strlen(minimal), &set, &err), 0,
	       "DescribeSnapshots minimal: parses");
	is_str(set.n ? set.items[0].state : "?", "", "DescribeSnapshots minimal: state unknown");
	ec2_snapshot_set_free(&set);
	is_int(ec2_parse_describe_snapshots(none, strlen(none), &set, &err), 0,
	       "DescribeSnapshots without snapshotSet: parses");
	is_int(set.n, 0, "DescribeSnapshots without snapshotSet: none");
	is_int(ec2_parse_describe_snapshots(no_volume, strlen(no_volume), &set, &err), -1,
	       "DescribeSnapshots item without volumeId: fails");
	is_str(err.code, "MalformedResponse", "DescribeSnapshots without volumeId: code");
}

static const char describe_instances_ok[] =
    "<DescribeInstancesResponse " NS ">"
    "<requestId>8f7724cf-496f-496e-8fe3-example</requestId>"
    "<reservationSet>"
    " <item><reservationId>r-1</reservationId><ownerId>1</ownerId><groupSet/>"
    "  <instancesSet><item><instanceId>i-0000000000000000a</instanceId><imageId>ami-0</imageId>"
    "   <architecture>x86_64</architecture><rootDeviceType>ebs</rootDeviceType>"
    "   <virtualizationType>hvm</virtualizationType></item></instancesSet></item>"
    " <item><reservationId>r-2</reservationId>"
    "  <instancesSet><item>"
    "   <blockDeviceMapping>"
    "    <item><deviceName>/dev/xvda</deviceName><ebs><volumeId>vol-0000000000000000a"
    "     </volumeId><status>attached</status><attachTime>2024-01-01T00:00:00.000Z"
    "     </attachTime><deleteOnTermination>true</deleteOnTermination></ebs></item>"
    "    <item><ebs><deleteOnTermination>false</deleteOnTermination>"
    "     <volumeId>vol-0000000000000000b</volumeId></ebs><deviceName>/dev/sdf</deviceName>"
    "    </item><item><deviceName>/dev/sdg</deviceName><noDevice/></item>"
    "   </blockDeviceMapping>"
    "   <instanceId>i-0123456789abcdef0</instanceId><imageId>ami-0abcdef1234567890</imageId>"
    "   <instanceState><code>16</code><name>running</name></instanceState>"
    "   <instanceType>m5.large</instanceType><architecture>arm64</architecture>"
    "   <rootDeviceType>ebs</rootDeviceType><rootDeviceName>/dev/xvda</rootDeviceName>"
    "   <virtualizationType>hvm</virtualizationType><enaSupport>true</enaSupport>"
    "   <bootMode>uefi</bootMode><hypervisor>xen</hypervisor>"
    "   <tagSet><item><key>Name</key><value>db</value></item></tagSet>"
    "  </item></instancesSet></item>"
    "</reservationSet></DescribeInstancesResponse>";

/* Only what the helper needs: the instance id and its volumes' ids. */
static const char describe_instances_minimal[] =
    "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>"
    "<blockDeviceMapping><item><ebs><volumeId>vol-0000000a</volumeId></ebs></item>"
    "<item><ebs><volumeId>vol-0000000b</volumeId></ebs><deviceName>/dev/sdf</deviceName>"
    "</item></blockDeviceMapping><instanceId>i-0000000a</instanceId>"
    "</item></instancesSet></item></reservationSet></DescribeInstancesResponse>";

static void test_describe_instance(void)
{
	struct ec2_instance_info *in = calloc(1, sizeof(*in));
	struct amis_err err;
	struct strbuf big;
	int i;

	err_clear(&err);
	is_int(ec2_parse_describe_instance(describe_instances_ok, strlen(describe_instances_ok),
	                                   "i-0123456789abcdef0", in, &err),
	       0, "DescribeInstances: parses (%s)", err.msg);
	is_str(in->instance_id, "i-0123456789abcdef0", "the requested instance, not the first");
	is_str(in->architecture, "arm64", "architecture");
	is_str(in->root_device_name, "/dev/xvda", "rootDeviceName");
	is_str(in->root_device_type, "ebs", "rootDeviceType");
	is_str(in->virtualization_type, "hvm", "virtualizationType");
	ok(in->ena_support, "enaSupport");
	is_str(in->boot_mode, "uefi", "bootMode");
	is_str(in->image_id, "ami-0abcdef1234567890", "imageId");
	is_int(in->nvolumes, 2, "two EBS volumes (the no-device mapping is skipped)");
	is_str(in->volumes[0].device_name, "/dev/xvda", "volume 0 device");
	is_str(in->volumes[0].volume_id, "vol-0000000000000000a", "volume 0 id (trimmed)");
	ok(in->volumes[0].delete_on_termination, "volume 0 deleteOnTermination");
	is_str(in->volumes[1].device_name, "/dev/sdf", "volume 1 device (reordered)");
	is_str(in->volumes[1].volume_id, "vol-0000000000000000b", "volume 1 id");
	ok(!in->volumes[1].delete_on_termination, "volume 1 deleteOnTermination false");

	is_int(ec2_parse_describe_instance(describe_instances_ok, strlen(describe_instances_ok),
	                                   "i-0000000000000000a", in, &err),
	       0, "other instance: parses");
	ok(!in->ena_support && in->boot_mode[0] == '\0' && in->root_device_name[0] == '\0' &&
	       in->nvolumes == 0,
	   "other instance: absent optional members are empty");

	is_int(ec2_parse_describe_instance(describe_instances_ok, strlen(describe_instances_ok),
	                                   "i-0000000000000000c", in, &err),
	       -1, "unknown instance: fails");
	is_str(err.code, "InvalidInstanceID.NotFound", "unknown instance: code");

	err_clear(&err);
	is_int(ec2_parse_describe_instance(describe_instances_minimal,
	                                   strlen(describe_instances_minimal), "i-0000000a", in,
	                                   &err),
	       0, "minimal DescribeInstances (ids only): parses (%s)", err.msg);
	is_int(in->nvolumes, 2, "minimal: two volumes");
	is_str(in->volumes[0].volume_id, "vol-0000000a", "minimal: volume 0");
	is_str(in->volumes[0].device_name, "", "minimal: volume 0 has no device name");
	is_str(in->volumes[1].device_name, "/dev/sdf", "minimal: volume 1 device");
	ok(in->architecture[0] == '\0' && in->root_device_name[0] == '\0' &&
	       in->root_device_type[0] == '\0' && in->virtualization_type[0] == '\0',
	   "minimal: no architecture, root device or virtualization type needed");

	is_int(ec2_parse_describe_instance(NO_RESERVATIONS, strlen(NO_RESERVATIONS), "i-0000000a",
	                                   in, &err),
	       -1, "no reservationSet: the instance is not there");
	is_str(err.code, "InvalidInstanceID.NotFound", "no reservationSet: code");

	sb_init(&big);
	sb_appends(&big, "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>"
	                 "<instanceId>i-00000001</instanceId><blockDeviceMapping>");
	for (i = 0; i < 65; i++)
		sb_appendf(&big,
		           "<item><deviceName>/dev/sd%d</deviceName><ebs><volumeId>vol-%08x"
		           "</volumeId></ebs></item>",
		           i, i);
	sb_appends(&big, "</blockDeviceMapping></item></instancesSet></item></reservationSet>"
	                 "</DescribeInstancesResponse>");
	is_int(ec2_parse_describe_instance(big.data, big.len, "i-00000001", in, &err), -1,
	       "65 volumes: fails");
	is_str(err.code, "TooManyVolumes", "65 volumes: code");
	sb_free(&big);

	{
		static const char bad_bool[] =
		    "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>"
		    "<instanceId>i-00000001</instanceId><enaSupport>maybe</enaSupport>"
		    "<architecture>a very long architecture name</architecture>"
		    "<blockDeviceMapping><item><ebs><volumeId>vol-00000001</volumeId>"
		    "<deleteOnTermination>perhaps</deleteOnTermination></ebs></item>"
		    "</blockDeviceMapping></item></instancesSet>"
		    "</item></reservationSet></DescribeInstancesResponse>";
		static const char no_volume_id[] =
		    "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>"
		    "<instanceId>i-00000001</instanceId><blockDeviceMapping><item>"
		    "<deviceName>/dev/sdf</deviceName><ebs><status>attached</status></ebs></item>"
		    "</blockDeviceMapping></item></instancesSet>"
		    "</item></reservationSet></DescribeInstancesResponse>";
		static const char bad_volume_id[] =
		    "<DescribeInstancesResponse><reservationSet><item><instancesSet><item>"
		    "<instanceId>i-00000001</instanceId><blockDeviceMapping><item>"
		    "<ebs><volumeId>vol-1;rm</volumeId></ebs></item>"
		    "</blockDeviceMapping></item></instancesSet>"
		    "</item></reservationSet></DescribeInstancesResponse>";
		static const char no_id_first[] =
		    "<DescribeInstancesResponse><reservationSet><item><instancesSet>"
		    "<item><architecture>x86_64</architecture></item>"
		    "<item><instanceId>i-00000001</instanceId></item></instancesSet>"
		    "</item></reservationSet></DescribeInstancesResponse>";

		err_clear(&err);
		is_int(
		    ec2_parse_describe_instance(bad_bool, strlen(bad_bool), "i-00000001", in, &err),
		    0, "odd informational members (enaSupport=maybe...): parses (%s)", err.msg);
		ok(!in->ena_support && !in->volumes[0].delete_on_termination &&
		       in->architecture[0] == '\0',
		   "odd informational members: left at their defaults");
		is_int(ec2_parse_describe_instance(no_volume_id, strlen(no_volume_id), "i-00000001",
		                                   in, &err),
		       -1, "EBS mapping without volumeId: fails");
		ok(strstr(err.msg, "<volumeId>") != NULL, "no volumeId: named (%s)", err.msg);
		is_int(ec2_parse_describe_instance(bad_volume_id, strlen(bad_volume_id),
		                                   "i-00000001", in, &err),
		       -1, "volume id of the wrong shape: fails");
		is_str(err.code, "MalformedResponse", "volume id of the wrong shape: code");
		err_clear(&err);
		is_int(ec2_parse_describe_instance(no_id_first, strlen(no_id_first), "i-00000001",
		                                   in, &err),
		       0, "an instance item without id is passed over (%s)", err.msg);
		is_str(in->instance_id, "i-00000001", "the item with our id is found");
	}
	free(in);
}

static void test_create_tags(void)
{
	static const char ok_body[] = "<CreateTagsResponse " NS "><requestId>r</requestId>"
	                              "<return>true</return></CreateTagsResponse>";
	static const char false_body[] = "<CreateTagsResponse><return>false</return>"
	                                 "</CreateTagsResponse>";
	struct amis_err err;
	xmlDocPtr doc;

	is_int(ec2_parse_response("CreateTags", 200, ok_body, strlen(ok_body), NULL, false, &doc,
	                          &err),
	       0, "CreateTags: parses");
	is_int(ec2_parse_create_tags(doc, &err), 0, "CreateTags: return true");
	xml_free(doc);
	is_int(ec2_parse_response("CreateTags", 200, false_body, strlen(false_body), NULL, false,
	                          &doc, &err),
	       0, "CreateTags false: parses");
	is_int(ec2_parse_create_tags(doc, &err), -1, "CreateTags: return false fails");
	is_str(err.code, "CreateTagsFailed", "CreateTags false: code");
	xml_free(doc);
}

static void check_error(const char *name, long status, const char *body, const char *hdr_id,
                        bool dry_run, const char *want_code, const char *want_msg, bool retryable)
{
	struct amis_err err;
	xmlDocPtr doc = (xmlDocPtr)1;

	err_clear(&err);
	is_int(ec2_parse_response("CreateSnapshots", status, body, strlen(body), hdr_id, dry_run,
	                          &doc, &err),
	       -1, "%s: fails", name);
	ok(doc == NULL, "%s: no document", name);
	is_str(err.code, want_code, "%s: code", name);
	if (want_msg[0] == '~')
		ok(strstr(err.msg, want_msg + 1) != NULL, "%s: message has '%s' (%s)", name,
		   want_msg + 1, err.msg);
	else
		is_str(err.msg, want_msg, "%s: message", name);
	is_int(ec2_error_is_retryable(&err), retryable, "%s: %sretryable", name,
	       retryable ? "" : "not ");
}

static void test_errors(void)
{
	static const char throttled[] =
	    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>"
	    "<Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>"
	    "</Error></Errors><RequestID>0a1b2c3d-aaaa-bbbb-cccc-0123456789ab</RequestID>"
	    "</Response>";
	static const char reordered_ns[] =
	    "<Response " NS "><RequestID>req-9</RequestID><Errors><Error>"
	    "<Message>The instance ID 'i-1' does not exist</Message>"
	    "<Code>InvalidInstanceID.NotFound</Code></Error></Errors></Response>";
	static const char no_id[] = "<Response><Errors><Error><Code>UnauthorizedOperation</Code>"
	                            "<Message>You are not authorized.\nEncoded: x\ty</Message>"
	                            "</Error></Errors></Response>";
	static const char dry[] = "<Response><Errors><Error><Code>DryRunOperation</Code><Message>"
	                          "Request would have succeeded, but DryRun flag is set.</Message>"
	                          "</Error></Errors><RequestID>d-1</RequestID></Response>";
	static const char sts_style[] = "<ErrorResponse><Error><Type>Sender</Type>"
	                                "<Code>ExpiredToken</Code><Message>The security token "
	                                "included in the request is expired</Message></Error>"
	                                "<RequestId>s-1</RequestId></ErrorResponse>";
	static const char no_code[] = "<Response><Errors><Error><Message>m</Message></Error>"
	                              "</Errors></Response>";
	static const char no_error[] = "<Response><Foo/></Response>";
	struct amis_err err;
	struct strbuf longmsg;
	xmlDocPtr doc = (xmlDocPtr)1;
	int i;

	check_error("throttled (503)", 503, throttled, NULL, false, "RequestLimitExceeded",
	            "Request limit exceeded. (request id 0a1b2c3d-aaaa-bbbb-cccc-0123456789ab)",
	            true);
	check_error("throttled, status 400", 400, throttled, NULL, false, "RequestLimitExceeded",
	            "~Request limit exceeded.", true);
	check_error("throttled, status 200", 200, throttled, NULL, false, "RequestLimitExceeded",
	            "~Request limit exceeded.", true);
	check_error("namespaced, reordered", 400, reordered_ns, "hdr-1", false,
	            "InvalidInstanceID.NotFound",
	            "The instance ID 'i-1' does not exist (request id req-9)", false);
	check_error("no RequestID, header id used", 403, no_id, "hdr-2", false,
	            "UnauthorizedOperation",
	            "You are not authorized. Encoded: x y (request id hdr-2)", false);
	check_error("no request id at all", 403, no_id, NULL, false, "UnauthorizedOperation",
	            "~(no request id)", false);
	check_error("DryRunOperation without DryRun", 412, dry, NULL, false, "DryRunOperation",
	            "~would have succeeded", false);
	check_error("STS-style ErrorResponse", 400, sts_style, NULL, false, "ExpiredToken",
	            "The security token included in the request is expired (request id s-1)",
	            false);
	check_error("error without Code", 400, no_code, NULL, false, "MalformedResponse", "~<Code>",
	            false);
	check_error("Response without Errors", 400, no_error, NULL, false, "MalformedResponse",
	            "~without <Error>", false);
	check_error("503 plain text", 503, "Service Unavailable", "lb-1", false,
	            "ServiceUnavailable",
	            "HTTP status 503 with a body that is not XML: \"Service Unavailable\" "
	            "(request id lb-1)",
	            true);
	check_error("500 empty", 500, "", NULL, false, "InternalError", "~HTTP status 500", true);
	check_error("502 html", 502, "<html><body><h1>502 Bad Gateway</h1></body></html>", NULL,
	            false, "HttpError502", "~502 Bad Gateway", true);
	check_error("504 truncated XML", 504, "<Response><Errors><Err", NULL, false, "HttpError504",
	            "~HTTP status 504", true);
	check_error("403 html", 403, "<html>Forbidden", NULL, false, "HttpError403", "~Forbidden",
	            false);
	check_error("500 XML that is not an error", 500, "<Oops><why>disk</why></Oops>", NULL,
	            false, "InternalError", "~an XML body that is not an EC2 error", true);
	check_error("200 garbage", 200, "OK", NULL, false, "MalformedResponse", "~\"OK\"", false);
	check_error("200 truncated", 200, create_snapshots_ok + 40, NULL, false,
	            "MalformedResponse", "~not valid XML", false);
	check_error("200 wrong root", 200, "<DescribeSnapshotsResponse/>", NULL, false,
	            "MalformedResponse",
	            "expected <CreateSnapshotsResponse>, got <DescribeSnapshotsResponse>", false);

	/* DryRunOperation is success for a DryRun call. */
	err_clear(&err);
	is_int(ec2_parse_response("CreateSnapshots", 412, dry, strlen(dry), NULL, true, &doc, &err),
	       0, "DryRunOperation with DryRun: success");
	ok(doc == NULL, "DryRunOperation with DryRun: no document");
	check_error("UnauthorizedOperation with DryRun", 403, no_id, NULL, true,
	            "UnauthorizedOperation", "~not authorized", false);

	/* A long message is cut, the request id kept. */
	sb_init(&longmsg);
	sb_appends(&longmsg,
	           "<Response><Errors><Error><Code>InvalidParameterValue</Code><Message>");
	for (i = 0; i < 400; i++)
		sb_appends(&longmsg, "\xc3\xa9");
	sb_appends(&longmsg,
	           "</Message></Error></Errors><RequestID>keep-me</RequestID></Response>");
	is_int(ec2_parse_response("CreateSnapshots", 400, longmsg.data, longmsg.len, NULL, false,
	                          &doc, &err),
	       -1, "long message: fails");
	ok(strlen(err.msg) < sizeof(err.msg) &&
	       strcmp(err.msg + strlen(err.msg) - strlen(" (request id keep-me)"),
	              " (request id keep-me)") == 0,
	   "long message: request id kept");
	ok(((unsigned char)err.msg[strlen(err.msg) - strlen(" (request id keep-me)") - 1] & 0xc0) !=
	       0xc0,
	   "long message: no UTF-8 sequence cut in half");
	sb_free(&longmsg);

	/* Codes are reduced to identifier characters. */
	check_error(
	    "odd code", 400,
	    "<Response><Errors><Error><Code>Bad Code\n%s</Code></Error></Errors></Response>", NULL,
	    false, "BadCodes", "~(no message)", false);
}

static void test_retryable(void)
{
	static const char *const yes[] = {"RequestLimitExceeded",
	                                  "SnapshotCreationPerVolumeRateExceeded",
	                                  "ConcurrentSnapshotLimitExceeded",
	                                  "InternalError",
	                                  "ServiceUnavailable",
	                                  "Unavailable",
	                                  "Timeout",
	                                  "ConnectionError",
	                                  "HttpError502"};
	static const char *const no[] = {"AuthFailure",
	                                 "UnauthorizedOperation",
	                                 "InvalidInstanceID.NotFound",
	                                 "MalformedResponse",
	                                 "HttpError403",
	                                 "DryRunOperation",
	                                 "MissingCredentials",
	                                 ""};
	struct amis_err err;
	size_t i;

	for (i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
		err_set_code(&err, yes[i], "x");
		ok(ec2_error_is_retryable(&err), "%s is retryable", yes[i]);
	}
	for (i = 0; i < sizeof(no) / sizeof(no[0]); i++) {
		err_set_code(&err, no[i], "x");
		ok(!ec2_error_is_retryable(&err), "'%s' is not retryable", no[i]);
	}
	ok(!ec2_error_is_retryable(NULL), "NULL is not retryable");
}

/* The AMI methods' answers: DescribeImages, DescribeVolumes, RegisterImage, CreateImage. */
static void test_images(void)
{
	static const char images_ok[] =
	    "<DescribeImagesResponse " NS "><requestId>r</requestId><imagesSet><item>"
	    "<imageId>ami-0123456789abcdef0</imageId><imageState>available</imageState>"
	    "<name>base</name><architecture>x86_64</architecture>"
	    "<productCodes><item><productCode>abc123</productCode><type>marketplace</type></item>"
	    "</productCodes><unknownMember>x</unknownMember>"
	    "<rootDeviceName>/dev/xvda</rootDeviceName><virtualizationType>hvm</virtualizationType>"
	    "<enaSupport>true</enaSupport><sriovNetSupport>simple</sriovNetSupport>"
	    "<bootMode>uefi</bootMode><tpmSupport>v2.0</tpmSupport><imdsSupport>v2.0</imdsSupport>"
	    "<platformDetails>Red Hat Enterprise Linux</platformDetails>"
	    "<usageOperation>RunInstances:0010</usageOperation>"
	    "<blockDeviceMapping><item><deviceName>/dev/xvda</deviceName><ebs>"
	    "<snapshotId>snap-0000000a</snapshotId><volumeSize>8</volumeSize>"
	    "<deleteOnTermination>true</deleteOnTermination><volumeType>gp3</volumeType>"
	    "<iops>3000</iops><throughput>125</throughput></ebs></item>"
	    "<item><deviceName>/dev/sdb</deviceName><virtualName>ephemeral0</virtualName></item>"
	    "<item><deviceName>/dev/sdf</deviceName><ebs><volumeSize>10</volumeSize></ebs></item>"
	    "</blockDeviceMapping></item></imagesSet></DescribeImagesResponse>";
	static const char images_minimal[] =
	    "<DescribeImagesResponse><imagesSet><item><imageId>ami-0000000a</imageId></item>"
	    "</imagesSet></DescribeImagesResponse>";
	static const char images_none[] =
	    "<DescribeImagesResponse " NS "><imagesSet/></DescribeImagesResponse>";
	static const char images_bad_id[] =
	    "<DescribeImagesResponse><imagesSet><item><imageId>snap-0000000a</imageId></item>"
	    "</imagesSet></DescribeImagesResponse>";
	static const char images_bad_snap[] =
	    "<DescribeImagesResponse><imagesSet><item><imageId>ami-0000000a</imageId>"
	    "<blockDeviceMapping><item><deviceName>/dev/xvda</deviceName><ebs><snapshotId>"
	    "vol-0000000a</snapshotId></ebs></item></blockDeviceMapping></item></imagesSet>"
	    "</DescribeImagesResponse>";
	static const char volumes_ok[] =
	    "<DescribeVolumesResponse " NS "><volumeSet><item><volumeId>vol-0000000a</volumeId>"
	    "<size>8</size><volumeType>io2</volumeType><iops>4000</iops></item>"
	    "<item><volumeId>vol-0000000b</volumeId></item></volumeSet></DescribeVolumesResponse>";
	static const char volumes_bad[] =
	    "<DescribeVolumesResponse><volumeSet><item><size>8</size></item></volumeSet>"
	    "</DescribeVolumesResponse>";
	static const char register_ok[] =
	    "<RegisterImageResponse " NS "><requestId>r</requestId>"
	    "<imageId>ami-0123456789abcdef0</imageId></RegisterImageResponse>";
	static const char create_no_id[] =
	    "<CreateImageResponse " NS "><requestId>r</requestId></CreateImageResponse>";
	struct ec2_image_info *img = calloc(1, sizeof(*img));
	struct ec2_volume_set *vs = calloc(1, sizeof(*vs));
	struct ec2_register_image_req rr;
	struct ec2_create_image_req cr;
	struct ec2_tag tag = {"ami-snapshot:request-id", "r1"};
	struct ec2_image_query q = {0};
	struct ec2_params p;
	struct amis_err err;
	char id[32];

	err_clear(&err);
	is_int(ec2_parse_describe_images(images_ok, strlen(images_ok), img, &err), 0,
	       "DescribeImages: parses (%s)", err.msg);
	is_str(img->image_id, "ami-0123456789abcdef0", "DescribeImages: imageId");
	is_str(img->state, "available", "DescribeImages: imageState");
	is_str(img->architecture, "x86_64", "DescribeImages: architecture");
	ok(img->ena_support, "DescribeImages: enaSupport");
	is_str(img->sriov_net_support, "simple", "DescribeImages: sriovNetSupport");
	is_str(img->boot_mode, "uefi", "DescribeImages: bootMode");
	is_str(img->tpm_support, "v2.0", "DescribeImages: tpmSupport");
	is_str(img->imds_support, "v2.0", "DescribeImages: imdsSupport");
	is_str(img->usage_operation, "RunInstances:0010", "DescribeImages: usageOperation");
	is_int(img->nproduct_codes, 1, "DescribeImages: one product code");
	is_str(img->product_codes[0].type, "marketplace", "DescribeImages: its type");
	is_int(img->nmappings, 2, "DescribeImages: two EBS mappings (the ephemeral one skipped)");
	is_str(img->mappings[0].snapshot_id, "snap-0000000a", "mapping 0: snapshot");
	ok(img->mappings[0].size_gib == 8 && img->mappings[0].iops == 3000 &&
	       img->mappings[0].throughput == 125 && img->mappings[0].delete_on_termination,
	   "mapping 0: size, IOPS, throughput, DeleteOnTermination");
	is_str(img->mappings[1].snapshot_id, "", "mapping 1: no snapshot (yet) is empty");
	is_int(ec2_parse_describe_images(images_minimal, strlen(images_minimal), img, &err), 0,
	       "DescribeImages minimal (the id only): parses");
	ok(img->nmappings == 0 && !img->architecture[0] && !img->state[0],
	   "DescribeImages minimal: the rest is empty");
	is_int(ec2_parse_describe_images(images_none, strlen(images_none), img, &err), 0,
	       "DescribeImages, no image: success");
	is_str(img->image_id, "", "DescribeImages, no image: empty id");
	is_int(ec2_parse_describe_images(images_bad_id, strlen(images_bad_id), img, &err), -1,
	       "DescribeImages: an odd image id is refused");
	is_str(err.code, "MalformedResponse", "DescribeImages: odd id: code");
	is_int(ec2_parse_describe_images(images_bad_snap, strlen(images_bad_snap), img, &err), -1,
	       "DescribeImages: an odd snapshot id is refused");

	err_clear(&err);
	is_int(ec2_parse_describe_volumes(volumes_ok, strlen(volumes_ok), vs, &err), 0,
	       "DescribeVolumes: parses (%s)", err.msg);
	ok(vs->n == 2 && vs->items[0].size_gib == 8 && vs->items[0].iops == 4000 &&
	       !strcmp(vs->items[0].volume_type, "io2"),
	   "DescribeVolumes: size, type, IOPS");
	ok(vs->items[1].size_gib == 0 && !vs->items[1].volume_type[0],
	   "DescribeVolumes: a volume with its id only");
	is_int(ec2_parse_describe_volumes(volumes_bad, strlen(volumes_bad), vs, &err), -1,
	       "DescribeVolumes: an item without an id is refused");

	is_int(ec2_parse_new_image("RegisterImage", register_ok, strlen(register_ok), id,
	                           sizeof(id), &err),
	       0, "RegisterImage: parses");
	is_str(id, "ami-0123456789abcdef0", "RegisterImage: imageId");
	is_int(ec2_parse_new_image("CreateImage", create_no_id, strlen(create_no_id), id,
	                           sizeof(id), &err),
	       -1, "CreateImage without an imageId is refused");
	is_int(ec2_parse_new_image("CreateImage", register_ok, strlen(register_ok), id, sizeof(id),
	                           &err),
	       -1, "another action's answer is refused");

	/* RegisterImage's parameters: everything that makes the image boot like the instance. */
	memset(img, 0, sizeof(*img));
	snprintf(img->name, sizeof(img->name), "nightly");
	snprintf(img->architecture, sizeof(img->architecture), "x86_64");
	snprintf(img->root_device_name, sizeof(img->root_device_name), "/dev/xvda");
	snprintf(img->boot_mode, sizeof(img->boot_mode), "uefi");
	img->ena_support = true;
	img->nmappings = 2;
	snprintf(img->mappings[0].device_name, 64, "/dev/xvda");
	snprintf(img->mappings[0].snapshot_id, 32, "snap-0000000a");
	snprintf(img->mappings[0].volume_type, 16, "gp3");
	img->mappings[0].size_gib = 8;
	img->mappings[0].iops = 3000;
	img->mappings[0].throughput = 125;
	img->mappings[0].delete_on_termination = true;
	snprintf(img->mappings[1].device_name, 64, "/dev/sdf");
	snprintf(img->mappings[1].snapshot_id, 32, "snap-0000000b");
	snprintf(img->mappings[1].volume_type, 16, "gp2");
	img->mappings[1].size_gib = 10;
	img->mappings[1].iops = 100;
	rr = (struct ec2_register_image_req){img, "d", &tag, 1, false};
	ec2_params_init(&p);
	ec2_register_image_params(&p, &rr);
	is_str(ec2_params_get(&p, "Architecture"), "x86_64", "RegisterImage: Architecture sent");
	is_str(ec2_params_get(&p, "VirtualizationType"), "hvm", "RegisterImage: hvm by default");
	is_str(ec2_params_get(&p, "RootDeviceName"), "/dev/xvda", "RegisterImage: RootDeviceName");
	is_str(ec2_params_get(&p, "EnaSupport"), "true", "RegisterImage: EnaSupport");
	is_str(ec2_params_get(&p, "BootMode"), "uefi", "RegisterImage: BootMode");
	ok(ec2_params_get(&p, "TpmSupport") == NULL, "RegisterImage: no TpmSupport when unknown");
	is_str(ec2_params_get(&p, "BlockDeviceMapping.1.Ebs.SnapshotId"), "snap-0000000a",
	       "RegisterImage: mapping 1 snapshot");
	is_str(ec2_params_get(&p, "BlockDeviceMapping.1.Ebs.Throughput"), "125",
	       "RegisterImage: gp3 throughput");
	is_str(ec2_params_get(&p, "BlockDeviceMapping.1.Ebs.DeleteOnTermination"), "true",
	       "RegisterImage: DeleteOnTermination");
	is_str(ec2_params_get(&p, "BlockDeviceMapping.2.DeviceName"), "/dev/sdf",
	       "RegisterImage: mapping 2 device");
	ok(ec2_params_get(&p, "BlockDeviceMapping.2.Ebs.Iops") == NULL,
	   "RegisterImage: no IOPS for gp2 (EC2 refuses it)");
	is_str(ec2_params_get(&p, "TagSpecification.1.ResourceType"), "image",
	       "RegisterImage: tags the image at creation");
	ec2_params_free(&p);

	cr = (struct ec2_create_image_req){"i-0000000a", "nightly", NULL, &tag, 1, false};
	ec2_params_init(&p);
	ec2_create_image_params(&p, &cr);
	is_str(ec2_params_get(&p, "NoReboot"), "true", "CreateImage: NoReboot=true, always");
	is_str(ec2_params_get(&p, "TagSpecification.2.ResourceType"), "snapshot",
	       "CreateImage: tags its snapshots at creation");
	is_str(ec2_params_get(&p, "TagSpecification.2.Tag.1.Value"), "r1",
	       "CreateImage: the request-id tag on its snapshots");
	ec2_params_free(&p);

	q.tag_key = "ami-snapshot:request-id";
	q.tag_value = "r1";
	ec2_params_init(&p);
	is_int(ec2_describe_image_params(&p, &q, &err), 0, "DescribeImages by tag: parameters");
	is_str(ec2_params_get(&p, "Owner.1"), "self", "DescribeImages by tag: our own only");
	is_str(ec2_params_get(&p, "Filter.1.Name"), "tag:ami-snapshot:request-id",
	       "DescribeImages by tag: the filter");
	ec2_params_free(&p);
	memset(&q, 0, sizeof(q));
	ec2_params_init(&p);
	is_int(ec2_describe_image_params(&p, &q, &err), -1, "DescribeImages needs a criterion");
	ec2_params_free(&p);
	free(img);
	free(vs);
}

int main(void)
{
	test_form_encoding();
	test_endpoints();
	test_images();
	test_create_snapshots();
	test_describe_snapshots();
	test_describe_instance();
	test_create_tags();
	test_errors();
	test_retryable();
	return done_testing();
}
