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
    # the seed's recipe and rule: a fine-tuned classifier, a new round only while a label kept nothing
    cfg.classifier_recipe, cfg.keep_per_label, cfg.near_duplicate = "finetune", 0, 1.0
    cfg.opening_words = 0  # the seed's generation: the model starts each review itself
    lines = []
    summary = run_demo(cfg, str(tmp_path / "out"), log=lines.append)
    assert summary["generator"]["openings"] == {"words": 0, "rows": 0}
    accepted = pd.read_csv(tmp_path / "out" / "accepted.csv")
    rejected = pd.read_csv(tmp_path / "out" / "rejected.csv")
    assert (accepted["label"] == accepted["predicted"]).all()
    assert (rejected[rejected["reason"] == "mismatch"]["label"]
            != rejected[rejected["reason"] == "mismatch"]["predicted"]).all()
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
    # both fine-tuned models are kept as Hugging Face directories, their checkpoints removed
    for name in ("classifier", "generator"):
        assert (tmp_path / "out" / f"{name}_model" / "model.safetensors").is_file()
        assert not (tmp_path / "out" / f"{name}_checkpoints").exists()
    assert json.loads((tmp_path / "out" / "generator_model" / "reviewgen_conditioning.json").read_text())[
        "format"] == "review_of"


def test_cli_names_bad_input(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--classifier", str(tmp_path / "missing"),
                 "--classifier-train-rows", "8"]) == 2
    assert "missing" in capsys.readouterr().err


