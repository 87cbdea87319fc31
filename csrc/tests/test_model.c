/*
 * test_model.c - rg_model.c on tiny models of each family:
 *   - the loss gradient of EVERY parameter element against central finite
 *     differences (GPT-2-like pre-norm with a tied head, BERT-like post-norm
 *     with token types, pooler and classifier, Llama-like with GQA, rotary
 *     and SwiGLU), with dropout on (its masks are replayed by seed);
 *   - freezing: frozen gradients are never written, trainable ones still
 *     match finite differences;
 *   - the key/value-cache decode path against the full forward (with and
 *     without token types);
 *   - a failed forward invalidates the previous pass;
 *   - overflow-checked config and pass sizes (RG_ERR_TOO_LARGE), a
 *     randomised sweep of configs meant to run under UBSan;
 *   - the op table seam and the busy flag.
 *
 * Finite differences in fp32: the forward is fp32, so each difference has
 * noise of about ulp(loss) / eps. Parameters are scaled up so activations
 * leave the linear regime and gradients are well above that noise; a tensor
 * passes when the relative error of its whole gradient vector is small and no
 * element is far off.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rg_backend.h"
#include "rg_cuda.h"
#include "rg_gemm_bf16.h"
#include "rg_model.h"
#include "rg_ops.h"
#include "rg_rng.h"
#include "rg_test.h"

enum { FAMILY_GPT2 = 0, FAMILY_LLAMA = 1, FAMILY_BERT = 2, FAMILY_DISTILBERT = 3, FAMILY_GPT2_TYPES = 4 };

static rg_model_config tiny_config(int family)
{
    rg_model_config c;
    memset(&c, 0, sizeof(c));
    c.vocab_size = 23;
    c.n_positions = 12;
    c.n_layer = 2;
    c.n_head = 2;
    c.n_kv_head = 2;
    c.head_dim = 5;
    c.n_embd = 10;
    c.n_inner = 14;
    c.norm = RG_NORM_LAYERNORM;
    c.norm_eps = 1e-5f;
    c.pre_norm = 1;
    c.final_norm = 1;
    c.position = RG_POSITION_LEARNED;
    c.activation = RG_ACTIVATION_GELU_TANH;
    c.causal = 1;
    c.bias = 1;
    c.head = RG_HEAD_LM;
    c.tie_word_embeddings = 1;
    c.embd_pdrop = c.resid_pdrop = c.attn_pdrop = 0.1f;
    if (family == FAMILY_LLAMA) {
        c.n_head = 4;
        c.n_kv_head = 2; /* two query heads per key/value head */
        c.head_dim = 4;
        c.norm = RG_NORM_RMSNORM;
        c.position = RG_POSITION_ROPE;
        c.rope_theta = 100.0f;
        c.activation = RG_ACTIVATION_SWIGLU;
        c.bias = 0;
        c.tie_word_embeddings = 0;
        c.embd_pdrop = c.resid_pdrop = c.attn_pdrop = 0.0f; /* as Llama */
    } else if (family == FAMILY_BERT || family == FAMILY_DISTILBERT) {
        c.type_vocab_size = family == FAMILY_BERT ? 2 : 0;
        c.pre_norm = 0;
        c.embed_norm = 1;
        c.final_norm = 0;
        c.activation = RG_ACTIVATION_GELU_ERF;
        c.causal = 0;
        c.head = family == FAMILY_BERT ? RG_HEAD_CLS_BERT : RG_HEAD_CLS_DISTILBERT;
        c.num_labels = 3;
        c.cls_pdrop = 0.2f;
    } else if (family == FAMILY_GPT2_TYPES) {
        c.type_vocab_size = 3; /* a causal LM with token types */
    }
    return c;
}

static int is_encoder(int family) { return family == FAMILY_BERT || family == FAMILY_DISTILBERT; }

/* Matrices scaled up (activations away from the linear regime), norm
 * weights and biases spread around their defaults, so that every gradient
 * path is exercised and non-zero. */
static void spread_parameters(rg_model *m, uint64_t seed)
{
    for (int i = 0; i < m->table.count; i++) {
        const rg_param_info *info = &m->table.tensors[i];
        float *p = m->params + info->offset;
        for (size_t k = 0; k < info->numel; k++) {
            const float u = rg_rng_uniform(seed + (uint64_t)i, k) - 0.5f;
            p[k] = info->ndim == 2 ? p[k] * 10.0f : p[k] + 0.6f * u;
        }
    }
}

#define B_ 3
#define T_ 7

typedef struct model_case {
    rg_model *m;
    int32_t tokens[B_ * T_], mask[B_ * T_], types[B_ * T_], targets[B_ * T_];
    const int32_t *types_or_null;
    int train;
} model_case;

static void case_fill(model_case *c, int family)
{
    for (int i = 0; i < B_ * T_; i++) {
        const int t = i % T_, b = i / T_;
        c->tokens[i] = (int32_t)(rg_rng_bits(7, (uint64_t)i) % 23);
        if (is_encoder(family))
            c->mask[i] = t < (b == 1 ? 4 : T_);       /* right padding, row 1: 4 real tokens */
        else
            c->mask[i] = t >= (b == 1 ? 3 : 0);       /* left padding, row 1: 4 real tokens */
        c->types[i] = family == FAMILY_BERT ? (t >= 3) : (int32_t)(rg_rng_bits(8, (uint64_t)i) % 3);
        c->targets[i] = c->mask[i] ? c->tokens[i] : -100;
    }
    if (is_encoder(family))
        for (int b = 0; b < B_; b++)
            c->targets[b] = b; /* class ids */
    c->types_or_null = (family == FAMILY_BERT || family == FAMILY_GPT2_TYPES) ? c->types : NULL;
    c->train = 1;
}

static double case_loss(model_case *c)
{
    float loss = 0.0f;
    rg_status s = rg_model_forward(c->m, c->tokens, c->mask, c->types_or_null, c->targets, B_, T_, c->train,
                                   99, &loss);
    return s == RG_OK ? (double)loss : NAN;
}

/* Elements of a tensor compared with finite differences: all of a small
 * tensor, an evenly spread sample of a larger one (each sampled element
 * costs two forwards; the sample still reaches every row of a matrix of up
 * to FD_SAMPLE rows). */
#define FD_SAMPLE 24

/* RG_TEST_QUICK=1 (the valgrind run, where each forward is ~50x slower):
 * a few elements per tensor, enough to walk every code path once. */
static size_t fd_sample(void)
{
    const char *quick = getenv("RG_TEST_QUICK");
    return quick != NULL && quick[0] == '1' ? 3 : FD_SAMPLE;
}

/* Central differences of the loss for the sampled elements of tensor
 * `info`, against analytic (numel,); returns 1 when they agree. */
static int tensor_matches_fd(model_case *c, const rg_param_info *info, const float *analytic, float eps)
{
    float *p = c->m->params + info->offset;
    double diff2 = 0.0, num2 = 0.0, ana2 = 0.0, worst = 0.0;
    size_t worst_at = 0;
    double worst_num = 0.0;
    const size_t sample = fd_sample(), n = info->numel < sample ? info->numel : sample;
    const size_t stride = info->numel / n, phase = rg_rng_bits(info->offset, 1) % stride;
    for (size_t j = 0; j < n; j++) {
        const size_t k = j * stride + (phase + j) % stride; /* a different column in each row */
        const float keep = p[k];
        p[k] = keep + eps;
        const double up = case_loss(c);
        p[k] = keep - eps;
        const double down = case_loss(c);
        p[k] = keep;
        const double numeric = (up - down) / (2.0 * (double)eps);
        const double a = analytic[k];
        const double d = fabs(numeric - a);
        diff2 += d * d;
        num2 += numeric * numeric;
        ana2 += a * a;
        /* element-wise: only far-off elements, beyond the fp32 noise */
        const double excess = d - (2e-3 + 5e-2 * fabs(numeric));
        if (excess > worst || isnan(d)) {
            worst = isnan(d) ? INFINITY : excess;
            worst_at = k;
            worst_num = numeric;
        }
    }
    const double scale = sqrt(num2 > ana2 ? num2 : ana2);
    const double rel = sqrt(diff2) / (scale + 1e-6);
    const int ok = rel < 2e-2 && worst <= 0.0 && !isnan(rel);
    rg_test_check(ok, __FILE__, __LINE__,
                  "%s: |fd - analytic| / |g| = %.3g over %zu elements (|g| = %.3g); worst element %zu: "
                  "analytic %.6g, numeric %.6g",
                  info->name, rel, n, scale, worst_at, (double)analytic[worst_at], worst_num);
    return ok;
}

static void model_gradients(int family)
{
    rg_model_config config = tiny_config(family);
    model_case c;
    if (!RG_CHECK_STATUS(rg_model_init(&c.m, &config), RG_OK))
        return;
    spread_parameters(c.m, 5);
    case_fill(&c, family);
    float loss;
    rg_model_zero_grad(c.m);
    RG_CHECK_STATUS(rg_model_forward(c.m, c.tokens, c.mask, c.types_or_null, c.targets, B_, T_, 1, 99, &loss),
                    RG_OK);
    RG_CHECK(loss > 0.0f && isfinite(loss));
    RG_CHECK_STATUS(rg_model_backward(c.m, 1.0f), RG_OK);
    float *analytic = malloc(c.m->table.total * sizeof(float));
    if (!RG_CHECK(analytic != NULL)) {
        rg_model_free(c.m);
        return;
    }
    memcpy(analytic, c.m->grads, c.m->table.total * sizeof(float));
    int n_nonzero = 0;
    for (int i = 0; i < c.m->table.count; i++) {
        const rg_param_info *info = &c.m->table.tensors[i];
        tensor_matches_fd(&c, info, analytic + info->offset, 4e-3f);
        double norm = 0.0;
        for (size_t k = 0; k < info->numel; k++)
            norm += fabs(analytic[info->offset + k]);
        n_nonzero += norm > 0.0;
    }
    /* every tensor takes part in the loss (padding rows of wpe aside, each
     * tensor has some non-zero gradient) */
    RG_CHECK_EQ(n_nonzero, c.m->table.count);
    /* loss_scale scales, and a second backward accumulates */
    RG_CHECK_STATUS(rg_model_forward(c.m, c.tokens, c.mask, c.types_or_null, c.targets, B_, T_, 1, 99, &loss), RG_OK);
    RG_CHECK_STATUS(rg_model_backward(c.m, 2.0f), RG_OK);
    double err = 0.0;
    for (size_t k = 0; k < c.m->table.total; k++)
        err = fmax(err, fabs(c.m->grads[k] - 3.0 * analytic[k]) / (1e-3 + fabs(3.0 * analytic[k])));
    RG_CHECK(err < 1e-4);
    free(analytic);
    rg_model_free(c.m);
}

