"""The config file (--config) and the settings the control API changes."""

import json
import os
import re

from .errors import ID_PATTERNS
from .util import parse_iso


DEFAULT_CONFIG = {
    "instance_id": "i-0123456789abcdef0",
    "region": "us-east-1",
    "regions": None,                        # the regions that exist; default: [region]
    "availability_zone": None,              # default: region + "a"
    "availability_zone_id": None,
    "account_id": "123456789012",
    "architecture": "x86_64",
    "image_id": "ami-0123456789abcdef0",
    "instance_type": "m6i.large",
    "root_device_name": None,               # default: device of the root volume or /dev/xvda
    "virtualization_type": "hvm",
    "ena_support": True,
    "boot_mode": "uefi",
    "hypervisor": "xen",
    "platform_details": "Linux/UNIX",
    "usage_operation": "RunInstances",
    "launch_time": None,                    # ISO 8601; default: emulator start
    "private_ip": "10.0.0.10",
    "mac": "0e:00:00:00:00:01",
    "product_codes": [],                    # [{"id": "...", "type": "marketplace"}]
    "billing_products": [],
    "tags": {},                             # instance tags
    "imds": {},
    "credentials": {},
    "volumes": {},
    "complete_after": None,                 # overrides --complete-after when set
    "device_link_dir": None,                # attached volumes become loop devices linked here
    # The mount point of the filesystem holding the volumes' backing files,
    # made for them alone: the emulator freezes it (FIFREEZE) to copy a set of
    # volumes at one instant (setting set_copy).  null: never frozen.
    "store_mount": None,
    "volume_create_delay_s": None,          # overrides the setting of the same name
    "volume_attach_delay_s": None,
    "volume_detach_delay_s": None,
    "sriov_net_support": "simple",          # instance and launch image; null: not reported
    "tpm_support": None,                    # launch image TpmSupport ("v2.0") or null
    "imds_support": None,                   # launch image ImdsSupport ("v2.0") or null
    # RunInstances: what it accepts, and the start values of its settings
    "subnets": ["subnet-0123456789abcdef0"],
    "security_groups": ["sg-0123456789abcdef0"],   # ids; the name "default" is always known
    "key_names": ["ami-snapshot-test"],
    "instance_launch_delay_s": None,        # overrides the setting of the same name
    "instance_status_delay_s": None,
    "instance_terminate_delay_s": None,
    "terminated_instance_ttl_s": None,
}
INSTANCE_SETTINGS = ("instance_launch_delay_s", "instance_status_delay_s",
                     "instance_terminate_delay_s", "terminated_instance_ttl_s")
IMDS_DEFAULTS = {
    "role_name": "ami-snapshot-test-role",  # null: no instance profile
    "access_key_id": None,                  # generated when null
    "secret_access_key": None,
    "token": None,
    "expiration": None,                     # ISO 8601; null: issue time + ttl (or 6 h)
    "credential_ttl": None,                 # seconds; enables rotation (= --imds-credential-ttl)
    "token_length": 900,                    # length of generated session tokens
    "v1_allowed": False,                    # allow GET without an IMDSv2 token
}
VOLUME_KEYS = {"device_name", "backing_file", "size_gib", "root", "volume_type", "iops",
               "throughput", "delete_on_termination", "tags", "encrypted"}


class ConfigError(Exception):
    pass


