/*
 * test_gemm_rows.c - the few-rows product (rg_gemm_rows.h) against a double
 * reference at awkward sizes, strides, alpha and beta; a row's result the same
 * bits whatever the other rows and the threads; REVIEWGEN_CPU_ISA turning it
 * off. On a CPU without AVX-512F the cases check only that, and stop.
 */
#define _POSIX_C_SOURCE 200809L

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "rg_backend.h"
#include "rg_gemm_rows.h"
#include "rg_rng.h"
#include "rg_test.h"

static float *random_floats(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = rg_rng_uniform(seed, i) - 0.5f;
    return x;
}

void test_gemm_rows_matches_a_double_reference(void)
{
    if (!rg_gemm_rows_supported())
        return;
    /* K: below one vector, a tail, whole vectors, long; N: every remainder of 4 */
    static const int shapes[][3] = {{1, 1, 1},  {3, 5, 15},   {6, 4, 16},   {7, 13, 17},  {20, 962, 576},
                                    {32, 6, 1536}, {11, 3, 100}, {32, 2051, 33}, {5, 2, 3000}};
    static const float alphas[] = {1.0f, 0.37f}, betas[] = {0.0f, 1.0f, -0.5f};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
        for (int ab = 0; ab < 6; ab++) {
            const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
            const float alpha = alphas[ab % 2], beta = betas[ab / 2];
            const int lda = K + 3, ldw = K + 1, ldc = N + 2;
            const uint64_t seed = 300 + s * 8 + ab;
            float *A = random_floats((size_t)M * lda, seed), *W = random_floats((size_t)N * ldw, seed + 40);
            float *C = random_floats((size_t)M * ldc, seed + 80);
            float *C0 = malloc((size_t)M * ldc * sizeof(float));
            memcpy(C0, C, (size_t)M * ldc * sizeof(float));
            if (beta == 0.0f) /* beta 0 never reads C: garbage there must not leak */
                for (int m = 0; m < M; m++)
                    C[(size_t)m * ldc] = NAN;
            rg_gemm_rows(M, N, K, alpha, A, lda, W, ldw, beta, C, ldc);
            double worst = 0.0;
            for (int m = 0; m < M; m++) {
                for (int n = 0; n < N; n++) {
                    double dot = 0.0, size = 0.0;
                    for (int k = 0; k < K; k++) {
                        dot += (double)A[(size_t)m * lda + k] * W[(size_t)n * ldw + k];
                        size += fabs((double)A[(size_t)m * lda + k] * W[(size_t)n * ldw + k]);
                    }
                    const double want = alpha * dot + (beta == 0.0f ? 0.0 : beta * (double)C0[(size_t)m * ldc + n]);
                    const double err = fabs(C[(size_t)m * ldc + n] - want) / (fabs(alpha) * size + 1.0);
                    worst = err > worst ? err : worst;
                }
                for (int n = N; n < ldc; n++) /* the stride's gap is left alone */
                    RG_CHECK(C[(size_t)m * ldc + n] == C0[(size_t)m * ldc + n]);
            }
            if (!RG_CHECK(worst < 2e-6))
                rg_test_check(0, __FILE__, __LINE__, "M %d N %d K %d alpha %g beta %g: error %g", M, N, K,
                              alpha, beta, worst);
            free(A);
            free(W);
            free(C);
            free(C0);
        }
}

/* Each output is one dot product in a fixed order: row r of a 20-row call is
 * bit for bit row r of a call on fewer rows, and one thread gives two's bits. */
void test_gemm_rows_a_row_does_not_depend_on_the_others(void)
{
    if (!rg_gemm_rows_supported())
        return;
    enum { M = 20, N = 1030, K = 700 };
    float *A = random_floats((size_t)M * K, 7), *W = random_floats((size_t)N * K, 8);
    float *all = malloc((size_t)M * N * sizeof(float)), *part = malloc((size_t)M * N * sizeof(float));
    rg_gemm_rows(M, N, K, 1.0f, A, K, W, K, 0.0f, all, N);
    rg_gemm_rows(7, N, K, 1.0f, A + (size_t)13 * K, K, W, K, 0.0f, part, N); /* rows 13..19 alone */
    RG_CHECK(memcmp(part, all + (size_t)13 * N, (size_t)7 * N * sizeof(float)) == 0);
    rg_gemm_rows(1, N, K, 1.0f, A + (size_t)4 * K, K, W, K, 0.0f, part, N);
    RG_CHECK(memcmp(part, all + (size_t)4 * N, (size_t)N * sizeof(float)) == 0);
    const int threads = omp_get_max_threads();
    omp_set_num_threads(1);
    rg_gemm_rows(M, N, K, 1.0f, A, K, W, K, 0.0f, part, N);
    omp_set_num_threads(threads);
    RG_CHECK(memcmp(part, all, (size_t)M * N * sizeof(float)) == 0);
    free(A);
    free(W);
    free(all);
    free(part);
}

/* REVIEWGEN_CPU_ISA naming a narrower instruction set keeps AVX-512 out. */
void test_gemm_rows_respects_the_named_instruction_set(void)
{
    const char *before = getenv("REVIEWGEN_CPU_ISA");
    char *saved = before ? strdup(before) : NULL;
    setenv("REVIEWGEN_CPU_ISA", "baseline", 1);
    RG_CHECK(!rg_gemm_rows_supported());
    setenv("REVIEWGEN_CPU_ISA", "x86-64-v3", 1);
    RG_CHECK(!rg_gemm_rows_supported());
    if (saved) {
        setenv("REVIEWGEN_CPU_ISA", saved, 1);
        free(saved);
    } else {
        unsetenv("REVIEWGEN_CPU_ISA");
    }
}
