"""RunInstances, DescribeInstanceStatus, TerminateInstances: instances
launched from images, their volumes (a model: no files, no loop devices),
and their life: pending -> running -> (status checks initializing -> ok, or
impaired when the image is not bootable-shaped) ; shutting-down ->
terminated, then gone after terminated_instance_ttl_s.

The configured instance (cfg["instance_id"]) is not one of them: it is
always running with its checks ok, and TerminateInstances refuses it (an
emulator guard: a test must never terminate the instance it runs on)."""

import base64
import binascii
import hashlib
import json
import logging

from .config import VOLUME_TYPES, volume_performance
from .errors import EC2Error, check_id, not_found
from .query import apply_filters, paginate, tags_from_spec
from .render import tag_set
from .util import iso_ms, new_id

log = logging.getLogger("ec2emu")

STATE_CODES = {"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48,
               "stopping": 64, "stopped": 80}

# The instance types the emulator knows: architecture, the boot modes the
# type boots, whether it needs ENA (the Nitro types), its hypervisor.
INSTANCE_TYPES = {
    "m1.small": ("x86_64", ("legacy-bios",), False, "xen"),      # EC2's default type
    "t2.micro": ("x86_64", ("legacy-bios",), False, "xen"),
    "t2.small": ("x86_64", ("legacy-bios",), False, "xen"),
    "m4.large": ("x86_64", ("legacy-bios",), False, "xen"),
    "t3.micro": ("x86_64", ("legacy-bios", "uefi"), True, "nitro"),
    "t3.small": ("x86_64", ("legacy-bios", "uefi"), True, "nitro"),
    "m5.large": ("x86_64", ("legacy-bios", "uefi"), True, "nitro"),
    "m6i.large": ("x86_64", ("legacy-bios", "uefi"), True, "nitro"),
    "c6i.large": ("x86_64", ("legacy-bios", "uefi"), True, "nitro"),
    "r6i.large": ("x86_64", ("legacy-bios", "uefi"), True, "nitro"),
    "m7i.large": ("x86_64", ("legacy-bios", "uefi"), True, "nitro"),
    "t4g.micro": ("arm64", ("uefi",), True, "nitro"),
    "t4g.small": ("arm64", ("uefi",), True, "nitro"),
    "m6g.large": ("arm64", ("uefi",), True, "nitro"),
    "c7g.large": ("arm64", ("uefi",), True, "nitro"),
    "m7g.large": ("arm64", ("uefi",), True, "nitro"),
    "r7g.large": ("arm64", ("uefi",), True, "nitro"),
}
USER_DATA_MAX = 16 * 1024


def _state(name):
    return {"code": STATE_CODES[name], "name": name}


def boot_mode_of(image, itype):
    """The boot mode an instance of type itype boots the image with, or None
    when the type cannot boot it."""
    arch, modes, _, _ = INSTANCE_TYPES[itype]
    want = image.get("boot_mode")
    if want is None:                       # EC2's default for an image without one
        want = "uefi" if arch == "arm64" else "legacy-bios"
    if want == "uefi-preferred":
        return "uefi" if "uefi" in modes else "legacy-bios"
    return want if want in modes else None


