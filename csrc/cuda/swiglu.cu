// swiglu.cu - SwiGLU (Llama's MLP): out = silu(gate) * up, where each input
// row is [gate (F) ; up (F)]. Formulas as rg_ops.c's, with the device's
// expf in place of the CPU's fast_expf (both within a few ulp).
#include "rgcu.h"

static inline unsigned swiglu_blocks(size_t n)
{
    const size_t cap = (size_t)RGCU_THREADS << 20; // grid-stride beyond 2^20 blocks
    return rgcu_blocks(n < cap ? n : cap, RGCU_THREADS);
}

// One thread per output element (n, f) of the flat (N, F) index.
static __global__ void swiglu_forward_kernel(float *out /* (N, F) */, const float *inp /* (N, 2F) */,
                                             size_t total /* N * F */, int F)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const size_t n = i / (size_t)F, f = i % (size_t)F;
        const float *gate = inp + n * 2 * (size_t)F;
        const float g = gate[f];
        out[i] = g / (1.0f + expf(-g)) * gate[(size_t)F + f];
    }
}

static __global__ void swiglu_backward_kernel(float *dinp /* (N, 2F) += */, const float *inp /* (N, 2F) */,
                                              const float *dout /* (N, F) */, size_t total /* N * F */,
                                              int F)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
        const size_t n = i / (size_t)F, f = i % (size_t)F;
        const size_t gi = n * 2 * (size_t)F + f, ui = gi + (size_t)F; // gate and up of this element
        const float g = inp[gi], up = inp[ui], dy = dout[i];
        const float sig = 1.0f / (1.0f + expf(-g));
        const float silu = g * sig;
        dinp[ui] += dy * silu;
        dinp[gi] += dy * up * sig * (1.0f + g * (1.0f - sig));
    }
}

extern "C" void rgcu_swiglu_forward(float *out, const float *inp, int N, int F)
{
    if (N <= 0 || F <= 0)
        return;
    const size_t total = (size_t)N * (size_t)F;
    swiglu_forward_kernel<<<swiglu_blocks(total), RGCU_THREADS, 0, rgcu_stream()>>>(out, inp, total, F);
    rgcu_check_launch("swiglu_forward");
}

extern "C" void rgcu_swiglu_backward(float *dinp, const float *inp, const float *dout, int N, int F)
{
    if (N <= 0 || F <= 0 || dinp == NULL)
        return;
    const size_t total = (size_t)N * (size_t)F;
    swiglu_backward_kernel<<<swiglu_blocks(total), RGCU_THREADS, 0, rgcu_stream()>>>(dinp, inp, dout,
                                                                                     total, F);
    rgcu_check_launch("swiglu_backward");
}
