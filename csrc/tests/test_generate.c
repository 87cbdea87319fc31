/* test_generate.c - rg_generate against a step-by-step loop of cache_forward
 * and rg_sample_logits calls with slow reference logits processors. */
#include "tiny_model.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "rg_generate.h"
#include "rg_sample.h"
#include "rg_test.h"

#define MAXV 64
#define MAXL 64

/* HF repetition penalty, the slow way: every vocabulary id is looked up in the history. */
static void slow_penalty(float *row, int V, const int32_t *hist, int L, float p)
{
    for (int v = 0; v < V; v++) {
        int present = 0;
        for (int i = 0; i < L; i++)
            present |= hist[i] == v;
        if (present)
            row[v] = row[v] > 0 ? row[v] / p : row[v] * p;
    }
}

/* No-repeat n-grams, the slow way: for each candidate v, does (last n-1 tokens, v) occur? */
static void slow_ngram(float *row, int V, const int32_t *hist, int L, int n)
{
    if (L + 1 < n)
        return;
    int32_t cand[MAXL + 1];
    for (int v = 0; v < V; v++) {
        memcpy(cand, hist + L - (n - 1), (size_t)(n - 1) * sizeof(int32_t));
        cand[n - 1] = v;
        for (int s = 0; s + n <= L; s++) {
            int same = 1;
            for (int j = 0; j < n; j++)
                same &= hist[s + j] == cand[j];
            if (same) {
                row[v] = -INFINITY;
                break;
            }
        }
    }
}

/* generation.py's _generate_batch with the processors added, one call at a time. */
static rg_status reference_generate(rg_model *m, const int32_t *toks, const int64_t *off, int n,
                                    const rg_generate_config *c, int32_t *out, int32_t *lens)
{
    const int V = m->config.vocab_size, bs = c->batch_size > 0 ? c->batch_size : n, max_new = c->max_new_tokens;
    for (int first = 0; first < n; first += bs) {
        int rows = n - first < bs ? n - first : bs, width = 0;
        for (int r = 0; r < rows; r++)
            width = (int)(off[first + r + 1] - off[first + r]) > width ? (int)(off[first + r + 1] - off[first + r]) : width;
        int32_t pad[16 * MAXL], mask[16 * MAXL], hist[16][MAXL + MAXL], hl[16], next[16], fin[16] = {0};
        float logits[16 * MAXV];
        for (int r = 0; r < rows; r++) {
            int len = (int)(off[first + r + 1] - off[first + r]);
            for (int j = 0; j < width; j++) {
                int k = j - (width - len);
                pad[r * width + j] = k >= 0 ? toks[off[first + r] + k] : c->pad_id;
                mask[r * width + j] = k >= 0;
            }
            memcpy(hist[r], toks + off[first + r], (size_t)len * sizeof(int32_t));
            hl[r] = len;
            lens[first + r] = 0;
            for (int j = 0; j < max_new; j++)
                out[(first + r) * max_new + j] = c->pad_id;
        }
        RG_TRY(rg_model_cache_reset(m, rows, width + max_new));
        RG_TRY(rg_model_cache_forward(m, pad, mask, width, logits));
        for (int s = 0; s < max_new; s++) {
            for (int r = 0; r < rows; r++) {
                if (fin[r])
                    continue;
                if (c->repetition_penalty != 1.0f)
                    slow_penalty(logits + r * V, V, hist[r], hl[r], c->repetition_penalty);
                if (c->no_repeat_ngram_size > 0)
                    slow_ngram(logits + r * V, V, hist[r], hl[r], c->no_repeat_ngram_size);
                if (s < c->min_new_tokens)
                    for (int e = 0; e < c->n_eos; e++)
                        logits[r * V + c->eos_ids[e]] = -INFINITY;
            }
            rg_sample_config sc = c->sample;
            sc.step = (uint64_t)s;
            sc.row_offset = (uint64_t)first;
            RG_TRY(rg_sample_logits(logits, rows, V, &sc, next));
            int all = 1;
            for (int r = 0; r < rows; r++) {
                if (fin[r])
                    continue;
                int stop = 0;
                for (int e = 0; e < c->n_eos; e++)
                    stop |= next[r] == c->eos_ids[e];
                if (!stop || c->include_eos)
                    out[(first + r) * max_new + lens[first + r]++] = next[r];
                hist[r][hl[r]++] = next[r];
                fin[r] = stop;
                all &= stop;
            }
            if (all || s == max_new - 1)
                break;
            int32_t feed[16];
            for (int r = 0; r < rows; r++)
                feed[r] = fin[r] ? c->pad_id : next[r];
            RG_TRY(rg_model_cache_forward(m, feed, NULL, 1, logits));
        }
    }
    return RG_OK;
}

