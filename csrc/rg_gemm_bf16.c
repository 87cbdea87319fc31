/*
 * rg_gemm_bf16.c - C += op(A) op(B) with bf16 operands and fp32 sums, on
 * AVX512-BF16 (vdpbf16ps: each lane adds the products of one pair of bf16
 * values along K). See rg_gemm_bf16.h.
 *
 * Blocking, as in the usual packed GEMM: B is packed (and rounded to bf16)
 * once per (KC, NC) block into tiles of NR columns, each K pair of a column
 * one 32-bit word; A is packed per thread into panels of MR rows, each K pair
 * of a row one word, broadcast to every lane. The micro-kernel holds an
 * MR x NR block of C in 16 zmm accumulators. Edges are zero-padded in the
 * packed copies, so the micro-kernel has no edge cases but the final store.
 *
 * Built for the baseline target: the kernels carry their own target
 * attribute and run only after rg_gemm_bf16_supported() said yes.
 */
#include "rg_gemm_bf16.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


enum { MR = 8, NR = 32, KC = 256, NC = 2048, MC = 64 };

static inline uint16_t to_bf16(float x)
{
    uint32_t u;
    memcpy(&u, &x, sizeof(u));
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN stays NaN (quiet) */
        return (uint16_t)((u >> 16) | 0x40u);
    u += 0x7fffu + ((u >> 16) & 1u); /* round to nearest, ties to even */
    return (uint16_t)(u >> 16);
}

float rg_round_bf16(float x)
{
    uint32_t u = (uint32_t)to_bf16(x) << 16;
    float out;
    memcpy(&out, &u, sizeof(out));
    return out;
}

int rg_gemm_bf16_supported(void)
{
#if defined(__x86_64__) && defined(__GNUC__)
    /* REVIEWGEN_CPU_ISA naming a narrower set (baseline, x86-64-v3) rules bf16 out too */
    const char *wanted = getenv("REVIEWGEN_CPU_ISA");
    if (wanted != NULL && (strcmp(wanted, "baseline") == 0 || strcmp(wanted, "x86-64-v3") == 0))
        return 0;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16");
#else
    return 0;
#endif
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define RG_BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

/* n floats -> bf16 (round to nearest even), 16 at a time */
RG_BF16_TARGET static void convert(const float *src, int n, uint16_t *dst)
{
    int i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(dst + i), (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(src + i)));
    if (i < n) {
        const __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(dst + i, m, (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

/* Packed layout, for A's panels (width MR) and B's tiles (width NR): the 32-bit word
 * (kp, j) holds element pair (2kp, 2kp + 1) along K of line j (a row of op(A), a
 * column of op(B)); lines past `lines` and K past kc are zero.
 *
 * Pairs adjacent in memory (A not transposed, B transposed): line j is the memory row
 * X + (l0 + j) * ld + k0, converted whole, then its words transposed into place. */
RG_BF16_TARGET static void pack_lines(const float *X, int ld, int l0, int lines, int k0, int kc, int width,
                                      uint32_t *out)
{
    const int kps = (kc + 1) / 2;
    uint16_t row[KC + 2];
    const uint32_t *words = (const uint32_t *)row;
    for (int j = 0; j < width; j++) {
        if (j < lines) {
            convert(X + (size_t)(l0 + j) * ld + k0, kc, row);
            row[kc] = 0; /* odd kc: the last pair's second half */
            for (int kp = 0; kp < kps; kp++)
                out[(size_t)kp * width + j] = words[kp];
        } else {
            for (int kp = 0; kp < kps; kp++)
                out[(size_t)kp * width + j] = 0;
        }
    }
}

/* Pairs in two memory rows (A transposed, B not): K index k is the memory row
 * X + (k0 + k) * ld + l0, whose `lines` elements are lines l0.. of that k. */
RG_BF16_TARGET static void pack_pairs(const float *X, int ld, int l0, int lines, int k0, int kc, int width,
                                      uint32_t *out)
{
    const int kps = (kc + 1) / 2;
    uint16_t even[NR], odd[NR];
    for (int kp = 0; kp < kps; kp++) {
        memset(even, 0, sizeof(even));
        memset(odd, 0, sizeof(odd));
        convert(X + (size_t)(k0 + 2 * kp) * ld + l0, lines, even);
        if (2 * kp + 1 < kc)
            convert(X + (size_t)(k0 + 2 * kp + 1) * ld + l0, lines, odd);
        uint32_t *dst = out + (size_t)kp * width;
        for (int j = 0; j < width; j++)
            dst[j] = (uint32_t)even[j] | ((uint32_t)odd[j] << 16);
    }
}

/* lines l0..l0+lines of op(X) over K block k0..k0+kc, as above; trans_pairs: the
 * pair elements are in two memory rows (pack_pairs), else adjacent (pack_lines) */
static void pack(int pairs_in_rows, const float *X, int ld, int l0, int lines, int k0, int kc, int width,
                 uint32_t *out)
{
    if (pairs_in_rows)
        pack_pairs(X, ld, l0, lines, k0, kc, width, out);
    else
        pack_lines(X, ld, l0, lines, k0, kc, width, out);
}


/* C (rows <= MR, cols <= NR) += panel (kps pairs x MR) . tile (kps pairs x NR) */
RG_BF16_TARGET static void micro_kernel(int kps, const uint16_t *panel, const uint16_t *tile, float *C, int ldc,
                                        int rows, int cols)
{
    __m512 acc[MR][2];
    for (int r = 0; r < MR; r++)
        acc[r][0] = acc[r][1] = _mm512_setzero_ps();
    const uint32_t *a = (const uint32_t *)panel;
    for (int kp = 0; kp < kps; kp++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(tile + (size_t)kp * NR * 2);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(tile + (size_t)kp * NR * 2 + 32);
        for (int r = 0; r < MR; r++) {
            const __m512bh ar = (__m512bh)_mm512_set1_epi32((int)a[(size_t)kp * MR + r]);
            acc[r][0] = _mm512_dpbf16_ps(acc[r][0], ar, b0);
            acc[r][1] = _mm512_dpbf16_ps(acc[r][1], ar, b1);
        }
    }
    const __mmask16 m0 = cols >= 16 ? 0xffff : (__mmask16)((1u << cols) - 1);
    const __mmask16 m1 = cols >= 32 ? 0xffff : cols <= 16 ? 0 : (__mmask16)((1u << (cols - 16)) - 1);
    for (int r = 0; r < rows; r++) {
        float *c = C + (size_t)r * ldc;
        _mm512_mask_storeu_ps(c, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c), acc[r][0]));
        if (m1)
            _mm512_mask_storeu_ps(c + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + 16), acc[r][1]));
    }
}

