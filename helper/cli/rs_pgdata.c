/*
 * rs_pgdata.c - preparing a restored data directory (see restore.h and
 * doc/restore.md): crash recovery or point-in-time recovery, the pg_wal
 * and tablespace links moved under --root, and the configuration files
 * captured at backup time put back.
 */
#include "restore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CONFIG_DIR "ami_snapshot/config"

int rs_write_file(const char *path, const char *data, size_t len, mode_t mode, uid_t uid, gid_t gid,
                  struct amis_err *err)
{
	char tmp[PATH_MAX];
	size_t off = 0;
	int fd;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.restore-tmp", path) >= sizeof(tmp))
		return err_set(err, AMIS_E_INVALID_PATH, "path too long: %.100s", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, mode);
	if (fd < 0)
		return err_set(err, AMIS_E_INVALID_PATH, "cannot create %s: %s", tmp,
		               strerror(errno));
	while (off < len) {
		ssize_t w = write(fd, data + off, len - off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			err_set(err, AMIS_E_INVALID_PATH, "cannot write %s: %s", tmp,
			        strerror(errno));
			goto fail;
		}
		off += (size_t)w;
	}
	if (fchmod(fd, mode) < 0 || fchown(fd, uid, gid) < 0 || fsync(fd) < 0) {
		err_set(err, AMIS_E_INVALID_PATH, "cannot set up %s: %s", tmp, strerror(errno));
		goto fail;
	}
	if (close(fd) < 0) {
		fd = -1;
		err_set(err, AMIS_E_INVALID_PATH, "cannot write %s: %s", tmp, strerror(errno));
		goto fail;
	}
	fd = -1;
	if (rename(tmp, path) < 0) {
		err_set(err, AMIS_E_INVALID_PATH, "cannot rename %s to %s: %s", tmp, path,
		        strerror(errno));
		goto fail;
	}
	return 0;
fail:
	if (fd >= 0)
		close(fd);
	unlink(tmp);
	return -1;
}

/* Removes pgdata/name if present; reports it. */
static int remove_if_present(const char *pgdata, const char *name, const char *why,
                             struct strbuf *report, struct amis_err *err)
{
	char path[PATH_MAX];

	snprintf(path, sizeof(path), "%s/%s", pgdata, name);
	if (unlink(path) == 0) {
		sb_appendf(report, "removed %s (%s)\n", path, why);
		return 0;
	}
	if (errno == ENOENT)
		return 0;
	return err_set(err, AMIS_E_INVALID_PATH, "cannot remove %s: %s", path, strerror(errno));
}

static int check_pgdata(const char *pgdata, struct amis_err *err)
{
	char path[PATH_MAX];
	struct stat st;

	snprintf(path, sizeof(path), "%s/PG_VERSION", pgdata);
	if (stat(path, &st) < 0)
		return err_set(err, AMIS_E_PATH_NOT_FOUND,
		               "%s is not a PostgreSQL data directory (no PG_VERSION: %s)", pgdata,
		               strerror(errno));
	return 0;
}

static void setting(struct strbuf *sb, const char *name, const char *v);

/* What crash recovery needs, as a primary or as a standby. */
static int prepare_crash_files(const char *pgdata, struct strbuf *report, struct amis_err *err)
{
	if (check_pgdata(pgdata, err) < 0 ||
	    remove_if_present(pgdata, "postmaster.pid", "the old server's", report, err) < 0 ||
	    remove_if_present(pgdata, "backup_label",
	                      "crash recovery must not wait for an end-of-backup record", report,
	                      err) < 0 ||
	    remove_if_present(pgdata, "tablespace_map", "crash recovery uses pg_tblspc's links",
	                      report, err) < 0)
		return -1;
	return 0;
}

int rs_prepare_crash(const char *pgdata, struct strbuf *report, struct amis_err *err)
{
	if (prepare_crash_files(pgdata, report, err) < 0 ||
	    remove_if_present(
	        pgdata, "standby.signal",
	        "taken on a standby: restored as a new primary (--as-standby keeps it)", report,
	        err) < 0)
		return -1;
	return 0;
}

/* Appends text to pgdata/postgresql.auto.conf, owned by uid:gid, synced. */
static int append_auto_conf(const char *pgdata, const struct strbuf *text, uid_t uid, gid_t gid,
                            struct amis_err *err)
{
	char path[PATH_MAX];
	int fd;

