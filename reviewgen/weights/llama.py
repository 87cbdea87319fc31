"""Llama-family checkpoints: llama.cpp GGUF files and Hugging Face LlamaForCausalLM directories.

What this module holds is only what is Llama about them: the name maps
(docs/model_layout.md), the translation of GGUF metadata and of config.json
into the core's ModelConfig, llama.cpp's Q/K row order, and the inverse for
export. Reading files is safetensors_io / gguf_io; writing the weights into
the core is Checkpoint.build_model.

  load_gguf_llama(path)               a GGUF file (any dequantizable type) -> Checkpoint
  load_hf_llama(directory)            config.json + safetensors -> Checkpoint
  export_hf_llama(directory, model)   a directory LlamaForCausalLM loads as-is
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from ..core.files import atomic_write, write_json
from ..core.models import Model, ModelConfig
from .checkpoint import (SPECIAL_TOKEN_KEYS, BlockQuantized, Checkpoint, WeightsError, config_errors, config_int,
                         minimum_parameters)
from .gguf_io import GGUFFile
from .gguf_tokenizer import tokenizer_from_gguf
from .hub import resolve
from .safetensors_io import read_config, read_weights, save_safetensors, weights_path

__all__ = [
    "load_gguf_llama",
    "load_hf_llama",
    "export_hf_llama",
    "config_from_gguf",
    "config_from_hf",
    "hf_config_from_config",
    "hf_state_dict",
    "gguf_rotary_rows_to_hf",
    "hf_rotary_rows_to_gguf",
]

# Architectures whose GGUF tensors follow llama.cpp's LLM_ARCH_LLAMA naming and layout.
GGUF_LLAMA_ARCHITECTURES = ("llama",)


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------

def _llama_config(*, vocab_size, n_positions, n_layer, n_head, n_kv_head, head_dim, n_embd,
                  n_inner, norm_eps, rope_theta, tie_word_embeddings, attn_pdrop=0.0) -> ModelConfig:
    """The core's config for a Llama-family model, validated."""
    sizes = dict(vocab_size=vocab_size, n_positions=n_positions, n_layer=n_layer, n_head=n_head,
                 n_kv_head=n_kv_head, head_dim=head_dim, n_embd=n_embd, n_inner=n_inner)
    for key, value in sizes.items():
        if int(value) <= 0:
            raise WeightsError(f"llama config: {key} must be positive, got {value}")
    if int(n_head) % int(n_kv_head) != 0:
        raise WeightsError(f"llama config: n_head ({n_head}) must be a multiple of n_kv_head ({n_kv_head})")
    if int(head_dim) % 2 != 0:
        raise WeightsError(f"llama config: rotary embeddings need an even head_dim, got {head_dim}")
    if not float(norm_eps) > 0:
        raise WeightsError(f"llama config: norm_eps must be positive, got {norm_eps}")
    return ModelConfig(
        **{key: int(value) for key, value in sizes.items()}, norm="rmsnorm", norm_eps=float(norm_eps),
        pre_norm=True, embed_norm=False, final_norm=True, position="rope", rope_theta=float(rope_theta),
        activation="swiglu", causal=True, bias=False, head="lm",
        tie_word_embeddings=bool(tie_word_embeddings), attn_pdrop=float(attn_pdrop))


