"""Conditional GAN surrogate: a generator x = G(noise; parameters, dataset) trained against a discriminator.

The generator maps one Gaussian noise variable per event (from the uniform base noise through the normal
quantile) to y = logit(t), t the log-scaled x in the dataset's range; the discriminator sees (y, t) of real
(exact) or generated events with the same condition. Both are per-event MLPs modulated by the condition (FiLM),
so the condition network runs once per parameter set. Training uses the non-saturating logistic loss. A GAN
has no density: ``log_prob`` is not available, and quality is judged on samples (KS, Wasserstein).

References:
    Goodfellow et al., "Generative Adversarial Networks", arXiv:1406.2661.
    Mirza and Osindero, "Conditional Generative Adversarial Nets", arXiv:1411.1784.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from surrogates.base import ConditionedMLP, Surrogate
from surrogates.config import SurrogateConfig

__all__ = ["GANSurrogate", "logit_features"]

_T_EPS = 1e-6


def logit_features(t: Tensor) -> Tensor:
    """Per-event features [.., 2]: logit(t) / 4 (clamped) and t - 1/2."""
    tc = t.clamp(_T_EPS, 1.0 - _T_EPS)
    return torch.stack([torch.logit(tc) / 4.0, tc - 0.5], dim=-1)


class GANSurrogate(Surrogate):
    """Conditional GAN event generator; ``discriminator`` is only used in training.

    Args:
        config: the training config; ``config.gan`` sets the networks.
    """

    kind = "gan"

    def __init__(self, config: SurrogateConfig) -> None:
        super().__init__(config)
        c = config.gan
        n_ctx = self.n_context + self.n_datasets
        self.generator = ConditionedMLP(1, 1, n_ctx, c.width, c.depth, c.context_width, c.activation)
        self.discriminator = ConditionedMLP(2, 1, n_ctx, c.width, c.depth, c.context_width, c.activation)

    def condition(self, context: Tensor, j: int) -> Tensor:
        """Context and dataset indicator, [B, D + F + J]."""
        return torch.cat([context, self.one_hot(j, context.shape[0])], dim=-1)

    def sample_t(self, context: Tensor, u: Tensor, j: int) -> Tensor:
        """T = sigmoid(G(Phi^-1(u); condition))."""
        eps = torch.special.ndtri(u.clamp(_T_EPS, 1.0 - _T_EPS))
        return torch.sigmoid(self.generator(eps, self.condition(context, j))[..., 0])

    def logits(self, t: Tensor, context: Tensor, j: int) -> Tensor:
        """Discriminator logits of events t [B, n] under the condition, [B, n]."""
        return self.discriminator(logit_features(t), self.condition(context, j))[..., 0]

    def adversarial_losses(
        self, context: Tensor, t_real: Tensor, generator: torch.Generator | None
    ) -> tuple[Tensor, Tensor]:
        """(discriminator loss, generator loss) summed over datasets, on real events t [B, J, n] and fresh fakes.

        The discriminator loss uses detached fakes; the generator loss is the non-saturating -log D(fake).
        """
        d_loss = context.new_zeros(())
        g_loss = context.new_zeros(())
        n = t_real.shape[-1]
        for j in range(self.n_datasets):
            u = torch.rand(context.shape[0], n, 1, generator=generator, dtype=self.dtype, device=context.device)
            fake = self.sample_t(context, u, j)
            real_logit = self.logits(t_real[:, j], context, j)
            fake_logit = self.logits(fake.detach(), context, j)
            d_loss = d_loss + F.softplus(-real_logit).mean() + F.softplus(fake_logit).mean()
            g_loss = g_loss + F.softplus(-self.logits(fake, context, j)).mean()
        return d_loss, g_loss