void test_generate_processors_by_hand(void)
{
    float row[5] = {2.0f, -1.0f, 0.5f, 3.0f, 0.0f};
    unsigned char seen[5] = {0};
    const int32_t hist[3] = {0, 1, 0};
    rg_generate_repetition_penalty(row, 5, hist, 3, 2.0f, seen);
    RG_CHECK(row[0] == 1.0f && row[1] == -2.0f && row[2] == 0.5f && row[3] == 3.0f); /* 0 once, not twice */
    RG_CHECK(seen[0] == 0 && seen[1] == 0);

    const int32_t h[5] = {1, 2, 3, 1, 2};
    float a[5] = {0}, b[5] = {0}, c1[5] = {0}, d[5] = {0};
    rg_generate_no_repeat_ngram(a, 5, h, 5, 3); /* (1,2) was followed by 3 */
    RG_CHECK(a[3] == -INFINITY && a[0] == 0 && a[1] == 0 && a[2] == 0 && a[4] == 0);
    rg_generate_no_repeat_ngram(b, 5, h, 5, 2); /* (2) was followed by 3 */
    RG_CHECK(b[3] == -INFINITY && b[1] == 0 && b[2] == 0);
    rg_generate_no_repeat_ngram(c1, 5, h, 5, 1); /* every seen token */
    RG_CHECK(c1[1] == -INFINITY && c1[2] == -INFINITY && c1[3] == -INFINITY && c1[0] == 0 && c1[4] == 0);
    rg_generate_no_repeat_ngram(d, 5, h, 2, 4); /* too short for a 4-gram */
    RG_CHECK(d[0] == 0 && d[1] == 0 && d[2] == 0 && d[3] == 0);
}

static void prompts_make(int32_t *toks, int64_t *off, int n, int V)
{
    off[0] = 0;
    for (int i = 0; i < n; i++) {
        int len = 1 + (i * 3) % 5;
        for (int j = 0; j < len; j++)
            toks[off[i] + j] = 1 + (i * 7 + j * 5) % (V - 1);
        off[i + 1] = off[i] + len;
    }
}

