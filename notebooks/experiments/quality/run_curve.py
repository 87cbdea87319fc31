"""Issue #16 / #14: generation quality against fine-tuning CPU minutes, one arm per run.

    cd /work/wt-curve && OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 nice -n 10 \\
        PYTHONPATH=. python notebooks/experiments/quality/run_curve.py notebooks/experiments/quality/curve_lora.json

Data, with no leak: the IMDB train rows that are not in the bundled sample, cleaned, are split (fixed seed)
into a GENERATOR POOL (balanced over labels 1,2,4,5, reviews of at most max_words words) plus a held-out
slice of the same kind (held_per_label per label, never trained on) and the JUDGE ROWS (all the rest;
the TF-IDF + LR judge is fitted on them only). Real reference: a balanced slice of IMDB test.

Training: SmolLM2-135M-Instruct, chat format with the demo's reviewer prompt, loss on the review only.
One process trains stage after stage (one epoch over a fresh chunk of the pool per stage, continuing from
the previous stage's weights; constant_with_warmup, warmup in the first stage only; a new optimizer per
stage). The training CPU time (time.process_time() around train_generator, one thread) is summed; after
the stage that reaches each target in cpu_targets (minutes) the model is measured:
100 reviews (25 per label) with the demo's sampling settings and a fixed seed -> evaluate_generated
(judge, MAUVE, repeated/copied n-grams, distinct-2, length); review loss of the held-out pool reviews under
the right rating and under the opposite one (1<->5, 2<->4). The first stage is small (it sizes the rest).
Rows go to notebooks/results/quality/curve/curve.csv as each point is done. CURVE_STOP_AT (unix seconds)
is a wall-clock deadline: no stage starts that would end after it; the model is measured where it is.
"""
import json
import os
import sys
import time

import numpy as np
import pandas as pd

from reviewgen.core.config import TrainingConfig
from reviewgen.experiments.evaluation import Judge, evaluate_generated
from reviewgen.tasks.encoder import SentenceEncoder
from reviewgen.tasks.generator import Generator
from reviewgen.text import data as D
from reviewgen.text.conditioning import REVIEWER_PROMPT, ChatFormat, generate_reviews, review_loss, train_generator
from reviewgen.weights.lora import prepare_lora_training

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from run_generator import load_config  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", "..", ".."))
IMDB = os.environ.get("IMDB_DIR", os.path.join(ROOT, "..", "shared", "data", "imdb-aclimdb"))
OUT = os.environ.get("CURVE_OUT", os.path.join(ROOT, "notebooks", "results", "quality", "curve"))
LABELS = (1, 2, 4, 5)
WRONG = {1: 5, 2: 4, 4: 2, 5: 1}

DEFAULTS = dict(arm="lora", measure_untrained=False, lora_rank=0, lora_alpha=16.0, lora_dropout=0.05,
                lora_targets="all", blocks=1, lr=1e-3, batch_size=8, grad_accum=1, max_length=256, max_words=180,
                pool_per_label=1000, held_per_label=12, real_per_label=100, first_stage_rows=96,
                first_warmup_ratio=0.1, stage_cpu_minutes=6.0, cpu_targets=[15, 30, 60], per_label=25,
                max_new_tokens=120, temperature=0.7, top_p=0.95, repetition_penalty=1.15,
                no_repeat_ngram_size=4, seed=0, gen_seed=0, note="")


def split_data(cfg):
    """(pool frame, held-out frame, judge frame, real frame); texts cleaned."""
    sample = set(D.load_sample("imdb")["text"])
    train = pd.read_csv(os.path.join(IMDB, "train.csv"))
    train = train[~train["text"].isin(sample)].copy()
    train["text"] = D.clean_texts(train["text"])
    train = train[train["text"].str.len() > 0].drop_duplicates("text")
    train["label"] = np.ceil(train["rating"] / 2).astype(int)
    train["words"] = train["text"].str.split().str.len()
    short = train[train["words"] <= cfg["max_words"]]
    n = cfg["pool_per_label"] + cfg["held_per_label"]
    chosen = short.groupby("label").sample(n, random_state=cfg["seed"])
    held = chosen.groupby("label").head(cfg["held_per_label"])
    pool = chosen.drop(held.index).sample(frac=1, random_state=cfg["seed"])  # shuffled: chunks are balanced-ish
    judge_rows = train.drop(chosen.index)
    test = pd.read_csv(os.path.join(IMDB, "test.csv"))
    test["label"] = np.ceil(test["rating"] / 2).astype(int)
    real = test.groupby("label").sample(cfg["real_per_label"], random_state=0).reset_index(drop=True)
    real["text"] = D.clean_texts(real["text"])
    return pool.reset_index(drop=True), held.reset_index(drop=True), judge_rows, real


