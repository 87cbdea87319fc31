"""Epoch times of the seed study's fine-tunes, the last block and the head trained,
with and without cache_frozen (the frozen part's output kept after epoch 1), on
random models of the study's shapes: the DistilBERT classifier (6 x 768, 5
labels) and the DistilGPT2 generator (6 x 768, vocabulary 50257, head frozen:
it is tied to the input embedding). Reviewgen against itself: PyTorch has no such
cache. Each configuration runs in a fresh process; epoch times come from the
trainer's progress events.

    python benchmarks/bench_frozen_cache.py [--rows 256] [--seq 128] [--epochs 3] [--threads N] [--json PATH]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

SHAPES = {
    "distilbert classifier": dict(vocab_size=30522, n_layer=6, n_head=12, n_embd=768, n_positions=512,
                                  head="cls_distilbert", num_labels=5, causal=False, pre_norm=False,
                                  embed_norm=True, final_norm=False, activation="gelu_erf", embd_pdrop=0.1,
                                  resid_pdrop=0.1, attn_pdrop=0.1, cls_pdrop=0.2),
    "distilgpt2 generator": dict(vocab_size=50257, n_layer=6, n_head=12, n_embd=768, n_positions=1024,
                                 embd_pdrop=0.1, resid_pdrop=0.1, attn_pdrop=0.1),
}


def child(shape, rows, seq, epochs, cache):
    import numpy as np

    from reviewgen.core.config import TrainingConfig
    from reviewgen.core.models import Model, ModelConfig
    from reviewgen.core.training import Trainer

    config = ModelConfig(**SHAPES[shape])
    model = Model(config)
    rng = np.random.default_rng(0)
    classifier = config.head != "lm"
    batches = []
    for _ in range(rows // 8):
        tokens = rng.integers(1, config.vocab_size, (8, seq)).astype(np.int32)
        lengths = rng.integers(seq // 2, seq + 1, 8)
        mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int32)
        targets = rng.integers(0, 5, 8).astype(np.int32) if classifier else np.where(mask > 0, tokens, -100)
        batches.append(dict(tokens=tokens, attention_mask=mask, targets=targets.astype(np.int32)))
    make = TrainingConfig.for_classifier if classifier else TrainingConfig.for_generator
    cfg = make(num_train_epochs=epochs, per_device_train_batch_size=8, gradient_accumulation_steps=1,
               learning_rate=1e-4, trainable_blocks=1, head_policy="train" if classifier else "frozen",
               load_best_model_at_end=False, cache_frozen=cache, frozen_dropout=not cache)
    ends = []  # the time of each epoch's last update
    with tempfile.TemporaryDirectory() as directory:
        trainer = Trainer(model, cfg, batches, None, directory, progress=lambda e: ends.append(
            time.perf_counter()) if e["event"] == "step" and e.get("epoch_progress", 0) >= 0.999 else None)
        start = time.perf_counter()
        result = trainer.train()
    edges = [start] + ends[:epochs]
    return dict(shape=shape, cache=cache, epoch_s=[b - a for a, b in zip(edges, edges[1:])],
                cache_mib=result.frozen_cache_mib, tokens_per_epoch=int(sum(b["attention_mask"].sum() for b in batches)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--json")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        shape, cache = args.child
        print("RESULT " + json.dumps(child(shape, args.rows, args.seq, args.epochs, cache == "1")), flush=True)
        return 0
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), OPENBLAS_NUM_THREADS=str(args.threads))
    rows = []
    for shape in SHAPES:
        for cache in ("0", "1"):
            out = subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--seq", str(args.seq),
                                  "--epochs", str(args.epochs), "--child", shape, cache],
                                 capture_output=True, text=True, env=env, check=True).stdout
            rows.append(json.loads(out.split("RESULT ", 1)[1]))
            r = rows[-1]
            print(f"{shape:22s} cache={cache}: epochs {', '.join(f'{s:.1f}' for s in r['epoch_s'])} s"
                  + (f" (cache {r['cache_mib']:.0f} MiB)" if r["cache_mib"] else ""), flush=True)
    print(f"\nload average {os.getloadavg()[0]:.1f}; {args.rows} rows x <= {args.seq} tokens, batch 8, "
          f"last block + head train, {args.threads} threads")
    for shape in SHAPES:
        plain, cached = [r for r in rows if r["shape"] == shape]
        later = lambda r: sum(r["epoch_s"][1:]) / max(1, len(r["epoch_s"]) - 1)
        print(f"{shape}: epochs after the first {later(plain):.1f} s -> {later(cached):.1f} s "
              f"({later(plain) / later(cached):.2f}x); first epoch {plain['epoch_s'][0]:.1f} s -> "
              f"{cached['epoch_s'][0]:.1f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