void test_model_gradients_gpt2_like(void) { model_gradients(FAMILY_GPT2); }
void test_model_gradients_llama_like(void) { model_gradients(FAMILY_LLAMA); }
void test_model_gradients_bert_like(void) { model_gradients(FAMILY_BERT); }
void test_model_gradients_distilbert_like(void) { model_gradients(FAMILY_DISTILBERT); }
void test_model_gradients_causal_with_token_types(void) { model_gradients(FAMILY_GPT2_TYPES); }

/* Frozen gradients are never written (a sentinel survives zero_grad,
 * forward and backward); trainable ones still match finite differences. */
static void freezing_case(int family, int n_trainable, rg_head_policy policy)
{
    rg_model_config config = tiny_config(family);
    model_case c;
    if (!RG_CHECK_STATUS(rg_model_init(&c.m, &config), RG_OK))
        return;
    spread_parameters(c.m, 6);
    case_fill(&c, family);
    rg_model *m = c.m;
    RG_CHECK_STATUS(rg_model_set_trainable(m, n_trainable, policy), RG_OK);
    const size_t total = m->table.total;
    for (int i = 0; i < m->table.count; i++) {
        const rg_param_info *info = &m->table.tensors[i];
        if (!info->trainable)
            for (size_t k = 0; k < info->numel; k++)
                m->grads[info->offset + k] = 7.0f + (float)k;
    }
    float *before = malloc(total * sizeof(float)), *analytic = malloc(total * sizeof(float));
    if (!RG_CHECK(before != NULL && analytic != NULL))
        goto done;
    memcpy(before, m->grads, total * sizeof(float));
    float loss;
    rg_model_zero_grad(m);
    RG_CHECK_STATUS(rg_model_forward(m, c.tokens, c.mask, c.types_or_null, c.targets, B_, T_, 1, 99, &loss), RG_OK);
    RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_OK);
    memcpy(analytic, m->grads, total * sizeof(float));
    const int lowest = config.n_layer - n_trainable;
    for (int i = 0; i < m->table.count; i++) {
        const rg_param_info *info = &m->table.tensors[i];
        const int is_wte = strcmp(info->name, "wte") == 0;
        const int is_head = info->layer == config.n_layer && strncmp(info->name, "lnf", 3) != 0;
        int expect = info->layer >= lowest && info->layer >= 0;
        if (is_head)
            expect = policy != RG_HEAD_POLICY_FROZEN;
        if (is_wte && m->tied)
            expect = policy != RG_HEAD_POLICY_FROZEN;
        RG_CHECK_EQ(info->trainable, expect);
        if (!info->trainable) {
            if (!RG_CHECK(memcmp(m->grads + info->offset, before + info->offset, info->numel * sizeof(float)) == 0))
                rg_test_check(0, __FILE__, __LINE__, "frozen %s was written", info->name);
        } else if (!(is_wte && m->tied)) {
            /* a tied wte trains through the head only, by design: its gradient
             * is not the full derivative, so finite differences do not apply */
            tensor_matches_fd(&c, info, analytic + info->offset, 4e-3f);
        }
    }
done:
    free(before);
    free(analytic);
    rg_model_free(m);
}

void test_model_freezing_gpt2_head_frozen(void) { freezing_case(FAMILY_GPT2, 1, RG_HEAD_POLICY_FROZEN); }
void test_model_freezing_gpt2_tied_head_trains(void) { freezing_case(FAMILY_GPT2, 1, RG_HEAD_POLICY_TRAIN); }
void test_model_freezing_llama_no_block(void) { freezing_case(FAMILY_LLAMA, 0, RG_HEAD_POLICY_TRAIN); }
void test_model_freezing_bert_top_block(void) { freezing_case(FAMILY_BERT, 1, RG_HEAD_POLICY_TRAIN); }

void test_model_freezing_state_and_untie(void)
{
    rg_model_config config = tiny_config(FAMILY_GPT2);
    rg_model *m;
    if (!RG_CHECK_STATUS(rg_model_init(&m, &config), RG_OK))
        return;
    int32_t tokens[14], targets[14];
    for (int i = 0; i < 14; i++)
        tokens[i] = targets[i] = i % 23;
    float loss;
    /* set_trainable between forward and backward invalidates the pass */
    RG_CHECK_STATUS(rg_model_forward(m, tokens, NULL, NULL, targets, 2, 7, 0, 0, &loss), RG_OK);
    RG_CHECK(rg_model_backward_ready(m));
    RG_CHECK_STATUS(rg_model_set_trainable(m, -1, RG_HEAD_POLICY_TRAIN), RG_OK);
    RG_CHECK(!rg_model_backward_ready(m));
    RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_ERR_STATE);
    /* untying copies wte into a new lm_head.w at the end of the table */
    size_t total = m->table.total;
    RG_CHECK_STATUS(rg_model_set_trainable(m, 0, RG_HEAD_POLICY_UNTIE), RG_OK);
    const rg_param_info *head = rg_model_find_param(m, "lm_head.w");
    const rg_param_info *wte = rg_model_find_param(m, "wte");
    if (RG_CHECK(head != NULL && wte != NULL)) {
        RG_CHECK_EQ(head->offset, total);
        RG_CHECK(memcmp(m->params + head->offset, m->params + wte->offset, head->numel * sizeof(float)) == 0);
        RG_CHECK(head->trainable && !wte->trainable);
    }
    rg_model_free(m);
}

/* ---- generation: the cached path against the full forward ---- */

/* Prefill of a left-padded batch then three decode steps; each row's logits
 * must equal those of the full forward over that row alone, unpadded. */
static void cache_case(int family, int with_types)
{
    rg_model_config config = tiny_config(family);
    config.embd_pdrop = config.resid_pdrop = config.attn_pdrop = 0.0f;
    rg_model *m;
    if (!RG_CHECK_STATUS(rg_model_init(&m, &config), RG_OK))
        return;
    spread_parameters(m, 9);
    enum { B = 2, P = 5, STEPS = 3, V = 23 };
    /* row 0: 5 real tokens; row 1: 3 real tokens, left-padded with 2 pads */
    const int32_t prompt[B * P] = {3, 4, 5, 6, 7, 0, 0, 9, 10, 11};
    const int32_t mask[B * P] = {1, 1, 1, 1, 1, 0, 0, 1, 1, 1};
    const int32_t prompt_types[B * P] = {0, 1, 2, 1, 0, 0, 0, 2, 2, 1};
    const int32_t next[STEPS][B] = {{12, 13}, {1, 2}, {22, 0}};
    const int32_t next_types[STEPS][B] = {{1, 2}, {0, 1}, {2, 2}};
    float cached[STEPS + 1][B * V];
    RG_CHECK_STATUS(rg_model_cache_reset(m, B, P + STEPS), RG_OK);
    if (with_types)
        RG_CHECK_STATUS(rg_model_cache_forward_types(m, prompt, mask, prompt_types, P, cached[0]), RG_OK);
    else
        RG_CHECK_STATUS(rg_model_cache_forward(m, prompt, mask, P, cached[0]), RG_OK);
    for (int s = 0; s < STEPS; s++) {
        if (with_types)
            RG_CHECK_STATUS(rg_model_cache_forward_types(m, next[s], NULL, next_types[s], 1, cached[s + 1]), RG_OK);
        else
            RG_CHECK_STATUS(rg_model_cache_forward(m, next[s], NULL, 1, cached[s + 1]), RG_OK);
    }
    RG_CHECK_STATUS(rg_model_cache_forward(m, next[0], NULL, 1, cached[0]), RG_ERR_SHAPE); /* full */
    for (int b = 0; b < B; b++) {
        const int first = b == 0 ? 0 : 2, n_real = P - first;
        int32_t row[P + STEPS], row_types[P + STEPS];
        for (int t = 0; t < n_real; t++) {
            row[t] = prompt[b * P + first + t];
            row_types[t] = prompt_types[b * P + first + t];
        }
        for (int s = 0; s < STEPS; s++) {
            row[n_real + s] = next[s][b];
            row_types[n_real + s] = next_types[s][b];
        }
        const int T = n_real + STEPS;
        if (!RG_CHECK_STATUS(rg_model_forward(m, row, NULL, with_types ? row_types : NULL, NULL, 1, T, 0, 0, NULL), RG_OK))
            continue;
        int rows, cols;
        const float *full = rg_model_logits(m, &rows, &cols);
        if (!RG_CHECK(full != NULL && rows == T && cols == V))
            continue;
        double worst = 0.0;
        for (int s = 0; s <= STEPS; s++) {
            const float *want = full + (size_t)(n_real - 1 + s) * V;
            for (int v = 0; v < V; v++)
                worst = fmax(worst, fabs((double)cached[s][b * V + v] - want[v]) / (1.0 + fabs(want[v])));
        }
        rg_test_check(worst < 1e-5, __FILE__, __LINE__, "row %d: cached logits differ from the full forward by %.3g",
                      b, worst);
    }
    rg_model_free(m);
}

void test_model_cache_matches_full_forward_gpt2(void) { cache_case(FAMILY_GPT2, 0); }
void test_model_cache_matches_full_forward_llama_gqa(void) { cache_case(FAMILY_LLAMA, 0); }
/* Before the fix the cached path dropped the token-type embedding (type 0
 * is what the full forward adds when no types are given). */
void test_model_cache_matches_full_forward_default_token_types(void) { cache_case(FAMILY_GPT2_TYPES, 0); }
void test_model_cache_matches_full_forward_given_token_types(void) { cache_case(FAMILY_GPT2_TYPES, 1); }

void test_model_cache_rejects_bad_input(void)
{
    rg_model_config config = tiny_config(FAMILY_GPT2_TYPES);
    rg_model *m;
    if (!RG_CHECK_STATUS(rg_model_init(&m, &config), RG_OK))
        return;
    const int32_t tokens[2] = {1, 2}, bad_types[2] = {0, 3};
    float logits[2 * 23];
    RG_CHECK_STATUS(rg_model_cache_forward(m, tokens, NULL, 1, logits), RG_ERR_STATE); /* no cache yet */
    RG_CHECK_STATUS(rg_model_cache_reset(m, 2, 4), RG_OK);
    RG_CHECK_STATUS(rg_model_cache_forward_types(m, tokens, NULL, bad_types, 1, logits), RG_ERR_LABEL_RANGE);
    RG_CHECK_STATUS(rg_model_cache_forward(m, tokens, NULL, 2147483647, logits), RG_ERR_SHAPE); /* no overflow */
    RG_CHECK_STATUS(rg_model_cache_reset(m, 2147483647, 12), RG_ERR_TOO_LARGE);
    int B, max_T, filled;
    rg_model_cache_info(m, &B, &max_T, &filled);
    RG_CHECK(B == 2 && max_T == 4 && filled == 0); /* a refused reset keeps the old cache */
    rg_model_free(m);
    config.type_vocab_size = 0;
    RG_CHECK_STATUS(rg_model_init(&m, &config), RG_OK);
    RG_CHECK_STATUS(rg_model_cache_reset(m, 2, 4), RG_OK);
    const int32_t types[2] = {0, 0};
    RG_CHECK_STATUS(rg_model_cache_forward_types(m, tokens, NULL, types, 1, logits), RG_ERR_INVALID_ARG);
    rg_model_free(m);
}

