/*
 * test_restore_set.c - the restore command's view of snapshot sets
 * (helper/cli/rs_set.c): tags, the base64 label chunks, grouping snapshots
 * into sets, choosing one, and every check that refuses a set, each with
 * its exit code.
 */
#include "restore.h"
#include "tap.h"

#include <stdio.h>
#include <string.h>

static void tag(struct rs_snapshot *s, const char *key, const char *value)
{
	struct rs_tag *t = &s->tags[s->ntags++];

	snprintf(t->key, sizeof(t->key), "%.128s", key);
	snprintf(t->value, sizeof(t->value), "%.256s", value);
}

static void atag(struct rs_snapshot *s, const char *name, const char *value)
{
	char key[160];

	snprintf(key, sizeof(key), "ami-snapshot:%s", name);
	tag(s, key, value);
}

static void set_tag(struct rs_snapshot *s, const char *name, const char *value)
{
	size_t i;
	char key[160];

	snprintf(key, sizeof(key), "ami-snapshot:%s", name);
	for (i = 0; i < s->ntags; i++) {
		if (!strcmp(s->tags[i].key, key)) {
			if (value) {
				snprintf(s->tags[i].value, sizeof(s->tags[i].value), "%s", value);
			} else {
				s->tags[i] = s->tags[--s->ntags];
			}
			return;
		}
	}
	if (value)
		atag(s, name, value);
}

/* The same tag on every snapshot of the list. */
static void set_all(struct rs_snapshot_list *l, const char *name, const char *value)
{
	size_t i;

	for (i = 0; i < l->n; i++)
		set_tag(&l->items[i], name, value);
}

/* "START WAL LOCATION: 0/5000028 ..." in base64 chunks of 8 characters, as 1..3. */
#define LABEL "START WAL LOCATION: 0/5000028\nLABEL: x\n"

/* A complete, stopped set of two volumes (data, wal) and an untagged root volume. */
static struct rs_snapshot *add(struct rs_snapshot_list *l, const char *sid, const char *rid,
                               const char *state, const char *time, const char *mp,
                               const char *count)
{
	struct rs_snapshot *s = rs_list_add(l);

	snprintf(s->snapshot_id, sizeof(s->snapshot_id), "%s", sid);
	snprintf(s->state, sizeof(s->state), "completed");
	snprintf(s->start_time, sizeof(s->start_time), "%s", time);
	tag(s, "Name", "nightly");
	atag(s, "name", "nightly");
	atag(s, "request-id", rid);
	atag(s, "backup-state", state);
	atag(s, "pg-version", "150014");
	atag(s, "system-identifier", "7300000000000000001");
	atag(s, "data-directory", "/var/lib/postgresql/15/main");
	atag(s, "volume-count", count);
	atag(s, "start-lsn", "0/5000028");
	atag(s, "stop-lsn", "0/5000100");
	atag(s, "timeline", "1");
	if (mp) {
		atag(s, "mount-point", mp);
		atag(s, "fstype", "ext4");
	}
	return s;
}

static const struct rs_check_opts defaults = {false, true, false, 15};

static int check(struct rs_snapshot_list *l, const struct rs_check_opts *o, struct amis_err *err)
{
	struct rs_sets sets;
	const struct rs_set *set;
	int rc;

	rs_group(l, &sets);
	rc = rs_choose(&sets, true, &set, err);
	if (rc == 0)
		rc = rs_check_set(set, o, err);
	rs_sets_free(&sets);
	return rc;
}

