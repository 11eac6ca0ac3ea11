"""The control API under /_emulator/ (loopback only): health, state, reset,
and control (settings, fault rules, credential rotation)."""

import json
import logging

from .config import DEFAULT_SETTINGS
from .errors import ID_PATTERNS, EC2Error
from .faults import RULE_KEYS, normalize_rule

log = logging.getLogger("ec2emu")


class ControlHandler:
    """The request handler's /_emulator/ paths."""

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
                                               "expire_imds_credentials", "impair", "unimpair",
                                               "fail_snapshot", "state_message", "set_times")
                     if k in item}
            for k in ("impair", "unimpair"):
                if k in flags:
                    flags[k] = impair_ids(flags[k], k)
            if "fail_snapshot" in flags:
                flags["fail_snapshot"] = snapshot_ids(flags["fail_snapshot"])
            elif "state_message" in flags:
                raise ValueError("state_message goes with fail_snapshot")
            if "set_times" in flags and not isinstance(flags["set_times"], dict):
                raise ValueError("set_times: an object {id: ISO 8601 time}")
            if item:
                raise ValueError("unknown control keys: %s" % sorted(item))
            for r in rules:
                normalize_rule(r, emu.imds_separate)
            if "fail_snapshot" in flags:
                emu.fail_snapshots(flags["fail_snapshot"], "", check_only=True)
            if "set_times" in flags:
                emu.set_times(flags["set_times"], check_only=True)
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
            if "impair" in flags or "unimpair" in flags:
                emu.set_impaired(flags.get("impair", []), flags.get("unimpair", []))
            if "fail_snapshot" in flags:
                emu.fail_snapshots(flags["fail_snapshot"],
                                   str(flags.get("state_message") or "Snapshot failed (emulated)"))
            if "set_times" in flags:
                emu.set_times(flags["set_times"])
            log.info("control: %s", json.dumps({"settings": settings, "rules": rules,
                                                 "flags": flags}, default=str))
        return {"ok": True, "added_fault_ids": added, "settings": emu.settings,
                "faults": emu.rules, "impaired": sorted(emu.impaired)}


def impair_ids(value, key):
    """impair / unimpair: an image or instance id, or a list of them."""
    ids = value if isinstance(value, list) else [value]
    for i in ids:
        if not isinstance(i, str) or not (ID_PATTERNS["ami"].match(i) or ID_PATTERNS["i"].match(i)):
            raise ValueError("%s: an image (ami-...) or instance (i-...) id, or a list of them, "
                             "not %r" % (key, i))
    return ids


def snapshot_ids(value):
    """fail_snapshot: a snapshot id or a list of them."""
    ids = value if isinstance(value, list) else [value]
    for i in ids:
        if not isinstance(i, str) or not ID_PATTERNS["snap"].match(i):
            raise ValueError("fail_snapshot: a snapshot id (snap-...) or a list of them, not %r"
                             % (i,))
    return ids
