"""DistilBERT / BERT checkpoints: the name maps, config.json -> ModelConfig, and export.

A Hugging Face encoder directory (config.json + model.safetensors; a legacy
pytorch_model.bin only through torch's weights_only loader) becomes a
Checkpoint: the core config, the tensors as the file holds them, and the label
mapping of the classification head. ``export_encoder`` is the inverse: it
writes a directory that transformers'
``AutoModelForSequenceClassification.from_pretrained`` loads unchanged.

Internal names (docs/model_layout.md): wte, wpe, wtt (BERT), emb_ln.{w,b},
h.L.{ln1,qkv,proj,ln2,fc,fc2}.{w,b}, cls.pre.{w,b}, cls.out.{w,b}. Both
families are post-norm: ln1 follows the attention residual, ln2 the MLP
residual. q, k and v are stacked row-wise, in that order, into h.L.qkv.

Base-model checkpoints (DistilBertModel, BertModel such as all-MiniLM-L6-v2,
with or without the "distilbert." / "bert." prefix) have no classification
head; it is initialised the way transformers does it, normal(0,
initializer_range) weights and zero biases, from numpy's default_rng(seed).
"""

from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..core.files import write_json
from ..core.models import Model, ModelConfig
from ..text.tokenization import copy_tokenizer_files
from .checkpoint import (SPECIAL_TOKEN_KEYS, Checkpoint, UnsupportedModelError, WeightsError, config_errors,
                         config_int)
from .hub import resolve
from .safetensors_io import read_config, read_weights, save_safetensors, weights_path

__all__ = [
    "ENCODER_FAMILIES",
    "load_encoder",
    "encoder_config_from_hf",
    "family_of",
    "hf_to_internal",
    "hf_state_dict",
    "init_classifier_head",
    "export_encoder",
]

ENCODER_FAMILIES = ("distilbert", "bert")

DEFAULT_NUM_LABELS = 5

_ARCHITECTURE = {
    "distilbert": "DistilBertForSequenceClassification",
    "bert": "BertForSequenceClassification",
}
_BASE_PREFIX = {"distilbert": "distilbert.", "bert": "bert."}

# Activations in config.json -> the contract's names. Plain "gelu" in
# transformers is the exact erf form; the tanh approximation has other names.
_ACTIVATIONS = {
    "gelu": "gelu_erf",
    "gelu_python": "gelu_erf",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
}

# Checkpoint tensors that are not model parameters, or belong to heads this
# package does not use (masked-LM, next-sentence, question answering).
_IGNORED_KEY = re.compile(
    r"(^|\.)position_ids$|^cls\.predictions\.|^cls\.seq_relationship\.|"
    r"^vocab_(transform|layer_norm|projector)\.|^qa_outputs\.|^lm_head\."
)


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------

def _require(hf: Mapping[str, Any], *keys: str) -> list:
    values = []
    for key in keys:
        if key not in hf:
            raise WeightsError(f"config.json lacks {key!r}")
        values.append(hf[key])
    return values


def _activation(hf: Mapping[str, Any], key: str) -> str:
    name = hf.get(key, "gelu")
    if name not in _ACTIVATIONS:
        raise UnsupportedModelError(
            f"config.json: {key} {name!r} is not supported (supported: {sorted(_ACTIVATIONS)})")
    return _ACTIVATIONS[name]


def family_of(hf: Mapping[str, Any]) -> str:
    """'distilbert' or 'bert', from config.json."""
    model_type = hf.get("model_type")
    if model_type in ENCODER_FAMILIES:
        return model_type
    architectures = hf.get("architectures") or []
    if model_type is None:  # very old config.json files name only the architecture
        for family in ENCODER_FAMILIES:
            if any(isinstance(a, str) and a.lower().startswith(family) for a in architectures):
                return family
    raise UnsupportedModelError(
        f"config.json describes model_type {model_type!r} (architectures {architectures}); "
        f"expected one of {ENCODER_FAMILIES}")


