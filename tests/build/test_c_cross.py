"""The pure-C core and its tests built for aarch64 (the ops' baseline copy, compiled
for NEON by the cross compiler) and run under qemu-user: make -C csrc cross-aarch64."""
import fcntl
import re
import shutil
import subprocess
from pathlib import Path

import pytest

CSRC = Path(__file__).resolve().parents[2] / "csrc"


@pytest.mark.skipif(shutil.which("aarch64-linux-gnu-gcc") is None or shutil.which("qemu-aarch64") is None
                    or shutil.which("make") is None,
                    reason="needs aarch64-linux-gnu-gcc and qemu-aarch64 (apt-get install gcc-aarch64-linux-gnu qemu-user)")
def test_core_builds_and_passes_its_tests_on_aarch64():
    (CSRC / "build").mkdir(exist_ok=True)
    with open(CSRC / "build" / "pytest.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = subprocess.run(["make", "-C", str(CSRC), "cross-aarch64", "-j2"], capture_output=True, text=True,
                                timeout=1800)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    passed, failed = map(int, re.findall(r"^(\d+) passed, (\d+) failed$", result.stdout, re.MULTILINE)[-1])
    assert failed == 0 and passed > 100, output[-3000:]
    assert "ok   test_model_cpu_isas_agree" in result.stdout
    objdump = shutil.which("aarch64-linux-gnu-objdump")
    if objdump:  # it really is an aarch64 binary
        header = subprocess.run([objdump, "-f", str(CSRC / "build" / "aarch64" / "test_core")],
                                capture_output=True, text=True).stdout
        assert "aarch64" in header