void rg_gemm_bf16(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc)
{
    if (M <= 0 || N <= 0 || K <= 0)
        return;
    const int kps_max = (KC + 1) / 2, tiles_max = (NC + NR - 1) / NR;
    uint16_t *bpack = aligned_alloc(64, (size_t)tiles_max * kps_max * NR * 2 * sizeof(uint16_t));
    if (bpack == NULL)
        abort(); /* as the fp32 ops do on allocation failure: no partial result can pass */
    const int m_blocks = (M + MC - 1) / MC;
    for (int n0 = 0; n0 < N; n0 += NC) {
        const int nc = N - n0 < NC ? N - n0 : NC, tiles = (nc + NR - 1) / NR;
        for (int k0 = 0; k0 < K; k0 += KC) {
            const int kc = K - k0 < KC ? K - k0 : KC, kps = (kc + 1) / 2;
            /* op(B)'s columns are B's rows when tb (pairs adjacent), B's columns otherwise */
#pragma omp parallel for schedule(static) if (tiles > 1 && (double)kc * nc > 32768)
            for (int t = 0; t < tiles; t++) {
                const int cols = nc - t * NR < NR ? nc - t * NR : NR;
                pack(!tb, B, ldb, n0 + t * NR, cols, k0, kc, NR, (uint32_t *)(bpack + (size_t)t * kps * NR * 2));
            }
#pragma omp parallel if (m_blocks > 1 && (double)M * nc * kc > 1e6)
            {
                uint16_t *apack = aligned_alloc(64, (size_t)(MC / MR) * kps_max * MR * 2 * sizeof(uint16_t));
                if (apack == NULL)
                    abort();
#pragma omp for schedule(dynamic, 1)
                for (int mb = 0; mb < m_blocks; mb++) {
                    const int m0 = mb * MC, mc = M - m0 < MC ? M - m0 : MC, panels = (mc + MR - 1) / MR;
                    for (int p = 0; p < panels; p++) { /* op(A)'s rows: A's rows unless ta */
                        const int rows = mc - p * MR < MR ? mc - p * MR : MR;
                        pack(ta, A, lda, m0 + p * MR, rows, k0, kc, MR, (uint32_t *)(apack + (size_t)p * kps * MR * 2));
                    }
                    for (int t = 0; t < tiles; t++) {
                        const int cols = nc - t * NR < NR ? nc - t * NR : NR;
                        const uint16_t *tile = bpack + (size_t)t * kps * NR * 2;
                        for (int p = 0; p < panels; p++) {
                            const int rows = mc - p * MR < MR ? mc - p * MR : MR;
                            micro_kernel(kps, apack + (size_t)p * kps * MR * 2, tile,
                                         C + (size_t)(m0 + p * MR) * ldc + n0 + t * NR, ldc, rows, cols);
                        }
                    }
                }
                free(apack);
            }
        }
    }
    free(bpack);
}
#else
void rg_gemm_bf16(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc)
{
    (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)C, (void)ldc;
    abort(); /* callers check rg_gemm_bf16_supported() first */
}
#endif

