"""Data-parallel training: the communicator the core's trainer all-reduces with.

The core (csrc/rg_comm.h, csrc/rg_trainer.h) needs one collective: an
in-place sum of a float32 / float64 buffer over every rank. A communicator is
any object with ``rank``, ``size`` and ``allreduce(array)`` doing that sum;
:class:`MPICommunicator` is the one for CPUs, over mpi4py (Open MPI, MPICH):

    mpirun -n 4 reviewgen train ...           # the CLI finds MPI by itself
    mpirun -n 4 python my_script.py           # Trainer(..., communicator=from_environment())

Each rank trains on its share of every global batch (rank r takes rows r,
r + size, ... of each micro-batch), the trainable gradients are summed
(weighted so that the result is the gradient of the global batch's loss)
before clipping and AdamW, so every rank ends with the same parameters and
the run equals one process with the same global batch within fp32 reduction
order. Only rank 0 writes checkpoints, model directories and logs.

A rank that dies: Open MPI's mpirun notices and ends the whole job (non-zero
exit, "mpirun noticed that process rank N ... exited on signal ..."). A rank
that hangs: give ``timeout`` (or REVIEWGEN_COMM_TIMEOUT seconds) and an
all-reduce that waits longer raises :class:`CommTimeout` on the survivors,
which the trainer reports as a TrainingError; when that process exits it
calls MPI_Abort, which ends every rank (MPI cannot finalize with a stuck peer).
"""

from __future__ import annotations

import atexit
import os
import sys
import time
from contextlib import contextmanager
from typing import Any, Iterator, Optional, Protocol, runtime_checkable

import numpy as np

__all__ = ["Communicator", "MPICommunicator", "CommTimeout", "from_mpi", "from_environment",
           "launched_with_mpi", "mpi_world_size", "is_main_rank", "active", "activated"]

# What launchers put in each rank's environment: the world size, first found wins.
_MPI_SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_SIZE", "MPI_LOCALNRANKS")


@runtime_checkable
class Communicator(Protocol):
    """What the core trainer needs: its rank, the number of ranks, and an
    in-place sum of a 1-d float32 / float64 numpy array over all ranks (every
    rank calls it with the same sizes in the same order)."""

    rank: int
    size: int

    def allreduce(self, array: np.ndarray) -> None: ...


class CommTimeout(RuntimeError):
    """An all-reduce waited longer than the communicator's timeout (a peer rank is dead or stuck)."""


class MPICommunicator:
    """The core's communicator over an mpi4py communicator (default COMM_WORLD).

    timeout: seconds an all-reduce may wait before :class:`CommTimeout` (it then
    polls a non-blocking Iallreduce); None (default): REVIEWGEN_COMM_TIMEOUT, or
    a blocking Allreduce."""

    def __init__(self, comm: Any = None, timeout: Optional[float] = None):
        from mpi4py import MPI  # optional dependency: pip install mpi4py

        self._MPI = MPI
        self.comm = comm if comm is not None else MPI.COMM_WORLD
        self.rank = int(self.comm.Get_rank())
        self.size = int(self.comm.Get_size())
        if timeout is None and os.environ.get("REVIEWGEN_COMM_TIMEOUT"):
            timeout = float(os.environ["REVIEWGEN_COMM_TIMEOUT"])
        self.timeout = timeout

    def allreduce(self, array: np.ndarray) -> None:
        MPI = self._MPI
        if self.timeout is None:
            self.comm.Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
            return
        request = self.comm.Iallreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        deadline = time.monotonic() + self.timeout
        pause = 1e-5
        while not request.Test():
            if time.monotonic() > deadline:
                # MPI cannot finalize with a stuck peer: end the whole job when
                # this process exits (after the exception has been reported)
                atexit.register(self._abort_job)
                raise CommTimeout(f"rank {self.rank} of {self.size}: an all-reduce waited more than "
                                  f"{self.timeout:g} s; a peer rank is dead or stuck")
            time.sleep(pause)
            pause = min(pause * 2, 1e-3)

    def _abort_job(self) -> None:
        sys.stderr.flush()
        self.comm.Abort(1)

    def barrier(self) -> None:
        self.comm.Barrier()

    def __repr__(self) -> str:
        return f"MPICommunicator(rank={self.rank}, size={self.size})"


def mpi_world_size() -> int:
    """The world size an MPI launcher (mpirun, srun --mpi) gave this process, 1 if none."""
    for name in _MPI_SIZE_VARIABLES:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    # srun --mpi=pmix sets PMIX_RANK but no size: the job step's task count is the world
    value = os.environ.get("SLURM_STEP_NUM_TASKS") or os.environ.get("SLURM_NTASKS")
    if ("PMIX_RANK" in os.environ or "PMI_RANK" in os.environ) and value and value.isdigit():
        return int(value)
    return 1


def launched_with_mpi() -> bool:
    """Whether this process is one of several ranks an MPI launcher started."""
    return mpi_world_size() > 1


def from_mpi(comm: Any = None, timeout: Optional[float] = None) -> MPICommunicator:
    """An :class:`MPICommunicator` (imports mpi4py, which initialises MPI)."""
    try:
        return MPICommunicator(comm, timeout)
    except ImportError as error:
        raise ImportError("data-parallel training on CPUs needs mpi4py (pip install mpi4py, with an MPI "
                          "library such as Debian's openmpi-bin libopenmpi-dev)") from error


def from_environment(timeout: Optional[float] = None) -> Optional[MPICommunicator]:
    """The communicator this process was launched with: an MPICommunicator
    under mpirun / srun with more than one rank, else None (one process).
    A torchrun-style environment (WORLD_SIZE > 1 without MPI) is refused:
    the NCCL communicator is not part of this build."""
    if launched_with_mpi():
        return from_mpi(timeout=timeout)
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        raise RuntimeError("WORLD_SIZE > 1 but no MPI launcher: the NCCL (torchrun-style) communicator is "
                           "not available in this build; launch with mpirun / srun instead")
    return None


def is_main_rank(communicator: Optional[Communicator]) -> bool:
    """True for one process or rank 0: the rank that writes files and logs."""
    return communicator is None or int(communicator.rank) == 0


_active: Optional[Communicator] = None


def active() -> Optional[Communicator]:
    """The communicator of :func:`activated` (what a Trainer built without one
    uses), or None."""
    return _active


@contextmanager
def activated(communicator: Optional[Communicator]) -> Iterator[Optional[Communicator]]:
    """Every Trainer made inside (by the workflow, a Classifier, a Generator)
    trains data-parallel on `communicator` (None: one process); the CLI wraps
    ``reviewgen train`` in it under mpirun."""
    global _active
    previous, _active = _active, communicator
    try:
        yield communicator
    finally:
        _active = previous
