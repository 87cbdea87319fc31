/*
 * rg_model.c - the generic transformer (see rg_model.h): parameter table,
 * activation table, forward, backward, freezing and cached generation.
 */
#include "rg_model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rg_ops.h"
#include "rg_rng.h"

/* Tensors outside the blocks; their table indices live in model->global_index. */
enum {
    G_WTE, G_WPE, G_WTT, G_EMB_LN_W, G_EMB_LN_B, G_LNF_W, G_LNF_B, G_LM_HEAD,
    G_CLS_PRE_W, G_CLS_PRE_B, G_CLS_OUT_W, G_CLS_OUT_B, G_COUNT
};
/* Tensors of one block; their table indices live in model->layer_index[l * L_COUNT + i]. */
enum {
    L_LN1_W, L_LN1_B, L_QKV_W, L_QKV_B, L_PROJ_W, L_PROJ_B, L_LN2_W, L_LN2_B,
    L_FC_W, L_FC_B, L_FC2_W, L_FC2_B, L_COUNT
};

/* Dropout sites: each gets its own stream, so masks never repeat across sites. */
#define SITE_EMBEDDING 1u
#define SITE_CLASSIFIER 2u
#define SITE_LAYER(l, kind) (16u + 4u * (uint64_t)(l) + (kind))
#define KIND_ATTN_PROBS 0u
#define KIND_ATTN_RESID 1u
#define KIND_MLP_RESID 2u
/* each adapter's input dropout: a range of its own, past every SITE_LAYER */
#define SITE_LORA(l, site) (((uint64_t)1 << 40) + 16u * (uint64_t)(l) + (uint64_t)(site))

static const char *const lora_site_names[RG_LORA_SITES] = {"q", "k", "v", "qkv", "o", "fc", "gate", "up", "fc2"};

struct rg_kv_cache {
    int B, max_T, filled;  /* filled: columns written so far (same for every row) */
    float *k, *v;          /* (L, B, NKV, max_T, HS) keys (rotated when rope) and values */
    int32_t *key_mask;     /* (B, max_T) 1 = real token */
    int32_t *n_real;       /* (B,) real tokens so far: the next token's position */
};

/* ------------------------------------------------------------------------ */
/* config and parameter table                                                */
/* ------------------------------------------------------------------------ */

/* Widths derived from the config. config_check has bounded them by
 * RG_MODEL_MAX_DIM, so once a model exists they fit an int. */
static int64_t qkv_width64(const rg_model_config *c)
{
    return ((int64_t)c->n_head + 2 * (int64_t)c->n_kv_head) * c->head_dim;
}
static int64_t fc_width64(const rg_model_config *c)
{
    return c->activation == RG_ACTIVATION_SWIGLU ? 2 * (int64_t)c->n_inner : c->n_inner;
}
static int qkv_width(const rg_model_config *c) { return (int)qkv_width64(c); }
static int fc_width(const rg_model_config *c) { return (int)fc_width64(c); }
static int is_classifier(const rg_model_config *c) { return c->head != RG_HEAD_LM; }
static int lora_on(const rg_model_config *c) { return c->lora_rank > 0; }

/* Rows of the base weight's output that adapter `site` adds into, and the
 * width of its input (64-bit: also used before the config is checked). */
static int lora_site_shape(const rg_model_config *c, int site, int *linear, int64_t *row0, int64_t *rows,
                           int64_t *in)
{
    const int64_t C = c->n_embd, Q = (int64_t)c->n_head * c->head_dim, KV = (int64_t)c->n_kv_head * c->head_dim;
    const int64_t F = c->n_inner;
    const int swiglu = c->activation == RG_ACTIVATION_SWIGLU;
    *row0 = 0;
    *in = C;
    switch (site) {
    case RG_LORA_SITE_Q: *linear = 0; *rows = Q; break;
    case RG_LORA_SITE_K: *linear = 0; *row0 = Q; *rows = KV; break;
    case RG_LORA_SITE_V: *linear = 0; *row0 = Q + KV; *rows = KV; break;
    case RG_LORA_SITE_QKV: *linear = 0; *rows = Q + 2 * KV; break;
    case RG_LORA_SITE_O: *linear = 1; *rows = C; *in = Q; break;
    case RG_LORA_SITE_FC: *linear = 2; *rows = swiglu ? 2 * F : F; break;
    case RG_LORA_SITE_GATE: *linear = 2; *rows = F; if (!swiglu) return 0; break;
    case RG_LORA_SITE_UP: *linear = 2; *row0 = F; *rows = F; if (!swiglu) return 0; break;
    case RG_LORA_SITE_FC2: *linear = 3; *rows = C; *in = F; break;
    default: return 0;
    }
    return 1;
}

rg_status rg_model_lora_site(const rg_model_config *config, int site, const char **weight,
                             int *row0, int *rows, int *in_width)
{
    static const char *const weights[4] = {"qkv.w", "proj.w", "fc.w", "fc2.w"};
    int linear;
    int64_t r0, n, in;
    if (config == NULL || !lora_site_shape(config, site, &linear, &r0, &n, &in))
        return RG_ERR_INVALID_ARG;
    if (weight != NULL)
        *weight = weights[linear];
    if (row0 != NULL)
        *row0 = (int)r0;
    if (rows != NULL)
        *rows = (int)n;
    if (in_width != NULL)
        *in_width = (int)in;
    return RG_OK;
}

/* Elements of all adapters of one block (config_check bounds each factor). */
static int64_t lora_per_layer(const rg_model_config *c)
{
    if (!lora_on(c))
        return 0;
    int64_t total = 0;
    for (int site = 0; site < RG_LORA_SITES; site++) {
        int linear;
        int64_t row0, rows, in;
        if ((c->lora_targets & RG_LORA_BIT(site)) && lora_site_shape(c, site, &linear, &row0, &rows, &in))
            total += (int64_t)c->lora_rank * (in + rows);
    }
    return total;
}

/* Records why a check failed (when a buffer is given) and returns status. */
static rg_status config_fail(char *message, size_t size, rg_status status, const char *format, ...)
    __attribute__((format(printf, 4, 5)));
static rg_status config_fail(char *message, size_t size, rg_status status, const char *format, ...)
{
    if (message != NULL && size > 0) {
        va_list args;
        va_start(args, format);
        vsnprintf(message, size, format, args);
        va_end(args);
    }
    return status;
}

/* Elements of the parameter block a config lays out (the room to untie a
 * tied head included), or -1 beyond RG_MODEL_MAX_PARAMS. Every factor is
 * already bounded by RG_MODEL_MAX_DIM (2^24), so a product of two fits
 * easily; only the layer count times the per-layer size needs the guard. */
static int64_t config_param_count(const rg_model_config *c)
{
    const int64_t C = c->n_embd, V = c->vocab_size, F = c->n_inner, L = c->n_layer;
    const int64_t QKV = qkv_width64(c), FW = fc_width64(c), AH = (int64_t)c->n_head * c->head_dim;
    const int64_t bias = c->bias != 0;
    const int64_t per_layer = 4 * C + QKV * C + bias * QKV + C * AH + bias * C + FW * C + bias * FW + C * F + bias * C +
                              lora_per_layer(c);
    if (per_layer > RG_MODEL_MAX_PARAMS)
        return -1;
    int64_t total = V * C + (int64_t)c->n_positions * C + (int64_t)c->type_vocab_size * C + 4 * C;
    total += L * per_layer;          /* <= 2^24 * 2^33 */
    total += V * C;                  /* lm_head.w, or the room kept to untie a tied head */
    total += C * C + C + (int64_t)c->num_labels * (C + 1);
    return total > RG_MODEL_MAX_PARAMS ? -1 : total;
}

static rg_status config_check(const rg_model_config *c, char *msg, size_t size)
{
    const struct { const char *name; int value; int min; } dims[] = {
        {"vocab_size", c->vocab_size, 1}, {"n_positions", c->n_positions, 1},
        {"n_layer", c->n_layer, 1},       {"n_head", c->n_head, 1},
        {"n_kv_head", c->n_kv_head, 1},   {"head_dim", c->head_dim, 1},
        {"n_embd", c->n_embd, 1},         {"n_inner", c->n_inner, 1},
        {"type_vocab_size", c->type_vocab_size, 0}, {"num_labels", c->num_labels, 0},
    };
    for (size_t i = 0; i < sizeof(dims) / sizeof(dims[0]); i++) {
        if (dims[i].value < dims[i].min)
            return config_fail(msg, size, RG_ERR_INVALID_ARG, "%s must be >= %d, got %d", dims[i].name,
                               dims[i].min, dims[i].value);
        if (dims[i].value > RG_MODEL_MAX_DIM)
            return config_fail(msg, size, RG_ERR_TOO_LARGE, "%s = %d exceeds the core's limit %lld",
                               dims[i].name, dims[i].value, (long long)RG_MODEL_MAX_DIM);
    }
    if (c->n_head % c->n_kv_head != 0)
        return config_fail(msg, size, RG_ERR_SHAPE, "n_kv_head (%d) must divide n_head (%d)", c->n_kv_head,
                           c->n_head);
    if (c->norm != RG_NORM_LAYERNORM && c->norm != RG_NORM_RMSNORM)
        return config_fail(msg, size, RG_ERR_INVALID_ARG, "unknown norm %d", c->norm);
    if (!(c->norm_eps > 0.0f) || !isfinite(c->norm_eps))
        return config_fail(msg, size, RG_ERR_INVALID_ARG, "norm_eps must be finite and > 0, got %g",
                           (double)c->norm_eps);
    if (c->position != RG_POSITION_LEARNED && c->position != RG_POSITION_ROPE)
        return config_fail(msg, size, RG_ERR_INVALID_ARG, "unknown position kind %d", c->position);
    if (c->position == RG_POSITION_ROPE && (c->head_dim % 2 != 0 || !(c->rope_theta > 0.0f) || !isfinite(c->rope_theta)))
        return config_fail(msg, size, RG_ERR_INVALID_ARG,
                           "rotary positions need an even head_dim (%d) and a finite rope_theta > 0 (%g)",
                           c->head_dim, (double)c->rope_theta);
    if (c->activation < RG_ACTIVATION_GELU_TANH || c->activation > RG_ACTIVATION_SWIGLU)
        return config_fail(msg, size, RG_ERR_INVALID_ARG, "unknown activation %d", c->activation);
    if (c->head < RG_HEAD_LM || c->head > RG_HEAD_CLS_BERT)
        return config_fail(msg, size, RG_ERR_INVALID_ARG, "unknown head %d", c->head);
    if (is_classifier(c) && c->num_labels <= 0)
        return config_fail(msg, size, RG_ERR_INVALID_ARG, "a classification head needs num_labels > 0");
    const float drops[4] = {c->embd_pdrop, c->resid_pdrop, c->attn_pdrop, c->cls_pdrop};
    for (int i = 0; i < 4; i++)
        if (!(drops[i] >= 0.0f && drops[i] < 1.0f))
            return config_fail(msg, size, RG_ERR_INVALID_ARG, "dropout probabilities must lie in [0, 1), got %g",
                               (double)drops[i]);
    /* derived widths: each is a row width or a column count of some op */
    const struct { const char *name; int64_t value; } widths[] = {
        {"(n_head + 2 * n_kv_head) * head_dim", qkv_width64(c)},
        {"n_head * head_dim", (int64_t)c->n_head * c->head_dim},
        {"the MLP input width (2 * n_inner for swiglu)", fc_width64(c)},
    };
    for (size_t i = 0; i < sizeof(widths) / sizeof(widths[0]); i++)
        if (widths[i].value > RG_MODEL_MAX_DIM)
            return config_fail(msg, size, RG_ERR_TOO_LARGE, "%s = %lld exceeds the core's limit %lld",
                               widths[i].name, (long long)widths[i].value, (long long)RG_MODEL_MAX_DIM);
    const int64_t C = c->n_embd;
    const struct { const char *name; int64_t value; } tensors[] = {
        {"wte (vocab_size x n_embd)", (int64_t)c->vocab_size * C},
        {"wpe (n_positions x n_embd)", (int64_t)c->n_positions * C},
        {"qkv.w", qkv_width64(c) * C},
        {"proj.w", (int64_t)c->n_head * c->head_dim * C},
        {"fc.w", fc_width64(c) * C},
        {"fc2.w (n_embd x n_inner)", (int64_t)c->n_inner * C},
    };
    for (size_t i = 0; i < sizeof(tensors) / sizeof(tensors[0]); i++)
        if (tensors[i].value > RG_MODEL_MAX_TENSOR)
            return config_fail(msg, size, RG_ERR_TOO_LARGE, "%s would hold %lld elements, beyond the core's limit %lld",
                               tensors[i].name, (long long)tensors[i].value, (long long)RG_MODEL_MAX_TENSOR);
    if (c->lora_rank < 0 || c->lora_rank > RG_MODEL_MAX_DIM)
        return config_fail(msg, size, RG_ERR_INVALID_ARG, "lora_rank must lie in [0, %lld], got %d",
                           (long long)RG_MODEL_MAX_DIM, c->lora_rank);
    if (lora_on(c)) {
        if ((c->lora_targets & RG_LORA_ALL_BITS) == 0 || (c->lora_targets & ~RG_LORA_ALL_BITS) != 0)
            return config_fail(msg, size, RG_ERR_INVALID_ARG,
                               "lora_targets must be a non-empty set of RG_LORA_BIT(site) bits, got %#x",
                               (unsigned)c->lora_targets);
        const int t = c->lora_targets, qkv_parts = RG_LORA_BIT(RG_LORA_SITE_Q) | RG_LORA_BIT(RG_LORA_SITE_K) |
                                                    RG_LORA_BIT(RG_LORA_SITE_V);
        const int fc_parts = RG_LORA_BIT(RG_LORA_SITE_GATE) | RG_LORA_BIT(RG_LORA_SITE_UP);
        if ((t & RG_LORA_BIT(RG_LORA_SITE_QKV)) && (t & qkv_parts))
            return config_fail(msg, size, RG_ERR_INVALID_ARG, "lora_targets: the fused qkv adapter excludes q, k and v ones");
        if ((t & RG_LORA_BIT(RG_LORA_SITE_FC)) && (t & fc_parts))
            return config_fail(msg, size, RG_ERR_INVALID_ARG, "lora_targets: the fused fc adapter excludes gate and up ones");
        if ((t & fc_parts) && c->activation != RG_ACTIVATION_SWIGLU)
            return config_fail(msg, size, RG_ERR_INVALID_ARG, "lora_targets: gate and up adapters need the swiglu MLP");
        if (!(isfinite(c->lora_alpha)) || !(c->lora_dropout >= 0.0f && c->lora_dropout < 1.0f))
            return config_fail(msg, size, RG_ERR_INVALID_ARG,
                               "lora_alpha must be finite and lora_dropout lie in [0, 1), got %g and %g",
                               (double)c->lora_alpha, (double)c->lora_dropout);
        for (int site = 0; site < RG_LORA_SITES; site++) {
            int linear;
            int64_t row0, rows, in;
            if ((t & RG_LORA_BIT(site)) && lora_site_shape(c, site, &linear, &row0, &rows, &in) &&
                (int64_t)c->lora_rank * (rows > in ? rows : in) > RG_MODEL_MAX_TENSOR)
                return config_fail(msg, size, RG_ERR_TOO_LARGE, "lora_rank %d makes an adapter too large", c->lora_rank);
        }
    }
    if (config_param_count(c) < 0)
        return config_fail(msg, size, RG_ERR_TOO_LARGE, "the model would hold more than the core's limit of %lld parameters",
                           (long long)RG_MODEL_MAX_PARAMS);
    if (msg != NULL && size > 0)
        msg[0] = '\0';
    return RG_OK;
}

