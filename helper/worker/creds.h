/*
 * creds.h - the AWS credential chain, region and EC2 endpoint resolution.
 *
 * The chain follows the SDKs' default order (AWS SDKs and Tools Reference
 * Guide, "Standardized credential providers"), restricted to what a daemon
 * on an EC2 instance needs:
 *   1. static credentials from the helper's configuration, if given;
 *   2. AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN;
 *   3. the profile AWS_PROFILE (default "default") of the shared credentials
 *      file (AWS_SHARED_CREDENTIALS_FILE, default ~/.aws/credentials);
 *   4. the instance profile role from IMDS.
 * Profiles of ~/.aws/config (role_arn, sso_*, credential_process) are not
 * supported.
 *
 * Error codes: "NoCredentials" (nothing in the chain), "PartialCredentials"
 * (an access key without its secret), "ProfileNotFound", "CredentialsFile",
 * "MalformedCredentials", "ExpiredCredentials", plus ImdsUnavailable /
 * ImdsError from imds.h.  No message ever contains a secret key or token.
 */
#ifndef AMIS_CREDS_H
#define AMIS_CREDS_H

#include "credentials.h"
#include "imds.h"
#include "util.h"

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Refresh expiring credentials this long before their Expiration. */
#define CREDS_REFRESH_WINDOW_S 300
/* ...but, if IMDS keeps handing out near-expiry ones, not more often than this. */
#define CREDS_MIN_REFRESH_INTERVAL_S 60

struct creds_config {
	/* Optional static credentials (helper configuration). */
	const char *access_key_id;
	const char *secret_access_key;
	const char *session_token;
	/* NULL: AWS_PROFILE, else "default". */
	const char *profile;
	/* NULL: AWS_SHARED_CREDENTIALS_FILE, else $HOME/.aws/credentials. */
	const char *shared_credentials_file;
	/* Environment to read (NULL: the process environment). */
	const struct amis_env *env;
	/* IMDS client to use, not owned; NULL: the provider makes its own. */
	struct imds_client *imds;
	/* Skip the IMDS step (tests, non-EC2 hosts). */
	bool no_imds;
};

struct creds_provider;

/* Copies everything it needs from cfg; cfg->imds must outlive the provider. */
struct creds_provider *creds_provider_new(const struct creds_config *cfg);
/*
 * Opens the shared credentials file now, resolving its path as the current
 * user (HOME), and reads it through that descriptor from then on: the EC2
 * worker calls it as root, just before dropping privileges.  A file that does
 * not exist is remembered as missing; one that cannot be opened is an error.
 * A file replaced later (rename) is not seen until the helper restarts.
 */
int creds_provider_pin_file(struct creds_provider *p, struct amis_err *err);
/* Zeroes the cached credentials. */
void creds_provider_free(struct creds_provider *p);

/*
 * Current credentials into *out.  The first call walks the chain; later
 * calls return the cached result until it is within CREDS_REFRESH_WINDOW_S
 * of its expiration, and then fetch the same source again.  If that refresh
 * fails while the cached credentials have not yet expired, they are
 * returned (with a warning logged), as the SDKs do; after that the error
 * is ExpiredCredentials, with the refresh failure in the message.  now:
 * time(NULL) in production, any value in tests.
 */
int creds_get(struct creds_provider *p, time_t now, struct aws_credentials *out,
              struct amis_err *err);
/* Forget the cache, e.g. after EC2 rejected the credentials (ExpiredToken). */
void creds_invalidate(struct creds_provider *p);

/* Zeroes the whole struct. */
void creds_clear(struct aws_credentials *c);

/* Whether credentials expiring at exp should be fetched again at now. */
bool creds_need_refresh(const struct aws_credentials *c, time_t now);

/*
 * ISO 8601 UTC timestamp as IMDS and STS write it, "2026-11-26T12:34:56Z",
 * optionally with fractional seconds or a "+hh:mm"/"-hh:mm" offset instead
 * of "Z".  Calendar-checked.  Returns 0 and *out, or -1.
 */
int creds_parse_iso8601(const char *s, time_t *out);

/*
 * Parses IMDS role credentials JSON (pure):
 *   {"Code":"Success","AccessKeyId":"...","SecretAccessKey":"...",
 *    "Token":"...","Expiration":"2026-11-26T12:34:56Z", ...}
 * Fails with MalformedCredentials naming the missing or bad field, or
 * ImdsError if Code is not "Success".  source is set to "imds".
 */
int creds_parse_imds_json(const char *json, size_t len, struct aws_credentials *out,
                          struct amis_err *err);

/*
 * Finds profile in the text of a shared credentials file (pure; INI, keys
 * aws_access_key_id, aws_secret_access_key, optional aws_session_token,
 * case-insensitive; "#" and ";" comment lines).  origin names the file in
 * messages.  ProfileNotFound if the section is absent or has no
 * aws_access_key_id; PartialCredentials if the secret is missing;
 * CredentialsFile for syntax errors.  source is set to "profile:NAME".
 */
int creds_parse_shared_file(const char *text, const char *profile, const char *origin,
                            struct aws_credentials *out, struct amis_err *err);

/*
 * Region: configured (non-NULL), else AWS_REGION, else AWS_DEFAULT_REGION,
 * else IMDS's identity document (imds may be NULL: then an error).
 */
int creds_resolve_region(const struct amis_env *env, const char *configured,
                         struct imds_client *imds, char *region, size_t regionsz,
                         struct amis_err *err);

/*
 * EC2 endpoint URL (no trailing slash): configured (non-NULL), else
 * AWS_ENDPOINT_URL_EC2, else AWS_ENDPOINT_URL (both ignored when
 * AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true), else
 * https://ec2.REGION.amazonaws.com (.com.cn for the China regions).
 */
int creds_resolve_ec2_endpoint(const struct amis_env *env, const char *configured,
                               const char *region, char *url, size_t urlsz, struct amis_err *err);

#endif
