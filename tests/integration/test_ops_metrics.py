"""/metrics, /healthz and /readyz over real HTTP while the daemon consumes a known stream.

What it checks:
  - /metrics is valid Prometheus text: python3-prometheus-client's parser reads it, and a
    strict checker (below) finds HELP and TYPE once per family before its samples, valid
    names and escaped labels, no duplicate series, cumulative histogram buckets ending in
    +Inf = _count, non-negative counters, and the exposition Content-Type
  - its counters match what was produced: events by type, decode errors by reason,
    dead-lettered, Kafka messages, users, lag 0 per partition once caught up, Redis writes
  - /healthz is 200; /readyz is 200 when caught up, 503 with the reason while paused;
    unknown paths are 404 and POST is 405
"""

import json
import math
import re
import shutil
import sys
import tempfile
import time
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

import harness

TOPIC = "events"
DLQ = "events.dlq"
PARTITIONS = 3
GROUP = "ops-metrics"

NAME_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\\\|\\"|\\n)*)"(,|$)')
SAMPLE_RE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$")

MALFORMED = [
    ("not_json", "this is not json"),
    ("not_json", "{\"type\": \"view\""),
    ("not_object", "[1, 2, 3]"),
    ("missing_user", json.dumps({"event_id": "x1", "type": "view", "item_id": "i",
                                 "ts": 1764000000000})),
    ("unknown_type", json.dumps({"event_id": "x2", "type": "teleport", "user_id": "u-bad",
                                 "ts": 1764000000000})),
    ("unknown_type", json.dumps({"event_id": "x3", "type": "hover", "user_id": "u-bad",
                                 "ts": 1764000000000})),
]


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def parse_value(text):
    if text in ("NaN", "+Inf", "-Inf"):
        return float(text.replace("Inf", "inf").replace("NaN", "nan"))
    return float(text)


def strict_parse(text):
    """A strict reader of the text format (0.0.4); returns {(name, labels): value} and the
    family types. Raises AssertionError on anything a scraper could trip over."""
    check(text.endswith("\n"), "exposition does not end with a newline")
    types, helps, samples, seen_samples_of = {}, {}, {}, set()
    current = None
    for n, line in enumerate(text.split("\n")[:-1], 1):
        where = "line %d %r" % (n, line)
        check(line.strip() == line and line, "blank or padded %s" % where)
        if line.startswith("# HELP "):
            name = line[7:].split(" ", 1)[0]
            check(NAME_RE.match(name), "bad family name %s" % where)
            check(name not in helps, "second HELP for %s" % name)
            check(name not in seen_samples_of, "HELP after samples of %s" % name)
            helps[name] = True
            current = name
            continue
        if line.startswith("# TYPE "):
            parts = line[7:].split(" ")
            check(len(parts) == 2 and parts[1] in ("counter", "gauge", "histogram", "summary",
                                                    "untyped"), "bad TYPE %s" % where)
            check(parts[0] not in types, "second TYPE for %s" % parts[0])
            check(parts[0] == current, "TYPE without its HELP just before: %s" % where)
            types[parts[0]] = parts[1]
            continue
        check(not line.startswith("#"), "unexpected comment %s" % where)
        m = SAMPLE_RE.match(line)
        check(m, "malformed sample %s" % where)
        name, labeltext, value = m.group(1), m.group(3), m.group(4)
        family = name
        if current and types.get(current) == "histogram" and name in (
                current + "_bucket", current + "_sum", current + "_count"):
            family = current
        check(family == current, "sample of %s outside its family block (%s)" % (name, where))
        labels = ()
        if labeltext:
            pos, found = 0, []
            while pos < len(labeltext):
                lm = LABEL_RE.match(labeltext, pos)
                check(lm, "bad labels %s" % where)
                found.append((lm.group(1), lm.group(2)))
                pos = lm.end()
            names = [k for k, _ in found]
            check(len(set(names)) == len(names), "repeated label %s" % where)
            labels = tuple(found)
        v = parse_value(value)
        key = (name, labels)
        check(key not in samples, "duplicate series %s" % where)
        samples[key] = v
        seen_samples_of.add(family)
        if types.get(family) == "counter":
            check(v >= 0 or math.isnan(v), "negative counter %s" % where)
    # histograms: cumulative buckets, +Inf equals _count
    for fam, t in types.items():
        if t != "histogram":
            continue
        series = {}
        for (name, labels), v in samples.items():
            if name == fam + "_bucket":
                le = dict(labels)["le"]
                rest = tuple(kv for kv in labels if kv[0] != "le")
                series.setdefault(rest, []).append((parse_value(le), v))
        check(series, "histogram %s has no buckets" % fam)
        for rest, buckets in series.items():
            buckets.sort()
            check(buckets[-1][0] == math.inf, "%s lacks le=+Inf" % fam)
            counts = [c for _, c in buckets]
            check(counts == sorted(counts), "%s buckets not cumulative: %s" % (fam, counts))
            check(samples[(fam + "_count", rest)] == counts[-1], "%s +Inf != _count" % fam)
            check((fam + "_sum", rest) in samples, "%s lacks _sum" % fam)
    return samples, types


