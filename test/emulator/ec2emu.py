#!/usr/bin/python3
# -*- coding: utf-8 -*-
"""ec2emu -- local EC2 Query API + IMDSv2 emulator for the ami_snapshot tests.

One process, one ThreadingHTTPServer on 127.0.0.1:
  POST /                     EC2 Query API (SigV4 verified with botocore)
  GET/PUT /latest/...        IMDSv2 (also on --imds-port when given)
  /_emulator/{control,state,reset,health}   test control (loopback only)

CreateSnapshot(s) copies the volume backing files at call time (FICLONE
reflink, else a sparse SEEK_DATA/SEEK_HOLE copy) into --state-dir, so a test
can restore the snapshot and check its bytes.

The helpers (query parsing, XML, SigV4, volume copies, config) are in the
package ec2emu/ next to this file.
Run with Debian's interpreter (/usr/bin/python3): it has python3-botocore.
See README.md next to this file for usage, the config schema and the
control API.  Sub-commands:
    ec2emu.py [serve] --config C.json --port 0 --port-file F --state-dir D
    ec2emu.py ctl --port-file F {set k=v..|fault ACTION KIND [COUNT] [k=v..]|
                                 imds MODE [k=v..]|clear|reset [all]|state|
                                 rotate|expire|raw JSON|wait}
    ec2emu.py call --port-file F --config C.json ACTION [Param=Value ...]
"""

import argparse
import base64
import datetime
import errno
import hashlib
import hmac
import http.server
import json
import logging
import math
import os
import re
import secrets
import signal
import socket
import string
import sys
import threading
import time
import traceback
import urllib.error
import urllib.parse
import urllib.request
import uuid
from email.utils import parsedate_to_datetime

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

# The parts that have moved to the package ec2emu/ next to this file
# (`import ec2emu` finds the package before this file).
from ec2emu.sigv4 import SIGV4_TIMESTAMP, parse_authorization, sigv4_signature  # noqa: E402
from ec2emu.config import (DEFAULT_SETTINGS, NUMERIC_SETTINGS, ConfigError,  # noqa: E402
                           load_config, non_negative)
from ec2emu.errors import ERRORS, EC2Error, check_id, not_found  # noqa: E402
from ec2emu.query import (SPECS, apply_filters, paginate, parse_query_pairs,  # noqa: E402
                          tags_from_spec, unflatten, validate, validate_tags)
from ec2emu.render import error_xml, response_xml, tag_set  # noqa: E402
from ec2emu.util import (API_VERSION, atomic_write, iso_ms, iso_s, new_id,  # noqa: E402
                         parse_iso, rand_alnum)
from ec2emu.volumes import copy_volume  # noqa: E402

import botocore.auth  # noqa: E402
import botocore.awsrequest  # noqa: E402
import botocore.credentials  # noqa: E402

MAX_BODY = 1 << 20            # EC2 rejects larger query bodies too
AMAZON_OWNER = "137112412989"
IMDS_MAX_TTL = 21600

log = logging.getLogger("ec2emu")


# --------------------------------------------------------------------------
# faults
# --------------------------------------------------------------------------

EC2_FAULTS = {
    "throttle": "RequestLimitExceeded",
    "snapshot_rate": "SnapshotCreationPerVolumeRateExceeded",
    "concurrent_limit": "ConcurrentSnapshotLimitExceeded",
    "internal": "InternalError",
    "unavailable_503": "Unavailable",
    "auth_failure": "AuthFailure",
    "unauthorized": "UnauthorizedOperation",
    "expired_credentials": None,      # settings.expired_credentials_code
    "error": None,                    # custom: code/status/message
    "slow": None, "drop": None, "reset": None, "malformed": None, "snapshot_error": None,
}
# Does the action still run when the fault fires?  (overridable: "execute")
EXECUTE_DEFAULT = {"slow": True, "malformed": True, "snapshot_error": True,
                   "drop": False, "reset": False}
MALFORMED_VARIANTS = ("truncated", "garbage", "html", "short", "empty")
IMDS_FAULTS = ("down", "slow", "no_role", "error")
IMDS_DOWN_MODES = ("close", "reset", "500", "refuse")
RULE_KEYS = {"action", "fault", "count", "skip", "delay_ms", "execute", "variant", "code",
             "status", "message", "phase", "imds", "mode", "path", "persistent"}


def normalize_rule(rule, imds_separate):
    if not isinstance(rule, dict):
        raise ValueError("a fault rule must be a JSON object")
    bad = set(rule) - RULE_KEYS
    if bad:
        raise ValueError("unknown fault rule keys: %s" % sorted(bad))
    r = dict(rule)
    if "imds" in r:
        kind = r["imds"]
        if kind not in IMDS_FAULTS:
            raise ValueError("imds fault must be one of %s (or 'ok' to clear)" % (IMDS_FAULTS,))
        r["kind"] = "imds"
        r.setdefault("count", -1)
        if kind == "down":
            r["mode"] = str(r.get("mode", "close"))
            if r["mode"] not in IMDS_DOWN_MODES:
                raise ValueError("imds down mode must be one of %s" % (IMDS_DOWN_MODES,))
            if r["mode"] == "refuse" and not imds_separate:
                raise ValueError("imds down mode 'refuse' needs a separate --imds-port")
        if kind == "slow" and "delay_ms" not in r:
            raise ValueError("imds slow needs delay_ms")
        r.setdefault("path", "")
    else:
        if r.get("fault") not in EC2_FAULTS:
            raise ValueError("fault must be one of %s" % sorted(EC2_FAULTS))
        if not r.get("action"):
            raise ValueError("fault rule needs 'action' (an EC2 action name or '*')")
        r["kind"] = "ec2"
        r.setdefault("count", 1)
        if r["fault"] == "slow" and "delay_ms" not in r:
            raise ValueError("slow needs delay_ms")
        if r["fault"] == "malformed":
            r.setdefault("variant", "truncated")
            if r["variant"] not in MALFORMED_VARIANTS:
                raise ValueError("malformed variant must be one of %s" % (MALFORMED_VARIANTS,))
        if r["fault"] == "error" and not r.get("code"):
            raise ValueError("error fault needs 'code'")
        r.setdefault("phase", "after")
        if r["phase"] not in ("before", "after"):
            raise ValueError("phase must be 'before' or 'after'")
        r.setdefault("execute", EXECUTE_DEFAULT.get(r["fault"], False))
    if r.pop("persistent", False) or r["count"] is None:
        r["count"] = -1
    try:
        r["count"] = int(r["count"])
        r["skip"] = int(r.get("skip", 0))
    except (TypeError, ValueError):
        raise ValueError("count/skip must be integers")
    if r["count"] == 0 or r["count"] < -1:
        raise ValueError("count must be >= 1, or -1 for persistent")
    if "delay_ms" in r:
        r["delay_ms"] = non_negative(r["delay_ms"], "delay_ms")
    r["hits"] = 0
    return r


# --------------------------------------------------------------------------
# the emulated world
# --------------------------------------------------------------------------

