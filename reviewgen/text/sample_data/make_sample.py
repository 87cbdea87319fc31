"""Rebuild the bundled review samples from the full datasets.

Not imported by the package. Run from the repository root:

    python reviewgen/text/sample_data/make_sample.py [--data /work/shared/data]

IMDb: 375 reviews of each of the 8 ratings present in aclImdb train.csv
(1-4, 7-10) = 3,000 rows. SST-5: 200 sentences of each rating 0-4 from
train.csv = 1,000 rows. Rows are drawn without replacement with numpy's
default_rng(seed=0) per rating, kept in the source file's order, and written
with the text unchanged (uncleaned) so the pipeline has real work to do.
The gzip header carries no timestamp, so reruns give identical bytes.
"""

import argparse
import gzip
import io
import os

import numpy as np
import pandas as pd

HERE = os.path.dirname(os.path.abspath(__file__))

# name -> (source file under the data root, rows per rating, output file)
SAMPLES = {
    "imdb": ("imdb-aclimdb/train.csv", 375, "imdb_train_sample.csv.gz"),
    "sst5": ("sst5/train.csv", 200, "sst5_train_sample.csv.gz"),
}


def stratified_rows(frame: pd.DataFrame, per_rating: int, seed: int) -> pd.DataFrame:
    """``per_rating`` random rows of every rating present, in source order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for rating in sorted(frame["rating"].unique()):
        positions = np.flatnonzero(frame["rating"].to_numpy() == rating)
        if len(positions) < per_rating:
            raise SystemExit(f"rating {rating} has only {len(positions)} rows, need {per_rating}")
        chosen.append(rng.choice(positions, size=per_rating, replace=False))
    return frame.iloc[np.sort(np.concatenate(chosen))]


def write_gzip_csv(frame: pd.DataFrame, path: str) -> None:
    text = frame.to_csv(index=False, lineterminator="\n")
    buffer = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buffer, mtime=0, compresslevel=9) as out:
        out.write(text.encode("utf-8"))
    with open(path, "wb") as handle:
        handle.write(buffer.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data", help="root holding imdb-aclimdb/ and sst5/")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for name, (source, per_rating, output) in SAMPLES.items():
        frame = pd.read_csv(os.path.join(args.data, source), dtype={"text": str}, keep_default_na=False)
        sample = stratified_rows(frame, per_rating, args.seed)
        path = os.path.join(HERE, output)
        write_gzip_csv(sample[["text", "rating"]], path)
        counts = sample["rating"].value_counts().sort_index().to_dict()
        print(f"{name}: {len(sample)} rows {counts} -> {path} ({os.path.getsize(path):,} bytes)")


if __name__ == "__main__":
    main()
