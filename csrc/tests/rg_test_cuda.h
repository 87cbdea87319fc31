/*
 * rg_test_cuda.h - checking a CUDA op against its CPU twin (ggml's
 * test-backend-ops is the model): the same random inputs go to the CPU table
 * (rg_ops_cpu) on the host and to the CUDA table (rg_cuda_ops_table) on the
 * device, and every output and accumulated gradient must agree.
 *
 * The cases run only where a GPU is: RG_TEST_CUDA_LIBRARY names the CUDA
 * library (reviewgen/_rgcuda*.so; benchmarks/gpu_check.sh sets it). Without
 * it, or without a device, each case prints one "skipped" line and passes,
 * so CI compiles them and a GPU machine runs them.
 *
 *     void test_cuda_layernorm(void)
 *     {
 *         const rg_ops_table *gpu = rg_test_cuda_ops("layernorm");
 *         if (gpu == NULL) return;
 *         rg_test_pair inp = rg_test_pair_random(N * C, 1, -2, 2);
 *         ...  cpu table on inp.host, gpu table on inp.dev ...
 *         rg_test_pair_expect_close(&out, 1e-5, 1e-6, "layernorm out");
 *         rg_test_pair_free(&inp);
 *     }
 */
#ifndef RG_TEST_CUDA_H
#define RG_TEST_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "rg_backend.h"
#include "rg_test.h"

/* The CUDA op table, or NULL after printing why the case is skipped (no
 * library named, none built, no device, an incomplete table). */
const rg_ops_table *rg_test_cuda_ops(const char *case_name);

/* One array on both sides: `host` is what the CPU op reads and writes,
 * `dev` the device copy the CUDA op gets. float or int32 (4 bytes each). */
typedef struct rg_test_pair {
    void *host;
    void *dev;
    size_t n;
} rg_test_pair;

/* n floats uniform in [lo, hi) from seed, on both sides (equal bits). */
rg_test_pair rg_test_pair_random(size_t n, uint64_t seed, float lo, float hi);
/* n int32 uniform in [lo, hi) from seed; `hole` >= 0 puts -1 (ignored target,
 * masked key) at every hole-th element, none when hole <= 0. */
rg_test_pair rg_test_pair_ints(size_t n, uint64_t seed, int lo, int hi, int hole);
/* n zero floats on both sides. */
rg_test_pair rg_test_pair_zeros(size_t n);
/* A NULL pair (the op's "not needed" argument): host and dev NULL. */
rg_test_pair rg_test_pair_none(void);
void rg_test_pair_free(rg_test_pair *pair);

#define RG_HOST_F(pair) ((float *)(pair).host)
#define RG_DEV_F(pair) ((float *)(pair).dev)
#define RG_HOST_I(pair) ((int32_t *)(pair).host)
#define RG_DEV_I(pair) ((int32_t *)(pair).dev)

/* Waits for the GPU, fails the case on a recorded CUDA failure, copies `dev`
 * back and compares it with `host`: |gpu - cpu| <= atol + rtol * |cpu| for
 * every element (the worst three printed). Returns 1 when all agree. */
int rg_test_pair_expect_close_at(const rg_test_pair *pair, double rtol, double atol, const char *what,
                                 const char *file, int line);
#define rg_test_pair_expect_close(pair, rtol, atol, what) \
    rg_test_pair_expect_close_at((pair), (rtol), (atol), (what), __FILE__, __LINE__)

#endif /* RG_TEST_CUDA_H */
