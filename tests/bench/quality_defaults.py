#!/usr/bin/python3
"""How well the default learner learns without tuning, next to tuned and to Vowpal Wabbit.

A benchmark, not a test: it prints a table and always exits 0 once it ran (2 when a tool fails,
77 when numpy or PyYAML is missing). Per data set:
  ours default  `propensityd replay` with every model hyper-parameter left out of the YAML
                (optimizer, alpha, beta, l1, l2, learning rates, intercept, max_abs_margin),
                so the defaults of config/README.md decide; bits stay as the config sets them
                (they are the table size, and VW gets the same -b for the same masked indices)
  ours tuned    the best of a small grid (OURS_GRID) over the same replay; a grid setting the
                daemon's configuration refuses (an optimizer it does not know) is left out,
                with a note
  VW default    `vw --loss_function logistic` with nothing else, over the examples the default
                replay exported (`replay --examples`: same hashed features, learning order)
  VW tuned      the best of a small grid (VW_GRID) over -l, --ftrl/--ftrl_alpha and --l2
Each as progressive log loss (every example scored before it is learned), and, on gen_truth
streams where the Bayes-optimal and base-rate log loss are known, as the share of the gap
between them that the learner closed.

Data sets:
  - the real ones under the data dir with a propensity label: TalkingData, UCI bank marketing
    and Taobao with the configs in tests/bench/quality/, Criteo, Avazu (their own click label)
    and OTTO (a purchase within a day of a click) with configs written here; the last three
    have 100 to 800 examples, so their differences are noise;
  - pd-eventgen streams: bench_20_immediate.yaml over --label events (labels at once) and
    bench_20.yaml over plain events (labels joined within 30 minutes);
  - gen_truth.py streams of several seeds (the tools dir), which print their optimum.

Usage: quality_defaults.py [--data-dir DIR] [--tools-dir DIR] [--daemon PATH] [--eventgen PATH]
                           [--keep DIR] [--events N] [--views N] [--seeds 1,2,3] [NAME...]
Data: $PD_DATA_DIR, else <repo root>/../shared/data; tools: $PD_TOOLS_DIR, else
<repo root>/../shared/tools. Daemon and event generator: $PD_DAEMON / $PD_EVENTGEN, else
<repo root>/$PD_BUILD_DIR/{daemon/propensityd,deploy/dev/pd-eventgen} (PD_BUILD_DIR defaults
to build). Vowpal Wabbit: $VW, else `vw` on PATH; without it the VW columns are left out.
"""

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time

SKIP = 77

try:
    import numpy as np
    import yaml
except ImportError as exc:
    print("quality_defaults.py: SKIPPED: needs numpy and PyYAML (%s); run scripts/install-deps"
          % exc)
    sys.exit(SKIP)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("PD_SOURCE_ROOT") or os.path.normpath(os.path.join(HERE, "..", ".."))

# Model keys that are learning hyper-parameters: removed so the defaults apply.
HYPER_KEYS = ("optimizer", "alpha", "beta", "l1", "l2", "learning_rate", "power_t", "initial_t",
              "intercept", "max_abs_margin", "weights", "admission")

# Our grid: FTRL's alpha over two decades, with and without L2, AdaGrad's rate, and ftrl_multi
# (four FTRL alphas mixed) at its default and with L2.
OURS_GRID = ([("ftrl alpha %g" % a, {"optimizer": "ftrl", "alpha": a})
              for a in (0.03, 0.1, 0.3, 1, 3)] +
             [("ftrl alpha %g l2 1" % a, {"optimizer": "ftrl", "alpha": a, "l2": 1.0})
              for a in (0.1, 0.3, 1)] +
             [("adagrad rate %g" % r, {"optimizer": "adagrad", "learning_rate": r})
              for r in (0.1, 0.3, 1)] +
             [("ftrl_multi", {"optimizer": "ftrl_multi"}),
              ("ftrl_multi l2 1", {"optimizer": "ftrl_multi", "l2": 1.0})])

