// add.cu - the residual add, out += a, element-wise.
#include "rgcu.h"

// One thread per element, grid-stride for sizes beyond the capped grid.
static __global__ void add_inplace_kernel(float *out /* (n,) += */, const float *a /* (n,) */, size_t n)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] += a[i];
}

extern "C" void rgcu_add_inplace(float *out, const float *a, size_t n)
{
    if (n == 0)
        return;
    const size_t cap = (size_t)RGCU_THREADS << 20; // keeps the block count in range
    add_inplace_kernel<<<rgcu_blocks(n < cap ? n : cap, RGCU_THREADS), RGCU_THREADS, 0, rgcu_stream()>>>(
        out, a, n);
    rgcu_check_launch("add_inplace");
}
