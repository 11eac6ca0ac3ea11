#!/usr/bin/python3
"""test_imds.py - imds.c and creds.c against a fake IMDSv2 on 127.0.0.1.

Compiles test/unit/imds-driver.c with the helper sources it needs (a
compile failure is a test failure, not a skip), starts a fake IMDSv2 in a
thread, runs the driver against it and checks what it printed and what the
server saw.  TAP output for prove.

Environment: CC (default cc), SAN (extra compile/link flags, e.g.
"-fsanitize=address,undefined").
"""

import calendar
import http.server
import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
HELPER = os.path.join(ROOT, "helper")

# The driver links only what it exercises, so that unrelated helper
# modules being mid-change cannot break this test.
SOURCES = [os.path.join(HELPER, f) for f in
           ("common/util.c", "common/errcodes.c", "common/log.c", "worker/http.c", "worker/imds.c",
            "worker/creds.c")]
INCLUDES = ["-I" + os.path.join(HELPER, d) for d in ("common", "worker")]
PKGS = ["libcurl", "json-c", "inih"]

ROLE = "ami-snapshot-test-role"
INSTANCE_ID = "i-0123456789abcdef0"
E0 = calendar.timegm((2030, 1, 1, 0, 0, 0))  # expiration of the first credentials

_n = 0
_failed = 0


def ok(cond, name, diag=None):
    global _n, _failed
    _n += 1
    if not cond:
        _failed += 1
    print("%sok %d - %s" % ("" if cond else "not ", _n, name))
    if not cond and diag is not None:
        for line in str(diag).splitlines():
            print("#   " + line)
    sys.stdout.flush()
    return cond


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


class State:
    """What the fake IMDS does and what it saw; reset for every case."""

    def __init__(self):
        self.lock = threading.Lock()
        self.tokens = {}          # token -> monotonic expiry
        self.token_ttls = []      # TTL header of each PUT
        self.requests = []        # (method, path, status)
        self.reject_next = 0      # answer this many valid-token GETs with 401
        self.always_401 = False
        self.delay = {}           # path -> seconds before answering
        self.identity_status = 200
        self.role_status = 200
        self.creds_fetches = 0
        self.creds_fail_after = None  # fetches after this many answer 500

    def count(self, method, path=None, status=None):
        with self.lock:
            return sum(1 for m, p, s in self.requests
                       if m == method and (path is None or p == path)
                       and (status is None or s == status))


STATE = State()
STOP = threading.Event()


class FakeImds(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as the client reuses connections

    def log_message(self, fmt, *args):
        pass

    def reply(self, status, body=b"", ctype="text/plain"):
        with STATE.lock:
            STATE.requests.append((self.command, self.path, status))
        if isinstance(body, str):
            body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def pause(self):
        """Delays as configured; True if the client is presumed gone."""
        d = STATE.delay.get(self.path)
        if d:
            STOP.wait(d)  # returns early when the server is stopped
            self.close_connection = True
            return True
        return False

    def do_PUT(self):
        if self.pause():
            return
        if self.path != "/latest/api/token":
            return self.reply(404)
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        with STATE.lock:
            STATE.token_ttls.append(ttl)
        if not ttl or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return self.reply(400)
        with STATE.lock:
            token = "AQAEA-fake-token-%d" % (len(STATE.tokens) + 1)
            STATE.tokens[token] = time.monotonic() + int(ttl)
        self.reply(200, token)

    def do_GET(self):
        if self.pause():
            return
        token = self.headers.get("X-aws-ec2-metadata-token")
        with STATE.lock:
            valid = token in STATE.tokens and STATE.tokens[token] > time.monotonic()
            if valid and STATE.reject_next > 0:
                STATE.reject_next -= 1
                STATE.tokens.pop(token)
                valid = False
        if not valid or STATE.always_401:
            return self.reply(401)
        p = self.path
        if p == "/latest/dynamic/instance-identity/document":
            if STATE.identity_status != 200:
                return self.reply(STATE.identity_status)
            return self.reply(200, json.dumps({
                "accountId": "123456789012", "architecture": "arm64",
                "availabilityZone": "eu-north-1c", "imageId": "ami-0abcdef1234567890",
                "instanceId": INSTANCE_ID, "instanceType": "c7g.large",
                "region": "eu-north-1", "version": "2017-09-30"}, indent=2),
                "application/json")
        if p == "/latest/meta-data/instance-id":
            return self.reply(200, INSTANCE_ID)
        if p == "/latest/meta-data/placement/region":
            return self.reply(200, "eu-north-1")
        if p == "/latest/meta-data/placement/availability-zone":
            return self.reply(200, "eu-north-1c")
        if p == "/latest/meta-data/iam/security-credentials/":
            if STATE.role_status != 200:
                return self.reply(STATE.role_status)
            return self.reply(200, ROLE + "\n")
        if p == "/latest/meta-data/iam/security-credentials/" + ROLE:
            with STATE.lock:
                STATE.creds_fetches += 1
                n = STATE.creds_fetches
            if STATE.creds_fail_after is not None and n > STATE.creds_fail_after:
                return self.reply(500, "internal error")
            return self.reply(200, json.dumps({
                "Code": "Success", "LastUpdated": iso(E0 - 7200), "Type": "AWS-HMAC",
                "AccessKeyId": "ASIAFAKE%04d" % n,
                "SecretAccessKey": "fake-secret-%d" % n,
                "Token": "fake-session-token-%d-" % n + "x" * 1000,
                "Expiration": iso(E0 + (n - 1) * 3600)}, indent=2), "application/json")
        self.reply(404)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):
        # A client that timed out and hung up is what some cases are about.
        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def compile_driver(tmp):
    cc = shlex.split(os.environ.get("CC", "cc"))
    san = shlex.split(os.environ.get("SAN", ""))
    pc = subprocess.run(["pkg-config", "--cflags", "--libs"] + PKGS,
                        capture_output=True, text=True)
    if pc.returncode != 0:
        return None, "pkg-config failed: " + pc.stderr
    exe = os.path.join(tmp, "imds-driver")
    # No -Werror: warnings are the build's business (make WERROR=1), this
    # test is about behaviour.
    cmd = (cc + ["-std=gnu11", "-O1", "-g", "-Wall", "-Wextra", "-Wno-unused-parameter",
                 "-D_GNU_SOURCE"] + INCLUDES + san
           + ["-o", exe, os.path.join(HERE, "imds-driver.c")] + SOURCES
           + shlex.split(pc.stdout))
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        return None, " ".join(cmd) + "\n" + r.stdout + r.stderr
    return exe, None


