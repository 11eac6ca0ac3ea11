"""tap.py - minimal TAP output for the Python end-to-end tests (run by prove)."""

import sys
import traceback

_n = 0
_failed = 0


def ok(cond, desc, diag=None):
    global _n, _failed
    _n += 1
    if not cond:
        _failed += 1
    print("%sok %d - %s" % ("" if cond else "not ", _n, desc), flush=True)
    if not cond and diag:
        for line in str(diag).splitlines():
            print("#   " + line, flush=True)
    return bool(cond)


def is_(got, want, desc):
    return ok(got == want, desc, "got:  %r\nwant: %r" % (got, want))


def diag(msg):
    for line in str(msg).splitlines():
        print("# " + line, flush=True)


def bail(exc, log_files=()):
    """An unexpected exception: report it as a failed test, with log tails."""
    ok(False, "unexpected exception", "".join(traceback.format_exception(exc)))
    for path in log_files:
        try:
            with open(path) as f:
                diag("%s (tail):\n%s" % (path, f.read()[-3000:]))
        except OSError:
            pass


def done():
    print("1..%d" % _n, flush=True)
    sys.exit(1 if _failed else 0)
