"""Inverse solvers: the multi-discriminator GAN with vectorized replicas, and VAIM for several solutions.

Layers inside (imports point down): ``config`` -> ``stacked`` -> ``models`` / ``losses`` -> ``gan`` ->
``natural`` / ``training`` (Lightning); ``diagnostics`` (the gradient contract), ``coverage``, the closure command
``inverse.closure`` and ``plots`` sit on top and are not imported here. VAIM: ``vaim_config`` -> ``problems`` /
``vaim`` -> ``vaim_training`` -> ``vaim_run`` (the command ``python -m inverse.vaim``) / ``vaim_plots``, imported
from their modules (importing ``inverse.vaim`` here would make ``python -m inverse.vaim`` run a second copy).
Importing this package has no side effects.
"""

from inverse.config import ClosureConfig, GANConfig
from inverse.gan import InverseGAN
from inverse.training import GANModule, NonFiniteLossError, fit_gan

__all__ = ["ClosureConfig", "GANConfig", "GANModule", "InverseGAN", "NonFiniteLossError", "fit_gan"]
