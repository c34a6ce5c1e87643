"""A conditional autoregressive spline flow on the unit cube [0, 1]^d: the d-dimensional event density.

Each layer transforms the coordinates one after another in its ``order``: coordinate ``order[k]`` passes through
a monotone rational-quadratic spline on [0, 1] (:mod:`surrogates.spline`) whose knots depend on the condition
(the parameters and the dataset) and on the data-side values of the coordinates before it. The first coordinate's
knots come from the condition alone (once per parameter set, as in the one-dimensional flow); the later ones from
a per-event network of the earlier coordinates, modulated by the condition (:class:`surrogates.base.ConditionedMLP`).
The Jacobian of a layer is triangular, so log |det| is the sum of the splines' log-slopes, and sampling inverts the
coordinates in the same order, each analytically: samples are exact and reparameterised. Both directions run in
the dtype of the events: in float32 the analytic inverse moves DIS events by at most 1.4e-6 relative to float64
(measured over 40,960 events of a trained DIS flow) and costs 0.72 of the float64 time.

A per-event network costs the most in a fit that draws millions of events per step. With ``grid`` = M, the network
is instead evaluated once per parameter set on a regular grid of M points per earlier coordinate (cell centres of
[0, 1]^k), and each event's knots are the multilinear interpolation of the grid's unnormalised knots at its earlier
coordinates: the map stays monotone in its own coordinate and continuous in the others, and the per-event work is
a gather and the spline formula. Layers alternate their
order (forward, reversed), so that every coordinate is once a conditioning one. With d = 1 a layer is the
one-dimensional conditional spline of :class:`surrogates.flow.FlowSurrogate`.

References:
    Durkan, Bekasov, Murray and Papamakarios, "Neural Spline Flows", arXiv:1906.04032 (autoregressive RQ-NSF).
    Papamakarios, Pavlakou and Murray, "Masked Autoregressive Flow for Density Estimation", arXiv:1705.07057.
    Stimper et al., "normflows: A PyTorch Package for Normalizing Flows", JOSS 8 (2023), arXiv:2302.12014.
"""

from __future__ import annotations

import math

import normflows as nf
import torch
from torch import Tensor, nn

from surrogates.base import ConditionedMLP, mlp
from surrogates.spline import (
    MIN_DERIVATIVE,
    SplineBin,
    SplineKnots,
    bin_cdf,
    bin_inverse,
    spline_bin,
    spline_cdf,
    spline_inverse,
    spline_knots,
)

__all__ = ["AutoregressiveSplineFlow", "AutoregressiveSplineLayer"]

_U_EPS = 1e-9
# softplus^-1(1 - MIN_DERIVATIVE): the knot-derivative bias that makes a fresh spline the identity.
_IDENTITY_SLOPE = math.log(math.expm1(1.0 - MIN_DERIVATIVE))


def _start_at_identity(layer: nn.Linear, bins: int) -> None:
    """Zero weights and uniform bins with unit slopes: the spline starts as the identity map."""
    nn.init.zeros_(layer.weight)
    with torch.no_grad():
        layer.bias.zero_()
        layer.bias[2 * bins :] = _IDENTITY_SLOPE


