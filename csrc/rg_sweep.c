/*
 * rg_sweep.c - one hyperparameter over values x samples, each run from the
 * same in-memory initial parameters, journaled run by run (rg_sweep.h).
 */
#define _POSIX_C_SOURCE 200809L

#include "rg_sweep.h"
#include "rg_io.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rg_checkpoint.h"

#define JOURNAL_VERSION 1u
#define RECORD_MAGIC 0x52535252u /* marks the start of a record */
#define RECORD_HEAD 48
#define EVAL_FIELDS 11
#define RECORD_MAX_EPOCHS 100000
static const char journal_magic[8] = {'R', 'G', 'S', 'W', 'E', 'E', 'P', 0};

typedef struct owned_data {
    int32_t *tokens, *mask, *types, *targets;
    rg_train_data view;
} owned_data;

struct rg_sweep {
    rg_model *model;
    rg_sweep_config config;
    double *values;
    char *journal_path;
    owned_data *train, *eval; /* (n_samples,) each */
    int n_samples;
    float *initial;           /* (initial_numel,) the parameters at init */
    size_t initial_numel;
    int initial_blocks, initial_policy;
    rg_sweep_result *runs;       /* (n_values * n_samples,) */
    int n_runs;
    uint64_t fingerprint;
    int fd;                   /* the journal, -1 when none */
    char message[RG_CKPT_MESSAGE_LEN];
};

static void sweep_message(rg_sweep *s, const char *format, ...) __attribute__((format(printf, 2, 3)));
static void sweep_message(rg_sweep *s, const char *format, ...)
{
    va_list args;
    va_start(args, format);
    vsnprintf(s->message, sizeof(s->message), format, args);
    va_end(args);
}

/* ------------------------------------------------------------------------ */
/* data copies                                                               */
/* ------------------------------------------------------------------------ */

/* A copy of src, or NULL for a NULL src; *failed is set when out of memory. */
static int32_t *dup_ints(const int32_t *src, size_t n, int *failed)
{
    if (src == NULL)
        return NULL;
    int32_t *dst = rg_ints_dup(src, n);
    if (dst == NULL)
        *failed = 1;
    return dst;
}

static rg_status data_own(owned_data *o, const rg_train_data *src, int is_lm)
{
    memset(o, 0, sizeof(*o));
    if (src->N < 0 || (src->N > 0 && (src->tokens == NULL || src->T <= 0)))
        return RG_ERR_INVALID_ARG;
    const size_t NT = src->N > 0 ? (size_t)src->N * (size_t)src->T : 0;
    int failed = 0;
    o->tokens = dup_ints(src->tokens, NT, &failed);
    o->mask = dup_ints(src->attention_mask, NT, &failed);
    o->types = dup_ints(src->token_types, NT, &failed);
    o->targets = dup_ints(src->targets, is_lm ? NT : (size_t)(src->N > 0 ? src->N : 0), &failed);
    o->view = (rg_train_data){o->tokens, o->mask, o->types, o->targets, src->N, src->T};
    return failed ? RG_ERR_NOMEM : RG_OK;
}

static void data_release(owned_data *o)
{
    free(o->tokens);
    free(o->mask);
    free(o->types);
    free(o->targets);
}

/* ------------------------------------------------------------------------ */
/* fingerprint and journal                                                   */
/* ------------------------------------------------------------------------ */

static uint64_t bits_of(double x)
{
    uint64_t u;
    memcpy(&u, &x, 8);
    return u;
}

static uint64_t ints_hash(const int32_t *p, size_t n) { return p ? rg_hash64(p, n * sizeof(int32_t), 1) : 0; }

