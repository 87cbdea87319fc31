"""Training hyperparameters: one :class:`TrainingConfig` per experiment.

The defaults are the seed study's final hyperparameters (its "Hiperparámetros
finales" table), which were Hugging Face ``TrainingArguments``:

=============================  ===========================  ==================
field                          generator (GPT-2)            classifier (BERT)
=============================  ===========================  ==================
num_train_epochs               5                            3
learning_rate                  5e-4                         5e-5
per_device_train_batch_size    8                            8
per_device_eval_batch_size     8                            8
gradient_accumulation_steps    4                            4
lr_scheduler_type              linear                       linear
warmup_ratio                   0.1                          0.1
weight_decay                   0.1                          0.1
adam_beta1 / adam_beta2        0.95 / 0.999                 0.95 / 0.999
adam_epsilon                   1e-8                         1e-8
max_grad_norm                  1.0 (HF default)             1.0
evaluation / save strategy     epoch                        epoch
load_best_model_at_end         true (best = lowest eval loss)
fp16                           true (accepted; see below)
=============================  ===========================  ==================

``fp16`` is kept so that a config file of the study loads unchanged, but the
CPU core ignores it. Its mixed precision is ``bf16``: the linear layers'
products take bf16 operands and sum in fp32, while weights, activations, the
optimizer's state and every other op stay fp32 (as ``torch.autocast`` on a CPU
does); it needs AVX512-BF16 and falls back to fp32, with a warning, elsewhere.

``trainable_blocks`` is the layer freezing the study used: only the last
``trainable_blocks`` transformer blocks (plus the final norm and the head)
train; -1 trains everything.

A config is saved and loaded as JSON (:meth:`TrainingConfig.save` /
:meth:`TrainingConfig.load`), so one file describes an experiment.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass
from typing import Any, Mapping

__all__ = ["JsonConfig", "TrainingConfig", "TASKS", "SCHEDULES", "HEAD_POLICIES"]

TASKS = ("generator", "classifier")
SCHEDULES = ("linear", "constant", "constant_with_warmup")
HEAD_POLICIES = ("frozen", "train", "untie")


def read_json_object(path: str | os.PathLike, what: str = "a JSON object",
                     error: type = ValueError) -> dict:
    """The JSON object in a file; `error` (naming the file) when it cannot be read,
    is not valid JSON, or holds something else than an object."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            values = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as problem:
        raise error(f"cannot read {path}: not valid JSON ({problem})") from None
    except RecursionError:
        raise error(f"cannot read {path}: its JSON is nested too deeply") from None
    except OSError as problem:
        raise error(f"cannot read {path}: {problem.strerror}") from None
    if not isinstance(values, dict):
        raise error(f"{path}: expected {what}")
    return values


class JsonConfig:
    """JSON round trip for the config dataclasses (one file per experiment).

    Unknown keys are errors (a typo must not be ignored); missing keys take the
    defaults. ``_nested`` maps a field name to the JsonConfig class of its value."""

    _nested: dict = {}

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]):
        if not isinstance(values, Mapping):
            raise ValueError(f"{cls.__name__}: expected a mapping of fields, got {type(values).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"{cls.__name__}: unknown field(s) {', '.join(unknown)}; "
                             f"known fields: {', '.join(sorted(known))}")
        values = dict(values)
        for name, nested in cls._nested.items():
            if isinstance(values.get(name), Mapping):
                values[name] = nested.from_dict(values[name])
        return cls(**values)

    def save(self, path: str | os.PathLike) -> None:
        """Write the config as JSON, atomically (a temp file, then os.replace)."""
        from .files import atomic_write

        with atomic_write(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, indent=2, sort_keys=True)
            f.write("\n")

    @classmethod
    def load(cls, path: str | os.PathLike):
        """Read a config written by :meth:`save` (or by hand)."""
        return cls.from_dict(read_json_object(path, f"a JSON object of {cls.__name__} fields"))


