"""`reviewgen prepare --out` writes train.csv, val.csv and report.json atomically, never through a symlink."""
import os

import pandas as pd


def test_cli_prepare_outputs_do_not_follow_planted_symlinks(tmp_path):
    from reviewgen.cli import main
    from reviewgen.experiments import runs

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    out = tmp_path / "out"
    assert main(["prepare", "sample:imdb", "--out", str(out)]) == 0  # an earlier run's folder
    names = ("train.csv", "val.csv", "report.json")
    for name in names:
        os.remove(out / name)
        os.symlink(victim, out / name)
    assert main(["prepare", "sample:imdb", "--out", str(out)]) == 2  # not empty: refused
    assert main(["prepare", "sample:imdb", "--out", str(out), "--overwrite"]) == 0
    assert victim.read_text() == "keep"
    for name in names:
        assert (out / name).is_file() and not (out / name).is_symlink()
    assert len(pd.read_csv(out / "train.csv")) > 0
    assert not [n for n in os.listdir(out) if n.startswith(".rg-tmp-")]
    assert runs.read_run(str(out))["finished"] is True
