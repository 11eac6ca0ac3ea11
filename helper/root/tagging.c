/*
 * tagging.c - FINISH and the snapshots' tags (see op_internal.h): the
 * backup's metadata once the backup stopped, the backup-state of sets that
 * failed, and the snapshots a lost or broken answer made, found by the
 * request-id tag their own CreateSnapshots set.
 */
#include "job.h"
#include "op_internal.h"
#include "inflight.h"

#include <ctype.h>
#include <errno.h>
#include <openssl/evp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

void op_settled(struct helper *h, struct operation *op)
{
	if (!op->inflight)
		return;
	inflight_remove(h->cfg->state_dir, op->request_id);
	op->inflight = false;
}

/*
 * Marks snapshots of an operation that did not complete; after the thaw
 * only.  Once they are tagged (or nothing was made, and no lost answer can
 * still make something), the operation's inflight entry goes; otherwise it
 * stays for inflight_resolve().
 */
void tag_backup_state(struct helper *h, struct operation *op, const char *state)
{
	struct ec2_tag tag = {"ami-snapshot:backup-state", state};
	const char *ids[MAX_VOLUMES + 1];
	struct amis_err err;
	size_t i;

	if (!op->snaps.n && !op->image_id[0]) {
		if (op->answer_lost && op->inflight)
			log_info("request %s: its entry in %s/%s is kept: EC2 may still make the "
			         "snapshots of its lost call; the next requests look for them",
			         op->request_id, h->cfg->state_dir, INFLIGHT_DIR);
		else
			op_settled(h, op);
		return;
	}
	for (i = 0; i < op->snaps.n && i < MAX_VOLUMES; i++)
		ids[i] = op->snaps.items[i].snapshot_id;
	/* An image made (create) is tagged with its snapshots. */
	if (op->image_id[0])
		ids[i++] = op->image_id;
	err_clear(&err);
	if (worker_create_tags(h->worker, ids, i, &tag, 1, h->cfg->ec2_timeout_ms, &err) != 0)
		log_warn("request %s: could not tag snapshots as %s: %s: %s", op->request_id, state,
		         err.code, err.msg);
	else
		op_settled(h, op);
}

/* An operation of this helper: its request is not left unfinished. */
static bool request_is_ours(const struct helper *h, const char *request_id)
{
	const struct operation *op;

	if (h->active && !strcmp(h->active->request_id, request_id))
		return true;
	for (op = h->stuck; op; op = op->next_stuck)
		if (!strcmp(op->request_id, request_id))
			return true;
	return false;
}

/*
 * The tags recorded for a complete backup whose tags EC2 refused, applied
 * resource by resource.  1: the entry held tags (applied and dropped, or
 * kept if it could not be read); 0: an empty entry; -1: EC2 refused again.
 */
static int apply_recorded_tags(struct helper *h, const char *request_id)
{
	struct inflight_tag *recs;
	struct ec2_tag tags[EC2_MAX_TAGS_PER_RESOURCE];
	struct amis_err err;
	size_t n, i, j, nres = 0;

	if (inflight_read_tags(h->cfg->state_dir, request_id, &recs, &n) != 0)
		return 1;
	if (!n)
		return 0;
	for (i = 0; i < n; i = j) {
		const char *id = recs[i].resource;
		size_t nt = 0;

		for (j = i; j < n && !strcmp(recs[j].resource, id); j++)
			if (nt < EC2_MAX_TAGS_PER_RESOURCE)
				tags[nt++] = (struct ec2_tag){recs[j].key, recs[j].value};
		err_clear(&err);
		if (worker_create_tags(h->worker, &id, 1, tags, nt, h->cfg->ec2_timeout_ms, &err) !=
		    0) {
			log_warn(
			    "request %s: the tags of a complete backup, recorded when EC2 refused "
			    "them, were refused again (%s): %s: %s; tried again at the next "
			    "request",
			    request_id, id, err.code, err.msg);
			free(recs);
			return -1;
		}
		nres++;
	}
	log_warn("request %s: the tags of a complete backup, recorded when EC2 refused them, are "
	         "applied now to its %zu snapshot(s) and image (backup-state=stopped)",
	         request_id, nres);
	inflight_remove(h->cfg->state_dir, request_id);
	free(recs);
	return 1;
}

