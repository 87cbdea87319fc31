"""Reading GGUF files (llama.cpp's checkpoint format) into float32 numpy arrays.

The header (metadata and tensor table) is parsed here, in one pass over the
memory-mapped file: the `gguf` package's GGUFReader builds a numpy view per
metadata item, which takes seconds for a 49,152-token vocabulary. The `gguf`
package still names the tensor types, gives their block sizes and
dequantizes the formats the core does not read itself
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
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from .checkpoint import BlockQuantized, WeightsError

# The block formats the core dequantizes itself: bytes and values per block.
BLOCK_FORMATS = {"Q4_0": (18, 32), "Q4_1": (20, 32), "Q8_0": (34, 32)}

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


# Metadata value types of the GGUF format (v2 and v3): struct code, or a marker.
_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_NUMPY = {0: "<u1", 1: "<i1", 2: "<u2", 3: "<i2", 4: "<u4", 5: "<i4", 6: "<f4", 7: "?", 10: "<u8", 11: "<i8",
          12: "<f8"}
_STRING, _ARRAY = 8, 9


class _Truncated(Exception):
    pass


class _HeaderCursor:
    """Reads the little-endian GGUF header from a bytes-like object, bounds-checked."""

    def __init__(self, data):
        self.data, self.at = data, 0

    def take(self, n: int):
        if n < 0 or self.at + n > len(self.data):
            raise _Truncated(f"{n} bytes at offset {self.at} run past the end of the file ({len(self.data)} bytes)")
        start, self.at = self.at, self.at + n
        return self.data[start:self.at]

    def scalar(self, code: str):
        return struct.unpack(code, self.take(struct.calcsize(code)))[0]

    def string(self) -> str:
        return bytes(self.take(self.scalar("<Q"))).decode("utf-8")

    def value(self, kind: int):
        if kind in _SCALARS:
            return self.scalar(_SCALARS[kind])
        if kind == _STRING:
            return self.string()
        if kind == _ARRAY:
            item, count = self.scalar("<I"), self.scalar("<Q")
            if item in _NUMPY:  # one frombuffer, not one Python value per item
                dtype = np.dtype(_NUMPY[item])
                return np.frombuffer(self.take(count * dtype.itemsize), dtype=dtype).tolist()
            if item == _STRING:
                return [self.string() for _ in range(count)]
            if item == _ARRAY:
                return [self.value(_ARRAY) for _ in range(count)]
            raise ValueError(f"unknown array item type {item}")
        raise ValueError(f"unknown metadata value type {kind}")


@dataclass
class _TensorInfo:
    name: str
    shape: tuple             # ggml order (fastest dimension first), as the file lists it
    tensor_type: Any         # gguf.GGMLQuantizationType
    data_offset: int         # absolute, in the file
    n_bytes: int
    data: np.ndarray = None  # float32/float16/... values, or (rows, bytes) uint8 for block formats


class _Layout:
    """The header of a GGUF file and views of its tensors (what GGUFFile reads)."""

    def __init__(self, path: str):
        self.file = np.memmap(path, dtype=np.uint8, mode="r")
        cursor = _HeaderCursor(memoryview(self.file))
        if bytes(cursor.take(4)) != b"GGUF":
            raise ValueError("not a GGUF file (bad magic)")
        version = cursor.scalar("<I")
        if version not in (2, 3):
            raise ValueError(f"GGUF version {version} is not supported (2 and 3 are)")
        n_tensors, n_kv = cursor.scalar("<Q"), cursor.scalar("<Q")
        self.metadata: dict[str, Any] = {}
        for _ in range(n_kv):
            key = cursor.string()
            self.metadata[key] = cursor.value(cursor.scalar("<I"))
        infos = []
        for _ in range(n_tensors):
            name = cursor.string()
            n_dims = cursor.scalar("<I")
            if n_dims > 8:
                raise ValueError(f"tensor {name!r} has {n_dims} dimensions")
            shape = tuple(cursor.scalar("<Q") for _ in range(n_dims))
            kind, offset = cursor.scalar("<I"), cursor.scalar("<Q")
            infos.append((name, shape, kind, offset))
        alignment = self.metadata.get("general.alignment", 32)
        if not isinstance(alignment, int) or isinstance(alignment, bool) or alignment <= 0:
            raise ValueError(f"general.alignment must be a positive integer, got {alignment!r}")
        self.alignment = alignment
        self.data_offset = -(-cursor.at // alignment) * alignment
        self.tensors = [self._tensor(*info) for info in infos]

    def _tensor(self, name: str, shape: tuple, kind: int, offset: int) -> _TensorInfo:
        try:
            qtype = gguf.GGMLQuantizationType(kind)
        except ValueError:
            raise ValueError(f"tensor {name!r} has unknown type {kind}") from None
        block_values, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
        count = int(np.prod(shape, dtype=np.int64)) if shape else 1
        if count % block_values:
            raise ValueError(f"tensor {name!r}: {count} values are not whole blocks of {block_values}")
        n_bytes = count // block_values * block_bytes
        begin = self.data_offset + offset
        info = _TensorInfo(name, shape, qtype, begin, n_bytes)
        if 0 <= begin and begin + n_bytes <= len(self.file):
            raw = self.file[begin:begin + n_bytes]
            rows = shape[::-1]  # numpy order
            if qtype.name in _TYPE_DTYPES:
                info.data = raw.view(_TYPE_DTYPES[qtype.name]).reshape(rows)
            else:  # rows of raw bytes (whole blocks), as gguf.quants.dequantize takes them
                info.data = raw.reshape(rows[:-1] + (rows[-1] // block_values * block_bytes,)) if rows else raw
        return info


# Element types of the unblocked tensor types.
_TYPE_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8, "I16": np.int16,
                "I32": np.int32, "I64": np.int64}


class GGUFFile:
    """One opened GGUF file: metadata and tensors, dequantized on request.

    The file is memory-mapped; `tensor()` copies each tensor out as float32,
    so the arrays it returns stay valid after the file is closed (`block()`
    views keep the map alive themselves).
    """

    def __init__(self, path: str | os.PathLike[str]):
        _require_gguf()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise WeightsError(f"GGUF file not found: {self.path}")
        try:
            self._reader = _Layout(self.path)
        except (_Truncated, ValueError, UnicodeDecodeError, OverflowError, MemoryError, OSError) as exc:
            raise WeightsError(
                f"cannot read GGUF file {self.path} (corrupt or truncated?): "
                f"{type(exc).__name__}: {exc}"
            ) from exc
        self._tensors = {t.name: t for t in self._reader.tensors}
        self._metadata: dict[str, Any] | None = None
        self._check_layout()

    def _check_layout(self) -> None:
        """Each tensor's bytes start on the file's alignment, lie inside the file and
        overlap no other tensor's."""
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
            decoded = dict(self._reader.metadata)
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
        return tuple(int(d) for d in reversed(self._info(name).shape))

    def tensor(self, name: str) -> np.ndarray:
        """The tensor dequantized to a new, C-contiguous float32 array in numpy order."""
        info = self._info(name)
        shape = self.tensor_shape(name)
        qtype = info.tensor_type
        try:
            if qtype == gguf.GGMLQuantizationType.F64:
                values = np.asarray(info.data, dtype=np.float64)
            elif qtype.name in BLOCK_FORMATS and len(shape) == 2:
                values = np.asarray(self.block(name))  # the core's dequantization
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

    def block(self, name: str):
        """The tensor as the loaders want it: a :class:`BlockQuantized` view of the file for the
        block formats the core reads itself (2-D Q4_0, Q4_1, Q8_0: no float32 copy is made
        here), else the float32 array of `tensor()`."""
        info = self._info(name)
        shape = self.tensor_shape(name)
        qtype = info.tensor_type.name
        if qtype in BLOCK_FORMATS and len(shape) == 2:
            raw = info.data
            block_bytes, block_values = BLOCK_FORMATS[qtype]
            if (raw.dtype != np.uint8 or raw.ndim != 2 or raw.shape[0] != shape[0] or shape[1] % block_values
                    or raw.shape[1] != shape[1] // block_values * block_bytes):
                raise WeightsError(f"tensor {name!r} in {self.path}: {qtype} data of shape {raw.shape} "
                                   f"does not hold shape {shape}")
            return BlockQuantized(raw, qtype, shape[1])
        return self.tensor(name)

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
