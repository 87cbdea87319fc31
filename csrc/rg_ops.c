/*
 * rg_ops.c - layer operations of the transformer (see rg_ops.h).
 *
 * Matrix products (linear layers and, per head, attention) go to OpenBLAS,
 * made single-threaded and called from OpenMP threads, so one thread pool
 * serves the whole core. The rest is row-parallel OpenMP loops written so
 * the compiler can vectorise the inner channel loops (hence fast_expf).
 * Shapes of every pointer argument: rg_ops.h.
 */
#ifdef RG_OPS_VARIANT
/* Compiled again for a wider instruction set by rg_ops_<isa>.c: the ops stay
 * private to that copy and leave it only through its table. */
#define RG_OP static __attribute__((unused))
#else
#define RG_OP
#endif

#include "rg_ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "rg_backend.h"
#include "rg_gemm_rows.h"
#include "rg_rng.h"

/* exp(x) for the hot loops (softmax, cross-entropy, GELU, SiLU): a
 * Cody-Waite reduction and a degree-7 polynomial, relative error below 1e-7
 * on [-87, 88]. Written with integer selects only, so the compiler
 * vectorises it (libm's expf is a call; float compares would need
 * -fno-trapping-math). |x| is clamped to 104 (a NaN stays NaN): the result
 * saturates at about 1e-38 and 1.7e38 instead of 0 and infinity. */
/* x with |x| clamped to the float whose bits are limit_bits, the sign and a NaN kept;
 * on the bits, with integer selects, so that loops using it vectorise. */
static inline float clamp_magnitude(float x, uint32_t limit_bits)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof(bits));
    uint32_t mag = bits & 0x7fffffffu;
    const uint32_t limit = mag > 0x7f800000u ? mag : limit_bits;
    mag = mag < limit ? mag : limit;
    bits = (bits & 0x80000000u) | mag;
    memcpy(&x, &bits, sizeof(x));
    return x;
}

static inline float fast_expf(float x)
{
    x = clamp_magnitude(x, 0x42d00000u); /* 104.0f */
    const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
    float r = x - n * 0.693359375f; /* ln 2 split in a part exact in float ... */
    r = r - n * -2.12194440e-4f;    /* ... and the rest */
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t k = (int32_t)n;
    k = k < -126 ? -126 : k;
    k = k > 127 ? 127 : k;
    const int32_t scale_bits = (k + 127) << 23;
    float scale;
    memcpy(&scale, &scale_bits, sizeof(scale));
    return p * scale;
}

/* erf as x P(x^2) / Q(x^2) on [-4, 4] (beyond, erf is +-1 in float), with the
 * rational coefficients Eigen and XLA use: within 4.3e-7 of erf in absolute terms
 * (libm's erff: 5e-8), and branch-free, so GELU's loops vectorise; libm's scalar
 * erff was a tenth of a DistilBERT training step. */
static inline float fast_erff(float x)
{
    const float c = clamp_magnitude(x, 0x40800000u); /* 4.0f */
    const float z = c * c;
    float p = -2.72614225801306e-10f;
    p = p * z + 2.77068142495902e-08f;
    p = p * z - 2.10102402082508e-06f;
    p = p * z - 5.69250639462346e-05f;
    p = p * z - 7.34990630326855e-04f;
    p = p * z - 2.95459980854025e-03f;
    p = p * z - 1.60960333262415e-02f;
    float q = -1.45660718464996e-05f;
    q = q * z - 2.13374055278905e-04f;
    q = q * z - 1.68282697438203e-03f;
    q = q * z - 7.37332916720468e-03f;
    q = q * z - 1.42647390514189e-02f;
    return c * p / q;
}

/* tanh through exp(-2|u|): exact to a few 1e-8 in absolute terms. */
static inline float fast_tanhf(float u)
{
    const float e = fast_expf(-2.0f * fabsf(u));
    return copysignf((1.0f - e) / (1.0f + e), u);
}

/* ------------------------------------------------------------------------ */
/* dropout                                                                   */
/* ------------------------------------------------------------------------ */

RG_OP uint64_t rg_dropout_stream(uint64_t step_seed, uint64_t site_id)
{
    return rg_rng_mix(rg_rng_mix(step_seed) ^ rg_rng_mix(site_id + 0x5DEECE66Dull));
}

RG_OP void rg_dropout_apply(float *x, size_t n, size_t first, float p, uint64_t stream)
{
    if (p <= 0.0f)
        return;
    const float scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++)
        x[i] = rg_rng_keep(stream, first + i, p) ? x[i] * scale : 0.0f;
}

/* ------------------------------------------------------------------------ */
/* residual add                                                              */
/* ------------------------------------------------------------------------ */

RG_OP void rg_add_inplace(float *out, const float *a, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 65536)
    for (size_t i = 0; i < n; i++)
        out[i] += a[i];
}

/* ------------------------------------------------------------------------ */
/* linear layer                                                              */
/* ------------------------------------------------------------------------ */

/* All parallelism goes through OpenMP: OpenBLAS's own thread pool and
 * OpenMP's would spin against each other on the same cores, so OpenBLAS runs
 * single-threaded inside OpenMP threads. This OpenBLAS serves only the core
 * (numpy bundles its own), so the process-wide switch affects no one else. */
static void ensure_blas_single_threaded(void)
{
    static int done = 0;
    int seen;
#pragma omp atomic read
    seen = done;
    if (!seen) {
        scipy_openblas_set_num_threads(1);
#pragma omp atomic write
        done = 1;
    }
}

/* C (M, N) = op(A) @ op(B) + beta * C, as single-threaded OpenBLAS calls on
 * blocks of C's rows (or columns, when C is wide) spread over OpenMP threads. */