def encoder_config_from_hf(hf: Mapping[str, Any], num_labels: int = DEFAULT_NUM_LABELS) -> ModelConfig:
    """The core's config for a Hugging Face DistilBertConfig / BertConfig dict."""
    family = family_of(hf)
    if family == "distilbert":
        vocab, positions, layers, heads, dim, inner = _require(
            hf, "vocab_size", "max_position_embeddings", "n_layers", "n_heads", "dim", "hidden_dim")
        activation = _activation(hf, "activation")
        dropout = float(hf.get("dropout", 0.1))
        values = dict(
            type_vocab_size=0, norm_eps=1e-12, activation=activation, head="cls_distilbert",
            embd_pdrop=dropout,
            # DistilBERT drops out the FFN output but not the attention output,
            # which one resid_pdrop cannot express; the contract leaves it at 0.
            resid_pdrop=0.0,
            attn_pdrop=float(hf.get("attention_dropout", 0.1)),
            cls_pdrop=float(hf.get("seq_classif_dropout", 0.2)),
        )
    else:
        vocab, positions, layers, heads, dim, inner = _require(
            hf, "vocab_size", "max_position_embeddings", "num_hidden_layers",
            "num_attention_heads", "hidden_size", "intermediate_size")
        if hf.get("position_embedding_type", "absolute") != "absolute":
            raise UnsupportedModelError(
                f"config.json: position_embedding_type {hf.get('position_embedding_type')!r} "
                "is not supported (only 'absolute')")
        if hf.get("is_decoder") or hf.get("add_cross_attention"):
            raise UnsupportedModelError("config.json: BERT as a decoder / with cross-attention is not supported")
        hidden_dropout = float(hf.get("hidden_dropout_prob", 0.1))
        classifier_dropout = hf.get("classifier_dropout")
        values = dict(
            type_vocab_size=config_int(hf, "type_vocab_size", 2, minimum=0),
            norm_eps=float(hf.get("layer_norm_eps", 1e-12)),
            activation=_activation(hf, "hidden_act"), head="cls_bert",
            embd_pdrop=hidden_dropout, resid_pdrop=hidden_dropout,
            attn_pdrop=float(hf.get("attention_probs_dropout_prob", 0.1)),
            cls_pdrop=float(hidden_dropout if classifier_dropout is None else classifier_dropout),
        )
    sizes = dict(vocab_size=vocab, n_positions=positions, n_layer=layers, n_head=heads,
                 n_embd=dim, n_inner=inner, num_labels=num_labels)
    for key, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise WeightsError(f"encoder config: {key} must be a positive integer, got {value!r}")
    if dim % heads != 0:
        raise WeightsError(f"encoder config: hidden size {dim} is not a multiple of the {heads} heads")
    for key in ("embd_pdrop", "resid_pdrop", "attn_pdrop", "cls_pdrop"):
        if not 0.0 <= values[key] < 1.0:
            raise WeightsError(f"encoder config: dropout {key}={values[key]} is outside [0, 1)")
    return ModelConfig(
        vocab_size=int(vocab), n_positions=int(positions), n_layer=int(layers), n_head=int(heads),
        n_kv_head=int(heads), head_dim=int(dim) // int(heads), n_embd=int(dim), n_inner=int(inner),
        type_vocab_size=values["type_vocab_size"], norm="layernorm", norm_eps=values["norm_eps"],
        pre_norm=False, embed_norm=True, final_norm=False, position="learned", rope_theta=0.0,
        activation=values["activation"], causal=False, bias=True, head=values["head"],
        tie_word_embeddings=False, num_labels=int(num_labels), embd_pdrop=values["embd_pdrop"],
        resid_pdrop=values["resid_pdrop"], attn_pdrop=values["attn_pdrop"], cls_pdrop=values["cls_pdrop"])


# ---------------------------------------------------------------------------
# Hugging Face names <-> internal names
# ---------------------------------------------------------------------------

