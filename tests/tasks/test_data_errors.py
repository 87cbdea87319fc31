"""Bad data files stop with a DataError that names the file, before any long work."""
import json

import numpy as np
import pandas as pd
import pytest

from reviewgen import data
from reviewgen.data import DataError, DataFileError, NotEnoughDataError, ScaleMismatchError


def _csv(path, rows, header="text,rating"):
    path.write_text(header + "\n" + "".join(f'"{t}",{r}\n' for t, r in rows), encoding="utf-8")
    return path


def _reviews(n, rating):
    return [(f"review number {i} of a film rated {rating}", rating) for i in range(n)]


@pytest.mark.parametrize("name, content", [
    ("header_only.csv", "text,rating\n"),
    ("ratings_unparseable.csv", 'text,rating\n"good film",abc\n"bad film",xyz\n'),
    ("ratings_missing.csv", 'text,rating\n"good film",\n"bad film",\n'),
    ("texts_empty.csv", 'text,rating\n"<br />",3\n"??? ###",4\n'),
    ("ratings_null.jsonl", '{"text": "a film", "rating": null}\n{"text": "another"}\n'),
    ("texts_null.jsonl", '{"text": null, "rating": 3}\n{"rating": 4}\n'),
    ("insults_only.csv", 'text,rating\n"what s**t",1\n"f*** this",2\n'),
])
def test_files_with_no_usable_row_are_refused_naming_the_file(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(NotEnoughDataError, match=name.replace(".", r"\.") + ".*no usable rows"):
        data.prepare(path)
    with pytest.raises(NotEnoughDataError, match="no usable rows"):
        data.prepare_generator_and_classifier(path)


def test_parquet_with_wrong_column_types_is_refused(tmp_path):
    numbers_as_text = tmp_path / "numbers.parquet"
    pd.DataFrame({"text": [1, 2, 3], "rating": [1, 2, 3]}).to_parquet(numbers_as_text)
    with pytest.raises(DataFileError, match=r"numbers\.parquet.*'text' holds int"):
        data.read_reviews(numbers_as_text)
    lists_as_ratings = tmp_path / "lists.parquet"
    pd.DataFrame({"text": ["a b", "c d"], "rating": [[1], [2]]}).to_parquet(lists_as_ratings)
    with pytest.raises(DataFileError, match=r"lists\.parquet.*'rating' holds"):
        data.read_reviews(lists_as_ratings)
    booleans = tmp_path / "bools.parquet"
    pd.DataFrame({"text": ["a b", "c d"], "rating": [True, False]}).to_parquet(booleans)
    with pytest.raises(DataFileError, match=r"bools\.parquet.*'rating' holds bool"):
        data.read_reviews(booleans)
    fine = tmp_path / "fine.parquet"
    pd.DataFrame({"text": ["a good film", "a bad one"], "rating": [9.0, np.nan]}).to_parquet(fine)
    assert len(data.read_reviews(fine)) == 2


def test_deeply_nested_jsonl_is_a_clean_error(tmp_path):
    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": ' + "[" * 100_000 + "]" * 100_000 + ', "rating": 1}\n', encoding="utf-8")
    with pytest.raises(DataFileError, match=r"deep\.jsonl.*line 1.*nested too deeply"):
        data.read_reviews(path)


def test_a_scale_that_does_not_fit_stops_with_the_counts(tmp_path):
    ten_star = _csv(tmp_path / "ten_star.csv", [row for r in range(1, 11) for row in _reviews(5, r)])
    with pytest.raises(ScaleMismatchError, match=r"ten_star\.csv: 30 of 50 ratings \(60%\) fall off scale 'sst5'"):
        data.prepare(ten_star, scale="sst5")
    prepared = data.prepare(ten_star, scale="sst5", allow_drop=True)  # the user's explicit choice
    assert prepared.report.dropped["rating_off_scale"] == 30
    percent = _csv(tmp_path / "percent.csv", [row for r in range(0, 101, 5) for row in _reviews(2, r)])
    with pytest.raises(ScaleMismatchError, match=r"percent\.csv: 3\d of 42 ratings .* scale 'imdb10'"):
        data.prepare_generator_and_classifier(percent, scale="imdb10")
    # A stray rating or two is dropped and counted, as before.
    mostly_fine = _csv(tmp_path / "fine.csv", [row for r in (1, 3, 7, 9) for row in _reviews(30, r)] + [("odd", 11)])
    assert data.prepare(mostly_fine).report.dropped["rating_off_scale"] == 1


def test_a_label_emptied_by_cleaning_is_reported(tmp_path):
    rows = _reviews(10, 9) + [(f"s**t number {i}", 1) for i in range(5)]
    path = _csv(tmp_path / "emptied.csv", rows)
    with pytest.raises(ScaleMismatchError, match=r"emptied\.csv: label\(s\) \[1\] had rows.*1: 5 dropped"):
        data.prepare(path)
    assert data.prepare(path, allow_drop=True).report.labels_before_balancing[1] == 0


def test_scale_from_a_mapping_string():
    scale = data.get_scale("1-2:1,3-4:2,5-6:3,7-8:4,9-10:5")
    ratings = np.arange(1, 11, dtype=float)
    assert scale.labels_for(ratings).tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert (scale.min_rating, scale.max_rating, scale.labels) == (1, 10, (1, 2, 3, 4, 5))
    binary = data.parse_scale("0-49:0, 50-100:1")
    assert binary.labels_for(np.array([0.0, 49, 50, 100])).tolist() == [0, 0, 1, 1]
    frame = pd.DataFrame({"text": [f"film {i} was seen" for i in range(8)], "rating": [1, 2, 3, 4, 7, 8, 9, 10]})
    prepared = data.prepare(frame, scale="1-4:1,5-6:2,7-10:3", val_fraction=0.0, balance=False)
    assert sorted(prepared.train["label"].tolist()) == [1, 1, 1, 1, 3, 3, 3, 3]
    for bad, message in [("1-2:1,4-5:2", "have no label"), ("1-3:1,3-4:2", "mapped twice"),
                         ("1-2:1,x:2", "cannot read"), ("5-1:1", "backwards"), (",", "empty")]:
        with pytest.raises(DataError, match=message):
            data.parse_scale(bad)


def test_cli_prepare_refuses_a_scale_that_does_not_fit_and_takes_a_mapping(tmp_path, capsys):
    from reviewgen.cli import main

    path = _csv(tmp_path / "ten.csv", [row for r in range(1, 11) for row in _reviews(4, r)])
    assert main(["prepare", str(path), "--scale", "sst5"]) == 2
    assert "fall off scale 'sst5'" in capsys.readouterr().err
    assert main(["prepare", str(path), "--scale", "1-2:1,3-4:2,5-6:3,7-8:4,9-10:5", "--no-balance",
                 "--val-fraction", "0", "--out", str(tmp_path / "out")]) == 0
    train = pd.read_csv(tmp_path / "out" / "train.csv")
    assert train["label"].value_counts().to_dict() == {1: 8, 2: 8, 3: 8, 4: 8, 5: 8}
