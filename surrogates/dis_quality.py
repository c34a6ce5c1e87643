"""Held-out quality of a DIS (x, Q^2) flow against the exact DIS sampler.

For parameter sets drawn from the prior with their own seed, ``n_samples`` flow and exact events per window are
compared by the two-sample KS statistic of each marginal (x and Q^2; the larger of the two is reported) and the
1-D Wasserstein distance of each marginal in the window's unit coordinates (the mean of the two), next to the same
numbers between two independent exact samples (the noise floor) and between exact samples of different held-out
sets. Both densities being known, the Kullback-Leibler divergence KL(exact || flow) per event is estimated at exact
events, E[log p - log q], in nats: the mean log-likelihood per event a fit loses by using the flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from physics.dis.sampling import DISSampler
from surrogates.config import EvaluationConfig
from surrogates.dis_flow import DISFlowSurrogate
from surrogates.quality import counts_quality, ks_2samp, stats, surrogate_events, wasserstein_1d
from surrogates.simulate import dis_experiment, draw_prior, exact_events, to_unit

__all__ = ["evaluate_dis", "plot_dis_densities"]


def _marginals(a: Tensor, b: Tensor, unit_a: Tensor, unit_b: Tensor) -> tuple[Tensor, Tensor]:
    """KS (larger of the x and Q^2 marginals) and W1 (mean over the unit coordinates), each [M, J]."""
    ks = torch.maximum(ks_2samp(a[..., 0], b[..., 0]), ks_2samp(a[..., 1], b[..., 1]))
    w1 = 0.5 * (wasserstein_1d(unit_a[..., 0], unit_b[..., 0]) + wasserstein_1d(unit_a[..., 1], unit_b[..., 1]))
    return ks, w1


@torch.no_grad()
def evaluate_dis(
    model: DISFlowSurrogate, config: EvaluationConfig, progress: bool = False
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Compare a DIS flow with the exact DIS sampler on held-out parameter sets (see the module docstring).

    Returns:
        (quality summary, arrays: ``theta`` [M, D], ``exact`` and ``surrogate`` events [M, J, n, 2]).
    """
    dis = model.config.dis
    theta = draw_prior(dis, config.n_params, config.seed)
    n = config.n_samples
    exact = exact_events(dis, theta, n, config.seed + 1, chunk=10, progress=progress)
    floor = exact_events(dis, theta, n, config.seed + 2, chunk=10, progress=progress)
    flow = surrogate_events(model, theta, n, config.seed + 3)
    unit = {k: to_unit(dis, v) for k, v in (("exact", exact), ("floor", floor), ("flow", flow))}
    ks, w1 = _marginals(flow, exact, unit["flow"], unit["exact"])
    floor_ks, floor_w1 = _marginals(floor, exact, unit["floor"], unit["exact"])
    other = exact.roll(1, dims=0)
    other_ks, other_w1 = _marginals(other, exact, unit["exact"].roll(1, dims=0), unit["exact"])
    sampler = DISSampler(dis_experiment(dis))
    m = min(n, 2000)
    kl = torch.empty(theta.shape[0], model.n_datasets, dtype=torch.float64)
    error = []
    for a in range(0, theta.shape[0], 10):
        th = theta[a : a + 10]
        for j in range(model.n_datasets):
            x = exact[a : a + 10, j, :m]
            diff = sampler.log_prob(x, th, j) - model.log_prob(x.to(model.dtype), th.to(model.dtype), j).double()
            kl[a : a + 10, j] = diff.mean(-1)
            error.append(diff.abs().flatten())
    error_all = torch.cat(error)
    quality: dict[str, Any] = {
        "n_params": config.n_params, "n_samples": n, "datasets": list(model.dataset_names),
        "ks": stats(ks), "wasserstein": stats(w1),
        "noise_floor": {"ks": stats(floor_ks), "wasserstein": stats(floor_w1)},
        "wrong_theta_reference": {"ks": stats(other_ks), "wasserstein": stats(other_w1)},
        "worst": {"theta": theta[int(ks.argmax()) // ks.shape[1]].tolist(),
                  "dataset": model.dataset_names[int(ks.argmax()) % ks.shape[1]]},
        "kl_nats_per_event": stats(kl),
        "log_prob_abs_error": {"mean": float(error_all.mean()), "p99": float(error_all.quantile(0.99))},
    }  # fmt: skip
    if model.has_counts:
        quality["counts"] = counts_quality(model, theta)
    return quality, {"theta": theta, "exact": exact, "surrogate": flow}


def plot_dis_densities(model: DISFlowSurrogate, arrays: dict[str, Tensor], path: str | Path, n_sets: int = 2,
                       bins: int = 40) -> Path:  # fmt: skip
    """Flow against exact marginals in x and in Q^2 of every window, for the first ``n_sets`` held-out sets."""
    theta, exact, flow = arrays["theta"], arrays["exact"], arrays["surrogate"]
    n_sets = max(1, min(n_sets, theta.shape[0]))
    windows = model.config.dis.datasets
    fig, axes = plt.subplots(2 * n_sets, len(windows), figsize=(3.3 * len(windows), 2.4 * 2 * n_sets), squeeze=False)
    for i in range(n_sets):
        for j, w in enumerate(windows):
            for row, (col, label) in enumerate(((0, "x"), (1, "Q^2"))):
                ax = axes[2 * i + row, j]
                e, f = exact[i, j, :, col].numpy(), flow[i, j, :, col].numpy()
                lo, hi = min(e.min(), f.min()), max(e.max(), f.max())
                edges = np.geomspace(lo, hi, bins + 1)
                ax.hist(e, bins=edges, density=True, histtype="stepfilled", alpha=0.35, label="exact")
                ax.hist(f, bins=edges, density=True, histtype="step", lw=1.3, label="flow")
                ax.set_xscale("log")
                ax.set_xlabel(label, fontsize=8)
                if i == 0 and row == 0:
                    ax.set_title(w.name, fontsize=9)
                if j == 0:
                    ax.set_ylabel("theta = " + ", ".join(f"{v:.2g}" for v in theta[i].tolist()), fontsize=6)
    axes[0, -1].legend(fontsize=7)
    fig.suptitle("DIS flow vs exact marginals on held-out parameter sets", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
