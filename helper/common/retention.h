/*
 * retention.h - which backups a retention policy keeps, and why.
 *
 * A pure function: backups, policies and the current time in, one decision
 * with its reason per backup out.  No I/O, no clock, no EC2: `ami-snapshot
 * prune` gathers the backups from EC2 and acts on the decisions
 * (cli/lifecycle.c); the unit tests feed it simulated months.
 *
 * The semantics (doc/lifecycle.md, "prune and the retention policy", says the same):
 *
 * - A policy applies to the backups whose name matches its glob pattern
 *   (fnmatch(3), no flags); the first policy that matches a name wins.
 *   A name no policy matches is kept ("no policy").
 * - The rules are evaluated per name, over that name's GOOD backups (a set
 *   or an AMI whose backup stopped and whose snapshots and image are
 *   complete), newest first.  A backup is kept if ANY rule keeps it:
 *     keep_last N      the N newest;
 *     keep_within S    those taken in the last S seconds (created > now - S);
 *     keep_daily D     the newest of each of the D UTC calendar days ending
 *                      with today's (today counts as one);
 *     keep_weekly W    the newest of each of the W ISO weeks (Monday 00:00
 *                      UTC) ending with this week;
 *     keep_monthly M   the newest of each of the M UTC calendar months
 *                      ending with this month.
 *   Periods are calendar periods counted back from now, as pgBackRest's
 *   time-based and Barman's recovery-window policies count time, not
 *   "the last D days that have a backup" (restic, borg): a name that
 *   stopped being backed up does not keep old backups forever because of
 *   keep_daily.  Everything older is deleted.
 * - The newest good backup of a name is always kept ("newest good backup"),
 *   whatever the rules say, unless the policy sets allow_delete_newest.
 * - Backups that are not good: IN PROGRESS ones (backup-state started,
 *   snapshots pending) younger than in_progress_grace are kept ("in
 *   progress"); FAILED ones (failed, aborted, a snapshot in error, an
 *   image failed) and in-progress ones older than the grace are deleted
 *   ("failed backup", "never completed"), unless keep_failed.  They never
 *   count toward keep_last or the periods.
 * - A backup that would be deleted but is locked (locked_until > now) or
 *   in use (a snapshot used by an image other than its own) is SKIPPED with
 *   that reason: prune never fights EC2's rules.
 * - A good backup without a creation time (created <= 0) is kept
 *   ("creation time unknown"): nothing says it is old.
 * - Kinds do not mix: sets and AMIs of one name are separate series (an AMI
 *   kept weekly does not make the nightly set redundant).
 */
#ifndef AMIS_RETENTION_H
#define AMIS_RETENTION_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

enum ret_kind { RET_SET, RET_AMI };
enum ret_state { RET_GOOD, RET_IN_PROGRESS, RET_FAILED };
enum ret_action { RET_KEEP, RET_DELETE, RET_SKIP };

struct ret_backup {
	const char *id; /* request id (for the caller; not interpreted) */
	const char *name;
	enum ret_kind kind;
	time_t created;
	enum ret_state state;
	time_t locked_until; /* 0: not locked */
	bool in_use;
};

struct ret_policy {
	const char *pattern; /* fnmatch glob on the name: "nightly-*", "*" */
	long keep_last;      /* 0: rule off */
	long keep_within_s;  /* 0: rule off */
	long keep_daily, keep_weekly, keep_monthly;
	long in_progress_grace_s; /* default (0) means 86400 */
	bool keep_failed;
	bool allow_delete_newest;
	/*
	 * series=pattern: every name the pattern matches is one series (dated
	 * AMI names, which EC2 requires to be unique); default: one per name.
	 */
	bool series_by_pattern;
};

#define RET_REASON_MAX 160

struct ret_decision {
	enum ret_action action;
	const struct ret_policy *policy; /* NULL: none matched */
	char reason[RET_REASON_MAX];
};

/*
 * Decides for each of the n backups; out has n entries, in the order of
 * backups.  Returns the number of backups to delete.
 */
size_t ret_decide(const struct ret_backup *backups, size_t n, const struct ret_policy *policies,
                  size_t npolicies, time_t now, struct ret_decision *out);

const char *ret_action_name(enum ret_action a); /* "keep" | "delete" | "skip" */

/*
 * Parses a policy text: "PATTERN:RULE[,RULE...]" where RULE is last=N,
 * within=DURATION (30d, 12h, 90min, 3600s, 2w), daily=N, weekly=N,
 * monthly=N, grace=DURATION, keep-failed, delete-newest.  The pattern and
 * strings point into text (which is modified).  Returns 0, or -1 with why.
 */
int ret_parse_policy(char *text, struct ret_policy *out, char *why, size_t whysz);
/* A duration as above into seconds; -1 if invalid. */
long ret_parse_duration(const char *s);

#endif
