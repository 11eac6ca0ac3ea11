/*
 * test_restore_pgdata.c - preparing a restored data directory
 * (helper/cli/rs_pgdata.c) in a scratch directory: crash recovery (no
 * backup_label, no postmaster.pid), point-in-time recovery (backup_label and
 * tablespace_map byte for byte, recovery.signal, the settings appended to
 * postgresql.auto.conf), tablespace paths moved under --root, the pg_wal and
 * pg_tblspc links, and the configuration files put back from the manifest.
 */
#include "restore.h"
#include "tap.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Paths in a scratch directory under /tmp: far from PATH_MAX. */
#ifndef __clang__
#pragma GCC diagnostic ignored "-Wformat-truncation"
#endif

static char top[PATH_MAX];

static void put(const char *rel, const char *data, size_t len)
{
	char path[PATH_MAX * 2];
	struct amis_err err;
	char *slash;

	snprintf(path, sizeof(path), "%s/%s", top, rel);
	slash = strrchr(path, '/');
	*slash = '\0';
	rs_mkdirs(path, &err);
	*slash = '/';
	if (rs_write_file(path, data, len, 0644, getuid(), getgid(), &err) < 0) {
		printf("Bail out! %s\n", err.msg);
		exit(255);
	}
}

static void puts_(const char *rel, const char *text)
{
	put(rel, text, strlen(text));
}

/* The contents of top/rel, or "(missing)". */
static const char *get(const char *rel, size_t *len)
{
	static char buf[8192];
	char path[PATH_MAX * 2];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%s", top, rel);
	fd = open(path, O_RDONLY);
	if (fd < 0) {
		if (len)
			*len = 0;
		return "(missing)";
	}
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	buf[n < 0 ? 0 : n] = '\0';
	if (len)
		*len = n < 0 ? 0 : (size_t)n;
	return buf;
}

static bool exists(const char *rel)
{
	char path[PATH_MAX * 2];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", top, rel);
	return lstat(path, &st) == 0;
}

static unsigned mode_of(const char *rel)
{
	char path[PATH_MAX * 2];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", top, rel);
	return stat(path, &st) == 0 ? (unsigned)(st.st_mode & 07777) : 0;
}

static const char *link_of(const char *rel)
{
	static char buf[PATH_MAX];
	char path[PATH_MAX * 2];
	ssize_t n;

	snprintf(path, sizeof(path), "%s/%s", top, rel);
	n = readlink(path, buf, sizeof(buf) - 1);
	buf[n < 0 ? 0 : n] = '\0';
	return buf;
}

static void p(char *out, size_t sz, const char *rel)
{
	snprintf(out, sz, "%s/%s", top, rel);
}

