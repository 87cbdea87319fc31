"""Fine-tuning runs with Hugging Face Trainer semantics, executed by the C core.

:class:`Trainer` hands the whole run to the core's ``rg_trainer``
(``reviewgen._core.Trainer``, csrc/rg_trainer.h): the data go to C once as
whole arrays, and the run does not come back to Python between steps; only the
progress callback does, with the GIL taken just for the call. What one run
does, as the seed study's HF Trainer did:

* ``gradient_accumulation_steps`` micro-batches per optimizer update; each
  micro-batch's loss is scaled by 1 / (size of its accumulation group), so a
  short last group of an epoch still averages correctly (HF >= 4.46);
* ``total_steps = ceil(batches / accumulation) * epochs``; linear warmup over
  ``ceil(warmup_ratio * total_steps)`` updates, then linear decay to 0;
* after each epoch: evaluation (mean loss weighted by batch rows, perplexity
  for generators, accuracy / F1 / near metrics for classifiers), then a
  checkpoint;
* ``load_best_model_at_end``: the epoch with the lowest eval loss is kept in
  memory by the core and put back into the model when training ends.

Data: ``train_batches`` / ``eval_batches`` are either a batcher that exposes
its whole data set (:class:`reviewgen.text.tokenization.EncodedBatches` and
``LMBatches``: ``arrays()``, ``batch_size`` and, when shuffling,
``epoch_orders(epochs)``, whose numpy permutations the core then follows), or
a list of batch dicts (``tokens``, ``attention_mask``, ``token_types``,
``targets``) of one size (the last may be shorter), used in list order.

Checkpoints (in ``output_dir``):

* ``checkpoint.rgck``: written by the core after every epoch (and every
  ``save_steps`` updates): atomic, every section checksummed; parameters,
  optimizer moments, the position in the epoch, the history and the best
  epoch, so that :meth:`Trainer.train` (``resume=True``) continues a run,
  even one killed mid-epoch, to bit-identical weights;
* ``checkpoint.npz``: the same epoch-end state for numpy readers (parameters,
  optimizer moments and step, the table signature, the trainer state as
  JSON; the layout of the former Python trainer), written after each epoch's
  core checkpoint; resuming goes through ``checkpoint.rgck``;
* ``best.npz``: the parameters of the best epoch so far;
* ``trainer_state.json``: the history, human-readable.

Data parallelism: ``communicator`` (reviewgen.core.distributed, e.g.
``from_environment()`` under mpirun) makes every rank train on its share of
each global batch, with the gradients all-reduced in the core before clipping
and AdamW (csrc/rg_trainer.h); every rank ends with the same parameters. Only
rank 0 creates ``output_dir`` and writes checkpoints, ``best.npz``,
``trainer_state.json`` and calls ``progress``; every rank gets the same
result and history. A failed collective raises :class:`TrainingError`.

Ctrl-C: the core stops at its next layer boundary and drops the partial
accumulation; :meth:`Trainer.train` raises :class:`TrainingInterrupted` (a
KeyboardInterrupt, so callers that do not catch it stop too and never take
an interrupted run for a finished one). Its ``result`` is the
:class:`TrainResult` so far, with ``interrupted=True``. The checkpoint on
disk stays the last one written; the model keeps the weights of the last
completed update; :meth:`Trainer.load_checkpoint` brings back the saved ones
and ``train(resume=True)`` continues the run.
"""

from __future__ import annotations

import json
import math
import os
import warnings
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, runtime_checkable

import numpy as np

from ._native import _core
from .config import TrainingConfig

__all__ = ["TrainableModel", "Trainer", "TrainResult", "TrainingError", "TrainingInterrupted",
           "TqdmProgress", "CHECKPOINT_NAME", "CORE_CHECKPOINT_NAME", "BEST_NAME", "STATE_NAME",
           "core_config", "dataset_arrays"]

CORE_CHECKPOINT_NAME = "checkpoint.rgck"   # the core's own (resume), see rg_trainer.h
CHECKPOINT_NAME = "checkpoint.npz"         # its numpy-readable mirror after each epoch
CHECKPOINT_FORMAT = 1
BEST_NAME = "best.npz"
STATE_NAME = "trainer_state.json"
DATA_KEYS = ("tokens", "attention_mask", "token_types", "targets")
# Without a progress callback the core is asked for STEP events this rarely
# (it still sends the last of each epoch): a run then crosses into Python a
# number of times bounded by its epochs, not its steps.
QUIET_PROGRESS_EVERY = 1 << 30