def _layer_names(family: str, layer: int) -> dict:
    """Internal suffix -> HF module path (without .weight/.bias) for one layer."""
    if family == "distilbert":
        p = f"transformer.layer.{layer}."
        return {"q": p + "attention.q_lin", "k": p + "attention.k_lin", "v": p + "attention.v_lin",
                "proj": p + "attention.out_lin", "ln1": p + "sa_layer_norm",
                "fc": p + "ffn.lin1", "fc2": p + "ffn.lin2", "ln2": p + "output_layer_norm"}
    p = f"encoder.layer.{layer}."
    return {"q": p + "attention.self.query", "k": p + "attention.self.key",
            "v": p + "attention.self.value", "proj": p + "attention.output.dense",
            "ln1": p + "attention.output.LayerNorm", "fc": p + "intermediate.dense",
            "fc2": p + "output.dense", "ln2": p + "output.LayerNorm"}


def _head_names(family: str) -> dict:
    """Internal head module -> HF module path, relative to the model root."""
    if family == "distilbert":
        return {"cls.pre": "pre_classifier", "cls.out": "classifier"}
    return {"cls.pre": "bert.pooler.dense", "cls.out": "classifier"}


def _embedding_names(family: str) -> dict:
    names = {"wte": "embeddings.word_embeddings.weight",
             "wpe": "embeddings.position_embeddings.weight",
             "emb_ln.w": "embeddings.LayerNorm.weight", "emb_ln.b": "embeddings.LayerNorm.bias"}
    if family == "bert":
        names["wtt"] = "embeddings.token_type_embeddings.weight"
    return names


def _normalise_keys(family: str, state: Mapping[str, np.ndarray]) -> dict:
    """Checkpoint keys as seen from the base model: prefix stripped, gamma/beta renamed.

    Head keys keep a marker: "pre_classifier", "classifier" and the BERT pooler
    become "@head:<name>" so they cannot collide with base-model keys.
    """
    prefix = _BASE_PREFIX[family]
    result = {}
    for key, value in state.items():
        # Old TF-converted BERT checkpoints name LayerNorm parameters gamma/beta.
        key = re.sub(r"LayerNorm\.gamma$", "LayerNorm.weight", key)
        key = re.sub(r"LayerNorm\.beta$", "LayerNorm.bias", key)
        if key.startswith(prefix):
            key = key[len(prefix):]
        if key.startswith("pooler."):
            key = "@head:" + key
        elif key.startswith(("pre_classifier.", "classifier.")):
            key = "@head:" + key
        result[key] = value
    return result


def hf_to_internal(family: str, state: Mapping[str, np.ndarray], config: ModelConfig) -> tuple:
    """Map a Hugging Face state dict to internal names.

    Returns (tensors, head_found, ignored_keys): tensors maps every internal
    parameter present in ``state`` to its (file name, array) blocks (q, k and v
    stacked into qkv), uncopied; head_found says which of "cls.pre" and
    "cls.out" the checkpoint supplied; ignored_keys lists unused tensors.
    Missing base-model tensors raise WeightsError; shapes are the core's to
    check (Checkpoint.write_into), but for the q/k/v parts, whose rows it
    cannot tell apart.
    """
    if family not in ENCODER_FAMILIES:
        raise UnsupportedModelError(f"unknown encoder family {family!r}; expected one of {ENCODER_FAMILIES}")
    keys = _normalise_keys(family, state)
    used = set()
    tensors: dict = {}

    def take(key: str):
        if key not in keys:
            raise WeightsError(f"checkpoint lacks tensor {key!r} (needed by a {family} model)")
        used.add(key)
        return key, keys[key]

    for name, key in _embedding_names(family).items():
        tensors[name] = [take(key)]
    rows = config.n_head * config.head_dim
    for layer in range(config.n_layer):
        hf = _layer_names(family, layer)
        h = f"h.{layer}."
        tensors[h + "qkv.w"], tensors[h + "qkv.b"] = [], []
        for part in ("q", "k", "v"):
            w, b = take(hf[part] + ".weight"), take(hf[part] + ".bias")
            if w[1].shape[:1] != (rows,) or b[1].shape != (rows,):
                raise WeightsError(
                    f"tensor {hf[part]!r} has shapes {w[1].shape}/{b[1].shape} but the config expects "
                    f"({rows}, {config.n_embd})/({rows},)")
            tensors[h + "qkv.w"].append(w)
            tensors[h + "qkv.b"].append(b)
        for part in ("proj", "ln1", "fc", "fc2", "ln2"):
            for suffix, hf_suffix in ((".w", ".weight"), (".b", ".bias")):
                tensors[h + part + suffix] = [take(hf[part] + hf_suffix)]

    head_found = []
    for name, module in _head_names(family).items():
        short = module[len(_BASE_PREFIX[family]):] if module.startswith(_BASE_PREFIX[family]) else module
        w_key, b_key = f"@head:{short}.weight", f"@head:{short}.bias"
        if w_key in keys and b_key in keys:
            w, b = keys[w_key], keys[b_key]
            used.update((w_key, b_key))
            if name == "cls.out" and (w.ndim != 2 or w.shape[1] != config.n_embd or b.shape != w.shape[:1]):
                raise WeightsError(
                    f"tensor {module!r} has shapes {w.shape}/{b.shape}; expected (num_labels, "
                    f"{config.n_embd})/(num_labels,)")
            tensors[name + ".w"], tensors[name + ".b"] = [(module + ".weight", w)], [(module + ".bias", b)]
            head_found.append(name)
    ignored = tuple(sorted(k.replace("@head:", "") for k in keys if k not in used))
    unexpected = [k for k in ignored if not _IGNORED_KEY.search(k)]
    if unexpected:
        shown = ", ".join(unexpected[:8]) + (" ..." if len(unexpected) > 8 else "")
        raise WeightsError(f"checkpoint has {len(unexpected)} tensors a {family} model does not use: {shown}")
    return tensors, tuple(head_found), ignored


