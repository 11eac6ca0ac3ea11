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
