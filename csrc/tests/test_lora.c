/*
 * test_lora.c - low-rank adapters (rg_model.h, rg_model_config.lora_*) on tiny
 * models of each family:
 *   - the loss gradient of every adapter element (and of the classifier's
 *     output layer) against central finite differences, with dropout on
 *     (adapter dropout included: its masks are replayed by seed);
 *   - the base weights are frozen and get no gradient memory: the gradient
 *     block holds only the adapters (+ cls.out), and AdamW steps leave every
 *     base weight bit-identical;
 *   - merge gives the unmerged forward's logits; unmerge restores the base;
 *   - the key/value-cache decode path applies the adapters;
 *   - config checks, and set_trainable with adapters.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rg_model.h"
#include "rg_optim.h"
#include "rg_rng.h"
#include "rg_test.h"

enum { LORA_GPT2 = 0, LORA_LLAMA = 1, LORA_BERT = 2, LORA_DISTILBERT = 3 };

#define LB 3
#define LT 6

static int lora_is_encoder(int family) { return family == LORA_BERT || family == LORA_DISTILBERT; }

/* The families' tiny shapes with the adapters PEFT would put on every
 * attention and MLP projection of each. */
static rg_model_config lora_config(int family, int rank)
{
    rg_model_config c;
    memset(&c, 0, sizeof(c));
    c.vocab_size = 19;
    c.n_positions = 12;
    c.n_layer = 2;
    c.n_head = 2;
    c.n_kv_head = 2;
    c.head_dim = 4;
    c.n_embd = 8;
    c.n_inner = 12;
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
    c.lora_rank = rank;
    c.lora_alpha = 6.0f;
    c.lora_dropout = 0.1f;
    /* GPT-2: c_attn, attn.c_proj, c_fc, mlp.c_proj */
    c.lora_targets = RG_LORA_BIT(RG_LORA_SITE_QKV) | RG_LORA_BIT(RG_LORA_SITE_O) | RG_LORA_BIT(RG_LORA_SITE_FC) |
                     RG_LORA_BIT(RG_LORA_SITE_FC2);
    const int qkv = RG_LORA_BIT(RG_LORA_SITE_Q) | RG_LORA_BIT(RG_LORA_SITE_K) | RG_LORA_BIT(RG_LORA_SITE_V);
    if (family == LORA_LLAMA) {
        c.n_head = 4;
        c.n_kv_head = 2;
        c.head_dim = 2;
        c.norm = RG_NORM_RMSNORM;
        c.position = RG_POSITION_ROPE;
        c.rope_theta = 100.0f;
        c.activation = RG_ACTIVATION_SWIGLU;
        c.bias = 0;
        c.tie_word_embeddings = 0;
        c.embd_pdrop = c.resid_pdrop = c.attn_pdrop = 0.0f;
        c.lora_targets = qkv | RG_LORA_BIT(RG_LORA_SITE_O) | RG_LORA_BIT(RG_LORA_SITE_GATE) |
                         RG_LORA_BIT(RG_LORA_SITE_UP) | RG_LORA_BIT(RG_LORA_SITE_FC2);
    } else if (lora_is_encoder(family)) {
        c.type_vocab_size = family == LORA_BERT ? 2 : 0;
        c.pre_norm = 0;
        c.embed_norm = 1;
        c.final_norm = 0;
        c.activation = RG_ACTIVATION_GELU_ERF;
        c.causal = 0;
        c.head = family == LORA_BERT ? RG_HEAD_CLS_BERT : RG_HEAD_CLS_DISTILBERT;
        c.tie_word_embeddings = 0;
        c.num_labels = 3;
        c.cls_pdrop = 0.2f;
        c.lora_targets = qkv | RG_LORA_BIT(RG_LORA_SITE_O) | RG_LORA_BIT(RG_LORA_SITE_FC) |
                         RG_LORA_BIT(RG_LORA_SITE_FC2);
    }
    return c;
}

typedef struct lora_case {
    rg_model *m;
    int32_t tokens[LB * LT], mask[LB * LT], types[LB * LT], targets[LB * LT];
    const int32_t *types_or_null;
    int family;
} lora_case;