def hf_state_dict(model: Model, family: str) -> dict:
    """A model's parameters under (DistilBert|Bert)ForSequenceClassification's names."""
    if family not in ENCODER_FAMILIES:
        raise UnsupportedModelError(f"cannot export family {family!r} as an encoder classifier")
    config = model.config
    prefix = _BASE_PREFIX[family]
    state = {}
    for name, key in _embedding_names(family).items():
        state[prefix + key] = model.param(name)
    rows = config.n_head * config.head_dim
    for layer in range(config.n_layer):
        hf = _layer_names(family, layer)
        h = f"h.{layer}."
        for index, part in enumerate(("q", "k", "v")):
            state[prefix + hf[part] + ".weight"] = model.param(h + "qkv.w")[index * rows:(index + 1) * rows]
            state[prefix + hf[part] + ".bias"] = model.param(h + "qkv.b")[index * rows:(index + 1) * rows]
        for part in ("proj", "ln1", "fc", "fc2", "ln2"):
            state[prefix + hf[part] + ".weight"] = model.param(h + part + ".w")
            state[prefix + hf[part] + ".bias"] = model.param(h + part + ".b")
    for name, module in _head_names(family).items():
        state[module + ".weight"] = model.param(name + ".w")
        state[module + ".bias"] = model.param(name + ".b")
    return state


# ---------------------------------------------------------------------------
# classification head
# ---------------------------------------------------------------------------

def init_classifier_head(config: ModelConfig, seed: int = 0, names: Sequence[str] = ("cls.pre", "cls.out"),
                         initializer_range: float = 0.02) -> dict:
    """Fresh head parameters as transformers initialises nn.Linear: N(0, initializer_range), zero bias.

    ``names`` chooses which of "cls.pre" (pre_classifier / pooler) and
    "cls.out" (classifier) to create; draws follow that fixed order so a seed
    always gives the same arrays.
    """
    if not initializer_range > 0:
        raise WeightsError(f"initializer_range must be positive, got {initializer_range}")
    rng = np.random.default_rng(seed)
    C, K = config.n_embd, config.num_labels
    rows = {"cls.pre": C, "cls.out": K}
    head = {}
    for name in ("cls.pre", "cls.out"):
        if name in names:
            head[name + ".w"] = rng.normal(0.0, initializer_range, size=(rows[name], C)).astype(np.float32)
            head[name + ".b"] = np.zeros((rows[name],), dtype=np.float32)
    unknown = set(names) - set(rows)
    if unknown:
        raise WeightsError(f"unknown head parameters {sorted(unknown)}; expected cls.pre and/or cls.out")
    return head


