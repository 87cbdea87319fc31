"""The property-based suites (tests/core/test_properties.py, test_properties_loops.py) and the corrupt-file loader
cases (tests/weights/test_corrupt_files.py) against an ASan + UBSan build of
the extension: reviewgen._core compiled with -fsanitize=address,undefined into a temporary
folder, the Python package copied beside it, the sanitizer runtimes preloaded into the
interpreter. UBSan halts at its first report; leak checking is off (CPython's own
allocations are not ours).

Opt-in, since the build alone takes ~30 s: REVIEWGEN_SANITIZED_EXTENSION=1.
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = [
    pytest.mark.skipif(os.environ.get("REVIEWGEN_SANITIZED_EXTENSION") != "1",
                       reason="set REVIEWGEN_SANITIZED_EXTENSION=1 to build and test the sanitized extension"),
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is needed for the sanitizer build"),
]


def _runtime(name):
    path = subprocess.run(["gcc", f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
    return path if os.path.isabs(path) and os.path.exists(path) else None


def test_property_suite_under_asan_and_ubsan(tmp_path):
    asan, ubsan = _runtime("libasan.so"), _runtime("libubsan.so")
    if not (asan and ubsan):
        pytest.skip("gcc's libasan/libubsan runtimes are not installed")
    flags = "-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g"
    env = dict(os.environ, CFLAGS=flags, LDFLAGS="-fsanitize=address,undefined", REVIEWGEN_CUDA="off")
    build = subprocess.run([sys.executable, "setup.py", "build_ext", "--build-lib", str(tmp_path / "lib"),
                            "--build-temp", str(tmp_path / "tmp")], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=900)
    assert build.returncode == 0, (build.stdout + build.stderr)[-4000:]
    package = tmp_path / "pkg" / "reviewgen"
    shutil.copytree(ROOT / "reviewgen", package, ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    for built in (tmp_path / "lib" / "reviewgen").glob("_core*.so"):
        shutil.copy(built, package)
    env = dict(os.environ, LD_PRELOAD=f"{asan} {ubsan}", ASAN_OPTIONS="detect_leaks=0:abort_on_error=0",
               UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1", OMP_NUM_THREADS="2",
               PYTHONPATH=os.pathsep.join([str(tmp_path / "pkg"), str(ROOT / "tests")]))
    where = subprocess.run([sys.executable, "-c", "import reviewgen._core as c; print(c.__file__)"],
                           cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert where.stdout.strip().startswith(str(package)), where.stdout + where.stderr
    # The corrupt-file loaders too; not the address-space-limited child (ASan reserves terabytes).
    run = subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "tests" / "core" / "test_properties.py"),
                          str(ROOT / "tests" / "core" / "test_properties_loops.py"), str(ROOT / "tests" / "weights" / "test_corrupt_files.py"), "-k", "not huge_block_count",
                          "-q", "-p", "no:cacheprovider", "-p", "no:warnings"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=900)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-6000:]
    assert "runtime error" not in output and "AddressSanitizer" not in output, output[-6000:]
    assert " passed" in output