class Emulator:
    def __init__(self, cfg, state_dir, settings, faults=()):
        self.cfg = cfg
        self.state_dir = state_dir
        self.snap_dir = os.path.join(state_dir, "snapshots")
        os.makedirs(self.snap_dir, exist_ok=True)
        self.lock = threading.RLock()
        self.log_lock = threading.Lock()
        self.start_time = time.time()
        self.default_settings = dict(settings)
        self.settings = dict(settings)
        self.imds_separate = False
        self.imds_listener = None
        self.rules = []
        self.rule_seq = 0
        self.snapshots = {}
        self.images = {}
        self.instance_tags = dict(cfg["tags"])
        self.counts = {}
        self.codes = {}
        self.reboots = 0
        self.last_snapshot_at = {}
        self.imds_tokens = {}
        self.creds = dict(cfg["credentials"])
        self.imds_creds = []          # issued role credentials, newest last
        self._load_state()
        self._init_imds_credentials()
        self.req_log = open(os.path.join(state_dir, "requests.jsonl"), "a", buffering=1)
        for f in faults:
            self.add_rule(f)

    # ---- persistence -------------------------------------------------------
    def _state_path(self):
        return os.path.join(self.state_dir, "state.json")

    def _load_state(self):
        try:
            with open(self._state_path()) as f:
                st = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("ignoring unreadable %s: %s", self._state_path(), e)
            return
        self.snapshots = st.get("snapshots", {})
        self.images = st.get("images", {})
        for img in self.images.values():
            if img.pop("pending_snapshots", None):      # CreateImage interrupted by a restart
                img["state"] = "failed"
        for vid, tags in st.get("volume_tags", {}).items():
            if vid in self.cfg["volumes"]:
                self.cfg["volumes"][vid]["tags"] = tags
        if "instance_tags" in st:
            self.instance_tags = st["instance_tags"]

    def save(self):
        with self.lock:
            st = {"snapshots": self.snapshots, "images": self.images,
                  "instance_tags": self.instance_tags,
                  "volume_tags": {v: d["tags"] for v, d in self.cfg["volumes"].items()}}
            atomic_write(self._state_path(), json.dumps(st, indent=1, sort_keys=True))

    # ---- request log --------------------------------------------------------
    def log_request(self, rec):
        line = json.dumps(rec, sort_keys=True, default=str)
        with self.log_lock:
            try:
                self.req_log.write(line + "\n")
            except (OSError, ValueError):
                pass

    def count(self, action, code):
        with self.lock:
            self.counts[action] = self.counts.get(action, 0) + 1
            key = "%s:%s" % (action, code)
            self.codes[key] = self.codes.get(key, 0) + 1

    # ---- time --------------------------------------------------------------
    def now(self):
        return time.time()

    # ---- credentials ---------------------------------------------------------
    def _init_imds_credentials(self):
        im = self.cfg["imds"]
        if not im.get("role_name"):
            return
        ttl = self.settings.get("imds_credential_ttl")
        now = self.now()
        exp = parse_iso(im["expiration"]) if im.get("expiration") else now + (ttl or 6 * 3600)
        self._issue_imds_credentials(now, exp, im.get("access_key_id"),
                                     im.get("secret_access_key"), im.get("token"))

    def _issue_imds_credentials(self, now, expiration, akid=None, secret=None, token=None):
        # IMDS shows whole seconds: keep the real expiry equal to what clients parse
        now, expiration = float(int(now)), float(math.ceil(expiration))
        im = self.cfg["imds"]
        n = int(im.get("token_length") or 900)
        c = {"akid": akid or "ASIA" + rand_alnum(16),
             "secret": secret or rand_alnum(40, string.ascii_letters + string.digits + "+/"),
             "token": token or base64.b64encode(secrets.token_bytes(n)).decode()[:n],
             "issued": now, "expiration": expiration, "source": "imds"}
        with self.lock:
            self.imds_creds.append(c)
            self.creds[c["akid"]] = c
        log.info("IMDS credentials issued: %s expiring %s", c["akid"], iso_s(expiration))
        return c

    def current_imds_credentials(self):
        """Current role credentials; rotates when the TTL knob is set."""
        with self.lock:
            if not self.imds_creds:
                return None
            cur = self.imds_creds[-1]
            ttl = self.settings.get("imds_credential_ttl")
            now = self.now()
            if ttl:
                margin = min(300.0, ttl / 2.0)
                if cur["expiration"] - now < margin:
                    cur = self._issue_imds_credentials(now, now + ttl)
            return cur

    def rotate_imds_credentials(self):
        with self.lock:
            if not self.imds_creds:
                raise ValueError("no IMDS role configured")
            ttl = self.settings.get("imds_credential_ttl") or 6 * 3600
            return self._issue_imds_credentials(self.now(), self.now() + ttl)

    def expire_imds_credentials(self):
        with self.lock:
            for c in self.imds_creds:
                c["expiration"] = min(c["expiration"], self.now() - 1)

    # ---- authentication ------------------------------------------------------
    def authenticate(self, method, path, headers, body, rec):
        """Verify SigV4; returns the access key id or raises EC2Error."""
        auth = parse_authorization(headers.get("Authorization"))
        rec["akid"] = auth["akid"]
        cred = self.creds.get(auth["akid"])
        if cred is None:
            raise EC2Error("AuthFailure", "AWS was not able to validate the provided access "
                           "credentials")
        if auth["service"] != "ec2":
            raise EC2Error("SignatureDoesNotMatch",
                           "Credential should be scoped to correct service: 'ec2'.")
        amz_date = headers.get("X-Amz-Date")
        if amz_date is not None:
            if "x-amz-date" not in auth["signed"]:
                raise EC2Error("SignatureDoesNotMatch", "x-amz-date must be a signed header")
            try:
                req_time = datetime.datetime.strptime(amz_date, SIGV4_TIMESTAMP).replace(
                    tzinfo=datetime.timezone.utc).timestamp()
            except ValueError:
                raise EC2Error("IncompleteSignature",
                               "Invalid X-Amz-Date '%s' (expected YYYYMMDDTHHMMSSZ)" % amz_date)
            timestamp = amz_date
        elif headers.get("Date") is not None and "date" in auth["signed"]:
            try:
                req_time = parsedate_to_datetime(headers.get("Date")).timestamp()
            except (TypeError, ValueError):
                raise EC2Error("IncompleteSignature", "Invalid Date header")
            timestamp = time.strftime(SIGV4_TIMESTAMP, time.gmtime(req_time))
        else:
            raise EC2Error("IncompleteSignature",
                           "Authorization header requires existence of either a 'X-Amz-Date' "
                           "or a 'Date' header.")
        if "host" not in auth["signed"]:
            raise EC2Error("SignatureDoesNotMatch", "host must be a signed header")
        if timestamp[:8] != auth["date"]:
            raise EC2Error("SignatureDoesNotMatch",
                           "Date in Credential scope does not match YYYYMMDD from ISO-8601 "
                           "version of date from HTTP: '%s' != '%s'" % (auth["date"], timestamp[:8]))
        now = self.now() + float(self.settings.get("clock_skew_s") or 0)
        skew = float(self.settings.get("max_clock_skew_s") or 900)
        if abs(now - req_time) > skew:
            raise EC2Error("RequestExpired",
                           "Request has expired. Timestamp date is %s" % amz_date)
        if auth["region"] != self.cfg["region"]:
            raise EC2Error("AuthFailure",
                           "Credential should be scoped to a valid region, not '%s'. "
                           "This endpoint is %s." % (auth["region"], self.cfg["region"]))
        token = headers.get("X-Amz-Security-Token")
        if cred.get("token"):
            if token is None:
                raise EC2Error("AuthFailure", "AWS was not able to validate the provided access "
                               "credentials (missing session token)")
            if not hmac.compare_digest(token.encode(), cred["token"].encode()):
                raise EC2Error("AuthFailure", "AWS was not able to validate the provided access "
                               "credentials (invalid session token)")
        elif token is not None:
            raise EC2Error("AuthFailure", "AWS was not able to validate the provided access "
                           "credentials (unexpected session token)")
        sha_hdr = headers.get("X-Amz-Content-SHA256")
        if sha_hdr is not None and sha_hdr != hashlib.sha256(body).hexdigest():
            raise EC2Error("SignatureDoesNotMatch",
                           "x-amz-content-sha256 does not match the request body")
        host = headers.get("Host")
        if not host:
            raise EC2Error("IncompleteSignature", "Missing Host header")
        for h in auth["signed"]:
            if h not in ("host",) and headers.get(h) is None:
                raise EC2Error("SignatureDoesNotMatch", "Signed header '%s' is missing" % h)
        sig, canonical, sts = sigv4_signature(
            method, "http://%s%s" % (host, path), list(headers.items()), auth["signed"], body,
            cred["secret"], auth["region"], auth["service"], timestamp, auth["akid"],
            cred.get("token"))
        if not hmac.compare_digest(sig.encode(), auth["signature"].encode()):
            red = canonical
            if token:
                red = red.replace(token, "<token>")
            rec["canonical_request"] = red
            rec["string_to_sign"] = sts
            log.info("signature mismatch for %s; expected canonical request:\n%s\n"
                     "string to sign:\n%s", auth["akid"], red, sts)
            raise EC2Error("SignatureDoesNotMatch")
        exp = cred.get("expiration")
        if exp is not None and self.now() >= exp:
            code = self.settings.get("expired_credentials_code") or "RequestExpired"
            raise EC2Error(code, ERRORS.get(code, (0, "Request has expired."))[1])
        return auth["akid"]

    # ---- faults --------------------------------------------------------------
    def add_rule(self, rule):
        r = normalize_rule(rule, self.imds_separate)
        with self.lock:
            if r["kind"] == "imds" and r["imds"] == "down" and r.get("mode") == "refuse":
                if self.imds_listener:
                    self.imds_listener.down()
            self.rule_seq += 1
            r["id"] = self.rule_seq
            self.rules.append(r)
        return r

    def clear_rules(self, kind=None):
        with self.lock:
            self.rules = [r for r in self.rules if kind is not None and r["kind"] != kind]
            if self.imds_listener:
                self.imds_listener.up()

    def take_rule(self, kind, match):
        """First matching rule; consumes one of its count.  None if none."""
        with self.lock:
            for r in self.rules:
                if r["kind"] != kind or not match(r):
                    continue
                if r["skip"] > 0:
                    r["skip"] -= 1
                    continue
                r["hits"] += 1
                if r["count"] > 0:
                    r["count"] -= 1
                    if r["count"] == 0:
                        self.rules.remove(r)
                        if kind == "imds" and r.get("mode") == "refuse" and self.imds_listener:
                            self.imds_listener.up()
                return dict(r)
            return None

    def take_ec2_fault(self, action):
        return self.take_rule("ec2", lambda r: r["action"] in ("*", action))

    def take_imds_fault(self, path):
        return self.take_rule("imds", lambda r: path.startswith("/latest/" + r["path"].lstrip("/"))
                              if r["path"] else True)

    def update_settings(self, updates):
        new = dict(self.settings)
        for k, v in updates.items():
            if k not in DEFAULT_SETTINGS:
                raise ValueError("unknown setting '%s'" % k)
            if k in NUMERIC_SETTINGS:
                v = non_negative(v, k)
                if k == "imds_credential_ttl" and v == 0:
                    v = None
            elif k == "imds_v1_allowed":
                v = bool(v)
            elif k == "expired_credentials_code" and v not in ("RequestExpired", "ExpiredToken",
                                                                "AuthFailure"):
                raise ValueError("expired_credentials_code: RequestExpired|ExpiredToken|AuthFailure")
            new[k] = v
        with self.lock:
            self.settings = new

    def reset(self, everything=False):
        with self.lock:
            self.clear_rules()
            self.settings = dict(self.default_settings)
            if everything:
                for s in list(self.snapshots.values()):
                    if s.get("file"):
                        try:
                            os.unlink(s["file"])
                        except OSError:
                            pass
                self.snapshots.clear()
                self.images.clear()
                self.counts.clear()
                self.codes.clear()
                self.last_snapshot_at.clear()
                self.reboots = 0
                self.save()

    # ---- snapshots ---------------------------------------------------------
    def snap_state(self, s, now=None):
        now = self.now() if now is None else now
        el = now - s["start_time"]
        ca = s.get("complete_after", 0) or 0
        if el >= ca:
            if s.get("fail"):
                return "error", "0%"
            return "completed", "100%"
        return "pending", "%d%%" % min(99, int(100 * el / ca))

    def _precheck_snapshot(self, vols):
        now = self.now()
        iv = float(self.settings.get("per_volume_min_interval_s") or 0)
        mp = int(self.settings.get("max_pending_per_volume") or 0)
        for v in vols:
            last = self.last_snapshot_at.get(v["id"])
            if iv and last is not None and now - last < iv:
                raise EC2Error("SnapshotCreationPerVolumeRateExceeded")
            if mp:
                pending = sum(1 for s in self.snapshots.values()
                              if s["volume_id"] == v["id"] and self.snap_state(s, now)[0] == "pending")
                if pending >= mp:
                    raise EC2Error("ConcurrentSnapshotLimitExceeded")

    def take_snapshots(self, vols, description, tags_by_vol, source, rec, fail=False,
                       limits=True):
        """Copy the volumes' bytes now and register pending snapshots.

        tags_by_vol: {volume id: {key: value}}.  The point in time is when
        this runs (the copies are sequential; reflinks make that instant).
        """
        with self.lock:
            if limits:
                self._precheck_snapshot(vols)
            now = self.now()
            for v in vols:
                self.last_snapshot_at[v["id"]] = now
        pit = self.now()
        rec["point_in_time"] = pit
        created, copies = [], []
        try:
            for v in vols:
                sid = new_id("snap")
                info = {"method": None, "ms": 0.0, "bytes": 0, "size": 0}
                path = None
                if v["backing_file"]:
                    path = os.path.join(self.snap_dir, sid + ".img")
                    try:
                        info = copy_volume(v["backing_file"], path)
                    except OSError as e:
                        log.error("copy of %s (%s) failed: %s", v["id"], v["backing_file"], e)
                        raise EC2Error("InternalError",
                                       "emulator could not copy the backing file of %s: %s"
                                       % (v["id"], e.strerror))
                s = {"id": sid, "volume_id": v["id"], "volume_size": v["size_gib"],
                     "description": description or "", "start_time": pit,
                     "tags": dict(tags_by_vol.get(v["id"], {})), "file": path,
                     "copy_ms": info["ms"], "copy_method": info["method"],
                     "copied_bytes": info["bytes"], "source": source,
                     "complete_after": float(self.settings.get("complete_after") or 0),
                     "fail": bool(fail), "owner": self.cfg["account_id"]}
                created.append(s)
                copies.append({"volume_id": v["id"], "snapshot_id": sid, "ms": info["ms"],
                               "method": info["method"], "bytes": info["bytes"]})
        except Exception:
            for s in created:
                if s["file"]:
                    try:
                        os.unlink(s["file"])
                    except OSError:
                        pass
            raise
        rec.setdefault("copies", []).extend(copies)
        rec["copy_ms"] = round(rec.get("copy_ms", 0) + sum(c["ms"] for c in copies), 3)
        with self.lock:
            for s in created:
                self.snapshots[s["id"]] = s
            self.save()
        return created

    def snapshot_item(self, s, create_style):
        state, progress = self.snap_state(s)
        d = {"snapshotId": s["id"], "volumeId": s["volume_id"]}
        if create_style:           # CreateSnapshots SnapshotInfo: <state>
            d.update({"state": state})
        else:                      # Snapshot: <status>
            d.update({"status": state})
            if state == "error":
                d["statusMessage"] = "Snapshot failed (emulated)"
        d.update({"startTime": iso_ms(s["start_time"]), "progress": progress,
                  "ownerId": s["owner"], "volumeSize": s["volume_size"],
                  "description": s["description"], "encrypted": False})
        if not create_style:
            d["storageTier"] = "standard"
        d["tagSet"] = tag_set(s["tags"])
        return d

    def get_snapshot(self, sid):
        check_id("snap", sid)
        s = self.snapshots.get(sid)
        if s is None:
            raise not_found("snap", sid)
        return s

    # ---- images ---------------------------------------------------------
    def image_state(self, img):
        if img.get("pending_snapshots"):
            return "pending"
        states = []
        for m in img["bdm"]:
            sid = (m.get("ebs") or {}).get("snapshotId")
            if sid:
                s = self.snapshots.get(sid)
                states.append(self.snap_state(s)[0] if s else "error")
        if "error" in states:
            return "failed"
        if "pending" in states:
            return "pending"
        return "available"

    def launch_image(self):
        c = self.cfg
        return {"id": c["image_id"], "name": "emulated-launch-image", "description": "",
                "owner": AMAZON_OWNER, "alias": "amazon", "architecture": c["architecture"],
                "root_device_name": c["root_device_name"],
                "virtualization_type": c["virtualization_type"],
                "ena_support": c["ena_support"], "boot_mode": c["boot_mode"],
                "creation_time": c["launch_time"], "tags": {},
                "product_codes": c["product_codes"], "bdm": [], "public": True,
                "sriov": "simple", "tpm": None, "imds_support": None, "state": "available"}

    def image_item(self, img):
        state = img.get("state") or self.image_state(img)
        d = {"imageId": img["id"],
             "imageLocation": "%s/%s" % (img["owner"], img["name"]),
             "imageState": state, "imageOwnerId": img["owner"],
             "creationDate": iso_ms(img["creation_time"]), "isPublic": img.get("public", False),
             "productCodes": [{"productCode": p.get("id"), "type": p.get("type", "marketplace")}
                              for p in img.get("product_codes", [])],
             "architecture": img["architecture"], "imageType": "machine",
             "sriovNetSupport": img.get("sriov"),
             "imageOwnerAlias": img.get("alias"),
             "name": img["name"], "description": img.get("description") or None,
             "rootDeviceType": "ebs", "rootDeviceName": img["root_device_name"],
             "blockDeviceMapping": img["bdm"],
             "virtualizationType": img["virtualization_type"],
             "tagSet": tag_set(img["tags"]), "hypervisor": "xen",
             "enaSupport": img.get("ena_support"),
             "platformDetails": "Linux/UNIX", "usageOperation": "RunInstances",
             "bootMode": img.get("boot_mode"), "tpmSupport": img.get("tpm"),
             "imdsSupport": img.get("imds_support")}
        if state == "failed":
            d["stateReason"] = {"code": "Client.SnapshotError",
                                "message": "A snapshot of the image failed"}
        return d

    def check_image_name(self, name):
        if name is None:
            raise EC2Error("MissingParameter", "The request must contain the parameter name")
        if not 3 <= len(name) <= 128 or not re.match(r"^[A-Za-z0-9()\[\] ./\-'@_]+$", name):
            raise EC2Error("InvalidAMIName.Malformed",
                           "AMI names must be between 3 and 128 characters long, and may "
                           "contain letters, numbers, '(', ')', '.', '-', '/' and '_'")
        for img in self.images.values():
            if img["name"] == name:
                raise EC2Error("InvalidAMIName.Duplicate",
                               "AMI name %s is already in use by AMI %s" % (name, img["id"]))

    # ---- action dispatch ---------------------------------------------------
    def dispatch(self, action, params, rec):
        fn = getattr(self, "op_" + action, None)
        spec = SPECS.get(action)
        if fn is None or spec is None:
            raise EC2Error("InvalidAction",
                           "The action %s is not valid for this web service." % action)
        p = validate(unflatten(params), spec, [])
        return fn(p, rec)

    def _dry_run(self, p):
        if p.get("DryRun"):
            raise EC2Error("DryRunOperation")

    def _instance_volumes(self):
        return list(self.cfg["volumes"].values())

    def op_CreateSnapshots(self, p, rec):
        spec = p.get("InstanceSpecification") or {}
        iid = spec.get("InstanceId")
        if not iid:
            raise EC2Error("MissingParameter",
                           "The request must contain the parameter InstanceSpecification.InstanceId")
        check_id("i", iid)
        if iid != self.cfg["instance_id"]:
            raise not_found("i", iid)
        excluded = spec.get("ExcludeDataVolumeId") or []
        vols = self._instance_volumes()
        by_id = {v["id"]: v for v in vols}
        for vid in excluded:
            check_id("vol", vid)
            if vid not in by_id:
                raise not_found("vol", vid)
            if by_id[vid]["root"]:
                raise EC2Error("InvalidParameterValue",
                               "The root volume %s cannot be excluded with ExcludeDataVolumeId; "
                               "use ExcludeBootVolume" % vid)
        cts = p.get("CopyTagsFromSource")
        if cts is not None and cts != "volume":
            raise EC2Error("InvalidParameterValue",
                           "Value (%s) for parameter CopyTagsFromSource is invalid. "
                           "Expected: 'volume'." % cts)
        tags = tags_from_spec(p.get("TagSpecification"), ("snapshot",)).get("snapshot", {})
        chosen = [v for v in vols if v["id"] not in excluded
                  and not (spec.get("ExcludeBootVolume") and v["root"])]
        if not chosen:
            raise EC2Error("InvalidParameterCombination",
                           "No volumes left to snapshot after the exclusions")
        tags_by_vol = {}
        for v in chosen:
            t = dict(v["tags"]) if cts == "volume" else {}
            t.update(tags)
            if len(t) > 50:
                raise EC2Error("TagLimitExceeded")
            tags_by_vol[v["id"]] = t
        self._dry_run(p)
        snaps = self.take_snapshots(chosen, p.get("Description"), tags_by_vol, "CreateSnapshots",
                                    rec, fail=rec.get("snapshot_error", False))
        rec["snapshot_ids"] = [s["id"] for s in snaps]
        return {"snapshotSet": [self.snapshot_item(s, True) for s in snaps]}

    def op_CreateSnapshot(self, p, rec):
        vid = p.get("VolumeId")
        if not vid:
            raise EC2Error("MissingParameter", "The request must contain the parameter VolumeId")
        check_id("vol", vid)
        v = self.cfg["volumes"].get(vid)
        if v is None:
            raise not_found("vol", vid)
        tags = tags_from_spec(p.get("TagSpecification"), ("snapshot",)).get("snapshot", {})
        self._dry_run(p)
        snaps = self.take_snapshots([v], p.get("Description"), {vid: tags},
                                    "CreateSnapshot", rec, fail=rec.get("snapshot_error", False))
        rec["snapshot_ids"] = [snaps[0]["id"]]
        return self.snapshot_item(snaps[0], False)

    def op_DescribeSnapshots(self, p, rec):
        ids = p.get("SnapshotId") or []
        for sid in ids:
            self.get_snapshot(sid)
        with self.lock:
            items = list(self.snapshots.values())
        if ids:
            items = [s for s in items if s["id"] in ids]
        owners = p.get("Owner") or []
        if owners:
            items = [s for s in items if "self" in owners or s["owner"] in owners]
        if p.get("RestorableBy"):
            items = [s for s in items if any(r in ("self", "all", self.cfg["account_id"])
                                             for r in p["RestorableBy"])]
        now = self.now()
        table = {
            "snapshot-id": lambda s: [s["id"]],
            "volume-id": lambda s: [s["volume_id"]],
            "status": lambda s: [self.snap_state(s, now)[0]],
            "owner-id": lambda s: [s["owner"]],
            "description": lambda s: [s["description"]],
            "progress": lambda s: [self.snap_state(s, now)[1]],
            "volume-size": lambda s: [s["volume_size"]],
            "encrypted": lambda s: [False],
            "start-time": lambda s: [iso_ms(s["start_time"])],
            "storage-tier": lambda s: ["standard"],
        }
        items = apply_filters(items, p.get("Filter"), table, lambda s: s["tags"])
        self._dry_run(p)
        items.sort(key=lambda s: (s["start_time"], s["id"]))
        if ids and p.get("MaxResults") is not None:
            raise EC2Error("InvalidParameterCombination",
                           "The parameter SnapshotId cannot be used with the parameter maxResults")
        page, nxt = paginate(items, p)
        return {"snapshotSet": [self.snapshot_item(s, False) for s in page], "nextToken": nxt}

    def op_DeleteSnapshot(self, p, rec):
        sid = p.get("SnapshotId")
        if not sid:
            raise EC2Error("MissingParameter", "The request must contain the parameter SnapshotId")
        with self.lock:
            s = self.get_snapshot(sid)
            for img in self.images.values():
                if any((m.get("ebs") or {}).get("snapshotId") == sid for m in img["bdm"]):
                    raise EC2Error("InvalidSnapshot.InUse",
                                   "The snapshot %s is currently in use by %s" % (sid, img["id"]))
            self._dry_run(p)
            del self.snapshots[sid]
            self.save()
        if s.get("file"):
            try:
                os.unlink(s["file"])
            except FileNotFoundError:
                pass
        return {"return": True}

    # tags ---------------------------------------------------------------
    def _tag_target(self, rid):
        """Return (resource_type, tags dict) for a taggable id."""
        prefix = rid.split("-", 1)[0] if "-" in rid else ""
        if prefix == "snap":
            return "snapshot", self.get_snapshot(rid)["tags"]
        if prefix == "vol":
            check_id("vol", rid)
            v = self.cfg["volumes"].get(rid)
            if v is None:
                raise not_found("vol", rid)
            return "volume", v["tags"]
        if prefix == "i":
            check_id("i", rid)
            if rid != self.cfg["instance_id"]:
                raise not_found("i", rid)
            return "instance", self.instance_tags
        if prefix == "ami":
            check_id("ami", rid)
            img = self.images.get(rid)
            if img is None:
                raise not_found("ami", rid)
            return "image", img["tags"]
        raise EC2Error("InvalidID", "The ID '%s' is not valid" % rid)

    def op_CreateTags(self, p, rec):
        rids = p.get("ResourceId") or []
        if not rids:
            raise EC2Error("MissingParameter", "The request must contain the parameter resourceIdSet")
        if not p.get("Tag"):
            raise EC2Error("MissingParameter", "The request must contain the parameter tagSet")
        tags = validate_tags(p["Tag"])
        with self.lock:
            targets = [self._tag_target(r)[1] for r in rids]
            for t in targets:
                if len(set(t) | set(tags)) > 50:
                    raise EC2Error("TagLimitExceeded")
            self._dry_run(p)
            for t in targets:
                t.update(tags)
            self.save()
        return {"return": True}

    def op_DeleteTags(self, p, rec):
        rids = p.get("ResourceId") or []
        if not rids:
            raise EC2Error("MissingParameter", "The request must contain the parameter resourceIdSet")
        with self.lock:
            targets = [self._tag_target(r)[1] for r in rids]
            self._dry_run(p)
            for t in targets:
                if not p.get("Tag"):
                    t.clear()
                for tag in p.get("Tag") or []:
                    k = tag.get("Key")
                    if k in t and ("Value" not in tag or t[k] == tag["Value"]):
                        del t[k]
            self.save()
        return {"return": True}

    def op_DescribeTags(self, p, rec):
        with self.lock:
            rows = []
            rows += [(self.cfg["instance_id"], "instance", k, v)
                     for k, v in self.instance_tags.items()]
            for vid, v in self.cfg["volumes"].items():
                rows += [(vid, "volume", k, val) for k, val in v["tags"].items()]
            for sid, s in self.snapshots.items():
                rows += [(sid, "snapshot", k, val) for k, val in s["tags"].items()]
            for iid, img in self.images.items():
                rows += [(iid, "image", k, val) for k, val in img["tags"].items()]
        table = {"resource-id": lambda r: [r[0]], "resource-type": lambda r: [r[1]],
                 "key": lambda r: [r[2]], "value": lambda r: [r[3]]}
        rows = apply_filters(rows, p.get("Filter"), table, lambda r: {})
        self._dry_run(p)
        rows.sort(key=lambda r: (r[1], r[0], r[2]))
        page, nxt = paginate(rows, p)
        return {"tagSet": [{"resourceId": r[0], "resourceType": r[1], "key": r[2], "value": r[3]}
                           for r in page], "nextToken": nxt}

    # instances / volumes ---------------------------------------------------
    def instance_item(self):
        c = self.cfg
        bdm = []
        for v in sorted(self._instance_volumes(), key=lambda v: (not v["root"], v["device_name"])):
            bdm.append({"deviceName": v["device_name"],
                        "ebs": {"volumeId": v["id"], "status": "attached",
                                "attachTime": iso_ms(c["launch_time"]),
                                "deleteOnTermination": v["delete_on_termination"]}})
        ip = c["private_ip"]
        dns = "ip-%s.ec2.internal" % ip.replace(".", "-")
        return {
            "instanceId": c["instance_id"], "imageId": c["image_id"],
            "instanceState": {"code": 16, "name": "running"},
            "privateDnsName": dns, "dnsName": "", "reason": "", "amiLaunchIndex": 0,
            "productCodes": [{"productCode": p.get("id"), "type": p.get("type", "marketplace")}
                             for p in c["product_codes"]],
            "instanceType": c["instance_type"], "launchTime": iso_ms(c["launch_time"]),
            "placement": {"availabilityZone": c["availability_zone"], "groupName": "",
                          "tenancy": "default"},
            "monitoring": {"state": "disabled"}, "privateIpAddress": ip,
            "architecture": c["architecture"], "rootDeviceType": "ebs",
            "rootDeviceName": c["root_device_name"], "blockDeviceMapping": bdm,
            "virtualizationType": c["virtualization_type"], "clientToken": "",
            "tagSet": tag_set(self.instance_tags), "hypervisor": c["hypervisor"],
            "ebsOptimized": True, "enaSupport": c["ena_support"],
            "iamInstanceProfile": ({"arn": "arn:aws:iam::%s:instance-profile/%s"
                                    % (c["account_id"], c["imds"]["role_name"]),
                                    "id": "AIPA" + c["instance_id"][2:18].upper()}
                                   if c["imds"].get("role_name") else None),
            "bootMode": c["boot_mode"], "platformDetails": c["platform_details"],
            "usageOperation": c["usage_operation"],
            "metadataOptions": {"state": "applied", "httpTokens": "required",
                                "httpPutResponseHopLimit": 2, "httpEndpoint": "enabled"},
        }

    def op_DescribeInstances(self, p, rec):
        ids = p.get("InstanceId") or []
        for iid in ids:
            check_id("i", iid)
            if iid != self.cfg["instance_id"]:
                raise not_found("i", iid)
        inst = [self.cfg["instance_id"]]
        c = self.cfg
        table = {
            "instance-id": lambda i: [c["instance_id"]],
            "instance-state-name": lambda i: ["running"],
            "instance-type": lambda i: [c["instance_type"]],
            "image-id": lambda i: [c["image_id"]],
            "availability-zone": lambda i: [c["availability_zone"]],
            "architecture": lambda i: [c["architecture"]],
            "block-device-mapping.volume-id": lambda i: list(c["volumes"]),
            "block-device-mapping.device-name": lambda i: [v["device_name"] for v in c["volumes"].values()],
            "private-ip-address": lambda i: [c["private_ip"]],
        }
        inst = apply_filters(inst, p.get("Filter"), table, lambda i: self.instance_tags)
        self._dry_run(p)
        res = []
        if inst:
            res.append({"reservationId": "r-" + hashlib.sha256(c["instance_id"].encode()).hexdigest()[:17],
                        "ownerId": c["account_id"], "groupSet": [],
                        "instancesSet": [self.instance_item()]})
        return {"reservationSet": res}

    def volume_item(self, v):
        c = self.cfg
        return {"volumeId": v["id"], "size": v["size_gib"], "snapshotId": "",
                "availabilityZone": c["availability_zone"], "status": "in-use",
                "createTime": iso_ms(c["launch_time"]),
                "attachmentSet": [{"volumeId": v["id"], "instanceId": c["instance_id"],
                                   "device": v["device_name"], "status": "attached",
                                   "attachTime": iso_ms(c["launch_time"]),
                                   "deleteOnTermination": v["delete_on_termination"]}],
                "tagSet": tag_set(v["tags"]), "volumeType": v["volume_type"],
                "iops": v["iops"], "throughput": v["throughput"] if v["volume_type"] == "gp3" else None,
                "encrypted": v["encrypted"], "multiAttachEnabled": False}

    def op_DescribeVolumes(self, p, rec):
        ids = p.get("VolumeId") or []
        for vid in ids:
            check_id("vol", vid)
            if vid not in self.cfg["volumes"]:
                raise not_found("vol", vid)
        vols = [v for v in self._instance_volumes() if not ids or v["id"] in ids]
        c = self.cfg
        table = {
            "volume-id": lambda v: [v["id"]], "size": lambda v: [v["size_gib"]],
            "status": lambda v: ["in-use"], "volume-type": lambda v: [v["volume_type"]],
            "availability-zone": lambda v: [c["availability_zone"]],
            "attachment.instance-id": lambda v: [c["instance_id"]],
            "attachment.device": lambda v: [v["device_name"]],
            "attachment.status": lambda v: ["attached"],
            "attachment.delete-on-termination": lambda v: [v["delete_on_termination"]],
            "encrypted": lambda v: [v["encrypted"]],
        }
        vols = apply_filters(vols, p.get("Filter"), table, lambda v: v["tags"])
        self._dry_run(p)
        vols.sort(key=lambda v: v["id"])
        page, nxt = paginate(vols, p)
        return {"volumeSet": [self.volume_item(v) for v in page], "nextToken": nxt}

    # images ------------------------------------------------------------
    def _bdm_from_request(self, entries):
        out = []
        for e in entries:
            dev = e.get("DeviceName")
            if not dev:
                raise EC2Error("InvalidBlockDeviceMapping", "DeviceName is required")
            item = {"deviceName": dev}
            if "NoDevice" in e:
                item["noDevice"] = ""
            elif e.get("VirtualName"):
                item["virtualName"] = e["VirtualName"]
            elif "Ebs" in e:
                ebs = e["Ebs"]
                sid = ebs.get("SnapshotId")
                eb = {}
                if sid:
                    s = self.get_snapshot(sid)
                    size = ebs.get("VolumeSize", s["volume_size"])
                    if size < s["volume_size"]:
                        raise EC2Error("InvalidBlockDeviceMapping",
                                       "Volume of size %d is smaller than snapshot '%s', "
                                       "expect size >= %d" % (size, sid, s["volume_size"]))
                    eb["snapshotId"] = sid
                else:
                    if "VolumeSize" not in ebs:
                        raise EC2Error("InvalidBlockDeviceMapping",
                                       "%s: either a snapshot id or a volume size is required"
                                       % dev)
                    size = ebs["VolumeSize"]
                eb.update({"volumeSize": size,
                           "deleteOnTermination": ebs.get("DeleteOnTermination", True),
                           "volumeType": ebs.get("VolumeType", "gp2"),
                           "encrypted": ebs.get("Encrypted", False)})
                if "Iops" in ebs:
                    eb["iops"] = ebs["Iops"]
                if "Throughput" in ebs:
                    eb["throughput"] = ebs["Throughput"]
                item["ebs"] = eb
            else:
                raise EC2Error("InvalidBlockDeviceMapping",
                               "%s: one of Ebs, NoDevice or VirtualName is required" % dev)
            if any(m["deviceName"] == dev for m in out):
                raise EC2Error("InvalidBlockDeviceMapping", "Duplicate device name %s" % dev)
            out.append(item)
        return out

    def op_RegisterImage(self, p, rec):
        if p.get("ImageLocation"):
            raise EC2Error("InvalidParameterValue",
                           "The emulator only registers EBS-backed images (no ImageLocation)")
        arch = p.get("Architecture", "i386")          # AWS default for EBS-backed: i386
        if arch not in ("i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac"):
            raise EC2Error("InvalidParameterValue", "Invalid architecture '%s'" % arch)
        virt = p.get("VirtualizationType", "paravirtual")   # AWS default: paravirtual
        if virt not in ("hvm", "paravirtual"):
            raise EC2Error("InvalidParameterValue", "Invalid virtualization type '%s'" % virt)
        boot = p.get("BootMode")
        if boot is not None and boot not in ("legacy-bios", "uefi", "uefi-preferred"):
            raise EC2Error("InvalidParameterValue", "Invalid boot mode '%s'" % boot)
        with self.lock:
            self.check_image_name(p.get("Name"))
            bdm = self._bdm_from_request(p.get("BlockDeviceMapping") or [])
            root = p.get("RootDeviceName")
            if not root:
                raise EC2Error("MissingParameter",
                               "The request must contain the parameter rootDeviceName")
            rm = [m for m in bdm if m["deviceName"] == root]
            if not rm or not (rm[0].get("ebs") or {}).get("snapshotId"):
                raise EC2Error("InvalidBlockDeviceMapping",
                               "The root device %s must be mapped to an EBS snapshot" % root)
            tags = tags_from_spec(p.get("TagSpecification"), ("image",)).get("image", {})
            self._dry_run(p)
            iid = new_id("ami")
            self.images[iid] = {
                "id": iid, "name": p["Name"], "description": p.get("Description"),
                "owner": self.cfg["account_id"], "architecture": arch,
                "root_device_name": root, "virtualization_type": virt,
                "ena_support": p.get("EnaSupport"), "boot_mode": boot,
                "tpm": p.get("TpmSupport"), "imds_support": p.get("ImdsSupport"),
                "sriov": p.get("SriovNetSupport"),
                "creation_time": self.now(), "tags": tags, "bdm": bdm,
                "product_codes": [{"id": b, "type": "marketplace"}
                                  for b in p.get("BillingProduct") or []],
                "source": "RegisterImage"}
            self.save()
        rec["image_id"] = iid
        return {"imageId": iid}

    def op_CreateImage(self, p, rec):
        iid_inst = p.get("InstanceId")
        if not iid_inst:
            raise EC2Error("MissingParameter", "The request must contain the parameter InstanceId")
        check_id("i", iid_inst)
        if iid_inst != self.cfg["instance_id"]:
            raise not_found("i", iid_inst)
        overrides = {e.get("DeviceName"): e for e in p.get("BlockDeviceMapping") or []}
        tags = tags_from_spec(p.get("TagSpecification"), ("image", "snapshot"))
        vols = []
        for v in self._instance_volumes():
            o = overrides.get(v["device_name"])
            if o is not None and "NoDevice" in o:
                if v["root"]:
                    raise EC2Error("InvalidBlockDeviceMapping",
                                   "The root device cannot be excluded")
                continue
            vols.append(v)
        with self.lock:
            self.check_image_name(p.get("Name"))
            self._dry_run(p)
            ami = new_id("ami")
            c = self.cfg
            bdm = [{"deviceName": v["device_name"],
                    "ebs": {"volumeSize": v["size_gib"],
                            "deleteOnTermination": v["delete_on_termination"],
                            "volumeType": v["volume_type"], "encrypted": v["encrypted"]}}
                   for v in sorted(vols, key=lambda v: (not v["root"], v["device_name"]))]
            self.images[ami] = {
                "id": ami, "name": p["Name"], "description": p.get("Description"),
                "owner": c["account_id"], "architecture": c["architecture"],
                "root_device_name": c["root_device_name"],
                "virtualization_type": c["virtualization_type"],
                "ena_support": c["ena_support"], "boot_mode": c["boot_mode"],
                "tpm": None, "imds_support": None, "sriov": "simple",
                "creation_time": self.now(), "tags": tags.get("image", {}), "bdm": bdm,
                "product_codes": list(c["product_codes"]), "source": "CreateImage",
                "pending_snapshots": True, "no_reboot": bool(p.get("NoReboot"))}
            if not p.get("NoReboot"):
                self.reboots += 1
                log.warning("CreateImage without NoReboot: a real instance would reboot now")
            self.save()
        delay = float(self.settings.get("create_image_snapshot_delay_ms") or 0) / 1000.0
        fail = rec.get("snapshot_error", False)
        t = threading.Thread(target=self._create_image_snapshots,
                             args=(ami, vols, delay, tags.get("snapshot", {}), fail),
                             daemon=True)
        t.start()
        rec["image_id"] = ami
        return {"imageId": ami}

    def _create_image_snapshots(self, ami, vols, delay, tags, fail):
        """CreateImage fixes its snapshots some time after the call (undocumented when)."""
        time.sleep(delay)
        rec = {"kind": "async", "action": "CreateImage.snapshots", "image_id": ami,
               "time": iso_ms(self.now())}
        try:
            with self.lock:
                if ami not in self.images:
                    return
            desc = "Created by CreateImage(%s) for %s" % (self.cfg["instance_id"], ami)
            snaps = self.take_snapshots(vols, desc, {v["id"]: tags for v in vols}, "CreateImage",
                                        rec, fail, limits=False)
            with self.lock:
                img = self.images.get(ami)
                if img is None:
                    return
                by_vol = {s["volume_id"]: s["id"] for s in snaps}
                dev_vol = {v["device_name"]: v["id"] for v in vols}
                for m in img["bdm"]:
                    vid = dev_vol.get(m["deviceName"])
                    if vid in by_vol:
                        m["ebs"] = dict({"snapshotId": by_vol[vid]}, **m["ebs"])
                img.pop("pending_snapshots", None)
                self.save()
            rec["snapshot_ids"] = [s["id"] for s in snaps]
        except Exception as e:
            log.error("CreateImage snapshots for %s failed: %s", ami, e)
            with self.lock:
                img = self.images.get(ami)
                if img is not None:
                    img["state"] = "failed"
                    img.pop("pending_snapshots", None)
            rec["error"] = str(e)
        self.log_request(rec)

    def op_DescribeImages(self, p, rec):
        ids = p.get("ImageId") or []
        with self.lock:
            imgs = list(self.images.values())
        launch = self.launch_image()
        all_imgs = imgs + [launch]
        for iid in ids:
            check_id("ami", iid)
            if not any(i["id"] == iid for i in all_imgs):
                raise not_found("ami", iid)
        if ids:
            imgs = [i for i in all_imgs if i["id"] in ids]
        owners = p.get("Owner") or []
        if owners:
            pool = imgs if ids else all_imgs
            acct = self.cfg["account_id"]
            imgs = [i for i in pool
                    if ("self" in owners and i["owner"] == acct) or i["owner"] in owners
                    or (i.get("alias") and i["alias"] in owners)]
        table = {
            "image-id": lambda i: [i["id"]], "name": lambda i: [i["name"]],
            "state": lambda i: [i.get("state") or self.image_state(i)],
            "owner-id": lambda i: [i["owner"]], "architecture": lambda i: [i["architecture"]],
            "description": lambda i: [i.get("description") or ""],
            "root-device-name": lambda i: [i["root_device_name"]],
            "block-device-mapping.snapshot-id":
                lambda i: [(m.get("ebs") or {}).get("snapshotId") for m in i["bdm"]
                           if (m.get("ebs") or {}).get("snapshotId")],
            "block-device-mapping.device-name": lambda i: [m["deviceName"] for m in i["bdm"]],
            "is-public": lambda i: [i.get("public", False)],
            "virtualization-type": lambda i: [i["virtualization_type"]],
        }
        imgs = apply_filters(imgs, p.get("Filter"), table, lambda i: i["tags"])
        self._dry_run(p)
        imgs.sort(key=lambda i: (i["creation_time"], i["id"]))
        page, nxt = paginate(imgs, p)
        return {"imagesSet": [self.image_item(i) for i in page], "nextToken": nxt}

    def op_DeregisterImage(self, p, rec):
        iid = p.get("ImageId")
        if not iid:
            raise EC2Error("MissingParameter", "The request must contain the parameter ImageId")
        check_id("ami", iid)
        with self.lock:
            if iid == self.cfg["image_id"] and iid not in self.images:
                raise EC2Error("UnauthorizedOperation",
                               "You do not own the image %s" % iid)
            if iid not in self.images:
                raise not_found("ami", iid)
            self._dry_run(p)
            del self.images[iid]
            self.save()
        return {"return": True}

    # ---- IMDS --------------------------------------------------------------
    def new_imds_token(self, ttl):
        tok = base64.urlsafe_b64encode(secrets.token_bytes(42)).decode()
        with self.lock:
            now = self.now()
            self.imds_tokens = {t: e for t, e in self.imds_tokens.items() if e > now}
            self.imds_tokens[tok] = now + ttl
        return tok

    def imds_token_valid(self, tok):
        with self.lock:
            exp = self.imds_tokens.get(tok)
            return exp is not None and exp > self.now()

    def imds_get(self, path, no_role=False):
        """Returns (status, body) for GET path under /latest."""
        c = self.cfg
        role = c["imds"].get("role_name")
        if no_role:
            role = None
        if path.rstrip("/") in ("/latest", ""):
            return 200, "dynamic\nmeta-data"
        rel = path[len("/latest/"):] if path.startswith("/latest/") else None
        if rel is None:
            return 404, None
        vols = sorted(c["volumes"].values(), key=lambda v: v["device_name"])
        bdm = {"ami": c["root_device_name"], "root": c["root_device_name"]}
        n = 0
        for v in vols:
            if not v["root"]:
                n += 1
                bdm["ebs%d" % n] = v["device_name"].replace("/dev/", "")
        ip = c["private_ip"]
        host = "ip-%s.ec2.internal" % ip.replace(".", "-")
        tree = {
            "meta-data": {
                "ami-id": c["image_id"], "ami-launch-index": "0",
                "block-device-mapping": bdm, "hostname": host,
                "instance-id": c["instance_id"], "instance-type": c["instance_type"],
                "instance-life-cycle": "on-demand", "local-hostname": host,
                "local-ipv4": ip, "mac": c["mac"],
                "placement": {"availability-zone": c["availability_zone"],
                              "availability-zone-id": c["availability_zone_id"],
                              "region": c["region"]},
                "reservation-id": "r-" + hashlib.sha256(c["instance_id"].encode()).hexdigest()[:17],
            },
            "dynamic": {"instance-identity": {"document": None}},
        }
        if c["product_codes"]:
            tree["meta-data"]["product-codes"] = "\n".join(p.get("id", "") for p in c["product_codes"])
        if role:
            tree["meta-data"]["iam"] = {"info": None, "security-credentials": {role: None}}
        parts = [x for x in rel.split("/") if x]
        node = tree
        for i, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                return 404, None
            node = node[part]
        if isinstance(node, dict):
            return 200, "\n".join(k + ("/" if isinstance(v, dict) else "")
                                   for k, v in node.items())
        if node is not None:
            return 200, node
        key = "/".join(parts)
        if key == "dynamic/instance-identity/document":
            doc = {"accountId": c["account_id"], "architecture": c["architecture"],
                   "availabilityZone": c["availability_zone"],
                   "billingProducts": c["billing_products"] or None,
                   "devpayProductCodes": None,
                   "marketplaceProductCodes": [p.get("id") for p in c["product_codes"]] or None,
                   "imageId": c["image_id"], "instanceId": c["instance_id"],
                   "instanceType": c["instance_type"], "kernelId": None,
                   "pendingTime": iso_s(c["launch_time"]), "privateIp": ip,
                   "ramdiskId": None, "region": c["region"], "version": "2017-09-30"}
            return 200, json.dumps(doc, indent=2)
        if key == "meta-data/iam/info":
            return 200, json.dumps({
                "Code": "Success", "LastUpdated": iso_s(self.start_time),
                "InstanceProfileArn": "arn:aws:iam::%s:instance-profile/%s" % (c["account_id"], role),
                "InstanceProfileId": "AIPA" + c["instance_id"][2:18].upper()}, indent=2)
        if key.startswith("meta-data/iam/security-credentials/"):
            cr = self.current_imds_credentials()
            if cr is None:
                return 404, None
            return 200, json.dumps({
                "Code": "Success", "LastUpdated": iso_s(cr["issued"]), "Type": "AWS-HMAC",
                "AccessKeyId": cr["akid"], "SecretAccessKey": cr["secret"],
                "Token": cr["token"], "Expiration": iso_s(cr["expiration"])}, indent=2)
        return 404, None

    # ---- state -------------------------------------------------------------
    def state_json(self):
        with self.lock:
            now = self.now()
            snaps = []
            for s in sorted(self.snapshots.values(), key=lambda s: (s["start_time"], s["id"])):
                st, prog = self.snap_state(s, now)
                snaps.append({"id": s["id"], "volume_id": s["volume_id"], "file": s["file"],
                              "state": st, "progress": prog, "tags": s["tags"],
                              "description": s["description"],
                              "created": iso_ms(s["start_time"]), "created_epoch": s["start_time"],
                              "copy_ms": s["copy_ms"], "copy_method": s["copy_method"],
                              "copied_bytes": s["copied_bytes"], "source": s["source"]})
            imgs = []
            for i in sorted(self.images.values(), key=lambda i: (i["creation_time"], i["id"])):
                imgs.append({"id": i["id"], "name": i["name"], "state": i.get("state") or self.image_state(i),
                             "source": i.get("source"), "no_reboot": i.get("no_reboot"),
                             "architecture": i["architecture"],
                             "virtualization_type": i["virtualization_type"],
                             "root_device_name": i["root_device_name"],
                             "block_device_mappings": i["bdm"], "tags": i["tags"]})
            return {
                "snapshots": snaps, "images": imgs,
                "request_counts": dict(self.counts), "response_codes": dict(self.codes),
                "faults": [{k: v for k, v in r.items()} for r in self.rules],
                "settings": dict(self.settings), "reboots": self.reboots,
                "imds": {"role": self.cfg["imds"].get("role_name"),
                         "credentials": [{"access_key_id": c["akid"],
                                          "issued": iso_s(c["issued"]),
                                          "expiration": iso_s(c["expiration"]),
                                          "expired": c["expiration"] <= now}
                                         for c in self.imds_creds],
                         "tokens": len(self.imds_tokens)},
                "instance_id": self.cfg["instance_id"], "region": self.cfg["region"],
                "state_dir": self.state_dir,
            }


