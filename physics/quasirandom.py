"""Randomized quasi-Monte Carlo base uniforms: a Sobol point set, randomly shifted modulo 1 and shuffled.

An inverse-transform sampler maps each event's own uniforms to the event, so a sum over generated events is a
quadrature of the uniforms. With independent uniforms its error falls like n^(-1/2); with a low-discrepancy point
set it falls nearly like n^(-1) for smooth integrands (Owen 1997), which is what the adversarial fit's gradient is
(a smooth function of the events through the discriminator). A uniform random shift modulo 1 (Cranley & Patterson
1976) keeps every point marginally uniform, so the sums stay unbiased, and a random order keeps any subset of the
points (sets of consecutive events, one process's block) a random subset.

References:
    Sobol', "On the distribution of points in a cube and the approximate evaluation of integrals", USSR Comput.
    Math. Math. Phys. 7 (1967) 86.
    Cranley & Patterson, "Randomization of number theoretic methods for multiple integration", SIAM J. Numer.
    Anal. 13 (1976) 904.
    Owen, "Scrambled net variance for integrals of smooth functions", Ann. Statist. 25 (1997) 1541.
    Buchholz, Wenzel & Mandt, "Quasi-Monte Carlo variational inference", ICML (2018).
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

__all__ = ["rotated", "sobol_points"]

SOBOL_MAX_DIM = 21201  # torch.quasirandom.SobolEngine.MAXDIM


@lru_cache(maxsize=16)
def _sobol_cpu(n: int, dim: int) -> Tensor:
    return torch.quasirandom.SobolEngine(dim, scramble=False).draw(n, dtype=torch.float64)


def sobol_points(n: int, dim: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
    """The first n points of the unscrambled Sobol sequence in [0, 1)^dim, [n, dim] (cached per (n, dim)).

    Raises:
        ValueError: n < 1, or dim outside [1, 21201].
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    if not 1 <= dim <= SOBOL_MAX_DIM:
        raise ValueError(f"dim must be in [1, {SOBOL_MAX_DIM}], got {dim}")
    return _sobol_cpu(n, dim).to(dtype=dtype, device=device)


def rotated(points: Tensor, batch: int, generator: torch.Generator | None = None, shuffle: bool = True) -> Tensor:
    """``batch`` independent randomizations of a point set [n, d]: shifted modulo 1 and shuffled, [batch, n, d].

    Each returned point is uniform on [0, 1)^d; within one randomization the points keep the set's spacing.
    ``shuffle=False`` keeps the set's order (enough when every point is used and their order does not matter).
    """
    n, d = points.shape
    shift = torch.rand(batch, 1, d, generator=generator, dtype=points.dtype, device=points.device)
    u = torch.remainder(points + shift, 1.0)
    if not shuffle:
        return u
    order = torch.rand(batch, n, generator=generator, device=points.device).argsort(-1)
    return torch.gather(u, 1, order[..., None].expand(-1, -1, d))
