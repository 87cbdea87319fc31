"""Ctrl-C inside a long core call: the core stops at its next layer boundary,
KeyboardInterrupt is raised, the interrupted pass cannot be back-propagated,
and the model works normally afterwards."""
import os
import signal
import threading
import time

import numpy as np
import pytest

from reviewgen import StateError
from reviewgen.core.models import Model, ModelConfig

pytestmark = pytest.mark.skipif(threading.current_thread() is not threading.main_thread(),
                                reason="signals reach the main thread only")


def _deep_model():
    config = ModelConfig(vocab_size=512, n_positions=256, n_layer=48, n_head=4, n_embd=256,
                         norm="layernorm", position="learned", activation="gelu_tanh", causal=True,
                         bias=True, head="lm")
    model = Model(config)
    model.set_trainable(-1, "train")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 512, size=(8, 256)).astype(np.int32)
    return model, tokens


def _sigint_after(seconds):
    timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    return timer


def test_ctrl_c_stops_a_long_forward_at_a_layer_boundary():
    model, tokens = _deep_model()
    started = time.perf_counter()
    loss = model.forward(tokens, targets=tokens)
    full = time.perf_counter() - started
    model.backward(1.0)
    assert np.isfinite(loss) and full > 0.2, "the model must be deep enough for the test to mean anything"

    timer = _sigint_after(0.05)
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        model.forward(tokens, targets=tokens)
        time.sleep(5)  # reached only if the core ignored the signal: Python raises here at the latest
    stopped = time.perf_counter() - started
    timer.join()
    assert stopped < 0.5 * full
    with pytest.raises(StateError):
        model.backward(1.0)  # the interrupted pass holds no loss

    model.zero_grad()
    assert model.forward(tokens, targets=tokens) == pytest.approx(loss, rel=1e-6)
    model.backward(1.0)
    assert np.abs(model.gradients).max() > 0


def test_ctrl_c_stops_a_long_backward():
    model, tokens = _deep_model()
    model.forward(tokens, targets=tokens)
    started = time.perf_counter()
    model.backward(1.0)
    full = time.perf_counter() - started
    model.forward(tokens, targets=tokens)
    timer = _sigint_after(0.05)
    started = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        model.backward(1.0)
        time.sleep(5)
    timer.join()
    assert time.perf_counter() - started < max(0.5 * full, 0.2)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the core's handler is gone
