/*
 * ec2_lifecycle.h - the EC2 calls of a backup's life after it was taken
 * (doc/lifecycle.md): finding backups by tags (DescribeSnapshots,
 * DescribeImages, with pagination), waiting for them, copying them to
 * another region (CopySnapshot with its pre-signed URL, CopyImage), locking
 * (LockSnapshot, UnlockSnapshot, DescribeLockedSnapshots), sharing
 * (ModifySnapshotAttribute, ModifyImageAttribute) and deleting
 * (DeregisterImage, DeleteSnapshot).
 *
 * Every call names the region it is made in: the transport signs it for
 * that region and sends it to that region's endpoint (or to the one
 * configured endpoint, which then must tell regions apart by the SigV4
 * scope, as the emulator does).  The transport is the caller's: the
 * `ami-snapshot` command retries and refreshes credentials (cli/lc_aws.c),
 * the unit tests call ec2_call() on the fake server.
 *
 * Parsing follows doc/ec2-parsing.md: ids that are acted upon are required
 * and checked for shape; what is only reported is taken when present.
 */
#ifndef AMIS_EC2_LIFECYCLE_H
#define AMIS_EC2_LIFECYCLE_H

#include <stdbool.h>
#include <stddef.h>

#include <libxml/tree.h>

#include "ec2.h"
#include "util.h"

struct ec2_transport {
	/*
	 * One call in region.  idempotent: may be sent again after a lost
	 * answer.  Same results as ec2_call (a DryRun that would succeed: 0,
	 * *doc NULL).
	 */
	int (*call)(void *ctx, const char *region, const char *action, const struct ec2_params *p,
	            bool idempotent, xmlDocPtr *doc, struct amis_err *err);
	/*
	 * A pre-signed GET URL of action with p, signed for region and sent to
	 * its endpoint (sigv4_presign); appended to url.
	 */
	int (*presign)(void *ctx, const char *region, const char *action,
	               const struct ec2_params *p, struct strbuf *url, struct amis_err *err);
	void *ctx;
};

#define LC_TAG_KEY_MAX 128
#define LC_TAG_VALUE_MAX 256

struct lc_tag {
	char key[LC_TAG_KEY_MAX + 1];
	char value[LC_TAG_VALUE_MAX + 1];
};

struct lc_tags {
	size_t n;
	struct lc_tag *items; /* malloc'ed */
};

/* The value of key, or NULL. */
const char *lc_tags_get(const struct lc_tags *t, const char *key);
void lc_tags_free(struct lc_tags *t);

/* One snapshot as DescribeSnapshots lists it. */
struct lc_snapshot {
	char snapshot_id[32];
	char volume_id[32];        /* "" when absent (a copy's is vol-ffffffff) */
	char state[16];            /* pending | completed | error | recoverable | recovering */
	char progress[16];         /* "42%", "" unknown */
	char state_message[256];   /* EC2's reason when state is error */
	char start_time[40];       /* ISO 8601 as EC2 sent it */
	char owner_id[24];         /* "" when absent */
	char description[256];     /* "" when absent */
	char kms_key_id[256];      /* "" when absent */
	bool encrypted;            /* false when absent */
	long long volume_size_gib; /* -1 when absent */
	struct lc_tags tags;
};

struct lc_snapshot_list {
	size_t n, cap;
	struct lc_snapshot *items;
};

void lc_snapshot_list_free(struct lc_snapshot_list *l);

#define LC_MAX_IMAGE_SNAPSHOTS 64

/* One image as DescribeImages lists it. */
struct lc_image {
	char image_id[32];
	char state[24];         /* pending | available | invalid | deregistered | failed | ... */
	char state_reason[256]; /* stateReason/message; "" when absent */
	char creation_date[40]; /* ISO 8601; "" when absent */
	char name[256];
	size_t nsnapshots;
	char snapshot_ids[LC_MAX_IMAGE_SNAPSHOTS][32]; /* of its EBS mapping, in order */
	struct lc_tags tags;
};

struct lc_image_list {
	size_t n, cap;
	struct lc_image *items;
};

void lc_image_list_free(struct lc_image_list *l);

/* One Filter.N: name and its values (at least one). */
struct ec2_filter {
	const char *name;
	const char *const *values;
	size_t nvalues;
};

/* Filter.N.Name / Filter.N.Value.M parameters, N from 1. */
void ec2_filter_params(struct ec2_params *p, const struct ec2_filter *f, size_t nf);

/*
 * DescribeSnapshots, Owner.1=self, with the filters, every page
 * (MaxResults 1000, NextToken), appended to out.
 */
int ec2_lc_describe_snapshots(const struct ec2_transport *t, const char *region,
                              const struct ec2_filter *f, size_t nf, struct lc_snapshot_list *out,
                              struct amis_err *err);
/* DescribeSnapshots of ids (n >= 1), every page; an id EC2 does not know is its error. */
int ec2_lc_describe_snapshot_ids(const struct ec2_transport *t, const char *region,
                                 const char *const *ids, size_t n, struct lc_snapshot_list *out,
                                 struct amis_err *err);
/* DescribeImages, Owner.1=self, with the filters, every page, appended to out. */
int ec2_lc_describe_images(const struct ec2_transport *t, const char *region,
                           const struct ec2_filter *f, size_t nf, struct lc_image_list *out,
                           struct amis_err *err);
/* DescribeImages of ids (n >= 1). */
int ec2_lc_describe_image_ids(const struct ec2_transport *t, const char *region,
                              const char *const *ids, size_t n, struct lc_image_list *out,
                              struct amis_err *err);

