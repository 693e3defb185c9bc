#!/usr/bin/env python3
"""Expected progressive-validation figures for tests/unit/test_metrics.c, from scikit-learn and
numpy, written as a C header (metrics_fixtures.h).

The streams are generated, here and in the C test alike, by splitmix64 and only +, -, *, /,
sqrt and floor, which IEEE 754 rounds the same everywhere: both sides see bit-identical data
without the header having to carry it (the C test checks a digest of the data first).

Streams (u1, u2, u3: consecutive uniforms in [0, 1) with 53 random bits, per example i):
  weight  = 2.0 if i % 5 == 0, else 0.5 if i % 7 == 0, else 3.0 if i % 13 == 0, else 1.0
  classifier: label = u1 < 0.3; p = sqrt(u2) for positives, u2 * u3 + 0.1 * u2 otherwise;
              every 10th p = floor(20 p) / 20 (ties); i % 97 == 1: p = 1.0, i % 89 == 1: p = 0.0
  margin:     label = u1 < 0.45; m = 6 (u2 - 0.5) + (0.8 if label else -0.8);
              every 10th m = floor(4 m) / 4
  regressor:  y = 3 + 4 u1; prediction = y + 2 (u2 - 0.5) u3 + 0.1
  offset:     y = 1e6 + 2 u1; prediction = y + (u2 - 0.5)   (R^2 must not cancel away)

AUC all-time: the C code bins logits (models/metrics.h); the bound it documents,
(1/2) sum_b P_b N_b / (P N), is computed here from the same bin definition, and the test
accepts any all-time AUC within it of sklearn's exact value. Recent figures are exact.

Usage: metrics_reference.py OUTPUT.h | --check FIXTURE.h   (as glm_reference.py)
"""

import math
import sys

import fixtures_cli

try:
    import numpy as np
    from sklearn.metrics import (accuracy_score, hinge_loss, log_loss, mean_absolute_error,
                                 mean_squared_error, r2_score, roc_auc_score)
except ImportError as e:  # meson treats 77 as "skipped"
    sys.stderr.write("metrics_reference.py needs numpy and scikit-learn: %s\n" % e)
    sys.exit(77)

AUC_BINS = 65536
AUC_LOGIT_RANGE = 20.0

STREAMS = [
    # name, kind, examples, window, seed
    ("classifier", "PD_METRICS_CLASSIFIER", 6000, 1000, 11),
    ("margin", "PD_METRICS_MARGIN", 4000, 700, 12),
    ("regressor", "PD_METRICS_REGRESSOR", 4000, 500, 13),
    ("offset", "PD_METRICS_REGRESSOR", 3000, 3000, 14),
]


