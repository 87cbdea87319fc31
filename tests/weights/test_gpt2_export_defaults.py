"""export_gpt2's end-of-text default lies inside the vocabulary it exports."""
import json

from reviewgen.core.models import Model, ModelConfig
from reviewgen.weights.gpt2 import export_gpt2


def test_a_small_vocabulary_gets_its_last_id_as_end_of_text(tmp_path):
    export_gpt2(Model(ModelConfig(vocab_size=13, n_positions=6, n_layer=1, n_head=2, n_embd=4)), str(tmp_path / "a"))
    config = json.loads((tmp_path / "a" / "config.json").read_text())
    assert config["eos_token_id"] == config["bos_token_id"] == 12


def test_the_gpt2_vocabulary_keeps_50256_and_a_given_id_stays(tmp_path):
    model = Model(ModelConfig(vocab_size=50257, n_positions=4, n_layer=1, n_head=1, n_embd=4))
    export_gpt2(model, str(tmp_path / "b"))
    assert json.loads((tmp_path / "b" / "config.json").read_text())["eos_token_id"] == 50256
    export_gpt2(model, str(tmp_path / "c"), hf_config={"eos_token_id": 7, "bos_token_id": 7})
    assert json.loads((tmp_path / "c" / "config.json").read_text())["eos_token_id"] == 7