	snprintf(path, sizeof(path), "%s/postgresql.auto.conf", pgdata);
	fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (fd < 0)
		return err_set(err, AMIS_E_INVALID_PATH, "cannot open %s: %s", path,
		               strerror(errno));
	if (write(fd, text->data, text->len) != (ssize_t)text->len || fchown(fd, uid, gid) < 0 ||
	    fsync(fd) < 0) {
		err_set(err, AMIS_E_INVALID_PATH, "cannot append to %s: %s", path, strerror(errno));
		close(fd);
		return -1;
	}
	close(fd);
	return 0;
}

int rs_prepare_standby(const char *pgdata, const char *conninfo, uid_t uid, gid_t gid,
                       struct strbuf *report, struct amis_err *err)
{
	char path[PATH_MAX];
	struct strbuf sb;
	int rc;

	if (prepare_crash_files(pgdata, report, err) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/standby.signal", pgdata);
	if (rs_write_file(path, "", 0, 0600, uid, gid, err) < 0)
		return -1;
	sb_appendf(report, "wrote %s (it starts as a standby)\n", path);
	if (!conninfo) {
		sb_appends(report, "kept the data directory's primary_conninfo\n");
		return 0;
	}
	sb_init(&sb);
	sb_appends(&sb, "\n# Added by ami-snapshot restore --as-standby.\n");
	setting(&sb, "primary_conninfo", conninfo);
	rc = append_auto_conf(pgdata, &sb, uid, gid, err);
	sb_free(&sb);
	if (rc == 0)
		sb_appendf(report,
		           "appended primary_conninfo (--primary-conninfo) to "
		           "%s/postgresql.auto.conf\n",
		           pgdata);
	return rc;
}

int rs_relocate(const struct rs_relocation *r, size_t n, const char *path, char *out, size_t outsz)
{
	size_t i, best = n, bestlen = 0;

	for (i = 0; i < n; i++) {
		size_t len = strlen(r[i].from);

		if (strcmp(r[i].from, "/") == 0)
			len = 0;
		if ((strncmp(path, r[i].from, len) == 0 && (path[len] == '/' || !path[len])) &&
		    (best == n || len > bestlen)) {
			best = i;
			bestlen = len;
		}
	}
	if (best == n)
		return -1;
	if ((size_t)snprintf(out, outsz, "%s%s", r[best].to, path + bestlen) >= outsz)
		return -1;
	return 0;
}

/* A single-quoted value for postgresql.conf: ' doubled. */
static void conf_quote(struct strbuf *sb, const char *v)
{
	sb_append(sb, "'", 1);
	for (; *v; v++) {
		if (*v == '\'')
			sb_append(sb, "''", 2);
		else if (*v == '\n' || *v == '\r')
			sb_append(sb, " ", 1);
		else
			sb_append(sb, v, 1);
	}
	sb_append(sb, "'", 1);
}

static void setting(struct strbuf *sb, const char *name, const char *v)
{
	sb_appendf(sb, "%s = ", name);
	conf_quote(sb, v);
	sb_append(sb, "\n", 1);
}

void rs_recovery_settings(const struct rs_recovery *rec, struct strbuf *out)
{
	sb_appends(out, "\n# Added by ami-snapshot restore --pitr: point-in-time recovery.\n"
	                "# Remove these lines once the server is promoted.\n");
	if (rec->restore_command)
		setting(out, "restore_command", rec->restore_command);
	if (rec->target_immediate)
		setting(out, "recovery_target", "immediate");
	if (rec->target_time)
		setting(out, "recovery_target_time", rec->target_time);
	if (rec->target_lsn)
		setting(out, "recovery_target_lsn", rec->target_lsn);
	if (rec->target_name)
		setting(out, "recovery_target_name", rec->target_name);
	if (rec->target_immediate || rec->target_time || rec->target_lsn || rec->target_name)
		setting(out, "recovery_target_action",
		        rec->target_action ? rec->target_action : "promote");
}

int rs_relocate_map(const char *map, size_t len, const struct rs_relocation *r, size_t n,
                    struct strbuf *out, struct amis_err *err)
{
	const char *p = map, *end = map + len;

