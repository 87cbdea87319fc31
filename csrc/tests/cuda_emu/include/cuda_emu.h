/*
 * cuda_emu.h - a CPU emulator of the CUDA execution model, for testing the
 * kernels of csrc/cuda/NAME.cu where there is no GPU (`make -C csrc
 * test-cuda-emu`).
 *
 * What it is: transform.py rewrites a .cu file into plain C++ (each
 * `kernel<<<grid, block, smem, stream>>>(args)` becomes a call into
 * emu_launcher, each `__shared__` array a per-block buffer), g++ compiles it
 * against this header and the fake <cuda_runtime.h> / <cublasLt.h> next to
 * it, and every block of a launch runs its threads as cooperative fibers
 * (emu.cpp): __syncthreads, __syncwarp and the warp shuffles/votes are real
 * rendezvous between those fibers, resolved by the scheduler.
 *
 * What it shows: wrong indices and masks (with -fsanitize=address every
 * device buffer is a host malloc, so an out-of-bounds device read or write is
 * an ASan report), wrong reductions, a barrier some threads never reach
 * (deadlock, reported with who waits where), __syncthreads at different call
 * sites, a shuffle whose mask names a lane that has exited or does not exist,
 * reads of shared memory or scratch never written (both start as all-ones
 * bytes: NaN as float or double, -1 as an integer), launch configurations the
 * GPU refuses (block and grid limits, __launch_bounds__, the 48 KiB shared
 * memory default and the per-kernel opt-in), and cuBLASLt misuse (cublaslt.cpp).
 *
 * Its limits: the threads of a block run one after another in a fixed order
 * (each until it waits at a barrier; even indices ascending then odd ones
 * descending, reversed in every other block; the blocks alike;
 * RG_CUDA_EMU_FLIP_ORDER=1 reverses them all), so it cannot show data races
 * or timing bugs beyond what those orders expose; no
 * memory model (no caching, every write is visible at once); floating point
 * is the host's (g++ contracts a*b+c into fma where it likes, as nvcc does,
 * but not at the same places; expf, tanhf, ... are glibc's, within a few ulp
 * of the device's); device memory is host memory (a host pointer passed to a
 * kernel goes unnoticed); everything is synchronous (streams are ordered
 * trivially); one device.
 */
#ifndef CUDA_EMU_H
#define CUDA_EMU_H

#ifndef __cplusplus
#error "cuda_emu.h is C++ (the .cu files are compiled as C++ by the emulator)"
#endif

#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmath>
#include <type_traits>
#include <utility>

/* ---- qualifiers ---- */
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __restrict__ __restrict
#define __align__(n) __attribute__((aligned(n)))
/* transform.py rewrites every __shared__ declaration; one left over is an error */
#define __shared__ __shared___is_rewritten_by_transform_py

/* ---- built-in types and variables ---- */
struct uint3 {
    unsigned int x, y, z;
};
struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
};
/* Set by the scheduler before it switches to a thread. */
extern uint3 threadIdx, blockIdx;
extern dim3 blockDim, gridDim;
static const int warpSize = 32;

