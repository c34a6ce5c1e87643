"""Learned event generators (conditional normalizing flow, conditional GAN, VAE) that replace theory + sampler.

Each implements :class:`physics.sampling.EventSampler`, so an inverse solver takes any of them from its config
(``gan.sampler: {kind: flow, path: runs/surrogate-flow/model.pt}``). Layers inside: ``config`` -> ``base`` ->
``flow`` / ``cgan`` / ``vae`` / ``dis_flow`` (DIS (x, Q^2) events, on the d-dimensional ``autoregressive`` flow) ->
``io``; ``simulate``, ``quality``, ``training`` and the ``train`` command sit on top. Importing this package has no
side effects.
"""

from surrogates.autoregressive import AutoregressiveSplineFlow
from surrogates.base import Surrogate, SurrogateFileError
from surrogates.cgan import GANSurrogate
from surrogates.config import SurrogateConfig
from surrogates.dis_flow import DISFlowSurrogate
from surrogates.flow import FlowSurrogate
from surrogates.io import build_surrogate, load_surrogate
from surrogates.vae import VAESurrogate

__all__ = [
    "AutoregressiveSplineFlow",
    "DISFlowSurrogate",
    "FlowSurrogate",
    "GANSurrogate",
    "Surrogate",
    "SurrogateConfig",
    "SurrogateFileError",
    "VAESurrogate",
    "build_surrogate",
    "load_surrogate",
]
