"""Data pipeline: read rated reviews, clean them, map ratings to 5 labels,
balance, and split.

This reproduces the seed study's preprocessing:

1. clean the text (emojis, hyperlinks, HTML, disallowed symbols, repeated
   spaces / ``!`` / ``.``),
2. drop reviews with a masked insult (``f***``, ``s**t``) or an unusable
   rating, and reviews left empty by cleaning,
3. map the rating to a label 1..5 (``ceil(rating / 2)`` on IMDb's 1-10 scale),
4. prefix generator text with ``Review of {label}.``,
5. down-sample to the same number of reviews per label,
6. hold out a stratified validation fraction (10 % by default).

Every stage is a plain function over pandas DataFrames; :func:`prepare` chains
them and returns the splits together with a :class:`StageReport`.

The module depends only on numpy and pandas (pyarrow for Parquet) so it can be
imported without the compiled core.
"""

from __future__ import annotations

import gzip
import html
import io
import json
import math
import os
import re
import unicodedata
from dataclasses import dataclass, field
from importlib import resources
from typing import Callable, Iterable, Sequence, Union

import numpy as np
import pandas as pd

__all__ = [
    "DataError",
    "DataFileError",
    "MissingColumnError",
    "NotEnoughDataError",
    "ScaleMismatchError",
    "parse_scale",
    "Scale",
    "SCALES",
    "register_scale",
    "get_scale",
    "read_reviews",
    "clean_text",
    "clean_texts",
    "has_masked_insult",
    "generator_prefix",
    "generator_text",
    "clean_reviews",
    "balance_labels",
    "split_stratified",
    "split_validation",
    "split_generator_classifier",
    "sample_disjoint_balanced",
    "StageReport",
    "PreparedData",
    "prepare",
    "prepare_generator_and_classifier",
    "load_sample",
    "load_source",
    "sample_path",
    "SAMPLE_NAMES",
    "FULL_DATASETS",
    "full_data_hint",
    "DROP_REASONS",
]


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


class DataError(ValueError):
    """Any problem with input data: unreadable file, missing column, too few rows."""


class DataFileError(DataError):
    """A file cannot be read: missing, empty, not UTF-8, malformed, unknown format."""

    def __init__(self, path, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class MissingColumnError(DataError):
    """A required column (text or rating) is not in the data."""

    def __init__(self, source: str, missing: Sequence[str], available: Sequence[str]):
        self.source = source
        self.missing = list(missing)
        self.available = list(available)
        names = ", ".join(repr(c) for c in self.missing)
        have = ", ".join(repr(c) for c in self.available) or "none"
        super().__init__(
            f"{source}: missing column(s) {names}; available columns: {have}. "
            "Pass text_column=/rating_column= to name the right ones."
        )


class NotEnoughDataError(DataError):
    """The data cannot supply the requested number of (balanced) rows."""


class ScaleMismatchError(DataError):
    """The rating scale does not fit the data: many ratings fall off it, or a
    label that had rows ends with none. Pass ``allow_drop=True`` to accept."""


# --------------------------------------------------------------------------
# Rating scales
# --------------------------------------------------------------------------

LABELS = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Scale:
    """A rating scale and how its ratings map onto the labels.

    ``to_label`` receives a float numpy array of ratings already checked to lie
    in ``[min_rating, max_rating]`` (and to be whole numbers when ``integer``)
    and returns an integer array of labels drawn from ``labels``.
    """

    name: str
    min_rating: float
    max_rating: float
    to_label: Callable[[np.ndarray], np.ndarray]
    labels: tuple = LABELS
    integer: bool = True

    def __post_init__(self):
        if not self.min_rating <= self.max_rating:
            raise ValueError(
                f"scale {self.name!r}: min_rating {self.min_rating} > max_rating {self.max_rating}"
            )
        if len(self.labels) == 0:
            raise ValueError(f"scale {self.name!r}: labels must not be empty")

    def labels_for(self, ratings) -> np.ndarray:
        """Map valid ratings to labels, checking that the mapping stays inside ``labels``."""
        ratings = np.asarray(ratings, dtype=np.float64)
        labels = np.asarray(self.to_label(ratings))
        if labels.shape != ratings.shape:
            raise DataError(
                f"scale {self.name!r}: to_label returned shape {labels.shape} for {ratings.shape} ratings"
            )
        labels = labels.astype(np.int64)
        outside = ~np.isin(labels, np.asarray(self.labels))
        if outside.any():
            bad_rating = ratings[outside][0]
            raise DataError(
                f"scale {self.name!r}: rating {bad_rating:g} maps to label "
                f"{labels[outside][0]}, which is not one of {tuple(self.labels)}"
            )
        return labels


SCALES: dict = {}


def register_scale(scale: Scale, *, replace: bool = False) -> Scale:
    """Add a user scale to the registry so it can be named in :func:`prepare`."""
    if not isinstance(scale, Scale):
        raise TypeError(f"register_scale expects a Scale, got {type(scale).__name__}")
    if scale.name in SCALES and not replace:
        raise ValueError(f"scale {scale.name!r} is already registered (pass replace=True)")
    SCALES[scale.name] = scale
    return scale


def parse_scale(spec: str) -> Scale:
    """A scale from a mapping such as ``"1-2:1,3-4:2,5-6:3,7-8:4,9-10:5"``.

    Each piece maps an inclusive range of whole-number ratings (``a-b``) or one
    rating (``a``) to a label; the ranges must cover every whole rating from
    the lowest to the highest exactly once, so no rating is silently dropped.
    """
    pieces = [piece.strip() for piece in str(spec).split(",") if piece.strip()]
    if not pieces:
        raise DataError(f"scale mapping {spec!r} is empty; write it like '1-2:1,3-4:2'")
    table = {}
    for piece in pieces:
        match = re.fullmatch(r"(-?\d+)\s*(?:-\s*(-?\d+))?\s*:\s*(-?\d+)", piece)
        if match is None:
            raise DataError(
                f"scale mapping {spec!r}: cannot read {piece!r}; each piece is 'low-high:label' "
                "or 'rating:label' with whole numbers"
            )
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) is not None else low
        label = int(match.group(3))
        if high < low:
            raise DataError(f"scale mapping {spec!r}: range {low}-{high} runs backwards")
        for rating in range(low, high + 1):
            if rating in table:
                raise DataError(f"scale mapping {spec!r}: rating {rating} is mapped twice")
            table[rating] = label
    lowest, highest = min(table), max(table)
    gaps = [rating for rating in range(lowest, highest + 1) if rating not in table]
    if gaps:
        raise DataError(f"scale mapping {spec!r}: rating(s) {gaps[:5]} between {lowest} and "
                        f"{highest} have no label")
    lookup = np.array([table[rating] for rating in range(lowest, highest + 1)], dtype=np.int64)
    labels = tuple(sorted(set(table.values())))
    return Scale(str(spec), lowest, highest, lambda r: lookup[(r - lowest).astype(np.int64)],
                 labels=labels)


