#!/usr/bin/python3
"""Scale-out, for tests/bench/run: 1, 2 and 3 instances of one consumer group with sync on.

Every instance runs on the same machine (its cores are shared by all of them, the broker, Redis
and kcat: the output says how many), in one consumer group over a topic of 12 partitions keyed
by user id (kcat -P with murmur2, as harness.py produces), `kafka.handover: redis`, the range
assignor (librdkafka's mock broker mishandles cooperative rebalances with several members:
tests/integration/test_scale_out.py) and `sync:` on (model deltas over a topic of their own every
--interval). Each stream is produced first and checked to be whole (every beginning offset 0:
the mock broker keeps a bounded log per partition), then for N = 1, 2, 3 a fresh group (its
own group id, delta topic and Redis prefix) of N instances is started at once and timed from
the first instance's assignment until the group's committed offsets equal the end offsets.
Offsets are committed only after Redis acknowledged the scores, so that is the time to score
every event into Redis.

1. Throughput: pd-eventgen events (tests/bench/bench_20.yaml, as the daemon section) beside
   `kcat -C -e` reading the same topic in the same run (the raw consume rate; the ratio is the
   figure), with each instance's CPU, the sync traffic (propensityd_sync_bytes_total published,
   per instance and in all, per second) and the sync lag (propensityd_sync_lag_seconds).
2. Quality, on the same events for every N: the example-weighted mean of the instances'
   progressive log loss (propensityd_model_log_loss, weights propensityd_model_examples_total)
   against the single instance's (target: within 2%), and how far the instances' models
   agree at the end (the `status` reply's sync probes: scores of fixed vectors spread over the
   table, compared in log-odds between the instances and with the single instance's). Two
   streams: gen_truth.py (the tools folder beside the data; it prints the Bayes-optimal and the
   base-rate log loss, so `gap` is the share of the difference closed) and the TalkingData
   sample of ../shared/data (tests/bench/quality/talkingdata.yaml; users = ip addresses).

A benchmark, never a test: it prints figures and notes anything odd, and exits non-zero only
when a tool fails (a daemon dying or not stopping included).

Usage: scale_out.py [--instances 1,2,3] [--events N] [--views N] [--interval MS] [--smoke]
                    [--data-dir DIR] [--tools-dir DIR] [--only throughput|gen_truth|talkingdata]
Needs PD_BROKER, PD_DAEMON, PD_EVENTGEN, PD_SOURCE_ROOT (tests/bench/run sets them), and
optionally PD_REDIS_SERVER, PD_KCAT, PD_DATA_DIR (default <repo root>/../shared/data),
PD_TOOLS_DIR (default <repo root>/../shared/tools).
Every process it starts is stopped on exit, on errors and on SIGTERM (harness.py).
"""

import argparse
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))
import harness  # noqa: E402  (tests/integration/harness.py)

try:
    import yaml
except ImportError as exc:  # pragma: no cover
    sys.exit("scale_out.py: PyYAML is missing (%s); run scripts/install-deps" % exc)

HERE = os.path.dirname(os.path.abspath(__file__))
PARTITIONS = 12
POLL = 0.05             # committed offsets, while consuming
METRICS_EVERY = 0.5     # each instance's /metrics, while consuming
CONSUME_TIMEOUT = 180.0
QUIET_S = 2.5           # learning is over once no instance's counts moved for this long
TARGET = 0.02           # relative log loss difference to the single instance

# gen_truth.py's events: as tests/bench/quality_defaults.py learns them (defaults, ftrl_multi)
GEN_TRUTH_YAML = """
kafka: { brokers: unused, topics: [events], group: quality }
events: { types: [view, purchase] }
features:
  device:   { categorical: context.device }
  country:  { categorical: context.country }
  campaign: { categorical: context.campaign }
  category: { categorical: context.category }
  country_x_campaign: { cross: [country, campaign] }
models:
  buys:
    type: logistic
    features: [device, country, campaign, category, country_x_campaign]
    example_on: [view]
    label: { positive_on: purchase, within: 30m, match: user_item }
"""


class Odd(list):
    """Things worth a look, printed at the end (the run goes on)."""

    def note(self, text):
        self.append(text)
        print("  ODD: " + text, flush=True)


ODD = Odd()


def logit(p):
    p = min(max(p, 1e-12), 1 - 1e-12)
    return math.log(p / (1 - p))


def cpu_seconds(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def machine():
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return cpu, os.cpu_count() or 0


# ---- streams ----------------------------------------------------------------------------------


class Stream:
    """A topic of keyed events and the pipeline that learns them."""

    def __init__(self, name, topic, keyed_path, config_text, model, optimum=None, rate=None,
                 jsonl=None):
        self.name, self.topic, self.path = name, topic, keyed_path
        self.rate = rate      # None: produced first (a backlog); else produced live at this rate
        self.jsonl = jsonl    # the events as a file, for replay
        self.config_text, self.model, self.optimum = config_text, model, optimum
        with open(keyed_path, "rb") as f:
            self.count = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 20), b""))
        self.size = os.path.getsize(keyed_path)
        self.produced = None


