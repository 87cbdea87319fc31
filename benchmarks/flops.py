"""Floating-point work of the benchmarked steps, and the machine's fp32 peak.

`step_flops(model, B, T, train)` counts the multiply-adds (2 FLOPs each) of the
matrix products and attention of one forward (and, with train, the backward of
what trains) of a core model on a full (B, T) batch: what any implementation
must do (a classifier's last block only for the rows its head reads), so
"achieved GFLOP/s" = step_flops / step time compares frameworks on the same
work. Norms, activations and the optimizer are left out (a few %).

`fp32_peak_gflops(threads)` measures the peak with a small C probe compiled here
(independent fused multiply-adds on every vector register, one OpenMP thread per
core asked): the ceiling a matrix product could reach on this machine.
"""
import ctypes
import os
import subprocess
import tempfile


def step_flops(model, B, T, train):
    c = model.config
    C, L, V, H = c.n_embd, c.n_layer, c.vocab_size, c.n_head
    hs = c.head_dim or C // H
    kv = c.n_kv_head or H
    F = c.n_inner or 4 * C
    qkv = 2 * C * (H + 2 * kv) * hs                  # per token
    proj = 2 * H * hs * C
    mlp = 2 * C * F * (3 if c.activation == "swiglu" else 2)
    keys = (T + 1) / 2 if c.causal else T             # keys each query sees, on average
    attention = 2 * 2 * keys * H * hs                 # scores and the weighted sum
    lm = c.head == "lm"
    head = 2 * C * V if lm else 2 * C * C             # (LM: the vocabulary product; classifiers: pre-classifier)
    n = B * T
    # A classifier's head reads token 0 of each sequence, so its last block needs
    # keys and values of every token but queries, projection and MLP for B rows only.
    head_rows = n if lm else B

    def block(l):                                     # one block's forward work
        rows = head_rows if l == L - 1 else n
        return n * qkv + rows * (attention + proj + mlp)

    flops = sum(block(l) for l in range(L)) + head_rows * head
    if not train:
        return flops
    table = model.param_table()
    trains = lambda name: any(e["trainable"] for e in table if e["name"] == name)
    blocks = [l for l in range(L) if any(e["trainable"] for e in table if e["name"].startswith(f"h.{l}."))]
    below = bool(blocks) or trains("wte")              # something under the head needs its gradient
    backward = 0.0
    for l in blocks:
        backward += 2 * block(l)                       # input and weight gradients
        if l == min(blocks) and not trains("wte"):
            backward -= n * qkv / 2                    # no gradient for the frozen part's output
    head_names = ("lm_head.w", "wte") if lm else ("cls.pre.w",)
    backward += head_rows * head * ((1 if below else 0) + (1 if any(trains(h) for h in head_names) else 0))
    return flops + backward


PROBE = r"""
#include <immintrin.h>
#include <omp.h>
/* independent FMA chains on every register: the core's peak, not its latency */
#define CHAINS 12
double probe(long iters) {
    double flops = 0;
    #pragma omp parallel reduction(+:flops)
    {
        VEC acc[CHAINS];
        VEC b = SET1(1.0000001f), c = SET1(1e-7f);
        for (int i = 0; i < CHAINS; i++) acc[i] = SET1((float)i);
        for (long k = 0; k < iters; k++) {
            #pragma GCC unroll 12
            for (int i = 0; i < CHAINS; i++) acc[i] = FMA(acc[i], b, c);
        }
        float out[LANES];
        VEC s = acc[0];
        for (int i = 1; i < CHAINS; i++) s = ADD(s, acc[i]);
        STORE(out, s);
        flops += (out[0] != 0.0f) * 2.0 * LANES * CHAINS * (double)iters;
    }
    return flops;
}
"""
VARIANTS = {
    "AVX2/FMA": ("-mavx2 -mfma", "avx2", dict(VEC="__m256", SET1="_mm256_set1_ps", FMA="_mm256_fmadd_ps",
                                              ADD="_mm256_add_ps", STORE="_mm256_storeu_ps", LANES="8")),
    "AVX-512": ("-mavx512f", "avx512f", dict(VEC="__m512", SET1="_mm512_set1_ps", FMA="_mm512_fmadd_ps",
                                             ADD="_mm512_add_ps", STORE="_mm512_storeu_ps", LANES="16")),
}


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return []


def fp32_peak_gflops(threads, seconds=0.5):
    """{instruction set: GFLOP/s} for those this CPU has (empty without gcc)."""
    import time

    out, flags = {}, _cpu_flags()
    with tempfile.TemporaryDirectory() as directory:
        for name, (cflags, flag, macros) in VARIANTS.items():
            if flag not in flags:
                continue
            source = os.path.join(directory, "probe.c")
            with open(source, "w") as f:
                f.write("".join(f"#define {k} {v}\n" for k, v in macros.items()) + PROBE)
            library = os.path.join(directory, f"probe_{flag}.so")
            built = subprocess.run(["gcc", "-O3", "-fopenmp", "-shared", "-fPIC", *cflags.split(), source,
                                    "-o", library], capture_output=True, text=True)
            if built.returncode != 0:
                continue
            probe = ctypes.CDLL(library).probe
            probe.restype, probe.argtypes = ctypes.c_double, [ctypes.c_long]
            os.environ["OMP_NUM_THREADS"] = str(threads)
            iters = 1 << 20
            while True:
                start = time.perf_counter()
                flops = probe(iters)
                elapsed = time.perf_counter() - start
                if elapsed > seconds / 4:
                    break
                iters *= 4
            best = flops / elapsed
            for _ in range(3):
                start = time.perf_counter()
                flops = probe(iters)
                best = max(best, flops / (time.perf_counter() - start))
            out[name] = best / 1e9
    return out


if __name__ == "__main__":
    import sys

    print(fp32_peak_gflops(int(sys.argv[1]) if len(sys.argv) > 1 else os.cpu_count()))
