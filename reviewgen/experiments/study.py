"""Experiments: a classifier fine-tune with model selection, and the seed's
hyperparameter sweep (one value varied, k disjoint balanced samples, averaged).

Each experiment is one dataclass, saved beside its results as JSON, so one
config file reproduces one run:

    cd notebooks && reviewgen study classifier --config experiments/minilm_sst5.json --out results/minilm_sst5
    reviewgen study baseline --config experiments/minilm_sst5.json --out results/minilm_sst5
    reviewgen study sweep --config my_sweep.json --out runs/sweep

The configs of notebooks/experiments/ read the project's copy of the full data
(../../shared/data); :func:`with_data_root` points a study at another copy, and
:func:`sample_study` runs it on the bundled sample instead.

Notebooks load the JSON results and plot them (reviewgen.experiments.plots).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import dataclass, field
from collections.abc import Mapping
from typing import Callable, Optional

import numpy as np

from ..text import data as _data
from ..core.config import JsonConfig, TrainingConfig

__all__ = ["ClassifierStudy", "SweepStudy", "SweepResults", "SweepInterrupted", "SweepTrialsFailed",
           "run_classifier_study", "run_baseline", "run_sweep", "study_split", "with_data_root", "sample_study", "SWEEP_PARAMETERS"]


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
    text_column: str = "text"
    rating_column: str = "rating"
    balance_train: bool = True        # the seed balances; SST-5's usual protocol does not
    max_train_per_label: int = 0      # 0: every row
    max_eval: int = 0                 # cap dev and test rows (0: all)
    balance_eval: bool = False        # balance dev/test too (the study reports on balanced sets)
    max_length: int = 128
    val_fraction: float = 0.1
    seed: int = 0
    training: TrainingConfig = field(default_factory=TrainingConfig.for_classifier)

    _nested = {"training": TrainingConfig}


def with_data_root(study: ClassifierStudy, data_root: str) -> ClassifierStudy:
    """A copy of `study` reading its files from `data_root`: each of train, dev and
    test keeps its last two parts (``<data set>/<file>``, e.g. ``imdb-aclimdb/train.csv``
    of ``../../shared/data/imdb-aclimdb/train.csv``). Raises DataFileError naming
    the missing files, where the full data sets come from and that the bundled
    samples work without them (:func:`sample_study`)."""
    moved = {}
    for name in ("train", "dev", "test"):
        path = getattr(study, name)
        if path:
            moved[name] = os.path.join(data_root, *path.replace("\\", "/").split("/")[-2:])
    missing = [path for path in moved.values() if not os.path.isfile(path)]
    if missing:
        raise _data.DataFileError(", ".join(missing), "no such file\n" + _data.full_data_hint())
    return dataclasses.replace(study, **moved)


def sample_study(study: ClassifierStudy, out_dir: str, test_fraction: float = 0.2) -> ClassifierStudy:
    """A copy of `study` on the bundled sample of its scale (imdb10: ``sample:imdb``,
    sst5: ``sample:sst5``): the sample's raw rows (a repeated text once) are split,
    stratified by rating (seed ``study.seed``), into ``out_dir/train.csv`` and ``out_dir/test.csv``
    (`test_fraction` of each rating); dev is left empty, so ``val_fraction`` of
    train picks the best epoch. The copy names those files, so its saved
    study.json reproduces the run."""
    names = {scale: name for name, (_, scale) in _data.SAMPLE_NAMES.items()}
    if study.scale not in names:
        raise ValueError(f"no bundled sample on scale {study.scale!r}; samples: "
                         + ", ".join(f"{name} ({scale})" for scale, name in names.items()))
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    rows = _data.load_sample(names[study.scale]).drop_duplicates("text")  # no text on both sides
    test = rows.groupby("rating", sort=True, group_keys=False).sample(frac=test_fraction, random_state=study.seed)
    train = rows.drop(index=test.index)
    os.makedirs(out_dir, exist_ok=True)
    paths = {"train": os.path.join(out_dir, "train.csv"), "test": os.path.join(out_dir, "test.csv")}
    train.to_csv(paths["train"], index=False)
    test.sort_index().to_csv(paths["test"], index=False)
    return dataclasses.replace(study, dev="", **paths)


def _cap(frame, cap: int, seed: int, per_label: bool):
    if cap <= 0:
        return frame
    shuffled = frame.sample(frac=1.0, random_state=seed)
    return shuffled.groupby("label", sort=False).head(cap) if per_label else shuffled.head(cap)


def _labelled(path: str, study: "ClassifierStudy", balance: bool):
    prepared = _data.prepare(path, study.scale, text_column=study.text_column, rating_column=study.rating_column,
                             seed=study.seed, val_fraction=0.0, balance=balance)
    return prepared.train, prepared.report


def study_split(study: ClassifierStudy):
    """(train, dev, test, report of train) as the study defines them."""
    if study.dev:
        train, train_report = _labelled(study.train, study, balance=study.balance_train)
        dev, _ = _labelled(study.dev, study, balance=study.balance_eval)
    else:
        prepared = _data.prepare(study.train, study.scale, text_column=study.text_column,
                                 rating_column=study.rating_column, seed=study.seed,
                                 val_fraction=study.val_fraction, balance=study.balance_train)
        train, dev, train_report = prepared.train, prepared.val, prepared.report
    test, _ = _labelled(study.test, study, balance=study.balance_eval)
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
                         log: Callable[[str], None] = print, keep_checkpoints: bool = False) -> dict:
    """Fine-tune on the study's train rows (best epoch on dev), report on test;
    results.json, and the fine-tuned classifier as a Hugging Face directory in
    out_dir/model (the checkpoints are removed unless keep_checkpoints)."""
    import shutil

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
    classifier.save(os.path.join(out_dir, "model"))
    if not keep_checkpoints:
        shutil.rmtree(os.path.join(out_dir, "checkpoints"), ignore_errors=True)
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
    text_column: str = "text"
    rating_column: str = "rating"
    parameter: str = "learning_rate"
    values: list = field(default_factory=lambda: [5e-5, 5e-4])
    samples: int = 3                  # the seed: 3
    rows_per_sample: int = 240        # the seed: 50,000
    eval_fraction: float = 0.2        # the seed: 20%
    max_length: int = 96
    seed: int = 0
    training: Optional[TrainingConfig] = None

    _nested = {"training": TrainingConfig}


# TrainingConfig field -> the core sweep's parameter (rg_sweep.h)
SWEEP_PARAMETERS = {
    "num_train_epochs": "epochs", "learning_rate": "learning_rate", "adam_beta1": "beta1",
    "adam_beta2": "beta2", "per_device_train_batch_size": "batch_size", "weight_decay": "weight_decay",
    "warmup_ratio": "warmup_ratio", "trainable_blocks": "trainable_blocks",
    "gradient_accumulation_steps": "grad_accum", "max_grad_norm": "max_grad_norm",
}
JOURNAL_NAME = "sweep.journal"
RESULTS_NAME = "results.json"
_SWEEP_QUIET = 1 << 30  # STEP events only at epoch ends: Python hears once per run, not per step


class SweepResults(Mapping):
    """The results of :func:`run_sweep`.

    ``frame``: a pandas DataFrame, one row per (value, sample, epoch): value,
    sample, epoch, step, train_loss, eval_loss and the eval metrics
    (eval_perplexity for a generator; eval_accuracy, eval_macro_f1,
    eval_near_accuracy, eval_near_macro_f1 for a classifier), status
    ("ok", or "nonfinite" for a run that diverged) and best_epoch.
    ``curves``: mean and spread (std over samples) per (value, epoch).
    ``best``: each run's best epoch (lowest eval loss), one row per (value, sample).
    ``summary``: mean and spread of ``best`` per value.
    As a mapping (str(value) -> {"runs", "mean", "std"}) it is the per-value
    dict of best-epoch figures earlier versions returned.
    ``finished`` is False only for the partial results of an interrupted sweep.
    """

    def __init__(self, study: "SweepStudy", runs: list, finished: bool):
        import pandas as pd

        self.study, self.parameter, self.finished = study, study.parameter, finished
        rows, best_rows = [], []
        for run in runs:
            value = study.values[run["value_index"]]
            for entry in run["history"]:
                rows.append(dict(value=value, sample=run["sample_index"], **entry, status=run["status"],
                                 best_epoch=run["best_epoch"] or None))
            if run["history"]:
                best = min(run["history"], key=lambda h: h.get("eval_loss", float("inf")))
                best_rows.append(dict(value=value, sample=run["sample_index"], **best))
        columns = ["value", "sample", "epoch", "step", "train_loss", "eval_loss"]
        self.frame = pd.DataFrame(rows)
        if len(self.frame):
            extra = [c for c in self.frame.columns if c not in columns]
            self.frame = self.frame[[c for c in columns if c in self.frame.columns] + extra]
        self.best = pd.DataFrame(best_rows)
        numeric = [c for c in self.frame.columns if c not in ("value", "sample", "epoch", "status", "best_epoch")]
        if len(self.frame):
            grouped = self.frame.groupby(["value", "epoch"], sort=True)[numeric]
            self.curves = pd.concat({"mean": grouped.mean(), "std": grouped.std(ddof=0)}, axis=1)
            metrics = [c for c in self.best.columns if c not in ("value", "sample", "epoch")]
            grouped = self.best.groupby("value", sort=True)[metrics]
            self.summary = pd.concat({"mean": grouped.mean(), "std": grouped.std(ddof=0)}, axis=1)
        else:
            self.curves = self.summary = pd.DataFrame()
        self._by_value: dict = {}
        for value in study.values:
            chosen = [r for r in best_rows if r["value"] == value]
            if not chosen:
                continue
            figures = [{k: v for k, v in r.items() if k not in ("value", "sample")
                        and isinstance(v, (int, float))} for r in chosen]
            keys = sorted(set.intersection(*(set(r) for r in figures)))
            self._by_value[str(value)] = {
                "runs": figures,
                "mean": {k: float(np.mean([r[k] for r in figures])) for k in keys},
                "std": {k: float(np.std([r[k] for r in figures])) for k in keys}}

    def __getitem__(self, key):
        return self._by_value[key]

    def __iter__(self):
        return iter(self._by_value)

    def __len__(self):
        return len(self._by_value)

    def to_json(self) -> dict:
        return {"study": dataclasses.asdict(self.study), "finished": self.finished,
                "results": dict(self._by_value), "epochs": self.frame.to_dict(orient="records")}

    def plot(self, metric: str = "eval_loss", axes=None):
        """The seed's figures: `metric` per epoch for each value (mean and spread
        over the samples), and the best epoch's `metric` against the value."""
        from . import plots

        return plots.sweep_figures(self, metric=metric, axes=axes)


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped :func:`run_sweep`; ``results`` holds the finished runs only
    (``finished=False``); the journal lets the next call go on from there."""

    def __init__(self, results: SweepResults):
        super().__init__(f"sweep interrupted: {len(results.best)} runs finished")
        self.results = results


def _sweep_model_and_data(study: "SweepStudy", samples: list, base: TrainingConfig):
    """The model every run starts from, and each sample's (train, eval) arrays."""
    from ..core.training import dataset_arrays
    from ..tasks.classifier import Classifier
    from ..tasks.generator import Generator

    splits = [_data.split_validation(sample, study.eval_fraction, seed=study.seed + index)
              for index, sample in enumerate(samples)]
    bs = base.per_device_train_batch_size
    data = []
    if study.task == "classifier":
        labels = sorted({int(k) for sample in samples for k in sample["label"].unique()})
        model = Classifier.from_pretrained(study.model, labels=labels, max_length=study.max_length, seed=study.seed)
        for train, held_out in splits:
            pair = []
            for part in (train, held_out):
                if not len(part):
                    pair.append(None)
                    continue
                batches = model._batches(model.encode(part["text"].tolist()),
                                         model._targets(part["label"].tolist(), "labels"), bs)
                pair.append(dataset_arrays(batches, True, "sample")[0])
            data.append(tuple(pair))
        label_values = np.asarray(model.labels, np.int32) if model._integer_labels() else None
        return model.model, data, label_values
    generator = Generator.from_pretrained(study.model, max_length=study.max_length)
    for train, held_out in splits:
        data.append(tuple(dataset_arrays(generator.batches(part["generator_text"].tolist(), bs), False,
                                         "sample")[0] if len(part) else None
                          for part in (train, held_out)))
    return generator.model, data, None


