/*
 * test_cuda_attention.c - the CUDA attention (forward, backward, cached
 * forward) and softmax cross-entropy ops against the CPU table on the same
 * inputs (rg_test_cuda.h).
 *
 * Attention: T and HS off every tile size (T = 1, 37, 70, 300; HS = 16, 24,
 * 64, 130: one and several 64-dim chunks), grouped-query heads (NH = 6,
 * NKV = 2 and 3) and plain ones, causal and not, key_mask NULL or random
 * with one batch row hiding every key (its queries output zeros and get no
 * gradient), attention dropout 0, 0.1 and 0.2 (the GPU draws the CPU's mask,
 * so the results agree to float tolerance). `att` is not compared: the CPU
 * keeps each row's maximum and 1/sum there, the GPU its own saved state, so
 * each backward runs on its own forward's att. dqkv starts from random
 * values (the backward adds). The backward has one gradient, never NULL.
 *
 * Tolerances: out and dqkv 1e-5 relative + 1e-5 absolute. The GPU's
 * probabilities come from expf and a log-sum-exp, the CPU's from its
 * polynomial exp and a division (each within a few 1e-7 relative), and the
 * sums over T keys and HS dims are added in other orders: a CPU emulation
 * of these kernels (same arithmetic, FMA contracted) differed from the CPU
 * by at most 2.4e-6 on these cases (T = 300 with dropout the worst).
 *
 * Cross-entropy: V = 1000 and 50257, every fifth row ignored. lse 1e-5 +
 * 1e-5 (a float sum over V on both sides, tree vs blocks of 512); the loss
 * total 1e-5 relative; the count exact; the gradient 1e-5 relative + 1e-8
 * absolute (softmax values are ~1/V).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/rg_cuda.h"
#include "rg_test_cuda.h"

#define ATT_RTOL 1e-5
#define ATT_ATOL 1e-5

/* Copies pair->host to pair->dev after the host side was edited. */
static void pair_upload(rg_test_pair *pair)
{
    RG_CHECK_STATUS(rg_cuda_memcpy(pair->dev, pair->host, pair->n * 4, RG_CUDA_HOST_TO_DEVICE), RG_OK);
}

/* (B, T) key mask, about a quarter of the keys hidden, every key of batch
 * row `hidden_row` hidden (none when hidden_row < 0). */
static rg_test_pair key_mask_pair(int B, int T, uint64_t seed, int hidden_row)
{
    rg_test_pair mask = rg_test_pair_ints((size_t)B * T, seed, 0, 4, 0);
    if (hidden_row >= 0 && hidden_row < B)
        memset(RG_HOST_I(mask) + (size_t)hidden_row * T, 0, (size_t)T * sizeof(int32_t));
    pair_upload(&mask);
    return mask;
}

/* Forward then backward on both tables; every output and dqkv compared. */
static void attention_check(const rg_ops_table *gpu, const char *name, int B, int T, int NH, int NKV, int HS,
                            int causal, int with_mask, float attn_p, uint64_t seed)
{
    const rg_ops_table *cpu = rg_ops_cpu();
    const size_t row = ((size_t)NH + 2 * (size_t)NKV) * HS;
    const size_t n_qkv = (size_t)B * T * row, n_out = (size_t)B * T * NH * HS;
    const uint64_t stream = 0x5EED0000ull + seed;
    rg_test_pair qkv = rg_test_pair_random(n_qkv, seed, -2, 2);
    /* the last batch row hides every key (with B == 1 there is none to spare) */
    rg_test_pair mask = with_mask ? key_mask_pair(B, T, seed + 1, B > 1 ? B - 1 : -1) : rg_test_pair_none();
    rg_test_pair out = rg_test_pair_random(n_out, seed + 2, -1, 1); /* overwritten */
    rg_test_pair att = rg_test_pair_zeros((size_t)B * NH * T * RG_ATTENTION_ROW_STATS);
    cpu->attention_forward(RG_HOST_F(out), RG_HOST_F(att), RG_HOST_F(qkv), RG_HOST_I(mask), B, T, NH, NKV, HS,
                           causal, attn_p, stream);
    gpu->attention_forward(RG_DEV_F(out), RG_DEV_F(att), RG_DEV_F(qkv), RG_DEV_I(mask), B, T, NH, NKV, HS,
                           causal, attn_p, stream);
    char what[160];
    snprintf(what, sizeof(what), "%s out", name);
    rg_test_pair_expect_close(&out, ATT_RTOL, ATT_ATOL, what);

    rg_test_pair dout = rg_test_pair_random(n_out, seed + 3, -1, 1);
    rg_test_pair dqkv = rg_test_pair_random(n_qkv, seed + 4, -1, 1); /* the backward adds */
    cpu->attention_backward(RG_HOST_F(dqkv), RG_HOST_F(dout), RG_HOST_F(qkv), RG_HOST_F(att), RG_HOST_I(mask),
                            B, T, NH, NKV, HS, causal, attn_p, stream);
    gpu->attention_backward(RG_DEV_F(dqkv), RG_DEV_F(dout), RG_DEV_F(qkv), RG_DEV_F(att), RG_DEV_I(mask),
                            B, T, NH, NKV, HS, causal, attn_p, stream);
    snprintf(what, sizeof(what), "%s dqkv", name);
    rg_test_pair_expect_close(&dqkv, ATT_RTOL, ATT_ATOL, what);

    rg_test_pair_free(&qkv);
    rg_test_pair_free(&mask);
    rg_test_pair_free(&out);
    rg_test_pair_free(&att);
    rg_test_pair_free(&dout);
    rg_test_pair_free(&dqkv);
}

