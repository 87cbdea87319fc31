"""Tests for reviewgen.text.data: cleaning, filtering, labels, balancing, splits, readers, sample."""

import gzip
import json
import math

import numpy as np
import pandas as pd
import pytest

from reviewgen import data
from reviewgen.text.data import DataError

# Per-label counts of aclImdb train.csv under ceil(rating / 2), from its SOURCE.md.
IMDB_TRAIN_LABEL_COUNTS = {1: 7384, 2: 5116, 3: 0, 4: 5505, 5: 6995}


def frame(texts, ratings):
    return pd.DataFrame({"text": list(texts), "rating": list(ratings)})


# ---------------------------------------------------------------- cleaning


def test_seed_worked_example_is_reproduced_exactly():
    raw = (
        "Something like this movie won't happen again. This is literally the best "
        "superhero movie ever!!! <br/><br/>Thank u MCU 😊"
    )
    expected = (
        "Something like this movie won't happen again. This is literally the best "
        "superhero movie ever! Thank u MCU"
    )
    assert data.clean_text(raw) == expected


def test_seed_worked_example_generator_text():
    kept, _ = data.clean_reviews(
        frame(["the best superhero movie ever!!! <br/><br/>Thank u MCU 😊"], [10]), "imdb10"
    )
    assert kept["generator_text"].tolist() == [
        "Review of 5. the best superhero movie ever! Thank u MCU"
    ]
    assert data.generator_prefix(3) == "Review of 3."
    assert data.generator_text(np.int64(2), "Bad.") == "Review of 2. Bad."


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("Great 😊😂 film 👍🏽 ok", "Great film ok"),  # emoji incl. skin-tone modifier
        ("Family 👨\u200d👩\u200d👧 night 🇺🇸!", "Family night !"),  # ZWJ sequence, flag
        ("Nice ☀\ufe0f day ✨", "Nice day"),
    ],
)
def test_emojis_are_removed(raw, expected):
    assert data.clean_text(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("See http://www.imdb.com/title/tt0111161/ for more", "See for more"),
        ("Link:https://example.org/a?b=c&d=e.", "Link"),
        ("visit www.example.com today", "visit today"),
        ("VISIT WWW.EXAMPLE.COM OR HTTPS://X.ORG now", "VISIT OR now"),
    ],
)
def test_hyperlinks_are_removed(raw, expected):
    assert data.clean_text(raw) == expected


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("one<br />two<br/>three<br>four", "one two three four"),
        ("<i>italic</i> and <a href=\"http://x.com\">link</a>", "italic and link"),
        ("before<!-- a comment -->after", "before after"),
        ("Tom &amp; Jerry", "Tom Jerry"),  # & decoded, then not an allowed character
        ("it&#39;s &quot;fine&quot;", "it's \"fine\""),
        ("caf&eacute; &#x263A;", "café"),
        ("a < b and c > d", "a b and c d"),  # comparisons are not tags
    ],
)
def test_html_tags_and_entities(raw, expected):
    assert data.clean_text(raw) == expected


def test_only_letters_digits_quotes_and_five_punctuation_marks_survive():
    raw = "A-B c/d e:f; g? h* i_j #1 $2 50% (ok), \"yes\" 'no' end."
    assert data.clean_text(raw) == "A B c d e f g h i j 1 2 50 (ok), \"yes\" 'no' end."


def test_unicode_letters_are_kept_and_normalised():
    assert data.clean_text("Amélie, Niño, Über, Ærø, Крым") == "Amélie, Niño, Über, Ærø, Крым"
    decomposed = "Ame\u0301lie"  # e + combining acute
    assert data.clean_text(decomposed) == "Amélie"


def test_typographic_quotes_become_ascii():
    assert data.clean_text("don’t ‘x’ “y” don´t don`t") == "don't 'x' \"y\" don't don't"
    assert data.clean_text("so\x85 bad \x96 really") == "so. bad really"


