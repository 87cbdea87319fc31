// dropout.cu - inverted dropout in place. The mask is drawn from rg_rng.h's
// counter-based generator at the element's flat index (plus `first`), so it is bit for bit
// the CPU's (rg_dropout_apply) and the backward redraws it from `stream`.
#include "rgcu.h"
#include "rg_rng.h"

// One thread per element, grid-stride for sizes beyond the capped grid.
static __global__ void dropout_kernel(float *x /* (n,) in place */, size_t n, size_t first, float p,
                                      float scale, uint64_t stream)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        x[i] = rg_rng_keep(stream, first + i, p) ? x[i] * scale : 0.0f;
}

extern "C" void rgcu_dropout_apply(float *x, size_t n, size_t first, float p, uint64_t stream)
{
    if (p <= 0.0f || n == 0)
        return;
    // The scale is computed here, in float, exactly as the CPU computes it.
    const float scale = 1.0f / (1.0f - p);
    // A capped grid (2^20 blocks): rgcu_blocks' unsigned count cannot overflow.
    const size_t cap = (size_t)RGCU_THREADS << 20;
    dropout_kernel<<<rgcu_blocks(n < cap ? n : cap, RGCU_THREADS), RGCU_THREADS, 0, rgcu_stream()>>>(
        x, n, first, p, scale, stream);
    rgcu_check_launch("dropout_apply");
}
