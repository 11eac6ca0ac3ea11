/*
 * test_retention.c - the retention engine (common/retention.c): simulated
 * months of nightly sets and weekly AMIs, the survivors checked exactly
 * against dates worked out by hand from a calendar, and every rule about
 * incomplete, failed, locked and in-use backups; the policy syntax.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "retention.h"
#include "tap.h"

/* "2026-12-03T01:00:00Z" -> time_t (UTC). */
static time_t at(const char *iso)
{
	struct tm tm;

	memset(&tm, 0, sizeof(tm));
	if (!strptime(iso, "%Y-%m-%dT%H:%M:%SZ", &tm)) {
		printf("Bail out! bad date %s\n", iso);
		exit(255);
	}
	return timegm(&tm);
}

static char ids[400][32];

/* n backups of name, one every step seconds back from newest. */
static size_t series(struct ret_backup *b, size_t at_index, const char *name, enum ret_kind kind,
                     time_t newest, long step, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		struct ret_backup *x = &b[at_index + i];

		snprintf(ids[at_index + i], sizeof(ids[0]), "%s-%zu", name, i);
		memset(x, 0, sizeof(*x));
		x->id = ids[at_index + i];
		x->name = name;
		x->kind = kind;
		x->created = newest - (time_t)i * step;
		x->state = RET_GOOD;
	}
	return at_index + n;
}

/* The survivors of a series as "YYYY-MM-DD,..." (newest first as given). */
static void survivors(const struct ret_backup *b, const struct ret_decision *d, size_t from,
                      size_t to, char *out, size_t sz)
{
	size_t i, len = 0;

	out[0] = '\0';
	for (i = from; i < to; i++) {
		char day[16];
		struct tm tm;

		if (d[i].action != RET_KEEP)
			continue;
		gmtime_r(&b[i].created, &tm);
		strftime(day, sizeof(day), "%Y-%m-%d", &tm);
		len += (size_t)snprintf(out + len, sz - len, "%s%s", len ? "," : "", day);
	}
}

static void test_simulated_months(void)
{
	static struct ret_backup b[200];
	static struct ret_decision d[200];
	struct ret_policy pol[2];
	time_t now = at("2026-12-03T02:00:00Z"); /* a Thursday */
	char got[2048];
	size_t n = 0, nightly_end, weekly_end, ndel;
	char text1[] = "night*:last=3,daily=7,weekly=4,monthly=3";
	char text2[] = "sunday-*:last=2,monthly=2";
	char why[200];

	/* 100 nightly sets at 01:00 UTC, 20 Sunday AMIs at 03:00 UTC. */
	n = series(b, n, "nightly", RET_SET, at("2026-12-03T01:00:00Z"), 86400, 100);
	nightly_end = n;
	n = series(b, n, "sunday-ami", RET_AMI, at("2026-11-29T03:00:00Z"), 7 * 86400, 20);
	weekly_end = n;
	ok(ret_parse_policy(text1, &pol[0], why, sizeof(why)) == 0, "nightly policy parses");
	ok(ret_parse_policy(text2, &pol[1], why, sizeof(why)) == 0, "sunday policy parses");
	ndel = ret_decide(b, n, pol, 2, now, d);

	/*
	 * By hand: last 3 = Dec 3, 2, 1; daily 7 = Dec 3 .. Nov 27; weekly 4
	 * (ISO weeks from Monday) = Dec 3 (this week), Sun Nov 29, Sun Nov 22,
	 * Sun Nov 15; monthly 3 = Dec 3, Nov 30, Oct 31.
	 */
	survivors(b, d, 0, nightly_end, got, sizeof(got));
	is_str(got,
	       "2026-12-03,2026-12-02,2026-12-01,2026-11-30,2026-11-29,2026-11-28,2026-11-27,"
	       "2026-11-22,2026-11-15,2026-10-31",
	       "nightly survivors are exactly the policy's");
	/* Calendar months: December has no Sunday AMI yet, so monthly=2 keeps only November's. */
	survivors(b, d, nightly_end, weekly_end, got, sizeof(got));
	is_str(got, "2026-11-29,2026-11-22", "Sunday AMI survivors are exactly the policy's");
	is_int((long)ndel, (long)(100 - 10 + 20 - 2), "everything else is deleted");
	ok(strstr(d[0].reason, "newest good backup") && strstr(d[0].reason, "last 3") &&
	       strstr(d[0].reason, "daily 2026-12-03") && strstr(d[0].reason, "weekly 2026-W49") &&
	       strstr(d[0].reason, "monthly 2026-12"),
	   "the newest says every rule that keeps it: %s", d[0].reason);
	is_str(d[33].reason, "monthly 2026-10", "Oct 31 is kept as October's");
	is_str(d[4].reason, "daily 2026-11-29; weekly 2026-W48", "Nov 29: daily and weekly");
	is_str(d[50].reason, "older than the policy keeps", "an old one says why it goes");
	ok(d[50].policy == &pol[0], "the decision names its policy");
}

