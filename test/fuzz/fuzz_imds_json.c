/*
 * fuzz_imds_json.c - libFuzzer target for the IMDS JSON parsers
 * (helper/worker/creds.h, helper/worker/imds.h): role credentials and the instance
 * identity document.  Input: the HTTP body, given to both.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "creds.h"
#include "imds.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_imds_json: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static struct aws_credentials c; /* ~4 KB */
	struct imds_identity id;
	struct amis_err err;
	int rc;

	err_clear(&err);
	rc = creds_parse_imds_json((const char *)data, size, &c, &err);
	check(rc == 0 || err.code[0] != '\0', "credentials refused without a code");
	if (rc == 0) {
		check(c.access_key_id[0] != '\0' && c.secret_access_key[0] != '\0',
		      "credentials accepted without a key");
		check(strcmp(c.source, "imds") == 0, "source is not imds");
	}
	creds_clear(&c);

	err_clear(&err);
	rc = imds_parse_identity((const char *)data, size, &id, &err);
	check(rc == 0 || err.code[0] != '\0', "identity refused without a code");
	if (rc == 0)
		check(imds_valid_instance_id(id.instance_id) && imds_valid_region(id.region),
		      "identity accepted with a bad instance id or region");
	return 0;
}
