/*
 * protocol.c - see protocol.h.  Allocation-free; compiled into both the
 * helper and the extension.
 */
#include "protocol.h"

#include <string.h>

enum kind { K_STR, K_U8, K_U32, K_U64 };

struct field_rule {
	uint16_t tag;
	enum kind kind;
	uint16_t max_len; /* for strings */
	uint8_t min;      /* required occurrences */
	uint8_t max;      /* allowed occurrences */
};

struct msg_rule {
	uint16_t type;
	const char *name;
	const struct field_rule *fields;
	size_t nfields;
};

#define PATHLEN 4095
#define IDLEN AMSP_MAX_ID_LEN
#define MAXVOL AMSP_MAX_VOLUMES

static const struct field_rule prepare_rules[] = {
    {AMSP_T_REQUEST_ID, K_STR, IDLEN, 1, 1},
    {AMSP_T_NAME, K_STR, 256, 1, 1},
    {AMSP_T_FREEZE, K_U8, 1, 1, 1},
    {AMSP_T_PATH_DATA, K_STR, PATHLEN, 1, 1},
    {AMSP_T_PATH_WAL, K_STR, PATHLEN, 0, 1},
    {AMSP_T_PATH_TABLESPACE, K_STR, PATHLEN, 0, MAXVOL},
    {AMSP_T_SYSTEM_ID, K_STR, 32, 0, 1},
    {AMSP_T_PG_VERSION, K_STR, 16, 0, 1},
    /* An AMI (optional: a helper without images refuses the frame). */
    {AMSP_T_IMAGE_METHOD, K_STR, 16, 0, 1},
    {AMSP_T_ALLOW_PRODUCT_CODE_LOSS, K_U8, 1, 0, 1},
    /* Only from a hot standby: an older helper refuses them (doc/protocol.md). */
    {AMSP_T_STANDBY, K_U8, 1, 0, 1},
    {AMSP_T_PRIMARY_HOST, K_STR, 256, 0, 1},
    {AMSP_T_SYNC_STATE, K_STR, 16, 0, 1},
};

static const struct field_rule prepared_rules[] = {
    {AMSP_T_INSTANCE_ID, K_STR, IDLEN, 1, 1},
    {AMSP_T_REGION, K_STR, IDLEN, 1, 1},
    {AMSP_T_VOLUME_ID, K_STR, IDLEN, 1, MAXVOL},
    {AMSP_T_MOUNT_POINT, K_STR, PATHLEN, 1, MAXVOL},
};

static const struct field_rule snapshot_rules[] = {
    {AMSP_T_START_LSN, K_STR, 32, 1, 1},
    {AMSP_T_TIMELINE, K_U32, 4, 1, 1},
};

static const struct field_rule pending_rules[] = {
    {AMSP_T_SNAPSHOT_ID, K_STR, IDLEN, 1, MAXVOL},
    {AMSP_T_SNAPSHOT_VOLUME, K_STR, IDLEN, 1, MAXVOL},
    {AMSP_T_FREEZE_USEC, K_U64, 8, 1, 1},
    {AMSP_T_SNAPSHOT_USEC, K_U64, 8, 1, 1},
    {AMSP_T_IMAGE_ID, K_STR, IDLEN, 0, 1},
};

static const struct field_rule finish_rules[] = {
    {AMSP_T_STOP_LSN, K_STR, 32, 1, 1},
    {AMSP_T_TIMELINE, K_U32, 4, 1, 1},
    {AMSP_T_BACKUP_LABEL, K_STR, 8192, 1, 1},
    {AMSP_T_TABLESPACE_MAP, K_STR, 32768, 0, 1},
};

static const struct field_rule done_rules[] = {
    {AMSP_T_WARNING, K_STR, 1024, 0, AMSP_MAX_WARNINGS},
    {AMSP_T_IMAGE_ID, K_STR, IDLEN, 0, 1},
};

static const struct field_rule abort_rules[] = {
    {AMSP_T_REASON, K_STR, 1024, 0, 1},
};

