"""The core objects under misuse (issue #11): oversized configs, calls from two
threads, a failed forward, configs whose integers are not integers, cached
decoding of a causal LM with token types, and Ctrl-C during a long prefill."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

from reviewgen import _core
from reviewgen.core.models import Model, ModelConfig


def _run_isolated(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Crashes must fail the test, not kill the test runner."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout)


def test_a_config_whose_sizes_overflow_is_refused_not_a_crash():
    result = _run_isolated("""
        from reviewgen import _core
        from reviewgen.core.models import Model, ModelConfig
        try:
            Model(ModelConfig(vocab_size=8, n_positions=8, n_layer=1, n_head=1, n_embd=4, head_dim=2**30, bias=False))
        except _core.TooLargeError as error:
            print("refused:", error)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: head_dim" in result.stdout
    for huge in (dict(n_inner=2**40), dict(vocab_size=2**31 - 1, n_embd=2**12, n_head=1)):
        with pytest.raises((_core.TooLargeError, ValueError)):  # beyond int32 or beyond the limits
            Model(ModelConfig(**{**dict(vocab_size=8, n_positions=8, n_layer=1, n_head=1, n_embd=4), **huge}))


@pytest.mark.parametrize("field, value", [("n_head", 8.5), ("n_head", "8"), ("n_head", True),
                                          ("n_layer", None), ("bias", 2), ("bias", "yes"),
                                          ("norm_eps", "1e-5"), ("causal", 0.5)])
def test_config_integers_must_be_integers(field, value):
    base = dict(vocab_size=8, n_positions=8, n_layer=1, n_head=2, n_embd=4)
    with pytest.raises(TypeError, match=field):
        ModelConfig(**{**base, field: value})
    assert ModelConfig(**{**base, "bias": 1, "n_head": np.int64(2)}).bias is True  # 0/1 flags from JSON stay fine


def test_getters_racing_a_forward_on_another_thread_never_crash():
    result = _run_isolated("""
        import threading
        import numpy as np
        from reviewgen import _core
        from reviewgen.core.models import Model, ModelConfig
        model = Model(ModelConfig(vocab_size=256, n_positions=128, n_layer=6, n_head=4, n_embd=128))
        tokens = np.random.default_rng(0).integers(0, 256, (4, 128)).astype(np.int32)
        model.forward(tokens)
        done = threading.Event()
        def forwards():
            for _ in range(10):
                model.forward(tokens[:, : np.random.randint(8, 128)])
            done.set()
        worker = threading.Thread(target=forwards)
        worker.start()
        refused = served = 0
        while not done.is_set():
            for call in (model.logits, model.param_table, lambda: model.core.trainable):
                try:
                    call()
                    served += 1
                except _core.StateError:
                    refused += 1
        worker.join()
        print("refused", refused, "served", served)
    """)
    assert result.returncode == 0, result.stderr[-2000:]
    refused = int(result.stdout.split()[1])
    assert refused > 0, "the getters were never refused: the race was not exercised"


def test_a_failed_forward_leaves_nothing_to_backpropagate():
    model = Model(ModelConfig(vocab_size=16, n_positions=8, n_layer=1, n_head=2, n_embd=8))
    model.set_trainable(-1, "train")
    good = np.arange(8, dtype=np.int32).reshape(1, 8)
    model.forward(good, targets=good)
    with pytest.raises(_core.LabelRangeError):
        model.forward(good + 100, targets=good)
    with pytest.raises(_core.StateError):
        model.backward(1.0)  # would have applied the earlier batch's gradients


def test_cached_decoding_of_a_causal_lm_with_token_types_matches_forward():
    config = ModelConfig(vocab_size=32, n_positions=16, n_layer=2, n_head=2, n_embd=16, type_vocab_size=2)
    model = Model(config)
    rng = np.random.default_rng(1)
    model.parameters[:] = rng.normal(0, 0.2, model.parameters.shape).astype(np.float32)
    tokens = rng.integers(0, 32, (2, 6)).astype(np.int32)
    full = model.forward(tokens)
    model.reset_cache(2, 8)
    cached = model.forward_logits(tokens[:, :5])
    np.testing.assert_allclose(cached, full[:, 4], atol=1e-5)
    step = model.decode_step(tokens[:, 5])
    np.testing.assert_allclose(step, full[:, 5], atol=1e-5)


@pytest.mark.skipif(threading.current_thread() is not threading.main_thread(), reason="signals reach the main thread")
def test_ctrl_c_stops_a_long_prefill():
    model = Model(ModelConfig(vocab_size=256, n_positions=512, n_layer=48, n_head=4, n_embd=256))
    prompt = np.random.default_rng(0).integers(0, 256, (8, 512)).astype(np.int32)
    model.reset_cache(8, 512)
    started = time.perf_counter()
    model.forward_logits(prompt)
    full = time.perf_counter() - started
    assert full > 0.3, "the prefill must be long enough for the test to mean anything"
    model.reset_cache(8, 512)
    timer = threading.Timer(0.05, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        model.forward_logits(prompt)
        time.sleep(5)
    timer.join()
    assert time.perf_counter() - started < 0.6 * full
    assert model.forward_logits(prompt).shape == (8, 256)  # the cache was left as it was
