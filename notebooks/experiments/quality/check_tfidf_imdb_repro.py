"""Reproduction check for run_classifier_lm_imdb_scale.py's row (d): the logged TF-IDF + LR figures of the
"Classifier on real data, larger runs" table (0.632 on 20,464 balanced rows: the weight-1.0 head of
fit_eval.py's EmbeddingClassifier; 0.629 on all 25,000 train rows), refitted with EmbeddingClassifier's own
TF-IDF head on the same rows and scored on the same 2,000-review balanced test slice.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. nice -n 10 python notebooks/experiments/quality/check_tfidf_imdb_repro.py
"""
import json
import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
FULL = os.path.join(HERE, "..", "..", "results", "classifier_full")
sys.path.insert(0, FULL)
import embed as E  # noqa: E402

from reviewgen.experiments.filtering import EmbeddingClassifier  # noqa: E402

test = E.imdb_test_slice()
truth = test["label"].to_numpy()
order = E.imdb_train_order()
out = {}
for name, train, logged in (("balanced 20,464 (EmbeddingClassifier TF-IDF head)", order.iloc[:20464], 0.632),
                            ("all 25,000 train (unbalanced)", E.imdb("train"), 0.629)):
    t0 = time.time()
    head = EmbeddingClassifier(None)._tfidf_head(len(train)).fit(train["text"].tolist(), train["label"].tolist())
    acc = float((head.predict(test["text"].tolist()) == truth).mean())
    out[name] = dict(rows=len(train), accuracy=acc, logged=logged, reviews_diff=round((acc - logged) * len(test)),
                     seconds=round(time.time() - t0, 1))
    print(name, out[name], flush=True)
with open(os.path.join(FULL, "lm_features", "tfidf_repro_check.json"), "w") as f:
    json.dump(out, f, indent=1)
