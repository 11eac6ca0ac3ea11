#!/usr/bin/python3
"""demo.py - the sandbox demo (see test/sandbox-demo.sh)."""

import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from world import PGBIN, World  # noqa: E402
from restore import Restored  # noqa: E402


def say(msg):
    print("\n\033[1m==> %s\033[0m" % msg, flush=True)


def main():
    say("Building the sandbox: loop filesystems (data: ext4, pg_wal: xfs, tablespace: ext4), "
        "EC2/IMDS emulator, ami-snapshot-helper, PostgreSQL 15")
    w = World()
    restored = None
    try:
        for v in w.volumes:
            print("  %-5s %-4s %-12s %s  (%s)" % (v.name, v.fstype, v.loop, v.mount, v.vol_id))
        print("  emulator %s, helper socket %s, postgres port %d" %
              (w.emu_url, w.path("run", "helper.sock"), w.port))
        w.psql("CREATE DATABASE bench")
        w.as_postgres([os.path.join(PGBIN, "pgbench"), "-h", w.pgrun, "-p", str(w.port),
                       "-i", "-s", "4", "--tablespace=ts1", "-q", "bench"])
        say("pgbench writes for 8 s; after 3 s:  SELECT * FROM ami_snapshot('nightly');")
        bench = subprocess.Popen(["runuser", "-u", "postgres", "--",
                                  os.path.join(PGBIN, "pgbench"), "-h", w.pgrun,
                                  "-p", str(w.port), "-c", "4", "-j", "2", "-T", "8", "bench"],
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        time.sleep(3)
        r = w.as_postgres(w.psql_cmd()[:-1] + ["postgres", "-x", "-c",
                                               "SELECT * FROM ami_snapshot('nightly')"])
        print(r.stdout.replace("\n\n", "\n"))
        snaps = w.psql("SELECT array_to_string(snapshot_ids, ' ') FROM ami_snapshot_history "
                       "WHERE status = 'succeeded' ORDER BY id DESC LIMIT 1").split()
        out, _ = bench.communicate()
        print("\n".join("  pgbench: " + l for l in out.splitlines()
                        if "failed" in l or "tps" in l or "latency" in l))
        say("Helper log")
        print("".join("  " + l for l in open(w.helper_log) if "request" in l))
        say("Restoring the snapshot set onto new loop devices and starting PostgreSQL on it")
        restored = Restored(w, snaps)
        print("  backup_label in the snapshot: %s (crash recovery)" % restored.has_backup_label())
        restored.start()
        inv = restored.psql(
            "SELECT (SELECT sum(abalance) FROM pgbench_accounts) = "
            "(SELECT coalesce(sum(delta), 0) FROM pgbench_history), "
            "(SELECT count(*) FROM pgbench_history)", db="bench")
        print("  restored cluster is up; pgbench balances add up: %s" % inv)
        am = subprocess.run(["runuser", "-u", "postgres", "--",
                             os.path.join(PGBIN, "pg_amcheck"), "-h", w.pgrun,
                             "-p", str(restored.port), "--all", "--heapallindexed",
                             "--install-missing"], capture_output=True, text=True)
        print("  pg_amcheck --all --heapallindexed: %s" %
              ("no corruption" if am.returncode == 0 else am.stdout + am.stderr))
        ok = inv.startswith("t|") and am.returncode == 0
        say("Demo %s; cleaning up" % ("succeeded" if ok else "FAILED"))
        return 0 if ok else 1
    finally:
        if restored:
            restored.close()
        w.close()


if __name__ == "__main__":
    sys.exit(main())
