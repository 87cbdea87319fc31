/*
 * rg_metrics.h - classification metrics and perplexity.
 *
 * Labels are ordinal integers drawn from a declared set of K values given as
 * a strictly increasing array, e.g. {1, 2, 4, 5}; they need not be
 * contiguous. Every true and predicted label must belong to the set.
 *
 * Conventions (chosen to agree with scikit-learn):
 *   - the confusion matrix has one row per TRUE label and one column per
 *     PREDICTED label, both in the order of the declared set;
 *   - a precision, recall or F1 whose denominator is zero is 0, which is
 *     what scikit-learn's default zero_division="warn" returns (it also
 *     warns; the core does not); such classes still count in the macro mean;
 *   - F1 = 2 tp / (2 tp + fp + fn), equal to 2 P R / (P + R) whenever that
 *     is defined, and 0 when tp = 0;
 *   - the weighted averages weight each class by its support (its number
 *     of true samples).
 *
 * "Near" metrics (the study's "métricas cercanas"): a prediction P counts
 * as the true label R when |P - R| <= 1, measured on label VALUES, not on
 * positions in the set. With labels {1, 2, 4, 5} a prediction 4 for a
 * truth 2 is not near (distance 2), although the two are neighbours in the
 * set. Each such P is replaced by R, and the same metrics are computed.
 */
#ifndef RG_METRICS_H
#define RG_METRICS_H

#include <stdint.h>

#include "rg_common.h"

/* Averages of per-class precision, recall and F1. */
typedef struct rg_metrics_average {
    double precision;
    double recall;
    double f1;
} rg_metrics_average;

/* The scalar figures of a classification report; the per-class ones live in
 * caller-owned arrays (see rg_metrics_classification). */
typedef struct rg_metrics_summary {
    int64_t n_samples;
    double accuracy;              /* trace(confusion) / n_samples */
    rg_metrics_average macro;     /* unweighted mean over the K declared classes */
    rg_metrics_average weighted;  /* mean weighted by support */
} rg_metrics_summary;

/* RG_OK when `labels` is a usable label set: K >= 1 (else RG_ERR_EMPTY) and
 * strictly increasing (else RG_ERR_INVALID_ARG: unsorted or duplicated). */
rg_status rg_metrics_check_labels(const int32_t *labels /* (K,) */, int64_t K);

/* Position of `value` in the label set, or -1 when it is not a member. */
int64_t rg_metrics_label_index(const int32_t *labels /* (K,) */, int64_t K, int32_t value);

/* The prediction after the near rule: y_true when |y_pred - y_true| <= 1,
 * otherwise y_pred unchanged. */
int32_t rg_metrics_near_prediction(int32_t y_true, int32_t y_pred);

/* Confusion matrix counts, rows true, columns predicted; near != 0 applies
 * the near rule first. Every raw label, true or predicted, must be a member
 * of the set, with or without near.
 * Errors: RG_ERR_INVALID_ARG (null pointer, or an unsorted/duplicated label
 * set), RG_ERR_EMPTY (K = 0 or no samples), RG_ERR_SHAPE (n_true != n_pred),
 * RG_ERR_LABEL_RANGE (a label outside the set), RG_ERR_TOO_LARGE (K * K cells
 * do not fit the address space). On error `confusion` holds no meaningful
 * values. */
rg_status rg_metrics_confusion(const int32_t *y_true /* (n_true,) */, int64_t n_true,
                               const int32_t *y_pred /* (n_pred,) */, int64_t n_pred,
                               const int32_t *labels /* (K,) */, int64_t K, int near,
                               int64_t *confusion /* (K, K) out */);

/* Per-class and averaged figures from a confusion matrix (rows true).
 * Errors: RG_ERR_INVALID_ARG (null pointer, negative count), RG_ERR_EMPTY
 * (K = 0 or a matrix that counts no sample), RG_ERR_TOO_LARGE (counts whose
 * sum passes INT64_MAX, or K * K cells beyond the address space). */
rg_status rg_metrics_from_confusion(const int64_t *confusion /* (K, K) */, int64_t K,
                                    double *precision /* (K,) out */,
                                    double *recall /* (K,) out */,
                                    double *f1 /* (K,) out */,
                                    int64_t *support /* (K,) out */,
                                    rg_metrics_summary *summary /* out */);

/* rg_metrics_confusion followed by rg_metrics_from_confusion. Errors: those
 * of both. */
rg_status rg_metrics_classification(const int32_t *y_true /* (n_true,) */, int64_t n_true,
                                    const int32_t *y_pred /* (n_pred,) */, int64_t n_pred,
                                    const int32_t *labels /* (K,) */, int64_t K, int near,
                                    int64_t *confusion /* (K, K) out */,
                                    double *precision /* (K,) out */,
                                    double *recall /* (K,) out */,
                                    double *f1 /* (K,) out */,
                                    int64_t *support /* (K,) out */,
                                    rg_metrics_summary *summary /* out */);

/* Perplexity exp(sum_i w_i nll_i / sum_i w_i) of per-token negative
 * log-likelihoods (natural log). `weights` may be NULL (every token counts
 * 1); a 0/1 mask is a special case of weights. Tokens of weight 0 are
 * skipped entirely, so padding may hold any value, even NaN.
 * Errors: RG_ERR_INVALID_ARG (null nll or output, N < 0, a negative
 * weight), RG_ERR_SHAPE (n_weights != n_nll when weights are given),
 * RG_ERR_NONFINITE (a NaN or infinite counted nll or weight, or a
 * perplexity that overflows a double), RG_ERR_EMPTY (no token, or total
 * weight 0). `mean_nll` may be NULL. */
rg_status rg_metrics_perplexity(const float *nll /* (n_nll,) */, int64_t n_nll,
                                const float *weights /* (n_weights,) or NULL */,
                                int64_t n_weights, double *perplexity /* out */,
                                double *mean_nll /* out, may be NULL */);

/* Perplexity exp(sum_nll / n_tokens) from running totals (n_tokens may be a
 * total weight, hence a double). Errors: RG_ERR_INVALID_ARG (null output,
 * negative n_tokens), RG_ERR_EMPTY (n_tokens = 0), RG_ERR_NONFINITE (a
 * non-finite input or an overflowing result). */
rg_status rg_metrics_perplexity_from_sum(double sum_nll, double n_tokens,
                                         double *perplexity /* out */);

#endif /* RG_METRICS_H */
