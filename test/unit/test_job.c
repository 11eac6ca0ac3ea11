/*
 * test_job.c - a JOB's kind and arguments -> the command's argv
 * (root/job_args.c): the whitelist, the value checks, what the
 * configuration adds, and the outcomes of exit statuses.
 */
#include "config.h"
#include "job.h"
#include "tap.h"

#include <stdio.h>
#include <string.h>

static char joined[16384];

/* The argv of a verify job, joined with '|', or "ERR: message". */
static const char *run(const struct helper_config *cfg, const char *kind, size_t n,
                       const char *const *kv)
{
	const char *keys[64], *values[64];
	char *argv[JOB_MAX_ARGV];
	struct amis_err err;
	size_t i;
	int argc;

	for (i = 0; i < n; i++) {
		keys[i] = kv[2 * i];
		values[i] = kv[2 * i + 1];
	}
	err_clear(&err);
	argc = job_argv(cfg, "/etc/ami-snapshot/helper.conf", "/usr/sbin/ami-snapshot", kind, keys,
	                values, n, argv, &err);
	if (argc < 0) {
		snprintf(joined, sizeof(joined), "ERR %s: %s", err.code, err.msg);
		return joined;
	}
	joined[0] = '\0';
	for (i = 0; i < (size_t)argc; i++)
		snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), "%s%s",
		         i ? "|" : "", argv[i]);
	ok(argv[argc] == NULL, "argv ends with NULL");
	job_argv_free(argv);
	return joined;
}

#define RUN(cfg, kind, ...)                                                                        \
	run(cfg, kind, sizeof((const char *[]){__VA_ARGS__}) / sizeof(char *) / 2,                 \
	    (const char *const[]){__VA_ARGS__})

