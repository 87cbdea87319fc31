"""`reviewgen report`: every kind of step in one self-contained, escaped page; unfinished steps
flagged and never shown as results; broken files are notes; the page renders in headless Chromium."""
import argparse
import json
import os
import shutil
import subprocess

import pandas as pd
import pytest

from reviewgen.experiments import runs
from reviewgen.experiments.report import add_report_command, write_report

EVIL = "<script>alert(1)</script> & \"quoted\""


def _step(root, name, kind, files, finished=True, note=None):
    folder = runs.prepare_output_dir(str(root / name))
    manifest = runs.start_run(folder, kind)
    for file_name, content in files.items():
        path = os.path.join(folder, file_name)
        if isinstance(content, pd.DataFrame):
            content.to_csv(path, index=content.index.name is not None)
        elif isinstance(content, str):
            with open(path, "w", encoding="utf-8") as f:
                f.write(content)
        else:
            with open(path, "w", encoding="utf-8") as f:
                json.dump(content, f)
    if finished:
        runs.finish_run(folder, manifest)
    elif note:
        runs.interrupt_run(folder, manifest, note=note)
    return folder


def _classifier_metrics(accuracy):
    exact = {"labels": [1, 2], "precision": [0.9, 0.7], "recall": [0.6, 0.8], "f1": [0.72, 0.75],
             "support": [5, 5], "accuracy": accuracy, "macro_precision": 0.8, "macro_recall": 0.7, "macro_f1": 0.735}
    near = dict(exact, accuracy=0.95, macro_precision=0.96, macro_recall=0.94, macro_f1=0.93)
    return {"n_samples": 10, "accuracy": accuracy, "near_accuracy": 0.95, "macro_f1": 0.735, "near_macro_f1": 0.93,
            "labels": [1, 2], "confusion_matrix": [[3, 2], [1, 4]], "near_confusion_matrix": [[5, 0], [0, 5]],
            "exact": exact, "near": near, "rows": {"train": 40, "validation": 10},
            "tfidf_baseline": {"accuracy": 0.611, "near_accuracy": 0.9, "macro_f1": 0.6, "near_macro_f1": 0.88}}


@pytest.fixture
def run_root(tmp_path):
    root = tmp_path / "runs"
    report = {"source": "mine.csv", "part": "all", "scale": "stars5", "seed": 0, "rows_read": 120,
              "dropped": {"empty_text": 7, "duplicate_text": 0}, "rows_kept": 113,
              "labels_before_balancing": {"1": 60, "2": 53}, "labels_after_balancing": {"1": 53, "2": 53},
              "empty_labels": [], "rows_balanced": 106, "rows_train": 95, "rows_val": 11}
    _step(root, "data", "prepare", {"report.json": report})
    history = pd.DataFrame({"epoch": [1, 2], "step": [5, 10], "train_loss": [0.9, 0.5], "eval_loss": [0.8, 0.6],
                            "eval_accuracy": [0.6, 0.7]})
    per_class = pd.DataFrame([{"label": 1, "kind": k, "precision": 0.9, "recall": 0.6, "f1": 0.72, "support": 5}
                              for k in ("exact", "near")])
    _step(root, "classifier", "train-classifier", {"metrics.json": _classifier_metrics(0.7345),
                                                   "history.csv": history, "per_class.csv": per_class})
    _step(root, "evaluation", "evaluate-classifier", {"metrics.json": "{not json"})
    _step(root, "generator", "train-generator", {
        "metrics.json": {"format": "chat", "train_rows": 40, "eval_rows": 8,
                         "before": {"loss": 3.1, "perplexity": 22.198, "tokens": 900},
                         "after": {"loss": 2.9, "perplexity": 18.174, "tokens": 900}},
        "history.csv": history.drop(columns="eval_accuracy")})
    sweep = pd.DataFrame([{"value": v, "sample": s, "epoch": e, "step": e * 3, "train_loss": 1.0,
                           "eval_loss": 1.0 / (e + v * 100 + s), "status": "ok", "best_epoch": 2}
                          for v in (1e-4, 1e-3) for s in (0, 1) for e in (1, 2)])
    _step(root, "sweep", "sweep", {"sweep_runs.csv": sweep, "study.json": {"parameter": "learning_rate"}})
    reviews = pd.DataFrame([{"label": label, "predicted": label, "probability": 0.8, "wanted_probability": 0.8,
                             "round": 1, "reason": "", "fallback": 0, "text": f"review {i} of {label}: {EVIL}"}
                            for label in (1, 2) for i in range(5)])
    counts = pd.DataFrame({"generated": [6, 5, 11], "kept": [5, 5, 10], "mismatch": [1, 0, 1]},
                          index=pd.Index(["1", "2", "all"], name="label"))
    _step(root, "generated", "generate", {"accepted.csv": reviews, "rejected.csv": reviews.head(1).assign(
        reason="mismatch"), "filter_counts.csv": counts})
    quality = pd.DataFrame({"n": [5, 5, 10], "judge_exact": [0.8, 0.6, 0.7], "mauve": [None, None, 0.812]},
                           index=pd.Index(["1", "2", "all"], name="label"))
    _step(root, "quality", "evaluate-generated", {"quality.csv": quality})
    _step(root, "stopped", "train-classifier", {"metrics.json": _classifier_metrics(0.987654)}, finished=False,
          note="classifier training interrupted; the last checkpoint is x/checkpoint.rgck")
    return root


