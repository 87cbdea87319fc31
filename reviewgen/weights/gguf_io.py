"""Reading GGUF files (llama.cpp's checkpoint format) into float32 numpy arrays.

The `gguf` package does the parsing (GGUFReader) and the block dequantization
(gguf.quants.dequantize); this module adds what reviewgen needs on top:
metadata as plain Python values, tensors as owned, writable float32 arrays in
numpy (row-major) order, and one exception type, `WeightsError`, for every way
a file can be unusable (missing, truncated, corrupt, unsupported type).

Shapes: GGUF lists dimensions fastest-varying first (ggml order); everything
returned here is in numpy order, so a Linear weight of `out` rows and `in`
columns comes back as (out, in), as torch.nn.Linear stores it.
"""

from __future__ import annotations

import mmap
import os
from typing import Any

import numpy as np

from .checkpoint import WeightsError

try:
    import gguf
    from gguf.quants import dequantize as _gguf_dequantize
except ImportError as exc:  # pragma: no cover - depends on the environment
    gguf = None
    _GGUF_IMPORT_ERROR = exc
else:
    _GGUF_IMPORT_ERROR = None


def _require_gguf() -> None:
    if gguf is None:
        raise WeightsError(
            f"reading GGUF files needs the 'gguf' package (pip install gguf): {_GGUF_IMPORT_ERROR}"
        )


def _field_value(field: Any) -> Any:
    """A GGUF metadata field as a plain Python value (str, int, float, bool or list)."""
    value = field.contents()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, list):
        return [v.item() if isinstance(v, np.generic) else v for v in value]
    return value


