"""Side-by-side benchmark harness: each workload runs in a fresh process so that
its peak memory is its own, with the same thread count for both frameworks.

A workload is a module-level function `fn(args) -> dict` in a benchmark file;
`measure(path, fn_name, args, threads)` runs it in a subprocess and returns its
result plus `peak_rss_mib` (the process's peak resident set). Workloads that
use `MemoryProbe` also report the resident set right after their imports
(`import_rss_mib`, the baseline), after their setup, and the peak of the timed
phase alone (`run_peak_rss_mib`), so loading transients can be told apart from
what the measured work itself holds.

`run_side_by_side` measures a list of `Workload`s on both sides (reviewgen and
torch), prints a table and one summary line per workload, and returns the rows.
Benchmark files must not import torch at module level: the reviewgen child
loads the same module and must stay free of torch.
"""
import gc
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Dict, List

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from flops import step_flops  # noqa: E402

# The peak comes from VmHWM, not getrusage: ru_maxrss also counts the parent's
# resident set copied at fork, before the exec (the parent may hold torch).
_CHILD = r"""
import importlib.util, json, os, sys
spec = importlib.util.spec_from_file_location("bench_module", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
result = getattr(module, sys.argv[2])(json.loads(sys.argv[3]))
if "peak_rss_mib" not in result:
    with open("/proc/self/status") as f:
        result["peak_rss_mib"] = next(int(l.split()[1]) / 1024.0 for l in f if l.startswith("VmHWM:"))
print("BENCH_RESULT " + json.dumps(result), flush=True)
"""

THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def rss_mib():
    """Current resident set of this process in MiB (Linux)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / (1024.0 * 1024.0)


def peak_rss_mib():
    """Peak resident set (VmHWM) of this process in MiB since start or the last reset."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def reset_peak_rss():
    """Restart the VmHWM count (Linux >= 4.0, /proc/self/clear_refs). False when refused."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class MemoryProbe:
    """Memory of one workload process in three phases: after imports (create the
    probe there), after setup (`setup_done()`), and during the timed run."""

    def __init__(self):
        gc.collect()
        self.import_rss = rss_mib()
        self.setup_rss = None
        self.setup_peak = None
        self.reset_ok = False

    def setup_done(self):
        gc.collect()
        self.setup_rss = rss_mib()
        self.setup_peak = peak_rss_mib()
        # Resetting also resets ru_maxrss, so the overall peak is kept here.
        self.reset_ok = reset_peak_rss()

    def report(self) -> Dict[str, float]:
        now_peak = peak_rss_mib()
        setup_peak = self.setup_peak if self.setup_peak is not None else now_peak
        overall = max(setup_peak, now_peak)
        return dict(import_rss_mib=self.import_rss,
                    setup_rss_mib=self.setup_rss if self.setup_rss is not None else float("nan"),
                    run_peak_rss_mib=now_peak if self.reset_ok else float("nan"),
                    peak_rss_mib=overall, growth_mib=overall - self.import_rss)


def thread_env(threads):
    env = dict(os.environ)
    for var in THREAD_VARIABLES:
        env[var] = str(threads)
    return env


def measure(path, fn_name, args, threads, timeout=None):
    """Runs `fn_name(args)` of the file `path` in a fresh interpreter with the
    thread variables set to `threads`; returns its result dict."""
    args = dict(args, threads=threads, isolated=True)
    proc = subprocess.run([sys.executable, "-c", _CHILD, os.path.abspath(path), fn_name, json.dumps(args)],
                          env=thread_env(threads), capture_output=True, text=True, timeout=timeout)
    for line in proc.stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            return json.loads(line[len("BENCH_RESULT "):])
    raise RuntimeError(f"{fn_name} failed (exit {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")


def measure_in_process(module, fn_name, args, threads):
    """The same call in this process: no isolation, so memory figures are not
    the workload's own (used by --quick smoke runs to save interpreter starts)."""
    result = getattr(module, fn_name)(dict(args, threads=threads, isolated=False))
    result.setdefault("peak_rss_mib", peak_rss_mib())
    return result


