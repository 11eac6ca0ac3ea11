/*
 * vf_report.c - the pure parts of `ami-snapshot verify` (see verify.h):
 * the report and its output, the amcheck SQL and its answer, the budget,
 * names.  Nothing here touches the system.
 */
#include "verify.h"

#include <ctype.h>
#include <json-c/json.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

const char *vf_outcome_name(enum vf_outcome o)
{
	switch (o) {
	case VF_PASSED:
		return "passed";
	case VF_FAILED:
		return "failed";
	case VF_TIMED_OUT:
		return "timed_out";
	case VF_INTERRUPTED:
		return "interrupted";
	case VF_REFUSED:
		return "refused";
	case VF_ERROR:
		break;
	}
	return "error";
}

int vf_outcome_exit(enum vf_outcome o)
{
	switch (o) {
	case VF_PASSED:
		return VF_EXIT_PASSED;
	case VF_FAILED:
		return VF_EXIT_FAILED;
	case VF_TIMED_OUT:
		return VF_EXIT_TIMED_OUT;
	case VF_INTERRUPTED:
		return VF_EXIT_INTERRUPTED;
	case VF_REFUSED:
		return VF_EXIT_REFUSED;
	case VF_ERROR:
		break;
	}
	return VF_EXIT_ERROR;
}

void vf_report_init(struct vf_report *r)
{
	memset(r, 0, sizeof(*r));
	r->outcome = VF_PASSED;
}

void vf_report_free(struct vf_report *r)
{
	size_t i;

	for (i = 0; i < r->nchecks; i++)
		free(r->checks[i].detail);
	for (i = 0; i < r->nunreached_listed; i++)
		free(r->unreached[i]);
	for (i = 0; i < r->ndumps; i++)
		free(r->dumps[i]);
	free(r->error);
	free(r->tagged);
	memset(r, 0, sizeof(*r));
}

struct vf_check *vf_add_check(struct vf_report *r, const char *name, bool ok, double ms,
                              const char *fmt, ...)
{
	struct vf_check *c;
	struct strbuf sb;
	va_list ap;

	if (r->nchecks == VF_MAX_CHECKS)
		return NULL;
	c = &r->checks[r->nchecks++];
	snprintf(c->name, sizeof(c->name), "%s", name);
	c->ok = ok;
	c->ms = ms;
	sb_init(&sb);
	if (fmt) {
		va_start(ap, fmt);
		sb_vappendf(&sb, fmt, ap);
		va_end(ap);
	}
	c->detail = xstrdup(sb_str(&sb));
	sb_free(&sb);
	return c;
}

void vf_add_phase(struct vf_report *r, const char *name, double ms)
{
	size_t i;

	for (i = 0; i < r->nphases; i++) {
		if (strcmp(r->phases[i].name, name) == 0) {
			r->phases[i].ms += ms;
			return;
		}
	}
	if (r->nphases == VF_MAX_PHASES)
		return;
	snprintf(r->phases[r->nphases].name, sizeof(r->phases[0].name), "%s", name);
	r->phases[r->nphases++].ms = ms;
}

void vf_add_unreached(struct vf_report *r, const char *rel)
{
	r->nunreached++;
	if (r->nunreached_listed < VF_MAX_LIST)
		r->unreached[r->nunreached_listed++] = xstrdup(rel);
}

void vf_add_dump(struct vf_report *r, const char *path)
{
	if (r->ndumps < VF_MAX_LIST)
		r->dumps[r->ndumps++] = xstrdup(path);
}

void vf_set_error(struct vf_report *r, enum vf_outcome o, const char *fmt, ...)
{
	struct strbuf sb;
	va_list ap;

	/* The first reason stands: a timeout's cleanup may fail too. */
	if (r->error)
		return;
	sb_init(&sb);
	va_start(ap, fmt);
	sb_vappendf(&sb, fmt, ap);
	va_end(ap);
	r->error = xstrdup(sb_str(&sb));
	sb_free(&sb);
	r->outcome = o;
}

bool vf_all_ok(const struct vf_report *r)
{
	return r->nchecks > 0 && vf_first_failed(r) == NULL;
}

const struct vf_check *vf_first_failed(const struct vf_report *r)
{
	size_t i;

	for (i = 0; i < r->nchecks; i++) {
		if (!r->checks[i].ok)
			return &r->checks[i];
	}
	return NULL;
}

