"""Property-based tests (hypothesis) of the public bindings, with a bounded budget.

Every case either succeeds with a result that satisfies the property or raises a
clean Python exception; a crash (segfault, abort) takes the test run down with it.
Budget: derandomized (the same cases every run, no example database), CASES
examples per test below; 8 tests, 930 cases in all, about 10 s on one core.

  * ModelConfig/Model on random valid small shapes (all norms, positions,
    activations, heads, GQA, bias, tying, token types): logits are finite and of
    the right shape, the loss equals the cross-entropy recomputed from the logits,
    backward leaves finite gradients;
  * ModelConfig/Model on wild integers (0, -1, 2**31, 2**63 - 1, ...): a clean
    error or a model, never a crash;
  * forward on tokens, masks and targets of random shapes and values;
  * the sampler on random logits and settings: ids in range, greedy = argmax;
  * classification metrics on random labels: counts add up, figures in [0, 1];
  * perplexity on random nll/mask arrays (NaN, inf, negative weights included);
  * AdamW on random hyperparameters and gradients: finite parameters, or a clean refusal
    (a NaN gradient leaves the parameters untouched).
"""
from __future__ import annotations

import math

import numpy as np
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from reviewgen import _core  # noqa: E402
from reviewgen.core import metrics  # noqa: E402
from reviewgen.core.models import ACTIVATIONS, HEADS, NORMS, POSITIONS, Model, ModelConfig  # noqa: E402

CLEAN = (ValueError, TypeError, KeyError, OverflowError, _core.CoreError)


