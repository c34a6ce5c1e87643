"""Parton distributions at the initial scale Q0, batched over parameter sets, with the sum rules in torch.

Each shape is f(x) = A x^a (1-x)^b (1 + c_1 x + c_2 x^2 + ...). Its Mellin moments are Beta functions,
int_0^1 x^k f = A [B(a+k+1, b+1) + sum_i c_i B(a+k+i+1, b+1)], so the valence sum rules (int u_v = 2,
int d_v = 1) and the momentum sum rule (int x (sum_q (q + qbar) + g) = 1) fix A_uv, A_dv and A_g exactly and
differentiably; the sea normalisations are free parameters (or numbers). With u = u_v + ubar and d = d_v + dbar,
the quark-number sum rules of u, d and s then hold by construction (s and sbar share a shape).

References:
    Ball et al. (NNPDF), "The path to proton structure at 1% accuracy", Eur. Phys. J. C 82 (2022) 428,
    arXiv:2109.02653 (the initial scale Q0 = 1.65 GeV and the sum rules).
"""

from __future__ import annotations

import torch
from torch import Tensor

from physics.dis.config import DISConfig, ShapeSpec

__all__ = ["INPUT_PIDS", "PDFModel", "log_beta"]

INPUT_PIDS = (-3, -2, -1, 21, 1, 2, 3)  # the light flavours fitted at Q0 (charm and heavier start at zero)
_SEA_WEIGHT = {"ubar": 2.0, "dbar": 2.0, "s": 1.0, "sbar": 1.0}  # momentum: ubar counts in u and ubar


def log_beta(p: Tensor, q: Tensor) -> Tensor:
    """Log B(p, q) through lgamma (differentiable, any dtype and device)."""
    return torch.lgamma(p) + torch.lgamma(q) - torch.lgamma(p + q)


class PDFModel:
    """Map parameters theta [B, D] to the light-flavour PDFs at Q0.

    Args:
        config: the DIS runcard (its ``parameters`` and ``pdf`` sections).

    Example:
        >>> model = PDFModel(DISConfig())
        >>> theta = torch.tensor([DISConfig().truth], dtype=torch.float64)
        >>> [round(v, 6) for v in model.sum_rules(theta)[0].tolist()]
        [2.0, 1.0, 1.0]
    """

    def __init__(self, config: DISConfig) -> None:
        self.config = config
        self.names = config.parameter_names
        self._index = {n: i for i, n in enumerate(self.names)}

    def _value(self, value: float | str | None, theta: Tensor) -> Tensor:
        if isinstance(value, str):
            return theta[..., self._index[value]]
        return torch.full(theta.shape[:-1], float(value if value is not None else 1.0), dtype=theta.dtype,
                          device=theta.device)  # fmt: skip

    def _shape(self, spec: ShapeSpec, theta: Tensor) -> tuple[Tensor, Tensor, list[Tensor]]:
        a, b = self._value(spec.a, theta), self._value(spec.b, theta)
        return a, b, [self._value(c, theta) for c in spec.poly]

    def _moment(self, spec: ShapeSpec, theta: Tensor, k: int) -> Tensor:
        """int_0^1 x^k x^a (1-x)^b (1 + sum_i c_i x^i) dx, per parameter set (without A)."""
        a, b, poly = self._shape(spec, theta)
        total = torch.exp(log_beta(a + k + 1.0, b + 1.0))
        for i, c in enumerate(poly, start=1):
            total = total + c * torch.exp(log_beta(a + k + i + 1.0, b + 1.0))
        return total

    def normalisations(self, theta: Tensor) -> dict[str, Tensor]:
        """A of every shape: u_v, d_v and g from the sum rules, the sea ones from the runcard; each [B]."""
        pdf = self.config.pdf
        norms = {f"sea.{k}": self._value(s.norm, theta) for k, s in pdf.sea.items()}
        norms["u_v"] = 2.0 / self._moment(pdf.u_v, theta, 0)
        norms["d_v"] = 1.0 / self._moment(pdf.d_v, theta, 0)
        quarks = norms["u_v"] * self._moment(pdf.u_v, theta, 1) + norms["d_v"] * self._moment(pdf.d_v, theta, 1)
        for flavour, name in pdf.flavours.items():
            quarks = quarks + _SEA_WEIGHT[flavour] * norms[f"sea.{name}"] * self._moment(pdf.sea[name], theta, 1)
        norms["g"] = (1.0 - quarks) / self._moment(pdf.g, theta, 1)
        return norms

    def _evaluate(self, spec: ShapeSpec, norm: Tensor, theta: Tensor, log_x: Tensor, log_1mx: Tensor) -> Tensor:
        a, b, poly = self._shape(spec, theta)
        value = torch.exp(a[..., None] * log_x + b[..., None] * log_1mx)
        factor = torch.ones_like(value)
        x = torch.exp(log_x)
        for i, c in enumerate(poly, start=1):
            factor = factor + c[..., None] * x**i
        return norm[..., None] * value * factor

    def flavours(self, theta: Tensor, x: Tensor) -> Tensor:
        """The PDFs f(x) (not x f) of ``INPUT_PIDS`` at Q0, shape [B, 7, n], for x in (0, 1) of shape [n]."""
        theta = torch.as_tensor(theta)
        x = x.to(dtype=theta.dtype, device=theta.device)
        # f = 0 at the x = 1 node; a finite stand-in for log(1 - x) there keeps every derivative finite (not NaN)
        inside = x < 1
        log_x, log_1mx = torch.log(x), torch.where(inside, torch.log1p(-torch.where(inside, x, 0.0)), 0.0)
        pdf, norms = self.config.pdf, self.normalisations(theta)
        sea = {k: self._evaluate(s, norms[f"sea.{k}"], theta, log_x, log_1mx) for k, s in pdf.sea.items()}
        q = {f: sea[name] for f, name in pdf.flavours.items()}
        u_v = self._evaluate(pdf.u_v, norms["u_v"], theta, log_x, log_1mx)
        d_v = self._evaluate(pdf.d_v, norms["d_v"], theta, log_x, log_1mx)
        g = self._evaluate(pdf.g, norms["g"], theta, log_x, log_1mx)
        rows = [q["sbar"], q["ubar"], q["dbar"], g, d_v + q["dbar"], u_v + q["ubar"], q["s"]]
        return torch.where(inside, torch.stack(rows, dim=-2), 0.0)

    def sum_rules(self, theta: Tensor) -> Tensor:
        """(int u - ubar, int d - dbar, momentum sum) per parameter set, from the moments: [B, 3]."""
        pdf, norms = self.config.pdf, self.normalisations(theta)
        momentum = norms["g"] * self._moment(pdf.g, theta, 1)
        momentum = momentum + norms["u_v"] * self._moment(pdf.u_v, theta, 1)
        momentum = momentum + norms["d_v"] * self._moment(pdf.d_v, theta, 1)
        for flavour, name in pdf.flavours.items():
            momentum = momentum + _SEA_WEIGHT[flavour] * norms[f"sea.{name}"] * self._moment(pdf.sea[name], theta, 1)
        u = norms["u_v"] * self._moment(pdf.u_v, theta, 0)
        d = norms["d_v"] * self._moment(pdf.d_v, theta, 0)
        return torch.stack([u, d, momentum], dim=-1)
