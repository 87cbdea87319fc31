"""The generic transformer of the C core, seen from Python.

`ModelConfig` is built from the binding's table of `rg_model_config`'s fields
(`_core.config_fields()`, csrc/python/model.c); what each model family sets is
its module in reviewgen/weights/ (docs/model_layout.md). `Model` wraps the core
object `reviewgen._core.Model`: one flat parameter block, one flat gradient
block, forward/backward for training, and a key/value cache for generation.

Conventions (the same as the core's):
  * token ids, masks and targets are int32 arrays; LM targets are Hugging
    Face `labels` (B, T) (shifted inside, -100 ignored), classifier targets
    are class ids (B,);
  * classification heads read token 0, so encoder batches are right-padded;
  * causal models number positions by counting real tokens (attention mask),
    so generation uses LEFT-padded prompts: `reset_cache(B, max_len)`, then
    `forward_logits(prompts, mask)` and `decode_step(next_tokens)`;
  * `set_trainable(k, head_policy)` trains only the last k blocks + final norm
    + head; with a tied LM head, 'train' trains wte through the head only,
    'untie' copies wte into a new `lm_head.w` and trains that.
"""
from __future__ import annotations

import dataclasses
from typing import Dict, Iterable, List, Optional

import numpy as np

from ._native import _core

# The configuration's fields, kinds and defaults are the binding's table
# (csrc/python/model.c, mirroring rg_model_config); nothing here repeats them.
CONFIG_FIELDS = tuple(_core.config_fields())
_CHOICES = {f["name"]: tuple(f["choices"]) for f in CONFIG_FIELDS if f["kind"] == "choice"}
NORMS = _CHOICES["norm"]
POSITIONS = _CHOICES["position"]
ACTIVATIONS = _CHOICES["activation"]
HEADS = _CHOICES["head"]
HEAD_POLICIES = ("frozen", "train", "untie")
# LoRA sites of a block and their bits in ModelConfig.lora_targets (rg_model.h rg_lora_site);
# PEFT's module names per family are reviewgen.weights.lora's business.
LORA_SITES = dict(_core.lora_sites())


def lora_target_bits(targets) -> int:
    """The lora_targets bitmask of `targets`: an int bitmask, or core site names
    (q, k, v, qkv, o, fc, gate, up, fc2)."""
    if isinstance(targets, (int, np.integer)) and not isinstance(targets, bool):
        return int(targets)
    if isinstance(targets, str):
        targets = [targets]
    bits = 0
    for name in targets:
        if name not in LORA_SITES:
            raise ValueError(f"unknown LoRA site {name!r}; the core's sites are {sorted(LORA_SITES)}")
        bits |= LORA_SITES[name]
    return bits


def lora_site_names(bits: int) -> List[str]:
    return [name for name, bit in LORA_SITES.items() if bits & bit]
_PYTHON_TYPES = {"int": int, "flag": bool, "float": float, "choice": str}


