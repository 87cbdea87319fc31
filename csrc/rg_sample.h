/*
 * rg_sample.h - choosing the next token from a batch of logits.
 *
 * Follows Hugging Face generate(): the logits are divided by the temperature,
 * then top-k keeps the k most likely tokens (and any tied with the k-th, as
 * HF does), then top-p (nucleus) keeps the smallest set of the most likely
 * remaining tokens whose probability sums to at least top_p (never fewer than
 * one); the draw is from the renormalised kept set. Greedy decoding (argmax, lowest id on ties) when do_sample is 0,
 * temperature <= 0 or top_k == 1.
 *
 * Each draw uses the counter-based generator keyed by (seed, step,
 * row_offset + row), so a run repeats exactly and rows do not depend on one
 * another, on the batch they were put in, or on threads.
 */
#ifndef RG_SAMPLE_H
#define RG_SAMPLE_H

#include <stdint.h>

#include "rg_common.h"

typedef struct rg_sample_config {
    int do_sample;      /* 0: greedy */
    float temperature;  /* > 0 divides the logits; <= 0 means greedy */
    int top_k;          /* keep the k most likely tokens; 0 disables */
    float top_p;        /* nucleus mass in (0, 1]; 1 disables */
    uint64_t seed;      /* random stream of the whole generation */
    uint64_t step;      /* index of the generated position (decode step) */
    uint64_t row_offset; /* global index of row 0, so that splitting a set of
                            prompts into batches does not change any row's draws */
} rg_sample_config;

/* The counter of the uniform draw for (step, row): distinct for every pair
 * with row < 2^32. */
static inline uint64_t rg_sample_counter(uint64_t step, uint64_t row)
{
    return (step << 32) ^ row;
}

/* Picks one token per row.
 * logits: (B, V) float32; NaN or +inf, or a row with no finite value, is
 *         RG_ERR_NONFINITE (-inf is allowed: it marks a forbidden token).
 * out:    (B,) int32 token ids in [0, V).
 * RG_ERR_INVALID_ARG for top_k < 0 or top_p outside (0, 1] or NaN temperature. */
rg_status rg_sample_logits(const float *logits, int B, int V, const rg_sample_config *config,
                           int32_t *out);

/* Stop tokens (eos ids). RG_OK when each of ids (n_ids,) is a token of a
 * V-token vocabulary, RG_ERR_LABEL_RANGE when one is not (a negative id
 * included: it must not wrap around to the last token, as a negative index
 * in Python would), RG_ERR_INVALID_ARG for a null array or V <= 0. */
rg_status rg_sample_check_ids(const int32_t *ids, int n_ids, int V);

/* Forbids the tokens ids (n_ids,) in every row of logits (B, V), in place
 * (-inf, which rg_sample_logits never draws): min_new_tokens before the
 * first eos may be produced. Checks the ids as rg_sample_check_ids first and
 * changes nothing when one is refused. */
rg_status rg_sample_ban_tokens(float *logits, int B, int V, const int32_t *ids, int n_ids);

#endif /* RG_SAMPLE_H */
