/*
 * rg_trainer.c - the epoch loop of a fine-tuning run (semantics in rg_trainer.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "rg_trainer.h"
#include "rg_io.h"

#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "rg_checkpoint.h"
#include "rg_metrics.h"
#include "rg_rng.h"

#define TRAINER_FORMAT 1
#define TRSTATE_SLOTS 32
#define HISTORY_FIELDS 11

/* A data set copied in at init. */
typedef struct data_set {
    int32_t *tokens;     /* (N, T) */
    int32_t *mask;       /* (N, T) or NULL */
    int32_t *types;      /* (N, T) or NULL */
    int32_t *targets;    /* LM (N, T) or NULL (derived from tokens and mask); classification (N,) */
    int32_t *row_width;  /* (N,) last real column + 1 */
    int64_t N;
    int T;
    /* cache_frozen: row i's frozen output, row_width[i] * C floats at frozen + frozen_at[i] */
    float *frozen;       /* NULL: not kept */
    size_t *frozen_at;   /* (N,) */
    uint8_t *frozen_have; /* (N,) */
} data_set;

struct rg_trainer {
    rg_model *model;
    rg_trainer_config config; /* its pointers replaced by the copies below */
    char *checkpoint_path;
    int32_t *orders;          /* (epochs, N) or NULL */
    int32_t *label_values;    /* (K,) */
    int is_lm;
    int K;
    data_set train, eval;
    int has_eval;
    rg_adamw opt;
    int num_batches;
    int64_t total_steps;

    /* the run's position, always at an update boundary between calls */
    int epoch;                /* 0-based current epoch */
    int batch;                /* next micro-batch of that epoch */
    int order_epoch;          /* the epoch `order` was made for, -1: none */
    int32_t *order;           /* (N_train,) */
    double epoch_loss_sum;
    int64_t epoch_batches;
    rg_train_eval *history;   /* (epochs,) */
    int n_history;
    int best_epoch;
    double best_metric;
    float *best;              /* (state_numel,) trainable tensors of the best epoch */
    float *prev;              /* (state_numel,) trainable tensors before the last update */
    int failed;
    int done;

    /* evaluation outputs (classification) */
    int32_t *predictions;     /* (N_eval,) */
    float *eval_logits;       /* (N_eval, K) */
    int64_t *confusion;       /* (K, K) */
    double *per_class;        /* (3K,) precision, recall, f1 */
    int64_t *support;         /* (K,) */
    int32_t *y_true, *y_pred; /* (N_eval,) label values */

    /* one batch */
    int32_t *b_tokens, *b_mask, *b_types, *b_targets; /* (max_bs * T) each */
    float *b_frozen;          /* (max_bs * T * C) with cache_frozen */

    /* data parallelism (rg_trainer.h) */
    rg_comm comm;             /* size 1 without one */
    int dist;                 /* comm.size > 1 */
    int comm_failed;          /* a collective failed: the run stops with RG_ERR_COMM */
    int32_t *shard;           /* (train_batch_size,) this rank's rows of a micro-batch */
    float *comm_buf;          /* (state_numel,) the trainable gradients, packed */
    double *comm_stats;       /* (STATS_FIXED + grad_accum,) */

    rg_train_result result;
    char message[RG_CKPT_MESSAGE_LEN];
};

/* comm_stats: the update's loss and tokens, flags, then one non-finite flag per micro-batch */
enum { ST_LOSS, ST_TOKENS, ST_STOP, ST_ERROR, STATS_FIXED };

