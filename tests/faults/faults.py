"""What every fault case shares: the pipeline, the events, the clean reference and the final
checks. A case starts the real parts (tests/integration/harness.py: redis-server, the mock
broker with its fault-injection commands, the daemon), breaks something while events flow, and
ends with `converged()`:

  - committed offsets = produced (every message of the topic, poison included);
  - each model's example count = the clean run's (`propensityd replay` of the same events);
  - every user who had events holds, in Redis, the scores the clean run gives (1e-6);
  - the daemon is alive (the case stops it and checks the exit code where it asks for one);
  - RSS stayed under the case's bound (sampled every 100 ms by RssWatch).

One partition, so the daemon sees the events in the order replay reads them and the scores
are comparable bit for bit; a sentinel event a day ahead in event time resolves every pending
example at the end. The stream is produced in paced chunks while the fault happens, so the
fault lands mid-stream.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import harness  # noqa: E402

TOPIC = "events"
DLQ = "events.dlq"
PREFIX = "pd"
MODELS = {"purchase_propensity": "purchase_p", "order_value": "order_value"}
TOLERANCE = 1e-6
# the sanitizers roughly triple the daemon's footprint and slow it down
SANITIZED = os.environ.get("PD_SANITIZED") == "1"
SLOW = 3.0 if SANITIZED else 1.0

CONFIG = """
kafka:
  brokers: ${KAFKA_BROKERS}
  topics: [%(topic)s]
  group: ${KAFKA_GROUP}
  properties:
    # a killed member holds the partition until its session times out: keep that short
    session.timeout.ms: 3000
    heartbeat.interval.ms: 500
    # librdkafka's default (10 s) would spend most of a case waiting to reconnect
    reconnect.backoff.max.ms: 1000
    # the eager protocol: the mock broker's group coordinator bumps the generation while a
    # cooperative member is still revoking (README, "Scale-out"), and a member restarted
    # again and again, as here, waits out several rebalances each time
    partition.assignment.strategy: range
redis:
  url: ${REDIS_URL}
  prefix: %(prefix)s
  flush_interval: 20ms
  timeout: 1s
events:
  types: [view, click, add_to_cart, purchase, review]%(dlq)s%(events_extra)s
features:
  device:   { categorical: context.device }
  campaign: { categorical: context.campaign }
  views_1h: { decayed_count: view, half_life: 1h, transforms: [log1p] }
  price:    { numeric: price, transforms: [log1p] }
models:
  purchase_propensity:
    type: logistic
    bits: 16
    features: [device, campaign, views_1h]
    example_on: [view, click]
    label: { positive_on: purchase, within: 30m }
    output: purchase_p
  order_value:
    type: linear
    bits: 16
    features: [device, price]
    example_on: [purchase]
    label: { value_from: value }
    output: order_value
watermark:
  # the partition must never be found idle mid-stream (the stream pauses during faults), or
  # the watermark would move differently from replay's
  idle_timeout: 1h
  max_pending_per_user: 100000
daemon:
  http: 127.0.0.1:${HTTP_PORT}
  ready_max_lag: 1000000
