"""The filter classifier as a mix of two heads on the same rows: frozen MiniLM
(mean-pooled, 256 tokens) + LR, and TF-IDF + LR; probabilities averaged with weight w
on TF-IDF (reviewgen.experiments.filtering.EmbeddingClassifier(tfidf_weight=w)). Same rows as
run_classifier.py (demo classifier split: train 1,324 / val 148; 400 IMDB test).

    PYTHONPATH=. python notebooks/experiments/quality/run_classifier_mix.py
"""
import os

import numpy as np
import pandas as pd

from reviewgen.text import data as D
from reviewgen.tasks.encoder import SentenceEncoder
from reviewgen.experiments.evaluation import near_agreement
from reviewgen.experiments.filtering import EmbeddingClassifier

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
IMDB = os.environ.get("IMDB_DIR", os.path.join(ROOT, "..", "shared", "data", "imdb-aclimdb"))
RESULTS = os.path.join(ROOT, "notebooks", "results", "quality")


def main():
    _, part = D.prepare_generator_and_classifier(D.load_sample("imdb"), "imdb10", seed=0, val_fraction=0.1)
    test = pd.read_csv(os.path.join(IMDB, "test.csv"))
    test["label"] = np.ceil(test["rating"] / 2).astype(int)
    test = test.groupby("label").sample(100, random_state=1)
    sets = {"val": (part.val["text"].tolist(), part.val["label"].to_numpy()),
            "imdb_test": (D.clean_texts(test["text"]), test["label"].to_numpy())}
    enc = SentenceEncoder.from_pretrained("minilm", max_length=256, batch_size=16)
    clf = EmbeddingClassifier(enc, tfidf_weight=0.5).fit(part.train["text"].tolist(), part.train["label"].tolist())
    rows = []
    for name, (texts, truth) in sets.items():
        p_emb = clf.head.predict_proba(enc.encode(texts))
        p_tf = clf.tfidf.predict_proba(texts)
        for w in (0.0, 0.3, 0.5, 0.7, 1.0):
            pred = np.asarray(clf.labels)[((1 - w) * p_emb + w * p_tf).argmax(1)]
            rows.append(dict(eval=name, tfidf_weight=w, accuracy=float((pred == truth).mean()),
                             near=float(near_agreement(truth, pred).mean())))
    table = pd.DataFrame(rows)
    table.to_csv(os.path.join(RESULTS, "classifier_mix_1324.csv"), index=False)
    print(table.to_string())


if __name__ == "__main__":
    main()
