/*
 * verify.c - `ami-snapshot verify` (see verify.h and doc/verify.md).
 *
 * The snapshot drill: the restore command's steps (restore.h) under a
 * private scratch directory DRILL_DIR/<drill id>/root, with the volumes
 * tagged ami-snapshot:drill; a throw-away PostgreSQL on the restored data
 * directory (private socket directory, no TCP, its own configuration file
 * and hba file, small memory, nice and idle I/O class); the checks; an
 * optional logical dump; then always the cleanup: the server stopped, the
 * filesystems unmounted, the volumes detached and deleted, the scratch
 * directory removed.  --cleanup finds what dead drills left, by tag and
 * under drill_dir, and removes it.
 */
#include "verify.h"

#include "config.h"
#include "log.h"
#include "restore.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <getopt.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <pwd.h>
#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#define MAX_DUMP_DBS 32
#define MAX_DBS 256

struct vopts {
	const char *config;
	const char *request_id, *name, *image;
	bool json, cleanup, dump_globals;
	long time_budget_ms, timeout_ms; /* -1: the configuration's */
	const char *check_sql, *check_db;
	const char *dump_dir;
	const char *dump_dbs[MAX_DUMP_DBS];
	size_t ndump_dbs;
	const char *drill_dir;
	const char *pg_bindir, *device_dir;
	long device_timeout_s;
	/* the AMI drill */
	bool launch;
	const char *instance_type, *subnet, *security_group, *key_name;
	long tcp_port;
};

/* A drill in progress: what it made, for the cleanup. */
struct drill {
	struct vopts o;
	struct helper_config cfg;
	struct rs_run *r;
	struct vf_report rep;
	const struct rs_set *set;
	char drill_dir[PATH_MAX];
	char scratch[PATH_MAX];
	char root[PATH_MAX];
	char sockdir[PATH_MAX];
	char logfile[PATH_MAX];
	char conffile[PATH_MAX];
	char hbafile[PATH_MAX];
	char identfile[PATH_MAX];
	char user[64];
	uid_t uid;
	gid_t gid;
	int port;
	pid_t postmaster;
	double deadline; /* vf_now_ms() */
	int lock_fd;
};

static volatile sig_atomic_t g_signal;
static volatile sig_atomic_t g_alarm;

static void on_signal(int sig)
{
	if (sig == SIGALRM)
		g_alarm = 1;
	else
		g_signal = sig;
}

static bool should_stop(void)
{
	return g_signal || g_alarm;
}

/* dir + "/" + name into out; false (and out empty) when it does not fit. */
static bool pjoin(char *out, size_t sz, const char *dir, const char *name)
{
	int n = snprintf(out, sz, "%s/%s", dir, name);

	if (n < 0 || (size_t)n >= sz) {
		out[0] = '\0';
		return false;
	}
	return true;
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: ami-snapshot verify [-c CONFIG] (--request-id ID | --name NAME | --image AMI)\n"
	    "           [--json] [--time-budget SEC] [--timeout SEC]\n"
	    "           [--check-sql SQL [--check-db DB]]\n"
	    "           [--dump-dir DIR [--dump-db DB]... [--dump-globals]]\n"
	    "           [--drill-dir DIR] [--pg-bindir DIR] [--device-dir DIR]\n"
	    "           [--device-timeout SEC]\n"
	    "       ami-snapshot verify [-c CONFIG] --cleanup [--json]\n"
	    "Restores a backup onto new volumes under a private scratch directory, starts a\n"
	    "throw-away PostgreSQL on it (no TCP, private socket), checks it (system\n"
	    "identifier, timeline, every database, amcheck, your SQL), optionally dumps it,\n"
	    "and removes everything it made.  --cleanup removes what dead drills left.\n"
	    "Exit: 0 passed, 1 error, 2 usage, 3 refused, 4 failed, 5 timed out, 6 interrupted\n"
	    "(doc/verify.md).\n");
}

static long parse_secs(const char *s, const char *what, long min, long max)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || !*s || v < min || v > max) {
		fprintf(stderr,
		        "ami-snapshot verify: %s must be a number of seconds from %ld to %ld\n",
		        what, min, max);
		exit(VF_EXIT_USAGE);
	}
	return v;
}

static int parse_opts(int argc, char **argv, const char *default_config, struct vopts *o)
{
	enum {
		O_REQ = 256,
		O_NAME,
		O_IMAGE,
		O_JSON,
		O_CLEANUP,
		O_BUDGET,
		O_TIMEOUT,
		O_CHECK_SQL,
		O_CHECK_DB,
		O_DUMP_DIR,
		O_DUMP_DB,
		O_DUMP_GLOBALS,
		O_DRILL_DIR,
		O_BINDIR,
		O_DEVDIR,
		O_DEVTIMEOUT,
		O_LAUNCH,
		O_ITYPE,
		O_SUBNET,
		O_SG,
		O_KEY,
		O_TCP,
	};
	static const struct option lo[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"request-id", required_argument, NULL, O_REQ},
	    {"name", required_argument, NULL, O_NAME},
	    {"image", required_argument, NULL, O_IMAGE},
	    {"json", no_argument, NULL, O_JSON},
	    {"cleanup", no_argument, NULL, O_CLEANUP},
	    {"time-budget", required_argument, NULL, O_BUDGET},
	    {"timeout", required_argument, NULL, O_TIMEOUT},
	    {"check-sql", required_argument, NULL, O_CHECK_SQL},
	    {"check-db", required_argument, NULL, O_CHECK_DB},
	    {"dump-dir", required_argument, NULL, O_DUMP_DIR},
	    {"dump-db", required_argument, NULL, O_DUMP_DB},
	    {"dump-globals", no_argument, NULL, O_DUMP_GLOBALS},
	    {"drill-dir", required_argument, NULL, O_DRILL_DIR},
	    {"pg-bindir", required_argument, NULL, O_BINDIR},
	    {"device-dir", required_argument, NULL, O_DEVDIR},
	    {"device-timeout", required_argument, NULL, O_DEVTIMEOUT},
	    {"launch", no_argument, NULL, O_LAUNCH},
	    {"instance-type", required_argument, NULL, O_ITYPE},
	    {"subnet", required_argument, NULL, O_SUBNET},
	    {"security-group", required_argument, NULL, O_SG},
	    {"key-name", required_argument, NULL, O_KEY},
	    {"tcp-port", required_argument, NULL, O_TCP},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0}};
	int opt, sel;

	memset(o, 0, sizeof(*o));
	o->config = default_config;
	o->time_budget_ms = -1;
	o->timeout_ms = -1;
	o->device_timeout_s = 120;
	o->device_dir = rs_dev_paths_default.by_id_dir;
	optind = 1;
	while ((opt = getopt_long(argc, argv, "c:h", lo, NULL)) != -1) {
		switch (opt) {
		case 'c':
			o->config = optarg;
			break;
		case O_REQ:
			o->request_id = optarg;
			break;
		case O_NAME:
			o->name = optarg;
			break;
		case O_IMAGE:
			o->image = optarg;
			break;
		case O_JSON:
			o->json = true;
			break;
		case O_CLEANUP:
			o->cleanup = true;
			break;
		case O_BUDGET:
			o->time_budget_ms = parse_secs(optarg, "--time-budget", 0, 86400) * 1000;
			break;
		case O_TIMEOUT:
			o->timeout_ms = parse_secs(optarg, "--timeout", 1, 86400) * 1000;
			break;
		case O_CHECK_SQL:
			o->check_sql = optarg;
			break;
		case O_CHECK_DB:
			o->check_db = optarg;
			break;
		case O_DUMP_DIR:
			o->dump_dir = optarg;
			break;
		case O_DUMP_DB:
			if (o->ndump_dbs == MAX_DUMP_DBS) {
				fprintf(stderr, "ami-snapshot verify: at most %d --dump-db\n",
				        MAX_DUMP_DBS);
				return -1;
			}
			o->dump_dbs[o->ndump_dbs++] = optarg;
			break;
		case O_DUMP_GLOBALS:
			o->dump_globals = true;
			break;
		case O_DRILL_DIR:
			o->drill_dir = optarg;
			break;
		case O_BINDIR:
			o->pg_bindir = optarg;
			break;
		case O_DEVDIR:
			o->device_dir = optarg;
			break;
		case O_DEVTIMEOUT:
			o->device_timeout_s = parse_secs(optarg, "--device-timeout", 1, 3600);
			break;
		case O_LAUNCH:
			o->launch = true;
			break;
		case O_ITYPE:
			o->instance_type = optarg;
			break;
		case O_SUBNET:
			o->subnet = optarg;
			break;
		case O_SG:
			o->security_group = optarg;
			break;
		case O_KEY:
			o->key_name = optarg;
			break;
		case O_TCP:
			o->tcp_port = parse_secs(optarg, "--tcp-port", 1, 65535);
			break;
		case 'h':
			usage(stdout);
			exit(0);
		default:
			usage(stderr);
			return -1;
		}
	}
	sel = !!o->request_id + !!o->name + !!o->image;
	if (optind != argc || (o->cleanup ? sel != 0 : sel != 1)) {
		fprintf(stderr, "ami-snapshot verify: give exactly one of --request-id, --name, "
		                "--image (or --cleanup alone)\n");
		return -1;
	}
	if (o->launch && !o->image) {
		fprintf(stderr, "ami-snapshot verify: --launch goes with --image\n");
		return -1;
	}
	if (!o->launch &&
	    (o->instance_type || o->subnet || o->security_group || o->key_name || o->tcp_port)) {
		fprintf(stderr, "ami-snapshot verify: --instance-type, --subnet, --security-group, "
		                "--key-name and --tcp-port go with --launch\n");
		return -1;
	}
	if (o->launch && (o->check_sql || o->dump_dir)) {
		fprintf(stderr,
		        "ami-snapshot verify: --check-sql and --dump-dir are for the snapshot "
		        "drill, not --launch\n");
		return -1;
	}
	if (o->check_db && !o->check_sql) {
		fprintf(stderr, "ami-snapshot verify: --check-db goes with --check-sql\n");
		return -1;
	}
	if ((o->ndump_dbs || o->dump_globals) && !o->dump_dir) {
		fprintf(stderr,
		        "ami-snapshot verify: --dump-db and --dump-globals need --dump-dir\n");
		return -1;
	}
	if (o->dump_dir && o->dump_dir[0] != '/') {
		fprintf(stderr, "ami-snapshot verify: --dump-dir must be an absolute path\n");
		return -1;
	}
	if (o->drill_dir && (o->drill_dir[0] != '/' || strcmp(o->drill_dir, "/") == 0)) {
		fprintf(stderr, "ami-snapshot verify: --drill-dir must be an absolute path other "
		                "than /\n");
		return -1;
	}
	return 0;
}

