/*
 * test_config.c - the helper's configuration file.
 */
#include "config.h"
#include "tap.h"

#include <stdio.h>
#include <string.h>

static int load(struct helper_config *c, const char *text, struct amis_err *err)
{
	config_free(c);
	config_init(c);
	err_clear(err);
	return config_load_string(c, text, err);
}

/* [retention], [copy], [lock] (doc/lifecycle.md). */
static void test_lifecycle(struct helper_config *c)
{
	struct amis_err err;

	ok(c->n_retention_policies == 0 && c->n_copy_regions == 0 && !c->lock_mode,
	   "no retention, copies or locks unless configured");
	ok(load(c,
	        "[retention]\n"
	        "policy = nightly-*:last=7,daily=14,weekly=8,monthly=12\n"
	        "policy = *:within=30d\n"
	        "[copy]\n"
	        "regions = eu-central-1, us-west-2\n"
	        "regions = us-gov-west-1\n"
	        "kms_key_id = arn:aws:kms:eu-central-1:123456789012:key/abcd\n"
	        "share_accounts = 123456789012 210987654321\n"
	        "names = nightly-*\n"
	        "[lock]\n"
	        "mode = compliance\n"
	        "days = 30\n"
	        "cool_off_hours = 24\n"
	        "names = weekly\n",
	        &err) == 0,
	   "[retention], [copy] and [lock] load (%s)", err.msg);
	is_int(c->n_retention_policies, 2, "two policies, in order");
	is_str(c->retention_policies[0], "nightly-*:last=7,daily=14,weekly=8,monthly=12",
	       "a policy is kept as written");
	is_int(c->n_copy_regions, 3, "three regions from a list and a repeated key");
	is_str(c->copy_regions[2], "us-gov-west-1", "third region");
	is_str(c->copy_kms_key_id, "arn:aws:kms:eu-central-1:123456789012:key/abcd", "kms key");
	is_int(c->n_copy_share_accounts, 2, "two accounts");
	is_str(c->copy_names, "nightly-*", "copy names");
	is_str(c->lock_mode, "compliance", "lock mode");
	is_int(c->lock_days, 30, "lock days");
	is_int(c->lock_cool_off_hours, 24, "cool-off hours");
	is_str(c->lock_names, "weekly", "lock names");

	ok(load(c, "[retention]\npolicy = nightly\n", &err) < 0 && strstr(err.msg, "PATTERN:RULE"),
	   "a policy without rules is refused (%s)", err.msg);
	ok(load(c, "[retention]\npolicy = x:last=0\n", &err) < 0 && strstr(err.msg, "line 2"),
	   "last=0 is refused, naming the line (%s)", err.msg);
	ok(load(c, "[retention]\npolicy = x:grace=1h\n", &err) < 0 &&
	       strstr(err.msg, "keeps nothing"),
	   "a policy that keeps nothing is refused (%s)", err.msg);
	ok(load(c, "[copy]\nregions = Europe\n", &err) < 0 && strstr(err.msg, "region"),
	   "a bad region is refused (%s)", err.msg);
	ok(load(c, "[copy]\nshare_accounts = 1234\n", &err) < 0 && strstr(err.msg, "12-digit"),
	   "a bad account is refused (%s)", err.msg);
	ok(load(c, "[lock]\nmode = forever\ndays = 1\n", &err) < 0,
	   "an unknown lock mode is refused (%s)", err.msg);
	ok(load(c, "[lock]\nmode = governance\n", &err) < 0 && strstr(err.msg, "needs days"),
	   "a lock mode without days is refused (%s)", err.msg);
	ok(load(c, "[lock]\nmode = governance\ndays = 7\ncool_off_hours = 2\n", &err) < 0 &&
	       strstr(err.msg, "compliance only"),
	   "a cool-off with governance is refused (%s)", err.msg);
	ok(load(c, "[lock]\nmode = compliance\ndays = 36501\n", &err) < 0,
	   "more than 36500 days is refused (%s)", err.msg);
	ok(load(c, "[lock]\nmode = compliance\ndays = 7\ncool_off_hours = 73\n", &err) < 0,
	   "a cool-off over 72 h is refused (%s)", err.msg);
	ok(config_region_valid("ap-southeast-2") && config_region_valid("cn-north-1") &&
	       !config_region_valid("eu-west") && !config_region_valid("EU-WEST-1") &&
	       !config_region_valid("eu--west-1") && !config_region_valid(""),
	   "region names");
}

