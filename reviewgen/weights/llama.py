"""Llama-family checkpoints <-> reviewgen's internal parameter dict (docs/model_layout.md).

Three sources and one sink, all meeting in the same place: a model config dict
with the contract's fields and a dict of internal name -> float32 array.

  load_gguf_llama(path)          llama.cpp GGUF (any dequantizable type)
  load_hf_llama(directory)       Hugging Face config.json + *.safetensors
  export_hf_llama(directory,..)  the inverse: a directory LlamaForCausalLM loads
  tokenizer_from_gguf(path)      the byte-level BPE tokenizer stored in GGUF metadata

Pure numpy + safetensors + tokenizers + gguf: no torch, no C extension.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from .gguf_io import GGUFFile, WeightsError

__all__ = [
    "WeightsError",
    "LlamaCheckpoint",
    "load_gguf_llama",
    "load_hf_llama",
    "export_hf_llama",
    "config_from_gguf",
    "config_from_hf",
    "hf_config_from_config",
    "tokenizer_from_gguf",
    "expected_llama_shapes",
    "check_llama_weights",
    "gguf_rotary_rows_to_hf",
    "hf_rotary_rows_to_gguf",
]

# Architectures whose GGUF tensors follow llama.cpp's LLM_ARCH_LLAMA naming and layout.
GGUF_LLAMA_ARCHITECTURES = ("llama",)


@dataclass
class LlamaCheckpoint:
    """What every loader returns.

    config: the contract's model config fields (see docs/model_layout.md).
    weights: internal name -> float32 C-contiguous array.
    hf_config: the same model as a Hugging Face LlamaConfig dict (config.json).
    special_tokens: bos/eos/pad/unk token ids where the source names them.
    """

    config: dict[str, Any]
    weights: dict[str, np.ndarray]
    hf_config: dict[str, Any]
    special_tokens: dict[str, int] = field(default_factory=dict)


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------

def _llama_config(*, vocab_size, n_positions, n_layer, n_head, n_kv_head, head_dim, n_embd,
                  n_inner, norm_eps, rope_theta, tie_word_embeddings, attn_pdrop=0.0) -> dict[str, Any]:
    """The contract's config for a Llama-family model, validated."""
    config = {
        "family": "llama",
        "vocab_size": int(vocab_size),
        "n_positions": int(n_positions),
        "n_layer": int(n_layer),
        "n_head": int(n_head),
        "n_kv_head": int(n_kv_head),
        "head_dim": int(head_dim),
        "n_embd": int(n_embd),
        "n_inner": int(n_inner),
        "type_vocab_size": 0,
        "norm": "rmsnorm",
        "norm_eps": float(norm_eps),
        "pre_norm": 1,
        "embed_norm": 0,
        "final_norm": 1,
        "position": "rope",
        "rope_theta": float(rope_theta),
        "activation": "swiglu",
        "causal": 1,
        "bias": 0,
        "head": "lm",
        "tie_word_embeddings": bool(tie_word_embeddings),
        "num_labels": 0,
        "embd_pdrop": 0.0,
        "resid_pdrop": 0.0,
        "attn_pdrop": float(attn_pdrop),
        "cls_pdrop": 0.0,
    }
    for key in ("vocab_size", "n_positions", "n_layer", "n_head", "n_kv_head", "head_dim", "n_embd", "n_inner"):
        if config[key] <= 0:
            raise WeightsError(f"llama config: {key} must be positive, got {config[key]}")
    if config["n_head"] % config["n_kv_head"] != 0:
        raise WeightsError(
            f"llama config: n_head ({config['n_head']}) must be a multiple of n_kv_head ({config['n_kv_head']})"
        )
    if config["head_dim"] % 2 != 0:
        raise WeightsError(f"llama config: rotary embeddings need an even head_dim, got {config['head_dim']}")
    if not config["norm_eps"] > 0:
        raise WeightsError(f"llama config: norm_eps must be positive, got {config['norm_eps']}")
    return config


