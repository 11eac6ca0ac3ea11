"""SigV4 signatures recomputed with botocore, and the Authorization header.

The emulator checks every EC2 request with these; so does the fake EC2 of
the C unit tests (test/unit/ec2_fake_server.py).
"""

import re
import sys
import urllib.parse

try:
    import botocore.auth
    import botocore.awsrequest
    import botocore.credentials
except ImportError:  # pragma: no cover
    sys.stderr.write("ec2emu: python3-botocore is required; run it with "
                     "/usr/bin/python3 (Debian's interpreter)\n")
    raise

from .errors import EC2Error

SIGV4_TIMESTAMP = "%Y%m%dT%H%M%SZ"


class _ExactHeadersSigV4(botocore.auth.SigV4Auth):
    """SigV4Auth that signs exactly the headers the client said it signed.

    botocore's headers_to_sign() drops user-agent/expect and adds host; a
    verifier must use the client's SignedHeaders list instead.
    """

    def __init__(self, credentials, service_name, region_name, signed):
        super().__init__(credentials, service_name, region_name)
        self._signed = set(signed)

    def headers_to_sign(self, request):
        header_map = botocore.awsrequest.HTTPHeaders()
        for name, value in request.headers.items():
            if name.lower() in self._signed:
                header_map[name.lower()] = value
        return header_map


def sigv4_signature(method, url, headers, signed_headers, body, secret, region, service,
                    timestamp, access_key="AKID", token=None):
    """Recompute a SigV4 signature with botocore.

    headers: list of (name, value) as received; only the signed ones are used.
    timestamp: the request's x-amz-date (YYYYMMDDTHHMMSSZ); it is fixed in
    request.context['timestamp'] instead of calling add_auth(), which would
    stamp "now".  Returns (signature, canonical_request, string_to_sign).
    """
    signed = [h.lower() for h in signed_headers]
    split = urllib.parse.urlsplit(url)
    req = botocore.awsrequest.AWSRequest(
        method=method, url=urllib.parse.urlunsplit((split.scheme, split.netloc, split.path, "", "")),
        data=body)
    if split.query:
        req.params = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
    hh = botocore.awsrequest.HTTPHeaders()
    for name, value in headers:
        if name.lower() in signed:
            hh[name] = value
    req.headers = hh
    req.context["timestamp"] = timestamp
    auth = _ExactHeadersSigV4(botocore.credentials.Credentials(access_key, secret, token),
                              service, region, signed)
    canonical = auth.canonical_request(req)
    sts = auth.string_to_sign(req, canonical)
    return auth.signature(sts, req), canonical, sts


def parse_authorization(value):
    if not value:
        raise EC2Error("MissingAuthenticationToken")
    algo, _, rest = value.strip().partition(" ")
    if algo != "AWS4-HMAC-SHA256":
        raise EC2Error("IncompleteSignature",
                       "Unsupported authorization type '%s'; use AWS4-HMAC-SHA256" % algo[:40])
    fields = {}
    for part in rest.split(","):
        k, sep, v = part.strip().partition("=")
        if sep:
            fields[k.strip()] = v.strip()
    missing = [k for k in ("Credential", "SignedHeaders", "Signature") if not fields.get(k)]
    if missing:
        raise EC2Error("IncompleteSignature",
                       "Authorization header requires '%s' parameter." % missing[0])
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise EC2Error("IncompleteSignature",
                       "Credential must have exactly 5 slash-delimited elements, e.g. "
                       "keyID/date/region/service/aws4_request")
    if not re.match(r"^[0-9a-f]{64}$", fields["Signature"]):
        raise EC2Error("IncompleteSignature", "Signature must be 64 lowercase hex digits")
    return {"akid": scope[0], "date": scope[1], "region": scope[2], "service": scope[3],
            "signed": [h.strip().lower() for h in fields["SignedHeaders"].split(";") if h.strip()],
            "signature": fields["Signature"]}


def authorization_header(access_key, timestamp, region, service, signed_headers, signature):
    """The Authorization header, as botocore writes it, for a signature of
    sigv4_signature(): the reverse of parse_authorization()."""
    return "AWS4-HMAC-SHA256 Credential=%s/%s/%s/%s/aws4_request, SignedHeaders=%s, Signature=%s" % (
        access_key, timestamp[:8], region, service,
        ";".join(sorted({h.lower().strip() for h in signed_headers})), signature)


def presigned_parts(url):
    """A SigV4 query-string pre-signed URL -> (its query pairs, the fields of
    its X-Amz-Credential).  ValueError says what is wrong with its form."""
    split = urllib.parse.urlsplit(url)
    if split.scheme not in ("http", "https") or not split.netloc:
        raise ValueError("not an http(s) URL")
    try:
        pairs = urllib.parse.parse_qsl(split.query, keep_blank_values=True, strict_parsing=True)
    except ValueError:
        raise ValueError("malformed query string")
    q = dict(pairs)
    if len(q) != len(pairs):
        raise ValueError("a query parameter appears twice")
    for k in ("X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
              "X-Amz-SignedHeaders", "X-Amz-Signature"):
        if not q.get(k):
            raise ValueError("%s is missing" % k)
    if q["X-Amz-Algorithm"] != "AWS4-HMAC-SHA256":
        raise ValueError("X-Amz-Algorithm is not AWS4-HMAC-SHA256")
    scope = q["X-Amz-Credential"].split("/")
    if len(scope) != 5 or scope[4] != "aws4_request":
        raise ValueError("X-Amz-Credential is not KEY/DATE/REGION/SERVICE/aws4_request")
    return pairs, {"akid": scope[0], "date": scope[1], "region": scope[2], "service": scope[3]}


def presigned_signature(url, secret, region, service, timestamp, access_key):
    """The signature a pre-signed GET URL should carry (botocore's
    SigV4QueryAuth: every query parameter but X-Amz-Signature, the signed
    headers, which for an EC2 pre-signed URL are just host)."""
    split = urllib.parse.urlsplit(url)
    pairs = [(k, v) for k, v in urllib.parse.parse_qsl(split.query, keep_blank_values=True)
             if k != "X-Amz-Signature"]
    signed = [h for h in dict(pairs)["X-Amz-SignedHeaders"].lower().split(";") if h]
    bare = urllib.parse.urlunsplit((split.scheme, split.netloc, split.path or "/",
                                    urllib.parse.urlencode(pairs, quote_via=urllib.parse.quote),
                                    ""))
    sig, _, _ = sigv4_signature("GET", bare, [("host", split.netloc)], signed, b"", secret,
                                region, service, timestamp, access_key)
    return sig
