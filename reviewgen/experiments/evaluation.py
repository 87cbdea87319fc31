"""Quality of generated labelled reviews, measured against held-out real reviews.

    judge = Judge().fit(judge_texts, judge_labels)          # real reviews nobody else saw
    report = evaluate_generated(gen_texts, gen_labels, real_texts, real_labels, judge=judge,
                                encoder=SentenceEncoder.from_pretrained("minilm"),
                                train_texts=generator_training_texts, base_generator=base)
    report.table          # pandas DataFrame: one row per wanted label and one "all" row
    report.to_dict()

What each column means (per label, and over all texts in the "all" row):

* ``judge_exact`` / ``judge_near``: share of generated texts whose label the
  independent judge (:class:`Judge`, TF-IDF + logistic regression) predicts
  exactly / within one label of the wanted one; ``real_exact`` / ``real_near``:
  the same judge on held-out real reviews of that label, each truncated to the
  word length of a generated text (the reference for short texts);
* ``mauve`` and ``mauve_real``: MAUVE (mauve-text) between the generated texts
  and real reviews on mean-pooled sentence embeddings from the core's encoder
  (:class:`reviewgen.embeddings.SentenceEncoder`), and between two disjoint
  samples of real reviews of the same sizes (the reference); both are means
  over ``mauve_draws`` draws of the real reviews, ``mauve_sd`` the spread of
  the first over the draws (on a few dozen texts one draw moves it by 0.2);
* ``distinct_1`` / ``distinct_2``: distinct unigrams / bigrams over all tokens;
  ``repeated_4gram``: share of texts with some word 4-gram twice or more;
  ``self_bleu``: mean BLEU-4 of each text against the others of the group
  (1 = all the same); ``real_repeated_4gram`` / ``real_distinct_2``: the same
  on the length-matched real reviews (the reference);
* ``words_mean`` / ``real_words_mean`` and ``length_ks``: mean word counts and
  the Kolmogorov-Smirnov distance between the two length distributions;
* ``copied_12gram``: share of texts that share a span of 12 words with a
  training text;
* ``perplexity``: of the generated texts (no prompt) under the base generator.

Words are lower-cased ``\\w+`` runs (punctuation and HTML line breaks dropped).
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

__all__ = ["Judge", "bundled_judge", "QualityReport", "evaluate_generated", "words", "distinct_n", "repeated_ngram_share",
           "self_bleu", "copied_span_share", "mauve_score", "length_ks", "truncate_words",
           "near_agreement", "DEFAULT_LABEL_NEAR", "reads_as_assistant"]

_WORD = re.compile(r"\w+", re.UNICODE)
_BREAK = re.compile(r"<br\s*/?>", re.IGNORECASE)
DEFAULT_LABEL_NEAR = 1
# What a chat model writes when it answers as an assistant instead of reviewing ("as an AI ...",
# "Here is the revised version", "my previous response"). Chosen to be rare in real reviews: it
# matches 21 of the 50,000 IMDB train and test reviews (0.04%) and 2.3% of the generated ones
# committed under notebooks/results/quality/ (LOG.md, "Assistant replies").
_ASSISTANT = re.compile(
    r"\b(?:as an AI|AI assistant|language model|I apologi[sz]e for|I cannot provide|I can't provide|I'm unable to"
    r"|(?:previous|my last|your) (?:response|message|request|prompt)"
    r"|here(?: is|'s) (?:the|my|a|an|your) (?:rest|revised|rewritten|response|version)"
    r"|I hope (?:this|that) helps|as requested|you requested|original message)\b", re.IGNORECASE)


def words(text: str) -> List[str]:
    """Lower-cased word tokens of a text (HTML line breaks removed)."""
    if not isinstance(text, str):
        raise TypeError(f"expected a str, got {type(text).__name__}")
    return _WORD.findall(_BREAK.sub(" ", text).lower())


def reads_as_assistant(text: str) -> bool:
    """True when the text reads as a chat assistant's reply rather than a review."""
    return _ASSISTANT.search(text) is not None


def _check_texts(texts, name: str) -> List[str]:
    if isinstance(texts, str):
        raise TypeError(f"{name} must be a sequence of strings, not one string")
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise TypeError(f"{name}[{i}] is {type(text).__name__}, not str")
    return texts