void test_cuda_attention_causal(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("attention_causal");
    if (gpu == NULL)
        return;
    /* B, T, NH, NKV, HS, causal, mask, p */
    attention_check(gpu, "causal gqa masked", 2, 37, 6, 2, 24, 1, 1, 0.0f, 1100);
    attention_check(gpu, "causal gqa masked dropout", 2, 37, 6, 2, 24, 1, 1, 0.2f, 1200);
    attention_check(gpu, "causal dropout", 2, 70, 4, 4, 64, 1, 0, 0.2f, 1300);
    attention_check(gpu, "causal masked", 3, 70, 2, 2, 16, 1, 1, 0.0f, 1400);
}

void test_cuda_attention_bidirectional(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("attention_bidirectional");
    if (gpu == NULL)
        return;
    attention_check(gpu, "bidirectional gqa masked dropout", 3, 70, 6, 3, 16, 0, 1, 0.2f, 2100);
    attention_check(gpu, "bidirectional gqa masked", 2, 37, 6, 2, 64, 0, 1, 0.0f, 2200);
    attention_check(gpu, "bidirectional", 2, 37, 4, 4, 24, 0, 0, 0.0f, 2300);
    attention_check(gpu, "bidirectional mqa dropout", 2, 70, 3, 1, 64, 0, 0, 0.2f, 2400);
}

/* HS = 130: three 64-dim chunks, the last of 2; T = 300: many key tiles. */
void test_cuda_attention_large(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("attention_large");
    if (gpu == NULL)
        return;
    attention_check(gpu, "wide heads causal masked dropout", 2, 37, 4, 2, 130, 1, 1, 0.2f, 3100);
    attention_check(gpu, "wide heads bidirectional", 1, 70, 2, 1, 130, 0, 0, 0.0f, 3200);
    attention_check(gpu, "long causal dropout", 1, 300, 4, 2, 64, 1, 0, 0.1f, 3300);
    attention_check(gpu, "long bidirectional masked", 2, 300, 2, 2, 24, 0, 1, 0.0f, 3400);
}

/* T = 1 (the saved state holds only the lse) and T = 2 with one head (the
 * smallest att, (B, 1, 2, 2), that also holds the key words). */
void test_cuda_attention_tiny(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("attention_tiny");
    if (gpu == NULL)
        return;
    attention_check(gpu, "one token causal masked dropout", 3, 1, 4, 2, 16, 1, 1, 0.2f, 4100);
    attention_check(gpu, "one token bidirectional", 2, 1, 2, 1, 24, 0, 0, 0.0f, 4200);
    attention_check(gpu, "two tokens one head causal masked", 3, 2, 1, 1, 16, 1, 1, 0.2f, 4300);
    attention_check(gpu, "two tokens one head bidirectional masked", 3, 2, 1, 1, 24, 0, 1, 0.0f, 4400);
}

/* Tn new queries at slots start.. over an S-slot cache; batch row 1 hides
 * every slot a query could see (zeros out). */
static void attention_cached_check(const rg_ops_table *gpu, const char *name, int B, int Tn, int S, int start,
                                   int NH, int NKV, int HS, uint64_t seed)
{
    const rg_ops_table *cpu = rg_ops_cpu();
    const size_t row = ((size_t)NH + 2 * (size_t)NKV) * HS;
    const size_t n_cache = (size_t)B * NKV * S * HS, n_out = (size_t)B * Tn * NH * HS;
    rg_test_pair qkv = rg_test_pair_random((size_t)B * Tn * row, seed, -2, 2);
    rg_test_pair k_cache = rg_test_pair_random(n_cache, seed + 1, -2, 2);
    rg_test_pair v_cache = rg_test_pair_random(n_cache, seed + 2, -2, 2);
    rg_test_pair mask = rg_test_pair_ints((size_t)B * S, seed + 3, 0, 4, 0);
    if (B > 1) {
        memset(RG_HOST_I(mask) + S, 0, (size_t)S * sizeof(int32_t));
        RG_HOST_I(mask)[S + S - 1] = 1; /* a slot past every query: still nothing visible */
        if (start + Tn >= S)
            RG_HOST_I(mask)[S + S - 1] = 0;
    }
    pair_upload(&mask);
    rg_test_pair out = rg_test_pair_random(n_out, seed + 4, -1, 1); /* overwritten */
    cpu->attention_cached_forward(RG_HOST_F(out), RG_HOST_F(qkv), RG_HOST_F(k_cache), RG_HOST_F(v_cache),
                                  RG_HOST_I(mask), B, Tn, S, start, NH, NKV, HS);
    gpu->attention_cached_forward(RG_DEV_F(out), RG_DEV_F(qkv), RG_DEV_F(k_cache), RG_DEV_F(v_cache),
                                  RG_DEV_I(mask), B, Tn, S, start, NH, NKV, HS);
    char what[160];
    snprintf(what, sizeof(what), "%s out", name);
    rg_test_pair_expect_close(&out, ATT_RTOL, ATT_ATOL, what);
    rg_test_pair_free(&qkv);
    rg_test_pair_free(&k_cache);
    rg_test_pair_free(&v_cache);
    rg_test_pair_free(&mask);
    rg_test_pair_free(&out);
}

