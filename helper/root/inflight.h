/*
 * inflight.h - the requests that may have made snapshots, on disk.
 *
 * Before its first call that can create snapshots (CreateSnapshots,
 * CreateImage), an operation records its request id as an empty file
 * state_dir/inflight/<request id>; the file goes when the operation ends,
 * after its snapshots carry their final backup-state tag.  A file left
 * behind means the helper died (SIGKILL, a crash, a reboot) with that
 * request unfinished: its snapshots, made before or after the death, still
 * say backup-state=started.  The helper resolves such files
 * (inflight_resolve) before each PREPARE and when idle (operation.c:
 * op_tick: a second after start-up, then every minute while any remain):
 * the snapshots carrying the request's id and backup-state=started, and
 * the image carrying its id, are tagged failed.
 */
#ifndef AMIS_INFLIGHT_H
#define AMIS_INFLIGHT_H

#include "util.h"

#include <stddef.h>
#include <time.h>

#define INFLIGHT_DIR "inflight"
/* How long an entry is looked at again when EC2 shows nothing for it yet. */
#define INFLIGHT_KEEP_S 900
/*
 * Settled when the helper is idle: this long after start-up, then again
 * every INFLIGHT_RETRY_US while entries remain (and at each PREPARE).
 */
#define INFLIGHT_START_DELAY_US 1000000LL
#define INFLIGHT_RETRY_US 60000000LL

struct inflight_entry {
	char request_id[65];
	time_t since; /* the file's mtime: when the request made its first call */
};

/*
 * A complete backup whose final tags EC2 refused: the entry then holds the
 * tags to apply, one per line ("tag\t<resource id>\t<key>\t<value>"), and
 * inflight_resolve() applies them instead of tagging anything failed.
 */
struct inflight_tag {
	char resource[32];
	char key[129];
	char value[257];
};

/* Records request_id durably; -1 with err ("StateDir") if it cannot. */
int inflight_add(const char *state_dir, const char *request_id, struct amis_err *err);
/*
 * Replaces request_id's entry with the tags to apply (atomically, durably);
 * -1 with err ("StateDir"; "InvalidArgument" for a value with a tab or a
 * newline, which the format cannot hold).
 */
int inflight_write_tags(const char *state_dir, const char *request_id,
                        const struct inflight_tag *tags, size_t n, struct amis_err *err);
/*
 * The tags request_id's entry holds (*out malloc'd, NULL and 0 for an
 * empty entry); -1 if it cannot be read or a line is malformed (logged).
 */
int inflight_read_tags(const char *state_dir, const char *request_id, struct inflight_tag **out,
                       size_t *n);
/* Forgets request_id (a missing entry is fine; a failure is logged). */
void inflight_remove(const char *state_dir, const char *request_id);
/*
 * The entries, at most max (names that are not request ids are skipped and
 * logged).  Returns how many; 0 when the directory does not exist.
 */
size_t inflight_list(const char *state_dir, struct inflight_entry *out, size_t max);

#endif
