"""Where a study's data comes from: a data root for the full data sets, the
bundled sample otherwise, and a clear message when a file is missing."""
import json
import pathlib

import pandas as pd
import pytest

from reviewgen import data
from reviewgen.experiments.study import ClassifierStudy, sample_study, study_split, with_data_root

EXPERIMENTS = pathlib.Path(__file__).parents[2] / "notebooks" / "experiments"


def test_load_source_reads_samples_and_names_the_full_data_sets():
    assert len(data.load_source("sample:sst5")) == 1000
    frame = pd.DataFrame({"text": ["a"], "rating": [1]})
    assert data.load_source(frame) is frame
    with pytest.raises(data.DataFileError) as caught:
        data.load_source("no/such/train.csv")
    message = str(caught.value)
    assert "no/such/train.csv" in message
    assert "ai.stanford.edu/~amaas/data/sentiment" in message and "nlp.stanford.edu/sentiment" in message
    assert "sample:imdb" in message


def test_with_data_root_keeps_the_data_set_folder_and_file(tmp_path):
    study = ClassifierStudy.load(str(EXPERIMENTS / "minilm_sst5.json"))
    assert study.train == "../../shared/data/sst5/train.csv"  # the committed config is unchanged
    for name in ("train", "dev", "test"):
        (tmp_path / "sst5").mkdir(exist_ok=True)
        (tmp_path / "sst5" / f"{name}.csv").write_text("text,rating\nfine,3\n")
    moved = with_data_root(study, str(tmp_path))
    assert moved.train == str(tmp_path / "sst5" / "train.csv")
    assert moved.dev == str(tmp_path / "sst5" / "dev.csv") and moved.test == str(tmp_path / "sst5" / "test.csv")
    assert moved.training == study.training and moved.max_length == study.max_length
    assert study.train == "../../shared/data/sst5/train.csv"  # a copy


def test_with_data_root_names_every_missing_file_and_the_sample(tmp_path):
    study = ClassifierStudy.load(str(EXPERIMENTS / "minilm_imdb.json"))
    with pytest.raises(data.DataFileError) as caught:
        with_data_root(study, str(tmp_path))
    message = str(caught.value)
    assert str(tmp_path / "imdb-aclimdb" / "train.csv") in message
    assert str(tmp_path / "imdb-aclimdb" / "test.csv") in message
    assert "aclImdb_v1.tar.gz" in message and "sample:imdb" in message


@pytest.mark.parametrize("config, sample", [("minilm_imdb.json", "imdb"), ("minilm_sst5.json", "sst5")])
def test_sample_study_splits_the_bundled_sample_into_files(tmp_path, config, sample):
    study = ClassifierStudy.load(str(EXPERIMENTS / config))
    local = sample_study(study, str(tmp_path / "data"), test_fraction=0.2)
    train, test = pd.read_csv(local.train), pd.read_csv(local.test)
    rows = data.load_sample(sample).drop_duplicates("text")
    assert len(train) + len(test) == len(rows)
    assert not set(train["text"]) & set(test["text"])
    share = test["rating"].value_counts() / rows["rating"].value_counts()
    assert ((share - 0.2).abs() < 0.01).all()  # stratified by rating
    assert local.dev == "" and local.scale == study.scale and local.training == study.training
    local.max_train_per_label, local.max_eval = 8, 12
    train_rows, dev_rows, test_rows, _ = study_split(local)
    assert len(test_rows) == 12 and len(dev_rows) == 12 and train_rows["label"].value_counts().max() == 8
    assert not set(train_rows["text"]) & set(test_rows["text"])
    local.save(str(tmp_path / "study.json"))  # the saved study names the split files
    assert json.loads((tmp_path / "study.json").read_text())["train"] == local.train


def test_sample_study_refuses_a_scale_without_sample(tmp_path):
    with pytest.raises(ValueError, match="no bundled sample"):
        sample_study(ClassifierStudy(scale="stars5"), str(tmp_path))
