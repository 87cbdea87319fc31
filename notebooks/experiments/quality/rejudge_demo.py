"""The demo's accepted reviews under both judges: the bundled one (the demo's default since
7 Dec: TF-IDF + LR on the 21,983 IMDB train reviews outside the sample) and the earlier
"sample" judge (fitted on the ~1,164 sample rows neither model trained on), rebuilt with
the demo's own row selection. Nothing is generated; the texts are the demo's files.

    PYTHONPATH=. python notebooks/experiments/quality/rejudge_demo.py OUT.csv DEMO_DIR [DEMO_DIR ...]
"""
import sys

import numpy as np
import pandas as pd

from reviewgen.experiments.demo import DemoConfig, _take_balanced, fit_unseen_judge
from reviewgen.experiments.evaluation import Judge, near_agreement
from reviewgen.text import data as D


def sample_judge(cfg):
    gen_part, clf_part = D.prepare_generator_and_classifier(D.load_sample("imdb"), cfg.scale, seed=cfg.seed,
                                                            val_fraction=cfg.val_fraction)
    seen = _take_balanced(gen_part.train, cfg.opening_rows, cfg.seed)   # the openings' rows (no training rows)
    clf_train = _take_balanced(clf_part.train, cfg.classifier_train_rows, cfg.seed)
    real = pd.concat([gen_part.val, clf_part.val])
    return fit_unseen_judge(pd.concat([gen_part.train, clf_part.train]),
                            set(seen["text"]) | set(clf_train["text"]), real["text"])


def main(out, *dirs):
    bundled = Judge.bundled("imdb")
    lines = []
    for d in dirs:
        cfg = DemoConfig.load(f"{d}/demo_config.json")
        assert cfg.generator_train_rows == 0 and cfg.data == "sample:imdb", d
        accepted = pd.read_csv(f"{d}/accepted.csv")
        texts, wanted = accepted["text"].astype(str).tolist(), accepted["label"].to_numpy()
        small, rows = sample_judge(cfg)
        for name, judge, n in (("bundled", bundled, bundled.info["rows"]), ("sample", small, rows)):
            predicted = judge.predict(texts)
            lines.append({"run": d, "seed": cfg.seed, "judge": name, "judge_rows": n, "n": len(texts),
                          "exact": float(np.mean(predicted == wanted)),
                          "near": float(np.mean(near_agreement(wanted, predicted)))})
    table = pd.DataFrame(lines)
    table.to_csv(out, index=False)
    print(table.to_string(index=False))


if __name__ == "__main__":
    main(*sys.argv[1:])
