/*
 * test_xml.c - the libxml2 wrapper: local-name lookups whatever the
 * namespace or order, required/optional children, <xxxSet><item> lists, and
 * clean "MalformedResponse" errors (with a sanitised excerpt, and nothing
 * printed by libxml2) for truncated, garbage and DTD-carrying bodies.
 */
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tap.h"
#include "xml.h"

static xmlDocPtr parse(const char *s)
{
	struct amis_err err;
	xmlDocPtr doc = NULL;

	err_clear(&err);
	if (xml_parse(s, strlen(s), &doc, &err) < 0)
		printf("# parse failed: %s: %s\n", err.code, err.msg);
	return doc;
}

static void test_lookups(void)
{
	static const char *const bodies[] = {
	    "<R xmlns=\"http://ec2.amazonaws.com/doc/2016-11-15/\"><a> one </a><b>2</b></R>",
	    "<R><b>2</b><a>one</a></R>",
	    "<x:R xmlns:x=\"urn:x\"><x:b>2</x:b><y:a xmlns:y=\"urn:y\">\n one\n</y:a></x:R>",
	    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<R>\n  <a>one</a>\n  <b>2</b>\n</R>\n",
	};
	size_t i;

	for (i = 0; i < sizeof(bodies) / sizeof(bodies[0]); i++) {
		xmlDocPtr doc = parse(bodies[i]);
		struct amis_err err;
		char buf[16];
		long long v = 0;

		ok(doc != NULL, "body %zu: parses", i);
		ok(xml_is(xml_root(doc), "R"), "body %zu: root local name", i);
		is_int(xml_child_text(xml_root(doc), "a", buf, sizeof(buf), &err), 0,
		       "body %zu: <a> found", i);
		is_str(buf, "one", "body %zu: <a> text trimmed", i);
		is_int(xml_child_ll_opt(xml_root(doc), "b", 0, &v, &err), 0, "body %zu: <b>", i);
		is_int(v, 2, "body %zu: <b> value", i);
		xml_free(doc);
	}
}

static void test_required_optional(void)
{
	xmlDocPtr doc = parse("<Resp><item><id>snap-1</id><flag>true</flag><bad>yes</bad>"
	                      "<n>12x</n><long>0123456789abcdef</long></item></Resp>");
	xmlNodePtr item = xml_child(xml_root(doc), "item");
	struct amis_err err;
	char buf[32], small[8];
	char *dup;
	bool b = true;
	long long v = 7;

	ok(item != NULL, "item found");
	ok(xml_child(item, "missing") == NULL, "optional lookup: NULL");
	ok(xml_child(NULL, "x") == NULL, "lookup under NULL: NULL");
	err_clear(&err);
	ok(xml_child_required(item, "volumeId", &err) == NULL, "required lookup fails");
	is_str(err.code, "MalformedResponse", "required lookup: code");
	is_str(err.msg, "response lacks element <volumeId> in Resp/item",
	       "required lookup: message names the path");

	is_int(xml_child_text(item, "nope", buf, sizeof(buf), &err), -1, "required text: missing");
	is_str(buf, "", "required text: buffer emptied");
	is_int(xml_child_text_opt(item, "nope", buf, sizeof(buf), &err), 0,
	       "optional text: absent");
	is_str(buf, "", "optional text: empty");
	is_int(xml_child_text(item, "long", small, sizeof(small), &err), -1, "too long: fails");
	is_str(err.code, "MalformedResponse", "too long: code");
	ok(strstr(err.msg, "Resp/item/long is 16 bytes long, at most 7") != NULL,
	   "too long: message (%s)", err.msg);
	is_int(xml_child_text(item, "long", buf, 17, &err), 0, "exact fit: ok");

	is_int(xml_child_bool_opt(item, "flag", false, &b, &err), 0, "bool: parses");
	ok(b, "bool: true");
	is_int(xml_child_bool_opt(item, "absent", true, &b, &err), 0, "bool absent: ok");
	ok(b, "bool absent: default");
	is_int(xml_child_bool_opt(item, "bad", false, &b, &err), -1, "bool garbage: fails");
	is_str(err.code, "MalformedResponse", "bool garbage: code");
	is_int(xml_child_ll_opt(item, "n", 0, &v, &err), -1, "integer garbage: fails");
	is_int(xml_child_ll_opt(item, "absent", -1, &v, &err), 0, "integer absent: ok");
	is_int(v, -1, "integer absent: default");

	dup = xml_text_dup(xml_child(item, "id"));
	is_str(dup, "snap-1", "text_dup");
	free(dup);
	dup = xml_text_dup(NULL);
	is_str(dup, "", "text_dup of NULL");
	free(dup);
	xml_free(doc);
}

