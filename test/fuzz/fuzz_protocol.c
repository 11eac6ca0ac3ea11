/*
 * fuzz_protocol.c - libFuzzer target for the helper <-> extension wire
 * protocol (helper/common/protocol.h): the code that reads what a local, possibly
 * hostile, client sends to a root daemon, and what the unprivileged EC2
 * worker (which parses the network's input) answers it.
 *
 * Input: one frame.  Checks, beyond "no crash, no sanitizer report":
 *  - amsp_header_payload_len agrees with amsp_decode on the header;
 *  - every accessor works on every field of a decoded message, each numeric
 *    field through the accessor its tag's type calls for (protocol.h says
 *    decoding already checked the lengths: an over-read here is a decoder
 *    bug that ASan reports);
 *  - re-encoding the decoded fields gives back the input byte for byte (the
 *    format has one encoding per message).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "protocol.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

enum kind { K_STR, K_U8, K_U32, K_U64 };

/* The value type of each tag, as in protocol.h's comments. */
static enum kind tag_kind(uint16_t tag)
{
	switch (tag) {
	case AMSP_T_FREEZE:
	case AMSP_T_DRY_RUN:
	case AMSP_T_HOLD_LOG:
	case AMSP_T_EXCLUDE_BOOT:
	case AMSP_T_ALLOW_PRODUCT_CODE_LOSS:
	case AMSP_T_ENA:
	case AMSP_T_DELETE_ON_TERM:
	case AMSP_T_JOB_TRUNCATED:
	case AMSP_T_LIST_JOBS:
	case AMSP_T_STANDBY:
		return K_U8;
	case AMSP_T_TIMELINE:
	case AMSP_T_SEQ:
	case AMSP_T_TIMEOUT_MS:
	case AMSP_T_VOLUME_SIZE:
	case AMSP_T_IOPS:
	case AMSP_T_THROUGHPUT:
	case AMSP_T_ITEM_RESOURCE:
	case AMSP_T_JOB_EXIT:
	case AMSP_T_JOB_SIGNAL:
	case AMSP_T_JOB_PID:
		return K_U32;
	case AMSP_T_FREEZE_USEC:
	case AMSP_T_SNAPSHOT_USEC:
	case AMSP_T_FROZEN_USEC:
	case AMSP_T_JOB_USEC:
		return K_U64;
	default:
		return K_STR;
	}
}

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_protocol: %s\n", what);
		abort();
	}
}

static unsigned char reencoded[AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD];

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static struct amsp_msgview m; /* 3 KB: not on the stack per call */
	struct amsp_writer w;
	const char *why = NULL;
	long hdr_len = -2;
	size_t i, n;

	if (size >= AMSP_HEADER_LEN) {
		hdr_len = amsp_header_payload_len(data, &why);
		check(hdr_len >= 0 || why != NULL, "header refused without a reason");
	}
	why = NULL;
	if (amsp_decode(data, size, &m, &why) != 0) {
		check(why != NULL, "frame refused without a reason");
		return 0;
	}
	check(hdr_len >= 0 && (size_t)hdr_len == size - AMSP_HEADER_LEN,
	      "decode accepted what the header check refused");
	check(m.nfields <= AMSP_MAX_FIELDS, "too many fields");
	check(strcmp(amsp_msg_name(m.type), "UNKNOWN") != 0, "decoded an unknown type");

	amsp_begin(&w, reencoded, sizeof(reencoded), (enum amsp_msg)m.type);
	for (i = 0; i < m.nfields; i++) {
		const struct amsp_field *f = &m.fields[i];
		enum amsp_tag tag = (enum amsp_tag)f->tag;
		char small[8], *buf;

		n = amsp_count(&m, tag);
		check(n >= 1, "count misses a field");
		check(amsp_get(&m, tag) != NULL, "get misses a field");
		check(amsp_get_nth(&m, tag, n) == NULL, "get_nth past the end");
		for (size_t k = 0; k < n; k++)
			check(amsp_get_nth(&m, tag, k) != NULL, "get_nth misses a field");

		switch (tag_kind(f->tag)) {
		case K_U8:
			amsp_put_u8(&w, tag, amsp_u8(f));
			break;
		case K_U32:
			amsp_put_u32(&w, tag, amsp_u32(f));
			break;
		case K_U64:
			amsp_put_u64(&w, tag, amsp_u64(f));
			break;
		case K_STR:
			buf = malloc((size_t)f->len + 1);
			check(buf != NULL, "out of memory");
			check(amsp_copy_str(f, buf, (size_t)f->len + 1) == 0,
			      "copy_str refused a fit");
			check(strlen(buf) == f->len, "string field with a NUL");
			check(amsp_copy_str(f, small, sizeof(small)) ==
			          (f->len < sizeof(small) ? 0 : -1),
			      "copy_str bound");
			check(amsp_copy_str(f, small, 0) == -1, "copy_str into nothing");
			amsp_put_str(&w, tag, buf);
			free(buf);
			break;
		}
	}
	n = amsp_end(&w);
	check(n == size, "re-encoding changed the length");
	check(memcmp(reencoded, data, size) == 0, "re-encoding changed the bytes");
	return 0;
}
