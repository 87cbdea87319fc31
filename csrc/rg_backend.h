/*
 * rg_backend.h - the op table: the one seam through which rg_model.c runs
 * every layer operation, so that a model's forward and backward can run on
 * the CPU ops of rg_ops.c or on another implementation (CUDA, csrc/cuda/)
 * without a line of rg_model.c knowing which.
 *
 * Each entry has exactly the signature and semantics of the rg_ops.h
 * function of the same name (shapes, accumulation into gradients, NULL
 * meaning "not needed"); rg_ops.h is the reference. A table must fill every
 * entry but the optional group at the end, which it fills whole or not at all
 * (rg_ops_table_complete).
 *
 * Plugging in another backend: fill an rg_ops_table (csrc/cuda/ keeps one
 * file per op and rg_cuda_ops_table() returns the table, NULL while it has
 * none), then rg_model_set_ops(model, table). Today every pointer the model
 * hands the ops is host memory (the parameter, gradient and activation
 * blocks are malloc'ed); a device table also needs those blocks on the
 * device, which is the next step and not this seam's business.
 */
#ifndef RG_BACKEND_H
#define RG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Floats per query row that attention_forward keeps in `att` for the
 * backward (rg_ops.h says what the CPU keeps; the CUDA ops keep their own). */
#define RG_ATTENTION_ROW_STATS 2

typedef struct rg_ops_table {
    const char *name; /* "cpu", "cuda", ... */

    void (*dropout_apply)(float *x, size_t n, size_t first, float p, uint64_t stream);
    /* out (n,) += a (n,): the residual adds */
    void (*add_inplace)(float *out, const float *a, size_t n);

    void (*matmul_forward)(float *out, const float *inp, const float *weight, const float *bias,
                           int N, int IC, int OC);
    void (*matmul_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                            const float *inp, const float *weight, int N, int IC, int OC);

    void (*lora_forward)(float *out, float *u, const float *inp, const float *a, const float *b,
                         float scale, int N, int IC, int R, int OC, int ldo);
    void (*lora_backward)(float *dinp, float *da, float *db, float *du, const float *dout,
                          const float *inp, const float *u, const float *a, const float *b,
                          float scale, int N, int IC, int R, int OC, int ldo);

    void (*layernorm_forward)(float *out, float *mean, float *rstd, const float *inp,
                              const float *weight, const float *bias, int N, int C, float eps);
    void (*layernorm_backward)(float *dinp, float *dweight, float *dbias, const float *dout,
                               const float *inp, const float *weight, const float *mean,
                               const float *rstd, int N, int C);
    void (*rmsnorm_forward)(float *out, float *rstd, const float *inp, const float *weight, int N,
                            int C, float eps);
    void (*rmsnorm_backward)(float *dinp, float *dweight, const float *dout, const float *inp,
                             const float *weight, const float *rstd, int N, int C);

    void (*gelu_tanh_forward)(float *out, const float *inp, size_t n);
    void (*gelu_tanh_backward)(float *dinp, const float *inp, const float *dout, size_t n);
    void (*gelu_erf_forward)(float *out, const float *inp, size_t n);
    void (*gelu_erf_backward)(float *dinp, const float *inp, const float *dout, size_t n);
    void (*swiglu_forward)(float *out, const float *inp, int N, int F);
    void (*swiglu_backward)(float *dinp, const float *inp, const float *dout, int N, int F);
    void (*relu_forward)(float *out, const float *inp, size_t n);
    void (*relu_backward)(float *dinp, const float *out, const float *dout, size_t n);
    void (*tanh_forward)(float *out, const float *inp, size_t n);
    void (*tanh_backward)(float *dinp, const float *out, const float *dout, size_t n);

    void (*embedding_forward)(float *out, const int32_t *tokens, const int32_t *positions,
                              const int32_t *types, const float *wte, const float *wpe,
                              const float *wtt, int N, int C);
    void (*embedding_backward)(float *dwte, float *dwpe, float *dwtt, const float *dout,
                               const int32_t *tokens, const int32_t *positions,
                               const int32_t *types, int N, int C);

    void (*rope_forward)(float *qkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                         float theta);
    void (*rope_backward)(float *dqkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                          float theta);

    void (*attention_forward)(float *out, float *att, const float *qkv, const int32_t *key_mask,
                              int B, int T, int NH, int NKV, int HS, int causal, float attn_p,
                              uint64_t stream);
    void (*attention_backward)(float *dqkv, const float *dout, const float *qkv, const float *att,
                               const int32_t *key_mask, int B, int T, int NH, int NKV, int HS,
                               int causal, float attn_p, uint64_t stream);
    void (*attention_cached_forward)(float *out, const float *qkv, const float *k_cache,
                                     const float *v_cache, const int32_t *key_mask, int B, int Tn,
                                     int S, int start, int NH, int NKV, int HS);

    double (*crossentropy_forward)(float *lse, const float *logits, const int32_t *targets, int N,
                                   int V, long *count);
    void (*crossentropy_backward)(float *logits, const float *lse, const int32_t *targets, int N,
                                  int V, float scale);

    /* ---- optional: the four set, or all NULL (the caller then uses the entries above) ----
     * A weight (OC, IC) that many products read unchanged (an LM head across its row
     * chunks) made ready once, for products of N rows: weight_prepare returns a handle,
     * or NULL when the table gains nothing there or has no memory. The handle holds a
     * copy: prepare again after the weight changes. previous: an earlier handle of this
     * table (or NULL), whose memory is reused; it is gone after the call. input_grad:
     * also for matmul_input_grad_prepared. Results are those of matmul_forward and
     * matmul_backward bit for bit. */
    void *(*weight_prepare)(void *previous, const float *weight, int IC, int OC, int N, int input_grad);
    void (*weight_release)(void *prepared);
    /* matmul_forward with a prepared weight */
    void (*matmul_forward_prepared)(float *out, const float *inp, const void *prepared, const float *bias, int N);
    /* matmul_backward's input gradient alone: dinp (N, IC) += dout (N, OC) . weight */
    void (*matmul_input_grad_prepared)(float *dinp, const float *dout, const void *prepared, int N);
} rg_ops_table;