static uint64_t sweep_fingerprint(const rg_sweep *s, int is_lm)
{
    const rg_trainer_config *b = &s->config.base;
    const size_t n = 64 + (size_t)s->config.n_values + 12 * (size_t)s->n_samples;
    uint64_t *f = calloc(n, sizeof(uint64_t));
    if (f == NULL)
        return 0;
    size_t k = 0;
    f[k++] = JOURNAL_VERSION;
    f[k++] = (uint64_t)s->config.parameter;
    f[k++] = (uint64_t)s->config.n_values;
    for (int i = 0; i < s->config.n_values; i++)
        f[k++] = bits_of(s->values[i]);
    f[k++] = bits_of(b->adamw.lr);
    f[k++] = bits_of(b->adamw.beta1);
    f[k++] = bits_of(b->adamw.beta2);
    f[k++] = bits_of(b->adamw.eps);
    f[k++] = bits_of(b->adamw.weight_decay);
    f[k++] = bits_of(b->adamw.max_grad_norm);
    f[k++] = bits_of(b->adamw.warmup_ratio);
    f[k++] = (uint64_t)b->adamw.schedule;
    f[k++] = (uint64_t)b->epochs;
    f[k++] = (uint64_t)b->train_batch_size;
    f[k++] = (uint64_t)b->eval_batch_size;
    f[k++] = (uint64_t)b->grad_accum;
    f[k++] = (uint64_t)b->trim_padding;
    f[k++] = (uint64_t)b->shuffle;
    f[k++] = b->seed;
    f[k++] = (uint64_t)b->load_best_at_end;
    f[k++] = (uint64_t)b->apply_freezing;
    f[k++] = (uint64_t)(int64_t)b->trainable_blocks;
    f[k++] = (uint64_t)b->head_policy;
    f[k++] = b->label_values ? ints_hash(b->label_values, (size_t)s->model->config.num_labels) : 0;
    f[k++] = rg_hash64(s->initial, s->initial_numel * sizeof(float), 2);
    f[k++] = (uint64_t)s->n_samples;
    for (int i = 0; i < s->n_samples; i++) {
        for (int which = 0; which < 2; which++) {
            const rg_train_data *d = which ? &s->eval[i].view : &s->train[i].view;
            const size_t NT = d->N > 0 ? (size_t)d->N * (size_t)d->T : 0;
            f[k++] = (uint64_t)d->N;
            f[k++] = (uint64_t)d->T;
            f[k++] = ints_hash(d->tokens, NT);
            f[k++] = ints_hash(d->attention_mask, NT) ^ (ints_hash(d->token_types, NT) << 1);
            f[k++] = ints_hash(d->targets, is_lm ? NT : (size_t)(d->N > 0 ? d->N : 0));
            f[k++] = 0;
        }
    }
    uint64_t h = rg_hash64(f, k * sizeof(uint64_t), 3);
    free(f);
    return h;
}

static void header_make(const rg_sweep *s, unsigned char header[32])
{
    memset(header, 0, 32);
    memcpy(header, journal_magic, 8);
    uint32_t fields[2] = {JOURNAL_VERSION, (uint32_t)s->n_runs};
    memcpy(header + 8, fields, 8);
    memcpy(header + 16, &s->fingerprint, 8);
    uint64_t h = rg_hash64(header, 24, 0);
    memcpy(header + 24, &h, 8);
}

static void sync_directory(const char *path)
{
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (slash == NULL)
        snprintf(dir, sizeof(dir), ".");
    else
        snprintf(dir, sizeof(dir), "%.*s", slash == path ? 1 : (int)(slash - path), path);
    int dfd = open(dir, O_RDONLY | O_DIRECTORY);
    if (dfd >= 0) {
        (void)fsync(dfd);
        close(dfd);
    }
}

static void eval_pack(const rg_train_eval *e, double *v)
{
    v[0] = e->epoch;
    v[1] = (double)e->step;
    v[2] = e->train_loss;
    v[3] = e->has_eval;
    v[4] = e->eval_loss;
    v[5] = e->eval_perplexity;
    v[6] = e->has_metrics;
    v[7] = e->accuracy;
    v[8] = e->macro_f1;
    v[9] = e->near_accuracy;
    v[10] = e->near_macro_f1;
}

static void eval_unpack(const double *v, rg_train_eval *e)
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

