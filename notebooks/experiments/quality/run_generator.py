"""One generator experiment of issue #16, measured with reviewgen.experiments.evaluation.

    PYTHONPATH=. python notebooks/experiments/quality/run_generator.py CONFIG.json

Data as the demo: the bundled IMDB sample, split by reviewgen.data into the
generator and classifier parts. The judge is TF-IDF + LR on the IMDB train
reviews that are NOT in the bundled sample (neither generator nor filter saw
them); the real held-out reviews are a balanced slice of IMDB test. Writes
notebooks/results/quality/<name>/{generated.csv,quality.csv,config.json} and
appends one line to notebooks/results/quality/LOG.md.
"""
import json
import os
import sys
import time

import numpy as np
import pandas as pd

from reviewgen.text import data as D
from reviewgen.text.conditioning import ChatFormat, ReviewOfFormat, generate_reviews, review_loss, train_generator
from reviewgen.core.config import TrainingConfig
from reviewgen.tasks.encoder import SentenceEncoder
from reviewgen.experiments.evaluation import Judge, evaluate_generated
from reviewgen.tasks.generator import Generator

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
IMDB = os.environ.get("IMDB_DIR", os.path.join(ROOT, "..", "shared", "data", "imdb-aclimdb"))
RESULTS = os.path.join(ROOT, "notebooks", "results", "quality")

DEFAULTS = dict(name="run", format="chat", instruction=None, system=None, words=None, train_rows=0, max_words=0,
                epochs=1, lr=1e-4, blocks=4, batch_size=8, grad_accum=1, max_length=160, review_only=True,
                warmup_ratio=0.1, per_label=25, max_new_tokens=120, min_new_tokens=0, temperature=0.8,
                top_k=0, top_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0, seed=0, note="")


def load_config(path, defaults):
    """The defaults updated from the JSON file at path; unknown keys stop the run."""
    cfg = dict(defaults)
    with open(path) as f:
        cfg.update(json.load(f))
    unknown = set(cfg) - set(defaults)
    if unknown:
        raise SystemExit(f"unknown config keys {unknown}")
    return cfg


def judge_and_real(seed=0, real_per_label=100):
    """The judge (fitted here, about half a minute) and a balanced slice of IMDB test."""
    sample = set(D.load_sample("imdb")["text"])
    train = pd.read_csv(os.path.join(IMDB, "train.csv"))
    train = train[~train["text"].isin(sample)]
    train["label"] = np.ceil(train["rating"] / 2).astype(int)
    judge = Judge().fit(D.clean_texts(train["text"]), train["label"].tolist())
    test = pd.read_csv(os.path.join(IMDB, "test.csv"))
    test["label"] = np.ceil(test["rating"] / 2).astype(int)
    real = test.groupby("label").sample(real_per_label, random_state=seed).reset_index(drop=True)
    return judge, D.clean_texts(real["text"]), real["label"].tolist()


def measure_and_save(out, texts, wanted, real_texts, real_labels, judge, train_texts, base):
    """generated.csv and quality.csv in out; returns the quality table's "all" row."""
    pd.DataFrame({"label": wanted, "text": texts}).to_csv(os.path.join(out, "generated.csv"), index=False)
    encoder = SentenceEncoder.from_pretrained("minilm", max_length=128)
    report = evaluate_generated(texts, wanted, real_texts, real_labels, judge=judge, encoder=encoder,
                                train_texts=train_texts, base_generator=base)
    report.table.to_csv(os.path.join(out, "quality.csv"))
    print(report, flush=True)
    return report.table.loc["all"]


