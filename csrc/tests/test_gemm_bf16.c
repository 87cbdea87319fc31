/*
 * test_gemm_bf16.c - the bf16 products (rg_gemm_bf16.h) against a double
 * reference over the same bf16-rounded inputs, every transpose, awkward
 * sizes and leading dimensions; the "cpu-bf16" op table against the fp32
 * CPU ops. On a CPU without AVX512-BF16 the cases check that nothing
 * claims support, and stop.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rg_backend.h"
#include "rg_gemm_bf16.h"
#include "rg_rng.h"
#include "rg_test.h"

static float *random_floats(size_t n, uint64_t seed)
{
    float *x = malloc(n * sizeof(float));
    for (size_t i = 0; i < n; i++)
        x[i] = rg_rng_uniform(seed, i) - 0.5f;
    return x;
}

static int unsupported_here(void)
{
    if (rg_gemm_bf16_supported())
        return 0;
    RG_CHECK(rg_ops_cpu_bf16() == NULL);
    return 1;
}

void test_gemm_bf16_rounding(void)
{
    RG_CHECK(rg_round_bf16(1.0f) == 1.0f);
    RG_CHECK(rg_round_bf16(1.0f + 1.0f / 256) == 1.0f);              /* a tie: to even */
    RG_CHECK(rg_round_bf16(1.0f + 3.0f / 256) == 1.0f + 4.0f / 256); /* a tie: to even, up */
    RG_CHECK(rg_round_bf16(1.0f + 1.5f / 256) == 1.0f + 2.0f / 256); /* above the tie */
    RG_CHECK(rg_round_bf16(-3.0e38f) == -3.0e38f || fabsf(rg_round_bf16(-3.0e38f) + 3.0e38f) < 3.0e36f);
    RG_CHECK(isnan(rg_round_bf16(NAN)));
    RG_CHECK(isinf(rg_round_bf16(INFINITY)));
}

void test_gemm_bf16_matches_a_double_reference(void)
{
    if (unsupported_here())
        return;
    /* 2049 columns: several NC blocks; 4500: two KB passes over K; 1100 x 4500: B packed
     * in two groups of NC blocks */
    static const int shapes[][3] = {{1, 1, 1},    {7, 33, 5},    {8, 32, 2},   {65, 70, 300},
                                    {129, 2049, 513}, {16, 50, 257}, {9, 40, 4500}, {9, 1100, 4500}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                const int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 1, ldc = N + 2;
                const uint64_t seed = 100 + s * 4 + ta * 2 + tb;
                float *A = random_floats((size_t)(ta ? K : M) * lda, seed);
                float *B = random_floats((size_t)(tb ? N : K) * ldb, seed + 50);
                float *C = random_floats((size_t)M * ldc, seed + 99);
                float *C0 = malloc((size_t)M * ldc * sizeof(float));
                memcpy(C0, C, (size_t)M * ldc * sizeof(float));
                rg_gemm_bf16(ta, tb, M, N, K, A, lda, B, ldb, C, ldc);
                double worst = 0.0;
                int padding_kept = 1;
                for (int m = 0; m < M; m++) {
                    for (int n = 0; n < N; n++) {
                        double sum = C0[(size_t)m * ldc + n];
                        for (int k = 0; k < K; k++) {
                            const float a = ta ? A[(size_t)k * lda + m] : A[(size_t)m * lda + k];
                            const float b = tb ? B[(size_t)n * ldb + k] : B[(size_t)k * ldb + n];
                            sum += (double)rg_round_bf16(a) * rg_round_bf16(b);
                        }
                        const double err = fabs(sum - C[(size_t)m * ldc + n]) / (1.0 + fabs(sum));
                        worst = err > worst ? err : worst;
                    }
                    for (int n = N; n < ldc; n++) /* past N: not touched */
                        padding_kept &= C[(size_t)m * ldc + n] == C0[(size_t)m * ldc + n];
                }
                /* fp32 sums of K exact products: a few float ulps times sqrt(K) */
                if (!RG_CHECK(worst < 4e-7 * (1.0 + sqrt((double)K))) || !RG_CHECK(padding_kept))
                    fprintf(stderr, "  M=%d N=%d K=%d ta=%d tb=%d: worst relative error %.3g\n", M, N, K, ta, tb,
                            worst);
                free(A), free(B), free(C), free(C0);
            }
}

