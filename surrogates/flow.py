"""Conditional normalizing flow surrogate: a neural spline flow whose knots are a function of the parameters.

Events are one-dimensional, so a conditional flow is a monotone map between t in [0, 1] (the log-scaled x of
the dataset's range) and a uniform base variable u, with the parameters as context. Here that map is a
composition of ``layers`` rational-quadratic splines on [0, 1] (Durkan et al., as normflows flow layers). A
context network turns the scaled parameters into every dataset's spline widths, heights and derivatives, which
are normalised once per parameter set (:mod:`surrogates.spline`); the per-event work is a bin search and the
spline formula. The density direction t -> u is the learned conditional CDF; sampling inverts it analytically,
so samples are reparameterised: x(u; theta) is differentiable in theta. Sampling evaluates the spline in float64
(the analytic inverse loses digits near flat bins); the density direction and the network run in the weights'
dtype.

References:
    Durkan, Bekasov, Murray and Papamakarios, "Neural Spline Flows", arXiv:1906.04032.
    Stimper et al., "normflows: A PyTorch Package for Normalizing Flows", JOSS 8 (2023), arXiv:2302.12014.
    Papamakarios et al., "Normalizing Flows for Probabilistic Modeling and Inference", arXiv:1912.02762.
"""

from __future__ import annotations

import math

import normflows as nf
import torch
from torch import Tensor, nn

from surrogates.base import Surrogate, mlp
from surrogates.config import SurrogateConfig
from surrogates.spline import MIN_DERIVATIVE, spline_cdf, spline_inverse, spline_knots

__all__ = ["ConditionalSpline1D", "FlowSurrogate"]

_U_EPS = 1e-9


class ConditionalSpline1D(nf.flows.Flow):
    """One monotone rational-quadratic spline on [0, 1] whose knots are given per parameter set.

    Follows normflows' convention: :meth:`forward` maps base -> data (sampling), :meth:`inverse` data -> base
    (density); both return the log |det| of their direction. ``context`` holds the unnormalized spline
    parameters per parameter set, [B, 3K + 1] = K widths, K heights, K + 1 derivatives; they are normalised once
    per set and every event of the set shares them (:mod:`surrogates.spline`).
    """

    def __init__(self, bins: int) -> None:
        super().__init__()
        self.bins = bins

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Base u [B, n] -> t, and log |dt/du| (in float64: the analytic inverse's discriminant)."""
        t, log_det = spline_inverse(spline_knots(context.to(torch.float64), self.bins), z.to(torch.float64))
        return t.to(z.dtype), log_det.to(z.dtype)

    def inverse(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Data t [B, n] -> u, and log |du/dt| (in the dtype of z)."""
        return spline_cdf(spline_knots(context.to(z.dtype), self.bins), z)


class FlowSurrogate(Surrogate):
    """Conditional neural spline flow over each dataset's x range (see the module docstring).

    Args:
        config: the training config; ``config.flow`` sets bins, layers and the context network.

    Example:
        >>> from surrogates.config import SurrogateConfig
        >>> flow = FlowSurrogate(SurrogateConfig())
        >>> theta = torch.tensor([[2.1875, -0.5, 3.0, 1.09375, -0.5, 4.0]])
        >>> flow.sample(theta, 5, "sigma1_low").shape
        torch.Size([1, 5])
    """

    kind = "flow"
    has_log_prob = True

    def __init__(self, config: SurrogateConfig) -> None:
        super().__init__(config)
        c = config.flow
        self.bins, self.n_layers = c.bins, c.layers
        self.n_knot_params = 3 * c.bins + 1
        self.net = mlp(self.n_context, self.n_datasets * c.layers * self.n_knot_params, c.width, c.depth, c.activation)
        self.splines = nn.ModuleList([ConditionalSpline1D(c.bins) for _ in range(c.layers)])
        # Start at the identity (uniform bins, unit derivatives), i.e. a log-uniform density in x.
        nn.init.zeros_(self.net[-1].weight)
        bias = torch.zeros(self.n_datasets, c.layers, self.n_knot_params)
        bias[..., 2 * c.bins :] = math.log(math.expm1(1.0 - MIN_DERIVATIVE))
        with torch.no_grad():
            self.net[-1].bias.copy_(bias.flatten())

    def knots(self, context: Tensor, j: int) -> Tensor:
        """Unnormalized spline parameters of dataset j, [B, layers, 3K + 1]."""
        return self.net(context).view(-1, self.n_datasets, self.n_layers, self.n_knot_params)[:, j]

    def sample_t(self, context: Tensor, u: Tensor, j: int) -> Tensor:
        """Invert the learned CDF at the base uniforms."""
        p = self.knots(context, j)
        z = u[..., 0].clamp(_U_EPS, 1.0 - _U_EPS)
        for i in reversed(range(self.n_layers)):
            z, _ = self.splines[i](z, p[:, i])
        return z

    def log_prob_t(self, t: Tensor, context: Tensor, j: int) -> Tensor:
        """Log p(t) = sum of the log-derivatives of the composed CDF (the base is uniform on [0, 1])."""
        p = self.knots(context, j)
        z, total = t, torch.zeros_like(t)
        for i in range(self.n_layers):
            z, log_det = self.splines[i].inverse(z, p[:, i])
            total = total + log_det
        return total

    def training_loss(self, context: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Negative mean log-likelihood of the exact events t [B, J, n] (in t; the Jacobian to x is constant)."""
        return -torch.stack([self.log_prob_t(t[:, j], context, j).mean() for j in range(self.n_datasets)]).sum()