/* ---- runtime types ---- */
typedef struct CUstream_st *cudaStream_t;
typedef struct CUevent_st *cudaEvent_t;
/* The values of the real enum, for the few errors the emulator raises. */
typedef enum cudaError {
    cudaSuccess = 0,
    cudaErrorInvalidValue = 1,
    cudaErrorMemoryAllocation = 2,
    cudaErrorInvalidConfiguration = 9,
    cudaErrorInvalidDevicePointer = 17,
    cudaErrorInvalidMemcpyDirection = 21,
    cudaErrorInvalidDeviceFunction = 98,
    cudaErrorNoDevice = 100,
    cudaErrorInvalidDevice = 101,
    cudaErrorLaunchOutOfResources = 701,
    cudaErrorLaunchFailure = 719,
} cudaError_t;
enum cudaMemcpyKind {
    cudaMemcpyHostToHost = 0,
    cudaMemcpyHostToDevice = 1,
    cudaMemcpyDeviceToHost = 2,
    cudaMemcpyDeviceToDevice = 3,
    cudaMemcpyDefault = 4,
};
enum cudaFuncAttribute {
    cudaFuncAttributeMaxDynamicSharedMemorySize = 8,
    cudaFuncAttributePreferredSharedMemoryCarveout = 9,
};
enum cudaDeviceAttr {
    cudaDevAttrMaxThreadsPerBlock = 1,
    cudaDevAttrMaxBlockDimX = 2,
    cudaDevAttrMaxGridDimX = 5,
    cudaDevAttrMaxGridDimY = 6,
    cudaDevAttrMaxSharedMemoryPerBlock = 8,
    cudaDevAttrWarpSize = 10,
    cudaDevAttrMultiProcessorCount = 16,
    cudaDevAttrComputeCapabilityMajor = 75,
    cudaDevAttrComputeCapabilityMinor = 76,
    cudaDevAttrMaxSharedMemoryPerBlockOptin = 97,
};

/* ---- runtime API (emu.cpp): synchronous, one device ---- */
cudaError_t cudaGetDeviceCount(int *count);
cudaError_t cudaGetDevice(int *device);
cudaError_t cudaSetDevice(int device);
cudaError_t cudaDeviceGetAttribute(int *value, cudaDeviceAttr attr, int device);
cudaError_t cudaDeviceSynchronize(void);
cudaError_t cudaGetLastError(void);
cudaError_t cudaPeekAtLastError(void);
const char *cudaGetErrorString(cudaError_t error);
const char *cudaGetErrorName(cudaError_t error);
cudaError_t cudaMalloc(void **ptr, size_t bytes);
template <class T> static inline cudaError_t cudaMalloc(T **ptr, size_t bytes)
{
    return cudaMalloc((void **)ptr, bytes);
}
cudaError_t cudaFree(void *ptr);
cudaError_t cudaMemcpy(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind);
cudaError_t cudaMemcpyAsync(void *dst, const void *src, size_t bytes, cudaMemcpyKind kind,
                            cudaStream_t stream = 0);
cudaError_t cudaMemset(void *dst, int value, size_t bytes);
cudaError_t cudaMemsetAsync(void *dst, int value, size_t bytes, cudaStream_t stream = 0);
cudaError_t cudaStreamCreate(cudaStream_t *stream);
cudaError_t cudaStreamDestroy(cudaStream_t stream);
cudaError_t cudaStreamSynchronize(cudaStream_t stream);
cudaError_t cudaFuncSetAttribute(const void *func, cudaFuncAttribute attr, int value);
template <class T> static inline cudaError_t cudaFuncSetAttribute(T *func, cudaFuncAttribute attr, int value)
{
    return cudaFuncSetAttribute((const void *)func, attr, value);
}

/* ---- emulator internals used by the rewritten sources ---- */
/* Whether [p, p + bytes) lies inside one cudaMalloc allocation. */
bool emu_is_device_range(const void *p, size_t bytes);
/* Reports a misuse (prefixed with the running kernel and thread) and aborts. */
[[noreturn]] void emu_fatal(const char *format, ...) __attribute__((format(printf, 1, 2)));

/* The block's dynamic shared memory (`extern __shared__ T name[];`). */
void *emu_dyn_smem(void);
/* A `__shared__` array: static storage, filled with all-ones bytes when the
 * first thread of each block reaches its declaration. */
void emu_shared_static(void *ptr, size_t bytes);

/* Barriers and warp collectives, resolved by the scheduler. */
/* `site` is "file:line" of the call: threads waiting at different sites is an error. */
void emu_syncthreads(const char *site);
int emu_syncthreads_count(const char *site, int predicate, int op);
enum { EMU_WARP_SYNC, EMU_WARP_SHFL, EMU_WARP_SHFL_UP, EMU_WARP_SHFL_DOWN, EMU_WARP_SHFL_XOR, EMU_WARP_VOTE };
/* Exchanges `value` (its `bytes` low bytes) with the lanes of `mask`; returns the lane's result. */
uint64_t emu_warp_op(unsigned mask, int op, uint64_t value, int bytes, int arg, int width);

