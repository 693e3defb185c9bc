"""Fault case 5: the snapshot directory fills up, then has room again.

The snapshot directory is a small tmpfs of its own (as root), else the daemon runs with
SIGXFSZ ignored and its RLIMIT_FSIZE lowered and raised again with prlimit. Once a periodic snapshot was
written, the space goes (a filler file takes the rest of the tmpfs): the next snapshots fail;
serving continues (offsets keep being committed), the error is logged with the system's
reason and counted in /metrics (propensityd_snapshots_total{result="failed"}), and the last
good snapshot is still there, byte for byte. When the space comes back, snapshots are
written again. The end: converged() (tests/faults/faults.py) and a clean SIGTERM exit.
"""

import os
import subprocess
import sys
import tempfile
import time

import faults
import harness
from faults import check, log

FAILED = 'propensityd_snapshots_total{result="failed"}'
WRITTEN = 'propensityd_snapshots_total{result="ok"}'


def snapshots(path):
    return sorted(f for f in os.listdir(path) if f.endswith(".pds"))


def main():
    mnt = tempfile.mkdtemp(prefix="pd-fault-snapfs-")
    mounted = os.geteuid() == 0 and subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", mnt],
        stderr=subprocess.DEVNULL).returncode == 0
    log("snapshot directory: %s" % ("a 16 MiB tmpfs" if mounted else "RLIMIT_FSIZE"))
    case = faults.Case("snapshot_full", events=8000, users=400, seed=35,
                       snapshot={"dir": mnt, "interval": "1s", "keep": 2})
    try:
        with harness.RedisServer() as rs, harness.Broker({faults.TOPIC: 1}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            producer = faults.Producer(broker.bootstrap, case.lines, chunks=24,
                                       pause=0.6).start()
            d = case.daemon(broker, rs)
            if not mounted:
                # SIGXFSZ ignored (the disposition survives exec), so a write over the limit
                # set below fails with EFBIG instead of killing the daemon
                d.binary = faults.xfsz_ignoring_daemon(case.tmp)
            with d:
                port = case.http_port
                d.wait_until(lambda: faults.metrics(port).get(WRITTEN, 0) >= 2, 30 * faults.SLOW,
                             0.2, "two snapshots written")
                good = snapshots(mnt)
                check(good, "no snapshot file")
                filler = os.path.join(mnt, "filler")
                if mounted:
                    subprocess.run(["dd", "if=/dev/zero", "of=" + filler, "bs=64k"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                else:
                    subprocess.run(["prlimit", "--pid", str(d.proc.pid), "--fsize=65536"],
                                   check=True)
                # the snapshot being written when the space went may still land
                time.sleep(1.5)
                kept = {f: open(os.path.join(mnt, f), "rb").read() for f in snapshots(mnt)}
                failed0 = faults.metrics(port).get(FAILED, 0)
                c0 = faults.committed(k).get(0, 0)
                d.wait_until(lambda: faults.metrics(port).get(FAILED, 0) >= failed0 + 2,
                             15 * faults.SLOW, 0.2, "two failed snapshots")
                check(faults.committed(k).get(0, 0) > c0 or producer.sent == len(case.lines),
                      "offsets stopped moving while snapshots failed")
                check(harness.http_get(port, "/healthz")[0] == 200, "/healthz failed")
                after = {f: open(os.path.join(mnt, f), "rb").read() for f in snapshots(mnt)}
                check(after == kept, "the good snapshots changed while the disk was full: "
                      "%s -> %s" % (sorted(kept), sorted(after)))
                logtext = d.log_text()
                check("No space left on device" in logtext or "File too large" in logtext,
                      "the snapshot error does not say why:\n%s" % d.log_tail())
                log("%d snapshots failed, %d good ones kept (%s)"
                    % (faults.metrics(port).get(FAILED, 0) - failed0, len(kept),
                       ", ".join(sorted(kept))))
                if mounted:
                    os.unlink(filler)
                else:
                    subprocess.run(["prlimit", "--pid", str(d.proc.pid), "--fsize=unlimited"],
                                   check=True)
                written = faults.metrics(port).get(WRITTEN, 0)
                d.wait_until(lambda: faults.metrics(port).get(WRITTEN, 0) > written,
                             15 * faults.SLOW, 0.2, "snapshots written again")
                log("space back: snapshots written again")
                producer.join()
                faults.converged(case, d, rs.client(), k)
                code = d.stop(timeout=20)
                check(code == 0, "exit %s:\n%s" % (code, d.log_tail()))
    finally:
        if mounted:
            subprocess.run(["umount", "-l", mnt])
        case.cleanup()
        os.rmdir(mnt) if os.path.isdir(mnt) and not os.listdir(mnt) else None


if __name__ == "__main__":
    sys.exit(faults.run(main))
