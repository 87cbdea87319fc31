"""The one type every loader returns, and the one error every loader raises.

A :class:`Checkpoint` is a model as a file holds it, before any copy: the core
configuration, each internal parameter (docs/model_layout.md) as the row
blocks it is stacked from (views into the memory-mapped file where the format
allows; transposed views for GPT-2's Conv1D), tokenizer information and the
special token ids. :meth:`Checkpoint.build_model` writes every block once into
the core's parameter block through ``Model.set_param`` (rg_param_write), which
converts float16/bfloat16/float64 and checks each block against the shapes of
the core's own parameter table.
"""
from __future__ import annotations

import contextlib
import mmap
from dataclasses import dataclass, field
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from .._core import CoreError, NonFiniteError, ShapeError
from ..core.models import Model, ModelConfig

__all__ = ["WeightsError", "UnsupportedModelError", "BFloat16Array", "BlockQuantized", "as_float32", "Checkpoint",
           "SPECIAL_TOKEN_KEYS", "stack_blocks", "LabelMapping", "config_int", "config_errors",
           "minimum_parameters"]

# The names of the special token ids, as Hugging Face's config.json spells them.
SPECIAL_TOKEN_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id", "unk_token_id")


class WeightsError(ValueError):
    """A checkpoint (GGUF file, Hugging Face directory, alias or hub id) cannot be read or mapped."""


class UnsupportedModelError(WeightsError):
    """The checkpoint is readable but describes a model reviewgen's core cannot run."""


_REQUIRED = object()


