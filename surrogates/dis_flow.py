"""A conditional flow of inclusive DIS events (x, Q^2): the two-dimensional surrogate of a ``dis`` runcard section.

Every Q^2 window is a rectangle in t = ((ln Q^2 - ln Q^2_min) / (ln Q^2_max - ln Q^2_min), w), where w in [0, 1]
is the fraction of logit x between the kinematic cuts at that Q^2 (the coordinates of
:class:`physics.dis.table.WindowGrid`): the cuts are where the unit square ends, so a density on [0, 1]^2 puts no
event outside them. There an autoregressive spline flow (:mod:`surrogates.autoregressive`) learns the event density
conditioned on the scaled parameters and the window; densities per unit x and Q^2 take the Jacobian
|d t / d(x, Q^2)| = 1 / ((ln Q^2_max - ln Q^2_min) Q^2 x (1 - x) (logit x_hi - logit x_lo)).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from physics.dis.config import DISConfig
from physics.dis.table import WindowGrid
from surrogates.autoregressive import AutoregressiveSplineFlow
from surrogates.base import Surrogate
from surrogates.config import SurrogateConfig

__all__ = ["DISFlowSurrogate", "WindowCoordinates"]

_EDGE = 1e-9  # rounding slack of the unit-square coordinates of events on a cut


class WindowCoordinates:
    """Maps between DIS events (x, Q^2) of each window and the unit square, with the log-Jacobian.

    Args:
        dis: the DIS problem (windows and cuts).
    """

    def __init__(self, dis: DISConfig) -> None:
        self.grids = [WindowGrid(w, dis.kinematics, 2, 2) for w in dis.datasets]
        self.log_q2 = [(math.log(w.q2_min), math.log(w.q2_max)) for w in dis.datasets]

    def to_unit(self, events: Tensor, j: int) -> tuple[Tensor, Tensor]:
        """Events [..., 2] (x, Q^2) of window j -> t [..., 2] and log |dt / d(x, Q^2)| [...] (in events' dtype)."""
        x, q2 = events[..., 0], events[..., 1]
        lo, hi = self.log_q2[j]
        u, w = self.grids[j].to_uw(x, q2)
        z_lo, z_hi = self.grids[j].z_bounds(u)
        log_jac = -math.log(hi - lo) - torch.log(q2 * x * (1.0 - x) * (z_hi - z_lo))
        return torch.stack([(u - lo) / (hi - lo), w], -1), log_jac

    def from_unit(self, t: Tensor, j: int) -> Tensor:
        """T [..., 2] in the unit square -> events (x, Q^2) [..., 2] of window j."""
        lo, hi = self.log_q2[j]
        x, q2, _ = self.grids[j].to_xq2(lo + t[..., 0] * (hi - lo), t[..., 1])
        return torch.stack([x, q2], -1)

    def inside(self, t: Tensor) -> Tensor:
        """Whether unit-square coordinates [..., 2] lie in the square (to rounding), [...]."""
        return ((t >= -_EDGE) & (t <= 1.0 + _EDGE)).all(-1)


class DISFlowSurrogate(Surrogate):
    """Conditional autoregressive spline flow of (x, Q^2) events per Q^2 window (see the module docstring).

    Args:
        config: the training config; its ``dis`` section fixes the parameters' box and the windows, ``flow`` the
            bins, layers and networks.
    """

    kind = "flow"
    has_log_prob = True
    noise_dim = 2
    event_dim = 2

    def __init__(self, config: SurrogateConfig) -> None:
        if config.dis is None:
            raise ValueError("dis: a DIS flow needs the dis section of the surrogate runcard")
        super().__init__(config)
        c = config.flow
        self.coordinates = WindowCoordinates(config.dis)
        self.flow = AutoregressiveSplineFlow(2, c.bins, c.layers, self.n_context + self.n_datasets, c.width,
                                             c.depth, c.activation, c.grid)  # fmt: skip

    def window_context(self, context: Tensor, j: int) -> Tensor:
        """The flow's condition for window j: the parameters' context and the window's indicator, [B, C + J]."""
        return torch.cat([context, self.one_hot(j, context.shape[0]).to(context)], -1)

    def sample_t(self, context: Tensor, u: Tensor, j: int) -> Tensor:
        """Unit-square events [B, n, 2] of window j from base uniforms u [B, n, 2]."""
        return self.flow.sample(u, self.window_context(context, j))

    def log_prob_t(self, t: Tensor, context: Tensor, j: int) -> Tensor:
        """Log density of unit-square events t [B, n, 2] of window j, [B, n]."""
        return self.flow.log_prob(t, self.window_context(context, j))

    def training_loss(self, context: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Negative mean log-likelihood of unit-square events t [B, J, n, 2], summed over windows."""
        return -torch.stack([self.log_prob_t(t[:, j], context, j).mean() for j in range(self.n_datasets)]).sum()

    def sample(
        self,
        theta: Tensor,
        n: int,
        dataset: int | str,
        *,
        generator: torch.Generator | None = None,
        noise: Tensor | None = None,
    ) -> Tensor:
        """Draw n events (x, Q^2) of ``dataset`` per parameter set, reparameterised: [B, n, 2] in theta's dtype."""
        j = self.dataset_index(dataset)
        u = self.base_noise(theta.shape[0], n, generator, noise)
        t = self.sample_t(self.context(theta), u, j)
        # The cuts' logits cancel digits near x -> 1: the map back runs in float64.
        return self.coordinates.from_unit(t.to(torch.float64), j).to(theta.dtype)

    def log_prob(self, x: Tensor, theta: Tensor, dataset: int | str) -> Tensor:
        """Normalised log density per unit x and Q^2 of events [B, n, 2] or [n, 2]: [B, n]; -inf outside."""
        j = self.dataset_index(dataset)
        ctx = self.context(theta)
        events = x.to(torch.float64)
        if events.dim() == 2:
            events = events.expand(ctx.shape[0], -1, -1)
        t, log_jac = self.coordinates.to_unit(events, j)
        inside = self.coordinates.inside(t)
        t = torch.where(inside[..., None], t, torch.full_like(t, 0.5)).clamp(0.0, 1.0)
        values = self.log_prob_t(t.to(self.dtype), ctx, j).to(torch.float64) + log_jac
        return torch.where(inside, values, torch.full_like(values, -torch.inf)).to(x.dtype)
