/*
 * protocol.h - the wire protocol between the extension and the helper.
 *
 * Shared by both sides (the extension compiles protocol.c into its module),
 * so this code allocates nothing: the encoder writes into a caller's buffer
 * and the decoder returns views into the received frame.
 *
 * A frame is a 12-byte header followed by a payload:
 *
 *	magic "AMSP" (4) | version u16 | message type u16 | payload length u32
 *
 * and the payload is a sequence of fields:
 *
 *	tag u16 | length u16 | value[length]
 *
 * All integers are big-endian.  Every message type has a fixed set of
 * allowed tags, each with a maximum length and a maximum count; a frame with
 * an unknown version or type, an unknown or repeated tag, a field over its
 * bound, a string with a NUL byte, a missing required field or trailing
 * bytes is malformed, and the receiver closes the connection.  There is no
 * best-effort parsing.
 */
#ifndef AMIS_PROTOCOL_H
#define AMIS_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define AMSP_MAGIC "AMSP"
#define AMSP_VERSION 1
#define AMSP_HEADER_LEN 12
#define AMSP_MAX_PAYLOAD 65536
#define AMSP_MAX_FIELDS 256
/* Bounds of the public messages, which the helper's operation obeys too. */
#define AMSP_MAX_VOLUMES 32     /* volumes, tablespaces, filesystems, snapshots a message lists */
#define AMSP_MAX_WARNINGS 8     /* WARNING fields in DONE */
#define AMSP_MAX_ID_LEN 64      /* a request, instance, volume or snapshot id */
#define AMSP_MAX_STATUS_JOBS 16 /* running jobs a STATUS_REPLY lists */
/* Jobs: arguments a JOB carries, the report a job may write, a piece of it. */
#define AMSP_JOB_MAX_ARGS 48
#define AMSP_JOB_MAX_ARG_LEN 8192
#define AMSP_JOB_MAX_OUTPUT (1024 * 1024)
#define AMSP_JOB_CHUNK 60000
/* Between the helper and its worker: EC2's own limits. */
#define AMSP_W_MAX_VOLUMES 64 /* channel.h EC2_MAX_INSTANCE_VOLUMES */
#define AMSP_MAX_CHECKS 48    /* rows of a CHECK_REPLY (4 fields each, AMSP_MAX_FIELDS) */
#define AMSP_CHECK_TEXT 1024  /* a row's detail or hint */

enum amsp_msg {
	/* extension -> helper */
	AMSP_PREPARE = 1,  /* resolve paths, check, preflight; nothing blocks yet */
	AMSP_SNAPSHOT = 3, /* the backup has started: freeze, snapshot, thaw */
	AMSP_FINISH = 5,   /* the backup has stopped: tag with its metadata */
	AMSP_ABORT = 7,    /* the client gives up; the helper ends the operation */
	/* helper -> extension */
	AMSP_PREPARED = 2,
	AMSP_PENDING = 4, /* snapshots are pending and filesystems thawed */
	AMSP_DONE = 6,
	AMSP_ERROR = 8,
	/* anyone allowed -> helper, answered at any time, also while frozen */
	AMSP_STATUS = 9, /* what is the helper doing? */
	AMSP_THAW = 11,  /* thaw now: abandon the call made while frozen */
	AMSP_STATUS_REPLY = 10,
	/*
	 * A long job run by the helper as a child (doc/protocol.md, "Jobs"):
	 * sent only when the feature is asked for, so a helper without jobs
	 * refuses it as malformed and the client reports HelperTooOld.
	 */
	AMSP_JOB = 13,         /* run a job of a kind, with typed arguments */
	AMSP_JOB_STARTED = 14, /* the job's child runs */
	AMSP_JOB_OUTPUT = 16,  /* a piece of the job's report (stdout) */
	AMSP_JOB_RESULT = 18,  /* the job ended: exit status, outcome */
	/*
	 * The preflight check (doc/protocol.md, "Check"): sent only when a
	 * check is asked for; a helper without it refuses the frame as
	 * malformed and the client reports HelperTooOld.
	 */
	AMSP_CHECK = 20,       /* check everything a snapshot needs; change nothing */
	AMSP_CHECK_REPLY = 21, /* one row per check */
	/*
	 * Internal, between the helper and its unprivileged EC2 worker over a
	 * private socketpair (never accepted from a client; see root/worker_client.h).
	 * Every request carries a SEQ that its answer repeats.
	 */
	AMSP_W_READY = 101,             /* resolve instance, region, credentials */
	AMSP_W_DESCRIBE_INSTANCE = 103, /* the instance's block device mapping */
	AMSP_W_CREATE_SNAPSHOTS = 105,
	AMSP_W_CREATE_TAGS = 107,
	AMSP_W_FIND_SNAPSHOTS = 109, /* ours, by one tag's exact value */
	AMSP_W_ABANDON = 111,        /* the helper no longer waits for SEQ */
	AMSP_W_DESCRIBE_IMAGE = 113, /* one image: by id, or ours by tag or name */
	AMSP_W_DESCRIBE_VOLUMES = 115,
	AMSP_W_REGISTER_IMAGE = 117,
	AMSP_W_CREATE_IMAGE = 119, /* NoReboot=true */
	AMSP_W_DEREGISTER_IMAGE = 121,
	AMSP_W_CHECK = 123, /* IMDS, credentials, region and DryRuns of CHECK_ACTIONs: rows */
	AMSP_W_OK = 100,
	AMSP_W_ERROR = 102,
};