/* ---- a failed forward invalidates the previous pass ---- */

void test_model_failed_forward_invalidates_previous_pass(void)
{
    for (int family = 0; family < 3; family++) {
        rg_model_config config = tiny_config(family);
        model_case c;
        if (!RG_CHECK_STATUS(rg_model_init(&c.m, &config), RG_OK))
            return;
        case_fill(&c, family);
        rg_model *m = c.m;
        float loss;
        int rows, cols;
        int32_t bad[B_ * T_];
        memcpy(bad, c.tokens, sizeof(bad));
        bad[5] = 23; /* outside the vocabulary */
        /* each way a forward can fail, after a good forward with targets */
        for (int way = 0; way < 4; way++) {
            RG_CHECK_STATUS(rg_model_forward(m, c.tokens, c.mask, c.types_or_null, c.targets, B_, T_, 0, 0, &loss),
                            RG_OK);
            RG_CHECK(rg_model_backward_ready(m));
            rg_status s = RG_OK;
            if (way == 0) {
                s = rg_model_forward(m, bad, c.mask, c.types_or_null, c.targets, B_, T_, 0, 0, &loss);
                RG_CHECK_EQ(s, RG_ERR_LABEL_RANGE);
            } else if (way == 1) {
                s = rg_model_forward(m, c.tokens, c.mask, c.types_or_null, c.targets, B_, 13, 0, 0, &loss);
                RG_CHECK_EQ(s, RG_ERR_SHAPE);
            } else if (way == 2) {
                rg_interrupt_request();
                s = rg_model_forward(m, c.tokens, c.mask, c.types_or_null, c.targets, B_, T_, 0, 0, &loss);
                rg_interrupt_clear();
                RG_CHECK_EQ(s, RG_ERR_INTERRUPTED);
            } else {
                s = rg_model_forward(m, c.tokens, c.mask, c.types_or_null, c.targets, 1 << 28, T_, 0, 0, &loss);
                RG_CHECK_EQ(s, RG_ERR_TOO_LARGE);
            }
            RG_CHECK(!rg_model_backward_ready(m));
            RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_ERR_STATE);
            RG_CHECK(rg_model_logits(m, &rows, &cols) == NULL);
        }
        /* one backward per forward; a forward without targets allows none */
        RG_CHECK_STATUS(rg_model_forward(m, c.tokens, c.mask, c.types_or_null, c.targets, B_, T_, 0, 0, &loss), RG_OK);
        RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_OK);
        RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_ERR_STATE);
        RG_CHECK_STATUS(rg_model_forward(m, c.tokens, c.mask, c.types_or_null, NULL, B_, T_, 0, 0, NULL), RG_OK);
        RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_ERR_STATE);
        rg_model_free(m);
    }
}

/* The earlier batch's gradients must not come back: after a failed forward
 * the gradient block stays as zero_grad left it. */
void test_model_failed_forward_applies_no_stale_gradient(void)
{
    rg_model_config config = tiny_config(FAMILY_GPT2);
    model_case c;
    if (!RG_CHECK_STATUS(rg_model_init(&c.m, &config), RG_OK))
        return;
    case_fill(&c, FAMILY_GPT2);
    float loss;
    RG_CHECK_STATUS(rg_model_forward(c.m, c.tokens, c.mask, NULL, c.targets, B_, T_, 0, 0, &loss), RG_OK);
    c.tokens[0] = -1;
    RG_CHECK_STATUS(rg_model_forward(c.m, c.tokens, c.mask, NULL, c.targets, B_, T_, 0, 0, &loss), RG_ERR_LABEL_RANGE);
    rg_model_zero_grad(c.m);
    rg_model_backward(c.m, 1.0f);
    double norm = 0.0;
    for (size_t k = 0; k < c.m->table.total; k++)
        norm += fabs(c.m->grads[k]);
    RG_CHECK_CLOSE(norm, 0.0, 0.0);
    rg_model_free(c.m);
}

/* ---- sizes: overflow-checked, with limits ---- */

void test_model_config_overflow_is_refused(void)
{
    rg_model_config c;
    memset(&c, 0, sizeof(c));
    c.vocab_size = 8;
    c.n_positions = 8;
    c.n_layer = 1;
    c.n_head = 1;
    c.n_kv_head = 1;
    c.n_embd = 4;
    c.n_inner = 16;
    c.head_dim = 1 << 30; /* (n_head + 2 n_kv_head) * head_dim overflowed an int: heap overflow */
    c.norm = RG_NORM_LAYERNORM;
    c.norm_eps = 1e-5f;
    c.pre_norm = c.final_norm = c.causal = 1;
    c.tie_word_embeddings = 1;
    rg_model *m = (rg_model *)&c; /* must be reset to NULL */
    RG_CHECK_STATUS(rg_model_init(&m, &c), RG_ERR_TOO_LARGE);
    RG_CHECK(m == NULL);
    char message[200];
    RG_CHECK_STATUS(rg_model_config_check(&c, message, sizeof(message)), RG_ERR_TOO_LARGE);
    RG_CHECK(strstr(message, "head_dim") != NULL);

    rg_model_config d = c;
    d.head_dim = 1 << 20;
    d.n_head = d.n_kv_head = 1 << 10; /* each fine alone, the width is 3 * 2^30 */
    RG_CHECK_STATUS(rg_model_config_check(&d, message, sizeof(message)), RG_ERR_TOO_LARGE);
    RG_CHECK(strstr(message, "(n_head + 2 * n_kv_head) * head_dim") != NULL);
    d = c;
    d.head_dim = 4;
    d.activation = RG_ACTIVATION_SWIGLU;
    d.n_inner = 2147483647; /* 2 * n_inner overflowed */
    RG_CHECK_STATUS(rg_model_init(&m, &d), RG_ERR_TOO_LARGE);
    d.n_inner = (1 << 24) - 1; /* fits alone, 2 * n_inner does not */
    RG_CHECK_STATUS(rg_model_config_check(&d, message, sizeof(message)), RG_ERR_TOO_LARGE);
    RG_CHECK(strstr(message, "MLP") != NULL);
    d = c;
    d.head_dim = 4;
    d.vocab_size = 1 << 24;
    d.n_embd = 1 << 12; /* wte of 2^36 elements */
    RG_CHECK_STATUS(rg_model_config_check(&d, message, sizeof(message)), RG_ERR_TOO_LARGE);
    RG_CHECK(strstr(message, "wte") != NULL);
    d = c;
    d.head_dim = 1 << 10;
    d.n_embd = 1 << 10;
    d.n_inner = 1 << 12;
    d.n_layer = 1 << 14; /* each tensor fine, 2^14 layers of ~2^23 parameters are not */
    RG_CHECK_STATUS(rg_model_config_check(&d, message, sizeof(message)), RG_ERR_TOO_LARGE);
    RG_CHECK(strstr(message, "parameters") != NULL);
    d = c;
    d.head_dim = -4;
    RG_CHECK_STATUS(rg_model_config_check(&d, message, sizeof(message)), RG_ERR_INVALID_ARG);
    RG_CHECK(strstr(message, "head_dim") != NULL);
    d.head_dim = 4;
    d.norm_eps = INFINITY;
    RG_CHECK_STATUS(rg_model_config_check(&d, message, sizeof(message)), RG_ERR_INVALID_ARG);
    d.norm_eps = 1e-5f;
    RG_CHECK_STATUS(rg_model_config_check(&d, message, sizeof(message)), RG_OK);
    RG_CHECK_EQ(message[0], '\0');
    RG_CHECK_STATUS(rg_model_config_check(&d, NULL, 0), RG_OK);
    RG_CHECK(strstr(rg_status_string(RG_ERR_TOO_LARGE), "too large") != NULL);
}

void test_model_rejects_bad_input(void)
{
    rg_model_config config = tiny_config(FAMILY_BERT);
    rg_model *m = NULL;
    rg_model_config bad = config;
    bad.n_kv_head = 3; /* does not divide n_head */
    RG_CHECK_STATUS(rg_model_init(&m, &bad), RG_ERR_SHAPE);
    bad = config;
    bad.attn_pdrop = 1.0f;
    RG_CHECK_STATUS(rg_model_init(&m, &bad), RG_ERR_INVALID_ARG);
    RG_CHECK(m == NULL);
    if (!RG_CHECK_STATUS(rg_model_init(&m, &config), RG_OK))
        return;
    int32_t tokens[4] = {1, 2, 3, 23}, types[4] = {0, 1, 2, 0}, labels[1] = {3};
    float loss;
    RG_CHECK_STATUS(rg_model_forward(m, tokens, NULL, NULL, NULL, 1, 4, 0, 0, NULL), RG_ERR_LABEL_RANGE);
    tokens[3] = 4;
    RG_CHECK_STATUS(rg_model_forward(m, tokens, NULL, types, NULL, 1, 4, 0, 0, NULL), RG_ERR_LABEL_RANGE);
    RG_CHECK_STATUS(rg_model_forward(m, tokens, NULL, NULL, labels, 1, 4, 0, 0, &loss), RG_ERR_LABEL_RANGE);
    RG_CHECK_STATUS(rg_model_forward(m, tokens, NULL, NULL, NULL, 1, 13, 0, 0, NULL), RG_ERR_SHAPE);
    RG_CHECK_STATUS(rg_model_forward(m, tokens, NULL, NULL, NULL, 0, 4, 0, 0, NULL), RG_ERR_EMPTY);
    /* B * T beyond the row limit: refused before reading a token */
    RG_CHECK_STATUS(rg_model_forward(m, tokens, NULL, NULL, NULL, 2147483647, 12, 0, 0, NULL), RG_ERR_TOO_LARGE);
    RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_ERR_STATE);
    RG_CHECK_STATUS(rg_model_cache_reset(m, 1, 4), RG_ERR_UNSUPPORTED); /* an encoder */
    RG_CHECK_STATUS(rg_model_set_trainable(m, 1, RG_HEAD_POLICY_UNTIE), RG_ERR_UNSUPPORTED);
    rg_model_free(m);
}

/* Random configs, most of them absurd, through the check (and, when small
 * enough, a model and a forward): meant for the UBSan build, where any
 * signed overflow in the size arithmetic aborts the run. */
