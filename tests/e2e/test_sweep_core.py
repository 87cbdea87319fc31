"""The sweep as one call into the C core (rg_sweep through run_sweep): its
DataFrame, a bounded number of Python/C crossings, a SIGKILL and restart
that ends with the same DataFrame, and Ctrl-C that marks nothing unfinished
as finished. On a tiny random DistilBERT."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from _reference import tiny_distilbert_dir  # noqa: E402

from reviewgen import _core  # noqa: E402
from reviewgen.core.config import TrainingConfig  # noqa: E402
from reviewgen.experiments import study as study_module  # noqa: E402
from reviewgen.experiments.study import SweepInterrupted, SweepStudy, run_sweep  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_study(model_dir, epochs=2, rows=16, values=(1e-4, 1e-2), batch=4):
    training = TrainingConfig.for_classifier(num_train_epochs=epochs, per_device_train_batch_size=batch,
                                             gradient_accumulation_steps=1, learning_rate=1e-3)
    return SweepStudy(task="classifier", model=str(model_dir), data="sample:imdb", parameter="learning_rate",
                      values=list(values), samples=2, rows_per_sample=rows, eval_fraction=0.25, max_length=24,
                      training=training)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_distilbert_dir(tmp_path_factory.mktemp("sweep") / "model")


def count_core_calls(function):
    calls = [0]

    def profile(frame, event, arg):
        if event == "c_call":
            owner = getattr(arg, "__self__", None)
            if owner is _core or type(owner).__module__ == "reviewgen._core":
                calls[0] += 1

    sys.setprofile(profile)
    try:
        return function(), calls[0]
    finally:
        sys.setprofile(None)


def test_sweep_frame_means_and_spreads(model_dir, tmp_path):
    results = run_sweep(make_study(model_dir), str(tmp_path / "s"), log=lambda _: None)
    frame = results.frame
    assert results.finished
    assert list(frame.columns[:6]) == ["value", "sample", "epoch", "step", "train_loss", "eval_loss"]
    assert {"eval_accuracy", "eval_macro_f1", "eval_near_accuracy", "eval_near_macro_f1"} <= set(frame.columns)
    assert len(frame) == 2 * 2 * 2  # values x samples x epochs
    assert sorted(frame["value"].unique()) == [1e-4, 1e-2]
    mean = results.curves["mean"]["eval_loss"]
    for (value, epoch), figure in mean.items():
        rows = frame[(frame["value"] == value) & (frame["epoch"] == epoch)]
        assert figure == pytest.approx(rows["eval_loss"].mean())
        assert results.curves["std"]["eval_loss"][(value, epoch)] == pytest.approx(np.std(rows["eval_loss"]))
    assert results.summary["mean"]["eval_loss"][1e-2] == pytest.approx(results["0.01"]["mean"]["eval_loss"])
    # every run starts from the same parameters: epoch 1 of both values sees the same data and start
    assert frame[frame["value"] == 1e-4]["eval_loss"].tolist() != frame[frame["value"] == 1e-2]["eval_loss"].tolist()
    saved = json.loads((tmp_path / "s" / "results.json").read_text())
    assert saved["finished"] and len(saved["epochs"]) == 8
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    figure = results.plot()
    assert len(figure.axes) == 2
    # a second call reads every run from the journal and gives the same frame
    again = run_sweep(make_study(model_dir), str(tmp_path / "s"), log=lambda _: None)
    pd.testing.assert_frame_equal(again.frame, frame)


def test_a_bf16_sweep_tracks_the_fp32_one(tmp_path):
    """training.bf16: every trial's products in bf16 (AVX512-BF16), or a warning and the fp32 sweep."""
    # batches of 16 reviews: products of at least 128 token rows, where bf16 starts (RG_GEMM_BF16_MIN_ROWS);
    # weights drawn wider than DistilBERT's 0.02, or the fresh head's near-uniform outputs hide the products'
    # rounding (the classifier's last block runs bf16 only in its q/k/v product: the rest has 16 rows)
    model_dir = tiny_distilbert_dir(tmp_path / "model", initializer_range=0.3)
    fp32 = run_sweep(make_study(model_dir, rows=32, batch=16), str(tmp_path / "fp32"), log=lambda _: None).frame
    study = make_study(model_dir, rows=32, batch=16)
    study.training.bf16 = True
    if _core.bf16_supported():
        bf16 = run_sweep(study, str(tmp_path / "bf16"), log=lambda _: None).frame
        assert not np.array_equal(bf16["eval_loss"], fp32["eval_loss"])
        np.testing.assert_allclose(bf16["eval_loss"], fp32["eval_loss"], rtol=2e-2)
    else:
        with pytest.warns(RuntimeWarning, match="AVX512-BF16"):
            bf16 = run_sweep(study, str(tmp_path / "bf16"), log=lambda _: None).frame
        pd.testing.assert_frame_equal(bf16, fp32)


