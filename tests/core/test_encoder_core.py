"""The C core's post-norm encoders against transformers (test references only):
DistilBertForSequenceClassification and BertForSequenceClassification on padded
mixed-length batches: logits, loss and every gradient within 1e-4. The weight
mapping to the core's names (docs/model_layout.md) is written out here; the
loaders themselves are another module's work."""
import numpy as np
import pytest

from _reference import assert_close, import_torch, padded_batch, randomize_, to_numpy

torch = import_torch()
import transformers  # noqa: E402

from reviewgen.core.models import Model, ModelConfig  # noqa: E402


def distilbert_model(seed=0, dim=36, n_heads=3, n_layers=2, hidden_dim=52, vocab=83, labels=3):
    config = transformers.DistilBertConfig(
        vocab_size=vocab, dim=dim, n_heads=n_heads, n_layers=n_layers, hidden_dim=hidden_dim,
        max_position_embeddings=24, num_labels=labels, dropout=0.0, attention_dropout=0.0,
        seq_classif_dropout=0.0, activation="gelu")
    torch.manual_seed(seed)
    hf = transformers.DistilBertForSequenceClassification(config)
    hf.config._attn_implementation = "eager"
    randomize_(hf, seed)
    hf.eval()
    core_config = ModelConfig(
        vocab_size=vocab, n_positions=24, n_layer=n_layers, n_head=n_heads, n_embd=dim,
        n_inner=hidden_dim, norm="layernorm", norm_eps=1e-12, pre_norm=False, embed_norm=True,
        final_norm=False, position="learned", activation="gelu_erf", causal=False, bias=True,
        head="cls_distilbert", tie_word_embeddings=False, num_labels=labels)
    names = {"wte": "distilbert.embeddings.word_embeddings.weight",
             "wpe": "distilbert.embeddings.position_embeddings.weight",
             "emb_ln.w": "distilbert.embeddings.LayerNorm.weight",
             "emb_ln.b": "distilbert.embeddings.LayerNorm.bias",
             "cls.pre.w": "pre_classifier.weight", "cls.pre.b": "pre_classifier.bias",
             "cls.out.w": "classifier.weight", "cls.out.b": "classifier.bias"}
    qkv = {}
    for l in range(n_layers):
        p = f"distilbert.transformer.layer.{l}."
        names.update({f"h.{l}.ln1.w": p + "sa_layer_norm.weight", f"h.{l}.ln1.b": p + "sa_layer_norm.bias",
                      f"h.{l}.proj.w": p + "attention.out_lin.weight", f"h.{l}.proj.b": p + "attention.out_lin.bias",
                      f"h.{l}.ln2.w": p + "output_layer_norm.weight", f"h.{l}.ln2.b": p + "output_layer_norm.bias",
                      f"h.{l}.fc.w": p + "ffn.lin1.weight", f"h.{l}.fc.b": p + "ffn.lin1.bias",
                      f"h.{l}.fc2.w": p + "ffn.lin2.weight", f"h.{l}.fc2.b": p + "ffn.lin2.bias"})
        for kind in ("weight", "bias"):
            qkv[f"h.{l}.qkv.{kind[0]}"] = [p + f"attention.{x}_lin.{kind}" for x in "qkv"]
    return hf, core_config, names, qkv


def bert_model(seed=0, hidden=40, heads=4, layers=2, intermediate=44, vocab=91, labels=5):
    config = transformers.BertConfig(
        vocab_size=vocab, hidden_size=hidden, num_attention_heads=heads, num_hidden_layers=layers,
        intermediate_size=intermediate, max_position_embeddings=24, type_vocab_size=2,
        num_labels=labels, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        layer_norm_eps=1e-12, hidden_act="gelu")
    torch.manual_seed(seed)
    hf = transformers.BertForSequenceClassification(config)
    hf.config._attn_implementation = "eager"
    randomize_(hf, seed)
    hf.eval()
    core_config = ModelConfig(
        vocab_size=vocab, n_positions=24, n_layer=layers, n_head=heads, n_embd=hidden,
        n_inner=intermediate, type_vocab_size=2, norm="layernorm", norm_eps=1e-12, pre_norm=False,
        embed_norm=True, final_norm=False, position="learned", activation="gelu_erf", causal=False,
        bias=True, head="cls_bert", tie_word_embeddings=False, num_labels=labels)
    names = {"wte": "bert.embeddings.word_embeddings.weight",
             "wpe": "bert.embeddings.position_embeddings.weight",
             "wtt": "bert.embeddings.token_type_embeddings.weight",
             "emb_ln.w": "bert.embeddings.LayerNorm.weight", "emb_ln.b": "bert.embeddings.LayerNorm.bias",
             "cls.pre.w": "bert.pooler.dense.weight", "cls.pre.b": "bert.pooler.dense.bias",
             "cls.out.w": "classifier.weight", "cls.out.b": "classifier.bias"}
    qkv = {}
    for l in range(layers):
        p = f"bert.encoder.layer.{l}."
        names.update({f"h.{l}.ln1.w": p + "attention.output.LayerNorm.weight",
                      f"h.{l}.ln1.b": p + "attention.output.LayerNorm.bias",
                      f"h.{l}.proj.w": p + "attention.output.dense.weight",
                      f"h.{l}.proj.b": p + "attention.output.dense.bias",
                      f"h.{l}.ln2.w": p + "output.LayerNorm.weight", f"h.{l}.ln2.b": p + "output.LayerNorm.bias",
                      f"h.{l}.fc.w": p + "intermediate.dense.weight", f"h.{l}.fc.b": p + "intermediate.dense.bias",
                      f"h.{l}.fc2.w": p + "output.dense.weight", f"h.{l}.fc2.b": p + "output.dense.bias"})
        for kind in ("weight", "bias"):
            qkv[f"h.{l}.qkv.{kind[0]}"] = [p + f"attention.self.{x}.{kind}" for x in ("query", "key", "value")]
    return hf, core_config, names, qkv