static const struct field_rule error_rules[] = {
    {AMSP_T_ERROR_CODE, K_STR, 64, 1, 1},
    {AMSP_T_ERROR_MESSAGE, K_STR, 2048, 1, 1},
    {AMSP_T_ERROR_STAGE, K_STR, 32, 0, 1},
    /* What the helper knew of the failed operation (doc/protocol.md). */
    {AMSP_T_INSTANCE_ID, K_STR, IDLEN, 0, 1},
    {AMSP_T_REGION, K_STR, IDLEN, 0, 1},
    {AMSP_T_VOLUME_ID, K_STR, IDLEN, 0, MAXVOL},
    /* Snapshots that EC2 created before the failure, with their volumes. */
    {AMSP_T_SNAPSHOT_ID, K_STR, IDLEN, 0, MAXVOL},
    {AMSP_T_SNAPSHOT_VOLUME, K_STR, IDLEN, 0, MAXVOL},
    /* How long writes were frozen, if they were. */
    {AMSP_T_FREEZE_USEC, K_U64, 8, 0, 1},
    /* The image made (or half made) before the failure. */
    {AMSP_T_IMAGE_ID, K_STR, IDLEN, 0, 1},
};

static const struct field_rule status_rules[] = {
    {AMSP_T_REASON, K_STR, 1024, 0, 1},
    /* Optional (`ami-snapshot status`): the reply lists the running jobs. */
    {AMSP_T_LIST_JOBS, K_U8, 1, 0, 1},
};

static const struct field_rule status_reply_rules[] = {
    {AMSP_T_STATE, K_STR, 32, 1, 1},
    {AMSP_T_REQUEST_ID, K_STR, IDLEN, 0, 1},
    {AMSP_T_NAME, K_STR, 256, 0, 1},
    {AMSP_T_MOUNT_POINT, K_STR, PATHLEN, 0, MAXVOL},
    {AMSP_T_FROZEN_USEC, K_U64, 8, 0, 1},
    {AMSP_T_REASON, K_STR, 2048, 0, 1},
    /* Optional: the step of the operation that runs (a newer helper's). */
    {AMSP_T_STEP, K_STR, 32, 0, 1},
    /* Only when the STATUS asked (LIST_JOBS): each running job, in order. */
    {AMSP_T_JOB_ID, K_STR, IDLEN, 0, AMSP_MAX_STATUS_JOBS},
    {AMSP_T_JOB_KIND, K_STR, 16, 0, AMSP_MAX_STATUS_JOBS},
    {AMSP_T_JOB_PID, K_U32, 4, 0, AMSP_MAX_STATUS_JOBS},
    {AMSP_T_JOB_USEC, K_U64, 8, 0, AMSP_MAX_STATUS_JOBS},
};

static const struct field_rule check_rules[] = {
    {AMSP_T_REQUEST_ID, K_STR, IDLEN, 1, 1},
    {AMSP_T_PATH_DATA, K_STR, PATHLEN, 0, 1},
    {AMSP_T_PATH_WAL, K_STR, PATHLEN, 0, 1},
    {AMSP_T_PATH_TABLESPACE, K_STR, PATHLEN, 0, MAXVOL},
    /* An AMI's calls are tested too (register or create). */
    {AMSP_T_IMAGE_METHOD, K_STR, 16, 0, 1},
};

/* One row per check, the four fields paired by position. */
#define CHECK_ROW_RULES                                                                            \
	{AMSP_T_CHECK_NAME, K_STR, 64, 0, AMSP_MAX_CHECKS},                                        \
	    {AMSP_T_CHECK_RESULT, K_STR, 8, 0, AMSP_MAX_CHECKS},                                   \
	    {AMSP_T_CHECK_DETAIL, K_STR, AMSP_CHECK_TEXT, 0, AMSP_MAX_CHECKS},                     \
	{                                                                                          \
		AMSP_T_CHECK_HINT, K_STR, AMSP_CHECK_TEXT, 0, AMSP_MAX_CHECKS                      \
	}

static const struct field_rule check_reply_rules[] = {
    {AMSP_T_HELPER_VERSION, K_STR, 32, 1, 1},
    CHECK_ROW_RULES,
};

static const struct field_rule job_rules[] = {
    {AMSP_T_REQUEST_ID, K_STR, IDLEN, 1, 1},
    {AMSP_T_JOB_KIND, K_STR, 16, 1, 1},
    {AMSP_T_JOB_ARG_KEY, K_STR, 32, 0, AMSP_JOB_MAX_ARGS},
    {AMSP_T_JOB_ARG_VALUE, K_STR, AMSP_JOB_MAX_ARG_LEN, 0, AMSP_JOB_MAX_ARGS},
};