static int lora_case_init(lora_case *c, int family, int rank)
{
    rg_model_config config = lora_config(family, rank);
    c->family = family;
    if (!RG_CHECK_STATUS(rg_model_init(&c->m, &config), RG_OK))
        return 0;
    for (int i = 0; i < LB * LT; i++) {
        const int t = i % LT, b = i / LT;
        c->tokens[i] = (int32_t)(rg_rng_bits(3, (uint64_t)i) % 19);
        c->mask[i] = lora_is_encoder(family) ? t < (b == 1 ? 4 : LT) : t >= (b == 1 ? 2 : 0);
        c->types[i] = t >= 3;
        c->targets[i] = c->mask[i] ? c->tokens[i] : -100;
    }
    if (lora_is_encoder(family))
        for (int b = 0; b < LB; b++)
            c->targets[b] = b;
    c->types_or_null = family == LORA_BERT ? c->types : NULL;
    return 1;
}

static int is_adapter_name(const char *name) { return strstr(name, ".lora.") != NULL; }

/* Everything scaled away from the linear regime; B non-zero (a fresh B is 0,
 * which would leave A's gradient 0 and merging trivial). */
static void lora_spread(rg_model *m, uint64_t seed)
{
    for (int i = 0; i < m->table.count; i++) {
        const rg_param_info *info = &m->table.tensors[i];
        float *p = m->params + info->offset;
        const int is_b = strstr(info->name, ".lora.") != NULL && info->name[strlen(info->name) - 1] == 'B';
        for (size_t k = 0; k < info->numel; k++) {
            const float u = rg_rng_uniform(seed + (uint64_t)i, k) - 0.5f;
            if (is_b)
                p[k] = 1.2f * u;
            else if (is_adapter_name(info->name))
                p[k] = p[k] * 2.0f;
            else
                p[k] = info->ndim == 2 ? p[k] * 10.0f : p[k] + 0.6f * u;
        }
    }
}

static double lora_loss(lora_case *c)
{
    float loss = 0.0f;
    rg_status s = rg_model_forward(c->m, c->tokens, c->mask, c->types_or_null, c->targets, LB, LT, 1, 42, &loss);
    return s == RG_OK ? (double)loss : NAN;
}

static int is_adapter(const rg_param_info *info) { return strstr(info->name, ".lora.") != NULL; }

/* Central differences of every element of tensor `info` against its
 * analytic gradient (numel,). */
static void lora_fd_check(lora_case *c, const rg_param_info *info, const float *analytic)
{
    /* Llama's rotary/SwiGLU block curves more sharply: a smaller step */
    const float eps = c->family == LORA_LLAMA ? 3e-4f : 3e-3f;
    float *p = c->m->params + info->offset;
    double diff2 = 0.0, scale2 = 0.0, worst = 0.0;
    /* RG_TEST_QUICK=1 (valgrind): three elements per tensor */
    const char *quick = getenv("RG_TEST_QUICK");
    const size_t step = quick != NULL && quick[0] == '1' && info->numel > 3 ? info->numel / 3 : 1;
    for (size_t k = 0; k < info->numel; k += step) {
        const float keep = p[k];
        p[k] = keep + eps;
        const double up = lora_loss(c);
        p[k] = keep - eps;
        const double down = lora_loss(c);
        p[k] = keep;
        const double numeric = (up - down) / (2.0 * eps), d = fabs(numeric - analytic[k]);
        diff2 += d * d;
        scale2 += fmax(numeric * numeric, (double)analytic[k] * analytic[k]);
        const double excess = d - (2e-3 + 5e-2 * fabs(numeric));
        if (excess > worst || isnan(d))
            worst = isnan(d) ? INFINITY : excess;
    }
    const double rel = sqrt(diff2) / (sqrt(scale2) + 1e-6);
    rg_test_check(rel < 2e-2 && worst <= 0.0, __FILE__, __LINE__, "%s: relative error %.3g, |g| %.3g, worst excess %.3g",
                  info->name, rel, sqrt(scale2), worst);
}