/* Parses one record's payload into its run. 0 when it does not fit this sweep. */
static int record_apply(rg_sweep *s, const unsigned char *p, size_t bytes)
{
    int32_t vi, si, status, n_epochs, best_epoch;
    double value, best_metric;
    int64_t step;
    if (bytes < RECORD_HEAD)
        return 0;
    memcpy(&vi, p, 4);
    memcpy(&si, p + 4, 4);
    memcpy(&value, p + 8, 8);
    memcpy(&status, p + 16, 4);
    memcpy(&n_epochs, p + 20, 4);
    memcpy(&best_epoch, p + 24, 4);
    memcpy(&best_metric, p + 32, 8);
    memcpy(&step, p + 40, 8);
    const int n_values = s->config.n_values;
    if (vi < 0 || vi >= n_values || si < 0 || si >= s->n_samples || bits_of(value) != bits_of(s->values[vi]) ||
        n_epochs < 0 || n_epochs > RECORD_MAX_EPOCHS ||
        bytes != RECORD_HEAD + (size_t)n_epochs * EVAL_FIELDS * sizeof(double) ||
        (status != RG_OK && status != RG_ERR_NONFINITE))
        return 0;
    rg_sweep_result *run = &s->runs[vi * s->n_samples + si];
    rg_train_eval *history = calloc((size_t)(n_epochs > 0 ? n_epochs : 1), sizeof(rg_train_eval));
    if (history == NULL)
        return 0;
    for (int e = 0; e < n_epochs; e++) {
        double v[EVAL_FIELDS];
        memcpy(v, p + RECORD_HEAD + (size_t)e * sizeof(v), sizeof(v));
        eval_unpack(v, &history[e]);
    }
    free(run->history);
    run->history = history;
    run->n_epochs = n_epochs;
    run->status = (rg_status)status;
    run->best_epoch = best_epoch;
    run->best_metric = best_metric;
    run->global_step = step;
    run->done = 1;
    run->from_journal = 1;
    return 1;
}

/* Opens or creates the journal, reads its records, cuts a torn tail. */
static rg_status journal_open(rg_sweep *s)
{
    const char *path = s->journal_path;
    s->fd = open(path, O_RDWR | O_CREAT, 0644);
    if (s->fd < 0) {
        sweep_message(s, "%s: cannot open the journal (%s)", path, strerror(errno));
        return RG_ERR_IO;
    }
    /* one process per journal: a second sweep appending to it would interleave records */
    struct flock lock;
    memset(&lock, 0, sizeof(lock));
    lock.l_type = F_WRLCK;
    lock.l_whence = SEEK_SET;
    if (fcntl(s->fd, F_SETLK, &lock) != 0) {
        sweep_message(s, "%s: the journal is in use by another process", path);
        return RG_ERR_STATE;
    }
    unsigned char want[32], have[32];
    header_make(s, want);
    struct stat st;
    if (fstat(s->fd, &st) != 0) {
        sweep_message(s, "%s: cannot stat (%s)", path, strerror(errno));
        return RG_ERR_IO;
    }
    off_t size = st.st_size;
    if (size < 32) {
        /* new, or a header torn at creation: only our own prefix may be rewritten */
        if (size > 0 && (rg_io_read_at(s->fd, have, (size_t)size, 0) != 1 ||
                         memcmp(have, journal_magic, (size_t)(size < 8 ? size : 8)) != 0)) {
            sweep_message(s, "%s: not a sweep journal", path);
            return RG_ERR_CORRUPT;
        }
        if (ftruncate(s->fd, 0) != 0 || rg_io_write_all(s->fd, want, 32) != 0 || fsync(s->fd) != 0) {
            sweep_message(s, "%s: cannot write the journal header (%s)", path, strerror(errno));
            return RG_ERR_IO;
        }
        sync_directory(path);
        return RG_OK;
    }
    if (rg_io_read_at(s->fd, have, 32, 0) != 1) {
        sweep_message(s, "%s: cannot read (%s)", path, strerror(errno));
        return RG_ERR_IO;
    }
    uint64_t h;
    memcpy(&h, have + 24, 8);
    if (memcmp(have, journal_magic, 8) != 0 || rg_hash64(have, 24, 0) != h) {
        sweep_message(s, "%s: not a sweep journal (bad magic or header checksum)", path);
        return RG_ERR_CORRUPT;
    }
    if (memcmp(have, want, 32) != 0) {
        sweep_message(s, "%s: the journal of another sweep (parameter, values, config, data or "
                         "initial parameters differ)", path);
        return RG_ERR_STATE;
    }
    off_t at = 32;
    unsigned char *payload = NULL;
    for (;;) {
        uint32_t head[2];
        if (at + 8 > size || rg_io_read_at(s->fd, head, 8, at) != 1 || head[0] != RECORD_MAGIC ||
            head[1] < RECORD_HEAD || (off_t)head[1] + 16 > size - at)
            break;
        unsigned char *grown = realloc(payload, head[1]);
        if (grown == NULL)
            break;
        payload = grown;
        uint64_t recorded;
        if (rg_io_read_at(s->fd, payload, head[1], at + 8) != 1 || rg_io_read_at(s->fd, &recorded, 8, at + 8 + head[1]) != 1 ||
            rg_hash64(payload, head[1], 0) != recorded || !record_apply(s, payload, head[1]))
            break;
        at += 16 + (off_t)head[1];
    }
    free(payload);
    if (at < size) { /* a torn or damaged record: it and what follows are redone */
        if (ftruncate(s->fd, at) != 0 || fsync(s->fd) != 0) {
            sweep_message(s, "%s: cannot cut the torn tail (%s)", path, strerror(errno));
            return RG_ERR_IO;
        }
    }
    if (lseek(s->fd, 0, SEEK_END) < 0)
        return RG_ERR_IO;
    return RG_OK;
}

