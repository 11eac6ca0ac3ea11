#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""Tests for ec2emu.py (the EC2 + IMDS emulator).

Run:  /usr/bin/python3 test/emulator/test_ec2emu.py [-v] [-k PATTERN]
Prints a final "N passed, N failed" line; exit status 0 only if all passed.

The tests are in tests/, a module a topic; tests/support.py holds what they
share.  Every test talks to a real emulator subprocess on an ephemeral port
with a temporary state dir and small sparse backing files.  Positive EC2
paths go through a real botocore client (botocore signs -> positive SigV4
check, botocore parses -> XML compatibility); negative auth paths use raw
HTTP.
"""

import os
import sys
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from tests import support  # noqa: E402
from tests import (test_actions, test_auth, test_cli_lifecycle, test_copies,  # noqa: E402
                   test_faults, test_images, test_imds, test_instances, test_lifecycle,
                   test_sets, test_sigv4_vectors, test_volumes)

MODULES = [test_sigv4_vectors, test_actions, test_auth, test_faults, test_imds,
           test_cli_lifecycle, test_volumes, test_images, test_instances, test_copies,
           test_lifecycle, test_sets]


# --------------------------------------------------------------------------

def main(argv):
    verbose = "-v" in argv
    patterns = [argv[i + 1] for i, a in enumerate(argv) if a == "-k" and i + 1 < len(argv)]
    support.watchdog(int(os.environ.get("EC2EMU_TEST_TIMEOUT", "200")))
    loader = unittest.TestLoader()
    if patterns:
        loader.testNamePatterns = ["*%s*" % p for p in patterns]
    suite = unittest.TestSuite(loader.loadTestsFromModule(m) for m in MODULES)
    t0 = time.monotonic()
    try:
        res = unittest.TextTestRunner(stream=sys.stdout, verbosity=2 if verbose else 1).run(suite)
    finally:
        support.stop_world()
    failed = len(res.failures) + len(res.errors) + len(res.unexpectedSuccesses)
    passed = res.testsRun - failed - len(res.skipped)
    sys.stdout.write("time %.1fs\n" % (time.monotonic() - t0))
    sys.stdout.write("%d passed, %d failed\n" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
