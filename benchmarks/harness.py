"""Side-by-side benchmark harness: each workload runs in a fresh process so that
its peak memory is its own, with the same thread count for both frameworks.

A workload is a module-level function `fn(args) -> dict` in a benchmark file;
`measure(path, fn_name, args, threads)` runs it in a subprocess and returns its
result plus `peak_rss_mib` (the process's peak resident set) and
`setup_rss_mib` (resident set when the workload reported its setup done, so
the difference is what the workload itself held).
"""
import json
import os
import subprocess
import sys
import time

_CHILD = r"""
import importlib.util, json, os, resource, sys
spec = importlib.util.spec_from_file_location("bench_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
result = getattr(module, sys.argv[2])(json.loads(sys.argv[3]))
result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print("BENCH_RESULT " + json.dumps(result), flush=True)
"""


def rss_mib():
    """Current resident set of this process in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


def measure(path, fn_name, args, threads):
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        env[var] = str(threads)
    args = dict(args, threads=threads)
    proc = subprocess.run([sys.executable, "-c", _CHILD, os.path.abspath(path), fn_name, json.dumps(args)],
                          env=env, capture_output=True, text=True)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    raise RuntimeError(f"{fn_name} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def timed(fn, repeats, warmup=1):
    """Median seconds of `repeats` calls after `warmup` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def print_table(rows, columns):
    widths = [max(len(str(c)), *(len(f"{r.get(c, '')}") for r in rows)) for c in columns]
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(f"{r.get(c, '')}".ljust(w) for c, w in zip(columns, widths)))
