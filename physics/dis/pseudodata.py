"""DIS pseudo-data: Poisson counts per Q^2 window and exact (x, Q^2) events at the given parameters.

With a detector, true events are drawn per window, kept with probability eps(y), smeared by the truncated
Gaussian resolutions and assigned to the window (or lost) by their reconstructed values
(:mod:`physics.dis.detector`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from physics.dis.experiment import DISExperiment
from physics.dis.sampling import DISSampler

__all__ = ["binned_counts", "fold_events", "generate_dis_events"]


def generate_dis_events(experiment: DISExperiment, seed: int, theta: list[float] | None = None) -> list[Tensor]:
    """Events per window, [n_j, 2] (x, Q^2) in float64: n_j ~ Poisson(nu_j(theta)), theta the truth by default."""
    th = torch.tensor([theta if theta is not None else experiment.config.truth], dtype=torch.float64)
    if th.shape[-1] != len(experiment.parameter_names):
        raise ValueError(f"theta needs {len(experiment.parameter_names)} values, got {th.shape[-1]}")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    sampler = DISSampler(experiment)
    with torch.no_grad():
        nu = experiment.true_counts(th)[0].numpy()
        counts = rng.poisson(nu)
        events = [sampler.sample(th, int(n), j, generator=generator)[0] for j, n in enumerate(counts)]
    return events if experiment.detector is None else fold_events(experiment, events, generator)


def fold_events(experiment: DISExperiment, events: list[Tensor], generator: torch.Generator) -> list[Tensor]:
    """Reconstructed events per window from true events of every window (the acceptance, smearing, migrations)."""
    det = experiment.detector
    if det is None:
        raise ValueError("fold_events needs an experiment with a detector")
    true = torch.cat(events).to(torch.float64)
    r = torch.rand(len(true), 3, dtype=torch.float64, generator=generator)
    true = true[r[:, 0] < det.efficiency(true[:, 0], true[:, 1])]
    r = torch.rand(len(true), 2, dtype=torch.float64, generator=generator)
    full = torch.full((len(true),), det.reach, dtype=torch.float64)
    log_x = torch.log(true[:, 0]) + det.sd_x * det.draw(-full, full, r[:, 0])
    log_q2 = torch.log(true[:, 1]) + det.sd_q2 * det.draw(-full, full, r[:, 1])
    reco = torch.stack([torch.exp(log_x), torch.exp(log_q2)], -1)
    taken = torch.zeros(len(reco), dtype=torch.bool)
    out = []
    for j in range(len(experiment.names)):
        inside = experiment.contains(reco, j) & ~taken  # an event on a shared Q^2 edge goes to the first window
        taken |= inside
        out.append(reco[inside])
    return out


def binned_counts(events: Tensor, x_edges: np.ndarray, q2_edges: np.ndarray) -> np.ndarray:
    """A 2-D histogram of events [n, 2] on x and Q^2 edges: counts [len(x_edges) - 1, len(q2_edges) - 1]."""
    counts, _, _ = np.histogram2d(events[:, 0].numpy(), events[:, 1].numpy(), bins=[x_edges, q2_edges])
    return counts
