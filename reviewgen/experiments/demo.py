"""The seed study's demo, end to end, on the bundled sample of real IMDB reviews.

1. Data: clean, label (ceil(rating / 2)), split into disjoint generator and
   classifier parts, balance, hold out a validation share; the stage report.
2. Classifier: fine-tune (last block + head) on real reviews; exact and
   "near" metrics on the validation share.
3. Generator: fine-tune (last block + head) on ``Review of {label}. {text}``;
   perplexity on the validation share before and after.
4. For every label present, generate ``per_label`` reviews; the classifier
   checks each one; when none is accepted, generate another round (up to
   ``max_rounds``). Accepted and rejected reviews go to separate CSV files.
5. Metrics of the classifier on the generated reviews (the seed's
   "2,500 generated reviews" table), plots and a JSON summary.

Defaults are sized for a laptop CPU (a few minutes); :class:`DemoConfig`
holds every knob, and one JSON file per experiment reproduces a run.
"""
from __future__ import annotations

import csv
import dataclasses
import json
import os
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..text import data as _data
from ..core import metrics as _metrics
from ..core.config import JsonConfig, TrainingConfig

__all__ = ["DemoConfig", "run_demo"]


@dataclass
class DemoConfig(JsonConfig):
    """Every setting of one demo run (JSON-serialisable)."""

    generator: str = "smollm2"          # alias, GGUF file, HF directory or hub id
    classifier: str = "minilm"          # alias, HF directory or hub id
    data: str = "sample:imdb"           # "sample:<name>" or a CSV/JSONL/Parquet path
    scale: str = "imdb10"
    text_column: str = "text"
    rating_column: str = "rating"
    seed: int = 0
    val_fraction: float = 0.1
    classifier_train_rows: int = 480     # per run, taken from the classifier part (balanced)
    classifier_eval_rows: int = 160
    classifier_max_length: int = 128
    classifier_epochs: int = 2
    classifier_learning_rate: float = 5e-4
    generator_train_rows: int = 320
    generator_eval_rows: int = 48
    generator_max_length: int = 96
    generator_epochs: int = 1
    generator_learning_rate: float = 5e-4
    trainable_blocks: int = 1            # the seed: only the last block and the head train
    # The seed accumulated 4 batches of 8 over 100,000 reviews; a few hundred
    # reviews need every batch to be an update to move at all.
    gradient_accumulation_steps: int = 1
    per_label: int = 20                  # reviews generated per round and label (the seed: 20)
    max_rounds: int = 3                  # rounds per label while none is accepted
    max_new_tokens: int = 64
    temperature: float = 0.9
    top_k: int = 50
    top_p: float = 0.95
    # LoRA (--lora-rank > 0): adapters on lora_targets of every block of both models,
    # instead of training the last blocks; "all", or comma-separated names both families
    # know (core sites such as "q,v,o,fc2"; PEFT module names fit one family only)
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: str = "all"


def _training_config(task: str, cfg: DemoConfig, epochs: int, learning_rate: float) -> TrainingConfig:
    config = TrainingConfig.for_generator() if task == "generator" else TrainingConfig.for_classifier()
    config.num_train_epochs = epochs
    config.learning_rate = learning_rate
    config.trainable_blocks = cfg.trainable_blocks
    config.gradient_accumulation_steps = cfg.gradient_accumulation_steps
    config.seed = cfg.seed
    if cfg.lora_rank:
        config.lora_rank = cfg.lora_rank
        config.lora_alpha = cfg.lora_alpha
        config.lora_dropout = cfg.lora_dropout
        targets = [t.strip() for t in cfg.lora_targets.split(",") if t.strip()]
        config.lora_targets = targets[0] if len(targets) == 1 else targets
        config.validate()
    return config


def _load_rows(cfg: DemoConfig):
    if cfg.data.startswith("sample:"):
        return _data.load_sample(cfg.data.split(":", 1)[1])
    return cfg.data


