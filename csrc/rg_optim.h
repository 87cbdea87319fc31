/*
 * rg_optim.h - AdamW, the learning-rate schedule and gradient clipping,
 * shared by every model family.
 *
 * The optimizer sees a model only through its rg_param_table and the two flat
 * float blocks (parameters and gradients, both (total,)). It reproduces
 * torch.optim.AdamW driven by the Hugging Face Trainer:
 *   - decoupled weight decay p *= 1 - lr * wd, only on tensors with decay = 1
 *     (the Trainer leaves biases and LayerNorm weights undecayed);
 *   - bias-corrected moments, eps added after sqrt of the corrected v;
 *   - the lr of update k (0-based) is lr * schedule(k), with
 *     get_linear_schedule_with_warmup semantics and
 *     warmup = ceil(warmup_ratio * total_steps);
 *   - clip_grad_norm_ semantics: scale = min(1, max_norm / (norm + 1e-6)).
 * Only trainable tensors are clipped and updated, and only they get moment
 * buffers, so freezing layers also saves optimizer memory.
 */
#ifndef RG_OPTIM_H
#define RG_OPTIM_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "rg_common.h"
#include "rg_params.h"
#include "rg_adamw_update.h"

typedef enum rg_schedule_kind {
    RG_SCHEDULE_LINEAR = 0,   /* linear warmup, then linear decay to 0 at total_steps */
    RG_SCHEDULE_CONSTANT = 1, /* lr at every step (warmup ignored, as HF's "constant") */
    RG_SCHEDULE_CONSTANT_WITH_WARMUP = 2, /* linear warmup, then lr */
    RG_SCHEDULE_COUNT
} rg_schedule_kind;

typedef struct rg_adamw_config {
    /* Scalars are double, as torch keeps hyperparameters as Python floats. */
    double lr;            /* peak learning rate */
    double beta1;
    double beta2;
    double eps;
    double weight_decay;
    double max_grad_norm; /* <= 0 disables clipping */
    double warmup_ratio;  /* fraction of total_steps spent warming up, in [0, 1] */
    int64_t total_steps;  /* optimizer updates in the whole run (> 0 for a decaying schedule) */
    rg_schedule_kind schedule;
} rg_adamw_config;

/* The slice of the flat blocks that one trainable tensor occupies, and where
 * its moments lie in the compact moment blocks. */
typedef struct rg_adamw_segment {
    size_t offset;        /* first element in the parameter block */
    size_t grad_offset;   /* first element in the gradient block (= offset unless the
                             table's gradients are compact) */
    size_t numel;
    size_t state_offset;  /* first element in m and v */
    uint8_t decay;
} rg_adamw_segment;

typedef struct rg_adamw {
    rg_adamw_config config;
    int64_t warmup_steps;       /* ceil(warmup_ratio * total_steps) */
    size_t total;               /* elements of the parameter block the table describes */
    rg_adamw_segment *segments; /* (n_segments,) trainable tensors, in table order */
    int n_segments;
    size_t state_numel;         /* sum of the trainable tensors' numel */
    float *m;                   /* (state_numel,) first moment */
    float *v;                   /* (state_numel,) second moment */
    int64_t step;               /* updates applied so far */
    double *norm_partials;      /* (max chunks of one segment,) scratch of the norm */
    size_t max_chunks;
    atomic_int busy;            /* rg_adamw_try_acquire / rg_adamw_release */
} rg_adamw;

/* Hyperparameters: lr finite >= 0; beta1, beta2 in [0, 1); eps finite > 0;
 * weight_decay finite >= 0; max_grad_norm finite (<= 0 disables clipping);
 * warmup_ratio in [0, 1]; anything else is RG_ERR_INVALID_ARG, from init and
 * again from every step. */

/* Checks the config and the table (every tensor inside [0, table->total),
 * no two trainable tensors overlapping) and allocates zeroed moments. */
rg_status rg_adamw_init(rg_adamw *opt, const rg_adamw_config *config, const rg_param_table *table);
void rg_adamw_free(rg_adamw *opt);

/* The multiplier of config.lr for the update with 0-based index `step`. */
double rg_schedule_factor(rg_schedule_kind kind, int64_t step, int64_t warmup_steps,
                          int64_t total_steps);

/* The learning rate the update with 0-based index `step` uses. */
double rg_adamw_lr_at(const rg_adamw *opt, int64_t step);

/* Global L2 norm of the trainable gradients (computed in double, in a fixed
 * order so the result does not depend on the thread count).
 * grads: (total,). Returns RG_ERR_NONFINITE when any of them is NaN or inf. */
rg_status rg_adamw_grad_norm(const rg_adamw *opt, const float *grads, double *norm_out);

/* One update: clip the trainable gradients, apply AdamW with the scheduled lr,
 * count the step, zero the trainable gradients it consumed.
 * params, grads: (total,). On RG_ERR_NONFINITE nothing is changed (parameters,
 * moments, step count and gradients stay as they were).
 * lr_out and grad_norm_out (the norm before clipping) may be NULL. */
rg_status rg_adamw_step(rg_adamw *opt, float *params, float *grads, double *lr_out,
                        double *grad_norm_out);

/* Restore a saved state: the step count and both moment blocks, each
 * (state_numel,). RG_ERR_SHAPE when the sizes differ from this optimizer's. */
/* Refusing concurrent calls, as rg_model_try_acquire: RG_OK when taken,
 * RG_ERR_STATE while another holder has it (step, grad_norm, load_state and
 * reading m / v all need it). rg_adamw_init clears it. */
rg_status rg_adamw_try_acquire(rg_adamw *opt);
void rg_adamw_release(rg_adamw *opt);

rg_status rg_adamw_load_state(rg_adamw *opt, int64_t step, const float *m, const float *v,
                              size_t state_numel);

#endif /* RG_OPTIM_H */