@dataclass
class TrainingConfig(JsonConfig):
    """Hyperparameters of one fine-tuning run (names follow HF TrainingArguments)."""

    task: str = "generator"
    num_train_epochs: int = 5
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 4
    learning_rate: float = 5e-4
    lr_scheduler_type: str = "linear"
    warmup_ratio: float = 0.1
    weight_decay: float = 0.1
    adam_beta1: float = 0.95
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    max_grad_norm: float = 1.0
    evaluation_strategy: str = "epoch"
    save_strategy: str = "epoch"
    load_best_model_at_end: bool = True
    fp16: bool = True  # accepted for compatibility with the study's config; ignored on CPU
    bf16: bool = False  # bf16 products in the linear layers (AVX512-BF16 CPUs; fp32 elsewhere)
    trainable_blocks: int = 1
    head_policy: str = "train"
    seed: int = 42
    # The frozen part (embeddings and the blocks below the trainable ones) gives each
    # example the same output in every epoch when its dropout is off: cache_frozen keeps
    # that output after the first epoch computed it and runs only the trainable blocks
    # afterwards (dropout stays on in them; it is off in the frozen part). It needs
    # row_width x n_embd floats per example, up to cache_frozen_max_mib, else it is not used.
    # frozen_dropout=False turns the frozen part's dropout off without caching.
    cache_frozen: bool = False
    cache_frozen_max_mib: int = 4096
    frozen_dropout: bool = True
    # LoRA (lora_rank > 0): adapters of that rank on the lora_targets projections of
    # EVERY block (PEFT target_modules names of the family, core site names, or
    # "all"); the base weights stay frozen and trainable_blocks does not apply
    # (head_policy still decides a classifier's head). See reviewgen.weights.lora.
    lora_rank: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_targets: Any = "all"

    def __post_init__(self):
        self.validate()

    # ------------------------------------------------------------------ constructors

    @classmethod
    def for_generator(cls, **overrides: Any) -> "TrainingConfig":
        """The study's generator (GPT-2) settings, with any field overridden."""
        values = dict(task="generator", num_train_epochs=5, learning_rate=5e-4)
        values.update(overrides)
        return cls(**values)

    @classmethod
    def for_classifier(cls, **overrides: Any) -> "TrainingConfig":
        """The study's classifier (BERT) settings, with any field overridden."""
        values = dict(task="classifier", num_train_epochs=3, learning_rate=5e-5)
        values.update(overrides)
        return cls(**values)

    # ------------------------------------------------------------------ checks

    def validate(self) -> None:
        """Raise ValueError naming the first field that cannot be used."""

        def fail(field: str, why: str) -> None:
            raise ValueError(f"TrainingConfig.{field}: {why} (got {getattr(self, field)!r})")

        def is_int(value) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        def is_number(value) -> bool:
            return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

        if self.task not in TASKS:
            fail("task", f"must be one of {TASKS}")
        for name in ("num_train_epochs", "per_device_train_batch_size", "per_device_eval_batch_size",
                     "gradient_accumulation_steps"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                fail(name, "must be an integer >= 1")
        if not is_number(self.learning_rate) or self.learning_rate < 0:
            fail("learning_rate", "must be a finite number >= 0")
        if self.lr_scheduler_type not in SCHEDULES:
            fail("lr_scheduler_type", f"must be one of {SCHEDULES}")
        if not is_number(self.warmup_ratio) or not 0 <= self.warmup_ratio <= 1:
            fail("warmup_ratio", "must lie in [0, 1]")
        if not is_number(self.weight_decay) or self.weight_decay < 0:
            fail("weight_decay", "must be a finite number >= 0")
        for name in ("adam_beta1", "adam_beta2"):
            if not is_number(getattr(self, name)) or not 0 <= getattr(self, name) < 1:
                fail(name, "must lie in [0, 1)")
        if not is_number(self.adam_epsilon) or self.adam_epsilon < 0:
            fail("adam_epsilon", "must be a finite number >= 0")
        if not is_number(self.max_grad_norm) or self.max_grad_norm < 0:
            fail("max_grad_norm", "must be a finite number >= 0 (0 disables clipping)")
        for name in ("evaluation_strategy", "save_strategy"):
            if getattr(self, name) != "epoch":
                fail(name, "only 'epoch' is supported")
        for name in ("load_best_model_at_end", "fp16", "bf16", "cache_frozen", "frozen_dropout"):
            if not isinstance(getattr(self, name), bool):
                fail(name, "must be true or false")
        if not is_int(self.cache_frozen_max_mib) or self.cache_frozen_max_mib < 1:
            fail("cache_frozen_max_mib", "must be an integer >= 1")
        if not is_int(self.trainable_blocks) or self.trainable_blocks < -1:
            fail("trainable_blocks", "must be an integer >= 0, or -1 to train everything")
        if self.head_policy not in HEAD_POLICIES:
            fail("head_policy", f"must be one of {HEAD_POLICIES}")
        if not is_int(self.seed) or self.seed < 0:
            fail("seed", "must be an integer >= 0")
        if not is_int(self.lora_rank) or self.lora_rank < 0:
            fail("lora_rank", "must be an integer >= 0 (0: no LoRA)")
        if not is_number(self.lora_alpha) or self.lora_alpha <= 0:
            fail("lora_alpha", "must be a finite number > 0")
        if not is_number(self.lora_dropout) or not 0 <= self.lora_dropout < 1:
            fail("lora_dropout", "must lie in [0, 1)")
        targets = self.lora_targets
        if not (isinstance(targets, str) and targets) and not (
                isinstance(targets, (list, tuple)) and targets and all(isinstance(t, str) for t in targets)):
            fail("lora_targets", "must be a non-empty module name list, a name, or 'all'")

    # ------------------------------------------------------------------ derived values

    def steps_per_epoch(self, num_batches: int) -> int:
        """Optimizer updates per epoch, as HF counts them: a last, shorter
        accumulation group still makes one update."""
        if num_batches < 1:
            raise ValueError(f"an epoch needs at least one batch (got {num_batches})")
        return math.ceil(num_batches / self.gradient_accumulation_steps)

    def total_steps(self, num_batches: int) -> int:
        """Optimizer updates in the whole run."""
        return self.steps_per_epoch(num_batches) * self.num_train_epochs

    def warmup_steps(self, num_batches: int) -> int:
        """HF: ceil(warmup_ratio * total_steps)."""
        return math.ceil(self.warmup_ratio * self.total_steps(num_batches))


