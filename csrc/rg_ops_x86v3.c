/*
 * rg_ops_x86v3.c - rg_ops.c once more, compiled for x86-64-v3 (AVX2, FMA,
 * F16C, BMI2). The rest of the core is built for the baseline x86-64, so one
 * build runs on any x86-64; rg_ops_cpu() hands out this copy's table when the
 * CPU has these instructions (rg_ops_cpu_isa).
 */
#if defined(__x86_64__) && defined(__GNUC__)
#pragma GCC target("arch=x86-64-v3")
#define RG_OPS_VARIANT x86v3
#define RG_OPS_H /* rg_ops.h declares the ops extern; this copy keeps them static */
#include "rg_ops.c"
#else
typedef int rg_ops_x86v3_not_built; /* ISO C wants a declaration in every file */
#endif
