// axpy.cu - placeholder op proving the CUDA toolchain end to end; real ops
// (matmul through cuBLASLt, attention, norms) each get a file of their own.
#include <cuda_runtime.h>
#include "rg_cuda_backend.h"

__global__ static void axpy_kernel(float a, const float *x, const float *y, float *out, int64_t n)
{
    int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n)
        out[i] = a * x[i] + y[i];
}

extern "C" rg_status rgcu_axpy(float a, const float *x, const float *y, float *out, int64_t n)
{
    if (n < 0 || (n > 0 && (!x || !y || !out)))
        return RG_ERR_INVALID_ARG;
    if (n == 0)
        return RG_OK;
    if (rgcu_device_count() == 0)
        return RG_ERR_CUDA;
    size_t bytes = (size_t)n * sizeof(float);
    float *dx = NULL, *dy = NULL, *dout = NULL;
    rg_status status = RG_ERR_CUDA;
    if (cudaMalloc(&dx, bytes) != cudaSuccess || cudaMalloc(&dy, bytes) != cudaSuccess ||
        cudaMalloc(&dout, bytes) != cudaSuccess)
        goto done;
    if (cudaMemcpy(dx, x, bytes, cudaMemcpyHostToDevice) != cudaSuccess ||
        cudaMemcpy(dy, y, bytes, cudaMemcpyHostToDevice) != cudaSuccess)
        goto done;
    {
        const int threads = 256;
        int64_t blocks = (n + threads - 1) / threads;
        axpy_kernel<<<(unsigned)blocks, threads>>>(a, dx, dy, dout, n);
    }
    if (cudaGetLastError() != cudaSuccess)
        goto done;
    if (cudaMemcpy(out, dout, bytes, cudaMemcpyDeviceToHost) != cudaSuccess)
        goto done;
    status = RG_OK;
done:
    cudaFree(dx);
    cudaFree(dy);
    cudaFree(dout);
    return status;
}
