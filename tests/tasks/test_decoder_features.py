"""Features of a causal LM's first blocks (SentenceEncoder.from_decoder, the demo's
default filter classifier) against transformers' hidden states, and the TF-IDF
weight chosen by cross-validation on the training rows (EmbeddingClassifier)."""
import os

import numpy as np
import pytest

from reviewgen.experiments.filtering import EmbeddingClassifier
from reviewgen.tasks.encoder import SentenceEncoder

REVIEWS = ["A wonderful film, the cast is superb and the ending moved me.",
           "Dull.",
           "I walked out after twenty minutes: the plot makes no sense and the acting is wooden, a waste."]


def _reference_features(directory, texts, layers, max_length):
    """ln_f(hidden state after `layers` blocks), mean-pooled over each text's own tokens."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    import tokenizers

    model = transformers.GPT2LMHeadModel.from_pretrained(directory).eval()
    tokenizer = tokenizers.Tokenizer.from_file(os.path.join(directory, "tokenizer.json"))
    rows = []
    with torch.no_grad():
        for text in texts:
            ids = torch.tensor([tokenizer.encode(text).ids[:max_length]])
            hidden = model.transformer(ids, output_hidden_states=True).hidden_states[layers]
            if layers < model.config.n_layer:  # transformers' last hidden state is already normed
                hidden = model.transformer.ln_f(hidden)
            rows.append(hidden[0].mean(dim=0).numpy())
    return np.stack(rows)


@pytest.mark.parametrize("layers", [1, 2, 3])
def test_features_are_the_normed_hidden_states_after_the_first_blocks(tiny_gpt2_dir, layers):
    encoder = SentenceEncoder.from_decoder(tiny_gpt2_dir, layers=layers, max_length=24, batch_size=2)
    assert encoder.model.config.n_layer == layers and not encoder.normalize
    np.testing.assert_allclose(encoder.encode(REVIEWS), _reference_features(tiny_gpt2_dir, REVIEWS, layers, 24),
                               rtol=1e-4, atol=1e-4)


def test_a_generator_object_gives_the_same_features_and_half_the_blocks_by_default(tiny_gpt2_dir):
    from reviewgen import Generator

    generator = Generator.from_pretrained(tiny_gpt2_dir, max_length=24)
    before = generator.model.state_dict()
    from_object = SentenceEncoder.from_decoder(generator, max_length=24)
    from_path = SentenceEncoder.from_decoder(tiny_gpt2_dir, max_length=24)
    assert from_object.model.config.n_layer == from_path.model.config.n_layer == 1  # 3 // 2
    np.testing.assert_allclose(from_object.encode(REVIEWS), from_path.encode(REVIEWS), rtol=1e-6)
    for name, value in generator.model.state_dict().items():  # the generator is left as it was
        np.testing.assert_array_equal(value, before[name])


def test_from_decoder_refuses_an_encoder_and_impossible_layer_counts(tiny_gpt2_dir, tmp_path):
    pytest.importorskip("transformers")
    from _reference import tiny_distilbert_dir

    from reviewgen.tasks.encoder import SentenceEncoder as Encoder
    from reviewgen.weights.bert import load_encoder

    with pytest.raises(ValueError, match="causal"):
        Encoder.from_decoder(load_encoder(str(tiny_distilbert_dir(tmp_path / "enc")), num_labels=2))
    for layers in (0, 4):
        with pytest.raises(ValueError, match="layers must lie in"):
            Encoder.from_decoder(tiny_gpt2_dir, layers=layers)
    with pytest.raises(TypeError, match="from_decoder takes"):
        Encoder.from_decoder(42)


class _Features:
    """A stand-in encoder: fixed features per text."""

    def __init__(self, table):
        self.table = table

    def encode(self, texts):
        return np.stack([self.table[t] for t in texts]).astype(np.float32)


def _rows(seed=0, per_label=12):
    rng = np.random.default_rng(seed)
    labels = [label for label in (1, 2, 4, 5) for _ in range(per_label)]
    texts = [f"review number {i} " + " ".join(rng.choice(["plot", "cast", "scene", "music"], 6))
             for i in range(len(labels))]
    return texts, labels, rng


def test_cv_weight_goes_to_tfidf_when_only_the_words_carry_the_label():
    pytest.importorskip("sklearn")
    texts, labels, rng = _rows()
    texts = [f"{t} verdict{label} verdict{label}" for t, label in zip(texts, labels)]
    noise = _Features({t: rng.normal(size=8) for t in texts})
    clf = EmbeddingClassifier(noise, Cs=[0.01, 1.0], tfidf_weight="cv", standardize=True).fit(texts, labels)
    assert set(clf.cv_accuracy) == set(EmbeddingClassifier.TFIDF_WEIGHTS)
    assert clf.cv_accuracy[clf.tfidf_weight] == max(clf.cv_accuracy.values())
    assert clf.cv_accuracy[clf.tfidf_weight] >= clf.cv_accuracy[1.0] > clf.cv_accuracy[0.0]
    assert clf.tfidf_weight >= 0.5 and clf.tfidf is not None
    assert (clf.predict(texts) == np.asarray(labels)).mean() == 1.0


def test_cv_weight_goes_to_the_features_when_only_they_carry_the_label():
    pytest.importorskip("sklearn")
    texts, labels, rng = _rows(seed=1)
    centres = {label: rng.normal(size=8) * 4 for label in (1, 2, 4, 5)}
    informative = _Features({t: centres[label] + rng.normal(size=8) for t, label in zip(texts, labels)})
    clf = EmbeddingClassifier(informative, Cs=[0.1, 1.0], tfidf_weight="cv", standardize=True).fit(texts, labels)
    assert clf.tfidf_weight <= 0.5 and clf.cv_accuracy[clf.tfidf_weight] > clf.cv_accuracy[1.0]
    mean, std = clf.scale
    assert mean.shape == (8,) and (std > 0).all()
    assert (clf.predict(texts) == np.asarray(labels)).mean() >= 0.9


def test_cv_weight_needs_two_rows_of_every_label():
    pytest.importorskip("sklearn")
    texts, labels = ["good film here", "bad film here", "fine film here"], [5, 1, 1]
    with pytest.raises(ValueError, match="at least 2 training rows"):
        EmbeddingClassifier(_Features({t: np.ones(3) * i for i, t in enumerate(texts)}), Cs=[1.0, 2.0],
                            tfidf_weight="cv").fit(texts, labels)
    with pytest.raises(ValueError, match="tfidf_weight"):
        EmbeddingClassifier(None, tfidf_weight="best")


def test_encode_reports_progress_per_batch(tiny_gpt2_dir):
    encoder = SentenceEncoder.from_decoder(tiny_gpt2_dir, layers=1, max_length=24, batch_size=2)
    calls = []
    encoder.progress = lambda done, total: calls.append((done, total))
    encoder.encode(REVIEWS)
    assert calls == [(2, 3), (3, 3)]