enum amsp_tag {
	AMSP_T_REQUEST_ID = 1,       /* str: the extension's request id */
	AMSP_T_NAME = 2,             /* str: the user's snapshot name */
	AMSP_T_FREEZE = 3,           /* u8: 1 = freeze filesystems, 0 = don't */
	AMSP_T_PATH_DATA = 4,        /* str: data directory */
	AMSP_T_PATH_WAL = 5,         /* str: real path of pg_wal */
	AMSP_T_PATH_TABLESPACE = 6,  /* str, repeated: tablespace locations */
	AMSP_T_SYSTEM_ID = 7,        /* str: database system identifier */
	AMSP_T_PG_VERSION = 8,       /* str: server_version_num */
	AMSP_T_INSTANCE_ID = 20,     /* str */
	AMSP_T_REGION = 21,          /* str */
	AMSP_T_VOLUME_ID = 22,       /* str, repeated */
	AMSP_T_MOUNT_POINT = 23,     /* str, repeated: filesystems to freeze */
	AMSP_T_START_LSN = 30,       /* str: "X/X" */
	AMSP_T_TIMELINE = 31,        /* u32 */
	AMSP_T_SNAPSHOT_ID = 40,     /* str, repeated, paired with SNAPSHOT_VOLUME */
	AMSP_T_SNAPSHOT_VOLUME = 41, /* str, repeated */
	AMSP_T_FREEZE_USEC = 42,     /* u64: frozen -> thawed */
	AMSP_T_SNAPSHOT_USEC = 43,   /* u64: duration of the CreateSnapshots call */
	AMSP_T_STOP_LSN = 50,        /* str */
	AMSP_T_BACKUP_LABEL = 51,    /* str */
	AMSP_T_TABLESPACE_MAP = 52,  /* str */
	AMSP_T_WARNING = 60,         /* str */
	AMSP_T_ERROR_CODE = 70,      /* str */
	AMSP_T_ERROR_MESSAGE = 71,   /* str */
	AMSP_T_ERROR_STAGE = 72,     /* str: prepare, snapshot, finish, ... */
	AMSP_T_REASON = 73,          /* str */
	AMSP_T_STATE = 80,           /* str: idle, busy, frozen, thaw-pending */
	AMSP_T_FROZEN_USEC = 81,     /* u64: frozen for this long so far */
	/* Images (optional: sent only when an AMI is asked for). */
	AMSP_T_IMAGE_METHOD = 90,            /* str: register | create (PREPARE) */
	AMSP_T_ALLOW_PRODUCT_CODE_LOSS = 91, /* u8 (PREPARE) */
	AMSP_T_IMAGE_ID = 92,                /* str: ami-... */
	/* Jobs (JOB, JOB_OUTPUT, JOB_RESULT). */
	AMSP_T_JOB_KIND = 140,      /* str: verify */
	AMSP_T_JOB_ARG_KEY = 141,   /* str, repeated, paired with JOB_ARG_VALUE */
	AMSP_T_JOB_ARG_VALUE = 142, /* str, repeated */
	AMSP_T_JOB_OUTPUT = 143,    /* str: a piece of the report */
	AMSP_T_JOB_EXIT = 144,      /* u32: the exit status (0-255) */
	AMSP_T_JOB_SIGNAL = 145,    /* u32: the signal that ended it */
	AMSP_T_JOB_OUTCOME = 146,   /* str: the kind's name of the exit status */
	AMSP_T_JOB_USEC = 147,      /* u64: how long it ran */
	AMSP_T_JOB_TRUNCATED = 148, /* u8: the report was cut at AMSP_JOB_MAX_OUTPUT */
	/* The preflight check (CHECK_REPLY; W_CHECK and its W_OK). */
	AMSP_T_HELPER_VERSION = 160, /* str: the helper's version */
	AMSP_T_CHECK_NAME = 161,     /* str, repeated: a row's name */
	AMSP_T_CHECK_RESULT = 162,   /* str, repeated: ok | failed | skipped */
	AMSP_T_CHECK_DETAIL = 163,   /* str, repeated: what was found */
	AMSP_T_CHECK_HINT = 164,     /* str, repeated: what to do ("" when none) */
	AMSP_T_CHECK_ACTION = 165,   /* str, repeated: an EC2 action to DryRun (W_CHECK) */
	AMSP_T_STEP = 166,           /* str: the operation's step (STATUS_REPLY) */
	AMSP_T_LIST_JOBS = 167,      /* u8: STATUS: also list the running jobs */
	AMSP_T_JOB_ID = 168,         /* str, repeated: a running job's request id (STATUS_REPLY) */
	AMSP_T_JOB_PID = 169,        /* u32, repeated: its process */
	/* A snapshot taken on a hot standby (optional in PREPARE). */
	AMSP_T_STANDBY = 170,      /* u8: 1 = taken on a standby */
	AMSP_T_PRIMARY_HOST = 171, /* str: host[:port] of primary_conninfo, never more */
	AMSP_T_SYNC_STATE = 172,   /* str: the primary's sync_state for this standby */
	/* Internal (helper <-> EC2 worker) only. */
	AMSP_T_SEQ = 100,               /* u32 */
	AMSP_T_TIMEOUT_MS = 101,        /* u32 */
	AMSP_T_DRY_RUN = 102,           /* u8 */
	AMSP_T_HOLD_LOG = 103,          /* u8: buffer the worker's log during the call */
	AMSP_T_DESCRIPTION = 104,       /* str */
	AMSP_T_EXCLUDE_BOOT = 105,      /* u8 */
	AMSP_T_EXCLUDE_VOLUME = 106,    /* str, repeated */
	AMSP_T_TAG_KEY = 107,           /* str, repeated, paired with TAG_VALUE */
	AMSP_T_TAG_VALUE = 108,         /* str, repeated */
	AMSP_T_RESOURCE_ID = 109,       /* str, repeated */
	AMSP_T_ROOT_DEVICE = 110,       /* str */
	AMSP_T_DEVICE_NAME = 111,       /* str, repeated, paired with VOLUME_ID */
	AMSP_T_SNAPSHOT_STATE = 112,    /* str, repeated, paired with SNAPSHOT_ID */
	AMSP_T_ARCHITECTURE = 113,      /* str */
	AMSP_T_VIRT_TYPE = 114,         /* str: hvm | paravirtual */
	AMSP_T_ENA = 115,               /* u8 */
	AMSP_T_BOOT_MODE = 116,         /* str */
	AMSP_T_SRIOV = 117,             /* str */
	AMSP_T_TPM = 118,               /* str */
	AMSP_T_IMDS_SUPPORT = 119,      /* str */
	AMSP_T_PLATFORM = 120,          /* str: platformDetails */
	AMSP_T_USAGE_OPERATION = 121,   /* str */
	AMSP_T_PRODUCT_CODE = 122,      /* str, repeated, paired with PRODUCT_CODE_TYPE */
	AMSP_T_PRODUCT_CODE_TYPE = 123, /* str, repeated */
	AMSP_T_DELETE_ON_TERM = 124,    /* u8, repeated, paired with DEVICE_NAME */
	AMSP_T_VOLUME_TYPE = 125,       /* str, repeated: one per volume or mapping */
	AMSP_T_VOLUME_SIZE = 126,       /* u32, repeated (GiB) */
	AMSP_T_IOPS = 127,              /* u32, repeated (0: none) */
	AMSP_T_THROUGHPUT = 128,        /* u32, repeated (0: none) */
	AMSP_T_IMAGE_STATE = 129,       /* str */
	/* W_CREATE_TAGS: tags of one resource only (made at once with the others'). */
	AMSP_T_ITEM_RESOURCE = 130,  /* u32, repeated: index into RESOURCE_ID */
	AMSP_T_ITEM_TAG_KEY = 131,   /* str, repeated, paired with ITEM_RESOURCE */
	AMSP_T_ITEM_TAG_VALUE = 132, /* str, repeated, paired with ITEM_RESOURCE */
};