/* ------------------------------------------------------------------------ */
/* the "cpu-bf16" op table: the CPU table, linear layers through the above    */
/* ------------------------------------------------------------------------ */

static const rg_ops_table *fp32_ops; /* the CPU table this one starts from */

/* Whether a product of `rows` activation rows and an (OC, IC) weight goes to bf16: the
 * weight is rounded and packed on every call, which costs about as much as the product
 * saves when the weight has more rows than the activation (the LM head's 50,257 rows
 * against its 256-row chunks); then fp32 is faster. Measured in benchmarks/README.md. */
static int use_bf16(int rows, int OC)
{
    return rows >= RG_GEMM_BF16_MIN_ROWS && rows >= (OC < 512 ? OC : 512);
}

/* out (N, OC) = inp (N, IC) . weight (OC, IC)^T + bias (OC) */
static void matmul_forward_bf16(float *out, const float *inp, const float *weight, const float *bias, int N,
                                int IC, int OC)
{
    if (!use_bf16(N, OC)) {
        fp32_ops->matmul_forward(out, inp, weight, bias, N, IC, OC);
        return;
    }
#pragma omp parallel for schedule(static) if ((size_t)N * OC > 65536)
    for (int n = 0; n < N; n++) {
        if (bias != NULL)
            memcpy(out + (size_t)n * OC, bias, (size_t)OC * sizeof(float));
        else
            memset(out + (size_t)n * OC, 0, (size_t)OC * sizeof(float));
    }
    rg_gemm_bf16(0, 1, N, OC, IC, inp, IC, weight, IC, out, OC);
}

static void matmul_backward_bf16(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                 const float *weight, int N, int IC, int OC)
{
    if (!use_bf16(N, OC)) {
        fp32_ops->matmul_backward(dinp, dweight, dbias, dout, inp, weight, N, IC, OC);
        return;
    }
    if (dinp != NULL) /* dinp (N, IC) += dout (N, OC) . weight (OC, IC) */
        rg_gemm_bf16(0, 0, N, IC, OC, dout, OC, weight, IC, dinp, IC);
    if (dweight != NULL) /* dweight (OC, IC) += dout^T (OC, N) . inp (N, IC) */
        rg_gemm_bf16(1, 0, OC, IC, N, dout, OC, inp, IC, dweight, IC);
    if (dbias != NULL) /* column sums stay fp32 */
        fp32_ops->matmul_backward(NULL, NULL, dbias, dout, inp, weight, N, IC, OC);
}

static rg_ops_table bf16_ops;

static void bf16_ops_init(void)
{
    fp32_ops = rg_ops_cpu();
    bf16_ops = *fp32_ops;
    bf16_ops.name = "cpu-bf16";
    bf16_ops.matmul_forward = matmul_forward_bf16;
    bf16_ops.matmul_backward = matmul_backward_bf16;
}

const rg_ops_table *rg_ops_cpu_bf16(void)
{
    if (!rg_gemm_bf16_supported())
        return NULL;
#pragma omp critical(rg_ops_cpu_bf16_init)
    if (fp32_ops == NULL)
        bf16_ops_init();
    return &bf16_ops;
}
