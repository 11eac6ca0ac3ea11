"""DescribeInstances and DescribeVolumes: the configured instance, the
launched ones (actions_run), and the volumes."""

import hashlib

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
        """The configured instance and the launched ones (terminated ones
        until terminated_instance_ttl_s), a reservation each."""
        ids = p.get("InstanceId") or []
        c = self.cfg
        now = self.now()
        with self.lock:
            self.check_instance_ids(ids)
            own = "r-" + hashlib.sha256(c["instance_id"].encode()).hexdigest()[:17]
            rows = [(own, self.instance_item())]
            rows += [(i["reservation_id"], self.launched_item(i, now))
                     for i in self.visible_instances()]
        if ids:
            rows = [r for r in rows if r[1]["instanceId"] in ids]
        bdm = lambda r, k: [(m["ebs"] if k == "volumeId" else m)[k]
                            for m in r[1]["blockDeviceMapping"]]
        table = {
            "instance-id": lambda r: [r[1]["instanceId"]],
            "instance-state-name": lambda r: [r[1]["instanceState"]["name"]],
            "instance-state-code": lambda r: [r[1]["instanceState"]["code"]],
            "instance-type": lambda r: [r[1]["instanceType"]],
            "image-id": lambda r: [r[1]["imageId"]],
            "availability-zone": lambda r: [r[1]["placement"]["availabilityZone"]],
            "architecture": lambda r: [r[1]["architecture"]],
            "block-device-mapping.volume-id": lambda r: bdm(r, "volumeId"),
            "block-device-mapping.device-name": lambda r: bdm(r, "deviceName"),
            "private-ip-address": lambda r: [r[1]["privateIpAddress"]]
            if r[1].get("privateIpAddress") else [],
            "subnet-id": lambda r: [r[1]["subnetId"]] if r[1].get("subnetId") else [],
            "key-name": lambda r: [r[1]["keyName"]] if r[1].get("keyName") else [],
            "client-token": lambda r: [r[1]["clientToken"]],
            "reservation-id": lambda r: [r[0]],
        }
        rows = apply_filters(rows, p.get("Filter"), table,
                             lambda r: {t["key"]: t["value"] for t in r[1]["tagSet"]})
        self._dry_run(p)
        res = []
        for rid, item in rows:
            if res and res[-1]["reservationId"] == rid:
                res[-1]["instancesSet"].append(item)
            else:
                res.append({"reservationId": rid, "ownerId": c["account_id"], "groupSet": [],
                            "instancesSet": [item]})
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