def _take_balanced(frame, rows: int, seed: int):
    """At most `rows` rows with the same count per label (the frame is balanced)."""
    labels = sorted(frame["label"].unique())
    per_label = max(rows // max(len(labels), 1), 1)
    parts = [frame[frame["label"] == label].head(per_label) for label in labels]
    import pandas as pd

    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def _write_reviews(path: str, rows: list) -> None:
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["label", "predicted", "probability", "round", "text"])
        for row in rows:
            writer.writerow([row["label"], row["predicted"], f"{row['probability']:.4f}", row["round"],
                             row["text"]])


def _progress_printer(name: str, log: Callable[[str], None]):
    def progress(event: dict) -> None:
        if event.get("event") == "step":
            log(f"  {name} step {event['step']}/{event['total_steps']}  loss {event['loss']:.4f}  "
                f"lr {event['lr']:.2e}  {event.get('tokens_per_s', 0):.0f} tok/s")
        elif event.get("event") == "eval":
            shown = {k: round(v, 4) for k, v in event.items() if isinstance(v, float)}
            log(f"  {name} evaluation {shown}")
    return progress


def run_demo(cfg: DemoConfig, out_dir: str, log: Callable[[str], None] = print,
             plots: bool = True) -> dict:
    """Run the whole demo; returns the summary also written to out_dir/summary.json."""
    from ..tasks.classifier import Classifier
    from ..tasks.generator import Generator

    os.makedirs(out_dir, exist_ok=True)
    cfg.save(os.path.join(out_dir, "demo_config.json"))
    started = time.perf_counter()
    summary: dict = {"config": dataclasses.asdict(cfg)}

    # 1. data -----------------------------------------------------------------
    generator_part, classifier_part = _data.prepare_generator_and_classifier(
        _load_rows(cfg), cfg.scale, text_column=cfg.text_column, rating_column=cfg.rating_column,
        seed=cfg.seed, val_fraction=cfg.val_fraction)
    for part in (generator_part, classifier_part):
        if part.report.source == "<DataFrame>":
            part.report.source = cfg.data
    log(str(generator_part.report))
    log(str(classifier_part.report))
    summary["data"] = {"generator": generator_part.report.to_dict(),
                       "classifier": classifier_part.report.to_dict()}
    labels = sorted(int(k) for k, n in classifier_part.report.labels_after_balancing.items() if n > 0)

    # 2. classifier -----------------------------------------------------------
    log(f"classifier: loading {cfg.classifier}")
    classifier = Classifier.from_pretrained(cfg.classifier, labels=labels,
                                            max_length=cfg.classifier_max_length, seed=cfg.seed)
    clf_train = _take_balanced(classifier_part.train, cfg.classifier_train_rows, cfg.seed)
    clf_eval = _take_balanced(classifier_part.val, cfg.classifier_eval_rows, cfg.seed)
    clf_result = classifier.train(
        clf_train["text"].tolist(), clf_train["label"].tolist(), clf_eval["text"].tolist(),
        clf_eval["label"].tolist(),
        config=_training_config("classifier", cfg, cfg.classifier_epochs, cfg.classifier_learning_rate),
        output_dir=os.path.join(out_dir, "classifier_checkpoints"),
        progress=_progress_printer("classifier", log))
    clf_metrics = classifier.evaluate(clf_eval["text"].tolist(), clf_eval["label"].tolist())
    log(f"classifier on {len(clf_eval)} validation reviews: accuracy {clf_metrics['accuracy']:.3f}, "
        f"near accuracy {clf_metrics['near_accuracy']:.3f}, macro F1 {clf_metrics['macro_f1']:.3f}")
    summary["classifier"] = {"validation": _jsonable(clf_metrics), "history": clf_result.history}

    # 3. generator ------------------------------------------------------------
    log(f"generator: loading {cfg.generator}")
    generator = Generator.from_pretrained(cfg.generator, max_length=cfg.generator_max_length)
    gen_train = _take_balanced(generator_part.train, cfg.generator_train_rows, cfg.seed)
    gen_eval = _take_balanced(generator_part.val, cfg.generator_eval_rows, cfg.seed)
    before = generator.evaluate(gen_eval["generator_text"].tolist())
    log(f"generator perplexity before fine-tuning: {before['perplexity']:.2f}")
    gen_result = generator.train(
        gen_train["generator_text"].tolist(), gen_eval["generator_text"].tolist(),
        config=_training_config("generator", cfg, cfg.generator_epochs, cfg.generator_learning_rate),
        output_dir=os.path.join(out_dir, "generator_checkpoints"),
        progress=_progress_printer("generator", log))
    after = generator.evaluate(gen_eval["generator_text"].tolist())
    log(f"generator perplexity after fine-tuning: {after['perplexity']:.2f}")
    summary["generator"] = {"before": before, "after": after, "history": gen_result.history}

    # 4. generate, check, regenerate ----------------------------------------------
    accepted, rejected = [], []
    for label in labels:
        for round_index in range(1, cfg.max_rounds + 1):
            texts = generator.generate(label=label, n=cfg.per_label, max_new_tokens=cfg.max_new_tokens,
                                       temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p,
                                       seed=cfg.seed * 1000003 + label * 101 + round_index)
            texts = [t if t else "(empty)" for t in texts]
            probabilities = classifier.predict_proba(texts)
            predicted = [classifier.labels[i] for i in probabilities.argmax(axis=1)]
            kept_this_round = 0
            for text, guess, probs in zip(texts, predicted, probabilities):
                row = {"label": label, "predicted": guess, "probability": float(probs.max()),
                       "round": round_index, "text": text}
                if guess == label:
                    accepted.append(row)
                    kept_this_round += 1
                else:
                    rejected.append(row)
            log(f"label {label} round {round_index}: {kept_this_round}/{len(texts)} accepted")
            if kept_this_round:
                break
    _write_reviews(os.path.join(out_dir, "accepted.csv"), accepted)
    _write_reviews(os.path.join(out_dir, "rejected.csv"), rejected)

    # 5. metrics on the generated reviews ----------------------------------------
    generated = accepted + rejected
    y_true = np.array([r["label"] for r in generated])
    y_pred = np.array([r["predicted"] for r in generated])
    exact = _metrics.classification_report(y_true, y_pred, labels=labels)
    near = _metrics.classification_report(y_true, y_pred, labels=labels, near=True)
    summary["generated"] = {"count": len(generated), "accepted": len(accepted), "rejected": len(rejected),
                            "exact": _jsonable(exact.as_dict()), "near": _jsonable(near.as_dict())}
    log(f"generated {len(generated)} reviews: {len(accepted)} accepted, {len(rejected)} rejected; "
        f"classifier agreement {exact.accuracy:.3f}, near {near.accuracy:.3f}")

    if plots:
        _save_plots(out_dir, classifier_part.report, clf_metrics, exact, labels, gen_result, clf_result)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    with open(os.path.join(out_dir, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(_jsonable(summary), f, indent=2)
    log(f"done in {summary['seconds']} s; files in {out_dir}")
    return summary


def _save_plots(out_dir, report, clf_metrics, generated_metrics, labels, gen_result, clf_result) -> None:
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from . import plots

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    plots.label_counts(report, ax=axes[0])
    plots.confusion_matrix(clf_metrics["confusion_matrix"], labels, ax=axes[1], title="classifier, real reviews")
    plots.confusion_matrix(generated_metrics.confusion, labels, ax=axes[2],
                           title="classifier, generated reviews")
    fig.tight_layout()
    fig.savefig(os.path.join(out_dir, "demo.png"), dpi=110)
    plt.close(fig)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value