/*
 * The image an unfinished AMI request made (CreateImage while frozen, or
 * RegisterImage after the stop), found by its request-id tag: tagged
 * failed with its snapshots.  0 when tagged or there is none.
 */
static int tag_leftover_image(struct helper *h, const char *request_id, struct amis_err *err)
{
	struct ec2_image_query q = {.tag_key = REQUEST_ID_TAG, .tag_value = request_id};
	struct ec2_tag failed = {"ami-snapshot:backup-state", "failed"};
	struct ec2_image_info *img = xcalloc(1, sizeof(*img));
	const char *id = img->image_id;
	int rc = 0;

	if (worker_describe_image(h->worker, &q, h->cfg->ec2_timeout_ms, img, err) != 0 ||
	    (img->image_id[0] &&
	     worker_create_tags(h->worker, &id, 1, &failed, 1, h->cfg->ec2_timeout_ms, err) != 0)) {
		rc = -1;
	} else if (img->image_id[0]) {
		log_warn("request %s: the image %s it made is tagged failed too", request_id,
		         img->image_id);
	}
	free(img);
	return rc;
}

void inflight_schedule(struct helper *h, long long delay_us)
{
	struct inflight_entry e[1];

	if (h->resolve_at_us || !inflight_list(h->cfg->state_dir, e, 1))
		return;
	h->resolve_at_us = mono_usec() + delay_us;
}

void inflight_resolve(struct helper *h)
{
	struct inflight_entry e[16];
	size_t n = inflight_list(h->cfg->state_dir, e, 16), i, j;
	time_t now = time(NULL);

	for (i = 0; i < n; i++) {
		const char *keys[2] = {REQUEST_ID_TAG, "ami-snapshot:backup-state"};
		const char *values[2] = {e[i].request_id, "started"};
		struct ec2_tag failed = {"ami-snapshot:backup-state", "failed"};
		struct ec2_snapshot_set found = {0};
		const char *ids[MAX_VOLUMES];
		struct strbuf list;
		struct amis_err err;

		if (request_is_ours(h, e[i].request_id))
			continue;
		err_clear(&err);
		switch (apply_recorded_tags(h, e[i].request_id)) {
		case 1:
			continue; /* a complete backup's tags: applied, or kept for later */
		case -1:
			return; /* EC2 unreachable: not once per entry */
		default:
			break; /* an empty entry: what did the request leave? */
		}
		if (worker_find_snapshots_tags(h->worker, keys, values, 2, h->cfg->ec2_timeout_ms,
		                               &found, &err) != 0) {
			log_warn(
			    "request %s: left unfinished by a helper that ended without finishing "
			    "it; could not look for its snapshots: %s: %s (looked for again at the "
			    "next request)",
			    e[i].request_id, err.code, err.msg);
			return; /* EC2 unreachable: not once per entry */
		}
		if (!found.n) {
			if (now - e[i].since > INFLIGHT_KEEP_S) {
				log_info(
				    "request %s: left unfinished by a helper that ended without "
				    "finishing it; no snapshot of it still says started after %ld "
				    "s: "
				    "forgotten",
				    e[i].request_id, (long)(now - e[i].since));
				inflight_remove(h->cfg->state_dir, e[i].request_id);
			}
			continue;
		}
		sb_init(&list);
		for (j = 0; j < found.n && j < MAX_VOLUMES; j++) {
			ids[j] = found.items[j].snapshot_id;
			sb_appendf(&list, "%s%s", j ? "," : "", ids[j]);
		}
		if (worker_create_tags(h->worker, ids, j, &failed, 1, h->cfg->ec2_timeout_ms,
		                       &err) != 0 ||
		    tag_leftover_image(h, e[i].request_id, &err) != 0) {
			log_warn("request %s: could not tag failed the snapshots (or the image) a "
			         "helper "
			         "that ended without finishing it left saying started (%s): %s: %s",
			         e[i].request_id, sb_str(&list), err.code, err.msg);
		} else {
			log_warn("request %s: left unfinished by a helper that ended without "
			         "finishing it "
			         "(%ld s ago: killed, crashed, or the machine stopped); its %zu "
			         "snapshot(s) "
			         "still said backup-state=started: tagged failed: %s",
			         e[i].request_id, (long)(now - e[i].since), j, sb_str(&list));
			inflight_remove(h->cfg->state_dir, e[i].request_id);
		}
		sb_free(&list);
		ec2_snapshot_set_free(&found);
	}
}