static void gemm_blocks_scaled(int trans_a, int trans_b, int M, int N, int K, float alpha,
                               const float *A, int lda, const float *B, int ldb, float beta, float *C,
                               int ldc)
{
    ensure_blas_single_threaded();
    const double flops = 2.0 * M * N * K;
    if (!trans_a && trans_b && M <= 2) {
        /* One or two rows times a (N, K) weight, as in decoding: sgemm would
         * pack the whole weight for each call; a matrix-vector product per row
         * reads it once, straight from memory. Threads split the weight's rows. */
#pragma omp parallel if (flops > 2e6)
        {
            const int nth = omp_get_num_threads(), th = omp_get_thread_num();
            const int lo = (int)((int64_t)N * th / nth), hi = (int)((int64_t)N * (th + 1) / nth);
            if (hi > lo)
                for (int m = 0; m < M; m++)
                    scipy_cblas_sgemv(CblasRowMajor, CblasNoTrans, hi - lo, K, alpha, B + (size_t)lo * ldb, ldb,
                                      A + (size_t)m * lda, 1, beta, C + (size_t)m * ldc + lo, 1);
        }
        return;
    }
    if (!trans_a && trans_b && M <= RG_GEMM_ROWS_MAX && rg_gemm_rows_supported()) {
        /* A few more rows (decoding a batch, a classifier's head rows): the
         * same reason, dot products straight from the weight (rg_gemm_rows.h) */
        rg_gemm_rows(M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    const enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    const enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    const int split_rows = M >= N;
    const int extent = split_rows ? M : N;
    /* Blocks of whole 16-row/column panels, several per thread and handed out
     * dynamically, so a thread slowed by another process does not hold the
     * rest at the barrier; at least 64 rows/columns each to amortise packing. */
    const int threads = flops > 2e6 ? omp_get_max_threads() : 1;
    const int64_t units = ((int64_t)extent + 15) / 16; /* int64: extent + 15 may not fit an int */
    int n_blocks = threads > 1 ? 4 * threads : 1;
    if (n_blocks > (units + 3) / 4)
        n_blocks = (int)((units + 3) / 4);
    if (n_blocks < 1)
        n_blocks = 1;
#pragma omp parallel for schedule(dynamic, 1) if (n_blocks > 1)
    for (int block = 0; block < n_blocks; block++) {
        const int64_t lo64 = units * block / n_blocks * 16, hi64 = units * (block + 1) / n_blocks * 16;
        const int lo = (int)lo64, hi = (int)(hi64 < extent ? hi64 : extent);
        if (hi <= lo)
            continue;
        if (split_rows) {
            const float *a = trans_a ? A + lo : A + (size_t)lo * lda;
            scipy_cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, N, K, alpha, a, lda, B, ldb, beta,
                              C + (size_t)lo * ldc, ldc);
        } else {
            const float *b = trans_b ? B + (size_t)lo * ldb : B + lo;
            scipy_cblas_sgemm(CblasRowMajor, ta, tb, M, hi - lo, K, alpha, A, lda, b, ldb, beta,
                              C + lo, ldc);
        }
    }
}

/* C = op(A) @ op(B) + beta * C (gemm_blocks_scaled with alpha 1). */
static void gemm_blocks(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc)
{
    gemm_blocks_scaled(trans_a, trans_b, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}

/* sums (OC,) += column sums of x (N, OC): rows in parallel, each thread into
 * its own partial row (contiguous, vectorised), then the partials added. */
static void column_sums_add(float *sums, const float *x, int N, int OC)
{
    const int n_threads = (int64_t)N * OC > 65536 ? omp_get_max_threads() : 1;
    float *partial = n_threads > 1 ? calloc((size_t)n_threads * OC, sizeof(float)) : NULL;
    if (partial == NULL) {
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++)
                sums[o] += x[(size_t)n * OC + o];
        return;
    }
#pragma omp parallel num_threads(n_threads)
    {
        float *mine = partial + (size_t)omp_get_thread_num() * OC;
#pragma omp for schedule(static)
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OC; o++)
                mine[o] += x[(size_t)n * OC + o];
    }
    for (int th = 0; th < n_threads; th++)
        for (int o = 0; o < OC; o++)
            sums[o] += partial[(size_t)th * OC + o];
    free(partial);
}

RG_OP void rg_matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IC, int OC)
{
    gemm_blocks(0, 1, N, OC, IC, inp, IC, weight, IC, 0.0f, out, OC);
    if (bias == NULL)
        return;
#pragma omp parallel for schedule(static) if ((int64_t)N * OC > 65536)
    for (int n = 0; n < N; n++) {
        float *row = out + (size_t)n * OC;
        for (int o = 0; o < OC; o++)
            row[o] += bias[o];
    }
}

RG_OP void rg_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IC, int OC)
{
    if (dinp != NULL) /* (N, IC) += (N, OC) @ (OC, IC) */
        gemm_blocks(0, 0, N, IC, OC, dout, OC, weight, IC, 1.0f, dinp, IC);
    if (dweight != NULL) /* (OC, IC) += (N, OC)^T @ (N, IC) */
        gemm_blocks(1, 0, OC, IC, N, dout, OC, inp, IC, 1.0f, dweight, IC);
    if (dbias != NULL)
        column_sums_add(dbias, dout, N, OC);
}

/* ------------------------------------------------------------------------ */
/* low-rank adapter (LoRA)                                                   */
/* ------------------------------------------------------------------------ */

RG_OP void rg_lora_forward(float *out, float *u, const float *inp, const float *a, const float *b,
                     float scale, int N, int IC, int R, int OC, int ldo)
{
    /* u (N, R) = inp (N, IC) @ a^T; out[:, :OC] (N, OC; stride ldo) += scale * u @ b^T */
    gemm_blocks_scaled(0, 1, N, R, IC, 1.0f, inp, IC, a, IC, 0.0f, u, R);
    gemm_blocks_scaled(0, 1, N, OC, R, scale, u, R, b, R, 1.0f, out, ldo);
}

RG_OP void rg_lora_backward(float *dinp, float *da, float *db, float *du, const float *dout,
                      const float *inp, const float *u, const float *a, const float *b,
                      float scale, int N, int IC, int R, int OC, int ldo)
{
    if (db != NULL) /* (OC, R) += scale * dout^T (OC, N) @ u (N, R) */
        gemm_blocks_scaled(1, 0, OC, R, N, scale, dout, ldo, u, R, 1.0f, db, R);
    if (da == NULL && dinp == NULL)
        return;
    /* du (N, R) = scale * dout (N, OC) @ b (OC, R) */
    gemm_blocks_scaled(0, 0, N, R, OC, scale, dout, ldo, b, R, 0.0f, du, R);
    if (da != NULL) /* (R, IC) += du^T (R, N) @ inp (N, IC) */
        gemm_blocks_scaled(1, 0, R, IC, N, 1.0f, du, R, inp, IC, 1.0f, da, IC);
    if (dinp != NULL) /* (N, IC) += du (N, R) @ a (R, IC) */
        gemm_blocks_scaled(0, 0, N, IC, R, 1.0f, du, R, a, IC, 1.0f, dinp, IC);
}

/* ------------------------------------------------------------------------ */
/* normalisation                                                             */
/* ------------------------------------------------------------------------ */

enum { NORM_GROUP = 4 };

/* x[r] = row n0 + r of inp (N, C) for the group of NORM_GROUP rows from n0; a short
 * last group repeats its first row, computed and not written. Returns the rows it has. */