class GGUFFile:
    """One opened GGUF file: metadata and tensors, dequantized on request.

    The file is memory-mapped by GGUFReader; `tensor()` copies each tensor out
    as float32, so the arrays it returns stay valid after the file is closed.
    """

    def __init__(self, path: str | os.PathLike[str]):
        _require_gguf()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise WeightsError(f"GGUF file not found: {self.path}")
        try:
            self._reader = gguf.GGUFReader(self.path, "r")
        except Exception as exc:
            # GGUFReader reports a bad magic, a truncated header or tensor data
            # running past the end of the file with assorted exception types.
            raise WeightsError(
                f"cannot read GGUF file {self.path} (corrupt or truncated?): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._tensors = {t.name: t for t in self._reader.tensors}
        self._metadata: dict[str, Any] | None = None
        self._check_layout()

    def _check_layout(self) -> None:
        """Each tensor's bytes start on the file's alignment, lie inside the file and
        overlap no other tensor's (GGUFReader checks none of this)."""
        size = os.path.getsize(self.path)
        alignment = int(getattr(self._reader, "alignment", 32) or 32)
        start = int(getattr(self._reader, "data_offset", 0))
        spans = []
        if len(self._tensors) != len(self._reader.tensors):
            raise WeightsError(f"GGUF file {self.path} names a tensor twice")
        for t in self._reader.tensors:
            begin, length = int(t.data_offset), int(t.n_bytes)
            if (begin - start) % alignment:
                raise WeightsError(f"GGUF file {self.path}: tensor {t.name!r} starts at byte {begin}, "
                                   f"not on the file's {alignment}-byte alignment (corrupt offset?)")
            if begin < start or begin + length > size:
                raise WeightsError(f"GGUF file {self.path}: tensor {t.name!r} (bytes {begin}..{begin + length}) "
                                   f"lies outside the data section ({start}..{size})")
            spans.append((begin, begin + length, t.name))
        spans.sort()
        for (_, end, name), (begin, _, other) in zip(spans, spans[1:]):
            if begin < end:
                raise WeightsError(f"GGUF file {self.path}: tensors {name!r} and {other!r} overlap "
                                   "(corrupt offsets)")

    # -- metadata -----------------------------------------------------------
    @property
    def metadata(self) -> dict[str, Any]:
        """Every key/value pair except the GGUF header counters, decoded once."""
        if self._metadata is None:
            if self._reader is None:
                raise WeightsError(f"GGUF file {self.path} is closed")
            decoded = {}
            for key, field in self._reader.fields.items():
                if key.startswith("GGUF."):
                    continue  # version, tensor_count, kv_count: header, not metadata
                try:
                    decoded[key] = _field_value(field)
                except Exception as exc:
                    raise WeightsError(
                        f"cannot decode metadata key {key!r} in {self.path}: {exc}"
                    ) from exc
            self._metadata = decoded
        return self._metadata

    def get(self, key: str, default: Any = None) -> Any:
        return self.metadata.get(key, default)

    def require(self, key: str) -> Any:
        """A metadata value that must be present."""
        if key not in self.metadata:
            raise WeightsError(f"GGUF file {self.path} lacks metadata key {key!r}")
        return self.metadata[key]

    @property
    def architecture(self) -> str:
        return str(self.require("general.architecture"))

    # -- tensors ------------------------------------------------------------
    @property
    def tensor_names(self) -> list[str]:
        return list(self._tensors)

    def has_tensor(self, name: str) -> bool:
        return name in self._tensors

    def _info(self, name: str):
        if self._reader is None:
            raise WeightsError(f"GGUF file {self.path} is closed")
        try:
            return self._tensors[name]
        except KeyError:
            raise WeightsError(f"GGUF file {self.path} has no tensor {name!r}") from None

    def tensor_type(self, name: str) -> str:
        """The storage type's name as llama.cpp spells it: 'F32', 'Q4_1', ..."""
        return self._info(name).tensor_type.name

    def tensor_types(self) -> dict[str, str]:
        return {name: t.tensor_type.name for name, t in self._tensors.items()}

    def tensor_shape(self, name: str) -> tuple[int, ...]:
        """Shape in numpy order (slowest dimension first)."""
        return tuple(int(d) for d in reversed(self._info(name).shape.tolist()))

    def tensor(self, name: str) -> np.ndarray:
        """The tensor dequantized to a new, C-contiguous float32 array in numpy order."""
        info = self._info(name)
        shape = self.tensor_shape(name)
        qtype = info.tensor_type
        try:
            if qtype == gguf.GGMLQuantizationType.F64:
                values = np.asarray(info.data, dtype=np.float64)
            else:
                values = _gguf_dequantize(info.data, qtype)
        except NotImplementedError as exc:
            raise WeightsError(
                f"tensor {name!r} in {self.path} uses type {qtype.name}, which cannot be dequantized: {exc}"
            ) from exc
        except Exception as exc:
            raise WeightsError(
                f"cannot dequantize tensor {name!r} ({qtype.name}) in {self.path}: {exc}"
            ) from exc
        if values.size != int(np.prod(shape, dtype=np.int64)):
            raise WeightsError(
                f"tensor {name!r} in {self.path}: {values.size} values decoded, shape {shape} expected"
            )
        values = values.reshape(shape)
        # Dequantized blocks are already a new array; a float tensor may still be a
        # view of the read-only memory map, and only then is a copy made.
        owned = values.dtype == np.float32 and values.flags.c_contiguous and values.flags.writeable \
            and not isinstance(values.base, np.memmap) and _owns_memory(values)
        return values if owned else np.array(values, dtype=np.float32, order="C", copy=True)

    def tensors(self) -> dict[str, np.ndarray]:
        return {name: self.tensor(name) for name in self._tensors}

    def close(self) -> None:
        """Drop the memory map (arrays from `tensor()` are copies and stay valid)."""
        self._tensors = {}
        self._reader = None

    def __enter__(self) -> "GGUFFile":
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _owns_memory(array: np.ndarray) -> bool:
    """True unless the array's memory belongs to a memory map (directly or through views)."""
    base = array
    while base is not None:
        if isinstance(base, (np.memmap, memoryview, mmap.mmap)):
            return False
        base = getattr(base, "base", None)
    return True


def read_gguf(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """(metadata, {tensor name: float32 array}) of a whole GGUF file."""
    with GGUFFile(path) as f:
        return dict(f.metadata), f.tensors()
