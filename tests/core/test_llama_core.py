"""The C core's Llama path (RMSNorm, rotary positions, SwiGLU, grouped-query
attention, no biases) against transformers' LlamaForCausalLM (test reference
only): logits, loss, every gradient, greedy decoding with the KV cache. The
weight mapping to the core's names (docs/model_layout.md) is written out here."""
import numpy as np
import pytest

from _reference import (assert_close, import_torch, lm_labels, padded_batch, randomize_,
                        to_numpy)

torch = import_torch()
import transformers  # noqa: E402

from reviewgen.core.models import Model, ModelConfig  # noqa: E402


def llama_model(seed=0, hidden=48, heads=4, kv_heads=2, layers=2, intermediate=76, vocab=89,
                tie=False, theta=500.0):
    config = transformers.LlamaConfig(
        vocab_size=vocab, hidden_size=hidden, num_attention_heads=heads, num_key_value_heads=kv_heads,
        num_hidden_layers=layers, intermediate_size=intermediate, max_position_embeddings=64,
        rms_norm_eps=1e-5, rope_theta=theta, tie_word_embeddings=tie, attention_bias=False,
        mlp_bias=False, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    torch.manual_seed(seed)
    hf = transformers.LlamaForCausalLM(config)
    hf.config._attn_implementation = "eager"
    randomize_(hf, seed)
    if tie:
        hf.tie_weights()
    hf.eval()
    head_dim = hidden // heads
    core_config = ModelConfig(
        vocab_size=vocab, n_positions=64, n_layer=layers, n_head=heads, n_kv_head=kv_heads,
        head_dim=head_dim, n_embd=hidden, n_inner=intermediate, norm="rmsnorm", norm_eps=1e-5,
        pre_norm=True, embed_norm=False, final_norm=True, position="rope", rope_theta=theta,
        activation="swiglu", causal=True, bias=False, head="lm", tie_word_embeddings=tie)
    names = {"wte": "model.embed_tokens.weight", "lnf.w": "model.norm.weight"}
    if not tie:
        names["lm_head.w"] = "lm_head.weight"
    stacked = {}
    for l in range(layers):
        p = f"model.layers.{l}."
        names.update({f"h.{l}.ln1.w": p + "input_layernorm.weight",
                      f"h.{l}.ln2.w": p + "post_attention_layernorm.weight",
                      f"h.{l}.proj.w": p + "self_attn.o_proj.weight",
                      f"h.{l}.fc2.w": p + "mlp.down_proj.weight"})
        stacked[f"h.{l}.qkv.w"] = [p + f"self_attn.{x}_proj.weight" for x in "qkv"]
        stacked[f"h.{l}.fc.w"] = [p + "mlp.gate_proj.weight", p + "mlp.up_proj.weight"]
    return hf, core_config, names, stacked


def load_into_core(hf, core_config, names, stacked):
    state = {k: to_numpy(v) for k, v in hf.state_dict().items()}
    model = Model(core_config)
    tensors = {ours: state[theirs] for ours, theirs in names.items()}
    tensors.update({ours: np.concatenate([state[t] for t in theirs]) for ours, theirs in stacked.items()})
    model.load_state_dict(tensors)
    return model


@pytest.mark.parametrize("tie", [False, True])
def test_llama_gqa_logits_loss_and_gradients_match(tie):
    hf, core_config, names, stacked = llama_model(tie=tie, seed=int(tie))
    model = load_into_core(hf, core_config, names, stacked)
    assert ("lm_head.w" in model.param_names()) is (not tie)
    tokens, mask = padded_batch(np.random.default_rng(7), [13, 6, 10], core_config.vocab_size)
    labels = lm_labels(tokens, mask)
    logits = model.forward(tokens, mask)
    model.zero_grad()
    loss = model.forward(tokens, mask, targets=labels)
    model.backward()
    hf.zero_grad(set_to_none=True)
    out = hf(input_ids=torch.from_numpy(tokens.astype(np.int64)),
             attention_mask=torch.from_numpy(mask.astype(np.int64)),
             labels=torch.from_numpy(labels.astype(np.int64)))
    out.loss.backward()
    real = mask.astype(bool)
    assert_close(logits[real], to_numpy(out.logits)[real], "llama logits")
    assert_close(loss, out.loss.item(), "llama loss")
    params = dict(hf.named_parameters())
    for name in model.param_names():
        if name in stacked:
            ref = np.concatenate([to_numpy(params[t].grad) for t in stacked[name]])
        else:
            ref = to_numpy(params[names[name]].grad)
        assert_close(model.grad(name), ref, f"llama grad {name}")


def test_llama_greedy_decoding_with_cache_matches_generate():
    hf, core_config, names, stacked = llama_model(seed=4, theta=10000.0)
    model = load_into_core(hf, core_config, names, stacked)
    prompts = [[1, 17, 33, 4], [1, 8], [1, 50, 51, 52, 53, 54]]
    new = 10
    ours = model.greedy_generate(prompts, max_new_tokens=new, pad_id=0)
    T = max(len(p) for p in prompts)
    ids = np.zeros((len(prompts), T), dtype=np.int64)
    att = np.zeros_like(ids)
    for b, p in enumerate(prompts):
        ids[b, T - len(p):] = p
        att[b, T - len(p):] = 1
    with torch.no_grad():
        ref = hf.generate(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(att),
                          do_sample=False, max_new_tokens=new, min_new_tokens=new, pad_token_id=0,
                          eos_token_id=None)
    assert ours == ref[:, T:].numpy().tolist()
