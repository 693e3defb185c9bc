"""Privacy requests: `propensityctl forget USER` and a `forget` event on the topic.

What it checks:
  - before: both users have a Redis hash and `score` knows them
  - forget over the control socket: the Redis keys are gone when the reply comes, `score`
    no longer knows the user, an audit line is logged that names the user only by hash
    (the user id appears nowhere in the log), and the snapshot directory holds one
    snapshot, which does not contain the id
  - a forget event does the same for its user (keys gone, state gone)
  - after a restart from the snapshot, both are still gone while other users are restored
"""

import glob
import json
import os
import re
import shutil
import struct
import sys
import tempfile

import harness

TOPIC = "events"
GROUP = "ops-forget"
PREFIX = "pd"


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def holds_id(data, user):
    """Whether a snapshot holds user's id as the snapshot writes strings (a little-endian u32
    length, then the bytes): a short id such as "u8" also turns up by chance in the binary
    weights, and as the start of "u80"."""
    raw = user.encode()
    return struct.pack("<I", len(raw)) + raw in data


def snapshot_files(snapdir):
    return sorted(p for p in glob.glob(os.path.join(snapdir, "*"))
                  if os.path.isfile(p) and not p.endswith(".tmp"))


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-ops-forget-")
    try:
        lines = harness.eventgen("--events", 600, "--users", 30, "--seed", 9,
                                 "--format", "keyed").splitlines()
        events = [json.loads(x.split(b"\t", 1)[1]) for x in lines]
        counts = {}
        for e in events:
            counts[e["user_id"]] = counts.get(e["user_id"], 0) + 1
        ranked = sorted(counts, key=lambda u: -counts[u])
        by_ctl, by_event, kept = ranked[0], ranked[1], ranked[2]
        snapdir = os.path.join(tmp, "snapshots")
        ctl_ep = "ipc://%s/control.sock" % tmp
        config = harness.ops_config(tmp, daemon={"control": ctl_ep}, snapshot_dir=snapdir,
                                    forget_type=True)
        cenv = {"PROPENSITYD_CONTROL": ctl_ep}
        with harness.RedisServer() as rs, harness.Broker({TOPIC: 2}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            r = rs.client()
            env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_TOPIC": TOPIC,
                   "KAFKA_GROUP": GROUP, "REDIS_URL": rs.url}
            harness.produce_kcat(broker.bootstrap, TOPIC, lines)
            produced = {p: o for p, o in k.end_offsets(TOPIC).items() if o > 0}
            log_text = ""
            with harness.Daemon(config, env) as d:
                print("first run log: %s" % d.log_path)
                d.wait_until(lambda: k.committed_offsets(GROUP, TOPIC) == produced, 60, 0.3,
                             "offsets committed")
                for u in (by_ctl, by_event, kept):
                    check(r.exists("%s:u:%s" % (PREFIX, u)), "no redis hash for %s" % u)
                    res = harness.run_ctl("score", u, env=cenv)
                    check(res.returncode == 0, "score %s before: %s" % (u, res.stderr))
                harness.control_call(ctl_ep, {"cmd": "snapshot"})
                harness.control_call(ctl_ep, {"cmd": "snapshot"})
                # two on demand, plus the one written when the partitions were assigned
                check(len(snapshot_files(snapdir)) >= 2, "snapshots before: %s"
                      % snapshot_files(snapdir))

                # ---- forget over the control socket
                res = harness.run_ctl("--json", "forget", by_ctl, env=cenv)
                check(res.returncode == 0, "forget: %s %s" % (res.stdout, res.stderr))
                reply = json.loads(res.stdout)["result"]
                print("forget reply: %s" % reply)
                check(reply["known"] is True and reply["redis_deleted"] is True, reply)
                check(not r.exists("%s:u:%s" % (PREFIX, by_ctl)), "redis key left behind")
                res = harness.run_ctl("score", by_ctl, env=cenv)
                check(res.returncode == 1 and "unknown user" in res.stderr,
                      "score after forget: %d %s" % (res.returncode, res.stdout))
                snaps = snapshot_files(snapdir)
                check(snaps == [reply["snapshot"]], "after forget the snapshots are %s, "
                      "want only %s" % (snaps, reply["snapshot"]))
                with open(snaps[0], "rb") as f:
                    check(not holds_id(f.read(), by_ctl), "the snapshot still holds the id")
                again = harness.control_call(ctl_ep, {"cmd": "forget", "user": by_ctl})
                check(again["ok"] and again["result"]["known"] is False, again)

                # ---- forget as an event on the topic
                ts = max(e["ts"] for e in events) + 1000
                harness.produce_events(broker.bootstrap, TOPIC, [
                    {"event_id": "forget-1", "type": "forget", "user_id": by_event, "ts": ts}])
                d.wait_until(lambda: not r.exists("%s:u:%s" % (PREFIX, by_event)), 30, 0.2,
                             "redis key of the forget event's user deleted")
                check(not harness.control_call(ctl_ep, {"cmd": "score", "user": by_event})["ok"],
                      "score knows the user after a forget event")
                d.wait_until(lambda: len(snapshot_files(snapdir)) == 1 and all(
                    not holds_id(open(p, "rb").read(), by_event)
                    for p in snapshot_files(snapdir)), 10, 0.2,
                    "a snapshot without the forget event's user")

                check(d.stop(timeout=15) == 0, "exit code")
                log_text = d.log_text()
                errors = d.error_lines()
                check(not errors, "error lines:\n  " + "\n  ".join(errors[:10]))
            audits = [l for l in log_text.splitlines() if "audit=forget" in l]
            print("audit lines:\n  " + "\n  ".join(audits))
            check(len(audits) == 3, "%d audit lines" % len(audits))
            check(all(re.search(r"user_hash=[0-9a-f]{16}", a) for a in audits), audits)
            check(any("source=control" in a for a in audits) and
                  any("source=event" in a for a in audits), audits)
            for u in (by_ctl, by_event):
                check(u not in log_text, "the log names the forgotten user %s" % u)
            for p in snapshot_files(snapdir):
                with open(p, "rb") as f:
                    data = f.read()
                check(not holds_id(data, by_ctl) and not holds_id(data, by_event),
                      "the stop snapshot %s holds a forgotten id" % p)

            # ---- restart from the snapshot: still gone, the others restored
            with harness.Daemon(config, env) as d:
                # the state comes from the snapshot before Kafka is even joined
                d.wait_until(lambda: os.path.exists(ctl_ep[6:]), 15, 0.05, "control socket")
                st = harness.control_call(ctl_ep, {"cmd": "status"}, timeout=15)["result"]
                check(st["users"] == len(counts) - 2, "restored %d users, want %d"
                      % (st["users"], len(counts) - 2))
                check(harness.control_call(ctl_ep, {"cmd": "score", "user": kept})["ok"],
                      "a kept user was not restored")
                for u in (by_ctl, by_event):
                    reply = harness.control_call(ctl_ep, {"cmd": "score", "user": u})
                    check(not reply["ok"], "%s is back after the restart: %r" % (u, reply))
                    check(not r.exists("%s:u:%s" % (PREFIX, u)), "%s's key is back" % u)
                check(d.stop(timeout=15) == 0, "exit code after restart")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ops forget test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