/* The CPU table: the functions of rg_ops.c, compiled for the widest
 * instruction set this CPU runs (one build runs on any x86-64; the choice is
 * made at run time). REVIEWGEN_CPU_ISA names another ("baseline",
 * "x86-64-v3"); a name this CPU cannot run is ignored. Static; never freed. */
const rg_ops_table *rg_ops_cpu(void);

/* The CPU table compiled for one instruction set: "baseline" (the target's
 * default, SSE2 on x86-64; NEON on aarch64) or "x86-64-v3" (AVX2, FMA, F16C);
 * NULL when the name is unknown or this CPU lacks the instructions. */
const rg_ops_table *rg_ops_cpu_isa(const char *isa);

/* The instruction set rg_ops_cpu() picks now (REVIEWGEN_CPU_ISA read). */
const char *rg_ops_cpu_isa_name(void);

/* The i-th instruction set this build has (narrowest first), supported by
 * this CPU or not; NULL past the last. */
const char *rg_ops_cpu_isa_at(size_t i);

/* 1 when REVIEWGEN_CPU_ISA names one of those sets: all are narrower than the
 * core's own AVX-512 kernels (rg_gemm_bf16.c, rg_gemm_rows.c), which then stay off. */
int rg_ops_cpu_isa_named(void);

/* The core name of the BLAS the CPU ops call (OpenBLAS's choice for this CPU,
 * or the one OPENBLAS_CORETYPE forced). */
const char *rg_ops_blas_core(void);

/* 1 when every entry of the table is set (and it has a name), the optional
 * ones all or none, else 0. */
int rg_ops_table_complete(const rg_ops_table *table);

#ifdef __cplusplus
}
#endif
#endif /* RG_BACKEND_H */