/* Logs op's snapshot ids (what a later tag is about). */
void log_snapshot_ids(const struct operation *op, const char *what)
{
	struct strbuf ids;
	size_t i;

	if (!op->snaps.n)
		return;
	sb_init(&ids);
	for (i = 0; i < op->snaps.n; i++)
		sb_appendf(&ids, "%s%s", i ? "," : "", op->snaps.items[i].snapshot_id);
	log_warn("request %s: snapshots %s: %s", op->request_id, what, sb_str(&ids));
	sb_free(&ids);
}

/*
 * After a Timeout, ConnectionError, broken body or a call abandoned for a
 * vanished client, the call may have succeeded on EC2's side
 * (AMIS_F_MAYBE_DONE in errcodes.h).
 */
bool answer_lost(const struct amis_err *err)
{
	return (err_flags(err) & AMIS_F_MAYBE_DONE) != 0;
}

/* Sleeps ms while the server keeps answering other clients (status, Busy). */
static void sleep_serving(long ms)
{
	long long deadline = mono_usec() + ms * 1000LL;
	long long left;

	while ((left = (deadline - mono_usec()) / 1000) > 0)
		server_poll(NULL, 0, left > 1000 ? 1000 : (int)left);
}

/*
 * The snapshots carrying op's request-id tag, looked for twice
 * (DescribeSnapshots is eventually consistent) unless found at once.
 */
static int lookup_by_request_tag(struct helper *h, struct operation *op,
                                 struct ec2_snapshot_set *found, struct amis_err *derr)
{
	int attempt, rc = -1;

	err_clear(derr);
	for (attempt = 0; attempt < 2; attempt++) {
		if (attempt) {
			/* Not while a thaw is pending: its retries must not wait for this. */
			if (freeze_plan_any_frozen(&op->plan))
				break;
			sleep_serving(LOST_SNAPSHOTS_RECHECK_MS);
		}
		rc = worker_find_snapshots(h->worker, REQUEST_ID_TAG, op->request_id,
		                           h->cfg->ec2_timeout_ms, found, derr);
		if (rc != 0 || found->n > 0)
			break;
	}
	return rc;
}

/* Appends to into the snapshots of from that it does not hold yet; frees from. */
static void merge_snapshots(struct ec2_snapshot_set *into, struct ec2_snapshot_set *from)
{
	size_t i, j;

	into->items = xrealloc(into->items, (into->n + from->n) * sizeof(*into->items));
	for (i = 0; i < from->n; i++) {
		for (j = 0; j < into->n; j++)
			if (!strcmp(into->items[j].snapshot_id, from->items[i].snapshot_id))
				break;
		if (j == into->n)
			into->items[into->n++] = from->items[i];
	}
	ec2_snapshot_set_free(from);
}

/*
 * Finds the snapshots a CreateSnapshots whose answer was lost created anyway,
 * by the request-id tag the call itself set, so that they are reported to the
 * client and tagged failed instead of being left as unexplained orphans.
 * After the thaw only.  Adds what it found (or could not find out) to err.
 */
void find_lost_snapshots(struct helper *h, struct operation *op, struct amis_err *err)
{
	struct ec2_snapshot_set found = {0};
	struct amis_err derr;
	struct strbuf ids;
	size_t i;
	int rc;

	rc = lookup_by_request_tag(h, op, &found, &derr);
	if (rc != 0) {
		log_warn("request %s: could not look for snapshots created despite the failure: "
		         "%s: %s",
		         op->request_id, derr.code, derr.msg);
		err_append(
		    err,
		    "EC2 may have created snapshots anyway; they carry the tag %s=%s (looking "
		    "for them failed: %s)",
		    REQUEST_ID_TAG, op->request_id, derr.code);
		return;
	}
	if (!found.n && !op->snaps.n) {
		log_info("request %s: no snapshot with %s=%s: EC2 created none", op->request_id,
		         REQUEST_ID_TAG, op->request_id);
		return;
	}
	/* What the answer listed (if anything) and what the tag finds, once each. */
	merge_snapshots(&op->snaps, &found);
	sb_init(&ids);
	for (i = 0; i < op->snaps.n; i++)
		sb_appendf(&ids, "%s%s", i ? "," : "", op->snaps.items[i].snapshot_id);
	log_warn("request %s: EC2 created %zu snapshot(s) despite the failure: %s", op->request_id,
	         op->snaps.n, sb_str(&ids));
	err_append(err, "EC2 created %zu snapshot(s) anyway (%s), tagged %s=failed", op->snaps.n,
	           sb_str(&ids), "ami-snapshot:backup-state");
	sb_free(&ids);
}

