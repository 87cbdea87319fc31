"""Loading keeps one copy of the weights: once the core holds a memory-mapped tensor's
values, the file's pages leave the process (they come back, intact, if read again)."""
import os

import numpy as np
import pytest

from reviewgen.core.models import Model, ModelConfig
from reviewgen.weights.gpt2 import export_gpt2, load_gpt2


def mapped_rss_kib(path):
    """Resident KiB of this process's mappings of `path` (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = len(fields) >= 6 and os.path.realpath(fields[-1]) == os.path.realpath(path)
            elif inside and fields[0] == "Rss:":
                total += int(fields[1])
    return total


@pytest.mark.skipif(not os.path.exists("/proc/self/smaps"), reason="Linux /proc")
def test_a_built_model_leaves_no_file_pages_resident(tmp_path):
    config = ModelConfig(vocab_size=4096, n_positions=64, n_layer=2, n_head=4, n_embd=256, tie_word_embeddings=False)
    model = Model(config)
    rng = np.random.default_rng(0)
    model.parameters[:] = rng.standard_normal(model.parameters.size).astype(np.float32) * 0.02
    export_gpt2(model, str(tmp_path / "m"))
    weights = tmp_path / "m" / "model.safetensors"
    assert os.path.getsize(weights) > 8 << 20

    checkpoint = load_gpt2(tmp_path / "m")
    wte = checkpoint.tensors["wte"][0][1]
    assert float(np.abs(wte).sum()) > 0  # every page of the largest tensor read: resident now
    assert mapped_rss_kib(weights) > 4096
    built = checkpoint.build_model()
    assert mapped_rss_kib(weights) < 1024  # the model's copy is the only one left
    np.testing.assert_array_equal(built.parameters, model.parameters)
    # the checkpoint's arrays still read the file's values
    np.testing.assert_array_equal(checkpoint.weights["wte"], model.param("wte"))
