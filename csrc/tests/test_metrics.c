/* test_metrics.c - the metrics of rg_metrics.c on small cases worked out by hand. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "rg_metrics.h"
#include "rg_test.h"

#define TIGHT 1e-12

/*
 * Labels {0, 1, 2}, 8 samples:
 *   y_true = 0 0 0 1 1 2 2 2
 *   y_pred = 0 1 0 1 2 2 0 2
 * Confusion (rows true, cols predicted):
 *        0  1  2
 *   0 [  2  1  0 ]
 *   1 [  0  1  1 ]
 *   2 [  1  0  2 ]
 * accuracy 5/8; precision (2/3, 1/2, 2/3); recall (2/3, 1/2, 2/3);
 * F1 = 2tp/(2tp+fp+fn): (4/6, 2/4, 4/6); support (3, 2, 3).
 */
static const int32_t hand_true[] = {0, 0, 0, 1, 1, 2, 2, 2};
static const int32_t hand_pred[] = {0, 1, 0, 1, 2, 2, 0, 2};
static const int32_t hand_labels[] = {0, 1, 2};

void test_metrics_confusion_3x3(void)
{
    int64_t confusion[9];
    const int64_t expected[9] = {2, 1, 0, 0, 1, 1, 1, 0, 2};
    RG_CHECK_STATUS(rg_metrics_confusion(hand_true, 8, hand_pred, 8, hand_labels, 3, 0, confusion),
                    RG_OK);
    for (int i = 0; i < 9; i++)
        RG_CHECK_EQ(confusion[i], expected[i]);
}

void test_metrics_report_3x3(void)
{
    int64_t confusion[9], support[3];
    double precision[3], recall[3], f1[3];
    rg_metrics_summary summary;
    RG_CHECK_STATUS(rg_metrics_classification(hand_true, 8, hand_pred, 8, hand_labels, 3, 0,
                                              confusion, precision, recall, f1, support, &summary),
                    RG_OK);
    const double expected_precision[3] = {2.0 / 3.0, 0.5, 2.0 / 3.0};
    const double expected_recall[3] = {2.0 / 3.0, 0.5, 2.0 / 3.0};
    const double expected_f1[3] = {2.0 / 3.0, 0.5, 2.0 / 3.0};
    const int64_t expected_support[3] = {3, 2, 3};
    for (int k = 0; k < 3; k++) {
        RG_CHECK_CLOSE(precision[k], expected_precision[k], TIGHT);
        RG_CHECK_CLOSE(recall[k], expected_recall[k], TIGHT);
        RG_CHECK_CLOSE(f1[k], expected_f1[k], TIGHT);
        RG_CHECK_EQ(support[k], expected_support[k]);
    }
    RG_CHECK_EQ(summary.n_samples, 8);
    RG_CHECK_CLOSE(summary.accuracy, 5.0 / 8.0, TIGHT);
    RG_CHECK_CLOSE(summary.macro.precision, (2.0 / 3.0 + 0.5 + 2.0 / 3.0) / 3.0, TIGHT);
    RG_CHECK_CLOSE(summary.macro.f1, (2.0 / 3.0 + 0.5 + 2.0 / 3.0) / 3.0, TIGHT);
    /* weighted recall is always the accuracy */
    RG_CHECK_CLOSE(summary.weighted.recall, 5.0 / 8.0, TIGHT);
    RG_CHECK_CLOSE(summary.weighted.precision, (3 * 2.0 / 3.0 + 2 * 0.5 + 3 * 2.0 / 3.0) / 8.0,
                   TIGHT);
}

/* Precision and recall with different values, and a class that nobody
 * predicts (precision 0 by the zero-division rule). Labels {1, 2, 4, 5}:
 *   y_true = 1 1 2 4 5 5
 *   y_pred = 1 2 2 2 4 1        -> label 5 never predicted
 * Confusion:      1 2 4 5
 *              1 [1 1 0 0]
 *              2 [0 1 0 0]
 *              4 [0 1 0 0]
 *              5 [1 0 1 0]
 * precision: 1: 1/2, 2: 1/3, 4: 0/1 = 0, 5: 0/0 -> 0
 * recall:    1: 1/2, 2: 1/1,  4: 0/1 = 0, 5: 0/2 = 0
 * F1:        1: 2/(2+1+1)=1/2, 2: 2/(2+2+0)=1/2, 4: 0, 5: 0
 */
