#!/usr/bin/env python3
"""
moto_front.py - the least we put in front of moto's server (moto.server) so
that the end-to-end tests can run the real helper against a second,
independent EC2.  Standard library only; runs under any python3 (>= 3.6).

  * IMDSv2: PUT /latest/api/token, then GET
    /latest/dynamic/instance-identity/document and /latest/meta-data/
    {instance-id, ami-id, instance-type, placement/region,
    placement/availability-zone}, with a token (401 without one).
  * EC2: every POST / goes to moto unchanged, headers (Host included: the
    SigV4 signature covers it) and body, and moto's answer comes back
    unchanged.
  * Snapshot bytes: moto's snapshots hold no data.  When a CreateSnapshots
    call (not a DryRun) arrives, each volume's backing file is reflinked
    (FICLONE) BEFORE the call is forwarded: that is the point in time.
    Once moto answers 200, the copies of the volumes its answer names are
    kept as STATE/snap-....img; the others, or all of them on an error,
    are removed.
  * Faults moto cannot play, for real (non-DryRun) calls of one action:
    "throttle" (HTTP 503, RequestLimitExceeded; moto is not called),
    "delay" (sleep delay_ms before forwarding), "drop" (forward, then close
    the connection without an answer: a lost answer).

Control (JSON, loopback):
  GET  /_front/state    {"snapshots": [{"id", "volume_id", "file"}],
                         "requests": [{"action", "dry_run", "status", "fault"}],
                         "faults": [...], "identity": {...}}
  POST /_front/control  {"action": "CreateSnapshots", "fault": "throttle"|"delay"|"drop",
                         "count": 1, "delay_ms": 0}
                        {"identity": {"instanceId": "i-..."}}  (over the configured one)
                        {"clear": true}  (no faults, the configured identity)

  moto_front.py --moto http://127.0.0.1:PORT --config front.json \
      --state-dir DIR [--port 0 --port-file FILE]

front.json: {"identity": {"instanceId", "region", "availabilityZone",
"accountId", "architecture", "imageId", "instanceType"},
"volumes": {"vol-...": "/path/to/backing.img"}}.  The backing files and
--state-dir must be on one reflink-capable filesystem (XFS reflink=1).
Never logs a header or a body (they carry signatures and keys).
"""

import argparse
import fcntl
import http.client
import json
import os
import secrets
import signal
import socketserver
import sys
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from http.server import BaseHTTPRequestHandler, HTTPServer
from xml.sax.saxutils import escape

FICLONE = 0x40049409
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "expect"}
FAULTS = ("throttle", "delay", "drop")
TOKEN_MAX_TTL = 21600


def log(msg):
    print("moto_front: " + msg, file=sys.stderr, flush=True)


def error_xml(code, message):
    return ('<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>%s</Code>'
            '<Message>%s</Message></Error></Errors><RequestID>%s</RequestID></Response>'
            % (code, escape(message), secrets.token_hex(16))).encode()


def local(tag):
    return tag.rsplit("}", 1)[-1]


def snapshots_in(body):
    """(snapshotId, volumeId) of each item of a CreateSnapshots answer."""
    out = []
    for el in ET.fromstring(body).iter():
        if local(el.tag) == "item":
            kids = {local(c.tag): (c.text or "").strip() for c in el}
            if kids.get("snapshotId") and kids.get("volumeId"):
                out.append((kids["snapshotId"], kids["volumeId"]))
    return out