def timed(fn, repeats, warmup=1):
    """Fastest seconds of `repeats` calls after `warmup` calls: on a shared
    machine, other processes only ever add time, so the minimum is the most
    repeatable estimate of what the code itself needs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


class PhaseTimer:
    """Per-phase wall time of repeated steps: `with timer("forward"): ...`;
    `phases_of(i)` gives the seconds of each phase in recorded step i."""

    def __init__(self):
        self.samples: Dict[str, List[float]] = {}
        self.recording = True
        self._name = None
        self._start = 0.0

    def __call__(self, name):
        self._name = name
        return self

    def __enter__(self):
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.recording:
            self.samples.setdefault(self._name, []).append(time.perf_counter() - self._start)
        return False

    def phases_of(self, index: int) -> Dict[str, float]:
        return {name: values[index] for name, values in self.samples.items()}


def timed_phases(step, repeats, warmup=1):
    """Runs `step(timer)` warmup + repeats times; returns (seconds of the fastest
    step, seconds of each phase the step marked with the timer in that step)."""
    timer = PhaseTimer()
    timer.recording = False
    for _ in range(warmup):
        step(timer)
    timer.recording = True
    totals = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(timer)
        totals.append(time.perf_counter() - start)
    best = min(range(len(totals)), key=totals.__getitem__)
    return totals[best], timer.phases_of(best)


def print_table(rows, columns):
    widths = [max(len(str(c)), *(len(f"{r.get(c, '')}") for r in rows)) for c in columns]
    print("  ".join(str(c).ljust(w) for c, w in zip(columns, widths)))
    for r in rows:
        print("  ".join(f"{r.get(c, '')}".ljust(w) for c, w in zip(columns, widths)))


# --------------------------------------------------------------------------- side by side

@dataclass
class Workload:
    """One measurement on both sides. Each function returns at least `seconds`
    (fastest call) and `items` (tokens / sequences per call); `check` (a
    loss or a token list) lets the two sides be compared for sameness."""

    label: str                 # e.g. "gpt2 train step (freeze k=1) B=8 T=128"
    unit: str                  # "tok/s", "seq/s"
    reviewgen_fn: str
    torch_fn: str
    args: dict = field(default_factory=dict)


def _gib(mib):
    return f"{mib / 1024.0:.2f} GiB" if mib == mib else "n/a"


def _rate(result):
    return result["items"] / result["seconds"] if result["seconds"] > 0 else float("inf")


def compare_checks(ours, theirs):
    """A short verdict on whether both sides computed the same thing."""
    if ours is None or theirs is None:
        return ""
    if isinstance(ours, (int, float)):
        diff = abs(ours - theirs)
        verdict = "same" if diff <= 1e-3 * max(1.0, abs(theirs)) else "DIFFERENT"
        return f"loss {ours:.4f} vs {theirs:.4f} ({verdict})"
    if ours and isinstance(ours[0], float):
        diff = max(abs(a - b) for a, b in zip(ours, theirs))
        verdict = "same" if diff <= 1e-3 else "DIFFERENT"
        return f"outputs max abs diff {diff:.2g} ({verdict})"
    n = min(len(ours), len(theirs))
    agree = 0
    while agree < n and ours[agree] == theirs[agree]:
        agree += 1
    return f"first {agree}/{n} greedy tokens identical"


def run_side_by_side(path, workloads: List[Workload], threads, repeats, isolate=True,
                     module=None, stream=None, rounds=1, bf16=False) -> List[dict]:
    """Measures every workload on both sides (`rounds` times, alternating, the
    fastest result of each side kept); prints a table, the phase breakdown and
    one summary line per workload; returns the table rows (with the raw results
    under 'reviewgen_result' and 'torch_result')."""
    stream = stream or sys.stdout
    if bf16:  # each training row again: torch under bf16 autocast against reviewgen fp32, then both bf16
        training = [w for w in workloads if w.torch_fn.endswith("train_step")]
        workloads = list(workloads) + [Workload(w.label + " [torch bf16 autocast]", w.unit, w.reviewgen_fn, w.torch_fn,
                                                dict(w.args, bf16=True)) for w in training]
        if _core_bf16_supported():
            workloads += [Workload(w.label + " [bf16: reviewgen bf16, torch autocast]", w.unit, w.reviewgen_fn,
                                   w.torch_fn, dict(w.args, bf16=True, rg_bf16=True)) for w in training]
        else:
            print("reviewgen bf16 rows left out: this CPU has no AVX512-BF16", file=stream)
    rows = []
    for w in workloads:
        args = dict(w.args, repeats=repeats)
        results = {}
        load = os.getloadavg()[0]
        for _ in range(max(1, rounds)):
            for side, fn in (("reviewgen", w.reviewgen_fn), ("torch", w.torch_fn)):
                if isolate:
                    result = measure(path, fn, args, threads)
                else:
                    result = measure_in_process(module, fn, args, threads)
                load = max(load, os.getloadavg()[0])
                if side not in results or result["seconds"] < results[side]["seconds"]:
                    results[side] = result
        ours, theirs = results["reviewgen"], results["torch"]
        rate_ours, rate_theirs = _rate(ours), _rate(theirs)
        row = {
            "workload": w.label, "unit": w.unit,
            "reviewgen": f"{rate_ours:.1f}", "torch": f"{rate_theirs:.1f}",
            "ratio": f"{rate_ours / rate_theirs:.2f}x",
            "peak RSS rg": _gib(ours["peak_rss_mib"]), "peak RSS torch": _gib(theirs["peak_rss_mib"]),
            "growth rg": _gib(ours.get("growth_mib", float("nan"))),
            "growth torch": _gib(theirs.get("growth_mib", float("nan"))),
            "run peak rg": _gib(ours.get("run_peak_rss_mib", float("nan"))),
            "run peak torch": _gib(theirs.get("run_peak_rss_mib", float("nan"))),
            "check": compare_checks(ours.get("check"), theirs.get("check")),
            "load": f"{load:.1f}",
            # the same work on both sides (flops.step_flops of the reviewgen model)
            "gflops_reviewgen": ours["flops"] / ours["seconds"] / 1e9 if ours.get("flops") else None,
            "gflops_torch": ours["flops"] / theirs["seconds"] / 1e9 if ours.get("flops") else None,
            "rate_reviewgen": rate_ours, "rate_torch": rate_theirs, "ratio_value": rate_ours / rate_theirs,
            "reviewgen_result": ours, "torch_result": theirs,
        }
        rows.append(row)
        print(f"  measured: {w.label}: reviewgen {rate_ours:.1f} {w.unit}, torch {rate_theirs:.1f} {w.unit}",
              file=stream, flush=True)
    print(file=stream)
    print("rates from the fastest repeat; 'run peak' = peak RSS of the timed phase alone; "
          "'load' = the highest 1-minute load average seen (other processes on the machine)")
    print_table(rows, ["workload", "unit", "reviewgen", "torch", "ratio", "peak RSS rg", "peak RSS torch",
                       "growth rg", "growth torch", "run peak rg", "run peak torch", "load"])
    phase_rows = []
    for row in rows:
        for side in ("reviewgen", "torch"):
            phases = row[f"{side}_result"].get("phases")
            if phases:
                total = row[f"{side}_result"]["seconds"]
                phase_rows.append(dict(workload=row["workload"], side=side, step=f"{total * 1000:.0f} ms",
                                       **{name: f"{s * 1000:.0f} ms ({100 * s / total:.0f}%)"
                                          for name, s in phases.items()}))
    if phase_rows:
        print()
        print("phase breakdown (fastest step):")
        phase_names = []
        for r in phase_rows:
            phase_names += [k for k in r if k not in ("workload", "side", "step") and k not in phase_names]
        print_table(phase_rows, ["workload", "side", "step"] + phase_names)
    print()
    for row in rows:
        check = f" [{row['check']}]" if row["check"] else ""
        print(f"{row['workload']}: reviewgen {row['rate_reviewgen']:.1f} {row['unit']}, "
              f"torch {row['rate_torch']:.1f} {row['unit']}, ratio {row['ratio']}; "
              f"peak RSS {row['peak RSS rg']} vs {row['peak RSS torch']} "
              f"(growth over imports {row['growth rg']} vs {row['growth torch']}){check}", file=stream)
    return rows


def add_common_arguments(parser):
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for both sides (OMP/OpenBLAS/torch); default: all cores "
                             "(1 with --quick, where both run in one process)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions per process (the fastest counts)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="fresh processes per side, alternating reviewgen/torch; the fastest counts "
                             "(evens out a busy machine)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny configs, in one process: a smoke run, figures meaningless")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON here")
    parser.add_argument("--bf16", action="store_true",
                        help="also each training row against torch with bf16 autocast, reviewgen in fp32 and "
                             "(on AVX512-BF16 CPUs) in bf16")
    return parser


def resolve_threads(args):
    """--threads default: every core; 1 for --quick, whose single process holds two
    OpenMP runtimes (torch's and the core's) that would fight over the cores."""
    if args.threads is None:
        args.threads = 1 if args.quick else (os.cpu_count() or 1)
    if args.threads < 1 or args.repeats < 1:
        raise SystemExit("--threads and --repeats must be >= 1")
    return args


def quiet_transformers():
    """No progress bars or advisory warnings from transformers in the output."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from transformers.utils import logging

        logging.set_verbosity_error()
        logging.disable_progress_bar()
    except ImportError:
        pass