static const struct field_rule job_started_rules[] = {
    {AMSP_T_REQUEST_ID, K_STR, IDLEN, 1, 1},
};

static const struct field_rule job_output_rules[] = {
    {AMSP_T_JOB_OUTPUT, K_STR, AMSP_JOB_CHUNK, 1, 1},
};

static const struct field_rule job_result_rules[] = {
    {AMSP_T_JOB_EXIT, K_U32, 4, 0, 1},     {AMSP_T_JOB_SIGNAL, K_U32, 4, 0, 1},
    {AMSP_T_JOB_OUTCOME, K_STR, 32, 1, 1}, {AMSP_T_JOB_USEC, K_U64, 8, 1, 1},
    {AMSP_T_JOB_TRUNCATED, K_U8, 1, 0, 1}, {AMSP_T_ERROR_MESSAGE, K_STR, 2048, 0, 1},
};

/* Internal: helper <-> EC2 worker.  EC2's own limits bound the strings. */
#define W_MAXVOL AMSP_W_MAX_VOLUMES
#define W_MAXTAGS 64
#define TAG_KEY_LEN 512    /* 128 UTF-8 characters */
#define TAG_VALUE_LEN 1024 /* 256 UTF-8 characters */

static const struct field_rule w_ready_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
};

/* With DRY_RUN: a DryRun CreateSnapshots of that request, made at the same time. */
static const struct field_rule w_describe_instance_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_TIMEOUT_MS, K_U32, 4, 1, 1},
    {AMSP_T_INSTANCE_ID, K_STR, IDLEN, 1, 1},
    {AMSP_T_DRY_RUN, K_U8, 1, 0, 1},
    {AMSP_T_DESCRIPTION, K_STR, 1024, 0, 1},
    {AMSP_T_EXCLUDE_BOOT, K_U8, 1, 0, 1},
    {AMSP_T_EXCLUDE_VOLUME, K_STR, IDLEN, 0, W_MAXVOL},
    {AMSP_T_TAG_KEY, K_STR, TAG_KEY_LEN, 0, W_MAXTAGS},
    {AMSP_T_TAG_VALUE, K_STR, TAG_VALUE_LEN, 0, W_MAXTAGS},
};

static const struct field_rule w_create_snapshots_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_TIMEOUT_MS, K_U32, 4, 1, 1},
    {AMSP_T_DRY_RUN, K_U8, 1, 1, 1},
    {AMSP_T_HOLD_LOG, K_U8, 1, 1, 1},
    {AMSP_T_INSTANCE_ID, K_STR, IDLEN, 1, 1},
    {AMSP_T_DESCRIPTION, K_STR, 1024, 0, 1},
    {AMSP_T_EXCLUDE_BOOT, K_U8, 1, 1, 1},
    {AMSP_T_EXCLUDE_VOLUME, K_STR, IDLEN, 0, W_MAXVOL},
    {AMSP_T_TAG_KEY, K_STR, TAG_KEY_LEN, 0, W_MAXTAGS},
    {AMSP_T_TAG_VALUE, K_STR, TAG_VALUE_LEN, 0, W_MAXTAGS},
};

/* TAG_*: on every resource; ITEM_*: on the one resource ITEM_RESOURCE names. */
static const struct field_rule w_create_tags_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_TIMEOUT_MS, K_U32, 4, 1, 1},
    {AMSP_T_RESOURCE_ID, K_STR, IDLEN, 1, W_MAXVOL},
    {AMSP_T_TAG_KEY, K_STR, TAG_KEY_LEN, 0, W_MAXTAGS},
    {AMSP_T_TAG_VALUE, K_STR, TAG_VALUE_LEN, 0, W_MAXTAGS},
    {AMSP_T_ITEM_RESOURCE, K_U32, 4, 0, 255},
    {AMSP_T_ITEM_TAG_KEY, K_STR, TAG_KEY_LEN, 0, 255},
    {AMSP_T_ITEM_TAG_VALUE, K_STR, TAG_VALUE_LEN, 0, 255},
};

/* One or two tags, all of which the snapshots carry. */
static const struct field_rule w_find_snapshots_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_TIMEOUT_MS, K_U32, 4, 1, 1},
    {AMSP_T_TAG_KEY, K_STR, TAG_KEY_LEN, 1, 2},
    {AMSP_T_TAG_VALUE, K_STR, TAG_VALUE_LEN, 1, 2},
};

