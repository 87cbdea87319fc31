"""Experiments: a classifier fine-tune with model selection, and the seed's
hyperparameter sweep (one value varied, k disjoint balanced samples, averaged).

Each experiment is one dataclass, saved beside its results as JSON, so one
config file reproduces one run:

    cd notebooks && reviewgen study classifier --config experiments/minilm_sst5.json --out results/minilm_sst5
    reviewgen study baseline --config experiments/minilm_sst5.json --out results/minilm_sst5
    reviewgen study sweep --config my_sweep.json --out runs/sweep

Notebooks load the JSON results and plot them (reviewgen.experiments.plots).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from ..text import data as _data
from ..core.config import JsonConfig, TrainingConfig

__all__ = ["ClassifierStudy", "SweepStudy", "run_classifier_study", "run_baseline", "run_sweep", "study_split"]


def _save_json(path: str, value) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(value, f, indent=2, default=_plain)
    os.replace(tmp, path)


def _plain(value):
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass
class ClassifierStudy(JsonConfig):
    """Fine-tune a classifier on `train`, keep the best epoch on `dev`, report on `test`."""

    model: str = "minilm"
    train: str = ""
    dev: str = ""                     # empty: hold out val_fraction of train
    test: str = ""
    scale: str = "imdb10"
    balance_train: bool = True        # the seed balances; SST-5's usual protocol does not
    max_train_per_label: int = 0      # 0: every row
    max_eval: int = 0                 # cap dev and test rows (0: all)
    balance_eval: bool = False        # balance dev/test too (the study reports on balanced sets)
    max_length: int = 128
    val_fraction: float = 0.1
    seed: int = 0
    training: TrainingConfig = field(default_factory=TrainingConfig.for_classifier)

    _nested = {"training": TrainingConfig}


def _cap(frame, cap: int, seed: int, per_label: bool):
    if cap <= 0:
        return frame
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("label", sort=False).head(cap) if per_label else shuffled.head(cap)


def _labelled(path: str, scale: str, seed: int, balance: bool):
    prepared = _data.prepare(path, scale, seed=seed, val_fraction=0.0, balance=balance)
    return prepared.train, prepared.report


def study_split(study: ClassifierStudy):
    """(train, dev, test, report of train) as the study defines them."""
    if study.dev:
        train, train_report = _labelled(study.train, study.scale, study.seed, balance=study.balance_train)
        dev, _ = _labelled(study.dev, study.scale, study.seed, balance=study.balance_eval)
    else:
        prepared = _data.prepare(study.train, study.scale, seed=study.seed, val_fraction=study.val_fraction,
                                 balance=study.balance_train)
        train, dev, train_report = prepared.train, prepared.val, prepared.report
    test, _ = _labelled(study.test, study.scale, study.seed, balance=study.balance_eval)
    train = _cap(train, study.max_train_per_label, study.seed, per_label=True)
    dev = _cap(dev, study.max_eval, study.seed, per_label=False)
    test = _cap(test, study.max_eval, study.seed, per_label=False)
    return train, dev, test, train_report


def run_baseline(study: ClassifierStudy, out_dir: str, log: Callable[[str], None] = print) -> dict:
    """TF-IDF + logistic regression on exactly the study's train and test rows
    (needs scikit-learn)."""
    from ..tasks.baselines import tfidf_logistic_regression

    os.makedirs(out_dir, exist_ok=True)
    started = time.perf_counter()
    train, _, test, _ = study_split(study)
    figures = tfidf_logistic_regression(train["text"].tolist(), train["label"].to_numpy(),
                                        test["text"].tolist(), test["label"].to_numpy(), seed=study.seed)
    figures["rows"] = {"train": len(train), "test": len(test)}
    figures["seconds"] = round(time.perf_counter() - started, 1)
    _save_json(os.path.join(out_dir, "baseline.json"), figures)
    log(f"TF-IDF + logistic regression on the same split: accuracy {figures['accuracy']:.4f}, "
        f"near accuracy {figures['near_accuracy']:.4f}, macro F1 {figures['macro_f1']:.4f}, "
        f"near macro F1 {figures['near_macro_f1']:.4f}")
    return figures


def run_classifier_study(study: ClassifierStudy, out_dir: str,
                         log: Callable[[str], None] = print) -> dict:
    from ..tasks.classifier import Classifier

    os.makedirs(out_dir, exist_ok=True)
    study.save(os.path.join(out_dir, "study.json"))
    started = time.perf_counter()
    train, dev, test, train_report = study_split(study)
    log(str(train_report))
    log(f"rows: train {len(train)}, dev {len(dev)}, test {len(test)}")
    labels = sorted(int(k) for k in train["label"].unique())

    classifier = Classifier.from_pretrained(study.model, labels=labels, max_length=study.max_length,
                                            seed=study.seed)

    def progress(event):
        if event.get("event") == "step" and (event["step"] % 20 == 0 or event["step"] == event["total_steps"]):
            log(f"  step {event['step']}/{event['total_steps']} loss {event['loss']:.4f} "
                f"{event.get('tokens_per_s', 0):.0f} tok/s")
        elif event.get("event") == "eval":
            log(f"  epoch {event.get('epoch')}: " + ", ".join(
                f"{k} {v:.4f}" for k, v in event.items() if isinstance(v, float)))

    result = classifier.train(train["text"].tolist(), train["label"].tolist(), dev["text"].tolist(),
                              dev["label"].tolist(), config=study.training,
                              output_dir=os.path.join(out_dir, "checkpoints"), progress=progress)
    report = classifier.evaluate(test["text"].tolist(), test["label"].tolist())
    summary = {
        "study": dataclasses.asdict(study), "rows": {"train": len(train), "dev": len(dev), "test": len(test)},
        "best_epoch": result.best_epoch, "history": result.history, "test": report,
        "seconds": round(time.perf_counter() - started, 1),
    }
    _save_json(os.path.join(out_dir, "results.json"), summary)
    log(f"test: accuracy {report['accuracy']:.4f}, near accuracy {report['near_accuracy']:.4f}, "
        f"macro F1 {report['macro_f1']:.4f}, near macro F1 {report['near_macro_f1']:.4f} "
        f"({summary['seconds']} s)")
    return summary


@dataclass
class SweepStudy(JsonConfig):
    """The seed's hyperparameter study: `parameter` (a TrainingConfig field) takes
    each of `values`; for every value the same k disjoint balanced samples of
    n rows are trained and evaluated (eval_fraction of each sample held out),
    and the k results are averaged."""

    task: str = "classifier"          # "classifier" or "generator"
    model: str = "minilm"
    data: str = "sample:imdb"
    scale: str = "imdb10"
    parameter: str = "learning_rate"
    values: list = field(default_factory=lambda: [5e-5, 5e-4])
    samples: int = 3                  # the seed: 3
    rows_per_sample: int = 240        # the seed: 50,000
    eval_fraction: float = 0.2        # the seed: 20%
    max_length: int = 96
    seed: int = 0
    training: Optional[TrainingConfig] = None

    _nested = {"training": TrainingConfig}


def run_sweep(study: SweepStudy, out_dir: str, log: Callable[[str], None] = print) -> dict:
    from ..tasks.classifier import Classifier
    from ..tasks.generator import Generator

    if study.task not in ("classifier", "generator"):
        raise ValueError(f"task must be 'classifier' or 'generator', got {study.task!r}")
    base = study.training or (TrainingConfig.for_classifier() if study.task == "classifier"
                              else TrainingConfig.for_generator())
    if study.parameter not in {f.name for f in dataclasses.fields(TrainingConfig)}:
        raise ValueError(f"{study.parameter!r} is not a TrainingConfig field")
    os.makedirs(out_dir, exist_ok=True)
    study.save(os.path.join(out_dir, "sweep.json"))
    source = (_data.load_sample(study.data.split(":", 1)[1]) if study.data.startswith("sample:") else study.data)
    cleaned = _data.prepare(source, study.scale, seed=study.seed, val_fraction=0.0).cleaned
    samples = _data.sample_disjoint_balanced(cleaned, study.samples, study.rows_per_sample, seed=study.seed)
    results: dict = {}
    for value in study.values:
        runs = []
        for index, sample in enumerate(samples):
            train, held_out = _data.split_validation(sample, study.eval_fraction, seed=study.seed + index)
            config = dataclasses.replace(base, **{study.parameter: value})
            config.validate()
            if study.task == "classifier":
                labels = sorted(int(k) for k in sample["label"].unique())
                model = Classifier.from_pretrained(study.model, labels=labels,
                                                   max_length=study.max_length, seed=study.seed)
                result = model.train(train["text"].tolist(), train["label"].tolist(),
                                     held_out["text"].tolist(), held_out["label"].tolist(), config=config)
            else:
                model = Generator.from_pretrained(study.model, max_length=study.max_length)
                result = model.train(train["generator_text"].tolist(), held_out["generator_text"].tolist(),
                                     config=config)
            best = min(result.history, key=lambda h: h.get("eval_loss", float("inf")))
            runs.append({k: v for k, v in best.items() if isinstance(v, (int, float))})
            log(f"{study.parameter}={value} sample {index + 1}/{len(samples)}: eval_loss {best['eval_loss']:.4f}")
        keys = sorted(set.intersection(*(set(r) for r in runs)))
        results[str(value)] = {"runs": runs,
                               "mean": {k: float(np.mean([r[k] for r in runs])) for k in keys},
                               "std": {k: float(np.std([r[k] for r in runs])) for k in keys}}
        _save_json(os.path.join(out_dir, "results.json"), {"study": dataclasses.asdict(study), "results": results})
    return results