def hf_config_from_config(config: ModelConfig, special_tokens: Mapping[str, int] | None = None) -> dict[str, Any]:
    """A Hugging Face LlamaConfig dict (config.json) for a core llama config."""
    special_tokens = dict(special_tokens or {})
    rope_theta = float(config.rope_theta)
    hf = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "vocab_size": int(config.vocab_size),
        "hidden_size": int(config.n_embd),
        "intermediate_size": int(config.n_inner),
        "num_hidden_layers": int(config.n_layer),
        "num_attention_heads": int(config.n_head),
        "num_key_value_heads": int(config.n_kv_head),
        "head_dim": int(config.head_dim),
        "max_position_embeddings": int(config.n_positions),
        "rms_norm_eps": float(config.norm_eps),
        # transformers >= 5 reads rope_parameters; older versions read rope_theta.
        "rope_theta": rope_theta,
        "rope_parameters": {"rope_type": "default", "rope_theta": rope_theta},
        "rope_scaling": None,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "attention_dropout": float(config.attn_pdrop),
        "tie_word_embeddings": bool(config.tie_word_embeddings),
        "initializer_range": 0.02,
        "pretraining_tp": 1,
        "use_cache": True,
        "dtype": "float32",
    }
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        hf[key] = special_tokens.get(key)
    return hf


def _gguf_int(f: GGUFFile, key: str, default: Any = None, minimum: int = 1) -> int:
    value = f.get(key, default) if default is not None else f.require(key)
    if isinstance(value, list):
        # Some files store per-layer values (e.g. head_count_kv); the core needs one.
        if not value or any(v != value[0] for v in value):
            raise WeightsError(f"GGUF {f.path}: key {key!r} varies per layer ({value[:8]}); not supported")
        value = value[0]
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise WeightsError(f"GGUF {f.path}: key {key!r} must be an integer, got {value!r}")
    if value < minimum:
        raise WeightsError(f"GGUF {f.path}: key {key!r} must be >= {minimum}, got {value}")
    return int(value)


def _gguf_float(f: GGUFFile, key: str, default: float | None = None) -> float:
    """A float32 metadata value as the shortest decimal that rounds to it (1e-05, not 9.99999974e-06),
    so GGUF and config.json sources of one model give equal configs."""
    value = f.get(key, default) if default is not None else f.require(key)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise WeightsError(f"GGUF {f.path}: key {key!r} must be a number, got {value!r}")
    return float(str(np.float32(value)))


def config_from_gguf(f: GGUFFile) -> ModelConfig:
    """The core's config for a llama GGUF file."""
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
    else:
        vocab_size = _gguf_int(f, p + "vocab_size")
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


def config_from_hf(hf: Mapping[str, Any], has_lm_head: bool | None = None) -> ModelConfig:
    """The core's config for a Hugging Face LlamaConfig dict.

    has_lm_head: whether the checkpoint stores lm_head.weight; decides tying
    when config.json does not say.
    """
    _require_llama_hf(hf)
    if hf.get("hidden_act", "silu") != "silu":
        raise WeightsError(f"config.json: hidden_act {hf.get('hidden_act')!r} is not supported (SwiGLU needs silu)")
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        raise WeightsError("config.json: attention_bias / mlp_bias are not supported (llama linears have no bias)")
    n_embd = config_int(hf, "hidden_size")
    n_head = config_int(hf, "num_attention_heads")
    n_layer = config_int(hf, "num_hidden_layers")
    n_inner = config_int(hf, "intermediate_size")
    vocab_size = config_int(hf, "vocab_size")
    tie = hf.get("tie_word_embeddings")
    if tie is None:
        tie = not has_lm_head if has_lm_head is not None else False
    elif not isinstance(tie, bool):
        raise WeightsError(f"config.json: tie_word_embeddings must be true or false, got {tie!r}")
    return _llama_config(
        vocab_size=vocab_size,
        n_positions=config_int(hf, "max_position_embeddings", 2048),
        n_layer=n_layer,
        n_head=n_head,
        # 0 or null: derived, as transformers does
        n_kv_head=config_int(hf, "num_key_value_heads", 0, minimum=0) or n_head,
        head_dim=config_int(hf, "head_dim", 0, minimum=0) or n_embd // n_head,
        n_embd=n_embd,
        n_inner=n_inner,
        norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=_hf_rope_theta(hf),
        tie_word_embeddings=tie,
        attn_pdrop=hf.get("attention_dropout", 0.0),
    )


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
            if isinstance(value, bool) or not isinstance(value, int):
                raise WeightsError(f"GGUF {f.path}: tokenizer.ggml.{gguf_key} must be a token id, got {value!r}")
            special[hf_key] = int(value)
    return special