class RunActions:
    """The launched instances of the Emulator (self.instances, under self.lock)."""

    # ---- the rule --------------------------------------------------------------
    def bootability(self, inst):
        """Why an instance's image is not bootable-shaped, or None when it is:
        the root device in the mapping on an EBS snapshot that still exists,
        hvm, a boot mode the type boots, ENA when the type needs it."""
        img = inst["image"]
        root = img["root_device_name"]
        m = [m for m in img["bdm"] if m["deviceName"] == root]
        if not m or not (m[0].get("ebs") or {}).get("snapshotId"):
            return "the root device %s is not mapped to an EBS snapshot" % root
        sid = m[0]["ebs"]["snapshotId"]
        if sid not in self.snapshots and sid != self._launch_root_snapshot():
            return "the root snapshot %s does not exist" % sid
        if img["virtualization_type"] != "hvm":
            return "virtualization type %s, not hvm" % img["virtualization_type"]
        if boot_mode_of(img, inst["instance_type"]) is None:
            return "boot mode %s is not supported by %s" % (img.get("boot_mode"),
                                                            inst["instance_type"])
        if INSTANCE_TYPES[inst["instance_type"]][2] and not img.get("ena_support"):
            return "%s needs ENA and the image has no ENA support" % inst["instance_type"]
        return None

    def _launch_root_snapshot(self):
        return self._launch_bdm()[0]["ebs"]["snapshotId"]

    def set_impaired(self, add, remove):
        """The control switch: these images' and instances' status checks fail."""
        with self.lock:
            self.impaired |= set(add)
            self.impaired -= set(remove)
            self.save()

    def forced_impaired(self, inst):
        return inst["id"] in self.impaired or inst["image_id"] in self.impaired

    # ---- states over time ------------------------------------------------------
    def instance_state(self, inst, now=None):
        now = self.now() if now is None else now
        if inst.get("terminated_at") is not None and now >= inst["terminated_at"]:
            return "terminated"
        if inst.get("shutting_down_at") is not None:
            return "shutting-down"
        return "running" if now >= inst["running_at"] else "pending"

    def instance_checks(self, inst, now=None):
        """(instance status, system status, reachability detail, impaired since)."""
        now = self.now() if now is None else now
        if self.instance_state(inst, now) != "running":
            return "not-applicable", "not-applicable", None, None
        if now < inst["status_at"]:
            return "initializing", "initializing", "initializing", None
        if self.forced_impaired(inst) or inst.get("impaired_reason"):
            return "impaired", "ok", "failed", inst["status_at"]
        return "ok", "ok", "passed", None

    def advance_instances(self):
        """Fix the status checks when their time comes (the root snapshot must
        exist then), finish terminations (volumes deleted or detached), and
        forget terminated instances after their TTL."""
        now = self.now()
        changed = False
        with self.lock:
            ttl = float(self.settings.get("terminated_instance_ttl_s") or 0)
            for iid, inst in list(self.instances.items()):
                st = self.instance_state(inst, now)
                if st == "running" and now >= inst["status_at"] and "impaired_reason" not in inst:
                    inst["impaired_reason"] = self.bootability(inst)
                    if inst["impaired_reason"]:
                        log.info("instance %s impaired: %s", iid, inst["impaired_reason"])
                    changed = True
                if st == "terminated" and not inst.get("volumes_released"):
                    self._release_instance_volumes(inst)
                    inst["volumes_released"] = True
                    changed = True
                if st == "terminated" and now >= inst["terminated_at"] + ttl:
                    del self.instances[iid]
                    changed = True
            if changed:
                self.save()

    def _release_instance_volumes(self, inst):
        for m in inst["bdm"]:
            v = self.volumes.get(m["volume_id"])
            if v is None or (v.get("attachment") or {}).get("instance_id") != inst["id"]:
                continue
            if v["delete_on_termination"]:
                del self.volumes[v["id"]]
            else:
                v["attachment"] = None
                v["device_name"] = None

    # ---- the XML ---------------------------------------------------------------
    def launched_item(self, inst, now=None):
        now = self.now() if now is None else now
        st = self.instance_state(inst, now)
        img = inst["image"]
        bdm = []
        if st != "terminated":
            for m in inst["bdm"]:
                v = self.volumes.get(m["volume_id"])
                if v is None or (v.get("attachment") or {}).get("instance_id") != inst["id"]:
                    continue
                a = v["attachment"]
                bdm.append({"deviceName": a["device"],
                            "ebs": {"volumeId": v["id"], "status": a["state"],
                                    "attachTime": iso_ms(a["attach_time"]),
                                    "deleteOnTermination": v["delete_on_termination"]}})
        d = {
            "instanceId": inst["id"], "imageId": inst["image_id"], "instanceState": _state(st),
            "privateDnsName": "" if st == "terminated" else inst["private_dns"],
            "dnsName": "", "reason": inst.get("reason", ""), "amiLaunchIndex": 0,
            "keyName": inst.get("key_name"), "productCodes": [],
            "instanceType": inst["instance_type"], "launchTime": iso_ms(inst["launch_time"]),
            "placement": {"availabilityZone": inst["availability_zone"], "groupName": "",
                          "tenancy": "default"},
            "monitoring": {"state": "disabled"},
            "subnetId": None if st == "terminated" else inst["subnet_id"],
            "privateIpAddress": None if st == "terminated" else inst["private_ip"],
            "groupSet": inst["security_groups"],
            "stateReason": ({"code": "Client.UserInitiatedShutdown",
                             "message": "Client.UserInitiatedShutdown: User initiated shutdown"}
                            if st in ("shutting-down", "terminated") else None),
            "architecture": INSTANCE_TYPES[inst["instance_type"]][0],
            "rootDeviceType": "ebs", "rootDeviceName": img["root_device_name"],
            "blockDeviceMapping": bdm, "virtualizationType": img["virtualization_type"],
            "clientToken": inst.get("client_token") or "", "tagSet": tag_set(inst["tags"]),
            "hypervisor": "xen",
            "ebsOptimized": bool(inst.get("ebs_optimized")),
            "enaSupport": img.get("ena_support"), "sriovNetSupport": img.get("sriov"),
            "bootMode": img.get("boot_mode"),
            "currentInstanceBootMode": boot_mode_of(img, inst["instance_type"])
            or img.get("boot_mode") or "legacy-bios",
            "tpmSupport": img.get("tpm"), "platformDetails": "Linux/UNIX",
            "usageOperation": "RunInstances",
            "metadataOptions": {"state": "applied",
                                "httpTokens": inst.get("http_tokens", "required"),
                                "httpPutResponseHopLimit": 2, "httpEndpoint": "enabled"},
        }
        return d

    def reservation_of(self, insts, now=None):
        first = insts[0]
        return {"reservationId": first["reservation_id"], "ownerId": self.cfg["account_id"],
                "groupSet": [],
                "instancesSet": [self.launched_item(i, now) for i in insts]}

    def visible_instances(self):
        """The launched instances DescribeInstances shows, oldest first."""
        return sorted(self.instances.values(), key=lambda i: (i["launch_time"], i["id"]))

    def check_instance_ids(self, ids):
        """Each id the configured instance's or a launched (still visible) one's."""
        for iid in ids:
            check_id("i", iid)
            if iid != self.cfg["instance_id"] and iid not in self.instances:
                raise not_found("i", iid)

    def get_instance(self, iid):
        """A launched instance; InvalidInstanceID.NotFound for an unknown one."""
        check_id("i", iid)
        inst = self.instances.get(iid)
        if inst is None:
            raise not_found("i", iid)
        return inst

    # ---- RunInstances ----------------------------------------------------------
    def _run_image(self, ami):
        if not ami:
            raise EC2Error("MissingParameter", "The request must contain the parameter ImageId")
        check_id("ami", ami)
        if ami in self.images and self.in_region(self.images[ami]):
            img = self.images[ami]
            state = img.get("state") or self.image_state(img)
            if state != "available":
                raise EC2Error("InvalidAMIID.Unavailable",
                               "The image id '[%s]' is not available: it is %s" % (ami, state))
            return img
        if ami == self.cfg["image_id"]:
            return self.launch_image()
        raise not_found("ami", ami)

    def _run_network(self, p):
        c = self.cfg
        subnet = p.get("SubnetId") or (c["subnets"][0] if c["subnets"] else None)
        if not subnet:
            raise EC2Error("MissingParameter", "The emulator has no default subnet: give SubnetId")
        check_id("subnet", subnet)
        if subnet not in c["subnets"]:
            raise not_found("subnet", subnet)
        default = {"groupId": (c["security_groups"] or ["sg-00000000000000000"])[0],
                   "groupName": "default"}
        groups = []
        for g in p.get("SecurityGroupId") or []:
            check_id("sg", g)
            if g not in c["security_groups"]:
                raise not_found("sg", g)
            groups.append({"groupId": g, "groupName": g})
        for name in p.get("SecurityGroup") or []:
            if name != "default":           # names: only the default VPC's default group
                raise EC2Error("InvalidGroup.NotFound",
                               "The security group '%s' does not exist in default VPC" % name)
            groups.append(default)
        if not groups:
            groups = [default]
        key = p.get("KeyName")
        if key is not None and key not in c["key_names"]:
            raise EC2Error("InvalidKeyPair.NotFound", "The key pair '%s' does not exist" % key)
        az = (p.get("Placement") or {}).get("AvailabilityZone")
        if az and az != c["availability_zone"]:
            raise EC2Error("InvalidParameterValue", "Invalid availability zone: [%s]" % az)
        return subnet, groups, key

    def _run_bdm(self, img, overrides):
        """The image's mapping with the request's overrides (VolumeSize,
        VolumeType, Iops, Throughput, DeleteOnTermination, NoDevice) and the
        request's new volumes: [{device, snapshot_id, size, type, iops,
        throughput, delete_on_termination, encrypted}]."""
        out = {}
        for m in img["bdm"]:
            if m.get("ebs"):
                out[m["deviceName"]] = dict(m["ebs"])
        root = img["root_device_name"]
        for e in overrides:
            dev = e.get("DeviceName")
            if not dev:
                raise EC2Error("InvalidBlockDeviceMapping", "DeviceName is required")
            if "NoDevice" in e:
                if dev == root:
                    raise EC2Error("InvalidBlockDeviceMapping",
                                   "The device '%s' is the root device and cannot be "
                                   "suppressed" % dev)
                out.pop(dev, None)
                continue
            if e.get("VirtualName"):
                continue                         # instance store: none on the types we know
            ebs = e.get("Ebs")
            if ebs is None:
                raise EC2Error("InvalidBlockDeviceMapping",
                               "%s: one of Ebs, NoDevice or VirtualName is required" % dev)
            base = dict(out.get(dev) or {})
            sid = ebs.get("SnapshotId")
            if sid and base.get("snapshotId") != sid:
                s = self.get_snapshot(sid)
                if self.snap_state(s)[0] != "completed":
                    raise EC2Error("IncorrectState", "Snapshot %s is in invalid state - %s"
                                   % (sid, self.snap_state(s)[0]))
                base = {"snapshotId": sid, "volumeSize": s["volume_size"]}
            floor = None
            if base.get("snapshotId"):
                s = self.snapshots.get(base["snapshotId"])
                floor = s["volume_size"] if s else base.get("volumeSize")
            elif "VolumeSize" not in ebs and not base:
                raise EC2Error("InvalidBlockDeviceMapping",
                               "%s: either a snapshot id or a volume size is required" % dev)
            size = ebs.get("VolumeSize", base.get("volumeSize"))
            if floor is not None and size < floor:
                raise EC2Error("InvalidBlockDeviceMapping",
                               "Volume of size %d is smaller than snapshot '%s', expect size "
                               ">= %d" % (size, base["snapshotId"], floor))
            base["volumeSize"] = size
            if "VolumeType" in ebs:
                base["volumeType"] = ebs["VolumeType"]
                base.pop("iops", None)
                base.pop("throughput", None)
            for k, key in (("Iops", "iops"), ("Throughput", "throughput"),
                           ("DeleteOnTermination", "deleteOnTermination"),
                           ("Encrypted", "encrypted")):
                if k in ebs:
                    base[key] = ebs[k]
            out[dev] = base
        vols = []
        for dev, ebs in out.items():
            vtype = ebs.get("volumeType", "gp2")
            if vtype not in VOLUME_TYPES:
                raise EC2Error("InvalidParameterValue",
                               "Value (%s) for parameter volumeType is invalid. Expected: "
                               "'%s'." % (vtype, ", ".join(VOLUME_TYPES)))
            lo, hi, _, _ = VOLUME_TYPES[vtype]
            size = ebs["volumeSize"]
            if not lo <= size <= hi:
                raise EC2Error("InvalidBlockDeviceMapping",
                               "%s: a %s volume must be between %d and %d GiB, not %d"
                               % (dev, vtype, lo, hi, size))
            try:
                iops, throughput = volume_performance(vtype, size, ebs.get("iops"),
                                                      ebs.get("throughput"))
            except ValueError as e:
                raise EC2Error("InvalidBlockDeviceMapping", "%s: %s" % (dev, e))
            vols.append({"device": dev, "snapshot_id": ebs.get("snapshotId", ""), "size": size,
                         "type": vtype, "iops": iops, "throughput": throughput,
                         "delete_on_termination": bool(ebs.get("deleteOnTermination", True)),
                         "encrypted": bool(ebs.get("encrypted", False)), "root": dev == root})
        return sorted(vols, key=lambda v: (not v["root"], v["device"]))

    @staticmethod
    def _request_hash(p):
        same = {k: v for k, v in p.items() if k not in ("ClientToken", "DryRun")}
        return hashlib.sha256(json.dumps(same, sort_keys=True).encode()).hexdigest()

    def op_RunInstances(self, p, rec):
        for k in ("MinCount", "MaxCount"):
            if k not in p:
                raise EC2Error("MissingParameter", "The request must contain the parameter %s"
                               % k)
        lo, hi = p["MinCount"], p["MaxCount"]
        if lo < 1 or hi < 1:
            raise EC2Error("InvalidParameterValue",
                           "Value (%d) for parameter %s is invalid. Expected a positive number."
                           % (min(lo, hi), "minCount" if lo < 1 else "maxCount"))
        if lo > hi:
            raise EC2Error("InvalidParameterValue",
                           "MinCount (%d) must not be greater than MaxCount (%d)" % (lo, hi))
        if lo > 1 or hi > 1:
            raise EC2Error("InvalidParameterValue",
                           "The emulator launches one instance a call: MinCount and MaxCount "
                           "must be 1, not %d and %d" % (lo, hi))
        token = p.get("ClientToken")
        if token is not None and (len(token) > 64 or not token.isascii()):
            raise EC2Error("InvalidParameterValue",
                           "The client token must be at most 64 ASCII characters")
        digest = self._request_hash(p)
        with self.lock:
            if token:
                for inst in self.instances.values():
                    if inst.get("client_token") == token:
                        if inst["request_hash"] != digest:
                            raise EC2Error("IdempotentParameterMismatch")
                        self._dry_run(p)
                        rec["instance_id"] = inst["id"]
                        rec["idempotent"] = True
                        return self.reservation_of([inst])
            img = self._run_image(p.get("ImageId"))
        itype = p.get("InstanceType", "m1.small")          # EC2's default
        if itype not in INSTANCE_TYPES:
            raise EC2Error("InvalidParameterValue",
                           "Invalid value '%s' for InstanceType." % itype)
        arch = INSTANCE_TYPES[itype][0]
        if arch != img["architecture"]:
            raise EC2Error("InvalidParameterValue",
                           "The architecture '%s' of the specified instance type does not match "
                           "the architecture '%s' of the specified AMI. Specify an instance "
                           "type and an AMI that have matching architectures, and try again. "
                           "You can use 'describe-instance-types' or 'describe-images' to "
                           "discover the architecture of the instance type or AMI."
                           % (arch, img["architecture"]))
        subnet, groups, key = self._run_network(p)
        tags = tags_from_spec(p.get("TagSpecification"), ("instance", "volume"))
        user_data = p.get("UserData")
        if user_data is not None:
            try:
                raw = base64.b64decode(user_data, validate=True)
            except (binascii.Error, ValueError):
                raise EC2Error("InvalidParameterValue", "Invalid BASE64 encoding of user data.")
            if len(raw) > USER_DATA_MAX:
                raise EC2Error("InvalidParameterValue",
                               "User data is limited to %d bytes." % USER_DATA_MAX)
        shutdown = p.get("InstanceInitiatedShutdownBehavior")
        if shutdown not in (None, "stop", "terminate"):
            raise EC2Error("InvalidParameterValue",
                           "Value (%s) for parameter instanceInitiatedShutdownBehavior is "
                           "invalid. Expected: 'stop', 'terminate'." % shutdown)
        with self.lock:
            vols = self._run_bdm(img, p.get("BlockDeviceMapping") or [])
            self._dry_run(p)
            now = self.now()
            iid = new_id("i")
            launch = float(self.settings.get("instance_launch_delay_s") or 0)
            status = float(self.settings.get("instance_status_delay_s") or 0)
            n = len(self.instances) + 11
            ip = self.settings.get("launched_private_ip") or \
                "10.0.%d.%d" % (n // 250, n % 250 + 2)
            inst = {
                "id": iid, "reservation_id": new_id("r"), "image_id": img["id"],
                "image": {k: img.get(k) for k in ("id", "architecture", "root_device_name",
                                                   "virtualization_type", "ena_support",
                                                   "boot_mode", "tpm", "sriov", "bdm")},
                "instance_type": itype, "subnet_id": subnet, "security_groups": groups,
                "key_name": key, "user_data": user_data, "tags": tags.get("instance", {}),
                "availability_zone": self.cfg["availability_zone"], "private_ip": ip,
                "private_dns": "ip-%s.ec2.internal" % ip.replace(".", "-"),
                "launch_time": now, "running_at": now + launch,
                "status_at": now + launch + status,
                "client_token": token, "request_hash": digest,
                "disable_api_termination": bool(p.get("DisableApiTermination")),
                "ebs_optimized": p.get("EbsOptimized"),
                "http_tokens": (p.get("MetadataOptions") or {}).get("HttpTokens", "required"),
                "bdm": []}
            for m in vols:
                vid = new_id("vol")
                self.volumes[vid] = {
                    "id": vid, "size_gib": m["size"], "snapshot_id": m["snapshot_id"],
                    "availability_zone": self.cfg["availability_zone"], "create_time": now,
                    "state": "available", "ready_at": now, "volume_type": m["type"],
                    "iops": m["iops"], "throughput": m["throughput"],
                    "encrypted": m["encrypted"], "tags": dict(tags.get("volume", {})),
                    "file": None, "backing_file": None, "device_name": m["device"],
                    "root": m["root"], "delete_on_termination": m["delete_on_termination"],
                    "attachment": {"instance_id": iid, "device": m["device"],
                                   "attach_time": now, "state": "attached"},
                    "created": True, "launched_by": iid}
                inst["bdm"].append({"device": m["device"], "volume_id": vid})
            self.instances[iid] = inst
            self.save()
            rec["instance_id"] = iid
            rec["volume_ids"] = [m["volume_id"] for m in inst["bdm"]]
            return self.reservation_of([inst], now)

    # ---- DescribeInstanceStatus ------------------------------------------------
    def _status_row(self, iid, state, checks, az):
        inst_st, sys_st, reach, since = checks

        def summary(status, detail):
            d = {"status": status}
            if detail:
                d["details"] = [dict({"name": "reachability", "status": detail},
                                     **({"impairedSince": iso_ms(since)}
                                        if detail == "failed" and since else {}))]
            return d
        return {"instanceId": iid, "availabilityZone": az, "instanceState": _state(state),
                "instanceStatus": summary(inst_st, reach),
                "systemStatus": summary(sys_st, "passed" if sys_st == "ok" else
                                        reach if sys_st == "initializing" else None)}

    def op_DescribeInstanceStatus(self, p, rec):
        ids = p.get("InstanceId") or []
        c = self.cfg
        now = self.now()
        with self.lock:
            self.check_instance_ids(ids)
            rows = [self._status_row(c["instance_id"], "running",
                                     ("ok", "ok", "passed", None), c["availability_zone"])]
            rows += [self._status_row(i["id"], self.instance_state(i, now),
                                      self.instance_checks(i, now), i["availability_zone"])
                     for i in self.visible_instances()]
        if ids:
            rows = [r for r in rows if r["instanceId"] in ids]
        if not p.get("IncludeAllInstances"):
            rows = [r for r in rows if r["instanceState"]["name"] == "running"]
        detail = lambda r, k: [d["status"] for d in r[k].get("details") or []]
        table = {
            "instance-state-name": lambda r: [r["instanceState"]["name"]],
            "instance-state-code": lambda r: [r["instanceState"]["code"]],
            "availability-zone": lambda r: [r["availabilityZone"]],
            "instance-status.status": lambda r: [r["instanceStatus"]["status"]],
            "instance-status.reachability": lambda r: detail(r, "instanceStatus"),
            "system-status.status": lambda r: [r["systemStatus"]["status"]],
            "system-status.reachability": lambda r: detail(r, "systemStatus"),
        }
        rows = apply_filters(rows, p.get("Filter"), table, lambda r: {})
        self._dry_run(p)
        page, nxt = paginate(rows, p)
        return {"instanceStatusSet": page, "nextToken": nxt}

    # ---- TerminateInstances ----------------------------------------------------
    def op_TerminateInstances(self, p, rec):
        ids = p.get("InstanceId") or []
        if not ids:
            raise EC2Error("MissingParameter",
                           "The request must contain the parameter InstanceId")
        now = self.now()
        with self.lock:
            insts = []
            for iid in ids:
                check_id("i", iid)
                if iid == self.cfg["instance_id"]:
                    raise EC2Error("OperationNotPermitted",
                                   "The emulator does not terminate its configured instance "
                                   "%s (the instance the tests run on)" % iid)
                insts.append(self.get_instance(iid))
            for inst in insts:
                if inst.get("disable_api_termination"):
                    raise EC2Error("OperationNotPermitted",
                                   "The instance '%s' may not be terminated. Modify its "
                                   "'disableApiTermination' instance attribute and try again."
                                   % inst["id"])
            self._dry_run(p)
            out = []
            for inst in insts:
                before = self.instance_state(inst, now)
                if inst.get("shutting_down_at") is None:
                    inst["shutting_down_at"] = now
                    inst["terminated_at"] = now + float(
                        self.settings.get("instance_terminate_delay_s") or 0)
                    inst["reason"] = "User initiated (%s)" % iso_ms(now)[:19].replace("T", " ")
                out.append({"instanceId": inst["id"],
                            "currentState": _state(self.instance_state(inst, now)),
                            "previousState": _state(before)})
            self.save()
        rec["instance_ids"] = ids
        return {"instancesSet": out}
