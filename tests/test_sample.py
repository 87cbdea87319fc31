"""_core.sample: greedy, temperature, top-k, top-p with Hugging Face semantics,
seeded and reproducible."""
import numpy as np
import pytest

from reviewgen import _core


def reference_distribution(logits, temperature=1.0, top_k=0, top_p=1.0):
    """The exact distribution sample() draws from, written independently in
    float64: temperature, then the k most likely, then the smallest prefix of
    the most likely whose mass reaches top_p, renormalised."""
    z = np.asarray(logits, np.float64) / temperature
    order = np.lexsort((np.arange(z.size), -z))  # most likely first, lower id on ties
    order = order[np.isfinite(z[order])]
    if 0 < top_k < order.size:
        order = order[:top_k]
    p = np.exp(z[order] - z[order].max())
    p /= p.sum()
    if top_p < 1.0:
        before = np.concatenate([[0.0], np.cumsum(p)[:-1]])
        keep = before < top_p
        keep[0] = True
        order, p = order[keep], p[keep]
        p /= p.sum()
    out = np.zeros(z.size)
    out[order] = p
    return out


def hf_distribution(logits, temperature, top_k, top_p):
    """The same distribution through transformers' own logits warpers."""
    torch = pytest.importorskip("torch")
    lp = pytest.importorskip("transformers.generation.logits_process")
    scores = torch.tensor(np.asarray(logits, np.float32)[None, :], dtype=torch.float64)
    ids = torch.zeros((1, 1), dtype=torch.long)
    if temperature != 1.0:
        scores = lp.TemperatureLogitsWarper(temperature)(ids, scores)
    if top_k > 0:
        scores = lp.TopKLogitsWarper(top_k)(ids, scores)
    if top_p < 1.0:
        scores = lp.TopPLogitsWarper(top_p)(ids, scores)
    return torch.softmax(scores, dim=-1)[0].numpy()


def draw_counts(logits, draws, **kwargs):
    """Samples `draws` times from one row of logits (rows of a batch use
    independent draws) and counts each token."""
    batch = np.repeat(np.asarray(logits, np.float32)[None, :], draws, axis=0)
    tokens = _core.sample(batch, **kwargs)
    assert tokens.dtype == np.int32 and tokens.shape == (draws,)
    return np.bincount(tokens, minlength=batch.shape[1])


def chi_square_p_value(counts, expected_probs):
    scipy_stats = pytest.importorskip("scipy.stats")
    support = expected_probs > 0
    assert counts[~support].sum() == 0, "drew a token outside the kept set"
    n = counts.sum()
    expected = expected_probs[support] * n
    statistic = float(((counts[support] - expected) ** 2 / expected).sum())
    dof = int(support.sum()) - 1
    return 1.0 if dof == 0 else float(scipy_stats.chi2.sf(statistic, dof))


LOGITS = np.array([2.0, 1.5, 1.4, 0.3, 0.2, -0.1, -0.5, -1.0, -2.0, -3.5, 0.9, 1.1], np.float32)


@pytest.mark.parametrize("temperature,top_k,top_p", [
    (1.0, 0, 1.0),
    (0.7, 0, 1.0),
    (1.6, 0, 1.0),
    (1.0, 5, 1.0),
    (1.0, 0, 0.8),
    (0.8, 6, 0.9),
    (1.3, 4, 0.6),
])
def test_draws_follow_the_renormalised_distribution(temperature, top_k, top_p):
    expected = reference_distribution(LOGITS, temperature, top_k, top_p)
    np.testing.assert_allclose(expected, hf_distribution(LOGITS, temperature, top_k, top_p),
                               atol=1e-12)
    counts = draw_counts(LOGITS, 60000, temperature=temperature, top_k=top_k, top_p=top_p, seed=1234)
    assert chi_square_p_value(counts, expected) > 1e-3
    # and the frequencies are close in absolute terms too
    np.testing.assert_allclose(counts / counts.sum(), expected, atol=0.01)


def test_temperature_really_sharpens_and_flattens():
    cold = draw_counts(LOGITS, 20000, temperature=0.3, seed=5)
    hot = draw_counts(LOGITS, 20000, temperature=3.0, seed=5)
    assert cold[0] / 20000 > 0.7
    assert hot[0] / 20000 < 0.25


def test_greedy_is_argmax():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((7, 1000)).astype(np.float32)
    argmax = logits.argmax(axis=1)
    np.testing.assert_array_equal(_core.sample(logits, temperature=0.0), argmax)
    np.testing.assert_array_equal(_core.sample(logits, temperature=1.0, do_sample=False), argmax)
    np.testing.assert_array_equal(_core.sample(logits, temperature=1.0, top_k=1, seed=9), argmax)
    np.testing.assert_array_equal(_core.sample(logits, temperature=0.5, top_k=1, top_p=0.3), argmax)
    ties = np.array([[0.0, 3.0, 3.0, -1.0]], np.float32)
    assert _core.sample(ties, temperature=0.0)[0] == 1  # lowest id on ties, as argmax