void test_cuda_attention_cached(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("attention_cached");
    if (gpu == NULL)
        return;
    /* B, Tn, S, start, NH, NKV, HS */
    attention_cached_check(gpu, "cached one step", 2, 1, 50, 20, 6, 2, 24, 5100);
    attention_cached_check(gpu, "cached block", 2, 7, 90, 41, 6, 3, 64, 5200);
    attention_cached_check(gpu, "cached prompt", 3, 37, 37, 0, 4, 4, 16, 5300);
    attention_cached_check(gpu, "cached wide heads", 2, 5, 70, 64, 2, 1, 130, 5400);
}

/* Forward (lse, total, count) then backward (in-place gradient) on both. */
static void crossentropy_check(const rg_ops_table *gpu, const char *name, int N, int V, float lo, float hi,
                               int hole, uint64_t seed)
{
    const rg_ops_table *cpu = rg_ops_cpu();
    const size_t nv = (size_t)N * V;
    rg_test_pair logits = rg_test_pair_random(nv, seed, lo, hi);
    rg_test_pair targets = rg_test_pair_ints((size_t)N, seed + 1, 0, V, hole);
    rg_test_pair lse = rg_test_pair_random((size_t)N, seed + 2, -1, 1); /* overwritten, ignored rows too */
    long cpu_count = -1, gpu_count = -1;
    const double cpu_total =
        cpu->crossentropy_forward(RG_HOST_F(lse), RG_HOST_F(logits), RG_HOST_I(targets), N, V, &cpu_count);
    const double gpu_total =
        gpu->crossentropy_forward(RG_DEV_F(lse), RG_DEV_F(logits), RG_DEV_I(targets), N, V, &gpu_count);
    char what[160];
    snprintf(what, sizeof(what), "%s lse", name);
    rg_test_pair_expect_close(&lse, 1e-5, 1e-5, what);
    RG_CHECK_EQ(gpu_count, cpu_count);
    RG_CHECK_CLOSE(gpu_total, cpu_total, 1e-5 * fabs(cpu_total) + 1e-6);

    /* Both backwards read the CPU's lse (the forward's own error is checked above). */
    RG_CHECK_STATUS(rg_cuda_memcpy(lse.dev, lse.host, (size_t)N * 4, RG_CUDA_HOST_TO_DEVICE), RG_OK);
    const float scale = cpu_count > 0 ? 1.0f / (float)cpu_count : 1.0f;
    cpu->crossentropy_backward(RG_HOST_F(logits), RG_HOST_F(lse), RG_HOST_I(targets), N, V, scale);
    gpu->crossentropy_backward(RG_DEV_F(logits), RG_DEV_F(lse), RG_DEV_I(targets), N, V, scale);
    snprintf(what, sizeof(what), "%s dlogits", name);
    rg_test_pair_expect_close(&logits, 1e-5, 1e-8, what);

    rg_test_pair_free(&logits);
    rg_test_pair_free(&targets);
    rg_test_pair_free(&lse);
}

void test_cuda_crossentropy(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("crossentropy");
    if (gpu == NULL)
        return;
    /* N, V, logits range, every hole-th target ignored */
    crossentropy_check(gpu, "crossentropy V=1000", 37, 1000, -4, 4, 5, 6100);
    crossentropy_check(gpu, "crossentropy V=7 one row", 1, 7, -3, 3, 0, 6200);
    crossentropy_check(gpu, "crossentropy all ignored", 3, 100, -3, 3, 1, 6300);
}

void test_cuda_crossentropy_vocab(void)
{
    const rg_ops_table *gpu = rg_test_cuda_ops("crossentropy_vocab");
    if (gpu == NULL)
        return;
    crossentropy_check(gpu, "crossentropy V=50257", 11, 50257, -10, 10, 5, 6400);
    crossentropy_check(gpu, "crossentropy V=49152", 6, 49152, -20, 5, 4, 6500);
}
