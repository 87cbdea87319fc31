"""The demo's filter classifier on the generator's own middle blocks (issue #16).

    PYTHONPATH=. python notebooks/experiments/quality/run_classifier_lm.py [--layers 15 10] [--max-length 256]
                                                                          [--test-per-label 200] [--cache DIR]

Rows exactly as the demo takes them (bundled IMDB sample, seed 0): the
classifier part's 1,324 balanced training reviews and its 148 validation
reviews; beside them a balanced slice of the IMDB test set (reviews no part of
the demo ever reads). For each number of SmolLM2 blocks: logistic regression on
the mean-pooled hidden states (standardised, C by 5-fold CV on the training
rows), and the demo's recipe — that head averaged with TF-IDF + LR, the weight
chosen by 5-fold CV on the training rows (EmbeddingClassifier(tfidf_weight="cv")).
TF-IDF + LR (reviewgen.tasks.baselines) on the same rows is the reference.
Nothing is chosen on the validation or test rows. Features are cached as .npy
in --cache (the slow part: about 2 reviews/s on one thread for 15 blocks x 256
tokens). Writes notebooks/results/quality/classifier_lm/results.csv.
"""
import argparse
import os
import time

import numpy as np
import pandas as pd

from reviewgen.core.metrics import classification_report
from reviewgen.experiments.demo import LM_FEATURE_CS, DemoConfig, _take_balanced
from reviewgen.experiments.filtering import EmbeddingClassifier
from reviewgen.tasks.baselines import tfidf_logistic_regression
from reviewgen.tasks.encoder import SentenceEncoder
from reviewgen.tasks.generator import load_generator_checkpoint
from reviewgen.text import data as D

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
IMDB = os.environ.get("IMDB_DIR", os.path.join(ROOT, "..", "shared", "data", "imdb-aclimdb"))
OUT = os.path.join(ROOT, "notebooks", "results", "quality", "classifier_lm")


class CachedFeatures:
    """An encoder answering from features computed once (text -> row)."""

    def __init__(self, texts, features):
        self.table = dict(zip(texts, features))

    def encode(self, texts):
        return np.stack([self.table[t] for t in texts])


def rows():
    cfg = DemoConfig()
    _, part = D.prepare_generator_and_classifier(D.load_sample("imdb"), cfg.scale, seed=cfg.seed,
                                                 val_fraction=cfg.val_fraction)
    train = _take_balanced(part.train, cfg.classifier_train_rows, cfg.seed)
    val = _take_balanced(part.val, cfg.classifier_eval_rows, cfg.seed)
    return train, val


def test_rows(per_label):
    test = pd.read_csv(os.path.join(IMDB, "test.csv"))
    test["label"] = np.ceil(test["rating"] / 2).astype(int)
    test = test.groupby("label").sample(per_label, random_state=0).reset_index(drop=True)
    test["text"] = D.clean_texts(test["text"])
    return test


def _tfidf_predictions(train, frame):
    """The baseline's own predictions (reviewgen.tasks.baselines.tfidf_pipeline)."""
    from reviewgen.tasks.baselines import tfidf_pipeline

    model = tfidf_pipeline(len(train)).fit(train["text"].tolist(), train["label"])
    return model.predict(frame["text"].tolist())


