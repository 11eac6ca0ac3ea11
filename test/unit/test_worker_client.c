/*
 * test_worker_client.c - the helper's side of the EC2 worker channel
 * (helper/root/worker_client.c) treats what the worker says as untrusted.  The test
 * plays the worker on a socketpair: answers are queued before each call
 * (SOCK_SEQPACKET keeps them), then the helper's call reads them.
 */
#include "config.h"
#include "protocol.h"
#include "tap.h"
#include "worker_client.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

static struct helper_config cfg;
static int peer = -1; /* the test's end: the "worker" */

/* A fresh channel for w; the previous one (if any) was closed by w. */
static void attach(struct worker *w)
{
	int sv[2];

	if (peer >= 0)
		close(peer);
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) {
		perror("socketpair");
		_exit(1);
	}
	worker_attach_for_test(w, sv[0], 0);
	peer = sv[1];
}

static void queue(const unsigned char *frame, size_t len)
{
	if (send(peer, frame, len, 0) != (ssize_t)len)
		perror("send");
}

/* Queues a W_OK for seq with a READY answer. */
static void queue_ready(uint32_t seq, const char *instance, const char *region)
{
	unsigned char buf[512];
	struct amsp_writer aw;

	amsp_begin(&aw, buf, sizeof(buf), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, seq);
	amsp_put_str(&aw, AMSP_T_INSTANCE_ID, instance);
	amsp_put_str(&aw, AMSP_T_REGION, region);
	queue(buf, amsp_end(&aw));
}

