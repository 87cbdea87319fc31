"""Notebooks are valid, their code compiles, and the data notebook runs."""
import ast
import json
import os
import pathlib

import pytest

NOTEBOOKS = sorted((pathlib.Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))


def _code_cells(path):
    notebook = json.loads(path.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    return ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_compiles(path):
    cells = _code_cells(path)
    assert cells, f"{path.name} has no code"
    for source in cells:
        ast.parse(source)


def test_data_notebook_runs(monkeypatch, tmp_path):
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg", force=True)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    for source in _code_cells(NOTEBOOKS[0]):
        exec(compile(source, NOTEBOOKS[0].name, "exec"), namespace)
    assert namespace["prepared"].report.empty_labels == [3]
    assert namespace["generator_part"].train["generator_text"].str.startswith("Review of ").all()


def test_quality_notebook_runs_on_the_logged_results(monkeypatch):
    """Notebook 05 only reads notebooks/results/quality and plots: run it as written."""
    monkeypatch.setenv("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg", force=True)
    path = next(p for p in NOTEBOOKS if p.name == "05_quality.ipynb")
    monkeypatch.chdir(path.parent)
    namespace = {"display": lambda value: None}
    for source in _code_cells(path):
        exec(compile(source, path.name, "exec"), namespace)
    assert "e08_chat_reviewer_plain_words" in namespace["runs"]
    assert {"judge_exact", "mauve"} <= set(namespace["quality"].columns)
