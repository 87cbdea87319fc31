/*
 * test_ops.c - the layer operations against finite differences (the whole
 * model: test_model.c).
 *
 * Each op gets a scalar objective  f = sum(out * probe)  with a fixed random
 * probe; its backward, fed dout = probe, must give the same input and weight
 * gradients as central differences of f. Sizes are small and odd on purpose.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rg_ops.h"
#include "rg_rng.h"
#include "rg_test.h"

static void fill_uniform(float *x, size_t n, uint64_t seed, float lo, float hi)
{
    for (size_t i = 0; i < n; i++)
        x[i] = lo + (hi - lo) * rg_rng_uniform(seed, i);
}

static double dot(const float *a, const float *b, size_t n)
{
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += (double)a[i] * b[i];
    return s;
}

/* An objective over the current contents of the arrays it closes over. */
typedef double (*objective_fn)(void *ctx);

/* Compares analytic[i] with the central difference of f in x[i], for every
 * element; returns the number of mismatches (and records one check each). */
static int check_gradient(const char *what, objective_fn f, void *ctx, float *x, const float *analytic,
                          size_t n, float eps, double tol)
{
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
        const float keep = x[i];
        x[i] = keep + eps;
        double up = f(ctx);
        x[i] = keep - eps;
        double down = f(ctx);
        x[i] = keep;
        double numeric = (up - down) / (2.0 * eps);
        double err = fabs(numeric - analytic[i]);
        if (err > tol * (1.0 + fabs(numeric))) {
            bad++;
            if (bad <= 3)
                rg_test_check(0, __FILE__, __LINE__, "%s[%zu]: analytic %.6g, numeric %.6g", what, i,
                              (double)analytic[i], numeric);
        }
    }
    RG_CHECK_EQ(bad, 0);
    return bad;
}

/* ---- linear ---- */

typedef struct { float *inp, *w, *b, *out, *probe; int N, IC, OC; } matmul_case;

static double matmul_objective(void *p)
{
    matmul_case *c = p;
    rg_matmul_forward(c->out, c->inp, c->w, c->b, c->N, c->IC, c->OC);
    return dot(c->out, c->probe, (size_t)c->N * c->OC);
}

void test_ops_matmul_gradients(void)
{
    enum { N = 5, IC = 7, OC = 3 };
    float inp[N * IC], w[OC * IC], b[OC], out[N * OC], probe[N * OC];
    float dinp[N * IC] = {0}, dw[OC * IC] = {0}, db[OC] = {0};
    fill_uniform(inp, N * IC, 1, -1, 1);
    fill_uniform(w, OC * IC, 2, -1, 1);
    fill_uniform(b, OC, 3, -1, 1);
    fill_uniform(probe, N * OC, 4, -1, 1);
    matmul_case c = {inp, w, b, out, probe, N, IC, OC};
    matmul_objective(&c);
    rg_matmul_backward(dinp, dw, db, probe, inp, w, N, IC, OC);
    check_gradient("matmul dinp", matmul_objective, &c, inp, dinp, N * IC, 1e-2f, 2e-3);
    check_gradient("matmul dweight", matmul_objective, &c, w, dw, OC * IC, 1e-2f, 2e-3);
    check_gradient("matmul dbias", matmul_objective, &c, b, db, OC, 1e-2f, 2e-3);
}

/* ---- norms ---- */

typedef struct { float *inp, *w, *b, *out, *mean, *rstd, *probe; int N, C, rms; } norm_case;

static double norm_objective(void *p)
{
    norm_case *c = p;
    if (c->rms)
        rg_rmsnorm_forward(c->out, c->rstd, c->inp, c->w, c->N, c->C, 1e-5f);
    else
        rg_layernorm_forward(c->out, c->mean, c->rstd, c->inp, c->w, c->b, c->N, c->C, 1e-5f);
    return dot(c->out, c->probe, (size_t)c->N * c->C);
}

