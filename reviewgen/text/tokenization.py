"""Tokenizers for reviewgen's models, on top of the Hugging Face `tokenizers` package.

A :class:`TextTokenizer` wraps a `tokenizers.Tokenizer` loaded from a model
directory (``tokenizer.json``, or for WordPiece models with only a
``vocab.txt``, a BERT WordPiece tokenizer built from it) and turns a batch of
texts into the int32 arrays the C core takes:

    ids             (B, T)  token ids, padded with the pad id
    attention_mask  (B, T)  1 for real tokens, 0 for padding
    token_types     (B, T)  segment ids (all 0 for single texts)

Truncation goes through the tokenizer itself so that room is kept for the
special tokens its post-processor adds ([CLS] ... [SEP] for BERT). Padding is
done here in numpy, to ``max_length`` or to the longest text in the batch;
any padding or truncation stored in ``tokenizer.json`` is ignored, so the
result depends only on the arguments given.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Iterable, Optional, Sequence

import numpy as np

from ..core.config import read_json_object
from ..core.files import copy_file, write_json

try:
    import tokenizers
    from tokenizers.implementations import BertWordPieceTokenizer
except ImportError as exc:  # pragma: no cover - depends on the environment
    tokenizers = None
    _TOKENIZERS_IMPORT_ERROR = exc
else:
    _TOKENIZERS_IMPORT_ERROR = None

__all__ = [
    "TokenizerError",
    "EncodedBatch",
    "EncodedBatches",
    "TextTokenizer",
    "load_tokenizer",
    "TOKENIZER_FILES",
    "copy_tokenizer_files",
]

# Files that make up a Hugging Face tokenizer; copied along with exported models.
TOKENIZER_FILES = (
    "tokenizer.json",
    "vocab.txt",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "merges.txt",
    "vocab.json",
    "added_tokens.json",
)

# Candidate padding tokens, most specific first; a GPT-2 style vocabulary has
# no pad token, and its end-of-text token is the usual stand-in.
_PAD_CANDIDATES = ("[PAD]", "<pad>", "<|padding|>", "<|endoftext|>", "</s>", "<|im_end|>")


class TokenizerError(ValueError):
    """A tokenizer cannot be loaded, or the input to encode is unusable."""


@dataclass
class EncodedBatch:
    """A batch of encoded texts, every array int32 of shape (B, T)."""

    ids: np.ndarray
    attention_mask: np.ndarray
    token_types: np.ndarray

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def __iter__(self):  # lets callers write `ids, mask, types = tok.encode_batch(...)`
        return iter((self.ids, self.attention_mask, self.token_types))

    @property
    def lengths(self) -> np.ndarray:
        """Number of real (non-padding) tokens per row, int64 (B,)."""
        return self.attention_mask.sum(axis=1, dtype=np.int64)

    def slice(self, start: int, stop: int) -> "EncodedBatch":
        return EncodedBatch(self.ids[start:stop], self.attention_mask[start:stop],
                            self.token_types[start:stop])


def epoch_orders(batcher, epochs: int, rows: int) -> np.ndarray:
    """(epochs, rows) int32: ``batcher.order()`` for epochs 0 .. epochs-1 (its
    ``epoch`` attribute set in turn and restored), for batchers whose epochs the
    C trainer replays."""
    saved = batcher.epoch
    try:
        orders = []
        for epoch in range(epochs):
            batcher.epoch = epoch
            orders.append(batcher.order())
        return np.asarray(orders, np.int32).reshape(epochs, rows)
    finally:
        batcher.epoch = saved


class EncodedBatches:
    """Mini-batches over pre-encoded texts, as the Trainer iterates them.

    Each batch is a dict of keyword arguments for ``Model.forward``: tokens,
    attention_mask, token_types (None for models without token types) and
    targets (class ids, when given). Columns past the batch's longest text are
    cut: with right padding and column-index positions that changes nothing
    but the work. ``shuffle`` reorders the rows every epoch from ``seed`` and
    the epoch number (set by the Trainer through ``set_epoch``).
    """

    def __init__(self, encoded: EncodedBatch, targets: Optional[np.ndarray], batch_size: int, *,
                 shuffle: bool = False, seed: int = 0, token_types: bool = True):
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if targets is not None and len(targets) != len(encoded):
            raise ValueError(f"{len(targets)} targets for {len(encoded)} texts")
        self.encoded = encoded
        self.targets = None if targets is None else np.ascontiguousarray(targets, dtype=np.int32)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.token_types = bool(token_types)
        self.epoch = 0

    def __len__(self) -> int:
        return math.ceil(len(self.encoded) / self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def order(self) -> np.ndarray:
        n = len(self.encoded)
        if not self.shuffle:
            return np.arange(n)
        return np.random.default_rng((self.seed, self.epoch)).permutation(n)

    def epoch_orders(self, epochs: int) -> np.ndarray:
        """(epochs, N) the row order of every epoch, as __iter__ would give it:
        the C trainer follows these, so a run keeps numpy's exact shuffle."""
        return epoch_orders(self, epochs, len(self.encoded))

    def arrays(self) -> dict:
        """The whole data set as the C trainer takes it (int32 arrays)."""
        return {"tokens": self.encoded.ids, "attention_mask": self.encoded.attention_mask,
                "token_types": self.encoded.token_types if self.token_types else None,
                "targets": self.targets}

    def __iter__(self):
        order = self.order()
        lengths = self.encoded.lengths
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = max(int(lengths[rows].max()), 1)
            batch = {
                "tokens": np.ascontiguousarray(self.encoded.ids[rows, :width]),
                "attention_mask": np.ascontiguousarray(self.encoded.attention_mask[rows, :width]),
                "token_types": (np.ascontiguousarray(self.encoded.token_types[rows, :width])
                                if self.token_types else None),
            }
            if self.targets is not None:
                batch["targets"] = self.targets[rows]
            yield batch