# VW's grid: its default learner's -l, its FTRL's alpha, and L2 on the best-known setting.
VW_GRID = ([("-l %g" % l, ["-l", repr(l)]) for l in (0.1, 0.25, 1, 2, 8)] +
           [("--ftrl --ftrl_alpha %g" % a, ["--ftrl", "--ftrl_alpha", repr(a)])
            for a in (0.03, 0.1, 0.3, 1, 3)] +
           [("--l2 1e-6", ["--l2", "1e-6"]),
            ("--ftrl --ftrl_alpha 0.3 --l2 1e-6", ["--ftrl", "--ftrl_alpha", "0.3", "--l2", "1e-6"])])

# Criteo rows have no user: each row is its own (the label is the row's, no state is needed).
CRITEO_YAML = """
kafka: { brokers: unused, topics: [ads], group: quality }
events: { types: [view], fields: { user: event_id } }
features:
%(cats)s
%(nums)s
models:
  clicks:
    type: logistic
    bits: 18
    features: [%(names)s]
    example_on: [view]
    label: { value_from: label }
"""

AVAZU_YAML = """
kafka: { brokers: unused, topics: [ads], group: quality }
events: { types: [view] }
features:
%(cats)s
  site_x_app: { cross: [site_id, app_id] }
models:
  clicks:
    type: logistic
    bits: 18
    features: [%(names)s, site_x_app]
    example_on: [view]
    label: { value_from: label }
"""

OTTO_YAML = """
kafka: { brokers: unused, topics: [sessions], group: quality }
events: { types: [click, add_to_cart, purchase] }
features:
  item:       { categorical: item_id }
  clicks_1h:  { decayed_count: click, half_life: 1h, transforms: [log1p] }
  carts_1d:   { decayed_count: add_to_cart, half_life: 1d, transforms: [log1p] }
  since_last: { recency: any, transforms: [log1p] }
  n_items:    { distinct_items: any, transforms: [log1p] }
models:
  buys:
    type: logistic
    bits: 18
    features: [item, clicks_1h, carts_1d, since_last, n_items]
    example_on: [click]
    label: { positive_on: purchase, within: 1d, match: user }
watermark:
  allowed_lateness: 1m
"""

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


class Failure(Exception):
    """A tool failed or its output is not what this script expects (exit 2)."""


def run(argv, stdout=None):
    proc = subprocess.run(argv, stdout=stdout or subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, check=False)
    if proc.returncode != 0:
        raise Failure("%s failed (exit %d):\n%s" % (" ".join(argv), proc.returncode,
                                                    proc.stderr[-2000:]))
    return proc


def log_loss(p, y):
    p = np.clip(p, 1e-15, 1.0 - 1e-15)
    return float(np.mean(-(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))))


# ---- configs ------------------------------------------------------------------------------------


def with_defaults(conf):
    """conf with every learning hyper-parameter of its only model removed: (conf, model name)."""
    models = conf.get("models") or {}
    if len(models) != 1:
        raise Failure("a config here must have exactly one model, not %d" % len(models))
    name, m = next(iter(models.items()))
    for k in HYPER_KEYS:
        m.pop(k, None)
    return conf, name


def with_hyper(conf, hyper):
    out = json.loads(json.dumps(conf))
    m = next(iter(out["models"].values()))
    m.update(hyper)
    return out


def write_yaml(conf, path):
    with open(path, "w") as f:
        yaml.safe_dump(conf, f, sort_keys=False)
    return path


def criteo_conf():
    cats = ["C%d" % i for i in range(1, 27)]
    nums = ["I%d" % i for i in range(1, 14)]
    text = CRITEO_YAML % {
        "cats": "\n".join("  %s: { categorical: context.%s }" % (c.lower(), c) for c in cats),
        # counts, some -1: clipped at 0 before log1p
        "nums": "\n".join("  %s: { numeric: context.%s, transforms: [{clip: [0, 1e9]}, log1p] }"
                          % (n.lower(), n) for n in nums),
        "names": ", ".join(c.lower() for c in cats + nums)}
    return yaml.safe_load(text)