static void compare_case(rg_generate_config c, const char *what)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *m = NULL;
    if (!RG_CHECK(rg_model_init(&m, &mc) == RG_OK))
        return;
    /* sharper logits than the default init, so sampling and bans matter */
    for (size_t i = 0; i < m->table.total; i++)
        m->params[i] *= 6.0f;
    enum { N = 5 };
    int32_t toks[N * 5], out[N * 16], ref[N * 16], lens[N], ref_lens[N];
    int64_t off[N + 1];
    prompts_make(toks, off, N, mc.vocab_size);
    RG_CHECK_STATUS(rg_generate(m, toks, off, N, &c, out, lens), RG_OK);
    RG_CHECK_STATUS(reference_generate(m, toks, off, N, &c, ref, ref_lens), RG_OK);
    int same = memcmp(lens, ref_lens, sizeof(lens)) == 0 && memcmp(out, ref, (size_t)N * c.max_new_tokens * 4) == 0;
    if (!RG_CHECK(same))
        fprintf(stderr, "    case: %s\n", what);
    for (int i = 0; i < N; i++) {
        RG_CHECK(lens[i] >= 0 && lens[i] <= c.max_new_tokens);
        int eos_at = -1;
        for (int j = 0; j < lens[i]; j++)
            for (int e = 0; e < c.n_eos; e++)
                if (out[i * c.max_new_tokens + j] == c.eos_ids[e] && eos_at < 0)
                    eos_at = j;
        if (eos_at >= 0) {
            RG_CHECK(eos_at == lens[i] - 1);        /* a row ends at its eos */
            RG_CHECK(eos_at >= c.min_new_tokens);   /* never before min_new_tokens */
        }
        if (c.no_repeat_ngram_size == 2) { /* no bigram twice in prompt + output */
            int32_t seq[32];
            int L = (int)(off[i + 1] - off[i]);
            memcpy(seq, toks + off[i], (size_t)L * 4);
            memcpy(seq + L, out + i * c.max_new_tokens, (size_t)lens[i] * 4);
            L += lens[i];
            int repeated = 0;
            for (int a = 0; a + 1 < L; a++)
                for (int b = a + 1; b + 1 < L; b++)
                    repeated |= seq[a] == seq[b] && seq[a + 1] == seq[b + 1];
            RG_CHECK(!repeated);
        }
    }
    rg_model_free(m);
}

void test_generate_equals_step_by_step(void)
{
    const int32_t eos[2] = {4, 9};
    rg_generate_config c = rg_generate_config_default();
    c.max_new_tokens = 12;
    c.eos_ids = eos;
    c.n_eos = 2;
    c.pad_id = 0;
    c.sample.seed = 99;
    c.batch_size = 2; /* three batches: row offsets matter */
    compare_case(c, "plain sampling");
    c.sample.do_sample = 0;
    compare_case(c, "greedy");
    c.sample.do_sample = 1;
    c.sample.temperature = 0.7f;
    c.sample.top_k = 5;
    c.sample.top_p = 0.9f;
    c.repetition_penalty = 1.5f;
    compare_case(c, "top-k, top-p, repetition penalty");
    c.no_repeat_ngram_size = 2;
    c.min_new_tokens = 3;
    c.include_eos = 0;
    compare_case(c, "no-repeat bigrams, min_new_tokens, eos dropped");
    c.batch_size = 0;
    c.repetition_penalty = 0.8f; /* < 1 favours repeats */
    c.no_repeat_ngram_size = 3;
    compare_case(c, "one batch, penalty < 1, trigrams");
}

void test_generate_batches_do_not_change_rows(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *m = NULL;
    if (!RG_CHECK(rg_model_init(&m, &mc) == RG_OK))
        return;
    for (size_t i = 0; i < m->table.total; i++)
        m->params[i] *= 6.0f;
    enum { N = 6 };
    int32_t toks[N * 5], a[N * 8], b[N * 8], la[N], lb[N];
    int64_t off[N + 1];
    prompts_make(toks, off, N, mc.vocab_size);
    rg_generate_config c = rg_generate_config_default();
    c.max_new_tokens = 8;
    c.sample.seed = 5;
    c.repetition_penalty = 1.2f;
    RG_CHECK_STATUS(rg_generate(m, toks, off, N, &c, a, la), RG_OK);
    c.batch_size = 4;
    RG_CHECK_STATUS(rg_generate(m, toks, off, N, &c, b, lb), RG_OK);
    /* left padding differs between the splits; a row's draws must not (up to float rounding
     * of the padded prefill, which does not move these sharp logits) */
    RG_CHECK(memcmp(la, lb, sizeof(la)) == 0 && memcmp(a, b, sizeof(a)) == 0);
    rg_model_free(m);
}

static int count_batches(void *user, int64_t done)
{
    int *calls = user;
    (*calls)++;
    return done >= 4; /* stop after the batch that reaches row 4 */
}

