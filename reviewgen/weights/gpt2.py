"""GPT-2 / DistilGPT2 checkpoints in Hugging Face's directory format.

load_gpt2(path) reads config.json and model.safetensors (through the
safetensors numpy API; pytorch_model.bin only when torch is importable, and
then with weights_only=True) into a reviewgen Model. export_gpt2(model, dir)
writes a directory that transformers.GPT2LMHeadModel.from_pretrained loads
as-is, tokenizer files included (copied from the source directory).

GPT-2 stores its linear layers as Conv1D, weight (in, out); the core's
layout is (out, in) (docs/model_layout.md), so those weights are transposed
on the way in and on the way out.
"""
from __future__ import annotations

import json
import os
from typing import Dict, Optional

import numpy as np

from ..core.models import Model, ModelConfig
from ..text.tokenization import copy_tokenizer_files


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


def gpt2_config_from_hf(hf: Dict[str, object]) -> ModelConfig:
    """The core configuration of a GPT-2 config.json (docs/model_layout.md, GPT-2 column)."""
    activation = hf.get("activation_function", "gelu_new")
    if activation not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"GPT-2 activation_function {activation!r} is not supported "
                         "(the core implements the tanh GELU, gelu_new)")
    for flag, supported in (("scale_attn_weights", True), ("scale_attn_by_inverse_layer_idx", False),
                            ("reorder_and_upcast_attn", False)):
        if bool(hf.get(flag, supported)) != supported:
            raise ValueError(f"GPT-2 config {flag}={hf[flag]!r} is not supported by the core")
    n_embd = int(hf["n_embd"])
    return ModelConfig(
        vocab_size=int(hf["vocab_size"]), n_positions=int(hf["n_positions"]),
        n_layer=int(hf["n_layer"]), n_head=int(hf["n_head"]), n_embd=n_embd,
        n_inner=int(hf.get("n_inner") or 4 * n_embd),
        norm="layernorm", norm_eps=float(hf.get("layer_norm_epsilon", 1e-5)),
        pre_norm=True, embed_norm=False, final_norm=True, position="learned",
        activation="gelu_tanh", causal=True, bias=True, head="lm",
        tie_word_embeddings=bool(hf.get("tie_word_embeddings", True)),
        embd_pdrop=float(hf.get("embd_pdrop", 0.1)), resid_pdrop=float(hf.get("resid_pdrop", 0.1)),
        attn_pdrop=float(hf.get("attn_pdrop", 0.1)))


def _read_weights(directory: str) -> Dict[str, np.ndarray]:
    safetensors_path = os.path.join(directory, "model.safetensors")
    if os.path.isfile(safetensors_path):
        from safetensors.numpy import load_file

        return load_file(safetensors_path)
    bin_path = os.path.join(directory, "pytorch_model.bin")
    if os.path.isfile(bin_path):
        try:
            import torch  # only for this legacy format
        except ImportError:
            raise FileNotFoundError(f"{directory} holds only pytorch_model.bin, which needs torch; "
                                    "convert it to model.safetensors") from None
        state = torch.load(bin_path, map_location="cpu", weights_only=True)
        return {name: tensor.float().numpy() for name, tensor in state.items()}
    raise FileNotFoundError(f"{directory}: neither model.safetensors nor pytorch_model.bin")


def _resolve(path_or_id: str) -> str:
    """A local directory as is; otherwise a hub id ("owner/name"), fetched only when online."""
    if os.path.isdir(path_or_id):
        return path_or_id
    looks_local = (os.path.isabs(path_or_id) or path_or_id.startswith(".") or os.path.exists(path_or_id)
                   or path_or_id.count("/") > 1)
    if looks_local:
        raise FileNotFoundError(f"{path_or_id}: no such model directory")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise FileNotFoundError(f"{path_or_id!r} is not a directory (and huggingface_hub, needed for "
                                "hub ids, is not installed)") from None
    try:
        return snapshot_download(path_or_id, allow_patterns=["*.json", "*.safetensors", "*.txt"])
    except Exception as error:  # offline, unknown id, ...
        raise FileNotFoundError(f"{path_or_id!r} is neither a local directory nor a reachable hub "
                                f"model ({error})") from error


def load_gpt2(path_or_id: str) -> Model:
    """A Model holding the GPT-2 checkpoint of a Hugging Face directory (or hub id, online)."""
    directory = _resolve(path_or_id)
    with open(os.path.join(directory, "config.json"), encoding="utf-8") as f:
        hf_config = json.load(f)
    weights = _read_weights(directory)
    # GPT2LMHeadModel saves under "transformer."; the original GPT2Model files do not.
    stripped = {}
    for name, value in weights.items():
        stripped[name[len("transformer."):] if name.startswith("transformer.") else name] = value
    head = stripped.pop("lm_head.weight", None)
    config = gpt2_config_from_hf(hf_config)
    if head is not None and "wte.weight" in stripped and np.array_equal(head, stripped["wte.weight"]):
        head = None  # a tied checkpoint that stored the head twice
    config.tie_word_embeddings = head is None
    model = Model(config)
    tensors = {}
    for internal, hf_name in _GLOBAL_TENSORS.items():
        tensors[internal] = stripped[hf_name]
    for layer in range(config.n_layer):
        for internal, (hf_name, conv1d) in _BLOCK_TENSORS.items():
            value = stripped[f"h.{layer}.{hf_name}"]
            tensors[f"h.{layer}.{internal}"] = value.T if conv1d else value
    if head is not None:
        tensors["lm_head.w"] = head
    model.load_state_dict(tensors)
    model.hf_config = hf_config
    model.source_dir = directory
    return model


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
    hf.setdefault("bos_token_id", 50256)
    hf.setdefault("eos_token_id", 50256)
    return hf


def export_gpt2(model: Model, directory: str, tokenizer_dir: Optional[str] = None) -> str:
    """Writes config.json, model.safetensors and the tokenizer files of `tokenizer_dir`
    (default: the directory the model was loaded from) so that
    GPT2LMHeadModel.from_pretrained(directory) loads it unchanged."""
    from safetensors.numpy import save_file

    c = model.config
    if c.head != "lm" or c.position != "learned" or c.norm != "layernorm" or not c.pre_norm:
        raise ValueError("export_gpt2: the model is not GPT-2 shaped")
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
    tensors = {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in tensors.items()}
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(directory, "config.json"), "w", encoding="utf-8") as f:
        json.dump(_hf_config_for(model, getattr(model, "hf_config", None)), f, indent=2)
    copy_tokenizer_files(tokenizer_dir or getattr(model, "source_dir", None), directory)
    return directory


__all__ = ["load_gpt2", "export_gpt2", "gpt2_config_from_hf"]