	/* "<oid> <path>\n" per line (the path may contain spaces; \ escapes kept). */
	while (p < end) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		const char *sp = memchr(p, ' ', (size_t)(le - p));
		char path[PATH_MAX], moved[PATH_MAX];

		if (!sp || (size_t)(le - sp - 1) >= sizeof(path))
			return err_set(err, AMIS_E_INVALID_ARGUMENT,
			               "tablespace_map line \"%.*s\" is not \"<oid> <path>\"",
			               (int)(le - p > 100 ? 100 : le - p), p);
		memcpy(path, sp + 1, (size_t)(le - sp - 1));
		path[le - sp - 1] = '\0';
		if (strchr(path, '\\') || rs_relocate(r, n, path, moved, sizeof(moved)) < 0)
			snprintf(moved, sizeof(moved), "%s", path); /* left as it was */
		sb_append(out, p, (size_t)(sp + 1 - p));
		sb_appends(out, moved);
		if (nl)
			sb_append(out, "\n", 1);
		p = nl ? nl + 1 : end;
	}
	return 0;
}

int rs_prepare_pitr(const char *pgdata, const char *label, size_t label_len, const char *map,
                    size_t map_len, const struct rs_relocation *r, size_t nrel,
                    const struct rs_recovery *rec, uid_t uid, gid_t gid, struct strbuf *report,
                    struct amis_err *err)
{
	char path[PATH_MAX];
	struct strbuf sb;
	int rc = -1;

	if (check_pgdata(pgdata, err) < 0 ||
	    remove_if_present(pgdata, "postmaster.pid", "the old server's", report, err) < 0 ||
	    remove_if_present(pgdata, "standby.signal", "this is a recovery, not a standby", report,
	                      err) < 0)
		return -1;
	sb_init(&sb);
	snprintf(path, sizeof(path), "%s/backup_label", pgdata);
	if (rs_write_file(path, label, label_len, 0600, uid, gid, err) < 0)
		goto out;
	sb_appendf(report, "wrote %s (%zu bytes, from the backup-label tags)\n", path, label_len);
	snprintf(path, sizeof(path), "%s/tablespace_map", pgdata);
	if (map && map_len) {
		if (nrel) {
			if (rs_relocate_map(map, map_len, r, nrel, &sb, err) < 0)
				goto out;
			map = sb.data;
			map_len = sb.len;
		}
		if (rs_write_file(path, map, map_len, 0600, uid, gid, err) < 0)
			goto out;
		sb_appendf(report, "wrote %s (%zu bytes, from the tablespace-map tags%s)\n", path,
		           map_len, nrel ? ", paths moved under the restore root" : "");
	} else if (remove_if_present(pgdata, "tablespace_map", "the backup had none", report, err) <
	           0) {
		goto out;
	}
	snprintf(path, sizeof(path), "%s/recovery.signal", pgdata);
	if (rs_write_file(path, "", 0, 0600, uid, gid, err) < 0)
		goto out;
	sb_appendf(report, "wrote %s\n", path);

	sb_reset(&sb);
	rs_recovery_settings(rec, &sb);
	if (append_auto_conf(pgdata, &sb, uid, gid, err) < 0)
		goto out;
	sb_appendf(report, "appended the recovery settings to %s/postgresql.auto.conf\n", pgdata);
	rc = 0;
out:
	sb_free(&sb);
	return rc;
}

/* Whether path is in one of the relocations' new places already. */
static bool under_a_target(const struct rs_relocation *r, size_t n, const char *path)
{
	size_t i;

	for (i = 0; i < n; i++) {
		size_t len = strlen(r[i].to);

		if (strncmp(path, r[i].to, len) == 0 && (path[len] == '/' || !path[len]))
			return true;
	}
	return false;
}

