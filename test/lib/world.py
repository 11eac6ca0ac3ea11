"""
world.py - the sandbox the tests, the demo and the benchmarks run in.

A World is a real, disposable "EC2 instance" on this machine:

  * an image store: an XFS filesystem (reflink=1) on a loop device, holding
    one backing file per "EBS volume" and nothing the volumes' writes wait
    for: the emulator freezes it (FIFREEZE) to copy a set of volumes at one
    instant, as EBS's multi-volume snapshots are (writes to the volumes'
    filesystems wait in the loop driver meanwhile), and takes a single
    volume with a reflink in O(extents);
  * one loop device per volume, with ext4 or XFS on it, mounted under
    WORK/mnt/<name>;
  * the EC2/IMDS emulator (test/emulator/ec2emu.py) on 127.0.0.1, knowing
    those volumes as attached to its one instance; a volume attached with
    AttachVolume becomes a loop device linked as
    WORK/dev/disk/by-id/nvme-Amazon_Elastic_Block_Store_vol<hex>, the name
    udev gives an EBS volume on a Nitro instance (volume_device()); or, with
    World(ec2="moto"), moto's server with test/emulator/moto_front.py in
    front of it (IMDS, snapshot bytes, faults), an instance and volumes made
    in moto, and an IAM key in a root-only credentials file
    (test/lib/moto_backend.py);
  * the real ami-snapshot-helper on its real socket, as root;
  * a real PostgreSQL cluster (run as the postgres OS user) whose data
    directory, pg_wal and tablespaces live on those filesystems.

Everything is torn down in close(), also after failures: filesystems that
might be frozen are thawed first (the store before the others: a thaw of a
volume's filesystem writes to it), then processes stopped, then unmounted
and detached.  Only filesystems this World created are ever frozen or
unmounted.
"""

import contextlib
import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMULATOR = os.path.join(ROOT, "test", "emulator", "ec2emu.py")
# The helper built in this tree, or another binary of it: AMIS_HELPER (the
# packaged one, test/packages/run.sh).
HELPER = os.environ.get("AMIS_HELPER") or os.path.join(ROOT, "helper", "ami-snapshot-helper")
if os.environ.get("AMIS_HELPER") and not os.access(HELPER, os.X_OK):
    raise RuntimeError("AMIS_HELPER: %s is not an executable" % HELPER)
PYTHON = "/usr/bin/python3"
IN_CHROOT = os.path.join(ROOT, "test", "pgversions", "in-chroot.sh")

# PostgreSQL from a chroot made by test/pgversions/chroot.sh instead of the
# host's: AMIS_PG_CHROOT is its path, AMIS_PG_MAJOR the PostgreSQL major in
# it.  Every PostgreSQL program (initdb, pg_ctl, psql, pgbench, ...) then
# runs inside it through test/pgversions/in-chroot.sh, which shows it the
# World's directory (data, sockets, logs) at the same path; loop devices,
# mounts, FIFREEZE, the helper and the emulator stay on the host.
PG_CHROOT = os.environ.get("AMIS_PG_CHROOT") or None
if PG_CHROOT:
    PG_MAJOR = os.environ.get("AMIS_PG_MAJOR", "")
    if not PG_MAJOR.isdigit():
        raise RuntimeError("AMIS_PG_CHROOT needs AMIS_PG_MAJOR (the PostgreSQL major in it)")
    PGBIN = "/usr/lib/postgresql/%s/bin" % PG_MAJOR
    if not os.access(PG_CHROOT + PGBIN + "/postgres", os.X_OK):
        raise RuntimeError("no PostgreSQL %s in the chroot %s" % (PG_MAJOR, PG_CHROOT))
    if not os.path.exists("%s/usr/share/postgresql/%s/extension/ami_snapshot.control"
                          % (PG_CHROOT, PG_MAJOR)):
        raise RuntimeError("ami_snapshot is not installed in the chroot %s "
                           "(test/pgversions/run.sh builds and installs it)" % PG_CHROOT)