def test_same_seed_and_step_repeat_exactly_and_others_differ():
    rng = np.random.default_rng(1)
    logits = rng.standard_normal((64, 300)).astype(np.float32)
    kwargs = dict(temperature=1.0, top_k=40, top_p=0.95)
    first = _core.sample(logits, seed=7, step=3, **kwargs)
    np.testing.assert_array_equal(first, _core.sample(logits, seed=7, step=3, **kwargs))
    assert (first != _core.sample(logits, seed=8, step=3, **kwargs)).any()
    assert (first != _core.sample(logits, seed=7, step=4, **kwargs)).any()
    # a row's draw depends on (seed, step, row) only, not on the other rows
    np.testing.assert_array_equal(_core.sample(logits[:5], seed=7, step=3, **kwargs), first[:5])


def test_top_p_keeps_the_minimal_nucleus():
    probs = np.array([0.05, 0.5, 0.15, 0.3])
    logits = np.log(probs).astype(np.float32)
    # sorted: 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)
    for top_p, nucleus in [(0.45, {1}), (0.75, {1, 3}), (0.85, {1, 3, 2}), (0.97, {0, 1, 2, 3})]:
        drawn = set(np.flatnonzero(draw_counts(logits, 5000, top_p=top_p, seed=11)))
        assert drawn == nucleus, (top_p, drawn)
        assert set(np.flatnonzero(reference_distribution(logits, top_p=top_p))) == nucleus
    # one token holding more than top_p alone is still sampled, never nothing
    peaked = np.array([10.0, 0.0, 0.0], np.float32)
    assert set(np.flatnonzero(draw_counts(peaked, 2000, top_p=0.01, seed=2))) == {0}


def test_top_p_on_a_large_flat_vocabulary():
    # a flat distribution forces the nucleus past the first few hundred tokens
    rng = np.random.default_rng(4)
    logits = (rng.standard_normal(5000) * 0.1).astype(np.float32)
    expected = reference_distribution(logits, top_p=0.9)
    counts = draw_counts(logits, 400, top_p=0.9, seed=3)
    assert counts[expected == 0].sum() == 0
    assert (expected > 0).sum() > 1000


def test_forbidden_tokens_are_never_drawn():
    logits = np.array([[1.0, -np.inf, 0.5, -np.inf, 0.0]], np.float32).repeat(3000, axis=0)
    for kwargs in (dict(), dict(top_k=3), dict(top_p=0.99), dict(temperature=5.0)):
        tokens = _core.sample(logits, seed=1, **kwargs)
        assert not np.isin(tokens, [1, 3]).any(), kwargs
        assert set(tokens) == {0, 2, 4}


def test_bad_inputs_are_clear_errors():
    good = np.zeros((2, 5), np.float32)
    with pytest.raises(_core.NonFiniteError):
        _core.sample(np.array([[0.0, np.nan]], np.float32))
    with pytest.raises(_core.NonFiniteError):
        _core.sample(np.array([[0.0, np.inf]], np.float32), temperature=0.0)
    with pytest.raises(_core.NonFiniteError):
        _core.sample(np.full((1, 4), -np.inf, np.float32))
    with pytest.raises(ValueError, match="top_p"):
        _core.sample(good, top_p=0.0)
    with pytest.raises(ValueError, match="top_p"):
        _core.sample(good, top_p=1.5)
    with pytest.raises(ValueError, match="top_k"):
        _core.sample(good, top_k=-1)
    with pytest.raises(ValueError, match="temperature"):
        _core.sample(good, temperature=-1.0)
    with pytest.raises(ValueError, match="temperature"):
        _core.sample(good, temperature=float("nan"))
    with pytest.raises(ValueError, match="dimension"):
        _core.sample(np.zeros(5, np.float32))
    with pytest.raises(ValueError, match="shape"):
        _core.sample(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match="step"):
        _core.sample(good, step=-1)
    with pytest.raises(TypeError, match="seed"):
        _core.sample(good, seed="x")
    assert _core.sample(np.zeros((0, 5), np.float32)).shape == (0,)
    # any Python int seeds (taken modulo 2^64)
    np.testing.assert_array_equal(_core.sample(good, seed=-1), _core.sample(good, seed=2**64 - 1))
    # non-contiguous input is accepted (copied)
    wide = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    np.testing.assert_array_equal(_core.sample(wide[:, ::2], temperature=0.0),
                                  wide[:, ::2].argmax(axis=1))