def test_demo_with_the_filter_recipe_writes_counts_jsonl_and_quality(tiny_gpt2_dir, tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("mauve")
    cfg = _config(tiny_gpt2_dir, _tiny_distilbert(tmp_path / "clf"))
    assert cfg.classifier_recipe == "lm_features" and cfg.review_only_loss == 1  # the defaults
    cfg.keep_per_label = 2
    cfg.max_new_tokens = 12
    cfg.repetition_penalty = 1.2
    cfg.no_repeat_ngram_size = 3
    cfg.near_duplicate = 0.9
    lines = []
    summary = run_demo(cfg, str(tmp_path / "out"), log=lines.append, plots=False)
    out = tmp_path / "out"
    accepted = pd.read_csv(out / "accepted.csv")
    rejected = pd.read_csv(out / "rejected.csv")
    counts = pd.read_csv(out / "filter_counts.csv", index_col=0)
    assert (accepted["label"] == accepted["predicted"]).all()
    assert (rejected["reason"].isin(["empty", "assistant", "copy", "duplicate", "mismatch", "threshold", "top_n", "surplus"])).all()
    mismatched = rejected[rejected["reason"] == "mismatch"]
    assert (mismatched["label"] != mismatched["predicted"]).all()
    for label in (1, 2, 4, 5):
        row = counts.loc[str(label)]
        assert row["kept"] == (accepted["label"] == label).sum() <= cfg.keep_per_label
        assert row["generated"] == ((accepted["label"] == label).sum() + (rejected["label"] == label).sum())
        if row["kept"] < cfg.keep_per_label:  # regenerated up to the cap
            assert row["generated"] == cfg.max_rounds * cfg.per_label
    records = [json.loads(line) for line in (out / "accepted.jsonl").read_text().splitlines()]
    assert len(records) == len(accepted)
    assert all({"wanted_label", "predicted_label", "probability", "text"} <= set(r) for r in records)
    if len(accepted):
        quality = pd.read_csv(out / "quality_accepted.csv", index_col=0)
        assert "judge_exact" in quality and "mauve" in quality and quality.loc["all", "n"] == len(accepted)
        assert set(summary["quality"]["met"]) >= {"accepted", "judge_exact", "mauve", "classifier_above_tfidf"}
        # the default judge on the bundled sample: the shipped one, fitted outside the sample
        assert summary["quality"]["judge_rows"] == 21_983
        assert "bundled judge" in summary["quality"]["judge_source"]
    assert "tfidf_baseline" in summary["classifier"]
    # the default filter: the generator's middle blocks + LR, the TF-IDF weight chosen on the training rows
    weights = summary["classifier"]["cv_accuracy_by_tfidf_weight"]
    assert str(summary["classifier"]["tfidf_weight"]) in weights and len(weights) == 11
    assert weights[str(summary["classifier"]["tfidf_weight"])] == max(weights.values())
    assert any("chosen by 5-fold cross-validation" in line for line in lines)
    assert summary["generator"]["format"] == "review_of"
    # every review starts with the first words of a real review of its rating from the generator part
    from reviewgen.text import data as D

    generator_part, _ = D.prepare_generator_and_classifier(D.load_sample("imdb"), "imdb10", seed=cfg.seed,
                                                           val_fraction=cfg.val_fraction)
    assert summary["generator"]["openings"] == {"words": 3, "rows": 160}
    real = generator_part.train
    for _, row in pd.concat([accepted, rejected]).iterrows():
        starts = {" ".join(t.split()[:3]) for t in real[real["label"] == row["label"]]["text"]}
        assert any(row["text"].startswith(s) for s in starts), row["text"]


def test_the_demo_picks_its_judge_before_anything_trains(tmp_path):
    pytest.importorskip("sklearn")
    from reviewgen.experiments.demo import _judge_spec
    from reviewgen.experiments.evaluation import Judge
    from reviewgen.text.data import DataError

    cfg = DemoConfig()
    assert cfg.judge_data == "auto" and cfg.data == "sample:imdb"
    judge = _judge_spec(cfg, [1, 2, 4, 5])
    assert isinstance(judge, Judge) and judge.info["rows_left_out_as_sample"] > 0
    assert _judge_spec(DemoConfig(judge_data="sample"), [1, 2, 4, 5]) == "sample"
    assert _judge_spec(DemoConfig(data="sample:sst5", scale="sst5"), [0, 1, 2, 3, 4]) == "sample"
    with pytest.raises(ValueError, match="knows labels \\[1, 2, 4, 5\\], not \\[0, 3\\]"):
        _judge_spec(DemoConfig(data="sample:sst5", scale="sst5", judge_data="bundled:imdb"), [0, 1, 2, 3, 4])
    with pytest.raises(DataError, match="no bundled judge 'sst5'"):
        _judge_spec(DemoConfig(judge_data="bundled:sst5"), [1, 2, 4, 5])
    with pytest.raises(FileNotFoundError, match="judge_data: no file .*absent.csv"):
        _judge_spec(DemoConfig(judge_data=str(tmp_path / "absent.csv")), [1, 2, 4, 5])


def test_the_sample_judge_leaves_out_what_the_models_saw():
    from reviewgen.experiments.demo import fit_unseen_judge

    rows = pd.DataFrame({"text": [f"great film {i}" for i in range(30)] + [f"awful film {i}" for i in range(30)],
                         "label": [5] * 30 + [1] * 30})
    judge, n = fit_unseen_judge(rows, seen=["great film 0", "awful film 1"], real=pd.Series(["great film 2"]))
    assert n == 57 and judge.info["rows"] == 57
    assert list(judge.predict(["a great film", "an awful film"])) == [5, 1]


def test_an_interrupted_training_stops_the_demo_before_any_result(tiny_gpt2_dir, tmp_path, monkeypatch):
    """Ctrl-C inside a training run: the Trainer raises TrainingInterrupted (a
    KeyboardInterrupt); the demo must stop there, not report a half-trained
    model nor write results."""
    from reviewgen.core import training

    original = training.Trainer.train

    def interrupted_train(self, *args, **kwargs):
        result = original(self, *args, **kwargs)
        result.interrupted, result.finished = True, False
        raise training.TrainingInterrupted(result)

    monkeypatch.setattr(training.Trainer, "train", interrupted_train)
    cfg = _config(tiny_gpt2_dir, _tiny_distilbert(tmp_path / "clf"))
    cfg.classifier_recipe, cfg.keep_per_label = "finetune", 0
    with pytest.raises(KeyboardInterrupt, match="training interrupted"):
        run_demo(cfg, str(tmp_path / "out"), log=lambda line: None)
    for name in ("accepted.csv", "rejected.csv", "summary.json"):
        assert not (tmp_path / "out" / name).exists()


def test_ctrl_c_while_the_demo_generates_keeps_the_reviews_so_far(tiny_gpt2_dir, tmp_path, monkeypatch, capsys):
    from reviewgen.experiments import runs
    from reviewgen.text import conditioning

    original, calls = conditioning.generate_reviews, []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(conditioning, "generate_reviews", interrupted)
    classifier = _tiny_distilbert(tmp_path / "clf")
    out = tmp_path / "out"
    code = main(["demo", "--out", str(out), "--generator", tiny_gpt2_dir, "--classifier", str(classifier),
                 "--classifier-train-rows", "16", "--classifier-eval-rows", "8", "--classifier-max-length", "32",
                 "--generator-max-length", "48", "--per-label", "3", "--max-rounds", "1", "--max-new-tokens", "6",
                 "--quality", "0"])
    assert code == 130
    assert "so far" in capsys.readouterr().err
    both = pd.concat([pd.read_csv(out / "accepted.csv"), pd.read_csv(out / "rejected.csv")])
    assert len(both) == 6 and sorted(set(both["label"])) == [1, 2]  # the labels finished before Ctrl-C
    assert not (out / "summary.json").exists()
    manifest = runs.read_run(str(out))
    assert manifest["kind"] == "demo" and manifest["finished"] is False and manifest["interrupted"] is True
    # the folder is now an unfinished run: a new demo there is refused without --overwrite
    assert main(["demo", "--out", str(out), "--generator", tiny_gpt2_dir, "--classifier", str(classifier)]) == 2
    assert "--overwrite" in capsys.readouterr().err


def test_the_default_generator_says_it_is_4_bit():
    from reviewgen.weights.hub import precision_note

    assert "4-bit" in precision_note("smollm2") and "HuggingFaceTB/SmolLM2-135M-Instruct" in precision_note("smollm2")
    assert "4-bit" in precision_note("some/model.Q4_1.gguf")
    assert precision_note("runs/generator/model") == ""
