/*
 * test_verify.c - the pure parts of `ami-snapshot verify` (helper/cli/
 * vf_report.c): outcomes and exit codes, check and phase assembly, the JSON
 * report (parsed back with json-c), the amcheck SQL and the parsing of its
 * rows (ok, corrupt, skipped by the budget, garbage), the budget, dump
 * file names, drill ids, the result tag, LSNs, the [drill] configuration;
 * and its EC2 calls (CreateTags, DescribeVolumes by tag, CreateVolume's
 * drill tags) against ec2_fake_server.py.
 */
#include <json-c/json.h>
#include <signal.h>

#include "config.h"
#include "ec2.h"
#include "fake_ec2.h"
#include "restore.h"
#include "tap.h"
#include "verify.h"

static struct ec2_client *probe;
static struct aws_credentials probe_creds;

static void test_outcomes(void)
{
	is_int(vf_outcome_exit(VF_PASSED), 0, "passed: exit 0");
	is_int(vf_outcome_exit(VF_ERROR), 1, "error: exit 1");
	is_int(vf_outcome_exit(VF_REFUSED), 3, "refused: exit 3");
	is_int(vf_outcome_exit(VF_FAILED), 4, "failed: exit 4");
	is_int(vf_outcome_exit(VF_TIMED_OUT), 5, "timed out: exit 5");
	is_int(vf_outcome_exit(VF_INTERRUPTED), 6, "interrupted: exit 6");
	is_str(vf_outcome_name(VF_TIMED_OUT), "timed_out", "outcome names are the JSON's");
}

static void test_report(void)
{
	struct vf_report r;
	struct strbuf sb;
	json_object *o, *v, *c;
	char tmp[64];

	vf_report_init(&r);
	ok(!vf_all_ok(&r), "no check is not a pass");
	snprintf(r.drill_id, sizeof(r.drill_id), "drill-20261202T230000Z-0000abcd");
	snprintf(r.request_id, sizeof(r.request_id), "req-1");
	vf_add_check(&r, "connect", true, 1.5, "as %s", "postgres");
	vf_add_check(&r, "amcheck:bench", false, 2.25, "relation \"quo\\ted\": bad");
	vf_add_phase(&r, "checks", 10);
	vf_add_phase(&r, "checks", 5);
	vf_add_phase(&r, "cleanup", 1);
	vf_add_unreached(&r, "bench.t1");
	vf_add_dump(&r, "/d/req-1_bench.dump");
	ok(!vf_all_ok(&r), "a failed check: not all ok");
	is_str(vf_first_failed(&r)->name, "amcheck:bench", "the first failed check");
	vf_set_error(&r, VF_FAILED, "check %s failed", "amcheck:bench");
	vf_set_error(&r, VF_TIMED_OUT, "later");
	is_int(r.outcome, VF_FAILED, "the first reason stands");
	sb_init(&sb);
	vf_report_json(&r, &sb);
	ok(strchr(sb_str(&sb), '\n') == sb_str(&sb) + sb.len - 1, "JSON: one line");
	o = json_tokener_parse(sb_str(&sb));
	ok(o != NULL, "JSON parses");
	ok(json_object_object_get_ex(o, "outcome", &v) &&
	       !strcmp(json_object_get_string(v), "failed"),
	   "JSON: outcome");
	ok(json_object_object_get_ex(o, "checks", &v) && json_object_array_length(v) == 2,
	   "JSON: two checks");
	c = json_object_array_get_idx(v, 1);
	ok(json_object_object_get_ex(c, "detail", &v) &&
	       !strcmp(json_object_get_string(v), "relation \"quo\\ted\": bad"),
	   "JSON: a detail with quotes and backslashes survives");
	ok(json_object_object_get_ex(c, "ms", &v) && json_object_get_double(v) == 2.25, "JSON: ms");
	ok(json_object_object_get_ex(o, "phases_ms", &v) &&
	       json_object_object_get_ex(v, "checks", &c) && json_object_get_double(c) == 15,
	   "JSON: a phase counted twice adds up");
	ok(json_object_object_get_ex(o, "amcheck_not_reached", &v) &&
	       json_object_array_length(v) == 1,
	   "JSON: what amcheck did not reach");
	ok(json_object_object_get_ex(o, "image_id", &v) && v == NULL, "JSON: no image is null");
	json_object_put(o);
	sb_free(&sb);
	vf_report_free(&r);

	ok(vf_result_tag(VF_PASSED, 0, "drill-x", tmp, sizeof(tmp), tmp + 32, 32) &&
	       !strcmp(tmp, "ami-snapshot:verified") &&
	       !strcmp(tmp + 32, "1970-01-01T00:00:00Z drill-x"),
	   "tag: passed is ami-snapshot:verified=<ISO time> <drill id>");
	ok(vf_result_tag(VF_FAILED, 0, "d", tmp, 32, tmp + 32, 32) &&
	       !strcmp(tmp, "ami-snapshot:verify-failed"),
	   "tag: failed is ami-snapshot:verify-failed");
	ok(!vf_result_tag(VF_TIMED_OUT, 0, "d", tmp, 32, tmp + 32, 32) &&
	       !vf_result_tag(VF_INTERRUPTED, 0, "d", tmp, 32, tmp + 32, 32) &&
	       !vf_result_tag(VF_ERROR, 0, "d", tmp, 32, tmp + 32, 32),
	   "tag: no verdict, no tag");
}

