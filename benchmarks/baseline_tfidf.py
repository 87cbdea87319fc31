"""TF-IDF + logistic regression baseline for the 5-label review classifier.

A reference point for the fine-tuned encoders: the same cleaning, label
mapping and balancing as the rest of reviewgen (reviewgen.text.data.prepare), then
scikit-learn's TfidfVectorizer and LogisticRegression, scored with
reviewgen.core.metrics (exact and "near" figures, confusion matrices).

scikit-learn is a test/benchmark dependency, not a runtime one, which is why
this is a script and not part of the package.

    python benchmarks/baseline_tfidf.py \
        --train /work/shared/data/imdb-aclimdb/train.csv \
        --test /work/shared/data/imdb-aclimdb/test.csv --scale imdb10 \
        --max-train-per-label 2000 --output runs/baseline_imdb.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", default="/work/shared/data/imdb-aclimdb/train.csv")
    parser.add_argument("--test", default="/work/shared/data/imdb-aclimdb/test.csv",
                        help="held-out file; without it the validation split is the test set")
    parser.add_argument("--scale", default="imdb10", help="rating scale (reviewgen.text.data.SCALES)")
    parser.add_argument("--max-train-per-label", type=int, default=0,
                        help="cap the balanced training rows per label (0: no cap)")
    parser.add_argument("--max-test", type=int, default=0, help="cap the test rows (0: no cap)")
    parser.add_argument("--max-features", type=int, default=50000)
    parser.add_argument("--ngram-max", type=int, default=2)
    parser.add_argument("--C", type=float, default=2.0, help="inverse L2 regularisation strength")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default="", help="write the figures as JSON here")
    return parser.parse_args(argv)


def _cap_per_label(frame, cap, seed):
    if cap <= 0:
        return frame
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("label", sort=False).head(cap)


def main(argv=None) -> int:
    args = _parse_args(argv)
    from reviewgen import data
    from reviewgen.tasks.baselines import tfidf_logistic_regression

    started = time.perf_counter()
    prepared = data.prepare(args.train, scale=args.scale, seed=args.seed)
    train = _cap_per_label(prepared.train, args.max_train_per_label, args.seed)
    if args.test:
        test = data.prepare(args.test, scale=args.scale, seed=args.seed, val_fraction=0.0,
                            balance=False).train
    else:
        test = prepared.val
    if args.max_test > 0 and len(test) > args.max_test:
        test = test.sample(args.max_test, random_state=args.seed)
    # Labels with no reviews at all (IMDb has no 5-6 star reviews, so no label 3)
    # would only add zeros to the macro averages.
    labels = sorted(set(train["label"].tolist()) | set(test["label"].tolist()))

    figures = tfidf_logistic_regression(
        train["text"].tolist(), train["label"].to_numpy(), test["text"].tolist(), test["label"].to_numpy(),
        labels=labels, C=args.C, ngram_max=args.ngram_max, max_features=args.max_features, seed=args.seed)
    result = {
        "train_file": args.train, "test_file": args.test or "(validation split)",
        "scale": args.scale, "seed": args.seed, "rows_train": int(len(train)),
        "rows_test": int(len(test)), "labels": labels,
        "train_label_counts": {str(k): int(v) for k, v in train["label"].value_counts().sort_index().items()},
        "test_label_counts": {str(k): int(v) for k, v in test["label"].value_counts().sort_index().items()},
        "seconds": round(time.perf_counter() - started, 1), **figures,
    }
    print(f"TF-IDF + logistic regression: train {len(train):,} rows, test {len(test):,} rows, "
          f"{figures['features']:,} features, {result['seconds']} s")
    print(f"  accuracy {figures['accuracy']:.4f}  macro F1 {figures['macro_f1']:.4f}  "
          f"near accuracy {figures['near_accuracy']:.4f}  near macro F1 {figures['near_macro_f1']:.4f}")
    print("  confusion (rows true " + " ".join(map(str, labels)) + "):")
    for label, row in zip(labels, np.asarray(figures["confusion_matrix"])):
        print(f"    {label}: " + " ".join(f"{n:>6}" for n in row))
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as handle:
            json.dump(result, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
