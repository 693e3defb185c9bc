"""Restart from a snapshot: no event is learned twice, none is lost.

Three daemons read the same topic with their own groups, snapshot directories and Redis
prefixes:
  A  reads every event without interruption;
  B  reads the first half, is stopped with SIGTERM (flush, commit, snapshot), and after the
     second half was produced is started again: it restores the snapshot and resumes there;
  C  writes a snapshot every second and is killed with SIGKILL in the middle of the stream,
     then restarted: Kafka's committed offsets are ahead of its last snapshot, so it must
     seek back to the snapshot's offsets and learn those events again, exactly once.
A final event far ahead in event time resolves every pending example, so at the end all three
must report the same model counters: examples, positives and predictions.
"""

import json
import os
import shutil
import signal
import sys
import tempfile
import time

import harness

TOPIC = "events"
MODEL = "purchase_propensity"

CONFIG = """
kafka:
  brokers: ${KAFKA_BROKERS}
  topics: [%(topic)s]
  group: ${KAFKA_GROUP}
  properties:
    # the killed member stays in its group until its session times out; the restarted one
    # waits for that before it is assigned anything
    session.timeout.ms: 6000
redis:
  url: ${REDIS_URL}
  prefix: ${REDIS_PREFIX}
  flush_interval: 20ms
events:
  types: [view, click, add_to_cart, purchase, review]
features:
  device:   { categorical: context.device }
  campaign: { categorical: context.campaign }
  views_1h: { decayed_count: view, half_life: 1h, transforms: [log1p] }
models:
  %(model)s:
    type: logistic
    features: [device, campaign, views_1h]
    example_on: [view, click]
    label: { positive_on: purchase, within: 30m }
watermark:
  # while one partition catches up it holds the watermark, and examples wait longer than in
  # an uninterrupted run; with the default bound a heavy user could have some evicted, and the
  # runs would differ by design, not by a fault
  max_pending_per_user: 100000
snapshot:
  dir: ${SNAPSHOT_DIR}
  interval: ${SNAPSHOT_INTERVAL}
  keep: 2
""" % {"topic": TOPIC, "model": MODEL}


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-restart-")
    try:
        config = os.path.join(tmp, "pipeline.yaml")
        with open(config, "w") as f:
            f.write(CONFIG)
        lines = harness.eventgen("--events", 8000, "--users", 400, "--seed", 21,
                                 "--format", "keyed").splitlines()
        last_ts = json.loads(lines[-1].split(b"\t", 1)[1])["ts"]
        # not an example itself: it only moves event time a day past every window
        sentinel = ('zz-sentinel\t{"type":"add_to_cart","user_id":"zz-sentinel","ts":%d}'
                    % (last_ts + 86400000)).encode()
        first, second = lines[:4000], lines[4000:] + [sentinel]
        examples_expected = sum(1 for l in lines + [sentinel]
                                if json.loads(l.split(b"\t", 1)[1])["type"] in ("view", "click"))

        with harness.RedisServer() as rs, harness.Broker({TOPIC: 4}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            r = rs.client()

            def env(name, interval="0"):
                return {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_GROUP": "g" + name,
                        "REDIS_URL": rs.url, "REDIS_PREFIX": name,
                        "SNAPSHOT_DIR": os.path.join(tmp, "snap-" + name),
                        "SNAPSHOT_INTERVAL": interval}

            def committed(name):
                return sum(k.committed_offsets("g" + name, TOPIC).values())

            def model(name):
                return r.hgetall("%s:model:%s" % (name, MODEL))

            def finished(name, daemon, total):
                try:
                    return learn_all(name, daemon, total)
                except harness.HarnessError:
                    # the tail is snapshots; the story (restore, rebalances) is at the start
                    print("%s's model: %s\n%s's log, first lines:\n%s"
                          % (name, model(name), name, "\n".join(
                              l for l in daemon.log_text().splitlines()
                              if "snapshot written" not in l)[:6000]))
                    raise

            def learn_all(name, daemon, total):
                # generous: under the sanitizers, with other tests beside it, a restart that
                # must re-learn from its snapshot takes a while
                daemon.wait_until(lambda: committed(name) == total, 120, 0.3,
                                  "group g%s to commit %d" % (name, total))
                daemon.wait_until(lambda: int(model(name).get("examples", 0))
                                  == examples_expected, 90, 0.3,
                                  "%s to learn all %d examples" % (name, examples_expected))
                code = daemon.stop(timeout=20)
                check(code == 0, "%s exit %s:\n%s" % (name, code, daemon.log_tail()))
                return model(name)

            harness.produce_kcat(broker.bootstrap, TOPIC, first)

            # B, part 1: the first half, then a clean stop
            with harness.Daemon(config, env("b")) as b1:
                b1.wait_until(lambda: committed("b") == len(first), 60, 0.3, "b: first half")
                check(b1.stop(timeout=20) == 0, "b1 exit:\n" + b1.log_tail())
                check("snapshot written" in b1.log_text(), "b1 wrote no snapshot")

            # C, part 1: snapshots every second, killed mid-stream after one was written
            with harness.Daemon(config, env("c", "1s")) as c1:
                c1.wait_until(lambda: "snapshot written" in c1.log_text(), 30, 0.1,
                              "c: a periodic snapshot")
                c1.wait_until(lambda: committed("c") == len(first), 60, 0.3, "c: first half")
                time.sleep(0.3)
                c1.proc.send_signal(signal.SIGKILL)
                c1.proc.wait(10)
                c1.proc = None

            harness.produce_python(broker.bootstrap, TOPIC, [l.split(b"\t", 1) for l in second])
            total = len(first) + len(second)
            begin = k.beginning_offsets(TOPIC)
            check(all(o == 0 for o in begin.values()), "beginning offsets %s" % begin)

            with harness.Daemon(config, env("a")) as a:
                ma = finished("a", a, total)
            with harness.Daemon(config, env("b")) as b2:
                mb = finished("b", b2, total)
                check("restored snapshot" in b2.log_text(), "b2 did not restore:\n" +
                      b2.log_tail())
            with harness.Daemon(config, env("c", "1s")) as c2:
                mc = finished("c", c2, total)
                log = c2.log_text()
                check("restored snapshot" in log and "resuming partition from the snapshot"
                      in log, "c2 did not resume from its snapshot:\n" + c2.log_tail())

            for key in ("examples", "positives", "predictions"):
                print("%-12s A %-8s B %-8s C %s" % (key, ma.get(key), mb.get(key), mc.get(key)))
            for key in ("examples", "positives", "predictions"):
                check(ma[key] == mb[key] == mc[key],
                      "%s differ: uninterrupted %s, stopped %s, killed %s"
                      % (key, ma[key], mb[key], mc[key]))
            # the killed run scored the events after its last snapshot twice, but its counters
            # come back with the snapshot, so like the others it counts each event once
            check(ma["predictions"] == str(total),
                  "predictions %s, events %d" % (ma["predictions"], total))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("restart test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
