/*
 * mountinfo.c - see mountinfo.h.
 */
#include "mountinfo.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Decodes the octal escapes the kernel writes (\040 space, \011, \012, \134). */
void mountinfo_unescape(char *s)
{
	char *w = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' && s[2] <= '7' &&
		    s[3] >= '0' && s[3] <= '7') {
			*w++ = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
			s += 4;
		} else {
			*w++ = *s++;
		}
	}
	*w = '\0';
}

/*
 * "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw"
 * id parent maj:min root mount-point options [optional fields...] - fstype
 * source super-options.  Tokenizes line in place.
 */
int mountinfo_parse_line(char *line, struct mount_entry *me)
{
	char *fields[64];
	size_t nf = 0, sep;
	char *save = NULL, *tok, *end;
	long id;
	char extra;

	for (tok = strtok_r(line, " \n", &save); tok && nf < 64; tok = strtok_r(NULL, " \n", &save))
		fields[nf++] = tok;
	if (nf < 9)
		return -1;
	for (sep = 6; sep < nf; sep++)
		if (strcmp(fields[sep], "-") == 0)
			break;
	if (sep + 2 >= nf)
		return -1;
	errno = 0;
	id = strtol(fields[0], &end, 10);
	if (errno || *end || id < 0 || id > INT_MAX)
		return -1;
	me->mount_id = (int)id;
	if (sscanf(fields[2], "%u:%u%c", &me->major, &me->minor, &extra) != 2)
		return -1;
	me->root = fields[3];
	me->mount_point = fields[4];
	me->fstype = fields[sep + 1];
	me->source = fields[sep + 2];
	mountinfo_unescape(me->root);
	mountinfo_unescape(me->mount_point);
	mountinfo_unescape(me->source);
	return 0;
}
