"""The filter between the generator and the data set: which generated reviews are kept.

    flt = ReviewFilter(classifier, FilterConfig(rule="exact"), train_texts=real_training_texts)
    result = generate_filtered(lambda label, n, round_: texts..., labels=[1, 2, 4, 5], review_filter=flt,
                               keep_per_label=20, batch_per_label=20, max_rounds=4)
    result.accepted, result.rejected     # one dict per review: label, predicted, probability, reason, ...
    result.counts                        # pandas DataFrame: per label generated, kept, dropped per reason

Rules (``FilterConfig.rule``):

* ``"exact"`` (default, the seed's rule): the classifier's most likely label is the wanted one;
* ``"near"``: it lies within ``near_distance`` of the wanted one;
* ``"any"``: no label check (for top-N alone).

On top of the rule: ``threshold`` (the classifier's probability of the wanted
label must reach it) and ``top_n`` (LAMBADA's rule: of the reviews that pass,
keep the ``top_n`` per label with the highest probability of the wanted label).

Dropped before the classifier is asked, in this order, each with its reason:
``empty`` (fewer than ``min_words`` words), ``assistant`` (reads as a chat
assistant's reply, "as an AI ...", "here is the revised version", rather than a
review: ``evaluation.reads_as_assistant``; off with ``drop_assistant=False``), ``copy`` (shares a span of
``copy_span`` words with a training text, or equals one), ``duplicate`` (the
same words as a review already kept, or word-trigram Jaccard similarity of at
least ``near_duplicate`` with one). Then ``mismatch`` (the label rule fails),
``threshold``, and ``top_n`` (passed, but not among the best N) or ``surplus``
(passed in a round that brought more than ``keep_per_label``; the most
confident are kept).

``fill_below_threshold``: a label that kept fewer than ``keep_per_label``
after the last round is filled up with its reviews that passed the rule but
missed the threshold (the seed's rule without the threshold), the most
confident first, never a duplicate; they carry ``fallback=1`` and are counted
in the ``fallback`` column, so a starved rating is visible, not hidden.

The classifier is anything with ``labels`` (the label value of each column)
and ``predict_proba(texts) -> (N, K)``: a :class:`reviewgen.Classifier` or an
:class:`EmbeddingClassifier` (frozen sentence embeddings + logistic regression).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..core.config import JsonConfig
from .evaluation import SpanIndex, reads_as_assistant, words

__all__ = ["FilterConfig", "ReviewFilter", "FilterResult", "generate_filtered", "review_sampler", "GenerationInterrupted", "write_filter_result", "EmbeddingClassifier", "REASONS"]

RULES = ("exact", "near", "any")
REASONS = ("empty", "assistant", "copy", "duplicate", "mismatch", "threshold", "top_n", "surplus")
COUNTS = ("generated", "kept", "fallback") + REASONS


@dataclass
class FilterConfig(JsonConfig):
    rule: str = "exact"
    near_distance: int = 1
    threshold: float = 0.0
    top_n: int = 0                 # 0: no top-N selection
    min_words: int = 5
    copy_span: int = 12
    near_duplicate: float = 0.5    # word-trigram Jaccard; 1.0 drops only identical texts
    fill_below_threshold: bool = False  # fill a starved label with rule-passing reviews under the threshold
    drop_assistant: bool = True    # drop texts that read as a chat assistant's reply

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"FilterConfig.rule must be one of {RULES}, got {self.rule!r}")
        if not 0.0 <= float(self.threshold) <= 1.0:
            raise ValueError(f"FilterConfig.threshold must lie in [0, 1], got {self.threshold!r}")
        if not 0.0 < float(self.near_duplicate) <= 1.0:
            raise ValueError(f"FilterConfig.near_duplicate must lie in (0, 1], got {self.near_duplicate!r}")
        for name in ("near_distance", "top_n", "min_words", "copy_span"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"FilterConfig.{name} must be an integer >= 0, got {value!r}")
        if self.copy_span < 1:
            raise ValueError("FilterConfig.copy_span must be at least 1")


def _shingles(tokens: List[str], n: int = 3) -> frozenset:
    if len(tokens) < n:
        return frozenset([tuple(tokens)])
    return frozenset(tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


class ReviewFilter:
    """Checks generated reviews; remembers what it kept (for duplicates across rounds)."""

    def __init__(self, classifier, config: Optional[FilterConfig] = None, train_texts: Sequence[str] = ()):
        if not hasattr(classifier, "predict_proba") or not hasattr(classifier, "labels"):
            raise TypeError("the classifier needs .labels and .predict_proba(texts)")
        self.classifier = classifier
        self.config = config or FilterConfig()
        self.labels = list(classifier.labels)
        train_texts = list(train_texts)
        self._spans = SpanIndex(train_texts, self.config.copy_span)
        self._train_exact = {" ".join(words(t)) for t in train_texts}
        self._kept_exact: set = set()
        self._kept_shingles: List[frozenset] = []

    def _is_duplicate(self, key: str, shingles: frozenset) -> bool:
        if key in self._kept_exact:
            return True
        limit = self.config.near_duplicate
        for other in self._kept_shingles:
            union = len(shingles | other)
            if union and len(shingles & other) / union >= limit:
                return True
        return False

    def remember(self, text: str) -> None:
        tokens = words(text)
        self._kept_exact.add(" ".join(tokens))
        self._kept_shingles.append(_shingles(tokens))

    def forget(self, text: str) -> None:
        tokens = words(text)
        key = " ".join(tokens)
        self._kept_exact.discard(key)
        shingles = _shingles(tokens)
        if shingles in self._kept_shingles:
            self._kept_shingles.remove(shingles)

    def check(self, texts: Sequence[str], wanted: Sequence) -> List[dict]:
        """One row per text: label, predicted, probability (of the predicted
        label), wanted_probability, reason ("" when kept). Kept texts are
        remembered, so a later duplicate of them is dropped."""
        if isinstance(texts, str):
            raise TypeError("texts must be a sequence of strings, not one string")
        texts, wanted = list(texts), list(wanted)
        if len(texts) != len(wanted):
            raise ValueError(f"{len(texts)} texts but {len(wanted)} wanted labels")
        for label in set(wanted):
            if label not in self.labels:
                raise ValueError(f"wanted label {label!r} is not one of the classifier's labels {self.labels}")
        cfg = self.config
        probabilities = self.classifier.predict_proba(texts) if texts else np.zeros((0, len(self.labels)))
        rows = []
        for text, label, probs in zip(texts, wanted, probabilities):
            guess = self.labels[int(np.argmax(probs))]
            row = {"label": label, "predicted": guess, "probability": float(np.max(probs)),
                   "wanted_probability": float(probs[self.labels.index(label)]), "text": text, "reason": "",
                   "fallback": 0}
            tokens = words(text)
            key = " ".join(tokens)
            if len(tokens) < cfg.min_words:
                row["reason"] = "empty"
            elif cfg.drop_assistant and reads_as_assistant(text):
                row["reason"] = "assistant"
            elif key in self._train_exact or self._spans.copies(text):
                row["reason"] = "copy"
            elif self._is_duplicate(key, _shingles(tokens)):
                row["reason"] = "duplicate"
            elif cfg.rule == "exact" and guess != label:
                row["reason"] = "mismatch"
            elif cfg.rule == "near" and abs(float(guess) - float(label)) > cfg.near_distance:
                row["reason"] = "mismatch"
            elif row["wanted_probability"] < cfg.threshold:
                row["reason"] = "threshold"
            if not row["reason"]:
                self.remember(text)
            rows.append(row)
        return rows


@dataclass
class FilterResult:
    accepted: List[dict] = field(default_factory=list)
    rejected: List[dict] = field(default_factory=list)
    counts: "object" = None  # pandas DataFrame

    def frame(self, which: str = "accepted"):
        import pandas as pd

        return pd.DataFrame(getattr(self, which))


def generate_filtered(generate: Callable[[object, int, int], List[str]], labels: Sequence,
                      review_filter: ReviewFilter, *, keep_per_label: int = 20, batch_per_label: int = 20,
                      max_rounds: int = 3, log: Optional[Callable[[str], None]] = None,
                      keep_surplus: bool = False,
                      on_round: Optional[Callable[[object, int, int], None]] = None) -> FilterResult:
    """For each label, call ``generate(label, n, round)`` (round 1, 2, ...) and filter
    until ``keep_per_label`` reviews pass (with top_n: until top_n pass, then the
    best top_n are kept) or ``max_rounds`` rounds ran. keep_surplus keeps every
    review that passed, even beyond keep_per_label (the seed's rule with
    keep_per_label=1: a new round only while a label has kept nothing).

    ``on_round(label, round, passed so far)`` after each round (progress bars).
    Ctrl-C raises :class:`GenerationInterrupted` with the reviews so far."""
    if keep_per_label < 1 or batch_per_label < 1 or max_rounds < 1:
        raise ValueError("keep_per_label, batch_per_label and max_rounds must be at least 1")
    top_n = review_filter.config.top_n
    target = top_n or keep_per_label
    result = FilterResult()
    counts: Dict[object, Dict[str, int]] = {}
    try:
        _filter_labels(generate, labels, review_filter, result, counts, keep_per_label, batch_per_label,
                       max_rounds, log, keep_surplus, top_n, target, on_round)
    except KeyboardInterrupt:
        result.counts = _count_table(counts)
        raise GenerationInterrupted(result) from None
    result.counts = _count_table(counts)
    return result


def review_sampler(generator, fmt, settings, *, openers: Optional[Dict[int, Sequence[str]]] = None,
                   opening_words: int = 3, batch_size: Optional[int] = None):
    """The ``generate`` callback of :func:`generate_filtered` for a generator in format ``fmt``.

    ``settings`` carries the sampling knobs (max_new_tokens, min_new_tokens,
    temperature, top_k, top_p, repetition_penalty, no_repeat_ngram_size) and
    ``seed``, from which each label and round gets its own seed. ``openers``
    ({label: real reviews}) opens each review with the first ``opening_words``
    words of one of its label. An empty text comes back as "(empty)", for the
    filter to count."""
    from ..text.conditioning import generate_reviews, review_openings

    def sample(label, n: int, round_index: int) -> List[str]:
        seed = settings.seed * 1000003 + int(label) * 101 + round_index
        real = (openers or {}).get(int(label))
        texts = generate_reviews(generator, fmt, label, n, max_new_tokens=settings.max_new_tokens,
                                 min_new_tokens=settings.min_new_tokens, temperature=settings.temperature,
                                 top_k=settings.top_k, top_p=settings.top_p,
                                 repetition_penalty=settings.repetition_penalty,
                                 no_repeat_ngram_size=settings.no_repeat_ngram_size, seed=seed,
                                 batch_size=batch_size or n,
                                 openings=review_openings(real, n, opening_words, seed) if real else None)
        return [t if t else "(empty)" for t in texts]

    return sample


class GenerationInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`generate_filtered`; ``result`` holds what was
    generated so far: the finished labels as usual, and the reviews of the label
    in progress that had passed the filter (accepted, before any top-N choice)."""

    def __init__(self, result: FilterResult):
        super().__init__(f"generation interrupted after {len(result.accepted) + len(result.rejected)} reviews")
        self.result = result