def driver_env(tmp, **extra):
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": tmp,  # no ~/.aws/credentials of whoever runs the test
        "AWS_SHARED_CREDENTIALS_FILE": os.path.join(tmp, "no-such-credentials"),
        "NO_PROXY": "*",
        "no_proxy": "*",
    }
    for k in ("ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS"):
        if k in os.environ:
            env[k] = os.environ[k]
    env.update({k: v for k, v in extra.items() if v is not None})
    return env


def run(exe, env, *args):
    """Runs the driver; returns (list of result dicts, stderr, wall seconds)."""
    t0 = time.monotonic()
    r = subprocess.run([exe] + [str(a) for a in args], env=env, capture_output=True,
                       text=True, timeout=30)
    wall = time.monotonic() - t0
    out = []
    for line in r.stdout.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            out.append({"cmd": "?", "ok": False, "code": "BadOutput", "msg": line})
    if r.returncode != 0:
        out.append({"cmd": "exit", "ok": False, "code": "Exit%d" % r.returncode,
                    "msg": r.stderr[-2000:]})
    return out, r.stderr, wall


def keys(results):
    return [r.get("access_key_id") if r.get("ok") else r.get("code") for r in results]


def main():
    global STATE
    tmp = tempfile.mkdtemp(prefix="test_imds.")
    server = None
    try:
        exe, why = compile_driver(tmp)
        if not ok(exe is not None, "imds-driver compiles", why):
            print("Bail out! cannot test IMDS without the driver")
            return 1

        server = Server(("127.0.0.1", 0), FakeImds)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = "http://127.0.0.1:%d" % server.server_address[1]
        env = driver_env(tmp, AWS_EC2_METADATA_SERVICE_ENDPOINT=url)

        # 1. Normal flow; the endpoint comes from AWS_EC2_METADATA_SERVICE_ENDPOINT.
        STATE = State()
        res, err, _ = run(exe, env, "identity", "role", "region", "creds", E0 - 3600,
                          "get", "/latest/meta-data/instance-id")
        ok(len(res) == 5 and all(r["ok"] for r in res), "normal flow succeeds", res)
        idn = res[0] if res else {}
        ok(idn.get("instance_id") == INSTANCE_ID and idn.get("region") == "eu-north-1"
           and idn.get("availability_zone") == "eu-north-1c"
           and idn.get("account_id") == "123456789012"
           and idn.get("architecture") == "arm64",
           "identity from the instance identity document", idn)
        ok(len(res) > 1 and res[1].get("role") == ROLE, "role name", res[1:2])
        ok(len(res) > 2 and res[2].get("region") == "eu-north-1", "region from IMDS",
           res[2:3])
        c = res[3] if len(res) > 3 else {}
        ok(c.get("source") == "imds:" + ROLE and c.get("access_key_id") == "ASIAFAKE0001"
           and c.get("expiration") == E0 and c.get("token_len") == 1000 + len(
               "fake-session-token-1-") and c.get("secret_len") == len("fake-secret-1"),
           "role credentials", c)
        ok(len(res) > 4 and res[4].get("body") == INSTANCE_ID, "plain imds_get", res[4:])
        ok(STATE.count("PUT") == 1 and STATE.token_ttls == ["21600"],
           "one session token with a 21600 s TTL for all requests",
           (STATE.token_ttls, STATE.requests))
        ok(STATE.count("GET", status=401) == 0, "no request went without a valid token",
           STATE.requests)
        ok("fake-secret" not in err and "fake-session-token" not in err
           and "AQAEA-fake-token" not in err, "no secret or IMDS token in the logs", err)

        # 2. A GET answered 401 gets a new token and one retry.
        STATE = State()
        STATE.reject_next = 1
        res, _, _ = run(exe, env, "get", "/latest/meta-data/instance-id",
                        "get", "/latest/meta-data/instance-id")
        ok(len(res) == 2 and all(r["ok"] for r in res), "401 -> new token -> success", res)
        ok(STATE.count("PUT") == 2 and STATE.count("GET") == 3
           and STATE.count("GET", status=401) == 1,
           "exactly one token refetch, and the new token is reused", STATE.requests)

        # 3. A token refused every time: one retry, then ImdsError.
        STATE = State()
        STATE.always_401 = True
        res, _, _ = run(exe, env, "get", "/latest/meta-data/instance-id")
        ok(len(res) == 1 and not res[0]["ok"] and res[0]["code"] == "ImdsError"
           and "401" in res[0]["msg"], "persistent 401 -> ImdsError", res)
        ok(STATE.count("PUT") == 2 and STATE.count("GET") == 2, "... after a single retry",
           STATE.requests)

        # 4. The token is renewed before IMDS would expire it.
        STATE = State()
        res, _, _ = run(exe, env, "--token-ttl", 1, "get", "/latest/meta-data/instance-id",
                        "sleep", 1100, "get", "/latest/meta-data/instance-id")
        ok(len(res) == 3 and all(r["ok"] for r in res), "requests across token expiry", res)
        ok(STATE.count("PUT") == 2 and STATE.token_ttls == ["1", "1"]
           and STATE.count("GET", status=401) == 0,
           "token renewed proactively, never rejected", STATE.requests)

        # 5. IMDS down: connection refused -> ImdsUnavailable, quickly.
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        dead = "http://127.0.0.1:%d" % s.getsockname()[1]
        s.close()  # nothing listens there now
        res, _, wall = run(exe, driver_env(tmp, AWS_EC2_METADATA_SERVICE_ENDPOINT=dead),
                           "get", "/latest/meta-data/instance-id", "identity", "creds", E0)
        ok(len(res) == 3 and res[0]["code"] == "ImdsUnavailable"
           and res[1]["code"] == "ImdsUnavailable", "connection refused -> ImdsUnavailable",
           res)
        ok(len(res) == 3 and res[2]["code"] == "NoCredentials"
           and "unreachable" in res[2]["msg"],
           "credential chain: NoCredentials explaining IMDS is unreachable", res[2:])
        ok(wall < 2.0 and all(r.get("elapsed_ms", 9999) < 1000 for r in res),
           "... within the timeout (%.2f s for three calls)" % wall, res)

        # 6. Slow IMDS: the default 2 s deadline covers token and GET together.
        STATE = State()
        STATE.delay["/latest/meta-data/instance-id"] = 10
        res, _, wall = run(exe, env, "get", "/latest/meta-data/instance-id")
        r = res[0] if res else {}
        ok(r.get("code") == "ImdsUnavailable" and "timed out" in r.get("msg", ""),
           "slow IMDS -> ImdsUnavailable (timed out)", res)
        ok(1800 <= r.get("elapsed_ms", 0) <= 3000 and wall < 5,
           "... after the default 2 s (%s ms)" % r.get("elapsed_ms"), res)

        STATE = State()
        STATE.delay["/latest/api/token"] = 10
        res, _, wall = run(exe, env, "--timeout-ms", 300, "identity")
        r = res[0] if res else {}
        ok(r.get("code") == "ImdsUnavailable" and "token" in r.get("msg", "")
           and 250 <= r.get("elapsed_ms", 0) < 1200,
           "slow token PUT with a 300 ms timeout (%s ms), no fallback tried"
           % r.get("elapsed_ms"), res)
        ok(STATE.count("GET") == 0, "... and no GET was attempted", STATE.requests)

        # 7. Role credentials are refreshed 5 minutes before Expiration.
        STATE = State()
        res, _, _ = run(exe, env, "creds", E0 - 3600, "creds", E0 - 301, "creds", E0 - 299,
                        "creds", E0 + 1000, "creds", E0 + 3301)
        ok(keys(res) == ["ASIAFAKE0001", "ASIAFAKE0001", "ASIAFAKE0002", "ASIAFAKE0002",
                         "ASIAFAKE0003"], "cached until 300 s before expiry, then renewed",
           res)
        ok(STATE.creds_fetches == 3, "three credential fetches for five calls",
           STATE.requests)
        ok([r.get("expiration") for r in res] == [E0, E0, E0 + 3600, E0 + 3600, E0 + 7200],
           "expirations follow the documents", res)

        # 8. Refresh failing: keep the current credentials until they expire.
        STATE = State()
        STATE.creds_fail_after = 1
        res, err, _ = run(exe, env, "creds", E0 - 3600, "creds", E0 - 299, "creds", E0 - 200,
                          "creds", E0 + 1)
        ok(keys(res) == ["ASIAFAKE0001", "ASIAFAKE0001", "ASIAFAKE0001",
                         "ExpiredCredentials"],
           "refresh failure: cached credentials until Expiration, then ExpiredCredentials",
           res)
        ok(STATE.creds_fetches == 4, "each refresh attempt asked IMDS once",
           STATE.requests)
        ok("could not refresh" in err, "refresh failure logged as a warning", err)

        # 9. Identity document unusable -> meta-data fallback.
        STATE = State()
        STATE.identity_status = 404
        res, _, _ = run(exe, env, "identity")
        r = res[0] if res else {}
        ok(r.get("ok") and r.get("instance_id") == INSTANCE_ID
           and r.get("region") == "eu-north-1" and r.get("availability_zone") == "eu-north-1c"
           and r.get("account_id") == "", "identity fallback to meta-data", res)

        # 10. No IAM role attached -> NoCredentials naming the cause.
        STATE = State()
        STATE.role_status = 404
        res, _, _ = run(exe, env, "creds", E0)
        r = res[0] if res else {}
        ok(r.get("code") == "NoCredentials" and "no IAM role" in r.get("msg", ""),
           "no role -> NoCredentials", res)

        # 11. AWS_EC2_METADATA_DISABLED=true: no request at all.
        STATE = State()
        res, _, _ = run(exe, driver_env(tmp, AWS_EC2_METADATA_SERVICE_ENDPOINT=url,
                                        AWS_EC2_METADATA_DISABLED="true"), "identity")
        ok(len(res) == 1 and res[0].get("code") == "ImdsUnavailable"
           and "AWS_EC2_METADATA_DISABLED" in res[0].get("msg", ""),
           "disabled -> ImdsUnavailable", res)
        ok(len(STATE.requests) == 0, "... without contacting IMDS", STATE.requests)

        # 12. Environment credentials come before IMDS, which is not asked.
        STATE = State()
        res, _, _ = run(exe, driver_env(tmp, AWS_EC2_METADATA_SERVICE_ENDPOINT=url,
                                        AWS_ACCESS_KEY_ID="AKIAENVIRONMENT",
                                        AWS_SECRET_ACCESS_KEY="env-secret",
                                        AWS_REGION="sa-east-1"),
                        "creds", E0, "region")
        ok(len(res) == 2 and res[0].get("source") == "environment"
           and res[0].get("access_key_id") == "AKIAENVIRONMENT"
           and res[1].get("region") == "sa-east-1",
           "environment credentials and AWS_REGION win", res)
        ok(len(STATE.requests) == 0, "... and IMDS is not contacted", STATE.requests)

        # 13. Explicit endpoint beats the variable.
        STATE = State()
        res, _, _ = run(exe, driver_env(tmp, AWS_EC2_METADATA_SERVICE_ENDPOINT=dead),
                        "--endpoint", url + "/", "get", "/latest/meta-data/instance-id")
        ok(len(res) == 1 and res[0]["ok"], "--endpoint overrides the environment", res)
    finally:
        STOP.set()
        if server is not None:
            server.shutdown()
            server.server_close()
        for f in os.listdir(tmp):
            os.unlink(os.path.join(tmp, f))
        os.rmdir(tmp)
    print("1..%d" % _n)
    return 1 if _failed else 0


if __name__ == "__main__":
    sys.exit(main())
