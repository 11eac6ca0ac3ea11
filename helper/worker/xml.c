/*
 * xml.c - see xml.h.
 */
#include "xml.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/xmlerror.h>

static pthread_once_t xml_once = PTHREAD_ONCE_INIT;

static void xml_init_once(void)
{
	xmlInitParser();
}

/* libxml2 would print parse errors to stderr; we report them through err. */
static void silent_generic(void *ctx, const char *msg, ...)
{
}

#if LIBXML_VERSION >= 21200
static void silent_structured(void *ctx, const xmlError *e)
#else
static void silent_structured(void *ctx, xmlErrorPtr e)
#endif
{
}

static void xml_quiet(void)
{
	pthread_once(&xml_once, xml_init_once);
	/* Both handlers are per thread in libxml2: set them every time. */
	xmlSetGenericErrorFunc(NULL, silent_generic);
	xmlSetStructuredErrorFunc(NULL, silent_structured);
}

void xml_excerpt(const char *body, size_t len, char *out, size_t outsz)
{
	size_t n = len < XML_EXCERPT_MAX ? len : XML_EXCERPT_MAX;
	size_t i, o = 0;

	if (!outsz)
		return;
	if (!body)
		len = n = 0;
	for (i = 0; i < n && o + 1 < outsz; i++) {
		unsigned char ch = (unsigned char)body[i];

		if (ch == '\n' || ch == '\r' || ch == '\t')
			ch = ' ';
		else if (ch < 0x20 || ch > 0x7e)
			ch = '.';
		out[o++] = (char)ch;
	}
	if (n < len && o + 3 < outsz) {
		memcpy(out + o, "...", 3);
		o += 3;
	}
	out[o] = '\0';
}

/* Copies libxml2's message, trimmed and printable, into buf. */
static void reason_of(xmlParserCtxtPtr ctxt, char *buf, size_t bufsz)
{
	const xmlError *e = ctxt ? xmlCtxtGetLastError(ctxt) : NULL;

	if (!e || !e->message) {
		snprintf(buf, bufsz, "not well-formed");
		return;
	}
	snprintf(buf, bufsz, "%s at line %d", e->message, e->line);
	for (char *p = buf; *p; p++) {
		if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
			*p = ' ';
	}
	/* "Premature end of data in tag X line 1\n at line 1" -> no inner spaces run. */
	for (char *p = strstr(buf, "  "); p; p = strstr(buf, "  "))
		memmove(p, p + 1, strlen(p + 1) + 1);
}

static int malformed(struct amis_err *err, const char *reason, const char *body, size_t len)
{
	char excerpt[XML_EXCERPT_MAX + 4];

	xml_excerpt(body, len, excerpt, sizeof(excerpt));
	return err_set(err, AMIS_E_MALFORMED_RESPONSE, "response is not valid XML (%s): \"%s\"",
	               reason, excerpt);
}

int xml_parse(const char *body, size_t len, xmlDocPtr *out, struct amis_err *err)
{
	/* No XML_PARSE_NOENT (substitution), DTDLOAD or HUGE: none is wanted. */
	const int options = XML_PARSE_NONET | XML_PARSE_NOBLANKS | XML_PARSE_NOERROR |
	                    XML_PARSE_NOWARNING | XML_PARSE_NOCDATA;
	xmlParserCtxtPtr ctxt;
	xmlDocPtr doc;
	char reason[256];

	*out = NULL;
	if (!body || len == 0)
		return err_set(err, AMIS_E_MALFORMED_RESPONSE,
		               "response body is empty, XML expected");
	if (len > INT_MAX)
		return malformed(err, "too large", body, len);
	if (memmem(body, len, "<!DOCTYPE", 9))
		return malformed(err, "document type declarations are not accepted", body, len);

	xml_quiet();
	ctxt = xmlNewParserCtxt();
	if (!ctxt)
		return err_set(err, AMIS_E_OUT_OF_MEMORY, "cannot allocate an XML parser");
	doc = xmlCtxtReadMemory(ctxt, body, (int)len, "response.xml", NULL, options);
	if (!doc || !ctxt->wellFormed) {
		reason_of(ctxt, reason, sizeof(reason));
		xmlFreeDoc(doc);
		xmlFreeParserCtxt(ctxt);
		return malformed(err, reason, body, len);
	}
	xmlFreeParserCtxt(ctxt);
	if (doc->intSubset || doc->extSubset) {
		xmlFreeDoc(doc);
		return malformed(err, "document type declarations are not accepted", body, len);
	}
	if (!xmlDocGetRootElement(doc)) {
		xmlFreeDoc(doc);
		return malformed(err, "no root element", body, len);
	}
	*out = doc;
	return 0;
}

void xml_free(xmlDocPtr doc)
{
	if (doc)
		xmlFreeDoc(doc);
}

xmlNodePtr xml_root(xmlDocPtr doc)
{
	return doc ? xmlDocGetRootElement(doc) : NULL;
}

bool xml_is(const xmlNode *node, const char *name)
{
	/* node->name is the local name; the prefix lives in node->ns. */
	return node && node->type == XML_ELEMENT_NODE && node->name &&
	       strcmp((const char *)node->name, name) == 0;
}

xmlNodePtr xml_child(const xmlNode *node, const char *name)
{
	xmlNodePtr c;

	if (!node)
		return NULL;
	for (c = node->children; c; c = c->next) {
		if (xml_is(c, name))
			return c;
	}
	return NULL;
}

