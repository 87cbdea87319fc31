"""reviewgen.experiments.augmentation: real only against real + synthetic, on one held-out test set."""
import json

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("sklearn")

from reviewgen.cli import main  # noqa: E402
from reviewgen.experiments.augmentation import AugmentationConfig, CachedEncoder, run_augmentation, summarize  # noqa: E402

WORDS = {1: ["awful", "dreadful", "worst"], 2: ["dull", "weak", "tedious"], 4: ["nice", "solid", "enjoyable"],
         5: ["masterpiece", "brilliant", "superb"]}
FILLER = ["movie", "film", "plot", "actor", "scene", "story", "the", "a", "was", "it"]


def _reviews(per_label, seed, signal):
    """Reviews whose label shows in a word with probability `signal` (else filler only)."""
    rng = np.random.default_rng(seed)
    rows = []
    for label, words in WORDS.items():
        for i in range(per_label):
            tokens = list(rng.choice(FILLER, 6))
            if rng.random() < signal:
                tokens.insert(int(rng.integers(0, 6)), str(rng.choice(words)))
            rows.append({"text": " ".join(tokens) + f" #{seed}-{label}-{i}", "label": label})
    return pd.DataFrame(rows)


class BagOfWords:
    """A stand-in sentence encoder: counts of the label words (the experiment only needs .encode)."""

    vocabulary = [w for words in WORDS.values() for w in words]
    dim = len(vocabulary)
    calls = 0

    def encode(self, texts):
        BagOfWords.calls += len(texts)
        return np.array([[t.split().count(w) for w in self.vocabulary] for t in texts], np.float32)


def test_informative_synthetic_reviews_help_and_counts_are_reported():
    real = _reviews(40, seed=1, signal=0.5)
    synthetic = _reviews(40, seed=2, signal=1.0)
    test = _reviews(30, seed=3, signal=1.0)
    config = AugmentationConfig(real_per_label=[2, 8], synthetic_per_real=3, seeds=[0, 1, 2], tfidf_weight=0.0)
    table = run_augmentation(real, synthetic, test, config, encoder=BagOfWords())
    assert len(table) == 2 * 3 * 2
    assert set(table["arm"]) == {"real", "real+synthetic"}
    with_synthetic = table[table["arm"] == "real+synthetic"]
    assert (with_synthetic[with_synthetic.real_per_label == 2]["n_synthetic"] == 2 * 3 * 4).all()
    assert (table[table["arm"] == "real"]["n_synthetic"] == 0).all()
    summary = summarize(table)
    assert summary.loc[(2, "real+synthetic"), "macro_f1"] > summary.loc[(2, "real"), "macro_f1"]
    assert summary.loc[(2, "real"), "seeds"] == 3
    assert np.isfinite(summary["macro_f1_std"]).all()


def test_a_small_pool_is_used_whole_and_shows_in_the_table():
    real = _reviews(20, seed=1, signal=0.5)
    synthetic = _reviews(3, seed=2, signal=1.0)
    test = _reviews(10, seed=3, signal=1.0)
    config = AugmentationConfig(real_per_label=[5], synthetic_per_real=5, seeds=[0], tfidf_weight=0.0)
    table = run_augmentation(real, synthetic, test, config, encoder=BagOfWords())
    assert table[table.arm == "real+synthetic"]["n_synthetic"].tolist() == [12]


def test_each_text_is_embedded_once():
    encoder = CachedEncoder(BagOfWords())
    BagOfWords.calls = 0
    encoder.encode(["a awful", "b superb", "a awful"])
    encoder.encode(["b superb", "c dull"])
    assert BagOfWords.calls == 3


def test_test_texts_never_train():
    """A synthetic review equal to a test one is refused; real reviews also in the
    test set are left out of the real pool (IMDB has a few in train and test)."""
    real = _reviews(10, seed=1, signal=0.5)
    synthetic = _reviews(5, seed=2, signal=1.0)
    with pytest.raises(ValueError, match="held out"):
        run_augmentation(real, synthetic, synthetic.head(8),
                         AugmentationConfig(real_per_label=[2], seeds=[0]), encoder=BagOfWords())
    test = pd.concat([real.head(3), _reviews(4, seed=3, signal=1.0)], ignore_index=True)
    lines = []
    table = run_augmentation(real, synthetic, test, AugmentationConfig(real_per_label=[10], seeds=[0],
                                                                       tfidf_weight=0.0),
                             encoder=BagOfWords(), log=lines.append)
    assert table["n_real"].iloc[0] == 4 * 10 - 3
    assert any("3 real reviews also in the test set" in line for line in lines)
    with pytest.raises(ValueError, match="column 'label'"):
        run_augmentation(real, real[["text"]], real, AugmentationConfig(seeds=[0]), encoder=BagOfWords())
    with pytest.raises(ValueError, match="real_per_label"):
        AugmentationConfig(real_per_label=[0])


def test_the_augment_command_writes_runs_and_summary(tmp_path, capsys):
    """The CLI end to end, with a tiny random encoder instead of MiniLM."""
    from _reference import tiny_distilbert_dir

    encoder_dir = tiny_distilbert_dir(tmp_path / "enc")
    ratings = {1: 1, 2: 3, 4: 8, 5: 10}
    for name, seed, n in (("real", 1, 12), ("test", 3, 6)):
        frame = _reviews(n, seed=seed, signal=0.8)
        frame.assign(rating=frame["label"].map(ratings)).drop(columns="label").to_csv(tmp_path / f"{name}.csv",
                                                                                      index=False)
    _reviews(12, seed=2, signal=1.0).to_csv(tmp_path / "accepted.csv", index=False)
    config = tmp_path / "augment.json"
    config.write_text(json.dumps({"classifier": str(encoder_dir), "max_length": 16}))
    out = tmp_path / "out"
    code = main(["augment", "--synthetic", str(tmp_path / "accepted.csv"), "--real", str(tmp_path / "real.csv"),
                 "--test", str(tmp_path / "test.csv"), "--config", str(config), "--real-per-label", "2,4",
                 "--seeds", "0,1", "--out", str(out)])
    assert code == 0
    runs = pd.read_csv(out / "augmentation_runs.csv")
    assert len(runs) == 2 * 2 * 2
    summary = pd.read_csv(out / "augmentation_summary.csv")
    assert {"real_per_label", "arm", "macro_f1", "macro_f1_std"} <= set(summary.columns)
    assert "macro_f1" in capsys.readouterr().out