void test_metrics_zero_division_and_gaps(void)
{
    const int32_t labels[] = {1, 2, 4, 5};
    const int32_t y_true[] = {1, 1, 2, 4, 5, 5};
    const int32_t y_pred[] = {1, 2, 2, 2, 4, 1};
    int64_t confusion[16], support[4];
    double precision[4], recall[4], f1[4];
    rg_metrics_summary summary;
    RG_CHECK_STATUS(rg_metrics_classification(y_true, 6, y_pred, 6, labels, 4, 0, confusion,
                                              precision, recall, f1, support, &summary),
                    RG_OK);
    const int64_t expected_confusion[16] = {1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 1, 0, 1, 0};
    for (int i = 0; i < 16; i++)
        RG_CHECK_EQ(confusion[i], expected_confusion[i]);
    const double expected_precision[4] = {0.5, 1.0 / 3.0, 0.0, 0.0};
    const double expected_recall[4] = {0.5, 1.0, 0.0, 0.0};
    const double expected_f1[4] = {0.5, 0.5, 0.0, 0.0};
    for (int k = 0; k < 4; k++) {
        RG_CHECK_CLOSE(precision[k], expected_precision[k], TIGHT);
        RG_CHECK_CLOSE(recall[k], expected_recall[k], TIGHT);
        RG_CHECK_CLOSE(f1[k], expected_f1[k], TIGHT);
    }
    RG_CHECK_CLOSE(summary.accuracy, 2.0 / 6.0, TIGHT);
    RG_CHECK_CLOSE(summary.macro.precision, (0.5 + 1.0 / 3.0) / 4.0, TIGHT);
    RG_CHECK_CLOSE(summary.macro.recall, 1.5 / 4.0, TIGHT);
    RG_CHECK_CLOSE(summary.weighted.f1, (2 * 0.5 + 1 * 0.5) / 6.0, TIGHT);
}

/* A declared class with no sample at all still counts in the macro mean. */
void test_metrics_empty_class(void)
{
    const int32_t labels[] = {1, 2, 3};
    const int32_t y_true[] = {1, 2, 1, 2};
    const int32_t y_pred[] = {1, 2, 1, 2};
    int64_t confusion[9], support[3];
    double precision[3], recall[3], f1[3];
    rg_metrics_summary summary;
    RG_CHECK_STATUS(rg_metrics_classification(y_true, 4, y_pred, 4, labels, 3, 0, confusion,
                                              precision, recall, f1, support, &summary),
                    RG_OK);
    RG_CHECK_EQ(support[2], 0);
    RG_CHECK_CLOSE(f1[2], 0.0, 0.0);
    RG_CHECK_CLOSE(summary.accuracy, 1.0, TIGHT);
    RG_CHECK_CLOSE(summary.macro.f1, 2.0 / 3.0, TIGHT);
    RG_CHECK_CLOSE(summary.weighted.f1, 1.0, TIGHT);
}

void test_metrics_near_rule(void)
{
    RG_CHECK_EQ(rg_metrics_near_prediction(3, 4), 3);
    RG_CHECK_EQ(rg_metrics_near_prediction(3, 2), 3);
    RG_CHECK_EQ(rg_metrics_near_prediction(3, 3), 3);
    RG_CHECK_EQ(rg_metrics_near_prediction(3, 5), 5);
    RG_CHECK_EQ(rg_metrics_near_prediction(2, 4), 4); /* neighbours in {1,2,4,5}, but 2 apart */
    RG_CHECK_EQ(rg_metrics_near_prediction(INT32_MIN, INT32_MAX), INT32_MAX); /* no overflow */
    RG_CHECK_EQ(rg_metrics_near_prediction(INT32_MAX, INT32_MAX - 1), INT32_MAX);
}

/*
 * Near accuracy, labels {1, 2, 4, 5}:
 *   y_true = 1 2 2 4 5 5 1 4
 *   y_pred = 2 1 4 5 4 1 5 2
 *   near?    y y n y y n n n    (|P-R| = 1 1 2 1 1 4 4 2)
 * plain accuracy 0/8; near accuracy 4/8.
 * Near confusion:       1 2 4 5
 *                    1 [1 0 0 1]
 *                    2 [0 1 1 0]
 *                    4 [0 1 1 0]
 *                    5 [1 0 0 1]
 */
