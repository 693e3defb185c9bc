"""The live label join gives replay's labels: the daemon consuming at the tail of a stream that is
being produced learns exactly the examples and positives that `propensityd replay` learns from
the same events, also when it is killed with SIGKILL mid-stream and restarted from a snapshot.

The stream: views of items followed, with some probability, by a purchase of the same item by the
same user within 29 minutes (label: purchase of the same item within 30 minutes), one heavy user
with a fifth of all views, keyed by user over 32 partitions. The daemons are started first, then
the events are produced with python3-kafka in paced chunks, so each daemon reads partitions that
are caught up most of the time: exactly when a partition's cached lag reads 0 while its next fetch
(holding a purchase) is still in flight. Two daemons read the topic in their own groups:
  A  uninterrupted;
  C  snapshots every second, is killed with SIGKILL halfway through production and restarted
     at once (it rejoins after its old member's session times out, then catches up).
Both must end with replay's counters. The heavy user has more open examples than the old
default per-user bound (64) allowed, so the test also fails if evictions come back.
"""

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import harness

TOPIC = "events"
PARTITIONS = 32
MODEL = "purchase_after_view"
VIEWS = 24000

CONFIG = """
kafka:
  brokers: ${KAFKA_BROKERS}
  topics: [%(topic)s]
  group: ${KAFKA_GROUP}
  properties:
    # the killed member holds its partitions until its session times out
    session.timeout.ms: 6000
redis:
  url: ${REDIS_URL}
  prefix: ${REDIS_PREFIX}
  flush_interval: 20ms
events:
  types: [view, purchase]
features:
  device:   { categorical: context.device }
  campaign: { categorical: context.campaign }
  views_1h: { decayed_count: view, half_life: 1h, transforms: [log1p] }
models:
  %(model)s:
    type: logistic
    features: [device, campaign, views_1h]
    example_on: [view]
    label: { positive_on: purchase, within: 30m, match: user_item }
watermark:
  # a purchase may come 29.9 minutes after its view: a partition whose events are held up by
  # 7 s of event time (a few dozen events) gets its examples labelled 0 if it is wrongly
  # found idle
  allowed_lateness: 1s%(idle)s
snapshot:
  dir: ${SNAPSHOT_DIR}
  interval: 1s
  keep: 2
""" % {"topic": TOPIC, "model": MODEL, "idle": os.environ.get("PD_TEST_IDLE_TIMEOUT", "")}


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def delay(rng):
    """Purchase delay: half anywhere in the window, half in its last half minute, where a
    watermark that runs ahead of a partition turns a positive into a negative."""
    if rng.random() < 0.5:
        return rng.randint(1000, 1794000)
    return rng.randint(1770000, 1794000)


def stream(n_views, seed):
    """Events sorted by ts: views, and for some of them a purchase of the same item 1 s to 29
    min later. User u0 has a fifth of the views (about one a second of event time)."""
    rng = random.Random(seed)
    devices, campaigns = ["mobile", "desktop", "tablet"], ["k%02d" % i for i in range(30)]
    ts, events = 1764000000000, []
    for i in range(n_views):
        ts += rng.randint(0, 400)
        user = "u0" if rng.random() < 0.2 else "u%d" % rng.randrange(1, 3000)
        item = "i%d" % rng.randrange(2000)
        ctx = {"device": rng.choice(devices), "campaign": rng.choice(campaigns)}
        events.append({"event_id": "v%d" % i, "type": "view", "user_id": user, "item_id": item,
                       "ts": ts, "context": ctx})
        if rng.random() < 0.12:
            events.append({"event_id": "p%d" % i, "type": "purchase", "user_id": user,
                           "item_id": item, "ts": ts + delay(rng),
                           "price": 10.0, "context": ctx})
    events.sort(key=lambda e: e["ts"])
    return events


