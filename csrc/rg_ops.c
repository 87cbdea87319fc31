/*
 * rg_ops.c - layer operations of the transformer (see rg_ops.h).
 * Matrix products go to OpenBLAS; the rest is row-parallel OpenMP loops
 * written so the compiler can vectorise the inner channel loops.
 */
#include "rg_ops.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "rg_rng.h"

/* exp(x) for the hot loops (softmax, cross-entropy, GELU, SiLU): a
 * Cody-Waite reduction and a degree-7 polynomial, relative error below 1e-7
 * on [-87, 88]. Written with integer selects only, so the compiler
 * vectorises it (libm's expf is a call; float compares would need
 * -fno-trapping-math). |x| is clamped to 104 (a NaN stays NaN): the result
 * saturates at about 1e-38 and 1.7e38 instead of 0 and infinity. */
static inline float fast_expf(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof(bits));
    uint32_t mag = bits & 0x7fffffffu;
    const uint32_t limit = mag > 0x7f800000u ? mag : 0x42d00000u; /* 104.0f */
    mag = mag < limit ? mag : limit;
    bits = (bits & 0x80000000u) | mag;
    memcpy(&x, &bits, sizeof(x));
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

/* tanh through exp(-2|u|): exact to a few 1e-8 in absolute terms. */
static inline float fast_tanhf(float u)
{
    const float e = fast_expf(-2.0f * fabsf(u));
    return copysignf((1.0f - e) / (1.0f + e), u);
}

/* ------------------------------------------------------------------------ */
/* dropout                                                                   */
/* ------------------------------------------------------------------------ */

uint64_t rg_dropout_stream(uint64_t step_seed, uint64_t site_id)
{
    return rg_rng_mix(rg_rng_mix(step_seed) ^ rg_rng_mix(site_id + 0x5DEECE66Dull));
}

static inline int dropout_keep(uint64_t stream, uint64_t index, float p)
{
    return rg_rng_uniform(stream, index) >= p;
}

void rg_dropout_apply(float *x, size_t n, float p, uint64_t stream)
{
    if (p <= 0.0f)
        return;
    const float scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++)
        x[i] = dropout_keep(stream, i, p) ? x[i] * scale : 0.0f;
}

/* ------------------------------------------------------------------------ */
/* linear layer                                                              */
/* ------------------------------------------------------------------------ */

/* C (M, N) = op(A) @ op(B) + beta * C, as one single-threaded OpenBLAS call
 * per OpenMP thread on a block of C's rows (or columns, when C is wide).
 * One thread pool for everything: OpenBLAS's own threads and OpenMP's would
 * otherwise spin against each other on the same cores. */
static void gemm_blocks(int trans_a, int trans_b, int M, int N, int K, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc)
{
    /* This OpenBLAS serves only the core (numpy bundles its own), so making it
     * single-threaded process-wide affects no one else. */
    static int blas_single_threaded = 0;
    int done;
#pragma omp atomic read
    done = blas_single_threaded;
    if (!done) {
        scipy_openblas_set_num_threads(1);
#pragma omp atomic write
        blas_single_threaded = 1;
    }
    const enum CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
    const enum CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
    const double flops = 2.0 * M * N * K;
    const int split_rows = M >= N;
#pragma omp parallel if (flops > 2e6)
    {
        const int nth = omp_get_num_threads(), th = omp_get_thread_num();
        const int extent = split_rows ? M : N;
        /* blocks of 16 rows/columns keep the kernels' panels whole */
        const int units = (extent + 15) / 16;
        const int lo = (int)((long)units * th / nth) * 16;
        int hi = (int)((long)units * (th + 1) / nth) * 16;
        if (hi > extent)
            hi = extent;
        if (hi > lo) {
            if (split_rows) {
                const float *a = trans_a ? A + lo : A + (size_t)lo * lda;
                scipy_cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, N, K, 1.0f, a, lda, B, ldb, beta,
                                  C + (size_t)lo * ldc, ldc);
            } else {
                const float *b = trans_b ? B + (size_t)lo * ldb : B + lo;
                scipy_cblas_sgemm(CblasRowMajor, ta, tb, M, hi - lo, K, 1.0f, A, lda, b, ldb, beta,
                                  C + lo, ldc);
            }
        }
    }
}

