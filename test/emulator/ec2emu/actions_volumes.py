"""CreateVolume, AttachVolume, DetachVolume, DeleteVolume, and the life of a
volume: creating -> available, attaching -> attached, detaching (busy while
its device is mounted) -> available.  With the config key device_link_dir,
an attached volume is a real loop device on its file, linked as
DIR/nvme-Amazon_Elastic_Block_Store_vol<hex> (the name udev gives an EBS
volume under /dev/disk/by-id on a Nitro instance)."""

import json
import logging
import os
import re
import subprocess

from .config import VOLUME_TYPES, volume_performance
from .errors import EC2Error, check_id, not_found
from .query import tags_from_spec
from .render import tag_set
from .util import atomic_write, iso_ms, new_id, unlink_quiet
from .volumes import copy_volume

log = logging.getLogger("ec2emu")

GIB = 1 << 30
# Device names EC2 takes for an EBS volume on a Linux instance.
DEVICE_RE = re.compile(r"^/dev/(sd[a-z]|sd[a-z][1-9]|xvd[a-z]|xvd[a-z][a-z]|xvd[a-z][1-9])$")
LINK_PREFIX = "nvme-Amazon_Elastic_Block_Store_"
ATTACHED_STATES = ("attaching", "attached", "detaching", "busy")


def device_link_name(volume_id):
    """The /dev/disk/by-id name of an EBS volume on a Nitro instance: the NVMe
    model, "_", and the serial, which is the volume id without its dash."""
    return LINK_PREFIX + volume_id.replace("-", "")


def _losetup(*args):
    r = subprocess.run(["losetup"] + list(args), capture_output=True, text=True, timeout=30)
    if r.returncode != 0:
        raise OSError("losetup %s: %s" % (" ".join(args), r.stderr.strip()))
    return r.stdout.strip()


def loop_backing_file(dev):
    """The file behind a loop device, None when it is not set up."""
    name = os.path.basename(dev)
    try:
        with open("/sys/block/%s/loop/backing_file" % name) as f:
            return f.read().strip()
    except OSError:
        return None


def device_busy(dev):
    """Is the block device mounted (in this mount namespace) or held by
    another device (device mapper, md)?"""
    try:
        rdev = os.stat(dev).st_rdev
    except OSError:
        return False
    want = "%d:%d" % (os.major(rdev), os.minor(rdev))
    try:
        with open("/proc/self/mountinfo") as f:
            if any(line.split()[2] == want for line in f if len(line.split()) > 2):
                return True
    except OSError:
        pass
    try:
        return bool(os.listdir("/sys/block/%s/holders" % os.path.basename(dev)))
    except OSError:
        return False


