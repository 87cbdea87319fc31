// adamw.cu - the optimizer's element-wise work on the GPU: the AdamW update
// of one tensor (the twin of rg_adamw_update in rg_optim.c, same float
// expressions in the same order) and the sum of squares behind the gradient
// norm (in double, as the CPU; the order of the additions differs).
#include "rgcu.h"

#include "../rg_adamw_update.h"

#define SUMSQ_THREADS 256
#define SUMSQ_MAX_BLOCKS 1024

// p, g, m, v (n,): one thread per element, grid-stride. The factors come by
// value: a kernel argument lives in constant memory, read once per thread.
static __global__ void adamw_update_kernel(float *p, float *g, float *m, float *v, size_t n, int decay,
                                           rg_adamw_factors k)
{
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        float grad = g[i] * k.clip_scale;
        float param = p[i];
        if (decay)
            param *= k.decay_factor;
        // __fmul_rn / __fadd_rn keep nvcc from fusing what the CPU rounds twice
        float m_i = __fadd_rn(m[i], __fmul_rn(k.one_minus_beta1, __fadd_rn(grad, -m[i])));
        float v_i = __fadd_rn(__fmul_rn(v[i], k.beta2), __fmul_rn(k.one_minus_beta2, __fmul_rn(grad, grad)));
        float denom = __fadd_rn(__fmul_rn(sqrtf(v_i), k.inv_bc2_sqrt), k.eps);
        p[i] = __fadd_rn(param, -__fmul_rn(k.step_size, m_i / denom));
        m[i] = m_i;
        v[i] = v_i;
        g[i] = 0.0f; // consumed: the next accumulation starts from zero
    }
}

extern "C" void rgcu_adamw_update(float *p, float *g, float *m, float *v, size_t n, int decay,
                                  const rg_adamw_factors *f)
{
    if (n == 0)
        return;
    const size_t blocks = (n + RGCU_THREADS - 1) / RGCU_THREADS;
    adamw_update_kernel<<<(unsigned)(blocks < 65536 ? blocks : 65536), RGCU_THREADS, 0, rgcu_stream()>>>(
        p, g, m, v, n, decay, *f);
    rgcu_check_launch("adamw_update");
}

// partial[block] = sum of x[i]^2 over the block's grid-stride elements, in
// double, reduced in shared memory by a fixed tree (deterministic).
static __global__ void sum_squares_kernel(double *partial, const float *x, size_t n)
{
    __shared__ double part[SUMSQ_THREADS];
    double s = 0.0;
    for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x)
        s += (double)x[i] * (double)x[i];
    part[threadIdx.x] = s;
    __syncthreads();
    for (int half = SUMSQ_THREADS / 2; half > 0; half /= 2) {
        if ((int)threadIdx.x < half)
            part[threadIdx.x] += part[threadIdx.x + half];
        __syncthreads();
    }
    if (threadIdx.x == 0)
        partial[blockIdx.x] = part[0];
}

// out[0] = the sum of partial (blocks,), in order, by one thread.
static __global__ void sum_partials_kernel(double *out, const double *partial, int blocks)
{
    double s = 0.0;
    for (int b = 0; b < blocks; b++)
        s += partial[b];
    out[0] = s;
}

extern "C" rg_status rgcu_sum_squares(const float *x, size_t n, double *out)
{
    if (out == NULL || (x == NULL && n > 0))
        return RG_ERR_INVALID_ARG;
    *out = 0.0;
    if (n == 0)
        return RG_OK;
    size_t blocks = (n + SUMSQ_THREADS - 1) / SUMSQ_THREADS;
    blocks = blocks < SUMSQ_MAX_BLOCKS ? blocks : SUMSQ_MAX_BLOCKS;
    double *partial = (double *)rgcu_scratch(RGCU_SCRATCH_REDUCE, (blocks + 1) * sizeof(double));
    if (partial == NULL)
        return rgcu_synchronize();
    sum_squares_kernel<<<(unsigned)blocks, SUMSQ_THREADS, 0, rgcu_stream()>>>(partial, x, n);
    rgcu_check_launch("sum_squares");
    sum_partials_kernel<<<1, 1, 0, rgcu_stream()>>>(partial + blocks, partial, (int)blocks);
    rgcu_check_launch("sum_squares");
    if (cudaMemcpyAsync(out, partial + blocks, sizeof(double), cudaMemcpyDeviceToHost, rgcu_stream()) != cudaSuccess)
        rgcu_fail(RG_ERR_CUDA, "sum_squares copy");
    return rgcu_synchronize();
}
