// cublaslt_probe.cu - creates and destroys a cuBLASLt handle. The matmul op
// that uses cuBLASLt for real lands with the GPU training issue.
#include <cublasLt.h>
#include "rg_cuda_backend.h"

extern "C" rg_status rgcu_cublaslt_probe(void)
{
    if (rgcu_device_count() == 0)
        return RG_ERR_CUDA;
    cublasLtHandle_t handle;
    if (cublasLtCreate(&handle) != CUBLAS_STATUS_SUCCESS)
        return RG_ERR_CUDA;
    cublasLtDestroy(handle);
    return RG_OK;
}