def _split_rows(config: ModelConfig) -> dict[str, tuple[int, ...]]:
    """Rows of each part of the stacked tensors: qkv = [q; k; v], fc = [gate; up]."""
    q, kv = config.n_head * config.head_dim, config.n_kv_head * config.head_dim
    return {"qkv.w": (q, kv, kv), "fc.w": (config.n_inner, config.n_inner)}


def _check_gguf_against_tensors(f: GGUFFile, config: ModelConfig) -> None:
    """The metadata must describe the tensors the file holds, checked before anything the
    size of the model is allocated (a corrupt block_count or embedding_length fails here)."""
    layers = set()
    for name in f.tensor_names:
        parts = name.split(".")
        if parts[0] == "blk":
            if len(parts) < 3 or not parts[1].isdigit():
                raise WeightsError(f"GGUF {f.path}: tensor name {name!r} is not blk.<layer>.<name>")
            layers.add(int(parts[1]))
    complete = len(layers) == config.n_layer and all(layer < config.n_layer for layer in layers)
    if not complete:  # (no range(n_layer) is built: n_layer may be 2**31 - 1)
        extra = sorted(layer for layer in layers if layer >= config.n_layer)[:8]
        missing = [layer for layer in range(min(config.n_layer, max(layers, default=0) + 2))
                   if layer not in layers][:8]
        raise WeightsError(f"GGUF {f.path}: block_count is {config.n_layer}, but the file holds tensors of "
                           f"{len(layers)} blocks (blocks without tensors: {missing}, beyond the count: {extra})")
    expected = {"token_embd.weight": (config.vocab_size, config.n_embd), "output_norm.weight": (config.n_embd,)}
    for name, shape in expected.items():
        if not f.has_tensor(name):
            raise WeightsError(f"GGUF {f.path} has no tensor {name!r}")
        if f.tensor_shape(name) != shape:
            raise WeightsError(f"GGUF {f.path}: tensor {name!r} has shape {f.tensor_shape(name)}, the metadata "
                               f"(vocab_size, embedding_length) describe {shape}")
    held = sum(int(np.prod(f.tensor_shape(name), dtype=np.int64)) for name in f.tensor_names)
    needed = minimum_parameters(config)
    if needed > held:
        raise WeightsError(f"GGUF {f.path}: the metadata describe at least {needed:,} parameters, the file's "
                           f"tensors hold {held:,} values")