def get_scale(scale: Union[str, Scale]) -> Scale:
    """A declared scale by name, a mapping string (see :func:`parse_scale`), or a Scale."""
    if isinstance(scale, Scale):
        return scale
    if isinstance(scale, str) and ":" in scale and scale not in SCALES:
        return parse_scale(scale)
    try:
        return SCALES[scale]
    except (KeyError, TypeError):
        known = ", ".join(sorted(SCALES))
        raise DataError(f"unknown rating scale {scale!r}; known scales: {known}") from None


# IMDb 1-10 stars -> 5 labels: 1-2 -> 1, 3-4 -> 2, ..., 9-10 -> 5 (the seed's ceil(r/2)).
register_scale(Scale("imdb10", 1, 10, lambda r: np.ceil(r / 2.0)))
# SST-5 stores 0 (very negative) .. 4 (very positive).
register_scale(Scale("sst5", 0, 4, lambda r: r + 1))
# Plain 1-5 stars are already labels.
register_scale(Scale("stars5", 1, 5, lambda r: r))


# --------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------

_FORMAT_BY_SUFFIX = {
    ".csv": "csv",
    ".csv.gz": "csv",
    ".jsonl": "jsonl",
    ".jsonl.gz": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
FORMATS = ("csv", "jsonl", "parquet")


def _detect_format(path: str) -> str:
    lower = path.lower()
    for suffix in _FORMAT_BY_SUFFIX:
        if lower.endswith(suffix):
            return _FORMAT_BY_SUFFIX[suffix]
    known = ", ".join(sorted(_FORMAT_BY_SUFFIX))
    raise DataFileError(
        path, f"unknown file extension; expected one of {known} (or pass format='csv'|'jsonl'|'parquet')"
    )


def _check_columns(source: str, columns: Sequence[str], wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in columns]
    if missing:
        raise MissingColumnError(source, missing, columns)


def _decode_error_message(error: UnicodeDecodeError) -> str:
    return (
        f"not valid UTF-8 (byte 0x{error.object[error.start]:02x} at offset {error.start}); "
        "re-encode the file as UTF-8"
    )


def _read_csv(path: str, text_column: str, rating_column: str) -> pd.DataFrame:
    wanted = (text_column, rating_column)
    try:
        # Everything as strings: ratings are parsed later so that "abc" can be
        # counted as a drop reason instead of failing the whole file.  Only an
        # empty field is missing; "NA" or "null" stay literal text.
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            na_values=[""],
            encoding="utf-8-sig",  # tolerate a byte-order mark from spreadsheet exports
            encoding_errors="strict",
            usecols=lambda name: name in wanted,
        )
    except UnicodeDecodeError as error:
        raise DataFileError(path, _decode_error_message(error)) from None
    except pd.errors.EmptyDataError:
        raise DataFileError(path, "file is empty (no header row)") from None
    except pd.errors.ParserError as error:
        raise DataFileError(path, f"malformed CSV: {error}") from None
    except (OSError, EOFError) as error:  # e.g. a broken .gz
        raise DataFileError(path, f"cannot read: {error}") from None
    if not set(wanted) <= set(frame.columns):
        # Re-read only the header to list what the file does have.
        header = pd.read_csv(path, nrows=0, encoding="utf-8-sig").columns
        _check_columns(path, list(header), wanted)
    return frame