class Rng:
    def __init__(self, seed):
        self.state = seed

    def uniform(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        z ^= z >> 31
        return (z >> 11) / 9007199254740992.0


def weight_of(i):
    if i % 5 == 0:
        return 2.0
    if i % 7 == 0:
        return 0.5
    if i % 13 == 0:
        return 3.0
    return 1.0


def make(name, n, seed):
    rng = Rng(seed)
    pred, label, weight = [], [], []
    for i in range(n):
        u1, u2, u3 = rng.uniform(), rng.uniform(), rng.uniform()
        if name == "classifier":
            y = 1.0 if u1 < 0.3 else 0.0
            p = math.sqrt(u2) if y else u2 * u3 + 0.1 * u2
            if i % 10 == 0:
                p = math.floor(20.0 * p) / 20.0
            if i % 97 == 1:
                p = 1.0
            if i % 89 == 1:
                p = 0.0
        elif name == "margin":
            y = 1.0 if u1 < 0.45 else 0.0
            p = 6.0 * (u2 - 0.5) + (0.8 if y else -0.8)
            if i % 10 == 0:
                p = math.floor(4.0 * p) / 4.0
        elif name == "regressor":
            y = 3.0 + 4.0 * u1
            p = y + 2.0 * (u2 - 0.5) * u3 + 0.1
        else:
            y = 1e6 + 2.0 * u1
            p = y + (u2 - 0.5)
        pred.append(p)
        label.append(y)
        weight.append(weight_of(i))
    return np.array(pred), np.array(label), np.array(weight)


def auc_bins(p, margin):
    if margin:
        logit = p.copy()
    else:
        with np.errstate(divide="ignore"):
            q = np.clip(p, 0.0, 1.0)
            logit = np.log(q) - np.log1p(-q)
    pos = (logit + AUC_LOGIT_RANGE) * (AUC_BINS / (2.0 * AUC_LOGIT_RANGE))
    pos = np.nan_to_num(pos, nan=0.0, posinf=float(AUC_BINS), neginf=0.0)
    return np.clip(np.floor(pos), 0, AUC_BINS - 1).astype(np.int64)


def auc_bound(p, y, w, margin):
    b = auc_bins(p, margin)
    pos = np.bincount(b, weights=w * (y > 0.5), minlength=AUC_BINS)
    neg = np.bincount(b, weights=w * (y <= 0.5), minlength=AUC_BINS)
    return 0.5 * float(np.dot(pos, neg)) / (pos.sum() * neg.sum())


def figures(name, p, y, w, window):
    f = {}
    rp, ry, rw = p[-window:], y[-window:], w[-window:]
    if name == "classifier":
        clip = lambda q: np.clip(q, 1e-15, 1.0 - 1e-15)
        f["log_loss"] = log_loss(y, clip(p), sample_weight=w, labels=[0.0, 1.0])
        f["auc"] = roc_auc_score(y, p, sample_weight=w)
        f["auc_bound"] = auc_bound(p, y, w, False)
        f["calibration"] = float(np.sum(w * p) / np.sum(w * y))
        f["accuracy"] = accuracy_score(y, (p > 0.5).astype(float), sample_weight=w)
        f["recent_log_loss"] = log_loss(ry, clip(rp), sample_weight=rw, labels=[0.0, 1.0])
        f["recent_auc"] = roc_auc_score(ry, rp, sample_weight=rw)
        f["positives"] = int(np.sum(y > 0.5))
    elif name == "margin":
        f["hinge_loss"] = hinge_loss(2.0 * y - 1.0, p, sample_weight=w)
        f["auc"] = roc_auc_score(y, p, sample_weight=w)
        f["auc_bound"] = auc_bound(p, y, w, True)
        f["accuracy"] = accuracy_score(y, (p > 0.0).astype(float), sample_weight=w)
        f["recent_auc"] = roc_auc_score(ry, rp, sample_weight=rw)
        f["positives"] = int(np.sum(y > 0.5))
    else:
        f["rmse"] = math.sqrt(mean_squared_error(y, p, sample_weight=w))
        f["mae"] = mean_absolute_error(y, p, sample_weight=w)
        f["r2"] = r2_score(y, p, sample_weight=w)
        f["recent_rmse"] = math.sqrt(mean_squared_error(ry, rp, sample_weight=rw))
    f["weight_sum"] = float(np.sum(w))
    # a digest of the data, so the C side can tell its generator agrees before comparing
    f["digest"] = float(np.sum(p * (1.0 + np.arange(len(p)) % 7)) + np.sum(y) + np.sum(w))
    return f


FIELDS = ["log_loss", "auc", "auc_bound", "calibration", "accuracy", "hinge_loss", "rmse", "mae",
          "r2", "recent_log_loss", "recent_auc", "recent_rmse", "weight_sum", "digest"]


def generate():
    out = []
    w = out.append
    w("/* Generated by tests/unit/reference/metrics_reference.py: do not edit, rerun it. */")
    w("#ifndef PD_METRICS_FIXTURES_H")
    w("#define PD_METRICS_FIXTURES_H")
    w("")
    w("#include <math.h>")
    w("#include <stddef.h>")
    w("")
    w("#include \"models/metrics.h\"")
    w("")
    w("/* NAN where a figure does not apply to the stream's kind. */")
    w("typedef struct pd_ref_metrics {")
    w("    const char *name;")
    w("    pd_metrics_kind kind;")
    w("    size_t examples;")
    w("    size_t window;")
    w("    unsigned long long seed;")
    w("    unsigned long long positives;")
    for fld in FIELDS:
        w("    double %s;" % fld)
    w("} pd_ref_metrics;")
    w("")
    w("static const pd_ref_metrics pd_ref_metrics_cases[] = {")
    for name, kind, n, window, seed in STREAMS:
        p, y, wt = make(name, n, seed)
        f = figures(name, p, y, wt, window)
        w("    {")
        w("        .name = \"%s\"," % name)
        w("        .kind = %s," % kind)
        w("        .examples = %d," % n)
        w("        .window = %d," % window)
        w("        .seed = %d," % seed)
        w("        .positives = %d," % f.get("positives", 0))
        for fld in FIELDS:
            v = f.get(fld)
            w("        .%s = %s," % (fld, "NAN" if v is None else "%.12e" % v))
        w("    },")
    w("};")
    w("")
    w("#endif")
    return "\n".join(out) + "\n"


def main(argv):
    return fixtures_cli.main(argv, generate, __doc__, "metrics_reference.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
