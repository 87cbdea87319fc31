"""Issue #16, real data: the filter's classifier recipes against TF-IDF + LR on the same rows.

    python notebooks/results/classifier_full/compare_subset.py imdb DATA_ROOT OUT_DIR
    python notebooks/results/classifier_full/compare_subset.py sst5 DATA_ROOT OUT_DIR

imdb: TF-IDF + LR on all 25k cleaned train reviews (reference), then on a balanced train
subset (TRAIN_PER_LABEL per label) the three recipes on the same rows: TF-IDF + LR, frozen
MiniLM (256 tokens, mean-pooled) + LR, and their probability average (the demo's recipe);
C and the weight chosen on a balanced validation slice of train (VAL_PER_LABEL per label),
never on test; all scored on one balanced slice of IMDB test (TEST_PER_LABEL per label).
sst5: the same three recipes with 64 tokens on the whole train set, chosen on dev,
scored on test. Embeddings are cached in OUT_DIR/cache (not committed).
"""
import json
import os
import sys
import time

import numpy as np
import pandas as pd

from reviewgen.core import metrics
from reviewgen.text import data

TRAIN_PER_LABEL, VAL_PER_LABEL, TEST_PER_LABEL = 1500, 250, 500
C_VALUES = (0.1, 0.3, 1.0, 3.0, 10.0)
WEIGHTS = (0.0, 0.3, 0.5, 0.7, 1.0)  # weight of the embedding head in the average


def labelled(path, scale):
    return data.prepare(path, scale, val_fraction=0.0, balance=False).train[["text", "label"]]


def balanced(frame, per_label, seed, exclude=()):
    frame = frame[~frame["text"].isin(set(exclude))]
    parts = [rows.sample(min(per_label, len(rows)), random_state=seed) for _, rows in frame.groupby("label")]
    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def figures(truth, predicted, labels):
    exact = metrics.classification_report(np.asarray(truth), np.asarray(predicted), labels=labels)
    near = metrics.classification_report(np.asarray(truth), np.asarray(predicted), labels=labels, near=True)
    return {"accuracy": exact.accuracy, "near_accuracy": near.accuracy, "macro_f1": exact.macro_f1,
            "near_macro_f1": near.macro_f1}


def tfidf(train, seed=0):
    from sklearn.feature_extraction.text import TfidfVectorizer

    vectorizer = TfidfVectorizer(max_features=50000, ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                                 strip_accents="unicode")
    return vectorizer, vectorizer.fit_transform(train["text"].tolist())


def fit_lr(features, labels, C, seed=0):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=C, max_iter=3000, random_state=seed).fit(features, labels)


def embed(encoder, frame, cache):
    if os.path.exists(cache):
        return np.load(cache)
    started = time.perf_counter()
    out = encoder.encode(frame["text"].tolist())
    np.save(cache, out)
    print(f"  embedded {len(frame)} texts in {time.perf_counter() - started:.0f} s -> {cache}", flush=True)
    return out


def compare(train, val, test, max_length, out_dir, name):
    """The three recipes on the same rows; selection on val; figures on test."""
    from reviewgen.tasks.encoder import SentenceEncoder

    labels = sorted(int(v) for v in train["label"].unique())
    cache = os.path.join(out_dir, "cache")
    os.makedirs(cache, exist_ok=True)
    timings, results, chosen = {}, {}, {}

    started = time.perf_counter()
    vectorizer, x_train = tfidf(train)
    x_val, x_test = vectorizer.transform(val["text"]), vectorizer.transform(test["text"])
    best = max(C_VALUES, key=lambda C: figures(val["label"], fit_lr(x_train, train["label"], C).predict(x_val),
                                               labels)["accuracy"])
    tfidf_model = fit_lr(x_train, train["label"], best)
    chosen["tfidf_C"] = best
    results["tfidf_lr"] = figures(test["label"], tfidf_model.predict(x_test), labels)
    timings["tfidf_lr"] = time.perf_counter() - started

    started = time.perf_counter()
    encoder = SentenceEncoder.from_pretrained("minilm", max_length=max_length, pooling="mean")
    e_train, e_val, e_test = (embed(encoder, frame, os.path.join(cache, f"{name}_{part}_{max_length}.npy"))
                              for part, frame in (("train", train), ("val", val), ("test", test)))
    best = max(C_VALUES, key=lambda C: figures(val["label"], fit_lr(e_train, train["label"], C).predict(e_val),
                                               labels)["accuracy"])
    embedding_model = fit_lr(e_train, train["label"], best)
    chosen["embedding_C"] = best
    results["minilm_lr"] = figures(test["label"], embedding_model.predict(e_test), labels)
    timings["minilm_lr"] = time.perf_counter() - started

    classes = list(embedding_model.classes_)
    assert classes == list(tfidf_model.classes_)

    def mixed(weight, e, x):
        p = weight * embedding_model.predict_proba(e) + (1 - weight) * tfidf_model.predict_proba(x)
        return np.asarray(classes)[p.argmax(axis=1)]

    weight = max(WEIGHTS, key=lambda w: figures(val["label"], mixed(w, e_val, x_val), labels)["accuracy"])
    chosen["embedding_weight"] = weight
    results["minilm_lr_plus_tfidf"] = figures(test["label"], mixed(weight, e_test, x_test), labels)
    results["minilm_lr_plus_tfidf_w0.5"] = figures(test["label"], mixed(0.5, e_test, x_test), labels)
    return results, chosen, timings


def main(which, root, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    report = {"which": which, "machine": "2 cores, OMP_NUM_THREADS=1, nice 19 (shared): seconds are upper bounds"}
    if which == "imdb":
        train_all = labelled(os.path.join(root, "imdb-aclimdb", "train.csv"), "imdb10")
        test_all = labelled(os.path.join(root, "imdb-aclimdb", "test.csv"), "imdb10")
        test = balanced(test_all, TEST_PER_LABEL, seed=0)
        labels = sorted(int(v) for v in train_all["label"].unique())
        started = time.perf_counter()
        vectorizer, x_all = tfidf(train_all)
        model = fit_lr(x_all, train_all["label"], 3.0)
        report["tfidf_lr_full_train"] = dict(figures(test["label"], model.predict(vectorizer.transform(test["text"])),
                                                     labels), rows=len(train_all), C=3.0,
                                             seconds=round(time.perf_counter() - started, 1))
        print("TF-IDF + LR, all train:", report["tfidf_lr_full_train"], flush=True)
        val = balanced(train_all, VAL_PER_LABEL, seed=1)
        train = balanced(train_all, TRAIN_PER_LABEL, seed=2, exclude=val["text"])
        max_length = 256
    else:
        train = labelled(os.path.join(root, "sst5", "train.csv"), "sst5")
        val = labelled(os.path.join(root, "sst5", "dev.csv"), "sst5")
        test = labelled(os.path.join(root, "sst5", "test.csv"), "sst5")
        max_length = 64
    report["rows"] = {"train": len(train), "val": len(val), "test": len(test)}
    report["settings"] = {"max_length": max_length, "C_values": C_VALUES, "weights": WEIGHTS,
                          "per_label": [TRAIN_PER_LABEL, VAL_PER_LABEL, TEST_PER_LABEL] if which == "imdb" else None}
    results, chosen, timings = compare(train, val, test, max_length, out_dir, which)
    report.update(results=results, chosen=chosen, seconds={k: round(v, 1) for k, v in timings.items()})
    with open(os.path.join(out_dir, f"{which}.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    print(json.dumps(report, indent=2), flush=True)


if __name__ == "__main__":
    main(*sys.argv[1:4])
