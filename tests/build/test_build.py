"""The build: the extension imports, its exceptions map the core's statuses, and
the CUDA path is taken wherever the toolchain allows it."""
import os
import shutil

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


def test_has_cuda_agrees_with_build():
    assert reviewgen.cuda_compiled() == bool(_core.CUDA_COMPILED)
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
