"""An example lost to the pending bounds is a loss the daemon reports, the same as replay does.

With watermark.max_pending_per_user: 3, users with several sessions' views open evict their
oldest examples. One partition, so the daemon reads the events in the file's order: with more,
the watermark is the lowest partition's and examples wait longer than in replay, so a bound
that bites evicts more (by design, not by a fault). The daemon, fed the stream through the broker (kcat), must:
  - count the evictions per model and reason in /metrics and in the model's Redis hash, exactly
    as many as `propensityd replay` of the same events counts;
  - log one warning that names the model and the share lost (rate-limited: not one per event);
  - count feature fields that are missing per feature (/metrics), as replay's coverage does.
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import harness

TOPIC = "events"
MODEL = "purchase_propensity"

CONFIG = """
kafka:
  brokers: ${KAFKA_BROKERS}
  topics: [%(topic)s]
  group: evictions
redis:
  url: ${REDIS_URL}
  prefix: ev
  flush_interval: 20ms
events:
  types: [view, click, add_to_cart, purchase, review]
features:
  device:   { categorical: context.device }
  campaign: { categorical: context.campaign }
  missing:  { numeric: context.not_there }
models:
  %(model)s:
    type: logistic
    features: [device, campaign, missing]
    example_on: [view, click]
    label: { positive_on: purchase, within: 30m }
watermark:
  max_pending_per_user: 3
  idle_timeout: 500ms
daemon:
  http: 127.0.0.1:%(port)d
"""


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def metric(text, name, **labels):
    want = ",".join('%s="%s"' % kv for kv in sorted(labels.items()))
    for line in text.splitlines():
        m = re.match(r"^(\w+)(?:\{(.*)\})? (\S+)$", line)
        if m and m.group(1) == name:
            got = ",".join(sorted((m.group(2) or "").split(","))) if m.group(2) else ""
            if got == want:
                return float(m.group(3))
    raise AssertionError("no sample %s{%s}" % (name, want))


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-evictions-")
    try:
        port = harness.free_port()
        config = os.path.join(tmp, "pipeline.yaml")
        with open(config, "w") as f:
            f.write(CONFIG % {"topic": TOPIC, "model": MODEL, "port": port})
        lines = harness.eventgen("--events", 4000, "--users", 40, "--seed", 8,
                                 "--format", "keyed").splitlines()
        events = os.path.join(tmp, "events.jsonl")
        with open(events, "wb") as f:
            f.write(b"\n".join(l.split(b"\t", 1)[1] for l in lines) + b"\n")
        env = dict(os.environ, KAFKA_BROKERS="unused", REDIS_URL="redis://unused")
        out = subprocess.run([harness.env_path("PD_DAEMON"), "replay", "--config", config,
                              "--json", "--quiet", events], env=env, stdout=subprocess.PIPE,
                             timeout=60, check=True).stdout
        rep = json.loads(out)
        want = [m for m in rep["models"] if m["name"] == MODEL][0]
        print("replay: %d examples, evicted %s, pending %d" % (want["examples"], want["evicted"],
                                                              rep["labels"]["pending"]))
        check(want["evicted"]["user_limit"] > 100, "the stream evicts too little to test")
        cov = {c["name"]: c for c in rep["features"]}

        with harness.RedisServer() as rs, harness.Broker({TOPIC: 1}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            harness.produce_kcat(broker.bootstrap, TOPIC, lines)
            with harness.Daemon(config, {"KAFKA_BROKERS": broker.bootstrap,
                                         "REDIS_URL": rs.url}) as d:
                d.wait_until(lambda: sum(k.committed_offsets("evictions", TOPIC).values())
                             == len(lines), 60, 0.3, "every event committed")
                r = rs.client()

                def settled():
                    m = r.hgetall("ev:model:%s" % MODEL)
                    return m if int(m.get("examples", -1)) == want["examples"] else None
                m = d.wait_until(settled, 30, 0.3, "the model to learn replay's examples")
                lost = want["evicted"]["user_limit"] + want["evicted"]["total_limit"]
                check(int(m["evicted"]) == lost, "redis says %s evicted, replay %d"
                      % (m["evicted"], lost))
                text = harness.http_get(port, "/metrics")[1]
                got = metric(text, "propensityd_model_examples_evicted_total", model=MODEL,
                             reason="user_limit")
                check(got == want["evicted"]["user_limit"], "metric %s, replay %s"
                      % (got, want["evicted"]))
                check(metric(text, "propensityd_model_examples_evicted_total", model=MODEL,
                             reason="total_limit") == want["evicted"]["total_limit"],
                      "total_limit evictions differ")
                for name in ("device", "missing"):
                    got = metric(text, "propensityd_feature_field_misses_total", feature=name,
                                 reason="missing")
                    check(got == cov[name]["missing"], "%s misses %s, replay %s"
                          % (name, got, cov[name]))
                check(metric(text, "propensityd_feature_field_misses_total", feature="missing",
                             reason="missing") == len(lines), "not_there is never there")
                check(d.stop(timeout=15) == 0, "exit code")
                warnings = [l for l in d.log_text().splitlines()
                            if "examples evicted before their label resolved" in l]
                print("\n".join(warnings))
                check(len(warnings) == 1, "%d eviction warnings (want 1, rate-limited)"
                      % len(warnings))
                check("model=%s" % MODEL in warnings[0] and "share=" in warnings[0] and
                      "level=warning" in warnings[0], "warning line %r" % warnings[0])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("evictions test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
