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

import hashlib
import json
import os
import struct
from typing import Dict, Optional

import numpy as np

from ..core.config import read_json_object
from ..core.files import atomic_write
from .checkpoint import BFloat16Array, WeightsError

__all__ = ["read_config", "read_safetensors", "read_weights", "save_safetensors", "TensorFiles",
           "CHECKSUM_KEY", "weights_path"]

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
           "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}

# __metadata__ key of the per-tensor sha256 digests our exporter writes (a JSON object
# name -> hex digest, as a string: safetensors metadata is str -> str).
CHECKSUM_KEY = "reviewgen.sha256"


class TensorFiles(dict):
    """name -> array, and `files`: name -> the path of the file that holds it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.files: Dict[str, str] = {}

    def take(self, other: "TensorFiles") -> None:
        for name, value in other.items():
            self[name] = value
            self.files[name] = other.files[name]


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _header_entry(name, entry, data_size: int):
    """(numpy dtype string, shape, begin, end) of one header entry, checked."""
    if not isinstance(entry, dict):
        raise ValueError(f"tensor {name!r}: header entry is not an object")
    dtype_name = entry.get("dtype")
    dtype = _DTYPES.get(dtype_name) if isinstance(dtype_name, str) else None
    if dtype is None:
        raise ValueError(f"tensor {name!r} has unsupported dtype {dtype_name!r}")
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
        raise ValueError(f"tensor {name!r}: shape {shape!r} is not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_int(x) for x in offsets):
        raise ValueError(f"tensor {name!r}: data_offsets {offsets!r} is not a pair of integers")
    begin, end = offsets
    size = np.dtype(dtype).itemsize
    for d in shape:
        size *= d
        if size > data_size:
            break
    if not 0 <= begin <= end <= data_size or end - begin != size:
        raise ValueError(f"tensor {name!r}: bytes [{begin}, {end}) of the {data_size} data bytes "
                         f"do not hold {tuple(shape)} {dtype_name}")
    return dtype, tuple(shape), begin, end


def _checksums(metadata) -> Optional[Dict[str, str]]:
    if metadata is None:
        return None
    if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                 for k, v in metadata.items()):
        raise ValueError("__metadata__ is not an object of strings")
    if CHECKSUM_KEY not in metadata:
        return None
    try:
        digests = json.loads(metadata[CHECKSUM_KEY])
    except ValueError:
        digests = None
    if not isinstance(digests, dict) or not all(isinstance(v, str) for v in digests.values()):
        raise ValueError(f"__metadata__[{CHECKSUM_KEY!r}] is not an object of digests")
    return digests


def _digest(array: np.ndarray) -> str:
    return hashlib.sha256(memoryview(np.ascontiguousarray(array).view(np.uint8).reshape(-1))).hexdigest()


def read_safetensors(path: str, verify: bool = True) -> TensorFiles:
    """Every tensor of one .safetensors file as a read-only view of the memory-mapped file.

    A file written by :func:`save_safetensors` carries a sha256 of each
    tensor; with ``verify`` each is checked, and a mismatch names the tensor."""
    try:
        file_size = os.path.getsize(path)
        with open(path, "rb") as handle:
            head = handle.read(8)
            if len(head) != 8:
                raise ValueError("shorter than its 8-byte header size")
            (header_size,) = struct.unpack("<Q", head)
            if header_size > file_size - 8:
                raise ValueError(f"header of {header_size} bytes runs past the end of the file")
            header = json.loads(handle.read(header_size).decode("utf-8"))
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
        digests = _checksums(header.get("__metadata__"))
        data_size = file_size - 8 - header_size
        data = np.memmap(path, dtype=np.uint8, mode="r", offset=8 + header_size) \
            if data_size > 0 else np.zeros(0, np.uint8)
        tensors = TensorFiles()
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            dtype, shape, begin, end = _header_entry(name, entry, data_size)
            array = data[begin:end].view(dtype).reshape(shape)
            if verify and digests is not None:
                expected = digests.get(name)
                if expected is None:
                    raise ValueError(f"tensor {name!r} has no checksum in the file's {CHECKSUM_KEY}")
                if _digest(data[begin:end]) != expected:
                    raise ValueError(f"tensor {name!r} fails its sha256 checksum (the data is corrupt)")
            tensors[name] = array.view(BFloat16Array) if entry["dtype"] == "BF16" else array
            tensors.files[name] = path
        if verify and digests is not None:
            absent = sorted(set(digests) - set(tensors))
            if absent:
                raise ValueError(f"tensors {absent[:8]} have checksums but are not in the file")
        return tensors
    except (OSError, ValueError, KeyError, TypeError, RecursionError, OverflowError) as error:
        reason = "nested too deeply" if isinstance(error, RecursionError) else f"{type(error).__name__}: {error}"
        raise WeightsError(f"cannot read safetensors file {path}: {reason}") from None


def read_config(directory: str) -> dict:
    """A model directory's config.json as a dict."""
    path = os.path.join(directory, "config.json")
    if not os.path.isfile(path):
        raise WeightsError(f"{directory} has no config.json")
    return read_json_object(path, error=WeightsError)


