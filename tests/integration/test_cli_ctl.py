"""propensityctl against a running daemon: `status` and `score` print times as ISO 8601 and
figures rounded (the --json reply keeps the daemon's numbers); `watch` without --json prints
one readable line per score change and follows the feed until interrupted, past its --timeout,
then exits 0."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import harness

TOPIC = "events"
GROUP = "cli-ctl"
ISO = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d{3})?Z"


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def readable(text, what):
    """No figure with more than 4 significant digits after the point, no raw epoch ms."""
    long_fraction = re.findall(r"\b\d+\.\d{5,}\b", text)
    check(not long_fraction, "%s: unrounded figures %r:\n%s" % (what, long_fraction, text))
    epoch_ms = re.findall(r"\b1[5-9]\d{11}\b", text)
    check(not epoch_ms, "%s: raw epoch milliseconds %r:\n%s" % (what, epoch_ms, text))


def main():
    tmp = tempfile.mkdtemp(prefix="pd-cli-ctl-")
    try:
        lines = harness.eventgen("--events", 600, "--users", 20, "--seed", 4,
                                 "--format", "keyed").splitlines()
        first, later = lines[:400], lines[400:]
        user = json.loads(first[0].split(b"\t", 1)[1])["user_id"]
        ctl_path = os.path.join(tmp, "control.sock")
        endpoint = "ipc://" + ctl_path
        feed = "tcp://127.0.0.1:%d" % harness.free_port()
        config = harness.ops_config(tmp, daemon={"control": endpoint, "feed": feed},
                                    snapshot_dir=os.path.join(tmp, "snapshots"))
        with harness.RedisServer() as rs, harness.Broker({TOPIC: 2}) as broker:
            env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_TOPIC": TOPIC,
                   "KAFKA_GROUP": GROUP, "REDIS_URL": rs.url}
            cenv = {"PROPENSITYD_CONTROL": endpoint}
            with harness.Daemon(config, env) as daemon:
                daemon.wait_until(lambda: os.path.exists(ctl_path), 15, 0.05, "control socket")
                harness.produce_kcat(broker.bootstrap, TOPIC, first)
                daemon.wait_until(lambda: harness.control_call(
                    endpoint, {"cmd": "status"})["result"]["events"] == len(first), 60, 0.3,
                    "events consumed")
                check(harness.run_ctl("snapshot", env=cenv).returncode == 0, "snapshot")

                # ---- status: ISO 8601 times, rounded figures
                r = harness.run_ctl("status", env=cenv)
                check(r.returncode == 0, "status: %d %s" % (r.returncode, r.stderr))
                out = r.stdout
                check(re.search(r"^started: %s \(up [^)]+\)$" % ISO, out, re.MULTILINE),
                      "status lacks an ISO 8601 start time:\n" + out)
                check(re.search(r"^  last_written: %s \([^)]+ ago\)$" % ISO, out, re.MULTILINE),
                      "status lacks the snapshot's ISO 8601 time:\n" + out)
                check(re.search(r"^  last_flush: [\d.]+ (ms|s)$", out, re.MULTILINE),
                      "status lacks the last flush as a duration:\n" + out)
                check("_seconds" not in out, "seconds left raw:\n" + out)
                readable(out, "status")
                j = harness.run_ctl("--json", "status", env=cenv)
                raw = json.loads(j.stdout)["result"]
                check(isinstance(raw["uptime_seconds"], (int, float))
                      and "started" not in raw, "--json changed the reply: %r" % raw)
                print("status:\n  " + "\n  ".join(out.splitlines()[:8]))

                r = harness.run_ctl("score", user, env=cenv)
                check(r.returncode == 0, "score: %s" % r.stderr)
                check(re.search(r"^  last_ts: %s$" % ISO, r.stdout, re.MULTILINE),
                      "score lacks an ISO 8601 last_ts:\n" + r.stdout)
                readable(r.stdout, "score")

                # ---- watch: readable lines, follows the feed until interrupted
                watcher = subprocess.Popen(
                    [harness.env_path("PD_CTL"), "--feed", feed, "--timeout", "300", "watch"],
                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                time.sleep(0.5)  # a SUB sees only what is published after it joined
                harness.produce_kcat(broker.bootstrap, TOPIC, later)
                daemon.wait_until(lambda: harness.control_call(
                    endpoint, {"cmd": "status"})["result"]["events"] == len(lines), 60, 0.3,
                    "later events consumed")
                time.sleep(1.5)  # several --timeout spans with nothing on the feed
                if watcher.poll() is not None:
                    raise AssertionError("watch stopped by itself (exit %s): %s"
                                         % (watcher.returncode, watcher.stderr.read()))
                watcher.send_signal(signal.SIGINT)
                out, err = watcher.communicate(timeout=10)
                check(watcher.returncode == 0, "watch after SIGINT: exit %s, %s"
                      % (watcher.returncode, err))
                got = out.splitlines()
                check(got, "watch printed nothing")
                line_re = re.compile(r"^%s  \S+  \S+ ([-\d.e]+|-)(  \([^)]*\))?$" % ISO)
                bad = [x for x in got if not line_re.match(x)]
                check(not bad, "unreadable watch lines: %r" % bad[:5])
                check(not any(x.lstrip().startswith("{") for x in got), "JSON without --json")
                print("watch: %d readable lines, e.g. %r; SIGINT -> exit 0" % (len(got), got[0]))

                code = daemon.stop(timeout=15)
                check(code == 0, "daemon exit %s" % code)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
