"""Inverse solvers: the multi-discriminator GAN (``gan/``) and VAIM for problems with several solutions (``vaim/``).

Shared by both: :mod:`inverse.stacked` (R replica networks held as one set of stacked weights) and
:mod:`inverse.problems` (forward simulators named by ``"package.module:function"`` and the built-in problems).
The commands: ``python -m inverse.closure`` (the GAN closure test, :mod:`inverse.gan.cli`) and
``python -m inverse.vaim`` (:mod:`inverse.vaim.cli`).
"""

from inverse.gan import ClosureConfig, GANConfig, GANModule, InverseGAN, fit_gan, run_closure
from inverse.vaim import VAIM, VAIMConfig, fit_vaim, run_vaim

__all__ = [
    "VAIM",
    "ClosureConfig",
    "GANConfig",
    "GANModule",
    "InverseGAN",
    "VAIMConfig",
    "fit_gan",
    "fit_vaim",
    "run_closure",
    "run_vaim",
]
