/*
 * config.h - the helper's configuration file (INI, parsed with libinih).
 * Every key is documented in packaging/helper.conf.example and
 * doc/configuration.md.
 */
#ifndef AMIS_CONFIG_H
#define AMIS_CONFIG_H

#include "util.h"

#include <stdbool.h>
#include <sys/types.h>

#define CONFIG_MAX_LIST 32

struct config_kv {
	char *key;
	char *value;
};

struct helper_config {
	/* [helper] */
	char *socket_path;  /* socket file; its directory is created 0770 */
	char *socket_group; /* group owning the socket directory and socket */
	uid_t allowed_uids[CONFIG_MAX_LIST];
	size_t n_allowed_uids;
	long freeze_timeout_ms; /* thaw regardless after this long frozen */
	long client_timeout_ms; /* a silent client is dropped after this long */
	long ec2_timeout_ms;    /* EC2 calls made while not frozen */
	char *state_dir;        /* the "frozen" marker lives here; never on a frozen fs */
	long retries;           /* whole freeze cycles retried after a retryable EC2 error */
	long retry_backoff_ms;  /* first back-off; doubled (jittered) per retry, cap 20 s */
	char *log_level;
	char *worker_user; /* the unprivileged EC2 worker runs as this user */

	/* [filesystems] */
	char *allow[CONFIG_MAX_LIST]; /* mount points (or parents) that may be frozen */
	size_t n_allow;
	bool allow_root_filesystem; /* may freeze / and /boot */

	/* [volumes]: device -> EBS volume id, where no NVMe serial exists */
	struct config_kv volume_map[CONFIG_MAX_LIST];
	size_t n_volume_map;

	/* [aws] */
	char *region;           /* NULL: AWS_REGION or IMDS */
	char *instance_id;      /* NULL: IMDS */
	char *ec2_endpoint;     /* NULL: AWS_ENDPOINT_URL_EC2 or the regional one */
	char *imds_endpoint;    /* NULL: AWS_EC2_METADATA_SERVICE_ENDPOINT or default */
	char *profile;          /* NULL: AWS_PROFILE or "default" */
	char *credentials_file; /* NULL: AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials */
	bool preflight_dry_run; /* CreateSnapshots DryRun before freezing */
	long rewarm_after_ms;   /* idle longer than this: DryRun again just before freezing */

	/* [drill]: `ami-snapshot verify` (doc/verify.md) */
	char *drill_dir;            /* scratch directories of drills; default DEFAULT_DRILL_DIR */
	long drill_time_budget_ms;  /* amcheck's budget (default 10 min) */
	long drill_timeout_ms;      /* the whole drill (default 1 h) */
	char *drill_instance_type;  /* AMI drill: RunInstances' InstanceType (default t3.micro) */
	char *drill_subnet;         /* SubnetId; NULL: EC2's default */
	char *drill_security_group; /* SecurityGroupId.1; NULL: the default group */
	char *drill_key_name;       /* KeyName; NULL: none */
	/* Drills the helper runs for SQL callers (jobs, doc/protocol.md). */
	char *drill_command;          /* ami-snapshot; NULL: beside the helper's own binary */
	char *drill_device_dir;       /* --device-dir for them; NULL: verify's default */
	long drill_device_timeout_ms; /* --device-timeout; 0: verify's default */
	char *drill_dump_dir;         /* where dumps asked from SQL go; NULL: refused */
	long max_jobs;                /* jobs at once (default 1) */
	long job_kill_grace_ms;       /* SIGTERM -> SIGKILL of an abandoned job (default 60 s) */
	bool drill_section;           /* the file has a [drill] section */

	/* [retention]: `ami-snapshot prune`'s policies (doc/lifecycle.md), in order */
	char *retention_policies[CONFIG_MAX_LIST]; /* "PATTERN:RULE,..." as written */
	size_t n_retention_policies;

	/* [copy]: copies to other regions (doc/lifecycle.md) */
	char *copy_regions[CONFIG_MAX_LIST]; /* automatic copies after each backup (the helper,
	                                        later) */
	size_t n_copy_regions;
	char *copy_kms_key_id;                      /* KmsKeyId of the copies; NULL: default key */
	char *copy_share_accounts[CONFIG_MAX_LIST]; /* shared with after copying */
	size_t n_copy_share_accounts;
	char *copy_names; /* glob of the backup names copied automatically; default "*" */

	/* [lock]: snapshot locks (doc/lifecycle.md) */
	char *lock_mode;          /* governance | compliance; NULL: no automatic lock */
	long lock_days;           /* LockDuration, 1..36500 (default 0: must be set with mode) */
	long lock_cool_off_hours; /* CoolOffPeriod (compliance), 0..72 */
	char *lock_names;         /* glob of the names locked automatically; default "*" */

	/* [tags]: extra tags on every snapshot */
	struct config_kv tags[CONFIG_MAX_LIST];
	size_t n_tags;
};

#define DEFAULT_DRILL_DIR "/var/lib/ami-snapshot/drill"

/* Sets defaults.  */
void config_init(struct helper_config *c);
/* Loads a file over the defaults; -1 with a message naming file:line. */
int config_load_file(struct helper_config *c, const char *path, struct amis_err *err);
/* The same from a string (tests, fuzzing). */
int config_load_string(struct helper_config *c, const char *text, struct amis_err *err);
void config_free(struct helper_config *c);
/* Whether r looks like an AWS region name ("eu-west-1"). */
bool config_region_valid(const char *r);

#endif
