"""The demo's filter recipe on SST-5 (issue #16, "real data, larger runs").

    PYTHONPATH=. python notebooks/experiments/quality/run_classifier_lm_sst5.py [--layers 15] [--max-length 64]

All 8,544 SST-5 train sentences (labels 0-4), the 2,210 test sentences; dev is not used. Features: SmolLM2's
first `layers` blocks, mean-pooled (SentenceEncoder.from_decoder), standardised; LR with C by 5-fold CV on
train; the TF-IDF weight by 5-fold CV on train (EmbeddingClassifier(tfidf_weight="cv")). TF-IDF + LR
(reviewgen.tasks.baselines' settings) on the same split is the reference; paired bootstrap of the accuracy
gain on test. Writes notebooks/results/quality/classifier_lm/sst5.csv; features cached in --cache.
"""
import argparse
import os
import sys
import time

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_classifier_lm import OUT, ROOT, CachedFeatures, _tfidf_predictions  # noqa: E402

from reviewgen.core.metrics import classification_report  # noqa: E402
from reviewgen.experiments.demo import LM_FEATURE_CS  # noqa: E402
from reviewgen.experiments.filtering import EmbeddingClassifier  # noqa: E402
from reviewgen.tasks.encoder import SentenceEncoder  # noqa: E402

SST5 = os.environ.get("SST5_DIR", os.path.join(ROOT, "..", "shared", "data", "sst5"))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=15)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--cache", default=os.path.join(ROOT, "runs", "classifier_lm_cache"))
    args = parser.parse_args()
    os.makedirs(args.cache, exist_ok=True)
    frames = {name: pd.read_csv(os.path.join(SST5, f"{name}.csv")).rename(columns={"rating": "label"})
              for name in ("train", "test")}
    frames = {name: frame.dropna().reset_index(drop=True) for name, frame in frames.items()}
    encoder, feats, seconds = None, {}, 0.0
    for name, frame in frames.items():
        path = os.path.join(args.cache, f"sst5_{name}_k{args.layers}_L{args.max_length}.npy")
        if os.path.exists(path):
            feats[name] = np.load(path)
            continue
        encoder = encoder or SentenceEncoder.from_decoder("smollm2", layers=args.layers, max_length=args.max_length,
                                                          batch_size=32)
        started = time.process_time()
        feats[name] = encoder.encode(frame["text"].tolist())
        seconds += time.process_time() - started
        np.save(path, feats[name])
    train, test = frames["train"], frames["test"]
    print(f"train {len(train)}, test {len(test)}; embedding CPU s {seconds:.0f}", flush=True)
    cached = CachedFeatures(pd.concat([train, test])["text"], np.concatenate([feats["train"], feats["test"]]))
    labels = sorted(train["label"].unique().tolist())
    truth = test["label"].to_numpy()
    base = _tfidf_predictions(train, test)
    rows = [{"recipe": "tfidf+lr", "tfidf_weight": 1.0, "cv_accuracy": None, "test_predicted": base}]
    probe = EmbeddingClassifier(cached, Cs=LM_FEATURE_CS, standardize=True, tfidf_weight="cv")
    probe.fit(train["text"], train["label"])
    rows[0]["cv_accuracy"] = probe.cv_accuracy[1.0]
    for recipe, weight in (("lm features + LR", 0.0), ("lm features + LR, TF-IDF averaged (weight by CV)",
                                                      probe.tfidf_weight)):
        clf = EmbeddingClassifier(cached, Cs=LM_FEATURE_CS, standardize=True, tfidf_weight=weight)
        clf.fit(train["text"], train["label"])
        rows.append({"recipe": recipe, "tfidf_weight": weight, "cv_accuracy": probe.cv_accuracy[weight],
                     "test_predicted": clf.predict(test["text"])})
    out = []
    for row in rows:
        predicted = row.pop("test_predicted")
        exact = classification_report(truth, predicted, labels=labels)
        near = classification_report(truth, predicted, labels=labels, near=True)
        gain = (predicted == truth).astype(float) - (base == truth)
        draws = np.random.default_rng(0).integers(0, len(gain), (2000, len(gain)))
        low, high = np.percentile(gain[draws].mean(axis=1), [2.5, 97.5])
        out.append({**row, "layers": args.layers, "max_length": args.max_length, "test_accuracy": exact.accuracy,
                    "test_near": near.accuracy, "test_macro_f1": exact.macro_f1, "test_near_macro_f1": near.macro_f1,
                    "test_gain_vs_tfidf": float(gain.mean()), "test_gain_95ci": f"[{low:+.3f}, {high:+.3f}]",
                    "embed_cpu_s": round(seconds)})
    table = pd.DataFrame(out)
    os.makedirs(OUT, exist_ok=True)
    table.to_csv(os.path.join(OUT, "sst5.csv"), index=False)
    print(table.round(3).to_string())


if __name__ == "__main__":
    main()
