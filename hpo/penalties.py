"""Penalties of a trial, per replica, reported always and added to the loss on request (``loss.penalties``).

``patience`` (NNPDF's form): vl_r * exp(alpha |S - P - s*_r|), with vl_r the replica's final validation chi2 per
point, S the training steps, P the patience (default: the Polyak window, the steps whose average is the
estimate) and s*_r the step of the replica's best validation chi2. It is vl_r when the best validation loss falls
where the averaging starts, and grows when the replica is still improving at the end (too few steps) or was best
long before (it wandered off).

``saturation`` (ours, the analogue of NNPDF's saturated activations): the fraction of a replica's parameters
within ``edge`` (relative to the box width) of the prior box. The generator maps to the box through a sigmoid,
which flattens at the edges: a parameter stuck there is not estimated by the data, and a hyperparameter setting
that pushes replicas there should lose.

References:
    NNPDF collaboration, arXiv:2109.02653 section 3.3 (patience penalty).
"""

from __future__ import annotations

import numpy as np

__all__ = ["PENALTIES", "patience", "saturation"]


def patience(
    validation: np.ndarray,
    curve: np.ndarray,
    curve_steps: np.ndarray,
    steps: int,
    patience_steps: int,
    alpha: float = 1e-3,
) -> np.ndarray:
    """vl_r exp(alpha |S - P - s*_r|) per replica.

    Args:
        validation: final validation chi2 per point, [R].
        curve: validation chi2 along training, [R, S'].
        curve_steps: the steps of the curve's columns, [S'].
        steps: S.
        patience_steps: P.
        alpha: rate of the exponential.

    Returns:
        [R] penalties.
    """
    curve = np.asarray(curve, dtype=float)
    best = np.asarray(curve_steps)[np.nanargmin(np.where(np.isfinite(curve), curve, np.inf), axis=1)]
    return np.asarray(validation, dtype=float) * np.exp(alpha * np.abs(steps - patience_steps - best))


def saturation(estimates: np.ndarray, low: np.ndarray, high: np.ndarray, edge: float = 1e-3) -> np.ndarray:
    """Fraction of each replica's parameters within ``edge`` x (high - low) of the box, [R]."""
    est = np.asarray(estimates, dtype=float)
    low, high = np.asarray(low, dtype=float), np.asarray(high, dtype=float)
    margin = edge * (high - low)
    return ((est <= low + margin) | (est >= high - margin)).mean(-1)


PENALTIES = ("patience", "saturation")
