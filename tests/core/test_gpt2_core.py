"""The C core's GPT-2 against transformers' GPT2LMHeadModel (test reference only):
logits, loss, every gradient, freezing, greedy decoding with the KV cache, export."""
import json

import numpy as np
import pytest

from _reference import (assert_close, import_torch, lm_labels, padded_batch, randomize_,
                        to_numpy)

torch = import_torch()
import transformers  # noqa: E402

import reviewgen  # noqa: E402
from reviewgen.weights.gpt2 import export_gpt2, load_gpt2  # noqa: E402
from reviewgen.core.models import Model, ModelConfig  # noqa: E402

# internal name -> (HF parameter name in GPT2LMHeadModel, Conv1D transposed)
BLOCK = {"ln1.w": ("ln_1.weight", False), "ln1.b": ("ln_1.bias", False),
         "qkv.w": ("attn.c_attn.weight", True), "qkv.b": ("attn.c_attn.bias", False),
         "proj.w": ("attn.c_proj.weight", True), "proj.b": ("attn.c_proj.bias", False),
         "ln2.w": ("ln_2.weight", False), "ln2.b": ("ln_2.bias", False),
         "fc.w": ("mlp.c_fc.weight", True), "fc.b": ("mlp.c_fc.bias", False),
         "fc2.w": ("mlp.c_proj.weight", True), "fc2.b": ("mlp.c_proj.bias", False)}


def hf_name_of(internal):
    if internal == "wte":
        return "transformer.wte.weight", False
    if internal == "wpe":
        return "transformer.wpe.weight", False
    if internal == "lnf.w":
        return "transformer.ln_f.weight", False
    if internal == "lnf.b":
        return "transformer.ln_f.bias", False
    if internal == "lm_head.w":
        return "lm_head.weight", False
    _, layer, rest = internal.split(".", 2)
    hf, transposed = BLOCK[rest]
    return f"transformer.h.{layer}.{hf}", transposed


def make_gpt2(tmp_path, n_embd=36, n_head=3, n_layer=2, vocab_size=97, n_positions=40,
              n_inner=None, tie=True, seed=0, dropout=0.0):
    config = transformers.GPT2Config(
        vocab_size=vocab_size, n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
        n_head=n_head, n_inner=n_inner, resid_pdrop=dropout, embd_pdrop=dropout,
        attn_pdrop=dropout, tie_word_embeddings=tie, layer_norm_epsilon=1e-5)
    torch.manual_seed(seed)
    hf = transformers.GPT2LMHeadModel(config)
    hf.config._attn_implementation = "eager"
    randomize_(hf, seed)
    if tie:
        hf.tie_weights()
    hf.eval()
    directory = tmp_path / f"gpt2_{n_embd}_{n_layer}_{int(tie)}_{seed}"
    hf.save_pretrained(directory, safe_serialization=True)
    return hf, directory


def hf_loss_and_grads(hf, tokens, mask, labels, inputs_embeds_detached=False):
    hf.zero_grad(set_to_none=True)
    ids = torch.from_numpy(tokens.astype(np.int64))
    kwargs = dict(attention_mask=torch.from_numpy(mask.astype(np.int64)),
                  labels=torch.from_numpy(labels.astype(np.int64)))
    if inputs_embeds_detached:
        out = hf(inputs_embeds=hf.transformer.wte(ids).detach(), **kwargs)
    else:
        out = hf(input_ids=ids, **kwargs)
    out.loss.backward()
    return out


def compare_grads(model, hf, names, tol=1e-4):
    params = dict(hf.named_parameters())
    worst = 0.0
    for name in names:
        hf_name, transposed = hf_name_of(name)
        g = params[hf_name].grad
        assert g is not None, f"torch has no gradient for {hf_name}"
        g = to_numpy(g)
        worst = max(worst, assert_close(model.grad(name), g.T if transposed else g, f"grad {name}", tol))
    return worst


