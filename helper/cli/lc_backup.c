/*
 * lc_backup.c - backups made of EC2's snapshots and images, their state,
 * and how they are printed (see lifecycle.h).
 *
 * A backup is what one ami_snapshot() call made: the snapshots (and the
 * image) carrying one ami-snapshot:request-id (doc/restore.md, "What each
 * snapshot carries").  A copy in another region carries the same tags plus
 * ami-snapshot:copy-of and ami-snapshot:copy-source-region.
 */
#include "lifecycle.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void lc_inventory_free(struct lc_inventory *inv)
{
	lc_snapshot_list_free(&inv->snaps);
	lc_image_list_free(&inv->images);
	free(inv->items);
	inv->items = NULL;
	inv->n = 0;
}

time_t lc_parse_time(const char *iso)
{
	struct tm tm;
	const char *rest;

	if (!iso || !iso[0])
		return 0;
	memset(&tm, 0, sizeof(tm));
	rest = strptime(iso, "%Y-%m-%dT%H:%M:%S", &tm);
	if (!rest)
		return 0;
	/* Fractions of a second, then Z or +00:00 (EC2 writes UTC). */
	if (*rest == '.') {
		rest++;
		while (*rest >= '0' && *rest <= '9')
			rest++;
	}
	if (*rest && strcmp(rest, "Z") && strcmp(rest, "+00:00") && strcmp(rest, "+0000"))
		return 0;
	return timegm(&tm);
}

static void copy_tag(char *dst, size_t sz, const struct lc_tags *t, const char *key)
{
	const char *v = lc_tags_get(t, key);

	snprintf(dst, sz, "%s", v ? v : "");
}

static bool in_scope(const struct lc_tags *t, const struct lc_scope *s)
{
	const char *v;

	if (!lc_tags_get(t, LC_TAG("request-id")))
		return false;
	if (s->system_id) {
		v = lc_tags_get(t, LC_TAG("system-identifier"));
		if (!v || strcmp(v, s->system_id) != 0)
			return false;
	}
	if (s->name) {
		v = lc_tags_get(t, LC_TAG("name"));
		if (!v || strcmp(v, s->name) != 0)
			return false;
	}
	if (s->request_id && strcmp(lc_tags_get(t, LC_TAG("request-id")), s->request_id) != 0)
		return false;
	return true;
}

static struct lc_backup *find_or_add(struct lc_inventory *inv, const struct lc_tags *t, size_t *cap)
{
	const char *rid = lc_tags_get(t, LC_TAG("request-id"));
	struct lc_backup *b;
	size_t i;

	for (i = 0; i < inv->n; i++) {
		if (strcmp(inv->items[i].request_id, rid) == 0)
			return &inv->items[i];
	}
	if (inv->n == *cap) {
		*cap = *cap ? *cap * 2 : 16;
		inv->items = xrealloc(inv->items, *cap * sizeof(*inv->items));
	}
	b = &inv->items[inv->n++];
	memset(b, 0, sizeof(*b));
	snprintf(b->request_id, sizeof(b->request_id), "%s", rid);
	snprintf(b->region, sizeof(b->region), "%s", inv->region);
	copy_tag(b->name, sizeof(b->name), t, LC_TAG("name"));
	copy_tag(b->system_id, sizeof(b->system_id), t, LC_TAG("system-identifier"));
	copy_tag(b->pg_version, sizeof(b->pg_version), t, LC_TAG("pg-version"));
	copy_tag(b->start_lsn, sizeof(b->start_lsn), t, LC_TAG("start-lsn"));
	copy_tag(b->taken_from, sizeof(b->taken_from), t, LC_TAG("taken-from"));
	copy_tag(b->primary_host, sizeof(b->primary_host), t, LC_TAG("primary-host"));
	copy_tag(b->standby_sync_state, sizeof(b->standby_sync_state), t,
	         LC_TAG("standby-sync-state"));
	copy_tag(b->copy_of_region, sizeof(b->copy_of_region), t, LC_TAG("copy-source-region"));
	return b;
}