static const struct field_rule w_describe_image_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_TIMEOUT_MS, K_U32, 4, 1, 1},
    {AMSP_T_IMAGE_ID, K_STR, IDLEN, 0, 1},
    {AMSP_T_TAG_KEY, K_STR, TAG_KEY_LEN, 0, 1},
    {AMSP_T_TAG_VALUE, K_STR, TAG_VALUE_LEN, 0, 1},
    {AMSP_T_NAME, K_STR, 256, 0, 1},
};

static const struct field_rule w_describe_volumes_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_TIMEOUT_MS, K_U32, 4, 1, 1},
    {AMSP_T_VOLUME_ID, K_STR, IDLEN, 1, W_MAXVOL},
};

/* The image's attributes, as in W_OK's answer to W_DESCRIBE_IMAGE. */
#define IMAGE_ATTR_RULES                                                                           \
	{AMSP_T_ARCHITECTURE, K_STR, 16, 0, 1}, {AMSP_T_VIRT_TYPE, K_STR, 16, 0, 1},               \
	    {AMSP_T_ENA, K_U8, 1, 0, 1}, {AMSP_T_BOOT_MODE, K_STR, 24, 0, 1},                      \
	    {AMSP_T_SRIOV, K_STR, 16, 0, 1}, {AMSP_T_TPM, K_STR, 16, 0, 1},                        \
	    {AMSP_T_IMDS_SUPPORT, K_STR, 16, 0, 1}, {AMSP_T_ROOT_DEVICE, K_STR, IDLEN, 0, 1},      \
	    {AMSP_T_DEVICE_NAME, K_STR, IDLEN, 0, W_MAXVOL},                                       \
	    {AMSP_T_SNAPSHOT_ID, K_STR, IDLEN, 0, W_MAXVOL},                                       \
	    {AMSP_T_VOLUME_TYPE, K_STR, 16, 0, W_MAXVOL},                                          \
	    {AMSP_T_VOLUME_SIZE, K_U32, 4, 0, W_MAXVOL}, {AMSP_T_IOPS, K_U32, 4, 0, W_MAXVOL},     \
	    {AMSP_T_THROUGHPUT, K_U32, 4, 0, W_MAXVOL},                                            \
	{                                                                                          \
		AMSP_T_DELETE_ON_TERM, K_U8, 1, 0, W_MAXVOL                                        \
	}

static const struct field_rule w_register_image_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_TIMEOUT_MS, K_U32, 4, 1, 1},
    {AMSP_T_DRY_RUN, K_U8, 1, 1, 1},
    {AMSP_T_NAME, K_STR, 256, 1, 1},
    {AMSP_T_DESCRIPTION, K_STR, 1024, 0, 1},
    {AMSP_T_TAG_KEY, K_STR, TAG_KEY_LEN, 0, W_MAXTAGS},
    {AMSP_T_TAG_VALUE, K_STR, TAG_VALUE_LEN, 0, W_MAXTAGS},
    IMAGE_ATTR_RULES,
};

static const struct field_rule w_create_image_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_TIMEOUT_MS, K_U32, 4, 1, 1},
    {AMSP_T_DRY_RUN, K_U8, 1, 1, 1},
    {AMSP_T_HOLD_LOG, K_U8, 1, 1, 1},
    {AMSP_T_INSTANCE_ID, K_STR, IDLEN, 1, 1},
    {AMSP_T_NAME, K_STR, 256, 1, 1},
    {AMSP_T_DESCRIPTION, K_STR, 1024, 0, 1},
    {AMSP_T_TAG_KEY, K_STR, TAG_KEY_LEN, 0, W_MAXTAGS},
    {AMSP_T_TAG_VALUE, K_STR, TAG_VALUE_LEN, 0, W_MAXTAGS},
};

static const struct field_rule w_deregister_image_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_TIMEOUT_MS, K_U32, 4, 1, 1},
    {AMSP_T_IMAGE_ID, K_STR, IDLEN, 1, 1},
};

static const struct field_rule w_check_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_TIMEOUT_MS, K_U32, 4, 1, 1},
    {AMSP_T_CHECK_ACTION, K_STR, 32, 0, 32},
    /* A volume of the database: CreateTags' and DescribeVolumes' resource. */
    {AMSP_T_VOLUME_ID, K_STR, IDLEN, 0, 1},
};

static const struct field_rule w_abandon_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
};

