"""The seed study as steps a user runs on their own data, from Python or the CLI.

    prepare_data(PrepareConfig(data="reviews.csv", scale="1-2:1,3-4:2,5:3"), "runs/data")
    clf = train_classifier(TrainClassifierConfig(data="runs/data"), "runs/classifier")
    gen = train_generator(TrainGeneratorConfig(data="runs/data", model="smollm2"), "runs/generator")
    out = generate(GenerateConfig(generator="runs/generator/model", classifier="runs/classifier/model"),
                   "runs/generated")
    evaluate_generated(EvaluateGeneratedConfig(generated="runs/generated/accepted.csv",
                                               real="test.csv"), "runs/quality")
    clf.history, clf.per_class, out.accepted               # pandas DataFrames

Each step has one config dataclass (JSON; the CLI's flags are its fields), checks
its inputs before any long work (the models resolve, the files and columns exist,
the scale fits the data), refuses a non-empty output folder unless ``overwrite``
or ``resume``, and writes the files that reviewgen.experiments.runs lists for
its kind, with the manifest that says whether it finished. Models are saved as
Hugging Face directories (``model/``); the training checkpoints are removed at
the end unless ``keep_checkpoints``. Ctrl-C raises :class:`StepInterrupted`
after writing what was finished (the history so far and the last checkpoint;
the reviews generated so far), with a message that says where it is; the
manifest then stays ``finished: false``.
"""
from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from typing import Callable, Optional


from ..core.config import JsonConfig, TrainingConfig
from ..core.files import jsonable, write_json
from . import runs
from .progress import Progress

__all__ = ["PrepareConfig", "TrainClassifierConfig", "TrainGeneratorConfig", "GenerateConfig",
           "EvaluateClassifierConfig", "EvaluateGeneratedConfig", "StepResult", "StepInterrupted",
           "prepare_data", "train_classifier", "train_generator", "generate", "evaluate_classifier",
           "evaluate_generated", "sweep", "load_labelled", "check_field_types", "format_record", "CONDITIONING_FILE"]

# Beside a saved generator's weights: how it was asked for reviews, so that
# `generate` prompts it the way it was trained.
CONDITIONING_FILE = "reviewgen_conditioning.json"


class StepInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped a step; ``message`` says what was kept and where."""

    def __init__(self, message: str):
        super().__init__(message)
        self.message = message


@dataclass
class StepResult:
    """What a step produced: its folder, its figures, its tables (DataFrames) and its model."""

    out_dir: str
    kind: str
    metrics: dict = field(default_factory=dict)
    frames: dict = field(default_factory=dict)
    model: object = None

    def __getattr__(self, name):
        frames = self.__dict__.get("frames", {})
        if name in frames:
            return frames[name]
        raise AttributeError(f"{type(self).__name__} has no {name!r} (tables: {', '.join(frames) or 'none'})")


# ---------------------------------------------------------------------------- configs


@dataclass
class _LabelledData(JsonConfig):
    """Where labelled reviews come from: a CSV/JSONL/Parquet file with a text and
    a rating column (mapped to labels by ``scale``), ``sample:imdb``, or the folder
    of a ``prepare`` run (its train.csv and val.csv, already labelled)."""

    data: str = ""
    text_column: str = "text"
    rating_column: str = "rating"
    scale: str = "imdb10"
    allow_drop: bool = False
    seed: int = 0


@dataclass
class PrepareConfig(_LabelledData):
    val_fraction: float = 0.1
    balance: bool = True


@dataclass
class TrainClassifierConfig(_LabelledData):
    model: str = "minilm"             # alias, HF directory or hub id (DistilBERT / BERT)
    val_data: str = ""                # a separate labelled validation file; "" = val_fraction of data
    val_fraction: float = 0.1
    balance: bool = True
    max_train_rows: int = 0           # 0 = all (a balanced cap otherwise)
    max_val_rows: int = 0
    max_length: int = 256
    baseline: bool = True             # TF-IDF + LR on the same rows, beside it in metrics.json
    training: TrainingConfig = field(default_factory=TrainingConfig.for_classifier)

    _nested = {"training": TrainingConfig}


@dataclass
class TrainGeneratorConfig(_LabelledData):
    model: str = "smollm2"            # alias, GGUF file, HF directory or hub id (GPT-2 / Llama)
    val_data: str = ""
    val_fraction: float = 0.1
    balance: bool = True
    max_train_rows: int = 0
    max_val_rows: int = 64
    max_length: int = 128
    format: str = "auto"              # "auto" (chat for an instruct model), "chat" or "review_of"
    chat_prompt: str = "reviewer"
    instruction: str = ""
    review_only_loss: bool = True     # the loss counts the review tokens only
    training: TrainingConfig = field(default_factory=TrainingConfig.for_generator)

    _nested = {"training": TrainingConfig}


@dataclass
class GenerateConfig(JsonConfig):
    generator: str = ""               # a saved generator (train generator's model/), alias or hub id
    classifier: str = ""              # a saved classifier (train classifier's model/): the filter
    classifier_max_length: int = 256
    labels: str = ""                  # comma-separated; "" = every label of the classifier
    per_label: int = 20               # reviews generated per round and label (the seed: 20)
    keep_per_label: int = 10          # regenerate until this many are kept
    max_rounds: int = 4
    max_length: int = 512
    max_new_tokens: int = 120
    min_new_tokens: int = 0
    temperature: float = 0.7
    top_k: int = 0
    top_p: float = 0.95
    repetition_penalty: float = 1.15
    no_repeat_ngram_size: int = 4
    format: str = ""                  # "" = as the generator was trained (or auto)
    chat_prompt: str = "reviewer"
    instruction: str = ""
    filter_rule: str = "exact"        # "exact", "near" or "any"
    filter_threshold: float = 0.4
    filter_top_n: int = 0
    fill_below_threshold: bool = True
    drop_assistant: bool = True       # drop texts that read as a chat assistant's reply, not a review
    near_duplicate: float = 0.5
    min_words: int = 5
    train_data: str = ""              # real training texts (CSV/JSONL, a text column) for the copy check
    text_column: str = "text"
    # real labelled reviews (a file with text and rating mapped by scale, sample:imdb or a
    # prepare folder) whose first opening_words words start the generated reviews of their
    # label; "" = the model starts each review itself. Also part of the copy check.
    opening_data: str = ""
    opening_words: int = 3
    rating_column: str = "rating"
    scale: str = "imdb10"
    seed: int = 0


@dataclass
class EvaluateClassifierConfig(_LabelledData):
    classifier: str = ""
    max_rows: int = 0
    max_length: int = 256


@dataclass
class EvaluateGeneratedConfig(JsonConfig):
    generated: str = ""               # CSV/JSONL with text and label (generate's accepted.csv)
    real: str = ""                    # held-out real reviews (text + rating, mapped by scale; or a prepare folder: its val.csv)
    judge_data: str = ""              # real reviews to train the judge on; "" = half of `real`; or bundled:imdb
    text_column: str = "text"
    rating_column: str = "rating"
    scale: str = "imdb10"
    allow_drop: bool = False
    encoder: str = "minilm"           # for MAUVE; "" leaves MAUVE out
    train_data: str = ""              # the generator's training texts, for the copy check
    seed: int = 0


# ---------------------------------------------------------------------------- shared pieces


def _require(value: str, what: str) -> None:
    if not value:
        raise ValueError(f"{what} is required")


def _sample_or_path(source: str):
    from ..text import data as _data

    return _data.load_sample(source.split(":", 1)[1]) if source.startswith("sample:") else source


def _cap_balanced(frame, rows: int, seed: int):
    """At most `rows` rows, the same count per label where the frame allows."""
    if not rows or len(frame) <= rows:
        return frame
    labels = sorted(frame["label"].unique())
    per_label = max(rows // len(labels), 1)
    parts = [frame[frame["label"] == label].head(per_label) for label in labels]
    import pandas as pd

    return pd.concat(parts).sample(frac=1.0, random_state=seed).reset_index(drop=True)


def load_labelled(cfg: _LabelledData, *, balance: bool = True, val_fraction: float = 0.1, val_data: str = ""):
    """(train, val, report dict or None) with columns text and label, from cfg.data."""
    import pandas as pd

    from ..text import data as _data

    _require(cfg.data, "data (a review file, sample:imdb or a prepare folder)")
    if os.path.isdir(cfg.data):
        manifest = runs.read_run(cfg.data)
        if manifest is None or manifest.get("kind") != "prepare":
            raise ValueError(f"{cfg.data} is a folder but not the output of `reviewgen prepare`")
        if not manifest.get("finished"):
            raise ValueError(f"{cfg.data}: that prepare run did not finish; run it again")
        frames = []
        for name in ("train.csv", "val.csv"):
            path = os.path.join(cfg.data, name)
            try:
                frame = pd.read_csv(path, keep_default_na=False)
            except (OSError, ValueError) as error:
                raise _data.DataFileError(path, f"unreadable ({error})") from None
            if not {"text", "label"} <= set(frame.columns):
                raise _data.MissingColumnError(f"{path}: expected columns text and label")
            frames.append(frame[["text", "label"]])
        report = None
        report_path = os.path.join(cfg.data, "report.json")
        if os.path.exists(report_path):
            with open(report_path, encoding="utf-8") as f:
                report = json.load(f)
        train, val = frames
    else:
        prepared = _data.prepare(_sample_or_path(cfg.data), cfg.scale, text_column=cfg.text_column,
                                 rating_column=cfg.rating_column, seed=cfg.seed,
                                 val_fraction=0.0 if val_data else val_fraction, balance=balance,
                                 allow_drop=cfg.allow_drop)
        if prepared.report.source == "<DataFrame>":
            prepared.report.source = cfg.data
        train, val, report = prepared.train, prepared.val, prepared.report.to_dict()
    if val_data:
        val = _data.prepare(_sample_or_path(val_data), cfg.scale, text_column=cfg.text_column,
                            rating_column=cfg.rating_column, seed=cfg.seed, val_fraction=0.0, balance=False,
                            allow_drop=cfg.allow_drop).train
    if not len(train):
        raise ValueError(f"{cfg.data}: no training rows")
    return train[["text", "label"]].reset_index(drop=True), val[["text", "label"]].reset_index(drop=True), report


def _load_classifier(path: str, max_length: int):
    """A saved classifier, truncating at max_length or at its positions, whichever is fewer."""
    from ..tasks.classifier import Classifier
    from ..weights.safetensors_io import read_config

    positions = read_config(path).get("max_position_embeddings") if os.path.isdir(path) else None
    return Classifier.from_pretrained(path, max_length=min(max_length, positions or max_length))


def _resolve_model(source: str, what: str) -> str:
    from ..weights.hub import resolve

    _require(source, what)
    return resolve(source)


def _begin(kind: str, out_dir: str, cfg: JsonConfig, overwrite: bool, resume: bool, argv) -> dict:
    runs.prepare_output_dir(out_dir, overwrite=overwrite, resume=resume)
    manifest = runs.start_run(out_dir, kind, cfg.to_dict(), argv)
    cfg.save(os.path.join(out_dir, runs.CONFIG))
    return manifest


def _check_resume(out_dir: str, cfg: JsonConfig, resume: bool) -> None:
    """A resumed run must be the run that was started: same config, a checkpoint to go on from."""
    if not resume:
        return
    from ..core.training import CORE_CHECKPOINT_NAME

    checkpoint = os.path.join(out_dir, runs.CHECKPOINTS_DIR, CORE_CHECKPOINT_NAME)
    if not os.path.exists(checkpoint):
        raise ValueError(f"--resume: {out_dir} holds no checkpoint to go on from ({checkpoint})")
    saved_path = os.path.join(out_dir, runs.CONFIG)
    if os.path.exists(saved_path):
        saved = type(cfg).load(saved_path).to_dict()
        changed = sorted(k for k, v in cfg.to_dict().items() if saved.get(k) != v)
        if changed:
            raise ValueError(f"--resume: the settings differ from the run in {out_dir} "
                             f"({', '.join(changed)}); resume with --config {saved_path}")


def _train_outputs(out_dir: str, result, keep_checkpoints: bool) -> None:
    runs.write_frame(os.path.join(out_dir, runs.HISTORY), runs.history_frame(result.history))
    if not keep_checkpoints:
        shutil.rmtree(os.path.join(out_dir, runs.CHECKPOINTS_DIR), ignore_errors=True)


def _interrupted_training(out_dir: str, manifest: dict, error, what: str) -> StepInterrupted:
    result = getattr(error, "result", None)
    if result is not None and getattr(result, "history", None) is not None:
        runs.write_frame(os.path.join(out_dir, runs.HISTORY), runs.history_frame(result.history))
    checkpoint = getattr(result, "last_checkpoint", None)
    where = (f"the last checkpoint is {checkpoint}; run the same command with --resume to go on"
             if checkpoint else "no epoch had finished, so there is no checkpoint")
    runs.interrupt_run(out_dir, manifest, note=f"{what} interrupted; {where}")
    return StepInterrupted(f"{what} interrupted: no model was saved; {where}")


# ---------------------------------------------------------------------------- prepare


def prepare_data(cfg: PrepareConfig, out_dir: Optional[str], *, overwrite: bool = False, log: Callable = print,
                 argv=None) -> StepResult:
    """Clean, label, balance and split: train.csv, val.csv and report.json (the stage
    report); out_dir None writes nothing (the report is logged and returned)."""
    check_field_types(cfg)
    from ..text import data as _data

    _require(cfg.data, "data (a review file or sample:imdb)")
    prepared = _data.prepare(_sample_or_path(cfg.data), cfg.scale, text_column=cfg.text_column,
                             rating_column=cfg.rating_column, seed=cfg.seed, val_fraction=cfg.val_fraction,
                             balance=cfg.balance, allow_drop=cfg.allow_drop)
    if prepared.report.source == "<DataFrame>":
        prepared.report.source = cfg.data
    log(str(prepared.report))
    result = StepResult(out_dir, "prepare", metrics=prepared.report.to_dict(),
                        frames={"train": prepared.train, "val": prepared.val})
    if out_dir is None:
        return result
    manifest = _begin("prepare", out_dir, cfg, overwrite, False, argv)
    for name, frame in (("train.csv", prepared.train), ("val.csv", prepared.val)):
        runs.write_frame(os.path.join(out_dir, name), frame)
    write_json(os.path.join(out_dir, "report.json"), prepared.report.to_dict(), indent=2)
    runs.finish_run(out_dir, manifest)
    log(f"wrote train.csv, val.csv and report.json to {out_dir}")
    return result


# ---------------------------------------------------------------------------- classifier


def _classifier_tables(metrics: dict) -> dict:
    return {"per_class": runs.per_class_frame(metrics), "confusion": runs.confusion_frame(metrics),
            "near_confusion": runs.confusion_frame(metrics, near=True)}


def _write_classifier_metrics(out_dir: str, metrics: dict) -> dict:
    write_json(os.path.join(out_dir, runs.METRICS), jsonable(metrics), indent=2)
    tables = _classifier_tables(metrics)
    runs.write_frame(os.path.join(out_dir, runs.PER_CLASS), tables["per_class"])
    runs.write_frame(os.path.join(out_dir, runs.CONFUSION), tables["confusion"], index=True)
    return tables


def _evaluate_with_progress(classifier, frame, progress: Progress, name: str) -> dict:
    with progress.counter(name, total=len(frame), unit="review") as count:
        return classifier.evaluate(frame["text"].tolist(), frame["label"].tolist(), progress=count)


def _main_rank() -> bool:
    """False on the ranks > 0 of a data-parallel run (reviewgen.core.distributed.activated)."""
    from ..core.distributed import active, is_main_rank

    return is_main_rank(active())


def train_classifier(cfg: TrainClassifierConfig, out_dir: str, *, overwrite: bool = False, resume: bool = False,
                     keep_checkpoints: bool = False, progress: Optional[Progress] = None, log: Callable = print,
                     argv=None) -> StepResult:
    """Fine-tune a classifier; write model/, history.csv, metrics.json (validation, and
    the TF-IDF baseline), per_class.csv, confusion.csv and config.json."""
    check_field_types(cfg)
    from ..core.training import TrainingInterrupted
    from ..tasks.classifier import Classifier

    progress = progress or Progress(log=log)
    cfg.training.task = "classifier"
    cfg.training.validate()
    model_path = _resolve_model(cfg.model, "model")
    train, val, report = load_labelled(cfg, balance=cfg.balance, val_fraction=cfg.val_fraction,
                                       val_data=cfg.val_data)
    train = _cap_balanced(train, cfg.max_train_rows, cfg.seed)
    val = _cap_balanced(val, cfg.max_val_rows, cfg.seed)
    if not len(val):
        raise ValueError("the classifier needs validation rows: raise val_fraction or give val_data")
    labels = sorted({int(v) for v in train["label"]} | {int(v) for v in val["label"]})
    _check_resume(out_dir, cfg, resume)
    log(f"classifier: {cfg.model} on {len(train)} training and {len(val)} validation reviews, labels {labels}")
    classifier = Classifier.from_pretrained(model_path, labels=labels, max_length=cfg.max_length, seed=cfg.seed)
    main = _main_rank()  # data-parallel (mpirun): only rank 0 writes
    manifest = _begin("train-classifier", out_dir, cfg, overwrite, resume, argv) if main else None
    try:
        result = classifier.train(train["text"].tolist(), train["label"].tolist(), val["text"].tolist(),
                                  val["label"].tolist(), config=cfg.training,
                                  output_dir=os.path.join(out_dir, runs.CHECKPOINTS_DIR),
                                  progress=progress.training("classifier"), resume=resume)
    except TrainingInterrupted as error:
        if not main:
            raise
        raise _interrupted_training(out_dir, manifest, error, "classifier training") from None
    if not main:  # the other ranks' part is done: the same parameters as rank 0's
        return StepResult(out_dir, "train-classifier", metrics={},
                          frames={"history": runs.history_frame(result.history)}, model=classifier)
    classifier.save(os.path.join(out_dir, runs.MODEL_DIR))
    metrics = _evaluate_with_progress(classifier, val, progress, "classifier evaluation")
    metrics["rows"] = {"train": len(train), "validation": len(val)}
    if cfg.baseline:
        metrics["tfidf_baseline"] = _tfidf_baseline(train, val, labels, log)
    tables = _write_classifier_metrics(out_dir, metrics)
    _train_outputs(out_dir, result, keep_checkpoints)
    runs.finish_run(out_dir, manifest)
    log(f"classifier on {len(val)} validation reviews: accuracy {metrics['accuracy']:.3f}, near accuracy "
        f"{metrics['near_accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}; model in "
        f"{os.path.join(out_dir, runs.MODEL_DIR)}")
    return StepResult(out_dir, "train-classifier", metrics=metrics,
                      frames={"history": runs.history_frame(result.history), **tables}, model=classifier)


def _tfidf_baseline(train, val, labels, log) -> Optional[dict]:
    try:
        from ..tasks.baselines import tfidf_logistic_regression
    except ImportError:  # pragma: no cover - scikit-learn is a dependency of the test extra only
        return None
    try:
        base = tfidf_logistic_regression(train["text"].tolist(), train["label"].tolist(), val["text"].tolist(),
                                         val["label"].tolist(), labels=labels)
    except ImportError:
        log("TF-IDF baseline skipped: scikit-learn is not installed")
        return None
    except ValueError as error:  # e.g. too few rows for min_df
        log(f"TF-IDF baseline skipped: {error}")
        return None
    log(f"TF-IDF + LR on the same rows: accuracy {base['accuracy']:.3f}, near {base['near_accuracy']:.3f}")
    return {k: base[k] for k in ("accuracy", "near_accuracy", "macro_f1", "near_macro_f1")}


def evaluate_classifier(cfg: EvaluateClassifierConfig, out_dir: str, *, overwrite: bool = False,
                        progress: Optional[Progress] = None, log: Callable = print, argv=None) -> StepResult:
    """A saved classifier on a labelled file: metrics.json (exact and near), per_class.csv, confusion.csv."""
    check_field_types(cfg)

    progress = progress or Progress(log=log)
    model_path = _resolve_model(cfg.classifier, "classifier")
    rows, _, _ = load_labelled(cfg, balance=False, val_fraction=0.0)
    rows = _cap_balanced(rows, cfg.max_rows, cfg.seed)
    classifier = _load_classifier(model_path, cfg.max_length)
    unknown = sorted(set(int(v) for v in rows["label"]) - set(classifier.labels))
    if unknown:
        raise ValueError(f"{cfg.data}: label(s) {unknown} are not among the classifier's {classifier.labels}; "
                         "is the scale the one it was trained with?")
    manifest = _begin("evaluate-classifier", out_dir, cfg, overwrite, False, argv)
    metrics = _evaluate_with_progress(classifier, rows, progress, "classifier evaluation")
    metrics["rows"] = len(rows)
    tables = _write_classifier_metrics(out_dir, metrics)
    runs.finish_run(out_dir, manifest)
    log(f"{cfg.classifier} on {len(rows)} reviews of {cfg.data}: accuracy {metrics['accuracy']:.3f}, "
        f"near accuracy {metrics['near_accuracy']:.3f}, macro F1 {metrics['macro_f1']:.3f}")
    return StepResult(out_dir, "evaluate-classifier", metrics=metrics, frames=tables, model=classifier)


# ---------------------------------------------------------------------------- generator


def _conditioning(generator, name: str, chat_prompt: str, instruction: str):
    from ..text.conditioning import ChatFormat, format_for

    if name not in ("auto", "chat", "review_of"):
        raise ValueError(f"format must be auto, chat or review_of, got {name!r}")
    fmt = format_for(generator, None if name == "auto" else name)
    if isinstance(fmt, ChatFormat):
        fmt = format_for(generator, "chat", prompt=chat_prompt, **({"instruction": instruction} if instruction else {}))
    return fmt


def _precision(model: str) -> str:
    from ..weights.hub import precision_note

    note = precision_note(model)
    return f" ({note})" if note else ""


def train_generator(cfg: TrainGeneratorConfig, out_dir: str, *, overwrite: bool = False, resume: bool = False,
                    keep_checkpoints: bool = False, progress: Optional[Progress] = None, log: Callable = print,
                    argv=None) -> StepResult:
    """Fine-tune a generator on (review, label) pairs; write model/ (with how it is
    prompted), history.csv, metrics.json (review perplexity before and after) and config.json."""
    check_field_types(cfg)
    from ..core.training import TrainingInterrupted
    from ..tasks.generator import Generator
    from ..text.conditioning import review_loss, train_generator as _train

    progress = progress or Progress(log=log)
    cfg.training.task = "generator"
    cfg.training.validate()
    model_path = _resolve_model(cfg.model, "model")
    train, val, _ = load_labelled(cfg, balance=cfg.balance, val_fraction=cfg.val_fraction, val_data=cfg.val_data)
    train = _cap_balanced(train, cfg.max_train_rows, cfg.seed)
    val = _cap_balanced(val, cfg.max_val_rows, cfg.seed)
    _check_resume(out_dir, cfg, resume)
    log(f"generator: loading {cfg.model}{_precision(cfg.model)}")
    generator = Generator.from_pretrained(model_path, max_length=cfg.max_length)
    fmt = _conditioning(generator, cfg.format, cfg.chat_prompt, cfg.instruction)
    main = _main_rank()  # data-parallel (mpirun): only rank 0 writes
    manifest = _begin("train-generator", out_dir, cfg, overwrite, resume, argv) if main else None
    metrics = {"format": fmt.name, "train_rows": len(train), "eval_rows": len(val)}
    if len(val) and main:
        metrics["before"] = review_loss(generator, fmt, val["text"].tolist(), val["label"].tolist())
        log(f"review perplexity before fine-tuning ({fmt.name} format): {metrics['before']['perplexity']:.2f}")
    if resume:
        log("resuming from the last checkpoint")
    try:
        result = _train(generator, fmt, train["text"].tolist(), train["label"].tolist(),
                        val["text"].tolist() if len(val) else None, val["label"].tolist() if len(val) else None,
                        config=cfg.training, output_dir=os.path.join(out_dir, runs.CHECKPOINTS_DIR),
                        progress=progress.training("generator"), review_only=cfg.review_only_loss,
                        resume=resume)
    except TrainingInterrupted as error:
        if not main:
            raise
        raise _interrupted_training(out_dir, manifest, error, "generator training") from None
    if not main:  # the other ranks' part is done: the same parameters as rank 0's
        return StepResult(out_dir, "train-generator", metrics={},
                          frames={"history": runs.history_frame(result.history)}, model=generator)
    model_dir = os.path.join(out_dir, runs.MODEL_DIR)
    generator.save(model_dir)
    write_json(os.path.join(model_dir, CONDITIONING_FILE), format_record(fmt), indent=2)
    if len(val):
        metrics["after"] = review_loss(generator, fmt, val["text"].tolist(), val["label"].tolist())
        log(f"review perplexity after fine-tuning: {metrics['after']['perplexity']:.2f}")
    write_json(os.path.join(out_dir, runs.METRICS), jsonable(metrics), indent=2)
    _train_outputs(out_dir, result, keep_checkpoints)
    runs.finish_run(out_dir, manifest)
    log(f"generator saved in {model_dir}")
    return StepResult(out_dir, "train-generator", metrics=metrics,
                      frames={"history": runs.history_frame(result.history)}, model=generator)


def format_record(fmt) -> dict:
    """How a generator is prompted, as saved beside its weights (CONDITIONING_FILE)."""
    return {"format": fmt.name, **{k: v for k, v in dataclasses.asdict(fmt).items() if k != "name"}}


def _saved_format(generator, source: str, cfg: GenerateConfig):
    """The format the generator was trained with (its conditioning file), unless cfg names one."""
    from ..text.conditioning import ChatFormat, ReviewOfFormat

    if cfg.format:
        return _conditioning(generator, cfg.format, cfg.chat_prompt, cfg.instruction)
    path = os.path.join(source, CONDITIONING_FILE) if os.path.isdir(source) else ""
    if path and os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
        kind = record.pop("format", None)
        if kind == "chat":
            if isinstance(record.get("words"), dict):
                record["words"] = {int(k): v for k, v in record["words"].items()}
            return ChatFormat(**record)
        if kind == "review_of":
            return ReviewOfFormat(**record)
        raise ValueError(f"{path}: unknown format {kind!r}")
    return _conditioning(generator, "auto", cfg.chat_prompt, cfg.instruction)


# ---------------------------------------------------------------------------- generation


def _read_table(path: str, what: str):
    """A CSV or JSONL file as a DataFrame (clear errors naming the file)."""
    import pandas as pd

    from ..text import data as _data

    if not os.path.isfile(path):
        raise _data.DataFileError(path, f"{what} not found")
    try:
        if path.endswith((".jsonl", ".json")):
            return pd.read_json(path, lines=True)
        return pd.read_csv(path, keep_default_na=False)
    except (OSError, ValueError) as error:
        raise _data.DataFileError(path, f"unreadable {what} ({error})") from None


def _texts_of(path: str, column: str, what: str) -> list:
    from ..text import data as _data

    if not path:
        return []
    frame = _read_table(path, what)
    if column not in frame.columns:
        raise _data.MissingColumnError(f"{path}: no column {column!r} (columns: {', '.join(map(str, frame.columns))})")
    return [str(t) for t in frame[column]]


def generate(cfg: GenerateConfig, out_dir: str, *, overwrite: bool = False, progress: Optional[Progress] = None,
             log: Callable = print, argv=None) -> StepResult:
    """Generate reviews per label with a saved generator, keep those the saved
    classifier accepts (regenerating up to max_rounds); accepted/rejected CSV and
    JSONL, and filter_counts.csv (generated, kept, dropped per reason, per label)."""
    check_field_types(cfg)
    from ..tasks.generator import Generator
    import pandas as pd

    from .filtering import (FilterConfig, GenerationInterrupted, ReviewFilter, generate_filtered,
                            review_sampler, write_filter_result)

    progress = progress or Progress(log=log)
    generator_path = _resolve_model(cfg.generator, "generator")
    classifier_path = _resolve_model(cfg.classifier, "classifier")
    filter_config = FilterConfig(rule=cfg.filter_rule, threshold=cfg.filter_threshold, top_n=cfg.filter_top_n,
                                 near_duplicate=cfg.near_duplicate, fill_below_threshold=cfg.fill_below_threshold,
                                 drop_assistant=cfg.drop_assistant, min_words=cfg.min_words)
    for name in ("per_label", "keep_per_label", "max_rounds", "max_new_tokens"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name} must be at least 1")
    seen = _texts_of(cfg.train_data, cfg.text_column, "train_data")
    openers: dict = {}
    if cfg.opening_data:
        if cfg.opening_words < 1:
            raise ValueError("opening_words must be at least 1 when opening_data is given")
        spec = _LabelledData(data=cfg.opening_data, text_column=cfg.text_column, rating_column=cfg.rating_column,
                             scale=cfg.scale, seed=cfg.seed)
        train, val, _ = load_labelled(spec, balance=False, val_fraction=0.0)
        rows = pd.concat([train, val])
        openers = {int(label): group["text"].tolist() for label, group in rows.groupby("label")}
        seen += rows["text"].tolist()
    classifier = _load_classifier(classifier_path, cfg.classifier_max_length)
    labels = list(classifier.labels)
    if cfg.labels:
        try:
            labels = [int(v) for v in cfg.labels.split(",")]
        except ValueError:
            raise ValueError(f"labels must be comma-separated integers, got {cfg.labels!r}") from None
        unknown = sorted(set(labels) - set(classifier.labels))
        if unknown:
            raise ValueError(f"label(s) {unknown} are not among the classifier's {classifier.labels}")
    if openers:
        missing = [label for label in labels if label not in openers]
        if missing:
            raise ValueError(f"{cfg.opening_data}: no review with label(s) {missing} to open reviews with")
    log(f"generator: loading {cfg.generator}{_precision(cfg.generator)}")
    generator = Generator.from_pretrained(generator_path, max_length=cfg.max_length)
    fmt = _saved_format(generator, generator_path, cfg)
    for label in labels:
        fmt.prompt(label)  # a label the format cannot word fails here, not after an hour
    manifest = _begin("generate", out_dir, cfg, overwrite, False, argv)
    review_filter = ReviewFilter(classifier, filter_config, train_texts=seen)
    target = (cfg.filter_top_n or cfg.keep_per_label) * len(labels)
    with progress.counter("generating", total=target, unit="review") as count:
        kept: dict = {}

        sample = review_sampler(generator, fmt, cfg, openers=openers, opening_words=cfg.opening_words)

        def on_round(label, _round, passed: int) -> None:
            kept[label] = min(passed, cfg.filter_top_n or cfg.keep_per_label)
            count(sum(kept.values()) - count.n, postfix=f"label {label}: {passed} passed")

        try:
            filtered = generate_filtered(sample, labels, review_filter, keep_per_label=cfg.keep_per_label,
                                         batch_per_label=cfg.per_label, max_rounds=cfg.max_rounds,
                                         on_round=on_round)
        except GenerationInterrupted as stop:
            partial = stop.result
            write_filter_result(out_dir, partial)
            runs.interrupt_run(out_dir, manifest, note="generation interrupted; the reviews so far are kept")
            raise StepInterrupted(f"generation interrupted: {len(partial.accepted)} accepted and "
                                  f"{len(partial.rejected)} rejected reviews so far are in {out_dir} "
                                  "(accepted.csv, rejected.csv; the run is marked unfinished)") from None
    write_filter_result(out_dir, filtered)
    runs.finish_run(out_dir, manifest)
    log("filter counts per label:\n" + filtered.counts.to_string())
    log(f"{len(filtered.accepted)} accepted and {len(filtered.rejected)} rejected reviews in {out_dir}")
    return StepResult(out_dir, "generate", metrics={"accepted": len(filtered.accepted),
                                                    "rejected": len(filtered.rejected)},
                      frames={"accepted": filtered.frame("accepted"), "rejected": filtered.frame("rejected"),
                              "counts": filtered.counts})


def _real_rows(cfg: EvaluateGeneratedConfig, source: str):
    """Labelled real reviews: a file or sample (through the scale), or a prepare folder's val.csv."""
    spec = _LabelledData(data=source, text_column=cfg.text_column, rating_column=cfg.rating_column,
                         scale=cfg.scale, allow_drop=cfg.allow_drop, seed=cfg.seed)
    train, val, _ = load_labelled(spec, balance=False, val_fraction=0.0)
    return val if os.path.isdir(source) else train