def main(path):
    cfg = load_config(path, DEFAULTS)
    os.makedirs(OUT, exist_ok=True)
    arm = cfg["arm"]
    with open(os.path.join(OUT, f"config_{arm}.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    wall0 = time.time()

    def log(msg):
        print(f"[{time.strftime('%H:%M:%S')} wall {(time.time() - wall0) / 60:5.1f} min] {msg}", flush=True)

    pool, held, judge_rows, real = split_data(cfg)
    log(f"pool {len(pool)} (per label {pool.label.value_counts().to_dict()}), held-out {len(held)}, "
        f"judge rows {len(judge_rows)}, real {len(real)}; pool words mean {pool.words.mean():.0f}")
    judge = Judge().fit(judge_rows["text"].tolist(), judge_rows["label"].tolist())
    encoder = SentenceEncoder.from_pretrained("minilm", max_length=128)
    gen = Generator.from_pretrained("smollm2", max_length=cfg["max_length"])
    fmt = ChatFormat(**REVIEWER_PROMPT)
    log("loaded judge, encoder, generator")
    real_texts, real_labels = real["text"].tolist(), real["label"].tolist()
    pool_texts = pool["text"].tolist()
    held_texts, held_labels = held["text"].tolist(), held["label"].tolist()

    def measure(point, cpu_s, wall_train_s, seen, stage):
        t = time.time()
        right = review_loss(gen, fmt, held_texts, held_labels)
        wrong = review_loss(gen, fmt, held_texts, [WRONG[l] for l in held_labels])
        texts, wanted = [], []
        for label in LABELS:
            got = generate_reviews(gen, fmt, label, cfg["per_label"], max_new_tokens=cfg["max_new_tokens"],
                                   temperature=cfg["temperature"], top_p=cfg["top_p"],
                                   repetition_penalty=cfg["repetition_penalty"],
                                   no_repeat_ngram_size=cfg["no_repeat_ngram_size"],
                                   seed=cfg["gen_seed"] * 1000 + label, batch_size=25)
            texts += got
            wanted += [label] * len(got)
        name = "untrained" if point == 0 else arm
        pd.DataFrame({"label": wanted, "text": texts}).to_csv(
            os.path.join(OUT, f"generated_{name}_p{point}.csv"), index=False)
        report = evaluate_generated(texts, wanted, real_texts, real_labels, judge=judge, encoder=encoder,
                                    train_texts=pool_texts)
        report.table.to_csv(os.path.join(OUT, f"quality_{name}_p{point}.csv"))
        a = report.table.loc["all"]
        row = dict(arm=name, point=point, stages=stage, cpu_minutes=round(cpu_s / 60, 2),
                   wall_minutes=round(wall_train_s / 60, 2), train_reviews_seen=seen,
                   eval_loss=round(right["loss"], 4), perplexity=round(right["perplexity"], 2),
                   wrong_rating_loss=round(wrong["loss"], 4), loss_gap=round(wrong["loss"] - right["loss"], 4),
                   judge_exact=a.judge_exact, judge_near=a.judge_near, judge_real_exact=a.real_exact,
                   judge_real_near=a.real_near, mauve=a.mauve, mauve_real=a.mauve_real,
                   repeated_4gram=a.repeated_4gram, real_repeated_4gram=a.real_repeated_4gram,
                   copied_12gram=a.copied_12gram, distinct_2=a.distinct_2, self_bleu=a.self_bleu,
                   words_mean=a.words_mean, measure_wall_minutes=round((time.time() - t) / 60, 2))
        csv = os.path.join(OUT, "curve.csv")
        frame = pd.DataFrame([row])
        frame.to_csv(csv, mode="a", header=not os.path.exists(csv), index=False, float_format="%.4f")
        log(f"POINT {name} p{point}: " + ", ".join(f"{k}={v}" for k, v in row.items()))

    if cfg["measure_untrained"]:
        measure(0, 0.0, 0.0, 0, 0)

    cpu_total, wall_total, seen, stage, cursor = 0.0, 0.0, 0, 0, 0
    targets = [60.0 * m for m in cfg["cpu_targets"]]
    stages = []
    rate = None  # CPU seconds per review, from the stages so far
    # CURVE_STOP_AT (unix seconds): a wall-clock deadline; no stage starts that would end after it (it measures then)
    stop_at = float(os.environ.get("CURVE_STOP_AT", "0"))
    while targets:
        if stage == 0:
            rows = cfg["first_stage_rows"]
        else:
            want = min(60.0 * cfg["stage_cpu_minutes"], targets[0] - cpu_total)
            rows = max(cfg["batch_size"], int(round(want / rate / cfg["batch_size"])) * cfg["batch_size"])
        if stop_at and stage > 0 and time.time() + rows * rate * (wall_total / cpu_total) > stop_at:
            log(f"the next stage would end after stop_at; measuring now at {cpu_total / 60:.2f} CPU min instead "
                f"of the target {targets[0] / 60:.0f}")
            measure(len(cfg["cpu_targets"]) - len(targets) + 1, cpu_total, wall_total, seen, stage)
            break
        if cursor + rows > len(pool):
            log(f"pool exhausted at {cursor} rows; wrapping (a second epoch over the pool)")
            cursor = 0
        chunk = pool.iloc[cursor:cursor + rows]
        cursor += rows
        first = stage == 0
        tc = TrainingConfig.for_generator(
            num_train_epochs=1, learning_rate=cfg["lr"], trainable_blocks=cfg["blocks"], seed=cfg["seed"] + stage,
            per_device_train_batch_size=cfg["batch_size"], gradient_accumulation_steps=cfg["grad_accum"],
            lr_scheduler_type="constant_with_warmup" if first else "constant",
            warmup_ratio=cfg["first_warmup_ratio"] if first else 0.0, load_best_model_at_end=False)
        if cfg["lora_rank"]:
            tc.lora_rank, tc.lora_alpha, tc.lora_dropout = cfg["lora_rank"], cfg["lora_alpha"], cfg["lora_dropout"]
            tc.lora_targets = cfg["lora_targets"]
            tc.validate()
            tc = prepare_lora_training(gen.model, tc, gen.family)  # adds the adapters once; later stages reuse
        losses = []
        c0, w0 = time.process_time(), time.time()
        train_generator(gen, fmt, chunk["text"].tolist(), chunk["label"].tolist(), config=tc, review_only=True,
                        progress=lambda e: losses.append(e["loss"]) if e.get("event") == "step" else None)
        dc, dw = time.process_time() - c0, time.time() - w0
        cpu_total += dc
        wall_total += dw
        seen += len(chunk)
        stage += 1
        rate = cpu_total / seen
        stages.append(dict(stage=stage, rows=len(chunk), cpu_s=round(dc, 1), wall_s=round(dw, 1),
                           cpu_total_s=round(cpu_total, 1), seen=seen,
                           train_loss_first=losses[0] if losses else None, train_loss_last=losses[-1] if losses else None,
                           train_loss_mean=float(np.mean(losses)) if losses else None))
        with open(os.path.join(OUT, f"stages_{arm}.json"), "w") as f:
            json.dump(stages, f, indent=1)
        log(f"stage {stage}: {len(chunk)} reviews, {dc:.0f} CPU s ({dw:.0f} wall s), total {cpu_total / 60:.2f} "
            f"CPU min, {seen} seen, train loss mean {stages[-1]['train_loss_mean']}, {rate:.2f} CPU s/review")
        # measure when the target is reached (or would be overshot by more than half a stage next time)
        if cpu_total >= targets[0] - 0.5 * 60.0 * min(cfg["stage_cpu_minutes"], 2.0):
            targets.pop(0)
            measure(len(cfg["cpu_targets"]) - len(targets), cpu_total, wall_total, seen, stage)
    log("done")


if __name__ == "__main__":
    main(sys.argv[1])
