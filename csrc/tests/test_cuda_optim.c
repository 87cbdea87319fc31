/*
 * test_cuda_optim.c - the optimizer's GPU work (csrc/cuda/adamw.cu) against
 * the CPU: the AdamW update bit for bit, the sum of squares in double.
 * Skips without a CUDA library and device (rg_test_cuda.h).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "cuda/rg_cuda.h"
#include "rg_optim.h"
#include "rg_test_cuda.h"

static rg_adamw_factors factors_at(double lr, double wd, double clip, int64_t t)
{
    const double beta1 = 0.9, beta2 = 0.999;
    rg_adamw_factors f = {
        .clip_scale = (float)clip,
        .decay_factor = (float)(1.0 - lr * wd),
        .step_size = (float)(lr / (1.0 - pow(beta1, (double)t))),
        .inv_bc2_sqrt = (float)(1.0 / sqrt(1.0 - pow(beta2, (double)t))),
        .one_minus_beta1 = (float)(1.0 - beta1),
        .beta2 = (float)beta2,
        .one_minus_beta2 = (float)(1.0 - beta2),
        .eps = 1e-8f,
    };
    return f;
}

void test_cuda_optim_adamw_update_bitwise(void)
{
    if (rg_test_cuda_ops("optim_adamw_update") == NULL)
        return;
    const size_t sizes[] = {1, 257, 100003};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        const size_t n = sizes[k];
        for (int decay = 0; decay <= 1; decay++) {
            rg_test_pair p = rg_test_pair_random(n, 10 + k, -1, 1), g = rg_test_pair_random(n, 20 + k, -3, 3);
            rg_test_pair m = rg_test_pair_random(n, 30 + k, -0.1f, 0.1f), v = rg_test_pair_random(n, 40 + k, 0, 0.01f);
            /* three steps: the moments carry over, the gradient is consumed each time */
            for (int64_t t = 1; t <= 3; t++) {
                const rg_adamw_factors f = factors_at(1e-3, 0.01, t == 2 ? 0.37 : 1.0, t);
                rg_adamw_update(p.host, g.host, m.host, v.host, n, decay, &f);
                RG_CHECK_STATUS(rg_cuda_adamw_update(p.dev, g.dev, m.dev, v.dev, n, decay, &f), RG_OK);
                rg_test_pair_expect_close(&p, 0, 0, "adamw p");
                rg_test_pair_expect_close(&m, 0, 0, "adamw m");
                rg_test_pair_expect_close(&v, 0, 0, "adamw v");
                rg_test_pair_expect_close(&g, 0, 0, "adamw g (zeroed)");
                rg_test_pair_free(&g);
                g = rg_test_pair_random(n, 50 + (uint64_t)t, -3, 3);
            }
            rg_test_pair_free(&p);
            rg_test_pair_free(&g);
            rg_test_pair_free(&m);
            rg_test_pair_free(&v);
        }
    }
}

void test_cuda_optim_sum_squares(void)
{
    if (rg_test_cuda_ops("optim_sum_squares") == NULL)
        return;
    const size_t sizes[] = {0, 1, 255, 1000003};
    for (size_t k = 0; k < sizeof(sizes) / sizeof(sizes[0]); k++) {
        rg_test_pair x = rg_test_pair_random(sizes[k], 7 + k, -2, 2);
        double want = 0.0, got = -1.0;
        for (size_t i = 0; i < sizes[k]; i++)
            want += (double)((float *)x.host)[i] * ((float *)x.host)[i];
        RG_CHECK_STATUS(rg_cuda_sum_squares(x.dev, sizes[k], &got), RG_OK);
        RG_CHECK_CLOSE(got, want, 1e-12 * (1.0 + want));
        rg_test_pair_free(&x);
    }
}

/* Without a CUDA library every device call says "not built", none crashes. */
void test_cuda_loader_without_library_is_unsupported(void)
{
    if (rg_cuda_compiled()) {
        printf("  cuda_loader_without_library: skipped (a CUDA library is set)\n");
        return;
    }
    void *ptr = (void *)1;
    double sum = -1.0;
    float x = 1.0f;
    const rg_adamw_factors f = factors_at(1e-3, 0.0, 1.0, 1);
    RG_CHECK_STATUS(rg_cuda_malloc(&ptr, 64), RG_ERR_UNSUPPORTED);
    RG_CHECK(ptr == NULL);
    rg_cuda_free(NULL);
    RG_CHECK_STATUS(rg_cuda_memcpy(&x, &x, 4, RG_CUDA_HOST_TO_DEVICE), RG_ERR_UNSUPPORTED);
    RG_CHECK_STATUS(rg_cuda_memset(&x, 0, 4), RG_ERR_UNSUPPORTED);
    RG_CHECK_STATUS(rg_cuda_synchronize(), RG_ERR_UNSUPPORTED);
    RG_CHECK_STATUS(rg_cuda_adamw_update(&x, &x, &x, &x, 1, 0, &f), RG_ERR_UNSUPPORTED);
    RG_CHECK_STATUS(rg_cuda_sum_squares(&x, 1, &sum), RG_ERR_UNSUPPORTED);
    RG_CHECK(rg_cuda_ops_table() == NULL);
    RG_CHECK_EQ(rg_cuda_device_count(), 0);
}