def test_sweep_crosses_into_c_a_bounded_number_of_times(model_dir, tmp_path):
    counts = {}
    run_sweep(make_study(model_dir, rows=8), str(tmp_path / "warm"), log=lambda _: None)  # first-use work
    for rows in (16, 64):  # 3 or 12 updates per run
        logged = []
        results, calls = count_core_calls(lambda: run_sweep(make_study(model_dir, rows=rows), str(tmp_path / str(rows)),
                                                            log=logged.append))
        assert results.finished
        counts[rows] = (calls, len(logged))
    assert counts[16] == counts[64]
    assert counts[16][1] == 4  # one log line per (value, sample) run, from the core's on_run callback


KILLED_SWEEP = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_sweep_core import make_study
    from reviewgen.experiments.study import run_sweep
    finished = []

    def log(line):
        finished.append(line)
        if len(finished) == 2:
            os.kill(os.getpid(), signal.SIGKILL)  # after the second run's journal record

    run_sweep(make_study(sys.argv[1]), sys.argv[2], log=log)
""")


def test_sigkill_and_restart_give_the_same_dataframe(model_dir, tmp_path):
    expected = run_sweep(make_study(model_dir), str(tmp_path / "whole"), log=lambda _: None)
    out = str(tmp_path / "killed")
    script = KILLED_SWEEP.format(tests=os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.path.join(ROOT, "tests"),
                                                       os.environ.get("PYTHONPATH", "")]))
    killed = subprocess.run([sys.executable, "-c", script, str(model_dir), out], env=env, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert not os.path.exists(os.path.join(out, "results.json"))
    with open(os.path.join(out, study_module.JOURNAL_NAME), "ab") as journal:
        journal.write(b"RRSR\x40\x00\x00\x00torn")  # the start of a record a kill cut short
    logged = []
    restarted = run_sweep(make_study(model_dir), out, log=logged.append)
    assert restarted.finished
    assert logged[0].startswith("2 of 4 runs read from the journal") and len(logged) == 3
    pd.testing.assert_frame_equal(restarted.frame, expected.frame)
    assert dict(restarted) == dict(expected)


def test_ctrl_c_stops_the_sweep_and_marks_nothing_unfinished_as_finished(model_dir, tmp_path):
    epochs = 100  # a run of seconds
    study = make_study(model_dir, epochs=epochs, rows=32)
    timers = []
    started = time.perf_counter()

    def log(line):
        if not timers:  # the first run is done: Ctrl-C halfway through the second, whatever the machine's speed
            half_a_run = (time.perf_counter() - started) / 2
            timers.append(threading.Timer(half_a_run, os.kill, (os.getpid(), signal.SIGINT)))
            timers[0].start()

    try:
        with pytest.raises(KeyboardInterrupt) as raised:
            run_sweep(study, str(tmp_path / "c"), log=log)
    finally:
        for timer in timers:
            timer.cancel()
    assert isinstance(raised.value, SweepInterrupted)
    partial = raised.value.results
    assert not partial.finished
    # only finished runs, each with all its epochs; the interrupted one is not there (how many
    # finished before the signal depends on the machine's speed: at least one of four is cut)
    finished = len(partial.best)
    assert finished < 4 and len(partial.frame) == finished * epochs
    assert (partial.frame.groupby(["value", "sample"]).size() == epochs).all()
    assert sum(len(entry["runs"]) for entry in (partial[key] for key in partial)) == finished
    saved = json.loads((tmp_path / "c" / "results.json").read_text())
    assert saved["finished"] is False and len(saved["epochs"]) == finished * epochs


def test_generator_sweep_over_epochs(tiny_gpt2_dir, tmp_path):
    training = TrainingConfig.for_generator(per_device_train_batch_size=4, gradient_accumulation_steps=1,
                                            learning_rate=1e-3)
    study = SweepStudy(task="generator", model=str(tiny_gpt2_dir), data="sample:imdb", parameter="num_train_epochs",
                       values=[1, 2], samples=2, rows_per_sample=12, eval_fraction=0.25, max_length=32,
                       training=training)
    results = run_sweep(study, str(tmp_path / "g"), log=lambda _: None)
    assert results.finished and len(results.frame) == 2 * (1 + 2)
    assert "eval_perplexity" in results.frame.columns
    np.testing.assert_allclose(results.frame["eval_perplexity"], np.exp(results.frame["eval_loss"]), rtol=1e-9)
    # every run starts from the same parameters on the same data: with 2 updates per epoch and one
    # warmup update the schedules of 1 and 2 epochs agree on epoch 1 (lr 0, then the peak), so
    # epoch 1 ends the same for both values
    first = results.frame[results.frame["epoch"] == 1].set_index(["value", "sample"])
    assert (first["step"] == 2).all()
    assert first.loc[(1, 0), "eval_loss"] == first.loc[(2, 0), "eval_loss"]
    assert first.loc[(1, 1), "eval_loss"] == first.loc[(2, 1), "eval_loss"]
    assert first.loc[(1, 0), "eval_loss"] != first.loc[(1, 1), "eval_loss"]  # the samples differ
