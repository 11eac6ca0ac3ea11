"""HTTP: the request handler (EC2 Query API; IMDS and the control API come
from imds.py and control.py), the servers, and `serve`, which runs them."""

import argparse
import errno
import http.server
import json
import logging
import os
import secrets
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
import uuid

from .config import DEFAULT_SETTINGS, INSTANCE_SETTINGS, ConfigError, load_config
from .control import ControlHandler
from .errors import ERRORS, EC2Error
from .faults import EC2_FAULTS
from .imds import ImdsHandler
from .model import Emulator
from .query import parse_query_pairs
from .render import error_xml, response_xml
from .util import atomic_write, iso_ms

MAX_BODY = 1 << 20            # EC2 rejects larger query bodies too

log = logging.getLogger("ec2emu")


class _DropNow(Exception):
    """Close the connection without running the action or answering."""


class Handler(ImdsHandler, ControlHandler, http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out as separate writes: with Nagle's algorithm on,
    # the body would wait for the client's delayed ACK (40 ms on Linux) and
    # the emulator would add latency that EC2 does not have.
    disable_nagle_algorithm = True
    server_version = "AmazonEC2"
    timeout = 60            # idle keep-alive connections are closed, as AWS does

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):          # route http.server noise to our logger
        log.debug("%s %s", self.client_address[0], fmt % args)

    def log_error(self, fmt, *args):
        log.info("http: %s %s", self.client_address[0], fmt % args)

    @property
    def emu(self):
        return self.server.emu

    # ---- plumbing ----------------------------------------------------------
    def _read_body(self):
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if te == "chunked":
            data = b""
            while True:
                line = self.rfile.readline(100)
                try:
                    n = int(line.split(b";")[0].strip(), 16)
                except ValueError:
                    raise EC2Error("MalformedQueryString", "bad chunked encoding")
                if n == 0:
                    while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                        pass
                    return data
                if len(data) + n > MAX_BODY:
                    self.close_connection = True
                    raise EC2Error("InvalidParameterValue", "request body too large")
                data += self.rfile.read(n)
                self.rfile.readline(10)
        cl = self.headers.get("Content-Length")
        if cl is None:
            if self.command in ("POST",):
                self.close_connection = True
                raise EC2Error("MissingContentLength")
            return b""
        try:
            n = int(cl)
            if n < 0:
                raise ValueError
        except ValueError:
            self.close_connection = True
            raise EC2Error("InvalidParameterValue", "invalid Content-Length")
        if n > MAX_BODY:
            self.close_connection = True
            raise EC2Error("InvalidParameterValue", "request body too large (max %d bytes)" % MAX_BODY)
        data = self.rfile.read(n)
        if len(data) != n:
            self.close_connection = True
            raise EC2Error("MalformedQueryString", "request body shorter than Content-Length")
        return data

    def _send(self, status, body, ctype="text/xml;charset=UTF-8", extra=None):
        if isinstance(body, str):
            body = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drop(self, reset=False):
        """Close the connection without any response (FIN, or RST if reset)."""
        self.close_connection = True
        if reset:
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                           b"\x01\x00\x00\x00\x00\x00\x00\x00")
            except OSError:
                pass
        if reset:
            self.connection.close()      # real close happens once rfile/wfile are closed
        else:
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _json(self, status, obj):
        self._send(status, json.dumps(obj, indent=1, sort_keys=True, default=str) + "\n",
                   "application/json")

    def _local(self):
        return self.client_address[0] in ("127.0.0.1", "::1", "::ffff:127.0.0.1")

    # ---- routing -----------------------------------------------------------
    def _route(self):
        try:
            path = urllib.parse.urlsplit(self.path).path
            if self.server.imds_only and not path.startswith("/latest"):
                return self._send(404, "Not Found\n", "text/plain")
            if path.startswith("/latest"):
                return self.handle_imds(path)
            if path.startswith("/_emulator/"):
                return self.handle_control(path)
            if path == "/" and self.command in ("POST", "GET"):
                return self.handle_ec2()
            if self.command == "HEAD":
                return self._send(200, b"")
            return self._send(404 if self.command in ("GET", "POST") else 405,
                              error_xml("InvalidAction", "Unsupported path or method",
                                        str(uuid.uuid4())))
        except (ConnectionError, BrokenPipeError, socket.timeout):
            self.close_connection = True
        except Exception:
            log.error("unhandled error: %s", traceback.format_exc())
            self.close_connection = True
            try:
                self._send(500, error_xml("InternalError", "An internal error has occurred.",
                                          str(uuid.uuid4())))
            except Exception:
                pass

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _route

    # ---- EC2 ---------------------------------------------------------------
    def handle_ec2(self):
        emu = self.emu
        rid = str(uuid.uuid4())
        t0 = time.time()
        m0 = time.monotonic()
        rec = {"kind": "ec2", "request_id": rid, "time": iso_ms(t0), "received_at": t0,
               "client": self.client_address[0], "method": self.command, "action": None}
        ctx = {"fault": None}
        body = None
        try:
            body = self._ec2_process(rec, rid, ctx)
            status = 200
            rec["code"] = "OK"
        except _DropNow:
            status = 0
            rec["code"] = "dropped"
        except EC2Error as e:
            status = e.status
            body = error_xml(e.code, e.message, rid)
            rec["code"] = e.code
            rec["message"] = e.message
        except (ConnectionError, socket.timeout):
            raise
        except Exception:
            log.error("internal error in %s: %s", rec.get("action"), traceback.format_exc())
            status = 500
            body = error_xml("InternalError", "An internal error has occurred.", rid)
            rec["code"] = "InternalError"
        emu.count(rec.get("action") or "-", rec["code"])
        fault = ctx["fault"]
        kind = fault["fault"] if fault else None
        # The emulator's own work since the request was read (after any
        # latency_before_ms): within latency_ms with latency_mode "floor".
        work_ms = (time.monotonic() - ctx.get("work_m0", m0)) * 1000.0
        rec["service_ms"] = round(work_ms, 3)
        delay = float(emu.settings.get("latency_ms") or 0)
        if delay and emu.settings.get("latency_mode", "floor") == "floor":
            delay = max(0.0, delay - work_ms)
        if fault and fault.get("delay_ms") and not (kind == "slow" and fault["phase"] == "before"):
            delay += fault["delay_ms"]
        if delay:
            rec["latency_ms"] = delay
            time.sleep(delay / 1000.0)
        rec["responded_at"] = time.time()
        if kind in ("drop", "reset"):
            self._finish_log(rec, m0, 0)
            return self._drop(reset=kind == "reset")
        if kind == "malformed":
            return self._send_malformed(fault["variant"], status, body, rec, m0)
        extra = {"x-amzn-RequestId": rid}
        if "copy_ms" in rec:
            extra["X-Emulator-Copy-Ms"] = "%.3f" % rec["copy_ms"]
        self._finish_log(rec, m0, status)
        self._send(status, body, extra=extra)

    def _ec2_process(self, rec, rid, ctx):
        """Read, authenticate, apply faults, run the action.  Returns the XML."""
        emu = self.emu
        body_bytes = self._read_body()
        lb = float(emu.settings.get("latency_before_ms") or 0)
        if lb:
            rec["latency_before_ms"] = lb
            time.sleep(lb / 1000.0)
        ctx["work_m0"] = time.monotonic()
        query = urllib.parse.urlsplit(self.path).query
        text_parts = [query] if query else []
        if self.command == "POST" and body_bytes:
            ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()
            if ctype != "application/x-www-form-urlencoded":
                raise EC2Error("MalformedQueryString",
                               "Content-Type must be application/x-www-form-urlencoded, "
                               "not '%s'" % ctype)
            try:
                text_parts.append(body_bytes.decode("utf-8"))
            except UnicodeDecodeError:
                raise EC2Error("MalformedQueryString", "request body is not valid UTF-8")
        # best-effort action name for logging/counting before authentication
        try:
            for k, v in urllib.parse.parse_qsl("&".join(text_parts), keep_blank_values=True):
                if k == "Action":
                    rec["action"] = v
        except Exception:
            pass
        emu.authenticate(self.command, self.path, self.headers, body_bytes, rec)
        pairs = []
        for t in text_parts:
            pairs += parse_query_pairs(t)
        params = {}
        for k, v in pairs:
            if k in ("Action", "Version"):
                if k in params:
                    raise EC2Error("InvalidParameterValue",
                                   "Parameter %s appears more than once" % k)
                params[k] = v
        action = params.get("Action")
        rec["action"] = action
        if not action:
            raise EC2Error("MissingParameter", "The request must contain the parameter Action")
        if not params.get("Version"):
            raise EC2Error("MissingParameter", "The request must contain the parameter Version")
        rest = [(k, v) for k, v in pairs if k not in ("Action", "Version")]
        # a pre-signed URL is a credential (its signature, maybe a session token)
        rec["params"] = {k: ("<redacted>" if k == "PresignedUrl" else v) for k, v in rest}
        if action in (emu.settings.get("denied_actions") or []):
            raise emu.unauthorized(action, rec.get("akid"), rec.get("region"))
        fault = emu.take_ec2_fault(action, rec["params"].get("DryRun") == "true")
        ctx["fault"] = fault
        if fault:
            kind = fault["fault"]
            rec["fault"] = {k: fault[k] for k in ("id", "fault", "delay_ms", "variant", "execute",
                                                  "phase") if k in fault}
            if kind == "slow" and fault["phase"] == "before":
                time.sleep(fault["delay_ms"] / 1000.0)
                # A fault's delay is on top of latency_ms, never within it.
                ctx["work_m0"] += fault["delay_ms"] / 1000.0
            if kind == "unauthorized":
                raise emu.unauthorized(action, rec.get("akid"), rec.get("region"))
            if EC2_FAULTS.get(kind):
                raise EC2Error(EC2_FAULTS[kind])
            if kind == "expired_credentials":
                code = emu.settings.get("expired_credentials_code") or "RequestExpired"
                raise EC2Error(code, ERRORS.get(code, (0, "Request has expired."))[1])
            if kind == "error":
                raise EC2Error(fault["code"], fault.get("message"), int(fault.get("status", 400)))
            if kind == "snapshot_error":
                rec["snapshot_error"] = True
            if not fault["execute"]:
                if kind in ("drop", "reset"):
                    raise _DropNow()
                if kind == "malformed":      # garble an empty, side-effect-free response
                    return response_xml(action, {}, rid)
        members = emu.dispatch(action, rest, rec)
        return response_xml(action, members, rid)

    def _send_malformed(self, variant, status, body, rec, m0):
        raw = body.encode()
        rec["malformed"] = variant
        self._finish_log(rec, m0, 200)
        if variant == "truncated":
            return self._send(200, raw[:max(1, len(raw) // 2)])
        if variant == "garbage":
            return self._send(200, b"\x00\xff<<<not xml at all>>> \x01" + secrets.token_bytes(16))
        if variant == "html":
            return self._send(502, b"<html><body><h1>502 Bad Gateway</h1></body></html>\n",
                              "text/html")
        if variant == "empty":
            return self._send(200, b"")
        # short: promise the whole body, send half, close
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", "text/xml;charset=UTF-8")
        self.send_header("Content-Length", str(len(raw)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(raw[:len(raw) // 2])

    def _finish_log(self, rec, m0, status):
        rec["status"] = status
        rec["duration_ms"] = round((time.monotonic() - m0) * 1000, 3)
        self.emu.log_request(rec)
        extra = ""
        if rec.get("copy_ms") is not None and "copies" in rec:
            extra += " copy=%.1fms" % rec["copy_ms"]
        if rec.get("fault"):
            extra += " fault=%s" % rec["fault"].get("fault")
        log.info("EC2 %s %s %s %.1fms%s", rec.get("action"), status, rec.get("code"),
                 rec["duration_ms"], extra)


class Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, emu, imds_only=False):
        self.emu = emu
        self.imds_only = imds_only
        super().__init__(addr, Handler)

    def handle_error(self, request, client_address):
        log.info("connection error from %s: %s", client_address,
                 traceback.format_exc().strip().splitlines()[-1])


class ImdsListener:
    """Separate IMDS port; can really refuse connections (fault mode 'refuse')."""

    def __init__(self, host, port, emu):
        self.host, self.emu = host, emu
        self.lock = threading.Lock()
        self.server = None
        self.port = port
        self.up()

    def up(self):
        with self.lock:
            if self.server is not None:
                return
            srv = None
            for _ in range(50):
                try:
                    srv = Server((self.host, self.port), self.emu, imds_only=True)
                    break
                except OSError as e:
                    if e.errno != errno.EADDRINUSE:
                        raise
                    time.sleep(0.05)
            if srv is None:
                log.error("could not re-bind IMDS port %s", self.port)
                return
            self.server = srv
            self.port = srv.server_address[1]
            threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1},
                             daemon=True).start()

    def down(self):
        with self.lock:
            srv, self.server = self.server, None
        if srv is not None:
            threading.Thread(target=self._stop, args=(srv,), daemon=True).start()

    @staticmethod
    def _stop(srv):
        srv.shutdown()
        srv.server_close()


# --------------------------------------------------------------------------
# serve
# --------------------------------------------------------------------------

def _tick(emu, stop):
    """Volumes change state on their own time (their devices appear and go)."""
    while not stop.wait(0.05):
        try:
            emu.advance_volumes()
            emu.advance_instances()
        except Exception:
            log.error("advancing volumes: %s", traceback.format_exc())


def serve(argv):
    ap = argparse.ArgumentParser(prog="ec2emu.py serve", description="EC2 + IMDS emulator")
    ap.add_argument("--config", help="config JSON (see README.md)")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0, help="0 = ephemeral")
    ap.add_argument("--port-file", help="write the bound port here (atomically)")
    ap.add_argument("--imds-port", type=int, default=None,
                    help="also serve IMDS alone on this port (0 = ephemeral)")
    ap.add_argument("--imds-port-file")
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--complete-after", type=float, default=2.0,
                    help="seconds a snapshot stays pending (default 2)")
    ap.add_argument("--latency-ms", type=float, default=0)
    ap.add_argument("--latency-mode", choices=("floor", "added"), default="floor",
                    help="floor: the emulator's own work counts within --latency-ms "
                         "(default); added: --latency-ms is slept after it")
    ap.add_argument("--latency-before-ms", type=float, default=0)
    ap.add_argument("--imds-credential-ttl", type=float, default=None,
                    help="rotate IMDS role credentials with this lifetime (seconds)")
    ap.add_argument("--fault", action="append", default=[], metavar="JSON",
                    help="initial fault rule (JSON object), repeatable")
    ap.add_argument("--log-level", default="INFO")
    ap.add_argument("--quiet", action="store_true", help="log warnings only")
    a = ap.parse_args(argv)

    logging.basicConfig(stream=sys.stderr,
                        level=logging.WARNING if a.quiet else getattr(logging, a.log_level.upper()),
                        format="ec2emu[%(process)d] %(asctime)s %(levelname)s %(message)s")
    os.makedirs(a.state_dir, exist_ok=True)
    start = time.time()
    try:
        cfg = load_config(a.config, start)
    except (ConfigError, OSError, ValueError) as e:
        log.error("bad config: %s", e)
        return 2
    settings = dict(DEFAULT_SETTINGS)
    settings.update(latency_ms=a.latency_ms, latency_mode=a.latency_mode,
                    latency_before_ms=a.latency_before_ms,
                    complete_after=a.complete_after)
    for k in ("complete_after", "volume_create_delay_s", "volume_attach_delay_s",
              "volume_detach_delay_s") + INSTANCE_SETTINGS:
        if cfg[k] is not None:
            settings[k] = float(cfg[k])
    ttl = a.imds_credential_ttl or cfg["imds"].get("credential_ttl")
    settings["imds_credential_ttl"] = ttl or None
    if cfg["imds"].get("v1_allowed"):
        settings["imds_v1_allowed"] = True
    try:
        faults = [json.loads(f) for f in a.fault]
    except ValueError as e:
        log.error("--fault: invalid JSON: %s", e)
        return 2
    emu = Emulator(cfg, os.path.abspath(a.state_dir), settings)
    emu.imds_separate = a.imds_port is not None
    try:
        for f in faults:
            emu.add_rule(f)
    except ValueError as e:
        log.error("--fault: %s", e)
        return 2
    try:
        srv = Server((a.host, a.port), emu)
    except OSError as e:
        log.error("cannot bind %s:%s: %s", a.host, a.port, e)
        return 1
    port = srv.server_address[1]
    if a.imds_port is not None:
        emu.imds_listener = ImdsListener(a.host, a.imds_port, emu)
        if a.imds_port_file:
            atomic_write(a.imds_port_file, "%d\n" % emu.imds_listener.port)
    if a.port_file:
        atomic_write(a.port_file, "%d\n" % port)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    emu.restore_devices()
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    th.start()
    threading.Thread(target=_tick, args=(emu, stop), daemon=True).start()
    log.info("listening on http://%s:%d (EC2 + IMDS)%s, instance %s, region %s, state %s",
             a.host, port,
             (", IMDS also on :%d" % emu.imds_listener.port) if emu.imds_listener else "",
             cfg["instance_id"], cfg["region"], emu.state_dir)
    while not stop.wait(0.5):
        pass
    log.info("shutting down")
    srv.shutdown()
    srv.server_close()
    emu.release_devices()
    if emu.imds_listener:
        emu.imds_listener.down()
    for pf in (a.port_file, a.imds_port_file):
        if pf:
            try:
                os.unlink(pf)
            except OSError:
                pass
    emu.save()
    return 0
