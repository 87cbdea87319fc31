/*
 * rg_metrics.c - confusion matrix, precision/recall/F1, near metrics and
 * perplexity (conventions in rg_metrics.h).
 *
 * Single-threaded on purpose: one pass over N int32 pairs with a binary
 * search in a handful of labels costs microseconds for the evaluation sets
 * of this project (thousands of samples); OpenMP start-up would cost more.
 * Counts are int64 and sums are double so that no realistic N overflows or
 * loses precision.
 */
#include "rg_metrics.h"

#include <math.h>
#include <string.h>

rg_status rg_metrics_check_labels(const int32_t *labels /* (K,) */, int64_t K)
{
    if (K < 0)
        return RG_ERR_INVALID_ARG;
    if (K == 0)
        return RG_ERR_EMPTY;
    if (labels == NULL)
        return RG_ERR_INVALID_ARG;
    for (int64_t k = 1; k < K; k++) {
        if (labels[k] <= labels[k - 1])
            return RG_ERR_INVALID_ARG; /* unsorted or duplicated */
    }
    return RG_OK;
}

int64_t rg_metrics_label_index(const int32_t *labels /* (K,) */, int64_t K, int32_t value)
{
    int64_t lo = 0, hi = K; /* search [lo, hi) of the sorted set */
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (labels[mid] < value)
            lo = mid + 1;
        else
            hi = mid;
    }
    return (lo < K && labels[lo] == value) ? lo : -1;
}

int32_t rg_metrics_near_prediction(int32_t y_true, int32_t y_pred)
{
    /* int64 difference: INT32_MIN - INT32_MAX does not fit in int32 */
    int64_t distance = (int64_t)y_pred - (int64_t)y_true;
    return (distance >= -1 && distance <= 1) ? y_true : y_pred;
}

rg_status rg_metrics_confusion(const int32_t *y_true /* (n_true,) */, int64_t n_true,
                               const int32_t *y_pred /* (n_pred,) */, int64_t n_pred,
                               const int32_t *labels /* (K,) */, int64_t K, int near,
                               int64_t *confusion /* (K, K) out */)
{
    if (n_true < 0 || n_pred < 0)
        return RG_ERR_INVALID_ARG;
    RG_TRY(rg_metrics_check_labels(labels, K));
    if (confusion == NULL)
        return RG_ERR_INVALID_ARG;
    if (n_true != n_pred)
        return RG_ERR_SHAPE;
    if (n_true == 0)
        return RG_ERR_EMPTY;
    if (y_true == NULL || y_pred == NULL)
        return RG_ERR_INVALID_ARG;

    size_t cells, bytes;
    if (!rg_size_mul((size_t)K, (size_t)K, &cells) || !rg_size_mul(cells, sizeof(int64_t), &bytes))
        return RG_ERR_TOO_LARGE;
    memset(confusion, 0, bytes);
    for (int64_t i = 0; i < n_true; i++) {
        /* both raw labels must be members, near or not: a prediction outside the set is an
         * error even when the near rule would replace it */
        int64_t row = rg_metrics_label_index(labels, K, y_true[i]);
        int64_t col = rg_metrics_label_index(labels, K, y_pred[i]);
        if (row < 0 || col < 0)
            return RG_ERR_LABEL_RANGE;
        if (near && rg_metrics_near_prediction(y_true[i], y_pred[i]) == y_true[i])
            col = row;
        confusion[row * K + col] += 1;
    }
    return RG_OK;
}

/* numerator / denominator, or 0 when the denominator is 0 (sklearn's
 * zero_division="warn" value). */
static double ratio_or_zero(double numerator, double denominator)
{
    return denominator > 0.0 ? numerator / denominator : 0.0;
}

