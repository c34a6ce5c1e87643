"""Generator losses against the likelihood: with the exact density-ratio discriminator, the weighted generator
gradient must equal the per-event log-likelihood gradient (exactly for density_ratio, to first order otherwise)."""

from __future__ import annotations

import pytest
import torch

from inverse.gan.losses import GENERATOR_WEIGHT, discriminator_loss, generator_loss, gradient_penalty, rate_loss

J = 1  # sigma1_high: the largest dataset
N = 20_000


def _stratified(n: int) -> torch.Tensor:
    # Midpoint rule in u: sample means become quadrature sums, so the comparison is not limited by MC noise.
    return ((torch.arange(n, dtype=torch.float64) + 0.5) / n).unsqueeze(0)


def _generator_gradient(sampler, kind: str, theta0: torch.Tensor, theta_data: torch.Tensor) -> torch.Tensor:
    """grad_theta of weight * E_theta[g(f)] at theta0, with f = log p_data - log p_theta0 (the optimal logit)."""
    theta = theta0.clone().requires_grad_(True)
    x = sampler.sample(theta, N, J, noise=_stratified(N))
    f = sampler.log_prob(x, theta_data, J) - sampler.log_prob(x, theta0, J)
    if kind == "lsgan":  # the least-squares optimum is D = p_d / (p_d + p_theta), not a logit
        f = torch.sigmoid(f)
    loss = GENERATOR_WEIGHT[kind] * generator_loss(kind, f, logit_clip=50.0).sum()
    (grad,) = torch.autograd.grad(loss, theta)
    return grad[0]


def _loglik_gradient(sampler, theta0: torch.Tensor, theta_data: torch.Tensor) -> torch.Tensor:
    """-E_data[grad log p_theta] at theta0 (the gradient of the negative per-event log-likelihood)."""
    x = sampler.sample(theta_data, N, J, noise=_stratified(N)).detach()
    theta = theta0.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(-sampler.log_prob(x, theta, J).mean(), theta)
    return grad[0]


@pytest.fixture(scope="module")
def sampler(experiment_b):
    return experiment_b.sampler()


@pytest.fixture(scope="module")
def thetas(experiment_b):
    truth = experiment_b.theory.truth_tensor(torch.float64)
    shift = torch.tensor([[0.1, 0.03, 0.1, 0.1, 0.05, 0.2]], dtype=torch.float64)
    return truth, truth + shift


def test_density_ratio_gradient_is_the_likelihood_gradient(sampler, thetas):
    truth, theta0 = thetas
    for theta_data, theta_model in ((truth, theta0), (theta0, truth)):
        got = _generator_gradient(sampler, "density_ratio", theta_model, theta_data)
        want = _loglik_gradient(sampler, theta_model, theta_data)
        assert torch.allclose(got, want, rtol=2e-3, atol=2e-3 * want.abs().max()), (got, want)


@pytest.mark.parametrize("kind", ["bce", "minimax", "lsgan"])
def test_other_losses_match_to_first_order(sampler, thetas, kind):
    truth, theta0 = thetas
    small = truth + 0.2 * (theta0 - truth)
    got = _generator_gradient(sampler, kind, small, truth)
    want = _loglik_gradient(sampler, small, truth)
    cosine = torch.dot(got, want) / (got.norm() * want.norm())
    assert cosine > 0.99
    assert 0.8 < got.norm() / want.norm() < 1.25


def test_discriminator_losses_are_minimized_by_the_density_ratio():
    # For a two-point distribution the optimum logit is log(p_d / p_g) per point: check the minimizer numerically.
    p_d, p_g = torch.tensor([0.7, 0.3]), torch.tensor([0.4, 0.6])
    f = torch.zeros(2, requires_grad=True)
    opt = torch.optim.LBFGS([f], max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        fake = f[[0, 0, 1, 1, 1]][None]  # equal-weight copies: 2/5 and 3/5 = p_g
        loss = discriminator_loss("bce", f[None], fake, p_d[None]).sum()
        loss.backward()
        return loss

    opt.step(closure)
    assert torch.allclose(f.detach(), torch.log(p_d / p_g), atol=1e-4)
    real = torch.tensor([[0.5, 1.0]])
    assert discriminator_loss("lsgan", real, torch.tensor([[0.0]])).item() == pytest.approx(0.125)
    assert discriminator_loss("wgan_gp", real, torch.tensor([[2.0]])).item() == pytest.approx(1.25)


def test_gradient_penalty_of_a_linear_critic():
    # critic(s) = 3 * sum(s): |grad| = 3 sqrt(k) everywhere, so the penalty is (3 sqrt(k) - 1)^2.
    real, fake = torch.rand(2, 5, 4), torch.rand(2, 5, 4)
    pen = gradient_penalty(lambda s: 3 * s.sum(-1), real, fake, torch.rand(2, 5, 1))
    assert torch.allclose(pen, torch.full((2,), (3 * 2.0 - 1) ** 2))


def test_rate_loss_is_minimized_at_the_observed_counts():
    observed = torch.tensor([[120.0, 30.0]])
    nu = observed.clone().unsqueeze(1).requires_grad_(True)
    (grad,) = torch.autograd.grad(rate_loss(nu, observed).sum(), nu)
    assert torch.allclose(grad, torch.zeros_like(grad))
    with pytest.raises(ValueError, match="unknown loss"):
        generator_loss("hinge", torch.zeros(1, 3))