static void norm_gradients(int rms)
{
    enum { N = 4, C = 9 };
    float inp[N * C], w[C], b[C], out[N * C], mean[N], rstd[N], probe[N * C];
    float dinp[N * C] = {0}, dw[C] = {0}, db[C] = {0};
    fill_uniform(inp, N * C, 11, -2, 2);
    fill_uniform(w, C, 12, 0.5f, 1.5f);
    fill_uniform(b, C, 13, -1, 1);
    fill_uniform(probe, N * C, 14, -1, 1);
    norm_case c = {inp, w, b, out, mean, rstd, probe, N, C, rms};
    norm_objective(&c);
    if (rms)
        rg_rmsnorm_backward(dinp, dw, probe, inp, w, rstd, N, C);
    else
        rg_layernorm_backward(dinp, dw, db, probe, inp, w, mean, rstd, N, C);
    check_gradient(rms ? "rmsnorm dinp" : "layernorm dinp", norm_objective, &c, inp, dinp, N * C, 1e-2f, 5e-3);
    check_gradient(rms ? "rmsnorm dweight" : "layernorm dweight", norm_objective, &c, w, dw, C, 1e-2f, 5e-3);
    if (!rms)
        check_gradient("layernorm dbias", norm_objective, &c, b, db, C, 1e-2f, 5e-3);
}

void test_ops_layernorm_gradients(void) { norm_gradients(0); }
void test_ops_rmsnorm_gradients(void) { norm_gradients(1); }

/* ---- activations ---- */

typedef struct { float *inp, *out, *probe; int kind; int N, F; } act_case;

static size_t act_out_size(const act_case *c) { return (size_t)c->N * c->F; }

static double act_objective(void *p)
{
    act_case *c = p;
    size_t n = act_out_size(c);
    switch (c->kind) {
    case 0: rg_gelu_tanh_forward(c->out, c->inp, n); break;
    case 1: rg_gelu_erf_forward(c->out, c->inp, n); break;
    case 2: rg_swiglu_forward(c->out, c->inp, c->N, c->F); break;
    case 3: rg_relu_forward(c->out, c->inp, n); break;
    default: rg_tanh_forward(c->out, c->inp, n); break;
    }
    return dot(c->out, c->probe, n);
}

void test_ops_activation_gradients(void)
{
    enum { N = 3, F = 11 };
    const char *names[] = {"gelu_tanh", "gelu_erf", "swiglu", "relu", "tanh"};
    for (int kind = 0; kind < 5; kind++) {
        float inp[2 * N * F], out[N * F], probe[N * F], dinp[2 * N * F] = {0};
        size_t n_in = kind == 2 ? 2 * N * F : N * F;
        fill_uniform(inp, n_in, 20 + kind, -3, 3);
        for (size_t i = 0; i < n_in; i++) /* keep clear of ReLU's kink */
            if (fabsf(inp[i]) < 0.05f)
                inp[i] = 0.1f;
        fill_uniform(probe, N * F, 30 + kind, -1, 1);
        act_case c = {inp, out, probe, kind, N, F};
        act_objective(&c);
        switch (kind) {
        case 0: rg_gelu_tanh_backward(dinp, inp, probe, N * F); break;
        case 1: rg_gelu_erf_backward(dinp, inp, probe, N * F); break;
        case 2: rg_swiglu_backward(dinp, inp, probe, N, F); break;
        case 3: rg_relu_backward(dinp, out, probe, N * F); break;
        default: rg_tanh_backward(dinp, out, probe, N * F); break;
        }
        check_gradient(names[kind], act_objective, &c, inp, dinp, n_in, 1e-2f, 5e-3);
    }
}

/* GELU (erf) against the double formula: its erf is a rational approximation, within
 * 4.3e-7 of erf; NaN stays NaN. */
void test_ops_gelu_erf_matches_the_formula(void)
{
    enum { N = 16001 };
    static float x[N + 1], y[N + 1];
    for (int i = 0; i < N; i++)
        x[i] = -8.0f + 16.0f * (float)i / (N - 1);
    x[N] = NAN;
    rg_gelu_erf_forward(y, x, N + 1);
    double worst = 0.0;
    for (int i = 0; i < N; i++) {
        const double want = 0.5 * x[i] * (1.0 + erf(x[i] / sqrt(2.0)));
        worst = fmax(worst, fabs(y[i] - want) / fmax(1.0, fabs(x[i])));
    }
    RG_CHECK(worst < 4e-7);
    RG_CHECK(isnan(y[N]));
}

