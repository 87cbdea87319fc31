"""Runs the three side-by-side benchmarks (GPT-2, DistilBERT, Llama) with the same
options and prints one Markdown table of every workload (the README's results
table is this output).

    python benchmarks/run_all.py [--threads N] [--repeats R] [--rounds K] [--quick] [--out DIR]
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = ("bench_gpt2.py", "bench_encoder.py", "bench_llama.py")


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
    except OSError:
        return platform.processor() or "unknown CPU"
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")),
                "unknown CPU")
    flags = next((line.split(":", 1)[1].split() for line in info.splitlines() if line.startswith("flags")), [])
    simd = "/".join(f.upper() for f in ("avx2", "fma", "avx512f") if f in flags)
    return f"{name}, {os.cpu_count()} logical cores, {simd}"


def build_notes():
    """What decides the kernels: the core's instruction set (chosen at run time),
    OpenBLAS's core and whether OPENBLAS_CORETYPE forced it."""
    from reviewgen import _core
    from reviewgen.core._native import cpu_isa

    core = _core.blas_core()
    forced = os.environ.get("OPENBLAS_CORETYPE")
    return (f"reviewgen ops: {cpu_isa()}; OpenBLAS core: {core}; "
            f"OPENBLAS_CORETYPE {'set to ' + forced if forced else 'not set'}")


def markdown(rows, peak=None):
    lines = ["| workload | unit | reviewgen | torch | ratio | GFLOP/s reviewgen / torch | of fp32 peak | "
             "peak RSS reviewgen / torch | growth over imports reviewgen / torch | check |",
             "|---|---|---:|---:|---:|---|---|---|---|---|"]
    for r in rows:
        rg, th = r.get("gflops_reviewgen"), r.get("gflops_torch")
        gflops = f"{rg:.0f} / {th:.0f}" if rg else ""
        share = f"{100 * rg / peak:.0f}% / {100 * th / peak:.0f}%" if rg and peak else ""
        lines.append(f"| {r['workload']} | {r['unit']} | {r['rate_reviewgen']:.1f} | {r['rate_torch']:.1f} | "
                     f"{r['ratio_value']:.2f}x | {gflops} | {share} | {r['peak RSS rg']} / {r['peak RSS torch']} | "
                     f"{r['growth rg']} / {r['growth torch']} | {r['check']} |")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--bf16", action="store_true", help="also the training rows against torch bf16 autocast")
    parser.add_argument("--out", help="directory for the per-script JSON and logs (default: a temp dir)")
    args = parser.parse_args(argv)
    out = args.out or tempfile.mkdtemp(prefix="reviewgen_bench_")
    os.makedirs(out, exist_ok=True)
    rows = []
    for script in SCRIPTS:
        name = script[len("bench_"):-len(".py")]
        command = [sys.executable, os.path.join(BENCH_DIR, script), "--repeats", str(args.repeats),
                   "--rounds", str(args.rounds),
                   "--json", os.path.join(out, f"{name}.json")]
        if args.threads is not None:
            command += ["--threads", str(args.threads)]
        if args.quick:
            command.append("--quick")
        if args.bf16:
            command.append("--bf16")
        start = time.time()
        print(f"== {script} ({' '.join(command[2:])})", flush=True)
        with open(os.path.join(out, f"{name}.log"), "w") as log:
            proc = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            log.write(proc.stdout)
        print(proc.stdout, flush=True)
        if proc.returncode != 0:
            print(f"!! {script} failed (exit {proc.returncode}); see {out}/{name}.log", file=sys.stderr)
            continue
        with open(os.path.join(out, f"{name}.json")) as f:
            rows += json.load(f)["rows"]
        print(f"   ({time.time() - start:.0f} s)")
    from flops import fp32_peak_gflops

    threads = args.threads or os.cpu_count()
    peaks = fp32_peak_gflops(threads)
    peak = max(peaks.values()) if peaks else None
    print(f"\nMachine: {cpu_name()}; {build_notes()}; logs and JSON in {out}")
    print("fp32 FMA peak measured on %d thread(s): %s (GFLOP/s; the share of peak uses the highest)"
          % (threads, ", ".join(f"{k} {v:.0f}" for k, v in peaks.items()) or "not measured (no gcc)"))
    print(markdown(rows, peak))
    return 0 if len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
