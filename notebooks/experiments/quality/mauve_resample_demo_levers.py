"""How noisy is the demo's MAUVE? For each demo_levers run, the accepted reviews against
many random draws of the held-out real reviews, exactly as evaluate_generated draws them
(the 40 generated vs 40 of the 296 held-out real reviews of that seed, MiniLM 128 tokens,
mauve_score with buckets = 40 // 10), and the real-vs-real reference of each draw.

    OMP_NUM_THREADS=1 nice -n 10 python notebooks/experiments/quality/mauve_resample_demo_levers.py [draws]
"""
import os
import sys

import numpy as np
import pandas as pd

from reviewgen.experiments.evaluation import mauve_score
from reviewgen.tasks.encoder import SentenceEncoder
from reviewgen.text import data as _data

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
OUT = os.path.join(ROOT, "notebooks", "results", "quality", "demo_levers")


def main(draws=20):
    draws = int(draws)
    encoder = SentenceEncoder.from_pretrained("minilm", max_length=128)
    runs = sorted(d for d in os.listdir(OUT) if os.path.exists(os.path.join(OUT, d, "quality_accepted.csv")))
    real_cache, rows = {}, []
    for run in runs:
        seed = int(run.rsplit("_s", 1)[1])
        if seed not in real_cache:
            gp, cp = _data.prepare_generator_and_classifier(_data.load_sample("imdb"), "imdb10", seed=seed,
                                                            val_fraction=0.1)
            real = pd.concat([gp.val, cp.val])
            real_cache[seed] = encoder.encode(real["text"].tolist())
        real_features = real_cache[seed]
        accepted = pd.read_csv(os.path.join(OUT, run, "accepted.csv"))
        p = encoder.encode(accepted["text"].astype(str).tolist())
        rng = np.random.default_rng(12345)
        gen, ref = [], []
        for _ in range(draws):
            index = rng.permutation(len(real_features))
            half = len(index) // 2
            size = min(len(p), half)
            q1, q2 = real_features[index[:size]], real_features[index[half:half + size]]
            gen.append(mauve_score(p, q1))
            ref.append(mauve_score(q2, q1))
        gen, ref = np.array(gen), np.array(ref)
        row = {"run": run, "draws": draws, "mauve_mean": gen.mean(), "mauve_sd": gen.std(ddof=1),
               "mauve_min": gen.min(), "mauve_max": gen.max(), "share_ge_0.6": (gen >= 0.6).mean(),
               "real_mean": ref.mean(), "real_sd": ref.std(ddof=1)}
        rows.append(row)
        print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    frame = pd.DataFrame(rows)
    frame.to_csv(os.path.join(OUT, "mauve_resampled.csv"), index=False, float_format="%.4f")
    print(frame.round(3).to_string(index=False))


if __name__ == "__main__":
    main(*sys.argv[1:])