int main(void)
{
	struct rs_snapshot_list l;
	struct rs_sets sets;
	const struct rs_set *set;
	struct rs_check_opts o;
	struct amis_err err;
	struct strbuf sb;
	struct rs_snapshot *s, *d, *w;
	bool found;
	char which[96];

	/* ---- base64 ---- */
	sb_init(&sb);
	ok(rs_base64_decode("aGVsbG8=", &sb) == 0 && sb.len == 5 && !memcmp(sb.data, "hello", 5),
	   "base64: one pad");
	sb_reset(&sb);
	ok(rs_base64_decode("aGk=", &sb) == 0 && sb.len == 2, "base64: two bytes");
	sb_reset(&sb);
	ok(rs_base64_decode("aA==", &sb) == 0 && sb.len == 1 && sb.data[0] == 'h',
	   "base64: two pads");
	sb_reset(&sb);
	ok(rs_base64_decode("", &sb) == 0 && sb.len == 0, "base64: empty");
	ok(rs_base64_decode("aGVsbG8", &sb) < 0, "base64: a length not a multiple of 4 is refused");
	ok(rs_base64_decode("aG=sbG8=", &sb) < 0, "base64: padding in the middle is refused");
	ok(rs_base64_decode("aGV$bG8=", &sb) < 0, "base64: a stray character is refused");
	sb_reset(&sb);
	ok(rs_base64_decode("AP8A", &sb) == 0 && sb.len == 3 && (unsigned char)sb.data[1] == 0xff &&
	       sb.data[0] == 0,
	   "base64: binary bytes, NUL included");

	/* ---- chunks, in numeric order (10 after 9), byte for byte ---- */
	rs_list_init(&l);
	s = add(&l, "snap-00000000000000001", "r-1", "stopped", "2026-12-01T10:00:00.000Z", "/a",
	        "1");
	{
		static const char *const chunks[] = {
		    "MQ==", "Mg==", "Mw==", "NA==", "NQ==", "Ng==", "Nw==", "OA==", "OQ==", "MTA="};
		char key[64];
		int i;

		/* Added out of order: 10, then 1..9. */
		tag(s, "ami-snapshot:backup-label-10", chunks[9]);
		for (i = 0; i < 9; i++) {
			snprintf(key, sizeof(key), "ami-snapshot:backup-label-%d", i + 1);
			tag(s, key, chunks[i]);
		}
	}
	ok(rs_decode_chunks(s, "ami-snapshot:backup-label-", &sb, &found, &err) == 0 && found,
	   "chunks: decoded");
	is_str(sb_str(&sb), "12345678910", "chunks: concatenated 1..10 in numeric order");
	ok(rs_decode_chunks(s, "ami-snapshot:tablespace-map-", &sb, &found, &err) == 0 && !found &&
	       sb.len == 0,
	   "chunks: none is not an error, found = false");
	set_tag(s, "backup-label-4", NULL);
	ok(rs_decode_chunks(s, "ami-snapshot:backup-label-", &sb, &found, &err) < 0 &&
	       strstr(err.msg, "backup-label-") != NULL,
	   "chunks: a gap is refused (%s)", err.msg);
	set_tag(s, "backup-label-4", "!!!!");
	ok(rs_decode_chunks(s, "ami-snapshot:backup-label-", &sb, &found, &err) < 0 &&
	       strstr(err.msg, "base64"),
	   "chunks: bad base64 is refused");
	rs_list_free(&l);

	/* ---- PostgreSQL majors ---- */
	is_int(rs_pg_major("150014"), 15, "pg major: 150014 is 15");
	is_int(rs_pg_major("180001"), 18, "pg major: 180001 is 18");
	is_int(rs_pg_major("90624"), 9, "pg major: 90624 is 9");
	is_int(rs_pg_major("15.4"), 0, "pg major: not a version number");
	is_int(rs_pg_major(NULL), 0, "pg major: none");
	is_int(
	    rs_pg_major_of_version_output("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)\n"),
	    15, "pg major of postgres --version");
	is_int(rs_pg_major_of_version_output("postgres (PostgreSQL) 18beta1\n"), 18,
	       "pg major of a beta");
	is_int(rs_pg_major_of_version_output("something else"), 0, "pg major of garbage");

	/* ---- grouping and choosing ---- */
	rs_list_init(&l);
	add(&l, "snap-00000000000000011", "r-old", "stopped", "2026-12-01T10:00:00.000Z", "/d",
	    "1");
	add(&l, "snap-00000000000000021", "r-new", "stopped", "2026-12-02T10:00:00.000Z", "/d",
	    "2");
	add(&l, "snap-00000000000000022", "r-new", "stopped", "2026-12-02T10:00:00.100Z", "/w",
	    "2");
	add(&l, "snap-00000000000000031", "r-failed", "failed", "2026-12-03T10:00:00.000Z", "/d",
	    "1");
	s = rs_list_add(&l); /* no request id: not a set */
	snprintf(s->snapshot_id, sizeof(s->snapshot_id), "snap-00000000000000099");
	rs_group(&l, &sets);
	is_int(sets.n, 3, "group: three sets (the untagged snapshot is none)");
	is_str(sets.n ? sets.items[0].request_id : "", "r-failed", "group: newest first");
	is_int(sets.n > 1 ? sets.items[1].n : 0, 2, "group: r-new has two snapshots");
	is_str(sets.n > 1 ? sets.items[1].start_time : "", "2026-12-02T10:00:00.000Z",
	       "group: a set's time is its earliest snapshot's");
	ok(rs_choose(&sets, false, &set, &err) == RS_EXIT_OK && set &&
	       !strcmp(set->request_id, "r-new"),
	   "choose: the newest stopped set, a newer failed one passed over");
	ok(rs_choose(&sets, true, &set, &err) == RS_EXIT_OK && set &&
	       !strcmp(set->request_id, "r-failed"),
	   "choose with --force: the newest of any state");
	rs_sets_free(&sets);
	rs_list_free(&l);

	rs_list_init(&l);
	add(&l, "snap-00000000000000031", "r-failed", "failed", "2026-12-03T10:00:00.000Z", "/d",
	    "1");
	add(&l, "snap-00000000000000041", "r-aborted", "aborted", "2026-12-04T10:00:00.000Z", "/d",
	    "1");
	rs_group(&l, &sets);
	is_int(rs_choose(&sets, false, &set, &err), RS_EXIT_BACKUP_STATE,
	       "choose: only failed and aborted sets: refused (backup state)");
	ok(strstr(err.msg, "r-failed") && strstr(err.msg, "r-aborted") &&
	       strstr(err.msg, "--force"),
	   "choose: the refusal lists the candidates and says how to pick one");
	rs_sets_free(&sets);
	rs_list_free(&l);
	sets.n = 0;
	sets.items = NULL;
	is_int(rs_choose(&sets, false, &set, &err), RS_EXIT_NOT_FOUND, "choose: no set: not found");

	/* A set whose snapshots disagree on the state is as bad as its worst. */
	rs_list_init(&l);
	add(&l, "snap-00000000000000051", "r-mixed", "stopped", "2026-12-05T10:00:00.000Z", "/d",
	    "2");
	add(&l, "snap-00000000000000052", "r-mixed", "failed", "2026-12-05T10:00:00.000Z", "/w",
	    "2");
	rs_group(&l, &sets);
	is_str(sets.n ? sets.items[0].backup_state : "", "failed",
	       "group: stopped + failed snapshots make a failed set");
	rs_sets_free(&sets);
	rs_list_free(&l);

	/* ---- the checks ---- */
	rs_list_init(&l);
	d = add(&l, "snap-00000000000000061", "r-6", "stopped", "2026-12-06T10:00:00.000Z",
	        "/var/lib/postgresql", "3");
	w = add(&l, "snap-00000000000000062", "r-6", "stopped", "2026-12-06T10:00:00.000Z",
	        "/var/lib/postgresql/wal", "3");
	s = add(&l, "snap-00000000000000063", "r-6", "stopped", "2026-12-06T10:00:00.000Z", NULL,
	        "3");
	is_int(check(&l, &defaults, &err), RS_EXIT_OK,
	       "check: a complete stopped set passes (the root volume, untagged, counts) %s",
	       err.msg);
	ok(rs_set_completed(&(struct rs_set){.n = 0}, which, sizeof(which)),
	   "completed: empty set");

	o = defaults;
	o.pitr = true;
	is_int(check(&l, &o, &err), RS_EXIT_TAGS, "check --pitr: no backup label: refused (tags)");
	ok(strstr(err.msg, "backup label") != NULL, "check --pitr: says the label is missing");
	atag(w, "backup-label-1", "U1RBUlQ=");
	is_int(check(&l, &o, &err), RS_EXIT_OK, "check --pitr: a label on any snapshot will do");

	o = defaults;
	o.local_pg_major = 17;
	is_int(check(&l, &o, &err), RS_EXIT_PG_VERSION,
	       "check: PostgreSQL 17 here, 15 tagged: refused");
	ok(strstr(err.msg, "PostgreSQL 15") && strstr(err.msg, "PostgreSQL 17"),
	   "check: the message names both majors (%s)", err.msg);
	o.local_pg_major = 0;
	is_int(check(&l, &o, &err), RS_EXIT_OK, "check: major 0 skips the version check");

	/* Incomplete: a snapshot deleted. */
	{
		struct rs_snapshot keep = *s;

		l.n--;
		is_int(check(&l, &defaults, &err), RS_EXIT_INCOMPLETE,
		       "check: 2 of 3 snapshots: incomplete");
		ok(strstr(err.msg, "2 of its 3") != NULL, "check: says how many are missing (%s)",
		   err.msg);
		l.items[l.n++] = keep;
	}
	set_all(&l, "volume-count", "2");
	is_int(check(&l, &defaults, &err), RS_EXIT_TAGS,
	       "check: more snapshots than volume-count: refused (tags)");
	set_tag(s, "volume-count", "3");
	is_int(check(&l, &defaults, &err), RS_EXIT_TAGS,
	       "check: snapshots that disagree on volume-count: refused");
	set_tag(d, "volume-count", "3");
	set_tag(w, "volume-count", "3");

	/* State. */
	set_all(&l, "backup-state", "failed");
	is_int(check(&l, &defaults, &err), RS_EXIT_BACKUP_STATE, "check: failed set: refused");
	ok(strstr(err.msg, "--force") != NULL, "check: the refusal names --force");
	o = defaults;
	o.force = true;
	is_int(check(&l, &o, &err), RS_EXIT_OK, "check --force: a failed set passes");
	set_all(&l, "backup-state", "stopped");

	/* Tags missing or wrong. */
	set_tag(w, "data-directory", NULL);
	is_int(check(&l, &defaults, &err), RS_EXIT_TAGS, "check: a data-directory tag missing");
	ok(strstr(err.msg, "data-directory") != NULL, "check: names the missing tag");
	set_tag(w, "data-directory", "/elsewhere");
	is_int(check(&l, &defaults, &err), RS_EXIT_TAGS, "check: data directories that disagree");
	set_tag(w, "data-directory", "/var/lib/postgresql/15/main");
	set_tag(w, "system-identifier", "7300000000000000002");
	is_int(check(&l, &defaults, &err), RS_EXIT_TAGS, "check: two clusters in one set");
	set_tag(w, "system-identifier", "7300000000000000001");
	set_tag(w, "fstype", NULL);
	is_int(check(&l, &defaults, &err), RS_EXIT_TAGS, "check: a mount point without fstype");
	o = defaults;
	o.need_layout = false;
	is_int(check(&l, &o, &err), RS_EXIT_OK, "check --attached: fstype not needed");
	set_tag(w, "fstype", "xfs");
	set_tag(w, "mount-point", "relative/path");
	is_int(check(&l, &defaults, &err), RS_EXIT_TAGS, "check: a relative mount point");
	set_tag(w, "mount-point", "/var/lib/../../etc");
	is_int(check(&l, &defaults, &err), RS_EXIT_TAGS,
	       "check: a mount point with .. (out of --root) is refused");
	set_tag(w, "mount-point", "/");
	is_int(check(&l, &defaults, &err), RS_EXIT_OK, "check: \"/\" is a mount point");
	set_all(&l, "data-directory", "/var/lib/postgresql/15/main/..");
	is_int(check(&l, &defaults, &err), RS_EXIT_TAGS,
	       "check: a data directory with .. is refused");
	set_all(&l, "data-directory", "/var/lib/postgresql/15/main");
	set_tag(w, "mount-point", NULL);
	set_tag(d, "mount-point", NULL);
	is_int(check(&l, &defaults, &err), RS_EXIT_TAGS,
	       "check: no snapshot says where it was mounted: refused");
	set_tag(d, "mount-point", "/var/lib/postgresql");
	set_tag(w, "mount-point", "/var/lib/postgresql/wal");
	set_all(&l, "pg-version", "fifteen");
	is_int(check(&l, &defaults, &err), RS_EXIT_TAGS, "check: a pg-version that is no number");
	set_all(&l, "pg-version", "150014");
	is_int(check(&l, &defaults, &err), RS_EXIT_OK, "check: all fixed, it passes again");

	/* Completed? Only the snapshots that are restored matter. */
	rs_group(&l, &sets);
	snprintf(s->state, sizeof(s->state), "pending");
	ok(rs_set_completed(&sets.items[0], which, sizeof(which)),
	   "completed: a pending root-volume snapshot (not restored) does not matter");
	snprintf(w->state, sizeof(w->state), "pending");
	ok(!rs_set_completed(&sets.items[0], which, sizeof(which)) &&
	       strstr(which, "snap-00000000000000062"),
	   "completed: a pending data snapshot is named (%s)", which);
	rs_sets_free(&sets);
	rs_list_free(&l);

	/* Tags by prefix. */
	rs_list_init(&l);
	s = add(&l, "snap-00000000000000071", "r-7", "stopped", "t", "/d", "1");
	is_str(rs_atag(s, "name"), "nightly", "rs_atag adds the prefix");
	is_str(rs_tag(s, "Name"), "nightly", "rs_tag takes the whole key");
	ok(rs_atag(s, "nope") == NULL, "an absent tag is NULL");
	rs_list_free(&l);
	sb_free(&sb);
	return done_testing();
}