%(snapshot)s"""


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def log(msg):
    print("[%6.1f] %s" % (time.monotonic() - _T0, msg), flush=True)


_T0 = time.monotonic()


class Case:
    """A temp dir, a config, the events (keyed lines) and the clean reference."""

    def __init__(self, name, events=6000, users=300, seed=7, snapshot=None, dead_letters=False,
                 extra_lines=(), events_conf=""):
        """events_conf: lines added to the config's events: section, indented."""
        self.name = name
        self.tmp = tempfile.mkdtemp(prefix="pd-fault-%s-" % name)
        self.http_port = harness.free_port()
        snap = ""
        if snapshot:
            self.snapshot_dir = snapshot.get("dir") or os.path.join(self.tmp, "snap")
            snap = "snapshot:\n  dir: %s\n  interval: %s\n  keep: %d\n" % (
                self.snapshot_dir, snapshot.get("interval", "0"), snapshot.get("keep", 2))
        self.config = os.path.join(self.tmp, "pipeline.yaml")
        with open(self.config, "w") as f:
            f.write(CONFIG % {"topic": TOPIC, "prefix": PREFIX, "snapshot": snap,
                              "dlq": ("\n  dead_letter_topic: " + DLQ) if dead_letters else "",
                              "events_extra": "".join("\n  " + line
                                                      for line in events_conf.splitlines())})
        lines = harness.eventgen("--events", events, "--users", users, "--seed", seed,
                                 "--format", "keyed").splitlines()
        last_ts = json.loads(lines[-1].split(b"\t", 1)[1])["ts"]
        sentinel = ('zz-sentinel\t{"type":"add_to_cart","user_id":"zz-sentinel","ts":%d}'
                    % (last_ts + 86400000)).encode()
        self.lines = lines + list(extra_lines) + [sentinel]
        self.reference()

    def add_lines(self, lines):
        """Events produced after the stream (and its sentinel): the reference is redone."""
        self.lines = self.lines + list(lines)
        self.reference()

    def reference(self, valid_lines=None):
        """The clean run: replay of the valid events, same config (scores, example counts)."""
        valid = self.lines if valid_lines is None else valid_lines
        events = os.path.join(self.tmp, "events.jsonl")
        with open(events, "wb") as f:
            for line in valid:
                f.write(line.split(b"\t", 1)[1] + b"\n")
        scores = os.path.join(self.tmp, "scores.jsonl")
        env = dict(os.environ, KAFKA_BROKERS="127.0.0.1:1", KAFKA_GROUP="replay",
                   REDIS_URL="redis://127.0.0.1:1/0", HTTP_PORT=str(self.http_port))
        with open(self.config) as f:
            text = f.read()
        # replay takes no snapshots and no dead-letter topic; the pipeline is the same
        text = text.split("snapshot:\n")[0]
        cfg = os.path.join(self.tmp, "replay.yaml")
        with open(cfg, "w") as f:
            f.write(text)
        out = subprocess.run([harness.env_path("PD_DAEMON"), "replay", "--config", cfg, "--json",
                              "--quiet", "--scores", scores, events], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120)
        check(out.returncode == 0, "replay failed: %s" % out.stderr.decode(errors="replace"))
        report = json.loads(out.stdout)
        self.ref_examples = {m["name"]: m["examples"] for m in report["models"]}
        self.ref_scores = {}
        with open(scores) as f:
            for line in f:
                row = json.loads(line)
                self.ref_scores[row.pop("user")] = row
        log("%s: %d messages, %d users, clean examples %s"
            % (self.name, len(self.lines), len(self.ref_scores), self.ref_examples))

    def daemon(self, broker, redis_server, group="faults", tag="daemon"):
        """A harness.Daemon on this case's config; with PD_FAULT_KEEP=DIR its log is kept
        there (DIR/CASE-TAG.log) for a look after the run."""
        keep = os.environ.get("PD_FAULT_KEEP")
        path = None
        if keep:
            os.makedirs(keep, exist_ok=True)
            path = os.path.join(keep, "%s-%s.log" % (self.name, tag))
        return harness.Daemon(self.config, self.env(broker, redis_server, group), log_path=path)

    def env(self, broker, redis_server, group="faults"):
        return {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_GROUP": group,
                "REDIS_URL": redis_server.url, "HTTP_PORT": self.http_port}

    def cleanup(self):
        shutil.rmtree(self.tmp, ignore_errors=True)


def extra_lines(n, seed):
    """n keyed events of other users, in event time after every case's stream."""
    lines = harness.eventgen("--events", n, "--users", 50, "--seed", seed, "--format", "keyed",
                             "--start-ms", 1764000000000 + 10 * 86400000).splitlines()
    return [b"x" + line.replace(b'"user_id":"', b'"user_id":"x') for line in lines]


class Producer:
    """Produces lines in `chunks` chunks, one every `pause` seconds, on a thread (kcat), so
    faults land mid-stream. join() waits and re-raises what failed."""

    def __init__(self, bootstrap, lines, chunks=10, pause=0.5, topic=TOPIC):
        self.bootstrap, self.lines, self.chunks, self.pause = bootstrap, lines, chunks, pause
        self.topic = topic
        self.error = None
        self.sent = 0
        self._go = threading.Event()
        self._go.set()
        self._busy = threading.Lock()  # held while a chunk is being produced
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self.thread.start()
        return self

    def _run(self):
        try:
            step = (len(self.lines) + self.chunks - 1) // self.chunks
            for i in range(0, len(self.lines), step):
                self._go.wait()
                with self._busy:
                    self.sent += harness.produce_kcat(self.bootstrap, self.topic,
                                                      self.lines[i:i + step], timeout=120)
                time.sleep(self.pause)
        except Exception as exc:  # noqa: BLE001 - re-raised by join()
            self.error = exc

    def hold(self):
        """Stops producing after the chunk in flight: kcat gives up when every broker is
        down, and the stream must arrive whole and in order."""
        self._go.clear()
        with self._busy:
            pass

    def release(self):
        self._go.set()

    def join(self, timeout=120):
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise harness.HarnessError("producer still running after %.0f s" % timeout)
        if self.error:
            raise self.error


