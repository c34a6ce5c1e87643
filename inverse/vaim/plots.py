"""Plots of a VAIM run: solutions (coloured by mode), latent space, forward fit, training, and run comparisons."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
from torch import Tensor

from inverse.problems import Simulator
from inverse.vaim.config import VAIMConfig
from inverse.vaim.model import VAIM
from inverse.vaim.training import LOSS_TERMS

__all__ = ["plot_compare", "plot_forward", "plot_latent", "plot_solutions", "plot_training"]

_MODE_COLORS = [matplotlib.colors.to_hex(f"C{i}") for i in range(10)]


def _mode_color(label: int) -> str:
    return "0.6" if label < 0 else _MODE_COLORS[label % len(_MODE_COLORS)]


def _corner(
    axes: np.ndarray,
    sets: Sequence[tuple[np.ndarray, str, str | np.ndarray]],
    names: Sequence[str],
    truths: Sequence[float | None],
) -> None:
    """Lower-triangle scatter plots and diagonal histograms of several draw sets ([n, d], label, colour(s))."""
    d = len(names)
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            for x, label, color in sets:
                if i == j:
                    single = color if isinstance(color, str) else "C0"
                    ax.hist(x[:, i], bins=60, histtype="step", density=True, color=single, label=label)
                else:
                    ax.scatter(x[:, j], x[:, i], s=2, alpha=0.3, c=color, linewidths=0, rasterized=True)
            if truths[j] is not None:
                ax.axvline(truths[j], color="k", lw=0.7, ls="--")
            if i != j and truths[i] is not None:
                ax.axhline(truths[i], color="k", lw=0.7, ls="--")
            if i == d - 1:
                ax.set_xlabel(names[j])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])


def plot_solutions(
    config: VAIMConfig,
    raw: np.ndarray,
    repaired: np.ndarray,
    labels: np.ndarray,
    truths: Sequence[float | None],
    path: Path,
) -> Path:
    """Draws of the first observation (and, for one parameter, of every observation), coloured by mode.

    Args:
        config: the runcard (parameter names).
        raw: decoder draws [B, n, d].
        repaired: repaired draws [B, n, d].
        labels: mode labels [B, n].
        truths: true values (None where unknown), drawn as dashed lines.
        path: the PNG file.
    """
    names = [p.name for p in config.problem.parameters]
    d = len(names)
    if d == 1:
        fig, axes = plt.subplots(1, len(raw), figsize=(5 * len(raw), 3.6), squeeze=False)
        for b, ax in enumerate(axes[0]):
            bins = np.linspace(config.problem.parameters[0].low, config.problem.parameters[0].high, 241)
            ax.hist(raw[b, :, 0], bins=bins, histtype="step", color="0.5", label="decoder draws")
            for lab in sorted(set(labels[b].tolist())):
                sel = labels[b] == lab
                name = "unassigned" if lab < 0 else f"mode {lab} ({sel.mean():.0%})"
                ax.hist(repaired[b, sel, 0], bins=bins, color=_mode_color(lab), alpha=0.7, label=name)
            ax.set_xlabel(names[0])
            ax.set_title(f"observation {b}")
            ax.legend(fontsize=8)
    else:
        fig, axes = plt.subplots(d, d, figsize=(2.2 * d + 1, 2.2 * d + 1), squeeze=False)
        colors = np.array([_mode_color(int(lab)) for lab in labels[0]])
        _corner(axes, [(repaired[0], "repaired draws", colors)], names, truths)
        fig.suptitle("solutions of observation 0, coloured by mode")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_latent(model: VAIM, theta: Tensor, path: Path) -> Path:
    """The encoder's latent means of training parameter sets, coloured by each parameter in turn (up to 3)."""
    with torch.no_grad():
        mu, _ = model.latent(theta)
    mu, x = mu.double().numpy(), theta.numpy()
    names = [p.name for p in model.config.problem.parameters]
    shown = min(3, len(names))
    fig, axes = plt.subplots(1, shown, figsize=(4.4 * shown, 3.8), squeeze=False)
    for i, ax in enumerate(axes[0]):
        if mu.shape[1] == 1:
            sc = ax.scatter(x[:, i], mu[:, 0], s=3, c=x[:, i], cmap="coolwarm", rasterized=True)
            ax.set_xlabel(names[i])
            ax.set_ylabel("latent mean z0")
        else:
            sc = ax.scatter(mu[:, 0], mu[:, 1], s=3, c=x[:, i], cmap="coolwarm", rasterized=True)
            ax.set_xlabel("latent mean z0")
            ax.set_ylabel("latent mean z1")
        fig.colorbar(sc, ax=ax, label=names[i])
    fig.suptitle("latent space: encoder means of training parameter sets", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_forward(config: VAIMConfig, simulator: Simulator, draws: Tensor, y: Tensor, sigma: Tensor, path: Path) -> Path:
    """Forward fit: the true simulator at the draws against each observation (band: 5-95 % of draws)."""
    n_obs, m = y.shape
    fig, axes = plt.subplots(1, n_obs, figsize=(5.5 * n_obs, 3.8), squeeze=False)
    names = config.problem.observables or [f"y{i}" for i in range(m)]
    for b, ax in enumerate(axes[0]):
        f_x = simulator(draws[b]).double().numpy()
        yb, sb = y[b].numpy(), sigma[b].numpy()
        k = config.sampling.consistency_sigmas
        if m == 1:
            ax.hist(f_x[:, 0], bins=80, color="C0", alpha=0.7, label="f(draws)")
            ax.axvspan(yb[0] - k * sb[0], yb[0] + k * sb[0], color="C1", alpha=0.25, label=f"y ± {k:g} sigma")
            ax.axvline(yb[0], color="C1")
            ax.set_xlabel(names[0])
        else:
            idx = np.arange(m)
            lo, med, hi = np.quantile(f_x, [0.05, 0.5, 0.95], axis=0)
            ax.fill_between(idx, lo, hi, step="mid", alpha=0.3, color="C0", label="f(draws) 5-95 %")
            ax.step(idx, med, where="mid", color="C0", label="f(draws) median")
            ax.errorbar(idx, yb, yerr=sb, fmt="o", ms=3, color="C1", label="observation ± sigma")
            ax.set_xlabel("observable index")
        ax.set_title(f"observation {b}")
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_training(history: np.ndarray, path: Path) -> Path:
    """The loss terms per step (log scale)."""
    fig, ax = plt.subplots(figsize=(6, 3.6))
    steps = np.arange(1, len(history) + 1)
    for i, name in enumerate(LOSS_TERMS):
        ax.plot(steps, np.clip(history[:, i], 1e-8, None), lw=0.6, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss (standardized units)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_compare(runs: Sequence[Path], out: Path, labels: Sequence[str] | None = None) -> Path:
    """One corner plot overlaying the repaired draws of the first observation of several finished runs.

    Args:
        runs: run directories holding ``draws.npz`` and ``config.yaml`` with the same parameters.
        out: the PNG file.
        labels: legend labels (default: directory names).

    Raises:
        ValueError: a run has no draws, or the runs have different parameters.
    """
    from inverse.vaim.config import VAIMConfig as _Config
    from qcdgip.config import load_config

    labels = list(labels) if labels else [Path(r).name for r in runs]
    if len(labels) != len(runs):
        raise ValueError(f"--labels: give {len(runs)} labels, got {len(labels)}")
    sets, names, truths = [], None, None
    for i, run in enumerate(runs):
        run = Path(run)
        if not (run / "draws.npz").is_file():
            raise ValueError(f"{run}: no draws.npz (is it a finished VAIM run?)")
        config = load_config(run / "config.yaml", _Config)
        these = [p.name for p in config.problem.parameters]
        if names is not None and these != names:
            raise ValueError(f"{run}: parameters {these} differ from {names}")
        names, truths = these, [p.truth for p in config.problem.parameters]
        sets.append((np.load(run / "draws.npz")["repaired"][0], labels[i], _MODE_COLORS[i % len(_MODE_COLORS)]))
    d = len(names)
    fig, axes = plt.subplots(d, d, figsize=(2.2 * d + 1, 2.2 * d + 1), squeeze=False)
    _corner(axes, sets, names, truths)
    handles = [plt.Line2D([], [], color=c, marker="o", ls="", label=lab) for _, lab, c in sets]
    fig.legend(handles=handles, loc="upper right", fontsize=10)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
