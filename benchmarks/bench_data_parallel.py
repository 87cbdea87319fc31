"""Data-parallel training throughput: 1 process against N MPI ranks with one
thread each, the same global batch (issue #15, docs/distributed.md).

A random GPT-2-shaped model (4 layers, 256 wide, 4 heads, vocabulary 8192;
about 5.3 M parameters, all trained), global batch B=16 x T=128, no
accumulation, no evaluation; the figure is training tokens per second of the
whole job over the timed epoch (after one warm-up epoch), from rank 0.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/bench_data_parallel.py
    OMP_NUM_THREADS=1 PYTHONPATH=. mpirun -n 2 python benchmarks/bench_data_parallel.py
"""
import json
import os
import sys
import tempfile
import time

import numpy as np

from reviewgen.core.config import TrainingConfig
from reviewgen.core.distributed import from_environment
from reviewgen.core.models import Model, ModelConfig
from reviewgen.core.training import Trainer

VOCAB, B, T, BATCHES = 8192, 16, 128, int(os.environ.get("BENCH_BATCHES", "8"))


def main() -> None:
    comm = from_environment()
    rng = np.random.default_rng(0)
    tokens = rng.integers(0, VOCAB, (B * BATCHES, T)).astype(np.int32)
    data = [dict(tokens=tokens[i:i + B], attention_mask=np.ones((B, T), np.int32)) for i in range(0, len(tokens), B)]
    config = ModelConfig(vocab_size=VOCAB, n_positions=T, n_layer=4, n_head=4, n_embd=256, embd_pdrop=0.0,
                         resid_pdrop=0.0, attn_pdrop=0.0)
    model = Model(config)
    timings = []
    with tempfile.TemporaryDirectory() as directory:
        for epochs in (1, 2):  # 1: warm-up; 2 minus 1: the timed epoch
            cfg = TrainingConfig.for_generator(num_train_epochs=epochs, per_device_train_batch_size=B,
                                               gradient_accumulation_steps=1, learning_rate=1e-4)
            trainer = Trainer(model, cfg, data, None, directory, communicator=comm)
            started = time.perf_counter()
            trainer.train()
            timings.append(time.perf_counter() - started)
    epoch_s = timings[1] - timings[0]
    if comm is None or comm.rank == 0:
        print(json.dumps(dict(ranks=1 if comm is None else comm.size, threads=os.environ.get("OMP_NUM_THREADS"),
                              params=int(model.parameters.size), global_batch=[B, T], updates=BATCHES,
                              epoch_s=round(epoch_s, 2), tokens_per_s=round(B * T * BATCHES / epoch_s, 1))))


if __name__ == "__main__":
    sys.exit(main())
