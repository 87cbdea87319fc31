"""Atomic files and folders: the old content or the new, never a mixture, never through a symlink."""
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from reviewgen.core.files import TEMP_PREFIX, atomic_directory, atomic_write, remove_stale_temporaries


def test_write_replaces_and_failure_keeps_the_old_file(tmp_path):
    path = tmp_path / "accepted.csv"
    with atomic_write(path) as f:
        f.write("a\n" * 101)
    with pytest.raises(RuntimeError):
        with atomic_write(path) as f:
            f.write("b\n" * 41)
            raise RuntimeError("failed at row 41")
    assert path.read_text() == "a\n" * 101
    assert os.listdir(tmp_path) == ["accepted.csv"]  # no temporary left
    with atomic_write(path, "wb") as f:
        f.write(b"new")
    assert path.read_bytes() == b"new"


def test_a_planted_symlink_is_replaced_not_written_through(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / "config.json").symlink_to(outside)
    with atomic_write(out / "config.json") as f:
        f.write("{}")
    assert outside.read_text() == "precious"
    assert not (out / "config.json").is_symlink() and (out / "config.json").read_text() == "{}"


def test_sigkill_mid_write_leaves_the_old_file_and_a_removable_temporary(tmp_path):
    path = tmp_path / "summary.json"
    path.write_text("old")
    script = textwrap.dedent(f"""
        import os, signal
        from reviewgen.core.files import atomic_write
        with atomic_write({str(path)!r}) as f:
            f.write("half")
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=os.getcwd())
    assert result.returncode == -signal.SIGKILL
    assert path.read_text() == "old"
    stale = [n for n in os.listdir(tmp_path) if n.startswith(TEMP_PREFIX)]
    assert len(stale) == 1
    assert remove_stale_temporaries(str(tmp_path)) == stale
    assert os.listdir(tmp_path) == ["summary.json"]


def test_directory_is_replaced_as_a_whole(tmp_path):
    model = tmp_path / "model"
    with atomic_directory(model) as tmp:
        for name in ("config.json", "model.safetensors"):
            with open(os.path.join(tmp, name), "w") as f:
                f.write("v1 " + name)
    assert sorted(os.listdir(model)) == ["config.json", "model.safetensors"]
    with pytest.raises(KeyboardInterrupt):
        with atomic_directory(model) as tmp:
            with open(os.path.join(tmp, "config.json"), "w") as f:
                f.write("v2")
            raise KeyboardInterrupt
    assert (model / "config.json").read_text() == "v1 config.json"
    with atomic_directory(model) as tmp:
        with open(os.path.join(tmp, "config.json"), "w") as f:
            f.write("v3")
    assert os.listdir(model) == ["config.json"]  # the old files went with the old folder
    assert sorted(os.listdir(tmp_path)) == ["model"]


def test_directory_refuses_a_symlink_or_a_file(tmp_path):
    target = tmp_path / "elsewhere"
    target.mkdir()
    (tmp_path / "link").symlink_to(target)
    with pytest.raises(FileExistsError, match="symlink"):
        with atomic_directory(tmp_path / "link"):
            pass
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        with atomic_directory(tmp_path / "file"):
            pass