def _require_tokenizers() -> None:
    if tokenizers is None:
        raise TokenizerError(
            f"tokenization needs the 'tokenizers' package (pip install tokenizers): "
            f"{_TOKENIZERS_IMPORT_ERROR}")


def _read_json(path: str) -> dict:
    return read_json_object(path, error=TokenizerError)


def _validate_max_length(max_length) -> int:
    if isinstance(max_length, bool) or not isinstance(max_length, (int, np.integer)):
        raise TokenizerError(f"max_length must be an integer, got {max_length!r}")
    if max_length < 1:
        raise TokenizerError(f"max_length must be at least 1, got {max_length}")
    return int(max_length)


class TextTokenizer:
    """Batch encoder returning (ids, attention_mask, token_types) as int32 arrays.

    Build one with :meth:`from_dir`, :meth:`from_tokenizer_json` or
    :meth:`from_vocab`. ``max_length`` is the default truncation length
    (special tokens included); ``padding`` is ``"max_length"`` (every batch is
    (B, max_length)) or ``"longest"`` (padded to the longest text in the batch).
    """

    def __init__(self, tokenizer, *, max_length: int = 256, padding: str = "max_length",
                 pad_token: Optional[str] = None, add_special_tokens: bool = True,
                 source_dir: Optional[str] = None):
        _require_tokenizers()
        if not isinstance(tokenizer, tokenizers.Tokenizer):
            raise TokenizerError(
                f"expected a tokenizers.Tokenizer, got {type(tokenizer).__name__}")
        self._tokenizer = tokenizer
        # Padding is done in numpy; the tokenizer must not pad on its own.
        self._tokenizer.no_padding()
        self.max_length = _validate_max_length(max_length)
        self.padding = self._validate_padding(padding)
        self.add_special_tokens = bool(add_special_tokens)
        self.source_dir = source_dir
        self.pad_token, self.pad_id = self._find_pad(pad_token)
        self._truncation_length: Optional[int] = None

    # ---------------------------------------------------------------- loading

    @classmethod
    def from_tokenizer_json(cls, path: str, **kwargs) -> "TextTokenizer":
        """Load a ``tokenizer.json`` file."""
        _require_tokenizers()
        if not os.path.isfile(path):
            raise TokenizerError(f"tokenizer file not found: {path}")
        try:
            tokenizer = tokenizers.Tokenizer.from_file(path)
        except Exception as exc:  # the Rust side raises plain Exception
            raise TokenizerError(f"cannot load tokenizer {path}: {exc}") from exc
        kwargs.setdefault("source_dir", os.path.dirname(os.path.abspath(path)))
        return cls(tokenizer, **kwargs)

    @classmethod
    def from_vocab(cls, vocab_path: str, *, lowercase: bool = True,
                   strip_accents: Optional[bool] = None, handle_chinese_chars: bool = True,
                   special_tokens: Optional[dict] = None, **kwargs) -> "TextTokenizer":
        """Build a BERT WordPiece tokenizer ([CLS] text [SEP]) from a ``vocab.txt``."""
        _require_tokenizers()
        if not os.path.isfile(vocab_path):
            raise TokenizerError(f"vocabulary file not found: {vocab_path}")
        special = {"unk_token": "[UNK]", "sep_token": "[SEP]", "cls_token": "[CLS]",
                   "pad_token": "[PAD]", "mask_token": "[MASK]"}
        special.update({k: v for k, v in (special_tokens or {}).items()
                        if k in special and isinstance(v, str)})
        vocab = {}
        try:
            with open(vocab_path, encoding="utf-8") as handle:
                for line in handle:
                    token = line.rstrip("\n")
                    if token not in vocab:  # first occurrence wins, as in BertTokenizer
                        vocab[token] = len(vocab)
        except UnicodeDecodeError as error:
            raise TokenizerError(f"{vocab_path} is not UTF-8 text (byte {error.start}: {error.reason})") from None
        except OSError as error:
            raise TokenizerError(f"cannot read {vocab_path}: {error.strerror}") from None
        for name in ("unk_token", "sep_token", "cls_token"):
            if special[name] not in vocab:
                raise TokenizerError(
                    f"{vocab_path} lacks the special token {special[name]!r} ({name})")
        try:
            wordpiece = BertWordPieceTokenizer(
                vocab, clean_text=True, handle_chinese_chars=handle_chinese_chars,
                strip_accents=strip_accents, lowercase=lowercase, **special)
        except Exception as exc:
            raise TokenizerError(f"cannot build a WordPiece tokenizer from {vocab_path}: {exc}") from exc
        kwargs.setdefault("source_dir", os.path.dirname(os.path.abspath(vocab_path)))
        kwargs.setdefault("pad_token", special["pad_token"])
        # The implementation class wraps a plain Tokenizer; keep only that.
        return cls(wordpiece._tokenizer, **kwargs)

    @classmethod
    def from_dir(cls, path: str, **kwargs) -> "TextTokenizer":
        """Load the tokenizer of a Hugging Face model directory.

        ``tokenizer.json`` is used when present; otherwise ``vocab.txt`` with the
        lowercasing and accent options of ``tokenizer_config.json``.
        """
        if not os.path.isdir(path):
            raise TokenizerError(f"tokenizer directory not found: {path}")
        config_path = os.path.join(path, "tokenizer_config.json")
        tokenizer_config = _read_json(config_path) if os.path.isfile(config_path) else {}
        special_path = os.path.join(path, "special_tokens_map.json")
        special_map = _read_json(special_path) if os.path.isfile(special_path) else {}
        special_tokens = {}
        for file, values in ((config_path, tokenizer_config), (special_path, special_map)):
            for key, value in values.items():
                if not key.endswith("_token") or value is None:
                    continue
                if isinstance(value, dict):  # an AddedToken as transformers saves it
                    value = value.get("content")
                    if not isinstance(value, str):
                        raise TokenizerError(f"{file}: {key} is an object without a string 'content': "
                                             f"{values[key]!r}")
                if isinstance(value, str):  # not flags such as add_bos_token: true
                    special_tokens[key] = value
        if "pad_token" in special_tokens and isinstance(special_tokens["pad_token"], str):
            kwargs.setdefault("pad_token", special_tokens["pad_token"])
        json_path = os.path.join(path, "tokenizer.json")
        if os.path.isfile(json_path):
            return cls.from_tokenizer_json(json_path, **kwargs)
        vocab_path = os.path.join(path, "vocab.txt")
        if os.path.isfile(vocab_path):
            lowercase = tokenizer_config.get("do_lower_case", True)
            strip_accents = tokenizer_config.get("strip_accents", None)
            return cls.from_vocab(
                vocab_path, lowercase=bool(lowercase), strip_accents=strip_accents,
                handle_chinese_chars=bool(tokenizer_config.get("tokenize_chinese_chars", True)),
                special_tokens=special_tokens, **kwargs)
        raise TokenizerError(f"{path} has neither tokenizer.json nor vocab.txt")

    # ------------------------------------------------------------- properties

    @property
    def tokenizer(self):
        """The underlying `tokenizers.Tokenizer`."""
        return self._tokenizer

    @property
    def vocab_size(self) -> int:
        return int(self._tokenizer.get_vocab_size(with_added_tokens=True))

    def token_to_id(self, token: str) -> Optional[int]:
        return self._tokenizer.token_to_id(token)

    def _find_pad(self, pad_token: Optional[str]):
        if pad_token is not None:
            pad_id = self._tokenizer.token_to_id(pad_token)
            if pad_id is None:
                raise TokenizerError(f"pad token {pad_token!r} is not in the vocabulary")
            return pad_token, int(pad_id)
        for candidate in _PAD_CANDIDATES:
            pad_id = self._tokenizer.token_to_id(candidate)
            if pad_id is not None:
                return candidate, int(pad_id)
        return None, 0  # masked out anyway; any valid id will do

    @staticmethod
    def _validate_padding(padding: str) -> str:
        if padding not in ("max_length", "longest"):
            raise TokenizerError(f"padding must be 'max_length' or 'longest', got {padding!r}")
        return padding

    def _set_truncation(self, max_length: int) -> None:
        if self._truncation_length != max_length:
            self._tokenizer.enable_truncation(max_length)
            self._truncation_length = max_length

    # --------------------------------------------------------------- encoding

    def encode_batch(self, texts: Sequence[str], *, max_length: Optional[int] = None,
                     padding: Optional[str] = None) -> EncodedBatch:
        """Encode ``texts`` into int32 arrays of shape (B, T).

        T is ``max_length`` with ``padding="max_length"``, otherwise the length of
        the longest encoded text (at least 1).
        """
        if isinstance(texts, str):
            raise TokenizerError("encode_batch takes a sequence of texts, not a single string")
        texts = list(texts)
        for index, text in enumerate(texts):
            if not isinstance(text, str):
                raise TokenizerError(
                    f"text {index} is a {type(text).__name__}, not a str: {text!r:.60}")
        length = _validate_max_length(self.max_length if max_length is None else max_length)
        padding = self._validate_padding(self.padding if padding is None else padding)
        self._set_truncation(length)
        encodings = self._tokenizer.encode_batch(texts, add_special_tokens=self.add_special_tokens)
        width = length if padding == "max_length" else max([len(e.ids) for e in encodings] + [1])
        ids = np.full((len(texts), width), self.pad_id, dtype=np.int32)
        mask = np.zeros((len(texts), width), dtype=np.int32)
        types = np.zeros((len(texts), width), dtype=np.int32)
        for row, encoding in enumerate(encodings):
            n = len(encoding.ids)
            ids[row, :n] = encoding.ids
            mask[row, :n] = 1
            types[row, :n] = encoding.type_ids
        return EncodedBatch(ids, mask, types)

    def __call__(self, texts: Sequence[str], **kwargs) -> EncodedBatch:
        return self.encode_batch(texts, **kwargs)

    def encode(self, text: str, *, max_length: Optional[int] = None) -> list:
        """Token ids of one text (truncated, not padded)."""
        batch = self.encode_batch([text], max_length=max_length, padding="longest")
        return batch.ids[0, : int(batch.attention_mask[0].sum())].tolist()

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        return self._tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)

    # ----------------------------------------------------------------- saving

    def save(self, directory: str) -> list:
        """Write the tokenizer into ``directory``.

        The original tokenizer files are copied when the tokenizer came from a
        directory; ``tokenizer.json`` is written from the loaded tokenizer when
        there was none. Returns the file names written.
        """
        os.makedirs(directory, exist_ok=True)
        written = copy_tokenizer_files(self.source_dir, directory) if self.source_dir else []
        if "tokenizer.json" not in written:
            # Save without the truncation this object set for encoding.
            state = json.loads(self._tokenizer.to_str())
            state["truncation"] = None
            state["padding"] = None
            write_json(os.path.join(directory, "tokenizer.json"), state, ensure_ascii=False)
            written.append("tokenizer.json")
        return written


def copy_tokenizer_files(source_dir: str, target_dir: str) -> list:
    """Copy the Hugging Face tokenizer files present in ``source_dir``; returns their names."""
    copied = []
    if not source_dir or not os.path.isdir(source_dir):
        return copied
    os.makedirs(target_dir, exist_ok=True)
    for name in TOKENIZER_FILES:
        source = os.path.join(source_dir, name)
        if os.path.isfile(source):
            target = os.path.join(target_dir, name)
            if os.path.abspath(source) != os.path.abspath(target):
                copy_file(source, target)
            copied.append(name)
    return copied


def load_tokenizer(path: str, **kwargs) -> TextTokenizer:
    """A :class:`TextTokenizer` from a model directory or a ``tokenizer.json`` / ``vocab.txt`` file."""
    if os.path.isdir(path):
        return TextTokenizer.from_dir(path, **kwargs)
    if path.endswith(".txt"):
        return TextTokenizer.from_vocab(path, **kwargs)
    return TextTokenizer.from_tokenizer_json(path, **kwargs)