void test_metrics_near_accuracy(void)
{
    const int32_t labels[] = {1, 2, 4, 5};
    const int32_t y_true[] = {1, 2, 2, 4, 5, 5, 1, 4};
    const int32_t y_pred[] = {2, 1, 4, 5, 4, 1, 5, 2};
    int64_t confusion[16], support[4];
    double precision[4], recall[4], f1[4];
    rg_metrics_summary plain, near;
    RG_CHECK_STATUS(rg_metrics_classification(y_true, 8, y_pred, 8, labels, 4, 0, confusion,
                                              precision, recall, f1, support, &plain),
                    RG_OK);
    RG_CHECK_CLOSE(plain.accuracy, 0.0, 0.0);
    RG_CHECK_CLOSE(plain.macro.f1, 0.0, 0.0);
    RG_CHECK_STATUS(rg_metrics_classification(y_true, 8, y_pred, 8, labels, 4, 1, confusion,
                                              precision, recall, f1, support, &near),
                    RG_OK);
    RG_CHECK_CLOSE(near.accuracy, 0.5, TIGHT);
    const int64_t expected[16] = {1, 0, 0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1, 0, 0, 1};
    for (int i = 0; i < 16; i++)
        RG_CHECK_EQ(confusion[i], expected[i]);
    for (int k = 0; k < 4; k++) {
        RG_CHECK_CLOSE(precision[k], 0.5, TIGHT);
        RG_CHECK_CLOSE(recall[k], 0.5, TIGHT);
    }
}

void test_metrics_single_sample_and_class(void)
{
    const int32_t labels[] = {7};
    const int32_t y[] = {7};
    int64_t confusion[1], support[1];
    double precision[1], recall[1], f1[1];
    rg_metrics_summary summary;
    RG_CHECK_STATUS(rg_metrics_classification(y, 1, y, 1, labels, 1, 0, confusion, precision,
                                              recall, f1, support, &summary),
                    RG_OK);
    RG_CHECK_EQ(confusion[0], 1);
    RG_CHECK_CLOSE(summary.accuracy, 1.0, 0.0);
    RG_CHECK_CLOSE(summary.macro.f1, 1.0, 0.0);
    RG_CHECK_CLOSE(summary.weighted.precision, 1.0, 0.0);
}

void test_metrics_label_set_checks(void)
{
    const int32_t sorted[] = {1, 2, 4, 5};
    const int32_t unsorted[] = {1, 4, 2};
    const int32_t duplicated[] = {1, 2, 2};
    RG_CHECK_STATUS(rg_metrics_check_labels(sorted, 4), RG_OK);
    RG_CHECK_STATUS(rg_metrics_check_labels(unsorted, 3), RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_metrics_check_labels(duplicated, 3), RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_metrics_check_labels(sorted, 0), RG_ERR_EMPTY);
    RG_CHECK_STATUS(rg_metrics_check_labels(NULL, 2), RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_metrics_check_labels(sorted, -1), RG_ERR_INVALID_ARG);
    RG_CHECK_EQ(rg_metrics_label_index(sorted, 4, 1), 0);
    RG_CHECK_EQ(rg_metrics_label_index(sorted, 4, 4), 2);
    RG_CHECK_EQ(rg_metrics_label_index(sorted, 4, 5), 3);
    RG_CHECK_EQ(rg_metrics_label_index(sorted, 4, 3), -1);
    RG_CHECK_EQ(rg_metrics_label_index(sorted, 4, 0), -1);
    RG_CHECK_EQ(rg_metrics_label_index(sorted, 4, 6), -1);
}

