"""The user's workflow through the CLI, from a clean folder, on tiny random models:
prepare -> train classifier -> train generator -> generate -> evaluate -> report,
on a CSV with its own column names and a custom scale; both saved model
directories load in transformers; and every refusal of issue #10."""
import json
import os

import numpy as np
import pandas as pd
import pytest

from reviewgen.core._native import _core

pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from _reference import tiny_distilbert_dir as _tiny_distilbert  # noqa: E402

from reviewgen.cli import main  # noqa: E402
from reviewgen.experiments import runs  # noqa: E402

SCALE = "1-3:1,4-7:2,8-10:3"  # three labels out of 1-10 stars
WORDS = {1: ["awful", "boring", "worst", "bad", "hated"], 2: ["fine", "okay", "average", "not bad", "so so"],
         3: ["great", "loved", "best", "fun", "really good"]}


@pytest.fixture
def reviews_csv(tmp_path):
    """90 distinct reviews, columns "body" and "stars", 30 per label of SCALE."""
    rng = np.random.default_rng(0)
    per_stars = {1: 10, 2: 10, 3: 10, 4: 8, 5: 8, 6: 7, 7: 7, 8: 10, 9: 10, 10: 10}
    rows = []
    for stars, count in per_stars.items():
        label = 1 if stars <= 3 else 2 if stars <= 7 else 3
        for i in range(count):
            words = rng.choice(WORDS[label], size=4)
            rows.append({"stars": stars, "body": f"the movie number {stars} {i} was " + " , ".join(words) + " ."})
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=0)
    path = tmp_path / "my_reviews.csv"
    frame.to_csv(path, index=False)
    return path


@pytest.fixture
def classifier_base(tmp_path):
    return str(_tiny_distilbert(tmp_path / "tiny-distilbert"))