def _read_jsonl(path: str, text_column: str, rating_column: str) -> pd.DataFrame:
    opener = gzip.open if path.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            raw = handle.read()
    except (OSError, EOFError) as error:
        raise DataFileError(path, f"cannot read: {error}") from None
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise DataFileError(path, _decode_error_message(error)) from None
    texts, ratings, seen_columns = [], [], set()
    for line_number, line in enumerate(content.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataFileError(path, f"line {line_number}: invalid JSON ({error.msg})") from None
        except RecursionError:
            raise DataFileError(path, f"line {line_number}: JSON nested too deeply to be a review record") from None
        if not isinstance(record, dict):
            raise DataFileError(
                path, f"line {line_number}: expected a JSON object, got {type(record).__name__}"
            )
        seen_columns.update(record)
        texts.append(record.get(text_column))
        ratings.append(record.get(rating_column))
    if not texts:
        raise DataFileError(path, "file is empty (no JSON records)")
    # A column counts as present if any record has it; absent keys are missing values.
    _check_columns(path, sorted(seen_columns), (text_column, rating_column))
    return pd.DataFrame({text_column: texts, rating_column: ratings}, dtype=object)


def _read_parquet(path: str, text_column: str, rating_column: str) -> pd.DataFrame:
    try:
        import pyarrow.parquet as pq

        schema_names = pq.read_schema(path).names
    except ImportError:
        raise DataFileError(path, "reading Parquet needs pyarrow (pip install pyarrow)") from None
    except (OSError, ValueError) as error:  # pyarrow.ArrowInvalid is a ValueError
        raise DataFileError(path, f"not a readable Parquet file ({error})") from None
    _check_columns(path, schema_names, (text_column, rating_column))
    try:
        frame = pd.read_parquet(path, columns=[text_column, rating_column])
    except (OSError, ValueError) as error:
        raise DataFileError(path, f"not a readable Parquet file ({error})") from None
    _check_parquet_types(path, frame, text_column, rating_column)
    return frame


def _first_bad_value(values, allowed) -> object:
    for value in values:
        if value is not None and not (isinstance(value, float) and math.isnan(value)) \
                and not isinstance(value, allowed):
            return value
    return None


def _check_parquet_types(path: str, frame: pd.DataFrame, text_column: str, rating_column: str) -> None:
    """Parquet columns are typed: a text column of numbers or a rating column of
    lists is a wrong file, not rows to drop one by one."""
    bad_text = _first_bad_value(frame[text_column].to_numpy(dtype=object), str)
    if bad_text is not None:
        raise DataFileError(path, f"column {text_column!r} holds {type(bad_text).__name__} values "
                                  f"(e.g. {bad_text!r}), not text")
    if not pd.api.types.is_numeric_dtype(frame[rating_column]) or pd.api.types.is_bool_dtype(frame[rating_column]):
        bad_rating = _first_bad_value(frame[rating_column].to_numpy(dtype=object), (str, int, float))
        if bad_rating is not None or pd.api.types.is_bool_dtype(frame[rating_column]):
            kind = type(bad_rating).__name__ if bad_rating is not None else "bool"
            raise DataFileError(path, f"column {rating_column!r} holds {kind} values, not ratings")


def read_reviews(
    path,
    *,
    text_column: str = "text",
    rating_column: str = "rating",
    format: str | None = None,
) -> pd.DataFrame:
    """Read a review file into a DataFrame with columns ``text`` and ``rating``.

    The format comes from the extension (.csv, .csv.gz, .jsonl, .jsonl.gz,
    .ndjson, .parquet, .pq) unless ``format`` is given.  Ratings are returned
    unparsed; :func:`clean_reviews` decides which ones are usable.
    Raises :class:`DataFileError` / :class:`MissingColumnError` (both
    :class:`DataError`) naming the file and the problem.
    """
    path = os.fspath(path)
    if format is None:
        format = _detect_format(path)
    elif format not in FORMATS:
        raise DataError(f"unknown format {format!r}; expected one of {', '.join(FORMATS)}")
    if not os.path.exists(path):
        raise DataFileError(path, "file does not exist")
    if os.path.isdir(path):
        raise DataFileError(path, "is a directory, not a file")
    if not os.access(path, os.R_OK):
        raise DataFileError(path, "permission denied")
    if os.path.getsize(path) == 0:
        raise DataFileError(path, "file is empty")
    reader = {"csv": _read_csv, "jsonl": _read_jsonl, "parquet": _read_parquet}[format]
    frame = reader(path, text_column, rating_column)
    return pd.DataFrame(
        {"text": frame[text_column].to_numpy(), "rating": frame[rating_column].to_numpy()}
    )


# --------------------------------------------------------------------------
# Text cleaning
# --------------------------------------------------------------------------

# Typographic and Windows-1252 leftovers (IMDb has many "\x96", "\x85", "´")
# mapped to the ASCII characters that survive cleaning, so "don´t" keeps its
# apostrophe instead of becoming "don t".
_PUNCTUATION_TO_ASCII = str.maketrans(
    {
        "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'", "\u2032": "'",
        "\u0091": "'", "\u0092": "'", "`": "'", "\u00b4": "'",
        "\u201c": '"', "\u201d": '"', "\u201e": '"', "\u2033": '"',
        "\u0093": '"', "\u0094": '"',
        "\u2026": "...", "\u0085": "...",
    }
)

# Opening or self-closing HTML tags and comments: <br />, <br/>, <i>, </a>, <!-- -->.
# A tag must start with a letter, "/" or "!" so "a < b > c" is not a tag.
_HTML_TAG = re.compile(r"<!--.*?-->|</?[A-Za-z][^<>]*>|<![^<>]*>", re.DOTALL)
_HTML_ENTITY = re.compile(r"&(?:#\d{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")
_HYPERLINK = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
# Anything that is not a letter/digit (str.isalnum, so accented letters stay),
# one of ' " ! . ( ) , or a space.  "_" is in \w, so it is removed explicitly.
# Emojis need no rule of their own: pictographs, skin-tone modifiers, flags,
# variation selectors and zero-width joiners are all outside this set.
_DISALLOWED = re.compile(r"(?:[^\w'\"!.(), ]|_)+")
_REPEATED_EXCLAMATION = re.compile(r"!{2,}")
_REPEATED_PERIOD = re.compile(r"\.{2,}")
_SPACES = re.compile(r" {2,}")

# A word with letters masked by "*": s**t, sh*t, b*tch, f***ing (letters on
# both sides), f*** / sh** (a short stem then stars), ****ing (stars then a
# common suffix).  Star ratings ("****", "***1/2") and emphasis ("*really*",
# "*SPOILERS*") are not insults.
_LETTER = r"[^\W\d_]"
_MASKED_INSULT = re.compile(
    rf"{_LETTER}\*+{_LETTER}"
    rf"|(?<![\w*]){_LETTER}{{1,3}}\*+(?![\w*])"
    r"|(?<![\w*])\*+(?:ing|in|ed|er|ers|hole|holes|head|s)(?!\w)",
    re.IGNORECASE,
)


def _decode_entity(match: re.Match) -> str:
    return html.unescape(match.group(0))


def clean_text(text) -> str:
    """Clean one review the way the seed study did; returns "" for missing text.

    Order: Unicode NFC; typographic quotes to ASCII; HTML tags -> space; HTML
    entities decoded (``&amp;`` -> ``&``, ``&#39;`` -> ``'``); hyperlinks ->
    space; every character other than letters, digits, ``' " ! . ( ) ,`` (so
    also every emoji) -> space; runs of ``!`` / ``.`` -> one; runs of spaces -> one; strip.
    """
    if not isinstance(text, str):
        return ""
    # Most reviews are ASCII: skip the Unicode-only steps for them (2x faster).
    ascii_only = text.isascii()
    if not ascii_only and not unicodedata.is_normalized("NFC", text):
        # Decomposed "e" + U+0301 would otherwise lose its accent to the symbol filter.
        text = unicodedata.normalize("NFC", text)
    if not ascii_only or "`" in text:
        text = text.translate(_PUNCTUATION_TO_ASCII)
    if "<" in text:
        text = _HTML_TAG.sub(" ", text)
    if "&" in text:
        text = _HTML_ENTITY.sub(_decode_entity, text)
        text = text.translate(_PUNCTUATION_TO_ASCII)  # &rsquo; and friends
    if "://" in text or "ww." in text or "WW." in text:
        text = _HYPERLINK.sub(" ", text)
    text = _DISALLOWED.sub(" ", text)
    if "!!" in text:
        text = _REPEATED_EXCLAMATION.sub("!", text)
    if ".." in text:
        text = _REPEATED_PERIOD.sub(".", text)
    text = _SPACES.sub(" ", text)
    return text.strip()


def clean_texts(texts: Iterable) -> list:
    """Vectorised :func:`clean_text` over any iterable (list, Series, array)."""
    return [clean_text(text) for text in texts]


def has_masked_insult(text) -> bool:
    """True when the raw text holds a word masked with ``*`` (``f***``, ``s**t``)."""
    return isinstance(text, str) and "*" in text and _MASKED_INSULT.search(text) is not None


# --------------------------------------------------------------------------
# Generator text
# --------------------------------------------------------------------------


def generator_prefix(label) -> str:
    """The conditioning prompt the generator continues, e.g. ``"Review of 5."``."""
    return f"Review of {int(label)}."


def generator_text(label, text: str) -> str:
    """A generator training example: ``"Review of 5. <cleaned text>"``."""
    return f"{generator_prefix(label)} {text}"


# --------------------------------------------------------------------------
# Filtering and labelling
# --------------------------------------------------------------------------

# Each dropped row is counted under the first reason that applies, in this order.
DROP_REASONS = (
    "rating_missing",  # empty / NaN / None
    "rating_not_numeric",  # "abc", true/false
    "rating_off_scale",  # outside [min, max], or fractional on an integer scale
    "masked_insult",  # raw text has a word like f*** or s**t
    "empty_text",  # missing text, or nothing left after cleaning
    "duplicate_text",  # same cleaned text as an earlier kept row (optional)
)


def _parse_ratings(raw: pd.Series) -> tuple:
    """Return (float ratings, missing mask, non-numeric mask) for raw rating values."""
    values = raw.to_numpy(dtype=object)
    missing = pd.isna(raw).to_numpy().copy()
    is_blank_string = np.fromiter(
        (isinstance(v, str) and not v.strip() for v in values), dtype=bool, count=len(values)
    )
    missing |= is_blank_string
    # Booleans are numbers to Python but never a rating.
    is_bool = np.fromiter(
        (isinstance(v, (bool, np.bool_)) for v in values), dtype=bool, count=len(values)
    )
    candidates = pd.Series(np.where(is_bool | missing, None, values), dtype=object)
    numbers = pd.to_numeric(candidates, errors="coerce").to_numpy(dtype=np.float64)
    non_numeric = ~missing & np.isnan(numbers)
    return numbers, missing, non_numeric


def clean_reviews(
    frame: pd.DataFrame,
    scale: Union[str, Scale] = "imdb10",
    *,
    drop_duplicates: bool = True,
) -> tuple:
    """Clean, filter and label a frame with columns ``text`` and ``rating``.

    Returns ``(kept, dropped)``: ``kept`` has columns ``row_id`` (position in
    the input), ``text`` (cleaned), ``rating`` (float), ``label`` (int),
    ``generator_text``; ``dropped`` is a DataFrame of ``row_id``, ``reason``,
    ``label`` (label when the rating was usable, else -1) for each removed row.
    """
    scale = get_scale(scale)
    _check_columns("input frame", list(frame.columns), ("text", "rating"))
    count = len(frame)
    raw_text = frame["text"].to_numpy(dtype=object)
    ratings, missing, non_numeric = _parse_ratings(frame["rating"])

    with np.errstate(invalid="ignore"):
        in_range = (ratings >= scale.min_rating) & (ratings <= scale.max_rating)
        if scale.integer:
            in_range &= ratings == np.floor(ratings)
    off_scale = ~missing & ~non_numeric & ~in_range
    rating_ok = ~missing & ~non_numeric & ~off_scale

    labels = np.full(count, -1, dtype=np.int64)
    if rating_ok.any():
        labels[rating_ok] = scale.labels_for(ratings[rating_ok])

    # Text checks only on rows that survived the rating checks (cheaper, and
    # a row is counted once, under its first reason).
    insult = np.zeros(count, dtype=bool)
    cleaned = np.full(count, "", dtype=object)
    candidates = np.flatnonzero(rating_ok)
    for position in candidates:
        text = raw_text[position]
        if has_masked_insult(text):
            insult[position] = True
        else:
            cleaned[position] = clean_text(text)
    empty = rating_ok & ~insult & (cleaned == "")
    keep = rating_ok & ~insult & ~empty

    duplicate = np.zeros(count, dtype=bool)
    if drop_duplicates and keep.any():
        kept_positions = np.flatnonzero(keep)
        repeated = pd.Series(cleaned[kept_positions]).duplicated(keep="first").to_numpy()
        duplicate[kept_positions[repeated]] = True
        keep &= ~duplicate

    # The masks are disjoint by construction: each check ran only on rows the
    # earlier ones let through.
    reason = np.full(count, None, dtype=object)
    for name, mask in zip(
        DROP_REASONS, (missing, non_numeric, off_scale, insult, empty, duplicate)
    ):
        reason[mask] = name
    dropped_positions = np.flatnonzero(~keep)
    dropped = pd.DataFrame(
        {
            "row_id": dropped_positions,
            "reason": reason[dropped_positions],
            "label": labels[dropped_positions],
        }
    )

    kept_positions = np.flatnonzero(keep)
    kept_text = cleaned[kept_positions]
    kept_labels = labels[kept_positions]
    kept = pd.DataFrame(
        {
            "row_id": kept_positions,
            "text": kept_text,
            "rating": ratings[kept_positions],
            "label": kept_labels,
            "generator_text": [
                generator_text(label, text) for label, text in zip(kept_labels, kept_text)
            ],
        }
    )
    return kept, dropped


# --------------------------------------------------------------------------
# Balancing and splitting
# --------------------------------------------------------------------------


def _label_counts(frame: pd.DataFrame, labels: Sequence[int]) -> dict:
    counts = frame["label"].value_counts() if len(frame) else pd.Series(dtype=np.int64)
    return {int(label): int(counts.get(label, 0)) for label in labels}


def _shuffled(frame: pd.DataFrame, rng: np.random.Generator) -> pd.DataFrame:
    return frame.iloc[rng.permutation(len(frame))].reset_index(drop=True)


def balance_labels(
    frame: pd.DataFrame, *, seed: int = 0, labels: Sequence[int] = LABELS
) -> pd.DataFrame:
    """Down-sample every present label to the size of the smallest present label.

    Labels with no rows (IMDb has no 5-6 star reviews, so label 3 is empty)
    are ignored rather than forcing everything to zero. The result is shuffled.
    """
    rng = np.random.default_rng(seed)
    counts = _label_counts(frame, labels)
    present = [label for label, n in counts.items() if n > 0]
    if not present:
        return frame.iloc[0:0].reset_index(drop=True)
    per_label = min(counts[label] for label in present)
    label_values = frame["label"].to_numpy()
    chosen = []
    for label in present:
        positions = np.flatnonzero(label_values == label)
        chosen.append(rng.choice(positions, size=per_label, replace=False))
    return _shuffled(frame.iloc[np.sort(np.concatenate(chosen))], rng)


def split_stratified(
    frame: pd.DataFrame, fractions: Sequence[float], *, seed: int = 0
) -> list:
    """Split into disjoint parts with the given fractions (summing to 1), per label.

    Each label's rows are shuffled and cut at ``round(count * cumulative
    fraction)``, so every part keeps the label proportions and every row ends
    up in exactly one part. Parts are shuffled.
    """
    fractions = [float(f) for f in fractions]
    if len(fractions) < 2 or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise DataError(f"fractions must be >= 2 values in [0, 1], got {fractions}")
    if not math.isclose(sum(fractions), 1.0, abs_tol=1e-9):
        raise DataError(f"fractions must sum to 1, got {fractions} (sum {sum(fractions):g})")
    rng = np.random.default_rng(seed)
    cumulative = np.cumsum(fractions)
    parts = [[] for _ in fractions]
    label_values = frame["label"].to_numpy()
    for label in sorted(np.unique(label_values)):
        positions = rng.permutation(np.flatnonzero(label_values == label))
        cuts = [0] + [int(round(c * len(positions))) for c in cumulative[:-1]] + [len(positions)]
        for index in range(len(fractions)):
            parts[index].append(positions[cuts[index] : cuts[index + 1]])
    result = []
    for chunks in parts:
        positions = np.sort(np.concatenate(chunks)) if chunks else np.array([], dtype=np.int64)
        result.append(_shuffled(frame.iloc[positions], rng))
    return result


def split_validation(frame: pd.DataFrame, val_fraction: float = 0.1, *, seed: int = 0) -> tuple:
    """Hold out ``val_fraction`` of each label for validation: returns ``(train, val)``."""
    if not 0.0 <= val_fraction < 1.0:
        raise DataError(f"val_fraction must be in [0, 1), got {val_fraction}")
    train, val = split_stratified(frame, [1.0 - val_fraction, val_fraction], seed=seed)
    return train, val


def split_generator_classifier(
    frame: pd.DataFrame, generator_fraction: float = 0.5, *, seed: int = 0
) -> tuple:
    """Split one cleaned dataset into disjoint ``(generator, classifier)`` parts, per label."""
    if not 0.0 < generator_fraction < 1.0:
        raise DataError(f"generator_fraction must be in (0, 1), got {generator_fraction}")
    generator, classifier = split_stratified(
        frame, [generator_fraction, 1.0 - generator_fraction], seed=seed
    )
    return generator, classifier


def sample_disjoint_balanced(
    frame: pd.DataFrame, k: int, n: int, *, seed: int = 0, labels: Sequence[int] = LABELS
) -> list:
    """Draw ``k`` disjoint samples of ``n`` rows, each balanced over the present labels.

    ``n`` must be a multiple of the number of present labels (n / labels rows
    of each). Raises :class:`NotEnoughDataError` naming the short label when
    the data cannot supply ``k * n`` balanced rows. Each sample is shuffled;
    split it further with :func:`split_validation` (e.g. 20 % for evaluation).
    """
    if k < 1 or n < 1:
        raise DataError(f"k and n must be positive, got k={k}, n={n}")
    counts = _label_counts(frame, labels)
    present = [label for label, c in counts.items() if c > 0]
    if not present:
        raise NotEnoughDataError("no labelled rows to sample from")
    if n % len(present):
        raise DataError(
            f"n={n} is not a multiple of the {len(present)} present labels {present}; "
            f"pick n divisible by {len(present)} (e.g. {n - n % len(present) or len(present)})"
        )
    per_label = n // len(present)
    needed = k * per_label
    short = {label: counts[label] for label in present if counts[label] < needed}
    if short:
        possible = min(counts[label] for label in present) // k * len(present)
        raise NotEnoughDataError(
            f"{k} disjoint samples of {n} rows need {needed} rows of each label "
            f"{present}, but label(s) {short} have fewer; at most n={possible} per sample "
            f"is possible with k={k}"
        )
    rng = np.random.default_rng(seed)
    label_values = frame["label"].to_numpy()
    samples = [[] for _ in range(k)]
    for label in present:
        positions = rng.permutation(np.flatnonzero(label_values == label))[:needed]
        for index in range(k):
            samples[index].append(positions[index * per_label : (index + 1) * per_label])
    return [_shuffled(frame.iloc[np.sort(np.concatenate(chunks))], rng) for chunks in samples]


# --------------------------------------------------------------------------
# Report and entry point
# --------------------------------------------------------------------------


@dataclass
class StageReport:
    """What each stage did: rows read, dropped per reason, label counts, empty labels."""

    source: str
    scale: str
    rows_read: int
    dropped: dict
    rows_kept: int
    labels_before_balancing: dict
    labels_after_balancing: dict
    empty_labels: list
    rows_train: int = 0
    rows_val: int = 0
    seed: int = 0
    part: str = "all"
    dropped_by_label: dict = field(default_factory=dict)

    @property
    def rows_balanced(self) -> int:
        return sum(self.labels_after_balancing.values())

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "part": self.part,
            "scale": self.scale,
            "seed": self.seed,
            "rows_read": self.rows_read,
            "dropped": dict(self.dropped),
            "dropped_by_label": {str(k): v for k, v in self.dropped_by_label.items()},
            "rows_kept": self.rows_kept,
            "labels_before_balancing": {str(k): v for k, v in self.labels_before_balancing.items()},
            "labels_after_balancing": {str(k): v for k, v in self.labels_after_balancing.items()},
            "empty_labels": list(self.empty_labels),
            "rows_balanced": self.rows_balanced,
            "rows_train": self.rows_train,
            "rows_val": self.rows_val,
        }

    def __str__(self) -> str:
        lines = [
            f"data report: {self.source} (scale {self.scale}, part {self.part}, seed {self.seed})",
            f"  rows read            {self.rows_read:>9,}",
        ]
        for reason in DROP_REASONS:
            if reason in self.dropped:
                lines.append(f"  dropped {reason:<20} {self.dropped[reason]:>9,}")
        lines.append(f"  rows kept            {self.rows_kept:>9,}")
        labels = sorted(self.labels_before_balancing)
        lines.append("  label                " + "".join(f"{label:>8}" for label in labels))
        lines.append(
            "  before balancing     "
            + "".join(f"{self.labels_before_balancing[label]:>8,}" for label in labels)
        )
        lines.append(
            "  after balancing      "
            + "".join(f"{self.labels_after_balancing.get(label, 0):>8,}" for label in labels)
        )
        empty = ", ".join(str(label) for label in self.empty_labels) or "none"
        lines.append(f"  empty labels         {empty}")
        lines.append(
            f"  balanced rows        {self.rows_balanced:>9,} -> train {self.rows_train:,}, "
            f"val {self.rows_val:,}"
        )
        return "\n".join(lines)