/* ---- Processes. ---- */

struct proc {
	uid_t uid;
	gid_t gid;
	const char *user;
	const char *cwd;
	const char *const *env; /* extra "K=V", NULL-terminated */
	bool nice;              /* nice 10, idle I/O class */
	int out_fd;             /* stdout (and stderr) there; -1: into out (stderr into errout) */
};

/* In the child: priority, identity, directory, environment; then exec. */
static void child_exec(const struct proc *p, char *const argv[])
{
	char *env[32];
	size_t n = 0, i;

	setpgid(0, 0);
	if (p->nice) {
		/* ionice -c 3 (idle): IOPRIO_WHO_PROCESS, class 3 << IOPRIO_CLASS_SHIFT 13. */
		if (setpriority(PRIO_PROCESS, 0, 10) < 0 ||
		    syscall(SYS_ioprio_set, 1, 0, 3 << 13) < 0)
			_exit(126);
	}
	if (initgroups(p->user, p->gid) < 0 || setgid(p->gid) < 0 || setuid(p->uid) < 0)
		_exit(126);
	if (p->cwd && chdir(p->cwd) < 0)
		_exit(126);
	env[n++] = (char *)"PATH=/usr/local/bin:/usr/bin:/bin";
	env[n++] = (char *)"LC_ALL=C";
	env[n++] = (char *)"HOME=/";
	for (i = 0; p->env && p->env[i] && n < 31; i++)
		env[n++] = (char *)p->env[i];
	env[n] = NULL;
	execve(argv[0], argv, env);
	_exit(127);
}

static void drain(int *fd, struct strbuf *sb)
{
	char buf[4096];
	ssize_t got = read(*fd, buf, sizeof(buf));

	if (got > 0) {
		if (sb->len < 16 * 1024 * 1024)
			sb_append(sb, buf, (size_t)got);
	} else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
		close(*fd);
		*fd = -1;
	}
}

/* Kills a process group: TERM, then KILL after 2 s. */
static void kill_group(pid_t pid, int *status)
{
	double t = vf_now_ms();

	kill(-pid, SIGTERM);
	while (waitpid(pid, status, WNOHANG) == 0) {
		if (vf_now_ms() - t > 2000)
			kill(-pid, SIGKILL);
		usleep(20000);
	}
	kill(-pid, SIGKILL);
}

/*
 * Runs argv as p says until it exits, deadline_ms passes (vf_now_ms), or a
 * signal or the timeout stops the drill: 0 and *status, -1 could not run,
 * -2 killed at the deadline or stop.
 */
static int run_proc(const struct proc *p, char *const argv[], struct strbuf *out,
                    struct strbuf *errout, double deadline_ms, int *status)
{
	int ofd[2] = {-1, -1}, efd[2] = {-1, -1};
	pid_t pid;

	if (p->out_fd < 0 && (pipe2(ofd, O_CLOEXEC) < 0 || pipe2(efd, O_CLOEXEC) < 0))
		return -1;
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		dup2(devnull, 0);
		if (p->out_fd >= 0) {
			dup2(p->out_fd, 1);
			dup2(2, 2);
		} else {
			dup2(ofd[1], 1);
			dup2(efd[1], 2);
		}
		child_exec(p, argv);
	}
	if (p->out_fd < 0) {
		close(ofd[1]);
		close(efd[1]);
	}
	for (;;) {
		struct pollfd pf[2];
		int npf = 0;
		pid_t w;

		if (ofd[0] >= 0)
			pf[npf++] = (struct pollfd){.fd = ofd[0], .events = POLLIN};
		if (efd[0] >= 0)
			pf[npf++] = (struct pollfd){.fd = efd[0], .events = POLLIN};
		if (npf && poll(pf, (nfds_t)npf, 100) > 0) {
			int k;

			/* Only a descriptor poll says is readable: a read would block. */
			for (k = 0; k < npf; k++) {
				if (!pf[k].revents)
					continue;
				if (pf[k].fd == ofd[0])
					drain(&ofd[0], out);
				else
					drain(&efd[0], errout);
			}
		} else if (!npf) {
			usleep(50000);
		}
		if (ofd[0] >= 0 || efd[0] >= 0) {
			if (!should_stop() && vf_now_ms() < deadline_ms)
				continue;
		}
		w = waitpid(pid, status, WNOHANG);
		if (w == pid)
			break;
		if (should_stop() || vf_now_ms() >= deadline_ms) {
			kill_group(pid, status);
			if (ofd[0] >= 0)
				close(ofd[0]);
			if (efd[0] >= 0)
				close(efd[0]);
			return -2;
		}
	}
	if (ofd[0] >= 0)
		close(ofd[0]);
	if (efd[0] >= 0)
		close(efd[0]);
	return 0;
}

/* ---- The throw-away server. ---- */

struct setting {
	const char *name;
	char value[PATH_MAX + 16];
};

/*
 * The drill server's settings: written into its own configuration file and
 * given again on the command line, where postgresql.auto.conf from the
 * snapshot cannot override them.  Why each: doc/verify.md, "Isolation".
 */
static size_t drill_settings(const struct drill *d, struct setting *s, size_t max)
{
	size_t n = 0;

#define SET(k, ...)                                                                                \
	do {                                                                                       \
		if (n < max) {                                                                     \
			s[n].name = k;                                                             \
			snprintf(s[n].value, sizeof(s[n].value), __VA_ARGS__);                     \
			n++;                                                                       \
		}                                                                                  \
	} while (0)
	SET("listen_addresses", "''");
	SET("port", "%d", d->port);
	SET("unix_socket_directories", "'%s'", d->sockdir);
	SET("unix_socket_permissions", "0700");
	SET("hba_file", "'%s'", d->hbafile);
	SET("ident_file", "'%s'", d->identfile);
	SET("archive_mode", "off");
	SET("archive_command", "''");
	SET("restore_command", "''");
	SET("primary_conninfo", "''");
	SET("max_wal_senders", "0");
	SET("wal_level", "logical");
	SET("max_replication_slots", "100");
	SET("max_prepared_transactions", "64");
	SET("hot_standby", "off");
	SET("shared_preload_libraries", "''");
	SET("session_preload_libraries", "''");
	SET("local_preload_libraries", "''");
	SET("shared_buffers", "32MB");
	SET("huge_pages", "off");
	SET("max_connections", "10");
	SET("max_worker_processes", "4");
	SET("max_parallel_workers_per_gather", "0");
	SET("autovacuum", "off");
	SET("fsync", "off");
	SET("synchronous_commit", "off");
	SET("jit", "off");
	SET("ssl", "off");
	SET("logging_collector", "off");
	SET("log_destination", "stderr");
	SET("restart_after_crash", "off");
	SET("cluster_name", "'ami-snapshot drill'");
#undef SET
	return n;
}