void test_metrics_classification_errors(void)
{
    const int32_t labels[] = {1, 2, 4, 5};
    const int32_t unsorted[] = {2, 1};
    const int32_t y_true[] = {1, 2, 4};
    const int32_t y_outside[] = {1, 3, 4}; /* 3 is a gap in the set */
    const int32_t y_negative[] = {1, -2, 4};
    int64_t confusion[16];
    RG_CHECK_STATUS(rg_metrics_confusion(y_true, 3, y_outside, 3, labels, 4, 0, confusion),
                    RG_ERR_LABEL_RANGE);
    RG_CHECK_STATUS(rg_metrics_confusion(y_outside, 3, y_true, 3, labels, 4, 0, confusion),
                    RG_ERR_LABEL_RANGE);
    RG_CHECK_STATUS(rg_metrics_confusion(y_negative, 3, y_true, 3, labels, 4, 1, confusion),
                    RG_ERR_LABEL_RANGE);
    /* the near rule does not rescue a prediction outside the set, although 3 is within 1 of
     * its truth 2 */
    RG_CHECK_STATUS(rg_metrics_confusion(y_true, 3, y_outside, 3, labels, 4, 1, confusion),
                    RG_ERR_LABEL_RANGE);
    RG_CHECK_STATUS(rg_metrics_confusion(y_true, 0, y_true, 0, labels, 4, 0, confusion),
                    RG_ERR_EMPTY);
    RG_CHECK_STATUS(rg_metrics_confusion(y_true, 3, y_true, 2, labels, 4, 0, confusion),
                    RG_ERR_SHAPE);
    RG_CHECK_STATUS(rg_metrics_confusion(y_true, 3, y_true, 3, unsorted, 2, 0, confusion),
                    RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_metrics_confusion(y_true, 3, y_true, 3, labels, 0, 0, confusion),
                    RG_ERR_EMPTY);
    RG_CHECK_STATUS(rg_metrics_confusion(NULL, 3, y_true, 3, labels, 4, 0, confusion),
                    RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_metrics_confusion(y_true, 3, y_true, 3, labels, 4, 0, NULL),
                    RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_metrics_confusion(y_true, -1, y_true, -1, labels, 4, 0, confusion),
                    RG_ERR_INVALID_ARG);

    const int64_t zero_matrix[4] = {0, 0, 0, 0};
    const int64_t negative_matrix[4] = {1, -1, 0, 1};
    double precision[2], recall[2], f1[2];
    int64_t support[2];
    rg_metrics_summary summary;
    RG_CHECK_STATUS(rg_metrics_from_confusion(zero_matrix, 2, precision, recall, f1, support,
                                              &summary),
                    RG_ERR_EMPTY);
    RG_CHECK_STATUS(rg_metrics_from_confusion(negative_matrix, 2, precision, recall, f1, support,
                                              &summary),
                    RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_metrics_from_confusion(negative_matrix, 2, precision, recall, f1, support,
                                              NULL),
                    RG_ERR_INVALID_ARG);
}

/* nll (0.5, 1.0, 1.5, 2.0): mean 1.25, perplexity e^1.25.
 * mask (1, 0, 1, 0): mean (0.5 + 1.5) / 2 = 1, perplexity e.
 * weights (1, 3, 0, 0): (0.5 + 3) / 4 = 0.875. */
void test_metrics_perplexity_values(void)
{
    const float nll[] = {0.5f, 1.0f, 1.5f, 2.0f};
    const float mask[] = {1.0f, 0.0f, 1.0f, 0.0f};
    const float weights[] = {1.0f, 3.0f, 0.0f, 0.0f};
    double perplexity = 0.0, mean_nll = 0.0;
    RG_CHECK_STATUS(rg_metrics_perplexity(nll, 4, NULL, 0, &perplexity, &mean_nll), RG_OK);
    RG_CHECK_CLOSE(mean_nll, 1.25, TIGHT);
    RG_CHECK_CLOSE(perplexity, exp(1.25), 1e-12);
    RG_CHECK_STATUS(rg_metrics_perplexity(nll, 4, mask, 4, &perplexity, NULL), RG_OK);
    RG_CHECK_CLOSE(perplexity, exp(1.0), 1e-12);
    RG_CHECK_STATUS(rg_metrics_perplexity(nll, 4, weights, 4, &perplexity, &mean_nll), RG_OK);
    RG_CHECK_CLOSE(mean_nll, 0.875, TIGHT);

    /* a model that puts probability 1/V on every token has perplexity V */
    const float uniform[] = {(float)log(50257.0), (float)log(50257.0)};
    RG_CHECK_STATUS(rg_metrics_perplexity(uniform, 2, NULL, 0, &perplexity, NULL), RG_OK);
    RG_CHECK_CLOSE(perplexity, 50257.0, 50257.0 * 1e-6);

    RG_CHECK_STATUS(rg_metrics_perplexity_from_sum(10.0, 4.0, &perplexity), RG_OK);
    RG_CHECK_CLOSE(perplexity, exp(2.5), 1e-12);
    RG_CHECK_STATUS(rg_metrics_perplexity_from_sum(0.0, 3.0, &perplexity), RG_OK);
    RG_CHECK_CLOSE(perplexity, 1.0, 0.0);
}

