"""Classifier recipes for the filter (issue #16): frozen MiniLM sentence embeddings
(the core's encoder, mean- or CLS-pooled) + logistic regression, against TF-IDF + LR
on exactly the same rows: the demo's classifier split of the bundled sample
(train 1,324 / validation 148) and, as a larger check, 400 balanced IMDB test reviews.

    PYTHONPATH=. python notebooks/experiments/quality/run_classifier.py [train_rows]
"""
import os
import sys
import time

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegressionCV

from reviewgen.text import data as D
from reviewgen.tasks.baselines import tfidf_logistic_regression
from reviewgen.tasks.encoder import SentenceEncoder
from reviewgen.experiments.evaluation import near_agreement

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
IMDB = os.environ.get("IMDB_DIR", os.path.join(ROOT, "..", "shared", "data", "imdb-aclimdb"))
RESULTS = os.path.join(ROOT, "notebooks", "results", "quality")


def chunked(encoder, texts, words=90, max_chunks=4):
    """Mean of the embeddings of consecutive word windows (head to tail) of each text."""
    pieces, owner = [], []
    for i, text in enumerate(texts):
        tokens = text.split()
        chunks = [" ".join(tokens[s:s + words]) for s in range(0, max(len(tokens), 1), words)] or [""]
        if len(chunks) > max_chunks:  # keep the head and the tail
            chunks = chunks[: max_chunks // 2] + chunks[-(max_chunks - max_chunks // 2):]
        pieces += chunks
        owner += [i] * len(chunks)
    emb = encoder.encode(pieces)
    owner = np.asarray(owner)
    out = np.zeros((len(texts), emb.shape[1]), np.float32)
    np.add.at(out, owner, emb)
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def score(truth, predicted):
    truth, predicted = np.asarray(truth), np.asarray(predicted)
    return float((truth == predicted).mean()), float(near_agreement(truth, predicted).mean())


def main():
    n_train = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    _, part = D.prepare_generator_and_classifier(D.load_sample("imdb"), "imdb10", seed=0, val_fraction=0.1)
    train = part.train if not n_train else part.train.groupby("label").head(n_train // 4)
    test = pd.read_csv(os.path.join(IMDB, "test.csv"))
    test["label"] = np.ceil(test["rating"] / 2).astype(int)
    test = test.groupby("label").sample(100, random_state=1)
    test_texts = D.clean_texts(test["text"])
    sets = {"val": (part.val["text"].tolist(), part.val["label"].tolist()),
            "imdb_test": (test_texts, test["label"].tolist())}
    rows = []
    for name, (texts, labels) in sets.items():
        base = tfidf_logistic_regression(train["text"].tolist(), train["label"].tolist(), texts, labels)
        rows.append(dict(recipe="TF-IDF + LR", eval=name, accuracy=base["accuracy"], near=base["near_accuracy"],
                         macro_f1=base["macro_f1"], seconds=0))
    variants = [("mean", 128, None), ("mean", 256, None), ("mean", 128, "chunks")]
    for pooling, length, mode in variants:
        t0 = time.time()
        enc = SentenceEncoder.from_pretrained("minilm", max_length=length, pooling=pooling, batch_size=16)
        embed = (lambda t: chunked(enc, t)) if mode == "chunks" else enc.encode
        X = embed(train["text"].tolist())
        head = LogisticRegressionCV(Cs=[0.25, 1, 4, 16, 64], cv=5, max_iter=3000).fit(X, train["label"])
        for name, (texts, labels) in sets.items():
            predicted = head.predict(embed(texts))
            exact, near = score(labels, predicted)
            from sklearn.metrics import f1_score
            rows.append(dict(recipe=f"frozen MiniLM {pooling} {length}{' chunks' if mode else ''} + LR (C {head.C_[0]:g})",
                             eval=name, accuracy=exact, near=near,
                             macro_f1=float(f1_score(labels, predicted, average="macro")),
                             seconds=round(time.time() - t0)))
        print(pd.DataFrame(rows).to_string(), flush=True)
    table = pd.DataFrame(rows)
    table["train_rows"] = len(train)
    os.makedirs(RESULTS, exist_ok=True)
    table.to_csv(os.path.join(RESULTS, f"classifier_recipes_{len(train)}.csv"), index=False)
    print(table.to_string())


if __name__ == "__main__":
    main()