def xfsz_ignoring_daemon(directory):
    """A wrapper script that starts the daemon with SIGXFSZ ignored (for RLIMIT_FSIZE)."""
    path = os.path.join(directory, "propensityd-nofsz")
    with open(path, "w") as f:
        f.write("#!/bin/sh\ntrap '' XFSZ\nexec '%s' \"$@\"\n" % harness.env_path("PD_DAEMON"))
    os.chmod(path, 0o755)
    return path


def rss_kib(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


class RssWatch:
    """Samples a process's RSS every 100 ms; `peak_mib` is the highest seen."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._stop.wait(0.1):
            self.peak = max(self.peak, rss_kib(self.pid))

    @property
    def peak_mib(self):
        return self.peak / 1024.0

    def stop(self):
        self._stop.set()
        self.thread.join()
        return self.peak_mib


def rss_bound_mib():
    return 1200 if SANITIZED else 400


def end_clean(daemon, rss):
    """How every case ends: the peak RSS rss saw within the bound, and a SIGTERM that exits 0."""
    peak = rss.stop()
    log("peak RSS %.0f MiB (bound %d)" % (peak, rss_bound_mib()))
    check(peak < rss_bound_mib(), "RSS %.0f MiB" % peak)
    code = daemon.stop(timeout=20)
    check(code == 0, "exit %s:\n%s" % (code, daemon.log_tail()))


def metrics(port):
    """{name{labels}: value} of /metrics (samples only)."""
    return harness.metrics_samples(port)


def metrics_when_up(port, daemon):
    """Waits for /metrics to answer; returns how many seconds that took."""
    t0 = time.monotonic()
    daemon.wait_until(lambda: harness.http_get(port, "/metrics")[0] == 200, 30 * SLOW, 0.05,
                      "/metrics")
    return round(time.monotonic() - t0, 1)


def readyz(port, timeout=5.0):
    try:
        return harness.http_get(port, "/readyz", timeout=timeout)
    except OSError as exc:
        return None, str(exc)


def committed(k, group="faults"):
    return k.committed_offsets(group, TOPIC)


def model_examples(r):
    return {m: int(r.hget("%s:model:%s" % (PREFIX, m), "examples") or 0) for m in MODELS}


def converged(case, daemon, r, k, group="faults", timeout=90, messages=None):
    """Waits for every offset to be committed and every example learned; then compares every
    user's scores with the clean run. Returns the end offsets."""
    produced = {p: o for p, o in k.end_offsets(TOPIC).items() if o > 0}
    messages = len(case.lines) if messages is None else messages
    check(sum(produced.values()) == messages and
          all(o == 0 for o in k.beginning_offsets(TOPIC).values()),
          "the topic holds %s, not the %d messages produced" % (produced, messages))
    daemon.wait_until(lambda: committed(k, group) == produced, timeout * SLOW, 0.3,
                      "committed offsets = produced %s" % produced)
    daemon.wait_until(lambda: model_examples(r) == case.ref_examples, 30 * SLOW, 0.3,
                      "examples %s = the clean run's" % case.ref_examples)
    compare_scores(case, r)
    return produced


def compare_scores(case, r):
    fields = list(MODELS.values())
    pipe = r.pipeline(transaction=False)
    users = sorted(case.ref_scores)
    for u in users:
        pipe.hmget("%s:u:%s" % (PREFIX, u), fields)
    bad = []
    for u, got in zip(users, pipe.execute()):
        want = case.ref_scores[u]
        for field, value in zip(fields, got):
            if field not in want:
                continue
            if value is None or abs(float(value) - want[field]) > TOLERANCE:
                bad.append((u, field, value, want[field]))
    check(not bad, "%d of %d users' scores differ from the clean run, e.g. %s"
          % (len({b[0] for b in bad}), len(users), bad[:5]))
    log("scores of all %d users = the clean run's (tolerance %g)" % (len(users), TOLERANCE))


def run(main):
    """Runs a case's main(), prints its time; exit code 0 on success."""
    print(harness.versions(), "sanitized" if SANITIZED else "", flush=True)
    t0 = time.monotonic()
    main()
    print("passed in %.1f s" % (time.monotonic() - t0), flush=True)
    return 0
