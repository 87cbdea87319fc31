/*
 * test_cuda_norms.c - the CUDA LayerNorm, RMSNorm, embedding and RoPE ops
 * against the CPU table on the same inputs (rg_test_cuda.h). Row lengths are
 * odd, below and above a warp's and a block's width (1, 67, 771, 4099); row
 * counts cross the 128-row chunks of the weight-gradient reduction, and one
 * case (N = 140000) has more than 1024 chunks' worth of rows, the path where
 * the chunks grow (C = 9 there, not 3: rows of 3 values are too often nearly
 * constant, and then xhat = (x - mean) * rstd amplifies the one-ulp
 * difference of the two means beyond any fixed tolerance). Gradients start from random values ("+=" checked) and
 * every combination of NULL gradients is run.
 *
 * Tolerances: row outputs and input gradients 1e-5 relative + 1e-5 absolute
 * (the sums over C are added in another order: a few ulp of the row's scale;
 * the absolute part covers the input gradient's cancellation). Weight and
 * bias gradients are sums over N rows, added in sequence on the CPU (error
 * growing like N * eps * the summand's size) and by a tree on the GPU:
 * 1e-5 relative + 5e-5 * sqrt(N) absolute. (A host emulation of the
 * kernels' summation order and fma contraction stayed below 0.2 of every
 * tolerance here, with the CPU on one thread, its longest sums.) Embedding forward is the same
 * float adds in the same order: exact. Embedding backward scatters with
 * atomicAdd (order varies): 1e-5 + 1e-5. RoPE: 1e-5 + 1e-6.
 */
#include <math.h>
#include <stdlib.h>

#include "cuda/rg_cuda.h"
#include "rg_test_cuda.h"

#define ROW_RTOL 1e-5
#define ROW_ATOL 1e-5

static double column_sum_atol(int N) { return 5e-5 * sqrt((double)N); }

static const int norm_shapes[][2] = {{1, 1}, {5, 771}, {300, 67}, {2, 4099}, {140000, 9}}; /* N, C */
#define N_NORM_SHAPES (sizeof(norm_shapes) / sizeof(norm_shapes[0]))

/* A pair, or the NULL pair when `want` is 0. */
static rg_test_pair maybe_random(int want, size_t n, uint64_t seed, float lo, float hi)
{
    return want ? rg_test_pair_random(n, seed, lo, hi) : rg_test_pair_none();
}

