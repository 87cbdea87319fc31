"""Every file an exporter or config writer under weights/ and text/ writes goes through
core/files.py: a symlink planted in the output folder is replaced, never written through,
and a failure part-way leaves the file that was there."""
import json
import os

import numpy as np
import pytest

from reviewgen.core.models import Model, ModelConfig
from reviewgen.weights.bert import encoder_config_from_hf, export_encoder
from reviewgen.weights.gpt2 import export_gpt2
from reviewgen.weights.llama import _llama_config, export_hf_llama

tokenizers = pytest.importorskip("tokenizers")


def _plant(directory, names, victim):
    os.makedirs(directory, exist_ok=True)
    for name in names:
        os.symlink(victim, os.path.join(directory, name))


def _check(directory, names, victim):
    assert victim.read_text() == "outside the model directory", "a writer followed a planted symlink"
    for name in names:
        path = os.path.join(directory, name)
        assert os.path.isfile(path) and not os.path.islink(path), name
    assert not [n for n in os.listdir(directory) if n.startswith(".rg-tmp-")]


@pytest.fixture
def victim(tmp_path):
    path = tmp_path / "victim.txt"
    path.write_text("outside the model directory")
    return path


def _byte_tokenizer():
    vocab = {chr(c): i for i, c in enumerate(range(97, 110))}
    tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab=vocab, merges=[]))
    return tok


def test_gpt2_export_with_tokenizer_files(tmp_path, victim):
    source = tmp_path / "tokenizer-source"
    source.mkdir()
    _byte_tokenizer().save(str(source / "tokenizer.json"))
    (source / "vocab.txt").write_text("a\nb\n")
    (source / "special_tokens_map.json").write_text("{}")
    names = ["config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "special_tokens_map.json"]
    out = str(tmp_path / "out")
    _plant(out, names, victim)
    export_gpt2(Model(ModelConfig(vocab_size=13, n_positions=6, n_layer=1, n_head=2, n_embd=4)), out,
                tokenizer_dir=str(source))
    _check(out, names, victim)


def test_encoder_export(tmp_path, victim):
    names = ["config.json", "model.safetensors"]
    out = str(tmp_path / "out")
    _plant(out, names, victim)
    config = encoder_config_from_hf({"model_type": "bert", "vocab_size": 13, "max_position_embeddings": 6,
                                     "num_hidden_layers": 1, "num_attention_heads": 2, "hidden_size": 4,
                                     "intermediate_size": 6}, num_labels=2)
    export_encoder(out, Model(config), "bert")
    _check(out, names, victim)


def test_llama_export_with_tokenizer(tmp_path, victim):
    names = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json"]
    out = str(tmp_path / "out")
    _plant(out, names, victim)
    model = Model(_llama_config(vocab_size=13, n_positions=8, n_layer=1, n_head=2, n_kv_head=1, head_dim=2,
                                n_embd=4, n_inner=6, norm_eps=1e-5, rope_theta=1e4, tie_word_embeddings=True))
    export_hf_llama(out, model, tokenizer=_byte_tokenizer(), special_tokens={"eos_token_id": 1})
    _check(out, names, victim)
    assert json.load(open(os.path.join(out, "special_tokens_map.json"))) == {"eos_token": "b"}


def test_text_tokenizer_save(tmp_path, victim):
    from reviewgen.text.tokenization import load_tokenizer

    path = tmp_path / "tokenizer.json"
    _byte_tokenizer().save(str(path))
    tokenizer = load_tokenizer(str(path))
    out = str(tmp_path / "out")
    _plant(out, ["tokenizer.json"], victim)
    tokenizer.save(out)
    _check(out, ["tokenizer.json"], victim)


def test_json_config_save(tmp_path, victim):
    from reviewgen.core.config import TrainingConfig

    path = tmp_path / "train.json"
    os.symlink(victim, path)
    TrainingConfig().save(path)
    assert victim.read_text() == "outside the model directory" and not os.path.islink(path)
    assert TrainingConfig.load(path) == TrainingConfig()


def test_a_failed_config_write_keeps_the_old_file(tmp_path, monkeypatch):
    out = str(tmp_path / "out")
    model = Model(ModelConfig(vocab_size=13, n_positions=6, n_layer=1, n_head=2, n_embd=4))
    export_gpt2(model, out)
    before = open(os.path.join(out, "config.json"), "rb").read()
    import reviewgen.weights.gpt2 as gpt2

    monkeypatch.setattr(gpt2, "_hf_config_for", lambda *a: {"ok": 1, "bad": object()})  # json.dump fails midway
    with pytest.raises(TypeError):
        export_gpt2(model, out)
    assert open(os.path.join(out, "config.json"), "rb").read() == before
    assert not [n for n in os.listdir(out) if n.startswith(".rg-tmp-")]