struct amsp_field {
	uint16_t tag;
	uint16_t len;
	const unsigned char *value; /* points into the frame; not NUL-terminated */
};

struct amsp_msgview {
	uint16_t type;
	size_t nfields;
	struct amsp_field fields[AMSP_MAX_FIELDS];
};

/* Encoder: writes into buf[cap].  After any failure, ok is false and stays so. */
struct amsp_writer {
	unsigned char *buf;
	size_t cap;
	size_t len;
	bool ok;
};

void amsp_begin(struct amsp_writer *w, unsigned char *buf, size_t cap, enum amsp_msg type);
void amsp_put_str(struct amsp_writer *w, enum amsp_tag tag, const char *s);
void amsp_put_u8(struct amsp_writer *w, enum amsp_tag tag, uint8_t v);
void amsp_put_u32(struct amsp_writer *w, enum amsp_tag tag, uint32_t v);
void amsp_put_u64(struct amsp_writer *w, enum amsp_tag tag, uint64_t v);
/* A string only when it is not NULL or empty (an optional field). */
void amsp_put_str_if(struct amsp_writer *w, enum amsp_tag tag, const char *s);
/* A count or size for a u32 field: negative is 0, beyond INT32_MAX is INT32_MAX. */
uint32_t amsp_u32_of(long v);
/* Finishes the header; returns the frame length, or 0 if anything overflowed. */
size_t amsp_end(struct amsp_writer *w);

