"""
benchlib.py - the pieces of the side-by-side benchmark (side_by_side.py):

  * statistics;
  * taking one snapshot three ways against the same World: ami_snapshot(),
    and the two documented script baselines (fsfreeze + the AWS CLI, one
    CreateSnapshots call or one CreateSnapshot call per volume);
  * reading the timings the helper, the emulator and PostgreSQL write down,
    to split one ami_snapshot() call into its phases;
  * the helper's memory (its whole process tree);
  * pgbench's per-transaction logs.

All times are wall-clock seconds (time.time()) unless a name ends in _ms.
"""

import datetime
import glob
import json
import os
import re
import statistics
import subprocess
import threading
import time

from world import INSTANCE_ID, PGBIN, REGION
from e2e import round_trips

AWS = "/usr/bin/aws"


# ------------------------------------------------------------------ stats
def pct(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    values = sorted(values)
    k = max(0, min(len(values) - 1, int(round(p / 100.0 * (len(values) - 1)))))
    return values[k]


def summary(values):
    """median, p95, max of a list; Nones when it is empty."""
    if not values:
        return {"median": None, "p95": None, "max": None, "n": 0}
    return {"median": statistics.median(values), "p95": pct(values, 95),
            "max": max(values), "n": len(values)}


# ---------------------------------------------------------- ami_snapshot()
SNAPSHOT_SQL = """\\set ON_ERROR_STOP 1
SELECT extract(epoch FROM clock_timestamp()) AS t0 \\gset
SELECT request_id AS rid, frozen_ms FROM ami_snapshot(:'name', freeze => :freeze) \\gset
SELECT :'rid', :frozen_ms, extract(epoch FROM started_at), extract(epoch FROM finished_at),
  :t0, extract(epoch FROM clock_timestamp())
  FROM ami_snapshot_history WHERE request_id = :'rid';
"""


def snapshot_ours(w, name, freeze=True):
    """One ami_snapshot() call: request id, frozen_ms and the history
    row's started_at/finished_at, plus the client's own call window."""
    t0 = time.time()
    r = w.as_postgres(w.psql_cmd() + ["-v", "name=" + name,
                                      "-v", "freeze=" + ("true" if freeze else "false"),
                                      "-f", "-"], input=SNAPSHOT_SQL, timeout=300)
    t1 = time.time()
    rid, frozen, started, finished, s0, s1 = r.stdout.strip().split("|")
    # statement: the server's clock before the SELECT ami_snapshot() and
    # after its result reached psql: the call as the application waits for
    # it (plus one local round trip), the final history write included.
    return {"method": "ours", "request_id": rid, "frozen_ms": float(frozen),
            "started_at": float(started), "finished_at": float(finished),
            "statement": (float(s0), float(s1)), "call": (t0, t1)}


# ------------------------------------------------------- script baselines
def aws_env(w):
    """The AWS CLI's environment: no credentials of this machine (no AWS_*
    variables, no ~/.aws): it gets the emulator's role credentials from the
    emulator's IMDS, exactly as on an EC2 instance.  Nothing is printed."""
    home = w.path("aws-cli-home")
    os.makedirs(home, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update({"HOME": home,
                "AWS_CONFIG_FILE": os.path.join(home, "config"),
                "AWS_SHARED_CREDENTIALS_FILE": os.path.join(home, "credentials"),
                "AWS_EC2_METADATA_SERVICE_ENDPOINT": w.emu_url + "/",
                "AWS_DEFAULT_REGION": REGION,
                "AWS_PAGER": ""})
    return env


def aws_cli(w, args):
    cmd = [AWS, "ec2"] + args + ["--endpoint-url", w.emu_url, "--region", REGION,
                                 "--output", "json"]
    r = subprocess.run(cmd, env=aws_env(w), capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        raise RuntimeError("aws %s failed (%d): %s" % (args[0], r.returncode, r.stderr[-500:]))
    return json.loads(r.stdout)


def cli_create_snapshots(w, name):
    """What the AWS-documented pre/post script does while frozen: one
    instance-wide CreateSnapshots call."""
    out = aws_cli(w, ["create-snapshots", "--description", name, "--instance-specification",
                      "InstanceId=%s,ExcludeBootVolume=true" % INSTANCE_ID])
    return [s["SnapshotId"] for s in out["Snapshots"]]


def cli_create_snapshot_per_volume(w, name):
    """ec2-consistent-snapshot style: one CreateSnapshot call per volume,
    one after the other."""
    return [aws_cli(w, ["create-snapshot", "--volume-id", v.vol_id,
                        "--description", name])["SnapshotId"] for v in w.volumes]


def _fsfreeze(flag, mount):
    r = subprocess.run(["fsfreeze", flag, mount], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("fsfreeze %s %s: %s" % (flag, mount, r.stderr.strip()))


def snapshot_script(w, name, per_volume):
    """CHECKPOINT; sync; fsfreeze -f each filesystem; the AWS CLI; fsfreeze
    -u each.  The window is measured here: first fsfreeze -f started to the
    last fsfreeze -u returned.  Every filesystem frozen is thawed, also when
    the CLI or a freeze fails."""
    w.psql("CHECKPOINT")
    subprocess.run(["sync"], check=True)
    mounts = [v.mount for v in w.volumes]
    frozen = []
    t0 = time.time()
    try:
        for m in mounts:
            _fsfreeze("-f", m)
            frozen.append(m)
        t_cli = time.time()
        call = cli_create_snapshot_per_volume if per_volume else cli_create_snapshots
        snaps = call(w, name)
        t_cli_end = time.time()
    finally:
        thaw_errors = []
        for m in reversed(frozen):
            try:
                _fsfreeze("-u", m)
            except RuntimeError as e:
                thaw_errors.append(str(e))
        t1 = time.time()
        if thaw_errors:  # World.close() thaws again; say it loudly
            raise RuntimeError("; ".join(thaw_errors))
    return {"method": "cli-volume" if per_volume else "cli-instance", "snapshots": snaps,
            "frozen_ms": (t1 - t0) * 1000.0, "window": (t0, t1),
            "cli_ms": (t_cli_end - t_cli) * 1000.0}


METHODS = {
    "ours": lambda w, name: snapshot_ours(w, name),
    "cli-instance": lambda w, name: snapshot_script(w, name, per_volume=False),
    "cli-volume": lambda w, name: snapshot_script(w, name, per_volume=True),
}
METHOD_NAMES = {"ours": "ami_snapshot()",
                "cli-instance": "fsfreeze + aws ec2 create-snapshots",
                "cli-volume": "fsfreeze + aws ec2 create-snapshot per volume",
                "nofreeze": "ami_snapshot(freeze => false)",
                "none": "no snapshot"}


# ------------------------------------------------------ timing sources
HELPER_EVENTS = [  # (event, pattern after "request <rid>")
    ("prepare", re.compile(r" from pid \d+: prepare ")),
    ("prepared", re.compile(r": prepared: ")),
    ("freezing", re.compile(r": prepared -> freezing")),
    ("thawed", re.compile(r": writes frozen for ([\d.]+) ms \(CreateSnapshots ([\d.]+) ms")),
    ("fifreeze", re.compile(r": \S+: FIFREEZE took ([\d.]+) ms")),
    ("pending", re.compile(r": snapshots pending: ")),
    ("done", re.compile(r": done \(stop lsn ")),
]
HELPER_LINE = re.compile(r"^(\d+\.\d+) <\d>\w+: request ([^ :]+)(.*)$")


def helper_events(log_path):
    """{request_id: {event: time}} from a timestamped helper log (World with
    helper_log_timestamps).  The time is when the line was read from the
    helper's pipe (late by the reader's scheduling); "thawed" also carries
    the helper's own numbers, "fifreeze_ms" each filesystem's FIFREEZE."""
    out = {}
    with open(log_path, errors="replace") as f:
        for line in f:
            m = HELPER_LINE.match(line)
            if not m:
                continue
            ts, rid, rest = float(m.group(1)), m.group(2), m.group(3)
            for ev, pat in HELPER_EVENTS:
                pm = pat.match(rest)
                if pm:
                    d = out.setdefault(rid, {})
                    d[ev] = ts
                    if ev == "fifreeze":
                        d.setdefault("fifreeze_ms", []).append(float(pm.group(1)))
                    if ev == "thawed":
                        d["frozen_ms"] = float(pm.group(1))
                        d["call_ms"] = float(pm.group(2))
    return out


def helper_fifreeze_ms(log_path):
    """Per-filesystem FIFREEZE durations from the helper's debug lines."""
    with open(log_path, errors="replace") as f:
        return [float(m.group(1)) for line in f
                for m in [re.search(r"FIFREEZE took ([\d.]+) ms", line)] if m]


def emulator_requests(w):
    path = os.path.join(w.store, "emu-state", "requests.jsonl")
    with open(path) as f:
        return [r for r in (json.loads(line) for line in f) if r.get("kind") == "ec2"]


PG_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) (\w+) \[\d+\] (.*)$")


def checkpoints(w):
    """(started, finished, total_s) of every checkpoint in the server's log
    (log_checkpoints is on by default in PostgreSQL 15; log_line_prefix
    '%m [%p] ' gives millisecond times, in UTC in the World)."""
    out, start = [], None
    with open(os.path.join(w.pgrun, "postgres.log"), errors="replace") as f:
        for line in f:
            m = PG_LOG_TIME.match(line)
            if not m or m.group(2) != "UTC":
                continue
            t = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(
                tzinfo=datetime.timezone.utc).timestamp()
            if "checkpoint starting:" in m.group(3):
                start = t
            elif "checkpoint complete:" in m.group(3) and start is not None:
                tm = re.search(r"total=([\d.]+) s", m.group(3))
                out.append((start, t, float(tm.group(1)) if tm else t - start))
                start = None
    return out


def split_call(run, ev, reqs, ckpts):
    """One ami_snapshot() call split into phases (ms), or None.

    Anchors, all on this machine's wall clock: the history row's started_at
    and finished_at (the backend); the emulator's received_at/responded_at
    of the requests in between (its own process: DescribeInstances and a
    DryRun CreateSnapshots in PREPARE, made at once when the helper kept
    the mapping of the previous call; the DryRun that re-warms a cold
    connection just before the freeze, if made; the CreateSnapshots made
    while frozen; the CreateTags after pg_backup_stop, made at once); the
    helper's log line for SNAPSHOT's start (prepared -> freezing) when there
    is no re-warming DryRun; the helper's frozen_ms and its per-filesystem
    FIFREEZE times.  The freeze starts the longest FIFREEZE before the
    emulator received the call (they run in parallel; signing and sending
    the request in between take well under 1 ms).  Also the EC2 requests of
    the call and how many round trips one after the other they took."""
    s, f = run["started_at"], run["finished_at"]
    mine = sorted((r for r in reqs if s <= r["received_at"] <= f),
                  key=lambda r: r["received_at"])
    call = [r for r in mine if r.get("action") == "CreateSnapshots" and r.get("code") == "OK"]
    tags = [r for r in mine if r.get("action") == "CreateTags"]
    ck = [c for c in ckpts if s <= c[0] <= f]
    if len(call) != 1 or not tags or "fifreeze_ms" not in ev or not ck:
        return None     # retries, failures, or no checkpoint in the server log
    before = [r for r in mine if r["received_at"] < call[0]["received_at"]]
    prep = [r for r in before if r["received_at"] < ck[0][0]]
    rewarm = [r for r in before if r["received_at"] >= ck[0][0]]
    if not prep or (not rewarm and "freezing" not in ev):
        return None
    prep_end = max(r["responded_at"] for r in prep)
    freeze_start = call[0]["received_at"] - max(ev["fifreeze_ms"]) / 1000.0
    thaw_end = freeze_start + run["frozen_ms"] / 1000.0
    snap_start = rewarm[0]["received_at"] if rewarm else ev["freezing"]

    def ms(a, b):
        return (b - a) * 1000.0

    return {
        "prepare": ms(s, prep_end),
        "backup_start": ms(prep_end, snap_start),
        "rewarm": ms(rewarm[0]["received_at"], rewarm[-1]["responded_at"]) if rewarm else 0.0,
        "pre_freeze": ms(rewarm[-1]["responded_at"] if rewarm else snap_start, freeze_start),
        "frozen": run["frozen_ms"],
        "frozen_outside_call": run["frozen_ms"] - ev.get("call_ms", 0.0),
        "call": ev.get("call_ms"),
        "emulator_service": call[0].get("duration_ms"),
        "call_beyond_service": (ev["call_ms"] - call[0]["duration_ms"]
                                if "call_ms" in ev and "duration_ms" in call[0] else None),
        "backup_stop": ms(thaw_end, tags[0]["received_at"]),
        "tagging": ms(tags[0]["received_at"], max(r["responded_at"] for r in tags)),
        "finish": ms(max(r["responded_at"] for r in tags), f),
        "total": ms(s, f),
        "statement": ms(*run["statement"]) if "statement" in run else None,
        "checkpoint": ck[0][2] * 1000.0,
        "statement_minus_checkpoint": (ms(*run["statement"]) - ck[0][2] * 1000.0
                                       if "statement" in run else None),
        "ec2_requests": len(mine),
        "ec2_round_trips": round_trips(mine),
    }


SPLIT_PHASES = [
    ("prepare", "connect + helper PREPARE (IMDS once per worker, DescribeInstances and the "
                "DryRun, at once with a kept mapping), until the last answer"),
    ("backup_start", "PREPARED received, pg_backup_start (fast checkpoint), SNAPSHOT sent, "
                     "until the re-warm DryRun arrives (or the helper logs SNAPSHOT's start)"),
    ("rewarm", "the DryRun just before the freeze (only when the connection is cold: 0 if not "
               "made)"),
    ("pre_freeze", "after it: frozen marker written, filesystems opened, watchdog forked"),
    ("frozen", "freeze window (frozen_ms): first FIFREEZE to last FITHAW"),
    ("frozen_outside_call", "of which outside the CreateSnapshots call (the ioctls)"),
    ("call", "of which the CreateSnapshots call, as the helper measured it"),
    ("emulator_service", "of which the emulator's own time (L included), its request log"),
    ("call_beyond_service", "call - emulator service: signing, HTTP on a warm connection, "
                            "parsing, scheduling"),
    ("backup_stop", "PENDING sent, pg_backup_stop, FINISH sent, until the first CreateTags"),
    ("tagging", "CreateTags calls (backup label, device names), made at once"),
    ("finish", "DONE sent, history row written"),
    ("total", "history finished_at - started_at"),
    ("statement", "the SELECT ami_snapshot() as the application waits for it (server clock "
                  "before it and after its result reached psql; the final history row included)"),
    ("checkpoint", "the backup's checkpoint alone (server log, total=), part of backup_start"),
    ("statement_minus_checkpoint", "statement - checkpoint, per call: what the issue-16 target "
                                   "bounds by 3 L + 150 ms"),
    ("ec2_requests", "EC2 requests the call made (the emulator's log)"),
    ("ec2_round_trips", "of which one after the other (requests made at once count once): "
                        "what pays L"),
]


# ---------------------------------------------------------- helper memory
def _status(pid):
    d = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                k, _, v = line.partition(":")
                d[k] = v.strip()
    except OSError:
        return None
    return d


def _children(pid):
    """Direct children, from /proc/PID/task/*/children (cheap: no scan of
    every process, which would disturb the timings being sampled)."""
    out = []
    for path in glob.glob("/proc/%d/task/*/children" % pid):
        try:
            with open(path) as f:
                out += [int(x) for x in f.read().split()]
        except OSError:
            pass
    return out


def process_tree(root):
    """root and all its descendants (pids)."""
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(_children(pid))
    return out


def kb(v):
    return int(v.split()[0]) if v else 0


def pss_kb(pid):
    """Proportional set size (shared pages divided among their users), kB:
    a forked child shares most of its pages with the daemon, so summing
    VmRSS over the tree counts those twice."""
    try:
        with open("/proc/%d/smaps_rollup" % pid) as f:
            for line in f:
                if line.startswith("Pss:"):
                    return kb(line.split(":", 1)[1])
    except OSError:
        pass
    return None


def memory_now(root):
    """{pid: (name, VmRSS kB, VmHWM kB)} of the helper's process tree."""
    out = {}
    for pid in process_tree(root):
        st = _status(pid)
        if st and "VmRSS" in st:
            out[pid] = (st.get("Name", "?"), kb(st.get("VmRSS")), kb(st.get("VmHWM")))
    return out


class MemorySampler(threading.Thread):
    """Samples the helper's process tree every `interval` s: the peak VmRSS
    seen and the last VmHWM (the kernel's own peak) of every process, also
    short-lived children such as the watchdog forked for each freeze."""

    def __init__(self, root, interval=0.01):
        super().__init__(daemon=True)
        self.root, self.interval = root, interval
        self.peak = {}      # pid -> [name, max VmRSS, max VmHWM, parent is root]
        self.stop_evt = threading.Event()

    def run(self):
        while not self.stop_evt.is_set():
            for pid, (name, rss, hwm) in memory_now(self.root).items():
                p = self.peak.setdefault(pid, [name, 0, 0, pid == self.root])
                p[1], p[2] = max(p[1], rss), max(p[2], hwm)
            self.stop_evt.wait(self.interval)

    def stop(self):
        self.stop_evt.set()
        self.join()


# ---------------------------------------------------------------- pgbench
def pgbench_args(w, args, db="bench"):
    return [os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port)] + args + [db]


def pgbench_cmd(w, args, db="bench"):
    """pgbench as the postgres user, for Popen."""
    return ["runuser", "-u", "postgres", "--"] + pgbench_args(w, args, db)


def read_pgbench_logs(prefix):
    """[(start, end, latency_ms or None if failed)] from pgbench --log files
    (PG 15: client_id tx_no latency_us|failed|skipped script_no epoch_s us ...;
    the time is the transaction's end)."""
    out = []
    for path in glob.glob(prefix + "*"):
        with open(path) as f:
            for line in f:
                p = line.split()
                if len(p) < 6:
                    continue
                end = int(p[4]) + int(p[5]) / 1e6
                if p[2] in ("failed", "skipped"):
                    out.append((end, end, None))
                else:
                    lat = int(p[2]) / 1000.0
                    out.append((end - lat / 1000.0, end, lat))
    out.sort(key=lambda x: x[1])
    return out


def pgbench_failed(output):
    """Failed transactions and aborted clients, from pgbench's summary."""
    failed = re.search(r"number of failed transactions: (\d+)", output)
    aborted = re.search(r"number of (?:clients|threads) aborted: (\d+)|aborted in command",
                        output)
    return (int(failed.group(1)) if failed else 0), bool(aborted)
