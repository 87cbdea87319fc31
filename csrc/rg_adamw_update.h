/*
 * rg_adamw_update.h - the element-wise AdamW update of one tensor, apart from
 * rg_optim.h so that the GPU twin (csrc/cuda/adamw.cu, C++) can share the
 * declaration without the optimizer's C-only parts.
 */
#ifndef RG_ADAMW_UPDATE_H
#define RG_ADAMW_UPDATE_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The scalars of one update, the same for every tensor (rg_adamw_step
 * derives them from the config, the step and the gradient norm). */
typedef struct rg_adamw_factors {
    float clip_scale;      /* the gradient is multiplied by it (clipping) */
    float decay_factor;    /* 1 - lr * weight_decay, on tensors that decay */
    float step_size;       /* lr / (1 - beta1^t) */
    float inv_bc2_sqrt;    /* 1 / sqrt(1 - beta2^t) */
    float one_minus_beta1;
    float beta2;
    float one_minus_beta2;
    float eps;
} rg_adamw_factors;

/* The element-wise AdamW update of one tensor, in place; the gradient is
 * zeroed (consumed). The GPU twin (rg_cuda.h) computes the same thing. */
void rg_adamw_update(float *p /* (n,) */, float *g /* (n,) */, float *m /* (n,) */, float *v /* (n,) */,
                     size_t n, int decay, const rg_adamw_factors *f);

#ifdef __cplusplus
}
#endif
#endif /* RG_ADAMW_UPDATE_H */
