/*
 * lc_aws.c - the lifecycle subcommands' EC2 transport (see lifecycle.h).
 *
 * The home region, the endpoint and the credentials are the helper's
 * (worker/aws.h: [aws], the environment, IMDS).  A call in another region
 * goes to that region's endpoint (creds_resolve_ec2_endpoint: the
 * configured endpoint or AWS_ENDPOINT_URL_EC2 when set, which then serves
 * every region, else ec2.<region>.amazonaws.com) and is signed for that
 * region: EC2 takes the region from the SigV4 credential scope.
 */
#include "lifecycle.h"

#include "aws.h"
#include "config.h"
#include "creds.h"
#include "ec2.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LC_EC2_TIMEOUT_MS 30000L
#define LC_EC2_ATTEMPTS 5
#define LC_MAX_REGIONS 16
/* EC2 accepts a CopySnapshot PresignedUrl signed within this long. */
#define LC_PRESIGN_EXPIRES_S 3600L

struct lc_region_client {
	char region[32];
	struct ec2_client *c;
};

struct lc_aws {
	const struct helper_config *cfg;
	struct aws_ctx *ctx; /* NULL in tests */
	char static_endpoint[256];
	char home[32];
	struct aws_credentials fixed; /* tests */
	bool has_fixed;
	size_t nclients;
	struct lc_region_client clients[LC_MAX_REGIONS];
	struct ec2_transport t;
};

static int lc_call(void *ctx, const char *region, const char *action, const struct ec2_params *p,
                   bool idempotent, xmlDocPtr *doc, struct amis_err *err);
static int lc_presign(void *ctx, const char *region, const char *action, const struct ec2_params *p,
                      struct strbuf *url, struct amis_err *err);

static struct lc_aws *alloc(void)
{
	struct lc_aws *a = xcalloc(1, sizeof(*a));

	a->t.call = lc_call;
	a->t.presign = lc_presign;
	a->t.ctx = a;
	return a;
}

struct lc_aws *lc_aws_new(const struct helper_config *cfg)
{
	struct lc_aws *a = alloc();

	a->cfg = cfg;
	a->ctx = aws_ctx_new(cfg);
	return a;
}

struct lc_aws *lc_aws_new_static(const char *endpoint, const char *home_region, const char *akid,
                                 const char *secret)
{
	struct lc_aws *a = alloc();

	snprintf(a->static_endpoint, sizeof(a->static_endpoint), "%s", endpoint);
	snprintf(a->home, sizeof(a->home), "%s", home_region);
	snprintf(a->fixed.access_key_id, sizeof(a->fixed.access_key_id), "%s", akid);
	snprintf(a->fixed.secret_access_key, sizeof(a->fixed.secret_access_key), "%s", secret);
	snprintf(a->fixed.source, sizeof(a->fixed.source), "test");
	a->has_fixed = true;
	return a;
}

void lc_aws_free(struct lc_aws *a)
{
	size_t i;

	if (!a)
		return;
	for (i = 0; i < a->nclients; i++)
		ec2_client_free(a->clients[i].c);
	if (a->ctx)
		aws_ctx_free(a->ctx);
	secure_zero(&a->fixed, sizeof(a->fixed));
	free(a);
}

int lc_aws_pin(struct lc_aws *a, struct amis_err *err)
{
	return a->ctx ? aws_ctx_pin_files(a->ctx, err) : 0;
}

int lc_aws_ready(struct lc_aws *a, struct amis_err *err)
{
	if (a->has_fixed)
		return 0;
	if (aws_ctx_ready_anywhere(a->ctx, err) != 0)
		return -1;
	snprintf(a->home, sizeof(a->home), "%s", aws_ctx_region(a->ctx));
	return 0;
}

const char *lc_aws_region(const struct lc_aws *a)
{
	return a->home;
}

const struct ec2_transport *lc_aws_transport(struct lc_aws *a)
{
	return &a->t;
}

/* The client of region, made on first use. */
static struct ec2_client *client_for(struct lc_aws *a, const char *region, struct amis_err *err)
{
	char url[512];
	size_t i;

	for (i = 0; i < a->nclients; i++) {
		if (strcmp(a->clients[i].region, region) == 0)
			return a->clients[i].c;
	}
	if (!config_region_valid(region)) {
		err_set(err, AMIS_E_INVALID_ARGUMENT, "\"%.40s\" is not a region name", region);
		return NULL;
	}
	if (a->nclients == LC_MAX_REGIONS) {
		err_set(err, AMIS_E_INVALID_ARGUMENT, "more than %d regions", LC_MAX_REGIONS);
		return NULL;
	}
	if (a->has_fixed)
		snprintf(url, sizeof(url), "%s", a->static_endpoint);
	else if (creds_resolve_ec2_endpoint(NULL, a->cfg->ec2_endpoint, region, url, sizeof(url),
	                                    err) != 0)
		return NULL;
	a->clients[a->nclients].c = ec2_client_new(url, region);
	if (!a->clients[a->nclients].c) {
		err_set(err, AMIS_E_INVALID_ENDPOINT, "invalid EC2 endpoint \"%s\"", url);
		return NULL;
	}
	snprintf(a->clients[a->nclients].region, sizeof(a->clients[0].region), "%s", region);
	return a->clients[a->nclients++].c;
}

static int credentials(struct lc_aws *a, struct aws_credentials *cr, struct amis_err *err)
{
	if (a->has_fixed) {
		*cr = a->fixed;
		return 0;
	}
	if (aws_ctx_credentials(a->ctx, cr, err) != 0)
		return err_prefix(err, "no AWS credentials");
	return 0;
}

/* One call in region, with the one-shot commands' retries (aws_call_retrying). */
static int lc_call(void *ctx, const char *region, const char *action, const struct ec2_params *p,
                   bool idempotent, xmlDocPtr *doc, struct amis_err *err)
{
	struct lc_aws *a = ctx;
	struct ec2_client *c = client_for(a, region, err);

	if (!c)
		return -1;
	return aws_call_retrying(a->ctx, a->has_fixed ? &a->fixed : NULL, c, action, p, idempotent,
	                         LC_EC2_TIMEOUT_MS, LC_EC2_ATTEMPTS, doc, err);
}

static int lc_presign(void *ctx, const char *region, const char *action, const struct ec2_params *p,
                      struct strbuf *url, struct amis_err *err)
{
	struct lc_aws *a = ctx;
	struct ec2_client *c = client_for(a, region, err);
	struct aws_credentials cr;
	int rc;

	if (!c || credentials(a, &cr, err) != 0)
		return -1;
	rc = ec2_presign(c, &cr, action, p, LC_PRESIGN_EXPIRES_S, 0, url, err);
	creds_clear(&cr);
	return rc;
}