/*
 * Splits text into base64 chunks of at most TAG_VALUE_MAX characters.
 * Returns how many (0 for an empty text), or -1 if more than max are needed.
 */
static long b64_chunks(const char *text, char chunks[][TAG_VALUE_MAX + 1], size_t max)
{
	size_t len = strlen(text), raw = TAG_VALUE_MAX / 4 * 3, n = 0, off;

	if ((len + raw - 1) / raw > max)
		return -1;
	for (off = 0; off < len; off += raw, n++) {
		size_t take = len - off < raw ? len - off : raw;

		EVP_EncodeBlock((unsigned char *)chunks[n], (const unsigned char *)text + off,
		                (int)take);
	}
	return (long)n;
}

/* A warning for the DONE frame (at most AMSP_MAX_WARNINGS; all are logged). */
static void done_warning(struct amsp_writer *w, size_t *n, const char *request_id, const char *fmt,
                         ...) __attribute__((format(printf, 4, 5)));
static void done_warning(struct amsp_writer *w, size_t *n, const char *request_id, const char *fmt,
                         ...)
{
	char text[1024]; /* protocol.c: WARNING is at most 1024 bytes */
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	log_warn("request %s: %s", request_id, text);
	if (*n < AMSP_MAX_WARNINGS)
		amsp_put_str(w, AMSP_T_WARNING, text);
	(*n)++;
}

/*
 * Adds "<key_prefix>1..N" tags carrying text in base64 if they fit in *budget
 * tags; otherwise warns.  what: "backup label", "tablespace map".
 */
static void add_chunk_tags(struct operation *op, const char *text, const char *what,
                           const char *key_prefix, char chunks[][TAG_VALUE_MAX + 1],
                           char keys[][48], struct ec2_tag *tags, size_t *ntags, long *budget,
                           struct amsp_writer *w, size_t *nwarn)
{
	long n = b64_chunks(text, chunks, TAG_CHUNKS_MAX), i;

	if (n < 0) {
		done_warning(w, nwarn, op->request_id,
		             "%s too long for tags; it is in ami_snapshot_history", what);
		return;
	}
	if (n > *budget) {
		done_warning(
		    w, nwarn, op->request_id,
		    "%s needs %ld tags but only %ld remain under EC2's limit of %d tags per "
		    "snapshot; it is in ami_snapshot_history",
		    what, n, *budget > 0 ? *budget : 0, EC2_MAX_TAGS_PER_RESOURCE);
		return;
	}
	for (i = 0; i < n; i++) {
		snprintf(keys[i], sizeof(keys[i]), "%s%ld", key_prefix, i + 1);
		tags[(*ntags)++] = (struct ec2_tag){keys[i], chunks[i]};
	}
	*budget -= n;
}

/* Snapshot i's own tags (its device, its filesystem's layout); how many. */
static size_t volume_tags(const struct operation *op, size_t i, struct ec2_tag *vtags,
                          struct layout_tags *lt)
{
	size_t k, nv = 0;

	for (k = 0; k < op->nvolumes; k++)
		if (!strcmp(op->volume_ids[k], op->snaps.items[i].volume_id) &&
		    op->device_names[k][0])
			vtags[nv++] = (struct ec2_tag){"ami-snapshot:device", op->device_names[k]};
	/* An image's other volumes (the root's...): their device names. */
	for (k = 0; nv == 0 && k < op->nall; k++)
		if (!strcmp(op->all_ids[k], op->snaps.items[i].volume_id) && op->all_devices[k][0])
			vtags[nv++] = (struct ec2_tag){"ami-snapshot:device", op->all_devices[k]};
	layout_volume_tags(op->targets, op->ntargets, &op->plan, op->snaps.items[i].volume_id, lt);
	for (k = 0; k < lt->n; k++)
		vtags[nv++] = lt->tags[k];
	return nv;
}

