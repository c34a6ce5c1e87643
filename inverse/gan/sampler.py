"""Where the GAN's generated events come from: the sampler a runcard names, and the events it returns.

``gan.sampler.kind`` picks the exact inverse-CDF sampler of the theory, the MCMC sampler (random-walk Metropolis
on the unnormalised sigma, score-function gradients) or a saved surrogate (``python -m surrogates.train``); with
a detector in the physics, every kind's events pass through it (``physics.detector.FoldedSampler``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import Tensor

from inverse.gan.config import SamplerConfig
from physics.datasets import Experiment
from physics.dis.experiment import DISExperiment
from physics.dis.folded import FoldedDISSampler
from physics.dis.mcmc import DISMCMCSampler
from physics.dis.sampling import DISSampler
from physics.mcmc import MCMCSampler
from physics.sampling import EventSampler
from surrogates.base import Surrogate, SurrogateFileError
from surrogates.experiment import SurrogateExperiment
from surrogates.io import load_surrogate

__all__ = ["Generated", "build_sampler", "learned_experiment"]


def build_sampler(config: SamplerConfig, experiment: Experiment | DISExperiment) -> EventSampler:
    """The event sampler named by ``gan.sampler`` (exact, MCMC or a saved surrogate), behind the detector if any.

    DIS experiments take ``exact`` (:class:`physics.dis.sampling.DISSampler`), ``mcmc``
    (:class:`physics.dis.mcmc.DISMCMCSampler`) or a DIS ``flow`` (:class:`surrogates.dis_flow.DISFlowSurrogate`);
    with a detector, exact or MCMC events pass :class:`physics.dis.folded.FoldedDISSampler`.

    Raises:
        SurrogateFileError: the surrogate file is missing, damaged, of another kind, or for other physics.
        ValueError: a DIS experiment with a cGAN or VAE surrogate, or a flow behind a detector.
    """
    if isinstance(experiment, DISExperiment):
        return _dis_sampler(config, experiment)
    if config.kind == "exact":
        inner: EventSampler = experiment.sampler()
    elif config.kind == "mcmc":
        inner = MCMCSampler(experiment.theory, [d.spec for d in experiment.datasets], config.mcmc)
    else:
        try:
            inner, _ = load_surrogate(config.path, kind=config.kind, physics=experiment.config)
        except SurrogateFileError as err:
            raise SurrogateFileError(f"gan.sampler.path: {err}") from None
    return experiment.observed_sampler(inner)


def _dis_sampler(config: SamplerConfig, experiment: DISExperiment) -> EventSampler:
    if config.kind == "flow":
        if experiment.detector is not None:
            raise ValueError("gan.sampler.kind: a DIS flow learns true events; with physics.detector use exact or mcmc")
        try:
            flow, _ = load_surrogate(config.path, kind="flow", physics=experiment.config)
        except SurrogateFileError as err:
            raise SurrogateFileError(f"gan.sampler.path: {err}") from None
        return flow
    if config.kind not in ("exact", "mcmc"):
        raise ValueError(f"gan.sampler.kind: DIS events come from 'exact', 'mcmc' or 'flow', not {config.kind!r}")
    true = DISSampler(experiment) if config.kind == "exact" else DISMCMCSampler(experiment, config.mcmc)
    return true if experiment.detector is None else FoldedDISSampler(true, experiment)


def learned_experiment(sampler: EventSampler, experiment: Any) -> Any:
    """What the rate term and the natural-gradient metric use with ``sampler``: the surrogate's own or the theory's.

    A surrogate with a density and learned counts (a flow from ``python -m surrogates.train``) brings both, so the
    fit calls no theory: a :class:`surrogates.experiment.SurrogateExperiment` with the counts rescaled to the
    experiment's luminosities. Any other sampler (exact, MCMC, a detector around a surrogate, a cGAN or VAE
    surrogate, which have no density) keeps ``experiment``.
    """
    if isinstance(experiment, SurrogateExperiment) or not isinstance(sampler, Surrogate):
        return experiment
    if not (sampler.has_log_prob and sampler.has_counts):
        return experiment
    if isinstance(experiment, DISExperiment):
        luminosity = [experiment.luminosity] * len(experiment.names)
    else:
        datasets = getattr(experiment, "datasets", None)
        luminosity = [d.luminosity for d in datasets] if datasets is not None else None
    return SurrogateExperiment(sampler, luminosity)


class Generated(NamedTuple):
    """Generated events of one dataset, [r, B, m], and their weights [r, B, m] (None: equal weights)."""

    x: Tensor
    w: Tensor | None

    def detach(self) -> Generated:
        """Both without gradient."""
        return Generated(self.x.detach(), None if self.w is None else self.w.detach())
