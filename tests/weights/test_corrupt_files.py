"""Corrupt checkpoint files: every load error is a reviewgen WeightsError that names the file.

A generator derives a few hundred broken variants (truncations, bit flips in
the safetensors and GGUF headers, wrong dtypes and shapes, missing and extra
tensors, NaN/inf weights, bad config.json values) from tiny GPT-2, BERT and
Llama directories written by reviewgen's own exporters, and from a tiny llama
GGUF. Each variant must either load (a flip can land on a byte nothing reads)
or raise a WeightsError whose message holds the path of the broken file; no
other exception type may escape.
"""
from __future__ import annotations

import json
import os
import shutil
import struct

import numpy as np
import pytest

from reviewgen.core.models import Model, ModelConfig
from reviewgen.weights.bert import encoder_config_from_hf, export_encoder, load_encoder
from reviewgen.weights.checkpoint import WeightsError
from reviewgen.weights.gpt2 import export_gpt2, load_gpt2
from reviewgen.weights.llama import _llama_config, export_hf_llama, hf_state_dict, load_gguf_llama, load_hf_llama

LLAMA = dict(vocab_size=23, hidden_size=8, num_attention_heads=2, num_key_value_heads=1, head_dim=4,
             intermediate_size=12, num_hidden_layers=2, max_position_embeddings=16, rope_theta=10000.0,
             rms_norm_eps=1e-5, tie_word_embeddings=False)


def _random_params(model, seed):
    rng = np.random.default_rng(seed)
    for entry in model.param_table():
        model.set_param(entry["name"], rng.standard_normal(entry["shape"]).astype(np.float32) * 0.1)
    return model


def _gpt2_model():
    return _random_params(Model(ModelConfig(vocab_size=17, n_positions=8, n_layer=2, n_head=2, n_embd=8,
                                            tie_word_embeddings=False)), 0)


def _bert_model():
    hf = {"model_type": "bert", "vocab_size": 19, "max_position_embeddings": 8, "num_hidden_layers": 2,
          "num_attention_heads": 2, "hidden_size": 8, "intermediate_size": 12, "type_vocab_size": 2}
    return _random_params(Model(encoder_config_from_hf(hf, num_labels=3)), 1)


def _llama_model():
    c = LLAMA
    config = _llama_config(vocab_size=c["vocab_size"], n_positions=c["max_position_embeddings"],
                           n_layer=c["num_hidden_layers"], n_head=c["num_attention_heads"],
                           n_kv_head=c["num_key_value_heads"], head_dim=c["head_dim"], n_embd=c["hidden_size"],
                           n_inner=c["intermediate_size"], norm_eps=c["rms_norm_eps"], rope_theta=c["rope_theta"],
                           tie_word_embeddings=False)
    return _random_params(Model(config), 2)


def _write_gguf(path, state, metadata=None, drop=()):
    """A llama GGUF of an HF-named state dict; `metadata` overrides keys (name -> (adder, value))."""
    gguf = pytest.importorskip("gguf")
    from _reference import llama_cpp_permute

    writer = gguf.GGUFWriter(str(path), "llama")
    values = {"context_length": ("add_context_length", LLAMA["max_position_embeddings"]),
              "embedding_length": ("add_embedding_length", LLAMA["hidden_size"]),
              "block_count": ("add_block_count", LLAMA["num_hidden_layers"]),
              "feed_forward_length": ("add_feed_forward_length", LLAMA["intermediate_size"]),
              "head_count": ("add_head_count", LLAMA["num_attention_heads"]),
              "head_count_kv": ("add_head_count_kv", LLAMA["num_key_value_heads"]),
              "key_length": ("add_key_length", LLAMA["head_dim"]),
              "value_length": ("add_value_length", LLAMA["head_dim"]),
              "rope_dims": ("add_rope_dimension_count", LLAMA["head_dim"]),
              "rope_base": ("add_rope_freq_base", LLAMA["rope_theta"]),
              "eps": ("add_layer_norm_rms_eps", LLAMA["rms_norm_eps"]),
              "vocab_size": ("add_vocab_size", LLAMA["vocab_size"])}
    values.update(metadata or {})
    for adder, value in values.values():
        getattr(writer, adder)(value)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    block = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for hf_name, value in state.items():
        if hf_name.startswith("model.layers."):
            _, _, layer, rest = hf_name.split(".", 3)
            name = f"blk.{layer}.{block[rest.rsplit('.', 1)[0]]}.weight"
        else:
            name = names[hf_name]
        if name in drop:
            continue
        if name.endswith("attn_q.weight"):
            value = llama_cpp_permute(value, LLAMA["num_attention_heads"])
        elif name.endswith("attn_k.weight"):
            value = llama_cpp_permute(value, LLAMA["num_key_value_heads"])
        writer.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return str(path)


