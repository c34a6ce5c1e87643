"""Learned event generators (conditional normalizing flow, conditional GAN, VAE) that replace theory + sampler.

They implement :class:`physics.sampling.EventSampler`, so an inverse solver can take any of them from its config.
Filled in by the surrogate issue; importing this package has no side effects.
"""

__all__: list[str] = []
