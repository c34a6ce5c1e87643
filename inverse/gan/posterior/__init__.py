"""Posterior draws from the GAN solver's adversarial gradient (``gan.posterior.mode: langevin``).

:mod:`inverse.gan.posterior.langevin` holds the sampler, :mod:`inverse.gan.posterior.mode` runs it after a
closure's fit and judges it; the settings and the diagnostics are re-exported here.
"""

from inverse.gan.posterior.config import PosteriorModeConfig, PosteriorTargets
from inverse.gan.posterior.diagnostics import c2st, chain_diagnostics, compare_to_reference

__all__ = ["PosteriorModeConfig", "PosteriorTargets", "c2st", "chain_diagnostics", "compare_to_reference"]
