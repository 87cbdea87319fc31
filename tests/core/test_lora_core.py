"""LoRA through the binding, without torch: the compact gradient block and its table,
AdamW over it in both forms, merge/unmerge, and what add_lora refuses."""
import numpy as np
import pytest

from reviewgen import _core
from reviewgen.core.models import LORA_SITES, Model, ModelConfig, lora_target_bits

HP = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0, total_steps=0,
          schedule="constant")


def _llama_like():
    return ModelConfig(vocab_size=17, n_positions=16, n_layer=2, n_head=4, n_kv_head=2, n_embd=16, n_inner=24,
                       norm="rmsnorm", position="rope", activation="swiglu", bias=False,
                       tie_word_embeddings=False)


def test_compact_gradients_and_both_adamw_forms_agree():
    models = []
    for _ in range(2):
        model = Model(_llama_like())
        model.add_lora(2, 4.0, 0.0, ["q", "v", "gate", "up", "fc2"])
        rng = np.random.default_rng(0)
        for name in model.trainable_names():
            model.param(name)[...] = rng.standard_normal(model.param(name).shape) * 0.2
        models.append(model)
    table = models[0].param_table()
    trainable = [e for e in table if e["trainable"]]
    assert all(".lora." in e["name"] for e in trainable)
    assert all(e["grad_offset"] is None for e in table if ".lora." not in e["name"])
    assert len(models[0].gradients) == sum(e["numel"] for e in trainable)
    optimizers = [_core.AdamW(models[0].core, **HP),
                  _core.AdamW(models[1].parameters, models[1].gradients, models[1].param_table(), **HP)]
    tokens = np.arange(12, dtype=np.int32).reshape(2, 6) % 17
    before = models[0].parameters.copy()
    for model, optimizer in zip(models, optimizers):
        for _ in range(3):
            model.forward(tokens, targets=tokens)
            model.backward()
            optimizer.step()
    np.testing.assert_array_equal(models[0].parameters, models[1].parameters)
    moved = models[0].parameters != before
    for entry in table:
        span = moved[entry["offset"]:entry["offset"] + entry["numel"]]
        assert span.any() == entry["trainable"], entry["name"]
    # a table claiming a gradient slot the block does not hold, or none for a trainable tensor
    bad = [dict(e) for e in table]
    bad[-1]["grad_offset"] = len(models[1].gradients)
    with pytest.raises(ValueError, match="grad_offset"):
        _core.AdamW(models[1].parameters, models[1].gradients, bad, **HP)
    bad = [dict(e) for e in table]
    next(e for e in bad if e["trainable"])["grad_offset"] = None
    with pytest.raises(ValueError, match="without a gradient"):
        _core.AdamW(models[1].parameters, models[1].gradients, bad, **HP)


def test_merge_unmerge_and_refusals():
    model = Model(_llama_like())
    with pytest.raises(Exception, match="no LoRA"):
        model.merge_lora()
    tokens = np.arange(10, dtype=np.int32).reshape(2, 5)
    plain_logits = model.forward(tokens)
    model.add_lora(3, 6.0, 0.1, lora_target_bits(["q", "k", "v", "o", "fc2"]))
    np.testing.assert_array_equal(model.forward(tokens), plain_logits)  # B = 0
    rng = np.random.default_rng(1)
    for name in model.trainable_names():
        model.param(name)[...] = rng.standard_normal(model.param(name).shape) * 0.3
    adapted = model.forward(tokens)
    assert np.abs(adapted - plain_logits).max() > 1e-3
    model.merge_lora()
    assert model.lora_merged
    np.testing.assert_allclose(model.forward(tokens), adapted, rtol=1e-4, atol=1e-4)
    with pytest.raises(Exception):
        model.forward(tokens, targets=tokens)  # training a merged model
    model.unmerge_lora()
    np.testing.assert_allclose(model.forward(tokens), adapted, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="already"):
        model.add_lora(2)
    with pytest.raises(Exception, match="LoRA"):
        model.set_trainable(-1, "untie")
    with pytest.raises(KeyError, match="no gradient"):
        model.grad("h.0.qkv.w")
    assert set(LORA_SITES) == {"q", "k", "v", "qkv", "o", "fc", "gate", "up", "fc2"}
    with pytest.raises(ValueError, match="unknown LoRA site"):
        lora_target_bits(["q_proj"])
    gpt2 = Model(ModelConfig(vocab_size=17, n_positions=16, n_layer=1, n_head=2, n_embd=8))
    with pytest.raises(Exception, match="gate"):
        gpt2.add_lora(2, targets=["gate"])
    gpt2.add_lora(2, targets=["q", "v"])  # slices of c_attn: the core computes them, PEFT has no module
    from reviewgen.weights.lora import save_peft_adapter
    with pytest.raises(ValueError, match="no Hugging Face module"):
        save_peft_adapter("/nonexistent-lora-dir", gpt2)
