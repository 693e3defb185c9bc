"""The ops bundle: deploy/prometheus/alerts.yml and deploy/grafana/propensityd.json.

Declared in deploy/meson.build (suite integration). It checks:
  - alerts.yml is a Prometheus rule file: groups of rules, each alert with an expression, a
    valid `for:`, a severity and a summary, names unique; it has an alert for each condition
    ops asked for (down / not ready, lag growing, Redis flush failures, snapshot stale, quality
    gate closed, dead letters rising, labels evicted); `promtool check rules` accepts it when
    promtool is installed (Debian package prometheus; $PROMTOOL or PATH)
  - propensityd.json is valid JSON, a Grafana dashboard whose panels have unique ids, fit the
    24-column grid, and query throughput, lag, Redis latency, log loss, AUC, users and memory
  - config/example.yaml (the installed pipeline.yaml.example) serves /metrics and the health
    endpoints by default, at 127.0.0.1:9464 unless PROPENSITYD_HTTP says otherwise
  - every metric the alerts and the dashboard name is one a running daemon exports: the
    daemon runs the example with a linear and a recommender model added over a generated
    stream, /metrics where the example's daemon.http puts it, and its families are the
    reference (so a renamed metric fails this test)
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import yaml

import harness

TOPIC = "events"
GROUP = "deploy-bundle"
METRIC_RE = re.compile(r"\b((?:propensityd|process)_[a-zA-Z0-9_]+)\b")
DURATION_RE = re.compile(r"^(\d+(ms|s|m|h|d|w|y))+$")

# the conditions ops asked alerts for, each as a metric its alert must query
ALERT_METRICS = {
    "not ready": "propensityd_ready",
    "consumer lag growing": "propensityd_kafka_consumer_lag_messages",
    "Redis flush failures": "propensityd_redis_flush_failures_total",
    "snapshot stale": "propensityd_last_snapshot_timestamp_seconds",
    "quality gate closed": "propensityd_model_publishing",
    "dead letters rising": "propensityd_dead_lettered_total",
    "labels evicted": "propensityd_model_examples_evicted_total",
}
# and the dashboard's subjects
DASHBOARD_METRICS = {
    "throughput": "propensityd_events_total",
    "lag": "propensityd_kafka_consumer_lag_messages",
    "Redis latency": "propensityd_redis_write_duration_seconds_bucket",
    "log loss": "propensityd_model_log_loss",
    "AUC": "propensityd_model_auc",
    "users": "propensityd_users",
    "memory": "process_resident_memory_bytes",
}

EXTRA_MODELS = """models:
  order_value:
    type: linear
    optimizer: adagrad
    learning_rate: 0.05
    features: [device, country]
    example_on: [purchase]
    label: { value_from: value }
  recs:
    type: recommender
    interactions: { view: 1, click: 2, add_to_cart: 4, purchase: 8 }
    k: 5
"""


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def check_alerts(path):
    with open(path) as f:
        doc = yaml.safe_load(f)
    check(isinstance(doc, dict) and set(doc) == {"groups"}, "alerts.yml: top level is not groups")
    exprs, names = {}, set()
    for g in doc["groups"]:
        check(isinstance(g.get("name"), str) and isinstance(g.get("rules"), list),
              "alerts.yml: a group without name or rules: %r" % g)
        for rule in g["rules"]:
            name = rule.get("alert")
            check(isinstance(name, str) and re.match(r"^[A-Za-z][A-Za-z0-9_]*$", name),
                  "alerts.yml: rule without a valid alert name: %r" % rule)
            check(name not in names, "alerts.yml: %s twice" % name)
            names.add(name)
            check(set(rule) <= {"alert", "expr", "for", "labels", "annotations",
                                "keep_firing_for"}, "%s: unknown keys %s" % (name, set(rule)))
            check(isinstance(rule.get("expr"), str) and rule["expr"].strip(),
                  "%s: no expr" % name)
            if "for" in rule:
                check(DURATION_RE.match(str(rule["for"])), "%s: for: %r" % (name, rule["for"]))
            check(rule.get("labels", {}).get("severity") in ("warning", "critical"),
                  "%s: severity must be warning or critical" % name)
            check(rule.get("annotations", {}).get("summary"), "%s: no summary" % name)
            check(rule["expr"].count("(") == rule["expr"].count(")"),
                  "%s: unbalanced parentheses" % name)
            exprs[name] = rule["expr"]
    for subject, metric in ALERT_METRICS.items():
        check(any(metric in METRIC_RE.findall(e) for e in exprs.values()),
              "alerts.yml: no alert on %s (%s)" % (subject, metric))
    promtool = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if promtool:
        res = subprocess.run([promtool, "check", "rules", path], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, timeout=60, check=False)
        print(res.stdout.strip())
        check(res.returncode == 0, "promtool check rules failed")
    else:
        print("promtool not installed (Debian: prometheus): structure checked, PromQL not parsed")
    print("alerts.yml: %d alerts" % len(exprs))
    return exprs


def check_dashboard(path):
    with open(path) as f:
        dash = json.load(f)
    check(dash.get("title") and dash.get("uid") and isinstance(dash.get("panels"), list),
          "propensityd.json: not a dashboard (title, uid, panels)")
    exprs, ids = {}, set()
    for p in dash["panels"]:
        check(p.get("id") not in ids, "panel id %s twice" % p.get("id"))
        ids.add(p.get("id"))
        g = p.get("gridPos", {})
        check(all(isinstance(g.get(k), int) for k in "hwxy") and g["x"] + g["w"] <= 24,
              "panel %r: gridPos %s" % (p.get("title"), g))
        if p.get("type") == "row":
            continue
        check(p.get("targets"), "panel %r has no queries" % p.get("title"))
        for t in p["targets"]:
            check(isinstance(t.get("expr"), str) and t["expr"].strip(),
                  "panel %r: a target without expr" % p.get("title"))
            exprs["%s/%s" % (p["title"], t.get("refId"))] = t["expr"]
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query":
            exprs["$%s" % v["name"]] = q
    for subject, metric in DASHBOARD_METRICS.items():
        check(any(metric in METRIC_RE.findall(e) for e in exprs.values()),
              "propensityd.json: no panel on %s (%s)" % (subject, metric))
    print("propensityd.json: %d panels, %d queries" % (len(ids), len(exprs)))
    return exprs


def daemon_config(directory):
    """config/example.yaml with two more model kinds, snapshots and a control socket in
    `directory`; /metrics where the example's daemon.http says."""
    with open(os.path.join(harness.source_root(), "config", "example.yaml")) as f:
        text = f.read()
    check(text.count("\nmodels:\n") == 1, "config/example.yaml has no models: section")
    text = text.replace("\nmodels:\n", "\n" + EXTRA_MODELS, 1)
    text += "\nsnapshot:\n  dir: %s/snap\n  interval: 0\n" % directory
    control = "  control: ipc://%s/control.sock\n" % directory
    if re.search(r"^daemon:\n", text, re.MULTILINE):
        text = re.sub(r"^daemon:\n", "daemon:\n" + control, text, count=1, flags=re.MULTILINE)
    else:
        text += "\ndaemon:\n" + control
    path = os.path.join(directory, "pipeline.yaml")
    with open(path, "w") as f:
        f.write(text)
    return path


