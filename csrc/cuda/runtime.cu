// runtime.cu - the CUDA library's shared state: the stream every op runs on,
// the cuBLASLt handle, scratch buffers, device memory calls, and the first
// failure since the last synchronize (ops return nothing, as on the CPU).
#include <stdio.h>
#include <string.h>

#include "rgcu.h"

static cublasLtHandle_t cublaslt_handle;
static int cublaslt_tried;
static rg_status first_status = RG_OK;
static char first_error[256];
static void *scratch[RGCU_SCRATCH_SLOTS];
static size_t scratch_bytes[RGCU_SCRATCH_SLOTS];

extern "C" int rgcu_device_count(void)
{
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
        cudaGetLastError(); // clear the sticky "no driver" error
        return 0;
    }
    return count;
}

extern "C" cudaStream_t rgcu_stream(void)
{
    return 0; // the legacy default stream: every op is ordered after the one before
}

extern "C" void rgcu_fail(rg_status status, const char *what)
{
    if (first_status != RG_OK)
        return;
    first_status = status;
    cudaError_t err = cudaPeekAtLastError();
    snprintf(first_error, sizeof(first_error), "%s: %s", what,
             err != cudaSuccess ? cudaGetErrorString(err) : (status == RG_ERR_NOMEM ? "out of device memory" : "failed"));
}

extern "C" void rgcu_check_launch(const char *what)
{
    cudaError_t err = cudaPeekAtLastError();
    if (err != cudaSuccess) {
        rgcu_fail(RG_ERR_CUDA, what);
        cudaGetLastError();
    }
}

extern "C" cublasLtHandle_t rgcu_cublaslt(void)
{
    if (!cublaslt_tried) {
        cublaslt_tried = 1;
        if (cublasLtCreate(&cublaslt_handle) != CUBLAS_STATUS_SUCCESS)
            cublaslt_handle = NULL;
    }
    if (cublaslt_handle == NULL)
        rgcu_fail(RG_ERR_CUDA, "cublasLtCreate");
    return cublaslt_handle;
}

extern "C" void *rgcu_scratch(int slot, size_t bytes)
{
    if (slot < 0 || slot >= RGCU_SCRATCH_SLOTS) {
        rgcu_fail(RG_ERR_INVALID_ARG, "scratch slot");
        return NULL;
    }
    if (bytes <= scratch_bytes[slot])
        return scratch[slot];
    // The old buffer may still be read by queued work: wait before freeing it.
    cudaStreamSynchronize(rgcu_stream());
    cudaFree(scratch[slot]);
    scratch[slot] = NULL;
    scratch_bytes[slot] = 0;
    if (cudaMalloc(&scratch[slot], bytes) != cudaSuccess) {
        scratch[slot] = NULL;
        rgcu_fail(RG_ERR_NOMEM, "scratch allocation");
        cudaGetLastError();
        return NULL;
    }
    scratch_bytes[slot] = bytes;
    return scratch[slot];
}

extern "C" rg_status rgcu_malloc(void **ptr, size_t bytes)
{
    if (ptr == NULL)
        return RG_ERR_INVALID_ARG;
    *ptr = NULL;
    if (bytes == 0)
        return RG_OK;
    if (rgcu_device_count() == 0)
        return RG_ERR_CUDA;
    if (cudaMalloc(ptr, bytes) != cudaSuccess) {
        cudaGetLastError();
        *ptr = NULL;
        return RG_ERR_NOMEM;
    }
    return RG_OK;
}

extern "C" void rgcu_free(void *ptr)
{
    if (ptr != NULL)
        cudaFree(ptr);
}

extern "C" rg_status rgcu_memcpy(void *dst, const void *src, size_t bytes, int kind)
{
    if (bytes == 0)
        return RG_OK;
    if (dst == NULL || src == NULL)
        return RG_ERR_INVALID_ARG;
    cudaMemcpyKind how;
    switch (kind) {
    case RG_CUDA_HOST_TO_DEVICE: how = cudaMemcpyHostToDevice; break;
    case RG_CUDA_DEVICE_TO_HOST: how = cudaMemcpyDeviceToHost; break;
    case RG_CUDA_DEVICE_TO_DEVICE: how = cudaMemcpyDeviceToDevice; break;
    default: return RG_ERR_INVALID_ARG;
    }
    if (cudaMemcpyAsync(dst, src, bytes, how, rgcu_stream()) != cudaSuccess ||
        cudaStreamSynchronize(rgcu_stream()) != cudaSuccess) {
        cudaGetLastError();
        return RG_ERR_CUDA;
    }
    return RG_OK;
}

extern "C" rg_status rgcu_memset(void *dst, int value, size_t bytes)
{
    if (bytes == 0)
        return RG_OK;
    if (dst == NULL)
        return RG_ERR_INVALID_ARG;
    if (cudaMemsetAsync(dst, value, bytes, rgcu_stream()) != cudaSuccess) {
        cudaGetLastError();
        return RG_ERR_CUDA;
    }
    return RG_OK;
}

extern "C" rg_status rgcu_synchronize(void)
{
    if (cudaStreamSynchronize(rgcu_stream()) != cudaSuccess)
        rgcu_fail(RG_ERR_CUDA, "synchronize");
    rg_status status = first_status;
    first_status = RG_OK;
    return status;
}

extern "C" const char *rgcu_last_error(void)
{
    return first_error;
}
