"""What VAIM's draws say: modes (DBSCAN in box-scaled coordinates), spreads and forward consistency.

Each draw is judged with the *true* simulator: the RMS over observables of |f(x_hat) - y| / noise, and the share of
draws within ``sampling.consistency_sigmas``, before and after the learned-forward repair.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from inverse.problems import Simulator
from inverse.vaim.config import VAIMConfig
from inverse.vaim.simulate import noise_scale, prior_box

__all__ = ["analyse_draws", "find_modes"]


def find_modes(scaled: np.ndarray, eps: float | None, min_fraction: float) -> tuple[np.ndarray, float]:
    """Mode label of each draw (DBSCAN in box-scaled coordinates), 0 = largest mode, -1 = unassigned.

    Args:
        scaled: draws in [-1, 1]^d, [n, d].
        eps: neighbourhood radius: draws closer than this chain into one mode (None: twice the median distance
            of a draw to its k-th neighbour, at least 0.02).
        min_fraction: clusters smaller than this fraction of the draws are unassigned.

    Returns:
        (labels [n], the radius used).
    """
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    n = len(scaled)
    core = max(5, int(0.002 * n))
    if eps is None:
        dist, _ = NearestNeighbors(n_neighbors=min(core + 1, n)).fit(scaled).kneighbors(scaled)
        eps = max(0.02, 2.0 * float(np.median(dist[:, -1])))
    labels = DBSCAN(eps=eps, min_samples=core).fit_predict(scaled)
    sizes = {lab: int((labels == lab).sum()) for lab in set(labels.tolist()) if lab >= 0}
    kept = [lab for lab, size in sorted(sizes.items(), key=lambda kv: -kv[1]) if size >= min_fraction * n]
    out = np.full(n, -1, dtype=np.int64)
    for new, lab in enumerate(kept):
        out[labels == lab] = new
    return out, eps


def _consistency(f_x: Tensor, y: Tensor, sigma: Tensor, within: float) -> dict[str, Any]:
    rms = (((f_x - y) / sigma) ** 2).mean(-1).sqrt()
    return {
        "within": float((rms <= within).double().mean()),
        "median_rms_sigma": float(rms.median()),
        "p95_rms_sigma": float(torch.quantile(rms, 0.95)),
    }


def analyse_draws(
    config: VAIMConfig, simulator: Simulator, raw: Tensor, repaired: Tensor, moved: Tensor, y: Tensor
) -> dict[str, Any]:
    """Modes, spreads and forward consistency of one observation's draws.

    Args:
        config: the runcard.
        simulator: the true forward map (consistency is judged with it, not with the learned one).
        raw: decoder draws [n, d] before repair.
        repaired: the same after :meth:`VAIM.repair` [n, d].
        moved: which draws the repair moved [n].
        y: the observation [m].

    Returns:
        A JSON-ready dict.
    """
    s = config.sampling
    names = [p.name for p in config.problem.parameters]
    low, high = prior_box(config)
    scaled = ((repaired - (low + high) / 2) / ((high - low) / 2)).numpy()
    labels, eps = find_modes(scaled, s.mode_eps, s.min_mode_fraction)
    sigma = noise_scale(y.unsqueeze(0), config.problem.noise)
    consistency = {}
    for key, draws in (("raw", raw), ("repaired", repaired)):
        f_x = torch.cat([simulator(c) for c in draws.split(8192)]).to(torch.float64)
        consistency[key] = _consistency(f_x, y.unsqueeze(0), sigma, s.consistency_sigmas)
    x = repaired.numpy()
    modes = []
    for lab in range(labels.max() + 1):
        xm = x[labels == lab]
        modes.append(
            {
                "fraction": float(len(xm) / len(x)),
                "mean": dict(zip(names, xm.mean(0).tolist())),
                "median": dict(zip(names, np.median(xm, 0).tolist())),
                "sd": dict(zip(names, xm.std(0, ddof=1).tolist() if len(xm) > 1 else [0.0] * len(names))),
            }
        )
    cov = np.atleast_2d(np.cov(scaled.T)) if len(scaled) > 1 else np.zeros((len(names), len(names)))
    eigval, eigvec = np.linalg.eigh(cov)
    return {
        "observation": y.tolist(),
        "n_draws": len(x),
        "moved_by_repair": float(moved.double().mean()),
        "modes": modes,
        "mode_eps": eps,
        "unassigned_fraction": float((labels < 0).mean()),
        "sd": dict(zip(names, x.std(0, ddof=1).tolist())),
        "principal_sd_scaled": np.sqrt(np.clip(eigval[::-1], 0, None)).tolist(),
        "principal_axis_scaled": dict(zip(names, eigvec[:, -1].tolist())),
        "forward_consistency": consistency,
        "labels": labels,
    }
