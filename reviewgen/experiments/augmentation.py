"""Does synthetic data help? A classifier trained on r real reviews per label,
once on the real reviews alone and once with filtered synthetic reviews added,
both evaluated on the same held-out real test set, over several seeds.

    table = run_augmentation(real, synthetic, test, AugmentationConfig(real_per_label=[10, 50, 200]))
    summarize(table)          # mean and spread of accuracy / macro-F1 per (r, arm)

real, synthetic and test are DataFrames with ``text`` and ``label`` columns
(``synthetic`` is typically a demo's accepted.csv with ``label`` the wanted
rating). For each seed and r, the r real reviews per label are drawn from
``real`` with that seed, and the synthetic ones (``synthetic_per_real`` per
real review, as many as the pool holds) from ``synthetic``; the number used
is in the table, so a pool smaller than asked is visible rather than hidden.

The classifier is the demo's filter recipe (frozen sentence embeddings + LR,
averaged with TF-IDF + LR: :class:`reviewgen.experiments.filtering.EmbeddingClassifier`);
each text is embedded once for the whole experiment.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np

from ..core.config import JsonConfig

__all__ = ["AugmentationConfig", "run_augmentation", "summarize", "CachedEncoder"]

ARMS = ("real", "real+synthetic")


@dataclass
class AugmentationConfig(JsonConfig):
    real_per_label: List[int] = field(default_factory=lambda: [10, 50, 200])
    synthetic_per_real: int = 5
    seeds: List[int] = field(default_factory=lambda: [0, 1, 2])
    classifier: str = "minilm"          # the sentence encoder (alias, directory or hub id)
    max_length: int = 256
    tfidf_weight: float = 0.5

    def __post_init__(self):
        if not self.real_per_label or any(int(r) < 1 for r in self.real_per_label):
            raise ValueError(f"real_per_label must be positive integers, got {self.real_per_label!r}")
        if int(self.synthetic_per_real) < 1:
            raise ValueError(f"synthetic_per_real must be at least 1, got {self.synthetic_per_real!r}")
        if not self.seeds:
            raise ValueError("seeds must name at least one seed")


class CachedEncoder:
    """An encoder that embeds each distinct text once (the experiment refits many heads)."""

    def __init__(self, encoder):
        self.encoder = encoder
        self._cache: Dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            for text, row in zip(missing, self.encoder.encode(missing)):
                self._cache[text] = row
        if not texts:
            return np.zeros((0, getattr(self.encoder, "dim", 0)), np.float32)
        return np.stack([self._cache[t] for t in texts])


def _check_frame(frame, what: str):
    missing = [c for c in ("text", "label") if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} has no column {missing[0]!r} (columns: {list(frame.columns)})")
    frame = frame[["text", "label"]].dropna()
    if not len(frame):
        raise ValueError(f"{what} holds no row with both a text and a label")
    return frame.assign(text=frame["text"].astype(str), label=frame["label"].astype(int))


def _draw(frame, per_label: int, labels, seed: int):
    """The first per_label rows of each label in the seed's order: for one seed a
    smaller r is a subset of a larger one, so the arms and the r values are paired."""
    import pandas as pd

    parts = []
    for label in labels:
        rows = frame[frame["label"] == label]
        parts.append(rows.sample(frac=1.0, random_state=seed).head(per_label))
    return pd.concat(parts, ignore_index=True)


def run_augmentation(real, synthetic, test, config: Optional[AugmentationConfig] = None, *, encoder=None,
                     log: Optional[Callable[[str], None]] = None):
    """One row per (r, seed, arm): the counts used and the test metrics (see the module docstring)."""
    import pandas as pd

    from ..core import metrics as _metrics
    from .filtering import EmbeddingClassifier

    config = config or AugmentationConfig()
    real, synthetic, test = (_check_frame(real, "the real reviews"), _check_frame(synthetic, "the synthetic reviews"),
                             _check_frame(test, "the test reviews"))
    labels = sorted(set(real["label"]))
    copied = set(test["text"]) & set(synthetic["text"])
    if copied:
        raise ValueError(f"{len(copied)} test texts also appear among the synthetic reviews; "
                         "the test set must be held out")
    shared = real["text"].isin(set(test["text"]))
    if shared.any():  # e.g. IMDB holds a few reviews in both train and test
        real = real[~shared]
        if log:
            log(f"{int(shared.sum())} real reviews also in the test set left out of the real pool")
    if encoder is None:
        from ..tasks.encoder import SentenceEncoder

        encoder = SentenceEncoder.from_pretrained(config.classifier, max_length=config.max_length)
    encoder = CachedEncoder(encoder)
    rows = []
    for r in config.real_per_label:
        for seed in config.seeds:
            real_rows = _draw(real, int(r), labels, seed)
            extra = _draw(synthetic, int(r) * int(config.synthetic_per_real), labels, seed)
            for arm in ARMS:
                train = real_rows if arm == "real" else pd.concat([real_rows, extra], ignore_index=True)
                if train["label"].nunique() < 2:
                    raise ValueError(f"r={r}: the training rows hold fewer than two labels")
                classifier = EmbeddingClassifier(encoder, seed=seed, tfidf_weight=config.tfidf_weight)
                classifier.fit(train["text"].tolist(), train["label"].tolist())
                predicted = classifier.predict(test["text"].tolist())
                truth = test["label"].to_numpy()
                exact = _metrics.classification_report(truth, predicted, labels=labels)
                near = _metrics.classification_report(truth, predicted, labels=labels, near=True)
                rows.append(dict(real_per_label=int(r), seed=int(seed), arm=arm, n_real=len(real_rows),
                                 n_synthetic=0 if arm == "real" else len(extra), n_test=len(test),
                                 accuracy=exact.accuracy, macro_f1=exact.macro_f1,
                                 near_accuracy=near.accuracy))
                if log:
                    row = rows[-1]
                    log(f"r={r} seed={seed} {arm}: {row['n_real']} real + {row['n_synthetic']} synthetic -> "
                        f"accuracy {row['accuracy']:.3f}, macro-F1 {row['macro_f1']:.3f}")
    return pd.DataFrame(rows)


def summarize(table):
    """Mean and standard deviation over seeds of each metric, per (real_per_label, arm)."""
    metrics = ["accuracy", "macro_f1", "near_accuracy", "n_synthetic"]
    grouped = table.groupby(["real_per_label", "arm"])[metrics]
    out = grouped.mean().join(grouped.std(ddof=1).add_suffix("_std"))
    out["seeds"] = table.groupby(["real_per_label", "arm"]).size()
    return out