static int relink_one(const char *link, const struct rs_relocation *r, size_t n, uid_t uid,
                      gid_t gid, struct strbuf *report, struct amis_err *err)
{
	char target[PATH_MAX], moved[PATH_MAX], tmp[PATH_MAX + 16];
	ssize_t len = readlink(link, target, sizeof(target) - 1);

	if (len < 0)
		return errno == EINVAL || errno == ENOENT ? 0 : /* not a link: nothing to do */
		           err_set(err, AMIS_E_INVALID_PATH, "cannot read link %s: %s", link,
		                   strerror(errno));
	target[len] = '\0';
	if (target[0] != '/') {
		sb_appendf(report, "left %s -> %s (relative)\n", link, target);
		return 0;
	}
	if (under_a_target(r, n, target))
		return 0; /* moved already (a second run, --attached) */
	if (rs_relocate(r, n, target, moved, sizeof(moved)) < 0) {
		sb_appendf(report,
		           "WARNING: %s -> %s is on no restored filesystem: left as it is\n", link,
		           target);
		return 0;
	}
	if (strcmp(moved, target) == 0)
		return 0;
	snprintf(tmp, sizeof(tmp), "%s.restore-tmp", link);
	unlink(tmp);
	if (symlink(moved, tmp) < 0 || lchown(tmp, uid, gid) < 0 || rename(tmp, link) < 0) {
		err_set(err, AMIS_E_INVALID_PATH, "cannot point %s at %s: %s", link, moved,
		        strerror(errno));
		unlink(tmp);
		return -1;
	}
	sb_appendf(report, "pointed %s at %s (was %s)\n", link, moved, target);
	return 0;
}

int rs_relink(const char *pgdata, const struct rs_relocation *r, size_t n, uid_t uid, gid_t gid,
              struct strbuf *report, struct amis_err *err)
{
	char path[PATH_MAX];
	struct dirent *de;
	DIR *d;
	int rc = 0;

	snprintf(path, sizeof(path), "%s/pg_wal", pgdata);
	if (relink_one(path, r, n, uid, gid, report, err) < 0)
		return -1;
	snprintf(path, sizeof(path), "%s/pg_tblspc", pgdata);
	d = opendir(path);
	if (!d)
		return errno == ENOENT ? 0
		                       : err_set(err, AMIS_E_INVALID_PATH, "cannot read %s: %s",
		                                 path, strerror(errno));
	while (rc == 0 && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/pg_tblspc/%s", pgdata, de->d_name);
		rc = relink_one(path, r, n, uid, gid, report, err);
	}
	closedir(d);
	return rc;
}

/* ---- The configuration files captured at backup time. ---- */

static int read_whole(const char *path, struct strbuf *out, struct amis_err *err)
{
	char buf[65536];
	ssize_t r;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);

	sb_reset(out);
	if (fd < 0)
		return err_set(err, AMIS_E_PATH_NOT_FOUND, "cannot open %s: %s", path,
		               strerror(errno));
	while ((r = read(fd, buf, sizeof(buf))) > 0)
		sb_append(out, buf, (size_t)r);
	close(fd);
	if (r < 0)
		return err_set(err, AMIS_E_PATH_NOT_FOUND, "cannot read %s: %s", path,
		               strerror(errno));
	return 0;
}

bool rs_safe_abs_path(const char *p)
{
	const char *c = p;

	if (p[0] != '/' || strlen(p) >= PATH_MAX - 64)
		return false;
	if (!p[1])
		return true; /* "/" */
	while (*c == '/') {
		const char *s = c + 1;
		size_t len = strcspn(s, "/");

		if (len == 0 || (len == 1 && s[0] == '.') ||
		    (len == 2 && s[0] == '.' && s[1] == '.'))
			return false;
		c = s + len;
	}
	return *c == '\0';
}

/* Creates the parents of path (0755 root), under a root that exists. */
static int make_parents(const char *path, struct amis_err *err)
{
	char dir[PATH_MAX];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash || slash == dir)
		return 0;
	*slash = '\0';
	return rs_mkdirs(dir, err);
}

static int restore_one(const char *pgdata, const char *root, unsigned mode, const char *owner,
                       const char *group, const char *orig, uid_t fuid, gid_t fgid,
                       struct strbuf *report, struct amis_err *err)
{
	char src[PATH_MAX], dst[PATH_MAX], keep[PATH_MAX + 32];
	struct strbuf data, old;
	struct passwd *pw = getpwnam(owner);
	struct group *gr = getgrnam(group);
	uid_t uid = pw ? pw->pw_uid : fuid;
	gid_t gid = gr ? gr->gr_gid : fgid;
	struct stat st;
	int rc = -1;