static void add_record(struct inflight_tag **recs, size_t *n, size_t *cap, const char *id,
                       const struct ec2_tag *t)
{
	struct inflight_tag *r;

	if (*n == *cap) {
		*cap = *cap ? 2 * *cap : 128;
		*recs = xrealloc(*recs, *cap * sizeof(**recs));
	}
	r = &(*recs)[(*n)++];
	snprintf(r->resource, sizeof(r->resource), "%s", id);
	snprintf(r->key, sizeof(r->key), "%s", t->key);
	snprintf(r->value, sizeof(r->value), "%s", t->value ? t->value : "");
}

/* Every tag of a complete backup, for inflight_resolve() to apply again. */
static int record_tags(struct helper *h, struct operation *op, const char *const *ids, size_t nids,
                       const struct ec2_tag *tags, size_t ntags, struct amis_err *err)
{
	struct inflight_tag *recs = NULL;
	size_t n = 0, cap = 0, i, j;
	int rc;

	for (i = 0; i < nids; i++)
		for (j = 0; j < ntags; j++)
			add_record(&recs, &n, &cap, ids[i], &tags[j]);
	for (i = 0; i < op->snaps.n && i < MAX_VOLUMES; i++) {
		struct ec2_tag vtags[1 + LAYOUT_MAX_VOLUME_TAGS];
		struct layout_tags lt;
		size_t nv = volume_tags(op, i, vtags, &lt);

		for (j = 0; j < nv; j++)
			add_record(&recs, &n, &cap, op->snaps.items[i].snapshot_id, &vtags[j]);
	}
	err_clear(err);
	rc = inflight_write_tags(h->cfg->state_dir, op->request_id, recs, n, err);
	free(recs);
	return rc;
}

/*
 * register, in FINISH: RegisterImage with every tag of the snapshots (those
 * CreateSnapshots set, backup-state stopped, and finish's), then the image
 * id on the snapshots.  If it fails, the snapshot set stays as it is: a
 * complete, stopped backup that restores as any other, tagged
 * ami-snapshot:image-state=failed; the client gets an ERROR saying so.
 * Returns 0, or -1 once the ERROR is sent.
 */
static int register_after_stop(struct helper *h, struct operation *op,
                               const struct ec2_tag *finish_tags, size_t nfinish, struct conn *c)
{
	struct ec2_create_snapshots_req r;
	struct ec2_tag tags[MAX_CREATE_TAGS + 3 + 2 * TAG_CHUNKS_MAX];
	const char *ids[MAX_VOLUMES];
	struct amis_err err, terr;
	struct ec2_tag t;
	char desc[512], tl[16];
	size_t i, n;

	fill_request(h, op, &r, tags, MAX_CREATE_TAGS, desc, sizeof(desc), tl, sizeof(tl));
	n = r.ntags;
	for (i = 0; i < n; i++)
		if (!strcmp(tags[i].key, "ami-snapshot:backup-state"))
			tags[i].value = "stopped";
	for (i = 0; i < nfinish && n < EC2_MAX_TAGS_PER_RESOURCE; i++)
		if (strcmp(finish_tags[i].key, "ami-snapshot:backup-state") != 0)
			tags[n++] = finish_tags[i];
	for (i = 0; i < op->snaps.n && i < MAX_VOLUMES; i++)
		ids[i] = op->snaps.items[i].snapshot_id;
	err_clear(&err);
	err_clear(&terr);
	if (image_register(h, op, tags, n, &err) == 0) {
		t = (struct ec2_tag){"ami-snapshot:image-id", op->image_id};
		if (worker_create_tags(h->worker, ids, i, &t, 1, h->cfg->ec2_timeout_ms, &terr) !=
		    0)
			log_warn("request %s: could not tag the snapshots with image %s: %s: %s",
			         op->request_id, op->image_id, terr.code, terr.msg);
		log_info("request %s: registered image %s from %zu snapshots", op->request_id,
		         op->image_id, op->snaps.n);
		return 0;
	}
	t = (struct ec2_tag){"ami-snapshot:image-state", "failed"};
	if (worker_create_tags(h->worker, ids, i, &t, 1, h->cfg->ec2_timeout_ms, &terr) != 0)
		log_warn("request %s: could not tag the snapshots image-state=failed: %s: %s",
		         op->request_id, terr.code, terr.msg);
	err_append(&err,
	           "no image was registered; the backup completed and its snapshot set is "
	           "complete and restorable like any other (ami-snapshot:backup-state=stopped; "
	           "tagged ami-snapshot:image-state=failed)");
	log_warn("request %s: RegisterImage failed: %s: %s", op->request_id, err.code, err.msg);
	send_error(h, c, "finish", &err, op);
	return -1;
}

