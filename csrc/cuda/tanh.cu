// tanh.cu - tanh; the backward reads the forward OUTPUT: d tanh = 1 - out^2.
#include "rgcu.h"

static inline unsigned tanh_blocks(size_t n)
{
    const size_t cap = (size_t)RGCU_THREADS << 20; // grid-stride beyond 2^20 blocks
    return rgcu_blocks(n < cap ? n : cap, RGCU_THREADS);
}

static __global__ void tanh_forward_kernel(float *out /* (n,) */, const float *inp /* (n,) */, size_t n)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = tanhf(inp[i]);
}

static __global__ void tanh_backward_kernel(float *dinp /* (n,) += */, const float *out /* (n,) */,
                                            const float *dout /* (n,) */, size_t n)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dinp[i] += (1.0f - out[i] * out[i]) * dout[i];
}

extern "C" void rgcu_tanh_forward(float *out, const float *inp, size_t n)
{
    if (n == 0)
        return;
    tanh_forward_kernel<<<tanh_blocks(n), RGCU_THREADS, 0, rgcu_stream()>>>(out, inp, n);
    rgcu_check_launch("tanh_forward");
}

extern "C" void rgcu_tanh_backward(float *dinp, const float *out, const float *dout, size_t n)
{
    if (n == 0 || dinp == NULL)
        return;
    tanh_backward_kernel<<<tanh_blocks(n), RGCU_THREADS, 0, rgcu_stream()>>>(dinp, out, dout, n);
    rgcu_check_launch("tanh_backward");
}
