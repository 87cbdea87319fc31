/*
 * test_cuda_matmul.c - the CUDA linear layer and LoRA adapter (cuBLASLt,
 * csrc/cuda/matmul.cu and lora.cu) against the CPU table.
 *
 * Tolerance: |gpu - cpu| <= 1e-5 * |cpu| + 1e-5 * sqrt(K), K the longest sum
 * behind an element (the inner dimension, or N for dbias). Both sides sum in
 * fp32 in different orders (cuBLASLt runs CUBLAS_COMPUTE_32F, no TF32), so
 * rounding differences grow like sqrt(K) times the operands' magnitude; the
 * inputs are kept O(1) (LoRA's a and b are small, as in training, so the
 * two chained products behind da and dinp stay O(1) too).
 *
 * Every gradient starts random (checks +=), outputs too (checks that the
 * forward overwrites), and each NULL-gradient variant runs.
 */
#include <math.h>
#include <stdio.h>

#include "cuda/rg_cuda.h"
#include "rg_backend.h"
#include "rg_test_cuda.h"

static double atol_for(int K)
{
    return 1e-5 * sqrt((double)(K > 1 ? K : 1));
}

/* ---- linear layer ---- */

/* off > 0 shifts every array by off floats: pointers into packed buffers are
 * only 4-byte aligned, which the cuBLASLt algorithm choice must respect. */
static void matmul_forward_case(const rg_ops_table *gpu, int N, int IC, int OC, int with_bias, int off,
                                uint64_t seed)
{
    const rg_ops_table *cpu = rg_ops_cpu();
    rg_test_pair inp = rg_test_pair_random((size_t)N * IC + off, seed + 1, -1.0f, 1.0f);
    rg_test_pair w = rg_test_pair_random((size_t)OC * IC + off, seed + 2, -1.0f, 1.0f);
    rg_test_pair b = with_bias ? rg_test_pair_random((size_t)OC + off, seed + 3, -1.0f, 1.0f) : rg_test_pair_none();
    rg_test_pair out = rg_test_pair_random((size_t)N * OC + off, seed + 4, -1.0f, 1.0f);
    const float *bias_host = with_bias ? RG_HOST_F(b) + off : NULL; /* no arithmetic on NULL */
    const float *bias_dev = with_bias ? RG_DEV_F(b) + off : NULL;

    cpu->matmul_forward(RG_HOST_F(out) + off, RG_HOST_F(inp) + off, RG_HOST_F(w) + off, bias_host, N, IC, OC);
    gpu->matmul_forward(RG_DEV_F(out) + off, RG_DEV_F(inp) + off, RG_DEV_F(w) + off, bias_dev, N, IC, OC);
    char what[112];
    snprintf(what, sizeof(what), "matmul out N=%d IC=%d OC=%d bias=%d off=%d", N, IC, OC, with_bias, off);
    rg_test_pair_expect_close(&out, 1e-5, atol_for(IC), what);

    rg_test_pair_free(&inp);
    rg_test_pair_free(&w);
    rg_test_pair_free(&b);
    rg_test_pair_free(&out);
}

void test_cuda_matmul_forward(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("matmul_forward");
    if (gpu == NULL)
        return;
    for (int with_bias = 0; with_bias <= 1; with_bias++) {
        matmul_forward_case(gpu, 37, 71, 45, with_bias, 0, 100);
        matmul_forward_case(gpu, 37, 71, 45, with_bias, 1, 150);
        matmul_forward_case(gpu, 130, 768, 2304, with_bias, 0, 200);
        matmul_forward_case(gpu, 130, 768, 2304, with_bias, 3, 250);
        matmul_forward_case(gpu, 1, 771, 33, with_bias, 0, 300); /* one row (the CPU's gemv path) */
        matmul_forward_case(gpu, 2, 5, 3, with_bias, 0, 400);
    }
}

