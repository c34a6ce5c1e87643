"""Folded DIS intensities and counts as fixed linear maps of the true tables' vertex values.

Every window's true density is bilinear in its vertex values (:mod:`physics.dis.table`), so the folded
quantities of :mod:`physics.dis.detector` are fixed linear functionals of the concatenated vertex values v
(all windows, theta-free weights tabulated once):

- the folded intensity at reconstructed points: lambda_j(e) = (M_j v)(e), a sparse M_j [n, V];
- the expected count of a reconstructed region (a dataset, or a bin of one): nu = c . v, a dense c [V].

The folding integral at a reconstructed point (a_r, b_r) = (ln x_rec, ln Q^2_rec) is iterated: Gauss-Legendre
in b over the part of [b_r - reach s_Q, b_r + reach s_Q] inside each source window, then in a over the part of
[a_r - reach s_x, a_r + reach s_x] between that window's cuts at b. The cuts are exact limits at every b, so the
integrands are smooth (the truncated kernel times the table) and a few nodes per dimension suffice. The
probability P(a, b) that a true point is reconstructed in a region is the same iteration over the region's
Q^2_rec range with the x-kernel's mass between the region's cuts in closed form, integrated against the table
with a 2 x 2 Gauss rule per table cell.

References:
    Davis and Rabinowitz, "Methods of Numerical Integration", 2nd ed. (1984), ch. 5.6 (iterated Gauss rules
    over regions with curved limits).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from torch.nn.functional import logsigmoid

from physics.dis.detector import DISDetector
from physics.dis.sparse import FixedSparse
from physics.dis.table import WindowGrid

__all__ = ["DISFolding", "Region"]

Region = tuple[int, float, float, float, float]  # (window j, u0, u1, w0, w1) in reconstructed (ln Q^2, w)
_CHUNK = 1024  # reconstructed points per batch while the sparse maps are built (bounds the memory)


class DISFolding:
    """The folding maps of a detector over a list of window grids.

    Args:
        grids: the windows' grids (true and reconstructed regions are the same rectangles in (u, w)).
        detector: the detector.
    """

    def __init__(self, grids: Sequence[WindowGrid], detector: DISDetector) -> None:
        self.grids, self.detector = list(grids), detector
        sizes = [len(g.u) * (g.cols + 1) for g in self.grids]
        self.offsets = [int(v) for v in np.cumsum([0, *sizes[:-1]])]
        self.n_vertices = int(sum(sizes))
        margin = detector.reach * detector.sd_q2
        self.sources = [
            [k for k, h in enumerate(self.grids) if float(h.u[0]) <= float(g.u[-1]) + margin
             and float(h.u[-1]) >= float(g.u[0]) - margin]
            for g in self.grids
        ]  # fmt: skip
        t, w = np.polynomial.legendre.leggauss(detector.config.nodes)
        self._gauss = torch.as_tensor(t), torch.as_tensor(w)
        self._weights: dict[Region, Tensor] = {}
        self._rules: dict[tuple[int, int], list[tuple[FixedSparse, Tensor]]] = {}

    def _nodes(self, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
        """Gauss-Legendre nodes [..., G] on [lo, hi] and their weights (0 where the interval is empty)."""
        t, w = self._gauss
        half = ((hi - lo) / 2).clamp_min(0.0)[..., None]
        return (hi + lo)[..., None] / 2 + half * t, half * w

    def _entries(self, a_r: Tensor, b_r: Tensor, k: int) -> tuple[Tensor, Tensor, Tensor]:
        """(point, vertex, weight) entries of the folded intensity per unit a_r b_r from window k's table."""
        g, det = self.grids[k], self.detector
        b, wb = self._nodes((b_r - det.reach * det.sd_q2).clamp_min(float(g.u[0])),
                            (b_r + det.reach * det.sd_q2).clamp_max(float(g.u[-1])))  # fmt: skip
        wb = wb * det.kernel(b_r[:, None] - b, det.sd_q2)  # [P, G]
        z_lo, z_hi = g.z_bounds(b)
        a_lo = torch.maximum(logsigmoid(z_lo), (a_r - det.reach * det.sd_x)[:, None])
        a_hi = torch.minimum(logsigmoid(z_hi), (a_r + det.reach * det.sd_x)[:, None])
        a, wa = self._nodes(a_lo, a_hi)  # [P, G, G]
        wa = wa * det.kernel(a_r[:, None, None] - a, det.sd_x)
        x, dz = torch.exp(a), (z_hi - z_lo)[..., None]
        u = b[..., None].expand_as(a)
        w = ((a - torch.log1p(-x) - z_lo[..., None]) / dz).clamp(0.0, 1.0)
        # lambda per unit (a, b) = p(u, w) dw/da = p / ((1 - x) dz): the table's density in its own coordinates.
        value = wb[..., None] * wa * det.efficiency(x, torch.exp(u)) / ((1 - x) * dz)
        row, col, t, s = g.cells(u.reshape(-1), w.reshape(-1))
        ncol = g.cols + 1
        i00 = self.offsets[k] + row * ncol + col
        vertex = torch.stack([i00, i00 + 1, i00 + ncol, i00 + ncol + 1], -1)
        weight = value.reshape(-1, 1) * torch.stack([(1 - t) * (1 - s), (1 - t) * s, t * (1 - s), t * s], -1)
        point = torch.arange(len(a_r)).repeat_interleave(a[0].numel() * 4)
        keep = weight.reshape(-1) != 0
        return point[keep], vertex.reshape(-1)[keep], weight.reshape(-1)[keep]

    def intensity_map(self, a_r: Tensor, b_r: Tensor, j: int, scale: Tensor | None = None) -> FixedSparse:
        """M [P, V] with (M v)(p) = scale_p lambda_j per unit ln x_rec ln Q^2_rec at points (a_r, b_r) [P]."""
        a_r, b_r = a_r.to(torch.float64), b_r.to(torch.float64)
        parts = []
        for start in range(0, len(a_r), _CHUNK):
            sl = slice(start, start + _CHUNK)
            entries = [self._entries(a_r[sl], b_r[sl], k) for k in self.sources[j]]
            p, v, w = (torch.cat(e) for e in zip(*entries))
            if scale is not None:
                w = w * scale.to(torch.float64)[sl][p]
            size = (len(a_r[sl]), self.n_vertices)
            parts.append(torch.sparse_coo_tensor(torch.stack([p, v]), w, size, check_invariants=False).coalesce())
        if not parts:
            return FixedSparse(torch.sparse_coo_tensor(torch.zeros(2, 0, dtype=torch.long), torch.zeros(0),
                                                       (0, self.n_vertices)))  # fmt: skip
        return FixedSparse(torch.cat(parts).coalesce() if len(parts) > 1 else parts[0])

    def event_interpolation(self, events: Tensor, j: int) -> tuple[FixedSparse, Tensor]:
        """(M, log J) with lambda_j per unit x Q^2 = (M v) / J at reconstructed events [n, 2], J = x Q^2."""
        ev = events.to(torch.float64)
        a_r, b_r = torch.log(ev[:, 0]), torch.log(ev[:, 1])
        return self.intensity_map(a_r, b_r, j), a_r + b_r

    def probability(self, a: Tensor, b: Tensor, region: Region) -> Tensor:
        """P(the reconstructed point of true (a, b) [P] lies in ``region``): [P]."""
        j, u0, u1, w0, w1 = region
        gj, det = self.grids[j], self.detector
        br, wb = self._nodes((b - det.reach * det.sd_q2).clamp_min(u0), (b + det.reach * det.sd_q2).clamp_max(u1))
        wb = wb * det.kernel(br - b[:, None], det.sd_q2)
        z_lo, z_hi = gj.z_bounds(br)
        l0, l1 = logsigmoid(z_lo + w0 * (z_hi - z_lo)), logsigmoid(z_lo + w1 * (z_hi - z_lo))
        return (wb * det.mass((l0 - a[:, None]) / det.sd_x, (l1 - a[:, None]) / det.sd_x)).sum(-1)

    def region_weights(self, region: Region) -> Tensor:
        """C [V] with nu(region) = c . v: eps P(region) against every source table, 2 x 2 Gauss per cell."""
        if region in self._weights:
            return self._weights[region]
        j, u0, u1 = region[:3]
        margin = self.detector.reach * self.detector.sd_q2
        c = torch.zeros(self.n_vertices, dtype=torch.float64)
        g2 = torch.tensor([0.5 - 0.5 / math.sqrt(3.0), 0.5 + 0.5 / math.sqrt(3.0)], dtype=torch.float64)
        for k in self.sources[j]:
            g = self.grids[k]
            du = g.u[1:] - g.u[:-1]
            rows = torch.nonzero((g.u[1:] >= u0 - margin) & (g.u[:-1] <= u1 + margin)).reshape(-1)
            if not len(rows):
                continue
            t = g2[None, :, None, None].expand(len(rows), 2, g.cols, 2)
            s = g2[None, None, None, :].expand_as(t)
            row = rows[:, None, None, None].expand_as(t)
            col = torch.arange(g.cols)[None, None, :, None].expand_as(t)
            u = g.u[row] + t * du[row]
            w = (col + s) / g.cols
            x, q2, _ = g.to_xq2(u.reshape(-1), w.reshape(-1))
            dens = self.detector.efficiency(x, q2) * self.probability(torch.log(x), torch.log(q2), region)
            weight = dens * (du[row] / (4 * g.cols)).reshape(-1)
            t, s, row, col = (v.reshape(-1) for v in (t, s, row, col))
            ncol = g.cols + 1
            i00 = self.offsets[k] + row * ncol + col
            for idx, basis in ((i00, (1 - t) * (1 - s)), (i00 + 1, (1 - t) * s), (i00 + ncol, t * (1 - s)),
                               (i00 + ncol + 1, t * s)):  # fmt: skip
                c.index_add_(0, idx, weight * basis)
        self._weights[region] = c
        return c

    def window_region(self, j: int) -> Region:
        """Dataset j's whole reconstructed region."""
        g = self.grids[j]
        return (j, float(g.u[0]), float(g.u[-1]), 0.0, 1.0)

    def count_weights(self) -> Tensor:
        """C [J, V] with the folded expected counts nu = C v."""
        return torch.stack([self.region_weights(self.window_region(j)) for j in range(len(self.grids))])

    def fisher_rule(self, cells: int, order: int) -> list[tuple[FixedSparse, Tensor]]:
        """Per dataset: (M [P, V], c [P]) with the folded density per unit (u, w) at P reconstructed points.

        A tensor Gauss rule of ``order`` points per side on ``cells`` x ``cells`` uniform cells of each window's
        (u, w) rectangle; c are the points' weights (cell areas times Gauss weights).
        """
        key = (cells, order)
        if key not in self._rules:
            t, w = np.polynomial.legendre.leggauss(order)
            frac = (np.arange(cells)[:, None] + (t[None] + 1) / 2).reshape(-1) / cells
            wt = np.tile(w / 2, cells) / cells
            rule = []
            for j, g in enumerate(self.grids):
                u = float(g.u[0]) + torch.as_tensor(frac) * float(g.u[-1] - g.u[0])
                uu, ww = torch.meshgrid(u, torch.as_tensor(frac), indexing="ij")
                x, q2, jac = g.to_xq2(uu.reshape(-1), ww.reshape(-1))
                weight = torch.as_tensor(np.outer(wt, wt)).reshape(-1) * float(g.u[-1] - g.u[0])
                # Density per unit (u, w) = lambda per unit (a, b) / (x Q^2) times d(x, Q^2) / d(u, w).
                rule.append((self.intensity_map(torch.log(x), torch.log(q2), j, jac / (x * q2)), weight))
            self._rules[key] = rule
        return self._rules[key]

    def fisher(self, values: Tensor, derivatives: Tensor, rule: list[tuple[FixedSparse, Tensor]],
               dataset_weights: Tensor | None = None) -> Tensor:  # fmt: skip
        """Folded Poisson Fisher matrices [B, D, D] from vertex values [B, V] and their derivatives [B, V, D]."""
        b, _, d = derivatives.shape
        columns = torch.cat([values[..., None], derivatives], -1).permute(1, 0, 2).reshape(self.n_vertices, -1)
        total = None
        for j, (matrix, weight) in enumerate(rule):
            out = (matrix @ columns).reshape(-1, b, d + 1)  # [P, B, 1 + D]
            x = out[..., 1:] * torch.sqrt(weight.to(out)[:, None] / out[..., 0])[..., None]
            info = torch.einsum("pba,pbd->bad", x, x)
            if dataset_weights is not None:
                info = info * dataset_weights[:, j, None, None].to(info)
            total = info if total is None else total + info
        return total
