"""Inverse solvers: the multi-discriminator GAN with vectorized replicas, and VAIM for ill-posed problems.

Filled in by the GAN inverse-solver issue; importing this package has no side effects.
"""

__all__: list[str] = []
