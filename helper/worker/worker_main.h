/*
 * worker_main.h - the EC2 worker process (see root/worker_client.h for the
 * design of the privilege split and the channel).
 */
#ifndef AMIS_WORKER_MAIN_H
#define AMIS_WORKER_MAIN_H

/* The worker process: `ami-snapshot-helper --worker -c CONFIG`.  Returns the exit status. */
int worker_main(const char *config_path);

/*
 * Becomes user for good (groups, gid, uid; no way back; no new privileges,
 * not dumpable).  Also used by `ami-snapshot`'s network-only subcommands
 * once they have read what needs root (cli/lifecycle.c).
 */
struct amis_err;
int worker_drop_privileges(const char *user, struct amis_err *err);

#endif