static void jset_str(json_object *o, const char *k, const char *v)
{
	json_object_object_add(o, k, v && v[0] ? json_object_new_string(v) : NULL);
}

static double round3(double ms)
{
	return (double)(long long)(ms * 1000 + 0.5) / 1000;
}

void vf_report_json(const struct vf_report *r, struct strbuf *out)
{
	json_object *o = json_object_new_object(), *a, *p;
	size_t i;

	jset_str(o, "drill_id", r->drill_id);
	jset_str(o, "request_id", r->request_id);
	jset_str(o, "image_id", r->image_id);
	jset_str(o, "instance_id", r->instance_id);
	json_object_object_add(o, "outcome", json_object_new_string(vf_outcome_name(r->outcome)));
	jset_str(o, "error", r->error);
	jset_str(o, "recovered_lsn", r->recovered_lsn);
	a = json_object_new_array();
	for (i = 0; i < r->nchecks; i++) {
		json_object *c = json_object_new_object();

		json_object_object_add(c, "name", json_object_new_string(r->checks[i].name));
		json_object_object_add(c, "ok", json_object_new_boolean(r->checks[i].ok));
		json_object_object_add(c, "detail", json_object_new_string(r->checks[i].detail));
		json_object_object_add(c, "ms", json_object_new_double(round3(r->checks[i].ms)));
		json_object_array_add(a, c);
	}
	json_object_object_add(o, "checks", a);
	p = json_object_new_object();
	for (i = 0; i < r->nphases; i++)
		json_object_object_add(p, r->phases[i].name,
		                       json_object_new_double(round3(r->phases[i].ms)));
	json_object_object_add(o, "phases_ms", p);
	a = json_object_new_array();
	for (i = 0; i < r->nunreached_listed; i++)
		json_object_array_add(a, json_object_new_string(r->unreached[i]));
	json_object_object_add(o, "amcheck_not_reached", a);
	json_object_object_add(o, "amcheck_not_reached_count",
	                       json_object_new_int64((int64_t)r->nunreached));
	a = json_object_new_array();
	for (i = 0; i < r->ndumps; i++)
		json_object_array_add(a, json_object_new_string(r->dumps[i]));
	json_object_object_add(o, "dumps", a);
	jset_str(o, "tagged", r->tagged);
	json_object_object_add(o, "left_behind", json_object_new_int64((int64_t)r->left));
	sb_appends(out, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
	sb_appends(out, "\n");
	json_object_put(o);
}

void vf_report_print(const struct vf_report *r, FILE *f)
{
	size_t i;

	fprintf(f, "\ndrill %s of %s%s%s: %s\n", r->drill_id,
	        r->request_id[0] ? r->request_id : "(no set)", r->image_id[0] ? " in " : "",
	        r->image_id, vf_outcome_name(r->outcome));
	if (r->error)
		fprintf(f, "  %s\n", r->error);
	for (i = 0; i < r->nchecks; i++)
		fprintf(f, "  %-4s %-28s %9.1f ms  %s\n", r->checks[i].ok ? "ok" : "FAIL",
		        r->checks[i].name, r->checks[i].ms, r->checks[i].detail);
	if (r->recovered_lsn[0])
		fprintf(f, "  recovered to %s\n", r->recovered_lsn);
	if (r->nunreached) {
		fprintf(f, "  amcheck did not reach %zu relation(s) within its time budget:",
		        r->nunreached);
		for (i = 0; i < r->nunreached_listed && i < 10; i++)
			fprintf(f, " %s", r->unreached[i]);
		fprintf(f, "%s\n", r->nunreached > 10 ? " ..." : "");
	}
	for (i = 0; i < r->ndumps; i++)
		fprintf(f, "  dump %s\n", r->dumps[i]);
	fprintf(f, "  phases:");
	for (i = 0; i < r->nphases; i++)
		fprintf(f, " %s %.0f ms%s", r->phases[i].name, r->phases[i].ms,
		        i + 1 < r->nphases ? "," : "");
	fprintf(f, "\n");
	if (r->tagged)
		fprintf(f, "  tagged %s\n", r->tagged);
	if (r->left)
		fprintf(f,
		        "  %zu thing(s) could not be removed: run ami-snapshot verify --cleanup\n",
		        r->left);
}

/*
 * The function walks pg_class: heap tables, materialized views and TOAST
 * tables (relam heap), then valid btree indexes, skipping other sessions'
 * temporary relations.  Each check is a subtransaction (BEGIN ... EXCEPTION)
 * so that an ERROR (a corrupt index, an unreadable page) is a row, not the
 * end of the walk.
 */
void vf_amcheck_sql(long budget_ms, struct strbuf *out)
{
	if (budget_ms < 0)
		budget_ms = 0;
	sb_appends(
	    out,
	    "CREATE FUNCTION pg_temp.amis_drill_check(budget_ms bigint)\n"
	    "RETURNS TABLE(kind text, rel text, status text, detail text, ms float8)\n"
	    "LANGUAGE plpgsql AS $amis$\n"
	    "DECLARE\n"
	    "  r record; t0 timestamptz; n bigint; d text; sch text;\n"
	    "  deadline timestamptz := clock_timestamp() + budget_ms * interval '1 millisecond';\n"
	    "BEGIN\n"
	    "  SELECT quote_ident(nspname) INTO sch FROM pg_extension e\n"
	    "    JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck';\n"
	    "  FOR r IN\n"
	    "    SELECT c.oid, c.relkind = 'i' AS is_index,\n"
	    "           translate(c.oid::regclass::text, E'\\n\\r\\x1f', '   ') AS name\n"
	    "    FROM pg_class c JOIN pg_am a ON a.oid = c.relam\n"
	    "    LEFT JOIN pg_index i ON i.indexrelid = c.oid\n"
	    "    WHERE c.relpersistence <> 't'\n"
	    "      AND ((c.relkind IN ('r', 'm', 't') AND a.amname = 'heap')\n"
	    "        OR (c.relkind = 'i' AND a.amname = 'btree' AND i.indisvalid AND "
	    "i.indisready))\n"
	    "    ORDER BY c.relkind = 'i', c.oid\n"
	    "  LOOP\n"
	    "    kind := CASE WHEN r.is_index THEN 'btree' ELSE 'heap' END;\n"
	    "    rel := r.name; detail := ''; ms := 0;\n"
	    "    IF clock_timestamp() > deadline THEN\n"
	    "      status := 'skipped'; RETURN NEXT; CONTINUE;\n"
	    "    END IF;\n"
	    "    t0 := clock_timestamp();\n"
	    "    BEGIN\n"
	    "      IF r.is_index THEN\n"
	    "        EXECUTE format('SELECT %s.bt_index_check($1, false)', sch) USING r.oid;\n"
	    "        status := 'ok';\n"
	    "      ELSE\n"
	    "        EXECUTE format('SELECT count(*), min(format(''block %%s offset %%s: %%s'', "
	    "blkno, offnum, msg)) FROM %s.verify_heapam($1)', sch) INTO n, d USING r.oid;\n"
	    "        IF n = 0 THEN status := 'ok';\n"
	    "        ELSE status := 'corrupt'; detail := n || ' problem(s), first: ' || d;\n"
	    "        END IF;\n"
	    "      END IF;\n"
	    "    EXCEPTION WHEN OTHERS THEN\n"
	    "      status := 'corrupt'; detail := SQLERRM;\n"
	    "    END;\n"
	    "    detail := translate(detail, E'\\n\\r\\x1f', '   ');\n"
	    "    ms := extract(epoch FROM clock_timestamp() - t0) * 1000;\n"
	    "    RETURN NEXT;\n"
	    "  END LOOP;\n"
	    "END\n"
	    "$amis$;\n");
	sb_appendf(out, "SELECT * FROM pg_temp.amis_drill_check(%ld);\n", budget_ms);
}

void vf_amcheck_result_init(struct vf_amcheck_result *a)
{
	memset(a, 0, sizeof(*a));
	sb_init(&a->problems);
}

void vf_amcheck_result_free(struct vf_amcheck_result *a)
{
	sb_free(&a->problems);
}

int vf_amcheck_parse(const char *text, const char *db, struct vf_amcheck_result *a,
                     struct vf_report *report, struct amis_err *err)
{
	const char *line = text;

	while (*line) {
		const char *nl = strchr(line, '\n');
		size_t len = nl ? (size_t)(nl - line) : strlen(line);
		char *copy = xmalloc(len + 1), *f[5], *save = copy;
		size_t nf = 0;

		memcpy(copy, line, len);
		copy[len] = '\0';
		while (nf < 5) {
			char *sep = strstr(save, VF_SEP);

			f[nf++] = save;
			if (!sep)
				break;
			*sep = '\0';
			save = sep + 1;
		}
		if (len == 0) {
			free(copy);
			line += nl ? 1 : 0;
			continue;
		}
		if (nf != 5 || (strcmp(f[0], "btree") && strcmp(f[0], "heap"))) {
			err_set(err, AMIS_E_INVALID_ARGUMENT,
			        "amcheck answered an unexpected line: %.200s", copy);
			free(copy);
			return -1;
		}
		a->ms += atof(f[4]);
		if (strcmp(f[2], "skipped") == 0) {
			char name[512];

			snprintf(name, sizeof(name), "%s.%s", db, f[1]);
			a->skipped++;
			if (report)
				vf_add_unreached(report, name);
		} else {
			if (f[0][0] == 'b')
				a->indexes++;
			else
				a->tables++;
			if (strcmp(f[2], "ok") != 0) {
				if (a->corrupt < 20)
					sb_appendf(
					    &a->problems, "%s%s %s: %s", a->corrupt ? "; " : "",
					    f[0][0] == 'b' ? "index" : "relation", f[1], f[3]);
				a->corrupt++;
			}
		}
		free(copy);
		line += len + (nl ? 1 : 0);
	}
	return 0;
}

long vf_budget_left(long budget_ms, double start_ms, double now_ms)
{
	double left = (double)budget_ms - (now_ms - start_ms);

	return left > 0 ? (long)left : 0;
}

void vf_dump_name(const char *request_id, const char *db, char *out, size_t outsz)
{
	struct strbuf sb;
	const unsigned char *p;

	sb_init(&sb);
	sb_appendf(&sb, "%s_", request_id);
	if (!db) {
		sb_appends(&sb, "globals.sql");
	} else {
		for (p = (const unsigned char *)db; *p; p++) {
			if (isalnum(*p) || *p == '_' || *p == '-' ||
			    (*p == '.' && p != (const unsigned char *)db))
				sb_append(&sb, p, 1);
			else
				sb_appendf(&sb, "%%%02X", *p);
		}
		sb_appends(&sb, ".dump");
	}
	snprintf(out, outsz, "%s", sb_str(&sb));
	sb_free(&sb);
}

void vf_drill_id(time_t t, unsigned rnd, char *out, size_t outsz)
{
	struct tm tm;
	char when[32];

	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(out, outsz, "drill-%s-%08x", when, rnd);
}

bool vf_drill_id_valid(const char *s)
{
	static const char shape[] = "drill-DDDDDDDDTDDDDDDZ-XXXXXXXX";
	size_t i;

	if (strlen(s) != sizeof(shape) - 1)
		return false;
	for (i = 0; shape[i]; i++) {
		if (shape[i] == 'D' ? !isdigit((unsigned char)s[i])
		    : shape[i] == 'X'
		        ? !(isdigit((unsigned char)s[i]) || (s[i] >= 'a' && s[i] <= 'f'))
		        : s[i] != shape[i])
			return false;
	}
	return true;
}

bool vf_result_tag(enum vf_outcome o, time_t t, const char *drill_id, char *key, size_t ksz,
                   char *value, size_t vsz)
{
	struct tm tm;
	char when[32];

	if (o != VF_PASSED && o != VF_FAILED)
		return false;
	gmtime_r(&t, &tm);
	strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(key, ksz, "ami-snapshot:%s", o == VF_PASSED ? "verified" : "verify-failed");
	snprintf(value, vsz, "%s %s", when, drill_id);
	return true;
}

bool vf_parse_lsn(const char *s, unsigned long long *out)
{
	unsigned long hi, lo;
	char *end;

	if (!s || !isxdigit((unsigned char)*s))
		return false;
	hi = strtoul(s, &end, 16);
	if (*end != '/' || !isxdigit((unsigned char)end[1]))
		return false;
	lo = strtoul(end + 1, &end, 16);
	if (*end || hi > 0xffffffffUL || lo > 0xffffffffUL)
		return false;
	*out = ((unsigned long long)hi << 32) | lo;
	return true;
}

double vf_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1000 + (double)ts.tv_nsec / 1e6;
}
