"""Experiment runners: a classifier study with model selection on dev and
report on test, and the seed's sweep (one value varied, k disjoint samples,
averaged), on a tiny random DistilBERT."""
import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from _reference import LABELS, TEXTS, tiny_distilbert_dir as _tiny_distilbert  # noqa: E402

from reviewgen.core.config import TrainingConfig  # noqa: E402
from reviewgen.experiments.study import ClassifierStudy, SweepStudy, run_classifier_study, run_sweep  # noqa: E402


def _small_training():
    config = TrainingConfig.for_classifier()
    config.num_train_epochs = 2
    config.per_device_train_batch_size = 4
    config.gradient_accumulation_steps = 1
    config.learning_rate = 1e-3
    return config


def test_classifier_study_selects_on_dev_and_reports_on_test(tmp_path):
    model_dir = _tiny_distilbert(tmp_path / "model")
    frame = pd.DataFrame({"text": TEXTS * 2, "rating": [2 * label for label in LABELS] * 2})
    for name in ("train", "dev", "test"):
        frame.to_csv(tmp_path / f"{name}.csv", index=False)
    study = ClassifierStudy(model=str(model_dir), train=str(tmp_path / "train.csv"), dev=str(tmp_path / "dev.csv"),
                            test=str(tmp_path / "test.csv"), scale="imdb10", max_length=24,
                            balance_train=False, training=_small_training())
    summary = run_classifier_study(study, str(tmp_path / "out"), log=lambda _: None)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    # the pipeline drops the repeated texts
    assert saved["rows"] == {"train": len(TEXTS), "dev": len(TEXTS), "test": len(TEXTS)}
    assert len(saved["history"]) == 2
    best = min(saved["history"], key=lambda h: h["eval_loss"])
    assert saved["best_epoch"] == best["epoch"]
    assert 0.0 <= summary["test"]["accuracy"] <= summary["test"]["near_accuracy"] <= 1.0
    assert ClassifierStudy.load(str(tmp_path / "out" / "study.json")) == study


def test_sweep_averages_disjoint_samples(tmp_path):
    model_dir = _tiny_distilbert(tmp_path / "model")
    training = _small_training()
    training.num_train_epochs = 1
    study = SweepStudy(task="classifier", model=str(model_dir), data="sample:imdb", parameter="learning_rate",
                       values=[1e-4, 1e-2], samples=2, rows_per_sample=16, eval_fraction=0.25, max_length=24,
                       training=training)
    results = run_sweep(study, str(tmp_path / "sweep"), log=lambda _: None)
    assert sorted(results) == ["0.0001", "0.01"]
    for entry in results.values():
        assert len(entry["runs"]) == 2
        losses = [run["eval_loss"] for run in entry["runs"]]
        assert entry["mean"]["eval_loss"] == pytest.approx(np.mean(losses))
        assert entry["std"]["eval_loss"] == pytest.approx(np.std(losses))
    # the varied value changes the outcome; the samples are the same for both values
    assert results["0.0001"]["runs"][0]["eval_loss"] != results["0.01"]["runs"][0]["eval_loss"]
    saved = json.loads((tmp_path / "sweep" / "results.json").read_text())
    assert saved["study"]["values"] == [1e-4, 1e-2]


def test_sweep_rejects_unknown_parameter(tmp_path):
    with pytest.raises(ValueError, match="not a TrainingConfig field"):
        run_sweep(SweepStudy(parameter="learning_speed"), str(tmp_path))


def test_baseline_uses_the_study_split(tmp_path):
    pytest.importorskip("sklearn")
    from reviewgen.experiments.study import run_baseline, study_split

    frame = pd.DataFrame({"text": TEXTS * 3, "rating": [2 * label for label in LABELS] * 3})
    frame["text"] = [f"{text} take {i}" for i, text in enumerate(frame["text"])]
    frame.to_csv(tmp_path / "train.csv", index=False)
    frame.head(12).to_csv(tmp_path / "test.csv", index=False)
    study = ClassifierStudy(train=str(tmp_path / "train.csv"), dev="", test=str(tmp_path / "test.csv"),
                            scale="imdb10", balance_train=False, val_fraction=0.25)
    train, dev, test, _ = study_split(study)
    figures = run_baseline(study, str(tmp_path / "out"), log=lambda _: None)
    assert figures["rows"] == {"train": len(train), "test": len(test)} == {"train": 27, "test": 12}
    assert len(dev) == 9
    assert 0.0 <= figures["accuracy"] <= figures["near_accuracy"] <= 1.0
    assert json.loads((tmp_path / "out" / "baseline.json").read_text())["accuracy"] == figures["accuracy"]
