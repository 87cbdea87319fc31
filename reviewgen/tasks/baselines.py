"""A TF-IDF + logistic-regression baseline for the review classifier.

A reference point for the fine-tuned encoders, scored with reviewgen.metrics
(exact and near figures). It uses scikit-learn, which reviewgen does not
require: install it (`pip install scikit-learn`) to run the baseline.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..core import metrics as _metrics

__all__ = ["tfidf_pipeline", "tfidf_logistic_regression"]


def tfidf_pipeline(rows: int, *, C: float = 2.0, ngram_max: int = 2, max_features: int = 50000, seed: int = 0):
    """The baseline's recipe as an unfitted scikit-learn pipeline: word 1..ngram_max-gram
    TF-IDF (sublinear, accents stripped; terms in at least two of `rows` training texts
    once there are 50) and logistic regression. The filter's TF-IDF head is this too."""
    try:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
    except ImportError:
        raise ImportError("the TF-IDF baseline needs scikit-learn: pip install scikit-learn") from None
    return make_pipeline(
        TfidfVectorizer(max_features=max_features, ngram_range=(1, ngram_max), sublinear_tf=True,
                        min_df=2 if rows >= 50 else 1, strip_accents="unicode"),
        LogisticRegression(C=C, max_iter=2000, random_state=seed))


def tfidf_logistic_regression(train_texts: Sequence[str], train_labels: Sequence[int],
                              test_texts: Sequence[str], test_labels: Sequence[int], *,
                              labels: Sequence[int] | None = None, C: float = 2.0, ngram_max: int = 2,
                              max_features: int = 50000, seed: int = 0) -> dict:
    """Fit on the training texts, score on the test texts; returns the figures."""
    train_labels = np.asarray(train_labels)
    truth = np.asarray(test_labels)
    if labels is None:
        labels = sorted(set(train_labels.tolist()) | set(truth.tolist()))
    pipeline = tfidf_pipeline(len(train_texts), C=C, ngram_max=ngram_max, max_features=max_features, seed=seed)
    pipeline.fit(list(train_texts), train_labels)
    predicted = pipeline.predict(list(test_texts))
    exact = _metrics.classification_report(truth, predicted, labels=list(labels))
    near = _metrics.classification_report(truth, predicted, labels=list(labels), near=True)
    return {"features": len(pipeline[0].vocabulary_), "C": C, "ngram_max": ngram_max,
            "accuracy": exact.accuracy, "macro_f1": exact.macro_f1, "weighted_f1": exact.weighted_f1,
            "near_accuracy": near.accuracy, "near_macro_f1": near.macro_f1,
            "confusion_matrix": np.asarray(exact.confusion).tolist(), "labels": list(labels),
            "exact": exact.as_dict(), "near": near.as_dict()}