/* Fields of a W_CREATE_TAGS besides the tags: SEQ, TIMEOUT_MS, one per resource. */
#define TAG_FRAME_FIELDS(nids) (2 + (nids))

/*
 * tags on every one of ids, and each snapshot's own tags (volume_tags) on
 * it, in as few worker requests as the frame's field limit allows (one for
 * up to about 8 volumes), each made at once by the worker.
 */
static int tag_set(struct helper *h, struct operation *op, const char *const *ids, size_t nids,
                   const struct ec2_tag *tags, size_t ntags, struct amis_err *err)
{
	static struct layout_tags lts[MAX_VOLUMES];
	struct worker_item_tag items[AMSP_MAX_FIELDS / 3];
	size_t nitems = 0, i, k, first = ntags;

	for (i = 0; i < op->snaps.n && i < MAX_VOLUMES && i < nids; i++) {
		struct ec2_tag vtags[1 + LAYOUT_MAX_VOLUME_TAGS];
		size_t nv = volume_tags(op, i, vtags, &lts[i]);

		/* Full: send what is gathered (the set's tags with the first frame). */
		if (TAG_FRAME_FIELDS(nids) + 2 * first + 3 * (nitems + nv) > AMSP_MAX_FIELDS) {
			if (worker_create_tags_items(h->worker, ids, nids, tags, first, items,
			                             nitems, h->cfg->ec2_timeout_ms, err) != 0)
				return -1;
			nitems = 0;
			first = 0;
		}
		for (k = 0; k < nv; k++)
			items[nitems++] = (struct worker_item_tag){i, vtags[k]};
	}
	if (!first && !nitems)
		return 0;
	return worker_create_tags_items(h->worker, ids, nids, tags, first, items, nitems,
	                                h->cfg->ec2_timeout_ms, err);
}

