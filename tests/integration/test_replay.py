"""propensityd replay: deterministic reports, and every output it offers.

On generated events (with some malformed lines) and the example pipeline that has a logistic,
a linear (Huber) and an SGD text model:
  - two runs give identical reports, number for number (no wall clock in the maths)
  - refused lines are counted by reason
  - --scores writes one JSON line per user with that user's last scores
  - --report writes a self-contained HTML page: for every model a learning curve, and a
    calibration plot and a ROC curve where they apply; no scripts, no network references
  - --examples writes exactly the examples each model learned, in VW text format
  - the report gives bytes per weight, bytes per user and collision estimates
"""

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import harness

CONFIG = os.path.join("config", "examples", "purchase_value_sentiment.yaml")


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def replay(args, env):
    proc = subprocess.run([harness.env_path("PD_DAEMON"), "replay", "--quiet"] + args,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, timeout=120,
                          check=False)
    check(proc.returncode == 0, "replay %s failed (%d): %s"
          % (" ".join(args), proc.returncode, proc.stderr.decode(errors="replace")))
    return proc.stdout.decode()


def without_timing(report):
    return {k: v for k, v in report.items() if k not in ("seconds", "events_per_second")}


def main():
    tmp = tempfile.mkdtemp(prefix="pd-replay-")
    try:
        events = os.path.join(tmp, "events.jsonl")
        with open(events, "wb") as f:
            f.write(harness.eventgen("--events", 30000, "--users", 800, "--seed", 9,
                                     "--bad-ratio", "0.01"))
        env = dict(os.environ, STATE_DIRECTORY=tmp)
        config = os.path.join(harness.source_root(), CONFIG)

        first = json.loads(replay(["--config", config, "--json", events], env))
        second = json.loads(replay(["--config", config, "--json", events], env))
        check(without_timing(first) == without_timing(second),
              "two replays differ:\n%s\n%s" % (without_timing(first), without_timing(second)))
        print("identical reports: %d events, models %s"
              % (first["events"], [(m["name"], m["examples"]) for m in first["models"]]))

        refused = first["decode_errors"]
        check(sum(refused.values()) > 0 and first["events"] + sum(refused.values()) == 30000,
              "refused lines not counted: %s" % refused)
        models = {m["name"]: m for m in first["models"]}
        check(set(models) == {"purchase_propensity", "order_value", "review_sentiment"},
              "models %s" % list(models))
        for m in models.values():
            check(m["examples"] > 100, "%s learned only %d examples" % (m["name"], m["examples"]))
        check(models["purchase_propensity"]["auc"] > 0.7, "purchase AUC %s"
              % models["purchase_propensity"]["auc"])
        check(models["review_sentiment"]["auc"] > 0.8, "sentiment AUC %s"
              % models["review_sentiment"]["auc"])
        check(models["order_value"]["rmse"] > 0 and "log_loss" not in models["order_value"],
              "order_value report %s" % models["order_value"])
        check(models["purchase_propensity"]["bytes_per_weight"] == 32,
              "ftrl_multi float32 is 32 bytes per weight: %s" % models["purchase_propensity"])
        check(models["review_sentiment"]["bytes_per_weight"] == 2,
              "SGD bfloat16 is 2 bytes per weight: %s" % models["review_sentiment"])
        check(first["memory"]["bytes_per_user"] > 100, "bytes per user %s" % first["memory"])
        for m in models.values():
            check(0 <= m["collision_rate_estimate"] < 0.5 and m["weights_in_use"] > 0,
                  "collision estimate of %s: %s" % (m["name"], m))

        scores = os.path.join(tmp, "scores.jsonl")
        report = os.path.join(tmp, "report.html")
        examples = os.path.join(tmp, "examples.vw")
        text = replay(["--config", config, "--scores", scores, "--report", report,
                       "--examples", examples, events], env)
        check("share an entry" in text, "text report without collision line:\n" + text)

        users = set()
        with open(events, "rb") as f:
            for line in f:
                try:
                    e = json.loads(line)
                except (ValueError, UnicodeDecodeError):
                    continue
                if isinstance(e, dict) and e.get("user_id"):
                    users.add(e["user_id"])
        with open(scores) as f:
            rows = [json.loads(line) for line in f]
        scored = {r["user"] for r in rows}
        check(len(rows) == len(scored), "a user twice in --scores")
        check(scored <= users and len(scored) > 0.9 * len(users),
              "%d users scored of %d" % (len(scored), len(users)))
        for r in rows:
            check(0 < r["purchase_p"] < 1, "purchase_p out of (0,1): %s" % r)
            check("sentiment" not in r, "an unpublished model was written: %s" % r)

        with open(report) as f:
            html = f.read()
        check(html.count("<svg") == 8, "expected 8 plots (3 + 2 + 3), got %d"
              % html.count("<svg"))  # order_value: curve + calibration; no ROC
        check("<script" not in html, "the report has a script")
        refs = set(re.findall(r'(?:src|href)="([^"]+)"', html))
        check(not refs, "the report loads something: %s" % refs)
        for name in ("purchase_propensity", "order_value", "review_sentiment"):
            check(name in html, "%s missing from the report" % name)

        counts = {}
        with open(examples) as f:
            for line in f:
                m = re.match(r"(-?[0-9.e+-]+) ([0-9.e+-]+) '(\w+) \|f( \d+:[-0-9.e+]+)*$",
                             line.rstrip("\n"))
                check(m, "not a VW example line: %r" % line[:120])
                counts[m.group(3)] = counts.get(m.group(3), 0) + 1
        for name, m in models.items():
            check(counts.get(name) == m["examples"],
                  "%s: %s exported, %d learned" % (name, counts.get(name), m["examples"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("replay test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