def hf_config_from_config(config: Mapping[str, Any], special_tokens: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A Hugging Face LlamaConfig dict (config.json) for an internal llama config."""
    special_tokens = dict(special_tokens or {})
    rope_theta = float(config["rope_theta"])
    hf = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(config["vocab_size"]),
        "hidden_size": int(config["n_embd"]),
        "intermediate_size": int(config["n_inner"]),
        "num_hidden_layers": int(config["n_layer"]),
        "num_attention_heads": int(config["n_head"]),
        "num_key_value_heads": int(config["n_kv_head"]),
        "head_dim": int(config["head_dim"]),
        "max_position_embeddings": int(config["n_positions"]),
        "rms_norm_eps": float(config["norm_eps"]),
        # transformers >= 5 reads rope_parameters; older versions read rope_theta.
        "rope_theta": rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": float(config.get("attn_pdrop", 0.0)),
        "tie_word_embeddings": bool(config["tie_word_embeddings"]),
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "dtype": "float32",
    }
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        hf[key] = special_tokens.get(key)
    return hf


def _gguf_int(f: GGUFFile, key: str, default: Any = None) -> int:
    value = f.get(key, default) if default is not None else f.require(key)
    if isinstance(value, list):
        # Some files store per-layer values (e.g. head_count_kv); the core needs one.
        if not value or any(v != value[0] for v in value):
            raise WeightsError(f"GGUF key {key!r} varies per layer ({value}); not supported")
        value = value[0]
    return int(value)


def _gguf_float(f: GGUFFile, key: str, default: float | None = None) -> float:
    """A float32 metadata value as the shortest decimal that rounds to it (1e-05, not 9.99999974e-06),
    so GGUF and config.json sources of one model give equal configs."""
    value = f.get(key, default) if default is not None else f.require(key)
    return float(str(np.float32(value)))


def config_from_gguf(f: GGUFFile) -> dict[str, Any]:
    """The contract's config for a llama GGUF file."""
    arch = f.architecture
    if arch not in GGUF_LLAMA_ARCHITECTURES:
        raise WeightsError(
            f"GGUF file {f.path} holds architecture {arch!r}; only {GGUF_LLAMA_ARCHITECTURES} can be loaded as llama"
        )
    p = arch + "."
    n_embd = _gguf_int(f, p + "embedding_length")
    n_head = _gguf_int(f, p + "attention.head_count")
    n_kv_head = _gguf_int(f, p + "attention.head_count_kv", n_head)
    head_dim = _gguf_int(f, p + "attention.key_length", n_embd // n_head)
    value_dim = _gguf_int(f, p + "attention.value_length", head_dim)
    rope_dims = _gguf_int(f, p + "rope.dimension_count", head_dim)
    if value_dim != head_dim:
        raise WeightsError(f"GGUF {f.path}: key length {head_dim} != value length {value_dim}; not supported")
    if rope_dims != head_dim:
        raise WeightsError(
            f"GGUF {f.path}: rotary applied to {rope_dims} of {head_dim} head dims (partial rotary); not supported"
        )
    scaling = f.get(p + "rope.scaling.type", "none")
    if scaling not in ("none", None) or f.has_tensor("rope_freqs.weight"):
        raise WeightsError(f"GGUF {f.path}: rope scaling ({scaling!r} / rope_freqs) is not supported")

    vocab_size = f.get(p + "vocab_size")
    if vocab_size is None:
        tokens = f.get("tokenizer.ggml.tokens")
        vocab_size = len(tokens) if tokens else f.tensor_shape("token_embd.weight")[0]
    return _llama_config(
        vocab_size=vocab_size,
        n_positions=_gguf_int(f, p + "context_length"),
        n_layer=_gguf_int(f, p + "block_count"),
        n_head=n_head,
        n_kv_head=n_kv_head,
        head_dim=head_dim,
        n_embd=n_embd,
        n_inner=_gguf_int(f, p + "feed_forward_length"),
        norm_eps=_gguf_float(f, p + "attention.layer_norm_rms_epsilon"),
        rope_theta=_gguf_float(f, p + "rope.freq_base", 10000.0),
        tie_word_embeddings=not f.has_tensor("output.weight"),
    )


def _hf_rope_theta(hf: Mapping[str, Any]) -> float:
    """rope_theta from either config.json spelling, refusing scaled variants."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    for source in (params, scaling):
        rope_type = source.get("rope_type", source.get("type", "default"))
        if rope_type not in ("default", None):
            raise WeightsError(f"config.json: rope type {rope_type!r} is not supported (only plain RoPE)")
    if params.get("partial_rotary_factor", hf.get("partial_rotary_factor", 1.0)) != 1.0:
        raise WeightsError("config.json: partial rotary embeddings are not supported")
    return float(params.get("rope_theta", hf.get("rope_theta", 10000.0)))


def _require_llama_hf(hf: Mapping[str, Any]) -> None:
    model_type = hf.get("model_type")
    architectures = hf.get("architectures") or []
    if model_type != "llama" and "LlamaForCausalLM" not in architectures:
        raise WeightsError(
            f"config.json describes model_type {model_type!r} / architectures {architectures}; expected llama"
        )


def config_from_hf(hf: Mapping[str, Any], has_lm_head: bool | None = None) -> dict[str, Any]:
    """The contract's config for a Hugging Face LlamaConfig dict.

    has_lm_head: whether the checkpoint stores lm_head.weight; decides tying
    when config.json does not say.
    """
    _require_llama_hf(hf)
    if hf.get("hidden_act", "silu") != "silu":
        raise WeightsError(f"config.json: hidden_act {hf.get('hidden_act')!r} is not supported (SwiGLU needs silu)")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise WeightsError("config.json: attention_bias / mlp_bias are not supported (llama linears have no bias)")
    try:
        n_embd = int(hf["hidden_size"])
        n_head = int(hf["num_attention_heads"])
        n_layer = int(hf["num_hidden_layers"])
        n_inner = int(hf["intermediate_size"])
        vocab_size = int(hf["vocab_size"])
    except KeyError as exc:
        raise WeightsError(f"config.json lacks {exc.args[0]!r}") from None
    tie = hf.get("tie_word_embeddings")
    if tie is None:
        tie = not has_lm_head if has_lm_head is not None else False
    return _llama_config(
        vocab_size=vocab_size,
        n_positions=hf.get("max_position_embeddings", 2048),
        n_layer=n_layer,
        n_head=n_head,
        n_kv_head=hf.get("num_key_value_heads") or n_head,
        head_dim=hf.get("head_dim") or n_embd // n_head,
        n_embd=n_embd,
        n_inner=n_inner,
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=_hf_rope_theta(hf),
        tie_word_embeddings=tie,
        attn_pdrop=hf.get("attention_dropout", 0.0),
    )


# ---------------------------------------------------------------------------
# weights: shapes and checks
# ---------------------------------------------------------------------------

def expected_llama_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Internal name -> shape for every parameter a llama config has."""
    C, V = config["n_embd"], config["vocab_size"]
    HS, NH, NKV, F = config["head_dim"], config["n_head"], config["n_kv_head"], config["n_inner"]
    shapes: dict[str, tuple[int, ...]] = {"wte": (V, C), "lnf.w": (C,)}
    for layer in range(config["n_layer"]):
        h = f"h.{layer}."
        shapes[h + "ln1.w"] = (C,)
        shapes[h + "qkv.w"] = ((NH + 2 * NKV) * HS, C)
        shapes[h + "proj.w"] = (C, NH * HS)
        shapes[h + "ln2.w"] = (C,)
        shapes[h + "fc.w"] = (2 * F, C)
        shapes[h + "fc2.w"] = (C, F)
    if not config["tie_word_embeddings"]:
        shapes["lm_head.w"] = (V, C)
    return shapes


def check_llama_weights(config: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> None:
    """Raise WeightsError unless `weights` holds exactly the config's parameters, float32, right shapes."""
    expected = expected_llama_shapes(config)
    missing = sorted(set(expected) - set(weights))
    extra = sorted(set(weights) - set(expected))
    if missing or extra:
        raise WeightsError(f"llama weights: missing {missing[:8]}, unexpected {extra[:8]}")
    for name, shape in expected.items():
        array = weights[name]
        if tuple(array.shape) != shape:
            raise WeightsError(f"llama weight {name!r} has shape {tuple(array.shape)}, expected {shape}")
        if array.dtype != np.float32:
            raise WeightsError(f"llama weight {name!r} has dtype {array.dtype}, expected float32")
        if not np.all(np.isfinite(array)):
            raise WeightsError(f"llama weight {name!r} holds NaN or Inf")


def _checked(name: str, array: np.ndarray, shape: tuple[int, ...], source: str) -> np.ndarray:
    if tuple(array.shape) != tuple(shape):
        raise WeightsError(f"{source}: tensor {name!r} has shape {tuple(array.shape)}, expected {tuple(shape)}")
    return array


# ---------------------------------------------------------------------------
# GGUF
# ---------------------------------------------------------------------------

def gguf_rotary_rows_to_hf(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row order.

    llama.cpp's converter stores each head's rows interleaved (row 2i+j of a
    head holds HF row j*HS/2 + i) so that its RoPE can rotate adjacent pairs;
    the core uses the HF convention (rotate_half: the two halves of the head).
    """
    rows, cols = weight.shape
    head_dim = rows // n_heads
    if head_dim * n_heads != rows or head_dim % 2:
        raise WeightsError(f"cannot split {rows} rows into {n_heads} heads of even size")
    return np.ascontiguousarray(weight.reshape(n_heads, head_dim // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols))


def hf_rotary_rows_to_gguf(weight: np.ndarray, n_heads: int) -> np.ndarray:
    """The inverse of gguf_rotary_rows_to_hf (llama.cpp's own permutation)."""
    rows, cols = weight.shape
    head_dim = rows // n_heads
    if head_dim * n_heads != rows or head_dim % 2:
        raise WeightsError(f"cannot split {rows} rows into {n_heads} heads of even size")
    return np.ascontiguousarray(weight.reshape(n_heads, 2, head_dim // 2, cols).swapaxes(1, 2).reshape(rows, cols))


# GGUF tensors per block and where they go (the q/k/v and gate/up pairs are stacked below).
_GGUF_BLOCK_TENSORS = (
    "attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down",
)
# Present in some older llama GGUFs; llama.cpp ignores them too.
_GGUF_IGNORED_BLOCK_TENSORS = ("attn_rot_embd",)


def _special_tokens_from_gguf(f: GGUFFile) -> dict[str, int]:
    special = {}
    for hf_key, gguf_key in (("bos_token_id", "bos_token_id"), ("eos_token_id", "eos_token_id"),
                             ("pad_token_id", "padding_token_id"), ("unk_token_id", "unknown_token_id")):
        value = f.get("tokenizer.ggml." + gguf_key)
        if value is not None:
            special[hf_key] = int(value)
    return special


def load_gguf_llama(path: str | os.PathLike[str]) -> LlamaCheckpoint:
    """A llama-architecture GGUF file as the contract's config + float32 weights."""
    with GGUFFile(path) as f:
        config = config_from_gguf(f)
        source = f"GGUF {f.path}"
        C, V, F = config["n_embd"], config["vocab_size"], config["n_inner"]
        NH, NKV, HS = config["n_head"], config["n_kv_head"], config["head_dim"]

        known = {"token_embd.weight", "output_norm.weight", "output.weight"}
        for layer in range(config["n_layer"]):
            known.update(f"blk.{layer}.{t}.weight" for t in _GGUF_BLOCK_TENSORS + _GGUF_IGNORED_BLOCK_TENSORS)
        unexpected = sorted(set(f.tensor_names) - known)
        if unexpected:
            raise WeightsError(f"{source}: unexpected tensors for a llama model: {unexpected[:8]}")

        def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
            return _checked(name, f.tensor(name), shape, source)

        weights = {"wte": get("token_embd.weight", (V, C)), "lnf.w": get("output_norm.weight", (C,))}
        if not config["tie_word_embeddings"]:
            weights["lm_head.w"] = get("output.weight", (V, C))
        for layer in range(config["n_layer"]):
            b, h = f"blk.{layer}.", f"h.{layer}."
            q = gguf_rotary_rows_to_hf(get(b + "attn_q.weight", (NH * HS, C)), NH)
            k = gguf_rotary_rows_to_hf(get(b + "attn_k.weight", (NKV * HS, C)), NKV)
            v = get(b + "attn_v.weight", (NKV * HS, C))
            weights[h + "ln1.w"] = get(b + "attn_norm.weight", (C,))
            weights[h + "qkv.w"] = np.concatenate([q, k, v], axis=0)
            weights[h + "proj.w"] = get(b + "attn_output.weight", (C, NH * HS))
            weights[h + "ln2.w"] = get(b + "ffn_norm.weight", (C,))
            weights[h + "fc.w"] = np.concatenate(
                [get(b + "ffn_gate.weight", (F, C)), get(b + "ffn_up.weight", (F, C))], axis=0)
            weights[h + "fc2.w"] = get(b + "ffn_down.weight", (C, F))
        special = _special_tokens_from_gguf(f)
    check_llama_weights(config, weights)
    return LlamaCheckpoint(config, weights, hf_config_from_config(config, special), special)


# ---------------------------------------------------------------------------
# Hugging Face directories
# ---------------------------------------------------------------------------

def _hf_layer_names(layer: int) -> dict[str, str]:
    p = f"model.layers.{layer}."
    return {
        "ln1": p + "input_layernorm.weight",
        "q": p + "self_attn.q_proj.weight",
        "k": p + "self_attn.k_proj.weight",
        "v": p + "self_attn.v_proj.weight",
        "proj": p + "self_attn.o_proj.weight",
        "ln2": p + "post_attention_layernorm.weight",
        "gate": p + "mlp.gate_proj.weight",
        "up": p + "mlp.up_proj.weight",
        "down": p + "mlp.down_proj.weight",
    }


def _bf16_tensors_from_safetensors(path: str, names: list[str]) -> dict[str, np.ndarray]:
    """BF16 tensors, which numpy cannot hold, widened to float32 from the raw file.

    safetensors layout: u64 little-endian header size, a JSON header giving
    each tensor's dtype, shape and [begin, end) byte offsets after the header.
    """
    with open(path, "rb") as fh:
        (header_size,) = struct.unpack("<Q", fh.read(8))
        header = json.loads(fh.read(header_size))
        base = 8 + header_size
        out = {}
        for name in names:
            entry = header[name]
            begin, end = entry["data_offsets"]
            fh.seek(base + begin)
            raw = np.frombuffer(fh.read(end - begin), dtype="<u2")
            out[name] = (raw.astype(np.uint32) << 16).view(np.float32).reshape(entry["shape"])
    return out


def _read_safetensors(path: str) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    tensors: dict[str, np.ndarray] = {}
    bf16: list[str] = []
    try:
        with safe_open(path, framework="np") as fh:
            for name in fh.keys():
                try:
                    tensors[name] = fh.get_tensor(name)
                except TypeError:
                    bf16.append(name)  # numpy has no bfloat16
    except Exception as exc:
        raise WeightsError(f"cannot read safetensors file {path}: {type(exc).__name__}: {exc}") from exc
    if bf16:
        tensors.update(_bf16_tensors_from_safetensors(path, bf16))
    return tensors


def _read_hf_tensors(directory: str) -> dict[str, np.ndarray]:
    single = os.path.join(directory, "model.safetensors")
    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(single):
        return _read_safetensors(single)
    if os.path.isfile(index):
        with open(index) as fh:
            shards = sorted(set(json.load(fh)["weight_map"].values()))
        tensors: dict[str, np.ndarray] = {}
        for shard in shards:
            tensors.update(_read_safetensors(os.path.join(directory, shard)))
        return tensors
    raise WeightsError(f"{directory} has neither model.safetensors nor model.safetensors.index.json")


def load_hf_llama(directory: str | os.PathLike[str]) -> LlamaCheckpoint:
    """A Hugging Face Llama directory (config.json + safetensors) as config + float32 weights."""
    directory = os.fspath(directory)
    config_path = os.path.join(directory, "config.json")
    if not os.path.isfile(config_path):
        raise WeightsError(f"no config.json in {directory}")
    try:
        with open(config_path) as fh:
            hf = json.load(fh)
    except (OSError, json.JSONDecodeError) as exc:
        raise WeightsError(f"cannot parse {config_path}: {exc}") from exc
    _require_llama_hf(hf)  # before reading possibly large tensor files
    tensors = _read_hf_tensors(directory)
    config = config_from_hf(hf, has_lm_head="lm_head.weight" in tensors)
    source = f"Hugging Face checkpoint {directory}"
    C, V, F = config["n_embd"], config["vocab_size"], config["n_inner"]
    NH, NKV, HS = config["n_head"], config["n_kv_head"], config["head_dim"]

    used: set[str] = set()

    def get(name: str, shape: tuple[int, ...]) -> np.ndarray:
        if name not in tensors:
            raise WeightsError(f"{source} lacks tensor {name!r}")
        used.add(name)
        return np.ascontiguousarray(_checked(name, tensors[name], shape, source), dtype=np.float32)

    weights = {"wte": get("model.embed_tokens.weight", (V, C)), "lnf.w": get("model.norm.weight", (C,))}
    if config["tie_word_embeddings"]:
        used.add("lm_head.weight")  # some tied checkpoints store a copy; the embedding wins
    else:
        weights["lm_head.w"] = get("lm_head.weight", (V, C))
    for layer in range(config["n_layer"]):
        n, h = _hf_layer_names(layer), f"h.{layer}."
        weights[h + "ln1.w"] = get(n["ln1"], (C,))
        weights[h + "qkv.w"] = np.concatenate(
            [get(n["q"], (NH * HS, C)), get(n["k"], (NKV * HS, C)), get(n["v"], (NKV * HS, C))], axis=0)
        weights[h + "proj.w"] = get(n["proj"], (C, NH * HS))
        weights[h + "ln2.w"] = get(n["ln2"], (C,))
        weights[h + "fc.w"] = np.concatenate([get(n["gate"], (F, C)), get(n["up"], (F, C))], axis=0)
        weights[h + "fc2.w"] = get(n["down"], (C, F))
    # rotary_emb.inv_freq buffers appear in old checkpoints; they are derived, not learned.
    unexpected = sorted(k for k in set(tensors) - used if not k.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise WeightsError(f"{source}: unexpected tensors for a llama model: {unexpected[:8]}")
    check_llama_weights(config, weights)
    special = {k: int(hf[k]) for k in ("bos_token_id", "eos_token_id", "pad_token_id")
               if isinstance(hf.get(k), int)}
    return LlamaCheckpoint(config, weights, hf_config_from_config(config, special), special)


def hf_state_dict_from_weights(config: Mapping[str, Any], weights: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Internal weights under LlamaForCausalLM's parameter names (the inverse of load_hf_llama)."""
    check_llama_weights(config, weights)
    NH, NKV, HS, F = config["n_head"], config["n_kv_head"], config["head_dim"], config["n_inner"]
    out = {"model.embed_tokens.weight": weights["wte"], "model.norm.weight": weights["lnf.w"]}
    if not config["tie_word_embeddings"]:
        out["lm_head.weight"] = weights["lm_head.w"]
    for layer in range(config["n_layer"]):
        n, h = _hf_layer_names(layer), f"h.{layer}."
        q, k, v = np.split(weights[h + "qkv.w"], [NH * HS, (NH + NKV) * HS], axis=0)
        gate, up = np.split(weights[h + "fc.w"], [F], axis=0)
        out.update({
            n["ln1"]: weights[h + "ln1.w"], n["q"]: q, n["k"]: k, n["v"]: v,
            n["proj"]: weights[h + "proj.w"], n["ln2"]: weights[h + "ln2.w"],
            n["gate"]: gate, n["up"]: up, n["down"]: weights[h + "fc2.w"],
        })
    return {name: np.ascontiguousarray(a, dtype=np.float32) for name, a in out.items()}


def export_hf_llama(directory: str | os.PathLike[str], config: Mapping[str, Any],
                    weights: Mapping[str, np.ndarray], tokenizer: Any = None,
                    special_tokens: Mapping[str, int] | None = None) -> None:
    """Write config.json, model.safetensors and (given a tokenizers.Tokenizer) tokenizer files.

    The result loads with transformers.LlamaForCausalLM.from_pretrained and
    AutoTokenizer.from_pretrained as-is.
    """
    from safetensors.numpy import save_file

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    state = hf_state_dict_from_weights(config, weights)
    hf = hf_config_from_config(config, special_tokens)
    with open(os.path.join(directory, "config.json"), "w") as fh:
        json.dump(hf, fh, indent=2)
    save_file(state, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        _export_tokenizer(directory, tokenizer, config, special_tokens or {})


def _export_tokenizer(directory: str, tokenizer: Any, config: Mapping[str, Any],
                      special_tokens: Mapping[str, int]) -> None:
    tokenizer.save(os.path.join(directory, "tokenizer.json"))
    names = {}
    for role in ("bos", "eos", "pad", "unk"):
        token_id = special_tokens.get(f"{role}_token_id")
        if token_id is not None:
            names[f"{role}_token"] = tokenizer.id_to_token(int(token_id))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(config["n_positions"]),
        "clean_up_tokenization_spaces": False,
        **names,
    }
    with open(os.path.join(directory, "tokenizer_config.json"), "w") as fh:
        json.dump(tokenizer_config, fh, indent=2)
    with open(os.path.join(directory, "special_tokens_map.json"), "w") as fh:
        json.dump(names, fh, indent=2)


# ---------------------------------------------------------------------------
# tokenizer
# ---------------------------------------------------------------------------

def byte_to_unicode_map() -> dict[int, str]:
    """GPT-2's byte -> printable character table used to spell byte-level BPE tokens.

    Printable Latin-1 bytes stand for themselves; the other 68 bytes (controls,
    space, etc.) are shifted to code points 256, 257, ... in byte order.
    """
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1))
                 + list(range(ord("\u00ae"), ord("\u00ff") + 1)))
    table, shifted = {}, 0
    for byte in range(256):
        if byte in printable:
            table[byte] = chr(byte)
        else:
            table[byte] = chr(256 + shifted)
            shifted += 1
    return table


# llama.cpp's tokenizer.ggml.pre names -> how its pre-tokenizer splits text.
# "gpt2": GPT-2's regex only; "digits": each digit on its own, then GPT-2's regex
# (llama.cpp's SMOLLM/STARCODER group); "llama3": the Llama-3 regex.
_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_PRE_TOKENIZER_STYLES = {
    "default": "gpt2", "gpt2": "gpt2", "gpt-2": "gpt2",
    "smollm": "digits", "starcoder": "digits", "refact": "digits", "command-r": "digits",
    "codeshell": "digits", "exaone": "digits", "minerva-7b": "digits",
    "llama3": "llama3", "llama-v3": "llama3", "llama-bpe": "llama3", "smaug-bpe": "llama3", "dbrx": "llama3",
}
_TOKEN_TYPE_CONTROL = 3
_TOKEN_TYPE_USER_DEFINED = 4


def _pre_tokenizer(pre: str | None, add_prefix_space: bool):
    from tokenizers import Regex, pre_tokenizers

    style = _PRE_TOKENIZER_STYLES.get(pre or "default")
    if style is None:
        raise WeightsError(
            f"GGUF tokenizer.ggml.pre {pre!r} is not supported; known: {sorted(_PRE_TOKENIZER_STYLES)}"
        )
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space, use_regex=(style != "llama3"))
    if style == "gpt2":
        return byte_level
    if style == "digits":
        return pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
    return pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"), byte_level])


def tokenizer_from_gguf(source: str | os.PathLike[str] | GGUFFile):
    """The GGUF's byte-level BPE tokenizer (tokenizer.ggml.model == 'gpt2') as a tokenizers.Tokenizer."""
    if isinstance(source, GGUFFile):
        return _build_tokenizer(source)
    with GGUFFile(source) as f:
        return _build_tokenizer(f)


def _build_tokenizer(f: GGUFFile):
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    kind = f.require("tokenizer.ggml.model")
    if kind != "gpt2":
        raise WeightsError(f"GGUF {f.path}: tokenizer model {kind!r} is not supported (only byte-level BPE 'gpt2')")
    tokens = list(f.require("tokenizer.ggml.tokens"))
    merges_text = list(f.require("tokenizer.ggml.merges"))
    token_types = list(f.get("tokenizer.ggml.token_type") or [])

    byte_spelling = byte_to_unicode_map()
    alphabet = set(byte_spelling.values())
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        if not set(token) <= alphabet:
            # A few converters store raw text; respell it in the byte alphabet.
            token = "".join(byte_spelling[b] for b in token.encode("utf-8"))
        vocab.setdefault(token, index)  # keep the first id of a duplicated spelling
    merges = []
    for merge in merges_text:
        parts = merge.split(" ")
        if len(parts) != 2:
            raise WeightsError(f"GGUF {f.path}: malformed merge {merge!r}")
        merges.append((parts[0], parts[1]))

    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False, byte_fallback=False))
    add_prefix_space = bool(f.get("tokenizer.ggml.add_space_prefix", False))
    tokenizer.pre_tokenizer = _pre_tokenizer(f.get("tokenizer.ggml.pre"), add_prefix_space)
    tokenizer.decoder = decoders.ByteLevel()

    # Control tokens (<|im_start|>, <|endoftext|>, ...) must match whole and
    # never go through BPE; user-defined ones match whole but are ordinary text.
    special, user_defined = [], []
    for token, token_type in zip(tokens, token_types):
        if token not in vocab or not set(token) <= alphabet:
            continue
        if token_type == _TOKEN_TYPE_CONTROL:
            special.append(AddedToken(token, special=True, normalized=False))
        elif token_type == _TOKEN_TYPE_USER_DEFINED:
            user_defined.append(AddedToken(token, special=False, normalized=False))
    if special:
        tokenizer.add_special_tokens(special)
    if user_defined:
        tokenizer.add_tokens(user_defined)

    # Sequence markers as llama.cpp adds them (SmolLM2: neither BOS nor EOS).
    add_bos = bool(f.get("tokenizer.ggml.add_bos_token", False))
    add_eos = bool(f.get("tokenizer.ggml.add_eos_token", False))
    if add_bos or add_eos:
        markers = []
        prefix, suffix = [], []
        if add_bos:
            bos = tokens[int(f.require("tokenizer.ggml.bos_token_id"))]
            markers.append((bos, vocab[bos]))
            prefix = [bos]
        if add_eos:
            eos = tokens[int(f.require("tokenizer.ggml.eos_token_id"))]
            markers.append((eos, vocab[eos]))
            suffix = [eos]
        single = " ".join(prefix + ["$A"] + suffix)
        pair = " ".join(prefix + ["$A"] + suffix + prefix + ["$B:1"] + suffix)
        tokenizer.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=list(dict.fromkeys(markers)))
    return tokenizer