void test_model_random_configs_under_ubsan(void)
{
    int built = 0;
    for (uint64_t trial = 0; trial < 400; trial++) {
        uint64_t r = 0;
#define DRAW(lo_bits, hi_bits)                                                                  \
    (r++, (int)(rg_rng_bits(trial, r) % 3 == 0                                                  \
                    ? (int64_t)(rg_rng_bits(trial, 100 + r) % ((uint64_t)1 << (hi_bits))) - 2   \
                    : (int64_t)(rg_rng_bits(trial, 100 + r) % ((uint64_t)1 << (lo_bits))) + 1))
        rg_model_config c = tiny_config((int)(trial % 5));
        c.vocab_size = DRAW(5, 31);
        c.n_positions = DRAW(4, 31);
        c.n_layer = DRAW(2, 31);
        c.n_head = DRAW(2, 31);
        c.n_kv_head = rg_rng_bits(trial, 50) % 2 ? c.n_head : 1;
        c.head_dim = 2 * DRAW(2, 30);
        c.n_embd = DRAW(4, 31);
        c.n_inner = DRAW(4, 31);
        c.type_vocab_size = c.type_vocab_size ? DRAW(2, 31) : 0;
        c.num_labels = c.num_labels ? DRAW(2, 31) : 0;
#undef DRAW
        if (rg_model_config_check(&c, NULL, 0) != RG_OK)
            continue;
        rg_model_config small = c;
        const double n_params = (double)c.vocab_size * c.n_embd * 2 +
                                (double)c.n_layer * c.n_embd * (3.0 * c.n_head * c.head_dim + 3.0 * c.n_inner) +
                                (double)c.n_positions * c.n_embd;
        if (n_params > 2e5)
            continue;
        rg_model *m;
        if (!RG_CHECK_STATUS(rg_model_init(&m, &small), RG_OK))
            continue;
        built++;
        const int T = c.n_positions < 5 ? c.n_positions : 5, B = 2;
        int32_t tokens[10], targets[10];
        for (int i = 0; i < B * T; i++)
            tokens[i] = targets[i] = (int32_t)(rg_rng_bits(trial, 200 + (uint64_t)i) % (uint64_t)c.vocab_size);
        if (c.head != RG_HEAD_LM)
            for (int b = 0; b < B; b++)
                targets[b] = b % c.num_labels;
        float loss;
        RG_CHECK_STATUS(rg_model_forward(m, tokens, NULL, NULL, targets, B, T, 1, trial, &loss), RG_OK);
        RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_OK);
        if (c.causal && c.head == RG_HEAD_LM) { /* the cached path agrees at any shape */
            float *cached = malloc((size_t)B * c.vocab_size * sizeof(float));
            int rows, cols;
            if (RG_CHECK(cached != NULL) && RG_CHECK_STATUS(rg_model_cache_reset(m, B, T), RG_OK) &&
                RG_CHECK_STATUS(rg_model_cache_forward(m, tokens, NULL, T, cached), RG_OK) &&
                RG_CHECK_STATUS(rg_model_forward(m, tokens, NULL, NULL, NULL, B, T, 0, 0, NULL), RG_OK)) {
                const float *full = rg_model_logits(m, &rows, &cols);
                double worst = 0.0;
                for (int b = 0; b < B; b++)
                    for (int v = 0; v < c.vocab_size; v++) {
                        const float want = full[((size_t)b * T + T - 1) * c.vocab_size + v];
                        worst = fmax(worst, fabs(cached[(size_t)b * c.vocab_size + v] - want) / (1.0 + fabs(want)));
                    }
                RG_CHECK(worst < 1e-4);
            }
            free(cached);
        }
        rg_model_free(m);
    }
    RG_CHECK(built > 10);
}

/* Two models of one config with the same weights (spread with `spread_seed`
 * unless 0) and the same batch, for comparing two ways of running them;
 * 0 (both freed) when either cannot be made. */
static int case_pair(model_case *a, model_case *b, const rg_model_config *config, int family, uint64_t spread_seed)
{
    if (!RG_CHECK_STATUS(rg_model_init(&a->m, config), RG_OK))
        return 0;
    if (!RG_CHECK_STATUS(rg_model_init(&b->m, config), RG_OK)) {
        rg_model_free(a->m);
        return 0;
    }
    if (spread_seed != 0) {
        spread_parameters(a->m, spread_seed);
        spread_parameters(b->m, spread_seed);
    }
    case_fill(a, family);
    case_fill(b, family);
    return 1;
}

/* The last position's logits (B_, 23) of both models of a pair from a fresh key/value cache. */
static void case_pair_cached_logits(model_case *a, model_case *b, float *la, float *lb)
{
    RG_CHECK_STATUS(rg_model_cache_reset(a->m, B_, T_), RG_OK);
    RG_CHECK_STATUS(rg_model_cache_reset(b->m, B_, T_), RG_OK);
    RG_CHECK_STATUS(rg_model_cache_forward(a->m, a->tokens, a->mask, T_, la), RG_OK);
    RG_CHECK_STATUS(rg_model_cache_forward(b->m, b->tokens, b->mask, T_, lb), RG_OK);
}

/* ---- the op table ---- */

/* A table whose every entry counts its calls and forwards to the CPU op. */
enum { OP_COUNT = 29 };
static long op_calls[OP_COUNT];
#define COUNTING(index, name, params, args)        \
    static void counting_##name params            \
    {                                              \
        op_calls[index]++;                         \
        rg_ops_cpu()->name args;                   \
    }
COUNTING(0, dropout_apply, (float *x, size_t n, size_t f, float p, uint64_t s), (x, n, f, p, s))
COUNTING(1, add_inplace, (float *o, const float *a, size_t n), (o, a, n))
COUNTING(2, matmul_forward, (float *o, const float *i, const float *w, const float *b, int N, int IC, int OC),
         (o, i, w, b, N, IC, OC))
COUNTING(3, matmul_backward,
         (float *di, float *dw, float *db, const float *d, const float *i, const float *w, int N, int IC, int OC),
         (di, dw, db, d, i, w, N, IC, OC))
COUNTING(4, layernorm_forward,
         (float *o, float *m, float *r, const float *i, const float *w, const float *b, int N, int C, float e),
         (o, m, r, i, w, b, N, C, e))
COUNTING(5, layernorm_backward,
         (float *di, float *dw, float *db, const float *d, const float *i, const float *w, const float *m,
          const float *r, int N, int C),
         (di, dw, db, d, i, w, m, r, N, C))
COUNTING(6, rmsnorm_forward, (float *o, float *r, const float *i, const float *w, int N, int C, float e),
         (o, r, i, w, N, C, e))
COUNTING(7, rmsnorm_backward,
         (float *di, float *dw, const float *d, const float *i, const float *w, const float *r, int N, int C),
         (di, dw, d, i, w, r, N, C))
COUNTING(8, gelu_tanh_forward, (float *o, const float *i, size_t n), (o, i, n))
COUNTING(9, gelu_tanh_backward, (float *di, const float *i, const float *d, size_t n), (di, i, d, n))
COUNTING(10, gelu_erf_forward, (float *o, const float *i, size_t n), (o, i, n))
COUNTING(11, gelu_erf_backward, (float *di, const float *i, const float *d, size_t n), (di, i, d, n))
COUNTING(12, swiglu_forward, (float *o, const float *i, int N, int F), (o, i, N, F))
COUNTING(13, swiglu_backward, (float *di, const float *i, const float *d, int N, int F), (di, i, d, N, F))
COUNTING(14, relu_forward, (float *o, const float *i, size_t n), (o, i, n))
COUNTING(15, relu_backward, (float *di, const float *o, const float *d, size_t n), (di, o, d, n))
COUNTING(16, tanh_forward, (float *o, const float *i, size_t n), (o, i, n))
COUNTING(17, tanh_backward, (float *di, const float *o, const float *d, size_t n), (di, o, d, n))
COUNTING(18, embedding_forward,
         (float *o, const int32_t *t, const int32_t *p, const int32_t *ty, const float *wte, const float *wpe,
          const float *wtt, int N, int C),
         (o, t, p, ty, wte, wpe, wtt, N, C))
COUNTING(19, embedding_backward,
         (float *dwte, float *dwpe, float *dwtt, const float *d, const int32_t *t, const int32_t *p,
          const int32_t *ty, int N, int C),
         (dwte, dwpe, dwtt, d, t, p, ty, N, C))
COUNTING(20, rope_forward, (float *q, const int32_t *p, int N, int NH, int NKV, int HS, float th),
         (q, p, N, NH, NKV, HS, th))
COUNTING(21, rope_backward, (float *q, const int32_t *p, int N, int NH, int NKV, int HS, float th),
         (q, p, N, NH, NKV, HS, th))
COUNTING(22, attention_forward,
         (float *o, float *a, const float *q, const int32_t *k, int B, int T, int NH, int NKV, int HS, int c,
          float p, uint64_t s),
         (o, a, q, k, B, T, NH, NKV, HS, c, p, s))
COUNTING(23, attention_backward,
         (float *dq, const float *d, const float *q, const float *a, const int32_t *k, int B, int T, int NH,
          int NKV, int HS, int c, float p, uint64_t s),
         (dq, d, q, a, k, B, T, NH, NKV, HS, c, p, s))
COUNTING(24, attention_cached_forward,
         (float *o, const float *q, const float *kc, const float *vc, const int32_t *k, int B, int Tn, int S,
          int st, int NH, int NKV, int HS),
         (o, q, kc, vc, k, B, Tn, S, st, NH, NKV, HS))
COUNTING(26, crossentropy_backward, (float *l, const float *s, const int32_t *t, int N, int V, float sc),
         (l, s, t, N, V, sc))
COUNTING(27, lora_forward,
         (float *o, float *u, const float *i, const float *a, const float *b, float s, int N, int IC, int R, int OC,
          int ld),
         (o, u, i, a, b, s, N, IC, R, OC, ld))
COUNTING(28, lora_backward,
         (float *di, float *da, float *db, float *du, const float *d, const float *i, const float *u, const float *a,
          const float *b, float s, int N, int IC, int R, int OC, int ld),
         (di, da, db, du, d, i, u, a, b, s, N, IC, R, OC, ld))
#undef COUNTING
static double counting_crossentropy_forward(float *lse, const float *logits, const int32_t *targets, int N, int V,
                                            long *count)
{
    op_calls[25]++;
    return rg_ops_cpu()->crossentropy_forward(lse, logits, targets, N, V, count);
}

static const rg_ops_table counting_ops = {
    .name = "counting",
    .dropout_apply = counting_dropout_apply,
    .add_inplace = counting_add_inplace,
    .matmul_forward = counting_matmul_forward,
    .matmul_backward = counting_matmul_backward,
    .lora_forward = counting_lora_forward,
    .lora_backward = counting_lora_backward,
    .layernorm_forward = counting_layernorm_forward,
    .layernorm_backward = counting_layernorm_backward,
    .rmsnorm_forward = counting_rmsnorm_forward,
    .rmsnorm_backward = counting_rmsnorm_backward,
    .gelu_tanh_forward = counting_gelu_tanh_forward,
    .gelu_tanh_backward = counting_gelu_tanh_backward,
    .gelu_erf_forward = counting_gelu_erf_forward,
    .gelu_erf_backward = counting_gelu_erf_backward,
    .swiglu_forward = counting_swiglu_forward,
    .swiglu_backward = counting_swiglu_backward,
    .relu_forward = counting_relu_forward,
    .relu_backward = counting_relu_backward,
    .tanh_forward = counting_tanh_forward,
    .tanh_backward = counting_tanh_backward,
    .embedding_forward = counting_embedding_forward,
    .embedding_backward = counting_embedding_backward,
    .rope_forward = counting_rope_forward,
    .rope_backward = counting_rope_backward,
    .attention_forward = counting_attention_forward,
    .attention_backward = counting_attention_backward,
    .attention_cached_forward = counting_attention_cached_forward,
    .crossentropy_forward = counting_crossentropy_forward,
    .crossentropy_backward = counting_crossentropy_backward,
};

