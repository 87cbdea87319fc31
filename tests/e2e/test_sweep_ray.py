"""Sweep trials on Ray (issue #15): run_sweep(executor="ray") on a local Ray
cluster started by the test (2 CPUs) gives the DataFrame of a local sweep
with the same seeds; a restart skips every finished trial; a trial that fails
is retried once, then reported (SweepTrialsFailed), never dropped."""
import os

import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")
ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'reviewgen[ray]')")

from _reference import tiny_distilbert_dir  # noqa: E402

from reviewgen.core.config import TrainingConfig  # noqa: E402
from reviewgen.experiments.study import SweepStudy, SweepTrialsFailed, run_sweep  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def make_study(model_dir):
    training = TrainingConfig.for_classifier(num_train_epochs=2, per_device_train_batch_size=4,
                                             gradient_accumulation_steps=1, learning_rate=1e-3)
    return SweepStudy(task="classifier", model=str(model_dir), data="sample:imdb", parameter="learning_rate",
                      values=[1e-4, 1e-2], samples=2, rows_per_sample=12, eval_fraction=0.25, max_length=24,
                      training=training)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_distilbert_dir(tmp_path_factory.mktemp("ray-sweep") / "model")


@pytest.fixture(scope="module")
def local_cluster():
    # the workers import reviewgen from this checkout, one OpenMP thread each
    # (as the local sweep below: the same reductions, the same bits)
    previous = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = ROOT + os.pathsep + (previous or "")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"OMP_NUM_THREADS": "1"}})
        yield
    finally:
        ray.shutdown()
        if previous is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous


@pytest.fixture(scope="module")
def local_frame(model_dir, tmp_path_factory):
    return run_sweep(make_study(model_dir), str(tmp_path_factory.mktemp("local")), log=lambda _: None).frame


def test_a_ray_sweep_equals_the_local_one_and_a_restart_skips_finished_trials(model_dir, local_cluster,
                                                                            local_frame, tmp_path):
    out = str(tmp_path / "ray")
    results = run_sweep(make_study(model_dir), out, log=lambda _: None, executor="ray",
                        resources={"num_cpus": 1})
    assert results.finished and len(results.frame) == 2 * 2 * 2
    pd.testing.assert_frame_equal(results.frame, local_frame, check_exact=False, rtol=1e-6)
    logged = []
    again = run_sweep(make_study(model_dir), out, log=logged.append, executor="ray")
    assert "4 of 4 runs read from the journal" in logged
    assert "0 trial(s) to Ray" in " ".join(logged)
    pd.testing.assert_frame_equal(again.frame, results.frame)


def test_a_failed_trial_is_retried_once_then_reported(model_dir, local_cluster, local_frame, tmp_path,
                                                      monkeypatch):
    out = str(tmp_path / "faults")
    logged = []
    # trial (value 0, sample 1) fails once and passes on its retry; (value 1, sample 0) fails twice
    monkeypatch.setenv("REVIEWGEN_SWEEP_FAULTS", "0,1,1;1,0,2")
    with pytest.raises(SweepTrialsFailed) as raised:
        run_sweep(make_study(model_dir), out, log=logged.append, executor="ray")
    assert [(value, sample) for value, sample, _ in raised.value.failures] == [(1e-2, 0)]
    assert "injected fault" in raised.value.failures[0][2] and "on try 2" in raised.value.failures[0][2]
    assert sum("retrying once" in line for line in logged) == 2  # each faulty trial retried once
    partial = raised.value.results
    assert not partial.finished and len(partial.frame) == 3 * 2
    # the restart runs only the reported trial, and the sweep ends as a local one
    monkeypatch.delenv("REVIEWGEN_SWEEP_FAULTS")
    logged.clear()
    results = run_sweep(make_study(model_dir), out, log=logged.append, executor="ray")
    assert "3 of 4 runs read from the journal" in logged and "1 trial(s) to Ray" in " ".join(logged)
    pd.testing.assert_frame_equal(results.frame, local_frame, check_exact=False, rtol=1e-6)
