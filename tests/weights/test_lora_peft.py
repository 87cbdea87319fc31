"""LoRA adapters of the core against peft (a test-only dependency) on tiny random
models of every family: an adapter made by peft loads into the core and gives
peft's logits, loss and adapter gradients; one the core saves loads into
``peft.PeftModel.from_pretrained`` with the same logits; ten AdamW steps on the
adapters agree with torch's; merging for export gives the same logits."""
import math
import os

import numpy as np
import pytest

from _reference import import_torch, padded_batch, randomize_

torch = import_torch()
transformers = pytest.importorskip("transformers")
peft = pytest.importorskip("peft")

from reviewgen import _core  # noqa: E402
from reviewgen.weights.bert import load_encoder  # noqa: E402
from reviewgen.weights.gpt2 import load_gpt2  # noqa: E402
from reviewgen.weights.llama import load_hf_llama  # noqa: E402
from reviewgen.weights.lora import (lora_targets, load_peft_adapter, peft_module_names,  # noqa: E402
                                    save_peft_adapter)
from reviewgen.core.models import lora_site_names  # noqa: E402

FAMILIES = ["gpt2", "llama", "bert", "distilbert"]
# every projection PEFT can adapt in a block of each family
TARGETS = {"gpt2": ["c_attn", "c_proj", "c_fc"],
           "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
           "bert": ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"],
           "distilbert": ["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"]}
V = 61


def _hf_base(family, directory, seed=0):
    torch.manual_seed(seed)
    if family == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=V, n_positions=32, n_embd=24, n_layer=2, n_head=3,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        hf = transformers.GPT2LMHeadModel(cfg)
    elif family == "llama":
        cfg = transformers.LlamaConfig(vocab_size=V, hidden_size=24, num_attention_heads=4, num_key_value_heads=2,
                                       num_hidden_layers=2, intermediate_size=34, max_position_embeddings=32,
                                       tie_word_embeddings=False, rope_theta=1000.0)
        hf = transformers.LlamaForCausalLM(cfg)
    elif family == "distilbert":
        cfg = transformers.DistilBertConfig(vocab_size=V, dim=24, n_layers=2, n_heads=3, hidden_dim=34,
                                            max_position_embeddings=32, num_labels=3, dropout=0.0,
                                            attention_dropout=0.0, seq_classif_dropout=0.0)
        hf = transformers.DistilBertForSequenceClassification(cfg)
    else:
        cfg = transformers.BertConfig(vocab_size=V, hidden_size=24, num_hidden_layers=2, num_attention_heads=3,
                                      intermediate_size=34, max_position_embeddings=32, num_labels=3,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        hf = transformers.BertForSequenceClassification(cfg)
    hf.config._attn_implementation = "eager"
    randomize_(hf, seed=seed + 1, scale=0.2)
    if family == "gpt2":
        hf.tie_weights()
    os.makedirs(directory, exist_ok=True)
    hf.save_pretrained(str(directory), safe_serialization=True)
    return hf


def _core_model(family, directory):
    if family == "gpt2":
        return load_gpt2(str(directory)).build_model()
    if family == "llama":
        return load_hf_llama(str(directory)).build_model()
    return load_encoder(str(directory)).build_model()


def _fresh_base(family, directory):
    kind = {"gpt2": transformers.GPT2LMHeadModel, "llama": transformers.LlamaForCausalLM,
            "bert": transformers.BertForSequenceClassification,
            "distilbert": transformers.DistilBertForSequenceClassification}[family]
    hf = kind.from_pretrained(str(directory), attn_implementation="eager")
    return hf


def _peft_model(family, base, rank=4, alpha=6.0, seed=5):
    task = "CAUSAL_LM" if family in ("gpt2", "llama") else "SEQ_CLS"
    config = peft.LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=TARGETS[family],
                             task_type=task, fan_in_fan_out=family == "gpt2")
    model = peft.get_peft_model(base, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # B is zero at init: make the adapters do something
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))
    return model


def _batch(family, seed=3):
    rng = np.random.default_rng(seed)
    causal = family in ("gpt2", "llama")
    tokens, mask = padded_batch(rng, [9, 6, 8], V, left=False)
    targets = (np.where(mask > 0, tokens, -100).astype(np.int32) if causal
               else rng.integers(0, 3, size=3).astype(np.int32))
    return tokens, mask, targets


def _torch_logits(model, tokens, mask):
    with torch.no_grad():
        out = model(input_ids=torch.tensor(tokens, dtype=torch.long),
                    attention_mask=torch.tensor(mask, dtype=torch.long))
    return out.logits.float().numpy()