xmlNodePtr xml_next(const xmlNode *node, const char *name)
{
	xmlNodePtr c;

	if (!node)
		return NULL;
	for (c = node->next; c; c = c->next) {
		if (xml_is(c, name))
			return c;
	}
	return NULL;
}

void xml_path(const xmlNode *node, char *buf, size_t bufsz)
{
	const xmlNode *chain[16];
	size_t n = 0, i, o = 0;

	if (!bufsz)
		return;
	buf[0] = '\0';
	for (; node && node->type == XML_ELEMENT_NODE && n < 16; node = node->parent)
		chain[n++] = node;
	for (i = n; i > 0 && o + 1 < bufsz; i--) {
		int w = snprintf(buf + o, bufsz - o, "%s%s", i == n ? "" : "/",
		                 (const char *)chain[i - 1]->name);
		if (w < 0)
			break;
		o += (size_t)w;
	}
}

xmlNodePtr xml_child_required(const xmlNode *node, const char *name, struct amis_err *err)
{
	xmlNodePtr c = xml_child(node, name);
	char path[256];

	if (!c) {
		xml_path(node, path, sizeof(path));
		err_set(err, AMIS_E_MALFORMED_RESPONSE, "response lacks element <%s> in %s", name,
		        path[0] ? path : "(nothing)");
	}
	return c;
}

/* Trimmed [*start, *start + *len) of s. */
static void trim(const char *s, const char **start, size_t *len)
{
	size_t n = strlen(s);

	while (n && (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')) {
		s++;
		n--;
	}
	while (n && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\n' || s[n - 1] == '\r'))
		n--;
	*start = s;
	*len = n;
}

char *xml_text_dup(const xmlNode *node)
{
	xmlChar *content = node ? xmlNodeGetContent(node) : NULL;
	const char *s;
	size_t n;
	char *r;

	if (!content)
		return xstrdup("");
	trim((const char *)content, &s, &n);
	r = xmalloc(n + 1);
	memcpy(r, s, n);
	r[n] = '\0';
	xmlFree(content);
	return r;
}

int xml_text(const xmlNode *node, char *buf, size_t bufsz, struct amis_err *err)
{
	xmlChar *content;
	const char *s;
	char path[256];
	size_t n;

	if (bufsz)
		buf[0] = '\0';
	if (!node)
		return 0;
	content = xmlNodeGetContent(node);
	if (!content)
		return 0;
	trim((const char *)content, &s, &n);
	if (n >= bufsz) {
		xml_path(node, path, sizeof(path));
		xmlFree(content);
		return err_set(err, AMIS_E_MALFORMED_RESPONSE,
		               "element %s is %zu bytes long, at most %zu expected", path, n,
		               bufsz ? bufsz - 1 : 0);
	}
	memcpy(buf, s, n);
	buf[n] = '\0';
	xmlFree(content);
	return 0;
}

int xml_child_text(const xmlNode *node, const char *name, char *buf, size_t bufsz,
                   struct amis_err *err)
{
	xmlNodePtr c = xml_child_required(node, name, err);

	if (bufsz)
		buf[0] = '\0';
	if (!c)
		return -1;
	return xml_text(c, buf, bufsz, err);
}

int xml_child_text_opt(const xmlNode *node, const char *name, char *buf, size_t bufsz,
                       struct amis_err *err)
{
	return xml_text(xml_child(node, name), buf, bufsz, err);
}

int xml_child_bool_opt(const xmlNode *node, const char *name, bool dflt, bool *out,
                       struct amis_err *err)
{
	xmlNodePtr c = xml_child(node, name);
	char text[8], path[256];

	*out = dflt;
	if (!c)
		return 0;
	if (xml_text(c, text, sizeof(text), err) < 0)
		return -1;
	if (strcmp(text, "true") == 0) {
		*out = true;
	} else if (strcmp(text, "false") == 0) {
		*out = false;
	} else {
		xml_path(c, path, sizeof(path));
		return err_set(err, AMIS_E_MALFORMED_RESPONSE,
		               "element %s is \"%s\", not true/false", path, text);
	}
	return 0;
}

int xml_child_ll_opt(const xmlNode *node, const char *name, long long dflt, long long *out,
                     struct amis_err *err)
{
	xmlNodePtr c = xml_child(node, name);
	char text[32], path[256];
	char *end;
	long long v;

	*out = dflt;
	if (!c)
		return 0;
	if (xml_text(c, text, sizeof(text), err) < 0)
		return -1;
	errno = 0;
	v = strtoll(text, &end, 10);
	if (!text[0] || *end || errno) {
		xml_path(c, path, sizeof(path));
		return err_set(err, AMIS_E_MALFORMED_RESPONSE,
		               "element %s is \"%s\", not an integer", path, text);
	}
	*out = v;
	return 0;
}

xmlNodePtr xml_items_first(const xmlNode *parent, const char *set_name)
{
	return xml_child(xml_child(parent, set_name), "item");
}

xmlNodePtr xml_items_next(const xmlNode *item)
{
	return xml_next(item, "item");
}

size_t xml_items_count(const xmlNode *parent, const char *set_name)
{
	xmlNodePtr it;
	size_t n = 0;

	for (it = xml_items_first(parent, set_name); it; it = xml_items_next(it))
		n++;
	return n;
}