static int write_text(const char *path, const char *text, uid_t uid, gid_t gid)
{
	struct amis_err err;

	return rs_write_file(path, text, strlen(text), 0600, uid, gid, &err);
}

static int write_server_files(struct drill *d, struct amis_err *err)
{
	struct setting s[48];
	struct strbuf sb;
	size_t i, n = drill_settings(d, s, 48);
	int rc;

	sb_init(&sb);
	sb_appendf(&sb,
	           "# ami-snapshot verify, drill %s: the production's configuration is not "
	           "used\n",
	           d->rep.drill_id);
	for (i = 0; i < n; i++)
		sb_appendf(&sb, "%s = %s\n", s[i].name, s[i].value);
	rc = write_text(d->conffile, sb_str(&sb), d->uid, d->gid);
	sb_reset(&sb);
	sb_appends(&sb, "# ami-snapshot verify: the drill's own socket, its owner only\n"
	                "local all all trust\n");
	if (rc == 0)
		rc = write_text(d->hbafile, sb_str(&sb), d->uid, d->gid);
	if (rc == 0)
		rc = write_text(d->identfile, "", d->uid, d->gid);
	sb_free(&sb);
	if (rc < 0)
		return err_set(err, AMIS_E_INVALID_PATH,
		               "cannot write the drill's configuration in %s", d->scratch);
	return 0;
}

/* The last lines of the server's log, for a detail. */
static void log_tail(const char *path, int lines, struct strbuf *out)
{
	char buf[8192];
	ssize_t got;
	int fd = open(path, O_RDONLY | O_CLOEXEC), seen = 0;
	off_t size;
	char *p;

	if (fd < 0)
		return;
	size = lseek(fd, 0, SEEK_END);
	lseek(fd, size > (off_t)sizeof(buf) - 1 ? size - (off_t)sizeof(buf) + 1 : 0, SEEK_SET);
	got = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (got <= 0)
		return;
	buf[got] = '\0';
	while (got > 0 && buf[got - 1] == '\n')
		buf[--got] = '\0';
	for (p = buf + got; p > buf; p--) {
		if (p[-1] == '\n' && ++seen == lines)
			break;
	}
	for (; *p; p++)
		sb_append(out, *p == '\n' ? " | " : p, *p == '\n' ? 3 : 1);
}

/* postmaster.pid's status line (the 8th) is "ready": recovery is over. */
static bool server_ready(const char *pgdata)
{
	char path[PATH_MAX], buf[1024];
	ssize_t got;
	int fd, line = 1;
	char *p;

	pjoin(path, sizeof(path), pgdata, "postmaster.pid");
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return false;
	got = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (got <= 0)
		return false;
	buf[got] = '\0';
	for (p = buf; *p && line < 8; p++) {
		if (*p == '\n')
			line++;
	}
	return line == 8 && strncmp(p, "ready", 5) == 0;
}

/*
 * Starts postgres on the restored data directory as its owner, niced, in
 * its own process group, logging into the scratch directory; waits until
 * it is ready (recovery done), it exits, or the drill stops.
 */
static int start_server(struct drill *d, struct strbuf *why)
{
	struct setting s[48];
	size_t i, n = drill_settings(d, s, 48);
	char exe[PATH_MAX], cfgopt[PATH_MAX + 32];
	char *argv[2 * 48 + 8];
	char *opts[48];
	size_t a = 0;
	struct proc p = {
	    .uid = d->uid, .gid = d->gid, .user = d->user, .cwd = d->scratch, .nice = true};
	int logfd, status;
	pid_t pid;

	pjoin(exe, sizeof(exe), d->r->pg_bindir, "postgres");
	snprintf(cfgopt, sizeof(cfgopt), "config_file=%s", d->conffile);
	argv[a++] = exe;
	argv[a++] = (char *)"-D";
	argv[a++] = d->r->pgdata;
	argv[a++] = (char *)"-c";
	argv[a++] = cfgopt;
	for (i = 0; i < n; i++) {
		struct strbuf sb;
		char *v = s[i].value;
		size_t len = strlen(v);

		/* On the command line, without the configuration file's quotes. */
		sb_init(&sb);
		if (len >= 2 && v[0] == '\'' && v[len - 1] == '\'')
			sb_appendf(&sb, "%s=%.*s", s[i].name, (int)len - 2, v + 1);
		else
			sb_appendf(&sb, "%s=%s", s[i].name, v);
		opts[i] = xstrdup(sb_str(&sb));
		sb_free(&sb);
		argv[a++] = (char *)"-c";
		argv[a++] = opts[i];
	}
	argv[a] = NULL;
	logfd = open(d->logfile, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
	if (logfd < 0 || fchown(logfd, d->uid, d->gid) < 0) {
		sb_appendf(why, "cannot open %s: %s", d->logfile, strerror(errno));
		goto fail;
	}
	fflush(stdout);
	fflush(stderr);
	pid = fork();
	if (pid < 0) {
		sb_appendf(why, "fork: %s", strerror(errno));
		goto fail;
	}
	if (pid == 0) {
		int devnull = open("/dev/null", O_RDONLY);

		dup2(devnull, 0);
		dup2(logfd, 1);
		dup2(logfd, 2);
		child_exec(&p, argv);
	}
	d->postmaster = pid;
	close(logfd);
	logfd = -1;
	for (i = 0; i < n; i++)
		free(opts[i]);
	n = 0;
	printf("started PostgreSQL (pid %d) on %s, socket %s, port %d\n", (int)pid, d->r->pgdata,
	       d->sockdir, d->port);
	fflush(stdout);
	for (;;) {
		if (waitpid(pid, &status, WNOHANG) == pid) {
			d->postmaster = 0;
			sb_appendf(why, "PostgreSQL exited (%s %d) before recovery finished: ",
			           WIFEXITED(status) ? "status" : "signal",
			           WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
			log_tail(d->logfile, 6, why);
			return -1;
		}
		if (server_ready(d->r->pgdata))
			return 0;
		if (should_stop() || vf_now_ms() >= d->deadline) {
			sb_appends(why, "recovery did not finish before the drill stopped: ");
			log_tail(d->logfile, 3, why);
			return -2;
		}
		usleep(50000);
	}
fail:
	if (logfd >= 0)
		close(logfd);
	for (i = 0; i < n; i++)
		free(opts[i]);
	return -1;
}

/* Waits up to ms for our postmaster to exit. */
static bool wait_postmaster(struct drill *d, double ms)
{
	double t = vf_now_ms();
	int status;

	while (vf_now_ms() - t < ms) {
		pid_t w = waitpid(d->postmaster, &status, WNOHANG);

		if (w == d->postmaster || (w < 0 && errno == ECHILD)) {
			d->postmaster = 0;
			return true;
		}
		usleep(50000);
	}
	return false;
}

/* Fast shutdown, then immediate, then SIGKILL. */
static void stop_server(struct drill *d)
{
	if (!d->postmaster)
		return;
	kill(d->postmaster, SIGINT);
	if (wait_postmaster(d, 60000)) {
		printf("stopped PostgreSQL (fast shutdown)\n");
		return;
	}
	kill(d->postmaster, SIGQUIT);
	if (wait_postmaster(d, 10000)) {
		printf("stopped PostgreSQL (immediate shutdown)\n");
		return;
	}
	kill(d->postmaster, SIGKILL);
	wait_postmaster(d, 5000);
	printf("killed PostgreSQL\n");
}

/* ---- Processes, mounts and directories under a prefix (cleanup). ---- */

static bool under(const char *path, const char *prefix)
{
	size_t n = strlen(prefix);

	return strncmp(path, prefix, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

/* Signals every process whose working directory is under prefix; how many. */
static int signal_by_cwd(const char *prefix, int sig)
{
	DIR *dir = opendir("/proc");
	struct dirent *e;
	int n = 0;

	if (!dir)
		return 0;
	while ((e = readdir(dir))) {
		char link[64], cwd[PATH_MAX];
		ssize_t len;
		char *end;
		long pid = strtol(e->d_name, &end, 10);

		if (*end || pid <= 1 || pid == (long)getpid())
			continue;
		snprintf(link, sizeof(link), "/proc/%ld/cwd", pid);
		len = readlink(link, cwd, sizeof(cwd) - 1);
		if (len <= 0)
			continue;
		cwd[len] = '\0';
		if (under(cwd, prefix) && kill((pid_t)pid, sig) == 0)
			n++;
	}
	closedir(dir);
	return n;
}

/* Stops every process working under prefix: SIGQUIT (PostgreSQL's immediate), then KILL. */
static int stop_processes(const char *prefix, FILE *out)
{
	double t = vf_now_ms();
	int n = signal_by_cwd(prefix, 0);

	if (!n)
		return 0;
	fprintf(out, "  stopping %d process(es) working under %s\n", n, prefix);
	signal_by_cwd(prefix, SIGQUIT);
	while (signal_by_cwd(prefix, 0) && vf_now_ms() - t < 10000)
		usleep(100000);
	signal_by_cwd(prefix, SIGKILL);
	t = vf_now_ms();
	while (signal_by_cwd(prefix, 0) && vf_now_ms() - t < 5000)
		usleep(100000);
	return signal_by_cwd(prefix, 0);
}

/* mountinfo's escapes (\040 for a space) undone in place. */
static void unescape(char *s)
{
	char *o = s;

	while (*s) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' && s[2] && s[3]) {
			*o++ = (char)(((s[1] - '0') << 6) | ((s[2] - '0') << 3) | (s[3] - '0'));
			s += 4;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
}

static int by_length_desc(const void *a, const void *b)
{
	size_t x = strlen(*(char *const *)a), y = strlen(*(char *const *)b);

	return x < y ? 1 : x > y ? -1 : 0;
}

/* Unmounts everything mounted under prefix, deepest first; how many are left. */
static int unmount_under(const char *prefix, FILE *out)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	char line[PATH_MAX * 2], *mps[256];
	size_t n = 0, i;
	int left = 0;

	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f) && n < 256) {
		char mp[PATH_MAX];

		if (sscanf(line, "%*s %*s %*s %*s %4095s", mp) != 1)
			continue;
		unescape(mp);
		if (under(mp, prefix) && strcmp(mp, prefix) != 0)
			mps[n++] = xstrdup(mp);
	}
	fclose(f);
	qsort(mps, n, sizeof(mps[0]), by_length_desc);
	for (i = 0; i < n; i++) {
		if (umount(mps[i]) == 0 || umount2(mps[i], MNT_DETACH) == 0) {
			fprintf(out, "  unmounted %s\n", mps[i]);
		} else {
			fprintf(out, "  cannot unmount %s: %s\n", mps[i], strerror(errno));
			left++;
		}
		free(mps[i]);
	}
	return left;
}

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (flag == FTW_DP)
		return rmdir(path) < 0 ? -1 : 0;
	return unlink(path) < 0 ? -1 : 0;
}

