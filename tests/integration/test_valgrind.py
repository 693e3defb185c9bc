"""The daemon end to end under valgrind's memcheck, beside the ASan/UBSan suite.

memcheck sees what the sanitizer build cannot: the uninstrumented libraries' side of every
call (librdkafka, hiredis, simdjson, OpenBLAS, libyaml) and reads of uninitialised memory.
A small stream (valgrind runs the daemon some 30 times slower) through a pipeline with a
logistic, a linear and a recommender model, a dead-letter topic and snapshots:
  - `check` and `replay` (scores, report, examples) of the events, each under memcheck;
  - the daemon under memcheck consumes every event (a few malformed, dead-lettered),
    commits every offset, publishes every user's scores and lists, answers /metrics, writes
    its snapshot and stops on SIGTERM with exit code 0 and no error in its log; then once
    more, restoring that snapshot, on a few more events;
  - every run: no memcheck error and no definite leak (--errors-for-leak-kinds=definite;
    --error-exitcode makes either one fail the run). Only third-party noise is suppressed,
    each entry explained, in valgrind.supp next to this file.
Skipped (77) when valgrind is not installed or in the sanitizer build (PD_SANITIZED=1).
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import harness

TOPIC = "events"
DLQ = "events.dlq"
GROUP = "valgrind"
PREFIX = "pd"
ERROR_EXIT = 99
SUPPRESSIONS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "valgrind.supp")

CONFIG = """
kafka:
  brokers: ${KAFKA_BROKERS}
  topics: [%(topic)s]
  group: ${KAFKA_GROUP}
  properties:
    # the mock broker holds a rebalance up to the session timeout for the member the first
    # run was; slow as memcheck is, heartbeats stay well within 6 s
    session.timeout.ms: 6000
    heartbeat.interval.ms: 1000
redis:
  url: ${REDIS_URL}
  prefix: %(prefix)s
  flush_interval: 50ms
events:
  types: [view, click, add_to_cart, purchase, review]
  dead_letter_topic: %(dlq)s
features:
  device:   { categorical: context.device }
  campaign: { categorical: context.campaign }
  device_x_campaign: { cross: [device, campaign] }
  views_1h: { decayed_count: view, half_life: 1h, transforms: [log1p] }
  since_last: { recency: any, transforms: [log1p] }
  price:    { numeric: price, transforms: [log1p] }
models:
  purchase_propensity:
    type: logistic
    bits: 16
    features: [device, campaign, device_x_campaign, views_1h, since_last]
    example_on: [view, click]
    label: { positive_on: purchase, within: 30m }
    output: purchase_p
  order_value:
    type: linear
    bits: 14
    features: [device, price]
    example_on: [purchase]
    label: { value_from: value }
    output: order_value
  recs:
    type: recommender
    interactions: { view: 1, click: 2, purchase: 4 }
    k: 5
    dim: 8
    limits: { refresh: 100ms, similar_refresh: 1s }
snapshot:
  dir: %(snapshot)s
  interval: 0
  keep: 2
daemon:
  http: 127.0.0.1:%(http)d