/* skip: bit 0 dinp NULL, bit 1 dweight NULL, bit 2 dbias NULL */
static void matmul_backward_case(const rg_ops_table *gpu, int N, int IC, int OC, int skip, uint64_t seed)
{
    const rg_ops_table *cpu = rg_ops_cpu();
    rg_test_pair dout = rg_test_pair_random((size_t)N * OC, seed + 1, -1.0f, 1.0f);
    rg_test_pair inp = rg_test_pair_random((size_t)N * IC, seed + 2, -1.0f, 1.0f);
    rg_test_pair w = rg_test_pair_random((size_t)OC * IC, seed + 3, -1.0f, 1.0f);
    rg_test_pair dinp = skip & 1 ? rg_test_pair_none() : rg_test_pair_random((size_t)N * IC, seed + 4, -1.0f, 1.0f);
    rg_test_pair dw = skip & 2 ? rg_test_pair_none() : rg_test_pair_random((size_t)OC * IC, seed + 5, -1.0f, 1.0f);
    rg_test_pair db = skip & 4 ? rg_test_pair_none() : rg_test_pair_random((size_t)OC, seed + 6, -1.0f, 1.0f);

    cpu->matmul_backward(RG_HOST_F(dinp), RG_HOST_F(dw), RG_HOST_F(db), RG_HOST_F(dout), RG_HOST_F(inp),
                         RG_HOST_F(w), N, IC, OC);
    gpu->matmul_backward(RG_DEV_F(dinp), RG_DEV_F(dw), RG_DEV_F(db), RG_DEV_F(dout), RG_DEV_F(inp), RG_DEV_F(w),
                         N, IC, OC);
    char what[112];
    if (!(skip & 1)) {
        snprintf(what, sizeof(what), "matmul dinp N=%d IC=%d OC=%d skip=%d", N, IC, OC, skip);
        rg_test_pair_expect_close(&dinp, 1e-5, atol_for(OC), what);
    }
    if (!(skip & 2)) {
        snprintf(what, sizeof(what), "matmul dweight N=%d IC=%d OC=%d skip=%d", N, IC, OC, skip);
        rg_test_pair_expect_close(&dw, 1e-5, atol_for(N), what);
    }
    if (!(skip & 4)) {
        snprintf(what, sizeof(what), "matmul dbias N=%d IC=%d OC=%d skip=%d", N, IC, OC, skip);
        rg_test_pair_expect_close(&db, 1e-5, atol_for(N), what);
    }
    /* The GPU must have run cleanly even when nothing was compared. */
    RG_CHECK_STATUS(rg_cuda_synchronize(), RG_OK);

    rg_test_pair_free(&dout);
    rg_test_pair_free(&inp);
    rg_test_pair_free(&w);
    rg_test_pair_free(&dinp);
    rg_test_pair_free(&dw);
    rg_test_pair_free(&db);
}

void test_cuda_matmul_backward(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("matmul_backward");
    if (gpu == NULL)
        return;
    /* all gradients, then each one NULL in turn, then all NULL */
    static const int skips[] = {0, 1, 2, 4, 7};
    for (size_t i = 0; i < sizeof(skips) / sizeof(skips[0]); i++) {
        matmul_backward_case(gpu, 37, 71, 45, skips[i], 1000 + 10 * i); /* dbias in one pass */
        matmul_backward_case(gpu, 130, 768, 2304, skips[i], 2000 + 10 * i); /* dbias in 3 chunks */
    }
    matmul_backward_case(gpu, 1, 771, 33, 0, 3000);
    /* dbias with chunks longer than 64 rows (N / 256 rounded up) and many of them */
    matmul_backward_case(gpu, 20011, 5, 37, 0, 4000);
}

/* N == 0 is a no-op on both sides: gradients keep their values. */
void test_cuda_matmul_empty(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("matmul_empty");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    const int IC = 7, OC = 5;
    rg_test_pair w = rg_test_pair_random((size_t)OC * IC, 1, -1.0f, 1.0f);
    rg_test_pair b = rg_test_pair_random((size_t)OC, 2, -1.0f, 1.0f);
    rg_test_pair dw = rg_test_pair_random((size_t)OC * IC, 3, -1.0f, 1.0f);
    rg_test_pair db = rg_test_pair_random((size_t)OC, 4, -1.0f, 1.0f);
    rg_test_pair none = rg_test_pair_none();

    cpu->matmul_forward(RG_HOST_F(none), RG_HOST_F(none), RG_HOST_F(w), RG_HOST_F(b), 0, IC, OC);
    gpu->matmul_forward(RG_DEV_F(none), RG_DEV_F(none), RG_DEV_F(w), RG_DEV_F(b), 0, IC, OC);
    cpu->matmul_backward(NULL, RG_HOST_F(dw), RG_HOST_F(db), RG_HOST_F(none), RG_HOST_F(none), RG_HOST_F(w), 0, IC,
                         OC);
    gpu->matmul_backward(NULL, RG_DEV_F(dw), RG_DEV_F(db), RG_DEV_F(none), RG_DEV_F(none), RG_DEV_F(w), 0, IC, OC);
    rg_test_pair_expect_close(&dw, 0.0, 0.0, "matmul N=0 dweight");
    rg_test_pair_expect_close(&db, 0.0, 0.0, "matmul N=0 dbias");

    rg_test_pair_free(&w);
    rg_test_pair_free(&b);
    rg_test_pair_free(&dw);
    rg_test_pair_free(&db);
}