def _labels_from_hf(hf: Mapping[str, Any]) -> Optional[list]:
    """The label values stored in a config.json, or None when it only has defaults."""
    stored = hf.get("reviewgen_labels")
    if isinstance(stored, list) and stored:
        return list(stored)
    id2label = hf.get("id2label")
    if not isinstance(id2label, dict) or not id2label:
        return None
    try:
        ordered = [id2label[k] for k in sorted(id2label, key=lambda k: int(k))]
    except (TypeError, ValueError):
        return None
    if all(label == f"LABEL_{i}" for i, label in enumerate(ordered)):
        return None
    return ordered


def _check_labels(labels: Sequence) -> list:
    labels = [label.item() if isinstance(label, np.generic) else label for label in labels]
    if not labels:
        raise WeightsError("labels must not be empty")
    for label in labels:
        if isinstance(label, bool) or not isinstance(label, (int, str)):
            raise WeightsError(f"label {label!r} must be an int or a str")
    if len(set(labels)) != len(labels):
        raise WeightsError(f"labels must be distinct, got {labels}")
    return labels


# ---------------------------------------------------------------------------
# reading a directory
# ---------------------------------------------------------------------------

def load_encoder(path_or_id: str, num_labels: Optional[int] = None, labels: Optional[Sequence] = None,
                 seed: int = 0) -> Checkpoint:
    """Read a DistilBERT or BERT directory (alias, or Hub id) as a :class:`Checkpoint`.

    The number of classes is, in order of precedence: ``len(labels)``,
    ``num_labels``, the checkpoint's own head, 5. A checkpoint head with a
    different number of classes is replaced by a fresh classifier layer (its
    pre_classifier / pooler is kept); a missing head is initialised with
    ``seed``. ``labels`` are the real label values of the class indices
    (default: the checkpoint's id2label if it names them, else 1..K).
    """
    directory = resolve(path_or_id, directory=True)
    hf = read_config(directory)
    config_path = os.path.join(directory, "config.json")
    with config_errors(config_path):
        family = family_of(hf)
    if labels is not None:
        labels = _check_labels(list(labels))
        if num_labels is not None and num_labels != len(labels):
            raise WeightsError(f"num_labels={num_labels} disagrees with the {len(labels)} labels given")
        num_labels = len(labels)
    if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer))
                                   or num_labels < 1):
        raise WeightsError(f"num_labels must be a positive integer, got {num_labels!r}")

    # A first pass with a placeholder class count checks the config before the weights are read.
    with config_errors(config_path):
        probe = encoder_config_from_hf(hf, num_labels=num_labels or DEFAULT_NUM_LABELS)
    state = read_weights(directory)
    weights_file = weights_path(directory)
    try:
        tensors, head_found, ignored = hf_to_internal(family, state, probe)
    except WeightsError as error:
        raise WeightsError(f"{weights_file}: {error} (for the model {config_path} describes)") from None
    stored_classes = tensors["cls.out.w"][0][1].shape[0] if "cls.out" in head_found else None
    if num_labels is None:
        num_labels = stored_classes or DEFAULT_NUM_LABELS
    with config_errors(config_path):
        config = encoder_config_from_hf(hf, num_labels=int(num_labels))

    to_init = [name for name in ("cls.pre", "cls.out") if name not in head_found]
    if stored_classes is not None and stored_classes != num_labels:
        to_init.append("cls.out")
        head_found = tuple(n for n in head_found if n != "cls.out")
    if to_init:
        with config_errors(config_path):
            initializer_range = float(hf.get("initializer_range", 0.02))
            fresh = init_classifier_head(config, seed, to_init, initializer_range)
        tensors.update({name: [("(initialised)", value)] for name, value in fresh.items()})

    if labels is None:
        stored = _labels_from_hf(hf) if "cls.out" in head_found else None
        labels = stored if stored is not None and len(stored) == num_labels else list(range(1, num_labels + 1))
    special = {k: int(hf[k]) for k in SPECIAL_TOKEN_KEYS if isinstance(hf.get(k), int)}
    files = {}
    for blocks in tensors.values():
        for origin, _ in blocks:
            files[origin] = weights_file
    for key, path in getattr(state, "files", {}).items():  # shards: the file of each tensor
        for origin in files:
            if key == origin or key.endswith("." + origin):
                files[origin] = path
    return Checkpoint(family, config, tensors, f"{family} checkpoint {weights_file}", dict(hf), special,
                      tokenizer_dir=os.path.abspath(directory), labels=list(labels),
                      initialized=tuple(n for n in ("cls.pre", "cls.out") if n in to_init),
                      ignored_keys=ignored, files=files, config_source=config_path)


