/*
 * main.c - ami-snapshot-helper: the privileged helper daemon.
 *
 *	ami-snapshot-helper [-c CONFIG] [--check-config | --recover-only]
 *	ami-snapshot-helper [-c CONFIG] --status | --thaw
 *
 * (--worker is how the helper starts its unprivileged EC2 worker; see root/worker_client.h.)
 * Runs in the foreground (systemd Type=simple), logs to stderr.
 */
#include "config.h"
#include "log.h"
#include "marker.h"
#include "operation.h"
#include "server.h"
#include "volumes.h"
#include "worker_client.h"
#include "worker_main.h"

#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* The Makefile sets it to $(helper_confdir)/helper.conf, as in the systemd unit. */
#ifndef AMIS_DEFAULT_CONFIG
#define AMIS_DEFAULT_CONFIG "/etc/ami-snapshot/helper.conf"
#endif
#define DEFAULT_CONFIG AMIS_DEFAULT_CONFIG
/* How long a shutdown keeps retrying a failed thaw (systemd waits 90 s). */
#define SHUTDOWN_THAW_MS 10000
/* How long a shutdown waits for its jobs' own cleanup after SIGTERM, at most. */
#define SHUTDOWN_JOBS_MS 30000

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig)
{
	(void)sig;
	stop_requested = 1;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ami-snapshot-helper [-c CONFIG] [--check-config | --recover-only |\n"
	           "                                          --status | --thaw]\n"
	           "  -c, --config FILE   configuration file (default " DEFAULT_CONFIG ")\n"
	           "      --check-config  load the configuration, report problems, exit\n"
	           "      --recover-only  thaw what a frozen marker lists, then exit: 0 if\n"
	           "                      nothing is left, 1 if the marker is kept\n"
	           "      --status        ask the running helper what it is doing\n"
	           "      --thaw          ask the running helper to thaw now, abandoning the\n"
	           "                      snapshot it is taking (exit 0 once nothing is frozen)\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
	    {"config", required_argument, NULL, 'c'}, {"check-config", no_argument, NULL, 'k'},
	    {"recover-only", no_argument, NULL, 'r'}, {"status", no_argument, NULL, 's'},
	    {"thaw", no_argument, NULL, 't'},         {"worker", no_argument, NULL, 'w'},
	    {"help", no_argument, NULL, 'h'},         {NULL, 0, NULL, 0}};
	const char *config_path = DEFAULT_CONFIG;
	struct helper_config cfg;
	struct sigaction sa;
	struct amis_err err;
	enum log_level level;
	struct helper *h;
	struct server_handlers handlers;
	bool check_only = false, recover_only = false, worker = false;
	int ask = 0; /* AMSP_STATUS or AMSP_THAW */
	int opt, lfd, rc;

	while ((opt = getopt_long(argc, argv, "c:h", longopts, NULL)) != -1) {
		switch (opt) {
		case 'c':
			config_path = optarg;
			break;
		case 'k':
			check_only = true;
			break;
		case 'r':
			recover_only = true;
			break;
		case 's':
			ask = AMSP_STATUS;
			break;
		case 't':
			ask = AMSP_THAW;
			break;
		case 'w':
			worker = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}

	if (worker)
		return worker_main(config_path);
	config_init(&cfg);
	if (config_load_file(&cfg, config_path, &err) != 0) {
		log_error("configuration: %s", err.msg);
		return 1;
	}
	if (log_level_parse(cfg.log_level, &level))
		log_set_level(level);
	if (cfg.n_allowed_uids == 0) {
		log_error("configuration: [helper] allowed_users is empty; nobody could connect");
		return 1;
	}
	if (cfg.n_allow == 0) {
		log_error("configuration: [filesystems] allow is empty; nothing may be frozen");
		return 1;
	}
	if (check_only) {
		printf("configuration %s is valid\n", config_path);
		config_free(&cfg);
		return 0;
	}
	if (ask) {
		rc = server_ask(&cfg, ask);
		config_free(&cfg);
		return rc;
	}
	if (recover_only) {
		/* ExecStopPost: whatever a killed helper left frozen. */
		rc = marker_recover(&volumes_sys_paths_default, cfg.state_dir);
		config_free(&cfg);
		return rc ? 1 : 0;
	}
	if (geteuid() != 0)
		log_warn("not running as root: freezing filesystems will fail");

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigemptyset(&sa.sa_mask);
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	signal(SIGHUP, SIG_IGN);

	/*
	 * A helper that died while frozen: thaw what it left, before serving.
	 * If that fails the marker is kept and nothing is served (systemd
	 * restarts the helper, and recovery runs again).
	 */
	if (marker_recover(&volumes_sys_paths_default, cfg.state_dir) != 0) {
		log_error("the frozen marker in %s could not be fully recovered: not serving",
		          cfg.state_dir);
		config_free(&cfg);
		return 1;
	}

	if (server_listen(&cfg, &lfd, &err) != 0) {
		log_error("%s", err.msg);
		return 1;
	}
	h = helper_new(&cfg, config_path, &stop_requested);
	log_info("ami-snapshot-helper listening on %s", cfg.socket_path);
	op_server_handlers(h, &handlers);
	/* Not waited for: the first tick starts it (doc/verify.md, the cleanup contract). */
	op_start_cleanup(h);
	server_run(&handlers, lfd, &stop_requested);
	close(lfd);
	unlink(cfg.socket_path);
	/* Never exit with anything frozen by us, if it can be helped. */
	rc = op_shutdown(h, SHUTDOWN_THAW_MS);
	op_stop_jobs(h, cfg.job_kill_grace_ms < SHUTDOWN_JOBS_MS ? cfg.job_kill_grace_ms
	                                                         : SHUTDOWN_JOBS_MS);
	helper_free(h);
	config_free(&cfg);
	log_info("ami-snapshot-helper stopped%s", rc ? " with filesystems still frozen" : "");
	return rc ? 1 : 0;
}
