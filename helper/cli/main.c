/*
 * main.c - ami-snapshot: the administrator's command (root, one-shot).
 *
 *	ami-snapshot [-c CONFIG] restore [OPTIONS]   (-c also after the command)
 *	ami-snapshot [-c CONFIG] verify [OPTIONS]
 *	ami-snapshot [-c CONFIG] list|show|wait|prune|copy|lock|unlock|share [OPTIONS]
 *
 * One program with subcommands: restore (doc/restore.md), verify
 * (doc/verify.md), and a backup's life after it was taken
 * (doc/lifecycle.md); status and check later.  It reads the [aws] section of the helper's
 * configuration for the endpoints, region and credentials.
 */
#include "lifecycle.h"
#include "restore.h"
#include "verify.h"
#include "preflight.h"

#include <stdio.h>
#include <string.h>

#ifndef AMIS_DEFAULT_CONFIG
#define AMIS_DEFAULT_CONFIG "/etc/ami-snapshot/helper.conf"
#endif

struct subcommand {
	const char *name;
	int (*main)(int argc, char **argv, const char *default_config);
	const char *what;
};

static const struct subcommand subcommands[] = {
    {"restore", rs_restore_main, "restore a snapshot set or an AMI onto this instance"},
    {"verify", vf_verify_main, "a restore drill: restore, start, check, dump, remove"},
    {"status", lc_status_main, "the helper now, and the newest calls (PostgreSQL, else EC2)"},
    {"list", lc_list_main, "this cluster's backups: state, age, size, copies, locks"},
    {"show", lc_show_main, "one backup in detail"},
    {"wait", lc_wait_main, "follow a backup's snapshots and image until completed"},
    {"prune", lc_prune_main, "delete what the retention policy does not keep"},
    {"copy", lc_copy_main, "copy a backup to another region"},
    {"lock", lc_lock_main, "lock a backup's snapshots (governance or compliance)"},
    {"unlock", lc_unlock_main, "unlock a backup's snapshots"},
    {"share", lc_share_main, "share a backup with another account, or stop"},
    {"check", ck_check_main, "preflight: would a snapshot work? (nothing is frozen or made)"},
};

static void usage(FILE *f)
{
	size_t i;

	fprintf(f,
	        "usage: ami-snapshot [-c FILE] COMMAND [OPTIONS]   (ami-snapshot COMMAND --help)\n"
	        "  -c, --config FILE   the helper's configuration, for its [aws] section\n"
	        "                      (default " AMIS_DEFAULT_CONFIG ")\n"
	        "commands:\n");
	for (i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++)
		fprintf(f, "  %-10s %s\n", subcommands[i].name, subcommands[i].what);
}

int main(int argc, char **argv)
{
	const char *config = AMIS_DEFAULT_CONFIG;
	size_t i;

	/* "-c FILE" (or --config FILE) before the command: its default configuration. */
	if (argc >= 3 && (strcmp(argv[1], "-c") == 0 || strcmp(argv[1], "--config") == 0)) {
		config = argv[2];
		argc -= 2;
		argv += 2;
	}
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	if (strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(stdout);
		return 0;
	}
	for (i = 0; i < sizeof(subcommands) / sizeof(subcommands[0]); i++) {
		if (strcmp(argv[1], subcommands[i].name) == 0)
			return subcommands[i].main(argc - 1, argv + 1, config);
	}
	fprintf(stderr, "ami-snapshot: unknown command \"%s\"\n", argv[1]);
	usage(stderr);
	return 2;
}
