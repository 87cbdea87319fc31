"""Data parallelism without MPI (issue #15): the launcher detection of
reviewgen.core.distributed, and the binding's communicator protocol driven by
two threads of this process (an in-process all-reduce), which must train to
the parameters of one process as two MPI ranks do (tests/distributed)."""
import os
import sys
import threading

import numpy as np
import pytest

from reviewgen import _core
from reviewgen.core import distributed
from reviewgen.core.training import TrainingError

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "distributed"))
import dp_worker  # noqa: E402

sys.path.pop(0)

LAUNCHER_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS", "PMIX_RANK", "PMI_RANK",
                      "SLURM_NTASKS", "SLURM_STEP_NUM_TASKS", "WORLD_SIZE")


@pytest.fixture
def clean_env(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_launcher_detection(clean_env):
    assert distributed.mpi_world_size() == 1 and distributed.from_environment() is None
    clean_env.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert distributed.mpi_world_size() == 4 and distributed.launched_with_mpi()
    clean_env.delenv("OMPI_COMM_WORLD_SIZE")
    clean_env.setenv("SLURM_NTASKS", "8")
    assert distributed.mpi_world_size() == 1  # a Slurm job step without an MPI plugin is not MPI
    clean_env.setenv("PMIX_RANK", "0")
    assert distributed.mpi_world_size() == 8  # srun --mpi=pmix
    clean_env.delenv("PMIX_RANK")
    clean_env.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match="NCCL"):
        distributed.from_environment()
    assert distributed.is_main_rank(None)


class ThreadComm:
    """Rank `rank` of `size` threads: every all-reduce sums all the ranks'
    arrays in rank order (the same bits everywhere)."""

    def __init__(self, shared, rank):
        self.shared, self.rank, self.size = shared, rank, shared["size"]

    def allreduce(self, array):
        shared = self.shared
        shared["arrays"][self.rank] = array
        shared["barrier"].wait()
        total = shared["arrays"][0].copy()
        for other in shared["arrays"][1:]:
            total += other
        shared["barrier"].wait()
        array[...] = total
        shared["barrier"].wait()


def threaded_ranks(kind, out, size=2):
    shared = dict(size=size, arrays=[None] * size, barrier=threading.Barrier(size, timeout=60))
    results, errors = [None] * size, []

    def rank_main(rank):
        try:
            results[rank] = dp_worker.run(kind, str(out), communicator=ThreadComm(shared, rank))
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)
            shared["barrier"].abort()

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not errors, errors
    return results


@pytest.mark.parametrize("kind", ["lm", "cls"])
def test_two_thread_ranks_train_to_the_parameters_of_one_process(kind, tmp_path):
    (m0, r0), (m1, r1) = threaded_ranks(kind, tmp_path / "two")
    one, result = dp_worker.run(kind, str(tmp_path / "one"))
    assert np.array_equal(m0.parameters, m1.parameters)
    difference = np.abs(np.asarray(m0.parameters) - np.asarray(one.parameters))
    assert difference.max() <= 2e-4 and np.mean(difference <= 1e-6) >= 0.99
    assert r0.global_step == r1.global_step == result.global_step == 6
    for ours, theirs in zip(r0.history, result.history):
        assert ours["train_loss"] == pytest.approx(theirs["train_loss"], rel=1e-6)
        assert ours["eval_loss"] == pytest.approx(theirs["eval_loss"], rel=1e-6)
    assert not (tmp_path / "two" / "run-rank1").exists()  # rank 1 wrote nothing
    assert (tmp_path / "two" / "run-rank0" / "checkpoint.rgck").exists()


class SoloComm:
    rank, size = 0, 1

    def allreduce(self, array):
        raise AssertionError("a size-1 communicator is never called")


def test_a_size_one_communicator_is_one_process(tmp_path):
    solo, _ = dp_worker.run("lm", str(tmp_path / "solo"), communicator=SoloComm())
    alone, _ = dp_worker.run("lm", str(tmp_path / "alone"))
    assert np.array_equal(solo.parameters, alone.parameters)


class BrokenComm:
    rank, size = 0, 2

    def allreduce(self, array):
        raise ConnectionError("peer gone")


def test_a_failing_allreduce_raises_a_training_error_from_its_cause(tmp_path):
    with pytest.raises(TrainingError, match=r"rank 0 of 2.*all-reduce failed") as raised:
        dp_worker.run("lm", str(tmp_path), communicator=BrokenComm())
    comm_error = raised.value.__cause__
    assert isinstance(comm_error, _core.CommError)
    assert isinstance(comm_error.__cause__, ConnectionError) and "peer gone" in str(comm_error)


def test_a_communicator_must_have_rank_size_and_allreduce(tmp_path):
    model = dp_worker.make_model("lm")
    batches = dp_worker.make_batches("lm", 8, 4, seed=0)
    from reviewgen.core.training import dataset_arrays
    train = dataset_arrays(batches, False, "train")[0]
    with pytest.raises(TypeError, match="allreduce"):
        _core.Trainer(model.core, {}, train, comm=object())
    bad = SoloComm()
    bad.rank = 3
    with pytest.raises(ValueError, match="rank 3 of size 1"):
        _core.Trainer(model.core, {}, train, comm=bad)
