"""Plots of the posterior mode: the draws against the MCMC posterior, and the calibration study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from scipy.stats import binom

matplotlib.use("Agg")
import matplotlib.pyplot as plt

__all__ = ["plot_calibration", "plot_posterior_mode"]


def plot_posterior_mode(
    draws: np.ndarray, reference: np.ndarray, replicas: np.ndarray, names: list[str], path: Path
) -> None:
    """Marginals of the draws [S, C, D], the MCMC reference and the replicas; below them a few chains' traces."""
    dim = draws.shape[-1]
    fig, axes = plt.subplots(2, dim, figsize=(2.6 * dim, 5.0), squeeze=False)
    flat = draws.reshape(-1, dim)
    for i in range(dim):
        ax = axes[0, i]
        lo, hi = np.quantile(np.concatenate([reference[:, i], flat[:, i]]), [0.001, 0.999])
        bins = np.linspace(lo, hi, 40)
        ax.hist(reference[:, i], bins, density=True, histtype="stepfilled", alpha=0.3, label="MCMC posterior")
        ax.hist(flat[:, i], bins, density=True, histtype="step", lw=1.5, label="Langevin draws")
        ax.hist(replicas[:, i], bins, density=True, histtype="step", ls="--", label="bootstrap replicas")
        ax.set_xlabel(names[i])
        axes[1, i].plot(draws[:, : min(5, draws.shape[1]), i], lw=0.6)
        axes[1, i].set_xlabel("kept step")
    axes[0, 0].legend(fontsize=7)
    axes[1, 0].set_ylabel("trace (5 chains)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_calibration(summary: dict[str, Any], path: Path) -> Path:
    """SBC rank histograms per parameter (with the 99 % band of uniform ranks), TARP curves and coverage."""
    names = summary["params"]
    methods = [m for m in ("posterior", "bootstrap") if m in summary]
    fig, axes = plt.subplots(2, max(len(names), 2), figsize=(2.4 * max(len(names), 2), 5.2), squeeze=False)
    n, bins = summary["n_sets"], summary["bins"]
    lo, hi = binom.ppf([0.005, 0.995], n, 1.0 / bins)
    styles = {"posterior": dict(color="tab:blue", lw=1.5), "bootstrap": dict(color="tab:orange", ls="--")}
    for i, name in enumerate(names):
        ax = axes[0, i]
        ax.axhspan(lo, hi, color="grey", alpha=0.2)
        for m in methods:
            counts = summary[m]["sbc_counts"][i]
            ax.stairs(counts, np.arange(bins + 1), label=f"{m} (p {summary[m]['sbc_p_values'][i]:.2f})", **styles[m])
        ax.set_title(name, fontsize=9)
        ax.legend(fontsize=6)
        ax.set_xticks([])
    axes[0, 0].set_ylabel(f"SBC ranks ({n} data sets)")
    ax = axes[1, 0]
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8)
    for m in methods:
        s = summary[m]
        ax.plot(s["tarp_alpha"], s["tarp_ecp"], label=f"{m} (ATC {s['tarp_atc']:+.3f})", **styles[m])
    ax.set_xlabel("credibility level")
    ax.set_ylabel("expected coverage (TARP)")
    ax.legend(fontsize=7)
    ax = axes[1, 1]
    x = np.arange(len(names))
    for shift, m in zip((-0.15, 0.15), methods):
        for level, marker in (("68", "o"), ("95", "s")):
            colour = styles[m]["color"]
            ax.plot(x + shift, summary[m][f"coverage_{level}"], marker, color=colour, label=f"{m} {level} %")
    ax.axhline(0.68, color="grey", lw=0.8)
    ax.axhline(0.95, color="grey", lw=0.8)
    ax.set_xticks(x, names, fontsize=7)
    ax.set_ylabel("interval coverage")
    ax.legend(fontsize=6)
    for ax in axes[1, 2:]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
