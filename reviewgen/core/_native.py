"""Loads the compiled core, reviewgen._core, with the OpenBLAS it links against.

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

__all__ = ["_core"]
