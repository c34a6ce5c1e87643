"""MPI launching shared by the commands that run on DeepHyper's MPI evaluator (a search, an ensemble's refits).

A command asked for ``--evaluator mpi`` either runs as one of several ranks (started by ``mpiexec`` or ``srun``:
:func:`launched_by_mpi`) or re-launches itself as ``mpiexec -n workers+1`` (:func:`relaunch_under_mpi`, with the
``mpiexec`` next to the Python interpreter first, i.e. the one of the ``mpich`` wheel). Rank 0 manages, every other
rank evaluates; :func:`join_mpi` initializes MPI in a rank and gives each worker one GPU of its node
(:func:`bind_worker_gpu`). Importing this module never initializes MPI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from qcdgip.errors import EXIT_FAILED, EXIT_INTERRUPTED
from qcdgip.training import srun_tasks

__all__ = [
    "CHILD_FLAG",
    "abort",
    "bind_worker_gpu",
    "join_mpi",
    "launched_by_mpi",
    "local_ranks",
    "local_workers",
    "relaunch_under_mpi",
    "world_size",
]

CHILD_FLAG = "QCDGIP_MPI_CHILD"
"""Set in the environment of the ranks a command re-launched itself as."""


def launched_by_mpi() -> bool:
    """Whether this process is one of several MPI ranks (read from the launcher's environment; MPI stays off)."""
    if os.environ.get(CHILD_FLAG):
        return True
    for key in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE"):
        if int(os.environ.get(key, "1") or 1) > 1:
            return True
    return (srun_tasks() or 1) > 1


def local_ranks() -> int:
    """Ranks of this job on this node, from the launcher's environment (1 outside MPI)."""
    for key in ("MPI_LOCALNRANKS", "OMPI_COMM_WORLD_LOCAL_SIZE", "SLURM_NTASKS_PER_NODE", "PMI_SIZE"):
        value = os.environ.get(key, "")
        if value.isdigit() and int(value) > 0:
            return int(value)
    return 1


_LOCAL_WORKERS = "QCDGIP_LOCAL_WORKERS"


def local_workers() -> int:
    """MPI worker ranks on this rank's node (set by :func:`join_mpi`; the launcher's local ranks otherwise)."""
    value = os.environ.get(_LOCAL_WORKERS, "")
    return int(value) if value.isdigit() and int(value) > 0 else local_ranks()


def world_size() -> int:
    """Ranks of this MPI job (initializes MPI if needed; call only inside a launched job)."""
    from mpi4py import MPI

    if not MPI.Is_initialized():
        MPI.Init_thread()
    return MPI.COMM_WORLD.Get_size()


def bind_worker_gpu(comm: Any) -> str | None:
    """Give each MPI worker rank one GPU of its node; returns the device it got (None: manager or no GPU).

    Collective over ``comm`` (rank 0 is the manager). The workers of a node are numbered in rank order and take the
    node's visible GPUs (``CUDA_VISIBLE_DEVICES``, which Slurm sets from ``--gpus-per-node``, else every device
    CUDA sees) round-robin; ``CUDA_VISIBLE_DEVICES`` is then narrowed to that one before anything starts CUDA, so
    the trial's one-device training uses it. More workers than GPUs on a node share them (with a warning).
    """
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    ranks = node.allgather(comm.Get_rank())
    node.Free()
    # The trials of this node's workers divide its cores among them (the manager's ask/tell is light).
    os.environ[_LOCAL_WORKERS] = str(max(1, sum(1 for r in ranks if r != 0)))
    if comm.Get_rank() == 0:
        return None
    visible = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    if "CUDA_VISIBLE_DEVICES" not in os.environ:
        import torch

        visible = [str(i) for i in range(torch.cuda.device_count())]  # counts without starting CUDA
    if not visible:
        return None
    index = sorted(r for r in ranks if r != 0).index(comm.Get_rank())
    if index >= len(visible):
        print(
            f"warning: rank {comm.Get_rank()} is worker {index + 1} on a node with {len(visible)} GPUs: sharing "
            f"GPU {visible[index % len(visible)]}",
            file=sys.stderr,
            flush=True,
        )
    device = visible[index % len(visible)]
    os.environ["CUDA_VISIBLE_DEVICES"] = device
    return device


def join_mpi() -> int:
    """Initialize MPI in a launched rank, check there are workers, bind a worker to its GPU; returns the rank.

    Raises:
        ValueError: a single rank (the manager needs workers).
    """
    from mpi4py import MPI

    if not MPI.Is_initialized():
        MPI.Init_thread()
    if MPI.COMM_WORLD.Get_size() < 2:
        raise ValueError("--evaluator mpi needs at least 2 ranks (1 manager + workers)")
    bind_worker_gpu(MPI.COMM_WORLD)
    return MPI.COMM_WORLD.Get_rank()


def abort(status: int) -> None:
    """Take every rank down with this one (the workers wait for the manager inside the evaluator)."""
    from mpi4py import MPI

    MPI.COMM_WORLD.Abort(status)


def _mpiexec() -> str:
    local = Path(sys.executable).parent / "mpiexec"
    found = str(local) if local.is_file() else shutil.which("mpiexec")
    if not found:
        raise ValueError("--evaluator mpi: no mpiexec found (install the mpich wheel or load an MPI module)")
    return found


def relaunch_under_mpi(module: str, argv: list[str], workers: int) -> int:
    """Run ``python -m module argv`` under ``mpiexec -n workers+1``; returns the exit status to report.

    A rank that dies (killed, out of memory) takes the job down; what the ranks finished stays on disk, and the
    status is then 1 (the message says to continue with ``--resume``). An interrupted job returns 130.
    """
    cmd = [_mpiexec(), "-n", str(workers + 1), sys.executable, "-m", module, *argv]
    env = dict(os.environ, **{CHILD_FLAG: "1"})
    print(f"== launching {workers} MPI workers + 1 manager: {' '.join(cmd)}", flush=True)
    try:
        status = subprocess.call(cmd, env=env)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    if status in (0, 2, 3, EXIT_INTERRUPTED):
        return status
    print(
        f"error: the MPI job ended abnormally (mpiexec exit status {status}): a rank died; finished work is kept, "
        "continue with the same command and --resume",
        file=sys.stderr,
    )
    return EXIT_FAILED