static const struct field_rule w_ok_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_INSTANCE_ID, K_STR, IDLEN, 0, 1},
    {AMSP_T_REGION, K_STR, IDLEN, 0, 1},
    {AMSP_T_VOLUME_ID, K_STR, IDLEN, 0, W_MAXVOL},
    {AMSP_T_SNAPSHOT_VOLUME, K_STR, IDLEN, 0, W_MAXVOL},
    {AMSP_T_SNAPSHOT_STATE, K_STR, 16, 0, W_MAXVOL},
    /* Images and volumes: DESCRIBE_INSTANCE, DESCRIBE_IMAGE, DESCRIBE_VOLUMES, *_IMAGE. */
    {AMSP_T_IMAGE_ID, K_STR, IDLEN, 0, 1},
    {AMSP_T_IMAGE_STATE, K_STR, 16, 0, 1},
    {AMSP_T_NAME, K_STR, 256, 0, 1},
    {AMSP_T_PLATFORM, K_STR, 64, 0, 1},
    {AMSP_T_USAGE_OPERATION, K_STR, 32, 0, 1},
    {AMSP_T_PRODUCT_CODE, K_STR, 64, 0, 8},
    {AMSP_T_PRODUCT_CODE_TYPE, K_STR, 16, 0, 8},
    IMAGE_ATTR_RULES,
    /* W_CHECK's rows. */
    CHECK_ROW_RULES,
    /* DESCRIBE_INSTANCE with DRY_RUN: how the DryRun made with it failed. */
    {AMSP_T_ERROR_CODE, K_STR, 64, 0, 1},
    {AMSP_T_ERROR_MESSAGE, K_STR, 2048, 0, 1},
};

static const struct field_rule w_error_rules[] = {
    {AMSP_T_SEQ, K_U32, 4, 1, 1},
    {AMSP_T_ERROR_CODE, K_STR, 64, 1, 1},
    {AMSP_T_ERROR_MESSAGE, K_STR, 2048, 1, 1},
};

#define RULES(t, n, r)                                                                             \
	{                                                                                          \
		t, n, r, sizeof(r) / sizeof(r[0])                                                  \
	}
static const struct msg_rule msg_rules[] = {
    RULES(AMSP_PREPARE, "PREPARE", prepare_rules),
    RULES(AMSP_PREPARED, "PREPARED", prepared_rules),
    RULES(AMSP_SNAPSHOT, "SNAPSHOT", snapshot_rules),
    RULES(AMSP_PENDING, "PENDING", pending_rules),
    RULES(AMSP_FINISH, "FINISH", finish_rules),
    RULES(AMSP_DONE, "DONE", done_rules),
    RULES(AMSP_ABORT, "ABORT", abort_rules),
    RULES(AMSP_ERROR, "ERROR", error_rules),
    RULES(AMSP_STATUS, "STATUS", status_rules),
    RULES(AMSP_THAW, "THAW", status_rules),
    RULES(AMSP_STATUS_REPLY, "STATUS_REPLY", status_reply_rules),
    RULES(AMSP_JOB, "JOB", job_rules),
    RULES(AMSP_JOB_STARTED, "JOB_STARTED", job_started_rules),
    RULES(AMSP_JOB_OUTPUT, "JOB_OUTPUT", job_output_rules),
    RULES(AMSP_JOB_RESULT, "JOB_RESULT", job_result_rules),
    RULES(AMSP_CHECK, "CHECK", check_rules),
    RULES(AMSP_CHECK_REPLY, "CHECK_REPLY", check_reply_rules),
    RULES(AMSP_W_READY, "W_READY", w_ready_rules),
    RULES(AMSP_W_DESCRIBE_INSTANCE, "W_DESCRIBE_INSTANCE", w_describe_instance_rules),
    RULES(AMSP_W_CREATE_SNAPSHOTS, "W_CREATE_SNAPSHOTS", w_create_snapshots_rules),
    RULES(AMSP_W_CREATE_TAGS, "W_CREATE_TAGS", w_create_tags_rules),
    RULES(AMSP_W_FIND_SNAPSHOTS, "W_FIND_SNAPSHOTS", w_find_snapshots_rules),
    RULES(AMSP_W_ABANDON, "W_ABANDON", w_abandon_rules),
    RULES(AMSP_W_DESCRIBE_IMAGE, "W_DESCRIBE_IMAGE", w_describe_image_rules),
    RULES(AMSP_W_DESCRIBE_VOLUMES, "W_DESCRIBE_VOLUMES", w_describe_volumes_rules),
    RULES(AMSP_W_REGISTER_IMAGE, "W_REGISTER_IMAGE", w_register_image_rules),
    RULES(AMSP_W_CREATE_IMAGE, "W_CREATE_IMAGE", w_create_image_rules),
    RULES(AMSP_W_DEREGISTER_IMAGE, "W_DEREGISTER_IMAGE", w_deregister_image_rules),
    RULES(AMSP_W_CHECK, "W_CHECK", w_check_rules),
    RULES(AMSP_W_OK, "W_OK", w_ok_rules),
    RULES(AMSP_W_ERROR, "W_ERROR", w_error_rules),
};

