/*
 * rg_gemm_bf16.c - C += op(A) op(B) with bf16 operands and fp32 sums, on
 * AVX512-BF16 (vdpbf16ps: each lane adds the products of one pair of bf16
 * values along K). See rg_gemm_bf16.h.
 *
 * Blocking, as in the usual packed GEMM: B is packed (and rounded to bf16)
 * once per (KB, NC) block into tiles of KC x NR, each K pair of a column one
 * 32-bit word; A is packed per thread into panels of MR rows, each K pair of
 * a row one word, broadcast to every lane. A thread takes MC rows of C through
 * all of KB before the next MC, so C is read and written once per KB rather
 * than once per KC (what kept the first version at 35-45% of the bf16 peak on
 * wide products). The micro-kernel holds an MR x NR block of C in 16 zmm
 * accumulators. Edges are zero-padded in the packed copies, so the
 * micro-kernel has no edge cases but the final store.
 *
 * Built for the baseline target: the kernels carry their own target
 * attribute and run only after rg_gemm_bf16_supported() said yes.
 */
#include "rg_gemm_bf16.h"

#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>


/* MR x NR: the micro-kernel's block of C; KC: the K block packed per panel and tile;
 * KB: the K extent whose B tiles are packed together (4 MiB at most); NC x MC: the
 * block of C a thread finishes over those KB before moving on (128 KiB). */
enum { MR = 8, NR = 32, KC = 256, KB = 4096, NC = 512, MC = 64 };

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
    if (rg_ops_cpu_isa_named())
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

/* Packed layout, for A's panels (width MR) and B's tiles (width NR): the 32-bit word
 * (kp, j) holds element pair (2kp, 2kp + 1) along K of line j (a row of op(A), a
 * column of op(B)); lines past `lines` and K past kc are zero. Both packers work on
 * groups of 16 lines with whole vectors; the rounding is vcvtneps2bf16's (nearest
 * even). */

/* the first n of 16 lanes */
static inline __mmask16 first_lanes(int n)
{
    return n >= 16 ? (__mmask16)0xffff : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

/* r[i] word j -> r[j] word i, for 16 rows of 16 32-bit words */
RG_BF16_TARGET static inline void transpose_16x16(__m512i r[16])
{
    __m512i t[16], u[16];
    for (int i = 0; i < 16; i += 2) { /* per 128-bit lane: pairs of rows interleaved */
        t[i] = _mm512_unpacklo_epi32(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_epi32(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* u[i + c]: rows i..i+3, word 4L + c of each lane L */
        u[i] = _mm512_unpacklo_epi64(t[i], t[i + 2]);
        u[i + 1] = _mm512_unpackhi_epi64(t[i], t[i + 2]);
        u[i + 2] = _mm512_unpacklo_epi64(t[i + 1], t[i + 3]);
        u[i + 3] = _mm512_unpackhi_epi64(t[i + 1], t[i + 3]);
    }
    for (int c = 0; c < 4; c++) { /* gather lane L of u[c], u[4 + c], u[8 + c], u[12 + c] */
        const __m512i even_lo = _mm512_shuffle_i32x4(u[c], u[4 + c], 0x88);
        const __m512i even_hi = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0x88);
        const __m512i odd_lo = _mm512_shuffle_i32x4(u[c], u[4 + c], 0xdd);
        const __m512i odd_hi = _mm512_shuffle_i32x4(u[8 + c], u[12 + c], 0xdd);
        r[c] = _mm512_shuffle_i32x4(even_lo, even_hi, 0x88);
        r[8 + c] = _mm512_shuffle_i32x4(even_lo, even_hi, 0xdd);
        r[4 + c] = _mm512_shuffle_i32x4(odd_lo, odd_hi, 0x88);
        r[12 + c] = _mm512_shuffle_i32x4(odd_lo, odd_hi, 0xdd);
    }
}

/* Lines are packed in panels of `width` (8: A's panels, or a multiple of 16: B's tiles)
 * lying one after the other, kps * width words each; a call packs all the panels that
 * `lines` fills, zero past the last line. Work goes 16 lines at a time, so for A two
 * panels share each vector. This stores the words of K pair kp for lines jg..jg+group. */
RG_BF16_TARGET static inline void store_words(uint32_t *out, int width, size_t panel_words, int jg, int group,
                                              int kp, __m512i words)
{
    if (width >= 16) {
        _mm512_mask_storeu_epi32(out + (size_t)(jg / width) * panel_words + (size_t)kp * width + jg % width,
                                 first_lanes(group), words);
    } else { /* width 8: the low half to panel jg / 8, the high half to the next */
        uint32_t *dst = out + (size_t)(jg / 8) * panel_words + (size_t)kp * 8;
        _mm256_storeu_si256((__m256i *)dst, _mm512_castsi512_si256(words));
        if (group > 8)
            _mm256_storeu_si256((__m256i *)(dst + panel_words), _mm512_extracti64x4_epi64(words, 1));
    }
}

/* Pairs adjacent in memory (A not transposed, B transposed): line j is the memory row
 * X + (l0 + j) * ld + k0. 32 elements of 16 lines are rounded into 16 vectors of 16
 * words, transposed, and each stored as one K pair's words. */
RG_BF16_TARGET static void pack_lines(const float *X, int ld, int l0, int lines, int k0, int kc, int width,
                                      uint32_t *out)
{
    const int total = (lines + width - 1) / width * width;
    const size_t panel_words = (size_t)(kc + 1) / 2 * width;
    for (int jg = 0; jg < total; jg += 16) {
        const int group = total - jg < 16 ? total - jg : 16;
        for (int kk = 0; kk < kc; kk += 32) {
            const int left = kc - kk;
            const __mmask16 lo = first_lanes(left), hi = first_lanes(left - 16);
            __m512i r[16];
            for (int i = 0; i < 16; i++) {
                if (jg + i < lines) {
                    const float *src = X + (size_t)(l0 + jg + i) * ld + k0 + kk;
                    r[i] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, src + 16),
                                                        _mm512_maskz_loadu_ps(lo, src));
                } else {
                    r[i] = _mm512_setzero_si512();
                }
            }
            transpose_16x16(r);
            const int words = left >= 32 ? 16 : (left + 1) / 2;
            for (int e = 0; e < words; e++)
                store_words(out, width, panel_words, jg, group, kk / 2 + e, r[e]);
        }
    }
}