void test_cuda_layernorm(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("layernorm");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    for (size_t k = 0; k < N_NORM_SHAPES; k++) {
        const int N = norm_shapes[k][0], C = norm_shapes[k][1];
        const size_t nc = (size_t)N * C;
        rg_test_pair inp = rg_test_pair_random(nc, 201 + k, -1, 3); /* mean away from 0 */
        rg_test_pair weight = rg_test_pair_random(C, 211 + k, 0.5f, 1.5f);
        rg_test_pair bias = rg_test_pair_random(C, 221 + k, -1, 1);
        rg_test_pair out = rg_test_pair_random(nc, 231 + k, -1, 1); /* all three overwritten */
        rg_test_pair mean = rg_test_pair_random(N, 241 + k, -1, 1);
        rg_test_pair rstd = rg_test_pair_random(N, 251 + k, -1, 1);
        cpu->layernorm_forward(RG_HOST_F(out), RG_HOST_F(mean), RG_HOST_F(rstd), RG_HOST_F(inp),
                               RG_HOST_F(weight), RG_HOST_F(bias), N, C, 1e-5f);
        gpu->layernorm_forward(RG_DEV_F(out), RG_DEV_F(mean), RG_DEV_F(rstd), RG_DEV_F(inp),
                               RG_DEV_F(weight), RG_DEV_F(bias), N, C, 1e-5f);
        rg_test_pair_expect_close(&out, ROW_RTOL, ROW_ATOL, "layernorm out");
        rg_test_pair_expect_close(&mean, ROW_RTOL, 1e-6, "layernorm mean");
        rg_test_pair_expect_close(&rstd, ROW_RTOL, 1e-6, "layernorm rstd");

        /* The backward reads the CPU's mean and rstd on both sides (the
         * forward is checked above): only the backward's own error counts. */
        rg_test_pair saved_mean = rg_test_pair_random(N, 1, 0, 1), saved_rstd = rg_test_pair_random(N, 2, 0, 1);
        RG_CHECK_STATUS(rg_cuda_memcpy(saved_mean.dev, mean.host, (size_t)N * 4, RG_CUDA_HOST_TO_DEVICE), RG_OK);
        RG_CHECK_STATUS(rg_cuda_memcpy(saved_rstd.dev, rstd.host, (size_t)N * 4, RG_CUDA_HOST_TO_DEVICE), RG_OK);
        for (size_t i = 0; i < (size_t)N; i++) {
            RG_HOST_F(saved_mean)[i] = RG_HOST_F(mean)[i];
            RG_HOST_F(saved_rstd)[i] = RG_HOST_F(rstd)[i];
        }
        rg_test_pair dout = rg_test_pair_random(nc, 261 + k, -1, 1);
        for (int mask = 0; mask < 8; mask++) { /* bit 0 dinp, bit 1 dweight, bit 2 dbias */
            rg_test_pair dinp = maybe_random(mask & 1, nc, 271 + k, -1, 1);
            rg_test_pair dweight = maybe_random(mask & 2, C, 281 + k, -1, 1);
            rg_test_pair dbias = maybe_random(mask & 4, C, 291 + k, -1, 1);
            cpu->layernorm_backward(RG_HOST_F(dinp), RG_HOST_F(dweight), RG_HOST_F(dbias), RG_HOST_F(dout),
                                    RG_HOST_F(inp), RG_HOST_F(weight), RG_HOST_F(saved_mean),
                                    RG_HOST_F(saved_rstd), N, C);
            gpu->layernorm_backward(RG_DEV_F(dinp), RG_DEV_F(dweight), RG_DEV_F(dbias), RG_DEV_F(dout),
                                    RG_DEV_F(inp), RG_DEV_F(weight), RG_DEV_F(saved_mean),
                                    RG_DEV_F(saved_rstd), N, C);
            if (mask & 1)
                rg_test_pair_expect_close(&dinp, ROW_RTOL, ROW_ATOL, "layernorm dinp");
            if (mask & 2)
                rg_test_pair_expect_close(&dweight, ROW_RTOL, column_sum_atol(N), "layernorm dweight");
            if (mask & 4)
                rg_test_pair_expect_close(&dbias, ROW_RTOL, column_sum_atol(N), "layernorm dbias");
            RG_CHECK_STATUS(rg_cuda_synchronize(), RG_OK);
            rg_test_pair_free(&dinp);
            rg_test_pair_free(&dweight);
            rg_test_pair_free(&dbias);
        }
        rg_test_pair_free(&inp);
        rg_test_pair_free(&weight);
        rg_test_pair_free(&bias);
        rg_test_pair_free(&out);
        rg_test_pair_free(&mean);
        rg_test_pair_free(&rstd);
        rg_test_pair_free(&saved_mean);
        rg_test_pair_free(&saved_rstd);
        rg_test_pair_free(&dout);
    }
}