/* Forward + backward (+ a cached step for causal models) on the default
 * table and on the counting table: bit-identical results, and every op the
 * family uses went through the table. */
static void ops_table_case(int family, const int *expected_ops, int n_expected)
{
    rg_model_config config = tiny_config(family);
    model_case a, b;
    if (!case_pair(&a, &b, &config, family, 0))
        return;
    RG_CHECK(a.m->ops == rg_ops_cpu());
    RG_CHECK_STATUS(rg_model_set_ops(b.m, &counting_ops), RG_OK);
    memset(op_calls, 0, sizeof(op_calls));
    float loss_a, loss_b;
    RG_CHECK_STATUS(rg_model_forward(a.m, a.tokens, a.mask, a.types_or_null, a.targets, B_, T_, 1, 3, &loss_a), RG_OK);
    RG_CHECK_STATUS(rg_model_forward(b.m, b.tokens, b.mask, b.types_or_null, b.targets, B_, T_, 1, 3, &loss_b), RG_OK);
    RG_CHECK(memcmp(&loss_a, &loss_b, sizeof(float)) == 0);
    RG_CHECK_STATUS(rg_model_backward(a.m, 1.0f), RG_OK);
    RG_CHECK_STATUS(rg_model_backward(b.m, 1.0f), RG_OK);
    RG_CHECK(memcmp(a.m->grads, b.m->grads, a.m->table.total * sizeof(float)) == 0);
    /* switching tables drops a pass that awaits its backward (its activations are the old
     * table's): no backward follows it */
    RG_CHECK_STATUS(rg_model_forward(b.m, b.tokens, b.mask, b.types_or_null, b.targets, B_, T_, 1, 3, &loss_b), RG_OK);
    RG_CHECK_STATUS(rg_model_set_ops(b.m, &counting_ops), RG_OK);
    RG_CHECK(!rg_model_backward_ready(b.m));
    RG_CHECK_STATUS(rg_model_backward(b.m, 1.0f), RG_ERR_STATE);
    if (!is_encoder(family)) {
        float la[B_ * 23], lb[B_ * 23];
        case_pair_cached_logits(&a, &b, la, lb);
        RG_CHECK(memcmp(la, lb, sizeof(la)) == 0);
        RG_CHECK(op_calls[24] == config.n_layer);
    }
    for (int i = 0; i < n_expected; i++)
        if (!RG_CHECK(op_calls[expected_ops[i]] > 0))
            rg_test_check(0, __FILE__, __LINE__, "op %d never went through the table", expected_ops[i]);
    rg_model_free(a.m);
    rg_model_free(b.m);
}

void test_model_ops_table_gpt2(void)
{
    const int used[] = {0, 1, 2, 3, 4, 5, 8, 9, 18, 19, 22, 23, 24, 25, 26};
    ops_table_case(FAMILY_GPT2, used, (int)(sizeof(used) / sizeof(used[0])));
}

void test_model_ops_table_llama(void)
{
    const int used[] = {1, 2, 3, 6, 7, 12, 13, 18, 19, 20, 21, 22, 23, 24, 25, 26};
    ops_table_case(FAMILY_LLAMA, used, (int)(sizeof(used) / sizeof(used[0])));
}

void test_model_ops_table_encoders(void)
{
    const int bert[] = {0, 1, 2, 3, 4, 5, 10, 11, 16, 17, 18, 19, 22, 23, 25, 26};
    ops_table_case(FAMILY_BERT, bert, (int)(sizeof(bert) / sizeof(bert[0])));
    const int distilbert[] = {14, 15};
    ops_table_case(FAMILY_DISTILBERT, distilbert, 2);
}

void test_model_ops_table_must_be_complete(void)
{
    rg_model_config config = tiny_config(FAMILY_GPT2);
    rg_model *m;
    if (!RG_CHECK_STATUS(rg_model_init(&m, &config), RG_OK))
        return;
    RG_CHECK(rg_ops_table_complete(rg_ops_cpu()));
    RG_CHECK(strcmp(rg_ops_cpu()->name, "cpu") == 0);
    rg_ops_table partial = *rg_ops_cpu();
    partial.rope_backward = NULL;
    RG_CHECK(!rg_ops_table_complete(&partial));
    RG_CHECK_STATUS(rg_model_set_ops(m, &partial), RG_ERR_INVALID_ARG);
    partial = *rg_ops_cpu();
    partial.crossentropy_backward = NULL; /* the last required entry */
    RG_CHECK_STATUS(rg_model_set_ops(m, &partial), RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_model_set_ops(m, NULL), RG_ERR_INVALID_ARG);
    RG_CHECK(m->ops == rg_ops_cpu());
    /* the optional prepared-weight entries: none (the CPU table) or all four */
    RG_CHECK(rg_ops_cpu()->weight_prepare == NULL);
    const rg_ops_table *bf16 = rg_ops_cpu_bf16();
    if (bf16 != NULL) {
        RG_CHECK(rg_ops_table_complete(bf16) && bf16->weight_prepare != NULL);
        partial = *bf16;
        partial.matmul_input_grad_prepared = NULL; /* the last entry */
        RG_CHECK(!rg_ops_table_complete(&partial));
    }
    rg_model_free(m);
}

/* ---- a prepared LM head (the bf16 table's weight_prepare) ---- */

static const rg_ops_table *prepare_counted_table;
static int prepare_calls, prepare_handles;

static void *counted_weight_prepare(void *previous, const float *weight, int IC, int OC, int N, int input_grad)
{
    void *handle = prepare_counted_table->weight_prepare(previous, weight, IC, OC, N, input_grad);
    prepare_calls++;
    prepare_handles += handle != NULL;
    return handle;
}

/* Loss, gradients and evaluation logits of one training step of a fresh GPT-2 shaped model on `ops`. */
static float *prepared_head_step(const rg_ops_table *ops, int k, size_t keep_floats, float *loss, size_t *n_grads,
                                 float *eval_loss)
{
    rg_model_config config = tiny_config(FAMILY_GPT2);
    config.vocab_size = 600; /* wider than one column block of the bf16 product */
    config.n_positions = 128;
    config.embd_pdrop = config.resid_pdrop = config.attn_pdrop = 0.0f;
    enum { B = 4, T = 100 }; /* 396 rows with a target: chunks of 256 and 140 rows */
    rg_model *m;
    if (!RG_CHECK_STATUS(rg_model_init(&m, &config), RG_OK))
        return NULL;
    static int32_t tokens[B * T], mask[B * T];
    for (int i = 0; i < B * T; i++) {
        tokens[i] = 1 + (int32_t)((i * 7u + (unsigned)(i / T)) % (unsigned)(config.vocab_size - 1));
        mask[i] = 1;
    }
    RG_CHECK_STATUS(rg_model_set_ops(m, ops), RG_OK);
    RG_CHECK_STATUS(rg_model_set_trainable(m, k, k < 0 ? RG_HEAD_POLICY_TRAIN : RG_HEAD_POLICY_FROZEN), RG_OK);
    m->head_keep_floats = keep_floats; /* 0: the trainable head's backward goes by chunks */
    rg_model_zero_grad(m);
    RG_CHECK_STATUS(rg_model_forward(m, tokens, mask, NULL, tokens, B, T, 1, 5, loss), RG_OK);
    RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_OK);
    float *grads = malloc(m->grads_total * sizeof(float));
    *n_grads = m->grads_total;
    memcpy(grads, m->grads, m->grads_total * sizeof(float));
    /* a head weight changed after a step: the next use prepares it again */
    const rg_param_info *wte = rg_model_find_param(m, "wte");
    for (size_t i = 0; wte != NULL && i < wte->numel; i++)
        m->params[wte->offset + i] *= 0.5f;
    RG_CHECK(wte != NULL);
    RG_CHECK_STATUS(rg_model_forward(m, tokens, mask, NULL, tokens, B, T, 0, 0, eval_loss), RG_OK);
    rg_model_free(m);
    return grads;
}

void test_model_prepared_lm_head_changes_no_bit(void)
{
    const rg_ops_table *bf16 = rg_ops_cpu_bf16();
    if (bf16 == NULL) /* no AVX512-BF16 here: no table prepares anything */
        return;
    rg_ops_table counted = *bf16, unprepared = *bf16;
    prepare_counted_table = bf16;
    counted.weight_prepare = counted_weight_prepare;
    unprepared.weight_prepare = NULL, unprepared.weight_release = NULL;
    unprepared.matmul_forward_prepared = NULL, unprepared.matmul_input_grad_prepared = NULL;
    /* frozen head (its input gradient taken in the forward), a trainable head taken by
     * chunks in the backward, and one kept whole; the handles the step and the evaluation
     * prepare */
    static const struct {
        int k;
        size_t keep_floats;
        int handles;
    } cases[] = {{1, 0, 2}, {-1, 0, 3}, {-1, (size_t)1 << 28, 1}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        float loss0 = 0, loss1 = 1, eval0 = 0, eval1 = 1;
        size_t n0 = 0, n1 = 1;
        prepare_calls = prepare_handles = 0;
        float *g1 = prepared_head_step(&counted, cases[i].k, cases[i].keep_floats, &loss1, &n1, &eval1);
        float *g0 = prepared_head_step(&unprepared, cases[i].k, cases[i].keep_floats, &loss0, &n0, &eval0);
        RG_CHECK_EQ(prepare_handles, cases[i].handles);
        RG_CHECK(memcmp(&loss0, &loss1, sizeof(float)) == 0 && memcmp(&eval0, &eval1, sizeof(float)) == 0);
        if (!RG_CHECK(g0 != NULL && g1 != NULL && n0 == n1 && memcmp(g0, g1, n0 * sizeof(float)) == 0))
            fprintf(stderr, "  case %zu: gradients differ\n", i);
        free(g0), free(g1);
    }
}

/* ---- the CPU instruction sets ---- */

static double worst_relative(const float *a, const float *b, size_t n)
{
    double worst = 0.0;
    for (size_t i = 0; i < n; i++)
        worst = fmax(worst, fabs((double)a[i] - b[i]) / (1.0 + fabs((double)b[i])));
    return worst;
}