/* A tag to apply through TagSpecification. */
struct lc_copy_snapshot_req {
	const char *source_region;
	const char *dest_region; /* where the call is made */
	const char *snapshot_id;
	const char *description;    /* NULL: none */
	bool encrypted;             /* Encrypted=true */
	const char *kms_key_id;     /* NULL: the default key */
	const struct ec2_tag *tags; /* TagSpecification.1 (snapshot) */
	size_t ntags;
	bool dry_run;
};

/*
 * CopySnapshot made in dest_region.  An encrypted copy (encrypted, or a
 * KmsKeyId, or a source that is encrypted: pass encrypted) carries a
 * PresignedUrl: the same CopySnapshot signed for source_region with
 * DestinationRegion (EC2 API Reference, CopySnapshot, PresignedUrl).
 * new_id gets the copy's snap- id ("" after a DryRun).
 */
int ec2_copy_snapshot(const struct ec2_transport *t, const struct lc_copy_snapshot_req *r,
                      char *new_id, size_t idsz, struct amis_err *err);
/* Its parameters without the PresignedUrl (exposed for tests). */
void ec2_copy_snapshot_params(struct ec2_params *p, const struct lc_copy_snapshot_req *r);

struct lc_copy_image_req {
	const char *source_region;
	const char *dest_region;
	const char *image_id;
	const char *name; /* required by CopyImage */
	const char *description;
	bool encrypted;
	const char *kms_key_id;
	const char *client_token;   /* idempotency: a retried call makes no second image */
	const struct ec2_tag *tags; /* TagSpecification.1 image, .2 snapshot */
	size_t ntags;
	bool dry_run;
};

int ec2_copy_image(const struct ec2_transport *t, const struct lc_copy_image_req *r, char *new_id,
                   size_t idsz, struct amis_err *err);
void ec2_copy_image_params(struct ec2_params *p, const struct lc_copy_image_req *r);

/* A snapshot's lock (LockSnapshot's answer, DescribeLockedSnapshots' items). */
struct lc_lock {
	char snapshot_id[32];
	char lock_state[24];     /* compliance-cooloff | governance | compliance | expired | "" */
	long lock_duration_days; /* 0 when absent */
	long cool_off_hours;     /* 0 when absent */
	char cool_off_expires_on[40];
	char lock_created_on[40];
	char lock_expires_on[40];
	char lock_duration_start_time[40];
};

struct lc_lock_req {
	const char *snapshot_id;
	const char *mode;            /* governance | compliance */
	long duration_days;          /* LockDuration 1..36500, or 0 with expiration_date */
	const char *expiration_date; /* ExpirationDate (ISO 8601 UTC), or NULL */
	long cool_off_hours;         /* CoolOffPeriod 1..72 (compliance only), 0: none */
	bool dry_run;
};

int ec2_lock_snapshot(const struct ec2_transport *t, const char *region,
                      const struct lc_lock_req *r, struct lc_lock *out, struct amis_err *err);
/* Its parameters, validated (exposed for tests). */
int ec2_lock_snapshot_params(struct ec2_params *p, const struct lc_lock_req *r,
                             struct amis_err *err);
int ec2_unlock_snapshot(const struct ec2_transport *t, const char *region, const char *snapshot_id,
                        struct amis_err *err);
/* DescribeLockedSnapshots of ids: out[i] for each snapshot locked now or before (*n). */
int ec2_describe_locked_snapshots(const struct ec2_transport *t, const char *region,
                                  const char *const *ids, size_t nids, struct lc_lock *out,
                                  size_t max, size_t *n, struct amis_err *err);

/* CreateTags on one resource in region (an AMI copy's snapshots: their sources' own tags). */
int ec2_lc_create_tags(const struct ec2_transport *t, const char *region, const char *resource_id,
                       const struct ec2_tag *tags, size_t ntags, struct amis_err *err);

int ec2_delete_snapshot(const struct ec2_transport *t, const char *region, const char *snapshot_id,
                        struct amis_err *err);
int ec2_lc_deregister_image(const struct ec2_transport *t, const char *region, const char *image_id,
                            struct amis_err *err);

/*
 * Sharing: createVolumePermission of a snapshot (ModifySnapshotAttribute,
 * OperationType add|remove, UserId.1) and launchPermission of an image
 * (ModifyImageAttribute, LaunchPermission.Add|Remove.1.UserId).  account:
 * 12 digits.
 */
int ec2_share_snapshot(const struct ec2_transport *t, const char *region, const char *snapshot_id,
                       const char *account, bool remove, struct amis_err *err);
int ec2_share_image(const struct ec2_transport *t, const char *region, const char *image_id,
                    const char *account, bool remove, struct amis_err *err);
/* Whether s is a 12-digit AWS account id. */
bool ec2_account_id_valid(const char *s);

/* ---- Parsers (exposed for tests). ---- */

/* snapshotSet items appended to out; next_token ("" on the last page). */
int ec2_parse_lc_snapshots(xmlDocPtr doc, struct lc_snapshot_list *out, char *next_token,
                           size_t ntsz, struct amis_err *err);
int ec2_parse_lc_images(xmlDocPtr doc, struct lc_image_list *out, char *next_token, size_t ntsz,
                        struct amis_err *err);
/* The lock members of node (LockSnapshot's root, a DescribeLockedSnapshots item). */
int ec2_parse_lock(const xmlNode *node, struct lc_lock *out, struct amis_err *err);
/* <snapshotId> or <imageId> of a copy's answer. */
int ec2_parse_new_id(xmlDocPtr doc, const char *member, const char *prefix, char *id, size_t idsz,
                     struct amis_err *err);

#endif
