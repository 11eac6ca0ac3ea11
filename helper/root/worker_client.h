/*
 * worker_client.h - privilege separation: the root process's side of the
 * unprivileged EC2 worker (worker/worker_main.c is the worker's side).
 *
 * Everything that talks to the network or parses what it sends - libcurl,
 * SigV4 signing, the EC2 XML (libxml2), IMDS and its JSON (json-c), the
 * AWS credentials - runs in a separate process that is not root:
 *
 *	root: ami-snapshot-helper              worker_user: ami-snapshot-helper --worker
 *	  socket, SO_PEERCRED, protocol    <-- socketpair -->  IMDS, credentials,
 *	  paths -> volumes, FIFREEZE/FITHAW    (AMSP frames)   HTTP, SigV4, XML, JSON
 *	  watchdog, frozen marker
 *
 * The helper starts it at start-up (fork + exec of its own binary with
 * --worker, the socketpair as descriptor 3), and again on the next call if
 * it died.  The worker reads the configuration and opens the shared
 * credentials file as root, then drops to worker_user for good (groups,
 * gid, uid; no_new_privs; not dumpable, so other processes of that user
 * cannot ptrace it for the credentials) before it touches the network.
 *
 * The helper treats every answer as untrusted input: strictly decoded
 * (protocol.c), copied into bounded buffers, and a worker that sends
 * anything malformed is killed.  Secrets never cross the socketpair: the
 * credentials live in the worker only.
 *
 * One call at a time.  A call is abandoned (W_ABANDON; its late answer is
 * skipped by its SEQ) when the client goes away or an administrator asks
 * for a thaw, and the worker is killed when it does not answer in time.
 */
#ifndef AMIS_WORKER_CLIENT_H
#define AMIS_WORKER_CLIENT_H

#include "channel.h"
#include "config.h"
#include "util.h"

#include <poll.h>
#include <stdbool.h>

/*
 * How the helper waits for an answer: poll is called instead of poll(2)
 * (the server uses it to keep answering other clients: Busy, status, thaw);
 * abandon is checked after each wake-up and, when it returns true, the call
 * is abandoned with its code ("ThawRequested").
 */
struct worker_waiter {
	int (*poll)(void *arg, struct pollfd *fds, nfds_t n, int timeout_ms);
	const char *(*abandon)(void *arg);
	void *arg;
};

struct worker;

/* config_path: what the worker loads (the helper's own configuration). */
struct worker *worker_new(const struct helper_config *cfg, const char *config_path);
/* Closes the socketpair (the worker exits on end of file) and reaps it. */
void worker_free(struct worker *w);
void worker_set_waiter(struct worker *w, const struct worker_waiter *waiter);
/*
 * While fd >= 0, every call is abandoned ("ClientGone") as soon as fd
 * becomes readable: the operation's client went away (or sent ABORT).
 */
void worker_set_abort_fd(struct worker *w, int fd);
/* Starts the worker if it is not running; -1 with err ("WorkerFailed"). */
int worker_start(struct worker *w, struct amis_err *err);
/* The worker's pid, 0 if none. */
pid_t worker_pid(const struct worker *w);
/*
 * Tests only: fd is the helper's end of a socketpair whose other end the
 * test plays the worker on (pid 0: no process to reap or kill).
 */
void worker_attach_for_test(struct worker *w, int fd, pid_t pid);

/*
 * Whether a worker is running, without starting one (a dead one is reaped):
 * calls made while frozen must not fork and exec a new worker.
 */
bool worker_running(struct worker *w);

/* Resolves instance id, region and credentials (cached by the worker). */
int worker_ready(struct worker *w, struct amis_err *err);
const char *worker_instance_id(const struct worker *w);
const char *worker_region(const struct worker *w);

/* DescribeInstances of this instance; credentials EC2 refuses are fetched again once. */
int worker_describe_instance(struct worker *w, long timeout_ms, struct ec2_instance_info *out,
                             struct amis_err *err);
