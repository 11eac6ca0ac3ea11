/*
 * ec2.h - the EC2 Query API client.
 *
 * Every call is "POST /" with a form body "Action=X&Version=2016-11-15&..."
 * signed with SigV4 (service "ec2"); lists are flattened into numbered
 * parameters (TagSpecification.1.Tag.1.Key).  Responses are
 * <XResponse xmlns=...> documents whose members are matched by local name;
 * errors are <Response><Errors><Error><Code>/<Message></Error></Errors>
 * <RequestID/></Response>, and we branch on Code, never on the HTTP status.
 * (Amazon EC2 API Reference: "Making API requests using the Query protocol",
 * "Error codes for the Amazon EC2 API".)
 *
 * An ec2_client holds its HTTP connections (see http.h): calls on it must
 * not overlap; ec2_call_many makes several at once.  Credentials are passed to each call because
 * they are refreshed (IMDS role credentials expire).
 */
#ifndef AMIS_EC2_H
#define AMIS_EC2_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#include <libxml/tree.h>

#include "channel.h"
#include "credentials.h"
#include "util.h"

#define EC2_API_VERSION "2016-11-15"
#define EC2_CONTENT_TYPE "application/x-www-form-urlencoded; charset=utf-8"

/* ---- Request parameters: an ordered list of name/value pairs. ---- */

struct ec2_param {
	char *name;
	char *value;
};

struct ec2_params {
	struct ec2_param *items;
	size_t n, cap;
};

