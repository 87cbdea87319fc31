"""reviewgen.core.metrics against scikit-learn and numpy, and its handling of bad input."""
import warnings

import numpy as np
import pytest
from sklearn import metrics as skm
from sklearn.exceptions import UndefinedMetricWarning

import reviewgen
from reviewgen import metrics

LABEL_SETS = {
    "contiguous_k5": [0, 1, 2, 3, 4],
    "gapped_1245": [1, 2, 4, 5],
    "wide_gaps_k5": [-3, 0, 7, 8, 20],
}


def random_predictions(rng, labels, n, p_correct=0.45):
    """True labels, and predictions that are right with probability ~p_correct."""
    labels = np.asarray(labels)
    y_true = rng.choice(labels, size=n)
    guesses = rng.choice(labels, size=n)
    y_pred = np.where(rng.random(n) < p_correct, y_true, guesses)
    return y_true, y_pred


def sklearn_figures(y_true, y_pred, labels):
    """Every figure of a ClassificationMetrics, computed by scikit-learn."""
    per_class = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, average=None,
                                                    zero_division=0)
    figures = {
        "confusion": skm.confusion_matrix(y_true, y_pred, labels=labels),
        "precision": per_class[0], "recall": per_class[1], "f1": per_class[2],
        "support": per_class[3],
        "accuracy": skm.accuracy_score(y_true, y_pred),
    }
    for average in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                         average=average, zero_division=0)
        figures.update({f"{average}_precision": p, f"{average}_recall": r, f"{average}_f1": f})
    return figures


