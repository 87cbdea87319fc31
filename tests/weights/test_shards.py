"""Shard names in model.safetensors.index.json stay inside the model directory."""
import json
import os
import shutil

import numpy as np
import pytest

from reviewgen.core.models import Model, ModelConfig
from reviewgen.weights.checkpoint import WeightsError
from reviewgen.weights.gpt2 import export_gpt2, load_gpt2
from reviewgen.weights.safetensors_io import read_safetensors, read_weights


@pytest.fixture
def exported(tmp_path):
    model = Model(ModelConfig(vocab_size=11, n_positions=6, n_layer=1, n_head=2, n_embd=4))
    return export_gpt2(model, str(tmp_path / "model")), model


def _index(directory, shard_of):
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as handle:
        json.dump({"metadata": {}, "weight_map": shard_of}, handle)


def _shard_away(directory, shard):
    """Move model.safetensors to `shard` (relative to directory, or absolute) behind an index."""
    names = list(read_safetensors(os.path.join(directory, "model.safetensors")))
    target = shard if os.path.isabs(shard) else os.path.normpath(os.path.join(directory, shard))
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    shutil.move(os.path.join(directory, "model.safetensors"), target)
    _index(directory, dict.fromkeys(names, shard))


def test_a_shard_inside_the_directory_loads(exported):
    directory, model = exported
    _shard_away(directory, "shards/part-1.safetensors")
    loaded = load_gpt2(directory).build_model()
    assert np.array_equal(loaded.param("wte"), model.param("wte"))
    state = read_weights(directory)
    assert set(state.files.values()) == {os.path.join(directory, "shards/part-1.safetensors")}


@pytest.mark.parametrize("shard", ["../outside.safetensors", "shards/../../outside.safetensors", "ABSOLUTE"])
def test_shard_paths_leaving_the_directory_are_refused(exported, tmp_path, shard):
    directory, _ = exported
    if shard == "ABSOLUTE":
        shard = str(tmp_path / "elsewhere" / "outside.safetensors")
    _shard_away(directory, shard)
    with pytest.raises(WeightsError, match="outside the model directory") as info:
        load_gpt2(directory)
    assert "model.safetensors.index.json" in str(info.value)


def test_a_symlinked_shard_leaving_the_directory_is_refused(exported, tmp_path):
    directory, _ = exported
    outside = tmp_path / "outside.safetensors"
    _shard_away(directory, str(outside))
    os.symlink(outside, os.path.join(directory, "link.safetensors"))
    names = list(read_safetensors(str(outside)))
    _index(directory, dict.fromkeys(names, "link.safetensors"))
    with pytest.raises(WeightsError, match="outside the model directory"):
        load_gpt2(directory)


@pytest.mark.parametrize("weight_map", [[1, 2], {"wte.weight": 5}, {"wte.weight": ""}, {"wte.weight": "a\x00b"}])
def test_malformed_weight_maps_are_refused(exported, weight_map):
    directory, _ = exported
    os.unlink(os.path.join(directory, "model.safetensors"))
    with open(os.path.join(directory, "model.safetensors.index.json"), "w") as handle:
        json.dump({"weight_map": weight_map}, handle)
    with pytest.raises(WeightsError, match="model.safetensors.index.json"):
        load_gpt2(directory)