@pytest.fixture(scope="module")
def clean(tmp_path_factory):
    """The clean originals: family -> directory (or GGUF path)."""
    root = tmp_path_factory.mktemp("clean")
    out = {}
    out["gpt2"] = export_gpt2(_gpt2_model(), str(root / "gpt2"))
    out["bert"] = export_encoder(str(root / "bert"), _bert_model(), "bert", labels=[1, 2, 3])
    export_hf_llama(str(root / "llama"), _llama_model())
    out["llama"] = str(root / "llama")
    out["gguf"] = _write_gguf(root / "tiny.gguf", hf_state_dict(_llama_model()))
    return out


LOADERS = {"gpt2": load_gpt2, "bert": load_encoder, "llama": load_hf_llama, "gguf": load_gguf_llama}


def _load(family, source):
    return LOADERS[family](source).build_model()


# ---------------------------------------------------------------------------
# safetensors surgery
# ---------------------------------------------------------------------------

def _split(blob):
    (size,) = struct.unpack("<Q", blob[:8])
    return json.loads(blob[8:8 + size]), blob[8 + size:]


def _join(header, data):
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _first_tensor(header, ndim=None):
    names = sorted(k for k in header if k != "__metadata__" and (ndim is None or len(header[k]["shape"]) == ndim))
    return names[0]


