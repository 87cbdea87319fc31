/*
 * rg_sample.c - temperature / top-k / top-p sampling and greedy decoding
 * (semantics in rg_sample.h).
 */
#include "rg_sample.h"

#include <math.h>
#include <stdlib.h>

#include "rg_rng.h"

typedef struct candidate {
    float logit;   /* raw logit; the order is the same after dividing by the temperature */
    int32_t index;
} candidate;

/* Strict total order: the more likely token first, the lower id on ties. */
static inline int candidate_before(const candidate *a, const candidate *b)
{
    return a->logit > b->logit || (a->logit == b->logit && a->index < b->index);
}

static int compare_candidates(const void *pa, const void *pb)
{
    const candidate *a = pa, *b = pb;
    if (candidate_before(a, b))
        return -1;
    return candidate_before(b, a) ? 1 : 0;
}

/* Min-heap on candidate_before: heap[0] is the least likely of the kept k. */
static void heap_sift_down(candidate *heap, int n, int i)
{
    for (;;) {
        int worst = i, left = 2 * i + 1, right = left + 1;
        if (left < n && candidate_before(&heap[worst], &heap[left]))
            worst = left;
        if (right < n && candidate_before(&heap[worst], &heap[right]))
            worst = right;
        if (worst == i)
            return;
        candidate tmp = heap[i];
        heap[i] = heap[worst];
        heap[worst] = tmp;
        i = worst;
    }
}

/* Checks a row; finds its argmax. RG_ERR_NONFINITE for NaN, +inf or no finite value. */
static rg_status row_argmax(const float *row, int V, int32_t *argmax_out)
{
    int32_t best = -1;
    float best_value = -INFINITY;
    for (int i = 0; i < V; i++) {
        float x = row[i];
        if (isnan(x) || x == INFINITY)
            return RG_ERR_NONFINITE;
        if (x != -INFINITY && (best < 0 || x > best_value)) {
            best = i;
            best_value = x;
        }
    }
    if (best < 0)
        return RG_ERR_NONFINITE;
    *argmax_out = best;
    return RG_OK;
}

/* The k most likely finite tokens of a row, most likely first, via a size-k
 * min-heap: O(V log k). work: (k,). Returns how many were found (< k when the
 * row has fewer finite tokens). */
static int select_top(const float *row, int V, int k, candidate *work)
{
    int n = 0;
    for (int i = 0; i < V; i++) {
        if (row[i] == -INFINITY)
            continue;
        candidate c = {row[i], i};
        if (n < k) {
            int j = n++;
            work[j] = c;
            while (j > 0 && candidate_before(&work[(j - 1) / 2], &work[j])) {
                candidate tmp = work[j];
                work[j] = work[(j - 1) / 2];
                work[(j - 1) / 2] = tmp;
                j = (j - 1) / 2;
            }
        } else if (candidate_before(&c, &work[0])) {
            work[0] = c;
            heap_sift_down(work, n, 0);
        }
    }
    qsort(work, (size_t)n, sizeof(candidate), compare_candidates);
    return n;
}

/* Samples one row. row: (V,); work: (V,) candidates; probs: (V,) unnormalised
 * probabilities exp((logit - max) / T) of the candidates in work. */
