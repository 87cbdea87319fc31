"""Helpers shared by the model tests: tiny random Hugging Face models (torch and
transformers are test references only) and comparisons against the C core."""
from __future__ import annotations

import json
import string

import numpy as np

torch = None


def import_torch():
    import pytest

    global torch
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    torch.set_num_threads(2)
    return torch


def randomize_(module, seed: int, scale: float = 0.25) -> None:
    """Overwrite every parameter with N(0, scale) (norm weights around 1) so that
    activations are far from the near-zero defaults of a fresh HF model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            noise = torch.randn(p.shape, generator=generator) * scale
            if p.ndim == 1 and ("norm" in name.lower() or "ln" in name.lower()) and name.endswith("weight"):
                p.copy_(1.0 + noise)
            else:
                p.copy_(noise)


def padded_batch(rng: np.random.Generator, lengths, vocab_size: int, pad_id: int = 0, left: bool = False):
    """Random tokens (B, T) with rows of the given real lengths; mask (B, T) int32."""
    B, T = len(lengths), max(lengths)
    tokens = np.full((B, T), pad_id, dtype=np.int32)
    mask = np.zeros((B, T), dtype=np.int32)
    for b, n in enumerate(lengths):
        cols = slice(T - n, T) if left else slice(0, n)
        tokens[b, cols] = rng.integers(1, vocab_size, size=n)
        mask[b, cols] = 1
    return tokens, mask


def lm_labels(tokens: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HF labels: the tokens, -100 where padding."""
    return np.where(mask == 1, tokens, -100).astype(np.int32)


def assert_close(ours, reference, what: str, tol: float = 1e-4) -> float:
    """Asserts |ours - ref| <= tol + tol * |ref| elementwise; returns the max abs error."""
    ours = np.asarray(ours, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    assert ours.shape == reference.shape, f"{what}: shape {ours.shape} != {reference.shape}"
    error = np.abs(ours - reference)
    bound = tol + tol * np.abs(reference)
    worst = int(np.argmax(error - bound)) if error.size else 0
    assert np.all(error <= bound), (
        f"{what}: max abs error {error.max():.3g} (at flat index {worst}: ours "
        f"{ours.ravel()[worst]!r}, reference {reference.ravel()[worst]!r})")
    return float(error.max()) if error.size else 0.0


def to_numpy(tensor) -> np.ndarray:
    return tensor.detach().cpu().numpy().astype(np.float32)


# ---------------------------------------------------------------------------
# a tiny DistilBERT with a real WordPiece vocabulary
# ---------------------------------------------------------------------------

WORDS = ("the a an and or but is was it this that movie film great good bad awful boring "
         "loved hated best worst plot acting story fun not very really i you of to in").split()


def _write_vocab(directory):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tokens += list(string.ascii_lowercase) + ["##" + c for c in string.ascii_lowercase]
    tokens += list(string.digits) + list(".,!?'\"-()/:;")
    tokens += WORDS
    (directory / "vocab.txt").write_text("\n".join(tokens) + "\n", encoding="utf-8")
    (directory / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True}), encoding="utf-8")
    return len(tokens)


def tiny_distilbert_dir(directory, with_head=False, seed=0, initializer_range=0.02):
    """A random DistilBERT (with a classification head when asked) and its WordPiece files;
    a wider initializer_range gives outputs that depend more on every product."""
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = _write_vocab(directory)
    config = transformers.DistilBertConfig(vocab_size=vocab_size, dim=24, n_layers=3, n_heads=4, hidden_dim=40,
                                           max_position_embeddings=40, num_labels=3,
                                           initializer_range=initializer_range)
    import torch

    torch.manual_seed(seed)
    model = (transformers.DistilBertForSequenceClassification(config) if with_head
             else transformers.DistilBertModel(config))
    model.save_pretrained(str(directory))
    return directory


TEXTS = ["a great movie , i loved it !", "the worst film , very boring .", "not bad , the acting was good",
         "awful plot and awful acting", "best story ever , really fun", "i hated this movie",
         "it was good but not great", "boring , boring , boring", "the film is fun", "bad bad bad",
         "really great acting", "this was the worst movie"]
LABELS = [5, 1, 4, 1, 5, 2, 4, 2, 5, 1, 5, 2]


# Tiny Llama checkpoints and llama.cpp-style GGUF files of them.
# GQA with sizes that share no factors with the usual powers of two. head_dim is
# given explicitly in the first (4 heads of 8 != hidden 36 / 4, which would be odd
# and rotary needs even), derived in the second (36 / 6 = 6).
TINY_UNTIED = dict(vocab_size=101, hidden_size=36, num_attention_heads=4, num_key_value_heads=2, head_dim=8,
                   intermediate_size=50, num_hidden_layers=2, max_position_embeddings=64, rope_theta=5000.0,
                   rms_norm_eps=1e-5, tie_word_embeddings=False)
