"""Loads the compiled core, reviewgen._core, with the OpenBLAS it links against,
and tells it where its CUDA library is.

The extension is linked against the scipy-openblas32 wheel's shared library.
Its rpath finds it in a regular site-packages layout; loading it here first,
by absolute path, also covers editable installs and unusual layouts.
"""
import ctypes
import os

# The core runs every parallel loop, matrix products included, on one OpenMP
# pool. Spinning idle threads starve the working ones whenever anything else
# wants the same cores (a notebook kernel, a data loader, another process);
# sleeping instead costs microseconds per parallel region. It must be set
# before libgomp loads with the extension; a user's own setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

try:
    import scipy_openblas32 as _openblas

    ctypes.CDLL(os.path.join(_openblas.get_lib_dir(), "lib" + _openblas.get_library() + ".so"),
                mode=ctypes.RTLD_GLOBAL)
except (ImportError, OSError):  # the rpath may still find it
    pass

from .. import _core  # noqa: E402


def _locate_cuda_library() -> None:
    """Tell the core where the CUDA library built beside it is, if it was.

    Nothing is opened here: cuBLASLt alone is about 180 MB resident, so the
    core opens the library on the first call that needs a GPU.
    """
    from importlib.machinery import EXTENSION_SUFFIXES

    folder = os.path.dirname(os.path.abspath(_core.__file__))
    for suffix in EXTENSION_SUFFIXES:
        path = os.path.join(folder, "_rgcuda" + suffix)
        if os.path.exists(path):
            _core.cuda_set_library(path)
            return


_locate_cuda_library()


def _check_cpu_isa() -> None:
    """REVIEWGEN_CPU_ISA picks the copy of the CPU ops (benchmarks, tests); the
    core ignores a name it cannot run, so say so here instead of running another."""
    wanted = os.environ.get("REVIEWGEN_CPU_ISA", "")
    if wanted in ("", "auto"):
        return
    isas = _core.cpu_isas()
    if not isas.get(wanted, False):
        usable = ", ".join(name for name, ok in isas.items() if ok)
        why = "this CPU lacks its instructions" if wanted in isas else "no such instruction set in this build"
        raise ValueError(f"REVIEWGEN_CPU_ISA={wanted!r}: {why}; use one of: auto, {usable}")


def cpu_isa() -> str:
    """The instruction set the CPU ops run with ("baseline", "x86-64-v3"): the widest
    this CPU has, chosen at run time, unless REVIEWGEN_CPU_ISA names another."""
    return _core.cpu_isa()


_check_cpu_isa()

__all__ = ["_core", "cpu_isa"]
