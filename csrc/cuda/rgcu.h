/*
 * rgcu.h - what the CUDA op files share (inside the CUDA library only).
 *
 * Every op has the signature and semantics of its rg_ops.h twin, on device
 * pointers: rgcu_<op> here is rg_<op> there, the CPU reference it is tested
 * against (csrc/tests/test_cuda_ops.c). Ops return nothing, as on the CPU;
 * a failed launch, cuBLASLt call or scratch allocation is recorded with
 * rgcu_fail and reported by the next rgcu_synchronize (the first failure
 * wins until then). Every op runs on rgcu_stream().
 */
#ifndef RGCU_H
#define RGCU_H

#include <cuda_runtime.h>
#include <cublasLt.h>
#include <stddef.h>
#include <stdint.h>

#include "../rg_adamw_update.h"
#include "rg_cuda_backend.h"

#define RGCU_THREADS 256

/* Blocks of `threads` covering n elements (at least one). */
static inline unsigned rgcu_blocks(size_t n, int threads)
{
    size_t blocks = (n + (size_t)threads - 1) / (size_t)threads;
    return blocks == 0 ? 1u : (unsigned)blocks;
}

/* The sum / max over the 32 lanes of a warp, returned to every lane; all 32
 * lanes must call it (a butterfly of shuffles, the same order on every lane). */
template <typename T> static __device__ __forceinline__ T rgcu_warp_sum(T v)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, offset);
    return v;
}

static __device__ __forceinline__ float rgcu_warp_max(float v)
{
    for (int offset = 16; offset > 0; offset >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
    return v;
}

extern "C" {

/* ---- runtime (runtime.cu) ---- */
cudaStream_t rgcu_stream(void);
/* The library's cuBLASLt handle, created on first use; NULL (and recorded) on failure. */
cublasLtHandle_t rgcu_cublaslt(void);
/* Records the first failure since the last rgcu_synchronize: `what` names the op. */
void rgcu_fail(rg_status status, const char *what);
/* rgcu_fail(RG_ERR_CUDA, what) when the last launch failed. */
void rgcu_check_launch(const char *what);
/* A device buffer of at least `bytes` for slot `slot` (0..RGCU_SCRATCH_SLOTS-1),
 * kept and grown between calls; NULL (recorded) when it cannot be had. */
#define RGCU_SCRATCH_SLOTS 4
/* Who uses which slot. All work runs in order on one stream, so a later op
 * may reuse a slot an earlier op used; two ops of one file may share one. */
enum {
    RGCU_SCRATCH_CUBLASLT = 0,  /* cuBLASLt workspace (matmul.cu, lora.cu) */
    RGCU_SCRATCH_MATMUL = 1,    /* matmul/lora temporaries */
    RGCU_SCRATCH_ATTENTION = 2, /* attention backward's D, cross-entropy's row losses */
    RGCU_SCRATCH_REDUCE = 3,    /* per-block partial sums (norm weight gradients) */
};
void *rgcu_scratch(int slot, size_t bytes);

rg_status rgcu_malloc(void **ptr, size_t bytes);
void rgcu_free(void *ptr);
rg_status rgcu_memcpy(void *dst, const void *src, size_t bytes, int kind);
rg_status rgcu_memset(void *dst, int value, size_t bytes);
rg_status rgcu_synchronize(void);
const char *rgcu_last_error(void);

/* ---- shared by the ops ---- */
/* column_sums.cu: the norms' weight (and bias) gradients are column sums over N rows, made
 * deterministic in two passes. Pass 1 (in each op's file): block (RGCU_COL_TILE,
 * RGCU_COL_LANES) at grid (column tile, row chunk) writes partial (chunks, planes, C);
 * rgcu_column_chunks(N, &chunk_rows) says how many chunks of how many rows (it depends on N
 * only, so the order is fixed for a shape). Pass 2, rgcu_column_sums_reduce, adds the chunks
 * in a fixed order into out0 (plane 0) and out1 (plane 1), either NULL = not needed. */
#define RGCU_COL_TILE 32        /* columns per tile (one warp's width) */
#define RGCU_COL_LANES 8        /* row lanes per tile block (blockDim.y) */
#define RGCU_COL_MAX_CHUNKS 1024 /* row chunks: gridDim.y and scratch size */
#define RGCU_COL_MAX_PLANES 2
int rgcu_column_chunks(int N, int *chunk_rows);
void rgcu_column_sums_reduce(float *out0, float *out1, const float *partial, int planes, int chunks, int C,
                             const char *what);

/* matmul.cu: row-major C (M, N; row stride ldc) = alpha * op(A) @ op(B) +
 * beta * C (+ bias (N,) on every row; NULL: none), as cblas_sgemm, through
 * cuBLASLt in fp32; `what` names the caller in a recorded failure. */
void rgcu_gemm(int trans_a, int trans_b, int M, int N, int K, float alpha, const float *A, int lda,
               const float *B, int ldb, float beta, float *C, int ldc, const float *bias, const char *what);

/* ---- the optimizer's element-wise work (adamw.cu) ---- */
void rgcu_adamw_update(float *p, float *g, float *m, float *v, size_t n, int decay, const rg_adamw_factors *f);
rg_status rgcu_sum_squares(const float *x, size_t n, double *out);

/* ---- ops (one file each; rg_ops.h has the shapes) ---- */
void rgcu_dropout_apply(float *x, size_t n, size_t first, float p, uint64_t stream);
void rgcu_add_inplace(float *out, const float *a, size_t n);

void rgcu_matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                         int N, int IC, int OC);
void rgcu_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, int N, int IC, int OC);
void rgcu_lora_forward(float *out, float *u, const float *inp, const float *a, const float *b,
                       float scale, int N, int IC, int R, int OC, int ldo);