def load_gguf_llama(path: str | os.PathLike[str]) -> Checkpoint:
    """A llama-architecture GGUF file (or alias) as a Checkpoint, its tokenizer included when it has one."""
    with GGUFFile(resolve(path)) as f:
        with config_errors(f.path):  # every error names the file
            config = config_from_gguf(f)
            source = f"GGUF {f.path}"
            _check_gguf_against_tensors(f, config)
            known = {"token_embd.weight", "output_norm.weight", "output.weight"}
            for layer in range(config.n_layer):
                known.update(f"blk.{layer}.{t}.weight" for t in _GGUF_BLOCK_TENSORS + _GGUF_IGNORED_BLOCK_TENSORS)
            unexpected = sorted(set(f.tensor_names) - known)
            if unexpected:
                raise WeightsError(f"{source}: unexpected tensors for a llama model: {unexpected[:8]}")

            def block(name: str, rows: int | None = None, rotary_heads: int | None = None):
                """(name, array) of a GGUF tensor; `rows` where it is one part of a stacked tensor
                (the core checks everything else against its parameter table)."""
                array = f.block(name)
                if rows is not None and array.shape[0] != rows:
                    raise WeightsError(f"{source}: tensor {name!r} has shape {array.shape}, expected {rows} rows")
                if rotary_heads is None:
                    return name, array
                if isinstance(array, BlockQuantized):  # whole rows move: permute the row order
                    order = gguf_rotary_rows_to_hf(np.arange(array.shape[0])[:, None], rotary_heads)[:, 0]
                    return name, array.take_rows(order)
                return name, gguf_rotary_rows_to_hf(array, rotary_heads)

            tensors = {"wte": [block("token_embd.weight")], "lnf.w": [block("output_norm.weight")]}
            if not config.tie_word_embeddings:
                tensors["lm_head.w"] = [block("output.weight")]
            (q, kv, _), (ffn, _) = _split_rows(config)["qkv.w"], _split_rows(config)["fc.w"]
            for layer in range(config.n_layer):
                b, h = f"blk.{layer}.", f"h.{layer}."
                tensors[h + "ln1.w"] = [block(b + "attn_norm.weight")]
                tensors[h + "qkv.w"] = [block(b + "attn_q.weight", q, config.n_head),
                                        block(b + "attn_k.weight", kv, config.n_kv_head),
                                        block(b + "attn_v.weight", kv)]
                tensors[h + "proj.w"] = [block(b + "attn_output.weight")]
                tensors[h + "ln2.w"] = [block(b + "ffn_norm.weight")]
                tensors[h + "fc.w"] = [block(b + "ffn_gate.weight", ffn), block(b + "ffn_up.weight", ffn)]
                tensors[h + "fc2.w"] = [block(b + "ffn_down.weight")]
            special = _special_tokens_from_gguf(f)
            for key, value in special.items():
                if not 0 <= value < config.vocab_size:
                    raise WeightsError(f"GGUF {f.path}: {key} {value} lies outside the vocabulary of "
                                       f"{config.vocab_size} tokens")
            tokenizer = tokenizer_from_gguf(f) if f.get("tokenizer.ggml.model") is not None else None
    return Checkpoint("llama", config, tensors, source, hf_config_from_config(config, special), special,
                      tokenizer=tokenizer, config_source=f.path)


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


def load_hf_llama(directory: str | os.PathLike[str]) -> Checkpoint:
    """A Hugging Face Llama directory (config.json + safetensors), or hub id, as a Checkpoint."""
    directory = resolve(directory, directory=True)
    hf = read_config(directory)
    config_path = os.path.join(directory, "config.json")
    with config_errors(config_path):
        _require_llama_hf(hf)  # before reading possibly large tensor files
        config_from_hf(hf, has_lm_head=False)
    state = read_weights(directory)
    with config_errors(config_path):
        config = config_from_hf(hf, has_lm_head="lm_head.weight" in state)
    weights_file = weights_path(directory)
    source = f"Hugging Face checkpoint {weights_file}"
    used: set[str] = set()

    def get(name: str, count: int | None = None) -> tuple[str, np.ndarray]:
        if name not in state:
            raise WeightsError(f"{source} lacks tensor {name!r} (needed by the model {config_path} describes)")
        if count is not None and (state[name].ndim < 1 or state[name].shape[0] != count):
            raise WeightsError(f"{state.files.get(name, weights_file)}: tensor {name!r} has shape "
                               f"{state[name].shape}, expected {count} rows (from {config_path})")
        used.add(name)
        return name, state[name]

    tensors = {"wte": [get("model.embed_tokens.weight")], "lnf.w": [get("model.norm.weight")]}
    if config.tie_word_embeddings:
        used.add("lm_head.weight")  # some tied checkpoints store a copy; the embedding wins
    else:
        tensors["lm_head.w"] = [get("lm_head.weight")]
    (q, kv, _), (ffn, _) = _split_rows(config)["qkv.w"], _split_rows(config)["fc.w"]
    for layer in range(config.n_layer):
        n, h = _hf_layer_names(layer), f"h.{layer}."
        tensors[h + "ln1.w"] = [get(n["ln1"])]
        tensors[h + "qkv.w"] = [get(n["q"], q), get(n["k"], kv), get(n["v"], kv)]
        tensors[h + "proj.w"] = [get(n["proj"])]
        tensors[h + "ln2.w"] = [get(n["ln2"])]
        tensors[h + "fc.w"] = [get(n["gate"], ffn), get(n["up"], ffn)]
        tensors[h + "fc2.w"] = [get(n["down"])]
    # rotary_emb.inv_freq buffers appear in old checkpoints; they are derived, not learned.
    unexpected = sorted(k for k in set(state) - used if not k.endswith("rotary_emb.inv_freq"))
    if unexpected:
        raise WeightsError(f"{source}: unexpected tensors for a llama model: {unexpected[:8]}")
    special = {k: int(hf[k]) for k in SPECIAL_TOKEN_KEYS if isinstance(hf.get(k), int)}
    return Checkpoint("llama", config, tensors, source, hf_config_from_config(config, special), special,
                      tokenizer_dir=directory, files=dict(state.files), config_source=config_path)


