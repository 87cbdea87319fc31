"""Ten AdamW steps of the whole stack (loader, core forward/backward, the core's
AdamW, schedule and clipping) against torch.optim.AdamW with
get_linear_schedule_with_warmup and clip_grad_norm_, for every family, with the
seed study's hyperparameters (GPT-2 and Llama lr 5e-4; encoders 5e-5; beta1
0.95, beta2 0.999, weight decay 0.1 on matrices only, warmup ratio 0.1,
linear). The losses of all ten steps and the final parameters must agree
within 1e-4."""
import math

import numpy as np
import pytest

from _reference import import_torch, padded_batch, randomize_

torch = import_torch()
import transformers  # noqa: E402

from reviewgen import _core  # noqa: E402
from reviewgen.weights.bert import load_encoder  # noqa: E402
from reviewgen.weights.gpt2 import load_gpt2  # noqa: E402
from reviewgen.weights.llama import load_hf_llama  # noqa: E402

STEPS = 10


def _hf_model(family, tmp_path):
    torch.manual_seed(0)
    if family == "gpt2":
        cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=36, n_layer=2, n_head=3,
                                      resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
        hf = transformers.GPT2LMHeadModel(cfg)
    elif family == "llama":
        cfg = transformers.LlamaConfig(vocab_size=97, hidden_size=36, num_attention_heads=6, num_key_value_heads=2,
                                       num_hidden_layers=2, intermediate_size=50, max_position_embeddings=32,
                                       tie_word_embeddings=False, rope_theta=1000.0)
        hf = transformers.LlamaForCausalLM(cfg)
    elif family == "distilbert":
        cfg = transformers.DistilBertConfig(vocab_size=97, dim=36, n_layers=2, n_heads=3, hidden_dim=50,
                                            max_position_embeddings=32, num_labels=5, dropout=0.0,
                                            attention_dropout=0.0, seq_classif_dropout=0.0)
        hf = transformers.DistilBertForSequenceClassification(cfg)
    else:
        cfg = transformers.BertConfig(vocab_size=97, hidden_size=36, num_hidden_layers=2, num_attention_heads=3,
                                      intermediate_size=50, max_position_embeddings=32, num_labels=5,
                                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        hf = transformers.BertForSequenceClassification(cfg)
    hf.config._attn_implementation = "eager"
    randomize_(hf, seed=1, scale=0.2)
    if family == "gpt2":
        hf.tie_weights()
    hf.save_pretrained(str(tmp_path), safe_serialization=True)
    return hf.train()


def _core_model(family, directory):
    if family == "gpt2":
        return load_gpt2(directory).build_model()
    if family == "llama":
        return load_hf_llama(directory).build_model()
    return load_encoder(directory).build_model()


def _torch_optimizer(hf, lr):
    decay, no_decay = [], []
    for name, p in hf.named_parameters():
        if not p.requires_grad:
            continue
        plain = name.endswith("bias") or "norm" in name.lower() or "ln_" in name
        (no_decay if plain else decay).append(p)
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                                   {"params": no_decay, "weight_decay": 0.0}],
                                  lr=lr, betas=(0.95, 0.999), eps=1e-8)
    schedule = transformers.get_linear_schedule_with_warmup(optimizer, math.ceil(0.1 * STEPS), STEPS)
    return optimizer, schedule


@pytest.mark.parametrize("family", ["gpt2", "llama", "distilbert", "bert"])
def test_ten_adamw_steps_match_torch(family, tmp_path):
    hf = _hf_model(family, tmp_path)
    model = _core_model(family, str(tmp_path))
    causal = family in ("gpt2", "llama")
    lr = 5e-4 if causal else 5e-5
    rng = np.random.default_rng(3)
    batches = []
    for _ in range(STEPS):
        tokens, mask = padded_batch(rng, [11, 7, 9, 4], 97)
        targets = (np.where(mask > 0, tokens, -100).astype(np.int32) if causal
                   else rng.integers(0, 5, size=4).astype(np.int32))
        batches.append((tokens, mask, targets))

    model.set_trainable(-1, "train")
    initial = model.parameters.copy()
    optimizer = _core.AdamW(model.parameters, model.gradients, model.param_table(), lr=lr, betas=(0.95, 0.999),
                            eps=1e-8, weight_decay=0.1, max_grad_norm=1.0, warmup_ratio=0.1, total_steps=STEPS,
                            schedule="linear")
    torch_optimizer, schedule = _torch_optimizer(hf, lr)
    ours, theirs = [], []
    for tokens, mask, targets in batches:
        model.zero_grad()
        ours.append(model.forward(tokens, mask, targets, train=False))
        model.backward(1.0)
        optimizer.step()

        torch_optimizer.zero_grad()
        out = hf(input_ids=torch.tensor(tokens, dtype=torch.long),
                 attention_mask=torch.tensor(mask, dtype=torch.long),
                 labels=torch.tensor(targets, dtype=torch.long))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        torch_optimizer.step()
        schedule.step()
        theirs.append(out.loss.item())
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
    assert np.abs(model.parameters - initial).max() > lr  # the ten steps did move the weights

    # the loader's mapping, applied to torch's trained weights
    hf.save_pretrained(str(tmp_path / "after"), safe_serialization=True)
    after = _core_model(family, str(tmp_path / "after"))
    for name in after.param_names():
        ours_value, theirs_value = model.param(name), after.param(name)
        if name.endswith("qkv.b"):
            # The key bias adds the same q.b_k to every score of a query, which the
            # softmax cancels: its true gradient is 0, both sides see rounding noise,
            # and Adam turns noise into full-size steps. Compare q and v only.
            width = ours_value.shape[0] // 3
            keep = np.r_[0:width, 2 * width:3 * width]
            ours_value, theirs_value = ours_value[keep], theirs_value[keep]
        np.testing.assert_allclose(ours_value, theirs_value, rtol=1e-4, atol=1e-4, err_msg=name)
