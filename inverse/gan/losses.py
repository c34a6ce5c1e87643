"""Adversarial losses of the inverse GAN and the Poisson rate term, per replica.

Notation: f is the discriminator's logit (for ``lsgan`` and ``wgan_gp`` its raw output), p_d the data density
and p_theta the generated one. At the optimal logistic discriminator f* = log(p_d / p_theta), so
exp(f) = p_d / p_theta = 1 + r. Every generator loss below, times its weight ``GENERATOR_WEIGHT[kind] * N_j``,
has the gradient -N_j E_data[grad log p_theta] to first order in r, i.e. the shape part of the extended
log-likelihood's gradient; ``density_ratio`` has it exactly (Kaji, Manresa & Pouliot,
arXiv:2007.06169). With :func:`rate_loss` the total is the negative extended log-likelihood's gradient.

References:
    Goodfellow et al., arXiv:1406.2661 (minimax, non-saturating); Mao et al., arXiv:1611.04076 (LSGAN);
    Gulrajani et al., arXiv:1704.00028 (WGAN-GP).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["GENERATOR_WEIGHT", "discriminator_loss", "generator_loss", "gradient_penalty", "rate_loss"]

GENERATOR_WEIGHT: dict[str, float] = {"density_ratio": 1.0, "bce": 2.0, "minimax": 2.0, "lsgan": 4.0, "wgan_gp": 1.0}


def _weighted_mean(values: Tensor, weights: Tensor | None) -> Tensor:
    return values.mean(-1) if weights is None else (values * weights).sum(-1)


def discriminator_loss(
    kind: str, real: Tensor, fake: Tensor, real_weights: Tensor | None = None, fake_weights: Tensor | None = None
) -> Tensor:
    """Discriminator loss per replica.

    Args:
        kind: loss kind (see ``inverse.gan.config.LossConfig``).
        real: outputs on data event sets, [r, M].
        fake: outputs on generated event sets, [r, G].
        real_weights: normalized weights of the data sets per replica, [r, M] (None: equal).
        fake_weights: normalized weights of the generated sets per replica, [r, G] (None: equal), e.g. a
            detector's or an MCMC sampler's event weights.

    Returns:
        [r] losses (the WGAN gradient penalty is added separately).
    """
    if kind in ("density_ratio", "bce", "minimax"):
        return _weighted_mean(F.softplus(-real), real_weights) + _weighted_mean(F.softplus(fake), fake_weights)
    if kind == "lsgan":
        return _weighted_mean((real - 1.0) ** 2, real_weights) + _weighted_mean(fake**2, fake_weights)
    if kind == "wgan_gp":
        return _weighted_mean(fake, fake_weights) - _weighted_mean(real, real_weights)
    raise ValueError(f"unknown loss kind {kind!r}")


def generator_loss(kind: str, fake: Tensor, logit_clip: float = 15.0, weights: Tensor | None = None) -> Tensor:
    """Per-event generator loss averaged over generated sets, [r] (multiply by ``GENERATOR_WEIGHT[kind] * N_j``).

    Args:
        kind: loss kind.
        fake: discriminator outputs on generated event sets, [r, G].
        logit_clip: cap of the logit inside exp (density_ratio), against overflow early in training.
        weights: normalized weights of the generated sets, [r, G] (None: equal). Gradients flow through them:
            a self-normalised weighted mean differentiates the weights' theta-dependence too (the score-function
            term of an MCMC sampler, the acceptance and migrations of a detector).

    Returns:
        [r] losses.
    """
    if kind == "density_ratio":
        return -_weighted_mean(torch.exp(fake.clamp(max=logit_clip)), weights)
    if kind == "bce":
        return _weighted_mean(F.softplus(-fake), weights)
    if kind == "minimax":
        return -_weighted_mean(F.softplus(fake), weights)
    if kind == "lsgan":
        return _weighted_mean((fake - 1.0) ** 2, weights)
    if kind == "wgan_gp":
        return -_weighted_mean(fake, weights)
    raise ValueError(f"unknown loss kind {kind!r}")


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor, mix: Tensor) -> Tensor:
    """WGAN-GP penalty E[(|grad_x critic(x_mix)| - 1)^2] per replica.

    Args:
        critic: maps event sets [r, M, k] to outputs [r, M].
        real: data event sets, [r, M, k].
        fake: generated event sets, [r, M, k] (detached).
        mix: interpolation fractions in [0, 1], [r, M, 1].

    Returns:
        [r] penalties.
    """
    points = (mix * real + (1 - mix) * fake).detach().requires_grad_(True)
    out = critic(points)
    (grad,) = torch.autograd.grad(out.sum(), points, create_graph=True)
    return ((grad.flatten(2).norm(dim=-1) - 1.0) ** 2).mean(-1)


def rate_loss(expected: Tensor, observed: Tensor, mask: Tensor | None = None) -> Tensor:
    """Negative Poisson log-likelihood of the datasets' event counts (without the constant log N!).

    Args:
        expected: expected counts nu_j(theta), [r, B, J].
        observed: observed counts per replica, [r, J].
        mask: optional 0/1 weight of each dataset per replica, [r, J] (k-fold fits leave datasets out).

    Returns:
        [r] losses sum_j m_j (nu_j - N_j log nu_j), averaged over the B parameter sets.
    """
    nu = expected.clamp_min(torch.finfo(expected.dtype).tiny)
    terms = nu - observed.unsqueeze(1) * torch.log(nu)
    if mask is not None:
        terms = terms * mask.unsqueeze(1)
    return terms.sum(-1).mean(-1)