def config_int(hf: Mapping[str, Any], key: str, default: Any = _REQUIRED, minimum: Optional[int] = 1,
               where: str = "config.json") -> int:
    """An integer field of a config.json, strictly: 8.5, "8", true and null are refused, not coerced."""
    if key not in hf or (hf[key] is None and default is not _REQUIRED):
        if default is _REQUIRED:
            raise WeightsError(f"{where} lacks {key!r}")
        return default
    value = hf[key]
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise WeightsError(f"{where}: {key} must be an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise WeightsError(f"{where}: {key} must be >= {minimum}, got {value}")
    return int(value)


@contextlib.contextmanager
def config_errors(path: str) -> Iterator[None]:
    """Any error translating a config (a WeightsError, a ModelConfig TypeError/ValueError,
    a missing key) becomes a WeightsError naming `path`."""
    try:
        yield
    except UnsupportedModelError as error:
        if path in str(error):
            raise
        raise UnsupportedModelError(f"{path}: {error}") from None
    except (WeightsError, CoreError, KeyError, IndexError, TypeError, ValueError, ZeroDivisionError,
            OverflowError) as error:
        if isinstance(error, WeightsError) and path in str(error):
            raise
        detail = f"lacks {error.args[0]!r}" if isinstance(error, KeyError) else str(error)
        raise WeightsError(f"{path}: {detail}") from None


def minimum_parameters(config: ModelConfig) -> int:
    """A lower bound on the number of parameters of a model of `config` (the token
    embedding and each block's attention and MLP weights), to compare with what a file
    holds before anything is allocated."""
    attention = config.n_embd * config.n_head * config.head_dim * 2
    mlp = config.n_embd * config.n_inner * 2
    return config.vocab_size * config.n_embd + config.n_layer * (attention + mlp)


class BFloat16Array(np.ndarray):
    """uint16 bits of bfloat16 values (numpy has no bfloat16); the core widens them."""


class BlockQuantized:
    """A 2-D tensor kept in one of llama.cpp's block formats (Q4_0, Q4_1, Q8_0): raw is a
    (rows, bytes) uint8 array, usually a view of the memory-mapped GGUF file. The core
    dequantizes it straight into a model's parameter block, so a loaded model holds
    the float32 weights once (np.asarray() gives a float32 copy, for inspection)."""

    ndim = 2
    dtype = np.dtype(np.float32)  # what it reads as

    def __init__(self, raw: np.ndarray, qtype: str, cols: int):
        self.raw, self.qtype = raw, qtype
        self.shape = (int(raw.shape[0]), int(cols))

    @property
    def size(self) -> int:
        return self.shape[0] * self.shape[1]

    def __len__(self) -> int:
        return self.shape[0]

    def take_rows(self, order: np.ndarray) -> "BlockQuantized":
        """The rows in `order` (a new raw array: blocks run along a row, so whole rows move)."""
        return BlockQuantized(np.ascontiguousarray(self.raw[order]), self.qtype, self.shape[1])

    def __array__(self, dtype=None, copy=None):
        from .._core import dequantize

        values = dequantize(self.raw, self.qtype)
        return values if dtype is None else values.astype(dtype)

    def __repr__(self) -> str:
        return f"BlockQuantized({self.qtype}, shape={self.shape})"


try:
    from numpy.lib.array_utils import byte_bounds as _byte_bounds  # numpy >= 2
except ImportError:  # pragma: no cover - numpy 1.x
    _byte_bounds = np.byte_bounds


def release_file_pages(array) -> None:
    """Let go of the resident pages of a memory-mapped checkpoint array once the core holds
    its values, so that loading never keeps the file's copy and the model's side by side
    (the kernel reads the pages again if the array is touched later). Other arrays: nothing."""
    raw = array.raw if isinstance(array, BlockQuantized) else array
    base = raw
    while base is not None and getattr(base, "_mmap", None) is None:
        base = getattr(base, "base", None)
    mapping = getattr(base, "_mmap", None)
    if mapping is None or not hasattr(mapping, "madvise") or not hasattr(mmap, "MADV_DONTNEED"):
        return
    try:
        start_of_map = np.frombuffer(mapping, np.uint8).ctypes.data
    except (TypeError, ValueError):  # a closed map
        return
    low, high = _byte_bounds(np.asarray(raw))
    first = -(-(low - start_of_map) // mmap.PAGESIZE) * mmap.PAGESIZE  # whole pages inside the array
    last = (high - start_of_map) // mmap.PAGESIZE * mmap.PAGESIZE
    if last > first >= 0:
        mapping.madvise(mmap.MADV_DONTNEED, first, last - first)


def as_float32(array: np.ndarray) -> np.ndarray:
    """The values of a checkpoint array as a C-contiguous float32 array (a copy when needed)."""
    if isinstance(array, BlockQuantized):
        return np.asarray(array)
    if isinstance(array, BFloat16Array):
        bits = np.ascontiguousarray(array.view(np.ndarray), dtype=np.uint16)
        return (bits.astype(np.uint32) << 16).view(np.float32)
    return np.ascontiguousarray(array, dtype=np.float32)


def stack_blocks(tensors: Dict[str, List[Tuple[str, np.ndarray]]]) -> Dict[str, np.ndarray]:
    """Internal name -> its blocks stacked into one float32 array (a copy)."""
    return {name: np.concatenate([as_float32(b) for _, b in blocks], axis=0) if len(blocks) > 1
            else as_float32(blocks[0][1]).copy() for name, blocks in tensors.items()}


class LabelMapping:
    """Class index <-> label value, for anything with a `labels` list (checkpoints, classifiers)."""

    labels: list

    @property
    def num_labels(self) -> int:
        return len(self.labels)

    @property
    def id2label(self) -> dict:
        return dict(enumerate(self.labels))

    @property
    def label2id(self) -> dict:
        return {label: index for index, label in enumerate(self.labels)}


@dataclass
class Checkpoint(LabelMapping):
    """What every loader returns (GGUF, Hugging Face GPT-2 / Llama / DistilBERT / BERT).

    family: "gpt2", "llama", "distilbert" or "bert".
    config: the core configuration.
    tensors: internal name -> the (file tensor name, array) blocks stacked row-wise into it.
    source: what was read, for messages (a path).
    hf_config: the model as a Hugging Face config.json dict (used again on export).
    special_tokens: bos/eos/pad/unk ids (SPECIAL_TOKEN_KEYS) where the source names them.
    tokenizer_dir: a directory holding the tokenizer files, or None.
    tokenizer: a tokenizers.Tokenizer when the file carries its own (GGUF), else None.
    labels: the label value of each class (classifiers).
    initialized: head tensors created here rather than read (classifiers).
    ignored_keys: tensors of the file that were not used.
    files: file tensor name -> the path of the file holding it, for messages.
    config_source: the file the configuration was read from (config.json, the GGUF).
    """

    family: str
    config: ModelConfig
    tensors: Dict[str, List[Tuple[str, np.ndarray]]]
    source: str
    hf_config: Dict[str, Any] = field(default_factory=dict)
    special_tokens: Dict[str, int] = field(default_factory=dict)
    tokenizer_dir: Optional[str] = None
    tokenizer: Any = None
    labels: list = field(default_factory=list)
    initialized: tuple = ()
    ignored_keys: tuple = ()
    files: Dict[str, str] = field(default_factory=dict)
    config_source: Optional[str] = None

    def _where(self, origin: str) -> str:
        return self.files.get(origin) or self.source

    def build_model(self) -> Model:
        """A core Model holding these weights (each block written once, by the core).

        Before the model is allocated, the configuration must not describe more
        parameters than the file holds values (a corrupt n_layer or n_embd fails
        here, fast, instead of allocating gigabytes)."""
        held = sum(int(block.size) for blocks in self.tensors.values() for _, block in blocks)
        needed = minimum_parameters(self.config)
        config_source = self.config_source or self.source
        if needed > held:
            raise WeightsError(f"{config_source}: the configuration describes at least {needed:,} parameters, "
                               f"but {self.source} holds only {held:,} values")
        try:
            model = Model(self.config, initialize=False)  # write_into fills every tensor or raises
        except (CoreError, ValueError, TypeError) as error:
            raise WeightsError(f"{config_source}: the core refuses the configuration: {error}") from None
        self.write_into(model)
        return model

    def write_into(self, model: Model) -> None:
        """Write every tensor into `model`; WeightsError names the file and the tensor."""
        table = {entry["name"]: entry for entry in model.param_table()}
        missing = [name for name in table if name not in self.tensors]
        unexpected = [name for name in self.tensors if name not in table]
        if missing or unexpected:
            described = f" for the model {self.config_source} describes" if self.config_source else ""
            raise WeightsError(f"{self.source}: parameters missing {missing[:8]}, unexpected {unexpected[:8]}"
                               f"{described}")
        for name, blocks in self.tensors.items():
            for origin, block in blocks:
                if isinstance(block, BlockQuantized):
                    continue
                if not isinstance(block, np.ndarray) or block.dtype.kind != "f" and not isinstance(block, BFloat16Array):
                    raise WeightsError(f"{self._where(origin)}: tensor {origin!r} holds "
                                       f"values of dtype {getattr(block, 'dtype', type(block).__name__)}, not floats")
        for name, blocks in self.tensors.items():
            shape = tuple(table[name]["shape"])
            row = 0
            for origin, block in blocks:
                try:
                    if isinstance(block, BlockQuantized):
                        model.set_param(name, block.raw, row, quantized=block.qtype)
                    else:
                        model.set_param(name, block, row, bfloat16=isinstance(block, BFloat16Array))
                    release_file_pages(block)
                except NonFiniteError:
                    raise WeightsError(f"{self._where(origin)}: tensor {origin!r} holds NaN or Inf") from None
                except (ShapeError, ValueError) as error:
                    raise WeightsError(f"{self._where(origin)}: tensor {origin!r} has shape {tuple(block.shape)}, "
                                       f"which does not fit {name} {shape} at row {row} ({error})") from None
                except TypeError as error:
                    raise WeightsError(f"{self._where(origin)}: tensor {origin!r}: {error}") from None
                row += len(block)
            if row != shape[0]:
                raise WeightsError(f"{self.source}: {name} received {row} rows, its shape is {shape}")

    @property
    def weights(self) -> Dict[str, np.ndarray]:
        """Internal name -> float32 C-contiguous array (a materialised copy, for inspection)."""
        return stack_blocks(self.tensors)

    @property
    def eos_id(self) -> Optional[int]:
        return self.special_tokens.get("eos_token_id")

    @property
    def pad_id(self) -> Optional[int]:
        return self.special_tokens.get("pad_token_id")
