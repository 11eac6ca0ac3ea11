/*
 * mountinfo.h - the one reader of /proc/PID/mountinfo lines (proc(5)), for
 * the path -> volume mapping (volumes.c) and the frozen marker's recovery
 * (marker.c).
 */
#ifndef AMIS_MOUNTINFO_H
#define AMIS_MOUNTINFO_H

/* One line; the strings point into the line, unescaped. */
struct mount_entry {
	int mount_id;
	unsigned int major, minor;
	char *root;
	char *mount_point;
	char *fstype;
	char *source;
};

/*
 * "36 35 98:0 /mnt1 /mnt/parent rw,noatime master:1 - ext3 /dev/root rw":
 * id parent maj:min root mount-point options [optional fields...] - fstype
 * source super-options.  Tokenizes line in place; 0, or -1 if it is not such
 * a line.
 */
int mountinfo_parse_line(char *line, struct mount_entry *me);

/* Decodes, in place, the octal escapes the kernel writes (\040 space, \011, \012, \134). */
void mountinfo_unescape(char *s);

#endif
