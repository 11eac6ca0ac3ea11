#!/usr/bin/python3
"""
test_errcodes.py - the error-code registry (helper/common/errcodes.h) and
its table in doc/errors.md agree, and every code the helper's sources set
by name is registered.  TAP.
"""

import glob
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOP = os.path.normpath(os.path.join(HERE, "..", ".."))
n = 0
failed = 0


def ok(cond, desc, diag=None):
    global n, failed
    n += 1
    print("%sok %d - %s" % ("" if cond else "not ", n, desc))
    if not cond:
        failed += 1
        if diag:
            for line in str(diag).splitlines():
                print("#   " + line)


def main():
    hdr = open(os.path.join(TOP, "helper", "common", "errcodes.h")).read()
    table = hdr[hdr.index("#define AMIS_ERROR_CODES"):]
    registry = re.findall(r'X\(([A-Z_0-9]+),\s*"([^"]+)"', table)
    ids = [i for i, _ in registry]
    codes = [c for _, c in registry]
    ok(len(codes) > 50, "the registry lists the helper's codes (%d)" % len(codes))
    ok(len(set(codes)) == len(codes), "no code is registered twice",
       sorted(c for c in codes if codes.count(c) > 1))
    ok(len(set(ids)) == len(ids), "no enum name is used twice")

    doc = open(os.path.join(TOP, "doc", "errors.md")).read()
    helper_part = doc.split("## Codes the extension sets")[0]
    documented = re.findall(r"^\| `([^`]+)` \|", helper_part, re.M)
    ok(set(documented) == set(codes),
       "doc/errors.md lists exactly the registered codes",
       "missing from the doc: %s\nnot in the registry: %s" % (
           sorted(set(codes) - set(documented)), sorted(set(documented) - set(codes))))
    ok(len(documented) == len(set(documented)), "doc/errors.md lists each code once")

    # Codes set by name rather than through an AMIS_E_ constant.
    sources = glob.glob(os.path.join(TOP, "helper", "*.c")) + \
        glob.glob(os.path.join(TOP, "helper", "*", "*.c"))
    by_name = set()
    patterns = [
        r'err_set_code\([^,]+,\s*"([A-Za-z][A-Za-z0-9.]*)"',
        r'snprintf\([a-z_>.]*code, sizeof\([^)]*\), "([A-Za-z][A-Za-z0-9.]*)"\)',
        r'send_short_error\([^,]+,\s*[^,]+,\s*"([A-Za-z][A-Za-z0-9.]*)"',
        r'\?\s*[a-z_]+\s*:\s*"([A-Z][A-Za-z0-9]*Error)"',
    ]
    for path in sources:
        text = open(path).read()
        for p in patterns:
            for code in re.findall(p, text, re.S):
                by_name.add((os.path.relpath(path, TOP), code))
        ok(not re.search(r'err_set\(\s*[^,()]+,\s*"', text),
           "%s: err_set() takes registered codes only" % os.path.relpath(path, TOP))
    unknown = sorted((f, c) for f, c in by_name if c not in codes)
    ok(by_name and not unknown, "every code set by name (%d places) is registered" % len(by_name),
       unknown)
    print("1..%d" % n)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
