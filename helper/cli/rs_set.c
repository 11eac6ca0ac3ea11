/*
 * rs_set.c - the snapshots' tags, sets, choosing one and checking it (see
 * restore.h).  Pure: no I/O.
 */
#include "restore.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void rs_list_init(struct rs_snapshot_list *l)
{
	memset(l, 0, sizeof(*l));
}

void rs_list_free(struct rs_snapshot_list *l)
{
	free(l->items);
	rs_list_init(l);
}

struct rs_snapshot *rs_list_add(struct rs_snapshot_list *l)
{
	if (l->n == l->cap) {
		l->cap = l->cap ? l->cap * 2 : 8;
		l->items = xrealloc(l->items, l->cap * sizeof(*l->items));
	}
	memset(&l->items[l->n], 0, sizeof(l->items[0]));
	l->items[l->n].size_gib = -1;
	return &l->items[l->n++];
}

const char *rs_tag(const struct rs_snapshot *s, const char *key)
{
	size_t i;

	for (i = 0; i < s->ntags; i++) {
		if (strcmp(s->tags[i].key, key) == 0)
			return s->tags[i].value;
	}
	return NULL;
}

const char *rs_atag(const struct rs_snapshot *s, const char *name)
{
	char key[RS_TAG_KEY_MAX + 1];

	snprintf(key, sizeof(key), RS_TAG_PREFIX "%s", name);
	return rs_tag(s, key);
}

