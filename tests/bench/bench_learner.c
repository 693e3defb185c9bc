/* Benchmark for models/learner.c: learn() and predict() speed of logistic FTRL on synthetic
 * 20-feature examples at several table sizes, against a plain gather loop over the same
 * examples measured in the same run; ftrl_multi against FTRL, both at the configuration's
 * defaults; and the quality cost of bfloat16 storage and of feature admission (progressive log
 * loss and AUC, memory).
 *
 * Usage: bench_learner [EXAMPLES [MAX_BITS]]   (default 4000000 per pass; table sizes up to
 * 2^MAX_BITS, default 26: a smaller one keeps a smoke run from touching a 1 GiB table) */
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#include "common/rng.h"
#include "models/learner.h"
#include "models/metrics.h"

#define N_FIELDS 20
#define CHUNK    4096

/* Vocabulary per field, from a handful of values (device, country) to tens of millions
 * (user, item ids); ids are drawn log-uniformly, a Zipf law of exponent ~1, so a few values
 * of each field are hot and most are rare. */
static const double vocabulary[N_FIELDS] = {
    3, 8, 30, 60, 200, 500, 1e3, 3e3, 1e4, 3e4, 1e5, 3e5, 1e6, 3e6, 1e7, 3e7, 1e3, 1e5, 1, 1,
};

typedef struct gen {
    uint64_t state;
} gen;

static uint64_t next_u64(gen *g)
{
    return pd_splitmix64(&g->state);
}

static double uniform(gen *g)
{
    return (double)(next_u64(g) >> 11) * (1.0 / 9007199254740992.0);
}

static uint32_t mix32(uint64_t v)
{
    v ^= v >> 33;
    v *= 0xff51afd7ed558ccdull;
    v ^= v >> 33;
    v *= 0xc4ceb9fe1a85ec53ull;
    v ^= v >> 33;
    return (uint32_t)v;
}

/* the hidden model the labels come from */
static double true_weight(uint32_t h)
{
    return ((double)(h % 1201) - 600.0) / 1000.0;
}

typedef struct chunk {
    pd_feature x[CHUNK][N_FIELDS];
    double label[CHUNK];
    double pred[CHUNK];
} chunk;

static void fill_chunk(gen *g, chunk *c)
{
    for (size_t e = 0; e < CHUNK; e++) {
        double m = -1.5;
        for (size_t f = 0; f < N_FIELDS; f++) {
            uint64_t id = (uint64_t)exp(uniform(g) * log(vocabulary[f] + 1.0));
            uint32_t h = mix32((uint64_t)f << 48 | id);
            /* the last two fields are numeric (a count, a price band) */
            float v = f + 2 >= N_FIELDS ? (float)(uniform(g) * 3.0) : 1.0f;
            c->x[e][f] = (pd_feature){h, v};
            m += true_weight(mix32(h)) * v;
        }
        c->label[e] = uniform(g) < 1.0 / (1.0 + exp(-m)) ? 1.0 : 0.0;
    }
}

static double now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

typedef struct run {
    double cold_ns;     /* per example, from an empty table: includes first-touch page faults */
    double learn_ns;    /* per example, warm table (the learner goes on with new examples) */
    double learn_pf_ns; /* the same with the next example prefetched before each learn() */
    double predict_ns;  /* per example, warm table */
    double log_loss;    /* progressive, over the cold pass */
    double auc;
    size_t memory;
    pd_learner_stats stats;
} run;

static pd_learner_conf ftrl_conf(int bits)
{
    return (pd_learner_conf){
        .type = PD_MODEL_LOGISTIC,
        .loss = PD_LOSS_LOGISTIC,
        .optimizer = PD_OPT_FTRL,
        .alpha = 0.05,
        .beta = 1.0,
        .l1 = 1.0,
        .l2 = 1.0,
        .learning_rate = 0.1,
        .power_t = 0.5,
        .initial_t = 1000.0,
        .bits = bits,
        .intercept = true,
        .weights = PD_WEIGHTS_F32,
        .max_abs_margin = 30.0,
    };
}