static rg_status journal_append(rg_sweep *s, const rg_sweep_result *run)
{
    if (s->fd < 0)
        return RG_OK;
    const size_t payload = RECORD_HEAD + (size_t)run->n_epochs * EVAL_FIELDS * sizeof(double);
    unsigned char *rec = calloc(1, payload + 16);
    if (rec == NULL)
        return RG_ERR_NOMEM;
    uint32_t head[2] = {RECORD_MAGIC, (uint32_t)payload};
    int32_t ints[5] = {run->value_index, run->sample_index, 0, (int32_t)run->status, run->n_epochs};
    memcpy(rec, head, 8);
    unsigned char *p = rec + 8;
    memcpy(p, &ints[0], 4);
    memcpy(p + 4, &ints[1], 4);
    memcpy(p + 8, &run->value, 8);
    memcpy(p + 16, &ints[3], 4);
    memcpy(p + 20, &ints[4], 4);
    int32_t best = run->best_epoch;
    memcpy(p + 24, &best, 4);
    memcpy(p + 32, &run->best_metric, 8);
    memcpy(p + 40, &run->global_step, 8);
    for (int e = 0; e < run->n_epochs; e++) {
        double v[EVAL_FIELDS];
        eval_pack(&run->history[e], v);
        memcpy(p + RECORD_HEAD + (size_t)e * sizeof(v), v, sizeof(v));
    }
    uint64_t h = rg_hash64(p, payload, 0);
    memcpy(rec + 8 + payload, &h, 8);
    off_t end = lseek(s->fd, 0, SEEK_END);
    rg_status status = RG_OK;
    /* one write, then fsync: a kill leaves at most one torn record, cut at the next init */
    if (end < 0 || rg_io_write_all(s->fd, rec, payload + 16) != 0 || fsync(s->fd) != 0) {
        sweep_message(s, "%s: cannot append to the journal (%s)", s->journal_path, strerror(errno));
        if (end >= 0 && ftruncate(s->fd, end) != 0) {
            /* the next init cuts the partial record anyway */
        }
        status = RG_ERR_IO;
    }
    free(rec);
    return status;
}

/* ------------------------------------------------------------------------ */
/* init / free                                                               */
/* ------------------------------------------------------------------------ */

static int is_integer(double v) { return isfinite(v) && v == floor(v) && fabs(v) < 1e9; }

