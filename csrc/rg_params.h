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

#include "rg_common.h"

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
    size_t grad_offset;           /* first element of its gradient when the table's
                                     compact_grads is set (SIZE_MAX: it has none) */
} rg_param_info;

typedef struct rg_param_table {
    rg_param_info *tensors; /* (count,) */
    int count;
    size_t total;           /* elements in the flat block */
    /* 0: the gradient block has the parameter block's layout (tensor i's
     * gradient at tensors[i].offset). 1: it is compact, grads_total elements
     * holding only the tensors that may train, each at tensors[i].grad_offset
     * (a LoRA model: the frozen base weights get no gradient memory). */
    int compact_grads;
    size_t grads_total;
} rg_param_table;

/* Where tensor `info` of `table` keeps its gradient in the gradient block
 * (SIZE_MAX: it has no slot, so it can never train). */
static inline size_t rg_param_grad_offset(const rg_param_table *table, const rg_param_info *info)
{
    return table->compact_grads ? info->grad_offset : info->offset;
}

/* Element types a checkpoint tensor may arrive in (rg_param_write converts). */
typedef enum rg_dtype {
    RG_DTYPE_F32 = 0,
    RG_DTYPE_F16 = 1,  /* IEEE half */
    RG_DTYPE_BF16 = 2, /* bfloat16: the upper half of a float32 */
    RG_DTYPE_F64 = 3,
    /* llama.cpp's block formats (GGUF): each row is cols / 32 blocks of 32
     * values, a half scale d (and a half minimum m) before the quants.
     * Q4_0: 18 bytes, x = (q - 8) * d; Q4_1: 20 bytes, x = q * d + m;
     * Q8_0: 34 bytes, x = q * d (q signed). In a 4-bit block byte j holds
     * value j in its low nibble and value j + 16 in its high one. */
    RG_DTYPE_Q4_0 = 4,
    RG_DTYPE_Q4_1 = 5,
    RG_DTYPE_Q8_0 = 6
} rg_dtype;

#define RG_QUANT_BLOCK 32

/* Bytes of one element (float types) or of one block of RG_QUANT_BLOCK
 * values (block types); 0 for an unknown dtype. */
size_t rg_dtype_size(rg_dtype dtype);
int rg_dtype_is_blocked(rg_dtype dtype);

/* A strided source matrix: element (r, c) lies at
 * (const char *)data + (r * row_stride + c * col_stride) * element size.
 * A 1-D source is (rows, 1). Strides are in elements and may be any sign, so
 * a transposed or sliced array needs no copy before it is written. Block
 * types: cols counts values (a multiple of 32), row_stride counts blocks
 * (at least cols / 32) and col_stride must be 1. */
typedef struct rg_tensor_source {
    const void *data;
    rg_dtype dtype;
    int64_t rows, cols;
    int64_t row_stride, col_stride;
} rg_tensor_source;

/* Writes `source` into rows [row_offset, row_offset + rows) of the tensor
 * `info` of the flat float block `block`, converting to float32: the one
 * place where weights enter a parameter block (stacked tensors such as
 * q/k/v arrive in several calls). A 1-D tensor of n elements is (n, 1).
 * RG_ERR_SHAPE: cols differ or the rows do not fit; RG_ERR_NONFINITE: the
 * source held NaN or infinity (the rows are written all the same);
 * RG_ERR_INVALID_ARG: a null pointer or an unknown dtype. */
rg_status rg_param_write(float *block, const rg_param_info *info, int64_t row_offset,
                         const rg_tensor_source *source);

/* The whole source as float32 into out (rows * cols, row-major), without the
 * NaN check. RG_ERR_INVALID_ARG: a null pointer, an unknown dtype, or a block
 * source whose cols is not a multiple of 32 or whose strides do not fit. */
rg_status rg_tensor_convert(float *out, const rg_tensor_source *source);

#endif /* RG_PARAMS_H */