def example_http():
    """The example's daemon.http as written: metrics are on by default, on a port the
    environment can move (PROPENSITYD_HTTP)."""
    with open(os.path.join(harness.source_root(), "config", "example.yaml")) as f:
        doc = yaml.safe_load(f)
    http = (doc.get("daemon") or {}).get("http")
    check(http == "${PROPENSITYD_HTTP:-127.0.0.1:9464}",
          "config/example.yaml: daemon.http is %r; want metrics on by default at "
          "127.0.0.1:9464, movable with PROPENSITYD_HTTP" % http)
    return http


def exported_metrics(tmp):
    """The metric names a running daemon's /metrics exposes (histograms with their
    _bucket/_sum/_count series)."""
    lines = harness.eventgen("--events", 1500, "--users", 100, "--seed", 5,
                             "--format", "keyed").splitlines()
    example_http()
    http_port = harness.free_port()
    config = daemon_config(tmp)
    with harness.RedisServer() as rs, harness.Broker({TOPIC: 2}) as broker:
        harness.produce_kcat(broker.bootstrap, TOPIC, lines)
        env = {"KAFKA_BROKERS": broker.bootstrap, "KAFKA_TOPIC": TOPIC, "KAFKA_GROUP": GROUP,
               "REDIS_URL": rs.url, "PROPENSITYD_HTTP": "127.0.0.1:%d" % http_port}
        with harness.Daemon(config, env) as d:
            def settled():
                status, text = harness.http_get(http_port, "/metrics")
                if status != 200:
                    return None
                m = re.search(r"^propensityd_kafka_messages_total (\S+)$", text, re.MULTILINE)
                return text if m and float(m.group(1)) >= len(lines) else None

            text = d.wait_until(settled, 60, 0.3, "all events consumed (/metrics)")
            check(d.stop() == 0, "the daemon did not stop cleanly")
    names = set()
    for m in re.finditer(r"^# TYPE (\S+) (\S+)$", text, re.MULTILINE):
        names.add(m.group(1))
        if m.group(2) in ("histogram", "summary"):
            names.update(m.group(1) + s for s in ("_bucket", "_sum", "_count"))
    print("a running daemon exports %d metric families" % len(
        re.findall(r"^# TYPE ", text, re.MULTILINE)))
    return names


def main():
    print(harness.versions())
    root = harness.source_root()
    alert_exprs = check_alerts(os.path.join(root, "deploy", "prometheus", "alerts.yml"))
    dash_exprs = check_dashboard(os.path.join(root, "deploy", "grafana", "propensityd.json"))
    tmp = tempfile.mkdtemp(prefix="pd-deploy-bundle-")
    try:
        exported = exported_metrics(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    unknown = []
    for where, exprs in (("alerts.yml", alert_exprs), ("propensityd.json", dash_exprs)):
        for name, expr in exprs.items():
            for metric in METRIC_RE.findall(expr):
                if metric not in exported:
                    unknown.append("%s %s: %s" % (where, name, metric))
    check(not unknown, "metrics the daemon does not export:\n  " + "\n  ".join(unknown))
    used = {m for e in list(alert_exprs.values()) + list(dash_exprs.values())
            for m in METRIC_RE.findall(e)}
    print("%d metrics used, all exported" % len(used))
    print("deploy bundle test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