@runtime_checkable
class TrainableModel(Protocol):
    """What the trainer needs from a model: the core model it wraps
    (``core``, a ``reviewgen._core.Model``), its flat ``parameters`` and
    ``gradients`` views and ``param_table()``; an optional
    ``set_trainable(blocks, head_policy)`` applies the config's freezing."""

    core: Any
    parameters: np.ndarray
    gradients: np.ndarray

    def param_table(self) -> list: ...


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss or gradient, a bad checkpoint)."""


def _table_signature(table: list) -> np.ndarray:
    """(n, 3) int64: offset, numel, trainable of every tensor in table order."""
    return np.asarray([(int(t["offset"]), int(t["numel"]), int(bool(t["trainable"]))) for t in table],
                      np.int64).reshape(-1, 3)


@dataclass
class TrainResult:
    history: list = field(default_factory=list)  # one dict per evaluated epoch
    interrupted: bool = False
    global_step: int = 0                         # optimizer updates done
    epochs_completed: int = 0
    best_epoch: Optional[int] = None             # 1-based, as in the history
    best_metric: Optional[float] = None
    best_loaded: bool = False                    # the model holds the best epoch's parameters
    last_checkpoint: Optional[str] = None        # path of the last complete checkpoint
    total_steps: int = 0
    finished: bool = False                       # every epoch ran (never true for an interrupted run)
    frozen_cache_mib: Optional[float] = None     # cache_frozen: the MiB it held (None: not in use)


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C (or a callback's KeyboardInterrupt) stopped :meth:`Trainer.train`;
    ``result`` is the unfinished run (``interrupted=True``, ``finished=False``)."""

    def __init__(self, result: "TrainResult"):
        super().__init__(f"training interrupted after {result.global_step} of {result.total_steps} updates "
                         f"({result.epochs_completed} epochs complete)")
        self.result = result


def _write_atomically(path: str, write: Callable[[Any], None], binary: bool = True) -> None:
    """write(file) into path + a temp suffix, fsync, then os.replace onto path.
    On any exception (KeyboardInterrupt included) the temp file is removed and
    the previous file at path is untouched."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def core_model_of(model: Any):
    """The ``reviewgen._core.Model`` behind `model` (a Model, or a wrapper
    exposing ``core``), or a TypeError."""
    core = model if isinstance(model, _core.Model) else getattr(model, "core", None)
    if not isinstance(core, _core.Model):
        raise TypeError(f"{type(model).__name__} is not a core model: the trainer runs in the C core and needs "
                        "a reviewgen Model (core, parameters, gradients, param_table)")
    return core


def _stack_batches(batches: list, classifier: bool, what: str) -> tuple:
    """A list of batch dicts as one data set (right-padded to the widest
    batch) and its batch size; the batches must all hold batch_size rows but
    the last, so that the core's batching gives them back."""
    if not all(isinstance(b, Mapping) and "tokens" in b for b in batches):
        raise TypeError(f"{what}: expected batch dicts with 'tokens' (and attention_mask, token_types, targets)")
    sizes = [len(b["tokens"]) for b in batches]
    batch_size = sizes[0]
    if any(size != batch_size for size in sizes[:-1]) or sizes[-1] > batch_size or min(sizes) < 1:
        raise TrainingError(f"{what}: batches of {sizes} rows: the core batches rows in equal groups "
                            "(only the last may be smaller); give a batcher or equal batches")
    width = max(np.shape(b["tokens"])[1] for b in batches)
    rows = sum(sizes)
    arrays = {}
    for key in DATA_KEYS:
        present = [b.get(key) is not None for b in batches]
        if not any(present):
            continue
        if not all(present):
            raise TrainingError(f"{what}: '{key}' is in some batches only")
        per_row = key == "targets" and classifier
        fill = -100 if key == "targets" else 0
        out = np.full((rows,) if per_row else (rows, width), fill, np.int32)
        start = 0
        for b, size in zip(batches, sizes):
            value = np.asarray(b[key])
            if per_row:
                out[start:start + size] = value
            else:
                out[start:start + size, :value.shape[1]] = value
            start += size
        arrays[key] = out
    if "attention_mask" not in arrays:
        # every column of a batch is real; the padding added here is not
        mask = np.zeros((rows, width), np.int32)
        start = 0
        for b, size in zip(batches, sizes):
            mask[start:start + size, :np.shape(b["tokens"])[1]] = 1
            start += size
        arrays["attention_mask"] = mask
    return arrays, batch_size