/*
 * Inspects a frame header (at least AMSP_HEADER_LEN bytes).  Returns the
 * payload length, or -1 with a static reason in *why if the header is bad.
 */
long amsp_header_payload_len(const unsigned char *hdr, const char **why);

/*
 * Validates and splits a whole frame (header + payload).  Returns 0, or -1
 * with a static reason in *why.
 */
int amsp_decode(const unsigned char *frame, size_t len, struct amsp_msgview *out, const char **why);

/* Accessors on a decoded message.  Decoding already checked types/lengths. */
const struct amsp_field *amsp_get(const struct amsp_msgview *m, enum amsp_tag tag);
size_t amsp_count(const struct amsp_msgview *m, enum amsp_tag tag);
/* The idx-th occurrence of tag, or NULL. */
const struct amsp_field *amsp_get_nth(const struct amsp_msgview *m, enum amsp_tag tag, size_t idx);
/* Copies a string field into dst (NUL-terminated); -1 if it does not fit. */
int amsp_copy_str(const struct amsp_field *f, char *dst, size_t dstsz);
uint8_t amsp_u8(const struct amsp_field *f);
uint32_t amsp_u32(const struct amsp_field *f);
uint64_t amsp_u64(const struct amsp_field *f);

const char *amsp_msg_name(uint16_t type);

#endif
