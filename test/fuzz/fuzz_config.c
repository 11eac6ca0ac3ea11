/*
 * fuzz_config.c - libFuzzer target for the INI parsers: the helper's
 * configuration file (config_load_string, helper/common/config.h) and the AWS
 * shared credentials file (creds_parse_shared_file, helper/worker/creds.h).
 * Input: the file's text (NUL-terminated here; a NUL inside ends it).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "creds.h"

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size);

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "fuzz_config: %s\n", what);
		abort();
	}
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
	static const char *const profiles[] = {"default", "prod"};
	static struct aws_credentials c; /* ~4 KB */
	struct helper_config cfg;
	struct amis_err err;
	char *text;
	int rc;

	text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';

	config_init(&cfg);
	err_clear(&err);
	rc = config_load_string(&cfg, text, &err);
	check(rc == 0 || err.msg[0] != '\0', "configuration refused without a message");
	check(cfg.n_allowed_uids <= CONFIG_MAX_LIST && cfg.n_allow <= CONFIG_MAX_LIST &&
	          cfg.n_volume_map <= CONFIG_MAX_LIST && cfg.n_tags <= CONFIG_MAX_LIST,
	      "list over CONFIG_MAX_LIST");
	check(cfg.freeze_timeout_ms >= 0 && cfg.freeze_timeout_ms <= 24L * 3600 * 1000,
	      "freeze_timeout out of range");
	config_free(&cfg);

	for (size_t i = 0; i < sizeof(profiles) / sizeof(profiles[0]); i++) {
		err_clear(&err);
		rc = creds_parse_shared_file(text, profiles[i], "fuzz", &c, &err);
		check(rc == 0 || err.code[0] != '\0', "credentials file refused without a code");
		creds_clear(&c);
	}
	free(text);
	return 0;
}
