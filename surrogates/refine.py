"""Sequential refinement of a surrogate: fine-tune it on simulations where a fit's replicas are.

A surrogate trained over the whole prior box is equally good everywhere, and the data need it precise only where
the posterior is. After a first fit, :func:`refine_surrogate` draws parameter sets around the replicas
(:func:`proposal`), simulates them as the training set was simulated (the exact sampler or the runcard's black-box
simulator), and fine-tunes the surrogate on them. The simulated sets and the fine-tuning's checkpoints live in a
directory, so a killed round resumes where it stopped. :mod:`inverse.gan.refinement` runs the rounds.

References:
    Papamakarios, Sterratt and Murray, "Sequential neural likelihood", AISTATS (2019), arXiv:1805.07226.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from surrogates import simulate
from surrogates.base import Surrogate
from surrogates.config import RefinementConfig
from surrogates.simulate import to_unit
from surrogates.training import fit_surrogate

__all__ = ["proposal", "refine_surrogate", "simulate_sets"]


def proposal(estimates: np.ndarray, low: np.ndarray, high: np.ndarray, n: int, widen: float, seed: int) -> Tensor:
    """N parameter sets [n, D] (float64) from a Gaussian around the replicas ``estimates`` [R, D], inside the box.

    The Gaussian has the replicas' mean and ``widen``^2 times their covariance (plus 1e-8 of the box width squared,
    so that a single replica or a flat direction still gets a spread); draws outside the box are reflected back in
    at its edges.
    """
    est = np.atleast_2d(np.asarray(estimates, dtype=np.float64))
    low, high = np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)
    width = high - low
    cov = (np.cov(est.T).reshape(len(low), len(low)) if len(est) > 1 else np.zeros((len(low),) * 2)) * widen**2
    cov = cov + np.diag((1e-4 * width) ** 2)
    draws = np.random.default_rng(seed).multivariate_normal(est.mean(0), cov, size=n)
    # Reflection keeps the density smooth at an edge where the replicas pile up (a clip would put mass on it).
    unit = np.abs((draws - low) / width) % 2.0
    unit = np.where(unit > 1.0, 2.0 - unit, unit).clip(1e-6, 1 - 1e-6)
    return torch.from_numpy(low + width * unit)


def simulate_sets(model: Surrogate, theta: Tensor, seed: int, progress: bool = False,
                  events_per_param: int | None = None) -> Tensor:  # fmt: skip
    """Events of parameter sets ``theta`` [M, D] in the surrogate's coordinates, [M, J, n] or [M, J, n, d] float32.

    They come from where the surrogate's own training set came from (:func:`surrogates.simulate.simulate_sets`),
    ``events_per_param`` per set and dataset (None: as many as in the training set).
    """
    config = model.config
    if events_per_param is not None:
        config = config.model_copy(
            update={"simulation": config.simulation.model_copy(update={"events_per_param": events_per_param})}
        )
    x, _ = simulate.simulate_sets(config, theta, seed, progress)
    return to_unit(model.config.problem, x).float()


def _earlier(theta: Tensor, t: Tensor, earlier: list[Path]) -> tuple[Tensor, Tensor]:
    """This round's sets joined with the earlier rounds' (events per set cut to the fewest any round has)."""
    blobs = [torch.load(p, map_location="cpu", weights_only=True) for p in earlier if Path(p).is_file()]
    if not blobs:
        return theta, t
    n = min([t.shape[2]] + [b["t"].shape[2] for b in blobs])
    thetas = [theta] + [b["theta"].to(theta.dtype) for b in blobs]
    events = [t[:, :, :n]] + [b["t"][:, :, :n].to(t.dtype) for b in blobs]
    return torch.cat(thetas), torch.cat(events)


def refine_surrogate(
    model: Surrogate,
    estimates: np.ndarray,
    config: RefinementConfig,
    round_index: int,
    directory: str | Path,
    progress: bool = False,
    earlier: list[Path] | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` (in place) on simulations around ``estimates`` [R, D]; resumable in ``directory``.

    With ``config.accumulate`` the fine-tuning also sees the earlier rounds' simulations (``earlier``: their
    ``simulations.pt`` files), as sequential neural likelihood trains on every round's simulations: the
    surrogate then settles in the posterior region instead of following each round's simulation noise.

    Args:
        model: the surrogate (trained in place; its runcard's training settings are kept in its file).
        estimates: the replicas of the last fit.
        config: sizes, widening, steps and learning rate of the round.
        round_index: the round (seeds its proposal and simulations).
        directory: holds ``simulations.pt`` and the fine-tuning's checkpoints (reused on a second call).
        progress: progress bars.
        earlier: the earlier rounds' ``simulations.pt`` (used when ``config.accumulate``).

    Returns:
        Facts of the round: parameter sets and events simulated, seconds simulating and fine-tuning.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "simulations.pt"
    start = time.perf_counter()
    seed = config.seed * 1_000_003 + 7919 * (round_index + 1)
    if path.is_file():
        blob = torch.load(path, map_location="cpu", weights_only=True)
        theta, t = blob["theta"], blob["t"]
    else:
        theta = proposal(estimates, model.low.double().numpy(), model.high.double().numpy(), config.n_params,
                         config.widen, seed)  # fmt: skip
        t = simulate_sets(model, theta, seed + 1, progress, config.events_per_param)
        tmp = path.with_name(path.name + ".tmp")
        torch.save({"theta": theta, "t": t}, tmp)
        tmp.replace(path)
    simulated = time.perf_counter() - start
    original = model.config
    training = original.training.model_copy(update={"steps": config.steps, "lr": config.lr, "seed": seed})
    model.config = original.model_copy(update={"training": training})
    model.requires_grad_(True)
    model.train()
    start = time.perf_counter()
    train_theta, train_t = _earlier(theta, t, list(earlier or [])) if config.accumulate else (theta, t)
    try:
        fit_surrogate(model, train_theta, train_t, directory, resume=True, progress=progress)
    finally:
        model.config = original
        model.requires_grad_(False)
        model.eval()
    return {
        "n_params": int(theta.shape[0]),
        "events": int(t.shape[0] * t.shape[1] * t.shape[2]),
        "trained_on_sets": int(train_theta.shape[0]),
        "simulation_s": simulated,
        "fine_tune_s": time.perf_counter() - start,
    }