@dataclass
class PreparedData:
    """Result of :func:`prepare`.

    ``train`` / ``val``: balanced, shuffled, columns ``row_id, text, rating,
    label, generator_text``. ``cleaned``: every kept row before balancing
    (use it for :func:`sample_disjoint_balanced` or
    :func:`split_generator_classifier`).
    """

    train: pd.DataFrame
    val: pd.DataFrame
    cleaned: pd.DataFrame
    report: StageReport
    scale: Scale


def _load_frame(source, text_column, rating_column, format) -> tuple:
    if isinstance(source, pd.DataFrame):
        _check_columns("input frame", list(source.columns), (text_column, rating_column))
        frame = pd.DataFrame(
            {"text": source[text_column].to_numpy(), "rating": source[rating_column].to_numpy()}
        )
        return frame, "<DataFrame>"
    frame = read_reviews(
        source, text_column=text_column, rating_column=rating_column, format=format
    )
    return frame, os.fspath(source)


def _balance_and_split(
    cleaned: pd.DataFrame, dropped: pd.DataFrame, scale: Scale, *, source: str, rows_read: int,
    seed: int, val_fraction: float, balance: bool, part: str,
) -> PreparedData:
    balanced = balance_labels(cleaned, seed=seed, labels=scale.labels) if balance else cleaned
    train, val = split_validation(balanced, val_fraction, seed=seed)
    before = _label_counts(cleaned, scale.labels)
    labelled_drops = dropped[dropped["label"] >= 0]
    report = StageReport(
        source=source,
        scale=scale.name,
        rows_read=rows_read,
        dropped={reason: int((dropped["reason"] == reason).sum()) for reason in DROP_REASONS},
        rows_kept=len(cleaned),
        labels_before_balancing=before,
        labels_after_balancing=_label_counts(balanced, scale.labels),
        empty_labels=[label for label, n in before.items() if n == 0],
        rows_train=len(train),
        rows_val=len(val),
        seed=seed,
        part=part,
        dropped_by_label=_label_counts(labelled_drops, scale.labels),
    )
    return PreparedData(train=train, val=val, cleaned=cleaned, report=report, scale=scale)


