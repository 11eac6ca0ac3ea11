/*
 * xml.h - a thin libxml2 wrapper for AWS Query API responses.
 *
 * In the spirit of pgBackRest's xml module: parse with libxml2's error
 * output silenced, then look children up by LOCAL name (namespaces and
 * member order do not matter, as in the EC2 responses: "Match local names,
 * not namespaces or order"), with a required lookup that fails with a clear
 * "MalformedResponse" error naming the missing element's path.
 *
 * Documents with a DTD are refused (AWS never sends one; it is how entity
 * expansion attacks start), the network is never used and entities are not
 * substituted.
 */
#ifndef AMIS_XML_H
#define AMIS_XML_H

#include <stdbool.h>
#include <stddef.h>

#include <libxml/tree.h>

#include "util.h"

/* How many bytes of a bad body an error message quotes. */
#define XML_EXCERPT_MAX 200

/*
 * Parses body[0..len) into *out (free it with xml_free).  Returns 0, or -1
 * with err code "MalformedResponse" and a message quoting libxml2's reason
 * and at most XML_EXCERPT_MAX bytes of the body, reduced to printable ASCII.
 */
int xml_parse(const char *body, size_t len, xmlDocPtr *out, struct amis_err *err);
void xml_free(xmlDocPtr doc);

/* The root element, or NULL. */
xmlNodePtr xml_root(xmlDocPtr doc);
/* True if node is an element whose local name is name. */
bool xml_is(const xmlNode *node, const char *name);

/* First child element of node with that local name, or NULL (node may be NULL). */
xmlNodePtr xml_child(const xmlNode *node, const char *name);
/* Same, but a missing child fails with "MalformedResponse". */
xmlNodePtr xml_child_required(const xmlNode *node, const char *name, struct amis_err *err);
/* Next sibling element after node with that local name, or NULL. */
xmlNodePtr xml_next(const xmlNode *node, const char *name);

/*
 * The text content of node, with surrounding white space removed, copied
 * into buf.  Fails with "MalformedResponse" if it does not fit.
 */
int xml_text(const xmlNode *node, char *buf, size_t bufsz, struct amis_err *err);
/* The trimmed text content as a malloc'ed string ("" for a NULL node). */
char *xml_text_dup(const xmlNode *node);

/* Text of a required child element. */
int xml_child_text(const xmlNode *node, const char *name, char *buf, size_t bufsz,
                   struct amis_err *err);
/* Text of an optional child element: "" when absent. */
int xml_child_text_opt(const xmlNode *node, const char *name, char *buf, size_t bufsz,
                       struct amis_err *err);
/* Optional "true"/"false" child; *out = dflt when absent; other text fails. */
int xml_child_bool_opt(const xmlNode *node, const char *name, bool dflt, bool *out,
                       struct amis_err *err);
/* Optional decimal integer child; *out = dflt when absent; other text fails. */
int xml_child_ll_opt(const xmlNode *node, const char *name, long long dflt, long long *out,
                     struct amis_err *err);

/*
 * AWS Query lists: <fooSet><item>...</item><item>...</item></fooSet>.
 * xml_items_first returns the first <item> of parent's <set_name> child,
 * NULL if the set is absent or empty; xml_items_next the following one.
 *
 *	for (it = xml_items_first(root, "snapshotSet"); it; it = xml_items_next(it))
 */
xmlNodePtr xml_items_first(const xmlNode *parent, const char *set_name);
xmlNodePtr xml_items_next(const xmlNode *item);
size_t xml_items_count(const xmlNode *parent, const char *set_name);

/* "Root/child/item" path of node, for error messages. */
void xml_path(const xmlNode *node, char *buf, size_t bufsz);

/*
 * Copies at most XML_EXCERPT_MAX bytes of body into out as printable ASCII
 * (white space becomes ' ', other bytes '.'), with "..." when cut.
 */
void xml_excerpt(const char *body, size_t len, char *out, size_t outsz);

#endif