static void test_items(void)
{
	xmlDocPtr doc = parse("<R><emptySet/><fooSet><item><v>1</v></item><junk/>"
	                      "<item><v>2</v></item><item><v>3</v></item></fooSet></R>");
	xmlNodePtr root = xml_root(doc), it;
	struct amis_err err;
	char seen[16] = "", v[4];

	is_int(xml_items_count(root, "fooSet"), 3, "three items");
	is_int(xml_items_count(root, "emptySet"), 0, "empty set");
	is_int(xml_items_count(root, "absentSet"), 0, "absent set");
	for (it = xml_items_first(root, "fooSet"); it; it = xml_items_next(it)) {
		xml_child_text(it, "v", v, sizeof(v), &err);
		strcat(seen, v);
	}
	is_str(seen, "123", "items in document order, other elements skipped");
	xml_free(doc);
}

static void expect_malformed(const char *name, const char *body, size_t len, const char *in_msg)
{
	struct amis_err err;
	xmlDocPtr doc = (xmlDocPtr)1;

	err_clear(&err);
	is_int(xml_parse(body, len, &doc, &err), -1, "%s: fails", name);
	ok(doc == NULL, "%s: no document", name);
	is_str(err.code, "MalformedResponse", "%s: code", name);
	ok(strstr(err.msg, in_msg) != NULL, "%s: message has '%s' (%s)", name, in_msg, err.msg);
}

static void test_malformed(void)
{
	static const char nul_body[] = "<R>\0<a/></R>";
	char big[1000];
	struct amis_err err;
	xmlDocPtr doc;

	expect_malformed("truncated", "<CreateSnapshotsResponse><snapshotSet><item><snap",
	                 strlen("<CreateSnapshotsResponse><snapshotSet><item><snap"),
	                 "\"<CreateSnapshotsResponse><snapshotSet><item><snap\"");
	expect_malformed("html", "<html><body>502 Bad Gateway<br></body></html>",
	                 strlen("<html><body>502 Bad Gateway<br></body></html>"),
	                 "502 Bad Gateway");
	expect_malformed("plain text", "Service Unavailable\r\n", 21, "\"Service Unavailable  \"");
	expect_malformed("empty", "", 0, "empty");
	expect_malformed("NUL inside", nul_body, sizeof(nul_body) - 1, "<R>.<a/></R>");
	expect_malformed("two roots", "<a/><b/>", 8, "<a/><b/>");
	expect_malformed(
	    "DTD", "<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x \"y\">]><r>&x;</r>",
	    strlen("<?xml version=\"1.0\"?><!DOCTYPE r [<!ENTITY x \"y\">]><r>&x;</r>"),
	    "document type declarations are not accepted");
	expect_malformed("external entity", "<!DOCTYPE r SYSTEM \"file:///etc/passwd\"><r/>",
	                 strlen("<!DOCTYPE r SYSTEM \"file:///etc/passwd\"><r/>"), "not accepted");
	expect_malformed("binary", "\xff\xfe<\x01\x02\x80", 6, "\"..<...\"");

	/* The excerpt stops at 200 bytes. */
	memset(big, 'x', sizeof(big));
	memcpy(big, "<R>", 3);
	err_clear(&err);
	is_int(xml_parse(big, sizeof(big), &doc, &err), -1, "long garbage: fails");
	ok(strstr(err.msg, "xxx...\"") != NULL && strlen(err.msg) < 400,
	   "long garbage: excerpt cut at 200 bytes (%zu bytes of message)", strlen(err.msg));
}

static void test_excerpt(void)
{
	char out[XML_EXCERPT_MAX + 4], small[6];

	xml_excerpt("a\tb\nc\x1b[31m\xc3\xa9", 12, out, sizeof(out));
	is_str(out, "a b c.[31m..", "excerpt: control and non-ASCII bytes replaced");
	xml_excerpt("abcdefghij", 10, small, sizeof(small));
	is_str(small, "abcde", "excerpt: fits the buffer");
	xml_excerpt(NULL, 5, out, sizeof(out));
	is_str(out, "", "excerpt: NULL body");
}

/* libxml2 must not write parse errors to stderr (the daemon's journal). */
static void test_silent(void)
{
	char path[] = "/tmp/test_xml_stderr_XXXXXX";
	int fd = mkstemp(path), saved = dup(STDERR_FILENO);
	struct amis_err err;
	xmlDocPtr doc;
	off_t size;

	fflush(stderr);
	dup2(fd, STDERR_FILENO);
	xml_parse("<a><b></a>", 10, &doc, &err);
	xml_parse("<a>&undefined;</a>", 18, &doc, &err);
	xml_parse("\x01", 1, &doc, &err);
	fflush(stderr);
	dup2(saved, STDERR_FILENO);
	close(saved);
	size = lseek(fd, 0, SEEK_END);
	close(fd);
	unlink(path);
	is_int(size, 0, "libxml2 printed nothing to stderr");
}

int main(void)
{
	test_lookups();
	test_required_optional();
	test_items();
	test_malformed();
	test_excerpt();
	test_silent();
	return done_testing();
}
