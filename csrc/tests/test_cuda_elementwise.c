/*
 * test_cuda_elementwise.c - the element-wise CUDA ops (dropout, residual
 * add, GELU in both forms, SwiGLU, ReLU, tanh) against the CPU table, on the
 * same inputs (rg_test_cuda.h). Sizes are odd and some span many blocks;
 * gradients start from random values so that "+=" is checked.
 *
 * Tolerances: dropout, add and ReLU do the same single float operation per
 * element on both sides, so they must agree bit for bit (0). The others use
 * transcendental functions that differ by a few ulp between the CPU
 * (fast_expf / fast_tanhf, libm's erff and tanhf) and the device (expf,
 * tanhf, erff): 1e-5 relative plus 1e-6 absolute, the absolute part for
 * outputs that come out of a cancellation (GELU far left, 1 - tanh^2 near 1).
 * The tanh GELU's backward multiplies 1 - tanh(u)^2 by 0.5 * x * du/dx (up
 * to about 20 for |x| <= 6), so where tanh(u) rounds to a float next to +-1
 * one ulp of tanh (6e-8; libm, the device and fast_tanhf may each pick
 * either neighbour) moves the gradient by up to about 1.2e-6 per ulp: the
 * tanh GELU gets 5e-6 absolute (a host emulation with libm's tanhf came to
 * 1.1e-6 over [-6, 6]).
 */
#include <stdlib.h>

#include "cuda/rg_cuda.h"
#include "rg_ops.h"
#include "rg_test_cuda.h"

#define ELT_RTOL 1e-5
#define ELT_ATOL 1e-6
#define GELU_TANH_ATOL 5e-6

static const size_t elt_sizes[] = {1, 771, 100003};
#define N_ELT_SIZES (sizeof(elt_sizes) / sizeof(elt_sizes[0]))

void test_cuda_dropout(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("dropout");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    const uint64_t stream = rg_dropout_stream(20240611, 7); /* high bits set, as in training */
    for (size_t k = 0; k < N_ELT_SIZES; k++) {
        const size_t n = elt_sizes[k];
        rg_test_pair x = rg_test_pair_random(n, 11 + k, -2, 2);
        cpu->dropout_apply(RG_HOST_F(x), n, 0, 0.3f, stream);
        gpu->dropout_apply(RG_DEV_F(x), n, 0, 0.3f, stream);
        rg_test_pair_expect_close(&x, 0, 0, "dropout p=0.3");
        if (n > 1000) { /* the mask really drops some, not all, at about the rate p */
            size_t zeros = 0;
            for (size_t i = 0; i < n; i++)
                zeros += RG_HOST_F(x)[i] == 0.0f;
            RG_CHECK(zeros > 0 && zeros < n);
            RG_CHECK(zeros > (size_t)(0.28 * n) && zeros < (size_t)(0.32 * n));
        }
        /* p = 0 leaves x untouched; a second site (another stream) at a high rate. */
        cpu->dropout_apply(RG_HOST_F(x), n, 0, 0.0f, stream);
        gpu->dropout_apply(RG_DEV_F(x), n, 0, 0.0f, stream);
        rg_test_pair_expect_close(&x, 0, 0, "dropout p=0");
        cpu->dropout_apply(RG_HOST_F(x), n, 0, 0.9f, stream + 1);
        gpu->dropout_apply(RG_DEV_F(x), n, 0, 0.9f, stream + 1);
        rg_test_pair_expect_close(&x, 0, 0, "dropout p=0.9");
        /* a piece of a larger array: the mask continues at element `first` */
        cpu->dropout_apply(RG_HOST_F(x), n, 3 * n + 5, 0.3f, stream);
        gpu->dropout_apply(RG_DEV_F(x), n, 3 * n + 5, 0.3f, stream);
        rg_test_pair_expect_close(&x, 0, 0, "dropout from an offset");
        rg_test_pair_free(&x);
    }
}

void test_cuda_add(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("add");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    for (size_t k = 0; k < N_ELT_SIZES; k++) {
        const size_t n = elt_sizes[k];
        rg_test_pair out = rg_test_pair_random(n, 21 + k, -3, 3);
        rg_test_pair a = rg_test_pair_random(n, 31 + k, -3, 3);
        cpu->add_inplace(RG_HOST_F(out), RG_HOST_F(a), n);
        gpu->add_inplace(RG_DEV_F(out), RG_DEV_F(a), n);
        rg_test_pair_expect_close(&out, 0, 0, "add_inplace");
        rg_test_pair_free(&out);
        rg_test_pair_free(&a);
    }
}

/* ---- activations of (n,) arrays ---- */

typedef void (*unary_forward_fn)(float *out, const float *inp, size_t n);
typedef void (*unary_backward_fn)(float *dinp, const float *saved, const float *dout, size_t n);

/* forward on inp uniform in [lo, hi); backward on `saved` (the input, or for
 * ReLU and tanh a stand-in forward output uniform in [saved_lo, saved_hi))
 * with dinp pre-filled; then a NULL dinp on the device, which must do nothing
 * and record no failure (the CPU has no NULL case for these). */