def _run(argv, capsys):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_the_whole_chain_through_the_cli(tmp_path, reviews_csv, classifier_base, tiny_gpt2_dir, capsys):
    root = tmp_path / "runs"
    data, clf, gen, out, ev, quality = (root / n for n in ("data", "classifier", "generator", "generated",
                                                           "evaluation", "quality"))
    columns = ["--text-column", "body", "--rating-column", "stars", "--scale", SCALE]
    code, output, err = _run(["prepare", reviews_csv, *columns, "--out", data, "--progress", "lines"], capsys)
    assert code == 0, err
    train = pd.read_csv(data / "train.csv")
    assert sorted(train["label"].unique()) == [1, 2, 3]

    code, output, err = _run(["train", "classifier", data, "--model", classifier_base, "--max-length", 32,
                              "--epochs", 2, "--batch-size", 4, "--gradient-accumulation-steps", 1,
                              "--learning-rate", 1e-3, "--out", clf, "--progress", "lines"], capsys)
    assert code == 0, err
    assert "classifier training: " in output and "ETA" in output  # plain progress lines, not a tty
    history = pd.read_csv(clf / runs.HISTORY)
    assert list(history["epoch"]) == [1, 2] and "eval_loss" in history
    metrics = json.loads((clf / runs.METRICS).read_text())
    assert {"accuracy", "near_accuracy", "macro_f1", "near_macro_f1", "confusion_matrix"} <= set(metrics)
    per_class = pd.read_csv(clf / runs.PER_CLASS)
    assert set(per_class["kind"]) == {"exact", "near"} and sorted(set(per_class["label"])) == [1, 2, 3]
    assert not (clf / runs.CHECKPOINTS_DIR).exists()  # removed once the model is saved
    assert runs.read_run(clf)["finished"] is True

    code, output, err = _run(["train", "generator", data, "--model", tiny_gpt2_dir, "--max-length", 48,
                              "--epochs", 1, "--batch-size", 8, "--max-val-rows", 9, "--keep-checkpoints",
                              "--out", gen, "--progress", "lines"], capsys)
    assert code == 0, err
    gen_metrics = json.loads((gen / runs.METRICS).read_text())
    assert gen_metrics["format"] == "review_of" and gen_metrics["after"]["perplexity"] > 0
    assert (gen / runs.CHECKPOINTS_DIR / "checkpoint.rgck").exists()  # --keep-checkpoints

    code, output, err = _run(["generate", "--generator", gen / "model", "--classifier", clf / "model",
                              "--per-label", 4, "--keep-per-label", 2, "--max-rounds", 2, "--max-new-tokens", 10,
                              "--filter-rule", "any", "--filter-threshold", 0, "--min-words", 0,
                              "--out", out, "--progress", "lines"], capsys)
    assert code == 0, err
    accepted = pd.read_csv(out / "accepted.csv")
    counts = pd.read_csv(out / "filter_counts.csv", index_col=0)
    assert sorted(set(accepted["label"])) == [1, 2, 3]
    assert counts.loc["all", "kept"] == len(accepted)
    assert len((out / "accepted.jsonl").read_text().splitlines()) == len(accepted)
    # openings: each review starts with the first words of a prepared real review of its label
    code, output, err = _run(["generate", "--generator", gen / "model", "--classifier", clf / "model",
                              "--per-label", 4, "--keep-per-label", 1, "--max-rounds", 1, "--max-new-tokens", 6,
                              "--filter-rule", "any", "--filter-threshold", 0, "--min-words", 0,
                              "--opening-data", data, "--opening-words", 2, "--out", root / "opened",
                              "--quiet"], capsys)
    assert code == 0, err
    opened = pd.concat([pd.read_csv(root / "opened" / f"{name}.csv", keep_default_na=False)
                        for name in ("accepted", "rejected")])
    assert len(opened) == 12
    prepared = pd.concat([pd.read_csv(data / "train.csv"), pd.read_csv(data / "val.csv")])
    for _, row in opened.iterrows():
        starts = {" ".join(t.split()[:2]) for t in prepared[prepared["label"] == row["label"]]["text"]}
        assert any(row["text"].startswith(o) for o in starts), row["text"]

    code, output, err = _run(["evaluate", "classifier", reviews_csv, "--classifier", clf / "model", *columns,
                              "--max-length", 32, "--out", ev], capsys)
    assert code == 0, err
    ev_metrics = json.loads((ev / runs.METRICS).read_text())
    assert ev_metrics["rows"] == 90 and np.asarray(ev_metrics["confusion_matrix"]).sum() == 90
    confusion = pd.read_csv(ev / runs.CONFUSION, index_col=0)
    assert confusion.shape == (3, 3)

    code, output, err = _run(["evaluate", "generated", out / "accepted.csv", "--real", reviews_csv, *columns,
                              "--encoder", "", "--out", quality], capsys)
    assert code == 0, err
    table = pd.read_csv(quality / runs.QUALITY, index_col=0)
    assert {"judge_exact", "judge_near", "distinct_2", "repeated_4gram"} <= set(table.columns)
    assert table.loc["all", "n"] == len(accepted)

    code, output, err = _run(["report", root], capsys)
    assert code == 0, err
    html = (root / "report.html").read_text(encoding="utf-8")
    for heading in ("Classifier", "Generator", "Generat"):
        assert heading in html
    assert (root / "report.md").exists()
    found = {manifest["kind"] for _, manifest in runs.find_runs(str(root))}
    assert found == {"prepare", "train-classifier", "train-generator", "generate", "evaluate-classifier",
                     "evaluate-generated"}

    # both model directories are what transformers loads
    model = transformers.AutoModelForSequenceClassification.from_pretrained(clf / "model")
    assert model.config.num_labels == 3
    tokenizer = transformers.AutoTokenizer.from_pretrained(clf / "model")
    import torch

    with torch.no_grad():
        logits = model(**tokenizer(["a great movie"], return_tensors="pt")).logits
    assert logits.shape == (1, 3)
    lm = transformers.AutoModelForCausalLM.from_pretrained(gen / "model")
    assert lm.config.model_type == "gpt2"
    assert os.path.exists(gen / "model" / "tokenizer.json")
    # one config file reproduces one run
    code, _, err = _run(["train", "classifier", "--config", clf / runs.CONFIG, "--out", root / "again",
                         "--quiet"], capsys)
    assert code == 0, err
    again = json.loads((root / "again" / runs.METRICS).read_text())
    assert again["accuracy"] == metrics["accuracy"]
    # --bf16: the linear layers' products in bf16 where the CPU has AVX512-BF16, else a warning and fp32
    bf16_argv = ["train", "classifier", "--config", clf / runs.CONFIG, "--bf16", "--out", root / "bf16", "--quiet"]
    if _core.bf16_supported():
        code, _, err = _run(bf16_argv, capsys)
    else:
        with pytest.warns(RuntimeWarning, match="AVX512-BF16"):
            code, _, err = _run(bf16_argv, capsys)
    assert code == 0, err
    assert json.loads((root / "bf16" / runs.CONFIG).read_text())["training"]["bf16"] is True


