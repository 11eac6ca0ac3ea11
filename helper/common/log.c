/*
 * log.c - see log.h.
 */
#include "log.h"
#include "util.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static enum log_level min_level = LOG_LVL_INFO;
static bool held;
static struct strbuf held_buf;
static const char *ident;

static const char *const level_names[] = {"debug", "info", "warning", "error"};

void log_set_level(enum log_level min)
{
	min_level = min;
}

void log_set_ident(const char *s)
{
	ident = s;
}

static void write_all(const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = write(STDERR_FILENO, p, n);

		if (w <= 0)
			return;
		p += w;
		n -= (size_t)w;
	}
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	struct strbuf line;
	va_list ap;

	if (lvl < min_level)
		return;
	sb_init(&line);
	/* systemd's journal understands the <N> syslog priority prefix. */
	sb_appendf(&line, "<%d>%s: ",
	           lvl == LOG_LVL_ERROR     ? 3
	           : lvl == LOG_LVL_WARNING ? 4
	           : lvl == LOG_LVL_INFO    ? 6
	                                    : 7,
	           level_names[lvl]);
	if (ident)
		sb_appendf(&line, "%s: ", ident);
	va_start(ap, fmt);
	sb_vappendf(&line, fmt, ap);
	va_end(ap);
	sb_appends(&line, "\n");
	if (held)
		sb_append(&held_buf, line.data, line.len);
	else
		write_all(line.data, line.len);
	sb_free(&line);
}

void log_hold(void)
{
	held = true;
}

void log_release(void)
{
	held = false;
	if (held_buf.len)
		write_all(held_buf.data, held_buf.len);
	sb_free(&held_buf);
}

bool log_level_parse(const char *s, enum log_level *out)
{
	static const struct {
		const char *name;
		enum log_level level;
	} levels[] = {{"debug", LOG_LVL_DEBUG},
	              {"info", LOG_LVL_INFO},
	              {"warning", LOG_LVL_WARNING},
	              {"error", LOG_LVL_ERROR}};
	size_t i;

	for (i = 0; s && i < sizeof(levels) / sizeof(levels[0]); i++) {
		if (!strcmp(s, levels[i].name)) {
			*out = levels[i].level;
			return true;
		}
	}
	return false;
}
