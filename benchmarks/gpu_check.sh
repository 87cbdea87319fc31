#!/usr/bin/env bash
# benchmarks/gpu_check.sh - every check that needs a GPU, in one run (issue #13).
#
# Builds the package's CUDA library for the card found, runs every CUDA op
# against the CPU core on random inputs of awkward sizes (the test_cuda_*
# cases of csrc/tests; they skip everywhere else), and writes the log and a
# JSON of the figures under $OUT (./gpu_check_out when unset). Exit status 0
# only when every case ran (none skipped) and passed.
#
#   here, with a package index:   benchmarks/gpu_check.sh --prepare
#       downloads into benchmarks/gpu_wheels/ (gitignored) the wheels that a
#       GPU machine without network may lack (the build's OpenBLAS).
#   on the GPU machine (nvcc, PyTorch present; no network):
#       benchmarks/gpu_check.sh          (device tool: carry benchmarks/gpu_wheels)
#
# Meant to finish in a few minutes on one H100/H200: most of it is nvcc.
set -uo pipefail
cd "$(dirname "$0")/.."
WHEELS=benchmarks/gpu_wheels

if [ "${1:-}" = "--prepare" ]; then
    mkdir -p "$WHEELS"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" scipy-openblas32
    ls -l "$WHEELS"
    exit 0
fi

OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
: > "$LOG"
start=$(date +%s)
say() { echo "$*" | tee -a "$LOG"; }

card=$(nvidia-smi --query-gpu=name,compute_cap,driver_version --format=csv,noheader 2>>"$LOG" | head -1)
say "card: ${card:-none found}"
arch=$(echo "$card" | awk -F', ' '{gsub(/\./, "", $2); print $2}')
arch=${arch:-90}

if ! python3 -c "import scipy_openblas32" 2>/dev/null; then
    say "installing scipy-openblas32 from $WHEELS"
    python3 -m pip install -q --no-index --find-links "$WHEELS" scipy-openblas32 >>"$LOG" 2>&1 ||
        { say "no scipy-openblas32: run benchmarks/gpu_check.sh --prepare where there is a package index"; exit 2; }
fi

say "building the extension and the CUDA library for sm_$arch"
build_start=$(date +%s)
if ! REVIEWGEN_CUDA=1 REVIEWGEN_CUDA_ARCH="$arch" python3 setup.py -q build_ext --inplace >>"$LOG" 2>&1; then
    say "build failed (see $LOG)"
    exit 1
fi
build_s=$(( $(date +%s) - build_start ))
library=$(ls reviewgen/_rgcuda*.so 2>/dev/null | head -1)
say "CUDA library: ${library:-missing} (build ${build_s} s)"

say "C core and its tests"
make -C csrc -j"$(nproc)" >>"$LOG" 2>&1 || { say "make failed (see $LOG)"; exit 1; }
ops_log="$OUT/cuda_ops.log"
RG_TEST_CUDA_LIBRARY="$PWD/$library" OMP_NUM_THREADS=8 csrc/build/test_core cuda >"$ops_log" 2>&1
ops_rc=$?
cat "$ops_log" >>"$LOG"
summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$ops_log" | tail -1)
skipped=$(grep -c 'skipped' "$ops_log")
say "CUDA op cases: ${summary:-no summary} (rc $ops_rc), $skipped skipped"

wall_s=$(( $(date +%s) - start ))
python3 - "$OUT/gpu_check.json" "$card" "$arch" "$build_s" "$summary" "$skipped" "$ops_rc" "$wall_s" <<'EOF'
import json, sys
path, card, arch, build_s, summary, skipped, rc, wall_s = sys.argv[1:]
passed = failed = None
if summary:
    passed, failed = int(summary.split()[0]), int(summary.split()[2])
json.dump({"card": card, "arch": arch, "build_s": int(build_s), "cuda_op_cases_passed": passed,
           "cuda_op_cases_failed": failed, "cuda_op_cases_skipped": int(skipped), "cuda_op_rc": int(rc),
           "wall_s": int(wall_s)}, open(path, "w"), indent=1)
EOF
say "wrote $OUT/gpu_check.json (${wall_s} s in all)"
[ "$ops_rc" = 0 ] && [ "$skipped" = 0 ] && [ -n "$summary" ]