rg_status rg_model_config_check(const rg_model_config *config, char *message, size_t message_size)
{
    if (config == NULL)
        return config_fail(message, message_size, RG_ERR_INVALID_ARG, "no config");
    return config_check(config, message, message_size);
}

/* Appends one tensor to the table (or only counts it when tensors is NULL). */
static int table_add(rg_param_table *table, const char *name, int64_t rows, int64_t cols, int layer,
                     int decay)
{
    if (table->tensors != NULL) {
        rg_param_info *info = &table->tensors[table->count];
        memset(info, 0, sizeof(*info));
        snprintf(info->name, sizeof(info->name), "%s", name);
        info->offset = table->total;
        info->numel = (size_t)rows * (size_t)(cols > 0 ? cols : 1);
        info->ndim = cols > 0 ? 2 : 1;
        info->shape[0] = rows;
        info->shape[1] = cols;
        info->layer = layer;
        info->decay = (uint8_t)decay;
        info->trainable = 1;
        info->grad_offset = info->offset;
    }
    table->total += (size_t)rows * (size_t)(cols > 0 ? cols : 1);
    return table->count++;
}

/* Lays out every tensor in the order of docs/model_layout.md. Called twice:
 * once to count (tensors NULL), once to fill. */
static void table_build(rg_model *m, rg_param_table *t)
{
    const rg_model_config *c = &m->config;
    const int C = c->n_embd, L = c->n_layer, has_bias = c->bias;
    const int has_norm_bias = c->norm == RG_NORM_LAYERNORM;
    char name[RG_PARAM_NAME_MAX];
    int *g = m->global_index;
    for (int i = 0; i < G_COUNT; i++)
        g[i] = -1;
    t->count = 0;
    t->total = 0;
    g[G_WTE] = table_add(t, "wte", c->vocab_size, C, -1, 1);
    if (c->position == RG_POSITION_LEARNED)
        g[G_WPE] = table_add(t, "wpe", c->n_positions, C, -1, 1);
    if (c->type_vocab_size > 0)
        g[G_WTT] = table_add(t, "wtt", c->type_vocab_size, C, -1, 1);
    if (c->embed_norm) {
        g[G_EMB_LN_W] = table_add(t, "emb_ln.w", C, 0, -1, 0);
        g[G_EMB_LN_B] = table_add(t, "emb_ln.b", C, 0, -1, 0);
    }
    for (int l = 0; l < L; l++) {
        int *li = m->layer_index + (size_t)l * L_COUNT;
        for (int i = 0; i < L_COUNT; i++)
            li[i] = -1;
#define ADD(slot, suffix, rows, cols, decay)                          \
    do {                                                              \
        snprintf(name, sizeof(name), "h.%d.%s", l, suffix);           \
        li[slot] = table_add(t, name, rows, cols, l, decay);          \
    } while (0)
        ADD(L_LN1_W, "ln1.w", C, 0, 0);
        if (has_norm_bias)
            ADD(L_LN1_B, "ln1.b", C, 0, 0);
        ADD(L_QKV_W, "qkv.w", qkv_width(c), C, 1);
        if (has_bias)
            ADD(L_QKV_B, "qkv.b", qkv_width(c), 0, 0);
        ADD(L_PROJ_W, "proj.w", C, c->n_head * c->head_dim, 1);
        if (has_bias)
            ADD(L_PROJ_B, "proj.b", C, 0, 0);
        ADD(L_LN2_W, "ln2.w", C, 0, 0);
        if (has_norm_bias)
            ADD(L_LN2_B, "ln2.b", C, 0, 0);
        ADD(L_FC_W, "fc.w", fc_width(c), C, 1);
        if (has_bias)
            ADD(L_FC_B, "fc.b", fc_width(c), 0, 0);
        ADD(L_FC2_W, "fc2.w", C, c->n_inner, 1);
        if (has_bias)
            ADD(L_FC2_B, "fc2.b", C, 0, 0);
#undef ADD
    }
    if (c->final_norm) {
        g[G_LNF_W] = table_add(t, "lnf.w", C, 0, L, 0);
        if (has_norm_bias)
            g[G_LNF_B] = table_add(t, "lnf.b", C, 0, L, 0);
    }
    if (c->head == RG_HEAD_LM && !m->tied)
        g[G_LM_HEAD] = table_add(t, "lm_head.w", c->vocab_size, C, L, 1);
    if (is_classifier(c)) {
        g[G_CLS_PRE_W] = table_add(t, "cls.pre.w", C, C, L, 1);
        g[G_CLS_PRE_B] = table_add(t, "cls.pre.b", C, 0, L, 0);
        g[G_CLS_OUT_W] = table_add(t, "cls.out.w", c->num_labels, C, L, 1);
        g[G_CLS_OUT_B] = table_add(t, "cls.out.b", c->num_labels, 0, L, 0);
    }
    /* adapters last, so the base tensors keep the layout of a model without them */
    for (int l = 0; lora_on(c) && l < L; l++)
        for (int site = 0; site < RG_LORA_SITES; site++) {
            int *slot = m->lora_index + ((size_t)l * RG_LORA_SITES + site) * 2;
            int linear;
            int64_t row0, rows, in;
            slot[0] = slot[1] = -1;
            if (!(c->lora_targets & RG_LORA_BIT(site)) || !lora_site_shape(c, site, &linear, &row0, &rows, &in))
                continue;
            snprintf(name, sizeof(name), "h.%d.lora.%s.A", l, lora_site_names[site]);
            slot[0] = table_add(t, name, c->lora_rank, in, l, 1);
            snprintf(name, sizeof(name), "h.%d.lora.%s.B", l, lora_site_names[site]);
            slot[1] = table_add(t, name, rows, c->lora_rank, l, 1);
        }
}

static int is_lora_tensor(const rg_model *m, int index)
{
    return m->lora_index != NULL && strstr(m->table.tensors[index].name, ".lora.") != NULL;
}

/* A classifier layer that trains next to the adapters: those PEFT's
 * modules_to_save = ["classifier", "score"] catches by name suffix, i.e. the
 * output layer, and DistilBERT's pre_classifier too (BERT's pooler not). */
static int is_lora_head(const rg_model *m, int index)
{
    const int *g = m->global_index;
    if (index == g[G_CLS_OUT_W] || index == g[G_CLS_OUT_B])
        return 1;
    return m->config.head == RG_HEAD_CLS_DISTILBERT && (index == g[G_CLS_PRE_W] || index == g[G_CLS_PRE_B]);
}

/* With LoRA only the adapters and those classifier layers have a gradient
 * slot; they are laid out one after another in a compact block. */
static int has_grad_slot(const rg_model *m, int index)
{
    if (m->lora_index == NULL)
        return 1;
    return is_lora_tensor(m, index) || is_lora_head(m, index);
}

static void grads_layout(rg_model *m)
{
    rg_param_table *t = &m->table;
    t->compact_grads = m->lora_index != NULL;
    size_t used = 0;
    for (int i = 0; i < t->count; i++) {
        rg_param_info *info = &t->tensors[i];
        if (!t->compact_grads) {
            info->grad_offset = info->offset;
        } else if (has_grad_slot(m, i)) {
            info->grad_offset = used;
            used += info->numel;
        } else {
            info->grad_offset = SIZE_MAX;
            info->trainable = 0;
        }
    }
    t->grads_total = t->compact_grads ? used : t->total + m->reserve;
}

static float *param(rg_model *m, int index) { return index < 0 ? NULL : m->params + m->table.tensors[index].offset; }
/* NULL for absent or frozen tensors: the ops then skip that gradient. */
static float *grad(rg_model *m, int index)
{
    if (index < 0 || !m->table.tensors[index].trainable)
        return NULL;
    const size_t at = rg_param_grad_offset(&m->table, &m->table.tensors[index]);
    return at == SIZE_MAX ? NULL : m->grads + at;
}
static float *grad_of(rg_model *m, const rg_param_info *info)
{
    return grad(m, (int)(info - m->table.tensors));
}
#define GP(m, slot) param(m, (m)->global_index[slot])
#define GG(m, slot) grad(m, (m)->global_index[slot])
#define LP(m, l, slot) param(m, (m)->layer_index[(size_t)(l) * L_COUNT + (slot)])
#define LG(m, l, slot) grad(m, (m)->layer_index[(size_t)(l) * L_COUNT + (slot)])
/* table index of adapter `site`'s A (ab 0) or B (ab 1) in block l, -1 if absent */
#define LORA_INDEX(m, l, site, ab) \
    ((m)->lora_index ? (m)->lora_index[((size_t)(l) * RG_LORA_SITES + (site)) * 2 + (ab)] : -1)

/* Standard normal draws for the default initialisation (Box-Muller). */
static float normal_draw(uint64_t seed, uint64_t index)
{
    float u1 = rg_rng_uniform(seed, 2 * index), u2 = rg_rng_uniform(seed, 2 * index + 1);
    if (u1 < 1e-7f)
        u1 = 1e-7f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.2831853f * u2);
}

/* GPT-2's initialisation: matrices N(0, 0.02), biases 0, norm weights 1.
 * Loaders overwrite it; it makes a fresh model usable for tests. */
static void params_init_default(rg_model *m)
{
    for (int i = 0; i < m->table.count; i++) {
        const rg_param_info *info = &m->table.tensors[i];
        float *p = m->params + info->offset;
        const char *suffix = strrchr(info->name, '.');
        int is_norm_weight = info->ndim == 1 && suffix != NULL && strcmp(suffix, ".w") == 0;
#pragma omp parallel for schedule(static) if (info->numel > 65536)
        for (size_t j = 0; j < info->numel; j++)
            p[j] = info->ndim == 2 ? 0.02f * normal_draw(1234u + (uint64_t)i, j)
                                   : (is_norm_weight ? 1.0f : 0.0f);
    }
}

/* Adapters as PEFT initialises them: A kaiming-uniform (a = sqrt(5), so
 * U(-1/sqrt(in), 1/sqrt(in))), B zero: a fresh adapter changes nothing. */
