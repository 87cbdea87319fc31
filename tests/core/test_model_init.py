"""A blank model (for loaders) against the default random initialisation."""
import numpy as np

from reviewgen.core.models import Model, ModelConfig


def _config():
    return ModelConfig(vocab_size=40, n_positions=16, n_layer=2, n_head=2, n_embd=8)


def test_blank_model_is_zero_and_default_is_not():
    blank, drawn = Model(_config(), initialize=False), Model(_config())
    assert blank.param_table() == drawn.param_table()
    assert not np.any(blank.parameters)
    assert np.count_nonzero(drawn.parameters) > drawn.parameters.size // 2


def test_checkpoint_build_writes_every_tensor_of_a_blank_model(tiny_gpt2_dir):
    # build_model starts from a blank model: every parameter must come from the file.
    from reviewgen.weights.gpt2 import load_gpt2

    checkpoint = load_gpt2(tiny_gpt2_dir)
    model = checkpoint.build_model()
    for name, array in checkpoint.weights.items():
        np.testing.assert_array_equal(model.param(name), array)