void ec2_params_init(struct ec2_params *p);
/* Frees (and wipes) every pair; p can be reused after ec2_params_init. */
void ec2_params_free(struct ec2_params *p);
void ec2_params_add(struct ec2_params *p, const char *name, const char *value);
/* The name is a printf format: ec2_params_addf(p, id, "InstanceId.%zu", i + 1). */
void ec2_params_addf(struct ec2_params *p, const char *value, const char *name_fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Sets the first pair called name to value, or adds it (a page's NextToken). */
void ec2_params_set(struct ec2_params *p, const char *name, const char *value);
/* The value of the first pair called name, or NULL. */
const char *ec2_params_get(const struct ec2_params *p, const char *name);

/*
 * TagSpecification.<spec>.ResourceType=type and its Tag.N.Key/Value pairs
 * (nothing when ntags is 0): the one builder of every call that tags what
 * it creates (CreateSnapshots, CreateImage, RegisterImage, the copies).
 */
void ec2_params_tag_spec(struct ec2_params *p, size_t spec, const char *type,
                         const struct ec2_tag *tags, size_t ntags);

/* Appends s percent-encoded per RFC 3986 (all but A-Z a-z 0-9 - _ . ~). */
void ec2_uri_encode(struct strbuf *out, const char *s);
/*
 * Builds the form body: "Action=<action>&Version=2016-11-15&k1=v1&...",
 * encoded as ec2_uri_encode() does but with a space as '+', as the SDKs do.
 */
void ec2_form_encode(const char *action, const struct ec2_params *p, struct strbuf *out);

/* ---- The client. ---- */

struct ec2_client;

/*
 * endpoint_url: "https://ec2.eu-west-1.amazonaws.com", "http://127.0.0.1:8773"
 * (scheme http or https, a host, an optional port, an optional path made of
 * unreserved characters and '/').  region: the SigV4 region.  Returns NULL if
 * either is invalid; ec2_endpoint_check says why.
 */
struct ec2_client *ec2_client_new(const char *endpoint_url, const char *region);
void ec2_client_free(struct ec2_client *c);
/* See http_client_set_abort_fd(). */
void ec2_client_set_abort_fd(struct ec2_client *c, int fd);
/* See http_client_set_max_idle(). */
void ec2_client_set_max_idle(struct ec2_client *c, long seconds);
/* Validates an endpoint URL and derives the Host header value (":port" when non-default). */
int ec2_endpoint_check(const char *endpoint_url, char *host, size_t hostsz, struct amis_err *err);
/* The Host header value the client sends, e.g. "127.0.0.1:8773". */
const char *ec2_client_host(const struct ec2_client *c);

/*
 * One API call.  now_or_0: signing time, 0 for the current time.  On success
 * *out_doc is the parsed response (free with xml_free), whose root is
 * <ActionResponse>.  If params contain DryRun=true and EC2 answers
 * DryRunOperation ("would have succeeded"), returns 0 with *out_doc NULL.
 * On failure returns -1 with err->msg starting "EC2 <action>: " (callers
 * need not name the action again) and err->code one of: EC2's <Code>
 * (err->msg "EC2 <action>: <Message> (request id <RequestID>)"), "Timeout",
 * "ConnectionError", "InternalError"/"ServiceUnavailable"/"HttpError<status>"
 * for non-EC2 error bodies, "MalformedResponse", "MissingCredentials".
 * Messages never contain a secret.
 */
int ec2_call(struct ec2_client *c, const struct aws_credentials *creds, const char *action,
             const struct ec2_params *params, long timeout_ms, time_t now_or_0, xmlDocPtr *out_doc,
             struct amis_err *err);

/*
 * Several calls at once (at most HTTP_MAX_PARALLEL), each as ec2_call()
 * makes it, on connections of their own: one round trip for all.  For
 * calls that do not depend on each other; each gets its own outcome (rc,
 * doc, *err).  Returns 0 when every call succeeded.
 */
struct ec2_batch_call {
	const char *action;
	const struct ec2_params *params;
	long timeout_ms;
	xmlDocPtr doc;        /* out: as ec2_call's *out_doc */
	int rc;               /* out: as ec2_call's result */
	struct amis_err *err; /* out */
};
int ec2_call_many(struct ec2_client *c, const struct aws_credentials *creds,
                  struct ec2_batch_call *calls, size_t n, time_t now_or_0);

/*
 * A pre-signed GET URL of action with params, for this client's endpoint and
 * signed for its region (sigv4_presign: Action and Version are parameters
 * too), appended to url: "https://ec2.us-east-1.amazonaws.com/?Action=...".
 * It carries a signature and any session token: never log it.
 */
int ec2_presign(struct ec2_client *c, const struct aws_credentials *creds, const char *action,
                const struct ec2_params *params, long expires_s, time_t now_or_0,
                struct strbuf *url, struct amis_err *err);

/* ---- Typed operations. ---- */

/* CreateSnapshots.  With dry_run, success leaves out empty (n = 0). */
/* CreateSnapshots' parameters for req (ec2_call_many); -1 if it lacks the instance. */
int ec2_create_snapshots_params(struct ec2_params *p, const struct ec2_create_snapshots_req *req,
                                struct amis_err *err);
int ec2_create_snapshots(struct ec2_client *c, const struct aws_credentials *creds,
                         const struct ec2_create_snapshots_req *req, long timeout_ms,
                         struct ec2_snapshot_set *out, struct amis_err *err);
/* DescribeSnapshots for the given ids (n >= 1); items map <status> to .state. */
int ec2_describe_snapshots(struct ec2_client *c, const struct aws_credentials *creds,
                           const char *const *snapshot_ids, size_t n, long timeout_ms,
                           struct ec2_snapshot_set *out, struct amis_err *err);
/*
 * DescribeSnapshots of our own snapshots (Owner.1=self) carrying tag key with
 * exactly value (Filter.1.Name=tag:KEY, Filter.1.Value.1=VALUE): finds what a
 * CreateSnapshots whose answer was lost created.  No match is success with
 * out->n = 0.  The value must not contain EC2 filter wildcards (* ?).
 */
int ec2_describe_snapshots_by_tag(struct ec2_client *c, const struct aws_credentials *creds,
                                  const char *key, const char *value, long timeout_ms,
                                  struct ec2_snapshot_set *out, struct amis_err *err);
/* The same with n tags, all of which the snapshots carry (Filter.1..n). */
int ec2_describe_snapshots_by_tags(struct ec2_client *c, const struct aws_credentials *creds,
                                   const char *const *keys, const char *const *values, size_t n,
                                   long timeout_ms, struct ec2_snapshot_set *out,
                                   struct amis_err *err);
/* Their parameters (exposed for tests). */
void ec2_describe_snapshots_by_tag_params(struct ec2_params *p, const char *key, const char *value);
void ec2_describe_snapshots_by_tags_params(struct ec2_params *p, const char *const *keys,
                                           const char *const *values, size_t n);
/* CreateTags: ResourceId.N, Tag.N.Key, Tag.N.Value. */
/* CreateTags' parameters (ec2_call_many); -1 without a resource or a tag. */
int ec2_create_tags_params(struct ec2_params *p, const char *const *resource_ids, size_t nres,
                           const struct ec2_tag *tags, size_t ntags, struct amis_err *err);
int ec2_create_tags(struct ec2_client *c, const struct aws_credentials *creds,
                    const char *const *resource_ids, size_t nres, const struct ec2_tag *tags,
                    size_t ntags, long timeout_ms, struct amis_err *err);

/*
 * DescribeInstances for one instance.  Fails with "InvalidInstanceID.NotFound"
 * if the response does not list it, "TooManyVolumes" beyond 64 EBS mappings.
 */
int ec2_describe_instance(struct ec2_client *c, const struct aws_credentials *creds,
                          const char *instance_id, long timeout_ms, struct ec2_instance_info *out,
                          struct amis_err *err);

/*
 * DescribeImages of one image (by id, or our own by tag or by name).  No
 * match is success with out->image_id "" (an id EC2 does not know is its
 * error, InvalidAMIID.NotFound).
 */
int ec2_describe_image(struct ec2_client *c, const struct aws_credentials *creds,
                       const struct ec2_image_query *q, long timeout_ms, struct ec2_image_info *out,
                       struct amis_err *err);
/* Its parameters (exposed for tests). */
int ec2_describe_image_params(struct ec2_params *p, const struct ec2_image_query *q,
                              struct amis_err *err);
/* DescribeVolumes of the given ids (n >= 1). */
int ec2_describe_volumes(struct ec2_client *c, const struct aws_credentials *creds,
                         const char *const *volume_ids, size_t n, long timeout_ms,
                         struct ec2_volume_set *out, struct amis_err *err);
/* RegisterImage; image_id gets the new AMI's id ("" after a DryRun). */
int ec2_register_image(struct ec2_client *c, const struct aws_credentials *creds,
                       const struct ec2_register_image_req *req, long timeout_ms, char *image_id,
                       size_t idsz, struct amis_err *err);
void ec2_register_image_params(struct ec2_params *p, const struct ec2_register_image_req *req);
/* CreateImage (NoReboot=true); image_id gets the new AMI's id ("" after a DryRun). */
int ec2_create_image(struct ec2_client *c, const struct aws_credentials *creds,
                     const struct ec2_create_image_req *req, long timeout_ms, char *image_id,
                     size_t idsz, struct amis_err *err);
void ec2_create_image_params(struct ec2_params *p, const struct ec2_create_image_req *req);
int ec2_deregister_image(struct ec2_client *c, const struct aws_credentials *creds,
                         const char *image_id, long timeout_ms, struct amis_err *err);

/* ---- Response parsing, without HTTP (used by the above; exposed for tests). ---- */

/*
 * Interprets one HTTP response to action: EC2 error documents, non-XML error
 * bodies, DryRunOperation when dry_run, and checks the root is
 * <actionResponse>.  hdr_request_id: the x-amzn-requestid header or NULL.
 * Same results as ec2_call.
 */
int ec2_parse_response(const char *action, long status, const char *body, size_t len,
                       const char *hdr_request_id, bool dry_run, xmlDocPtr *out_doc,
                       struct amis_err *err);
/*
 * Items of <snapshotSet> (none if it is absent).  Each needs a snapshotId
 * and a volumeId of the right shape; its state comes from <state> or
 * <status>, absent_state when it has neither.  See doc/ec2-parsing.md.
 */
int ec2_parse_snapshot_set(xmlDocPtr doc, const char *absent_state, struct ec2_snapshot_set *out,
                           struct amis_err *err);
int ec2_parse_instance(xmlDocPtr doc, const char *instance_id, struct ec2_instance_info *out,
                       struct amis_err *err);
int ec2_parse_create_tags(xmlDocPtr doc, struct amis_err *err);
/*
 * The parsers' rules for one member (doc/ec2-parsing.md), for other parsers
 * of EC2 answers: a required id of the given prefix ("snap", "vol", "i",
 * "ami"), checked for shape; an informational member copied when present
 * and fitting, else "".
 */
int ec2_member_id(const xmlNode *node, const char *name, const char *prefix, char *buf,
                  size_t bufsz, struct amis_err *err);
void ec2_member_text(const xmlNode *node, const char *name, char *buf, size_t bufsz);
/* The first item of <imagesSet> (none: out->image_id ""). */
int ec2_parse_image(xmlDocPtr doc, struct ec2_image_info *out, struct amis_err *err);
int ec2_parse_volumes(xmlDocPtr doc, struct ec2_volume_set *out, struct amis_err *err);
/* <imageId> of a RegisterImage or CreateImage answer: required, an ami-... id. */
int ec2_parse_image_id(xmlDocPtr doc, char *image_id, size_t idsz, struct amis_err *err);

/* Body-level conveniences for tests: 200 responses of each action. */
int ec2_parse_create_snapshots(const char *body, size_t len, struct ec2_snapshot_set *out,
                               struct amis_err *err);
int ec2_parse_describe_snapshots(const char *body, size_t len, struct ec2_snapshot_set *out,
                                 struct amis_err *err);
int ec2_parse_describe_instance(const char *body, size_t len, const char *instance_id,
                                struct ec2_instance_info *out, struct amis_err *err);
int ec2_parse_describe_images(const char *body, size_t len, struct ec2_image_info *out,
                              struct amis_err *err);
int ec2_parse_describe_volumes(const char *body, size_t len, struct ec2_volume_set *out,
                               struct amis_err *err);
/* action: "RegisterImage" or "CreateImage". */
int ec2_parse_new_image(const char *action, const char *body, size_t len, char *image_id,
                        size_t idsz, struct amis_err *err);

#endif
