/*
 * retention.c - see retention.h.
 */
#include "retention.h"

#include <ctype.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_GRACE_S 86400L

const char *ret_action_name(enum ret_action a)
{
	switch (a) {
	case RET_KEEP:
		return "keep";
	case RET_DELETE:
		return "delete";
	case RET_SKIP:
		return "skip";
	}
	return "?";
}

static const struct ret_policy *policy_for(const char *name, const struct ret_policy *p, size_t np)
{
	size_t i;

	for (i = 0; i < np; i++) {
		if (fnmatch(p[i].pattern, name, 0) == 0)
			return &p[i];
	}
	return NULL;
}

/* Floor division: periods before 1970 stay ordered. */
static long long floordiv(long long a, long long b)
{
	return a / b - ((a % b != 0) && ((a < 0) != (b < 0)));
}

static long long day_of(time_t t)
{
	return floordiv((long long)t, 86400);
}

/* ISO weeks start on Monday; 1970-01-01 was a Thursday, so day 0 + 3 is a Sunday's end. */
static long long week_of(time_t t)
{
	return floordiv(day_of(t) + 3, 7);
}

static long long month_of(time_t t)
{
	struct tm tm;

	if (!gmtime_r(&t, &tm))
		return 0;
	return (long long)(tm.tm_year + 1900) * 12 + tm.tm_mon;
}

/* Appends "; " and what to the decision's reason. */
static void add_reason(struct ret_decision *d, const char *what)
{
	size_t len = strlen(d->reason);

	snprintf(d->reason + len, sizeof(d->reason) - len, "%s%s", len ? "; " : "", what);
}

enum period_name { P_DAY, P_WEEK, P_MONTH, P_INSTANT };

/* 2026-12-03, 2026-W49 (ISO), 2026-12, 2026-12-03T01:00:00Z. */
static void date_text(time_t t, enum period_name kind, char *buf, size_t sz)
{
	struct tm tm;
	size_t n = 0;

	if (gmtime_r(&t, &tm)) {
		switch (kind) {
		case P_DAY:
			n = strftime(buf, sz, "%Y-%m-%d", &tm);
			break;
		case P_WEEK:
			n = strftime(buf, sz, "%G-W%V", &tm);
			break;
		case P_MONTH:
			n = strftime(buf, sz, "%Y-%m", &tm);
			break;
		case P_INSTANT:
			n = strftime(buf, sz, "%Y-%m-%dT%H:%M:%SZ", &tm);
			break;
		}
	}
	if (!n)
		snprintf(buf, sz, "?");
}

/* One period rule: the newest backup of each of the last `keep` periods. */
struct period_rule {
	long keep;
	long long (*period)(time_t);
	const char *label; /* "daily" */
	enum period_name format;
	long long last_kept;
	bool any;
};

static void period_keep(struct period_rule *pr, time_t created, time_t now, struct ret_decision *d)
{
	long long p = pr->period(created);
	char when[32], text[64];

	if (pr->keep <= 0 || pr->period(now) - p >= pr->keep)
		return;
	if (pr->any && pr->last_kept == p)
		return; /* a newer backup of this period is kept already */
	pr->any = true;
	pr->last_kept = p;
	date_text(created, pr->format, when, sizeof(when));
	snprintf(text, sizeof(text), "%s %s", pr->label, when);
	add_reason(d, text);
}

struct ranked {
	size_t index;
	time_t created;
};

static int newest_first(const void *a, const void *b)
{
	const struct ranked *x = a, *y = b;

	if (x->created != y->created)
		return x->created > y->created ? -1 : 1;
	return x->index < y->index ? -1 : x->index > y->index;
}

/* The good backups of one series (name, or pattern, and kind), newest first. */
static void decide_series(const struct ret_backup *b, size_t n, size_t first,
                          const struct ret_policy *policies, size_t npolicies,
                          const struct ret_policy *pol, time_t now, struct ret_decision *out,
                          bool *done)
{
	struct ranked *r = calloc(n, sizeof(*r));
	struct period_rule rules[3] = {
	    {pol->keep_daily, day_of, "daily", P_DAY, 0, false},
	    {pol->keep_weekly, week_of, "weekly", P_WEEK, 0, false},
	    {pol->keep_monthly, month_of, "monthly", P_MONTH, 0, false},
	};
	size_t i, k, nr = 0;
	char num[32];

	if (!r)
		abort();
	for (i = first; i < n; i++) {
		if (done[i] || b[i].kind != b[first].kind)
			continue;
		/* series=pattern: every name whose first matching policy is this one. */
		if (pol->series_by_pattern ? policy_for(b[i].name, policies, npolicies) != pol
		                           : strcmp(b[i].name, b[first].name) != 0)
			continue;
		done[i] = true;
		out[i].policy = pol;
		if (b[i].state == RET_GOOD) {
			r[nr].index = i;
			r[nr++].created = b[i].created;
		} else if (b[i].state == RET_IN_PROGRESS &&
		           now - b[i].created < (pol->in_progress_grace_s > 0
		                                     ? pol->in_progress_grace_s
		                                     : DEFAULT_GRACE_S)) {
			add_reason(&out[i], "in progress");
		} else if (pol->keep_failed) {
			add_reason(&out[i], "not complete, kept (keep-failed)");
		} else {
			out[i].action = RET_DELETE;
			add_reason(&out[i], b[i].state == RET_FAILED
			                        ? "failed backup"
			                        : "never completed (older than the grace)");
		}
	}
	qsort(r, nr, sizeof(*r), newest_first);
	for (k = 0; k < nr; k++) {
		struct ret_decision *d = &out[r[k].index];
		const struct ret_backup *x = &b[r[k].index];

		if (x->created > now)
			add_reason(d, "taken after now (clock skew)");
		/* EC2 gave no start time: nothing says how old it is, so nothing deletes it. */
		if (x->created <= 0)
			add_reason(d, "creation time unknown");
		if (k == 0 && !pol->allow_delete_newest)
			add_reason(d, "newest good backup");
		if (pol->keep_last > 0 && (long)k < pol->keep_last) {
			snprintf(num, sizeof(num), "last %ld", pol->keep_last);
			add_reason(d, num);
		}
		if (pol->keep_within_s > 0 && x->created > now - pol->keep_within_s) {
			snprintf(num, sizeof(num), "within %lds", pol->keep_within_s);
			add_reason(d, num);
		}
		for (i = 0; i < 3; i++)
			period_keep(&rules[i], x->created, now, d);
		if (!d->reason[0]) {
			d->action = RET_DELETE;
			add_reason(d, "older than the policy keeps");
		}
	}
	free(r);
}