/* ---- rotary embedding ---- */

void test_ops_rope_backward_inverts_forward(void)
{
    enum { N = 5, NH = 4, NKV = 2, HS = 6, W = (NH + 2 * NKV) * HS };
    float x[N * W], y[N * W];
    int32_t positions[N] = {0, 1, 7, 3, 30};
    fill_uniform(x, N * W, 40, -1, 1);
    memcpy(y, x, sizeof(x));
    rg_rope_forward(y, positions, N, NH, NKV, HS, 10000.0f);
    /* position 0 is the identity; v heads are never touched */
    for (int i = 0; i < W; i++)
        RG_CHECK_CLOSE(y[i], x[i], 1e-6);
    for (int n = 0; n < N; n++)
        for (int i = (NH + NKV) * HS; i < W; i++)
            RG_CHECK_CLOSE(y[n * W + i], x[n * W + i], 0.0);
    /* a rotation keeps each head's norm */
    for (int n = 1; n < N; n++)
        for (int h = 0; h < NH + NKV; h++) {
            double a = dot(x + n * W + h * HS, x + n * W + h * HS, HS);
            double b = dot(y + n * W + h * HS, y + n * W + h * HS, HS);
            RG_CHECK_CLOSE(a, b, 1e-5);
        }
    /* the backward is the transpose: applied to the output it gives the input back */
    rg_rope_backward(y, positions, N, NH, NKV, HS, 10000.0f);
    for (int i = 0; i < N * W; i++)
        RG_CHECK_CLOSE(y[i], x[i], 1e-5);
}

/* Against the formula in double, with heads wider than the 64 angles a row's
 * table holds at a time (HS/2 = 130: three chunks, the last partial). */
void test_ops_rope_wide_heads_match_the_formula(void)
{
    enum { N = 3, NH = 2, NKV = 1, HS = 260, W = (NH + 2 * NKV) * HS };
    static float x[N * W], y[N * W];
    const int32_t positions[N] = {0, 5, 1000};
    fill_uniform(x, N * W, 41, -1, 1);
    memcpy(y, x, sizeof(x));
    rg_rope_forward(y, positions, N, NH, NKV, HS, 10000.0f);
    double worst = 0.0;
    for (int n = 0; n < N; n++)
        for (int h = 0; h < NH + 2 * NKV; h++)
            for (int i = 0; i < HS / 2; i++) {
                const float *in = x + n * W + h * HS;
                const float *out = y + n * W + h * HS;
                const double angle = positions[n] * pow(10000.0, -2.0 * i / HS);
                const double a = in[i], b = in[i + HS / 2];
                const int rotated = h < NH + NKV; /* v heads are never touched */
                const double want_a = rotated ? a * cos(angle) - b * sin(angle) : a;
                const double want_b = rotated ? b * cos(angle) + a * sin(angle) : b;
                worst = fmax(worst, fmax(fabs(out[i] - want_a), fabs(out[i + HS / 2] - want_b)));
            }
    RG_CHECK(worst < 1e-5);
}

/* ---- attention ---- */

typedef struct {
    float *qkv, *out, *att, *probe;
    const int32_t *mask;
    int B, T, NH, NKV, HS, causal;
    float p;
} attention_case;

static double attention_objective(void *p)
{
    attention_case *c = p;
    rg_attention_forward(c->out, c->att, c->qkv, c->mask, c->B, c->T, c->NH, c->NKV, c->HS, c->causal,
                         c->p, 77);
    return dot(c->out, c->probe, (size_t)c->B * c->T * c->NH * c->HS);
}

