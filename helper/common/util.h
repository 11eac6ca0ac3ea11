/*
 * util.h - small shared helpers for the helper daemon: error records,
 * growable buffers, secret-safe string handling.
 *
 * The helper does not use setjmp-style exceptions: every fallible function
 * returns 0 on success and -1 on failure, filling a struct amis_err that the
 * caller either handles or passes up.  Error text must never contain
 * credentials (access keys, secret keys, session tokens, signatures).
 */
#ifndef AMIS_UTIL_H
#define AMIS_UTIL_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "errcodes.h"

/*
 * An error: a short machine-readable code (EC2's <Code> for API errors, or
 * one of errcodes.h's such as "HelperConfig", "Timeout", "HttpError502")
 * and a human-readable message.
 */
struct amis_err {
	char code[64];
	char msg[768];
};

void err_clear(struct amis_err *err);
/* Sets a registered code and a printf-style message; always returns -1. */
int err_set(struct amis_err *err, enum amis_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with a code from elsewhere: EC2's, or one relayed by the worker. */
int err_set_code(struct amis_err *err, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Whether err's code is code. */
bool err_is(const struct amis_err *err, enum amis_code code);
/* errcodes.h's AMIS_F_* for err's code (0 for codes unknown to the helper). */
unsigned err_flags(const struct amis_err *err);
/* Prefixes err->msg with more context ("while X: " + old message); returns -1. */
int err_prefix(struct amis_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Appends "; " + more to err->msg (truncating), keeping its code. */
void err_append(struct amis_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* A growable, always NUL-terminated byte buffer. */
struct strbuf {
	char *data; /* NUL-terminated; NULL until first append */
	size_t len;
	size_t cap;
};

void sb_init(struct strbuf *sb);
void sb_free(struct strbuf *sb);
void sb_reset(struct strbuf *sb);
/* Aborts the process on allocation failure (the helper cannot go on). */
void sb_append(struct strbuf *sb, const void *data, size_t len);
void sb_appends(struct strbuf *sb, const char *s);
void sb_appendf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void sb_vappendf(struct strbuf *sb, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));
/* Returns the (possibly empty) NUL-terminated contents, never NULL. */
const char *sb_str(const struct strbuf *sb);

/* A snapshot name: the extension's rules, EC2's AMI names (3-128 of [A-Za-z0-9()[] ./-'@_]). */
bool snapshot_name_valid(const char *s);
/* A request id: 1-64 of [A-Za-z0-9-]. */
bool request_id_valid(const char *s);

/* malloc/strdup that abort on failure. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* Overwrites n bytes with zeros in a way the compiler may not elide. */
void secure_zero(void *p, size_t n);

/* Copies src into dst of size dstsz; returns -1 if it did not fit. */
int strlcpy_checked(char *dst, const char *src, size_t dstsz);

/*
 * Whether s is an EC2 resource id with that prefix: "vol", "snap", "i",
 * "ami", then '-' and 8 or 17 lower-case hexadecimal digits, the two forms
 * EC2 issues.  The one rule for ids from the configuration, from device
 * serials and from EC2's answers.
 */
bool aws_resource_id_valid(const char *s, const char *prefix);

/* Monotonic clock in microseconds. */
long long mono_usec(void);

#endif
