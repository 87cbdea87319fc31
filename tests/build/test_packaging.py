"""What `pip install .` ships: every subpackage of reviewgen and the bundled sample data."""
import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[2]


def test_every_package_folder_and_the_sample_data_are_shipped():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    shipped = set(find_packages(str(ROOT), **config["packages"]["find"]))
    folders = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "reviewgen").rglob("*.py")
               if "sample_data" not in p.parts and "__pycache__" not in p.parts}
    assert folders <= shipped, f"not shipped: {sorted(folders - shipped)}"
    for package, patterns in config["package-data"].items():
        assert package in shipped
        matched = {path.name for pattern in patterns for path in (ROOT / package.replace(".", "/")).glob(pattern)}
        assert matched, f"{package}: {patterns} match no file"
    import reviewgen.data

    for name, (file_name, _) in reviewgen.data.SAMPLE_NAMES.items():
        assert file_name in matched, f"sample {name} ({file_name}) is not in the package data"