static void lora_gradients(int family)
{
    lora_case c;
    if (!lora_case_init(&c, family, 2))
        return;
    rg_model *m = c.m;
    lora_spread(m, 11);
    RG_CHECK(m->table.compact_grads == 1);
    size_t slots = 0;
    int n_adapters = 0;
    for (int i = 0; i < m->table.count; i++) {
        const rg_param_info *info = &m->table.tensors[i];
        const int head = strncmp(info->name, "cls.out", 7) == 0 ||
                         (family == LORA_DISTILBERT && strncmp(info->name, "cls.pre", 7) == 0);
        /* only adapters and cls.out train, and only they have gradient memory */
        RG_CHECK_EQ(info->trainable, is_adapter(info) || head);
        if (is_adapter(info) || head) {
            RG_CHECK_EQ(info->grad_offset, slots);
            slots += info->numel;
        } else {
            RG_CHECK(info->grad_offset == SIZE_MAX);
        }
        n_adapters += is_adapter(info);
    }
    RG_CHECK_EQ(m->grads_total, slots);
    RG_CHECK(slots < m->table.total / 2);
    const int per_block = family == LORA_GPT2 ? 4 : family == LORA_LLAMA ? 7 : 6;
    RG_CHECK_EQ(n_adapters, 2 * per_block * m->config.n_layer);

    float loss;
    rg_model_zero_grad(m);
    RG_CHECK_STATUS(rg_model_forward(m, c.tokens, c.mask, c.types_or_null, c.targets, LB, LT, 1, 42, &loss), RG_OK);
    RG_CHECK(isfinite(loss) && loss > 0.0f);
    RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_OK);
    float *analytic = malloc(m->grads_total * sizeof(float));
    if (!RG_CHECK(analytic != NULL)) {
        rg_model_free(m);
        return;
    }
    memcpy(analytic, m->grads, m->grads_total * sizeof(float));
    for (int i = 0; i < m->table.count; i++) {
        const rg_param_info *info = &m->table.tensors[i];
        if (!info->trainable)
            continue;
        double norm = 0.0;
        for (size_t k = 0; k < info->numel; k++)
            norm += fabs(analytic[info->grad_offset + k]);
        if (!RG_CHECK(norm > 0.0))
            rg_test_check(0, __FILE__, __LINE__, "%s has a zero gradient", info->name);
        lora_fd_check(&c, info, analytic + info->grad_offset);
    }
    free(analytic);
    rg_model_free(m);
}

void test_lora_gradients_gpt2(void) { lora_gradients(LORA_GPT2); }
void test_lora_gradients_llama(void) { lora_gradients(LORA_LLAMA); }
void test_lora_gradients_bert(void) { lora_gradients(LORA_BERT); }
void test_lora_gradients_distilbert(void) { lora_gradients(LORA_DISTILBERT); }

/* A fresh adapter changes nothing (B = 0): the logits equal those of the
 * same base without adapters; A is kaiming-uniform within 1/sqrt(in). */
void test_lora_fresh_adapter_is_identity(void)
{
    for (int family = 0; family < 4; family++) {
        rg_model_config with = lora_config(family, 4), without = with;
        without.lora_rank = 0;
        rg_model *a = NULL, *b = NULL;
        if (!RG_CHECK_STATUS(rg_model_init(&a, &with), RG_OK) || !RG_CHECK_STATUS(rg_model_init(&b, &without), RG_OK)) {
            rg_model_free(a);
            rg_model_free(b);
            return;
        }
        /* the base layout is the prefix of the adapted one */
        RG_CHECK_EQ(b->table.count < a->table.count, 1);
        for (int i = 0; i < b->table.count; i++) {
            RG_CHECK(strcmp(a->table.tensors[i].name, b->table.tensors[i].name) == 0);
            RG_CHECK_EQ(a->table.tensors[i].offset, b->table.tensors[i].offset);
        }
        RG_CHECK(memcmp(a->params, b->params, b->table.total * sizeof(float)) == 0);
        for (int i = b->table.count; i < a->table.count; i++) {
            const rg_param_info *info = &a->table.tensors[i];
            const float *p = a->params + info->offset;
            const int is_b = info->name[strlen(info->name) - 1] == 'B';
            const float bound = 1.0f / sqrtf((float)info->shape[1]);
            double absmax = 0.0;
            for (size_t k = 0; k < info->numel; k++)
                absmax = fmax(absmax, fabs(p[k]));
            if (is_b)
                RG_CHECK(absmax == 0.0);
            else
                RG_CHECK(absmax > 0.3 * bound && absmax <= bound);
        }
        int32_t tokens[LB * LT];
        for (int i = 0; i < LB * LT; i++)
            tokens[i] = (int32_t)(i * 7 % 19);
        float la = 0, lb = 0;
        RG_CHECK_STATUS(rg_model_forward(a, tokens, NULL, NULL, NULL, LB, LT, 0, 0, NULL), RG_OK);
        RG_CHECK_STATUS(rg_model_forward(b, tokens, NULL, NULL, NULL, LB, LT, 0, 0, NULL), RG_OK);
        int ra, ca, rb, cb;
        const float *xa = rg_model_logits(a, &ra, &ca), *xb = rg_model_logits(b, &rb, &cb);
        RG_CHECK(xa != NULL && xb != NULL && ra == rb && ca == cb);
        if (xa != NULL && xb != NULL)
            RG_CHECK(memcmp(xa, xb, (size_t)ra * ca * sizeof(float)) == 0);
        (void)la;
        (void)lb;
        rg_model_free(a);
        rg_model_free(b);
    }
}

