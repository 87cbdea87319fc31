"""The byte-level BPE tokenizer a llama.cpp GGUF file carries in its metadata, rebuilt with `tokenizers`.

``tokenizer.ggml.model == "gpt2"`` only; ``tokenizer.ggml.pre`` picks the
pre-tokenizer split (docs/model_layout.md); control tokens (type 3) become
special added tokens.
"""
from __future__ import annotations

import os

from .checkpoint import WeightsError
from .gguf_io import GGUFFile

__all__ = ["tokenizer_from_gguf", "byte_to_unicode_map"]


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
    try:
        return _build_tokenizer_unchecked(f)
    except WeightsError:
        raise
    except Exception as error:  # tokenizers raises plain Exception ("Error while initializing BPE")
        raise WeightsError(f"GGUF {f.path}: its tokenizer metadata does not build a tokenizer: {error}") from None


def _build_tokenizer_unchecked(f: GGUFFile):
    from tokenizers import AddedToken, Tokenizer, decoders, models, processors

    kind = f.require("tokenizer.ggml.model")
    if kind != "gpt2":
        raise WeightsError(f"GGUF {f.path}: tokenizer model {kind!r} is not supported (only byte-level BPE 'gpt2')")
    tokens = list(f.require("tokenizer.ggml.tokens"))
    merges_text = list(f.require("tokenizer.ggml.merges"))
    token_types = list(f.get("tokenizer.ggml.token_type") or [])
    if not all(isinstance(token, str) for token in tokens):
        raise WeightsError(f"GGUF {f.path}: tokenizer.ggml.tokens holds non-string entries")
    if token_types and len(token_types) != len(tokens):
        raise WeightsError(f"GGUF {f.path}: tokenizer.ggml.token_type has {len(token_types)} entries "
                           f"for {len(tokens)} tokens")
    for key in ("bos_token_id", "eos_token_id", "padding_token_id", "unknown_token_id"):
        value = f.get("tokenizer.ggml." + key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or not 0 <= value < len(tokens)):
            raise WeightsError(f"GGUF {f.path}: tokenizer.ggml.{key} {value!r} is not one of the "
                               f"{len(tokens)} token ids")

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
        if not isinstance(merge, str) or len(parts := merge.split(" ")) != 2:
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