def near_reference(y_true, y_pred):
    """The near rule written independently: P -> R where |P - R| <= 1."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    return np.where(np.abs(y_pred - y_true) <= 1, y_true, y_pred)


def assert_matches(result, reference, labels):
    np.testing.assert_array_equal(result.labels, labels)
    np.testing.assert_array_equal(result.confusion, reference["confusion"])
    np.testing.assert_array_equal(result.support, reference["support"])
    for key in ("precision", "recall", "f1"):
        np.testing.assert_allclose(getattr(result, key), reference[key], rtol=0, atol=1e-12,
                                   err_msg=key)
    for key in ("accuracy", "macro_precision", "macro_recall", "macro_f1", "weighted_precision",
                "weighted_recall", "weighted_f1"):
        assert getattr(result, key) == pytest.approx(reference[key], abs=1e-12), key
    assert result.n_samples == int(np.sum(reference["confusion"]))


# ---------------------------------------------------------------- against sklearn

@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("label_set", sorted(LABEL_SETS))
@pytest.mark.parametrize("n", [1, 7, 500])
def test_random_inputs_match_sklearn(seed, label_set, n):
    labels = LABEL_SETS[label_set]
    rng = np.random.default_rng(seed)
    y_true, y_pred = random_predictions(rng, labels, n)
    result = metrics.classification_report(y_true, y_pred, labels=labels)
    assert not result.near
    assert_matches(result, sklearn_figures(y_true, y_pred, labels), labels)
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred, labels=labels),
                                  skm.confusion_matrix(y_true, y_pred, labels=labels))


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
@pytest.mark.parametrize("label_set", sorted(LABEL_SETS))
def test_near_metrics_match_reference(seed, label_set):
    labels = LABEL_SETS[label_set]
    rng = np.random.default_rng(100 + seed)
    y_true, y_pred = random_predictions(rng, labels, 300, p_correct=0.3)
    near_pred = near_reference(y_true, y_pred)
    result = metrics.near_metrics(y_true, y_pred, labels=labels)
    assert result.near
    assert_matches(result, sklearn_figures(y_true, near_pred, labels), labels)
    np.testing.assert_array_equal(metrics.confusion_matrix(y_true, y_pred, labels=labels, near=True),
                                  skm.confusion_matrix(y_true, near_pred, labels=labels))
    plain = metrics.classification_report(y_true, y_pred, labels=labels)
    assert result.accuracy >= plain.accuracy
    # The rule must have changed something in 300 samples, or this test shows nothing.
    assert np.any(near_pred != y_pred)


def test_near_is_on_label_values_not_positions():
    labels = [1, 2, 4, 5]
    # 4 for 2 and 2 for 4: neighbours in the set, but 2 apart in value -> not near.
    result = metrics.near_metrics([2, 4, 1, 5], [4, 2, 2, 4], labels=labels)
    np.testing.assert_array_equal(result.confusion, [[1, 0, 0, 0],
                                                     [0, 0, 1, 0],
                                                     [0, 1, 0, 0],
                                                     [0, 0, 0, 1]])
    assert result.accuracy == pytest.approx(0.5)


def test_default_labels_are_sorted_union():
    y_true = [5, 1, 5, 2]
    y_pred = [4, 1, 5, 9]
    result = metrics.classification_report(y_true, y_pred)
    np.testing.assert_array_equal(result.labels, [1, 2, 4, 5, 9])
    assert_matches(result, sklearn_figures(y_true, y_pred, [1, 2, 4, 5, 9]), [1, 2, 4, 5, 9])


def test_weighted_recall_is_accuracy():
    # As in the study's tables, where recall equals accuracy in every column.
    rng = np.random.default_rng(7)
    y_true, y_pred = random_predictions(rng, [1, 2, 3, 4, 5], 1000)
    for result in (metrics.classification_report(y_true, y_pred),
                   metrics.near_metrics(y_true, y_pred)):
        assert result.weighted_recall == pytest.approx(result.accuracy, abs=1e-12)


# ---------------------------------------------------------------- edge cases

def test_empty_class_in_declared_labels():
    labels = [1, 2, 3, 4, 5]
    y_true = [1, 2, 4, 5, 5, 1]
    y_pred = [1, 2, 5, 5, 4, 2]
    result = metrics.classification_report(y_true, y_pred, labels=labels)
    assert result.support[2] == 0
    assert result.f1[2] == 0.0 and result.precision[2] == 0.0 and result.recall[2] == 0.0
    assert_matches(result, sklearn_figures(y_true, y_pred, labels), labels)
    # sklearn's default zero_division="warn" returns the same zeros (and warns).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        p, r, f, _ = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels,
                                                         average="macro")
    assert (result.macro_precision, result.macro_recall, result.macro_f1) == pytest.approx((p, r, f))


def test_class_never_predicted_has_zero_precision():
    y_true = [1, 1, 2, 2, 3]
    y_pred = [1, 1, 2, 2, 2]  # 3 never predicted: precision 0/0
    result = metrics.classification_report(y_true, y_pred)
    assert result.precision[2] == 0.0
    assert_matches(result, sklearn_figures(y_true, y_pred, [1, 2, 3]), [1, 2, 3])


@pytest.mark.filterwarnings("ignore:A single label was found")
def test_single_class():
    result = metrics.classification_report([3, 3, 3], [3, 3, 3])
    np.testing.assert_array_equal(result.labels, [3])
    np.testing.assert_array_equal(result.confusion, [[3]])
    assert result.accuracy == 1.0
    assert result.macro_f1 == 1.0 and result.weighted_precision == 1.0
    assert_matches(result, sklearn_figures([3, 3, 3], [3, 3, 3], [3]), [3])


def test_everything_wrong():
    y_true = [1, 2, 4, 5, 1, 2]
    y_pred = [5, 4, 1, 1, 4, 5]
    result = metrics.classification_report(y_true, y_pred, labels=[1, 2, 4, 5])
    assert result.accuracy == 0.0 and result.macro_f1 == 0.0 and result.weighted_f1 == 0.0
    assert np.trace(result.confusion) == 0
    assert_matches(result, sklearn_figures(y_true, y_pred, [1, 2, 4, 5]), [1, 2, 4, 5])


@pytest.mark.parametrize("y_true,y_pred", [([4], [4]), ([4], [5]), ([2], [4])])
def test_one_sample(y_true, y_pred):
    labels = [1, 2, 4, 5]
    assert_matches(metrics.classification_report(y_true, y_pred, labels=labels),
                   sklearn_figures(y_true, y_pred, labels), labels)
    assert_matches(metrics.near_metrics(y_true, y_pred, labels=labels),
                   sklearn_figures(y_true, near_reference(y_true, y_pred), labels), labels)


def test_result_is_read_only_and_serialisable():
    result = metrics.classification_report([1, 2, 2], [1, 2, 1])
    with pytest.raises(ValueError):
        result.confusion[0, 0] = 7
    with pytest.raises(AttributeError):
        result.accuracy = 1.0
    plain = result.as_dict()
    assert plain["confusion"] == [[1, 0], [1, 1]]
    assert plain["labels"] == [1, 2]
    assert result.per_class()[2] == {"precision": 1.0, "recall": 0.5, "f1": pytest.approx(2 / 3),
                                     "support": 2}


# ---------------------------------------------------------------- input conversion

@pytest.mark.parametrize("dtype", [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16,
                                   np.uint32, np.uint64, np.float32, np.float64])
def test_any_integer_dtype_and_integral_floats(dtype):
    y_true = np.array([1, 2, 4, 5, 5, 2], dtype=dtype)
    y_pred = np.array([1, 4, 4, 5, 1, 2], dtype=dtype)
    result = metrics.classification_report(y_true, y_pred, labels=np.array([1, 2, 4, 5], dtype=dtype))
    expected = sklearn_figures(y_true.astype(int), y_pred.astype(int), [1, 2, 4, 5])
    assert_matches(result, expected, [1, 2, 4, 5])


def test_lists_and_tuples():
    result = metrics.classification_report((1, 2, 2), [1, 2, 1], labels=(1, 2, 3))
    np.testing.assert_array_equal(result.confusion, [[1, 0, 0], [1, 1, 0], [0, 0, 0]])


def test_non_contiguous_arrays():
    rng = np.random.default_rng(11)
    table = rng.choice([1, 2, 4, 5], size=(400, 3)).astype(np.int64)
    y_true = table[::2, 0]          # strided column of a C-ordered table
    y_pred = table[::-2, 2]         # negative stride
    assert not y_true.flags.c_contiguous and not y_pred.flags.c_contiguous
    result = metrics.classification_report(y_true, y_pred, labels=[1, 2, 4, 5])
    assert_matches(result, sklearn_figures(np.array(y_true), np.array(y_pred), [1, 2, 4, 5]),
                   [1, 2, 4, 5])
    near = metrics.near_metrics(y_true, y_pred, labels=[1, 2, 4, 5])
    assert_matches(near, sklearn_figures(y_true, near_reference(y_true, y_pred), [1, 2, 4, 5]),
                   [1, 2, 4, 5])


# ---------------------------------------------------------------- bad input

def test_exception_classes_are_value_errors():
    for cls in (reviewgen.LabelRangeError, reviewgen.ShapeError, reviewgen.EmptyInputError,
                reviewgen.InvalidArgumentError, reviewgen.NonFiniteError):
        assert issubclass(cls, ValueError) and issubclass(cls, reviewgen.CoreError)


@pytest.mark.parametrize("bad,name", [
    (([1, 2.5, 3], [1, 2, 3]), "y_true"),
    (([1, 2, 3], [1, 2, 3.25]), "y_pred"),
    ((["1", "2"], [1, 2]), "y_true"),
    (([1, 2], ["a", "b"]), "y_pred"),
    (([True, False], [1, 0]), "y_true"),
    (([1.0, float("nan")], [1, 1]), "y_true"),
    (([1, 2], [1, None]), "y_pred"),
])
def test_non_integral_labels_raise_type_error(bad, name):
    with pytest.raises(TypeError, match=name):
        metrics.classification_report(*bad)


def test_non_integral_declared_labels():
    with pytest.raises(TypeError, match="labels"):
        metrics.classification_report([1, 2], [1, 2], labels=[1, 1.5, 2])


def test_two_dimensional_input():
    with pytest.raises(reviewgen.ShapeError, match="y_true.*1-D"):
        metrics.classification_report([[1, 2], [2, 1]], [1, 2])
    with pytest.raises(reviewgen.ShapeError, match="y_pred.*1-D"):
        metrics.confusion_matrix([1, 2], 2)


def test_length_mismatch():
    with pytest.raises(reviewgen.ShapeError, match=r"different lengths \(3 and 2\)"):
        metrics.classification_report([1, 2, 1], [1, 2])
    with pytest.raises(reviewgen.ShapeError, match="different lengths"):
        metrics.confusion_matrix([1, 2, 1], [1, 2, 2, 2], labels=[1, 2])


def test_empty_inputs():
    with pytest.raises(reviewgen.EmptyInputError, match="y_true"):
        metrics.classification_report([], [], labels=[1, 2])
    with pytest.raises(reviewgen.EmptyInputError):
        metrics.classification_report([], [])
    with pytest.raises(reviewgen.EmptyInputError, match="labels is empty"):
        metrics.classification_report([1], [1], labels=[])


@pytest.mark.parametrize("y_true,y_pred,message", [
    ([1, 2, -1], [1, 2, 2], r"y_true\[2\] = -1"),
    ([1, 2, 2], [1, 3, 2], r"y_pred\[1\] = 3"),      # 3 is a gap of the set
    ([1, 2, 2], [1, 2, 6], r"y_pred\[2\] = 6"),
])
def test_labels_outside_declared_set(y_true, y_pred, message):
    for near in (False, True):
        with pytest.raises(reviewgen.LabelRangeError, match=message):
            metrics.classification_report(y_true, y_pred, labels=[1, 2, 4, 5], near=near)


def test_label_beyond_int32():
    with pytest.raises(reviewgen.LabelRangeError, match="y_pred.*int32"):
        metrics.classification_report([1, 2], np.array([1, 2**40], dtype=np.int64))
    with pytest.raises(reviewgen.LabelRangeError, match="y_true.*int32"):
        metrics.classification_report([-(2**31) - 1, 1], [1, 1])


@pytest.mark.parametrize("labels", [[2, 1, 4, 5], [1, 2, 2, 4, 5]])
def test_unsorted_or_duplicated_label_set(labels):
    with pytest.raises(reviewgen.InvalidArgumentError, match="strictly increasing"):
        metrics.classification_report([1, 2], [1, 2], labels=labels)


# ---------------------------------------------------------------- perplexity

@pytest.mark.parametrize("seed", [0, 1, 2])
def test_perplexity_matches_numpy(seed):
    rng = np.random.default_rng(seed)
    nll = rng.gamma(2.0, 2.0, size=(4, 33)).astype(np.float32)
    expected = np.exp(np.mean(nll.astype(np.float64)))
    assert metrics.perplexity(nll) == pytest.approx(expected, rel=1e-12)
    mask = rng.random((4, 33)) < 0.6
    expected_masked = np.exp(np.sum(nll[mask].astype(np.float64)) / mask.sum())
    assert metrics.perplexity(nll, mask) == pytest.approx(expected_masked, rel=1e-12)
    weights = rng.random((4, 33)).astype(np.float32)
    expected_weighted = np.exp(np.sum(nll.astype(np.float64) * weights) / np.sum(weights, dtype=np.float64))
    assert metrics.perplexity(nll, weights) == pytest.approx(expected_weighted, rel=1e-10)
    total = float(np.sum(nll.astype(np.float64)))
    assert metrics.perplexity_from_sum(total, nll.size) == pytest.approx(expected, rel=1e-12)


def test_perplexity_of_uniform_model_is_vocab_size():
    vocab = 50257
    nll = np.full(17, np.log(vocab), dtype=np.float32)
    assert metrics.perplexity(nll) == pytest.approx(vocab, rel=1e-6)


def test_perplexity_non_contiguous_and_lists():
    rng = np.random.default_rng(3)
    nll = rng.random((6, 20)).astype(np.float32)
    mask = rng.random((6, 20)) < 0.5
    mask[0, 0] = True
    view, mask_view = nll[:, ::3], mask[:, ::3]
    assert not view.flags.c_contiguous
    expected = np.exp(np.sum(view[mask_view], dtype=np.float64) / mask_view.sum())
    assert metrics.perplexity(view, mask_view) == pytest.approx(expected, rel=1e-12)
    assert metrics.perplexity([0.5, 1.5]) == pytest.approx(np.e, rel=1e-7)


def test_perplexity_masked_padding_may_hold_nan():
    nll = np.array([1.0, np.nan, 3.0, np.inf], dtype=np.float32)
    assert metrics.perplexity(nll, [1, 0, 1, 0]) == pytest.approx(np.exp(2.0), rel=1e-12)


@pytest.mark.parametrize("nll", [[1.0, np.nan, 2.0], [np.inf, 1.0], [1e39, 1.0], [800.0, 800.0]])
def test_perplexity_non_finite(nll):
    with pytest.raises(reviewgen.NonFiniteError, match="NaN or infinity"):
        metrics.perplexity(np.asarray(nll))


def test_perplexity_bad_input():
    with pytest.raises(reviewgen.EmptyInputError, match="nll is empty"):
        metrics.perplexity([])
    with pytest.raises(reviewgen.EmptyInputError, match="mask selects no token"):
        metrics.perplexity([1.0, 2.0], [0, 0])
    with pytest.raises(reviewgen.ShapeError, match="mask has shape"):
        metrics.perplexity(np.ones((2, 3)), np.ones((3, 2)))
    with pytest.raises(reviewgen.InvalidArgumentError, match="negative weight"):
        metrics.perplexity([1.0, 2.0], [1.0, -1.0])
    with pytest.raises(TypeError, match="nll"):
        metrics.perplexity(["a", "b"])
    with pytest.raises(TypeError, match="mask"):
        metrics.perplexity([1.0, 2.0], ["x", "y"])
    with pytest.raises(reviewgen.EmptyInputError, match="n_tokens is 0"):
        metrics.perplexity_from_sum(1.0, 0)
    with pytest.raises(reviewgen.InvalidArgumentError, match="negative"):
        metrics.perplexity_from_sum(1.0, -3)
    with pytest.raises(reviewgen.NonFiniteError):
        metrics.perplexity_from_sum(float("nan"), 3)