def budget(cases):
    return settings(max_examples=cases, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def small_configs(draw):
    n_head = draw(st.integers(1, 3))
    n_kv_head = draw(st.sampled_from([d for d in range(1, n_head + 1) if n_head % d == 0]))
    head_dim = draw(st.integers(1, 3)) * 2
    head = draw(st.sampled_from(HEADS))
    return ModelConfig(
        vocab_size=draw(st.integers(1, 24)), n_positions=draw(st.integers(1, 9)), n_layer=draw(st.integers(1, 2)),
        n_head=n_head, n_kv_head=n_kv_head, head_dim=head_dim, n_embd=draw(st.integers(1, 10)),
        n_inner=draw(st.integers(1, 12)), type_vocab_size=draw(st.integers(0, 3)), norm=draw(st.sampled_from(NORMS)),
        pre_norm=draw(st.booleans()), embed_norm=draw(st.booleans()), final_norm=draw(st.booleans()),
        position=draw(st.sampled_from(POSITIONS)), activation=draw(st.sampled_from(ACTIVATIONS)),
        causal=draw(st.booleans()), bias=draw(st.booleans()), head=head,
        tie_word_embeddings=draw(st.booleans()), num_labels=draw(st.integers(1, 4)) if head != "lm" else 0)


def _randomise(model, rng):
    for entry in model.param_table():
        model.set_param(entry["name"], (rng.standard_normal(entry["shape"]) * 0.3).astype(np.float32))


def _log_softmax(x):
    x = x.astype(np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


@budget(120)
@given(config=small_configs(), batch=st.integers(1, 3), seed=st.integers(0, 2**32 - 1), data=st.data())
def test_valid_small_models_compute_consistent_logits_losses_and_gradients(config, batch, seed, data):
    try:
        model = Model(config)
    except CLEAN:
        return  # e.g. a shape the core does not support: refused cleanly
    rng = np.random.default_rng(seed)
    _randomise(model, rng)
    length = data.draw(st.integers(1, config.n_positions))
    tokens = rng.integers(0, config.vocab_size, (batch, length))
    types = rng.integers(0, config.type_vocab_size, (batch, length)) if config.type_vocab_size else None
    logits = np.array(model.forward(tokens, token_types=types))
    if config.head == "lm":
        assert logits.shape == (batch, length, config.vocab_size)
        targets = rng.integers(0, config.vocab_size, (batch, length))
        targets[rng.random((batch, length)) < 0.2] = -100
        picked = [(b, t) for b in range(batch) for t in range(length - 1) if targets[b, t + 1] != -100]
        logp = _log_softmax(logits)
        expected = -np.mean([logp[b, t, targets[b, t + 1]] for b, t in picked]) if picked else None
    else:
        assert logits.shape == (batch, config.num_labels)
        targets = rng.integers(0, config.num_labels, (batch,))
        expected = -np.mean(_log_softmax(logits)[np.arange(batch), targets])
    assert np.all(np.isfinite(logits))
    loss = model.forward(tokens, targets=targets, token_types=types)
    model.zero_grad()
    model.backward()
    gradients = np.asarray(model._core.gradients)
    assert np.all(np.isfinite(gradients))
    if expected is None:  # no target counted: the core's convention is a loss of 0 and no gradient
        assert loss == 0.0 and not np.any(gradients)
    else:
        assert math.isclose(loss, expected, rel_tol=1e-4, abs_tol=1e-4)


# Each value is tiny, or beyond the core's limit on any one dimension (2**24), or negative.
WILD = st.one_of(st.integers(-2, 6), st.sampled_from([2**24 + 1, 2**31 - 1, 2**31, 2**32, 2**62, 2**63 - 1,
                                                      -(2**31), -(2**63)]))


@budget(150)
@given(values=st.fixed_dictionaries({name: WILD for name in ("vocab_size", "n_positions", "n_layer", "n_head",
                                                              "n_kv_head", "head_dim", "n_embd", "n_inner",
                                                              "type_vocab_size", "num_labels")}),
       head=st.sampled_from(HEADS), position=st.sampled_from(POSITIONS),
       eps=st.sampled_from([1e-5, 0.0, -1.0, float("nan"), float("inf")]))
def test_wild_integer_configs_are_refused_cleanly_or_work(values, head, position, eps):
    big = sum(v for v in values.values() if v > 64)
    try:
        config = ModelConfig(**values, head=head, position=position, norm_eps=eps)
        if big == 0:
            model = Model(config)
        else:  # sizes the core must refuse before allocating; allocation of a huge one would be the bug
            with pytest.raises(CLEAN):
                model = Model(config)
            return
    except CLEAN:
        return
    tokens = np.zeros((1, 1), np.int32)
    try:
        out = model.forward(tokens)
    except CLEAN:
        return
    assert np.asarray(out).ndim in (2, 3)


@budget(120)
@given(tokens=hnp.arrays(st.sampled_from([np.int64, np.int32, np.int8, np.float32, np.bool_]),
                         hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
                         elements=None),
       mask_kind=st.sampled_from(["none", "ones", "random", "wrong-shape"]),
       targets_kind=st.sampled_from(["none", "random", "wrong-shape", "out-of-range"]),
       seed=st.integers(0, 1000))
def test_forward_on_arbitrary_inputs_is_a_result_or_a_clean_error(tokens, mask_kind, targets_kind, seed):
    model = _FORWARD_MODEL
    rng = np.random.default_rng(seed)
    shape = np.shape(tokens)
    mask = {"none": None, "ones": np.ones(shape, np.int32), "random": rng.integers(0, 2, shape),
            "wrong-shape": np.ones((1, 7), np.int32)}[mask_kind]
    targets = {"none": None, "random": rng.integers(-100, 20, shape) if shape else None,
               "wrong-shape": np.zeros((2, 2), np.int32), "out-of-range": np.full(shape, 10**6)}[targets_kind]
    try:
        out = model.forward(tokens, attention_mask=mask, targets=targets)
    except CLEAN:
        return
    if targets is None:
        assert np.asarray(out).shape == tuple(shape) + (model.config.vocab_size,)
    else:
        assert math.isfinite(out)


_FORWARD_MODEL = Model(ModelConfig(vocab_size=20, n_positions=5, n_layer=1, n_head=2, n_embd=4))


@budget(120)
@given(logits=hnp.arrays(np.float32, st.tuples(st.integers(1, 4), st.integers(1, 12)),
                         elements=st.floats(-1e4, 1e4, width=32) | st.sampled_from([float("nan"), float("inf"),
                                                                                    -float("inf")])),
       temperature=st.sampled_from([0.0, 0.5, 1.0, 3.0, -1.0, float("nan")]),
       top_k=st.integers(-1, 14), top_p=st.sampled_from([0.0, 0.3, 1.0, 1.5, float("nan")]),
       do_sample=st.booleans(), seed=st.integers(0, 2**64 - 1), step=st.integers(0, 5))
def test_sampler_returns_in_range_ids_or_a_clean_error(logits, temperature, top_k, top_p, do_sample, seed, step):
    try:
        ids = _core.sample(logits, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed, step=step,
                           do_sample=do_sample)
    except CLEAN:
        return
    ids = np.asarray(ids)
    assert ids.shape == (logits.shape[0],) and ids.dtype == np.int32
    assert np.all((0 <= ids) & (ids < logits.shape[1]))
    greedy = not do_sample or temperature == 0 or top_k == 1
    if greedy and np.all(np.isfinite(logits)):
        assert np.all(logits[np.arange(len(ids)), ids] == logits.max(axis=1))


LABELS = st.lists(st.integers(-3, 6) | st.sampled_from([2**31, -(2**31) - 1]), min_size=0, max_size=30)


@budget(120)
@given(y_true=LABELS, data=st.data(), near=st.booleans(),
       labels=st.none() | st.lists(st.integers(-3, 6), min_size=0, max_size=8))
def test_classification_metrics_add_up_or_fail_cleanly(y_true, data, near, labels):
    y_pred = data.draw(st.lists(st.integers(-3, 6), min_size=len(y_true), max_size=len(y_true))
                       | st.lists(st.integers(-3, 6), max_size=5))
    try:
        report = metrics.classification_report(y_true, y_pred, labels=labels, near=near)
        confusion = metrics.confusion_matrix(y_true, y_pred, labels=labels, near=near)
    except CLEAN:
        return
    assert confusion.sum() == len(y_true) == int(np.sum(report.support))
    assert np.array_equal(confusion, report.confusion)
    for figure in (report.precision, report.recall, report.f1):
        assert np.all((0 <= figure) & (figure <= 1))
    assert 0 <= report.accuracy <= 1
    if not near:
        assert math.isclose(report.accuracy, np.trace(confusion) / len(y_true))


@budget(100)
@given(nll=hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=2, max_side=6),
                      elements=st.floats(-5, 80) | st.sampled_from([float("nan"), float("inf"), 1e39])),
       mask_kind=st.sampled_from(["none", "bool", "weights", "negative", "wrong-shape"]), seed=st.integers(0, 99))
