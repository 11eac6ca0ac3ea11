/*
 * test_sigv4.c - exact SigV4 signatures for AWS's published examples.
 *
 * Vectors: the IAM ListUsers example of "Create a signed AWS API request"
 * (IAM User Guide) and cases of the Signature Version 4 test suite
 * (aws-sig-v4-test-suite: get-vanilla, post-vanilla, post-vanilla-query,
 * get-vanilla-query-order-key-case, post-x-www-form-urlencoded(-parameters),
 * post-sts-header-before), all with the example key AKIDEXAMPLE and the date
 * 20150830T123600Z.  The EC2 cases were computed with botocore 1.29's
 * SigV4Auth; test_sigv4_botocore.py compares many more inputs live.
 *
 * Query-string pre-signing: the example of "Authenticating Requests: Using
 * Query Parameters (AWS Signature Version 4)" (Amazon S3 API Reference:
 * GET examplebucket/test.txt, AKIAIOSFODNN7EXAMPLE, 20130524T000000Z,
 * 86400 s, UNSIGNED-PAYLOAD), whose published signature is aeeed9bb...; the
 * EC2 PresignedUrl itself is compared with botocore's by
 * test_sigv4_botocore.py.
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* timegm */
#endif
#include <string.h>
#include <time.h>

#include "sigv4.h"
#include "tap.h"

#define EX_AKID "AKIDEXAMPLE"
#define EX_SECRET "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
#define EX_TOKEN                                                                                   \
	"AQoDYXdzEPT//////////"                                                                    \
	"wEXAMPLEtc764bNrC9SAPBSM22wDOk4x4HIZ8j4FZTwdQWLWsKWHGBuFqwAeMicRXmxfpSPfIeoIYRqTflfKD8YU" \
	"uwthAx7mSEI/qkPpKPi/kMcGdQrmGdeehM4IC1NtBmUpp2wUE8phUZampKsburEDy0KPkyQDYwT7WZ0wq5VSXDvp" \
	"75YU9HFvlRd8Tx6q6fE8YQcHNVXAkiY9q6d+xo0rKwT38xVqr7ZD0u0iPPkUL64lIZbqBAz+"                 \
	"scqKmlzm8FDrypNC9Yjc8fPOLn9FX9KSYvKTr4rvx3iSIlTJabIQwj2ICCR/oLxBA=="
#define EMPTY_SHA256 "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
#define EC2_CT "application/x-www-form-urlencoded; charset=utf-8"
#define EC2_BODY "Action=DescribeInstances&Version=2016-11-15&InstanceId.1=i-0123456789abcdef0"

static time_t example_time(void)
{
	struct tm tm = {
	    .tm_year = 2015 - 1900, .tm_mon = 7, .tm_mday = 30, .tm_hour = 12, .tm_min = 36};

	return timegm(&tm);
}

static void example_creds(struct aws_credentials *c, const char *token)
{
	memset(c, 0, sizeof(*c));
	strcpy(c->access_key_id, EX_AKID);
	strcpy(c->secret_access_key, EX_SECRET);
	if (token)
		strcpy(c->session_token, token);
}

static struct sigv4_request suite_req(const char *method, const char *query, const char *ct,
                                      const char *body)
{
	struct sigv4_request r = {
	    .method = method,
	    .host = "example.amazonaws.com",
	    .path = "/",
	    .query = query,
	    .content_type = ct,
	    .body = body,
	    .body_len = body ? strlen(body) : 0,
	    .region = "us-east-1",
	    .service = "service",
	    .now = example_time(),
	};
	return r;
}