static void test_amcheck(void)
{
	struct strbuf sb;
	struct vf_amcheck_result a;
	struct vf_report r;
	struct amis_err err;
	const char *rows =
	    "heap" VF_SEP "t1" VF_SEP "ok" VF_SEP "" VF_SEP "1.5\n"
	    "btree" VF_SEP "t1_pkey" VF_SEP "ok" VF_SEP "" VF_SEP "0.5\n"
	    "heap" VF_SEP "victim" VF_SEP "corrupt" VF_SEP "invalid page in block 0" VF_SEP "2\n"
	    "heap" VF_SEP "big" VF_SEP "skipped" VF_SEP "" VF_SEP "0\n";

	sb_init(&sb);
	vf_amcheck_sql(1234, &sb);
	ok(strstr(sb_str(&sb), "bt_index_check($1, false)") != NULL,
	   "SQL: bt_index_check without heapallindexed");
	ok(strstr(sb_str(&sb), "verify_heapam($1)") != NULL, "SQL: verify_heapam");
	ok(strstr(sb_str(&sb), "c.relkind IN ('r', 'm', 't')") &&
	       strstr(sb_str(&sb), "a.amname = 'btree'") && strstr(sb_str(&sb), "indisvalid"),
	   "SQL: tables, matviews, TOAST; valid btree indexes");
	ok(strstr(sb_str(&sb), "relpersistence <> 't'") != NULL,
	   "SQL: other sessions' temporary relations left out");
	ok(strstr(sb_str(&sb), "EXCEPTION WHEN OTHERS") != NULL,
	   "SQL: each check in its own subtransaction");
	ok(strstr(sb_str(&sb), "amis_drill_check(1234);") != NULL, "SQL: the budget in ms");
	sb_reset(&sb);
	vf_amcheck_sql(-5, &sb);
	ok(strstr(sb_str(&sb), "amis_drill_check(0);") != NULL, "SQL: a spent budget is 0");
	sb_free(&sb);

	vf_report_init(&r);
	vf_amcheck_result_init(&a);
	ok(vf_amcheck_parse(rows, "bench", &a, &r, &err) == 0, "rows parse");
	is_int(a.tables, 2, "two tables checked");
	is_int(a.indexes, 1, "one index checked");
	is_int(a.corrupt, 1, "one corrupt");
	is_int(a.skipped, 1, "one not reached");
	is_str(sb_str(&a.problems), "relation victim: invalid page in block 0",
	       "the problem names the relation");
	ok(r.nunreached == 1 && !strcmp(r.unreached[0], "bench.big"),
	   "not reached: named db.relation in the report");
	vf_amcheck_result_free(&a);
	vf_amcheck_result_init(&a);
	ok(vf_amcheck_parse("", "x", &a, &r, &err) == 0 && a.tables == 0, "no rows: nothing");
	ok(vf_amcheck_parse("ERROR: oops\n", "x", &a, &r, &err) < 0, "a line that is no row fails");
	ok(vf_amcheck_parse("heap" VF_SEP "x\n", "x", &a, &r, &err) < 0, "a short row fails");
	vf_amcheck_result_free(&a);
	vf_report_free(&r);

	is_int(vf_budget_left(1000, 0, 400), 600, "budget: 600 ms left");
	is_int(vf_budget_left(1000, 0, 4000), 0, "budget: spent is 0, never negative");
	is_int(vf_budget_left(0, 10, 10), 0, "budget: none");
}