static inline int norm_group(const float *x[NORM_GROUP], const float *inp, int n0, int N, int C)
{
    const int rows = N - n0 < NORM_GROUP ? N - n0 : NORM_GROUP;
    for (int r = 0; r < NORM_GROUP; r++)
        x[r] = inp + (size_t)(n0 + (r < rows ? r : 0)) * C;
    return rows;
}

RG_OP void rg_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C, float eps)
{
    /* rows in groups of NORM_GROUP, their sums' chains advancing together (each
     * row's sums are added in the order a lone row's would be) */
#pragma omp parallel for schedule(static) if ((int64_t)N * C > 32768)
    for (int n0 = 0; n0 < N; n0 += NORM_GROUP) {
        const float *x[NORM_GROUP];
        const int rows = norm_group(x, inp, n0, N, C);
        float m[NORM_GROUP] = {0.0f}, var[NORM_GROUP] = {0.0f};
        for (int c = 0; c < C; c++)
            for (int r = 0; r < NORM_GROUP; r++)
                m[r] += x[r][c];
        for (int r = 0; r < NORM_GROUP; r++)
            m[r] /= (float)C;
        for (int c = 0; c < C; c++)
            for (int r = 0; r < NORM_GROUP; r++) {
                float d = x[r][c] - m[r];
                var[r] += d * d;
            }
        for (int r = 0; r < rows; r++) {
            const float v = var[r] / (float)C;
            const float s = 1.0f / sqrtf(v + eps);
            float *y = out + (size_t)(n0 + r) * C;
            for (int c = 0; c < C; c++)
                y[c] = (x[r][c] - m[r]) * s * weight[c] + bias[c];
            mean[n0 + r] = m[r];
            rstd[n0 + r] = s;
        }
    }
}

/* The weight/bias gradients are column sums over rows: each thread sums its
 * rows into a private slice of `partial`, then the slices are added up. */
static float *column_partials(int C, int per_thread, int *n_threads)
{
    *n_threads = omp_get_max_threads();
    return calloc((size_t)*n_threads * per_thread * C, sizeof(float));
}

RG_OP void rg_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C)
{
    int n_threads = 1;
    float *partial = (dweight || dbias) ? column_partials(C, 2, &n_threads) : NULL;
    const int serial = (dweight || dbias) && partial == NULL; /* no memory: one thread does all */
#pragma omp parallel for schedule(static) if ((int64_t)N * C > 32768 && !serial)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        const float *dy = dout + (size_t)n * C;
        const float m = mean[n], s = rstd[n];
        if (dinp != NULL) {
            float mean_g = 0.0f, mean_gx = 0.0f; /* g = dy * weight; x normalised */
            for (int c = 0; c < C; c++) {
                float g = dy[c] * weight[c];
                mean_g += g;
                mean_gx += g * (x[c] - m) * s;
            }
            mean_g /= (float)C;
            mean_gx /= (float)C;
            float *dx = dinp + (size_t)n * C;
            for (int c = 0; c < C; c++)
                dx[c] += s * (dy[c] * weight[c] - mean_g - (x[c] - m) * s * mean_gx);
        }
        if (partial != NULL || serial) {
            float *dw = serial ? dweight : partial + (size_t)omp_get_thread_num() * 2 * C;
            float *db = serial ? dbias : dw + C;
            for (int c = 0; c < C; c++) {
                if (dw)
                    dw[c] += dy[c] * (x[c] - m) * s;
                if (db)
                    db[c] += dy[c];
            }
        }
    }
    if (partial != NULL) {
        for (int th = 0; th < n_threads; th++) {
            const float *dw = partial + (size_t)th * 2 * C;
            for (int c = 0; c < C; c++) {
                if (dweight)
                    dweight[c] += dw[c];
                if (dbias)
                    dbias[c] += dw[C + c];
            }
        }
        free(partial);
    }
}

RG_OP void rg_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N,
                        int C, float eps)
{
    /* as rg_layernorm_forward: groups of rows, each row's sum in a lone row's order */
#pragma omp parallel for schedule(static) if ((int64_t)N * C > 32768)
    for (int n0 = 0; n0 < N; n0 += NORM_GROUP) {
        const float *x[NORM_GROUP];
        const int rows = norm_group(x, inp, n0, N, C);
        float ss[NORM_GROUP] = {0.0f};
        for (int c = 0; c < C; c++)
            for (int r = 0; r < NORM_GROUP; r++)
                ss[r] += x[r][c] * x[r][c];
        for (int r = 0; r < rows; r++) {
            const float s = 1.0f / sqrtf(ss[r] / (float)C + eps);
            float *y = out + (size_t)(n0 + r) * C;
            for (int c = 0; c < C; c++)
                y[c] = x[r][c] * s * weight[c];
            rstd[n0 + r] = s;
        }
    }
}

RG_OP void rg_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                         const float *weight, const float *rstd, int N, int C)
{
    int n_threads = 1;
    float *partial = dweight ? column_partials(C, 1, &n_threads) : NULL;
    const int serial = dweight && partial == NULL;
#pragma omp parallel for schedule(static) if ((int64_t)N * C > 32768 && !serial)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        const float *dy = dout + (size_t)n * C;
        const float s = rstd[n];
        if (dinp != NULL) {
            float sum_gx = 0.0f;
            for (int c = 0; c < C; c++)
                sum_gx += dy[c] * weight[c] * x[c];
            const float coef = sum_gx * s * s * s / (float)C;
            float *dx = dinp + (size_t)n * C;
            for (int c = 0; c < C; c++)
                dx[c] += dy[c] * weight[c] * s - x[c] * coef;
        }
        if (partial != NULL || serial) {
            float *dw = serial ? dweight : partial + (size_t)omp_get_thread_num() * C;
            for (int c = 0; c < C; c++)
                dw[c] += dy[c] * x[c] * s;
        }
    }
    if (partial != NULL) {
        for (int th = 0; th < n_threads; th++)
            for (int c = 0; c < C; c++)
                dweight[c] += partial[(size_t)th * C + c];
        free(partial);
    }
}

/* ------------------------------------------------------------------------ */
/* activations                                                               */
/* ------------------------------------------------------------------------ */

#define RG_SQRT_2_OVER_PI 0.7978845608028654f
#define RG_INV_SQRT_2 0.7071067811865476f
#define RG_INV_SQRT_2PI 0.3989422804014327f

RG_OP void rg_gelu_tanh_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + fast_tanhf(RG_SQRT_2_OVER_PI * (x + 0.044715f * x * x * x)));
    }
}

