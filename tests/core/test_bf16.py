"""bf16 mixed precision on the CPU (csrc/rg_gemm_bf16.c): the linear layers' products in bf16 with
fp32 sums, everything else fp32. The kernels themselves are checked against a double reference in
csrc/tests/test_gemm_bf16.c; here: who may use them, the model and a training run against fp32, and
the fallback (a warning and fp32) on CPUs without AVX512-BF16, forced with REVIEWGEN_CPU_ISA."""
import os
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

from reviewgen.core._native import _core
from reviewgen.core.training import Trainer
from test_training import batches_of, make_data, small_config, tiny_classifier

BF16 = pytest.mark.skipif(not _core.bf16_supported(), reason="this CPU has no AVX512-BF16 (the fallback is tested)")


def cpu_flags():
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    return set()


@pytest.mark.skipif(not os.path.exists("/proc/cpuinfo"), reason="no /proc/cpuinfo to read the flags from")
def test_bf16_support_is_what_the_cpu_says():
    wanted = {"avx512f", "avx512bw", "avx512vl", "avx512_bf16"}
    narrowed = os.environ.get("REVIEWGEN_CPU_ISA") in ("baseline", "x86-64-v3")
    assert _core.bf16_supported() == (wanted <= cpu_flags() and not narrowed)


def run_python(code, **env):
    full = dict(os.environ, **env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=full,
                          cwd=os.path.dirname(__file__), timeout=300)


def test_without_avx512_bf16_a_clear_error_and_fp32_training():
    done = run_python("""
        import warnings
        import numpy as np
        from reviewgen.core._native import _core
        from reviewgen.core.training import Trainer
        from test_training import batches_of, make_data, small_config, tiny_classifier
        assert not _core.bf16_supported()
        model = tiny_classifier()
        try:
            model.core.set_precision("bf16")
        except Exception as error:
            assert "AVX512-BF16" in str(error), error
        else:
            raise AssertionError("set_precision('bf16') was accepted")
        assert model.core.precision == "fp32"
        x, y = make_data(24)
        losses = []
        for bf16 in (False, True):
            model = tiny_classifier()
            with warnings.catch_warnings(record=True) as seen:
                warnings.simplefilter("always")
                result = Trainer(model, small_config(bf16=bf16, num_train_epochs=2), batches_of(x, y, [4] * 6),
                                 None, f"/tmp/rg_bf16_fallback_{bf16}_{__import__('os').getpid()}").train()
            said = [str(w.message) for w in seen if "bf16" in str(w.message)]
            assert bool(said) == bf16 and (not said or "runs in fp32" in said[0]), said
            losses.append([h["train_loss"] for h in result.history])
        assert losses[0] == losses[1], losses  # the fallback is the fp32 run, bit for bit
        print("ok")
        """, REVIEWGEN_CPU_ISA="x86-64-v3")
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_precision_names_are_checked():
    model = tiny_classifier()
    with pytest.raises(ValueError, match="'bf16' or 'fp32'"):
        model.core.set_precision("fp16")
    model.core.set_precision("fp32")
    assert model.core.precision == "fp32"


@BF16
def test_bf16_forward_and_backward_stay_close_to_fp32():
    model = tiny_classifier(n_embd=32, n_positions=16)
    x, y = make_data(16, width=12)  # 192 rows: bf16 from 128 (RG_GEMM_BF16_MIN_ROWS)
    batch = dict(tokens=x, attention_mask=np.ones_like(x), targets=y)
    model.core.zero_grad()
    loss32 = float(model.forward(**batch, train=True, seed=0))
    model.core.backward()
    grad32 = np.array(model.core.gradients)
    model.core.set_precision("bf16")
    assert model.core.precision == "bf16"
    model.core.zero_grad()
    loss16 = float(model.forward(**batch, train=True, seed=0))
    model.core.backward()
    grad16 = np.array(model.core.gradients)
    assert loss16 != loss32 and abs(loss16 - loss32) < 2e-2 * abs(loss32)   # rounded, and only a little
    cosine = grad32 @ grad16 / np.linalg.norm(grad32) / np.linalg.norm(grad16)
    assert cosine > 0.999, cosine
    model.forward(**batch, train=True, seed=0)
    model.core.set_precision("fp32")  # drops the pending pass: its activations were bf16's
    with pytest.raises(Exception, match="forward"):
        model.core.backward()
    assert float(model.forward(**batch, train=False, seed=0)) == pytest.approx(
        float(tiny_classifier(n_embd=32, n_positions=16).forward(**batch, train=False, seed=0)), abs=0)


@BF16
def test_a_bf16_training_run_tracks_fp32_and_restores_the_precision(tmp_path):
    x, y = make_data(96, width=8)
    histories = []
    for bf16 in (False, True):
        model = tiny_classifier(n_embd=32, n_positions=8)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no fallback warning on this CPU
            # with evaluation: its last forward leaves a pass pending when the precision is restored
            result = Trainer(model, small_config(bf16=bf16, learning_rate=0.01), batches_of(x, y, [16] * 6),
                             batches_of(x[:16], y[:16], [8, 8]), tmp_path / str(bf16)).train()
        assert model.core.precision == "fp32"  # set for the run only
        histories.append(np.array([h["train_loss"] for h in result.history]))
    assert not np.array_equal(histories[0], histories[1])
    np.testing.assert_allclose(histories[1], histories[0], rtol=3e-2)