	snprintf(src, sizeof(src), "%s/" CONFIG_DIR "/files%s", pgdata, orig);
	snprintf(dst, sizeof(dst), "%s%s", root, orig);
	sb_init(&data);
	sb_init(&old);
	if (read_whole(src, &data, err) < 0)
		goto out;
	if (lstat(dst, &st) == 0) {
		if (S_ISREG(st.st_mode) && read_whole(dst, &old, err) == 0 && old.len == data.len &&
		    memcmp(sb_str(&old), sb_str(&data), data.len) == 0 &&
		    (st.st_mode & 07777) == mode && st.st_uid == uid && st.st_gid == gid) {
			sb_appendf(report, "config %s: already as captured\n", dst);
			rc = 0;
			goto out;
		}
		snprintf(keep, sizeof(keep), "%s.before-restore", dst);
		if (rename(dst, keep) < 0) {
			err_set(err, AMIS_E_INVALID_PATH, "cannot keep %s as %s: %s", dst, keep,
			        strerror(errno));
			goto out;
		}
		sb_appendf(report, "config %s: the existing file kept as %s\n", dst, keep);
	}
	if (make_parents(dst, err) < 0 ||
	    rs_write_file(dst, sb_str(&data), data.len, (mode_t)mode, uid, gid, err) < 0)
		goto out;
	sb_appendf(report, "config %s: restored (%04o %s:%s%s)\n", dst, mode, owner, group,
	           pw && gr ? "" : ", an unknown owner or group given the data directory's");
	rc = 0;
out:
	sb_free(&data);
	sb_free(&old);
	return rc;
}

int rs_restore_config(const char *pgdata, const char *config_root, uid_t fuid, gid_t fgid,
                      size_t *count, char *main_conf, size_t main_conf_sz, struct strbuf *report,
                      struct amis_err *err)
{
	char path[PATH_MAX], root[PATH_MAX];
	struct strbuf manifest;
	char *line, *save = NULL;
	size_t lineno = 0;
	int rc = 0;

	*count = 0;
	if (main_conf && main_conf_sz)
		main_conf[0] = '\0';
	snprintf(root, sizeof(root), "%s", config_root ? config_root : "");
	while (strlen(root) > 0 && root[strlen(root) - 1] == '/')
		root[strlen(root) - 1] = '\0';
	snprintf(path, sizeof(path), "%s/" CONFIG_DIR "/manifest", pgdata);
	if (access(path, F_OK) < 0 && errno == ENOENT) {
		sb_appendf(report, "no configuration was captured with this backup (%s)\n", path);
		return 0;
	}
	sb_init(&manifest);
	if (read_whole(path, &manifest, err) < 0) {
		sb_free(&manifest);
		return -1;
	}
	for (line = strtok_r(manifest.data ? manifest.data : (char *)"", "\n", &save);
	     line && rc == 0; line = strtok_r(NULL, "\n", &save)) {
		char *f[4], *p = line, *end;
		unsigned long mode;
		int k;

		lineno++;
		if (!*line || *line == '#')
			continue;
		/* <octal mode> TAB <owner> TAB <group> TAB <path (may contain spaces)> */
		for (k = 0; k < 3; k++) {
			f[k] = p;
			p = strchr(p, '\t');
			if (!p)
				break;
			*p++ = '\0';
		}
		f[3] = p;
		if (k < 3 || !p) {
			rc = err_set(err, AMIS_E_INVALID_ARGUMENT,
			             "%s line %zu: not \"<mode>\\t<owner>\\t<group>\\t<path>\"",
			             path, lineno);
			break;
		}
		mode = strtoul(f[0], &end, 8);
		if (*end || !f[0][0] || mode > 07777 || !rs_safe_abs_path(f[3])) {
			rc = err_set(err, AMIS_E_INVALID_ARGUMENT,
			             "%s line %zu: a bad mode or path (\"%s\", \"%.200s\")", path,
			             lineno, f[0], f[3]);
			break;
		}
		rc = restore_one(pgdata, root, (unsigned)mode, f[1], f[2], f[3], fuid, fgid, report,
		                 err);
		if (rc == 0)
			(*count)++;
		if (rc == 0 && main_conf && main_conf_sz && !main_conf[0] &&
		    strcmp(strrchr(f[3], '/'), "/postgresql.conf") == 0)
			snprintf(main_conf, main_conf_sz, "%s%s", root, f[3]);
	}
	sb_free(&manifest);
	return rc;
}
