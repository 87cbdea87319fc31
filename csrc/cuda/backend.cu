// backend.cu - the one exported symbol of the CUDA library: the table of its
// entry points (rg_cuda_backend.h). Built with -fvisibility=hidden, so only
// this function is visible to dlsym.
#include "rgcu.h"

static const rg_cuda_backend backend_table = {
    RG_CUDA_BACKEND_ABI, rgcu_device_count, rgcu_axpy, rgcu_cublaslt_probe, rgcu_ops_table,
    rgcu_malloc, rgcu_free, rgcu_memcpy, rgcu_memset, rgcu_synchronize, rgcu_last_error,
    rgcu_adamw_update, rgcu_sum_squares,
};

extern "C" __attribute__((visibility("default"))) const rg_cuda_backend *rg_cuda_backend_v1(void)
{
    return &backend_table;
}