# More than this share of ratings off the scale means the scale is wrong for the data.
MAX_OFF_SCALE_FRACTION = 0.05


def _check_usable(source: str, rows_read: int, cleaned: pd.DataFrame, dropped: pd.DataFrame,
                  scale: Scale, allow_drop: bool) -> None:
    """Stop before any long work when the data cannot be what the user meant."""
    reasons = dropped["reason"].value_counts().to_dict()
    if len(cleaned) == 0:
        detail = ", ".join(f"{reason} {count:,}" for reason, count in reasons.items()) or "no data rows"
        raise NotEnoughDataError(f"{source}: no usable rows (read {rows_read:,}; dropped: {detail})")
    if allow_drop:
        return
    off_scale = int(reasons.get("rating_off_scale", 0))
    if off_scale > MAX_OFF_SCALE_FRACTION * rows_read:
        known = ", ".join(sorted(SCALES))
        raise ScaleMismatchError(
            f"{source}: {off_scale:,} of {rows_read:,} ratings ({off_scale / rows_read:.0%}) fall off "
            f"scale {scale.name!r} ({scale.min_rating:g}-{scale.max_rating:g}); pick a scale that fits "
            f"(declared: {known}; or a mapping such as '1-2:1,3-4:2,5-6:3,7-8:4,9-10:5'), "
            "or pass allow_drop=True to drop them"
        )
    had_rows = dropped.loc[dropped["label"] >= 0, "label"].value_counts().to_dict()
    kept = cleaned["label"].value_counts().to_dict()
    emptied = sorted(int(label) for label, count in had_rows.items() if count and not kept.get(label))
    if emptied:
        raise ScaleMismatchError(
            f"{source}: label(s) {emptied} had rows but none survived cleaning "
            f"({', '.join(f'{label}: {had_rows[label]:,} dropped' for label in emptied)}); "
            "pass allow_drop=True to go on without them"
        )