def avazu_conf():
    cats = ["C1", "banner_pos", "site_id", "site_domain", "site_category", "app_id", "app_domain",
            "app_category", "device_model", "device_type", "device_conn_type", "C14", "C15",
            "C16", "C17", "C18", "C19", "C20", "C21"]
    text = AVAZU_YAML % {
        "cats": "\n".join("  %s: { categorical: context.%s }" % (c.lower(), c) for c in cats),
        "names": ", ".join(c.lower() for c in cats)}
    return yaml.safe_load(text)


# ---- one learner run ----------------------------------------------------------------------------


def replay(daemon, config_path, data, examples=None):
    argv = [daemon, "replay", "--quiet", "--json", "--config", config_path]
    if examples:
        argv += ["--examples", examples]
    report = json.loads(run(argv + [data]).stdout)
    models = report.get("models") or []
    if len(models) != 1:
        raise Failure("replay --json of %s has %d models" % (config_path, len(models)))
    return report, models[0]


def labels_of(examples_path):
    with open(examples_path) as f:
        return np.array([1.0 if float(line.split(" ", 1)[0]) > 0 else 0.0 for line in f])


def vw_log_loss(vw, examples_path, bits, args, y, tmp):
    preds = os.path.join(tmp, "vw.preds")
    run([vw, "--quiet", "--onethread", "--loss_function", "logistic", "--link", "logistic",
         "-b", str(bits), "-d", examples_path, "-p", preds] + args)
    p = np.loadtxt(preds, usecols=0, ndmin=1)
    if len(p) != len(y):
        raise Failure("vw wrote %d predictions for %d examples" % (len(p), len(y)))
    return log_loss(p, y)


# ---- one data set -------------------------------------------------------------------------------


def supported_grid(daemon, conf, tmp):
    """OURS_GRID without the settings `propensityd check` refuses on conf (with a note each)."""
    out = []
    for label, hyper in OURS_GRID:
        path = write_yaml(with_hyper(with_defaults(json.loads(json.dumps(conf)))[0], hyper),
                          os.path.join(tmp, "grid-check.yaml"))
        proc = subprocess.run([daemon, "check", path], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, check=False)
        if proc.returncode == 0:
            out.append((label, hyper))
        else:
            why = (proc.stderr.strip().splitlines() or ["exit %d" % proc.returncode])[0]
            print("quality_defaults.py: grid setting \"%s\" left out: %s" % (label, why))
    return out


def evaluate(ds, daemon, vw, tmp, grid):
    """ds: dict(name, conf, data, optimum=(base, bayes) or None). Returns a result row."""
    conf, model = with_defaults(ds["conf"])
    bits = int(next(iter(conf["models"].values())).get("bits", 20))
    examples = os.path.join(tmp, ds["name"] + ".vw")
    t0 = time.monotonic()
    report, ours = replay(daemon, write_yaml(conf, os.path.join(tmp, ds["name"] + ".yaml")),
                          ds["data"], examples)
    y = labels_of(examples)
    if len(y) == 0 or ours.get("log_loss") is None:
        raise Failure("%s: the default replay learned no example" % ds["name"])
    row = dict(name=ds["name"], examples=len(y), positives=int(y.sum()),
               optimum=ds.get("optimum"), ours_default=ours["log_loss"],
               events_per_second=report.get("events_per_second"))
    best = None
    for label, hyper in grid:
        path = write_yaml(with_hyper(conf, hyper), os.path.join(tmp, ds["name"] + ".grid.yaml"))
        ll = replay(daemon, path, ds["data"])[1]["log_loss"]
        if best is None or ll < best[0]:
            best = (ll, label)
    row["ours_tuned"], row["ours_tuned_with"] = best
    row["vw_default"] = row["vw_tuned"] = row["vw_tuned_with"] = None
    if vw:
        row["vw_default"] = vw_log_loss(vw, examples, bits, [], y, tmp)
        best = (row["vw_default"], "(default)")
        for label, args in VW_GRID:
            ll = vw_log_loss(vw, examples, bits, args, y, tmp)
            if ll < best[0]:
                best = (ll, label)
        row["vw_tuned"], row["vw_tuned_with"] = best
    row["seconds"] = time.monotonic() - t0
    if not ds.get("keep"):
        os.unlink(examples)
    return row