void test_gemm_bf16_op_table(void)
{
    if (unsupported_here())
        return;
    const rg_ops_table *fp32 = rg_ops_cpu(), *bf16 = rg_ops_cpu_bf16();
    if (!RG_CHECK(bf16 != NULL && rg_ops_table_complete(bf16)))
        return;
    RG_CHECK(strcmp(bf16->name, "cpu-bf16") == 0);
    RG_CHECK(bf16->layernorm_forward == fp32->layernorm_forward); /* only the linear layers change */
    static const int row_counts[] = {3, RG_GEMM_BF16_MIN_ROWS - 1, RG_GEMM_BF16_MIN_ROWS, 150};
    for (size_t r = 0; r < sizeof(row_counts) / sizeof(row_counts[0]); r++) { /* under RG_GEMM_BF16_MIN_ROWS rows: the fp32 path, bit for bit */
        const int rows = row_counts[r];
        const int N = rows, IC = 45, OC = r == 2 ? 600 : 37; /* 600 weight rows: a head's shape */
        float *inp = random_floats((size_t)N * IC, 1), *w = random_floats((size_t)OC * IC, 2);
        float *bias = random_floats(OC, 3), *dout = random_floats((size_t)N * OC, 4);
        float *out32 = calloc((size_t)N * OC, sizeof(float)), *out16 = calloc((size_t)N * OC, sizeof(float));
        float *g32[3] = {random_floats((size_t)N * IC, 5), random_floats((size_t)OC * IC, 6), random_floats(OC, 7)};
        float *g16[3] = {random_floats((size_t)N * IC, 5), random_floats((size_t)OC * IC, 6), random_floats(OC, 7)};
        const size_t sizes[3] = {(size_t)N * IC, (size_t)OC * IC, (size_t)OC};
        fp32->matmul_forward(out32, inp, w, bias, N, IC, OC);
        bf16->matmul_forward(out16, inp, w, bias, N, IC, OC);
        fp32->matmul_backward(g32[0], g32[1], g32[2], dout, inp, w, N, IC, OC);
        bf16->matmul_backward(g16[0], g16[1], g16[2], dout, inp, w, N, IC, OC);
        /* bf16 keeps 8 bits: each product is off by up to ~2^-8 relative */
        const int bf16_path = rows >= RG_GEMM_BF16_MIN_ROWS;
        const double tol = bf16_path ? 0.05 : 0.0;
        double worst = 0.0;
        for (size_t i = 0; i < (size_t)N * OC; i++)
            worst = fmax(worst, fabs(out32[i] - out16[i]));
        RG_CHECK(worst <= tol);
        RG_CHECK(!bf16_path || worst > 0.0); /* the bf16 path did run */
        for (int g = 0; g < 3; g++) {
            double gw = 0.0;
            for (size_t i = 0; i < sizes[g]; i++)
                gw = fmax(gw, fabs(g32[g][i] - g16[g][i]));
            RG_CHECK(gw <= (g == 2 ? 0.0 : tol)); /* the bias gradient stays fp32 */
        }
        /* a prepared weight: the same bits as the unprepared products, for products of any
         * rows (fewer than the bf16 path takes: the fp32 weight) */
        void *prepared = bf16->weight_prepare(NULL, w, IC, OC, RG_GEMM_BF16_MIN_ROWS, 1);
        if (RG_CHECK(prepared != NULL)) {
            float *outp = calloc((size_t)N * OC, sizeof(float)), *dinp = random_floats((size_t)N * IC, 5);
            bf16->matmul_forward_prepared(outp, inp, prepared, bias, N);
            bf16->matmul_input_grad_prepared(dinp, dout, prepared, N);
            RG_CHECK(memcmp(outp, out16, (size_t)N * OC * sizeof(float)) == 0);
            RG_CHECK(memcmp(dinp, g16[0], (size_t)N * IC * sizeof(float)) == 0);
            bf16->weight_release(prepared);
            free(outp), free(dinp);
        }
        RG_CHECK(bf16->weight_prepare(NULL, w, IC, OC, RG_GEMM_BF16_MIN_ROWS - 1, 1) == NULL); /* nothing to gain */
        free(inp), free(w), free(bias), free(dout), free(out32), free(out16);
        for (int g = 0; g < 3; g++)
            free(g32[g]), free(g16[g]);
    }
}