/* Removes dir and everything in it, never crossing into another filesystem. */
static int remove_tree(const char *dir)
{
	return nftw(dir, rm_one, 16, FTW_DEPTH | FTW_PHYS | FTW_MOUNT);
}

/* Polls a volume until its status is want; -1 after timeout_s. */
static int wait_status(struct rs_aws *aws, const char *id, const char *want, long timeout_s)
{
	double t = vf_now_ms();
	struct rs_volume_state st;
	struct amis_err err;

	while (vf_now_ms() - t < timeout_s * 1000.0) {
		if (rs_describe_volumes(aws, &id, 1, &st, &err) < 0)
			return -1;
		if (strcmp(st.status, want) == 0)
			return 0;
		usleep(250000);
	}
	return -1;
}

/*
 * --cleanup: what dead drills of this instance left.  Refused (exit 3)
 * while a drill runs (it holds drill_dir/.lock shared).
 */
static int cleanup_main(struct vopts *o, struct helper_config *cfg, const char *drill_dir)
{
	char lock[PATH_MAX];
	struct rs_aws *aws = NULL;
	struct rs_volume_state vols[64];
	struct amis_err err;
	size_t n = 0, i;
	int fd, left = 0, removed = 0;
	bool aws_ok = false;
	DIR *dir;
	struct dirent *e;
	FILE *out = o->json ? stderr : stdout;

	err_clear(&err);
	pjoin(lock, sizeof(lock), drill_dir, ".lock");
	fd = open(lock, O_RDWR | O_CLOEXEC);
	if (fd >= 0 && flock(fd, LOCK_EX | LOCK_NB) < 0) {
		fprintf(stderr,
		        "ami-snapshot verify: a drill is running (%s is locked); --cleanup "
		        "removes the leftovers of dead drills only\n",
		        lock);
		close(fd);
		return VF_EXIT_REFUSED;
	}
	/* 1. Processes (a postmaster and its backends, psql, pg_dump). */
	if (access(drill_dir, F_OK) == 0)
		left += stop_processes(drill_dir, out);
	/* 2. Mounts. */
	left += unmount_under(drill_dir, out);
	aws = rs_aws_new(cfg);
	aws_ok = rs_aws_ready(aws, false, &err) == 0;
	if (!aws_ok) {
		fprintf(stderr, "ami-snapshot verify: %s\n", err.msg);
		left++;
	}
	/* 3. Instances an AMI drill launched from this instance: terminated first, their
	 * volumes go with them (DeleteOnTermination) or come back available. */
	if (aws_ok) {
		struct rs_instance inst[32];
		size_t ni = 0;

		if (rs_instances_by_tag(aws, RS_TAG_PREFIX "drill-instance",
		                        rs_aws_instance_id(aws), inst, 32, &ni, &err) < 0) {
			fprintf(stderr, "ami-snapshot verify: %s\n", err.msg);
			left++;
			ni = 0;
		}
		for (i = 0; i < ni; i++) {
			struct rs_instance st;
			double t = vf_now_ms();

			if (strcmp(inst[i].state, "terminated") == 0)
				continue;
			if (rs_terminate_instance(aws, inst[i].instance_id, &err) < 0) {
				fprintf(out, "  cannot terminate %s: %s\n", inst[i].instance_id,
				        err.msg);
				left++;
				continue;
			}
			while (vf_now_ms() - t < 600000 &&
			       rs_instance_status(aws, inst[i].instance_id, &st, &err) == 0 &&
			       st.state[0] && strcmp(st.state, "terminated") != 0)
				usleep(500000);
			fprintf(out, "  terminated %s\n", inst[i].instance_id);
			removed++;
		}
	}
	/* 4. Volumes tagged for a drill on this instance: detached from here, deleted. */
	if (aws_ok && rs_describe_volumes_by_tag(aws, RS_TAG_PREFIX "drill-instance",
	                                         rs_aws_instance_id(aws), vols, 64, &n, &err) < 0) {
		fprintf(stderr, "ami-snapshot verify: %s\n", err.msg);
		left++;
		n = 0;
	}
	for (i = 0; i < n; i++) {
		const char *id = vols[i].volume_id;

		if (vols[i].instance_id[0] &&
		    strcmp(vols[i].instance_id, rs_aws_instance_id(aws)) != 0) {
			fprintf(out, "  %s is attached to %s, not here: left\n", id,
			        vols[i].instance_id);
			left++;
			continue;
		}
		if (strcmp(vols[i].status, "in-use") == 0 || vols[i].attach_state[0]) {
			if (strcmp(vols[i].attach_state, "attaching") == 0)
				sleep(2);
			if (rs_detach_volume(aws, id, &err) < 0 &&
			    strcmp(err.code, "IncorrectState") != 0) {
				fprintf(out, "  cannot detach %s: %s\n", id, err.msg);
				left++;
				continue;
			}
			fprintf(out, "  detaching %s\n", id);
		}
		if (wait_status(aws, id, "available", 120) < 0) {
			fprintf(out, "  %s is not available after 120 s\n", id);
			left++;
			continue;
		}
		if (rs_delete_volume(aws, id, &err) < 0) {
			fprintf(out, "  cannot delete %s: %s\n", id, err.msg);
			left++;
			continue;
		}
		fprintf(out, "  deleted %s\n", id);
		removed++;
	}
	rs_aws_free(aws);
	/* 5. Scratch directories (only drill-shaped names, nothing mounted). */
	dir = opendir(drill_dir);
	while (dir && (e = readdir(dir))) {
		char path[PATH_MAX];

		if (!vf_drill_id_valid(e->d_name))
			continue;
		snprintf(path, sizeof(path), "%s/%s", drill_dir, e->d_name);
		if (remove_tree(path) == 0) {
			fprintf(out, "  removed %s\n", path);
			removed++;
		} else {
			fprintf(out, "  cannot remove %s: %s\n", path, strerror(errno));
			left++;
		}
	}
	if (dir)
		closedir(dir);
	if (fd >= 0)
		close(fd);
	fprintf(out, "cleanup: %d removed, %d left\n", removed, left);
	if (o->json)
		printf("{\"cleanup\":true,\"removed\":%d,\"left\":%d}\n", removed, left);
	return left ? VF_EXIT_ERROR : VF_EXIT_PASSED;
}

/* ---- The checks. ---- */

