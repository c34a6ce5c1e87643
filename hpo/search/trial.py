"""One trial of the search: build the solver from sampled hyperparameters, run its k folds, score them.

:func:`run_trial` is DeepHyper's run function. It is importable (the MPI and process evaluators pickle it by
reference) and never raises: a NaN loss, a fold over the threshold, a diverged fit or any exception becomes a failed
trial (objective ``"F_<reason>"``, DeepHyper's convention) with the reason in the metadata, so one bad point never
ends a search. Every trial returns the same metadata keys (DeepHyper fixes results.csv's columns from the first
finished trial). With a stopper (``stopper:`` of the search runcard) the trial reports its loss as it trains and
may be stopped early: ``stopped`` is 1 and ``budget`` the reports it made (``hpo.search.stopping``).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hpo.config import SearchConfig, solver_model
from hpo.kfold import FoldResult
from hpo.kfold_gan import run_gan_folds
from hpo.kfold_vaim import run_vaim_folds
from hpo.losses import FoldPoints, HyperLossResult
from hpo.penalties import patience, saturation
from inverse.gan.dis.run import load_or_generate_dis
from physics.datasets import Experiment
from physics.dis.experiment import DISExperiment
from physics.pseudodata import EventData, load_events
from qcdgip import runtime
from qcdgip.config import apply_overrides
from qcdgip.errors import NonFiniteLossError
from qcdgip.mpi import local_workers

__all__ = ["METADATA_KEYS", "evaluate", "run_trial", "run_trial_async", "score"]

METADATA_KEYS = (
    "loss",
    "failure",
    "stopped",
    "budget",
    "fold_losses",
    "replica_chi2_mean",
    "phi2",
    "penalties",
    "validation_mean",
    "estimates_mean",
    "t_start",
    "t_end",
    "busy_s",
    "worker",
    "gpu",
)

_DATA: dict[str, tuple[Experiment, EventData]] = {}


def _experiment_and_data(runcard: dict[str, Any], data_dir: Path, solver: str) -> tuple[Any, EventData]:
    """The experiment (toy or DIS) and the search's events, loaded once per worker process."""
    key = solver + json.dumps(runcard["physics"], sort_keys=True) + str(data_dir)
    if key not in _DATA:
        config = solver_model(solver).model_validate(runcard)
        if solver == "gan_dis":
            experiment = DISExperiment(config.physics)
            _DATA[key] = (experiment, load_or_generate_dis(experiment, config.data.seed, data_dir / "events.npz")[0])
        else:
            experiment = Experiment(config.physics)
            _DATA[key] = (experiment, load_events(data_dir, experiment))
    return _DATA[key]


def _penalties(fold: FoldResult, settings: Any) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    if "patience" in settings.penalties:
        out["patience"] = patience(
            fold.validation,
            fold.validation_curve,
            fold.curve_steps,
            fold.steps,
            patience_steps=fold.steps // 2,
            alpha=settings.patience_alpha,
        )
    if "saturation" in settings.penalties:
        out["saturation"] = saturation(fold.estimates, *fold.box, edge=settings.saturation_edge)
    return out


def score(folds: list[FoldResult], config: SearchConfig) -> HyperLossResult:
    """The trial loss of finished folds (``loss`` NaN and ``failed`` set when a fold fails).

    A fold that holds nothing out (the full-data fit of future tests) has no held-out loss and is left out.
    """
    s = config.loss
    hyper = s.hyper_loss()
    held = [f for f in folds if f.data.size]
    return hyper.compute([f.points() for f in held], [_penalties(f, s) for f in held])


def max_budget(config: SearchConfig, runcard: dict[str, Any]) -> int:
    """Reports of a trial that runs to the end: per ``stopper.every`` steps per model (GAN), one per fold (VAIM).

    A searched ``gan.training.steps`` counts at its highest value.
    """
    if config.solver == "vaim":
        return config.kfold.folds
    steps = runcard["gan"]["training"]["steps"]
    dim = config.space.get("gan.training.steps")
    if dim is not None:
        steps = max(v for v in dim.probes() if isinstance(v, int | float))
    models = 1 if config.kfold.vectorize else len(config.kfold.partitions or runcard["physics"]["datasets"])
    return models * math.ceil(int(steps) / config.stopper.every)