void test_gemm_bf16_panels_give_the_product_bit_for_bit(void)
{
    if (unsupported_here())
        return;
    /* several column blocks (N > 512), two passes over K (K > 4096), edges everywhere */
    static const int shapes[][3] = {{130, 1100, 70}, {9, 33, 4500}, {70, 1100, 4500}, {200, 600, 257}, {1, 1, 1}};
    rg_bf16_panels *panels = NULL; /* each packing reuses the last one's memory, or replaces it */
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
        for (int ta = 0; ta < 2; ta++)
            for (int tb = 0; tb < 2; tb++) {
                const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
                const int lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
                const uint64_t seed = 700 + s * 4 + ta * 2 + tb;
                float *A = random_floats((size_t)(ta ? K : M) * lda, seed);
                float *B = random_floats((size_t)(tb ? N : K) * ldb, seed + 50);
                float *C0 = random_floats((size_t)M * ldc, seed + 99), *C1 = random_floats((size_t)M * ldc, seed + 99);
                panels = rg_bf16_panels_pack(panels, tb, N, K, B, ldb);
                if (!RG_CHECK(panels != NULL))
                    continue;
                B[0] = 1e30f; /* the panels are a copy: a later change to B does not reach them */
                rg_gemm_bf16_panels(ta, M, A, lda, panels, C1, ldc);
                B[0] = rg_rng_uniform(seed + 50, 0) - 0.5f;
                rg_gemm_bf16(ta, tb, M, N, K, A, lda, B, ldb, C0, ldc);
                if (!RG_CHECK(memcmp(C0, C1, (size_t)M * ldc * sizeof(float)) == 0))
                    fprintf(stderr, "  M=%d N=%d K=%d ta=%d tb=%d\n", M, N, K, ta, tb);
                free(A), free(B), free(C0), free(C1);
            }
    RG_CHECK(rg_bf16_panels_pack(panels, 0, 0, 5, NULL, 1) == NULL); /* frees the last panels */
    rg_bf16_panels_free(NULL);
}

void test_gemm_bf16_linear_sets_what_the_product_adds_to(void)
{
    if (unsupported_here())
        return;
    /* one or two passes over K, one or two column groups, with and without a bias */
    static const int shapes[][3] = {{130, 1100, 70}, {9, 1100, 4500}, {3, 40, 5}};
    for (size_t s = 0; s < sizeof(shapes) / sizeof(shapes[0]); s++)
        for (int with_bias = 0; with_bias < 2; with_bias++)
            for (int use_panels = 0; use_panels < 2; use_panels++) {
                const int M = shapes[s][0], N = shapes[s][1], K = shapes[s][2], lda = K + 1, ldw = K + 2, ldc = N + 3;
                float *A = random_floats((size_t)M * lda, 900 + s), *W = random_floats((size_t)N * ldw, 950 + s);
                float *bias = with_bias ? random_floats(N, 990 + s) : NULL;
                float *C0 = random_floats((size_t)M * ldc, 7), *C1 = random_floats((size_t)M * ldc, 7);
                for (int m = 0; m < M; m++)
                    for (int n = 0; n < N; n++) {
                        C0[(size_t)m * ldc + n] = bias != NULL ? bias[n] : 0.0f;
                        C1[(size_t)m * ldc + n] = NAN; /* never read */
                    }
                rg_gemm_bf16(0, 1, M, N, K, A, lda, W, ldw, C0, ldc);
                rg_bf16_panels *panels = use_panels ? rg_bf16_panels_pack(NULL, 1, N, K, W, ldw) : NULL;
                rg_gemm_bf16_linear(M, N, K, A, lda, use_panels ? NULL : W, ldw, panels, bias, C1, ldc);
                if (!RG_CHECK(memcmp(C0, C1, (size_t)M * ldc * sizeof(float)) == 0))
                    fprintf(stderr, "  M=%d N=%d K=%d bias=%d panels=%d\n", M, N, K, with_bias, use_panels);
                rg_bf16_panels_free(panels);
                free(A), free(W), free(bias), free(C0), free(C1);
            }
}