def test_a_non_empty_output_folder_is_refused(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "precious.txt").write_text("keep")
    code, _, err = _run(["prepare", "sample:imdb", "--out", out], capsys)
    assert code == 2 and "not empty" in err and "--overwrite" in err
    code, _, err = _run(["prepare", "sample:imdb", "--out", out, "--overwrite"], capsys)
    assert code == 2 and "not a reviewgen output folder" in err  # --overwrite never deletes someone's files
    assert (out / "precious.txt").read_text() == "keep"


def test_overwrite_replaces_an_earlier_run(tmp_path, capsys):
    out = tmp_path / "out"
    assert _run(["prepare", "sample:imdb", "--out", out], capsys)[0] == 0
    (out / "stale.csv").write_text("from the earlier run")
    code, _, err = _run(["prepare", "sample:imdb", "--out", out], capsys)
    assert code == 2 and "--overwrite" in err
    assert _run(["prepare", "sample:imdb", "--out", out, "--overwrite"], capsys)[0] == 0
    assert not (out / "stale.csv").exists() and runs.read_run(out)["finished"]


def test_a_scale_that_does_not_fit_stops_before_any_work(tmp_path, reviews_csv, capsys):
    out = tmp_path / "out"
    code, _, err = _run(["prepare", reviews_csv, "--text-column", "body", "--rating-column", "stars",
                         "--scale", "sst5", "--out", out], capsys)
    assert code == 2 and "fall off" in err and "of 90" in err
    assert not out.exists()
    code, _, err = _run(["prepare", reviews_csv, "--text-column", "body", "--rating-column", "stars",
                         "--scale", "sst5", "--allow-drop", "--out", out], capsys)
    assert code == 0, err


def test_a_missing_column_or_model_is_named_before_training(tmp_path, reviews_csv, classifier_base, capsys):
    out = tmp_path / "out"
    code, _, err = _run(["train", "classifier", reviews_csv, "--model", classifier_base, "--out", out], capsys)
    assert code == 2 and "text" in err and "body" in err  # the columns it has
    code, _, err = _run(["train", "classifier", reviews_csv, "--text-column", "body", "--rating-column", "stars",
                         "--scale", SCALE, "--model", tmp_path / "no-such-model", "--out", out], capsys)
    assert code == 2 and "no-such-model" in err
    code, _, err = _run(["generate", "--generator", "./typo-generator", "--classifier", classifier_base,
                         "--out", out], capsys)
    assert code == 2 and "typo-generator" in err
    assert not out.exists()


def test_resume_needs_a_checkpoint_and_the_same_settings(tmp_path, reviews_csv, classifier_base, capsys):
    out = tmp_path / "out"
    base = ["train", "classifier", reviews_csv, "--text-column", "body", "--rating-column", "stars",
            "--scale", SCALE, "--model", classifier_base, "--max-length", 32, "--out", out, "--quiet"]
    code, _, err = _run(base + ["--resume"], capsys)
    assert code == 2 and "no checkpoint" in err
    assert _run(base + ["--epochs", 1, "--keep-checkpoints"], capsys)[0] == 0
    code, _, err = _run(base + ["--epochs", 2, "--resume"], capsys)
    assert code == 2 and "differ" in err and "training" in err


