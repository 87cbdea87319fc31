"""Frozen all-MiniLM-L6-v2 mean-pooled embeddings (reviewgen.tasks.encoder.SentenceEncoder,
normalised) cached to .npy, for the issue #16 classifier comparison (fit_eval.py reads them).

Order of work: the IMDB test slice (500 reviews per label, sampled with random_state=0),
SST-5 train / dev / test (64 tokens), then IMDB train (256 tokens) in chunks of 1,000 rows
in a label round-robin order (random_state=0 within a label), so that any prefix of the chunks
is balanced until the smallest label (2: 5,116 rows) runs out. Each chunk is saved as it
finishes; fit_eval.py uses the chunks present.

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=. nice -n 19 \
        python notebooks/results/classifier_full/embed.py
"""
import os
import time

import numpy as np
import pandas as pd

from reviewgen.text import data as D
from reviewgen.tasks.encoder import SentenceEncoder

DATA = os.environ.get("DATA_DIR", "/work/shared/data")
CACHE = os.environ.get("CACHE_DIR", "/tmp/exp16/cache")
CHUNK = 1000


def imdb(split):
    frame = pd.read_csv(os.path.join(DATA, "imdb-aclimdb", f"{split}.csv"))
    frame["label"] = np.ceil(frame["rating"] / 2).astype(int)
    frame["text"] = list(D.clean_texts(frame["text"]))
    return frame


def imdb_test_slice():
    return imdb("test").groupby("label").sample(500, random_state=0).reset_index(drop=True)


def imdb_train_order():
    """Train rows in label round-robin order: row k of every label, then row k+1, ..."""
    frame = imdb("train")
    frame = frame.sample(frac=1.0, random_state=0)
    frame["rank"] = frame.groupby("label").cumcount()
    return frame.sort_values(["rank", "label"], kind="stable").reset_index(drop=True)


def sst5(split):
    frame = pd.read_csv(os.path.join(DATA, "sst5", f"{split}.csv"))
    frame["label"] = frame["rating"].astype(int)
    frame["text"] = list(D.clean_texts(frame["text"]))
    return frame


def save(name, encoder, texts):
    path = os.path.join(CACHE, name + ".npy")
    if os.path.exists(path):
        return
    t0 = time.time()
    emb = encoder.encode(list(texts))
    np.save(path + ".tmp.npy", emb)
    os.replace(path + ".tmp.npy", path)
    print(f"{name}: {len(texts)} texts in {time.time() - t0:.1f} s", flush=True)


def main():
    os.makedirs(CACHE, exist_ok=True)
    enc256 = SentenceEncoder.from_pretrained("minilm", max_length=256, batch_size=16, pooling="mean")
    save("imdb_test2000_256", enc256, imdb_test_slice()["text"])
    enc64 = SentenceEncoder.from_pretrained("minilm", max_length=64, batch_size=32, pooling="mean")
    for split in ("train", "dev", "test"):
        save(f"sst5_{split}_64", enc64, sst5(split)["text"])
    train = imdb_train_order()
    for k, start in enumerate(range(0, len(train), CHUNK)):
        save(f"imdb_train_256_chunk{k:03d}", enc256, train["text"].iloc[start:start + CHUNK])


if __name__ == "__main__":
    main()
