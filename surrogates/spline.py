"""Monotone rational-quadratic splines on [0, 1] whose knots are shared by many events.

A conditional flow gives every parameter set one spline, and each set has hundreds of events. Normalising the
widths, heights and derivatives per event (what a general spline routine does when it is handed knots expanded to
every event) repeats a softmax and two cumulative sums over all K bins n times per set. Here the knots are
normalised once per set (:func:`spline_knots`, [..., K + 1]) and each event only finds its bin (a binary search)
and gathers six numbers, so the per-event cost no longer grows with K.

Conventions follow normflows' ``rational_quadratic_spline`` on the unit square (minimum bin width and height
1e-3, derivatives ``min_derivative + softplus``), so the same network weights give the same map: the width axis
is the data side t, the height axis the base side u, :func:`spline_cdf` maps t -> u with log du/dt and
:func:`spline_inverse` maps u -> t with log dt/du.

References:
    Gregory and Delbourgo, "Piecewise rational quadratic interpolation to monotonic data", IMA J. Numer. Anal.
    2 (1982) 123.
    Durkan, Bekasov, Murray and Papamakarios, "Neural Spline Flows", arXiv:1906.04032, eqs. 4-8 and app. A.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "MIN_BIN",
    "MIN_DERIVATIVE",
    "SplineBin",
    "SplineKnots",
    "bin_cdf",
    "bin_inverse",
    "spline_bin",
    "spline_cdf",
    "spline_inverse",
    "spline_knots",
]

MIN_BIN = 1e-3
MIN_DERIVATIVE = 1e-3


class SplineKnots(NamedTuple):
    """Normalised knots of one spline per leading index: knot positions on both axes and slopes, [..., K + 1]."""

    x: Tensor
    y: Tensor
    slope: Tensor


def _positions(unnormalised: Tensor) -> Tensor:
    k = unnormalised.shape[-1]
    if MIN_BIN * k > 1.0:
        raise ValueError(f"spline bins: {k} bins cannot each be at least {MIN_BIN} wide")
    sizes = MIN_BIN + (1.0 - MIN_BIN * k) * F.softmax(unnormalised, dim=-1)
    inner = torch.cumsum(sizes, dim=-1)[..., :-1]
    # The end knots are exactly 0 and 1, whatever the rounding of the cumulative sum.
    zero = torch.zeros_like(inner[..., :1])
    return torch.cat([zero, inner, zero + 1.0], dim=-1)


def spline_knots(params: Tensor, bins: int) -> SplineKnots:
    """Knots from unnormalised spline parameters [..., 3K + 1] (K widths, K heights, K + 1 derivatives)."""
    if params.shape[-1] != 3 * bins + 1:
        raise ValueError(f"spline parameters: last dimension {params.shape[-1]}, expected 3 * {bins} + 1")
    w, h, d = params[..., :bins], params[..., bins : 2 * bins], params[..., 2 * bins :]
    return SplineKnots(_positions(w), _positions(h), MIN_DERIVATIVE + F.softplus(d))


class SplineBin(NamedTuple):
    """The bin of each event: its left knot, width and height on both axes, end slopes, and derived terms."""

    x0: Tensor
    width: Tensor
    y0: Tensor
    height: Tensor
    d0: Tensor
    d1: Tensor
    delta: Tensor  # height / width
    curvature: Tensor  # d0 + d1 - 2 delta


def _check(knots: SplineKnots, values: Tensor) -> None:
    if knots.x.shape[:-1] != values.shape[:-1]:
        raise ValueError(
            f"spline: knots for leading shape {tuple(knots.x.shape[:-1])}, events of shape {tuple(values.shape)}"
        )
    if knots.x.dtype != values.dtype or knots.x.device != values.device:
        raise ValueError(
            f"spline: knots in {knots.x.dtype} on {knots.x.device}, events in {values.dtype} on {values.device}"
        )


def _bin_of(knots: SplineKnots, values: Tensor, axis: Tensor) -> SplineBin:
    """Each event's bin on ``axis`` (knots.x or knots.y), [..., n] per field."""
    _check(knots, values)
    k = axis.shape[-1] - 1
    index = torch.searchsorted(axis.contiguous(), values.contiguous(), right=True) - 1
    index = index.clamp(0, k - 1)
    following = index + 1

    x0, x1 = knots.x.gather(-1, index), knots.x.gather(-1, following)
    y0, y1 = knots.y.gather(-1, index), knots.y.gather(-1, following)
    d0, d1 = knots.slope.gather(-1, index), knots.slope.gather(-1, following)
    return spline_bin(x0, x1, y0, y1, d0, d1)