def keyed_from_jsonl(src, dst):
    """USER<TAB>JSON lines from a JSON-lines event file (keyed by user_id)."""
    n = 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        for line in fin:
            line = line.strip()
            if not line:
                continue
            user = json.loads(line).get("user_id") or "nobody"
            fout.write(user.encode() + b"\t" + line + b"\n")
            n += 1
    return n


def kcat_produce(bootstrap, topic, path):
    argv = [harness._tool("PD_KCAT", "kcat"), "-P", "-b", bootstrap, "-t", topic,
            "-K", harness.KCAT_KEY_DELIM, "-X", "topic.partitioner=" + harness.KCAT_PARTITIONER,
            "-X", "queue.buffering.max.messages=1000000", "-X", "linger.ms=20", "-l", path]
    t0 = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    secs = time.monotonic() - t0
    if proc.returncode != 0 or b"ERROR" in proc.stderr:
        raise harness.HarnessError("kcat -P failed (%d): %s"
                                   % (proc.returncode, proc.stderr.decode(errors="replace")))
    return secs


def kcat_consume(bootstrap, topic, expected):
    """Seconds for `kcat -C -e` to read the topic from the beginning, values to a pipe."""
    argv = [harness._tool("PD_KCAT", "kcat"), "-C", "-b", bootstrap, "-t", topic,
            "-o", "beginning", "-e", "-q", "-f", "%s\\n"]
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    count = 0
    while True:
        chunk = proc.stdout.read(1 << 20)
        if not chunk:
            break
        count += chunk.count(b"\n")
    err = proc.stderr.read()
    proc.wait()
    secs = time.monotonic() - t0
    if proc.returncode != 0 or count != expected:
        raise harness.HarnessError("kcat -C read %d of %d messages (exit %d): %s"
                                   % (count, expected, proc.returncode,
                                      err.decode(errors="replace")))
    return secs


def produce(stream, bootstrap, k):
    secs = kcat_produce(bootstrap, stream.topic, stream.path)
    end = k.end_offsets(stream.topic)
    begin = k.beginning_offsets(stream.topic)
    # The mock broker keeps a bounded log per partition and drops from the front: counting
    # from end offsets is only right while every beginning offset is 0.
    if any(off != 0 for off in begin.values()):
        raise harness.HarnessError(
            "%s: the broker dropped messages (beginning offsets %s): use fewer events"
            % (stream.name, {p: o for p, o in begin.items() if o}))
    if sum(end.values()) != stream.count:
        raise harness.HarnessError("%s: produced %d events, end offsets sum to %d"
                                   % (stream.name, stream.count, sum(end.values())))
    stream.produced = {p: off for p, off in end.items() if off > 0}
    sizes = sorted(end.values())
    print("  %-11s %7d events (%5.1f MB) into %d partitions in %.2f s; events per partition "
          "%d..%d" % (stream.name, stream.count, stream.size / 1e6, PARTITIONS, secs,
                      sizes[0], sizes[-1]), flush=True)


# ---- a group of instances ---------------------------------------------------------------------


def pipeline(stream, topic, directory, name, bootstrap, redis_url, group, prefix, sync_topic,
             interval_ms, http_port, control):
    conf = yaml.safe_load(stream.config_text)
    for key in ("kafka", "redis", "sync", "daemon"):
        conf.pop(key, None)
    conf["kafka"] = {
        "brokers": bootstrap, "topics": [topic], "group": group, "start": "earliest",
        "handover": "redis",
        "properties": {
            # the eager protocol: see tests/integration/test_scale_out.py
            "partition.assignment.strategy": "range",
            "session.timeout.ms": "6000",
            "heartbeat.interval.ms": "500",
        },
    }
    conf["redis"] = {"url": redis_url, "prefix": prefix, "ttl": "1h", "flush_interval": "50ms"}
    conf["sync"] = {"enabled": True, "topic": sync_topic, "interval": "%dms" % interval_ms,
                    "instance_id": "%s-%s" % (group, name)}
    conf["daemon"] = {"http": "127.0.0.1:%d" % http_port, "control": control}
    # partitions that are caught up stop holding the watermark back after 2 s, not 10
    wm = conf.get("watermark") or {}
    wm["idle_timeout"] = "2s"
    conf["watermark"] = wm
    path = os.path.join(directory, "pipeline-%s.yaml" % name)
    with open(path, "w") as f:
        yaml.safe_dump(conf, f, sort_keys=False)
    return path