/* Pairs in two memory rows (A transposed, B not): K index k is the memory row
 * X + (k0 + k) * ld + l0, whose `lines` elements are lines l0.. of that k; the two
 * rows of a pair are rounded and interleaved 16 lines at a time. */
RG_BF16_TARGET static void pack_pairs(const float *X, int ld, int l0, int lines, int k0, int kc, int width,
                                      uint32_t *out)
{
    const int kps = (kc + 1) / 2, total = (lines + width - 1) / width * width;
    const size_t panel_words = (size_t)kps * width;
    for (int kp = 0; kp < kps; kp++) {
        const float *even = X + (size_t)(k0 + 2 * kp) * ld + l0, *odd = even + ld;
        const int has_odd = 2 * kp + 1 < kc;
        for (int jg = 0; jg < total; jg += 16) {
            const int group = total - jg < 16 ? total - jg : 16;
            const __mmask16 load = first_lanes(lines - jg < group ? lines - jg : group);
            const __m512i e = _mm512_cvtepu16_epi32((__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(load, even + jg)));
            const __m512i o = has_odd ? _mm512_cvtepu16_epi32(
                                            (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(load, odd + jg)))
                                      : _mm512_setzero_si512();
            store_words(out, width, panel_words, jg, group, kp, _mm512_or_si512(e, _mm512_slli_epi32(o, 16)));
        }
    }
}

/* lines l0..l0+lines of op(X) over K block k0..k0+kc, as above; pairs_in_rows: the
 * pair elements are in two memory rows (pack_pairs), else adjacent (pack_lines) */
static void pack(int pairs_in_rows, const float *X, int ld, int l0, int lines, int k0, int kc, int width,
                 uint32_t *out)
{
    if (pairs_in_rows)
        pack_pairs(X, ld, l0, lines, k0, kc, width, out);
    else
        pack_lines(X, ld, l0, lines, k0, kc, width, out);
}


/* C (rows <= MR, cols <= NR) += panel (kps pairs x MR) . tile (kps pairs x NR); with
 * `start`, C = start_row (cols,) (or 0 when NULL) + the product instead, C not read */
