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

/* The CUDA op table for rg_model_set_ops (rg_backend.h), or NULL while there
 * is none: without the library, and until every op has a CUDA implementation
 * (csrc/cuda/<op>.cu, one file per op, each filling its entries in
 * rg_cuda_ops.cu). */
const rg_ops_table *rg_cuda_ops_table(void);

#ifdef __cplusplus
}
#endif
#endif /* RG_CUDA_H */