/* Tags that may differ between a set's snapshots (FINISH may tag some later): the latest wins. */
static void merge_tags(struct lc_backup *b, const struct lc_tags *t)
{
	const char *v;

	v = lc_tags_get(t, LC_TAG("backup-state"));
	/* A failure tag on any member is the backup's; stopped only once all say so. */
	if (v && (!b->backup_state[0] || !strcmp(v, "failed") || !strcmp(v, "aborted") ||
	          !strcmp(b->backup_state, "stopped")))
		snprintf(b->backup_state, sizeof(b->backup_state), "%s", v);
	if (!b->stop_lsn[0])
		copy_tag(b->stop_lsn, sizeof(b->stop_lsn), t, LC_TAG("stop-lsn"));
	if (!b->verified[0])
		copy_tag(b->verified, sizeof(b->verified), t, LC_TAG("verified"));
	if (!b->image_id[0])
		copy_tag(b->image_id, sizeof(b->image_id), t, LC_TAG("image-id"));
	if (!b->copy_of_id[0])
		copy_tag(b->copy_of_id, sizeof(b->copy_of_id), t, LC_TAG("copy-of"));
}

static int percent(const char *p)
{
	int v = atoi(p);

	return v < 0 ? 0 : v > 100 ? 100 : v;
}

void lc_backup_state(struct lc_backup *b)
{
	bool pending = false;
	size_t i;

	b->reason[0] = '\0';
	b->progress = 100;
	b->size_gib = 0;
	for (i = 0; i < b->nsnaps; i++) {
		const struct lc_snapshot *s = b->snaps[i];

		if (s->volume_size_gib > 0)
			b->size_gib += s->volume_size_gib;
		if (!strcmp(s->state, "error")) {
			snprintf(b->state, sizeof(b->state), "failed");
			snprintf(b->reason, sizeof(b->reason), "snapshot %s: %s", s->snapshot_id,
			         s->state_message[0] ? s->state_message : "error");
			return;
		}
		if (strcmp(s->state, "completed") != 0) {
			pending = true;
			if (percent(s->progress) < b->progress)
				b->progress = percent(s->progress);
		}
	}
	if (b->image) {
		const char *st = b->image->state;

		if (!strcmp(st, "failed") || !strcmp(st, "invalid") || !strcmp(st, "error") ||
		    !strcmp(st, "deregistered")) {
			snprintf(b->state, sizeof(b->state), "failed");
			snprintf(b->reason, sizeof(b->reason), "image %s is %s%s%.200s",
			         b->image->image_id, st, b->image->state_reason[0] ? ": " : "",
			         b->image->state_reason);
			return;
		}
		if (strcmp(st, "available") != 0) {
			pending = true;
			if (b->progress == 100)
				b->progress = 99;
		}
	} else if (b->ami && b->image_id[0]) {
		/* Tagged with an image that DescribeImages no longer lists. */
		snprintf(b->state, sizeof(b->state), "failed");
		snprintf(b->reason, sizeof(b->reason), "image %s is gone", b->image_id);
		return;
	}
	if (!strcmp(b->backup_state, "failed") || !strcmp(b->backup_state, "aborted")) {
		snprintf(b->state, sizeof(b->state), "failed");
		snprintf(b->reason, sizeof(b->reason), "the backup %s", b->backup_state);
		return;
	}
	if (strcmp(b->backup_state, "stopped") != 0)
		snprintf(b->state, sizeof(b->state), "started");
	else
		snprintf(b->state, sizeof(b->state), "%s", pending ? "pending" : "completed");
	if (!pending)
		b->progress = 100;
}

enum ret_state lc_retention_state(const struct lc_backup *b)
{
	if (!strcmp(b->state, "completed"))
		return RET_GOOD;
	if (!strcmp(b->state, "failed"))
		return RET_FAILED;
	return RET_IN_PROGRESS;
}

static int newest_first(const void *x, const void *y)
{
	const struct lc_backup *a = x, *b = y;

	if (a->created_t != b->created_t)
		return a->created_t > b->created_t ? -1 : 1;
	return strcmp(a->request_id, b->request_id);
}

