/*
 * sigv4-vector.c - command-line access to our signer and form encoder, so
 * that test_sigv4_botocore.py can compare them with botocore.  Not a test by
 * itself (the Makefile builds only test_*.c): the Python test compiles it.
 *
 *   sigv4-vector sign METHOD HOST PATH QUERY CONTENT_TYPE REGION SERVICE EPOCH < body
 *	CONTENT_TYPE "-" means none.  Credentials come from the environment:
 *	AMIS_TEST_AKID, AMIS_TEST_SECRET, AMIS_TEST_TOKEN (optional).
 *	Prints "name<TAB>value" lines: authorization, x-amz-date,
 *	x-amz-security-token (if any), canonical-request-hex, string-to-sign-hex.
 *   sigv4-vector form ACTION [NAME VALUE]...
 *	Prints the form body ec2_form_encode() builds.
 *   sigv4-vector presign HOST REGION SERVICE EPOCH EXPIRES [NAME VALUE]...
 *	Prints the query string sigv4_presign() makes (credentials as for sign).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ec2.h"
#include "sigv4.h"

static void put_hex(const char *name, const struct strbuf *sb)
{
	size_t i;

	printf("%s\t", name);
	for (i = 0; i < sb->len; i++)
		printf("%02x", (unsigned char)sb->data[i]);
	printf("\n");
}

static int copy_env(const char *name, char *dst, size_t dstsz, int required)
{
	const char *v = getenv(name);

	if (!v) {
		if (required)
			fprintf(stderr, "sigv4-vector: %s is not set\n", name);
		return required ? -1 : 0;
	}
	if (strlcpy_checked(dst, v, dstsz) < 0) {
		fprintf(stderr, "sigv4-vector: %s is too long\n", name);
		return -1;
	}
	return 0;
}

/* The credentials from AMIS_TEST_AKID, AMIS_TEST_SECRET and AMIS_TEST_TOKEN. */
static int load_creds(struct aws_credentials *creds)
{
	memset(creds, 0, sizeof(*creds));
	if (copy_env("AMIS_TEST_AKID", creds->access_key_id, sizeof(creds->access_key_id), 1) < 0 ||
	    copy_env("AMIS_TEST_SECRET", creds->secret_access_key, sizeof(creds->secret_access_key),
	             1) < 0 ||
	    copy_env("AMIS_TEST_TOKEN", creds->session_token, sizeof(creds->session_token), 0) < 0)
		return -1;
	return 0;
}

static int cmd_sign(char **argv)
{
	struct aws_credentials creds;
	struct sigv4_request req;
	struct sigv4_result res;
	struct sigv4_debug dbg;
	struct amis_err err;
	struct strbuf body;
	char buf[4096];
	size_t n;

	if (load_creds(&creds) < 0)
		return 2;
	sb_init(&body);
	while ((n = fread(buf, 1, sizeof(buf), stdin)) > 0)
		sb_append(&body, buf, n);

	req = (struct sigv4_request){
	    .method = argv[0],
	    .host = argv[1],
	    .path = argv[2],
	    .query = argv[3],
	    .content_type = strcmp(argv[4], "-") == 0 ? NULL : argv[4],
	    .body = body.data,
	    .body_len = body.len,
	    .region = argv[5],
	    .service = argv[6],
	    .now = (time_t)strtoll(argv[7], NULL, 10),
	};
	sigv4_debug_init(&dbg);
	if (sigv4_sign(&req, &creds, &res, &dbg, &err) < 0) {
		fprintf(stderr, "sigv4-vector: %s: %s\n", err.code, err.msg);
		return 1;
	}
	printf("authorization\t%s\n", res.authorization);
	printf("x-amz-date\t%s\n", res.amz_date);
	if (res.security_token)
		printf("x-amz-security-token\t%s\n", res.security_token);
	put_hex("canonical-request-hex", &dbg.canonical_request);
	put_hex("string-to-sign-hex", &dbg.string_to_sign);
	sigv4_debug_free(&dbg);
	sb_free(&body);
	return 0;
}

static int cmd_form(int argc, char **argv)
{
	struct ec2_params p;
	struct strbuf sb;
	int i;

	if (argc < 1 || (argc - 1) % 2) {
		fprintf(stderr, "sigv4-vector form: ACTION [NAME VALUE]...\n");
		return 2;
	}
	ec2_params_init(&p);
	for (i = 1; i + 1 < argc; i += 2)
		ec2_params_add(&p, argv[i], argv[i + 1]);
	sb_init(&sb);
	ec2_form_encode(argv[0], &p, &sb);
	fwrite(sb.data, 1, sb.len, stdout);
	sb_free(&sb);
	ec2_params_free(&p);
	return 0;
}

static int cmd_presign(int argc, char **argv)
{
	struct aws_credentials creds;
	struct sigv4_presign_request req;
	struct amis_err err;
	struct strbuf q;
	const char *names[64], *values[64];
	size_t n = 0;
	int i;

	if (argc < 5 || (argc - 5) % 2 || (argc - 5) / 2 > 64) {
		fprintf(stderr, "sigv4-vector presign: HOST REGION SERVICE EPOCH EXPIRES "
		                "[NAME VALUE]...\n");
		return 2;
	}
	if (load_creds(&creds) < 0)
		return 2;
	for (i = 5; i + 1 < argc; i += 2) {
		names[n] = argv[i];
		values[n++] = argv[i + 1];
	}
	req = (struct sigv4_presign_request){
	    .host = argv[0],
	    .path = "/",
	    .names = names,
	    .values = values,
	    .nparams = n,
	    .region = argv[1],
	    .service = argv[2],
	    .now = (time_t)strtoll(argv[3], NULL, 10),
	    .expires_s = strtol(argv[4], NULL, 10),
	};
	sb_init(&q);
	if (sigv4_presign(&req, &creds, &q, NULL, &err) < 0) {
		fprintf(stderr, "sigv4-vector: %s: %s\n", err.code, err.msg);
		return 1;
	}
	printf("%s\n", sb_str(&q));
	sb_free(&q);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc >= 7 && strcmp(argv[1], "presign") == 0)
		return cmd_presign(argc - 2, argv + 2);
	if (argc == 10 && strcmp(argv[1], "sign") == 0)
		return cmd_sign(argv + 2);
	if (argc >= 3 && strcmp(argv[1], "form") == 0)
		return cmd_form(argc - 2, argv + 2);
	fprintf(stderr, "usage: sigv4-vector sign METHOD HOST PATH QUERY CONTENT_TYPE REGION "
	                "SERVICE EPOCH < body\n"
	                "       sigv4-vector form ACTION [NAME VALUE]...\n");
	return 2;
}
