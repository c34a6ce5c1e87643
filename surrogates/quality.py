"""Held-out quality of a surrogate against the exact sampler: KS and Wasserstein distances, log-density error.

For parameter sets drawn from the prior with their own seed (never used in training), ``n_samples`` surrogate
and exact events per dataset are compared by the two-sample Kolmogorov-Smirnov statistic
sup_x |F_surrogate(x) - F_exact(x)| and the 1-D Wasserstein distance int |F_s - F_e| dx. Two references put the
numbers in scale: the same statistics between two independent exact samples (the noise floor, what a perfect
surrogate gets) and between exact samples of *different* held-out parameter sets (a surrogate that ignores its
parameters). For a surrogate with a density, the mean absolute error of its log density against the exact
normalized log density is taken at exact events.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from physics.datasets import Experiment
from physics.likelihood import fit_mle
from physics.pseudodata import EventData
from surrogates.base import Surrogate
from surrogates.config import EvaluationConfig
from surrogates.fidelity import SurrogateLikelihood
from surrogates.simulate import draw_prior, exact_counts, exact_events

__all__ = [
    "counts_quality",
    "evaluate",
    "ks_2samp",
    "plot_densities",
    "stats",
    "surrogate_events",
    "surrogate_mle",
    "wasserstein_1d",
]


def ks_2samp(a: Tensor, b: Tensor) -> Tensor:
    """Two-sample KS statistics of matching rows of a [..., n] and b [..., m], shape [...]."""
    a, b = a.sort(-1).values.contiguous(), b.sort(-1).values.contiguous()
    points = torch.cat([a, b], dim=-1)
    fa = torch.searchsorted(a, points, right=True).to(torch.float64) / a.shape[-1]
    fb = torch.searchsorted(b, points, right=True).to(torch.float64) / b.shape[-1]
    return (fa - fb).abs().amax(-1)


def wasserstein_1d(a: Tensor, b: Tensor) -> Tensor:
    """1-D Wasserstein-1 distances of matching rows of equal-size samples a, b [..., n]: mean |sorted differences|."""
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"equal sample sizes needed, got {a.shape[-1]} and {b.shape[-1]}")
    return (a.sort(-1).values - b.sort(-1).values).abs().mean(-1)


@torch.no_grad()
def surrogate_events(model: Surrogate, theta: Tensor, n: int, seed: int, chunk: int = 10) -> Tensor:
    """Surrogate events [M, J, n] (d = 1) or [M, J, n, d] (float64), parameter sets in chunks to bound memory."""
    g = torch.Generator(device=model.low.device).manual_seed(seed)
    event = (model.event_dim,) if model.event_dim > 1 else ()
    out = torch.empty(theta.shape[0], model.n_datasets, n, *event, dtype=torch.float64)
    for a in range(0, theta.shape[0], chunk):
        th = theta[a : a + chunk].to(device=model.low.device, dtype=model.dtype)
        for j in range(model.n_datasets):
            out[a : a + chunk, j] = model.sample(th, n, j, generator=g).double().cpu()
    return out


def stats(values: Tensor) -> dict[str, Any]:
    """Mean, max, median and the mean per dataset of values [M, J]."""
    return {
        "mean": float(values.mean()),
        "max": float(values.max()),
        "median": float(values.median()),
        "per_dataset_mean": values.mean(0).tolist(),
    }


@torch.no_grad()
def evaluate(
    model: Surrogate, config: EvaluationConfig, progress: bool = False
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Compare the surrogate with the exact sampler on held-out parameter sets.

    Args:
        model: the trained surrogate.
        config: held-out sizes and seed.
        progress: show progress bars.

    Returns:
        (quality summary, arrays: ``theta`` [M, D], ``exact`` and ``surrogate`` events [M, J, n]).
    """
    physics = model.config.physics
    theta = draw_prior(physics, config.n_params, config.seed)
    n = config.n_samples
    exact = exact_events(physics, theta, n, config.seed + 1, chunk=10, progress=progress)
    floor = exact_events(physics, theta, n, config.seed + 2, chunk=10, progress=progress)
    surr = surrogate_events(model, theta, n, config.seed + 3)
    ks = ks_2samp(surr, exact)
    w1 = wasserstein_1d(surr, exact)
    other = exact.roll(1, dims=0)  # another held-out parameter set's events: a surrogate that ignores theta
    quality: dict[str, Any] = {
        "n_params": config.n_params,
        "n_samples": n,
        "datasets": list(model.dataset_names),
        "ks": stats(ks),
        "wasserstein": stats(w1),
        "noise_floor": {"ks": stats(ks_2samp(floor, exact)), "wasserstein": stats(wasserstein_1d(floor, exact))},
        "wrong_theta_reference": {
            "ks": stats(ks_2samp(other, exact)),
            "wasserstein": stats(wasserstein_1d(other, exact)),
        },
        "worst": {
            "theta": theta[int(ks.argmax()) // ks.shape[1]].tolist(),
            "dataset": model.dataset_names[int(ks.argmax()) % ks.shape[1]],
        },
    }
    if model.has_log_prob:
        sampler = Experiment(physics).sampler()
        m = min(n, 2000)
        errors = []
        for a in tqdm(range(0, theta.shape[0], 10), desc="log_prob", disable=not progress):
            th = theta[a : a + 10]
            for j in range(model.n_datasets):
                x = exact[a : a + 10, j, :m]
                exact_lp = sampler.log_prob(x, th, j)
                surr_lp = model.log_prob(x.to(model.dtype), th.to(model.dtype), j).double()
                errors.append((surr_lp - exact_lp).abs().flatten())
        err = torch.cat(errors)
        quality["log_prob_abs_error"] = {"mean": float(err.mean()), "p99": float(err.quantile(0.99))}
    if model.has_counts:
        quality["counts"] = counts_quality(model, theta)
    return quality, {"theta": theta, "exact": exact, "surrogate": surr}


def counts_quality(model: Surrogate, theta: Tensor) -> dict[str, Any]:
    """Learned against exact expected counts at held-out parameter sets ``theta`` [M, D].

    Returns:
        The relative error |nu_learned / nu - 1| and the error in Poisson sd |nu_learned - nu| / sqrt(nu) (the
        precision at which the data's counts constrain the rate term), each as mean and max over sets and datasets.
    """
    exact = exact_counts(model.config.problem, theta.double())
    with torch.no_grad():
        learned = model.counts.double()(theta.double())
    model.counts.to(model.dtype)
    rel = (learned / exact - 1.0).abs()
    pull = (learned - exact).abs() / exact.sqrt()
    return {"relative_error": stats(rel), "poisson_sd": stats(pull)}


def plot_densities(
    model: Surrogate, arrays: dict[str, Tensor], path: str | Path, n_sets: int = 4, bins: int = 40
) -> Path:
    """Surrogate vs exact densities of every dataset for the first ``n_sets`` held-out parameter sets.

    Histograms of the surrogate's and the exact samples (log-x bins); for a surrogate with a density, its curve
    and the exact density as lines.
    """
    theta, exact, surr = arrays["theta"], arrays["exact"], arrays["surrogate"]
    n_sets = min(n_sets, theta.shape[0])
    n_ds = model.n_datasets
    physics = model.config.physics
    sampler = Experiment(physics).sampler()
    fig, axes = plt.subplots(n_sets, n_ds, figsize=(3.4 * n_ds, 2.6 * n_sets), squeeze=False)
    for i in range(n_sets):
        for j, spec in enumerate(physics.datasets):
            ax = axes[i, j]
            edges = np.geomspace(spec.x_min, spec.x_max, bins + 1)
            ax.hist(exact[i, j].numpy(), bins=edges, density=True, histtype="stepfilled", alpha=0.35, label="exact")
            ax.hist(surr[i, j].numpy(), bins=edges, density=True, histtype="step", lw=1.4, label=model.kind)
            grid = torch.tensor(np.geomspace(spec.x_min, spec.x_max, 300), dtype=torch.float64)
            th = theta[i : i + 1]
            ax.plot(grid, sampler.log_prob(grid, th, j)[0].exp(), "k-", lw=0.8, label="exact density")
            if model.has_log_prob:
                with torch.no_grad():
                    lp = model.log_prob(grid.to(model.dtype), th.to(model.dtype), j)[0].double()
                ax.plot(grid, lp.exp(), "r--", lw=0.8, label=f"{model.kind} density")
            ax.set_xscale("log")
            if i == 0:
                ax.set_title(spec.name, fontsize=9)
            if j == 0:
                ax.set_ylabel("theta = " + ", ".join(f"{v:.2g}" for v in th[0].tolist()), fontsize=7)
            if i == n_sets - 1:
                ax.set_xlabel("x")
    axes[0, -1].legend(fontsize=7)
    fig.suptitle(f"{model.kind} surrogate vs exact events on held-out parameter sets", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def surrogate_mle(model: Surrogate, experiment: Experiment, data: EventData, start: np.ndarray) -> np.ndarray:
    """Maximum-likelihood estimate with the surrogate's density for the event shapes.

    The extended log-likelihood sum_j [sum_i log q_j(x_ij; theta) - nu_j(theta) + N_j log nu_j(theta)], with the
    surrogate's normalized density q and its learned expected counts nu (the theory's where it has none),
    maximized inside the box from ``start`` (e.g. the exact MLE) and the box centre
    (:class:`surrogates.fidelity.SurrogateLikelihood`). Its distance from the exact MLE is the bias any estimator
    inherits from the surrogate: what an inverse solver fed by this surrogate can at best reach.

    Args:
        model: a surrogate with ``log_prob``.
        experiment: datasets and luminosities (and the theory's counts for a surrogate without learned ones).
        data: the measured events.
        start: starting point [D].

    Returns:
        The estimate [D].
    """
    q = copy.deepcopy(model).double().cpu()
    counts = None if q.has_counts else experiment.expected_counts
    like = SurrogateLikelihood(q, data, [d.luminosity for d in experiment.datasets], counts=counts)
    return fit_mle(like, n_starts=1, starts=np.asarray(start)[None]).theta