def load_config(path, start_time):
    raw = {}
    if path:
        with open(path) as f:
            raw = json.load(f)
        if not isinstance(raw, dict):
            raise ConfigError("config must be a JSON object")
    unknown = set(raw) - set(DEFAULT_CONFIG)
    if unknown:
        raise ConfigError("unknown config keys: %s" % ", ".join(sorted(unknown)))
    cfg = dict(DEFAULT_CONFIG)
    cfg.update(raw)
    def check_id_cfg(kind, v, what):
        if not ID_PATTERNS[kind].match(v or ""):
            raise ConfigError("%s: malformed id %r" % (what, v))
    check_id_cfg("i", cfg["instance_id"], "instance_id")
    check_id_cfg("ami", cfg["image_id"], "image_id")
    if not re.match(r"^\d{12}$", str(cfg["account_id"])):
        raise ConfigError("account_id must be 12 digits")
    cfg["account_id"] = str(cfg["account_id"])
    regions = cfg["regions"] if cfg["regions"] is not None else [cfg["region"]]
    if (not isinstance(regions, list) or not all(
            isinstance(r, str) and re.match(r"^[a-z]{2}(-[a-z]+)+-\d+$", r) for r in regions)):
        raise ConfigError("regions must be a list of region names such as eu-west-1")
    if cfg["region"] not in regions:
        raise ConfigError("regions must contain the home region %s" % cfg["region"])
    cfg["regions"] = list(dict.fromkeys(regions))
    if not cfg["availability_zone"]:
        cfg["availability_zone"] = cfg["region"] + "a"
    if not cfg["availability_zone_id"]:
        cfg["availability_zone_id"] = "use1-az1"
    for k in ("sriov_net_support", "tpm_support", "imds_support"):
        allowed = {"sriov_net_support": "simple"}.get(k, "v2.0")
        if cfg[k] not in (None, allowed):
            raise ConfigError("%s must be %r or null" % (k, allowed))
    if cfg["boot_mode"] not in (None, "legacy-bios", "uefi", "uefi-preferred"):
        raise ConfigError("boot_mode must be legacy-bios, uefi, uefi-preferred or null")
    for k in ("complete_after", "volume_create_delay_s", "volume_attach_delay_s",
              "volume_detach_delay_s") + INSTANCE_SETTINGS:
        try:
            cfg[k] = non_negative(cfg[k], k)
        except ValueError as e:
            raise ConfigError(str(e))
    if cfg["device_link_dir"] is not None and not os.path.isabs(str(cfg["device_link_dir"])):
        raise ConfigError("device_link_dir must be an absolute path")
    if cfg["store_mount"] is not None:
        sm = str(cfg["store_mount"])
        if not os.path.isabs(sm) or not os.path.ismount(sm) or os.path.realpath(sm) == "/":
            raise ConfigError("store_mount must be the mount point of a filesystem of its own")
    for k, kind, what in (("subnets", "subnet", "subnet id"),
                          ("security_groups", "sg", "security group id")):
        if not isinstance(cfg[k], list) or not all(
                isinstance(x, str) and ID_PATTERNS[kind].match(x) for x in cfg[k]):
            raise ConfigError("%s must be a list of well-formed %ss" % (k, what))
    if not isinstance(cfg["key_names"], list) or not all(
            isinstance(x, str) and 0 < len(x) <= 255 for x in cfg["key_names"]):
        raise ConfigError("key_names must be a list of key pair names")
    cfg["launch_time"] = parse_iso(cfg["launch_time"]) if cfg["launch_time"] else start_time

    imds = dict(IMDS_DEFAULTS)
    unknown = set(cfg["imds"] or {}) - set(IMDS_DEFAULTS)
    if unknown:
        raise ConfigError("unknown imds keys: %s" % ", ".join(sorted(unknown)))
    imds.update(cfg["imds"] or {})
    cfg["imds"] = imds

    creds = {}
    for akid, v in (cfg["credentials"] or {}).items():
        if isinstance(v, str):
            v = {"secret_access_key": v}
        if not isinstance(v, dict) or not v.get("secret_access_key"):
            raise ConfigError("credentials[%s]: need a secret" % akid)
        bad = set(v) - {"secret_access_key", "session_token", "expiration"}
        if bad:
            raise ConfigError("credentials[%s]: unknown keys %s" % (akid, sorted(bad)))
        creds[akid] = {"secret": v["secret_access_key"], "token": v.get("session_token"),
                       "expiration": parse_iso(v["expiration"]) if v.get("expiration") else None,
                       "source": "static"}
    cfg["credentials"] = creds

    vols = {}
    devices = set()
    for vid, v in (cfg["volumes"] or {}).items():
        check_id_cfg("vol", vid, "volume")
        bad = set(v) - VOLUME_KEYS
        if bad:
            raise ConfigError("volume %s: unknown keys %s" % (vid, sorted(bad)))
        if not v.get("device_name"):
            raise ConfigError("volume %s: device_name is required" % vid)
        if v["device_name"] in devices:
            raise ConfigError("volume %s: duplicate device_name %s" % (vid, v["device_name"]))
        devices.add(v["device_name"])
        bf = v.get("backing_file")
        size = v.get("size_gib")
        if size is None:
            size = 1
            if bf and os.path.exists(bf):
                size = max(1, -(-os.stat(bf).st_size // (1 << 30)))
        root = bool(v.get("root", False))
        vtype = v.get("volume_type", "gp3")
        try:
            iops, throughput = volume_performance(vtype, int(size), v.get("iops"),
                                                  v.get("throughput"))
        except ValueError as e:
            raise ConfigError("volume %s: %s" % (vid, e))
        vols[vid] = {
            "id": vid, "device_name": v["device_name"], "backing_file": bf,
            "size_gib": int(size), "root": root,
            "volume_type": vtype, "iops": iops, "throughput": throughput,
            "delete_on_termination": bool(v.get("delete_on_termination", root)),
            "encrypted": bool(v.get("encrypted", False)),
            "tags": dict(v.get("tags") or {}),
            "config": True, "snapshot_id": "",
        }
    roots = [v for v in vols.values() if v["root"]]
    if len(roots) > 1:
        raise ConfigError("more than one root volume")
    if cfg["store_mount"] is not None:
        for vid, v in vols.items():
            bf = v["backing_file"]
            if bf and os.stat(bf).st_dev != os.stat(cfg["store_mount"]).st_dev:
                raise ConfigError("volume %s: backing_file %s is not on store_mount %s"
                                  % (vid, bf, cfg["store_mount"]))
    if not cfg["root_device_name"]:
        cfg["root_device_name"] = roots[0]["device_name"] if roots else "/dev/xvda"
    elif roots and roots[0]["device_name"] != cfg["root_device_name"]:
        raise ConfigError("root volume device %s != root_device_name %s"
                          % (roots[0]["device_name"], cfg["root_device_name"]))
    cfg["volumes"] = vols
    return cfg


# EBS volume types: (min GiB, max GiB, iops (min, max, default) or None when the
# type takes no Iops, whether it takes Throughput).
VOLUME_TYPES = {
    "gp2": (1, 16384, None, False),
    "gp3": (1, 16384, (3000, 16000, 3000), True),
    "io1": (4, 16384, (100, 64000, None), False),
    "io2": (4, 65536, (100, 256000, None), False),
    "st1": (125, 16384, None, False),
    "sc1": (125, 16384, None, False),
    "standard": (1, 1024, None, False),
}


def volume_performance(vtype, size, iops=None, throughput=None):
    """(iops, throughput) as EC2 reports them for a volume; ValueError with
    the reason when the combination is one EC2 refuses."""
    if vtype not in VOLUME_TYPES:
        raise ValueError("unknown volume type %r (%s)" % (vtype, ", ".join(VOLUME_TYPES)))
    _, _, iops_rule, takes_throughput = VOLUME_TYPES[vtype]
    if iops is not None and iops_rule is None:
        raise ValueError("the parameter iops is not supported for %s volumes" % vtype)
    if throughput is not None and not takes_throughput:
        raise ValueError("the parameter throughput is not supported for %s volumes" % vtype)
    if iops_rule is not None:
        lo, hi, default = iops_rule
        if iops is None:
            iops = default
        if iops is None:
            raise ValueError("the parameter iops is required for %s volumes" % vtype)
        if not lo <= iops <= hi:
            raise ValueError("iops must be between %d and %d for %s volumes" % (lo, hi, vtype))
    elif vtype == "gp2":
        iops = max(100, min(16000, 3 * size))      # the gp2 baseline EC2 reports
    if takes_throughput:
        throughput = 125 if throughput is None else throughput
        if not 125 <= throughput <= 1000:
            raise ValueError("throughput must be between 125 and 1000 MiB/s")
    return iops, throughput


DEFAULT_SETTINGS = {
    # EC2's round trip L.  "floor" (the default): the answer leaves no
    # earlier than latency_ms after the request was read, the emulator's own
    # work (SigV4, the action, a volume's copy) counted within it, as EC2's
    # service time is within the round trip a client measures; "added": the
    # whole latency_ms is slept after the action, the emulator's work on top.
    "latency_ms": 0,
    "latency_mode": "floor",
    "latency_before_ms": 0,           # sleep before the action (before the point in time)
    "complete_after": 2.0,            # seconds a new snapshot stays pending
    "clock_skew_s": 0,                # emulator clock offset for the x-amz-date check
    "max_clock_skew_s": 900,          # AWS: 15 minutes
    "per_volume_min_interval_s": 0,   # >0: SnapshotCreationPerVolumeRateExceeded if faster
    "max_pending_per_volume": 0,      # >0: ConcurrentSnapshotLimitExceeded beyond this
    "create_image_snapshot_delay_ms": 200,  # CreateImage copies volumes this long after the call
    "imds_credential_ttl": None,      # seconds; rotate IMDS role credentials
    "expired_credentials_code": "RequestExpired",  # or ExpiredToken
    "imds_v1_allowed": False,
    "register_pending_snapshots": True,  # RegisterImage takes pending snapshots (else IncorrectState)
    "volume_create_delay_s": 0.5,     # CreateVolume: creating -> available
    "volume_attach_delay_s": 0.5,     # AttachVolume: attaching -> attached
    "volume_detach_delay_s": 0.5,     # DetachVolume: detaching -> detached (available)
    "instance_launch_delay_s": 1.0,   # RunInstances: pending -> running
    "instance_status_delay_s": 2.0,   # running: status checks initializing -> ok (or impaired)
    "instance_terminate_delay_s": 1.0,  # TerminateInstances: shutting-down -> terminated
    "terminated_instance_ttl_s": 3600.0,  # a terminated instance stays visible this long
    # RunInstances: the private IP of instances launched from now on (None:
    # 10.0.x.y); tests set 127.0.0.1 to have an AMI drill's TCP check reach a
    # port they open.
    "launched_private_ip": None,
    "clock_offset_s": 0,              # the resources' clock runs this far ahead of real time
    "copy_complete_after": None,      # seconds a copied snapshot stays pending (None: complete_after)
    "denied_actions": [],             # EC2 actions refused with UnauthorizedOperation (IAM-style)
    # How a set of volumes is copied (ActionsSnapshots.copy_set): "instant"
    # (the store frozen: one instant, as EBS), "sequential" (one after
    # another), "nonatomic" (the negative control: the volumes nonatomic_first
    # lists, a pause of nonatomic_pause_ms, then the others).
    "set_copy": "instant",
    "nonatomic_first": [],
    "nonatomic_pause_ms": 1000,
}
NUMERIC_SETTINGS = {"latency_ms", "latency_before_ms", "complete_after", "clock_skew_s",
                 "max_clock_skew_s", "per_volume_min_interval_s", "max_pending_per_volume",
                 "create_image_snapshot_delay_ms", "imds_credential_ttl",
                 "volume_create_delay_s", "volume_attach_delay_s", "volume_detach_delay_s",
                 "instance_launch_delay_s", "instance_status_delay_s",
                 "instance_terminate_delay_s", "terminated_instance_ttl_s", "clock_offset_s",
                 "copy_complete_after", "nonatomic_pause_ms"}
SET_COPY_MODES = ("instant", "sequential", "nonatomic")
LATENCY_MODES = ("floor", "added")


def non_negative(v, name):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        try:
            v = float(v)
        except (TypeError, ValueError):
            raise ValueError("%s must be a number" % name)
    if v < 0:
        raise ValueError("%s must be >= 0" % name)
    return v