static int b64_value(int c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

int rs_base64_decode(const char *src, struct strbuf *out)
{
	size_t len = strlen(src), i;

	if (len % 4)
		return -1;
	for (i = 0; i < len; i += 4) {
		int v[4], k, pad = 0;
		unsigned char b[3];

		for (k = 0; k < 4; k++) {
			if (src[i + k] == '=' && i + 4 == len && k >= 2) {
				v[k] = 0;
				pad++;
				continue;
			}
			if (pad) /* "=" then a letter */
				return -1;
			v[k] = b64_value((unsigned char)src[i + k]);
			if (v[k] < 0)
				return -1;
		}
		b[0] = (unsigned char)(v[0] << 2 | v[1] >> 4);
		b[1] = (unsigned char)((v[1] & 0xf) << 4 | v[2] >> 2);
		b[2] = (unsigned char)((v[2] & 0x3) << 6 | v[3]);
		sb_append(out, b, (size_t)(3 - pad));
	}
	return 0;
}

int rs_decode_chunks(const struct rs_snapshot *s, const char *prefix, struct strbuf *out,
                     bool *found, struct amis_err *err)
{
	size_t i, nchunks = 0, plen = strlen(prefix);
	int k;

	sb_reset(out);
	*found = false;
	/* Count the chunk tags, then take 1..N in order: no gap allowed. */
	for (i = 0; i < s->ntags; i++) {
		const char *num = s->tags[i].key + plen;

		if (strncmp(s->tags[i].key, prefix, plen) == 0 && *num &&
		    strspn(num, "0123456789") == strlen(num))
			nchunks++;
	}
	for (k = 1; (size_t)k <= nchunks; k++) {
		char key[RS_TAG_KEY_MAX + 1];
		const char *v;

		snprintf(key, sizeof(key), "%s%d", prefix, k);
		v = rs_tag(s, key);
		if (!v)
			return err_set(err, AMIS_E_INVALID_ARGUMENT,
			               "snapshot %s: tag %s is missing (%zu chunks of %s*)",
			               s->snapshot_id, key, nchunks, prefix);
		if (rs_base64_decode(v, out) < 0)
			return err_set(err, AMIS_E_INVALID_ARGUMENT,
			               "snapshot %s: tag %s is not valid base64", s->snapshot_id,
			               key);
	}
	*found = nchunks > 0;
	return 0;
}

void rs_sets_free(struct rs_sets *s)
{
	size_t i;

	for (i = 0; i < s->n; i++)
		free(s->items[i].snaps);
	free(s->items);
	s->items = NULL;
	s->n = 0;
}

static int newest_first(const void *a, const void *b)
{
	const struct rs_set *x = a, *y = b;
	int c = strcmp(y->start_time, x->start_time);

	return c ? c : strcmp(x->request_id, y->request_id);
}

void rs_group(struct rs_snapshot_list *list, struct rs_sets *out)
{
	size_t i, j;

	out->n = 0;
	out->items = NULL;
	for (i = 0; i < list->n; i++) {
		struct rs_snapshot *s = &list->items[i];
		const char *rid = rs_atag(s, "request-id");
		const char *st = rs_atag(s, "backup-state");
		const char *name = rs_atag(s, "name");
		struct rs_set *set = NULL;

		if (!rid || !rid[0])
			continue;
		for (j = 0; j < out->n; j++) {
			if (strcmp(out->items[j].request_id, rid) == 0)
				set = &out->items[j];
		}
		if (!set) {
			out->items = xrealloc(out->items, (out->n + 1) * sizeof(*out->items));
			set = &out->items[out->n++];
			memset(set, 0, sizeof(*set));
			snprintf(set->request_id, sizeof(set->request_id), "%s", rid);
			snprintf(set->name, sizeof(set->name), "%s", name ? name : "");
			snprintf(set->backup_state, sizeof(set->backup_state), "%s", st ? st : "");
			snprintf(set->start_time, sizeof(set->start_time), "%s", s->start_time);
		}
		/* A set's state is only as good as its worst snapshot's. */
		if (!st || strcmp(st, set->backup_state) != 0) {
			if (strcmp(set->backup_state, "stopped") == 0 || !st)
				snprintf(set->backup_state, sizeof(set->backup_state), "%s",
				         st ? st : "");
		}
		if (s->start_time[0] &&
		    (!set->start_time[0] || strcmp(s->start_time, set->start_time) < 0))
			snprintf(set->start_time, sizeof(set->start_time), "%s", s->start_time);
		set->snaps = xrealloc(set->snaps, (set->n + 1) * sizeof(*set->snaps));
		set->snaps[set->n++] = s;
	}
	if (out->n > 1)
		qsort(out->items, out->n, sizeof(*out->items), newest_first);
}

/* "request id (state, N snapshots, start time)" lines for messages. */
static void describe_sets(const struct rs_sets *sets, struct strbuf *sb)
{
	size_t i;

	for (i = 0; i < sets->n && i < 10; i++)
		sb_appendf(sb, "%s  %s  %s  %zu snapshot(s)  \"%s\"\n", sets->items[i].start_time,
		           sets->items[i].request_id,
		           sets->items[i].backup_state[0] ? sets->items[i].backup_state
		                                          : "(no state)",
		           sets->items[i].n, sets->items[i].name);
	if (sets->n > 10)
		sb_appendf(sb, "... and %zu more\n", sets->n - 10);
}

int rs_choose(const struct rs_sets *sets, bool force, const struct rs_set **chosen,
              struct amis_err *err)
{
	struct strbuf sb;
	size_t i;

	*chosen = NULL;
	for (i = 0; i < sets->n; i++) {
		if (force || strcmp(sets->items[i].backup_state, "stopped") == 0) {
			*chosen = &sets->items[i];
			return RS_EXIT_OK;
		}
	}
	if (sets->n == 0) {
		err_set(err, AMIS_E_INVALID_ARGUMENT, "no snapshot set found");
		return RS_EXIT_NOT_FOUND;
	}
	sb_init(&sb);
	describe_sets(sets, &sb);
	err_set(err, AMIS_E_INVALID_ARGUMENT,
	        "no set whose backup-state is stopped; the sets found:\n%s"
	        "choose one with --request-id (and --force to restore a set whose backup did "
	        "not complete)",
	        sb_str(&sb));
	sb_free(&sb);
	return RS_EXIT_BACKUP_STATE;
}

int rs_pg_major(const char *v)
{
	long n;
	char *end;

	if (!v || !isdigit((unsigned char)v[0]))
		return 0;
	n = strtol(v, &end, 10);
	if (*end || n <= 0)
		return 0;
	/* From 10 on, XXYYZZ -> XX; before, XYYZZ -> X (9.6 is 90600: 9). */
	return (int)(n / 10000);
}

int rs_pg_major_of_version_output(const char *text)
{
	const char *p = text ? strstr(text, "(PostgreSQL) ") : NULL;

	if (!p)
		return 0;
	p += strlen("(PostgreSQL) ");
	if (!isdigit((unsigned char)*p))
		return 0;
	return atoi(p);
}

/* Whether every snapshot of the set has the same value for tag name (or none has it). */
static int same_everywhere(const struct rs_set *set, const char *name, bool required,
                           struct amis_err *err)
{
	const char *first = NULL;
	size_t i;

	for (i = 0; i < set->n; i++) {
		const char *v = rs_atag(set->snaps[i], name);

		if (!v || !v[0]) {
			if (!required)
				continue;
			err_set(err, AMIS_E_INVALID_ARGUMENT,
			        "snapshot %s of set %s has no " RS_TAG_PREFIX "%s tag: it was not "
			        "made by an ami_snapshot that writes the tags a restore needs",
			        set->snaps[i]->snapshot_id, set->request_id, name);
			return RS_EXIT_TAGS;
		}
		if (!first) {
			first = v;
		} else if (strcmp(first, v) != 0) {
			err_set(err, AMIS_E_INVALID_ARGUMENT,
			        "the snapshots of set %s disagree on " RS_TAG_PREFIX
			        "%s (\"%s\" and \"%s\")",
			        set->request_id, name, first, v);
			return RS_EXIT_TAGS;
		}
	}
	return RS_EXIT_OK;
}

bool rs_set_completed(const struct rs_set *set, char *not_completed, size_t sz)
{
	size_t i;

	for (i = 0; i < set->n; i++) {
		if (!rs_atag(set->snaps[i], "mount-point"))
			continue; /* not restored */
		if (strcmp(set->snaps[i]->state, "completed") != 0) {
			snprintf(not_completed, sz, "%s (%s)", set->snaps[i]->snapshot_id,
			         set->snaps[i]->state[0] ? set->snaps[i]->state : "state unknown");
			return false;
		}
	}
	return true;
}

int rs_check_set(const struct rs_set *set, const struct rs_check_opts *o, struct amis_err *err)
{
	static const char *const agree[] = {"request-id",        "backup-state",   "pg-version",
	                                    "system-identifier", "data-directory", "volume-count",
	                                    "start-lsn",         "timeline"};
	const char *vc, *pgv;
	size_t i, restorable = 0;
	char *end;
	long count;
	int rc, major;

	if (set->n == 0) {
		err_set(err, AMIS_E_INVALID_ARGUMENT, "set %s has no snapshots", set->request_id);
		return RS_EXIT_NOT_FOUND;
	}
	for (i = 0; i < sizeof(agree) / sizeof(agree[0]); i++) {
		rc = same_everywhere(set, agree[i], true, err);
		if (rc)
			return rc;
	}
	if (o->pitr) {
		rc = same_everywhere(set, "stop-lsn", true, err);
		if (rc)
			return rc;
	}
	/* Completeness: the set knows how many volumes it had. */
	vc = rs_atag(set->snaps[0], "volume-count");
	count = strtol(vc, &end, 10);
	if (*end || count <= 0 || count > 1000) {
		err_set(err, AMIS_E_INVALID_ARGUMENT,
		        "set %s: " RS_TAG_PREFIX "volume-count is \"%s\"", set->request_id, vc);
		return RS_EXIT_TAGS;
	}
	if ((long)set->n != count) {
		err_set(err, AMIS_E_INVALID_ARGUMENT,
		        "set %s is incomplete: %zu of its %ld snapshots exist (a snapshot was "
		        "deleted, or not all are visible to this account)",
		        set->request_id, set->n, count);
		return set->n < (size_t)count ? RS_EXIT_INCOMPLETE : RS_EXIT_TAGS;
	}
	/* The state. */
	if (strcmp(set->backup_state, "stopped") != 0 && !o->force) {
		err_set(err, AMIS_E_INVALID_ARGUMENT,
		        "set %s has backup-state \"%s\", not \"stopped\": its backup did not "
		        "complete (--force restores it anyway, by crash recovery)",
		        set->request_id, set->backup_state);
		return RS_EXIT_BACKUP_STATE;
	}
	/* The layout of what will be mounted. */
	for (i = 0; i < set->n; i++) {
		const struct rs_snapshot *s = set->snaps[i];
		const char *mp = rs_atag(s, "mount-point");

		if (!mp)
			continue;
		restorable++;
		if (!rs_safe_abs_path(mp)) {
			err_set(err, AMIS_E_INVALID_ARGUMENT,
			        "snapshot %s: " RS_TAG_PREFIX
			        "mount-point \"%s\" is not an absolute "
			        "path without . or .. components",
			        s->snapshot_id, mp);
			return RS_EXIT_TAGS;
		}
		if (o->need_layout && !rs_atag(s, "fstype")) {
			err_set(err, AMIS_E_INVALID_ARGUMENT,
			        "snapshot %s has no " RS_TAG_PREFIX "fstype tag", s->snapshot_id);
			return RS_EXIT_TAGS;
		}
	}
	if (restorable == 0) {
		err_set(err, AMIS_E_INVALID_ARGUMENT,
		        "no snapshot of set %s has an " RS_TAG_PREFIX "mount-point tag: nothing "
		        "says where its filesystems go",
		        set->request_id);
		return RS_EXIT_TAGS;
	}
	if (!rs_safe_abs_path(rs_atag(set->snaps[0], "data-directory"))) {
		err_set(err, AMIS_E_INVALID_ARGUMENT,
		        "set %s: the data directory \"%s\" is not an absolute path without . or .. "
		        "components",
		        set->request_id, rs_atag(set->snaps[0], "data-directory"));
		return RS_EXIT_TAGS;
	}
	if (o->pitr) {
		struct strbuf label;
		bool found = false;

		sb_init(&label);
		for (i = 0; i < set->n && !found; i++) {
			if (rs_decode_chunks(set->snaps[i], RS_TAG_PREFIX "backup-label-", &label,
			                     &found, err) < 0) {
				sb_free(&label);
				return RS_EXIT_TAGS;
			}
		}
		sb_free(&label);
		if (!found) {
			err_set(err, AMIS_E_INVALID_ARGUMENT,
			        "set %s carries no backup label (" RS_TAG_PREFIX "backup-label-N "
			        "tags): point-in-time recovery needs it (take it from "
			        "ami_snapshot_history.backup_label by hand)",
			        set->request_id);
			return RS_EXIT_TAGS;
		}
	}
	/* The PostgreSQL major. */
	pgv = rs_atag(set->snaps[0], "pg-version");
	major = rs_pg_major(pgv);
	if (!major) {
		err_set(err, AMIS_E_INVALID_ARGUMENT,
		        "set %s: " RS_TAG_PREFIX "pg-version is \"%s\"", set->request_id, pgv);
		return RS_EXIT_TAGS;
	}
	if (o->local_pg_major && o->local_pg_major != major) {
		err_set(err, AMIS_E_INVALID_ARGUMENT,
		        "set %s is of PostgreSQL %d (%s); this machine's is PostgreSQL %d: install "
		        "PostgreSQL %d (or name its bin directory with --pg-bindir)",
		        set->request_id, major, pgv, o->local_pg_major, major);
		return RS_EXIT_PG_VERSION;
	}
	return RS_EXIT_OK;
}
