"""Memory and step time of LoRA on every block against last-block freezing, on the
SmolLM2-135M shape (30 blocks, width 576, 9 heads / 3 key-value heads, MLP 1536,
vocabulary 49152, tied head) with random weights: one training step is forward +
backward + AdamW at B x T tokens. Each mode runs in a process of its own so that
its peak resident memory (ru_maxrss) is its own.

    nice -n 10 python benchmarks/bench_lora.py --steps 3 --output runs/bench_lora.json

Modes: freeze1 (the seed: last block + final norm + tied head trains, which trains
wte through the head), freeze1-headfrozen, lora (rank 8, alpha 16, all seven
projections of every block, head frozen).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

import numpy as np

MODES = ("freeze1", "freeze1-headfrozen", "lora")


def smollm2_config():
    from reviewgen.core.models import ModelConfig

    return ModelConfig(vocab_size=49152, n_positions=2048, n_layer=30, n_head=9, n_kv_head=3, head_dim=64,
                       n_embd=576, n_inner=1536, norm="rmsnorm", norm_eps=1e-5, position="rope",
                       rope_theta=100000.0, activation="swiglu", bias=False, tie_word_embeddings=True)


def run_mode(mode: str, B: int, T: int, steps: int, rank: int) -> dict:
    from reviewgen import _core
    from reviewgen.core.models import Model
    from reviewgen.weights.lora import lora_targets

    start = time.perf_counter()
    model = Model(smollm2_config())  # random weights (the core's default initialisation)
    if mode == "lora":
        model.add_lora(rank, 2.0 * rank, 0.05, lora_targets("llama", "all"))
        model.set_trainable(-1, "frozen")
    else:
        model.set_trainable(1, "train" if mode == "freeze1" else "frozen")
    build_s = time.perf_counter() - start
    optimizer = _core.AdamW(model.core, lr=1e-4, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1, max_grad_norm=1.0,
                            total_steps=0, schedule="constant")
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, 49152, size=(B, T)).astype(np.int32)
    times, fwd, bwd = [], [], []
    for step in range(steps + 1):  # the first step allocates the activations: not timed
        t0 = time.perf_counter()
        model.forward(tokens, targets=tokens, train=True, seed=step)
        t1 = time.perf_counter()
        model.backward(1.0)
        t2 = time.perf_counter()
        optimizer.step()
        t3 = time.perf_counter()
        if step:
            times.append(t3 - t0)
            fwd.append(t1 - t0)
            bwd.append(t2 - t1)
    table = model.param_table()
    trainable = sum(e["numel"] for e in table if e["trainable"])
    return dict(mode=mode, B=B, T=T, steps=steps, rank=rank if mode == "lora" else 0,
                params=int(len(model.parameters)), trainable_params=int(trainable),
                gradient_floats=int(len(model.core.gradients)), adam_state_floats=int(2 * trainable),
                activation_floats=int(model.core.activation_floats),
                step_s_median=statistics.median(times), step_s=times, forward_s_median=statistics.median(fwd),
                backward_s_median=statistics.median(bwd), build_s=build_s,
                peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
                threads=os.environ.get("OMP_NUM_THREADS"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=MODES, help="run one mode in this process (internal)")
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    if args.mode:
        print(json.dumps(run_mode(args.mode, args.batch, args.tokens, args.steps, args.rank)))
        return 0
    results = []
    for mode in args.modes.split(","):
        out = subprocess.run([sys.executable, __file__, "--mode", mode, "--batch", str(args.batch), "--tokens",
                              str(args.tokens), "--steps", str(args.steps), "--rank", str(args.rank)],
                             check=True, capture_output=True, text=True)
        result = json.loads(out.stdout.strip().splitlines()[-1])
        results.append(result)
        print(f"{mode:20s} step {result['step_s_median']:.2f} s (fwd {result['forward_s_median']:.2f}, "
              f"bwd {result['backward_s_median']:.2f})  peak RSS {result['peak_rss_mib']:.0f} MiB  "
              f"trainable {result['trainable_params'] / 1e6:.2f} M  grads {result['gradient_floats'] / 1e6:.2f} M "
              f"floats  acts {result['activation_floats'] / 1e6:.1f} M floats", flush=True)
    if args.output:
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
