"""Plots of a GAN closure: replicas against the MCMC posterior, training curves (PDF bands: ``physics.plots``)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

__all__ = ["plot_replica_histograms", "plot_training", "running_polyak"]


def running_polyak(history: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """The estimate a run stopped at each step would return: theta averaged over its last ``fraction`` of steps.

    Args:
        history: parameters per step, [S, ...].
        fraction: the ``training.polyak`` fraction (0: the step's own value).

    Returns:
        [S, ...] running averages.
    """
    csum = np.concatenate([np.zeros_like(history[:1]), np.cumsum(history, axis=0)])
    t = np.arange(1, len(history) + 1)
    lo = np.minimum(t - np.maximum((t * fraction).astype(int), 1), t - 1)
    shape = (-1,) + (1,) * (history.ndim - 1)
    return (csum[t] - csum[lo]) / (t - lo).reshape(shape)


def plot_replica_histograms(
    estimates: np.ndarray,
    posterior: np.ndarray,
    names: list[str],
    path: str | Path,
    truth: np.ndarray | None = None,
    bootstrap_mles: np.ndarray | None = None,
    reference_label: str = "MCMC posterior",
) -> Path:
    """Per parameter: histogram of the replicas' estimates over the MCMC posterior density.

    Args:
        estimates: replica estimates [R, D].
        posterior: posterior draws [S, D] (or any reference sample, named by ``reference_label``; S may be 0).
        names: parameter names.
        path: output PNG.
        truth: true parameters (dashed line).
        bootstrap_mles: the exact bootstrap MLEs of the same replicas [R, D] (ticks under the axis).
        reference_label: the legend's name of ``posterior``.

    Returns:
        The path.
    """
    n = len(names)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.8 * rows))
    for i, ax in enumerate(np.atleast_1d(axes).ravel()):
        if i >= n:
            ax.axis("off")
            continue
        both = np.concatenate([posterior[:, i], estimates[:, i]])
        lo, hi = both.min(), both.max()
        bins = np.linspace(lo, hi, 40)
        if len(posterior):
            ax.hist(posterior[:, i], bins=bins, density=True, color="tab:blue", alpha=0.35, label=reference_label)
        ax.hist(
            estimates[:, i],
            bins=np.linspace(lo, hi, int(np.clip(2 * np.sqrt(len(estimates)), 5, 40))),
            density=True,
            histtype="step",
            color="tab:red",
            lw=1.5,
            label=f"GAN replicas ({len(estimates)})",
        )
        if bootstrap_mles is not None:
            ax.plot(bootstrap_mles[:, i], np.zeros(len(bootstrap_mles)), "|", color="k", ms=10, label="bootstrap MLEs")
        if truth is not None:
            ax.axvline(truth[i], color="k", ls="--", lw=1, label="truth")
        ax.set_xlabel(names[i])
        ax.set_yticks([])
        if i == 0:
            ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _learning_curve(ax, steps: np.ndarray, history: np.ndarray, targets: np.ndarray, scale: np.ndarray, polyak: float):
    """Each replica's distance to the value it should reach: the raw iterate and the Polyak estimate."""
    raw = np.abs(history - targets) / scale  # [S, R, D]
    dist = np.abs(running_polyak(history, polyak) - targets) / scale
    ax.semilogy(steps, np.median(raw, (1, 2)), color="k", lw=0.8, alpha=0.35, label="raw iterate, median")
    ax.semilogy(steps, np.median(dist, (1, 2)), color="k", lw=1.4, label="Polyak estimate, median")
    ax.fill_between(steps, *np.quantile(dist, [0.1, 0.9], axis=(1, 2)), color="k", alpha=0.12, label="10-90 %")
    ax.axhline(0.1, color="tab:red", ls=":", lw=0.8)
    ax.set_ylabel("|theta_r - bootstrap MLE_r| / posterior sd")
    ax.set_title("each replica against the estimate it should reach", fontsize=9)
    ax.legend(fontsize=7)


def plot_training(
    theta_history: np.ndarray,
    loss_history: np.ndarray,
    names: list[str],
    path: str | Path,
    reference: np.ndarray,
    scale: np.ndarray,
    targets: np.ndarray | None = None,
    polyak: float = 0.5,
) -> Path:
    """Training curves: replica means and bands from ``reference``, losses, and the replicas' learning curve.

    With ``targets``, a fourth panel shows each replica's distance to the value it should reach.

    Args:
        theta_history: parameters per step and replica [S, R, D].
        loss_history: generator and discriminator losses per step and replica [S, R, 2].
        names: parameter names.
        path: output PNG.
        reference: the value the fit should reach (the MLE), [D].
        scale: units (posterior sd), [D].
        targets: per replica the value it should reach (its exact bootstrap MLE), [R, D].
        polyak: the Polyak fraction, for the estimate a run stopped at each step would return.

    Returns:
        The path.
    """
    steps = np.arange(1, len(theta_history) + 1)
    dev = (theta_history - reference) / scale
    n_panels = 3 if targets is None else 4
    fig, axes = plt.subplots(1, n_panels, figsize=(4.7 * n_panels, 3.6))
    for i, name in enumerate(names):
        line = axes[0].plot(steps, dev[:, :, i].mean(1), lw=1, label=name)[0]
        lo, hi = np.quantile(dev[:, :, i], [0.16, 0.84], axis=1)
        axes[0].fill_between(steps, lo, hi, color=line.get_color(), alpha=0.15)
    axes[0].axhline(0, color="k", lw=0.8)
    axes[0].set_ylim(-4, 4)
    axes[0].set_ylabel("(theta - MLE) / posterior sd")
    axes[0].legend(fontsize=7, ncol=2)
    axes[0].set_title("replica mean and 68 % band", fontsize=9)
    if targets is not None:
        _learning_curve(axes[3], steps, theta_history, targets, scale, polyak)
    for k, (ax, label) in enumerate(zip(axes[1:3], ("generator loss", "discriminator loss"))):
        ax.plot(steps, loss_history[:, :, k].mean(1), lw=1)
        ax.set_ylabel(label + " (replica mean)")
        if k == 0:
            ax.set_yscale("symlog")
    for ax in axes:
        ax.set_xlabel("step")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