/* Forward, backward and a cached step of one family on the baseline table
 * and on the `isa` table: the same numbers up to rounding (FMA contracts
 * a*b+c differently). widen: 4x the channels, so the vector loops run their
 * full-width bodies and not only their tails. */
static void isa_case(const rg_ops_table *isa, int family, int widen)
{
    rg_model_config config = tiny_config(family);
    if (widen) {
        config.head_dim *= 4;
        config.n_embd *= 4;
        config.n_inner *= 5;
    }
    model_case a, b;
    if (!case_pair(&a, &b, &config, family, 11))
        return;
    RG_CHECK_STATUS(rg_model_set_ops(a.m, rg_ops_cpu_isa("baseline")), RG_OK);
    RG_CHECK_STATUS(rg_model_set_ops(b.m, isa), RG_OK);
    float loss_a, loss_b;
    RG_CHECK_STATUS(rg_model_forward(a.m, a.tokens, a.mask, a.types_or_null, a.targets, B_, T_, 1, 3, &loss_a), RG_OK);
    RG_CHECK_STATUS(rg_model_forward(b.m, b.tokens, b.mask, b.types_or_null, b.targets, B_, T_, 1, 3, &loss_b), RG_OK);
    RG_CHECK(fabs((double)loss_a - loss_b) <= 1e-5 * (1.0 + fabs((double)loss_a)));
    RG_CHECK_STATUS(rg_model_backward(a.m, 1.0f), RG_OK);
    RG_CHECK_STATUS(rg_model_backward(b.m, 1.0f), RG_OK);
    const double grads = worst_relative(b.m->grads, a.m->grads, a.m->table.total);
    if (!RG_CHECK(grads < 1e-4))
        rg_test_check(0, __FILE__, __LINE__, "family %d widen %d: gradients differ by %.3g", family, widen, grads);
    if (!is_encoder(family)) {
        float la[B_ * 23], lb[B_ * 23];
        case_pair_cached_logits(&a, &b, la, lb);
        RG_CHECK(worst_relative(lb, la, B_ * 23) < 1e-4);
    }
    rg_model_free(a.m);
    rg_model_free(b.m);
}

/* The ops no tiny family reaches (LoRA) and a long vocabulary row, op by op. */
static void isa_ops_case(const rg_ops_table *isa)
{
    const rg_ops_table *base = rg_ops_cpu_isa("baseline");
    enum { N = 9, IC = 37, R = 5, OC = 29, V = 1001 };
    float x[N * IC], wa[R * IC], wb[OC * R], dout[N * OC];
    for (int i = 0; i < N * IC; i++)
        x[i] = rg_rng_uniform(1, (uint64_t)i) - 0.5f;
    for (int i = 0; i < R * IC; i++)
        wa[i] = rg_rng_uniform(2, (uint64_t)i) - 0.5f;
    for (int i = 0; i < OC * R; i++)
        wb[i] = rg_rng_uniform(3, (uint64_t)i) - 0.5f;
    for (int i = 0; i < N * OC; i++)
        dout[i] = rg_rng_uniform(4, (uint64_t)i) - 0.5f;
    float out[2][N * OC], u[2][N * R], dx[2][N * IC], da[2][R * IC], db[2][OC * R], du[2][N * R];
    const rg_ops_table *tables[2] = {base, isa};
    for (int k = 0; k < 2; k++) {
        memset(out[k], 0, sizeof(out[k]));
        memset(dx[k], 0, sizeof(dx[k]));
        memset(da[k], 0, sizeof(da[k]));
        memset(db[k], 0, sizeof(db[k]));
        tables[k]->lora_forward(out[k], u[k], x, wa, wb, 2.0f, N, IC, R, OC, OC);
        tables[k]->lora_backward(dx[k], da[k], db[k], du[k], dout, x, u[k], wa, wb, 2.0f, N, IC, R, OC, OC);
    }
    RG_CHECK(worst_relative(out[1], out[0], N * OC) < 1e-5);
    RG_CHECK(worst_relative(dx[1], dx[0], N * IC) < 1e-5);
    RG_CHECK(worst_relative(da[1], da[0], R * IC) < 1e-5);
    RG_CHECK(worst_relative(db[1], db[0], OC * R) < 1e-5);

    float *logits[2], lse[2][N];
    int32_t targets[N];
    double loss[2];
    long count[2];
    for (int n = 0; n < N; n++)
        targets[n] = n == 4 ? -100 : (int32_t)(rg_rng_bits(5, (uint64_t)n) % V);
    for (int k = 0; k < 2; k++) {
        logits[k] = malloc((size_t)N * V * sizeof(float));
        if (!RG_CHECK(logits[k] != NULL))
            return;
        for (size_t i = 0; i < (size_t)N * V; i++)
            logits[k][i] = 8.0f * (rg_rng_uniform(6, i) - 0.5f);
        loss[k] = tables[k]->crossentropy_forward(lse[k], logits[k], targets, N, V, &count[k]);
        tables[k]->crossentropy_backward(logits[k], lse[k], targets, N, V, 0.125f);
    }
    RG_CHECK(count[0] == count[1] && count[0] == N - 1);
    RG_CHECK(fabs(loss[1] - loss[0]) <= 1e-5 * (1.0 + fabs(loss[0])));
    RG_CHECK(worst_relative(logits[1], logits[0], (size_t)N * V) < 1e-5);
    free(logits[0]);
    free(logits[1]);
}

void test_model_cpu_isas_agree(void)
{
    RG_CHECK(strcmp(rg_ops_cpu_isa_at(0), "baseline") == 0);
    RG_CHECK(rg_ops_cpu_isa("baseline") != NULL);
    RG_CHECK(rg_ops_cpu_isa("no-such-isa") == NULL);
    RG_CHECK(rg_ops_cpu_isa(NULL) == NULL);
    RG_CHECK(rg_ops_cpu() == rg_ops_cpu_isa(rg_ops_cpu_isa_name()));
    int compared = 0;
    for (size_t i = 1; rg_ops_cpu_isa_at(i) != NULL; i++) {
        const rg_ops_table *isa = rg_ops_cpu_isa(rg_ops_cpu_isa_at(i));
        if (isa == NULL) {
            printf("  (%s: not on this CPU, not compared)\n", rg_ops_cpu_isa_at(i));
            continue;
        }
        RG_CHECK(rg_ops_table_complete(isa));
        RG_CHECK(isa != rg_ops_cpu_isa("baseline"));
        const int families[] = {FAMILY_GPT2, FAMILY_LLAMA, FAMILY_BERT, FAMILY_DISTILBERT, FAMILY_GPT2_TYPES};
        for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++)
            for (int widen = 0; widen < 2; widen++)
                isa_case(isa, families[f], widen);
        isa_ops_case(isa);
        compared++;
    }
#if defined(__x86_64__)
    RG_CHECK(rg_ops_cpu_isa_at(1) != NULL); /* x86-64 builds carry the AVX2 copy */
#endif
    (void)compared;
}

/* ---- the frozen part's output, kept and given back ---- */

static void frozen_case(int family)
{
    rg_model_config config = tiny_config(family);
    model_case a, b;
    if (!case_pair(&a, &b, &config, family, 21))
        return;
    const size_t NC = (size_t)B_ * T_ * config.n_embd;
    float loss_a, loss_b, loss_dropout;

    /* every block trains: no frozen part */
    RG_CHECK(rg_model_first_trainable_block(a.m) == 0);
    RG_CHECK_STATUS(rg_model_forward(a.m, a.tokens, a.mask, a.types_or_null, a.targets, B_, T_, 1, 5, &loss_a), RG_OK);
    RG_CHECK(rg_model_frozen_output(a.m) == NULL);
    RG_CHECK_STATUS(rg_model_set_frozen_input(a.m, a.m->params), RG_ERR_STATE);

    if (a.m->tied) { /* a tied head that trains is wte: nothing is frozen */
        RG_CHECK_STATUS(rg_model_set_trainable(a.m, 1, RG_HEAD_POLICY_TRAIN), RG_OK);
        RG_CHECK(rg_model_first_trainable_block(a.m) == 0);
    }
    const rg_head_policy policy = a.m->tied ? RG_HEAD_POLICY_FROZEN : RG_HEAD_POLICY_TRAIN;
    for (int m = 0; m < 2; m++) {
        RG_CHECK_STATUS(rg_model_set_trainable(m ? b.m : a.m, 1, policy), RG_OK);
        rg_model_set_frozen_dropout(m ? b.m : a.m, 0);
    }
    RG_CHECK(rg_model_first_trainable_block(a.m) == config.n_layer - 1);
    RG_CHECK_STATUS(rg_model_forward(a.m, a.tokens, a.mask, a.types_or_null, a.targets, B_, T_, 1, 5, &loss_a), RG_OK);
    const float *frozen = rg_model_frozen_output(a.m);
    if (!RG_CHECK(frozen != NULL))
        goto done;
    float *kept = malloc(NC * sizeof(float));
    if (!RG_CHECK(kept != NULL))
        goto done;
    memcpy(kept, frozen, NC * sizeof(float));
    RG_CHECK_STATUS(rg_model_backward(a.m, 1.0f), RG_OK);

    /* b starts from the kept output: the same loss and gradients, bit for bit */
    RG_CHECK_STATUS(rg_model_set_frozen_input(b.m, kept), RG_OK);
    RG_CHECK_STATUS(rg_model_forward(b.m, b.tokens, b.mask, b.types_or_null, b.targets, B_, T_, 1, 5, &loss_b), RG_OK);
    RG_CHECK(memcmp(&loss_a, &loss_b, sizeof(float)) == 0);
    RG_CHECK_STATUS(rg_model_backward(b.m, 1.0f), RG_OK);
    RG_CHECK(memcmp(a.m->grads, b.m->grads, a.m->table.total * sizeof(float)) == 0);
    RG_CHECK(rg_model_frozen_output(b.m) != NULL);

    /* one-shot: the next forward runs the frozen part again */
    RG_CHECK_STATUS(rg_model_forward(b.m, b.tokens, b.mask, b.types_or_null, b.targets, B_, T_, 1, 5, &loss_b), RG_OK);
    RG_CHECK(memcmp(&loss_a, &loss_b, sizeof(float)) == 0);
    RG_CHECK(memcmp(rg_model_frozen_output(b.m), kept, NC * sizeof(float)) == 0);
    /* a forward without targets keeps no frozen output and takes none */
    RG_CHECK_STATUS(rg_model_forward(b.m, b.tokens, b.mask, b.types_or_null, NULL, B_, T_, 0, 5, NULL), RG_OK);
    RG_CHECK(rg_model_frozen_output(b.m) == NULL);
    RG_CHECK_STATUS(rg_model_set_frozen_input(b.m, kept), RG_OK);
    RG_CHECK_STATUS(rg_model_forward(b.m, b.tokens, b.mask, b.types_or_null, NULL, B_, T_, 0, 5, NULL), RG_ERR_STATE);

    /* frozen dropout on (the default) changes the frozen part's output in training */
    if (config.resid_pdrop > 0.0f) {
        rg_model_set_frozen_dropout(b.m, 1);
        RG_CHECK_STATUS(rg_model_forward(b.m, b.tokens, b.mask, b.types_or_null, b.targets, B_, T_, 1, 5,
                                         &loss_dropout), RG_OK);
        RG_CHECK(memcmp(rg_model_frozen_output(b.m), kept, NC * sizeof(float)) != 0);
        RG_CHECK_STATUS(rg_model_forward(b.m, b.tokens, b.mask, b.types_or_null, b.targets, B_, T_, 0, 5,
                                         &loss_dropout), RG_OK);
        RG_CHECK(memcmp(rg_model_frozen_output(b.m), kept, NC * sizeof(float)) == 0); /* eval: no dropout */
    }
    /* changing what trains drops the kept output */
    RG_CHECK_STATUS(rg_model_set_trainable(b.m, -1, RG_HEAD_POLICY_TRAIN), RG_OK);
    RG_CHECK(rg_model_frozen_output(b.m) == NULL);
    /* only the head trains: every block is frozen */
    RG_CHECK_STATUS(rg_model_set_trainable(b.m, 0, policy), RG_OK);
    if (!b.m->tied) {
        RG_CHECK(rg_model_first_trainable_block(b.m) == config.n_layer);
        RG_CHECK_STATUS(rg_model_forward(b.m, b.tokens, b.mask, b.types_or_null, b.targets, B_, T_, 1, 5, &loss_b),
                        RG_OK);
        const float *all = rg_model_frozen_output(b.m);
        if (RG_CHECK(all != NULL)) {
            memcpy(kept, all, NC * sizeof(float));
            RG_CHECK_STATUS(rg_model_set_frozen_input(a.m, kept), RG_OK);
            RG_CHECK_STATUS(rg_model_set_trainable(a.m, 0, policy), RG_OK);
            RG_CHECK_STATUS(rg_model_set_frozen_input(a.m, kept), RG_OK);
            RG_CHECK_STATUS(rg_model_forward(a.m, a.tokens, a.mask, a.types_or_null, a.targets, B_, T_, 1, 5,
                                             &loss_a), RG_OK);
            RG_CHECK(memcmp(&loss_a, &loss_b, sizeof(float)) == 0);
        }
    }
    free(kept);
done:
    rg_model_free(a.m);
    rg_model_free(b.m);
}

