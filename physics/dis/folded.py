"""Reconstructed DIS events of any true-level sampler, with weights that carry the detector's theta-dependence.

For the target dataset j and every source window k within reach, n true events (x, Q^2) of window k are drawn
by the inner sampler (exact or MCMC). Each gets a reconstructed ln Q^2_rec from the truncated resolution kernel
*conditioned on* the window's Q^2 range, then ln x_rec from the x-kernel conditioned on the cuts at that
Q^2_rec (both reparameterised inversions), and the weight

    w = nu_k(theta) / n * eps(y) * P_Q * P_x(Q^2_rec),

P_Q the kernel's mass in the window's Q^2 range and P_x the x-kernel's mass between the cuts at Q^2_rec. Then
E[sum w f(e_rec)] = int lambda_j f over the reconstructed events of dataset j: the weighted events have
exactly the folded distribution, and the weights are smooth in theta through x(theta), Q^2(theta), so their
gradients carry the flux across the acceptance and the window edges (see :mod:`physics.detector` for why
weights and not accept/reject).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from physics.detector import draw_source
from physics.dis.experiment import DISExperiment
from physics.sampling import EventSampler, resample_by_weight

__all__ = ["FoldedDISSampler"]


class FoldedDISSampler(EventSampler):
    """Weighted reconstructed (x, Q^2) events of a detector, from a true-level DIS sampler.

    Args:
        inner: the true-level sampler (``physics.dis.sampling.DISSampler`` or ``physics.dis.mcmc.DISMCMCSampler``).
        experiment: the experiment, with a detector.

    Raises:
        ValueError: the experiment has no detector, or the inner sampler is itself weighted by a detector.
    """

    weighted = True
    event_dim = 2

    def __init__(self, inner: EventSampler, experiment: DISExperiment) -> None:
        super().__init__()
        if experiment.folding is None:
            raise ValueError("FoldedDISSampler needs an experiment with a detector (physics.detector)")
        if isinstance(inner, FoldedDISSampler):
            raise ValueError("FoldedDISSampler: the inner sampler already passes the detector")
        self.inner, self.experiment = inner, experiment
        self.dataset_names = list(experiment.names)
        self._sources = experiment.folding.sources
        self.per_source = inner.noise_dim + 2
        self.per_event_noise = inner.per_event_noise
        self.noise_dim = self.per_source * max(len(s) for s in self._sources)

    def events_per_draw(self, n: int, dataset: int | str) -> int:
        """Events returned by :meth:`sample_weighted` for n per source."""
        return n * len(self._sources[self.dataset_index(dataset)])

    def _reconstruct(self, x: Tensor, q2: Tensor, r: Tensor, j: int) -> tuple[Tensor, Tensor]:
        """Reconstructed (x, Q^2) [B, n, 2] in window j and the detector part of the weight, eps P_Q P_x [B, n]."""
        det, grid = self.experiment.detector, self.experiment.grids[j]
        u0, u1 = float(grid.u[0]), float(grid.u[-1])
        b = torch.log(q2)
        g_lo, g_hi = (u0 - b) / det.sd_q2, (u1 - b) / det.sd_q2
        b_rec = (b + det.sd_q2 * det.draw(g_lo, g_hi, r[..., 0])).clamp(u0, u1)
        z_lo, z_hi = grid.z_bounds(b_rec)
        a = torch.log(x)
        h_lo, h_hi = (logsigmoid(z_lo) - a) / det.sd_x, (logsigmoid(z_hi) - a) / det.sd_x
        a_rec = a + det.sd_x * det.draw(h_lo, h_hi, r[..., 1])
        a_rec = torch.minimum(torch.maximum(a_rec, logsigmoid(z_lo)), logsigmoid(z_hi))
        weight = det.efficiency(x, q2) * det.mass(g_lo, g_hi) * det.mass(h_lo, h_hi)
        return torch.stack([torch.exp(a_rec), torch.exp(b_rec)], -1), weight

    def sample_weighted(
        self,
        theta: Tensor,
        n: int,
        dataset: int | str,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Reconstructed events [B, S n, 2] of ``dataset`` and their weights [B, S n] (sum: the folded nu_j)."""
        j = self.dataset_index(dataset)
        noise = self.base_noise(theta.shape[0], n, generator, noise, theta)
        nu_true = self.experiment.true_counts(theta)  # [B, J]
        events, weights = [], []
        for i, k in enumerate(self._sources[j]):
            part = noise[..., i * self.per_source : (i + 1) * self.per_source]
            ev, w_in = draw_source(self.inner, theta, n, k, part[..., : self.inner.noise_dim])
            rec, w_det = self._reconstruct(ev[..., 0], ev[..., 1], part[..., self.inner.noise_dim :], j)
            w = nu_true[:, k : k + 1] / n * w_det
            events.append(rec)
            weights.append(w if w_in is None else w * w_in)
        return torch.cat(events, 1), torch.cat(weights, 1)

    def sample(
        self,
        theta: Tensor,
        n: int,
        dataset: int | str,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """N reconstructed events per parameter set, resampled by weight (no gradient through the weights)."""
        if noise is not None:
            raise ValueError("FoldedDISSampler.sample draws its own resampling indices; pass noise to sample_weighted")
        x, w = self.sample_weighted(theta, n, dataset, generator=generator)
        return resample_by_weight(x, w, n, generator)
