/*
 * errcodes.h - the one registry of the error codes the helper sets, sends
 * and acts on, with what each means and how the helper treats it.
 *
 * A code travels as text (struct amis_err, the wire protocol, the SQL
 * error, ami_snapshot_history.error_code), because EC2's own codes are an
 * open set.  In the code it is set and compared as an enum: err_set() takes
 * an AMIS_E_* value, err_is() and err_flags() look a text up here.  The
 * table in doc/errors.md lists the same codes; test/unit/test_errcodes.py
 * checks that the two agree and that no source sets a code missing here.
 *
 * X(ID, "Code", flags, "what it means")
 */
#ifndef AMIS_ERRCODES_H
#define AMIS_ERRCODES_H

/* Worth another attempt after a back-off (never while frozen). */
#define AMIS_F_RETRY 0x1
/* The call's answer was lost or abandoned: it may have worked at EC2. */
#define AMIS_F_MAYBE_DONE 0x2
/* EC2 refused the credentials: fetch them again before the next call. */
#define AMIS_F_CREDS 0x4
/* EC2's own code (Amazon EC2 API Reference, "Error codes"). */
#define AMIS_F_EC2 0x8

#define AMIS_ERROR_CODES(X)                                                                        \
	/* Requests and the helper itself */                                                       \
	X(BUSY, "Busy", 0, "another snapshot operation is in progress; one runs at a time")        \
	X(JOB_START_FAILED, "JobStartFailed", 0, "the helper could not start a job's command")     \
	X(BAD_STATE, "BadState", 0, "a request that the operation's state does not allow")         \
	X(INVALID_REQUEST, "InvalidRequest", 0, "a malformed or out-of-order request")             \
	X(INVALID_NAME, "InvalidName", 0, "a snapshot name outside EC2's AMI-name rules")          \
	X(INVALID_ARGUMENT, "InvalidArgument", 0, "an internal call was given a bad argument")     \
	X(REQUEST_TOO_LARGE, "RequestTooLarge", 0, "a request does not fit the protocol's bounds") \
	X(RESPONSE_TOO_LARGE, "ResponseTooLarge", 0, "an answer does not fit in one frame")        \
	X(CLIENT_GONE, "ClientGone", AMIS_F_MAYBE_DONE,                                            \
	  "the client went away during the call; the call was abandoned")                          \
	X(HELPER_STOPPING, "HelperStopping", 0, "the helper is stopping; nothing new is frozen")   \
	X(STOP_REQUESTED, "StopRequested", AMIS_F_MAYBE_DONE,                                      \
	  "the helper was told to stop while frozen; the call in flight was abandoned, thawed")    \
	X(TOO_MANY_CONNECTIONS, "TooManyConnections", 0,                                           \
	  "every connection slot of the helper is taken by a call in progress")                    \
	X(HELPER_ERROR, "HelperError", 0, "an error the helper reported without a code")           \
	X(HELPER_SOCKET, "HelperSocket", 0, "the helper's socket or its directory is unsafe")      \
	X(HELPER_CONFIG, "HelperConfig", 0, "the helper's configuration is invalid")               \
	X(OUT_OF_MEMORY, "OutOfMemory", 0, "an allocation failed")                                 \
	X(UNKNOWN_ERROR, "UnknownError", 0, "EC2 sent a code that is not an identifier")           \
	/* Paths, volumes and the state directory */                                               \
	X(INVALID_PATH, "InvalidPath", 0, "a database path is not absolute")                       \
	X(PATH_NOT_FOUND, "PathNotFound", 0, "a database path does not exist")                     \
	X(PATH_NOT_ALLOWED, "PathNotAllowed", 0,                                                   \
	  "a database path is on a filesystem outside [filesystems] allow")                        \
	X(TOO_MANY_PATHS, "TooManyPaths", 0, "more database paths than the protocol carries")      \
	X(MOUNT_NOT_FOUND, "MountNotFound", 0, "no mount holds a database path")                   \
	X(MOUNT_CHANGED, "MountChanged", 0, "a filesystem was remounted between PREPARE and now")  \
	X(SYSFS_ERROR, "SysfsError", 0, "the block-device layout in sysfs could not be read")      \
	X(NOT_BLOCK_DEVICE, "NotBlockDevice", 0, "a filesystem is not on a block device")          \
	X(TOO_MANY_DISKS, "TooManyDisks", 0, "a filesystem spans more disks than supported")       \
	X(TOO_MANY_FILESYSTEMS, "TooManyFilesystems", 0, "more filesystems than supported")        \
	X(TOO_MANY_VOLUMES, "TooManyVolumes", 0, "more EBS volumes than supported")                \
	X(VOLUME_UNKNOWN, "VolumeUnknown", 0, "a disk's EBS volume id cannot be told")             \
	X(VOLUME_NOT_EBS, "VolumeNotEbs", 0, "a disk is not an EBS volume (instance store...)")    \
	X(VOLUME_NOT_FOUND, "VolumeNotFound", 0,                                                   \
	  "a disk is not in the instance's block device mapping")                                  \
	X(VOLUME_NOT_ATTACHED, "VolumeNotAttached", 0,                                             \
	  "a volume holding database files is not attached to this instance")                      \
	X(STATE_DIR, "StateDir", 0, "state_dir is missing or unsafe")                              \
	X(STATE_DIR_FROZEN, "StateDirFrozen", 0, "state_dir is on a filesystem to be frozen")      \
	X(PERMISSION_DENIED, "PermissionDenied", 0, "the kernel refused FIFREEZE/FITHAW")          \
	/* Freezing and thawing */                                                                 \
	X(ALREADY_FROZEN, "AlreadyFrozen", 0, "a filesystem was frozen by someone else already")   \
	X(FREEZE_NOT_SUPPORTED, "FreezeNotSupported", 0, "a filesystem cannot be frozen")          \
	X(FREEZE_FAILED, "FreezeFailed", 0, "FIFREEZE failed; everything frozen was thawed")       \
	X(FREEZE_BROKEN, "FreezeBroken", 0,                                                        \
	  "writes resumed before EC2 answered: the snapshot is not trusted")                       \
	X(THAW_FAILED, "ThawFailed", 0, "FITHAW failed; the helper keeps retrying")                \
	X(THAW_PENDING, "ThawPending", 0, "an earlier operation's thaw is still being retried")    \
	X(THAW_REQUESTED, "ThawRequested", AMIS_F_MAYBE_DONE,                                      \
	  "an administrator asked for a thaw; the call in flight was abandoned")                   \
	X(WATCHDOG_FAILED, "WatchdogFailed", 0, "the thawing watchdog could not be started")       \
	/* The EC2 worker */                                                                       \
	X(WORKER_FAILED, "WorkerFailed", 0, "the EC2 worker could not start")                      \
	X(WORKER_DIED, "WorkerDied", AMIS_F_MAYBE_DONE,                                            \
	  "the EC2 worker died or misbehaved during a call")                                       \
	X(WORKER_BUSY, "WorkerBusy", 0, "a call to the worker while another is in flight")         \
	X(WORKER_ERROR, "WorkerError", 0, "the worker reported an error without a code")           \
	/* IMDS and credentials */                                                                 \
	X(IMDS_UNAVAILABLE, "ImdsUnavailable", 0, "the instance metadata service does not answer") \
	X(IMDS_ERROR, "ImdsError", 0, "the instance metadata service answered something unusable") \
	X(NO_CREDENTIALS, "NoCredentials", 0, "no source of AWS credentials had any")              \
	X(MISSING_CREDENTIALS, "MissingCredentials", 0, "a call was to be signed without keys")    \
	X(PARTIAL_CREDENTIALS, "PartialCredentials", 0, "an access key without a secret, or v.v.") \
	X(MALFORMED_CREDENTIALS, "MalformedCredentials", 0, "a credentials document is unusable")  \
	X(CREDENTIALS_FILE, "CredentialsFile", 0, "the shared credentials file is unusable")       \
	X(PROFILE_NOT_FOUND, "ProfileNotFound", 0, "the credentials profile is not in the file")   \
	X(EXPIRED_CREDENTIALS, "ExpiredCredentials", 0, "the credentials expired and no new ones") \
	X(CRYPTO_ERROR, "CryptoError", 0, "OpenSSL failed while signing")                          \
	X(INVALID_ENDPOINT, "InvalidEndpoint", 0, "an EC2 or IMDS endpoint URL is invalid")        \
	/* EC2's answers, as the helper judges them */                                             \
	X(TIMEOUT, "Timeout", AMIS_F_RETRY | AMIS_F_MAYBE_DONE, "no answer in time")               \
	X(CONNECTION_ERROR, "ConnectionError", AMIS_F_RETRY | AMIS_F_MAYBE_DONE,                   \
	  "the connection failed or closed without an answer")                                     \
	X(MALFORMED_RESPONSE, "MalformedResponse", AMIS_F_MAYBE_DONE,                              \
	  "an answer that breaks the contract (doc/ec2-parsing.md)")                               \
	X(HTTP_ERROR, "HttpError", 0, "HttpError<status>: a non-EC2 error body, e.g. a proxy's")   \
	X(UNEXPECTED_SNAPSHOT_SET, "UnexpectedSnapshotSet", 0,                                     \
	  "CreateSnapshots did not return one snapshot of each volume asked for")                  \
	X(SNAPSHOT_FAILED, "SnapshotFailed", 0, "a snapshot is in a state other than pending")     \
	X(CREATE_TAGS_FAILED, "CreateTagsFailed", 0, "CreateTags returned false")                  \
	/* Images (the AMI methods) */                                                             \
	X(BILLING_PRODUCT_CODES, "BillingProductCodes", 0,                                         \
	  "the source image has billing product codes that RegisterImage would lose")              \
	X(IMAGE_NAME_IN_USE, "ImageNameInUse", 0, "one of our images has this name already")       \
	X(IMAGE_UNSUPPORTED, "ImageUnsupported", 0,                                                \
	  "the instance cannot be imaged as asked (its mapping, architecture, volumes)")           \
	X(IMAGE_TIMEOUT, "ImageTimeout", 0,                                                        \
	  "CreateImage's snapshots did not all exist within freeze_timeout")                       \
	X(IMAGE_FAILED, "ImageFailed", 0, "the image failed or lost a snapshot")                   \
	/* EC2's own codes that the helper acts on */                                              \
	X(REQUEST_LIMIT_EXCEEDED, "RequestLimitExceeded", AMIS_F_RETRY | AMIS_F_EC2,               \
	  "EC2 throttled the request")                                                             \
	X(THROTTLING, "Throttling", AMIS_F_RETRY | AMIS_F_EC2, "EC2 throttled the request")        \
	X(SNAPSHOT_RATE_EXCEEDED, "SnapshotCreationPerVolumeRateExceeded",                         \
	  AMIS_F_RETRY | AMIS_F_EC2, "snapshots of one volume too often; wait at least 15 s")      \
	X(CONCURRENT_SNAPSHOT_LIMIT, "ConcurrentSnapshotLimitExceeded", AMIS_F_RETRY | AMIS_F_EC2, \
	  "too many snapshots in progress")                                                        \
	X(INTERNAL_ERROR, "InternalError", AMIS_F_RETRY | AMIS_F_EC2, "EC2 failed (HTTP 500)")     \
	X(INTERNAL_FAILURE, "InternalFailure", AMIS_F_RETRY | AMIS_F_EC2, "EC2 failed")            \
	X(SERVICE_UNAVAILABLE, "ServiceUnavailable", AMIS_F_RETRY | AMIS_F_EC2,                    \
	  "EC2 is unavailable (HTTP 503)")                                                         \
	X(UNAVAILABLE, "Unavailable", AMIS_F_RETRY | AMIS_F_EC2, "EC2 is unavailable")             \
	X(DRY_RUN_OPERATION, "DryRunOperation", AMIS_F_EC2,                                        \
	  "a DryRun would have succeeded (success for a DryRun call)")                             \
	X(AUTH_FAILURE, "AuthFailure", AMIS_F_CREDS | AMIS_F_EC2,                                  \
	  "EC2 could not validate the credentials or signature")                                   \
	X(EXPIRED_TOKEN, "ExpiredToken", AMIS_F_CREDS | AMIS_F_EC2, "the session token expired")   \
	X(REQUEST_EXPIRED, "RequestExpired", AMIS_F_CREDS | AMIS_F_EC2,                            \
	  "the request's time is too far from EC2's clock")                                        \
	X(INVALID_CLIENT_TOKEN_ID, "InvalidClientTokenId", AMIS_F_CREDS | AMIS_F_EC2,              \
	  "the access key does not exist")                                                         \
	X(UNRECOGNIZED_CLIENT, "UnrecognizedClientException", AMIS_F_CREDS | AMIS_F_EC2,           \
	  "the security token is invalid")                                                         \
	X(UNAUTHORIZED_OPERATION, "UnauthorizedOperation", AMIS_F_EC2,                             \
	  "the IAM policy does not allow the action")                                              \
	X(INVALID_INSTANCE_ID_NOT_FOUND, "InvalidInstanceID.NotFound", AMIS_F_EC2,                 \
	  "EC2 does not know the instance")                                                        \
	X(INVALID_PARAMETER_VALUE, "InvalidParameterValue", AMIS_F_EC2,                            \
	  "a parameter EC2 (or the helper, before sending) refuses")

enum amis_code {
	AMIS_E_NONE = 0, /* not a code of ours: EC2's, unknown to the helper */
#define AMIS_ERRCODE_ENUM(id, str, flags, what) AMIS_E_##id,
	AMIS_ERROR_CODES(AMIS_ERRCODE_ENUM)
#undef AMIS_ERRCODE_ENUM
	    AMIS_E_COUNT
};

/* "Code" of a registered code ("" for AMIS_E_NONE). */
const char *amis_code_str(enum amis_code code);
/* The registered code of text (HttpError<status> is HTTP_ERROR), or AMIS_E_NONE. */
enum amis_code amis_code_of(const char *text);
/* AMIS_F_* of text; HttpError5xx also retryable. */
unsigned amis_code_flags(const char *text);

#endif
