/*
 * config_capture.c - copy the configuration that lives outside the data
 * directory into it, so that every snapshot set carries it.
 *
 * Debian keeps postgresql.conf, pg_hba.conf, pg_ident.conf, conf.d/ and its
 * own start.conf, pg_ctl.conf and environment under /etc/postgresql/N/main,
 * on the root volume, which a snapshot set does not contain.  Before each
 * backup starts, the extension copies them to
 *
 *	$PGDATA/ami_snapshot/config/manifest
 *	$PGDATA/ami_snapshot/config/files/<absolute path without its leading />
 *
 * The manifest has one line per file: octal mode, owner, group, absolute
 * path, separated by TABs.  The restore command (ami-snapshot restore) puts
 * the files back.  See doc/restore.md, "Configuration outside the data
 * directory".
 *
 * What is copied: every regular file in the directory of config_file and in
 * its subdirectories one level down, when that directory is outside the data
 * directory; hba_file and ident_file; every file a setting comes from
 * (include, include_dir, include_if_exists).  Files inside the data
 * directory are in the snapshot anyway.  A failure here is a WARNING, never
 * an error: the backup is worth taking without the copy.
 */
#include "postgres.h"

#include <dirent.h>
#include <grp.h>
#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/file_perm.h"
#include "lib/stringinfo.h"
#include "miscadmin.h"
#include "storage/fd.h"
#include "utils/guc.h"

#include "config_capture.h"

#define CAPTURE_DIR "ami_snapshot"
#define CAPTURE_MAX_FILES 1000
#define CAPTURE_MAX_BYTES (16 * 1024 * 1024)

/* ami_snapshot.capture_config */
bool		capture_config = true;

typedef struct Capture
{
	List	   *paths;			/* absolute paths, each once */
	StringInfoData manifest;
	int			nfiles;
	int64		bytes;
	List	   *problems;		/* one line per file not copied */
} Capture;

static bool
under_data_dir(const char *path)
{
	size_t		n = strlen(DataDir);

	return strncmp(path, DataDir, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static void
add_path(Capture *cap, const char *path)
{
	ListCell   *lc;

	if (path == NULL || path[0] != '/' || under_data_dir(path))
		return;
	foreach(lc, cap->paths)
		if (strcmp(lfirst(lc), path) == 0)
		return;
	cap->paths = lappend(cap->paths, pstrdup(path));
}

/* The regular files of dir, and of its subdirectories down to depth. */
static void
add_dir(Capture *cap, const char *dir, int depth)
{
	DIR		   *d = AllocateDir(dir);
	struct dirent *de;

	if (d == NULL)
	{
		cap->problems = lappend(cap->problems,
								psprintf("%s: could not open directory: %m", dir));
		return;
	}
	while ((de = ReadDirExtended(d, dir, LOG)) != NULL)
	{
		char	   *path;
		struct stat st;

		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		path = psprintf("%s/%s", dir, de->d_name);
		if (lstat(path, &st) != 0)
			continue;
		if (S_ISREG(st.st_mode))
			add_path(cap, path);
		else if (S_ISDIR(st.st_mode) && depth > 0)
			add_dir(cap, path, depth - 1);
	}
	FreeDir(d);
}

/* The files the settings come from: postgresql.conf and its includes. */
static void
add_setting_sources(Capture *cap)
{
	ConfigVariable *head = NULL,
			   *tail = NULL,
			   *v;

	if (!ParseConfigFile(ConfigFileName, false, NULL, 0, 0, DEBUG1, &head, &tail))
		cap->problems = lappend(cap->problems,
								psprintf("%s: could not be parsed; only the files found directly were copied",
										 ConfigFileName));
	for (v = head; v != NULL; v = v->next)
		add_path(cap, v->filename);
	FreeConfigVariables(head);
}

static bool
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0)
	{
		ssize_t		n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return false;
		buf += n;
		len -= n;
	}
	return true;
}

/* Creates every missing directory of path's parent (mode 0700). */
static bool
make_parents(const char *path)
{
	char	   *dir = pstrdup(path);
	char	   *slash = strrchr(dir, '/');

	if (slash == NULL)
		return true;
	*slash = '\0';
	return pg_mkdir_p(dir, pg_dir_create_mode) == 0 || errno == EEXIST;
}