static void check_authz(const char *name, const struct sigv4_request *r, const char *token,
                        const char *signed_headers, const char *signature)
{
	struct aws_credentials c;
	struct sigv4_result res;
	struct amis_err err;
	char want[512];
	int rc;

	example_creds(&c, token);
	err_clear(&err);
	rc = sigv4_sign(r, &c, &res, NULL, &err);
	is_int(rc, 0, "%s: signs (%s)", name, err.msg);
	snprintf(want, sizeof(want),
	         "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/%s/%s/aws4_request, "
	         "SignedHeaders=%s, Signature=%s",
	         r->region, r->service, signed_headers, signature);
	is_str(res.authorization, want, "%s: Authorization", name);
	is_str(res.amz_date, "20150830T123600Z", "%s: X-Amz-Date", name);
	if (token)
		is_str(res.security_token, token, "%s: X-Amz-Security-Token", name);
	else
		ok(res.security_token == NULL, "%s: no X-Amz-Security-Token", name);
}

static void test_iam_list_users(void)
{
	struct sigv4_request r = {
	    .method = "GET",
	    .host = "iam.amazonaws.com",
	    .path = "/",
	    .query = "Action=ListUsers&Version=2010-05-08",
	    .content_type = EC2_CT,
	    .region = "us-east-1",
	    .service = "iam",
	    .now = example_time(),
	};
	struct aws_credentials c;
	struct sigv4_result res;
	struct sigv4_debug dbg;
	struct amis_err err;
	char hash[65];

	example_creds(&c, NULL);
	sigv4_debug_init(&dbg);
	is_int(sigv4_sign(&r, &c, &res, &dbg, &err), 0, "IAM ListUsers: signs");
	is_str(sb_str(&dbg.canonical_request),
	       "GET\n/\nAction=ListUsers&Version=2010-05-08\n"
	       "content-type:application/x-www-form-urlencoded; charset=utf-8\n"
	       "host:iam.amazonaws.com\nx-amz-date:20150830T123600Z\n\n"
	       "content-type;host;x-amz-date\n" EMPTY_SHA256,
	       "IAM ListUsers: canonical request");
	sigv4_sha256_hex(dbg.canonical_request.data, dbg.canonical_request.len, hash);
	is_str(hash, "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59",
	       "IAM ListUsers: canonical request hash");
	is_str(sb_str(&dbg.string_to_sign),
	       "AWS4-HMAC-SHA256\n20150830T123600Z\n20150830/us-east-1/iam/aws4_request\n"
	       "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59",
	       "IAM ListUsers: string to sign");
	is_str(dbg.signed_headers, "content-type;host;x-amz-date", "IAM ListUsers: signed headers");
	is_str(res.authorization,
	       "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, "
	       "SignedHeaders=content-type;host;x-amz-date, "
	       "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7",
	       "IAM ListUsers: Authorization");
	sigv4_debug_free(&dbg);
}