/* Drains what the helper sent (its requests), so buffers never fill. */
static void drain(void)
{
	unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];

	while (recv(peer, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

int main(void)
{
	static unsigned char big[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD + 4096];
	unsigned char buf[4096];
	struct ec2_instance_info inst;
	struct ec2_snapshot_set snaps = {0};
	struct ec2_create_snapshots_req r;
	struct amsp_writer aw;
	struct amis_err err;
	struct worker *w;
	uint32_t seq = 0;

	config_init(&cfg);
	cfg.ec2_timeout_ms = 300;
	w = worker_new(&cfg, "/nonexistent.conf");

	/* 1. A good READY answer, after a stale one for an abandoned call. */
	attach(w);
	queue_ready(99, "i-0stale000000000", "us-east-1");
	queue_ready(++seq, "i-0a1b2c3d4e5f60718", "eu-west-1");
	err_clear(&err);
	ok(worker_ready(w, &err) == 0, "READY answered (%s)", err.msg);
	is_str(worker_instance_id(w), "i-0a1b2c3d4e5f60718", "the stale answer was skipped by SEQ");
	is_str(worker_region(w), "eu-west-1", "region");
	drain();

	/* 2. An error answer with a hostile code and control characters. */
	amsp_begin(&aw, buf, sizeof(buf), AMSP_W_ERROR);
	amsp_put_u32(&aw, AMSP_T_SEQ, ++seq);
	amsp_put_str(&aw, AMSP_T_ERROR_CODE, "Bad Code\n<0>");
	amsp_put_str(&aw, AMSP_T_ERROR_MESSAGE, "line one\n<0>emerg: forged\x1b[31m");
	queue(buf, amsp_end(&aw));
	err_clear(&err);
	ok(worker_find_snapshots(w, "k", "v", 100, &snaps, &err) < 0,
	   "an error answer fails the call");
	is_str(err.code, "WorkerError", "a code outside [A-Za-z0-9._-] becomes WorkerError");
	ok(!strchr(err.msg, '\n') && !strchr(err.msg, '\x1b'),
	   "control characters of the message are blanked: %s", err.msg);
	drain();

	/* 3. A well-formed error keeps its code; the same channel still serves. */
	amsp_begin(&aw, buf, sizeof(buf), AMSP_W_ERROR);
	amsp_put_u32(&aw, AMSP_T_SEQ, ++seq);
	amsp_put_str(&aw, AMSP_T_ERROR_CODE, "RequestLimitExceeded");
	amsp_put_str(&aw, AMSP_T_ERROR_MESSAGE, "EC2 CreateTags: Request limit exceeded.");
	queue(buf, amsp_end(&aw));
	err_clear(&err);
	{
		const char *ids[] = {"snap-07a35da2447b30aae"};
		struct ec2_tag tag = {"k", "v"};

		ok(worker_create_tags(w, ids, 1, &tag, 1, 100, &err) < 0, "CreateTags error");
	}
	is_str(err.code, "RequestLimitExceeded", "an EC2 code passes unchanged");
	drain();

	/* 4. Garbage: the worker is given up (WorkerDied), its channel closed. */
	queue((const unsigned char *)"not a frame at all", 18);
	err_clear(&err);
	++seq;
	ok(worker_find_snapshots(w, "k", "v", 100, &snaps, &err) < 0, "garbage fails the call");
	is_str(err.code, "WorkerDied", "... as WorkerDied");
	ok(strstr(err.msg, "malformed answer") != NULL, "... naming a malformed answer: %s",
	   err.msg);

	/* 5. A frame larger than the protocol allows. */
	attach(w);
	memset(big, 'A', sizeof(big));
	memcpy(big, "AMSP", 4);
	queue(big, sizeof(big));
	err_clear(&err);
	++seq;
	ok(worker_find_snapshots(w, "k", "v", 100, &snaps, &err) < 0, "an oversized frame fails");
	ok(!strcmp(err.code, "WorkerDied") && strstr(err.msg, "larger than the protocol"),
	   "... as WorkerDied, naming the size: %s", err.msg);

	/* 6. A message type the worker never sends. */
	attach(w);
	amsp_begin(&aw, buf, sizeof(buf), AMSP_PREPARE);
	amsp_put_str(&aw, AMSP_T_REQUEST_ID, "x");
	amsp_put_str(&aw, AMSP_T_NAME, "nightly");
	amsp_put_u8(&aw, AMSP_T_FREEZE, 1);
	amsp_put_str(&aw, AMSP_T_PATH_DATA, "/srv");
	queue(buf, amsp_end(&aw));
	err_clear(&err);
	++seq;
	ok(worker_find_snapshots(w, "k", "v", 100, &snaps, &err) < 0 &&
	       !strcmp(err.code, "WorkerDied") && strstr(err.msg, "unexpected message type"),
	   "an unexpected message type: WorkerDied (%s)", err.msg);

	/* 7. Inconsistent DescribeInstances: two volumes, one device name. */
	attach(w);
	queue_ready(++seq, "i-0a1b2c3d4e5f60718", "eu-west-1");
	amsp_begin(&aw, buf, sizeof(buf), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, ++seq);
	amsp_put_str(&aw, AMSP_T_DEVICE_NAME, "/dev/sdf");
	amsp_put_str(&aw, AMSP_T_VOLUME_ID, "vol-000abc00000000001");
	amsp_put_str(&aw, AMSP_T_VOLUME_ID, "vol-000abc00000000002");
	queue(buf, amsp_end(&aw));
	err_clear(&err);
	ok(worker_describe_instance(w, 100, &inst, &err) < 0 && !strcmp(err.code, "WorkerDied") &&
	       strstr(err.msg, "inconsistent"),
	   "unpaired volume ids and device names: WorkerDied (%s)", err.msg);

	/* 8. A snapshot id longer than any EC2 id (fits the frame, not the helper's buffer). */
	attach(w);
	amsp_begin(&aw, buf, sizeof(buf), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, ++seq);
	amsp_put_str(&aw, AMSP_T_SNAPSHOT_ID, "snap-0123456789abcdef0123456789abcdef0123456789");
	amsp_put_str(&aw, AMSP_T_SNAPSHOT_VOLUME, "vol-000abc00000000001");
	amsp_put_str(&aw, AMSP_T_SNAPSHOT_STATE, "pending");
	queue(buf, amsp_end(&aw));
	err_clear(&err);
	ok(worker_find_snapshots(w, "k", "v", 100, &snaps, &err) < 0 &&
	       !strcmp(err.code, "WorkerDied") && snaps.n == 0,
	   "an over-long snapshot id: WorkerDied, nothing returned (%s)", err.msg);

	/* 9. Good snapshots. */
	attach(w);
	amsp_begin(&aw, buf, sizeof(buf), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, ++seq);
	amsp_put_str(&aw, AMSP_T_SNAPSHOT_ID, "snap-07a35da2447b30aae");
	amsp_put_str(&aw, AMSP_T_SNAPSHOT_VOLUME, "vol-000abc00000000001");
	amsp_put_str(&aw, AMSP_T_SNAPSHOT_STATE, "pending");
	queue(buf, amsp_end(&aw));
	err_clear(&err);
	ok(worker_find_snapshots(w, "k", "v", 100, &snaps, &err) == 0 && snaps.n == 1,
	   "a good snapshot list (%s)", err.msg);
	is_str(snaps.n ? snaps.items[0].volume_id : "", "vol-000abc00000000001", "its volume");
	ec2_snapshot_set_free(&snaps);
	memset(&snaps, 0, sizeof(snaps));
	drain();

	/* 10. No answer: the helper stops waiting (Timeout) and gives the worker up. */
	memset(&r, 0, sizeof(r));
	r.instance_id = "i-0a1b2c3d4e5f60718";
	err_clear(&err);
	++seq;
	ok(worker_create_snapshots(w, &r, 100, 200, false, &snaps, &err) < 0 &&
	       !strcmp(err.code, "Timeout"),
	   "no answer within wait_ms: Timeout (%s)", err.msg);

	/* 11. While frozen (hold_log), a dead worker is not replaced: fails at once. */
	err_clear(&err);
	ok(worker_create_snapshots(w, &r, 100, 200, true, &snaps, &err) < 0 &&
	       !strcmp(err.code, "WorkerDied") && strstr(err.msg, "nothing was sent"),
	   "frozen call without a worker: WorkerDied at once, no new worker (%s)", err.msg);
	is_int(worker_pid(w), 0, "... and no worker process was started");

	/* 12. The image answers: a good DescribeImages, then untrusted ones. */
	{
		static struct ec2_image_info img;
		struct ec2_image_query q = {.image_id = "ami-0123456789abcdef0"};
		char id[32];

		attach(w);
		amsp_begin(&aw, buf, sizeof(buf), AMSP_W_OK);
		amsp_put_u32(&aw, AMSP_T_SEQ, ++seq);
		amsp_put_str(&aw, AMSP_T_IMAGE_ID, "ami-0123456789abcdef0");
		amsp_put_str(&aw, AMSP_T_ARCHITECTURE, "x86_64");
		amsp_put_str(&aw, AMSP_T_PRODUCT_CODE, "abc");
		amsp_put_str(&aw, AMSP_T_PRODUCT_CODE_TYPE, "marketplace");
		amsp_put_str(&aw, AMSP_T_DEVICE_NAME, "/dev/xvda");
		amsp_put_str(&aw, AMSP_T_SNAPSHOT_ID, "");
		amsp_put_str(&aw, AMSP_T_VOLUME_TYPE, "gp3");
		amsp_put_u32(&aw, AMSP_T_VOLUME_SIZE, 8);
		amsp_put_u32(&aw, AMSP_T_IOPS, 3000);
		amsp_put_u32(&aw, AMSP_T_THROUGHPUT, 125);
		amsp_put_u8(&aw, AMSP_T_DELETE_ON_TERM, 1);
		queue(buf, amsp_end(&aw));
		err_clear(&err);
		ok(worker_describe_image(w, &q, 100, &img, &err) == 0 && img.nmappings == 1 &&
		       img.mappings[0].size_gib == 8 && img.mappings[0].delete_on_termination &&
		       !strcmp(img.product_codes[0].type, "marketplace"),
		   "a good DescribeImages answer (%s)", err.msg);
		drain();

		amsp_begin(&aw, buf, sizeof(buf), AMSP_W_OK);
		amsp_put_u32(&aw, AMSP_T_SEQ, ++seq);
		amsp_put_str(&aw, AMSP_T_IMAGE_ID, "ami-0123456789abcdef0");
		amsp_put_str(&aw, AMSP_T_DEVICE_NAME, "/dev/xvda");
		amsp_put_str(&aw, AMSP_T_SNAPSHOT_ID, "snap-0000000a");
		queue(buf, amsp_end(&aw));
		err_clear(&err);
		ok(worker_describe_image(w, &q, 100, &img, &err) < 0 &&
		       !strcmp(err.code, "WorkerDied") && strstr(err.msg, "inconsistent"),
		   "a mapping whose fields do not pair up: WorkerDied (%s)", err.msg);

		attach(w);
		amsp_begin(&aw, buf, sizeof(buf), AMSP_W_OK);
		amsp_put_u32(&aw, AMSP_T_SEQ, ++seq);
		amsp_put_str(&aw, AMSP_T_IMAGE_ID, "snap-0123456789abcdef0");
		queue(buf, amsp_end(&aw));
		err_clear(&err);
		ok(worker_describe_image(w, &q, 100, &img, &err) < 0 &&
		       !strcmp(err.code, "WorkerDied") && strstr(err.msg, "image id"),
		   "an image id that is not ami-...: WorkerDied (%s)", err.msg);

		attach(w);
		amsp_begin(&aw, buf, sizeof(buf), AMSP_W_OK);
		amsp_put_u32(&aw, AMSP_T_SEQ, ++seq);
		queue(buf, amsp_end(&aw));
		err_clear(&err);
		{
			struct ec2_create_image_req cr = {
			    "i-0a1b2c3d4e5f60718", "nightly", NULL, NULL, 0, false};

			ok(worker_create_image(w, &cr, 100, 200, false, id, &err) < 0 &&
			       !strcmp(err.code, "WorkerDied") && strstr(err.msg, "lacks"),
			   "CreateImage answered without an image id: WorkerDied (%s)", err.msg);
		}
	}

	/*
	 * 13. DescribeInstances with a DryRun along (issue 16): the mapping, and
	 * the DryRun's refusal carried in the same W_OK; EC2's answer makes the
	 * connection warm, a failed call cold again.
	 */
	attach(w);
	queue_ready(++seq, "i-0a1b2c3d4e5f60718", "eu-west-1");
	amsp_begin(&aw, buf, sizeof(buf), AMSP_W_OK);
	amsp_put_u32(&aw, AMSP_T_SEQ, ++seq);
	amsp_put_str(&aw, AMSP_T_ROOT_DEVICE, "/dev/xvda");
	amsp_put_str(&aw, AMSP_T_DEVICE_NAME, "/dev/xvda");
	amsp_put_str(&aw, AMSP_T_VOLUME_ID, "vol-000abc00000000001");
	amsp_put_str(&aw, AMSP_T_ERROR_CODE, "UnauthorizedOperation");
	amsp_put_str(&aw, AMSP_T_ERROR_MESSAGE, "EC2 CreateSnapshots: not authorized");
	queue(buf, amsp_end(&aw));
	err_clear(&err);
	ok(worker_ec2_idle_ms(w) < 0, "a new worker: EC2 never answered it (cold)");
	{
		struct amis_err dry_err;

		memset(&r, 0, sizeof(r));
		r.instance_id = "i-0a1b2c3d4e5f60718";
		r.dry_run = true;
		ok(worker_describe_instance_dry(w, 100, &r, &inst, &dry_err, &err) == 0,
		   "DescribeInstances with a DryRun: answered (%s)", err.msg);
		is_int((int)inst.nvolumes, 1, "... the mapping");
		is_str(inst.instance_id, "i-0a1b2c3d4e5f60718", "... of the worker's instance");
		is_str(dry_err.code, "UnauthorizedOperation", "... and the DryRun's refusal");
		ok(strstr(dry_err.msg, "not authorized") != NULL, "... with its message");
	}
	ok(worker_ec2_idle_ms(w) >= 0, "after EC2's answer: warm");
	drain();
	amsp_begin(&aw, buf, sizeof(buf), AMSP_W_ERROR);
	amsp_put_u32(&aw, AMSP_T_SEQ, ++seq);
	amsp_put_str(&aw, AMSP_T_ERROR_CODE, "ConnectionError");
	amsp_put_str(&aw, AMSP_T_ERROR_MESSAGE, "EC2 CreateTags: connection reset");
	queue(buf, amsp_end(&aw));
	{
		const char *ids[] = {"snap-07a35da2447b30aae", "snap-07a35da2447b30aab"};
		struct ec2_tag tag = {"k", "v"};
		struct worker_item_tag item = {1, {"ami-snapshot:device", "/dev/sdf"}};

		err_clear(&err);
		ok(worker_create_tags_items(w, ids, 2, &tag, 1, &item, 1, 100, &err) < 0 &&
		       !strcmp(err.code, "ConnectionError"),
		   "CreateTags with a snapshot's own tag: the failure passes (%s)", err.code);
	}
	ok(worker_ec2_idle_ms(w) < 0, "after a failed call: cold again");
	drain();

	worker_free(w);
	if (peer >= 0)
		close(peer);
	config_free(&cfg);
	printf("1..%d\n", tap_n);
	return tap_failed ? 1 : 0;
}
