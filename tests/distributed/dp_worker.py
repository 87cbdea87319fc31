"""One rank of the data-parallel tests (tests/distributed/test_data_parallel.py).

    python dp_worker.py KIND OUT [MODE]        (under mpirun -n N, or alone)

KIND: lm (a tiny GPT-2-shaped generator) or cls (a tiny BERT classifier);
trains it with reviewgen's Trainer on the communicator of the environment
(one process without mpirun) and saves, in OUT/results/, rank<r>.npz: the
final parameters, the history and the result. The Trainer's own output_dir
is OUT/run-rank<r>, so that the files each rank wrote show.
MODE: "ok"; "die": rank 1 SIGKILLs itself at its 5th all-reduce; "hang":
rank 1 sleeps instead (the survivors' REVIEWGEN_COMM_TIMEOUT must fire).
"""
import json
import os
import signal
import sys
import time

import numpy as np

from reviewgen.core.config import TrainingConfig
from reviewgen.core.distributed import from_environment
from reviewgen.core.models import Model, ModelConfig
from reviewgen.core.training import Trainer

NO_DROPOUT = dict(embd_pdrop=0.0, resid_pdrop=0.0, attn_pdrop=0.0, cls_pdrop=0.0)


def make_model(kind):
    if kind == "lm":
        config = ModelConfig(vocab_size=29, n_positions=16, n_layer=2, n_head=2, n_embd=16, **NO_DROPOUT)
    else:
        config = ModelConfig(vocab_size=29, n_positions=16, n_layer=2, n_head=2, n_embd=16, head="cls_bert",
                             num_labels=3, causal=False, type_vocab_size=2, **NO_DROPOUT)
    model = Model(config)
    rng = np.random.default_rng(7)
    model.parameters[:] += (rng.standard_normal(model.parameters.size) * 0.05).astype(np.float32)
    return model


def make_batches(kind, rows, batch_size, seed):
    """Right-padded rows of 3..12 tokens, cut into batch dicts (a short last one)."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(3, 13, rows)
    tokens = np.zeros((rows, 12), np.int32)
    mask = np.zeros((rows, 12), np.int32)
    for i, n in enumerate(lengths):
        tokens[i, :n] = rng.integers(1, 29, n)
        mask[i, :n] = 1
    labels = (tokens[:, 0] % 3).astype(np.int32)
    types = (np.arange(12)[None, :] >= 6).astype(np.int32) * mask
    batches = []
    for i in range(0, rows, batch_size):
        batch = dict(tokens=tokens[i:i + batch_size], attention_mask=mask[i:i + batch_size])
        if kind == "cls":
            batch.update(targets=labels[i:i + batch_size], token_types=types[i:i + batch_size])
        batches.append(batch)
    return batches


class Faulty:
    """Passes every all-reduce on, but rank 1 dies (or hangs) at its 5th."""

    def __init__(self, inner, mode):
        self.inner, self.mode, self.calls = inner, mode, 0
        self.rank, self.size = inner.rank, inner.size

    def allreduce(self, array):
        self.calls += 1
        if self.rank == 1 and self.calls == 5:
            if self.mode == "die":
                os.kill(os.getpid(), signal.SIGKILL)
            time.sleep(3600)
        self.inner.allreduce(array)


def run(kind, out, mode="ok", communicator=None):
    make = TrainingConfig.for_generator if kind == "lm" else TrainingConfig.for_classifier
    config = make(num_train_epochs=2, per_device_train_batch_size=4, per_device_eval_batch_size=8,
                  gradient_accumulation_steps=2, learning_rate=0.01, warmup_ratio=0.1, seed=3)
    model = make_model(kind)
    train = make_batches(kind, 21, 4, seed=1)  # 6 micro-batches, the last of one row
    evaluation = make_batches(kind, 8, 8, seed=2)
    if mode != "ok":
        communicator = Faulty(communicator, mode)
    rank = 0 if communicator is None else communicator.rank
    trainer = Trainer(model, config, train, evaluation, os.path.join(out, f"run-rank{rank}"),
                      communicator=communicator)
    result = trainer.train()
    os.makedirs(os.path.join(out, "results"), exist_ok=True)
    history = [{k: v for k, v in h.items() if isinstance(v, (int, float))} for h in result.history]
    np.savez(os.path.join(out, "results", f"rank{rank}.npz"), parameters=np.asarray(model.parameters),
             history=json.dumps(history), global_step=result.global_step, best_epoch=result.best_epoch or 0)
    return model, result


if __name__ == "__main__":
    kind, out = sys.argv[1], sys.argv[2]
    run(kind, out, sys.argv[3] if len(sys.argv) > 3 else "ok", from_environment())
