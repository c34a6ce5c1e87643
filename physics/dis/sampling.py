"""The exact sampler of DIS events (x, Q^2): inverse CDFs of each window's tabulated density.

Implements :class:`physics.sampling.EventSampler` with ``event_dim = noise_dim = 2``: two uniforms per event,
one for the u = ln Q^2 marginal and one for the conditional in w (see :mod:`physics.dis.table`); events are
[B, n, 2] with columns (x, Q^2) and differentiable in theta (reparameterised).
"""

from __future__ import annotations

import torch
from torch import Tensor

from physics.dis.experiment import DISExperiment
from physics.sampling import EventSampler

__all__ = ["DISSampler", "WindowTables"]


class WindowTables:
    """Window tables at theta for samplers that draw one window at a time.

    The operator's node values (the costly, shared part) are computed once and reused while the same unchanged
    tensor, in the same grad mode, asks for the other windows; inside the experiment's ``sharing_tables`` scope
    the whole tables come from the experiment's cache, shared with the counts.

    Args:
        experiment: the DIS experiment.
    """

    def __init__(self, experiment: DISExperiment) -> None:
        self.experiment = experiment
        self._nodes: tuple[Tensor, int, bool, Tensor] | None = None

    def __call__(self, theta: Tensor, j: int) -> Tensor:
        """Window j's vertex values at theta [B, D]: [B, R+1, C+1]."""
        if self.experiment.shares_tables:
            return self.experiment.vertex_values(theta)[j]
        key = (theta._version, torch.is_grad_enabled())
        cached = self._nodes
        if cached is None or cached[0] is not theta or cached[1:3] != key:
            self._nodes = cached = (theta, *key, self.experiment.node_values(theta))
        return self.experiment.window_values(cached[3], j)


class DISSampler(EventSampler):
    """Exact, reparameterised (x, Q^2) events of the experiment's windows.

    Args:
        experiment: the DIS experiment.

    Example:
        >>> from physics.dis import DISConfig, DISExperiment
        >>> sampler = DISSampler(DISExperiment(DISConfig()))
        >>> theta = sampler.experiment.truth_tensor()
        >>> sampler.sample(theta, 5, 0, generator=torch.Generator().manual_seed(1)).shape
        torch.Size([1, 5, 2])
    """

    has_log_prob = True
    noise_dim = 2
    event_dim = 2

    def __init__(self, experiment: DISExperiment) -> None:
        super().__init__()
        self.experiment = experiment
        self.dataset_names = list(experiment.names)
        self._tables = WindowTables(experiment)

    def sample(
        self,
        theta: Tensor,
        n: int,
        dataset: int | str,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Draw n events of ``dataset`` per parameter set: [B, n, 2] (x, Q^2)."""
        j = self.dataset_index(dataset)
        r = self.base_noise(theta.shape[0], n, generator, noise, theta)
        grid = self.experiment.grids[j]
        values = self._tables(theta, j)
        u, w = grid.sample(values, r[..., 0], r[..., 1])
        x, q2, _ = grid.to_xq2(u, w)
        return torch.stack([x, q2], dim=-1)

    def log_prob(self, x: Tensor, theta: Tensor, dataset: int | str) -> Tensor:
        """Normalised log density per unit x and Q^2 of events [B, n, 2] or [n, 2]: [B, n]."""
        j = self.dataset_index(dataset)
        values = self.experiment.vertex_values(theta)
        nu = self.experiment.grids[j].integral(values[j])
        return self.experiment.log_intensity(theta, x, j, values) - torch.log(nu)[:, None]