RG_OP void rg_gelu_tanh_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = RG_SQRT_2_OVER_PI * (x + 0.044715f * x * x * x);
        float th = fast_tanhf(u);
        float du = RG_SQRT_2_OVER_PI * (1.0f + 3.0f * 0.044715f * x * x);
        float grad = 0.5f * (1.0f + th) + 0.5f * x * (1.0f - th * th) * du;
        dinp[i] += grad * dout[i];
    }
}

RG_OP void rg_gelu_erf_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + fast_erff(x * RG_INV_SQRT_2));
    }
}

RG_OP void rg_gelu_erf_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float grad = 0.5f * (1.0f + fast_erff(x * RG_INV_SQRT_2)) + x * RG_INV_SQRT_2PI * fast_expf(-0.5f * x * x);
        dinp[i] += grad * dout[i];
    }
}

RG_OP void rg_swiglu_forward(float *out, const float *inp, int N, int F)
{
#pragma omp parallel for schedule(static) if ((int64_t)N * F > 16384)
    for (int n = 0; n < N; n++) {
        const float *gate = inp + (size_t)n * 2 * F;
        const float *up = gate + F;
        float *y = out + (size_t)n * F;
        for (int f = 0; f < F; f++) {
            float g = gate[f];
            y[f] = g / (1.0f + fast_expf(-g)) * up[f];
        }
    }
}

RG_OP void rg_swiglu_backward(float *dinp, const float *inp, const float *dout, int N, int F)
{
#pragma omp parallel for schedule(static) if ((int64_t)N * F > 16384)
    for (int n = 0; n < N; n++) {
        const float *gate = inp + (size_t)n * 2 * F;
        const float *up = gate + F;
        const float *dy = dout + (size_t)n * F;
        float *dgate = dinp + (size_t)n * 2 * F;
        float *dup = dgate + F;
        for (int f = 0; f < F; f++) {
            float g = gate[f];
            float sig = 1.0f / (1.0f + fast_expf(-g));
            float silu = g * sig;
            dup[f] += dy[f] * silu;
            dgate[f] += dy[f] * up[f] * sig * (1.0f + g * (1.0f - sig));
        }
    }
}