void test_model_frozen_output_round_trip(void)
{
    const int families[] = {FAMILY_GPT2, FAMILY_LLAMA, FAMILY_BERT, FAMILY_DISTILBERT};
    for (size_t f = 0; f < sizeof(families) / sizeof(families[0]); f++)
        frozen_case(families[f]);
}

/* ---- the LM head in chunks ---- */

/* 5 x 60 positions (295 loss rows: two chunks of the head) on a dropout-free
 * GPT-2: the gradients reaching the blocks agree whether the head's logits are
 * kept whole (a head that trains), taken chunk by chunk in the forward (a
 * frozen head in training) or recomputed by the backward (a forward without
 * dropout, train = 0; and a head that trains whose logits exceed
 * head_keep_floats, where the head's own gradient agrees too). */
void test_model_lm_head_chunks_agree(void)
{
    enum { B = 5, T = 60 };
    rg_model_config config = tiny_config(FAMILY_GPT2);
    config.n_positions = 64;
    config.tie_word_embeddings = 0;
    config.embd_pdrop = config.resid_pdrop = config.attn_pdrop = 0.0f;
    rg_model *m[4] = {NULL, NULL, NULL, NULL};
    int32_t tokens[B * T], mask[B * T];
    for (int i = 0; i < B * T; i++) {
        tokens[i] = (int32_t)(rg_rng_bits(31, (uint64_t)i) % 23);
        mask[i] = 1;
    }
    float loss[4];
    for (int k = 0; k < 4; k++) {
        if (!RG_CHECK_STATUS(rg_model_init(&m[k], &config), RG_OK))
            goto done;
        spread_parameters(m[k], 41);
        /* k 0: head trains (whole logits); 1: frozen head, train = 1 (fused); 2: frozen, train = 0;
         * 3: head trains, logits over head_keep_floats (recomputed) */
        const int head_trains = k == 0 || k == 3;
        if (k == 3)
            m[k]->head_keep_floats = (size_t)B * T * config.vocab_size - 1;
        RG_CHECK_STATUS(rg_model_set_trainable(m[k], 1, head_trains ? RG_HEAD_POLICY_TRAIN : RG_HEAD_POLICY_FROZEN),
                        RG_OK);
        RG_CHECK_STATUS(rg_model_forward(m[k], tokens, mask, NULL, tokens, B, T, k < 2 || k == 3, 3, &loss[k]), RG_OK);
        RG_CHECK_STATUS(rg_model_backward(m[k], 2.0f), RG_OK);
    }
    RG_CHECK(m[0]->head_mode == 0 && m[1]->head_mode == 1 && m[2]->head_mode == 2 && m[3]->head_mode == 2);
    for (int k = 1; k < 4; k++)
        RG_CHECK(fabs((double)loss[k] - loss[0]) <= 1e-6 * fabs((double)loss[0]));
    const rg_param_info *qkv = rg_model_find_param(m[0], "h.1.qkv.w"), *lnf = rg_model_find_param(m[0], "lnf.w");
    const rg_param_info *head = rg_model_find_param(m[0], "lm_head.w");
    const double h = worst_relative(m[3]->grads + head->offset, m[0]->grads + head->offset, head->numel);
    if (!RG_CHECK(h < 1e-5))
        rg_test_check(0, __FILE__, __LINE__, "recomputed logits: head gradient off by %.3g", h);
    for (int k = 1; k < 4; k++) {
        const double q = worst_relative(m[k]->grads + qkv->offset, m[0]->grads + qkv->offset, qkv->numel);
        const double n = worst_relative(m[k]->grads + lnf->offset, m[0]->grads + lnf->offset, lnf->numel);
        if (!RG_CHECK(q < 1e-5 && n < 1e-5))
            rg_test_check(0, __FILE__, __LINE__, "mode %d: block gradient off by %.3g, final norm by %.3g", k, q, n);
    }
    double biggest = 0.0; /* the gradients are not all zero */
    for (size_t i = 0; i < qkv->numel; i++)
        biggest = fmax(biggest, fabs(m[0]->grads[qkv->offset + i]));
    RG_CHECK(biggest > 1e-4);
done:
    for (int k = 0; k < 4; k++)
        rg_model_free(m[k]);
}

/* ---- frozen blocks lend their scratch to the backward ---- */

/* A 4-block model trained in its last block (k = 1) and whole (k = -1), same
 * dropout everywhere: the last block's and the head's gradients agree bit for
 * bit. With k = 1 the backward's scratch lies in the frozen blocks' scratch
 * set (before the logits in the activation block) when it fits there: MLP
 * width n_inner <= 4 n_embd or a gated activation; n_inner = 6 n_embd
 * without a gate does not fit, and the backward gets room of its own. */
static void lend_case(int family, int n_inner, int expect_lent)
{
    rg_model_config config = tiny_config(family);
    config.n_layer = 4;
    config.n_inner = n_inner;
    model_case c[2];
    c[0].m = c[1].m = NULL;
    float loss[2];
    for (int k = 0; k < 2; k++) {
        if (!RG_CHECK_STATUS(rg_model_init(&c[k].m, &config), RG_OK))
            goto done;
        spread_parameters(c[k].m, 17);
        case_fill(&c[k], family);
        RG_CHECK_STATUS(rg_model_set_trainable(c[k].m, k == 0 ? 1 : -1, RG_HEAD_POLICY_TRAIN), RG_OK);
        rg_model_zero_grad(c[k].m);
        RG_CHECK_STATUS(rg_model_forward(c[k].m, c[k].tokens, c[k].mask, c[k].types_or_null, c[k].targets, B_, T_,
                                         1, 5, &loss[k]), RG_OK);
        RG_CHECK_STATUS(rg_model_backward(c[k].m, 1.0f), RG_OK);
    }
    rg_model *frozen = c[0].m, *whole = c[1].m;
    RG_CHECK(memcmp(&loss[0], &loss[1], sizeof(float)) == 0);
    const int lent = (const float *)frozen->d_res < (const float *)frozen->logits;
    if (!RG_CHECK_EQ(lent, expect_lent))
        rg_test_check(0, __FILE__, __LINE__, "family %d, n_inner %d: backward lent %d", family, n_inner, lent);
    RG_CHECK((const float *)whole->d_res > (const float *)whole->logits); /* no frozen scratch to lend */
    int compared = 0;
    for (int i = 0; i < frozen->table.count; i++) {
        const rg_param_info *info = &frozen->table.tensors[i];
        if (!info->trainable || strcmp(info->name, "wte") == 0)
            continue; /* the whole model's wte also gets the embedding's gradient */
        const float *a = frozen->grads + info->offset, *b = whole->grads + info->offset;
        if (!RG_CHECK(memcmp(a, b, info->numel * sizeof(float)) == 0))
            rg_test_check(0, __FILE__, __LINE__, "family %d, n_inner %d: %s differs", family, n_inner, info->name);
        compared++;
    }
    RG_CHECK(compared >= 6);
done:
    rg_model_free(c[0].m);
    rg_model_free(c[1].m);
}

void test_model_frozen_blocks_lend_the_backward_their_scratch(void)
{
    lend_case(FAMILY_GPT2, 14, 1);
    lend_case(FAMILY_GPT2, 40, 1);
    lend_case(FAMILY_GPT2, 60, 0);
    lend_case(FAMILY_LLAMA, 60, 1);
    lend_case(FAMILY_DISTILBERT, 40, 1);
    lend_case(FAMILY_BERT, 60, 0);
}

/* A classifier's last block computes only the rows its head reads (token 0
 * of each sequence) past its attention: the same losses, logits and gradients
 * as computing every row (all_rows), dropout on everywhere (each kept row
 * draws the full pass's masks, LoRA's input dropout included), padding masks,
 * post- and pre-norm, with one, two or every block training, with adapters
 * on every linear layer, and in a forward without targets. The sums over
 * rows run in another order, hence a tolerance, not bit equality. */