def test_ctrl_c_in_training_keeps_the_checkpoint_and_exits_130(tmp_path, reviews_csv, classifier_base, capsys,
                                                               monkeypatch):
    from reviewgen.core import training

    original = training.Trainer.train

    def interrupted_train(self, *args, **kwargs):  # one epoch ran and was checkpointed, then Ctrl-C
        result = original(self, *args, **kwargs)
        result.interrupted, result.finished = True, False
        raise training.TrainingInterrupted(result)

    monkeypatch.setattr(training.Trainer, "train", interrupted_train)
    out = tmp_path / "out"
    code, _, err = _run(["train", "classifier", reviews_csv, "--text-column", "body", "--rating-column", "stars",
                         "--scale", SCALE, "--model", classifier_base, "--max-length", 32, "--epochs", 1,
                         "--out", out, "--quiet"], capsys)
    assert code == 130
    assert "--resume" in err and "checkpoint.rgck" in err
    assert (out / runs.CHECKPOINTS_DIR / "checkpoint.rgck").exists()
    assert not (out / runs.MODEL_DIR).exists()  # no half-finished model passes as finished
    manifest = runs.read_run(out)
    assert manifest["finished"] is False and manifest["interrupted"] is True
    monkeypatch.setattr(training.Trainer, "train", original)
    code, _, err = _run(["train", "classifier", reviews_csv, "--text-column", "body", "--rating-column", "stars",
                         "--scale", SCALE, "--model", classifier_base, "--max-length", 32, "--epochs", 1,
                         "--out", out, "--quiet", "--resume"], capsys)
    assert code == 0, err
    assert (out / runs.MODEL_DIR / "model.safetensors").exists() and runs.read_run(out)["finished"] is True


def test_ctrl_c_in_generation_keeps_the_reviews_so_far(tmp_path, reviews_csv, classifier_base, tiny_gpt2_dir,
                                                       capsys, monkeypatch):
    from reviewgen.text import conditioning

    original = conditioning.generate_reviews
    calls = []

    def interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    clf = tmp_path / "clf"
    assert _run(["train", "classifier", reviews_csv, "--text-column", "body", "--rating-column", "stars",
                 "--scale", SCALE, "--model", classifier_base, "--max-length", 32, "--epochs", 1,
                 "--out", clf, "--quiet"], capsys)[0] == 0
    monkeypatch.setattr(conditioning, "generate_reviews", interrupted)
    out = tmp_path / "gen"
    code, _, err = _run(["generate", "--generator", tiny_gpt2_dir, "--classifier", clf / "model",
                         "--per-label", 3, "--keep-per-label", 3, "--max-rounds", 1, "--max-new-tokens", 6,
                         "--filter-rule", "any", "--filter-threshold", 0, "--min-words", 0,
                         "--out", out, "--quiet"], capsys)
    assert code == 130 and "so far" in err and str(out) in err
    both = pd.concat([pd.read_csv(out / "accepted.csv"), pd.read_csv(out / "rejected.csv")])
    assert len(both) == 6 and sorted(set(both["label"])) == [1, 2]  # the two labels done before Ctrl-C
    manifest = runs.read_run(out)
    assert manifest["finished"] is False and manifest["interrupted"] is True


def test_every_subcommand_has_help_with_an_example(capsys):
    for argv in (["prepare"], ["train", "classifier"], ["train", "generator"], ["generate"],
                 ["evaluate", "classifier"], ["evaluate", "generated"], ["sweep"], ["report"], ["demo"]):
        with pytest.raises(SystemExit) as stop:
            main(argv + ["--help"])
        assert stop.value.code == 0
        text = capsys.readouterr().out
        assert "reviewgen " + argv[0] in text and "example" in text.lower(), argv


def test_sweep_writes_its_tables_and_goes_on_with_resume(tmp_path, classifier_base, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--task", "classifier", "--model", classifier_base, "--data", "sample:imdb",
            "--parameter", "learning_rate", "--values", "1e-4,1e-3", "--samples", 2, "--rows-per-sample", 24,
            "--max-length", 32, "--epochs", 2, "--batch-size", 4, "--out", out, "--quiet"]
    code, _, err = _run(argv, capsys)
    assert code == 0, err
    frame = pd.read_csv(out / "sweep_runs.csv")
    assert sorted(frame["value"].unique()) == [1e-4, 1e-3] and set(frame["epoch"]) == {1, 2}
    assert len(frame) == 2 * 2 * 2  # values x samples x epochs
    curves = pd.read_csv(out / "sweep_curves.csv")
    assert {"value", "epoch", "eval_loss_mean", "eval_loss_std"} <= set(curves.columns)
    summary = pd.read_csv(out / "sweep_summary.csv")
    assert len(summary) == 2 and "eval_loss_mean" in summary
    assert json.loads((out / "study.json").read_text())["parameter"] == "learning_rate"
    assert runs.read_run(out)["finished"] is True
    code, _, err = _run(argv, capsys)
    assert code == 2 and "--resume" in err
    code, _, err = _run(argv + ["--resume"], capsys)  # every run is in the journal: nothing retrains
    assert code == 0, err
    assert pd.read_csv(out / "sweep_runs.csv").equals(frame)