def evaluate_generated(cfg: EvaluateGeneratedConfig, out_dir: str, *, overwrite: bool = False,
                       log: Callable = print, argv=None) -> StepResult:
    """The quality table of generated reviews against held-out real ones (quality.csv):
    an independent judge, MAUVE, diversity, copies (reviewgen.experiments.evaluation)."""
    check_field_types(cfg)
    from ..text import data as _data
    from . import evaluation

    _require(cfg.generated, "generated (a CSV/JSONL with text and label columns)")
    _require(cfg.real, "real (held-out real reviews with ratings)")
    generated = _read_table(cfg.generated, "generated reviews")
    missing = {"text", "label"} - set(generated.columns)
    if missing:
        raise _data.MissingColumnError(f"{cfg.generated}: no column(s) {', '.join(sorted(missing))}")
    if not len(generated):
        raise ValueError(f"{cfg.generated}: no generated reviews")
    real = _real_rows(cfg, cfg.real)
    judge = None
    if cfg.judge_data.startswith("bundled:"):  # shipped, fitted on rows outside the bundled sample
        judge = evaluation.bundled_judge(cfg.judge_data, set(int(v) for v in generated["label"]) | set(real["label"]),
                                         f"judge_data (scale {cfg.scale!r})")
        judge_rows, source = judge.info.get("rows", 0), f"the bundled judge {cfg.judge_data!r}"
    elif cfg.judge_data:
        judge_rows = _real_rows(cfg, cfg.judge_data)
        judge_rows = judge_rows[~judge_rows["text"].isin(set(real["text"]))]
        source = cfg.judge_data
    else:  # half of the real rows train the judge, the other half is the reference
        shuffled = real.sample(frac=1.0, random_state=cfg.seed).reset_index(drop=True)
        judge_rows, real = shuffled.iloc[: len(shuffled) // 2], shuffled.iloc[len(shuffled) // 2:]
        source = f"half of {cfg.real}"
    seen = _texts_of(cfg.train_data, cfg.text_column, "train_data") or None
    encoder = None
    if cfg.encoder:
        from ..tasks.encoder import SentenceEncoder

        encoder = SentenceEncoder.from_pretrained(_resolve_model(cfg.encoder, "encoder"), max_length=128)
    manifest = _begin("evaluate-generated", out_dir, cfg, overwrite, False, argv)
    if judge is None:
        log(f"judge (TF-IDF + LR) on {len(judge_rows)} real reviews ({source}); {len(real)} real references")
        judge = evaluation.Judge().fit(judge_rows["text"].tolist(), judge_rows["label"].tolist())
        judge_rows = len(judge_rows)
    else:
        log(f"judge: {source}, TF-IDF + LR on {judge_rows} real reviews; {len(real)} real references")
    report = evaluation.evaluate_generated([str(t) for t in generated["text"]],
                                           [int(v) for v in generated["label"]], real["text"].tolist(),
                                           real["label"].tolist(), judge=judge, encoder=encoder,
                                           train_texts=seen, seed=cfg.seed)
    runs.write_frame(os.path.join(out_dir, runs.QUALITY), report.table, index=True)
    runs.finish_run(out_dir, manifest, judge_rows=judge_rows, judge_source=source, real_rows=len(real))
    log(f"quality of {len(generated)} reviews:\n{report}")
    return StepResult(out_dir, "evaluate-generated", metrics=report.to_dict(), frames={"quality": report.table})


# ---------------------------------------------------------------------------- sweep


def _flat_columns(frame):
    """A frame with two-level columns (mean/std, metric) as one level: metric_mean, metric_std."""
    frame = frame.copy()
    if getattr(frame.columns, "nlevels", 1) == 2:
        frame.columns = [f"{metric}_{stat}" for stat, metric in frame.columns]
    return frame.reset_index()


def sweep(study, out_dir: str, *, overwrite: bool = False, resume: bool = False, log: Callable = print,
          argv=None, executor: Optional[dict] = None) -> StepResult:
    """The seed's hyperparameter study (reviewgen.experiments.study.run_sweep) as a run
    folder: sweep_runs.csv (every epoch of every run), sweep_curves.csv (mean and
    spread per value and epoch), sweep_summary.csv (best epochs per value), study.json.
    A sweep that was stopped goes on from its journal with ``resume``.
    executor: run_sweep's executor arguments, e.g. ``dict(executor="ray",
    ray_address="auto")`` (trials on a Ray cluster)."""
    from .study import SweepInterrupted, SweepTrialsFailed, run_sweep

    _require(study.data, "data")
    _resolve_model(study.model, "model")
    if not study.data.startswith("sample:") and not os.path.isfile(study.data):
        raise FileNotFoundError(f"sweep data not found: {study.data}")
    manifest = _begin("sweep", out_dir, study, overwrite, resume, argv)
    study.save(os.path.join(out_dir, "study.json"))
    try:
        results = run_sweep(study, out_dir, log=log, **(executor or {}))
    except SweepInterrupted as stop:
        _write_sweep_tables(out_dir, stop.results)
        runs.interrupt_run(out_dir, manifest, note="sweep interrupted; its journal keeps the finished runs")
        raise StepInterrupted(f"sweep interrupted: {len(stop.results.best)} runs finished, kept in {out_dir} "
                              "(sweep.journal); run the same command with --resume to go on") from None
    except SweepTrialsFailed as failed:
        _write_sweep_tables(out_dir, failed.results)
        runs.interrupt_run(out_dir, manifest, note=f"{len(failed.failures)} Ray trial(s) failed twice")
        raise
    _write_sweep_tables(out_dir, results)
    runs.finish_run(out_dir, manifest)
    log(f"sweep of {study.parameter} over {study.values}: files in {out_dir}")
    return StepResult(out_dir, "sweep", metrics=results.to_json()["results"],
                      frames={"runs": results.frame, "curves": results.curves, "best": results.best,
                              "summary": results.summary})


def _write_sweep_tables(out_dir: str, results) -> None:
    runs.write_frame(os.path.join(out_dir, "sweep_runs.csv"), results.frame)
    runs.write_frame(os.path.join(out_dir, "sweep_curves.csv"), _flat_columns(results.curves))
    runs.write_frame(os.path.join(out_dir, "sweep_summary.csv"), _flat_columns(results.summary))


# ---------------------------------------------------------------------------- config checks


_SIMPLE_TYPES = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)}


def check_field_types(cfg) -> None:
    """Every plain field of a step config holds its declared type (a config file may not)."""
    for f in dataclasses.fields(cfg):
        allowed = _SIMPLE_TYPES.get(f.type if isinstance(f.type, str) else getattr(f.type, "__name__", ""))
        value = getattr(cfg, f.name)
        if allowed is None:
            continue
        if (isinstance(value, bool) and bool not in allowed) or not isinstance(value, allowed):
            raise ValueError(f"{type(cfg).__name__}.{f.name} must be {f.type}, got {value!r}")