size_t ret_decide(const struct ret_backup *b, size_t n, const struct ret_policy *policies,
                  size_t npolicies, time_t now, struct ret_decision *out)
{
	bool *done = calloc(n ? n : 1, sizeof(*done));
	size_t i, ndelete = 0;

	if (!done)
		abort();
	for (i = 0; i < n; i++) {
		memset(&out[i], 0, sizeof(out[i]));
		out[i].action = RET_KEEP;
	}
	for (i = 0; i < n; i++) {
		const struct ret_policy *pol;

		if (done[i])
			continue;
		pol = policy_for(b[i].name, policies, npolicies);
		if (!pol) {
			done[i] = true;
			add_reason(&out[i], "no policy");
			continue;
		}
		decide_series(b, n, i, policies, npolicies, pol, now, out, done);
	}
	/* EC2's rules last: what would go but cannot is skipped, with why. */
	for (i = 0; i < n; i++) {
		char when[32], text[64];

		if (out[i].action != RET_DELETE)
			continue;
		if (b[i].locked_until > now) {
			date_text(b[i].locked_until, P_INSTANT, when, sizeof(when));
			out[i].action = RET_SKIP;
			snprintf(text, sizeof(text), "locked until %s", when);
			add_reason(&out[i], text);
		} else if (b[i].in_use) {
			out[i].action = RET_SKIP;
			add_reason(&out[i], "a snapshot is in use by another image");
		} else {
			ndelete++;
		}
	}
	free(done);
	return ndelete;
}

long ret_parse_duration(const char *s)
{
	static const struct {
		const char *unit;
		long mult;
	} units[] = {{"s", 1}, {"min", 60}, {"h", 3600}, {"d", 86400}, {"w", 604800}};
	char *end;
	long v;
	size_t i;

	if (!s || !isdigit((unsigned char)s[0]))
		return -1;
	v = strtol(s, &end, 10);
	if (v <= 0)
		return -1;
	for (i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
		if (strcmp(end, units[i].unit) == 0) {
			if (v > 100L * 366 * 86400 / units[i].mult)
				return -1;
			return v * units[i].mult;
		}
	}
	return -1;
}

static int count(const char *v, long *out)
{
	char *end;
	long n;

	if (!v || !isdigit((unsigned char)v[0]))
		return -1;
	n = strtol(v, &end, 10);
	if (*end || n < 1 || n > 100000)
		return -1;
	*out = n;
	return 0;
}

int ret_parse_policy(char *text, struct ret_policy *out, char *why, size_t whysz)
{
	char *colon = strrchr(text, ':'), *save = NULL, *rule;
	bool any = false;

	memset(out, 0, sizeof(*out));
	if (!colon || colon == text) {
		snprintf(why, whysz, "a policy is PATTERN:RULE[,RULE...]");
		return -1;
	}
	*colon = '\0';
	out->pattern = text;
	for (rule = strtok_r(colon + 1, ",", &save); rule; rule = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(rule, '=');
		const char *v = eq ? eq + 1 : NULL;
		int bad = 0;

		if (eq)
			*eq = '\0';
		if (!strcmp(rule, "last"))
			bad = count(v, &out->keep_last);
		else if (!strcmp(rule, "daily"))
			bad = count(v, &out->keep_daily);
		else if (!strcmp(rule, "weekly"))
			bad = count(v, &out->keep_weekly);
		else if (!strcmp(rule, "monthly"))
			bad = count(v, &out->keep_monthly);
		else if (!strcmp(rule, "within"))
			bad = (out->keep_within_s = ret_parse_duration(v)) < 0;
		else if (!strcmp(rule, "grace"))
			bad = (out->in_progress_grace_s = ret_parse_duration(v)) < 0;
		else if (!strcmp(rule, "keep-failed") && !v)
			out->keep_failed = true;
		else if (!strcmp(rule, "delete-newest") && !v)
			out->allow_delete_newest = true;
		else if (!strcmp(rule, "series") && v &&
		         (!strcmp(v, "pattern") || !strcmp(v, "name")))
			out->series_by_pattern = !strcmp(v, "pattern");
		else
			bad = -1;
		if (bad) {
			snprintf(why, whysz,
			         "\"%s\": rules are last=N, within=DURATION, daily=N, weekly=N, "
			         "monthly=N, grace=DURATION, keep-failed, delete-newest, "
			         "series=name|pattern",
			         rule);
			return -1;
		}
		if (strcmp(rule, "grace") && strcmp(rule, "keep-failed") &&
		    strcmp(rule, "delete-newest") && strcmp(rule, "series"))
			any = true;
	}
	if (!any) {
		snprintf(why, whysz,
		         "policy \"%s\" keeps nothing: give at least one of last, within, "
		         "daily, weekly, monthly",
		         text);
		return -1;
	}
	return 0;
}