"""


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def valgrind_argv(valgrind, log_path):
    argv = [valgrind, "--tool=memcheck", "--error-exitcode=%d" % ERROR_EXIT,
            "--leak-check=full", "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite", "--num-callers=30", "--log-file=" + log_path]
    if os.path.exists(SUPPRESSIONS):
        argv.append("--suppressions=" + SUPPRESSIONS)
    return argv


def memcheck_clean(log_path, what):
    """Raises with the report when memcheck found an error or a definite leak."""
    with open(log_path, errors="replace") as f:
        text = f.read()
    m = re.search(r"ERROR SUMMARY: (\d+) errors", text)
    check(m, "%s: no memcheck summary in its log:\n%s" % (what, text[-3000:]))
    check(m.group(1) == "0",
          "%s: memcheck found %s errors:\n%s" % (what, m.group(1), text[-12000:]))
    leak = re.search(r"definitely lost: ([\d,]+) bytes", text)
    check(not leak or leak.group(1) == "0", "%s: definite leaks:\n%s" % (what, text[-12000:]))
    print("%s: memcheck clean%s" % (what, "" if leak else " (no leaks possible)"))


def run_tool(valgrind, tmp, name, args, env):
    log_path = os.path.join(tmp, "%s.memcheck" % name)
    t0 = time.monotonic()
    out = subprocess.run(valgrind_argv(valgrind, log_path) +
                                 [harness.env_path("PD_DAEMON")] + args,
                                 env=env, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, timeout=120)
    check(out.returncode == 0, "%s under memcheck: exit %d\n%s\n%s" % (
        name, out.returncode, out.stderr.decode(errors="replace")[-3000:],
        open(log_path, errors="replace").read()[-12000:]))
    memcheck_clean(log_path, "%s (%.1f s)" % (name, time.monotonic() - t0))
    return out.stdout


def run_daemon(valgrind, tmp, name, config, env, k, r, http, n_bad):
    """One daemon under memcheck: everything produced is consumed and committed, every user
    scored, /metrics answers; then SIGTERM, exit 0 and a clean memcheck report."""
    log_path = os.path.join(tmp, "%s.memcheck" % name.replace(" ", "-"))
    wrapper = os.path.join(tmp, "propensityd-memcheck")
    with open(wrapper, "w") as f:
        f.write("#!/bin/sh\nexec %s '%s' \"$@\"\n" % (
            " ".join("'%s'" % a for a in valgrind_argv(valgrind, log_path)),
            harness.env_path("PD_DAEMON")))
    os.chmod(wrapper, 0o755)
    produced = {p: o for p, o in k.end_offsets(TOPIC).items() if o > 0}
    users = set()
    with harness.Daemon(config, env, binary=wrapper) as d:
        t0 = time.monotonic()
        d.wait_until(lambda: k.committed_offsets(GROUP, TOPIC) == produced, 75, 0.5,
                     "every offset committed")
        print("%s: all offsets committed after %.1f s" % (name, time.monotonic() - t0))
        check(sum(k.end_offsets(DLQ).values()) == n_bad,
              "dead-letter topic holds %s, expected %d" % (k.end_offsets(DLQ), n_bad))
        users = {key.split(":", 2)[2] for key in r.scan_iter("%s:u:*" % PREFIX)}
        unscored = [u for u in users if not r.hexists("%s:u:%s" % (PREFIX, u), "purchase_p")]
        check(users and not unscored, "%d users, unscored: %s" % (len(users), unscored[:5]))
        d.wait_until(lambda: r.exists("%s:popular" % PREFIX), 20, 0.5, "the popular list")
        status, body = harness.http_get(http, "/metrics", timeout=20)
        check(status == 200, "/metrics answered %d" % status)
        code = d.stop(timeout=60)
        check(code != ERROR_EXIT, "memcheck found errors in the %s:\n%s"
              % (name, open(log_path, errors="replace").read()[-12000:]))
        check(code == 0, "%s: exit %s; log tail:\n%s" % (name, code, d.log_tail()))
        errors = d.error_lines()
        check(not errors, "%s: error lines in its log:\n  %s" % (name, "\n  ".join(errors[:10])))
        text = d.log_text()
        if name != "daemon":
            check("restored snapshot" in text, "%s: no snapshot restored:\n%s"
                  % (name, d.log_tail()))
    memcheck_clean(log_path, "%s (%.1f s, %d users)" % (name, time.monotonic() - t0, len(users)))


def main():
    if os.environ.get("PD_SANITIZED") == "1":
        print("skipped: the sanitizer build does not run under valgrind")
        return 77
    valgrind = os.environ.get("PD_VALGRIND") or shutil.which("valgrind")
    if not valgrind:
        print("skipped: valgrind is not installed (scripts/install-deps)")
        return 77
    print(harness.versions())
    tmp = tempfile.mkdtemp(prefix="pd-valgrind-")
    try:
        http = harness.free_port()
        snapshot = os.path.join(tmp, "snap")
        config = os.path.join(tmp, "pipeline.yaml")
        with open(config, "w") as f:
            f.write(CONFIG % {"topic": TOPIC, "prefix": PREFIX, "dlq": DLQ,
                              "snapshot": snapshot, "http": http})
        lines = harness.eventgen("--events", 400, "--users", 40, "--items", 60, "--seed", 5,
                                 "--format", "keyed", "--bad-ratio", "0.03").splitlines()
        bad = [line for line in lines if b'"event_id":"bad-' in line]
        print("%d events, %d malformed" % (len(lines), len(bad)))
        check(bad, "need malformed events")

        # the offline commands first: they need no broker
        events = os.path.join(tmp, "events.jsonl")
        with open(events, "wb") as f:
            f.writelines(line.split(b"\t", 1)[1] + b"\n" for line in lines)
        offline = dict(os.environ, KAFKA_BROKERS="127.0.0.1:1", KAFKA_GROUP=GROUP,
                       REDIS_URL="redis://127.0.0.1:1/0")
        run_tool(valgrind, tmp, "check", ["check", config], offline)
        report = json.loads(run_tool(
            valgrind, tmp, "replay",
            ["replay", "--config", config, "--json", "--quiet",
             "--scores", os.path.join(tmp, "scores.jsonl"),
             "--report", os.path.join(tmp, "report.html"),
             "--examples", os.path.join(tmp, "examples.vw"), events], offline))
        check({m["name"] for m in report["models"]} >= {"purchase_propensity", "order_value"},
              "replay report models: %s" % [m["name"] for m in report["models"]])

        last_ts = max(json.loads(line.split(b"\t", 1)[1])["ts"] for line in lines
                      if line not in bad)
        more = harness.eventgen("--events", 100, "--users", 40, "--items", 60, "--seed", 6,
                                "--format", "keyed", "--start-ms", last_ts + 3600000).splitlines()
        with harness.RedisServer() as rs, harness.Broker({TOPIC: 2, DLQ: 1}) as broker, \
                harness.KafkaInspector(broker.bootstrap) as k:
            env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_GROUP": GROUP, "REDIS_URL": rs.url}
            # the second run restores the first one's snapshot and goes on from its offsets
            for run, batch in (("daemon", lines), ("restarted daemon", more)):
                harness.produce_kcat(broker.bootstrap, TOPIC, batch)
                run_daemon(valgrind, tmp, run, config, env, k, rs.client(), http, len(bad))
                check(any(n.endswith(".pds") for n in os.listdir(snapshot)),
                      "no snapshot written: %s" % os.listdir(snapshot))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("valgrind test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