# --------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------

class _DropNow(Exception):
    """Close the connection without running the action or answering."""


class Handler(http.server.BaseHTTPRequestHandler):
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
        delay = float(emu.settings.get("latency_ms") or 0)
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
        rec["params"] = dict(rest)
        fault = emu.take_ec2_fault(action)
        ctx["fault"] = fault
        if fault:
            kind = fault["fault"]
            rec["fault"] = {k: fault[k] for k in ("id", "fault", "delay_ms", "variant", "execute",
                                                  "phase") if k in fault}
            if kind == "slow" and fault["phase"] == "before":
                time.sleep(fault["delay_ms"] / 1000.0)
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

    # ---- IMDS --------------------------------------------------------------
    def handle_imds(self, path):
        emu = self.emu
        m0 = time.monotonic()
        rec = {"kind": "imds", "time": iso_ms(time.time()), "method": self.command, "path": path}
        status = None
        try:
            self._read_body()
        except EC2Error:
            self.close_connection = True
        fault = emu.take_imds_fault(path)
        no_role = False
        if fault:
            rec["fault"] = fault["imds"]
            kind = fault["imds"]
            if kind == "slow":
                time.sleep(fault["delay_ms"] / 1000.0)
            elif kind == "down":
                mode = fault.get("mode", "close")
                if mode == "500":
                    status = 500
                    self._send(500, "Internal Server Error\n", "text/plain")
                else:
                    status = 0
                    self._drop(reset=(mode in ("reset", "refuse")))
                rec["status"] = status
                emu.log_request(rec)
                return
            elif kind == "error":
                status = int(fault.get("status", 500))
                self._send(status, "%d error\n" % status, "text/plain")
                rec["status"] = status
                emu.log_request(rec)
                return
            elif kind == "no_role":
                no_role = True
        status = self._imds_inner(path, no_role)
        rec["status"] = status
        rec["duration_ms"] = round((time.monotonic() - m0) * 1000, 3)
        emu.log_request(rec)
        log.info("IMDS %s %s %s", self.command, path, status)

    def _imds_inner(self, path, no_role):
        emu = self.emu
        if self.command == "PUT":
            if path != "/latest/api/token":
                self._send(405, "Method Not Allowed\n", "text/plain")
                return 405
            if self.headers.get("X-Forwarded-For") is not None:
                self._send(403, "Forbidden\n", "text/plain")
                return 403
            ttl_h = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            try:
                ttl = int(ttl_h)
                if not 1 <= ttl <= IMDS_MAX_TTL:
                    raise ValueError
            except (TypeError, ValueError):
                self._send(400, "Bad Request\n", "text/plain")
                return 400
            tok = emu.new_imds_token(ttl)
            self._send(200, tok, "text/plain",
                       {"X-aws-ec2-metadata-token-ttl-seconds": str(ttl)})
            return 200
        if self.command not in ("GET", "HEAD"):
            self._send(405, "Method Not Allowed\n", "text/plain")
            return 405
        if path == "/latest/api/token":
            self._send(405, "Method Not Allowed\n", "text/plain")
            return 405
        tok = self.headers.get("X-aws-ec2-metadata-token")
        if tok is None:
            if not emu.settings.get("imds_v1_allowed"):
                self._send(401, "Unauthorized\n", "text/plain")
                return 401
        elif not emu.imds_token_valid(tok):
            self._send(401, "Unauthorized\n", "text/plain")
            return 401
        st, body = emu.imds_get(path, no_role=no_role)
        if st != 200:
            self._send(404, "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n<html><head>"
                       "<title>404 - Not Found</title></head><body><h1>404 - Not Found</h1>"
                       "</body></html>\n", "text/html")
            return 404
        self._send(200, body, "text/plain")
        return 200

    # ---- control -----------------------------------------------------------
    def handle_control(self, path):
        emu = self.emu
        if not self._local():
            return self._json(403, {"error": "control API is loopback only"})
        try:
            raw = self._read_body()
        except EC2Error as e:
            return self._json(400, {"error": e.message})
        if path == "/_emulator/health":
            return self._json(200, {"ok": True})
        if path == "/_emulator/state" and self.command == "GET":
            return self._json(200, emu.state_json())
        if self.command != "POST":
            return self._json(405, {"error": "use POST"})
        try:
            body = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (ValueError, UnicodeDecodeError) as e:
            return self._json(400, {"error": "invalid JSON: %s" % e})
        try:
            if path == "/_emulator/reset":
                if not isinstance(body, dict):
                    raise ValueError("reset body must be a JSON object")
                everything = bool(body.get("snapshots") or body.get("all"))
                emu.reset(everything)
                log.info("control: reset%s", " (all)" if everything else "")
                return self._json(200, {"ok": True, "settings": emu.settings})
            if path == "/_emulator/control":
                result = self.apply_control(body)
                return self._json(200, result)
        except ValueError as e:
            return self._json(400, {"error": str(e)})
        return self._json(404, {"error": "unknown control path"})

    def apply_control(self, body):
        emu = self.emu
        items = body if isinstance(body, list) else [body]
        added = []
        for item in items:
            if not isinstance(item, dict):
                raise ValueError("control body must be a JSON object or a list of objects")
            item = dict(item)
            # validate everything first so that a bad request changes nothing
            settings = {k: item.pop(k) for k in list(item) if k in DEFAULT_SETTINGS}
            rules = []
            if "fault" in item or "action" in item:
                rules.append({k: item.pop(k) for k in list(item) if k in RULE_KEYS})
            elif "imds" in item:
                if item["imds"] in ("ok", None, "up", "clear"):
                    item.pop("imds")
                    item["clear_imds"] = True
                else:
                    rules.append({k: item.pop(k) for k in list(item) if k in RULE_KEYS})
            for r in item.pop("faults", []) or []:
                rules.append(r)
            flags = {k: item.pop(k) for k in ("clear_faults", "clear_imds", "rotate_imds_credentials",
                                               "expire_imds_credentials") if k in item}
            if item:
                raise ValueError("unknown control keys: %s" % sorted(item))
            for r in rules:
                normalize_rule(r, emu.imds_separate)
            emu.update_settings(settings)          # validates
            if flags.get("clear_faults"):
                emu.clear_rules()
            if flags.get("clear_imds"):
                emu.clear_rules("imds")
            for r in rules:
                added.append(emu.add_rule(r)["id"])
            if flags.get("expire_imds_credentials"):
                emu.expire_imds_credentials()
            if flags.get("rotate_imds_credentials"):
                emu.rotate_imds_credentials()
            log.info("control: %s", json.dumps({"settings": settings, "rules": rules,
                                                 "flags": flags}, default=str))
        return {"ok": True, "added_fault_ids": added, "settings": emu.settings,
                "faults": emu.rules}


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
    settings.update(latency_ms=a.latency_ms, latency_before_ms=a.latency_before_ms,
                    complete_after=a.complete_after)
    if cfg["complete_after"] is not None:
        settings["complete_after"] = float(cfg["complete_after"])
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
    th = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    th.start()
    log.info("listening on http://%s:%d (EC2 + IMDS)%s, instance %s, region %s, state %s",
             a.host, port,
             (", IMDS also on :%d" % emu.imds_listener.port) if emu.imds_listener else "",
             cfg["instance_id"], cfg["region"], emu.state_dir)
    while not stop.wait(0.5):
        pass
    log.info("shutting down")
    srv.shutdown()
    srv.server_close()
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


# --------------------------------------------------------------------------
# ctl / call clients
# --------------------------------------------------------------------------

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
                                    "expire", "raw", "wait"])
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


def main(argv):
    if argv and argv[0] == "ctl":
        return ctl(argv[1:])
    if argv and argv[0] == "call":
        return call(argv[1:])
    if argv and argv[0] == "serve":
        argv = argv[1:]
    return serve(argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
