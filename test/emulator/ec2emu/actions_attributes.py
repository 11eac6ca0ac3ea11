"""ModifySnapshotAttribute / DescribeSnapshotAttribute (createVolumePermission,
productCodes) and ModifyImageAttribute / DescribeImageAttribute
(launchPermission, description): sharing snapshots and images with other
accounts or everyone (group "all")."""

import re

from .errors import EC2Error

ACCOUNT_RE = re.compile(r"^\d{12}$")


def _permission_changes(p, mod_key, extra_keys=()):
    """(add, remove) lists of {"userId"|"group"|...: value} from either form
    of the request: CreateVolumePermission.Add.N.UserId (or LaunchPermission)
    or OperationType + UserId.N / UserGroup.N."""
    add, remove = [], []
    mod = p.get(mod_key) or {}
    for src, dst in (("Add", add), ("Remove", remove)):
        for e in mod.get(src) or []:
            for k, out in (("UserId", "userId"), ("Group", "group")) + tuple(extra_keys):
                if e.get(k) is not None:
                    dst.append({out: e[k]})
    op = p.get("OperationType")
    flat = [{"userId": u} for u in p.get("UserId") or []] + \
        [{"group": g} for g in p.get("UserGroup") or []]
    for k, out in (("OrganizationArn", "organizationArn"),
                   ("OrganizationalUnitArn", "organizationalUnitArn")):
        flat += [{out: v} for v in p.get(k) or []]
    if flat:
        if op not in ("add", "remove"):
            raise EC2Error("InvalidParameterValue" if op else "MissingParameter",
                           "The request must contain the parameter OperationType (add|remove)"
                           if not op else "Value (%s) for parameter OperationType is invalid. "
                           "Expected: 'add, remove'." % op)
        (add if op == "add" else remove).extend(flat)
    for e in add + remove:
        if "userId" in e and not ACCOUNT_RE.match(e["userId"]):
            raise EC2Error("InvalidUserID.Malformed",
                           "User ID '%s' is not valid" % e["userId"])
        if "group" in e and e["group"] != "all":
            raise EC2Error("InvalidParameterValue",
                           "Value (%s) for parameter Group is invalid. Expected: 'all'."
                           % e["group"])
    return add, remove


def _apply(perms, add, remove):
    out = [dict(x) for x in perms]
    for e in add:
        if e not in out:
            out.append(e)
    return [x for x in out if x not in remove]


