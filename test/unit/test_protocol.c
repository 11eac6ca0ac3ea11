/*
 * test_protocol.c - the wire protocol: round trips, and every way a frame
 * can be malformed is refused.
 */
#include "protocol.h"
#include "tap.h"

#include <stdint.h>
#include <string.h>

static unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD + 64];

/* A PREPARE's required fields, in buf. */
static void prepare_head(struct amsp_writer *w)
{
	amsp_begin(w, buf, sizeof(buf), AMSP_PREPARE);
	amsp_put_str(w, AMSP_T_REQUEST_ID, "0b7e3c1a-1111-4222-8333-444455556666");
	amsp_put_str(w, AMSP_T_NAME, "nightly");
	amsp_put_u8(w, AMSP_T_FREEZE, 1);
	amsp_put_str(w, AMSP_T_PATH_DATA, "/var/lib/postgresql/15/main");
}

static size_t prepare_frame(void)
{
	struct amsp_writer w;

	prepare_head(&w);
	amsp_put_str(&w, AMSP_T_PATH_WAL, "/srv/wal/pg_wal");
	amsp_put_str(&w, AMSP_T_PATH_TABLESPACE, "/srv/ts1");
	amsp_put_str(&w, AMSP_T_PATH_TABLESPACE, "/srv/ts2");
	return amsp_end(&w);
}

/* A PREPARE from a hot standby: the optional standby fields, one of them bad. */
static size_t standby_prepare_frame(const char *host, const char *sync_state, bool twice)
{
	struct amsp_writer w;

	prepare_head(&w);
	amsp_put_u8(&w, AMSP_T_STANDBY, 1);
	amsp_put_str(&w, AMSP_T_PRIMARY_HOST, host);
	amsp_put_str(&w, AMSP_T_SYNC_STATE, sync_state);
	if (twice)
		amsp_put_u8(&w, AMSP_T_STANDBY, 1);
	return amsp_end(&w);
}

static int decode(size_t len, struct amsp_msgview *m, const char **why)
{
	*why = NULL;
	return amsp_decode(buf, len, m, why);
}

static void put16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

