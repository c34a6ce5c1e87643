"""A 2-D binned view of DIS events: counts in (ln Q^2, w) bins per window, exact expectations, binned Fisher.

Each window's table is a rectangle in (u = ln Q^2, w), w the position of logit x between the cuts at that Q^2.
Bins are blocks of table cells: ``n_u`` bands of rows (Q^2 bins) times ``n_w`` bands of columns (x bins that
follow the cuts), so a bin's expected count is an exact sum of cell integrals of the bilinear table, and
binning loses only the positions of events inside a bin. With a detector the bins are the same blocks of the
reconstructed (u, w) rectangle, and their expectations the folded counts of those regions
(:meth:`physics.dis.folding.DISFolding.region_weights`, linear in the vertex values). The binned Poisson Fisher matrix
I_b = sum_bins (d nu_b)(d nu_b)^T / nu_b is never above the unbinned one (a data-processing inequality), and
the ratio of their Cramér–Rao bounds says how much a given binning loses.

References:
    Cowan, "Statistical Data Analysis" (1998), ch. 6.10 (binned maximum likelihood).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from physics.dis.experiment import DISExperiment
from physics.dis.table import WindowGrid

__all__ = ["DISBinnedView"]


def _bands(n_cells: int, n_bands: int, name: str) -> np.ndarray:
    """The band of each cell: [n_cells] integers in 0..n_bands-1, bands as equal as cell counts allow."""
    if not 1 <= n_bands <= n_cells:
        raise ValueError(f"{name} must be between 1 and {n_cells} (the table's cells), got {n_bands}")
    edges = np.round(np.linspace(0, n_cells, n_bands + 1)).astype(int)
    return np.repeat(np.arange(n_bands), np.diff(edges))


class DISBinnedView:
    """Counts of DIS events in 2-D bins of every Q^2 window, and their exact expectations.

    Args:
        experiment: the DIS experiment.
        events: per window, events [n_j, 2] (x, Q^2); None: no observed counts (expectations only).
        n_u: bins in ln Q^2 per window (bands of table rows).
        n_w: bins across x between the cuts per window (bands of table columns).
    """

    def __init__(self, experiment: DISExperiment, events: list[Tensor] | None = None, n_u: int = 4,
                 n_w: int = 8) -> None:  # fmt: skip
        self.experiment = experiment
        self.n_u, self.n_w = n_u, n_w
        self._assign = []
        for g in experiment.grids:
            rows, cols = _bands(len(g.u) - 1, n_u, "n_u"), _bands(g.cols, n_w, "n_w")
            a_u = torch.nn.functional.one_hot(torch.as_tensor(rows), n_u).to(torch.float64)  # [R, n_u]
            a_w = torch.nn.functional.one_hot(torch.as_tensor(cols), n_w).to(torch.float64)  # [C, n_w]
            self._assign.append((a_u, a_w, rows, cols))
        self._folded = (
            None if experiment.folding is None else [self._region_weights(j) for j in range(len(experiment.grids))]
        )
        self.counts = None if events is None else [self.histogram(ev, j) for j, ev in enumerate(events)]

    @property
    def n_points(self) -> int:
        """Number of bins over all windows."""
        return len(self.experiment.grids) * self.n_u * self.n_w

    def counts_of(self, j: int) -> np.ndarray:
        """Observed counts of window j, [n_u * n_w] (bin index = u band * n_w + w band)."""
        if self.counts is None:
            raise ValueError("this binned view was built without events")
        return self.counts[j]

    def histogram(self, events: Tensor | np.ndarray, j: int) -> np.ndarray:
        """Counts of events [n, 2] (x, Q^2) of window j in its bins, [n_u * n_w]."""
        grid: WindowGrid = self.experiment.grids[j]
        ev = torch.as_tensor(events, dtype=torch.float64)
        row, col, _, _ = grid.cells(*grid.to_uw(ev[:, 0], ev[:, 1]))
        _, _, rows, cols = self._assign[j]
        index = rows[row.numpy()] * self.n_w + cols[col.numpy()]
        return np.bincount(index, minlength=self.n_u * self.n_w).astype(np.float64)

    def _region_weights(self, j: int) -> Tensor:
        """C [n_u * n_w, V]: the folded expected counts of window j's bins from the concatenated vertex values."""
        grid, folding = self.experiment.grids[j], self.experiment.folding
        _, _, rows, cols = self._assign[j]
        rows_at = [np.flatnonzero(rows == b) for b in range(self.n_u)]
        cols_at = [np.flatnonzero(cols == b) for b in range(self.n_w)]
        regions = [(j, float(grid.u[r[0]]), float(grid.u[r[-1] + 1]), c[0] / grid.cols, (c[-1] + 1) / grid.cols)
                   for r in rows_at for c in cols_at]  # fmt: skip
        return torch.stack([folding.region_weights(region) for region in regions])

    def _folded_sums(self, values: list[Tensor], j: int) -> Tensor:
        """Folded bin expectations of window j from every window's vertex values [B, R+1, C+1, ...]."""
        b = values[0].shape[0]
        flat = torch.cat([v.reshape(b, -1, *v.shape[3:]) for v in values], 1)  # [B, V, ...]
        return torch.einsum("kv,bv...->bk...", self._folded[j].to(flat), flat)

    def _bin_sums(self, values: Tensor, j: int) -> Tensor:
        """Bin integrals of vertex values [B, R+1, C+1, ...] (trailing dims kept): [B, n_u * n_w, ...]."""
        grid = self.experiment.grids[j]
        du = (grid.u[1:] - grid.u[:-1]).to(values)
        cell = (values[:, :-1, :-1] + values[:, :-1, 1:] + values[:, 1:, :-1] + values[:, 1:, 1:]) / 4
        cell = cell * (du / grid.cols).reshape(1, -1, 1, *([1] * (values.ndim - 3)))
        a_u, a_w, _, _ = self._assign[j]
        bins = torch.einsum("brc...,ru,cw->buw...", cell, a_u.to(values), a_w.to(values))
        return bins.reshape(values.shape[0], self.n_u * self.n_w, *values.shape[3:])

    def predictions(self, theta: Tensor) -> list[Tensor]:
        """Expected counts per window at theta [B, D]: each [B, n_u * n_w] (they sum to nu_j)."""
        values = self.experiment.vertex_values(theta)
        if self._folded is not None:
            return [self._folded_sums(values, j) for j in range(len(values))]
        return [self._bin_sums(v, j) for j, v in enumerate(values)]

    def fisher_information(self, theta: Tensor) -> Tensor:
        """Binned Poisson Fisher matrices at theta [B, D]: [B, D, D]."""
        total = None
        jac = self.experiment.vertex_jacobians(theta)
        for j, (p, dp) in enumerate(jac):
            if self._folded is not None:
                nu, dnu = self._folded_sums([v for v, _ in jac], j), self._folded_sums([d for _, d in jac], j)
            else:
                nu, dnu = self._bin_sums(p, j), self._bin_sums(dp, j)  # [B, K], [B, K, D]
            info = torch.einsum("bk,bka,bkd->bad", 1.0 / nu, dnu, dnu)
            total = info if total is None else total + info
        return total