def test_python_steps_return_dataframes(tmp_path, reviews_csv, classifier_base):
    from reviewgen.core.config import TrainingConfig
    from reviewgen.experiments import workflow
    from reviewgen.experiments.progress import Progress

    cfg = workflow.TrainClassifierConfig(data=str(reviews_csv), text_column="body", rating_column="stars",
                                         scale=SCALE, model=classifier_base, max_length=32,
                                         training=TrainingConfig.for_classifier(num_train_epochs=1))
    result = workflow.train_classifier(cfg, str(tmp_path / "clf"), progress=Progress("quiet"), log=lambda _: None)
    assert list(result.history["epoch"]) == [1]
    assert set(result.per_class["kind"]) == {"exact", "near"}
    assert result.confusion.shape == (3, 3)
    assert 0.0 <= result.metrics["accuracy"] <= 1.0 and result.model.labels == [1, 2, 3]
    with pytest.raises(AttributeError, match="tables: history"):
        result.accepted
    bad = workflow.TrainClassifierConfig.from_dict({"data": "x.csv", "max_length": "32"})
    with pytest.raises(ValueError, match="max_length must be int"):
        workflow.train_classifier(bad, str(tmp_path / "bad"), log=lambda _: None)
    assert not (tmp_path / "bad").exists()


def test_study_configs_name_their_columns(tmp_path, reviews_csv):
    from reviewgen.experiments.study import ClassifierStudy, SweepStudy, study_split

    study = ClassifierStudy.from_dict({"train": str(reviews_csv), "test": str(reviews_csv), "scale": SCALE,
                                       "text_column": "body", "rating_column": "stars"})
    train, dev, test, _ = study_split(study)
    assert len(test) == 90 and sorted(train["label"].unique()) == [1, 2, 3]
    assert SweepStudy.from_dict({"text_column": "body"}).text_column == "body"


def test_evaluate_generated_with_the_bundled_judge(tmp_path, capsys):
    """`--judge-data bundled:imdb`: the shipped judge (fitted on IMDB train outside the bundled
    sample) measures reviews against real ones, none of which it saw."""
    pytest.importorskip("sklearn")
    from reviewgen.text import data as D

    real = D.load_sample("imdb").groupby("rating").head(10)
    real.to_csv(tmp_path / "real.csv", index=False)
    generated = pd.DataFrame({"label": [5, 5, 1, 1], "text": [
        "A masterpiece. Brilliant acting, a wonderful story, one of the best films I have ever seen.",
        "Loved every minute, superb and moving; highly recommended, a perfect 10.",
        "The worst film ever made. Awful acting, a boring mess, a total waste of time.",
        "Terrible, stupid and dull. Avoid it; I wanted my two hours back."]})
    generated.to_csv(tmp_path / "accepted.csv", index=False)
    code, output, err = _run(["evaluate", "generated", tmp_path / "accepted.csv", "--real", tmp_path / "real.csv",
                              "--judge-data", "bundled:imdb", "--encoder", "", "--out", tmp_path / "q"], capsys)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "q" / runs.QUALITY, index_col=0)
    assert table.loc["all", "judge_exact"] == 1.0 and table.loc["all", "n"] == 4
    manifest = json.loads((tmp_path / "q" / runs.MANIFEST).read_text())
    assert manifest["judge_rows"] == 21_983 and "bundled" in manifest["judge_source"]
    # a judge of another rating scale is refused, naming both label sets
    (tmp_path / "sst.csv").write_text("text,rating\n" + "".join(f"review {r},{r}\n" for r in range(5)))
    generated.assign(label=[1, 1, 2, 2]).to_csv(tmp_path / "sst_gen.csv", index=False)
    code, output, err = _run(["evaluate", "generated", tmp_path / "sst_gen.csv", "--real", tmp_path / "sst.csv",
                              "--scale", "sst5", "--judge-data", "bundled:imdb", "--encoder", "",
                              "--out", tmp_path / "q2"], capsys)
    assert code == 2 and "knows labels [1, 2, 4, 5], not [3]" in err, err
