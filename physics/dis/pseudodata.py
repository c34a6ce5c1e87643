"""DIS pseudo-data: Poisson counts per Q^2 window and exact (x, Q^2) events at the given parameters."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from physics.dis.experiment import DISExperiment
from physics.dis.sampling import DISSampler

__all__ = ["binned_counts", "generate_dis_events"]


def generate_dis_events(experiment: DISExperiment, seed: int, theta: list[float] | None = None) -> list[Tensor]:
    """Events per window, [n_j, 2] (x, Q^2) in float64: n_j ~ Poisson(nu_j(theta)), theta the truth by default."""
    th = torch.tensor([theta if theta is not None else experiment.config.truth], dtype=torch.float64)
    if th.shape[-1] != len(experiment.parameter_names):
        raise ValueError(f"theta needs {len(experiment.parameter_names)} values, got {th.shape[-1]}")
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    sampler = DISSampler(experiment)
    with torch.no_grad():
        nu = experiment.expected_counts(th)[0].numpy()
        counts = rng.poisson(nu)
        return [sampler.sample(th, int(n), j, generator=generator)[0] for j, n in enumerate(counts)]


def binned_counts(events: Tensor, x_edges: np.ndarray, q2_edges: np.ndarray) -> np.ndarray:
    """A 2-D histogram of events [n, 2] on x and Q^2 edges: counts [len(x_edges) - 1, len(q2_edges) - 1]."""
    counts, _, _ = np.histogram2d(events[:, 0].numpy(), events[:, 1].numpy(), bins=[x_edges, q2_edges])
    return counts