/* Merging gives the logits of the unmerged model; unmerging restores the
 * base weights (to rounding); a merged model refuses to train. */
void test_lora_merge_matches_unmerged(void)
{
    for (int family = 0; family < 4; family++) {
        lora_case c;
        if (!lora_case_init(&c, family, 3))
            return;
        rg_model *m = c.m;
        lora_spread(m, 21);
        const size_t total = m->table.total;
        float *base = malloc(total * sizeof(float));
        float *before = malloc((size_t)LB * LT * 32 * sizeof(float));
        if (!RG_CHECK(base != NULL && before != NULL))
            return;
        memcpy(base, m->params, total * sizeof(float));
        RG_CHECK_STATUS(rg_model_forward(m, c.tokens, c.mask, c.types_or_null, NULL, LB, LT, 0, 0, NULL), RG_OK);
        int rows, cols;
        const float *logits = rg_model_logits(m, &rows, &cols);
        const size_t n = (size_t)rows * cols;
        memcpy(before, logits, n * sizeof(float));
        RG_CHECK_STATUS(rg_model_lora_merge(m), RG_OK);
        RG_CHECK_STATUS(rg_model_lora_merge(m), RG_ERR_STATE);
        RG_CHECK(memcmp(base, m->params, total * sizeof(float)) != 0); /* the base weights changed */
        RG_CHECK_STATUS(rg_model_forward(m, c.tokens, c.mask, c.types_or_null, NULL, LB, LT, 0, 0, NULL), RG_OK);
        logits = rg_model_logits(m, &rows, &cols);
        double worst = 0.0, scale = 0.0;
        for (size_t k = 0; k < n; k++) {
            worst = fmax(worst, fabs(logits[k] - before[k]));
            scale = fmax(scale, fabs(before[k]));
        }
        if (!RG_CHECK(worst <= 1e-4 * (1.0 + scale)))
            rg_test_check(0, __FILE__, __LINE__, "family %d: merged logits differ by %.3g (scale %.3g)", family, worst,
                          scale);
        float loss;
        RG_CHECK_STATUS(rg_model_forward(m, c.tokens, c.mask, c.types_or_null, c.targets, LB, LT, 1, 1, &loss),
                        RG_ERR_STATE);
        RG_CHECK_STATUS(rg_model_lora_unmerge(m), RG_OK);
        RG_CHECK_STATUS(rg_model_lora_unmerge(m), RG_ERR_STATE);
        double drift = 0.0;
        for (size_t k = 0; k < total; k++)
            drift = fmax(drift, fabs(m->params[k] - base[k]) / (1.0 + fabs(base[k])));
        RG_CHECK(drift < 1e-5);
        RG_CHECK_STATUS(rg_model_forward(m, c.tokens, c.mask, c.types_or_null, c.targets, LB, LT, 1, 1, &loss), RG_OK);
        free(base);
        free(before);
        rg_model_free(m);
    }
    rg_model_config plain = lora_config(LORA_GPT2, 0);
    rg_model *m = NULL;
    if (RG_CHECK_STATUS(rg_model_init(&m, &plain), RG_OK)) {
        RG_CHECK_STATUS(rg_model_lora_merge(m), RG_ERR_UNSUPPORTED);
        RG_CHECK(m->table.compact_grads == 0 && m->lora_index == NULL);
        rg_model_free(m);
    }
}

/* AdamW over a LoRA model: its state covers only the trainable tensors, and
 * after steps every base weight is bit-identical while the adapters moved. */