static void lora_init(rg_model *m)
{
    for (int l = 0; m->lora_index != NULL && l < m->config.n_layer; l++)
        for (int site = 0; site < RG_LORA_SITES; site++) {
            const int ia = LORA_INDEX(m, l, site, 0), ib = LORA_INDEX(m, l, site, 1);
            if (ia < 0)
                continue;
            const rg_param_info *a = &m->table.tensors[ia], *b = &m->table.tensors[ib];
            const float bound = 1.0f / sqrtf((float)a->shape[1]);
            float *pa = m->params + a->offset;
            for (size_t j = 0; j < a->numel; j++)
                pa[j] = bound * (2.0f * rg_rng_uniform(0x10AA0000u + (uint64_t)ia, j) - 1.0f);
            memset(m->params + b->offset, 0, b->numel * sizeof(float));
        }
}

static rg_status model_create(rg_model **out, const rg_model_config *config, int initialize)
{
    if (out == NULL || config == NULL)
        return RG_ERR_INVALID_ARG;
    *out = NULL;
    RG_TRY(config_check(config, NULL, 0));
    rg_model *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return RG_ERR_NOMEM;
    m->config = *config;
    m->tied = config->head == RG_HEAD_LM && config->tie_word_embeddings;
    m->layer_index = malloc((size_t)config->n_layer * L_COUNT * sizeof(int));
    if (m->layer_index == NULL) {
        free(m);
        return RG_ERR_NOMEM;
    }
    if (lora_on(config)) {
        m->lora_index = malloc((size_t)config->n_layer * RG_LORA_SITES * 2 * sizeof(int));
        if (m->lora_index == NULL) {
            free(m->layer_index);
            free(m);
            return RG_ERR_NOMEM;
        }
    }
    rg_param_table counting = {0};
    table_build(m, &counting);
    if (counting.total > (size_t)RG_MODEL_MAX_PARAMS) { /* config_check bounds it already */
        free(m->lora_index);
        free(m->layer_index);
        free(m);
        return RG_ERR_TOO_LARGE;
    }
    m->table.tensors = calloc((size_t)counting.count + 1, sizeof(rg_param_info)); /* +1: lm_head.w */
    /* A tied head may be untied later: keep room for lm_head.w after the table
     * so the blocks never move (views of them stay valid). */
    m->reserve = m->tied ? (size_t)config->vocab_size * config->n_embd : 0;
    /* calloc: a blank model's zero pages are only touched when written */
    m->params = initialize ? malloc((counting.total + m->reserve) * sizeof(float))
                           : calloc(counting.total + m->reserve, sizeof(float));
    if (m->table.tensors == NULL || m->params == NULL) {
        rg_model_free(m);
        return RG_ERR_NOMEM;
    }
    table_build(m, &m->table);
    grads_layout(m);
    m->grads_total = m->table.grads_total;
    m->grads = calloc(m->grads_total > 0 ? m->grads_total : 1, sizeof(float));
    if (m->grads == NULL) {
        rg_model_free(m);
        return RG_ERR_NOMEM;
    }
    if (initialize)
        params_init_default(m);
    lora_init(m);
    m->n_trainable_blocks = -1;
    m->frozen_dropout = 1;
    m->head_policy = RG_HEAD_POLICY_TRAIN;
    m->head_keep_floats = RG_MODEL_HEAD_KEEP_FLOATS;
    m->ops = rg_ops_cpu();
    atomic_init(&m->busy, 0);
    *out = m;
    return RG_OK;
}

rg_status rg_model_init(rg_model **out, const rg_model_config *config)
{
    return model_create(out, config, 1);
}

rg_status rg_model_init_blank(rg_model **out, const rg_model_config *config)
{
    return model_create(out, config, 0);
}

static void cache_free(rg_kv_cache *cache)
{
    if (cache == NULL)
        return;
    free(cache->k);
    free(cache->v);
    free(cache->key_mask);
    free(cache->n_real);
    free(cache);
}

/* The memory of the last prepared LM head, given back (generation and other tables have no use for it) */
static void head_prepared_free(rg_model *m)
{
    if (m->head_prepared != NULL)
        m->head_prepared_ops->weight_release(m->head_prepared);
    m->head_prepared = NULL;
    m->head_prepared_ops = NULL;
}

void rg_model_free(rg_model *model)
{
    if (model == NULL)
        return;
    head_prepared_free(model);
    cache_free(model->cache);
    free(model->table.tensors);
    free(model->layer_index);
    free(model->lora_index);
    free(model->params);
    free(model->grads);
    free(model->acts);
    free(model->ints);
    free(model->layer_sets);
    free(model);
}

rg_status rg_model_check_finite(const rg_model *model, int *bad_tensor)
{
    if (bad_tensor != NULL)
        *bad_tensor = -1;
    if (model == NULL)
        return RG_ERR_INVALID_ARG;
    for (int i = 0; i < model->table.count; i++) {
        const rg_param_info *info = &model->table.tensors[i];
        const float *p = model->params + info->offset;
        int bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (info->numel > 65536)
        for (size_t k = 0; k < info->numel; k++)
            bad |= !isfinite(p[k]);
        if (bad) {
            if (bad_tensor != NULL)
                *bad_tensor = i;
            return RG_ERR_NONFINITE;
        }
    }
    return RG_OK;
}

const rg_param_info *rg_model_find_param(const rg_model *model, const char *name)
{
    if (model == NULL || name == NULL)
        return NULL;
    for (int i = 0; i < model->table.count; i++)
        if (strcmp(model->table.tensors[i].name, name) == 0)
            return &model->table.tensors[i];
    return NULL;
}

/* ------------------------------------------------------------------------ */
/* freezing                                                                  */
/* ------------------------------------------------------------------------ */

/* First block that trains (n_layer when none does). */
static int lowest_trainable_block(const rg_model *m)
{
    const int L = m->config.n_layer, k = m->n_trainable_blocks;
    if (k < 0)
        return 0;
    return k >= L ? 0 : L - k;
}

/* Clears a gradient only when it holds something: the gradient block comes
 * from calloc, and writing zeros over pages never touched would make the
 * whole frozen part of it resident for nothing. */
static void zero_unless_zero(float *values /* (n,) */, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (values[i] != 0.0f) {
            memset(values, 0, n * sizeof(float));
            return;
        }
}

static int embeddings_train(const rg_model *m) { return m->n_trainable_blocks < 0 && m->lora_index == NULL; }

/* How many blocks, with the embeddings, make a frozen part that no update
 * changes: the lowest layer of any trainable tensor (n_layer when only the
 * final norm and head train, or nothing does); 0 when an embedding tensor
 * trains (a tied head that trains is wte) or the first block does. */
static int frozen_blocks(const rg_model *m)
{
    int from = m->config.n_layer;
    for (int i = 0; i < m->table.count; i++) {
        const rg_param_info *info = &m->table.tensors[i];
        if (info->trainable && info->layer < from)
            from = info->layer < 0 ? 0 : info->layer;
    }
    return from;
}

void rg_model_set_frozen_dropout(rg_model *model, int on)
{
    if (model != NULL)
        model->frozen_dropout = on != 0;
}

int rg_model_first_trainable_block(const rg_model *model)
{
    return model == NULL ? 0 : frozen_blocks(model);
}

rg_status rg_model_set_trainable(rg_model *model, int n_trainable_blocks, rg_head_policy policy)
{
    if (model == NULL || policy < RG_HEAD_POLICY_FROZEN || policy > RG_HEAD_POLICY_UNTIE)
        return RG_ERR_INVALID_ARG;
    const rg_model_config *c = &model->config;
    if (policy == RG_HEAD_POLICY_UNTIE && (c->head != RG_HEAD_LM || model->lora_index != NULL))
        return RG_ERR_UNSUPPORTED;
    if (policy == RG_HEAD_POLICY_UNTIE && model->tied) {
        /* lm_head.w goes into the reserved room right after the table. */
        model->tied = 0;
        model->config.tie_word_embeddings = 0;
        const int index = table_add(&model->table, "lm_head.w", c->vocab_size, c->n_embd,
                                    c->n_layer, 1);
        model->global_index[G_LM_HEAD] = index;
        model->reserve = 0;
        const rg_param_info *head = &model->table.tensors[index];
        memcpy(model->params + head->offset, GP(model, G_WTE), head->numel * sizeof(float));
        memset(model->grads + head->offset, 0, head->numel * sizeof(float));
    }
    model->n_trainable_blocks = n_trainable_blocks;
    model->head_policy = policy;
    const int lowest = lowest_trainable_block(model);
    const int head_trains = policy != RG_HEAD_POLICY_FROZEN;
    for (int i = 0; i < model->table.count; i++) {
        rg_param_info *info = &model->table.tensors[i];
        if (n_trainable_blocks < 0)
            info->trainable = 1;
        else if (info->layer < 0)
            info->trainable = 0; /* embeddings; a tied wte is decided below */
        else if (info->layer < c->n_layer)
            info->trainable = info->layer >= lowest;
        else
            info->trainable = 1; /* final norm; heads decided below */
    }
    int heads[5] = {G_LM_HEAD, G_CLS_PRE_W, G_CLS_PRE_B, G_CLS_OUT_W, G_CLS_OUT_B};
    for (int i = 0; i < 5; i++)
        if (model->global_index[heads[i]] >= 0)
            model->table.tensors[model->global_index[heads[i]]].trainable = (uint8_t)head_trains;
    if (model->tied)
        model->table.tensors[model->global_index[G_WTE]].trainable =
            (uint8_t)(n_trainable_blocks < 0 || head_trains);
    if (model->lora_index != NULL) /* only the adapters of the trainable blocks and cls.out */
        for (int i = 0; i < model->table.count; i++) {
            rg_param_info *info = &model->table.tensors[i];
            if (!has_grad_slot(model, i))
                info->trainable = 0;
            else if (is_lora_tensor(model, i))
                info->trainable = (uint8_t)(info->layer >= lowest);
            else
                info->trainable = (uint8_t)head_trains;
        }
    for (int i = 0; i < model->table.count; i++) { /* a frozen tensor has no gradient */
        const rg_param_info *info = &model->table.tensors[i];
        const size_t at = rg_param_grad_offset(&model->table, info);
        if (!info->trainable && at != SIZE_MAX)
            zero_unless_zero(model->grads + at, info->numel);
    }
    model->trainable_version++;
    model->frozen_output_valid = 0;
    return RG_OK;
}

/* Frozen tensors' gradients are kept at zero by set_trainable and never
 * written, so only the trainable ones need clearing. */
void rg_model_zero_grad(rg_model *model)
{
    if (model == NULL)
        return;
    for (int i = 0; i < model->table.count; i++) {
        const rg_param_info *info = &model->table.tensors[i];
        float *g = grad_of(model, info);
        if (g != NULL)
            memset(g, 0, info->numel * sizeof(float));
    }
}

/* ------------------------------------------------------------------------ */
/* activation table                                                          */
/* ------------------------------------------------------------------------ */

/* Hands out consecutive 16-float-aligned slices of a block; with a NULL base
 * it only adds up the size. */
typedef struct carver {
    float *base;
    size_t used;
    int overflow; /* a size did not fit: the sizing pass reports RG_ERR_TOO_LARGE */
} carver;

static float *carve(carver *cv, size_t n)
{
    float *p = cv->base ? cv->base + cv->used : NULL;
    size_t rounded, used;
    if (!rg_size_add(n, 15, &rounded) || !rg_size_add(cv->used, rounded & ~(size_t)15, &used)) {
        cv->overflow = 1;
        return p;
    }
    cv->used = used;
    return p;
}

/* n = a * b * c * d as a carve size; on overflow marks the carver and gives 0. */
static size_t carve_size(carver *cv, size_t a, size_t b, size_t c, size_t d)
{
    size_t n;
    if (!rg_size_mul(a, b, &n) || !rg_size_mul(n, c, &n) || !rg_size_mul(n, d, &n)) {
        cv->overflow = 1;
        return 0;
    }
    return n;
}

/* What a block's activation set keeps: a saved set (a block that trains)
 * keeps what its backward reads, att included, but not the MLP activation,
 * which the forward writes into d_fch and the backward makes again from fch;
 * a scratch set (a frozen block, or generation) keeps no att and, unless the
 * activation is gated, applies it in place. */
enum { SET_SAVED = 0, SET_SCRATCH = 1 };

/* One block's activations for N = B*T rows. The block's output (ln2
 * post-norm, res2 pre-norm) comes first, so the rest is one range that
 * carve_all can lend to the backward when the set is frozen scratch. A saved
 * set's fch_act is left for carve_all to point at d_fch. */