static void attention_gradients(int causal, float p)
{
    enum { B = 2, T = 5, NH = 4, NKV = 2, HS = 3, W = (NH + 2 * NKV) * HS, S = RG_ATTENTION_ROW_STATS };
    float qkv[B * T * W], out[B * T * NH * HS], att[B * NH * T * S], probe[B * T * NH * HS];
    float dqkv[B * T * W] = {0};
    /* batch row 1 hides key 0, so with causality its query 0 sees no key */
    const int32_t mask[B * T] = {1, 1, 1, 1, 1, 0, 1, 1, 0, 1};
    fill_uniform(qkv, B * T * W, 50 + causal, -1.5f, 1.5f);
    fill_uniform(probe, B * T * NH * HS, 60, -1, 1);
    attention_case c = {qkv, out, att, probe, mask, B, T, NH, NKV, HS, causal, p};
    attention_objective(&c);
    /* the saved row stats: the visible maximum score and 1 / sum of exp(score - max) */
    for (int b = 0; b < B; b++)
        for (int h = 0; h < NH; h++)
            for (int t = 0; t < T; t++) {
                const float *q = qkv + (b * T + t) * W + h * HS;
                const float *stats = att + ((b * NH + h) * T + t) * S;
                double scores[T], max_score = -INFINITY, sum = 0.0;
                for (int j = 0; j < (causal ? t + 1 : T); j++) {
                    scores[j] = mask[b * T + j] ? dot(q, qkv + (b * T + j) * W + (NH + h / (NH / NKV)) * HS, HS) / sqrt(HS)
                                                : -INFINITY;
                    max_score = fmax(max_score, scores[j]);
                }
                for (int j = 0; j < (causal ? t + 1 : T); j++)
                    sum += mask[b * T + j] ? exp(scores[j] - max_score) : 0.0;
                if (max_score == -INFINITY) {
                    RG_CHECK_CLOSE(stats[1], 0.0, 0.0);
                    for (int i = 0; i < HS; i++) /* a query that sees no key outputs zeros */
                        RG_CHECK_CLOSE(out[(b * T + t) * NH * HS + h * HS + i], 0.0, 0.0);
                } else {
                    RG_CHECK_CLOSE(stats[0], max_score, 1e-5);
                    RG_CHECK_CLOSE(stats[1], 1.0 / sum, 1e-5);
                }
            }
    rg_attention_backward(dqkv, probe, qkv, att, mask, B, T, NH, NKV, HS, causal, p, 77);
    check_gradient(causal ? "causal attention dqkv" : "attention dqkv", attention_objective, &c, qkv, dqkv,
                   B * T * W, 5e-3f, 1e-2);
}

void test_ops_attention_gradients_causal_gqa(void) { attention_gradients(1, 0.0f); }
void test_ops_attention_gradients_bidirectional(void) { attention_gradients(0, 0.0f); }
void test_ops_attention_gradients_with_dropout(void) { attention_gradients(1, 0.3f); }

/* ---- cross-entropy ---- */

typedef struct { float *logits, *work, *lse; const int32_t *targets; int N, V; } ce_case;

static double ce_objective(void *p)
{
    ce_case *c = p;
    long count;
    return rg_crossentropy_forward(c->lse, c->logits, c->targets, c->N, c->V, &count);
}

void test_ops_crossentropy_gradients_and_ignore(void)
{
    enum { N = 4, V = 7 };
    float logits[N * V], work[N * V], lse[N];
    const int32_t targets[N] = {3, -100, 0, 6};
    fill_uniform(logits, N * V, 70, -3, 3);
    ce_case c = {logits, work, lse, targets, N, V};
    long count = 0;
    double total = rg_crossentropy_forward(lse, logits, targets, N, V, &count);
    RG_CHECK_EQ(count, 3);
    double expected = 0.0;
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0)
            continue;
        double s = 0.0;
        for (int v = 0; v < V; v++)
            s += exp(logits[n * V + v]);
        expected += log(s) - logits[n * V + targets[n]];
    }
    RG_CHECK_CLOSE(total, expected, 1e-5);
    memcpy(work, logits, sizeof(logits));
    rg_crossentropy_backward(work, lse, targets, N, V, 1.0f);
    for (int v = 0; v < V; v++)
        RG_CHECK_CLOSE(work[1 * V + v], 0.0, 0.0); /* the ignored row */
    check_gradient("crossentropy dlogits", ce_objective, &c, logits, work, N * V, 1e-2f, 2e-3);
}