int handle_finish(struct helper *h, struct conn *c, const struct amsp_msgview *m)
{
	struct operation *op = c->op;
	/* Static: large, and the helper handles one message at a time. */
	static char label[8193], map[32769];
	static char label_chunks[TAG_CHUNKS_MAX][TAG_VALUE_MAX + 1];
	static char map_chunks[TAG_CHUNKS_MAX][TAG_VALUE_MAX + 1];
	static char label_keys[TAG_CHUNKS_MAX][48], map_keys[TAG_CHUNKS_MAX][48];
	static unsigned char buf[AMSP_HEADER_LEN + AMSP_MAX_WARNINGS * 1100];
	char stop_lsn[33];
	struct ec2_tag tags[3 + 2 * TAG_CHUNKS_MAX];
	const char *ids[MAX_VOLUMES + 1];
	size_t nids;
	struct amis_err err;
	struct amsp_writer w;
	size_t ntags = 0, nwarn = 0, i, len;
	bool have_device = false, tag_failed = false;
	size_t max_layout = 0;
	long budget;

	err_clear(&err);
	if (!op || op->state != OPS_PENDING) {
		log_warn("pid %ld: FINISH out of order", (long)c->pid);
		return -1;
	}
	op_move(op, OPS_TAGGING);
	amsp_copy_str(amsp_get(m, AMSP_T_STOP_LSN), stop_lsn, sizeof(stop_lsn));
	amsp_copy_str(amsp_get(m, AMSP_T_BACKUP_LABEL), label, sizeof(label));
	map[0] = '\0';
	if (amsp_get(m, AMSP_T_TABLESPACE_MAP))
		amsp_copy_str(amsp_get(m, AMSP_T_TABLESPACE_MAP), map, sizeof(map));
	for (i = 0; i < op->nvolumes; i++) {
		struct layout_tags lt;

		if (op->device_names[i][0])
			have_device = true;
		layout_volume_tags(op->targets, op->ntargets, &op->plan, op->volume_ids[i], &lt);
		if (lt.n > max_layout)
			max_layout = lt.n;
	}
	if (op->nall)
		have_device = true;

	amsp_begin(&w, buf, sizeof(buf), AMSP_DONE);
	/*
	 * The backup label (and tablespace map) travel with the snapshots (the
	 * database may be gone at restore time): base64 in tags of at most 256
	 * characters each.  EC2 allows 50 tags per snapshot, counting those set
	 * by CreateSnapshots; backup-state replaces one of those.
	 */
	tags[ntags++] = (struct ec2_tag){"ami-snapshot:backup-state", "stopped"};
	tags[ntags++] = (struct ec2_tag){"ami-snapshot:stop-lsn", stop_lsn};
	/* An image: its id on the snapshots (or, if RegisterImage failed, image-state). */
	if (op->image_id[0])
		tags[ntags++] = (struct ec2_tag){"ami-snapshot:image-id", op->image_id};
	budget = EC2_MAX_TAGS_PER_RESOURCE - (long)op->ncreate_tags - 1 - (have_device ? 1 : 0) -
	         (long)max_layout - (op->image != IMAGE_NONE ? 1 : 0);
	add_chunk_tags(op, label, "backup label", "ami-snapshot:backup-label-", label_chunks,
	               label_keys, tags, &ntags, &budget, &w, &nwarn);
	if (map[0])
		add_chunk_tags(op, map, "tablespace map", "ami-snapshot:tablespace-map-",
		               map_chunks, map_keys, tags, &ntags, &budget, &w, &nwarn);
	for (i = 0; i < op->snaps.n && i < MAX_VOLUMES; i++)
		ids[i] = op->snaps.items[i].snapshot_id;
	nids = i;
	/* create: the image carries the same tags as its snapshots. */
	if (op->image_id[0])
		ids[nids++] = op->image_id;

	/*
	 * The set's tags and, per volume, its own (which EC2 device it was,
	 * where its filesystem was mounted: layout.h), all at once: one round
	 * trip, however many volumes.
	 */
	if (tag_set(h, op, ids, nids, tags, ntags, &err) != 0) {
		done_warning(&w, &nwarn, op->request_id,
		             "could not tag the snapshots with the backup metadata: %s: %s",
		             err.code, err.msg);
		tag_failed = true;
	}
	/*
	 * A complete backup whose tags EC2 refused: recorded, and applied again
	 * before the next request (inflight_resolve); never tagged failed.
	 */
	if (tag_failed && record_tags(h, op, ids, nids, tags, ntags, &err) == 0) {
		done_warning(&w, &nwarn, op->request_id,
		             "the tags are recorded in %s/%s and applied again before the helper's "
		             "next request",
		             h->cfg->state_dir, INFLIGHT_DIR);
		op->inflight = false; /* the entry now holds the tags: kept */
	} else if (tag_failed) {
		done_warning(&w, &nwarn, op->request_id,
		             "the tags could not be recorded either: %s", err.msg);
	}
	/* register: the image, from the complete snapshot set, once the backup stopped. */
	if (op->image == IMAGE_REGISTER && register_after_stop(h, op, tags, ntags, c) != 0) {
		/* The set is complete and tagged stopped: only the image failed. */
		op_settled(h, op);
		op_end(h, c);
		return -1;
	}
	if (op->image_id[0])
		amsp_put_str(&w, AMSP_T_IMAGE_ID, op->image_id);
	len = amsp_end(&w);
	if (!len) {
		/* Cannot happen with the bounds above; still, never answer nothing. */
		amsp_begin(&w, buf, sizeof(buf), AMSP_DONE);
		amsp_put_str(&w, AMSP_T_WARNING, "warnings too long to send; see the helper's log");
		len = amsp_end(&w);
	}
	if (len)
		conn_send(c, buf, len);
	log_info("request %s: done (stop lsn %s)%s", op->request_id, stop_lsn,
	         nwarn ? " with warnings" : "");
	/* A complete backup, even when a tag failed (the warning says so): never tagged failed. */
	op_settled(h, op);
	/*
	 * The automatic lock and copy ([lock], [copy]): a job of the helper's
	 * own, after the answer (the caller does not wait for it) and long
	 * after the freeze.  Only a backup whose tags are complete: the copy
	 * carries them.
	 */
	if (!tag_failed)
		jobs_after_backup(h->jobs, op->request_id, op->name, op->system_id);
	op_end(h, c);
	return -1; /* the conversation is complete */
}