class Instance:
    def __init__(self, name, config, port, control, log_path):
        self.name, self.port, self.control = name, port, control
        self.daemon = harness.Daemon(config, {}, log_path=log_path).start()
        self.assigned_at = None
        self.cpu0 = None

    @property
    def pid(self):
        return self.daemon.proc.pid

    def metrics(self):
        return harness.metrics_samples(self.port, timeout=5.0)

    def status(self):
        reply = harness.control_call(self.control, {"cmd": "status"}, timeout=5.0)
        if not reply.get("ok"):
            raise harness.HarnessError("%s: status failed: %s" % (self.name, reply))
        return reply["result"]


def counts(m, model):
    """(kafka messages, examples learned, positives, pending) of one /metrics sample."""
    return (m.get("propensityd_kafka_messages_total", 0.0),
            m.get('propensityd_model_examples_total{model="%s"}' % model, 0.0),
            m.get('propensityd_model_positive_examples_total{model="%s"}' % model, 0.0),
            m.get("propensityd_pending_examples", 0.0))


def sync_bytes(m):
    return m.get('propensityd_sync_bytes_total{direction="published"}', 0.0)


class Retry(Exception):
    """The group's first generation left a member without partitions: run it again."""


def paced_producer(bootstrap, topic, path, rate, state):
    """A thread producing the keyed lines of `path` at `rate` events/s with kafka-python
    (murmur2 on the key, the partitions kcat -P gives); state gets "t0", "t1", "sent"."""
    import threading

    def run():
        producer = harness.KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=5,
                                         batch_size=65536, max_request_size=1048576)
        try:
            t0 = state["t0"] = time.monotonic()
            sent = 0
            with open(path, "rb") as f:
                for line in f:
                    key, _, value = line.rstrip(b"\n").partition(b"\t")
                    producer.send(topic, key=key, value=value)
                    sent += 1
                    if sent % 200 == 0:
                        ahead = t0 + sent / rate - time.monotonic()
                        if ahead > 0:
                            time.sleep(ahead)
            producer.flush(60)
            state["sent"] = sent
            state["t1"] = time.monotonic()
        except Exception as exc:  # noqa: BLE001 - reported by the caller
            state["error"] = repr(exc)
        finally:
            producer.close(30)

    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def run_group(stream, n, ctx, tmp, run):
    """Runs n instances over the stream until the group committed it, then until learning and
    sync settled; returns a dict of figures. A live stream (ctx["rate"]) is produced into a
    topic of its own while the group consumes it, once every member holds partitions."""
    group = "so-%s-%d-%d" % (stream.name, n, run)
    sync_topic = "deltas-%s-%d-%d" % (stream.name, n, run)
    prefix = "so%s%d%d" % (stream.name, n, run)
    live = stream.rate is not None
    topic = "%s-%d-%d" % (stream.topic, n, run) if live else stream.topic
    k = ctx["k"]
    d = os.path.join(tmp, group)
    os.mkdir(d)
    insts = []
    try:
        for i in range(n):
            name = chr(ord("a") + i)
            port = harness.free_port()
            control = "ipc://%s/control-%s.sock" % (d, name)
            config = pipeline(stream, topic, d, name, ctx["bootstrap"], ctx["redis_url"], group,
                              prefix, sync_topic, ctx["interval_ms"], port, control)
            insts.append(Instance(name, config, port, control,
                                  os.path.join(d, "propensityd-%s.log" % name)))
        t_start = time.monotonic()

        def alive():
            for inst in insts:
                inst.daemon.check_alive()

        def held(ms):
            return {name: m.get("propensityd_kafka_assigned_partitions", 0)
                    for name, m in ms.items()}

        def settled(h):
            return sum(h.values()) == PARTITIONS and all(v > 0 for v in h.values())

        # the first assignment (the mock broker delays a group's first join by 3 s)
        first_m = {}
        while True:
            alive()
            now = time.monotonic()
            for inst in insts:
                try:
                    m = inst.metrics()
                except Exception:  # noqa: BLE001 - not serving yet
                    continue
                if m.get("propensityd_kafka_assigned_partitions", 0) > 0:
                    inst.assigned_at = inst.assigned_at or now
                    first_m.setdefault(inst.name, (now, m))
            if first_m:
                break
            if now - t_start > 60:
                raise harness.HarnessError("%s: no instance was assigned in 60 s; log tail:\n%s"
                                           % (group, insts[0].daemon.log_tail()))
            time.sleep(POLL)
        t0 = min(inst.assigned_at for inst in insts if inst.assigned_at is not None)
        for inst in insts:
            inst.cpu0 = cpu_seconds(inst.pid)

        produced = stream.produced
        feed = {}
        feeder = None
        first = None      # (time, events committed) at the first commit seen
        lag_max = 0.0
        next_metrics = time.monotonic()
        is_settled = n == 1
        while True:
            alive()
            now = time.monotonic()
            if now >= next_metrics:
                ms = {}
                for inst in insts:
                    ms[inst.name] = m = inst.metrics()
                    if m.get("propensityd_kafka_assigned_partitions", 0) > 0:
                        inst.assigned_at = inst.assigned_at or now
                        first_m.setdefault(inst.name, (now, m))
                    lag_max = max(lag_max, m.get("propensityd_sync_lag_seconds", 0.0))
                h = held(ms)
                if not is_settled:
                    if settled(h):
                        is_settled = True
                    elif now - t0 > 1.5:
                        raise Retry("%s: %.1f s after the first assignment the members hold "
                                    "%s" % (group, now - t0, h))
                next_metrics = now + (METRICS_EVERY if is_settled else 0.2)
            if live and is_settled and feeder is None:
                feeder = paced_producer(ctx["bootstrap"], topic, stream.path, stream.rate, feed)
            if live:
                if "error" in feed:
                    raise harness.HarnessError("%s: producing failed: %s" % (group, feed["error"]))
                if "t1" in feed and produced is None:
                    produced = {p: off for p, off in k.end_offsets(topic).items() if off > 0}
                    if sum(produced.values()) != stream.count:
                        raise harness.HarnessError("%s: produced %d, end offsets sum to %d"
                                                   % (group, stream.count,
                                                      sum(produced.values())))
            if produced is not None or not live:
                committed = k.committed_offsets(group, topic)
                done = sum(committed.values())
                if first is None and done > 0:
                    first = (now, done)
                if committed == produced:
                    break
            if now - t0 > CONSUME_TIMEOUT:
                raise harness.HarnessError(
                    "%s: the group did not commit everything in %.0f s; log tail of a:\n%s"
                    % (group, CONSUME_TIMEOUT, insts[0].daemon.log_tail()))
            time.sleep(POLL)
        t_end = time.monotonic()
        cpu_end = {inst.name: cpu_seconds(inst.pid) for inst in insts}
        m_end = {inst.name: inst.metrics() for inst in insts}
        assigned = held(m_end)
        if not settled(assigned):
            raise Retry("%s: the members hold %s at the end" % (group, assigned))
        for m in m_end.values():
            lag_max = max(lag_max, m.get("propensityd_sync_lag_seconds", 0.0))
        if live:
            begin = k.beginning_offsets(topic)
            if any(off != 0 for off in begin.values()):
                ODD.note("%s: the broker dropped the start of partitions %s (they had been "
                         "consumed: the group committed every end offset)"
                         % (group, {p: o for p, o in begin.items() if o}))

        out = {"n": n, "group": group, "events": stream.count, "secs": t_end - t0,
               "rate": stream.count / (t_end - t0), "join_secs": t0 - t_start,
               "assigned": assigned, "lag_max": lag_max}
        if live:
            out["feed_rate"] = feed["sent"] / (feed["t1"] - feed["t0"])
            out["tail_secs"] = t_end - feed["t1"]  # last produced -> everything committed
        # a member first seen holding partitions in the final sample got them by then
        spread = max(inst.assigned_at or t_end for inst in insts) - t0
        if spread > 1.0:
            ODD.note("%s: the last member got partitions %.1f s after the first"
                     % (group, spread))
        if first is not None and first[1] < stream.count and t_end - first[0] > 0.2:
            out["steady"] = (stream.count - first[1]) / (t_end - first[0])
        else:
            out["steady"] = None
        out["cpu"] = {inst.name: (cpu_end[inst.name] - inst.cpu0)
                      if cpu_end[inst.name] is not None and inst.cpu0 is not None else None
                      for inst in insts}
        out["sync_lag_end"] = max(m.get("propensityd_sync_lag_seconds", 0.0)
                                  for m in m_end.values())

        # learning settles: no instance's counts moved for QUIET_S (labels of the last events
        # are resolved by the watermark; what waits beyond the stream's end stays pending)
        prev, since = None, time.monotonic()
        deadline = since + 60
        while True:
            alive()
            cur = tuple(counts(inst.metrics(), stream.model) for inst in insts)
            if cur != prev:
                prev, since = cur, time.monotonic()
            elif time.monotonic() - since >= QUIET_S:
                break
            if time.monotonic() > deadline:
                ODD.note("%s: the instances kept learning for 60 s after the last commit" % group)
                break
            time.sleep(0.25)

        # the models agree once the last rounds are applied: probes stable between two looks
        def probes():
            sts = [inst.status() for inst in insts]
            return sts, [s["sync"]["probe"][stream.model] for s in sts]
        sts, pr = probes()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(max(0.3, 2 * ctx["interval_ms"] / 1000.0))
            sts2, pr2 = probes()
            stable = pr2 == pr
            prev_pr = pr
            sts, pr = sts2, pr2
            if stable:
                break
        else:
            moved = max((abs(logit(a) - logit(b)) for x, y in zip(pr, prev_pr)
                         for a, b in zip(x, y)), default=0.0)
            ODD.note("%s: the probes still moved after 15 s (by up to %.2g in log-odds between "
                     "the last two looks)" % (group, moved))
        m_fin = {inst.name: inst.metrics() for inst in insts}
        per = []
        for inst in insts:
            m = m_fin[inst.name]
            msgs, ex, pos, pending = counts(m, stream.model)
            per.append({
                "name": inst.name, "messages": msgs, "examples": ex, "positives": pos,
                "pending": pending,
                "log_loss": m.get('propensityd_model_log_loss{model="%s"}' % stream.model),
                "auc": m.get('propensityd_model_auc{model="%s"}' % stream.model),
                "sync_bytes": sync_bytes(m),
                "model_bytes": m.get('propensityd_sync_model_bytes_total{model="%s"}'
                                     % stream.model, 0.0),
                "rounds": m.get("propensityd_sync_rounds_total", 0.0),
                "applied": m.get("propensityd_sync_applied_total", 0.0),
                "peers": m.get("propensityd_sync_peers", 0.0),
                "skipped": sum(v for key, v in m.items()
                               if key.startswith("propensityd_sync_skipped_total{") and
                               'reason="own"' not in key),
                "publish_failed": m.get("propensityd_sync_publish_failed_total", 0.0),
            })
        out["per"] = per
        out["probes"] = pr
        # sync traffic: what each instance published over the run (its learning's deltas go
        # out by the round after the last commit; heartbeats are 40 bytes a round) per second
        # of consumption (first assignment to the last commit)
        out["sync_bps"] = {p["name"]: p["sync_bytes"] / out["secs"] for p in per}
        total_ex = sum(p["examples"] for p in per)
        out["examples"] = total_ex
        out["positives"] = sum(p["positives"] for p in per)
        out["pending"] = sum(p["pending"] for p in per)
        out["messages"] = sum(p["messages"] for p in per)
        lls = [(p["examples"], p["log_loss"]) for p in per if p["examples"] > 0]
        if any(ll is None or math.isnan(ll) for _, ll in lls):
            ODD.note("%s: an instance reports no log loss: %s" % (group, per))
            out["log_loss"] = float("nan")
        else:
            out["log_loss"] = sum(e * ll for e, ll in lls) / max(total_ex, 1)
        # agreement between instances: the largest difference in log-odds over probes and pairs
        diffs = [abs(logit(a) - logit(b)) for i in range(n) for j in range(i + 1, n)
                 for a, b in zip(pr[i], pr[j])]
        out["probe_diff"] = max(diffs) if diffs else None
        if out["messages"] != stream.count:
            ODD.note("%s: the instances consumed %d messages in all for %d produced"
                     % (group, out["messages"], stream.count))
        for p in per:
            if p["skipped"] or p["publish_failed"]:
                ODD.note("%s/%s: sync skipped %d, publish failed %d"
                         % (group, p["name"], p["skipped"], p["publish_failed"]))
            if p["peers"] != n - 1:
                ODD.note("%s/%s: hears %d peers, expected %d" % (group, p["name"], p["peers"],
                                                                  n - 1))

        # stop them all at once, as a deployment stops (one alone rebalances the others)
        for inst in insts:
            inst.daemon.proc.send_signal(signal.SIGTERM)
        t_stop = time.monotonic()
        stops = []
        for inst in insts:
            code = inst.daemon.stop(timeout=45)
            stops.append(time.monotonic() - t_stop)
            if code != 0:
                lines = [line for line in inst.daemon.log_text().splitlines()
                         if "commit failed" not in line]
                ODD.note("%s/%s exited with %s on SIGTERM after %.1f s (every offset had been "
                         "committed before); its last lines:\n        %s"
                         % (group, inst.name, code, stops[-1], "\n        ".join(lines[-4:])))
        out["stop_secs"] = stops
        for inst in insts:
            errors = [e for e in inst.daemon.error_lines()
                      if "Group rebalance in progress" not in e and
                      "could not flush before stopping" not in e]
            if errors:
                ODD.note("%s/%s logged %d error line(s), first: %s"
                         % (group, inst.name, len(errors), errors[0][:300]))
        return out
    finally:
        for inst in insts:
            inst.daemon.cleanup()