class SweepTrialsFailed(RuntimeError):
    """Trials of a Ray sweep failed twice (the first try and one retry).
    ``failures``: (value, sample index, error text) of each; ``results``: the
    sweep's finished runs (journaled: a restart runs only the failed ones)."""

    def __init__(self, results: "SweepResults", failures: list):
        lines = "; ".join(f"{value} sample {sample + 1}: {error}" for value, sample, error in failures)
        super().__init__(f"{len(failures)} sweep trial(s) failed twice and are not in the results: {lines}")
        self.results, self.failures = results, failures


# Test hook of the Ray executor, read by the driver: "v,s,n;..." makes trial
# (value index v, sample index s) raise on its first n tries (retry and report).
_FAULTS_VARIABLE = "REVIEWGEN_SWEEP_FAULTS"


def _injected_faults(where: tuple) -> int:
    for fault in filter(None, os.environ.get(_FAULTS_VARIABLE, "").split(";")):
        v, k, tries = (int(x) for x in fault.split(","))
        if (v, k) == tuple(where):
            return tries
    return 0


def _ray_trial(model_blob: dict, config: dict, parameter: str, value: float, sample: tuple, attempt: int,
               faults: int) -> dict:
    """One (value, sample) trial on a Ray worker: a one-run core Sweep of that
    value and that sample's data from the sweep's initial parameters, which
    is the run the whole sweep makes (rg_sweep_record)."""
    from .._core import Sweep, bf16_supported
    from ..core.models import Model

    if attempt <= faults:
        raise RuntimeError(f"injected fault ({_FAULTS_VARIABLE}) on try {attempt}")
    model = Model(model_blob["config"], initialize=False)
    model.parameters[...] = model_blob["parameters"]
    if model_blob.get("precision") == "bf16" and bf16_supported():  # a worker without it: fp32
        model.set_precision("bf16")
    if model_blob["untie"] is not None:
        model.set_trainable(*model_blob["untie"])
    sweep = Sweep(model.core, config, parameter, [value], [sample])
    try:
        sweep.run()
        (run,) = sweep.runs()
    finally:
        sweep.close()
    return run


