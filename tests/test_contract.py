"""The gradient contract: with the discriminators trained at fixed theta, the density-ratio generator objective has
the gradient of the negative extended log-likelihood, checked 1 and 3 posterior sd from the
MLE against the autograd gradient of ``physics.likelihood.ExtendedLikelihood``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inverse.gan.config import GANConfig
from inverse.gan.diagnostics import displaced_theta, gradient_contract
from physics.likelihood import ExtendedLikelihood, fit_mle
from physics.posterior import laplace_approximation


@pytest.fixture(scope="module")
def mle_and_cov(experiment_b, data_b):
    like = ExtendedLikelihood(experiment_b, data_b)
    mle = fit_mle(like, seed=0)
    centre, cov = laplace_approximation(like, mle=mle)
    return np.asarray(centre), np.asarray(cov)


def test_displaced_point_is_at_the_asked_mahalanobis_distance(mle_and_cov, experiment_b):
    centre, cov = mle_and_cov
    theory = experiment_b.theory
    theta = displaced_theta(centre, cov, 3.0, np.array(theory.low), np.array(theory.high), seed=4)
    d = theta - centre
    assert float(np.sqrt(d @ np.linalg.solve(cov, d))) == pytest.approx(3.0, rel=1e-9)
    with pytest.raises(ValueError, match="inside the prior box"):
        displaced_theta(centre, cov, 1e4, np.array(theory.low), np.array(theory.high))


@pytest.mark.parametrize("distance", [1.0, 3.0])
def test_density_ratio_gradient_is_the_likelihood_gradient(experiment_b, data_b, mle_and_cov, distance):
    centre, cov = mle_and_cov
    theory = experiment_b.theory
    theta = displaced_theta(centre, cov, distance, np.array(theory.low), np.array(theory.high), seed=0)
    torch.manual_seed(0)
    result = gradient_contract(GANConfig(), experiment_b, data_b, theta)
    assert result.cosine > 0.999, result
    # The shape part alone carries the events' information, where a wrong loss weight or sign would show.
    assert result.shape_cosine > 0.99, result
    assert 0.9 < result.norm_ratio < 1.1, result


def test_a_wrong_generator_weight_breaks_the_contract(experiment_b, data_b, mle_and_cov, monkeypatch):
    """The test can fail: halving the density-ratio weight turns the shape gradient's norm ratio to ~0.5."""
    import inverse.gan.model

    centre, cov = mle_and_cov
    theory = experiment_b.theory
    theta = displaced_theta(centre, cov, 3.0, np.array(theory.low), np.array(theory.high), seed=0)
    monkeypatch.setitem(inverse.gan.model.GENERATOR_WEIGHT, "density_ratio", 0.5)
    result = gradient_contract(GANConfig(), experiment_b, data_b, theta, d_train_steps=200, n_gradient_draws=4)
    assert result.shape_norm_ratio < 0.7