/*
 * The same, and a DryRun of dry (a CreateSnapshots request) made at the same
 * time: one round trip for both.  -1 (err) when DescribeInstances failed;
 * otherwise 0, with dry_err's code "" if the DryRun said it would succeed,
 * or how it failed.
 */
int worker_describe_instance_dry(struct worker *w, long timeout_ms,
                                 const struct ec2_create_snapshots_req *dry,
                                 struct ec2_instance_info *out, struct amis_err *dry_err,
                                 struct amis_err *err);
/*
 * How long ago (ms) the running worker last had an answer from EC2, -1 if
 * it never did: its connections are warm if that is recent.
 */
long worker_ec2_idle_ms(const struct worker *w);
/*
 * CreateSnapshots (r->dry_run honoured).  hold_log: the worker buffers its
 * log during the call (filesystems are frozen).  wait_ms: how long the helper
 * waits for the answer; then it kills the worker ("Timeout").
 */
int worker_create_snapshots(struct worker *w, const struct ec2_create_snapshots_req *r,
                            long timeout_ms, long wait_ms, bool hold_log,
                            struct ec2_snapshot_set *out, struct amis_err *err);
int worker_create_tags(struct worker *w, const char *const *ids, size_t nids,
                       const struct ec2_tag *tags, size_t ntags, long timeout_ms,
                       struct amis_err *err);
/*
 * tags on every one of ids and each item's tag on ids[item.resource] only,
 * all at once (one round trip); ntags may be 0.  The first failure, if any.
 */
struct worker_item_tag {
	size_t resource; /* index into ids */
	struct ec2_tag tag;
};
int worker_create_tags_items(struct worker *w, const char *const *ids, size_t nids,
                             const struct ec2_tag *tags, size_t ntags,
                             const struct worker_item_tag *items, size_t nitems, long timeout_ms,
                             struct amis_err *err);
/* Our snapshots carrying tag key=value (the worker's DescribeSnapshots by tag). */
int worker_find_snapshots(struct worker *w, const char *key, const char *value, long timeout_ms,
                          struct ec2_snapshot_set *out, struct amis_err *err);
/* The same with n (1 or 2) tags, all of which they carry. */
int worker_find_snapshots_tags(struct worker *w, const char *const *keys, const char *const *values,
                               size_t n, long timeout_ms, struct ec2_snapshot_set *out,
                               struct amis_err *err);

/*
 * The AMI methods.  worker_describe_image: one image by id, or ours by tag
 * or name (q); none found is success with out->image_id "".
 */
int worker_describe_image(struct worker *w, const struct ec2_image_query *q, long timeout_ms,
                          struct ec2_image_info *out, struct amis_err *err);
int worker_describe_volumes(struct worker *w, const char *const *ids, size_t n, long timeout_ms,
                            struct ec2_volume_set *out, struct amis_err *err);
/* image_id[32]: the new image's id ("" after a DryRun). */
int worker_register_image(struct worker *w, const struct ec2_register_image_req *r, long timeout_ms,
                          char *image_id, struct amis_err *err);
/* hold_log, wait_ms: as worker_create_snapshots (the call may be made while frozen). */
int worker_create_image(struct worker *w, const struct ec2_create_image_req *r, long timeout_ms,
                        long wait_ms, bool hold_log, char *image_id, struct amis_err *err);
int worker_deregister_image(struct worker *w, const char *image_id, long timeout_ms,
                            struct amis_err *err);

/*
 * W_CHECK (check.h): the worker's rows (IMDS, credentials, region, a DryRun
 * of each action) appended to rows; volume_id: a database volume or "".
 * -1 with err only when the worker could not be asked.
 */
struct check_rows;
int worker_check(struct worker *w, const char *const *actions, size_t n, const char *volume_id,
                 long timeout_ms, struct check_rows *rows, struct amis_err *err);

#endif