static void carve_layer(carver *cv, rg_layer_acts *a, const rg_model_config *c, int B, int T, int kind)
{
    const size_t N = (size_t)B * T, C = c->n_embd;
    float *output = carve(cv, N * C);
    a->ln1 = carve(cv, N * C);
    a->ln1_mean = carve(cv, N);
    a->ln1_rstd = carve(cv, N);
    a->qkv = carve(cv, N * qkv_width(c));
    a->att = kind == SET_SAVED
                 ? carve(cv, carve_size(cv, (size_t)B, (size_t)c->n_head, (size_t)T, RG_ATTENTION_ROW_STATS))
                 : NULL;
    a->atty = carve(cv, N * c->n_head * c->head_dim);
    a->res1 = carve(cv, N * C);
    a->ln2_mean = carve(cv, N);
    a->ln2_rstd = carve(cv, N);
    a->fch = carve(cv, N * fc_width(c));
    if (kind == SET_SAVED)
        a->fch_act = NULL;
    else
        a->fch_act = c->activation == RG_ACTIVATION_SWIGLU ? carve(cv, N * c->n_inner) : a->fch;
    if (c->pre_norm) {
        a->res2 = output;
        a->ln2 = carve(cv, N * C);
    } else {
        a->ln2 = output;
        a->res2 = carve(cv, N * C);
    }
    for (int site = 0; site < RG_LORA_SITES; site++)
        a->lora_u[site] = lora_on(c) && (c->lora_targets & RG_LORA_BIT(site))
                              ? carve(cv, N * (size_t)c->lora_rank) : NULL;
}

/* The widest input of any adapter: C, NH*HS or F. */
static size_t lora_max_in(const rg_model_config *c)
{
    size_t w = (size_t)c->n_embd;
    if ((size_t)c->n_head * c->head_dim > w)
        w = (size_t)c->n_head * c->head_dim;
    if ((size_t)c->n_inner > w)
        w = (size_t)c->n_inner;
    return w;
}

/* The backward's scratch: what one block's backward works in (and the
 * heads'). A block's MLP branch is done before its attention branch starts,
 * so the attention's d_qkv and d_atty lie over the MLP's d_fch_act and d_fch. */
static void carve_backward(rg_model *m, carver *cv, size_t N)
{
    const rg_model_config *c = &m->config;
    const size_t C = c->n_embd;
    m->d_res = carve(cv, N * C);
    m->d_tmp = carve(cv, N * C);
    m->d_tmp2 = carve(cv, N * C);
    const size_t branch = cv->used;
    m->d_fch_act = carve(cv, N * c->n_inner);
    m->d_fch = carve(cv, N * fc_width(c));
    const size_t mlp_end = cv->used;
    cv->used = branch;
    m->d_qkv = carve(cv, N * qkv_width(c));
    m->d_atty = carve(cv, N * c->n_head * c->head_dim);
    if (cv->used < mlp_end)
        cv->used = mlp_end;
}

/* Lays out every activation of a (B, T) pass with n_sets block sets, the
 * last n_scratch of them the ping-pong scratch of frozen layers, whose
 * activations are not kept: a layer reads only the previous one's output, so
 * the two scratch sets share every buffer but that output, and keep no
 * attention state (no backward runs through them). The backward's scratch
 * lies in the first scratch set past its output when it fits there (with
 * n_inner <= 4 n_embd, or a gated activation), since no frozen layer runs once
 * any of it is written: the trainable blocks' forward (their MLP activation
 * in d_fch) and the LM head's fused gradient come after the frozen blocks,
 * and the backward reads only the last frozen output. Saved sets exist only
 * with the backward, which their fch_act needs. */
static void carve_all(rg_model *m, carver *cv, int B, int T, int n_sets, int n_scratch, int with_backward,
                      int logit_rows)
{
    const rg_model_config *c = &m->config;
    const size_t N = (size_t)B * T, C = c->n_embd;
    m->emb = c->embed_norm ? carve(cv, N * C) : NULL;
    m->emb_mean = c->embed_norm ? carve(cv, N) : NULL;
    m->emb_rstd = c->embed_norm ? carve(cv, N) : NULL;
    m->x0 = carve(cv, N * C);
    rg_layer_acts scratch[2];
    size_t lendable_from = 0, lendable_to = 0; /* the first scratch set past its output */
    for (int s = 0; s < n_sets; s++) {
        rg_layer_acts *a = m->layer_sets ? &m->layer_sets[s] : &scratch[s % 2];
        const int is_scratch = s >= n_sets - n_scratch;
        if (n_scratch == 2 && s == n_sets - 1) { /* the second scratch set */
            *a = m->layer_sets ? m->layer_sets[s - 1] : scratch[(s - 1) % 2];
            float *output = carve(cv, N * C);
            if (c->pre_norm)
                a->res2 = output;
            else
                a->ln2 = output;
            continue;
        }
        const size_t start = cv->used;
        carve_layer(cv, a, c, B, T, is_scratch ? SET_SCRATCH : SET_SAVED);
        if (is_scratch) {
            carver output = {NULL, start, 0};
            carve(&output, N * C);
            lendable_from = output.used;
            lendable_to = cv->used;
        }
    }
    m->lnf = c->final_norm ? carve(cv, N * C) : NULL;
    m->lnf_mean = c->final_norm ? carve(cv, N) : NULL;
    m->lnf_rstd = c->final_norm ? carve(cv, N) : NULL;
    if (is_classifier(c)) {
        m->logits = carve(cv, (size_t)B * c->num_labels);
        m->lse = carve(cv, B);
        m->cls_h0 = carve(cv, (size_t)B * C);
        m->cls_pre = carve(cv, (size_t)B * C);
        m->cls_act = carve(cv, (size_t)B * C);
        m->cls_drop = carve(cv, (size_t)B * C);
    } else {
        m->logits = carve(cv, carve_size(cv, (size_t)logit_rows, (size_t)c->vocab_size, 1, 1));
        m->lse = carve(cv, N);
        m->head_in = with_backward ? carve(cv, N * C) : NULL;
    }
    if (with_backward) {
        carver lent = {cv->base, lendable_from, 0};
        if (n_scratch > 0)
            carve_backward(m, &lent, N);
        if (n_scratch == 0 || lent.overflow || lent.used > lendable_to)
            carve_backward(m, cv, N);
        for (int s = 0; m->layer_sets && s < n_sets - n_scratch; s++)
            m->layer_sets[s].fch_act = m->d_fch;
    } else {
        m->d_res = m->d_tmp = m->d_tmp2 = m->d_qkv = m->d_atty = m->d_fch = m->d_fch_act = NULL;
    }
    const int lora_drop = lora_on(c) && c->lora_dropout > 0.0f;
    m->lora_x = lora_drop ? carve(cv, carve_size(cv, N, lora_max_in(c), 1, 1)) : NULL;
    m->lora_dx = lora_drop && with_backward ? carve(cv, carve_size(cv, N, lora_max_in(c), 1, 1)) : NULL;
    m->lora_du = lora_on(c) && with_backward ? carve(cv, N * (size_t)c->lora_rank) : NULL;
}

/* Makes room for a (B, T) pass that keeps the activations of layers
 * save_from..L-1 (save_from = L: keep none) and lays the block out. */
static rg_status acts_prepare(rg_model *m, int B, int T, int save_from, int with_backward, int logit_rows)
{
    const int L = m->config.n_layer;
    const int scratch_sets = save_from < 2 ? save_from : 2;
    const int n_sets = (L - save_from) + scratch_sets;
    rg_layer_acts *sets = realloc(m->layer_sets, (size_t)(n_sets > 0 ? n_sets : 1) * sizeof(*sets));
    if (sets == NULL)
        return RG_ERR_NOMEM;
    m->layer_sets = sets;
    carver sizing = {NULL, 0, 0};
    rg_layer_acts *keep = m->layer_sets;
    m->layer_sets = NULL; /* sizing pass writes no pointers */
    carve_all(m, &sizing, B, T, n_sets, scratch_sets, with_backward, logit_rows);
    m->layer_sets = keep;
    if (sizing.overflow || sizing.used > (size_t)RG_MODEL_MAX_ACTS)
        return RG_ERR_TOO_LARGE;
    if (sizing.used > m->acts_capacity) {
        free(m->acts);
        m->acts = malloc(sizing.used * sizeof(float));
        m->acts_capacity = m->acts ? sizing.used : 0;
        if (m->acts == NULL)
            return RG_ERR_NOMEM;
    }
    const size_t n_ints = 7 * (size_t)B * T + 16;
    if (n_ints > m->ints_capacity) {
        free(m->ints);
        m->ints = malloc(n_ints * sizeof(int32_t));
        m->ints_capacity = m->ints ? n_ints : 0;
        if (m->ints == NULL)
            return RG_ERR_NOMEM;
    }
    carver cv = {m->acts, 0, 0};
    carve_all(m, &cv, B, T, n_sets, scratch_sets, with_backward, logit_rows);
    m->n_saved_sets = n_sets;
    m->lowest_saved_layer = save_from;
    return RG_OK;
}

/* The activation set of layer l in the current pass. */
static rg_layer_acts *layer_acts(rg_model *m, int l)
{
    const int L = m->config.n_layer, from = m->lowest_saved_layer;
    if (l >= from)
        return &m->layer_sets[l - from];
    return &m->layer_sets[(L - from) + (l % 2)]; /* ping-pong scratch of frozen layers */
}

static const float *layer_output(const rg_model *m, const rg_layer_acts *a)
{
    return m->config.pre_norm ? a->res2 : a->ln2;
}

static const float *layer_input(rg_model *m, int l)
{
    return l == 0 ? m->x0 : layer_output(m, layer_acts(m, l - 1));
}

/* ------------------------------------------------------------------------ */
/* shared pieces of forward and backward                                     */
/* ------------------------------------------------------------------------ */

static void norm_forward(const rg_model *m, float *out, float *mean, float *rstd, const float *inp,
                         const float *w, const float *b, int N)
{
    const rg_model_config *c = &m->config;
    if (c->norm == RG_NORM_RMSNORM)
        m->ops->rmsnorm_forward(out, rstd, inp, w, N, c->n_embd, c->norm_eps);
    else
        m->ops->layernorm_forward(out, mean, rstd, inp, w, b, N, c->n_embd, c->norm_eps);
}

static void norm_backward(const rg_model *m, float *dinp, float *dw, float *db, const float *dout,
                          const float *inp, const float *w, const float *mean, const float *rstd,
                          int N)
{
    const rg_model_config *c = &m->config;
    if (c->norm == RG_NORM_RMSNORM)
        m->ops->rmsnorm_backward(dinp, dw, dout, inp, w, rstd, N, c->n_embd);
    else
        m->ops->layernorm_backward(dinp, dw, db, dout, inp, w, mean, rstd, N, c->n_embd);
}

static void activation_forward(const rg_model *m, float *out, const float *inp, int N)
{
    const rg_model_config *c = &m->config;
    const size_t n = (size_t)N * c->n_inner;
    switch (c->activation) {
    case RG_ACTIVATION_GELU_TANH: m->ops->gelu_tanh_forward(out, inp, n); break;
    case RG_ACTIVATION_GELU_ERF: m->ops->gelu_erf_forward(out, inp, n); break;
    default: m->ops->swiglu_forward(out, inp, N, c->n_inner); break;
    }
}

static void activation_backward(const rg_model *m, float *dinp, const float *inp,
                                const float *dout, int N)
{
    const rg_model_config *c = &m->config;
    const size_t n = (size_t)N * c->n_inner;
    switch (c->activation) {
    case RG_ACTIVATION_GELU_TANH: m->ops->gelu_tanh_backward(dinp, inp, dout, n); break;
    case RG_ACTIVATION_GELU_ERF: m->ops->gelu_erf_backward(dinp, inp, dout, n); break;
    default: m->ops->swiglu_backward(dinp, inp, dout, N, c->n_inner); break;
    }
}

/* ------------------------------------------------------------------------ */
/* adapters                                                                  */
/* ------------------------------------------------------------------------ */

/* Linear layers of a block, as lora_site_shape numbers them. */
enum { LIN_QKV = 0, LIN_PROJ = 1, LIN_FC = 2, LIN_FC2 = 3 };

/* Output width of each linear layer: the row stride of what its adapters add into. */
static int linear_width(const rg_model_config *c, int linear)
{
    switch (linear) {
    case LIN_QKV: return qkv_width(c);
    case LIN_FC: return fc_width(c);
    default: return c->n_embd;
    }
}

static int lora_active(const rg_model *m) { return m->lora_index != NULL && !m->lora_merged; }

/* Dropout over R rows of `width` floats that stand for rows r * stride of
 * the full pass (stride 1: all of them; stride T: a classifier's head rows,
 * see head_rows_apply), each drawing the full pass's mask there. */
static void rows_dropout(const rg_model *m, float *x, int R, size_t width, int stride, float p, uint64_t stream)
{
    if (stride == 1) {
        m->ops->dropout_apply(x, (size_t)R * width, 0, p, stream);
        return;
    }
    for (int r = 0; r < R; r++)
        m->ops->dropout_apply(x + (size_t)r * width, width, (size_t)r * stride * width, p, stream);
}

/* The adapter input (N rows standing for rows r * stride of the pass): `in`
 * itself, or in training with lora_dropout its dropped copy in m->lora_x
 * (the same mask in forward and backward). */
static const float *lora_input(rg_model *m, int l, int site, const float *in, int N, int in_width, int train,
                               int stride)
{
    const float p = m->config.lora_dropout;
    if (!train || p <= 0.0f)
        return in;
    memcpy(m->lora_x, in, (size_t)N * in_width * sizeof(float));
    rows_dropout(m, m->lora_x, N, (size_t)in_width, stride, p, rg_dropout_stream(m->seed, SITE_LORA(l, site)));
    return m->lora_x;
}