def _run_on_ray(sweep, study: "SweepStudy", model_blob: dict, config: dict, values: list, data: list,
                on_run: Callable, ray_address: Optional[str], resources: Optional[dict], log) -> list:
    """Every trial the journal does not hold, as Ray tasks; each result is
    journaled by the driver as it arrives; a failed trial is tried once more,
    then reported. Returns the failures [(value, sample index, error)]."""
    try:
        import ray
    except ImportError as error:
        raise ImportError("executor='ray' needs Ray: pip install 'reviewgen[ray]'") from error
    if not ray.is_initialized():
        ray.init(address=ray_address, log_to_driver=False, include_dashboard=False)
    resources = dict(resources or {"num_cpus": 1})
    trial = ray.remote(max_retries=0)(_ray_trial).options(**resources)
    blob, cfg = ray.put(model_blob), ray.put(config)
    parameter = SWEEP_PARAMETERS[study.parameter]
    pending = {}

    def submit(run: dict, attempt: int) -> None:
        where = (run["value_index"], run["sample_index"])
        ref = trial.remote(blob, cfg, parameter, values[where[0]], data[where[1]], attempt, _injected_faults(where))
        pending[ref] = (run, attempt)

    todo = [run for run in sweep.runs() if not run["done"]]
    log(f"{len(todo)} trial(s) to Ray ({ray_address or 'local'}), each with {resources}")
    for run in todo:
        submit(run, 1)
    failures = []
    try:
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            run, attempt = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except Exception as error:  # the task raised, or its worker died
                text = str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__
                if attempt < 2:
                    log(f"{study.parameter}={values[run['value_index']]} sample {run['sample_index'] + 1}: "
                        f"failed ({text}), retrying once")
                    submit(run, attempt + 1)
                else:
                    failures.append((study.values[run["value_index"]], run["sample_index"], text))
                continue
            result.update(value_index=run["value_index"], sample_index=run["sample_index"])
            sweep.record(result)
            on_run(result)
    finally:  # Ctrl-C or an error here: the trials still out are cancelled, not left running
        for ref in pending:
            ray.cancel(ref)
    return failures


