"""Which filter rule keeps reviews the independent judge agrees with? Offline, on the
reviews a run already generated (notebooks/results/quality/<run>/generated.csv):
the demo's classifier (frozen MiniLM mean-pooled 256 tokens + LR, averaged with TF-IDF + LR,
weight 0.5, on the bundled sample's classifier part) scores them, each rule keeps some, the external judge scores those.

    PYTHONPATH=. python notebooks/experiments/quality/simulate_filter.py e02_chat_untrained_controls [...]
"""
import os
import sys

import numpy as np
import pandas as pd

from reviewgen.text import data as D
from reviewgen.tasks.encoder import SentenceEncoder
from reviewgen.experiments.evaluation import near_agreement
from reviewgen.experiments.filtering import EmbeddingClassifier

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_generator import RESULTS, judge_and_real  # noqa: E402


def main(runs, max_length=256, tfidf_weight=0.5):
    _, part = D.prepare_generator_and_classifier(D.load_sample("imdb"), "imdb10", seed=0, val_fraction=0.1)
    clf = EmbeddingClassifier(SentenceEncoder.from_pretrained("minilm", max_length=max_length),
                              tfidf_weight=tfidf_weight).fit(
        part.train["text"].tolist(), part.train["label"].tolist())
    judge, _, _ = judge_and_real()
    rows = []
    for run in runs:
        gen = pd.read_csv(os.path.join(RESULTS, run, "generated.csv"))
        texts, wanted = gen["text"].astype(str).tolist(), gen["label"].to_numpy()
        probs = clf.predict_proba(texts)
        labels = np.asarray(clf.labels)
        predicted = labels[probs.argmax(1)]
        p_wanted = probs[np.arange(len(texts)), [clf.labels.index(w) for w in wanted]]
        judged = judge.predict(texts)
        rules = {"all (no filter)": np.ones(len(texts), bool), "exact": predicted == wanted,
                 "near": near_agreement(wanted, predicted)}
        for t in (0.4, 0.5, 0.6):
            rules[f"exact, p>={t}"] = (predicted == wanted) & (p_wanted >= t)
        for n in (5, 10):
            keep = np.zeros(len(texts), bool)
            for label in np.unique(wanted):
                idx = np.flatnonzero(wanted == label)
                keep[idx[np.argsort(-p_wanted[idx])[:n]]] = True
            rules[f"top-{n} per label by p(wanted)"] = keep
        for name, keep in rules.items():
            rows.append(dict(run=run, rule=name, kept=int(keep.sum()),
                             judge_exact=float((judged[keep] == wanted[keep]).mean()) if keep.any() else np.nan,
                             judge_near=float(near_agreement(wanted[keep], judged[keep]).mean()) if keep.any() else np.nan))
    table = pd.DataFrame(rows)
    print(table.to_string())
    table.to_csv(os.path.join(RESULTS, "filter_simulation.csv"), index=False)


if __name__ == "__main__":
    main(sys.argv[1:])
