"""Runs the C tests of rg_model.c (csrc/tests/test_model.c) under valgrind's
memcheck through `make -C csrc valgrind`: no invalid access, no use of
uninitialised memory, no definite or indirect leak (issues #8 and #11).

Only the model cases run here (about a minute under valgrind); `make -C csrc
valgrind` without a filter runs every C case (a few minutes)."""
import fcntl
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)


@pytest.mark.skipif(shutil.which("valgrind") is None or shutil.which("make") is None
                    or shutil.which("cc") is None,
                    reason="valgrind, make and cc are needed (apt-get install -y valgrind)")
def test_model_c_tests_are_clean_under_valgrind():
    (CSRC / "build").mkdir(exist_ok=True)
    # The same lock as the sanitizer test: one build of csrc/build at a time.
    with open(CSRC / "build" / "pytest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(["make", "-C", str(CSRC), "valgrind", "VALGRIND_FILTER=test_model", "-j2"],
                                capture_output=True, text=True, timeout=1800)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = SUMMARY.findall(result.stdout)
    assert summary, output[-6000:]
    passed, failed = map(int, summary[-1])
    assert failed == 0 and passed >= 20
    assert "ok   test_model_gradients_llama_like" in result.stdout
    assert "ERROR SUMMARY" not in result.stderr or "ERROR SUMMARY: 0 errors" in result.stderr