def main(path):
    cfg = load_config(path, DEFAULTS)
    out = os.path.join(RESULTS, cfg["name"])
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    t0 = time.time()
    gen_part, _ = D.prepare_generator_and_classifier(D.load_sample("imdb"), "imdb10", seed=0, val_fraction=0.1)
    judge, real_texts, real_labels = judge_and_real()
    gen = Generator.from_pretrained("smollm2", max_length=cfg["max_length"])
    base = Generator.from_pretrained("smollm2", max_length=256)
    if cfg["format"] == "chat":
        kw = {k: cfg[k] for k in ("instruction", "system") if cfg[k] is not None}
        if cfg["words"]:
            kw["words"] = {int(k): v for k, v in cfg["words"].items()}
        fmt = ChatFormat(**kw)
    else:
        fmt = ReviewOfFormat()
    train_texts_all = gen_part.train
    labels = sorted(train_texts_all["label"].unique())
    minutes_train = 0.0
    train_texts = []
    if cfg["train_rows"]:
        rows = train_texts_all
        if cfg["max_words"]:
            rows = rows[rows["text"].str.split().str.len() <= cfg["max_words"]]
        per = cfg["train_rows"] // len(labels)
        rows = pd.concat([rows[rows.label == l].head(per) for l in labels]).sample(frac=1, random_state=cfg["seed"])
        train_texts = rows["text"].tolist()
        ev = gen_part.val.groupby("label", group_keys=False).head(12)
        tc = TrainingConfig.for_generator(num_train_epochs=cfg["epochs"], learning_rate=cfg["lr"],
                                          trainable_blocks=cfg["blocks"], seed=cfg["seed"],
                                          per_device_train_batch_size=cfg["batch_size"],
                                          gradient_accumulation_steps=cfg["grad_accum"],
                                          warmup_ratio=cfg["warmup_ratio"], load_best_model_at_end=False)
        before = review_loss(gen, fmt, ev["text"].tolist(), ev["label"].tolist())
        t1 = time.time()
        train_generator(gen, fmt, train_texts, rows["label"].tolist(), config=tc, review_only=cfg["review_only"],
                        progress=lambda e: print(f"  step {e['step']}/{e['total_steps']} loss {e['loss']:.3f}",
                                                 flush=True) if e.get("event") == "step" and e["step"] % 10 == 0 else None)
        minutes_train = (time.time() - t1) / 60
        after = review_loss(gen, fmt, ev["text"].tolist(), ev["label"].tolist())
        print(f"review perplexity {before['perplexity']:.1f} -> {after['perplexity']:.1f}", flush=True)
        cfg["_ppl"] = [before["perplexity"], after["perplexity"]]
    t2 = time.time()
    texts, wanted = [], []
    for label in labels:
        got = generate_reviews(gen, fmt, label, cfg["per_label"], max_new_tokens=cfg["max_new_tokens"],
                               min_new_tokens=cfg["min_new_tokens"], temperature=cfg["temperature"],
                               top_k=cfg["top_k"], top_p=cfg["top_p"], repetition_penalty=cfg["repetition_penalty"],
                               no_repeat_ngram_size=cfg["no_repeat_ngram_size"], seed=cfg["seed"] * 1000 + int(label),
                               batch_size=25)
        texts += got
        wanted += [int(label)] * len(got)
    minutes_gen = (time.time() - t2) / 60
    a = measure_and_save(out, texts, wanted, real_texts, real_labels, judge, gen_part.train["text"].tolist(), base)
    minutes = (time.time() - t0) / 60
    line = (f"| {cfg['name']} | {cfg['note']} | {minutes_train:.1f} train + {minutes_gen:.1f} gen ({minutes:.1f} all) | "
            f"{a.judge_exact:.2f} / {a.judge_near:.2f} (real {a.real_exact:.2f} / {a.real_near:.2f}) | "
            f"{a.mauve:.2f} (real {a.mauve_real:.2f}) | {a.repeated_4gram:.2f} (real {a.real_repeated_4gram:.2f}) | {a.copied_12gram:.2f} | "
            f"{a.distinct_2:.2f} | {a.self_bleu:.2f} | {a.words_mean:.0f} | {a.perplexity:.1f} |")
    log = os.path.join(RESULTS, "LOG.md")
    if not os.path.exists(log):
        with open(log, "w") as f:
            f.write("# Issue #16 quality experiments (100 generated reviews, 25 per label, unless noted)\n\n"
                    "Judge: TF-IDF+LR on IMDB train minus the bundled sample; real: 400 IMDB test reviews. "
                    "Machine: 2 shared CPU cores, runs under nice -n 10, so minutes are upper bounds.\n\n"
                    "| run | config | minutes | judge exact / near | MAUVE | repeated 4-gram | copied 12-gram | "
                    "distinct-2 | self-BLEU | words | ppl (base) |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
    with open(log, "a") as f:
        f.write(line + "\n")
    print(line)


if __name__ == "__main__":
    main(sys.argv[1])
