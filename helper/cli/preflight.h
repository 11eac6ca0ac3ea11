/*
 * preflight.h - `ami-snapshot check`: the preflight check from the command
 * line (doc/operations.md, "Preflight check"), a client of the running
 * helper's CHECK (doc/protocol.md, "Check").
 */
#ifndef AMIS_CLI_CHECK_H
#define AMIS_CLI_CHECK_H

/* Exit codes (doc/operations.md, "Preflight check"). */
enum ck_exit {
	CK_EXIT_OK = 0,     /* every check ok (or skipped) */
	CK_EXIT_FAILED = 1, /* some check failed: the rows say which and what to do */
	CK_EXIT_USAGE = 2,  /* bad options */
	CK_EXIT_NO_HELPER =
	    3, /* the helper could not be asked: not running, refused, too old, busy */
};

int ck_check_main(int argc, char **argv, const char *default_config);

#endif