int main(void)
{
	static struct amsp_msgview m;
	const char *why;
	char s[64];
	size_t len;
	struct amsp_writer w;

	len = prepare_frame();
	ok(len > AMSP_HEADER_LEN, "PREPARE encodes (%zu bytes)", len);
	ok(decode(len, &m, &why) == 0, "PREPARE decodes");
	is_int(m.type, AMSP_PREPARE, "message type");
	amsp_copy_str(amsp_get(&m, AMSP_T_NAME), s, sizeof(s));
	is_str(s, "nightly", "name round trips");
	is_int(amsp_u8(amsp_get(&m, AMSP_T_FREEZE)), 1, "u8 round trips");
	is_int(amsp_count(&m, AMSP_T_PATH_TABLESPACE), 2, "repeated field counted");
	amsp_copy_str(amsp_get_nth(&m, AMSP_T_PATH_TABLESPACE, 1), s, sizeof(s));
	is_str(s, "/srv/ts2", "second repeated field");
	ok(amsp_copy_str(amsp_get(&m, AMSP_T_PATH_DATA), s, 5) == -1,
	   "copy into a too small buffer fails");

	amsp_begin(&w, buf, sizeof(buf), AMSP_PENDING);
	amsp_put_str(&w, AMSP_T_SNAPSHOT_ID, "snap-0123456789abcdef0");
	amsp_put_str(&w, AMSP_T_SNAPSHOT_VOLUME, "vol-0123456789abcdef0");
	amsp_put_u64(&w, AMSP_T_FREEZE_USEC, 0x1122334455667788ULL);
	amsp_put_u64(&w, AMSP_T_SNAPSHOT_USEC, 42);
	len = amsp_end(&w);
	ok(decode(len, &m, &why) == 0, "PENDING decodes");
	ok(amsp_u64(amsp_get(&m, AMSP_T_FREEZE_USEC)) == 0x1122334455667788ULL, "u64 round trips");

	/* STATUS asking for the jobs; a STATUS_REPLY listing them. */
	amsp_begin(&w, buf, sizeof(buf), AMSP_STATUS);
	amsp_put_u8(&w, AMSP_T_LIST_JOBS, 1);
	len = amsp_end(&w);
	ok(decode(len, &m, &why) == 0 && amsp_u8(amsp_get(&m, AMSP_T_LIST_JOBS)) == 1,
	   "STATUS with LIST_JOBS decodes");
	amsp_begin(&w, buf, sizeof(buf), AMSP_STATUS_REPLY);
	amsp_put_str(&w, AMSP_T_STATE, "idle");
	for (int i = 0; i < 2; i++) {
		amsp_put_str(&w, AMSP_T_JOB_ID, i ? "r-2" : "r-1");
		amsp_put_str(&w, AMSP_T_JOB_KIND, i ? "wait" : "verify");
		amsp_put_u32(&w, AMSP_T_JOB_PID, 100 + (uint32_t)i);
		amsp_put_u64(&w, AMSP_T_JOB_USEC, 5000000);
	}
	len = amsp_end(&w);
	ok(decode(len, &m, &why) == 0 && amsp_count(&m, AMSP_T_JOB_ID) == 2 &&
	       amsp_u32(amsp_get_nth(&m, AMSP_T_JOB_PID, 1)) == 101,
	   "STATUS_REPLY with two jobs decodes");
	amsp_begin(&w, buf, sizeof(buf), AMSP_STATUS_REPLY);
	amsp_put_str(&w, AMSP_T_STATE, "idle");
	for (int i = 0; i <= AMSP_MAX_STATUS_JOBS; i++)
		amsp_put_str(&w, AMSP_T_JOB_ID, "r");
	len = amsp_end(&w);
	ok(decode(len, &m, &why) == -1, "STATUS_REPLY with too many jobs refused (%s)", why);

	/* Malformed frames. */
	len = prepare_frame();
	memcpy(buf, "XXXX", 4);
	ok(decode(len, &m, &why) == -1 && !strcmp(why, "bad magic"), "bad magic refused");

	len = prepare_frame();
	put16(buf + 4, 99);
	ok(decode(len, &m, &why) == -1 && !strcmp(why, "unsupported protocol version"),
	   "unknown version refused");

	len = prepare_frame();
	put16(buf + 6, 77);
	ok(decode(len, &m, &why) == -1 && !strcmp(why, "unknown message type"),
	   "unknown message type refused");

	len = prepare_frame();
	ok(decode(len - 1, &m, &why) == -1, "truncated frame refused (%s)", why);

	len = prepare_frame();
	buf[8] = 0x7f; /* payload length way over the limit */
	ok(amsp_header_payload_len(buf, &why) == -1 && !strcmp(why, "payload too long"),
	   "oversized payload refused from the header alone");

	/* A string with a NUL byte. */
	amsp_begin(&w, buf, sizeof(buf), AMSP_ABORT);
	amsp_put_str(&w, AMSP_T_REASON, "abc");
	len = amsp_end(&w);
	buf[AMSP_HEADER_LEN + 5] = '\0';
	ok(decode(len, &m, &why) == -1 && strstr(why, "NUL"), "NUL in a string refused");

	/* A field not allowed in this message. */
	amsp_begin(&w, buf, sizeof(buf), AMSP_ABORT);
	amsp_put_str(&w, AMSP_T_NAME, "nightly");
	len = amsp_end(&w);
	ok(decode(len, &m, &why) == -1 && strstr(why, "not allowed"), "foreign field refused");

	/* Required field missing. */
	amsp_begin(&w, buf, sizeof(buf), AMSP_SNAPSHOT);
	amsp_put_str(&w, AMSP_T_START_LSN, "0/2000028");
	len = amsp_end(&w);
	ok(decode(len, &m, &why) == -1 && strstr(why, "required"),
	   "missing required field refused");

	/* Repeated singleton. */
	amsp_begin(&w, buf, sizeof(buf), AMSP_SNAPSHOT);
	amsp_put_str(&w, AMSP_T_START_LSN, "0/2000028");
	amsp_put_str(&w, AMSP_T_START_LSN, "0/2000028");
	amsp_put_u32(&w, AMSP_T_TIMELINE, 1);
	len = amsp_end(&w);
	ok(decode(len, &m, &why) == -1 && strstr(why, "repeated"), "repeated singleton refused");

	/* Wrong integer width. */
	amsp_begin(&w, buf, sizeof(buf), AMSP_SNAPSHOT);
	amsp_put_str(&w, AMSP_T_START_LSN, "0/2000028");
	amsp_put_u8(&w, AMSP_T_TIMELINE, 1);
	len = amsp_end(&w);
	ok(decode(len, &m, &why) == -1 && strstr(why, "u32"), "wrong integer width refused");

	/* Over-long string. */
	{
		char big[300];

		memset(big, 'a', sizeof(big) - 1);
		big[sizeof(big) - 1] = '\0';
		len = prepare_frame();
		amsp_begin(&w, buf, sizeof(buf), AMSP_PREPARE);
		amsp_put_str(&w, AMSP_T_REQUEST_ID, "r1");
		amsp_put_str(&w, AMSP_T_NAME, big);
		amsp_put_u8(&w, AMSP_T_FREEZE, 1);
		amsp_put_str(&w, AMSP_T_PATH_DATA, "/d");
		len = amsp_end(&w);
		ok(decode(len, &m, &why) == -1 && strstr(why, "too long"),
		   "over-long string refused");
	}

	/* The writer refuses to overflow its buffer. */
	{
		unsigned char small[20];

		amsp_begin(&w, small, sizeof(small), AMSP_ABORT);
		amsp_put_str(&w, AMSP_T_REASON, "this does not fit in twenty bytes");
		is_int(amsp_end(&w), 0, "encoder overflow reported as 0");
	}

	/* Trailing garbage after the declared payload. */
	len = prepare_frame();
	buf[len] = 0;
	ok(decode(len + 1, &m, &why) == -1, "trailing bytes refused");

	/* The image fields are optional: PREPARE with and without them. */
	amsp_begin(&w, buf, sizeof(buf), AMSP_PREPARE);
	amsp_put_str(&w, AMSP_T_REQUEST_ID, "0b7e3c1a-1111-4222-8333-444455556666");
	amsp_put_str(&w, AMSP_T_NAME, "nightly");
	amsp_put_u8(&w, AMSP_T_FREEZE, 1);
	amsp_put_str(&w, AMSP_T_PATH_DATA, "/srv/pg");
	amsp_put_str(&w, AMSP_T_IMAGE_METHOD, "register");
	amsp_put_u8(&w, AMSP_T_ALLOW_PRODUCT_CODE_LOSS, 1);
	len = amsp_end(&w);
	ok(decode(len, &m, &why) == 0, "PREPARE with an image method decodes");
	amsp_copy_str(amsp_get(&m, AMSP_T_IMAGE_METHOD), s, sizeof(s));
	is_str(s, "register", "image method round trips");
	amsp_begin(&w, buf, sizeof(buf), AMSP_PREPARE);
	amsp_put_str(&w, AMSP_T_REQUEST_ID, "r");
	amsp_put_str(&w, AMSP_T_NAME, "nightly");
	amsp_put_u8(&w, AMSP_T_FREEZE, 1);
	amsp_put_str(&w, AMSP_T_PATH_DATA, "/srv/pg");
	amsp_put_str(&w, AMSP_T_IMAGE_METHOD, "register-with-a-very-long-name");
	len = amsp_end(&w);
	ok(decode(len, &m, &why) != 0, "an image method over 16 bytes is refused (%s)", why);
	amsp_begin(&w, buf, sizeof(buf), AMSP_PREPARE);
	amsp_put_str(&w, AMSP_T_REQUEST_ID, "r");
	amsp_put_str(&w, AMSP_T_NAME, "nightly");
	amsp_put_u8(&w, AMSP_T_FREEZE, 1);
	amsp_put_str(&w, AMSP_T_PATH_DATA, "/srv/pg");
	amsp_put_u32(&w, AMSP_T_ALLOW_PRODUCT_CODE_LOSS, 1);
	len = amsp_end(&w);
	ok(decode(len, &m, &why) != 0, "allow-product-code-loss as a u32 is refused (%s)", why);
	/* The standby's fields are optional too, and bounded. */
	len = standby_prepare_frame("10.0.0.5:5432", "async", false);
	ok(decode(len, &m, &why) == 0 && amsp_u8(amsp_get(&m, AMSP_T_STANDBY)) == 1,
	   "PREPARE from a standby decodes");
	amsp_copy_str(amsp_get(&m, AMSP_T_PRIMARY_HOST), s, sizeof(s));
	is_str(s, "10.0.0.5:5432", "the primary's host round trips");
	{
		char host[300];

		memset(host, 'h', sizeof(host) - 1);
		host[sizeof(host) - 1] = '\0';
		len = standby_prepare_frame(host, "async", false);
		ok(decode(len, &m, &why) != 0, "a primary host over 256 bytes is refused (%s)",
		   why);
	}
	len = standby_prepare_frame("h:1", "a-sync-state-too-long", false);
	ok(decode(len, &m, &why) != 0, "a sync state over 16 bytes is refused (%s)", why);
	len = standby_prepare_frame("h:1", "sync", true);
	ok(decode(len, &m, &why) != 0, "STANDBY twice is refused (%s)", why);
	amsp_begin(&w, buf, sizeof(buf), AMSP_PENDING);
	amsp_put_str(&w, AMSP_T_SNAPSHOT_ID, "snap-0000000a");
	amsp_put_str(&w, AMSP_T_SNAPSHOT_VOLUME, "vol-0000000a");
	amsp_put_u64(&w, AMSP_T_FREEZE_USEC, 1);
	amsp_put_u64(&w, AMSP_T_SNAPSHOT_USEC, 1);
	amsp_put_str(&w, AMSP_T_IMAGE_ID, "ami-0000000a");
	len = amsp_end(&w);
	ok(decode(len, &m, &why) == 0, "PENDING with an image id decodes");
	amsp_begin(&w, buf, sizeof(buf), AMSP_DONE);
	amsp_put_str(&w, AMSP_T_IMAGE_ID, "ami-0000000a");
	amsp_put_str(&w, AMSP_T_IMAGE_ID, "ami-0000000b");
	len = amsp_end(&w);
	ok(decode(len, &m, &why) != 0, "DONE with two image ids is refused (%s)", why);
	amsp_begin(&w, buf, sizeof(buf), AMSP_SNAPSHOT);
	amsp_put_str(&w, AMSP_T_START_LSN, "0/1");
	amsp_put_u32(&w, AMSP_T_TIMELINE, 1);
	amsp_put_str(&w, AMSP_T_IMAGE_ID, "ami-0000000a");
	len = amsp_end(&w);
	ok(decode(len, &m, &why) != 0, "an image id in SNAPSHOT is a foreign tag (%s)", why);
	amsp_begin(&w, buf, sizeof(buf), AMSP_W_REGISTER_IMAGE);
	amsp_put_u32(&w, AMSP_T_SEQ, 1);
	amsp_put_u32(&w, AMSP_T_TIMEOUT_MS, 1000);
	amsp_put_u8(&w, AMSP_T_DRY_RUN, 0);
	len = amsp_end(&w);
	ok(decode(len, &m, &why) != 0, "W_REGISTER_IMAGE without a name is refused (%s)", why);

	return done_testing();
}
