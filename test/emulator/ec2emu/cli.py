"""The command line: serve (the default), ctl (the control API from a shell)
and call (one signed EC2 request)."""

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

import botocore.auth
import botocore.awsrequest
import botocore.credentials

from .actions_volumes import release_state_devices
from .config import load_config
from .server import serve
from .util import API_VERSION


def _port_from(a):
    if a.port:
        return a.port
    if not a.port_file:
        raise SystemExit("need --port or --port-file")
    with open(a.port_file) as f:
        return int(f.read().strip())


def _parse_kv(items):
    out = {}
    for it in items:
        k, sep, v = it.partition("=")
        if not sep:
            raise SystemExit("expected key=value, got %r" % it)
        try:
            out[k] = json.loads(v)
        except ValueError:
            out[k] = v
    return out


def _http(port, method, path, body=None, timeout=10):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request("http://127.0.0.1:%d%s" % (port, path), data=data, method=method,
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def ctl(argv):
    ap = argparse.ArgumentParser(prog="ec2emu.py ctl")
    ap.add_argument("--port-file")
    ap.add_argument("--port", type=int)
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("cmd", choices=["set", "fault", "imds", "clear", "reset", "state", "rotate",
                                    "expire", "impair", "unimpair", "raw", "wait", "deny",
                                    "fail", "settime"])
    ap.add_argument("args", nargs="*")
    a = ap.parse_args(argv)
    if a.cmd == "wait":
        deadline = time.time() + a.timeout
        while time.time() < deadline:
            try:
                st, _ = _http(_port_from(a), "GET", "/_emulator/health", timeout=1)
                if st == 200:
                    return 0
            except (OSError, ValueError, SystemExit):
                pass
            time.sleep(0.05)
        sys.stderr.write("ec2emu ctl: emulator not ready after %gs\n" % a.timeout)
        return 1
    port = _port_from(a)
    if a.cmd == "state":
        st, out = _http(port, "GET", "/_emulator/state")
    elif a.cmd == "reset":
        st, out = _http(port, "POST", "/_emulator/reset", {"all": "all" in a.args})
    else:
        if a.cmd == "set":
            body = _parse_kv(a.args)
        elif a.cmd == "fault":
            if len(a.args) < 2:
                raise SystemExit("usage: fault ACTION KIND [COUNT|persistent] [key=value...]")
            body = {"action": a.args[0], "fault": a.args[1]}
            rest = a.args[2:]
            if rest and "=" not in rest[0]:
                c = rest.pop(0)
                body["count"] = -1 if c in ("persistent", "-1", "always") else int(c)
            body.update(_parse_kv(rest))
        elif a.cmd == "imds":
            if not a.args:
                raise SystemExit("usage: imds down|slow|no_role|error|ok [key=value...]")
            body = {"imds": a.args[0]}
            body.update(_parse_kv(a.args[1:]))
        elif a.cmd == "clear":
            body = {"clear_faults": True}
        elif a.cmd == "rotate":
            body = {"rotate_imds_credentials": True}
        elif a.cmd == "expire":
            body = {"expire_imds_credentials": True}
        elif a.cmd in ("impair", "unimpair"):
            if not a.args:
                raise SystemExit("usage: %s ami-...|i-... [...]" % a.cmd)
            body = {a.cmd: a.args}
        elif a.cmd == "deny":            # no actions: allow everything again
            body = {"denied_actions": a.args}
        elif a.cmd == "fail":
            if not a.args:
                raise SystemExit("usage: fail snap-... [STATE MESSAGE...]")
            body = {"fail_snapshot": a.args[0]}
            if a.args[1:]:
                body["state_message"] = " ".join(a.args[1:])
        elif a.cmd == "settime":
            if not a.args:
                raise SystemExit("usage: settime ID=ISO8601 [...]")
            body = {"set_times": {}}
            for it in a.args:
                k, sep, v = it.partition("=")
                if not sep:
                    raise SystemExit("expected ID=ISO8601, got %r" % it)
                body["set_times"][k] = v
        else:  # raw
            body = json.loads(a.args[0])
        st, out = _http(port, "POST", "/_emulator/control", body)
    sys.stdout.write(out if out.endswith("\n") else out + "\n")
    return 0 if st == 200 else 1


def call(argv):
    """Make one signed EC2 request (raw XML out) -- handy from shell tests."""
    ap = argparse.ArgumentParser(prog="ec2emu.py call")
    ap.add_argument("--port-file")
    ap.add_argument("--port", type=int)
    ap.add_argument("--config", help="take region and the first static credential from here")
    ap.add_argument("--region")
    ap.add_argument("--access-key", default=os.environ.get("AWS_ACCESS_KEY_ID"))
    ap.add_argument("--secret-key", default=os.environ.get("AWS_SECRET_ACCESS_KEY"))
    ap.add_argument("--session-token", default=os.environ.get("AWS_SESSION_TOKEN"))
    ap.add_argument("action")
    ap.add_argument("params", nargs="*", help="Name=Value (flat EC2 query names)")
    a = ap.parse_args(argv)
    region, akid, secret, token = a.region, a.access_key, a.secret_key, a.session_token
    if a.config:
        cfg = load_config(a.config, time.time())
        region = region or cfg["region"]
        if not akid and cfg["credentials"]:
            akid, c = next(iter(cfg["credentials"].items()))
            secret, token = c["secret"], c.get("token")
    if not (region and akid and secret):
        raise SystemExit("need region and credentials (--config or --access-key/--secret-key)")
    port = _port_from(a)
    params = [("Action", a.action), ("Version", API_VERSION)]
    for p in a.params:
        k, _, v = p.partition("=")
        params.append((k, v))
    body = urllib.parse.urlencode(params).encode()
    url = "http://127.0.0.1:%d/" % port
    req = botocore.awsrequest.AWSRequest(method="POST", url=url, data=body, headers={
        "Content-Type": "application/x-www-form-urlencoded; charset=utf-8"})
    botocore.auth.SigV4Auth(botocore.credentials.Credentials(akid, secret, token), "ec2",
                            region).add_auth(req)
    p = req.prepare()
    r = urllib.request.Request(url, data=body, method="POST", headers=dict(p.headers.items()))
    try:
        with urllib.request.urlopen(r, timeout=30) as resp:
            sys.stdout.write(resp.read().decode())
            return 0
    except urllib.error.HTTPError as e:
        sys.stdout.write(e.read().decode())
        return 1


def release_devices(argv):
    ap = argparse.ArgumentParser(prog="ec2emu.py release-devices",
                                 description="after the emulator stopped (even killed): "
                                 "unmount and detach the loop devices its state dir records")
    ap.add_argument("--state-dir", required=True)
    a = ap.parse_args(argv)
    for line in release_state_devices(a.state_dir):
        sys.stdout.write(line + "\n")
    return 0


def main(argv):
    if argv and argv[0] == "release-devices":
        return release_devices(argv[1:])
    if argv and argv[0] == "ctl":
        return ctl(argv[1:])
    if argv and argv[0] == "call":
        return call(argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return serve(argv)
