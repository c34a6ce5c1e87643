"""Plots of the forward model and of posteriors (matplotlib, Agg backend, PNG files).

Three figures a physicist looks at before reading any number: the events of each dataset against the
expected counts, the posterior corner plot against the truth and the Cramér–Rao ellipses, and the PDFs u(x),
d(x) with their posterior bands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from physics.binned import BinnedView
from physics.theory import Theory

__all__ = ["plot_corner", "plot_data", "plot_pdf_bands"]


def plot_data(view: BinnedView, theta_sets: dict[str, np.ndarray], path: str | Path) -> Path:
    """Histogram of every dataset with expected counts of some parameter sets and the pulls of the first.

    Args:
        view: the binned data.
        theta_sets: label -> parameters [D]; the first gives the pulls (n - nu) / sqrt(nu).
        path: output PNG.

    Returns:
        The path.
    """
    n = len(view.datasets)
    fig, axes = plt.subplots(2, n, figsize=(3.6 * n, 4.6), sharex="col", gridspec_kw={"height_ratios": [3, 1]})
    axes = np.asarray(axes).reshape(2, n)
    preds = {k: view.predictions(torch.tensor(np.atleast_2d(v), dtype=torch.float64)) for k, v in theta_sets.items()}
    first = next(iter(preds))
    for j, binned in enumerate(view.datasets):
        top, bottom = axes[0, j], axes[1, j]
        centres = np.sqrt(binned.edges[:-1] * binned.edges[1:])
        top.errorbar(
            centres,
            binned.counts,
            yerr=np.sqrt(np.maximum(binned.counts, 1)),
            fmt="o",
            ms=3,
            color="k",
            label="events",
        )
        for label, pred in preds.items():
            top.stairs(pred[j][0].numpy(), binned.edges, baseline=None, label=label)
        nu = preds[first][j][0].numpy()
        bottom.bar(centres, (binned.counts - nu) / np.sqrt(nu), width=np.diff(binned.edges), color="0.5")
        bottom.axhline(0, color="k", lw=0.8)
        top.set_title(binned.name, fontsize=9)
        top.set_xscale("log")
        bottom.set_xlabel("x")
        if j == 0:
            top.set_ylabel("events per bin")
            bottom.set_ylabel(f"pull ({first})")
            top.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_corner(
    samples: np.ndarray,
    names: list[str],
    path: str | Path,
    truth: np.ndarray | None = None,
    crlb_cov: np.ndarray | None = None,
    low: np.ndarray | None = None,
    high: np.ndarray | None = None,
) -> Path:
    """Corner plot of posterior draws with the truth and the Cramér–Rao 1-sigma ellipses (centred on the mean).

    Args:
        samples: draws [S, D].
        names: parameter names.
        path: output PNG.
        truth: true parameters, drawn as lines.
        crlb_cov: inverse Fisher matrix [D, D], drawn as Gaussians / ellipses around the posterior mean.
        low: prior-box lower edges (axis limits are clipped to the box).
        high: prior-box upper edges.

    Returns:
        The path.
    """
    d = samples.shape[1]
    mean = samples.mean(0)
    fig, axes = plt.subplots(d, d, figsize=(1.9 * d, 1.9 * d))
    lo = np.quantile(samples, 0.001, axis=0)
    hi = np.quantile(samples, 0.999, axis=0)
    if low is not None and high is not None:
        lo, hi = np.maximum(lo, low), np.minimum(hi, high)
    for i in range(d):
        for k in range(d):
            ax = axes[i, k]
            if k > i:
                ax.axis("off")
                continue
            if i == k:
                _corner_diagonal(ax, samples[:, i], (lo[i], hi[i]), mean[i], crlb_cov, truth, i)
            else:
                _corner_pair(ax, samples, (i, k), (lo, hi), mean, crlb_cov, truth)
            if i == d - 1:
                ax.set_xlabel(names[k])
            else:
                ax.set_xticklabels([])
            if k == 0 and i > 0:
                ax.set_ylabel(names[i])
            elif k > 0:
                ax.set_yticklabels([])
            ax.tick_params(labelsize=6)
    fig.suptitle("posterior (blue), Cramér–Rao 1σ at the mean (red), truth (black)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def _corner_diagonal(ax: Any, values: np.ndarray, span: tuple, mean: float, cov: Any, truth: Any, i: int) -> None:
    """One parameter's histogram, its Cramér–Rao Gaussian around the mean, the truth."""
    ax.hist(values, bins=50, range=span, density=True, color="tab:blue", alpha=0.6)
    if cov is not None:
        s = np.sqrt(cov[i, i])
        xs = np.linspace(span[0], span[1], 200)
        ax.plot(xs, np.exp(-0.5 * ((xs - mean) / s) ** 2) / (s * np.sqrt(2 * np.pi)), "r-", lw=1)
    if truth is not None:
        ax.axvline(truth[i], color="k", lw=1)
    ax.set_yticks([])