static void check_unary(const char *name, unary_forward_fn cpu_fwd, unary_forward_fn gpu_fwd,
                        unary_backward_fn cpu_bwd, unary_backward_fn gpu_bwd, float lo, float hi,
                        int backward_reads_out, float saved_lo, float saved_hi, double rtol, double atol)
{
    for (size_t k = 0; k < N_ELT_SIZES; k++) {
        const size_t n = elt_sizes[k];
        rg_test_pair inp = rg_test_pair_random(n, 41 + k, lo, hi);
        rg_test_pair out = rg_test_pair_random(n, 51 + k, -1, 1); /* overwritten */
        cpu_fwd(RG_HOST_F(out), RG_HOST_F(inp), n);
        gpu_fwd(RG_DEV_F(out), RG_DEV_F(inp), n);
        rg_test_pair_expect_close(&out, rtol, atol, name);

        rg_test_pair saved = backward_reads_out ? rg_test_pair_random(n, 61 + k, saved_lo, saved_hi) : inp;
        rg_test_pair dout = rg_test_pair_random(n, 71 + k, -1, 1);
        rg_test_pair dinp = rg_test_pair_random(n, 81 + k, -1, 1);
        cpu_bwd(RG_HOST_F(dinp), RG_HOST_F(saved), RG_HOST_F(dout), n);
        gpu_bwd(RG_DEV_F(dinp), RG_DEV_F(saved), RG_DEV_F(dout), n);
        rg_test_pair_expect_close(&dinp, rtol, atol, name);
        gpu_bwd(NULL, RG_DEV_F(saved), RG_DEV_F(dout), n);
        RG_CHECK_STATUS(rg_cuda_synchronize(), RG_OK);

        if (backward_reads_out)
            rg_test_pair_free(&saved);
        rg_test_pair_free(&inp);
        rg_test_pair_free(&out);
        rg_test_pair_free(&dout);
        rg_test_pair_free(&dinp);
    }
}

void test_cuda_gelu_tanh(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("gelu_tanh");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    check_unary("gelu_tanh", cpu->gelu_tanh_forward, gpu->gelu_tanh_forward, cpu->gelu_tanh_backward,
                gpu->gelu_tanh_backward, -6, 6, 0, 0, 0, ELT_RTOL, GELU_TANH_ATOL);
}

void test_cuda_gelu_erf(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("gelu_erf");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    check_unary("gelu_erf", cpu->gelu_erf_forward, gpu->gelu_erf_forward, cpu->gelu_erf_backward,
                gpu->gelu_erf_backward, -6, 6, 0, 0, 0, ELT_RTOL, ELT_ATOL);
}

void test_cuda_relu(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("relu");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    /* The stand-in output has negatives too: the backward must mask on out > 0. */
    check_unary("relu", cpu->relu_forward, gpu->relu_forward, cpu->relu_backward, gpu->relu_backward, -2,
                2, 1, -1, 1, 0, 0);
}

void test_cuda_tanh(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("tanh");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    check_unary("tanh", cpu->tanh_forward, gpu->tanh_forward, cpu->tanh_backward, gpu->tanh_backward, -5,
                5, 1, -1, 1, ELT_RTOL, ELT_ATOL);
}

void test_cuda_swiglu(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("swiglu");
    if (gpu == NULL)
        return;
    const rg_ops_table *cpu = rg_ops_cpu();
    static const int shapes[][2] = {{1, 1}, {3, 771}, {37, 130}, {513, 257}}; /* N, F */
    for (size_t k = 0; k < sizeof(shapes) / sizeof(shapes[0]); k++) {
        const int N = shapes[k][0], F = shapes[k][1];
        const size_t nf = (size_t)N * F;
        rg_test_pair inp = rg_test_pair_random(2 * nf, 91 + k, -8, 8);
        rg_test_pair out = rg_test_pair_random(nf, 101 + k, -1, 1); /* overwritten */
        cpu->swiglu_forward(RG_HOST_F(out), RG_HOST_F(inp), N, F);
        gpu->swiglu_forward(RG_DEV_F(out), RG_DEV_F(inp), N, F);
        rg_test_pair_expect_close(&out, ELT_RTOL, ELT_ATOL, "swiglu out");

        rg_test_pair dout = rg_test_pair_random(nf, 111 + k, -1, 1);
        rg_test_pair dinp = rg_test_pair_random(2 * nf, 121 + k, -1, 1);
        cpu->swiglu_backward(RG_HOST_F(dinp), RG_HOST_F(inp), RG_HOST_F(dout), N, F);
        gpu->swiglu_backward(RG_DEV_F(dinp), RG_DEV_F(inp), RG_DEV_F(dout), N, F);
        rg_test_pair_expect_close(&dinp, ELT_RTOL, ELT_ATOL, "swiglu dinp");
        gpu->swiglu_backward(NULL, RG_DEV_F(inp), RG_DEV_F(dout), N, F); /* a no-op on the device */
        RG_CHECK_STATUS(rg_cuda_synchronize(), RG_OK);

        rg_test_pair_free(&inp);
        rg_test_pair_free(&out);
        rg_test_pair_free(&dout);
        rg_test_pair_free(&dinp);
    }
}
