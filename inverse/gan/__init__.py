"""The GAN inverse solver: R bootstrap replicas of a parameter generator against per-dataset discriminators.

Layers inside (imports point down): ``config`` -> ``models`` / ``losses`` / ``natural`` / ``sampler`` -> ``model``
(:class:`InverseGAN`) -> ``training`` (:func:`fit_gan`) -> ``diagnostics`` (the gradient contract), ``coverage``,
``reference``, ``report``, ``plots`` -> ``run`` (:func:`run_closure`) -> ``cli`` (``python -m inverse.closure``,
also ``python -m inverse.gan``).
"""

from inverse.gan.config import ClosureConfig, GANConfig
from inverse.gan.model import InverseGAN
from inverse.gan.run import run_closure
from inverse.gan.training import GANModule, fit_gan

__all__ = ["ClosureConfig", "GANConfig", "GANModule", "InverseGAN", "fit_gan", "run_closure"]
