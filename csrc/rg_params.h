/*
 * rg_params.h - the parameter table shared by models and optimizers.
 *
 * A model keeps all its parameters in one flat float block and all gradients
 * in a second block of the same size; this table says where each named
 * tensor lies. The optimizer, the gradient clipping and checkpoint code only
 * ever see the table, so one copy of the training machinery serves every
 * model family.
 */
#ifndef RG_PARAMS_H
#define RG_PARAMS_H

#include <stddef.h>
#include <stdint.h>

#define RG_PARAM_NAME_MAX 48

typedef struct rg_param_info {
    char name[RG_PARAM_NAME_MAX]; /* internal name, e.g. "h.5.qkv.w" (docs/model_layout.md) */
    size_t offset;                /* first element in the flat block */
    size_t numel;                 /* number of elements */
    int ndim;                     /* 1 or 2 */
    int64_t shape[2];             /* (rows, cols) or (n, 0) */
    int layer;                    /* -1 embeddings, 0..L-1 a block, L final norm and heads */
    uint8_t decay;                /* 1: AdamW weight decay applies; 0: biases, norms (as HF Trainer) */
    uint8_t trainable;            /* 0: frozen, its gradient is never computed nor applied */
} rg_param_info;

typedef struct rg_param_table {
    rg_param_info *tensors; /* (count,) */
    int count;
    size_t total;           /* elements in the flat block */
} rg_param_table;

#endif /* RG_PARAMS_H */
