/*
 * channel.h - what the root process and the EC2 worker exchange: the
 * requests and results of the EC2 calls, as plain C types.  The worker
 * (worker/ec2.h) fills them from EC2's answers; the root process
 * (root/worker_client.c) sends and receives them over the socketpair in
 * protocol.h's frames and never sees EC2's XML, HTTP or credentials.
 */
#ifndef AMIS_CHANNEL_H
#define AMIS_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>

#include "protocol.h"
#include "util.h"

/* The descriptor of the socketpair in the worker process. */
#define WORKER_FD 3

struct ec2_tag {
	const char *key;
	const char *value; /* NULL is sent as "" */
};

struct ec2_create_snapshots_req {
	const char *instance_id;
	const char *description; /* may be NULL */
	bool exclude_boot_volume;
	const char *const *exclude_volume_ids; /* InstanceSpecification.ExcludeDataVolumeId.N */
	size_t n_exclude;
	const struct ec2_tag *tags; /* TagSpecification.1 (ResourceType=snapshot).Tag.N */
	size_t ntags;
	bool copy_tags_from_source; /* CopyTagsFromSource=volume */
	bool dry_run;
};

/* The state of a snapshot that a CreateSnapshots answer lists without one. */
#define EC2_CREATED_STATE "pending"

struct ec2_snapshot_info {
	char snapshot_id[32];
	char volume_id[32];
	char state[16];            /* pending | completed | error | ...; "" unknown */
	long long volume_size_gib; /* -1 if absent */
	char start_time[40];
	char progress[16];
};

struct ec2_snapshot_set {
	size_t n;
	struct ec2_snapshot_info *items;
};

void ec2_snapshot_set_free(struct ec2_snapshot_set *s);

#define EC2_MAX_INSTANCE_VOLUMES AMSP_W_MAX_VOLUMES

struct ec2_block_device {
	char device_name[64];
	char volume_id[32];
	bool delete_on_termination;
};

/* A billing product code of an image or instance (productCodes/item). */
#define EC2_MAX_PRODUCT_CODES 8
struct ec2_product_code {
	char code[64];
	char type[16]; /* devpay | marketplace | "" */
};

struct ec2_instance_info {
	char instance_id[32];
	char architecture[16];        /* i386 | x86_64 | arm64 | ... */
	char root_device_name[64];    /* "" if absent */
	char root_device_type[16];    /* ebs | instance-store */
	char virtualization_type[16]; /* hvm | paravirtual */
	bool ena_support;             /* false if absent */
	char boot_mode[24];           /* legacy-bios | uefi | uefi-preferred; "" if absent */
	char image_id[32];            /* "" if absent */
	char platform_details[64];    /* "Linux/UNIX", "Red Hat Enterprise Linux"...; "" */
	char usage_operation[32];     /* "RunInstances", "RunInstances:0010"...; "" */
	size_t nproduct_codes;
	struct ec2_product_code product_codes[EC2_MAX_PRODUCT_CODES];
	size_t nvolumes; /* EBS mappings only */
	struct ec2_block_device volumes[EC2_MAX_INSTANCE_VOLUMES];
};

/* ---- Images (the AMI methods: doc/design.md, "AMIs"). ---- */

/* One EBS volume (DescribeVolumes) or one EBS entry of an image's mapping. */
struct ec2_volume_info {
	char volume_id[32];   /* DescribeVolumes only */
	char device_name[64]; /* mappings only */
	char snapshot_id[32]; /* mappings only; "" while CreateImage has none yet */
	char volume_type[16]; /* gp2 | gp3 | io1 | io2 | st1 | sc1 | standard; "" unknown */
	long size_gib;        /* 0 unknown */
	long iops;            /* 0 absent */
	long throughput;      /* MiB/s; 0 absent */
	bool delete_on_termination;
};

struct ec2_volume_set {
	size_t n;
	struct ec2_volume_info items[EC2_MAX_INSTANCE_VOLUMES];
};

