"""Small helpers: EC2 and IMDS timestamps, resource ids, atomic writes."""

import datetime
import os
import secrets
import string
import time

API_VERSION = "2016-11-15"


def iso_ms(ts):
    """EC2 timestamp format: 2024-01-02T03:04:05.678Z"""
    ts = float(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + \
        ".%03dZ" % int(round((ts % 1) * 1000) % 1000)


def iso_s(ts):
    """IMDS timestamp format: 2024-01-02T03:04:05Z"""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(ts)))


def parse_iso(text):
    """Parse 2024-01-02T03:04:05(.123)Z / +00:00 into epoch seconds."""
    t = text.strip()
    if t.endswith("Z"):
        t = t[:-1] + "+00:00"
    dt = datetime.datetime.fromisoformat(t)
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return dt.timestamp()


def new_id(prefix, nhex=17):
    return "%s-%s" % (prefix, secrets.token_hex(10)[:nhex])


def rand_alnum(n, alphabet=string.ascii_uppercase + string.digits):
    return "".join(secrets.choice(alphabet) for _ in range(n))


def atomic_write(path, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(d, ".%s.tmp.%d" % (os.path.basename(path), os.getpid()))
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def unlink_quiet(path):
    """Remove a file that may be gone already."""
    if path:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
