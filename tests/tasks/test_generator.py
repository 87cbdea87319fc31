"""The Generator object end to end on a tiny random GPT-2 with a real (small) BPE
tokenizer trained on the bundled reviews: loss and perplexity against
transformers, training through the shared Trainer, generation, export."""
import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from reviewgen.core.config import TrainingConfig  # noqa: E402
from reviewgen.tasks.generator import Generator  # noqa: E402


def test_evaluate_matches_transformers_loss(tiny_gpt2_dir, texts):
    generator = Generator.from_pretrained(tiny_gpt2_dir, max_length=64)
    sample = texts[1][:6]
    result = generator.evaluate(sample, batch_size=len(sample))
    encoded = generator.encode(sample)
    reference = transformers.GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).eval()
    ids = torch.tensor(encoded.ids, dtype=torch.long)
    mask = torch.tensor(encoded.attention_mask, dtype=torch.long)
    labels = ids.masked_fill(mask == 0, -100)
    with torch.no_grad():
        loss = reference(input_ids=ids, attention_mask=mask, labels=labels).loss.item()
    assert result["loss"] == pytest.approx(loss, rel=1e-4, abs=1e-4)
    assert result["perplexity"] == pytest.approx(np.exp(loss), rel=1e-3)
    assert result["tokens"] == int(encoded.attention_mask.sum()) - len(sample)
    assert all(row[int(m.sum()) - 1] == generator.eos_id for row, m in zip(encoded.ids, encoded.attention_mask))


def test_train_lowers_loss_and_keeps_frozen_blocks(tiny_gpt2_dir, texts, tmp_path):
    generator = Generator.from_pretrained(tiny_gpt2_dir, max_length=64)
    before = generator.evaluate(texts[1])["loss"]
    frozen_before = generator.model.param("h.0.qkv.w").copy()
    config = TrainingConfig.for_generator()
    config.num_train_epochs = 2
    config.per_device_train_batch_size = 8
    config.gradient_accumulation_steps = 1
    config.learning_rate = 3e-3
    events = []
    result = generator.train(texts[0], texts[1], config=config, output_dir=str(tmp_path), progress=events.append)
    after = generator.evaluate(texts[1])["loss"]
    assert after < before - 0.05
    assert np.array_equal(generator.model.param("h.0.qkv.w"), frozen_before)
    assert result.epochs_completed == 2 and not result.interrupted
    assert any(e.get("event") == "step" for e in events)
    assert os.path.isfile(tmp_path / "checkpoint.npz") and os.path.isfile(tmp_path / "best.npz")


def test_generate_greedy_matches_transformers_and_sampling_repeats(tiny_gpt2_dir):
    generator = Generator.from_pretrained(tiny_gpt2_dir, max_length=64)
    greedy = generator.generate(label=5, n=2, max_new_tokens=12, do_sample=False)
    assert greedy[0] == greedy[1]
    reference = transformers.GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir).eval()
    prompt = torch.tensor([generator.tokenizer.encode("Review of 5.")], dtype=torch.long)
    with torch.no_grad():
        out = reference.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                 max_new_tokens=12, pad_token_id=generator.eos_id, eos_token_id=generator.eos_id)
    new_ids = [t for t in out[0, prompt.shape[1]:].tolist() if t != generator.eos_id]
    assert greedy[0] == generator.tokenizer.decode(new_ids).strip()

    first = generator.generate(label=2, n=4, max_new_tokens=10, seed=7)
    again = generator.generate(label=2, n=4, max_new_tokens=10, seed=7)
    other = generator.generate(label=2, n=4, max_new_tokens=10, seed=8)
    assert first == again
    assert first != other


def test_save_round_trip_loads_in_transformers(tiny_gpt2_dir, texts, tmp_path):
    generator = Generator.from_pretrained(tiny_gpt2_dir, max_length=64)
    generator.model.param("h.2.fc.b")[...] += 0.25  # something a fine-tune would change
    out = generator.save(str(tmp_path / "export"))
    reloaded = transformers.GPT2LMHeadModel.from_pretrained(out).eval()
    fast = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(out, "tokenizer.json"))
    ids = fast(texts[1][0], return_tensors="pt")["input_ids"][:, :40]
    assert ids[0].tolist() == generator.tokenizer.encode(texts[1][0])[:40]
    with torch.no_grad():
        expected = reloaded(ids).logits[0].numpy()
    got = generator.model.forward(ids.numpy().astype(np.int32))[0]
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    with open(os.path.join(out, "config.json")) as f:
        assert json.load(f)["model_type"] == "gpt2"


def test_bad_input_is_named(tiny_gpt2_dir, tmp_path):
    generator = Generator.from_pretrained(tiny_gpt2_dir, max_length=64)
    with pytest.raises(TypeError, match="sequence of strings"):
        generator.evaluate("just one string")
    with pytest.raises(TypeError, match=r"texts\[1\]"):
        generator.encode(["fine", 3])
    with pytest.raises(ValueError, match="empty"):
        generator.encode([])
    with pytest.raises(ValueError, match="label or prompts"):
        generator.generate()
    with pytest.raises(FileNotFoundError):
        Generator.from_pretrained(str(tmp_path / "missing"))
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "bert" / "tokenizer.json").write_text(open(os.path.join(tiny_gpt2_dir, "tokenizer.json")).read())
    with pytest.raises(ValueError, match="not a supported generator"):
        Generator.from_pretrained(str(tmp_path / "bert"))