def hf_state_dict(model: Model) -> dict[str, np.ndarray]:
    """A llama Model's parameters under LlamaForCausalLM's names (the inverse of load_hf_llama)."""
    config = model.config
    q, kv, _ = _split_rows(config)["qkv.w"]
    out = {"model.embed_tokens.weight": model.param("wte"), "model.norm.weight": model.param("lnf.w")}
    if not config.tie_word_embeddings:
        out["lm_head.weight"] = model.param("lm_head.w")
    for layer in range(config.n_layer):
        n, h = _hf_layer_names(layer), f"h.{layer}."
        query, key, value = np.split(model.param(h + "qkv.w"), [q, q + kv], axis=0)
        gate, up = np.split(model.param(h + "fc.w"), [config.n_inner], axis=0)
        out.update({
            n["ln1"]: model.param(h + "ln1.w"), n["q"]: query, n["k"]: key, n["v"]: value,
            n["proj"]: model.param(h + "proj.w"), n["ln2"]: model.param(h + "ln2.w"),
            n["gate"]: gate, n["up"]: up, n["down"]: model.param(h + "fc2.w"),
        })
    return out


def export_hf_llama(directory: str | os.PathLike[str], model: Model, tokenizer: Any = None,
                    special_tokens: Mapping[str, int] | None = None) -> None:
    """Write config.json, model.safetensors and (given a tokenizers.Tokenizer) tokenizer files.

    The result loads with transformers.LlamaForCausalLM.from_pretrained and
    AutoTokenizer.from_pretrained as-is.
    """
    config = model.config
    if config.norm != "rmsnorm" or config.position != "rope" or config.head != "lm":
        raise WeightsError("export_hf_llama: the model is not Llama shaped")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    write_json(os.path.join(directory, "config.json"), hf_config_from_config(config, special_tokens), indent=2)
    save_safetensors(hf_state_dict(model), os.path.join(directory, "model.safetensors"))
    if tokenizer is not None:
        _export_tokenizer(directory, tokenizer, config, special_tokens or {})


def _export_tokenizer(directory: str, tokenizer: Any, config: ModelConfig,
                      special_tokens: Mapping[str, int]) -> None:
    with atomic_write(os.path.join(directory, "tokenizer.json"), "w", encoding="utf-8") as fh:
        fh.write(tokenizer.to_str())
    names = {}
    for role in ("bos", "eos", "pad", "unk"):
        token_id = special_tokens.get(f"{role}_token_id")
        if token_id is not None:
            names[f"{role}_token"] = tokenizer.id_to_token(int(token_id))
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(config.n_positions),
        "clean_up_tokenization_spaces": False,
        **names,
    }
    write_json(os.path.join(directory, "tokenizer_config.json"), tokenizer_config, indent=2)
    write_json(os.path.join(directory, "special_tokens_map.json"), names, indent=2)
