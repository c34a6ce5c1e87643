"""The members of an ensemble: the best complete trials of a search, and their refits on all data.

Member m is trial ``job_id`` of the search: the search's base runcard with the trial's ``p:`` values and R
replicas, refitted without folds. The refits run on DeepHyper's evaluators like the search (one run function call
per member, never raising: a failed member is recorded and the others go on); a finished member leaves
``members/job-<id>/estimates.npy``, an interrupted one its Lightning checkpoint, so the same command resumes.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from hpo.config import SearchConfig
from hpo.search.results import read_results
from hpo.search.run import make_evaluator, trial_processes
from qcdgip import runtime
from qcdgip.config import apply_overrides, load_yaml, parse_config
from qcdgip.mpi import local_workers

__all__ = ["member_runcard", "refit_member", "run_refits", "select_members"]


def select_members(search: Path, top: int) -> tuple[SearchConfig, dict[str, Any], list[dict[str, Any]]]:
    """The search's config, its base runcard and its ``top`` best complete trials (job id, loss, parameters).

    Raises:
        ValueError: no search there (results.csv, config.yaml or base.yaml missing), a solver other than the GAN,
            a space entry without its ``p:`` column in results.csv, or ``top`` larger than the complete trials.
    """
    if top < 1:
        raise ValueError(f"--top: must be >= 1, got {top}")
    if not search.is_dir():
        raise ValueError(f"--search: {search} is not a directory")
    df = read_results(search)
    for name in ("config.yaml", "base.yaml"):
        if not (search / name).is_file():
            raise ValueError(f"--search: {search / name} is missing (not a run directory of python -m hpo.search)")
    config = parse_config(SearchConfig, load_yaml(search / "config.yaml"), str(search / "config.yaml"))
    if config.solver != "gan":
        raise ValueError(
            f"{search / 'config.yaml'}: solver {config.solver!r}: the ensemble refits and combines the toy GAN's "
            "searches (solver: gan); a VAIM search maps observables to several solutions, not one estimate with "
            "replicas, and DIS searches (gan_dis) are scored but not yet refitted as an ensemble"
        )
    missing = [f"p:{name}" for name in config.space if f"p:{name}" not in df.columns]
    if missing:
        raise ValueError(f"{search / 'results.csv'}: missing column(s) {missing} of the search space")
    for column in ("job_id", "objective"):
        if column not in df.columns:
            raise ValueError(f"{search / 'results.csv'}: missing column {column!r}")
    complete = df[df["complete"]].sort_values(["loss", "job_id"])
    if top > len(complete):
        raise ValueError(
            f"--top {top}: {search} has only {len(complete)} complete trials ({int(df['failed'].sum())} failed, "
            f"{int(df['stopped'].sum())} stopped early, of {len(df)})"
        )
    members = []
    for _, row in complete.head(top).iterrows():
        params = {}
        for name in config.space:
            value = row[f"p:{name}"]
            if isinstance(value, float) and math.isnan(value):
                continue
            params[name] = value.item() if hasattr(value, "item") else value
        members.append({"job_id": int(row["job_id"]), "loss": float(row["loss"]), "parameters": params})
    return config, load_yaml(search / "base.yaml"), members


def member_runcard(base: dict[str, Any], parameters: dict[str, Any], replicas: int | None) -> dict[str, Any]:
    """The runcard a member refits with: the search's base, the trial's values, R replicas, no progress bar."""
    from inverse.gan.config import ClosureConfig

    card = apply_overrides(base, parameters)
    update = {"gan.training.progress": False, "gan.training.devices": 1, "gan.training.num_nodes": 1}
    if replicas is not None:
        update["gan.training.replicas"] = replicas
    card = apply_overrides(card, update)
    return parse_config(ClosureConfig, card, "member runcard").model_dump(mode="json")


def refit_member(job: Any, out: str, search: str, threads: int = 0, processes: int = 1) -> dict[str, Any]:
    """DeepHyper run function: refit one member (``job.parameters["job_id"]``) on all data; never raises.

    ``threads`` pins the torch threads (0: the free cores of this refit's share; ``processes`` refits run at once on
    the node, 0: the MPI workers on this rank's node).

    Returns:
        ``{"job_id", "seconds", "reused", "error"}``; the estimates are in ``members/job-<id>/estimates.npy``.
    """
    from inverse.gan.config import ClosureConfig
    from inverse.gan.model import InverseGAN
    from inverse.gan.training import fit_gan
    from physics.datasets import Experiment
    from physics.pseudodata import load_events

    job_id = int(job.parameters["job_id"])
    folder = Path(out) / "members" / f"job-{job_id}"
    result: dict[str, Any] = {"job_id": job_id, "seconds": 0.0, "reused": False, "error": None}
    if (folder / "estimates.npy").is_file():
        result["reused"] = True
        return result
    start = time.perf_counter()
    try:
        runtime.configure_threads(threads or None, processes=processes or local_workers(), window_s=0.0)
        config = ClosureConfig.model_validate(load_yaml(folder / "runcard.yaml"))
        experiment = Experiment(config.physics)
        data = load_events(Path(search) / "data", experiment)
        model = InverseGAN(config.gan, experiment, data)
        module = fit_gan(model, folder, resume=True, progress=False)
        estimates = module.model.cpu().double().estimates().numpy()
        tmp = folder / "estimates.tmp.npy"
        np.save(tmp, estimates)
        os.replace(tmp, folder / "estimates.npy")
    except Exception as err:  # one failed member must not end the others' refits
        result["error"] = f"{type(err).__name__}: {err}"[:800]
    result["seconds"] = time.perf_counter() - start
    return result


async def refit_member_async(job: Any, **kwargs: Any) -> dict[str, Any]:
    """:func:`refit_member` as a coroutine, for DeepHyper's serial evaluator."""
    return refit_member(job, **kwargs)


def run_refits(
    members: list[dict[str, Any]],
    out: Path,
    search: Path,
    evaluator: str,
    workers: int,
    progress: bool,
    threads: int = 0,
) -> list[dict[str, Any]] | None:
    """Refit the members on DeepHyper's evaluator; returns their results on the manager, None on MPI workers."""
    kwargs = {
        "out": str(out.resolve()),
        "search": str(search.resolve()),
        "threads": threads,
        "processes": trial_processes(evaluator, workers),
    }
    function = refit_member_async if evaluator == "serial" else refit_member
    with make_evaluator(function, evaluator, workers, kwargs, {}) as ev:
        if evaluator == "mpi" and not ev.is_master:
            return None
        from tqdm.auto import tqdm

        ev.submit([{"job_id": m["job_id"]} for m in members])
        results: list[dict[str, Any]] = []
        with tqdm(total=len(members), desc="refits", disable=not progress) as bar:
            while len(results) < len(members):
                for job in ev.gather("BATCH", size=1):
                    results.append(job.output)
                    bar.update(1)
    return sorted(results, key=lambda r: [m["job_id"] for m in members].index(r["job_id"]))
