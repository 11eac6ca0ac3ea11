"""CreateSnapshots, CreateSnapshot, DescribeSnapshots, DeleteSnapshot, and
taking a snapshot: copying the volumes' bytes at the point in time."""

import logging
import os
import time

from .errors import EC2Error, check_id, not_found
from .query import apply_filters, paginate, tags_from_spec
from .render import tag_set
from .util import iso_ms, new_id, unlink_quiet
from .volumes import copy_set_frozen, copy_volume

log = logging.getLogger("ec2emu")


class SnapshotActions:
    """The snapshot actions of the Emulator (self.snapshots, under self.lock)."""

    def snap_state(self, s, now=None):
        """(state, progress) at `now` on the resources' clock: pending with
        its progress rising for complete_after seconds, then completed (or
        error, with the fault switch)."""
        now = self.clock() if now is None else now
        el = now - s["start_time"]
        ca = s.get("complete_after", 0) or 0
        if el >= ca:
            if s.get("fail"):
                return "error", "0%"
            return "completed", "100%"
        return "pending", "%d%%" % max(0, min(99, int(100 * el / ca)))

    def completed_at(self, s):
        return s["start_time"] + (s.get("complete_after", 0) or 0)

    def region_snapshots(self):
        """The snapshots of the request's region."""
        return [s for s in self.snapshots.values() if self.in_region(s)]

    def _precheck_snapshot(self, vols):
        now = self.now()
        iv = float(self.settings.get("per_volume_min_interval_s") or 0)
        mp = int(self.settings.get("max_pending_per_volume") or 0)
        for v in vols:
            last = self.last_snapshot_at.get(v["id"])
            if iv and last is not None and now - last < iv:
                raise EC2Error("SnapshotCreationPerVolumeRateExceeded")
            if mp:
                pending = sum(1 for s in self.snapshots.values()
                              if s["volume_id"] == v["id"] and self.snap_state(s, now)[0] == "pending")
                if pending >= mp:
                    raise EC2Error("ConcurrentSnapshotLimitExceeded")

    def take_snapshots(self, vols, description, tags_by_vol, source, rec, fail=False,
                       limits=True):
        """Copy the volumes' bytes now and register pending snapshots.

        tags_by_vol: {volume id: {key: value}}.  The point in time is when
        this runs.  How a set of several volumes is copied is the setting
        set_copy (see copy_set): at one instant, or (to show what a set that
        is not one instant looks like) one volume after another.
        """
        with self.lock:
            if limits:
                self._precheck_snapshot(vols)
            now = self.now()
            for v in vols:
                self.last_snapshot_at[v["id"]] = now
        pit = self.now()
        rec["point_in_time"] = pit
        start = self.clock()
        ids = [new_id("snap") for _ in vols]
        paths = [os.path.join(self.snap_dir, sid + ".img") if v["backing_file"] else None
                 for sid, v in zip(ids, vols)]
        try:
            infos = self.copy_set(vols, paths, rec)
        except OSError as e:
            for path in paths:
                unlink_quiet(path)
            log.error("copy of %s failed: %s", ", ".join(v["id"] for v in vols), e)
            raise EC2Error("InternalError", "emulator could not copy the backing files of "
                           "%s: %s" % (", ".join(v["id"] for v in vols), e.strerror or e))
        created, copies = [], []
        for sid, v, path, info in zip(ids, vols, paths, infos):
            s = {"id": sid, "volume_id": v["id"], "volume_size": v["size_gib"],
                 "description": description or "", "start_time": start,
                 "region": self.cfg["region"], "encrypted": bool(v.get("encrypted")),
                 "tags": dict(tags_by_vol.get(v["id"], {})), "file": path,
                 "copy_ms": info["ms"], "copy_method": info["method"],
                 "copied_bytes": info["bytes"], "source": source,
                 "complete_after": float(self.settings.get("complete_after") or 0),
                 "fail": bool(fail), "owner": self.cfg["account_id"]}
            created.append(s)
            copies.append({"volume_id": v["id"], "snapshot_id": sid, "ms": info["ms"],
                           "method": info["method"], "bytes": info["bytes"]})
        rec.setdefault("copies", []).extend(copies)
        rec["copy_ms"] = round(rec.get("copy_ms", 0) + sum(c["ms"] for c in copies), 3)
        with self.lock:
            for s in created:
                self.snapshots[s["id"]] = s
            self.save()
        return created

    def copy_set(self, vols, paths, rec):
        """The copies of vols' backing files into paths (None: a volume
        without one), by the setting set_copy:

        - "instant" (the default): a set of two or more backing files on the
          store (config store_mount) is read with the store frozen
          (volumes.copy_set_frozen), so the set is one instant, as EBS's
          multi-volume snapshots are crash-consistent; one file alone is a
          reflink, which is atomic by itself.  Without a store_mount the
          copies are sequential, and rec says so.
        - "sequential": a reflink (else a sparse copy) of each in turn, with
          no pause: near one instant, but not one.
        - "nonatomic": the negative control of the zero-stall tests: the
          volumes whose ids nonatomic_first lists are copied first, then
          the emulator waits nonatomic_pause_ms while the writers go on,
          then the others: a set no crash could produce.

        rec["set_copy"] records what was done, rec["frozen_ms"] how long the
        store was frozen."""
        mode = self.settings.get("set_copy") or "instant"
        store = self.cfg.get("store_mount")
        todo = [(v["backing_file"], p) for v, p in zip(vols, paths) if p]
        empty = {"method": None, "ms": 0.0, "bytes": 0, "size": 0}
        if mode == "instant" and len(todo) > 1 and store:
            infos, frozen_ms = copy_set_frozen(store, todo)
            rec["set_copy"] = "instant"
            rec["frozen_ms"] = frozen_ms
            it = iter(infos)
            return [next(it) if p else dict(empty) for p in paths]
        if mode == "nonatomic":
            first = set(self.settings.get("nonatomic_first") or [])
            order = sorted(range(len(vols)), key=lambda i: vols[i]["id"] not in first)
            pause = float(self.settings.get("nonatomic_pause_ms") or 0) / 1000.0
        else:
            order, first, pause = list(range(len(vols))), set(), 0.0
        rec["set_copy"] = mode if (mode != "instant" or len(todo) < 2) else \
            "sequential (no store_mount)"
        infos = [dict(empty) for _ in vols]
        paused = False
        for i in order:
            if pause and not paused and vols[i]["id"] not in first:
                time.sleep(pause)
                paused = True
            if paths[i]:
                infos[i] = copy_volume(vols[i]["backing_file"], paths[i])
        return infos

    def snapshot_item(self, s, create_style):
        state, progress = self.snap_state(s)
        d = {"snapshotId": s["id"], "volumeId": s["volume_id"]}
        if create_style:           # CreateSnapshots SnapshotInfo: <state>
            d.update({"state": state})
        else:                      # Snapshot: <status>
            d.update({"status": state})
            if state == "error":
                d["statusMessage"] = s.get("state_message") or "Snapshot failed (emulated)"
        d.update({"startTime": iso_ms(s["start_time"]), "progress": progress,
                  "ownerId": s["owner"], "volumeSize": s["volume_size"],
                  "description": s["description"], "encrypted": bool(s.get("encrypted"))})
        if s.get("kms_key_id"):
            d["kmsKeyId"] = s["kms_key_id"]
        if not create_style:
            d["storageTier"] = "standard"
        d["tagSet"] = tag_set(s["tags"])
        return d

    def get_snapshot(self, sid, region=None):
        """A snapshot of the request's region (or of `region`)."""
        check_id("snap", sid)
        s = self.snapshots.get(sid)
        if s is None or not self.in_region(s, region):
            raise not_found("snap", sid)
        return s

    # ---- actions -------------------------------------------------------------
    def op_CreateSnapshots(self, p, rec):
        spec = p.get("InstanceSpecification") or {}
        iid = spec.get("InstanceId")
        if not iid:
            raise EC2Error("MissingParameter",
                           "The request must contain the parameter InstanceSpecification.InstanceId")
        check_id("i", iid)
        if iid != self.cfg["instance_id"]:
            raise not_found("i", iid)
        excluded = spec.get("ExcludeDataVolumeId") or []
        vols = self._instance_volumes()
        by_id = {v["id"]: v for v in vols}
        for vid in excluded:
            check_id("vol", vid)
            if vid not in by_id:
                raise not_found("vol", vid)
            if by_id[vid]["root"]:
                raise EC2Error("InvalidParameterValue",
                               "The root volume %s cannot be excluded with ExcludeDataVolumeId; "
                               "use ExcludeBootVolume" % vid)
        cts = p.get("CopyTagsFromSource")
        if cts is not None and cts != "volume":
            raise EC2Error("InvalidParameterValue",
                           "Value (%s) for parameter CopyTagsFromSource is invalid. "
                           "Expected: 'volume'." % cts)
        tags = tags_from_spec(p.get("TagSpecification"), ("snapshot",)).get("snapshot", {})
        chosen = [v for v in vols if v["id"] not in excluded
                  and not (spec.get("ExcludeBootVolume") and v["root"])]
        if not chosen:
            raise EC2Error("InvalidParameterCombination",
                           "No volumes left to snapshot after the exclusions")
        tags_by_vol = {}
        for v in chosen:
            t = dict(v["tags"]) if cts == "volume" else {}
            t.update(tags)
            if len(t) > 50:
                raise EC2Error("TagLimitExceeded")
            tags_by_vol[v["id"]] = t
        self._dry_run(p)
        snaps = self.take_snapshots(chosen, p.get("Description"), tags_by_vol, "CreateSnapshots",
                                    rec, fail=rec.get("snapshot_error", False))
        rec["snapshot_ids"] = [s["id"] for s in snaps]
        return {"snapshotSet": [self.snapshot_item(s, True) for s in snaps]}

    def op_CreateSnapshot(self, p, rec):
        vid = p.get("VolumeId")
        if not vid:
            raise EC2Error("MissingParameter", "The request must contain the parameter VolumeId")
        v = self.get_volume(vid)
        if self.volume_status(v) == "creating":
            raise EC2Error("IncorrectState", "Volume '%s' is in the 'creating' state." % vid)
        tags = tags_from_spec(p.get("TagSpecification"), ("snapshot",)).get("snapshot", {})
        self._dry_run(p)
        snaps = self.take_snapshots([v], p.get("Description"), {vid: tags},
                                    "CreateSnapshot", rec, fail=rec.get("snapshot_error", False))
        rec["snapshot_ids"] = [snaps[0]["id"]]
        return self.snapshot_item(snaps[0], False)

    def op_DescribeSnapshots(self, p, rec):
        ids = p.get("SnapshotId") or []
        for sid in ids:
            self.get_snapshot(sid)
        with self.lock:
            items = self.region_snapshots()
        if ids:
            items = [s for s in items if s["id"] in ids]
        owners = p.get("Owner") or []
        if owners:
            items = [s for s in items if "self" in owners or s["owner"] in owners]
        if p.get("RestorableBy"):
            items = [s for s in items if any(self.restorable_by(s, r) for r in p["RestorableBy"])]
        now = self.clock()
        table = {
            "snapshot-id": lambda s: [s["id"]],
            "volume-id": lambda s: [s["volume_id"]],
            "status": lambda s: [self.snap_state(s, now)[0]],
            "owner-id": lambda s: [s["owner"]],
            "description": lambda s: [s["description"]],
            "progress": lambda s: [self.snap_state(s, now)[1]],
            "volume-size": lambda s: [s["volume_size"]],
            "encrypted": lambda s: [bool(s.get("encrypted"))],
            "start-time": lambda s: [iso_ms(s["start_time"])],
            "storage-tier": lambda s: ["standard"],
        }
        items = apply_filters(items, p.get("Filter"), table, lambda s: s["tags"])
        self._dry_run(p)
        items.sort(key=lambda s: (s["start_time"], s["id"]))
        if ids and p.get("MaxResults") is not None:
            raise EC2Error("InvalidParameterCombination",
                           "The parameter SnapshotId cannot be used with the parameter maxResults")
        page, nxt = paginate(items, p)
        return {"snapshotSet": [self.snapshot_item(s, False) for s in page], "nextToken": nxt}

    def op_DeleteSnapshot(self, p, rec):
        sid = p.get("SnapshotId")
        if not sid:
            raise EC2Error("MissingParameter", "The request must contain the parameter SnapshotId")
        with self.lock:
            s = self.get_snapshot(sid)
            err = self.delete_refusal(s)
            if err:
                raise err
            self._dry_run(p)
            self.drop_snapshot(s)
        return {"return": True}

    def delete_refusal(self, s, ignore_image=None):
        """Why DeleteSnapshot refuses the snapshot (an EC2Error), or None: in
        use by a registered image (EC2's message), or locked."""
        for img in self.images.values():
            if img["id"] != ignore_image and any(
                    (m.get("ebs") or {}).get("snapshotId") == s["id"] for m in img["bdm"]):
                return EC2Error("InvalidSnapshot.InUse", "The snapshot %s is currently in use "
                                "by %s" % (s["id"], img["id"]))
        return self.lock_refusal(s)

    def drop_snapshot(self, s):
        with self.lock:
            self.snapshots.pop(s["id"], None)
            self.save()
        unlink_quiet(s.get("file"))