def _count_table(counts: Dict[object, Dict[str, int]]):
    import pandas as pd

    table = pd.DataFrame.from_dict(counts, orient="index", columns=list(COUNTS))
    table.index.name = "label"
    table.loc["all"] = table.sum()
    return table.astype(int)


def _filter_labels(generate, labels, review_filter, result, counts, keep_per_label, batch_per_label, max_rounds,
                   log, keep_surplus, top_n, target, on_round) -> None:
    for label in labels:
        passed: List[dict] = []
        tally = counts[label] = dict.fromkeys(COUNTS, 0)
        try:
            _filter_label(generate, label, review_filter, result, passed, tally, batch_per_label, max_rounds,
                          log, target, on_round)
        except KeyboardInterrupt:
            result.accepted.extend(passed)  # they passed; the label is unfinished
            tally["kept"] = len(passed)
            raise
        passed.sort(key=lambda r: -r["wanted_probability"])
        if top_n:
            keep, extra = passed[:top_n], passed[top_n:]
        elif keep_surplus:
            keep, extra = passed, []
        else:
            keep, extra = passed[:keep_per_label], passed[keep_per_label:]
        for row in extra:
            row["reason"] = "top_n" if top_n else "surplus"  # passed, but beyond the N kept
            review_filter.forget(row["text"])
            tally[row["reason"]] += 1
        if review_filter.config.fill_below_threshold and len(keep) < target:
            keep += _fill_below_threshold(review_filter, result.rejected, label, target - len(keep), tally)
        result.accepted.extend(keep)
        result.rejected.extend(extra)
        tally["kept"] = len(keep)


