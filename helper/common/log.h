/*
 * log.h - the helper's logging.
 *
 * Logs go to stderr (the journal under systemd).  While a filesystem is
 * frozen, writing to a file on it would block the helper, so log_hold()
 * switches to an in-memory buffer and log_release() flushes it after the
 * thaw (qemu-ga does the same for the same reason).
 */
#ifndef AMIS_LOG_H
#define AMIS_LOG_H

#include <stdbool.h>

enum log_level { LOG_LVL_DEBUG, LOG_LVL_INFO, LOG_LVL_WARNING, LOG_LVL_ERROR };

void log_set_level(enum log_level min);
/* "debug", "info", "warning" or "error" into *out; false for anything else. */
bool log_level_parse(const char *s, enum log_level *out);
/* A prefix for every line of this process ("ec2-worker"); NULL: none. */
void log_set_ident(const char *ident);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Buffer messages in memory from now on. */
void log_hold(void);
/* Write out buffered messages and go back to writing directly. */
void log_release(void);

#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARNING, __VA_ARGS__)
#define log_error(...) log_msg(LOG_LVL_ERROR, __VA_ARGS__)

#endif