/* src's manifest line: octal mode, owner, group, path, TAB-separated. */
static void
manifest_line(StringInfo m, const struct stat *st, const char *src)
{
	struct passwd *pw = getpwuid(st->st_uid);
	struct group *gr = getgrgid(st->st_gid);

	appendStringInfo(m, "%04o\t", (unsigned int) (st->st_mode & 07777));
	if (pw)
		appendStringInfoString(m, pw->pw_name);
	else
		appendStringInfo(m, "%u", (unsigned int) st->st_uid);
	appendStringInfoChar(m, '\t');
	if (gr)
		appendStringInfoString(m, gr->gr_name);
	else
		appendStringInfo(m, "%u", (unsigned int) st->st_gid);
	appendStringInfo(m, "\t%s\n", src);
}

/*
 * The whole of a regular file into buf (at most limit bytes); false if it
 * cannot be read, is not regular or is longer.  *st: its stat, if wanted.
 */
static bool
read_whole(const char *path, StringInfo buf, Size limit, struct stat *st)
{
	struct stat sb;
	int			fd = OpenTransientFile(path, O_RDONLY | PG_BINARY);
	bool		ok;

	resetStringInfo(buf);
	if (fd < 0)
		return false;
	ok = fstat(fd, &sb) == 0 && S_ISREG(sb.st_mode) && (Size) sb.st_size <= limit;
	while (ok)
	{
		ssize_t		n;

		enlargeStringInfo(buf, 8192);
		n = read(fd, buf->data + buf->len, buf->maxlen - buf->len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
		{
			ok = n == 0;
			break;
		}
		buf->len += n;
		buf->data[buf->len] = '\0';
		if ((Size) buf->len > limit)
			ok = false;
	}
	CloseTransientFile(fd);
	if (ok && st)
		*st = sb;
	return ok;
}

/*
 * Whether the copy in final is already every file of cap->paths byte for
 * byte, with the same manifest (modes, owners, the same files): then the
 * capture writes nothing.  The configuration rarely changes between
 * snapshots, and a fresh copy costs an fsync per file.  Reads only.
 */
static bool
capture_unchanged(const Capture *cap, const char *final)
{
	StringInfoData manifest;
	StringInfoData a;
	StringInfoData b;
	ListCell   *lc;
	Size		total = 0;

	if (list_length(cap->paths) > CAPTURE_MAX_FILES)
		return false;
	initStringInfo(&manifest);
	initStringInfo(&a);
	initStringInfo(&b);
	foreach(lc, cap->paths)
	{
		const char *src = lfirst(lc);
		struct stat st;

		if (strpbrk(src, "\t\n") != NULL ||
			!read_whole(src, &a, CAPTURE_MAX_BYTES - total, &st) ||
			!read_whole(psprintf("%s/files%s", final, src), &b, CAPTURE_MAX_BYTES, NULL) ||
			a.len != b.len || memcmp(a.data, b.data, a.len) != 0)
			return false;
		total += a.len;
		manifest_line(&manifest, &st, src);
	}
	return read_whole(psprintf("%s/manifest", final), &b, CAPTURE_MAX_BYTES, NULL) &&
		b.len == manifest.len && memcmp(b.data, manifest.data, b.len) == 0;
}

/*
 * Copies src to dst (fsync'ed) and appends its manifest line.  Returns false
 * with a line in cap->problems if it could not.
 */
static bool
copy_one(Capture *cap, const char *src, const char *dst)
{
	struct stat st;
	char	   *buf;
	int			in,
				out;
	ssize_t		n;
	bool		ok = true;

	if (strpbrk(src, "\t\n") != NULL)
	{
		cap->problems = lappend(cap->problems,
								psprintf("%s: a tab or newline in the path", src));
		return false;
	}
	in = OpenTransientFile(src, O_RDONLY | PG_BINARY);
	if (in < 0 || fstat(in, &st) != 0 || !S_ISREG(st.st_mode))
	{
		cap->problems = lappend(cap->problems,
								psprintf("%s: could not read: %m", src));
		if (in >= 0)
			CloseTransientFile(in);
		return false;
	}
	if (cap->nfiles >= CAPTURE_MAX_FILES ||
		cap->bytes + st.st_size > CAPTURE_MAX_BYTES)
	{
		CloseTransientFile(in);
		cap->problems = lappend(cap->problems,
								psprintf("%s: over the limit of %d files or %d MB",
										 src, CAPTURE_MAX_FILES,
										 CAPTURE_MAX_BYTES / (1024 * 1024)));
		return false;
	}
	if (!make_parents(dst) ||
		(out = OpenTransientFilePerm(dst, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY,
									 pg_file_create_mode)) < 0)
	{
		CloseTransientFile(in);
		cap->problems = lappend(cap->problems,
								psprintf("%s: could not create the copy %s: %m", src, dst));
		return false;
	}
	buf = palloc(65536);
	while ((n = read(in, buf, 65536)) != 0)
	{
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 || !write_all(out, buf, n))
		{
			ok = false;
			break;
		}
		cap->bytes += n;
	}
	pfree(buf);
	if (ok && pg_fsync(out) != 0)
		ok = false;
	if (!ok)
		cap->problems = lappend(cap->problems,
								psprintf("%s: could not copy to %s: %m", src, dst));
	CloseTransientFile(out);
	CloseTransientFile(in);
	if (!ok)
		return false;

	manifest_line(&cap->manifest, &st, src);
	cap->nfiles++;
	return true;
}

