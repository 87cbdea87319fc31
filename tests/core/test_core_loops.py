"""The whole-run loops of the C core seen from Python (issue #9): generation,
training and the sweep each cross the Python/C boundary a number of times
that does not grow with the tokens or steps; a training run and a sweep
killed with SIGKILL and restarted end exactly as uninterrupted ones; Ctrl-C
never leaves an unfinished run looking finished."""
import os
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

from reviewgen import _core
from reviewgen.core import training
from reviewgen.core.config import TrainingConfig
from reviewgen.core.generation import generate
from reviewgen.core.models import Model, ModelConfig
from reviewgen.core.training import Trainer, TrainingInterrupted

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def count_core_calls(function):
    """(result, number of Python -> C calls into reviewgen._core) of function()."""
    calls = [0]

    def profile(frame, event, arg):
        if event == "c_call":
            owner = getattr(arg, "__self__", None)
            if owner is _core or type(owner).__module__ == "reviewgen._core":
                calls[0] += 1

    sys.setprofile(profile)
    try:
        result = function()
    finally:
        sys.setprofile(None)
    return result, calls[0]


def tiny_lm(seed=3, vocab=23, n_positions=64):
    model = Model(ModelConfig(vocab_size=vocab, n_positions=n_positions, n_layer=2, n_head=2, n_embd=8))
    model.parameters[:] = np.random.default_rng(seed).standard_normal(model.parameters.size).astype(np.float32)
    return model


class PlainDecoder:
    """The model behind the Decoder protocol only: generate() then runs its Python loop."""

    def __init__(self, model):
        self._model = model

    def reset_cache(self, batch_size, max_length):
        self._model.reset_cache(batch_size, max_length)

    def forward_logits(self, tokens, attention_mask):
        return self._model.forward_logits(tokens, attention_mask)

    def decode_step(self, tokens):
        return self._model.decode_step(tokens)


# ---------------------------------------------------------------------- generation