def dataset_arrays(batches: Any, classifier: bool, what: str) -> tuple:
    """(arrays dict, batch_size, batcher or None) of a batcher or a list of batch dicts."""
    if hasattr(batches, "arrays") and hasattr(batches, "batch_size"):
        arrays = {k: v for k, v in batches.arrays().items() if v is not None}
        rows = len(arrays["tokens"])
        expected = math.ceil(rows / batches.batch_size)
        if len(batches) != expected:
            raise TrainingError(f"{what}: its length says {len(batches)} batches, its {rows} rows make {expected}")
        return arrays, int(batches.batch_size), batches
    if isinstance(batches, (list, tuple)):
        return (*_stack_batches(list(batches), classifier, what), None)
    raise TypeError(f"{what}: expected a list of batch dicts or a batcher with arrays() and batch_size "
                    f"(EncodedBatches, LMBatches), got {type(batches).__name__}")


def core_config(config: TrainingConfig, train_batch_size: int, eval_batch_size: int) -> dict:
    """The core trainer's config dict (rg_trainer_config) of a TrainingConfig."""
    return dict(lr=config.learning_rate, beta1=config.adam_beta1, beta2=config.adam_beta2, eps=config.adam_epsilon,
                weight_decay=config.weight_decay, max_grad_norm=config.max_grad_norm,
                warmup_ratio=config.warmup_ratio, schedule=config.lr_scheduler_type,
                epochs=config.num_train_epochs, train_batch_size=train_batch_size,
                eval_batch_size=eval_batch_size, grad_accum=config.gradient_accumulation_steps,
                trim_padding=1, shuffle=0, seed=config.seed % (1 << 64),
                load_best_at_end=int(config.load_best_model_at_end), apply_freezing=0,
                trainable_blocks=config.trainable_blocks, head_policy=config.head_policy,
                cache_frozen=int(config.cache_frozen), cache_frozen_max_mib=config.cache_frozen_max_mib,
                frozen_dropout=int(config.frozen_dropout),
                # as the former Python trainer: a failure leaves the parameters of the last applied
                # update (no copy of the trainable tensors before every update)
                keep_last_good=0)


def apply_precision(core_model, config: TrainingConfig, stacklevel: int = 2):
    """config.bf16: the model's products in bf16 where the CPU has AVX512-BF16 (a warning and
    fp32 elsewhere); returns the precision to restore afterwards, None when unchanged."""
    if not config.bf16:
        return None
    if not _core.bf16_supported():
        warnings.warn("bf16 needs a CPU with AVX512-BF16; this one has none, so training runs in fp32",
                      RuntimeWarning, stacklevel=stacklevel)
        return None
    previous = core_model.precision
    core_model.set_precision("bf16")
    return previous


class _OptimizerView:
    """The optimizer inside the core trainer, as the old AdamW object showed it."""

    def __init__(self, core_trainer):
        self._core_trainer = core_trainer

    def state(self) -> dict:
        return self._core_trainer.optimizer_state()

    @property
    def step_count(self) -> int:
        return int(self.state()["step"])

    @property
    def state_numel(self) -> int:
        return int(self.state()["state_numel"])


