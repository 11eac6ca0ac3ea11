"""Access keys and request authentication (CredentialStore, part of the
Emulator): the static keys of the config, the IMDS role credentials the
emulator issues and rotates, and the SigV4 check of every EC2 request."""

import base64
import datetime
import hashlib
import hmac
import logging
import math
import secrets
import string
import time
from email.utils import parsedate_to_datetime

from .errors import ERRORS, EC2Error
from .sigv4 import SIGV4_TIMESTAMP, parse_authorization, sigv4_signature
from .util import iso_s, parse_iso, rand_alnum

log = logging.getLogger("ec2emu")


class CredentialStore:
    """self.creds (access key id -> credential) and self.imds_creds (issued
    role credentials, newest last), under self.lock."""

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
        if auth["region"] not in self.cfg["regions"]:
            # One endpoint serves every configured region: the credential scope
            # picks the region, as the host name does at AWS.
            raise EC2Error("AuthFailure",
                           "Credential should be scoped to a valid region, not '%s'. "
                           "This endpoint serves %s." % (auth["region"],
                                                        ", ".join(self.cfg["regions"])))
        rec["region"] = auth["region"]
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

    # ---- IAM-style refusals --------------------------------------------------
    def principal_arn(self, akid):
        """The ARN EC2 names in an UnauthorizedOperation: the instance role's
        session for IMDS credentials, an IAM user for static keys."""
        acct = self.cfg["account_id"]
        c = self.creds.get(akid) or {}
        if c.get("source") == "imds":
            return "arn:aws:sts::%s:assumed-role/%s/%s" % (
                acct, self.cfg["imds"].get("role_name"), self.cfg["instance_id"])
        return "arn:aws:iam::%s:user/ec2emu-user" % acct

    def unauthorized(self, action, akid, region=None):
        """UnauthorizedOperation as EC2 words it for a missing IAM permission
        (the encoded authorization failure message is random text here; at
        AWS, sts:DecodeAuthorizationMessage decodes it)."""
        return EC2Error(
            "UnauthorizedOperation",
            "You are not authorized to perform this operation. User: %s is not authorized to "
            "perform: ec2:%s on resource: arn:aws:ec2:%s:%s:* because no identity-based policy "
            "allows the ec2:%s action. Encoded authorization failure message: %s"
            % (self.principal_arn(akid), action, region or self.cfg["region"],
               self.cfg["account_id"], action,
               base64.urlsafe_b64encode(secrets.token_bytes(48)).decode().rstrip("=")))
