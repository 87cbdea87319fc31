"""Rebuild the bundled judge (imdb_judge.npz) from the full IMDb train split.

Not imported by the package. Run from the repository root:

    python reviewgen/text/sample_data/make_judge.py [--data /work/shared/data]

The judge is reviewgen.experiments.evaluation.Judge with its defaults (TF-IDF word
1-2-grams, 100,000 features, sublinear tf; logistic regression, C=4), fitted on every
row of aclImdb train.csv whose text is not in the bundled sample (imdb_train_sample.csv.gz;
every copy of a sampled text is left out), texts cleaned by reviewgen.text.data.clean_texts,
labels ceil(rating / 2). It is the "external judge" of notebooks/results/quality/LOG.md:
the demo trains and measures only on sample rows, so the judge has seen none of them.
"""

import argparse
import hashlib
import os

import numpy as np
import pandas as pd

from reviewgen.experiments.evaluation import Judge
from reviewgen.text import data as D

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = "imdb-aclimdb/train.csv"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data", help="root holding imdb-aclimdb/")
    args = parser.parse_args()
    path = os.path.join(args.data, SOURCE)
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    frame = pd.read_csv(path, dtype={"text": str}, keep_default_na=False)
    sample = set(D.load_sample("imdb")["text"])
    rest = frame[~frame["text"].isin(sample)]
    labels = np.ceil(rest["rating"] / 2).astype(int).tolist()
    judge = Judge().fit(D.clean_texts(rest["text"]), labels, source=SOURCE, source_sha256=digest,
                        rows_in_source=len(frame), rows_left_out_as_sample=len(frame) - len(rest),
                        rows_per_label={str(k): int(v) for k, v in pd.Series(labels).value_counts().sort_index().items()})
    out = os.path.join(HERE, "imdb_judge.npz")
    judge.save(out)
    print(f"judge on {len(rest)} of {len(frame)} rows ({len(frame) - len(rest)} left out as sample), "
          f"{len(judge._terms)} terms -> {out} ({os.path.getsize(out):,} bytes)")


if __name__ == "__main__":
    main()
