"""Generator.save and Classifier.save replace a model directory as a whole: a save that
fails part-way leaves the previous model, file for file, and it still loads."""
import os

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("transformers")

from reviewgen.tasks.classifier import Classifier  # noqa: E402
from reviewgen.tasks.generator import Generator  # noqa: E402
from _reference import tiny_distilbert_dir  # noqa: E402


def _snapshot(directory):
    return {name: open(os.path.join(directory, name), "rb").read() for name in sorted(os.listdir(directory))}


def _failing_save(task, out, monkeypatch):
    """Break the tokenizer step, which runs after the weights and config.json are written."""
    def boom(*args, **kwargs):
        raise RuntimeError("disk full (simulated)")

    monkeypatch.setattr(type(task.tokenizer), "save", boom)
    with pytest.raises(RuntimeError, match="simulated"):
        task.save(out)
    monkeypatch.undo()


def test_generator_save_is_all_or_nothing(tiny_gpt2_dir, tmp_path, monkeypatch):
    generator = Generator.from_pretrained(tiny_gpt2_dir, max_length=32)
    out = str(tmp_path / "model")
    generator.save(out)
    before = _snapshot(out)
    generator.model.param("wte")[:] += 1.0
    _failing_save(generator, out, monkeypatch)
    assert _snapshot(out) == before
    assert Generator.from_pretrained(out).model.param("wte").tolist() != generator.model.param("wte").tolist()
    generator.save(out)
    assert np.array_equal(Generator.from_pretrained(out).model.param("wte"), generator.model.param("wte"))
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".rg-tmp-")]


def test_classifier_save_is_all_or_nothing(tmp_path, monkeypatch):
    classifier = Classifier.from_pretrained(str(tiny_distilbert_dir(tmp_path / "bert")), labels=[1, 2, 3],
                                            max_length=16)
    out = str(tmp_path / "model")
    classifier.save(out)
    before = _snapshot(out)
    classifier.model.param("cls.out.b")[:] += 1.0
    _failing_save(classifier, out, monkeypatch)
    assert _snapshot(out) == before
    classifier.save(out)
    again = Classifier.from_pretrained(out, max_length=16)
    assert np.array_equal(again.model.param("cls.out.b"), classifier.model.param("cls.out.b"))
    assert again.labels == [1, 2, 3]
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".rg-tmp-")]
