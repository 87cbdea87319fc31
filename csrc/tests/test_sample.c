/* test_sample.c - greedy decoding and the kept sets of top-k / top-p sampling. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "rg_sample.h"
#include "rg_test.h"

#define DRAWS 2000

/* logits of the probabilities 0.05, 0.5, 0.15, 0.3: order 1, 3, 2, 0 */
static void four_token_logits(float *row)
{
    row[0] = logf(0.05f);
    row[1] = logf(0.5f);
    row[2] = logf(0.15f);
    row[3] = logf(0.3f);
}

/* Draws DRAWS rows of the same logits and reports which tokens appeared. */
static rg_status seen_tokens(const float *row, int V, rg_sample_config config, int *seen)
{
    static float batch[DRAWS * 8];
    static int32_t out[DRAWS];
    for (int b = 0; b < DRAWS; b++)
        memcpy(batch + (size_t)b * V, row, (size_t)V * sizeof(float));
    rg_status status = rg_sample_logits(batch, DRAWS, V, &config, out);
    memset(seen, 0, (size_t)V * sizeof(int));
    for (int b = 0; b < DRAWS && status == RG_OK; b++)
        seen[out[b]]++;
    return status;
}

void test_sample_greedy_is_argmax(void)
{
    float logits[2 * 5] = {0.1f, 2.0f, -1.0f, 2.0f, 0.0f, /* tie: lowest id */
                           -INFINITY, -3.0f, -2.5f, -INFINITY, -4.0f};
    int32_t out[2] = {-1, -1};
    rg_sample_config greedy = {.do_sample = 0, .temperature = 1.0f, .top_p = 1.0f};
    RG_CHECK_STATUS(rg_sample_logits(logits, 2, 5, &greedy, out), RG_OK);
    RG_CHECK_EQ(out[0], 1);
    RG_CHECK_EQ(out[1], 2);
    rg_sample_config top1 = {.do_sample = 1, .temperature = 1.0f, .top_k = 1, .top_p = 1.0f, .seed = 3};
    out[0] = out[1] = -1;
    RG_CHECK_STATUS(rg_sample_logits(logits, 2, 5, &top1, out), RG_OK);
    RG_CHECK_EQ(out[0], 1);
    RG_CHECK_EQ(out[1], 2);
}

void test_sample_top_p_keeps_minimal_nucleus(void)
{
    float row[4];
    four_token_logits(row);
    int seen[4];
    rg_sample_config c = {.do_sample = 1, .temperature = 1.0f, .top_p = 0.75f, .seed = 1};
    RG_CHECK_STATUS(seen_tokens(row, 4, c, seen), RG_OK);
    RG_CHECK(seen[1] > 0 && seen[3] > 0 && seen[0] == 0 && seen[2] == 0);
    /* 0.5 / 0.8 of the kept mass for token 1 */
    RG_CHECK_CLOSE(seen[1] / (double)DRAWS, 0.625, 0.04);
    c.top_p = 0.45f;
    RG_CHECK_STATUS(seen_tokens(row, 4, c, seen), RG_OK);
    RG_CHECK_EQ(seen[1], DRAWS);
    c.top_p = 0.85f;
    RG_CHECK_STATUS(seen_tokens(row, 4, c, seen), RG_OK);
    RG_CHECK(seen[1] > 0 && seen[3] > 0 && seen[2] > 0 && seen[0] == 0);
}

void test_sample_top_k_and_forbidden_tokens(void)
{
    float row[6] = {0.0f, 1.0f, -INFINITY, 0.5f, 0.9f, -1.0f};
    int seen[6];
    rg_sample_config c = {.do_sample = 1, .temperature = 2.0f, .top_k = 3, .top_p = 1.0f, .seed = 9};
    RG_CHECK_STATUS(seen_tokens(row, 6, c, seen), RG_OK);
    RG_CHECK(seen[1] > 0 && seen[4] > 0 && seen[3] > 0);
    RG_CHECK(seen[0] == 0 && seen[2] == 0 && seen[5] == 0);
    c.top_k = 0;
    RG_CHECK_STATUS(seen_tokens(row, 6, c, seen), RG_OK);
    RG_CHECK(seen[2] == 0 && seen[5] > 0);
}

void test_sample_reproducible_by_seed_and_step(void)
{
    float logits[8 * 6];
    for (int i = 0; i < 8 * 6; i++)
        logits[i] = (float)sin(0.7 * i);
    int32_t a[8], b[8], c[8];
    rg_sample_config config = {.do_sample = 1, .temperature = 1.0f, .top_p = 1.0f, .seed = 42, .step = 5};
    RG_CHECK_STATUS(rg_sample_logits(logits, 8, 6, &config, a), RG_OK);
    RG_CHECK_STATUS(rg_sample_logits(logits, 8, 6, &config, b), RG_OK);
    RG_CHECK(memcmp(a, b, sizeof(a)) == 0);
    int differs = 0;
    for (uint64_t step = 6; step < 12 && !differs; step++) {
        config.step = step;
        RG_CHECK_STATUS(rg_sample_logits(logits, 8, 6, &config, c), RG_OK);
        differs = memcmp(a, c, sizeof(a)) != 0;
    }
    RG_CHECK(differs);

    /* row_offset names the global row: rows 4..7 sampled alone with offset 4 match */
    config.step = 5;
    config.row_offset = 4;
    RG_CHECK_STATUS(rg_sample_logits(logits + 4 * 6, 4, 6, &config, c), RG_OK);
    RG_CHECK(memcmp(a + 4, c, 4 * sizeof(int32_t)) == 0);
}

