/*
 * rg_gemm_bf16.h - matrix products with bf16 inputs and fp32 accumulation, on
 * CPUs with AVX512-BF16 (issue #12's mixed precision: fp32 master weights and
 * activations, each product's operands rounded to bf16 as they are packed).
 *
 * The op table "cpu-bf16" (rg_ops_cpu_bf16) is the CPU table with its linear
 * layers' matmul_forward / matmul_backward done here (the LM head's included);
 * everything else, and products of fewer than RG_GEMM_BF16_MIN_ROWS rows
 * (decoding, small batches), stay fp32.
 */
#ifndef RG_GEMM_BF16_H
#define RG_GEMM_BF16_H

#include "rg_backend.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RG_GEMM_BF16_MIN_ROWS 128

/* 1 when this CPU runs the bf16 kernels (AVX512F/BW/VL and AVX512-BF16) and
 * REVIEWGEN_CPU_ISA does not ask for a narrower set (baseline, x86-64-v3). */
int rg_gemm_bf16_supported(void);

/* C (M, N) += op(A) (M, K) * op(B) (K, N); row-major, fp32 in and out, the
 * products of bf16-rounded inputs summed in fp32.
 *   ta = 0: A is (M, K) with row stride lda;  ta = 1: A is stored (K, M).
 *   tb = 0: B is (K, N) with row stride ldb;  tb = 1: B is stored (N, K).
 * Only call when rg_gemm_bf16_supported(). */
void rg_gemm_bf16(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc);

/* op(B) (K, N) rounded and packed once, for products that read the same B many
 * times (an LM head's weight across its row chunks): rg_gemm_bf16_panels then
 * gives bit for bit what rg_gemm_bf16 gives with B itself. */
typedef struct rg_bf16_panels rg_bf16_panels;

/* tb and ldb as for rg_gemm_bf16; NULL when out of memory (or unsupported here).
 * The panels are a copy: later changes to B do not reach them. reuse: earlier
 * panels (or NULL) whose memory is taken again when large enough, else freed;
 * gone after the call in any case (packing into fresh pages each step costs
 * page faults, ~5% of a SmolLM2 training step). */
rg_bf16_panels *rg_bf16_panels_pack(rg_bf16_panels *reuse, int tb, int N, int K, const float *B, int ldb);
void rg_bf16_panels_free(rg_bf16_panels *panels);

/* C (M, N) += op(A) (M, K) * B, B's N and K those it was packed with. */
void rg_gemm_bf16_panels(int ta, int M, const float *A, int lda, const rg_bf16_panels *B, float *C, int ldc);

/* A linear layer's forward: C (M, N) = bias (N,) (0 when NULL) + A (M, K) . W^T, W
 * stored (N, K) with row stride ldw, or its panels (rg_bf16_panels_pack with tb = 1)
 * when prepared is set (W then unused). C's old values are not read: the same bits
 * as setting C to the bias and adding rg_gemm_bf16's product, without that pass over C. */
void rg_gemm_bf16_linear(int M, int N, int K, const float *A, int lda, const float *W, int ldw,
                         const rg_bf16_panels *prepared, const float *bias, float *C, int ldc);

/* The fp32 -> bf16 rounding the packing uses (round to nearest even), for tests;
 * the packing's vcvtneps2bf16 also flushes subnormal inputs to zero, this does not. */
float rg_round_bf16(float x);

/* The CPU op table with bf16 linear layers; NULL when this CPU lacks AVX512-BF16. */
const rg_ops_table *rg_ops_cpu_bf16(void);

#ifdef __cplusplus
}
#endif

#endif /* RG_GEMM_BF16_H */
