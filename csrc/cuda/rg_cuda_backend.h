/*
 * rg_cuda_backend.h - the contract between the core and the CUDA library.
 *
 * The CUDA sources build into a shared library of their own (reviewgen's
 * _rgcuda*.so, linked with cudart and cuBLASLt) that the core opens with
 * dlopen the first time a CUDA call needs it (rg_cuda_loader.c): a CPU-only
 * session never maps cuBLASLt, which alone is about 180 MB resident.
 * The library exports one symbol, RG_CUDA_BACKEND_SYMBOL, returning this
 * table; everything else in it is hidden.
 */
#ifndef RG_CUDA_BACKEND_H
#define RG_CUDA_BACKEND_H

#include "../rg_backend.h"
#include "../rg_common.h"
#include "rg_cuda.h"
#include "../rg_adamw_update.h"

#ifdef __cplusplus
extern "C" {
#endif

#define RG_CUDA_BACKEND_SYMBOL "rg_cuda_backend_v1"
#define RG_CUDA_BACKEND_ABI 2

typedef struct rg_cuda_backend {
    int abi;                        /* RG_CUDA_BACKEND_ABI of the library */
    int (*device_count)(void);
    rg_status (*axpy)(float a, const float *x, const float *y, float *out, int64_t n);
    rg_status (*cublaslt_probe)(void);
    const rg_ops_table *(*ops_table)(void);
    rg_status (*malloc)(void **ptr, size_t bytes);
    void (*free)(void *ptr);
    rg_status (*memcpy)(void *dst, const void *src, size_t bytes, int kind);
    rg_status (*memset)(void *dst, int value, size_t bytes);
    rg_status (*synchronize)(void);
    const char *(*last_error)(void);
    void (*adamw_update)(float *p, float *g, float *m, float *v, size_t n, int decay, const rg_adamw_factors *f);
    rg_status (*sum_squares)(const float *x, size_t n, double *out);
} rg_cuda_backend;

typedef const rg_cuda_backend *(*rg_cuda_backend_entry)(void);

/* The library's own implementations (hidden inside it; one file per op). */
int rgcu_device_count(void);
rg_status rgcu_axpy(float a, const float *x /* (n,) */, const float *y /* (n,) */,
                    float *out /* (n,) */, int64_t n);
rg_status rgcu_cublaslt_probe(void);
const rg_ops_table *rgcu_ops_table(void);
/* (the rest of the library's functions are declared in rgcu.h) */

#ifdef __cplusplus
}
#endif
#endif /* RG_CUDA_BACKEND_H */