int main(void)
{
	struct helper_config c;
	struct amis_err err;

	config_init(&c);
	is_str(c.socket_path, "/run/ami-snapshot/helper.sock", "default socket");
	is_int(c.freeze_timeout_ms, 10000, "default freeze_timeout 10 s");
	ok(c.preflight_dry_run, "preflight on by default");
	is_str(c.state_dir, "/run/ami-snapshot", "default state_dir");
	is_int(c.retries, 2, "default retries 2");
	is_int(c.retry_backoff_ms, 1000, "default retry_backoff 1 s");
	is_str(c.worker_user, "nobody", "default worker_user nobody");

	ok(load(&c, "[helper]\nworker_user = daemon\n", &err) == 0, "worker_user daemon (%s)",
	   err.msg);
	is_str(c.worker_user, "daemon", "worker_user set");
	ok(load(&c, "[helper]\nworker_user = root\n", &err) < 0 &&
	       strstr(err.msg, "must not be root"),
	   "worker_user root is refused (%s)", err.msg);
	ok(load(&c, "[helper]\nallowed_users = daemon\nworker_user = daemon\n", &err) < 0 &&
	       strstr(err.msg, "is in allowed_users"),
	   "worker_user in allowed_users is refused (%s)", err.msg);
	ok(load(&c, "[helper]\nworker_user = daemon\nsocket_group = daemon\n", &err) < 0 &&
	       strstr(err.msg, "socket_group"),
	   "worker_user in socket_group is refused (%s)", err.msg);
	ok(load(&c, "[helper]\nworker_user = no-such-user-here\n", &err) < 0 &&
	       strstr(err.msg, "no such user"),
	   "an unknown worker_user is refused (%s)", err.msg);

	ok(load(&c,
	        "[helper]\n"
	        "socket = /run/x/h.sock\n"
	        "allowed_users = root, 70\n"
	        "freeze_timeout = 2500ms\n"
	        "client_timeout = 2min\n"
	        "[filesystems]\n"
	        "allow = /var/lib/postgresql, /srv/wal\n"
	        "allow = /srv/ts\n"
	        "allow_root_filesystem = no\n"
	        "[volumes]\n"
	        "/dev/xvdf = vol-0123456789abcdef0\n"
	        "[aws]\n"
	        "region = eu-west-1\n"
	        "preflight_dry_run = off\n"
	        "[tags]\n"
	        "Environment = production\n",
	        &err) == 0,
	   "a full configuration loads (%s)", err.msg);
	is_str(c.socket_path, "/run/x/h.sock", "socket");
	is_int(c.n_allowed_uids, 2, "two allowed users");
	is_int(c.allowed_uids[0], 0, "root resolves to uid 0");
	is_int(c.allowed_uids[1], 70, "numeric uid");
	is_int(c.freeze_timeout_ms, 2500, "freeze_timeout in ms");
	is_int(c.client_timeout_ms, 120000, "client_timeout in min");
	is_int(c.n_allow, 3, "allow list from a comma list and a repeated key");
	is_str(c.allow[2], "/srv/ts", "third allowed path");
	is_int(c.n_volume_map, 1, "one volume mapping");
	is_str(c.volume_map[0].value, "vol-0123456789abcdef0", "volume id");
	is_str(c.region, "eu-west-1", "region");
	ok(!c.preflight_dry_run, "preflight off");
	is_str(c.tags[0].key, "Environment", "tag key");

	ok(load(&c, "[helper]\nbogus = 1\n", &err) == -1 && strstr(err.msg, "unknown key"),
	   "unknown key refused: %s", err.msg);
	ok(strstr(err.msg, "line 2") != NULL, "error names the line");
	ok(load(&c, "[helper]\nfreeze_timeout = 1h\n", &err) == -1, "bad duration unit refused");
	ok(load(&c, "[helper]\nfreeze_timeout = 50ms\n", &err) == -1, "too short freeze_timeout");
	ok(load(&c, "[helper]\nfreeze_timeout = 391993311566327972min\n", &err) == -1,
	   "a duration that would overflow is refused (found by fuzz_config)");
	ok(load(&c, "[helper]\nallowed_users = no-such-user-xyz\n", &err) == -1 &&
	       strstr(err.msg, "no such user"),
	   "unknown user refused");
	ok(load(&c, "[filesystems]\nallow = relative/path\n", &err) == -1,
	   "relative allow refused");
	ok(load(&c, "[volumes]\n/dev/sdf = snap-123\n", &err) == -1, "bad volume id refused");
	ok(load(&c, "[volumes]\n/dev/sdf = vol-0123456789ABCDEF0\n", &err) == -1,
	   "upper-case volume id refused, as the volume lookup would never match it");
	ok(load(&c, "[volumes]\n/dev/sdf = vol-0123456789ab\n", &err) == -1,
	   "12-digit volume id refused (EC2 ids have 8 or 17 digits)");
	{
		char text[300];

		snprintf(text, sizeof(text), "[tags]\n%0140d = x\n", 1);
		ok(load(&c, text, &err) == -1 && strstr(err.msg, "128"),
		   "over-long tag key refused");
	}
	ok(load(&c, "[helper\nsocket = /x\n", &err) == -1, "syntax error refused");
	ok(load(&c, "[helper]\nsocket = relative.sock\n", &err) == -1, "relative socket refused");
	ok(load(&c, "[filesystems]\nallow_root_filesystem = maybe\n", &err) == -1,
	   "non-boolean refused");
	ok(load(&c, "[helper]\nstate_dir = /var/tmp/x\nretries = 0\nretry_backoff = 250ms\n",
	        &err) == 0,
	   "state_dir, retries, retry_backoff accepted");
	is_str(c.state_dir, "/var/tmp/x", "state_dir");
	is_int(c.retries, 0, "retries 0");
	is_int(c.retry_backoff_ms, 250, "retry_backoff in ms");
	ok(load(&c, "[helper]\nstate_dir = run/x\n", &err) == -1, "relative state_dir refused");
	ok(load(&c, "[helper]\nretries = 11\n", &err) == -1, "too many retries refused");
	ok(load(&c, "[helper]\nretries = 1x\n", &err) == -1, "non-numeric retries refused");
	ok(load(&c, "[helper]\nretry_backoff = 1min\n", &err) == -1,
	   "retry_backoff over 20 s refused");
	{
		struct amis_err e2;

		config_free(&c);
		config_init(&c);
		ok(config_load_file(&c, "/nonexistent/helper.conf", &e2) == -1 &&
		       strstr(e2.msg, "cannot open"),
		   "missing file reported: %s", e2.msg);
	}
	test_lifecycle(&c);
	config_free(&c);
	return done_testing();
}
