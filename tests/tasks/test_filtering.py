"""reviewgen.experiments.filtering: every rule and drop reason on a fake classifier, the
regeneration loop's counts, and the embedding classifier on a tiny encoder."""
import numpy as np
import pytest

from reviewgen.experiments.filtering import EmbeddingClassifier, FilterConfig, ReviewFilter, generate_filtered


class KeywordClassifier:
    """'stars<k>' in the text -> label k with probability p (default 0.7), the rest spread."""

    labels = [1, 2, 4, 5]

    def predict_proba(self, texts):
        out = np.full((len(texts), 4), 0.1)
        for row, text in enumerate(texts):
            for col, label in enumerate(self.labels):
                if f"stars{label}" in text:
                    p = 0.9 if "sure" in text else 0.7
                    out[row] = (1 - p) / 3
                    out[row, col] = p
        return out


TRAIN = ["one two three four five six seven eight nine ten eleven twelve thirteen fourteen"]


def test_reasons_in_order():
    flt = ReviewFilter(KeywordClassifier(), FilterConfig(), train_texts=TRAIN)
    texts = ["stars5 short",                                          # empty (< 5 words)
             "stars5 " + TRAIN[0],                                     # copy of a 12-word span
             "stars5 a fine film with a good plot",                    # kept
             "stars5 a fine film with a good plot!",                   # duplicate (same words)
             "stars5 a fine film with a good plot and cast",           # near duplicate (Jaccard 5/7)
             "stars4 a different film entirely here",                  # label
             "stars5 another very different review text"]              # kept
    rows = flt.check(texts, [5] * len(texts))
    assert [r["reason"] for r in rows] == ["empty", "copy", "", "duplicate", "duplicate", "mismatch", ""]
    assert rows[5]["predicted"] == 4 and rows[2]["probability"] == pytest.approx(0.7)
    again = flt.check(["stars5 another very different review text"], [5])  # remembered across calls
    assert again[0]["reason"] == "duplicate"


def test_assistant_replies_are_dropped_not_reviews_that_apologise():
    from reviewgen.experiments.evaluation import reads_as_assistant

    replies = ["stars5 As an AI language model, I cannot watch films.",
               "stars5 Here is the revised version of your review: a great film.",
               "stars5 To add more depth to my previous response, the film is great.",
               "stars5 I'm sorry for the confusion. Here's the rewritten version: fine."]
    reviews = ["stars5 I'm sorry, but this is the best film of the year.",   # real reviewers apologise too
               "stars5 I read the user comments before I went; they were right.",
               "stars5 The robot in this film is an AI with a heart of gold."]
    assert [reads_as_assistant(t) for t in replies] == [True] * 4
    assert [reads_as_assistant(t) for t in reviews] == [False] * 3
    rows = ReviewFilter(KeywordClassifier(), FilterConfig()).check(replies + reviews, [5] * 7)
    assert [r["reason"] for r in rows] == ["assistant"] * 4 + [""] * 3
    kept = ReviewFilter(KeywordClassifier(), FilterConfig(drop_assistant=False)).check(replies, [5] * 4)
    assert [r["reason"] for r in kept] == [""] * 4


def test_near_rule_threshold_and_bad_input():
    near = ReviewFilter(KeywordClassifier(), FilterConfig(rule="near", near_duplicate=1.0))
    rows = near.check(["stars4 one two three four", "stars2 one two three five", "stars1 x y z w v"], [5, 5, 2])
    assert [r["reason"] for r in rows] == ["", "mismatch", ""]
    strict = ReviewFilter(KeywordClassifier(), FilterConfig(threshold=0.8))
    rows = strict.check(["stars5 one two three four", "stars5 sure one two three four five"], [5, 5])
    assert [r["reason"] for r in rows] == ["threshold", ""]
    with pytest.raises(ValueError, match="wanted label"):
        strict.check(["stars3 a b c d e"], [3])
    with pytest.raises(ValueError, match="rule"):
        FilterConfig(rule="maybe")
    with pytest.raises(ValueError, match="threshold"):
        FilterConfig(threshold=1.5)
    with pytest.raises(TypeError):
        ReviewFilter(object())


def _fake_generator(plan):
    """plan[label] = list of rounds, each a list of texts."""
    calls = []

    def generate(label, n, round_):
        calls.append((label, n, round_))
        return plan[label][round_ - 1][:n]
    return generate, calls


def test_regenerates_until_enough_are_kept_and_counts_add_up():
    plan = {5: [["stars5 good film number %d is here" % i if i % 2 else "stars1 bad film %d is here" % i
                 for i in range(4)] for _ in range(3)],
            1: [["stars1 truly awful film %s %d" % (w, i) for i in range(4)] for w in ("x", "y", "z")]}
    # label 5 rounds repeat the same texts: round 2 and 3 only bring duplicates
    generate, calls = _fake_generator(plan)
    flt = ReviewFilter(KeywordClassifier(), FilterConfig(near_duplicate=1.0))
    result = generate_filtered(generate, [5, 1], flt, keep_per_label=3, batch_per_label=4, max_rounds=3)
    counts = result.counts
    assert counts.loc[5, "generated"] == 12 and counts.loc[5, "kept"] == 2
    assert counts.loc[5, "mismatch"] == 6 and counts.loc[5, "duplicate"] == 4
    assert counts.loc[1, "kept"] == 3 and counts.loc[1, "generated"] == 4 and counts.loc[1, "surplus"] == 1
    assert [c for c in calls if c[0] == 1] == [(1, 4, 1)]  # enough after one round
    for label in (5, 1):
        row = counts.loc[label]
        assert row["generated"] == row["kept"] + row[["empty", "assistant", "copy", "duplicate", "mismatch", "threshold",
                                                      "top_n", "surplus"]].sum()
    assert counts.loc["all", "generated"] == 16
    assert len(result.accepted) == 5 and len(result.accepted) + len(result.rejected) == 16
    assert all(r["label"] == r["predicted"] for r in result.accepted)


