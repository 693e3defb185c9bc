"""Hot reload under traffic: SIGHUP changes a hyper-parameter and adds a model.

What it checks:
  - the changed model keeps its learned state: its example count and progressive metrics go
    on from where they were (not from zero), its generation goes up by one
  - the added model starts learning and its scores appear in the users' hashes
  - no event is lost: every produced event is committed and was predicted by the old model
  - a broken file is refused with file:line:column, the running config stays (the new model
    keeps learning after it), and a change of topic is refused as needing a restart
  - SIGTERM still exits 0
"""

import os
import signal
import shutil
import sys
import tempfile
import time

import harness

TOPIC = "events"
GROUP = "reload"
PREFIX = "pd"

BASE = """
kafka:
  brokers: ${KAFKA_BROKERS}
  topics: [%(topic)s]
  group: ${KAFKA_GROUP}
redis:
  url: ${REDIS_URL}
  prefix: %(prefix)s
  flush_interval: 20ms
events:
  types: [view, click, add_to_cart, purchase, review]
features:
  device:   { categorical: context.device }
  country:  { categorical: context.country }
  campaign: { categorical: context.campaign }
  views_1h: { decayed_count: view, half_life: 1h, transforms: [log1p] }
models:
  purchase_propensity:
    type: logistic
    alpha: %(alpha)s
    features: [device, country, campaign, views_1h]
    example_on: [view, click]
    label: { positive_on: purchase, within: 30m }
    output: purchase_p
%(extra)s
"""

CLICK_MODEL = """
  click_through:
    type: logistic
    optimizer: adagrad
    learning_rate: 0.05
    features: [device, campaign]
    example_on: [view]
    label: { positive_on: click, within: 10m, match: user_item }
    output: click_p
"""


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def write(path, text):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)  # the daemon must never read a half-written file


def model_hash(r, name):
    h = r.hgetall("%s:model:%s" % (PREFIX, name))
    return {k: v for k, v in h.items()}


def wait_log(daemon, text, count=1, timeout=20.0):
    daemon.wait_until(lambda: daemon.log_text().count(text) >= count, timeout, 0.1,
                      "log line %r (x%d)" % (text, count))


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-reload-")
    try:
        config = os.path.join(tmp, "pipeline.yaml")
        params = {"topic": TOPIC, "prefix": PREFIX, "alpha": "0.1", "extra": ""}
        write(config, BASE % params)

        lines = harness.eventgen("--events", 6000, "--users", 300, "--seed", 7,
                                 "--format", "keyed").splitlines()
        phase_a, phase_b, phase_c = lines[:2000], lines[2000:4000], lines[4000:]

        with harness.RedisServer() as rs, harness.Broker({TOPIC: 4}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            r = rs.client()
            env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_GROUP": GROUP,
                   "REDIS_URL": rs.url}

            def committed_total():
                return sum(k.committed_offsets(GROUP, TOPIC).values())

            with harness.Daemon(config, env) as daemon:
                harness.produce_kcat(broker.bootstrap, TOPIC, phase_a)
                daemon.wait_until(lambda: committed_total() == len(phase_a), 60, 0.3,
                                  "phase A committed")
                # the model summary is written every second: wait for one that covers phase A
                daemon.wait_until(
                    lambda: int(model_hash(r, "purchase_propensity").get("predictions", 0))
                    == len(phase_a), 10, 0.2, "model summary after phase A")
                before = model_hash(r, "purchase_propensity")
                ex_a, gen_a = int(before["examples"]), int(before["generation"])
                print("after phase A: %s" % before)
                check(ex_a > 500, "model learned too little in phase A: %s" % before)

                # 1. a good reload while events keep coming: new alpha + a new model
                params.update(alpha="0.05", extra=CLICK_MODEL)
                write(config, BASE % params)
                split = len(phase_b) // 2
                harness.produce_python(broker.bootstrap, TOPIC,
                                       [l.split(b"\t", 1) for l in phase_b[:split]])
                daemon.proc.send_signal(signal.SIGHUP)
                harness.produce_python(broker.bootstrap, TOPIC,
                                       [l.split(b"\t", 1) for l in phase_b[split:]])
                wait_log(daemon, "configuration reloaded")
                total_b = len(phase_a) + len(phase_b)
                daemon.wait_until(lambda: committed_total() == total_b, 60, 0.3,
                                  "phase B committed")
                daemon.wait_until(
                    lambda: int(model_hash(r, "purchase_propensity").get("predictions", 0))
                    == total_b, 10, 0.2, "model summary after phase B")
                after = model_hash(r, "purchase_propensity")
                click = model_hash(r, "click_through")
                print("after phase B: %s\nnew model: %s" % (after, click))
                check(int(after["generation"]) == gen_a + 1,
                      "generation should go %d -> %d: %s" % (gen_a, gen_a + 1, after))
                check(int(after["examples"]) > ex_a,
                      "examples restarted or stalled: %d -> %s" % (ex_a, after["examples"]))
                # every event was scored by the kept model exactly once: nothing lost or doubled
                check(int(after["predictions"]) == total_b,
                      "predictions %s != events %d" % (after["predictions"], total_b))
                check(click and int(click["examples"]) > 100,
                      "the added model did not learn: %s" % click)
                with_click = sum(1 for key in r.scan_iter("%s:u:*" % PREFIX)
                                 if r.hexists(key, "click_p"))
                check(with_click > 50, "only %d users have click_p" % with_click)

                # 2. a broken file: refused with its position, the running config stays
                write(config, (BASE % params).replace("alpha: 0.05", "alpah: 0.05"))
                daemon.proc.send_signal(signal.SIGHUP)
                wait_log(daemon, "keeping the running configuration")
                text = daemon.log_text()
                check("pipeline.yaml:" in text and "unknown key" in text
                      and 'did you mean \\"alpha\\"' in text,
                      "no positioned error for the broken file:\n%s" % daemon.log_tail())

                # 3. a topic change needs a restart
                write(config, (BASE % dict(params, topic="other")))
                daemon.proc.send_signal(signal.SIGHUP)
                wait_log(daemon, "restart to apply")

                clicks_before = int(model_hash(r, "click_through")["examples"])
                harness.produce_kcat(broker.bootstrap, TOPIC, phase_c)
                total = len(lines)
                daemon.wait_until(lambda: committed_total() == total, 60, 0.3,
                                  "phase C committed")
                daemon.wait_until(
                    lambda: int(model_hash(r, "click_through").get("examples", 0))
                    > clicks_before, 10, 0.2, "the added model to keep learning")
                code = daemon.stop(timeout=15)
                check(code == 0, "exit code %s; log tail:\n%s" % (code, daemon.log_tail()))
                errors = [l for l in daemon.error_lines()
                          if "reload" not in l and "pipeline.yaml:" not in l
                          and "has errors" not in l]
                check(not errors, "unexpected error lines:\n  " + "\n  ".join(errors[:10]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("reload test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