def write_json(path, title, args, rows):
    if not path:
        return
    clean = [{k: v for k, v in row.items()} for row in rows]
    with open(path, "w") as f:
        json.dump(dict(benchmark=title, threads=args.threads, repeats=args.repeats, rounds=args.rounds,
                       quick=args.quick,
                       rows=clean), f, indent=2)


def model_from_checkpoint(checkpoint):
    """A reviewgen Model from a loader's Checkpoint."""
    return checkpoint.build_model()


def assert_no_torch(args, where: str):
    """The reviewgen side must run without torch in its (isolated) process."""
    if args.get("isolated") and "torch" in sys.modules:
        raise RuntimeError(f"{where}: torch got imported in the reviewgen process")


# --------------------------------------------------------------------------- shared workload bodies
# The loops every family uses, so that both sides of every benchmark do the
# same steps. They take already-built models and return the result dict.

AdamW_SETTINGS = dict(lr=5e-4, betas=(0.95, 0.999), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0)


def _core_bf16_supported() -> bool:
    from reviewgen.core._native import _core

    return bool(_core.bf16_supported())


def reviewgen_train(model, batch, items, repeats, probe, bf16=False):
    """A training step of the C core: forward with targets, backward, AdamW
    (with clipping; the step zeroes the gradients it consumed), timed per
    phase. batch: tokens, attention_mask, targets, optional token_types.
    `check` is the loss of the first forward (before any update)."""
    from reviewgen.core._native import _core

    if bf16:  # TrainingConfig(bf16=True): the linear layers' products in bf16, fp32 sums
        model.set_precision("bf16")
    s = AdamW_SETTINGS
    optimizer = _core.AdamW(model.parameters, model.gradients, model.param_table(), lr=s["lr"],
                            betas=s["betas"], eps=s["eps"], weight_decay=s["weight_decay"],
                            max_grad_norm=s["max_grad_norm"])
    model.zero_grad()
    check = float(model.forward(**batch, train=True, seed=0))

    def step(timer):
        with timer("forward"):
            model.forward(**batch, train=True, seed=1)
        with timer("backward"):
            model.backward(1.0)
        with timer("optimizer"):
            optimizer.step()

    seconds, phases = timed_phases(step, repeats)
    trainable = sum(int(e["numel"]) for e in model.param_table() if e["trainable"])
    B, T = batch["tokens"].shape
    return dict(seconds=seconds, items=items, phases=phases, check=check, trainable_params=trainable,
                flops=step_flops(model, B, T, train=True), **probe.report())