struct emu_config {
    dim3 grid, block;
    size_t smem;
    cudaStream_t stream;
};
static inline emu_config emu_make_config(dim3 grid, dim3 block, size_t smem = 0, cudaStream_t stream = 0)
{
    emu_config c = {grid, block, smem, stream};
    return c;
}

/* Runs body() as every thread of every block of the launch (or records a
 * launch error, as the runtime would). */
struct emu_body {
    void (*run)(const void *closure);
    const void *closure;
};
void emu_run_kernel(const emu_config &cfg, const char *name, const void *func, int max_threads, emu_body body);

/* `kernel<<<cfg>>>(args)` is rewritten to
 * `emu_launcher(emu_make_config(cfg), "kernel", kernel, bound)(args)`: the
 * arguments convert to the kernel's parameter types at the call, are
 * evaluated once, and every thread gets its own copy of them. */
template <class... P> struct emu_kernel_launch {
    emu_config cfg;
    const char *name;
    void (*fn)(P...);
    int max_threads;
    void operator()(P... args) const
    {
        auto call = [=]() { fn(args...); };
        typedef decltype(call) closure_t;
        emu_body body = {[](const void *c) { (*(const closure_t *)c)(); }, &call};
        emu_run_kernel(cfg, name, (const void *)fn, max_threads, body);
    }
};
template <class... P>
static inline emu_kernel_launch<P...> emu_launcher(const emu_config &cfg, const char *name, void (*fn)(P...),
                                                   int max_threads)
{
    emu_kernel_launch<P...> l = {cfg, name, fn, max_threads};
    return l;
}

/* ---- device functions ---- */
#define EMU_STR2(x) #x
#define EMU_STR(x) EMU_STR2(x)
#define EMU_SITE __FILE__ ":" EMU_STR(__LINE__)
#define __syncthreads() emu_syncthreads(EMU_SITE)
static inline void __syncwarp(unsigned mask = 0xffffffffu)
{
    emu_warp_op(mask, EMU_WARP_SYNC, 0, 0, 0, 32);
}
#define __syncthreads_count(p) emu_syncthreads_count(EMU_SITE, (p) != 0, 0)
#define __syncthreads_and(p) emu_syncthreads_count(EMU_SITE, (p) != 0, 1)
#define __syncthreads_or(p) emu_syncthreads_count(EMU_SITE, (p) != 0, 2)
static inline void __threadfence(void) {}
static inline void __threadfence_block(void) {}

template <class T> static inline uint64_t emu_bits(T v)
{
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "shuffle of a type wider than 8 bytes");
    uint64_t b = 0;
    memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T> static inline T emu_from_bits(uint64_t b)
{
    T v;
    memcpy(&v, &b, sizeof(T));
    return v;
}
template <class T> static inline T __shfl_sync(unsigned mask, T v, int src, int width = 32)
{
    return emu_from_bits<T>(emu_warp_op(mask, EMU_WARP_SHFL, emu_bits(v), sizeof(T), src, width));
}
template <class T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    return emu_from_bits<T>(emu_warp_op(mask, EMU_WARP_SHFL_UP, emu_bits(v), sizeof(T), (int)delta, width));
}
template <class T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32)
{
    return emu_from_bits<T>(emu_warp_op(mask, EMU_WARP_SHFL_DOWN, emu_bits(v), sizeof(T), (int)delta, width));
}
template <class T> static inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32)
{
    return emu_from_bits<T>(emu_warp_op(mask, EMU_WARP_SHFL_XOR, emu_bits(v), sizeof(T), lane_mask, width));
}
static inline unsigned __ballot_sync(unsigned mask, int predicate)
{
    return (unsigned)emu_warp_op(mask, EMU_WARP_VOTE, predicate != 0, 4, 0, 32);
}
static inline int __any_sync(unsigned mask, int predicate)
{
    return __ballot_sync(mask, predicate) != 0;
}
static inline int __all_sync(unsigned mask, int predicate)
{
    return __ballot_sync(mask, predicate) == mask;
}
/* The lanes of the warp that have not exited (no notion of divergence here). */
unsigned __activemask(void);