static void test_suite(void)
{
	struct sigv4_request r;

	r = suite_req("GET", NULL, NULL, NULL);
	check_authz("get-vanilla", &r, NULL, "host;x-amz-date",
	            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
	r = suite_req("POST", NULL, NULL, NULL);
	check_authz("post-vanilla", &r, NULL, "host;x-amz-date",
	            "5da7c1a2acd57cee7505fc6676e4e544621c30862966e37dddb68e92efbe5d6b");
	r = suite_req("POST", "Param1=value1", NULL, NULL);
	check_authz("post-vanilla-query", &r, NULL, "host;x-amz-date",
	            "28038455d6de14eafc1f9222cf5aa6f1a96197d7deb8263271d420d138af7f11");
	r = suite_req("GET", "Param1=value1&Param2=value2", NULL, NULL);
	check_authz("get-vanilla-query-order-key-case", &r, NULL, "host;x-amz-date",
	            "b97d918cfa904a5beff61c982a1b6f458b799221646efd99d3219ec94cdf2500");
	r = suite_req("POST", NULL, "application/x-www-form-urlencoded", "Param1=value1");
	check_authz("post-x-www-form-urlencoded", &r, NULL, "content-type;host;x-amz-date",
	            "ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a");
	r = suite_req("POST", NULL, "application/x-www-form-urlencoded; charset=utf8",
	              "Param1=value1");
	check_authz("post-x-www-form-urlencoded-parameters", &r, NULL,
	            "content-type;host;x-amz-date",
	            "1a72ec8f64bd914b0e42e42607c7fbce7fb2c7465f63e3092b3b0d39fa77a6fe");
	r = suite_req("POST", NULL, NULL, NULL);
	check_authz("post-sts-header-before", &r, EX_TOKEN, "host;x-amz-date;x-amz-security-token",
	            "85d96828115b5dc0cfc3bd16ad9e210dd772bbebba041836c64533a82be05ead");
	/* NULL path and "" query are the same as "/" and no query. */
	r = suite_req("GET", "", NULL, NULL);
	r.path = NULL;
	check_authz("get-vanilla, NULL path", &r, NULL, "host;x-amz-date",
	            "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31");
}

/* EC2 as ec2.c signs it: POST / with a form body, values from botocore. */
static void test_ec2(void)
{
	struct sigv4_request r = {
	    .method = "POST",
	    .host = "ec2.eu-west-1.amazonaws.com",
	    .path = "/",
	    .content_type = EC2_CT,
	    .body = EC2_BODY,
	    .body_len = strlen(EC2_BODY),
	    .region = "eu-west-1",
	    .service = "ec2",
	    .now = example_time(),
	};
	struct aws_credentials c;
	struct sigv4_result res;
	struct sigv4_debug dbg;
	struct amis_err err;
	char hash[65];

	check_authz("ec2 POST", &r, NULL, "content-type;host;x-amz-date",
	            "a12b7ec1e50f69b811af211e26ecd3b0c84339afa1d6a82b0621cb68a092f67c");
	check_authz("ec2 POST with session token", &r, EX_TOKEN,
	            "content-type;host;x-amz-date;x-amz-security-token",
	            "3f4e7ae9a0b2d67b7ef2f7d01ccdc43f16b8d835719bf064f319a5c4a5377b61");

	r.host = "127.0.0.1:8773";
	r.region = "us-east-1";
	check_authz("ec2 POST to a local endpoint", &r, NULL, "content-type;host;x-amz-date",
	            "d93ee16a9f8793c15fae7ea61f945d6f9cd866c3703052e2d9afc2060e4f6fd7");

	/* The canonical request lists the token and the body's hash. */
	example_creds(&c, "tok  en");
	sigv4_debug_init(&dbg);
	is_int(sigv4_sign(&r, &c, &res, &dbg, &err), 0, "ec2 debug: signs");
	sigv4_sha256_hex(EC2_BODY, strlen(EC2_BODY), hash);
	ok(strstr(sb_str(&dbg.canonical_request), "\nx-amz-security-token:tok en\n") != NULL,
	   "ec2 debug: token value is trimmed in the canonical request");
	ok(strlen(sb_str(&dbg.canonical_request)) > 64 &&
	       strcmp(sb_str(&dbg.canonical_request) + dbg.canonical_request.len - 64, hash) == 0,
	   "ec2 debug: canonical request ends with the body hash");
	is_str(res.security_token, "tok  en", "ec2 debug: token is sent as given");
	sigv4_debug_free(&dbg);
}

static void test_errors(void)
{
	struct sigv4_request r = suite_req("POST", NULL, EC2_CT, "x");
	struct aws_credentials c;
	struct sigv4_result res;
	struct amis_err err;

	example_creds(&c, NULL);
	c.secret_access_key[0] = '\0';
	is_int(sigv4_sign(&r, &c, &res, NULL, &err), -1, "empty secret: fails");
	is_str(err.code, "MissingCredentials", "empty secret: code");
	is_int(sigv4_sign(&r, NULL, &res, NULL, &err), -1, "no credentials: fails");

	example_creds(&c, "bad\ntoken");
	is_int(sigv4_sign(&r, &c, &res, NULL, &err), -1, "token with a newline: fails");
	ok(strstr(err.msg, "bad") == NULL, "token with a newline: not in the message");

	example_creds(&c, NULL);
	r.region = "us east";
	is_int(sigv4_sign(&r, &c, &res, NULL, &err), -1, "bad region: fails");
	is_str(err.code, "InvalidRequest", "bad region: code");
	ok(strstr(err.msg, EX_SECRET) == NULL, "bad region: no secret in the message");
	r.region = "us-east-1";
	r.host = "evil.example\r\nX-Injected: 1";
	is_int(sigv4_sign(&r, &c, &res, NULL, &err), -1, "host with CRLF: fails");
	r.host = "example.amazonaws.com";
	r.path = "no-slash";
	is_int(sigv4_sign(&r, &c, &res, NULL, &err), -1, "relative path: fails");
	r.path = "/";
	r.content_type = "text/plain\n";
	is_int(sigv4_sign(&r, &c, &res, NULL, &err), -1, "content type with LF: fails");
	r.content_type = EC2_CT;
	r.method = "post";
	is_int(sigv4_sign(&r, &c, &res, NULL, &err), -1, "lower-case method: fails");
	ok(res.authorization[0] == '\0', "failure: no Authorization left behind");
}

static void test_presign(void)
{
	struct aws_credentials c;
	struct sigv4_presign_request r;
	struct sigv4_debug dbg;
	struct amis_err err;
	struct strbuf q;
	const char *names[] = {"Action", "X-Amz-Date"};
	const char *values[] = {"CopySnapshot", "x"};
	struct tm tm = {.tm_year = 113, .tm_mon = 4, .tm_mday = 24};

	memset(&c, 0, sizeof(c));
	strcpy(c.access_key_id, "AKIAIOSFODNN7EXAMPLE");
	strcpy(c.secret_access_key, "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
	r = (struct sigv4_presign_request){
	    .host = "examplebucket.s3.amazonaws.com",
	    .path = "/test.txt",
	    .region = "us-east-1",
	    .service = "s3",
	    .now = timegm(&tm),
	    .expires_s = 86400,
	    .payload_hash = "UNSIGNED-PAYLOAD",
	};
	sb_init(&q);
	sigv4_debug_init(&dbg);
	ok(sigv4_presign(&r, &c, &q, &dbg, &err) == 0, "AWS's pre-signed URL example signs");
	is_str(sb_str(&q),
	       "X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524"
	       "%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&"
	       "X-Amz-SignedHeaders=host&X-Amz-Signature="
	       "aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404",
	       "the query with AWS's published signature");
	ok(strstr(sb_str(&dbg.canonical_request), "\nhost:examplebucket.s3.amazonaws.com\n\nhost\n"
	                                          "UNSIGNED-PAYLOAD") != NULL,
	   "only host is signed");
	sb_reset(&q);
	r.payload_hash = NULL;
	ok(sigv4_presign(&r, &c, &q, &dbg, &err) == 0 &&
	       strstr(sb_str(&dbg.canonical_request), EMPTY_SHA256) != NULL,
	   "by default the payload is an empty body's (EC2, as botocore)");
	strcpy(c.session_token, "tok/en+=");
	sb_reset(&q);
	ok(sigv4_presign(&r, &c, &q, NULL, &err) == 0 &&
	       strstr(sb_str(&q), "X-Amz-Security-Token=tok%2Fen%2B%3D&") != NULL,
	   "a session token is a signed, encoded parameter");
	r.names = names;
	r.values = values;
	r.nparams = 2;
	ok(sigv4_presign(&r, &c, &q, NULL, &err) < 0, "an X-Amz- parameter of the caller's: %s",
	   err.msg);
	r.nparams = 1;
	r.expires_s = 604801;
	ok(sigv4_presign(&r, &c, &q, NULL, &err) < 0, "more than 7 days: %s", err.msg);
	r.expires_s = 60;
	c.secret_access_key[0] = '\0';
	ok(sigv4_presign(&r, &c, &q, NULL, &err) < 0 && !strcmp(err.code, "MissingCredentials"),
	   "no secret: %s", err.code);
	sigv4_debug_free(&dbg);
	sb_free(&q);
}

int main(void)
{
	test_presign();
	test_iam_list_users();
	test_suite();
	test_ec2();
	test_errors();
	return done_testing();
}
