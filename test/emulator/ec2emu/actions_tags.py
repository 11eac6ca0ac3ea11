"""CreateTags, DeleteTags and DescribeTags on snapshots, images, volumes and
the instance."""

from .errors import EC2Error, check_id, not_found
from .query import apply_filters, paginate, validate_tags


class TagActions:
    """The tag actions of the Emulator."""

    def _tag_target(self, rid):
        """Return (resource_type, tags dict) for a taggable id."""
        prefix = rid.split("-", 1)[0] if "-" in rid else ""
        if prefix == "snap":
            return "snapshot", self.get_snapshot(rid)["tags"]
        if prefix in ("vol", "i") and self.region() != self.cfg["region"]:
            check_id(prefix, rid)
            raise not_found(prefix, rid)       # they live in the home region
        if prefix == "vol":
            return "volume", self.get_volume(rid)["tags"]
        if prefix == "i":
            check_id("i", rid)
            if rid != self.cfg["instance_id"]:
                return "instance", self.get_instance(rid)["tags"]
            return "instance", self.instance_tags
        if prefix == "ami":
            return "image", self.get_image(rid)["tags"]
        raise EC2Error("InvalidID", "The ID '%s' is not valid" % rid)

    def op_CreateTags(self, p, rec):
        rids = p.get("ResourceId") or []
        if not rids:
            raise EC2Error("MissingParameter", "The request must contain the parameter resourceIdSet")
        if not p.get("Tag"):
            raise EC2Error("MissingParameter", "The request must contain the parameter tagSet")
        tags = validate_tags(p["Tag"])
        with self.lock:
            targets = [self._tag_target(r)[1] for r in rids]
            for t in targets:
                if len(set(t) | set(tags)) > 50:
                    raise EC2Error("TagLimitExceeded")
            self._dry_run(p)
            for t in targets:
                t.update(tags)
            self.save()
        return {"return": True}

    def op_DeleteTags(self, p, rec):
        rids = p.get("ResourceId") or []
        if not rids:
            raise EC2Error("MissingParameter", "The request must contain the parameter resourceIdSet")
        with self.lock:
            targets = [self._tag_target(r)[1] for r in rids]
            self._dry_run(p)
            for t in targets:
                if not p.get("Tag"):
                    t.clear()
                for tag in p.get("Tag") or []:
                    k = tag.get("Key")
                    if k in t and ("Value" not in tag or t[k] == tag["Value"]):
                        del t[k]
            self.save()
        return {"return": True}

    def op_DescribeTags(self, p, rec):
        with self.lock:
            rows = []
            if self.region() == self.cfg["region"]:
                rows += [(self.cfg["instance_id"], "instance", k, v)
                         for k, v in self.instance_tags.items()]
                for iid, inst in self.instances.items():
                    rows += [(iid, "instance", k, val) for k, val in inst["tags"].items()]
                for v in self.all_volumes():
                    rows += [(v["id"], "volume", k, val) for k, val in v["tags"].items()]
            for s in self.region_snapshots():
                rows += [(s["id"], "snapshot", k, val) for k, val in s["tags"].items()]
            for img in self.region_images():
                rows += [(img["id"], "image", k, val) for k, val in img["tags"].items()]
        table = {"resource-id": lambda r: [r[0]], "resource-type": lambda r: [r[1]],
                 "key": lambda r: [r[2]], "value": lambda r: [r[3]]}
        rows = apply_filters(rows, p.get("Filter"), table, lambda r: {})
        self._dry_run(p)
        rows.sort(key=lambda r: (r[1], r[0], r[2]))
        page, nxt = paginate(rows, p)
        return {"tagSet": [{"resourceId": r[0], "resourceType": r[1], "key": r[2], "value": r[3]}
                           for r in page], "nextToken": nxt}
