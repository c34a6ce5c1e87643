"""Expected Fisher information of a Poisson process with tabulated (bilinear-per-cell) intensities.

I(theta) = sum_j c_j int (d p_j)(d p_j)^T / p_j du dw over each window's table (the Jacobian to (x, Q^2)
cancels), with a tensor Gauss rule of ``order`` points per cell side (1: cell centres). The intensity and its
derivatives are bilinear in every cell, so both come from the vertex values and their derivatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from physics.dis.table import WindowGrid

__all__ = ["poisson_fisher"]


def _corners(v: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The four corner values of every cell of vertex values [B, R+1, C+1, ...]: each [B, R, C, ...]."""
    return v[:, :-1, :-1], v[:, :-1, 1:], v[:, 1:, :-1], v[:, 1:, 1:]


def _bilinear_at(corners: tuple[Tensor, Tensor, Tensor, Tensor], t: float, s: float) -> Tensor:
    """The bilinear interpolant of cell corners at in-cell fractions (t, s)."""
    c00, c01, c10, c11 = corners
    if t == s == 0.5:  # the cell centre (order 1, the natural-gradient metric): fewer passes over big tensors
        return (c00 + c01 + c10 + c11) * 0.25
    return (1 - t) * ((1 - s) * c00 + s * c01) + t * ((1 - s) * c10 + s * c11)


def poisson_fisher(
    jacobians: Sequence[tuple[Tensor, Tensor]],
    grids: Sequence[WindowGrid],
    dataset_weights: Tensor | None = None,
    order: int = 1,
) -> Tensor:
    """Fisher matrices [B, D, D] from each window's vertex values [B, R+1, C+1] and derivatives [..., D].

    Args:
        jacobians: per window (values, derivatives), e.g. ``DISExperiment.vertex_jacobians``.
        grids: the windows' grids.
        dataset_weights: [B, J] multipliers of each window's term (0 leaves a window out); None: all one.
        order: Gauss points per cell side.
    """
    nodes, weights = np.polynomial.legendre.leggauss(order)
    nodes, weights = (nodes + 1) / 2, weights / 2
    total = None
    for j, ((p, dp), grid) in enumerate(zip(jacobians, grids)):
        p00, p01, p10, p11 = _corners(p)
        d00, d01, d10, d11 = _corners(dp)
        du = (grid.u[1:] - grid.u[:-1]).to(p)[None, :, None] / grid.cols  # cell areas [1, R, 1]
        info = 0.0
        for t, wt in zip(nodes, weights):
            for s, ws in zip(nodes, weights):
                lam = _bilinear_at((p00, p01, p10, p11), t, s)
                dlam = _bilinear_at((d00, d01, d10, d11), t, s)
                # sum_cells c dlam dlam^T / lam as X^T X with X = dlam sqrt(c / lam): one batched product.
                x = (dlam * torch.sqrt(wt * ws * du / lam)[..., None]).flatten(1, 2)  # [B, R C, D]
                info = info + x.transpose(1, 2) @ x
        if dataset_weights is not None:
            info = info * dataset_weights[:, j, None, None].to(info)
        total = info if total is None else total + info
    return total