void test_cuda_rmsnorm(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("rmsnorm");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    for (size_t k = 0; k < N_NORM_SHAPES; k++) {
        const int N = norm_shapes[k][0], C = norm_shapes[k][1];
        const size_t nc = (size_t)N * C;
        rg_test_pair inp = rg_test_pair_random(nc, 301 + k, -2, 2);
        rg_test_pair weight = rg_test_pair_random(C, 311 + k, 0.5f, 1.5f);
        rg_test_pair out = rg_test_pair_random(nc, 321 + k, -1, 1); /* both overwritten */
        rg_test_pair rstd = rg_test_pair_random(N, 331 + k, -1, 1);
        cpu->rmsnorm_forward(RG_HOST_F(out), RG_HOST_F(rstd), RG_HOST_F(inp), RG_HOST_F(weight), N, C, 1e-5f);
        gpu->rmsnorm_forward(RG_DEV_F(out), RG_DEV_F(rstd), RG_DEV_F(inp), RG_DEV_F(weight), N, C, 1e-5f);
        rg_test_pair_expect_close(&out, ROW_RTOL, ROW_ATOL, "rmsnorm out");
        rg_test_pair_expect_close(&rstd, ROW_RTOL, 1e-6, "rmsnorm rstd");

        /* The backward reads the CPU's rstd on both sides, as for LayerNorm. */
        rg_test_pair saved_rstd = rg_test_pair_random(N, 3, 0, 1);
        RG_CHECK_STATUS(rg_cuda_memcpy(saved_rstd.dev, rstd.host, (size_t)N * 4, RG_CUDA_HOST_TO_DEVICE), RG_OK);
        for (size_t i = 0; i < (size_t)N; i++)
            RG_HOST_F(saved_rstd)[i] = RG_HOST_F(rstd)[i];
        rg_test_pair dout = rg_test_pair_random(nc, 341 + k, -1, 1);
        for (int mask = 0; mask < 4; mask++) { /* bit 0 dinp, bit 1 dweight */
            rg_test_pair dinp = maybe_random(mask & 1, nc, 351 + k, -1, 1);
            rg_test_pair dweight = maybe_random(mask & 2, C, 361 + k, -1, 1);
            cpu->rmsnorm_backward(RG_HOST_F(dinp), RG_HOST_F(dweight), RG_HOST_F(dout), RG_HOST_F(inp),
                                  RG_HOST_F(weight), RG_HOST_F(saved_rstd), N, C);
            gpu->rmsnorm_backward(RG_DEV_F(dinp), RG_DEV_F(dweight), RG_DEV_F(dout), RG_DEV_F(inp),
                                  RG_DEV_F(weight), RG_DEV_F(saved_rstd), N, C);
            if (mask & 1)
                rg_test_pair_expect_close(&dinp, ROW_RTOL, ROW_ATOL, "rmsnorm dinp");
            if (mask & 2)
                rg_test_pair_expect_close(&dweight, ROW_RTOL, column_sum_atol(N), "rmsnorm dweight");
            RG_CHECK_STATUS(rg_cuda_synchronize(), RG_OK);
            rg_test_pair_free(&dinp);
            rg_test_pair_free(&dweight);
        }
        rg_test_pair_free(&inp);
        rg_test_pair_free(&weight);
        rg_test_pair_free(&out);
        rg_test_pair_free(&rstd);
        rg_test_pair_free(&saved_rstd);
        rg_test_pair_free(&dout);
    }
}

/* Tables: V = 37 token ids (many repeats among 300 rows), P = 64 positions,
 * 3 token types. Each variant drops positions or types on the index side or
 * the table side (the op adds a table only when both are given). */
