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
        order = order[z[order] >= z[order[top_k - 1]]]  # ties with the k-th stay, as in HF
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


def test_top_k_keeps_ties_with_the_kth_token_as_hf():
    logits = np.array([3.0, 2.0, 2.0, 2.0, 1.0, 2.0], np.float32)
    expected = reference_distribution(logits, top_k=2)
    np.testing.assert_allclose(expected, hf_distribution(logits, 1.0, 2, 1.0), atol=1e-12)
    assert set(np.flatnonzero(expected)) == {0, 1, 2, 3, 5}
    counts = draw_counts(logits, 20000, top_k=2, seed=8)
    assert chi_square_p_value(counts, expected) > 1e-3


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
    # row_offset names the global row: splitting a batch changes nothing
    np.testing.assert_array_equal(_core.sample(logits[40:], seed=7, step=3, row_offset=40, **kwargs),
                                  first[40:])
    assert (_core.sample(logits[40:], seed=7, step=3, **kwargs) != first[40:]).any()


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
    with pytest.raises(ValueError, match="row_offset"):
        _core.sample(good, row_offset=-1)
    with pytest.raises(TypeError, match="seed"):
        _core.sample(good, seed="x")
    assert _core.sample(np.zeros((0, 5), np.float32)).shape == (0,)
    # any Python int seeds (taken modulo 2^64)
    np.testing.assert_array_equal(_core.sample(good, seed=-1), _core.sample(good, seed=2**64 - 1))
    # non-contiguous input is accepted (copied)
    wide = np.random.default_rng(0).standard_normal((4, 10)).astype(np.float32)
    np.testing.assert_array_equal(_core.sample(wide[:, ::2], temperature=0.0),
                                  wide[:, ::2].argmax(axis=1))


# ---------------------------------------------------------------------- generate()

from reviewgen.core.generation import Decoder, generate  # noqa: E402


class BigramModel:
    """A fake decoder: the next-token logits depend on the last token only,
    read from a (V, V) table. Checks the cache protocol as a real model would."""

    def __init__(self, table):
        self.table = np.asarray(table, np.float32)
        self.fed = []
        self.resets = []

    def reset_cache(self, batch_size, max_length):
        self.batch, self.capacity, self.length = batch_size, max_length, 0
        self.resets.append((batch_size, max_length))

    def forward_logits(self, tokens, attention_mask):
        assert tokens.dtype == np.int32 and tokens.shape == attention_mask.shape
        assert tokens.shape[0] == self.batch and self.length == 0
        assert (attention_mask[:, -1] == 1).all()  # left padding: the last column is real
        # the padding sits left of every real token
        assert (np.diff(attention_mask, axis=1) >= 0).all()
        self.length += tokens.shape[1]
        return self.table[tokens[:, -1]]

    def decode_step(self, tokens):
        assert tokens.dtype == np.int32 and tokens.shape == (self.batch,)
        assert self.length < self.capacity, "decode past the cache"
        self.length += 1
        self.fed.append(tokens.copy())
        return self.table[tokens]


def counting_table(vocab=10, peak=5.0):
    """Greedy decoding from token i goes to (i + 1) % vocab."""
    table = np.zeros((vocab, vocab), np.float32)
    table[np.arange(vocab), (np.arange(vocab) + 1) % vocab] = peak
    return table


def test_fake_models_follow_the_protocol():
    assert isinstance(BigramModel(counting_table()), Decoder)


def test_greedy_generation_stops_rows_at_eos():
    model = BigramModel(counting_table())
    out = generate(model, [[3], [5, 8], [1, 2, 6]], max_new_tokens=6, temperature=0.0, eos_id=7,
                   pad_id=0)
    assert out == [[4, 5, 6, 7], [9, 0, 1, 2, 3, 4], [7]]
    assert model.resets == [(3, 3 + 6)]
    # no decode step after the last generated token; finished rows are fed the pad id
    assert len(model.fed) == 5
    assert [int(fed[2]) for fed in model.fed] == [0, 0, 0, 0, 0]
    assert [int(fed[0]) for fed in model.fed] == [4, 5, 6, 0, 0]  # eos ends the row at once
    without_eos = generate(BigramModel(counting_table()), [[3], [6]], 6, temperature=0.0, eos_id=7,
                           include_eos=False)
    assert without_eos == [[4, 5, 6], []]


