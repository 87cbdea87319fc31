"""The one reader of Hugging Face model files: config.json, and the weights in model.safetensors,
its shards or pytorch_model.bin.

safetensors layout: a little-endian u64 header size, a JSON header giving each
tensor's dtype, shape and [begin, end) byte offsets after the header, then the
data. The file is memory-mapped and each tensor comes back as a read-only
numpy view of it (no copy): float32, float16 and float64 as such, bfloat16 as
a :class:`BFloat16Array` of its bits (the core widens it while writing the
parameter block), integer tensors (position ids) as integers.

``pytorch_model.bin`` is a pickle, which can run code when loaded: it is read
only through torch's ``weights_only=True`` loader, and only when torch happens
to be installed (it is not a dependency); otherwise the error says to convert
the file to safetensors.
"""
from __future__ import annotations

import json
import os
import struct
from typing import Dict

import numpy as np

from ..core.config import read_json_object
from .checkpoint import BFloat16Array, WeightsError

__all__ = ["read_config", "read_safetensors", "read_weights", "save_safetensors"]

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


def read_safetensors(path: str) -> Dict[str, np.ndarray]:
    """Every tensor of one .safetensors file as a read-only view of the memory-mapped file."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) != 8:
                raise ValueError("shorter than its 8-byte header size")
            (header_size,) = struct.unpack("<Q", head)
            if header_size > os.path.getsize(path) - 8:
                raise ValueError(f"header of {header_size} bytes runs past the end of the file")
            header = json.loads(handle.read(header_size))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size) \
            if os.path.getsize(path) > 8 + header_size else np.zeros(0, np.uint8)
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype = _DTYPES.get(entry.get("dtype"))
            if dtype is None:
                raise ValueError(f"tensor {name!r} has unsupported dtype {entry.get('dtype')!r}")
            shape = tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
            size = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
            if not 0 <= begin <= end <= data.size or end - begin != size:
                raise ValueError(f"tensor {name!r}: bytes [{begin}, {end}) do not hold {shape} {entry['dtype']}")
            array = data[begin:end].view(dtype).reshape(shape)
            tensors[name] = array.view(BFloat16Array) if entry["dtype"] == "BF16" else array
        return tensors
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise WeightsError(f"cannot read safetensors file {path}: {type(error).__name__}: {error}") from None


def read_config(directory: str) -> dict:
    """A model directory's config.json as a dict."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise WeightsError(f"{directory} has no config.json")
    return read_json_object(path, error=WeightsError)


def read_weights(directory: str) -> Dict[str, np.ndarray]:
    """Hugging Face name -> array for every tensor of a model directory's weight file(s)."""
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(single):
        return read_safetensors(single)
    index_path = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index_path):
        try:
            with open(index_path, encoding="utf-8") as handle:
                shards = sorted(set(json.load(handle)["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            raise WeightsError(f"cannot read {index_path}: {error}") from None
        tensors: Dict[str, np.ndarray] = {}
        for shard in shards:
            tensors.update(read_safetensors(os.path.join(directory, shard)))
        return tensors
    legacy = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(legacy):
        return _read_pickled_weights(legacy)
    raise WeightsError(f"{directory} has no model.safetensors (nor model.safetensors.index.json "
                       "or pytorch_model.bin)")


def _read_pickled_weights(path: str) -> Dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise WeightsError(f"{path}: pytorch_model.bin is a pickle and reviewgen reads it only with "
                           "torch's weights_only loader, and torch is not installed; convert it to "
                           "model.safetensors") from None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises UnpicklingError, RuntimeError, ...
        raise WeightsError(f"cannot read {path}: {error}") from None
    return {name: value.detach().float().numpy() for name, value in state.items() if hasattr(value, "detach")}


def save_safetensors(tensors: Dict[str, np.ndarray], path: str) -> None:
    """Write float32 tensors as a model.safetensors that transformers loads."""
    from safetensors.numpy import save_file

    save_file({name: np.ascontiguousarray(value, dtype=np.float32) for name, value in tensors.items()},
              path, metadata={"format": "pt"})
