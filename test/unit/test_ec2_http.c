/*
 * test_ec2_http.c - the EC2 client over a real socket, against
 * ec2_fake_server.py on 127.0.0.1 (which checks every signature with
 * botocore): method, path and headers sent, connection reuse, EC2 and
 * non-EC2 errors, timeouts, refused and dropped connections, oversized
 * bodies, secrets kept out of error messages, and the typed operations.
 *
 * The server is a child process reading our stdin pipe: it exits when we do,
 * however we die.  alarm() bounds the whole test.
 */
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "ec2.h"
#include "fake_ec2.h"
#include "tap.h"
#include "xml.h"

static void creds_init(struct aws_credentials *c, const char *token)
{
	memset(c, 0, sizeof(*c));
	strcpy(c->access_key_id, "AKIDEXAMPLE");
	strcpy(c->secret_access_key, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
	if (token)
		strcpy(c->session_token, token);
	strcpy(c->source, "test");
}

/* Calls Echo and returns the text of one member of the answer. */
static int echo(struct ec2_client *c, const struct aws_credentials *creds, const char *value,
                const char *member, char *out, size_t outsz, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	ec2_params_init(&p);
	ec2_params_add(&p, "Value", value);
	rc = ec2_call(c, creds, "Echo", &p, 5000, 0, &doc, err);
	if (rc == 0)
		rc = xml_child_text(xml_root(doc), member, out, outsz, err);
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

/* Calls an action with no parameters and returns its result. */
static int call(struct ec2_client *c, const struct aws_credentials *creds, const char *action,
                long timeout_ms, struct amis_err *err)
{
	struct ec2_params p;
	xmlDocPtr doc = NULL;
	int rc;

	ec2_params_init(&p);
	err_clear(err);
	rc = ec2_call(c, creds, action, &p, timeout_ms, 0, &doc, err);
	xml_free(doc);
	ec2_params_free(&p);
	return rc;
}

static void test_request_shape(struct ec2_client *c)
{
	static const char odd[] = "a b*c~d/e+f=g&h%i \xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac \"<x>'";
	struct aws_credentials creds;
	struct amis_err err;
	char buf[256], host[64], port1[16], port2[16];

	creds_init(&creds, NULL);
	snprintf(host, sizeof(host), "%s", endpoint + strlen("http://"));
	err_clear(&err);
	is_int(echo(c, &creds, odd, "method", buf, sizeof(buf), &err), 0,
	       "Echo: signature accepted by botocore (%s %s)", err.code, err.msg);
	is_str(buf, "POST", "method POST");
	echo(c, &creds, odd, "path", buf, sizeof(buf), &err);
	is_str(buf, "/", "path /");
	echo(c, &creds, odd, "host", buf, sizeof(buf), &err);
	is_str(buf, host, "Host header with the port");
	echo(c, &creds, odd, "contentType", buf, sizeof(buf), &err);
	is_str(buf, EC2_CONTENT_TYPE, "Content-Type");
	echo(c, &creds, odd, "expect", buf, sizeof(buf), &err);
	is_str(buf, "(none)", "no Expect: 100-continue");
	echo(c, &creds, odd, "token", buf, sizeof(buf), &err);
	is_str(buf, "(none)", "no X-Amz-Security-Token without a session");
	echo(c, &creds, odd, "value", buf, sizeof(buf), &err);
	is_str(buf, odd, "odd characters survive the form encoding");

	creds_init(&creds, TOKEN);
	err_clear(&err);
	is_int(echo(c, &creds, "x", "token", buf, sizeof(buf), &err), 0,
	       "with a session token: signature accepted (%s)", err.msg);
	is_str(buf, TOKEN, "X-Amz-Security-Token sent");

	/* One connection for consecutive calls (the freeze window needs it). */
	echo(c, &creds, "x", "clientPort", port1, sizeof(port1), &err);
	echo(c, &creds, "x", "clientPort", port2, sizeof(port2), &err);
	ok(port1[0] && strcmp(port1, port2) == 0, "keep-alive: same client port (%s, %s)", port1,
	   port2);
}

static void test_errors(struct ec2_client *c)
{
	struct aws_credentials creds, bad;
	struct amis_err err;
	long long t0, ms;
	char buf[64];

	creds_init(&creds, TOKEN);
	creds_init(&bad, NULL);
	strcpy(bad.secret_access_key, "not-the-right-secret-key-at-all-0000000");
	is_int(call(c, &bad, "Echo", 5000, &err), -1, "wrong secret: fails");
	is_str(err.code, "SignatureDoesNotMatch", "wrong secret: EC2's code");
	ok(strstr(err.msg, "(request id sig-1)") != NULL, "wrong secret: request id (%s)", err.msg);
	ok(!ec2_error_is_retryable(&err), "wrong secret: not retryable");

	is_int(call(c, &creds, "Throttle", 5000, &err), -1, "throttled: fails");
	is_str(err.code, "RequestLimitExceeded", "throttled: code");
	is_str(err.msg, "EC2 Throttle: Request limit exceeded. (request id throttle-1)",
	       "throttled: message, naming the action once");
	ok(ec2_error_is_retryable(&err), "throttled: retryable");

	is_int(call(c, &creds, "BadGateway", 5000, &err), -1, "502 from a proxy: fails");
	is_str(err.code, "HttpError502", "502: code");
	ok(strstr(err.msg, "502 Bad Gateway") && strstr(err.msg, "(request id lb-7)"),
	   "502: body excerpt and header request id (%s)", err.msg);
	ok(ec2_error_is_retryable(&err), "502: retryable");

	is_int(call(c, &creds, "NoSuchAction", 5000, &err), -1, "unknown action: fails");
	is_str(err.code, "InvalidAction", "unknown action: code");

	t0 = mono_usec();
	is_int(call(c, &creds, "Sleep", 300, &err), -1, "slow server: fails");
	ms = (mono_usec() - t0) / 1000;
	is_str(err.code, "Timeout", "slow server: Timeout");
	ok(ms >= 250 && ms < 1500, "slow server: gave up after ~300 ms (%lld ms)", ms);
	ok(strncmp(err.msg, "EC2 Sleep: ", 11) == 0, "slow server: message names the action (%s)",
	   err.msg);
	ok(ec2_error_is_retryable(&err), "slow server: retryable");
	is_int(echo(c, &creds, "x", "method", buf, sizeof(buf), &err), 0,
	       "after a timeout the client works again");

	/*
	 * On a reused connection: libcurl would send the request again on a new
	 * one.  Not an action that may create something (the server may have
	 * executed it); a Describe is sent again.
	 */
	is_int(echo(c, &creds, "x", "method", buf, sizeof(buf), &err), 0, "connection warm");
	is_int(call(c, &creds, "Close", 5000, &err), -1, "connection closed without answer");
	is_str(err.code, "ConnectionError", "closed: ConnectionError");
	ok(strstr(err.msg, "not sent again") != NULL, "closed: says it was not sent again (%s)",
	   err.msg);
	ok(ec2_error_is_retryable(&err), "closed: retryable");
	is_int(echo(c, &creds, "Close", "seen", buf, sizeof(buf), &err), 0, "count Close requests");
	is_str(buf, "1", "closed: a creating call is sent once, never again by libcurl");
	is_int(call(c, &creds, "DescribeClose", 5000, &err), -1, "Describe closed: fails");
	is_int(echo(c, &creds, "DescribeClose", "seen", buf, sizeof(buf), &err), 0,
	       "count DescribeClose requests");
	is_str(buf, "2", "closed: a Describe is sent again once on a new connection");

	is_int(call(c, &creds, "Huge", 20000, &err), -1, "9 MiB body: refused");
	is_str(err.code, "ConnectionError", "9 MiB body: code");
	ok(strstr(err.msg, "larger than 8 MiB") != NULL, "9 MiB body: message (%s)", err.msg);

	/* A server quoting our headers back: no secret reaches err. */
	is_int(call(c, &creds, "Leak", 5000, &err), -1, "leaky server: fails");
	ok(strstr(err.msg, "FwoGZXIvYXdz") == NULL, "leaky server: no session token in message");
	ok(strstr(err.msg, "Signature=") == NULL || strstr(err.msg, "[redacted]"),
	   "leaky server: no signature in message");
	ok(strstr(err.msg, "[redacted]") != NULL, "leaky server: message redacted (%s)", err.msg);

	creds_init(&bad, NULL); /* no token: the Authorization header itself is quoted */
	is_int(call(c, &bad, "Leak", 5000, &err), -1, "leaky server, no token: fails");
	ok(strstr(err.msg, "Signature=[redacted]") != NULL,
	   "leaky server, no token: signature redacted (%s)", err.msg);

	bad.access_key_id[0] = '\0';
	is_int(call(c, &bad, "Echo", 5000, &err), -1, "no credentials: fails");
	is_str(err.code, "MissingCredentials", "no credentials: code");

	is_int(call(c, &creds, "Bad Action", 5000, &err), -1, "invalid action name: fails");
	is_str(err.code, "InvalidRequest", "invalid action name: code");
}

static void test_refused(void)
{
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	socklen_t len = sizeof(sa);
	struct aws_credentials creds;
	struct ec2_client *c;
	struct amis_err err;
	char url[64];
	int fd;

	/* A port nobody listens on: bind one, then close it. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	getsockname(fd, (struct sockaddr *)&sa, &len);
	close(fd);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d", ntohs(sa.sin_port));
	c = ec2_client_new(url, "us-east-1");
	creds_init(&creds, NULL);
	is_int(call(c, &creds, "Echo", 2000, &err), -1, "refused: fails");
	is_str(err.code, "ConnectionError", "refused: ConnectionError");
	ok(strstr(err.msg, "127.0.0.1") != NULL, "refused: message names the endpoint (%s)",
	   err.msg);
	ec2_client_free(c);
}

static void test_typed(struct ec2_client *c)
{
	static const char *const exclude[] = {"vol-0ccccccccccccccc1", "vol-0ccccccccccccccc2"};
	static const struct ec2_tag tags[] = {
	    {"ami-snapshot:label", "nightly 2024-05-01"},
	    {"ami-snapshot:lsn", "0/3000028"},
	};
	static const char *const ids[] = {"snap-0bbbbbbbbbbbbbbb1", "snap-0bbbbbbbbbbbbbbb2"};
	struct ec2_create_snapshots_req req = {
	    .instance_id = "i-0123456789abcdef0",
	    .description = "ami_snapshot nightly",
	    .exclude_boot_volume = true,
	    .exclude_volume_ids = exclude,
	    .n_exclude = 2,
	    .tags = tags,
	    .ntags = 2,
	    .copy_tags_from_source = true,
	    .dry_run = true,
	};
	struct ec2_instance_info *inst = calloc(1, sizeof(*inst));
	struct ec2_tag tags2[] = {{"k", "v"}, {"empty", NULL}};
	struct aws_credentials creds;
	struct ec2_snapshot_set set;
	struct amis_err err;
	char *last;

	creds_init(&creds, TOKEN);
	err_clear(&err);
	is_int(ec2_create_snapshots(c, &creds, &req, 5000, &set, &err), 0,
	       "CreateSnapshots DryRun: DryRunOperation is success (%s)", err.msg);
	is_int(set.n, 0, "CreateSnapshots DryRun: no snapshots");
	last = last_request(c, &creds);
	is_str(last,
	       "Action=CreateSnapshots\nVersion=2016-11-15\n"
	       "InstanceSpecification.InstanceId=i-0123456789abcdef0\n"
	       "InstanceSpecification.ExcludeBootVolume=true\n"
	       "InstanceSpecification.ExcludeDataVolumeId.1=vol-0ccccccccccccccc1\n"
	       "InstanceSpecification.ExcludeDataVolumeId.2=vol-0ccccccccccccccc2\n"
	       "Description=ami_snapshot nightly\n"
	       "TagSpecification.1.ResourceType=snapshot\n"
	       "TagSpecification.1.Tag.1.Key=ami-snapshot:label\n"
	       "TagSpecification.1.Tag.1.Value=nightly 2024-05-01\n"
	       "TagSpecification.1.Tag.2.Key=ami-snapshot:lsn\n"
	       "TagSpecification.1.Tag.2.Value=0/3000028\n"
	       "CopyTagsFromSource=volume\n"
	       "DryRun=true\n",
	       "CreateSnapshots: parameters as EC2 names them");
	free(last);

	req.dry_run = false;
	is_int(ec2_create_snapshots(c, &creds, &req, 5000, &set, &err), 0,
	       "CreateSnapshots: succeeds (%s)", err.msg);
	is_int(set.n, 2, "CreateSnapshots: two snapshots");
	if (set.n == 2) {
		is_str(set.items[1].snapshot_id, "snap-0bbbbbbbbbbbbbbb2", "snapshot id");
		is_str(set.items[1].volume_id, "vol-0aaaaaaaaaaaaaaa2", "volume id");
		is_str(set.items[1].state, "pending", "state pending");
		is_int(set.items[1].volume_size_gib, 16, "volume size");
	}
	ec2_snapshot_set_free(&set);

	is_int(ec2_describe_snapshots(c, &creds, ids, 2, 5000, &set, &err), 0,
	       "DescribeSnapshots: succeeds (%s)", err.msg);
	is_int(set.n, 2, "DescribeSnapshots: two");
	is_str(set.n ? set.items[0].state : "", "completed", "DescribeSnapshots: status");
	ec2_snapshot_set_free(&set);
	is_int(ec2_describe_snapshots(c, &creds, ids, 0, 5000, &set, &err), -1,
	       "DescribeSnapshots without ids: refused");

	is_int(ec2_describe_snapshots_by_tag(c, &creds, "ami-snapshot:request-id", "r-42", 5000,
	                                     &set, &err),
	       0, "DescribeSnapshots by tag: succeeds (%s)", err.msg);
	is_int(set.n, 0, "DescribeSnapshots by tag: nothing matched is success");
	ec2_snapshot_set_free(&set);
	last = last_request(c, &creds);
	is_str(last,
	       "Action=DescribeSnapshots\nVersion=2016-11-15\n"
	       "Filter.1.Name=tag:ami-snapshot:request-id\nFilter.1.Value.1=r-42\nOwner.1=self\n",
	       "DescribeSnapshots by tag: parameters");
	free(last);
	is_int(ec2_describe_snapshots_by_tag(c, &creds, "", "x", 5000, &set, &err), -1,
	       "DescribeSnapshots by tag without a key: refused");

	is_int(ec2_create_tags(c, &creds, ids, 2, tags2, 2, 5000, &err), 0,
	       "CreateTags: succeeds (%s)", err.msg);
	last = last_request(c, &creds);
	is_str(last,
	       "Action=CreateTags\nVersion=2016-11-15\nResourceId.1=snap-0bbbbbbbbbbbbbbb1\n"
	       "ResourceId.2=snap-0bbbbbbbbbbbbbbb2\nTag.1.Key=k\nTag.1.Value=v\n"
	       "Tag.2.Key=empty\nTag.2.Value=\n",
	       "CreateTags: parameters");
	free(last);

	is_int(ec2_describe_instance(c, &creds, "i-0123456789abcdef0", 5000, inst, &err), 0,
	       "DescribeInstances: succeeds (%s)", err.msg);
	is_str(inst->architecture, "x86_64", "DescribeInstances: architecture");
	is_str(inst->boot_mode, "uefi-preferred", "DescribeInstances: bootMode");
	is_int(inst->nvolumes, 1, "DescribeInstances: one volume");
	is_int(ec2_describe_instance(c, &creds, "i-0000000000000dead", 5000, inst, &err), -1,
	       "DescribeInstances unknown: fails");
	is_str(err.code, "InvalidInstanceID.NotFound", "DescribeInstances unknown: code");
	free(inst);
}

/* The AMI methods' calls, over HTTP: parameters as sent, answers as read. */
static void test_images(struct ec2_client *c)
{
	static const char *const vols[] = {"vol-0aaaaaaaaaaaaaaa1", "vol-0aaaaaaaaaaaaaaa2"};
	static const struct ec2_tag tag = {"ami-snapshot:request-id", "r-7"};
	struct ec2_image_info *img = calloc(1, sizeof(*img));
	struct ec2_volume_set *vs = calloc(1, sizeof(*vs));
	struct ec2_image_query q = {.image_id = "ami-0ddddddddddddddd2"};
	struct ec2_create_image_req cr = {"i-0123456789abcdef0", "nightly", "d", &tag, 1, true};
	struct ec2_register_image_req rr;
	struct aws_credentials creds;
	struct amis_err err;
	char id[32], *last;

	creds_init(&creds, TOKEN);
	err_clear(&err);
	is_int(ec2_create_image(c, &creds, &cr, 5000, id, sizeof(id), &err), 0,
	       "CreateImage DryRun: DryRunOperation is success (%s)", err.msg);
	is_str(id, "", "CreateImage DryRun: no image");
	last = last_request(c, &creds);
	is_str(last,
	       "Action=CreateImage\nVersion=2016-11-15\nInstanceId=i-0123456789abcdef0\n"
	       "Name=nightly\nDescription=d\nNoReboot=true\n"
	       "TagSpecification.1.ResourceType=image\n"
	       "TagSpecification.1.Tag.1.Key=ami-snapshot:request-id\n"
	       "TagSpecification.1.Tag.1.Value=r-7\n"
	       "TagSpecification.2.ResourceType=snapshot\n"
	       "TagSpecification.2.Tag.1.Key=ami-snapshot:request-id\n"
	       "TagSpecification.2.Tag.1.Value=r-7\nDryRun=true\n",
	       "CreateImage: parameters as EC2 names them");
	free(last);
	cr.dry_run = false;
	is_int(ec2_create_image(c, &creds, &cr, 5000, id, sizeof(id), &err), 0,
	       "CreateImage: succeeds (%s)", err.msg);
	is_str(id, "ami-0ddddddddddddddd2", "CreateImage: the image id");

	is_int(ec2_describe_image(c, &creds, &q, 5000, img, &err), 0,
	       "DescribeImages by id: succeeds (%s)", err.msg);
	ok(img->nmappings == 2 && !strcmp(img->mappings[0].snapshot_id, "snap-0bbbbbbbbbbbbbbb1") &&
	       img->mappings[1].snapshot_id[0] == '\0' && !strcmp(img->architecture, "arm64"),
	   "DescribeImages: the mapping, one snapshot made, one not yet");
	memset(&q, 0, sizeof(q));
	q.name = "nightly";
	is_int(ec2_describe_image(c, &creds, &q, 5000, img, &err), 0,
	       "DescribeImages by name: succeeds (%s)", err.msg);
	is_str(img->image_id, "", "DescribeImages by name: none");
	last = last_request(c, &creds);
	is_str(last,
	       "Action=DescribeImages\nVersion=2016-11-15\nFilter.1.Name=name\n"
	       "Filter.1.Value.1=nightly\nOwner.1=self\n",
	       "DescribeImages by name: our own images only");
	free(last);

	is_int(ec2_describe_volumes(c, &creds, vols, 2, 5000, vs, &err), 0,
	       "DescribeVolumes: succeeds (%s)", err.msg);
	ok(vs->n == 2 && vs->items[1].size_gib == 16 && vs->items[1].throughput == 125,
	   "DescribeVolumes: sizes and throughput");

	memset(img, 0, sizeof(*img));
	snprintf(img->name, sizeof(img->name), "nightly");
	snprintf(img->architecture, sizeof(img->architecture), "x86_64");
	snprintf(img->root_device_name, sizeof(img->root_device_name), "/dev/xvda");
	img->nmappings = 1;
	snprintf(img->mappings[0].device_name, 64, "/dev/xvda");
	snprintf(img->mappings[0].snapshot_id, 32, "snap-0bbbbbbbbbbbbbbb1");
	snprintf(img->mappings[0].volume_type, 16, "io2");
	img->mappings[0].size_gib = 8;
	img->mappings[0].iops = 4000;
	img->mappings[0].throughput = 500;
	rr = (struct ec2_register_image_req){img, NULL, &tag, 1, false};
	is_int(ec2_register_image(c, &creds, &rr, 5000, id, sizeof(id), &err), 0,
	       "RegisterImage: succeeds (%s)", err.msg);
	is_str(id, "ami-0ddddddddddddddd1", "RegisterImage: the image id");
	last = last_request(c, &creds);
	is_str(last,
	       "Action=RegisterImage\nVersion=2016-11-15\nName=nightly\nArchitecture=x86_64\n"
	       "VirtualizationType=hvm\nRootDeviceName=/dev/xvda\n"
	       "BlockDeviceMapping.1.DeviceName=/dev/xvda\n"
	       "BlockDeviceMapping.1.Ebs.SnapshotId=snap-0bbbbbbbbbbbbbbb1\n"
	       "BlockDeviceMapping.1.Ebs.VolumeType=io2\nBlockDeviceMapping.1.Ebs.VolumeSize=8\n"
	       "BlockDeviceMapping.1.Ebs.Iops=4000\n"
	       "BlockDeviceMapping.1.Ebs.DeleteOnTermination=false\n"
	       "TagSpecification.1.ResourceType=image\n"
	       "TagSpecification.1.Tag.1.Key=ami-snapshot:request-id\n"
	       "TagSpecification.1.Tag.1.Value=r-7\n",
	       "RegisterImage: parameters (no throughput for io2)");
	free(last);
	img->nmappings = 0;
	is_int(ec2_register_image(c, &creds, &rr, 5000, id, sizeof(id), &err), -1,
	       "RegisterImage without a mapping: refused before sending");

	is_int(ec2_deregister_image(c, &creds, "ami-0ddddddddddddddd2", 5000, &err), 0,
	       "DeregisterImage: succeeds (%s)", err.msg);
	is_int(ec2_deregister_image(c, &creds, "snap-0bbbbbbbbbbbbbbb1", 5000, &err), -1,
	       "DeregisterImage of something else: refused");
	free(img);
	free(vs);
}

/*
 * Several calls at once (ec2_call_many): each on a connection of its own,
 * each with its own outcome, and the connections kept for the next batch.
 */
static void test_many(struct ec2_client *c)
{
	struct aws_credentials creds;
	struct ec2_params p[4];
	struct ec2_batch_call k[4];
	struct amis_err err[4];
	char ports[2][3][16];
	const char *actions[4] = {"Echo", "Echo", "Echo", "Throttle"};
	int round, i, distinct = 1, reused = 0;

	creds_init(&creds, NULL);
	for (round = 0; round < 2; round++) {
		for (i = 0; i < 4; i++) {
			ec2_params_init(&p[i]);
			ec2_params_add(&p[i], "Value", "many");
			err_clear(&err[i]);
			k[i] = (struct ec2_batch_call){actions[i], &p[i], 5000, NULL, -1, &err[i]};
		}
		is_int(ec2_call_many(c, &creds, k, 4, 0), -1, "round %d: one of four calls failed",
		       round + 1);
		for (i = 0; i < 3; i++) {
			struct amis_err xe;

			err_clear(&xe);
			ports[round][i][0] = '\0';
			ok(k[i].rc == 0 && k[i].doc &&
			       xml_child_text(xml_root(k[i].doc), "clientPort", ports[round][i],
			                      sizeof(ports[round][i]), &xe) == 0,
			   "round %d: call %d answered (%s)", round + 1, i + 1, err[i].msg);
		}
		is_int(k[3].rc, -1, "round %d: the throttled call failed on its own", round + 1);
		is_str(err[3].code, "RequestLimitExceeded", "round %d: with its own code",
		       round + 1);
		ok(strncmp(err[3].msg, "EC2 Throttle: ", 14) == 0,
		   "round %d: naming its action: %s", round + 1, err[3].msg);
		for (i = 0; i < 4; i++) {
			xml_free(k[i].doc);
			ec2_params_free(&p[i]);
		}
	}
	for (i = 0; i < 3; i++) {
		int j;

		for (j = i + 1; j < 3; j++)
			if (!strcmp(ports[0][i], ports[0][j]))
				distinct = 0;
		for (j = 0; j < 3; j++)
			if (!strcmp(ports[1][i], ports[0][j]))
				reused++;
	}
	ok(distinct, "the calls made at once went on three connections (ports %s %s %s)",
	   ports[0][0], ports[0][1], ports[0][2]);
	is_int(reused, 3, "the next batch found the same connections open (ports %s %s %s)",
	       ports[1][0], ports[1][1], ports[1][2]);
}

/* A connection idle longer than the client's maximum is not reused. */
static void test_max_idle(void)
{
	struct ec2_client *c = ec2_client_new(endpoint, "us-east-1");
	struct aws_credentials creds;
	struct amis_err err;
	char p1[16] = "", p2[16] = "", p3[16] = "";

	creds_init(&creds, NULL);
	ec2_client_set_max_idle(c, 1);
	err_clear(&err);
	echo(c, &creds, "idle", "clientPort", p1, sizeof(p1), &err);
	echo(c, &creds, "idle", "clientPort", p2, sizeof(p2), &err);
	is_str(p2, p1, "max idle 1 s: a connection used just now is reused");
	sleep(3); /* idle for longer than the maximum: libcurl counts whole seconds */
	echo(c, &creds, "idle", "clientPort", p3, sizeof(p3), &err);
	ok(p3[0] && strcmp(p3, p1) != 0, "max idle 1 s: after 3 s idle, a new connection (%s, %s)",
	   p1, p3);
	ec2_client_free(c);
}

int main(void)
{
	struct ec2_client *c;

	alarm(120);
	signal(SIGPIPE, SIG_IGN);
	start_server();
	c = ec2_client_new(endpoint, "us-east-1");
	if (!c)
		bail("ec2_client_new failed");
	test_request_shape(c);
	test_errors(c);
	test_refused();
	test_typed(c);
	test_images(c);
	test_many(c);
	test_max_idle();
	ec2_client_free(c);
	stop_server();
	return done_testing();
}