/* Adds the adapters of linear layer `linear` of block l: out (N, width) +=
 * scale * B @ A @ dropout(in), in (N, in_width), its rows standing for rows
 * r * stride of the pass; saves A @ dropout(in) in a. */
static void lora_forward(rg_model *m, int l, int linear, rg_layer_acts *a, float *out, const float *in, int N,
                         int train, int stride)
{
    if (!lora_active(m))
        return;
    const rg_model_config *c = &m->config;
    const float scale = c->lora_alpha / (float)c->lora_rank;
    for (int site = 0; site < RG_LORA_SITES; site++) {
        const int ia = LORA_INDEX(m, l, site, 0);
        int lin;
        int64_t row0, rows, in_width;
        if (ia < 0 || !lora_site_shape(c, site, &lin, &row0, &rows, &in_width) || lin != linear)
            continue;
        const float *x = lora_input(m, l, site, in, N, (int)in_width, train, stride);
        m->ops->lora_forward(out + row0, a->lora_u[site], x, param(m, ia), param(m, LORA_INDEX(m, l, site, 1)), scale,
                             N, (int)in_width, c->lora_rank, (int)rows, linear_width(c, linear));
    }
}

/* Backward of those adapters: dout (N, width) is the gradient of the linear
 * layer's output; their A and B gradients are accumulated, and the gradient
 * of `in` ADDED into d_in (N, in_width) unless d_in is NULL. */
static void lora_backward(rg_model *m, int l, int linear, const rg_layer_acts *a, const float *dout,
                          const float *in, float *d_in, int N, int stride)
{
    if (!lora_active(m))
        return;
    const rg_model_config *c = &m->config;
    const float scale = c->lora_alpha / (float)c->lora_rank;
    for (int site = 0; site < RG_LORA_SITES; site++) {
        const int ia = LORA_INDEX(m, l, site, 0), ib = LORA_INDEX(m, l, site, 1);
        int lin;
        int64_t row0, rows, in_width;
        if (ia < 0 || !lora_site_shape(c, site, &lin, &row0, &rows, &in_width) || lin != linear)
            continue;
        float *ga = grad(m, ia), *gb = grad(m, ib);
        if (ga == NULL && gb == NULL && d_in == NULL)
            continue;
        const float *x = lora_input(m, l, site, in, N, (int)in_width, m->train, stride);
        const int dropped = x != in;
        const size_t n_in = (size_t)N * (size_t)in_width;
        float *dx = d_in;
        if (d_in != NULL && dropped) {
            dx = m->lora_dx;
            memset(dx, 0, n_in * sizeof(float));
        }
        m->ops->lora_backward(dx, ga, gb, m->lora_du, dout + row0, x, a->lora_u[site], param(m, ia), param(m, ib),
                              scale, N, (int)in_width, c->lora_rank, (int)rows, linear_width(c, linear));
        if (d_in != NULL && dropped) {
            rows_dropout(m, dx, N, (size_t)in_width, stride, c->lora_dropout,
                         rg_dropout_stream(m->seed, SITE_LORA(l, site)));
            m->ops->add_inplace(d_in, dx, n_in);
        }
    }
}

/* W[row0 : row0 + rows] += sign * scale * B @ A for every adapter. */
static void lora_fold(rg_model *m, float sign)
{
    const rg_model_config *c = &m->config;
    const int R = c->lora_rank;
    const float scale = sign * c->lora_alpha / (float)R;
    for (int l = 0; l < c->n_layer; l++)
        for (int site = 0; site < RG_LORA_SITES; site++) {
            const int ia = LORA_INDEX(m, l, site, 0);
            int lin;
            int64_t row0, rows, in_width;
            if (ia < 0 || !lora_site_shape(c, site, &lin, &row0, &rows, &in_width))
                continue;
            static const int slots[4] = {L_QKV_W, L_PROJ_W, L_FC_W, L_FC2_W};
            float *w = LP(m, l, slots[lin]) + (size_t)row0 * (size_t)in_width; /* (rows, in_width) */
            const float *A = param(m, ia);                                /* (R, in_width) */
            const float *Bm = param(m, LORA_INDEX(m, l, site, 1));        /* (rows, R) */
#pragma omp parallel for schedule(static) if (rows * in_width > 65536)
            for (int64_t i = 0; i < rows; i++)
                for (int r = 0; r < R; r++) {
                    const float coef = scale * Bm[i * R + r];
                    if (coef == 0.0f)
                        continue;
                    float *row = w + i * in_width;
                    const float *arow = A + (size_t)r * in_width;
                    for (int64_t j = 0; j < in_width; j++)
                        row[j] += coef * arow[j];
                }
        }
}

rg_status rg_model_lora_merge(rg_model *model)
{
    if (model == NULL)
        return RG_ERR_INVALID_ARG;
    if (model->lora_index == NULL)
        return RG_ERR_UNSUPPORTED;
    if (model->lora_merged)
        return RG_ERR_STATE;
    lora_fold(model, 1.0f);
    model->lora_merged = 1;
    model->has_targets = 0; /* the pass before belongs to the unmerged model */
    model->logits_valid = 0;
    return RG_OK;
}

rg_status rg_model_lora_unmerge(rg_model *model)
{
    if (model == NULL)
        return RG_ERR_INVALID_ARG;
    if (model->lora_index == NULL)
        return RG_ERR_UNSUPPORTED;
    if (!model->lora_merged)
        return RG_ERR_STATE;
    lora_fold(model, -1.0f);
    model->lora_merged = 0;
    model->has_targets = 0;
    model->logits_valid = 0;
    return RG_OK;
}

/* Where a block's attention reads its keys and values: the current block
 * (training, scoring) or the generation cache. */
typedef struct attention_source {
    rg_kv_cache *cache;    /* NULL: keys are this block's own tokens */
    const int32_t *key_mask; /* (B, T) when cache is NULL */
    int train;
    uint64_t seed;
} attention_source;

/* A classifier's head reads one row per sequence, token 0's, so past its
 * attention the last block computes only those rows (head_rows): its
 * projection, residuals, norms and MLP run on B rows, row b standing for row
 * b*T of the full pass and drawing the dropout masks the full pass draws
 * there. Its attention still runs on every row (the keys and values of all
 * tokens feed token 0), and the backward spreads the rows' gradient back. */
static int head_rows_apply(const rg_model *m, int T, int with_targets)
{
    const rg_model_config *c = &m->config;
    /* not when the last block is the frozen part's end, whose full output is kept */
    return is_classifier(c) && T > 1 && !m->all_rows && !(with_targets && frozen_blocks(m) == c->n_layer);
}

/* The row of the last block's output that a classifier's head reads for
 * sequence b (token 0's): b with head_rows, where only those rows exist. */
static size_t cls_row(const rg_model *m, int b) { return m->head_rows ? (size_t)b : (size_t)b * m->T; }

/* Row b of x <- row b*T (width floats each), for b < B, in place: a source
 * row b*T >= b is read before any later row b' > b is written. */
static void rows_gather_heads(float *x, int B, int T, size_t width)
{
    for (int b = 1; b < B; b++)
        memcpy(x + (size_t)b * width, x + (size_t)b * T * width, width * sizeof(float));
}

/* The inverse: row b*T <- row b, every other row of the (B*T, width) x 0.
 * From the last row down, so no row is overwritten before it moves. */
static void rows_spread_heads(float *x, int B, int T, size_t width)
{
    for (int b = B - 1; b > 0; b--)
        memcpy(x + (size_t)b * T * width, x + (size_t)b * width, width * sizeof(float));
    for (int b = 0; b < B; b++)
        memset(x + ((size_t)b * T + 1) * width, 0, (size_t)(T - 1) * width * sizeof(float));
}

/* One block, forward. x_in (B*T, C); the output lands in layer_output(a):
 * (B*T, C), or (B, C) with head_rows (above). */
static void block_forward(rg_model *m, int l, rg_layer_acts *a, const float *x_in, int B, int T,
                          const int32_t *positions, const attention_source *src, int head_rows)
{
    const rg_model_config *c = &m->config;
    const int N = B * T, C = c->n_embd, NH = c->n_head, NKV = c->n_kv_head, HS = c->head_dim;
    const int QKV = qkv_width(c), F = c->n_inner;
    const int stride = head_rows ? T : 1, R = head_rows ? B : N; /* the rows past the attention */
    const float attn_p = src->train ? c->attn_pdrop : 0.0f;
    const float resid_p = src->train ? c->resid_pdrop : 0.0f;

    const float *attn_in = x_in;
    if (c->pre_norm) {
        norm_forward(m, a->ln1, a->ln1_mean, a->ln1_rstd, x_in, LP(m, l, L_LN1_W), LP(m, l, L_LN1_B), N);
        attn_in = a->ln1;
    }
    m->ops->matmul_forward(a->qkv, attn_in, LP(m, l, L_QKV_W), LP(m, l, L_QKV_B), N, C, QKV);
    lora_forward(m, l, LIN_QKV, a, a->qkv, attn_in, N, src->train, 1);
    if (c->position == RG_POSITION_ROPE)
        m->ops->rope_forward(a->qkv, positions, N, NH, NKV, HS, c->rope_theta);
    if (src->cache == NULL) {
        m->ops->attention_forward(a->atty, a->att, a->qkv, src->key_mask, B, T, NH, NKV, HS, c->causal,
                                  attn_p, rg_dropout_stream(src->seed, SITE_LAYER(l, KIND_ATTN_PROBS)));
    } else {
        rg_kv_cache *kv = src->cache;
        const size_t S = kv->max_T;
        float *k_layer = kv->k + (size_t)l * kv->B * NKV * S * HS;
        float *v_layer = kv->v + (size_t)l * kv->B * NKV * S * HS;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                const float *row = a->qkv + ((size_t)b * T + t) * QKV;
                for (int g = 0; g < NKV; g++) {
                    size_t slot = (((size_t)b * NKV + g) * S + kv->filled + t) * HS;
                    memcpy(k_layer + slot, row + (size_t)(NH + g) * HS, HS * sizeof(float));
                    memcpy(v_layer + slot, row + (size_t)(NH + NKV + g) * HS, HS * sizeof(float));
                }
            }
        m->ops->attention_cached_forward(a->atty, a->qkv, k_layer, v_layer, kv->key_mask, B, T, (int)S,
                                         kv->filled, NH, NKV, HS);
    }
    if (head_rows)
        rows_gather_heads(a->atty, B, T, (size_t)NH * HS);
    m->ops->matmul_forward(a->res1, a->atty, LP(m, l, L_PROJ_W), LP(m, l, L_PROJ_B), R, NH * HS, C);
    lora_forward(m, l, LIN_PROJ, a, a->res1, a->atty, R, src->train, stride);
    rows_dropout(m, a->res1, R, (size_t)C, stride, resid_p, rg_dropout_stream(src->seed, SITE_LAYER(l, KIND_ATTN_RESID)));
    if (head_rows)
        for (int b = 0; b < B; b++)
            m->ops->add_inplace(a->res1 + (size_t)b * C, x_in + (size_t)b * T * C, (size_t)C);
    else
        m->ops->add_inplace(a->res1, x_in, (size_t)N * C);

    const float *mlp_in;
    if (c->pre_norm) {
        norm_forward(m, a->ln2, a->ln2_mean, a->ln2_rstd, a->res1, LP(m, l, L_LN2_W), LP(m, l, L_LN2_B), R);
        mlp_in = a->ln2;
    } else {
        norm_forward(m, a->ln1, a->ln1_mean, a->ln1_rstd, a->res1, LP(m, l, L_LN1_W), LP(m, l, L_LN1_B), R);
        mlp_in = a->ln1;
    }
    m->ops->matmul_forward(a->fch, mlp_in, LP(m, l, L_FC_W), LP(m, l, L_FC_B), R, C, fc_width(c));
    lora_forward(m, l, LIN_FC, a, a->fch, mlp_in, R, src->train, stride);
    activation_forward(m, a->fch_act, a->fch, R);
    m->ops->matmul_forward(a->res2, a->fch_act, LP(m, l, L_FC2_W), LP(m, l, L_FC2_B), R, F, C);
    lora_forward(m, l, LIN_FC2, a, a->res2, a->fch_act, R, src->train, stride);
    rows_dropout(m, a->res2, R, (size_t)C, stride, resid_p, rg_dropout_stream(src->seed, SITE_LAYER(l, KIND_MLP_RESID)));
    m->ops->add_inplace(a->res2, mlp_in == a->ln2 ? a->res1 : a->ln1, (size_t)R * C);
    if (!c->pre_norm)
        norm_forward(m, a->ln2, a->ln2_mean, a->ln2_rstd, a->res2, LP(m, l, L_LN2_W), LP(m, l, L_LN2_B), R);
}

