"""The epoch loop shared by every model family (Hugging Face Trainer semantics).

:class:`Trainer` drives any model that follows :class:`TrainableModel`: flat
float32 ``parameters`` and ``gradients`` blocks described by
``param_table()``, ``forward(**batch, train=, seed=) -> loss``,
``backward(loss_scale)`` and ``zero_grad()``. The optimizer, schedule and
clipping are the C core's :class:`reviewgen._core.AdamW`.

What one run does, as the seed study's HF Trainer did:

* ``gradient_accumulation_steps`` micro-batches per optimizer update; each
  micro-batch's loss is scaled by 1 / (size of its accumulation group), so a
  short last group of an epoch still averages correctly (HF >= 4.46);
* ``total_steps = ceil(batches / accumulation) * epochs``; linear warmup over
  ``ceil(warmup_ratio * total_steps)`` updates, then linear decay to 0;
* after each epoch: evaluation (mean loss weighted by batch rows, and
  perplexity for generators), then a checkpoint;
* ``load_best_model_at_end``: the parameters of the epoch with the lowest
  eval loss are loaded when training ends.

Checkpoints (in ``output_dir``):

* ``checkpoint.npz``: the last completed epoch: parameters, optimizer state
  (step, moments) and trainer state; :meth:`Trainer.train` can resume from it;
* ``best.npz``: the parameters of the best epoch so far;
* ``trainer_state.json``: the history, human-readable.

Each file is written to a temporary file and moved into place with
``os.replace``, so an interruption never leaves a half-written checkpoint.

Ctrl-C: a KeyboardInterrupt stops training within a layer's compute (the C
core polls for it between the layers of a forward or backward pass; the
Python code between calls raises it directly); the partial accumulation is
discarded, the checkpoints on disk stay those of the last completed epoch,
and :meth:`Trainer.train` returns a :class:`TrainResult` with
``interrupted=True`` and the history so far. The model keeps the weights of
the moment it stopped; :meth:`Trainer.load_checkpoint` brings back the saved
ones.
"""

from __future__ import annotations

import json
import math
import os
import time
import zipfile
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Optional, Protocol, runtime_checkable

import numpy as np

from ._native import _core
from .config import TrainingConfig

__all__ = ["TrainableModel", "Trainer", "TrainResult", "TrainingError", "TqdmProgress",
           "CHECKPOINT_NAME", "BEST_NAME", "STATE_NAME"]

CHECKPOINT_NAME = "checkpoint.npz"
BEST_NAME = "best.npz"
STATE_NAME = "trainer_state.json"
CHECKPOINT_FORMAT = 1


@runtime_checkable
class TrainableModel(Protocol):
    """What the trainer needs from a model.

    ``parameters`` and ``gradients`` are flat float32 arrays (views of the
    model's own memory); ``param_table()`` lists dicts with ``name``,
    ``offset``, ``shape`` (or ``numel``), ``decay`` and ``trainable``.
    ``forward`` receives a batch's arrays as keyword arguments plus
    ``train`` and ``seed`` (dropout) and returns the mean loss;
    ``backward(loss_scale)`` ADDS loss_scale * d loss / d parameters into
    ``gradients``. An optional ``set_trainable(blocks, head_policy)``
    applies the config's layer freezing.
    """

    parameters: np.ndarray
    gradients: np.ndarray

    def param_table(self) -> list: ...

    def forward(self, *, train: bool, seed: int, **batch: Any) -> float: ...

    def backward(self, loss_scale: float) -> None: ...

    def zero_grad(self) -> None: ...


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss or gradient, a bad checkpoint)."""


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


def _batch_rows(batch: Mapping[str, Any]) -> int:
    for value in batch.values():
        shape = np.shape(value)
        if shape:
            return int(shape[0])
    return 1


def _batch_tokens(batch: Mapping[str, Any]) -> int:
    """Real tokens of a batch: the attention mask's sum when there is one."""
    if "attention_mask" in batch and batch["attention_mask"] is not None:
        return int(np.asarray(batch["attention_mask"]).sum())
    for key in ("tokens", "input_ids"):
        if key in batch:
            return int(np.size(batch[key]))
    return _batch_rows(batch)


def _table_signature(table: list) -> np.ndarray:
    """(offset, numel) per tensor: enough to refuse a checkpoint of another layout."""
    rows = []
    for entry in table:
        numel = entry["numel"] if "numel" in entry else int(np.prod(entry["shape"], dtype=np.int64))
        rows.append((int(entry["offset"]), int(numel), int(bool(entry.get("trainable", True)))))
    return np.asarray(rows, dtype=np.int64).reshape(-1, 3)


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