void test_sample_rejects_bad_input(void)
{
    float row[3] = {0.0f, NAN, 1.0f};
    int32_t out[1];
    rg_sample_config c = {.do_sample = 1, .temperature = 1.0f, .top_p = 1.0f};
    RG_CHECK_STATUS(rg_sample_logits(row, 1, 3, &c, out), RG_ERR_NONFINITE);
    float masked[3] = {-INFINITY, -INFINITY, -INFINITY};
    RG_CHECK_STATUS(rg_sample_logits(masked, 1, 3, &c, out), RG_ERR_NONFINITE);
    float fine[3] = {0.0f, 1.0f, 2.0f};
    c.top_p = 0.0f;
    RG_CHECK_STATUS(rg_sample_logits(fine, 1, 3, &c, out), RG_ERR_INVALID_ARG);
    c.top_p = 1.0f;
    c.top_k = -2;
    RG_CHECK_STATUS(rg_sample_logits(fine, 1, 3, &c, out), RG_ERR_INVALID_ARG);
    c.top_k = 0;
    RG_CHECK_STATUS(rg_sample_logits(fine, 1, 0, &c, out), RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_sample_logits(NULL, 1, 3, &c, out), RG_ERR_INVALID_ARG);
}

void test_sample_top_k_keeps_ties_with_the_kth(void)
{
    /* top_k = 2 over {3, 2, 2, 2, 1}: HF keeps all three 2s along with the 3 */
    float row[5] = {3.0f, 2.0f, 2.0f, 2.0f, 1.0f};
    int seen[5];
    rg_sample_config c = {.do_sample = 1, .temperature = 1.0f, .top_k = 2, .top_p = 1.0f, .seed = 4};
    RG_CHECK_STATUS(seen_tokens(row, 5, c, seen), RG_OK);
    RG_CHECK(seen[0] > 0 && seen[1] > 0 && seen[2] > 0 && seen[3] > 0);
    RG_CHECK_EQ(seen[4], 0);
}

/* Issue #11: an eos id outside the vocabulary was silently ignored, and
 * eos = -1 with min_new_tokens banned the LAST token (a negative index). */
void test_sample_stop_ids_are_checked_and_banned(void)
{
    const int32_t inside[2] = {0, 4}, minus_one[1] = {-1}, past_end[2] = {1, 5};
    RG_CHECK_STATUS(rg_sample_check_ids(inside, 2, 5), RG_OK);
    RG_CHECK_STATUS(rg_sample_check_ids(minus_one, 1, 5), RG_ERR_LABEL_RANGE);
    RG_CHECK_STATUS(rg_sample_check_ids(past_end, 2, 5), RG_ERR_LABEL_RANGE);
    RG_CHECK_STATUS(rg_sample_check_ids(NULL, 0, 5), RG_OK);
    RG_CHECK_STATUS(rg_sample_check_ids(NULL, 1, 5), RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_sample_check_ids(inside, -1, 5), RG_ERR_INVALID_ARG);

    float logits[2 * 5] = {1, 2, 3, 4, 9, 9, 4, 3, 2, 1};
    float copy[2 * 5];
    memcpy(copy, logits, sizeof(logits));
    /* refused ids change nothing: in particular the last token stays allowed */
    RG_CHECK_STATUS(rg_sample_ban_tokens(logits, 2, 5, minus_one, 1), RG_ERR_LABEL_RANGE);
    RG_CHECK(memcmp(logits, copy, sizeof(logits)) == 0);
    RG_CHECK_STATUS(rg_sample_ban_tokens(logits, 2, 5, past_end, 2), RG_ERR_LABEL_RANGE);
    RG_CHECK(memcmp(logits, copy, sizeof(logits)) == 0);
    const int32_t eos[2] = {4, 0};
    RG_CHECK_STATUS(rg_sample_ban_tokens(logits, 2, 5, eos, 2), RG_OK);
    int32_t out[2];
    rg_sample_config greedy = {.do_sample = 0, .temperature = 1.0f, .top_p = 1.0f};
    RG_CHECK_STATUS(rg_sample_logits(logits, 2, 5, &greedy, out), RG_OK);
    RG_CHECK_EQ(out[0], 3); /* 4 banned */
    RG_CHECK_EQ(out[1], 1); /* 0 banned */
    for (int b = 0; b < 2; b++)
        RG_CHECK(logits[b * 5 + 4] == -INFINITY && logits[b * 5 + 0] == -INFINITY && logits[b * 5 + 2] == copy[b * 5 + 2]);
}