/* Backward of the MLP branch's inner part, shared by pre- and post-norm
 * blocks: d_out (N, C) holds the gradient of the branch output (its dropout is
 * undone in place; N rows standing for rows r * stride of the pass); the
 * gradient of the branch input `in` (N, C) is ADDED into d_in (N, C). */
static void mlp_branch_backward(rg_model *m, int l, const rg_layer_acts *a, float *d_out, const float *in,
                                float *d_in, int N, int stride)
{
    const rg_model_config *c = &m->config;
    const int C = c->n_embd, F = c->n_inner, FW = fc_width(c);
    rows_dropout(m, d_out, N, (size_t)C, stride, m->train ? c->resid_pdrop : 0.0f,
                 rg_dropout_stream(m->seed, SITE_LAYER(l, KIND_MLP_RESID)));
    activation_forward(m, a->fch_act, a->fch, N); /* again: it lives in d_fch (carve_layer) */
    memset(m->d_fch_act, 0, (size_t)N * F * sizeof(float));
    m->ops->matmul_backward(m->d_fch_act, LG(m, l, L_FC2_W), LG(m, l, L_FC2_B), d_out, a->fch_act, LP(m, l, L_FC2_W), N, F, C);
    lora_backward(m, l, LIN_FC2, a, d_out, a->fch_act, m->d_fch_act, N, stride);
    memset(m->d_fch, 0, (size_t)N * FW * sizeof(float));
    activation_backward(m, m->d_fch, a->fch, m->d_fch_act, N);
    m->ops->matmul_backward(d_in, LG(m, l, L_FC_W), LG(m, l, L_FC_B), m->d_fch, in, LP(m, l, L_FC_W), N, C, FW);
    lora_backward(m, l, LIN_FC, a, m->d_fch, in, d_in, N, stride);
}

/* Backward of the attention branch's inner part, likewise: d_out (N, C) is
 * the gradient of the branch output, or (B, C) with head_rows; the gradient
 * of its input `in` (N, C) is ADDED into d_in (N, C), or not computed when
 * d_in is NULL. */
static void attention_branch_backward(rg_model *m, int l, const rg_layer_acts *a, float *d_out,
                                      const float *in, float *d_in, int B, int T, int head_rows)
{
    const rg_model_config *c = &m->config;
    const int N = B * T, C = c->n_embd, NH = c->n_head, NKV = c->n_kv_head, HS = c->head_dim;
    const int QKV = qkv_width(c), R = head_rows ? B : N, stride = head_rows ? T : 1;
    rows_dropout(m, d_out, R, (size_t)C, stride, m->train ? c->resid_pdrop : 0.0f,
                 rg_dropout_stream(m->seed, SITE_LAYER(l, KIND_ATTN_RESID)));
    memset(m->d_atty, 0, (size_t)N * NH * HS * sizeof(float));
    m->ops->matmul_backward(m->d_atty, LG(m, l, L_PROJ_W), LG(m, l, L_PROJ_B), d_out, a->atty, LP(m, l, L_PROJ_W), R, NH * HS, C);
    lora_backward(m, l, LIN_PROJ, a, d_out, a->atty, m->d_atty, R, stride);
    if (head_rows) /* the other queries' outputs fed nothing: their gradient is 0 */
        rows_spread_heads(m->d_atty, B, T, (size_t)NH * HS);
    memset(m->d_qkv, 0, (size_t)N * QKV * sizeof(float));
    m->ops->attention_backward(m->d_qkv, m->d_atty, a->qkv, a->att, m->key_mask, B, T, NH, NKV, HS, c->causal,
                               m->train ? c->attn_pdrop : 0.0f,
                               rg_dropout_stream(m->seed, SITE_LAYER(l, KIND_ATTN_PROBS)));
    if (c->position == RG_POSITION_ROPE)
        m->ops->rope_backward(m->d_qkv, m->positions, N, NH, NKV, HS, c->rope_theta);
    m->ops->matmul_backward(d_in, LG(m, l, L_QKV_W), LG(m, l, L_QKV_B), m->d_qkv, in, LP(m, l, L_QKV_W), N, C, QKV);
    lora_backward(m, l, LIN_QKV, a, m->d_qkv, in, d_in, N, 1);
}

/* One block, backward. On entry d_res (N, C) holds the gradient of the
 * block's output; on exit, when need_dx, the gradient of its input. */
static void block_backward(rg_model *m, int l, int B, int T, int need_dx, int head_rows)
{
    const rg_model_config *c = &m->config;
    const int N = B * T, R = head_rows ? B : N, stride = head_rows ? T : 1;
    const size_t NC = (size_t)N * c->n_embd, RC = (size_t)R * c->n_embd;
    rg_layer_acts *a = layer_acts(m, l);
    const float *x_in = layer_input(m, l);
    float *d_res = m->d_res, *d_tmp = m->d_tmp, *d_tmp2 = m->d_tmp2;

    /* With head_rows, d_res holds the (B, C) gradient of the block's rows
     * until the attention branch, whose input has all N rows. */
    if (c->pre_norm) {
        /* MLP branch: res2 = res1 + drop(fc2(act(fc(ln2(res1))))) */
        memcpy(d_tmp, d_res, RC * sizeof(float));
        memset(d_tmp2, 0, RC * sizeof(float));
        mlp_branch_backward(m, l, a, d_tmp, a->ln2, d_tmp2, R, stride);
        norm_backward(m, d_res, LG(m, l, L_LN2_W), LG(m, l, L_LN2_B), d_tmp2, a->res1, LP(m, l, L_LN2_W), a->ln2_mean, a->ln2_rstd, R);
        /* attention branch: res1 = x + drop(proj(attn(ln1(x)))) */
        memcpy(d_tmp, d_res, RC * sizeof(float));
        if (head_rows && need_dx)
            rows_spread_heads(d_res, B, T, (size_t)c->n_embd);
        float *ln1_w_grad = LG(m, l, L_LN1_W), *ln1_b_grad = LG(m, l, L_LN1_B);
        int need_dln1 = need_dx || ln1_w_grad != NULL || ln1_b_grad != NULL;
        if (need_dln1)
            memset(d_tmp2, 0, NC * sizeof(float));
        attention_branch_backward(m, l, a, d_tmp, a->ln1, need_dln1 ? d_tmp2 : NULL, B, T, head_rows);
        if (need_dln1)
            norm_backward(m, need_dx ? d_res : NULL, ln1_w_grad, ln1_b_grad, d_tmp2, x_in, LP(m, l, L_LN1_W), a->ln1_mean, a->ln1_rstd, N);
    } else {
        /* out = ln2(res2), res2 = m + drop(mlp(m)), m = ln1(res1), res1 = x + drop(attn(x)) */
        memset(d_tmp, 0, RC * sizeof(float));
        norm_backward(m, d_tmp, LG(m, l, L_LN2_W), LG(m, l, L_LN2_B), d_res, a->res2, LP(m, l, L_LN2_W), a->ln2_mean, a->ln2_rstd, R);
        memcpy(d_res, d_tmp, RC * sizeof(float));
        mlp_branch_backward(m, l, a, d_tmp, a->ln1, d_res, R, stride);
        memset(d_tmp, 0, RC * sizeof(float));
        norm_backward(m, d_tmp, LG(m, l, L_LN1_W), LG(m, l, L_LN1_B), d_res, a->res1, LP(m, l, L_LN1_W), a->ln1_mean, a->ln1_rstd, R);
        memcpy(d_res, d_tmp, RC * sizeof(float));
        if (head_rows && need_dx)
            rows_spread_heads(d_res, B, T, (size_t)c->n_embd);
        attention_branch_backward(m, l, a, d_tmp, x_in, need_dx ? d_res : NULL, B, T, head_rows);
    }
}

/* ------------------------------------------------------------------------ */
/* forward                                                                   */
/* ------------------------------------------------------------------------ */

/* Positions of each token: causal models count real tokens (see rg_model.h). */
static void positions_fill(const rg_model *m, int32_t *positions, const int32_t *mask, int B,
                           int T, const int32_t *start)
{
    for (int b = 0; b < B; b++) {
        int32_t seen = start ? start[b] : 0;
        for (int t = 0; t < T; t++) {
            size_t i = (size_t)b * T + t;
            if (!m->config.causal || mask == NULL) {
                positions[i] = seen + t;
            } else if (mask[i]) {
                positions[i] = seen++;
            } else {
                positions[i] = seen > 0 ? seen - 1 : 0; /* padding: any valid row */
            }
        }
    }
}

static rg_status check_ids(const int32_t *ids, size_t n, int32_t limit, int allow_ignore)
{
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 && allow_ignore)
            continue;
        if (ids[i] < 0 || ids[i] >= limit)
            return RG_ERR_LABEL_RANGE;
    }
    return RG_OK;
}

static const float *lm_head_weight(rg_model *m) { return m->tied ? GP(m, G_WTE) : GP(m, G_LM_HEAD); }
static float *lm_head_grad(rg_model *m) { return m->tied ? GG(m, G_WTE) : GG(m, G_LM_HEAD); }

/* The LM head with targets runs on HEAD_CHUNK rows at a time unless the whole
 * (rows, V) logits wait for the backward (FULL: a head weight that trains, in
 * training, and logits of at most head_keep_floats): in training with a frozen
 * head the forward also takes each chunk's gradient towards the head input
 * (FUSED); otherwise it keeps the log-sum-exps only and the backward makes the
 * logits again chunk by chunk (CHUNKED: one more head product, far less
 * memory when rows x V is large). */
enum { HEAD_FULL = 0, HEAD_FUSED = 1, HEAD_CHUNKED = 2, HEAD_CHUNK = 256 };

static int head_mode(rg_model *m, int train, size_t rows)
{
    if (!train)
        return HEAD_CHUNKED;
    if (lm_head_grad(m) == NULL)
        return HEAD_FUSED;
    size_t logits;
    if (!rg_size_mul(rows, (size_t)m->config.vocab_size, &logits) || logits > m->head_keep_floats)
        return HEAD_CHUNKED;
    return HEAD_FULL;
}

/* The LM head weight made ready once (op table's weight_prepare) for products over
 * `rows` rows in HEAD_CHUNK pieces; NULL (each product reads the weight itself) for one
 * chunk or a table without it. Prepared again at each use, so no change to the weight
 * can be missed; the handle is kept between uses only for its memory (fresh pages for
 * it each step cost ~5% of a SmolLM2 step in page faults). */
static void *head_prepare(rg_model *m, int rows, int input_grad)
{
    if (rows <= HEAD_CHUNK || m->ops->weight_prepare == NULL)
        return NULL;
    if (m->head_prepared_ops != m->ops)
        head_prepared_free(m);
    m->head_prepared = m->ops->weight_prepare(m->head_prepared, lm_head_weight(m), m->config.n_embd,
                                              m->config.vocab_size, HEAD_CHUNK, input_grad);
    m->head_prepared_ops = m->head_prepared != NULL ? m->ops : NULL;
    return m->head_prepared;
}

/* logits (R, V) = in (R, C) . head^T */
static void head_logits(rg_model *m, const void *prepared, float *logits, const float *in, int R)
{
    if (prepared != NULL)
        m->ops->matmul_forward_prepared(logits, in, prepared, NULL, R);
    else
        m->ops->matmul_forward(logits, in, lm_head_weight(m), NULL, R, m->config.n_embd, m->config.vocab_size);
}

/* d_in (R, C) += d_logits (R, V) . head (d_in NULL: not needed), and the head's
 * gradient when it trains */
static void head_backward(rg_model *m, const void *prepared, float *d_in, const float *d_logits, const float *in,
                          int R)
{
    if (prepared != NULL && d_in != NULL) {
        m->ops->matmul_input_grad_prepared(d_in, d_logits, prepared, R);
        d_in = NULL;
    }
    if (d_in != NULL || lm_head_grad(m) != NULL)
        m->ops->matmul_backward(d_in, lm_head_grad(m), NULL, d_logits, in, lm_head_weight(m), R,
                                m->config.n_embd, m->config.vocab_size);
}

/* Whether the backward needs the gradient of the head input (something below trains). */
static int head_input_needs_grad(rg_model *m)
{
    return lowest_trainable_block(m) < m->config.n_layer || embeddings_train(m) || GG(m, G_LNF_W) != NULL;
}