def weights_path(directory: str) -> str:
    """The file read_weights reads first in `directory` (for messages)."""
    for name in ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"):
        candidate = os.path.join(directory, name)
        if os.path.isfile(candidate):
            return candidate
    return os.path.join(directory, "model.safetensors")


def _shard_path(directory: str, index_path: str, shard) -> str:
    """The path of one shard named by the index, which must stay inside `directory`."""
    if not isinstance(shard, str) or not shard or "\x00" in shard:
        raise WeightsError(f"{index_path}: shard name {shard!r} is not a file name")
    if os.path.isabs(shard) or os.path.normpath(shard).split(os.sep)[0] == os.pardir:
        raise WeightsError(f"{index_path}: shard {shard!r} lies outside the model directory")
    path = os.path.join(directory, shard)
    root = os.path.realpath(directory)
    if os.path.commonpath([root, os.path.realpath(path)]) != root:
        raise WeightsError(f"{index_path}: shard {shard!r} resolves outside the model directory "
                           "(a symlink?)")
    return path


def read_weights(directory: str) -> TensorFiles:
    """Hugging Face name -> array for every tensor of a model directory's weight file(s);
    `.files` says which file holds each."""
    single = os.path.join(directory, "model.safetensors")
    if os.path.isfile(single):
        return read_safetensors(single)
    index_path = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index_path):
        index = read_json_object(index_path, error=WeightsError)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict):
            raise WeightsError(f"{index_path}: weight_map is not an object of tensor -> shard")
        shards = {}
        for tensor, shard in weight_map.items():
            shards.setdefault(_shard_path(directory, index_path, shard), []).append(tensor)
        tensors = TensorFiles()
        for path in sorted(shards):
            tensors.take(read_safetensors(path))
        missing = sorted(name for names in shards.values() for name in names if name not in tensors)
        if missing:
            raise WeightsError(f"{index_path} maps tensors {missing[:8]} to shards that do not hold them")
        return tensors
    legacy = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(legacy):
        tensors = TensorFiles(_read_pickled_weights(legacy))
        tensors.files.update(dict.fromkeys(tensors, legacy))
        return tensors
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
    """Write float32 tensors as a model.safetensors that transformers loads, atomically
    (core/files.py), with a sha256 of each tensor in its metadata (CHECKSUM_KEY) that
    read_safetensors verifies."""
    arrays = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in sorted(tensors.items())}
    header, offset = {}, 0
    for name, array in arrays.items():
        header[name] = {"dtype": "F32", "shape": list(array.shape), "data_offsets": [offset, offset + array.nbytes]}
        offset += array.nbytes
    header["__metadata__"] = {"format": "pt",
                              CHECKSUM_KEY: json.dumps({n: _digest(a) for n, a in arrays.items()},
                                                       separators=(",", ":"))}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    with atomic_write(path, "wb") as handle:
        handle.write(struct.pack("<Q", len(text)))
        handle.write(text)
        for array in arrays.values():
            handle.write(memoryview(array.view(np.uint8).reshape(-1)))
