"""MAUVE of several probe runs' generated.csv against many draws of the same real reviews.

    PYTHONPATH=. python notebooks/experiments/quality/mauve_resample_probes.py RUN [RUN ...]

One MAUVE per run (the one evaluate_generated draws) moves by +-0.1-0.2 with the draw of real
reviews; this holds each run's generated texts fixed and redraws the real side DRAWS times
(as many real reviews as generated ones, from run_generator's 400 IMDB test reviews), the same
MiniLM features (128 tokens) and bucket rule as reviewgen.experiments.evaluation.mauve_score.
Prints mean, sd, min, max per run and writes <results>/mauve_resampled_probes.csv.
"""
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_generator import RESULTS, judge_and_real  # noqa: E402

from reviewgen.experiments.evaluation import mauve_score  # noqa: E402
from reviewgen.tasks.encoder import SentenceEncoder  # noqa: E402

DRAWS = int(os.environ.get("DRAWS", "20"))


def main(runs):
    _, real_texts, _ = judge_and_real()
    encoder = SentenceEncoder.from_pretrained("minilm", max_length=128)
    real = encoder.encode(real_texts)
    rows = []
    for run in runs:
        texts = pd.read_csv(os.path.join(RESULTS, run, "generated.csv"))["text"].fillna("").tolist()
        p = encoder.encode(texts)
        rng = np.random.default_rng(0)
        scores = [mauve_score(p, real[rng.choice(len(real), len(p), replace=False)]) for _ in range(DRAWS)]
        rows.append(dict(run=run, n=len(p), draws=DRAWS, mean=np.mean(scores), sd=np.std(scores, ddof=1),
                         min=np.min(scores), max=np.max(scores)))
        print(rows[-1], flush=True)
    out = os.path.join(RESULTS, "mauve_resampled_probes.csv")
    old = pd.read_csv(out) if os.path.exists(out) else pd.DataFrame()
    new = pd.DataFrame(rows)
    if len(old):
        old = old[~old["run"].isin(new["run"])]
    pd.concat([old, new]).to_csv(out, index=False)


if __name__ == "__main__":
    main(sys.argv[1:])