class AttributeActions:
    """The attribute actions of the Emulator (a snapshot's "cvp" and an
    image's "launch_permissions" lists)."""

    def restorable_by(self, s, who):
        if who in ("self", s["owner"]):
            return True
        perms = s.get("cvp", [])
        return {"userId": who} in perms or {"group": "all"} in perms

    def executable_by(self, img, who):
        if who in ("self", img["owner"]):
            return True
        perms = img.get("launch_permissions", [])
        return {"userId": who} in perms or {"group": "all"} in perms or img.get("public", False)

    def op_ModifySnapshotAttribute(self, p, rec):
        sid = p.get("SnapshotId")
        if not sid:
            raise EC2Error("MissingParameter", "The request must contain the parameter SnapshotId")
        attr = p.get("Attribute") or "createVolumePermission"
        if attr != "createVolumePermission":
            raise EC2Error("InvalidParameterValue",
                           "Value (%s) for parameter Attribute is invalid. Expected: "
                           "'createVolumePermission'." % attr)
        add, remove = _permission_changes(p, "CreateVolumePermission")
        if not add and not remove:
            raise EC2Error("MissingParameter",
                           "The request must contain the parameter createVolumePermission")
        with self.lock:
            s = self.get_snapshot(sid)
            if s.get("encrypted") and {"group": "all"} in add:
                raise EC2Error("InvalidParameter",
                               "Encrypted snapshots with EBS default key cannot be shared")
            self._dry_run(p)
            s["cvp"] = _apply(s.get("cvp", []), add, remove)
            self.save()
        return {}

    def op_DescribeSnapshotAttribute(self, p, rec):
        sid, attr = p.get("SnapshotId"), p.get("Attribute")
        for k, v in (("SnapshotId", sid), ("Attribute", attr)):
            if not v:
                raise EC2Error("MissingParameter", "The request must contain the parameter %s" % k)
        if attr not in ("createVolumePermission", "productCodes"):
            raise EC2Error("InvalidParameterValue",
                           "Value (%s) for parameter Attribute is invalid. Expected: "
                           "'productCodes, createVolumePermission'." % attr)
        with self.lock:
            s = self.get_snapshot(sid)
            self._dry_run(p)
            if attr == "productCodes":
                return {"snapshotId": sid, "productCodes": []}
            return {"snapshotId": sid, "createVolumePermission": list(s.get("cvp", []))}

    def op_ResetSnapshotAttribute(self, p, rec):
        with self.lock:
            s = self.get_snapshot(p.get("SnapshotId") or "")
            if p.get("Attribute") != "createVolumePermission":
                raise EC2Error("InvalidParameterValue",
                               "Value (%s) for parameter Attribute is invalid. Expected: "
                               "'createVolumePermission'." % p.get("Attribute"))
            self._dry_run(p)
            s["cvp"] = []
            self.save()
        return {"return": True}

    def op_ModifyImageAttribute(self, p, rec):
        iid = p.get("ImageId")
        if not iid:
            raise EC2Error("MissingParameter", "The request must contain the parameter ImageId")
        attr = p.get("Attribute")
        with self.lock:
            img = self.get_image(iid)
            desc = (p.get("Description") or {}).get("Value")
            if attr == "description" or (attr is None and desc is not None):
                value = desc if desc is not None else p.get("Value")
                if value is None:
                    raise EC2Error("MissingParameter",
                                   "The request must contain the parameter Description")
                self._dry_run(p)
                img["description"] = value
                self.save()
                return {}
            if attr not in (None, "launchPermission"):
                raise EC2Error("InvalidParameterValue",
                               "The emulator modifies the launchPermission and description "
                               "attributes only, not '%s'" % attr)
            add, remove = _permission_changes(
                p, "LaunchPermission", (("OrganizationArn", "organizationArn"),
                                        ("OrganizationalUnitArn", "organizationalUnitArn")))
            if not add and not remove:
                raise EC2Error("MissingParameter",
                               "The request must contain the parameter launchPermission")
            self._dry_run(p)
            img["launch_permissions"] = _apply(img.get("launch_permissions", []), add, remove)
            img["public"] = {"group": "all"} in img["launch_permissions"]
            self.save()
        return {}

    def op_DescribeImageAttribute(self, p, rec):
        iid, attr = p.get("ImageId"), p.get("Attribute")
        for k, v in (("ImageId", iid), ("Attribute", attr)):
            if not v:
                raise EC2Error("MissingParameter", "The request must contain the parameter %s" % k)
        with self.lock:
            img = self.get_image(iid)
            self._dry_run(p)
            out = {"imageId": iid}
            if attr == "launchPermission":
                out["launchPermission"] = list(img.get("launch_permissions", []))
            elif attr == "description":
                out["description"] = {"value": img.get("description")} \
                    if img.get("description") else {}
            elif attr == "blockDeviceMapping":
                out["blockDeviceMapping"] = img["bdm"]
            elif attr == "productCodes":
                out["productCodes"] = [{"productCode": c.get("id"), "type": c.get("type")}
                                       for c in img.get("product_codes", [])]
            elif attr in ("bootMode", "tpmSupport", "imdsSupport", "sriovNetSupport"):
                key = {"bootMode": "boot_mode", "tpmSupport": "tpm", "imdsSupport": "imds_support",
                       "sriovNetSupport": "sriov"}[attr]
                out[attr] = {"value": img.get(key)} if img.get(key) else {}
            else:
                raise EC2Error("InvalidParameterValue",
                               "Value (%s) for parameter attribute is invalid." % attr)
        return out
