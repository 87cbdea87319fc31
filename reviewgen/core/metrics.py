"""Classification metrics, the study's "near" metrics, and perplexity.

The figures are computed by the C core (csrc/rg_metrics.c); this module
checks and converts the inputs and wraps the results.

Conventions, chosen to agree with scikit-learn:

* the confusion matrix has one row per true label and one column per
  predicted label, in the order of ``labels``;
* a precision, recall or F1 with a zero denominator is 0 -- the value of
  scikit-learn's default ``zero_division="warn"`` (without its warning) --
  and such a class still counts in the macro average;
* weighted averages weight each class by its support (number of true samples).

Near metrics (the study's "métricas cercanas"): a prediction ``P`` with
``|P - R| <= 1`` for the true label ``R`` is replaced by ``R`` before the
same figures are computed. The distance is between label VALUES, not
positions in ``labels``: with labels 1, 2, 4, 5 a prediction 4 for a truth 2
is not near. Every raw label must belong to ``labels`` either way.

Labels must be integers: bool, strings and floats with a fractional part are
refused with a TypeError naming the argument; integral floats (2.0) and any
integer dtype within int32 are accepted.
"""
from __future__ import annotations

from dataclasses import dataclass
import numpy as np

from ._native import _core
from .._core import LabelRangeError, ShapeError

__all__ = [
    "ClassificationMetrics", "classification_report", "near_metrics", "confusion_matrix",
    "perplexity", "perplexity_from_sum",
]

_INT32_MIN = int(np.iinfo(np.int32).min)
_INT32_MAX = int(np.iinfo(np.int32).max)


def _as_label_array(values, name: str) -> np.ndarray:
    """`values` as a 1-D int32 array, refusing anything that is not integral."""
    array = np.asarray(values)
    kind = array.dtype.kind
    if kind == "b":
        raise TypeError(f"{name}: labels must be integers, got booleans")
    if kind == "O" and array.size > 0:
        # Python ints beyond int64 or mixed objects: accept only true integers.
        if not all(isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))
                   for v in array.ravel()):
            raise TypeError(f"{name}: labels must be integers, got objects of other types")
        kind = "i"
    elif kind == "O":
        array = array.astype(np.int64)
        kind = "i"
    elif kind not in "iuf":
        raise TypeError(f"{name}: labels must be integers, got dtype {array.dtype}")
    if array.ndim != 1:
        raise ShapeError(f"{name}: expected a 1-D sequence of labels, got shape {array.shape}")
    if array.size == 0:
        return np.zeros(0, dtype=np.int32)
    if kind == "f":
        if not np.all(np.isfinite(array)):
            raise TypeError(f"{name}: labels must be integers, got NaN or infinity")
        if not np.all(array == np.floor(array)):
            bad = array[array != np.floor(array)][0]
            raise TypeError(f"{name}: labels must be integers, got {bad!r} with a fractional part")
    low, high = array.min(), array.max()
    if int(low) < _INT32_MIN or int(high) > _INT32_MAX:
        raise LabelRangeError(f"{name}: label {int(low) if int(low) < _INT32_MIN else int(high)} "
                              f"is outside the int32 range")
    return np.ascontiguousarray(array, dtype=np.int32)


def _resolve(y_true, y_pred, labels):
    y_true_array = _as_label_array(y_true, "y_true")
    y_pred_array = _as_label_array(y_pred, "y_pred")
    if labels is None:
        labels_array = np.union1d(y_true_array, y_pred_array).astype(np.int32)
    else:
        labels_array = _as_label_array(labels, "labels")
    return y_true_array, y_pred_array, labels_array