static void test_states_and_locks(void)
{
	struct ret_backup b[12];
	struct ret_decision d[12];
	struct ret_policy pol = {.pattern = "*", .keep_last = 1};
	time_t now = at("2026-12-03T02:00:00Z");
	size_t n, ndel;

	n = series(b, 0, "db", RET_SET, at("2026-12-03T01:00:00Z"), 86400, 6);
	b[0].state = RET_IN_PROGRESS; /* 1 h old: in progress */
	b[1].state = RET_FAILED;
	b[3].locked_until = at("2027-01-01T00:00:00Z");
	b[4].in_use = true;
	b[5].locked_until = at("2026-12-01T00:00:00Z"); /* expired lock */
	n = series(b, n, "db", RET_AMI, at("2026-11-01T00:00:00Z"), 86400, 1);
	n = series(b, n, "other", RET_SET, at("2020-01-01T00:00:00Z"), 86400, 1);
	{
		struct ret_policy two[2] = {{.pattern = "db", .keep_last = 1}, pol};

		two[1].pattern = "nomatch";
		ndel = ret_decide(b, n, two, 2, now, d);
	}
	is_str(ret_action_name(d[0].action), "keep",
	       "an in-progress backup within the grace stays");
	is_str(d[0].reason, "in progress", "... saying so");
	is_str(ret_action_name(d[1].action), "delete", "a failed backup goes");
	is_str(d[1].reason, "failed backup", "... saying so");
	is_str(ret_action_name(d[2].action), "keep",
	       "the newest GOOD backup is kept (the failed and in-progress do not count)");
	ok(strstr(d[2].reason, "newest good backup") && strstr(d[2].reason, "last 1"), "%s",
	   d[2].reason);
	is_str(ret_action_name(d[3].action), "skip", "a locked one is skipped");
	is_str(d[3].reason, "older than the policy keeps; locked until 2027-01-01T00:00:00Z",
	       "... with the lock's end");
	is_str(ret_action_name(d[4].action), "skip", "one in use is skipped");
	ok(strstr(d[4].reason, "in use") != NULL, "... saying so");
	is_str(ret_action_name(d[5].action), "delete", "an expired lock does not protect");
	is_str(ret_action_name(d[6].action), "keep", "an AMI of the same name is its own series");
	ok(strstr(d[6].reason, "newest good backup") != NULL, "... and is its newest");
	is_str(ret_action_name(d[7].action), "keep", "a name no policy matches is kept");
	is_str(d[7].reason, "no policy", "... saying so");
	ok(d[7].policy == NULL, "... with no policy");
	is_int((long)ndel, 2L, "two deletions (failed, expired lock)");

	/* An in-progress backup older than the grace never completed. */
	b[0].created = now - 2 * 86400;
	ret_decide(b, n, &pol, 1, now, d);
	is_str(ret_action_name(d[0].action), "delete", "in progress for two days: deleted");
	ok(strstr(d[0].reason, "never completed") != NULL, "%s", d[0].reason);
	pol.keep_failed = true;
	ret_decide(b, n, &pol, 1, now, d);
	is_str(ret_action_name(d[1].action), "keep", "keep-failed keeps a failed backup");
	pol.keep_failed = false;
	pol.in_progress_grace_s = 3 * 86400;
	ret_decide(b, n, &pol, 1, now, d);
	is_str(ret_action_name(d[0].action), "keep", "a longer grace keeps it");
}

static void test_newest(void)
{
	struct ret_backup b[3];
	struct ret_decision d[3];
	struct ret_policy pol = {.pattern = "*", .keep_within_s = 3600};
	time_t now = at("2026-12-03T02:00:00Z");
	size_t n;

	n = series(b, 0, "db", RET_SET, at("2026-11-20T00:00:00Z"), 86400, 3);
	is_int((long)ret_decide(b, n, &pol, 1, now, d), 2L, "within=1h with old backups: two go");
	is_str(ret_action_name(d[0].action), "keep", "the newest good backup stays anyway");
	is_str(d[0].reason, "newest good backup", "... saying why");
	pol.allow_delete_newest = true;
	is_int((long)ret_decide(b, n, &pol, 1, now, d), 3L, "delete-newest lets it go too");
	b[0].created = now + 600;
	pol.allow_delete_newest = false;
	ret_decide(b, n, &pol, 1, now, d);
	ok(strstr(d[0].reason, "clock skew") != NULL, "a backup from the future is kept: %s",
	   d[0].reason);
	is_int((long)ret_decide(b, 0, &pol, 1, now, d), 0L, "no backups: nothing to do");
	b[0].created = now - 86400;
	b[2].created = 0;
	ret_decide(b, n, &pol, 1, now, d);
	is_str(ret_action_name(d[2].action), "keep", "a backup of unknown age is kept");
	is_str(d[2].reason, "creation time unknown", "... saying why");
}

