"""A search on one of DeepHyper's evaluators: CBO's ask/tell on the manager, trials on the workers.

Evaluators: ``serial`` (trials in the search's own process), ``thread`` and ``process`` (``workers`` local
workers) and ``mpi`` (rank 0 manages, every other rank evaluates; :mod:`qcdgip.mpi`). The process pool is started
with ``spawn``: a worker forked after the manager has used torch's OpenMP threads inherits a thread pool whose
threads do not exist and waits on them forever, so every worker starts a fresh interpreter instead (a few seconds
once per worker). Every trial runs on its share of the node's cores (:mod:`qcdgip.runtime`); ``search.torch_threads``
pins the count.
"""

from __future__ import annotations

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from hpo.config import SearchConfig
from hpo.search.results import finalize, read_results
from hpo.search.space import base_point, build_problem

__all__ = ["EVALUATORS", "make_evaluator", "run_search", "trial_processes"]

EVALUATORS = ("serial", "thread", "process", "mpi")


def trial_processes(evaluator: str, workers: int) -> int:
    """Processes on a node that divide its cores among the trials (0 for MPI: each rank counts its node's)."""
    return {"serial": 1, "thread": workers, "process": workers}.get(evaluator, 0)


def make_evaluator(function: Any, evaluator: str, workers: int, kwargs: dict[str, Any], extra: dict[str, Any]) -> Any:
    """DeepHyper's evaluator for ``function``, a spawned process pool for ``process``.

    Args:
        function: the run function (a coroutine for ``serial``).
        evaluator: serial, thread, process or mpi.
        workers: local workers (ignored for serial and mpi).
        kwargs: the run function's keyword arguments.
        extra: more ``method_kwargs`` (callbacks, storage).
    """
    from deephyper.evaluator import Evaluator

    if evaluator == "mpi":
        from deephyper.evaluator.storage import MemoryStorage

        # MPIWinStorage (DeepHyper's default for MPI) fails under MPICH; rank 0 keeps the jobs in memory instead.
        method_kwargs = {"storage": MemoryStorage(), "run_function_kwargs": kwargs, **extra}
        return Evaluator.create(function, method="mpicomm", method_kwargs=method_kwargs)
    n = 1 if evaluator == "serial" else workers
    method_kwargs = {"num_workers": n, "run_function_kwargs": kwargs, **extra}
    ev = Evaluator.create(function, method=evaluator, method_kwargs=method_kwargs)
    if evaluator == "process":
        ev.executor.shutdown(wait=True)
        ev.executor = ProcessPoolExecutor(max_workers=n, mp_context=multiprocessing.get_context("spawn"))
    return ev


def _cbo(config: SearchConfig, runcard: dict[str, Any], out: Path, done: int, stopper: Any) -> Any:
    from deephyper.hpo import CBO

    s = config.search
    base = base_point(config, runcard) if s.include_base and not done else None
    return CBO(
        build_problem(config),
        # A restart draws its random points from another stream: the same seed would propose the first search's
        # initial points again.
        random_state=s.seed + done,
        log_dir=str(out),
        verbose=0,
        checkpoint_restart=bool(done),
        surrogate_model=s.surrogate,
        acq_func_kwargs={"kappa": s.kappa},
        acq_optimizer=s.acq_optimizer,
        n_initial_points=s.n_initial_points,
        initial_points=[base] if base else None,
        stopper=stopper,
    )


def run_search(
    config: SearchConfig,
    runcard: dict[str, Any],
    out: Path,
    evaluator: str = "serial",
    workers: int = 1,
    restart: bool = False,
    progress: bool = True,
) -> dict[str, Any] | None:
    """Run (or continue) the search; returns the summary on the managing process, None on MPI workers."""
    from deephyper.evaluator.callback import TqdmCallback

    from hpo.search.trial import max_budget, run_trial, run_trial_async

    s = config.search
    workers = 1 if evaluator == "serial" else workers
    kwargs = {
        "search": config.model_dump(mode="json"),
        "runcard": runcard,
        "run_dir": str(out.resolve()),
        "threads": s.torch_threads,
        "processes": trial_processes(evaluator, workers),
    }
    extra: dict[str, Any] = {"callbacks": [TqdmCallback("trials")] if progress else []}
    stopper = None
    if config.stopper.kind != "none":
        from hpo.search.stopping import LedgerStorage, build_stopper

        stopper = build_stopper(config.stopper, max_budget(config, runcard))
        # The stoppers compare trials through the storage: it must reach every worker (hpo.search.stopping).
        extra["storage"] = LedgerStorage(out / "stopper")
    function = run_trial_async if evaluator == "serial" else run_trial
    with make_evaluator(function, evaluator, workers, kwargs, extra) as ev:
        if evaluator == "mpi" and not ev.is_master:
            return None
        n_workers = ev.num_workers
        done = len(read_results(out)) if restart and (out / "results.csv").is_file() else 0
        search = _cbo(config, runcard, out, done, stopper)
        start = time.time()
        if s.max_evals - done > 0:
            # With max_evals_strict, DeepHyper's cap on submitted jobs is set before results.csv is reloaded, so it
            # counts the reloaded trials: the total, not the remainder, is what to pass.
            search.search(ev, max_evals=s.max_evals, timeout=s.timeout, max_evals_strict=True)
        wall = time.time() - start
    return finalize(out, config, runcard, n_workers, start, wall)