static const struct msg_rule *find_msg_rule(uint16_t type)
{
	size_t i;

	for (i = 0; i < sizeof(msg_rules) / sizeof(msg_rules[0]); i++)
		if (msg_rules[i].type == type)
			return &msg_rules[i];
	return NULL;
}

const char *amsp_msg_name(uint16_t type)
{
	const struct msg_rule *r = find_msg_rule(type);

	return r ? r->name : "UNKNOWN";
}

static void put_be16(unsigned char *p, uint16_t v)
{
	p[0] = (unsigned char)(v >> 8);
	p[1] = (unsigned char)v;
}

static void put_be32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint16_t get_be16(const unsigned char *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t get_be32(const unsigned char *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) |
	       (uint32_t)p[3];
}

void amsp_begin(struct amsp_writer *w, unsigned char *buf, size_t cap, enum amsp_msg type)
{
	w->buf = buf;
	w->cap = cap;
	w->len = AMSP_HEADER_LEN;
	w->ok = cap >= AMSP_HEADER_LEN;
	if (w->ok) {
		memcpy(buf, AMSP_MAGIC, 4);
		put_be16(buf + 4, AMSP_VERSION);
		put_be16(buf + 6, (uint16_t)type);
	}
}

static void put_field(struct amsp_writer *w, enum amsp_tag tag, const void *v, size_t len)
{
	if (!w->ok || len > 0xffff || w->len + 4 + len > w->cap ||
	    w->len + 4 + len > AMSP_HEADER_LEN + AMSP_MAX_PAYLOAD) {
		w->ok = false;
		return;
	}
	put_be16(w->buf + w->len, (uint16_t)tag);
	put_be16(w->buf + w->len + 2, (uint16_t)len);
	if (len)
		memcpy(w->buf + w->len + 4, v, len);
	w->len += 4 + len;
}

void amsp_put_str(struct amsp_writer *w, enum amsp_tag tag, const char *s)
{
	put_field(w, tag, s, strlen(s));
}

void amsp_put_u8(struct amsp_writer *w, enum amsp_tag tag, uint8_t v)
{
	put_field(w, tag, &v, 1);
}

void amsp_put_u32(struct amsp_writer *w, enum amsp_tag tag, uint32_t v)
{
	unsigned char b[4];

	put_be32(b, v);
	put_field(w, tag, b, 4);
}

void amsp_put_u64(struct amsp_writer *w, enum amsp_tag tag, uint64_t v)
{
	unsigned char b[8];

	put_be32(b, (uint32_t)(v >> 32));
	put_be32(b + 4, (uint32_t)v);
	put_field(w, tag, b, 8);
}

void amsp_put_str_if(struct amsp_writer *w, enum amsp_tag tag, const char *s)
{
	if (s && s[0])
		amsp_put_str(w, tag, s);
}

uint32_t amsp_u32_of(long v)
{
	return v < 0 ? 0 : v > 0x7fffffffL ? 0x7fffffffU : (uint32_t)v;
}

size_t amsp_end(struct amsp_writer *w)
{
	if (!w->ok)
		return 0;
	put_be32(w->buf + 8, (uint32_t)(w->len - AMSP_HEADER_LEN));
	return w->len;
}

long amsp_header_payload_len(const unsigned char *hdr, const char **why)
{
	uint32_t len;

	if (memcmp(hdr, AMSP_MAGIC, 4) != 0) {
		*why = "bad magic";
		return -1;
	}
	if (get_be16(hdr + 4) != AMSP_VERSION) {
		*why = "unsupported protocol version";
		return -1;
	}
	if (!find_msg_rule(get_be16(hdr + 6))) {
		*why = "unknown message type";
		return -1;
	}
	len = get_be32(hdr + 8);
	if (len > AMSP_MAX_PAYLOAD) {
		*why = "payload too long";
		return -1;
	}
	return (long)len;
}