elif os.environ.get("AMIS_PGBIN"):
    # A private copy of PostgreSQL with the extension installed in it
    # (test/lib/private-pg.sh): a long run is not disturbed by another
    # tree's make install into the system's PostgreSQL.
    PGBIN = os.environ["AMIS_PGBIN"]
    _share = subprocess.run([os.path.join(PGBIN, "pg_config"), "--sharedir"],
                            capture_output=True, text=True, check=True).stdout.strip()
    if not os.path.exists(os.path.join(_share, "extension", "ami_snapshot.control")):
        raise RuntimeError("AMIS_PGBIN: ami_snapshot is not installed in %s "
                           "(test/lib/private-pg.sh installs it)" % _share)
else:
    PGBIN = subprocess.run(["pg_config", "--bindir"], capture_output=True, text=True,
                           check=True).stdout.strip()

INSTANCE_ID = "i-0a1b2c3d4e5f60718"
REGION = "eu-west-1"


def log(msg):
    print("# " + msg, flush=True)


def run(cmd, check=True, **kw):
    r = subprocess.run(cmd, check=False, capture_output=True, text=True, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s%s" % (r.returncode, " ".join(cmd),
                                                            r.stdout[-2000:], r.stderr[-2000:]))
    return r


def _copy_timestamped(pipe, logf):
    """Copy the helper's output to its log, each line prefixed with the
    time it was read ("1700000000.123456 <line>")."""
    for line in iter(pipe.readline, b""):
        logf.write("%.6f %s" % (time.time(), line.decode("utf-8", "replace")))
        logf.flush()
    pipe.close()


class Volume:
    def __init__(self, name, vol_id, fstype, size_mb, device_name):
        self.name = name            # "data", "wal", "ts1"
        self.vol_id = vol_id
        self.fstype = fstype
        self.size_mb = size_mb
        self.device_name = device_name  # EC2 device name, "/dev/sdf"
        self.backing = None
        self.loop = None
        self.mount = None


