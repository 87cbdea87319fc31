"""LoRA adapters in PEFT's format: ``adapter_config.json`` + ``adapter_model.safetensors``.

The core keeps an A (rank, in) and a B (rows, rank) per adapted linear layer
of every block (``h.<l>.lora.<site>.A`` / ``.B``, rg_model.h); PEFT keys the
same two matrices by the Hugging Face module path,
``base_model.model.<module path>.lora_A.weight`` / ``.lora_B.weight``, with no
transposition for any family (GPT-2's Conv1D layers included: PEFT's lora_A
is (r, in) there too). This module holds only the name maps between the two,
per family, and the two file formats:

  lora_targets(family, names)          PEFT target names (or core site names) -> core bitmask
  save_peft_adapter(directory, model)  what ``peft.PeftModel.from_pretrained(base, directory)`` loads
  load_peft_adapter(directory, model)  an adapter saved by peft (or by save_peft_adapter) into the core

The Hugging Face base classes the paths refer to: GPT2LMHeadModel,
LlamaForCausalLM, BertForSequenceClassification and
DistilBertForSequenceClassification. A classifier's head layers that PEFT
trains and saves as ``modules_to_save`` (``classifier``, and DistilBERT's
``pre_classifier``, which the suffix match catches too) travel with the adapter.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from ..core.models import LORA_SITES, Model, lora_site_names, lora_target_bits
from .safetensors_io import read_safetensors, save_safetensors

__all__ = ["LORA_FAMILIES", "family_of_config", "lora_targets", "default_lora_targets", "peft_module_names",
           "save_peft_adapter", "load_peft_adapter", "prepare_lora_training", "ADAPTER_CONFIG_NAME",
           "ADAPTER_WEIGHTS_NAME"]

ADAPTER_CONFIG_NAME = "adapter_config.json"
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
_PEFT_PREFIX = "base_model.model."

# Hugging Face path of block l, and of each core site inside it.
_BLOCK = {
    "gpt2": "transformer.h.{l}.",
    "llama": "model.layers.{l}.",
    "bert": "bert.encoder.layer.{l}.",
    "distilbert": "distilbert.transformer.layer.{l}.",
}
_SITE_MODULES = {
    "gpt2": {"qkv": "attn.c_attn", "o": "attn.c_proj", "fc": "mlp.c_fc", "fc2": "mlp.c_proj"},
    "llama": {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj", "o": "self_attn.o_proj",
              "gate": "mlp.gate_proj", "up": "mlp.up_proj", "fc2": "mlp.down_proj"},
    "bert": {"q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
             "o": "attention.output.dense", "fc": "intermediate.dense", "fc2": "output.dense"},
    "distilbert": {"q": "attention.q_lin", "k": "attention.k_lin", "v": "attention.v_lin",
                   "o": "attention.out_lin", "fc": "ffn.lin1", "fc2": "ffn.lin2"},
}
# Linear layers outside the blocks (for checking that target names reach only block sites),
# and the classifier layers PEFT saves as modules_to_save: HF module -> core prefix.
_OUTSIDE = {"gpt2": ["lm_head"], "llama": ["lm_head"], "bert": ["bert.pooler.dense", "classifier"],
            "distilbert": ["pre_classifier", "classifier"]}
_HEADS = {"bert": {"classifier": "cls.out"}, "distilbert": {"pre_classifier": "cls.pre", "classifier": "cls.out"}}
# PEFT's own defaults when no target_modules are given (its per-architecture mapping).
_DEFAULT_TARGETS = {"gpt2": ["c_attn"], "llama": ["q_proj", "v_proj"], "bert": ["query", "value"],
                    "distilbert": ["q_lin", "v_lin"]}
LORA_FAMILIES = tuple(_BLOCK)


def family_of_config(config) -> str:
    """The family a core config has the shape of (rotary: llama; post-norm with token
    types: bert, without: distilbert; else gpt2)."""
    if config.position == "rope":
        return "llama"
    if not config.pre_norm:
        return "bert" if config.type_vocab_size > 0 else "distilbert"
    return "gpt2"


def _check_family(family: str) -> str:
    if family not in _BLOCK:
        raise ValueError(f"LoRA: unknown family {family!r}; expected one of {LORA_FAMILIES}")
    return family


def peft_module_names(family: str, layer: int = 0) -> Dict[str, str]:
    """core site -> Hugging Face module path of that site in block `layer`."""
    prefix = _BLOCK[_check_family(family)].format(l=layer)
    return {site: prefix + module for site, module in _SITE_MODULES[family].items()}


def _peft_target_matches(target, key: str) -> bool:
    """PEFT's rule: a string target_modules is a full regex match; a list entry matches
    the module path itself or a suffix of it after a dot."""
    if isinstance(target, str):
        return re.fullmatch(target, key) is not None
    return any(key == t or key.endswith("." + t) for t in target)


def default_lora_targets(family: str) -> List[str]:
    return list(_DEFAULT_TARGETS[_check_family(family)])


def lora_targets(family: str, names) -> int:
    """The core's lora_targets bitmask for `names`: PEFT target_modules (a list of module
    names matched as PEFT does, or a regex string), core site names (q, k, v, qkv, o, fc,
    gate, up, fc2), "all" / "all-linear" (every projection of a block), an int bitmask, or
    None (PEFT's default for the family). Names must reach only block projections."""
    _check_family(family)
    if names is None:
        names = default_lora_targets(family)
    if isinstance(names, (int, np.integer)) and not isinstance(names, bool):
        return int(names)
    if isinstance(names, str) and names in ("all", "all-linear"):
        return lora_target_bits(list(_SITE_MODULES[family]))
    if isinstance(names, str) and names not in LORA_SITES and names not in _SITE_MODULES[family].values():
        target = names  # a regex, as PEFT reads a string
    else:
        names = [names] if isinstance(names, str) else list(names)
        if names and all(n in LORA_SITES for n in names):
            unknown = [n for n in names if n not in _SITE_MODULES[family]]
            if unknown:
                raise ValueError(f"LoRA: {family} has no site {unknown}; its sites are {list(_SITE_MODULES[family])}")
            return lora_target_bits(names)
        target = names
    modules = peft_module_names(family, 0)
    bits = 0
    for site, path in modules.items():
        if _peft_target_matches(target, path):
            bits |= LORA_SITES[site]
    outside = [path for path in _OUTSIDE[family] if _peft_target_matches(target, path)]
    if outside:
        raise ValueError(f"LoRA: target_modules {target!r} also reach {outside}, which the core cannot adapt")
    if not bits:
        raise ValueError(f"LoRA: target_modules {target!r} match no projection of a {family} block "
                         f"({sorted(_SITE_MODULES[family].values())})")
    return bits


def _peft_target_modules(family: str, bits: int):
    """target_modules for adapter_config.json that reach exactly the adapted sites: the
    within-block paths when no other Linear layer ends in them, else a regex."""
    chosen = [site for site in lora_site_names(bits)]
    names = sorted(_SITE_MODULES[family][site] for site in chosen)
    every = list(peft_module_names(family, 0).items()) + [(None, path) for path in _OUTSIDE[family]]
    if all(_peft_target_matches(names, path) == (site in chosen) for site, path in every):
        return names
    block = re.escape(_BLOCK[family].split("{l}")[0])
    return block + r"\d+\.(" + "|".join(re.escape(n) for n in names) + ")"


def save_peft_adapter(directory: str | os.PathLike, model: Model, family: Optional[str] = None,
                      base_model_name_or_path: Optional[str] = None) -> str:
    """Write the model's adapters (and a classifier's trained head layers) in PEFT's format;
    returns the directory. The adapters are saved unmerged."""
    if not model.lora_rank:
        raise ValueError("save_peft_adapter: the model has no LoRA adapters (Model.add_lora)")
    if model.lora_merged:
        raise ValueError("save_peft_adapter: unmerge the adapters first (Model.unmerge_lora)")
    config = model.config
    family = _check_family(family or family_of_config(config))
    sites = lora_site_names(config.lora_targets)
    unknown = [site for site in sites if site not in _SITE_MODULES[family]]
    if unknown:
        raise ValueError(f"save_peft_adapter: {family} has no Hugging Face module for the core sites {unknown} "
                         f"(PEFT can adapt {sorted(_SITE_MODULES[family])})")
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    tensors: Dict[str, np.ndarray] = {}
    for layer in range(config.n_layer):
        paths = peft_module_names(family, layer)
        for site in lora_site_names(config.lora_targets):
            for ab in ("A", "B"):
                tensors[f"{_PEFT_PREFIX}{paths[site]}.lora_{ab}.weight"] = \
                    np.ascontiguousarray(model.param(f"h.{layer}.lora.{site}.{ab}"), dtype=np.float32)
    modules_to_save = None
    if config.head != "lm":
        modules_to_save = ["classifier", "score"]  # PEFT's SEQ_CLS default, which these heads match
        for module, core in _HEADS[family].items():
            tensors[f"{_PEFT_PREFIX}{module}.weight"] = np.ascontiguousarray(model.param(core + ".w"))
            tensors[f"{_PEFT_PREFIX}{module}.bias"] = np.ascontiguousarray(model.param(core + ".b"))
    adapter_config = {
        "peft_type": "LORA",
        "task_type": "CAUSAL_LM" if config.head == "lm" else "SEQ_CLS",
        "base_model_name_or_path": base_model_name_or_path,
        "r": int(config.lora_rank),
        "lora_alpha": float(config.lora_alpha),
        "lora_dropout": float(config.lora_dropout),
        "target_modules": _peft_target_modules(family, config.lora_targets),
        "fan_in_fan_out": family == "gpt2",  # GPT-2's Conv1D layers
        "bias": "none",
        "use_rslora": False,
        "use_dora": False,
        "modules_to_save": modules_to_save,
        "init_lora_weights": True,
        "layers_to_transform": None,
        "layers_pattern": None,
        "rank_pattern": {},
        "alpha_pattern": {},
        "inference_mode": True,
    }
    with open(os.path.join(directory, ADAPTER_CONFIG_NAME), "w") as f:
        json.dump(adapter_config, f, indent=2)
    save_safetensors(tensors, os.path.join(directory, ADAPTER_WEIGHTS_NAME))
    return directory


_KEY = re.compile(r"^(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.default)?\.weight$")


def load_peft_adapter(directory: str | os.PathLike, model: Model, family: Optional[str] = None,
                      dropout: Optional[float] = None) -> Model:
    """Load a PEFT LoRA adapter (adapter_config.json + adapter_model.safetensors) into
    `model`: adds the adapters (Model.add_lora) when it has none, then writes A, B and any
    saved classifier head layers. Refuses what the core does not compute the same way:
    rsLoRA, DoRA, per-layer ranks or alphas, adapters on only some blocks, trained biases.
    `dropout` overrides the file's lora_dropout. Returns the model."""
    directory = os.fspath(directory)
    with open(os.path.join(directory, ADAPTER_CONFIG_NAME)) as f:
        cfg = json.load(f)
    if cfg.get("peft_type", "LORA") != "LORA":
        raise ValueError(f"load_peft_adapter: a {cfg.get('peft_type')} adapter, not LoRA")
    for key, ok in (("use_rslora", False), ("use_dora", False)):
        if cfg.get(key, ok) != ok:
            raise ValueError(f"load_peft_adapter: {key}={cfg[key]} is not supported")
    if cfg.get("rank_pattern") or cfg.get("alpha_pattern"):
        raise ValueError("load_peft_adapter: per-module ranks or alphas (rank_pattern/alpha_pattern) are not supported")
    if cfg.get("bias", "none") != "none" or cfg.get("lora_bias"):
        raise ValueError("load_peft_adapter: trained biases (bias != 'none') are not supported")
    family = _check_family(family or family_of_config(model.config))
    weights = read_safetensors(os.path.join(directory, ADAPTER_WEIGHTS_NAME))
    config = model.config
    site_of = {}
    for layer in range(config.n_layer):
        for site, path in peft_module_names(family, layer).items():
            site_of[path] = (layer, site)
    found: Dict[tuple, np.ndarray] = {}
    heads: Dict[str, np.ndarray] = {}
    for key, value in weights.items():
        name = key[len(_PEFT_PREFIX):] if key.startswith(_PEFT_PREFIX) else key
        match = _KEY.match(name)
        if match:
            if match["module"] not in site_of:
                raise ValueError(f"load_peft_adapter: {key} adapts a module the core has no site for")
            found[site_of[match["module"]] + (match["ab"],)] = value
            continue
        head = name.replace(".modules_to_save.default", "").rsplit(".", 1)
        if len(head) == 2 and head[0] in _HEADS.get(family, {}) and head[1] in ("weight", "bias"):
            heads[_HEADS[family][head[0]] + (".w" if head[1] == "weight" else ".b")] = value
            continue
        raise ValueError(f"load_peft_adapter: unexpected tensor {key}")
    sites = sorted({site for (_, site, _) in found}, key=list(LORA_SITES).index)
    for layer in range(config.n_layer):
        for site in sites:
            for ab in ("A", "B"):
                if (layer, site, ab) not in found:
                    raise ValueError(f"load_peft_adapter: no {site} adapter {ab} for block {layer}; the core "
                                     "adapts the same projections of every block")
    if not sites:
        raise ValueError("load_peft_adapter: the file holds no LoRA weights")
    rank = int(cfg["r"])
    bits = lora_target_bits(sites)
    lora_dropout = float(cfg.get("lora_dropout", 0.0)) if dropout is None else float(dropout)
    if not model.lora_rank:
        model.add_lora(rank, float(cfg.get("lora_alpha", 8)), lora_dropout, bits)
    elif (model.lora_rank, model.config.lora_targets) != (rank, bits):
        raise ValueError("load_peft_adapter: the model's adapters have another rank or other targets")
    for (layer, site, ab), value in found.items():
        name = f"h.{layer}.lora.{site}.{ab}"
        if tuple(value.shape) != tuple(model.param(name).shape):
            raise ValueError(f"load_peft_adapter: {name} has shape {value.shape}, the model expects "
                             f"{model.param(name).shape}")
        model.set_param(name, np.asarray(value))
    for name, value in heads.items():
        model.set_param(name, np.asarray(value))
    return model


def prepare_lora_training(model: Model, config, family: str):
    """Adds the adapters a TrainingConfig asks for (lora_rank > 0) unless the model has
    those already, and returns the config the Trainer should run: with LoRA the adapters
    of every block train, so trainable_blocks becomes -1 (head_policy is kept). A config
    with lora_rank 0 is returned as it is."""
    if not config.lora_rank:
        return config
    bits = lora_targets(family, config.lora_targets)
    if model.lora_rank:
        if (model.lora_rank, model.config.lora_targets) != (config.lora_rank, bits):
            raise ValueError("the model's LoRA adapters differ from the TrainingConfig's "
                             f"(rank {model.lora_rank}, sites {lora_site_names(model.config.lora_targets)})")
    else:
        model.add_lora(config.lora_rank, config.lora_alpha, config.lora_dropout, bits)
    return dataclasses.replace(config, trainable_blocks=-1)