/* psql as the data directory's owner on the drill's socket; its output in out. */
static int psql(struct drill *d, const char *db, const char *const *sqls, struct strbuf *out,
                struct strbuf *errout)
{
	char exe[PATH_MAX], host[PATH_MAX + 8], port[32], user[96], dbenv[512];
	const char *env[] = {
	    host, port, user, dbenv, "PGAPPNAME=ami-snapshot-verify", "PGCONNECT_TIMEOUT=10", NULL};
	char *argv[32];
	size_t a = 0, i;
	struct proc p = {.uid = d->uid,
	                 .gid = d->gid,
	                 .user = d->user,
	                 .cwd = d->scratch,
	                 .env = env,
	                 .nice = true,
	                 .out_fd = -1};
	int status, rc;

	pjoin(exe, sizeof(exe), d->r->pg_bindir, "psql");
	snprintf(host, sizeof(host), "PGHOST=%s", d->sockdir);
	snprintf(port, sizeof(port), "PGPORT=%d", d->port);
	snprintf(user, sizeof(user), "PGUSER=%s", d->user);
	snprintf(dbenv, sizeof(dbenv), "PGDATABASE=%s", db);
	argv[a++] = exe;
	argv[a++] = (char *)"-X";
	argv[a++] = (char *)"-q";
	argv[a++] = (char *)"-A";
	argv[a++] = (char *)"-t";
	argv[a++] = (char *)"-F" VF_SEP;
	argv[a++] = (char *)"-v";
	argv[a++] = (char *)"ON_ERROR_STOP=1";
	for (i = 0; sqls[i] && a < 30; i++) {
		argv[a++] = (char *)"-c";
		argv[a++] = (char *)sqls[i];
	}
	argv[a] = NULL;
	rc = run_proc(&p, argv, out, errout, d->deadline, &status);
	if (rc == -2)
		return -2;
	if (rc < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0)
		return -1;
	/* One trailing newline off. */
	while (out->len && out->data[out->len - 1] == '\n')
		out->data[--out->len] = '\0';
	return 0;
}

static void trim_err(struct strbuf *e)
{
	size_t i;

	for (i = 0; i < e->len; i++) {
		if (e->data[i] == '\n')
			e->data[i] = ' ';
	}
	while (e->len && e->data[e->len - 1] == ' ')
		e->data[--e->len] = '\0';
}

/* Splits a psql row on VF_SEP into at most max fields (in place). */
static size_t fields(char *row, char **f, size_t max)
{
	size_t n = 0;

	while (n < max) {
		char *sep = strstr(row, VF_SEP);

		f[n++] = row;
		if (!sep)
			break;
		*sep = '\0';
		row = sep + 1;
	}
	return n;
}

/* Marks the drill timed out or interrupted, if that is why a step ended. */
static bool stopped(struct drill *d)
{
	if (g_signal) {
		vf_set_error(&d->rep, VF_INTERRUPTED, "interrupted by signal %d", (int)g_signal);
		return true;
	}
	if (g_alarm || vf_now_ms() >= d->deadline) {
		vf_set_error(&d->rep, VF_TIMED_OUT, "the drill's timeout was reached");
		return true;
	}
	return false;
}

/*
 * psql with out and err reset first and *t its start: 0, -1 (failed; err
 * on one line), or -2 when the drill was stopped (timeout, signal).
 */
static int query(struct drill *d, const char *db, const char *const *sqls, struct strbuf *out,
                 struct strbuf *err, double *t)
{
	int rc;

	sb_reset(out);
	sb_reset(err);
	*t = vf_now_ms();
	rc = psql(d, db, sqls, out, err);
	if (rc == -2 && stopped(d))
		return -2;
	trim_err(err);
	return rc < 0 ? -1 : 0;
}

static void run_checks(struct drill *d, long budget_ms, char dbs[][256], size_t *ndbs)
{
	struct strbuf out, err;
	const struct rs_snapshot *s0 = d->set->snaps[0];
	const char *sysid = rs_atag(s0, "system-identifier");
	const char *tl = rs_atag(s0, "timeline");
	const char *start_lsn = rs_atag(s0, "start-lsn");
	const char *q1[] = {"SELECT pg_is_in_recovery(), current_user, "
	                    "(SELECT system_identifier FROM pg_control_system()), "
	                    "(SELECT timeline_id FROM pg_control_checkpoint()), "
	                    "coalesce(pg_last_wal_replay_lsn(), "
	                    "(SELECT redo_lsn FROM pg_control_checkpoint()))",
	                    NULL};
	const char *qdb[] = {"SELECT datname FROM pg_database WHERE datallowconn ORDER BY 1", NULL};
	char *f[8], *line;
	double t, budget_start;
	size_t i;
	int rc;

	sb_init(&out);
	sb_init(&err);
	*ndbs = 0;

	/* connect, system identifier, timeline, recovered LSN */
	rc = query(d, "postgres", q1, &out, &err, &t);
	if (rc == -2)
		goto out;
	if (rc < 0 || fields((char *)sb_str(&out), f, 8) != 5) {
		vf_add_check(&d->rep, "connect", false, vf_now_ms() - t, "%s",
		             err.len ? sb_str(&err) : "no answer");
		goto out;
	}
	vf_add_check(&d->rep, "connect", strcmp(f[0], "f") == 0, vf_now_ms() - t, "as %s on %s%s",
	             f[1], d->sockdir, strcmp(f[0], "f") == 0 ? "" : " (still in recovery)");
	vf_add_check(&d->rep, "system-identifier", sysid && strcmp(f[2], sysid) == 0, 0,
	             "%s (tagged %s)", f[2], sysid ? sysid : "nothing");
	vf_add_check(&d->rep, "timeline", tl && atol(f[3]) >= atol(tl), 0, "%s (tagged %s)", f[3],
	             tl ? tl : "nothing");
	snprintf(d->rep.recovered_lsn, sizeof(d->rep.recovered_lsn), "%s", f[4]);
	{
		unsigned long long got, want;
		bool ok = vf_parse_lsn(f[4], &got) && start_lsn && vf_parse_lsn(start_lsn, &want) &&
		          got >= want;

		vf_add_check(&d->rep, "recovered-lsn", ok, 0,
		             "replayed to %s (the backup started at %s)", f[4],
		             start_lsn ? start_lsn : "?");
	}

	/* every database */
	rc = query(d, "postgres", qdb, &out, &err, &t);
	if (rc == -2)
		goto out;
	if (rc < 0) {
		vf_add_check(&d->rep, "databases", false, vf_now_ms() - t, "%s", sb_str(&err));
		goto out;
	}
	for (line = strtok((char *)sb_str(&out), "\n"); line && *ndbs < MAX_DBS;
	     line = strtok(NULL, "\n"))
		snprintf(dbs[(*ndbs)++], 256, "%s", line);
	vf_add_check(&d->rep, "databases", *ndbs > 0, vf_now_ms() - t, "%zu accept connections",
	             *ndbs);

	/* amcheck in each, within the budget */
	budget_start = vf_now_ms();
	for (i = 0; i < *ndbs; i++) {
		const char *sqls[4] = {"CREATE EXTENSION IF NOT EXISTS amcheck",
		                       "ALTER EXTENSION amcheck UPDATE", NULL, NULL};
		struct strbuf sql;
		struct vf_amcheck_result ar;
		struct amis_err perr;
		char name[300];

		sb_init(&sql);
		vf_amcheck_sql(vf_budget_left(budget_ms, budget_start, vf_now_ms()), &sql);
		sqls[2] = sb_str(&sql);
		snprintf(name, sizeof(name), "amcheck:%s", dbs[i]);
		rc = query(d, dbs[i], sqls, &out, &err, &t);
		sb_free(&sql);
		if (rc == -2) {
			vf_add_check(&d->rep, name, false, vf_now_ms() - t, "stopped");
			goto out;
		}
		if (rc < 0) {
			vf_add_check(&d->rep, name, false, vf_now_ms() - t, "%s", sb_str(&err));
			continue;
		}
		vf_amcheck_result_init(&ar);
		if (vf_amcheck_parse(sb_str(&out), dbs[i], &ar, &d->rep, &perr) < 0)
			vf_add_check(&d->rep, name, false, vf_now_ms() - t, "%s", perr.msg);
		else if (ar.corrupt)
			vf_add_check(&d->rep, name, false, vf_now_ms() - t,
			             "%zu of %zu relation(s) corrupt: %s", ar.corrupt,
			             ar.tables + ar.indexes, sb_str(&ar.problems));
		else
			vf_add_check(&d->rep, name, true, vf_now_ms() - t,
			             "%zu table(s) and %zu btree index(es) clean%s", ar.tables,
			             ar.indexes,
			             ar.skipped ? ", some not reached (time budget)" : "");
		vf_amcheck_result_free(&ar);
	}

	/* the user's check */
	if (d->o.check_sql) {
		const char *sqls[] = {d->o.check_sql, NULL};

		rc = query(d, d->o.check_db ? d->o.check_db : "postgres", sqls, &out, &err, &t);
		if (rc == -2)
			goto out;
		vf_add_check(&d->rep, "check-sql", rc == 0 && strcmp(sb_str(&out), "t") == 0,
		             vf_now_ms() - t, "%s", rc == 0 ? sb_str(&out) : sb_str(&err));
	}
out:
	sb_free(&out);
	sb_free(&err);
}

