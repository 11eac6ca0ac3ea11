/*
 * aws.h - the helper's view of "this instance in AWS": instance id, region,
 * credentials and the EC2 client, resolved lazily and cached.  Resolving
 * may be slow (IMDS, credential refresh), so it is done in PREPARE and
 * again just before freezing, never while frozen.
 */
#ifndef AMIS_AWS_H
#define AMIS_AWS_H

#include "config.h"
#include "credentials.h"
#include "util.h"

#include <stdbool.h>

struct aws_ctx;
struct ec2_client;
struct imds_client;

struct aws_ctx *aws_ctx_new(const struct helper_config *cfg);
void aws_ctx_free(struct aws_ctx *a);

/*
 * Opens the shared credentials file before privileges are dropped (see
 * creds_provider_pin_file); no network.
 */
int aws_ctx_pin_files(struct aws_ctx *a, struct amis_err *err);
/* Resolves instance id, region, endpoint and credentials (cached). */
int aws_ctx_ready(struct aws_ctx *a, struct amis_err *err);
/*
 * The same without the instance id (unless configured): for commands that
 * only talk to EC2 about backups, which may run where IMDS is not (with
 * [aws] region or AWS_REGION and credentials of their own).
 */
int aws_ctx_ready_anywhere(struct aws_ctx *a, struct amis_err *err);
/* Fresh credentials (refreshed when close to expiry) into *out. */
int aws_ctx_credentials(struct aws_ctx *a, struct aws_credentials *out, struct amis_err *err);

/*
 * After an EC2 error: if it says the credentials were refused as expired
 * or unknown (revoked, rotated early, clock trouble), forget the cached
 * ones so the next aws_ctx_credentials() fetches fresh ones.  Returns true
 * when it did, i.e. when one more attempt is worth making.
 */
bool aws_ctx_credentials_refused(struct aws_ctx *a, const struct amis_err *err);

/*
 * One call on c as the one-shot commands make it (`ami-snapshot`): with
 * fixed credentials (tests) or a's, up to attempts times, retried after
 * throttling and other retryable failures only when that cannot do
 * anything twice (idempotent calls always, the others only when EC2 said
 * it did not carry them out), once more after credentials were refused.
 */
struct ec2_params;
struct _xmlDoc;
int aws_call_retrying(struct aws_ctx *a, const struct aws_credentials *fixed, struct ec2_client *c,
                      const char *action, const struct ec2_params *p, bool idempotent,
                      long timeout_ms, int attempts, struct _xmlDoc **doc, struct amis_err *err);

/*
 * The preflight check (worker_main.c): where the credentials come from
 * (creds.h's source: "environment", "profile:NAME", "imds:ROLE", "config")
 * into src, without keeping or returning the credentials themselves.
 */
int aws_ctx_credentials_source(struct aws_ctx *a, char *src, size_t srcsz, struct amis_err *err);

const char *aws_ctx_instance_id(const struct aws_ctx *a);
const char *aws_ctx_region(const struct aws_ctx *a);
struct ec2_client *aws_ctx_ec2(struct aws_ctx *a);
/* The IMDS client, once aws_ctx_ready made it (the restore command asks it for the zone). */
struct imds_client *aws_ctx_imds(struct aws_ctx *a);

#endif