/* ---- dropout ---- */

void test_ops_dropout_is_seeded_and_scaled(void)
{
    enum { n = 20000 };
    float *x = malloc(n * sizeof(float)), *y = malloc(n * sizeof(float));
    if (!RG_CHECK(x && y)) {
        free(x);
        free(y);
        return;
    }
    for (int i = 0; i < n; i++)
        x[i] = y[i] = 1.0f;
    rg_dropout_apply(x, n, 0, 0.25f, rg_dropout_stream(5, 1));
    rg_dropout_apply(y, n, 0, 0.25f, rg_dropout_stream(5, 1));
    int kept = 0, same = 1;
    for (int i = 0; i < n; i++) {
        kept += x[i] != 0.0f;
        same &= x[i] == y[i];
        RG_CHECK(x[i] == 0.0f || fabsf(x[i] - 1.0f / 0.75f) < 1e-6f);
    }
    RG_CHECK(same);
    RG_CHECK(fabs(kept / (double)n - 0.75) < 0.02);
    for (int i = 0; i < n; i++)
        y[i] = 1.0f;
    rg_dropout_apply(y, n, 0, 0.25f, rg_dropout_stream(5, 2)); /* another site: another mask */
    int differ = 0;
    for (int i = 0; i < n; i++)
        differ += (x[i] != 0.0f) != (y[i] != 0.0f);
    RG_CHECK(differ > n / 10);
    /* a piece at element `first` draws the whole array's mask there */
    for (int i = 0; i < n; i++)
        y[i] = 1.0f;
    rg_dropout_apply(y + 777, 5000, 777, 0.25f, rg_dropout_stream(5, 1));
    rg_dropout_apply(y + 9000, n - 9000, 9000, 0.25f, rg_dropout_stream(5, 1));
    for (int i = 0; i < n; i++)
        RG_CHECK(y[i] == ((i >= 777 && i < 5777) || i >= 9000 ? x[i] : 1.0f));
    free(x);
    free(y);
}

/* ---- randomised shapes (for the UBSan build: every index product of the
 * ops at shapes that take each code path) ---- */

static int draw_dim(uint64_t seed, uint64_t k, int max)
{
    return 1 + (int)(rg_rng_bits(seed, k) % (uint64_t)max);
}

/* Matrix products against a double reference: one and two rows (the
 * matrix-vector path), tall and wide outputs (row and column blocks), and
 * products big enough to be split over threads. */
