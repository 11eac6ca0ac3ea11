#!/usr/bin/env python3
"""
moto_server.py - moto's server (python3 -m moto.server, same arguments) with
one fix: its SigV4 check hashes the request body that was sent.

moto (seen with 5.2.1) checks the signature of a form-encoded request over
a body it rebuilds from the parsed form, with urlencode(), which writes a
space as "+".  A request that encodes a space as "%20" -- as the helper
does, and as AWS accepts -- then fails with AuthFailure however right its
signature is.  Here the request's bytes are read (and kept by werkzeug) before
moto looks at the form, so moto sees the body as sent, as it does when it
mocks boto in-process.  Nothing else changes: moto still checks the access
key, the signature and the IAM policy.

Run it with the Python that has moto:
    python3 test/emulator/moto_server.py -H 127.0.0.1 -p 0
"""

import sys

from moto.core.responses import BaseResponse
from moto.server import main

_setup_class = BaseResponse.setup_class


def setup_class(self, request, full_url, headers, use_raw_body=False):
    if getattr(request, "mimetype", None) == "application/x-www-form-urlencoded":
        request.get_data(cache=True)  # the form is then parsed from these bytes
    _setup_class(self, request, full_url, headers, use_raw_body)


BaseResponse.setup_class = setup_class

if __name__ == "__main__":
    main(sys.argv[1:])