void test_cuda_embedding(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("embedding");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    enum { V = 37, P = 64, TYPES = 3 };
    static const int shapes[][2] = {{1, 1}, {300, 771}, {129, 33}}; /* N, C */
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        const int N = shapes[k][0], C = shapes[k][1];
        const size_t nc = (size_t)N * C;
        rg_test_pair tokens = rg_test_pair_ints(N, 401 + k, 0, V, 0);
        rg_test_pair positions = rg_test_pair_ints(N, 411 + k, 0, P, 0);
        rg_test_pair types = rg_test_pair_ints(N, 421 + k, 0, TYPES, 0);
        rg_test_pair wte = rg_test_pair_random((size_t)V * C, 431 + k, -1, 1);
        rg_test_pair wpe = rg_test_pair_random((size_t)P * C, 441 + k, -1, 1);
        rg_test_pair wtt = rg_test_pair_random((size_t)TYPES * C, 451 + k, -1, 1);
        rg_test_pair dout = rg_test_pair_random(nc, 461 + k, -1, 1);
        const rg_test_pair none = rg_test_pair_none();
        /* bit 0: position ids given, bit 1: wpe given, bit 2: type ids, bit 3: wtt */
        for (int variant = 0; variant < 16; variant++) {
            const rg_test_pair *pos = variant & 1 ? &positions : &none;
            const rg_test_pair *pe = variant & 2 ? &wpe : &none;
            const rg_test_pair *ty = variant & 4 ? &types : &none;
            const rg_test_pair *tt = variant & 8 ? &wtt : &none;
            rg_test_pair out = rg_test_pair_random(nc, 471 + k, -1, 1); /* overwritten */
            cpu->embedding_forward(RG_HOST_F(out), RG_HOST_I(tokens), RG_HOST_I(*pos), RG_HOST_I(*ty),
                                   RG_HOST_F(wte), RG_HOST_F(*pe), RG_HOST_F(*tt), N, C);
            gpu->embedding_forward(RG_DEV_F(out), RG_DEV_I(tokens), RG_DEV_I(*pos), RG_DEV_I(*ty),
                                   RG_DEV_F(wte), RG_DEV_F(*pe), RG_DEV_F(*tt), N, C);
            rg_test_pair_expect_close(&out, 0, 0, "embedding out");
            rg_test_pair_free(&out);

            /* Backward: here bits 1 and 3 say whether dwpe and dwtt are
             * wanted; dwte is dropped in every other variant. */
            rg_test_pair dwte = maybe_random(variant % 2 == 0 || variant >= 8, (size_t)V * C, 481 + k, -1, 1);
            rg_test_pair dwpe = maybe_random(variant & 2, (size_t)P * C, 491 + k, -1, 1);
            rg_test_pair dwtt = maybe_random(variant & 8, (size_t)TYPES * C, 501 + k, -1, 1);
            cpu->embedding_backward(RG_HOST_F(dwte), RG_HOST_F(dwpe), RG_HOST_F(dwtt), RG_HOST_F(dout),
                                    RG_HOST_I(tokens), RG_HOST_I(*pos), RG_HOST_I(*ty), N, C);
            gpu->embedding_backward(RG_DEV_F(dwte), RG_DEV_F(dwpe), RG_DEV_F(dwtt), RG_DEV_F(dout),
                                    RG_DEV_I(tokens), RG_DEV_I(*pos), RG_DEV_I(*ty), N, C);
            if (dwte.host != NULL)
                rg_test_pair_expect_close(&dwte, 1e-5, 1e-5, "embedding dwte");
            if (dwpe.host != NULL)
                rg_test_pair_expect_close(&dwpe, 1e-5, 1e-5, "embedding dwpe");
            if (dwtt.host != NULL)
                rg_test_pair_expect_close(&dwtt, 1e-5, 1e-5, "embedding dwtt");
            RG_CHECK_STATUS(rg_cuda_synchronize(), RG_OK);
            rg_test_pair_free(&dwte);
            rg_test_pair_free(&dwpe);
            rg_test_pair_free(&dwtt);
        }
        rg_test_pair_free(&tokens);
        rg_test_pair_free(&positions);
        rg_test_pair_free(&types);
        rg_test_pair_free(&wte);
        rg_test_pair_free(&wpe);
        rg_test_pair_free(&wtt);
        rg_test_pair_free(&dout);
    }
}

/* Odd head sizes (the last element stays), grouped-query shapes (NKV < NH),
 * positions up to 8191 (large angles) and Llama's two common thetas. The
 * whole qkv row is compared, so v must come back untouched. */
void test_cuda_rope(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("rope");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    static const struct { int N, NH, NKV, HS; float theta; } shapes[] = {
        {1, 1, 1, 2, 10000.0f},   {37, 5, 1, 66, 10000.0f}, {3, 2, 2, 7, 500000.0f},
        {130, 4, 2, 128, 500000.0f}, {5, 3, 3, 1, 10000.0f},
    };
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        const int N = shapes[k].N, NH = shapes[k].NH, NKV = shapes[k].NKV, HS = shapes[k].HS;
        const float theta = shapes[k].theta;
        const size_t n = (size_t)N * (NH + 2 * NKV) * HS;
        rg_test_pair positions = rg_test_pair_ints(N, 601 + k, 0, 8192, 0);
        rg_test_pair qkv = rg_test_pair_random(n, 611 + k, -2, 2);
        cpu->rope_forward(RG_HOST_F(qkv), RG_HOST_I(positions), N, NH, NKV, HS, theta);
        gpu->rope_forward(RG_DEV_F(qkv), RG_DEV_I(positions), N, NH, NKV, HS, theta);
        rg_test_pair_expect_close(&qkv, 1e-5, 1e-6, "rope forward");
        rg_test_pair dqkv = rg_test_pair_random(n, 621 + k, -2, 2);
        cpu->rope_backward(RG_HOST_F(dqkv), RG_HOST_I(positions), N, NH, NKV, HS, theta);
        gpu->rope_backward(RG_DEV_F(dqkv), RG_DEV_I(positions), N, NH, NKV, HS, theta);
        rg_test_pair_expect_close(&dqkv, 1e-5, 1e-6, "rope backward");
        rg_test_pair_free(&positions);
        rg_test_pair_free(&qkv);
        rg_test_pair_free(&dqkv);
    }
}
