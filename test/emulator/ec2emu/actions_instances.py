"""DescribeInstances and DescribeVolumes: the one configured instance and
its volumes."""

import hashlib

from .errors import check_id, not_found
from .query import apply_filters, paginate
from .render import tag_set
from .util import iso_ms


class InstanceActions:
    """The instance and volume actions of the Emulator (self.cfg)."""

    def instance_item(self):
        c = self.cfg
        bdm = []
        for v in sorted(self._instance_volumes(), key=lambda v: (not v["root"], v["device_name"])):
            a = v["attachment"]
            bdm.append({"deviceName": a["device"],
                        "ebs": {"volumeId": v["id"],
                                "status": "detaching" if a["state"] == "busy" else a["state"],
                                "attachTime": iso_ms(a["attach_time"]),
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
            "sriovNetSupport": c["sriov_net_support"], "tpmSupport": c["tpm_support"],
            "bootMode": c["boot_mode"],
            "currentInstanceBootMode": self.current_boot_mode(),
            "platformDetails": c["platform_details"],
            "usageOperation": c["usage_operation"],
            "metadataOptions": {"state": "applied", "httpTokens": "required",
                                "httpPutResponseHopLimit": 2, "httpEndpoint": "enabled"},
        }

    def current_boot_mode(self):
        """How the instance booted: its image's boot mode, uefi for
        uefi-preferred, and without one legacy-bios (x86) or uefi (arm64)."""
        mode = self.cfg["boot_mode"]
        if mode == "uefi-preferred":
            return "uefi"
        if mode is None:
            return "uefi" if self.cfg["architecture"].startswith("arm64") else "legacy-bios"
        return mode

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
            "block-device-mapping.volume-id": lambda i: [v["id"] for v in self._instance_volumes()],
            "block-device-mapping.device-name":
                lambda i: [v["device_name"] for v in self._instance_volumes()],
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

    def op_DescribeVolumes(self, p, rec):
        ids = p.get("VolumeId") or []
        with self.lock:
            for vid in ids:
                self.get_volume(vid)
            vols = [v for v in self.all_volumes() if not ids or v["id"] in ids]
        c = self.cfg
        att = lambda v, k: [v["attachment"][k]] if v.get("attachment") else []
        table = {
            "volume-id": lambda v: [v["id"]], "size": lambda v: [v["size_gib"]],
            "status": lambda v: [self.volume_status(v)],
            "volume-type": lambda v: [v["volume_type"]],
            "availability-zone": lambda v: [v.get("availability_zone") or c["availability_zone"]],
            "snapshot-id": lambda v: [v.get("snapshot_id", "")],
            "create-time": lambda v: [iso_ms(v.get("create_time", c["launch_time"]))],
            "attachment.instance-id": lambda v: att(v, "instance_id"),
            "attachment.device": lambda v: att(v, "device"),
            "attachment.status": lambda v: att(v, "state"),
            "attachment.attach-time": lambda v: [iso_ms(t) for t in att(v, "attach_time")],
            "attachment.delete-on-termination":
                lambda v: [v["delete_on_termination"]] if v.get("attachment") else [],
            "encrypted": lambda v: [v["encrypted"]],
            "multi-attach-enabled": lambda v: [False],
        }
        vols = apply_filters(vols, p.get("Filter"), table, lambda v: v["tags"])
        self._dry_run(p)
        vols.sort(key=lambda v: (v.get("create_time", 0), v["id"]))
        page, nxt = paginate(vols, p)
        return {"volumeSet": [self.volume_item(v) for v in page], "nextToken": nxt}
