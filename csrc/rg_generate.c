/*
 * rg_generate.c - batched prefill + cached decode with logits processors
 * (semantics in rg_generate.h).
 */
#include "rg_generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

rg_generate_config rg_generate_config_default(void)
{
    rg_generate_config c;
    memset(&c, 0, sizeof(c));
    c.sample.do_sample = 1;
    c.sample.temperature = 1.0f;
    c.sample.top_k = 0;
    c.sample.top_p = 1.0f;
    c.repetition_penalty = 1.0f;
    c.pad_id = 0;
    c.include_eos = 1;
    return c;
}

void rg_generate_repetition_penalty(float *logits, int V, const int32_t *history, int L, float penalty,
                                    unsigned char *seen)
{
    (void)V;
    for (int i = 0; i < L; i++) {
        const int32_t id = history[i];
        if (seen[id])
            continue; /* each distinct token once, as HF's gather/scatter */
        seen[id] = 1;
        const float x = logits[id];
        logits[id] = x > 0.0f ? x / penalty : x * penalty;
    }
    for (int i = 0; i < L; i++)
        seen[history[i]] = 0;
}

void rg_generate_no_repeat_ngram(float *logits, int V, const int32_t *history, int L, int n)
{
    (void)V;
    if (n <= 0 || L + 1 < n)
        return;
    const int32_t *prefix = history + (L - (n - 1)); /* the last n - 1 tokens */
    for (int s = 0; s + n <= L; s++) {
        if (n > 1 && memcmp(history + s, prefix, (size_t)(n - 1) * sizeof(int32_t)) != 0)
            continue;
        logits[history[s + n - 1]] = -INFINITY;
    }
}

static int is_eos(const rg_generate_config *c, int32_t token)
{
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] == token)
            return 1;
    return 0;
}

static int stop_requested(const rg_generate_config *c)
{
    return rg_interrupt_pending() || (c->stop_flag != NULL && *c->stop_flag != 0);
}

typedef struct gen_work {
    int32_t *tokens, *mask;   /* (bs, W) */
    float *logits;            /* (bs, V) */
    int32_t *next, *feed;     /* (bs,) */
    unsigned char *finished;  /* (bs,) */
    int32_t *hist;            /* (bs, W + max_new) real tokens of each row */
    int *hist_len;            /* (bs,) */
    unsigned char *seen;      /* (V,) */
} gen_work;

static void work_free(gen_work *w)
{
    free(w->tokens);
    free(w->mask);
    free(w->logits);
    free(w->next);
    free(w->feed);
    free(w->finished);
    free(w->hist);
    free(w->hist_len);
    free(w->seen);
}

/* One batch: rows [first, first + rows) of the call. */
static rg_status batch_generate(rg_model *model, const rg_generate_config *c, const int32_t *prompt_tokens,
                                const int64_t *offsets, int64_t first, int rows, gen_work *w,
                                int32_t *out_tokens, int32_t *out_lengths)
{
    const int V = model->config.vocab_size, max_new = c->max_new_tokens;
    int width = 0;
    for (int r = 0; r < rows; r++) {
        int len = (int)(offsets[first + r + 1] - offsets[first + r]);
        width = len > width ? len : width;
    }
    const int hist_cap = width + max_new;
    for (int r = 0; r < rows; r++) {
        const int len = (int)(offsets[first + r + 1] - offsets[first + r]);
        const int32_t *prompt = prompt_tokens + offsets[first + r];
        int32_t *tok = w->tokens + (size_t)r * width, *mask = w->mask + (size_t)r * width;
        for (int j = 0; j < width - len; j++) {
            tok[j] = c->pad_id;
            mask[j] = 0;
        }
        memcpy(tok + (width - len), prompt, (size_t)len * sizeof(int32_t));
        for (int j = width - len; j < width; j++)
            mask[j] = 1;
        memcpy(w->hist + (size_t)r * hist_cap, prompt, (size_t)len * sizeof(int32_t));
        w->hist_len[r] = len;
        w->finished[r] = 0;
        out_lengths[first + r] = 0;
        for (int j = 0; j < max_new; j++)
            out_tokens[(size_t)(first + r) * max_new + j] = c->pad_id;
    }
    if (stop_requested(c))
        return RG_ERR_INTERRUPTED;
    RG_TRY(rg_model_cache_reset(model, rows, width + max_new));
    RG_TRY(rg_model_cache_forward(model, w->tokens, w->mask, width, w->logits));
    rg_sample_config sc = c->sample;
    sc.row_offset = c->sample.row_offset + (uint64_t)first;
    for (int s = 0; s < max_new; s++) {
        for (int r = 0; r < rows; r++) {
            if (w->finished[r])
                continue;
            float *row = w->logits + (size_t)r * V;
            const int32_t *hist = w->hist + (size_t)r * hist_cap;
            if (c->repetition_penalty != 1.0f)
                rg_generate_repetition_penalty(row, V, hist, w->hist_len[r], c->repetition_penalty, w->seen);
            if (c->no_repeat_ngram_size > 0)
                rg_generate_no_repeat_ngram(row, V, hist, w->hist_len[r], c->no_repeat_ngram_size);
            if (s < c->min_new_tokens)
                for (int i = 0; i < c->n_eos; i++)
                    row[c->eos_ids[i]] = -INFINITY;
        }
        sc.step = (uint64_t)s;
        RG_TRY(rg_sample_logits(w->logits, rows, V, &sc, w->next));
        int running = 0;
        for (int r = 0; r < rows; r++) {
            if (w->finished[r])
                continue;
            const int32_t token = w->next[r];
            const int stop = is_eos(c, token);
            if (!stop || c->include_eos) {
                const int64_t row = first + r;
                out_tokens[(size_t)row * max_new + out_lengths[row]] = token;
                out_lengths[row]++;
            }
            w->hist[(size_t)r * hist_cap + w->hist_len[r]++] = token;
            w->finished[r] = (unsigned char)stop;
            running += !stop;
        }
        if (running == 0 || s == max_new - 1)
            break;
        if (stop_requested(c))
            return RG_ERR_INTERRUPTED;
        for (int r = 0; r < rows; r++) /* stopped rows keep their place; what they are fed is never read */
            w->feed[r] = w->finished[r] ? c->pad_id : w->next[r];
        RG_TRY(rg_model_cache_forward(model, w->feed, NULL, 1, w->logits));
    }
    return RG_OK;
}

