/*
 * rg_optim.c - AdamW, learning-rate schedules and gradient clipping over a
 * parameter table (see rg_optim.h for the exact semantics reproduced).
 */
#include "rg_optim.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Elements per partial sum of the gradient norm: the partial sums are added
 * in chunk order, so the norm is the same for any number of threads. */
#define RG_NORM_CHUNK ((size_t)1 << 16)
/* Below this many elements a loop is not worth starting threads for. */
#define RG_OPTIM_PARALLEL_MIN 32768

static int compare_segment_offset(const void *a, const void *b)
{
    const rg_adamw_segment *x = a, *y = b;
    return (x->offset > y->offset) - (x->offset < y->offset);
}

static rg_status check_config(const rg_adamw_config *c)
{
    if (!(isfinite(c->lr) && c->lr >= 0.0))
        return RG_ERR_INVALID_ARG;
    if (!(c->beta1 >= 0.0 && c->beta1 < 1.0 && c->beta2 >= 0.0 && c->beta2 < 1.0))
        return RG_ERR_INVALID_ARG;
    /* eps > 0: with eps = 0 a zero gradient makes 0 / 0 = NaN parameters */
    if (!(isfinite(c->eps) && c->eps > 0.0 && isfinite(c->weight_decay) && c->weight_decay >= 0.0))
        return RG_ERR_INVALID_ARG;
    if (!isfinite(c->max_grad_norm))
        return RG_ERR_INVALID_ARG;
    if (!(c->warmup_ratio >= 0.0 && c->warmup_ratio <= 1.0))
        return RG_ERR_INVALID_ARG;
    if (c->schedule < 0 || c->schedule >= RG_SCHEDULE_COUNT || c->total_steps < 0)
        return RG_ERR_INVALID_ARG;
    /* A decaying schedule needs to know where it ends. */
    if (c->schedule == RG_SCHEDULE_LINEAR && c->total_steps == 0)
        return RG_ERR_INVALID_ARG;
    return RG_OK;
}

rg_status rg_adamw_init(rg_adamw *opt, const rg_adamw_config *config, const rg_param_table *table)
{
    if (opt == NULL || config == NULL || table == NULL || table->count < 0 ||
        (table->count > 0 && table->tensors == NULL))
        return RG_ERR_INVALID_ARG;
    memset(opt, 0, sizeof(*opt));
    RG_TRY(check_config(config));

    int n_trainable = 0;
    for (int i = 0; i < table->count; i++) {
        const rg_param_info *t = &table->tensors[i];
        /* Written so that offset + numel cannot overflow. */
        if (t->offset > table->total || t->numel > table->total - t->offset)
            return RG_ERR_SHAPE;
        if (t->trainable && t->numel > 0) {
            /* a compact gradient block must hold every trainable tensor's slot */
            if (table->compact_grads && (t->grad_offset > table->grads_total ||
                                         t->numel > table->grads_total - t->grad_offset))
                return RG_ERR_SHAPE;
            n_trainable++;
        }
    }

    rg_adamw_segment *segments = calloc(n_trainable > 0 ? (size_t)n_trainable : 1, sizeof(*segments));
    if (segments == NULL)
        return RG_ERR_NOMEM;
    size_t state_numel = 0, max_chunks = 1;
    int k = 0;
    for (int i = 0; i < table->count; i++) {
        const rg_param_info *t = &table->tensors[i];
        if (!t->trainable || t->numel == 0)
            continue;
        segments[k].offset = t->offset;
        segments[k].grad_offset = rg_param_grad_offset(table, t);
        segments[k].numel = t->numel;
        segments[k].decay = t->decay ? 1 : 0;
        segments[k].state_offset = state_numel;
        state_numel += t->numel;
        size_t chunks = (t->numel + RG_NORM_CHUNK - 1) / RG_NORM_CHUNK;
        if (chunks > max_chunks)
            max_chunks = chunks;
        k++;
    }

    /* Two trainable tensors sharing elements would be updated twice per step. */
    rg_adamw_segment *sorted = malloc((n_trainable > 0 ? (size_t)n_trainable : 1) * sizeof(*sorted));
    if (sorted == NULL) {
        free(segments);
        return RG_ERR_NOMEM;
    }
    memcpy(sorted, segments, (size_t)n_trainable * sizeof(*sorted));
    qsort(sorted, (size_t)n_trainable, sizeof(*sorted), compare_segment_offset);
    for (int i = 1; i < n_trainable; i++) {
        if (sorted[i - 1].offset + sorted[i - 1].numel > sorted[i].offset) {
            free(sorted);
            free(segments);
            return RG_ERR_SHAPE;
        }
    }
    free(sorted);

    float *m = calloc(state_numel > 0 ? state_numel : 1, sizeof(float));
    float *v = calloc(state_numel > 0 ? state_numel : 1, sizeof(float));
    double *partials = malloc(max_chunks * sizeof(double));
    if (m == NULL || v == NULL || partials == NULL) {
        free(m);
        free(v);
        free(partials);
        free(segments);
        return RG_ERR_NOMEM;
    }

    opt->config = *config;
    /* HF: warmup_steps = ceil(total_steps * warmup_ratio). */
    const double warmup = ceil((double)config->total_steps * config->warmup_ratio);
    /* clamped in double: near INT64_MAX the product rounds up past what an int64 holds */
    opt->warmup_steps = warmup >= (double)config->total_steps ? config->total_steps : (int64_t)warmup;
    opt->total = table->total;
    opt->segments = segments;
    opt->n_segments = n_trainable;
    opt->state_numel = state_numel;
    opt->m = m;
    opt->v = v;
    opt->step = 0;
    opt->norm_partials = partials;
    opt->max_chunks = max_chunks;
    return RG_OK;
}