class _ModelConfigMethods:
    """Behaviour of ModelConfig; its fields come from CONFIG_FIELDS."""

    def __post_init__(self):
        self._check_kinds()
        if self.n_head <= 0 or self.n_embd <= 0:
            raise ValueError("ModelConfig: n_head and n_embd must be positive")
        # 0 means "derive it", as in the field docs of the binding's table.
        if not self.n_kv_head:
            self.n_kv_head = self.n_head
        if not self.head_dim:
            if self.n_embd % self.n_head:
                raise ValueError(f"ModelConfig: n_embd {self.n_embd} is not a multiple of n_head "
                                 f"{self.n_head}; give head_dim explicitly")
            self.head_dim = self.n_embd // self.n_head
        if not self.n_inner:
            self.n_inner = 4 * self.n_embd
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"ModelConfig: {name} must be one of {allowed}, "
                                 f"got {getattr(self, name)!r}")
        if self.n_head % self.n_kv_head:
            raise ValueError(f"ModelConfig: n_kv_head {self.n_kv_head} must divide n_head {self.n_head}")
        if self.head != "lm" and self.num_labels <= 0:
            raise ValueError("ModelConfig: classification heads need num_labels > 0")

    def _check_kinds(self) -> None:
        """Integers must be integers: 8.5, "8" or true for n_head are refused,
        not rounded (a checkpoint with `n_head: true` once loaded as 1 head)."""
        for spec in CONFIG_FIELDS:
            name, kind = spec["name"], spec["kind"]
            value = getattr(self, name)
            if kind == "int":
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
                    raise TypeError(f"ModelConfig: {name} must be an integer, got {value!r} "
                                    f"({type(value).__name__})")
                setattr(self, name, int(value))
            elif kind == "flag":
                if isinstance(value, (bool, np.bool_)) or (isinstance(value, (int, np.integer)) and value in (0, 1)):
                    setattr(self, name, bool(value))
                else:
                    raise TypeError(f"ModelConfig: {name} must be true or false, got {value!r} "
                                    f"({type(value).__name__})")
            elif kind == "float":
                if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
                    raise TypeError(f"ModelConfig: {name} must be a number, got {value!r} "
                                    f"({type(value).__name__})")
                setattr(self, name, float(value))
            elif kind == "choice" and not isinstance(value, str):
                raise TypeError(f"ModelConfig: {name} must be a string, got {value!r}")

    def to_dict(self) -> Dict[str, object]:
        """The dict that `_core.Model` takes (flags as 0/1)."""
        out = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            out[field.name] = int(value) if isinstance(value, bool) else value
        return out

    @classmethod
    def from_dict(cls, values: Dict[str, object]) -> "ModelConfig":
        kinds = {f["name"]: f["kind"] for f in CONFIG_FIELDS}
        unknown = set(values) - set(kinds)
        if unknown:
            raise ValueError(f"ModelConfig: unknown fields {sorted(unknown)}")
        return cls(**{name: bool(value) if kinds[name] == "flag" else value
                      for name, value in values.items()})

    def replace(self, **changes) -> "ModelConfig":
        return dataclasses.replace(self, **changes)


ModelConfig = dataclasses.make_dataclass(
    "ModelConfig",
    [(f["name"], _PYTHON_TYPES[f["kind"]],
      dataclasses.field() if f["required"] else dataclasses.field(default=f["default"]))
     for f in CONFIG_FIELDS],
    bases=(_ModelConfigMethods,), kw_only=True)
ModelConfig.__module__ = __name__
ModelConfig.__doc__ = ("Configuration of the generic transformer, keyword arguments only: "
                       + "; ".join(f"{f['name']}: {f['doc']}" for f in CONFIG_FIELDS))


def _int32(array, name: str) -> np.ndarray:
    """int32 C-contiguous copy/view of integer input; refuses values that do not fit."""
    array = np.asarray(array)
    if array.dtype == np.int32:
        return np.ascontiguousarray(array)
    if array.dtype.kind not in "iub":
        raise TypeError(f"{name}: expected integer ids, got dtype {array.dtype}")
    if array.size and (array.min() < np.iinfo(np.int32).min or array.max() > np.iinfo(np.int32).max):
        raise ValueError(f"{name}: values do not fit in int32")
    return np.ascontiguousarray(array, dtype=np.int32)


