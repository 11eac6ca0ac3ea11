/*
 * ami_snapshot.h - what ami_snapshot.c shares with the other SQL functions
 * (verify.c, check.c): the GUCs of the helper's socket and timeout, the snapshot
 * name rules and request ids.
 */
#ifndef AMI_SNAPSHOT_H
#define AMI_SNAPSHOT_H

#include "nodes/pg_list.h"

extern char *helper_socket;		/* ami_snapshot.helper_socket */
extern int	request_timeout_ms; /* ami_snapshot.request_timeout */

/* ERROR unless name follows EC2's AMI-name rules (3-128 characters). */
extern void validate_name(const char *name);

/* An error's message, DETAIL and HINT as one text, for a history row. */
extern char *error_text(const ErrorData *edata);

/* A new random request id (a version 4 UUID). */
extern char *make_request_id(void);

/* The real path of pg_wal; the locations of the tablespaces (a List of char *). */
extern char *wal_path(void);
extern List *tablespace_paths(void);

#endif