def spline_bin(x0: Tensor, x1: Tensor, y0: Tensor, y1: Tensor, d0: Tensor, d1: Tensor) -> SplineBin:
    """A bin from its two knots (x0, y0), (x1, y1) and the slopes d0, d1 there (each shaped like the events)."""
    width, height = x1 - x0, y1 - y0
    delta = height / width
    return SplineBin(x0, width, y0, height, d0, d1, delta, d0 + d1 - 2.0 * delta)


def _log_slope(b: SplineBin, xi: Tensor, mixed: Tensor, denominator: Tensor) -> Tensor:
    """The log-slope dy/dx inside a bin at the fraction xi of its width (Durkan et al., eq. 5).

    ``mixed`` is xi (1 - xi) and ``denominator`` the spline's delta + curvature * mixed, shared with the map itself.
    """
    numerator = b.delta.square() * (b.d1 * xi.square() + 2.0 * b.delta * mixed + b.d0 * (1.0 - xi).square())
    return torch.log(numerator) - 2.0 * torch.log(denominator)


def spline_cdf(knots: SplineKnots, t: Tensor) -> tuple[Tensor, Tensor]:
    """The spline's map t -> u for events t [..., n] in [0, 1], and log du/dt.

    Args:
        knots: one spline per leading index, from :func:`spline_knots`.
        t: events on the width axis.

    Returns:
        u and log du/dt, both shaped like t.
    """
    return bin_cdf(_bin_of(knots, t, knots.x), t)


def bin_cdf(b: SplineBin, t: Tensor) -> tuple[Tensor, Tensor]:
    """The map t -> u and log du/dt of events t inside their bins b (:func:`spline_cdf` after the bin search)."""
    xi = (t - b.x0) / b.width
    mixed = xi * (1.0 - xi)
    denominator = b.delta + b.curvature * mixed
    u = b.y0 + b.height * (b.delta * xi.square() + b.d0 * mixed) / denominator
    return u, _log_slope(b, xi, mixed, denominator)


def spline_inverse(knots: SplineKnots, u: Tensor) -> tuple[Tensor, Tensor]:
    """The spline's map u -> t for base values u [..., n] in [0, 1], and log dt/du.

    The bin fraction is the root of a quadratic, taken in the cancellation-free form 2c / (-b - sqrt(b^2 - 4ac))
    (Durkan et al., app. A); a discriminant rounded just below zero is set to zero.

    Args:
        knots: one spline per leading index, from :func:`spline_knots`.
        u: values on the height axis.

    Returns:
        t and log dt/du, both shaped like u.
    """
    return bin_inverse(_bin_of(knots, u, knots.y), u)


def bin_inverse(b: SplineBin, u: Tensor) -> tuple[Tensor, Tensor]:
    """The map u -> t and log dt/du of base values u inside their bins b (:func:`spline_inverse` after the search)."""
    offset = u - b.y0
    qa = offset * b.curvature + b.height * (b.delta - b.d0)
    qb = b.height * b.d0 - offset * b.curvature
    qc = -b.delta * offset
    root = (2.0 * qc) / (-qb - torch.sqrt((qb.square() - 4.0 * qa * qc).clamp_min(0.0)))
    mixed = root * (1.0 - root)
    return b.x0 + root * b.width, -_log_slope(b, root, mixed, b.delta + b.curvature * mixed)
