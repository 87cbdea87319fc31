/* rg_cuda_stub.c - the CUDA entry points for builds without nvcc. */
#include "rg_cuda.h"

int rg_cuda_compiled(void) { return 0; }
int rg_cuda_device_count(void) { return 0; }

rg_status rg_cuda_axpy(float a, const float *x, const float *y, float *out, int64_t n)
{
    (void)a; (void)x; (void)y; (void)out; (void)n;
    return RG_ERR_UNSUPPORTED;
}

rg_status rg_cuda_cublaslt_probe(void) { return RG_ERR_UNSUPPORTED; }

const rg_ops_table *rg_cuda_ops_table(void) { return NULL; }
