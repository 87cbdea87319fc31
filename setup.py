"""Build of reviewgen's C core as the extension module reviewgen._core.

The pure-C core (csrc/*.c) and the binding (csrc/python/*.c, one file per area)
compile with the system C compiler; matrix products go to OpenBLAS from the
scipy-openblas32 wheel. The CUDA sources (csrc/cuda/*.cu) are compiled with
nvcc into a library of their own, reviewgen._rgcuda (cudart and cuBLASLt),
when nvcc and cuBLASLt are found, or when REVIEWGEN_CUDA=1 forces it
(REVIEWGEN_CUDA=0 turns it off); the core opens it on first use. The build
prints which path it took; reviewgen.has_cuda() says it at run time.
"""
import glob
import os
import shutil
import subprocess
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = "csrc"


def _log(message):
    print(f"reviewgen build: {message}", flush=True)


def _openblas():
    import scipy_openblas32

    return (scipy_openblas32.get_include_dir(), scipy_openblas32.get_lib_dir(),
            scipy_openblas32.get_library())


def _find_nvcc():
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH") or "/usr/local/cuda"
    # The toolkit's own nvcc first: a wrapper on PATH may sit outside the toolkit tree.
    for nvcc in (os.path.join(cuda_home, "bin", "nvcc"), shutil.which("nvcc")):
        if nvcc and os.path.isfile(nvcc):
            home = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
            if not os.path.isdir(os.path.join(home, "lib64")) and os.path.isdir(cuda_home):
                home = cuda_home
            return nvcc, home
    return None, None


def _find_cublaslt(cuda_home):
    """Return (include_dir, lib_dir) of cuBLASLt or None.

    Looked for in REVIEWGEN_CUBLASLT_DIR, the CUDA toolkit, and the
    `nvidia-cublas` wheel in any site-packages this interpreter knows
    (build isolation hides the user's site-packages from sys.path, so the
    base interpreter's are searched too)."""
    roots = []
    if os.environ.get("REVIEWGEN_CUBLASLT_DIR"):
        roots.append(os.environ["REVIEWGEN_CUBLASLT_DIR"])
    if cuda_home:
        roots.append(cuda_home)
    site_dirs = set(sys.path)
    site_dirs.update(glob.glob(os.path.join(sys.base_prefix, "lib", "python3*", "site-packages")))
    site_dirs.update(glob.glob(os.path.join(sys.base_prefix, "local", "lib", "python3*", "dist-packages")))
    for site_dir in sorted(d for d in site_dirs if d):
        roots.extend(sorted(glob.glob(os.path.join(site_dir, "nvidia", "cu1[3-9]"))))
    for root in roots:
        header = os.path.join(root, "include", "cublasLt.h")
        for lib_dir in ("lib64", "lib"):
            libs = glob.glob(os.path.join(root, lib_dir, "libcublasLt.so*"))
            if os.path.isfile(header) and libs:
                return os.path.join(root, "include"), os.path.join(root, lib_dir), libs
    return None


def _cuda_plan():
    """Decide whether to build the CUDA sources; returns a dict or None."""
    switch = os.environ.get("REVIEWGEN_CUDA", "auto").strip().lower()
    if switch in ("0", "off", "no", "false"):
        _log("CUDA off (REVIEWGEN_CUDA=0): CPU-only build")
        return None
    nvcc, cuda_home = _find_nvcc()
    forced = switch in ("1", "on", "yes", "true")
    if nvcc is None:
        if forced:
            raise RuntimeError("REVIEWGEN_CUDA=1 but nvcc was not found (set CUDA_HOME or PATH)")
        _log("nvcc not found: CPU-only build")
        return None
    cublaslt = _find_cublaslt(cuda_home)
    if cublaslt is None:
        message = ("nvcc found at %s but cuBLASLt (cublasLt.h and libcublasLt.so) was not: "
                   "install it with `pip install nvidia-cublas` or set REVIEWGEN_CUBLASLT_DIR" % nvcc)
        if forced:
            raise RuntimeError(message)
        _log(message + "; CPU-only build")
        return None
    include_dir, lib_dir, libs = cublaslt
    _log(f"CUDA on: nvcc {nvcc}, cuBLASLt from {lib_dir}")
    return {"nvcc": nvcc, "home": cuda_home, "cublaslt_include": include_dir,
            "cublaslt_lib": lib_dir, "cublaslt_so": os.path.basename(sorted(libs)[-1])}