def torch_train(torch, model, batch, items, repeats, probe, autocast=False):
    """The same step in torch: loss.backward, clip_grad_norm_, AdamW over the
    parameters that require grad (weight decay on matrices only, as the HF
    Trainer groups them), zero_grad(set_to_none=True). autocast: the forward
    under torch.autocast("cpu", dtype=torch.bfloat16), as a PyTorch user turns on
    mixed precision (fp32 weights, gradients and optimizer)."""
    import contextlib

    mixed = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    params = [p for p in model.parameters() if p.requires_grad]
    s = AdamW_SETTINGS
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": s["weight_decay"]},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=s["lr"], betas=s["betas"], eps=s["eps"])
    model.train()
    with torch.no_grad(), mixed():
        check = float(model(**batch).loss)

    def step(timer):
        with timer("forward"), mixed():
            loss = model(**batch).loss
        with timer("backward"):
            loss.backward()
        with timer("optimizer"):
            torch.nn.utils.clip_grad_norm_(params, s["max_grad_norm"])
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    seconds, phases = timed_phases(step, repeats)
    return dict(seconds=seconds, items=items, phases=phases, check=check,
                trainable_params=sum(p.numel() for p in params), **probe.report())


def freeze_torch(model, trainable_modules):
    """requires_grad only on the parameters of `trainable_modules` (None: all)."""
    if trainable_modules is None:
        for p in model.parameters():
            p.requires_grad_(True)
        return
    for p in model.parameters():
        p.requires_grad_(False)
    for module in trainable_modules:
        for p in module.parameters():
            p.requires_grad_(True)