/* Dated AMI names (EC2 wants them unique): series=pattern makes them one series. */
static void test_series_by_pattern(void)
{
	static const char *names[6] = {"weekly-2026-12-03", "weekly-2026-11-26",
	                               "weekly-2026-11-19", "weekly-2026-11-12",
	                               "weekly-2026-11-05", "nightly"};
	struct ret_backup b[6];
	struct ret_decision d[6];
	struct ret_policy pol[2] = {{.pattern = "weekly-*", .keep_last = 2},
	                            {.pattern = "*", .keep_last = 1}};
	time_t now = at("2026-12-03T12:00:00Z");
	size_t i;
	char why[128];
	char text[] = "weekly-*:last=2,series=pattern";
	char bad[] = "weekly-*:last=2,series=week";

	for (i = 0; i < 6; i++) {
		memset(&b[i], 0, sizeof(b[i]));
		b[i].id = names[i];
		b[i].name = names[i];
		b[i].kind = RET_AMI;
		b[i].state = RET_GOOD;
		b[i].created = at("2026-12-03T01:00:00Z") - (time_t)i * 7 * 86400;
	}
	is_int((long)ret_decide(b, 6, pol, 2, now, d), 0L,
	       "series=name (the default): each dated name is its own newest: nothing goes");
	pol[0].series_by_pattern = true;
	is_int((long)ret_decide(b, 6, pol, 2, now, d), 3L,
	       "series=pattern: the five weekly AMIs are one series, last=2 keeps two");
	ok(d[0].action == RET_KEEP && d[1].action == RET_KEEP && d[2].action == RET_DELETE &&
	       d[3].action == RET_DELETE && d[4].action == RET_DELETE,
	   "the two newest weekly AMIs stay, the three older go");
	ok(d[5].action == RET_KEEP && d[5].policy == &pol[1],
	   "a name matching only a later policy is not in the series");
	ok(ret_parse_policy(text, &pol[0], why, sizeof(why)) == 0 && pol[0].series_by_pattern,
	   "series=pattern parses");
	ok(ret_parse_policy(bad, &pol[0], why, sizeof(why)) < 0, "series=week is refused: %s", why);
}

static void test_parse(void)
{
	struct ret_policy p;
	char why[256];
	char a[] = "nightly-*:last=7,within=2d,daily=7,weekly=4,monthly=12,grace=6h,keep-failed";
	char b[] = "nightly:last=0";
	char c[] = "nightly:grace=1h";
	char e[] = "no-rules";
	char f[] = "x:within=3fortnights";
	char g[] = "x:delete-newest";
	char h[] = "a:b:last=2";

	ok(ret_parse_policy(a, &p, why, sizeof(why)) == 0, "a full policy parses");
	is_str(p.pattern, "nightly-*", "pattern");
	ok(p.keep_last == 7 && p.keep_within_s == 2 * 86400 && p.keep_daily == 7 &&
	       p.keep_weekly == 4 && p.keep_monthly == 12 && p.in_progress_grace_s == 6 * 3600 &&
	       p.keep_failed && !p.allow_delete_newest,
	   "every rule is read");
	ok(ret_parse_policy(b, &p, why, sizeof(why)) < 0, "last=0 is refused: %s", why);
	ok(ret_parse_policy(c, &p, why, sizeof(why)) < 0, "a policy that keeps nothing: %s", why);
	ok(ret_parse_policy(e, &p, why, sizeof(why)) < 0, "no colon: %s", why);
	ok(ret_parse_policy(f, &p, why, sizeof(why)) < 0, "bad unit: %s", why);
	ok(ret_parse_policy(g, &p, why, sizeof(why)) < 0, "delete-newest alone keeps nothing");
	ok(ret_parse_policy(h, &p, why, sizeof(why)) == 0 && !strcmp(p.pattern, "a:b"),
	   "the last colon separates the pattern");
	is_int(ret_parse_duration("90min"), 5400L, "90min");
	is_int(ret_parse_duration("2w"), 1209600L, "2w");
	is_int(ret_parse_duration("-1d"), -1L, "negative");
	is_int(ret_parse_duration("1y"), -1L, "unknown unit");
	is_int(ret_parse_duration("99999999999d"), -1L, "overflow");
}

int main(void)
{
	test_simulated_months();
	test_states_and_locks();
	test_newest();
	test_series_by_pattern();
	test_parse();
	return done_testing();
}