def replay_counts(config, events_path, env):
    full_env = dict(os.environ)
    full_env.update(env)
    out = subprocess.run([harness.env_path("PD_DAEMON"), "replay", "--config", config, "--json",
                          "--quiet", events_path], env=full_env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, timeout=120, check=True)
    report = json.loads(out.stdout)
    model = [m for m in report["models"] if m["name"] == MODEL][0]
    return report, model["examples"], model["positives"]


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-live-join-")
    try:
        config = os.path.join(tmp, "pipeline.yaml")
        with open(config, "w") as f:
            f.write(CONFIG)
        events = stream(VIEWS, 11)
        lines = [json.dumps(e, separators=(",", ":")) for e in events]
        events_path = os.path.join(tmp, "events.jsonl")
        with open(events_path, "w") as f:
            f.write("\n".join(lines) + "\n")
        report, want_examples, want_positives = replay_counts(config, events_path, {
            "KAFKA_BROKERS": "unused", "KAFKA_GROUP": "unused", "REDIS_URL": "redis://unused",
            "REDIS_PREFIX": "unused", "SNAPSHOT_DIR": os.path.join(tmp, "unused")})
        print("replay: %d examples, %d positives, labels %s"
              % (want_examples, want_positives, report["labels"]))
        check(report["labels"]["evicted_user"] == 0 and report["labels"]["evicted_total"] == 0,
              "replay evicted examples with the default bounds: %s" % report["labels"])
        check(want_positives > 1000 and want_examples > VIEWS * 0.8,
              "the stream resolves too little to test: %d examples, %d positives"
              % (want_examples, want_positives))

        with harness.RedisServer() as rs, harness.Broker({TOPIC: PARTITIONS}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            r = rs.client()

            def env(name):
                return {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_GROUP": "g" + name,
                        "REDIS_URL": rs.url, "REDIS_PREFIX": name,
                        "SNAPSHOT_DIR": os.path.join(tmp, "snap-" + name)}

            def model(name):
                return r.hgetall("%s:model:%s" % (name, MODEL))

            def committed(name):
                return sum(k.committed_offsets("g" + name, TOPIC).values())

            def assigned(daemon):
                return "assigned 32 partition(s)" in daemon.log_text()

            a = harness.Daemon(config, env("a")).start()
            c = harness.Daemon(config, env("c")).start()
            a.wait_until(lambda: assigned(a), 60, 0.2, "a: partitions assigned")
            c.wait_until(lambda: assigned(c), 60, 0.2, "c: partitions assigned")

            # paced production: the daemons read at the tail, as in production after catch-up
            producer = harness.KafkaProducer(bootstrap_servers=broker.bootstrap, acks="all",
                                             linger_ms=2)
            chunk, killed = 400, False
            try:
                for start in range(0, len(lines), chunk):
                    for e, line in zip(events[start:start + chunk], lines[start:start + chunk]):
                        producer.send(TOPIC, key=e["user_id"].encode(), value=line.encode())
                    producer.flush(30)
                    time.sleep(0.1)
                    if not killed and start >= len(lines) // 2:
                        c.wait_until(lambda: "snapshot written" in c.log_text(), 30, 0.1,
                                     "c: a snapshot")
                        c.proc.send_signal(signal.SIGKILL)
                        c.proc.wait(10)
                        c.proc = None
                        c.cleanup()
                        c = harness.Daemon(config, env("c")).start()
                        killed = True
            finally:
                producer.close(30)
            total = len(lines)
            begin = k.beginning_offsets(TOPIC)
            check(all(o == 0 for o in begin.values()),
                  "the broker dropped the start of a partition: beginning offsets %s" % begin)
            check(sum(k.end_offsets(TOPIC).values()) == total, "not every event was produced")

            for name, daemon in (("a", a), ("c", c)):
                daemon.wait_until(lambda: committed(name) == total, 150, 0.3,
                                  "group g%s to commit %d" % (name, total))

                def same_as_replay():
                    m = model(name)
                    return (int(m.get("examples", -1)) == want_examples and
                            int(m.get("positives", -1)) == want_positives)
                try:
                    # the last examples resolve once every partition is idle (idle_timeout)
                    daemon.wait_until(same_as_replay, 60, 0.5, "%s to learn what replay learns"
                                      % name)
                except harness.HarnessError:
                    raise AssertionError("daemon %s learned %s examples / %s positives, replay "
                                         "%d / %d\n%s" % (name, model(name).get("examples"),
                                                          model(name).get("positives"),
                                                          want_examples, want_positives,
                                                          daemon.log_tail(60)))
                print("daemon %s: %s examples, %s positives (replay %d, %d)"
                      % (name, model(name)["examples"], model(name)["positives"], want_examples,
                         want_positives))
            log = c.log_text()
            check("restored snapshot" in log and "resuming partition from the snapshot" in log,
                  "the restarted daemon did not resume from its snapshot:\n" + c.log_tail())
            for name, daemon in (("a", a), ("c", c)):
                code = daemon.stop(timeout=20)
                check(code == 0, "%s exit %s:\n%s" % (name, code, daemon.log_tail()))
                daemon.cleanup()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("live join test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
