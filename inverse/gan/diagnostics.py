"""The gradient contract: does the GAN's generator gradient equal the extended likelihood's?

With the discriminator trained to optimality at fixed parameters, the ``density_ratio`` generator objective plus
the Poisson rate term has exactly the gradient of the negative extended log-likelihood (``inverse.gan.losses``), so an
adversarial fit converges to the maximum-likelihood estimate. This module measures that: it holds a point
generator at a given theta, trains the discriminators alone, averages the generator gradient over fresh events,
and compares it with the autograd gradient of ``physics.likelihood.ExtendedLikelihood`` (cosine and norm ratio),
for the whole objective and for its shape part (no rate term), which is where the losses differ.

A wrong sign, weight or feature scaling anywhere between sampler, discriminator and loss shows up as a cosine
well below 1 (0.9999 when right).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from inverse.gan.config import GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.newton import LogisticNewton, logistic_terms
from inverse.gan.training import make_optimizer, schedule
from physics.datasets import Experiment
from physics.likelihood import ExtendedLikelihood
from physics.pseudodata import EventData
from physics.sampling import EventSampler
from surrogates.experiment import SurrogateExperiment
from surrogates.fidelity import SurrogateLikelihood

__all__ = [
    "GradientContract",
    "displaced_theta",
    "gradient_contract",
    "likelihood_gradients",
]


@dataclass(frozen=True)
class GradientContract:
    """Generator gradient against the likelihood's, at one theta.

    Attributes:
        cosine: cosine between the generator objective's gradient and -grad log L (rate term included).
        norm_ratio: |generator gradient| / |grad log L|.
        shape_cosine: the same cosine without the rate term, against the gradient of sum_i log p_theta(x_i).
        shape_norm_ratio: norm ratio of the shape parts.
        gan_gradient: the generator objective's gradient in theta, [D].
        likelihood_gradient: -grad log L(theta), [D].
    """

    cosine: float
    norm_ratio: float
    shape_cosine: float
    shape_norm_ratio: float
    gan_gradient: np.ndarray
    likelihood_gradient: np.ndarray


def displaced_theta(
    center: np.ndarray, covariance: np.ndarray, distance: float, low: np.ndarray, high: np.ndarray, seed: int = 0
) -> np.ndarray:
    """A point at Mahalanobis ``distance`` from ``center`` in a random direction that stays inside the box.

    Args:
        center: e.g. the MLE, [D].
        covariance: e.g. the Laplace posterior covariance at the MLE, [D, D].
        distance: in posterior sd (Mahalanobis).
        low: lower box edges.
        high: upper box edges.
        seed: seed of the direction.

    Raises:
        ValueError: no direction within 100 tries keeps the point inside the box (with a 2 % margin).
    """
    rng = np.random.default_rng(seed)
    chol = np.linalg.cholesky(covariance)
    margin = 0.02 * (np.asarray(high) - np.asarray(low))
    for _ in range(100):
        u = rng.standard_normal(len(center))
        theta = center + distance * chol @ (u / np.linalg.norm(u))
        if np.all(theta > low + margin) and np.all(theta < high - margin):
            return theta
    raise ValueError(f"no point {distance} sd from the centre lies inside the prior box")


def _cosine(a: Tensor, b: Tensor) -> float:
    return float(a @ b / (a.norm() * b.norm()))


def likelihood_gradients(
    experiment: Experiment, data: EventData, theta: Tensor, likelihood: SurrogateLikelihood | None = None
) -> tuple[Tensor, Tensor]:
    """-grad log L of the extended likelihood at ``theta`` [D], and of its shape part alone (counts excluded).

    ``likelihood`` replaces the exact likelihood of ``experiment`` (e.g. a surrogate's own).
    """
    like = likelihood if likelihood is not None else ExtendedLikelihood(experiment, data)
    counts = likelihood.expected_counts if likelihood is not None else experiment.expected_counts
    th = theta.clone().requires_grad_(True)
    log_l = like(th[None])[0]
    nu = counts(th[None])[0]
    observed = torch.tensor([float(c) for c in data.counts], dtype=torch.float64)
    # log L_ext = sum_i log p(x_i) + N log nu - nu, so the shape part is log L + nu - N log nu.
    shape = log_l + (nu - observed * torch.log(nu)).sum()
    (g_total,) = torch.autograd.grad(-log_l, th, retain_graph=True)
    (g_shape,) = torch.autograd.grad(-shape, th)
    return g_total, g_shape


def _frozen_model(
    config: GANConfig, experiment: Experiment, data: EventData, theta: Tensor, sampler: EventSampler | None
) -> tuple:
    """(model, its config, the config with and without the rate term): one replica held at ``theta``, float64."""
    raw = config.model_dump()
    raw["generator"]["kind"] = "point"
    raw["training"].update(replicas=1, bootstrap=False, dtype="float64")
    cfg = GANConfig.model_validate(raw)
    with_rate = GANConfig.model_validate({**raw, "loss": {**raw["loss"], "rate": True}})
    shape_only = GANConfig.model_validate({**raw, "loss": {**raw["loss"], "rate": False}})
    model = InverseGAN(cfg, experiment, data, sampler=sampler)
    gen = model.generator
    with torch.no_grad():
        gen.offset.copy_(gen.from_box(theta).reshape(gen.offset.shape))
    gen.requires_grad_(False)
    return model, cfg, with_rate, shape_only


def _discriminator_stepper(model: InverseGAN, cfg: GANConfig, steps: int) -> Any:
    """One discriminator update on fresh events per call (``cfg.optimizer_d`` with the schedule over ``steps``)."""
    replicas = slice(0, 1)
    o = cfg.optimizer_d
    newton = o.name == "newton"
    if newton:
        opt = LogisticNewton(model.discriminators, lr=o.lr, ridge=o.damping)
    else:
        opt = make_optimizer(o, model.discriminators.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule(cfg.scheduler, steps))

    def d_step() -> None:
        events = model.simulate_detached(replicas)
        if newton:
            with torch.no_grad():
                opt.add(replicas, logistic_terms(model, events, replicas, opt.cache)[1])
        else:
            model.discriminators.requires_grad_(True)
            opt.zero_grad(set_to_none=True)
            model.discriminator_loss(events, replicas).sum().backward()
            model.discriminators.requires_grad_(False)
        opt.step()
        sched.step()

    return d_step


def gradient_contract(
    config: GANConfig,
    experiment: Experiment,
    data: EventData,
    theta: np.ndarray,
    d_train_steps: int = 400,
    n_gradient_draws: int = 16,
    sampler: EventSampler | None = None,
) -> GradientContract:
    """Train the discriminators at fixed ``theta`` and compare the generator gradient with the likelihood's.

    The model is built from ``config`` with one replica, unit event weights (no bootstrap) and float64;
    the discriminators train with ``config.optimizer_d`` and ``config.scheduler`` for ``d_train_steps`` steps.

    Args:
        config: GAN settings (loss kind, discriminator, events per parameter set, optimizer of D).
        experiment: datasets, luminosities and theory.
        data: the events the likelihood and the discriminators see.
        theta: the parameters held fixed, [D].
        d_train_steps: discriminator updates before the gradient is taken.
        n_gradient_draws: event draws (each after one more discriminator update) the gradient is averaged over.
        sampler: the generated events' sampler (None: ``config.sampler``). A surrogate with a density and learned
            counts brings its own likelihood (:class:`surrogates.fidelity.SurrogateLikelihood`), which is then the
            reference: the contract asks whether the GAN follows the likelihood of the sampler it is given.
    """
    theta_t = torch.as_tensor(theta, dtype=torch.float64)
    model, cfg, with_rate, shape_only = _frozen_model(config, experiment, data, theta_t, sampler)
    gen = model.generator
    replicas = slice(0, 1)
    d_step = _discriminator_stepper(model, cfg, d_train_steps)
    for _ in range(d_train_steps):
        d_step()
    gen.offset.requires_grad_(True)
    totals = {True: torch.zeros_like(theta_t), False: torch.zeros_like(theta_t)}
    # The discriminator keeps training at the schedule's final rate between draws, so the average is over its
    # snapshots as well as over generated events (one snapshot alone carries the optimizer's jitter).
    for _ in range(n_gradient_draws):
        d_step()
        for rate, variant in ((True, with_rate), (False, shape_only)):
            model.config = variant
            loss, _, _ = model.generator_loss(replicas)
            (g_phi,) = torch.autograd.grad(loss.sum(), gen.offset)
            totals[rate] += g_phi.reshape(-1)
    model.config = cfg
    jac = gen.box_jacobian(gen.offset.detach().reshape(-1))
    grads = {rate: total / n_gradient_draws / jac for rate, total in totals.items()}

    like = None
    if isinstance(model.experiment, SurrogateExperiment):
        flow = model.experiment.model
        like = SurrogateLikelihood(flow, data, [d.luminosity for d in experiment.datasets])
    g_total, g_shape = likelihood_gradients(experiment, data, theta_t, like)
    return GradientContract(
        cosine=_cosine(grads[True], g_total),
        norm_ratio=float(grads[True].norm() / g_total.norm()),
        shape_cosine=_cosine(grads[False], g_shape),
        shape_norm_ratio=float(grads[False].norm() / g_shape.norm()),
        gan_gradient=grads[True].numpy(),
        likelihood_gradient=g_total.numpy(),
    )
