import os
from pathlib import Path

import pytest

# Full datasets live outside the repository; tests that need them skip without them.
SHARED_DATA = Path(os.environ.get("REVIEWGEN_SHARED_DATA", "/work/shared/data"))


@pytest.fixture
def imdb_train_csv() -> Path:
    """Path to the full aclImdb train.csv, or skip the test."""
    path = SHARED_DATA / "imdb-aclimdb" / "train.csv"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path


@pytest.fixture
def sst5_train_csv() -> Path:
    """Path to the full SST-5 train.csv, or skip the test."""
    path = SHARED_DATA / "sst5" / "train.csv"
    if not path.is_file():
        pytest.skip(f"{path} not available")
    return path