# ---------------------------------------------------------------------------
# export
# ---------------------------------------------------------------------------

def _hf_config_for_export(hf: Mapping[str, Any], config: ModelConfig, family: str, labels: Sequence) -> dict:
    out = {k: v for k, v in hf.items() if k not in ("id2label", "label2id", "num_labels", "_name_or_path")}
    out["architectures"] = [_ARCHITECTURE[family]]
    out["model_type"] = family
    # transformers wants string label names; the typed values travel alongside.
    out["num_labels"] = len(labels)
    out["id2label"] = {str(i): str(label) for i, label in enumerate(labels)}
    out["label2id"] = {str(label): i for i, label in enumerate(labels)}
    out["reviewgen_labels"] = list(labels)
    out["problem_type"] = "single_label_classification"
    sizes = ({"vocab_size": "vocab_size", "max_position_embeddings": "n_positions", "n_layers": "n_layer",
              "n_heads": "n_head", "dim": "n_embd", "hidden_dim": "n_inner"} if family == "distilbert" else
             {"vocab_size": "vocab_size", "max_position_embeddings": "n_positions",
              "num_hidden_layers": "n_layer", "num_attention_heads": "n_head", "hidden_size": "n_embd",
              "intermediate_size": "n_inner", "type_vocab_size": "type_vocab_size"})
    for hf_key, key in sizes.items():
        out[hf_key] = int(getattr(config, key))
    return out


def export_encoder(directory: str, model: Model, family: str, labels: Optional[Sequence] = None,
                   hf_config: Optional[Mapping[str, Any]] = None, tokenizer_dir: Optional[str] = None) -> str:
    """Write a directory AutoModelForSequenceClassification.from_pretrained loads as-is.

    model: the core model (e.g. Checkpoint.build_model() or a trained one);
    family: "distilbert" or "bert"; labels: class index -> label value
    (default 1..K); hf_config: the original config.json, whose other fields
    are kept; tokenizer_dir: where to copy tokenizer files from.
    """
    config = model.config
    state = hf_state_dict(model, family)
    labels = _check_labels(list(labels)) if labels is not None else list(range(1, config.num_labels + 1))
    if len(labels) != config.num_labels:
        raise WeightsError(f"{len(labels)} labels given for a head with {config.num_labels} classes")
    hf = _hf_config_for_export(hf_config or {}, config, family, labels)
    if hf_config is None:  # built from scratch: fill the fields the core config knows
        hf.update(_hf_fields_from_config(config, family))
    os.makedirs(directory, exist_ok=True)
    write_json(os.path.join(directory, "config.json"), hf, indent=2, sort_keys=True)
    save_safetensors(state, os.path.join(directory, "model.safetensors"))
    if tokenizer_dir:
        copy_tokenizer_files(tokenizer_dir, directory)
    return directory


def _hf_fields_from_config(config: ModelConfig, family: str) -> dict:
    activation = {"gelu_erf": "gelu", "gelu_tanh": "gelu_new"}[config.activation]
    if family == "distilbert":
        return {"activation": activation, "dropout": config.embd_pdrop,
                "attention_dropout": config.attn_pdrop, "seq_classif_dropout": config.cls_pdrop,
                "sinusoidal_pos_embds": False, "initializer_range": 0.02}
    return {"hidden_act": activation, "hidden_dropout_prob": config.resid_pdrop,
            "attention_probs_dropout_prob": config.attn_pdrop, "classifier_dropout": config.cls_pdrop,
            "layer_norm_eps": config.norm_eps, "position_embedding_type": "absolute",
            "initializer_range": 0.02}