def random_prompts(seed, batch, length, vocab):
    import numpy as np

    rng = np.random.default_rng(seed)
    return rng.integers(0, vocab, size=(batch, length)).astype(np.int32)


def reviewgen_generate(model, prompts, new_tokens, eos_id, repeats, probe):
    """Greedy decoding through reviewgen.core.generation.generate (KV cache, the
    core's sampler), with the end token forbidden so every row makes exactly
    `new_tokens`, as torch's min_new_tokens does. Times the whole call."""
    from reviewgen.core.generation import generate

    rows = [list(map(int, row)) for row in prompts]

    def run():
        return generate(model, rows, max_new_tokens=new_tokens, do_sample=False, eos_id=eos_id,
                        min_new_tokens=new_tokens)

    first = run()  # the warm-up call, kept for the sameness check
    if any(len(r) != new_tokens for r in first):
        raise RuntimeError("reviewgen generate returned rows of the wrong length")
    seconds = timed(run, repeats, warmup=0)
    return dict(seconds=seconds, items=len(rows) * new_tokens, check=[int(t) for t in first[0]],
                **probe.report())


def torch_generate(torch, model, prompts, new_tokens, eos_id, repeats, probe):
    """model.generate greedy with the KV cache, exactly new_tokens per row."""
    model.eval()
    ids = torch.from_numpy(prompts.astype("int64"))
    mask = torch.ones_like(ids)

    def run():
        with torch.inference_mode():
            return model.generate(input_ids=ids, attention_mask=mask, do_sample=False, num_beams=1,
                                  max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                  pad_token_id=eos_id, eos_token_id=eos_id, use_cache=True)

    first = run()
    if first.shape[1] != ids.shape[1] + new_tokens:
        raise RuntimeError(f"torch generate returned {first.shape[1] - ids.shape[1]} new tokens")
    seconds = timed(run, repeats, warmup=0)
    return dict(seconds=seconds, items=ids.shape[0] * new_tokens,
                check=[int(t) for t in first[0, ids.shape[1]:]], **probe.report())
