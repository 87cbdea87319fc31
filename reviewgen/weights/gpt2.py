"""GPT-2 / DistilGPT2 checkpoints in Hugging Face's directory format.

Only what is GPT-2 about them lives here: the name map, the translation of
config.json into the core's ModelConfig, and the inverse for export.
load_gpt2(directory) returns a Checkpoint (Checkpoint.build_model writes it
into the core); export_gpt2(model, directory) writes a directory that
transformers.GPT2LMHeadModel.from_pretrained loads as-is.

GPT-2 stores its linear layers as Conv1D, weight (in, out); the core's
layout is (out, in) (docs/model_layout.md), so those weights are handed to
the core as transposed views (the core copies them once, transposing) and
transposed back on export.
"""
from __future__ import annotations

import os
from typing import Dict, Optional

import numpy as np

from ..core.files import write_json
from ..core.models import Model, ModelConfig
from ..text.tokenization import copy_tokenizer_files
from .checkpoint import Checkpoint, UnsupportedModelError, WeightsError, config_errors, config_int
from .hub import resolve
from .safetensors_io import read_config, read_weights, save_safetensors, weights_path


# internal block tensor -> (HF name inside transformer.h.L, transposed from Conv1D)
_BLOCK_TENSORS = {
    "ln1.w": ("ln_1.weight", False), "ln1.b": ("ln_1.bias", False),
    "qkv.w": ("attn.c_attn.weight", True), "qkv.b": ("attn.c_attn.bias", False),
    "proj.w": ("attn.c_proj.weight", True), "proj.b": ("attn.c_proj.bias", False),
    "ln2.w": ("ln_2.weight", False), "ln2.b": ("ln_2.bias", False),
    "fc.w": ("mlp.c_fc.weight", True), "fc.b": ("mlp.c_fc.bias", False),
    "fc2.w": ("mlp.c_proj.weight", True), "fc2.b": ("mlp.c_proj.bias", False),
}
_GLOBAL_TENSORS = {"wte": "wte.weight", "wpe": "wpe.weight", "lnf.w": "ln_f.weight",
                   "lnf.b": "ln_f.bias"}
# Buffers older GPT-2 files store (the causal mask); derived, not learned.
_BUFFER_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def gpt2_config_from_hf(hf: Dict[str, object]) -> ModelConfig:
    """The core configuration of a GPT-2 config.json (docs/model_layout.md, GPT-2 column)."""
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise UnsupportedModelError(f"GPT-2 activation_function {activation!r} is not supported "
                         "(the core implements the tanh GELU, gelu_new)")
    for flag, supported in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                            ("reorder_and_upcast_attn", False)):
        if bool(hf.get(flag, supported)) != supported:
            raise UnsupportedModelError(f"GPT-2 config {flag}={hf[flag]!r} is not supported by the core")
    n_embd = config_int(hf, "n_embd")
    return ModelConfig(
        vocab_size=config_int(hf, "vocab_size"), n_positions=config_int(hf, "n_positions"),
        n_layer=config_int(hf, "n_layer"), n_head=config_int(hf, "n_head"), n_embd=n_embd,
        n_inner=config_int(hf, "n_inner", 4 * n_embd),
        norm="layernorm", norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        pre_norm=True, embed_norm=False, final_norm=True, position="learned",
        activation="gelu_tanh", causal=True, bias=True, head="lm",
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
        embd_pdrop=float(hf.get("embd_pdrop", 0.1)), resid_pdrop=float(hf.get("resid_pdrop", 0.1)),
        attn_pdrop=float(hf.get("attn_pdrop", 0.1)))


