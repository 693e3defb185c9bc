#!/usr/bin/python3
"""Model quality on real data sets: propensityd's logistic FTRL against an independent reference.

For each data set (tests/bench/quality/<name>.yaml over ../shared/data/<folder>/<file>.jsonl):
  1. `propensityd replay --json --examples OUT.vw` runs the pipeline and writes every example it
     learned, in learning order, in Vowpal Wabbit's text format (indices already masked);
  2. a float64 FTRL-Proximal written here from McMahan et al. 2013 ("Ad click prediction: a view
     from the trenches", Algorithm 1), with the config's alpha, beta, l1, l2 and an
     unregularised intercept, learns the same examples in the same order and scores each one
     before learning it (progressive validation);
  3. when a `vw` binary is on PATH, Vowpal Wabbit learns the same file too
     (--loss_function logistic --ftrl, same alpha/beta/l1/l2 and bits).
It prints their progressive log loss and AUC side by side, and fails when propensityd's log
loss is worse than the reference's (or VW's, when measured) by more than TOLERANCE (the C keeps
float32 state, so tiny differences from the reference are expected).

The reference follows the paper where propensityd documents a choice of its own:
  - an example is a vector: an index that occurs twice (a hash collision inside one example)
    is one coordinate with the summed value, updated once (propensityd applies each occurrence
    in turn); the table says how many examples had one;
  - margins are clipped to +-max_abs_margin from the config, and log loss clips probabilities
    to [1e-15, 1 - 1e-15], as propensityd does (both only matter for extreme predictions);
  - AUC is exact (ranks, ties averaged); propensityd's all-time AUC comes from a 65536-bin
    histogram of logits, so it may differ in the 4th decimal.

Usage: quality.py [--data-dir DIR] [--daemon PATH] [--keep DIR] [NAME...]
Data: $PD_DATA_DIR, else <repo root>/../shared/data. Daemon: $PD_DAEMON, else
<repo root>/$PD_BUILD_DIR/daemon/propensityd (PD_BUILD_DIR defaults to build).
Exit status: 0 pass, 1 a check failed, 2 usage or a tool failed, 77 data or numpy/yaml missing
(meson's "skipped").
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
TOLERANCE = 1e-3  # absolute, on progressive log loss

try:
    import numpy as np
    import yaml
except ImportError as exc:
    print("quality.py: SKIPPED: needs numpy and PyYAML (%s); run scripts/install-deps" % exc)
    sys.exit(SKIP)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("PD_SOURCE_ROOT") or os.path.normpath(os.path.join(HERE, "..", ".."))

# name, data file under the data dir, what is predicted
DATASETS = [
    ("talkingdata", "talkingdata_adtracking_sample/talkingdata_adtracking_sample.jsonl",
     "ad click -> app download within 12 h (same ip and app)"),
    ("bank_marketing", "uci_bank_marketing/uci_bank_marketing.jsonl",
     "client subscribes a term deposit (row label, no duration)"),
    ("taobao", "taobao_userbehavior_sample/taobao_userbehavior_sample.jsonl",
     "view -> purchase by the same user within 6 h"),
]


class Failure(Exception):
    """A tool failed or its output is not what this script expects (exit 2)."""


# ---- the reference ----------------------------------------------------------------------------


class FtrlProximal:
    """Per-coordinate FTRL-Proximal for logistic loss (McMahan et al. 2013, Algorithm 1), float64.

    The intercept is the coordinate `size` (value 1 in every example), with l1 = l2 = 0.
    """

    def __init__(self, size, alpha, beta, l1, l2, intercept, max_abs_margin):
        self.z = np.zeros(size + 1)
        self.n = np.zeros(size + 1)
        self.size = size
        self.alpha, self.beta, self.l1, self.l2 = alpha, beta, l1, l2
        self.intercept = intercept
        self.max_abs_margin = max_abs_margin

    def _weights(self, z, n, l1, l2):
        # w_i = 0 if |z_i| <= l1, else -(z_i - sgn(z_i) l1) / ((beta + sqrt(n_i)) / alpha + l2)
        w = -(z - np.sign(z) * l1) / ((self.beta + np.sqrt(n)) / self.alpha + l2)
        return np.where(np.abs(z) <= l1, 0.0, w)

    def learn(self, idx, x, y, importance):
        """Predicts p(y = 1 | x), then updates on (x, y); returns the prediction."""
        if self.intercept:
            idx = np.append(idx, self.size)
            x = np.append(x, 1.0)
        reg = np.ones(len(idx))
        if self.intercept:
            reg[-1] = 0.0  # the intercept is not regularised
        l1, l2 = self.l1 * reg, self.l2 * reg
        z, n = self.z[idx], self.n[idx]
        w = self._weights(z, n, l1, l2)
        m = float(np.dot(w, x))
        m = min(max(m, -self.max_abs_margin), self.max_abs_margin)
        p = 1.0 / (1.0 + math.exp(-m))
        g = (p - y) * importance * x
        sigma = (np.sqrt(n + g * g) - np.sqrt(n)) / self.alpha
        self.z[idx] = z + g - sigma * w
        self.n[idx] = n + g * g
        return p


def log_loss(p, y):
    p = np.clip(p, 1e-15, 1.0 - 1e-15)
    return float(np.mean(-(y * np.log(p) + (1.0 - y) * np.log(1.0 - p))))


def auc(p, y):
    """Exact ROC AUC: the Mann-Whitney statistic, ties given average ranks."""
    pos = int(np.sum(y > 0.5))
    neg = len(y) - pos
    if pos == 0 or neg == 0:
        return float("nan")
    order = np.argsort(p, kind="mergesort")
    sp = p[order]
    ranks = np.empty(len(p))
    ranks[order] = np.arange(1, len(p) + 1, dtype=float)
    # average the ranks of tied predictions
    uniq, first, counts = np.unique(sp, return_index=True, return_counts=True)
    tied = counts > 1
    for f, c in zip(first[tied], counts[tied]):
        ranks[order[f:f + c]] = f + (c + 1) / 2.0
    return float((np.sum(ranks[y > 0.5]) - pos * (pos + 1) / 2.0) / (pos * neg))


# ---- the exported examples --------------------------------------------------------------------


def read_examples(path, model):
    """The examples of `model` in a replay --examples file, as (indices, values, y, importance,
    had_duplicate) in file order. Duplicate indices are merged into one coordinate."""
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, 1):
            head, sep, body = line.partition("|")
            parts = head.split()
            if not sep or len(parts) != 3 or not parts[2].startswith("'"):
                raise Failure("%s:%d: not a replay --examples line: %r" % (path, lineno, line[:80]))
            if parts[2][1:] != model:
                continue
            y = 1.0 if float(parts[0]) > 0 else 0.0
            importance = float(parts[1])
            tokens = body.split()[1:]  # the first token is the namespace
            idx = np.fromiter((int(t.partition(":")[0]) for t in tokens), dtype=np.int64,
                              count=len(tokens))
            val = np.fromiter((float(t.partition(":")[2] or 1) for t in tokens), dtype=float,
                              count=len(tokens))
            dup = len(set(idx.tolist())) != len(idx)
            if dup:
                uniq, inverse = np.unique(idx, return_inverse=True)
                summed = np.zeros(len(uniq))
                np.add.at(summed, inverse, val)
                idx, val = uniq, summed
            out.append((idx, val, y, importance, dup))
    return out


def run_reference(examples, model_conf):
    ftrl = FtrlProximal(1 << model_conf["bits"], model_conf["alpha"], model_conf["beta"],
                        model_conf["l1"], model_conf["l2"], model_conf["intercept"],
                        model_conf["max_abs_margin"])
    preds = np.empty(len(examples))
    for i, (idx, val, y, importance, _dup) in enumerate(examples):
        preds[i] = ftrl.learn(idx, val, y, importance)
    return preds


def run_vw(vw, examples_path, model_conf, tmp):
    """Vowpal Wabbit on the same file; its progressive predictions as probabilities."""
    preds_path = os.path.join(tmp, "vw.preds")
    argv = [vw, "--onethread", "--quiet", "--loss_function", "logistic", "--link", "logistic",
            "--ftrl", "--ftrl_alpha", repr(model_conf["alpha"]),
            "--ftrl_beta", repr(model_conf["beta"]), "--l1", repr(model_conf["l1"]),
            "--l2", repr(model_conf["l2"]), "-b", str(model_conf["bits"]),
            "-d", examples_path, "-p", preds_path]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          check=False)
    if proc.returncode != 0:
        raise Failure("%s failed (exit %d):\n%s" % (" ".join(argv), proc.returncode,
                                                    proc.stderr[-2000:]))
    with open(preds_path) as f:
        return np.array([float(line.split()[0]) for line in f if line.strip()])


# ---- one data set -----------------------------------------------------------------------------


def model_of(config_path):
    """(name, hyper-parameters) of the config's only model; every key the reference needs must
    be written out in the file, so the reference never guesses a default."""
    with open(config_path) as f:
        conf = yaml.safe_load(f)
    models = conf.get("models") or {}
    if len(models) != 1:
        raise Failure("%s: expected exactly one model, found %d" % (config_path, len(models)))
    name, m = next(iter(models.items()))
    if m.get("type") != "logistic" or m.get("optimizer") != "ftrl":
        raise Failure("%s: model %s must be logistic/ftrl" % (config_path, name))
    missing = [k for k in ("alpha", "beta", "l1", "l2", "bits", "intercept", "max_abs_margin")
               if k not in m]
    if missing:
        raise Failure("%s: model %s must set %s explicitly" % (config_path, name,
                                                               ", ".join(missing)))
    for k in ("weights", "admission", "weight_from"):
        if k in m and m[k] not in ("float32", 0):
            raise Failure("%s: model %s: %s is not modelled by the reference" %
                          (config_path, name, k))
    return name, {k: m[k] for k in ("alpha", "beta", "l1", "l2", "bits", "intercept",
                                    "max_abs_margin")}


def evaluate(name, data_path, daemon, vw, tmp):
    config = os.path.join(HERE, "quality", name + ".yaml")
    model, hyper = model_of(config)
    examples_path = os.path.join(tmp, name + ".vw")
    argv = [daemon, "replay", "--quiet", "--json", "--config", config, "--examples",
            examples_path, data_path]
    t0 = time.monotonic()
    proc = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          check=False)
    t_replay = time.monotonic() - t0
    if proc.returncode != 0:
        raise Failure("%s failed (exit %d):\n%s" % (" ".join(argv), proc.returncode,
                                                    proc.stderr[-2000:]))
    report = json.loads(proc.stdout)
    ours = next((m for m in report["models"] if m["name"] == model), None)
    if ours is None:
        raise Failure("replay --json has no model %r: %s" % (model, proc.stdout[:500]))

    examples = read_examples(examples_path, model)
    y = np.array([e[2] for e in examples])
    t0 = time.monotonic()
    ref = run_reference(examples, hyper)
    t_ref = time.monotonic() - t0
    row = {
        "name": name,
        "events": report["events"],
        "examples": len(examples),
        "positives": int(np.sum(y)),
        "duplicates": sum(1 for e in examples if e[4]),
        "ours_examples": ours["examples"],
        "ours_positives": ours["positives"],
        "ours_log_loss": ours["log_loss"],
        "ours_auc": ours["auc"],
        "ref_log_loss": log_loss(ref, y),
        "ref_auc": auc(ref, y),
        "bytes_per_weight": ours["bytes_per_weight"],
        "bytes_per_user": report["memory"]["bytes_per_user"],
        "t_replay": t_replay,
        "t_ref": t_ref,
        "vw_log_loss": None,
        "vw_auc": None,
    }
    if vw:
        vp = run_vw(vw, examples_path, hyper, tmp)
        if len(vp) != len(y):
            raise Failure("vw wrote %d predictions for %d examples" % (len(vp), len(y)))
        row["vw_log_loss"], row["vw_auc"] = log_loss(vp, y), auc(vp, y)
    return row


# ---- main -------------------------------------------------------------------------------------


def fmt(v, spec):
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else spec % v


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data-dir", help="real data sets (default $PD_DATA_DIR, else "
                    "<repo root>/../shared/data)")
    ap.add_argument("--daemon", help="propensityd binary (default $PD_DAEMON, else "
                    "<repo root>/$PD_BUILD_DIR/daemon/propensityd)")
    ap.add_argument("--keep", metavar="DIR", help="write the example files into DIR and keep them")
    ap.add_argument("names", nargs="*", help="data sets to run (default all: %s)"
                    % ", ".join(d[0] for d in DATASETS))
    args = ap.parse_args(argv)

    known = {d[0]: d for d in DATASETS}
    unknown = [n for n in args.names if n not in known]
    if unknown:
        ap.error("unknown data set(s) %s; known: %s" % (", ".join(unknown), ", ".join(known)))
    selected = [known[n] for n in args.names] if args.names else DATASETS

    data_dir = args.data_dir or os.environ.get("PD_DATA_DIR") or \
        os.path.normpath(os.path.join(ROOT, "..", "shared", "data"))
    if not os.path.isdir(data_dir):
        print("quality.py: SKIPPED: no real data sets at %s (set PD_DATA_DIR to where "
              "../shared/data is)" % data_dir)
        return SKIP
    absent = [d for d in selected if not os.path.isfile(os.path.join(data_dir, d[1]))]
    for d in absent:
        print("quality.py: %s: %s is absent, not run" % (d[0], os.path.join(data_dir, d[1])))
    selected = [d for d in selected if d not in absent]
    if not selected:
        print("quality.py: SKIPPED: none of the data sets is in %s" % data_dir)
        return SKIP

    daemon = args.daemon or os.environ.get("PD_DAEMON") or os.path.join(
        ROOT, os.environ.get("PD_BUILD_DIR", "build"), "daemon", "propensityd")
    if not os.access(daemon, os.X_OK):
        print("quality.py: propensityd not found at %s (build it, or pass --daemon)" % daemon,
              file=sys.stderr)
        return 2
    vw = shutil.which("vw")

    print("progressive validation (every example scored before it is learned) on real data;")
    print("reference: float64 FTRL-Proximal (McMahan et al. 2013, Algorithm 1) over the very "
          "examples propensityd learned, in its order")
    print("vw: %s" % ("%s, on the same example file" % vw if vw else
                      "not installed here: no Vowpal Wabbit column (see tests/bench/README.md)"))
    print()

    tmp = args.keep or tempfile.mkdtemp(prefix="pd-quality-")
    os.makedirs(tmp, exist_ok=True)
    rows, failures = [], []
    try:
        for name, rel, what in selected:
            print("%-15s %s" % (name, what), flush=True)
            row = evaluate(name, os.path.join(data_dir, rel), daemon, vw, tmp)
            rows.append(row)
            if row["examples"] != row["ours_examples"] or \
                    row["positives"] != row["ours_positives"]:
                failures.append("%s: replay reports %d examples (%d positive), the example file "
                                "holds %d (%d positive)"
                                % (name, row["ours_examples"], row["ours_positives"],
                                   row["examples"], row["positives"]))
            if not row["ours_log_loss"] <= row["ref_log_loss"] + TOLERANCE:
                failures.append("%s: propensityd log loss %.6f is worse than the reference's "
                                "%.6f by more than %g"
                                % (name, row["ours_log_loss"], row["ref_log_loss"], TOLERANCE))
            if row["vw_log_loss"] is not None and \
                    not row["ours_log_loss"] <= row["vw_log_loss"] + TOLERANCE:
                failures.append("%s: propensityd log loss %.6f is worse than Vowpal Wabbit's "
                                "%.6f by more than %g"
                                % (name, row["ours_log_loss"], row["vw_log_loss"], TOLERANCE))
    except Failure as exc:
        print("quality.py: %s" % exc, file=sys.stderr)
        return 2
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)

    print()
    head = ("%-15s %7s %8s %5s %4s | %9s %9s %9s | %8s %7s | %9s %7s | %4s %6s"
            % ("data set", "events", "examples", "pos", "dup", "ours ll", "ref ll", "ours-ref",
               "ours AUC", "ref AUC", "vw ll", "vw AUC", "B/w", "B/user"))
    print(head)
    print("-" * len(head))
    for r in rows:
        print("%-15s %7d %8d %5d %4d | %9.6f %9.6f %+9.1e | %8.4f %7.4f | %9s %7s | %4d %6.0f"
              % (r["name"], r["events"], r["examples"], r["positives"], r["duplicates"],
                 r["ours_log_loss"], r["ref_log_loss"], r["ours_log_loss"] - r["ref_log_loss"],
                 r["ours_auc"], r["ref_auc"], fmt(r["vw_log_loss"], "%.6f"),
                 fmt(r["vw_auc"], "%.4f"), r["bytes_per_weight"], r["bytes_per_user"]))
    print()
    print("ll: progressive log loss; dup: examples with an index twice (merged by the reference);")
    print("B/w: bytes per weight-table entry; B/user: bytes of state per user (replay --json).")
    print("times: " + ", ".join("%s replay %.2f s + reference %.2f s" % (r["name"], r["t_replay"],
                                                                         r["t_ref"])
                                for r in rows))
    for r in rows:
        if r["ours_log_loss"] < r["ref_log_loss"] - TOLERANCE:
            print("NOTE: %s: propensityd beats the reference by more than %g: the two no longer "
                  "learn the same model (fine if the C changed on purpose)" % (r["name"], TOLERANCE))
    if failures:
        print()
        for f in failures:
            print("FAIL: " + f)
        return 1
    print("PASS: propensityd's log loss is within %g of the reference (or better) on %d data "
          "set(s)%s" % (TOLERANCE, len(rows), "" if vw else "; Vowpal Wabbit not measured"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