rg_status rg_generate(rg_model *model, const int32_t *prompt_tokens, const int64_t *prompt_offsets,
                      int64_t n_prompts, const rg_generate_config *c, int32_t *out_tokens,
                      int32_t *out_lengths)
{
    if (model == NULL || c == NULL || n_prompts < 0 || (n_prompts > 0 && (prompt_offsets == NULL ||
        prompt_tokens == NULL || out_lengths == NULL || (c->max_new_tokens > 0 && out_tokens == NULL))))
        return RG_ERR_INVALID_ARG;
    if (c->max_new_tokens < 0 || c->min_new_tokens < 0 || c->batch_size < 0 || c->n_eos < 0 ||
        (c->n_eos > 0 && c->eos_ids == NULL) || c->no_repeat_ngram_size < 0 ||
        !(c->repetition_penalty > 0.0f) || isinf(c->repetition_penalty))
        return RG_ERR_INVALID_ARG;
    const rg_model_config *mc = &model->config;
    if (!mc->causal || mc->head != RG_HEAD_LM)
        return RG_ERR_UNSUPPORTED;
    const int V = mc->vocab_size;
    if (c->pad_id < 0 || c->pad_id >= V)
        return RG_ERR_LABEL_RANGE;
    for (int i = 0; i < c->n_eos; i++)
        if (c->eos_ids[i] < 0 || c->eos_ids[i] >= V)
            return RG_ERR_LABEL_RANGE;
    /* the sampler's settings, checked before any model work (as generation.py does) */
    {
        float probe = 0.0f;
        int32_t picked;
        RG_TRY(rg_sample_logits(&probe, 1, 1, &c->sample, &picked));
    }
    if (n_prompts == 0)
        return RG_OK;
    if (prompt_offsets[0] != 0)
        return RG_ERR_INVALID_ARG;
    const int bs = c->batch_size > 0 && c->batch_size < n_prompts ? c->batch_size
                   : (n_prompts > INT32_MAX ? INT32_MAX : (int)n_prompts);
    int max_width = 0;
    for (int64_t i = 0; i < n_prompts; i++) {
        const int64_t len = prompt_offsets[i + 1] - prompt_offsets[i];
        if (len < 0)
            return RG_ERR_INVALID_ARG;
        if (len == 0)
            return RG_ERR_EMPTY;
        if (len + c->max_new_tokens > mc->n_positions)
            return RG_ERR_SHAPE;
        for (int64_t j = prompt_offsets[i]; j < prompt_offsets[i + 1]; j++)
            if (prompt_tokens[j] < 0 || prompt_tokens[j] >= V)
                return RG_ERR_LABEL_RANGE;
        max_width = len > max_width ? (int)len : max_width;
    }
    if (c->max_new_tokens == 0) {
        for (int64_t i = 0; i < n_prompts; i++)
            out_lengths[i] = 0;
        return RG_OK;
    }
    gen_work w;
    memset(&w, 0, sizeof(w));
    const size_t cap = (size_t)max_width + (size_t)c->max_new_tokens;
    w.tokens = malloc((size_t)bs * max_width * sizeof(int32_t));
    w.mask = malloc((size_t)bs * max_width * sizeof(int32_t));
    w.logits = malloc((size_t)bs * V * sizeof(float));
    w.next = malloc((size_t)bs * sizeof(int32_t));
    w.feed = malloc((size_t)bs * sizeof(int32_t));
    w.finished = malloc((size_t)bs);
    w.hist = malloc((size_t)bs * cap * sizeof(int32_t));
    w.hist_len = malloc((size_t)bs * sizeof(int));
    w.seen = calloc((size_t)V, 1);
    rg_status status = RG_OK;
    if (!w.tokens || !w.mask || !w.logits || !w.next || !w.feed || !w.finished || !w.hist || !w.hist_len || !w.seen)
        status = RG_ERR_NOMEM;
    for (int64_t first = 0; status == RG_OK && first < n_prompts; first += bs) {
        const int rows = (int)(n_prompts - first < bs ? n_prompts - first : bs);
        status = batch_generate(model, c, prompt_tokens, prompt_offsets, first, rows, &w, out_tokens, out_lengths);
        if (status == RG_OK && c->progress != NULL && c->progress(c->progress_user, first + rows) != 0)
            status = first + rows < n_prompts ? RG_ERR_INTERRUPTED : RG_OK;
    }
    work_free(&w);
    return status;
}
