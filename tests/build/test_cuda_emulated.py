"""Runs the CUDA ops' GPU-vs-CPU cases (csrc/tests/test_cuda_*.c) without a GPU:
`make -C csrc test-cuda-emu` compiles every csrc/cuda/*.cu for the CPU emulator
of csrc/tests/cuda_emu/ (kernels under ASan and UBSan) and runs the cases
against it. Every case must run (none skipped for want of a library or device)
and pass, with the emulator's thread and block orders as they are and reversed
(RG_CUDA_EMU_FLIP_ORDER=1), so a kernel that leans on one order shows."""
import fcntl
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc"
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$", re.MULTILINE)
CASE = re.compile(r"^void\s+(test_cuda_\w+)\s*\(\s*void\s*\)", re.MULTILINE)
# rg_test_cuda_ops' reasons for skipping a case (csrc/tests/cuda_pairs.c)
NO_GPU_SKIP = re.compile(r"skipped \((RG_TEST_CUDA_LIBRARY not set|no CUDA device)")

needs_toolchain = pytest.mark.skipif(shutil.which("make") is None or shutil.which("g++") is None,
                                     reason="make and g++ are needed to build the emulated CUDA library")


@needs_toolchain
@pytest.mark.parametrize("flip", ["0", "1"], ids=["order", "flipped-order"])
def test_cuda_cases_pass_on_the_emulator(flip):
    # Two test sessions at once would otherwise write the same build tree.
    (CSRC / "build").mkdir(exist_ok=True)
    with open(CSRC / "build" / "pytest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(["make", "-C", str(CSRC), "test-cuda-emu", "-j2"], capture_output=True,
                                text=True, timeout=900, env={**os.environ, "RG_CUDA_EMU_FLIP_ORDER": flip})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    summary = SUMMARY.findall(result.stdout)
    assert summary, output[-6000:]
    passed, failed = map(int, summary[-1])
    assert failed == 0 and passed > 0, output[-6000:]
    assert not NO_GPU_SKIP.search(result.stdout), output[-6000:]
    defined = set()
    for source in sorted((CSRC / "tests").glob("test_cuda_*.c")):
        defined.update(CASE.findall(source.read_text()))
    assert defined
    ran = set(re.findall(r"^ok   (test_cuda_\w+)$", result.stdout, re.MULTILINE))
    assert defined <= ran, f"not run or not passed: {sorted(defined - ran)}"
