"""Fault rules: what a rule may say (normalize_rule), and which rule fires
for a request (FaultRules, part of the Emulator)."""

from .config import non_negative


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
             "status", "message", "phase", "imds", "mode", "path", "persistent", "dry_run"}


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
        if r.get("dry_run") not in (None, True, False):
            raise ValueError("dry_run must be true (DryRuns only) or false (real calls only)")
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


class FaultRules:
    """The Emulator's fault rules (self.rules, under self.lock)."""

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

    def take_ec2_fault(self, action, dry_run=False):
        """The rule for a request of action; one with "dry_run" matches only
        DryRuns (true) or only real calls (false), whatever came before."""
        return self.take_rule("ec2", lambda r: r["action"] in ("*", action)
                              and r.get("dry_run") in (None, dry_run))

    def take_imds_fault(self, path):
        return self.take_rule("imds", lambda r: path.startswith("/latest/" + r["path"].lstrip("/"))
                              if r["path"] else True)
