"""Conditional VAE surrogate: encoder q(z | x; condition), decoder p(x | z; condition), trained on the ELBO.

Events are modelled in y = logit(t), t the log-scaled x in the dataset's range. The decoder is Gaussian in y
with a learned mean and scale per latent point, so the marginal p(y | condition) is a continuous mixture; a
sample takes ``latent_dim`` normal draws for z and one for the decoder's noise, all from the uniform base noise
through the normal quantile (``noise_dim = latent_dim + 1``), and is reparameterised. The ELBO bounds the
log-likelihood from below; there is no exact ``log_prob``, so quality is judged on samples.

References:
    Kingma and Welling, "Auto-Encoding Variational Bayes", arXiv:1312.6114.
    Sohn, Lee and Yan, "Learning Structured Output Representation using Deep Conditional Generative Models",
    NeurIPS 2015 (conditional VAE).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from surrogates.base import ConditionedMLP, Surrogate
from surrogates.config import SurrogateConfig

__all__ = ["VAESurrogate"]

_T_EPS = 1e-6
_LOG_SCALE = (-7.0, 3.0)


class VAESurrogate(Surrogate):
    """Conditional VAE event generator (see the module docstring).

    Args:
        config: the training config; ``config.vae`` sets latent size, networks and the KL weight.
    """

    kind = "vae"

    def __init__(self, config: SurrogateConfig) -> None:
        super().__init__(config)
        c = config.vae
        self.latent_dim = c.latent_dim
        self.noise_dim = c.latent_dim + 1
        n_ctx = self.n_context + self.n_datasets
        self.encoder = ConditionedMLP(1, 2 * c.latent_dim, n_ctx, c.width, c.depth, c.context_width, c.activation)
        self.decoder = ConditionedMLP(c.latent_dim, 2, n_ctx, c.width, c.depth, c.context_width, c.activation)

    def condition(self, context: Tensor, j: int) -> Tensor:
        """Context and dataset indicator, [B, D + F + J]."""
        return torch.cat([context, self.one_hot(j, context.shape[0])], dim=-1)

    def decode(self, z: Tensor, cond: Tensor) -> tuple[Tensor, Tensor]:
        """Decoder mean and log-scale of y, each [B, n]."""
        out = self.decoder(z, cond)
        return out[..., 0], out[..., 1].clamp(*_LOG_SCALE)

    def sample_t(self, context: Tensor, u: Tensor, j: int) -> Tensor:
        """Z ~ N(0, I), y ~ N(mu(z), sigma(z)^2), t = sigmoid(y), all reparameterised."""
        g = torch.special.ndtri(u.clamp(_T_EPS, 1.0 - _T_EPS))
        mu, log_scale = self.decode(g[..., : self.latent_dim], self.condition(context, j))
        return torch.sigmoid(mu + log_scale.exp() * g[..., self.latent_dim])

    def elbo_terms(
        self, t: Tensor, context: Tensor, j: int, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """Per-event reconstruction log-likelihood of y and KL(q(z | y) || N(0, I)), each [B, n]."""
        cond = self.condition(context, j)
        y = torch.logit(t.clamp(_T_EPS, 1.0 - _T_EPS))
        enc = self.encoder(y[..., None] / 4.0, cond)
        mean, log_var = enc[..., : self.latent_dim], enc[..., self.latent_dim :].clamp(-12.0, 6.0)
        eps = torch.randn(mean.shape, generator=generator, dtype=mean.dtype, device=mean.device)
        z = mean + torch.exp(0.5 * log_var) * eps
        mu, log_scale = self.decode(z, cond)
        recon = -0.5 * ((y - mu) / log_scale.exp()) ** 2 - log_scale - 0.5 * math.log(2 * math.pi)
        kl = 0.5 * (mean**2 + log_var.exp() - 1.0 - log_var).sum(-1)
        return recon, kl

    def training_loss(self, context: Tensor, t: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Negative beta-ELBO per event, summed over datasets, on exact events t [B, J, n]."""
        beta = self.config.vae.kl_weight
        total = context.new_zeros(())
        for j in range(self.n_datasets):
            recon, kl = self.elbo_terms(t[:, j], context, j, generator)
            total = total + (beta * kl - recon).mean()
        return total
