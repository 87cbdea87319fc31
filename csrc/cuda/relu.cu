// relu.cu - ReLU; the backward reads the forward OUTPUT (out > 0 iff inp > 0).
#include "rgcu.h"

static inline unsigned relu_blocks(size_t n)
{
    const size_t cap = (size_t)RGCU_THREADS << 20; // grid-stride beyond 2^20 blocks
    return rgcu_blocks(n < cap ? n : cap, RGCU_THREADS);
}

static __global__ void relu_forward_kernel(float *out /* (n,) */, const float *inp /* (n,) */, size_t n)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

static __global__ void relu_backward_kernel(float *dinp /* (n,) += */, const float *out /* (n,) */,
                                            const float *dout /* (n,) */, size_t n)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
        dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

extern "C" void rgcu_relu_forward(float *out, const float *inp, size_t n)
{
    if (n == 0)
        return;
    relu_forward_kernel<<<relu_blocks(n), RGCU_THREADS, 0, rgcu_stream()>>>(out, inp, n);
    rgcu_check_launch("relu_forward");
}

extern "C" void rgcu_relu_backward(float *dinp, const float *out, const float *dout, size_t n)
{
    if (n == 0 || dinp == NULL)
        return;
    relu_backward_kernel<<<relu_blocks(n), RGCU_THREADS, 0, rgcu_stream()>>>(dinp, out, dout, n);
    rgcu_check_launch("relu_backward");
}