# Widths in whole 32-value blocks, for files in llama.cpp's block formats.
TINY_BLOCKS = dict(vocab_size=101, hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                   intermediate_size=96, num_hidden_layers=2, max_position_embeddings=32, rope_theta=10000.0,
                   rms_norm_eps=1e-5, tie_word_embeddings=False)
TINY_TIED = dict(vocab_size=101, hidden_size=36, num_attention_heads=6, num_key_value_heads=2,
                 intermediate_size=50, num_hidden_layers=3, max_position_embeddings=48, rope_theta=10000.0,
                 rms_norm_eps=1e-6, tie_word_embeddings=True)


def make_tiny_llama(kwargs, seed):
    import transformers

    torch = import_torch()
    torch.manual_seed(seed)
    model = transformers.LlamaForCausalLM(transformers.LlamaConfig(**kwargs)).eval()
    with torch.no_grad():  # norms start at 1.0; randomize them so a swapped norm shows
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.5 * torch.randn_like(param))
    return model


def numpy_state(model):
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def llama_cpp_permute(weight, n_heads):
    """llama.cpp convert_hf_to_gguf's Q/K reordering: each head's two halves interleaved."""
    rows, cols = weight.shape
    return weight.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def write_llama_gguf(path, kwargs, state, tokenizer=None, arch="llama", drop=(), reshape=None, matrix_type=None):
    """A llama.cpp-style GGUF of an HF llama state dict (float32 tensors; matrix_type, a
    gguf.GGMLQuantizationType: every 2-D tensor stored in that format instead)."""
    import gguf
    from gguf.quants import quantize

    n_head, n_kv = kwargs["num_attention_heads"], kwargs["num_key_value_heads"]
    head_dim = kwargs.get("head_dim", kwargs["hidden_size"] // n_head)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_context_length(kwargs["max_position_embeddings"])
    writer.add_embedding_length(kwargs["hidden_size"])
    writer.add_block_count(kwargs["num_hidden_layers"])
    writer.add_feed_forward_length(kwargs["intermediate_size"])
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(kwargs["rope_theta"])
    writer.add_layer_norm_rms_eps(kwargs["rms_norm_eps"])
    writer.add_vocab_size(kwargs["vocab_size"])
    if tokenizer:
        for adder, value in tokenizer.items():
            getattr(writer, adder)(value)
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
             "lm_head.weight": "output.weight"}
    block = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output",
             "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up",
             "mlp.down_proj": "ffn_down"}
    for hf_name, value in state.items():
        if hf_name == "lm_head.weight" and kwargs["tie_word_embeddings"]:
            continue
        if hf_name.startswith("model.layers."):
            _, _, layer, rest = hf_name.split(".", 3)
            name = f"blk.{layer}.{block[rest.rsplit('.', 1)[0]]}.weight"
        else:
            name = names[hf_name]
        if name.endswith("attn_q.weight"):
            value = llama_cpp_permute(value, n_head)
        elif name.endswith("attn_k.weight"):
            value = llama_cpp_permute(value, n_kv)
        if name in drop:
            continue
        if reshape and name in reshape:
            value = value.reshape(reshape[name])
        if matrix_type is not None and value.ndim == 2:
            writer.add_tensor(name, quantize(np.ascontiguousarray(value, dtype=np.float32), matrix_type),
                              raw_dtype=matrix_type)
        else:
            writer.add_tensor(name, np.ascontiguousarray(value, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def toy_tokenizer_metadata(pre="smollm", model="gpt2"):
    """A byte-level BPE over the 256 byte symbols plus a few merges and control tokens."""
    from reviewgen.weights.gguf_tokenizer import byte_to_unicode_map

    spell = byte_to_unicode_map()
    tokens = ["<|endoftext|>", "<|im_start|>"] + [spell[b] for b in range(256)]
    merges = ["h e", "l l", "he ll", "hell o", "Ġ w", "Ġw o", "1 2"]
    for merge in merges:
        tokens.append(merge.replace(" ", ""))
    types = [3, 3] + [1] * (len(tokens) - 2)
    return {"add_tokenizer_model": model, "add_tokenizer_pre": pre, "add_token_list": tokens,
            "add_token_types": types, "add_token_merges": merges, "add_bos_token_id": 0, "add_eos_token_id": 0}