def test_runs_of_exclamation_periods_and_spaces_collapse():
    assert data.clean_text("Wow!!!!   So... good!!") == "Wow! So. good!"
    assert data.clean_text("  tabs\tand\nnewlines  ") == "tabs and newlines"
    # "?!" leaves a lone "!" after the symbol filter; runs of other marks are not merged.
    assert data.clean_text("Really?!?! (no),,") == "Really ! ! (no),,"


def test_missing_or_empty_text_cleans_to_empty_string():
    assert data.clean_text(None) == ""
    assert data.clean_text(float("nan")) == ""
    assert data.clean_text("  <br /> 😊 http://x.y ---  ") == ""


def test_clean_texts_matches_clean_text_and_is_idempotent():
    sample = data.load_sample("imdb")["text"].head(300).tolist()
    cleaned = data.clean_texts(sample)
    assert cleaned == [data.clean_text(t) for t in sample]
    assert data.clean_texts(cleaned) == cleaned
    assert all("<" not in t and "  " not in t and "!!" not in t for t in cleaned)


# ---------------------------------------------------------------- masked insults


@pytest.mark.parametrize(
    "text",
    ["what a f*** up", "this is s**t.", "sh*t", "a b*tch", "f***ing awful", "****ing awful",
     "F*** this", "total a**hole", "b****<br />"],
)
def test_masked_insults_are_detected(text):
    assert data.has_masked_insult(text)


@pytest.mark.parametrize(
    "text",
    ["**** out of *****", "***1/2 stars", "I *really* liked it", "***SPOILERS***",
     "rated 5*", "2 * 3 = 6", "no stars here", None],
)
def test_star_ratings_and_emphasis_are_not_insults(text):
    assert not data.has_masked_insult(text)


def test_masked_insult_rows_are_dropped_and_counted():
    kept, dropped = data.clean_reviews(
        frame(["fine film", "what a f*** mess", "s**t<br />", "**** of ****"], [10, 1, 2, 9]),
        "imdb10",
    )
    assert kept["row_id"].tolist() == [0, 3]
    assert dropped["reason"].tolist() == ["masked_insult", "masked_insult"]
    assert dropped["label"].tolist() == [1, 1]


# ---------------------------------------------------------------- ratings and labels


def test_rating_edge_cases_are_dropped_with_a_reason_each():
    ratings = [np.nan, None, "", "  ", "abc", True, 0, 11, -1, 5.5, math.inf, "7", 7.0, " 10 ", 1]
    kept, dropped = data.clean_reviews(frame([f"review {i}" for i in range(len(ratings))], ratings))
    reasons = dict(zip(dropped["row_id"], dropped["reason"]))
    assert [reasons[i] for i in range(4)] == ["rating_missing"] * 4
    assert [reasons[i] for i in (4, 5)] == ["rating_not_numeric"] * 2
    assert [reasons[i] for i in (6, 7, 8, 9, 10)] == ["rating_off_scale"] * 5
    assert kept["row_id"].tolist() == [11, 12, 13, 14]
    assert kept["label"].tolist() == [4, 4, 5, 1]
    assert kept["rating"].tolist() == [7.0, 7.0, 10.0, 1.0]


def test_first_applicable_reason_wins_and_each_row_counts_once():
    texts = ["f*** it", "f*** it", "   ", "good", "good", "<br />"]
    ratings = ["x", 3, 3, 3, 4, 12]
    kept, dropped = data.clean_reviews(frame(texts, ratings))
    assert dict(zip(dropped["row_id"], dropped["reason"])) == {
        0: "rating_not_numeric", 1: "masked_insult", 2: "empty_text",
        4: "duplicate_text", 5: "rating_off_scale",
    }
    assert len(kept) + len(dropped) == len(texts)
    kept, dropped = data.clean_reviews(frame(texts, ratings), drop_duplicates=False)
    assert kept["row_id"].tolist() == [3, 4]


def test_label_mapping_imdb10_is_ceil_half():
    kept, _ = data.clean_reviews(frame([f"r{i}" for i in range(1, 11)], range(1, 11)), "imdb10")
    assert kept["label"].tolist() == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]