def _filter_label(generate, label, review_filter, result, passed, tally, batch_per_label, max_rounds, log,
                  target, on_round) -> None:
    """Rounds of one label until `target` reviews passed or max_rounds ran."""
    for round_index in range(1, max_rounds + 1):
        texts = generate(label, batch_per_label, round_index)
        rows = review_filter.check(texts, [label] * len(texts))
        tally["generated"] += len(rows)
        for row in rows:
            row["round"] = round_index
            (passed if not row["reason"] else result.rejected).append(row)
            if row["reason"]:
                tally[row["reason"]] += 1
        if log:
            log(f"label {label} round {round_index}: {sum(not r['reason'] for r in rows)}/{len(rows)} passed, "
                f"{len(passed)} so far")
        if on_round:
            on_round(label, round_index, len(passed))
        if len(passed) >= target:
            break


REVIEW_COLUMNS = ("label", "predicted", "probability", "wanted_probability", "round", "reason", "fallback", "text")


def write_filter_result(out_dir: str, result: FilterResult) -> None:
    """accepted.csv / .jsonl, rejected.csv / .jsonl (label is the wanted label; the
    JSONL names it wanted_label, and predicted predicted_label) and filter_counts.csv."""
    import csv
    import json
    import os

    from ..core.files import atomic_write, jsonable

    for name in ("accepted", "rejected"):
        rows = getattr(result, name)
        with atomic_write(os.path.join(out_dir, f"{name}.csv"), newline="") as f:
            writer = csv.writer(f)
            writer.writerow(REVIEW_COLUMNS)
            for row in rows:
                writer.writerow([row["label"], row["predicted"], f"{row['probability']:.4f}",
                                 f"{row.get('wanted_probability', float('nan')):.4f}", row["round"],
                                 row.get("reason", ""), row.get("fallback", 0), row["text"]])
        with atomic_write(os.path.join(out_dir, f"{name}.jsonl")) as f:
            for row in rows:
                record = {k: jsonable(row.get(k)) for k in REVIEW_COLUMNS}
                record["wanted_label"] = record.pop("label")
                record["predicted_label"] = record.pop("predicted")
                f.write(json.dumps(record, ensure_ascii=False) + "\n")
    if result.counts is not None:
        with atomic_write(os.path.join(out_dir, "filter_counts.csv"), newline="") as f:
            result.counts.to_csv(f)


