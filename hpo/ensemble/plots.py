"""Plots of ``python -m hpo.ensemble``: per-parameter uncertainty contributions and the PDF bands of the members."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["plot_contributions", "plot_pdf_split"]

_PARTS = (("aleatoric", "tab:blue"), ("epistemic", "tab:orange"), ("total", "k"))


def plot_contributions(summary: dict[str, Any], estimates: np.ndarray, path: str | Path) -> Path:
    """Top: aleatoric, epistemic and total sd per parameter; bottom: each member's mean +- replica sd.

    In a closure both panels are in posterior sd units (the bottom one centred on the truth), otherwise in units of
    the ensemble's total sd (centred on the ensemble mean).

    Args:
        summary: the ensemble summary (``params``, ``std``, ``mean``, ``truth``, optional ``closure``).
        estimates: member replica estimates, [K, R, D].
        path: output PNG.
    """
    names = summary["params"]
    closure = summary.get("closure")
    unit = np.asarray(closure["posterior_std"] if closure else summary["std"]["total"], dtype=float)
    centre = np.asarray(summary["truth"] if closure else summary["mean"], dtype=float)
    d = len(names)
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(max(6.0, 1.2 * d + 2), 6.5))
    width = 0.26
    for i, (part, color) in enumerate(_PARTS):
        values = np.asarray(summary["std"][part], dtype=float) / unit
        top.bar(np.arange(d) + (i - 1) * width, values, width, color=color, alpha=0.8, label=f"{part} sd")
    if closure:
        top.axhline(1.0, color="0.4", ls=":", lw=1, label="posterior sd")
    top.set_xticks(np.arange(d), names)
    top.set_ylabel("sd / posterior sd" if closure else "sd / ensemble total sd")
    top.set_title("uncertainty of the ensemble by the law of total variance")
    top.legend(fontsize=8, ncol=4)
    k = estimates.shape[0]
    offsets = np.linspace(-0.3, 0.3, k) if k > 1 else np.zeros(1)
    mean, sd = estimates.mean(1), estimates.std(1)
    for m in range(k):
        bottom.errorbar(
            np.arange(d) + offsets[m],
            (mean[m] - centre) / unit,
            sd[m] / unit,
            fmt="o",
            ms=3,
            lw=1,
            capsize=2,
            color=plt.cm.viridis(m / max(1, k - 1)),
            label=f"member {m + 1}" if k <= 8 else None,
        )
    ens = (np.asarray(summary["mean"], dtype=float) - centre) / unit
    tot = np.asarray(summary["std"]["total"], dtype=float) / unit
    for i in range(d):
        bottom.fill_between([i - 0.4, i + 0.4], ens[i] - tot[i], ens[i] + tot[i], color="0.8", zorder=0)
    bottom.axhline(0.0, color="k", lw=0.8)
    bottom.set_xticks(np.arange(d), names)
    bottom.set_ylabel("(estimate - truth) / posterior sd" if closure else "(estimate - mean) / total sd")
    bottom.set_title("member means +- replica sd; grey: ensemble mean +- total sd", fontsize=9)
    if k <= 8:
        bottom.legend(fontsize=7, ncol=min(k, 4))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def _member_bands(ax: Any, x: np.ndarray, s: dict[str, np.ndarray], k: int, labels: list[int] | None) -> None:
    """Each member's mean +- replica sd of x f(x), and the ensemble's total sd as dashed lines."""
    for m in range(k):
        mu, sd = s["member_mean"][m], np.sqrt(s["member_var"][m])
        color = plt.cm.viridis(m / max(1, k - 1))
        label = f"job {labels[m]}" if labels and k <= 8 else None
        ax.fill_between(x, mu - sd, mu + sd, color=color, alpha=0.15, lw=0)
        ax.plot(x, mu, color=color, lw=0.8, label=label)
    tot = np.sqrt(s["total"])
    ax.plot(x, s["mean"] - tot, "k--", lw=1)
    ax.plot(x, s["mean"] + tot, "k--", lw=1, label="ensemble +- total sd")


def _sd_split(ax: Any, x: np.ndarray, s: dict[str, np.ndarray], post_sd: np.ndarray | None, flavor: str) -> None:
    """The aleatoric, epistemic and total sd of x f(x) along x (and the posterior's)."""
    for part, color in _PARTS:
        ax.plot(x, np.sqrt(s[part]), color=color, ls="--" if part == "total" else "-", label=f"{part} sd")
    if post_sd is not None:
        ax.plot(x, post_sd, color="tab:red", ls=":", label="posterior sd")
    ax.set_xscale("log")
    ax.set_xlabel("x")
    ax.set_ylabel(f"sd of x {flavor}(x)")
    ax.legend(fontsize=7)


def plot_pdf_split(
    theory: Any,
    x: np.ndarray,
    estimates: np.ndarray,
    pdf_split: dict[str, dict[str, np.ndarray]],
    path: str | Path,
    truth: np.ndarray | None = None,
    posterior: np.ndarray | None = None,
    labels: list[int] | None = None,
) -> Path:
    """Bands of x f(x) per flavour (each member, the ensemble, the posterior); below, the split of their sd.

    Args:
        theory: the PDFs (``flavors``, ``pdf``).
        x: the grid of ``pdf_split``.
        estimates: member replica estimates, [K, R, D].
        pdf_split: flavour -> :func:`hpo.ensemble.split.variance_split` of x f(x) over members and replicas.
        path: output PNG.
        truth: true parameters.
        posterior: posterior draws [S, D] (a closure), or None.
        labels: member job ids, for the legend.
    """
    flavors = list(theory.flavors)
    xt = torch.tensor(x, dtype=torch.float64)
    fig, axes = plt.subplots(2, len(flavors), figsize=(4.6 * len(flavors), 6.2), sharex=True, squeeze=False)
    for col, flavor in enumerate(flavors):
        top, bottom = axes[0, col], axes[1, col]
        s = pdf_split[flavor]
        _member_bands(top, x, s, estimates.shape[0], labels)
        post_sd = None
        if posterior is not None:
            pick = posterior[np.linspace(0, len(posterior) - 1, min(2000, len(posterior))).astype(int)]
            values = (xt * theory.pdf(torch.tensor(pick, dtype=torch.float64), xt, flavor)).numpy()
            post_sd = values.std(0)
            mean = values.mean(0)
            top.fill_between(x, mean - post_sd, mean + post_sd, color="tab:red", alpha=0.2, label="posterior 68 %")
        if truth is not None:
            t = torch.tensor(np.atleast_2d(truth), dtype=torch.float64)
            top.plot(x, (xt * theory.pdf(t, xt, flavor))[0].numpy(), color="tab:red", lw=1, label="truth")
        top.set_xscale("log")
        top.set_ylabel(f"x {flavor}(x)")
        top.legend(fontsize=7)
        _sd_split(bottom, x, s, post_sd, flavor)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
