"""One build for every x86-64: the core is compiled for the baseline target and
carries an AVX2/FMA copy of its ops, chosen at run time (csrc/rg_ops_x86v3.c)."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from reviewgen.core._native import _core, cpu_isa

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
X86 = os.uname().machine == "x86_64"


def _python(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **env})


def test_the_widest_instruction_set_is_chosen_and_can_be_overridden():
    isas = _core.cpu_isas()
    assert list(isas)[0] == "baseline" and isas["baseline"] is True
    if X86:
        assert "x86-64-v3" in isas
    widest = [name for name, ok in isas.items() if ok][-1]
    if os.environ.get("REVIEWGEN_CPU_ISA", "auto") == "auto":
        assert cpu_isa() == widest
    probe = "from reviewgen.core._native import cpu_isa; print(cpu_isa())"
    for name, ok in isas.items():
        if ok:
            run = _python(probe, REVIEWGEN_CPU_ISA=name)
            assert run.returncode == 0, run.stderr
            assert run.stdout.strip() == name
    assert _python(probe, REVIEWGEN_CPU_ISA="auto").stdout.strip() == widest


def test_a_bad_instruction_set_name_is_a_clear_error():
    run = _python("import reviewgen", REVIEWGEN_CPU_ISA="avx9000")
    assert run.returncode != 0
    assert "REVIEWGEN_CPU_ISA='avx9000': no such instruction set in this build" in run.stderr
    assert "baseline" in run.stderr


def test_the_blas_core_is_reported_and_follows_openblas_coretype():
    assert _core.blas_core()
    probe = "from reviewgen import _core; print(_core.blas_core())"
    forced = "Nehalem" if X86 else "ARMV8"  # SSE4.2: any x86-64 CPU a test machine has
    run = _python(probe, OPENBLAS_CORETYPE=forced)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().lower() == forced.lower()


def test_the_baseline_ops_match_transformers():
    """The normal run tests the widest copy; this runs the reference comparisons
    of every family again on the baseline copy."""
    if not _core.cpu_isas().get("x86-64-v3"):
        pytest.skip("the baseline copy is the one the normal run already tests")
    pytest.importorskip("transformers")
    tests = [str(ROOT / "tests" / "core" / f) for f in
             ("test_gpt2_core.py", "test_llama_core.py", "test_encoder_core.py")]
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests,
                          "-k", "gradient or logits"], capture_output=True, text=True, timeout=900,
                         cwd=ROOT, env={**os.environ, "REVIEWGEN_CPU_ISA": "baseline"})
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-2000:]
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) >= 6, run.stdout[-2000:]


# VEX-encoded instructions (AVX and later) fault on x86-64 CPUs without AVX.
VEX = re.compile(r"^\s+[0-9a-f]+:\s+v[a-z0-9]+\s", re.MULTILINE)


@pytest.mark.skipif(not X86 or shutil.which("objdump") is None or shutil.which("make") is None,
                    reason="x86-64 with make and objdump")
def test_only_the_avx2_copy_holds_avx_instructions(tmp_path):
    build = tmp_path / "build"
    made = subprocess.run(["make", "-C", str(CSRC), f"BUILD={build}", "-j2", f"{build}/libreviewgen.a"],
                          capture_output=True, text=True, timeout=600)
    assert made.returncode == 0, (made.stdout + made.stderr)[-4000:]
    objects = sorted((build / "obj").rglob("*.o"))
    assert any(o.name == "rg_ops.o" for o in objects)
    for obj in objects:
        text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", str(obj)], capture_output=True,
                              text=True, check=True).stdout
        has_vex = bool(VEX.search(text))
        if obj.name == "rg_ops_x86v3.o":
            assert has_vex and "ymm" in text, "the AVX2 copy was compiled without AVX2"
        else:
            assert not has_vex, f"{obj.name} holds AVX instructions outside the run-time dispatch"