static bool
write_manifest(const char *path, const StringInfo text)
{
	int			fd = OpenTransientFilePerm(path, O_WRONLY | O_CREAT | O_TRUNC | PG_BINARY,
										   pg_file_create_mode);
	bool		ok;

	if (fd < 0)
		return false;
	ok = write_all(fd, text->data, text->len) && pg_fsync(fd) == 0;
	CloseTransientFile(fd);
	return ok;
}

int
capture_config_files(void)
{
	Capture		cap;
	char	   *base = psprintf("%s/%s", DataDir, CAPTURE_DIR);
	char	   *tmp = psprintf("%s/config.new", base);
	char	   *final = psprintf("%s/config", base);
	char	   *old = psprintf("%s/config.old", base);
	struct stat st;
	ListCell   *lc;

	if (!capture_config)
		return -1;
	memset(&cap, 0, sizeof(cap));
	initStringInfo(&cap.manifest);

	/* Which files: nothing is written yet. */
	if (!under_data_dir(ConfigFileName))
	{
		char	   *dir = pstrdup(ConfigFileName);
		char	   *slash = strrchr(dir, '/');

		if (slash && slash != dir)
		{
			*slash = '\0';
			add_dir(&cap, dir, 1);
		}
	}
	add_path(&cap, ConfigFileName);
	add_path(&cap, HbaFileName);
	add_path(&cap, IdentFileName);
	add_setting_sources(&cap);

	/* The copy in place already says exactly this: nothing to write. */
	if (cap.problems == NIL && stat(tmp, &st) != 0 && stat(old, &st) != 0 &&
		capture_unchanged(&cap, final))
	{
		elog(DEBUG1, "ami_snapshot: the %d configuration file(s) in %s are unchanged",
			 list_length(cap.paths), final);
		return list_length(cap.paths);
	}

	/* Leftovers of an interrupted capture. */
	if (stat(tmp, &st) == 0)
		(void) rmtree(tmp, true);
	if (stat(old, &st) == 0)
		(void) rmtree(old, true);
	if (pg_mkdir_p(psprintf("%s/files", tmp), pg_dir_create_mode) != 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not create directory \"%s\": %m", tmp),
				 errdetail("The configuration files outside the data directory are not in this snapshot.")));
		return -1;
	}

	foreach(lc, cap.paths)
	{
		const char *src = lfirst(lc);

		(void) copy_one(&cap, src, psprintf("%s/files%s", tmp, src));
	}

	if (!write_manifest(psprintf("%s/manifest", tmp), &cap.manifest))
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not write \"%s/manifest\": %m", tmp),
				 errdetail("The configuration files outside the data directory are not in this snapshot.")));
		(void) rmtree(tmp, true);
		return -1;
	}
	/* Swap in the new copy; the old one goes once the new one is in place. */
	if (stat(final, &st) == 0 && rename(final, old) != 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not rename \"%s\": %m", final)));
		(void) rmtree(tmp, true);
		return -1;
	}
	if (rename(tmp, final) != 0)
	{
		ereport(WARNING,
				(errcode_for_file_access(),
				 errmsg("could not rename \"%s\" to \"%s\": %m", tmp, final)));
		return -1;
	}
	fsync_fname(base, true);
	if (stat(old, &st) == 0)
		(void) rmtree(old, true);

	if (cap.problems != NIL)
	{
		StringInfoData detail;

		initStringInfo(&detail);
		foreach(lc, cap.problems)
			appendStringInfo(&detail, "%s%s", detail.len ? "; " : "", (char *) lfirst(lc));
		ereport(WARNING,
				(errmsg("%d configuration file(s) outside the data directory could not be copied into the snapshot",
						list_length(cap.problems)),
				 errdetail("%s", detail.data),
				 errhint("The restore brings back only what was copied (%d file(s)); see doc/restore.md.",
						 cap.nfiles)));
	}
	elog(DEBUG1, "ami_snapshot: copied %d configuration file(s), %lld bytes, into %s",
		 cap.nfiles, (long long) cap.bytes, final);
	return cap.nfiles;
}
