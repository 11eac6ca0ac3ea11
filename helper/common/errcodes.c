/*
 * errcodes.c - see errcodes.h.
 */
#include "errcodes.h"

#include <string.h>

static const struct {
	const char *str;
	unsigned flags;
} codes[AMIS_E_COUNT] = {[AMIS_E_NONE] = {"", 0},
#define AMIS_ERRCODE_ROW(id, s, f, what) [AMIS_E_##id] = {s, f},
                         AMIS_ERROR_CODES(AMIS_ERRCODE_ROW)
#undef AMIS_ERRCODE_ROW
};

const char *amis_code_str(enum amis_code code)
{
	return code > AMIS_E_NONE && code < AMIS_E_COUNT ? codes[code].str : "";
}

enum amis_code amis_code_of(const char *text)
{
	int i;

	if (!text || !text[0])
		return AMIS_E_NONE;
	if (!strncmp(text, "HttpError", 9) && text[9])
		return AMIS_E_HTTP_ERROR;
	for (i = AMIS_E_NONE + 1; i < AMIS_E_COUNT; i++) {
		if (!strcmp(text, codes[i].str))
			return (enum amis_code)i;
	}
	return AMIS_E_NONE;
}

unsigned amis_code_flags(const char *text)
{
	enum amis_code c = amis_code_of(text);

	/* A 5xx from something in between: the service side failed. */
	if (c == AMIS_E_HTTP_ERROR)
		return text[9] == '5' ? AMIS_F_RETRY : 0;
	return codes[c].flags;
}