def _ngrams(tokens: Sequence[str], n: int) -> List[tuple]:
    return [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]


# ---------------------------------------------------------------------------
# diversity and degeneration
# ---------------------------------------------------------------------------

def distinct_n(texts: Sequence[str], n: int) -> float:
    """Distinct n-grams / all n-grams over the texts (NaN when there is none)."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    grams = [g for text in _check_texts(texts, "texts") for g in _ngrams(words(text), n)]
    return len(set(grams)) / len(grams) if grams else float("nan")


def repeated_ngram_share(texts: Sequence[str], n: int = 4) -> float:
    """Share of texts in which some word n-gram occurs at least twice."""
    texts = _check_texts(texts, "texts")
    if not texts:
        return float("nan")
    repeated = 0
    for text in texts:
        counts = Counter(_ngrams(words(text), n))
        repeated += any(c > 1 for c in counts.values())
    return repeated / len(texts)


def _bleu(hyp: List[str], refs_counts: List[List[Counter]], ref_lengths: List[int], max_n: int) -> float:
    """Sentence BLEU of hyp against several references, add-one smoothed for n > 1."""
    if not hyp:
        return 0.0
    log_p = 0.0
    for n in range(1, max_n + 1):
        counts = Counter(_ngrams(hyp, n))
        total = sum(counts.values())
        clipped = 0
        for gram, count in counts.items():
            best = 0
            for ref in refs_counts:
                value = ref[n - 1].get(gram, 0)
                if value > best:
                    best = value
                    if best >= count:
                        break
            clipped += min(count, best)
        if n == 1:
            if clipped == 0:
                return 0.0
            log_p += math.log(clipped / total)
        else:
            log_p += math.log((clipped + 1) / (total + 1))
    closest = min(ref_lengths, key=lambda r: (abs(r - len(hyp)), r))
    brevity = 1.0 if len(hyp) > closest else math.exp(1 - closest / len(hyp))
    return brevity * math.exp(log_p / max_n)


def self_bleu(texts: Sequence[str], max_n: int = 4, sample: int = 100, seed: int = 0) -> float:
    """Mean BLEU-``max_n`` of each text (at most ``sample`` of them) against all the others."""
    texts = _check_texts(texts, "texts")
    if len(texts) < 2:
        return float("nan")
    tokens = [words(t) for t in texts]
    counts = [[Counter(_ngrams(t, n)) for n in range(1, max_n + 1)] for t in tokens]
    index = np.arange(len(texts))
    if len(index) > sample:
        index = np.random.default_rng(seed).choice(index, sample, replace=False)
    scores = []
    for i in index:
        others = [counts[j] for j in range(len(texts)) if j != i]
        lengths = [len(tokens[j]) for j in range(len(texts)) if j != i]
        scores.append(_bleu(tokens[i], others, lengths, max_n))
    return float(np.mean(scores))


# ---------------------------------------------------------------------------
# length, memorisation
# ---------------------------------------------------------------------------

def truncate_words(text: str, n_words: int) -> str:
    """The first n_words whitespace-separated words of a text (HTML breaks removed)."""
    if n_words < 0:
        raise ValueError(f"n_words must be >= 0, got {n_words}")
    return " ".join(_BREAK.sub(" ", text).split()[:n_words])


def length_ks(a: Sequence[int], b: Sequence[int]) -> float:
    """Two-sample Kolmogorov-Smirnov statistic between two sets of lengths."""
    a, b = np.sort(np.asarray(a, float)), np.sort(np.asarray(b, float))
    if not len(a) or not len(b):
        return float("nan")
    grid = np.concatenate([a, b])
    fa = np.searchsorted(a, grid, side="right") / len(a)
    fb = np.searchsorted(b, grid, side="right") / len(b)
    return float(np.abs(fa - fb).max())


class SpanIndex:
    """Every word span of ``n`` words of some training texts, for copy checks."""

    def __init__(self, texts: Iterable[str], n: int = 12):
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        self.n = int(n)
        self._spans = set()
        for text in _check_texts(texts, "train_texts"):
            tokens = words(text)
            for i in range(len(tokens) - n + 1):
                self._spans.add(hash(tuple(tokens[i:i + n])))

    def copies(self, text: str) -> bool:
        tokens = words(text)
        return any(hash(tuple(tokens[i:i + self.n])) in self._spans for i in range(len(tokens) - self.n + 1))


def copied_span_share(texts: Sequence[str], train_texts, n: int = 12) -> float:
    """Share of texts that contain a span of ``n`` words of some training text."""
    texts = _check_texts(texts, "texts")
    index = train_texts if isinstance(train_texts, SpanIndex) else SpanIndex(train_texts, n)
    return float(np.mean([index.copies(t) for t in texts])) if texts else float("nan")


# ---------------------------------------------------------------------------
# the judge
# ---------------------------------------------------------------------------

def _judge_preprocess(text: str) -> str:
    return _BREAK.sub(" ", text).lower()


def near_agreement(wanted: Sequence[int], predicted: Sequence[int], distance: int = DEFAULT_LABEL_NEAR) -> np.ndarray:
    return np.abs(np.asarray(wanted, float) - np.asarray(predicted, float)) <= distance


class Judge:
    """An independent rating classifier: TF-IDF (word 1-2-grams) + logistic regression.

    Train it on real reviews that neither the generator nor the filter saw, or load one
    that was (``Judge.bundled("imdb")``: fitted on the IMDB train reviews outside the
    bundled sample). ``save`` / ``load`` keep the fitted vocabulary and weights in one
    ``.npz`` file; predictions go through the same arrays either way."""

    FORMAT = "reviewgen-judge-1"

    def __init__(self, max_features: int = 100_000, C: float = 4.0, ngram_range=(1, 2), min_df: int = 2):
        self.max_features, self.C, self.ngram_range, self.min_df = max_features, C, tuple(ngram_range), min_df
        self.info: dict = {}
        self._terms = self._idf = self._coef = self._intercept = self._classes = None
        self._counter = None

    def fit(self, texts: Sequence[str], labels: Sequence[int], **info) -> "Judge":
        """Fit on real reviews; ``info`` (where the rows came from, ...) is kept and saved."""
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import LogisticRegression

        texts = _check_texts(texts, "texts")
        labels = list(labels)
        if len(texts) != len(labels):
            raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
        if len(set(labels)) < 2:
            raise ValueError("the judge needs at least two labels to learn from")
        min_df = self.min_df if len(texts) >= 50 else 1
        vectorizer = TfidfVectorizer(ngram_range=self.ngram_range, min_df=min_df, max_features=self.max_features,
                                     sublinear_tf=True, preprocessor=_judge_preprocess)
        features = vectorizer.fit_transform(texts)
        model = LogisticRegression(C=self.C, max_iter=2000).fit(features, labels)
        terms = [None] * len(vectorizer.vocabulary_)
        for term, column in vectorizer.vocabulary_.items():
            terms[column] = term
        coef, intercept = model.coef_, model.intercept_
        if coef.shape[0] == 1:          # two classes: sklearn keeps one row, the second class's score
            coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
        self._set(terms, vectorizer.idf_, coef, intercept, model.classes_)
        self.info = {"rows": len(texts), **info}
        return self

    def _set(self, terms, idf, coef, intercept, classes) -> None:
        self._terms = list(terms)
        self._idf = np.asarray(idf, np.float32)
        self._coef = np.asarray(coef, np.float32)
        self._intercept = np.asarray(intercept, np.float32)
        self._classes = np.asarray(classes)
        self._counter = None

    @property
    def labels(self) -> list:
        self._check_fitted()
        return [x.item() if hasattr(x, "item") else x for x in self._classes]

    def _check_fitted(self):
        if self._terms is None:
            raise RuntimeError("the judge is not trained: call fit() or Judge.load() first")

    def _scores(self, texts: Sequence[str]) -> np.ndarray:
        """(N, classes) logits: sublinear term counts x idf, rows scaled to unit length, times the weights."""
        from sklearn.feature_extraction.text import CountVectorizer

        if self._counter is None:
            self._counter = CountVectorizer(vocabulary={t: i for i, t in enumerate(self._terms)},
                                            ngram_range=self.ngram_range, preprocessor=_judge_preprocess)
        counts = self._counter.transform(texts).astype(np.float32)
        counts.data = 1.0 + np.log(counts.data)
        counts = counts.multiply(self._idf[None, :]).tocsr()
        norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        counts = counts.multiply((1.0 / norms)[:, None]).tocsr()
        return np.asarray(counts @ self._coef.T) + self._intercept[None, :]

    def predict(self, texts: Sequence[str]) -> np.ndarray:
        self._check_fitted()
        texts = _check_texts(texts, "texts")
        if not texts:
            return np.zeros(0, self._classes.dtype)
        return self._classes[np.argmax(self._scores(texts), axis=1)]

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        """(N, classes) probabilities, columns in the order of ``labels``."""
        self._check_fitted()
        scores = self._scores(_check_texts(texts, "texts")).astype(np.float64)
        scores -= scores.max(axis=1, keepdims=True)
        odds = np.exp(scores)
        return odds / odds.sum(axis=1, keepdims=True)

    def save(self, path) -> None:
        """Write the fitted judge to ``path`` (.npz, written atomically)."""
        import json

        from ..core.files import atomic_write

        self._check_fitted()
        meta = {"format": self.FORMAT, "ngram_range": list(self.ngram_range), "max_features": self.max_features,
                "C": self.C, "min_df": self.min_df, "info": self.info}
        with atomic_write(path, "wb", encoding=None) as f:
            np.savez_compressed(f, terms=np.frombuffer("\n".join(self._terms).encode("utf-8"), np.uint8),
                                idf=self._idf, coef=self._coef, intercept=self._intercept,
                                classes=self._classes, meta=np.frombuffer(json.dumps(meta).encode(), np.uint8))

    @classmethod
    def load(cls, path) -> "Judge":
        """A judge written by :meth:`save`; a missing or malformed file is an error naming it."""
        import json
        import zipfile

        path = str(path)
        try:
            with np.load(path, allow_pickle=False) as z:
                meta = json.loads(z["meta"].tobytes().decode("utf-8"))
                if meta.get("format") != cls.FORMAT:
                    raise ValueError(f"format {meta.get('format')!r}, expected {cls.FORMAT!r}")
                terms = z["terms"].tobytes().decode("utf-8").split("\n")
                arrays = [z[k] for k in ("idf", "coef", "intercept", "classes")]
        except FileNotFoundError:
            raise FileNotFoundError(f"no judge file at {path}") from None
        except (KeyError, ValueError, OSError, UnicodeDecodeError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path} is not a reviewgen judge file: {e}") from None
        idf, coef, intercept, classes = arrays
        if not (len(terms) == len(idf) == coef.shape[-1] and coef.ndim == 2
                and coef.shape[0] == len(intercept) == len(classes)):
            raise ValueError(f"{path} is not a reviewgen judge file: its arrays disagree in shape "
                             f"({len(terms)} terms, idf {idf.shape}, weights {coef.shape}, {len(classes)} classes)")
        judge = cls(max_features=meta["max_features"], C=meta["C"], ngram_range=meta["ngram_range"],
                    min_df=meta["min_df"])
        judge._set(terms, idf, coef, intercept, classes)
        judge.info = meta.get("info", {})
        return judge

    @classmethod
    def bundled(cls, name: str = "imdb") -> "Judge":
        """The judge shipped with the package: ``"imdb"``, fitted on the 22,000 IMDB train reviews
        outside the bundled sample (``sample_data/make_judge.py``), so it never saw a row the demo
        trains or measures on."""
        from importlib import resources

        from ..text.data import bundled_judge_path

        with resources.as_file(bundled_judge_path(name)) as path:
            return cls.load(path)


def bundled_judge(spec: str, labels: Iterable[int], what: str = "judge_data") -> Judge:
    """The shipped judge ``spec`` names ("bundled:imdb"), refused when it does not know every one
    of ``labels`` (the data's): a judge of another rating scale would score nonsense."""
    judge = Judge.bundled(spec.partition(":")[2])
    missing = sorted(set(labels) - set(judge.labels))
    if missing:
        raise ValueError(f"{what}={spec!r}: that judge knows labels {judge.labels}, not {missing} of this data")
    return judge


# ---------------------------------------------------------------------------
# MAUVE
# ---------------------------------------------------------------------------

def mauve_score(p_features: np.ndarray, q_features: np.ndarray, seed: int = 25, scaling: float = 5.0) -> float:
    """MAUVE (mauve-text) between two sets of feature vectors (rows)."""
    try:
        import mauve
    except ImportError:
        raise ImportError("MAUVE needs the mauve-text and faiss-cpu packages: "
                          "pip install 'reviewgen[quality]'") from None
    p, q = np.asarray(p_features, np.float32), np.asarray(q_features, np.float32)
    if p.ndim != 2 or q.ndim != 2 or p.shape[1] != q.shape[1]:
        raise ValueError(f"features must be two (N, D) arrays of the same D, got {p.shape} and {q.shape}")
    if len(p) < 2 or len(q) < 2:
        raise ValueError("MAUVE needs at least two texts on each side")
    buckets = max(2, min(len(p), len(q)) // 10)
    out = mauve.compute_mauve(p_features=p, q_features=q, num_buckets=buckets, seed=seed,
                              mauve_scaling_factor=scaling, verbose=False)
    return float(out.mauve)


# ---------------------------------------------------------------------------
# the report
# ---------------------------------------------------------------------------

@dataclass
class QualityReport:
    table: "object"                                  # pandas DataFrame, index: label values and "all"
    judge_predictions: np.ndarray = field(default=None, repr=False)
    extras: Dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out = {}
        for index, row in self.table.iterrows():
            out[str(index)] = {k: (None if isinstance(v, float) and math.isnan(v) else
                                   (v.item() if hasattr(v, "item") else v)) for k, v in row.items()}
        out["extras"] = dict(self.extras)
        return out

    def __str__(self) -> str:
        import pandas as pd

        with pd.option_context("display.width", 200, "display.max_columns", 40,
                               "display.float_format", "{:.3f}".format):
            return str(self.table)


def _per_text_perplexity(generator, texts: Sequence[str]) -> float:
    texts = [t for t in texts if t.strip()]
    if not texts:
        return float("nan")
    return float(generator.evaluate(texts)["perplexity"])


def evaluate_generated(texts: Sequence[str], labels: Sequence[int], real_texts: Sequence[str],
                       real_labels: Sequence[int], *, judge: Optional[Judge] = None, encoder=None,
                       train_texts: Optional[Sequence[str]] = None, base_generator=None,
                       span: int = 12, mauve_per_label: bool = False, mauve_draws: int = 10,
                       seed: int = 0) -> QualityReport:
    """Every measure of the module docstring, per wanted label and overall.

    texts / labels: the generated reviews and the labels they were asked for.
    real_texts / real_labels: held-out real reviews (never used for training).
    judge: a fitted :class:`Judge` (its columns are left out when None);
    encoder: a :class:`reviewgen.embeddings.SentenceEncoder` for MAUVE (left out when None);
    train_texts: the generator's training texts (the copy check; left out when None);
    base_generator: a :class:`reviewgen.Generator` for perplexity (left out when None).
    mauve_draws: real samples MAUVE is averaged over (each as many reviews as generated ones).
    """
    import pandas as pd

    texts = _check_texts(texts, "texts")
    real_texts = _check_texts(real_texts, "real_texts")
    labels, real_labels = list(labels), list(real_labels)
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    if len(real_texts) != len(real_labels):
        raise ValueError(f"{len(real_texts)} real texts but {len(real_labels)} real labels")
    if not texts:
        raise ValueError("evaluate_generated needs at least one generated text")
    if isinstance(mauve_draws, bool) or not isinstance(mauve_draws, (int, np.integer)) or mauve_draws < 1:
        raise ValueError(f"mauve_draws must be an integer >= 1, got {mauve_draws!r}")
    if not real_texts:
        raise ValueError("evaluate_generated needs held-out real texts")
    labels_arr, real_arr = np.asarray(labels), np.asarray(real_labels)
    wanted = sorted(set(labels))
    missing = [label for label in wanted if not (real_arr == label).any()]
    if missing:
        raise ValueError(f"no held-out real review has label(s) {missing}")
    rng = np.random.default_rng(seed)
    gen_lengths = np.array([len(t.split()) for t in texts])

    # Real references: per generated text, one real review of its label truncated to its length.
    ref_texts = []
    for i, label in enumerate(labels):
        pool = np.flatnonzero(real_arr == label)
        ref_texts.append(truncate_words(real_texts[int(rng.choice(pool))], max(int(gen_lengths[i]), 1)))

    judged = ref_judged = None
    if judge is not None:
        judged = judge.predict(texts)
        ref_judged = judge.predict(ref_texts)

    features = real_features = None
    if encoder is not None:
        features = encoder.encode(texts)
        real_features = encoder.encode(real_texts)
    span_index = SpanIndex(train_texts, span) if train_texts is not None else None

    def mauve_pair(mask: np.ndarray, real_mask: np.ndarray):
        """(generated vs real, its sd over the draws, real vs real), each a mean over mauve_draws
        draws of the real side: one draw of a few dozen real reviews moves MAUVE by +-0.2."""
        p = features[mask]
        q_index = np.flatnonzero(real_mask)
        if len(p) < 10 or len(q_index) < 2 * 10:
            return float("nan"), float("nan"), float("nan")
        generated, real = [], []
        for _ in range(mauve_draws):
            drawn = rng.permutation(q_index)
            half = len(drawn) // 2
            size = min(len(p), half)
            q1, q2 = real_features[drawn[:size]], real_features[drawn[half:half + size]]
            generated.append(mauve_score(p, q1))
            real.append(mauve_score(q2, q1))
        spread = float(np.std(generated, ddof=1)) if mauve_draws > 1 else float("nan")
        return float(np.mean(generated)), spread, float(np.mean(real))

    rows, index = [], []
    groups = [(label, labels_arr == label, real_arr == label) for label in wanted]
    groups.append(("all", np.ones(len(texts), bool), np.isin(real_arr, wanted)))
    for name, mask, real_mask in groups:
        group = [t for t, m in zip(texts, mask) if m]
        row = {"n": int(mask.sum())}
        if judge is not None:
            row["judge_exact"] = float(np.mean(judged[mask] == labels_arr[mask]))
            row["judge_near"] = float(np.mean(near_agreement(labels_arr[mask], judged[mask])))
            row["real_exact"] = float(np.mean(ref_judged[mask] == labels_arr[mask]))
            row["real_near"] = float(np.mean(near_agreement(labels_arr[mask], ref_judged[mask])))
        if encoder is not None:
            if name == "all" or mauve_per_label:
                row["mauve"], row["mauve_sd"], row["mauve_real"] = mauve_pair(mask, real_mask)
            else:
                row["mauve"], row["mauve_sd"], row["mauve_real"] = float("nan"), float("nan"), float("nan")
        row["distinct_1"] = distinct_n(group, 1)
        row["distinct_2"] = distinct_n(group, 2)
        row["repeated_4gram"] = repeated_ngram_share(group, 4)
        refs = [t for t, m in zip(ref_texts, mask) if m]
        row["real_repeated_4gram"] = repeated_ngram_share(refs, 4)
        row["real_distinct_2"] = distinct_n(refs, 2)
        row["self_bleu"] = self_bleu(group, seed=seed)
        real_lengths = [len(real_texts[i].split()) for i in np.flatnonzero(real_mask)]
        row["words_mean"] = float(gen_lengths[mask].mean())
        row["real_words_mean"] = float(np.mean(real_lengths))
        row["length_ks"] = length_ks(gen_lengths[mask], real_lengths)
        row["empty"] = float(np.mean([not t.strip() for t in group]))
        if span_index is not None:
            row[f"copied_{span}gram"] = float(np.mean([span_index.copies(t) for t in group]))
        if base_generator is not None:
            row["perplexity"] = _per_text_perplexity(base_generator, group)
        rows.append(row)
        index.append(name)
    table = pd.DataFrame(rows, index=pd.Index(index, name="label"))
    return QualityReport(table=table, judge_predictions=judged)
