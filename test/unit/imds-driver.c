/*
 * imds-driver.c - runs imds.c and creds.c against a fake IMDS for
 * test_imds.py, which compiles it.
 *
 *   imds-driver [--endpoint URL] [--timeout-ms N] [--connect-timeout-ms N]
 *               [--token-ttl S] COMMAND...
 *
 * Commands run in order in one process (so the token cache and the
 * credentials cache carry over), each printing one JSON line with "cmd",
 * "ok", "elapsed_ms" and either results or "code"/"msg":
 *   get PATH      imds_get()
 *   identity      imds_get_identity()
 *   role          imds_get_role_name()
 *   region        creds_resolve_region() from the process environment
 *   creds NOW     creds_get() at time NOW (epoch seconds); prints the access
 *                 key id, source, expiration and token length, not secrets
 *   sleep MS
 * Without --endpoint the client reads AWS_EC2_METADATA_SERVICE_ENDPOINT.
 * Exit status 0 unless the command line is wrong.
 */
#include "creds.h"
#include "imds.h"
#include "log.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void usage(void)
{
	fputs("usage: imds-driver [--endpoint URL] [--timeout-ms N] [--connect-timeout-ms N] "
	      "[--token-ttl S] COMMAND...\n",
	      stderr);
	exit(2);
}

static void emit(struct json_object *o, const char *cmd, long long t0, int rc,
                 const struct amis_err *err)
{
	json_object_object_add(o, "cmd", json_object_new_string(cmd));
	json_object_object_add(o, "ok", json_object_new_boolean(rc == 0));
	json_object_object_add(o, "elapsed_ms", json_object_new_int64((mono_usec() - t0) / 1000));
	if (rc != 0) {
		json_object_object_add(o, "code", json_object_new_string(err->code));
		json_object_object_add(o, "msg", json_object_new_string(err->msg));
	}
	puts(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	fflush(stdout);
	json_object_put(o);
}

static void add_str(struct json_object *o, const char *key, const char *value)
{
	json_object_object_add(o, key, json_object_new_string(value));
}

int main(int argc, char **argv)
{
	const char *endpoint = NULL;
	long timeout_ms = 0, connect_timeout_ms = 0;
	int token_ttl = 0, i = 1;
	struct imds_client *imds;
	struct creds_provider *provider = NULL;

	log_set_level(LOG_LVL_DEBUG);
	for (; i < argc && strncmp(argv[i], "--", 2) == 0; i += 2) {
		if (i + 1 >= argc)
			usage();
		if (strcmp(argv[i], "--endpoint") == 0)
			endpoint = argv[i + 1];
		else if (strcmp(argv[i], "--timeout-ms") == 0)
			timeout_ms = atol(argv[i + 1]);
		else if (strcmp(argv[i], "--connect-timeout-ms") == 0)
			connect_timeout_ms = atol(argv[i + 1]);
		else if (strcmp(argv[i], "--token-ttl") == 0)
			token_ttl = atoi(argv[i + 1]);
		else
			usage();
	}
	imds = imds_client_new(endpoint);
	if (!imds) {
		fputs("imds-driver: could not create the IMDS client\n", stderr);
		return 1;
	}
	imds_set_timeouts(imds, connect_timeout_ms, timeout_ms);
	if (token_ttl)
		imds_set_token_ttl(imds, token_ttl);

	while (i < argc) {
		const char *cmd = argv[i++];
		const char *arg = NULL;
		struct json_object *o = json_object_new_object();
		struct amis_err err;
		long long t0;
		int rc;

		err_clear(&err);
		if (strcmp(cmd, "get") == 0 || strcmp(cmd, "creds") == 0 ||
		    strcmp(cmd, "sleep") == 0) {
			if (i >= argc)
				usage();
			arg = argv[i++];
			add_str(o, "arg", arg);
		}
		t0 = mono_usec();
		if (strcmp(cmd, "get") == 0) {
			struct strbuf sb;

			sb_init(&sb);
			rc = imds_get(imds, arg, 0, &sb, &err);
			if (rc == 0)
				add_str(o, "body", sb_str(&sb));
			sb_free(&sb);
		} else if (strcmp(cmd, "identity") == 0) {
			struct imds_identity id;

			rc = imds_get_identity(imds, &id, &err);
			if (rc == 0) {
				add_str(o, "instance_id", id.instance_id);
				add_str(o, "region", id.region);
				add_str(o, "availability_zone", id.availability_zone);
				add_str(o, "account_id", id.account_id);
				add_str(o, "architecture", id.architecture);
			}
		} else if (strcmp(cmd, "role") == 0) {
			char role[80];

			rc = imds_get_role_name(imds, role, sizeof(role), &err);
			if (rc == 0)
				add_str(o, "role", role);
		} else if (strcmp(cmd, "region") == 0) {
			char region[32];

			rc = creds_resolve_region(NULL, NULL, imds, region, sizeof(region), &err);
			if (rc == 0)
				add_str(o, "region", region);
		} else if (strcmp(cmd, "creds") == 0) {
			struct aws_credentials c;

			if (!provider) {
				struct creds_config cfg = {.imds = imds};

				provider = creds_provider_new(&cfg);
			}
			rc = creds_get(provider, (time_t)atoll(arg), &c, &err);
			if (rc == 0) {
				add_str(o, "access_key_id", c.access_key_id);
				add_str(o, "source", c.source);
				json_object_object_add(o, "expiration",
				                       json_object_new_int64(c.expiration));
				json_object_object_add(
				    o, "token_len",
				    json_object_new_int((int)strlen(c.session_token)));
				json_object_object_add(
				    o, "secret_len",
				    json_object_new_int((int)strlen(c.secret_access_key)));
			}
			creds_clear(&c);
		} else if (strcmp(cmd, "sleep") == 0) {
			long ms = atol(arg);
			struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

			nanosleep(&ts, NULL);
			rc = 0;
		} else {
			json_object_put(o);
			usage();
			return 2;
		}
		emit(o, cmd, t0, rc, &err);
	}
	creds_provider_free(provider);
	imds_client_free(imds);
	return 0;
}
