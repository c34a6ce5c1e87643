"""F2, FL and the neutral-current cross section at any (x, Q^2), from the operator's node values.

The operator gives F2 and FL at nodes uniform in z = logit(x) and u = ln Q^2. Between nodes, ln F2 and the
ratio R = FL / F2 are interpolated by tensor-product cubic Lagrange polynomials (four nodes per axis, the
stencil clamped at the edges): ln F2 is close to linear in z at both ends (F2 ~ x^a and (1-x)^b), which
keeps the error small up to x -> 1. Beyond LO, F2 and FL jump at the heavy-quark thresholds; there the u nodes
come in segments, uniform within each, and a stencil never reaches across a segment's end (it is clamped
there as at the edges), so each side of a jump is interpolated from its own values.

The cross section of photon exchange (the Z is neglected; it enters at Q^2 / M_Z^2),
d^2 sigma / dx dQ^2 = 2 pi alpha^2 / (x Q^4) [Y+ F2 - y^2 FL], with y = Q^2 / (x s) and Y+ = 1 + (1 - y)^2.

References:
    Devenish and Cooper-Sarkar, "Deep Inelastic Scattering", Oxford University Press (2004), ch. 2.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from physics.dis.config import DISConfig
from physics.dis.operator import Operator, threshold_cells
from physics.dis.pdf import PDFModel

__all__ = ["ALPHA_EM", "GEV2_TO_PB", "StructureFunctions", "lagrange_weights"]

ALPHA_EM = 1.0 / 137.035999
GEV2_TO_PB = 0.3893793721e9  # (hbar c)^2 in GeV^2 pb


def lagrange_weights(t: Tensor, n: int | Tensor) -> tuple[Tensor, Tensor]:
    """Cubic Lagrange weights on a uniform axis with nodes at 0, 1, ..., n-1 (``t`` in node units).

    ``n`` may be a tensor broadcast with ``t`` (one axis length per point).

    Returns:
        (first stencil index [...], weights [..., 4]) for the nodes first, ..., first + 3.
    """
    if isinstance(n, Tensor):
        first = torch.minimum(torch.clamp_min(torch.floor(t).long() - 1, 0), n - 4)
    else:
        first = torch.clamp(torch.floor(t).long() - 1, 0, n - 4)
    s = t - first.to(t.dtype)
    w0 = -(s - 1) * (s - 2) * (s - 3) / 6
    w1 = s * (s - 2) * (s - 3) / 2
    w2 = -s * (s - 1) * (s - 3) / 2
    w3 = s * (s - 1) * (s - 2) / 6
    return first, torch.stack([w0, w1, w2, w3], dim=-1)


class StructureFunctions:
    """F2 and FL of a batch of parameter sets at arbitrary points, differentiable in theta.

    Args:
        config: the DIS runcard.
        operator: its operator (:func:`physics.dis.build.resolve_operator`).
    """

    def __init__(self, config: DISConfig, operator: Operator) -> None:
        self.config = config
        self.operator = operator
        self.pdf = PDFModel(config)
        self.s = config.kinematics.sqrt_s**2
        z = torch.logit(torch.as_tensor(operator.x_nodes, dtype=torch.float64))
        u = torch.log(torch.as_tensor(operator.q2_nodes, dtype=torch.float64))
        self.z0, self.hz, self.nz = z[0].item(), (z[1] - z[0]).item(), len(z)
        self.nu = len(u)
        self._segments(u, torch.as_tensor(threshold_cells(operator.q2_nodes)))
        self._fk = torch.as_tensor(operator.fk)
        self._xgrid = torch.as_tensor(operator.xgrid)

    def _segments(self, u: Tensor, gaps: Tensor) -> None:
        """The uniform segments of the u axis, separated by the zero-width cells ``gaps`` [n - 1] at thresholds."""
        ends = torch.nonzero(gaps).flatten() + 1
        starts = torch.cat([torch.zeros(1, dtype=torch.long), ends])
        sizes = torch.diff(torch.cat([starts, torch.tensor([len(u)])]))
        if bool((sizes < 4).any()):
            raise ValueError(
                f"operator q2_nodes: a segment between thresholds has fewer than 4 nodes ({sizes.tolist()})"
            )
        self.cuts = 0.5 * (u[ends - 1] + u[ends])  # [S - 1]: the thresholds in ln Q^2
        self._start, self._size = starts, sizes
        self._u0, self._hu = u[starts], u[starts + 1] - u[starts]
        self._first = (self._u0[0].item(), self._hu[0].item())  # one uniform axis: plain floats, as at LO

    def q2_stencil(self, log_q2: Tensor) -> tuple[Tensor, Tensor]:
        """Cubic stencils in u = ln Q^2: (first node index [...], weights [..., 4]), never across a threshold."""
        if len(self.cuts) == 0:
            return lagrange_weights((log_q2 - self._first[0]) / self._first[1], self.nu)
        seg = torch.bucketize(log_q2.detach(), self.cuts.to(log_q2))
        dev = log_q2.device
        u0, hu = self._u0.to(log_q2)[seg], self._hu.to(log_q2)[seg]
        first, weights = lagrange_weights((log_q2 - u0) / hu, self._size.to(dev)[seg])
        return first + self._start.to(dev)[seg], weights

    def nodes(self, theta: Tensor) -> Tensor:
        """F2 and FL at the output nodes: [B, 2, n_q2, n_x]."""
        fk = self._fk.to(dtype=theta.dtype, device=theta.device)
        f0 = self.pdf.flavours(theta, self._xgrid.to(dtype=theta.dtype, device=theta.device))  # [B, 7, G]
        return torch.einsum("oqxbk,Bbk->Boqx", fk, f0)

    def interpolants(self, theta: Tensor, check: bool = True) -> Tensor:
        """Node values of (ln F2, FL / F2): [B, 2, n_q2, n_x]; ``check=False`` inside torch.func transforms."""
        f = self.nodes(theta)
        f2 = f[:, 0]
        if check and not bool((f2 > 0).all()):
            raise ValueError("F2 is not positive at every operator node for these parameters")
        return torch.stack([torch.log(f2), f[:, 1] / f2], dim=1)

    def at(self, values: Tensor, log_q2: Tensor, z: Tensor) -> Tensor:
        """Interpolate node values [B, C, n_q2, n_x] at points (ln Q^2, logit x), each [B, n]: [B, C, n]."""
        iq, wq = self.q2_stencil(log_q2)
        ix, wx = lagrange_weights((z - self.z0) / self.hz, self.nz)
        offsets = torch.arange(4, device=z.device)
        rows = (iq[..., None] + offsets)[..., :, None] * self.nz + (ix[..., None] + offsets)[
            ..., None, :
        ]  # [B, n, 4, 4]
        weights = wq[..., :, None] * wx[..., None, :]
        b, c = values.shape[:2]
        flat = values.reshape(b, c, -1)
        picked = torch.gather(flat, 2, rows.reshape(b, 1, -1).expand(b, c, -1)).reshape(b, c, *rows.shape[1:])
        return (picked * weights[:, None]).sum((-1, -2))

    def interpolation_matrix(self, log_q2: Tensor, z: Tensor) -> Tensor:
        """The fixed linear map from node values [n_q2 * n_x] to points (ln Q^2, logit x) [P]: sparse [P, N].

        Sixteen entries per row (the tensor-product cubic stencil); ``at`` computes the same for moving points.
        """
        iq, wq = self.q2_stencil(log_q2)
        ix, wx = lagrange_weights((z - self.z0) / self.hz, self.nz)
        offsets = torch.arange(4)
        cols = (iq[:, None] + offsets)[:, :, None] * self.nz + (ix[:, None] + offsets)[:, None, :]  # [P, 4, 4]
        weights = wq[:, :, None] * wx[:, None, :]
        rows = torch.arange(len(z))[:, None, None].expand_as(cols)
        index = torch.stack([rows.reshape(-1), cols.reshape(-1)])
        shape = (len(z), self.nu * self.nz)
        return torch.sparse_coo_tensor(index, weights.reshape(-1), shape, check_invariants=False).coalesce()

    def f2_fl(self, theta: Tensor, x: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
        """F2 and FL at points x, Q^2 of shape [B, n] (or [n], shared): each [B, n]."""
        values = self.interpolants(theta)
        x, q2 = (
            torch.broadcast_to(x, (theta.shape[0], x.shape[-1])),
            torch.broadcast_to(q2, (theta.shape[0], q2.shape[-1])),
        )
        out = self.at(values, torch.log(q2), torch.logit(x))
        f2 = torch.exp(out[:, 0])
        return f2, out[:, 1] * f2

    def reduced_factor(self, x: Tensor, q2: Tensor) -> tuple[Tensor, Tensor]:
        """(2 pi alpha^2 / (x Q^4) in pb, y) at points."""
        y = q2 / (x * self.s)
        return 2 * math.pi * ALPHA_EM**2 * GEV2_TO_PB / (x * q2**2), y

    def cross_section(self, theta: Tensor, x: Tensor, q2: Tensor) -> Tensor:
        """d^2 sigma / dx dQ^2 in pb / GeV^2 at points [B, n] (or [n]): [B, n]."""
        f2, fl = self.f2_fl(theta, x, q2)
        factor, y = self.reduced_factor(x, q2)
        return factor * ((1 + (1 - y) ** 2) * f2 - y**2 * fl)
