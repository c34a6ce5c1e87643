"""The event density of one Q^2 window, tabulated on a (u, w) grid, with exact integrals and inverse CDFs.

In u = ln Q^2 and w in [0, 1], with logit x = z_lo(u) + w (z_hi(u) - z_lo(u)) between the cuts at that Q^2
(y_max below, y_min or W^2_min above), every window is a rectangle. The event density in these coordinates,
p(u, w) = lambda(x, Q^2) Q^2 x (1 - x) (z_hi - z_lo), is evaluated at the vertices of a grid (rows uniform in u,
split where the binding upper cut changes) and is bilinear inside each cell: this tabulated density *is* the
model's density of events. Its integrals are closed forms (trapezoid sums), its u-marginal is piecewise
linear, and the conditional in w at any u is piecewise linear: both inverse CDFs are roots of quadratics, so
sampling is exact and reparameterised (autograd through the closed-form roots gives d(u, w) / d theta; the
cell choices are locally constant).

References:
    Devroye, "Non-Uniform Random Variate Generation" (1986), ch. 2.2 (inversion) and ch. 7 (piecewise-linear
    densities).
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
from torch import Tensor

from physics.dis.config import KinematicsConfig, WindowSpec

__all__ = ["WindowGrid", "bilinear", "quadratic_root"]


def quadratic_root(base: Tensor, slope: Tensor, target: Tensor) -> Tensor:
    """The root t in [0, 1] of base t + slope t^2 / 2 = target (base >= 0), in a cancellation-free form."""
    disc = torch.clamp(base * base + 2.0 * slope * target, min=0.0)
    denom = base + torch.sqrt(disc)
    tiny = torch.finfo(base.dtype).tiny
    return torch.clamp(2.0 * target / torch.clamp(denom, min=tiny), 0.0, 1.0)


def bilinear(values: Tensor, row: Tensor, col: Tensor, t: Tensor, s: Tensor) -> Tensor:
    """Bilinear interpolation of vertex values [B, R+1, C+1] in cells (row, col) at fractions (t, s): [B, n]."""
    b, _, ncol = values.shape
    flat = values.reshape(b, -1)
    i00 = row * ncol + col
    v00, v01 = flat.gather(1, i00), flat.gather(1, i00 + 1)
    v10, v11 = flat.gather(1, i00 + ncol), flat.gather(1, i00 + ncol + 1)
    return (1 - t) * ((1 - s) * v00 + s * v01) + t * ((1 - s) * v10 + s * v11)


class WindowGrid:
    """The (u, w) grid of one Q^2 window under the kinematic cuts.

    Args:
        window: the Q^2 range.
        kinematics: beam energy and cuts.
        rows: cells in u; cols: cells in w.
    """

    def __init__(self, window: WindowSpec, kinematics: KinematicsConfig, rows: int, cols: int) -> None:
        self.window, self.k = window, kinematics
        self.s = kinematics.sqrt_s**2
        lo, hi = math.log(window.q2_min), math.log(window.q2_max)
        # Where two of the upper cuts (y_min, W^2_min, x_max) cross, the boundary has a kink: rows break there.
        c, k = kinematics.w2_min - kinematics.proton_mass**2, kinematics
        crossings = [self.s * k.y_min - c, k.x_max * c / (1 - k.x_max), k.x_max * self.s * k.y_min]
        inside = sorted(math.log(q) for q in crossings if window.q2_min < q < window.q2_max)
        edges = [lo, *inside, hi]
        widths = [b - a for a, b in pairwise(edges)]
        counts = [max(2, round(rows * w / (hi - lo))) for w in widths]
        pieces = [torch.linspace(a, b, n + 1, dtype=torch.float64)[:-1] for a, b, n in zip(edges, edges[1:], counts)]
        self.u = torch.cat([*pieces, torch.tensor([hi], dtype=torch.float64)])
        self.cols = cols
        self.w = torch.linspace(0.0, 1.0, cols + 1, dtype=torch.float64)
        z_lo, z_hi = self.z_bounds(self.u)
        if not bool((z_hi > z_lo).all()):
            raise ValueError(f"dataset {window.name!r}: the cuts leave no x at some Q^2 of its window")

    def z_bounds(self, u: Tensor) -> tuple[Tensor, Tensor]:
        """Logit x at the lower (y_max) and upper (y_min or W^2_min) cut, at u = ln Q^2."""
        k = self.k
        q2 = torch.exp(u)
        x_lo = q2 / (self.s * k.y_max)
        x_hi = torch.minimum(q2 / (self.s * k.y_min), q2 / (q2 + k.w2_min - k.proton_mass**2)).clamp(max=k.x_max)
        return torch.logit(x_lo), torch.logit(x_hi)

    def vertices(self) -> tuple[Tensor, Tensor, Tensor]:
        """Vertex points: x and Q^2 [(R+1) (C+1)] and the Jacobian d(x, Q^2)/d(u, w) [(R+1) (C+1)]."""
        u, w = torch.meshgrid(self.u, self.w, indexing="ij")
        return tuple(v.reshape(-1) for v in self.to_xq2(u, w))

    def to_uw(self, x: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
        """(u, w) of events."""
        u = torch.log(q2)
        z_lo, z_hi = self.z_bounds(u)
        return u, (torch.logit(x) - z_lo) / (z_hi - z_lo)

    def to_xq2(self, u: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(x, Q^2, Jacobian d(x, Q^2)/d(u, w)) of grid coordinates."""
        z_lo, z_hi = self.z_bounds(u)
        z = z_lo + w * (z_hi - z_lo)
        x, q2 = torch.sigmoid(z), torch.exp(u)
        return x, q2, q2 * x * (1 - x) * (z_hi - z_lo)

    def cells(self, u: Tensor, w: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Cell indices (row, col) and in-cell fractions (t, s) of (u, w) points."""
        uu = self.u.to(dtype=u.dtype, device=u.device)
        row = torch.clamp(torch.searchsorted(uu, u.detach().contiguous(), right=True) - 1, 0, len(uu) - 2)
        t = (u - uu[row]) / (uu[row + 1] - uu[row])
        col = torch.clamp(torch.floor(w.detach() * self.cols).long(), 0, self.cols - 1)
        s = w * self.cols - col.to(w.dtype)
        return row, col, t, s

    def density(self, values: Tensor, u: Tensor, w: Tensor) -> Tensor:
        """The tabulated density at (u, w) [B, n] from vertex values [B, R+1, C+1]."""
        row, col, t, s = self.cells(u, w)
        return bilinear(values, row, col, t, s)

    def row_marginals(self, values: Tensor) -> Tensor:
        """m_i = int_0^1 p(u_i, w) dw at every row of vertices: [B, R+1]."""
        return (values[..., 1:] + values[..., :-1]).sum(-1) / (2 * self.cols)

    def integral(self, values: Tensor) -> Tensor:
        """Int p du dw over the window: [B]."""
        m = self.row_marginals(values)
        du = (self.u[1:] - self.u[:-1]).to(values)
        return (du * (m[..., 1:] + m[..., :-1]) / 2).sum(-1)

    def sample(self, values: Tensor, r_u: Tensor, r_w: Tensor) -> tuple[Tensor, Tensor]:
        """Invert the u-marginal at uniforms r_u and the conditional in w at r_w (each [B, n]): (u, w)."""
        m = self.row_marginals(values)
        uu = self.u.to(values)
        du = uu[1:] - uu[:-1]
        rows = du * (m[..., 1:] + m[..., :-1]) / 2
        cum = torch.cat([torch.zeros_like(rows[..., :1]), rows.cumsum(-1)], -1)  # [B, R+1]
        target = r_u * cum[..., -1:]
        row = torch.clamp(torch.searchsorted(cum.detach().contiguous(), target.detach().contiguous(), right=True) - 1,
                          0, rows.shape[-1] - 1)  # fmt: skip
        m0, m1 = m.gather(1, row), m.gather(1, row + 1)
        width = du[row]
        t = quadratic_root(m0, m1 - m0, (target - cum.gather(1, row)) / width)
        u = uu[row] + t * width
        return u, self._sample_w(values, row, t, r_w)

    def _sample_w(self, values: Tensor, row: Tensor, t: Tensor, r_w: Tensor) -> Tensor:
        """Invert the piecewise-linear conditional density in w on the row ``row`` at fraction ``t``."""
        b, _, ncol = values.shape
        trap = (values[..., 1:] + values[..., :-1]) / (2 * self.cols)
        cum = torch.cat([torch.zeros_like(trap[..., :1]), trap.cumsum(-1)], -1).reshape(b, -1)  # [B, (R+1)(C+1)]

        def cum_at(j: Tensor) -> Tensor:
            i0 = row * ncol + j
            return (1 - t) * cum.gather(1, i0) + t * cum.gather(1, i0 + ncol)

        target = r_w * cum_at(torch.full_like(row, self.cols))
        lo, hi = torch.zeros_like(row), torch.full_like(row, self.cols)
        with torch.no_grad():
            while bool((hi - lo > 1).any()):
                mid = (lo + hi) // 2
                below = cum_at(mid) <= target
                lo, hi = torch.where(below, mid, lo), torch.where(below, hi, mid)
        flat = values.reshape(b, -1)
        i0 = row * ncol + lo
        v0 = (1 - t) * flat.gather(1, i0) + t * flat.gather(1, i0 + ncol)
        v1 = (1 - t) * flat.gather(1, i0 + 1) + t * flat.gather(1, i0 + ncol + 1)
        s = quadratic_root(v0, v1 - v0, (target - cum_at(lo)) * self.cols)
        return (lo.to(t.dtype) + s) / self.cols
