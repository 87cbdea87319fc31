/*
 * rg_cuda.h - the CUDA side of the core, callable from plain C.
 * Every function exists in every build: without CUDA the stubs in
 * rg_cuda_stub.c answer RG_ERR_UNSUPPORTED / 0 devices.
 */
#ifndef RG_CUDA_H
#define RG_CUDA_H

#include "../rg_backend.h"
#include "../rg_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* 1 when this build compiled the CUDA sources, else 0. */
int rg_cuda_compiled(void);

/* Number of usable CUDA devices (0 without a driver or a GPU). */
int rg_cuda_device_count(void);

/* out[i] = a * x[i] + y[i] on the GPU, for n elements of host memory.
 * A small end-to-end check of the toolchain (allocate, copy, launch, copy back). */
rg_status rg_cuda_axpy(float a, const float *x /* (n,) */, const float *y /* (n,) */,
                       float *out /* (n,) */, int64_t n);

/* Create and free a cuBLASLt handle: proves the library links and loads. */
rg_status rg_cuda_cublaslt_probe(void);

/* The CUDA op table for rg_model_set_ops (rg_backend.h), or NULL while this
 * build has none: always NULL without CUDA, and NULL until every op has a
 * CUDA implementation (csrc/cuda/<op>.cu, one file per op, each filling its
 * entries in rg_cuda_ops.cu). */
const rg_ops_table *rg_cuda_ops_table(void);

#ifdef __cplusplus
}
#endif
#endif /* RG_CUDA_H */