def prepare(
    source,
    scale: Union[str, Scale] = "imdb10",
    *,
    text_column: str = "text",
    rating_column: str = "rating",
    format: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    balance: bool = True,
    drop_duplicates: bool = True,
    allow_drop: bool = False,
) -> PreparedData:
    """Read (path or DataFrame), clean, label, balance and split in one call.

    Raises :class:`NotEnoughDataError` when no row is usable and
    :class:`ScaleMismatchError` when more than 5% of the ratings fall off the
    scale or a label that had rows ends empty (unless ``allow_drop``).

    >>> prepared = prepare(load_sample("imdb"), scale="imdb10", seed=0)
    >>> print(prepared.report)            # doctest: +SKIP
    """
    scale = get_scale(scale)
    frame, name = _load_frame(source, text_column, rating_column, format)
    cleaned, dropped = clean_reviews(frame, scale, drop_duplicates=drop_duplicates)
    _check_usable(name, len(frame), cleaned, dropped, scale, allow_drop)
    return _balance_and_split(
        cleaned, dropped, scale, source=name, rows_read=len(frame), seed=seed,
        val_fraction=val_fraction, balance=balance, part="all",
    )


def prepare_generator_and_classifier(
    source,
    scale: Union[str, Scale] = "imdb10",
    *,
    generator_fraction: float = 0.5,
    text_column: str = "text",
    rating_column: str = "rating",
    format: str | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    drop_duplicates: bool = True,
    allow_drop: bool = False,
) -> tuple:
    """Clean once, split the kept rows into disjoint generator / classifier parts
    (stratified by label), then balance and split each: returns two PreparedData.

    Drop counts in both reports describe the whole input. The checks of
    :func:`prepare` apply.
    """
    scale = get_scale(scale)
    frame, name = _load_frame(source, text_column, rating_column, format)
    cleaned, dropped = clean_reviews(frame, scale, drop_duplicates=drop_duplicates)
    _check_usable(name, len(frame), cleaned, dropped, scale, allow_drop)
    generator_rows, classifier_rows = split_generator_classifier(
        cleaned, generator_fraction, seed=seed
    )
    return tuple(
        _balance_and_split(
            rows, dropped, scale, source=name, rows_read=len(frame), seed=seed,
            val_fraction=val_fraction, balance=True, part=part,
        )
        for rows, part in ((generator_rows, "generator"), (classifier_rows, "classifier"))
    )