/* ---- Dumps. ---- */

static int dump_one(struct drill *d, const char *db, const struct stat *dirst)
{
	char name[600], path[PATH_MAX], tmp[PATH_MAX + 16], exe[PATH_MAX], host[PATH_MAX + 8],
	    port[32], user[96];
	const char *env[] = {host, port, user, "PGAPPNAME=ami-snapshot-verify", NULL};
	char *argv[12];
	struct strbuf out, err;
	struct proc p = {.uid = d->uid,
	                 .gid = d->gid,
	                 .user = d->user,
	                 .cwd = d->scratch,
	                 .env = env,
	                 .nice = true};
	int fd, status, rc;
	size_t a = 0;
	double t = vf_now_ms();

	vf_dump_name(d->rep.request_id, db, name, sizeof(name));
	snprintf(path, sizeof(path), "%s/%s", d->o.dump_dir, name);
	snprintf(tmp, sizeof(tmp), "%s.partial", path);
	snprintf(host, sizeof(host), "PGHOST=%s", d->sockdir);
	snprintf(port, sizeof(port), "PGPORT=%d", d->port);
	snprintf(user, sizeof(user), "PGUSER=%s", d->user);
	if (db) {
		pjoin(exe, sizeof(exe), d->r->pg_bindir, "pg_dump");
		argv[a++] = exe;
		argv[a++] = (char *)"-Fc";
		argv[a++] = (char *)"-d";
		argv[a++] = (char *)db;
	} else {
		pjoin(exe, sizeof(exe), d->r->pg_bindir, "pg_dumpall");
		argv[a++] = exe;
		argv[a++] = (char *)"--globals-only";
	}
	argv[a] = NULL;
	/* Opened by root, owned by the dump directory's owner; pg_dump writes to stdout. */
	unlink(tmp);
	fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || fchown(fd, dirst->st_uid, dirst->st_gid) < 0) {
		vf_add_check(&d->rep, db ? "dump" : "dump-globals", false, 0, "%s: %s", tmp,
		             strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	p.out_fd = fd;
	sb_init(&out);
	sb_init(&err);
	rc = run_proc(&p, argv, &out, &err, d->deadline, &status);
	if (fsync(fd) < 0)
		rc = -1;
	close(fd);
	{
		char cname[300];

		snprintf(cname, sizeof(cname), "dump:%s", db ? db : "(globals)");
		if (rc == 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0 &&
		    rename(tmp, path) == 0) {
			struct stat st;

			stat(path, &st);
			vf_add_check(&d->rep, cname, true, vf_now_ms() - t, "%s (%lld bytes)", path,
			             (long long)st.st_size);
			vf_add_dump(&d->rep, path);
		} else {
			unlink(tmp);
			vf_add_check(&d->rep, cname, false, vf_now_ms() - t, "%s failed%s",
			             db ? "pg_dump" : "pg_dumpall",
			             rc == -2 ? " (stopped)" : " (see its messages above)");
			rc = -1;
		}
	}
	sb_free(&out);
	sb_free(&err);
	return rc;
}

static void dumps(struct drill *d, char dbs[][256], size_t ndbs)
{
	struct stat st;
	size_t i;

	if (stat(d->o.dump_dir, &st) < 0 || !S_ISDIR(st.st_mode)) {
		vf_add_check(&d->rep, "dump", false, 0, "%s is not a directory", d->o.dump_dir);
		return;
	}
	if (d->o.ndump_dbs) {
		for (i = 0; i < d->o.ndump_dbs && !should_stop(); i++)
			dump_one(d, d->o.dump_dbs[i], &st);
	} else {
		for (i = 0; i < ndbs && !should_stop(); i++) {
			if (strcmp(dbs[i], "template1") && strcmp(dbs[i], "template0"))
				dump_one(d, dbs[i], &st);
		}
	}
	if (d->o.dump_globals && !should_stop())
		dump_one(d, NULL, &st);
}

/* ---- The drill. ---- */

static void phase(struct drill *d, const char *name, double *t)
{
	double now = vf_now_ms();

	vf_add_phase(&d->rep, name, now - *t);
	*t = now;
}

/* Everything the drill made goes, whatever happened. */
static void drill_cleanup(struct drill *d)
{
	FILE *out = stdout;

	printf("cleaning up drill %s:\n", d->rep.drill_id);
	stop_server(d);
	if (d->scratch[0])
		d->rep.left += (size_t)stop_processes(d->scratch, out);
	if (d->r)
		d->rep.left += (size_t)rs_release(d->r, out);
	if (d->scratch[0] && access(d->scratch, F_OK) == 0) {
		/* Anything still mounted there (a failed rs_release) stays, and so does the
		 * directory. */
		int busy = unmount_under(d->scratch, out);

		if (busy)
			d->rep.left += (size_t)busy;
		else if (remove_tree(d->scratch) == 0)
			printf("  removed %s\n", d->scratch);
		else {
			printf("  cannot remove %s: %s\n", d->scratch, strerror(errno));
			d->rep.left++;
		}
	}
	fflush(stdout);
}

/* drill_dir/.lock, shared: --cleanup (exclusive) refuses while any drill runs. */
static int take_lock(struct drill *d, struct amis_err *err)
{
	char path[PATH_MAX];

	if (rs_mkdirs(d->drill_dir, err) < 0)
		return -1;
	pjoin(path, sizeof(path), d->drill_dir, ".lock");
	d->lock_fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (d->lock_fd < 0 || flock(d->lock_fd, LOCK_SH) < 0)
		return err_set(err, AMIS_E_INVALID_PATH, "%s: %s", path, strerror(errno));
	return 0;
}

static int make_scratch(struct drill *d, struct amis_err *err)
{
	if (take_lock(d, err) < 0)
		return -1;
	if (mkdir(d->scratch, 0755) < 0)
		return err_set(err, AMIS_E_INVALID_PATH, "mkdir %s: %s", d->scratch,
		               strerror(errno));
	pjoin(d->root, sizeof(d->root), d->scratch, "root");
	pjoin(d->sockdir, sizeof(d->sockdir), d->scratch, "run");
	pjoin(d->logfile, sizeof(d->logfile), d->scratch, "postgres.log");
	pjoin(d->conffile, sizeof(d->conffile), d->scratch, "postgresql.conf");
	pjoin(d->hbafile, sizeof(d->hbafile), d->scratch, "pg_hba.conf");
	pjoin(d->identfile, sizeof(d->identfile), d->scratch, "pg_ident.conf");
	if (mkdir(d->root, 0755) < 0)
		return err_set(err, AMIS_E_INVALID_PATH, "mkdir %s: %s", d->root, strerror(errno));
	return 0;
}

/* The restored data directory's owner: the server and the checks run as them. */
static int owner_of(struct drill *d, struct amis_err *err)
{
	struct stat st;
	struct passwd *pw;

	if (stat(d->r->pgdata, &st) < 0)
		return err_set(err, AMIS_E_PATH_NOT_FOUND, "%s: %s", d->r->pgdata, strerror(errno));
	pw = getpwuid(st.st_uid);
	if (!pw || st.st_uid == 0)
		return err_set(err, AMIS_E_INVALID_PATH,
		               "the data directory's owner (uid %u) is %s here",
		               (unsigned)st.st_uid, pw ? "root" : "unknown");
	d->uid = st.st_uid;
	d->gid = pw->pw_gid;
	snprintf(d->user, sizeof(d->user), "%s", pw->pw_name);
	if (mkdir(d->sockdir, 0700) < 0 || chown(d->sockdir, d->uid, d->gid) < 0)
		return err_set(err, AMIS_E_INVALID_PATH, "%s: %s", d->sockdir, strerror(errno));
	return 0;
}

/* Tags ids (snapshots, the image) with the drill's result, when it has a verdict. */
static void tag_ids(struct drill *d, const char *const *ids, size_t n)
{
	char key[64], value[128];
	struct amis_err err;
	struct strbuf sb;

	if (!n || !vf_result_tag(d->rep.outcome, time(NULL), d->rep.drill_id, key, sizeof(key),
	                         value, sizeof(value)))
		return;
	if (rs_create_tags(d->r->aws, ids, n, key, value, &err) < 0) {
		fprintf(stderr, "ami-snapshot verify: cannot tag the backup: %s\n", err.msg);
		return;
	}
	sb_init(&sb);
	sb_appendf(&sb, "%s=%s", key, value);
	d->rep.tagged = xstrdup(sb_str(&sb));
	sb_free(&sb);
}

static void tag_result(struct drill *d)
{
	const char *ids[RS_MAX_IMAGE_SNAPSHOTS + 1];
	size_t i, n = 0;

	if (!d->set)
		return;
	for (i = 0; i < d->set->n && n < RS_MAX_IMAGE_SNAPSHOTS; i++)
		ids[n++] = d->set->snaps[i]->snapshot_id;
	if (d->o.image)
		ids[n++] = d->o.image;
	tag_ids(d, ids, n);
}

/* ---- The AMI drill. ---- */

/* Whether a TCP connection to ip:port succeeds within 3 s. */
static bool tcp_connects(const char *ip, long port, char *why, size_t sz)
{
	struct sockaddr_in sa;
	struct pollfd pf;
	socklen_t len = sizeof(int);
	int fd, soerr = 0;
	bool ok = false;

	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1) {
		snprintf(why, sz, "not an IPv4 address: %s", ip);
		return false;
	}
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(why, sz, "socket: %s", strerror(errno));
		return false;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0) {
		ok = true;
	} else if (errno == EINPROGRESS) {
		pf.fd = fd;
		pf.events = POLLOUT;
		if (poll(&pf, 1, 3000) == 1 &&
		    getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &len) == 0 && soerr == 0)
			ok = true;
		else
			snprintf(why, sz, "%s", soerr ? strerror(soerr) : "no answer within 3 s");
	} else {
		snprintf(why, sz, "%s", strerror(errno));
	}
	close(fd);
	return ok;
}