RG_OP void rg_relu_forward(float *out, const float *inp, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

RG_OP void rg_relu_backward(float *dinp, const float *out, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

RG_OP void rg_tanh_forward(float *out, const float *inp, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = tanhf(inp[i]);
}

RG_OP void rg_tanh_backward(float *dinp, const float *out, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dinp[i] += (1.0f - out[i] * out[i]) * dout[i];
}

/* ------------------------------------------------------------------------ */
/* embeddings                                                                */
/* ------------------------------------------------------------------------ */

RG_OP void rg_embedding_forward(float *out, const int32_t *tokens, const int32_t *positions,
                          const int32_t *types, const float *wte, const float *wpe,
                          const float *wtt, int N, int C)
{
#pragma omp parallel for schedule(static) if ((int64_t)N * C > 32768)
    for (int n = 0; n < N; n++) {
        float *y = out + (size_t)n * C;
        const float *te = wte + (size_t)tokens[n] * C;
        for (int c = 0; c < C; c++)
            y[c] = te[c];
        if (positions != NULL && wpe != NULL) {
            const float *pe = wpe + (size_t)positions[n] * C;
            for (int c = 0; c < C; c++)
                y[c] += pe[c];
        }
        if (types != NULL && wtt != NULL) {
            const float *ty = wtt + (size_t)types[n] * C;
            for (int c = 0; c < C; c++)
                y[c] += ty[c];
        }
    }
}

/* Rows that share a token id add into the same table row, so the parallel
 * split is over channel blocks, never over rows. */
RG_OP void rg_embedding_backward(float *dwte, float *dwpe, float *dwtt, const float *dout,
                           const int32_t *tokens, const int32_t *positions, const int32_t *types,
                           int N, int C)
{
    const int block = 64;
    const int n_blocks = (C + block - 1) / block;
#pragma omp parallel for schedule(static) if ((int64_t)N * C > 32768)
    for (int bi = 0; bi < n_blocks; bi++) {
        int c0 = bi * block, c1 = c0 + block < C ? c0 + block : C;
        for (int n = 0; n < N; n++) {
            const float *dy = dout + (size_t)n * C;
            if (dwte != NULL) {
                float *d = dwte + (size_t)tokens[n] * C;
                for (int c = c0; c < c1; c++)
                    d[c] += dy[c];
            }
            if (dwpe != NULL && positions != NULL) {
                float *d = dwpe + (size_t)positions[n] * C;
                for (int c = c0; c < c1; c++)
                    d[c] += dy[c];
            }
            if (dwtt != NULL && types != NULL) {
                float *d = dwtt + (size_t)types[n] * C;
                for (int c = c0; c < c1; c++)
                    d[c] += dy[c];
            }
        }
    }
}

/* ------------------------------------------------------------------------ */
/* rotary position embedding                                                 */
/* ------------------------------------------------------------------------ */

/* Rotates the HS values of one head by +angle (direction 1) or -angle (-1);
 * pair i couples element i with element i + HS/2. */
/* Rotates every q and k head of one row: pairs (i, i + HS/2) by position *
 * theta^(-2i/HS). The angles' cosines and sines are taken once per row (64 at
 * a time) and shared by its heads: libm's pow and sincos were a tenth of a
 * Llama training step when each head took its own. */
static void rope_rotate_row(float *row, int n_heads, int position, int HS, float theta, float direction)
{
    enum { CHUNK = 64 };
    const int half = HS / 2;
    float cs[CHUNK], sn[CHUNK];
    for (int i0 = 0; i0 < half; i0 += CHUNK) {
        const int count = half - i0 < CHUNK ? half - i0 : CHUNK;
        for (int c = 0; c < count; c++) {
            double inv_freq = pow((double)theta, -2.0 * (i0 + c) / (double)HS);
            double angle = (double)position * inv_freq;
            cs[c] = (float)cos(angle);
            sn[c] = direction * (float)sin(angle);
        }
        for (int h = 0; h < n_heads; h++) {
            float *head = row + (size_t)h * HS + i0;
            for (int c = 0; c < count; c++) {
                float a = head[c], b = head[c + half];
                head[c] = a * cs[c] - b * sn[c];
                head[c + half] = b * cs[c] + a * sn[c];
            }
        }
    }
}

static void rope_apply(float *qkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                       float theta, float direction)
{
    const size_t row = ((size_t)NH + 2 * (size_t)NKV) * (size_t)HS;
#pragma omp parallel for schedule(static) if ((int64_t)N * row > 16384)
    for (int n = 0; n < N; n++) /* q heads then k heads: the first NH + NKV of the row */
        rope_rotate_row(qkv + (size_t)n * row, NH + NKV, positions[n], HS, theta, direction);
}

RG_OP void rg_rope_forward(float *qkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                     float theta)
{
    rope_apply(qkv, positions, N, NH, NKV, HS, theta, 1.0f);
}

RG_OP void rg_rope_backward(float *dqkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                      float theta)
{
    /* A rotation's transpose is the rotation by the opposite angle. */
    rope_apply(dqkv, positions, N, NH, NKV, HS, theta, -1.0f);
}

/* ------------------------------------------------------------------------ */
/* attention                                                                 */
/* ------------------------------------------------------------------------ */

/* A float's bits b as an int32 that orders as the float does (NaN aside): negative
 * floats' magnitude bits flipped. The map is its own inverse. Integer maxima vectorise
 * where float compares, which may trap, do not. */
static inline int32_t order_key_flip(int32_t b)
{
    return b ^ (int32_t)((uint32_t)(b >> 31) >> 1);
}

static inline int32_t float_order_key(float x)
{
    int32_t b;
    memcpy(&b, &x, sizeof(b));
    return order_key_flip(b);
}

/* The largest of s[0..n) whose key_mask is not 0 (all when key_mask is NULL); -inf
 * when there is none. The same value the scalar loop finds, zeros' signs aside. */
static float visible_max(const float *s, const int32_t *key_mask, int n)
{
    const int32_t lowest = float_order_key(-INFINITY);
    int32_t best = lowest;
    if (key_mask == NULL) {
        for (int j = 0; j < n; j++) {
            const int32_t key = float_order_key(s[j]);
            best = key > best ? key : best;
        }
    } else {
        for (int j = 0; j < n; j++) {
            const int32_t key = key_mask[j] != 0 ? float_order_key(s[j]) : lowest;
            best = key > best ? key : best;
        }
    }
    const int32_t bits = order_key_flip(best);
    float out;
    memcpy(&out, &bits, sizeof(out));
    return out;
}

/* sums[r] = s[r][0] + s[r][1] + ... + s[r][n[r] - 1], added left to right as
 * a lone loop would (the same float), for up to ROW_GROUP rows: four rows'
 * chains advance together, since a lone row's sum waits on each add. */
enum { ROW_GROUP = 4 };

static void ordered_row_sums(float *sums, float *const *s, const int *n, int rows)
{
    int common = 0;
    float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
    if (rows == ROW_GROUP) {
        common = n[0];
        for (int r = 1; r < ROW_GROUP; r++)
            common = n[r] < common ? n[r] : common;
        const float *s0 = s[0], *s1 = s[1], *s2 = s[2], *s3 = s[3];
        for (int j = 0; j < common; j++) {
            a0 += s0[j];
            a1 += s1[j];
            a2 += s2[j];
            a3 += s3[j];
        }
    }
    const float started[ROW_GROUP] = {a0, a1, a2, a3};
    for (int r = 0; r < rows; r++) {
        float sum = started[r];
        for (int j = common; j < n[r]; j++)
            sum += s[r][j];
        sums[r] = sum;
    }
}

/* x[j] = exp(x[j] - max_score) for the visible keys j < n_keys, 0 for the masked ones:
 * a softmax row's numerators, the same in softmax_rows and softmax_again. */
static inline void softmax_numerators(float *x, const int32_t *key_mask, int n_keys, float max_score)
{
    for (int j = 0; j < n_keys; j++)
        x[j] = fast_expf(x[j] - max_score);
    if (key_mask != NULL)
        for (int j = 0; j < n_keys; j++)
            x[j] = key_mask[j] != 0 ? x[j] : 0.0f;
}

/* The row x (n,) from its numerators: the first n_keys scaled by inv (1/sum), the rest
 * 0; all of it 0 when inv is 0 (no visible key). */
static inline void softmax_finish(float *x, int n_keys, int n, float inv)
{
    if (inv == 0.0f) {
        memset(x, 0, (size_t)n * sizeof(float));
        return;
    }
    for (int j = 0; j < n_keys; j++)
        x[j] *= inv;
    for (int j = n_keys; j < n; j++)
        x[j] = 0.0f;
}

/* In place on rows r < rows (<= ROW_GROUP) of scores, row r at s + r * n:
 * softmax over its visible keys (key_mask[j] != 0 or no mask, j < n_keys[r]),
 * exactly 0 elsewhere and on the whole row when no key is visible. stats
 * (rows, 2), when not NULL, receives what softmax_again needs to make the same
 * rows again: each row's maximum score and 1/sum (0 when no key is visible). */
static void softmax_rows(float *s, int rows, const int32_t *key_mask, const int *n_keys, int n, float *stats)
{
    float *row[ROW_GROUP], max_score[ROW_GROUP], sum[ROW_GROUP];
    int keys[ROW_GROUP];
    for (int r = 0; r < rows; r++) {
        row[r] = s + (size_t)r * n;
        max_score[r] = visible_max(row[r], key_mask, n_keys[r]);
        keys[r] = max_score[r] == -INFINITY ? 0 : n_keys[r]; /* nothing visible: nothing to add */
        softmax_numerators(row[r], key_mask, keys[r], max_score[r]);
    }
    ordered_row_sums(sum, row, keys, rows);
    for (int r = 0; r < rows; r++) {
        const float inv = keys[r] == 0 ? 0.0f : 1.0f / sum[r];
        softmax_finish(row[r], keys[r], n, inv);
        if (stats != NULL) {
            stats[RG_ATTENTION_ROW_STATS * r] = keys[r] == 0 ? 0.0f : max_score[r];
            stats[RG_ATTENTION_ROW_STATS * r + 1] = inv;
        }
    }
}

/* softmax_rows' result again from the same scores and its stats, bit for bit
 * (the same numerators and scale), without the passes for max and sum. */
static void softmax_again(float *s, const int32_t *key_mask, int n_keys, int n, const float *stats)
{
    const float max_score = stats[0], inv = stats[1];
    if (inv != 0.0f)
        softmax_numerators(s, key_mask, n_keys, max_score);
    softmax_finish(s, n_keys, n, inv);
}

/* One query of the cached path against n_keys keys: probs (n_keys,) is
 * scratch; out (HS,) = softmax-weighted sum of the visible values. */
static void attention_row(float *out, float *probs, const float *q, const float *k0,
                          size_t k_stride, const float *v0, size_t v_stride,
                          const int32_t *key_mask, int n_keys, int HS, float scale)
{
    for (int j = 0; j < n_keys; j++) {
        const float *k = k0 + (size_t)j * k_stride;
        float dot = 0.0f;
        for (int i = 0; i < HS; i++)
            dot += q[i] * k[i];
        probs[j] = dot * scale;
    }
    softmax_rows(probs, 1, key_mask, &n_keys, n_keys, NULL);
    for (int i = 0; i < HS; i++)
        out[i] = 0.0f;
    for (int j = 0; j < n_keys; j++) {
        if (probs[j] == 0.0f)
            continue;
        const float *v = v0 + (size_t)j * v_stride;
        for (int i = 0; i < HS; i++)
            out[i] += probs[j] * v[i];
    }
}

/* dst (T, T) = src with attention dropout applied (mask of head row block
 * `drop0`), the same mask in forward and backward. */
static void attention_dropout_copy(float *dst, const float *src, int T, float attn_p,
                                   uint64_t stream, uint64_t drop0)
{
    const float keep_scale = 1.0f / (1.0f - attn_p);
    for (size_t i = 0; i < (size_t)T * T; i++)
        dst[i] = src[i] != 0.0f && rg_rng_keep(stream, drop0 + i, attn_p) ? src[i] * keep_scale : 0.0f;
}

/* scores (T, T) = Q K^T / sqrt(HS) of query head h in batch row `base`, one
 * single-threaded OpenBLAS product. */
static void attention_scores(float *scores, const float *base, int h, int g, int T, int NH, int HS, int row,
                             float scale)
{
    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, scale, base + (size_t)h * HS, row,
                      base + (size_t)(NH + g) * HS, row, 0.0f, scores, T);
}

/* Per (batch, head): scores = Q K^T / sqrt(HS) and out = dropout(P) V as
 * single-threaded OpenBLAS products (gemm_blocks made OpenBLAS
 * single-threaded; the heads are spread over the OpenMP threads). P lives in
 * a (T, T) buffer per thread; `att` keeps each row's softmax stats for the
 * backward, which makes P again from them. */
RG_OP void rg_attention_forward(float *out, float *att, const float *qkv, const int32_t *key_mask,
                          int B, int T, int NH, int NKV, int HS, int causal, float attn_p,
                          uint64_t stream)
{
    /* a BLAS leading dimension, so an int; rg_model bounds it by RG_MODEL_MAX_DIM */
    const int row = (int)(((int64_t)NH + 2 * (int64_t)NKV) * HS);
    const int group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HS);
    ensure_blas_single_threaded();
#pragma omp parallel
    {
        float *scores = malloc((size_t)T * T * sizeof(float));
        float *dropped = attn_p > 0.0f ? malloc((size_t)T * T * sizeof(float)) : NULL;
        const int ok = scores != NULL && (attn_p <= 0.0f || dropped != NULL);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < NH; h++) {
                const float *base = qkv + (size_t)b * T * row;
                float *y = out + (size_t)b * T * NH * HS + (size_t)h * HS;
                if (!ok) { /* out of memory: no output rather than a crash */
                    for (int t = 0; t < T; t++)
                        memset(y + (size_t)t * NH * HS, 0, (size_t)HS * sizeof(float));
                    continue;
                }
                const int32_t *mask = key_mask ? key_mask + (size_t)b * T : NULL;
                float *stats = att ? att + ((size_t)b * NH + h) * T * RG_ATTENTION_ROW_STATS : NULL;
                attention_scores(scores, base, h, h / group, T, NH, HS, row, scale);
                for (int t0 = 0; t0 < T; t0 += ROW_GROUP) {
                    const int rows = T - t0 < ROW_GROUP ? T - t0 : ROW_GROUP;
                    int n_keys[ROW_GROUP];
                    for (int r = 0; r < rows; r++)
                        n_keys[r] = causal ? t0 + r + 1 : T;
                    softmax_rows(scores + (size_t)t0 * T, rows, mask, n_keys, T,
                                 stats ? stats + (size_t)t0 * RG_ATTENTION_ROW_STATS : NULL);
                }
                const float *probs = scores;
                if (attn_p > 0.0f) {
                    attention_dropout_copy(dropped, scores, T, attn_p, stream, ((uint64_t)b * NH + h) * T * T);
                    probs = dropped;
                }
                scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, 1.0f, probs, T,
                                  base + (size_t)(NH + NKV + h / group) * HS, row, 0.0f, y, NH * HS);
            }
        }
        free(scores);
        free(dropped);
    }
}

