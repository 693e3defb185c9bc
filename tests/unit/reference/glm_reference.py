#!/usr/bin/env python3
"""Reference learners for tests/unit/test_learner.c, written from the formulas, not from the C.

Generates a fixed, deterministic stream of sparse examples and runs every loss x optimizer pair
over it, writing the predictions made before each update and the final weights of a few
coordinates as a C header (learner_fixtures.h).

The models, as specified in models/learner.h and the product brief:
  margin m = sum_i w_i x_i + w_0 (intercept, value 1), clipped to +-max_abs_margin
  output   = 1 / (1 + exp(-m)) for logistic; m for linear and hinge
  dloss/dm = p - y (logistic), m - y (squared), clamp(m - y, -delta, delta) (Huber),
             -y' if y' m < 1 else 0 (hinge, y' = 2y - 1)
  g_i      = importance * dloss/dm * x_i, applied occurrence by occurrence
  FTRL-Proximal, McMahan et al. 2013, Algorithm 1 (per-coordinate z, n):
      w = 0 if |z| <= l1 else -(z - sgn(z) l1) / ((beta + sqrt(n)) / alpha + l2)
      sigma = (sqrt(n + g^2) - sqrt(n)) / alpha;  z += g - sigma w;  n += g^2
  AdaGrad: g += l2 w;  G += g^2;  w -= learning_rate g / sqrt(G)
  SGD:     g += l2 w;  w -= learning_rate (initial_t / (initial_t + t))^power_t g,
           t = updates applied before this one
  The intercept is never regularised (l1 = l2 = 0 for it).
  With weights: f32 every stored value is a float32 number (one rounding per store), and so
  is every weight a prediction uses, FTRL's derived w included; arithmetic between stores is
  float64.
  ftrl_multi (logistic): four FTRL-Proximal learners ("lanes") as above, lane j with
  alpha_j = alpha 10^((j - 1) / 2), each with its own intercept and learning from its own
  prediction p_j as if alone. The output is p = sum_j u_j p_j; after each example
      u_j <- u_j q_j^(eta importance),  q_j = p_j^y (1 - p_j)^(1 - y)
      u   <- (1 - share) u / sum(u) + share / 4,       eta = 1/4, share = 1e-4, u = 1/4 at first
  (exponentially weighted averaging with a fixed share, Herbster and Warmuth 1998). The
  weights reported are those of the lane with the largest u (the first of equals).

Usage: glm_reference.py OUTPUT.h          write the fixtures
       glm_reference.py --check FIXTURE.h  regenerate into a temporary file and fail (exit 1)
                                           when it differs from FIXTURE.h
"""

import math
import sys

import fixtures_cli

try:
    import numpy as np
except ImportError as e:  # meson treats 77 as "skipped"
    sys.stderr.write("glm_reference.py needs numpy: %s\n" % e)
    sys.exit(77)

BITS = 10
N_EXAMPLES = 80
N_POOL = 24
N_WEIGHTS = 8
INTERCEPT = 1 << BITS  # the intercept's slot, one past the table


