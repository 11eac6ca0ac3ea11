#!/usr/bin/python3
"""
End to end: hostile or broken input to the helper, and AWS-side failures in
PREPARE.  Each case leaves the database serving, nothing frozen, and the
helper serving the next request.

- an unauthorized uid (in the socket's group, not in allowed_users) is
  disconnected before anything is read;
- garbage, an oversized frame, a truncated frame, a foreign field: the
  connection is closed and the reason logged;
- IMDS down and a malformed EC2 answer: clear errors, recorded;
- credentials that EC2 refuses as expired are fetched again.
"""

import os
import struct
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
from tap import bail, done, is_, ok  # noqa: E402
from world import World  # noqa: E402
from e2e import log_pos, log_since  # noqa: E402

UNAUTHORIZED_UID = 64123


def raw_exchange(w, payload, uid, gid, read_timeout=5.0):
    """Connects to the helper as uid:gid, sends payload, returns what came back
    (b'' when the helper closed the connection) or None on a read timeout."""
    code = r"""
import os, socket, sys
os.setgid(%d); os.setuid(%d)
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.connect(%r)
s.settimeout(%f)
try:
    s.sendall(bytes.fromhex(%r))
except OSError:
    pass
try:
    data = s.recv(65536)
    sys.stdout.write("DATA:" + data.hex())
except socket.timeout:
    sys.stdout.write("TIMEOUT")
except OSError as e:
    sys.stdout.write("ERR:" + str(e))
""" % (gid, uid, w.path("run", "helper.sock"), read_timeout, payload.hex())
    r = subprocess.run(["/usr/bin/python3", "-c", code], capture_output=True, text=True,
                       timeout=read_timeout + 10)
    out = r.stdout
    if out.startswith("DATA:"):
        return bytes.fromhex(out[5:])
    if out.startswith("ERR:"):
        return b""  # reset by the helper: closed
    return None


def frame(msg_type, fields, version=1, length=None):
    body = b"".join(struct.pack(">HH", t, len(v)) + v for t, v in fields)
    return b"AMSP" + struct.pack(">HHI", version, msg_type,
                                 len(body) if length is None else length) + body


def still_fine(w, what):
    ok(w.frozen_mounts() == [], "%s: nothing frozen" % what)
    is_(w.psql("SELECT status FROM ami_snapshot('after %s')" % what), "succeeded",
        "%s: the helper serves the next request" % what)


def main():
    w = World(layout=[("data", "ext4"), ("wal", "xfs")])
    try:
        pg_uid, pg_gid = w.pg_uid, w.pg_gid

        pos = log_pos(w)
        got = raw_exchange(w, frame(1, [(2, b"nightly")]), UNAUTHORIZED_UID, pg_gid)
        is_(got, b"", "unauthorized uid: disconnected at once")
        ok("uid %d is not in allowed_users" % UNAUTHORIZED_UID in log_since(w, pos),
           "unauthorized uid: logged")

        cases = [
            ("garbage", os.urandom(64), "bad magic"),
            ("oversized frame", b"AMSP" + struct.pack(">HHI", 1, 1, 10 << 20), "payload too long"),
            ("unknown version", frame(1, [], version=9), "unsupported protocol version"),
            ("unknown message type", frame(99, []), "unknown message type"),
            ("foreign field", frame(1, [(70, b"x")]), "field not allowed"),
            ("missing fields", frame(1, [(2, b"nightly")]), "required field missing"),
            ("NUL in a string", frame(1, [(1, b"r1"), (2, b"nig\0htly"), (3, b"\1"),
                                          (4, b"/x")]), "NUL"),
            ("out-of-order message", frame(3, [(30, b"0/1"), (31, b"\0\0\0\1")]), "out of order"),
        ]
        for name, payload, reason in cases:
            pos = log_pos(w)
            got = raw_exchange(w, payload, pg_uid, pg_gid)
            is_(got, b"", "%s: connection closed" % name)
            ok(reason in log_since(w, pos), "%s: reason logged (%s)" % (name, reason),
               log_since(w, pos)[-500:])

        # A truncated frame, then silence: the helper keeps serving others.
        pos = log_pos(w)
        got = raw_exchange(w, frame(1, [(2, b"nightly")])[:10], pg_uid, pg_gid, read_timeout=1)
        is_(got, None, "truncated frame: the helper waits for the rest (no reply)")
        still_fine(w, "hostile input")

        # IMDS down in PREPARE (a fresh helper has nothing cached).
        w.stop_helper()
        w.emulator_control({"imds": "down", "mode": "close"})
        w.start_helper()
        r = w.psql("SELECT * FROM ami_snapshot('imds down')", check=False)
        ok(r.returncode != 0 and "Imds" in r.stderr, "IMDS down: a clear error", r.stderr)
        is_(w.psql("SELECT status, error_code FROM ami_snapshot_history "
                   "WHERE name = 'imds down'"), "failed|ImdsUnavailable",
            "IMDS down: recorded")
        w.emulator_control({"imds": "ok"})
        still_fine(w, "imds down")

        # Credentials refused as expired (revoked or rotated early, while the
        # helper's cache still trusts them): fetched again, the call succeeds.
        w.psql("SELECT status FROM ami_snapshot('warm the cache')")
        w.emulator_control({"expire_imds_credentials": True})
        w.emulator_control({"rotate_imds_credentials": True})
        pos = log_pos(w)
        is_(w.psql("SELECT status FROM ami_snapshot('expired credentials')"), "succeeded",
            "expired credentials: fetched again, the snapshot succeeds")
        ok("refused the credentials" in log_since(w, pos),
           "expired credentials: the refresh is logged", log_since(w, pos)[-800:])

        # A malformed answer to the call made while frozen (skip the DryRuns).
        w.emulator_control({"action": "CreateSnapshots", "fault": "malformed", "count": 1,
                            "dry_run": False})
        r = w.psql("SELECT * FROM ami_snapshot('malformed answer')", check=False)
        ok(r.returncode != 0 and "MalformedResponse" in r.stderr,
           "malformed EC2 answer: a clear error", r.stderr)
        w.emulator_reset()
        still_fine(w, "malformed answer")
    except Exception as e:
        bail(e, [w.helper_log])
    finally:
        w.close()
    done()


if __name__ == "__main__":
    main()