/* ---- LoRA: the adapter adds into a column slice [off, off + OC) of rows ldo wide ---- */

#define LORA_SCALE 2.0f

static void lora_forward_case(const rg_ops_table *gpu, int N, int IC, int R, int OC, int ldo, int off,
                              uint64_t seed)
{
    const rg_ops_table *cpu = rg_ops_cpu();
    rg_test_pair inp = rg_test_pair_random((size_t)N * IC, seed + 1, -1.0f, 1.0f);
    rg_test_pair a = rg_test_pair_random((size_t)R * IC, seed + 2, -0.1f, 0.1f);
    rg_test_pair b = rg_test_pair_random((size_t)OC * R, seed + 3, -0.05f, 0.05f);
    rg_test_pair u = rg_test_pair_random((size_t)N * R, seed + 4, -1.0f, 1.0f);     /* overwritten */
    rg_test_pair out = rg_test_pair_random((size_t)N * ldo, seed + 5, -1.0f, 1.0f); /* slice += */

    cpu->lora_forward(RG_HOST_F(out) + off, RG_HOST_F(u), RG_HOST_F(inp), RG_HOST_F(a), RG_HOST_F(b), LORA_SCALE,
                      N, IC, R, OC, ldo);
    gpu->lora_forward(RG_DEV_F(out) + off, RG_DEV_F(u), RG_DEV_F(inp), RG_DEV_F(a), RG_DEV_F(b), LORA_SCALE, N,
                      IC, R, OC, ldo);
    char what[112];
    snprintf(what, sizeof(what), "lora u N=%d IC=%d R=%d OC=%d ldo=%d", N, IC, R, OC, ldo);
    rg_test_pair_expect_close(&u, 1e-5, atol_for(IC), what);
    /* the whole rows: the columns outside the slice must be untouched */
    snprintf(what, sizeof(what), "lora out N=%d IC=%d R=%d OC=%d ldo=%d off=%d", N, IC, R, OC, ldo, off);
    rg_test_pair_expect_close(&out, 1e-5, atol_for(IC), what);

    rg_test_pair_free(&inp);
    rg_test_pair_free(&a);
    rg_test_pair_free(&b);
    rg_test_pair_free(&u);
    rg_test_pair_free(&out);
}

void test_cuda_matmul_lora_forward(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("matmul_lora_forward");
    if (gpu == NULL)
        return;
    lora_forward_case(gpu, 37, 71, 5, 45, 45, 0, 100);         /* the whole row */
    lora_forward_case(gpu, 37, 71, 5, 45, 139, 47, 200);       /* a middle slice, unaligned */
    lora_forward_case(gpu, 130, 768, 8, 768, 2304, 768, 300);  /* the k part of fused qkv rows */
    lora_forward_case(gpu, 1, 33, 3, 17, 51, 34, 400);         /* one row, the last slice */
}