def test_label_mapping_sst5_is_rating_plus_one():
    kept, dropped = data.clean_reviews(frame([f"r{i}" for i in range(6)], [0, 1, 2, 3, 4, 5]), "sst5")
    assert kept["label"].tolist() == [1, 2, 3, 4, 5]
    assert dropped["reason"].tolist() == ["rating_off_scale"]


def test_label_mapping_stars5_is_identity():
    kept, dropped = data.clean_reviews(frame([f"r{i}" for i in range(7)], [0, 1, 2, 3, 4, 5, 6]), "stars5")
    assert kept["label"].tolist() == [1, 2, 3, 4, 5]
    assert dropped["reason"].tolist() == ["rating_off_scale", "rating_off_scale"]


def test_user_scale_can_be_registered_and_used_by_name():
    percent = data.Scale(
        "test_percent", 0, 100, lambda r: np.minimum(5, np.floor(r / 20) + 1), integer=False
    )
    try:
        data.register_scale(percent)
        kept, _ = data.clean_reviews(frame(list("abcdef"), [0, 19.5, 20, 59, 99, 100]), "test_percent")
        assert kept["label"].tolist() == [1, 1, 2, 3, 5, 5]
        with pytest.raises(ValueError, match="already registered"):
            data.register_scale(percent)
    finally:
        data.SCALES.pop("test_percent", None)


def test_scale_mapping_outside_labels_and_unknown_scale_raise():
    broken = data.Scale("broken", 1, 10, lambda r: r)  # 6..10 are not labels
    with pytest.raises(DataError, match="maps to label 6"):
        data.clean_reviews(frame(["a", "b"], [5, 6]), broken)
    with pytest.raises(DataError, match="unknown rating scale 'nope'.*imdb10"):
        data.prepare(frame(["a"], [1]), scale="nope")
    with pytest.raises(ValueError):
        data.Scale("backwards", 10, 1, lambda r: r)


# ---------------------------------------------------------------- balancing


def labelled(counts, start=0):
    """A cleaned-looking frame with `counts[label]` rows per label and unique row ids."""
    labels = np.concatenate([np.full(n, label) for label, n in counts.items()]).astype(np.int64)
    row_id = np.arange(start, start + len(labels))
    return pd.DataFrame({"row_id": row_id, "text": [f"t{i}" for i in row_id], "label": labels})


def test_balance_downsamples_to_smallest_present_label_and_skips_empty():
    source = labelled({1: 10, 2: 7, 4: 5, 5: 9})  # label 3 empty, as in IMDb
    balanced = data.balance_labels(source, seed=1)
    assert balanced["label"].value_counts().to_dict() == {1: 5, 2: 5, 4: 5, 5: 5}
    assert balanced["row_id"].is_unique
    assert set(balanced["row_id"]) <= set(source["row_id"])
    # All five rows of the smallest label survive.
    assert set(balanced.loc[balanced.label == 4, "row_id"]) == set(source.loc[source.label == 4, "row_id"])


def test_balance_is_deterministic_by_seed():
    source = labelled({1: 50, 2: 30, 5: 40})
    first = data.balance_labels(source, seed=3)
    assert first.equals(data.balance_labels(source, seed=3))
    assert not first["row_id"].equals(data.balance_labels(source, seed=4)["row_id"])


def test_balance_of_empty_frame_is_empty():
    assert len(data.balance_labels(labelled({1: 0}))) == 0


def test_prepare_reports_empty_label_and_balances_over_present_ones():
    texts = [f"review number {i}" for i in range(40)]
    ratings = [1] * 12 + [4] * 8 + [8] * 10 + [10] * 10  # labels 1, 2, 4, 5; no 3
    prepared = data.prepare(frame(texts, ratings), val_fraction=0.25, seed=0)
    report = prepared.report
    assert report.empty_labels == [3]
    assert report.labels_before_balancing == {1: 12, 2: 8, 3: 0, 4: 10, 5: 10}
    assert report.labels_after_balancing == {1: 8, 2: 8, 3: 0, 4: 8, 5: 8}
    assert (report.rows_train, report.rows_val) == (24, 8)
    assert prepared.val["label"].value_counts().to_dict() == {1: 2, 2: 2, 4: 2, 5: 2}
    assert list(prepared.train.columns) == ["row_id", "text", "rating", "label", "generator_text"]


