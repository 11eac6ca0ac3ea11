"""The emulated world: Emulator holds the state (snapshots, images, tags,
settings, fault rules, credentials), keeps it in STATE/state.json and the
request log, and dispatches the EC2 actions.  The actions, the credentials,
IMDS and the fault rules are its parts, each in a module of its own."""

import ipaddress
import json
import logging
import os
import threading
import time

from .actions_attributes import AttributeActions
from .actions_copies import CopyActions
from .actions_images import ImageActions
from .actions_instances import InstanceActions
from .actions_locks import LockActions
from .actions_run import RunActions
from .actions_snapshots import SnapshotActions
from .actions_tags import TagActions
from .actions_volumes import ATTACHED_STATES, VolumeActions
from .config import DEFAULT_SETTINGS, NUMERIC_SETTINGS, SET_COPY_MODES, LATENCY_MODES, \
    non_negative
from .credentials import CredentialStore
from .errors import ID_PATTERNS, EC2Error, not_found
from .faults import FaultRules
from .imds import ImdsService
from .query import SPECS, unflatten, validate
from .util import atomic_write, iso_ms, iso_s, parse_iso

log = logging.getLogger("ec2emu")


# The instance, its volumes and what runs on them live in the home region
# only: elsewhere these actions find nothing (describe) or not the resource
# they name.  (action -> (the parameter naming the resource, its kind); None:
# the emulator refuses the action outside the home region.)
HOME_ONLY = {
    "CreateSnapshots": ("InstanceSpecification.InstanceId", "i"),
    "CreateSnapshot": ("VolumeId", "vol"),
    "CreateImage": ("InstanceId", "i"),
    "AttachVolume": ("VolumeId", "vol"),
    "DetachVolume": ("VolumeId", "vol"),
    "DeleteVolume": ("VolumeId", "vol"),
    "TerminateInstances": ("InstanceId", "i"),
    "DescribeInstances": ("InstanceId", "i"),
    "DescribeVolumes": ("VolumeId", "vol"),
    "DescribeInstanceStatus": ("InstanceId", "i"),
    "CreateVolume": None,
    "RunInstances": None,
}
HOME_ONLY_EMPTY = {"DescribeInstances": "reservationSet", "DescribeVolumes": "volumeSet",
                   "DescribeInstanceStatus": "instanceStatusSet"}