# ---- data sets ----------------------------------------------------------------------------------

REAL = [
    ("talkingdata", "talkingdata_adtracking_sample/talkingdata_adtracking_sample.jsonl",
     "quality/talkingdata.yaml"),
    ("bank_marketing", "uci_bank_marketing/uci_bank_marketing.jsonl",
     "quality/bank_marketing.yaml"),
    ("taobao", "taobao_userbehavior_sample/taobao_userbehavior_sample.jsonl", "quality/taobao.yaml"),
    ("criteo", "criteo_sample/criteo_sample.jsonl", criteo_conf),
    ("avazu", "avazu_sample/avazu_sample.jsonl", avazu_conf),
    ("otto", "otto_sample/otto_sample.jsonl", lambda: yaml.safe_load(OTTO_YAML)),
]


def real_sets(data_dir, names):
    out = []
    for name, rel, conf in REAL:
        if names and name not in names:
            continue
        path = os.path.join(data_dir, rel)
        if not os.path.isfile(path):
            print("quality_defaults.py: %s: %s is absent, not run" % (name, path))
            continue
        if callable(conf):
            c = conf()
        else:
            with open(os.path.join(HERE, conf)) as f:
                c = yaml.safe_load(f)
        out.append(dict(name=name, conf=c, data=path))
    return out


def eventgen_sets(eventgen, n_events, tmp, names):
    out = []
    for name, config, flags in (("eventgen_immediate", "bench_20_immediate.yaml", ["--label"]),
                                ("eventgen_delayed", "bench_20.yaml", [])):
        if names and name not in names:
            continue
        path = os.path.join(tmp, name + ".jsonl")
        with open(path, "w") as f:
            run([eventgen, "--users", "20000", "--events", str(n_events), "--seed", "1"] + flags,
                stdout=f)
        with open(os.path.join(HERE, config)) as f:
            out.append(dict(name=name, conf=yaml.safe_load(f), data=path))
    return out


def gen_truth_sets(gen_truth, n_views, seeds, tmp, names):
    out = []
    for seed in seeds:
        name = "gen_truth_%d" % seed
        if names and name not in names and "gen_truth" not in names:
            continue
        path = os.path.join(tmp, name + ".jsonl")
        with open(path, "w") as f:
            proc = run([sys.executable, gen_truth, str(n_views), str(seed)], stdout=f)
        opt = json.loads(proc.stderr.strip().splitlines()[-1])
        out.append(dict(name=name, conf=yaml.safe_load(GEN_TRUTH_YAML), data=path,
                        optimum=(opt["base_rate_logloss"], opt["bayes_logloss"])))
    return out


# ---- main ---------------------------------------------------------------------------------------


def fmt(v, spec="%.5f"):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else spec % v