@pytest.fixture(scope="module")
def awkward(tmp_path_factory):
    """n_embd 36 with 3 heads (head size 12), n_inner 100, mixed-length padded batch, T = 13."""
    hf, directory = make_gpt2(tmp_path_factory.mktemp("gpt2"), n_embd=36, n_head=3, n_layer=3,
                              n_inner=100)
    rng = np.random.default_rng(1)
    tokens, mask = padded_batch(rng, [13, 7, 10, 1], hf.config.vocab_size)
    return hf, directory, tokens, mask


def test_logits_and_loss_match_transformers(awkward):
    hf, directory, tokens, mask = awkward
    model = load_gpt2(str(directory)).build_model()
    ours = model.forward(tokens, mask)
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                 attention_mask=torch.from_numpy(mask.astype(np.int64))).logits
    real = mask.astype(bool)
    assert_close(ours[real], to_numpy(ref)[real], "logits at real tokens")
    labels = lm_labels(tokens, mask)
    loss = model.forward(tokens, mask, targets=labels)
    with torch.no_grad():
        ref_loss = hf(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                      attention_mask=torch.from_numpy(mask.astype(np.int64)),
                      labels=torch.from_numpy(labels.astype(np.int64))).loss.item()
    assert_close(loss, ref_loss, "loss")


def test_every_gradient_matches_transformers(awkward):
    hf, directory, tokens, mask = awkward
    model = load_gpt2(str(directory)).build_model()
    labels = lm_labels(tokens, mask)
    model.zero_grad()
    loss = model.forward(tokens, mask, targets=labels)
    model.backward()
    out = hf_loss_and_grads(hf, tokens, mask, labels)
    assert_close(loss, out.loss.item(), "loss")
    names = model.param_names()
    assert "lm_head.w" not in names and "wte" in names  # tied head
    compare_grads(model, hf, names)


def test_untied_head_and_loss_scale(tmp_path):
    hf, directory = make_gpt2(tmp_path, n_embd=20, n_head=4, n_layer=2, tie=False, seed=3)
    model = load_gpt2(str(directory)).build_model()
    assert "lm_head.w" in model.param_names()
    tokens, mask = padded_batch(np.random.default_rng(2), [9, 5, 9], hf.config.vocab_size)
    labels = lm_labels(tokens, mask)
    model.zero_grad()
    # two half-scaled backward passes accumulate into one full gradient
    for _ in range(2):
        model.forward(tokens, mask, targets=labels)
        model.backward(0.5)
    hf_loss_and_grads(hf, tokens, mask, labels)
    compare_grads(model, hf, model.param_names())


@pytest.mark.parametrize("policy", ["frozen", "train", "untie"])
def test_freezing_matches_torch_requires_grad(awkward, policy):
    hf, directory, tokens, mask = awkward
    model = load_gpt2(str(directory)).build_model()
    labels = lm_labels(tokens, mask)
    model.set_trainable(1, policy)
    last = hf.config.n_layer - 1
    trainable = set(model.trainable_names())
    expected = {n for n in model.param_names() if n.startswith(f"h.{last}.") or n.startswith("lnf.")}
    if policy == "train":
        expected.add("wte")
    if policy == "untie":
        expected.add("lm_head.w")
        assert model.config.tie_word_embeddings is False
    assert trainable == expected
    before = model.parameters.copy()
    model.gradients[:] = 0.0
    model.forward(tokens, mask, targets=labels)
    model.backward()

    # torch reference: the same tensors require grad; with a trained tied head the
    # embedding lookup does not pass gradient back (the core stops at the last block)
    for name, p in hf.named_parameters():
        p.requires_grad_(name.startswith(f"transformer.h.{last}.") or name.startswith("transformer.ln_f")
                         or (policy != "frozen" and name == "transformer.wte.weight"))
    try:
        hf_loss_and_grads(hf, tokens, mask, labels, inputs_embeds_detached=True)
        block_names = sorted(expected - {"wte", "lm_head.w"})
        compare_grads(model, hf, block_names)
        if policy != "frozen":
            head_grad = to_numpy(dict(hf.named_parameters())["transformer.wte.weight"].grad)
            assert_close(model.grad("lm_head.w" if policy == "untie" else "wte"), head_grad, "head grad")
    finally:
        for p in hf.parameters():
            p.requires_grad_(True)
    grads = model.gradients
    for entry in model.param_table():
        if not entry["trainable"]:
            piece = grads[entry["offset"]:entry["offset"] + entry["numel"]]
            assert not piece.any(), f"frozen {entry['name']} received a gradient"
    after = model.parameters
    assert np.array_equal(before.view(np.uint32), after[:before.size].view(np.uint32))
    if policy == "untie":
        assert np.array_equal(model.param("lm_head.w"), model.param("wte"))