def _fill_below_threshold(review_filter: ReviewFilter, rejected: List[dict], label, wanted: int,
                          tally: Dict[str, int]) -> List[dict]:
    """Up to `wanted` of the label's reviews refused only for the threshold, most
    confident first, skipping near-duplicates of what is kept (see the module docstring)."""
    candidates = sorted((row for row in rejected if row["label"] == label and row["reason"] == "threshold"),
                        key=lambda row: -row["wanted_probability"])
    taken = []
    for row in candidates:
        if len(taken) == wanted:
            break
        tokens = words(row["text"])
        if review_filter._is_duplicate(" ".join(tokens), _shingles(tokens)):
            continue
        review_filter.remember(row["text"])
        row["reason"], row["fallback"] = "", 1
        tally["threshold"] -= 1
        tally["fallback"] += 1
        taken.append(row)
    rejected[:] = [row for row in rejected if row["reason"]]
    return taken


class EmbeddingClassifier:
    """Frozen text features (a :class:`reviewgen.tasks.encoder.SentenceEncoder`:
    mean-pooled MiniLM, or a language model's middle blocks with
    :meth:`~reviewgen.tasks.encoder.SentenceEncoder.from_decoder`) and a
    multinomial logistic-regression head (scikit-learn), with C chosen by
    cross-validation on the training rows.

    tfidf_weight > 0 adds a second head, TF-IDF (word 1-2-grams) + logistic
    regression on the same rows, and averages the two heads' probabilities
    with that weight on the TF-IDF one; ``tfidf_weight="cv"`` picks the weight
    from ``TFIDF_WEIGHTS`` by the accuracy of out-of-fold predictions on the
    training rows alone (``cv_accuracy`` keeps each weight's score; weight 1.0
    is TF-IDF + LR alone, so the choice is never worse than it on those folds).
    standardize=True rescales every feature to zero mean and unit variance on
    the training rows first (a language model's hidden states are not
    normalised)."""

    TFIDF_WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))

    def __init__(self, encoder, Cs: Sequence[float] = (0.25, 1.0, 4.0, 16.0, 64.0), cv: int = 5, seed: int = 0,
                 tfidf_weight=0.0, standardize: bool = False):
        if tfidf_weight != "cv" and not (isinstance(tfidf_weight, (int, float)) and not isinstance(tfidf_weight, bool)
                                         and 0.0 <= float(tfidf_weight) <= 1.0):
            raise ValueError(f"tfidf_weight must lie in [0, 1] or be 'cv', got {tfidf_weight!r}")
        self.encoder = encoder
        self.Cs, self.cv, self.seed = list(Cs), int(cv), int(seed)
        self.choose_weight = tfidf_weight == "cv"
        self.tfidf_weight = 0.0 if self.choose_weight else float(tfidf_weight)
        self.standardize = bool(standardize)
        self.head = None
        self.tfidf = None
        self.scale = None
        self.labels: list = []
        self.cv_accuracy: Dict[float, float] = {}

    def _tfidf_head(self, rows: int):
        from ..tasks.baselines import tfidf_pipeline

        return tfidf_pipeline(rows, seed=self.seed)

    def _features(self, texts) -> np.ndarray:
        features = self.encoder.encode(texts)
        if self.scale is not None:
            mean, std = self.scale
            features = (features - mean) / std
        return features

    def fit(self, texts: Sequence[str], labels: Sequence) -> "EmbeddingClassifier":
        try:
            from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
            from sklearn.model_selection import StratifiedKFold, cross_val_predict
        except ImportError:
            raise ImportError("EmbeddingClassifier needs scikit-learn: pip install 'reviewgen[quality]'") from None
        texts, labels = list(texts), [v.item() if hasattr(v, "item") else v for v in labels]
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if len(set(labels)) < 2:
            raise ValueError("EmbeddingClassifier needs at least two labels")
        features = self.encoder.encode(texts)
        self.scale = None
        if self.standardize:
            self.scale = (features.mean(axis=0), np.maximum(features.std(axis=0), 1e-6))
            features = (features - self.scale[0]) / self.scale[1]
        folds = min(self.cv, min(labels.count(v) for v in set(labels)))
        splitter = StratifiedKFold(folds, shuffle=True, random_state=self.seed) if folds >= 2 else None
        if splitter is not None and len(self.Cs) > 1:
            self.head = LogisticRegressionCV(Cs=self.Cs, cv=splitter, max_iter=3000, random_state=self.seed,
                                             scoring="accuracy")  # C chosen by accuracy, as it always was
        else:
            self.head = LogisticRegression(C=self.Cs[0], max_iter=3000, random_state=self.seed)
        with warnings.catch_warnings():  # scikit-learn 1.9 announces a change of fitted attributes we do not read
            warnings.filterwarnings("ignore", message="The fitted attributes of LogisticRegressionCV",
                                    category=FutureWarning)
            # and one of l1_ratios' default (None -> (0,)): both mean a plain L2 penalty here
            warnings.filterwarnings("ignore", message="The default value for l1_ratios", category=FutureWarning)
            self.head.fit(features, labels)
        self.labels = [v.item() if hasattr(v, "item") else v for v in self.head.classes_]
        self.cv_accuracy = {}
        if self.choose_weight:
            if splitter is None:
                raise ValueError("tfidf_weight='cv' needs at least 2 training rows of every label")
            truth = np.asarray(labels)
            ours = cross_val_predict(LogisticRegression(C=self.C, max_iter=3000, random_state=self.seed),
                                     features, labels, cv=splitter, method="predict_proba")
            theirs = cross_val_predict(self._tfidf_head(len(texts)), texts, labels, cv=splitter,
                                       method="predict_proba")
            order = np.asarray(self.labels)
            for weight in self.TFIDF_WEIGHTS:
                mixed = (1 - weight) * ours + weight * theirs
                self.cv_accuracy[weight] = float((order[mixed.argmax(axis=1)] == truth).mean())
            # the first best weight in the grid: ties go to more of the learnt features
            self.tfidf_weight = max(self.TFIDF_WEIGHTS, key=lambda w: (self.cv_accuracy[w], -w))
        self.tfidf = None
        if self.tfidf_weight > 0:
            self.tfidf = self._tfidf_head(len(texts)).fit(texts, labels)
        return self

    @property
    def C(self) -> float:
        return float(self.head.C_[0]) if hasattr(self.head, "C_") else float(self.head.C)

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        if self.head is None:
            raise RuntimeError("the classifier is not trained: call fit() first")
        texts = list(texts)
        if not texts:
            return np.zeros((0, len(self.labels)))
        probs = self.head.predict_proba(self._features(texts))
        if self.tfidf is not None:
            probs = (1 - self.tfidf_weight) * probs + self.tfidf_weight * self.tfidf.predict_proba(texts)
        return probs

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        probs = self.predict_proba(texts)
        return np.asarray(self.labels)[probs.argmax(axis=1)] if len(probs) else np.zeros(0)

    def evaluate(self, texts: Sequence[str], labels: Sequence) -> dict:
        from ..core import metrics as _metrics

        predicted = self.predict(texts)
        truth = np.asarray(labels)
        exact = _metrics.classification_report(truth, predicted, labels=sorted(self.labels))
        near = _metrics.classification_report(truth, predicted, labels=sorted(self.labels), near=True)
        return {"n_samples": len(truth), "accuracy": exact.accuracy, "macro_f1": exact.macro_f1,
                "near_accuracy": near.accuracy, "near_macro_f1": near.macro_f1,
                "confusion_matrix": np.asarray(exact.confusion).tolist(), "labels": sorted(self.labels)}
