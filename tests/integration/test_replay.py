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

On a small deterministic stream of item events generated here, a recommender alone and beside
a logistic model:
  - --json gives the recommender's HR, MRR and NDCG at K, the same three for each baseline
    (popularity, recent popularity, co-visitation), bytes per user and per item, its counts and
    the hit rate curves; none of the loss figures of a model that scores users
  - the figures hold together: 0 <= MRR <= NDCG <= HR <= 1, the curves end at the reported
    rates, `evaluated` is the count by its definition (an evaluate_on event by a user with an
    earlier interaction, on an item new to that user) and two runs are identical
  - the text output has the table side by side and the ratio to the best baseline, and the
    report page a section with that table and HR@K over the evaluations
"""

import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

import harness

CONFIG = os.path.join("config", "examples", "purchase_value_sentiment.yaml")

TYPES = ["view", "click", "add_to_cart", "purchase"]
RECS_CONFIG = """
kafka: { brokers: 127.0.0.1:9092, topics: [events], group: g }
redis: { url: redis://127.0.0.1:6379/0, prefix: pd }
events:
  fields: { event_id: event_id, user: user_id, item: item_id, type: type, time: ts }
  types: [view, click, add_to_cart, purchase]
%s
models:
  recs:
    type: recommender
    interactions: { view: 1, click: 1, add_to_cart: 2, purchase: 4 }
    evaluate_on: [click]
    k: 10
%s
"""
# a logistic model beside the recommender: both must render
CTR_FEATURES = """
features:
  item:   { categorical: item_id, vocabulary: 1000 }
  device: { categorical: context.device }
"""
CTR_MODEL = """
  ctr:
    type: logistic
    features: [item, device]
    example_on: [view]
    label: { positive_on: click, within: 10m, match: user_item }
    output: ctr
"""
BASELINES = ("popularity", "recent_popularity", "co_visitation")


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


def item_stream(path, seed=5, users=150, events=6000):
    """Users who browse mostly one of six clusters of 12 items, so co-visitation has something
    to find; returns the evaluations by the definition, the users and the items."""
    rng = random.Random(seed)
    home = {"r%d" % u: rng.randrange(6) for u in range(users)}
    touched = {}
    evaluated = 0
    items = set()
    ts = 1700000000000
    with open(path, "w") as f:
        for n in range(events):
            user = "r%d" % rng.randrange(users)
            cluster = home[user] if rng.random() < 0.85 else rng.randrange(6)
            item = "i%d" % (cluster * 12 + int(rng.triangular(0, 12, 0)))
            kind = rng.choices(TYPES, weights=[60, 30, 7, 3])[0]
            ts += rng.randrange(1, 4000)
            seen = touched.setdefault(user, set())
            if kind == "click" and seen and item not in seen:
                evaluated += 1
            seen.add(item)
            items.add(item)
            f.write(json.dumps({"event_id": "r-%d" % n, "type": kind, "user_id": user,
                                "item_id": item, "ts": ts,
                                "context": {"device": ["mobile", "desktop"][n % 2]}}) + "\n")
    return evaluated, len(touched), len(items)


def check_list_model(m, expect_evaluated, users, items, events):
    check(m["type"] == "recommender" and m["k"] == 10, "recommender header %s" % m)
    for absent in ("log_loss", "auc", "examples", "positives", "base_rate", "lost_share"):
        check(absent not in m, "a recommender reports %s: %s" % (absent, sorted(m)))
    check(m["evaluated"] == expect_evaluated,
          "evaluated %s, the definition counts %d" % (m["evaluated"], expect_evaluated))
    check(m["interactions"] == events and m["users"] == users and m["items"] == items,
          "counts %s (expected %d interactions, %d users, %d items)"
          % ({k: m[k] for k in ("interactions", "users", "items")}, events, users, items))
    check(m["users_evicted"] == 0 and m["items_evicted"] == 0, "evictions %s" % m)
    check(m["bytes_per_user"] > 0 and m["bytes_per_item"] > 0, "bytes per user/item %s" % m)
    check(0 <= m["blend_share"] <= 1, "blend_share %s" % m["blend_share"])
    lists = [("served", m)] + [(b, m["baselines"][b]) for b in BASELINES]
    for name, s in lists:
        hr, mrr, ndcg = s["hr_at_k"], s["mrr_at_k"], s["ndcg_at_k"]
        check(0 <= mrr <= ndcg + 1e-12 and ndcg <= hr + 1e-12 and hr <= 1,
              "%s: HR %s, MRR %s, NDCG %s do not hold together" % (name, hr, mrr, ndcg))
    check(m["hr_at_k"] > 0, "nothing hit: %s" % m)
    curve = m["curve"]
    x = curve["evaluations"]
    check(x and x[-1] == m["evaluated"] and all(a < b for a, b in zip(x, x[1:])),
          "curve evaluations %s" % x[-5:])
    for name, s, ys in [("served", m, curve["hr_at_k"])] + \
            [(b, m["baselines"][b], curve["baselines"][b]["hr_at_k"]) for b in BASELINES]:
        check(len(ys) == len(x) and all(0 <= y <= 1 for y in ys),
              "%s curve %d points for %d evaluations" % (name, len(ys), len(x)))
        check(abs(ys[-1] - s["hr_at_k"]) < 1e-7,
              "%s curve ends at %s, HR@K is %s" % (name, ys[-1], s["hr_at_k"]))


def recommender_checks(tmp, env):
    events = os.path.join(tmp, "items.jsonl")
    n_events = 6000
    evaluated, users, items = item_stream(events, events=n_events)
    check(evaluated > 200, "the stream has only %d evaluations" % evaluated)
    config = os.path.join(tmp, "recs.yaml")
    with open(config, "w") as f:
        f.write(RECS_CONFIG % ("", ""))

    first = json.loads(replay(["--config", config, "--json", events], env))
    second = json.loads(replay(["--config", config, "--json", events], env))
    check(without_timing(first) == without_timing(second), "two recommender replays differ")
    check(first["warnings"] == [], "warnings %s" % first["warnings"])
    (m,) = first["models"]
    check_list_model(m, evaluated, users, items, n_events)
    print("recommender: %d evaluations, HR@10 %.4f, MRR@10 %.4f; baselines HR %s"
          % (m["evaluated"], m["hr_at_k"], m["mrr_at_k"],
             {b: round(m["baselines"][b]["hr_at_k"], 4) for b in BASELINES}))

    report = os.path.join(tmp, "recs.html")
    old = os.path.join(tmp, "recs.json")
    with open(old, "w") as f:
        json.dump(first, f)
    text = replay(["--config", config, "--report", report, "--baseline", old, events], env)
    rows = {}
    for line in text.splitlines():
        cells = line.split()
        if len(cells) == 4 and cells[0] in ("list", "served") + BASELINES:
            rows[cells[0]] = cells[1:]
    check(rows.get("list") == ["HR@10", "MRR@10", "NDCG@10"], "no table header:\n" + text)
    check(float(rows["served"][0]) == round(m["hr_at_k"], 4), "served row %s" % rows["served"])
    for b in BASELINES:
        check(b in rows and float(rows[b][1]) == round(m["baselines"][b]["mrr_at_k"], 4),
              "baseline row %s: %s\n%s" % (b, rows.get(b), text))
    check(re.search(r"served HR@10 is [0-9.]+x the best baseline's", text),
          "no ratio to the best baseline:\n" + text)
    check("co_visitation.hr_at_k" in text and "compared with" in text,
          "no comparison with the baseline run:\n" + text)
    with open(report) as f:
        html = f.read()
    check("HR@10 over evaluations" in html and html.count("<svg") == 1,
          "report: %d plots, HR curve %s" % (html.count("<svg"), "HR@10 over" in html))
    check("log loss" not in html and "ROC" not in html, "loss plots for a recommender")
    for b in BASELINES:
        check("<td style=\"text-align:left\">%s</td>" % b in html, "report table without " + b)

    # beside a logistic model: both render, each in its own terms
    with open(config, "w") as f:
        f.write(RECS_CONFIG % (CTR_FEATURES, CTR_MODEL))
    mixed = json.loads(replay(["--config", config, "--json", events], env))
    models = {x["name"]: x for x in mixed["models"]}
    check(set(models) == {"ctr", "recs"}, "models %s" % list(models))
    check(models["ctr"]["examples"] > 1000 and 0 < models["ctr"]["log_loss"] < 1 and
          "hr_at_k" not in models["ctr"] and models["ctr"]["curve"]["loss"],
          "logistic beside a recommender: %s" % models["ctr"])
    check_list_model(models["recs"], evaluated, users, items, n_events)
    check(models["recs"] == m,
          "the recommender changed beside a logistic model")
    text = replay(["--config", config, "--report", report, events], env)
    check("model ctr:" in text and "normalised entropy" in text and "served HR@10" in text,
          "mixed text output:\n" + text)
    with open(report) as f:
        html = f.read()
    check(html.count("<svg") == 4, "mixed report: %d plots (3 + 1)" % html.count("<svg"))


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

        recommender_checks(tmp, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("replay test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
