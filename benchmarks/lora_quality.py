"""Eval loss of SmolLM2-135M (the offline GGUF) after about the same CPU time of
last-block freezing (the seed) and of LoRA on every block, on the bundled IMDB sample's
generator texts. Each mode: one epoch over as many training texts as its measured step
time allows in the budget, then the mean token loss / perplexity on the same held-out
texts, and the rating-prefix probe: the loss of the review given the right
"Review of {label}." prefix against a wrong one (a lower loss with the right one means
the model uses the rating).

    nice -n 10 python benchmarks/lora_quality.py --budget 300 --output runs/lora_quality.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np


def _texts(seed: int = 0):
    from reviewgen import data

    prepared = data.prepare(data.load_sample("imdb"), seed=seed)
    train = prepared.train
    val = prepared.val
    return (list(train["generator_text"]), list(val["generator_text"][:48]), list(val["text"][:48]),
            list(val["label"][:48]))


def _probe(generator, texts, labels) -> dict:
    """Mean loss of the reviews with their own rating prefix and with a wrong one."""
    from reviewgen.text.data import generator_text

    levels = sorted(set(labels))
    right = [generator_text(label, text) for text, label in zip(texts, labels)]
    wrong = [generator_text(levels[(levels.index(label) + len(levels) // 2) % len(levels)], text)
             for text, label in zip(texts, labels)]
    return dict(right=generator.evaluate(right)["loss"], wrong=generator.evaluate(wrong)["loss"])


def run(mode: str, budget: float, step_s: float, batch: int, max_length: int) -> dict:
    from reviewgen.core.config import TrainingConfig
    from reviewgen.tasks.generator import Generator

    train, val, val_texts, val_labels = _texts()
    generator = Generator.from_pretrained("smollm2", max_length=max_length)
    steps = max(1, int(budget / step_s))
    rows = min(len(train), steps * batch)
    common = dict(num_train_epochs=1, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
                  load_best_model_at_end=False, warmup_ratio=0.1)
    if mode == "lora":
        config = TrainingConfig.for_generator(learning_rate=2e-3, lora_rank=8, lora_alpha=16, lora_dropout=0.05,
                                              lora_targets="all", **common)
    else:
        config = TrainingConfig.for_generator(learning_rate=5e-4, trainable_blocks=1, head_policy="train", **common)
    before = generator.evaluate(val)["loss"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as directory:
        generator.train(train[:rows], None, config=config, output_dir=directory)
    train_s = time.perf_counter() - start
    after = generator.evaluate(val)
    return dict(mode=mode, rows=rows, steps=(rows + batch - 1) // batch, train_s=train_s,
                cpu_s=time.process_time(), eval_loss_before=before, eval_loss=after["loss"],
                perplexity=after["perplexity"], rating_probe=_probe(generator, val_texts, val_labels))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds of training per mode")
    parser.add_argument("--freeze-step", type=float, default=2.0, help="measured seconds per freeze1 step")
    parser.add_argument("--lora-step", type=float, default=4.0, help="measured seconds per LoRA step")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=96)
    parser.add_argument("--modes", default="freeze1,lora")
    parser.add_argument("--output")
    args = parser.parse_args(argv)
    results = []
    for mode in args.modes.split(","):
        step = args.lora_step if mode == "lora" else args.freeze_step
        result = run(mode, args.budget, step, args.batch, args.max_length)
        print(json.dumps(result), flush=True)
        results.append(result)
    if args.output:
        os.makedirs(os.path.dirname(args.output) or ".", exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
