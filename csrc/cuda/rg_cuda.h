/*
 * rg_cuda.h - the CUDA side of the core, callable from plain C.
 *
 * Every function exists in every build (rg_cuda_loader.c). The kernels live
 * in a separate shared library that is opened on first use, so a build
 * without nvcc, a machine without a GPU and a CPU-only session all behave
 * alike: RG_ERR_UNSUPPORTED where no library was built, RG_ERR_CUDA where it
 * was built but cannot run (no driver, no device, or it failed to load;
 * rg_cuda_load_error says why), 0 devices in both cases.
 */
#ifndef RG_CUDA_H
#define RG_CUDA_H

#include "../rg_backend.h"
#include "../rg_common.h"
#include "../rg_adamw_update.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Where the CUDA library is (set once by whoever knows the install layout,
 * the Python package at import; NULL forgets it). Opens nothing. */
rg_status rg_cuda_set_library(const char *path);

/* 1 when a CUDA library was built for this core (its file exists), else 0.
 * Opens nothing. */
int rg_cuda_compiled(void);

/* Why the library could not be opened ("" when it was, or was never tried). */
const char *rg_cuda_load_error(void);

/* Number of usable CUDA devices (0 without a library, a driver or a GPU). */
int rg_cuda_device_count(void);

/* out[i] = a * x[i] + y[i] on the GPU, for n elements of host memory.
 * A small end-to-end check of the toolchain (allocate, copy, launch, copy back). */
rg_status rg_cuda_axpy(float a, const float *x /* (n,) */, const float *y /* (n,) */,
                       float *out /* (n,) */, int64_t n);

/* Create and free a cuBLASLt handle: proves the library links and loads. */
rg_status rg_cuda_cublaslt_probe(void);

/* ---- device memory (for the op tests today, the model's blocks next) ---- */
enum { RG_CUDA_HOST_TO_DEVICE = 1, RG_CUDA_DEVICE_TO_HOST = 2, RG_CUDA_DEVICE_TO_DEVICE = 3 };
/* *ptr = bytes of device memory (NULL for 0 bytes); RG_ERR_NOMEM when the
 * device has not that much free, RG_ERR_UNSUPPORTED/RG_ERR_CUDA as above. */
rg_status rg_cuda_malloc(void **ptr, size_t bytes);
void rg_cuda_free(void *ptr);
/* Copies and waits for the copy (and for all work queued before it). */
rg_status rg_cuda_memcpy(void *dst, const void *src, size_t bytes, int kind);
rg_status rg_cuda_memset(void *dst, int value, size_t bytes);
/* Waits for queued work; returns the first failure of an op since the last
 * call (ops return nothing, as on the CPU), rg_cuda_last_error says which. */
rg_status rg_cuda_synchronize(void);
const char *rg_cuda_last_error(void);

/* ---- the optimizer's element-wise work, on device pointers ---- */
/* rg_adamw_update (rg_adamw_update.h) on the GPU: the same float expressions,
 * rounded as the CPU rounds them. Queued; failures show at rg_cuda_synchronize. */
rg_status rg_cuda_adamw_update(float *p, float *g, float *m, float *v, size_t n, int decay,
                               const rg_adamw_factors *f);
/* *out = sum of x[i]^2 over x (n,) in double (waits for the result). */
rg_status rg_cuda_sum_squares(const float *x, size_t n, double *out);

/* The CUDA op table for rg_model_set_ops (rg_backend.h), or NULL while there
 * is none: without the library, and until every op has a CUDA implementation
 * (csrc/cuda/<op>.cu, one file per op, each filling its entries in
 * rg_cuda_ops.cu). */
const rg_ops_table *rg_cuda_ops_table(void);

#ifdef __cplusplus
}
#endif
#endif /* RG_CUDA_H */
