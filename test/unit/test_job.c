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

/* The automatic steps for a backup named name, one argv a line ("kind: args after the head"). */
static const char *auto_steps(const struct helper_config *cfg, const char *name, const char *sysid)
{
	char **steps[16];
	char kinds[16][17];
	struct amis_err err;
	int n, i, a;

	err_clear(&err);
	n = job_auto_steps(cfg, "/etc/h.conf", "/usr/sbin/ami-snapshot", "r-1", name, sysid, steps,
	                   kinds, 16, &err);
	if (n < 0) {
		snprintf(joined, sizeof(joined), "ERR %s", err.msg);
		return joined;
	}
	joined[0] = '\0';
	for (i = 0; i < n; i++) {
		snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined),
		         "%s%s:", i ? "\n" : "", kinds[i]);
		/* argv[1] is the kind; the head (command, kind, --config, --json) left out */
		for (a = 4; steps[i][a]; a++)
			snprintf(joined + strlen(joined), sizeof(joined) - strlen(joined), " %s",
			         steps[i][a]);
	}
	job_auto_steps_free(steps, (size_t)n);
	return joined;
}

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
	ok(strstr(RUN(&c, "frobnicate", "name", "nightly"), "ERR InvalidRequest: unknown job kind"),
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

	/* The lifecycle kinds (doc/lifecycle.md): the ID last, after "--". */
	is_str(RUN(&c, "wait", "id", "r-night-1", "system_id", "7000000000000000001", "timeout",
	           "600", "interval", "2"),
	       "/usr/sbin/ami-snapshot|wait|--config=/etc/ami-snapshot/helper.conf|--json|"
	       "--system-id=7000000000000000001|--timeout=600|--interval=2|--|r-night-1",
	       "wait: the cluster, the options, then -- and the ID");
	is_str(RUN(&c, "prune", "system_id", "7", "policy", "nightly:last=7,daily=14", "policy",
	           "weekly-*:within=30d", "dry_run", "true"),
	       "/usr/sbin/ami-snapshot|prune|--config=/etc/ami-snapshot/helper.conf|--json|"
	       "--system-id=7|--policy=nightly:last=7,daily=14|--policy=weekly-*:within=30d|"
	       "--dry-run",
	       "prune: policies and a dry run");
	is_str(RUN(&c, "prune", "system_id", "7", "dry_run", "false"),
	       "/usr/sbin/ami-snapshot|prune|--config=/etc/ami-snapshot/helper.conf|--json|"
	       "--system-id=7",
	       "prune: dry_run false adds nothing (the configuration's policies)");
	is_str(RUN(&c, "copy", "id", "ami-0123456789abcdef0", "system_id", "7", "to_region",
	           "eu-west-1", "kms_key_id", "alias/dr", "share", "210987654321"),
	       "/usr/sbin/ami-snapshot|copy|--config=/etc/ami-snapshot/helper.conf|--json|"
	       "--system-id=7|--to-region=eu-west-1|--kms-key-id=alias/dr|--share=210987654321|"
	       "--|ami-0123456789abcdef0",
	       "copy");
	is_str(RUN(&c, "lock", "id", "snap-0123456789abcdef0", "system_id", "7", "mode",
	           "compliance", "days", "30", "cool_off_hours", "24", "region", "eu-west-1"),
	       "/usr/sbin/ami-snapshot|lock|--config=/etc/ami-snapshot/helper.conf|--json|"
	       "--system-id=7|--mode=compliance|--days=30|--cool-off-hours=24|--region=eu-west-1|"
	       "--|snap-0123456789abcdef0",
	       "lock, in another region");
	is_str(RUN(&c, "list", "system_id", "7", "name", "nightly"),
	       "/usr/sbin/ami-snapshot|list|--config=/etc/ami-snapshot/helper.conf|--json|"
	       "--system-id=7|--name=nightly",
	       "list");
	ok(strstr(RUN(&c, "list", "name", "nightly"), "needs system_id"),
	   "a lifecycle job without the cluster's identifier");
	ok(strstr(RUN(&c, "wait", "system_id", "7"), "needs id"), "wait without an id");
	ok(strstr(RUN(&c, "copy", "system_id", "7", "id", "r-1"), "needs to_region"),
	   "copy without a region");
	ok(strstr(RUN(&c, "wait", "system_id", "7", "id", "--all"), "invalid value"),
	   "an id that is an option");
	ok(strstr(RUN(&c, "wait", "system_id", "7x", "id", "r-1"), "invalid value"),
	   "a system identifier that is not decimal");
	ok(strstr(RUN(&c, "copy", "system_id", "7", "id", "r-1", "to_region", "../x"),
	          "invalid value"),
	   "a region that is not one");
	ok(strstr(RUN(&c, "prune", "system_id", "7", "policy", "a:last=1\n--all"), "invalid value"),
	   "a policy with a newline (a control character)");
	ok(strstr(RUN(&c, "prune", "system_id", "7", "policy", "-x"), "invalid value"),
	   "a policy that looks like an option");
	ok(strstr(RUN(&c, "copy", "system_id", "7", "id", "r-1", "to_region", "eu-west-1", "share",
	              "12345"),
	          "invalid value"),
	   "an account id that is not 12 digits");
	ok(strstr(RUN(&c, "copy", "system_id", "7", "id", "r-1", "to_region", "eu-west-1",
	              "kms_key_id", "-k"),
	          "invalid value"),
	   "a KMS key that looks like an option");
	ok(strstr(RUN(&c, "lock", "system_id", "7", "id", "r-1", "mode", "frozen", "days", "1"),
	          "invalid value"),
	   "a lock mode EC2 does not know");
	ok(strstr(RUN(&c, "lock", "system_id", "7", "id", "r-1", "mode", "governance"),
	          "needs days or until"),
	   "a lock mode without a duration");
	ok(strstr(
	       RUN(&c, "lock", "system_id", "7", "id", "r-1", "days", "1", "until", "2027-01-01"),
	       "not both"),
	   "days and until");
	ok(strstr(RUN(&c, "lock", "system_id", "7", "id", "r-1", "days", "36501"),
	          "from 1 to 36500"),
	   "a lock over 100 years");
	ok(strstr(RUN(&c, "wait", "system_id", "7", "id", "r-1", "check_sql", "x"),
	          "unknown argument \"check_sql\" for a wait job"),
	   "a verify argument in a wait job");
	ok(strstr(RUN(&c, "verify", "name", "nightly", "system_id", "7"),
	          "unknown argument \"system_id\" for a verify job"),
	   "a lifecycle argument in a verify job");
	ok(job_kind_is_lifecycle("prune") && !job_kind_is_lifecycle("verify") &&
	       !job_kind_is_lifecycle("frobnicate"),
	   "lifecycle kinds");

	/* The automatic lock and copy after a backup ([lock], [copy]). */
	config_free(&c);
	config_init(&c);
	is_str(auto_steps(&c, "nightly", "7"), "", "no [lock] mode, no [copy] regions: nothing");
	ok(config_load_string(&c,
	                      "[copy]\nregions = eu-central-1, us-west-2\nkms_key_id = alias/dr\n"
	                      "share_accounts = 210987654321\nnames = nightly*\n"
	                      "[lock]\nmode = governance\ndays = 7\nnames = *\n",
	                      &err) == 0,
	   "[copy] in two regions for nightly*, [lock] for every name");
	is_str(auto_steps(&c, "nightly-1", "7"),
	       "lock: --system-id=7 -- r-1\n"
	       "wait: --system-id=7 --timeout=86400 --interval=10 -- r-1\n"
	       "copy: --system-id=7 --to-region=eu-central-1 --kms-key-id=alias/dr "
	       "--share=210987654321 -- r-1\n"
	       "lock: --system-id=7 --region=eu-central-1 -- r-1\n"
	       "copy: --system-id=7 --to-region=us-west-2 --kms-key-id=alias/dr "
	       "--share=210987654321 -- r-1\n"
	       "lock: --system-id=7 --region=us-west-2 -- r-1",
	       "a matching name: lock, wait, then per region copy and lock the copy");
	is_str(auto_steps(&c, "weekly", "7"), "lock: --system-id=7 -- r-1",
	       "a name [copy] does not match: only the lock");
	ok(strstr(auto_steps(&c, "nightly-1", ""), "no system identifier") != NULL,
	   "no system identifier: nothing, with the reason");
	config_free(&c);
	config_init(&c);
	ok(config_load_string(&c, "[copy]\nregions = eu-central-1\n", &err) == 0, "[copy] alone");
	is_str(auto_steps(&c, "anything", "7"),
	       "wait: --system-id=7 --timeout=86400 --interval=10 -- r-1\n"
	       "copy: --system-id=7 --to-region=eu-central-1 -- r-1",
	       "copy every name (names defaults to *), no lock");
	config_free(&c);

	/* Outcomes (doc/verify.md, "Exit codes"). */
	is_str(job_outcome("verify", false, 0), "passed", "exit 0: passed");
	is_str(job_outcome("verify", false, 4), "failed", "exit 4: failed");
	is_str(job_outcome("verify", false, 5), "timed_out", "exit 5: timed_out");
	is_str(job_outcome("verify", false, 6), "interrupted", "exit 6: interrupted");
	is_str(job_outcome("verify", false, 127), "error", "exit 127 (not started): error");
	is_str(job_outcome("verify", true, 9), "killed", "a signal: killed");
	/* doc/lifecycle.md, "Exit codes". */
	is_str(job_outcome("wait", false, 0), "done", "wait exit 0: done");
	is_str(job_outcome("wait", false, 5), "failed", "wait exit 5: failed");
	is_str(job_outcome("wait", false, 6), "timed_out", "wait exit 6: timed_out");
	is_str(job_outcome("prune", false, 7), "partial", "prune exit 7: partial");
	is_str(job_outcome("copy", false, 4), "not_this_cluster", "copy exit 4");
	is_str(job_outcome("lock", false, 3), "not_found", "lock exit 3");
	return done_testing();
}