def test_greedy_decoding_with_cache_matches_generate(tmp_path):
    hf, directory = make_gpt2(tmp_path, n_embd=32, n_head=4, n_layer=2, vocab_size=61, seed=5)
    model = load_gpt2(str(directory)).build_model()
    prompts = [[5, 9, 13, 2, 7], [11, 3], [40, 41, 42]]
    new = 12
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
    ref_new = ref[:, T:].numpy().tolist()
    assert ours == ref_new

    # the cached logits equal a full forward over the unpadded sequence
    sequence = prompts[1] + ours[1]
    full = model.forward(np.array([sequence], dtype=np.int32))
    model.reset_cache(1, len(sequence))
    step_logits = [model.forward_logits(np.array([sequence[:3]], dtype=np.int32))]
    for token in sequence[3:]:
        step_logits.append(model.decode_step(np.array([token], dtype=np.int32)))
    assert_close(np.concatenate(step_logits), full[0, 2:], "cached logits")


def write_tiny_tokenizer(directory, vocab_size):
    vocab = {chr(ord("a") + i % 26) + str(i // 26): i for i in range(vocab_size)}
    (directory / "vocab.json").write_text(json.dumps(vocab))
    (directory / "merges.txt").write_text("#version: 0.2\n")


@pytest.mark.parametrize("untie", [False, True])
def test_export_round_trip_loads_in_transformers(tmp_path, untie):
    hf, directory = make_gpt2(tmp_path, n_embd=24, n_head=2, n_layer=2, seed=7)
    write_tiny_tokenizer(directory, hf.config.vocab_size)
    model = load_gpt2(str(directory)).build_model()
    if untie:
        model.set_trainable(1, "untie")
        model.param("lm_head.w")[:] += 0.01  # make the untied head differ from wte
    out = tmp_path / "exported"
    export_gpt2(model, str(out), tokenizer_dir=str(directory))
    assert (out / "vocab.json").is_file() and (out / "merges.txt").is_file()
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(out)
    reloaded.eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    assert tokenizer is not None
    tokens, mask = padded_batch(np.random.default_rng(4), [8, 6], hf.config.vocab_size)
    with torch.no_grad():
        ref = reloaded(input_ids=torch.from_numpy(tokens.astype(np.int64)),
                       attention_mask=torch.from_numpy(mask.astype(np.int64))).logits
    ours = model.forward(tokens, mask)
    real = mask.astype(bool)
    assert_close(ours[real], to_numpy(ref)[real], "logits after export")
    assert load_gpt2(str(out)).config.tie_word_embeddings is (not untie)


def test_dropout_is_seeded_and_its_backward_regenerates_the_masks(tmp_path):
    hf, directory = make_gpt2(tmp_path, n_embd=16, n_head=2, n_layer=2, seed=9, dropout=0.2)
    model = load_gpt2(str(directory)).build_model()
    tokens, mask = padded_batch(np.random.default_rng(5), [10, 6], hf.config.vocab_size)
    labels = lm_labels(tokens, mask)
    eval_loss = model.forward(tokens, mask, targets=labels)
    a = model.forward(tokens, mask, targets=labels, train=True, seed=11)
    b = model.forward(tokens, mask, targets=labels, train=True, seed=11)
    c = model.forward(tokens, mask, targets=labels, train=True, seed=12)
    assert a == b and a != c and a != eval_loss
    # directional derivative of the seeded training loss == gradient . direction
    model.zero_grad()
    model.forward(tokens, mask, targets=labels, train=True, seed=11)
    model.backward()
    g = model.gradients.astype(np.float64)
    direction = np.random.default_rng(6).standard_normal(g.size)
    params = model.parameters
    base = params.copy()
    eps = 1e-3  # small: the loss is far from linear along a direction over every parameter
    losses = []
    for sign in (1, -1):
        params[:] = (base + sign * eps * direction).astype(np.float32)
        losses.append(model.forward(tokens, mask, targets=labels, train=True, seed=11))
    params[:] = base
    numeric = (losses[0] - losses[1]) / (2 * eps)
    analytic = float(g @ direction)
    assert abs(numeric - analytic) <= 2e-2 * abs(analytic) + 1e-3, (numeric, analytic)


def test_bad_inputs_raise_clear_errors(tmp_path):
    model = Model(ModelConfig(vocab_size=30, n_positions=8, n_layer=1, n_head=2, n_embd=8))
    good = np.zeros((2, 4), dtype=np.int32)
    with pytest.raises(reviewgen.LabelRangeError, match="tokens"):
        model.forward(np.full((2, 4), 30, dtype=np.int32))
    with pytest.raises(reviewgen.LabelRangeError, match="targets"):
        model.forward(good, targets=np.full((2, 4), 31, dtype=np.int32))
    with pytest.raises(reviewgen.ShapeError):
        model.forward(good, attention_mask=np.ones((2, 5), dtype=np.int32))
    with pytest.raises(reviewgen.ShapeError, match="at most 8"):
        model.forward(np.zeros((1, 9), dtype=np.int32))
    with pytest.raises(TypeError):
        model.forward(good.astype(np.float32))
    with pytest.raises(TypeError):
        model.core.forward(good.astype(np.int64))  # the core takes int32 only
    with pytest.raises(ValueError):
        model.core.forward(np.zeros(4, dtype=np.int32))
    with pytest.raises(reviewgen.StateError):
        model.backward()  # no forward with targets yet
    model.forward(good, targets=good)
    model.backward()
    with pytest.raises(reviewgen.StateError):
        model.backward()  # one backward per forward
    with pytest.raises(reviewgen.StateError):
        model.decode_step(np.zeros(2, dtype=np.int32))  # no cache yet
    model.reset_cache(2, 3)
    model.forward_logits(good[:, :3])
    with pytest.raises(reviewgen.ShapeError, match="full"):
        model.decode_step(np.zeros(2, dtype=np.int32))
    with pytest.raises(ValueError, match="missing"):
        reviewgen._core.Model({"vocab_size": 3})
    bad = ModelConfig(vocab_size=30, n_positions=8, n_layer=1, n_head=2, n_embd=8).to_dict()
    bad["norm_eps"] = 0.0
    with pytest.raises(reviewgen.InvalidArgumentError):
        reviewgen._core.Model(bad)


def test_views_keep_the_model_alive_and_table_is_consistent():
    model = Model(ModelConfig(vocab_size=30, n_positions=8, n_layer=2, n_head=2, n_embd=8))
    params = model.parameters
    table = model.param_table()
    assert sum(e["numel"] for e in table) == params.size
    offsets = [e["offset"] for e in table]
    assert offsets == sorted(offsets) and offsets[0] == 0
    decays = {e["name"]: e["decay"] for e in table}
    assert decays["wte"] and decays["h.0.qkv.w"] and not decays["h.0.qkv.b"] and not decays["lnf.w"]
    layers = {e["name"]: e["layer"] for e in table}
    assert layers["wpe"] == -1 and layers["h.1.fc.w"] == 1 and layers["lnf.b"] == 2
    del model
    params[:] = 1.0  # the view's base still holds the core model
    assert float(params.sum()) == params.size


def test_legacy_pytorch_bin_checkpoint_loads(tmp_path):
    hf, directory = make_gpt2(tmp_path, n_embd=12, n_head=2, n_layer=1, seed=8)
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "config.json").write_text((directory / "config.json").read_text())
    torch.save(hf.state_dict(), legacy / "pytorch_model.bin")
    tokens = np.array([[3, 5, 7, 11]], dtype=np.int32)
    with torch.no_grad():
        ref = hf(input_ids=torch.from_numpy(tokens.astype(np.int64))).logits
    assert_close(load_gpt2(str(legacy)).build_model().forward(tokens), to_numpy(ref), "logits from pytorch_model.bin")
    with pytest.raises(FileNotFoundError):
        load_gpt2(str(tmp_path / "missing"))


def test_logits_accessor_follows_the_last_forward():
    model = Model(ModelConfig(vocab_size=30, n_positions=8, n_layer=1, n_head=2, n_embd=8))
    tokens = np.arange(8, dtype=np.int32).reshape(2, 4)
    logits = model.forward(tokens)
    assert np.array_equal(model.logits(), logits)
    model.forward(tokens, targets=tokens)  # the LM head ran on counted rows only
    with pytest.raises(reviewgen.StateError, match="counted positions"):
        model.logits()
    classifier = Model(ModelConfig(vocab_size=30, n_positions=8, n_layer=1, n_head=2, n_embd=8,
                                   head="cls_bert", num_labels=3, causal=False, pre_norm=False,
                                   final_norm=False, embed_norm=True, activation="gelu_erf",
                                   tie_word_embeddings=False))
    loss = classifier.forward(tokens, targets=np.array([0, 2], dtype=np.int32))
    kept = classifier.logits()
    assert kept.shape == (2, 3)
    log_probs = kept - np.log(np.exp(kept).sum(axis=1, keepdims=True))
    assert_close(loss, -(log_probs[0, 0] + log_probs[1, 2]) / 2, "loss from the kept logits")
    classifier.backward()
    with pytest.raises(reviewgen.StateError):
        classifier.logits()


@pytest.mark.parametrize("policy", ["frozen", "untie"])
def test_optimizer_steps_leave_frozen_parameters_bit_identical(awkward, policy):
    hf, directory, tokens, mask = awkward
    model = load_gpt2(str(directory)).build_model()
    model.set_trainable(1, policy)
    before = model.parameters.copy()
    optimizer = reviewgen._core.AdamW(model.parameters, model.gradients, model.param_table(),
                                      lr=1e-2, weight_decay=0.1)
    labels = lm_labels(tokens, mask)
    for step in range(2):
        model.zero_grad()
        model.forward(tokens, mask, targets=labels, train=True, seed=step)
        model.backward()
        optimizer.step()
    after = model.parameters
    for entry in model.param_table():
        piece = slice(entry["offset"], entry["offset"] + entry["numel"])
        same = np.array_equal(before[piece].view(np.uint32), after[piece].view(np.uint32))
        assert same != entry["trainable"], f"{entry['name']}: trainable={entry['trainable']}"


def test_training_keeps_no_attention_probabilities():
    # (B, T) = (8, 32) and (4, 64) have the same rows; kept (B, NH, T, T)
    # probabilities would make the second pass's block twice as large there.
    config = dict(vocab_size=50, n_positions=64, n_layer=2, n_head=4, n_embd=16)
    tokens = np.random.default_rng(0).integers(0, 50, (8, 32)).astype(np.int32)
    sizes = []
    for shape in ((8, 32), (4, 64)):
        model = Model(ModelConfig(**config))
        batch = tokens.reshape(shape)
        model.forward(batch, targets=batch, train=True)
        model.backward()
        sizes.append(model.core.activation_floats)
    assert sizes[0] == sizes[1]


def test_frozen_blocks_keep_no_activations_and_the_block_grows_only_when_needed():
    config = dict(vocab_size=50, n_positions=32, n_layer=6, n_head=2, n_embd=16)
    tokens = np.random.default_rng(0).integers(0, 50, (4, 32)).astype(np.int32)
    sizes = {}
    for k in (1, 3, -1):
        model = Model(ModelConfig(**config))
        model.set_trainable(k, "frozen")
        model.forward(tokens, targets=tokens)
        sizes[k] = model.core.activation_floats
    assert sizes[1] < sizes[3] < sizes[-1]
    # the whole model, then a smaller batch: the block is reused as it is
    model.forward(tokens[:2, :8], targets=tokens[:2, :8])
    assert model.core.activation_floats == sizes[-1]