class VolumeActions:
    """The volume actions of the Emulator (self.volumes, the created volumes,
    and self.cfg["volumes"], the instance's own, under self.lock)."""

    # ---- the volumes ---------------------------------------------------------
    def all_volumes(self):
        return list(self.cfg["volumes"].values()) + list(self.volumes.values())

    def get_volume(self, vid):
        check_id("vol", vid)
        v = self.cfg["volumes"].get(vid) or self.volumes.get(vid)
        if v is None:
            raise not_found("vol", vid)
        return v

    def volume_status(self, v):
        if v.get("state") == "creating":
            return "creating"
        return "in-use" if v.get("attachment") else "available"

    def _delay(self, name):
        return float(self.settings.get(name) or 0)

    def _device_in_use(self, device):
        if device == self.cfg["root_device_name"]:
            return True
        return any((v.get("attachment") or {}).get("device") == device
                   and v["attachment"]["instance_id"] == self.cfg["instance_id"]
                   for v in self.all_volumes())

    # ---- state changes over time -------------------------------------------
    def advance_volumes(self):
        """Move volumes and attachments on whose time has come; plug and
        unplug their devices.  Runs before every action and from a ticker."""
        now = self.now()
        changed = False
        with self.lock:
            for v in self.all_volumes():
                if v.get("state") == "creating" and now >= v["ready_at"]:
                    v["state"] = "available"
                    changed = True
                a = v.get("attachment")
                if not a or now < a.get("ready_at", 0):
                    continue
                if a["state"] == "attaching":
                    self._plug(v)
                    a["state"] = "attached"
                    changed = True
                elif a["state"] in ("detaching", "busy"):
                    if self._unplug(v, a.get("force")):
                        v["attachment"] = None
                        v["device_name"] = None if not v.get("config") else v["device_name"]
                        changed = True
                    elif a["state"] != "busy":
                        a["state"] = "busy"
                        changed = True
            if changed:
                self.save()

    def _plug(self, v):
        """The volume's device appears: a loop device on its file and the
        by-id link (only with device_link_dir, only for created volumes)."""
        a = v["attachment"]
        link_dir = self.cfg.get("device_link_dir")
        if not link_dir or v.get("config") or not v.get("file"):
            return
        try:
            loop = a.get("loop")
            if not (loop and loop_backing_file(loop) == os.path.realpath(v["file"])):
                loop = _losetup("--find", "--show", v["file"])
            self.loop_devices[loop] = {"volume_id": v["id"], "file": v["file"]}
            a["loop"] = loop
            os.makedirs(link_dir, exist_ok=True)
            link = os.path.join(link_dir, device_link_name(v["id"]))
            if os.path.lexists(link):
                os.unlink(link)
            os.symlink(loop, link)
            a["link"] = link
            self.loop_devices[loop]["link"] = link
            log.info("volume %s attached as %s (%s)", v["id"], loop, link)
        except OSError as e:
            a["device_error"] = str(e)
            log.error("volume %s: no device: %s", v["id"], e)

    def _unplug(self, v, force=False):
        """The device goes away; False while it is mounted (EC2's `busy`)
        unless forced, which detaches the loop device lazily."""
        a = v["attachment"]
        loop = a.get("loop")
        if loop and device_busy(loop) and not force:
            return False
        self._release_loop(loop, a.get("link"))
        a.pop("loop", None)
        a.pop("link", None)
        return True

    def _release_loop(self, loop, link):
        if link and os.path.islink(link):
            try:
                os.unlink(link)
            except OSError:
                pass
        if not loop:
            return
        busy = device_busy(loop)
        try:
            _losetup("-d", loop)        # a busy device is cleared at its last close
        except OSError as e:
            log.warning("%s", e)
        rec = self.loop_devices.get(loop)
        if rec is not None:
            rec.pop("link", None)
            if not busy or loop_backing_file(loop) is None:
                del self.loop_devices[loop]

    def restore_devices(self):
        """At start: attached volumes get their devices back (the emulator
        was restarted); loop devices whose volumes are gone are released."""
        with self.lock:
            for v in self.volumes.values():
                a = v.get("attachment")
                if a and a["state"] in ("attached", "detaching", "busy"):
                    self._plug(v)
            for loop, rec in list(self.loop_devices.items()):
                v = self.volumes.get(rec["volume_id"])
                if (v is None or not v.get("attachment")
                        or v["attachment"].get("loop") != loop):
                    self._release_loop(loop, rec.get("link"))
            self.save()

    def release_devices(self):
        """At exit: every loop device the emulator made is detached and its
        link removed.  The attachments stay: a restart plugs them again."""
        with self.lock:
            for loop, rec in list(self.loop_devices.items()):
                self._release_loop(loop, rec.get("link"))
            for v in self.volumes.values():
                if v.get("attachment"):
                    v["attachment"].pop("link", None)
            self.save()

    # ---- the XML -------------------------------------------------------------
    def attachment_item(self, v):
        a = v["attachment"]
        return {"volumeId": v["id"], "instanceId": a["instance_id"], "device": a["device"],
                "status": a["state"], "attachTime": iso_ms(a["attach_time"]),
                "deleteOnTermination": v["delete_on_termination"]}

    def volume_item(self, v):
        d = {"volumeId": v["id"], "size": v["size_gib"], "snapshotId": v.get("snapshot_id", ""),
             "availabilityZone": v.get("availability_zone") or self.cfg["availability_zone"],
             "status": self.volume_status(v),
             "createTime": iso_ms(v.get("create_time", self.cfg["launch_time"])),
             "attachmentSet": [self.attachment_item(v)] if v.get("attachment") else [],
             "tagSet": tag_set(v["tags"]), "volumeType": v["volume_type"],
             "iops": v["iops"], "throughput": v["throughput"],
             "encrypted": v["encrypted"], "multiAttachEnabled": False}
        return d

    # ---- actions -------------------------------------------------------------
    def _volume_params(self, p, size_floor):
        vtype = p.get("VolumeType", "gp2")          # EC2's default
        if vtype not in VOLUME_TYPES:
            raise EC2Error("InvalidParameterValue",
                           "Value (%s) for parameter volumeType is invalid. Expected: '%s'."
                           % (vtype, ", ".join(VOLUME_TYPES)))
        lo, hi, _, _ = VOLUME_TYPES[vtype]
        size = p.get("Size", size_floor)
        if size is None:
            raise EC2Error("MissingParameter",
                           "The request must contain the parameter size or snapshotId")
        if size_floor is not None and size < size_floor:
            raise EC2Error("InvalidParameterValue",
                           "Volume of %dGiB is too small; minimum is %dGiB (the size of "
                           "snapshot %s)." % (size, size_floor, p["SnapshotId"]))
        if not lo <= size <= hi:
            raise EC2Error("InvalidParameterValue",
                           "Volume of %dGiB is not valid for %s volumes: the size must be "
                           "between %d and %d GiB." % (size, vtype, lo, hi))
        try:
            iops, throughput = volume_performance(vtype, size, p.get("Iops"), p.get("Throughput"))
        except ValueError as e:
            msg = str(e)
            code = ("MissingParameter" if "required" in msg else
                    "InvalidParameterCombination" if "not supported" in msg else
                    "InvalidParameterValue")
            raise EC2Error(code, msg[0].upper() + msg[1:] + ".")
        return vtype, size, iops, throughput

    def op_CreateVolume(self, p, rec):
        az = p.get("AvailabilityZone")
        if p.get("AvailabilityZoneId"):
            if p["AvailabilityZoneId"] != self.cfg["availability_zone_id"]:
                raise EC2Error("InvalidZone.NotFound",
                               "The zone ID '%s' does not exist." % p["AvailabilityZoneId"])
            if az and az != self.cfg["availability_zone"]:
                raise EC2Error("InvalidParameterCombination",
                               "AvailabilityZone and AvailabilityZoneId name different zones")
            az = self.cfg["availability_zone"]
        if not az:
            raise EC2Error("MissingParameter",
                           "The request must contain the parameter availabilityZone")
        if not re.match(r"^%s[a-f]$" % re.escape(self.cfg["region"]), az):
            raise EC2Error("InvalidZone.NotFound", "The zone '%s' does not exist." % az)
        snap = None
        if p.get("SnapshotId"):
            snap = self.get_snapshot(p["SnapshotId"])
            state = self.snap_state(snap)[0]
            if state != "completed":
                raise EC2Error("IncorrectState", "Snapshot is in invalid state - %s" % state)
        vtype, size, iops, throughput = self._volume_params(
            p, snap["volume_size"] if snap else None)
        if p.get("MultiAttachEnabled"):
            raise EC2Error("InvalidParameterValue",
                           "The emulator does not model Multi-Attach volumes")
        tags = tags_from_spec(p.get("TagSpecification"), ("volume",)).get("volume", {})
        self._dry_run(p)
        vid = new_id("vol")
        path = None
        if snap is None or snap.get("file"):
            os.makedirs(self.vol_dir, exist_ok=True)
            path = os.path.join(self.vol_dir, vid + ".img")
            try:
                if snap is not None:
                    info = copy_volume(snap["file"], path)
                    rec["copies"] = [{"snapshot_id": snap["id"], "volume_id": vid,
                                      "ms": info["ms"], "method": info["method"],
                                      "bytes": info["bytes"]}]
                    rec["copy_ms"] = info["ms"]
                with open(path, "ab") as f:         # grown, sparse, to Size GiB
                    if f.seek(0, os.SEEK_END) < size * GIB:
                        f.truncate(size * GIB)
            except OSError as e:
                try:
                    os.unlink(path)
                except OSError:
                    pass
                raise EC2Error("InternalError", "emulator could not create the file of %s: %s"
                               % (vid, e.strerror))
        now = self.now()
        v = {"id": vid, "size_gib": size, "snapshot_id": snap["id"] if snap else "",
             "availability_zone": az, "create_time": now, "state": "creating",
             "ready_at": now + self._delay("volume_create_delay_s"),
             "volume_type": vtype, "iops": iops, "throughput": throughput,
             "encrypted": bool(p.get("Encrypted", False)), "tags": tags, "file": path,
             "backing_file": path, "device_name": None, "root": False,
             "delete_on_termination": False, "attachment": None, "created": True}
        with self.lock:
            self.volumes[vid] = v
            self.save()
        rec["volume_id"] = vid
        return self.volume_item(v)

    def op_AttachVolume(self, p, rec):
        for k in ("VolumeId", "InstanceId", "Device"):
            if not p.get(k):
                raise EC2Error("MissingParameter",
                               "The request must contain the parameter %s" % k)
        iid, device = p["InstanceId"], p["Device"]
        check_id("i", iid)
        with self.lock:
            v = self.get_volume(p["VolumeId"])
            if iid != self.cfg["instance_id"]:
                raise not_found("i", iid)
            if not DEVICE_RE.match(device):
                raise EC2Error("InvalidParameterValue",
                               "Invalid value '%s' for unixDevice." % device)
            if v.get("attachment"):
                raise EC2Error("VolumeInUse", "%s is already attached to an instance" % v["id"])
            if self.volume_status(v) != "available":
                raise EC2Error("IncorrectState", "%s is not 'available'." % v["id"])
            if (v.get("availability_zone") or self.cfg["availability_zone"]) != \
                    self.cfg["availability_zone"]:
                raise EC2Error("InvalidVolume.ZoneMismatch",
                               "The volume '%s' is not in the same availability zone as "
                               "instance '%s'" % (v["id"], iid))
            if self._device_in_use(device):
                raise EC2Error("InvalidParameterValue",
                               "Invalid value '%s' for unixDevice. Attachment point %s is "
                               "already in use" % (device, device))
            self._dry_run(p)
            now = self.now()
            v["attachment"] = {"instance_id": iid, "device": device, "attach_time": now,
                               "state": "attaching",
                               "ready_at": now + self._delay("volume_attach_delay_s")}
            v["device_name"] = device
            self.save()
            return self.attachment_item(v)

    def op_DetachVolume(self, p, rec):
        if not p.get("VolumeId"):
            raise EC2Error("MissingParameter", "The request must contain the parameter VolumeId")
        with self.lock:
            v = self.get_volume(p["VolumeId"])
            a = v.get("attachment")
            if p.get("InstanceId"):
                check_id("i", p["InstanceId"])
            if not a:
                raise EC2Error("IncorrectState", "Volume '%s' is in the '%s' state."
                               % (v["id"], self.volume_status(v)))
            if p.get("InstanceId") and p["InstanceId"] != a["instance_id"]:
                raise EC2Error("InvalidAttachment.NotFound",
                               "The volume '%s' is not attached to instance '%s'."
                               % (v["id"], p["InstanceId"]))
            if p.get("Device") and p["Device"] != a["device"]:
                raise EC2Error("InvalidAttachment.NotFound",
                               "The volume '%s' is not attached at '%s'." % (v["id"], p["Device"]))
            if v.get("root"):
                raise EC2Error("IncorrectState", "Unable to detach root volume '%s' from "
                               "instance '%s'" % (v["id"], a["instance_id"]))
            force = bool(p.get("Force"))
            if v.get("config") and not force:
                raise EC2Error("OperationNotPermitted",
                               "The emulator does not detach the instance's configured volume "
                               "%s without Force=true" % v["id"])
            if a["state"] == "attaching":
                raise EC2Error("IncorrectState", "Volume '%s' is in the 'attaching' state."
                               % v["id"])
            self._dry_run(p)
            if a["state"] == "attached":
                a["state"] = "detaching"
                a["ready_at"] = self.now() + self._delay("volume_detach_delay_s")
            a["force"] = a.get("force") or force
            item = self.attachment_item(v)
            self.save()
        return item

    def op_DeleteVolume(self, p, rec):
        if not p.get("VolumeId"):
            raise EC2Error("MissingParameter", "The request must contain the parameter VolumeId")
        with self.lock:
            v = self.get_volume(p["VolumeId"])
            if v.get("config"):
                if v.get("attachment"):
                    raise EC2Error("VolumeInUse", "Volume %s is currently attached to %s"
                                   % (v["id"], v["attachment"]["instance_id"]))
                raise EC2Error("OperationNotPermitted",
                               "The emulator does not delete the instance's configured "
                               "volume %s" % v["id"])
            if v.get("attachment"):
                raise EC2Error("VolumeInUse", "Volume %s is currently attached to %s"
                               % (v["id"], v["attachment"]["instance_id"]))
            if v["state"] == "creating":
                raise EC2Error("IncorrectState", "Volume '%s' is in the 'creating' state."
                               % v["id"])
            self._dry_run(p)
            del self.volumes[v["id"]]
            self.save()
        unlink_quiet(v.get("file"))
        return {"return": True}


