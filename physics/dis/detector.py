"""The DIS detector: resolution in ln x and ln Q^2, an acceptance in y, and migrations across the Q^2 windows.

A true event (x, Q^2) of any window is recorded with probability eps(y), y = Q^2 / (x s), and reconstructed at

    ln x_rec = ln x + s_x g_x,    ln Q^2_rec = ln Q^2 + s_Q g_Q,

with g_x, g_Q independent standard normals truncated at +-reach (the truncation is part of the model, so that
every folding integral has a finite range). The reconstructed event enters the dataset whose window and cuts,
applied to the reconstructed values, hold it: an event migrates to a neighbouring window when its Q^2_rec
crosses an edge, and is lost when the reconstructed point leaves every window or the cuts. True events come
from the windows' union under the true-level cuts (events from outside it that migrate in are not modelled).

The folded intensity of dataset j per unit ln x_rec ln Q^2_rec is

    lambda_j(a_r, b_r) = sum_k int int_{T_k} lambda_k(a, b) eps(a, b) K_x(a_r - a) K_Q(b_r - b) da db

(a = ln x, b = ln Q^2, lambda_k the true intensity per unit a b of window k, K the truncated Gaussian kernels),
and nu_j = sum_k int int_{T_k} lambda_k eps P_j with P_j(a, b) the probability that the reconstructed point
falls in dataset j. The true intensities are the bilinear tables of :mod:`physics.dis.table`, linear in their
vertex values, so both are fixed linear maps of the vertex values (:mod:`physics.dis.folding`).

References:
    Cowan, "A survey of unfolding methods for particle physics", Proc. Advanced Statistical Techniques in
    Particle Physics, Durham (2002) (response, efficiency and migrations).
    Devroye, "Non-Uniform Random Variate Generation" (1986), ch. 2.2 (inversion of a truncated normal).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from physics.dis.config import DISDetectorConfig, KinematicsConfig

__all__ = ["DISDetector"]

_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class DISDetector:
    """Resolution, acceptance and the truncated Gaussian kernels, as differentiable torch functions.

    Args:
        config: the validated ``detector`` block.
        kinematics: the beam energy (for y) and cuts.
    """

    def __init__(self, config: DISDetectorConfig, kinematics: KinematicsConfig) -> None:
        self.config = config
        self.s = kinematics.sqrt_s**2
        self.sd_x, self.sd_q2, self.reach = float(config.resolution_x), float(config.resolution_q2), float(config.reach)
        self._log_norm = math.log(math.erf(self.reach / math.sqrt(2.0)))  # mass of the truncated standard normal

    def efficiency(self, x: Tensor, q2: Tensor) -> Tensor:
        """eps(y) in [0, 1] at true (x, Q^2), any shape; differentiable."""
        acc = self.config.acceptance
        if acc is None:
            return torch.ones_like(x * q2)
        log_y = torch.log(q2) - torch.log(x) - math.log(self.s)
        return acc.plateau * torch.sigmoid((log_y - math.log(acc.y0)) / acc.width)

    def kernel(self, delta: Tensor, sd: float) -> Tensor:
        """The truncated Gaussian density of a displacement ``delta`` with sd ``sd`` (0 beyond the reach)."""
        g = delta / sd
        log_k = -0.5 * g * g - _LOG_SQRT_2PI - math.log(sd) - self._log_norm
        return torch.where(g.abs() <= self.reach, torch.exp(log_k), torch.zeros_like(g))

    def clip(self, g: Tensor) -> Tensor:
        """Standardised bounds clipped to the kernel's support [-reach, reach]."""
        return g.clamp(-self.reach, self.reach)

    def mass(self, lo: Tensor, hi: Tensor) -> Tensor:
        """Probability of [lo, hi] (standardised, any values) under the truncated standard normal."""
        lo, hi = self.clip(lo), self.clip(hi)
        upper = torch.special.ndtr(-lo) - torch.special.ndtr(-hi)  # keeps its digits when lo > 0
        lower = torch.special.ndtr(hi) - torch.special.ndtr(lo)  # ... and this one when hi < 0
        p = torch.where(lo > 0, upper, lower) * math.exp(-self._log_norm)
        return torch.where(hi > lo, p.clamp_min(0.0), torch.zeros_like(p))

    def draw(self, lo: Tensor, hi: Tensor, r: Tensor) -> Tensor:
        """Standard normal values in [lo, hi] (clipped to the reach) by inversion of uniforms r; reparameterised.

        Where the interval is empty the result is its clipped lower end (such draws carry zero weight).
        """
        lo, hi = self.clip(lo), self.clip(hi)
        flip = lo > 0  # invert on the side where the tail probabilities keep their digits (g -> -g)
        a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
        pa, pb = torch.special.ndtr(a), torch.special.ndtr(b)
        p = pa + r * (pb - pa)
        g = torch.special.ndtri(p.clamp(torch.finfo(p.dtype).tiny, 1.0 - torch.finfo(p.dtype).eps))
        g = torch.where(torch.isfinite(g), g, a)
        g = torch.minimum(torch.maximum(g, a), torch.maximum(a, b))
        return torch.where(flip, -g, g)

    def summary(self) -> dict[str, object]:
        """The detector's settings for reports."""
        return self.config.model_dump()
