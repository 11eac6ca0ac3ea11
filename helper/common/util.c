/*
 * util.c - see util.h.
 */
#include "util.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

void err_clear(struct amis_err *err)
{
	if (err) {
		err->code[0] = '\0';
		err->msg[0] = '\0';
	}
}

static void err_vset(struct amis_err *err, const char *code, const char *fmt, va_list ap)
{
	snprintf(err->code, sizeof(err->code), "%s", code && code[0] ? code : "HelperError");
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
}

int err_set(struct amis_err *err, enum amis_code code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return -1;
	va_start(ap, fmt);
	err_vset(err, amis_code_str(code), fmt, ap);
	va_end(ap);
	return -1;
}

int err_set_code(struct amis_err *err, const char *code, const char *fmt, ...)
{
	va_list ap;

	if (!err)
		return -1;
	va_start(ap, fmt);
	err_vset(err, code, fmt, ap);
	va_end(ap);
	return -1;
}

bool err_is(const struct amis_err *err, enum amis_code code)
{
	return err && code != AMIS_E_NONE && !strcmp(err->code, amis_code_str(code));
}

unsigned err_flags(const struct amis_err *err)
{
	return err ? amis_code_flags(err->code) : 0;
}

int err_prefix(struct amis_err *err, const char *fmt, ...)
{
	char prefix[256];
	char old[sizeof(err->msg)];
	va_list ap;

	if (!err)
		return -1;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	memcpy(old, err->msg, sizeof(old));
	/* Truncation is intended: the newest context wins. */
	{
		size_t plen = strlen(prefix), olen = strnlen(old, sizeof(old) - 1), off = 0;
		size_t cap = sizeof(err->msg) - 1;

		if (plen > cap)
			plen = cap;
		memcpy(err->msg, prefix, plen);
		off = plen;
		if (off + 2 <= cap) {
			memcpy(err->msg + off, ": ", 2);
			off += 2;
		}
		if (olen > cap - off)
			olen = cap - off;
		memcpy(err->msg + off, old, olen);
		err->msg[off + olen] = '\0';
	}
	return -1;
}

void err_append(struct amis_err *err, const char *fmt, ...)
{
	size_t len;
	va_list ap;

	if (!err)
		return;
	len = strlen(err->msg);
	if (len + 3 >= sizeof(err->msg))
		return;
	memcpy(err->msg + len, "; ", 3);
	len += 2;
	va_start(ap, fmt);
	vsnprintf(err->msg + len, sizeof(err->msg) - len, fmt, ap);
	va_end(ap);
}

static void oom(void)
{
	fputs("ami-snapshot-helper: out of memory\n", stderr);
	abort();
}

void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		oom();
	return p;
}

void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);

	if (!p)
		oom();
	return p;
}

void *xrealloc(void *p, size_t n)
{
	p = realloc(p, n ? n : 1);
	if (!p)
		oom();
	return p;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s);

	if (!p)
		oom();
	return p;
}

void sb_init(struct strbuf *sb)
{
	sb->data = NULL;
	sb->len = 0;
	sb->cap = 0;
}

void sb_free(struct strbuf *sb)
{
	if (sb->data) {
		secure_zero(sb->data, sb->cap);
		free(sb->data);
	}
	sb_init(sb);
}

void sb_reset(struct strbuf *sb)
{
	sb->len = 0;
	if (sb->data)
		sb->data[0] = '\0';
}

static void sb_grow(struct strbuf *sb, size_t extra)
{
	size_t need = sb->len + extra + 1;
	size_t cap = sb->cap ? sb->cap : 64;

	if (need <= sb->cap)
		return;
	while (cap < need)
		cap *= 2;
	sb->data = xrealloc(sb->data, cap);
	sb->cap = cap;
}

void sb_append(struct strbuf *sb, const void *data, size_t len)
{
	sb_grow(sb, len);
	if (len)
		memcpy(sb->data + sb->len, data, len);
	sb->len += len;
	sb->data[sb->len] = '\0';
}

void sb_appends(struct strbuf *sb, const char *s)
{
	sb_append(sb, s, strlen(s));
}

void sb_vappendf(struct strbuf *sb, const char *fmt, va_list ap)
{
	va_list ap2;
	int n;

	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return;
	sb_grow(sb, (size_t)n);
	vsnprintf(sb->data + sb->len, (size_t)n + 1, fmt, ap);
	sb->len += (size_t)n;
}

void sb_appendf(struct strbuf *sb, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	sb_vappendf(sb, fmt, ap);
	va_end(ap);
}

const char *sb_str(const struct strbuf *sb)
{
	return sb->data ? sb->data : "";
}

void secure_zero(void *p, size_t n)
{
	volatile unsigned char *v = p;

	while (n--)
		*v++ = 0;
}

bool aws_resource_id_valid(const char *s, const char *prefix)
{
	size_t n = strlen(prefix), i;

	if (!s || strncmp(s, prefix, n) != 0 || s[n] != '-')
		return false;
	s += n + 1;
	for (i = 0; s[i]; i++)
		if (!isdigit((unsigned char)s[i]) && !(s[i] >= 'a' && s[i] <= 'f'))
			return false;
	return i == 8 || i == 17;
}

int strlcpy_checked(char *dst, const char *src, size_t dstsz)
{
	size_t n = strlen(src);

	if (n >= dstsz) {
		if (dstsz)
			dst[0] = '\0';
		return -1;
	}
	memcpy(dst, src, n + 1);
	return 0;
}

long long mono_usec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

bool snapshot_name_valid(const char *s)
{
	size_t n = strlen(s), i;

	if (n < 3 || n > 128)
		return false;
	for (i = 0; i < n; i++) {
		unsigned char ch = (unsigned char)s[i];

		if (!isalnum(ch) && !strchr("()[] ./-'@_", ch))
			return false;
	}
	return true;
}

bool request_id_valid(const char *s)
{
	size_t n = strlen(s), i;

	if (n < 1 || n > 64)
		return false;
	for (i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && s[i] != '-')
			return false;
	return true;
}
