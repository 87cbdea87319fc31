/*
 * rg_gemm_rows.c - C = A . W^T for a few rows of A, on AVX-512F, without
 * packing (see rg_gemm_rows.h).
 *
 * A tile of up to 6 rows of A and 4 rows of W keeps its 24 dot products in
 * registers as 16-lane partial sums while both walk along K; the lanes are
 * added at the end. W's rows are split among the threads, each reading its
 * share once; A is small and stays in cache.
 */
#include "rg_gemm_rows.h"

#include <stdint.h>
#include <stdlib.h>

#include "rg_backend.h" /* rg_ops_cpu_isa_named */

int rg_gemm_rows_supported(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    if (rg_ops_cpu_isa_named())
        return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define RG_ROWS_TARGET __attribute__((target("avx512f")))
#define RG_ROWS_INLINE static inline __attribute__((always_inline)) RG_ROWS_TARGET

enum { MR_MAX = 6, NR = 4 };

/* C (mr, nr) = alpha * A (mr, K) . W (nr, K)^T + beta * C; mr, nr constants
 * after inlining, so the accumulators stay in registers. When `next` is not
 * NULL, the NR rows of W there are fetched into the cache on the way: the
 * product is bound by how fast the weight comes from memory. */
RG_ROWS_INLINE void tile(const int mr, const int nr, int K, float alpha, const float *A, int lda, const float *W,
                         int ldw, float beta, float *C, int ldc, const float *next)
{
    __m512 acc[MR_MAX][NR];
    for (int m = 0; m < mr; m++)
        for (int n = 0; n < nr; n++)
            acc[m][n] = _mm512_setzero_ps();
    int k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 w[NR];
        for (int n = 0; n < nr; n++)
            w[n] = _mm512_loadu_ps(W + (size_t)n * ldw + k);
        if (next != NULL)
            for (int n = 0; n < NR; n++)
                _mm_prefetch((const char *)(next + (size_t)n * ldw + k), _MM_HINT_T0);
        for (int m = 0; m < mr; m++) {
            const __m512 a = _mm512_loadu_ps(A + (size_t)m * lda + k);
            for (int n = 0; n < nr; n++)
                acc[m][n] = _mm512_fmadd_ps(a, w[n], acc[m][n]);
        }
    }
    if (k < K) { /* the tail: masked lanes load 0 */
        const __mmask16 mask = (__mmask16)((1u << (K - k)) - 1u);
        __m512 w[NR];
        for (int n = 0; n < nr; n++)
            w[n] = _mm512_maskz_loadu_ps(mask, W + (size_t)n * ldw + k);
        for (int m = 0; m < mr; m++) {
            const __m512 a = _mm512_maskz_loadu_ps(mask, A + (size_t)m * lda + k);
            for (int n = 0; n < nr; n++)
                acc[m][n] = _mm512_fmadd_ps(a, w[n], acc[m][n]);
        }
    }
    for (int m = 0; m < mr; m++)
        for (int n = 0; n < nr; n++) {
            float *c = C + (size_t)m * ldc + n;
            const float dot = alpha * _mm512_reduce_add_ps(acc[m][n]);
            *c = beta == 0.0f ? dot : dot + beta * *c;
        }
}

#define RG_ROWS_CASE(mr, nr)                                                                               \
    case (mr) * 8 + (nr):                                                                                  \
        tile(mr, nr, K, alpha, A, lda, W, ldw, beta, C, ldc, next);                                        \
        break;
#define RG_ROWS_CASES(mr) RG_ROWS_CASE(mr, 1) RG_ROWS_CASE(mr, 2) RG_ROWS_CASE(mr, 3) RG_ROWS_CASE(mr, 4)

static RG_ROWS_TARGET void tile_any(int mr, int nr, int K, float alpha, const float *A, int lda, const float *W,
                                    int ldw, float beta, float *C, int ldc, const float *next)
{
    switch (mr * 8 + nr) {
        RG_ROWS_CASES(1)
        RG_ROWS_CASES(2)
        RG_ROWS_CASES(3)
        RG_ROWS_CASES(4)
        RG_ROWS_CASES(5)
        RG_ROWS_CASES(6)
    default:
        abort(); /* the caller keeps 1 <= mr <= 6, 1 <= nr <= 4 */
    }
}

void rg_gemm_rows(int M, int N, int K, float alpha, const float *A, int lda, const float *W, int ldw,
                  float beta, float *C, int ldc)
{
    if (M <= 0 || N <= 0)
        return;
    if (M > RG_GEMM_ROWS_MAX)
        abort(); /* callers check the bound */
    /* A's rows in near-equal tiles of at most MR_MAX (20 rows: 5, 5, 5, 5) */
    const int m_tiles = (M + MR_MAX - 1) / MR_MAX;
    const int n_tiles = (N + NR - 1) / NR;
    const double flops = 2.0 * M * (double)N * K;
#pragma omp parallel for schedule(static) if (flops > 2e6)
    for (int t = 0; t < n_tiles; t++) {
        const int n0 = t * NR, nr = N - n0 < NR ? N - n0 : NR;
        /* the first pass over these rows of W fetches the next tile's (whole tiles only) */
        const float *next = n0 + 2 * NR <= N ? W + (size_t)(n0 + NR) * ldw : NULL;
        for (int i = 0; i < m_tiles; i++) {
            const int m0 = (int)((int64_t)M * i / m_tiles), m1 = (int)((int64_t)M * (i + 1) / m_tiles);
            tile_any(m1 - m0, nr, K, alpha, A + (size_t)m0 * lda, lda, W + (size_t)n0 * ldw, ldw, beta,
                     C + (size_t)m0 * ldc + n0, ldc, i == 0 ? next : NULL);
        }
    }
}
#else
void rg_gemm_rows(int M, int N, int K, float alpha, const float *A, int lda, const float *W, int ldw,
                  float beta, float *C, int ldc)
{
    (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda, (void)W, (void)ldw, (void)beta, (void)C,
        (void)ldc;
    abort(); /* callers check rg_gemm_rows_supported() first */
}
#endif
