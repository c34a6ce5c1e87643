"""Plots of the DIS closure: PDFs at Q0 and evolved, F2 per Q^2 window, replica histograms, training curves."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from inverse.gan.plots import plot_replica_histograms, plot_training
from physics.dis.experiment import DISExperiment
from physics.dis.folded import FoldedDISSampler
from physics.dis.lhapdf import OUTPUT_PIDS, evolved_pdfs
from physics.dis.sampling import DISSampler
from physics.pseudodata import EventData

__all__ = ["plot_dis_closure", "plot_f2_windows", "plot_pdf_panels"]

_FLAVOURS = {"u_v": (2, -2), "d_v": (1, -1), "ubar": (-2,), "g": (21,)}  # u_v = u - ubar, d_v = d - dbar


def _combine(f: np.ndarray, name: str) -> np.ndarray:
    """x-space combination of the OUTPUT_PIDS rows of f [..., 11, G] named by ``name``."""
    rows = _FLAVOURS[name]
    if len(rows) == 2:
        return f[..., OUTPUT_PIDS.index(rows[0]), :] - f[..., OUTPUT_PIDS.index(rows[1]), :]
    return f[..., OUTPUT_PIDS.index(rows[0]), :]


def plot_pdf_panels(experiment: DISExperiment, est: np.ndarray, path: Path, scales: int = 3) -> Path:
    """The x f of u_v, d_v, the sea and g at Q0 and at ``scales - 1`` evolved scales: replica 68 % bands vs truth."""
    op = experiment.operator
    picks = np.unique(np.linspace(0, len(op.pdf_q2) - 1, scales).round().astype(int))
    x = op.xgrid[:-1]
    f_rep = evolved_pdfs(experiment.config, op, torch.as_tensor(est)).numpy()[..., :-1] * x
    f_true = evolved_pdfs(experiment.config, op, experiment.truth_tensor()).numpy()[0, ..., :-1] * x
    fig, axes = plt.subplots(
        len(picks), len(_FLAVOURS), figsize=(3.3 * len(_FLAVOURS), 2.6 * len(picks)), squeeze=False
    )
    for row, e in enumerate(picks):
        for col, name in enumerate(_FLAVOURS):
            ax = axes[row, col]
            rep = _combine(f_rep[:, e], name)
            lo, mid, hi = np.quantile(rep, [0.16, 0.5, 0.84], axis=0)
            ax.fill_between(x, lo, hi, color="tab:red", alpha=0.3, label="GAN replicas 68 %")
            ax.plot(x, mid, color="tab:red", lw=1)
            ax.plot(x, _combine(f_true[e], name), "k--", lw=1, label="truth")
            ax.set_xscale("log")
            ax.set_title(f"x {name}, Q^2 = {op.pdf_q2[e]:.3g} GeV^2", fontsize=8)
            if row == len(picks) - 1:
                ax.set_xlabel("x")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_f2_windows(experiment: DISExperiment, data: EventData, est: np.ndarray, path: Path, bins: int = 8) -> Path:
    """F2(x) at each window's central Q^2: the replicas' band, the truth and the data unfolded bin by bin.

    A data point is F2 of the replicas' mean times observed / expected events in its ln x bin (its error bar
    the Poisson sqrt(n) / expected); with a detector both counts are of reconstructed events, so the ratio is a
    bin-by-bin correction for the resolution, acceptance and migrations.
    """
    sf, mean = experiment.sf, torch.as_tensor(est.mean(0, keepdims=True))
    fig, axes = plt.subplots(1, len(experiment.grids), figsize=(3.4 * len(experiment.grids), 3.0), squeeze=False)
    for j, (grid, ax) in enumerate(zip(experiment.grids, axes[0])):
        q2c = float(np.exp(0.5 * (grid.u[0] + grid.u[-1])))
        ev = data.events[j]
        edges = np.geomspace(ev[:, 0].min(), ev[:, 0].max() * (1 + 1e-9), bins + 1)
        xs = np.geomspace(edges[0], edges[-1], 60)
        xt = torch.as_tensor(xs)[None]
        q2t = torch.full_like(xt, q2c)
        band = np.stack([sf.f2_fl(torch.as_tensor(e[None]), xt, q2t)[0][0].numpy() for e in est])
        lo, hi = np.quantile(band, [0.16, 0.84], axis=0)
        ax.fill_between(xs, lo, hi, color="tab:red", alpha=0.3, label="GAN replicas 68 %")
        ax.plot(xs, sf.f2_fl(experiment.truth_tensor(), xt, q2t)[0][0].numpy(), "k--", lw=1, label="truth")
        # expected events per bin: 20000 exact events (reconstructed ones, weighted, with a detector) at the
        # replicas' mean, scaled to the expected count
        gen = torch.Generator().manual_seed(j)
        if experiment.folding is None:
            sim, w_sim = DISSampler(experiment).sample(mean, 20000, j, generator=gen)[0].numpy(), None
        else:
            sim, w_sim = FoldedDISSampler(DISSampler(experiment), experiment).sample_weighted(
                mean, 20000, j, generator=gen
            )
            sim, w_sim = sim[0].numpy(), w_sim[0].numpy()
        nu = float(experiment.expected_counts(mean)[0, j])
        hist = np.histogram(sim[:, 0], edges, weights=w_sim)[0]
        expected = hist * nu / (len(sim) if w_sim is None else w_sim.sum())
        observed = np.histogram(ev[:, 0], edges)[0]
        centres = np.sqrt(edges[1:] * edges[:-1])
        f2c = sf.f2_fl(mean, torch.as_tensor(centres)[None], torch.full((1, bins), q2c, dtype=torch.float64))[0][
            0
        ].numpy()
        ok = expected > 0
        ratio, err = observed[ok] / expected[ok], np.sqrt(np.maximum(observed[ok], 1)) / expected[ok]
        ax.errorbar(centres[ok], f2c[ok] * ratio, yerr=f2c[ok] * err, fmt="o", ms=3, color="k", label="data")
        ax.set_xscale("log")
        ax.set_title(f"{experiment.names[j]} (Q^2 ~ {q2c:.3g})", fontsize=8)
        ax.set_xlabel("x")
    axes[0, 0].set_ylabel("F2")
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_dis_closure(experiment: DISExperiment, data: EventData, model, ref: dict, out: Path) -> None:
    """Every plot of the DIS closure into ``out``."""
    est = model.estimates().numpy()
    names, truth = experiment.parameter_names, np.asarray(experiment.config.truth)
    plot_pdf_panels(experiment, est, out / "pdfs.png")
    plot_f2_windows(experiment, data, est, out / "f2.png")
    boot = ref["bootstrap_mles"]
    if "posterior" in ref:
        plot_replica_histograms(est, ref["posterior"], names, out / "replicas.png", truth,
                                bootstrap_mles=boot if len(boot) else None)  # fmt: skip
    else:
        plot_replica_histograms(est, boot, names, out / "replicas.png", truth, reference_label="bootstrap MLEs")
    steps = int(model.step_count)
    plot_training(model.theta_history[:steps].numpy(), model.loss_history[:steps].numpy(), names,
                  out / "training.png", ref["mle"], ref["crlb_sd"], targets=boot if len(boot) == len(est) else None,
                  polyak=model.config.training.polyak)  # fmt: skip
