"""propensityd replay tells an engineer where a model stands:
  - per classifier the prior (base-rate log loss) and the normalised entropy, per regressor the
    RMSE of predicting the running mean: checked against values computed here from the
    examples replay exported (--examples), independently of the C code;
  - the learning curve in --json ends at the model's progressive log loss;
  - --baseline OLD.json puts two runs side by side (text: one row per metric with the
    difference; --report: a figures table with both columns and both learning curves);
  - examples lost to the pending bounds are a WARNING (text, --json, --report) once a model
    loses more than 0.1% of its examples, and are absent with the default bounds;
  - feature coverage: a field that is missing or of the wrong type is counted per feature, and
    a field that never held a usable value is a WARNING.
"""

import json
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile

import harness

CONFIG = """
kafka: { brokers: unused, topics: [events], group: unused }
events:
  types: [view, purchase]
features:
  device:   { categorical: context.device }
  campaign: { categorical: context.campaign }
  tier:     { numeric: context.tier }
  nowhere:  { categorical: context.no_such_field }
models:
  buys:
    type: logistic
    features: [device, campaign, tier, nowhere]
    example_on: [view]
    label: { positive_on: purchase, within: 30m, match: user_item }
  spend:
    type: linear
    features: [device, campaign]
    example_on: [purchase]
    label: { value_from: price }
%(watermark)s
"""


def check(cond, msg):
    if not cond:
        raise AssertionError(msg)


def stream(seed):
    """Views and purchases; u0 views every 2 s of event time (heavy user); one view in 20
    has `tier` as a string (wrong type) and one in 10 has no tier at all."""
    rng = random.Random(seed)
    ts, events = 1764000000000, []
    for i in range(12000):
        ts += rng.randint(0, 1000)
        user = "u0" if rng.random() < 0.25 else "u%d" % rng.randrange(1, 500)
        item = "i%d" % rng.randrange(300)
        ctx = {"device": rng.choice(["mobile", "desktop"]),
               "campaign": "k%d" % rng.randrange(12)}
        r = rng.random()
        if r < 0.05:
            ctx["tier"] = "gold"
        elif r > 0.1:
            ctx["tier"] = rng.randrange(3)
        events.append({"type": "view", "user_id": user, "item_id": item, "ts": ts,
                       "context": ctx})
        if rng.random() < 0.1 + 0.1 * (ctx["device"] == "desktop"):
            events.append({"type": "purchase", "user_id": user, "item_id": item,
                           "ts": ts + rng.randint(1000, 20 * 60000),
                           "price": round(rng.uniform(5, 50) + 20 * (ctx["device"] == "desktop"),
                                          2),
                           "context": ctx})
    events.sort(key=lambda e: e["ts"])
    return events


def replay(args):
    proc = subprocess.run([harness.env_path("PD_DAEMON"), "replay", "--quiet"] + args,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=120,
                          check=False)
    check(proc.returncode == 0, "replay %s failed (%d): %s"
          % (" ".join(args), proc.returncode, proc.stderr.decode(errors="replace")))
    return proc.stdout.decode()


def exported(path):
    """{model: [(label, weight)]} from a --examples file."""
    out = {}
    with open(path) as f:
        for line in f:
            m = re.match(r"(-?[0-9.e+-]+) ([0-9.e+-]+) '(\w+) \|f", line)
            check(m, "not a VW example line: %r" % line[:100])
            out.setdefault(m.group(3), []).append((float(m.group(1)), float(m.group(2))))
    return out