void test_lora_frozen_base_untouched(void)
{
    for (int family = 0; family < 4; family++) {
        lora_case c;
        if (!lora_case_init(&c, family, 2))
            return;
        rg_model *m = c.m;
        lora_spread(m, 31);
        float *before = malloc(m->table.total * sizeof(float));
        if (!RG_CHECK(before != NULL))
            return;
        memcpy(before, m->params, m->table.total * sizeof(float));
        rg_adamw opt;
        rg_adamw_config ac = {.lr = 1e-2, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.1,
                              .max_grad_norm = 1.0, .schedule = RG_SCHEDULE_CONSTANT};
        if (!RG_CHECK_STATUS(rg_adamw_init(&opt, &ac, &m->table), RG_OK))
            return;
        RG_CHECK_EQ(opt.state_numel, m->grads_total);
        for (int step = 0; step < 3; step++) {
            float loss;
            RG_CHECK_STATUS(rg_model_forward(m, c.tokens, c.mask, c.types_or_null, c.targets, LB, LT, 1, (uint64_t)step,
                                             &loss), RG_OK);
            RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_OK);
            RG_CHECK_STATUS(rg_adamw_step(&opt, m->params, m->grads, NULL, NULL), RG_OK);
        }
        for (int i = 0; i < m->table.count; i++) {
            const rg_param_info *info = &m->table.tensors[i];
            const int same = memcmp(m->params + info->offset, before + info->offset, info->numel * sizeof(float)) == 0;
            if (!RG_CHECK_EQ(same, !info->trainable))
                rg_test_check(0, __FILE__, __LINE__, "%s: %s", info->name, same ? "did not move" : "moved while frozen");
        }
        rg_adamw_free(&opt);
        free(before);
        rg_model_free(m);
    }
}

/* The cached decode path (prefill, then one token at a time) applies the
 * adapters: its logits match the full forward's last column. */
void test_lora_cache_decode_matches_forward(void)
{
    const int families[2] = {LORA_GPT2, LORA_LLAMA};
    for (int f = 0; f < 2; f++) {
        lora_case c;
        if (!lora_case_init(&c, families[f], 2))
            return;
        rg_model *m = c.m;
        lora_spread(m, 41);
        const int V = m->config.vocab_size, prefill = 3;
        float step_logits[LB * 19];
        RG_CHECK_STATUS(rg_model_cache_reset(m, LB, LT), RG_OK);
        int32_t cols[LB * LT], mcols[LB * LT];
        for (int b = 0; b < LB; b++)
            for (int t = 0; t < prefill; t++) {
                cols[b * prefill + t] = c.tokens[b * LT + t];
                mcols[b * prefill + t] = c.mask[b * LT + t];
            }
        RG_CHECK_STATUS(rg_model_cache_forward(m, cols, mcols, prefill, step_logits), RG_OK);
        for (int t = prefill; t < LT; t++) {
            int32_t tok[LB], msk[LB];
            for (int b = 0; b < LB; b++) {
                tok[b] = c.tokens[b * LT + t];
                msk[b] = c.mask[b * LT + t];
            }
            RG_CHECK_STATUS(rg_model_cache_forward(m, tok, msk, 1, step_logits), RG_OK);
        }
        RG_CHECK_STATUS(rg_model_forward(m, c.tokens, c.mask, NULL, NULL, LB, LT, 0, 0, NULL), RG_OK);
        int rows, ncols;
        const float *full = rg_model_logits(m, &rows, &ncols);
        double worst = 0.0;
        for (int b = 0; b < LB; b++)
            for (int v = 0; v < V; v++)
                worst = fmax(worst, fabs(full[((size_t)b * LT + LT - 1) * V + v] - step_logits[b * V + v]));
        if (!RG_CHECK(worst < 1e-4))
            rg_test_check(0, __FILE__, __LINE__, "family %d: cached logits differ by %.3g", families[f], worst);
        /* and the adapters matter: zeroing B changes the cached logits */
        float again[LB * 19];
        for (int i = 0; i < m->table.count; i++)
            if (is_adapter(&m->table.tensors[i]))
                memset(m->params + m->table.tensors[i].offset, 0, m->table.tensors[i].numel * sizeof(float));
        RG_CHECK_STATUS(rg_model_cache_reset(m, LB, LT), RG_OK);
        RG_CHECK_STATUS(rg_model_cache_forward(m, c.tokens, c.mask, LT, again), RG_OK);
        RG_CHECK(memcmp(again, step_logits, sizeof(again)) != 0);
        rg_model_free(m);
    }
}