void lc_group(struct lc_inventory *inv, const struct lc_scope *scope, time_t now)
{
	size_t i, cap = 0;

	(void)now;
	free(inv->items);
	inv->items = NULL;
	inv->n = 0;
	for (i = 0; i < inv->images.n; i++) {
		const struct lc_image *img = &inv->images.items[i];
		struct lc_backup *b;

		if (!in_scope(&img->tags, scope))
			continue;
		b = find_or_add(inv, &img->tags, &cap);
		b->ami = true;
		b->image = img;
		snprintf(b->image_id, sizeof(b->image_id), "%s", img->image_id);
		snprintf(b->image_state, sizeof(b->image_state), "%s", img->state);
		merge_tags(b, &img->tags);
		if (!b->copy_of_id[0])
			copy_tag(b->copy_of_id, sizeof(b->copy_of_id), &img->tags,
			         LC_TAG("copy-of"));
	}
	for (i = 0; i < inv->snaps.n; i++) {
		const struct lc_snapshot *s = &inv->snaps.items[i];
		struct lc_backup *b;
		time_t t;

		if (!in_scope(&s->tags, scope))
			continue;
		b = find_or_add(inv, &s->tags, &cap);
		merge_tags(b, &s->tags);
		if (b->image_id[0])
			b->ami = true;
		if (b->nsnaps == LC_MAX_SNAPSHOTS)
			continue;
		b->snaps[b->nsnaps++] = s;
		t = lc_parse_time(s->start_time);
		if (t && (!b->created_t || t < b->created_t)) {
			b->created_t = t;
			snprintf(b->created, sizeof(b->created), "%s", s->start_time);
		}
	}
	for (i = 0; i < inv->n; i++) {
		struct lc_backup *b = &inv->items[i];

		if (!b->created_t && b->image) {
			b->created_t = lc_parse_time(b->image->creation_date);
			snprintf(b->created, sizeof(b->created), "%s", b->image->creation_date);
		}
		lc_backup_state(b);
	}
	if (inv->n > 1)
		qsort(inv->items, inv->n, sizeof(*inv->items), newest_first);
	/* image pointers stay valid: they point into inv->images, not items. */
}

size_t lc_backup_snapshot_ids(const struct lc_backup *b, const char **ids, size_t max)
{
	size_t i;

	for (i = 0; i < b->nsnaps && i < max; i++)
		ids[i] = b->snaps[i]->snapshot_id;
	return i;
}

int lc_read_system_id(const char *datadir, char *out, size_t sz, struct amis_err *err)
{
	char path[4096];
	uint64_t id;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/global/pg_control", datadir);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "cannot open %s: %s", path,
		               strerror(errno));
	/* ControlFileData begins with uint64 system_identifier (src/include/catalog/pg_control.h).
	 */
	n = read(fd, &id, sizeof(id));
	close(fd);
	if (n != (ssize_t)sizeof(id) || id == 0)
		return err_set(err, AMIS_E_INVALID_ARGUMENT, "%s has no system identifier", path);
	snprintf(out, sz, "%" PRIu64, id);
	return 0;
}

/* ---- Output. ---- */

void lc_age_text(long s, char *buf, size_t sz)
{
	if (s < 0)
		snprintf(buf, sz, "future");
	else if (s < 60)
		snprintf(buf, sz, "%lds", s);
	else if (s < 3600)
		snprintf(buf, sz, "%ldm", s / 60);
	else if (s < 86400)
		snprintf(buf, sz, "%ldh%ldm", s / 3600, s % 3600 / 60);
	else
		snprintf(buf, sz, "%ldd%ldh", s / 86400, s % 86400 / 3600);
}

static void jstr(json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, v && v[0] ? json_object_new_string(v) : NULL);
}

static json_object *lock_json(const struct lc_lock *l)
{
	json_object *o;

	if (!l->snapshot_id[0] || !l->lock_state[0])
		return NULL;
	o = json_object_new_object();
	jstr(o, "state", l->lock_state);
	json_object_object_add(o, "duration_days",
	                       l->lock_duration_days ? json_object_new_int64(l->lock_duration_days)
	                                             : NULL);
	json_object_object_add(o, "cool_off_hours",
	                       l->cool_off_hours ? json_object_new_int64(l->cool_off_hours) : NULL);
	jstr(o, "cool_off_expires_on", l->cool_off_expires_on);
	jstr(o, "created_on", l->lock_created_on);
	jstr(o, "expires_on", l->lock_expires_on);
	return o;
}