# --------------------------------------------------------------------------
# Bundled sample
# --------------------------------------------------------------------------

# Real reviews shipped with the package (see sample_data/ATTRIBUTION.md):
# name -> (file, scale).
SAMPLE_NAMES = {
    "imdb": ("imdb_train_sample.csv.gz", "imdb10"),
    "sst5": ("sst5_train_sample.csv.gz", "sst5"),
}


def sample_path(name: str = "imdb"):
    """The bundled sample file as an importlib.resources Traversable."""
    if name not in SAMPLE_NAMES:
        raise DataError(f"unknown sample {name!r}; available: {', '.join(SAMPLE_NAMES)}")
    return _sample_data_file(SAMPLE_NAMES[name][0])


# Judges fitted on the rest of a dataset, outside its sample (sample_data/make_judge.py):
# name -> file. reviewgen.experiments.evaluation.Judge.bundled loads them.
BUNDLED_JUDGES = {"imdb": "imdb_judge.npz"}


def bundled_judge_path(name: str = "imdb"):
    """The bundled judge file as an importlib.resources Traversable."""
    if name not in BUNDLED_JUDGES:
        raise DataError(f"no bundled judge {name!r}; available: {', '.join(BUNDLED_JUDGES)}")
    return _sample_data_file(BUNDLED_JUDGES[name])