static void head_rows_case(int family, int pre_norm, int k, int lora)
{
    rg_model_config config = tiny_config(family);
    config.n_layer = 3;
    config.pre_norm = pre_norm;
    config.final_norm = pre_norm; /* a pre-norm encoder ends with a norm */
    if (lora) {
        config.lora_rank = 2;
        config.lora_alpha = 6.0f;
        config.lora_dropout = 0.2f;
        config.lora_targets = RG_LORA_BIT(RG_LORA_SITE_QKV) | RG_LORA_BIT(RG_LORA_SITE_O) |
                              RG_LORA_BIT(RG_LORA_SITE_FC) | RG_LORA_BIT(RG_LORA_SITE_FC2);
    }
    model_case c[2];
    c[0].m = c[1].m = NULL;
    float loss[2];
    for (int r = 0; r < 2; r++) {
        if (!RG_CHECK_STATUS(rg_model_init(&c[r].m, &config), RG_OK))
            goto done;
        c[r].m->all_rows = r;
        spread_parameters(c[r].m, 23);
        for (int i = 0; lora && i < c[r].m->table.count; i++) { /* a fresh B is 0: give it values */
            const rg_param_info *info = &c[r].m->table.tensors[i];
            if (strstr(info->name, ".lora.") != NULL && info->name[strlen(info->name) - 1] == 'B')
                for (size_t j = 0; j < info->numel; j++)
                    c[r].m->params[info->offset + j] = rg_rng_uniform(29 + (uint64_t)i, j) - 0.5f;
        }
        case_fill(&c[r], family);
        RG_CHECK_STATUS(rg_model_set_trainable(c[r].m, k, RG_HEAD_POLICY_TRAIN), RG_OK);
        rg_model_zero_grad(c[r].m);
        RG_CHECK_STATUS(rg_model_forward(c[r].m, c[r].tokens, c[r].mask, c[r].types_or_null, c[r].targets, B_, T_,
                                         1, 9, &loss[r]), RG_OK);
        RG_CHECK_EQ(c[r].m->head_rows, !r);
        RG_CHECK_STATUS(rg_model_backward(c[r].m, 1.0f), RG_OK);
    }
    rg_model *rows = c[0].m, *all = c[1].m;
    RG_CHECK_CLOSE(loss[0], loss[1], 1e-5 * (1.0 + fabs(loss[1])));
    int compared = 0;
    double worst = 0.0;
    for (int i = 0; i < rows->table.count; i++) {
        const rg_param_info *info = &rows->table.tensors[i];
        if (!info->trainable)
            continue;
        const size_t at = rg_param_grad_offset(&rows->table, info); /* adapters: a compact block */
        const float *a = rows->grads + at, *b = all->grads + at;
        double scale = 1e-3;
        for (size_t j = 0; j < info->numel; j++)
            scale = fmax(scale, fabs(b[j]));
        for (size_t j = 0; j < info->numel; j++)
            worst = fmax(worst, fabs(a[j] - b[j]) / scale);
        compared++;
    }
    if (!RG_CHECK(worst < 1e-5))
        rg_test_check(0, __FILE__, __LINE__, "family %d pre_norm %d k %d: gradients differ by %g", family,
                      pre_norm, k, worst);
    RG_CHECK(compared >= (lora ? 20 : k == 1 ? 10 : 16));
    /* no targets: the logits */
    float logits[2][B_ * 3];
    for (int r = 0; r < 2; r++) {
        RG_CHECK_STATUS(rg_model_forward(c[r].m, c[r].tokens, c[r].mask, c[r].types_or_null, NULL, B_, T_, 0, 9,
                                         NULL), RG_OK);
        RG_CHECK_EQ(c[r].m->head_rows, !r);
        int n_rows = 0, n_cols = 0;
        const float *out = rg_model_logits(c[r].m, &n_rows, &n_cols);
        if (!RG_CHECK(out != NULL && n_rows == B_ && n_cols == 3))
            goto done;
        memcpy(logits[r], out, sizeof(logits[r]));
    }
    for (int i = 0; i < B_ * 3; i++)
        RG_CHECK_CLOSE(logits[0][i], logits[1][i], 1e-5 * (1.0 + fabs(logits[1][i])));
done:
    rg_model_free(c[0].m);
    rg_model_free(c[1].m);
}

void test_model_classifier_last_block_computes_the_head_rows(void)
{
    for (int k = 1; k <= 3; k++) {
        head_rows_case(FAMILY_DISTILBERT, 0, k, 0);
        head_rows_case(FAMILY_BERT, 0, k, 0);
        head_rows_case(FAMILY_BERT, 1, k, 0);
    }
    head_rows_case(FAMILY_DISTILBERT, 0, -1, 0);
    head_rows_case(FAMILY_DISTILBERT, 0, -1, 1); /* adapters: every block's adapters train */
    head_rows_case(FAMILY_BERT, 1, -1, 1);
    /* only the head trains: the last block is the frozen part's end, kept whole */
    rg_model_config config = tiny_config(FAMILY_DISTILBERT);
    model_case c;
    if (!RG_CHECK_STATUS(rg_model_init(&c.m, &config), RG_OK))
        return;
    case_fill(&c, FAMILY_DISTILBERT);
    RG_CHECK_STATUS(rg_model_set_trainable(c.m, 0, RG_HEAD_POLICY_TRAIN), RG_OK);
    float loss;
    RG_CHECK_STATUS(rg_model_forward(c.m, c.tokens, c.mask, NULL, c.targets, B_, T_, 1, 9, &loss), RG_OK);
    RG_CHECK_EQ(c.m->head_rows, 0);
    RG_CHECK(rg_model_frozen_output(c.m) != NULL);
    rg_model_free(c.m);
}

/* ---- the busy flag ---- */

void test_model_busy_flag_refuses_a_second_holder(void)
{
    rg_model_config config = tiny_config(FAMILY_GPT2);
    rg_model *m;
    if (!RG_CHECK_STATUS(rg_model_init(&m, &config), RG_OK))
        return;
    RG_CHECK_STATUS(rg_model_try_acquire(m), RG_OK);
    RG_CHECK_STATUS(rg_model_try_acquire(m), RG_ERR_STATE);
    rg_model_release(m);
    RG_CHECK_STATUS(rg_model_try_acquire(m), RG_OK);
    rg_model_release(m);
    RG_CHECK_STATUS(rg_model_try_acquire(NULL), RG_ERR_INVALID_ARG);
    /* threads racing for it: never two holders at once */
    long entered = 0, refused = 0;
    int inside = 0, overlap = 0;
#pragma omp parallel num_threads(4) reduction(+ : entered, refused)
    for (int i = 0; i < 2000; i++) {
        if (rg_model_try_acquire(m) != RG_OK) {
            refused++;
            continue;
        }
        int now;
#pragma omp atomic capture
        now = ++inside;
        if (now != 1) {
#pragma omp atomic write
            overlap = 1;
        }
#pragma omp atomic
        inside--;
        entered++;
        rg_model_release(m);
    }
    RG_CHECK_EQ(overlap, 0);
    RG_CHECK(entered > 0);
    RG_CHECK_EQ(atomic_load(&m->busy), 0);
    rg_model_free(m);
}

void test_model_cuda_table_is_absent_or_complete(void)
{
    const rg_ops_table *cuda = rg_cuda_ops_table();
    RG_CHECK(cuda == NULL || rg_ops_table_complete(cuda));
}

/* An interrupt stops a long prefill between layers and leaves the cache as
 * it was: the same call afterwards gives the logits of an uninterrupted run. */
void test_model_cache_prefill_is_interruptible(void)
{
    rg_model_config config = tiny_config(FAMILY_LLAMA);
    rg_model *m;
    if (!RG_CHECK_STATUS(rg_model_init(&m, &config), RG_OK))
        return;
    const int32_t prompt[2 * 4] = {1, 2, 3, 4, 0, 5, 6, 7}, mask[2 * 4] = {1, 1, 1, 1, 0, 1, 1, 1};
    float first[2 * 23], again[2 * 23];
    RG_CHECK_STATUS(rg_model_cache_reset(m, 2, 6), RG_OK);
    RG_CHECK_STATUS(rg_model_cache_forward(m, prompt, mask, 4, first), RG_OK);
    RG_CHECK_STATUS(rg_model_cache_reset(m, 2, 6), RG_OK);
    rg_interrupt_request();
    RG_CHECK_STATUS(rg_model_cache_forward(m, prompt, mask, 4, again), RG_ERR_INTERRUPTED);
    rg_interrupt_clear();
    int B, max_T, filled;
    rg_model_cache_info(m, &B, &max_T, &filled);
    RG_CHECK_EQ(filled, 0);
    RG_CHECK_STATUS(rg_model_cache_forward(m, prompt, mask, 4, again), RG_OK);
    RG_CHECK(memcmp(first, again, sizeof(first)) == 0);
    rg_model_free(m);
}

/* Loaders refuse NaN/inf weights by tensor name (issue #11). */
void test_model_check_finite_names_the_tensor(void)
{
    rg_model_config config = tiny_config(FAMILY_BERT);
    rg_model *m;
    if (!RG_CHECK_STATUS(rg_model_init(&m, &config), RG_OK))
        return;
    int bad = 7;
    RG_CHECK_STATUS(rg_model_check_finite(m, &bad), RG_OK);
    RG_CHECK_EQ(bad, -1);
    const rg_param_info *fc = rg_model_find_param(m, "h.1.fc.b");
    const rg_param_info *wtt = rg_model_find_param(m, "wtt");
    if (RG_CHECK(fc != NULL && wtt != NULL)) {
        m->params[fc->offset + fc->numel - 1] = NAN;
        RG_CHECK_STATUS(rg_model_check_finite(m, &bad), RG_ERR_NONFINITE);
        RG_CHECK(bad >= 0 && strcmp(m->table.tensors[bad].name, "h.1.fc.b") == 0);
        m->params[wtt->offset] = -INFINITY; /* an earlier tensor is reported first */
        RG_CHECK_STATUS(rg_model_check_finite(m, NULL), RG_ERR_NONFINITE);
        RG_CHECK_STATUS(rg_model_check_finite(m, &bad), RG_ERR_NONFINITE);
        RG_CHECK(strcmp(m->table.tensors[bad].name, "wtt") == 0);
    }
    RG_CHECK_STATUS(rg_model_check_finite(NULL, &bad), RG_ERR_INVALID_ARG);
    rg_model_free(m);
}

/* A blank model has the same table and zero parameters; the default one is
 * not all zero (so the two really differ). */
void test_model_init_blank_is_zero(void)
{
    rg_model_config c = tiny_config(FAMILY_GPT2);
    rg_model *blank = NULL, *drawn = NULL;
    if (!RG_CHECK(rg_model_init_blank(&blank, &c) == RG_OK) || !RG_CHECK(rg_model_init(&drawn, &c) == RG_OK)) {
        rg_model_free(blank);
        rg_model_free(drawn);
        return;
    }
    RG_CHECK(blank->table.total == drawn->table.total);
    size_t blank_nonzero = 0, drawn_nonzero = 0;
    for (size_t i = 0; i < blank->table.total; i++) {
        blank_nonzero += blank->params[i] != 0.0f;
        drawn_nonzero += drawn->params[i] != 0.0f;
    }
    RG_CHECK(blank_nonzero == 0);
    RG_CHECK(drawn_nonzero > blank->table.total / 2);
    rg_model_free(blank);
    rg_model_free(drawn);
}