/* An image's attributes (DescribeImages), and what RegisterImage is given. */
struct ec2_image_info {
	char image_id[32]; /* "" when DescribeImages found none */
	char state[16];    /* pending | available | failed | ...; "" unknown */
	char name[132];
	char architecture[16]; /* i386 | x86_64 | arm64 | ... */
	char virtualization_type[16];
	char root_device_name[64];
	bool ena_support;
	char sriov_net_support[16]; /* "simple" or "" */
	char boot_mode[24];
	char tpm_support[16];  /* "v2.0" or "" */
	char imds_support[16]; /* "v2.0" or "" */
	char platform_details[64];
	char usage_operation[32];
	size_t nproduct_codes;
	struct ec2_product_code product_codes[EC2_MAX_PRODUCT_CODES];
	size_t nmappings; /* EBS entries of the block device mapping */
	struct ec2_volume_info mappings[EC2_MAX_INSTANCE_VOLUMES];
};

/* Which image DescribeImages looks for: exactly one of the three. */
struct ec2_image_query {
	const char *image_id;
	const char *tag_key, *tag_value; /* our own images (Owner=self) with this tag */
	const char *name;                /* our own image of this name */
};

/*
 * RegisterImage: info's attributes and mappings (device, snapshot, type,
 * size, IOPS, throughput, DeleteOnTermination); empty strings are left out.
 * Tags go to TagSpecification ResourceType=image.
 */
struct ec2_register_image_req {
	const struct ec2_image_info *info; /* name: the AMI's name */
	const char *description;
	const struct ec2_tag *tags;
	size_t ntags;
	bool dry_run;
};

/* CreateImage with NoReboot=true; tags go to the image and its snapshots. */
struct ec2_create_image_req {
	const char *instance_id;
	const char *name;
	const char *description;
	const struct ec2_tag *tags;
	size_t ntags;
	bool dry_run;
};

/*
 * The image's attributes and its EBS mapping on the channel, the same in
 * W_REGISTER_IMAGE and in the W_OK answering W_DESCRIBE_IMAGE (protocol.md):
 * ARCHITECTURE, VIRT_TYPE, ENA, BOOT_MODE, SRIOV, TPM, IMDS_SUPPORT,
 * ROOT_DEVICE, then per mapping entry DEVICE_NAME, SNAPSHOT_ID, VOLUME_TYPE,
 * VOLUME_SIZE, IOPS, THROUGHPUT, DELETE_ON_TERM paired by position.
 */
void channel_put_image(struct amsp_writer *aw, const struct ec2_image_info *img);
/* An optional string field of m into buf ("" if absent); -1 ("") if it does not fit. */
int channel_opt_str(const struct amsp_msgview *m, enum amsp_tag tag, char *buf, size_t sz);
/*
 * Reads them into img (other members untouched).  -1 if the mapping's
 * fields do not pair up, an entry does not fit or a snapshot id is not
 * snap-...: the sender is not to be trusted.
 */
int channel_get_image(const struct amsp_msgview *m, struct ec2_image_info *img);

/*
 * True for outcomes worth retrying after a back-off (AMIS_F_RETRY in
 * errcodes.h: throttling, service-side and transport failures).  Beware:
 * after a Timeout or ConnectionError on a call that creates something, it
 * may have been created (AMIS_F_MAYBE_DONE).
 */
bool ec2_error_is_retryable(const struct amis_err *err);

/* The back-off's cap, and EC2's pause between snapshots of one volume. */
#define RETRY_BACKOFF_CAP_MS 20000L
#define PER_VOLUME_RATE_BACKOFF_MS 15000L

/*
 * The jittered exponential back-off before attempt number next (2, 3, ...)
 * after err: base, doubled per attempt up to the cap, then between half and
 * all of it ("equal jitter"); at least 15 s after
 * SnapshotCreationPerVolumeRateExceeded, as EC2 asks.  The same rule for
 * the root process's freeze cycles and the worker's calls.
 */
long retry_backoff_ms(long base_ms, int next, const struct amis_err *err);

#endif