class AutoregressiveSplineLayer(nf.flows.Flow):
    """One autoregressive rational-quadratic spline layer on [0, 1]^d (see the module docstring).

    normflows' convention: :meth:`forward` maps base -> data (sampling), :meth:`inverse` data -> base (density);
    both return the log |det| of their direction, summed over the d coordinates.

    Args:
        dim: d.
        bins: spline bins K.
        n_context: condition inputs.
        width, depth: hidden width and layers of the knot networks.
        activation: hidden activation name.
        order: the coordinates in the order they are transformed (a permutation of range(d)).
        grid: M > 1: knots of the later coordinates interpolated from M points per earlier coordinate; 0: a
            network per event.
    """

    def __init__(self, dim: int, bins: int, n_context: int, width: int, depth: int, activation: str,
                 order: list[int], grid: int = 0) -> None:  # fmt: skip
        super().__init__()
        if sorted(order) != list(range(dim)):
            raise ValueError(f"order: {order} is not a permutation of range({dim})")
        if grid == 1 or grid < 0:
            raise ValueError(f"grid: {grid} points cannot be interpolated (0: a network per event, or >= 2)")
        self.dim, self.bins, self.order, self.grid = dim, bins, list(order), grid
        n_knots = 3 * bins + 1
        self.first = mlp(n_context, n_knots, width, depth, activation)
        _start_at_identity(self.first[-1], bins)
        self.later = nn.ModuleList(
            [ConditionedMLP(k, n_knots, n_context, width, depth, width, activation) for k in range(1, dim)]
        )
        for net in self.later:
            _start_at_identity(net.out, bins)

    def _knots(self, k: int, earlier: Tensor, context: Tensor, dtype: torch.dtype) -> SplineKnots:
        """Normalised knots of the k-th coordinate in ``dtype``.

        [B, K + 1] for k = 0, the grid's [B, M^k, K + 1], or [B, n, K + 1] with a network per event at the
        data-side earlier coordinates ``earlier`` [B, n, k].
        """
        if k == 0:
            return spline_knots(self.first(context).to(dtype), self.bins)
        if self.grid:
            m = self.grid
            centres = (torch.arange(m, dtype=context.dtype, device=context.device) + 0.5) / m
            nodes = torch.cartesian_prod(*[centres] * k).reshape(1, -1, k).expand(context.shape[0], -1, -1)
            return spline_knots(self.later[k - 1](2.0 * nodes - 1.0, context).to(dtype), self.bins)
        return spline_knots(self.later[k - 1](2.0 * earlier.to(context.dtype) - 1.0, context).to(dtype), self.bins)

    def _transform(
        self, k: int, earlier: Tensor, context: Tensor, values: Tensor, to_base: bool
    ) -> tuple[Tensor, Tensor]:
        """The k-th coordinate's spline on ``values`` [B, n] (data -> base if ``to_base``), and its log-slope."""
        knots = self._knots(k, earlier, context, values.dtype)
        if k > 0 and self.grid:
            b = _grid_bin(knots, earlier.to(values.dtype), self.grid, values, on_data_axis=to_base)
            return bin_cdf(b, values) if to_base else bin_inverse(b, values)
        if k == 0:
            return spline_cdf(knots, values) if to_base else spline_inverse(knots, values)
        out, log_det = spline_cdf(knots, values[..., None]) if to_base else spline_inverse(knots, values[..., None])
        return out[..., 0], log_det[..., 0]

    def inverse(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Data t [B, n, d] -> base u, and log |du/dt| [B, n] (in the dtype of z)."""
        out, total = torch.empty_like(z), torch.zeros_like(z[..., 0])
        for k, c in enumerate(self.order):
            out[..., c], log_det = self._transform(k, z[..., self.order[:k]], context.to(z.dtype), z[..., c], True)
            total = total + log_det
        return out, total

    def forward(self, z: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
        """Base u [B, n, d] -> data t, and log |dt/du| [B, n], in the dtype of z."""
        columns: dict[int, Tensor] = {}
        total = torch.zeros_like(z[..., 0])
        for k, c in enumerate(self.order):
            earlier = torch.stack([columns[e] for e in self.order[:k]], -1) if k else z[..., :0]
            columns[c], log_det = self._transform(k, earlier, context.to(z.dtype), z[..., c], False)
            total = total + log_det
        return torch.stack([columns[c] for c in range(self.dim)], -1), total


def _grid_bin(table: SplineKnots, earlier: Tensor, m: int, values: Tensor, on_data_axis: bool) -> SplineBin:
    """Each event's bin of the spline whose knots interpolate a grid's, [B, n] per field.

    The grid holds normalised knots at m^k points, [B, m^k, K + 1]; an event's knots are their multilinear
    interpolation at its earlier coordinates ``earlier`` [B, n, k] (constant beyond the outer grid centres). A
    convex combination of monotone knot sequences from 0 to 1 with positive slopes is one too, so every event's
    spline is a valid monotone map of [0, 1]. Only the searched axis is interpolated in full (without gradient);
    the six numbers of the event's bin are interpolated from the grid rows alone.
    """
    b, k = earlier.shape[0], earlier.shape[-1]
    width = table.x.shape[-1]
    position = (earlier * m - 0.5).clamp(0.0, m - 1.0)
    cell = position.detach().floor().clamp(max=m - 2).long()
    frac = position - cell.to(position.dtype)
    corners = []
    for corner in range(2**k):
        index, weight = torch.zeros_like(cell[..., 0]), torch.ones_like(frac[..., 0])
        for i in range(k):
            bit = (corner >> i) & 1
            index = index * m + cell[..., i] + bit
            weight = weight * (frac[..., i] if bit else 1.0 - frac[..., i])
        corners.append((index, weight))
    with torch.no_grad():
        axis = (table.x if on_data_axis else table.y).detach()
        row = sum(w[..., None] * axis.gather(1, i[..., None].expand(-1, -1, width)) for i, w in corners)
        found = torch.searchsorted(row.contiguous(), values.detach()[..., None].contiguous(), right=True)[..., 0] - 1
        found = found.clamp(0, width - 2)

    def at(field: Tensor, offset: int) -> Tensor:
        flat = field.reshape(b, -1)
        return sum(w * flat.gather(1, i * width + found + offset) for i, w in corners)

    return spline_bin(at(table.x, 0), at(table.x, 1), at(table.y, 0), at(table.y, 1), at(table.slope, 0),
                      at(table.slope, 1))  # fmt: skip


class AutoregressiveSplineFlow(nn.Module):
    """Composed autoregressive spline layers: a conditional density on [0, 1]^d with a uniform base.

    Args:
        dim: d.
        bins: spline bins per coordinate and layer.
        layers: layers composed (their orders alternate: forward, reversed, ...).
        n_context: condition inputs.
        width, depth: hidden width and layers of the knot networks.
        activation: hidden activation name.
        grid: knots of the later coordinates from a grid of this many points per earlier coordinate (0: per event).

    Example:
        >>> flow = AutoregressiveSplineFlow(2, 8, 2, 3, 16, 2, "silu")
        >>> t = flow.sample(torch.rand(4, 10, 2), torch.zeros(4, 3))
        >>> flow.log_prob(t, torch.zeros(4, 3)).shape
        torch.Size([4, 10])
    """

    def __init__(self, dim: int, bins: int, layers: int, n_context: int, width: int, depth: int,
                 activation: str, grid: int = 0) -> None:  # fmt: skip
        super().__init__()
        self.dim = dim
        orders = [list(range(dim)) if i % 2 == 0 else list(reversed(range(dim))) for i in range(layers)]
        self.layers = nn.ModuleList(
            [AutoregressiveSplineLayer(dim, bins, n_context, width, depth, activation, o, grid) for o in orders]
        )

    def _check(self, values: Tensor, context: Tensor) -> None:
        if values.dim() != 3 or values.shape[-1] != self.dim:
            raise ValueError(f"events must have shape [B, n, {self.dim}], got {tuple(values.shape)}")
        if context.dim() != 2 or context.shape[0] != values.shape[0]:
            raise ValueError(f"context must have shape [{values.shape[0]}, C], got {tuple(context.shape)}")

    def log_prob(self, t: Tensor, context: Tensor) -> Tensor:
        """Log density of t [B, n, d] in [0, 1]^d under condition [B, C]: [B, n]."""
        self._check(t, context)
        z, total = t, torch.zeros_like(t[..., 0])
        for layer in self.layers:
            z, log_det = layer.inverse(z, context)
            total = total + log_det
        return total

    def sample(self, u: Tensor, context: Tensor) -> Tensor:
        """Events t [B, n, d] from base uniforms u [B, n, d] (reparameterised: differentiable in the condition)."""
        self._check(u, context)
        z = u.clamp(_U_EPS, 1.0 - _U_EPS)
        for layer in reversed(self.layers):
            z, _ = layer(z, context)
        return z
