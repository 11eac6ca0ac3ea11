#!/usr/bin/python3
"""test_doc_links.py - the documentation's links resolve (TAP).

For README.md, doc/*.md and every other Markdown file of the tree:

- every relative link and image ([text](path), [text](path#anchor),
  [text](#anchor), reference definitions) names a file or directory that
  exists inside the tree, and an anchor names a heading of the target file
  (GitHub's rule: lower case, punctuation dropped, spaces become hyphens,
  repeated headings get -1, -2, ...);
- no link is absolute (a path from /, file://): the docs are read both in
  the repository and as installed under /usr/share/doc/ami-snapshot/, and
  refer to nothing outside the tree;
- README and doc/ link only to README and doc/: make install puts them
  alone under /usr/share/doc/ami-snapshot/;
- README's documentation index links every file in doc/.

And in the code (C, Python, shell, SQL, the Makefile, packaging, CI): every
doc/NAME.md it mentions exists, and where a comment names a section --
doc/design.md, "Freezing" or README "Hacking" -- that file has a heading
starting with those words.

Reads the tree only; needs nothing but python3.
"""

import os
import re
import sys

TOP = os.path.realpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SKIP_DIRS = {".git", "build", "out", "results", "__pycache__", "corpus", "node_modules"}

results = []


def ok(cond, desc, diag=()):
    results.append(bool(cond))
    print(("ok" if cond else "not ok") + " %d - %s" % (len(results), desc))
    for line in diag:
        print("# " + line)


def rel(path):
    return os.path.relpath(path, TOP)


def tree_files(pred):
    for root, dirs, files in os.walk(TOP):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for f in sorted(files):
            p = os.path.join(root, f)
            if pred(p):
                yield p


# ---- Markdown: headings, links ----

FENCE = re.compile(r"^\s{0,3}(```|~~~)")
HEADING = re.compile(r"^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$")
INLINE_LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
REF_DEF = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1")


def prose_lines(text):
    """(line number, line) of the lines outside fenced code blocks.  Lines
    of indented code are kept: a heading cannot be indented by four, and
    what they hold does not look like a link."""
    fenced = False
    for n, line in enumerate(text.split("\n"), 1):
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield n, line


def slug(heading):
    h = re.sub(r"!?\[((?:[^\[\]]|\[[^\]]*\])*)\]\([^)]*\)", r"\1", heading)
    h = h.strip().lower()
    h = re.sub(r"[^\w\- ]", "", h)
    return h.replace(" ", "-")


_anchor_cache = {}


def headings(path):
    """The heading texts of a Markdown file, in order."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    out = []
    for _, line in prose_lines(text):
        m = HEADING.match(line)
        if m:
            out.append(m.group(2))
    return out


def anchors(path):
    if path not in _anchor_cache:
        seen = {}
        result = set()
        for h in headings(path):
            s = slug(h)
            if s in seen:
                seen[s] += 1
                result.add("%s-%d" % (s, seen[s]))
            else:
                seen[s] = 0
                result.add(s)
        _anchor_cache[path] = result
    return _anchor_cache[path]


def links(path):
    """(line number, target) of every link and image of a Markdown file."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    for n, line in prose_lines(text):
        m = REF_DEF.match(line)
        if m:
            yield n, m.group(1)
            continue
        bare = CODE_SPAN.sub("", line)
        for m in INLINE_LINK.finditer(bare):
            yield n, m.group(1)


def check_link(src, target):
    """An error message, or None."""
    if re.match(r"^(https?|mailto):", target):
        return None
    if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):
        return "%s: not a relative link" % target
    if target.startswith("/"):
        return "%s: absolute path" % target
    path, _, anchor = target.partition("#")
    if path:
        dest = os.path.realpath(os.path.join(os.path.dirname(src), path))
        if dest != TOP and not dest.startswith(TOP + os.sep):
            return "%s: outside the tree" % target
        if not os.path.exists(dest):
            return "%s: no such file" % target
    else:
        dest = src
    if anchor:
        if not dest.endswith(".md") or not os.path.isfile(dest):
            return "%s: anchor into a file that is not Markdown" % target
        if anchor not in anchors(dest):
            return "%s: no such heading in %s" % (target, rel(dest))
    return None