class Trainer:
    """Fine-tunes `model` on `train_batches`, evaluating on `eval_batches` each epoch.

    train_batches: re-iterable with a length (a list of batch dicts, or a
        batcher object); when it has ``set_epoch(epoch)`` that is called
        before each epoch (0-based), e.g. to reshuffle. Each batch is a
        mapping of keyword arguments for ``model.forward``.
    eval_batches: the same, iterated once per evaluation (may be empty/None:
        then no evaluation and no best-model selection).
    output_dir: where the checkpoints go (created).
    progress: optional callable receiving one dict per event:
        ``event="step"`` after each optimizer update (epoch, step,
        total_steps, loss, lr, grad_norm, tokens_per_s, elapsed_s),
        ``event="eval"`` after each evaluation (the history entry), and
        ``event="checkpoint"`` after each save (path, epoch).
    compute_metrics: optional callable(model) -> dict of extra eval metrics.
    """

    def __init__(self, model: TrainableModel, config: TrainingConfig, train_batches: Iterable,
                 eval_batches: Optional[Iterable], output_dir: str | os.PathLike,
                 progress: Optional[Callable[[dict], None]] = None,
                 compute_metrics: Optional[Callable[[Any], Mapping[str, float]]] = None):
        if not isinstance(config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig, got {type(config).__name__}")
        config.validate()
        missing = [name for name in ("parameters", "gradients", "param_table", "forward", "backward",
                                     "zero_grad") if not hasattr(model, name)]
        if missing:
            raise TypeError(f"model lacks {', '.join(missing)} (see reviewgen.core.training.TrainableModel)")
        try:
            self.num_batches = len(train_batches)
        except TypeError:
            raise TypeError("train_batches must have a length (a list or a batcher with __len__)") from None
        if self.num_batches < 1:
            raise ValueError("train_batches is empty")
        self.model = model
        self.config = config
        self.train_batches = train_batches
        self.eval_batches = eval_batches
        self.output_dir = os.fspath(output_dir)
        self.progress = progress
        self.compute_metrics = compute_metrics
        self.total_steps = config.total_steps(self.num_batches)
        self.optimizer = None

    # ------------------------------------------------------------------ paths

    @property
    def checkpoint_path(self) -> str:
        return os.path.join(self.output_dir, CHECKPOINT_NAME)

    @property
    def best_path(self) -> str:
        return os.path.join(self.output_dir, BEST_NAME)

    @property
    def state_path(self) -> str:
        return os.path.join(self.output_dir, STATE_NAME)

    # ------------------------------------------------------------------ setup

    def _prepare(self) -> None:
        """Apply the layer freezing, then build the optimizer over the table."""
        cfg = self.config
        if hasattr(self.model, "set_trainable"):
            self.model.set_trainable(cfg.trainable_blocks, cfg.head_policy)
        self.table = list(self.model.param_table())
        # A core model hands the optimizer its own blocks and table; other
        # TrainableModels describe theirs with param_table().
        blocks = ((self.model.core,) if isinstance(getattr(self.model, "core", None), _core.Model)
                  else (self.model.parameters, self.model.gradients, self.table))
        self.optimizer = _core.AdamW(
            *blocks, lr=cfg.learning_rate, betas=(cfg.adam_beta1, cfg.adam_beta2),
            eps=cfg.adam_epsilon, weight_decay=cfg.weight_decay, max_grad_norm=cfg.max_grad_norm,
            warmup_ratio=cfg.warmup_ratio, total_steps=self.total_steps,
            schedule=cfg.lr_scheduler_type)
        self.model.zero_grad()

    def _dropout_seed(self, epoch: int, batch_index: int) -> int:
        """A distinct, reproducible dropout stream per micro-batch of the run."""
        micro_batch = epoch * self.num_batches + batch_index
        return (self.config.seed * 0x9E3779B1 + micro_batch) % (1 << 63)

    def _emit(self, event: dict) -> None:
        if self.progress is not None:
            self.progress(event)

    # ------------------------------------------------------------------ checkpoints

    def _save_checkpoint(self, epoch: int, result: TrainResult) -> None:
        state = self.optimizer.state()
        trainer_state = dict(format=CHECKPOINT_FORMAT, epoch=epoch, global_step=result.global_step,
                             total_steps=self.total_steps, best_epoch=result.best_epoch,
                             best_metric=result.best_metric, history=result.history,
                             config=self.config.to_dict())
        arrays = dict(parameters=np.asarray(self.model.parameters), adam_m=state["m"],
                      adam_v=state["v"], adam_step=np.int64(state["step"]),
                      table=_table_signature(self.table),
                      trainer_state=np.frombuffer(json.dumps(trainer_state).encode(), np.uint8))
        _write_atomically(self.checkpoint_path, lambda f: np.savez(f, **arrays))
        _write_atomically(self.state_path, lambda f: f.write(json.dumps(trainer_state, indent=2)),
                          binary=False)
        result.last_checkpoint = self.checkpoint_path
        self._emit(dict(event="checkpoint", epoch=epoch, path=self.checkpoint_path))

    def _save_best(self, epoch: int) -> None:
        arrays = dict(parameters=np.asarray(self.model.parameters), table=_table_signature(self.table),
                      epoch=np.int64(epoch))
        _write_atomically(self.best_path, lambda f: np.savez(f, **arrays))

    def _read_npz(self, path: str) -> dict:
        try:
            with np.load(path, allow_pickle=False) as data:
                return {key: data[key] for key in data.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
            raise TrainingError(f"{path}: unreadable checkpoint ({error})") from None

    def _load_parameters(self, path: str, data: dict) -> None:
        if self.optimizer is None:
            self._prepare()
        table = _table_signature(self.table)
        if "table" not in data or data["table"].shape != table.shape or \
                not np.array_equal(data["table"][:, :2], table[:, :2]):
            raise TrainingError(f"{path}: saved for a different parameter layout")
        params = data["parameters"]
        target = self.model.parameters
        if params.dtype != np.float32 or params.shape != target.shape:
            raise TrainingError(f"{path}: parameters {params.dtype} {params.shape} do not fit "
                                f"the model's float32 {target.shape}")
        target[...] = params

    def load_checkpoint(self, path: Optional[str] = None) -> dict:
        """Load a checkpoint.npz (default: this run's) into the model and the
        optimizer; returns its trainer state (epoch, history, ...)."""
        path = path or self.checkpoint_path
        data = self._read_npz(path)
        for key in ("parameters", "adam_m", "adam_v", "adam_step", "trainer_state"):
            if key not in data:
                raise TrainingError(f"{path}: not a trainer checkpoint (no '{key}')")
        self._load_parameters(path, data)
        trainer_state = json.loads(bytes(data["trainer_state"]).decode())
        try:
            self.optimizer.load_state(dict(step=int(data["adam_step"]), m=data["adam_m"],
                                           v=data["adam_v"]))
        except ValueError as error:
            raise TrainingError(f"{path}: optimizer state does not fit ({error})") from None
        return trainer_state

    def load_best(self) -> int:
        """Load best.npz into the model; returns its (1-based) epoch."""
        data = self._read_npz(self.best_path)
        self._load_parameters(self.best_path, data)
        return int(data["epoch"])

    # ------------------------------------------------------------------ evaluation

    def evaluate(self) -> dict:
        """Mean eval loss (weighted by batch rows, as HF) and, for a generator,
        perplexity = exp(loss); plus compute_metrics' figures."""
        total, rows = 0.0, 0
        for batch in self.eval_batches or ():
            loss = float(self.model.forward(**batch, train=False, seed=0))
            n = _batch_rows(batch)
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

    # ------------------------------------------------------------------ training

    def train(self, resume: bool | str = False) -> TrainResult:
        """Run the remaining epochs. resume=True continues from this run's
        checkpoint.npz (a path continues from that file)."""
        os.makedirs(self.output_dir, exist_ok=True)
        self._prepare()
        result = TrainResult(total_steps=self.total_steps)
        start_epoch = 0
        if resume:
            saved = self.load_checkpoint(resume if isinstance(resume, str) else None)
            if saved.get("total_steps") != self.total_steps:
                raise TrainingError("the checkpoint was made for a run of "
                                    f"{saved.get('total_steps')} updates, this one has {self.total_steps}")
            start_epoch = int(saved["epoch"])
            result.history = list(saved["history"])
            result.global_step = int(saved["global_step"])
            result.epochs_completed = start_epoch
            result.best_epoch = saved.get("best_epoch")
            result.best_metric = saved.get("best_metric")
            result.last_checkpoint = self.checkpoint_path

        try:
            for epoch in range(start_epoch, self.config.num_train_epochs):
                train_loss = self._train_epoch(epoch, result)
                entry = dict(epoch=epoch + 1, step=result.global_step, train_loss=train_loss)
                entry.update(self.evaluate())
                result.history.append(entry)
                self._emit(dict(event="eval", **entry))
                self._track_best(epoch + 1, entry, result)
                self._save_checkpoint(epoch + 1, result)
                result.epochs_completed = epoch + 1
        except KeyboardInterrupt:
            result.interrupted = True
            self.model.zero_grad()  # drop the partial accumulation
            return result

        if self.config.load_best_model_at_end and result.best_epoch is not None \
                and result.best_epoch != result.epochs_completed:
            self.load_best()
            result.best_loaded = True
        elif result.best_epoch is not None and result.best_epoch == result.epochs_completed:
            result.best_loaded = True
        return result

    def _track_best(self, epoch: int, entry: dict, result: TrainResult) -> None:
        metric = entry.get("eval_loss")
        if metric is None or not self.config.load_best_model_at_end:
            return
        if result.best_metric is None or metric < result.best_metric:
            self._save_best(epoch)
            result.best_epoch, result.best_metric = epoch, float(metric)

    def _train_epoch(self, epoch: int, result: TrainResult) -> float:
        """One pass over train_batches; returns the mean micro-batch loss."""
        if hasattr(self.train_batches, "set_epoch"):
            self.train_batches.set_epoch(epoch)
        accumulation = self.config.gradient_accumulation_steps
        n = self.num_batches
        group_losses, group_tokens = [], 0
        epoch_loss, epoch_batches = 0.0, 0
        group_start = time.perf_counter()
        seen = 0
        for index, batch in enumerate(self.train_batches):
            if index >= n:
                raise TrainingError(f"train_batches yielded more than its length ({n}) batches")
            group_size = min(accumulation, n - (index // accumulation) * accumulation)
            loss = float(self.model.forward(**batch, train=True, seed=self._dropout_seed(epoch, index)))
            if not math.isfinite(loss):
                self.model.zero_grad()
                raise TrainingError(f"non-finite training loss {loss} at epoch {epoch + 1}, "
                                    f"micro-batch {index}")
            self.model.backward(1.0 / group_size)
            group_losses.append(loss)
            group_tokens += _batch_tokens(batch)
            epoch_loss += loss
            epoch_batches += 1
            seen += 1
            if len(group_losses) == group_size:
                try:
                    update = self.optimizer.step()
                except _core.NonFiniteError as error:
                    self.model.zero_grad()
                    raise TrainingError(f"non-finite gradient at epoch {epoch + 1}, update "
                                        f"{result.global_step + 1}: {error}") from None
                result.global_step += 1
                elapsed = time.perf_counter() - group_start
                self._emit(dict(event="step", epoch=epoch + 1,
                                epoch_progress=(index + 1) / n, step=result.global_step,
                                total_steps=self.total_steps, loss=float(np.mean(group_losses)),
                                lr=update["lr"], grad_norm=update["grad_norm"],
                                tokens_per_s=group_tokens / elapsed if elapsed > 0 else float("inf"),
                                elapsed_s=elapsed))
                group_losses, group_tokens = [], 0
                group_start = time.perf_counter()
        if seen != n:
            raise TrainingError(f"train_batches yielded {seen} batches, its length says {n}")
        return epoch_loss / max(epoch_batches, 1)


class TqdmProgress:
    """A progress callback that drives a tqdm bar over the optimizer updates:

        with TqdmProgress(total=trainer.total_steps) as progress:
            Trainer(..., progress=progress).train()
    """

    def __init__(self, total: int, **tqdm_kwargs: Any):
        from tqdm.auto import tqdm

        self.bar = tqdm(total=total, unit="step", **tqdm_kwargs)
        self.file = tqdm_kwargs.get("file")

    def __call__(self, event: dict) -> None:
        if event["event"] == "step":
            self.bar.update(1)
            self.bar.set_postfix(epoch=event["epoch"], loss=f"{event['loss']:.4f}",
                                 lr=f"{event['lr']:.2e}", tok_s=f"{event['tokens_per_s']:.0f}")
        elif event["event"] == "eval" and "eval_loss" in event:
            self.bar.write(f"epoch {event['epoch']}: eval_loss {event['eval_loss']:.4f}", file=self.file)

    def __enter__(self) -> "TqdmProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.bar.close()
