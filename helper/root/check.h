/*
 * check.h - the preflight check (doc/protocol.md, "Check"): CHECK from a
 * client is answered with one row per check of what a snapshot needs,
 * and nothing is frozen, no snapshot made, no backup started.
 *
 * The root process checks what it alone sees (its configuration file as
 * it is now, the users allowed, the database paths resolved to
 * filesystems and EBS volumes, the allow-list, state_dir); the EC2 worker
 * what only it may touch (IMDS, the credentials' source, the region, and
 * a DryRun of every EC2 action the configured features call: W_CHECK).
 * The CreateSnapshots DryRun is the very request PREPARE would send.
 */
#ifndef AMIS_CHECK_H
#define AMIS_CHECK_H

#include "config.h"
#include "protocol.h"

#include <stddef.h>

struct check_row {
	char name[65];
	char result[9]; /* ok, failed, skipped */
	char detail[AMSP_CHECK_TEXT + 1];
	char hint[AMSP_CHECK_TEXT + 1];
};

struct check_rows {
	size_t n;
	struct check_row row[AMSP_MAX_CHECKS];
};

/* Appends a row (dropped beyond AMSP_MAX_CHECKS); hint may be NULL. */
void check_add(struct check_rows *r, const char *name, const char *result, const char *hint,
               const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/*
 * The EC2 actions the configured features call, besides CreateSnapshots
 * (which the root process tests with the real request): into out, at most
 * max; returns the count.  Snapshot sets' always; an AMI method's when
 * image is "register" or "create" (NULL: none); the drill's with a [drill]
 * section; [copy]'s, [lock]'s and [retention]'s when set.
 */
size_t check_ec2_actions(const struct helper_config *cfg, const char *image, const char **out,
                         size_t max);

/* CHECK_REPLY with the rows into buf; its length, 0 if it does not fit. */
size_t check_reply_build(const struct check_rows *r, const char *version, unsigned char *buf,
                         size_t cap);

#endif
