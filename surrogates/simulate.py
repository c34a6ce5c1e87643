"""Training and evaluation events from the exact forward model: parameter sets uniform in the prior box."""

from __future__ import annotations

import torch
from torch import Tensor
from tqdm.auto import tqdm

from physics.config import PhysicsConfig
from physics.datasets import Experiment

__all__ = ["draw_prior", "exact_events", "to_unit"]


def draw_prior(physics: PhysicsConfig, n: int, seed: int) -> Tensor:
    """N parameter sets uniform in the prior box, float64 [n, D]."""
    g = torch.Generator().manual_seed(seed)
    low = torch.tensor(physics.low, dtype=torch.float64)
    high = torch.tensor(physics.high, dtype=torch.float64)
    return low + (high - low) * torch.rand(n, len(low), generator=g, dtype=torch.float64)


def exact_events(
    physics: PhysicsConfig, theta: Tensor, n: int, seed: int, chunk: int = 1000, progress: bool = False
) -> Tensor:
    """Exact events x of every dataset for each parameter set, float64 [M, J, n] (inverse-CDF sampler).

    Args:
        physics: the forward model.
        theta: parameter sets [M, D].
        n: events per parameter set and dataset.
        seed: random seed.
        chunk: parameter sets per sampler call (bounds memory).
        progress: show a progress bar.
    """
    sampler = Experiment(physics).sampler()
    g = torch.Generator().manual_seed(seed)
    out = torch.empty(theta.shape[0], len(sampler.dataset_names), n, dtype=torch.float64)
    starts = range(0, theta.shape[0], chunk)
    with torch.no_grad():
        for a in tqdm(starts, desc="exact events", disable=not progress, unit="chunk"):
            th = theta[a : a + chunk].double()
            for j in range(len(sampler.dataset_names)):
                out[a : a + chunk, j] = sampler.sample(th, n, j, generator=g)
    return out


def to_unit(physics: PhysicsConfig, x: Tensor) -> Tensor:
    """X [M, J, n] -> the log-scaled coordinate t in [0, 1] of each dataset's range."""
    lo = torch.tensor([d.x_min for d in physics.datasets], dtype=x.dtype).log()[:, None]
    hi = torch.tensor([d.x_max for d in physics.datasets], dtype=x.dtype).log()[:, None]
    return ((x.log() - lo) / (hi - lo)).clamp(0.0, 1.0)