class Front:
    def __init__(self, moto_url, config, state_dir):
        u = urllib.parse.urlsplit(moto_url)
        self.moto = (u.hostname, u.port or 80)
        self.base_identity = dict(config["identity"])
        self.identity = dict(self.base_identity)
        self.volumes = dict(config.get("volumes", {}))
        self.state_dir = state_dir
        self.lock = threading.Lock()
        self.snapshots = []
        self.requests = []
        self.faults = []
        self.tokens = {}
        self.seq = 0

    def state(self):
        with self.lock:
            return {"snapshots": list(self.snapshots), "requests": list(self.requests),
                    "faults": [dict(f) for f in self.faults], "identity": dict(self.identity)}

    def control(self, body):
        if not isinstance(body, dict):
            raise ValueError("the body must be a JSON object")
        rule = None
        if "fault" in body:
            rule = {"action": body.get("action"), "fault": body["fault"],
                    "count": body.get("count", 1), "delay_ms": body.get("delay_ms", 0)}
            if rule["fault"] not in FAULTS or not isinstance(rule["action"], str) \
                    or not isinstance(rule["count"], int) or rule["count"] < 1 \
                    or not isinstance(rule["delay_ms"], int) or rule["delay_ms"] < 0:
                raise ValueError("a fault needs action, fault in %s, count >= 1, delay_ms >= 0"
                                 % (FAULTS,))
        ident = body.get("identity")
        if ident is not None and not isinstance(ident, dict):
            raise ValueError("identity must be an object")
        with self.lock:
            if body.get("clear"):
                self.faults = []
                self.identity = dict(self.base_identity)
            if ident is not None:
                self.identity.update(ident)
            if rule:
                self.faults.append(rule)

    def take_fault(self, action, dry_run):
        if dry_run:
            return None
        with self.lock:
            for f in self.faults:
                if f["action"] == action:
                    f["count"] -= 1
                    if f["count"] <= 0:
                        self.faults.remove(f)
                    return dict(f)
        return None

    def record(self, action, dry_run, status, fault):
        with self.lock:
            self.requests.append({"action": action, "dry_run": dry_run, "status": status,
                                  "fault": fault})

    # ---- snapshot bytes
    def copy_volumes(self):
        """{volume id: temp file}: a reflink of every volume, now."""
        with self.lock:
            self.seq += 1
            seq = self.seq
        copies = {}
        try:
            for vol, backing in self.volumes.items():
                tmp = os.path.join(self.state_dir, "tmp-%d-%s.img" % (seq, vol))
                copies[vol] = tmp
                with open(backing, "rb") as src, open(tmp, "wb") as dst:
                    fcntl.ioctl(dst.fileno(), FICLONE, src.fileno())
        except OSError:
            self.drop_copies(copies)
            raise
        return copies

    @staticmethod
    def drop_copies(copies):
        for tmp in copies.values():
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass

    def keep_copies(self, copies, status, body):
        """After moto's answer: keep the copies of the snapshots it made."""
        made = []
        if status == 200:
            try:
                made = snapshots_in(body)
            except ET.ParseError as e:
                log("CreateSnapshots answer is not XML (%s): no snapshot kept" % e)
        kept = []
        for sid, vol in made:
            if vol in copies:
                f = os.path.join(self.state_dir, sid + ".img")
                os.rename(copies.pop(vol), f)
                kept.append({"id": sid, "volume_id": vol, "file": f})
            else:
                log("snapshot %s of volume %s: no backing file known" % (sid, vol))
        self.drop_copies(copies)
        with self.lock:
            self.snapshots.extend(kept)
        return kept

    def forward(self, method, path, headers, body):
        conn = http.client.HTTPConnection(self.moto[0], self.moto[1], timeout=120)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                if k.lower() not in HOP_BY_HOP:
                    conn.putheader(k, v)
            conn.endheaders(body)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, resp.reason, resp.getheaders(), data
        finally:
            conn.close()

    # ---- IMDS
    def new_token(self, ttl):
        token = secrets.token_urlsafe(40)
        with self.lock:
            now = time.time()
            self.tokens = {t: e for t, e in self.tokens.items() if e > now}
            self.tokens[token] = now + ttl
        return token

    def token_ok(self, token):
        with self.lock:
            return bool(token) and self.tokens.get(token, 0) > time.time()

    def metadata(self, path):
        i = self.state()["identity"]
        if path == "dynamic/instance-identity/document":
            doc = {"accountId": i.get("accountId"), "architecture": i.get("architecture"),
                   "availabilityZone": i.get("availabilityZone"), "billingProducts": None,
                   "devpayProductCodes": None, "marketplaceProductCodes": None,
                   "imageId": i.get("imageId"), "instanceId": i.get("instanceId"),
                   "instanceType": i.get("instanceType"), "kernelId": None,
                   "pendingTime": "2024-01-01T00:00:00Z", "privateIp": "10.0.0.10",
                   "ramdiskId": None, "region": i.get("region"), "version": "2017-09-30"}
            return json.dumps(doc, indent=2)
        return {"meta-data/instance-id": i.get("instanceId"),
                "meta-data/ami-id": i.get("imageId"),
                "meta-data/instance-type": i.get("instanceType"),
                "meta-data/placement/region": i.get("region"),
                "meta-data/placement/availability-zone": i.get("availabilityZone")}.get(path)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    front = None

    def log_message(self, fmt, *args):  # the request line only, never headers
        log("%s %s" % (self.address_string(), fmt % args))

    def reply(self, status, body, ctype="text/plain", headers=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def body(self):
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def do_PUT(self):
        if self.path != "/latest/api/token":
            return self.reply(404, b"Not Found")
        body = self.body()
        if body or self.headers.get("X-Forwarded-For"):
            return self.reply(403, b"Forbidden")
        try:
            ttl = int(self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", ""))
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= TOKEN_MAX_TTL:
            return self.reply(400, b"Bad Request")
        self.reply(200, self.front.new_token(ttl).encode(),
                   headers=[("X-aws-ec2-metadata-token-ttl-seconds", str(ttl))])

    def do_GET(self):
        if self.path == "/_front/state":
            return self.reply(200, json.dumps(self.front.state()).encode(), "application/json")
        if not self.path.startswith("/latest/"):
            return self.reply(404, b"Not Found")
        if not self.front.token_ok(self.headers.get("X-aws-ec2-metadata-token")):
            return self.reply(401, b"Unauthorized")
        value = self.front.metadata(self.path[len("/latest/"):].rstrip("/"))
        if value is None:
            return self.reply(404, b"Not Found")
        self.reply(200, value.encode())

    def do_POST(self):
        body = self.body()
        if self.path == "/_front/control":
            try:
                self.front.control(json.loads(body or b"{}"))
            except ValueError as e:
                return self.reply(400, json.dumps({"error": str(e)}).encode(), "application/json")
            return self.reply(200, b"{}", "application/json")
        if urllib.parse.urlsplit(self.path).path != "/":
            return self.reply(404, b"Not Found")
        self.ec2(body)

    def ec2(self, body):
        front = self.front
        params = urllib.parse.parse_qs(body.decode("utf-8", "replace"))
        action = params.get("Action", [""])[0]
        dry_run = params.get("DryRun", ["false"])[0].lower() == "true"
        fault = front.take_fault(action, dry_run)
        kind = fault["fault"] if fault else None
        if kind == "throttle":
            front.record(action, dry_run, 503, kind)
            return self.reply(503, error_xml("RequestLimitExceeded", "Request limit exceeded."),
                              "text/xml;charset=UTF-8")
        if kind == "delay":
            time.sleep(fault["delay_ms"] / 1000.0)
        copies = {}
        if action == "CreateSnapshots" and not dry_run:
            try:
                copies = front.copy_volumes()
            except OSError as e:
                log("cannot copy the volumes: %s" % e)
                front.record(action, dry_run, 500, "copy failed")
                return self.reply(500, error_xml("FrontCopyFailed", "moto_front: %s" % e),
                                  "text/xml;charset=UTF-8")
        try:
            status, reason, headers, data = front.forward("POST", self.path,
                                                          self.headers.items(), body)
        except (OSError, http.client.HTTPException) as e:
            front.drop_copies(copies)
            log("moto did not answer %s: %s" % (action, e))
            front.record(action, dry_run, 502, kind)
            return self.reply(502, error_xml("FrontUpstreamError", str(e)),
                              "text/xml;charset=UTF-8")
        if action == "CreateSnapshots" and not dry_run:
            kept = front.keep_copies(copies, status, data)
            log("CreateSnapshots: moto answered %d, kept %s" % (status, [k["id"] for k in kept]))
        front.record(action, dry_run, status, kind)
        if kind == "drop":
            log("%s: answer dropped" % action)
            self.close_connection = True
            return
        self.send_response_only(status, reason)
        for k, v in headers:
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


class Server(socketserver.ThreadingMixIn, HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


def main():
    ap = argparse.ArgumentParser(description="IMDS, snapshot bytes and faults in front of moto")
    ap.add_argument("--moto", required=True, help="moto's server, http://127.0.0.1:PORT")
    ap.add_argument("--config", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--port-file")
    args = ap.parse_args()
    with open(args.config) as f:
        config = json.load(f)
    os.makedirs(args.state_dir, exist_ok=True)
    Handler.front = Front(args.moto, config, args.state_dir)
    srv = Server(("127.0.0.1", args.port), Handler)
    port = srv.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.port_file)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    log("listening on 127.0.0.1:%d, EC2 at %s:%d" % ((port,) + Handler.front.moto))
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        if args.port_file and os.path.exists(args.port_file):
            os.unlink(args.port_file)


if __name__ == "__main__":
    main()
