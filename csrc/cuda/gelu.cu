// gelu.cu - GELU in its two forms, with rg_ops.c's formulas and constants:
// the tanh approximation (GPT-2's gelu_new) and the exact erf form (BERT).
// Backward: dinp += dout * gelu'(inp), the derivative written as on the CPU.
// The CPU's tanh is fast_tanhf (a few 1e-8 absolute from tanhf); here the
// device's tanhf/erff/expf, all within 2 ulp.
#include "rgcu.h"

#define GELU_SQRT_2_OVER_PI 0.7978845608028654f
#define GELU_INV_SQRT_2 0.7071067811865476f
#define GELU_INV_SQRT_2PI 0.3989422804014327f
#define GELU_COEF 0.044715f

static inline unsigned gelu_blocks(size_t n)
{
    const size_t cap = (size_t)RGCU_THREADS << 20; // grid-stride beyond 2^20 blocks
    return rgcu_blocks(n < cap ? n : cap, RGCU_THREADS);
}

// ---- tanh approximation ----

static __global__ void gelu_tanh_forward_kernel(float *out /* (n,) */, const float *inp /* (n,) */,
                                                size_t n)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float x = inp[i];
        out[i] = 0.5f * x * (1.0f + tanhf(GELU_SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x)));
    }
}

static __global__ void gelu_tanh_backward_kernel(float *dinp /* (n,) += */, const float *inp /* (n,) */,
                                                 const float *dout /* (n,) */, size_t n)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float x = inp[i];
        const float u = GELU_SQRT_2_OVER_PI * (x + GELU_COEF * x * x * x);
        const float th = tanhf(u);
        const float du = GELU_SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_COEF * x * x);
        const float grad = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
        dinp[i] += grad * dout[i];
    }
}

extern "C" void rgcu_gelu_tanh_forward(float *out, const float *inp, size_t n)
{
    if (n == 0)
        return;
    gelu_tanh_forward_kernel<<<gelu_blocks(n), RGCU_THREADS, 0, rgcu_stream()>>>(out, inp, n);
    rgcu_check_launch("gelu_tanh_forward");
}

extern "C" void rgcu_gelu_tanh_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
    if (n == 0 || dinp == NULL)
        return;
    gelu_tanh_backward_kernel<<<gelu_blocks(n), RGCU_THREADS, 0, rgcu_stream()>>>(dinp, inp, dout, n);
    rgcu_check_launch("gelu_tanh_backward");
}

// ---- exact erf form ----

static __global__ void gelu_erf_forward_kernel(float *out /* (n,) */, const float *inp /* (n,) */,
                                               size_t n)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erff(x * GELU_INV_SQRT_2));
    }
}

static __global__ void gelu_erf_backward_kernel(float *dinp /* (n,) += */, const float *inp /* (n,) */,
                                                const float *dout /* (n,) */, size_t n)
{
    const size_t stride = (size_t)gridDim.x * blockDim.x;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        const float x = inp[i];
        // Phi(x) + x * phi(x)
        const float grad = 0.5f * (1.0f + erff(x * GELU_INV_SQRT_2)) +
                           x * GELU_INV_SQRT_2PI * expf(-0.5f * x * x);
        dinp[i] += grad * dout[i];
    }
}

extern "C" void rgcu_gelu_erf_forward(float *out, const float *inp, size_t n)
{
    if (n == 0)
        return;
    gelu_erf_forward_kernel<<<gelu_blocks(n), RGCU_THREADS, 0, rgcu_stream()>>>(out, inp, n);
    rgcu_check_launch("gelu_erf_forward");
}

extern "C" void rgcu_gelu_erf_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
    if (n == 0 || dinp == NULL)
        return;
    gelu_erf_backward_kernel<<<gelu_blocks(n), RGCU_THREADS, 0, rgcu_stream()>>>(dinp, inp, dout, n);
    rgcu_check_launch("gelu_erf_backward");
}