/* A model's learner as the configuration's defaults leave it (config/README.md): FTRL at alpha
 * 0.25 or ftrl_multi around 0.3, beta 1, no l1 or l2. */
static pd_learner_conf default_conf(pd_optimizer opt, int bits)
{
    pd_learner_conf c = ftrl_conf(bits);

    c.optimizer = opt;
    c.alpha = opt == PD_OPT_FTRL_MULTI ? 0.3 : 0.25;
    c.l1 = 0.0;
    c.l2 = 0.0;
    c.max_abs_margin = 35.0;
    return c;
}

/* One pass of learn() over `examples` examples of the stream seeded by seed, progressive
 * metrics on the side when m is given. With prefetch, the next example's entries are requested
 * before each learn(), as a pipeline holding a batch would do. Returns ns per example. */
static double learn_pass(pd_learner *l, pd_metrics *m, uint64_t seed, size_t examples, chunk *c,
                         bool prefetch)
{
    double t = 0.0;
    gen g = {seed};

    for (size_t done = 0; done < examples; done += CHUNK) {
        fill_chunk(&g, c);
        double t0 = now_ns();
        if (prefetch) {
            for (size_t e = 0; e < CHUNK; e++) {
                if (e + 1 < CHUNK)
                    pd_learner_prefetch(l, c->x[e + 1], N_FIELDS);
                c->pred[e] = pd_learner_learn(l, c->x[e], N_FIELDS, c->label[e], 1.0);
            }
        } else {
            for (size_t e = 0; e < CHUNK; e++)
                c->pred[e] = pd_learner_learn(l, c->x[e], N_FIELDS, c->label[e], 1.0);
        }
        t += now_ns() - t0;
        if (m != NULL)
            for (size_t e = 0; e < CHUNK; e++)
                pd_metrics_add(m, c->pred[e], c->label[e], 1.0);
    }
    return t / (double)((examples + CHUNK - 1) / CHUNK * CHUNK);
}

static double predict_pass(const pd_learner *l, uint64_t seed, size_t examples, chunk *c)
{
    double t = 0.0, sink = 0.0;
    gen g = {seed};

    for (size_t done = 0; done < examples; done += CHUNK) {
        fill_chunk(&g, c);
        double t0 = now_ns();
        for (size_t e = 0; e < CHUNK; e++)
            sink += pd_learner_predict(l, c->x[e], N_FIELDS);
        t += now_ns() - t0;
    }
    /* sink keeps the loop from being optimised away */
    return t / (double)((examples + CHUNK - 1) / CHUNK * CHUNK) + (sink == -1.0 ? 1e-9 : 0.0);
}

/* Passes, each over fresh examples of the same distribution: cold (quality figures), warm,
 * warm with prefetch (all_passes only), predict. */
static int run_learner(const pd_learner_conf *conf, size_t examples, chunk *c, bool all_passes,
                       run *ret)
{
    char err[256];
    pd_learner *l = pd_learner_new(conf, err, sizeof(err));
    pd_metrics *m = pd_metrics_new(PD_METRICS_CLASSIFIER, 100000);
    pd_metrics_report rep;

    if (l == NULL || m == NULL) {
        fprintf(stderr, "bench_learner: %s\n", l == NULL ? err : "out of memory");
        pd_learner_free(l);
        pd_metrics_free(m);
        return -1;
    }
    ret->cold_ns = learn_pass(l, m, 1, examples, c, false);
    pd_metrics_report_get(m, &rep);
    ret->log_loss = rep.log_loss;
    ret->auc = rep.auc;
    pd_learner_get_stats(l, &ret->stats);
    ret->learn_ns = learn_pass(l, NULL, 2, examples, c, false);
    ret->learn_pf_ns = all_passes ? learn_pass(l, NULL, 3, examples, c, true) : NAN;
    ret->predict_ns = all_passes ? predict_pass(l, 3, examples, c) : NAN;
    ret->memory = pd_learner_memory(l);
    pd_learner_free(l);
    pd_metrics_free(m);
    return 0;
}