def gap(row, key):
    v = row.get(key)
    if v is None or not row["optimum"]:
        return "-"
    base, bayes = row["optimum"]
    return "%.1f%%" % (100.0 * (base - v) / (base - bayes))


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir")
    ap.add_argument("--tools-dir")
    ap.add_argument("--daemon")
    ap.add_argument("--eventgen")
    ap.add_argument("--keep", metavar="DIR", help="keep generated events and examples in DIR")
    ap.add_argument("--events", type=int, default=300000, help="pd-eventgen events per stream")
    ap.add_argument("--views", type=int, default=200000, help="gen_truth views per stream")
    ap.add_argument("--seeds", default="1,2,3", help="gen_truth seeds")
    ap.add_argument("names", nargs="*", help="data sets to run (default all)")
    args = ap.parse_args(argv)
    names = set(args.names)

    build = os.environ.get("PD_BUILD_DIR", "build")
    daemon = args.daemon or os.environ.get("PD_DAEMON") or os.path.join(
        ROOT, build, "daemon", "propensityd")
    eventgen = args.eventgen or os.environ.get("PD_EVENTGEN") or os.path.join(
        ROOT, build, "deploy", "dev", "pd-eventgen")
    data_dir = args.data_dir or os.environ.get("PD_DATA_DIR") or \
        os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
    tools_dir = args.tools_dir or os.environ.get("PD_TOOLS_DIR") or \
        os.path.normpath(os.path.join(ROOT, "..", "shared", "tools"))
    for what, path in (("propensityd", daemon), ("pd-eventgen", eventgen)):
        if not os.access(path, os.X_OK):
            print("quality_defaults.py: %s not found at %s (build it, or see --help)"
                  % (what, path), file=sys.stderr)
            return 2
    vw = os.environ.get("VW") or shutil.which("vw")
    if vw and not os.access(vw, os.X_OK):
        print("quality_defaults.py: $VW=%s is not executable: no VW columns" % vw)
        vw = None

    tmp = args.keep or tempfile.mkdtemp(prefix="pd-quality-defaults-")
    os.makedirs(tmp, exist_ok=True)
    try:
        sets = []
        if os.path.isdir(data_dir):
            sets += real_sets(data_dir, names)
        else:
            print("quality_defaults.py: no real data sets at %s (set PD_DATA_DIR)" % data_dir)
        sets += eventgen_sets(eventgen, args.events, tmp, names)
        gen_truth = os.path.join(tools_dir, "gen_truth.py")
        if os.path.isfile(gen_truth):
            seeds = [int(s) for s in args.seeds.split(",") if s]
            sets += gen_truth_sets(gen_truth, args.views, seeds, tmp, names)
        else:
            print("quality_defaults.py: %s is absent: no gen_truth streams" % gen_truth)
        for ds in sets:
            ds["keep"] = bool(args.keep)
        grid = supported_grid(daemon, sets[0]["conf"], tmp) if sets else OURS_GRID
        rows = [evaluate(ds, daemon, vw, tmp, grid) for ds in sets]
    except Failure as exc:
        print("quality_defaults.py: %s" % exc, file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print("progressive log loss (each example scored before it is learned), lower is better;")
    print("gap: share of the base-rate-to-Bayes-optimum gap closed (gen_truth only)")
    print("vw: %s" % (vw if vw else "not found ($VW or PATH): VW columns left out"))
    print()
    head = "%-19s %7s %5s | %9s %6s | %9s %6s | %9s %6s | %9s %6s | %s"
    print(head % ("data set", "ex", "pos", "default", "gap", "tuned", "gap", "vw dflt", "gap",
                  "vw tuned", "gap", "verdict"))
    for r in rows:
        if r["vw_tuned"] is None:
            verdict = "-"
        else:
            # float32 state against VW's: a tie within 1e-4 (relative) is a tie
            d = r["ours_default"] - r["vw_tuned"]
            verdict = ("ok" if d <= 1e-4 * r["vw_tuned"] else "behind by %.2g (%.1f%%)"
                       % (d, 100.0 * d / r["vw_tuned"]))
        print(head % (r["name"], r["examples"], r["positives"], fmt(r["ours_default"]),
                      gap(r, "ours_default"), fmt(r["ours_tuned"]), gap(r, "ours_tuned"),
                      fmt(r["vw_default"]), gap(r, "vw_default"), fmt(r["vw_tuned"]),
                      gap(r, "vw_tuned"), verdict))
    print()
    print("best settings: ours tuned / vw tuned")
    for r in rows:
        print("  %-19s %-22s / %s" % (r["name"], r["ours_tuned_with"], r["vw_tuned_with"] or "-"))
    print("grids: ours %s; vw %s" % ("; ".join(g[0] for g in grid),
                                     "; ".join(g[0] for g in VW_GRID)))
    print("seconds per data set: " + ", ".join("%s %.1f" % (r["name"], r["seconds"]) for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