json_object *lc_backup_json(const struct lc_backup *b, time_t now)
{
	json_object *o = json_object_new_object(), *a, *x;
	size_t i;

	jstr(o, "request_id", b->request_id);
	jstr(o, "name", b->name);
	json_object_object_add(o, "kind", json_object_new_string(b->ami ? "ami" : "set"));
	jstr(o, "region", b->region);
	jstr(o, "system_identifier", b->system_id);
	jstr(o, "pg_version", b->pg_version);
	jstr(o, "backup_state", b->backup_state);
	json_object_object_add(o, "state", json_object_new_string(b->state));
	jstr(o, "reason", b->reason);
	jstr(o, "created", b->created);
	json_object_object_add(o, "age_seconds",
	                       b->created_t ? json_object_new_int64((int64_t)(now - b->created_t))
	                                    : NULL);
	json_object_object_add(o, "progress", json_object_new_int(b->progress));
	json_object_object_add(o, "size_gib", json_object_new_int64(b->size_gib));
	jstr(o, "start_lsn", b->start_lsn);
	jstr(o, "stop_lsn", b->stop_lsn);
	/* A set taken on a hot standby: where from (doc/lifecycle.md, "JSON"). */
	json_object_object_add(
	    o, "taken_from", json_object_new_string(b->taken_from[0] ? b->taken_from : "primary"));
	jstr(o, "primary_host", b->primary_host);
	jstr(o, "standby_sync_state", b->standby_sync_state);
	if (b->ami) {
		x = json_object_new_object();
		jstr(x, "image_id", b->image_id);
		jstr(x, "state", b->image ? b->image->state : "");
		jstr(x, "reason", b->image ? b->image->state_reason : "");
		jstr(x, "name", b->image ? b->image->name : "");
		json_object_object_add(o, "image", x);
	} else {
		json_object_object_add(o, "image", NULL);
	}
	a = json_object_new_array();
	for (i = 0; i < b->nsnaps; i++) {
		const struct lc_snapshot *s = b->snaps[i];

		x = json_object_new_object();
		jstr(x, "snapshot_id", s->snapshot_id);
		jstr(x, "volume_id", s->volume_id);
		jstr(x, "state", s->state);
		jstr(x, "progress", s->progress);
		jstr(x, "state_message", s->state_message);
		jstr(x, "start_time", s->start_time);
		json_object_object_add(
		    x, "size_gib",
		    s->volume_size_gib >= 0 ? json_object_new_int64(s->volume_size_gib) : NULL);
		json_object_object_add(x, "encrypted", json_object_new_boolean(s->encrypted));
		jstr(x, "device", lc_tags_get(&s->tags, LC_TAG("device")));
		jstr(x, "mount_point", lc_tags_get(&s->tags, LC_TAG("mount-point")));
		json_object_object_add(x, "lock", lock_json(&b->locks[i]));
		json_object_array_add(a, x);
	}
	json_object_object_add(o, "snapshots", a);
	if (b->lock.state[0]) {
		x = json_object_new_object();
		jstr(x, "state", b->lock.state);
		jstr(x, "expires_on", b->lock.expires_on);
		json_object_object_add(x, "locked_snapshots",
		                       json_object_new_int64((int64_t)b->lock.nlocked));
		json_object_object_add(o, "lock", x);
	} else {
		json_object_object_add(o, "lock", NULL);
	}
	if (b->copy_of_region[0]) {
		x = json_object_new_object();
		jstr(x, "region", b->copy_of_region);
		jstr(x, "id", b->copy_of_id);
		json_object_object_add(o, "copy_of", x);
	} else {
		json_object_object_add(o, "copy_of", NULL);
	}
	a = json_object_new_array();
	for (i = 0; i < b->ncopies; i++) {
		x = json_object_new_object();
		jstr(x, "region", b->copies[i].region);
		jstr(x, "state", b->copies[i].state);
		json_object_array_add(a, x);
	}
	json_object_object_add(o, "copies", a);
	jstr(o, "verified", b->verified);
	return o;
}

/* "ids" column: the image, else the first snapshot and how many more. */
static void ids_text(const struct lc_backup *b, char *buf, size_t sz)
{
	if (b->ami && b->image_id[0])
		snprintf(buf, sz, "%s", b->image_id);
	else if (b->nsnaps > 1)
		snprintf(buf, sz, "%s +%zu", b->snaps[0]->snapshot_id, b->nsnaps - 1);
	else if (b->nsnaps == 1)
		snprintf(buf, sz, "%s", b->snaps[0]->snapshot_id);
	else
		snprintf(buf, sz, "-");
}

static void copies_text(const struct lc_backup *b, char *buf, size_t sz)
{
	size_t i, len = 0;

	buf[0] = '\0';
	if (b->copy_of_region[0]) {
		snprintf(buf, sz, "copy of %s", b->copy_of_region);
		return;
	}
	for (i = 0; i < b->ncopies && len < sz; i++)
		len += (size_t)snprintf(buf + len, sz - len, "%s%s", i ? "," : "",
		                        b->copies[i].region);
	if (!buf[0])
		snprintf(buf, sz, "-");
}

static void lock_text(const struct lc_backup *b, char *buf, size_t sz)
{
	if (!b->lock.state[0] || !strcmp(b->lock.state, "expired"))
		snprintf(buf, sz, "-");
	else
		snprintf(buf, sz, "%s %.10s", b->lock.state, b->lock.expires_on);
}

#define NCOLS 12

