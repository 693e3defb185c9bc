/* Tests for model sync in models/learner.c: two learners that learn disjoint halves of a
 * stream and exchange deltas (part by part, while learning goes on) end with the same state,
 * and that state is what their own updates add up to, with n checked against the squared
 * gradients the predictions imply; nothing learned sends nothing; truncated, garbled or
 * mismatched deltas change nothing. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "models/learner.h"

#define BITS      10
#define N_FEAT    6
#define N_EX      1200
#define PART_MAX  700 /* small parts: a delta goes in many */
#define MAX_PARTS 512

/* ---- a deterministic stream ---- */

static uint64_t rng_state;

static uint64_t next_u64(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

typedef struct example {
    pd_feature x[N_FEAT];
    double label;
} example;

static example *make_stream(void)
{
    example *ex = calloc(N_EX, sizeof *ex);
    assert_non_null(ex);
    rng_state = 42;
    for (size_t i = 0; i < N_EX; i++) {
        double m = -0.5;
        for (size_t j = 0; j < N_FEAT; j++) {
            uint32_t h = (uint32_t)(next_u64() % 3000); /* collides in 2^10 entries */
            ex[i].x[j] = (pd_feature){.hash = h, .value = j == 0 ? 1.0 : 0.5};
            m += (h % 7 < 3 ? 0.8 : -0.6) * ex[i].x[j].value;
        }
        double p = 1.0 / (1.0 + exp(-m));
        ex[i].label = (double)(next_u64() >> 11) / 9007199254740992.0 < p ? 1.0 : 0.0;
    }
    return ex;
}

static pd_learner_conf conf_for(pd_optimizer opt, pd_weight_format wf)
{
    pd_learner_conf c = {
        .type = PD_MODEL_LOGISTIC,
        .loss = PD_LOSS_LOGISTIC,
        .optimizer = opt,
        .weights = wf,
        .bits = BITS,
        .intercept = true,
        .alpha = 0.1,
        .beta = 1.0,
        .l1 = 0.5,
        .l2 = 0.1,
        .learning_rate = 0.05,
        .power_t = 0.5,
        .initial_t = 1.0,
        .max_abs_margin = 30.0,
    };
    if (opt != PD_OPT_FTRL && opt != PD_OPT_FTRL_MULTI)
        c.l1 = 0.0;
    return c;
}

/* ---- deltas as a list of parts ---- */

typedef struct parts {
    char *buf[MAX_PARTS];
    size_t len[MAX_PARTS];
    size_t n;
} parts;

static void parts_free(parts *p)
{
    for (size_t i = 0; i < p->n; i++)
        free(p->buf[i]);
    p->n = 0;
}

/* Seals and writes l's delta as parts; returns the entry count. */
static size_t collect(pd_learner *l, parts *out, bool *ret_any)
{
    size_t count = pd_learner_delta_seal(l, ret_any), pos = 0;
    out->n = 0;
    if (!*ret_any)
        return count;
    do {
        assert_true(out->n < MAX_PARTS);
        FILE *f = open_memstream(&out->buf[out->n], &out->len[out->n]);
        assert_non_null(f);
        pd_bin_writer w;
        pd_bin_writer_init(&w, f);
        assert_int_equal(pd_learner_delta_write(l, &w, &pos, PART_MAX), 0);
        assert_int_equal(fclose(f), 0);
        assert_true(out->len[out->n] <= PART_MAX);
        out->n++;
    } while (pos < count);
    return count;
}

static int apply_bytes(pd_learner *l, const void *buf, size_t len, char *err, size_t errlen)
{
    FILE *f = fmemopen((void *)buf, len, "rb");
    assert_non_null(f);
    pd_bin_reader r;
    pd_bin_reader_init(&r, f);
    int ret = pd_learner_delta_apply(l, &r, err, errlen);
    fclose(f);
    return ret;
}

static void apply_all(pd_learner *l, const parts *p)
{
    char err[256];
    for (size_t i = 0; i < p->n; i++) {
        int r = apply_bytes(l, p->buf[i], p->len[i], err, sizeof err);
        if (r != 0)
            fail_msg("apply part %zu: %s", i, err);
    }
}

/* ---- what each learner's own updates add up to ---- */

typedef struct expect {
    double table[1 << BITS][8];
    double icpt[8];
} expect;

/* Learns ex, adding the change of each entry it touched (each once) to e, and the squared
 * gradients the prediction implies to n_from_g (FTRL). */
static void learn_tracked(pd_learner *l, const example *ex, expect *e, double *n_from_g,
                          double *icpt_n_from_g)
{
    double before[N_FEAT][8], after[8], ib[8], ia[8];
    uint32_t seen[N_FEAT];
    size_t n_seen = 0, k = 0;
    const uint32_t mask = (1u << BITS) - 1;

    for (size_t j = 0; j < N_FEAT; j++) {
        uint32_t idx = ex->x[j].hash & mask;
        bool dup = false;
        for (size_t s = 0; s < n_seen; s++)
            dup |= seen[s] == idx;
        if (dup)
            continue;
        k = pd_learner_delta_values(l, idx, false, before[n_seen]);
        seen[n_seen++] = idx;
    }
    pd_learner_delta_values(l, 0, true, ib);
    pd_learner_delta_mark(l, ex->x, N_FEAT);
    double p = pd_learner_learn(l, ex->x, N_FEAT, ex->label, 1.0);
    for (size_t s = 0; s < n_seen; s++) {
        pd_learner_delta_values(l, seen[s], false, after);
        for (size_t c = 0; c < k; c++)
            e->table[seen[s]][c] += after[c] - before[s][c];
    }
    pd_learner_delta_values(l, 0, true, ia);
    for (size_t c = 0; c < k; c++)
        e->icpt[c] += ia[c] - ib[c];
    if (n_from_g) {
        double gm = p - ex->label;
        for (size_t j = 0; j < N_FEAT; j++)
            n_from_g[ex->x[j].hash & mask] += gm * ex->x[j].value * gm * ex->x[j].value;
        *icpt_n_from_g += gm * gm;
    }
}

static bool close_to(double a, double b, double rel, double abs_tol)
{
    return fabs(a - b) <= abs_tol + rel * fmax(fabs(a), fabs(b));
}

/* Two learners learn alternate examples in two rounds; each round's deltas are applied while
 * the other side has learned more since (its marked entries take the remote delta too). */
static void exchange(pd_optimizer opt, pd_weight_format wf, double rel, double abs_tol)
{
    char err[256];
    pd_learner_conf c = conf_for(opt, wf);
    pd_learner *a = pd_learner_new(&c, err, sizeof err), *b = pd_learner_new(&c, err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(pd_learner_delta_start(a), 0);
    assert_int_equal(pd_learner_delta_start(b), 0);
    example *ex = make_stream();
    expect *e = calloc(1, sizeof *e);
    double *n_g = calloc(1u << BITS, sizeof *n_g), icpt_n_g = 0.0;
    assert_non_null(e);
    assert_non_null(n_g);
    const bool ftrl = opt == PD_OPT_FTRL && wf == PD_WEIGHTS_F32;
    parts pa1, pb1, pa2, pb2;
    bool any;

    /* round 1: a learns the even examples of the first third, b the odd ones */
    for (size_t i = 0; i < N_EX / 3; i++)
        learn_tracked(i % 2 ? b : a, &ex[i], e, ftrl ? n_g : NULL, &icpt_n_g);
    assert_true(collect(a, &pa1, &any) > 0 && any);
    assert_true(collect(b, &pb1, &any) > 0 && any);
    assert_true(pa1.n > 1); /* the bound split it */
    /* a learns on before b's round 1 arrives */
    for (size_t i = N_EX / 3; i < 2 * N_EX / 3; i += 2)
        learn_tracked(a, &ex[i], e, ftrl ? n_g : NULL, &icpt_n_g);
    apply_all(a, &pb1);
    apply_all(b, &pa1);
    for (size_t i = N_EX / 3 + 1; i < 2 * N_EX / 3; i += 2)
        learn_tracked(b, &ex[i], e, ftrl ? n_g : NULL, &icpt_n_g);
    for (size_t i = 2 * N_EX / 3; i < N_EX; i++)
        learn_tracked(i % 2 ? b : a, &ex[i], e, ftrl ? n_g : NULL, &icpt_n_g);
    collect(a, &pa2, &any);
    collect(b, &pb2, &any);
    apply_all(a, &pb2);
    apply_all(b, &pa2);

    /* both hold the same state, and it is the sum of what each one's updates changed */
    double va[8], vb[8];
    size_t mismatches = 0;
    for (uint32_t idx = 0; idx < (1u << BITS); idx++) {
        size_t k = pd_learner_delta_values(a, idx, false, va);
        pd_learner_delta_values(b, idx, false, vb);
        for (size_t q = 0; q < k; q++) {
            if (!close_to(va[q], vb[q], rel, abs_tol) || !close_to(va[q], e->table[idx][q], rel, abs_tol)) {
                if (mismatches++ < 5)
                    print_message("entry %u value %zu: a %.9g b %.9g expected %.9g\n", idx, q,
                                  va[q], vb[q], e->table[idx][q]);
            }
        }
        /* FTRL: n is the sum of the squared gradients, independently of z */
        if (ftrl && !close_to(va[1], n_g[idx], 1e-4, 1e-9) && mismatches++ < 5)
            print_message("entry %u: n %.9g, squared gradients %.9g\n", idx, va[1], n_g[idx]);
        assert_true(pd_learner_weight(a, idx) == pd_learner_weight(a, idx)); /* not NaN */
        if (!close_to(pd_learner_weight(a, idx), pd_learner_weight(b, idx), rel, abs_tol) &&
            mismatches++ < 5)
            print_message("entry %u weight: a %.9g b %.9g\n", idx, pd_learner_weight(a, idx),
                          pd_learner_weight(b, idx));
    }
    size_t k = pd_learner_delta_values(a, 0, true, va);
    pd_learner_delta_values(b, 0, true, vb);
    for (size_t q = 0; q < k; q++)
        if ((!close_to(va[q], vb[q], rel, abs_tol) || !close_to(va[q], e->icpt[q], rel, abs_tol)) &&
            mismatches++ < 5)
            print_message("intercept value %zu: a %.9g b %.9g expected %.9g\n", q, va[q], vb[q],
                          e->icpt[q]);
    if (ftrl && !close_to(va[1], icpt_n_g, 1e-4, 1e-9) && mismatches++ < 5)
        print_message("intercept n %.9g, squared gradients %.9g\n", va[1], icpt_n_g);
    /* and they predict alike (ftrl_multi's mixtures too) */
    for (size_t i = 0; i < 50; i++) {
        double pa = pd_learner_predict(a, ex[i].x, N_FEAT), pb = pd_learner_predict(b, ex[i].x, N_FEAT);
        if (!close_to(pa, pb, 10 * rel, 10 * abs_tol) && mismatches++ < 5)
            print_message("example %zu: a predicts %.9g, b %.9g\n", i, pa, pb);
    }
    double alpha[PD_LEARNER_LANES], ma[PD_LEARNER_LANES], mb[PD_LEARNER_LANES];
    size_t lanes = pd_learner_mixture(a, alpha, ma);
    pd_learner_mixture(b, alpha, mb);
    for (size_t j = 0; j < lanes; j++)
        if (!close_to(ma[j], mb[j], 0.02, 1e-4) && mismatches++ < 5)
            print_message("lane %zu mixture weight: a %.9g b %.9g\n", j, ma[j], mb[j]);
    assert_int_equal(mismatches, 0);

    /* a learner's state moved: the sync round really carried something */
    bool moved = false;
    for (uint32_t idx = 0; idx < (1u << BITS); idx++)
        moved |= pd_learner_weight(a, idx) != 0.0;
    assert_true(moved);

    parts_free(&pa1);
    parts_free(&pb1);
    parts_free(&pa2);
    parts_free(&pb2);
    free(n_g);
    free(e);
    free(ex);
    pd_learner_free(a);
    pd_learner_free(b);
}

static void test_ftrl_exchange(void **state)
{
    (void)state;
    exchange(PD_OPT_FTRL, PD_WEIGHTS_F32, 1e-5, 1e-6);
}

static void test_multi_exchange(void **state)
{
    (void)state;
    exchange(PD_OPT_FTRL_MULTI, PD_WEIGHTS_F32, 1e-5, 1e-6);
}

static void test_adagrad_sgd_exchange(void **state)
{
    (void)state;
    exchange(PD_OPT_ADAGRAD, PD_WEIGHTS_F32, 1e-5, 1e-6);
    exchange(PD_OPT_SGD, PD_WEIGHTS_F32, 1e-5, 1e-6);
}

/* bfloat16 keeps 8 bits: the sums agree to its precision */
static void test_f16_exchange(void **state)
{
    (void)state;
    exchange(PD_OPT_FTRL, PD_WEIGHTS_F16, 0.1, 5e-3);
}

static void test_nothing_learned(void **state)
{
    (void)state;
    char err[256];
    pd_learner_conf c = conf_for(PD_OPT_FTRL, PD_WEIGHTS_F32);
    pd_learner *l = pd_learner_new(&c, err, sizeof err);
    example *ex = make_stream();
    parts p;
    bool any = true;

    assert_non_null(l);
    assert_false(pd_learner_delta_capturing(l));
    assert_int_equal(pd_learner_delta_seal(l, &any), 0); /* not capturing: nothing */
    assert_false(any);
    assert_int_equal(pd_learner_delta_start(l), 0);
    assert_int_equal(pd_learner_delta_start(l), 0); /* idempotent */
    assert_int_equal(collect(l, &p, &any), 0);
    assert_false(any);
    assert_int_equal(p.n, 0);
    /* a predict changes nothing either */
    pd_learner_delta_mark(l, ex[0].x, N_FEAT);
    pd_learner_predict(l, ex[0].x, N_FEAT);
    assert_int_equal(collect(l, &p, &any), 0);
    assert_false(any);
    /* one example: its entries (at most N_FEAT), once */
    pd_learner_delta_mark(l, ex[0].x, N_FEAT);
    pd_learner_learn(l, ex[0].x, N_FEAT, 1.0, 1.0);
    size_t n = collect(l, &p, &any);
    assert_true(any);
    assert_true(n > 0 && n <= N_FEAT);
    parts_free(&p);
    assert_int_equal(collect(l, &p, &any), 0);
    assert_false(any);
    free(ex);
    pd_learner_free(l);
}

/* Two ftrl_multi learners learn, exchange their deltas, and then learn nothing: a round then
 * has nothing to send and the models stay where they are. (Two daemons did drift: rounding
 * left intercept or mixture changes of ~1e-9 that were sent each round, and every apply ran
 * the mixture's fixed share again, moving it towards uniform by about 4e-5 log-odds a second
 * for ever.) */
static void test_idle_multi_is_still(void **state)
{
    (void)state;
    char err[256];
    pd_learner_conf c = conf_for(PD_OPT_FTRL_MULTI, PD_WEIGHTS_F32);
    pd_learner *a = pd_learner_new(&c, err, sizeof err), *b = pd_learner_new(&c, err, sizeof err);
    assert_non_null(a);
    assert_non_null(b);
    assert_int_equal(pd_learner_delta_start(a), 0);
    assert_int_equal(pd_learner_delta_start(b), 0);
    example *ex = make_stream();
    parts pa, pb;
    bool any;
    for (int round = 0; round < 3; round++) {
        for (size_t i = (size_t)round * 200; i < (size_t)round * 200 + 200; i++) {
            pd_learner *l = i % 2 ? a : b;
            pd_learner_delta_mark(l, ex[i].x, N_FEAT);
            pd_learner_learn(l, ex[i].x, N_FEAT, ex[i].label, 1.0);
        }
        collect(a, &pa, &any);
        assert_true(any);
        collect(b, &pb, &any);
        assert_true(any);
        apply_all(b, &pa);
        apply_all(a, &pb);
        parts_free(&pa);
        parts_free(&pb);
    }
    /* one more exchange so each has applied the other's last round */
    collect(a, &pa, &any);
    collect(b, &pb, &any);
    apply_all(b, &pa);
    apply_all(a, &pb);
    parts_free(&pa);
    parts_free(&pb);
    double pa0 = pd_learner_predict(a, ex[0].x, N_FEAT), pb0 = pd_learner_predict(b, ex[0].x, N_FEAT);
    for (int round = 0; round < 20; round++) {
        collect(a, &pa, &any);
        assert_false(any);
        collect(b, &pb, &any);
        assert_false(any);
    }
    assert_true(pd_learner_predict(a, ex[0].x, N_FEAT) == pa0);
    assert_true(pd_learner_predict(b, ex[0].x, N_FEAT) == pb0);
    free(ex);
    pd_learner_free(a);
    pd_learner_free(b);
}

/* The state of l as save() writes it, for comparing before and after. */
static char *state_bytes(const pd_learner *l, size_t *ret_len)
{
    char *buf = NULL;
    FILE *f = open_memstream(&buf, ret_len);
    assert_non_null(f);
    pd_bin_writer w;
    pd_bin_writer_init(&w, f);
    assert_int_equal(pd_learner_save(l, &w), 0);
    assert_int_equal(fclose(f), 0);
    return buf;
}

static void test_bad_deltas(void **state)
{
    (void)state;
    char err[256];
    pd_learner_conf c = conf_for(PD_OPT_FTRL, PD_WEIGHTS_F32);
    pd_learner *src = pd_learner_new(&c, err, sizeof err), *dst = pd_learner_new(&c, err, sizeof err);
    example *ex = make_stream();
    parts p;
    bool any;

    assert_int_equal(pd_learner_delta_start(src), 0);
    for (size_t i = 0; i < 40; i++) {
        pd_learner_delta_mark(src, ex[i].x, N_FEAT);
        pd_learner_learn(src, ex[i].x, N_FEAT, ex[i].label, 1.0);
        pd_learner_learn(dst, ex[N_EX - 1 - i].x, N_FEAT, ex[N_EX - 1 - i].label, 1.0);
    }
    collect(src, &p, &any);
    assert_true(p.n >= 1);
    size_t before_len, after_len;
    char *before = state_bytes(dst, &before_len);

    /* every truncation of a part fails and changes nothing */
    for (size_t len = 1; len < p.len[0]; len++) {
        err[0] = '\0';
        assert_int_equal(apply_bytes(dst, p.buf[0], len, err, sizeof err), -EINVAL);
        assert_true(err[0] != '\0');
    }
    /* garbage: random bytes, and the part with bytes flipped in its header or an index */
    rng_state = 7;
    char junk[512];
    for (int t = 0; t < 200; t++) {
        for (size_t i = 0; i < sizeof junk; i++)
            junk[i] = (char)next_u64();
        assert_int_equal(apply_bytes(dst, junk, 1 + next_u64() % sizeof junk, err, sizeof err),
                         -EINVAL);
    }
    char *bad = malloc(p.len[0]);
    assert_non_null(bad);
    const size_t flips[] = {0, 4, 8, 12}; /* version, optimizer, bits, values per entry */
    for (size_t i = 0; i < sizeof flips / sizeof flips[0]; i++) {
        memcpy(bad, p.buf[0], p.len[0]);
        bad[flips[i]] ^= 0x40;
        assert_int_equal(apply_bytes(dst, bad, p.len[0], err, sizeof err), -EINVAL);
    }
    /* an index beyond the table: the first entry's index sits after the head and the count */
    memcpy(bad, p.buf[0], p.len[0]);
    size_t first_idx = 16 + 1 + 2 * 4 + 4 + 4;
    bad[first_idx + 3] = 0x7f;
    assert_int_equal(apply_bytes(dst, bad, p.len[0], err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "index"));
    /* a NaN delta */
    memcpy(bad, p.buf[0], p.len[0]);
    const float nan = NAN;
    memcpy(bad + first_idx + 4, &nan, sizeof nan);
    assert_int_equal(apply_bytes(dst, bad, p.len[0], err, sizeof err), -EINVAL);
    free(bad);
    char *after = state_bytes(dst, &after_len);
    assert_int_equal(before_len, after_len);
    assert_memory_equal(before, after, before_len);
    free(after);

    /* another optimizer's delta is refused */
    pd_learner_conf ca = conf_for(PD_OPT_ADAGRAD, PD_WEIGHTS_F32);
    pd_learner *other = pd_learner_new(&ca, err, sizeof err);
    assert_int_equal(apply_bytes(other, p.buf[0], p.len[0], err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "optimizer"));
    /* and the intact part applies */
    assert_int_equal(apply_bytes(dst, p.buf[0], p.len[0], err, sizeof err), 0);
    after = state_bytes(dst, &after_len);
    assert_true(after_len != before_len || memcmp(before, after, before_len) != 0);
    free(after);
    free(before);
    parts_free(&p);
    free(ex);
    pd_learner_free(other);
    pd_learner_free(src);
    pd_learner_free(dst);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ftrl_exchange),   cmocka_unit_test(test_multi_exchange),
        cmocka_unit_test(test_adagrad_sgd_exchange), cmocka_unit_test(test_f16_exchange),
        cmocka_unit_test(test_nothing_learned), cmocka_unit_test(test_bad_deltas),
        cmocka_unit_test(test_idle_multi_is_still),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