static void trainer_message(rg_trainer *t, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void trainer_message(rg_trainer *t, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(t->message, sizeof(t->message), format, args);
    va_end(args);
}

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

rg_trainer_config rg_trainer_config_default(void)
{
    rg_trainer_config c;
    memset(&c, 0, sizeof(c));
    c.adamw.lr = 5e-4;
    c.adamw.beta1 = 0.95;
    c.adamw.beta2 = 0.999;
    c.adamw.eps = 1e-8;
    c.adamw.weight_decay = 0.1;
    c.adamw.max_grad_norm = 1.0;
    c.adamw.warmup_ratio = 0.1;
    c.adamw.schedule = RG_SCHEDULE_LINEAR;
    c.epochs = 5;
    c.train_batch_size = 8;
    c.eval_batch_size = 8;
    c.grad_accum = 4;
    c.trim_padding = 1;
    c.shuffle = 1;
    c.seed = 42;
    c.load_best_at_end = 1;
    c.apply_freezing = 0;
    c.trainable_blocks = -1;
    c.head_policy = RG_HEAD_POLICY_TRAIN;
    c.progress_every = 1;
    c.keep_last_good = 1;
    c.frozen_dropout = 1;
    return c;
}

/* ------------------------------------------------------------------------ */
/* permutation                                                               */
/* ------------------------------------------------------------------------ */

void rg_trainer_permutation(uint64_t seed, int64_t epoch, int64_t n, int32_t *order)
{
    const uint64_t stream = rg_rng_mix(seed ^ rg_rng_mix(0x53485546464C45ull + (uint64_t)epoch));
    uint64_t counter = 0;
    for (int64_t i = 0; i < n; i++)
        order[i] = (int32_t)i;
    for (int64_t i = n - 1; i >= 1; i--) {
        const uint64_t m = (uint64_t)i + 1;
        const uint64_t limit = UINT64_MAX - (UINT64_MAX % m + 1) % m; /* last r of a whole cycle of m */
        uint64_t r;
        do {
            r = rg_rng_bits(stream, counter++);
        } while (r > limit);
        const int64_t j = (int64_t)(r % m);
        int32_t tmp = order[i];
        order[i] = order[j];
        order[j] = tmp;
    }
}

/* ------------------------------------------------------------------------ */
/* data                                                                      */
/* ------------------------------------------------------------------------ */

/* The cache_frozen part of a set (the set keeps its rows). */
static void frozen_cache_free(data_set *d)
{
    free(d->frozen);
    free(d->frozen_at);
    free(d->frozen_have);
    d->frozen = NULL;
    d->frozen_at = NULL;
    d->frozen_have = NULL;
}

static void data_free(data_set *d)
{
    free(d->tokens);
    free(d->mask);
    free(d->types);
    free(d->targets);
    free(d->row_width);
    frozen_cache_free(d);
    memset(d, 0, sizeof(*d));
}

static rg_status ids_check(const int32_t *ids, size_t n, int32_t limit, int allow_negative)
{
    for (size_t i = 0; i < n; i++)
        if ((ids[i] < 0 && !allow_negative) || ids[i] >= limit)
            return RG_ERR_LABEL_RANGE;
    return RG_OK;
}

static rg_status data_copy(rg_trainer *t, data_set *d, const rg_train_data *src, const char *what)
{
    const rg_model_config *c = &t->model->config;
    if (src->tokens == NULL || src->N < 0 || src->T <= 0)
        return RG_ERR_INVALID_ARG;
    if (src->N == 0)
        return RG_ERR_EMPTY;
    if (src->T > c->n_positions) {
        trainer_message(t, "%s: %d columns, the model takes at most %d", what, src->T, c->n_positions);
        return RG_ERR_SHAPE;
    }
    if (src->token_types != NULL && c->type_vocab_size == 0)
        return RG_ERR_INVALID_ARG;
    if (!t->is_lm && src->targets == NULL) {
        trainer_message(t, "%s: a classifier needs targets", what);
        return RG_ERR_INVALID_ARG;
    }
    const size_t NT = (size_t)src->N * (size_t)src->T;
    if (ids_check(src->tokens, NT, c->vocab_size, 0) != RG_OK ||
        (src->token_types && ids_check(src->token_types, NT, c->type_vocab_size, 0) != RG_OK) ||
        (src->targets && ids_check(src->targets, t->is_lm ? NT : (size_t)src->N,
                                   t->is_lm ? c->vocab_size : c->num_labels, 1) != RG_OK)) {
        trainer_message(t, "%s: a token, token type or target outside its range", what);
        return RG_ERR_LABEL_RANGE;
    }
    d->N = src->N;
    d->T = src->T;
    d->tokens = rg_ints_dup(src->tokens, NT);
    d->row_width = malloc((size_t)src->N * sizeof(int32_t));
    if (src->attention_mask)
        d->mask = rg_ints_dup(src->attention_mask, NT);
    if (src->token_types)
        d->types = rg_ints_dup(src->token_types, NT);
    if (src->targets)
        d->targets = rg_ints_dup(src->targets, t->is_lm ? NT : (size_t)src->N);
    if (d->tokens == NULL || d->row_width == NULL || (src->attention_mask && d->mask == NULL) ||
        (src->token_types && d->types == NULL) || (src->targets && d->targets == NULL))
        return RG_ERR_NOMEM;
    for (int64_t i = 0; i < d->N; i++) {
        int w = d->T;
        if (d->mask != NULL) {
            const int32_t *row = d->mask + (size_t)i * d->T;
            while (w > 0 && row[w - 1] == 0)
                w--;
        }
        d->row_width[i] = w;
    }
    return RG_OK;
}

/* The width a batch of these rows is cut to (its widest row with trim_padding). */
static int batch_width(const rg_trainer *t, const data_set *d, const int32_t *rows /* (B,) */, int B)
{
    int width = d->T;
    if (t->config.trim_padding && d->mask != NULL) {
        width = 1;
        for (int b = 0; b < B; b++)
            if (d->row_width[rows[b]] > width)
                width = d->row_width[rows[b]];
    }
    return width;
}

/* The targets the model's loss counts in one row of a batch cut to `width`:
 * LM, position j predicts column j + 1 (its target >= 0); classification,
 * 1 when the row's class id is >= 0. */
static int64_t row_targets(const rg_trainer *t, const data_set *d, int32_t row, int width)
{
    if (!t->is_lm)
        return d->targets[row] >= 0;
    const size_t src = (size_t)row * d->T;
    int64_t n = 0;
    for (int j = 1; j < width; j++) {
        if (d->targets)
            n += d->targets[src + j] >= 0;
        else
            n += d->mask == NULL || d->mask[src + j] > 0;
    }
    return n;
}

/* Gathers rows into the batch buffers, cut to `width` columns; *tokens_out:
 * its real tokens (the mask's sum, or B * width without a mask). */
static void batch_build(rg_trainer *t, const data_set *d, const int32_t *rows /* (B,) */, int B, int width,
                        int64_t *tokens_out)
{
    int64_t real = 0;
    for (int b = 0; b < B; b++) {
        const size_t src = (size_t)rows[b] * d->T, dst = (size_t)b * width;
        memcpy(t->b_tokens + dst, d->tokens + src, (size_t)width * sizeof(int32_t));
        if (d->mask) {
            memcpy(t->b_mask + dst, d->mask + src, (size_t)width * sizeof(int32_t));
            for (int j = 0; j < width; j++)
                real += d->mask[src + j] != 0;
        } else {
            real += width;
        }
        if (d->types)
            memcpy(t->b_types + dst, d->types + src, (size_t)width * sizeof(int32_t));
        if (!t->is_lm) {
            t->b_targets[b] = d->targets[rows[b]];
        } else if (d->targets) {
            memcpy(t->b_targets + dst, d->targets + src, (size_t)width * sizeof(int32_t));
        } else {
            for (int j = 0; j < width; j++) /* LMBatches: the tokens, -100 on padding */
                t->b_targets[dst + j] = (d->mask == NULL || d->mask[src + j] > 0) ? d->tokens[src + j] : -100;
        }
    }
    *tokens_out = real;
}

/* One batch forward. With cache_frozen, a batch whose rows all have their
 * frozen output kept starts at the first trainable block from those outputs
 * (padding columns zero: masked keys, and rows that no loss reads); any other
 * batch runs whole and keeps what its rows lacked. */
static rg_status batch_forward(rg_trainer *t, data_set *d, const int32_t *rows, int B, int width, int train,
                               uint64_t seed, float *loss, int64_t *tokens)
{
    batch_build(t, d, rows, B, width, tokens);
    const size_t C = (size_t)t->model->config.n_embd;
    int cached = d->frozen != NULL;
    for (int b = 0; b < B && cached; b++)
        cached = d->frozen_have[rows[b]];
    if (cached) {
        for (int b = 0; b < B; b++) {
            float *dst = t->b_frozen + (size_t)b * width * C;
            const size_t have = (size_t)d->row_width[rows[b]] * C;
            memcpy(dst, d->frozen + d->frozen_at[rows[b]], have * sizeof(float));
            memset(dst + have, 0, ((size_t)width * C - have) * sizeof(float));
        }
        RG_TRY(rg_model_set_frozen_input(t->model, t->b_frozen));
    }
    rg_status status = rg_model_forward(t->model, t->b_tokens, d->mask ? t->b_mask : NULL,
                                        d->types ? t->b_types : NULL, t->b_targets, B, width, train, seed, loss);
    const float *out = status == RG_OK && d->frozen != NULL && !cached ? rg_model_frozen_output(t->model) : NULL;
    if (out != NULL)
        for (int b = 0; b < B; b++)
            if (!d->frozen_have[rows[b]]) {
                memcpy(d->frozen + d->frozen_at[rows[b]], out + (size_t)b * width * C,
                       (size_t)d->row_width[rows[b]] * C * sizeof(float));
                d->frozen_have[rows[b]] = 1;
            }
    return status;
}

/* cache_frozen: room for every row's frozen output, when there is a frozen
 * part and it fits the limit; otherwise the run goes without (result.frozen_cache 0). */
static rg_status frozen_cache_setup(rg_trainer *t)
{
    const int first = rg_model_first_trainable_block(t->model);
    if (!t->config.cache_frozen || first == 0) /* nothing frozen */
        return RG_OK;
    const size_t C = (size_t)t->model->config.n_embd;
    data_set *sets[2] = {&t->train, t->has_eval ? &t->eval : NULL};
    size_t floats[2] = {0, 0};
    for (int s = 0; s < 2; s++)
        if (sets[s] != NULL)
            for (int64_t i = 0; i < sets[s]->N; i++)
                floats[s] += (size_t)sets[s]->row_width[i] * C;
    t->result.frozen_cache_mib = (double)(floats[0] + floats[1]) * sizeof(float) / (1024.0 * 1024.0);
    const int64_t limit = t->config.cache_frozen_max_mib > 0 ? t->config.cache_frozen_max_mib : 4096;
    if (t->result.frozen_cache_mib > (double)limit)
        return RG_OK;
    const int max_bs = t->config.train_batch_size > t->config.eval_batch_size ? t->config.train_batch_size
                                                                            : t->config.eval_batch_size;
    const int max_T = t->train.T > t->eval.T ? t->train.T : t->eval.T;
    t->b_frozen = malloc((size_t)max_bs * (size_t)max_T * C * sizeof(float));
    if (t->b_frozen == NULL)
        return RG_OK; /* no room: train without */
    for (int s = 0; s < 2; s++) {
        data_set *d = sets[s];
        if (d == NULL)
            continue;
        d->frozen = malloc((floats[s] > 0 ? floats[s] : 1) * sizeof(float));
        d->frozen_at = malloc((size_t)d->N * sizeof(size_t));
        d->frozen_have = calloc((size_t)d->N, 1);
        if (d->frozen == NULL || d->frozen_at == NULL || d->frozen_have == NULL) {
            for (int k = 0; k <= s; k++)
                if (sets[k] != NULL)
                    frozen_cache_free(sets[k]);
            free(t->b_frozen);
            t->b_frozen = NULL;
            return RG_OK;
        }
        size_t at = 0;
        for (int64_t i = 0; i < d->N; i++) {
            d->frozen_at[i] = at;
            at += (size_t)d->row_width[i] * C;
        }
    }
    t->result.frozen_cache = 1;
    return RG_OK;
}

/* ------------------------------------------------------------------------ */
/* trainable tensors in the compact (moment) layout                          */
/* ------------------------------------------------------------------------ */

static void trainable_save(const rg_trainer *t, float *dst /* (state_numel,) */)
{
    for (int s = 0; s < t->opt.n_segments; s++) {
        const rg_adamw_segment *seg = &t->opt.segments[s];
        memcpy(dst + seg->state_offset, t->model->params + seg->offset, seg->numel * sizeof(float));
    }
}

static void trainable_load(rg_trainer *t, const float *src /* (state_numel,) */)
{
    for (int s = 0; s < t->opt.n_segments; s++) {
        const rg_adamw_segment *seg = &t->opt.segments[s];
        memcpy(t->model->params + seg->offset, src + seg->state_offset, seg->numel * sizeof(float));
    }
}

/* ------------------------------------------------------------------------ */
/* init / free                                                               */
/* ------------------------------------------------------------------------ */

void rg_trainer_free(rg_trainer *t)
{
    if (t == NULL)
        return;
    rg_adamw_free(&t->opt);
    data_free(&t->train);
    data_free(&t->eval);
    free(t->checkpoint_path);
    free(t->orders);
    free(t->label_values);
    free(t->order);
    free(t->history);
    free(t->best);
    free(t->prev);
    free(t->predictions);
    free(t->eval_logits);
    free(t->confusion);
    free(t->per_class);
    free(t->support);
    free(t->y_true);
    free(t->y_pred);
    free(t->b_tokens);
    free(t->b_mask);
    free(t->b_types);
    free(t->b_targets);
    free(t->b_frozen);
    free(t->shard);
    free(t->comm_buf);
    free(t->comm_stats);
    free(t);
}

static int order_is_permutation(const int32_t *order, int64_t n, unsigned char *seen /* (n,) */)
{
    memset(seen, 0, (size_t)n);
    for (int64_t i = 0; i < n; i++) {
        if (order[i] < 0 || order[i] >= n || seen[order[i]])
            return 0;
        seen[order[i]] = 1;
    }
    return 1;
}

static rg_status trainer_setup(rg_trainer *t, const rg_trainer_config *config, const rg_train_data *train,
                               const rg_train_data *eval)
{
    const rg_trainer_config *c = config;
    if (c->epochs < 1 || c->train_batch_size < 1 || c->eval_batch_size < 1 || c->grad_accum < 1 ||
        c->progress_every < 0 || c->save_steps < 0 ||
        (c->apply_freezing && (c->trainable_blocks < -1 || c->head_policy < RG_HEAD_POLICY_FROZEN ||
                               c->head_policy > RG_HEAD_POLICY_UNTIE))) {
        trainer_message(t, "trainer config: a value out of range");
        return RG_ERR_INVALID_ARG;
    }
    t->config = *config;
    t->is_lm = t->model->config.head == RG_HEAD_LM;
    t->K = t->is_lm ? 0 : t->model->config.num_labels;
    RG_TRY(data_copy(t, &t->train, train, "train"));
    if (eval != NULL && eval->N > 0) {
        RG_TRY(data_copy(t, &t->eval, eval, "eval"));
        t->has_eval = 1;
    }
    const int64_t batches = (t->train.N + c->train_batch_size - 1) / c->train_batch_size;
    if (batches > INT_MAX / 2)
        return RG_ERR_SHAPE;
    t->num_batches = (int)batches;
    t->total_steps = (int64_t)((t->num_batches + c->grad_accum - 1) / c->grad_accum) * c->epochs;

    if (c->checkpoint_path != NULL) {
        size_t n = strlen(c->checkpoint_path) + 1;
        t->checkpoint_path = malloc(n);
        if (t->checkpoint_path == NULL)
            return RG_ERR_NOMEM;
        memcpy(t->checkpoint_path, c->checkpoint_path, n);
    }
    t->config.checkpoint_path = t->checkpoint_path;
    t->order = malloc((size_t)t->train.N * sizeof(int32_t));
    if (t->order == NULL)
        return RG_ERR_NOMEM;
    for (int64_t i = 0; i < t->train.N; i++) /* defined bytes even in a checkpoint saved before any run */
        t->order[i] = (int32_t)i;
    if (c->orders != NULL) {
        t->orders = rg_ints_dup(c->orders, (size_t)c->epochs * (size_t)t->train.N);
        unsigned char *seen = malloc((size_t)t->train.N);
        if (t->orders == NULL || seen == NULL) {
            free(seen);
            return RG_ERR_NOMEM;
        }
        for (int e = 0; e < c->epochs; e++)
            if (!order_is_permutation(t->orders + (size_t)e * t->train.N, t->train.N, seen)) {
                free(seen);
                trainer_message(t, "orders: row %d is not a permutation of 0..%lld", e, (long long)t->train.N - 1);
                return RG_ERR_SHAPE;
            }
        free(seen);
    }
    t->config.orders = t->orders;
    if (!t->is_lm) {
        t->label_values = malloc((size_t)t->K * sizeof(int32_t));
        if (t->label_values == NULL)
            return RG_ERR_NOMEM;
        for (int k = 0; k < t->K; k++)
            t->label_values[k] = c->label_values ? c->label_values[k] : k;
        if (rg_metrics_check_labels(t->label_values, t->K) != RG_OK) {
            trainer_message(t, "label_values must be strictly increasing");
            return RG_ERR_INVALID_ARG;
        }
    }
    t->config.label_values = t->label_values;
    t->comm.rank = 0;
    t->comm.size = 1;
    if (c->comm != NULL) {
        if (c->comm->size < 1 || c->comm->rank < 0 || c->comm->rank >= c->comm->size ||
            (c->comm->size > 1 && c->comm->allreduce_sum == NULL)) {
            trainer_message(t, "comm: rank %d of size %d, or no allreduce_sum", c->comm->rank, c->comm->size);
            return RG_ERR_INVALID_ARG;
        }
        t->comm = *c->comm;
    }
    t->dist = t->comm.size > 1;
    t->config.comm = &t->comm;

    if (c->apply_freezing)
        RG_TRY(rg_model_set_trainable(t->model, c->trainable_blocks, (rg_head_policy)c->head_policy));
    rg_model_set_frozen_dropout(t->model, c->frozen_dropout && !c->cache_frozen);
    RG_TRY(frozen_cache_setup(t));
    rg_adamw_config ac = c->adamw;
    ac.total_steps = t->total_steps;
    RG_TRY(rg_adamw_init(&t->opt, &ac, &t->model->table));
    t->config.adamw = ac;

    const int max_bs = c->train_batch_size > c->eval_batch_size ? c->train_batch_size : c->eval_batch_size;
    const int max_T = t->train.T > t->eval.T ? t->train.T : t->eval.T;
    const size_t cells = (size_t)max_bs * (size_t)max_T;
    t->b_tokens = malloc(cells * sizeof(int32_t));
    t->b_mask = malloc(cells * sizeof(int32_t));
    t->b_types = malloc(cells * sizeof(int32_t));
    t->b_targets = malloc(cells * sizeof(int32_t));
    t->history = calloc((size_t)c->epochs, sizeof(rg_train_eval));
    const size_t state = t->opt.state_numel > 0 ? t->opt.state_numel : 1;
    t->best = malloc(state * sizeof(float));
    t->prev = c->keep_last_good ? malloc(state * sizeof(float)) : NULL;
    if (!t->b_tokens || !t->b_mask || !t->b_types || !t->b_targets || !t->history || !t->best ||
        (c->keep_last_good && !t->prev))
        return RG_ERR_NOMEM;
    if (!t->is_lm && t->has_eval) {
        const size_t K = (size_t)t->K, n = (size_t)t->eval.N;
        t->predictions = malloc(n * sizeof(int32_t));
        t->eval_logits = malloc(n * K * sizeof(float));
        t->confusion = malloc(K * K * sizeof(int64_t));
        t->per_class = malloc(3 * K * sizeof(double));
        t->support = malloc(K * sizeof(int64_t));
        t->y_true = malloc(n * sizeof(int32_t));
        t->y_pred = malloc(n * sizeof(int32_t));
        if (!t->predictions || !t->eval_logits || !t->confusion || !t->per_class || !t->support ||
            !t->y_true || !t->y_pred)
            return RG_ERR_NOMEM;
    }
    if (t->dist) {
        t->shard = malloc((size_t)c->train_batch_size * sizeof(int32_t));
        t->comm_buf = malloc(state * sizeof(float));
        t->comm_stats = malloc((size_t)(STATS_FIXED + c->grad_accum) * sizeof(double));
        if (!t->shard || !t->comm_buf || !t->comm_stats)
            return RG_ERR_NOMEM;
    }
    t->order_epoch = -1;
    if (t->prev)
        trainable_save(t, t->prev);
    rg_model_zero_grad(t->model);
    return RG_OK;
}

rg_status rg_trainer_init(rg_trainer **out, rg_model *model, const rg_trainer_config *config,
                          const rg_train_data *train, const rg_train_data *eval, char *error,
                          size_t error_len)
{
    if (error != NULL && error_len > 0)
        error[0] = 0;
    if (out == NULL)
        return RG_ERR_INVALID_ARG;
    *out = NULL;
    if (model == NULL || config == NULL || train == NULL)
        return RG_ERR_INVALID_ARG;
    rg_trainer *t = calloc(1, sizeof(*t));
    if (t == NULL)
        return RG_ERR_NOMEM;
    t->model = model;
    rg_status status = trainer_setup(t, config, train, eval);
    if (status != RG_OK) {
        if (error != NULL && error_len > 0)
            snprintf(error, error_len, "%s", t->message[0] ? t->message : rg_status_string(status));
        rg_trainer_free(t);
        return status;
    }
    *out = t;
    return RG_OK;
}

/* ------------------------------------------------------------------------ */
/* accessors                                                                 */
/* ------------------------------------------------------------------------ */

static void result_sync(rg_trainer *t)
{
    rg_train_result *r = &t->result;
    r->global_step = t->opt.step;
    r->total_steps = t->total_steps;
    r->num_batches = t->num_batches;
    r->epochs_completed = t->epoch;
    r->best_epoch = t->best_epoch;
    r->best_metric = t->best_metric;
    r->finished = t->epoch >= t->config.epochs;
}

const rg_train_result *rg_trainer_result(const rg_trainer *t) { return t ? &t->result : NULL; }
const char *rg_trainer_message(const rg_trainer *t) { return t ? t->message : ""; }
const rg_adamw *rg_trainer_optimizer(const rg_trainer *t) { return t ? &t->opt : NULL; }

const rg_train_eval *rg_trainer_history(const rg_trainer *t, int *count)
{
    *count = t ? t->n_history : 0;
    return t ? t->history : NULL;
}

const int32_t *rg_trainer_predictions(const rg_trainer *t, int64_t *n)
{
    *n = t && t->predictions ? t->eval.N : 0;
    return t ? t->predictions : NULL;
}

const float *rg_trainer_eval_logits(const rg_trainer *t, int64_t *n, int *K)
{
    *n = t && t->eval_logits ? t->eval.N : 0;
    *K = t ? t->K : 0;
    return t ? t->eval_logits : NULL;
}

rg_status rg_trainer_restore_best(rg_trainer *t)
{
    if (t == NULL)
        return RG_ERR_INVALID_ARG;
    if (t->best_epoch <= 0)
        return RG_ERR_STATE;
    trainable_load(t, t->best);
    t->result.best_loaded = 1;
    return RG_OK;
}

/* ------------------------------------------------------------------------ */
/* checkpoints                                                               */
/* ------------------------------------------------------------------------ */

static uint64_t double_bits(double x)
{
    uint64_t u;
    memcpy(&u, &x, 8);
    return u;
}

static double bits_double(uint64_t u)
{
    double x;
    memcpy(&x, &u, 8);
    return x;
}

enum {
    S_FORMAT, S_EPOCH, S_BATCH, S_STEP, S_TOTAL_STEPS, S_NUM_BATCHES, S_N_TRAIN, S_EPOCHS,
    S_LOSS_SUM, S_EPOCH_BATCHES, S_BEST_EPOCH, S_BEST_METRIC, S_N_HISTORY, S_ORDER_EPOCH, S_SEED,
    S_STATE_NUMEL, S_TABLE_TOTAL, S_TABLE_COUNT, S_SHUFFLE, S_ACCUM, S_BATCH_SIZE
};

static int64_t *table_signature(const rg_param_table *table) /* (count, 3) */
{
    int64_t *sig = malloc(((size_t)table->count * 3 + 1) * sizeof(int64_t));
    if (sig == NULL)
        return NULL;
    for (int i = 0; i < table->count; i++) {
        sig[3 * i] = (int64_t)table->tensors[i].offset;
        sig[3 * i + 1] = (int64_t)table->tensors[i].numel;
        sig[3 * i + 2] = table->tensors[i].trainable;
    }
    return sig;
}

static void history_pack(const rg_train_eval *e, double *out /* (HISTORY_FIELDS,) */)
{
    double v[HISTORY_FIELDS] = {e->epoch, (double)e->step, e->train_loss, e->has_eval, e->eval_loss,
                                e->eval_perplexity, e->has_metrics, e->accuracy, e->macro_f1,
                                e->near_accuracy, e->near_macro_f1};
    memcpy(out, v, sizeof(v));
}

static void history_unpack(const double *v, rg_train_eval *e)
{
    e->epoch = (int)v[0];
    e->step = (int64_t)v[1];
    e->train_loss = v[2];
    e->has_eval = (int)v[3];
    e->eval_loss = v[4];
    e->eval_perplexity = v[5];
    e->has_metrics = (int)v[6];
    e->accuracy = v[7];
    e->macro_f1 = v[8];
    e->near_accuracy = v[9];
    e->near_macro_f1 = v[10];
}

static int shuffle_mode(const rg_trainer *t) { return !t->config.shuffle ? 0 : (t->orders ? 2 : 1); }

rg_status rg_trainer_save(rg_trainer *t, const char *path)
{
    if (t == NULL || path == NULL)
        return RG_ERR_INVALID_ARG;
    uint64_t s[TRSTATE_SLOTS] = {0};
    s[S_FORMAT] = TRAINER_FORMAT;
    s[S_EPOCH] = (uint64_t)t->epoch;
    s[S_BATCH] = (uint64_t)t->batch;
    s[S_STEP] = (uint64_t)t->opt.step;
    s[S_TOTAL_STEPS] = (uint64_t)t->total_steps;
    s[S_NUM_BATCHES] = (uint64_t)t->num_batches;
    s[S_N_TRAIN] = (uint64_t)t->train.N;
    s[S_EPOCHS] = (uint64_t)t->config.epochs;
    s[S_LOSS_SUM] = double_bits(t->epoch_loss_sum);
    s[S_EPOCH_BATCHES] = (uint64_t)t->epoch_batches;
    s[S_BEST_EPOCH] = (uint64_t)t->best_epoch;
    s[S_BEST_METRIC] = double_bits(t->best_metric);
    s[S_N_HISTORY] = (uint64_t)t->n_history;
    s[S_ORDER_EPOCH] = (uint64_t)(int64_t)t->order_epoch;
    s[S_SEED] = t->config.seed;
    s[S_STATE_NUMEL] = t->opt.state_numel;
    s[S_TABLE_TOTAL] = t->model->table.total;
    s[S_TABLE_COUNT] = (uint64_t)t->model->table.count;
    s[S_SHUFFLE] = (uint64_t)shuffle_mode(t);
    s[S_ACCUM] = (uint64_t)t->config.grad_accum;
    s[S_BATCH_SIZE] = (uint64_t)t->config.train_batch_size;

    int64_t *sig = table_signature(&t->model->table);
    double *hist = malloc(((size_t)t->n_history * HISTORY_FIELDS + 1) * sizeof(double));
    if (sig == NULL || hist == NULL) {
        free(sig);
        free(hist);
        return RG_ERR_NOMEM;
    }
    for (int i = 0; i < t->n_history; i++)
        history_pack(&t->history[i], hist + (size_t)i * HISTORY_FIELDS);

    rg_ckpt_writer w;
    const size_t state_bytes = t->opt.state_numel * sizeof(float);
    rg_status status = rg_ckpt_writer_open(&w, path, RG_CKPT_KIND_TRAINER);
    if (status == RG_OK)
        status = rg_ckpt_writer_section(&w, "TRSTATE", s, sizeof(s));
    if (status == RG_OK)
        status = rg_ckpt_writer_section(&w, "TABLE", sig, (size_t)t->model->table.count * 3 * sizeof(int64_t));
    if (status == RG_OK)
        status = rg_ckpt_writer_section(&w, "PARAMS", t->model->params, t->model->table.total * sizeof(float));
    if (status == RG_OK)
        status = rg_ckpt_writer_section(&w, "ADAM_M", t->opt.m, state_bytes);
    if (status == RG_OK)
        status = rg_ckpt_writer_section(&w, "ADAM_V", t->opt.v, state_bytes);
    if (status == RG_OK)
        status = rg_ckpt_writer_section(&w, "ORDER", t->order, (size_t)t->train.N * sizeof(int32_t));
    if (status == RG_OK)
        status = rg_ckpt_writer_section(&w, "HISTORY", hist, (size_t)t->n_history * HISTORY_FIELDS * sizeof(double));
    if (status == RG_OK && t->best_epoch > 0)
        status = rg_ckpt_writer_section(&w, "BEST", t->best, state_bytes);
    if (status == RG_OK)
        status = rg_ckpt_writer_commit(&w);
    if (status != RG_OK)
        trainer_message(t, "%s", w.message);
    free(sig);
    free(hist);
    return status;
}

rg_status rg_trainer_resume(rg_trainer *t, const char *path)
{
    if (t == NULL || path == NULL)
        return RG_ERR_INVALID_ARG;
    const rg_param_table *table = &t->model->table;
    const size_t state = t->opt.state_numel;
    uint64_t s[TRSTATE_SLOTS];
    int64_t *sig = table_signature(table);
    int64_t *saved_sig = malloc(((size_t)table->count * 3 + 1) * sizeof(int64_t));
    float *params = malloc((table->total + 1) * sizeof(float));
    float *m = malloc((state + 1) * sizeof(float));
    float *v = malloc((state + 1) * sizeof(float));
    float *best = malloc((state + 1) * sizeof(float));
    int32_t *order = malloc((size_t)t->train.N * sizeof(int32_t));
    double *hist = malloc(((size_t)t->config.epochs * HISTORY_FIELDS + 1) * sizeof(double));
    rg_ckpt_reader r;
    rg_status status = RG_ERR_NOMEM;
    int reader_open = 0;
    if (!sig || !saved_sig || !params || !m || !v || !best || !order || !hist)
        goto done;
    status = rg_ckpt_reader_open(&r, path, RG_CKPT_KIND_TRAINER);
    reader_open = 1;
    if (status == RG_OK)
        status = rg_ckpt_reader_expect(&r, "TRSTATE", s, sizeof(s));
    if (status != RG_OK)
        goto done;
    if (s[S_FORMAT] != TRAINER_FORMAT || s[S_TABLE_COUNT] != (uint64_t)table->count ||
        s[S_TABLE_TOTAL] != table->total || s[S_STATE_NUMEL] != state) {
        snprintf(r.message, sizeof(r.message), "%s: saved for a different parameter layout", path);
        status = RG_ERR_SHAPE;
        goto done;
    }
    if (s[S_TOTAL_STEPS] != (uint64_t)t->total_steps || s[S_NUM_BATCHES] != (uint64_t)t->num_batches ||
        s[S_N_TRAIN] != (uint64_t)t->train.N || s[S_EPOCHS] != (uint64_t)t->config.epochs ||
        s[S_ACCUM] != (uint64_t)t->config.grad_accum ||
        s[S_BATCH_SIZE] != (uint64_t)t->config.train_batch_size) {
        snprintf(r.message, sizeof(r.message),
                 "%s: made for a run of %llu updates over %llu rows, this one has %lld over %lld", path,
                 (unsigned long long)s[S_TOTAL_STEPS], (unsigned long long)s[S_N_TRAIN],
                 (long long)t->total_steps, (long long)t->train.N);
        status = RG_ERR_SHAPE;
        goto done;
    }
    if (s[S_SEED] != t->config.seed || s[S_SHUFFLE] != (uint64_t)shuffle_mode(t)) {
        snprintf(r.message, sizeof(r.message), "%s: made with seed %llu (shuffle mode %llu), this run has "
                 "seed %llu (shuffle mode %d): the rest of the run would differ", path,
                 (unsigned long long)s[S_SEED], (unsigned long long)s[S_SHUFFLE],
                 (unsigned long long)t->config.seed, shuffle_mode(t));
        status = RG_ERR_SHAPE;
        goto done;
    }
    if (s[S_EPOCH] > (uint64_t)t->config.epochs || s[S_BATCH] > (uint64_t)t->num_batches ||
        s[S_N_HISTORY] > (uint64_t)t->config.epochs || s[S_STEP] > (uint64_t)t->total_steps ||
        s[S_BEST_EPOCH] > s[S_N_HISTORY]) {
        snprintf(r.message, sizeof(r.message), "%s: section TRSTATE: inconsistent counters", path);
        status = RG_ERR_CORRUPT;
        goto done;
    }
    status = rg_ckpt_reader_expect(&r, "TABLE", saved_sig, (size_t)table->count * 3 * sizeof(int64_t));
    if (status == RG_OK && memcmp(sig, saved_sig, (size_t)table->count * 3 * sizeof(int64_t)) != 0) {
        snprintf(r.message, sizeof(r.message), "%s: saved for a different parameter layout or freezing", path);
        status = RG_ERR_SHAPE;
    }
    if (status == RG_OK)
        status = rg_ckpt_reader_expect(&r, "PARAMS", params, table->total * sizeof(float));
    if (status == RG_OK)
        status = rg_ckpt_reader_expect(&r, "ADAM_M", m, state * sizeof(float));
    if (status == RG_OK)
        status = rg_ckpt_reader_expect(&r, "ADAM_V", v, state * sizeof(float));
    if (status == RG_OK)
        status = rg_ckpt_reader_expect(&r, "ORDER", order, (size_t)t->train.N * sizeof(int32_t));
    if (status == RG_OK)
        status = rg_ckpt_reader_expect(&r, "HISTORY", hist, (size_t)s[S_N_HISTORY] * HISTORY_FIELDS * sizeof(double));
    if (status == RG_OK && s[S_BEST_EPOCH] > 0)
        status = rg_ckpt_reader_expect(&r, "BEST", best, state * sizeof(float));
    if (status == RG_OK)
        status = rg_ckpt_reader_expect(&r, "END", NULL, 0);
    if (status != RG_OK)
        goto done;
    if (s[S_ORDER_EPOCH] == s[S_EPOCH]) {
        unsigned char *seen = malloc((size_t)t->train.N);
        int ok = seen != NULL && order_is_permutation(order, t->train.N, seen);
        free(seen);
        if (!ok) {
            snprintf(r.message, sizeof(r.message), "%s: section ORDER: not a permutation", path);
            status = RG_ERR_CORRUPT;
            goto done;
        }
    }
    /* everything is verified: apply it */
    status = rg_adamw_load_state(&t->opt, (int64_t)s[S_STEP], m, v, state);
    if (status != RG_OK)
        goto done;
    memcpy(t->model->params, params, table->total * sizeof(float));
    rg_model_zero_grad(t->model);
    t->epoch = (int)s[S_EPOCH];
    t->batch = (int)s[S_BATCH];
    t->epoch_loss_sum = bits_double(s[S_LOSS_SUM]);
    t->epoch_batches = (int64_t)s[S_EPOCH_BATCHES];
    t->best_epoch = (int)s[S_BEST_EPOCH];
    t->best_metric = bits_double(s[S_BEST_METRIC]);
    t->n_history = (int)s[S_N_HISTORY];
    for (int i = 0; i < t->n_history; i++)
        history_unpack(hist + (size_t)i * HISTORY_FIELDS, &t->history[i]);
    if (t->best_epoch > 0)
        memcpy(t->best, best, state * sizeof(float));
    t->order_epoch = (int64_t)s[S_ORDER_EPOCH] == (int64_t)t->epoch ? t->epoch : -1;
    if (t->order_epoch >= 0)
        memcpy(t->order, order, (size_t)t->train.N * sizeof(int32_t));
    if (t->prev)
        trainable_save(t, t->prev);
    t->failed = 0;
    t->done = 0;
    const int frozen_cache = t->result.frozen_cache;
    const double frozen_cache_mib = t->result.frozen_cache_mib;
    memset(&t->result, 0, sizeof(t->result));
    t->result.frozen_cache = frozen_cache;
    t->result.frozen_cache_mib = frozen_cache_mib;
    data_set *sets[2] = {&t->train, &t->eval};
    for (int k = 0; k < 2; k++) /* kept outputs are recomputed from the weights as they are now */
        if (sets[k]->frozen_have != NULL)
            memset(sets[k]->frozen_have, 0, (size_t)sets[k]->N);
    result_sync(t);
    t->message[0] = 0;
done:
    if (status != RG_OK && reader_open)
        trainer_message(t, "%s", r.message);
    if (reader_open)
        rg_ckpt_reader_close(&r);
    free(sig);
    free(saved_sig);
    free(params);
    free(m);
    free(v);
    free(best);
    free(order);
    free(hist);
    return status;
}

/* ------------------------------------------------------------------------ */
/* the run                                                                   */
/* ------------------------------------------------------------------------ */

static int stop_requested(const rg_trainer *t)
{
    return rg_interrupt_pending() || (t->config.stop_flag != NULL && *t->config.stop_flag != 0);
}

/* An in-place sum over the ranks; a failure marks the run (RG_ERR_COMM). */
static rg_status comm_sum(rg_trainer *t, void *buf, size_t n, rg_comm_dtype dtype)
{
    if (!t->dist || n == 0)
        return RG_OK;
    if (t->comm.allreduce_sum(t->comm.ctx, buf, n, dtype) != 0) {
        t->comm_failed = 1;
        trainer_message(t, "rank %d of %d: an all-reduce failed at epoch %d, update %lld (a peer rank died "
                        "or the communicator failed)", t->comm.rank, t->comm.size, t->epoch + 1,
                        (long long)t->opt.step + 1);
        return RG_ERR_COMM;
    }
    return RG_OK;
}

/* A non-zero result stops the run. Distributed: the stop requests of every
 * rank are summed, so all of them stop at the same event (a failed sum stops
 * too, with comm_failed set). */
static int emit(rg_trainer *t, rg_train_event *ev)
{
    int stop = 0;
    if (t->config.progress != NULL) {
        ev->epoch = ev->epoch > 0 ? ev->epoch : t->epoch + 1;
        ev->step = t->opt.step;
        ev->total_steps = t->total_steps;
        stop = t->config.progress(t->config.progress_user, ev) != 0;
    }
    if (t->dist) {
        double flag = stop;
        if (comm_sum(t, &flag, 1, RG_COMM_F64) != RG_OK)
            return 1;
        stop = flag > 0.0;
    }
    return stop;
}

static uint64_t dropout_seed(const rg_trainer *t, int epoch, int batch)
{
    const uint64_t micro = (uint64_t)epoch * (uint64_t)t->num_batches + (uint64_t)batch;
    uint64_t seed = t->config.seed * 0x9E3779B1ull + micro;
    if (t->dist && t->comm.rank > 0) /* other rows, other masks */
        seed ^= rg_rng_mix(0x52414E4Bull + (uint64_t)t->comm.rank);
    return seed & ((1ull << 63) - 1);
}

static void order_prepare(rg_trainer *t)
{
    if (t->order_epoch == t->epoch)
        return;
    const int64_t N = t->train.N;
    if (!t->config.shuffle) {
        for (int64_t i = 0; i < N; i++)
            t->order[i] = (int32_t)i;
    } else if (t->orders != NULL) {
        memcpy(t->order, t->orders + (size_t)t->epoch * N, (size_t)N * sizeof(int32_t));
    } else {
        rg_trainer_permutation(t->config.seed, t->epoch, N, t->order);
    }
    t->order_epoch = t->epoch;
}

/* Back to the last good parameters; the trainer refuses to go on. */
static rg_status fail_nonfinite(rg_trainer *t, int batch, int in_eval)
{
    rg_model_zero_grad(t->model);
    if (t->prev)
        trainable_load(t, t->prev);
    t->failed = 1;
    t->result.failed_epoch = t->epoch + 1;
    t->result.failed_step = t->opt.step + 1;
    t->result.failed_batch = batch;
    t->result.failed_in_eval = in_eval;
    if (in_eval)
        trainer_message(t, "non-finite eval loss after epoch %d (eval batch %d)", t->epoch + 1, batch);
    else if (batch < 0)
        trainer_message(t, "non-finite gradient at epoch %d, update %lld", t->epoch + 1,
                        (long long)t->opt.step + 1);
    else
        trainer_message(t, "non-finite training loss at epoch %d, micro-batch %d (update %lld)", t->epoch + 1,
                        batch, (long long)t->opt.step + 1);
    return RG_ERR_NONFINITE;
}

static rg_status checkpoint_write(rg_trainer *t)
{
    if (t->checkpoint_path == NULL)
        return RG_OK;
    rg_status saved = t->comm.rank == 0 ? rg_trainer_save(t, t->checkpoint_path) : RG_OK;
    if (t->dist) { /* every rank learns whether rank 0 could write it */
        double failed = saved != RG_OK;
        RG_TRY(comm_sum(t, &failed, 1, RG_COMM_F64));
        if (failed > 0.0 && saved == RG_OK) {
            trainer_message(t, "rank 0 could not write the checkpoint %s", t->checkpoint_path);
            saved = RG_ERR_IO;
        }
    }
    RG_TRY(saved);
    rg_train_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = RG_TRAIN_EVENT_CHECKPOINT;
    ev.epoch = t->batch == 0 && t->epoch > 0 ? t->epoch : t->epoch + 1; /* the epoch it belongs to */
    ev.epoch_progress = t->batch == 0 ? 1.0 : (double)t->batch / t->num_batches;
    ev.path = t->checkpoint_path;
    return emit(t, &ev) ? RG_ERR_INTERRUPTED : RG_OK;
}

/* Distributed: this rank's rows of micro-batch `rows` (B rows cut to `width`)
 * into t->shard; returns their count, *weight = their share of the
 * micro-batch's loss targets (0 when it has none). */
static int shard_rows(rg_trainer *t, const int32_t *rows, int B, int width, double *weight)
{
    int64_t all = 0, mine = 0;
    int n = 0;
    for (int b = 0; b < B; b++) {
        const int64_t count = row_targets(t, &t->train, rows[b], width);
        all += count;
        if (b % t->comm.size == t->comm.rank) {
            t->shard[n++] = rows[b];
            mine += count;
        }
    }
    *weight = all > 0 ? (double)mine / (double)all : 0.0;
    return n;
}

/* Distributed: the trainable gradients summed over the ranks. */
static rg_status grads_allreduce(rg_trainer *t)
{
    const rg_adamw *opt = &t->opt;
    if (opt->state_numel == 0)
        return RG_OK;
    for (int s = 0; s < opt->n_segments; s++) {
        const rg_adamw_segment *seg = &opt->segments[s];
        memcpy(t->comm_buf + seg->state_offset, t->model->grads + seg->grad_offset, seg->numel * sizeof(float));
    }
    RG_TRY(comm_sum(t, t->comm_buf, opt->state_numel, RG_COMM_F32));
    for (int s = 0; s < opt->n_segments; s++) {
        const rg_adamw_segment *seg = &opt->segments[s];
        memcpy(t->model->grads + seg->grad_offset, t->comm_buf + seg->state_offset, seg->numel * sizeof(float));
    }
    return RG_OK;
}

/* Distributed: every rank's outcome of one accumulation group, summed, so
 * that every rank takes the same decision. *group_sum / *tokens become the
 * global ones. RG_OK: apply the update. */
static rg_status group_agree(rg_trainer *t, int start, int group, int stopped, rg_status local, int bad,
                             double *group_sum, int64_t *tokens)
{
    double *st = t->comm_stats;
    memset(st, 0, (size_t)(STATS_FIXED + group) * sizeof(double));
    st[ST_LOSS] = *group_sum;
    st[ST_TOKENS] = (double)*tokens;
    st[ST_STOP] = stopped;
    st[ST_ERROR] = local != RG_OK;
    if (bad >= 0)
        st[STATS_FIXED + (bad - start)] = 1.0;
    if (comm_sum(t, st, (size_t)(STATS_FIXED + group), RG_COMM_F64) != RG_OK) {
        rg_model_zero_grad(t->model);
        return RG_ERR_COMM;
    }
    if (st[ST_ERROR] > 0.0) {
        rg_model_zero_grad(t->model);
        t->comm_failed = 1; /* the ranks' states may differ now: no going on */
        if (local != RG_OK)
            return local;
        trainer_message(t, "rank %d of %d: another rank failed at epoch %d, update %lld", t->comm.rank,
                        t->comm.size, t->epoch + 1, (long long)t->opt.step + 1);
        return RG_ERR_COMM;
    }
    for (int k = 0; k < group; k++)
        if (st[STATS_FIXED + k] > 0.0)
            return fail_nonfinite(t, start + k, 0);
    if (st[ST_STOP] > 0.0) {
        rg_model_zero_grad(t->model); /* drop the partial accumulation */
        return RG_ERR_INTERRUPTED;
    }
    *group_sum = st[ST_LOSS];
    *tokens = (int64_t)st[ST_TOKENS];
    return grads_allreduce(t);
}

/* The micro-batches left in the current epoch, one update per group. */
static rg_status epoch_train(rg_trainer *t)
{
    const int n = t->num_batches, bs = t->config.train_batch_size, acc = t->config.grad_accum;
    while (t->batch < n) {
        const int start = t->batch;
        const int group = acc < n - start ? acc : n - start;
        const float scale = (float)(1.0 / (double)group);
        double pending_sum = t->epoch_loss_sum, group_sum = 0.0;
        int64_t tokens = 0;
        int stopped = 0, bad = -1;
        rg_status local = RG_OK;
        const double started = now_seconds();
        for (int k = 0; k < group; k++) {
            const int i = start + k;
            if (stop_requested(t)) {
                if (t->dist) { /* told to the others at the end of the group */
                    stopped = 1;
                    break;
                }
                rg_model_zero_grad(t->model); /* drop the partial accumulation */
                return RG_ERR_INTERRUPTED;
            }
            const int64_t first = (int64_t)i * bs;
            const int B = (int)(t->train.N - first < bs ? t->train.N - first : bs);
            const int32_t *rows = t->order + first;
            const int width = batch_width(t, &t->train, rows, B);
            int nb = B;
            double weight = 1.0;
            float batch_scale = scale;
            if (t->dist) {
                nb = shard_rows(t, rows, B, width, &weight);
                rows = t->shard;
                batch_scale = (float)(weight / (double)group);
                if (nb == 0)
                    continue; /* a short last batch: nothing on this rank */
            }
            float loss = 0.0f;
            int64_t batch_tokens = 0;
            rg_status status = batch_forward(t, &t->train, rows, nb, width, 1, dropout_seed(t, t->epoch, i),
                                             &loss, &batch_tokens);
            if (status == RG_OK && !isfinite(loss))
                status = RG_ERR_NONFINITE;
            if (status == RG_ERR_NONFINITE) {
                if (!t->dist)
                    return fail_nonfinite(t, i, 0);
                bad = i;
                break;
            }
            if (status == RG_OK)
                status = rg_model_backward(t->model, batch_scale);
            if (status == RG_ERR_INTERRUPTED && t->dist) { /* Ctrl-C inside the forward */
                stopped = 1;
                break;
            }
            if (status != RG_OK) {
                rg_model_zero_grad(t->model);
                if (!t->dist)
                    return status;
                local = status;
                break;
            }
            pending_sum += (double)loss * weight;
            group_sum += (double)loss * weight;
            tokens += batch_tokens;
        }
        if (t->dist) {
            RG_TRY(group_agree(t, start, group, stopped, local, bad, &group_sum, &tokens));
            pending_sum = t->epoch_loss_sum + group_sum;
        }
        /* A non-finite gradient is found before the copy, so that `prev` still
         * holds the parameters before the last update that was applied. */
        double lr = 0.0, norm = 0.0;
        rg_status status = t->prev ? rg_adamw_grad_norm(&t->opt, t->model->grads, &norm) : RG_OK;
        if (status == RG_OK) {
            if (t->prev)
                trainable_save(t, t->prev);
            status = rg_adamw_step(&t->opt, t->model->params, t->model->grads, &lr, &norm);
        }
        if (status == RG_ERR_NONFINITE)
            return fail_nonfinite(t, -1, 0);
        if (status != RG_OK) {
            rg_model_zero_grad(t->model);
            return status;
        }
        /* the update is done: commit the position */
        t->batch = start + group;
        t->epoch_loss_sum = pending_sum;
        t->epoch_batches += group;
        const int every = t->config.progress_every > 1 ? t->config.progress_every : 1;
        if (t->opt.step % every == 0 || t->batch == n) {
            rg_train_event ev;
            memset(&ev, 0, sizeof(ev));
            ev.kind = RG_TRAIN_EVENT_STEP;
            ev.epoch_progress = (double)t->batch / n;
            ev.loss = group_sum / group;
            ev.lr = lr;
            ev.grad_norm = norm;
            ev.tokens = tokens;
            ev.elapsed_s = now_seconds() - started;
            if (emit(t, &ev))
                return RG_ERR_INTERRUPTED;
        }
        if (t->config.save_steps > 0 && t->opt.step % t->config.save_steps == 0 && t->batch < n)
            RG_TRY(checkpoint_write(t));
    }
    return RG_OK;
}

/* Mean eval loss (weighted by batch rows), perplexity or classification metrics. */
static rg_status evaluate(rg_trainer *t, rg_train_eval *e)
{
    const int ebs = t->config.eval_batch_size;
    int32_t *rows = malloc((size_t)ebs * sizeof(int32_t));
    if (rows == NULL)
        return RG_ERR_NOMEM;
    double total = 0.0;
    int64_t counted = 0;
    rg_status status = RG_OK;
    int batch = 0;
    for (int64_t first = 0; first < t->eval.N; first += ebs, batch++) {
        if (stop_requested(t)) {
            status = RG_ERR_INTERRUPTED;
            break;
        }
        const int B = (int)(t->eval.N - first < ebs ? t->eval.N - first : ebs);
        for (int b = 0; b < B; b++)
            rows[b] = (int32_t)(first + b);
        float loss = 0.0f;
        int64_t tokens = 0;
        status = batch_forward(t, &t->eval, rows, B, batch_width(t, &t->eval, rows, B), 0, 0, &loss, &tokens);
        if (status == RG_OK && !isfinite(loss))
            status = RG_ERR_NONFINITE;
        if (status != RG_OK)
            break;
        total += (double)loss * B;
        counted += B;
        if (!t->is_lm) {
            int R = 0, K = 0;
            const float *logits = rg_model_logits(t->model, &R, &K); /* (B, K) */
            if (logits == NULL || R != B || K != t->K) {
                status = RG_ERR_STATE;
                break;
            }
            memcpy(t->eval_logits + (size_t)first * K, logits, (size_t)B * K * sizeof(float));
            for (int b = 0; b < B; b++) {
                const float *row = logits + (size_t)b * K;
                int best = 0;
                for (int k = 1; k < K; k++)
                    if (row[k] > row[best])
                        best = k;
                t->predictions[first + b] = best;
            }
        }
    }
    free(rows);
    if (status == RG_ERR_NONFINITE)
        return fail_nonfinite(t, batch, 1);
    if (status != RG_OK)
        return status;
    e->has_eval = 1;
    e->eval_loss = total / (double)counted;
    if (t->is_lm) {
        e->eval_perplexity = exp(e->eval_loss < 700.0 ? e->eval_loss : 700.0);
        return RG_OK;
    }
    /* metrics on label values; skipped when an eval target is ignored (negative) */
    const int64_t n = t->eval.N;
    for (int64_t i = 0; i < n; i++) {
        if (t->eval.targets[i] < 0)
            return RG_OK;
        t->y_true[i] = t->label_values[t->eval.targets[i]];
        t->y_pred[i] = t->label_values[t->predictions[i]];
    }
    const int64_t K = t->K;
    rg_metrics_summary exact, near;
    RG_TRY(rg_metrics_classification(t->y_true, n, t->y_pred, n, t->label_values, K, 0, t->confusion,
                                     t->per_class, t->per_class + K, t->per_class + 2 * K, t->support, &exact));
    RG_TRY(rg_metrics_classification(t->y_true, n, t->y_pred, n, t->label_values, K, 1, t->confusion,
                                     t->per_class, t->per_class + K, t->per_class + 2 * K, t->support, &near));
    e->has_metrics = 1;
    e->accuracy = exact.accuracy;
    e->macro_f1 = exact.macro.f1;
    e->near_accuracy = near.accuracy;
    e->near_macro_f1 = near.macro.f1;
    return RG_OK;
}

/* Distributed: the evaluation's outcome on every rank, so that all of them stop
 * (an interrupted evaluation runs again on the next rg_trainer_run) or go on. */
static rg_status eval_agree(rg_trainer *t, rg_status local)
{
    if (!t->dist)
        return local;
    double flags[2] = {local == RG_ERR_INTERRUPTED, local != RG_OK && local != RG_ERR_INTERRUPTED};
    RG_TRY(comm_sum(t, flags, 2, RG_COMM_F64));
    if (flags[1] > 0.0) {
        t->comm_failed = 1;
        if (local != RG_OK && local != RG_ERR_INTERRUPTED)
            return local;
        trainer_message(t, "rank %d of %d: another rank's evaluation failed after epoch %d", t->comm.rank,
                        t->comm.size, t->epoch + 1);
        return RG_ERR_COMM;
    }
    return flags[0] > 0.0 ? RG_ERR_INTERRUPTED : RG_OK;
}

/* Evaluation, history, best epoch, then the next epoch and its checkpoint. */
static rg_status epoch_finish(rg_trainer *t)
{
    rg_train_eval e;
    memset(&e, 0, sizeof(e));
    e.epoch = t->epoch + 1;
    e.step = t->opt.step;
    e.train_loss = t->epoch_loss_sum / (double)(t->epoch_batches > 0 ? t->epoch_batches : 1);
    if (t->has_eval)
        RG_TRY(eval_agree(t, evaluate(t, &e)));
    t->history[t->n_history++] = e;
    int stop = 0;
    rg_train_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.kind = RG_TRAIN_EVENT_EVAL;
    ev.epoch_progress = 1.0;
    ev.eval = &t->history[t->n_history - 1];
    if (!t->is_lm && t->has_eval) {
        ev.predictions = t->predictions;
        ev.eval_logits = t->eval_logits;
        ev.n_eval = t->eval.N;
        ev.num_labels = t->K;
    }
    stop = emit(t, &ev);
    if (t->config.load_best_at_end && e.has_eval && (t->best_epoch == 0 || e.eval_loss < t->best_metric)) {
        trainable_save(t, t->best);
        t->best_epoch = e.epoch;
        t->best_metric = e.eval_loss;
    }
    t->epoch++;
    t->batch = 0;
    t->epoch_loss_sum = 0.0;
    t->epoch_batches = 0;
    result_sync(t);
    rg_status status = checkpoint_write(t);
    if (status != RG_OK)
        return status;
    return stop ? RG_ERR_INTERRUPTED : RG_OK;
}

/* Distributed, before a fresh run: every rank takes rank 0's parameters (a
 * sum with zeros elsewhere is exact), whatever their initialisation was. */
static rg_status params_from_rank0(rg_trainer *t)
{
    const size_t total = t->model->table.total;
    float *buf = malloc((total > 0 ? total : 1) * sizeof(float));
    if (buf == NULL)
        return RG_ERR_NOMEM;
    if (t->comm.rank == 0)
        memcpy(buf, t->model->params, total * sizeof(float));
    else
        memset(buf, 0, total * sizeof(float));
    rg_status status = comm_sum(t, buf, total, RG_COMM_F32);
    if (status == RG_OK) {
        memcpy(t->model->params, buf, total * sizeof(float));
        if (t->prev)
            trainable_save(t, t->prev);
    }
    free(buf);
    return status;
}

rg_status rg_trainer_run(rg_trainer *t)
{
    if (t == NULL)
        return RG_ERR_INVALID_ARG;
    if (t->failed)
        return RG_ERR_STATE;
    if (t->done)
        return RG_OK;
    t->result.interrupted = 0;
    t->message[0] = 0;
    rg_status status = RG_OK;
    if (t->dist && t->epoch == 0 && t->batch == 0 && t->opt.step == 0)
        status = params_from_rank0(t);
    while (status == RG_OK && t->epoch < t->config.epochs) {
        if (t->batch < t->num_batches) {
            order_prepare(t);
            status = epoch_train(t);
            if (status != RG_OK)
                break;
        }
        status = epoch_finish(t);
        if (status != RG_OK)
            break;
    }
    result_sync(t);
    if (t->comm_failed) {
        t->failed = 1;
        return status == RG_ERR_INTERRUPTED || status == RG_OK ? RG_ERR_COMM : status;
    }
    if (status == RG_ERR_INTERRUPTED) {
        t->result.interrupted = 1;
        if (t->message[0] == 0)
            trainer_message(t, "interrupted at epoch %d, update %lld", t->epoch + 1, (long long)t->opt.step);
        return status;
    }
    if (status != RG_OK)
        return status;
    t->done = 1;
    if (t->config.load_best_at_end && t->best_epoch > 0 && t->best_epoch != t->epoch) {
        trainable_load(t, t->best);
        t->result.best_loaded = 1;
    } else if (t->best_epoch > 0 && t->best_epoch == t->epoch) {
        t->result.best_loaded = 1;
    }
    return RG_OK;
}