# ---------------------------------------------------------------- splits


def test_validation_split_is_stratified_disjoint_and_seeded():
    source = labelled({1: 100, 2: 100, 4: 100, 5: 100})
    train, val = data.split_validation(source, 0.1, seed=7)
    assert len(val) == 40 and len(train) == 360
    assert val["label"].value_counts().to_dict() == {1: 10, 2: 10, 4: 10, 5: 10}
    assert set(train.row_id).isdisjoint(val.row_id)
    assert set(train.row_id) | set(val.row_id) == set(source.row_id)
    again_train, again_val = data.split_validation(source, 0.1, seed=7)
    assert again_train.equals(train) and again_val.equals(val)
    assert set(data.split_validation(source, 0.1, seed=8)[1].row_id) != set(val.row_id)


def test_validation_fraction_zero_and_bad_fractions():
    source = labelled({1: 5, 2: 5})
    train, val = data.split_validation(source, 0.0)
    assert len(train) == 10 and len(val) == 0
    for bad in (-0.1, 1.0, 1.5):
        with pytest.raises(DataError, match="val_fraction"):
            data.split_validation(source, bad)
    with pytest.raises(DataError, match="sum to 1"):
        data.split_stratified(source, [0.5, 0.6])


def test_generator_and_classifier_parts_are_disjoint_and_stratified():
    source = labelled({1: 40, 2: 20, 5: 60})
    generator, classifier = data.split_generator_classifier(source, 0.5, seed=0)
    assert set(generator.row_id).isdisjoint(classifier.row_id)
    assert len(generator) + len(classifier) == len(source)
    assert generator["label"].value_counts().to_dict() == {1: 20, 2: 10, 5: 30}


def test_prepare_generator_and_classifier_gives_disjoint_balanced_sets():
    texts = [f"distinct review {i}" for i in range(120)]
    ratings = [1, 3, 7, 9] * 30
    generator, classifier = data.prepare_generator_and_classifier(
        frame(texts, ratings), generator_fraction=0.5, val_fraction=0.2, seed=2
    )
    generator_ids = set(generator.train.row_id) | set(generator.val.row_id)
    classifier_ids = set(classifier.train.row_id) | set(classifier.val.row_id)
    assert generator_ids.isdisjoint(classifier_ids)
    assert generator.report.part == "generator" and classifier.report.part == "classifier"
    assert generator.report.labels_after_balancing == {1: 15, 2: 15, 3: 0, 4: 15, 5: 15}
    assert len(generator.val) == 12


def test_k_disjoint_balanced_samples():
    source = labelled({1: 40, 2: 35, 4: 31, 5: 50})
    samples = data.sample_disjoint_balanced(source, k=3, n=40, seed=0)
    assert [len(s) for s in samples] == [40, 40, 40]
    for sample in samples:
        assert sample["label"].value_counts().to_dict() == {1: 10, 2: 10, 4: 10, 5: 10}
    ids = [set(s.row_id) for s in samples]
    assert ids[0].isdisjoint(ids[1]) and ids[0].isdisjoint(ids[2]) and ids[1].isdisjoint(ids[2])
    again = data.sample_disjoint_balanced(source, k=3, n=40, seed=0)
    assert all(a.equals(b) for a, b in zip(samples, again))
    # Each sample can then keep 20 % for evaluation, as in the sweep.
    train, evaluation = data.split_validation(samples[0], 0.2, seed=0)
    assert len(evaluation) == 8 and set(train.row_id).isdisjoint(evaluation.row_id)