class Emulator(FaultRules, CredentialStore, ImdsService, SnapshotActions, ImageActions,
               VolumeActions, InstanceActions, RunActions, TagActions, CopyActions, LockActions,
               AttributeActions):
    """One instance, its volumes, and what EC2 made of them."""

    def __init__(self, cfg, state_dir, settings, faults=()):
        self.cfg = cfg
        self.state_dir = state_dir
        self.snap_dir = os.path.join(state_dir, "snapshots")
        os.makedirs(self.snap_dir, exist_ok=True)
        self.lock = threading.RLock()
        self.tls = threading.local()  # the region of the request this thread serves
        self.client_tokens = {}       # CopyImage ClientToken -> (parameters, image id)
        self.log_lock = threading.Lock()
        self.start_time = time.time()
        self.default_settings = dict(settings)
        self.settings = dict(settings)
        self.imds_separate = False
        self.imds_listener = None
        self.rules = []
        self.rule_seq = 0
        self.vol_dir = os.path.join(state_dir, "volumes")
        self.snapshots = {}
        self.images = {}
        self.volumes = {}             # created volumes (the instance's own are cfg["volumes"])
        self.loop_devices = {}        # loop device -> {volume_id, file, link}: made by us
        self.instances = {}           # launched by RunInstances (not the configured one)
        self.impaired = set()         # image and instance ids whose status checks fail (control)
        self._attach_config_volumes()
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

    def _attach_config_volumes(self):
        c = self.cfg
        for v in c["volumes"].values():
            v["attachment"] = {"instance_id": c["instance_id"], "device": v["device_name"],
                               "attach_time": c["launch_time"], "state": "attached"}

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
        self.volumes = st.get("volumes", {})
        self.instances = st.get("instances", {})
        self.impaired = set(st.get("impaired", []))
        self.client_tokens = st.get("client_tokens", {})
        self.loop_devices = st.get("loop_devices", {})
        for vid, a in st.get("config_attachments", {}).items():
            if vid in self.cfg["volumes"]:
                self.cfg["volumes"][vid]["attachment"] = a

    def save(self):
        with self.lock:
            st = {"snapshots": self.snapshots, "images": self.images,
                  "instance_tags": self.instance_tags,
                  "volume_tags": {v: d["tags"] for v, d in self.cfg["volumes"].items()},
                  "volumes": self.volumes, "loop_devices": self.loop_devices,
                  "instances": self.instances, "impaired": sorted(self.impaired),
                  "client_tokens": self.client_tokens,
                  "config_attachments": {v: d["attachment"]
                                         for v, d in self.cfg["volumes"].items()}}
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

    # ---- time and place -----------------------------------------------------
    def now(self):
        return time.time()

    def clock(self):
        """The resources' clock: now plus the clock_offset_s setting.  Snapshot
        and image times, completion and lock expiry follow it; request
        signatures, credentials and the instances' delays do not."""
        return self.now() + float(self.settings.get("clock_offset_s") or 0)

    def region(self):
        """The region of the request being served: the one its signature is
        scoped to (the home region outside a request)."""
        return getattr(self.tls, "region", None) or self.cfg["region"]

    def in_region(self, res, region=None):
        return res.get("region", self.cfg["region"]) == (region or self.region())

    # ---- settings ------------------------------------------------------------
    def update_settings(self, updates):
        new = dict(self.settings)
        for k, v in updates.items():
            if k not in DEFAULT_SETTINGS:
                raise ValueError("unknown setting '%s'" % k)
            if k in NUMERIC_SETTINGS:
                v = non_negative(v, k)
                if k == "imds_credential_ttl" and v == 0:
                    v = None
            elif k == "launched_private_ip":
                if v is not None:
                    ipaddress.IPv4Address(v)    # ValueError if it is not an IPv4 address
            elif k == "denied_actions":
                v = check_action_list(v)
            elif k == "set_copy" and v not in SET_COPY_MODES:
                raise ValueError("set_copy: %s" % "|".join(SET_COPY_MODES))
            elif k == "latency_mode" and v not in LATENCY_MODES:
                raise ValueError("latency_mode: %s" % "|".join(LATENCY_MODES))
            elif k == "nonatomic_first":
                if not isinstance(v, list) or not all(
                        isinstance(x, str) and ID_PATTERNS["vol"].match(x) for x in v):
                    raise ValueError("nonatomic_first must be a list of volume ids")
            elif k in ("imds_v1_allowed", "register_pending_snapshots"):
                v = bool(v)
            elif k == "expired_credentials_code" and v not in ("RequestExpired", "ExpiredToken",
                                                                "AuthFailure"):
                raise ValueError("expired_credentials_code: RequestExpired|ExpiredToken|AuthFailure")
            new[k] = v
        with self.lock:
            self.settings = new

    def fail_snapshots(self, ids, message, check_only=False):
        """The fault switch: these pending snapshots end in `error` with
        this StateMessage when they would have completed.  check_only:
        ValueError if that cannot be done, and change nothing."""
        with self.lock:
            snaps = [self.snapshots.get(i) for i in ids]
            for i, s in zip(ids, snaps):
                if s is None:
                    raise ValueError("fail_snapshot: no snapshot %s" % i)
                if self.snap_state(s)[0] != "pending":
                    raise ValueError("fail_snapshot: %s is %s, not pending"
                                     % (i, self.snap_state(s)[0]))
            if check_only:
                return
            for s in snaps:
                s["fail"] = True
                s["state_message"] = message
            self.save()

    def set_times(self, times, check_only=False):
        """{id: ISO time}: a snapshot's StartTime or an image's CreationDate
        (the resources' clock is unchanged).  check_only: as fail_snapshots."""
        parsed = {}
        for rid, t in times.items():
            try:
                parsed[rid] = parse_iso(t)
            except (TypeError, ValueError):
                raise ValueError("set_times: %s: not an ISO 8601 time: %r" % (rid, t))
        with self.lock:
            for rid in parsed:
                if rid not in self.snapshots and rid not in self.images:
                    raise ValueError("set_times: no snapshot or image %s" % rid)
            if check_only:
                return
            for rid, ts in parsed.items():
                if rid in self.snapshots:
                    self.snapshots[rid]["start_time"] = ts
                else:
                    self.images[rid]["creation_time"] = ts
            self.save()

    def reset(self, everything=False):
        with self.lock:
            self.clear_rules()
            self.impaired.clear()
            self.settings = dict(self.default_settings)
            if everything:
                for s in list(self.snapshots.values()):
                    if s.get("file"):
                        try:
                            os.unlink(s["file"])
                        except OSError:
                            pass
                for v in list(self.volumes.values()):
                    if v.get("attachment"):
                        self._unplug(v, force=True)
                    if v.get("file"):
                        try:
                            os.unlink(v["file"])
                        except OSError:
                            pass
                self.volumes.clear()
                self.instances.clear()
                self.impaired.clear()
                self._attach_config_volumes()
                self.snapshots.clear()
                self.images.clear()
                self.client_tokens.clear()
                self.counts.clear()
                self.codes.clear()
                self.last_snapshot_at.clear()
                self.reboots = 0
                self.save()

    # ---- action dispatch ---------------------------------------------------
    def dispatch(self, action, params, rec):
        fn = getattr(self, "op_" + action, None)
        spec = SPECS.get(action)
        if fn is None or spec is None:
            raise EC2Error("InvalidAction",
                           "The action %s is not valid for this web service." % action)
        p = validate(unflatten(params), spec, [])
        self.tls.region = rec.get("region") or self.cfg["region"]
        try:
            if action in HOME_ONLY and self.region() != self.cfg["region"]:
                return self._elsewhere(action, p)
            self.advance_volumes()
            self.advance_instances()
            return fn(p, rec)
        finally:
            self.tls.region = None

    def _elsewhere(self, action, p):
        """An instance or volume action in a region other than the home one."""
        what = HOME_ONLY[action]
        if what is None:
            raise EC2Error("InvalidParameterValue",
                           "The emulator has instances and volumes in its home region %s "
                           "only, not in %s" % (self.cfg["region"], self.region()))
        path, kind = what
        node = p
        for part in path.split("."):
            node = (node or {}).get(part) if isinstance(node, dict) else None
        ids = node if isinstance(node, list) else [node] if node else []
        if ids:
            raise not_found(kind, ids[0])
        if action in HOME_ONLY_EMPTY:
            self._dry_run(p)
            return {HOME_ONLY_EMPTY[action]: []}
        raise EC2Error("MissingParameter", "The request must contain the parameter %s" % path)

    def _dry_run(self, p):
        if p.get("DryRun"):
            raise EC2Error("DryRunOperation")

    def _instance_volumes(self, iid=None):
        """The volumes attached to the instance (also while attaching or
        detaching): its configured ones and the created ones.  iid: another
        instance's (a launched one)."""
        iid = iid or self.cfg["instance_id"]
        return [v for v in self.all_volumes()
                if (v.get("attachment") or {}).get("state") in ATTACHED_STATES
                and v["attachment"]["instance_id"] == iid]

    # ---- state -------------------------------------------------------------
    def state_json(self):
        with self.lock:
            now = self.now()
            clock = self.clock()
            snaps = []
            for s in sorted(self.snapshots.values(), key=lambda s: (s["start_time"], s["id"])):
                st, prog = self.snap_state(s, clock)
                snaps.append({"id": s["id"], "volume_id": s["volume_id"], "file": s["file"],
                              "state": st, "progress": prog, "tags": s["tags"],
                              "region": s.get("region", self.cfg["region"]),
                              "encrypted": bool(s.get("encrypted")),
                              "kms_key_id": s.get("kms_key_id"),
                              "copied_from": s.get("copied_from"),
                              "state_message": s.get("state_message"),
                              "lock": self.lock_info(s, clock) if s.get("lock") else None,
                              "create_volume_permissions": s.get("cvp", []),
                              "description": s["description"],
                              "created": iso_ms(s["start_time"]), "created_epoch": s["start_time"],
                              "copy_ms": s["copy_ms"], "copy_method": s["copy_method"],
                              "copied_bytes": s["copied_bytes"], "source": s["source"]})
            imgs = []
            for i in sorted(self.images.values(), key=lambda i: (i["creation_time"], i["id"])):
                imgs.append({"id": i["id"], "name": i["name"], "state": i.get("state") or self.image_state(i),
                             "region": i.get("region", self.cfg["region"]),
                             "created": iso_ms(i["creation_time"]),
                             "copied_from": i.get("copied_from"),
                             "launch_permissions": i.get("launch_permissions", []),
                             "source": i.get("source"), "no_reboot": i.get("no_reboot"),
                             "architecture": i["architecture"],
                             "virtualization_type": i["virtualization_type"],
                             "root_device_name": i["root_device_name"],
                             "block_device_mappings": i["bdm"], "tags": i["tags"]})
            return {
                "snapshots": snaps, "images": imgs,
                "volumes": [dict(self.volume_item(v), file=v.get("file"),
                                 loop=(v.get("attachment") or {}).get("loop"),
                                 link=(v.get("attachment") or {}).get("link"))
                            for v in sorted(self.volumes.values(),
                                            key=lambda v: (v["create_time"], v["id"]))],
                "loop_devices": dict(self.loop_devices),
                "instances": [dict(self.launched_item(i, now),
                                   impairedReason=i.get("impaired_reason"),
                                   forcedImpaired=self.forced_impaired(i),
                                   instanceStatus=self.instance_checks(i, now)[0])
                              for i in self.visible_instances()],
                "impaired": sorted(self.impaired),
                "device_link_dir": self.cfg.get("device_link_dir"),
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
                "regions": list(self.cfg["regions"]), "clock": iso_ms(clock),
                "state_dir": self.state_dir,
            }


def check_action_list(v):
    """denied_actions: a list of EC2 action names."""
    if not isinstance(v, list) or not all(isinstance(a, str) and a.isalnum() for a in v):
        raise ValueError("denied_actions must be a list of EC2 action names")
    return list(v)