def load_into_core(hf, core_config, names, qkv):
    state = {k: to_numpy(v) for k, v in hf.state_dict().items()}
    model = Model(core_config)
    tensors = {ours: state[theirs] for ours, theirs in names.items()}
    tensors.update({ours: np.concatenate([state[t] for t in theirs]) for ours, theirs in qkv.items()})
    model.load_state_dict(tensors)
    return model


def grad_of(hf, names, qkv, internal):
    params = dict(hf.named_parameters())
    if internal in qkv:
        return np.concatenate([to_numpy(params[t].grad) for t in qkv[internal]])
    return to_numpy(params[names[internal]].grad)


BUILDERS = {"distilbert": distilbert_model, "bert": bert_model}


@pytest.mark.parametrize("family", sorted(BUILDERS))
def test_encoder_logits_loss_and_gradients_match(family):
    hf, core_config, names, qkv = BUILDERS[family]()
    model = load_into_core(hf, core_config, names, qkv)
    rng = np.random.default_rng(3)
    tokens, mask = padded_batch(rng, [11, 4, 9, 1, 7], core_config.vocab_size)
    labels = rng.integers(0, core_config.num_labels, size=len(tokens)).astype(np.int32)
    kwargs = {}
    types = None
    if family == "bert":  # two segments per row
        types = np.zeros_like(tokens)
        types[:, 5:] = 1
        types *= mask
        kwargs["token_type_ids"] = torch.from_numpy(types.astype(np.int64))
    ours_logits = model.forward(tokens, mask, token_types=types)
    model.zero_grad()
    ours_loss = model.forward(tokens, mask, targets=labels, token_types=types)
    model.backward()
    hf.zero_grad(set_to_none=True)
    out = hf(input_ids=torch.from_numpy(tokens.astype(np.int64)),
             attention_mask=torch.from_numpy(mask.astype(np.int64)),
             labels=torch.from_numpy(labels.astype(np.int64)), **kwargs)
    out.loss.backward()
    assert_close(ours_logits, to_numpy(out.logits), f"{family} logits")
    assert_close(ours_loss, out.loss.item(), f"{family} loss")
    for name in model.param_names():
        assert_close(model.grad(name), grad_of(hf, names, qkv, name), f"{family} grad {name}")


def test_bert_without_token_types_uses_type_zero():
    hf, core_config, names, qkv = bert_model(seed=1)
    model = load_into_core(hf, core_config, names, qkv)
    tokens, mask = padded_batch(np.random.default_rng(4), [6, 3], core_config.vocab_size)
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                 attention_mask=torch.from_numpy(mask.astype(np.int64))).logits
    assert_close(model.forward(tokens, mask), to_numpy(ref), "bert logits, default token types")


def test_encoder_freezing_trains_only_the_top_and_the_head():
    hf, core_config, names, qkv = distilbert_model(seed=2)
    model = load_into_core(hf, core_config, names, qkv)
    model.set_trainable(1, "train")
    rng = np.random.default_rng(5)
    tokens, mask = padded_batch(rng, [8, 5, 3], core_config.vocab_size)
    labels = rng.integers(0, core_config.num_labels, size=3).astype(np.int32)
    model.zero_grad()
    model.forward(tokens, mask, targets=labels)
    model.backward()
    for name, p in hf.named_parameters():
        p.requires_grad_(".layer.1." in name or "classifier" in name)
    try:
        hf.zero_grad(set_to_none=True)
        hf(input_ids=torch.from_numpy(tokens.astype(np.int64)),
           attention_mask=torch.from_numpy(mask.astype(np.int64)),
           labels=torch.from_numpy(labels.astype(np.int64))).loss.backward()
        trainable = set(model.trainable_names())
        assert trainable == {n for n in model.param_names() if n.startswith("h.1.") or n.startswith("cls.")}
        for name in model.param_names():
            if name in trainable:
                assert_close(model.grad(name), grad_of(hf, names, qkv, name), f"grad {name}")
            else:
                assert not model.grad(name).any(), f"frozen {name} received a gradient"
    finally:
        for p in hf.parameters():
            p.requires_grad_(True)