md_files = list(tree_files(lambda p: p.endswith(".md")))
readme = os.path.join(TOP, "README.md")
doc = os.path.join(TOP, "doc")

ok(os.path.isfile(readme) and os.path.isdir(doc), "README.md and doc/ exist")

for md in md_files:
    errors = []
    count = 0
    for n, target in links(md):
        count += 1
        err = check_link(md, target)
        if err:
            errors.append("%s:%d: %s" % (rel(md), n, err))
    ok(not errors, "%s: %d links resolve inside the tree" % (rel(md), count), errors)

# make install puts README.md and doc/ alone in /usr/share/doc/ami-snapshot:
# their links must stay within them to work there too.
installed = [readme] + [m for m in md_files if os.path.dirname(m) == doc]
errors = []
for md in installed:
    for n, target in links(md):
        path = target.partition("#")[0]
        if not path or re.match(r"^[a-z][a-z0-9+.-]*:", path, re.I):
            continue
        dest = os.path.realpath(os.path.join(os.path.dirname(md), path))
        if dest != readme and not dest.startswith(doc + os.sep):
            errors.append("%s:%d: %s is neither README.md nor in doc/" % (rel(md), n, target))
ok(not errors, "README and doc/ link only to README and doc/ (as installed)", errors)

# README's documentation index: every file in doc/ is linked from README.
linked = set()
for _, target in links(readme):
    path = target.partition("#")[0]
    if path:
        linked.add(os.path.realpath(os.path.join(TOP, path)))
missing = [
    "doc/" + f
    for f in sorted(os.listdir(doc))
    if os.path.isfile(os.path.join(doc, f)) and os.path.realpath(os.path.join(doc, f)) not in linked
]
ok(not missing, "README links every file in doc/", ["not linked from README: " + m for m in missing])

# ---- the code's references to the docs ----

CODE_EXT = (".c", ".h", ".py", ".sh", ".sql", ".out", ".service", ".example", ".conf")
CODE_NAMES = ("Makefile", "run")
# Comment leaders joined away when a reference wraps onto the next line.
WRAP = re.compile(r"\s*\n\s*(?:\*|#|//|--)?\s*")
DOC_REF = re.compile(r"\b(doc/[\w.-]+\.md)(?:,?\s+\(?\"([^\"]+)\")?")
README_REF = re.compile(r"\bREADME(?:\.md)?,?\s+\(?\"([^\"]+)\"")


def has_heading(path, words):
    words = " ".join(words.split()).lower()
    for h in headings(path):
        plain = " ".join(re.sub(r"[`*]", "", h).split()).lower()
        if plain.startswith(words):
            return True
    return False


code = list(
    tree_files(
        lambda p: (p.endswith(CODE_EXT) or os.path.basename(p) in CODE_NAMES)
        and os.sep + "test" + os.sep + "fuzz" + os.sep + "corpus" not in p
        and p != os.path.abspath(__file__)
    )
)
errors = []
count = 0
for src in code:
    try:
        with open(src, encoding="utf-8") as f:
            text = WRAP.sub(" ", f.read())
    except UnicodeDecodeError:
        continue
    for m in DOC_REF.finditer(text):
        count += 1
        path = os.path.join(TOP, m.group(1))
        if not os.path.isfile(path):
            errors.append("%s: %s does not exist" % (rel(src), m.group(1)))
        elif m.group(2) and not has_heading(path, m.group(2)):
            errors.append('%s: %s has no section "%s"' % (rel(src), m.group(1), m.group(2)))
    for m in README_REF.finditer(text):
        count += 1
        # test/emulator has its own README, next to the code that names it
        target = os.path.join(os.path.dirname(src), "README.md")
        if not os.path.isfile(target):
            target = readme
        if not has_heading(target, m.group(1)):
            errors.append('%s: %s has no section "%s"' % (rel(src), rel(target), m.group(1)))
ok(not errors, "the code's %d references to doc/*.md and README sections resolve" % count, errors)

print("1..%d" % len(results))
sys.exit(0 if all(results) else 1)