void rg_adamw_free(rg_adamw *opt)
{
    if (opt == NULL)
        return;
    free(opt->segments);
    free(opt->m);
    free(opt->v);
    free(opt->norm_partials);
    memset(opt, 0, sizeof(*opt));
}

double rg_schedule_factor(rg_schedule_kind kind, int64_t step, int64_t warmup_steps,
                          int64_t total_steps)
{
    if (step < 0)
        step = 0;
    switch (kind) {
    case RG_SCHEDULE_CONSTANT:
        return 1.0;
    case RG_SCHEDULE_CONSTANT_WITH_WARMUP:
        if (step < warmup_steps)
            return (double)step / (double)(warmup_steps > 1 ? warmup_steps : 1);
        return 1.0;
    case RG_SCHEDULE_LINEAR:
    default: {
        /* get_linear_schedule_with_warmup: step/warmup during warmup (so the very
         * first update uses lr 0), then (total - step) / (total - warmup), floored at 0. */
        if (step < warmup_steps)
            return (double)step / (double)(warmup_steps > 1 ? warmup_steps : 1);
        int64_t decay_span = total_steps - warmup_steps;
        double factor = (double)(total_steps - step) / (double)(decay_span > 1 ? decay_span : 1);
        return factor > 0.0 ? factor : 0.0;
    }
    }
}

double rg_adamw_lr_at(const rg_adamw *opt, int64_t step)
{
    return opt->config.lr * rg_schedule_factor(opt->config.schedule, step, opt->warmup_steps,
                                               opt->config.total_steps);
}

rg_status rg_adamw_grad_norm(const rg_adamw *opt, const float *grads, double *norm_out)
{
    if (opt == NULL || norm_out == NULL || (grads == NULL && opt->state_numel > 0))
        return RG_ERR_INVALID_ARG;
    double total_sq = 0.0;
    for (int s = 0; s < opt->n_segments; s++) {
        const float *g = grads + opt->segments[s].grad_offset; /* (numel,) */
        size_t numel = opt->segments[s].numel;
        const int64_t n_chunks = (int64_t)((numel + RG_NORM_CHUNK - 1) / RG_NORM_CHUNK);
        double *partials = opt->norm_partials;
#pragma omp parallel for schedule(static) if (numel > RG_OPTIM_PARALLEL_MIN)
        for (int64_t c = 0; c < n_chunks; c++) {
            size_t begin = (size_t)c * RG_NORM_CHUNK;
            size_t end = begin + RG_NORM_CHUNK < numel ? begin + RG_NORM_CHUNK : numel;
            double sum = 0.0;
            for (size_t i = begin; i < end; i++)
                sum += (double)g[i] * (double)g[i];
            partials[c] = sum;
        }
        for (int64_t c = 0; c < n_chunks; c++)
            total_sq += partials[c];
    }
    /* A NaN or inf gradient makes the sum NaN or inf; finite floats squared stay finite in double. */
    if (!isfinite(total_sq))
        return RG_ERR_NONFINITE;
    *norm_out = sqrt(total_sq);
    return RG_OK;
}

