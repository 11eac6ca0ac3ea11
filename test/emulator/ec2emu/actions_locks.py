"""LockSnapshot, UnlockSnapshot and DescribeLockedSnapshots: EBS snapshot
lock, on the resources' clock (Emulator.clock()).

EC2 API Reference, LockSnapshot: governance or compliance mode; LockDuration
(1-36500 days) or ExpirationDate, not both; CoolOffPeriod (1-72 hours) for
compliance only.  A governance lock, or a compliance lock in its cooling-off
period, can be changed (mode, duration) or removed; a compliance lock after
it can only be extended.  A lock's duration starts when the snapshot
completes (lockDurationStartTime).  States: compliance-cooloff, governance,
compliance, expired.  A locked snapshot can't be deleted."""

from .errors import EC2Error
from .query import apply_filters, paginate
from .util import iso_ms, parse_iso

DAY = 86400.0
LOCK_STATES = ("compliance-cooloff", "governance", "compliance", "expired")


class LockActions:
    """The lock actions of the Emulator (a snapshot's "lock" entry)."""

    def _lock_times(self, s, now):
        """(duration start, expiry) of the snapshot's lock."""
        lk = s["lock"]
        start = max(lk["created"], self.completed_at(s))
        if lk.get("duration_days") is not None:
            return start, start + lk["duration_days"] * DAY
        return start, lk["expires"]

    def lock_state(self, s, now=None):
        now = self.clock() if now is None else now
        lk = s.get("lock")
        if not lk:
            return None
        _, expires = self._lock_times(s, now)
        if now >= expires:
            return "expired"
        if lk["mode"] == "governance":
            return "governance"
        if lk.get("cool_off_expires") and now < lk["cool_off_expires"]:
            return "compliance-cooloff"
        return "compliance"

    def lock_info(self, s, now=None):
        """The LockedSnapshotsInfo (and LockSnapshot response) members."""
        now = self.clock() if now is None else now
        lk = s["lock"]
        start, expires = self._lock_times(s, now)
        d = {"ownerId": s["owner"], "snapshotId": s["id"], "lockState": self.lock_state(s, now),
             "lockDuration": lk.get("duration_days"),
             "coolOffPeriod": lk.get("cool_off_hours"),
             "coolOffPeriodExpiresOn": (iso_ms(lk["cool_off_expires"])
                                        if lk.get("cool_off_expires") else None),
             "lockCreatedOn": iso_ms(lk["created"]), "lockExpiresOn": iso_ms(expires),
             "lockDurationStartTime": iso_ms(start)}
        return d

    def lock_refusal(self, s):
        """DeleteSnapshot's error for a locked snapshot, or None.  The code is
        the emulator's choice: the EC2 reference does not list it."""
        st = self.lock_state(s)
        if st in (None, "expired"):
            return None
        return EC2Error("SnapshotLocked",
                        "The snapshot %s is locked in %s mode and can't be deleted."
                        % (s["id"], "governance" if st == "governance" else "compliance"))

    # ---- actions -------------------------------------------------------------
    def _lock_request(self, p, now):
        mode = p.get("LockMode")
        if not mode:
            raise EC2Error("MissingParameter", "The request must contain the parameter LockMode")
        if mode not in ("governance", "compliance"):
            raise EC2Error("InvalidParameterValue",
                           "Value (%s) for parameter LockMode is invalid. Expected: "
                           "'governance, compliance'." % mode)
        days, date = p.get("LockDuration"), p.get("ExpirationDate")
        if days is not None and date is not None:
            raise EC2Error("InvalidParameterCombination",
                           "Specify either LockDuration or ExpirationDate, not both.")
        if days is None and date is None:
            raise EC2Error("MissingParameter",
                           "The request must contain the parameter LockDuration or "
                           "ExpirationDate")
        expires = None
        if days is not None and not 1 <= days <= 36500:
            raise EC2Error("InvalidParameterValue",
                           "Value (%d) for parameter LockDuration is invalid. It must be "
                           "between 1 and 36500 days." % days)
        if date is not None:
            try:
                expires = parse_iso(date)
            except ValueError:
                raise EC2Error("InvalidParameterValue",
                               "Value (%s) for parameter ExpirationDate is invalid." % date)
            if expires <= now or expires > now + 36500 * DAY:
                raise EC2Error("InvalidParameterValue",
                               "ExpirationDate must be in the future and at most 36500 days "
                               "from now.")
        cool = p.get("CoolOffPeriod")
        if cool is not None:
            if mode != "compliance":
                raise EC2Error("InvalidParameterCombination",
                               "CoolOffPeriod can be specified only with the compliance "
                               "lock mode.")
            if not 1 <= cool <= 72:
                raise EC2Error("InvalidParameterValue",
                               "Value (%d) for parameter CoolOffPeriod is invalid. It must be "
                               "between 1 and 72 hours." % cool)
        return mode, days, expires, cool

    def op_LockSnapshot(self, p, rec):
        sid = p.get("SnapshotId")
        if not sid:
            raise EC2Error("MissingParameter", "The request must contain the parameter SnapshotId")
        with self.lock:
            s = self.get_snapshot(sid)
            now = self.clock()
            mode, days, expires, cool = self._lock_request(p, now)
            if self.snap_state(s, now)[0] == "error":
                raise EC2Error("IncorrectState", "Snapshot %s is in invalid state - error" % sid)
            old = self.lock_state(s, now)
            new = {"mode": mode, "duration_days": days, "expires": expires,
                   "cool_off_hours": cool,
                   "cool_off_expires": now + cool * 3600.0 if cool else None,
                   "created": now}
            if old in ("governance", "compliance-cooloff", "compliance"):
                # a change of the lock: its duration still counts from its start
                new["created"] = s["lock"]["created"]
            if old == "compliance":
                # after the cooling-off period: only a longer lock, same mode
                _, old_exp = self._lock_times(s, now)
                _, new_exp = self._lock_times(dict(s, lock=new), now)
                if mode != "compliance" or cool is not None or new_exp < old_exp:
                    raise EC2Error("IncorrectState",
                                   "The snapshot %s is locked in compliance mode and its "
                                   "cooling-off period has expired: its lock duration can only "
                                   "be increased." % sid)
                new["cool_off_hours"] = s["lock"].get("cool_off_hours")
                new["cool_off_expires"] = s["lock"].get("cool_off_expires")
            elif old == "compliance-cooloff":
                if mode == "compliance" and cool is None:
                    new["cool_off_hours"] = s["lock"].get("cool_off_hours")
                    new["cool_off_expires"] = s["lock"].get("cool_off_expires")
            self._dry_run(p)
            s["lock"] = new
            self.save()
            info = self.lock_info(s, now)
        info.pop("ownerId")
        return info

    def op_UnlockSnapshot(self, p, rec):
        sid = p.get("SnapshotId")
        if not sid:
            raise EC2Error("MissingParameter", "The request must contain the parameter SnapshotId")
        with self.lock:
            s = self.get_snapshot(sid)
            st = self.lock_state(s)
            if st in (None, "expired"):
                raise EC2Error("IncorrectState", "The snapshot %s is not locked." % sid)
            if st == "compliance":
                raise EC2Error("IncorrectState",
                               "The snapshot %s is locked in compliance mode and its cooling-off "
                               "period has expired: it can't be unlocked." % sid)
            self._dry_run(p)
            s.pop("lock", None)
            self.save()
        return {"snapshotId": sid}

    def op_DescribeLockedSnapshots(self, p, rec):
        ids = p.get("SnapshotId") or []
        with self.lock:
            for sid in ids:
                self.get_snapshot(sid)
            now = self.clock()
            items = [s for s in self.region_snapshots()
                     if s.get("lock") and (not ids or s["id"] in ids)]
            for f in p.get("Filter") or []:
                if f.get("Name") == "lock-state":
                    for v in f.get("Value") or []:
                        if v not in LOCK_STATES:
                            raise EC2Error("InvalidParameterValue",
                                           "Value (%s) for filter lock-state is invalid. "
                                           "Expected: '%s'." % (v, ", ".join(LOCK_STATES)))
            items = apply_filters(items, p.get("Filter"),
                                  {"lock-state": lambda s: [self.lock_state(s, now)]},
                                  lambda s: {})
            self._dry_run(p)
            items.sort(key=lambda s: (s["start_time"], s["id"]))
            page, nxt = paginate(items, p)
            return {"snapshotSet": [self.lock_info(s, now) for s in page], "nextToken": nxt}
