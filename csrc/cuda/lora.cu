// lora.cu - the low-rank adapter (out[:, :OC] += scale * (inp @ a^T) @ b^T):
// four or five cuBLASLt products through matmul.cu's rgcu_gemm, exactly the
// products, scales and skips of the CPU's rg_lora_forward/backward. The
// adapter's output is a column slice of rows ldo wide: cuBLASLt layouts take
// a leading dimension, so out and dout are used in place with stride ldo.
// Scratch: none of its own (du is the caller's); rgcu_gemm uses slot
// RGCU_SCRATCH_CUBLASLT (0) for the cuBLASLt workspace.
#include "rgcu.h"

extern "C" void rgcu_lora_forward(float *out,       // (N, ldo): columns [0, OC) +=
                                  float *u,         // (N, R) inp @ a^T, saved for backward
                                  const float *inp, // (N, IC)
                                  const float *a,   // (R, IC) lora_A
                                  const float *b,   // (OC, R) lora_B
                                  float scale,      // alpha / R
                                  int N, int IC, int R, int OC, int ldo)
{
    // u (N, R) = inp (N, IC) @ a^T
    rgcu_gemm(0, 1, N, R, IC, 1.0f, inp, IC, a, IC, 0.0f, u, R, NULL, "lora_forward u");
    // out[:, :OC] (N, OC; stride ldo) += scale * u @ b^T
    rgcu_gemm(0, 1, N, OC, R, scale, u, R, b, R, 1.0f, out, ldo, NULL, "lora_forward out");
}

extern "C" void rgcu_lora_backward(float *dinp,       // (N, IC) += or NULL
                                   float *da,         // (R, IC) += or NULL
                                   float *db,         // (OC, R) += or NULL
                                   float *du,         // (N, R) scratch
                                   const float *dout, // (N, ldo): the gradient of columns [0, OC)
                                   const float *inp,  // (N, IC) as given to the forward
                                   const float *u,    // (N, R) saved by the forward
                                   const float *a,    // (R, IC)
                                   const float *b,    // (OC, R)
                                   float scale, int N, int IC, int R, int OC, int ldo)
{
    if (db != NULL) // (OC, R) += scale * dout^T (OC, N) @ u (N, R)
        rgcu_gemm(1, 0, OC, R, N, scale, dout, ldo, u, R, 1.0f, db, R, NULL, "lora_backward db");
    if (da == NULL && dinp == NULL)
        return; // du is needed by neither: not computed, as on the CPU
    // du (N, R) = scale * dout[:, :OC] (N, OC; stride ldo) @ b (OC, R)
    rgcu_gemm(0, 0, N, R, OC, scale, dout, ldo, b, R, 0.0f, du, R, NULL, "lora_backward du");
    if (da != NULL) // (R, IC) += du^T (R, N) @ inp (N, IC)
        rgcu_gemm(1, 0, R, IC, N, 1.0f, du, R, inp, IC, 1.0f, da, IC, NULL, "lora_backward da");
    if (dinp != NULL) // (N, IC) += du (N, R) @ a (R, IC)
        rgcu_gemm(0, 0, N, IC, R, 1.0f, du, R, a, IC, 1.0f, dinp, IC, NULL, "lora_backward dinp");
}
