/*
 * rg_generate.h - the whole decode loop of reviewgen/generation.py in one
 * call: left-padded prefill, then one cached decode step per new token,
 * with the logits processors transformers' generate() users expect, then
 * the core sampler (rg_sample.h: temperature, top-k, top-p, greedy).
 *
 * For each batch of at most batch_size prompts (row r of the call is row
 * row_offset + r of the sampler's streams, so the split into batches does
 * not change any draw):
 *   1. the prompts are left-padded with pad_id to the batch's longest
 *      (mask 0 on padding); rg_model_cache_reset(rows, width + max_new_tokens);
 *      rg_model_cache_forward(prompts, mask) gives the first logits;
 *   2. for step s = 0 .. max_new_tokens - 1, on the (rows, V) logits of the
 *      rows still running, in this order (as transformers orders them):
 *      - repetition_penalty p != 1 (HF RepetitionPenaltyLogitsProcessor):
 *        every distinct token of the row's prompt and generated tokens gets
 *        logit / p when the logit is > 0, logit * p otherwise;
 *      - no_repeat_ngram_size n > 0 (HF NoRepeatNGramLogitsProcessor): when
 *        the row holds L >= n - 1 tokens, every token that would complete an
 *        n-gram already present in the row (its last n - 1 tokens followed by
 *        that token) gets -inf;
 *      - s < min_new_tokens: every eos id gets -inf;
 *      then rg_sample_logits with step = s picks one token per row;
 *   3. a running row takes its token (kept in the output unless it is an eos
 *      id and include_eos is 0) and stops after an eos id; the batch ends
 *      when every row stopped or after max_new_tokens; otherwise one
 *      rg_model_cache_forward of (rows, 1) feeds the new tokens (pad_id for
 *      stopped rows, whose logits are never read).
 * "The row's tokens" are its REAL tokens (prompt without padding, then the
 * generated ones); transformers also counts the left padding there, which
 * only differs for the pad token itself.
 *
 * Interruption: *stop_flag or rg_interrupt_pending() is polled before every
 * decode step (the model polls nothing during cache_forward): RG_ERR_INTERRUPTED,
 * with the rows of the finished batches complete in the output.
 */
#ifndef RG_GENERATE_H
#define RG_GENERATE_H

#include <signal.h>
#include <stdint.h>

#include "rg_common.h"
#include "rg_model.h"
#include "rg_sample.h"

/* Called after each batch with the number of prompts done; non-zero stops. */
typedef int (*rg_generate_progress_fn)(void *user, int64_t rows_done);

typedef struct rg_generate_config {
    int max_new_tokens;         /* >= 0 (0: every output is empty) */
    int min_new_tokens;         /* >= 0: eos ids forbidden before that many new tokens */
    rg_sample_config sample;    /* do_sample, temperature, top_k, top_p, seed; step is the decode
                                   step, row_offset is added to each prompt's index */
    float repetition_penalty;   /* > 0; 1 disables */
    int no_repeat_ngram_size;   /* >= 0; 0 disables */
    const int32_t *eos_ids;     /* (n_eos,) ids in [0, V) that end a row, or NULL */
    int n_eos;
    int32_t pad_id;             /* in [0, V): left padding and the feed of stopped rows */
    int include_eos;            /* keep the eos token in the output */
    int batch_size;             /* prompts per batch; 0: all at once */
    rg_generate_progress_fn progress; /* may be NULL */
    void *progress_user;
    volatile sig_atomic_t *stop_flag; /* may be NULL */
} rg_generate_config;

/* Defaults of generation.py's generate(): sampling at temperature 1, no
 * top-k/top-p, penalty 1, no eos, pad 0, include_eos, one batch. */
rg_generate_config rg_generate_config_default(void);

/* Continues each prompt.
 * prompt_tokens:  (prompt_offsets[n_prompts],) the prompts one after another
 * prompt_offsets: (n_prompts + 1,) prompt i is prompt_tokens[offsets[i] .. offsets[i+1])
 * out_tokens:     (n_prompts, max_new_tokens) new ids, pad_id after each row's end
 * out_lengths:    (n_prompts,) new ids per prompt
 * Errors: RG_ERR_INVALID_ARG (null pointer, negative size, penalty <= 0 or
 * NaN, a sampler setting out of range), RG_ERR_UNSUPPORTED (not a causal LM),
 * RG_ERR_EMPTY (an empty prompt), RG_ERR_LABEL_RANGE (a prompt, eos or pad id
 * outside [0, V)), RG_ERR_SHAPE (longest prompt + max_new_tokens >
 * n_positions), RG_ERR_NONFINITE (a row left with no allowed token),
 * RG_ERR_INTERRUPTED, RG_ERR_NOMEM. The model's cache is replaced. */
rg_status rg_generate(rg_model *model, const int32_t *prompt_tokens, const int64_t *prompt_offsets,
                      int64_t n_prompts, const rg_generate_config *config, int32_t *out_tokens,
                      int32_t *out_lengths);

/* The processors on their own, for one row (exposed for tests and bindings).
 * logits: (V,) modified in place; history: (L,) the row's tokens, each in [0, V). */
void rg_generate_repetition_penalty(float *logits, int V, const int32_t *history, int L, float penalty,
                                    unsigned char *seen /* (V,) zeroed scratch, left zeroed */);
void rg_generate_no_repeat_ngram(float *logits, int V, const int32_t *history, int L, int n);

#endif /* RG_GENERATE_H */