RG_BF16_TARGET static void micro_kernel(int kps, const uint16_t *panel, const uint16_t *tile, float *C, int ldc,
                                        int rows, int cols, int start, const float *start_row)
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
    if (start) { /* the same adds as onto a C set to start_row (0 + x keeps x's bits but -0) */
        const __m512 s0 = start_row != NULL ? _mm512_maskz_loadu_ps(m0, start_row) : _mm512_setzero_ps();
        const __m512 s1 = start_row != NULL && m1 ? _mm512_maskz_loadu_ps(m1, start_row + 16) : _mm512_setzero_ps();
        for (int r = 0; r < rows; r++) {
            float *c = C + (size_t)r * ldc;
            _mm512_mask_storeu_ps(c, m0, _mm512_add_ps(s0, acc[r][0]));
            if (m1)
                _mm512_mask_storeu_ps(c + 16, m1, _mm512_add_ps(s1, acc[r][1]));
        }
        return;
    }
    for (int r = 0; r < rows; r++) {
        float *c = C + (size_t)r * ldc;
        _mm512_mask_storeu_ps(c, m0, _mm512_add_ps(_mm512_maskz_loadu_ps(m0, c), acc[r][0]));
        if (m1)
            _mm512_mask_storeu_ps(c + 16, m1, _mm512_add_ps(_mm512_maskz_loadu_ps(m1, c + 16), acc[r][1]));
    }
}

enum { KPS_MAX = (KC + 1) / 2, TILE_HALVES = KPS_MAX * NR * 2 }; /* uint16 per packed tile of B */

/* op(B) (K, N) packed whole, once: tile (j, t) -- K block j (KC deep), columns t * NR.. --
 * at (j * tiles + t) * TILE_HALVES, the same tiles the product packs for itself. */
struct rg_bf16_panels {
    int N, K, tiles;
    size_t capacity; /* uint16 that tiles_data holds */
    uint16_t *tiles_data;
};

/* The tiles of op(B)'s columns n0..n0+n over K k0..k0+kn (blocks of KC, the last one
 * shorter): tile (j, t), K block j and columns n0 + t * NR.., at out + (j * tiles + t) *
 * TILE_HALVES. op(B)'s columns are B's rows when tb (pairs adjacent), B's columns otherwise. */
static void pack_b_tiles(int tb, const float *B, int ldb, int n0, int n, int k0, int kn, uint16_t *out)
{
    const int kblocks = (kn + KC - 1) / KC, tiles = (n + NR - 1) / NR;
#pragma omp parallel for schedule(static) if (kblocks * tiles > 1 && (double)kn * n > 32768)
    for (long jt = 0; jt < (long)kblocks * tiles; jt++) {
        const int j = (int)(jt / tiles), t = (int)(jt % tiles), kb = k0 + j * KC;
        const int kc = k0 + kn - kb < KC ? k0 + kn - kb : KC, cols = n - t * NR < NR ? n - t * NR : NR;
        pack(!tb, B, ldb, n0 + t * NR, cols, kb, kc, NR, (uint32_t *)(out + (size_t)jt * TILE_HALVES));
    }
}

/* C += op(A) op(B); B's tiles come from `prepared` when set, else are packed here per pass.
 * set: C = bias (N,) (0 when NULL) + op(A) op(B) instead, C's old values never read. */