def main():
    tmp = tempfile.mkdtemp(prefix="pd-replay-quality-")
    try:
        events = os.path.join(tmp, "events.jsonl")
        with open(events, "w") as f:
            for e in stream(5):
                f.write(json.dumps(e) + "\n")
        configs = {}
        for name, wm in (("default", ""), ("tight", "watermark:\n  max_pending_per_user: 8")):
            configs[name] = os.path.join(tmp, name + ".yaml")
            with open(configs[name], "w") as f:
                f.write(CONFIG % {"watermark": wm})

        # ---- priors, against the exported examples ----
        vw = os.path.join(tmp, "examples.vw")
        report = json.loads(replay(["--config", configs["default"], "--json", "--examples", vw,
                                    events]))
        models = {m["name"]: m for m in report["models"]}
        ex = exported(vw)
        buys = ex["buys"]
        w = sum(wt for _, wt in buys)
        rate = sum(wt for y, wt in buys if y > 0) / w
        prior = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
        b = models["buys"]
        print("buys: base rate %.4f prior %.6f; replay %s %s NE %s"
              % (rate, prior, b["base_rate"], b["prior_log_loss"], b["normalized_entropy"]))
        check(abs(b["base_rate"] - rate) < 1e-9, "base rate %s, expected %s"
              % (b["base_rate"], rate))
        check(abs(b["prior_log_loss"] - prior) < 1e-9, "prior log loss %s, expected %s"
              % (b["prior_log_loss"], prior))
        check(abs(b["normalized_entropy"] - b["log_loss"] / prior) < 1e-9,
              "normalised entropy %s, expected %s" % (b["normalized_entropy"],
                                                      b["log_loss"] / prior))
        check(b["normalized_entropy"] < 1.0, "the model does not beat its prior: %s" % b)
        spend = ex["spend"]
        sq, n, total = 0.0, 0, 0.0
        for i, (y, _) in enumerate(spend):
            if i:
                sq += (y - total / i) ** 2
                n += 1
            total += y
        mean_rmse = math.sqrt(sq / n)
        print("spend: running-mean rmse %.6f; replay %s (model rmse %s)"
              % (mean_rmse, models["spend"]["mean_rmse"], models["spend"]["rmse"]))
        check(abs(models["spend"]["mean_rmse"] - mean_rmse) < 1e-6 * mean_rmse,
              "running-mean rmse %s, expected %s" % (models["spend"]["mean_rmse"], mean_rmse))
        curve = b["curve"]
        check(len(curve["examples"]) == len(curve["loss"]) and 100 <= len(curve["loss"]) <= 401,
              "curve has %d points" % len(curve["loss"]))
        check(curve["examples"][-1] == b["examples"] and
              abs(curve["loss"][-1] - b["log_loss"]) < 1e-6,
              "curve ends at %s, %s; model %s, %s" % (curve["examples"][-1], curve["loss"][-1],
                                                     b["examples"], b["log_loss"]))
        check(curve["examples"] == sorted(curve["examples"]), "curve x not increasing")

        # ---- feature coverage ----
        cov = {c["name"]: c for c in report["features"]}
        views = sum(1 for e in stream(5) if e["type"] == "view")
        all_events = len(stream(5))
        wrong = sum(1 for e in stream(5) if isinstance(e["context"].get("tier"), str))
        missing = sum(1 for e in stream(5) if "tier" not in e["context"])
        print("coverage: %s" % cov)
        check(cov["tier"]["events"] == all_events, "coverage counts %s" % cov["tier"])
        check(cov["tier"]["wrong_type"] == wrong and cov["tier"]["missing"] == missing,
              "tier coverage %s, expected %d wrong, %d missing (%d views)"
              % (cov["tier"], wrong, missing, views))
        check(cov["nowhere"]["missing"] == all_events, "nowhere coverage %s" % cov["nowhere"])
        check(cov["device"]["missing"] == 0 and cov["device"]["wrong_type"] == 0,
              "device coverage %s" % cov["device"])
        check(len(report["warnings"]) == 1 and "nowhere" in report["warnings"][0],
              "default bounds: warnings %s" % report["warnings"])
        check(b["evicted"] == {"user_limit": 0, "total_limit": 0}, "evicted %s" % b["evicted"])

        # ---- evictions are a WARNING ----
        old = os.path.join(tmp, "tight.json")
        with open(old, "w") as f:
            f.write(replay(["--config", configs["tight"], "--json", events]))
        tight = json.load(open(old))
        tb = [m for m in tight["models"] if m["name"] == "buys"][0]
        check(tb["evicted"]["user_limit"] > 0 and tb["lost_share"] > 0.001, "tight: %s" % tb)
        # every example taken is learned, evicted or still waiting at the end of the file
        taken_tight = tb["examples"] + tb["evicted"]["user_limit"] + tight["labels"]["pending"]
        taken = b["examples"] + report["labels"]["pending"]
        check(taken_tight == taken, "tight: %d learned + %d evicted + %d pending != %d taken"
              % (tb["examples"], tb["evicted"]["user_limit"], tight["labels"]["pending"], taken))
        check(any(w_.startswith("model buys lost") for w_ in tight["warnings"]),
              "no eviction warning in --json: %s" % tight["warnings"])
        text = replay(["--config", configs["tight"], events])
        check(re.search(r"^WARNING: model buys lost [0-9.]+% of its examples", text, re.M),
              "no WARNING line in the text output:\n" + text)
        check("WARNING: model spend" not in text, "spend lost nothing:\n" + text)
        check(not re.search(r"^WARNING: model", replay(["--config", configs["default"], events]),
                            re.M), "a loss WARNING with the default bounds")

        # ---- a baseline, side by side ----
        page = os.path.join(tmp, "report.html")
        text = replay(["--config", configs["default"], "--baseline", old, "--report", page,
                       events])
        print(text)
        m = re.search(r"^\s+log_loss\s+(\S+)\s+(\S+)\s+(\S+)$", text, re.M)
        check(m, "no log_loss comparison row:\n" + text)
        base_ll, this_ll, diff = (float(x) for x in m.groups())
        check(abs(base_ll - tb["log_loss"]) < 1e-5 and abs(this_ll - b["log_loss"]) < 1e-5 and
              abs(diff - (b["log_loss"] - tb["log_loss"])) < 1e-5,
              "comparison row %s against %s / %s" % (m.groups(), tb["log_loss"], b["log_loss"]))
        check(re.search(r"^\s+examples\s+%d\s+%d\s+\+%d$" % (
            tb["examples"], b["examples"], b["examples"] - tb["examples"]), text, re.M),
            "no examples comparison row:\n" + text)
        html = open(page).read()
        check(html.count("stroke-dasharray=\"6,3\"") >= 2,
              "the report does not plot the baseline's learning curves")
        check(html.count("<table>") == 2 and "difference" in html and old in html,
              "the report has no side-by-side figures")
        check("class=\"warning\"" in html and "nowhere" in html, "no warning on the page")
        html_tight = os.path.join(tmp, "tight.html")
        replay(["--config", configs["tight"], "--report", html_tight, events])
        check(re.search(r"WARNING</b> model buys lost", open(html_tight).read()),
              "no eviction warning on the page")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("replay quality test passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