int main(void)
{
	struct helper_config c;
	struct amis_err err;
	char *argv[JOB_MAX_ARGV];
	char big[AMSP_JOB_MAX_ARG_LEN + 2];

	config_init(&c);
	is_str(RUN(&c, "verify", "request_id", "7d190fce-4a2b"),
	       "/usr/sbin/ami-snapshot|verify|--config=/etc/ami-snapshot/helper.conf|--json|"
	       "--request-id=7d190fce-4a2b",
	       "a request id: the fixed head, then --request-id=");
	is_str(RUN(&c, "verify", "name", "nightly", "time_budget", "0", "timeout", "600",
	           "check_sql", "-c 'SELECT true'", "check_db", "app db"),
	       "/usr/sbin/ami-snapshot|verify|--config=/etc/ami-snapshot/helper.conf|--json|"
	       "--name=nightly|--time-budget=0|--timeout=600|--check-sql=-c 'SELECT true'|"
	       "--check-db=app db",
	       "options as --option=value: a value starting with - stays a value");
	is_str(RUN(&c, "verify", "image", "ami-0123456789abcdef0", "launch", "true", "tcp_port",
	           "5432"),
	       "/usr/sbin/ami-snapshot|verify|--config=/etc/ami-snapshot/helper.conf|--json|"
	       "--image=ami-0123456789abcdef0|--launch|--tcp-port=5432",
	       "the AMI drill");
	is_str(RUN(&c, "verify", "image", "ami-12345678", "launch", "false"),
	       "/usr/sbin/ami-snapshot|verify|--config=/etc/ami-snapshot/helper.conf|--json|"
	       "--image=ami-12345678",
	       "launch false adds nothing");

	/* Refusals. */
	ok(strstr(RUN(&c, "wait", "name", "nightly"), "ERR InvalidRequest: unknown job kind"),
	   "an unknown kind");
	ok(strstr(RUN(&c, "v\nerify", "name", "nightly"), "unknown job kind \"?\""),
	   "a kind with a control character is not echoed");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "x\ny", "1"), "unknown argument \"?\""),
	   "an argument name with a control character is not echoed");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "drill_dir", "/tmp"),
	          "unknown argument \"drill_dir\""),
	   "no path from a client: drill_dir");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "config", "/tmp/x"),
	          "unknown argument \"config\""),
	   "no path from a client: config");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "dump_dir", "/tmp"), "unknown argument"),
	   "no path from a client: dump_dir");
	ok(strstr(RUN(&c, "verify", "time_budget", "5"), "exactly one of"), "no selector");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "request_id", "abc"), "exactly one of"),
	   "two selectors");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "name", "other"), "given too often"),
	   "a repeated argument");
	ok(strstr(RUN(&c, "verify", "name", "x"), "invalid value"), "a name too short");
	ok(strstr(RUN(&c, "verify", "name", "a/b;rm -rf /*"), "invalid value"),
	   "a name with characters outside the AMI-name rules");
	ok(strstr(RUN(&c, "verify", "request_id", "../../etc"), "invalid value"),
	   "a request id with a path");
	ok(strstr(RUN(&c, "verify", "image", "ami-XYZ"), "invalid value"), "a bad image id");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "time_budget", "-1"), "from 0 to 86400"),
	   "a negative budget");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "timeout", "0"), "from 1 to 86400"),
	   "a zero timeout");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "timeout", "1e3"), "from 1 to 86400"),
	   "a timeout that is not decimal");
	ok(strstr(RUN(&c, "verify", "image", "ami-12345678", "tcp_port", "70000"),
	          "from 1 to 65535"),
	   "a port out of range");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "launch", "yes"), "invalid value"),
	   "a boolean is true or false");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "check_db", "a\nb"), "invalid value"),
	   "a database name with a control character");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "check_sql", ""), "invalid value"),
	   "an empty check");
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	ok(strstr(RUN(&c, "verify", "name", "nightly", "check_sql", big), "invalid value"),
	   "a check over its bound");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "dump_db", "app"), "go with dump"),
	   "dump_db without dump");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "dump", "true"), "no [drill] dump_dir"),
	   "dump without [drill] dump_dir in the configuration");

	/* What the configuration adds. */
	ok(config_load_string(&c,
	                      "[drill]\ndevice_dir = /dev/test-by-id\ndevice_timeout = 30s\n"
	                      "dump_dir = /var/backups/pg\nmax_jobs = 2\nkill_grace = 5s\n"
	                      "command = /opt/ami-snapshot\n",
	                      &err) == 0,
	   "[drill] device_dir, device_timeout, dump_dir, max_jobs, kill_grace, command");
	is_int(c.max_jobs, 2, "max_jobs 2");
	is_int(c.job_kill_grace_ms, 5000, "kill_grace 5 s");
	is_str(c.drill_command, "/opt/ami-snapshot", "command");
	is_str(RUN(&c, "verify", "name", "nightly", "dump", "true", "dump_db", "app",
	           "dump_globals", "true"),
	       "/usr/sbin/ami-snapshot|verify|--config=/etc/ami-snapshot/helper.conf|--json|"
	       "--device-dir=/dev/test-by-id|--device-timeout=30|--dump-dir=/var/backups/pg|"
	       "--name=nightly|--dump-db=app|--dump-globals",
	       "dumps into the configuration's dump_dir; its device directory and timeout");
	job_cleanup_argv(&c, "/etc/h.conf", "/usr/sbin/ami-snapshot", argv);
	is_str(argv[4], "--device-dir=/dev/test-by-id", "the cleanup: the device directory");
	is_str(argv[6], "--cleanup", "the cleanup: --cleanup");
	ok(argv[7] == NULL, "the cleanup: nothing else");
	job_argv_free(argv);
	config_free(&c);
	config_init(&c);
	err_clear(&err);
	ok(config_load_string(&c, "[drill]\nmax_jobs = 0\n", &err) != 0, "max_jobs 0 refused");
	config_free(&c);
	config_init(&c);
	ok(config_load_string(&c, "[drill]\ndump_dir = relative\n", &err) != 0,
	   "a relative dump_dir refused");
	config_free(&c);

	/* Outcomes (doc/verify.md, "Exit codes"). */
	is_str(job_outcome("verify", false, 0), "passed", "exit 0: passed");
	is_str(job_outcome("verify", false, 4), "failed", "exit 4: failed");
	is_str(job_outcome("verify", false, 5), "timed_out", "exit 5: timed_out");
	is_str(job_outcome("verify", false, 6), "interrupted", "exit 6: interrupted");
	is_str(job_outcome("verify", false, 127), "error", "exit 127 (not started): error");
	is_str(job_outcome("verify", true, 9), "killed", "a signal: killed");
	return done_testing();
}