static void gemm(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                 const rg_bf16_panels *prepared, int set, const float *bias, float *C, int ldc)
{
    if (M <= 0 || N <= 0 || K <= 0)
        return;
    enum { PANELS_WORDS = (MC / MR) * KPS_MAX * MR }; /* one MC x KC block of A */
    const int kblocks_max = ((K < KB ? K : KB) + KC - 1) / KC, m_blocks = (M + MC - 1) / MC;
    /* B is packed a group of NC blocks at a time (8 MiB of tiles at most), and the whole
     * group is then one parallel loop: a fork and a join per group, not two per NC block
     * (an LM head of 99 NC blocks, prepared, is one group). */
    const int group_blocks_max = (int)((8u << 20) / ((size_t)kblocks_max * (NC / NR) * TILE_HALVES * 2));
    const int group_cols = prepared != NULL ? N : (group_blocks_max > 1 ? group_blocks_max : 1) * NC;
    uint16_t *bpack = NULL;
    if (prepared == NULL) { /* as many tiles as the largest group: small products allocate little */
        const int tiles_max = ((N < group_cols ? N : group_cols) + NR - 1) / NR;
        if ((bpack = aligned_alloc(64, (size_t)kblocks_max * tiles_max * TILE_HALVES * 2)) == NULL)
            abort(); /* as the fp32 ops do on allocation failure: no partial result can pass */
    }
    /* A wider than one NC block would be packed again for every NC block: pack it once per
     * KB pass instead when it is not large (a 256-row chunk of an LM head is packed once,
     * not 99 times). 32 MiB of bf16 at most. */
    const int pack_a_once = N > NC && (double)m_blocks * kblocks_max * PANELS_WORDS * 4 <= 32.0 * 1024 * 1024;
    uint32_t *apack_all = NULL;
    if (pack_a_once && (apack_all = aligned_alloc(64, (size_t)m_blocks * kblocks_max * PANELS_WORDS * 4)) == NULL)
        abort();
    /* The passes over K go in order for every element of C, so it gets the same sums in
     * the same order however A and B are packed and the work is shared. */
    for (int kb0 = 0; kb0 < K; kb0 += KB) {
        const int kbn = K - kb0 < KB ? K - kb0 : KB, kblocks = (kbn + KC - 1) / KC;
        if (pack_a_once) {
#pragma omp parallel for schedule(static) if (m_blocks * kblocks > 1 && (double)M * kbn > 32768)
            for (int mj = 0; mj < m_blocks * kblocks; mj++) {
                const int mb = mj / kblocks, j = mj % kblocks, m0 = mb * MC, k0 = kb0 + j * KC;
                pack(ta, A, lda, m0, M - m0 < MC ? M - m0 : MC, k0, K - k0 < KC ? K - k0 : KC, MR,
                     apack_all + (size_t)mj * PANELS_WORDS);
            }
        }
        for (int g0 = 0; g0 < N; g0 += group_cols) {
            const int gc = N - g0 < group_cols ? N - g0 : group_cols, group_tiles = (gc + NR - 1) / NR;
            const int n_blocks = (gc + NC - 1) / NC;
            /* tile (j, t): K block j of this pass, columns g0 + t * NR.. (pack_b_tiles) */
            const uint16_t *btiles = bpack;
            size_t tile_stride = (size_t)group_tiles; /* tiles per K block */
            if (prepared != NULL) {
                btiles = prepared->tiles_data + (size_t)(kb0 / KC) * prepared->tiles * TILE_HALVES;
                tile_stride = (size_t)prepared->tiles;
            } else {
                pack_b_tiles(tb, B, ldb, g0, gc, kb0, kbn, bpack);
            }
            /* A task takes MC rows of C through every K block of the pass (and NC columns)
             * while they are in its cache, instead of the whole of C once per K block. */
#pragma omp parallel if (n_blocks * m_blocks > 1 && (double)M * gc * kbn > 1e6)
            {
                uint32_t *own = NULL;
                if (!pack_a_once && (own = aligned_alloc(64, (size_t)PANELS_WORDS * 4)) == NULL)
                    abort();
#pragma omp for schedule(dynamic, 1)
                for (int task = 0; task < n_blocks * m_blocks; task++) {
                    const int nb = task / m_blocks, mb = task % m_blocks; /* tasks in a row share B's tiles */
                    const int n0 = g0 + nb * NC, nc = N - n0 < NC ? N - n0 : NC, tiles = (nc + NR - 1) / NR;
                    const int m0 = mb * MC, mc = M - m0 < MC ? M - m0 : MC, panels = (mc + MR - 1) / MR;
                    const size_t t0 = (size_t)(n0 - g0) / NR + (prepared != NULL ? (size_t)g0 / NR : 0);
                    for (int j = 0; j < kblocks; j++) { /* K blocks in order: the same sums as one pass each */
                        const int k0 = kb0 + j * KC, kc = K - k0 < KC ? K - k0 : KC, kps = (kc + 1) / 2;
                        /* all the block's panels; op(A)'s rows are A's rows unless ta */
                        const uint32_t *apack = own;
                        if (pack_a_once)
                            apack = apack_all + (size_t)(mb * kblocks + j) * PANELS_WORDS;
                        else
                            pack(ta, A, lda, m0, mc, k0, kc, MR, own);
                        for (int t = 0; t < tiles; t++) {
                            const int cols = nc - t * NR < NR ? nc - t * NR : NR;
                            const uint16_t *tile = btiles + ((size_t)j * tile_stride + t0 + t) * TILE_HALVES;
                            for (int p = 0; p < panels; p++) {
                                const int rows = mc - p * MR < MR ? mc - p * MR : MR;
                                micro_kernel(kps, (const uint16_t *)(apack + (size_t)p * kps * MR), tile,
                                             C + (size_t)(m0 + p * MR) * ldc + n0 + t * NR, ldc, rows, cols,
                                             set && kb0 == 0 && j == 0, bias != NULL ? bias + n0 + t * NR : NULL);
                            }
                        }
                    }
                }
                free(own);
            }
        }
    }
    free(apack_all);
    free(bpack);
}

