"""The build: the extension imports, its exceptions map the core's statuses, and
the CUDA path is taken wherever the toolchain allows it."""
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import reviewgen
from reviewgen import _core


def test_exception_hierarchy():
    assert issubclass(reviewgen.ShapeError, reviewgen.CoreError)
    assert issubclass(reviewgen.ShapeError, ValueError)
    assert issubclass(reviewgen.LabelRangeError, ValueError)
    assert issubclass(reviewgen.NonFiniteError, ValueError)
    assert issubclass(reviewgen.EmptyInputError, ValueError)
    assert issubclass(reviewgen.StateError, RuntimeError)
    assert issubclass(reviewgen.CudaError, RuntimeError)
    assert issubclass(reviewgen.UnsupportedError, NotImplementedError)
    names = {cls.__name__ for cls in (reviewgen.ShapeError, reviewgen.LabelRangeError,
                                      reviewgen.NonFiniteError, reviewgen.EmptyInputError,
                                      reviewgen.StateError, reviewgen.CudaError,
                                      reviewgen.UnsupportedError, reviewgen.InvalidArgumentError)}
    assert len(names) == 8


def _cuda_library_files():
    folder = os.path.dirname(_core.__file__)
    return [name for name in os.listdir(folder) if name.startswith("_rgcuda")]


def test_has_cuda_agrees_with_build():
    assert reviewgen.cuda_compiled() == bool(_cuda_library_files())
    if not reviewgen.cuda_compiled():
        assert reviewgen.has_cuda() is False
    assert reviewgen.has_cuda() == (reviewgen.cuda_compiled() and _core.cuda_device_count() > 0)


def test_cuda_axpy_runs_or_names_why():
    x = np.arange(5, dtype=np.float32)
    y = np.ones(5, dtype=np.float32)
    if reviewgen.has_cuda():
        np.testing.assert_allclose(_core.cuda_axpy(2.0, x, y), 2 * x + y)
        _core.cublaslt_probe()
    elif reviewgen.cuda_compiled():
        with pytest.raises(reviewgen.CudaError):
            _core.cuda_axpy(2.0, x, y)
    else:
        with pytest.raises(reviewgen.UnsupportedError):
            _core.cuda_axpy(2.0, x, y)


def test_cuda_axpy_checks_arguments():
    with pytest.raises(ValueError, match="same length"):
        _core.cuda_axpy(1.0, np.ones(3, np.float32), np.ones(4, np.float32))
    with pytest.raises(ValueError, match="dimension"):
        _core.cuda_axpy(1.0, np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))
    with pytest.raises(TypeError, match="x"):
        _core.cuda_axpy(1.0, ["a", "b"], np.ones(2, np.float32))


@pytest.mark.skipif(os.environ.get("REVIEWGEN_CUDA") != "1",
                    reason="only where the build was told to compile the CUDA sources")
def test_cuda_sources_were_compiled_when_forced():
    assert shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc")
    assert reviewgen.cuda_compiled()


_RESIDENT_AFTER = """
import sys
import reviewgen
from reviewgen import _core
def resident_mb():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
def mapped(name):
    with open("/proc/self/maps") as f:
        return name in f.read()
before = resident_mb(), mapped("libcublasLt")
if sys.argv[1] == "use":
    _core.cuda_device_count()
print(before[0], int(before[1]), int(mapped("libcublasLt")), _core.cuda_load_error() or "-")
"""


def test_import_does_not_load_cuda():
    # The CUDA library (and cuBLASLt, ~180 MB resident) opens on first use only.
    out = subprocess.run([sys.executable, "-c", _RESIDENT_AFTER, "import"], capture_output=True,
                         text=True, check=True).stdout.split()
    resident, cublas_at_import = float(out[0]), int(out[1])
    assert cublas_at_import == 0
    assert resident < 50, f"import reviewgen: {resident:.0f} MB resident"


@pytest.mark.skipif(not reviewgen.cuda_compiled(), reason="no CUDA library in this build")
def test_cuda_library_opens_on_first_use():
    out = subprocess.run([sys.executable, "-c", _RESIDENT_AFTER, "use"], capture_output=True,
                         text=True, check=True).stdout.split()
    assert int(out[1]) == 0
    assert int(out[2]) == 1, f"the CUDA library did not open: {' '.join(out[3:])}"


def test_cuda_library_that_cannot_open_is_a_cuda_error(tmp_path):
    # A library file that exists but is not one: compiled, but every call
    # says CudaError and the loader says why.
    bogus = tmp_path / "_rgcuda_bogus.so"
    bogus.write_bytes(b"not an ELF file")
    script = (f"import reviewgen, numpy as np\nfrom reviewgen import _core\n"
              f"_core.cuda_set_library({str(bogus)!r})\n"
              "assert reviewgen.cuda_compiled() and _core.cuda_device_count() == 0\n"
              "try:\n    _core.cuda_axpy(1.0, np.ones(2, np.float32), np.ones(2, np.float32))\n"
              "except reviewgen.CudaError:\n    pass\nelse:\n    raise SystemExit('no CudaError')\n"
              "print(_core.cuda_load_error())\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if "already loaded" in result.stderr:
        pytest.skip("the real CUDA library was loaded at import")
    assert result.returncode == 0, result.stderr
    assert str(bogus) in result.stdout or "invalid ELF" in result.stdout
