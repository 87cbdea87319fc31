/*
 * cuda_pairs.c - the host/device array pairs of rg_test_cuda.h.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/rg_cuda.h"
#include "rg_rng.h"
#include "rg_test_cuda.h"

const rg_ops_table *rg_test_cuda_ops(const char *case_name)
{
    static int library_set;
    const char *path = getenv("RG_TEST_CUDA_LIBRARY");
    if (path == NULL || path[0] == 0) {
        printf("  %s: skipped (RG_TEST_CUDA_LIBRARY not set)\n", case_name);
        return NULL;
    }
    if (!library_set) {
        rg_cuda_set_library(path);
        library_set = 1;
    }
    if (rg_cuda_device_count() == 0) {
        const char *why = rg_cuda_load_error();
        printf("  %s: skipped (no CUDA device%s%s)\n", case_name, why[0] ? ": " : "", why);
        return NULL;
    }
    const rg_ops_table *table = rg_cuda_ops_table();
    /* A library with devices but no complete table is a failure, not a skip. */
    if (!RG_CHECK(table != NULL && rg_ops_table_complete(table)))
        return NULL;
    return table;
}

static rg_test_pair pair_upload(void *host, size_t n)
{
    rg_test_pair pair = {host, NULL, n};
    if (n == 0)
        return pair;
    RG_CHECK(host != NULL);
    RG_CHECK_STATUS(rg_cuda_malloc(&pair.dev, n * 4), RG_OK);
    if (pair.dev != NULL)
        RG_CHECK_STATUS(rg_cuda_memcpy(pair.dev, host, n * 4, RG_CUDA_HOST_TO_DEVICE), RG_OK);
    return pair;
}

rg_test_pair rg_test_pair_random(size_t n, uint64_t seed, float lo, float hi)
{
    float *host = malloc(n * sizeof(float) + 1);
    for (size_t i = 0; host != NULL && i < n; i++)
        host[i] = lo + (hi - lo) * rg_rng_uniform(seed, i);
    return pair_upload(host, n);
}

rg_test_pair rg_test_pair_ints(size_t n, uint64_t seed, int lo, int hi, int hole)
{
    int32_t *host = malloc(n * sizeof(int32_t) + 1);
    for (size_t i = 0; host != NULL && i < n; i++) {
        host[i] = lo + (int32_t)(rg_rng_bits(seed, i) % (uint64_t)(hi - lo));
        if (hole > 0 && i % (size_t)hole == (size_t)hole - 1)
            host[i] = -1;
    }
    return pair_upload(host, n);
}

rg_test_pair rg_test_pair_zeros(size_t n)
{
    return pair_upload(calloc(n + 1, sizeof(float)), n);
}

rg_test_pair rg_test_pair_none(void)
{
    rg_test_pair pair = {NULL, NULL, 0};
    return pair;
}

void rg_test_pair_free(rg_test_pair *pair)
{
    free(pair->host);
    rg_cuda_free(pair->dev);
    pair->host = pair->dev = NULL;
    pair->n = 0;
}

int rg_test_pair_expect_close_at(const rg_test_pair *pair, double rtol, double atol, const char *what,
                                 const char *file, int line)
{
    rg_status status = rg_cuda_synchronize();
    if (!rg_test_check(status == RG_OK, file, line, "%s: CUDA failure %s", what, rg_cuda_last_error()))
        return 0;
    float *back = malloc(pair->n * sizeof(float) + 1);
    if (!rg_test_check(back != NULL, file, line, "%s: out of memory", what))
        return 0;
    if (!rg_test_check(rg_cuda_memcpy(back, pair->dev, pair->n * 4, RG_CUDA_DEVICE_TO_HOST) == RG_OK, file, line,
                       "%s: copy back failed", what)) {
        free(back);
        return 0;
    }
    const float *cpu = pair->host;
    size_t bad = 0;
    double worst = 0.0;
    for (size_t i = 0; i < pair->n; i++) {
        double err = fabs((double)back[i] - (double)cpu[i]);
        int ok = err <= atol + rtol * fabs((double)cpu[i]) && !isnan(back[i]) == !isnan(cpu[i]);
        worst = err > worst ? err : worst;
        if (!ok && ++bad <= 3)
            rg_test_check(0, file, line, "%s[%zu]: gpu %.8g, cpu %.8g", what, i, (double)back[i], (double)cpu[i]);
    }
    free(back);
    if (bad > 3)
        rg_test_check(0, file, line, "%s: %zu of %zu elements differ (worst |diff| %.3g)", what, bad, pair->n, worst);
    return bad == 0;
}
