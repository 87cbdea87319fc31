"""Runs the pure-C test suite (csrc/tests) through csrc/Makefile, under ASan and UBSan."""
import fcntl
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)

needs_toolchain = pytest.mark.skipif(shutil.which("make") is None or shutil.which("cc") is None,
                                     reason="make and cc are needed to build the C tests")


def run_make(*args, cwd=CSRC, timeout=900):
    return subprocess.run(["make", "-C", str(cwd), *args], capture_output=True, text=True,
                          timeout=timeout)


@needs_toolchain
def test_c_core_under_sanitizers():
    # Two test sessions at once would otherwise write the same build tree.
    (CSRC / "build").mkdir(exist_ok=True)
    with open(CSRC / "build" / "pytest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = run_make("sanitize", "-j2")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = SUMMARY.findall(result.stdout)
    assert summary, output[-6000:]
    passed, failed = map(int, summary[-1])
    assert failed == 0 and passed > 0
    # The metrics cases are among those that ran.
    assert "ok   test_metrics_confusion_3x3" in result.stdout


@needs_toolchain
def test_harness_reports_failures_and_finds_new_files(tmp_path):
    """A copy of csrc/ with one extra test file: its cases are found without any
    registration, a failing check fails the run, and a filter selects cases."""
    copy = tmp_path / "csrc"
    shutil.copytree(CSRC, copy, ignore=shutil.ignore_patterns("build"))
    (copy / "tests" / "test_zz_harness.c").write_text(
        '#include "rg_test.h"\n'
        "void test_zz_harness_passes(void) { RG_CHECK_EQ(2 + 2, 4); }\n"
        "void test_zz_harness_fails(void) { RG_CHECK_CLOSE(0.5, 0.25, 1e-9); }\n")
    built = run_make("-j2", "OPT_FLAGS=-O0", cwd=copy)
    assert built.returncode == 0, (built.stdout + built.stderr)[-6000:]
    run = subprocess.run([str(copy / "build" / "test_core"), "zz_harness"], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 1
    assert SUMMARY.findall(run.stdout)[-1] == ("1", "1")
    assert "test_zz_harness.c:3" in run.stderr
    assert "0.5, expected 0.25" in run.stderr