int main(void)
{
	char pgdata[PATH_MAX], path[PATH_MAX], target[PATH_MAX], croot[PATH_MAX];
	char mainconf[PATH_MAX];
	struct strbuf report, sb;
	struct amis_err err;
	struct rs_recovery rec;
	size_t len, count;
	const char *got;
	/* A label with every byte pg_backup_stop may return, and more. */
	static const char label[] =
	    "START WAL LOCATION: 0/5000028 (file 000000010000000000000005)\n"
	    "CHECKPOINT LOCATION: 0/5000060\nBACKUP METHOD: streamed\n"
	    "BACKUP FROM: primary\nSTART TIME: 2026-12-02 22:00:00 UTC\n"
	    "LABEL: it's \"quoted\"\tand\ttabbed\r\n\x01\xff\n";

	snprintf(top, sizeof(top), "/tmp/test_restore_pgdata.XXXXXX");
	if (!mkdtemp(top)) {
		printf("Bail out! mkdtemp: %s\n", strerror(errno));
		return 255;
	}
	sb_init(&report);
	sb_init(&sb);
	p(pgdata, sizeof(pgdata), "root/var/lib/postgresql/15/main");

	/* ---- crash recovery ---- */
	puts_("root/var/lib/postgresql/15/main/PG_VERSION", "15\n");
	puts_("root/var/lib/postgresql/15/main/postmaster.pid", "1234\n");
	puts_("root/var/lib/postgresql/15/main/backup_label", "stale\n");
	ok(rs_prepare_crash(pgdata, &report, &err) == 0, "crash: prepared (%s)", err.msg);
	ok(!exists("root/var/lib/postgresql/15/main/postmaster.pid"),
	   "crash: postmaster.pid removed");
	ok(!exists("root/var/lib/postgresql/15/main/backup_label"), "crash: backup_label removed");
	ok(strstr(sb_str(&report), "removed") != NULL, "crash: the report says what it removed");
	sb_reset(&report);
	ok(rs_prepare_crash(pgdata, &report, &err) == 0 && report.len == 0,
	   "crash: again, nothing to do, nothing reported");
	p(path, sizeof(path), "root/nothing");
	ok(rs_prepare_crash(path, &report, &err) < 0 && strstr(err.msg, "PG_VERSION"),
	   "crash: not a data directory: refused");

	/* ---- a standby's set: a new primary, or a standby again ---- */
	puts_("root/var/lib/postgresql/15/main/standby.signal", "");
	sb_reset(&report);
	ok(rs_prepare_crash(pgdata, &report, &err) == 0 &&
	       !exists("root/var/lib/postgresql/15/main/standby.signal") &&
	       strstr(sb_str(&report), "new primary"),
	   "crash: a standby's standby.signal removed (a new primary), and said so");
	puts_("root/var/lib/postgresql/15/main/postmaster.pid", "1234\n");
	puts_("root/var/lib/postgresql/15/main/postgresql.auto.conf", "work_mem = '8MB'\n");
	sb_reset(&report);
	ok(rs_prepare_standby(pgdata, NULL, getuid(), getgid(), &report, &err) == 0,
	   "standby: prepared without a conninfo (%s)", err.msg);
	ok(exists("root/var/lib/postgresql/15/main/standby.signal") &&
	       !exists("root/var/lib/postgresql/15/main/postmaster.pid"),
	   "standby: standby.signal written, postmaster.pid removed");
	ok(!strcmp(get("root/var/lib/postgresql/15/main/postgresql.auto.conf", NULL),
	           "work_mem = '8MB'\n") &&
	       strstr(sb_str(&report), "kept the data directory's primary_conninfo"),
	   "standby: without --primary-conninfo the data directory's own is kept");
	sb_reset(&report);
	ok(rs_prepare_standby(pgdata, "host=10.0.0.5 user=rep password=it's secret", getuid(),
	                      getgid(), &report, &err) == 0,
	   "standby: prepared with a conninfo (%s)", err.msg);
	got = get("root/var/lib/postgresql/15/main/postgresql.auto.conf", NULL);
	ok(strstr(got, "work_mem = '8MB'\n") &&
	       strstr(got, "primary_conninfo = 'host=10.0.0.5 user=rep password=it''s secret'\n"),
	   "standby: primary_conninfo appended, quoted");
	ok(!strstr(sb_str(&report), "secret") && strstr(sb_str(&report), "primary_conninfo"),
	   "standby: the report names primary_conninfo, never its value");
	p(path, sizeof(path), "root/var/lib/postgresql/15/main/standby.signal");
	unlink(path);

	/* ---- PITR ---- */
	puts_("root/var/lib/postgresql/15/main/postmaster.pid", "1234\n");
	puts_("root/var/lib/postgresql/15/main/standby.signal", "");
	puts_("root/var/lib/postgresql/15/main/postgresql.auto.conf",
	      "# Do not edit this file manually!\nwork_mem = '8MB'\n");
	memset(&rec, 0, sizeof(rec));
	rec.restore_command = "cp '/mnt/archive/%f' %p";
	rec.target_name = "before the batch";
	{
		static const char map[] = "16400 /var/lib/postgresql/ts1/tblspc\n"
		                          "16401 /srv/other place/ts2\n";
		struct rs_relocation rel[] = {
		    {"/var/lib/postgresql", "/restore/var/lib/postgresql"}};

		ok(rs_prepare_pitr(pgdata, label, sizeof(label) - 1, map, sizeof(map) - 1, NULL, 0,
		                   &rec, getuid(), getgid(), &report, &err) == 0,
		   "pitr: prepared (%s)", err.msg);
		got = get("root/var/lib/postgresql/15/main/backup_label", &len);
		ok(len == sizeof(label) - 1 && !memcmp(got, label, len),
		   "pitr: backup_label is the tags' bytes, byte for byte (%zu bytes)", len);
		is_int(mode_of("root/var/lib/postgresql/15/main/backup_label"), 0600,
		       "pitr: backup_label is 0600");
		got = get("root/var/lib/postgresql/15/main/tablespace_map", &len);
		ok(len == sizeof(map) - 1 && !memcmp(got, map, len),
		   "pitr: tablespace_map byte for byte without --root");
		ok(exists("root/var/lib/postgresql/15/main/recovery.signal"),
		   "pitr: recovery.signal");
		ok(!exists("root/var/lib/postgresql/15/main/standby.signal"),
		   "pitr: standby.signal removed");
		ok(!exists("root/var/lib/postgresql/15/main/postmaster.pid"),
		   "pitr: postmaster.pid removed");
		got = get("root/var/lib/postgresql/15/main/postgresql.auto.conf", NULL);
		ok(strstr(got, "work_mem = '8MB'\n") != NULL, "pitr: postgresql.auto.conf kept");
		ok(strstr(got, "restore_command = 'cp ''/mnt/archive/%f'' %p'\n") != NULL,
		   "pitr: restore_command appended, quotes doubled");
		ok(strstr(got, "recovery_target_name = 'before the batch'\n") != NULL,
		   "pitr: recovery_target_name appended");
		ok(strstr(got, "recovery_target_action = 'promote'\n") != NULL,
		   "pitr: recovery_target_action promote by default");

		/* With --root: the map's paths move, other bytes stay. */
		sb_reset(&sb);
		ok(rs_relocate_map(map, sizeof(map) - 1, rel, 1, &sb, &err) == 0,
		   "relocate map: done");
		is_str(sb_str(&sb),
		       "16400 /restore/var/lib/postgresql/ts1/tblspc\n16401 /srv/other place/ts2\n",
		       "relocate map: a path on a restored mount moves, another stays");
		sb_reset(&sb);
		ok(rs_relocate_map("16400 /var/lib/postgresql/x", 27, rel, 1, &sb, &err) == 0 &&
		       !strcmp(sb_str(&sb), "16400 /restore/var/lib/postgresql/x"),
		   "relocate map: no final newline is kept so");
		ok(rs_relocate_map("garbage\n", 8, rel, 1, &sb, &err) < 0,
		   "relocate map: a line without a path is refused");
	}
	/* No map: a stale one removed. */
	puts_("root/var/lib/postgresql/15/main/tablespace_map", "stale\n");
	ok(rs_prepare_pitr(pgdata, label, sizeof(label) - 1, NULL, 0, NULL, 0, &rec, getuid(),
	                   getgid(), &report, &err) == 0 &&
	       !exists("root/var/lib/postgresql/15/main/tablespace_map"),
	   "pitr: without a map, a stale tablespace_map is removed");

	/* The settings block for each target. */
	memset(&rec, 0, sizeof(rec));
	rec.restore_command = "cp /a/%f %p";
	rec.target_time = "2026-12-02 22:10:00+00";
	rec.target_action = "pause";
	sb_reset(&sb);
	rs_recovery_settings(&rec, &sb);
	ok(strstr(sb_str(&sb), "recovery_target_time = '2026-12-02 22:10:00+00'\n") &&
	       strstr(sb_str(&sb), "recovery_target_action = 'pause'\n"),
	   "settings: target time and action");
	memset(&rec, 0, sizeof(rec));
	rec.restore_command = "x";
	rec.target_lsn = "0/5000100";
	sb_reset(&sb);
	rs_recovery_settings(&rec, &sb);
	ok(strstr(sb_str(&sb), "recovery_target_lsn = '0/5000100'\n") != NULL,
	   "settings: target LSN");
	memset(&rec, 0, sizeof(rec));
	rec.restore_command = "x";
	rec.target_immediate = true;
	sb_reset(&sb);
	rs_recovery_settings(&rec, &sb);
	ok(strstr(sb_str(&sb), "recovery_target = 'immediate'\n") != NULL, "settings: immediate");
	memset(&rec, 0, sizeof(rec));
	rec.restore_command = "x\ny = 'z'";
	sb_reset(&sb);
	rs_recovery_settings(&rec, &sb);
	ok(strstr(sb_str(&sb), "restore_command = 'x y = ''z'''\n") &&
	       !strstr(sb_str(&sb), "recovery_target"),
	   "settings: no target, no action; a newline cannot start another setting");

	/* ---- relocations and links ---- */
	{
		struct rs_relocation rel[] = {
		    {"/var/lib/postgresql", "/r/var/lib/postgresql"},
		    {"/var/lib/postgresql/wal", "/r/var/lib/postgresql/wal"},
		    {"/", "/r"}};
		char out[PATH_MAX];

		ok(rs_relocate(rel, 2, "/var/lib/postgresql/wal/pg_wal", out, sizeof(out)) == 0 &&
		       !strcmp(out, "/r/var/lib/postgresql/wal/pg_wal"),
		   "relocate: the longest mount point wins");
		ok(rs_relocate(rel, 2, "/var/lib/postgresqlX/a", out, sizeof(out)) < 0,
		   "relocate: by component, not by prefix");
		ok(rs_relocate(rel, 2, "/var/lib/postgresql", out, sizeof(out)) == 0 &&
		       !strcmp(out, "/r/var/lib/postgresql"),
		   "relocate: the mount point itself");
		ok(rs_relocate(rel, 3, "/etc/x", out, sizeof(out)) == 0 && !strcmp(out, "/r/etc/x"),
		   "relocate: a root mount takes everything else");
	}
	p(target, sizeof(target), "wal/pg_wal");
	rs_mkdirs(target, &err);
	p(path, sizeof(path), "root/var/lib/postgresql/15/main/pg_wal");
	ok(symlink("/orig/wal/pg_wal", path) == 0, "links: pg_wal -> /orig/wal/pg_wal");
	p(path, sizeof(path), "root/var/lib/postgresql/15/main/pg_tblspc");
	rs_mkdirs(path, &err);
	p(path, sizeof(path), "root/var/lib/postgresql/15/main/pg_tblspc/16400");
	ok(symlink("/orig/ts1/tblspc", path) == 0, "links: pg_tblspc/16400 -> /orig/ts1/tblspc");
	p(path, sizeof(path), "root/var/lib/postgresql/15/main/pg_tblspc/16401");
	ok(symlink("/elsewhere/ts2", path) == 0, "links: pg_tblspc/16401 -> /elsewhere/ts2");
	{
		char to_wal[PATH_MAX], to_ts[PATH_MAX];
		struct rs_relocation rel[2];

		p(to_wal, sizeof(to_wal), "wal");
		p(to_ts, sizeof(to_ts), "ts1");
		rel[0] = (struct rs_relocation){"/orig/wal", to_wal};
		rel[1] = (struct rs_relocation){"/orig/ts1", to_ts};
		sb_reset(&report);
		ok(rs_relink(pgdata, rel, 2, getuid(), getgid(), &report, &err) == 0,
		   "links: relinked (%s)", err.msg);
		snprintf(path, sizeof(path), "%s/pg_wal", to_wal);
		is_str(link_of("root/var/lib/postgresql/15/main/pg_wal"), path,
		       "links: pg_wal points into the restored wal filesystem");
		snprintf(path, sizeof(path), "%s/tblspc", to_ts);
		is_str(link_of("root/var/lib/postgresql/15/main/pg_tblspc/16400"), path,
		       "links: the tablespace points into its restored filesystem");
		is_str(link_of("root/var/lib/postgresql/15/main/pg_tblspc/16401"), "/elsewhere/ts2",
		       "links: a link to no restored filesystem is left");
		ok(strstr(sb_str(&report), "WARNING") && strstr(sb_str(&report), "/elsewhere/ts2"),
		   "links: ... with a warning");
		sb_reset(&report);
		ok(rs_relink(pgdata, rel, 2, getuid(), getgid(), &report, &err) == 0 &&
		       !strstr(sb_str(&report), "pointed") && strstr(sb_str(&report), "WARNING") &&
		       !strstr(sb_str(&report), "pg_wal ->"),
		   "links: a second run leaves the moved links alone, without a warning");
	}

	/* ---- the configuration files ---- */
	p(croot, sizeof(croot), "croot");
	count = 99;
	sb_reset(&report);
	ok(rs_restore_config(pgdata, croot, getuid(), getgid(), &count, NULL, 0, &report, &err) ==
	           0 &&
	       count == 0 && strstr(sb_str(&report), "no configuration"),
	   "config: no manifest, nothing to do, said so");
	puts_("root/var/lib/postgresql/15/main/ami_snapshot/config/manifest",
	      "644\troot\troot\t/etc/postgresql/15/main/postgresql.conf\n"
	      "640\tpostgres\tpostgres\t/etc/postgresql/15/main/pg_hba.conf\n"
	      "600\tnosuchuser-amis\tnosuchgroup-amis\t/etc/postgresql/15/main/conf.d/with "
	      "space.conf\n"
	      "644\troot\troot\t/etc/postgresql/15/main/start.conf\n");
	puts_("root/var/lib/postgresql/15/main/ami_snapshot/config/files/etc/postgresql/15/main/"
	      "postgresql.conf",
	      "data_directory = '/var/lib/postgresql/15/main'\n");
	puts_("root/var/lib/postgresql/15/main/ami_snapshot/config/files/etc/postgresql/15/main/"
	      "pg_hba.conf",
	      "local all all peer\n");
	puts_("root/var/lib/postgresql/15/main/ami_snapshot/config/files/etc/postgresql/15/main/"
	      "conf.d/with space.conf",
	      "work_mem = '4MB'\n");
	puts_("root/var/lib/postgresql/15/main/ami_snapshot/config/files/etc/postgresql/15/main/"
	      "start.conf",
	      "auto\n");
	/* Already there: one different (kept aside), one the same (left). */
	puts_("croot/etc/postgresql/15/main/pg_hba.conf", "host all all 0.0.0.0/0 trust\n");
	puts_("croot/etc/postgresql/15/main/start.conf", "auto\n");
	chmod(strcat(strcpy(path, croot), "/etc/postgresql/15/main/start.conf"), 0644);
	sb_reset(&report);
	ok(rs_restore_config(pgdata, croot, 4242, 4343, &count, mainconf, sizeof(mainconf), &report,
	                     &err) == 0,
	   "config: restored (%s)", err.msg);
	snprintf(path, sizeof(path), "%s/etc/postgresql/15/main/postgresql.conf", croot);
	is_str(mainconf, path, "config: says where postgresql.conf went");
	is_int(count, 4, "config: four files");
	is_str(get("croot/etc/postgresql/15/main/postgresql.conf", NULL),
	       "data_directory = '/var/lib/postgresql/15/main'\n",
	       "config: postgresql.conf's bytes");
	is_int(mode_of("croot/etc/postgresql/15/main/postgresql.conf"), 0644,
	       "config: postgresql.conf mode 0644");
	is_str(get("croot/etc/postgresql/15/main/pg_hba.conf", NULL), "local all all peer\n",
	       "config: pg_hba.conf restored");
	is_int(mode_of("croot/etc/postgresql/15/main/pg_hba.conf"), 0640,
	       "config: pg_hba.conf 0640");
	is_str(get("croot/etc/postgresql/15/main/pg_hba.conf.before-restore", NULL),
	       "host all all 0.0.0.0/0 trust\n",
	       "config: the different file that was there is kept as .before-restore");
	is_str(get("croot/etc/postgresql/15/main/conf.d/with space.conf", NULL),
	       "work_mem = '4MB'\n", "config: a path with a space, in a new directory");
	{
		struct stat st;

		snprintf(path, sizeof(path), "%s/etc/postgresql/15/main/conf.d/with space.conf",
		         croot);
		ok(stat(path, &st) == 0 && st.st_uid == 4242 && st.st_gid == 4343 &&
		       (st.st_mode & 07777) == 0600,
		   "config: an unknown owner and group: the data directory's, mode as recorded");
	}
	ok(!exists("croot/etc/postgresql/15/main/start.conf.before-restore") &&
	       strstr(sb_str(&report), "already as captured"),
	   "config: an identical file is left alone");

	/* A hostile manifest. */
	puts_("root/var/lib/postgresql/15/main/ami_snapshot/config/manifest",
	      "644\troot\troot\t/etc/../../escape\n");
	ok(rs_restore_config(pgdata, croot, 0, 0, &count, NULL, 0, &report, &err) < 0 &&
	       strstr(err.msg, "bad mode or path"),
	   "config: a path with .. is refused");
	puts_("root/var/lib/postgresql/15/main/ami_snapshot/config/manifest",
	      "644 root root /etc/x\n");
	ok(rs_restore_config(pgdata, croot, 0, 0, &count, NULL, 0, &report, &err) < 0,
	   "config: a line without tabs is refused");
	puts_("root/var/lib/postgresql/15/main/ami_snapshot/config/manifest",
	      "99999\troot\troot\t/etc/x\n");
	ok(rs_restore_config(pgdata, croot, 0, 0, &count, NULL, 0, &report, &err) < 0,
	   "config: a mode that is not octal 0..7777 is refused");
	puts_("root/var/lib/postgresql/15/main/ami_snapshot/config/manifest",
	      "644\troot\troot\trelative/x\n");
	ok(rs_restore_config(pgdata, croot, 0, 0, &count, NULL, 0, &report, &err) < 0,
	   "config: a relative path is refused");
	puts_("root/var/lib/postgresql/15/main/ami_snapshot/config/manifest",
	      "644\troot\troot\t/etc/missing.conf\n");
	ok(rs_restore_config(pgdata, croot, 0, 0, &count, NULL, 0, &report, &err) < 0 &&
	       strstr(err.msg, "missing.conf"),
	   "config: a file the manifest lists but the backup lacks: refused, named");

	sb_free(&report);
	sb_free(&sb);
	{
		char cmd[PATH_MAX + 16];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", top);
		if (system(cmd) != 0)
			printf("# could not remove %s\n", top);
	}
	return done_testing();
}