def _safetensors_cases(blob):
    """name -> corrupted bytes of a model.safetensors."""
    header, data = _split(blob)
    (size,) = struct.unpack("<Q", blob[:8])
    cases = {}
    for cut in sorted({0, 3, 8, 9, 8 + size // 2, 8 + size - 1, 8 + size, 8 + size + 1,
                       8 + size + len(data) // 2, len(blob) - 1}):
        cases[f"truncated-{cut}"] = blob[:cut]
    rng = np.random.default_rng(11)
    for position in sorted(set(rng.integers(8, 8 + size, 40).tolist())):
        flipped = bytearray(blob)
        flipped[position] ^= 1 << int(rng.integers(0, 8))
        cases[f"header-bitflip-{position}"] = bytes(flipped)
    for position in range(8):
        flipped = bytearray(blob)
        flipped[position] ^= 0x80
        cases[f"size-bitflip-{position}"] = bytes(flipped)
    cases["size-huge"] = struct.pack("<Q", 2**63) + blob[8:]
    cases["size-zero"] = struct.pack("<Q", 0) + blob[8:]
    cases["header-not-utf8"] = struct.pack("<Q", size) + b"\xff\xfe" + blob[10:]
    cases["header-list"] = _join([1, 2], data)
    cases["header-nested"] = _join({"a": [[[[[[[[[[[[]]]]]]]]]]]]}, data)
    deep = b"[" * 100000 + b"]" * 100000
    cases["header-deep"] = struct.pack("<Q", len(deep)) + deep + data
    two_d, one_d = _first_tensor(header, 2), _first_tensor(header, 1)

    def edit(change):
        h = json.loads(json.dumps(header))
        change(h)
        return _join(h, data)

    cases["dtype-unknown"] = edit(lambda h: h[two_d].__setitem__("dtype", "F8_E9"))
    cases["dtype-int"] = edit(lambda h: h[two_d].__setitem__("dtype", "I32"))
    cases["dtype-f16"] = edit(lambda h: h[two_d].__setitem__("dtype", "F16"))
    cases["dtype-missing"] = edit(lambda h: h[two_d].pop("dtype"))
    cases["dtype-number"] = edit(lambda h: h[two_d].__setitem__("dtype", 7))
    cases["shape-transposed"] = edit(lambda h: h[two_d].__setitem__("shape", h[two_d]["shape"][::-1]))
    cases["shape-flat"] = edit(lambda h: h[two_d].__setitem__(
        "shape", [int(np.prod(h[two_d]["shape"]))]))
    cases["shape-negative"] = edit(lambda h: h[one_d].__setitem__("shape", [-h[one_d]["shape"][0]]))
    cases["shape-string"] = edit(lambda h: h[one_d].__setitem__("shape", ["8"]))
    cases["shape-float"] = edit(lambda h: h[one_d].__setitem__("shape", [8.0]))
    cases["shape-missing"] = edit(lambda h: h[one_d].pop("shape"))
    cases["shape-null"] = edit(lambda h: h[one_d].__setitem__("shape", None))
    cases["offsets-past-end"] = edit(lambda h: h[one_d].__setitem__(
        "data_offsets", [len(data), len(data) + h[one_d]["data_offsets"][1] - h[one_d]["data_offsets"][0]]))
    cases["offsets-reversed"] = edit(lambda h: h[one_d].__setitem__("data_offsets", h[one_d]["data_offsets"][::-1]))
    cases["offsets-short"] = edit(lambda h: h[one_d].__setitem__("data_offsets", [0]))
    cases["offsets-huge"] = edit(lambda h: h[one_d].__setitem__("data_offsets", [2**70, 2**70 + 4]))
    cases["entry-not-object"] = edit(lambda h: h.__setitem__(one_d, [1, 2]))
    cases["metadata-not-object"] = edit(lambda h: h.__setitem__("__metadata__", 5))
    cases["missing-tensor"] = edit(lambda h: h.pop(one_d))
    cases["missing-2d-tensor"] = edit(lambda h: h.pop(two_d))
    cases["extra-tensor"] = edit(lambda h: h.__setitem__("surprise.weight", dict(h[one_d])))
    for fill, label in ((np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")):
        begin, _ = header[two_d]["data_offsets"]
        patched = bytearray(data)
        patched[begin + 4:begin + 8] = np.float32(fill).tobytes()
        cases[f"{label}-weight"] = _join(header, bytes(patched))
    return cases


def _config_cases(config):
    """name -> corrupted config.json bytes."""
    cases = {"config-empty": b"", "config-not-json": b"{not json", "config-not-utf8": b"{\"a\": \"\xff\xfe\"}",
             "config-list": b"[1, 2, 3]", "config-null": b"null", "config-deep": b"[" * 100000 + b"]" * 100000}
    numeric = [k for k, v in config.items() if isinstance(v, int) and not isinstance(v, bool)
               and k not in ("bos_token_id", "eos_token_id", "pad_token_id")]
    for key in numeric:
        for label, value in (("missing", None), ("string", "2"), ("float", 2.5), ("bool", True),
                             ("zero", 0), ("negative", -3), ("huge", 2**31 - 1), ("list", [2])):
            broken = dict(config)
            if label == "missing":
                broken.pop(key)
            else:
                broken[key] = value
            cases[f"config-{key}-{label}"] = json.dumps(broken).encode()
    return cases


def _families_and_cases(clean):
    for family in ("gpt2", "bert", "llama"):
        directory = clean[family]
        with open(os.path.join(directory, "model.safetensors"), "rb") as handle:
            blob = handle.read()
        for name, data in _safetensors_cases(blob).items():
            yield family, name, "model.safetensors", data
        with open(os.path.join(directory, "config.json"), "rb") as handle:
            config = json.load(handle)
        for name, data in _config_cases(config).items():
            yield family, name, "config.json", data


# Variants that load, and may: a field the loader does not read (GPT-2's n_ctx, Llama's
# pretraining_tp, a classifier's num_labels, which the head in the file decides), one
# whose absence means the documented default (type_vocab_size, head_dim,
# max_position_embeddings), or a transposed square tensor.
MAY_LOAD = {"gpt2": ("config-n_ctx-",), "llama": ("config-pretraining_tp-", "config-head_dim-missing",
            "config-head_dim-zero", "config-max_position_embeddings-missing"),
            "bert": ("config-num_labels-", "config-type_vocab_size-missing", "shape-transposed")}


def _check(family, source, broken_path, outcome):
    """Loads, or raises a WeightsError naming `broken_path`; anything else is recorded as a failure."""
    try:
        _load(family, source)
    except WeightsError as error:
        if broken_path not in str(error):
            outcome["unnamed"].append(f"{family}/{os.path.basename(broken_path)}: {error}")
        else:
            outcome["named"] += 1
        return "error"
    except Exception as error:  # noqa: BLE001 - the point is to catch everything else
        outcome["raw"].append(f"{family}/{os.path.basename(broken_path)}: {type(error).__name__}: "
                              f"{str(error)[:200]}")
        return "raw"
    outcome["loaded"] += 1
    return "loaded"


def _new_outcome():
    return {"named": 0, "loaded": 0, "unnamed": [], "raw": []}


def test_corrupt_safetensors_directories_raise_weights_errors_naming_the_file(clean, tmp_path):
    outcome = _new_outcome()
    count = 0
    must_fail = []
    for family, name, filename, data in _families_and_cases(clean):
        count += 1
        directory = tmp_path / f"{family}-{name}"
        shutil.copytree(clean[family], directory)
        broken = str(directory / filename)
        with open(broken, "wb") as handle:
            handle.write(data)
        result = _check(family, str(directory), broken, outcome)
        if result == "loaded" and not name.startswith(("header-bitflip",) + MAY_LOAD[family]):
            must_fail.append(f"{family}/{name}")
        shutil.rmtree(directory)
    report = (f"{count} cases: {outcome['named']} named the file, {outcome['loaded']} loaded, "
              f"{len(outcome['unnamed'])} did not name it, {len(outcome['raw'])} raw exceptions\n"
              + "\n".join(outcome["raw"][:20] + outcome["unnamed"][:20]) + "\nloaded: " + ", ".join(must_fail))
    print(report)
    assert count > 300
    assert not outcome["raw"] and not outcome["unnamed"], report
    # Only a flip in a byte nothing reads may load; every other case is an error.
    assert not must_fail, report


def _gguf_cases(path):
    with open(path, "rb") as handle:
        blob = handle.read()
    cases = {}
    for cut in (0, 3, 4, 8, 16, 24, 40, 100, len(blob) // 4, len(blob) // 2, len(blob) - 1):
        cases[f"truncated-{cut}"] = blob[:cut]
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(path, "r")
    data_start = min(int(t.data_offset) for t in reader.tensors)

    def patch(offset, fmt, value):
        patched = bytearray(blob)
        patched[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
        return bytes(patched)

    # header: magic, version (u32), tensor count, key/value count (u64); then each tensor's
    # info: name, n_dims (u32), dims (u64 each), type (u32), offset (u64)
    cases["tensor-count-huge"] = patch(8, "<Q", 2**62)
    cases["tensor-count-small"] = patch(8, "<Q", 3)
    cases["kv-count-huge"] = patch(16, "<Q", 2**62)
    info = blob.index(b"token_embd.weight") + len(b"token_embd.weight")
    n_dims = struct.unpack("<I", blob[info:info + 4])[0]
    kind = info + 4 + 8 * n_dims
    cases["n-dims-huge"] = patch(info, "<I", 2**31)
    cases["dim-huge"] = patch(info + 4, "<Q", 2**40)
    cases["dim-zero"] = patch(info + 4, "<Q", 0)
    cases["type-unknown"] = patch(kind, "<I", 999)
    cases["offset-huge"] = patch(kind + 4, "<Q", 2**50)
    cases["offset-misaligned"] = patch(kind + 4, "<Q", 3)
    cases["offset-overlapping"] = patch(kind + 4, "<Q", 32)  # onto the next tensor's bytes
    rng = np.random.default_rng(12)
    for position in sorted(set(rng.integers(0, data_start, 40).tolist())):
        flipped = bytearray(blob)
        flipped[position] ^= 1 << int(rng.integers(0, 8))
        cases[f"header-bitflip-{position}"] = bytes(flipped)
    return cases


def _gguf_metadata_cases(tmp_path):
    state = hf_state_dict(_llama_model())
    metadata = {
        "head-count-0": {"head_count": ("add_head_count", 0)},
        "head-count-kv-0": {"head_count_kv": ("add_head_count_kv", 0)},
        "head-count-3": {"head_count": ("add_head_count", 3)},
        "block-count-huge": {"block_count": ("add_block_count", 2**31 - 1)},
        "block-count-0": {"block_count": ("add_block_count", 0)},
        "block-count-3": {"block_count": ("add_block_count", 3)},
        "block-count-1": {"block_count": ("add_block_count", 1)},
        "embedding-huge": {"embedding_length": ("add_embedding_length", 2**31 - 1)},
        "embedding-0": {"embedding_length": ("add_embedding_length", 0)},
        "ffn-huge": {"feed_forward_length": ("add_feed_forward_length", 2**31 - 1)},
        "vocab-huge": {"vocab_size": ("add_vocab_size", 2**31 - 1)},
        "context-huge": {"context_length": ("add_context_length", 2**31 - 1)},
        "key-length-0": {"key_length": ("add_key_length", 0)},
        "eps-0": {"eps": ("add_layer_norm_rms_eps", 0.0)},
    }
    for name, changes in metadata.items():
        yield name, _write_gguf(tmp_path / f"{name}.gguf", state, changes)
    yield "missing-tensor", _write_gguf(tmp_path / "missing.gguf", state, drop=("blk.1.ffn_up.weight",))
    bad = dict(state)
    key = "model.layers.0.mlp.down_proj.weight"
    bad[key] = bad[key].copy()
    bad[key][0, 0] = np.nan
    yield "nan-weight", _write_gguf(tmp_path / "nan.gguf", bad)


def _gguf_tokenizer_cases(tmp_path):
    """GGUFs whose tokenizer metadata is broken (the weights are fine)."""
    from _reference import toy_tokenizer_metadata

    base = toy_tokenizer_metadata()
    vocab = len(base["add_token_list"])
    model = _random_params(Model(_llama_config(
        vocab_size=vocab, n_positions=16, n_layer=2, n_head=2, n_kv_head=1, head_dim=4, n_embd=8, n_inner=12,
        norm_eps=1e-5, rope_theta=1e4, tie_word_embeddings=False)), 3)
    state = hf_state_dict(model)
    variants = {
        "tokenizer-merge-of-unknown-tokens": {"add_token_merges": ["zz qq"]},
        "tokenizer-duplicate-tokens": {"add_token_list": ["a"] * vocab},
        "tokenizer-bos-out-of-range": {"add_bos_token_id": 10**6, "add_add_bos_token": True},
        "tokenizer-eos-out-of-range": {"add_eos_token_id": 10**6},
        "tokenizer-types-short": {"add_token_types": [3]},
        "tokenizer-model-unknown": {"add_tokenizer_model": "llama"},
        "tokenizer-pre-unknown": {"add_tokenizer_pre": "nope"},
        "tokenizer-merge-malformed": {"add_token_merges": ["abc"]},
    }
    for name, changes in variants.items():
        metadata = {"vocab_size": ("add_vocab_size", vocab)}
        metadata.update({"tokenizer-" + key: (key, value) for key, value in {**base, **changes}.items()})
        yield name, _write_gguf(tmp_path / f"{name}.gguf", state, metadata)


def test_corrupt_gguf_files_raise_weights_errors_naming_the_file(clean, tmp_path):
    outcome = _new_outcome()
    count = 0
    must_fail = []
    for name, data in _gguf_cases(clean["gguf"]).items():
        count += 1
        broken = str(tmp_path / f"{name}.gguf")
        with open(broken, "wb") as handle:
            handle.write(data)
        if _check("gguf", broken, broken, outcome) == "loaded" and not name.startswith("header-bitflip"):
            must_fail.append(name)
        os.unlink(broken)
    for name, broken in list(_gguf_metadata_cases(tmp_path)) + list(_gguf_tokenizer_cases(tmp_path)):
        count += 1
        if _check("gguf", broken, broken, outcome) == "loaded":
            must_fail.append(name)
    report = (f"{count} cases: {outcome['named']} named the file, {outcome['loaded']} loaded, "
              f"{len(outcome['unnamed'])} did not name it, {len(outcome['raw'])} raw exceptions\n"
              + "\n".join(outcome["raw"][:20] + outcome["unnamed"][:20]) + "\nloaded: " + ", ".join(must_fail))
    print(report)
    assert not outcome["raw"] and not outcome["unnamed"], report
    assert not must_fail, report


def test_gguf_with_a_huge_block_count_fails_fast_without_allocating(tmp_path):
    """A metadata-only GGUF (a few hundred bytes) claiming 2**31 - 1 blocks once grew to
    3.8 GB before a MemoryError; the metadata is now checked against the tensors first.
    Run in a child with a 1 GiB address-space limit and a 20 s timeout."""
    import subprocess
    import sys

    gguf = pytest.importorskip("gguf")
    path = tmp_path / "huge.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    for adder, value in (("add_context_length", 16), ("add_embedding_length", 8), ("add_block_count", 2**31 - 1),
                         ("add_feed_forward_length", 12), ("add_head_count", 2), ("add_layer_norm_rms_eps", 1e-5),
                         ("add_vocab_size", 23)):
        getattr(writer, adder)(value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    assert path.stat().st_size < 1024
    script = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))\n"
        "from reviewgen.weights.llama import load_gguf_llama\n"
        "from reviewgen.weights.checkpoint import WeightsError\n"
        "try:\n"
        "    load_gguf_llama(sys.argv[1])\n"
        "except WeightsError as error:\n"
        "    print('WeightsError:', error)\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    result = subprocess.run([sys.executable, "-c", script, str(path)], capture_output=True, text=True,
                            timeout=20, env=env)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "WeightsError:" in result.stdout and str(path) in result.stdout and "block_count" in result.stdout


@pytest.mark.parametrize("family", ["gpt2", "bert"])
@pytest.mark.parametrize("fill", [np.nan, np.inf])
def test_non_finite_weights_are_refused_naming_tensor_and_file(clean, tmp_path, family, fill):
    directory = tmp_path / family
    shutil.copytree(clean[family], directory)
    path = directory / "model.safetensors"
    header, data = _split(path.read_bytes())
    name = _first_tensor(header, 2)
    begin, _ = header[name]["data_offsets"]
    patched = bytearray(data)
    patched[begin:begin + 4] = np.float32(fill).tobytes()
    header.pop("__metadata__", None)  # no checksum: the loader itself must see the NaN
    path.write_bytes(_join(header, bytes(patched)))
    with pytest.raises(WeightsError, match="NaN or Inf") as info:
        _load(family, str(directory))
    assert str(path) in str(info.value) and name.split(".", 1)[-1] in str(info.value)
