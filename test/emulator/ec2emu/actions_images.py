"""RegisterImage, CreateImage (its snapshots taken a little after the call),
DescribeImages and DeregisterImage."""

import hashlib
import logging
import re
import threading
import time

from .config import VOLUME_TYPES, volume_performance
from .errors import EC2Error, check_id, not_found
from .query import apply_filters, paginate, tags_from_spec
from .render import tag_set
from .util import iso_ms, new_id

AMAZON_OWNER = "137112412989"
ARCHITECTURES = ("i386", "x86_64", "arm64", "x86_64_mac", "arm64_mac")
BOOT_MODES = ("legacy-bios", "uefi", "uefi-preferred")

log = logging.getLogger("ec2emu")


class ImageActions:
    """The image actions of the Emulator (self.images, under self.lock)."""

    def image_state(self, img):
        if img.get("pending_snapshots"):
            return "pending"
        states = []
        for m in img["bdm"]:
            sid = (m.get("ebs") or {}).get("snapshotId")
            if sid:
                s = self.snapshots.get(sid)
                states.append(self.snap_state(s)[0] if s else "error")
        if "error" in states:
            return "failed"
        if "pending" in states:
            return "pending"
        return "available"

    def launch_image(self):
        c = self.cfg
        return {"id": c["image_id"], "name": "emulated-launch-image", "description": "",
                "owner": AMAZON_OWNER, "alias": "amazon", "architecture": c["architecture"],
                "root_device_name": c["root_device_name"],
                "virtualization_type": c["virtualization_type"],
                "ena_support": c["ena_support"], "boot_mode": c["boot_mode"],
                "creation_time": c["launch_time"], "tags": {},
                "product_codes": c["product_codes"], "bdm": self._launch_bdm(), "public": True,
                "sriov": c["sriov_net_support"], "tpm": c["tpm_support"],
                "imds_support": c["imds_support"], "state": "available"}

    def _launch_bdm(self):
        """The launch image's mapping: its root snapshot (Amazon's, not
        ours: an id derived from the image id) as big and of the type of the
        configured root volume."""
        c = self.cfg
        roots = [v for v in c["volumes"].values() if v["root"]]
        root = roots[0] if roots else {"size_gib": 8, "volume_type": "gp3", "iops": 3000,
                                       "throughput": 125, "encrypted": False}
        sid = "snap-" + hashlib.sha256(c["image_id"].encode()).hexdigest()[:17]
        ebs = {"snapshotId": sid, "volumeSize": root["size_gib"],
               "deleteOnTermination": True, "volumeType": root["volume_type"],
               "encrypted": root["encrypted"]}
        ebs.update(self._bdm_performance(root["volume_type"], root["iops"], root["throughput"]))
        return [{"deviceName": c["root_device_name"], "ebs": ebs}]

    @staticmethod
    def _bdm_performance(vtype, iops, throughput):
        """Iops and Throughput as an image's mapping shows them: only for the
        types that take them."""
        _, _, iops_rule, takes_throughput = VOLUME_TYPES[vtype]
        out = {}
        if iops_rule is not None and iops is not None:
            out["iops"] = iops
        if takes_throughput and throughput is not None:
            out["throughput"] = throughput
        return out

    def region_images(self):
        """The images of the request's region (not the launch image)."""
        return [i for i in self.images.values() if self.in_region(i)]

    def get_image(self, iid):
        """An image of ours in the request's region."""
        check_id("ami", iid)
        img = self.images.get(iid)
        if img is None or not self.in_region(img):
            raise not_found("ami", iid)
        return img

    def image_item(self, img):
        state = img.get("state") or self.image_state(img)
        d = {"imageId": img["id"],
             "imageLocation": "%s/%s" % (img["owner"], img["name"]),
             "imageState": state, "imageOwnerId": img["owner"],
             "creationDate": iso_ms(img["creation_time"]), "isPublic": img.get("public", False),
             "productCodes": [{"productCode": p.get("id"), "type": p.get("type", "marketplace")}
                              for p in img.get("product_codes", [])],
             "architecture": img["architecture"], "imageType": "machine",
             "sriovNetSupport": img.get("sriov"),
             "imageOwnerAlias": img.get("alias"),
             "name": img["name"], "description": img.get("description") or None,
             "rootDeviceType": "ebs", "rootDeviceName": img["root_device_name"],
             "blockDeviceMapping": img["bdm"],
             "virtualizationType": img["virtualization_type"],
             "tagSet": tag_set(img["tags"]), "hypervisor": "xen",
             "enaSupport": img.get("ena_support"),
             "platformDetails": "Linux/UNIX", "usageOperation": "RunInstances",
             "bootMode": img.get("boot_mode"), "tpmSupport": img.get("tpm"),
             "imdsSupport": img.get("imds_support")}
        if state == "failed":
            d["stateReason"] = {"code": "Client.SnapshotError",
                                "message": "A snapshot of the image failed"}
        return d

    def check_image_name(self, name):
        if name is None:
            raise EC2Error("MissingParameter", "The request must contain the parameter name")
        if not 3 <= len(name) <= 128 or not re.match(r"^[A-Za-z0-9()\[\] ./\-'@_]+$", name):
            raise EC2Error("InvalidAMIName.Malformed",
                           "AMI names must be between 3 and 128 characters long, and may "
                           "contain letters, numbers, '(', ')', '.', '-', '/' and '_'")
        for img in self.region_images():
            if img["name"] == name:
                raise EC2Error("InvalidAMIName.Duplicate",
                               "AMI name %s is already in use by AMI %s" % (name, img["id"]))

    def _bdm_from_request(self, entries):
        out = []
        for e in entries:
            dev = e.get("DeviceName")
            if not dev:
                raise EC2Error("InvalidBlockDeviceMapping", "DeviceName is required")
            item = {"deviceName": dev}
            if "NoDevice" in e:
                item["noDevice"] = ""
            elif e.get("VirtualName"):
                item["virtualName"] = e["VirtualName"]
            elif "Ebs" in e:
                ebs = e["Ebs"]
                sid = ebs.get("SnapshotId")
                eb = {}
                if sid:
                    s = self.get_snapshot(sid)
                    state = self.snap_state(s)[0]
                    if state == "error" or (state == "pending" and not
                                            self.settings.get("register_pending_snapshots")):
                        raise EC2Error("IncorrectState",
                                       "Snapshot %s is in invalid state - %s" % (sid, state))
                    size = ebs.get("VolumeSize", s["volume_size"])
                    if size < s["volume_size"]:
                        raise EC2Error("InvalidBlockDeviceMapping",
                                       "Volume of size %d is smaller than snapshot '%s', "
                                       "expect size >= %d" % (size, sid, s["volume_size"]))
                    eb["snapshotId"] = sid
                else:
                    if "VolumeSize" not in ebs:
                        raise EC2Error("InvalidBlockDeviceMapping",
                                       "%s: either a snapshot id or a volume size is required"
                                       % dev)
                    size = ebs["VolumeSize"]
                vtype = ebs.get("VolumeType", "gp2")
                if vtype not in VOLUME_TYPES:
                    raise EC2Error("InvalidParameterValue",
                                   "Value (%s) for parameter volumeType is invalid. Expected: "
                                   "'%s'." % (vtype, ", ".join(VOLUME_TYPES)))
                try:
                    iops, throughput = volume_performance(vtype, size, ebs.get("Iops"),
                                                          ebs.get("Throughput"))
                except ValueError as e:
                    raise EC2Error("InvalidBlockDeviceMapping", "%s: %s" % (dev, e))
                eb.update({"volumeSize": size,
                           "deleteOnTermination": ebs.get("DeleteOnTermination", True),
                           "volumeType": vtype, "encrypted": ebs.get("Encrypted", False)})
                eb.update(self._bdm_performance(vtype, iops, throughput))
                item["ebs"] = eb
            else:
                raise EC2Error("InvalidBlockDeviceMapping",
                               "%s: one of Ebs, NoDevice or VirtualName is required" % dev)
            if any(m["deviceName"] == dev for m in out):
                raise EC2Error("InvalidBlockDeviceMapping", "Duplicate device name %s" % dev)
            out.append(item)
        return out

    # ---- actions -------------------------------------------------------------
    def op_RegisterImage(self, p, rec):
        if p.get("ImageLocation"):
            raise EC2Error("InvalidParameterValue",
                           "The emulator only registers EBS-backed images (no ImageLocation)")
        arch = p.get("Architecture", "i386")          # AWS default for EBS-backed: i386
        virt = p.get("VirtualizationType", "paravirtual")   # AWS default: paravirtual
        boot = p.get("BootMode")
        for name, value, allowed in (("architecture", arch, ARCHITECTURES),
                                     ("virtualizationType", virt, ("hvm", "paravirtual")),
                                     ("bootMode", boot, BOOT_MODES),
                                     ("tpmSupport", p.get("TpmSupport"), ("v2.0",)),
                                     ("imdsSupport", p.get("ImdsSupport"), ("v2.0",)),
                                     ("sriovNetSupport", p.get("SriovNetSupport"), ("simple",))):
            if value is not None and value not in allowed:
                raise EC2Error("InvalidParameterValue",
                               "Value (%s) for parameter %s is invalid. Expected: '%s'."
                               % (value, name, ", ".join(allowed)))
        if p.get("TpmSupport") and boot != "uefi":
            raise EC2Error("InvalidParameterCombination",
                           "TpmSupport v2.0 requires BootMode uefi")
        if arch.startswith("arm64") and boot == "legacy-bios":
            raise EC2Error("InvalidParameterCombination",
                           "The arm64 architecture supports the uefi boot mode only")
        if p.get("EnaSupport") and virt != "hvm":
            raise EC2Error("InvalidParameterCombination",
                           "ENA support requires the hvm virtualization type")
        with self.lock:
            self.check_image_name(p.get("Name"))
            bdm = self._bdm_from_request(p.get("BlockDeviceMapping") or [])
            root = p.get("RootDeviceName")
            if not root:
                raise EC2Error("MissingParameter",
                               "The request must contain the parameter rootDeviceName")
            rm = [m for m in bdm if m["deviceName"] == root]
            if not rm:
                raise EC2Error("InvalidBlockDeviceMapping",
                               "The root device name %s is not in the block device mapping"
                               % root)
            if not (rm[0].get("ebs") or {}).get("snapshotId"):
                raise EC2Error("InvalidBlockDeviceMapping",
                               "The root device %s must be mapped to an EBS snapshot" % root)
            tags = tags_from_spec(p.get("TagSpecification"), ("image",)).get("image", {})
            self._dry_run(p)
            iid = new_id("ami")
            self.images[iid] = {
                "id": iid, "name": p["Name"], "description": p.get("Description"),
                "owner": self.cfg["account_id"], "architecture": arch,
                "root_device_name": root, "virtualization_type": virt,
                "ena_support": p.get("EnaSupport"), "boot_mode": boot,
                "tpm": p.get("TpmSupport"), "imds_support": p.get("ImdsSupport"),
                "sriov": p.get("SriovNetSupport"),
                "creation_time": self.clock(), "tags": tags, "bdm": bdm,
                "region": self.region(),
                "product_codes": [{"id": b, "type": "marketplace"}
                                  for b in p.get("BillingProduct") or []],
                "source": "RegisterImage"}
            self.save()
        rec["image_id"] = iid
        return {"imageId": iid}

    def op_CreateImage(self, p, rec):
        iid_inst = p.get("InstanceId")
        if not iid_inst:
            raise EC2Error("MissingParameter", "The request must contain the parameter InstanceId")
        check_id("i", iid_inst)
        if iid_inst != self.cfg["instance_id"]:
            raise not_found("i", iid_inst)
        overrides = {e.get("DeviceName"): e for e in p.get("BlockDeviceMapping") or []}
        tags = tags_from_spec(p.get("TagSpecification"), ("image", "snapshot"))
        vols = []
        for v in self._instance_volumes():
            o = overrides.get(v["device_name"])
            if o is not None and "NoDevice" in o:
                if v["root"]:
                    raise EC2Error("InvalidBlockDeviceMapping",
                                   "The root device cannot be excluded")
                continue
            vols.append(v)
        with self.lock:
            self.check_image_name(p.get("Name"))
            self._dry_run(p)
            ami = new_id("ami")
            c = self.cfg
            bdm = [{"deviceName": v["device_name"],
                    "ebs": dict({"volumeSize": v["size_gib"],
                                 "deleteOnTermination": v["delete_on_termination"],
                                 "volumeType": v["volume_type"], "encrypted": v["encrypted"]},
                                **self._bdm_performance(v["volume_type"], v["iops"],
                                                        v["throughput"]))}
                   for v in sorted(vols, key=lambda v: (not v["root"], v["device_name"]))]
            self.images[ami] = {
                "id": ami, "name": p["Name"], "description": p.get("Description"),
                "owner": c["account_id"], "architecture": c["architecture"],
                "root_device_name": c["root_device_name"],
                "virtualization_type": c["virtualization_type"],
                "ena_support": c["ena_support"], "boot_mode": c["boot_mode"],
                "tpm": c["tpm_support"], "imds_support": c["imds_support"],
                "sriov": c["sriov_net_support"],
                "creation_time": self.clock(), "tags": tags.get("image", {}), "bdm": bdm,
                "region": self.cfg["region"],
                "product_codes": list(c["product_codes"]), "source": "CreateImage",
                "pending_snapshots": True, "no_reboot": bool(p.get("NoReboot"))}
            if not p.get("NoReboot"):
                self.reboots += 1
                log.warning("CreateImage without NoReboot: a real instance would reboot now")
            self.save()
        delay = float(self.settings.get("create_image_snapshot_delay_ms") or 0) / 1000.0
        fail = rec.get("snapshot_error", False)
        t = threading.Thread(target=self._create_image_snapshots,
                             args=(ami, vols, delay, tags.get("snapshot", {}), fail),
                             daemon=True)
        t.start()
        rec["image_id"] = ami
        return {"imageId": ami}

    def _create_image_snapshots(self, ami, vols, delay, tags, fail):
        """CreateImage fixes its snapshots some time after the call (undocumented when)."""
        time.sleep(delay)
        rec = {"kind": "async", "action": "CreateImage.snapshots", "image_id": ami,
               "time": iso_ms(self.now())}
        try:
            with self.lock:
                if ami not in self.images:
                    return
            desc = "Created by CreateImage(%s) for %s" % (self.cfg["instance_id"], ami)
            snaps = self.take_snapshots(vols, desc, {v["id"]: tags for v in vols}, "CreateImage",
                                        rec, fail, limits=False)
            with self.lock:
                img = self.images.get(ami)
                if img is None:
                    return
                by_vol = {s["volume_id"]: s["id"] for s in snaps}
                dev_vol = {v["device_name"]: v["id"] for v in vols}
                for m in img["bdm"]:
                    vid = dev_vol.get(m["deviceName"])
                    if vid in by_vol:
                        m["ebs"] = dict({"snapshotId": by_vol[vid]}, **m["ebs"])
                img.pop("pending_snapshots", None)
                self.save()
            rec["snapshot_ids"] = [s["id"] for s in snaps]
        except Exception as e:
            log.error("CreateImage snapshots for %s failed: %s", ami, e)
            with self.lock:
                img = self.images.get(ami)
                if img is not None:
                    img["state"] = "failed"
                    img.pop("pending_snapshots", None)
            rec["error"] = str(e)
        self.log_request(rec)

    def op_DescribeImages(self, p, rec):
        ids = p.get("ImageId") or []
        with self.lock:
            imgs = self.region_images()
        all_imgs = list(imgs)
        if self.region() == self.cfg["region"]:
            all_imgs.append(self.launch_image())
        for iid in ids:
            check_id("ami", iid)
            if not any(i["id"] == iid for i in all_imgs):
                raise not_found("ami", iid)
        if ids:
            imgs = [i for i in all_imgs if i["id"] in ids]
        owners = p.get("Owner") or []
        if owners:
            pool = imgs if ids else all_imgs
            acct = self.cfg["account_id"]
            imgs = [i for i in pool
                    if ("self" in owners and i["owner"] == acct) or i["owner"] in owners
                    or (i.get("alias") and i["alias"] in owners)]
        table = {
            "image-id": lambda i: [i["id"]], "name": lambda i: [i["name"]],
            "state": lambda i: [i.get("state") or self.image_state(i)],
            "owner-id": lambda i: [i["owner"]], "architecture": lambda i: [i["architecture"]],
            "description": lambda i: [i.get("description") or ""],
            "root-device-name": lambda i: [i["root_device_name"]],
            "block-device-mapping.snapshot-id":
                lambda i: [(m.get("ebs") or {}).get("snapshotId") for m in i["bdm"]
                           if (m.get("ebs") or {}).get("snapshotId")],
            "block-device-mapping.device-name": lambda i: [m["deviceName"] for m in i["bdm"]],
            "is-public": lambda i: [i.get("public", False)],
            "virtualization-type": lambda i: [i["virtualization_type"]],
        }
        if p.get("ExecutableBy"):
            imgs = [i for i in imgs if any(self.executable_by(i, u) for u in p["ExecutableBy"])]
        imgs = apply_filters(imgs, p.get("Filter"), table, lambda i: i["tags"])
        self._dry_run(p)
        imgs.sort(key=lambda i: (i["creation_time"], i["id"]))
        page, nxt = paginate(imgs, p)
        return {"imagesSet": [self.image_item(i) for i in page], "nextToken": nxt}

    def op_DeregisterImage(self, p, rec):
        iid = p.get("ImageId")
        if not iid:
            raise EC2Error("MissingParameter", "The request must contain the parameter ImageId")
        check_id("ami", iid)
        with self.lock:
            if (iid == self.cfg["image_id"] and iid not in self.images
                    and self.region() == self.cfg["region"]):
                raise EC2Error("UnauthorizedOperation",
                               "You do not own the image %s" % iid)
            img = self.get_image(iid)
            self._dry_run(p)
            del self.images[iid]
            results = None
            if p.get("DeleteAssociatedSnapshots"):
                results = self._delete_image_snapshots(img)
            self.save()
        out = {"return": True}
        if results is not None:
            out["deleteSnapshotResultSet"] = results
        return out

    def _delete_image_snapshots(self, img):
        """DeleteAssociatedSnapshots: each snapshot of the mapping is deleted
        unless another image uses it ("skipped", as EC2 documents) or it
        cannot be deleted (a lock: "client-error")."""
        results = []
        for m in img["bdm"]:
            sid = (m.get("ebs") or {}).get("snapshotId")
            if not sid:
                continue
            s = self.snapshots.get(sid)
            if s is None:
                results.append({"snapshotId": sid, "returnCode": "client-error"})
                continue
            err = self.delete_refusal(s, ignore_image=img["id"])
            if err is None:
                self.drop_snapshot(s)
                code = "success"
            else:
                code = "skipped" if err.code == "InvalidSnapshot.InUse" else "client-error"
            results.append({"snapshotId": sid, "returnCode": code})
        return results