static int value_ok(int parameter, double v)
{
    switch (parameter) {
    case RG_SWEEP_EPOCHS:
    case RG_SWEEP_BATCH_SIZE:
    case RG_SWEEP_GRAD_ACCUM: return is_integer(v) && v >= 1;
    case RG_SWEEP_TRAINABLE_BLOCKS: return is_integer(v) && v >= -1;
    case RG_SWEEP_LEARNING_RATE:
    case RG_SWEEP_WEIGHT_DECAY:
    case RG_SWEEP_MAX_GRAD_NORM: return isfinite(v) && v >= 0;
    case RG_SWEEP_BETA1:
    case RG_SWEEP_BETA2: return isfinite(v) && v >= 0 && v < 1;
    case RG_SWEEP_WARMUP_RATIO: return isfinite(v) && v >= 0 && v <= 1;
    default: return 0;
    }
}

static void config_with_value(rg_trainer_config *c, int parameter, double v)
{
    switch (parameter) {
    case RG_SWEEP_EPOCHS: c->epochs = (int)v; break;
    case RG_SWEEP_LEARNING_RATE: c->adamw.lr = v; break;
    case RG_SWEEP_BETA1: c->adamw.beta1 = v; break;
    case RG_SWEEP_BETA2: c->adamw.beta2 = v; break;
    case RG_SWEEP_BATCH_SIZE: c->train_batch_size = (int)v; break;
    case RG_SWEEP_WEIGHT_DECAY: c->adamw.weight_decay = v; break;
    case RG_SWEEP_WARMUP_RATIO: c->adamw.warmup_ratio = v; break;
    case RG_SWEEP_TRAINABLE_BLOCKS:
        c->apply_freezing = 1;
        c->trainable_blocks = (int)v;
        break;
    case RG_SWEEP_GRAD_ACCUM: c->grad_accum = (int)v; break;
    case RG_SWEEP_MAX_GRAD_NORM: c->adamw.max_grad_norm = v; break;
    default: break;
    }
}

void rg_sweep_free(rg_sweep *s)
{
    if (s == NULL)
        return;
    if (s->fd >= 0)
        close(s->fd);
    for (int i = 0; s->train && i < s->n_samples; i++)
        data_release(&s->train[i]);
    for (int i = 0; s->eval && i < s->n_samples; i++)
        data_release(&s->eval[i]);
    for (int i = 0; s->runs && i < s->n_runs; i++)
        free(s->runs[i].history);
    free(s->train);
    free(s->eval);
    free(s->runs);
    free(s->values);
    free(s->journal_path);
    free(s->initial);
    free(s);
}

