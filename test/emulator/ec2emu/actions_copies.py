"""CopySnapshot and CopyImage: called in the destination region (the one the
request is signed for), they copy a snapshot or an image of another region
(or the same one).  A copy has its own id, starts pending and completes over
time; its bytes are a real copy of the source's.

EC2 API Reference: CopySnapshot ("When you copy an encrypted source snapshot
using the Amazon EC2 Query API, you must supply a pre-signed URL ... An
invalid or improperly signed PresignedUrl will cause the copy operation to
fail asynchronously, and the snapshot will move to an error state"), and
CopyImage."""

import datetime
import hmac
import json
import logging
import os

from .errors import EC2Error, check_id, not_found
from .query import tags_from_spec
from .sigv4 import SIGV4_TIMESTAMP, presigned_parts, presigned_signature
from .util import new_id, unlink_quiet
from .volumes import copy_volume

log = logging.getLogger("ec2emu")

# "Snapshots created by the CopySnapshot action have an arbitrary volume ID
# that should not be used for any purpose." (EC2 API Reference, Snapshot)
COPY_VOLUME_ID = "vol-ffffffff"


class CopyActions:
    """The copy actions of the Emulator."""

    def _source_region(self, p):
        src = p.get("SourceRegion")
        if not src:
            raise EC2Error("MissingParameter", "The request must contain the parameter SourceRegion")
        if src not in self.cfg["regions"]:
            raise EC2Error("InvalidParameterValue",
                           "Invalid value '%s' for SourceRegion. The region does not exist or "
                           "is not enabled for this account." % src)
        return src

    def _encryption(self, p, source_encrypted, source_key):
        """(encrypted, kms key) of a copy.  An encrypted source stays
        encrypted; Encrypted=true encrypts a copy of an unencrypted one."""
        key = p.get("KmsKeyId")
        if key is not None and not p.get("Encrypted"):
            raise EC2Error("InvalidParameterDependency",
                           "The parameter KmsKeyId requires the parameter Encrypted to be set.")
        encrypted = bool(source_encrypted or p.get("Encrypted"))
        if not encrypted:
            return False, None
        return True, key or source_key or (
            "arn:aws:kms:%s:%s:alias/aws/ebs" % (self.region(), self.cfg["account_id"]))

    def _copy_complete_after(self):
        v = self.settings.get("copy_complete_after")
        return float(self.settings.get("complete_after") or 0) if v is None else float(v)

    def copy_snapshot_bytes(self, src, region, description, tags, encrypted, key, rec,
                            fail=False, state_message=None):
        """A new pending snapshot in `region` holding a copy of src's bytes."""
        sid = new_id("snap")
        path, info = None, {"method": None, "ms": 0.0, "bytes": 0}
        if src.get("file"):
            path = os.path.join(self.snap_dir, sid + ".img")
            try:
                info = copy_volume(src["file"], path)
            except OSError as e:
                unlink_quiet(path)
                log.error("copy of %s failed: %s", src["id"], e)
                raise EC2Error("InternalError", "emulator could not copy the bytes of %s: %s"
                               % (src["id"], e.strerror))
        rec.setdefault("copies", []).append({"snapshot_id": sid, "source": src["id"],
                                             "ms": info["ms"], "method": info["method"],
                                             "bytes": info["bytes"]})
        rec["copy_ms"] = round(rec.get("copy_ms", 0) + info["ms"], 3)
        return {"id": sid, "volume_id": COPY_VOLUME_ID, "volume_size": src["volume_size"],
                "description": description, "start_time": self.clock(), "region": region,
                "encrypted": encrypted, "kms_key_id": key, "tags": dict(tags), "file": path,
                "copy_ms": info["ms"], "copy_method": info["method"],
                "copied_bytes": info["bytes"], "source": "CopySnapshot",
                "complete_after": self._copy_complete_after(), "fail": bool(fail),
                "state_message": state_message, "owner": self.cfg["account_id"],
                "copied_from": {"region": src.get("region", self.cfg["region"]),
                                "snapshot_id": src["id"]}}

    # ---- the pre-signed URL ---------------------------------------------------
    def presigned_url_problem(self, url, p, src_region):
        """Why a CopySnapshot PresignedUrl is not valid, or None.  It must be
        a SigV4 query-string pre-signed GET of Action=CopySnapshot, signed
        for the source region with known credentials, unexpired, and name
        the same SourceRegion, SourceSnapshotId and this DestinationRegion."""
        try:
            pairs, scope = presigned_parts(url)
        except ValueError as e:
            return "PresignedUrl is not a pre-signed URL: %s" % e
        q = dict(pairs)
        if q.get("Action") != "CopySnapshot":
            return "PresignedUrl is not for the CopySnapshot action"
        if scope["service"] != "ec2":
            return "PresignedUrl is signed for service '%s', not ec2" % scope["service"]
        if scope["region"] != src_region:
            return ("PresignedUrl is signed for region '%s', not for the source region '%s'"
                    % (scope["region"], src_region))
        for k, want in (("SourceRegion", src_region), ("SourceSnapshotId", p["SourceSnapshotId"]),
                        ("DestinationRegion", self.region())):
            if q.get(k) != want:
                return "PresignedUrl has %s=%r, expected %r" % (k, q.get(k), want)
        try:
            t = datetime.datetime.strptime(q["X-Amz-Date"], SIGV4_TIMESTAMP).replace(
                tzinfo=datetime.timezone.utc).timestamp()
            expires = int(q["X-Amz-Expires"])
        except ValueError:
            return "PresignedUrl has a malformed X-Amz-Date or X-Amz-Expires"
        if q["X-Amz-Date"][:8] != scope["date"]:
            return "PresignedUrl's credential scope date is not its X-Amz-Date's"
        if not 1 <= expires <= 604800:
            return "PresignedUrl's X-Amz-Expires must be between 1 and 604800"
        now = self.now()
        if now > t + expires:
            return "PresignedUrl has expired"
        if t > now + float(self.settings.get("max_clock_skew_s") or 900):
            return "PresignedUrl is signed in the future"
        cred = self.creds.get(scope["akid"])
        if cred is None:
            return "PresignedUrl is signed with an unknown access key"
        if (cred.get("token") or None) != (q.get("X-Amz-Security-Token") or None):
            return "PresignedUrl has a missing or wrong X-Amz-Security-Token"
        if cred.get("expiration") is not None and now >= cred["expiration"]:
            return "PresignedUrl is signed with expired credentials"
        want = presigned_signature(url, cred["secret"], scope["region"], scope["service"],
                                   q["X-Amz-Date"], scope["akid"])
        if not hmac.compare_digest(want.encode(), q["X-Amz-Signature"].encode()):
            return "PresignedUrl's signature does not match"
        return None

    # ---- actions -------------------------------------------------------------
    def op_CopySnapshot(self, p, rec):
        src_region = self._source_region(p)
        sid = p.get("SourceSnapshotId")
        if not sid:
            raise EC2Error("MissingParameter",
                           "The request must contain the parameter SourceSnapshotId")
        dest = p.get("DestinationRegion")
        if dest is not None and dest != self.region():
            raise EC2Error("InvalidParameterValue",
                           "DestinationRegion %s is not the region of this request (%s)"
                           % (dest, self.region()))
        with self.lock:
            src = self.get_snapshot(sid, region=src_region)
            state = self.snap_state(src)[0]
        if state != "completed":
            raise EC2Error("IncorrectState", "Snapshot %s is in invalid state - %s" % (sid, state))
        encrypted, key = self._encryption(p, src.get("encrypted"), src.get("kms_key_id"))
        tags = tags_from_spec(p.get("TagSpecification"), ("snapshot",)).get("snapshot", {})
        url = p.get("PresignedUrl")
        cross = src_region != self.region()
        if cross and (src.get("encrypted") or p.get("Encrypted") or p.get("KmsKeyId")) and not url:
            raise EC2Error("MissingParameter",
                           "The request must contain the parameter PresignedUrl: an encrypted "
                           "snapshot copy across regions through the Query API needs one")
        self._dry_run(p)
        problem = self.presigned_url_problem(url, p, src_region) if url else None
        if problem:
            log.info("CopySnapshot of %s: %s; the copy will fail", sid, problem)
            rec["presigned_url_problem"] = problem
        s = self.copy_snapshot_bytes(
            src, self.region(), p.get("Description") or "", tags, encrypted, key, rec,
            fail=bool(problem or rec.get("snapshot_error")),
            state_message=problem and "The pre-signed URL is not valid: %s" % problem)
        with self.lock:
            self.snapshots[s["id"]] = s
            self.save()
        rec["snapshot_ids"] = [s["id"]]
        return {"snapshotId": s["id"], "tagSet": [{"key": k, "value": v}
                                                 for k, v in tags.items()] or None}

    def op_CopyImage(self, p, rec):
        src_region = self._source_region(p)
        iid = p.get("SourceImageId")
        if not iid:
            raise EC2Error("MissingParameter", "The request must contain the parameter SourceImageId")
        if not p.get("Name"):
            raise EC2Error("MissingParameter", "The request must contain the parameter Name")
        check_id("ami", iid)
        token = p.get("ClientToken")
        fingerprint = json.dumps({k: v for k, v in p.items() if k not in ("DryRun",)},
                                 sort_keys=True) + "|" + self.region()
        with self.lock:
            if token and token in self.client_tokens:
                first, ami = self.client_tokens[token]
                if first != fingerprint:
                    raise EC2Error("IdempotentParameterMismatch")
                self._dry_run(p)
                return {"imageId": ami}
            img = self.images.get(iid)
            if img is None or not self.in_region(img, src_region):
                raise not_found("ami", iid)
            state = img.get("state") or self.image_state(img)
            if state != "available":
                raise EC2Error("InvalidAMIID.Unavailable",
                               "The image id '[%s]' is not available: it is %s" % (iid, state))
            self.check_image_name(p["Name"])
        tags = tags_from_spec(p.get("TagSpecification"), ("image", "snapshot"))
        image_tags = dict(img["tags"]) if p.get("CopyImageTags") else {}
        image_tags.update(tags.get("image", {}))
        snaps = [self.snapshots.get((m.get("ebs") or {}).get("snapshotId"))
                 for m in img["bdm"] if (m.get("ebs") or {}).get("snapshotId")]
        if any(s is None for s in snaps):
            raise EC2Error("InvalidAMIID.Unavailable",
                           "The image id '[%s]' is not available: a snapshot is gone" % iid)
        any_encrypted = any(s.get("encrypted") for s in snaps)
        self._encryption(p, any_encrypted, None)              # the KmsKeyId rule
        self._dry_run(p)
        ami = new_id("ami")
        copies, by_src = [], {}
        task = int(self.clock())
        try:
            for s in snaps:
                encrypted, key = self._encryption(p, s.get("encrypted"), s.get("kms_key_id"))
                desc = ("Copied for DestinationAmi %s from SourceAmi %s for SourceSnapshot %s. "
                        "Task created on %d." % (ami, iid, s["id"], task))
                c = self.copy_snapshot_bytes(s, self.region(), desc, tags.get("snapshot", {}),
                                             encrypted, key, rec, fail=rec.get("snapshot_error"))
                c["source"] = "CopyImage"
                copies.append(c)
                by_src[s["id"]] = c
        except Exception:
            for c in copies:
                unlink_quiet(c["file"])
            raise
        bdm = []
        for m in img["bdm"]:
            m = json.loads(json.dumps(m))
            ebs = m.get("ebs")
            if ebs and ebs.get("snapshotId") in by_src:
                c = by_src[ebs["snapshotId"]]
                ebs["snapshotId"] = c["id"]
                ebs["encrypted"] = c["encrypted"]
                if c["kms_key_id"]:
                    ebs["kmsKeyId"] = c["kms_key_id"]
            bdm.append(m)
        new = {k: v for k, v in img.items() if k not in ("state", "pending_snapshots",
                                                          "launch_permissions", "public")}
        new.update({"id": ami, "name": p["Name"],
                    "description": p.get("Description", img.get("description")),
                    "owner": self.cfg["account_id"], "creation_time": self.clock(),
                    "tags": image_tags, "bdm": bdm, "region": self.region(),
                    "source": "CopyImage", "copied_from": {"region": src_region, "image_id": iid}})
        with self.lock:
            for c in copies:
                self.snapshots[c["id"]] = c
            self.images[ami] = new
            if token:
                self.client_tokens[token] = (fingerprint, ami)
            self.save()
        rec["image_id"] = ami
        rec["snapshot_ids"] = [c["id"] for c in copies]
        return {"imageId": ami}