rg_status rg_metrics_from_confusion(const int64_t *confusion /* (K, K) */, int64_t K,
                                    double *precision /* (K,) out */,
                                    double *recall /* (K,) out */,
                                    double *f1 /* (K,) out */,
                                    int64_t *support /* (K,) out */,
                                    rg_metrics_summary *summary /* out */)
{
    if (K < 0)
        return RG_ERR_INVALID_ARG;
    if (K == 0)
        return RG_ERR_EMPTY;
    if (confusion == NULL || precision == NULL || recall == NULL || f1 == NULL ||
        support == NULL || summary == NULL)
        return RG_ERR_INVALID_ARG;

    size_t cells;
    if (!rg_size_mul((size_t)K, (size_t)K, &cells) || cells > (size_t)INT64_MAX)
        return RG_ERR_TOO_LARGE;
    /* counts come from the caller: their sum must fit an int64 (then every
     * row, column and diagonal sum below fits too) */
    int64_t total = 0, correct = 0;
    for (int64_t r = 0; r < K; r++) {
        for (int64_t c = 0; c < K; c++) {
            const int64_t count = confusion[r * K + c];
            if (count < 0)
                return RG_ERR_INVALID_ARG;
            if (count > INT64_MAX - total)
                return RG_ERR_TOO_LARGE;
            total += count;
        }
        correct += confusion[r * K + r];
    }
    if (total == 0)
        return RG_ERR_EMPTY;

    rg_metrics_average macro = {0.0, 0.0, 0.0}, weighted = {0.0, 0.0, 0.0};
    for (int64_t k = 0; k < K; k++) {
        int64_t true_positives = confusion[k * K + k];
        int64_t row_sum = 0, col_sum = 0; /* true count (support), predicted count */
        for (int64_t j = 0; j < K; j++) {
            row_sum += confusion[k * K + j];
            col_sum += confusion[j * K + k];
        }
        int64_t false_positives = col_sum - true_positives;
        int64_t false_negatives = row_sum - true_positives;
        precision[k] = ratio_or_zero((double)true_positives, (double)col_sum);
        recall[k] = ratio_or_zero((double)true_positives, (double)row_sum);
        /* in double: 2 tp + fp + fn can pass INT64_MAX when the counts are huge */
        f1[k] = ratio_or_zero(2.0 * (double)true_positives,
                              2.0 * (double)true_positives + (double)false_positives + (double)false_negatives);
        support[k] = row_sum;

        macro.precision += precision[k];
        macro.recall += recall[k];
        macro.f1 += f1[k];
        weighted.precision += precision[k] * (double)row_sum;
        weighted.recall += recall[k] * (double)row_sum;
        weighted.f1 += f1[k] * (double)row_sum;
    }
    summary->n_samples = total;
    summary->accuracy = (double)correct / (double)total;
    summary->macro.precision = macro.precision / (double)K;
    summary->macro.recall = macro.recall / (double)K;
    summary->macro.f1 = macro.f1 / (double)K;
    summary->weighted.precision = weighted.precision / (double)total;
    summary->weighted.recall = weighted.recall / (double)total;
    summary->weighted.f1 = weighted.f1 / (double)total;
    return RG_OK;
}

rg_status rg_metrics_classification(const int32_t *y_true /* (n_true,) */, int64_t n_true,
                                    const int32_t *y_pred /* (n_pred,) */, int64_t n_pred,
                                    const int32_t *labels /* (K,) */, int64_t K, int near,
                                    int64_t *confusion /* (K, K) out */,
                                    double *precision /* (K,) out */,
                                    double *recall /* (K,) out */,
                                    double *f1 /* (K,) out */,
                                    int64_t *support /* (K,) out */,
                                    rg_metrics_summary *summary /* out */)
{
    RG_TRY(rg_metrics_confusion(y_true, n_true, y_pred, n_pred, labels, K, near, confusion));
    return rg_metrics_from_confusion(confusion, K, precision, recall, f1, support, summary);
}

rg_status rg_metrics_perplexity(const float *nll /* (n_nll,) */, int64_t n_nll,
                                const float *weights /* (n_weights,) or NULL */,
                                int64_t n_weights, double *perplexity /* out */,
                                double *mean_nll /* out, may be NULL */)
{
    if (nll == NULL || perplexity == NULL || n_nll < 0)
        return RG_ERR_INVALID_ARG;
    if (weights != NULL && n_weights != n_nll)
        return RG_ERR_SHAPE;
    if (n_nll == 0)
        return RG_ERR_EMPTY;

    double sum_nll = 0.0, sum_weights = 0.0;
    for (int64_t i = 0; i < n_nll; i++) {
        double weight = 1.0;
        if (weights != NULL) {
            weight = (double)weights[i];
            if (!isfinite(weight))
                return RG_ERR_NONFINITE;
            if (weight < 0.0)
                return RG_ERR_INVALID_ARG;
            if (weight == 0.0)
                continue; /* padding: its nll is never read */
        }
        if (!isfinite(nll[i]))
            return RG_ERR_NONFINITE;
        sum_nll += weight * (double)nll[i];
        sum_weights += weight;
    }
    if (sum_weights == 0.0)
        return RG_ERR_EMPTY;
    if (mean_nll != NULL)
        *mean_nll = sum_nll / sum_weights;
    return rg_metrics_perplexity_from_sum(sum_nll, sum_weights, perplexity);
}

rg_status rg_metrics_perplexity_from_sum(double sum_nll, double n_tokens,
                                         double *perplexity /* out */)
{
    if (perplexity == NULL)
        return RG_ERR_INVALID_ARG;
    if (!isfinite(sum_nll) || !isfinite(n_tokens))
        return RG_ERR_NONFINITE;
    if (n_tokens < 0.0)
        return RG_ERR_INVALID_ARG;
    if (n_tokens == 0.0)
        return RG_ERR_EMPTY;
    double value = exp(sum_nll / n_tokens);
    if (!isfinite(value))
        return RG_ERR_NONFINITE; /* mean nll above ~709.78 */
    *perplexity = value;
    return RG_OK;
}