void rg_adamw_update(float *p, float *g, float *m, float *v, size_t n, int decay, const rg_adamw_factors *f)
{
    const int64_t numel = (int64_t)n;
    const rg_adamw_factors k = *f; /* locals: the stores below may not alias them */
#pragma omp parallel for schedule(static) if (numel > RG_OPTIM_PARALLEL_MIN)
    for (int64_t i = 0; i < numel; i++) {
        float grad = g[i] * k.clip_scale;
        float param = p[i];
        if (decay)
            param *= k.decay_factor;
        float m_i = m[i] + k.one_minus_beta1 * (grad - m[i]);
        float v_i = v[i] * k.beta2 + k.one_minus_beta2 * (grad * grad);
        float denom = sqrtf(v_i) * k.inv_bc2_sqrt + k.eps;
        p[i] = param - k.step_size * (m_i / denom);
        m[i] = m_i;
        v[i] = v_i;
        g[i] = 0.0f; /* consumed: the next accumulation starts from zero */
    }
}

rg_status rg_adamw_step(rg_adamw *opt, float *params, float *grads, double *lr_out,
                        double *grad_norm_out)
{
    if (opt == NULL || ((params == NULL || grads == NULL) && opt->state_numel > 0))
        return RG_ERR_INVALID_ARG;
    const rg_adamw_config *c = &opt->config;
    RG_TRY(check_config(c)); /* the struct is public: a config changed after init is checked again */
    if (opt->step == INT64_MAX)
        return RG_ERR_TOO_LARGE; /* the step count would overflow */

    double norm = 0.0;
    RG_TRY(rg_adamw_grad_norm(opt, grads, &norm));
    /* clip_grad_norm_: coefficient max_norm / (norm + 1e-6), clamped to at most 1. */
    float clip_scale = 1.0f;
    if (c->max_grad_norm > 0.0) {
        double coef = c->max_grad_norm / (norm + 1e-6);
        if (coef < 1.0)
            clip_scale = (float)coef;
    }

    double lr = rg_adamw_lr_at(opt, opt->step);
    int64_t t = opt->step + 1; /* torch counts the update being made */
    double bias_correction1 = 1.0 - pow(c->beta1, (double)t);
    double bias_correction2_sqrt = sqrt(1.0 - pow(c->beta2, (double)t));
    const rg_adamw_factors factors = {
        .clip_scale = clip_scale,
        .decay_factor = (float)(1.0 - lr * c->weight_decay),
        .step_size = (float)(lr / bias_correction1),
        .inv_bc2_sqrt = (float)(1.0 / bias_correction2_sqrt),
        .one_minus_beta1 = (float)(1.0 - c->beta1),
        .beta2 = (float)c->beta2,
        .one_minus_beta2 = (float)(1.0 - c->beta2),
        .eps = (float)c->eps,
    };
    for (int s = 0; s < opt->n_segments; s++) {
        const rg_adamw_segment *seg = &opt->segments[s];
        rg_adamw_update(params + seg->offset, grads + seg->grad_offset, opt->m + seg->state_offset,
                        opt->v + seg->state_offset, seg->numel, seg->decay && c->weight_decay != 0.0, &factors);
    }
    opt->step = t;
    if (lr_out)
        *lr_out = lr;
    if (grad_norm_out)
        *grad_norm_out = norm;
    return RG_OK;
}

rg_status rg_adamw_load_state(rg_adamw *opt, int64_t step, const float *m, const float *v,
                              size_t state_numel)
{
    if (opt == NULL || step < 0 || ((m == NULL || v == NULL) && state_numel > 0))
        return RG_ERR_INVALID_ARG;
    if (state_numel != opt->state_numel)
        return RG_ERR_SHAPE;
    for (size_t i = 0; i < state_numel; i++) {
        if (!isfinite(m[i]) || !isfinite(v[i]))
            return RG_ERR_NONFINITE;
        /* v is a running mean of squares: a negative value means a corrupt file. */
        if (v[i] < 0.0f)
            return RG_ERR_INVALID_ARG;
    }
    if (state_numel > 0) {
        memcpy(opt->m, m, state_numel * sizeof(float));
        memcpy(opt->v, v, state_numel * sizeof(float));
    }
    opt->step = step;
    return RG_OK;
}

rg_status rg_adamw_try_acquire(rg_adamw *opt)
{
    if (opt == NULL)
        return RG_ERR_INVALID_ARG;
    int expected = 0;
    return atomic_compare_exchange_strong(&opt->busy, &expected, 1) ? RG_OK : RG_ERR_STATE;
}

void rg_adamw_release(rg_adamw *opt)
{
    if (opt != NULL)
        atomic_store(&opt->busy, 0);
}
