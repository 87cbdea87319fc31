/*
 * rg_gemm_rows.h - a few activation rows times a weight, without packing:
 * C (M, N) = A (M, K) . W (N, K)^T for M up to RG_GEMM_ROWS_MAX, as in
 * decoding (one row per sequence of the batch) or a classifier's head rows.
 *
 * A packed GEMM (OpenBLAS) copies the whole weight into its panel layout on
 * every call, which for a handful of rows costs as much as the product
 * itself; here each weight row is read once, straight from memory, and dotted
 * with every row of A (which stays in cache). Each output is one dot product
 * summed in a fixed order (16 lanes along K, then the lanes), so a row's
 * result does not depend on the other rows, their count, or the threads.
 */
#ifndef RG_GEMM_ROWS_H
#define RG_GEMM_ROWS_H

#ifdef __cplusplus
extern "C" {
#endif

#define RG_GEMM_ROWS_MAX 32

/* 1 when this CPU has AVX-512F and REVIEWGEN_CPU_ISA does not ask for a
 * narrower instruction set (baseline, x86-64-v3). */
int rg_gemm_rows_supported(void);

/* C (M, N; row stride ldc) = alpha * A (M, K; lda) . W (N, K; ldw)^T
 * + beta * C (beta 0: C is only written). 1 <= M <= RG_GEMM_ROWS_MAX. Threads
 * (OpenMP) split W's rows when the product is large enough. Only call when
 * rg_gemm_rows_supported(). */
void rg_gemm_rows(int M, int N, int K, float alpha, const float *A, int lda, const float *W, int ldw,
                  float beta, float *C, int ldc);

#ifdef __cplusplus
}
#endif
#endif /* RG_GEMM_ROWS_H */