class World:
    """Use as a context manager, or call close() in a finally block."""

    def __init__(self, layout=None, emulator_args=(), helper_conf_extra="",
                 pg_conf_extra="", port=None, keep=False, helper_log_timestamps=False,
                 ec2="emulator", emulator_config_extra=None, store_gb=16):
        if os.geteuid() != 0:
            raise RuntimeError("the sandbox needs root (loop devices, mount, FIFREEZE)")
        if ec2 not in ("emulator", "moto"):
            raise ValueError("ec2 is \"emulator\" or \"moto\"")
        if ec2 == "moto" and emulator_args:
            raise ValueError("emulator_args are for the emulator, not for moto")
        # Which EC2 the helper talks to; emu_url is its EC2 and IMDS endpoint
        # either way (for moto: moto_front.py).
        self.ec2 = ec2
        self.moto = None
        self.instance_id = INSTANCE_ID
        # name, fstype: data holds PGDATA; wal holds pg_wal; ts* tablespaces.
        # Without a "wal" entry pg_wal stays inside the data directory (one
        # filesystem for everything, e.g. [("data", "ext4")]).
        self.layout = layout or [("data", "ext4"), ("wal", "xfs"), ("ts1", "ext4")]
        # The helper's log lines carry no time: for the benchmarks, prefix each
        # with the wall-clock time (time.time(), seconds) it was read at.
        self.helper_log_timestamps = helper_log_timestamps
        self.emulator_args = list(emulator_args)
        # Keys merged into the emulator's config file (e.g. product_codes).
        self.emulator_config_extra = dict(emulator_config_extra or {})
        self.helper_conf_extra = helper_conf_extra
        self.pg_conf_extra = pg_conf_extra
        self.keep = keep
        # The store's size (a sparse file: it costs what is written): a set
        # taken at one instant is a full copy of each volume's data.
        self.store_gb = store_gb
        self.store = None
        self.procs = {}
        self.stray_probes = []
        self.mounted = []       # mount points, in mount order
        self.loops = []
        self.volumes = []
        self.pg_started = False
        self.port = port or self._free_pg_port()
        self.work = tempfile.mkdtemp(prefix="amis-world.", dir="/var/tmp")
        self.device_link_dir = self.path("dev", "disk", "by-id")
        self.emu_state_dir = self.path("store", "emu-state")
        os.chmod(self.work, 0o755)
        self.pg_uid = pwd.getpwnam("postgres").pw_uid
        self.pg_gid = pwd.getpwnam("postgres").pw_gid
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ setup
    @staticmethod
    def _free_pg_port():
        import socket
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        return port

    def path(self, *parts):
        return os.path.join(self.work, *parts)

    def _losetup(self, backing):
        dev = run(["losetup", "--find", "--show", backing]).stdout.strip()
        if not dev:
            raise RuntimeError("losetup found no free loop device")
        self.loops.append(dev)
        return dev

    def _mount(self, dev, mnt, opts=None):
        os.makedirs(mnt, exist_ok=True)
        if opts is None and run(["blkid", "-o", "value", "-s", "TYPE", dev],
                                check=False).stdout.strip() == "xfs":
            # A snapshot of a mounted XFS carries the same UUID.
            opts = "nouuid"
        if opts == "":
            opts = None
        cmd = ["mount"] + (["-o", opts] if opts else []) + [dev, mnt]
        run(cmd)
        self.mounted.append((mnt, dev))

    def _build(self):
        # The image store.
        store_img = self.path("store.img")
        with open(store_img, "wb") as f:
            f.truncate(self.store_gb << 30)
        run(["mkfs.xfs", "-q", "-m", "reflink=1", store_img])
        self._mount(self._losetup(store_img), self.path("store"))
        self.store = self.path("store")

        # The volume ids: fixed for the emulator, moto's for moto (its setup
        # attaches one volume per device name).
        letters = "fghijklmnop"
        devices = ["/dev/sd" + letters[i] for i in range(len(self.layout))]
        if self.ec2 == "moto":
            from moto_backend import ROOT_DEVICE, MotoBackend
            self.moto = MotoBackend(self.path("moto"), REGION, log)
            self.moto.start(devices)
            self.instance_id = self.moto.instance_id
            root_id, root_dev, vol_ids = (self.moto.root_volume_id, ROOT_DEVICE,
                                          self.moto.volume_ids)
        else:
            root_id, root_dev = "vol-0000000000000000a", "/dev/xvda"
            vol_ids = ["vol-%017x" % (0x0abc00000000000 + i + 1)
                       for i in range(len(self.layout))]

        # The "root volume" of the instance: never ours, never frozen.
        root = Volume("root", root_id, None, 8, root_dev)
        root.backing = os.path.join(self.store, root.vol_id + ".img")
        with open(root.backing, "wb") as f:
            f.truncate(8 << 20)

        for i, (name, fstype) in enumerate(self.layout):
            v = Volume(name, vol_ids[i], fstype, 512, devices[i])
            v.backing = os.path.join(self.store, v.vol_id + ".img")
            with open(v.backing, "wb") as f:
                f.truncate(v.size_mb << 20)
            if fstype == "xfs":
                run(["mkfs.xfs", "-q", v.backing])
            else:
                run(["mkfs.ext4", "-q", "-F", v.backing])
            v.loop = self._losetup(v.backing)
            v.mount = self.path("mnt", name)
            self._mount(v.loop, v.mount)
            os.chown(v.mount, self.pg_uid, self.pg_gid)
            os.chmod(v.mount, 0o700)
            self.volumes.append(v)
        self.root_volume = root
        os.chmod(self.path("mnt"), 0o755)

        if self.ec2 == "moto":
            self._start_front()
        else:
            self._start_emulator()
        self._start_helper()
        self._init_postgres()

    def _emulator_config(self):
        vols = {}
        for v in [self.root_volume] + self.volumes:
            vols[v.vol_id] = {"device_name": v.device_name, "backing_file": v.backing,
                              "size_gib": 1, "root": v is self.root_volume}
        return {
            "instance_id": INSTANCE_ID,
            "region": REGION,
            "availability_zone": REGION + "a",
            "account_id": "123456789012",
            "architecture": "x86_64",
            "image_id": "ami-0123456789abcdef0",
            "instance_type": "m6i.large",
            "root_device_name": "/dev/xvda",
            "imds": {"role_name": "ami-snapshot-test-role"},
            "volumes": vols,
            # Attached volumes become loop devices linked here, as udev would
            # link them under /dev/disk/by-id.
            "device_link_dir": self.device_link_dir,
            # Frozen by the emulator for a set at one instant: the
            # filesystem this World made for the backing files alone.
            "store_mount": self.store,
            **self.emulator_config_extra,
        }

    def _start_emulator(self):
        os.makedirs(self.path("emu"), exist_ok=True)
        cfg = self.path("emu", "config.json")
        with open(cfg, "w") as f:
            json.dump(self._emulator_config(), f, indent=2)
        portfile = self.path("emu", "port")
        logf = open(self.path("emu", "emulator.log"), "w")
        self.procs["emulator"] = subprocess.Popen(
            [PYTHON, EMULATOR, "--port", "0", "--port-file", portfile, "--config", cfg,
             "--state-dir", self.emu_state_dir] + self.emulator_args,
            stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.time() + 20
        while not os.path.exists(portfile):
            if self.procs["emulator"].poll() is not None or time.time() > deadline:
                raise RuntimeError("emulator did not start; see " + logf.name)
            time.sleep(0.05)
        self.emu_port = int(open(portfile).read().strip())
        self.emu_url = "http://127.0.0.1:%d" % self.emu_port

    def _start_front(self):
        os.makedirs(self.path("front"), exist_ok=True)
        vols = {v.vol_id: v.backing for v in [self.root_volume] + self.volumes}
        self.emu_url = self.moto.start_front(PYTHON, self.path("front"),
                                             self.path("store", "front-state"), vols)
        # The helper's key, in a file only root can read.
        os.makedirs(self.path("aws"), mode=0o700)
        self.credentials_file = self.path("aws", "credentials")
        self.set_aws_key("helper")

    def set_aws_key(self, user, secret=None):
        """The credentials file holds the IAM key of user ("helper",
        "limited"), with secret instead of its own when given.  The helper
        reads it when it starts."""
        akid, real = self.moto.keys[user]
        fd = os.open(self.credentials_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write("[default]\naws_access_key_id = %s\naws_secret_access_key = %s\n"
                    % (akid, secret or real))

    def helper_config_text(self):
        vols = "\n".join("%s = %s" % (v.loop, v.vol_id) for v in self.volumes)
        creds = ""
        if self.ec2 == "moto":
            creds = "credentials_file = %s\n" % self.credentials_file
        return f"""[helper]
socket = {self.path('run', 'helper.sock')}
socket_group = postgres
allowed_users = postgres
freeze_timeout = 10s
client_timeout = 2min
ec2_timeout = 10s
log_level = debug
# The frozen marker: under the world, never on a filesystem it freezes.
state_dir = {self.path('state')}
# Tests that inject EC2 errors expect them to surface: no retries unless a
# test asks for them (a [helper] section with retries in helper_conf_extra).
retries = 0
retry_backoff = 100ms

[filesystems]
allow = {self.path('mnt')}

[volumes]
{vols}

[aws]
ec2_endpoint = {self.emu_url}
imds_endpoint = {self.emu_url}
{creds}{self.helper_conf_extra}
"""

    def _start_helper(self):
        os.makedirs(self.path("run"), exist_ok=True)
        os.chmod(self.path("run"), 0o755)
        conf = self.path("helper.conf")
        with open(conf, "w") as f:
            f.write(self.helper_config_text())
        self.helper_conf = conf
        self.start_helper()

    def start_helper(self, env_extra=None):
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = self.emu_url
        env.update(env_extra or {})
        self.helper_log = self.path("helper.log")
        logf = open(self.helper_log, "a")
        sock = self.path("run", "helper.sock")
        if os.path.exists(sock):
            os.unlink(sock)
        out = subprocess.PIPE if self.helper_log_timestamps else logf
        self.procs["helper"] = subprocess.Popen([HELPER, "-c", self.helper_conf],
                                                stdout=out, stderr=subprocess.STDOUT,
                                                env=env)
        if self.helper_log_timestamps:
            threading.Thread(target=_copy_timestamped, args=(self.procs["helper"].stdout, logf),
                             daemon=True).start()
        deadline = time.time() + 10
        while not os.path.exists(sock):
            if self.procs["helper"].poll() is not None or time.time() > deadline:
                raise RuntimeError("helper did not start:\n" + open(self.helper_log).read())
            time.sleep(0.02)

    @contextlib.contextmanager
    def helper_binary(self, binary):
        """The helper restarted as binary (another build of it, e.g. an older
        one) for the with block, then as this tree's (HELPER) again."""
        global HELPER
        self.stop_helper()
        saved, HELPER = HELPER, binary
        try:
            self.start_helper()
            yield
        finally:
            self.stop_helper()
            HELPER = saved
            self.start_helper()

    def stop_helper(self, sig=signal.SIGTERM):
        p = self.procs.pop("helper", None)
        if p and p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def pg_cmd(self, cmd):
        """cmd (a PostgreSQL program under PGBIN and its arguments) run as the
        postgres user: on the host, or in PG_CHROOT seeing the World's
        directory.  From /: the caller's directory (a clone made by mktemp -d,
        mode 0700) may be closed to postgres, and psql would say so on
        stderr, which tests read."""
        as_pg = ["runuser", "-u", "postgres", "--", "env", "--chdir=/"]
        if PG_CHROOT:
            return [IN_CHROOT, PG_CHROOT, self.work] + as_pg + cmd
        return as_pg + cmd

    def as_postgres(self, cmd, check=True, **kw):
        return run(self.pg_cmd(cmd), check=check, **kw)

    def _init_postgres(self):
        # The server's own socket and log directory (the helper's is run/).
        self.pgrun = self.path("pgrun")
        os.makedirs(self.pgrun)
        os.chown(self.pgrun, self.pg_uid, self.pg_gid)
        data = self.volume("data")
        self.pgdata = os.path.join(data.mount, "pgdata")
        waldir = []
        if any(v.name == "wal" for v in self.volumes):
            waldir = ["--waldir", os.path.join(self.volume("wal").mount, "pg_wal")]
        self.as_postgres([os.path.join(PGBIN, "initdb"), "-D", self.pgdata, "-A", "trust",
                          "-U", "postgres"] + waldir + ["--no-sync"])
        with open(os.path.join(self.pgdata, "postgresql.conf"), "a") as f:
            f.write(self.server_conf(self.port) + self.pg_conf_extra + "\n")
        self.start_postgres()
        self.psql("CREATE EXTENSION ami_snapshot")
        for v in self.volumes:
            if v.name.startswith("ts"):
                loc = os.path.join(v.mount, "tblspc")
                os.makedirs(loc)
                os.chown(loc, self.pg_uid, self.pg_gid)
                self.psql(f"CREATE TABLESPACE {v.name} LOCATION '{loc}'")

    def server_conf(self, port):
        """The settings every cluster of the World has (its own, and a
        test's other servers on another port): the socket in pgrun, the
        helper's socket."""
        return f"""
port = {port}
listen_addresses = ''
unix_socket_directories = '{self.pgrun}'
ami_snapshot.helper_socket = '{self.path('run', 'helper.sock')}'
max_wal_size = 256MB
shared_buffers = 64MB
max_connections = 40
logging_collector = off
"""

    def start_postgres(self):
        self.as_postgres([os.path.join(PGBIN, "pg_ctl"), "-D", self.pgdata, "-w", "-t", "60",
                          "-l", os.path.join(self.pgrun, "postgres.log"), "start"])
        self.pg_started = True

    def stop_postgres(self, mode="fast"):
        if self.pg_started:
            self.as_postgres([os.path.join(PGBIN, "pg_ctl"), "-D", self.pgdata, "-w",
                              "-m", mode, "stop"], check=False)
            self.pg_started = False

    def volume(self, name):
        for v in self.volumes:
            if v.name == name:
                return v
        raise KeyError(name)

    # ---------------------------------------------------------------- helpers
    def psql_cmd(self, db="postgres", port=None, host=None):
        return [os.path.join(PGBIN, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-At",
                "-h", host or self.pgrun, "-p", str(port or self.port), "-d", db]

    def psql(self, sql, db="postgres", check=True, port=None, host=None, timeout=300):
        r = self.as_postgres(self.psql_cmd(db, port, host) + ["-c", sql], check=False,
                             timeout=timeout)
        if check and r.returncode != 0:
            raise RuntimeError("psql failed (%d): %s\n%s" % (r.returncode, sql, r.stderr))
        return r if not check else r.stdout.strip()

    def emulator_control(self, body):
        req = urllib.request.Request(self.emu_url + "/_emulator/control",
                                     data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as r:
            return json.loads(r.read() or b"{}")

    def emulator_reset(self):
        req = urllib.request.Request(self.emu_url + "/_emulator/reset", data=b"{}",
                                     method="POST")
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()

    def emulator_state(self):
        with urllib.request.urlopen(self.emu_url + "/_emulator/state", timeout=10) as r:
            return json.loads(r.read())

    def ec2_state(self):
        """The EC2 side's state, either backend: "snapshots" is a list of
        {"id", "volume_id", "file"} (the emulator adds more keys)."""
        if self.ec2 == "moto":
            return self.moto.front_state()
        return self.emulator_state()

    def imds_credentials(self):
        """The instance role's credentials as the emulator's IMDS hands them
        out (to the helper too): AccessKeyId, SecretAccessKey, Token."""
        def imds(method, path, headers):
            req = urllib.request.Request(self.emu_url + path, method=method, headers=headers)
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.read().decode()
        tok = imds("PUT", "/latest/api/token", {"X-aws-ec2-metadata-token-ttl-seconds": "60"})
        h = {"X-aws-ec2-metadata-token": tok}
        base = "/latest/meta-data/iam/security-credentials/"
        return json.loads(imds("GET", base + imds("GET", base, h).strip(), h))

    def ec2_call(self, action, **params):
        """One EC2 request to the emulator, signed with the instance role's
        IMDS credentials (as the helper signs): the response's XML as an
        ElementTree root with the namespace stripped from the tags.  An EC2
        error raises RuntimeError with its code and message."""
        import xml.etree.ElementTree as ET
        creds = self.imds_credentials()
        r = run([PYTHON, EMULATOR, "call", "--port", str(self.emu_port), "--region", REGION,
                 "--access-key", creds["AccessKeyId"], "--secret-key", creds["SecretAccessKey"],
                 "--session-token", creds["Token"], action]
                + ["%s=%s" % kv for kv in params.items()], check=False)
        root = ET.fromstring(r.stdout)
        for el in root.iter():
            el.tag = el.tag.split("}", 1)[-1]
        if r.returncode != 0:
            raise RuntimeError("%s: %s: %s" % (action, root.findtext(".//Code"),
                                               root.findtext(".//Message")))
        return root

    def volume_device(self, vol_id, timeout=0):
        """The block device (/dev/loopN) of an EBS volume the emulator has
        attached: its by-id link resolved.  None if there is none (after
        waiting up to timeout seconds for it to appear)."""
        link = os.path.join(self.device_link_dir,
                            "nvme-Amazon_Elastic_Block_Store_" + vol_id.replace("-", ""))
        deadline = time.time() + timeout
        while True:
            if os.path.islink(link):
                return os.path.realpath(link)
            if time.time() >= deadline:
                return None
            time.sleep(0.05)

    def release_emulator_devices(self):
        """The loop devices the emulator made for attached volumes (its
        state.json records them, also when it was killed): unmount what is
        mounted from them, detach them, remove their links."""
        if self.ec2 != "emulator" or not os.path.exists(
                os.path.join(self.emu_state_dir, "state.json")):
            return
        r = run([PYTHON, EMULATOR, "release-devices", "--state-dir", self.emu_state_dir],
                check=False)
        for line in r.stdout.splitlines():
            log("emulator devices: " + line)
        if r.returncode != 0:
            log("release-devices failed: " + r.stderr.strip())

    def frozen_mounts(self, wait=2.0):
        """Mounts of ours that are frozen right now: a write there does not
        finish within `wait` seconds.  The writers run in the background: a
        write to a frozen filesystem sleeps uninterruptibly (no timeout can
        kill it), so we never wait for them; they finish at the thaw and are
        reaped later."""
        probes = []
        for v in self.volumes:
            # FIFREEZE would tell (EBUSY) but freezes a thawed filesystem:
            # ask for a write instead.
            probe = os.path.join(v.mount, ".probe")
            probes.append((v.mount, subprocess.Popen(
                ["sh", "-c", f"echo x > {probe} && sync {probe}"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)))
        deadline = time.time() + wait
        frozen = []
        for mount, p in probes:
            try:
                p.wait(max(0.0, deadline - time.time()))
            except subprocess.TimeoutExpired:
                frozen.append(mount)
                self.stray_probes.append(p)
        self.stray_probes = [p for p in self.stray_probes if p.poll() is None]
        return frozen

    def thaw_all(self):
        # The store first: thawing a volume's filesystem writes its
        # superblock, which waits for a frozen store.
        if self.store and os.path.ismount(self.store):
            subprocess.run(["fsfreeze", "-u", self.store], capture_output=True)
        for mnt, _ in reversed(self.mounted):
            subprocess.run(["fsfreeze", "-u", mnt], capture_output=True)

    def unmount(self, mnt, dev):
        subprocess.run(["fsfreeze", "-u", mnt], capture_output=True)
        # A loop device just detached may hold its backing file (in the image
        # store) a little longer: wait for the store to be free, a while.
        deadline = time.time() + 5
        while True:
            r = subprocess.run(["umount", mnt], capture_output=True, text=True)
            if r.returncode == 0 or not os.path.ismount(mnt):
                break
            if time.time() > deadline:
                log("cannot unmount %s yet: %s" % (mnt, r.stderr.strip()))
                return False  # retried by close()
            time.sleep(0.25)
        subprocess.run(["losetup", "-d", dev], capture_output=True)
        self.mounted = [m for m in self.mounted if m[0] != mnt]
        self.loops = [d for d in self.loops if d != dev]
        return True

    # -------------------------------------------------------------- teardown
    def close(self):
        # 1. Never leave anything frozen (before anything that could block).
        self.thaw_all()
        for p in self.stray_probes:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass
        # 2. Processes.
        try:
            self.stop_postgres("immediate")
        except Exception as e:  # pragma: no cover
            log("stopping postgres: %s" % e)
        for name in list(self.procs):
            p = self.procs.pop(name)
            if p.poll() is None:
                p.terminate()
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        if self.moto:
            self.moto.close()
        # An emulator killed while it had the store frozen for a set leaves
        # it frozen: thaw again before anything writes to the volumes.
        self.thaw_all()
        # 3. The emulator's devices (in the image store), then filesystems,
        # loop devices, files.
        try:
            self.release_emulator_devices()
        except Exception as e:  # pragma: no cover
            log("releasing the emulator's devices: %s" % e)
        # Several passes: a loop device whose mount failed, or one of a
        # restore's images, keeps the image store busy until it is detached,
        # and the kernel releases a detached loop device a moment later (up to
        # about 9 s in all).
        for attempt in range(10):
            if attempt > 1:
                time.sleep(0.2 * attempt)
            for mnt, dev in reversed(self.mounted):
                self.unmount(mnt, dev)
            mounted_devs = {d for _, d in self.mounted}
            for dev in reversed(self.loops):
                if dev not in mounted_devs:
                    subprocess.run(["losetup", "-d", dev], capture_output=True)
            self.loops = [d for d in self.loops if d in mounted_devs]
            if not self.mounted:
                break
        # Mounts under the world that are not its own (a test's mount of an
        # attached volume): never remove a directory with a mount in it.
        with open("/proc/self/mountinfo") as f:
            foreign = [line.split()[4] for line in f
                       if line.split()[4].startswith(self.work + "/")]
        if self.mounted or foreign:
            log("left mounted: %s; %s kept" % (", ".join([m for m, _ in self.mounted] + foreign),
                                               self.work))
        elif not self.keep:
            shutil.rmtree(self.work, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False