static void test_names(void)
{
	char n[256];
	unsigned long long lsn;

	vf_dump_name("req", "bench", n, sizeof(n));
	is_str(n, "req_bench.dump", "dump name");
	vf_dump_name("req", "../a b/.x", n, sizeof(n));
	is_str(n, "req_%2E.%2Fa%20b%2F.x.dump", "dump name: no slash, no leading dot, escaped");
	vf_dump_name("req", NULL, n, sizeof(n));
	is_str(n, "req_globals.sql", "dump name: the globals");
	vf_drill_id(0, 0xabcdef12u, n, sizeof(n));
	is_str(n, "drill-19700101T000000Z-abcdef12", "drill id");
	ok(vf_drill_id_valid(n), "a drill id is valid");
	ok(!vf_drill_id_valid("drill-19700101T000000Z-abcdef1") &&
	       !vf_drill_id_valid("drill-19700101T000000Z-ABCDEF12") && !vf_drill_id_valid("..") &&
	       !vf_drill_id_valid(".lock"),
	   "other names are not drill ids (--cleanup leaves them)");
	ok(vf_parse_lsn("0/60001F8", &lsn) && lsn == 0x60001F8ULL, "LSN 0/60001F8");
	ok(vf_parse_lsn("1A/0", &lsn) && lsn == (0x1AULL << 32), "LSN 1A/0");
	ok(!vf_parse_lsn("", &lsn) && !vf_parse_lsn("0/", &lsn) && !vf_parse_lsn("x/1", &lsn) &&
	       !vf_parse_lsn(NULL, &lsn) && !vf_parse_lsn("1/2/3", &lsn),
	   "not LSNs");
}

static void test_config(void)
{
	struct helper_config c;
	struct amis_err err;

	config_init(&c);
	is_str(c.drill_dir, DEFAULT_DRILL_DIR, "drill_dir default");
	is_int(c.drill_time_budget_ms, 600000, "time_budget default 10 min");
	ok(config_load_string(
	       &c,
	       "[drill]\ndrill_dir = /srv/drill\ntime_budget = 90s\ntimeout = 30min\n"
	       "instance_type = t3.small\nsubnet = subnet-1\nsecurity_group = sg-1\n"
	       "key_name = ops\n",
	       &err) == 0,
	   "[drill] parses (%s)", err.msg);
	is_str(c.drill_dir, "/srv/drill", "drill_dir");
	is_int(c.drill_time_budget_ms, 90000, "time_budget");
	is_int(c.drill_timeout_ms, 1800000, "timeout");
	ok(!strcmp(c.drill_instance_type, "t3.small") && !strcmp(c.drill_subnet, "subnet-1") &&
	       !strcmp(c.drill_security_group, "sg-1") && !strcmp(c.drill_key_name, "ops"),
	   "the AMI drill's launch settings");
	config_free(&c);
	config_init(&c);
	ok(config_load_string(&c, "[drill]\ndrill_dir = relative\n", &err) < 0,
	   "drill_dir must be absolute");
	config_free(&c);
	config_init(&c);
	ok(config_load_string(&c, "[drill]\ndrill_dir = /\n", &err) < 0, "drill_dir is not /");
	config_free(&c);
	config_init(&c);
	ok(config_load_string(&c, "[drill]\ntimeout = 0\n", &err) < 0, "timeout at least 1s");
	config_free(&c);
	config_init(&c);
	ok(config_load_string(&c, "[drill]\nbogus = 1\n", &err) < 0, "an unknown [drill] key");
	config_free(&c);
}

