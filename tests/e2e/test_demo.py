"""The demo end to end on tiny random models: files written, every generated
review in exactly one of accepted.csv / rejected.csv, and regeneration only for
labels that had no accepted review yet."""
import json

import pandas as pd
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from _reference import tiny_distilbert_dir as _tiny_distilbert  # noqa: E402

from reviewgen.cli import main  # noqa: E402
from reviewgen.experiments.demo import DemoConfig, run_demo  # noqa: E402


def _config(tiny_gpt2_dir, classifier_dir):
    return DemoConfig(generator=tiny_gpt2_dir, classifier=str(classifier_dir), classifier_train_rows=16,
                      classifier_eval_rows=8, classifier_max_length=32, generator_train_rows=16,
                      generator_eval_rows=8, generator_max_length=48, per_label=3, max_rounds=3,
                      max_new_tokens=8)


def test_demo_writes_accepted_and_rejected_reviews(tiny_gpt2_dir, tmp_path):
    cfg = _config(tiny_gpt2_dir, _tiny_distilbert(tmp_path / "clf"))
    lines = []
    summary = run_demo(cfg, str(tmp_path / "out"), log=lines.append)
    accepted = pd.read_csv(tmp_path / "out" / "accepted.csv")
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert (accepted["label"] == accepted["predicted"]).all()
    assert (rejected["label"] != rejected["predicted"]).all()
    assert summary["generated"]["count"] == len(accepted) + len(rejected)
    assert sorted(set(accepted["label"]) | set(rejected["label"])) == [1, 2, 4, 5]  # label 3 is empty
    both = pd.concat([accepted, rejected])
    for label, rows in both.groupby("label"):
        rounds = rows["round"].max()
        assert len(rows) == rounds * cfg.per_label
        for earlier in range(1, rounds):  # a new round only when the earlier ones kept nothing
            assert not ((accepted["label"] == label) & (accepted["round"] == earlier)).any()
        if not (accepted["label"] == label).any():
            assert rounds == cfg.max_rounds
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["generated"]["accepted"] == len(accepted)
    assert (tmp_path / "out" / "demo.png").stat().st_size > 0
    assert DemoConfig.load(str(tmp_path / "out" / "demo_config.json")) == cfg
    assert any("perplexity after" in line for line in lines)


def test_cli_names_bad_input(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--classifier", str(tmp_path / "missing"),
                 "--classifier-train-rows", "8"]) == 2
    assert "missing" in capsys.readouterr().err