class Model:
    """A transformer held by the C core. See the module docstring for conventions."""

    def __init__(self, config: ModelConfig, *, initialize: bool = True):
        """`initialize=False` leaves every parameter 0, for loaders that write
        them all (the random draw would cost more than the load)."""
        self.config = config
        self._core = _core.Model(config.to_dict(), initialize=initialize)
        self._refresh_table()

    # -- parameters ---------------------------------------------------------
    def _refresh_table(self):
        self._table = {entry["name"]: entry for entry in self._core.param_table()}
        self.config.tie_word_embeddings = bool(self._core.config["tie_word_embeddings"])

    @property
    def core(self):
        """The `_core.Model` object (for the trainer and the optimizer)."""
        return self._core

    @property
    def parameters(self) -> np.ndarray:
        """Flat float32 view of every parameter (writes go straight into the model)."""
        return self._core.parameters

    @property
    def gradients(self) -> np.ndarray:
        return self._core.gradients

    def param_table(self) -> List[dict]:
        return self._core.param_table()

    def param_names(self) -> List[str]:
        return list(self._table)

    def _view(self, block: np.ndarray, name: str, key: str = "offset") -> np.ndarray:
        try:
            entry = self._table[name]
        except KeyError:
            raise KeyError(f"no parameter named {name!r} (see docs/model_layout.md)") from None
        start = entry.get(key, entry["offset"])
        if start is None:
            raise KeyError(f"{name!r} has no gradient (a base weight of a LoRA model)")
        return block[start:start + entry["numel"]].reshape(entry["shape"])

    def param(self, name: str) -> np.ndarray:
        """Writable view of one named parameter, shaped as in docs/model_layout.md."""
        return self._view(self._core.parameters, name)

    def grad(self, name: str) -> np.ndarray:
        """View of one tensor's gradient (with LoRA the gradient block is compact:
        each trainable tensor at its table entry's grad_offset)."""
        return self._view(self._core.gradients, name, "grad_offset")

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of every parameter by internal name."""
        return {name: self.param(name).copy() for name in self._table}

    def load_state_dict(self, tensors: Dict[str, np.ndarray], strict: bool = True) -> None:
        """Copies arrays named as in docs/model_layout.md into the model."""
        missing = [name for name in self._table if name not in tensors]
        unexpected = [name for name in tensors if name not in self._table]
        if strict and (missing or unexpected):
            raise KeyError(f"load_state_dict: missing {missing}, unexpected {unexpected}")
        for name, value in tensors.items():
            if name not in self._table:
                continue
            value = np.asarray(value)
            if value.shape != tuple(self._table[name]["shape"]):
                raise ValueError(f"load_state_dict: {name} has shape {value.shape}, "
                                 f"the model expects {tuple(self._table[name]['shape'])}")
            self.set_param(name, value)

    def set_param(self, name: str, values: np.ndarray, row_offset: int = 0, bfloat16: bool = False,
                  quantized: Optional[str] = None) -> None:
        """Copy `values` (float32/16/64, or uint16 bfloat16 bits; any strides) into rows
        [row_offset, row_offset + len(values)) of a parameter, in the core (rg_param_write).
        quantized ("Q4_0", "Q4_1", "Q8_0"): values are llama.cpp blocks, a (rows, bytes) uint8
        array, dequantized by the core as they are written."""
        self._core.set_param(name, values, int(row_offset), bool(bfloat16), quantized)

    # -- LoRA -----------------------------------------------------------------
    @property
    def lora_rank(self) -> int:
        return int(self.config.lora_rank)

    def add_lora(self, rank: int, alpha: float = 8.0, dropout: float = 0.0, targets=("q", "v")) -> None:
        """Replace the core model by one with LoRA adapters on `targets` (core site names
        or a bitmask, see LORA_SITES) of every block: A kaiming-uniform, B zero, so the
        model computes what it did. The base weights are copied and frozen; only the
        adapters (and a classifier's head layers) train, and the gradient block holds
        only them. Views of the old parameters stay valid but no longer belong to the model."""
        if self.lora_rank:
            raise ValueError("add_lora: the model has adapters already")
        bits = lora_target_bits(targets)
        config = self.config.replace(lora_rank=int(rank), lora_alpha=float(alpha),
                                     lora_dropout=float(dropout), lora_targets=bits)
        old = self._core
        new = _core.Model(config.to_dict(), initialize=False)
        new_table = {entry["name"]: entry for entry in new.param_table()}
        source, target = old.parameters, new.parameters
        for entry in old.param_table():
            into = new_table[entry["name"]]
            target[into["offset"]:into["offset"] + into["numel"]] = \
                source[entry["offset"]:entry["offset"] + entry["numel"]]
        self.config = config
        self._core = new
        self._refresh_table()

    def lora_state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the adapters by internal name (h.<l>.lora.<site>.A / .B)."""
        return {name: self.param(name).copy() for name in self._table if ".lora." in name}

    def merge_lora(self) -> None:
        """Add each adapter's (alpha / r) * B @ A into its base weight (the forward then skips them)."""
        self._core.merge_lora()

    def unmerge_lora(self) -> None:
        self._core.unmerge_lora()

    @property
    def lora_merged(self) -> bool:
        return bool(self._core.lora_merged)

    def without_lora(self) -> "Model":
        """A plain model (no adapters) whose weights are this one's with the adapters
        merged in: what a Hugging Face exporter takes."""
        merged_here = self.lora_rank and not self.lora_merged
        # merge + unmerge would leave rounding in the base weights: restore them bit-exactly
        snapshot = self.parameters.copy() if merged_here else None
        if merged_here:
            self.merge_lora()
        try:
            plain = Model(self.config.replace(lora_rank=0, lora_targets=0), initialize=False)
            plain.load_state_dict({name: self.param(name) for name in plain.param_names()})
        finally:
            if merged_here:
                self.unmerge_lora()
                self.parameters[:] = snapshot
        return plain

    # -- training -------------------------------------------------------------
    def forward(self, tokens, attention_mask=None, targets=None, token_types=None,
                train: bool = False, seed: int = 0):
        """Mean loss (float) when targets are given, else logits (LM (B, T, V), classifier (B, K)).
        A batch whose targets are all -100 scores nothing and gives 0.0 (PyTorch: NaN); the
        evaluators (Generator.evaluate, review_loss) refuse or never build such batches."""
        return self._core.forward(
            _int32(tokens, "tokens"),
            None if attention_mask is None else _int32(attention_mask, "attention_mask"),
            None if targets is None else _int32(targets, "targets"),
            None if token_types is None else _int32(token_types, "token_types"),
            bool(train), int(seed) & 0xFFFFFFFFFFFFFFFF)

    def logits(self) -> np.ndarray:
        return self._core.logits()

    def backward(self, loss_scale: float = 1.0) -> None:
        self._core.backward(float(loss_scale))

    def zero_grad(self) -> None:
        self._core.zero_grad()

    def set_trainable(self, n_trainable_blocks: int, head_policy: str = "train") -> None:
        """Train only the last k blocks (+ final norm + head); k < 0 trains everything."""
        if head_policy not in HEAD_POLICIES:
            raise ValueError(f"head_policy must be one of {HEAD_POLICIES}, got {head_policy!r}")
        self._core.set_trainable(int(n_trainable_blocks), head_policy)
        self._refresh_table()

    def set_precision(self, precision: str) -> None:
        """"bf16": the linear layers' products take bf16 operands and sum in fp32 (weights,
        activations and every other op stay fp32); needs AVX512-BF16 (NotImplementedError
        elsewhere). "fp32": everything in fp32 (the default). TrainingConfig(bf16=True)
        sets it for a training run."""
        self._core.set_precision(precision)

    @property
    def precision(self) -> str:
        return self._core.precision

    def trainable_names(self) -> List[str]:
        return [entry["name"] for entry in self._core.param_table() if entry["trainable"]]

    # -- generation -------------------------------------------------------------
    def reset_cache(self, batch_size: int, max_length: int) -> None:
        self._core.reset_cache(int(batch_size), int(max_length))

    def forward_logits(self, tokens, attention_mask=None) -> np.ndarray:
        """Appends LEFT-padded prompts (B, T) to the cache; logits of the last column (B, V)."""
        return self._core.forward_logits(
            _int32(tokens, "tokens"),
            None if attention_mask is None else _int32(attention_mask, "attention_mask"))

    def decode_step(self, tokens) -> np.ndarray:
        """Appends one token per row (B,); logits (B, V) for the next one."""
        return self._core.decode_step(_int32(tokens, "tokens"))

    def greedy_generate(self, prompts: Iterable[Iterable[int]], max_new_tokens: int,
                        pad_id: int = 0, eos_id: Optional[int] = None) -> List[List[int]]:
        """Greedy decoding of a batch of prompts (lists of ids); returns the new ids per
        prompt (stopping after eos_id when given). The sampling generator lives in
        reviewgen.core.generation; this is the reference path used by the tests."""
        prompts = [list(p) for p in prompts]
        if not prompts or any(len(p) == 0 for p in prompts):
            raise ValueError("greedy_generate: every prompt needs at least one token")
        B, T = len(prompts), max(len(p) for p in prompts)
        tokens = np.full((B, T), pad_id, dtype=np.int32)
        mask = np.zeros((B, T), dtype=np.int32)
        for b, p in enumerate(prompts):
            tokens[b, T - len(p):] = p
            mask[b, T - len(p):] = 1
        self.reset_cache(B, T + max_new_tokens)
        logits = self.forward_logits(tokens, mask)
        out = [[] for _ in range(B)]
        done = np.zeros(B, dtype=bool)
        for step in range(max_new_tokens):
            next_ids = logits.argmax(axis=1).astype(np.int32)
            for b in range(B):
                if not done[b]:
                    out[b].append(int(next_ids[b]))
                    done[b] = eos_id is not None and next_ids[b] == eos_id
            if done.all() or step == max_new_tokens - 1:
                break
            logits = self.decode_step(np.where(done, pad_id, next_ids).astype(np.int32))
        return out


__all__ = ["ModelConfig", "Model", "NORMS", "POSITIONS", "ACTIVATIONS", "HEADS", "HEAD_POLICIES",
           "LORA_SITES", "lora_target_bits", "lora_site_names"]