def evaluate(
    parameters: dict[str, Any],
    config: SearchConfig,
    runcard: dict[str, Any],
    data_dir: Path | None,
    reporter: Callable[[int, float], bool] | None = None,
) -> tuple[HyperLossResult, list[FoldResult]]:
    """Run the k folds of one hyperparameter point and score them.

    Args:
        parameters: dotted runcard paths -> values (inactive conditional ones may be None/NaN).
        config: the search config.
        runcard: the solver's resolved base runcard.
        data_dir: the search's events (GAN).
        reporter: takes (budget, loss so far) during training and returns True to stop the trial
            (:class:`hpo.search.stopping.TrialReporter`); None: no reports.
    """
    trial_card = apply_overrides(runcard, parameters)
    solver_config = solver_model(config.solver).model_validate(trial_card)
    s = config.loss
    hyper = s.hyper_loss()

    def stop(fold: FoldResult) -> bool:
        if not fold.data.size:
            return False
        return hyper.exceeds(fold.points(), _penalties(fold, s) if s.include_penalties else None)

    def report(budget: int, points: list[FoldPoints]) -> bool:
        return reporter(budget, hyper.compute(points).loss) if points else False

    on_report = report if reporter is not None else None
    if config.solver in ("gan", "gan_dis"):
        experiment, data = _experiment_and_data(trial_card, data_dir, config.solver)
        gan = solver_config.gan.model_copy(
            update={"training": solver_config.gan.training.model_copy(update={"progress": False})}
        )
        truth = np.asarray(experiment.theory.truth)
        folds = run_gan_folds(gan, experiment, data, config.kfold, truth, stop, on_report, config.stopper.every)
    else:
        folds = run_vaim_folds(solver_config, config.kfold, stop, on_report)
    return score(folds, config), folds


def _json(values: Any) -> str:
    return json.dumps(np.asarray(values, dtype=float).round(6).tolist() if not isinstance(values, dict) else values)


def run_trial(
    job: Any, search: dict[str, Any], runcard: dict[str, Any], run_dir: str, threads: int = 0, processes: int = 1
) -> dict:
    """DeepHyper run function: returns ``{"objective": -loss or "F_<reason>", "metadata": {...}}``.

    Args:
        job: DeepHyper's running job (``job.parameters`` holds the sampled hyperparameters).
        search: the search config as a dict.
        runcard: the solver's resolved base runcard.
        run_dir: the search's run directory (its ``data/`` holds the events of a GAN search).
        threads: torch threads for this trial (0: its share of the node's free cores).
        processes: trials running at once on this node (0: the MPI workers on this rank's node).
    """
    t_start, cpu_start = time.time(), time.perf_counter()
    meta: dict[str, Any] = dict.fromkeys(METADATA_KEYS, "")
    meta["stopped"] = 0
    meta["worker"] = f"{socket.gethostname()}:{os.getpid()}"
    meta["gpu"] = os.environ.get("CUDA_VISIBLE_DEVICES", "")
    objective: float | str
    try:
        runtime.configure_threads(threads or None, processes=processes or local_workers(), window_s=0.0)
        config = SearchConfig.model_validate(search)
        reporter = None
        if config.stopper.kind != "none":
            from hpo.search.stopping import TrialReporter

            reporter = TrialReporter(job, max_budget(config, runcard))
        result, folds = evaluate(dict(job.parameters), config, runcard, Path(run_dir) / "data", reporter)
        if reporter is not None:
            meta["stopped"] = int(reporter.stopped_at is not None)
            meta["budget"] = reporter.history[-1][0] if reporter.history else 0
        meta.update(
            fold_losses=_json(result.fold_losses),
            replica_chi2_mean=_json([float(np.mean(c)) for c in result.replica_chi2]),
            phi2=_json(result.phi2),
            penalties=json.dumps({k: [round(v, 6) for v in vals] for k, vals in result.penalties.items()}),
            validation_mean=_json([float(np.mean(f.validation)) for f in folds]),
            estimates_mean=_json(np.mean([f.estimates.mean(0) for f in folds], axis=0)),
        )
        if result.failed:
            meta["failure"] = result.failed
            objective = "F_" + result.failed.split(":")[0]
        else:
            meta["loss"] = result.loss
            objective = -result.loss if math.isfinite(result.loss) else "F_nan"
    except NonFiniteLossError as err:
        meta["failure"] = f"diverged: {err}"[:500]
        objective = "F_diverged"
    except Exception as err:  # a search must survive any single bad point
        meta["failure"] = f"{type(err).__name__}: {err} | {traceback.format_exc(limit=3)}"[:1000]
        objective = "F_exception"
    meta["t_start"], meta["t_end"] = t_start, time.time()
    meta["busy_s"] = time.perf_counter() - cpu_start
    return {"objective": objective, "metadata": meta}


async def run_trial_async(job: Any, **kwargs: Any) -> dict:
    """:func:`run_trial` as a coroutine, for DeepHyper's serial evaluator (it runs in the search's own process)."""
    return run_trial(job, **kwargs)
