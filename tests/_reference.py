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


def tiny_distilbert_dir(directory, with_head=False, seed=0):
    """A random DistilBERT (with a classification head when asked) and its WordPiece files."""
    import transformers

    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = _write_vocab(directory)
    config = transformers.DistilBertConfig(vocab_size=vocab_size, dim=24, n_layers=3, n_heads=4, hidden_dim=40,
                                           max_position_embeddings=40, num_labels=3)
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
