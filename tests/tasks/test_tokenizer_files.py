"""Corrupt tokenizer files: a TokenizerError naming the file, never a raw exception."""
import os

import pytest

tokenizers = pytest.importorskip("tokenizers")

from reviewgen.text.tokenization import TokenizerError, load_tokenizer  # noqa: E402

VOCAB = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\na\nb\n"


def _tokenizer_json():
    vocab = {chr(c): i for i, c in enumerate(range(97, 110))}
    return tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[])).to_str().encode()


CASES = {
    "tokenizer.json": [b"", b"{x", b'{"a": "\xff"}', b"[]", b"[" * 100000 + b"]" * 100000, _tokenizer_json()[:40]],
    "vocab.txt": [b"[UNK]\n[CLS]\n[SEP]\n\xff\xfe\n", b"\x00\x01", b""],
    "tokenizer_config.json": [b"{x", b"\xff", b"[1]", b"[" * 100000 + b"]" * 100000],
    "special_tokens_map.json": [b'{"pad_token": {}}', b'{"pad_token": {"content": 5}}', b"{x", b"\xfe"],
}


@pytest.mark.parametrize("name,index", [(n, i) for n, cases in CASES.items() for i in range(len(cases))])
def test_corrupt_tokenizer_files_name_the_file(tmp_path, name, index):
    directory = tmp_path / "tok"
    directory.mkdir()
    if name != "tokenizer.json":
        (directory / "vocab.txt").write_text(VOCAB)
    (directory / name).write_bytes(CASES[name][index])
    try:
        load_tokenizer(str(directory))
    except TokenizerError as error:
        assert str(directory / name) in str(error)
    else:
        pytest.fail(f"a corrupt {name} loaded")


def test_flags_that_end_in_token_are_not_special_tokens(tmp_path):
    (tmp_path / "vocab.txt").write_text(VOCAB)
    (tmp_path / "tokenizer_config.json").write_text('{"add_bos_token": true, "pad_token": {"content": "[PAD]"}}')
    assert load_tokenizer(str(tmp_path)).pad_id == 0