void rg_matmul_forward(float *out, const float *inp, const float *weight, const float *bias,
                       int N, int IC, int OC)
{
    gemm_blocks(0, 1, N, OC, IC, inp, IC, weight, IC, 0.0f, out, OC);
    if (bias == NULL)
        return;
#pragma omp parallel for schedule(static) if ((long)N * OC > 65536)
    for (int n = 0; n < N; n++) {
        float *row = out + (size_t)n * OC;
        for (int o = 0; o < OC; o++)
            row[o] += bias[o];
    }
}

void rg_matmul_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                        const float *inp, const float *weight, int N, int IC, int OC)
{
    if (dinp != NULL) /* (N, IC) += (N, OC) @ (OC, IC) */
        gemm_blocks(0, 0, N, IC, OC, dout, OC, weight, IC, 1.0f, dinp, IC);
    if (dweight != NULL) /* (OC, IC) += (N, OC)^T @ (N, IC) */
        gemm_blocks(1, 0, OC, IC, N, dout, OC, inp, IC, 1.0f, dweight, IC);
    if (dbias != NULL) {
#pragma omp parallel for schedule(static) if ((long)N * OC > 65536)
        for (int o = 0; o < OC; o++) {
            float sum = 0.0f;
            for (int n = 0; n < N; n++)
                sum += dout[(size_t)n * OC + o];
            dbias[o] += sum;
        }
    }
}

/* ------------------------------------------------------------------------ */
/* normalisation                                                             */
/* ------------------------------------------------------------------------ */

void rg_layernorm_forward(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C, float eps)
{
#pragma omp parallel for schedule(static) if ((long)N * C > 32768)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        float m = 0.0f;
        for (int c = 0; c < C; c++)
            m += x[c];
        m /= (float)C;
        float var = 0.0f;
        for (int c = 0; c < C; c++) {
            float d = x[c] - m;
            var += d * d;
        }
        var /= (float)C;
        float s = 1.0f / sqrtf(var + eps);
        for (int c = 0; c < C; c++)
            y[c] = (x[c] - m) * s * weight[c] + bias[c];
        mean[n] = m;
        rstd[n] = s;
    }
}

/* The weight/bias gradients are column sums over rows: each thread sums its
 * rows into a private slice of `partial`, then the slices are added up. */
static float *column_partials(int C, int per_thread, int *n_threads)
{
    *n_threads = omp_get_max_threads();
    return calloc((size_t)*n_threads * per_thread * C, sizeof(float));
}

void rg_layernorm_backward(float *dinp, float *dweight, float *dbias, const float *dout,
                           const float *inp, const float *weight, const float *mean,
                           const float *rstd, int N, int C)
{
    int n_threads = 1;
    float *partial = (dweight || dbias) ? column_partials(C, 2, &n_threads) : NULL;
    const int serial = (dweight || dbias) && partial == NULL; /* no memory: one thread does all */
#pragma omp parallel for schedule(static) if ((long)N * C > 32768 && !serial)
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

void rg_rmsnorm_forward(float *out, float *rstd, const float *inp, const float *weight, int N,
                        int C, float eps)
{
#pragma omp parallel for schedule(static) if ((long)N * C > 32768)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        float *y = out + (size_t)n * C;
        float ss = 0.0f;
        for (int c = 0; c < C; c++)
            ss += x[c] * x[c];
        float s = 1.0f / sqrtf(ss / (float)C + eps);
        for (int c = 0; c < C; c++)
            y[c] = x[c] * s * weight[c];
        rstd[n] = s;
    }
}

void rg_rmsnorm_backward(float *dinp, float *dweight, const float *dout, const float *inp,
                         const float *weight, const float *rstd, int N, int C)
{
    int n_threads = 1;
    float *partial = dweight ? column_partials(C, 1, &n_threads) : NULL;
    const int serial = dweight && partial == NULL;
#pragma omp parallel for schedule(static) if ((long)N * C > 32768 && !serial)
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

void rg_gelu_tanh_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + fast_tanhf(RG_SQRT_2_OVER_PI * (x + 0.044715f * x * x * x)));
    }
}

void rg_gelu_tanh_backward(float *dinp, const float *inp, const float *dout, size_t n)
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

void rg_gelu_erf_forward(float *out, const float *inp, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        out[i] = 0.5f * x * (1.0f + erff(x * RG_INV_SQRT_2));
    }
}

