"""Exported models carry a sha256 per tensor; a bit flip in the tensor data is caught on load, by name."""
import json
import os
import struct

import numpy as np
import pytest

from reviewgen.core.models import Model, ModelConfig
from reviewgen.weights.bert import encoder_config_from_hf, export_encoder, load_encoder
from reviewgen.weights.checkpoint import WeightsError
from reviewgen.weights.gpt2 import export_gpt2, load_gpt2
from reviewgen.weights.llama import _llama_config, export_hf_llama, load_hf_llama
from reviewgen.weights.safetensors_io import CHECKSUM_KEY, read_safetensors, save_safetensors


def _models():
    gpt2 = Model(ModelConfig(vocab_size=13, n_positions=6, n_layer=2, n_head=2, n_embd=4, tie_word_embeddings=False))
    bert = Model(encoder_config_from_hf({"model_type": "bert", "vocab_size": 13, "max_position_embeddings": 6,
                                         "num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 4,
                                         "intermediate_size": 6}, num_labels=2))
    llama = Model(_llama_config(vocab_size=13, n_positions=8, n_layer=1, n_head=2, n_kv_head=1, head_dim=2,
                                n_embd=4, n_inner=6, norm_eps=1e-5, rope_theta=1e4, tie_word_embeddings=True))
    return {"gpt2": gpt2, "bert": bert, "llama": llama}


def _export(family, model, directory):
    if family == "gpt2":
        export_gpt2(model, directory)
    elif family == "bert":
        export_encoder(directory, model, "bert")
    else:
        export_hf_llama(directory, model)
    return directory


LOADERS = {"gpt2": load_gpt2, "bert": load_encoder, "llama": load_hf_llama}


def _layout(path):
    blob = open(path, "rb").read()
    (size,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + size]), 8 + size


@pytest.mark.parametrize("family", ["gpt2", "bert", "llama"])
def test_every_tensor_of_an_export_is_checksummed_and_a_flip_in_it_is_named(tmp_path, family):
    directory = _export(family, _models()[family], str(tmp_path / family))
    path = os.path.join(directory, "model.safetensors")
    header, data_start = _layout(path)
    digests = json.loads(header["__metadata__"][CHECKSUM_KEY])
    names = [k for k in header if k != "__metadata__"]
    assert sorted(digests) == sorted(names)
    LOADERS[family](directory).build_model()  # the clean export loads
    clean = open(path, "rb").read()
    rng = np.random.default_rng(0)
    for name in names:  # one flip, at a random bit of each tensor
        begin, end = header[name]["data_offsets"]
        if end == begin:
            continue
        flipped = bytearray(clean)
        flipped[data_start + int(rng.integers(begin, end))] ^= 1 << int(rng.integers(0, 8))
        with open(path, "wb") as handle:
            handle.write(bytes(flipped))
        with pytest.raises(WeightsError, match="checksum") as info:
            LOADERS[family](directory)
        assert repr(name) in str(info.value) and path in str(info.value)
    assert len(names) >= 10


def test_files_without_checksums_still_load_and_bad_checksum_metadata_is_refused(tmp_path):
    from safetensors.numpy import save_file

    path = str(tmp_path / "plain.safetensors")
    save_file({"a": np.ones((2, 3), np.float32)}, path, metadata={"format": "pt"})
    assert read_safetensors(path)["a"].shape == (2, 3)
    save_file({"a": np.ones((2, 3), np.float32)}, path, metadata={CHECKSUM_KEY: "{not json"})
    with pytest.raises(WeightsError, match=CHECKSUM_KEY):
        read_safetensors(path)
    save_file({"a": np.ones((2, 3), np.float32)}, path, metadata={CHECKSUM_KEY: json.dumps({"a": "00"})})
    with pytest.raises(WeightsError, match="'a' fails its sha256 checksum"):
        read_safetensors(path)
    save_file({"a": np.ones((2, 3), np.float32), "b": np.zeros(2, np.float32)}, path,
              metadata={CHECKSUM_KEY: json.dumps({})})
    with pytest.raises(WeightsError, match="has no checksum"):
        read_safetensors(path)


def test_our_safetensors_load_in_the_safetensors_library(tmp_path):
    from safetensors.numpy import load_file

    path = str(tmp_path / "ours.safetensors")
    tensors = {"x": np.arange(6, dtype=np.float32).reshape(2, 3), "y": np.float32([1.5]), "z": np.zeros((0, 4))}
    save_safetensors(tensors, path)
    loaded = load_file(path)
    for name, value in tensors.items():
        assert np.array_equal(loaded[name], value.astype(np.float32))
    assert all(np.array_equal(read_safetensors(path)[n], v) for n, v in tensors.items())


def test_safetensors_writer_is_atomic_and_does_not_follow_symlinks(tmp_path):
    target = tmp_path / "victim.txt"
    target.write_text("keep me")
    link = tmp_path / "model.safetensors"
    os.symlink(target, link)
    save_safetensors({"x": np.ones(3, np.float32)}, str(link))
    assert target.read_text() == "keep me" and not os.path.islink(link)

    good = read_safetensors(str(link))["x"].copy()
    with pytest.raises(ValueError):
        save_safetensors({"x": np.ones(3, np.float32), "y": np.array(["not a float"])}, str(link))
    assert np.array_equal(read_safetensors(str(link))["x"], good)
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".rg-tmp")] == []