def load_gpt2(source: str) -> Checkpoint:
    """The GPT-2 checkpoint of a Hugging Face directory (config.json + model.safetensors), or hub id."""
    directory = resolve(source, directory=True)
    hf_config = read_config(directory)
    config_path = os.path.join(directory, "config.json")
    with config_errors(config_path):
        config = gpt2_config_from_hf(hf_config)
    weights = read_weights(directory)
    # GPT2LMHeadModel saves under "transformer."; the original GPT2Model files do not.
    state, files = {}, {}
    for name, value in weights.items():
        short = name[len("transformer."):] if name.startswith("transformer.") else name
        state[short], files[short] = value, weights.files.get(name, weights_path(directory))
    head = state.pop("lm_head.weight", None)
    if head is not None and "wte.weight" in state and head.shape == state["wte.weight"].shape \
            and np.array_equal(head, state["wte.weight"]):
        head = None  # a tied checkpoint that stored the head twice
    if head is None and hf_config.get("tie_word_embeddings") is False:
        raise WeightsError(f"GPT-2 checkpoint {weights_path(directory)} lacks tensor 'lm_head.weight', which "
                           f"{config_path} (tie_word_embeddings: false) says it has")
    config.tie_word_embeddings = head is None
    source = f"GPT-2 checkpoint {weights_path(directory)}"
    used = {"lm_head.weight"}

    def block(name: str, conv1d: bool = False):
        if name not in state:
            raise WeightsError(f"{source} lacks tensor {name!r} (needed by the model {config_path} describes)")
        if conv1d and state[name].ndim != 2:
            raise WeightsError(f"{files[name]}: tensor {name!r} has shape {state[name].shape}, expected 2 dimensions")
        used.add(name)
        return name, state[name].T if conv1d else state[name]

    tensors = {internal: [block(hf_name)] for internal, hf_name in _GLOBAL_TENSORS.items()}
    for layer in range(config.n_layer):
        for internal, (hf_name, conv1d) in _BLOCK_TENSORS.items():
            tensors[f"h.{layer}.{internal}"] = [block(f"h.{layer}.{hf_name}", conv1d)]
    if head is not None:
        tensors["lm_head.w"] = [("lm_head.weight", head)]
    unexpected = sorted(k for k in set(state) - used if not k.endswith(_BUFFER_SUFFIXES))
    if unexpected:
        raise WeightsError(f"{source}: unexpected tensors for a GPT-2 model: {unexpected[:8]}")
    eos = hf_config.get("eos_token_id")
    if isinstance(eos, list) and eos:
        eos = eos[0]
    if eos is not None and (isinstance(eos, bool) or not isinstance(eos, int) or eos < 0):
        raise WeightsError(f"{config_path}: eos_token_id must be a token id, got {hf_config['eos_token_id']!r}")
    special = {"eos_token_id": eos} if eos is not None else {}
    files["lm_head.weight"] = files.get("lm_head.weight", weights_path(directory))
    return Checkpoint("gpt2", config, tensors, source, hf_config, special, tokenizer_dir=directory,
                      files=files, config_source=config_path)


def _hf_config_for(model: Model, base: Optional[dict]) -> dict:
    c = model.config
    hf = dict(base or {})
    hf.update({
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": c.vocab_size, "n_positions": c.n_positions, "n_ctx": c.n_positions,
        "n_embd": c.n_embd, "n_layer": c.n_layer, "n_head": c.n_head,
        "n_inner": None if c.n_inner == 4 * c.n_embd else c.n_inner,
        "activation_function": "gelu_new", "layer_norm_epsilon": c.norm_eps,
        "embd_pdrop": c.embd_pdrop, "resid_pdrop": c.resid_pdrop, "attn_pdrop": c.attn_pdrop,
        "tie_word_embeddings": bool(c.tie_word_embeddings),
    })
    hf.pop("torch_dtype", None)
    hf.pop("dtype", None)
    # GPT-2's <|endoftext|> is id 50256, its last; a smaller vocabulary has no such id
    end = 50256 if c.vocab_size > 50256 else c.vocab_size - 1
    hf.setdefault("bos_token_id", end)
    hf.setdefault("eos_token_id", end)
    return hf


def export_gpt2(model: Model, directory: str, hf_config: Optional[dict] = None,
                tokenizer_dir: Optional[str] = None) -> str:
    """Writes config.json (the fields of `hf_config` kept), model.safetensors and the
    tokenizer files of `tokenizer_dir`, so that GPT2LMHeadModel.from_pretrained(directory)
    loads it unchanged."""
    c = model.config
    if c.head != "lm" or c.position != "learned" or c.norm != "layernorm" or not c.pre_norm:
        raise UnsupportedModelError("export_gpt2: the model is not GPT-2 shaped")
    os.makedirs(directory, exist_ok=True)
    tensors = {}
    for internal, hf_name in _GLOBAL_TENSORS.items():
        tensors["transformer." + hf_name] = model.param(internal)
    for layer in range(c.n_layer):
        for internal, (hf_name, conv1d) in _BLOCK_TENSORS.items():
            value = model.param(f"h.{layer}.{internal}")
            tensors[f"transformer.h.{layer}.{hf_name}"] = value.T if conv1d else value
    if not c.tie_word_embeddings:
        tensors["lm_head.weight"] = model.param("lm_head.w")
    save_safetensors(tensors, os.path.join(directory, "model.safetensors"))
    write_json(os.path.join(directory, "config.json"), _hf_config_for(model, hf_config), indent=2)
    if tokenizer_dir:
        copy_tokenizer_files(tokenizer_dir, directory)
    return directory


__all__ = ["load_gpt2", "export_gpt2", "gpt2_config_from_hf"]