def value(samples, name, **labels):
    key = (name, tuple(sorted(labels.items())))
    for (n, ls), v in samples.items():
        if n == name and tuple(sorted(ls)) == key[1]:
            return v
    raise AssertionError("no sample %s%s" % (name, labels))


def main():
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-ops-metrics-")
    try:
        lines = harness.eventgen("--events", 1500, "--users", 120, "--seed", 3,
                                 "--format", "keyed").splitlines()
        events = [json.loads(x.split(b"\t", 1)[1]) for x in lines]
        by_type = {}
        for e in events:
            by_type[e["type"]] = by_type.get(e["type"], 0) + 1
        users = {e["user_id"] for e in events}
        http_port = harness.free_port()
        ctl = "ipc://%s/control.sock" % tmp
        config = harness.ops_config(tmp, daemon={"http": "127.0.0.1:%d" % http_port,
                                                 "control": ctl, "ready_max_lag": 0},
                                    dead_letter_topic=DLQ, snapshot_dir=tmp + "/snap")
        with harness.RedisServer() as rs, \
                harness.Broker({TOPIC: PARTITIONS, DLQ: 1}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            harness.produce_kcat(broker.bootstrap, TOPIC, lines)
            harness.produce_kcat(broker.bootstrap, TOPIC,
                                 ["bad%d\t%s" % (i, raw) for i, (_, raw) in
                                  enumerate(MALFORMED)])
            produced = {p: o for p, o in k.end_offsets(TOPIC).items() if o > 0}
            total = sum(produced.values())
            check(total == len(lines) + len(MALFORMED), "produced %s" % produced)
            env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_TOPIC": TOPIC,
                   "KAFKA_GROUP": GROUP, "REDIS_URL": rs.url}
            with harness.Daemon(config, env) as d:
                d.wait_until(lambda: harness.http_get(http_port, "/healthz")[0] == 200, 15,
                             0.1, "/healthz")
                d.wait_until(lambda: k.committed_offsets(GROUP, TOPIC) == produced, 60, 0.3,
                             "offsets committed")
                d.wait_until(lambda: harness.http_get(http_port, "/readyz")[0] == 200, 20,
                             0.2, "/readyz 200")
                harness.control_call(ctl, {"cmd": "snapshot"})

                def scrape():
                    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % http_port,
                                                timeout=5) as resp:
                        ctype = resp.headers["Content-Type"]
                        return ctype, resp.read().decode("utf-8")

                # the text is re-rendered every 500 ms: wait for one with everything in
                def settled():
                    ctype, text = scrape()
                    samples, _types = strict_parse(text)
                    done = (value(samples, "propensityd_kafka_messages_total") == total and
                            value(samples, "propensityd_snapshots_total", result="ok") >= 1 and
                            value(samples, "propensityd_dead_lettered_total") == len(MALFORMED))
                    return (ctype, text, samples) if done else None

                ctype, text, samples = d.wait_until(settled, 20, 0.3, "settled /metrics")
                check(ctype.startswith("text/plain") and "version=0.0.4" in ctype,
                      "Content-Type %r" % ctype)
                fams = {f.name: f for f in text_string_to_metric_families(text)}
                print("%d families, %d series, %d bytes; prometheus_client read %d families"
                      % (len(_types_of(text)), len(samples), len(text), len(fams)))
                check("propensityd_events" in fams and "propensityd_redis_write_duration_seconds"
                      in fams, "prometheus_client missed families: %s" % sorted(fams)[:10])

                for t, n in sorted(by_type.items()):
                    got = value(samples, "propensityd_events_total", type=t)
                    check(got == n, "events_total{type=%s} %s, produced %d" % (t, got, n))
                reasons = {}
                for r, _ in MALFORMED:
                    reasons[r] = reasons.get(r, 0) + 1
                for r, n in reasons.items():
                    got = value(samples, "propensityd_decode_errors_total", reason=r)
                    check(got == n, "decode_errors{reason=%s} %s, want %d" % (r, got, n))
                check(value(samples, "propensityd_decode_errors_total", reason="oversize") == 0,
                      "oversize")
                check(value(samples, "propensityd_dead_lettered_total") == len(MALFORMED),
                      "dead_lettered")
                check(value(samples, "propensityd_users") == len(users), "users")
                for p in range(PARTITIONS):
                    check(value(samples, "propensityd_kafka_consumer_lag_messages", topic=TOPIC,
                                partition=str(p)) == 0, "lag of partition %d" % p)
                check(value(samples, "propensityd_model_predictions_total",
                            model="purchase_propensity") == len(events), "predictions")
                check(value(samples, "propensityd_model_examples_total",
                            model="purchase_propensity") > 0, "no examples learned")
                ll = value(samples, "propensityd_model_log_loss", model="purchase_propensity")
                check(0 < ll < 2, "log loss %r" % ll)
                check(value(samples, "propensityd_redis_write_duration_seconds_count") > 0,
                      "no redis write latency observed")
                check(value(samples, "propensityd_redis_writes_total", kind="user")
                      >= len(users), "redis user writes")
                check(value(samples, "propensityd_redis_flush_batch_users_count") ==
                      value(samples, "propensityd_redis_write_duration_seconds_count"),
                      "batch histogram and latency histogram count different flushes")
                check(value(samples, "process_resident_memory_bytes") > 1e6, "rss")
                # the standard process set and timestamps, per the Prometheus naming guide
                check(value(samples, "process_virtual_memory_bytes") >=
                      value(samples, "process_resident_memory_bytes"), "virtual memory")
                check(value(samples, "process_cpu_seconds_total") > 0, "cpu seconds")
                check(3 <= value(samples, "process_open_fds") <= value(samples, "process_max_fds"),
                      "open fds")
                now = time.time()
                check(abs(value(samples, "process_start_time_seconds") - now) < 600, "start time")
                wm = value(samples, "propensityd_watermark_timestamp_seconds")
                check(1e9 < wm < now + 86400, "watermark timestamp %r" % wm)
                lag = value(samples, "propensityd_event_time_lag_seconds")
                check(abs((now - wm) - lag) < 60, "event-time lag %r against %r" % (lag, now - wm))
                snap_ts = value(samples, "propensityd_last_snapshot_timestamp_seconds")
                check(snap_ts == 0 or abs(snap_ts - now) < 600, "last snapshot %r" % snap_ts)
                info = [ls for (n, ls), v in samples.items()
                        if n == "propensityd_build_info" and v == 1]
                check(len(info) == 1 and {k for k, _ in info[0]} >=
                      {"version", "commit", "librdkafka", "hiredis"}, "build_info %s" % info)
                commit = dict(info[0])["commit"]
                check(commit == "unknown" or re.fullmatch(r"[0-9a-f]{7,40}", commit),
                      "build_info commit %r" % commit)
                check(value(samples, "propensityd_snapshot_duration_seconds") >= 0, "snap")
                check(value(samples, "propensityd_ready") == 1, "ready gauge")

                # health endpoints
                check(harness.http_get(http_port, "/healthz") == (200, "ok\n"), "/healthz")
                check(harness.http_get(http_port, "/nope")[0] == 404, "404")
                req = urllib.request.Request("http://127.0.0.1:%d/metrics" % http_port,
                                             data=b"x", method="POST")
                try:
                    urllib.request.urlopen(req, timeout=5)
                    raise AssertionError("POST /metrics answered 2xx")
                except urllib.error.HTTPError as exc:
                    check(exc.code == 405, "POST gave %d" % exc.code)
                harness.control_call(ctl, {"cmd": "pause"})
                status, body = d.wait_until(
                    lambda: (lambda r: r if r[0] == 503 else None)(
                        harness.http_get(http_port, "/readyz")), 5, 0.1, "/readyz 503")
                check("paused" in body, "/readyz body %r" % body)
                harness.control_call(ctl, {"cmd": "resume"})
                d.wait_until(lambda: harness.http_get(http_port, "/readyz")[0] == 200, 5, 0.1,
                             "/readyz 200 after resume")
                check(d.stop(timeout=15) == 0, "exit code")
                errors = d.error_lines()
                check(not errors, "error lines:\n  " + "\n  ".join(errors[:10]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("ops metrics test passed")
    return 0


def _types_of(text):
    return [l for l in text.splitlines() if l.startswith("# TYPE ")]


if __name__ == "__main__":
    sys.exit(main())