def features(name, frame, layers, max_length, cache, checkpoint):
    path = os.path.join(cache, f"{name}_k{layers}_L{max_length}.npy")
    if os.path.exists(path):
        out = np.load(path)
        if len(out) == len(frame):
            return out, 0.0
    encoder = SentenceEncoder.from_decoder(checkpoint, layers=layers, max_length=max_length, batch_size=16)
    started = time.process_time()
    out = encoder.encode(frame["text"].tolist())
    np.save(path, out)
    return out, time.process_time() - started


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, nargs="+", default=[15])
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--test-per-label", type=int, default=200)
    parser.add_argument("--cache", default=os.path.join(ROOT, "runs", "classifier_lm_cache"))
    args = parser.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    os.makedirs(OUT, exist_ok=True)
    train, val = rows()
    test = test_rows(args.test_per_label)
    print(f"train {len(train)}, validation {len(val)}, IMDB test slice {len(test)}", flush=True)
    labels = sorted(train["label"].unique().tolist())
    results = []

    def record(recipe, layers, clf_predict, cv=None, seconds=None, weight=None):
        row = {"recipe": recipe, "layers": layers, "max_length": args.max_length, "cv_accuracy": cv,
               "tfidf_weight": weight, "embed_cpu_s_per_review": seconds}
        for name, frame in (("val", val), ("test", test)):
            predicted = clf_predict(name, frame)
            truth = frame["label"].to_numpy()
            row[f"{name}_accuracy"] = float((predicted == truth).mean())
            row[f"{name}_near"] = float((np.abs(predicted - truth) <= 1).mean())
            row[f"{name}_macro_f1"] = classification_report(truth, predicted, labels=labels).macro_f1
            row[f"{name}_near_macro_f1"] = classification_report(truth, predicted, labels=labels, near=True).macro_f1
            # paired bootstrap of the accuracy difference against TF-IDF + LR on the same rows
            gain = (predicted == truth).astype(float) - (baseline[name]["predicted"] == truth)
            draws = np.random.default_rng(0).integers(0, len(gain), (2000, len(gain)))
            low, high = np.percentile(gain[draws].mean(axis=1), [2.5, 97.5])
            row[f"{name}_gain_vs_tfidf"] = float(gain.mean())
            row[f"{name}_gain_95ci"] = f"[{low:+.3f}, {high:+.3f}]"
        results.append(row)
        print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)

    baseline = {name: tfidf_logistic_regression(train["text"], train["label"], frame["text"], frame["label"],
                                                labels=labels) for name, frame in (("val", val), ("test", test))}
    for name, frame in (("val", val), ("test", test)):  # its predictions, for the paired comparison
        baseline[name]["predicted"] = _tfidf_predictions(train, frame)
    tfidf_cv = EmbeddingClassifier(CachedFeatures(train["text"], np.zeros((len(train), 1))), Cs=[1.0, 2.0],
                                   tfidf_weight="cv").fit(train["text"], train["label"]).cv_accuracy[1.0]
    for name in ("val", "test"):
        print(f"TF-IDF + LR {name}: {baseline[name]['accuracy']:.3f} / {baseline[name]['near_accuracy']:.3f}")
    results.append({"recipe": "tfidf+lr", "layers": 0, "max_length": 0, "cv_accuracy": tfidf_cv,
                    "tfidf_weight": 1.0, "embed_cpu_s_per_review": 0.0,
                    **{f"{n}_{k}": baseline[n][m] for n in ("val", "test")
                       for k, m in (("accuracy", "accuracy"), ("near", "near_accuracy"), ("macro_f1", "macro_f1"),
                                    ("near_macro_f1", "near_macro_f1"))}})

    checkpoint = load_generator_checkpoint("smollm2")
    for layers in args.layers:
        feats, seconds = {}, 0.0
        for name, frame in (("train", train), ("val", val), ("test", test)):
            feats[name], spent = features(name, frame, layers, args.max_length, args.cache, checkpoint)
            seconds += spent
        per_review = seconds / (len(train) + len(val) + len(test)) if seconds else None
        encoder = CachedFeatures(pd.concat([train, val, test])["text"],
                                 np.concatenate([feats["train"], feats["val"], feats["test"]]))
        alone = EmbeddingClassifier(encoder, Cs=LM_FEATURE_CS, standardize=True, tfidf_weight="cv")
        alone.fit(train["text"], train["label"])
        chosen = alone.tfidf_weight
        for recipe, weight in (("lm features + LR", 0.0), ("lm features + LR, TF-IDF averaged (weight by CV)", chosen)):
            clf = EmbeddingClassifier(encoder, Cs=LM_FEATURE_CS, standardize=True, tfidf_weight=weight)
            clf.fit(train["text"], train["label"])
            record(recipe, layers, lambda n, frame: clf.predict(frame["text"]), cv=alone.cv_accuracy[weight],
                   seconds=per_review, weight=weight)
    pd.DataFrame(results).to_csv(os.path.join(OUT, "results.csv"), index=False)
    print(pd.DataFrame(results).round(3).to_string())


if __name__ == "__main__":
    main()