def _core_logits(model, family, tokens, mask):
    logits = model.forward(tokens, mask)
    return np.asarray(logits)


def _peft_param_name(family, core_name):
    """h.<l>.lora.<site>.<A|B> -> the peft parameter name; cls.* -> the modules_to_save copy."""
    if core_name.startswith("cls."):
        module = {"cls.out": "classifier", "cls.pre": "pre_classifier"}[core_name[:7]]
        kind = "weight" if core_name.endswith(".w") else "bias"
        return f"base_model.model.{module}.modules_to_save.default.{kind}"
    _, layer, _, site, ab = core_name.split(".")
    path = peft_module_names(family, int(layer))[site]
    return f"base_model.model.{path}.lora_{ab}.default.weight"


def _compare_real(ours, theirs, mask, family, what, tol=1e-4):
    if family in ("gpt2", "llama"):
        keep = mask.astype(bool)
        ours, theirs = ours[keep], theirs[keep]
    np.testing.assert_allclose(ours, theirs, rtol=tol, atol=tol, err_msg=what)


@pytest.mark.parametrize("family", FAMILIES)
def test_peft_adapter_loads_with_same_logits_loss_and_gradients(family, tmp_path):
    base_dir = tmp_path / "base"
    hf = _hf_base(family, base_dir)
    pm = _peft_model(family, hf)
    pm.save_pretrained(str(tmp_path / "adapter"))
    model = _core_model(family, base_dir)
    load_peft_adapter(tmp_path / "adapter", model)
    assert model.config.lora_targets == lora_targets(family, TARGETS[family])
    assert len(model.core.gradients) < len(model.parameters) / 2
    tokens, mask, targets = _batch(family)

    pm.eval()
    _compare_real(_core_logits(model, family, tokens, mask), _torch_logits(pm, tokens, mask), mask, family,
                  "logits")

    model.zero_grad()
    loss = model.forward(tokens, mask, targets, train=False)
    model.backward(1.0)
    pm.zero_grad()
    out = pm(input_ids=torch.tensor(tokens, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long),
             labels=torch.tensor(targets, dtype=torch.long))
    out.loss.backward()
    assert abs(loss - out.loss.item()) < 1e-4
    params = dict(pm.named_parameters())
    trainable = {name for name, p in params.items() if p.requires_grad}
    ours = set(model.trainable_names())
    assert {_peft_param_name(family, name) for name in ours} == trainable
    for name in ours:
        reference = params[_peft_param_name(family, name)].grad.numpy()
        np.testing.assert_allclose(model.grad(name), reference, rtol=1e-4, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("family", FAMILIES)
def test_core_adapter_loads_into_peft_with_same_logits(family, tmp_path):
    base_dir = tmp_path / "base"
    _hf_base(family, base_dir)
    model = _core_model(family, base_dir)
    model.add_lora(3, 5.0, 0.1, lora_targets(family, "all"))
    rng = np.random.default_rng(7)
    for name in model.trainable_names():  # B non-zero, trained heads changed: the file must carry them
        if ".lora." in name and name.endswith(".B"):
            model.param(name)[...] = 0.3 * rng.standard_normal(model.param(name).shape)
        elif name.startswith("cls."):
            model.param(name)[...] += 0.1 * rng.standard_normal(model.param(name).shape)
    save_peft_adapter(tmp_path / "adapter", model)
    pm = peft.PeftModel.from_pretrained(_fresh_base(family, base_dir), str(tmp_path / "adapter")).eval()
    tokens, mask, _ = _batch(family, seed=4)
    ours = _core_logits(model, family, tokens, mask)
    _compare_real(ours, _torch_logits(pm, tokens, mask), mask, family, "logits")

    # and back: the saved adapter loads into a fresh core model unchanged
    again = _core_model(family, base_dir)
    load_peft_adapter(tmp_path / "adapter", again)
    np.testing.assert_array_equal(again.parameters, model.parameters)
    assert again.config.lora_dropout == pytest.approx(0.1)

    # merged for export: a plain model with the same logits
    plain = model.without_lora()
    assert plain.config.lora_rank == 0 and not model.lora_merged
    _compare_real(_core_logits(plain, family, tokens, mask), ours, mask, family, "merged logits")


@pytest.mark.parametrize("family", FAMILIES)
def test_ten_adamw_steps_on_adapters_match_torch(family, tmp_path):
    base_dir = tmp_path / "base"
    hf = _hf_base(family, base_dir)
    pm = _peft_model(family, hf, seed=9)
    pm.save_pretrained(str(tmp_path / "adapter"))
    model = _core_model(family, base_dir)
    load_peft_adapter(tmp_path / "adapter", model)
    steps, lr = 10, 2e-3
    base_before = model.without_lora().parameters.copy()  # B != 0: merged, to check it later unmerged

    initial = model.parameters.copy()
    optimizer = _core.AdamW(model.core, lr=lr, betas=(0.95, 0.999), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0,
                            warmup_ratio=0.1, total_steps=steps, schedule="linear")
    trainable = [p for p in pm.parameters() if p.requires_grad]
    decay = [p for n, p in pm.named_parameters() if p.requires_grad and not n.endswith("bias")]
    no_decay = [p for n, p in pm.named_parameters() if p.requires_grad and n.endswith("bias")]
    assert len(decay) + len(no_decay) == len(trainable)
    torch_opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr, betas=(0.95, 0.999), eps=1e-8)
    schedule = transformers.get_linear_schedule_with_warmup(torch_opt, math.ceil(0.1 * steps), steps)
    pm.train()
    ours, theirs = [], []
    for step in range(steps):
        tokens, mask, targets = _batch(family, seed=100 + step)
        model.zero_grad()
        ours.append(model.forward(tokens, mask, targets, train=False))
        model.backward(1.0)
        optimizer.step()
        torch_opt.zero_grad()
        out = pm(input_ids=torch.tensor(tokens, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long), labels=torch.tensor(targets, dtype=torch.long))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        torch_opt.step()
        schedule.step()
        theirs.append(out.loss.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert np.abs(model.parameters - initial).max() > lr
    params = dict(pm.named_parameters())
    for name in model.trainable_names():
        np.testing.assert_allclose(model.param(name), params[_peft_param_name(family, name)].detach().numpy(),
                                   rtol=1e-4, atol=1e-4, err_msg=name)
    # the base weights did not move (only adapters and the PEFT-trained head layers did)
    plain_names = [e["name"] for e in model.param_table() if ".lora." not in e["name"]]
    trained_heads = {n for n in model.trainable_names() if n.startswith("cls.")}
    for name in plain_names:
        if name not in trained_heads:
            np.testing.assert_array_equal(model.param(name), initial[model._table[name]["offset"]:][
                :model._table[name]["numel"]].reshape(model.param(name).shape), err_msg=name)
    del base_before


def test_target_names():
    assert lora_site_names(lora_targets("gpt2", ["c_proj"])) == ["o", "fc2"]  # PEFT's suffix rule: both
    assert lora_site_names(lora_targets("gpt2", None)) == ["qkv"]
    assert lora_site_names(lora_targets("llama", None)) == ["q", "v"]
    assert lora_site_names(lora_targets("bert", ["output.dense"])) == ["o", "fc2"]
    assert lora_site_names(lora_targets("llama", ["q", "gate"])) == ["q", "gate"]
    assert lora_site_names(lora_targets("distilbert", "all")) == ["q", "k", "v", "o", "fc", "fc2"]
    with pytest.raises(ValueError, match="pooler"):
        lora_targets("bert", ["dense"])
    with pytest.raises(ValueError, match="no site"):
        lora_targets("gpt2", ["q"])
    with pytest.raises(ValueError, match="match no"):
        lora_targets("llama", ["c_attn"])


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_cached_decoding_applies_the_adapters(family, tmp_path):
    """The key/value-cache path (prefill + one token at a time) gives the full forward's
    logits with the adapters, and greedy decoding equals that of the merged export."""
    _hf_base(family, tmp_path / "base")
    model = _core_model(family, tmp_path / "base")
    model.add_lora(4, 8.0, 0.0, lora_targets(family, "all"))
    rng = np.random.default_rng(11)
    for name in model.trainable_names():
        if name.endswith(".B"):
            model.param(name)[...] = 0.3 * rng.standard_normal(model.param(name).shape)
    tokens = rng.integers(1, V, size=(2, 7)).astype(np.int32)
    full = np.asarray(model.forward(tokens))
    model.reset_cache(2, 7)
    step = model.forward_logits(tokens[:, :4])
    np.testing.assert_allclose(step, full[:, 3], rtol=1e-4, atol=1e-4)
    for t in range(4, 7):
        step = model.decode_step(tokens[:, t])
        np.testing.assert_allclose(step, full[:, t], rtol=1e-4, atol=1e-4)
    plain = model.without_lora()
    prompts = [list(tokens[0, :3]), list(tokens[1, :5])]
    assert model.greedy_generate(prompts, 6) == plain.greedy_generate(prompts, 6)