void rg_gemm_bf16(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc)
{
    gemm(ta, tb, M, N, K, A, lda, B, ldb, NULL, 0, NULL, C, ldc);
}

rg_bf16_panels *rg_bf16_panels_pack(rg_bf16_panels *reuse, int tb, int N, int K, const float *B, int ldb)
{
    const int kblocks = (K + KC - 1) / KC, tiles = (N + NR - 1) / NR;
    const size_t need = (size_t)kblocks * tiles * TILE_HALVES;
    rg_bf16_panels *p = reuse;
    if (N <= 0 || K <= 0 || (p != NULL && p->capacity < need)) {
        rg_bf16_panels_free(p);
        p = NULL;
    }
    if (N <= 0 || K <= 0)
        return NULL;
    if (p == NULL) {
        if ((p = calloc(1, sizeof(*p))) == NULL)
            return NULL;
        if ((p->tiles_data = aligned_alloc(64, need * sizeof(uint16_t))) == NULL) {
            free(p);
            return NULL;
        }
        p->capacity = need;
    }
    p->N = N, p->K = K, p->tiles = tiles;
    pack_b_tiles(tb, B, ldb, 0, N, 0, K, p->tiles_data);
    return p;
}

void rg_gemm_bf16_panels(int ta, int M, const float *A, int lda, const rg_bf16_panels *B, float *C, int ldc)
{
    gemm(ta, 0, M, B->N, B->K, A, lda, NULL, 0, B, 0, NULL, C, ldc);
}

void rg_gemm_bf16_linear(int M, int N, int K, const float *A, int lda, const float *W, int ldw,
                         const rg_bf16_panels *prepared, const float *bias, float *C, int ldc)
{
    gemm(0, 1, M, N, K, A, lda, W, ldw, prepared, 1, bias, C, ldc);
}
void rg_bf16_panels_free(rg_bf16_panels *panels)
{
    if (panels != NULL) {
        free(panels->tiles_data);
        free(panels);
    }
}
#else
void rg_gemm_bf16(int ta, int tb, int M, int N, int K, const float *A, int lda, const float *B, int ldb,
                  float *C, int ldc)
{
    (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)A, (void)lda, (void)B, (void)ldb, (void)C, (void)ldc;
    abort(); /* callers check rg_gemm_bf16_supported() first */
}

rg_bf16_panels *rg_bf16_panels_pack(rg_bf16_panels *reuse, int tb, int N, int K, const float *B, int ldb)
{
    (void)reuse, (void)tb, (void)N, (void)K, (void)B, (void)ldb;
    return NULL;
}

void rg_gemm_bf16_panels(int ta, int M, const float *A, int lda, const rg_bf16_panels *B, float *C, int ldc)
{
    (void)ta, (void)M, (void)A, (void)lda, (void)B, (void)C, (void)ldc;
    abort(); /* no panels can exist here */
}

void rg_gemm_bf16_linear(int M, int N, int K, const float *A, int lda, const float *W, int ldw,
                         const rg_bf16_panels *prepared, const float *bias, float *C, int ldc)
{
    (void)M, (void)N, (void)K, (void)A, (void)lda, (void)W, (void)ldw, (void)prepared, (void)bias, (void)C, (void)ldc;
    abort(); /* callers check rg_gemm_bf16_supported() first */
}

void rg_bf16_panels_free(rg_bf16_panels *panels)
{
    (void)panels; /* rg_bf16_panels_pack made none */
}
#endif


/* ------------------------------------------------------------------------ */
/* the "cpu-bf16" op table: the CPU table, linear layers through the above    */
/* ------------------------------------------------------------------------ */

static const rg_ops_table *fp32_ops; /* the CPU table this one starts from */