void test_ops_matmul_random_shapes(void)
{
    for (uint64_t trial = 0; trial < 24; trial++) {
        const int N = trial < 4 ? 1 + (int)(trial % 2) : draw_dim(trial, 1, 160);
        const int IC = draw_dim(trial, 2, 48), OC = draw_dim(trial, 3, trial % 3 == 0 ? 260 : 40);
        const size_t n_in = (size_t)N * IC, n_w = (size_t)OC * IC, n_out = (size_t)N * OC;
        float *inp = malloc(n_in * sizeof(float)), *w = malloc(n_w * sizeof(float));
        float *b = malloc((size_t)OC * sizeof(float)), *out = malloc(n_out * sizeof(float));
        float *dout = malloc(n_out * sizeof(float)), *dinp = calloc(n_in, sizeof(float));
        float *dw = calloc(n_w, sizeof(float)), *db = calloc((size_t)OC, sizeof(float));
        if (!RG_CHECK(inp && w && b && out && dout && dinp && dw && db))
            goto next;
        fill_uniform(inp, n_in, 100 + trial, -1, 1);
        fill_uniform(w, n_w, 200 + trial, -1, 1);
        fill_uniform(b, (size_t)OC, 300 + trial, -1, 1);
        fill_uniform(dout, n_out, 400 + trial, -1, 1);
        rg_matmul_forward(out, inp, w, trial % 2 ? b : NULL, N, IC, OC);
        rg_matmul_backward(dinp, dw, db, dout, inp, w, N, IC, OC);
        double worst = 0.0;
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++) {
                double ref = trial % 2 ? b[o] : 0.0;
                for (int i = 0; i < IC; i++)
                    ref += (double)inp[(size_t)n * IC + i] * w[(size_t)o * IC + i];
                worst = fmax(worst, fabs(ref - out[(size_t)n * OC + o]));
            }
        for (int n = 0; n < N; n++)
            for (int i = 0; i < IC; i++) {
                double ref = 0.0;
                for (int o = 0; o < OC; o++)
                    ref += (double)dout[(size_t)n * OC + o] * w[(size_t)o * IC + i];
                worst = fmax(worst, fabs(ref - dinp[(size_t)n * IC + i]));
            }
        for (int o = 0; o < OC; o++) {
            double ref_b = 0.0;
            for (int n = 0; n < N; n++)
                ref_b += dout[(size_t)n * OC + o];
            worst = fmax(worst, fabs(ref_b - db[o]));
            for (int i = 0; i < IC; i++) {
                double ref = 0.0;
                for (int n = 0; n < N; n++)
                    ref += (double)dout[(size_t)n * OC + o] * inp[(size_t)n * IC + i];
                worst = fmax(worst, fabs(ref - dw[(size_t)o * IC + i]));
            }
        }
        rg_test_check(worst < 1e-3, __FILE__, __LINE__, "matmul N=%d IC=%d OC=%d: worst error %.3g", N, IC, OC, worst);
    next:
        free(inp), free(w), free(b), free(out), free(dout), free(dinp), free(dw), free(db);
    }
}

/* Attention forward against a double reference: random batch, length,
 * grouping, head size, mask and causality. */
void test_ops_attention_random_shapes(void)
{
    for (uint64_t trial = 0; trial < 16; trial++) {
        const int B = draw_dim(trial, 1, 3), T = trial == 0 ? 300 : draw_dim(trial, 2, 40);
        const int NKV = draw_dim(trial, 3, 3), NH = NKV * draw_dim(trial, 4, 3), HS = draw_dim(trial, 5, 9);
        const int causal = (int)(trial % 2), row = (NH + 2 * NKV) * HS;
        const size_t n_qkv = (size_t)B * T * row, n_out = (size_t)B * T * NH * HS;
        float *qkv = malloc(n_qkv * sizeof(float)), *out = malloc(n_out * sizeof(float));
        float *att = malloc((size_t)B * NH * T * RG_ATTENTION_ROW_STATS * sizeof(float));
        int32_t *mask = malloc((size_t)B * T * sizeof(int32_t));
        double *p = malloc((size_t)T * sizeof(double));
        if (!RG_CHECK(qkv && out && att && mask && p))
            goto next;
        fill_uniform(qkv, n_qkv, 500 + trial, -2, 2);
        for (int i = 0; i < B * T; i++)
            mask[i] = rg_rng_uniform(600 + trial, (uint64_t)i) > 0.2f;
        rg_attention_forward(out, att, qkv, mask, B, T, NH, NKV, HS, causal, 0.0f, 0);
        double worst = 0.0;
        for (int b = 0; b < B; b++)
            for (int h = 0; h < NH; h++)
                for (int t = 0; t < T; t++) {
                    const float *q = qkv + ((size_t)b * T + t) * row + (size_t)h * HS;
                    const int g = h / (NH / NKV), visible = causal ? t + 1 : T;
                    double m = -INFINITY, sum = 0.0;
                    for (int j = 0; j < visible; j++) {
                        p[j] = -INFINITY;
                        if (!mask[b * T + j])
                            continue;
                        const float *k = qkv + ((size_t)b * T + j) * row + (size_t)(NH + g) * HS;
                        double s = 0.0;
                        for (int i = 0; i < HS; i++)
                            s += (double)q[i] * k[i];
                        p[j] = s / sqrt((double)HS);
                        m = fmax(m, p[j]);
                    }
                    for (int j = 0; j < visible; j++)
                        sum += p[j] == -INFINITY ? 0.0 : exp(p[j] - m);
                    for (int i = 0; i < HS; i++) {
                        double ref = 0.0;
                        for (int j = 0; j < visible && sum > 0.0; j++)
                            if (p[j] != -INFINITY)
                                ref += exp(p[j] - m) / sum * qkv[((size_t)b * T + j) * row + (size_t)(NH + NKV + g) * HS + i];
                        worst = fmax(worst, fabs(ref - out[((size_t)b * T + t) * NH * HS + (size_t)h * HS + i]));
                    }
                }
        rg_test_check(worst < 1e-4, __FILE__, __LINE__, "attention B=%d T=%d NH=%d NKV=%d HS=%d causal=%d: error %.3g",
                      B, T, NH, NKV, HS, causal, worst);
    next:
        free(qkv), free(out), free(att), free(mask), free(p);
    }
}

