"""CV-only check (training rows, never the test slice) for run_classifier_lm_imdb_scale.py: the LM head's
C came out at the low edge of LM_FEATURE_CS (0.001) at every n. Mean 5-fold CV accuracy of LR on the
standardised cached features for C below and on that grid (same folds as EmbeddingClassifier, seed 0).

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. nice -n 10 python notebooks/experiments/quality/check_lm_c_grid_edge.py
"""
import json
import os
import sys
import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run_classifier_lm_imdb_scale as R  # noqa: E402

warnings.filterwarnings("ignore", category=FutureWarning)
sub = R.train_subset(R.balanced_train())
vec = R.load_chunks("imdb_train4000", len(sub))
out = {}
for n in R.SIZES:
    x, y = vec[:n], sub["label"].to_numpy()[:n]
    x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-6)
    folds = StratifiedKFold(5, shuffle=True, random_state=R.SEED)
    out[n] = {c: float(cross_val_score(LogisticRegression(C=c, max_iter=3000, random_state=R.SEED), x, y,
                                       cv=folds).mean()) for c in (0.0001, 0.0003, 0.001, 0.003, 0.01)}
    print(n, {c: round(v, 4) for c, v in out[n].items()}, flush=True)
with open(os.path.join(R.OUT, "c_grid_edge_cv.json"), "w") as f:
    json.dump(out, f, indent=1)