def test_generation_ends_early_when_every_row_is_done():
    model = BigramModel(counting_table())
    assert generate(model, [[5], [6]], 50, temperature=0.0, eos_id={7, 8}) == [[6, 7], [7]]
    assert len(model.fed) == 1
    assert generate(model, [[5]], 0) == [[]]


def test_min_new_tokens_holds_back_eos():
    out = generate(BigramModel(counting_table()), [[6]], 5, temperature=0.0, eos_id=7,
                   min_new_tokens=3)
    assert out[0][:3] != [7] and 7 not in out[0][:3] and len(out[0]) == 5


def test_sampled_generation_repeats_and_ignores_batching():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 50)).astype(np.float32) * 2
    prompts = [list(rng.integers(0, 50, size=rng.integers(1, 5))) for _ in range(12)]
    kwargs = dict(max_new_tokens=8, temperature=0.9, top_k=20, top_p=0.9, eos_id=0, seed=11)
    first = generate(BigramModel(table), prompts, **kwargs)
    assert first == generate(BigramModel(table), prompts, **kwargs)
    done = []
    assert first == generate(BigramModel(table), prompts, batch_size=5, progress=done.append, **kwargs)
    assert done == [5, 10, 12]
    assert first != generate(BigramModel(table), prompts, **dict(kwargs, seed=12))
    greedy = generate(BigramModel(table), prompts, **dict(kwargs, do_sample=False))
    assert greedy == generate(BigramModel(table), prompts, **dict(kwargs, top_k=1))


def test_first_generated_token_follows_the_model_distribution():
    logits = np.array([1.0, 0.2, -0.5, 0.7, 0.0, -1.2], np.float32)
    table = np.tile(logits, (6, 1))
    draws = 30000
    out = generate(BigramModel(table), [[2]] * draws, max_new_tokens=1, temperature=0.8, top_p=0.9,
                   seed=4)
    counts = np.bincount([row[0] for row in out], minlength=6)
    assert chi_square_p_value(counts, reference_distribution(logits, 0.8, 0, 0.9)) > 1e-3


def test_generate_rejects_bad_arguments():
    model = BigramModel(counting_table())
    with pytest.raises(ValueError, match="empty"):
        generate(model, [[1], []], 3)
    with pytest.raises(ValueError, match="negative"):
        generate(model, [[1, -2]], 3)
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate(model, [[1]], -1)
    with pytest.raises(ValueError, match="top_p"):
        generate(model, [[1]], 3, top_p=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        generate(model, [[1]], 3, batch_size=0)

    class WrongShape(BigramModel):
        def decode_step(self, tokens):
            return super().decode_step(tokens)[:, None, :]

    with pytest.raises(ValueError, match="decode_step"):
        generate(WrongShape(counting_table()), [[1]], 3, temperature=0.0)


def test_generate_drives_the_real_transformer_like_its_greedy_reference():
    models = pytest.importorskip("reviewgen.core.models")
    model = models.Model(models.ModelConfig(vocab_size=23, n_positions=32, n_layer=2, n_head=2, n_embd=8))
    model.parameters[:] = np.random.default_rng(3).standard_normal(model.parameters.size).astype(np.float32)
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9]]
    assert isinstance(model, Decoder)
    expected = model.greedy_generate(prompts, 6, pad_id=0, eos_id=3)
    assert generate(model, prompts, 6, temperature=0.0, eos_id=3, pad_id=0) == expected
    sampled = generate(model, prompts, 6, top_k=8, seed=5, eos_id=3)
    assert sampled == generate(model, prompts, 6, top_k=8, seed=5, eos_id=3, batch_size=1)
    assert all(0 <= t < 23 for row in sampled for t in row)