def test_k_disjoint_samples_raise_when_data_is_short():
    source = labelled({1: 40, 2: 35, 4: 31, 5: 50})
    with pytest.raises(data.NotEnoughDataError, match=r"need 33 rows of each label.*\{4: 31\}.*n=40"):
        data.sample_disjoint_balanced(source, k=3, n=44)
    with pytest.raises(DataError, match="not a multiple of the 4 present labels"):
        data.sample_disjoint_balanced(source, k=3, n=42)
    with pytest.raises(DataError, match="positive"):
        data.sample_disjoint_balanced(source, k=0, n=4)


# ---------------------------------------------------------------- readers


ROWS = [("Great <br />film!!", 9), ("Awful, f*** it", 1), ("Meh", "abc"), ("Okay 😊", 6)]


def test_read_csv_with_custom_columns(tmp_path):
    path = tmp_path / "reviews.csv"
    pd.DataFrame({"id": range(4), "review": [r[0] for r in ROWS], "stars": [r[1] for r in ROWS]}).to_csv(
        path, index=False
    )
    loaded = data.read_reviews(path, text_column="review", rating_column="stars")
    assert list(loaded.columns) == ["text", "rating"]
    assert loaded["text"].tolist() == [r[0] for r in ROWS]
    assert loaded["rating"].tolist() == ["9", "1", "abc", "6"]


def test_read_csv_keeps_literal_na_text_and_reads_gzip(tmp_path):
    path = tmp_path / "reviews.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write('text,rating\nNA,3\n"",4\nnull,\n')
    loaded = data.read_reviews(path)
    assert loaded["text"].tolist()[0] == "NA" and loaded["text"].tolist()[2] == "null"
    assert pd.isna(loaded["text"][1]) and pd.isna(loaded["rating"][2])


def test_read_jsonl_with_custom_columns_and_missing_keys(tmp_path):
    path = tmp_path / "reviews.jsonl"
    lines = [json.dumps({"body": text, "score": rating}) for text, rating in ROWS]
    lines.append(json.dumps({"body": "no score here"}))
    path.write_text("\n".join(lines) + "\n\n", encoding="utf-8")
    loaded = data.read_reviews(path, text_column="body", rating_column="score")
    assert loaded["text"].tolist()[:4] == [r[0] for r in ROWS]
    assert loaded["rating"].tolist()[:4] == [9, 1, "abc", 6] and loaded["rating"][4] is None


def test_read_parquet_with_custom_columns(tmp_path):
    path = tmp_path / "reviews.parquet"
    pd.DataFrame({"review": ["good", "bad"], "stars": [8, 2], "extra": [0, 0]}).to_parquet(path)
    loaded = data.read_reviews(path, text_column="review", rating_column="stars")
    assert loaded.to_dict("list") == {"text": ["good", "bad"], "rating": [8, 2]}


