"""The MCMC reference posterior of the DIS problem: the exact extended likelihood, a uniform prior on the box.

The chains (:func:`physics.chains.run_chains`) run in the parameters themselves, whitened by the inverse
expected Fisher information at the maximum-likelihood estimate and re-whitened by the warm-up windows; the
default shape parameters are correlated by at most about 0.9, which whitening absorbs. Parameter points where
F2 turns negative somewhere in the table count as outside the support.

References:
    Barlow, "Extended maximum likelihood", Nucl. Instrum. Meth. A 297 (1990) 496.
"""

from __future__ import annotations

import numpy as np
import torch

from physics.chains import PosteriorResult, capped_covariance, run_chains
from physics.config import PosteriorConfig
from physics.dis.likelihood import DISMLE, DISLikelihood, fisher_information, fit_mle

__all__ = ["dis_laplace", "sample_dis_posterior"]


def dis_laplace(likelihood: DISLikelihood, mle: DISMLE | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The MLE (kept 1e-3 of the box width off its edges) and the capped inverse expected Fisher matrix there."""
    exp = likelihood.experiment
    low, high = (b.numpy() for b in exp.bounds())
    width = high - low
    mle = mle if mle is not None else fit_mle(likelihood)
    centre = np.clip(mle.theta, low + 1e-3 * width, high - 1e-3 * width)
    info = fisher_information(exp, torch.tensor(centre[None], dtype=torch.float64)).numpy()
    cov = np.linalg.inv(info)
    return centre, capped_covariance(0.5 * (cov + cov.T), width / np.sqrt(12.0))


def sample_dis_posterior(
    likelihood: DISLikelihood,
    config: PosteriorConfig | None = None,
    mle: DISMLE | None = None,
    progress: bool = True,
) -> PosteriorResult:
    """Draw from the posterior of the DIS events' extended likelihood with a uniform prior on the box.

    Args:
        likelihood: the likelihood of the observed events (all weights one for the data's posterior).
        config: chains, warm-up, draws and seed (its ``coordinates`` is ignored: DIS samples theta).
        mle: the maximum-likelihood estimate if already fitted.
        progress: show a progress bar.

    Returns:
        The draws with diagnostics.
    """
    cfg = config or PosteriorConfig()
    exp = likelihood.experiment
    centre, cov = dis_laplace(likelihood, mle)

    def log_likelihood(theta: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return likelihood(torch.as_tensor(theta, dtype=torch.float64), check=False).numpy()

    bounds = tuple(b.numpy() for b in exp.bounds())
    result = run_chains(log_likelihood, bounds, exp.parameter_names, centre, cov, cfg, progress=progress)
    result.info["coordinates"] = "theta"
    return result