void lc_print_table(FILE *f, const struct lc_backup *const *rows, size_t n, time_t now)
{
	static const char *const head[NCOLS] = {"NAME",   "KIND", "AGE",      "STATE",
	                                        "PROG",   "SIZE", "REGION",   "IDS",
	                                        "COPIES", "LOCK", "VERIFIED", "REQUEST"};
	char(*cells)[NCOLS][128] = xcalloc(n ? n : 1, sizeof(*cells));
	size_t w[NCOLS], i, c;

	for (c = 0; c < NCOLS; c++)
		w[c] = strlen(head[c]);
	for (i = 0; i < n; i++) {
		const struct lc_backup *b = rows[i];

		snprintf(cells[i][0], 128, "%.120s", b->name[0] ? b->name : "-");
		snprintf(cells[i][1], 128, "%s", b->ami ? "ami" : "set");
		if (b->created_t)
			lc_age_text((long)(now - b->created_t), cells[i][2], 128);
		else
			snprintf(cells[i][2], 128, "?");
		snprintf(cells[i][3], 128, "%s", b->state);
		snprintf(cells[i][4], 128, "%d%%", b->progress);
		snprintf(cells[i][5], 128, "%lldG", b->size_gib);
		snprintf(cells[i][6], 128, "%s", b->region);
		ids_text(b, cells[i][7], 128);
		copies_text(b, cells[i][8], 128);
		lock_text(b, cells[i][9], 128);
		snprintf(cells[i][10], 128, "%.10s", b->verified[0] ? b->verified : "-");
		snprintf(cells[i][11], 128, "%s", b->request_id);
		for (c = 0; c < NCOLS; c++) {
			if (strlen(cells[i][c]) > w[c])
				w[c] = strlen(cells[i][c]);
		}
	}
	for (c = 0; c < NCOLS; c++)
		fprintf(f, "%-*s%s", c + 1 < NCOLS ? (int)w[c] : 0, head[c],
		        c + 1 < NCOLS ? "  " : "\n");
	for (i = 0; i < n; i++) {
		for (c = 0; c < NCOLS; c++)
			fprintf(f, "%-*s%s", c + 1 < NCOLS ? (int)w[c] : 0, cells[i][c],
			        c + 1 < NCOLS ? "  " : "\n");
	}
	free(cells);
}

void lc_print_backup(FILE *f, const struct lc_backup *b, time_t now)
{
	char age[32], text[160];
	size_t i;

	lc_age_text(b->created_t ? (long)(now - b->created_t) : 0, age, sizeof(age));
	fprintf(f, "request id:        %s\n", b->request_id);
	fprintf(f, "name:              %s\n", b->name);
	fprintf(f, "kind:              %s\n", b->ami ? "ami" : "set");
	fprintf(f, "region:            %s\n", b->region);
	fprintf(f, "system identifier: %s\n", b->system_id[0] ? b->system_id : "-");
	fprintf(f, "created:           %s (%s ago)\n", b->created[0] ? b->created : "?", age);
	fprintf(f, "state:             %s%s%s (backup-state %s, %d%%)\n", b->state,
	        b->reason[0] ? ": " : "", b->reason, b->backup_state[0] ? b->backup_state : "-",
	        b->progress);
	fprintf(f, "size:              %lld GiB\n", b->size_gib);
	fprintf(f, "WAL:               %s .. %s\n", b->start_lsn[0] ? b->start_lsn : "?",
	        b->stop_lsn[0] ? b->stop_lsn : "?");
	if (b->taken_from[0])
		fprintf(f, "taken from:        %s of %s (sync state %s)\n", b->taken_from,
		        b->primary_host[0] ? b->primary_host : "?",
		        b->standby_sync_state[0] ? b->standby_sync_state : "?");
	if (b->ami)
		fprintf(f, "image:             %s (%s)\n", b->image_id,
		        b->image ? b->image->state : "gone");
	lock_text(b, text, sizeof(text));
	fprintf(f, "lock:              %s\n", text);
	copies_text(b, text, sizeof(text));
	fprintf(f, "copies:            %s%s%s\n", text, b->copy_of_id[0] ? " " : "", b->copy_of_id);
	fprintf(f, "verified:          %s\n", b->verified[0] ? b->verified : "never");
	for (i = 0; i < b->nsnaps; i++) {
		const struct lc_snapshot *s = b->snaps[i];
		const char *mp = lc_tags_get(&s->tags, LC_TAG("mount-point"));

		fprintf(f, "  %s  %-9s %4s  %4lldG  %s%s%s\n", s->snapshot_id, s->state,
		        s->progress[0] ? s->progress : "-", s->volume_size_gib, mp ? mp : "-",
		        b->locks[i].lock_state[0] ? "  locked " : "", b->locks[i].lock_state);
	}
}