/* skip: bit 0 dinp NULL, bit 1 da NULL, bit 2 db NULL */
static void lora_backward_case(const rg_ops_table *gpu, int N, int IC, int R, int OC, int ldo, int off, int skip,
                               uint64_t seed)
{
    const rg_ops_table *cpu = rg_ops_cpu();
    rg_test_pair dout = rg_test_pair_random((size_t)N * ldo, seed + 1, -1.0f, 1.0f);
    rg_test_pair inp = rg_test_pair_random((size_t)N * IC, seed + 2, -1.0f, 1.0f);
    rg_test_pair u = rg_test_pair_random((size_t)N * R, seed + 3, -1.0f, 1.0f);
    rg_test_pair a = rg_test_pair_random((size_t)R * IC, seed + 4, -0.1f, 0.1f);
    rg_test_pair b = rg_test_pair_random((size_t)OC * R, seed + 5, -0.05f, 0.05f);
    /* du is scratch: random on both sides; compared too (equal when neither side computes it) */
    rg_test_pair du = rg_test_pair_random((size_t)N * R, seed + 6, -1.0f, 1.0f);
    rg_test_pair dinp = skip & 1 ? rg_test_pair_none() : rg_test_pair_random((size_t)N * IC, seed + 7, -1.0f, 1.0f);
    rg_test_pair da = skip & 2 ? rg_test_pair_none() : rg_test_pair_random((size_t)R * IC, seed + 8, -1.0f, 1.0f);
    rg_test_pair db = skip & 4 ? rg_test_pair_none() : rg_test_pair_random((size_t)OC * R, seed + 9, -1.0f, 1.0f);

    cpu->lora_backward(RG_HOST_F(dinp), RG_HOST_F(da), RG_HOST_F(db), RG_HOST_F(du), RG_HOST_F(dout) + off,
                       RG_HOST_F(inp), RG_HOST_F(u), RG_HOST_F(a), RG_HOST_F(b), LORA_SCALE, N, IC, R, OC, ldo);
    gpu->lora_backward(RG_DEV_F(dinp), RG_DEV_F(da), RG_DEV_F(db), RG_DEV_F(du), RG_DEV_F(dout) + off,
                       RG_DEV_F(inp), RG_DEV_F(u), RG_DEV_F(a), RG_DEV_F(b), LORA_SCALE, N, IC, R, OC, ldo);
    char what[128];
    const int longest = N > IC ? (N > OC ? N : OC) : (IC > OC ? IC : OC);
    snprintf(what, sizeof(what), "lora du N=%d IC=%d R=%d OC=%d ldo=%d skip=%d", N, IC, R, OC, ldo, skip);
    rg_test_pair_expect_close(&du, 1e-5, atol_for(OC), what);
    if (!(skip & 1)) {
        snprintf(what, sizeof(what), "lora dinp N=%d IC=%d R=%d OC=%d ldo=%d skip=%d", N, IC, R, OC, ldo, skip);
        rg_test_pair_expect_close(&dinp, 1e-5, atol_for(longest), what);
    }
    if (!(skip & 2)) {
        snprintf(what, sizeof(what), "lora da N=%d IC=%d R=%d OC=%d ldo=%d skip=%d", N, IC, R, OC, ldo, skip);
        rg_test_pair_expect_close(&da, 1e-5, atol_for(longest), what);
    }
    if (!(skip & 4)) {
        snprintf(what, sizeof(what), "lora db N=%d IC=%d R=%d OC=%d ldo=%d skip=%d", N, IC, R, OC, ldo, skip);
        rg_test_pair_expect_close(&db, 1e-5, atol_for(N), what);
    }
    RG_CHECK_STATUS(rg_cuda_synchronize(), RG_OK);

    rg_test_pair_free(&dout);
    rg_test_pair_free(&inp);
    rg_test_pair_free(&u);
    rg_test_pair_free(&a);
    rg_test_pair_free(&b);
    rg_test_pair_free(&du);
    rg_test_pair_free(&dinp);
    rg_test_pair_free(&da);
    rg_test_pair_free(&db);
}

void test_cuda_matmul_lora_backward(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("matmul_lora_backward");
    if (gpu == NULL)
        return;
    /* all, each NULL in turn, da and dinp NULL (du not computed), all NULL */
    static const int skips[] = {0, 1, 2, 4, 3, 7};
    for (size_t i = 0; i < sizeof(skips) / sizeof(skips[0]); i++) {
        lora_backward_case(gpu, 37, 71, 5, 45, 139, 47, skips[i], 1000 + 20 * i);
        lora_backward_case(gpu, 130, 768, 8, 768, 2304, 768, skips[i], 2000 + 20 * i);
    }
    lora_backward_case(gpu, 37, 71, 5, 45, 45, 0, 0, 3000);
    lora_backward_case(gpu, 1, 33, 3, 17, 51, 34, 0, 4000);
}