void rgcu_lora_backward(float *dinp, float *da, float *db, float *du, const float *dout,
                        const float *inp, const float *u, const float *a, const float *b,
                        float scale, int N, int IC, int R, int OC, int ldo);

void rgcu_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                            const float *weight, const float *bias, int N, int C, float eps);
void rgcu_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                             const float *inp, const float *weight, const float *mean,
                             const float *rstd, int N, int C);
void rgcu_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N,
                          int C, float eps);
void rgcu_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                           const float *weight, const float *rstd, int N, int C);

void rgcu_gelu_tanh_forward(float *out, const float *inp, size_t n);
void rgcu_gelu_tanh_backward(float *dinp, const float *inp, const float *dout, size_t n);
void rgcu_gelu_erf_forward(float *out, const float *inp, size_t n);
void rgcu_gelu_erf_backward(float *dinp, const float *inp, const float *dout, size_t n);
void rgcu_swiglu_forward(float *out, const float *inp, int N, int F);
void rgcu_swiglu_backward(float *dinp, const float *inp, const float *dout, int N, int F);
void rgcu_relu_forward(float *out, const float *inp, size_t n);
void rgcu_relu_backward(float *dinp, const float *out, const float *dout, size_t n);
void rgcu_tanh_forward(float *out, const float *inp, size_t n);
void rgcu_tanh_backward(float *dinp, const float *out, const float *dout, size_t n);

void rgcu_embedding_forward(float *out, const int32_t *tokens, const int32_t *positions,
                            const int32_t *types, const float *wte, const float *wpe,
                            const float *wtt, int N, int C);
void rgcu_embedding_backward(float *dwte, float *dwpe, float *dwtt, const float *dout,
                             const int32_t *tokens, const int32_t *positions,
                             const int32_t *types, int N, int C);

void rgcu_rope_forward(float *qkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                       float theta);
void rgcu_rope_backward(float *dqkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                        float theta);

/* `att` (B, NH, T, 2) is this backend's saved state between forward and
 * backward, not the probabilities, which are never stored: the forward keeps
 * each query row's log-sum-exp there (B*NH*T floats; -inf for a row that
 * sees no key) and, when T >= 2, one visibility word per key after them
 * (B*T int32: mask set, causal), which the backward reads instead of the
 * key_mask and causal it is passed; the backward recomputes the rest. */
void rgcu_attention_forward(float *out, float *att, const float *qkv, const int32_t *key_mask,
                            int B, int T, int NH, int NKV, int HS, int causal, float attn_p,
                            uint64_t stream);
void rgcu_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                             const int32_t *key_mask, int B, int T, int NH, int NKV, int HS, int causal,
                             float attn_p, uint64_t stream);
void rgcu_attention_cached_forward(float *out, const float *qkv, const float *k_cache,
                                   const float *v_cache, const int32_t *key_mask, int B, int Tn,
                                   int S, int start, int NH, int NKV, int HS);

double rgcu_crossentropy_forward(float *lse, const float *logits, const int32_t *targets, int N,
                                 int V, long *count);
void rgcu_crossentropy_backward(float *logits, const float *lse, const int32_t *targets, int N,
                                int V, float scale);

} /* extern "C" */

#endif /* RGCU_H */