/* Atomics: threads never run at the same time, so a plain read-modify-write is atomic. */
template <class T> static inline T atomicAdd(T *p, T v)
{
    T old = *p;
    *p = old + v;
    return old;
}
template <class T> static inline T atomicSub(T *p, T v)
{
    T old = *p;
    *p = old - v;
    return old;
}
template <class T> static inline T atomicMax(T *p, T v)
{
    T old = *p;
    *p = old > v ? old : v;
    return old;
}
template <class T> static inline T atomicMin(T *p, T v)
{
    T old = *p;
    *p = old < v ? old : v;
    return old;
}
template <class T> static inline T atomicExch(T *p, T v)
{
    T old = *p;
    *p = v;
    return old;
}
template <class T> static inline T atomicCAS(T *p, T compare, T v)
{
    T old = *p;
    if (old == compare)
        *p = v;
    return old;
}

/* Correctly rounded single operations that nvcc never fuses into an fma:
 * the operands of an add and the result of a multiply go through an empty
 * asm, which g++ cannot contract across. */
#if defined(__x86_64__) || defined(__i386__)
#define EMU_OPAQUE(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define EMU_OPAQUE(v) __asm__("" : "+w"(v))
#else
#define EMU_OPAQUE(v) __asm__("" : "+m"(v))
#endif
static inline float __fadd_rn(float a, float b) { EMU_OPAQUE(a); EMU_OPAQUE(b); float r = a + b; EMU_OPAQUE(r); return r; }
static inline float __fsub_rn(float a, float b) { EMU_OPAQUE(a); EMU_OPAQUE(b); float r = a - b; EMU_OPAQUE(r); return r; }
static inline float __fmul_rn(float a, float b) { float r = a * b; EMU_OPAQUE(r); return r; }
static inline float __fdiv_rn(float a, float b) { float r = a / b; EMU_OPAQUE(r); return r; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __frcp_rn(float a) { float r = 1.0f / a; EMU_OPAQUE(r); return r; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline double __dadd_rn(double a, double b) { EMU_OPAQUE(a); EMU_OPAQUE(b); double r = a + b; EMU_OPAQUE(r); return r; }
static inline double __dsub_rn(double a, double b) { EMU_OPAQUE(a); EMU_OPAQUE(b); double r = a - b; EMU_OPAQUE(r); return r; }
static inline double __dmul_rn(double a, double b) { double r = a * b; EMU_OPAQUE(r); return r; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
/* The fast approximate intrinsics: the accurate functions (the device's are within a few ulp). */
/* (macros: glibc declares functions of these names) */
#define __expf(x) expf(x)
#define __logf(x) logf(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __powf(x, y) powf(x, y)
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x < 0.0f ? 0.0f : x > 1.0f ? 1.0f : x; }
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline int __float_as_int(float x) { return emu_from_bits<int>(emu_bits(x)); }
static inline unsigned __float_as_uint(float x) { return emu_from_bits<unsigned>(emu_bits(x)); }
static inline float __int_as_float(int x) { return emu_from_bits<float>(emu_bits(x)); }
static inline float __uint_as_float(unsigned x) { return emu_from_bits<float>(emu_bits(x)); }
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
template <class T> static inline T __ldg(const T *p) { return *p; }

/* CUDA's min/max overloads (any mix of arithmetic types, the usual conversions). */
template <class A, class B> static inline typename std::common_type<A, B>::type min(A a, B b)
{
    typedef typename std::common_type<A, B>::type C;
    return (C)a < (C)b ? (C)a : (C)b;
}
template <class A, class B> static inline typename std::common_type<A, B>::type max(A a, B b)
{
    typedef typename std::common_type<A, B>::type C;
    return (C)a > (C)b ? (C)a : (C)b;
}

#endif /* CUDA_EMU_H */