/* Terminates the drill's instance and waits until EC2 says terminated (never cut short). */
static void terminate_instance(struct drill *d, const char *iid)
{
	struct rs_instance st;
	struct amis_err err;
	double t = vf_now_ms();
	int tries;

	err_clear(&err);
	for (tries = 0; tries < 3; tries++) {
		if (rs_terminate_instance(d->r->aws, iid, &err) == 0)
			break;
		sleep(2);
	}
	if (tries == 3) {
		printf("  cannot terminate %s: %s\n", iid, err.msg);
		d->rep.left++;
		return;
	}
	printf("  terminating %s\n", iid);
	fflush(stdout);
	while (vf_now_ms() - t < 600000) {
		if (rs_instance_status(d->r->aws, iid, &st, &err) == 0 &&
		    (strcmp(st.state, "terminated") == 0 || !st.state[0])) {
			printf("  %s terminated\n", iid);
			return;
		}
		usleep(500000);
	}
	printf("  %s is still not terminated after 600 s\n", iid);
	d->rep.left++;
}

/* Volumes of the drill's instance that outlived it (no DeleteOnTermination): deleted. */
static void delete_drill_volumes(struct drill *d)
{
	struct rs_volume_state v[32];
	struct amis_err err;
	size_t n = 0, i;

	if (rs_describe_volumes_by_tag(d->r->aws, RS_TAG_PREFIX "drill", d->rep.drill_id, v, 32, &n,
	                               &err) < 0) {
		printf("  cannot list the drill's volumes: %s\n", err.msg);
		d->rep.left++;
		return;
	}
	for (i = 0; i < n; i++) {
		if (wait_status(d->r->aws, v[i].volume_id, "available", 120) < 0 ||
		    rs_delete_volume(d->r->aws, v[i].volume_id, &err) < 0) {
			printf("  cannot delete %s\n", v[i].volume_id);
			d->rep.left++;
		} else {
			printf("  deleted %s\n", v[i].volume_id);
		}
	}
}

/*
 * RunInstances from the image (tagged for the drill), wait for running and
 * both status checks ok, optionally a TCP port on its private address; then
 * always TerminateInstances and wait for terminated.
 */
static void run_ami_drill(struct drill *d)
{
	struct rs_image img;
	struct rs_instance st;
	struct amis_err err;
	char iid[32] = "", token[96], why[256] = "";
	const char *ids[RS_MAX_IMAGE_SNAPSHOTS + 1];
	const char *itype = d->o.instance_type           ? d->o.instance_type
	                    : d->cfg.drill_instance_type ? d->cfg.drill_instance_type
	                                                 : "t3.micro";
	struct rs_run_instance_req req = {
	    .image_id = d->o.image,
	    .instance_type = itype,
	    .subnet_id = d->o.subnet ? d->o.subnet : d->cfg.drill_subnet,
	    .security_group_id =
	        d->o.security_group ? d->o.security_group : d->cfg.drill_security_group,
	    .key_name = d->o.key_name ? d->o.key_name : d->cfg.drill_key_name,
	    .client_token = token,
	    .drill_id = d->rep.drill_id,
	};
	double t = vf_now_ms(), t0;
	bool running = false;
	size_t i, n = 0;

	err_clear(&err);
	img.n = 0;
	if (take_lock(d, &err) < 0) {
		vf_set_error(&d->rep, VF_REFUSED, "%s", err.msg);
		return;
	}
	printf("drill %s: launching %s (%s)\n", d->rep.drill_id, d->o.image, itype);
	if (rs_aws_ready(d->r->aws, false, &err) < 0) {
		vf_set_error(&d->rep, VF_ERROR, "%s", err.msg);
		return;
	}
	req.drill_instance = rs_aws_instance_id(d->r->aws);
	if (rs_describe_image(d->r->aws, d->o.image, &img, &err) < 0) {
		vf_set_error(&d->rep,
		             strncmp(err.code, "InvalidAMIID.", 13) == 0 ? VF_REFUSED : VF_ERROR,
		             "%s", err.msg);
		return;
	}
	phase(d, "select", &t);
	snprintf(token, sizeof(token), "%s", d->rep.drill_id);
	t0 = vf_now_ms();
	if (rs_run_instance(d->r->aws, &req, iid, sizeof(iid), &err) < 0) {
		vf_add_check(&d->rep, "launch", false, vf_now_ms() - t0, "%s", err.msg);
		vf_set_error(&d->rep, VF_FAILED, "RunInstances: %s", err.msg);
		goto out;
	}
	snprintf(d->rep.instance_id, sizeof(d->rep.instance_id), "%s", iid);
	vf_add_check(&d->rep, "launch", true, vf_now_ms() - t0, "instance %s (%s)", iid, itype);
	printf("launched instance %s\n", iid);
	fflush(stdout);
	phase(d, "launch", &t);
	for (;;) {
		if (rs_instance_status(d->r->aws, iid, &st, &err) < 0) {
			vf_set_error(&d->rep, VF_ERROR, "%s", err.msg);
			goto out;
		}
		if (!running && strcmp(st.state, "running") == 0) {
			running = true;
			vf_add_check(&d->rep, "running", true, vf_now_ms() - t0,
			             "private address %s",
			             st.private_ip[0] ? st.private_ip : "none");
			phase(d, "running", &t);
		}
		if (strcmp(st.state, "shutting-down") == 0 || strcmp(st.state, "terminated") == 0 ||
		    strcmp(st.state, "stopped") == 0) {
			vf_add_check(&d->rep, "running", false, vf_now_ms() - t0,
			             "the instance is %s", st.state);
			break;
		}
		if (running && (strcmp(st.instance_status, "impaired") == 0 ||
		                strcmp(st.system_status, "impaired") == 0)) {
			vf_add_check(&d->rep, "status-checks", false, vf_now_ms() - t0,
			             "instance status %s, system status %s", st.instance_status,
			             st.system_status);
			break;
		}
		if (running && strcmp(st.instance_status, "ok") == 0 &&
		    strcmp(st.system_status, "ok") == 0) {
			vf_add_check(&d->rep, "status-checks", true, vf_now_ms() - t0,
			             "instance and system status ok");
			break;
		}
		if (stopped(d))
			goto out;
		usleep(1000000);
	}
	phase(d, "status", &t);
	if (vf_all_ok(&d->rep) && d->o.tcp_port) {
		char name[32];

		snprintf(name, sizeof(name), "tcp:%ld", d->o.tcp_port);
		t0 = vf_now_ms();
		while (!tcp_connects(st.private_ip, d->o.tcp_port, why, sizeof(why))) {
			if (stopped(d))
				goto out;
			usleep(2000000);
		}
		vf_add_check(&d->rep, name, true, vf_now_ms() - t0, "%s:%ld accepts connections",
		             st.private_ip, d->o.tcp_port);
		phase(d, "tcp", &t);
	}
	if (!vf_all_ok(&d->rep)) {
		const struct vf_check *c = vf_first_failed(&d->rep);

		vf_set_error(&d->rep, VF_FAILED, "check %s failed: %s", c ? c->name : "?",
		             c ? c->detail : "no check ran");
	}
out:
	t = vf_now_ms();
	if (iid[0]) {
		printf("cleaning up drill %s:\n", d->rep.drill_id);
		terminate_instance(d, iid);
		delete_drill_volumes(d);
	}
	phase(d, "terminate", &t);
	ids[n++] = d->o.image;
	for (i = 0; i < img.n && n < RS_MAX_IMAGE_SNAPSHOTS + 1; i++)
		ids[n++] = img.snapshot_ids[i];
	tag_ids(d, ids, n);
}