def _frozen(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class ClassificationMetrics:
    """Figures of one classification run; per-class arrays follow `labels`.

    Arrays are read-only. `near` says whether the near rule was applied."""

    labels: np.ndarray            # (K,) int32, strictly increasing
    confusion: np.ndarray         # (K, K) int64, rows true, columns predicted
    precision: np.ndarray         # (K,) float64
    recall: np.ndarray            # (K,) float64
    f1: np.ndarray                # (K,) float64
    support: np.ndarray           # (K,) int64, true samples per class
    n_samples: int
    accuracy: float
    macro_precision: float
    macro_recall: float
    macro_f1: float
    weighted_precision: float
    weighted_recall: float
    weighted_f1: float
    near: bool

    def as_dict(self) -> dict:
        """Plain Python values (lists and floats), e.g. for JSON."""
        out = {}
        for key, value in self.__dict__.items():
            out[key] = value.tolist() if isinstance(value, np.ndarray) else value
        return out

    def per_class(self) -> dict:
        """{label: {"precision", "recall", "f1", "support"}} for each declared label."""
        return {int(label): {"precision": float(self.precision[k]), "recall": float(self.recall[k]),
                             "f1": float(self.f1[k]), "support": int(self.support[k])}
                for k, label in enumerate(self.labels)}


def classification_report(y_true, y_pred, labels=None, near: bool = False) -> ClassificationMetrics:
    """Accuracy, per-class precision/recall/F1, macro and weighted averages and the
    confusion matrix of `y_pred` against `y_true`.

    `labels`: the declared label set, strictly increasing; it may hold labels that
    never occur (empty classes, which score 0 and count in the macro average).
    Default: the sorted union of y_true and y_pred. `near=True` applies the near
    rule first (see the module docstring).

    Raises TypeError (non-integral labels), ShapeError (not 1-D, different lengths),
    EmptyInputError (no samples or empty labels), InvalidArgumentError (labels not
    strictly increasing), LabelRangeError (a label outside `labels` or int32)."""
    y_true_array, y_pred_array, labels_array = _resolve(y_true, y_pred, labels)
    figures = _core.metrics_classification(y_true_array, y_pred_array, labels_array, bool(near))
    for key in ("labels", "confusion", "precision", "recall", "f1", "support"):
        figures[key] = _frozen(figures[key])
    return ClassificationMetrics(**figures)


def near_metrics(y_true, y_pred, labels=None) -> ClassificationMetrics:
    """classification_report(..., near=True): a prediction within 1 (in label value)
    of the true label counts as the true label."""
    return classification_report(y_true, y_pred, labels=labels, near=True)


def confusion_matrix(y_true, y_pred, labels=None, near: bool = False) -> np.ndarray:
    """(K, K) int64 counts, rows true labels, columns predicted labels, in the order
    of `labels` (default: sorted union of both). Errors as classification_report."""
    y_true_array, y_pred_array, labels_array = _resolve(y_true, y_pred, labels)
    return _core.metrics_confusion(y_true_array, y_pred_array, labels_array, bool(near))


def perplexity(nll, mask=None) -> float:
    """exp(mean per-token negative log-likelihood), natural log.

    `nll`: per-token NLLs of any shape (e.g. (B, T)), converted to float32.
    `mask`: optional, same shape; booleans or non-negative weights. Tokens of
    weight 0 (padding) are skipped, whatever their nll holds.

    Raises NonFiniteError (NaN/inf in a counted nll, or an overflowing result),
    EmptyInputError (no token counted), ShapeError (mask shape differs),
    InvalidArgumentError (negative weight), TypeError (non-numeric input)."""
    nll_array = np.asarray(nll)
    if nll_array.dtype.kind not in "iuf":
        raise TypeError(f"nll: expected real numbers, got dtype {nll_array.dtype}")
    with np.errstate(over="ignore"):  # beyond float32 becomes inf: the core names it
        nll_array = np.ascontiguousarray(nll_array, dtype=np.float32)
    mask_array = None
    if mask is not None:
        mask_array = np.asarray(mask)
        if mask_array.dtype.kind not in "biuf":
            raise TypeError(f"mask: expected booleans or real weights, got dtype {mask_array.dtype}")
        mask_array = np.ascontiguousarray(mask_array, dtype=np.float32)
    return _core.metrics_perplexity(nll_array, mask_array)


def perplexity_from_sum(sum_nll: float, n_tokens: float) -> float:
    """exp(sum_nll / n_tokens) from running totals (n_tokens may be a total weight)."""
    return _core.metrics_perplexity_from_sum(float(sum_nll), float(n_tokens))