/* Parallel over (batch, key/value head) so the heads of one group, which all
 * add into the same dk and dv, stay on one thread. Each head's P is made
 * again from q, k and the forward's row stats. */
RG_OP void rg_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                           const int32_t *key_mask, int B, int T, int NH, int NKV, int HS, int causal,
                           float attn_p, uint64_t stream)
{
    const int row = (int)(((int64_t)NH + 2 * (int64_t)NKV) * HS); /* BLAS leading dimension */
    const int group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HS);
    const float keep_scale = attn_p > 0.0f ? 1.0f / (1.0f - attn_p) : 1.0f;
    ensure_blas_single_threaded();
#pragma omp parallel
    {
        float *probs = malloc((size_t)T * T * sizeof(float));
        float *dprobs = malloc((size_t)T * T * sizeof(float));
        float *dropped = attn_p > 0.0f ? malloc((size_t)T * T * sizeof(float)) : NULL;
        const int ok = probs != NULL && dprobs != NULL && (attn_p <= 0.0f || dropped != NULL);
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            for (int g = 0; g < NKV; g++) {
                if (!ok)
                    continue; /* out of memory: leaves the gradient untouched */
                const float *base = qkv + (size_t)b * T * row;
                float *dbase = dqkv + (size_t)b * T * row;
                const float *k = base + (size_t)(NH + g) * HS, *v = base + (size_t)(NH + NKV + g) * HS;
                float *dk = dbase + (size_t)(NH + g) * HS, *dv = dbase + (size_t)(NH + NKV + g) * HS;
                const int32_t *mask = key_mask ? key_mask + (size_t)b * T : NULL;
                for (int h = g * group; h < (g + 1) * group; h++) {
                    const float *stats = att + ((size_t)b * NH + h) * T * RG_ATTENTION_ROW_STATS;
                    attention_scores(probs, base, h, g, T, NH, HS, row, scale);
                    for (int t = 0; t < T; t++)
                        softmax_again(probs + (size_t)t * T, mask, causal ? t + 1 : T, T,
                                      stats + (size_t)t * RG_ATTENTION_ROW_STATS);
                    const float *dy = dout + (size_t)b * T * NH * HS + (size_t)h * HS;
                    const uint64_t drop0 = ((uint64_t)b * NH + h) * T * T;
                    const float *used = probs; /* the probabilities out was made from */
                    if (attn_p > 0.0f) {
                        attention_dropout_copy(dropped, probs, T, attn_p, stream, drop0);
                        used = dropped;
                    }
                    /* d(used) = dy V^T ; dv += used^T dy */
                    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, T, T, HS, 1.0f, dy, NH * HS,
                                      v, row, 0.0f, dprobs, T);
                    scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, T, 1.0f, used, T, dy,
                                      NH * HS, 1.0f, dv, row);
                    /* through dropout and softmax, row by row: ds = p * (dp - sum(p * dp)) * scale */
                    for (int t = 0; t < T; t++) {
                        const float *p = probs + (size_t)t * T;
                        float *dp = dprobs + (size_t)t * T;
                        if (attn_p > 0.0f)
                            for (int j = 0; j < T; j++)
                                dp[j] = rg_rng_keep(stream, drop0 + (uint64_t)t * T + j, attn_p) ? dp[j] * keep_scale : 0.0f;
                        float dot = 0.0f;
                        for (int j = 0; j < T; j++)
                            dot += p[j] * dp[j];
                        for (int j = 0; j < T; j++)
                            dp[j] = p[j] * (dp[j] - dot) * scale;
                    }
                    /* dq += ds K ; dk += ds^T Q */
                    scipy_cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, HS, T, 1.0f, dprobs, T,
                                      k, row, 1.0f, dbase + (size_t)h * HS, row);
                    scipy_cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, T, HS, T, 1.0f, dprobs, T,
                                      base + (size_t)h * HS, row, 1.0f, dk, row);
                }
            }
        }
        free(probs);
        free(dprobs);
        free(dropped);
    }
}