static void test_ec2(void)
{
	struct rs_aws *a;
	struct rs_volume_state v[4];
	struct amis_err err;
	const char *ids[] = {"snap-0aaaaaaaaaaaaaaaa", "ami-0bbbbbbbbbbbbbbbb"};
	struct rs_create_volume_req req = {.snapshot_id = "snap-0aaaaaaaaaaaaaaaa",
	                                   .availability_zone = "us-east-1a",
	                                   .drill_id = "drill-19700101T000000Z-abcdef12",
	                                   .drill_instance = "i-0a1b2c3d4e5f60718"};
	char vol[32], *last;
	size_t n;

	start_server();
	probe = ec2_client_new(endpoint, "us-east-1");
	strcpy(probe_creds.access_key_id, "AKIDEXAMPLE");
	strcpy(probe_creds.secret_access_key, "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY");
	a = rs_aws_new_static(endpoint, "us-east-1", "AKIDEXAMPLE",
	                      "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "i-0a1b2c3d4e5f60718",
	                      "us-east-1a");
	if (!a)
		bail("rs_aws_new_static failed");
	ok(rs_create_tags(a, ids, 2, "ami-snapshot:verified", "2026-12-02T23:00:00Z drill-x",
	                  &err) == 0,
	   "CreateTags succeeds (%s)", err.msg);
	last = last_request(probe, &probe_creds);
	ok(strstr(last, "Action=CreateTags\n") &&
	       strstr(last, "ResourceId.1=snap-0aaaaaaaaaaaaaaaa\n") &&
	       strstr(last, "ResourceId.2=ami-0bbbbbbbbbbbbbbbb\n") &&
	       strstr(last, "Tag.1.Key=ami-snapshot:verified\n") &&
	       strstr(last, "Tag.1.Value=2026-12-02T23:00:00Z drill-x\n"),
	   "CreateTags: the snapshots and the image, one tag");
	free(last);
	ok(rs_describe_volumes_by_tag(a, "ami-snapshot:drill-instance", "i-0a1b2c3d4e5f60718", v, 4,
	                              &n, &err) == 0 &&
	       n == 1 && !strcmp(v[0].volume_id, "vol-0dddddddddddddddd") &&
	       !strcmp(v[0].attach_state, "attached"),
	   "DescribeVolumes by tag: the volume a drill left, attached (%s)", err.msg);
	last = last_request(probe, &probe_creds);
	ok(strstr(last, "Filter.1.Name=tag:ami-snapshot:drill-instance\n") &&
	       strstr(last, "Filter.1.Value.1=i-0a1b2c3d4e5f60718\n"),
	   "DescribeVolumes by tag: the filter");
	free(last);
	ok(rs_create_volume(a, &req, vol, sizeof(vol), &err) == 0, "CreateVolume for a drill");
	last = last_request(probe, &probe_creds);
	ok(strstr(last, "Key=ami-snapshot:drill\n") &&
	       strstr(last, "Value=drill-19700101T000000Z-abcdef12\n") &&
	       strstr(last, "Key=ami-snapshot:drill-instance\n") &&
	       strstr(last, "Value=i-0a1b2c3d4e5f60718\n"),
	   "CreateVolume: tagged with the drill id and the instance at creation");
	free(last);
	rs_aws_free(a);
	ec2_client_free(probe);
	stop_server();
}

int main(void)
{
	alarm(120);
	signal(SIGPIPE, SIG_IGN);
	test_outcomes();
	test_report();
	test_amcheck();
	test_names();
	test_config();
	test_ec2();
	return done_testing();
}
