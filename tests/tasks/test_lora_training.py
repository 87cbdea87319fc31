"""LoRA training through the shared Trainer (TrainingConfig.lora_*): the Generator on a
tiny GPT-2 and the Classifier on a tiny DistilBERT train only their adapters (and the
classifier's head), the base weights stay bit-identical, the merged export loads in
transformers with the trained model's logits, and the adapter alone loads in peft."""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from _reference import LABELS, TEXTS, tiny_distilbert_dir as _tiny_distilbert  # noqa: E402
from reviewgen.core.config import TrainingConfig  # noqa: E402
from reviewgen.tasks.classifier import Classifier  # noqa: E402
from reviewgen.tasks.generator import Generator  # noqa: E402


def test_training_config_lora_fields():
    config = TrainingConfig.for_generator(lora_rank=8, lora_alpha=16, lora_targets=["c_attn", "c_proj"])
    assert TrainingConfig.from_dict(config.to_dict()).lora_targets == ["c_attn", "c_proj"]
    for bad in (dict(lora_rank=-1), dict(lora_alpha=0.0), dict(lora_dropout=1.0), dict(lora_targets=[]),
                dict(lora_targets=3)):
        with pytest.raises(ValueError, match="lora_"):
            TrainingConfig.for_generator(**bad)


def test_generator_lora_training(tiny_gpt2_dir, texts, tmp_path):
    generator = Generator.from_pretrained(tiny_gpt2_dir, max_length=64)
    before_loss = generator.evaluate(texts[1])["loss"]
    base = {name: generator.model.param(name).copy() for name in generator.model.param_names()}
    config = TrainingConfig.for_generator(num_train_epochs=2, per_device_train_batch_size=8,
                                          gradient_accumulation_steps=1, learning_rate=5e-3,
                                          lora_rank=4, lora_alpha=8, lora_dropout=0.05, lora_targets="all")
    result = generator.train(texts[0], texts[1], config=config, output_dir=str(tmp_path / "run"))
    assert result.epochs_completed == 2
    model = generator.model
    assert model.lora_rank == 4
    assert len(model.core.gradients) < len(model.parameters) / 2  # no gradient memory for the base
    trainable = model.trainable_names()
    assert trainable and all(".lora." in name for name in trainable)
    assert {name.split(".")[1] for name in trainable} == {"0", "1", "2"}  # every block, not the last only
    for name, value in base.items():
        assert np.array_equal(model.param(name), value), f"{name} moved"
    assert generator.evaluate(texts[1])["loss"] < before_loss - 0.05

    # the merged export is an ordinary GPT-2 with the trained model's logits
    generator.save(str(tmp_path / "merged"))
    reference = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "merged")).eval()
    batch = next(iter(generator.batches(texts[1][:3], 3)))
    ours = np.asarray(model.forward(batch["tokens"], batch["attention_mask"]))
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor(batch["tokens"], dtype=torch.long),
                           attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long)).logits.numpy()
    keep = batch["attention_mask"].astype(bool)
    np.testing.assert_allclose(ours[keep], theirs[keep], rtol=1e-4, atol=1e-4)

    # the adapter alone, on the original base, in peft
    peft = pytest.importorskip("peft")
    generator.save_adapter(str(tmp_path / "adapter"))
    assert os.path.isfile(tmp_path / "adapter" / "adapter_config.json")
    base_model = transformers.GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir)
    adapted = peft.PeftModel.from_pretrained(base_model, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        theirs = adapted(input_ids=torch.tensor(batch["tokens"], dtype=torch.long),
                         attention_mask=torch.tensor(batch["attention_mask"], dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours[keep], theirs[keep], rtol=1e-4, atol=1e-4)

    # and a fresh generator picks it up again
    again = Generator.from_pretrained(tiny_gpt2_dir, max_length=64)
    again.load_adapter(str(tmp_path / "adapter"))
    np.testing.assert_array_equal(again.model.parameters, model.parameters)


def test_classifier_lora_training(tmp_path):
    directory = _tiny_distilbert(tmp_path / "tiny")
    classifier = Classifier.from_pretrained(str(directory), labels=[1, 2, 3, 4, 5], max_length=24, seed=1)
    before = classifier.state_dict()
    config = TrainingConfig.for_classifier(num_train_epochs=2, per_device_train_batch_size=4,
                                           gradient_accumulation_steps=1, learning_rate=5e-3, lora_rank=2,
                                           lora_alpha=4, lora_targets=["q_lin", "v_lin", "lin1", "lin2"], seed=3)
    result = classifier.train(TEXTS, LABELS, TEXTS[:6], LABELS[:6], config=config, output_dir=str(tmp_path / "run"))
    assert result.epochs_completed == 2
    model = classifier.model
    assert sorted({n.split(".")[3] for n in model.trainable_names() if ".lora." in n}) == ["fc", "fc2", "q", "v"]
    after = classifier.state_dict()
    for name, value in before.items():
        moved = not np.array_equal(after[name], value)
        assert moved == name.startswith("cls."), f"{name}: moved={moved}"
    assert any(not np.allclose(after[n], 0) for n in after if n.endswith(".lora.q.B"))
    classifier.save(str(tmp_path / "merged"))
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "merged")).eval()
    encoded = classifier.encode(TEXTS[:4])
    ours = classifier.logits(TEXTS[:4])
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor(encoded.ids, dtype=torch.long),
                           attention_mask=torch.tensor(encoded.attention_mask, dtype=torch.long)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)
