"""The law-of-total-variance split of an ensemble, and its comparison with the reference posterior.

Member m gives replica estimates theta_mr with mean mu_m and variance s_m^2 (over its R replicas). The ensemble is
the equal-weight mixture of the members' replica distributions; by the law of total variance its variance splits
into

    aleatoric  = 1/K sum_m s_m^2                 (the data's fluctuations, as each configuration's replicas see them)
    epistemic  = 1/K sum_m (mu_m - mu)^2          (how much the answer depends on the configuration)
    total      = aleatoric + epistemic            (the variance of all K x R estimates pooled)

with mu = 1/K sum_m mu_m, both in the mixture's (population) normalisation so the split is exact. The parameter
split is DeepHyper's ``MixedNormalAggregator(decomposed_scale=True)``; the covariance matrices are computed here,
since that aggregator works per component. ``epistemic_floor`` = (K - 1)/K x aleatoric / R is the epistemic part
K identical configurations with independent replicas would show from Monte Carlo noise alone.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["LEVELS", "closure_comparison", "variance_split"]

LEVELS = {"68": 1.0, "95": 1.959963984540054}
"""Half-width of each central interval in standard deviations."""


def variance_split(estimates: np.ndarray) -> dict[str, np.ndarray]:
    """The law-of-total-variance split of member replica estimates [K, R, D] (or values [K, R, ...]).

    Returns:
        ``mean`` [D]; ``aleatoric``, ``epistemic``, ``total`` variances [D] (DeepHyper's MixedNormalAggregator);
        ``member_mean`` [K, D], ``member_var`` [K, D]; ``aleatoric_cov``, ``epistemic_cov``, ``total_cov`` [D, D]
        (for 2-d values per replica: [K, R, D]); ``epistemic_floor`` [D], the epistemic part K identical
        configurations with independent replicas would show, (K - 1)/K x aleatoric / R.
    """
    from deephyper.ensemble.aggregator import MixedNormalAggregator

    est = np.asarray(estimates, dtype=float)
    if est.ndim < 3 or est.shape[0] < 1 or est.shape[1] < 1:
        raise ValueError(f"estimates: expected [members, replicas, ...], got shape {est.shape}")
    k, r = est.shape[:2]
    mu, var = est.mean(1), est.var(1)
    agg = MixedNormalAggregator(decomposed_scale=True).aggregate(
        [{"loc": m, "scale": np.sqrt(v)} for m, v in zip(mu, var)]
    )
    out = {
        "mean": agg["loc"],
        "aleatoric": agg["scale_aleatoric"] ** 2,
        "epistemic": agg["scale_epistemic"] ** 2,
        "member_mean": mu,
        "member_var": var,
    }
    out["total"] = out["aleatoric"] + out["epistemic"]
    out["epistemic_floor"] = (k - 1) / k * out["aleatoric"] / r
    if est.ndim == 3:
        centred = est - mu[:, None]
        out["aleatoric_cov"] = np.einsum("kri,krj->ij", centred, centred) / (k * r)
        dev = mu - mu.mean(0)
        out["epistemic_cov"] = dev.T @ dev / k
        out["total_cov"] = out["aleatoric_cov"] + out["epistemic_cov"]
    return out


def _coverage(mean: np.ndarray, sd: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    z = np.abs(mean - truth) / sd
    return {level: float(np.mean(z <= width)) for level, width in LEVELS.items()}


def closure_comparison(
    split: dict[str, np.ndarray], truth: np.ndarray, post_mean: np.ndarray, post_sd: np.ndarray
) -> dict[str, Any]:
    """Pulls, std ratios and the coverage of the truth with the aleatoric and with the total sd."""
    ale, tot = np.sqrt(split["aleatoric"]), np.sqrt(split["total"])
    cov_ale, cov_tot = _coverage(split["mean"], ale, truth), _coverage(split["mean"], tot, truth)
    nominal = {"68": 0.6827, "95": 0.9545}
    return {
        "pull": (split["mean"] - truth) / post_sd,
        "std_ratio_total": tot / post_sd,
        "std_ratio_aleatoric": ale / post_sd,
        "posterior_mean": post_mean,
        "posterior_std": post_sd,
        "z_truth_aleatoric": (split["mean"] - truth) / ale,
        "z_truth_total": (split["mean"] - truth) / tot,
        "coverage_aleatoric": cov_ale,
        "coverage_total": cov_tot,
        "coverage_nominal": nominal,
        # Improves: the total sd's coverage is nearer the nominal level at both levels, and strictly at one.
        "epistemic_improves_coverage": bool(
            all(abs(cov_tot[q] - nominal[q]) <= abs(cov_ale[q] - nominal[q]) for q in nominal)
            and any(abs(cov_tot[q] - nominal[q]) < abs(cov_ale[q] - nominal[q]) for q in nominal)
        ),
    }