CUDA_EXTENSION = "reviewgen._rgcuda"


class BuildExtWithCuda(build_ext):
    """Builds the CUDA library (csrc/cuda/*.cu, nvcc, cudart and cuBLASLt) as a
    shared object of its own beside _core. The core opens it with dlopen on
    first use (csrc/cuda/rg_cuda_loader.c), so a CPU-only session never maps
    cuBLASLt; the package tells the core where it is at import."""

    def build_extension(self, ext):
        if ext.name != CUDA_EXTENSION:
            return super().build_extension(ext)
        plan = ext.cuda_plan
        objects = self._compile_cuda(plan)
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        cudart_dir = os.path.join(plan["home"], "lib64")
        # cudart is linked statically so that the library opens on machines
        # without the toolkit; cuBLASLt is a shared library found through the rpath.
        cmd = ["g++", "-shared", "-o", target] + objects + [
            "-L" + cudart_dir, "-L" + plan["cublaslt_lib"], "-l:libcudart_static.a",
            "-l:" + plan["cublaslt_so"], "-ldl", "-lrt", "-lpthread",
            "-Wl,-rpath," + plan["cublaslt_lib"], "-Wl,-rpath,$ORIGIN/../nvidia/cu13/lib"]
        _log("link " + os.path.basename(target))
        subprocess.check_call(cmd)

    def _compile_cuda(self, plan):
        out_dir = os.path.join(self.build_temp, "cuda")
        os.makedirs(out_dir, exist_ok=True)
        arch = os.environ.get("REVIEWGEN_CUDA_ARCH", "75;80;86;89;90")
        gencode = []
        for sm in arch.replace(",", ";").split(";"):
            sm = sm.strip()
            if sm:
                gencode += ["-gencode", f"arch=compute_{sm},code=sm_{sm}"]
        objects = []
        for source in sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu"))):
            obj = os.path.join(out_dir, os.path.basename(source) + ".o")
            cmd = [plan["nvcc"], "-c", source, "-o", obj, "-O3", "-std=c++17",
                   "-Xcompiler", "-fPIC", "-Xcompiler", "-fvisibility=hidden",
                   "-I" + CSRC, "-I" + os.path.join(CSRC, "cuda"),
                   "-I" + plan["cublaslt_include"]] + gencode
            _log("nvcc " + os.path.basename(source))
            subprocess.check_call(cmd)
            objects.append(obj)
        return objects


def _cuda_extension():
    """The CUDA library as an extension entry (so setuptools installs and
    copies it like _core), or None for a CPU-only build."""
    plan = _cuda_plan()
    if plan is None:
        return None
    ext = Extension(CUDA_EXTENSION, sources=sorted(glob.glob(os.path.join(CSRC, "cuda", "*.cu"))))
    ext.cuda_plan = plan
    return ext


def _extension():
    import numpy

    blas_include, blas_lib_dir, blas_lib = _openblas()
    sources = sorted(glob.glob(os.path.join(CSRC, "*.c")))
    sources += [os.path.join(CSRC, "cuda", "rg_cuda_loader.c")]
    sources += sorted(glob.glob(os.path.join(CSRC, "python", "*.c")))
    return Extension(
        "reviewgen._core",
        sources=sources,
        include_dirs=[CSRC, os.path.join(CSRC, "cuda"), numpy.get_include(), blas_include],
        library_dirs=[blas_lib_dir],
        libraries=[blas_lib, "dl", "pthread"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_2_0_API_VERSION")],
        extra_compile_args=["-O3", "-std=c11", "-fopenmp", "-Wall", "-Wextra",
                            "-Wno-unused-parameter"],
        extra_link_args=["-fopenmp", "-Wl,-rpath,$ORIGIN/../scipy_openblas32/lib",
                         "-Wl,-rpath," + blas_lib_dir],
    )


setup(ext_modules=[ext for ext in (_extension(), _cuda_extension()) if ext is not None],
      cmdclass={"build_ext": BuildExtWithCuda})