def _sample_data_file(filename: str):
    """A file of the package's sample_data folder, as an importlib.resources Traversable."""
    package = __name__.rpartition(".")[0] or "reviewgen"
    return resources.files(package).joinpath("sample_data", filename)


def load_sample(name: str = "imdb") -> pd.DataFrame:
    """Load a bundled sample of real, uncleaned reviews: columns ``text``, ``rating``.

    ``"imdb"``: 3,000 IMDb train reviews (1-10 stars, scale ``imdb10``);
    ``"sst5"``: 1,000 SST-5 train sentences (0-4, scale ``sst5``).
    """
    resource = sample_path(name)
    try:
        payload = resource.read_bytes()
    except FileNotFoundError:
        raise DataFileError(str(resource), "bundled sample is missing from the installation") from None
    frame = pd.read_csv(
        io.BytesIO(payload), compression="gzip", dtype={"text": str}, keep_default_na=False,
        encoding="utf-8",
    )
    return frame[["text", "rating"]]


# --------------------------------------------------------------------------
# Full datasets (not shipped) and sources given as "sample:<name>" or a path
# --------------------------------------------------------------------------

# Folder name under a data root -> where the full data set comes from and the
# files the studies of notebooks/experiments/ read (CSV, columns text,rating).
FULL_DATASETS = {
    "imdb-aclimdb": (
        "IMDB (Large Movie Review Dataset, Maas et al. 2011): http://ai.stanford.edu/~amaas/data/sentiment/ "
        "(aclImdb_v1.tar.gz); train.csv and test.csv, one row per review file, the rating (1-10) taken "
        "from the file name <id>_<rating>.txt"
    ),
    "sst5": (
        "SST-5 (Stanford Sentiment Treebank, Socher et al. 2013): https://nlp.stanford.edu/sentiment/ "
        "(trainDevTestTrees_PTB.zip); train.csv, dev.csv and test.csv, one row per tree, the root label "
        "(0-4) as rating and the leaves joined with spaces as text"
    ),
}


def full_data_hint() -> str:
    """Where the full data sets come from, and that the bundled samples work without them."""
    lines = [f"  {folder}/: {where}" for folder, where in FULL_DATASETS.items()]
    return ("The full data sets are not shipped; a data root holds them as CSV files (columns text,rating):\n"
            + "\n".join(lines)
            + "\nWithout them, use the bundled samples: \"sample:imdb\" (3,000 IMDB reviews) or \"sample:sst5\" "
              "(1,000 SST-5 sentences).")


def load_source(source):
    """``"sample:<name>"`` -> the bundled sample (a DataFrame, :func:`load_sample`);
    a DataFrame or an existing path -> unchanged. A path that does not exist
    raises :class:`DataFileError` saying where the full data sets come from and
    that the bundled samples work without them."""
    if isinstance(source, pd.DataFrame):
        return source
    text = os.fspath(source)
    if text.startswith("sample:"):
        return load_sample(text.split(":", 1)[1])
    if not os.path.exists(text):
        raise DataFileError(text, "no such file\n" + full_data_hint())
    return source