def test_byte_order_mark_is_tolerated(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("text,rating\ncaf\u00e9,5\n".encode("utf-8-sig"))
    assert data.read_reviews(path)["text"].tolist() == ["caf\u00e9"]
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes('{"text": "x", "rating": 2}\n'.encode("utf-8-sig"))
    assert data.read_reviews(jsonl)["rating"].tolist() == [2]


def test_explicit_format_overrides_extension(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text("text,rating\nfine,5\n", encoding="utf-8")
    with pytest.raises(data.DataFileError, match=r"reviews\.txt: unknown file extension"):
        data.read_reviews(path)
    assert data.read_reviews(path, format="csv")["text"].tolist() == ["fine"]
    with pytest.raises(DataError, match="unknown format 'xml'"):
        data.read_reviews(path, format="xml")


def test_prepare_from_each_format_gives_the_same_result(tmp_path):
    source = pd.DataFrame({"t": [r[0] for r in ROWS], "r": [str(r[1]) for r in ROWS]})
    source.to_csv(tmp_path / "a.csv", index=False)
    source.to_json(tmp_path / "a.jsonl", orient="records", lines=True)
    source.to_parquet(tmp_path / "a.parquet")
    reports = []
    for name in ("a.csv", "a.jsonl", "a.parquet"):
        prepared = data.prepare(tmp_path / name, text_column="t", rating_column="r", val_fraction=0.0,
                                allow_drop=True)  # label 1's only row is an insult
        reports.append(prepared.report)
        assert sorted(prepared.train["text"]) == ["Great film!", "Okay"]
    assert all(r.dropped == reports[0].dropped for r in reports)
    assert reports[0].dropped["masked_insult"] == 1 and reports[0].dropped["rating_not_numeric"] == 1


def test_missing_column_error_names_file_and_columns(tmp_path):
    path = tmp_path / "reviews.csv"
    path.write_text("review,score\nfine,5\n", encoding="utf-8")
    with pytest.raises(data.MissingColumnError, match=r"reviews\.csv: missing column\(s\) 'text', 'rating'.*'review', 'score'"):
        data.read_reviews(path)
    jsonl = tmp_path / "reviews.jsonl"
    jsonl.write_text('{"text": "x"}\n', encoding="utf-8")
    with pytest.raises(data.MissingColumnError, match=r"reviews\.jsonl: missing column\(s\) 'rating'"):
        data.read_reviews(jsonl)
    parquet = tmp_path / "reviews.parquet"
    pd.DataFrame({"text": ["x"]}).to_parquet(parquet)
    with pytest.raises(data.MissingColumnError, match="'rating'"):
        data.read_reviews(parquet)
    with pytest.raises(data.MissingColumnError, match="input frame.*'stars'"):
        data.prepare(pd.DataFrame({"text": ["x"], "rating": [1]}), rating_column="stars")


@pytest.mark.parametrize("name", ["latin1.csv", "latin1.jsonl"])
def test_non_utf8_file_is_rejected(tmp_path, name):
    path = tmp_path / name
    if name.endswith(".csv"):
        path.write_bytes("text,rating\ncaf\u00e9 cr\u00e8me,5\n".encode("latin-1"))
    else:
        path.write_bytes('{"text": "caf\u00e9", "rating": 5}\n'.encode("latin-1"))
    with pytest.raises(data.DataFileError, match=rf"{name}: not valid UTF-8 \(byte 0xe9"):
        data.read_reviews(path)


def test_missing_empty_and_directory_paths_are_rejected(tmp_path):
    with pytest.raises(data.DataFileError, match=r"nope\.csv: file does not exist"):
        data.read_reviews(tmp_path / "nope.csv")
    for name in ("empty.csv", "empty.jsonl", "empty.parquet"):
        (tmp_path / name).write_bytes(b"")
        with pytest.raises(data.DataFileError, match=rf"{name}: file is empty"):
            data.read_reviews(tmp_path / name)
    (tmp_path / "blank.jsonl").write_text("\n\n", encoding="utf-8")
    with pytest.raises(data.DataFileError, match="no JSON records"):
        data.read_reviews(tmp_path / "blank.jsonl")
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(data.DataFileError, match="is a directory"):
        data.read_reviews(tmp_path / "folder.csv")


def test_malformed_files_are_rejected(tmp_path):
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text('{"text": "a", "rating": 1}\n{"text": oops}\n', encoding="utf-8")
    with pytest.raises(data.DataFileError, match=r"bad\.jsonl: line 2: invalid JSON"):
        data.read_reviews(bad_json)
    not_objects = tmp_path / "list.jsonl"
    not_objects.write_text("[1, 2]\n", encoding="utf-8")
    with pytest.raises(data.DataFileError, match="line 1: expected a JSON object"):
        data.read_reviews(not_objects)
    fake_parquet = tmp_path / "fake.parquet"
    fake_parquet.write_text("text,rating\na,1\n", encoding="utf-8")
    with pytest.raises(data.DataFileError, match=r"fake\.parquet: not a readable Parquet file"):
        data.read_reviews(fake_parquet)
    broken_gzip = tmp_path / "broken.csv.gz"
    broken_gzip.write_bytes(b"\x1f\x8b\x08\x00garbage")
    with pytest.raises(data.DataFileError, match=r"broken\.csv\.gz"):
        data.read_reviews(broken_gzip)


def test_header_only_csv_is_refused_before_any_work(tmp_path):
    path = tmp_path / "header.csv"
    path.write_text("text,rating\n", encoding="utf-8")
    with pytest.raises(data.NotEnoughDataError, match=r"header\.csv: no usable rows \(read 0"):
        data.prepare(path)


# ---------------------------------------------------------------- report


def test_report_is_readable_and_serialisable():
    texts = ["good one", "bad s**t", "meh", "x"]
    prepared = data.prepare(frame(texts, [9, 1, "n/a", 3]), val_fraction=0.0, allow_drop=True)
    report = prepared.report
    as_dict = report.to_dict()
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert as_dict["rows_read"] == 4 and as_dict["dropped"]["masked_insult"] == 1
    assert as_dict["dropped"]["rating_not_numeric"] == 1
    assert as_dict["labels_before_balancing"] == {"1": 0, "2": 1, "3": 0, "4": 0, "5": 1}
    text = str(report)
    assert "rows read" in text and "masked_insult" in text and "empty labels         1, 3, 4" in text


# ---------------------------------------------------------------- bundled sample and real data


def test_bundled_samples_load_with_expected_strata():
    imdb = data.load_sample("imdb")
    assert list(imdb.columns) == ["text", "rating"]
    assert imdb["rating"].value_counts().to_dict() == {r: 375 for r in (1, 2, 3, 4, 7, 8, 9, 10)}
    assert imdb["text"].str.contains("<br />").any()  # raw, uncleaned text
    sst5 = data.load_sample("sst5")
    assert sst5["rating"].value_counts().to_dict() == {r: 200 for r in range(5)}
    with pytest.raises(DataError, match="unknown sample 'yelp'"):
        data.load_sample("yelp")


def test_bundled_imdb_sample_prepares_over_four_labels():
    prepared = data.prepare(data.load_sample("imdb"), scale="imdb10", seed=0)
    report = prepared.report
    assert report.empty_labels == [3]
    after = report.labels_after_balancing
    assert after[3] == 0 and len({after[label] for label in (1, 2, 4, 5)}) == 1
    assert set(prepared.train["label"]) == {1, 2, 4, 5}
    assert prepared.train["generator_text"].str.match(r"Review of [1245]\. \S").all()


def test_bundled_samples_are_unchanged_rows_of_the_full_data(imdb_train_csv, sst5_train_csv):
    for name, path in (("imdb", imdb_train_csv), ("sst5", sst5_train_csv)):
        full = pd.read_csv(path, dtype={"text": str}, keep_default_na=False)
        sample = data.load_sample(name)
        merged = sample.merge(full.drop_duplicates(), on=["text", "rating"], how="left", indicator=True)
        assert (merged["_merge"] == "both").all(), name


def test_real_imdb_train_matches_source_counts(imdb_train_csv):
    prepared = data.prepare(imdb_train_csv, scale="imdb10", seed=0)
    report = prepared.report
    assert report.rows_read == 25_000
    assert report.rows_kept + sum(report.dropped.values()) == 25_000
    # Kept rows plus rows dropped for text reasons give back SOURCE.md's label counts.
    for label, expected in IMDB_TRAIN_LABEL_COUNTS.items():
        assert report.labels_before_balancing[label] + report.dropped_by_label[label] == expected
    assert report.dropped["rating_missing"] == report.dropped["rating_off_scale"] == 0
    assert report.dropped["duplicate_text"] > 0 and report.dropped["masked_insult"] > 0
    assert report.empty_labels == [3]
    after = report.labels_after_balancing
    smallest = min(report.labels_before_balancing[label] for label in (1, 2, 4, 5))
    assert after == {1: smallest, 2: smallest, 3: 0, 4: smallest, 5: smallest}
    assert report.rows_train + report.rows_val == 4 * smallest
    assert abs(report.rows_val - 0.1 * 4 * smallest) <= 4
    assert set(prepared.train.row_id).isdisjoint(prepared.val.row_id)
    assert not prepared.train["text"].str.contains("<br").any()
