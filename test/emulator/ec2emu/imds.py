"""IMDSv2: the metadata tree and its tokens (ImdsService, part of the
Emulator), and its HTTP side (ImdsHandler, part of the request handler)."""

import base64
import hashlib
import json
import logging
import secrets
import time

from .errors import EC2Error
from .util import iso_ms, iso_s

IMDS_MAX_TTL = 21600

log = logging.getLogger("ec2emu")


class ImdsService:
    """Session tokens (self.imds_tokens) and GET answers under /latest."""

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


class ImdsHandler:
    """/latest/... requests: faults first, then tokens, then the tree."""

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