void rg_gelu_erf_backward(float *dinp, const float *inp, const float *dout, size_t n)
{
#pragma omp parallel for schedule(static) if (n > 16384)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float grad = 0.5f * (1.0f + erff(x * RG_INV_SQRT_2)) + x * RG_INV_SQRT_2PI * expf(-0.5f * x * x);
        dinp[i] += grad * dout[i];
    }
}

void rg_swiglu_forward(float *out, const float *inp, int N, int F)
{
#pragma omp parallel for schedule(static) if ((long)N * F > 16384)
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

void rg_swiglu_backward(float *dinp, const float *inp, const float *dout, int N, int F)
{
#pragma omp parallel for schedule(static) if ((long)N * F > 16384)
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

void rg_relu_forward(float *out, const float *inp, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = inp[i] > 0.0f ? inp[i] : 0.0f;
}

void rg_relu_backward(float *dinp, const float *out, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dinp[i] += out[i] > 0.0f ? dout[i] : 0.0f;
}

void rg_tanh_forward(float *out, const float *inp, size_t n)
{
    for (size_t i = 0; i < n; i++)
        out[i] = tanhf(inp[i]);
}

void rg_tanh_backward(float *dinp, const float *out, const float *dout, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dinp[i] += (1.0f - out[i] * out[i]) * dout[i];
}

/* ------------------------------------------------------------------------ */
/* embeddings                                                                */
/* ------------------------------------------------------------------------ */

void rg_embedding_forward(float *out, const int32_t *tokens, const int32_t *positions,
                          const int32_t *types, const float *wte, const float *wpe,
                          const float *wtt, int N, int C)
{
#pragma omp parallel for schedule(static) if ((long)N * C > 32768)
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
void rg_embedding_backward(float *dwte, float *dwpe, float *dwtt, const float *dout,
                           const int32_t *tokens, const int32_t *positions, const int32_t *types,
                           int N, int C)
{
    const int block = 64;
    const int n_blocks = (C + block - 1) / block;
#pragma omp parallel for schedule(static) if ((long)N * C > 32768)
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
static void rope_rotate_head(float *head, int position, int HS, float theta, float direction)
{
    const int half = HS / 2;
    for (int i = 0; i < half; i++) {
        double inv_freq = pow((double)theta, -2.0 * i / (double)HS);
        double angle = (double)position * inv_freq;
        float cs = (float)cos(angle), sn = direction * (float)sin(angle);
        float a = head[i], b = head[i + half];
        head[i] = a * cs - b * sn;
        head[i + half] = b * cs + a * sn;
    }
}

static void rope_apply(float *qkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                       float theta, float direction)
{
    const int row = (NH + 2 * NKV) * HS;
#pragma omp parallel for schedule(static) if ((long)N * row > 16384)
    for (int n = 0; n < N; n++) {
        for (int h = 0; h < NH + NKV; h++) /* q heads then k heads */
            rope_rotate_head(qkv + (size_t)n * row + (size_t)h * HS, positions[n], HS, theta,
                             direction);
    }
}

void rg_rope_forward(float *qkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                     float theta)
{
    rope_apply(qkv, positions, N, NH, NKV, HS, theta, 1.0f);
}

void rg_rope_backward(float *dqkv, const int32_t *positions, int N, int NH, int NKV, int HS,
                      float theta)
{
    /* A rotation's transpose is the rotation by the opposite angle. */
    rope_apply(dqkv, positions, N, NH, NKV, HS, theta, -1.0f);
}

/* ------------------------------------------------------------------------ */
/* attention                                                                 */
/* ------------------------------------------------------------------------ */

/* One query against n_keys keys: probs (n_keys,) = softmax of the visible
 * scores (0 where hidden), out (HS,) = sum_j dropout(probs)_j * v_j. */
static void attention_row(float *out, float *probs, const float *q, const float *k0,
                          size_t k_stride, const float *v0, size_t v_stride,
                          const int32_t *key_mask, int n_keys, int HS, float scale,
                          float attn_p, uint64_t stream, uint64_t drop_index0)
{
    float max_score = -INFINITY;
    for (int j = 0; j < n_keys; j++) {
        if (key_mask != NULL && key_mask[j] == 0) {
            probs[j] = -INFINITY;
            continue;
        }
        const float *k = k0 + (size_t)j * k_stride;
        float dot = 0.0f;
        for (int i = 0; i < HS; i++)
            dot += q[i] * k[i];
        probs[j] = dot * scale;
        if (probs[j] > max_score)
            max_score = probs[j];
    }
    for (int i = 0; i < HS; i++)
        out[i] = 0.0f;
    if (max_score == -INFINITY) { /* no visible key */
        for (int j = 0; j < n_keys; j++)
            probs[j] = 0.0f;
        return;
    }
    for (int j = 0; j < n_keys; j++) /* hidden keys: exp(-inf) saturates near 1e-38 ... */
        probs[j] = fast_expf(probs[j] - max_score);
    if (key_mask != NULL) /* ... and are zeroed exactly here (an integer select) */
        for (int j = 0; j < n_keys; j++)
            probs[j] = key_mask[j] != 0 ? probs[j] : 0.0f;
    float sum = 0.0f;
    for (int j = 0; j < n_keys; j++)
        sum += probs[j];
    const float inv = 1.0f / sum;
    const float keep_scale = attn_p > 0.0f ? 1.0f / (1.0f - attn_p) : 1.0f;
    for (int j = 0; j < n_keys; j++) {
        probs[j] *= inv;
        float p = probs[j];
        if (p == 0.0f)
            continue;
        if (attn_p > 0.0f)
            p = dropout_keep(stream, drop_index0 + (uint64_t)j, attn_p) ? p * keep_scale : 0.0f;
        const float *v = v0 + (size_t)j * v_stride;
        for (int i = 0; i < HS; i++)
            out[i] += p * v[i];
    }
}

void rg_attention_forward(float *out, float *att, const float *qkv, const int32_t *key_mask,
                          int B, int T, int NH, int NKV, int HS, int causal, float attn_p,
                          uint64_t stream)
{
    const size_t row = (size_t)(NH + 2 * NKV) * HS;
    const int group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel for collapse(2) schedule(dynamic, 1)
    for (int b = 0; b < B; b++) {
        for (int h = 0; h < NH; h++) {
            const int g = h / group;
            const float *base = qkv + (size_t)b * T * row;
            const float *k0 = base + (size_t)(NH + g) * HS;
            const float *v0 = base + (size_t)(NH + NKV + g) * HS;
            const int32_t *mask = key_mask ? key_mask + (size_t)b * T : NULL;
            for (int t = 0; t < T; t++) {
                float *probs = att + (((size_t)b * NH + h) * T + t) * T;
                int n_keys = causal ? t + 1 : T;
                attention_row(out + ((size_t)b * T + t) * NH * HS + (size_t)h * HS, probs,
                              base + (size_t)t * row + (size_t)h * HS, k0, row, v0, row, mask,
                              n_keys, HS, scale, attn_p, stream,
                              (((uint64_t)b * NH + h) * T + t) * T);
                for (int j = n_keys; j < T; j++)
                    probs[j] = 0.0f;
            }
        }
    }
}

/* Parallel over (batch, key/value head) so the heads of one group, which all
 * add into the same dk and dv, stay on one thread. */
void rg_attention_backward(float *dqkv, const float *dout, const float *qkv, const float *att,
                           int B, int T, int NH, int NKV, int HS, float attn_p, uint64_t stream)
{
    const size_t row = (size_t)(NH + 2 * NKV) * HS;
    const int group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HS);
    const float keep_scale = attn_p > 0.0f ? 1.0f / (1.0f - attn_p) : 1.0f;
#pragma omp parallel
    {
        float *datt = malloc((size_t)T * sizeof(float));
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            for (int g = 0; g < NKV; g++) {
                if (datt == NULL)
                    continue; /* cannot happen for sane T; leaves the gradient untouched */
                const float *base = qkv + (size_t)b * T * row;
                float *dbase = dqkv + (size_t)b * T * row;
                const float *k0 = base + (size_t)(NH + g) * HS;
                const float *v0 = base + (size_t)(NH + NKV + g) * HS;
                float *dk0 = dbase + (size_t)(NH + g) * HS;
                float *dv0 = dbase + (size_t)(NH + NKV + g) * HS;
                for (int h = g * group; h < (g + 1) * group; h++) {
                    for (int t = 0; t < T; t++) {
                        const float *probs = att + (((size_t)b * NH + h) * T + t) * T;
                        const float *dy = dout + ((size_t)b * T + t) * NH * HS + (size_t)h * HS;
                        const float *q = base + (size_t)t * row + (size_t)h * HS;
                        float *dq = dbase + (size_t)t * row + (size_t)h * HS;
                        const uint64_t drop0 = (((uint64_t)b * NH + h) * T + t) * T;
                        float dot_sum = 0.0f; /* sum_j probs_j * datt_j */
                        for (int j = 0; j < T; j++) {
                            if (probs[j] == 0.0f) {
                                datt[j] = 0.0f;
                                continue;
                            }
                            float keep = 1.0f;
                            if (attn_p > 0.0f)
                                keep = dropout_keep(stream, drop0 + (uint64_t)j, attn_p) ? keep_scale : 0.0f;
                            const float *v = v0 + (size_t)j * row;
                            float *dv = dv0 + (size_t)j * row;
                            float d = 0.0f;
                            const float pd = probs[j] * keep;
                            for (int i = 0; i < HS; i++) {
                                d += dy[i] * v[i];
                                dv[i] += pd * dy[i];
                            }
                            datt[j] = d * keep;
                            dot_sum += probs[j] * datt[j];
                        }
                        for (int j = 0; j < T; j++) {
                            if (probs[j] == 0.0f)
                                continue;
                            float dscore = probs[j] * (datt[j] - dot_sum) * scale;
                            const float *k = k0 + (size_t)j * row;
                            float *dk = dk0 + (size_t)j * row;
                            for (int i = 0; i < HS; i++) {
                                dq[i] += dscore * k[i];
                                dk[i] += dscore * q[i];
                            }
                        }
                    }
                }
            }
        }
        free(datt);
    }
}

void rg_attention_cached_forward(float *out, const float *qkv, const float *k_cache,
                                 const float *v_cache, const int32_t *key_mask, int B, int Tn,
                                 int S, int start, int NH, int NKV, int HS)
{
    const size_t row = (size_t)(NH + 2 * NKV) * HS;
    const int group = NH / NKV;
    const float scale = 1.0f / sqrtf((float)HS);
#pragma omp parallel
    {
        float *probs = malloc((size_t)S * sizeof(float));
#pragma omp for collapse(2) schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            for (int h = 0; h < NH; h++) {
                if (probs == NULL)
                    continue;
                const int g = h / group;
                const float *k0 = k_cache + ((size_t)b * NKV + g) * S * HS;
                const float *v0 = v_cache + ((size_t)b * NKV + g) * S * HS;
                for (int t = 0; t < Tn; t++)
                    attention_row(out + ((size_t)b * Tn + t) * NH * HS + (size_t)h * HS, probs,
                                  qkv + ((size_t)b * Tn + t) * row + (size_t)h * HS, k0, HS, v0,
                                  HS, key_mask + (size_t)b * S, start + t + 1, HS, scale, 0.0f, 0,
                                  0);
            }
        }
        free(probs);
    }
}

/* ------------------------------------------------------------------------ */
/* softmax cross-entropy                                                     */
/* ------------------------------------------------------------------------ */

double rg_crossentropy_forward(float *lse, const float *logits, const int32_t *targets, int N,
                               int V, long *count)
{
    double total = 0.0;
    long counted = 0;
#pragma omp parallel for schedule(static) reduction(+ : total, counted)
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) {
            lse[n] = 0.0f;
            continue;
        }
        const float *x = logits + (size_t)n * V;
        float m = -INFINITY;
        for (int v = 0; v < V; v++)
            m = x[v] > m ? x[v] : m;
        double sum = 0.0;
        for (int v0 = 0; v0 < V; v0 += 512) { /* float partial sums, added in double */
            const int v1 = v0 + 512 < V ? v0 + 512 : V;
            float part = 0.0f;
            for (int v = v0; v < v1; v++)
                part += fast_expf(x[v] - m);
            sum += part;
        }
        float l = m + (float)log(sum);
        lse[n] = l;
        total += (double)l - (double)x[targets[n]];
        counted++;
    }
    *count = counted;
    return total;
}

void rg_crossentropy_backward(float *logits, const float *lse, const int32_t *targets, int N,
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
