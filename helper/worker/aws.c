/*
 * aws.c - see aws.h.
 */
#include "aws.h"
#include "channel.h"
#include "creds.h"
#include "ec2.h"
#include "imds.h"
#include "log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct aws_ctx {
	const struct helper_config *cfg;
	struct imds_client *imds;
	struct creds_provider *creds;
	struct ec2_client *ec2;
	char region[32];
	char instance_id[32];
	char endpoint[512];
	bool ready;
	bool need_instance; /* aws_ctx_ready: the instance id too */
};

struct aws_ctx *aws_ctx_new(const struct helper_config *cfg)
{
	struct aws_ctx *a = xcalloc(1, sizeof(*a));

	a->cfg = cfg;
	return a;
}

void aws_ctx_free(struct aws_ctx *a)
{
	if (!a)
		return;
	if (a->ec2)
		ec2_client_free(a->ec2);
	if (a->creds)
		creds_provider_free(a->creds);
	if (a->imds)
		imds_client_free(a->imds);
	free(a);
}

/* The IMDS client and the credential provider; no network yet. */
static int make_clients(struct aws_ctx *a, struct amis_err *err)
{
	const struct helper_config *cfg = a->cfg;
	struct creds_config cc;

	if (!a->imds)
		a->imds = imds_client_new(cfg->imds_endpoint);
	if (!a->imds)
		return err_set(err, AMIS_E_IMDS_UNAVAILABLE, "cannot create the IMDS client");
	memset(&cc, 0, sizeof(cc));
	cc.profile = cfg->profile;
	cc.shared_credentials_file = cfg->credentials_file;
	cc.imds = a->imds;
	if (!a->creds)
		a->creds = creds_provider_new(&cc);
	return 0;
}

int aws_ctx_pin_files(struct aws_ctx *a, struct amis_err *err)
{
	if (make_clients(a, err) != 0)
		return -1;
	return creds_provider_pin_file(a->creds, err);
}

static int ready(struct aws_ctx *a, struct amis_err *err);

int aws_ctx_ready(struct aws_ctx *a, struct amis_err *err)
{
	a->need_instance = true;
	/* Made ready without the instance id before: that is still to find. */
	if (a->ready && !a->instance_id[0])
		a->ready = false;
	return ready(a, err);
}

int aws_ctx_ready_anywhere(struct aws_ctx *a, struct amis_err *err)
{
	return ready(a, err);
}

static int ready(struct aws_ctx *a, struct amis_err *err)
{
	const struct helper_config *cfg = a->cfg;
	struct aws_credentials cr;

	if (a->ready)
		return 0;
	if (make_clients(a, err) != 0)
		return -1;

	if (creds_resolve_region(NULL, cfg->region, a->imds, a->region, sizeof(a->region), err) !=
	    0)
		return err_prefix(err, "cannot determine the AWS region");
	if (cfg->instance_id) {
		if (strlcpy_checked(a->instance_id, cfg->instance_id, sizeof(a->instance_id)) != 0)
			return err_set(err, AMIS_E_HELPER_CONFIG, "instance_id is too long");
	} else if (a->need_instance) {
		struct imds_identity id;

		if (imds_get_identity(a->imds, &id, err) != 0)
			return err_prefix(err, "cannot determine the instance id from IMDS");
		snprintf(a->instance_id, sizeof(a->instance_id), "%s", id.instance_id);
	}
	if (creds_resolve_ec2_endpoint(NULL, cfg->ec2_endpoint, a->region, a->endpoint,
	                               sizeof(a->endpoint), err) != 0)
		return -1;

	/* Fail in PREPARE, not later, when there are no credentials at all. */
	if (creds_get(a->creds, time(NULL), &cr, err) != 0)
		return err_prefix(err, "no AWS credentials");
	log_info("AWS: instance %s, region %s, endpoint %s, credentials from %s",
	         a->instance_id[0] ? a->instance_id : "(not needed)", a->region, a->endpoint,
	         cr.source);
	creds_clear(&cr);
	if (!a->ec2)
		a->ec2 = ec2_client_new(a->endpoint, a->region);
	if (!a->ec2)
		return err_set(err, AMIS_E_HELPER_CONFIG, "invalid EC2 endpoint \"%s\"",
		               a->endpoint);
	/*
	 * A connection the helper counts as warm (EC2 answered on it less than
	 * rewarm_after ago: no DryRun before the freeze) is one libcurl reuses,
	 * and no older one is: the call made while frozen never goes on a
	 * connection left idle since an earlier call.
	 */
	if (cfg->rewarm_after_ms > 0)
		ec2_client_set_max_idle(a->ec2, (cfg->rewarm_after_ms + 999) / 1000);
	a->ready = true;
	return 0;
}

int aws_ctx_credentials(struct aws_ctx *a, struct aws_credentials *out, struct amis_err *err)
{
	if (ready(a, err) != 0)
		return -1;
	return creds_get(a->creds, time(NULL), out, err);
}

int aws_ctx_credentials_source(struct aws_ctx *a, char *src, size_t srcsz, struct amis_err *err)
{
	struct aws_credentials cr;

	if (make_clients(a, err) != 0)
		return -1;
	if (creds_get(a->creds, time(NULL), &cr, err) != 0)
		return -1;
	snprintf(src, srcsz, "%s", cr.source);
	creds_clear(&cr);
	return 0;
}

bool aws_ctx_credentials_refused(struct aws_ctx *a, const struct amis_err *err)
{
	if (!a->creds || !(err_flags(err) & AMIS_F_CREDS))
		return false;
	log_warn("EC2 refused the credentials (%s); fetching them again", err->code);
	creds_invalidate(a->creds);
	return true;
}

const char *aws_ctx_instance_id(const struct aws_ctx *a)
{
	return a->instance_id;
}

const char *aws_ctx_region(const struct aws_ctx *a)
{
	return a->region;
}

struct ec2_client *aws_ctx_ec2(struct aws_ctx *a)
{
	return a->ec2;
}

struct imds_client *aws_ctx_imds(struct aws_ctx *a)
{
	return a->imds;
}

int aws_call_retrying(struct aws_ctx *a, const struct aws_credentials *fixed, struct ec2_client *c,
                      const char *action, const struct ec2_params *p, bool idempotent,
                      long timeout_ms, int attempts, struct _xmlDoc **doc, struct amis_err *err)
{
	struct aws_credentials cr;
	int attempt, rc = -1;

	for (attempt = 1; attempt <= attempts; attempt++) {
		if (fixed)
			cr = *fixed;
		else if (aws_ctx_credentials(a, &cr, err) != 0)
			return err_prefix(err, "no AWS credentials");
		rc = ec2_call(c, &cr, action, p, timeout_ms, 0, doc, err);
		creds_clear(&cr);
		if (rc == 0)
			return 0;
		/* Credentials refused (expired, rotated): fetch them again, once. */
		if (!fixed && attempt == 1 && aws_ctx_credentials_refused(a, err))
			continue;
		if (!ec2_error_is_retryable(err) ||
		    (!idempotent && (err_flags(err) & AMIS_F_MAYBE_DONE)) || attempt == attempts)
			break;
		log_warn("%s; trying again", err->msg);
		usleep((useconds_t)retry_backoff_ms(500, attempt + 1, err) * 1000);
	}
	return rc;
}
