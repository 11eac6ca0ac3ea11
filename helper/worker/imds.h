/*
 * imds.h - the EC2 instance metadata service (IMDSv2) client.
 *
 * IMDSv2 only: a session token from "PUT /latest/api/token" goes into every
 * request
 * (https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/configuring-instance-metadata-service.html).
 * We do not fall back to IMDSv1 as the SDKs do: the helper runs as root on
 * the host, where IMDSv2 works whenever IMDS works, and "IMDSv2 required" is
 * what instances should be configured with.
 *
 * IMDS is link-local, so timeouts are short (1 s connect, 2 s per request by
 * default) and there are no retries: the helper resolves everything it needs
 * from IMDS before anything is frozen, and a failure there is reported to
 * the caller at once rather than after a long back-off.
 *
 * Errors: code "ImdsUnavailable" when IMDS cannot be reached (disabled,
 * connection refused, timeout), "ImdsError" when it answered but not with
 * what we need (HTTP error status, malformed document).
 */
#ifndef AMIS_IMDS_H
#define AMIS_IMDS_H

#include "util.h"

#include <stddef.h>

/*
 * Where settings from the environment come from.  NULL everywhere means the
 * process environment (getenv); unit tests pass a fake one instead of
 * calling setenv, which would race with other threads reading it.
 * (Generic enough for util.h; lives here because imds.h is the lowest
 * module that reads the environment.)
 */
struct amis_env {
	const char *(*get)(void *ctx, const char *name);
	void *ctx;
};

/* The variable's value, or NULL when it is unset or empty. */
const char *amis_env_get(const struct amis_env *env, const char *name);

#define IMDS_DEFAULT_ENDPOINT "http://169.254.169.254"
#define IMDS_DEFAULT_ENDPOINT_IPV6 "http://[fd00:ec2::254]"
#define IMDS_DEFAULT_CONNECT_TIMEOUT_MS 1000
#define IMDS_DEFAULT_TIMEOUT_MS 2000
#define IMDS_DEFAULT_TOKEN_TTL_S 21600 /* 6 h, the maximum */

struct imds_client;

/*
 * endpoint: "http://host[:port]" without a path; NULL means
 * AWS_EC2_METADATA_SERVICE_ENDPOINT, else (AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE
 * = IPv6 ? the IPv6 address :) http://169.254.169.254.
 * AWS_EC2_METADATA_DISABLED=true makes every request fail with
 * ImdsUnavailable without touching the network.  An invalid endpoint is
 * reported by the first request.  Returns NULL only if libcurl cannot make
 * a handle.
 */
struct imds_client *imds_client_new(const char *endpoint);
/* The same with settings read from env (NULL = process environment). */
struct imds_client *imds_client_new_env(const char *endpoint, const struct amis_env *env);
void imds_client_free(struct imds_client *c);

/* The endpoint in use (for messages); never NULL. */
const char *imds_endpoint(const struct imds_client *c);

/* Defaults for requests made with timeout_ms == 0; values <= 0 keep the current one. */
void imds_set_timeouts(struct imds_client *c, long connect_timeout_ms, long timeout_ms);
/* Session token lifetime to ask for (1..21600 s); tests use short ones. */
void imds_set_token_ttl(struct imds_client *c, int seconds);

/*
 * GET endpoint + path (path starts with "/latest/...") into out (reset
 * first).  Fetches or renews the session token as needed; on 401 fetches a
 * new token once and retries.  timeout_ms bounds each HTTP request (0 = the
 * client default).  A non-200 status is an ImdsError naming path and status.
 */
int imds_get(struct imds_client *c, const char *path, long timeout_ms, struct strbuf *out,
             struct amis_err *err);

/* Fields of the instance identity document that the helper uses. */
struct imds_identity {
	char instance_id[32];       /* i-0123456789abcdef0 */
	char region[32];            /* us-east-1 */
	char availability_zone[40]; /* us-east-1a */
	char account_id[16];        /* 123456789012; empty from the fallback */
	char architecture[16];      /* x86_64, arm64; empty from the fallback */
	char image_id[32];          /* ami-...; empty from the fallback */
	char instance_type[32];     /* empty from the fallback */
};

/*
 * From /latest/dynamic/instance-identity/document; if IMDS answers but the
 * document is missing or malformed, from meta-data/instance-id,
 * meta-data/placement/region and meta-data/placement/availability-zone.
 * Not retried when IMDS is unreachable.
 */
int imds_get_identity(struct imds_client *c, struct imds_identity *id, struct amis_err *err);

/*
 * Parses an identity document (pure; for tests).  Requires instanceId and
 * region in their AWS formats, the other fields are optional.
 */
int imds_parse_identity(const char *json, size_t len, struct imds_identity *id,
                        struct amis_err *err);

/* The instance profile's role name (first line of iam/security-credentials/). */
int imds_get_role_name(struct imds_client *c, char *role, size_t rolesz, struct amis_err *err);

/*
 * The role's credentials JSON from iam/security-credentials/<role> into out
 * (secret: sb_free() zeroes it).  Parse it with creds_parse_imds_json().
 */
int imds_get_role_credentials_json(struct imds_client *c, const char *role, struct strbuf *out,
                                   struct amis_err *err);

/* Validators shared with creds.c: AWS's formats, so values are safe in URLs. */
bool imds_valid_region(const char *s);
bool imds_valid_instance_id(const char *s);
bool imds_valid_role_name(const char *s);

#endif