void test_metrics_perplexity_errors(void)
{
    const float nll[] = {0.5f, NAN, 1.5f};
    const float finite[] = {0.5f, 1.0f, 1.5f};
    const float infinite[] = {0.5f, INFINITY, 1.5f};
    const float skip_nan[] = {1.0f, 0.0f, 1.0f};
    const float zero_weights[] = {0.0f, 0.0f, 0.0f};
    const float negative_weights[] = {1.0f, -1.0f, 1.0f};
    const float nan_weights[] = {1.0f, NAN, 1.0f};
    double perplexity = -1.0;
    RG_CHECK_STATUS(rg_metrics_perplexity(nll, 3, NULL, 0, &perplexity, NULL), RG_ERR_NONFINITE);
    RG_CHECK_STATUS(rg_metrics_perplexity(infinite, 3, NULL, 0, &perplexity, NULL),
                    RG_ERR_NONFINITE);
    /* the NaN sits at a weight-0 position: ignored */
    RG_CHECK_STATUS(rg_metrics_perplexity(nll, 3, skip_nan, 3, &perplexity, NULL), RG_OK);
    RG_CHECK_CLOSE(perplexity, exp(1.0), 1e-12);
    RG_CHECK_STATUS(rg_metrics_perplexity(finite, 0, NULL, 0, &perplexity, NULL), RG_ERR_EMPTY);
    RG_CHECK_STATUS(rg_metrics_perplexity(finite, 3, zero_weights, 3, &perplexity, NULL),
                    RG_ERR_EMPTY);
    RG_CHECK_STATUS(rg_metrics_perplexity(finite, 3, negative_weights, 3, &perplexity, NULL),
                    RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_metrics_perplexity(finite, 3, nan_weights, 3, &perplexity, NULL),
                    RG_ERR_NONFINITE);
    RG_CHECK_STATUS(rg_metrics_perplexity(finite, 3, skip_nan, 2, &perplexity, NULL),
                    RG_ERR_SHAPE);
    RG_CHECK_STATUS(rg_metrics_perplexity(NULL, 3, NULL, 0, &perplexity, NULL),
                    RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_metrics_perplexity(finite, 3, NULL, 0, NULL, NULL), RG_ERR_INVALID_ARG);

    RG_CHECK_STATUS(rg_metrics_perplexity_from_sum(1.0, 0.0, &perplexity), RG_ERR_EMPTY);
    RG_CHECK_STATUS(rg_metrics_perplexity_from_sum(1.0, -2.0, &perplexity), RG_ERR_INVALID_ARG);
    RG_CHECK_STATUS(rg_metrics_perplexity_from_sum(NAN, 2.0, &perplexity), RG_ERR_NONFINITE);
    RG_CHECK_STATUS(rg_metrics_perplexity_from_sum(1.0, INFINITY, &perplexity), RG_ERR_NONFINITE);
    RG_CHECK_STATUS(rg_metrics_perplexity_from_sum(1000.0, 1.0, &perplexity), RG_ERR_NONFINITE);
    RG_CHECK_STATUS(rg_metrics_perplexity_from_sum(1.0, 1.0, NULL), RG_ERR_INVALID_ARG);
}

/* Caller-given counts whose sum passes INT64_MAX, and a K whose K * K cells
 * cannot be addressed, are refused (they were signed overflows). */
void test_metrics_from_confusion_refuses_overflow(void)
{
    int64_t confusion[4] = {INT64_MAX / 2, INT64_MAX / 2, 5, 1};
    double precision[2], recall[2], f1[2];
    int64_t support[2];
    rg_metrics_summary summary;
    RG_CHECK_STATUS(rg_metrics_from_confusion(confusion, 2, precision, recall, f1, support, &summary),
                    RG_ERR_TOO_LARGE);
    confusion[2] = 0;
    confusion[3] = 0; /* sum INT64_MAX - 1: fits; 2 tp + fp + fn does not */
    RG_CHECK_STATUS(rg_metrics_from_confusion(confusion, 2, precision, recall, f1, support, &summary), RG_OK);
    RG_CHECK_CLOSE(f1[0], 2.0 / 3.0, 1e-12);
    RG_CHECK_CLOSE(summary.accuracy, 0.5, 1e-12);
    /* K * K wraps a size_t: refused before a cell is read */
    RG_CHECK_STATUS(rg_metrics_from_confusion(confusion, ((int64_t)1 << 32) + 1, precision, recall, f1, support,
                                              &summary),
                    RG_ERR_TOO_LARGE);
}