def run_sweep(study: SweepStudy, out_dir: str, log: Callable[[str], None] = print, *, executor: str = "local",
              ray_address: Optional[str] = None, resources: Optional[dict] = None) -> SweepResults:
    """The seed's sweep in one call into the C core (rg_sweep): for each value,
    every sample is trained from the same initial parameters (kept in memory)
    and evaluated after every epoch. Each finished run is journaled in
    ``out_dir/sweep.journal``, so a sweep that was killed, or stopped with
    Ctrl-C, goes on from its last finished run when called again with the same
    study and ends with the same results. Returns :class:`SweepResults`
    (DataFrames of every epoch, means and spreads); ``results.json`` holds
    the same figures. Ctrl-C raises :class:`SweepInterrupted` (a
    KeyboardInterrupt) whose results hold only the finished runs.

    executor="ray": each (value, sample) trial not in the journal goes to a
    Ray cluster (``ray_address``; None: the cluster ``ray.init()`` finds or
    starts) as a task with ``resources`` (Ray's options, default
    ``{"num_cpus": 1}``; e.g. ``{"num_cpus": 4, "num_gpus": 1}``); the
    driver journals each result as it arrives, so the journal, results.json
    and the DataFrames are those of a local sweep, and a restart skips every
    finished trial. A trial that fails is tried once more, then reported:
    :class:`SweepTrialsFailed` once every other trial is done. Needs
    ``pip install 'reviewgen[ray]'``."""
    from .._core import Sweep
    from ..core.training import apply_precision, core_config

    if study.task not in ("classifier", "generator"):
        raise ValueError(f"task must be 'classifier' or 'generator', got {study.task!r}")
    base = study.training or (TrainingConfig.for_classifier() if study.task == "classifier"
                              else TrainingConfig.for_generator())
    if study.parameter not in {f.name for f in dataclasses.fields(TrainingConfig)}:
        raise ValueError(f"{study.parameter!r} is not a TrainingConfig field")
    if study.parameter not in SWEEP_PARAMETERS:
        raise ValueError(f"{study.parameter!r} cannot be swept by the core; sweepable: "
                         f"{', '.join(SWEEP_PARAMETERS)}")
    if not study.values:
        raise ValueError("the sweep needs at least one value")
    for value in study.values:  # every value must make a valid config
        dataclasses.replace(base, **{study.parameter: value}).validate()
    base.validate()
    os.makedirs(out_dir, exist_ok=True)
    study.save(os.path.join(out_dir, "sweep.json"))
    cleaned = _data.prepare(_data.load_source(study.data), study.scale, text_column=study.text_column,
                            rating_column=study.rating_column, seed=study.seed, val_fraction=0.0).cleaned
    samples = _data.sample_disjoint_balanced(cleaned, study.samples, study.rows_per_sample, seed=study.seed)
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    model, data, label_values = _sweep_model_and_data(study, samples, base)
    model_blob = None
    if executor == "ray":  # what a worker needs to rebuild the initial model
        import copy

        model_blob = dict(config=copy.deepcopy(model.config), parameters=np.array(model.parameters),
                          untie=(base.trainable_blocks, "untie") if base.head_policy == "untie" else None)
    if base.head_policy == "untie":
        model.set_trainable(base.trainable_blocks, base.head_policy)  # the core sweep wants it untied first
    apply_precision(model.core, base, stacklevel=2)  # bf16: every trial's products
    if model_blob is not None:
        model_blob["precision"] = model.precision
    config = core_config(base, base.per_device_train_batch_size, base.per_device_eval_batch_size)
    config.update(shuffle=1, apply_freezing=1, progress_every=_SWEEP_QUIET)
    if label_values is not None:
        config["label_values"] = label_values
    values = [float(v) for v in study.values]

    def on_run(run: dict) -> None:
        value = study.values[run["value_index"]]
        best = min(run["history"], key=lambda h: h.get("eval_loss", float("inf")), default={})
        figure = f"eval_loss {best['eval_loss']:.4f}" if "eval_loss" in best else "no evaluation"
        log(f"{study.parameter}={value} sample {run['sample_index'] + 1}/{len(samples)}: {figure}"
            + ("" if run["status"] == "ok" else f" ({run['status']})"))

    sweep = Sweep(model.core, config, SWEEP_PARAMETERS[study.parameter], values, data,
                  journal_path=os.path.join(out_dir, JOURNAL_NAME), on_run=on_run)
    try:
        done_before = sum(run["done"] for run in sweep.runs())
        if done_before:
            log(f"{done_before} of {len(values) * len(samples)} runs read from the journal")
        failures = []
        try:
            if executor == "ray":
                failures = _run_on_ray(sweep, study, model_blob, config, values, data, on_run, ray_address,
                                       resources, log)
            else:
                sweep.run()
        except KeyboardInterrupt:
            partial = SweepResults(study, [r for r in sweep.runs() if r["done"]], finished=False)
            _save_json(os.path.join(out_dir, RESULTS_NAME), partial.to_json())
            raise SweepInterrupted(partial) from None
        runs = sweep.runs()
    finally:
        sweep.close()  # releases the journal's lock
    results = SweepResults(study, runs, finished=all(run["done"] for run in runs))
    _save_json(os.path.join(out_dir, RESULTS_NAME), results.to_json())
    if failures:
        raise SweepTrialsFailed(results, failures)
    return results