def _corner_pair(ax: Any, samples: np.ndarray, ik: tuple, box: tuple, mean: np.ndarray, cov: Any, truth: Any) -> None:
    """The 2-D histogram of parameters (k, i), the Cramér–Rao 1-sigma ellipse around the mean, the truth."""
    i, k = ik
    lo, hi = box
    ax.hist2d(samples[:, k], samples[:, i], bins=40, range=[[lo[k], hi[k]], [lo[i], hi[i]]], cmap="Blues")
    if cov is not None:
        vals, vecs = np.linalg.eigh(cov[np.ix_([k, i], [k, i])])
        t = np.linspace(0, 2 * np.pi, 100)
        ell = vecs @ (np.sqrt(np.maximum(vals, 0))[:, None] * np.stack([np.cos(t), np.sin(t)]))
        ax.plot(mean[k] + ell[0], mean[i] + ell[1], "r-", lw=1)
    if truth is not None:
        ax.plot(truth[k], truth[i], "k+", ms=8)


def plot_pdf_bands(
    theory: Theory,
    samples: np.ndarray | dict[str, np.ndarray],
    path: str | Path,
    truth: np.ndarray | None = None,
    x_range: tuple[float, float] = (0.1, 1.0),
    n_draws: int = 1000,
) -> Path:
    """X f(x) of every flavour: bands of parameter sets (posterior draws, replicas) and the truth.

    Args:
        theory: the PDFs.
        samples: parameter sets [S, D] (median, 68 and 95 % bands), or label -> [S, D] to compare several
            (mean and 68 % band each).
        path: output PNG.
        truth: true parameters.
        x_range: range of x.
        n_draws: draws used per set (evenly thinned).

    Returns:
        The path.
    """
    x = torch.tensor(np.geomspace(*x_range, 200)[:-1], dtype=torch.float64)
    single = not isinstance(samples, dict)
    sets = {"": samples} if single else samples
    colors = ["tab:blue", "tab:red", "tab:green", "tab:orange"]
    fig, axes = plt.subplots(1, len(theory.flavors), figsize=(4.2 * len(theory.flavors), 3.4))
    for ax, flavor in zip(np.atleast_1d(axes), theory.flavors):
        for k, (label, draws) in enumerate(sets.items()):
            pick = draws[np.linspace(0, len(draws) - 1, min(n_draws, len(draws))).astype(int)]
            values = (x * theory.pdf(torch.tensor(pick, dtype=torch.float64), x, flavor)).numpy()
            q = np.quantile(values, [0.025, 0.16, 0.5, 0.84, 0.975], axis=0)
            color = colors[k % len(colors)]
            prefix = f"{label} " if label else ""
            if single:
                ax.fill_between(x.numpy(), q[0], q[4], color=color, alpha=0.2, label="95 %")
            ax.fill_between(x.numpy(), q[1], q[3], color=color, alpha=0.4 if single else 0.3, label=f"{prefix}68 %")
            centre = q[2] if single else values.mean(0)
            ax.plot(x.numpy(), centre, color=color, lw=1, label="median" if single else None)
        if truth is not None:
            t = torch.tensor(np.atleast_2d(truth), dtype=torch.float64)
            ax.plot(x.numpy(), (x * theory.pdf(t, x, flavor))[0].numpy(), "k--", lw=1, label="truth")
        ax.set_xscale("log")
        ax.set_xlabel("x")
        ax.set_ylabel(f"x {flavor}(x)")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