static rg_status sweep_setup(rg_sweep *s, const rg_sweep_config *config, const rg_sweep_sample *samples,
                             int n_samples)
{
    const rg_model *m = s->model;
    const int is_lm = m->config.head == RG_HEAD_LM;
    if (config->parameter < 0 || config->parameter >= RG_SWEEP_PARAM_COUNT ||
        (config->n_values > 0 && config->values == NULL)) {
        sweep_message(s, "sweep: unknown parameter or no values array");
        return RG_ERR_INVALID_ARG;
    }
    if (config->n_values <= 0 || n_samples <= 0)
        return RG_ERR_EMPTY;
    if (config->base.orders != NULL) {
        sweep_message(s, "sweep: base.orders cannot be shared by samples of different sizes");
        return RG_ERR_INVALID_ARG;
    }
    for (int i = 0; i < config->n_values; i++)
        if (!value_ok(config->parameter, config->values[i])) {
            sweep_message(s, "sweep: value %d (%g) is out of range for this parameter", i, config->values[i]);
            return RG_ERR_INVALID_ARG;
        }
    const int freezes = config->base.apply_freezing || config->parameter == RG_SWEEP_TRAINABLE_BLOCKS;
    if (m->tied && freezes && config->base.head_policy == RG_HEAD_POLICY_UNTIE) {
        sweep_message(s, "sweep: untie the head before the sweep (runs could not share the initial parameters)");
        return RG_ERR_UNSUPPORTED;
    }
    s->config = *config;
    s->config.base.checkpoint_path = NULL;
    s->n_samples = n_samples;
    s->values = malloc((size_t)config->n_values * sizeof(double));
    s->train = calloc((size_t)n_samples, sizeof(owned_data));
    s->eval = calloc((size_t)n_samples, sizeof(owned_data));
    s->n_runs = config->n_values * n_samples;
    s->runs = calloc((size_t)s->n_runs, sizeof(rg_sweep_result));
    s->initial_numel = m->table.total;
    s->initial = malloc((s->initial_numel + 1) * sizeof(float));
    if (!s->values || !s->train || !s->eval || !s->runs || !s->initial)
        return RG_ERR_NOMEM;
    memcpy(s->values, config->values, (size_t)config->n_values * sizeof(double));
    s->config.values = s->values;
    memcpy(s->initial, m->params, s->initial_numel * sizeof(float));
    s->initial_blocks = m->n_trainable_blocks;
    s->initial_policy = m->head_policy;
    for (int i = 0; i < n_samples; i++) {
        RG_TRY(data_own(&s->train[i], &samples[i].train, is_lm));
        RG_TRY(data_own(&s->eval[i], &samples[i].eval, is_lm));
    }
    for (int v = 0; v < config->n_values; v++)
        for (int k = 0; k < n_samples; k++) {
            rg_sweep_result *run = &s->runs[v * n_samples + k];
            run->value_index = v;
            run->sample_index = k;
            run->value = s->values[v];
        }
    s->fingerprint = sweep_fingerprint(s, is_lm);
    if (config->journal_path != NULL) {
        size_t n = strlen(config->journal_path) + 1;
        s->journal_path = malloc(n);
        if (s->journal_path == NULL)
            return RG_ERR_NOMEM;
        memcpy(s->journal_path, config->journal_path, n);
        s->config.journal_path = s->journal_path;
        RG_TRY(journal_open(s));
    }
    return RG_OK;
}

rg_status rg_sweep_init(rg_sweep **out, rg_model *model, const rg_sweep_config *config,
                        const rg_sweep_sample *samples, int n_samples, char *error, size_t error_len)
{
    if (error != NULL && error_len > 0)
        error[0] = 0;
    if (out == NULL)
        return RG_ERR_INVALID_ARG;
    *out = NULL;
    if (model == NULL || config == NULL || (n_samples > 0 && samples == NULL))
        return RG_ERR_INVALID_ARG;
    rg_sweep *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return RG_ERR_NOMEM;
    s->model = model;
    s->fd = -1;
    rg_status status = sweep_setup(s, config, samples, n_samples);
    if (status != RG_OK) {
        if (error != NULL && error_len > 0)
            snprintf(error, error_len, "%s", s->message[0] ? s->message : rg_status_string(status));
        rg_sweep_free(s);
        return status;
    }
    *out = s;
    return RG_OK;
}

/* ------------------------------------------------------------------------ */
/* running                                                                   */
/* ------------------------------------------------------------------------ */

static void initial_restore(rg_sweep *s)
{
    rg_model *m = s->model;
    memcpy(m->params, s->initial, s->initial_numel * sizeof(float));
    if (m->n_trainable_blocks != s->initial_blocks || m->head_policy != s->initial_policy)
        (void)rg_model_set_trainable(m, s->initial_blocks, (rg_head_policy)s->initial_policy);
    rg_model_zero_grad(m);
}

