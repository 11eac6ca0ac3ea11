"""Fault rules and latency: errors, slow answers, lost and broken answers,
IMDS faults, the control API's checks."""

import http.client
import json
import os
import threading
import time

from botocore.exceptions import ClientError

from . import support
from .support import (DATA_VOL, ERROR_RE, INSTANCE, Base, err_code, pattern, raw_ec2, read,
                      write_at)

TMP = E = None          # the main emulator and its directory (support.start_world)


def setUpModule():
    global TMP, E
    TMP, E = support.start_world()


# --------------------------------------------------------------------------
# faults and latency
# --------------------------------------------------------------------------

class TestFaults(Base):
    def client(self):
        return E.client()

    def test_error_faults(self):
        c = self.client()
        for kind, code, status in (("throttle", "RequestLimitExceeded", 503),
                                   ("snapshot_rate", "SnapshotCreationPerVolumeRateExceeded", 400),
                                   ("concurrent_limit", "ConcurrentSnapshotLimitExceeded", 400),
                                   ("internal", "InternalError", 500),
                                   ("unavailable_503", "Unavailable", 503),
                                   ("expired_credentials", "RequestExpired", 400),
                                   ("auth_failure", "AuthFailure", 401),
                                   ("unauthorized", "UnauthorizedOperation", 403)):
            n = len(E.state()["snapshots"])
            E.control({"action": "CreateSnapshots", "fault": kind, "count": 1})
            self.assertClientError(c.create_snapshots, code, status,
                                   InstanceSpecification={"InstanceId": INSTANCE})
            self.assertEqual(len(E.state()["snapshots"]), n, kind)   # nothing was copied
            r = c.create_snapshots(InstanceSpecification={"InstanceId": INSTANCE,
                                                          "ExcludeBootVolume": True})
            self.assertEqual(len(r["Snapshots"]), 2, kind)            # one-shot: used up

    def test_raw_throttle_xml(self):
        E.control({"action": "DescribeInstances", "fault": "throttle"})
        st, data, _ = raw_ec2(E, [("Action", "DescribeInstances")])
        self.assertEqual((st, err_code(data)), (503, "RequestLimitExceeded"))
        self.assertRegex(data.decode(), ERROR_RE)

    def test_custom_error_skip_persistent_and_wildcard(self):
        c = self.client()
        E.control({"action": "DescribeVolumes", "fault": "error", "code": "Custom.Thing",
                   "status": 409, "message": "custom message", "skip": 1, "count": 2})
        c.describe_volumes()                                             # skipped
        for _ in range(2):
            err = self.assertClientError(c.describe_volumes, "Custom.Thing", 409)
            self.assertEqual(err["Error"]["Message"], "custom message")
        c.describe_volumes()                                             # used up
        E.control({"action": "*", "fault": "throttle", "count": -1})
        for _ in range(3):
            self.assertClientError(c.describe_volumes, "RequestLimitExceeded", 503)
            self.assertClientError(c.describe_instances, "RequestLimitExceeded", 503)
        E.control({"clear_faults": True})
        c.describe_volumes()

    def test_dry_run_selector(self):
        """"dry_run": false names the real call whatever DryRuns come first;
        true only a DryRun; skip counts only the requests the rule matches."""
        c = self.client()
        spec = {"InstanceId": INSTANCE, "ExcludeBootVolume": True}
        E.control({"action": "CreateSnapshots", "fault": "throttle", "dry_run": False})
        for _ in range(3):      # DryRuns: not this rule's
            self.assertClientError(c.create_snapshots, "DryRunOperation", 412,
                                   InstanceSpecification=spec, DryRun=True)
        self.assertClientError(c.create_snapshots, "RequestLimitExceeded", 503,
                               InstanceSpecification=spec)
        self.assertEqual(len(c.create_snapshots(InstanceSpecification=spec)["Snapshots"]), 2)
        E.control({"action": "CreateSnapshots", "fault": "unauthorized", "dry_run": True,
                   "skip": 1})
        self.assertEqual(len(c.create_snapshots(InstanceSpecification=spec)["Snapshots"]), 2)
        self.assertClientError(c.create_snapshots, "DryRunOperation", 412,     # skipped
                               InstanceSpecification=spec, DryRun=True)
        self.assertClientError(c.create_snapshots, "UnauthorizedOperation", 403,
                               InstanceSpecification=spec, DryRun=True)
        E.control({"action": "CreateSnapshots", "fault": "throttle", "dry_run": "yes"}, expect=400)

    def test_slow(self):
        c = self.client()
        E.control({"action": "DescribeVolumes", "fault": "slow", "delay_ms": 400})
        t0 = time.monotonic()
        c.describe_volumes()
        self.assertGreaterEqual(time.monotonic() - t0, 0.4)
        t0 = time.monotonic()
        c.describe_volumes()
        self.assertLess(time.monotonic() - t0, 0.35)

    def test_drop_without_executing(self):
        n = len(E.state()["snapshots"])
        E.control({"action": "CreateSnapshot", "fault": "drop"})
        with self.assertRaises(http.client.RemoteDisconnected):
            raw_ec2(E, [("Action", "CreateSnapshot"), ("VolumeId", DATA_VOL)])
        self.assertEqual(len(E.state()["snapshots"]), n)
        self.assertEqual(raw_ec2(E, [("Action", "CreateSnapshot"), ("VolumeId", DATA_VOL)])[0], 200)

    def test_drop_after_executing(self):
        n = len(E.state()["snapshots"])
        E.control({"action": "CreateSnapshot", "fault": "drop", "execute": True, "delay_ms": 100})
        t0 = time.monotonic()
        with self.assertRaises(http.client.RemoteDisconnected):
            raw_ec2(E, [("Action", "CreateSnapshot"), ("VolumeId", DATA_VOL)])
        self.assertGreaterEqual(time.monotonic() - t0, 0.1)
        self.assertEqual(len(E.state()["snapshots"]), n + 1)     # orphan snapshot exists

    def test_reset(self):
        E.control({"action": "DescribeVolumes", "fault": "reset"})
        with self.assertRaises(ConnectionResetError) as cm:
            raw_ec2(E, [("Action", "DescribeVolumes")])
        self.assertNotIsInstance(cm.exception, http.client.RemoteDisconnected)

    def test_malformed_variants(self):
        c = self.client()
        E.control({"action": "DescribeVolumes", "fault": "malformed"})
        with self.assertRaises(Exception) as cm:
            c.describe_volumes()
        self.assertNotIsInstance(cm.exception, ClientError)
        E.control({"action": "DescribeVolumes", "fault": "malformed", "variant": "truncated"})
        st, data, _ = raw_ec2(E, [("Action", "DescribeVolumes")])
        self.assertEqual(st, 200)
        self.assertTrue(data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n<DescribeVolumesResponse'))
        self.assertNotIn(b"</DescribeVolumesResponse>", data)
        E.control({"action": "DescribeVolumes", "fault": "malformed", "variant": "garbage"})
        st, data, _ = raw_ec2(E, [("Action", "DescribeVolumes")])
        self.assertEqual(st, 200)
        self.assertNotIn(b"<?xml", data)
        E.control({"action": "DescribeVolumes", "fault": "malformed", "variant": "html"})
        st, data, hdr = raw_ec2(E, [("Action", "DescribeVolumes")])
        self.assertEqual((st, hdr["Content-Type"]), (502, "text/html"))
        E.control({"action": "DescribeVolumes", "fault": "malformed", "variant": "empty"})
        self.assertEqual(raw_ec2(E, [("Action", "DescribeVolumes")])[:2], (200, b""))
        E.control({"action": "DescribeVolumes", "fault": "malformed", "variant": "short"})
        with self.assertRaises(http.client.IncompleteRead):
            raw_ec2(E, [("Action", "DescribeVolumes")])
        # malformed CreateSnapshots still executes (the response is what is lost)
        n = len(E.state()["snapshots"])
        E.control({"action": "CreateSnapshots", "fault": "malformed"})
        raw_ec2(E, [("Action", "CreateSnapshots"), ("InstanceSpecification.InstanceId", INSTANCE)])
        self.assertEqual(len(E.state()["snapshots"]), n + 3)

    def test_latency_after_point_in_time(self):
        """latency_ms: bytes are fixed when the call arrives, the answer comes later."""
        data = os.path.join(TMP, "data.img")
        old = read(data)
        E.control({"latency_ms": 600})
        out = {}

        def call():
            t0 = time.monotonic()
            out["r"] = E.client().create_snapshot(VolumeId=DATA_VOL)
            out["t"] = time.monotonic() - t0
        th = threading.Thread(target=call)
        th.start()
        time.sleep(0.3)
        write_at(data, 0, pattern("during-latency", 4096))
        th.join(10)
        self.assertGreaterEqual(out["t"], 0.6)
        self.assertEqual(read(self.snap_file(out["r"]["SnapshotId"])), old)
        write_at(data, 0, old[:4096])

    def last_logged(self, action):
        with open(os.path.join(E.state_dir, "requests.jsonl")) as f:
            recs = [json.loads(x) for x in f if x.strip()]
        return [r for r in recs if r.get("action") == action][-1]

    def test_latency_mode_floor_and_added(self):
        """latency_ms with latency_mode "floor" (the default): the sleep is what
        is left of L after the emulator's own work, so the answer leaves L
        after the request was read; "added": all of L after the work.  A
        slow fault's delay is on top of L in both."""
        try:
            for mode in ("floor", "added"):
                E.control({"latency_ms": 300, "latency_mode": mode})
                E.client().create_snapshot(VolumeId=DATA_VOL)
                r = self.last_logged("CreateSnapshot")
                self.assertLess(r["service_ms"], 300, r)
                if mode == "floor":
                    self.assertAlmostEqual(r["latency_ms"] + r["service_ms"], 300, delta=1.0)
                    self.assertLess(r["latency_ms"], 300)
                else:
                    self.assertEqual(r["latency_ms"], 300)
                self.assertGreaterEqual(r["duration_ms"], 300)
            E.control([{"latency_ms": 300, "latency_mode": "floor"},
                       {"action": "DescribeVolumes", "fault": "slow", "delay_ms": 200}])
            E.client().describe_volumes()
            r = self.last_logged("DescribeVolumes")
            self.assertGreaterEqual(r["duration_ms"], 500, r)
            with self.assertRaises(Exception):
                E.control({"latency_mode": "sideways"})
        finally:
            E.reset()

    def test_latency_before_point_in_time(self):
        """latency_before_ms: the point in time is after the delay."""
        data = os.path.join(TMP, "data.img")
        old = read(data)
        E.control({"latency_before_ms": 600})
        out = {}

        def call():
            out["r"] = E.client().create_snapshot(VolumeId=DATA_VOL)
        th = threading.Thread(target=call)
        th.start()
        time.sleep(0.3)
        write_at(data, 0, pattern("before-pit", 4096))
        new = read(data)
        th.join(10)
        self.assertEqual(read(self.snap_file(out["r"]["SnapshotId"])), new)
        write_at(data, 0, old[:4096])

    def test_reset_clears_faults_and_latency(self):
        E.control([{"latency_ms": 500}, {"action": "*", "fault": "internal", "count": -1}])
        self.assertEqual(len(E.state()["faults"]), 1)
        E.reset()
        t0 = time.monotonic()
        E.client().describe_volumes()
        self.assertLess(time.monotonic() - t0, 0.4)
        self.assertEqual(E.state()["faults"], [])

    def test_control_validation(self):
        for bad in ({"action": "X", "fault": "nope"}, {"fault": "throttle"},
                    {"latency_ms": -1}, {"no_such_knob": 1}, {"imds": "sideways"},
                    {"action": "X", "fault": "slow"}, {"action": "X", "fault": "throttle", "count": 0},
                    {"action": "X", "fault": "malformed", "variant": "weird"}, [1]):
            self.assertIn("error", E.control(bad, expect=400), bad)
        st, data, _ = E.http("POST", "/_emulator/control", b"{not json")
        self.assertEqual(st, 400)
        self.assertEqual(E.state()["faults"], [])