rg_status rg_model_forward(rg_model *m, const int32_t *tokens, const int32_t *attention_mask,
                           const int32_t *token_types, const int32_t *targets, int B, int T,
                           int train, uint64_t seed, float *loss)
{
    if (m == NULL)
        return RG_ERR_INVALID_ARG;
    /* Whatever happens below, the previous pass is over: a failed forward must
     * not leave its predecessor's activations for a backward to apply to the
     * wrong batch, nor its logits for a getter to return. */
    m->has_targets = 0;
    m->logits_valid = 0;
    m->frozen_output_valid = 0;
    const float *frozen_in = m->frozen_input; /* one-shot */
    m->frozen_input = NULL;
    if (tokens == NULL || (targets != NULL && loss == NULL))
        return RG_ERR_INVALID_ARG;
    const int from = frozen_blocks(m);
    if (frozen_in != NULL && (from == 0 || targets == NULL))
        return RG_ERR_STATE;
    if (targets != NULL && m->lora_merged)
        return RG_ERR_STATE; /* the adapters' gradients need them unmerged */
    if (B <= 0 || T <= 0)
        return RG_ERR_EMPTY;
    const rg_model_config *c = &m->config;
    if (T > c->n_positions)
        return RG_ERR_SHAPE;
    if ((int64_t)B * T > RG_MODEL_MAX_ROWS)
        return RG_ERR_TOO_LARGE;
    if (token_types != NULL && c->type_vocab_size == 0)
        return RG_ERR_INVALID_ARG;
    const size_t N = (size_t)B * T, C = c->n_embd;
    const int L = c->n_layer;
    RG_TRY(check_ids(tokens, N, c->vocab_size, 0));
    if (token_types != NULL)
        RG_TRY(check_ids(token_types, N, c->type_vocab_size, 0));
    if (targets != NULL)
        RG_TRY(check_ids(targets, is_classifier(c) ? (size_t)B : N,
                         is_classifier(c) ? c->num_labels : c->vocab_size, 1));

    const int save_from = targets != NULL ? lowest_trainable_block(m) : L;
    const int lm_mode = targets != NULL && !is_classifier(c) ? head_mode(m, train, N) : HEAD_FULL;
    const int logit_rows = lm_mode == HEAD_FULL || (int)N < HEAD_CHUNK ? (int)N : HEAD_CHUNK;
    RG_TRY(acts_prepare(m, B, T, save_from, targets != NULL, logit_rows));
    m->head_mode = lm_mode;
    m->head_rows = head_rows_apply(m, T, targets != NULL);
    m->B = B;
    m->T = T;
    m->train = train;
    m->seed = seed;
    m->forward_version = m->trainable_version;

    /* own copies of the integer inputs: the backward pass reads them */
    int32_t *ints = m->ints;
    m->tokens = ints;
    m->positions = ints + N;
    m->key_mask = attention_mask ? ints + 2 * N : NULL;
    /* models with token types use type 0 when none are given (as Hugging Face does) */
    m->types = c->type_vocab_size > 0 ? ints + 3 * N : NULL;
    m->targets = targets ? ints + 4 * N : NULL;
    m->loss_rows = ints + 5 * N;
    m->loss_targets = ints + 6 * N;
    m->n_loss_rows = 0;
    memcpy(m->tokens, tokens, N * sizeof(int32_t));
    if (attention_mask)
        for (size_t i = 0; i < N; i++)
            m->key_mask[i] = attention_mask[i] != 0;
    if (token_types)
        memcpy(m->types, token_types, N * sizeof(int32_t));
    else if (m->types)
        memset(m->types, 0, N * sizeof(int32_t));
    positions_fill(m, m->positions, m->key_mask, B, T, NULL);

    /* Dropout in the frozen part only when frozen_dropout (rg_model_set_frozen_dropout). */
    const int emb_frozen = !embeddings_train(m), lowest = lowest_trainable_block(m);
    const int frozen_train = train && m->frozen_dropout;
    if (frozen_in != NULL) {
        /* the frozen part's output, given: where block from - 1 would have left it */
        memcpy((float *)layer_output(m, layer_acts(m, from - 1)), frozen_in, N * C * sizeof(float));
    } else {
        /* embeddings */
        const int learned = c->position == RG_POSITION_LEARNED;
        float *embedded = c->embed_norm ? m->emb : m->x0;
        m->ops->embedding_forward(embedded, m->tokens, learned ? m->positions : NULL, m->types, GP(m, G_WTE),
                                  GP(m, G_WPE), GP(m, G_WTT), (int)N, (int)C);
        if (c->embed_norm)
            m->ops->layernorm_forward(m->x0, m->emb_mean, m->emb_rstd, m->emb, GP(m, G_EMB_LN_W),
                                      GP(m, G_EMB_LN_B), (int)N, (int)C, c->norm_eps);
        m->ops->dropout_apply(m->x0, N * C, 0, (emb_frozen ? frozen_train : train) ? c->embd_pdrop : 0.0f,
                              rg_dropout_stream(seed, SITE_EMBEDDING));
    }

    attention_source src = {NULL, m->key_mask, train, seed};
    attention_source frozen_src = {NULL, m->key_mask, frozen_train, seed};
    for (int l = frozen_in != NULL ? from : 0; l < L; l++) {
        if (rg_interrupt_pending())
            return RG_ERR_INTERRUPTED; /* has_targets stays 0: no backward of this pass */
        block_forward(m, l, layer_acts(m, l), layer_input(m, l), B, T, m->positions,
                      emb_frozen && l < lowest ? &frozen_src : &src, m->head_rows && l == L - 1);
    }

    const float *hidden = layer_output(m, layer_acts(m, L - 1)); /* (B, C) with head_rows */
    if (c->final_norm) {
        norm_forward(m, m->lnf, m->lnf_mean, m->lnf_rstd, hidden, GP(m, G_LNF_W), GP(m, G_LNF_B),
                     m->head_rows ? B : (int)N);
        hidden = m->lnf;
    }

    if (!is_classifier(c) && targets == NULL) {
        head_logits(m, NULL, m->logits, hidden, (int)N);
    } else if (!is_classifier(c)) {
        /* position t predicts token t + 1 (Hugging Face shifts labels the same way);
         * only rows with a target go through the vocabulary-sized head */
        int rows = 0;
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++) {
                const size_t i = (size_t)b * T + t;
                m->targets[i] = t + 1 < T ? targets[i + 1] : -100;
                if (m->targets[i] >= 0) {
                    m->loss_rows[rows] = (int32_t)i;
                    m->loss_targets[rows] = m->targets[i];
                    rows++;
                }
            }
        m->n_loss_rows = rows;
        for (int r = 0; r < rows; r++)
            memcpy(m->head_in + (size_t)r * C, hidden + (size_t)m->loss_rows[r] * C, C * sizeof(float));
        double total = 0.0;
        m->loss_count = 0;
        const int V = c->vocab_size, fused_grad = lm_mode == HEAD_FUSED && head_input_needs_grad(m);
        if (lm_mode == HEAD_FULL && rows > 0) {
            head_logits(m, NULL, m->logits, m->head_in, rows);
            total = m->ops->crossentropy_forward(m->lse, m->logits, m->loss_targets, rows, V, &m->loss_count);
        } else if (rows > 0) {
            if (fused_grad) /* (rows, C) unscaled gradient of the head input; the backward scales it */
                memset(m->d_tmp2, 0, (size_t)rows * C * sizeof(float));
            void *head = head_prepare(m, rows, fused_grad);
            for (int r0 = 0; r0 < rows; r0 += HEAD_CHUNK) {
                const int R = rows - r0 < HEAD_CHUNK ? rows - r0 : HEAD_CHUNK;
                const float *in = m->head_in + (size_t)r0 * C;
                long count = 0;
                head_logits(m, head, m->logits, in, R);
                total += m->ops->crossentropy_forward(m->lse + r0, m->logits, m->loss_targets + r0, R, V, &count);
                m->loss_count += count;
                if (fused_grad) { /* the head is frozen here: its gradient is not taken */
                    m->ops->crossentropy_backward(m->logits, m->lse + r0, m->loss_targets + r0, R, V, 1.0f);
                    head_backward(m, head, m->d_tmp2 + (size_t)r0 * C, m->logits, in, R);
                }
            }
        }
        m->loss = m->loss_count > 0 ? (float)(total / (double)m->loss_count) : 0.0f;
    } else {
        const int K = c->num_labels;
        for (int b = 0; b < B; b++)
            memcpy(m->cls_h0 + (size_t)b * C, hidden + cls_row(m, b) * C, C * sizeof(float));
        m->ops->matmul_forward(m->cls_pre, m->cls_h0, GP(m, G_CLS_PRE_W), GP(m, G_CLS_PRE_B), B, (int)C, (int)C);
        if (c->head == RG_HEAD_CLS_DISTILBERT)
            m->ops->relu_forward(m->cls_act, m->cls_pre, (size_t)B * C);
        else
            m->ops->tanh_forward(m->cls_act, m->cls_pre, (size_t)B * C);
        memcpy(m->cls_drop, m->cls_act, (size_t)B * C * sizeof(float));
        m->ops->dropout_apply(m->cls_drop, (size_t)B * C, 0, train ? c->cls_pdrop : 0.0f, rg_dropout_stream(seed, SITE_CLASSIFIER));
        m->ops->matmul_forward(m->logits, m->cls_drop, GP(m, G_CLS_OUT_W), GP(m, G_CLS_OUT_B), B, (int)C, K);
        if (targets != NULL) {
            memcpy(m->targets, targets, (size_t)B * sizeof(int32_t));
            double total = m->ops->crossentropy_forward(m->lse, m->logits, m->targets, B, K, &m->loss_count);
            m->loss = m->loss_count > 0 ? (float)(total / (double)m->loss_count) : 0.0f;
        }
    }
    m->logits_valid = is_classifier(c) || targets == NULL;
    if (targets != NULL) {
        if (!isfinite(m->loss))
            return RG_ERR_NONFINITE;
        *loss = m->loss;
        m->has_targets = 1;
        m->frozen_output_valid = from > 0 && from + 1 >= m->lowest_saved_layer; /* not overwritten */
    }
    return RG_OK;
}

const float *rg_model_frozen_output(const rg_model *model)
{
    if (model == NULL || !model->frozen_output_valid)
        return NULL;
    rg_model *m = (rg_model *)model; /* layer_acts only reads */
    return layer_output(m, layer_acts(m, frozen_blocks(m) - 1));
}

rg_status rg_model_set_frozen_input(rg_model *model, const float *hidden)
{
    if (model == NULL || hidden == NULL)
        return RG_ERR_INVALID_ARG;
    if (frozen_blocks(model) == 0)
        return RG_ERR_STATE;
    model->frozen_input = hidden;
    return RG_OK;
}

const float *rg_model_logits(const rg_model *model, int *rows, int *cols)
{
    if (model == NULL || !model->logits_valid)
        return NULL;
    const rg_model_config *c = &model->config;
    if (is_classifier(c)) {
        *rows = model->B;
        *cols = c->num_labels;
    } else {
        *rows = model->B * model->T;
        *cols = c->vocab_size;
    }
    return model->logits;
}

int rg_model_backward_ready(const rg_model *model)
{
    return model != NULL && model->has_targets && model->forward_version == model->trainable_version;
}

rg_status rg_model_set_ops(rg_model *model, const rg_ops_table *ops)
{
    if (model == NULL || !rg_ops_table_complete(ops))
        return RG_ERR_INVALID_ARG;
    model->has_targets = 0; /* a pending pass's activations are the old table's: no backward of it */
    head_prepared_free(model);
    model->ops = ops;
    return RG_OK;
}

rg_status rg_model_try_acquire(rg_model *model)
{
    if (model == NULL)
        return RG_ERR_INVALID_ARG;
    int expected = 0;
    return atomic_compare_exchange_strong(&model->busy, &expected, 1) ? RG_OK : RG_ERR_STATE;
}

void rg_model_release(rg_model *model)
{
    if (model != NULL)
        atomic_store(&model->busy, 0);
}

/* ------------------------------------------------------------------------ */
/* backward                                                                  */
/* ------------------------------------------------------------------------ */