def test_top_n_keeps_the_most_confident():
    texts = ["stars5 sure film one two three", "stars5 plain film four five six",
             "stars5 sure film seven eight nine", "stars5 plain film ten eleven twelve"]
    generate, _ = _fake_generator({5: [texts]})
    flt = ReviewFilter(KeywordClassifier(), FilterConfig(top_n=2, near_duplicate=1.0))
    result = generate_filtered(generate, [5], flt, batch_per_label=4, max_rounds=1)
    assert sorted(r["text"] for r in result.accepted) == sorted([texts[0], texts[2]])
    assert result.counts.loc[5, "top_n"] == 2


def test_embedding_classifier_on_a_tiny_encoder(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("transformers")
    from _reference import LABELS, TEXTS, tiny_distilbert_dir as _tiny_distilbert
    from reviewgen.tasks.encoder import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(str(_tiny_distilbert(tmp_path / "enc")), max_length=16)
    clf = EmbeddingClassifier(encoder, Cs=[1000.0]).fit(TEXTS, LABELS)
    assert clf.labels == [1, 2, 4, 5]
    probs = clf.predict_proba(TEXTS)
    assert probs.shape == (12, 4) and np.allclose(probs.sum(axis=1), 1)
    assert (clf.predict(TEXTS) == np.asarray(LABELS)).mean() >= 0.9  # a nearly free head fits its rows
    assert clf.evaluate(TEXTS, LABELS)["accuracy"] >= 0.9
    with pytest.raises(RuntimeError):
        EmbeddingClassifier(encoder).predict_proba(["x"])


def test_embedding_classifier_with_a_tfidf_head(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("transformers")
    from _reference import LABELS, TEXTS, tiny_distilbert_dir as _tiny_distilbert
    from reviewgen.tasks.encoder import SentenceEncoder

    encoder = SentenceEncoder.from_pretrained(str(_tiny_distilbert(tmp_path / "enc")), max_length=16)
    alone = EmbeddingClassifier(encoder, Cs=[1.0]).fit(TEXTS, LABELS)
    both = EmbeddingClassifier(encoder, Cs=[1.0], tfidf_weight=0.5).fit(TEXTS, LABELS)
    only = EmbeddingClassifier(encoder, Cs=[1.0], tfidf_weight=1.0).fit(TEXTS, LABELS)
    np.testing.assert_allclose(both.predict_proba(TEXTS),
                               0.5 * alone.predict_proba(TEXTS) + 0.5 * only.predict_proba(TEXTS), rtol=1e-6)
    assert not np.allclose(alone.predict_proba(TEXTS), only.predict_proba(TEXTS))
    with pytest.raises(ValueError, match="tfidf_weight"):
        EmbeddingClassifier(encoder, tfidf_weight=2.0)


def test_a_starved_label_is_filled_below_the_threshold_and_flagged():
    """Label 2 never reaches p >= 0.8: with fill_below_threshold its rule-passing reviews
    fill it up, the most confident first, flagged and counted; mismatches never do."""
    plan = {2: [["stars2 sure dull film %s %d" % (w, i) if i < 2 else "stars2 dull film %s %d" % (w, i)
                 for i in range(3)] + ["stars5 wrong film is here %s" % w] for w in ("x", "y")],
            5: [["stars5 sure great film %s %d" % (w, i) for i in range(4)] for w in ("x", "y")]}
    for fill in (False, True):
        generate, _ = _fake_generator(plan)
        flt = ReviewFilter(KeywordClassifier(), FilterConfig(threshold=0.8, near_duplicate=1.0,
                                                             fill_below_threshold=fill))
        result = generate_filtered(generate, [2, 5], flt, keep_per_label=6, batch_per_label=4, max_rounds=2)
        counts = result.counts
        kept2 = [r for r in result.accepted if r["label"] == 2]
        if not fill:
            assert counts.loc[2, "kept"] == 4 and counts.loc[2, "threshold"] == 2 and counts.loc[2, "fallback"] == 0
            continue
        assert counts.loc[2, "kept"] == 6 and counts.loc[2, "fallback"] == 2 and counts.loc[2, "threshold"] == 0
        assert counts.loc[2, "mismatch"] == 2
        assert sum(r["fallback"] for r in kept2) == 2 and all(r["predicted"] == 2 for r in kept2)
        assert counts.loc[5, "fallback"] == 0 and counts.loc[5, "kept"] == 6
        row = counts.loc[2]
        assert row["generated"] == row["kept"] + row[
            ["empty", "assistant", "copy", "duplicate", "mismatch", "threshold", "top_n", "surplus"]].sum()
        assert all(r["reason"] for r in result.rejected)