/* Rows are summed side by side, yet each row's log-sum-exp is the one it gets alone,
 * bit for bit (two whole groups of rows and a part one; a row of -inf but one, a row
 * with +inf logits ignored). */
void test_ops_crossentropy_rows_do_not_depend_on_their_neighbours(void)
{
    enum { N = 19, V = 1031 };
    float *logits = malloc((size_t)N * V * sizeof(float)), lse[N], alone[N];
    int32_t targets[N];
    if (!RG_CHECK(logits != NULL))
        return;
    fill_uniform(logits, (size_t)N * V, 91, -20, 20);
    for (int n = 0; n < N; n++)
        targets[n] = n % 5 == 2 ? -100 : (n * 97) % V;
    for (int v = 0; v < V; v++)
        logits[(size_t)4 * V + v] = v == 9 ? 1.0f : -INFINITY;
    targets[4] = 9;
    logits[(size_t)7 * V + 3] = INFINITY; /* row 7 is ignored: nothing of it reaches the total */
    long count = 0, one_count = 0;
    const double total = rg_crossentropy_forward(lse, logits, targets, N, V, &count);
    double alone_total = 0.0;
    for (int n = 0; n < N; n++) {
        long c = 0;
        alone_total += rg_crossentropy_forward(alone + n, logits + (size_t)n * V, targets + n, 1, V, &c);
        one_count += c;
    }
    RG_CHECK(memcmp(lse, alone, sizeof(lse)) == 0);
    RG_CHECK_EQ(count, one_count);
    RG_CHECK_CLOSE(total, alone_total, 1e-9 * fabs(alone_total));
    RG_CHECK(lse[4] == 1.0f && lse[7] == 0.0f);
    free(logits);
}

/* Cross-entropy over a GPT-2-sized vocabulary, rows ignored at random. */
void test_ops_crossentropy_large_vocabulary(void)
{
    enum { N = 5, V = 50257 };
    float *logits = malloc((size_t)N * V * sizeof(float)), *lse = malloc(N * sizeof(float));
    if (!RG_CHECK(logits != NULL && lse != NULL))
        goto done;
    fill_uniform(logits, (size_t)N * V, 77, -8, 8);
    const int32_t targets[N] = {0, V - 1, -100, 12345, 7};
    long count = 0;
    const double total = rg_crossentropy_forward(lse, logits, targets, N, V, &count);
    RG_CHECK_EQ(count, 4);
    double ref_total = 0.0;
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0)
            continue;
        double m = -INFINITY, s = 0.0;
        for (int v = 0; v < V; v++)
            m = fmax(m, logits[(size_t)n * V + v]);
        for (int v = 0; v < V; v++)
            s += exp(logits[(size_t)n * V + v] - m);
        ref_total += m + log(s) - logits[(size_t)n * V + targets[n]];
    }
    RG_CHECK_CLOSE(total, ref_total, 1e-3);
    rg_crossentropy_backward(logits, lse, targets, N, V, 1.0f);
    for (int n = 0; n < N; n++) {
        double s = 0.0;
        for (int v = 0; v < V; v++)
            s += logits[(size_t)n * V + v];
        RG_CHECK_CLOSE(s, 0.0, 1e-4); /* softmax - onehot sums to 0; ignored rows are 0 */
    }
done:
    free(logits);
    free(lse);
}