static rg_status run_one(rg_sweep *s, rg_sweep_result *run)
{
    initial_restore(s);
    rg_trainer_config c = s->config.base;
    config_with_value(&c, s->config.parameter, run->value);
    const owned_data *train = &s->train[run->sample_index], *eval = &s->eval[run->sample_index];
    rg_trainer *t = NULL;
    char why[RG_CKPT_MESSAGE_LEN];
    rg_status status = rg_trainer_init(&t, s->model, &c, &train->view, eval->view.N > 0 ? &eval->view : NULL, why,
                                       sizeof(why));
    if (status != RG_OK) {
        sweep_message(s, "value %g, sample %d: the trainer refused the run (%s)", run->value,
                      run->sample_index + 1, why);
        return status;
    }
    status = rg_trainer_run(t);
    if (status == RG_OK || status == RG_ERR_NONFINITE) {
        int n = 0;
        const rg_train_eval *h = rg_trainer_history(t, &n);
        const rg_train_result *r = rg_trainer_result(t);
        rg_train_eval *copy = calloc((size_t)(n > 0 ? n : 1), sizeof(rg_train_eval));
        if (copy == NULL) {
            rg_trainer_free(t);
            return RG_ERR_NOMEM;
        }
        memcpy(copy, h, (size_t)n * sizeof(rg_train_eval));
        free(run->history);
        run->history = copy;
        run->n_epochs = n;
        run->status = status;
        run->best_epoch = r->best_epoch;
        run->best_metric = r->best_metric;
        run->global_step = r->global_step;
        run->from_journal = 0;
        status = journal_append(s, run);
        run->done = status == RG_OK;
    } else {
        sweep_message(s, "value %g, sample %d: %s", run->value, run->sample_index + 1,
                      rg_trainer_message(t)[0] ? rg_trainer_message(t) : rg_status_string(status));
    }
    rg_trainer_free(t);
    return status;
}

rg_status rg_sweep_run(rg_sweep *s)
{
    if (s == NULL)
        return RG_ERR_INVALID_ARG;
    s->message[0] = 0;
    rg_status status = RG_OK;
    for (int i = 0; i < s->n_runs && status == RG_OK; i++) {
        rg_sweep_result *run = &s->runs[i];
        if (run->done)
            continue;
        if (rg_interrupt_pending() || (s->config.base.stop_flag && *s->config.base.stop_flag)) {
            status = RG_ERR_INTERRUPTED;
            break;
        }
        status = run_one(s, run);
        if (status == RG_OK && s->config.on_run != NULL && s->config.on_run(s->config.on_run_user, run) != 0)
            status = i + 1 < s->n_runs ? RG_ERR_INTERRUPTED : RG_OK;
    }
    initial_restore(s);
    return status;
}

rg_status rg_sweep_record(rg_sweep *s, const rg_sweep_result *in)
{
    if (s == NULL || in == NULL)
        return RG_ERR_INVALID_ARG;
    s->message[0] = 0;
    if (in->value_index < 0 || in->value_index >= s->config.n_values || in->sample_index < 0 ||
        in->sample_index >= s->n_samples || bits_of(in->value) != bits_of(s->values[in->value_index]) ||
        (in->status != RG_OK && in->status != RG_ERR_NONFINITE) || in->n_epochs < 0 ||
        in->n_epochs > RECORD_MAX_EPOCHS || (in->n_epochs > 0 && in->history == NULL)) {
        sweep_message(s, "record: not a run of this sweep (value %d, sample %d)", in->value_index,
                      in->sample_index);
        return RG_ERR_INVALID_ARG;
    }
    rg_sweep_result *run = &s->runs[in->value_index * s->n_samples + in->sample_index];
    if (run->done) {
        sweep_message(s, "record: value %g, sample %d is done already", run->value, run->sample_index + 1);
        return RG_ERR_STATE;
    }
    rg_train_eval *history = calloc((size_t)(in->n_epochs > 0 ? in->n_epochs : 1), sizeof(rg_train_eval));
    if (history == NULL)
        return RG_ERR_NOMEM;
    if (in->n_epochs > 0)
        memcpy(history, in->history, (size_t)in->n_epochs * sizeof(rg_train_eval));
    free(run->history);
    run->history = history;
    run->n_epochs = in->n_epochs;
    run->status = in->status;
    run->best_epoch = in->best_epoch;
    run->best_metric = in->best_metric;
    run->global_step = in->global_step;
    run->from_journal = 0;
    rg_status status = journal_append(s, run);
    run->done = status == RG_OK;
    return status;
}

const rg_sweep_result *rg_sweep_runs(const rg_sweep *s, int *count)
{
    *count = s ? s->n_runs : 0;
    return s ? s->runs : NULL;
}

const char *rg_sweep_message(const rg_sweep *s) { return s ? s->message : ""; }