static int32_t sample_row(const float *row, int V, const rg_sample_config *config, float max_logit,
                          uint64_t counter, candidate *work, double *probs)
{
    double inv_temperature = 1.0 / (double)config->temperature;
    int use_top_p = config->top_p < 1.0f;
    int n = 0;
    double mass = 0.0; /* of every candidate the nucleus is measured against */

    if (config->top_k > 0 && config->top_k < V) {
        n = select_top(row, V, config->top_k, work);
        /* HF keeps every token tied with the k-th logit: widen to all of them. */
        if (n == config->top_k) {
            float kth = work[n - 1].logit;
            int ties_kept = 0, ties_total = 0;
            for (int i = 0; i < n; i++)
                ties_kept += work[i].logit == kth;
            for (int i = 0; i < V; i++)
                ties_total += row[i] == kth;
            if (ties_total > ties_kept) {
                n = 0;
                for (int i = 0; i < V; i++) {
                    if (row[i] >= kth) {
                        work[n].logit = row[i];
                        work[n].index = i;
                        n++;
                    }
                }
                qsort(work, (size_t)n, sizeof(candidate), compare_candidates);
            }
        }
        for (int i = 0; i < n; i++) {
            probs[i] = exp(((double)work[i].logit - (double)max_logit) * inv_temperature);
            mass += probs[i];
        }
    } else if (use_top_p) {
        /* The nucleus needs the tokens in order of probability, but usually only
         * a few hundred of them: sort the top few, widen until they hold top_p
         * of the whole mass, and sort everything only as a last resort. */
        for (int i = 0; i < V; i++)
            if (row[i] != -INFINITY)
                mass += exp(((double)row[i] - (double)max_logit) * inv_temperature);
        double needed = (double)config->top_p * mass;
        for (int64_t k = 256;; k *= 8) { /* int64: k * 8 passes INT_MAX for V > 2^28 */
            n = select_top(row, V, k < V ? (int)k : V, work);
            double prefix = 0.0;
            for (int i = 0; i < n; i++) {
                probs[i] = exp(((double)work[i].logit - (double)max_logit) * inv_temperature);
                prefix += probs[i];
            }
            if (prefix >= needed || n < k || k >= V)
                break;
        }
    } else {
        for (int i = 0; i < V; i++) {
            if (row[i] != -INFINITY) {
                work[n].logit = row[i];
                work[n].index = i;
                probs[n] = exp(((double)row[i] - (double)max_logit) * inv_temperature);
                mass += probs[n];
                n++;
            }
        }
    }

    int kept = n;
    double kept_mass = mass;
    if (use_top_p) {
        /* Candidates are sorted: keep token i while the mass before it is < top_p,
         * i.e. the smallest prefix reaching top_p, and at least one token. */
        double needed = (double)config->top_p * mass;
        double before = 0.0;
        kept = 0;
        while (kept < n && (kept == 0 || before < needed)) {
            before += probs[kept];
            kept++;
        }
        kept_mass = before;
    }

    double target = (double)rg_rng_uniform(config->seed, counter) * kept_mass;
    double cumulative = 0.0;
    for (int i = 0; i < kept; i++) {
        cumulative += probs[i];
        if (target < cumulative)
            return work[i].index;
    }
    return work[kept - 1].index; /* rounding left target at the very top */
}

rg_status rg_sample_logits(const float *logits, int B, int V, const rg_sample_config *config,
                           int32_t *out)
{
    if (logits == NULL || config == NULL || out == NULL || B < 0 || V <= 0)
        return RG_ERR_INVALID_ARG;
    if (config->top_k < 0 || !(config->top_p > 0.0f && config->top_p <= 1.0f) ||
        isnan(config->temperature) || isinf(config->temperature))
        return RG_ERR_INVALID_ARG;
    int greedy = !config->do_sample || config->temperature <= 0.0f || config->top_k == 1;

    rg_status status = RG_OK;
/* Rows are independent; threads pay off only for big batches of sampled rows. */
#pragma omp parallel if (!greedy && B > 1 && (size_t)B * (size_t)V >= ((size_t)1 << 20))
    {
        candidate *work = NULL;
        double *probs = NULL;
        if (!greedy) {
            work = malloc((size_t)V * sizeof(candidate));
            probs = malloc((size_t)V * sizeof(double));
        }
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < B; b++) {
            const float *row = logits + (size_t)b * V; /* (V,) */
            int32_t argmax = 0;
            rg_status row_status = row_argmax(row, V, &argmax);
            if (row_status == RG_OK && !greedy && (work == NULL || probs == NULL))
                row_status = RG_ERR_NOMEM;
            if (row_status != RG_OK) {
#pragma omp critical(rg_sample_status)
                if (status == RG_OK)
                    status = row_status;
                continue;
            }
            out[b] = greedy ? argmax
                            : sample_row(row, V, config, row[argmax],
                                         rg_sample_counter(config->step, config->row_offset + (uint64_t)b), work, probs);
        }
        free(work);
        free(probs);
    }
    return status;
}

rg_status rg_sample_check_ids(const int32_t *ids, int n_ids, int V)
{
    if (n_ids < 0 || (n_ids > 0 && ids == NULL) || V <= 0)
        return RG_ERR_INVALID_ARG;
    for (int i = 0; i < n_ids; i++)
        if (ids[i] < 0 || ids[i] >= V)
            return RG_ERR_LABEL_RANGE;
    return RG_OK;
}

rg_status rg_sample_ban_tokens(float *logits, int B, int V, const int32_t *ids, int n_ids)
{
    if (logits == NULL || B < 0)
        return RG_ERR_INVALID_ARG;
    /* every id checked before any logit changes: a refused call leaves them all */
    RG_TRY(rg_sample_check_ids(ids, n_ids, V));
    for (int b = 0; b < B; b++)
        for (int i = 0; i < n_ids; i++)
            logits[(size_t)b * V + ids[i]] = -INFINITY;
    return RG_OK;
}