def run_ids(rounds):
    """The ids of a stream's runs per N: round r's attempts are 10 r + 1..3."""
    return [10 * r + a for r in range(rounds) for a in (1, 2, 3)]


def run_with_retries(stream, n, ctx, tmp, rnd):
    for attempt in (1, 2, 3):
        try:
            return run_group(stream, n, ctx, tmp, 10 * rnd + attempt)
        except Retry as exc:
            ODD.note("%s (the mock broker's join race): run again with a fresh group" % exc)
    raise harness.HarnessError("%s with %d instances: three attempts left a member without "
                               "partitions" % (stream.name, n))


# ---- report -----------------------------------------------------------------------------------


def fmt(v, spec, none="-"):
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else spec % v


def report_throughput(stream, runs, kcat, rounds):
    kc = max(kcat.values())
    print("  best of %d runs per N, from the first assignment to every offset committed; "
          "steady: first commit to last" % rounds)
    print("  %-4s %9s %10s %8s %10s %8s  %-26s %-22s %s"
          % ("N", "seconds", "events/s", "x kcat", "steady/s", "x kcat", "CPU s (per instance)",
             "sync B/s per instance", "sync B/s all, lag max/end"))
    for r in runs:
        cpu = "/".join(fmt(c, "%.2f") for c in r["cpu"].values())
        bps = "/".join(fmt(b, "%.0f") for b in r["sync_bps"].values())
        total = sum(b for b in r["sync_bps"].values() if b is not None)
        print("  %-4d %9.2f %10.0f %8.3f %10s %8s  %-26s %-22s %.0f, %.3f/%.3f s"
              % (r["n"], r["secs"], r["rate"], r["rate"] / kc, fmt(r["steady"], "%.0f"),
                 fmt(r["steady"] and r["steady"] / kc, "%.3f"), cpu, bps, total, r["lag_max"],
                 r["sync_lag_end"]))
    print("  reference: kcat -C -e reads the topic at %.0f events/s (best of %d, one before each "
          "group run: %s)" % (kc, len(kcat), ", ".join("%.0f" % kcat[i] for i in sorted(kcat))))
    for r in runs:
        print("  N=%d: events/s of every run %s" % (r["n"], ", ".join("%.0f" % x
                                                                    for x in r["all_rates"])))
    for r in runs:
        bpe = sum(p["sync_bytes"] for p in r["per"]) / max(r["events"], 1)
        print("  N=%d (fastest run): joined in %.1f s; held partitions %s; sync %.0f bytes "
              "published in all "
              "(%.1f per event), %d rounds per instance; stopped in %.1f s"
              % (r["n"], r["join_secs"], "/".join("%d" % v for v in r["assigned"].values()),
                 sum(p["sync_bytes"] for p in r["per"]), bpe,
                 max(p["rounds"] for p in r["per"]), max(r["stop_secs"])))