class Rng:
    """splitmix64: reproducible on any python, unlike numpy's generators across versions."""

    def __init__(self, seed):
        self.state = seed & 0xFFFFFFFFFFFFFFFF

    def next_u64(self):
        self.state = (self.state + 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF
        z = self.state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
        return z ^ (z >> 31)

    def uniform(self):
        return (self.next_u64() >> 11) / float(1 << 53)

    def below(self, n):
        return self.next_u64() % n


def f32(x):
    return float(np.float32(x))


def c_float(v):
    """A C literal that reads back as exactly the float32 value v."""
    text = "%.9g" % v
    return text if ("." in text or "e" in text) else text + ".0"


def make_stream():
    rng = Rng(20240611)
    pool = [rng.next_u64() & 0xFFFFFFFF for _ in range(N_POOL)]
    # a hash that differs from pool[1] only above the mask: same coordinate, different feature
    pool[N_POOL - 1] = (pool[1] ^ (0x5 << BITS)) & 0xFFFFFFFF
    truth = {h: rng.uniform() * 3.0 - 1.5 for h in pool}
    examples = []
    for e in range(N_EXAMPLES):
        k = 3 + rng.below(5)
        feats = []
        for _ in range(k):
            # skewed towards the front of the pool, as real feature frequencies are
            j = int(N_POOL * rng.uniform() ** 2)
            v = 1.0 if rng.uniform() < 0.7 else f32(rng.uniform() * 5.0 - 2.0)
            feats.append((pool[j], v))
        if e % 9 == 4:
            feats.append(feats[0])  # a duplicate hash: each occurrence updates
        true_m = -0.8 + sum(truth[h] * v for h, v in feats)
        label_class = 1.0 if rng.uniform() < 1.0 / (1.0 + math.exp(-true_m)) else 0.0
        label_value = true_m + (rng.uniform() - 0.5) * 0.6
        importance = 2.0 if e % 5 == 3 else (0.5 if e % 7 == 2 else 1.0)
        examples.append((feats, label_class, label_value, importance))
    return pool, examples


class Learner:
    def __init__(self, case):
        self.c = case
        size = INTERCEPT + 1
        self.a = np.zeros(size, dtype=np.float32)  # FTRL z; AdaGrad and SGD w
        self.b = np.zeros(size, dtype=np.float32)  # FTRL n; AdaGrad G
        self.t = 0

    def regularisation(self, i):
        if i == INTERCEPT:
            return 0.0, 0.0
        return self.c["l1"], self.c["l2"]

    def weight(self, i):
        c = self.c
        if c["opt"] != "ftrl":
            return float(self.a[i])
        z, n = float(self.a[i]), float(self.b[i])
        l1, l2 = self.regularisation(i)
        if abs(z) <= l1:
            return 0.0
        # weights: f32, so the weight a prediction uses is a float32 number, FTRL's included
        return f32(-(z - math.copysign(l1, z)) / ((c["beta"] + math.sqrt(n)) / c["alpha"] + l2))

    def margin(self, feats):
        m = 0.0
        for h, v in feats:
            m += self.weight(h & (INTERCEPT - 1)) * v
        m += self.weight(INTERCEPT)
        lim = self.c["max_abs_margin"]
        return min(max(m, -lim), lim)

    def output(self, m):
        if self.c["type"] == "logistic":
            return 1.0 / (1.0 + math.exp(-m))
        return m

    def dloss(self, m, out, y):
        loss = self.c["loss"]
        if loss in ("logistic", "squared"):
            return out - y
        if loss == "huber":
            d = self.c["huber_delta"]
            return min(max(out - y, -d), d)
        ys = 2.0 * y - 1.0
        return -ys if ys * m < 1.0 else 0.0

    def update(self, i, g):
        c = self.c
        _, l2 = self.regularisation(i)
        if c["opt"] == "ftrl":
            n = float(self.b[i])
            w = self.weight(i)
            sigma = (math.sqrt(n + g * g) - math.sqrt(n)) / c["alpha"]
            self.a[i] = float(self.a[i]) + g - sigma * w
            self.b[i] = n + g * g
        elif c["opt"] == "adagrad":
            w = float(self.a[i])
            g += l2 * w
            G = float(self.b[i]) + g * g
            self.b[i] = G
            if G > 0:
                self.a[i] = w - c["learning_rate"] * g / math.sqrt(G)
        else:
            w = float(self.a[i])
            rate = c["learning_rate"] * (c["initial_t"] / (c["initial_t"] + self.t)) ** c["power_t"]
            self.a[i] = w - rate * (g + l2 * w)

    def learn(self, feats, y, importance):
        m = self.margin(feats)
        out = self.output(m)
        d = self.dloss(m, out, y) * importance
        for h, v in feats:
            self.update(h & (INTERCEPT - 1), d * v)
        self.update(INTERCEPT, d)
        self.t += 1
        return out


LANES = 4
MIX_ETA = 0.25
MIX_SHARE = 1e-4


def lane_alpha(alpha, j):
    return alpha * 10.0 ** ((j - 1) / 2.0)


class MultiLearner:
    """ftrl_multi: LANES single-FTRL learners and the mixture over them."""

    def __init__(self, case):
        self.c = case
        self.lanes = [Learner(dict(case, opt="ftrl", alpha=lane_alpha(case["alpha"], j)))
                      for j in range(LANES)]
        self.u = np.full(LANES, 1.0 / LANES)

    def top(self):
        return int(np.argmax(self.u))  # the first of equals

    def weight(self, i):
        return self.lanes[self.top()].weight(i)

    def learn(self, feats, y, importance):
        ps = [lrn.learn(feats, y, importance) for lrn in self.lanes]
        out = float(np.dot(self.u, ps))
        lik = np.array([p ** y * (1.0 - p) ** (1.0 - y) for p in ps])
        u = self.u * lik ** (MIX_ETA * importance)
        self.u = (1.0 - MIX_SHARE) * u / u.sum() + MIX_SHARE / LANES
        return out


def cases():
    losses = [
        ("logistic", "logistic", "logistic", 6.0, 0.0),
        ("linear_squared", "linear", "squared", 6.0, 0.0),
        ("linear_huber", "linear", "huber", 6.0, 0.75),
        # a tight clip, so the reference exercises clipping too
        ("hinge", "hinge", "hinge", 1.25, 0.0),
    ]
    opts = [
        ("ftrl", dict(alpha=0.5, beta=1.0, l1=0.3, l2=0.2, learning_rate=0.0, power_t=0.0,
                      initial_t=0.0)),
        ("adagrad", dict(alpha=0.0, beta=0.0, l1=0.0, l2=0.05, learning_rate=0.4, power_t=0.0,
                         initial_t=0.0)),
        ("sgd", dict(alpha=0.0, beta=0.0, l1=0.0, l2=0.05, learning_rate=0.08, power_t=0.5,
                     initial_t=5.0)),
    ]
    for lname, mtype, loss, lim, delta in losses:
        for oname, hyper in opts:
            c = dict(name=lname + "_" + oname, type=mtype, loss=loss, opt=oname,
                     max_abs_margin=lim, huber_delta=delta)
            c.update(hyper)
            yield c
    # the configuration's defaults (config/README.md): FTRL alpha 0.25, beta 1, no l1 or l2, so
    # no coordinate sits in the dead zone and the weight is plain -z / ((beta + sqrt(n)) / alpha)
    yield dict(name="logistic_ftrl_defaults", type="logistic", loss="logistic", opt="ftrl",
               max_abs_margin=35.0, huber_delta=1.0, alpha=0.25, beta=1.0, l1=0.0, l2=0.0,
               learning_rate=0.1, power_t=0.5, initial_t=1000.0)
    # ftrl_multi with l1, l2 and a tight clip, and at its defaults (alpha 0.3: lanes 0.095..3)
    yield dict(name="logistic_ftrl_multi", type="logistic", loss="logistic", opt="ftrl_multi",
               max_abs_margin=6.0, huber_delta=0.0, alpha=0.5, beta=1.0, l1=0.3, l2=0.2,
               learning_rate=0.0, power_t=0.0, initial_t=0.0)
    yield dict(name="logistic_ftrl_multi_defaults", type="logistic", loss="logistic",
               opt="ftrl_multi", max_abs_margin=35.0, huber_delta=1.0, alpha=0.3, beta=1.0,
               l1=0.0, l2=0.0, learning_rate=0.1, power_t=0.5, initial_t=1000.0)


def generate():
    pool, examples = make_stream()
    weight_hashes = pool[:N_WEIGHTS]
    out = []
    w = out.append
    w("/* Generated by tests/unit/reference/glm_reference.py: do not edit; rerun the script. */")
    w("#ifndef PD_LEARNER_FIXTURES_H")
    w("#define PD_LEARNER_FIXTURES_H")
    w("")
    w("#include <stddef.h>")
    w("")
    w("#include \"models/learner.h\"")
    w("")
    w("#define PD_REF_BITS %d" % BITS)
    w("#define PD_REF_N_EXAMPLES %d" % N_EXAMPLES)
    w("#define PD_REF_N_WEIGHTS %d" % N_WEIGHTS)
    w("")
    w("static const pd_feature pd_ref_features[] = {")
    offsets = [0]
    for e, (feats, _, _, _) in enumerate(examples):
        w("    /* %d */" % e)
        items = ["{0x%08xu, %sf}," % (h, c_float(v)) for h, v in feats]
        for k in range(0, len(items), 3):
            w("    " + " ".join(items[k:k + 3]))
        offsets.append(offsets[-1] + len(feats))
    w("};")
    w("")
    w("static const size_t pd_ref_offsets[PD_REF_N_EXAMPLES + 1] = {")
    for k in range(0, len(offsets), 16):
        w("    " + ", ".join(str(o) for o in offsets[k:k + 16]) + ",")
    w("};")
    w("")
    for name, idx in (("label_class", 1), ("label_value", 2), ("importance", 3)):
        w("static const double pd_ref_%s[PD_REF_N_EXAMPLES] = {" % name)
        for e in range(0, N_EXAMPLES, 4):
            w("    " + " ".join("%r," % examples[k][idx] for k in range(e, min(e + 4,
                                                                                N_EXAMPLES))))
        w("};")
        w("")
    w("static const uint32_t pd_ref_weight_hashes[PD_REF_N_WEIGHTS] = {")
    for k in range(0, N_WEIGHTS, 4):
        w("    " + ", ".join("0x%08xu" % h for h in weight_hashes[k:k + 4]) + ",")
    w("};")
    w("")
    w("typedef struct pd_ref_case {")
    w("    const char *name;")
    w("    pd_learner_conf conf;")
    w("    int value_label; /* 1: learn pd_ref_label_value, 0: pd_ref_label_class */")
    w("    double predictions[PD_REF_N_EXAMPLES]; /* before each update */")
    w("    double weights[PD_REF_N_WEIGHTS];      /* after the last update */")
    w("    double intercept;")
    w("    double lane_weights[PD_LEARNER_LANES]; /* ftrl_multi's mixture, at the end */")
    w("} pd_ref_case;")
    w("")
    w("static const pd_ref_case pd_ref_cases[] = {")
    enum = dict(logistic="PD_MODEL_LOGISTIC", linear="PD_MODEL_LINEAR", hinge="PD_MODEL_HINGE",
                loss_logistic="PD_LOSS_LOGISTIC", loss_squared="PD_LOSS_SQUARED",
                loss_huber="PD_LOSS_HUBER", loss_hinge="PD_LOSS_HINGE", ftrl="PD_OPT_FTRL",
                adagrad="PD_OPT_ADAGRAD", sgd="PD_OPT_SGD", ftrl_multi="PD_OPT_FTRL_MULTI")
    for c in cases():
        lrn = MultiLearner(c) if c["opt"] == "ftrl_multi" else Learner(c)
        value_label = c["type"] == "linear"
        preds = [lrn.learn(f, lv if value_label else lc, k) for f, lc, lv, k in examples]
        w("    {")
        w("        .name = \"%s\"," % c["name"])
        w("        .conf = {.type = %s, .loss = %s, .huber_delta = %r," %
          (enum[c["type"]], enum["loss_" + c["loss"]], c["huber_delta"]))
        w("                 .optimizer = %s," % enum[c["opt"]])
        w("                 .alpha = %r, .beta = %r, .l1 = %r, .l2 = %r, .learning_rate = %r," %
          (c["alpha"], c["beta"], c["l1"], c["l2"], c["learning_rate"]))
        w("                 .power_t = %r, .initial_t = %r, .bits = PD_REF_BITS," %
          (c["power_t"], c["initial_t"]))
        w("                 .intercept = true, .weights = PD_WEIGHTS_F32,"
          " .admission_min_count = 0,")
        w("                 .max_abs_margin = %r}," % c["max_abs_margin"])
        w("        .value_label = %d," % value_label)
        w("        .predictions = {")
        for e in range(0, N_EXAMPLES, 4):
            w("            " + " ".join("%.12e," % p for p in preds[e:e + 4]))
        w("        },")
        ws = [lrn.weight(h & (INTERCEPT - 1)) for h in weight_hashes]
        w("        .weights = {")
        for k in range(0, N_WEIGHTS, 4):
            w("            " + " ".join("%.12e," % x for x in ws[k:k + 4]))
        w("        },")
        w("        .intercept = %.12e," % lrn.weight(INTERCEPT))
        if c["opt"] == "ftrl_multi":
            w("        .lane_weights = {")
            w("            " + " ".join("%.12e," % u for u in lrn.u))
            w("        },")
        w("    },")
    w("};")
    w("")
    w("#endif")
    return "\n".join(out) + "\n"


def main(argv):
    return fixtures_cli.main(argv, generate, __doc__, "glm_reference.py")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