/* Refused configurations, and set_trainable with adapters. */
void test_lora_config_and_trainable(void)
{
    char msg[200];
    rg_model_config c = lora_config(LORA_GPT2, 2);
    RG_CHECK_STATUS(rg_model_config_check(&c, msg, sizeof(msg)), RG_OK);
    rg_model_config bad = c;
    bad.lora_targets = 0;
    RG_CHECK_STATUS(rg_model_config_check(&bad, msg, sizeof(msg)), RG_ERR_INVALID_ARG);
    bad = c;
    bad.lora_targets |= RG_LORA_BIT(RG_LORA_SITE_Q);
    RG_CHECK_STATUS(rg_model_config_check(&bad, msg, sizeof(msg)), RG_ERR_INVALID_ARG);
    RG_CHECK(strstr(msg, "qkv") != NULL);
    bad = c;
    bad.lora_targets = RG_LORA_BIT(RG_LORA_SITE_GATE);
    RG_CHECK_STATUS(rg_model_config_check(&bad, msg, sizeof(msg)), RG_ERR_INVALID_ARG);
    bad = c;
    bad.lora_targets = 1 << 12;
    RG_CHECK_STATUS(rg_model_config_check(&bad, msg, sizeof(msg)), RG_ERR_INVALID_ARG);
    bad = c;
    bad.lora_dropout = 1.0f;
    RG_CHECK_STATUS(rg_model_config_check(&bad, msg, sizeof(msg)), RG_ERR_INVALID_ARG);
    bad = c;
    bad.lora_rank = -1;
    RG_CHECK_STATUS(rg_model_config_check(&bad, msg, sizeof(msg)), RG_ERR_INVALID_ARG);
    bad = c;
    bad.lora_rank = 0;
    bad.lora_targets = 0; /* no adapters: the other fields do not matter */
    RG_CHECK_STATUS(rg_model_config_check(&bad, msg, sizeof(msg)), RG_OK);

    const char *weight;
    int row0, rows, in;
    rg_model_config llama = lora_config(LORA_LLAMA, 2);
    RG_CHECK_STATUS(rg_model_lora_site(&llama, RG_LORA_SITE_V, &weight, &row0, &rows, &in), RG_OK);
    RG_CHECK(strcmp(weight, "qkv.w") == 0 && row0 == 12 && rows == 4 && in == 8);
    RG_CHECK_STATUS(rg_model_lora_site(&llama, RG_LORA_SITE_UP, &weight, &row0, &rows, &in), RG_OK);
    RG_CHECK(strcmp(weight, "fc.w") == 0 && row0 == 12 && rows == 12 && in == 8);
    RG_CHECK_STATUS(rg_model_lora_site(&c, RG_LORA_SITE_GATE, &weight, &row0, &rows, &in), RG_ERR_INVALID_ARG);

    lora_case k;
    if (!lora_case_init(&k, LORA_DISTILBERT, 2))
        return;
    rg_model *m = k.m;
    lora_spread(m, 51);
    RG_CHECK_STATUS(rg_model_set_trainable(m, 1, RG_HEAD_POLICY_FROZEN), RG_OK);
    for (int i = 0; i < m->table.count; i++) {
        const rg_param_info *info = &m->table.tensors[i];
        RG_CHECK_EQ(info->trainable, is_adapter(info) && info->layer == 1);
    }
    float loss;
    RG_CHECK_STATUS(rg_model_forward(m, k.tokens, k.mask, NULL, k.targets, LB, LT, 1, 5, &loss), RG_OK);
    RG_CHECK_STATUS(rg_model_backward(m, 1.0f), RG_OK);
    for (int i = 0; i < m->table.count; i++) {
        const rg_param_info *info = &m->table.tensors[i];
        if (info->grad_offset == SIZE_MAX)
            continue;
        double norm = 0.0;
        for (size_t j = 0; j < info->numel; j++)
            norm += fabs(m->grads[info->grad_offset + j]);
        RG_CHECK_EQ(norm > 0.0, info->trainable != 0);
    }
    RG_CHECK_STATUS(rg_model_set_trainable(m, -1, RG_HEAD_POLICY_UNTIE), RG_ERR_UNSUPPORTED);
    RG_CHECK_STATUS(rg_model_set_trainable(m, -1, RG_HEAD_POLICY_TRAIN), RG_OK);
    for (int i = 0; i < m->table.count; i++) {
        const rg_param_info *info = &m->table.tensors[i];
        RG_CHECK_EQ(info->trainable, is_adapter(info) || strncmp(info->name, "cls.", 4) == 0); /* DistilBERT */
    }
    rg_model_free(m);
}