RG_OP void rg_attention_cached_forward(float *out, const float *qkv, const float *k_cache,
                                 const float *v_cache, const int32_t *key_mask, int B, int Tn,
                                 int S, int start, int NH, int NKV, int HS)
{
    const size_t row = ((size_t)NH + 2 * (size_t)NKV) * (size_t)HS;
    const int group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel
    {
        float *probs = malloc((size_t)S * sizeof(float));
        /* the query heads of one key/value head in one task when there are
         * enough tasks: its cached keys and values come from memory once */
        const int per_task = B * NKV >= 4 * omp_get_num_threads() ? group : 1, tasks_per_b = NH / per_task;
#pragma omp for schedule(dynamic, 1)
        for (int task = 0; task < B * tasks_per_b; task++) {
            const int b = task / tasks_per_b, h0 = (task % tasks_per_b) * per_task, g = h0 / group;
            if (probs == NULL)
                continue;
            const float *k0 = k_cache + ((size_t)b * NKV + g) * S * HS;
            const float *v0 = v_cache + ((size_t)b * NKV + g) * S * HS;
            for (int t = 0; t < Tn; t++)
                for (int h = h0; h < h0 + per_task; h++)
                    attention_row(out + ((size_t)b * Tn + t) * NH * HS + (size_t)h * HS, probs,
                                  qkv + ((size_t)b * Tn + t) * row + (size_t)h * HS, k0, HS, v0, HS,
                                  key_mask + (size_t)b * S, start + t + 1, HS, scale);
        }
        free(probs);
    }
}

/* ------------------------------------------------------------------------ */
/* softmax cross-entropy                                                     */
/* ------------------------------------------------------------------------ */

/* The largest of x (V,): CE_LANES running maxima, so that the loop vectorises (with one,
 * each step waits on the last); the maximum is the same whatever the order. */
static float row_max(const float *x, int V)
{
    enum { CE_LANES = 16 };
    float lane[CE_LANES];
    for (int l = 0; l < CE_LANES; l++)
        lane[l] = -INFINITY;
    int v = 0;
    for (; v + CE_LANES <= V; v += CE_LANES)
        for (int l = 0; l < CE_LANES; l++)
            lane[l] = x[v + l] > lane[l] ? x[v + l] : lane[l];
    float m = -INFINITY;
    for (int l = 0; l < CE_LANES; l++)
        m = lane[l] > m ? lane[l] : m;
    for (; v < V; v++)
        m = x[v] > m ? x[v] : m;
    return m;
}

RG_OP double rg_crossentropy_forward(float *lse, const float *logits, const int32_t *targets, int N,
                               int V, long *count)
{
    /* A row's sum of exponentials goes in a fixed order (float partial sums over 512
     * logits, added in double): its rounding is part of every loss and gradient. Each add
     * waits on the one before, so CE_ROWS rows are summed side by side, their chains
     * independent; the exponentials are taken CE_EXPS at a time per row (a 256 x 50257
     * chunk: 8.6 ms with one row at a time and one running maximum, 5.1 ms so; 2 threads). */
    enum { CE_ROWS = 8, CE_EXPS = 16 };
#pragma omp parallel for schedule(static)
    for (int n0 = 0; n0 < N; n0 += CE_ROWS) {
        const int rows = N - n0 < CE_ROWS ? N - n0 : CE_ROWS;
        const float *x[CE_ROWS];
        float m[CE_ROWS];
        double sum[CE_ROWS];
        for (int r = 0; r < CE_ROWS; r++) { /* past the last row: row n0 again, discarded */
            x[r] = logits + (size_t)(n0 + (r < rows ? r : 0)) * V;
            m[r] = row_max(x[r], V);
            sum[r] = 0.0;
        }
        for (int v0 = 0; v0 < V; v0 += 512) {
            const int v1 = v0 + 512 < V ? v0 + 512 : V;
            float part[CE_ROWS] = {0.0f};
            int v = v0;
            for (; v + CE_EXPS <= v1; v += CE_EXPS) {
                float e[CE_ROWS][CE_EXPS];
                for (int r = 0; r < CE_ROWS; r++)
                    for (int i = 0; i < CE_EXPS; i++)
                        e[r][i] = fast_expf(x[r][v + i] - m[r]);
                for (int i = 0; i < CE_EXPS; i++)
                    for (int r = 0; r < CE_ROWS; r++)
                        part[r] += e[r][i];
            }
            for (; v < v1; v++)
                for (int r = 0; r < CE_ROWS; r++)
                    part[r] += fast_expf(x[r][v] - m[r]);
            for (int r = 0; r < CE_ROWS; r++)
                sum[r] += part[r];
        }
        for (int r = 0; r < rows; r++)
            lse[n0 + r] = targets[n0 + r] < 0 ? 0.0f : m[r] + (float)log(sum[r]);
    }
    double total = 0.0;
    long counted = 0;
#pragma omp parallel for schedule(static) reduction(+ : total, counted)
    for (int n = 0; n < N; n++) {
        if (targets[n] >= 0) {
            total += (double)lse[n] - (double)logits[(size_t)n * V + targets[n]];
            counted++;
        }
    }
    *count = counted;
    return total;
}