static const struct field_rule *find_field_rule(const struct msg_rule *mr, uint16_t tag)
{
	size_t i;

	for (i = 0; i < mr->nfields; i++)
		if (mr->fields[i].tag == tag)
			return &mr->fields[i];
	return NULL;
}

int amsp_decode(const unsigned char *frame, size_t len, struct amsp_msgview *out, const char **why)
{
	const struct msg_rule *mr;
	long plen;
	size_t pos, i;

	if (len < AMSP_HEADER_LEN) {
		*why = "short frame";
		return -1;
	}
	plen = amsp_header_payload_len(frame, why);
	if (plen < 0)
		return -1;
	if ((size_t)plen != len - AMSP_HEADER_LEN) {
		*why = "frame length does not match header";
		return -1;
	}
	out->type = get_be16(frame + 6);
	out->nfields = 0;
	mr = find_msg_rule(out->type);

	for (pos = AMSP_HEADER_LEN; pos < len;) {
		const struct field_rule *fr;
		uint16_t tag, flen;

		if (len - pos < 4) {
			*why = "truncated field header";
			return -1;
		}
		tag = get_be16(frame + pos);
		flen = get_be16(frame + pos + 2);
		pos += 4;
		if (flen > len - pos) {
			*why = "truncated field";
			return -1;
		}
		fr = find_field_rule(mr, tag);
		if (!fr) {
			*why = "field not allowed in this message";
			return -1;
		}
		switch (fr->kind) {
		case K_STR:
			if (flen > fr->max_len) {
				*why = "string field too long";
				return -1;
			}
			if (memchr(frame + pos, '\0', flen)) {
				*why = "string field contains a NUL byte";
				return -1;
			}
			break;
		case K_U8:
			if (flen != 1) {
				*why = "bad u8 field";
				return -1;
			}
			break;
		case K_U32:
			if (flen != 4) {
				*why = "bad u32 field";
				return -1;
			}
			break;
		case K_U64:
			if (flen != 8) {
				*why = "bad u64 field";
				return -1;
			}
			break;
		}
		if (out->nfields >= AMSP_MAX_FIELDS) {
			*why = "too many fields";
			return -1;
		}
		out->fields[out->nfields].tag = tag;
		out->fields[out->nfields].len = flen;
		out->fields[out->nfields].value = frame + pos;
		out->nfields++;
		pos += flen;
	}

	for (i = 0; i < mr->nfields; i++) {
		size_t n = amsp_count(out, (enum amsp_tag)mr->fields[i].tag);

		if (n < mr->fields[i].min) {
			*why = "required field missing";
			return -1;
		}
		if (n > mr->fields[i].max) {
			*why = "field repeated too often";
			return -1;
		}
	}
	return 0;
}

const struct amsp_field *amsp_get_nth(const struct amsp_msgview *m, enum amsp_tag tag, size_t idx)
{
	size_t i;

	for (i = 0; i < m->nfields; i++)
		if (m->fields[i].tag == tag && idx-- == 0)
			return &m->fields[i];
	return NULL;
}

const struct amsp_field *amsp_get(const struct amsp_msgview *m, enum amsp_tag tag)
{
	return amsp_get_nth(m, tag, 0);
}

size_t amsp_count(const struct amsp_msgview *m, enum amsp_tag tag)
{
	size_t i, n = 0;

	for (i = 0; i < m->nfields; i++)
		if (m->fields[i].tag == tag)
			n++;
	return n;
}

int amsp_copy_str(const struct amsp_field *f, char *dst, size_t dstsz)
{
	if (!f || (size_t)f->len >= dstsz) {
		if (dstsz)
			dst[0] = '\0';
		return -1;
	}
	memcpy(dst, f->value, f->len);
	dst[f->len] = '\0';
	return 0;
}

uint8_t amsp_u8(const struct amsp_field *f)
{
	return f ? f->value[0] : 0;
}

uint32_t amsp_u32(const struct amsp_field *f)
{
	return f ? get_be32(f->value) : 0;
}

uint64_t amsp_u64(const struct amsp_field *f)
{
	return f ? ((uint64_t)get_be32(f->value) << 32) | get_be32(f->value + 4) : 0;
}