def replay(stream, tmp):
    """(log loss, examples) of `propensityd replay` over the stream's file: one process, the
    events in file order (for reference: no Kafka, no partitions)."""
    config = os.path.join(tmp, "replay-%s.yaml" % stream.name)
    with open(config, "w") as f:
        f.write(stream.config_text)
    proc = subprocess.run([harness.env_path("PD_DAEMON"), "replay", "--quiet", "--json",
                           "--config", config, stream.jsonl], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, check=False)
    if proc.returncode != 0:
        raise harness.HarnessError("propensityd replay failed: %s" % proc.stderr[-2000:])
    m = next(m for m in json.loads(proc.stdout)["models"] if m["name"] == stream.model)
    return m["log_loss"], m["examples"]


def report_quality(stream, runs, base_probes, replayed):
    one = next((r for r in runs if r["n"] == 1), None)
    head = ("  %-4s %8s %6s %7s %9s %8s %7s %13s %12s %12s %7s"
            % ("N", "examples", "pos", "pending", "log loss", "vs N=1", "gap", "per instance",
               "probe diff", "vs N=1 mean", "sec"))
    print(head)
    ll, ex = replayed
    gap = (stream.optimum[0] - ll) / (stream.optimum[0] - stream.optimum[1]) \
        if stream.optimum else None
    print("  %-4s %8d %6s %7s %9.5f %8s %7s  (propensityd replay of the file: one process, file "
          "order)" % ("rp", ex, "", "", ll, "%+.2f%%" % (100 * (ll - one["log_loss"])
                                                        / one["log_loss"]) if one else "-",
                      "%.1f%%" % (100 * gap) if gap is not None else "-"))
    for r in runs:
        rel = (r["log_loss"] - one["log_loss"]) / one["log_loss"] if one else None
        gap = None
        if stream.optimum:
            base, bayes = stream.optimum
            gap = (base - r["log_loss"]) / (base - bayes)
        per = "/".join("%.4f" % p["log_loss"] if p["log_loss"] is not None else "-"
                       for p in r["per"])
        vs1 = None
        if base_probes is not None and r["n"] > 1:
            vs1 = sum(abs(logit(a) - logit(b)) for a, b in zip(r["probes"][0], base_probes)) \
                / max(len(base_probes), 1)
        rel_s = "%+.2f%%" % (100 * rel) if rel is not None and r["n"] > 1 else "-"
        gap_s = "%.1f%%" % (100 * gap) if gap is not None else "-"
        print("  %-4d %8d %6d %7d %9.5f %8s %7s %13s %12s %12s %7.2f"
              % (r["n"], r["examples"], r["positives"], r["pending"], r["log_loss"], rel_s,
                 gap_s, per, fmt(r["probe_diff"], "%.2g"), fmt(vs1, "%.3f"), r["secs"]))
        if r["n"] > 1 and one and rel > TARGET:
            ODD.note("%s N=%d: log loss %+.2f%% of the single instance's (target within %.0f%%)"
                     % (stream.name, r["n"], 100 * rel, 100 * TARGET))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--instances", default="1,2,3")
    ap.add_argument("--events", type=int, default=240000,
                    help="pd-eventgen events of the throughput stream")
    ap.add_argument("--users", type=int, default=100000)
    ap.add_argument("--views", type=int, default=60000, help="gen_truth.py views")
    ap.add_argument("--seed", type=int, default=1, help="gen_truth.py seed")
    ap.add_argument("--interval", type=int, default=500, help="sync.interval in ms")
    ap.add_argument("--rate", type=int, default=10000,
                    help="events/s at which the quality streams are produced while consumed")
    ap.add_argument("--repeat", type=int, default=2,
                    help="runs per N of the throughput stream, the fastest kept")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (figures meaningless)")
    ap.add_argument("--data-dir")
    ap.add_argument("--tools-dir")
    ap.add_argument("--keep", metavar="DIR", help="keep the configs and daemon logs in DIR")
    ap.add_argument("--only", action="append", default=[],
                    choices=["throughput", "gen_truth", "talkingdata"])
    args = ap.parse_args(argv)
    if args.smoke:
        args.events, args.users, args.views, args.rate = 20000, 5000, 5000, 5000
        args.repeat = 1
    ns = [int(x) for x in args.instances.split(",") if x]
    if 1 not in ns:
        ns = [1] + ns  # the reference of every ratio
    wanted = set(args.only) or {"throughput", "gen_truth", "talkingdata"}

    root = harness.source_root()
    data_dir = args.data_dir or os.environ.get("PD_DATA_DIR") or \
        os.path.normpath(os.path.join(root, "..", "shared", "data"))
    tools_dir = args.tools_dir or os.environ.get("PD_TOOLS_DIR") or \
        os.path.normpath(os.path.join(root, "..", "shared", "tools"))
    cpu, cores = machine()
    print("  machine: %s, %d core(s), shared by every instance, the broker, Redis, kcat and "
          "this script: N instances split the same cores, so the rates say what the group "
          "gets out of them, not what N machines would" % (cpu, cores))
    print("  topic of %d partitions keyed by user (murmur2); range assignor; kafka.handover "
          "redis; sync every %d ms%s" % (PARTITIONS, args.interval,
                                        "; SMOKE: tiny sizes, figures meaningless"
                                        if args.smoke else ""), flush=True)

    tmp = args.keep or tempfile.mkdtemp(prefix="pd-bench-scale-")
    os.makedirs(tmp, exist_ok=True)
    t_all = time.monotonic()
    try:
        streams = []
        if "throughput" in wanted:
            path = os.path.join(tmp, "eventgen.tsv")
            with open(path, "wb") as f:
                f.write(harness.eventgen("--users", args.users, "--events", args.events,
                                         "--seed", 2, "--format", "keyed", timeout=120))
            with open(os.path.join(HERE, "bench_20.yaml")) as f:
                streams.append(Stream("throughput", "eventgen", path, f.read(),
                                      "purchase_propensity"))
        if "gen_truth" in wanted:
            gen = os.path.join(tools_dir, "gen_truth.py")
            if os.path.isfile(gen):
                raw = os.path.join(tmp, "gen_truth.jsonl")
                with open(raw, "w") as f:
                    proc = subprocess.run([sys.executable, gen, str(args.views), str(args.seed)],
                                          stdout=f, stderr=subprocess.PIPE, text=True,
                                          check=False)
                if proc.returncode != 0:
                    raise harness.HarnessError("gen_truth.py failed: %s" % proc.stderr[-2000:])
                opt = json.loads(proc.stderr.strip().splitlines()[-1])
                path = os.path.join(tmp, "gen_truth.tsv")
                keyed_from_jsonl(raw, path)
                streams.append(Stream("gen_truth", "gentruth", path, GEN_TRUTH_YAML, "buys",
                                      (opt["base_rate_logloss"], opt["bayes_logloss"]),
                                      rate=args.rate, jsonl=raw))
            else:
                print("  gen_truth: %s is absent, not run" % gen)
        if "talkingdata" in wanted:
            src = os.path.join(data_dir, "talkingdata_adtracking_sample",
                               "talkingdata_adtracking_sample.jsonl")
            if os.path.isfile(src):
                path = os.path.join(tmp, "talkingdata.tsv")
                if args.smoke:
                    with open(src, "rb") as f:
                        head = f.readlines()[:20000]
                    src = os.path.join(tmp, "talkingdata.jsonl")
                    with open(src, "wb") as f:
                        f.writelines(head)
                keyed_from_jsonl(src, path)
                with open(os.path.join(HERE, "quality", "talkingdata.yaml")) as f:
                    streams.append(Stream("talkingdata", "talkingdata", path, f.read(),
                                          "downloads", rate=args.rate, jsonl=src))
            else:
                print("  talkingdata: %s is absent (set PD_DATA_DIR), not run" % src)

        # every topic a run may use, made here with its partitions (a retry takes fresh ones)
        topics = {}
        for s in streams:
            if s.rate is None:
                topics[s.topic] = PARTITIONS
            for n in ns:
                for run in run_ids(args.repeat if s.rate is None else 1):
                    topics["deltas-%s-%d-%d" % (s.name, n, run)] = 1
                    if s.rate is not None:
                        topics["%s-%d-%d" % (s.topic, n, run)] = PARTITIONS
        with harness.RedisServer() as rs, harness.Broker(topics) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            ctx = {"bootstrap": broker.bootstrap, "redis_url": rs.url, "k": k,
                   "interval_ms": args.interval}
            backlog = [s for s in streams if s.rate is None]
            if backlog:
                print("\n  produced first (kcat -P), each topic checked whole:")
            for s in backlog:
                produce(s, broker.bootstrap, k)
            for s in streams:
                runs, kcat = [], {}
                print("\n  %s (%s):" % (s.name, {
                    "throughput": "pd-eventgen, tests/bench/bench_20.yaml: 20 features, "
                                  "FTRL 2^22",
                    "gen_truth": "gen_truth.py %d views seed %d, %d events, defaults "
                                 "(ftrl_multi); base rate %.5f, Bayes %.5f"
                                 % ((args.views, args.seed, s.count) + s.optimum)
                    if s.optimum else "",
                    "talkingdata": "TalkingData sample, %d events, "
                                   "tests/bench/quality/talkingdata.yaml, users = ip"
                                   % s.count}[s.name]), flush=True)
                if s.rate is not None:
                    print("    produced while the group consumes, at %d events/s (kafka-python, "
                          "murmur2), into a topic per run, once every member holds partitions"
                          % s.rate)
                rounds = args.repeat if s.rate is None else 1
                by_n = {n: [] for n in ns}
                for rnd in range(rounds):
                    for n in ns:
                        if s.rate is None:  # the reference, taking turns with the groups
                            kcat[len(kcat)] = s.count / kcat_consume(broker.bootstrap, s.topic,
                                                                     s.count)
                        r = run_with_retries(s, n, ctx, tmp, rnd)
                        by_n[n].append(r)
                        if s.rate is None:
                            # a backlog's progressive log loss says nothing (tests/bench/README.md)
                            print("    N=%d: %d events in %.2f s from the first assignment (%.0f/s)"
                                  % (n, r["events"], r["secs"], r["rate"]), flush=True)
                        else:
                            print("    N=%d: %d events in %.2f s from the first assignment "
                                  "(%.0f/s), log loss %.5f over %d examples, probes agree to %s"
                                  % (n, r["events"], r["secs"], r["rate"], r["log_loss"],
                                     r["examples"], fmt(r["probe_diff"], "%.2g")), flush=True)
                runs = []
                for n in ns:
                    r = max(by_n[n], key=lambda x: x["rate"])
                    r["all_rates"] = [x["rate"] for x in by_n[n]]
                    runs.append(r)
                if s.name == "throughput":
                    report_throughput(s, runs, kcat, rounds)
                else:
                    base = next((r["probes"][0] for r in runs if r["n"] == 1), None)
                    report_quality(s, runs, base, replay(s, tmp))
                    for r in runs:
                        sbps = sum(b for b in r["sync_bps"].values() if b is not None)
                        print("    N=%d: fed at %.0f/s, all committed %.2f s after the last "
                              "produced; sync %.0f B/s in all, lag max %.3f s; events consumed "
                              "%d of %d; examples %s"
                              % (r["n"], r["feed_rate"], r["tail_secs"], sbps, r["lag_max"],
                                 r["messages"], r["events"],
                                 "/".join("%d" % p["examples"] for p in r["per"])))
    except harness.HarnessError as exc:
        print("scale_out.py: %s" % exc, file=sys.stderr)
        return 1
    finally:
        harness.kill_all()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("\n  log loss: example-weighted mean of the instances' progressive log loss; gap: "
          "share of the base-rate-to-Bayes gap closed; probe diff: largest |log-odds| "
          "difference between instances over the status reply's sync probes; vs N=1 mean: "
          "mean |log-odds| difference of instance a's probes to the single instance's")
    print("  scale_out.py done in %.0f s; %d odd thing(s)%s"
          % (time.monotonic() - t_all, len(ODD), ":" if ODD else ""))
    for o in ODD:
        print("    - " + o)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