/* Whether a product of `rows` activation rows goes to bf16: from 128 rows on it is as
 * fast as OpenBLAS's fp32 or faster on every shape measured (the LM heads' 256-row
 * chunks included; `make bench-matmul`, benchmarks/README.md); with fewer, packing
 * both operands costs more than the product saves (the weight gradient most). */
static int use_bf16(int rows)
{
    return rows >= RG_GEMM_BF16_MIN_ROWS;
}

/* out (N, OC) = inp (N, IC) . weight (OC, IC)^T + bias (OC) */
static void matmul_forward_bf16(float *out, const float *inp, const float *weight, const float *bias, int N,
                                int IC, int OC)
{
    if (!use_bf16(N)) {
        fp32_ops->matmul_forward(out, inp, weight, bias, N, IC, OC);
        return;
    }
    rg_gemm_bf16_linear(N, OC, IC, inp, IC, weight, IC, NULL, bias, out, OC);
}

static void matmul_backward_bf16(float *dinp, float *dweight, float *dbias, const float *dout, const float *inp,
                                 const float *weight, int N, int IC, int OC)
{
    if (!use_bf16(N)) {
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

/* A weight packed once (rg_bf16_panels) for the forward's product (op(B) = weight^T)
 * and, when asked, the input gradient's (op(B) = weight); the fp32 weight itself for
 * products of fewer rows than the bf16 path takes. */
typedef struct {
    const float *weight;
    int IC, OC;
    int has_input_grad; /* input_grad's panels hold this weight (else they are spare room) */
    rg_bf16_panels *forward, *input_grad;
} prepared_weight;

static void weight_release_bf16(void *prepared)
{
    prepared_weight *p = prepared;
    if (p != NULL) {
        rg_bf16_panels_free(p->forward);
        rg_bf16_panels_free(p->input_grad);
        free(p);
    }
}

static void *weight_prepare_bf16(void *previous, const float *weight, int IC, int OC, int N, int input_grad)
{
    prepared_weight *p = previous;
    if (!use_bf16(N)) {
        weight_release_bf16(p);
        return NULL;
    }
    if (p == NULL && (p = calloc(1, sizeof(*p))) == NULL)
        return NULL;
    p->weight = weight, p->IC = IC, p->OC = OC, p->has_input_grad = input_grad;
    p->forward = rg_bf16_panels_pack(p->forward, 1, OC, IC, weight, IC);
    if (input_grad)
        p->input_grad = rg_bf16_panels_pack(p->input_grad, 0, IC, OC, weight, IC);
    if (p->forward == NULL || (input_grad && p->input_grad == NULL)) {
        weight_release_bf16(p);
        return NULL;
    }
    return p;
}

static void matmul_forward_prepared_bf16(float *out, const float *inp, const void *prepared, const float *bias,
                                         int N)
{
    const prepared_weight *p = prepared;
    if (!use_bf16(N)) {
        fp32_ops->matmul_forward(out, inp, p->weight, bias, N, p->IC, p->OC);
        return;
    }
    rg_gemm_bf16_linear(N, p->OC, p->IC, inp, p->IC, NULL, 0, p->forward, bias, out, p->OC);
}

static void matmul_input_grad_prepared_bf16(float *dinp, const float *dout, const void *prepared, int N)
{
    const prepared_weight *p = prepared;
    if (!use_bf16(N)) {
        fp32_ops->matmul_backward(dinp, NULL, NULL, dout, NULL, p->weight, N, p->IC, p->OC);
        return;
    }
    if (!p->has_input_grad)
        abort(); /* prepared without input_grad: a caller's bug, never a wrong gradient */
    rg_gemm_bf16_panels(0, N, dout, p->OC, p->input_grad, dinp, p->IC);
}

static rg_ops_table bf16_ops;

static void bf16_ops_init(void)
{
    fp32_ops = rg_ops_cpu();
    bf16_ops = *fp32_ops;
    bf16_ops.name = "cpu-bf16";
    bf16_ops.matmul_forward = matmul_forward_bf16;
    bf16_ops.matmul_backward = matmul_backward_bf16;
    bf16_ops.weight_prepare = weight_prepare_bf16;
    bf16_ops.weight_release = weight_release_bf16;
    bf16_ops.matmul_forward_prepared = matmul_forward_prepared_bf16;
    bf16_ops.matmul_input_grad_prepared = matmul_input_grad_prepared_bf16;
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
