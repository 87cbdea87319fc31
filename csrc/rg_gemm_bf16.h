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

/* The fp32 -> bf16 rounding the packing uses (round to nearest even), for tests;
 * the packing's vcvtneps2bf16 also flushes subnormal inputs to zero, this does not. */
float rg_round_bf16(float x);

/* The CPU op table with bf16 linear layers; NULL when this CPU lacks AVX512-BF16. */
const rg_ops_table *rg_ops_cpu_bf16(void);

#ifdef __cplusplus
}
#endif

#endif /* RG_GEMM_BF16_H */