static void run_drill(struct drill *d)
{
	struct rs_snapshot_list list;
	struct rs_sets sets = {0, NULL};
	struct amis_err err;
	struct strbuf why;
	char(*dbs)[256] = xcalloc(MAX_DBS, 256);
	size_t ndbs = 0;
	double t = vf_now_ms(), t_start;
	long budget = d->o.time_budget_ms >= 0 ? d->o.time_budget_ms : d->cfg.drill_time_budget_ms;
	int rc;

	err_clear(&err);
	sb_init(&why);
	rs_list_init(&list);
	if (make_scratch(d, &err) < 0) {
		vf_set_error(&d->rep, VF_REFUSED, "scratch directory: %s", err.msg);
		goto out;
	}
	d->r->o.root = d->root;
	printf("drill %s in %s\n", d->rep.drill_id, d->scratch);
	if (rs_aws_ready(d->r->aws, true, &err) < 0) {
		vf_set_error(&d->rep, VF_ERROR, "%s", err.msg);
		goto out;
	}

	/* 1. The set, checked as restore checks it. */
	rc = rs_select(d->r, &list, &sets, &d->set, false, &err);
	phase(d, "select", &t);
	if (d->set)
		snprintf(d->rep.request_id, sizeof(d->rep.request_id), "%s", d->set->request_id);
	if (rc) {
		if (stopped(d))
			goto out;
		vf_set_error(&d->rep, rc == RS_EXIT_ERROR ? VF_ERROR : VF_REFUSED,
		             "%s (restore's exit code %d)", err.msg, rc);
		goto out;
	}

	/* 2. Volumes, devices, mounts. */
	rc = rs_materialize(d->r, d->set, &err);
	phase(d, "volumes", &t);
	if (rc) {
		if (stopped(d))
			goto out;
		vf_set_error(&d->rep, rc == RS_EXIT_ASSEMBLE ? VF_REFUSED : VF_ERROR, "%s",
		             rc == RS_EXIT_ASSEMBLE
		                 ? "the set has a filesystem on LVM or md, which "
		                   "a drill cannot assemble"
		                 : err.msg);
		goto out;
	}

	/* 3. The data directory, for crash recovery. */
	rc = rs_prepare(d->r, d->set, &err);
	phase(d, "prepare", &t);
	if (rc) {
		vf_set_error(&d->rep, VF_FAILED, "the data directory: %s", err.msg);
		vf_add_check(&d->rep, "prepare", false, 0, "%s", err.msg);
		goto out;
	}
	if (owner_of(d, &err) < 0 || write_server_files(d, &err) < 0) {
		vf_set_error(&d->rep, VF_ERROR, "%s", err.msg);
		goto out;
	}

	/* 4. The throw-away server: crash recovery. */
	t_start = vf_now_ms();
	rc = start_server(d, &why);
	phase(d, "recovery", &t);
	if (rc == -2 && stopped(d))
		goto out;
	vf_add_check(&d->rep, "recovery", rc == 0, vf_now_ms() - t_start, "%s",
	             rc == 0 ? "PostgreSQL started by crash recovery" : sb_str(&why));
	if (rc)
		goto verdict;

	/* 5. The checks. */
	run_checks(d, budget, dbs, &ndbs);
	phase(d, "checks", &t);
	if (d->rep.error)
		goto out;

	/* 6. The dumps. */
	if (d->o.dump_dir) {
		dumps(d, dbs, ndbs);
		phase(d, "dump", &t);
		if (stopped(d))
			goto out;
	}
verdict:
	if (!vf_all_ok(&d->rep)) {
		const struct vf_check *c = vf_first_failed(&d->rep);

		vf_set_error(&d->rep, VF_FAILED, "check %s failed: %s", c ? c->name : "?",
		             c ? c->detail : "no check ran");
	}
out:
	t = vf_now_ms();
	drill_cleanup(d);
	phase(d, "cleanup", &t);
	tag_result(d); /* passed or failed only */
	rs_sets_free(&sets);
	rs_list_free(&list);
	sb_free(&why);
	free(dbs);
}

int vf_verify_main(int argc, char **argv, const char *default_config)
{
	struct drill *d = xcalloc(1, sizeof(*d));
	struct amis_err err;
	struct sigaction sa;
	enum log_level level;
	long timeout_ms;
	int rc, json_fd = -1;
	unsigned rnd = 0;
	int ufd;

	err_clear(&err);
	config_init(&d->cfg);
	if (parse_opts(argc, argv, default_config, &d->o) < 0) {
		rc = VF_EXIT_USAGE;
		goto out;
	}
	if (config_load_file(&d->cfg, d->o.config, &err) != 0) {
		fprintf(stderr, "ami-snapshot verify: configuration: %s\n", err.msg);
		rc = VF_EXIT_USAGE;
		goto out;
	}
	log_set_ident("ami-snapshot");
	log_set_level(LOG_LVL_WARNING);
	if (log_level_parse(d->cfg.log_level, &level) && level > LOG_LVL_INFO)
		log_set_level(level);
	snprintf(d->drill_dir, sizeof(d->drill_dir), "%s",
	         d->o.drill_dir ? d->o.drill_dir : d->cfg.drill_dir);
	if (chdir("/") < 0) {
		rc = VF_EXIT_ERROR;
		goto out;
	}
	if (d->o.json) {
		/* The steps' lines go to stderr; stdout carries the one JSON object. */
		fflush(stdout);
		json_fd = dup(1);
		dup2(2, 1);
	}
	if (d->o.cleanup) {
		rc = cleanup_main(&d->o, &d->cfg, d->drill_dir);
		goto out;
	}

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGHUP, &sa, NULL);
	sigaction(SIGALRM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	timeout_ms = d->o.timeout_ms > 0 ? d->o.timeout_ms : d->cfg.drill_timeout_ms;
	d->deadline = vf_now_ms() + (double)timeout_ms;
	alarm((unsigned)((timeout_ms + 999) / 1000));

	ufd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
	if (ufd < 0 || read(ufd, &rnd, sizeof(rnd)) != (ssize_t)sizeof(rnd))
		rnd = (unsigned)getpid() ^ (unsigned)time(NULL);
	if (ufd >= 0)
		close(ufd);
	vf_report_init(&d->rep);
	vf_drill_id(time(NULL), rnd, d->rep.drill_id, sizeof(d->rep.drill_id));
	pjoin(d->scratch, sizeof(d->scratch), d->drill_dir, d->rep.drill_id);
	if (d->o.image)
		snprintf(d->rep.image_id, sizeof(d->rep.image_id), "%s", d->o.image);
	d->port = 50000 + (int)(rnd % 10000);
	d->lock_fd = -1;

	d->r = xcalloc(1, sizeof(*d->r));
	d->r->o.config = d->o.config;
	d->r->o.request_id = d->o.request_id;
	d->r->o.name = d->o.name;
	d->r->o.image = d->o.image;
	d->r->o.no_config = true; /* the drill writes its own */
	d->r->o.no_start_hint = true;
	d->r->o.cleanup = true;
	d->r->o.wait = true; /* a scheduled drill waits for pending snapshots */
	d->r->o.wait_timeout_s = timeout_ms / 1000;
	d->r->o.device_timeout_s = d->o.device_timeout_s;
	d->r->o.device_dir = d->o.device_dir;
	d->r->o.pg_bindir = d->o.pg_bindir;
	d->r->o.mountinfo = "/proc/self/mountinfo";
	d->r->o.drill_id = d->rep.drill_id;
	d->r->o.should_stop = should_stop;
	d->r->aws = rs_aws_new(&d->cfg);

	if (d->o.launch)
		run_ami_drill(d);
	else
		run_drill(d);

	if (json_fd >= 0) {
		struct strbuf sb;

		sb_init(&sb);
		vf_report_json(&d->rep, &sb);
		if (write(json_fd, sb.data, sb.len) < 0)
			rc = VF_EXIT_ERROR;
		sb_free(&sb);
	} else {
		vf_report_print(&d->rep, stdout);
	}
	rc = vf_outcome_exit(d->rep.outcome);
	if (rc == VF_EXIT_PASSED && d->rep.left)
		rc = VF_EXIT_ERROR;
	rs_aws_free(d->r->aws);
	free(d->r);
	vf_report_free(&d->rep);
	if (d->lock_fd >= 0)
		close(d->lock_fd);
out:
	if (json_fd >= 0)
		close(json_fd);
	config_free(&d->cfg);
	free(d);
	return rc;
}