void test_generate_min_new_tokens_eos_and_errors(void)
{
    rg_model_config mc = tiny_lm_config();
    rg_model *m = NULL;
    if (!RG_CHECK(rg_model_init(&m, &mc) == RG_OK))
        return;
    for (size_t i = 0; i < m->table.total; i++)
        m->params[i] *= 6.0f;
    int32_t prompt[3] = {3, 5, 7}, out[10], len = -1;
    int64_t off[2] = {0, 3};
    rg_generate_config c = rg_generate_config_default();
    c.sample.do_sample = 0;
    c.max_new_tokens = 10;
    RG_CHECK_STATUS(rg_generate(m, prompt, off, 1, &c, out, &len), RG_OK);
    RG_CHECK_EQ(len, 10);
    int32_t first = out[0], eos = first;
    c.eos_ids = &eos;
    c.n_eos = 1;
    RG_CHECK_STATUS(rg_generate(m, prompt, off, 1, &c, out, &len), RG_OK);
    RG_CHECK_EQ(len, 1); /* greedy's first token is the eos: done, eos kept */
    RG_CHECK_EQ(out[0], first);
    RG_CHECK_EQ(out[1], c.pad_id);
    c.include_eos = 0;
    RG_CHECK_STATUS(rg_generate(m, prompt, off, 1, &c, out, &len), RG_OK);
    RG_CHECK_EQ(len, 0);
    c.min_new_tokens = 2;
    RG_CHECK_STATUS(rg_generate(m, prompt, off, 1, &c, out, &len), RG_OK);
    RG_CHECK(len >= 2 && out[0] != eos && out[1] != eos);

    /* errors */
    c = rg_generate_config_default();
    c.max_new_tokens = 4;
    int32_t bad_eos = 13;
    c.eos_ids = &bad_eos;
    c.n_eos = 1;
    RG_CHECK_STATUS(rg_generate(m, prompt, off, 1, &c, out, &len), RG_ERR_LABEL_RANGE);
    c.n_eos = 0;
    c.pad_id = -1;
    RG_CHECK_STATUS(rg_generate(m, prompt, off, 1, &c, out, &len), RG_ERR_LABEL_RANGE);
    c.pad_id = 0;
    int64_t empty[2] = {0, 0};
    RG_CHECK_STATUS(rg_generate(m, prompt, empty, 1, &c, out, &len), RG_ERR_EMPTY);
    c.max_new_tokens = 30; /* 3 + 30 > 32 positions */
    RG_CHECK_STATUS(rg_generate(m, prompt, off, 1, &c, out, &len), RG_ERR_SHAPE);
    c.max_new_tokens = 4;
    c.repetition_penalty = 0.0f;
    RG_CHECK_STATUS(rg_generate(m, prompt, off, 1, &c, out, &len), RG_ERR_INVALID_ARG);
    c.repetition_penalty = 1.0f;
    c.sample.top_p = 0.0f;
    RG_CHECK_STATUS(rg_generate(m, prompt, off, 1, &c, out, &len), RG_ERR_INVALID_ARG);
    c.sample.top_p = 1.0f;
    prompt[1] = 13;
    RG_CHECK_STATUS(rg_generate(m, prompt, off, 1, &c, out, &len), RG_ERR_LABEL_RANGE);
    prompt[1] = 5;

    /* progress once per batch; its "stop" ends the call; the stop flag too */
    enum { N = 6 };
    int32_t toks[N * 5], many[N * 4], lens[N];
    int64_t offs[N + 1];
    prompts_make(toks, offs, N, mc.vocab_size);
    int calls = 0;
    c.batch_size = 2;
    c.progress = count_batches;
    c.progress_user = &calls;
    RG_CHECK_STATUS(rg_generate(m, toks, offs, N, &c, many, lens), RG_ERR_INTERRUPTED);
    RG_CHECK_EQ(calls, 2);
    c.progress = NULL;
    volatile sig_atomic_t flag = 1;
    c.stop_flag = &flag;
    RG_CHECK_STATUS(rg_generate(m, toks, offs, N, &c, many, lens), RG_ERR_INTERRUPTED);
    rg_model_free(m);
}
