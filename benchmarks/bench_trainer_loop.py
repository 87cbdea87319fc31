"""Per-update time of Trainer.train() on a tiny model (where the Python/C
round trips of a step loop show) and training throughput on the DistilGPT2
shape (6 layers, 768 wide, vocabulary 50257; B=8 x T=128; the last block and
the head trained, the seed study's freezing). The same script measures any
revision that has reviewgen.core.training.Trainer: run it with PYTHONPATH at
the tree to measure.

    PYTHONPATH=. python benchmarks/bench_trainer_loop.py tiny           # tiny-progress: a callback per update
    PYTHONPATH=. python benchmarks/bench_trainer_loop.py distilgpt2
"""
import json
import sys
import tempfile
import time

import numpy as np

from reviewgen.core.config import TrainingConfig
from reviewgen.core.models import Model, ModelConfig
from reviewgen.core.training import Trainer


def batches(vocab, B, T, count, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        tokens = rng.integers(0, vocab, (B, T)).astype(np.int32)
        out.append(dict(tokens=tokens, attention_mask=np.ones_like(tokens), targets=tokens.copy()))
    return out


def timed_run(config, B, T, updates, warmup=2, progress=None):
    model = Model(config)
    cfg = TrainingConfig.for_generator(num_train_epochs=1, gradient_accumulation_steps=1,
                                       per_device_train_batch_size=B, learning_rate=1e-4)
    with tempfile.TemporaryDirectory() as directory:
        Trainer(model, cfg, batches(config.vocab_size, B, T, warmup), None, directory).train()  # warm caches
        data = batches(config.vocab_size, B, T, updates, seed=1)
        trainer = Trainer(model, cfg, data, None, directory, progress=progress)
        prepared = {}
        if hasattr(trainer, "core_trainer"):  # the core trainer: time its data hand-over apart
            original = trainer._prepare

            def prepare():
                t0 = time.perf_counter()
                original()
                prepared["seconds"] = time.perf_counter() - t0

            trainer._prepare = prepare
        started = time.perf_counter()
        trainer.train()
        elapsed = time.perf_counter() - started
    return elapsed, (elapsed - prepared["seconds"]) if prepared else None


def main(which):
    progress = (lambda event: None) if which.endswith("-progress") else None  # a callback on every update
    which = which.replace("-progress", "")
    if which == "tiny":
        config = ModelConfig(vocab_size=64, n_positions=16, n_layer=2, n_head=2, n_embd=16)
        B, T, updates = 2, 8, 10000
    else:
        T = int(which.split(":")[1]) if ":" in which else 128  # distilgpt2:32 for a quicker check
        which = "distilgpt2"
        config = ModelConfig(vocab_size=50257, n_positions=1024, n_layer=6, n_head=12, n_embd=768)
        B, updates = 8, 6
    steps = []
    if which.startswith("distilgpt2"):  # the updates' own wall time (the step events), without the epoch-end checkpoint
        cpu = [time.process_time()]

        def progress(event):
            if event.get("event") == "step":
                steps.append(event["elapsed_s"])
                cpu.append(time.process_time())
    elapsed, core_seconds = timed_run(config, B, T, updates, progress=progress)
    if steps:
        print(json.dumps(dict(shape=which, update_seconds=[round(x, 3) for x in steps],
                              median_update_s=round(float(np.median(steps)), 3),
                              tokens_per_s_in_updates=round(B * T * len(steps) / sum(steps), 1),
                              # CPU time of the updates (with OMP_NUM_THREADS=1 the least load-sensitive figure)
                              cpu_s_per_update=round((cpu[-1] - cpu[1]) / max(len(cpu) - 2, 1), 3))))
    print(json.dumps(dict(shape=which, progress_callback=progress is not None, updates=updates, seconds=round(elapsed, 3),
                          ms_per_update=round(1000 * elapsed / updates, 4),
                          without_handover_ms_per_update=None if core_seconds is None else round(1000 * core_seconds / updates, 4),
                          tokens_per_s=round(B * T * updates / elapsed, 1))))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tiny")