class Trainer:
    """Fine-tunes `model` on `train_batches`, evaluating on `eval_batches` each epoch.

    train_batches / eval_batches: a batcher (EncodedBatches, LMBatches) or a
        list of batch dicts (see the module docstring); eval_batches may be
        empty/None: then no evaluation and no best-model selection.
    output_dir: where the checkpoints go (created).
    progress: optional callable receiving one dict per event:
        ``event="step"`` after each optimizer update (epoch, step,
        total_steps, loss, lr, grad_norm, tokens, tokens_per_s, elapsed_s;
        every ``progress_every``-th update and the last of each epoch),
        ``event="eval"`` after each evaluation (the history entry; for a
        classifier also ``logits`` and ``predictions``), and
        ``event="checkpoint"`` after each save (path, epoch, step).
    compute_metrics: optional callable(model) -> dict of extra eval metrics,
        called after each evaluation; a model with ``record_eval_logits``
        first receives the evaluation's logits (classifiers).
    save_steps: also checkpoint every save_steps updates inside an epoch.
    communicator: data parallelism (see the module docstring); None: the one
        of ``reviewgen.core.distributed.activated(...)`` if any, else one process.
    """

    def __init__(self, model: TrainableModel, config: TrainingConfig, train_batches: Iterable,
                 eval_batches: Optional[Iterable], output_dir: str | os.PathLike,
                 progress: Optional[Callable[[dict], None]] = None,
                 compute_metrics: Optional[Callable[[Any], Mapping[str, float]]] = None,
                 save_steps: int = 0, progress_every: int = 1, communicator: Any = None):
        if not isinstance(config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
        config.validate()
        self.core_model = core_model_of(model)
        try:
            self.num_batches = len(train_batches)
        except TypeError:
            raise TypeError("train_batches must have a length (a list or a batcher with __len__)") from None
        if self.num_batches < 1:
            raise ValueError("train_batches is empty")
        if save_steps < 0 or progress_every < 0:
            raise ValueError("save_steps and progress_every must be >= 0")
        self.model = model
        self.config = config
        self.train_batches = train_batches
        self.eval_batches = eval_batches
        self.output_dir = os.fspath(output_dir)
        self.progress = progress
        self.compute_metrics = compute_metrics
        self.save_steps = int(save_steps)
        self.progress_every = int(progress_every)
        if communicator is None:
            from .distributed import active

            communicator = active()
        self.communicator = communicator
        self.is_main = communicator is None or int(communicator.rank) == 0
        self.total_steps = config.total_steps(self.num_batches)
        self.optimizer: Optional[_OptimizerView] = None
        self.core_trainer = None
        self._extra_metrics: dict = {}
        self._best_seen: Optional[float] = None

    # ------------------------------------------------------------------ paths

    @property
    def checkpoint_path(self) -> str:
        """The core's checkpoint (what resume reads)."""
        return os.path.join(self.output_dir, CORE_CHECKPOINT_NAME)

    @property
    def npz_checkpoint_path(self) -> str:
        """Its numpy-readable mirror, written after each epoch."""
        return os.path.join(self.output_dir, CHECKPOINT_NAME)

    @property
    def best_path(self) -> str:
        return os.path.join(self.output_dir, BEST_NAME)

    @property
    def state_path(self) -> str:
        return os.path.join(self.output_dir, STATE_NAME)

    # ------------------------------------------------------------------ setup

    def _prepare(self) -> None:
        """Apply the layer freezing, hand the data to a new core trainer."""
        cfg = self.config
        if hasattr(self.model, "set_trainable"):
            self.model.set_trainable(cfg.trainable_blocks, cfg.head_policy)
        classifier = self.core_model.config["head"] != "lm"
        train, train_bs, batcher = dataset_arrays(self.train_batches, classifier, "train_batches")
        if len(self.train_batches) != self.num_batches:
            raise TrainingError("train_batches changed its length")
        evaluation, eval_bs = None, cfg.per_device_eval_batch_size
        if self.eval_batches is not None and len(self.eval_batches):
            evaluation, eval_bs, _ = dataset_arrays(self.eval_batches, classifier, "eval_batches")
        core_cfg = core_config(cfg, train_bs, eval_bs)
        if batcher is not None and getattr(batcher, "shuffle", False):
            core_cfg["shuffle"] = 1
            core_cfg["orders"] = batcher.epoch_orders(cfg.num_train_epochs)
        core_cfg["checkpoint_path"] = self.checkpoint_path
        core_cfg["save_steps"] = self.save_steps
        core_cfg["progress_every"] = self.progress_every if self.progress is not None else QUIET_PROGRESS_EVERY
        self.core_trainer = _core.Trainer(self.core_model, core_cfg, train, evaluation, progress=self._on_event,
                                          comm=self.communicator)
        if cfg.cache_frozen:
            state = self.core_trainer.result()
            if not state["frozen_cache"]:
                why = (f"it would need {state['frozen_cache_mib']:.0f} MiB (cache_frozen_max_mib is "
                       f"{cfg.cache_frozen_max_mib})" if state["frozen_cache_mib"] > 0 else
                       "nothing is frozen below the trainable blocks (trainable_blocks -1, LoRA on every "
                       "block, or a tied head that trains: wte is the input embedding)")
                warnings.warn(f"cache_frozen is not used: {why}", RuntimeWarning, stacklevel=3)
        self.optimizer = _OptimizerView(self.core_trainer)
        self._extra_metrics = {}
        self._best_seen = None

    # ------------------------------------------------------------------ events

    def _on_event(self, event: dict) -> None:
        kind = event["event"]
        if kind == "eval":
            logits = event.pop("logits", None)
            if self.compute_metrics is not None:
                if logits is not None and hasattr(self.model, "record_eval_logits"):
                    self.model.record_eval_logits(logits)
                extra = {f"eval_{k}" if not k.startswith("eval_") else k: float(v)
                         for k, v in self.compute_metrics(self.model).items()}
                self._extra_metrics[event["epoch"]] = extra
                event.update(extra)
            if self.is_main:
                self._save_best_if_better(event)
            if logits is not None:
                event["logits"] = logits
        elif kind == "checkpoint" and self.is_main:
            state = self._write_state(event)
            if event.get("epoch_progress", 1.0) >= 1.0:
                self._write_npz_checkpoint(state)
        if self.progress is not None and self.is_main:
            self.progress(event)

    def _save_best_if_better(self, entry: dict) -> None:
        metric = entry.get("eval_loss")
        if metric is None or not self.config.load_best_model_at_end:
            return
        if self._best_seen is None or metric < self._best_seen:
            self._best_seen = metric
            arrays = dict(parameters=np.asarray(self.model.parameters), epoch=np.int64(entry["epoch"]))
            _write_atomically(self.best_path, lambda f: np.savez(f, **arrays))

    def _history(self) -> list:
        history = self.core_trainer.history()
        for entry in history:
            entry.update(self._extra_metrics.get(entry["epoch"], {}))
        return history

    def _write_state(self, event: dict) -> None:
        result = self.core_trainer.result()
        state = dict(epoch=result["epochs_completed"], global_step=event["step"], total_steps=self.total_steps,
                     best_epoch=result["best_epoch"] or None,
                     best_metric=result["best_metric"] if result["best_epoch"] else None,
                     history=self._history(), config=self.config.to_dict(), checkpoint=event["path"])
        _write_atomically(self.state_path, lambda f: f.write(json.dumps(state, indent=2)), binary=False)
        return state

    def _write_npz_checkpoint(self, state: dict) -> None:
        """checkpoint.npz: the epoch's parameters, moments and state in the
        former Python trainer's layout (numpy readers; resume uses the core's)."""
        optimizer = self.core_trainer.optimizer_state()
        trainer_state = dict(state, format=CHECKPOINT_FORMAT)
        arrays = dict(parameters=np.asarray(self.model.parameters), adam_m=optimizer["m"], adam_v=optimizer["v"],
                      adam_step=np.int64(optimizer["step"]), table=_table_signature(self.core_model.param_table()),
                      trainer_state=np.frombuffer(json.dumps(trainer_state).encode(), np.uint8))
        _write_atomically(self.npz_checkpoint_path, lambda f: np.savez(f, **arrays))

    # ------------------------------------------------------------------ checkpoints

    def load_checkpoint(self, path: Optional[str] = None) -> dict:
        """Load a checkpoint (default: this run's) into the model, the
        optimizer and the run's position; returns its state (epoch,
        global_step, history, ...)."""
        path = os.fspath(path or self.checkpoint_path)
        if self.core_trainer is None:
            self._prepare()
        try:
            self.core_trainer.resume(path)
        except (_core.CoreIOError, _core.CorruptFileError) as error:
            raise TrainingError(f"{path}: unreadable checkpoint ({error})") from None
        except _core.ShapeError as error:
            raise TrainingError(str(error)) from None
        result = self.core_trainer.result()
        return dict(epoch=result["epochs_completed"], global_step=result["global_step"],
                    total_steps=result["total_steps"], history=self._history(),
                    best_epoch=result["best_epoch"] or None,
                    best_metric=result["best_metric"] if result["best_epoch"] else None)

    def load_best(self) -> int:
        """Load best.npz into the model; returns its (1-based) epoch."""
        try:
            with np.load(self.best_path, allow_pickle=False) as data:
                params, epoch = data["parameters"], int(data["epoch"])
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as error:  # BadZipFile: a CRC mismatch
            raise TrainingError(f"{self.best_path}: unreadable best parameters ({error})") from None
        if params.shape != self.model.parameters.shape:
            raise TrainingError(f"{self.best_path}: saved for a different parameter layout")
        self.model.parameters[...] = params
        return epoch

    # ------------------------------------------------------------------ training

    def train(self, resume: bool | str = False) -> TrainResult:
        """Run the remaining epochs in the core. resume=True continues from
        this run's checkpoint (a path continues from that file)."""
        if self.is_main:
            os.makedirs(self.output_dir, exist_ok=True)
        self._prepare()
        if resume:
            self.load_checkpoint(resume if isinstance(resume, str) else None)
            history = self.core_trainer.history()
            losses = [h["eval_loss"] for h in history if "eval_loss" in h]
            self._best_seen = min(losses) if losses else None
        interrupted = False
        previous_precision = apply_precision(self.core_model, self.config, stacklevel=3)
        try:
            self.core_trainer.run()
        except KeyboardInterrupt:
            interrupted = True  # the core dropped the partial accumulation; raised below
        except _core.NonFiniteError as error:
            raise TrainingError(str(error)) from None
        except _core.CoreIOError as error:
            raise TrainingError(f"a checkpoint could not be written: {error}") from None
        except _core.CommError as error:
            comm = self.communicator
            where = f"rank {comm.rank} of {comm.size}" if comm is not None else "one process"
            raise TrainingError(f"data-parallel training failed ({where}): {error}") from error
        finally:
            if previous_precision is not None:
                self.core_model.set_precision(previous_precision)
        core_result = self.core_trainer.result()
        has_checkpoint = os.path.exists(self.checkpoint_path)
        result = TrainResult(history=self._history(), interrupted=interrupted,
                             global_step=core_result["global_step"],
                             epochs_completed=core_result["epochs_completed"],
                             best_epoch=core_result["best_epoch"] or None,
                             best_metric=core_result["best_metric"] if core_result["best_epoch"] else None,
                             best_loaded=bool(core_result["best_loaded"]) and not interrupted,
                             last_checkpoint=self.checkpoint_path if has_checkpoint else None,
                             total_steps=core_result["total_steps"],
                             finished=bool(core_result["finished"]) and not interrupted,
                             frozen_cache_mib=core_result["frozen_cache_mib"] if core_result["frozen_cache"] else None)
        if interrupted:
            raise TrainingInterrupted(result)
        return result

    def evaluate(self) -> dict:
        """Mean eval loss over eval_batches (weighted by batch rows, as HF) with
        the current parameters and, for a generator, perplexity = exp(loss);
        plus compute_metrics' figures. (A run's own evaluations happen in the
        core; this is the same figure, outside a run.)"""
        total, rows = 0.0, 0
        for batch in self.eval_batches or ():
            batch = {k: v for k, v in batch.items() if v is not None}
            loss = float(self.model.forward(**batch, train=False, seed=0))
            n = int(np.shape(batch["tokens"])[0])
            total += loss * n
            rows += n
        metrics = {}
        if rows:
            metrics["eval_loss"] = total / rows
            if self.config.task == "generator":
                metrics["eval_perplexity"] = math.exp(min(metrics["eval_loss"], 700.0))
        if self.compute_metrics is not None:
            metrics.update({f"eval_{k}" if not k.startswith("eval_") else k: float(v)
                            for k, v in self.compute_metrics(self.model).items()})
        return metrics


class TqdmProgress:
    """A progress callback that drives a tqdm bar over the optimizer updates; the
    total comes from the core's first step event unless given:

        with TqdmProgress() as progress:
            Trainer(..., progress=progress).train()

    (reviewgen.experiments.progress.Progress also draws plain lines when not in a terminal.)
    """

    def __init__(self, total: Optional[int] = None, **tqdm_kwargs: Any):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="step", **tqdm_kwargs)
        self.file = tqdm_kwargs.get("file")

    def __call__(self, event: dict) -> None:
        if event["event"] == "step":
            if self.bar.total is None:
                self.bar.total = event["total_steps"]
            self.bar.update(event["step"] - self.bar.n)  # STEP events may come every k-th update
            self.bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.4f}",
                                 lr=f"{event['lr']:.2e}", tok_s=f"{event['tokens_per_s']:.0f}")
        elif event["event"] == "eval" and "eval_loss" in event:
            self.bar.write(f"epoch {event['epoch']}: eval_loss {event['eval_loss']:.4f}", file=self.file)

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