def test_the_report_shows_every_step_and_escapes_every_text(run_root):
    html_path, md_path = write_report(str(run_root))
    page = open(html_path, encoding="utf-8").read()
    for heading in ("Data: data", "Classifier (training): classifier", "Classifier (evaluation): evaluation",
                    "Generator (training): generator", "Hyperparameter sweep: sweep",
                    "Generated reviews: generated", "Generation quality: quality"):
        assert f"<h2>{heading}</h2>" in page, heading
    for name in ("accuracy", "recall", "precision", "F1", "TF-IDF + LR, exact", "TF-IDF + LR, near"):
        assert f"<th>{name}</th>" in page
    assert "0.735" in page and "0.611" in page and "22.198" in page and "18.174" in page and "0.812" in page
    assert "learning_rate" in page and "mine.csv" in page and "empty_text" in page
    assert page.count('<img src="data:image/png;base64,') >= 5
    assert "<script>alert" not in page and "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;quoted&quot;" in page
    assert "http://" not in page and "https://" not in page
    assert "metrics.json unreadable" in page  # the broken step is a note, the rest still renders
    # at most SAMPLE_PER_LABEL accepted reviews per rating
    assert page.count("review 2 of 1") == 1 and "review 4 of 1" not in page


def test_an_unfinished_step_is_a_banner_and_never_a_result(run_root):
    html_path, md_path = write_report(str(run_root))
    page = open(html_path, encoding="utf-8").read()
    assert 'class="banner"' in page and "did not finish: interrupted" in page and "checkpoint.rgck" in page
    assert "0.988" not in page and "0.987654" not in page  # its figures are not shown
    assert "<td>NO</td>" in page


def test_the_markdown_twin_has_the_tables_and_linked_plots(run_root):
    _, md_path = write_report(str(run_root))
    text = open(md_path, encoding="utf-8").read()
    assert "| classifier | accuracy | recall | precision | F1 |" in text
    assert "| exact | 0.735 | 0.700 | 0.800 | 0.735 |" in text
    links = [line for line in text.splitlines() if line.startswith("![")]
    assert links and all(os.path.exists(os.path.join(run_root, line.split("(")[1].rstrip(")"))) for line in links)
    assert "> **This step did not finish" in text


def test_a_folder_without_runs_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="not a folder"):
        write_report(str(tmp_path / "missing"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no reviewgen run"):
        write_report(str(tmp_path / "empty"))


def test_the_command_writes_where_it_is_told(run_root, tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_report_command(parser.add_subparsers())
    args = parser.parse_args(["report", str(run_root), "--html", str(tmp_path / "r.html"), "--md",
                              str(tmp_path / "r.md")])
    assert args.run(args) == 0
    assert (tmp_path / "r.html").exists() and (tmp_path / "report_files").is_dir()
    assert "r.html" in capsys.readouterr().out


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (Debian: apt-get install chromium)")
def test_the_page_renders_in_headless_chromium(run_root, tmp_path):
    html_path, _ = write_report(str(run_root))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--window-size=1200,3000"]
    shot = tmp_path / "report.png"
    done = subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", f"file://{html_path}"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    png = shot.read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 20_000  # a page, not a blank
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", f"file://{html_path}"], capture_output=True, text=True,
                         timeout=120).stdout
    assert "Hyperparameter sweep: sweep" in dom and dom.count("<img") >= 5 and "<script>alert" not in dom
