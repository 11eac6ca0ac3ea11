/*
 * fuzz_restore.c - libFuzzer target for what `ami-snapshot restore` parses
 * (helper/cli/restore.h): EC2's DescribeSnapshots (with tags, then grouped
 * into sets and checked, the backup label decoded), DescribeImages,
 * DescribeVolumes and CreateVolume answers, a tablespace map moved under
 * --root, and base64.
 *
 * Input: one selector byte (its low 3 bits choose), then the body.
 * Everything returned is freed, so LeakSanitizer checks the error paths too.
 */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ec2.h"
#include "restore.h"
#include "xml.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void check_err(int rc, const struct amis_err *err)
{
	if (rc != 0 && (err->code[0] == '\0' || memchr(err->msg, '\0', sizeof(err->msg)) == NULL)) {
		fprintf(stderr, "fuzz_restore: failure without a code\n");
		abort();
	}
}

static void snapshots(xmlDocPtr doc)
{
	struct rs_check_opts o = {false, true, true, 15};
	struct rs_snapshot_list l;
	const struct rs_set *set;
	struct rs_sets sets;
	struct amis_err err;
	struct strbuf sb;
	char tok[256], which[96];
	bool found;
	size_t i;
	int rc;

	rs_list_init(&l);
	err_clear(&err);
	rc = rs_parse_snapshots(doc, &l, tok, sizeof(tok), &err);
	check_err(rc, &err);
	rs_group(&l, &sets);
	sb_init(&sb);
	for (i = 0; i < l.n; i++)
		rs_decode_chunks(&l.items[i], RS_TAG_PREFIX "backup-label-", &sb, &found, &err);
	if (rs_choose(&sets, true, &set, &err) == RS_EXIT_OK) {
		rs_check_set(set, &o, &err);
		rs_set_completed(set, which, sizeof(which));
	}
	sb_free(&sb);
	rs_sets_free(&sets);
	rs_list_free(&l);
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static const char *const actions[] = {"DescribeSnapshots", "DescribeImages",
	                                      "DescribeVolumes", "CreateVolume"};
	static struct rs_image img;
	struct rs_volume_state vols[8];
	struct rs_relocation rel[] = {{"/var/lib/postgresql", "/restore/var/lib/postgresql"},
	                              {"/", "/r"}};
	const char *body;
	struct amis_err err;
	struct strbuf sb;
	xmlDocPtr doc = NULL;
	unsigned sel;
	char *text, id[32];
	size_t len, n;
	int rc;

	if (size < 1)
		return 0;
	sel = data[0] & 7;
	body = (const char *)data + 1;
	len = size - 1;
	err_clear(&err);
	if (sel < 4) {
		rc = ec2_parse_response(actions[sel], 200, body, len, NULL, false, &doc, &err);
		check_err(rc, &err);
		if (rc != 0 || !doc)
			return 0;
		err_clear(&err);
		switch (sel) {
		case 0:
			snapshots(doc);
			break;
		case 1:
			check_err(rs_parse_image(doc, "ami-0123456789abcdef0", &img, &err), &err);
			break;
		case 2:
			check_err(rs_parse_volumes(doc, vols, 8, &n, &err), &err);
			break;
		default:
			check_err(rs_parse_volume_id(doc, id, sizeof(id), &err), &err);
			break;
		}
		xml_free(doc);
		return 0;
	}
	sb_init(&sb);
	if (sel == 4) {
		check_err(rs_relocate_map(body, len, rel, sel & 1 ? 2 : 1, &sb, &err), &err);
	} else {
		text = malloc(len + 1);
		if (!text)
			abort();
		memcpy(text, body, len);
		text[len] = '\0';
		if (sel == 5)
			rs_base64_decode(text, &sb);
		else
			rs_safe_abs_path(text);
		free(text);
	}
	sb_free(&sb);
	return 0;
}