rg_status rg_model_backward(rg_model *m, float loss_scale)
{
    if (m == NULL || !isfinite(loss_scale))
        return RG_ERR_INVALID_ARG;
    if (!m->has_targets || m->forward_version != m->trainable_version)
        return RG_ERR_STATE;
    m->has_targets = 0; /* the logits are consumed below */
    m->logits_valid = 0;
    if (m->loss_count == 0)
        return RG_OK;
    const rg_model_config *c = &m->config;
    const int B = m->B, T = m->T, N = B * T, C = c->n_embd, L = c->n_layer;
    const int lowest = lowest_trainable_block(m);
    const int emb_train = embeddings_train(m);
    const int need_hidden_grad = lowest < L || emb_train;
    const float scale = loss_scale / (float)m->loss_count;
    const float *hidden = layer_output(m, layer_acts(m, L - 1));

    memset(m->d_res, 0, (size_t)N * C * sizeof(float));
    if (!is_classifier(c)) {
        const int rows = m->n_loss_rows, V = c->vocab_size;
        const int need_head_in_grad = head_input_needs_grad(m);
        float *d_rows = m->d_tmp2; /* (rows, C) gradient of the compact head input */
        if (m->head_mode == HEAD_FUSED) { /* the forward took it, unscaled */
            if (need_head_in_grad)
                for (size_t i = 0; i < (size_t)rows * C; i++)
                    d_rows[i] *= scale;
        } else {
            if (need_head_in_grad)
                memset(d_rows, 0, (size_t)rows * C * sizeof(float));
            const int chunk = m->head_mode == HEAD_CHUNKED ? HEAD_CHUNK : (rows > 0 ? rows : 1);
            /* the head weight changes only after the backward: one preparation serves every chunk */
            void *head = m->head_mode == HEAD_CHUNKED ? head_prepare(m, rows, need_head_in_grad) : NULL;
            for (int r0 = 0; r0 < rows; r0 += chunk) {
                const int R = rows - r0 < chunk ? rows - r0 : chunk;
                const float *in = m->head_in + (size_t)r0 * C;
                if (m->head_mode == HEAD_CHUNKED) /* the logits again: the forward kept only lse */
                    head_logits(m, head, m->logits, in, R);
                m->ops->crossentropy_backward(m->logits, m->lse + r0, m->loss_targets + r0, R, V, scale);
                head_backward(m, head, need_head_in_grad ? d_rows + (size_t)r0 * C : NULL, m->logits, in, R);
            }
        }
        float *d_head_in = c->final_norm ? m->d_tmp : m->d_res; /* (N, C) */
        if (need_head_in_grad) {
            memset(d_head_in, 0, (size_t)N * C * sizeof(float));
            for (int r = 0; r < rows; r++)
                memcpy(d_head_in + (size_t)m->loss_rows[r] * C, d_rows + (size_t)r * C, C * sizeof(float));
        }
        if (c->final_norm)
            norm_backward(m, need_hidden_grad ? m->d_res : NULL, GG(m, G_LNF_W), GG(m, G_LNF_B), m->d_tmp,
                          hidden, GP(m, G_LNF_W), m->lnf_mean, m->lnf_rstd, N);
    } else {
        const int K = c->num_labels;
        const size_t BC = (size_t)B * C;
        m->ops->crossentropy_backward(m->logits, m->lse, m->targets, B, K, scale);
        float *d_drop = m->d_tmp2, *d_pre = m->d_tmp;
        memset(d_drop, 0, BC * sizeof(float));
        m->ops->matmul_backward(d_drop, GG(m, G_CLS_OUT_W), GG(m, G_CLS_OUT_B), m->logits, m->cls_drop, GP(m, G_CLS_OUT_W), B, C, K);
        m->ops->dropout_apply(d_drop, BC, 0, m->train ? c->cls_pdrop : 0.0f, rg_dropout_stream(m->seed, SITE_CLASSIFIER));
        memset(d_pre, 0, BC * sizeof(float));
        if (c->head == RG_HEAD_CLS_DISTILBERT)
            m->ops->relu_backward(d_pre, m->cls_act, d_drop, BC);
        else
            m->ops->tanh_backward(d_pre, m->cls_act, d_drop, BC);
        float *d_h0 = m->d_tmp2;
        memset(d_h0, 0, BC * sizeof(float));
        m->ops->matmul_backward(need_hidden_grad ? d_h0 : NULL, GG(m, G_CLS_PRE_W), GG(m, G_CLS_PRE_B), d_pre, m->cls_h0, GP(m, G_CLS_PRE_W), B, C, C);
        for (int b = 0; b < B; b++)
            memcpy(m->d_res + cls_row(m, b) * C, d_h0 + (size_t)b * C, C * sizeof(float));
    }
    if (!need_hidden_grad)
        return RG_OK;

    for (int l = L - 1; l >= lowest; l--) {
        if (rg_interrupt_pending())
            return RG_ERR_INTERRUPTED; /* gradients partly accumulated: the caller discards them */
        block_backward(m, l, B, T, l > lowest || emb_train, m->head_rows && l == L - 1);
    }

    if (emb_train) {
        m->ops->dropout_apply(m->d_res, (size_t)N * C, 0, m->train ? c->embd_pdrop : 0.0f, rg_dropout_stream(m->seed, SITE_EMBEDDING));
        float *d_emb = m->d_res;
        if (c->embed_norm) {
            memset(m->d_tmp, 0, (size_t)N * C * sizeof(float));
            m->ops->layernorm_backward(m->d_tmp, GG(m, G_EMB_LN_W), GG(m, G_EMB_LN_B), m->d_res, m->emb,
                                       GP(m, G_EMB_LN_W), m->emb_mean, m->emb_rstd, N, C);
            d_emb = m->d_tmp;
        }
        m->ops->embedding_backward(GG(m, G_WTE), GG(m, G_WPE), GG(m, G_WTT), d_emb, m->tokens,
                                   c->position == RG_POSITION_LEARNED ? m->positions : NULL, m->types, N, C);
    }
    return RG_OK;
}

/* ------------------------------------------------------------------------ */
/* generation with a key/value cache                                         */
/* ------------------------------------------------------------------------ */

rg_status rg_model_cache_reset(rg_model *model, int B, int max_T)
{
    if (model == NULL)
        return RG_ERR_INVALID_ARG;
    const rg_model_config *c = &model->config;
    if (!c->causal || is_classifier(c))
        return RG_ERR_UNSUPPORTED;
    if (B <= 0 || max_T <= 0)
        return RG_ERR_EMPTY;
    if (max_T > c->n_positions)
        return RG_ERR_SHAPE;
    if ((int64_t)B * max_T > RG_MODEL_MAX_ROWS)
        return RG_ERR_TOO_LARGE;
    head_prepared_free(model);
    size_t n; /* L * B * NKV * max_T * HS */
    if (!rg_size_mul((size_t)c->n_layer * (size_t)B, (size_t)c->n_kv_head, &n) ||
        !rg_size_mul(n, (size_t)max_T * (size_t)c->head_dim, &n) || n > (size_t)RG_MODEL_MAX_ACTS)
        return RG_ERR_TOO_LARGE;
    cache_free(model->cache);
    model->cache = NULL;
    rg_kv_cache *kv = calloc(1, sizeof(*kv));
    if (kv == NULL)
        return RG_ERR_NOMEM;
    kv->k = malloc(n * sizeof(float));
    kv->v = malloc(n * sizeof(float));
    kv->key_mask = calloc((size_t)B * max_T, sizeof(int32_t));
    kv->n_real = calloc((size_t)B, sizeof(int32_t));
    if (kv->k == NULL || kv->v == NULL || kv->key_mask == NULL || kv->n_real == NULL) {
        cache_free(kv);
        return RG_ERR_NOMEM;
    }
    kv->B = B;
    kv->max_T = max_T;
    model->cache = kv;
    return RG_OK;
}

void rg_model_cache_info(const rg_model *model, int *B, int *max_T, int *filled)
{
    const rg_kv_cache *kv = model ? model->cache : NULL;
    *B = kv ? kv->B : 0;
    *max_T = kv ? kv->max_T : 0;
    *filled = kv ? kv->filled : 0;
}

rg_status rg_model_cache_forward(rg_model *m, const int32_t *tokens, const int32_t *mask, int T,
                                 float *logits)
{
    return rg_model_cache_forward_types(m, tokens, mask, NULL, T, logits);
}

/* A cached forward's float scratch: its embedded rows, two ping-pong block sets
 * and the last row of each sequence; carved once to size it, once to lay it out.
 * A layer reads only the previous one's output, so the two sets share every
 * buffer but their outputs (as the frozen blocks' scratch sets do). */
typedef struct {
    float *x0, *emb, *emb_mean, *emb_rstd; /* (N, C), (N, C), (N,), (N,) */
    rg_layer_acts sets[2];
    float *last, *last_norm, *last_mean, *last_rstd; /* (B, C), (B, C), (B,), (B,) */
} decode_scratch;

static void carve_decode(carver *cv, decode_scratch *s, const rg_model_config *c, int B, int T)
{
    const size_t N = (size_t)B * T, C = (size_t)c->n_embd;
    s->x0 = carve(cv, N * C);
    s->emb = carve(cv, N * C);
    s->emb_mean = carve(cv, N);
    s->emb_rstd = carve(cv, N);
    carve_layer(cv, &s->sets[0], c, B, T, SET_SCRATCH);
    s->sets[1] = s->sets[0];
    float *output = carve(cv, N * C);
    if (c->pre_norm)
        s->sets[1].res2 = output;
    else
        s->sets[1].ln2 = output;
    s->last = carve(cv, (size_t)B * C);
    s->last_norm = carve(cv, (size_t)B * C);
    s->last_mean = carve(cv, (size_t)B);
    s->last_rstd = carve(cv, (size_t)B);
}

rg_status rg_model_cache_forward_types(rg_model *m, const int32_t *tokens, const int32_t *mask,
                                       const int32_t *token_types, int T, float *logits)
{
    if (m == NULL || tokens == NULL || logits == NULL)
        return RG_ERR_INVALID_ARG;
    m->frozen_output_valid = 0; /* the activation block is reused below */
    rg_kv_cache *kv = m->cache;
    if (kv == NULL)
        return RG_ERR_STATE;
    if (T <= 0)
        return RG_ERR_EMPTY;
    if (T > kv->max_T - kv->filled) /* written so that it cannot overflow */
        return RG_ERR_SHAPE;
    const rg_model_config *c = &m->config;
    if (token_types != NULL && c->type_vocab_size == 0)
        return RG_ERR_INVALID_ARG;
    const int B = kv->B, N = B * T, C = c->n_embd, L = c->n_layer; /* B * max_T <= RG_MODEL_MAX_ROWS */
    RG_TRY(check_ids(tokens, (size_t)N, c->vocab_size, 0));
    if (token_types != NULL)
        RG_TRY(check_ids(token_types, (size_t)N, c->type_vocab_size, 0));

    /* scratch: positions, then (one float block) x0, two ping-pong block sets, final rows */
    carver sizing = {NULL, 0, 0};
    decode_scratch sc;
    carve_decode(&sizing, &sc, c, B, T);
    if (sizing.overflow || sizing.used > (size_t)RG_MODEL_MAX_ACTS)
        return RG_ERR_TOO_LARGE;
    float *block = malloc(sizing.used * sizeof(float));
    /* positions, then the token types the full forward would use (type 0 when none given) */
    int32_t *positions = malloc(2 * (size_t)N * sizeof(int32_t));
    if (block == NULL || positions == NULL) {
        free(block);
        free(positions);
        return RG_ERR_NOMEM;
    }
    int32_t *types = c->type_vocab_size > 0 ? positions + N : NULL;
    if (types != NULL && token_types != NULL)
        memcpy(types, token_types, (size_t)N * sizeof(int32_t));
    else if (types != NULL)
        memset(types, 0, (size_t)N * sizeof(int32_t));
    carver cv = {block, 0, 0};
    carve_decode(&cv, &sc, c, B, T);
    float *x0 = sc.x0, *emb = sc.emb, *emb_mean = sc.emb_mean, *emb_rstd = sc.emb_rstd;
    float *last = sc.last, *last_norm = sc.last_norm, *last_mean = sc.last_mean, *last_rstd = sc.last_rstd;
    rg_layer_acts *sets = sc.sets;

    rg_status status = RG_OK;
    for (int b = 0; b < B; b++)
        for (int t = 0; t < T; t++)
            kv->key_mask[(size_t)b * kv->max_T + kv->filled + t] = mask ? mask[(size_t)b * T + t] != 0 : 1;
    positions_fill(m, positions, mask, B, T, kv->n_real);
    if (c->position == RG_POSITION_LEARNED)
        for (int i = 0; i < N; i++)
            if (positions[i] >= c->n_positions)
                status = RG_ERR_SHAPE;
    if (status == RG_OK) {
        const int learned = c->position == RG_POSITION_LEARNED;
        m->ops->embedding_forward(c->embed_norm ? emb : x0, tokens, learned ? positions : NULL, types,
                                  GP(m, G_WTE), GP(m, G_WPE), GP(m, G_WTT), N, C);
        if (c->embed_norm)
            m->ops->layernorm_forward(x0, emb_mean, emb_rstd, emb, GP(m, G_EMB_LN_W), GP(m, G_EMB_LN_B), N, C, c->norm_eps);
        attention_source src = {kv, NULL, 0, 0};
        const float *x = x0;
        for (int l = 0; l < L && status == RG_OK; l++) {
            /* a long prefill stops between layers; what it wrote lies past
             * `filled`, so the cache is as before the call */
            if (rg_interrupt_pending())
                status = RG_ERR_INTERRUPTED;
            else
                block_forward(m, l, &sets[l % 2], x, B, T, positions, &src, 0);
            x = layer_output(m, &sets[l % 2]);
        }
    }
    if (status == RG_OK) {
        const float *x = layer_output(m, &sets[(L - 1) % 2]);
        for (int b = 0; b < B; b++)
            memcpy(last + (size_t)b * C, x + ((size_t)b * T + T - 1) * C, C * sizeof(float));
        const float *h = last;
        if (c->final_norm) {
            norm_forward(m, last_norm, last_mean, last_rstd, last, GP(m, G_LNF_W), GP(m, G_LNF_B), B);
            h = last_norm;
        }
        head_logits(m, NULL, logits, h, B);
        for (int b = 0; b < B; b++)
            for (int t = 0; t < T; t++)
                kv->n_real[b] += kv->key_mask[(size_t)b * kv->max_T + kv->filled + t];
        kv->filled += T;
    }
    free(block);
    free(positions);
    return status;
}