RG_OP void rg_crossentropy_backward(float *logits, const float *lse, const int32_t *targets, int N,
                              int V, float scale)
{
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        float *x = logits + (size_t)n * V;
        if (targets[n] < 0) {
            memset(x, 0, (size_t)V * sizeof(float));
            continue;
        }
        const float l = lse[n];
        for (int v = 0; v < V; v++)
            x[v] = scale * fast_expf(x[v] - l);
        x[targets[n]] -= scale;
    }
}

/* ------------------------------------------------------------------------ */
/* the CPU op table (rg_backend.h)                                           */
/* ------------------------------------------------------------------------ */

static const rg_ops_table cpu_ops = {
    .name = "cpu",  /* every CPU table: the instruction set is rg_ops_cpu_isa_name()'s business */
    .dropout_apply = rg_dropout_apply,
    .add_inplace = rg_add_inplace,
    .matmul_forward = rg_matmul_forward,
    .matmul_backward = rg_matmul_backward,
    .lora_forward = rg_lora_forward,
    .lora_backward = rg_lora_backward,
    .layernorm_forward = rg_layernorm_forward,
    .layernorm_backward = rg_layernorm_backward,
    .rmsnorm_forward = rg_rmsnorm_forward,
    .rmsnorm_backward = rg_rmsnorm_backward,
    .gelu_tanh_forward = rg_gelu_tanh_forward,
    .gelu_tanh_backward = rg_gelu_tanh_backward,
    .gelu_erf_forward = rg_gelu_erf_forward,
    .gelu_erf_backward = rg_gelu_erf_backward,
    .swiglu_forward = rg_swiglu_forward,
    .swiglu_backward = rg_swiglu_backward,
    .relu_forward = rg_relu_forward,
    .relu_backward = rg_relu_backward,
    .tanh_forward = rg_tanh_forward,
    .tanh_backward = rg_tanh_backward,
    .embedding_forward = rg_embedding_forward,
    .embedding_backward = rg_embedding_backward,
    .rope_forward = rg_rope_forward,
    .rope_backward = rg_rope_backward,
    .attention_forward = rg_attention_forward,
    .attention_backward = rg_attention_backward,
    .attention_cached_forward = rg_attention_cached_forward,
    .crossentropy_forward = rg_crossentropy_forward,
    .crossentropy_backward = rg_crossentropy_backward,
};

#ifdef RG_OPS_VARIANT
#define RG_OPS_GETTER_(isa) rg_ops_cpu_##isa
#define RG_OPS_GETTER(isa) RG_OPS_GETTER_(isa)
const rg_ops_table *RG_OPS_GETTER(RG_OPS_VARIANT)(void);
const rg_ops_table *RG_OPS_GETTER(RG_OPS_VARIANT)(void) { return &cpu_ops; }
#else
/* ---- run-time choice of the CPU table ---- */

#if defined(__x86_64__) && defined(__GNUC__)
const rg_ops_table *rg_ops_cpu_x86v3(void); /* rg_ops_x86v3.c */
#define RG_HAVE_X86V3 1
#endif

/* narrowest first */
static const char *const cpu_isas[] = {
    "baseline",
#ifdef RG_HAVE_X86V3
    "x86-64-v3",
#endif
};
#define N_CPU_ISAS (sizeof(cpu_isas) / sizeof(cpu_isas[0]))

const char *rg_ops_cpu_isa_at(size_t i) { return i < N_CPU_ISAS ? cpu_isas[i] : NULL; }

int rg_ops_cpu_isa_named(void)
{
    const char *wanted = getenv("REVIEWGEN_CPU_ISA");
    for (size_t i = 0; wanted != NULL && i < N_CPU_ISAS; i++)
        if (strcmp(wanted, cpu_isas[i]) == 0)
            return 1;
    return 0;
}

const rg_ops_table *rg_ops_cpu_isa(const char *isa)
{
    if (isa == NULL)
        return NULL;
    if (strcmp(isa, "baseline") == 0)
        return &cpu_ops;
#ifdef RG_HAVE_X86V3
    if (strcmp(isa, "x86-64-v3") == 0) {
        __builtin_cpu_init();
        return __builtin_cpu_supports("x86-64-v3") ? rg_ops_cpu_x86v3() : NULL;
    }
#endif
    return NULL;
}

const char *rg_ops_cpu_isa_name(void)
{
    const char *wanted = getenv("REVIEWGEN_CPU_ISA");
    for (size_t i = N_CPU_ISAS; i-- > 0;)
        if (wanted != NULL && strcmp(wanted, cpu_isas[i]) == 0 && rg_ops_cpu_isa(cpu_isas[i]) != NULL)
            return cpu_isas[i];
    for (size_t i = N_CPU_ISAS; i-- > 0;) /* unset, "auto" or not usable here: the widest this CPU runs */
        if (rg_ops_cpu_isa(cpu_isas[i]) != NULL)
            return cpu_isas[i];
    return cpu_isas[0];
}

const rg_ops_table *rg_ops_cpu(void) { return rg_ops_cpu_isa(rg_ops_cpu_isa_name()); }

const char *rg_ops_blas_core(void) { return scipy_openblas_get_corename(); }

int rg_ops_table_complete(const rg_ops_table *t)
{
    if (t == NULL || t->name == NULL)
        return 0;
    /* every entry after the name is a function pointer: check them all, so an
     * entry added to the struct is checked without editing this list */
    const size_t first = offsetof(rg_ops_table, dropout_apply), optional = offsetof(rg_ops_table, weight_prepare);
    const size_t n = (sizeof(rg_ops_table) - first) / sizeof(void (*)(void));
    size_t optional_set = 0, optional_n = 0;
    for (size_t i = 0; i < n; i++) {
        void (*fn)(void);
        memcpy(&fn, (const char *)t + first + i * sizeof(fn), sizeof(fn));
        if (first + i * sizeof(fn) >= optional) {
            optional_n++;
            optional_set += fn != NULL;
        } else if (fn == NULL) {
            return 0;
        }
    }
    return optional_set == 0 || optional_set == optional_n;
}
#endif /* RG_OPS_VARIANT */
