"""Repetition penalty, no-repeat n-grams, min/max new tokens and stop tokens in
reviewgen.core.generation: against slow references, against transformers' logits
processors, and greedy decoding of a tiny GPT-2 against transformers.generate."""
import numpy as np
import pytest

from reviewgen.core.generation import _no_repeat_ngram, _repetition_penalty, generate


def apply_repetition_penalty(logits, histories, penalty):
    """The Python loop's per-row processor over a batch (the core applies the same rule)."""
    for row, history in enumerate(histories):
        if len(history) and penalty != 1.0:
            _repetition_penalty(logits[row], list(history), penalty)
    return logits


def banned_ngram_tokens(history, n):
    """The ids the Python loop's n-gram processor sets to -inf after `history`."""
    row = np.zeros(max(list(history) + [0]) + 2, np.float32)
    _no_repeat_ngram(row, list(history), n)
    return np.flatnonzero(np.isinf(row)).tolist()

from test_sample import BigramModel, counting_table


def slow_penalty(logits, histories, penalty):
    out = logits.copy()
    for row, history in enumerate(histories):
        for token in set(history):
            value = logits[row, token]
            out[row, token] = value * penalty if value < 0 else value / penalty
    return out


def slow_banned(history, n):
    """Every n-gram of the history; ban the tokens that complete one whose first n-1 match the tail."""
    if len(history) < n:
        return []
    tail = list(history[len(history) - (n - 1):]) if n > 1 else []
    return sorted({history[i + n - 1] for i in range(len(history) - n + 1)
                   if list(history[i:i + n - 1]) == tail})


def test_repetition_penalty_against_slow_reference():
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((3, 20)).astype(np.float32) * 3
    histories = [[1, 2, 2, 5], [], [19, 0, 7]]
    for penalty in (0.7, 1.0, 1.3, 2.0):
        expected = slow_penalty(logits, histories, penalty)
        got = apply_repetition_penalty(logits.copy(), histories, penalty)
        np.testing.assert_array_equal(got, expected)
    assert (apply_repetition_penalty(logits.copy(), histories, 1.3)[1] == logits[1]).all()


def test_banned_ngrams_against_slow_reference():
    rng = np.random.default_rng(1)
    for _ in range(200):
        history = list(rng.integers(0, 4, size=rng.integers(0, 15)))
        for n in (1, 2, 3, 4):
            assert banned_ngram_tokens(history, n) == slow_banned(history, n), (history, n)
    assert banned_ngram_tokens([1, 2, 3, 1, 2], 3) == [3]
    assert banned_ngram_tokens([1, 2, 3], 0) == []


def test_processors_match_transformers():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from transformers.generation.logits_process import (NoRepeatNGramLogitsProcessor,
                                                        RepetitionPenaltyLogitsProcessor)

    rng = np.random.default_rng(2)
    ids = rng.integers(0, 6, size=(4, 12))
    logits = rng.standard_normal((4, 30)).astype(np.float32) * 2
    for penalty in (1.2, 0.8):
        ref = RepetitionPenaltyLogitsProcessor(penalty)(torch.tensor(ids), torch.tensor(logits)).numpy()
        np.testing.assert_allclose(apply_repetition_penalty(logits.copy(), ids.tolist(), penalty), ref, rtol=1e-6)
    for n in (1, 2, 3):
        ref = NoRepeatNGramLogitsProcessor(n)(torch.tensor(ids), torch.tensor(logits)).numpy()
        for row in range(4):
            banned = np.flatnonzero(np.isinf(ref[row]))
            assert banned.tolist() == banned_ngram_tokens(ids[row].tolist(), n)


def slow_greedy(table, prompt, max_new, eos, min_new=0, penalty=1.0, ngram=0):
    """Greedy decoding of the bigram table, one processor after another, as transformers does."""
    history, out = list(prompt), []
    for step in range(max_new):
        logits = table[history[-1]].astype(np.float64).copy()
        for token in set(history):
            logits[token] = logits[token] * penalty if logits[token] < 0 else logits[token] / penalty
        if ngram:
            logits[slow_banned(history, ngram)] = -np.inf
        if step < min_new:
            logits[eos] = -np.inf
        token = int(np.argmax(logits))
        if token == eos:
            break
        out.append(token)
        history.append(token)
    return out


def test_generate_with_controls_matches_the_slow_loop():
    rng = np.random.default_rng(3)
    table = (rng.standard_normal((12, 12)) * 2).astype(np.float32)
    table[:, 3] += 1.5  # a popular token, so repeats happen without the controls
    prompts = [[1, 2], [5], [3, 3, 4]]
    for penalty, ngram, min_new in ((1.0, 0, 0), (1.5, 0, 0), (1.0, 2, 0), (1.3, 3, 4), (0.9, 1, 2)):
        got = generate(BigramModel(table), prompts, 10, do_sample=False, eos_id=0, include_eos=False,
                       repetition_penalty=penalty, no_repeat_ngram_size=ngram, min_new_tokens=min_new)
        for prompt, row in zip(prompts, got):
            assert row == slow_greedy(table, prompt, 10, 0, min_new, penalty, ngram), (penalty, ngram, min_new)


def test_no_repeat_ngram_holds_while_sampling():
    table = counting_table(vocab=6, peak=4.0)  # 0 -> 1 -> ... -> 5 -> 0 loops
    plain = generate(BigramModel(table), [[0]], 20, temperature=0.0)
    assert plain[0][:12] == [1, 2, 3, 4, 5, 0] * 2
    for seed in range(5):
        row = generate(BigramModel(table), [[0]], 30, temperature=1.0, seed=seed, no_repeat_ngram_size=3)[0]
        full = [0] + row
        grams = [tuple(full[i:i + 3]) for i in range(len(full) - 2)]
        assert len(grams) == len(set(grams))


def test_bad_control_values_are_refused():
    model = BigramModel(counting_table())
    for bad in (0, -1.0, float("nan"), "1.2", True):
        with pytest.raises(ValueError, match="repetition_penalty"):
            generate(model, [[1]], 3, repetition_penalty=bad)
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="no_repeat_ngram_size"):
            generate(model, [[1]], 3, no_repeat_ngram_size=bad)
    with pytest.raises(ValueError, match="min_new_tokens"):
        generate(model, [[1]], 3, min_new_tokens=4)


def test_tiny_gpt2_greedy_with_controls_matches_transformers(tiny_gpt2_dir):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from reviewgen.tasks.generator import Generator

    generator = Generator.from_pretrained(tiny_gpt2_dir, max_length=64)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).eval()
    prompt = generator.tokenizer.encode("Review of 5. The film")
    for penalty, ngram, min_new in ((1.4, 0, 0), (1.0, 2, 0), (1.2, 3, 10)):
        ours = generate(generator.model, [prompt], 16, do_sample=False, eos_id=generator.eos_id,
                        include_eos=False, repetition_penalty=penalty, no_repeat_ngram_size=ngram,
                        min_new_tokens=min_new)[0]
        ids = torch.tensor([prompt], dtype=torch.long)
        with torch.no_grad():
            out = reference.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=16,
                                     min_new_tokens=min_new, repetition_penalty=penalty,
                                     no_repeat_ngram_size=ngram, pad_token_id=generator.eos_id,
                                     eos_token_id=generator.eos_id)
        expected = [t for t in out[0, len(prompt):].tolist()]
        if generator.eos_id in expected:
            expected = expected[:expected.index(generator.eos_id)]
        assert ours == expected, (penalty, ngram, min_new)