/* The reference: a loop that only reads and sums one float per feature from a table of the same
 * size and entry width (8 bytes, as a float32 FTRL entry), allocated the same way (huge-page
 * aligned, advised) and fully written first. */
static double run_gather(int bits, size_t examples, chunk *c)
{
    size_t entries = (size_t)1 << bits, bytes = entries * 2 * sizeof(float);
    size_t align = 2u << 20, map = bytes + align;
    char *raw = mmap(NULL, map, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    double t = 0.0, sink = 0.0;
    gen g = {3};

    if (raw == MAP_FAILED)
        return NAN;
    float *tab = (float *)(((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1));
#ifdef MADV_HUGEPAGE
    (void)madvise(tab, bytes, MADV_HUGEPAGE);
#endif
    for (size_t i = 0; i < 2 * entries; i++)
        tab[i] = (float)(i & 7) * 0.01f;
    uint32_t mask = (uint32_t)(entries - 1);
    for (size_t done = 0; done < examples; done += CHUNK) {
        fill_chunk(&g, c);
        double t0 = now_ns();
        for (size_t e = 0; e < CHUNK; e++) {
            double s = 0.0;
            for (size_t f = 0; f < N_FIELDS; f++)
                s += tab[2 * (size_t)(c->x[e][f].hash & mask)] * c->x[e][f].value;
            c->pred[e] = s;
        }
        t += now_ns() - t0;
        sink += c->pred[0];
    }
    munmap(raw, map);
    size_t n = (examples + CHUNK - 1) / CHUNK * CHUNK;
    return t / (double)n + (sink == -1.0 ? 1.0 : 0.0);
}

static double mib(size_t bytes)
{
    return (double)bytes / (1024.0 * 1024.0);
}

static void print_variant(const char *name, const run *r)
{
    printf("%-26s %9.1f %10.5f %10.5f %8.1f %13" PRIu64 "\n", name, r->learn_ns, r->log_loss,
           r->auc, mib(r->memory), r->stats.not_admitted);
}

int main(int argc, char **argv)
{
    size_t examples = argc > 1 ? strtoull(argv[1], NULL, 10) : 4000000;
    int max_bits = argc > 2 ? atoi(argv[2]) : 26;
    const int bits[] = {18, 20, 22, 26};
    chunk *c = malloc(sizeof(*c));
    run r, base22 = {0};

    if (c == NULL || examples == 0 || max_bits < 22) {
        fprintf(stderr, "usage: bench_learner [EXAMPLES [MAX_BITS]]  (MAX_BITS >= 22)\n");
        free(c);
        return 2;
    }
    printf("bench_learner: logistic FTRL on synthetic examples of %d hashed features (Zipf-like\n"
           "values per field), %zu examples per pass; each pass sees fresh examples.\n"
           "cold: from an empty table, first-touch page faults included; warm: the same learner\n"
           "going on; +prefetch: pd_learner_prefetch() of the next example before each learn();\n"
           "gather: a loop that only sums the weights of the same examples from a table of the\n"
           "same size; learn/gather: learn()'s examples/s over the gather loop's (warm).\n"
           "log loss and AUC: progressive validation over the cold pass.\n\n",
           N_FIELDS, examples);
    printf("%-5s %9s %9s %10s %11s %10s %11s %13s %11s %8s %8s %6s\n", "bits", "cold ns",
           "learn ns", "+prefetch", "predict ns", "gather ns", "learn ex/s", "learn/gather",
           "+pf/gather", "logloss", "AUC", "MiB");
    for (size_t b = 0; b < sizeof(bits) / sizeof(bits[0]) && bits[b] <= max_bits; b++) {
        pd_learner_conf conf = ftrl_conf(bits[b]);
        if (run_learner(&conf, examples, c, true, &r) < 0)
            return 1;
        double gather = run_gather(bits[b], examples, c);
        printf("%-5d %9.1f %9.1f %10.1f %11.1f %10.1f %11.0f %13.3f %11.3f %8.5f %8.5f %6.0f\n",
               bits[b], r.cold_ns, r.learn_ns, r.learn_pf_ns, r.predict_ns, gather,
               1e9 / r.learn_ns, gather / r.learn_ns, gather / r.learn_pf_ns, r.log_loss, r.auc,
               mib(r.memory));
        if (bits[b] == 22)
            base22 = r;
    }

    printf(
        "\nftrl_multi (four FTRL lanes in one entry, mixed) against ftrl, both at the defaults\n");
    printf("%-5s %-10s %9s %10s %11s %8s %8s %6s %12s\n", "bits", "optimizer", "learn ns",
           "+prefetch", "predict ns", "logloss", "AUC", "MiB", "learn/ftrl");
    for (size_t b = 0; b < sizeof(bits) / sizeof(bits[0]) && bits[b] <= 22; b++) {
        run single;
        for (int o = 0; o < 2; o++) {
            pd_learner_conf conf = default_conf(o ? PD_OPT_FTRL_MULTI : PD_OPT_FTRL, bits[b]);
            if (run_learner(&conf, examples, c, true, &r) < 0)
                return 1;
            if (o == 0)
                single = r;
            printf("%-5d %-10s %9.1f %10.1f %11.1f %8.5f %8.5f %6.0f %12.3f\n", bits[b],
                   o ? "ftrl_multi" : "ftrl", r.learn_ns, r.learn_pf_ns, r.predict_ns, r.log_loss,
                   r.auc, mib(r.memory), r.learn_ns / single.learn_ns);
        }
    }

    printf("\nstorage, admission and optimizers at bits 22 (warm learn ns; quality of the cold"
           " pass)\n");
    printf("%-26s %9s %10s %10s %8s %13s\n", "variant", "learn ns", "log loss", "AUC", "MiB",
           "not admitted");
    print_variant("ftrl f32", &base22);
    pd_learner_conf conf = ftrl_conf(22);
    conf.weights = PD_WEIGHTS_F16;
    if (run_learner(&conf, examples, c, false, &r) < 0)
        return 1;
    print_variant("ftrl bf16", &r);
    printf("%-26s %9s %+10.5f %+10.5f %8.0f%%\n", "  bf16 - f32", "", r.log_loss - base22.log_loss,
           r.auc - base22.auc, 100.0 * ((double)r.memory / (double)base22.memory - 1.0));
    const int64_t admissions[] = {2, 5};
    for (size_t a = 0; a < 2; a++) {
        char name[64];
        conf = ftrl_conf(22);
        conf.admission_min_count = admissions[a];
        if (run_learner(&conf, examples, c, false, &r) < 0)
            return 1;
        snprintf(name, sizeof(name), "ftrl f32 admission %" PRId64, admissions[a]);
        print_variant(name, &r);
    }
    const char *multi_names[] = {"ftrl_multi f32 default", "ftrl_multi bf16 default",
                                 "ftrl_multi f32 admission 2"};
    for (size_t v = 0; v < 3; v++) {
        conf = default_conf(PD_OPT_FTRL_MULTI, 22);
        conf.weights = v == 1 ? PD_WEIGHTS_F16 : PD_WEIGHTS_F32;
        conf.admission_min_count = v == 2 ? 2 : 0;
        if (run_learner(&conf, examples, c, false, &r) < 0)
            return 1;
        print_variant(multi_names[v], &r);
    }
    const pd_optimizer opts[] = {PD_OPT_ADAGRAD, PD_OPT_SGD};
    const char *opt_names[] = {"adagrad", "sgd"};
    for (size_t o = 0; o < 2; o++)
        for (int f16 = 0; f16 < 2; f16++) {
            char name[64];
            conf = ftrl_conf(22);
            conf.optimizer = opts[o];
            conf.l2 = 1e-6;
            conf.weights = f16 ? PD_WEIGHTS_F16 : PD_WEIGHTS_F32;
            if (run_learner(&conf, examples, c, false, &r) < 0)
                return 1;
            snprintf(name, sizeof(name), "%s %s", opt_names[o], f16 ? "bf16" : "f32");
            print_variant(name, &r);
        }
    free(c);
    return 0;
}
