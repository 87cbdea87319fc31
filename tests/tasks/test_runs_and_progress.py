"""Run folders (reviewgen.experiments.runs) and progress displays (reviewgen.experiments.progress)."""
import io
import json
import os

import pytest

from reviewgen.experiments import runs
from reviewgen.experiments.progress import Progress, format_seconds


def test_a_run_is_unfinished_until_finish_run(tmp_path):
    out = runs.prepare_output_dir(str(tmp_path / "run"))
    manifest = runs.start_run(out, "prepare", {"scale": "imdb10"}, argv=["prepare", "x.csv"])
    on_disk = runs.read_run(out)
    assert on_disk["finished"] is False and on_disk["config"] == {"scale": "imdb10"}
    assert "_clock" not in on_disk
    (tmp_path / "run" / "train.csv").write_text("text,label\n")
    done = runs.finish_run(out, manifest, rows=3)
    assert done["finished"] is True and done["files"] == ["train.csv"] and done["rows"] == 3
    assert done["seconds"] >= 0 and runs.read_run(out)["finished"] is True


def test_interrupt_run_says_what_was_kept(tmp_path):
    out = runs.prepare_output_dir(str(tmp_path / "run"))
    manifest = runs.start_run(out, "generate")
    stopped = runs.interrupt_run(out, manifest, note="the reviews so far are kept")
    assert stopped["finished"] is False and stopped["interrupted"] is True
    assert runs.read_run(out)["note"] == "the reviews so far are kept"


def test_unknown_kinds_and_unreadable_manifests(tmp_path):
    with pytest.raises(ValueError, match="unknown run kind"):
        runs.start_run(str(tmp_path), "train-everything")
    (tmp_path / runs.MANIFEST).write_text("{not json")
    assert runs.read_run(str(tmp_path)) is None
    (tmp_path / runs.MANIFEST).write_text(json.dumps({"kind": "nonsense"}))
    assert runs.read_run(str(tmp_path)) is None


def test_output_folder_rules(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert runs.prepare_output_dir(str(empty)) == str(empty)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(runs.OutputFolderError, match="not a folder"):
        runs.prepare_output_dir(str(a_file))
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "data.csv").write_text("precious")
    with pytest.raises(runs.OutputFolderError, match="not empty"):
        runs.prepare_output_dir(str(theirs))
    with pytest.raises(runs.OutputFolderError, match="not a reviewgen output folder"):
        runs.prepare_output_dir(str(theirs), overwrite=True)
    assert (theirs / "data.csv").read_text() == "precious"
    assert runs.prepare_output_dir(str(theirs), resume=True) == str(theirs)  # resume keeps everything
    ours = tmp_path / "ours"
    runs.start_run(runs.prepare_output_dir(str(ours)), "sweep")
    (ours / "sub").mkdir()
    (ours / "sub" / "x").write_text("old")
    with pytest.raises(runs.OutputFolderError, match="--resume"):
        runs.prepare_output_dir(str(ours))
    runs.prepare_output_dir(str(ours), overwrite=True)
    assert os.listdir(ours) == []


def test_find_runs_walks_two_levels_and_skips_models(tmp_path):
    for name, kind in (("data", "prepare"), ("clf", "train-classifier"), ("deep/one/two", "generate")):
        runs.start_run(runs.prepare_output_dir(str(tmp_path / name)), kind)
    runs.start_run(runs.prepare_output_dir(str(tmp_path / "clf" / runs.MODEL_DIR)), "prepare")  # never a run
    found = [(os.path.relpath(folder, tmp_path), m["kind"]) for folder, m in runs.find_runs(str(tmp_path))]
    assert found == [("clf", "train-classifier"), ("data", "prepare")]
    assert len(runs.find_runs(str(tmp_path), depth=3)) == 3


def test_frames_from_a_classifier_report():
    report = {"labels": [1, 2], "confusion_matrix": [[3, 1], [0, 4]], "near_confusion_matrix": [[4, 0], [0, 4]],
              "exact": {"labels": [1, 2], "precision": [1.0, 0.8], "recall": [0.75, 1.0], "f1": [0.86, 0.89],
                        "support": [4, 4]},
              "near": {"labels": [1, 2], "precision": [1.0, 1.0], "recall": [1.0, 1.0], "f1": [1.0, 1.0],
                       "support": [4, 4]}}
    per_class = runs.per_class_frame(report)
    assert list(per_class.columns) == ["label", "kind", "precision", "recall", "f1", "support"]
    assert per_class[per_class["kind"] == "exact"]["recall"].tolist() == [0.75, 1.0]
    confusion = runs.confusion_frame(report)
    assert confusion.loc[1, 2] == 1 and confusion.index.name == "true"
    assert runs.confusion_frame(report, near=True).loc[1, 1] == 4
    history = runs.history_frame([{"eval_loss": 1.0, "epoch": 1}, {"eval_loss": 0.5, "epoch": 2}])
    assert list(history.columns) == ["epoch", "eval_loss"]


def _events(total=4):
    for step in range(1, total + 1):
        yield {"event": "step", "epoch": 1 + (step > 2), "step": step, "total_steps": total, "loss": 1.0 / step,
               "lr": 1e-4}
        if step % 2 == 0:
            yield {"event": "eval", "epoch": step // 2, "eval_loss": 0.5, "eval_accuracy": 0.75}


def test_plain_lines_carry_the_total_and_an_eta():
    lines = []
    callback = Progress("lines", log=lines.append).training("classifier")
    for event in _events():
        callback(event)
    steps = [line for line in lines if "training" in line]
    assert steps[-1].startswith("classifier training: 4/4 steps (100%)")
    assert any("ETA" in line for line in steps[:-1])
    assert any(line.startswith("classifier epoch 2: eval_loss 0.5000, eval_accuracy 0.7500") for line in lines)


def test_a_bar_takes_its_total_from_the_core_and_starts_where_a_resumed_run_is():
    stream = io.StringIO()
    callback = Progress("bar", stream=stream).training("generator")
    for event in list(_events(6))[4:]:  # resumed: the first event is step 4
        callback(event)
    text = stream.getvalue()
    assert "/6" in text and "6/6" in text and "generator training" in text


def test_quiet_says_nothing_and_counters_count():
    lines = []
    progress = Progress("quiet", log=lines.append)
    callback = progress.training("x")
    for event in _events():
        callback(event)
    with progress.counter("generating", total=5, unit="review") as count:
        count(2)
        count(3, postfix="label 5")
        assert count.n == 5
    assert lines == []
    with pytest.raises(ValueError, match="progress mode"):
        Progress("loud")


def test_auto_picks_lines_when_not_a_terminal():
    assert Progress("auto", stream=io.StringIO()).mode == "lines"
    assert format_seconds(3725) == "1h02m05s" and format_seconds(65) == "1m05s"
