"""The chains' GAN: one parameter set per chain on the unweighted data, its discriminators started from the fit's.

The Langevin sampler (:mod:`inverse.gan.posterior.langevin`) moves the chains' parameters itself; this model
generates their events, holds their discriminators and evaluates the generator objective at given parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from inverse.gan.config import GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.posterior.config import PosteriorModeConfig
from physics.pseudodata import EventData

__all__ = ["chain_model", "pull_toward"]


def chain_model(fit: InverseGAN, data: EventData, post: PosteriorModeConfig) -> InverseGAN:
    """The chains' model: ``post.chains`` parameter sets, chain c's discriminators starting as replica c's.

    Args:
        fit: the fitted GAN (its sampler, experiment and discriminators are taken over).
        data: the data the GAN was fitted to (used without bootstrap weights).
        post: the posterior settings (chains, events per chain, discriminator learning rate, seed).
    """
    model = InverseGAN(_chain_config(fit.config, post), fit.experiment, data, fit.sampler)
    source = dict(fit.discriminators.named_parameters())
    with torch.no_grad():
        # Parameters are stacked over replicas in dimension 0.
        for name, p in model.discriminators.named_parameters():
            p.copy_(source[name][: post.chains].to(p.dtype))
    return model


def _chain_config(gan: GANConfig, post: PosteriorModeConfig) -> GANConfig:
    """The GAN settings of the chains: one parameter set per chain, the unweighted data, half-size event draws."""
    events = post.events_per_param or gan.training.events_per_param
    training = gan.training.model_copy(
        update={
            "replicas": post.chains,
            "bootstrap": False,
            "params_per_step": 1,
            "events_per_param": max(1, events // 2),
            "seed": post.seed,
        }
    )
    update: dict[str, Any] = {"training": training}
    lr = post.d_lr
    if lr is None and gan.optimizer_d.name != "newton":
        # Adam's steps do not shrink near the optimum: over the chains' many updates on the same data, at the fit's
        # rate the weights the data leave free random-walk and the gradient's noise grows step after step.
        lr = post.d_lr_fraction * gan.optimizer_d.lr
    if lr is not None:
        update["optimizer_d"] = gan.optimizer_d.model_copy(update={"lr": lr})
    return gan.model_copy(update=update)


def pull_toward(params: Iterable[Tensor], anchor: list[Tensor], rate: float) -> None:
    """Move every parameter the fraction ``rate`` of the way back to its anchor: w <- w - rate (w - w0).

    Applied after each optimizer step (decoupled, as AdamW's weight decay is, but toward the chain's own start
    rather than zero), it bounds the random walk of the weights the data leave free over a long chain; a decay
    toward zero instead pulls the trained weights too and biases the gradient.
    """
    with torch.no_grad():
        for p, a in zip(params, anchor, strict=True):
            p.sub_(rate * (p - a))