def _mounts_of(dev):
    """Mount points of the block device dev in this namespace, deepest first."""
    try:
        rdev = os.stat(dev).st_rdev
    except OSError:
        return []
    want = "%d:%d" % (os.major(rdev), os.minor(rdev))
    out = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            if len(fields) > 4 and fields[2] == want:
                out.append(re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)),
                                  fields[4]))
    return sorted(out, key=len, reverse=True)


def release_state_devices(state_dir):
    """After an emulator stopped, even by SIGKILL: unmount whatever is mounted
    from the loop devices its state.json records, detach those that still
    back a volume's file, remove their links, and record that in state.json.
    Returns a list of what was done (for logs)."""
    path = os.path.join(state_dir, "state.json")
    try:
        with open(path) as f:
            st = json.load(f)
    except (OSError, ValueError):
        return []
    done = []
    records = dict(st.get("loop_devices") or {})
    for v in (st.get("volumes") or {}).values():
        a = v.get("attachment") or {}
        if a.get("loop"):
            records.setdefault(a["loop"], {"volume_id": v["id"], "file": v.get("file"),
                                           "link": a.get("link")})
    for loop, rec in records.items():
        link = rec.get("link")
        if link and os.path.islink(link) and os.readlink(link) == loop:
            os.unlink(link)
            done.append("removed %s" % link)
        if not rec.get("file") or loop_backing_file(loop) != os.path.realpath(rec["file"]):
            continue                        # gone, or someone else's device now
        for mnt in _mounts_of(loop):
            r = subprocess.run(["umount", mnt], capture_output=True, text=True)
            done.append("umount %s: %s" % (mnt, r.returncode == 0 and "ok" or r.stderr.strip()))
        try:
            _losetup("-d", loop)
            done.append("losetup -d %s" % loop)
        except OSError as e:
            done.append(str(e))
    st["loop_devices"] = {}
    for v in (st.get("volumes") or {}).values():
        if v.get("attachment"):
            v["attachment"].pop("loop", None)
            v["attachment"].pop("link", None)
    atomic_write(path, json.dumps(st, indent=1, sort_keys=True))
    return done
