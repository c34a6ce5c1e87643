"""A fixed sparse matrix applied to dense tensors in compressed-row form, forward and backward.

The DIS interpolations (operator nodes to table vertices, table vertices to events) are fixed sparse matrices.
torch's COO product is about ten times slower on CPU than its CSR product, and the autograd of a CSR product
transposes the matrix at every backward pass; here both M and M^T are kept in CSR per dtype and device, and
the backward pass of M X is M^T G.
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

__all__ = ["FixedSparse"]


def _csr(matrix: Tensor) -> Tensor:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta"
        return matrix.coalesce().to_sparse_csr()


class _Product(torch.autograd.Function):
    @staticmethod
    def forward(ctx, forward: Tensor, transposed: Tensor, dense: Tensor) -> Tensor:
        ctx.transposed = transposed
        return forward @ dense

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[None, None, Tensor]:
        return None, None, ctx.transposed @ grad


class FixedSparse:
    """M [m, n], given as a COO tensor, applied as ``M @ X`` for dense X [n, k] with gradients in X.

    Args:
        matrix: the sparse COO matrix (any dtype; kept in float64 and converted on use).
    """

    def __init__(self, matrix: Tensor) -> None:
        self.matrix = matrix.coalesce().to(torch.float64)
        self.shape = tuple(self.matrix.shape)
        self._cache: dict[tuple[torch.dtype, torch.device], tuple[Tensor, Tensor]] = {}

    def _pair(self, like: Tensor) -> tuple[Tensor, Tensor]:
        key = (like.dtype, like.device)
        if key not in self._cache:
            m = self.matrix.to(dtype=like.dtype, device=like.device)
            self._cache[key] = (_csr(m), _csr(m.t()))
        return self._cache[key]

    def __matmul__(self, dense: Tensor) -> Tensor:
        """M @ dense, [m, k]; differentiable in ``dense`` (reverse mode)."""
        forward, transposed = self._pair(dense)
        if torch.is_grad_enabled() and dense.requires_grad:
            return _Product.apply(forward, transposed, dense)
        return forward @ dense