SETTINGS = [
    dict(temperature=0.0),
    dict(temperature=0.9, top_k=8, top_p=0.9, seed=5),
    dict(temperature=1.1, seed=7, repetition_penalty=1.3, no_repeat_ngram_size=2),
    dict(temperature=0.0, repetition_penalty=0.7, no_repeat_ngram_size=3, min_new_tokens=4),
    dict(temperature=0.8, seed=2, min_new_tokens=3, include_eos=False, batch_size=2),
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_the_core_loop_gives_the_python_loops_ids(settings):
    model = tiny_lm()
    prompts = [[1, 2, 3], [4], [5, 6, 7, 8, 9], [3, 3], [7]]
    settings = dict(settings)
    kwargs = dict(max_new_tokens=12, eos_id={3, 4}, pad_id=0)
    kwargs.update(settings)
    ours = generate(model, prompts, **kwargs)
    assert ours == generate(PlainDecoder(model), prompts, **kwargs)
    assert ours == generate(model.core, prompts, **kwargs)
    for prompt, row in zip(prompts, ours):
        cut = next((i for i, t in enumerate(row) if t in (3, 4)), None)
        assert cut is None or cut >= kwargs.get("min_new_tokens", 0)
        n = kwargs.get("no_repeat_ngram_size", 0)
        if n and kwargs.get("include_eos", True):
            history = prompt + row
            grams = [tuple(history[i:i + n]) for i in range(len(history) - n + 1)]
            assert len(grams) == len(set(grams))  # no n-gram of the row twice


def test_penalties_match_transformers_greedy(tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from reviewgen.weights.gpt2 import load_gpt2

    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(vocab_size=41, n_positions=48, n_embd=16, n_layer=2,
                                                              n_head=2)).eval()
    hf.save_pretrained(str(tmp_path), safe_serialization=True)
    model = load_gpt2(str(tmp_path)).build_model()
    prompt = [5, 9, 5, 12, 30, 5]
    for options in (dict(repetition_penalty=1.5), dict(no_repeat_ngram_size=2),
                    dict(repetition_penalty=1.2, no_repeat_ngram_size=3, min_new_tokens=6)):
        with torch.no_grad():
            out = hf.generate(torch.tensor([prompt]), attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
                              do_sample=False, max_new_tokens=16, eos_token_id=7, pad_token_id=7, **options)
        expected = out[0, len(prompt):].tolist()
        if 7 in expected:
            expected = expected[:expected.index(7) + 1]
        assert generate(model, [prompt], 16, do_sample=False, eos_id=7, **options) == [expected], options


def test_generation_crosses_into_c_a_bounded_number_of_times():
    model = tiny_lm()
    prompts = [[1, 2], [4], [5, 6, 7]] * 2
    batches = []
    counts = {}
    for new in (4, 40):
        batches.clear()
        _, calls = count_core_calls(lambda: generate(model, prompts, new, temperature=0.9, seed=1, batch_size=2,
                                                     progress=batches.append))
        counts[new] = (calls, len(batches))
    # one sampler check and one generate call; one callback per batch: the same for 4 or 40 new tokens
    assert counts[4] == counts[40] == (2, 3)
    _, python_loop = count_core_calls(lambda: generate(PlainDecoder(model), prompts, 40, temperature=0.9, seed=1))
    assert python_loop > 40  # the Python loop calls the core once per token


# ---------------------------------------------------------------------- training

def tiny_classifier(seed=0):
    config = ModelConfig(vocab_size=11, n_positions=8, n_layer=2, n_head=2, n_embd=8, head="cls_distilbert",
                         num_labels=3, causal=False)
    model = Model(config)
    rng = np.random.default_rng(seed)
    model.parameters[:] += (rng.standard_normal(model.parameters.size) * 0.1).astype(np.float32)
    return model


def data(rows, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 11, (rows, 6)).astype(np.int32)
    return x, (x[:, 0] % 3).astype(np.int32)


def batches_of(x, y, size):
    return [dict(tokens=x[i:i + size], attention_mask=np.ones_like(x[i:i + size]), targets=y[i:i + size])
            for i in range(0, len(x), size)]


def test_training_crosses_into_c_a_bounded_number_of_times(tmp_path):
    events = {}
    calls = {}
    for rows in (16, 160):  # 2 or 20 updates per epoch
        x, y = data(rows)
        seen = []

        def progress(event, seen=seen):
            seen.append(event["event"])

        cfg = TrainingConfig.for_classifier(num_train_epochs=2, gradient_accumulation_steps=2,
                                            per_device_train_batch_size=4, learning_rate=0.05)
        trainer = Trainer(tiny_classifier(), cfg, batches_of(x, y, 4), batches_of(x, y, 8), tmp_path / str(rows),
                          progress=progress, progress_every=1 << 20)
        result, calls[rows] = count_core_calls(trainer.train)
        assert result.finished and result.global_step == 2 * rows // 8
        events[rows] = (len(seen), trainer.core_trainer.callback_calls)
    # per epoch: the last update's step event, the eval, the checkpoint; nothing per step
    assert events[16] == events[160] == (6, 6)
    assert calls[16] == calls[160]


def test_ctrl_c_raises_and_marks_the_run_unfinished(tmp_path):
    x, y = data(64)
    cfg = TrainingConfig.for_classifier(num_train_epochs=400, gradient_accumulation_steps=1,
                                        per_device_train_batch_size=2, learning_rate=0.01)
    trainer = Trainer(tiny_classifier(), cfg, batches_of(x, y, 2), None, tmp_path / "c")
    timer = threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            trainer.train()
    finally:
        timer.cancel()
    assert isinstance(raised.value, TrainingInterrupted)
    result = raised.value.result
    assert result.interrupted and not result.finished and result.global_step < trainer.total_steps


KILLED_RUN = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_core_loops import killed_run_trainer
    kill_at = int(sys.argv[2])

    def progress(event):
        if event["event"] == "step" and event["step"] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no flush: as a power cut would

    trainer = killed_run_trainer(sys.argv[1], progress)
    trainer.train(resume=os.path.exists(trainer.checkpoint_path))
""")


def killed_run_trainer(directory, progress=None):
    x, y = data(40)
    cfg = TrainingConfig.for_classifier(num_train_epochs=3, gradient_accumulation_steps=2,
                                        per_device_train_batch_size=2, learning_rate=0.05, seed=4)
    from reviewgen.text.tokenization import EncodedBatch, EncodedBatches

    encoded = EncodedBatch(x, np.ones_like(x), np.zeros_like(x))
    train = EncodedBatches(encoded, y, 2, shuffle=True, seed=4, token_types=False)
    return Trainer(tiny_classifier(), cfg, train, batches_of(x, y, 8), directory, progress=progress,
                   save_steps=3)


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    reference = killed_run_trainer(str(tmp_path / "reference"))
    expected = reference.train()
    assert expected.finished
    directory = str(tmp_path / "killed")
    script = KILLED_RUN.format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    # killed in epoch 2 (10 updates per epoch), 2 updates after the save_steps checkpoint of update 15
    killed = subprocess.run([sys.executable, "-c", script, directory, "17"], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    resumed = killed_run_trainer(directory)
    state = resumed.load_checkpoint()
    assert state["global_step"] == 15 and state["epoch"] == 1  # mid-epoch 2
    result = resumed.train(resume=True)
    assert result.finished and result.global_step == reference.total_steps
    assert resumed.model.parameters.tobytes() == reference.model.parameters.tobytes()
    assert [h["eval_loss"] for h in result.history] == [h["eval_loss"] for h in expected.history]