def test_perplexity_is_finite_and_positive_or_a_clean_error(nll, mask_kind, seed):
    rng = np.random.default_rng(seed)
    mask = {"none": None, "bool": rng.random(nll.shape) < 0.7, "weights": rng.random(nll.shape) * 2,
            "negative": -rng.random(nll.shape), "wrong-shape": np.ones(nll.size + 1)}[mask_kind]
    try:
        value = metrics.perplexity(nll, mask)
    except CLEAN:
        return
    assert math.isfinite(value) and value >= 0  # exp underflows to 0 for a very negative mean


@budget(100)
@given(sum_nll=st.floats(allow_nan=True, allow_infinity=True), n_tokens=st.floats(allow_nan=True, allow_infinity=True))
def test_perplexity_from_sum_is_finite_and_positive_or_a_clean_error(sum_nll, n_tokens):
    try:
        value = metrics.perplexity_from_sum(sum_nll, n_tokens)
    except CLEAN:
        return
    assert math.isfinite(value) and value >= 0  # exp underflows to 0 for a very negative mean


@budget(100)
@given(n=st.integers(0, 12), lr=st.sampled_from([0.0, 1e-3, 0.5, -1.0, float("nan"), float("inf")]),
       beta1=st.sampled_from([0.0, 0.9, 1.0, -0.1, float("nan")]), beta2=st.sampled_from([0.0, 0.999, 1.0, 2.0]),
       eps=st.sampled_from([1e-8, 0.0, -1e-8, float("nan")]), weight_decay=st.sampled_from([0.0, 0.01, -1.0]),
       max_grad_norm=st.sampled_from([0.0, 1.0, -1.0, float("inf")]),
       schedule=st.sampled_from(["constant", "linear", "cosine", "nope"]), total_steps=st.integers(-1, 5),
       warmup_ratio=st.sampled_from([0.0, 0.5, 1.0, 1.5, float("nan")]), steps=st.integers(1, 4),
       seed=st.integers(0, 99), bad_gradient=st.booleans())
def test_adamw_steps_keep_parameters_finite_or_refuse_cleanly(n, lr, beta1, beta2, eps, weight_decay, max_grad_norm,
                                                              schedule, total_steps, warmup_ratio, steps, seed,
                                                              bad_gradient):
    rng = np.random.default_rng(seed)
    parameters = rng.standard_normal(n).astype(np.float32)
    gradients = np.zeros(n, np.float32)
    table = [{"offset": 0, "numel": n, "decay": True, "trainable": True}] if n else []
    try:
        optimizer = _core.AdamW(parameters, gradients, table, lr=lr, betas=(beta1, beta2), eps=eps,
                                weight_decay=weight_decay, max_grad_norm=max_grad_norm, warmup_ratio=warmup_ratio,
                                total_steps=total_steps, schedule=schedule)
    except CLEAN:
        return
    for _ in range(steps):
        gradients[:] = rng.standard_normal(n) * rng.choice([0.0, 1e-3, 1e3])
        if bad_gradient and n:
            gradients[rng.integers(0, n)] = np.nan
            before = parameters.copy()
            with pytest.raises(_core.NonFiniteError):
                optimizer.step()
            assert np.array_equal(parameters, before)  # untouched
            return
        try:
            info = optimizer.step()
        except CLEAN:
            return
        assert math.isfinite(info["lr"]) and math.isfinite(info["grad_norm"])
        assert np.all(np.isfinite(parameters))
